/* Admin endpoints (DESIGN.md §7) on admin.listen — /healthz, /readyz,
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

static uint64_t rd(const uint64_t *p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static bool ready(const wr_bridge_t *b) {
  return b->listening && b->phase == WR_PHASE_RUNNING && atomic_load(&b->consuming);
}

/* What a polled queue is for, from its name (DESIGN.md §2). */
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

#define HELP(name, type, help)                                                                     \
  wr_sbuf_printf(sb, "# HELP " name " " help "\n# TYPE " name " " type "\n")

static void metrics_queues(wr_bridge_t *b, wr_sbuf_t *sb) {
  size_t i;
  pthread_mutex_lock(&b->qstats_lock);
  HELP("warren_queue_messages", "gauge",
       "Messages ready in each queue, from a passive queue.declare every admin.queue_poll_ms.");
  for (i = 0; i < b->n_qstats; i++) {
    if (b->qstats[i].messages < 0)
      continue;
    wr_sbuf_printf(sb, "warren_queue_messages{queue=\"");
    wr_sbuf_escaped(sb, b->qstats[i].name, false);
    wr_sbuf_printf(sb, "\",role=\"%s\"} %lld\n", queue_role(b, b->qstats[i].name),
                   (long long)b->qstats[i].messages);
  }
  HELP("warren_queue_consumers", "gauge",
       "Consumers of each queue, from a passive queue.declare every admin.queue_poll_ms.");
  for (i = 0; i < b->n_qstats; i++) {
    if (b->qstats[i].consumers < 0)
      continue;
    wr_sbuf_printf(sb, "warren_queue_consumers{queue=\"");
    wr_sbuf_escaped(sb, b->qstats[i].name, false);
    wr_sbuf_printf(sb, "\",role=\"%s\"} %lld\n", queue_role(b, b->qstats[i].name),
                   (long long)b->qstats[i].consumers);
  }
  pthread_mutex_unlock(&b->qstats_lock);
}

static void metrics_process(wr_sbuf_t *sb) {
  proc_stats_t ps;
  proc_stats_read(&ps);
  if (ps.cpu_seconds >= 0) {
    HELP("process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.");
    wr_sbuf_printf(sb, "process_cpu_seconds_total %.2f\n", ps.cpu_seconds);
  }
  if (ps.open_fds >= 0) {
    HELP("process_open_fds", "gauge", "Number of open file descriptors.");
    wr_sbuf_printf(sb, "process_open_fds %lld\n", (long long)ps.open_fds);
  }
  if (ps.max_fds >= 0) {
    HELP("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    wr_sbuf_printf(sb, "process_max_fds %lld\n", (long long)ps.max_fds);
  }
  if (ps.rss_bytes >= 0) {
    HELP("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    wr_sbuf_printf(sb, "process_resident_memory_bytes %lld\n", (long long)ps.rss_bytes);
    HELP("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    wr_sbuf_printf(sb, "process_virtual_memory_bytes %lld\n", (long long)ps.vsize_bytes);
  }
  if (ps.start_time_s >= 0) {
    HELP("process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
    wr_sbuf_printf(sb, "process_start_time_seconds %.2f\n", ps.start_time_s);
  }
}

static void metrics_loop(const wr_bridge_stats_t *st, wr_sbuf_t *sb) {
  HELP("warren_loop_busy_seconds", "histogram",
       "Event-loop iterations by wall time spent outside poll: how long a client could wait.");
  wr_hist_render_prom(&st->loop_busy, "warren_loop_busy_seconds", 1000.0, sb);
  HELP("warren_loop_cpu_seconds", "histogram",
       "Event-loop iterations by CPU time of the loop thread (busy wall time far above this "
       "means the thread waited for a core).");
  wr_hist_render_prom(&st->loop_cpu, "warren_loop_cpu_seconds", 1000.0, sb);
  HELP("warren_loop_busy_max_seconds", "gauge", "Longest event-loop iteration since start (wall).");
  wr_sbuf_printf(sb, "warren_loop_busy_max_seconds %.6f\n", st->loop_busy.max / 1000.0);
  HELP("warren_loop_cpu_max_seconds", "gauge",
       "Most CPU time one event-loop iteration used since start.");
  wr_sbuf_printf(sb, "warren_loop_cpu_max_seconds %.6f\n", st->loop_cpu.max / 1000.0);
}

static void metrics(wr_bridge_t *b, wr_sbuf_t *sb) {
  const wr_ws_stats_t *ws = wr_ws_server_stats(b->ws);
  const wr_amqp_stats_t *as = wr_amqp_stats(b->amqp);
  const wr_bridge_stats_t *st = &b->stats;
  size_t i;

  HELP("warren_build_info", "gauge", "Always 1; the version is a label.");
  wr_sbuf_printf(sb, "warren_build_info{version=\"%s\"} 1\n", WARREN_VERSION);
  HELP("warren_ready", "gauge", "1 while listening and consuming (what /readyz answers 200 for).");
  wr_sbuf_printf(sb, "warren_ready %d\n", ready(b) ? 1 : 0);
  HELP("warren_draining", "gauge", "1 after SIGTERM/SIGINT, while the drain runs.");
  wr_sbuf_printf(sb, "warren_draining %d\n", b->phase != WR_PHASE_RUNNING ? 1 : 0);
  HELP("warren_connections", "gauge", "Open WebSocket connections.");
  wr_sbuf_printf(sb, "warren_connections %llu\n", (unsigned long long)ws->connections);
  HELP("warren_users_online", "gauge", "Users with at least one open connection.");
  wr_sbuf_printf(sb, "warren_users_online %zu\n", b->index.users_online);
  HELP("warren_handshakes_total", "counter", "WebSocket handshakes by outcome.");
  wr_sbuf_printf(
      sb,
      "warren_handshakes_total{outcome=\"accepted\"} %llu\n"
      "warren_handshakes_total{outcome=\"bad_request\"} %llu\n"
      "warren_handshakes_total{outcome=\"unauthorized\"} %llu\n"
      "warren_handshakes_total{outcome=\"forbidden_origin\"} %llu\n"
      "warren_handshakes_total{outcome=\"over_limit\"} %llu\n"
      "warren_handshakes_total{outcome=\"timeout\"} %llu\n",
      (unsigned long long)ws->handshakes_accepted, (unsigned long long)ws->handshakes_bad_request,
      (unsigned long long)ws->handshakes_unauthorized, (unsigned long long)ws->handshakes_forbidden,
      (unsigned long long)ws->handshakes_over_limit, (unsigned long long)ws->handshakes_timeout);
  HELP("warren_connection_closes_total", "counter",
       "WebSocket connections closed by warren, by reason.");
  wr_sbuf_printf(sb,
                 "warren_connection_closes_total{reason=\"slow_consumer\"} %llu\n"
                 "warren_connection_closes_total{reason=\"too_big\"} %llu\n"
                 "warren_connection_closes_total{reason=\"protocol\"} %llu\n"
                 "warren_connection_closes_total{reason=\"idle\"} %llu\n"
                 "warren_connection_closes_total{reason=\"token_expired\"} %llu\n"
                 "warren_connection_closes_total{reason=\"rate_limited\"} %llu\n",
                 (unsigned long long)ws->closes_slow_consumer,
                 (unsigned long long)ws->closes_too_big, (unsigned long long)ws->closes_protocol,
                 (unsigned long long)ws->closes_idle, (unsigned long long)ws->closes_token_expired,
                 (unsigned long long)ws->closes_rate_limited);
  HELP("warren_client_messages_total", "counter", "Messages received from clients.");
  wr_sbuf_printf(sb, "warren_client_messages_total %llu\n",
                 (unsigned long long)ws->messages_received);

  HELP("warren_notifications_consumed_total", "counter", "Envelopes decoded, by body format.");
  wr_sbuf_printf(sb,
                 "warren_notifications_consumed_total{format=\"json\"} %llu\n"
                 "warren_notifications_consumed_total{format=\"msgpack\"} %llu\n",
                 (unsigned long long)st->consumed[0], (unsigned long long)st->consumed[1]);
  HELP("warren_notifications_delivered_total", "counter",
       "Notification frames queued to client connections.");
  wr_sbuf_printf(sb, "warren_notifications_delivered_total %llu\n",
                 (unsigned long long)st->delivered);
  HELP("warren_notifications_deferred_total", "counter",
       "Notification frames held back because the connection had over half of "
       "server.max_queued_bytes unwritten.");
  wr_sbuf_printf(sb, "warren_notifications_deferred_total %llu\n",
                 (unsigned long long)st->deferred);
  HELP("warren_notifications_written_total", "counter",
       "Notification frames handed to the kernel (ack.mode=write only).");
  wr_sbuf_printf(sb, "warren_notifications_written_total %llu\n", (unsigned long long)st->written);
  HELP("warren_broadcasts_total", "counter", "Broadcast notifications sent.");
  wr_sbuf_printf(sb, "warren_broadcasts_total %llu\n", (unsigned long long)st->broadcasts);
  HELP("warren_broadcast_fanout_seconds", "histogram",
       "Broadcasts by time from consume to the frame handed to the last connection's socket.");
  wr_hist_render_prom(&st->fanout, "warren_broadcast_fanout_seconds", 1000.0, sb);
  HELP("warren_broadcast_last_fanout_seconds", "gauge",
       "Fan-out time of the latest broadcast (see warren_broadcast_fanout_seconds).");
  wr_sbuf_printf(sb, "warren_broadcast_last_fanout_seconds %.6f\n", st->fanout_last_ms / 1000.0);
  HELP("warren_broadcast_last_connections", "gauge",
       "Connections the latest broadcast was sent to.");
  wr_sbuf_printf(sb, "warren_broadcast_last_connections %llu\n",
                 (unsigned long long)st->fanout_last_conns);
  HELP("warren_targets_total", "counter",
       "Per-user targets settled: delivered (acked or written) or offline (sent to the ladder).");
  wr_sbuf_printf(sb,
                 "warren_targets_total{outcome=\"delivered\"} %llu\n"
                 "warren_targets_total{outcome=\"offline\"} %llu\n",
                 (unsigned long long)st->targets_delivered,
                 (unsigned long long)st->targets_offline);
  HELP("warren_client_acks_total", "counter",
       "Client acks, by whether they settled a waiting notification.");
  wr_sbuf_printf(sb,
                 "warren_client_acks_total{matched=\"true\"} %llu\n"
                 "warren_client_acks_total{matched=\"false\"} %llu\n",
                 (unsigned long long)st->client_acks, (unsigned long long)st->client_acks_unknown);
  HELP("warren_client_bad_messages_total", "counter", "Client messages answered with an error.");
  wr_sbuf_printf(sb, "warren_client_bad_messages_total %llu\n",
                 (unsigned long long)st->client_bad_messages);
  HELP("warren_ack_timeouts_total", "counter", "Targets not acked within ack.timeout_ms.");
  wr_sbuf_printf(sb, "warren_ack_timeouts_total %llu\n", (unsigned long long)st->ack_timeouts);
  HELP("warren_retried_total", "counter", "Ladder copies handed to the AMQP thread, by step.");
  for (i = 0; i < b->cfg->n_retry_delays; i++)
    wr_sbuf_printf(sb, "warren_retried_total{step=\"%zu\",delay_ms=\"%u\"} %llu\n", i + 1,
                   b->cfg->retry_delays_ms[i], (unsigned long long)st->retried[i]);
  HELP("warren_parked_total", "counter", "Notifications parked in Q.parked, by reason.");
  wr_sbuf_printf(sb,
                 "warren_parked_total{reason=\"max_attempts\"} %llu\n"
                 "warren_parked_total{reason=\"expired\"} %llu\n",
                 (unsigned long long)st->parked_max_attempts,
                 (unsigned long long)st->parked_expired);
  HELP("warren_dead_lettered_total", "counter", "Messages rejected to Q.dead, by reason.");
  for (i = WR_ENV_TOO_LARGE; i <= WR_ENV_BAD_FIELD; i++)
    wr_sbuf_printf(sb, "warren_dead_lettered_total{reason=\"%s\"} %llu\n",
                   wr_env_result_str((wr_env_result_t)i),
                   (unsigned long long)st->dead_by_reason[i]);
  HELP("warren_requeued_total", "counter",
       "Deliveries handed back for redelivery (shutdown, out of memory).");
  wr_sbuf_printf(sb, "warren_requeued_total %llu\n", (unsigned long long)st->requeued);
  HELP("warren_stale_discarded_total", "counter",
       "Deliveries of a lost AMQP connection dropped (the broker redelivers them).");
  wr_sbuf_printf(sb, "warren_stale_discarded_total %llu\n",
                 (unsigned long long)st->discarded_stale);
  HELP("warren_pending_deliveries", "gauge", "Consumed messages not settled yet by the loop.");
  wr_sbuf_printf(sb, "warren_pending_deliveries %zu\n", b->n_pendings);
  HELP("warren_ring_depth", "gauge", "Items waiting in the inter-thread rings.");
  wr_sbuf_printf(
      sb,
      "warren_ring_depth{ring=\"delivery\"} %zu\nwarren_ring_depth{ring=\"command\"} %zu\n"
      "warren_ring_depth{ring=\"overflow\"} %zu\n",
      wr_ring_size(&b->deliveries), wr_ring_size(&b->commands), b->ov_len);

  HELP("warren_amqp_connected", "gauge", "1 while connected to the broker and consuming.");
  wr_sbuf_printf(sb, "warren_amqp_connected %d\n", atomic_load(&b->consuming) ? 1 : 0);
  HELP("warren_amqp_reconnects_total", "counter", "AMQP connections opened after the first.");
  wr_sbuf_printf(sb, "warren_amqp_reconnects_total %llu\n",
                 (unsigned long long)rd(&as->reconnects));
  HELP("warren_amqp_acked_total", "counter", "Messages acked to the broker.");
  wr_sbuf_printf(sb, "warren_amqp_acked_total %llu\n", (unsigned long long)rd(&as->acked));
  HELP("warren_amqp_ack_frames_total", "counter",
       "basic.ack frames sent; acked_total / ack_frames_total is the coalescing factor.");
  wr_sbuf_printf(sb, "warren_amqp_ack_frames_total %llu\n",
                 (unsigned long long)rd(&as->ack_frames));
  HELP("warren_amqp_nacked_total", "counter",
       "Messages nacked to the broker: to Q.dead (requeue=false) or back to Q (requeue=true).");
  wr_sbuf_printf(sb,
                 "warren_amqp_nacked_total{requeue=\"false\"} %llu\n"
                 "warren_amqp_nacked_total{requeue=\"true\"} %llu\n",
                 (unsigned long long)rd(&as->dead_lettered), (unsigned long long)rd(&as->requeued));
  HELP("warren_amqp_published_total", "counter", "Ladder and park copies confirmed by the broker.");
  wr_sbuf_printf(sb, "warren_amqp_published_total %llu\n", (unsigned long long)rd(&as->published));
  HELP("warren_amqp_publish_failures_total", "counter",
       "Ladder and park copies nacked or lost before their confirm.");
  wr_sbuf_printf(sb, "warren_amqp_publish_failures_total %llu\n",
                 (unsigned long long)rd(&as->publish_failures));
  HELP("warren_amqp_stale_verdicts_total", "counter",
       "Verdicts dropped because their AMQP connection was gone.");
  wr_sbuf_printf(sb, "warren_amqp_stale_verdicts_total %llu\n",
                 (unsigned long long)rd(&as->stale_verdicts));
  HELP("warren_amqp_watchdog_kicks_total", "counter",
       "AMQP sockets shut down because the AMQP thread was stuck.");
  wr_sbuf_printf(sb, "warren_amqp_watchdog_kicks_total %llu\n",
                 (unsigned long long)rd(&as->watchdog_kicks));
  HELP("warren_amqp_unacked", "gauge", "Deliveries in flight, not yet settled with the broker.");
  wr_sbuf_printf(sb, "warren_amqp_unacked %llu\n", (unsigned long long)rd(&as->unacked));

  HELP("warren_delivery_latency_seconds", "histogram",
       "From the envelope's created_at (else the AMQP timestamp, else consume time) to the "
       "client ack or write.");
  wr_hist_render_prom(&st->latency, "warren_delivery_latency_seconds", 1000.0, sb);
  metrics_loop(st, sb);
  metrics_queues(b, sb);
  metrics_process(sb);
}

static void json_num_or_null(wr_sbuf_t *sb, double v, const char *fmt) {
  if (v < 0)
    wr_sbuf_printf(sb, "null");
  else
    wr_sbuf_printf(sb, fmt, v);
}

static void stats_json(wr_bridge_t *b, wr_sbuf_t *sb) {
  const wr_ws_stats_t *ws = wr_ws_server_stats(b->ws);
  const wr_amqp_stats_t *as = wr_amqp_stats(b->amqp);
  const wr_bridge_stats_t *st = &b->stats;
  uint64_t retried = 0, dead = 0;
  proc_stats_t ps;
  size_t i;

  for (i = 0; i < b->cfg->n_retry_delays; i++)
    retried += st->retried[i];
  for (i = WR_ENV_TOO_LARGE; i <= WR_ENV_BAD_FIELD; i++)
    dead += st->dead_by_reason[i];
  proc_stats_read(&ps);

  wr_sbuf_printf(sb, "{\"version\":\"%s\",\"ts_ms\":%lld,", WARREN_VERSION,
                 (long long)wr_now_realtime_ms());
  wr_sbuf_printf(sb, "\"start_time_s\":");
  json_num_or_null(sb, ps.start_time_s, "%.2f");
  wr_sbuf_printf(sb,
                 ",\"ready\":%s,\"draining\":%s,\"amqp_connected\":%s,\"connections\":%llu,"
                 "\"users_online\":%zu,",
                 ready(b) ? "true" : "false", b->phase != WR_PHASE_RUNNING ? "true" : "false",
                 atomic_load(&b->consuming) ? "true" : "false", (unsigned long long)ws->connections,
                 b->index.users_online);
  wr_sbuf_printf(
      sb,
      "\"handshakes\":{\"accepted\":%llu,\"bad_request\":%llu,\"unauthorized\":%llu,"
      "\"forbidden_origin\":%llu,\"over_limit\":%llu,\"timeout\":%llu},",
      (unsigned long long)ws->handshakes_accepted, (unsigned long long)ws->handshakes_bad_request,
      (unsigned long long)ws->handshakes_unauthorized, (unsigned long long)ws->handshakes_forbidden,
      (unsigned long long)ws->handshakes_over_limit, (unsigned long long)ws->handshakes_timeout);
  /* Totals are monotonic counters: a rate is the difference of two polls. */
  wr_sbuf_printf(sb,
                 "\"consumed\":%llu,\"consumed_by_format\":{\"json\":%llu,\"msgpack\":%llu},"
                 "\"delivered\":%llu,\"targets_delivered\":%llu,\"targets_offline\":%llu,"
                 "\"client_acks\":%llu,\"ack_timeouts\":%llu,\"amqp_acked\":%llu,"
                 "\"retried\":%llu,\"retried_by_step\":[",
                 (unsigned long long)(st->consumed[0] + st->consumed[1]),
                 (unsigned long long)st->consumed[0], (unsigned long long)st->consumed[1],
                 (unsigned long long)st->delivered, (unsigned long long)st->targets_delivered,
                 (unsigned long long)st->targets_offline, (unsigned long long)st->client_acks,
                 (unsigned long long)st->ack_timeouts, (unsigned long long)rd(&as->acked),
                 (unsigned long long)retried);
  for (i = 0; i < b->cfg->n_retry_delays; i++)
    wr_sbuf_printf(sb, "%s{\"step\":%zu,\"delay_ms\":%u,\"count\":%llu}", i ? "," : "", i + 1,
                   b->cfg->retry_delays_ms[i], (unsigned long long)st->retried[i]);
  wr_sbuf_printf(sb,
                 "],\"parked\":%llu,\"parked_by_reason\":{\"max_attempts\":%llu,\"expired\":%llu},"
                 "\"dead_lettered\":%llu,\"dead_lettered_by_reason\":{",
                 (unsigned long long)(st->parked_max_attempts + st->parked_expired),
                 (unsigned long long)st->parked_max_attempts,
                 (unsigned long long)st->parked_expired, (unsigned long long)dead);
  for (i = WR_ENV_TOO_LARGE; i <= WR_ENV_BAD_FIELD; i++)
    wr_sbuf_printf(sb, "%s\"%s\":%llu", i != WR_ENV_TOO_LARGE ? "," : "",
                   wr_env_result_str((wr_env_result_t)i),
                   (unsigned long long)st->dead_by_reason[i]);
  wr_sbuf_printf(sb,
                 "},\"in_flight\":%zu,\"amqp_unacked\":%llu,\"reconnects\":%llu,"
                 "\"rings\":{\"delivery\":%zu,\"command\":%zu,\"overflow\":%zu},",
                 b->n_pendings, (unsigned long long)rd(&as->unacked),
                 (unsigned long long)rd(&as->reconnects), wr_ring_size(&b->deliveries),
                 wr_ring_size(&b->commands), b->ov_len);

  /* The buckets let a client compute percentiles over any window from two
   * polls; p50/p99 here cover the whole life of the process. */
  wr_sbuf_printf(sb, "\"latency\":");
  wr_hist_render_json(&st->latency, sb);
  wr_sbuf_printf(sb, ",");

  wr_sbuf_printf(sb, "\"process\":{\"rss_bytes\":%lld,\"cpu_seconds\":", (long long)ps.rss_bytes);
  json_num_or_null(sb, ps.cpu_seconds, "%.2f");
  wr_sbuf_printf(sb, ",\"open_fds\":%lld},\"queues\":[", (long long)ps.open_fds);
  pthread_mutex_lock(&b->qstats_lock);
  for (i = 0; i < b->n_qstats; i++) {
    wr_sbuf_printf(sb, "%s{\"name\":\"", i ? "," : "");
    wr_sbuf_escaped(sb, b->qstats[i].name, true);
    wr_sbuf_printf(sb, "\",\"role\":\"%s\",\"messages\":", queue_role(b, b->qstats[i].name));
    if (b->qstats[i].messages < 0)
      wr_sbuf_printf(sb, "null");
    else
      wr_sbuf_printf(sb, "%lld", (long long)b->qstats[i].messages);
    wr_sbuf_printf(sb, ",\"consumers\":");
    if (b->qstats[i].consumers < 0)
      wr_sbuf_printf(sb, "null}");
    else
      wr_sbuf_printf(sb, "%lld}", (long long)b->qstats[i].consumers);
  }
  pthread_mutex_unlock(&b->qstats_lock);
  wr_sbuf_printf(sb, "]}\n");
}

_Static_assert(WR_LATENCY_NBOUNDS <= WR_HIST_MAX_BOUNDS && WR_LOOP_NBOUNDS <= WR_HIST_MAX_BOUNDS,
               "a histogram's bounds must fit in wr_hist_t");

void wr_bridge_stats_init(wr_bridge_stats_t *st) {
  memset(st, 0, sizeof(*st));
  wr_hist_init(&st->latency, wr_latency_bounds, WR_LATENCY_NBOUNDS);
  wr_hist_init(&st->fanout, wr_loop_bounds, WR_LOOP_NBOUNDS);
  wr_hist_init(&st->loop_busy, wr_loop_bounds, WR_LOOP_NBOUNDS);
  wr_hist_init(&st->loop_cpu, wr_loop_bounds, WR_LOOP_NBOUNDS);
}

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
    resp->extra_headers = "Cache-Control: no-store\r\n";
    return 0;
  }
  if (strcmp(path, "/dashboard") == 0 || strcmp(path, "/") == 0) {
    respond_static(resp, "text/html; charset=utf-8", wr_web_dashboard_html,
                   wr_web_dashboard_html_len);
    return 0;
  }
  if (strcmp(path, "/metrics") == 0) {
    metrics(b, &sb);
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (strcmp(path, "/api/stats") == 0) {
    stats_json(b, &sb);
    resp->content_type = "application/json";
    resp->extra_headers = "Cache-Control: no-store\r\n";
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
