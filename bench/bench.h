/* warren-bench: load generator and measurement tool for warren (BENCHMARKS.md).
 *
 * The modes share one option set: `consume` (the minimal rabbitmq-c consumer
 * that sets the ceiling), `fill` (pre-fill a queue with confirmed envelopes),
 * `publish` (fixed-rate publisher for latency runs, or one broadcast) and
 * `clients` (many WebSocket connections to warren that count, ack and time
 * every notification), `burn` (a stand-in for a bridge's CPU), `sink`
 * (reads and drops what `consume --sink` writes: the minimal bridge), `depth`
 * (ready messages of a queue or of users' mailboxes, by passive declares) and
 * `replay` (users come back one after another to their mailbox backlogs, each
 * replay timed on its own: docs/mailboxes.md). Every mode prints
 * human-readable lines and, with
 * --json FILE, one JSON object with its figures. */
#ifndef WARREN_BENCH_H
#define WARREN_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define WR_BENCH_MAX_PIDS 16
#define WR_BENCH_MAX_URLS 16

typedef struct wr_bench_opts_s {
  const char *amqp_url;   /* amqp://user:pass@host:port/vhost */
  const char *exchange;   /* NULL: publish to the default exchange, routing key = queue */
  const char *queue;      /* queue to declare / fill / consume */
  bool declare;           /* fill/consume: declare `queue` as a plain durable queue */
  uint64_t count;         /* notifications to fill / consume / expect */
  bool count_set;         /* depth: --count was given (wait for it) */
  uint64_t first;         /* fill: index of the first envelope (--first) */
  const char *mailboxes;  /* depth: Q: the mailboxes Q.mbox.u.u0 … of --users users */
  uint32_t users;         /* user ids u0..u{users-1}; notification i targets u(i % users) */
  uint32_t conns;         /* clients: connections (connection i is user u(i % users)) */
  const char *run_id;     /* id prefix: notification i has id "<run>-<i>" */
  uint32_t body_bytes;    /* target envelope size */
  uint32_t prefetch;      /* consume: basic.qos */
  uint32_t ack_every;     /* consume: ack multiple=true every N */
  uint32_t window;        /* fill/publish: unconfirmed publishes in flight */
  double rate;            /* publish: notifications per second */
  double duration_s;      /* publish: seconds (count = rate * duration when count is 0) */
  bool broadcast;         /* publish: one broadcast envelope per "count" */
  const char *ws_url;     /* clients: ws://host:port/path[,…]: connection c uses URL c % n */
  const char *secret;     /* clients: HS256 secret to mint tokens */
  bool client_acks;       /* clients: send {"type":"ack","id":…} for each notification */
  uint32_t bcast_expect;  /* clients: broadcasts each connection must receive */
  pid_t pid;              /* clients: warren's pid (RSS / CPU sampling, SIGCONT); pids[0] */
  pid_t broker_pid;       /* clients/consume: the broker's pid, for the CPU budget */
  bool cont_on_usr1;      /* clients: on SIGUSR1, SIGCONT `pid` and start the clock */
  const char *ready_file; /* clients: created once every connection is open */
  uint32_t settle_ms;     /* clients: wait after the last open before sampling RSS */
  double hold_s;          /* clients: without expectations, hold connections this long */
  double timeout_s;       /* clients/consume: give up after this long (from ready) */
  uint32_t ramp;          /* clients: handshakes in flight while connecting */
  uint32_t per_src;       /* clients: connections per source address 127.0.0.k */
  const char *source;     /* clients: first source address (bind even below per_src) */
  uint64_t first_user;    /* clients: connection c is user u(first_user + c % users) */
  double connect_rate;    /* clients: churn: connections opened per second (0: ramp) */
  double life_s;          /* clients: churn: each connection closes this long after its welcome */
  uint32_t reconnect_ms;  /* clients: churn: each user connects again this long after closing */
  const char *json_path;  /* write the JSON summary here */
  const char *trace_path; /* clients: one line per receipt: seq, receive time, latency (µs) */
  const char *sink;       /* consume: write each delivery as a frame to --conns sockets here */
  const char *listen;     /* sink: IP:PORT to accept connections on */
  double burn_share;      /* burn: share of one core to take, over all threads */
  uint32_t burn_threads;  /* burn: threads (2) */
  bool quiet;
  /* clients: --pid P1,P2,…: several warren processes (cluster nodes), summed */
  pid_t pids[WR_BENCH_MAX_PIDS];
  uint32_t npids; /* entries in pids */
} wr_bench_opts_t;

/* util.c */
int64_t wr_bench_now_us(void);      /* CLOCK_MONOTONIC */
int64_t wr_bench_realtime_us(void); /* CLOCK_REALTIME */
double wr_bench_self_cpu_s(void);   /* this process's user + system CPU seconds */
/* Writes an HS256 JWT with sub=user, iat=now, exp=now+ttl_s into out (NUL-terminated).
 * Returns its length, or -ENOSPC / -EIO. */
ssize_t wr_bench_jwt_mint(const char *secret, const char *user, int64_t ttl_s, char *out,
                          size_t cap);
/* Envelope i of run `run`: id "<run>-<i>" (or "<run>-b<i>" for a broadcast), user u(i % users),
 * created_at (unix ms) and t_us (unix µs), padded to about body_bytes. Returns its length. */
size_t wr_bench_envelope_build(char *out, size_t cap, const char *run, uint64_t i, uint32_t users,
                               bool broadcast, uint32_t body_bytes);
typedef struct {
  long rss_kb;     /* VmRSS */
  double cpu_s;    /* utime + stime */
  double sys_s;    /* stime: the kernel's share (socket writes, wake-ups) */
  long threads;    /* Threads */
  long long ctxsw; /* voluntary + involuntary context switches, all threads */
} wr_bench_proc_t;
/* CPU used by the broker (all its threads), this process, and the machine,
 * at one instant: the budget that bounds a rate on a shared machine. */
typedef struct {
  double broker_s;          /* broker utime + stime; 0 without a broker pid */
  double self_s;            /* this process, from getrusage */
  unsigned long long busy;  /* /proc/stat ticks not idle or iowait, all CPUs */
  unsigned long long total; /* /proc/stat ticks, all CPUs */
} wr_bench_cpu_t;
void wr_bench_cpu_sample(pid_t broker_pid, wr_bench_cpu_t *out);
/* CPU per notification between two samples, and the rate the machine's
 * cores could carry at that cost (all of them busy with this pipeline). */
typedef struct {
  double broker_us, mid_us, self_us; /* mid: warren (clients) or nothing (consume) */
  double busy_pct;                   /* the machine's CPUs, busy share */
  double bound_rate;                 /* ncpu / (broker + mid + self) per second */
} wr_bench_budget_t;
/* Fills bu for n notifications between a and b (mid_s: warren's CPU seconds
 * over the same interval, or < 0 for none) and prints one line after who. */
void wr_bench_budget(const char *who, const wr_bench_cpu_t *a, const wr_bench_cpu_t *b,
                     double mid_s, uint64_t n, wr_bench_budget_t *bu);
/* Samples /proc/<pid>/{stat,status}; 0 or -errno. */
int wr_bench_proc_sample(pid_t pid, wr_bench_proc_t *out);
/* Sorts v in place and returns the q-quantile (0..1) by nearest rank; 0 when n is 0. */
uint32_t wr_bench_quantile(uint32_t *v, size_t n, double q);
/* Reads the decimal digits at p (before end) into *v; false when there are none. */
bool wr_bench_parse_u64(const char *p, const char *end, uint64_t *v);
/* Appends one masked client WebSocket frame (payload under 64 KiB) to out at
 * off, its mask from the xorshift state *rng; returns the new length. */
size_t wr_bench_ws_frame_masked(uint32_t *rng, uint8_t *out, size_t off, uint8_t op,
                                const uint8_t *p, size_t len);
void wr_bench_sort_u32(uint32_t *v, size_t n);

/* A flat JSON object writer: key/value pairs, appended in order. */
typedef struct {
  FILE *f;
  int n;
} wr_bench_json_t;
int wr_bench_json_open(wr_bench_json_t *j, const char *path);
void wr_bench_json_str(wr_bench_json_t *j, const char *k, const char *v);
void wr_bench_json_num(wr_bench_json_t *j, const char *k, double v);
void wr_bench_json_int(wr_bench_json_t *j, const char *k, long long v);
int wr_bench_json_close(wr_bench_json_t *j);
void wr_bench_json_budget(wr_bench_json_t *j, const wr_bench_budget_t *bu);

/* amqp_modes.c — each returns a process exit status. */
int wr_bench_consume_run(const wr_bench_opts_t *o);
int wr_bench_fill_run(const wr_bench_opts_t *o);
int wr_bench_publish_run(const wr_bench_opts_t *o);
int wr_bench_depth_run(const wr_bench_opts_t *o);

/* clients.c */
int wr_bench_clients_run(const wr_bench_opts_t *o);
/* sink.c: --conns blocking TCP connections to a sink, and one WebSocket text
 * frame per delivery (one writev, like warren's), to connection i % n. */
typedef struct {
  int *fds;
  uint32_t n;
  uint64_t frames;
} wr_bench_sink_t;
int wr_bench_sink_open(wr_bench_sink_t *s, const char *addr, uint32_t conns);
int wr_bench_sink_write(wr_bench_sink_t *s, uint32_t i, const void *payload, size_t len);
void wr_bench_sink_close(wr_bench_sink_t *s);
int wr_bench_sink_run(const wr_bench_opts_t *o);
/* replay.c: users connect one after another to their mailbox backlogs. */
int wr_bench_replay_run(const wr_bench_opts_t *o);
/* burn.c */
int wr_bench_burn_run(const wr_bench_opts_t *o);

#endif
