/* The minimal bridge's two ends. `warren-bench sink` accepts connections and
 * reads and drops everything they send; `consume --sink` (amqp_modes.c)
 * opens --conns connections to it and writes each delivery there as one
 * WebSocket text frame with one writev, as warren does for a connected user.
 * That consumer is the least work any bridge can do per notification: its
 * rate and CPU per million are the floor warren is measured against. */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static volatile sig_atomic_t sink_stop;

static void on_stop(int sig) {
  (void)sig;
  sink_stop = 1;
}

/* "IP:PORT" into sa; 0 or -EINVAL. */
static int parse_addr(const char *s, struct sockaddr_in *sa) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host)
    return -EINVAL;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  char *end;
  unsigned long port = strtoul(colon + 1, &end, 10);
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (*end || port == 0 || port > 65535 || inet_pton(AF_INET, host, &sa->sin_addr) != 1)
    return -EINVAL;
  return 0;
}

int wr_bench_sink_open(wr_bench_sink_t *s, const char *addr, uint32_t conns) {
  struct sockaddr_in sa;
  memset(s, 0, sizeof *s);
  if (parse_addr(addr, &sa) != 0) {
    fprintf(stderr, "warren-bench: bad --sink address %s (IP:PORT)\n", addr);
    return -EINVAL;
  }
  s->fds = malloc(conns * sizeof *s->fds);
  if (!s->fds)
    return -ENOMEM;
  for (s->n = 0; s->n < conns; s->n++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      fprintf(stderr, "warren-bench: sink connection %u to %s: %s\n", s->n, addr, strerror(errno));
      if (fd >= 0)
        close(fd);
      wr_bench_sink_close(s);
      return -EIO;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->fds[s->n] = fd;
  }
  return 0;
}

int wr_bench_sink_write(wr_bench_sink_t *s, uint32_t i, const void *payload, size_t len) {
  uint8_t hdr[10];
  size_t hn;
  hdr[0] = 0x81; /* FIN, text */
  if (len < 126) {
    hdr[1] = (uint8_t)len;
    hn = 2;
  } else if (len <= 0xffff) {
    hdr[1] = 126;
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
    hn = 4;
  } else {
    hdr[1] = 127;
    for (int k = 0; k < 8; k++)
      hdr[2 + k] = (uint8_t)((uint64_t)len >> (56 - 8 * k));
    hn = 10;
  }
  struct iovec iov[2] = {{hdr, hn}, {(void *)payload, len}};
  size_t want = hn + len;
  /* Blocking sockets: a full socket buffer stalls the consumer, where warren
   * would queue; the sink reads fast enough that this stays rare. */
  ssize_t w = writev(s->fds[i % s->n], iov, 2);
  if (w < 0 || (size_t)w != want) {
    fprintf(stderr, "warren-bench: sink write: %s\n", w < 0 ? strerror(errno) : "short write");
    return -EIO;
  }
  s->frames++;
  return 0;
}

void wr_bench_sink_close(wr_bench_sink_t *s) {
  for (uint32_t i = 0; i < s->n; i++)
    close(s->fds[i]);
  free(s->fds);
  s->fds = NULL;
  s->n = 0;
}

int wr_bench_sink_run(const wr_bench_opts_t *o) {
  struct sockaddr_in sa;
  int lfd = -1, ep = -1, rc = 1, one = 1;
  uint32_t open_n = 0, closed = 0;
  unsigned long long bytes = 0;
  static uint8_t buf[1 << 16];
  if (!o->listen || parse_addr(o->listen, &sa) != 0) {
    fprintf(stderr, "warren-bench sink: --listen IP:PORT is required\n");
    return 2;
  }
  signal(SIGTERM, on_stop);
  signal(SIGINT, on_stop);
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0) {
    fprintf(stderr, "warren-bench sink: listen on %s: %s\n", o->listen, strerror(errno));
    goto out;
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
    goto out;
  if (o->ready_file) {
    FILE *f = fopen(o->ready_file, "w");
    if (f)
      fclose(f);
  }
  /* Until every connection that came has gone, once at least --conns came. */
  while (!sink_stop && (open_n < o->conns || closed < open_n)) {
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, 200);
    if (n < 0 && errno != EINTR)
      goto out;
    for (int k = 0; k < n; k++) {
      int fd = evs[k].data.fd;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) != 0) {
            close(c);
            continue;
          }
          open_n++;
        }
        continue;
      }
      for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
          bytes += (unsigned long long)r;
          continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          close(fd); /* also leaves the epoll set */
          closed++;
        }
        break;
      }
    }
  }
  wr_bench_json_t j;
  double cpu_s = wr_bench_self_cpu_s();
  printf("sink: %u connections, %llu bytes read, CPU %.2f s\n", open_n, bytes, cpu_s);
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "sink");
    wr_bench_json_int(&j, "connections", open_n);
    wr_bench_json_int(&j, "bytes", (long long)bytes);
    wr_bench_json_num(&j, "cpu_s", cpu_s);
    wr_bench_json_close(&j);
  }
  rc = 0;
out:
  if (ep >= 0)
    close(ep);
  if (lfd >= 0)
    close(lfd);
  return rc;
}
