/* `warren-bench clients`: many WebSocket connections to warren on one libuv
 * loop. A minimal client side of RFC 6455 is enough here: one upgrade request
 * with a token minted on the spot, the 101 answer, unmasked server frames
 * (text/binary, ping, close) and masked client frames (acks, pongs, close).
 *
 * Notification i of run R has id "R-i" and targets user u(i % users); a
 * broadcast has id "R-bK". Connection c belongs to user u(c % users), so every
 * connection of that user must receive notification i exactly once: fewer is
 * lost, more is a duplicate. Latency is the receive time (CLOCK_REALTIME)
 * minus the envelope's t_us (or created_at).
 *
 * Several --url (cluster nodes): connection c goes to URL c % n, and --pid
 * may name every node (CPU and RSS summed, all continued on SIGUSR1).
 *
 * Churn (--connect-rate R): --conns connections of distinct users are opened
 * at R per second, each closed (a close frame, then the socket) --life s
 * after its welcome; with --reconnect-ms each user connects once more that
 * long after closing, and closes again after --life. What counts is whether
 * the connections kept the pace and how long each waited for its welcome;
 * bench/run reads warren's binding operations meanwhile. */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

enum { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_WELCOMED, C_CLOSED };

typedef struct clients_s clients_t;

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  clients_t *cl;
  uint32_t idx;
  uint8_t state;
  bool closing;
  uint32_t bcast_got;
  uint32_t rng;
  uint8_t *pend; /* bytes of an incomplete frame (or head) carried to the next read */
  uint32_t pend_len;
  uint32_t pend_cap;
  int64_t t_begin; /* churn: connect started (µs, monotonic) */
  int64_t t_due;   /* churn: close (welcomed) or start (a reconnect) due */
  bool scheduled;  /* churn: a reconnect with its start time set */
} conn_t;

struct clients_s {
  uv_loop_t *loop;
  const wr_bench_opts_t *o;
  conn_t *conns;
  uv_timer_t tick;
  uv_signal_t sig_usr1, sig_int, sig_term;
  struct sockaddr_in dst[WR_BENCH_MAX_URLS];
  char host[WR_BENCH_MAX_URLS][64];
  char path[WR_BENCH_MAX_URLS][256];
  uint32_t nurls;
  uint32_t src_base; /* first source address (host order); 0: none bound */
  size_t run_len;

  /* churn (--connect-rate) */
  bool churn;
  uv_timer_t churn_timer;
  uint32_t sessions;   /* conns, or 2 x conns with --reconnect-ms */
  uint32_t a_lo, b_lo; /* first sessions / reconnects: lowest not finished */
  uint32_t started, churn_welcomed, churn_closed, skipped, started_late;
  int64_t t_first_begin, t_last_begin, t_last_welcome, max_behind_us;
  uint32_t *wlat; /* connect -> welcome, µs, one per welcomed session */
  uint32_t wlat_n;

  uint32_t next, inflight, welcomed, failed, closed_unexpected, proto_errors;
  int64_t t_start, t_all_open, t_ready, t_go, t_first, t_last;
  bool ready, finishing, interrupted;

  uint8_t *seen;           /* receipts per notification id */
  uint64_t expected_total; /* receipts expected over all ids */
  uint64_t good, dups, foreign;
  uint32_t *lat; /* µs, one per good receipt */
  FILE *trace;   /* --trace: seq recv_us lat_us per good receipt */
  uint64_t lat_n;
  uint32_t *blat; /* broadcast latencies, µs */
  uint64_t blat_n;
  uint32_t bcast_done; /* connections that got every broadcast */

  wr_bench_proc_t p0, p_open, p_go, p_end;
  wr_bench_cpu_t c_open, c_go, c_end; /* same instants: broker, self, machine */
  long rss_max_kb;
  bool have_pid;
  int rc;
};

static uint8_t g_rbuf[256 * 1024];

/* The user of connection (or churn session) idx, without the u. */
static uint64_t user_of(const clients_t *cl, uint32_t idx) {
  return cl->o->first_user + (idx % cl->o->conns) % cl->o->users;
}

static uint32_t conns_of_user(const clients_t *cl, uint64_t user) {
  uint32_t u = cl->o->users, n = cl->o->conns;
  return n / u + (user < n % u ? 1 : 0);
}

static void finish(clients_t *cl);
static void start_more(clients_t *cl);
static void report_churn(clients_t *cl);

static void write_cb(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* Writes len bytes now if the socket takes them, else queues a copy. */
static void conn_write(conn_t *c, const uint8_t *p, size_t len) {
  if (c->closing || len == 0)
    return;
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n == (int)len)
    return;
  if (n < 0 && n != UV_EAGAIN)
    return;
  if (n < 0)
    n = 0;
  struct {
    uv_write_t req;
    uint8_t data[];
  } *w = malloc(sizeof *w + len - (size_t)n);
  if (!w)
    return;
  memcpy(w->data, p + n, len - (size_t)n);
  b = uv_buf_init((char *)w->data, (unsigned)(len - (size_t)n));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0)
    free(w);
}

static void close_cb(uv_handle_t *h) {
  conn_t *c = h->data;
  free(c->pend);
  c->pend = NULL;
  c->pend_len = c->pend_cap = 0;
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->tcp, close_cb);
}

/* The connection is gone or failed before it counted as open. */
static void conn_lost(conn_t *c, const char *why) {
  clients_t *cl = c->cl;
  if (c->state < C_WELCOMED) {
    cl->failed++;
    cl->inflight--;
    if (cl->failed <= 3)
      fprintf(stderr, "clients: connection %u failed: %s\n", c->idx, why);
    start_more(cl);
  } else if (c->state == C_WELCOMED && !cl->finishing) {
    cl->closed_unexpected++;
    if (cl->closed_unexpected <= 3)
      fprintf(stderr, "clients: connection %u closed by warren: %s\n", c->idx, why);
  }
  c->state = C_CLOSED;
  conn_close(c);
}

static const char *find(const char *p, size_t len, const char *needle) {
  return memmem(p, len, needle, strlen(needle));
}

/* One text/binary message from warren. Returns the id to ack (or NULL). */
static void on_message(conn_t *c, const char *p, size_t len, uint8_t *ack, size_t *ack_len) {
  clients_t *cl = c->cl;
  const char *end = p + len;
  if (c->state == C_OPEN) {
    if (find(p, len, "\"welcome\"")) {
      c->state = C_WELCOMED;
      cl->welcomed++;
      cl->inflight--;
      if (cl->churn) {
        int64_t now = wr_bench_now_us();
        cl->churn_welcomed++;
        cl->t_last_welcome = now;
        cl->wlat[cl->wlat_n++] = (uint32_t)(now - c->t_begin);
        c->t_due = now + (int64_t)(cl->o->life_s * 1e6);
      }
      start_more(cl);
    }
    return;
  }
  const char *id = find(p, len, "\"id\":\"");
  if (!id)
    return; /* pong, error, … */
  id += 6;
  const char *id_end = memchr(id, '"', (size_t)(end - id));
  if (!id_end)
    return;
  int64_t now_rt = wr_bench_realtime_us();
  int64_t now = wr_bench_now_us();
  int64_t sent_us = 0;
  const char *t = find(p, len, "\"t_us\":");
  uint64_t tv;
  if (t && wr_bench_parse_u64(t + 7, end, &tv))
    sent_us = (int64_t)tv;
  else if ((t = find(p, len, "\"created_at\":")) && wr_bench_parse_u64(t + 13, end, &tv))
    sent_us = (int64_t)tv * 1000;
  uint32_t lat = sent_us && now_rt > sent_us ? (uint32_t)(now_rt - sent_us) : 0;

  if (cl->o->client_acks) {
    uint8_t msg[320];
    size_t idl = (size_t)(id_end - id);
    if (idl < 256) {
      size_t m = (size_t)snprintf((char *)msg, sizeof msg, "{\"type\":\"ack\",\"id\":\"%.*s\"}",
                                  (int)idl, id);
      *ack_len = wr_bench_ws_frame_masked(&c->rng, ack, *ack_len, 0x1, msg, m);
    }
  }

  size_t rl = cl->run_len;
  if ((size_t)(id_end - id) <= rl + 1 || memcmp(id, cl->o->run_id, rl) != 0 || id[rl] != '-') {
    cl->foreign++;
    return;
  }
  const char *num = id + rl + 1;
  uint64_t seq;
  if (*num == 'b') {
    if (!wr_bench_parse_u64(num + 1, id_end, &seq))
      return;
    c->bcast_got++;
    if (c->bcast_got > cl->o->bcast_expect) {
      cl->dups++;
      return;
    }
    if (cl->blat)
      cl->blat[cl->blat_n++] = lat;
    if (c->bcast_got == cl->o->bcast_expect)
      cl->bcast_done++;
  } else {
    if (!wr_bench_parse_u64(num, id_end, &seq) || seq >= cl->o->count) {
      cl->foreign++;
      return;
    }
    uint32_t want = conns_of_user(cl, seq % cl->o->users);
    if (cl->seen[seq] >= want) {
      cl->dups++;
      return;
    }
    cl->seen[seq]++;
    cl->good++;
    cl->lat[cl->lat_n++] = lat;
    if (cl->trace)
      fprintf(cl->trace, "%llu %lld %u\n", (unsigned long long)seq, (long long)now_rt, lat);
  }
  if (!cl->t_first)
    cl->t_first = now;
  cl->t_last = now;
}

/* Parses frames in p[0..len); returns the bytes consumed. */
static size_t parse_frames(conn_t *c, const uint8_t *p, size_t len) {
  size_t off = 0;
  uint8_t out[64 * 1024];
  size_t out_len = 0;
  while (len - off >= 2 && !c->closing) {
    const uint8_t *f = p + off;
    uint8_t op = f[0] & 0x0f;
    bool fin = f[0] & 0x80;
    size_t h = 2;
    uint64_t plen = f[1] & 0x7f;
    if (f[1] & 0x80) {
      c->cl->proto_errors++;
      conn_lost(c, "masked server frame");
      return len;
    }
    if (plen == 126) {
      if (len - off < 4)
        break;
      plen = (uint64_t)f[2] << 8 | f[3];
      h = 4;
    } else if (plen == 127) {
      if (len - off < 10)
        break;
      plen = 0;
      for (int i = 0; i < 8; i++)
        plen = plen << 8 | f[2 + i];
      h = 10;
    }
    if (plen > (1u << 24)) {
      c->cl->proto_errors++;
      conn_lost(c, "frame over 16 MiB");
      return len;
    }
    if (len - off < h + plen)
      break;
    const uint8_t *pl = f + h;
    if (out_len > sizeof out - 512) {
      conn_write(c, out, out_len);
      out_len = 0;
    }
    if (!fin || op == 0x0) {
      c->cl->proto_errors++;
    } else if (op == 0x1 || op == 0x2) {
      on_message(c, (const char *)pl, (size_t)plen, out, &out_len);
    } else if (op == 0x9) {
      if (plen <= 125)
        out_len = wr_bench_ws_frame_masked(&c->rng, out, out_len, 0xA, pl, (size_t)plen);
    } else if (op == 0x8) {
      char why[64];
      unsigned code = plen >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
      snprintf(why, sizeof why, "close frame %u", code);
      out_len = wr_bench_ws_frame_masked(&c->rng, out, out_len, 0x8, pl, plen >= 2 ? 2 : 0);
      conn_write(c, out, out_len);
      conn_lost(c, why);
      return len;
    }
    off += h + (size_t)plen;
  }
  conn_write(c, out, out_len);
  return off;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  (void)suggested;
  *b = uv_buf_init((char *)g_rbuf, sizeof g_rbuf);
}

static int keep(conn_t *c, const uint8_t *p, size_t n) {
  if (n > c->pend_cap) {
    uint8_t *np = realloc(c->pend, n);
    if (!np)
      return -ENOMEM;
    c->pend = np;
    c->pend_cap = (uint32_t)n;
  }
  memmove(c->pend, p, n);
  c->pend_len = (uint32_t)n;
  return 0;
}

static size_t handle_head(conn_t *c, const uint8_t *p, size_t len) {
  const uint8_t *e = memmem(p, len, "\r\n\r\n", 4);
  if (!e) {
    if (len > 8192)
      conn_lost(c, "response head over 8 KiB");
    return 0;
  }
  if (len < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
    char line[128];
    const uint8_t *nl = memchr(p, '\r', len);
    size_t l = nl ? (size_t)(nl - p) : 0;
    snprintf(line, sizeof line, "%.*s", (int)(l < 100 ? l : 100), (const char *)p);
    conn_lost(c, line);
    return len;
  }
  c->state = C_OPEN;
  return (size_t)(e + 4 - p);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    conn_lost(c, nread == UV_EOF ? "EOF" : uv_strerror((int)nread));
    return;
  }
  const uint8_t *p = (const uint8_t *)b->base;
  size_t len = (size_t)nread;
  if (c->pend_len) {
    /* Rare: a frame (or the head) straddled two reads. Join it with the new
     * bytes and parse from the connection's own buffer. */
    size_t need = c->pend_len + len;
    if (need > c->pend_cap) {
      uint8_t *np = realloc(c->pend, need);
      if (!np) {
        conn_lost(c, "out of memory");
        return;
      }
      c->pend = np;
      c->pend_cap = (uint32_t)need;
    }
    memcpy(c->pend + c->pend_len, p, len);
    p = c->pend;
    len = need;
  }
  size_t off = 0;
  if (c->state == C_HANDSHAKE) {
    off = handle_head(c, p, len);
    if (c->state == C_HANDSHAKE) {
      if (!c->closing && keep(c, p, len) != 0)
        conn_lost(c, "out of memory");
      return;
    }
  }
  if (c->state >= C_OPEN && !c->closing)
    off += parse_frames(c, p + off, len - off);
  if (c->closing)
    return;
  if (off < len) {
    if (keep(c, p + off, len - off) != 0)
      conn_lost(c, "out of memory");
  } else {
    c->pend_len = 0;
    if (c->pend_cap > 4096) {
      free(c->pend);
      c->pend = NULL;
      c->pend_cap = 0;
    }
  }
}

static void connect_cb(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  clients_t *cl = c->cl;
  char user[32], token[512], head[1024];
  if (status != 0) {
    conn_lost(c, uv_strerror(status));
    return;
  }
  uint32_t k = c->idx % cl->nurls;
  snprintf(user, sizeof user, "u%llu", (unsigned long long)user_of(cl, c->idx));
  if (wr_bench_jwt_mint(cl->o->secret, user, 86400, token, sizeof token) < 0) {
    conn_lost(c, "cannot mint a token");
    return;
  }
  int n = snprintf(head, sizeof head,
                   "GET %s%stoken=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: warren.json\r\n\r\n",
                   cl->path[k], strchr(cl->path[k], '?') ? "&" : "?", token, cl->host[k]);
  c->state = C_HANDSHAKE;
  conn_write(c, (const uint8_t *)head, (size_t)n);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static int conn_start(clients_t *cl, conn_t *c) {
  int rc;
  c->cl = cl;
  c->tcp.data = c;
  c->creq.data = c;
  c->rng = 2463534242u ^ (c->idx * 2654435761u);
  if ((rc = uv_tcp_init_ex(cl->loop, &c->tcp, AF_INET)) != 0)
    return rc;
  uv_tcp_nodelay(&c->tcp, 1);
  if (cl->src_base) {
    /* Spread over 127.0.0.2, .3, … (or --source and the addresses after
     * it) so no source address runs out of ephemeral ports; the port is
     * picked at connect time. */
    uv_os_fd_t fd;
    int one = 1;
    struct sockaddr_in src;
    uint32_t k = cl->o->per_src ? c->idx / cl->o->per_src : 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
      setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(cl->src_base + k);
    if ((rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0)) != 0)
      return rc;
  }
  return uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&cl->dst[c->idx % cl->nurls],
                        connect_cb);
}

/* Starts connection c (number idx); one that cannot start is counted,
 * reported (the first three) and closed. */
static void conn_start_or_fail(clients_t *cl, conn_t *c, unsigned idx) {
  int rc = conn_start(cl, c);
  if (rc == 0)
    return;
  cl->failed++;
  cl->inflight--;
  c->state = C_CLOSED;
  if (cl->failed <= 3)
    fprintf(stderr, "clients: connection %u: %s\n", idx, uv_strerror(rc));
  if (!uv_is_closing((uv_handle_t *)&c->tcp) && c->tcp.loop)
    conn_close(c);
}

static void start_more(clients_t *cl) {
  if (cl->finishing || cl->churn)
    return;
  while (cl->next < cl->o->conns && cl->inflight < cl->o->ramp) {
    conn_t *c = &cl->conns[cl->next];
    c->idx = cl->next++;
    cl->inflight++;
    conn_start_or_fail(cl, c, c->idx);
  }
}

/* Every --pid at once, summed (the nodes of a cluster). 0 or -errno. */
static int sample_pids(const wr_bench_opts_t *o, wr_bench_proc_t *p) {
  memset(p, 0, sizeof *p);
  for (uint32_t i = 0; i < o->npids; i++) {
    wr_bench_proc_t one;
    int rc = wr_bench_proc_sample(o->pids[i], &one);
    if (rc != 0)
      return rc;
    p->rss_kb += one.rss_kb;
    p->cpu_s += one.cpu_s;
    p->sys_s += one.sys_s;
    p->threads += one.threads;
    p->ctxsw += one.ctxsw;
  }
  return 0;
}

static void sample(clients_t *cl, wr_bench_proc_t *p) {
  if (cl->have_pid && sample_pids(cl->o, p) == 0 && p->rss_kb > cl->rss_max_kb)
    cl->rss_max_kb = p->rss_kb;
}

static bool expectations_met(const clients_t *cl) {
  bool ids = !cl->o->count || cl->good >= cl->expected_total;
  bool bc = !cl->o->bcast_expect || cl->bcast_done >= cl->welcomed;
  return ids && bc;
}

static void write_ready(clients_t *cl) {
  if (!cl->o->ready_file)
    return;
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s.tmp", cl->o->ready_file);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return;
  fprintf(f, "%u\n", cl->welcomed);
  fclose(f);
  rename(tmp, cl->o->ready_file);
}

static void tick_cb(uv_timer_t *t) {
  clients_t *cl = t->data;
  int64_t now = wr_bench_now_us();
  wr_bench_proc_t p;
  if (cl->finishing)
    return;
  sample(cl, &p);
  if (cl->churn)
    return; /* churn_cb */
  if (!cl->t_all_open && cl->welcomed + cl->failed >= cl->o->conns) {
    cl->t_all_open = now;
    printf("clients: %u/%u connections open in %.2f s (%u failed)\n", cl->welcomed, cl->o->conns,
           (double)(now - cl->t_start) / 1e6, cl->failed);
    fflush(stdout);
  }
  if (cl->t_all_open && !cl->ready && now - cl->t_all_open >= (int64_t)cl->o->settle_ms * 1000) {
    cl->ready = true;
    cl->t_ready = now;
    sample(cl, &cl->p_open);
    wr_bench_cpu_sample(cl->o->broker_pid, &cl->c_open);
    if (cl->have_pid && cl->welcomed) {
      printf("clients: warren RSS %ld kB with 0 connections, %ld kB with %u: %.0f bytes per "
             "connection\n",
             cl->p0.rss_kb, cl->p_open.rss_kb, cl->welcomed,
             (double)(cl->p_open.rss_kb - cl->p0.rss_kb) * 1024.0 / cl->welcomed);
    }
    write_ready(cl);
    printf("clients: ready\n");
    fflush(stdout);
  }
  if (!cl->ready)
    return;
  if ((cl->o->count || cl->o->bcast_expect) && expectations_met(cl)) {
    finish(cl);
    return;
  }
  double waited = (double)(now - cl->t_ready) / 1e6;
  bool expecting = cl->o->count || cl->o->bcast_expect;
  if (cl->interrupted || (expecting && waited > cl->o->timeout_s) ||
      (!expecting && waited >= cl->o->hold_s)) {
    if (expecting)
      fprintf(stderr, "clients: %s before every notification arrived\n",
              cl->interrupted ? "interrupted" : "timed out");
    finish(cl);
  }
}

static void usr1_cb(uv_signal_t *s, int signum) {
  clients_t *cl = s->data;
  (void)signum;
  if (cl->t_go)
    return;
  sample(cl, &cl->p_go);
  wr_bench_cpu_sample(cl->o->broker_pid, &cl->c_go);
  cl->t_go = wr_bench_now_us();
  if (cl->have_pid && cl->o->cont_on_usr1)
    for (uint32_t i = 0; i < cl->o->npids; i++)
      kill(cl->o->pids[i], SIGCONT);
}

static void stop_cb(uv_signal_t *s, int signum) {
  clients_t *cl = s->data;
  (void)signum;
  cl->interrupted = true;
  if (!cl->ready)
    finish(cl);
}

static void report(clients_t *cl) {
  const wr_bench_opts_t *o = cl->o;
  wr_bench_json_t j;
  int64_t t_from = cl->t_go ? cl->t_go : cl->t_first;
  double secs = cl->t_last > t_from ? (double)(cl->t_last - t_from) / 1e6 : 0;
  double rate = secs > 0 ? (double)cl->good / secs : 0;
  uint64_t lost = o->count ? cl->expected_total - cl->good : 0;
  uint64_t bc_lost = 0;
  wr_bench_proc_t *pc = cl->t_go ? &cl->p_go : &cl->p_open;
  double cpu = cl->have_pid ? cl->p_end.cpu_s - pc->cpu_s : 0;
  double sys = cl->have_pid ? cl->p_end.sys_s - pc->sys_s : 0;
  long long ctxsw = cl->have_pid ? cl->p_end.ctxsw - pc->ctxsw : 0;
  uint64_t delivered = cl->good + cl->blat_n;
  uint32_t p50 = 0, p99 = 0, p999 = 0, pmax = 0, b_first = 0, b_p50 = 0, b_p99 = 0, b_last = 0;

  if (o->bcast_expect)
    bc_lost = (uint64_t)cl->welcomed * o->bcast_expect - cl->blat_n;
  if (cl->lat_n) {
    wr_bench_sort_u32(cl->lat, cl->lat_n);
    p50 = wr_bench_quantile(cl->lat, cl->lat_n, 0.5);
    p99 = wr_bench_quantile(cl->lat, cl->lat_n, 0.99);
    p999 = wr_bench_quantile(cl->lat, cl->lat_n, 0.999);
    pmax = cl->lat[cl->lat_n - 1];
  }
  if (cl->blat_n) {
    wr_bench_sort_u32(cl->blat, cl->blat_n);
    b_first = cl->blat[0];
    b_p50 = wr_bench_quantile(cl->blat, cl->blat_n, 0.5);
    b_p99 = wr_bench_quantile(cl->blat, cl->blat_n, 0.99);
    b_last = cl->blat[cl->blat_n - 1];
  }
  if (o->count) {
    printf("clients: received %" PRIu64 "/%" PRIu64 " (lost %" PRIu64 ", duplicates %" PRIu64
           ") in %.2f s%s: %.0f/s\n",
           cl->good, cl->expected_total, lost, cl->dups, secs, cl->t_go ? " from go" : "", rate);
    printf("clients: latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n", p50 / 1e3,
           p99 / 1e3, p999 / 1e3, pmax / 1e3);
  }
  if (o->bcast_expect)
    printf("clients: broadcast to %u connections: %" PRIu64 " received, %" PRIu64
           " missing; after created_at first %.2f ms, p50 %.2f ms, p99 %.2f ms, last %.2f ms\n",
           cl->welcomed, cl->blat_n, bc_lost, b_first / 1e3, b_p50 / 1e3, b_p99 / 1e3,
           b_last / 1e3);
  if (cl->have_pid)
    printf("clients: warren CPU %.2f s (%.2f s in the kernel) for %" PRIu64
           " deliveries (%.2f s per million), %.2f context switches per delivery, RSS max "
           "%ld kB\n",
           cpu, sys, delivered, delivered ? cpu * 1e6 / (double)delivered : 0.0,
           delivered ? (double)ctxsw / (double)delivered : 0.0, cl->rss_max_kb);
  wr_bench_budget_t bu;
  bool budget = o->broker_pid > 0 && cl->have_pid && delivered > 0;
  if (budget)
    wr_bench_budget("clients", cl->t_go ? &cl->c_go : &cl->c_open, &cl->c_end, cpu, delivered, &bu);
  double self_cpu = wr_bench_self_cpu_s();
  printf("clients: load generator CPU %.2f s in all\n", self_cpu);
  if (cl->closed_unexpected || cl->proto_errors || cl->foreign)
    printf("clients: %u closed by warren, %u protocol errors, %" PRIu64 " foreign ids\n",
           cl->closed_unexpected, cl->proto_errors, cl->foreign);

  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "clients");
    wr_bench_json_int(&j, "conns", o->conns);
    wr_bench_json_int(&j, "users", o->users);
    wr_bench_json_int(&j, "open", cl->welcomed);
    wr_bench_json_int(&j, "open_failed", cl->failed);
    wr_bench_json_num(&j, "open_seconds",
                      cl->t_all_open ? (double)(cl->t_all_open - cl->t_start) / 1e6 : 0);
    wr_bench_json_int(&j, "closed_unexpected", cl->closed_unexpected);
    wr_bench_json_int(&j, "protocol_errors", cl->proto_errors);
    wr_bench_json_num(&j, "self_cpu_s", self_cpu);
    if (cl->have_pid) {
      wr_bench_json_int(&j, "rss0_kb", cl->p0.rss_kb);
      wr_bench_json_int(&j, "rss_open_kb", cl->p_open.rss_kb);
      wr_bench_json_int(&j, "rss_max_kb", cl->rss_max_kb);
      wr_bench_json_num(
          &j, "rss_per_conn_bytes",
          cl->welcomed ? (double)(cl->p_open.rss_kb - cl->p0.rss_kb) * 1024.0 / cl->welcomed : 0);
      wr_bench_json_num(&j, "cpu_s", cpu);
      wr_bench_json_num(&j, "cpu_s_per_million", delivered ? cpu * 1e6 / (double)delivered : 0.0);
      wr_bench_json_num(&j, "sys_s", sys);
      wr_bench_json_num(&j, "ctxsw_per_delivery",
                        delivered ? (double)ctxsw / (double)delivered : 0.0);
    }
    if (budget)
      wr_bench_json_budget(&j, &bu);
    if (o->count) {
      wr_bench_json_int(&j, "expected", (long long)cl->expected_total);
      wr_bench_json_int(&j, "received", (long long)cl->good);
      wr_bench_json_int(&j, "lost", (long long)lost);
      wr_bench_json_int(&j, "duplicates", (long long)cl->dups);
      wr_bench_json_num(&j, "seconds", secs);
      /* From this process's start (the first connect) to the last receipt. */
      wr_bench_json_num(&j, "since_start_s",
                        cl->t_last > cl->t_start ? (double)(cl->t_last - cl->t_start) / 1e6 : 0);
      wr_bench_json_num(&j, "rate", rate);
      wr_bench_json_int(&j, "lat_p50_us", p50);
      wr_bench_json_int(&j, "lat_p99_us", p99);
      wr_bench_json_int(&j, "lat_p999_us", p999);
      wr_bench_json_int(&j, "lat_max_us", pmax);
    }
    if (o->bcast_expect) {
      wr_bench_json_int(&j, "bcast_received", (long long)cl->blat_n);
      wr_bench_json_int(&j, "bcast_missing", (long long)bc_lost);
      wr_bench_json_int(&j, "bcast_first_us", b_first);
      wr_bench_json_int(&j, "bcast_p50_us", b_p50);
      wr_bench_json_int(&j, "bcast_p99_us", b_p99);
      wr_bench_json_int(&j, "bcast_last_us", b_last);
    }
    wr_bench_json_close(&j);
  }
  if (lost || bc_lost || cl->failed || cl->interrupted)
    cl->rc = 1;
}

static void finish(clients_t *cl) {
  if (cl->finishing)
    return;
  sample(cl, &cl->p_end);
  wr_bench_cpu_sample(cl->o->broker_pid, &cl->c_end);
  cl->finishing = true;
  if (cl->churn)
    report_churn(cl);
  else
    report(cl);
  for (uint32_t i = 0; i < (cl->churn ? cl->sessions : cl->next); i++)
    if (cl->conns[i].tcp.loop && !cl->conns[i].closing)
      conn_close(&cl->conns[i]);
  if (cl->churn)
    uv_close((uv_handle_t *)&cl->churn_timer, NULL);
  uv_close((uv_handle_t *)&cl->tick, NULL);
  uv_close((uv_handle_t *)&cl->sig_usr1, NULL);
  uv_close((uv_handle_t *)&cl->sig_int, NULL);
  uv_close((uv_handle_t *)&cl->sig_term, NULL);
}

/* ws://IPv4:PORT/PATH[,ws://…]: one entry per URL. */
static int parse_ws_urls(clients_t *cl, const char *list) {
  cl->nurls = 0;
  while (*list) {
    unsigned a, b, c, d, port;
    int n = 0;
    size_t len = strcspn(list, ",");
    char url[512];
    uint32_t k = cl->nurls;
    if (k == WR_BENCH_MAX_URLS || len >= sizeof url)
      return -EINVAL;
    memcpy(url, list, len);
    url[len] = '\0';
    if (sscanf(url, "ws://%u.%u.%u.%u:%u%n", &a, &b, &c, &d, &port, &n) != 5 || a > 255 ||
        b > 255 || c > 255 || d > 255 || port > 65535)
      return -EINVAL;
    snprintf(cl->host[k], sizeof cl->host[k], "%u.%u.%u.%u:%u", a, b, c, d, port);
    snprintf(cl->path[k], sizeof cl->path[k], "%s", url[n] ? url + n : "/ws");
    memset(&cl->dst[k], 0, sizeof cl->dst[k]);
    cl->dst[k].sin_family = AF_INET;
    cl->dst[k].sin_port = htons((uint16_t)port);
    cl->dst[k].sin_addr.s_addr = htonl(a << 24 | b << 16 | c << 8 | d);
    cl->nurls++;
    list += len;
    if (*list == ',')
      list++;
  }
  return cl->nurls ? 0 : -EINVAL;
}

/* --- churn (--connect-rate) --------------------------------------------- */

static bool finished(const conn_t *c) {
  return c->state == C_CLOSED;
}

/* Closes a welcomed session on purpose: a close frame (1000), then the
 * socket, as a page that goes away. */
static void churn_close(clients_t *cl, conn_t *c, int64_t now) {
  uint8_t out[16];
  static const uint8_t normal[2] = {0x03, 0xe8};
  size_t n = wr_bench_ws_frame_masked(&c->rng, out, 0, 0x8, normal, 2);
  conn_write(c, out, n);
  c->state = C_CLOSED;
  cl->churn_closed++;
  conn_close(c);
  if (cl->o->reconnect_ms && c->idx < cl->o->conns) {
    conn_t *r = &cl->conns[c->idx + cl->o->conns];
    r->scheduled = true;
    r->t_due = now + (int64_t)cl->o->reconnect_ms * 1000;
  }
}

static void churn_begin(clients_t *cl, conn_t *c, uint32_t idx, int64_t now, int64_t due) {
  c->idx = idx;
  c->t_begin = now;
  cl->started++;
  cl->inflight++;
  if (!cl->t_first_begin)
    cl->t_first_begin = now;
  if (idx < cl->o->conns)
    cl->t_last_begin = now; /* the pace is the first sessions' */
  if (now - due > cl->max_behind_us)
    cl->max_behind_us = now - due;
  if (now - due > 10000)
    cl->started_late++;
  conn_start_or_fail(cl, c, idx);
}

/* Every 2 ms: start the connections due (the pace, at most --ramp
 * handshakes in flight), close those whose life is over, start the
 * reconnects due; finish once every session is over. */
static void churn_cb(uv_timer_t *t) {
  clients_t *cl = t->data;
  const wr_bench_opts_t *o = cl->o;
  int64_t now = wr_bench_now_us();
  uint32_t n = o->conns, i;
  if (cl->finishing)
    return;
  double el = (double)(now - cl->t_start) / 1e6;
  uint64_t due_n = (uint64_t)(el * o->connect_rate) + 1;
  if (due_n > n)
    due_n = n;
  while (cl->next < due_n && cl->inflight < o->ramp) {
    uint32_t k = cl->next++;
    churn_begin(cl, &cl->conns[k], k, now,
                cl->t_start + (int64_t)((double)k / o->connect_rate * 1e6));
  }
  /* First sessions. */
  for (i = cl->a_lo; i < cl->next; i++) {
    conn_t *c = &cl->conns[i];
    if (c->state == C_WELCOMED && now >= c->t_due)
      churn_close(cl, c, now);
    else if (c->state == C_CLOSED && o->reconnect_ms && !cl->conns[i + n].scheduled &&
             !cl->conns[i + n].t_begin && cl->conns[i + n].state != C_CLOSED) {
      /* It failed or warren closed it: no reconnect. */
      cl->conns[i + n].state = C_CLOSED;
      cl->skipped++;
    }
  }
  while (cl->a_lo < cl->next && finished(&cl->conns[cl->a_lo]))
    cl->a_lo++;
  /* Reconnects: scheduled as their first sessions close, in about that
   * order. */
  if (o->reconnect_ms) {
    for (i = cl->b_lo; i < cl->next; i++) {
      conn_t *r = &cl->conns[i + n];
      if (r->scheduled && !r->t_begin && now >= r->t_due && cl->inflight < o->ramp)
        churn_begin(cl, r, i + n, now, r->t_due);
      else if (r->state == C_WELCOMED && now >= r->t_due)
        churn_close(cl, r, now);
    }
    while (cl->b_lo < cl->next && finished(&cl->conns[cl->b_lo + n]))
      cl->b_lo++;
  }
  bool done = cl->next == n && cl->a_lo == n && (!o->reconnect_ms || cl->b_lo == n);
  if (done || cl->interrupted ||
      el > o->timeout_s + (double)n / o->connect_rate + 2 * o->life_s + o->reconnect_ms / 1e3) {
    if (!done)
      fprintf(stderr, "clients: churn %s with sessions left\n",
              cl->interrupted ? "interrupted" : "timed out");
    finish(cl);
  }
}

static void report_churn(clients_t *cl) {
  const wr_bench_opts_t *o = cl->o;
  wr_bench_json_t j;
  uint32_t n = o->conns;
  double span = cl->t_last_begin > cl->t_first_begin
                    ? (double)(cl->t_last_begin - cl->t_first_begin) / 1e6
                    : 0;
  /* The pace over the first sessions: the n-th start is due at (n-1)/R. */
  double rate = span > 0 ? (double)(n - 1) / span : 0;
  uint32_t p50 = 0, p99 = 0, pmax = 0;
  if (cl->wlat_n) {
    wr_bench_sort_u32(cl->wlat, cl->wlat_n);
    p50 = wr_bench_quantile(cl->wlat, cl->wlat_n, 0.5);
    p99 = wr_bench_quantile(cl->wlat, cl->wlat_n, 0.99);
    pmax = cl->wlat[cl->wlat_n - 1];
  }
  double secs = (double)(wr_bench_now_us() - cl->t_start) / 1e6;
  printf(
      "clients: churn: %u of %u sessions started (%u users%s), %u welcomed, %u failed, %u closed "
      "by warren, %u closed here\n",
      cl->started, cl->sessions, n, o->reconnect_ms ? ", each twice" : "", cl->churn_welcomed,
      cl->failed, cl->closed_unexpected, cl->churn_closed);
  printf("clients: churn: asked %.0f/s, first sessions started at %.1f/s (%u started > 10 ms late, "
         "at most %.1f ms); connect -> welcome p50 %.2f ms, p99 %.2f ms, max %.2f ms; %.1f s\n",
         o->connect_rate, rate, cl->started_late, (double)cl->max_behind_us / 1e3, p50 / 1e3,
         p99 / 1e3, pmax / 1e3, secs);
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "churn");
    wr_bench_json_int(&j, "users", n);
    wr_bench_json_int(&j, "sessions", cl->sessions);
    wr_bench_json_int(&j, "started", cl->started);
    wr_bench_json_int(&j, "welcomed", cl->churn_welcomed);
    wr_bench_json_int(&j, "failed", cl->failed);
    wr_bench_json_int(&j, "closed_unexpected", cl->closed_unexpected);
    wr_bench_json_int(&j, "closed_here", cl->churn_closed);
    wr_bench_json_int(&j, "reconnects_skipped", cl->skipped);
    wr_bench_json_num(&j, "rate_asked", o->connect_rate);
    wr_bench_json_num(&j, "rate_started", rate);
    wr_bench_json_num(&j, "start_span_s", span);
    wr_bench_json_int(&j, "started_late", cl->started_late);
    wr_bench_json_num(&j, "max_behind_ms", (double)cl->max_behind_us / 1e3);
    wr_bench_json_num(&j, "life_s", o->life_s);
    wr_bench_json_int(&j, "reconnect_ms", o->reconnect_ms);
    wr_bench_json_int(&j, "welcome_p50_us", p50);
    wr_bench_json_int(&j, "welcome_p99_us", p99);
    wr_bench_json_int(&j, "welcome_max_us", pmax);
    wr_bench_json_num(&j, "seconds", secs);
    wr_bench_json_num(&j, "self_cpu_s", wr_bench_self_cpu_s());
    wr_bench_json_close(&j);
  }
  if (cl->failed || cl->closed_unexpected || cl->interrupted ||
      cl->churn_welcomed + cl->skipped < cl->sessions)
    cl->rc = 1;
}

int wr_bench_clients_run(const wr_bench_opts_t *o) {
  clients_t cl;
  struct rlimit rl;
  int rc = 1;
  memset(&cl, 0, sizeof cl);
  cl.o = o;
  cl.run_len = strlen(o->run_id);
  if (!o->ws_url || !o->secret || parse_ws_urls(&cl, o->ws_url) != 0) {
    fprintf(stderr, "warren-bench clients: --url ws://IPv4:PORT/PATH[,…] and --secret are "
                    "required\n");
    return 2;
  }
  cl.churn = o->connect_rate > 0;
  cl.sessions = cl.churn && o->reconnect_ms ? 2 * o->conns : o->conns;
  if (cl.churn && (o->count || o->bcast_expect)) {
    fprintf(stderr, "warren-bench clients: --connect-rate expects no --count or broadcast\n");
    return 2;
  }
  if (o->first_user && o->count) {
    fprintf(stderr, "warren-bench clients: --first-user expects no --count\n");
    return 2;
  }
  if (o->source) {
    struct in_addr a;
    if (inet_pton(AF_INET, o->source, &a) != 1) {
      fprintf(stderr, "warren-bench clients: --source %s: not an IPv4 address\n", o->source);
      return 2;
    }
    cl.src_base = ntohl(a.s_addr);
  } else if (o->per_src && cl.sessions > o->per_src) {
    cl.src_base = 0x7f000002u;
  }
  /* One descriptor per connection, plus a margin for the loop itself. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)o->conns + 64) {
    rlim_t want = (rlim_t)o->conns + 64;
    rl.rlim_cur = want;
    if (rl.rlim_max < want)
      rl.rlim_max = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      getrlimit(RLIMIT_NOFILE, &rl);
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
      fprintf(stderr, "clients: open-files limit is %llu, below %u connections + 64\n",
              (unsigned long long)rl.rlim_max, o->conns);
    }
  }
  cl.conns = calloc(cl.sessions, sizeof *cl.conns);
  if (cl.churn)
    cl.wlat = calloc(cl.sessions, sizeof *cl.wlat);
  if (o->count) {
    cl.seen = calloc(o->count, 1);
    for (uint64_t u = 0; u < o->users && u < o->count; u++) {
      uint64_t ids = o->count / o->users + (u < o->count % o->users ? 1 : 0);
      cl.expected_total += ids * conns_of_user(&cl, u);
    }
    cl.lat = malloc(sizeof *cl.lat * (cl.expected_total ? cl.expected_total : 1));
  }
  if (o->bcast_expect)
    cl.blat = malloc(sizeof *cl.blat * (size_t)o->conns * o->bcast_expect);
  if (!cl.conns || (o->count && (!cl.seen || !cl.lat)) || (o->bcast_expect && !cl.blat) ||
      (cl.churn && !cl.wlat)) {
    fprintf(stderr, "warren-bench clients: out of memory\n");
    goto out;
  }
  if (o->trace_path && (cl.trace = fopen(o->trace_path, "w")) == NULL) {
    fprintf(stderr, "warren-bench clients: %s: %s\n", o->trace_path, strerror(errno));
    goto out;
  }
  cl.have_pid = o->npids > 0;
  if (cl.have_pid && sample_pids(o, &cl.p0) != 0) {
    fprintf(stderr, "warren-bench clients: cannot read /proc/%d\n", (int)o->pid);
    goto out;
  }
  cl.rss_max_kb = cl.p0.rss_kb;
  cl.loop = uv_default_loop();
  uv_timer_init(cl.loop, &cl.tick);
  cl.tick.data = &cl;
  uv_timer_start(&cl.tick, tick_cb, 50, 50);
  uv_signal_init(cl.loop, &cl.sig_usr1);
  cl.sig_usr1.data = &cl;
  uv_signal_start(&cl.sig_usr1, usr1_cb, SIGUSR1);
  uv_signal_init(cl.loop, &cl.sig_int);
  cl.sig_int.data = &cl;
  uv_signal_start(&cl.sig_int, stop_cb, SIGINT);
  uv_signal_init(cl.loop, &cl.sig_term);
  cl.sig_term.data = &cl;
  uv_signal_start(&cl.sig_term, stop_cb, SIGTERM);
  cl.t_start = wr_bench_now_us();
  if (cl.churn) {
    uv_timer_init(cl.loop, &cl.churn_timer);
    cl.churn_timer.data = &cl;
    uv_timer_start(&cl.churn_timer, churn_cb, 0, 2);
  }
  start_more(&cl);
  uv_run(cl.loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(cl.loop) == 0 ? cl.rc : 1;
out:
  if (cl.trace)
    fclose(cl.trace);
  free(cl.conns);
  free(cl.seen);
  free(cl.lat);
  free(cl.blat);
  free(cl.wlat);
  return rc;
}
