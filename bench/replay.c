/* `warren-bench replay`: users come back one after another to a backlog that
 * waits in their mailboxes (docs/mailboxes.md, "Replay"), and each replay is
 * timed on its own.
 *
 * Notification i of run R (`fill --run R --users U`) targets user u(i % U), so
 * user k's backlog is ids k, k + U, k + 2U, … in the order they were published.
 * For each user in turn (u0, u1, …) this opens one WebSocket connection with a
 * token minted on the spot, records when the welcome came and when each of the
 * user's notifications came, acks each one if asked (ack.mode = client), and
 * closes once all of them are in (or at --timeout). Reported over the users:
 *
 *   first item   welcome → the first notification
 *   backlog      welcome → the last notification, and items / that time
 *   order        inversions: pairs of the user's notifications received in the
 *                opposite order to their publish order (0 when the mailbox
 *                held them in publish order and the replay kept it)
 *   lost / dup   notifications of the user that never came / came twice
 *
 * One blocking connection at a time (poll for the timeouts): nothing else of
 * this process competes with the replay being timed. */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int fd;
  uint32_t rng;
  uint8_t *buf; /* bytes read and not parsed yet */
  size_t len, cap;
} ws_t;

typedef struct {
  uint64_t expect; /* this user's notifications */
  uint64_t got, dups, foreign, early;
  uint64_t inversions;
  uint64_t late; /* items that came after one published later than them */
  int64_t t_conn, t_welcome, t_first, t_last; /* CLOCK_MONOTONIC µs */
  int64_t max_gap;                            /* longest wait between two items, µs */
  uint32_t *order;                            /* positions (i / U) in the order they came */
  uint8_t *seen;
  bool welcomed, timed_out, closed;
} user_t;

static int send_all(int fd, const uint8_t *p, size_t len) {
  while (len) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -errno;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads more bytes into w->buf, waiting until deadline (monotonic µs).
 * Returns bytes read, 0 at the deadline, or -errno / -EPIPE at EOF. */
static ssize_t ws_fill(ws_t *w, int64_t deadline) {
  if (w->cap - w->len < 65536) {
    size_t cap = w->cap ? w->cap * 2 : 262144;
    uint8_t *nb = realloc(w->buf, cap);
    if (!nb)
      return -ENOMEM;
    w->buf = nb;
    w->cap = cap;
  }
  for (;;) {
    int64_t left = deadline - wr_bench_now_us();
    if (left <= 0)
      return 0;
    struct pollfd pf = {.fd = w->fd, .events = POLLIN};
    int r = poll(&pf, 1, (int)((left + 999) / 1000));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -errno;
    if (r == 0)
      return 0;
    ssize_t n = recv(w->fd, w->buf + w->len, w->cap - w->len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -EPIPE;
    w->len += (size_t)n;
    return n;
  }
}

static int ws_open(ws_t *w, const struct sockaddr_in *dst, const char *host, const char *path,
                   const char *secret, const char *user, int64_t deadline) {
  char token[512], head[1024];
  int one = 1;
  w->len = 0;
  w->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (w->fd < 0)
    return -errno;
  setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(w->fd, (const struct sockaddr *)dst, sizeof *dst) != 0)
    return -errno;
  if (wr_bench_jwt_mint(secret, user, 86400, token, sizeof token) < 0)
    return -EIO;
  int n = snprintf(head, sizeof head,
                   "GET %s%stoken=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: warren.json\r\n\r\n",
                   path, strchr(path, '?') ? "&" : "?", token, host);
  if (send_all(w->fd, (const uint8_t *)head, (size_t)n) != 0)
    return -EIO;
  for (;;) {
    uint8_t *e = w->len ? memmem(w->buf, w->len, "\r\n\r\n", 4) : NULL;
    if (e) {
      if (w->len < 12 || memcmp(w->buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "replay: %s: upgrade refused: %.40s\n", user, (const char *)w->buf);
        return -EPROTO;
      }
      size_t used = (size_t)(e + 4 - w->buf);
      memmove(w->buf, w->buf + used, w->len - used);
      w->len -= used;
      return 0;
    }
    ssize_t r = ws_fill(w, deadline);
    if (r <= 0)
      return r == 0 ? -ETIMEDOUT : (int)r;
  }
}

/* One message from warren for user k (index uk). */
static void on_message(const wr_bench_opts_t *o, size_t run_len, user_t *u, uint32_t uk,
                       const char *p, size_t len, ws_t *w, uint8_t *ack, size_t *ack_len) {
  int64_t now = wr_bench_now_us();
  const char *end = p + len;
  if (!u->welcomed) {
    if (memmem(p, len, "\"welcome\"", 9)) {
      u->welcomed = true;
      u->t_welcome = now;
    } else
      u->early++;
    return;
  }
  const char *id = memmem(p, len, "\"id\":\"", 6);
  if (!id)
    return; /* pong, error, … */
  id += 6;
  const char *id_end = memchr(id, '"', (size_t)(end - id));
  if (!id_end)
    return;
  size_t idl = (size_t)(id_end - id);
  if (o->client_acks && idl < 80) {
    char msg[128];
    size_t m =
        (size_t)snprintf(msg, sizeof msg, "{\"type\":\"ack\",\"id\":\"%.*s\"}", (int)idl, id);
    *ack_len = wr_bench_ws_frame_masked(&w->rng, ack, *ack_len, 0x1, (const uint8_t *)msg, m);
  }
  uint64_t seq;
  if (idl <= run_len + 1 || memcmp(id, o->run_id, run_len) != 0 || id[run_len] != '-' ||
      !wr_bench_parse_u64(id + run_len + 1, id_end, &seq) || seq >= o->count || seq % o->users != uk) {
    u->foreign++;
    return;
  }
  uint64_t pos = seq / o->users;
  if (u->seen[pos]) {
    u->dups++;
    return;
  }
  u->seen[pos] = 1;
  if (u->got == 0)
    u->t_first = now;
  else if (now - u->t_last > u->max_gap)
    u->max_gap = now - u->t_last;
  u->t_last = now;
  u->order[u->got++] = (uint32_t)pos;
}

/* Parses the complete frames in w->buf; returns -1 once warren closed. */
static int parse_frames(const wr_bench_opts_t *o, size_t run_len, user_t *u, uint32_t uk, ws_t *w) {
  static uint8_t out[128 * 1024];
  size_t off = 0, out_len = 0;
  int rc = 0;
  while (w->len - off >= 2) {
    const uint8_t *f = w->buf + off;
    uint8_t op = f[0] & 0x0f;
    size_t h = 2;
    uint64_t plen = f[1] & 0x7f;
    if (plen == 126) {
      if (w->len - off < 4)
        break;
      plen = (uint64_t)f[2] << 8 | f[3];
      h = 4;
    } else if (plen == 127) {
      if (w->len - off < 10)
        break;
      plen = 0;
      for (int i = 0; i < 8; i++)
        plen = plen << 8 | f[2 + i];
      h = 10;
    }
    if (w->len - off < h + plen)
      break;
    if (out_len > sizeof out - 256) {
      send_all(w->fd, out, out_len);
      out_len = 0;
    }
    const uint8_t *pl = f + h;
    if (op == 0x1 || op == 0x2)
      on_message(o, run_len, u, uk, (const char *)pl, (size_t)plen, w, out, &out_len);
    else if (op == 0x9 && plen <= 125)
      out_len = wr_bench_ws_frame_masked(&w->rng, out, out_len, 0xA, pl, (size_t)plen);
    else if (op == 0x8) {
      u->closed = true;
      rc = -1;
      off += h + (size_t)plen;
      break;
    }
    off += h + (size_t)plen;
  }
  if (out_len)
    send_all(w->fd, out, out_len);
  memmove(w->buf, w->buf + off, w->len - off);
  w->len -= off;
  return rc;
}

/* Pairs out of order in v (merge sort; tmp as large as v). */
static uint64_t inversions(uint32_t *v, uint32_t *tmp, size_t n) {
  if (n < 2)
    return 0;
  size_t h = n / 2;
  uint64_t inv = inversions(v, tmp, h) + inversions(v + h, tmp, n - h);
  size_t i = 0, j = h, k = 0;
  while (i < h && j < n) {
    if (v[i] <= v[j])
      tmp[k++] = v[i++];
    else {
      tmp[k++] = v[j++];
      inv += h - i;
    }
  }
  while (i < h)
    tmp[k++] = v[i++];
  while (j < n)
    tmp[k++] = v[j++];
  memcpy(v, tmp, n * sizeof *v);
  return inv;
}

static void sleep_ms(uint32_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static void put_quantiles(wr_bench_json_t *j, const char *name, uint32_t *v, size_t n,
                          const char *unit, double scale) {
  char k[64];
  wr_bench_sort_u32(v, n);
  snprintf(k, sizeof k, "%s_p50_%s", name, unit);
  wr_bench_json_num(j, k, wr_bench_quantile(v, n, 0.5) * scale);
  snprintf(k, sizeof k, "%s_p99_%s", name, unit);
  wr_bench_json_num(j, k, wr_bench_quantile(v, n, 0.99) * scale);
  snprintf(k, sizeof k, "%s_max_%s", name, unit);
  wr_bench_json_num(j, k, n ? v[n - 1] * scale : 0);
  snprintf(k, sizeof k, "%s_min_%s", name, unit);
  wr_bench_json_num(j, k, n ? v[0] * scale : 0);
}

int wr_bench_replay_run(const wr_bench_opts_t *o) {
  unsigned a, b, c, d, port;
  int n = 0, rc = 1;
  char host[64], path[256], name[32];
  struct sockaddr_in dst;
  size_t run_len = strlen(o->run_id);
  if (!o->ws_url || !o->secret ||
      sscanf(o->ws_url, "ws://%u.%u.%u.%u:%u%n", &a, &b, &c, &d, &port, &n) != 5 || a > 255 ||
      b > 255 || c > 255 || d > 255 || port > 65535) {
    fprintf(stderr, "warren-bench replay: --url ws://IPv4:PORT/PATH and --secret are required\n");
    return 2;
  }
  if (o->count < o->users) {
    fprintf(stderr, "warren-bench replay: --count must give every user at least one\n");
    return 2;
  }
  snprintf(host, sizeof host, "%u.%u.%u.%u:%u", a, b, c, d, port);
  snprintf(path, sizeof path, "%s", o->ws_url[n] ? o->ws_url + n : "/ws");
  memset(&dst, 0, sizeof dst);
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)port);
  dst.sin_addr.s_addr = htonl(a << 24 | b << 16 | c << 8 | d);

  uint32_t nu = o->users;
  uint64_t per_max = o->count / nu + 1;
  user_t *users = calloc(nu, sizeof *users);
  uint32_t *tmp = malloc(per_max * sizeof *tmp);
  uint32_t *q_welcome = calloc(nu, sizeof(uint32_t)), *q_first = calloc(nu, sizeof(uint32_t)),
           *q_all = calloc(nu, sizeof(uint32_t)), *q_rate = calloc(nu, sizeof(uint32_t)),
           *q_gap = calloc(nu, sizeof(uint32_t));
  ws_t w = {.fd = -1, .rng = 2463534242u};
  FILE *trace = NULL;
  if (!users || !tmp || !q_welcome || !q_first || !q_all || !q_rate || !q_gap) {
    fprintf(stderr, "warren-bench replay: out of memory\n");
    goto out;
  }
  if (o->trace_path && !(trace = fopen(o->trace_path, "w"))) {
    fprintf(stderr, "warren-bench replay: %s: %s\n", o->trace_path, strerror(errno));
    goto out;
  }
  wr_bench_proc_t p0 = {0}, p1 = {0};
  bool have_pid = o->pid > 0 && wr_bench_proc_sample(o->pid, &p0) == 0;
  wr_bench_cpu_t c0, c1;
  wr_bench_cpu_sample(o->broker_pid, &c0);
  uint64_t total_got = 0, total_expect = 0, total_lost = 0, total_dups = 0, total_inv = 0,
           total_late = 0, total_foreign = 0, total_early = 0;
  uint32_t out_of_order = 0, timed_out = 0, closed = 0;
  double sum_backlog_s = 0;

  for (uint32_t k = 0; k < nu; k++) {
    user_t *u = &users[k];
    u->expect = o->count / nu + (k < o->count % nu ? 1 : 0);
    u->order = malloc(u->expect * sizeof *u->order);
    u->seen = calloc(u->expect, 1);
    if (!u->order || !u->seen) {
      fprintf(stderr, "warren-bench replay: out of memory\n");
      goto out;
    }
    snprintf(name, sizeof name, "u%u", k);
    int64_t deadline = wr_bench_now_us() + (int64_t)(o->timeout_s * 1e6);
    u->t_conn = wr_bench_now_us();
    int r = ws_open(&w, &dst, host, path, o->secret, name, deadline);
    if (r != 0) {
      fprintf(stderr, "replay: %s: cannot connect: %s\n", name, strerror(-r));
      if (w.fd >= 0)
        close(w.fd);
      w.fd = -1;
      goto out;
    }
    while (u->got < u->expect) {
      if (w.len && parse_frames(o, run_len, u, k, &w) < 0)
        break;
      if (u->got >= u->expect)
        break;
      ssize_t got = ws_fill(&w, deadline);
      if (got == 0) {
        u->timed_out = true;
        break;
      }
      if (got < 0) {
        u->closed = true;
        break;
      }
    }
    /* A close frame (1000), then the socket: warren closes the user's mailbox
     * consumer on its last connection. */
    uint8_t cf[16];
    uint8_t code[2] = {0x03, 0xe8};
    size_t cl = wr_bench_ws_frame_masked(&w.rng, cf, 0, 0x8, code, 2);
    send_all(w.fd, cf, cl);
    close(w.fd);
    w.fd = -1;
    w.len = 0;

    uint64_t lost = u->expect - u->got;
    uint32_t hi = 0;
    for (uint64_t i = 0; i < u->got; i++) {
      if (i && u->order[i] < hi)
        u->late++;
      if (u->order[i] > hi)
        hi = u->order[i];
    }
    u->inversions = inversions(u->order, tmp, u->got);
    if (trace)
      fprintf(trace,
              "%s %" PRIu64 "/%" PRIu64 " welcome %.3f ms first %.3f ms last %.3f ms "
              "inversions %" PRIu64 " late %" PRIu64 "\n",
              name, u->got, u->expect, (double)(u->t_welcome - u->t_conn) / 1e3,
              u->got ? (double)(u->t_first - u->t_welcome) / 1e3 : -1.0,
              u->got ? (double)(u->t_last - u->t_welcome) / 1e3 : -1.0, u->inversions, u->late);
    total_got += u->got;
    total_expect += u->expect;
    total_lost += lost;
    total_dups += u->dups;
    total_inv += u->inversions;
    total_late += u->late;
    total_foreign += u->foreign;
    total_early += u->early;
    out_of_order += u->inversions > 0;
    timed_out += u->timed_out;
    closed += u->closed && !u->timed_out && lost;
    q_welcome[k] = (uint32_t)(u->t_welcome - u->t_conn);
    if (u->got) {
      double s = (double)(u->t_last - u->t_welcome) / 1e6;
      q_first[k] = (uint32_t)(u->t_first - u->t_welcome);
      q_all[k] = (uint32_t)(u->t_last - u->t_welcome);
      q_rate[k] = s > 0 ? (uint32_t)((double)u->got / s) : 0;
      q_gap[k] = (uint32_t)u->max_gap;
      sum_backlog_s += s;
    } else {
      q_first[k] = q_all[k] = UINT32_MAX;
    }
    if (o->settle_ms)
      sleep_ms(o->settle_ms);
  }
  if (have_pid)
    wr_bench_proc_sample(o->pid, &p1);
  wr_bench_cpu_sample(o->broker_pid, &c1);

  /* Quantiles over the users (each array is sorted in place). */
  uint32_t s_first[4], s_all[4], s_welcome[4], s_rate[4], s_gap[4]; /* p50, p99, max, min */
  uint32_t *arrs[5] = {q_first, q_all, q_welcome, q_rate, q_gap};
  uint32_t *outs[5] = {s_first, s_all, s_welcome, s_rate, s_gap};
  for (int i = 0; i < 5; i++) {
    uint32_t *cp = malloc(nu * sizeof *cp);
    if (!cp)
      goto out;
    memcpy(cp, arrs[i], nu * sizeof *cp);
    wr_bench_sort_u32(cp, nu);
    outs[i][0] = wr_bench_quantile(cp, nu, 0.5);
    outs[i][1] = wr_bench_quantile(cp, nu, 0.99);
    outs[i][2] = cp[nu - 1];
    outs[i][3] = cp[0];
    free(cp);
  }
  double cpu = have_pid ? p1.cpu_s - p0.cpu_s : 0;
  printf("replay: %u users one after another, %" PRIu64 " items each (%s): received %" PRIu64
         "/%" PRIu64 " (lost %" PRIu64 ", duplicates %" PRIu64 ")\n",
         nu, o->count / nu, o->client_acks ? "client acks every item" : "no client acks", total_got,
         total_expect, total_lost, total_dups);
  printf("replay: connect -> welcome p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", s_welcome[0] / 1e3,
         s_welcome[1] / 1e3, s_welcome[2] / 1e3);
  printf("replay: welcome -> first item p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", s_first[0] / 1e3,
         s_first[1] / 1e3, s_first[2] / 1e3);
  printf("replay: welcome -> last item (whole backlog) p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
         "per-user rate p50 %u/s (lowest %u/s); all users: %.0f items/s of backlog time\n",
         s_all[0] / 1e3, s_all[1] / 1e3, s_all[2] / 1e3, s_rate[0], s_rate[3],
         sum_backlog_s > 0 ? (double)total_got / sum_backlog_s : 0.0);
  printf("replay: longest gap between two items p50 %.2f ms, max %.2f ms\n", s_gap[0] / 1e3,
         s_gap[2] / 1e3);
  printf("replay: order: %" PRIu64 " inversions (pairs received against publish order) in %u of "
         "%u users; %" PRIu64 " items came after one published later\n",
         total_inv, out_of_order, nu, total_late);
  if (have_pid)
    printf("replay: warren CPU %.2f s for %" PRIu64 " items (%.1f us per item, connections "
           "included)\n",
           cpu, total_got, total_got ? cpu * 1e6 / (double)total_got : 0.0);
  if (timed_out || closed || total_foreign || total_early)
    printf("replay: %u users timed out, %u closed by warren, %" PRIu64 " foreign ids, %" PRIu64
           " messages before the welcome\n",
           timed_out, closed, total_foreign, total_early);
  wr_bench_budget_t bu;
  if (o->broker_pid > 0 && have_pid && total_got)
    wr_bench_budget("replay", &c0, &c1, cpu, total_got, &bu);

  wr_bench_json_t j;
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "replay");
    wr_bench_json_str(&j, "ack", o->client_acks ? "client" : "none");
    wr_bench_json_int(&j, "users", nu);
    wr_bench_json_int(&j, "items_per_user", (long long)(o->count / nu));
    wr_bench_json_int(&j, "expected", (long long)total_expect);
    wr_bench_json_int(&j, "received", (long long)total_got);
    wr_bench_json_int(&j, "lost", (long long)total_lost);
    wr_bench_json_int(&j, "duplicates", (long long)total_dups);
    wr_bench_json_int(&j, "inversions", (long long)total_inv);
    wr_bench_json_int(&j, "users_out_of_order", out_of_order);
    wr_bench_json_int(&j, "late", (long long)total_late);
    wr_bench_json_int(&j, "users_timed_out", timed_out);
    put_quantiles(&j, "welcome", q_welcome, nu, "ms", 1e-3);
    put_quantiles(&j, "first", q_first, nu, "ms", 1e-3);
    put_quantiles(&j, "backlog", q_all, nu, "ms", 1e-3);
    put_quantiles(&j, "rate", q_rate, nu, "per_s", 1);
    put_quantiles(&j, "max_gap", q_gap, nu, "ms", 1e-3);
    wr_bench_json_num(&j, "rate_all", sum_backlog_s > 0 ? (double)total_got / sum_backlog_s : 0);
    if (have_pid) {
      wr_bench_json_num(&j, "cpu_s", cpu);
      wr_bench_json_num(&j, "cpu_us_per_item", total_got ? cpu * 1e6 / (double)total_got : 0.0);
    }
    if (o->broker_pid > 0 && have_pid && total_got)
      wr_bench_json_budget(&j, &bu);
    wr_bench_json_close(&j);
  }
  rc = total_lost || total_dups ? 1 : 0;
out:
  if (trace)
    fclose(trace);
  if (users)
    for (uint32_t k = 0; k < nu; k++) {
      free(users[k].order);
      free(users[k].seen);
    }
  free(users);
  free(tmp);
  free(q_welcome);
  free(q_first);
  free(q_all);
  free(q_rate);
  free(q_gap);
  free(w.buf);
  return rc;
}
