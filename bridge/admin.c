/* Admin endpoints (DESIGN.md §7) on admin.listen, and the demo page on the
 * public port when server.demo is on. */
#include "bridge/bridge_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const unsigned char wr_web_demo_html[];
extern const size_t wr_web_demo_html_len;
extern const unsigned char wr_web_warren_js[];
extern const size_t wr_web_warren_js_len;

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

/* A growable string for response bodies. */
typedef struct sb_s {
  char *s;
  size_t len, cap;
  bool oom;
} sb_t;

static void sb_printf(sb_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *sb, const char *fmt, ...) {
  va_list ap;
  int n;
  if (sb->oom)
    return;
  for (;;) {
    size_t room = sb->cap - sb->len;
    va_start(ap, fmt);
    n = vsnprintf(sb->s ? sb->s + sb->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      sb->oom = true;
      return;
    }
    if ((size_t)n < room) {
      sb->len += (size_t)n;
      return;
    }
    size_t ncap = (sb->cap ? sb->cap * 2 : 4096) + (size_t)n;
    char *ns = realloc(sb->s, ncap);
    if (ns == NULL) {
      sb->oom = true;
      return;
    }
    sb->s = ns;
    sb->cap = ncap;
  }
}

static uint64_t rd(const uint64_t *p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static bool ready(const wr_bridge_t *b) {
  return b->listening && b->phase == WR_PHASE_RUNNING && atomic_load(&b->consuming);
}

static void metrics(wr_bridge_t *b, sb_t *sb) {
  const wr_ws_stats_t *ws = wr_ws_server_stats(b->ws);
  const wr_amqp_stats_t *as = wr_amqp_stats(b->amqp);
  const wr_bridge_stats_t *st = &b->stats;
  uint64_t cum = 0;
  size_t i;

#define M(name, type, help) sb_printf(sb, "# HELP " name " " help "\n# TYPE " name " " type "\n")
  M("warren_connections", "gauge", "Open WebSocket connections.");
  sb_printf(sb, "warren_connections %llu\n", (unsigned long long)ws->connections);
  M("warren_users_online", "gauge", "Users with at least one open connection.");
  sb_printf(sb, "warren_users_online %zu\n", b->index.users_online);
  M("warren_handshakes_total", "counter", "WebSocket handshakes by outcome.");
  sb_printf(sb,
            "warren_handshakes_total{outcome=\"accepted\"} %llu\n"
            "warren_handshakes_total{outcome=\"bad_request\"} %llu\n"
            "warren_handshakes_total{outcome=\"unauthorized\"} %llu\n"
            "warren_handshakes_total{outcome=\"forbidden_origin\"} %llu\n"
            "warren_handshakes_total{outcome=\"over_limit\"} %llu\n"
            "warren_handshakes_total{outcome=\"timeout\"} %llu\n",
            (unsigned long long)ws->handshakes_accepted,
            (unsigned long long)ws->handshakes_bad_request,
            (unsigned long long)ws->handshakes_unauthorized,
            (unsigned long long)ws->handshakes_forbidden,
            (unsigned long long)ws->handshakes_over_limit,
            (unsigned long long)ws->handshakes_timeout);
  M("warren_notifications_consumed_total", "counter", "Envelopes decoded, by body format.");
  sb_printf(sb,
            "warren_notifications_consumed_total{format=\"json\"} %llu\n"
            "warren_notifications_consumed_total{format=\"msgpack\"} %llu\n",
            (unsigned long long)st->consumed[0], (unsigned long long)st->consumed[1]);
  M("warren_notifications_delivered_total", "counter", "Notification frames queued to clients.");
  sb_printf(sb, "warren_notifications_delivered_total %llu\n", (unsigned long long)st->delivered);
  M("warren_client_acks_total", "counter", "Client acks that settled a waiting notification.");
  sb_printf(sb, "warren_client_acks_total %llu\n", (unsigned long long)st->client_acks);
  M("warren_ack_timeouts_total", "counter", "Notifications not acked within ack.timeout_ms.");
  sb_printf(sb, "warren_ack_timeouts_total %llu\n", (unsigned long long)st->ack_timeouts);
  M("warren_amqp_acked_total", "counter", "Messages acked to the broker.");
  sb_printf(sb, "warren_amqp_acked_total %llu\n", (unsigned long long)rd(&as->acked));
  M("warren_retried_total", "counter", "Ladder copies published, by step delay.");
  for (i = 0; i < b->cfg->n_retry_delays; i++)
    sb_printf(sb, "warren_retried_total{delay_ms=\"%u\"} %llu\n", b->cfg->retry_delays_ms[i],
              (unsigned long long)st->retried[i]);
  M("warren_parked_total", "counter", "Notifications parked, by reason.");
  sb_printf(sb,
            "warren_parked_total{reason=\"max_attempts\"} %llu\n"
            "warren_parked_total{reason=\"expired\"} %llu\n",
            (unsigned long long)st->parked_max_attempts, (unsigned long long)st->parked_expired);
  M("warren_dead_lettered_total", "counter", "Messages rejected to the dead queue, by reason.");
  for (i = 1; i < 8; i++)
    sb_printf(sb, "warren_dead_lettered_total{reason=\"%s\"} %llu\n",
              wr_env_result_str((wr_env_result_t)i), (unsigned long long)st->dead_by_reason[i]);
  M("warren_ring_depth", "gauge", "Items waiting in the inter-thread rings.");
  sb_printf(sb, "warren_ring_depth{ring=\"delivery\"} %zu\nwarren_ring_depth{ring=\"command\"} %zu\n",
            wr_ring_size(&b->deliveries), wr_ring_size(&b->commands));
  M("warren_amqp_connected", "gauge", "1 while connected to the broker and consuming.");
  sb_printf(sb, "warren_amqp_connected %d\n", atomic_load(&b->consuming) ? 1 : 0);
  M("warren_amqp_reconnects_total", "counter", "AMQP connections opened after the first.");
  sb_printf(sb, "warren_amqp_reconnects_total %llu\n", (unsigned long long)rd(&as->reconnects));
  M("warren_amqp_watchdog_kicks_total", "counter", "AMQP sockets shut down because the AMQP thread was stuck.");
  sb_printf(sb, "warren_amqp_watchdog_kicks_total %llu\n", (unsigned long long)rd(&as->watchdog_kicks));
  M("warren_amqp_unacked", "gauge", "Deliveries in flight, not yet settled with the broker.");
  sb_printf(sb, "warren_amqp_unacked %llu\n", (unsigned long long)rd(&as->unacked));
  M("warren_delivery_latency_seconds", "histogram", "From consume to client ack or write.");
  for (i = 0; i < 15; i++) {
    cum += st->latency_buckets[i];
    sb_printf(sb, "warren_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n",
              wr_latency_bounds[i] / 1000.0, (unsigned long long)cum);
  }
  cum += st->latency_buckets[15];
  sb_printf(sb,
            "warren_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n"
            "warren_delivery_latency_seconds_sum %g\nwarren_delivery_latency_seconds_count %llu\n",
            (unsigned long long)cum, st->latency_sum_ms / 1000.0,
            (unsigned long long)st->latency_count);
  pthread_mutex_lock(&b->qstats_lock);
  M("warren_queue_messages", "gauge", "Messages ready in each queue (passive declare).");
  for (i = 0; i < b->n_qstats; i++)
    if (b->qstats[i].messages >= 0)
      sb_printf(sb, "warren_queue_messages{queue=\"%s\"} %lld\n", b->qstats[i].name,
                (long long)b->qstats[i].messages);
  M("warren_queue_consumers", "gauge", "Consumers of each queue (passive declare).");
  for (i = 0; i < b->n_qstats; i++)
    if (b->qstats[i].consumers >= 0)
      sb_printf(sb, "warren_queue_consumers{queue=\"%s\"} %lld\n", b->qstats[i].name,
                (long long)b->qstats[i].consumers);
  pthread_mutex_unlock(&b->qstats_lock);
#undef M
}

static void stats_json(wr_bridge_t *b, sb_t *sb) {
  const wr_ws_stats_t *ws = wr_ws_server_stats(b->ws);
  const wr_amqp_stats_t *as = wr_amqp_stats(b->amqp);
  const wr_bridge_stats_t *st = &b->stats;
  size_t i;

  sb_printf(sb,
            "{\"ready\":%s,\"amqp_connected\":%s,\"connections\":%llu,\"users_online\":%zu,"
            "\"consumed\":%llu,\"delivered\":%llu,\"client_acks\":%llu,\"amqp_acked\":%llu,"
            "\"retried\":%llu,\"parked\":%llu,\"dead_lettered\":%llu,\"in_flight\":%zu,"
            "\"reconnects\":%llu,\"queues\":[",
            ready(b) ? "true" : "false", atomic_load(&b->consuming) ? "true" : "false",
            (unsigned long long)ws->connections, b->index.users_online,
            (unsigned long long)(st->consumed[0] + st->consumed[1]),
            (unsigned long long)st->delivered, (unsigned long long)st->client_acks,
            (unsigned long long)rd(&as->acked), (unsigned long long)rd(&as->published),
            (unsigned long long)(st->parked_max_attempts + st->parked_expired),
            (unsigned long long)st->rejected, b->n_pendings,
            (unsigned long long)rd(&as->reconnects));
  pthread_mutex_lock(&b->qstats_lock);
  for (i = 0; i < b->n_qstats; i++)
    sb_printf(sb, "%s{\"name\":\"%s\",\"messages\":%lld,\"consumers\":%lld}", i ? "," : "",
              b->qstats[i].name, (long long)b->qstats[i].messages,
              (long long)b->qstats[i].consumers);
  pthread_mutex_unlock(&b->qstats_lock);
  sb_printf(sb, "]}\n");
}

int wr_admin_http_cb(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                     wr_ws_http_response_t *resp, void *data) {
  wr_bridge_t *b = data;
  sb_t sb = {0};
  (void)srv;
  (void)method;
  (void)query;

  if (strcmp(path, "/healthz") == 0) {
    respond_static(resp, "text/plain; charset=utf-8", "ok\n", 3);
    return 0;
  }
  if (strcmp(path, "/readyz") == 0) {
    bool ok = ready(b);
    respond_static(resp, "text/plain; charset=utf-8", ok ? "ready\n" : "not ready\n",
                   ok ? 6 : 10);
    resp->status = ok ? 200 : 503;
    return 0;
  }
  if (strcmp(path, "/metrics") == 0) {
    metrics(b, &sb);
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (strcmp(path, "/api/stats") == 0) {
    stats_json(b, &sb);
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
