/* Admin endpoints (README.md, Operating) on admin.listen — /healthz, /readyz,
 * /metrics, /api/stats, /dashboard — and the demo page on the public port when
 * server.demo is on.
 *
 * Everything here runs on the loop thread. A scrape reads counters the loop
 * owns, relaxed atomics of the AMQP thread, the queue depths the AMQP thread
 * polls (under qstats_lock) and a few small files of /proc/self, which are
 * served from memory by the kernel and never block. */
#include "bridge/bridge_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

extern const unsigned char wr_web_demo_html[];
extern const size_t wr_web_demo_html_len;
extern const unsigned char wr_web_warren_js[];
extern const size_t wr_web_warren_js_len;
extern const unsigned char wr_web_dashboard_html[];
extern const size_t wr_web_dashboard_html_len;

static void respond_static(wr_ws_http_response_t *resp, const char *type, const void *body,
                           size_t len) {
  resp->status = 200;
  resp->content_type = type;
  resp->body = (char *)body;
  resp->body_len = len;
  resp->body_owned = false;
}

int wr_public_http_cb(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                      wr_ws_http_response_t *resp, void *data) {
  wr_bridge_t *b = data;
  (void)srv;
  (void)method;
  (void)query;
  if (!b->cfg->demo)
    return -ENOENT;
  if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
    respond_static(resp, "text/html; charset=utf-8", wr_web_demo_html, wr_web_demo_html_len);
    return 0;
  }
  if (strcmp(path, "/warren.js") == 0) {
    respond_static(resp, "text/javascript; charset=utf-8", wr_web_warren_js, wr_web_warren_js_len);
    return 0;
  }
  return -ENOENT;
}

static bool ready(const wr_bridge_t *b) {
  return b->listening && b->phase == WR_PHASE_RUNNING && atomic_load(&b->consuming);
}

/* What a polled queue is for, from its name (README.md, Topology;
 * docs/mailboxes.md for Q.mailbox.new). */
static const char *queue_role(const wr_bridge_t *b, const char *name) {
  size_t n = strlen(b->cfg->queue);
  if (strcmp(name, b->cfg->queue) == 0)
    return "main";
  if (strncmp(name, b->cfg->queue, n) != 0)
    return "other";
  name += n;
  if (strncmp(name, ".retry.", 7) == 0)
    return "retry";
  if (strcmp(name, ".parked") == 0)
    return "parked";
  if (strcmp(name, ".dead") == 0)
    return "dead";
  if (strcmp(name, ".mailbox.new") == 0)
    return "mailbox_new";
  if (strncmp(name, ".node.", 6) == 0)
    return "node";
  return "other";
}

/* Figures of this process from /proc/self; -1 when unavailable. */
typedef struct proc_stats_s {
  double cpu_seconds;
  double start_time_s; /* unix time */
  int64_t rss_bytes;
  int64_t vsize_bytes;
  int64_t open_fds;
  int64_t max_fds;
} proc_stats_t;

static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n, total = 0;
  if (fd < 0)
    return -errno;
  while ((size_t)total < cap - 1 && (n = read(fd, buf + total, cap - 1 - (size_t)total)) != 0) {
    if (n < 0) {
      if (errno == EINTR)
        continue;
      total = -errno;
      break;
    }
    total += n;
  }
  close(fd);
  if (total >= 0)
    buf[total] = '\0';
  return total;
}

static void proc_stats_read(proc_stats_t *ps) {
  char buf[4096];
  long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  struct rlimit rl;
  DIR *dir;

  ps->cpu_seconds = ps->start_time_s = -1;
  ps->rss_bytes = ps->vsize_bytes = ps->open_fds = ps->max_fds = -1;
  /* Fields after the command name, which may itself hold spaces and ')'. */
  if (read_small("/proc/self/stat", buf, sizeof(buf)) > 0 && ticks > 0) {
    char *p = strrchr(buf, ')');
    unsigned long long utime, stime, start, vsize;
    long long rss;
    if (p != NULL && sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
                            "%*d %*d %*d %llu %llu %lld",
                            &utime, &stime, &start, &vsize, &rss) == 5) {
      ps->cpu_seconds = (double)(utime + stime) / (double)ticks;
      ps->vsize_bytes = (int64_t)vsize;
      ps->rss_bytes = rss * page;
      /* starttime counts ticks since boot; btime is the boot time. */
      if (read_small("/proc/stat", buf, sizeof(buf)) > 0) {
        char *bt = strstr(buf, "\nbtime ");
        if (bt != NULL)
          ps->start_time_s = strtod(bt + 7, NULL) + (double)start / (double)ticks;
      }
    }
  }
  dir = opendir("/proc/self/fd");
  if (dir != NULL) {
    int64_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
      if (e->d_name[0] != '.')
        n++;
    closedir(dir);
    ps->open_fds = n - 1; /* not the one opendir() used */
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    ps->max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (int64_t)rl.rlim_cur;
}

/* Serves the table's reads: the bases of offset rows and, for getters and
 * callbacks, everything one scrape sees. The queue depths are copied under
 * qstats_lock once, so both families and the JSON agree. */
typedef struct scrape_s {
  const wr_bridge_t *b;
  proc_stats_t proc;
  wr_amqp_queue_stat_t queues[WR_MAX_QUEUE_STATS];
  size_t n_queues;
} scrape_t;

enum { B_LOOP, B_BRIDGE, B_WS, B_AMQP, B_PROC };

static wr_metric_value_t get_one(const void *data) {
  (void)data;
  return (wr_metric_value_t){.u = 1};
}

static wr_metric_value_t get_now_ms(const void *data) {
  (void)data;
  return (wr_metric_value_t){.i = wr_now_realtime_ms()};
}

static wr_metric_value_t get_ready(const void *data) {
  const scrape_t *s = data;
  return (wr_metric_value_t){.u = ready(s->b)};
}

static wr_metric_value_t get_draining(const void *data) {
  const scrape_t *s = data;
  return (wr_metric_value_t){.u = s->b->phase != WR_PHASE_RUNNING};
}

static wr_metric_value_t get_consuming(const void *data) {
  const scrape_t *s = data;
  return (wr_metric_value_t){.u = atomic_load(&s->b->consuming)};
}

static wr_metric_value_t get_delivery_ring(const void *data) {
  const scrape_t *s = data;
  return (wr_metric_value_t){.u = wr_ring_size(&s->b->deliveries)};
}

static wr_metric_value_t get_command_ring(const void *data) {
  const scrape_t *s = data;
  return (wr_metric_value_t){.u = wr_ring_size(&s->b->commands)};
}

static wr_metric_value_t get_retried(const void *data) {
  const scrape_t *s = data;
  wr_metric_value_t v = {0};
  for (size_t i = 0; i < s->b->cfg->n_retry_delays; i++)
    v.u += s->b->stats.retried[i];
  return v;
}

static void json_version(const void *data, wr_sbuf_t *sb) {
  (void)data;
  wr_sbuf_printf(sb, "\"");
  wr_sbuf_escaped(sb, WARREN_VERSION, true);
  wr_sbuf_printf(sb, "\"");
}

/* Cluster mode: this node's id (README.md, Running several nodes); "" and
 * null in single mode. */
static void prom_node(const void *data, const wr_metric_t *m, wr_sbuf_t *sb) {
  const scrape_t *s = data;
  const char *id = s->b->cfg->cluster_node_id;
  wr_sbuf_printf(sb, "%s{node_id=\"", m->name);
  wr_sbuf_escaped(sb, id != NULL ? id : "", false);
  wr_sbuf_printf(sb, "\"} 1\n");
}

static void json_node(const void *data, wr_sbuf_t *sb) {
  const scrape_t *s = data;
  const char *id = s->b->cfg->cluster_node_id;
  if (id == NULL) {
    wr_sbuf_printf(sb, "null");
    return;
  }
  wr_sbuf_printf(sb, "\"");
  wr_sbuf_escaped(sb, id, true);
  wr_sbuf_printf(sb, "\"");
}

/* One sample per ladder step: the steps come from the configuration. */
static void prom_retried(const void *data, const wr_metric_t *m, wr_sbuf_t *sb) {
  const scrape_t *s = data;
  for (size_t i = 0; i < s->b->cfg->n_retry_delays; i++)
    wr_sbuf_printf(sb, "%s{step=\"%zu\",delay_ms=\"%u\"} %llu\n", m->name, i + 1,
                   s->b->cfg->retry_delays_ms[i], (unsigned long long)s->b->stats.retried[i]);
}

static void json_retried(const void *data, wr_sbuf_t *sb) {
  const scrape_t *s = data;
  wr_sbuf_printf(sb, "[");
  for (size_t i = 0; i < s->b->cfg->n_retry_delays; i++)
    wr_sbuf_printf(sb, "%s{\"step\":%zu,\"delay_ms\":%u,\"count\":%llu}", i ? "," : "", i + 1,
                   s->b->cfg->retry_delays_ms[i], (unsigned long long)s->b->stats.retried[i]);
  wr_sbuf_printf(sb, "]");
}

/* One sample per polled queue that answered; m->off picks the field of
 * wr_amqp_queue_stat_t. */
static void prom_queues(const void *data, const wr_metric_t *m, wr_sbuf_t *sb) {
  const scrape_t *s = data;
  for (size_t i = 0; i < s->n_queues; i++) {
    int64_t v = *(const int64_t *)((const char *)&s->queues[i] + m->off);
    if (v < 0)
      continue;
    wr_sbuf_printf(sb, "%s{queue=\"", m->name);
    wr_sbuf_escaped(sb, s->queues[i].name, false);
    wr_sbuf_printf(sb, "\",role=\"%s\"} %lld\n", queue_role(s->b, s->queues[i].name), (long long)v);
  }
}

static void json_int_or_null(wr_sbuf_t *sb, int64_t v) {
  if (v < 0)
    wr_sbuf_printf(sb, "null");
  else
    wr_sbuf_printf(sb, "%lld", (long long)v);
}

/* The two queue families as one array of objects, unknown figures null. */
static void json_queues(const void *data, wr_sbuf_t *sb) {
  const scrape_t *s = data;
  wr_sbuf_printf(sb, "[");
  for (size_t i = 0; i < s->n_queues; i++) {
    wr_sbuf_printf(sb, "%s{\"name\":\"", i ? "," : "");
    wr_sbuf_escaped(sb, s->queues[i].name, true);
    wr_sbuf_printf(sb, "\",\"role\":\"%s\",\"messages\":", queue_role(s->b, s->queues[i].name));
    json_int_or_null(sb, s->queues[i].messages);
    wr_sbuf_printf(sb, ",\"consumers\":");
    json_int_or_null(sb, s->queues[i].consumers);
    wr_sbuf_printf(sb, "}");
  }
  wr_sbuf_printf(sb, "]");
}

#define COUNTER WR_METRIC_COUNTER
#define GAUGE WR_METRIC_GAUGE
#define HISTOGRAM WR_METRIC_HISTOGRAM
#define LOOP(k, f) .kind = WR_MV_##k, .base = B_LOOP, .off = offsetof(wr_bridge_stats_t, f)
#define BRIDGE(k, f) .kind = WR_MV_##k, .base = B_BRIDGE, .off = offsetof(wr_bridge_t, f)
#define WS(f) .kind = WR_MV_U64, .base = B_WS, .off = offsetof(wr_ws_stats_t, f)
#define AMQP(f) .kind = WR_MV_U64_RELAXED, .base = B_AMQP, .off = offsetof(wr_amqp_stats_t, f)
#define PROC(k, f) .kind = WR_MV_##k, .base = B_PROC, .off = offsetof(proc_stats_t, f)
#define FN(k, fn) .kind = WR_MV_##k, .get = fn
#define CUSTOM(p, j) .kind = WR_MV_CUSTOM, .prom = p, .json_value = j
/* Every figure of /metrics and /api/stats, one row each, in /metrics order:
 * {Prometheus family, type, help (first row of a family), labels, JSON key,
 * where the value is}. A row without a family is JSON only, one without a
 * JSON key Prometheus only. */
const wr_metric_t wr_admin_metrics[] = {
    {"warren_build_info", GAUGE, "Always 1; the version is a label.",
     "version=\"" WARREN_VERSION "\"", NULL, FN(U64, get_one)},
    {NULL, 0, NULL, NULL, "version", CUSTOM(NULL, json_version)},
    {"warren_cluster_node_info", GAUGE,
     "Always 1; cluster mode's node id (cluster.node_id) is a label, empty in single mode.", NULL,
     "node_id", CUSTOM(prom_node, json_node)},
    {NULL, 0, NULL, NULL, "ts_ms", FN(I64, get_now_ms)},
    {"warren_ready", GAUGE, "1 while listening and consuming (what /readyz answers 200 for).", NULL,
     "ready", FN(BOOL, get_ready)},
    {"warren_draining", GAUGE, "1 after SIGTERM/SIGINT, while the drain runs.", NULL, "draining",
     FN(BOOL, get_draining)},
    {"warren_connections", GAUGE, "Open WebSocket connections.", NULL, "connections",
     WS(connections)},
    {"warren_users_online", GAUGE, "Users with at least one open connection.", NULL, "users_online",
     BRIDGE(SIZE, core.index.users_online)},
    {"warren_handshakes_in_progress", GAUGE,
     "TCP connections still sending their request head (they count toward "
     "server.max_connections).",
     NULL, "handshakes_in_progress", WS(handshakes_in_progress)},
    {"warren_handshakes_total", COUNTER, "WebSocket handshakes by outcome.", "outcome=\"accepted\"",
     "handshakes.accepted", WS(handshakes_accepted)},
    {"warren_handshakes_total", COUNTER, NULL, "outcome=\"bad_request\"", "handshakes.bad_request",
     WS(handshakes_bad_request)},
    {"warren_handshakes_total", COUNTER, NULL, "outcome=\"unauthorized\"",
     "handshakes.unauthorized", WS(handshakes_unauthorized)},
    {"warren_handshakes_total", COUNTER, NULL, "outcome=\"forbidden_origin\"",
     "handshakes.forbidden_origin", WS(handshakes_forbidden)},
    {"warren_handshakes_total", COUNTER, NULL, "outcome=\"over_limit\"", "handshakes.over_limit",
     WS(handshakes_over_limit)},
    {"warren_handshakes_total", COUNTER, NULL, "outcome=\"timeout\"", "handshakes.timeout",
     WS(handshakes_timeout)},
    {"warren_connection_closes_total", COUNTER,
     "WebSocket connections closed by warren, by reason.", "reason=\"slow_consumer\"", NULL,
     WS(closes_slow_consumer)},
    {"warren_connection_closes_total", COUNTER, NULL, "reason=\"too_big\"", NULL,
     WS(closes_too_big)},
    {"warren_connection_closes_total", COUNTER, NULL, "reason=\"protocol\"", NULL,
     WS(closes_protocol)},
    {"warren_connection_closes_total", COUNTER, NULL, "reason=\"idle\"", NULL, WS(closes_idle)},
    {"warren_connection_closes_total", COUNTER, NULL, "reason=\"token_expired\"", NULL,
     WS(closes_token_expired)},
    {"warren_connection_closes_total", COUNTER, NULL, "reason=\"rate_limited\"", NULL,
     WS(closes_rate_limited)},
    {"warren_client_messages_total", COUNTER, "Messages received from clients.", NULL, NULL,
     WS(messages_received)},
    /* Totals are monotonic counters: a rate is the difference of two polls. */
    {"warren_notifications_consumed_total", COUNTER, "Envelopes decoded, by body format.",
     "format=\"json\"", "consumed_by_format.json", .json_sum = "consumed", LOOP(U64, consumed[0])},
    {"warren_notifications_consumed_total", COUNTER, NULL, "format=\"msgpack\"",
     "consumed_by_format.msgpack", LOOP(U64, consumed[1])},
    {"warren_notifications_delivered_total", COUNTER,
     "Notification frames queued to client connections.", NULL, "delivered", LOOP(U64, delivered)},
    {"warren_notifications_deferred_total", COUNTER,
     "Notification frames held back because the connection had over half of "
     "server.max_queued_bytes unwritten.",
     NULL, NULL, LOOP(U64, deferred)},
    {"warren_notifications_written_total", COUNTER,
     "Notification frames handed to the kernel (ack.mode=write only).", NULL, NULL,
     LOOP(U64, written)},
    {"warren_broadcasts_total", COUNTER, "Broadcast notifications sent.", NULL, NULL,
     LOOP(U64, broadcasts)},
    {"warren_broadcast_fanout_seconds", HISTOGRAM,
     "Broadcasts by time from consume to the frame handed to the last connection's socket.", NULL,
     NULL, LOOP(HIST, fanout)},
    {"warren_broadcast_last_fanout_seconds", GAUGE,
     "Fan-out time of the latest broadcast (see warren_broadcast_fanout_seconds).", NULL, NULL,
     LOOP(MS, fanout_last_ms)},
    {"warren_broadcast_last_connections", GAUGE, "Connections the latest broadcast was sent to.",
     NULL, NULL, LOOP(U64, fanout_last_conns)},
    {"warren_targets_total", COUNTER,
     "Per-user targets settled: delivered (acked or written) or offline (mailed, or sent to the "
     "ladder without mailboxes).",
     "outcome=\"delivered\"", "targets_delivered", LOOP(U64, targets_delivered)},
    {"warren_targets_total", COUNTER, NULL, "outcome=\"offline\"", "targets_offline",
     LOOP(U64, targets_offline)},
    {"warren_client_acks_total", COUNTER,
     "Client acks, by whether they settled a waiting notification.", "matched=\"true\"",
     "client_acks", LOOP(U64, client_acks)},
    {"warren_client_acks_total", COUNTER, NULL, "matched=\"false\"", NULL,
     LOOP(U64, client_acks_unknown)},
    {"warren_client_bad_messages_total", COUNTER, "Client messages answered with an error.", NULL,
     NULL, LOOP(U64, client_bad_messages)},
    {"warren_ack_timeouts_total", COUNTER, "Targets not acked within ack.timeout_ms.", NULL,
     "ack_timeouts", LOOP(U64, ack_timeouts)},
    {NULL, 0, NULL, NULL, "retried", FN(U64, get_retried)},
    {"warren_retried_total", COUNTER, "Ladder copies handed to the AMQP thread, by step.", NULL,
     "retried_by_step", CUSTOM(prom_retried, json_retried)},
    {"warren_parked_total", COUNTER,
     "Notifications warren parked in Q.parked, by reason: max_attempts (the ladder gave up), "
     "expired (past expires_at/ttl_ms), unacked (a mailbox item its user's clients left unacked "
     "mailbox.max_redeliveries times). Mailboxes also dead-letter expired and overflowing items "
     "to Q.parked themselves (see warren_queue_messages{role=\"parked\"}).",
     "reason=\"max_attempts\"", "parked_by_reason.max_attempts", .json_sum = "parked",
     LOOP(U64, parked_max_attempts)},
    {"warren_parked_total", COUNTER, NULL, "reason=\"expired\"", "parked_by_reason.expired",
     LOOP(U64, parked_expired)},
    {"warren_parked_total", COUNTER, NULL, "reason=\"unacked\"", "parked_by_reason.unacked",
     LOOP(U64, parked_unacked)},
    {"warren_dead_lettered_total", COUNTER, "Messages rejected to Q.dead, by reason.",
     "reason=\"too_large\"", "dead_lettered_by_reason.too_large", .json_sum = "dead_lettered",
     LOOP(U64, dead_by_reason[WR_ENV_TOO_LARGE])},
    {"warren_dead_lettered_total", COUNTER, NULL, "reason=\"bad_format\"",
     "dead_lettered_by_reason.bad_format", LOOP(U64, dead_by_reason[WR_ENV_BAD_FORMAT])},
    {"warren_dead_lettered_total", COUNTER, NULL, "reason=\"bad_json\"",
     "dead_lettered_by_reason.bad_json", LOOP(U64, dead_by_reason[WR_ENV_BAD_JSON])},
    {"warren_dead_lettered_total", COUNTER, NULL, "reason=\"bad_msgpack\"",
     "dead_lettered_by_reason.bad_msgpack", LOOP(U64, dead_by_reason[WR_ENV_BAD_MSGPACK])},
    {"warren_dead_lettered_total", COUNTER, NULL, "reason=\"no_target\"",
     "dead_lettered_by_reason.no_target", LOOP(U64, dead_by_reason[WR_ENV_NO_TARGET])},
    {"warren_dead_lettered_total", COUNTER, NULL, "reason=\"bad_field\"",
     "dead_lettered_by_reason.bad_field", LOOP(U64, dead_by_reason[WR_ENV_BAD_FIELD])},
    {"warren_requeued_total", COUNTER,
     "Deliveries handed back for redelivery (shutdown, out of memory).", NULL, NULL,
     LOOP(U64, requeued)},
    {"warren_stale_discarded_total", COUNTER,
     "Deliveries of a lost AMQP connection dropped (the broker redelivers them).", NULL, NULL,
     LOOP(U64, discarded_stale)},
    {"warren_copy_user_ignored_total", COUNTER,
     "Messages whose x-warren-user names a user their body does not target (delivered to the "
     "body's targets).",
     NULL, "copy_user_ignored", LOOP(U64, copy_user_ignored)},
    /* Mailboxes (docs/mailboxes.md): the way in (copies, puts, fallbacks),
     * the replay (items, replay latency), what goes wrong while a user is
     * online (redeliveries, pauses, rejects), and the registry and janitor.
     * The JSON keys are one "mailbox" object, then the replay histogram. */
    {"warren_mailbox_copies_total", COUNTER,
     "Offline notifications the loop handed to the AMQP thread for a user's mailbox, one per "
     "offline user; far above warren_mailbox_puts_total means the broker is not confirming them.",
     NULL, "mailbox.copies", LOOP(U64, mailbox_copies)},
    {"warren_mailbox_puts_total", COUNTER,
     "Mailbox copies the broker confirmed: notifications now waiting for a user who is offline "
     "(a user without a mailbox yet counts twice: through Q.mailbox.new, then into the new "
     "mailbox).",
     NULL, "mailbox.puts", AMQP(mailbox_puts)},
    {"warren_mailbox_fallbacks_total", COUNTER,
     "Mailbox copies the broker nacked or returned, sent to the retry ladder (or parked) instead; "
     "any increase means mailboxes are refusing copies.",
     NULL, "mailbox.fallbacks", AMQP(mailbox_fallbacks)},
    {"warren_mailbox_items_total", COUNTER,
     "Notifications consumed from users' mailboxes: the backlog replayed to users who came back.",
     NULL, "mailbox.items", AMQP(mailbox_items)},
    {"warren_mailbox_requeued_total", COUNTER,
     "Mailbox items given back to their mailbox, where they wait in order: their user left, no "
     "connection took them, or they went unacked.",
     NULL, "mailbox.requeued", LOOP(U64, mailbox_requeued)},
    {"warren_mailbox_redelivered_total", COUNTER,
     "Mailbox items not acked within ack.timeout_ms by an online user's clients (requeued, or "
     "parked at mailbox.max_redeliveries); a steady rate points at a client that does not ack.",
     NULL, "mailbox.redelivered", LOOP(U64, mailbox_redelivered)},
    {"warren_mailbox_pauses_total", COUNTER,
     "Times a user's mailbox stopped being consumed for a while (1 s, doubling up to 5 min) after "
     "an item went unsent or unacked, so the broker does not hand it straight back.",
     NULL, "mailbox.pauses", LOOP(U64, mailbox_pauses)},
    {"warren_mailbox_rejected_total", COUNTER,
     "Mailbox messages refused, by reason: not_addressed (a mailbox or Q.mailbox.new item whose "
     "body does not name that user, dead-lettered), no_user (a Q.mailbox.new message naming no "
     "user, to Q.dead). Someone publishes into the mailbox exchanges directly.",
     "reason=\"not_addressed\"", "mailbox.rejected_not_addressed", LOOP(U64, mailbox_rejected)},
    {"warren_mailbox_rejected_total", COUNTER, NULL, "reason=\"no_user\"",
     "mailbox.rejected_no_user", AMQP(mailbox_new_rejected)},
    {"warren_mailboxes", GAUGE,
     "Mailboxes this process knows to exist (known: made or found since it started) and those "
     "consumed now because their user is online (consumed).",
     "state=\"known\"", "mailbox.known", AMQP(mailboxes_known)},
    {"warren_mailboxes", GAUGE, NULL, "state=\"consumed\"", "mailbox.consumed",
     AMQP(mailbox_consumers)},
    {"warren_mailboxes_created_total", COUNTER,
     "Mailboxes declared for a user who had none, on their first offline notification.", NULL,
     "mailbox.created", AMQP(mailboxes_created)},
    {"warren_mailboxes_deleted_total", COUNTER,
     "Mailboxes the janitor deleted, empty and unused for mailbox.idle_ms.", NULL,
     "mailbox.deleted", AMQP(mailboxes_deleted)},
    {"warren_mailbox_rebinds_total", COUNTER,
     "Janitor deletes the broker refused because a message or a consumer got in after the "
     "unbind: the mailbox was bound again and kept.",
     NULL, "mailbox.rebinds", AMQP(mailbox_rebinds)},
    {"warren_mailbox_probes_total", COUNTER,
     "Passive declares asking whether a user who connected has a mailbox this process did not "
     "know of (after a restart, one per returning user).",
     NULL, "mailbox.probes", AMQP(mailbox_probes)},
    {"warren_mailbox_replay_seconds", HISTOGRAM,
     "From a returning user's first connection to the first item of the backlog waiting in their "
     "mailbox on the wire: how long they wait for it.",
     NULL, "mailbox_replay", LOOP(HIST, mailbox_replay)},
    /* Cluster mode (docs/cluster.md): zero in single mode. */
    {"warren_cluster_routed_total", COUNTER,
     "Copies this node published to Q.route as a router, one per target user (copies), and those "
     "the broker confirmed (confirmed); broadcasts are sent once to Q.broadcast.",
     "state=\"copies\"", "cluster.routed_copies", LOOP(U64, routed_copies)},
    {"warren_cluster_routed_total", COUNTER, NULL, "state=\"confirmed\"", "cluster.routed",
     AMQP(routed)},
    {"warren_cluster_broadcasts_total", COUNTER,
     "Broadcasts this node sent to Q.broadcast as a router (sent) and broadcast copies that "
     "waited in a node queue past cluster.node_ttl_ms and were dropped (expired).",
     "state=\"sent\"", "cluster.broadcasts", LOOP(U64, routed_broadcasts)},
    {"warren_cluster_broadcasts_total", COUNTER, NULL, "state=\"expired\"",
     "cluster.broadcasts_expired", AMQP(broadcasts_expired)},
    {"warren_cluster_route_fallbacks_total", COUNTER,
     "Route copies the broker nacked or returned, sent to the retry ladder instead; any increase "
     "means Q.route or the mailbox exchanges are refusing copies.",
     NULL, "cluster.route_fallbacks", AMQP(route_fallbacks)},
    {"warren_cluster_node_items_total", COUNTER,
     "Copies consumed from this node's queue (routed here for a user connected here, or a "
     "broadcast).",
     NULL, "cluster.node_items", AMQP(node_items)},
    {"warren_cluster_wasted_total", COUNTER,
     "Copies routed to this node for a user with no connection here (they moved, or a binding "
     "outlived a crash or its grace): mailed to the user, and the binding removed.",
     NULL, "cluster.wasted", LOOP(U64, node_stale)},
    {"warren_cluster_fan_total", COUNTER,
     "Fan copies: a mailbox item delivered here is sent once more through Q.route for the user's "
     "devices on other nodes (sent); this node's own coming back (echo), those no device took "
     "(undelivered) and those that ended in a mailbox (dropped) are dropped.",
     "state=\"sent\"", "cluster.fan_sent", LOOP(U64, fan_copies)},
    {"warren_cluster_fan_total", COUNTER, NULL, "state=\"echo\"", "cluster.fan_echoes",
     AMQP(fan_echoes)},
    {"warren_cluster_fan_total", COUNTER, NULL, "state=\"undelivered\"", "cluster.fan_undelivered",
     LOOP(U64, fan_undelivered)},
    {"warren_cluster_fan_total", COUNTER, NULL, "state=\"dropped\"", "cluster.fan_dropped",
     AMQP(fan_dropped)},
    {"warren_cluster_binding_ops_total", COUNTER,
     "Binding operations on this node's queue: bind (a user's first connection here), unbind "
     "(grace over, or a stale binding), rejoin (back within cluster.unbind_grace_ms: neither), "
     "unbind_other (another node's binding, after a copy expired in its queue).",
     "op=\"bind\"", "cluster.binds", AMQP(node_binds)},
    {"warren_cluster_binding_ops_total", COUNTER, NULL, "op=\"unbind\"", "cluster.unbinds",
     AMQP(node_unbinds)},
    {"warren_cluster_binding_ops_total", COUNTER, NULL, "op=\"rejoin\"", "cluster.rejoins",
     AMQP(node_rejoins)},
    {"warren_cluster_binding_ops_total", COUNTER, NULL, "op=\"unbind_other\"",
     "cluster.unbinds_other", AMQP(node_foreign_unbinds)},
    {"warren_cluster_users_bound", GAUGE,
     "User keys bound to this node's queue now (online here, or within their unbind grace).", NULL,
     "cluster.users_bound", AMQP(node_users_bound)},
    {"warren_pending_deliveries", GAUGE, "Consumed messages not settled yet by the loop.", NULL,
     "in_flight", BRIDGE(SIZE, core.n_pendings)},
    {"warren_ring_depth", GAUGE, "Items waiting in the inter-thread rings.", "ring=\"delivery\"",
     "rings.delivery", FN(SIZE, get_delivery_ring)},
    {"warren_ring_depth", GAUGE, NULL, "ring=\"command\"", "rings.command",
     FN(SIZE, get_command_ring)},
    {"warren_ring_depth", GAUGE, NULL, "ring=\"overflow\"", "rings.overflow", BRIDGE(SIZE, ov_len)},
    {"warren_amqp_connected", GAUGE, "1 while connected to the broker and consuming.", NULL,
     "amqp_connected", FN(BOOL, get_consuming)},
    {"warren_amqp_reconnects_total", COUNTER, "AMQP connections opened after the first.", NULL,
     "reconnects", AMQP(reconnects)},
    {"warren_amqp_acked_total", COUNTER, "Messages acked to the broker.", NULL, "amqp_acked",
     AMQP(acked)},
    {"warren_amqp_ack_frames_total", COUNTER,
     "basic.ack frames sent; acked_total / ack_frames_total is the coalescing factor.", NULL, NULL,
     AMQP(ack_frames)},
    {"warren_amqp_nacked_total", COUNTER,
     "Messages nacked to the broker: to Q.dead (requeue=false) or back to Q (requeue=true).",
     "requeue=\"false\"", NULL, AMQP(dead_lettered)},
    {"warren_amqp_nacked_total", COUNTER, NULL, "requeue=\"true\"", NULL, AMQP(requeued)},
    {"warren_amqp_published_total", COUNTER,
     "Mailbox, ladder and park copies confirmed by the broker.", NULL, NULL, AMQP(published)},
    {"warren_amqp_publish_failures_total", COUNTER,
     "Mailbox, ladder and park copies nacked or lost before their confirm (a refused mailbox "
     "copy only when its fallback could not be sent either): their original is redelivered.",
     NULL, NULL, AMQP(publish_failures)},
    {"warren_amqp_stale_verdicts_total", COUNTER,
     "Verdicts dropped because their AMQP connection was gone.", NULL, NULL, AMQP(stale_verdicts)},
    {"warren_amqp_watchdog_kicks_total", COUNTER,
     "AMQP sockets shut down because the AMQP thread was stuck.", NULL, NULL, AMQP(watchdog_kicks)},
    {"warren_amqp_hostile_total", COUNTER,
     "Hostile-but-valid publishes handled without a reconnect, by what warren did.",
     "outcome=\"copy_without_message_id\"", "hostile.copies_without_message_id",
     AMQP(copies_without_message_id)},
    {"warren_amqp_hostile_total", COUNTER, NULL, "outcome=\"copy_without_headers\"",
     "hostile.copies_without_headers", AMQP(copies_without_headers)},
    {"warren_amqp_hostile_total", COUNTER, NULL, "outcome=\"copy_refused\"",
     "hostile.copies_refused", AMQP(copies_refused)},
    {"warren_amqp_hostile_total", COUNTER, NULL, "outcome=\"untrusted_headers\"",
     "hostile.untrusted_headers", AMQP(untrusted_headers)},
    {"warren_amqp_hostile_total", COUNTER, NULL, "outcome=\"body_skipped\"",
     "hostile.bodies_skipped", AMQP(bodies_skipped)},
    {"warren_amqp_unacked", GAUGE, "Deliveries in flight, not yet settled with the broker.", NULL,
     "amqp_unacked", AMQP(unacked)},
    {"warren_delivery_latency_seconds", HISTOGRAM,
     "From the envelope's created_at (else the AMQP timestamp, else consume time) to the client "
     "ack or write.",
     NULL, "latency", LOOP(HIST, latency)},
    {"warren_loop_busy_seconds", HISTOGRAM,
     "Event-loop iterations by wall time spent outside poll: how long a client could wait.", NULL,
     NULL, LOOP(HIST, loop_busy)},
    {"warren_loop_cpu_seconds", HISTOGRAM,
     "Event-loop iterations by CPU time of the loop thread (busy wall time far above this means "
     "the thread waited for a core).",
     NULL, NULL, LOOP(HIST, loop_cpu)},
    {"warren_loop_busy_max_seconds", GAUGE, "Longest event-loop iteration since start (wall).",
     NULL, NULL, LOOP(MS, loop_busy.max)},
    {"warren_loop_cpu_max_seconds", GAUGE,
     "Most CPU time one event-loop iteration used since start.", NULL, NULL,
     LOOP(MS, loop_cpu.max)},
    {"warren_queue_messages", GAUGE,
     "Messages ready in each queue, from a passive queue.declare every admin.queue_poll_ms.", NULL,
     "queues", CUSTOM(prom_queues, json_queues), .off = offsetof(wr_amqp_queue_stat_t, messages)},
    {"warren_queue_consumers", GAUGE,
     "Consumers of each queue, from a passive queue.declare every admin.queue_poll_ms.", NULL, NULL,
     CUSTOM(prom_queues, NULL), .off = offsetof(wr_amqp_queue_stat_t, consumers)},
    {"process_cpu_seconds_total", COUNTER, "Total user and system CPU time spent in seconds.", NULL,
     "process.cpu_seconds", PROC(SECONDS, cpu_seconds)},
    {"process_open_fds", GAUGE, "Number of open file descriptors.", NULL, "process.open_fds",
     PROC(I64, open_fds)},
    {"process_max_fds", GAUGE, "Maximum number of open file descriptors.", NULL, NULL,
     PROC(I64, max_fds)},
    {"process_resident_memory_bytes", GAUGE, "Resident memory size in bytes.", NULL,
     "process.rss_bytes", PROC(I64, rss_bytes)},
    {"process_virtual_memory_bytes", GAUGE, "Virtual memory size in bytes.", NULL, NULL,
     PROC(I64, vsize_bytes)},
    {"process_start_time_seconds", GAUGE, "Start time of the process since unix epoch in seconds.",
     NULL, "start_time_s", PROC(SECONDS, start_time_s)},
};
const size_t wr_admin_n_metrics = sizeof(wr_admin_metrics) / sizeof(wr_admin_metrics[0]);

_Static_assert(WR_LATENCY_NBOUNDS <= WR_HIST_MAX_BOUNDS && WR_LOOP_NBOUNDS <= WR_HIST_MAX_BOUNDS,
               "a histogram's bounds must fit in wr_hist_t");

void wr_admin_render(wr_bridge_t *b, const wr_ws_stats_t *ws, const wr_amqp_stats_t *as, bool json,
                     wr_sbuf_t *sb) {
  scrape_t s = {.b = b};
  wr_metric_src_t src = {.data = &s};

  proc_stats_read(&s.proc);
  pthread_mutex_lock(&b->qstats_lock);
  s.n_queues = b->n_qstats;
  memcpy(s.queues, b->qstats, s.n_queues * sizeof(s.queues[0]));
  pthread_mutex_unlock(&b->qstats_lock);
  src.base[B_LOOP] = &b->stats;
  src.base[B_BRIDGE] = b;
  src.base[B_WS] = ws;
  src.base[B_AMQP] = as;
  src.base[B_PROC] = &s.proc;
  if (json)
    wr_metrics_render_json(wr_admin_metrics, wr_admin_n_metrics, &src, sb);
  else
    wr_metrics_render_prom(wr_admin_metrics, wr_admin_n_metrics, &src, sb);
}

/* Every response already carries "Cache-Control: no-store"
 * (wr_ws_http_head_write): extra_headers must not repeat it. */
int wr_admin_http_cb(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                     wr_ws_http_response_t *resp, void *data) {
  wr_bridge_t *b = data;
  wr_sbuf_t sb = {0};
  (void)srv;
  (void)method;
  (void)query;

  if (strcmp(path, "/healthz") == 0) {
    respond_static(resp, "text/plain; charset=utf-8", "ok\n", 3);
    return 0;
  }
  if (strcmp(path, "/readyz") == 0) {
    bool ok = ready(b);
    const char *why = ok                             ? "ready\n"
                      : b->phase != WR_PHASE_RUNNING ? "not ready: draining\n"
                      : !atomic_load(&b->consuming)  ? "not ready: not consuming\n"
                                                     : "not ready: not listening\n";
    respond_static(resp, "text/plain; charset=utf-8", why, strlen(why));
    resp->status = ok ? 200 : 503;
    return 0;
  }
  if (strcmp(path, "/dashboard") == 0 || strcmp(path, "/") == 0) {
    respond_static(resp, "text/html; charset=utf-8", wr_web_dashboard_html,
                   wr_web_dashboard_html_len);
    return 0;
  }
  if (strcmp(path, "/metrics") == 0) {
    wr_admin_render(b, wr_ws_server_stats(b->ws), wr_amqp_stats(b->amqp), false, &sb);
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (strcmp(path, "/api/stats") == 0) {
    wr_admin_render(b, wr_ws_server_stats(b->ws), wr_amqp_stats(b->amqp), true, &sb);
    resp->content_type = "application/json";
  } else {
    return -ENOENT;
  }
  if (sb.oom) {
    free(sb.s);
    return -ENOMEM;
  }
  resp->status = 200;
  resp->body = sb.s;
  resp->body_len = sb.len;
  resp->body_owned = true;
  return 0;
}
