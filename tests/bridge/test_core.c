/* Named cases of the delivery core (bridge/core.c), each a bug it once had or
 * an edge the model-based test (test_core_model.c) reaches only by chance:
 * run on a fake clock with a recording sink, no I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/core_int.h"
#include "config/log.h"

#define WALL 1800000000000LL

typedef struct {
  size_t queued;
  uint64_t idle;
  int fail; /* 0, or a negative errno for the next send */
  bool sync_fail;
  void *owed[16]; /* write completions owed (write mode) */
  int n_owed;
  int frames;
} fconn_t;

typedef struct {
  wr_core_t core;
  wr_bridge_stats_t stats;
  wr_amqp_delivery_t *verdicts[64];
  int n_verdicts;
  uint64_t tag;
} fx_t;

static int send_cb(void *io, wr_ws_buf_t *frame, void *ctx, bool ack_expected, void *data) {
  fconn_t *c = io;
  fx_t *fx = data;
  (void)frame;
  (void)ack_expected;
  if (c->fail != 0) {
    int rc = c->fail;
    c->fail = 0;
    return rc;
  }
  c->frames++;
  if (c->sync_fail) {
    /* uv_write failing inside wr_ws_conn_send: the completion comes back
     * before the send returns. */
    c->sync_fail = false;
    if (ctx != NULL)
      wr_core_write_done(&fx->core, ctx, -ECANCELED);
    return 0;
  }
  if (ctx != NULL)
    c->owed[c->n_owed++] = ctx;
  return 0;
}

static void load_cb(void *io, size_t *queued, uint64_t *idle, void *data) {
  fconn_t *c = io;
  (void)data;
  *queued = c->queued;
  *idle = c->idle;
}

static void verdict_cb(wr_amqp_delivery_t *d, void *data) {
  fx_t *fx = data;
  assert_true(fx->n_verdicts < 64);
  fx->verdicts[fx->n_verdicts++] = d;
}

static fx_t *fx_open(wr_ack_mode_t mode, bool mailboxes) {
  fx_t *fx = calloc(1, sizeof(*fx));
  wr_core_config_t cfg = {.ack_mode = mode,
                          .mailbox_enabled = mailboxes,
                          .mailbox_max_redeliveries = 5,
                          .ack_timeout_ms = 10000,
                          .max_attempts = 50,
                          .retry_delays_ms = {1000, 5000},
                          .n_retry_delays = 2,
                          .max_queued_bytes = 1 << 20,
                          .max_body_bytes = 65536};
  wr_core_sink_t sink = {
      .data = fx, .send_cb = send_cb, .load_cb = load_cb, .verdict_cb = verdict_cb};
  assert_non_null(fx);
  wr_bridge_stats_init(&fx->stats);
  assert_int_equal(wr_core_init(&fx->core, &cfg, &sink, &fx->stats), 0);
  wr_core_clock(&fx->core, 1000, WALL);
  return fx;
}

static fx_t *fx_new(wr_ack_mode_t mode) {
  return fx_open(mode, false);
}

static void fx_free(fx_t *fx) {
  for (int i = 0; i < fx->n_verdicts; i++)
    wr_amqp_delivery_free(fx->verdicts[i]);
  wr_core_requeue_all(&fx->core);
  wr_core_close(&fx->core);
  free(fx);
}

static wr_amqp_delivery_t *delivery(fx_t *fx, const char *body) {
  wr_amqp_delivery_t *d = calloc(1, sizeof(*d));
  assert_non_null(d);
  d->tag = ++fx->tag;
  d->generation = 1;
  d->consumed_at_ms = WALL;
  d->body = (uint8_t *)strdup(body);
  d->body_len = strlen(body);
  return d;
}

static void publish(fx_t *fx, const char *body) {
  wr_core_delivery(&fx->core, delivery(fx, body));
}

/* The sequence that sent a notification to the wrong user: n1 for A and X
 * waits for A's ack while X's part is already offline; n2 for X is retired,
 * which released X's user record although n1's target still pointed to it;
 * twenty users connect and reuse that memory; A acks n1. The copy must name
 * X (under ASan, reading a freed record aborts). */
static void test_offline_copy_names_its_user_after_churn(void **state) {
  (void)state;
  fx_t *fx = fx_new(WR_ACK_CLIENT);
  fconn_t a = {0}, others[20];
  memset(others, 0, sizeof(others));
  wr_core_conn_t *ca = wr_core_conn_open(&fx->core, &a, "user-a", WR_WS_FORMAT_JSON);
  wr_core_conn_t *co[20];

  publish(fx, "{\"id\":\"n1\",\"user_ids\":[\"user-a\",\"user-x\"]}");
  assert_int_equal(a.frames, 1);
  assert_int_equal(fx->n_verdicts, 0);
  publish(fx, "{\"id\":\"n2\",\"user_id\":\"user-x\"}");
  assert_int_equal(fx->n_verdicts, 1); /* n2: X offline, one copy */
  for (int i = 0; i < 20; i++) {
    char name[16];
    snprintf(name, sizeof(name), "user-%c", 'b' + i);
    co[i] = wr_core_conn_open(&fx->core, &others[i], name, WR_WS_FORMAT_JSON);
  }
  wr_core_client_ack(&fx->core, ca, "n1");
  assert_int_equal(fx->n_verdicts, 2);
  wr_amqp_delivery_t *v = fx->verdicts[1];
  assert_int_equal(v->verdict, WR_VERDICT_PUBLISH);
  assert_int_equal(v->n_pubs, 1);
  assert_string_equal(v->pubs[0].user, "user-x");
  assert_string_equal(v->pubs[0].id, "n1");
  for (int i = 0; i < 20; i++) {
    assert_int_equal(others[i].frames, 0);
    wr_core_conn_close(&fx->core, co[i]);
  }
  wr_core_conn_close(&fx->core, ca);
  assert_int_equal(fx->core.index.nusers, 0);
  fx_free(fx);
}

/* Write mode: a write that fails inside the send reports its completion
 * before the send returns. The target must still settle (offline here), and
 * exactly once. */
static void test_write_mode_sync_failure_settles(void **state) {
  (void)state;
  fx_t *fx = fx_new(WR_ACK_WRITE);
  fconn_t a = {.sync_fail = true}, b = {0};
  wr_core_conn_t *ca = wr_core_conn_open(&fx->core, &a, "u", WR_WS_FORMAT_JSON);

  publish(fx, "{\"id\":\"w1\",\"user_id\":\"u\"}");
  assert_int_equal(a.frames, 1);
  assert_int_equal(fx->n_verdicts, 1);
  assert_int_equal(fx->verdicts[0]->verdict, WR_VERDICT_PUBLISH);
  assert_string_equal(fx->verdicts[0]->pubs[0].user, "u");

  /* Two connections, the first fails synchronously: the second's write
   * decides, and delivers. */
  wr_core_conn_t *cb = wr_core_conn_open(&fx->core, &b, "u", WR_WS_FORMAT_MSGPACK);
  a.sync_fail = true;
  publish(fx, "{\"id\":\"w2\",\"user_id\":\"u\"}");
  assert_int_equal(fx->n_verdicts, 1);
  assert_int_equal(b.n_owed, 1);
  wr_core_write_done(&fx->core, b.owed[0], 0);
  assert_int_equal(fx->n_verdicts, 2);
  assert_int_equal(fx->verdicts[1]->verdict, WR_VERDICT_ACK);
  wr_core_conn_close(&fx->core, ca);
  wr_core_conn_close(&fx->core, cb);
  fx_free(fx);
}

/* Pacing: over half the cap with a client heard from lately, nothing more
 * is queued; a silent one is sent to (and meets the cap in ws/). */
static void test_pacing_at_half_the_cap(void **state) {
  (void)state;
  fx_t *fx = fx_new(WR_ACK_CLIENT);
  fconn_t c = {.queued = (1 << 19) - 10, .idle = 100};
  wr_core_conn_t *cc = wr_core_conn_open(&fx->core, &c, "p", WR_WS_FORMAT_JSON);

  publish(fx, "{\"id\":\"p1\",\"user_id\":\"p\"}");
  assert_int_equal(c.frames, 0); /* paced: settled offline at once */
  assert_int_equal(fx->n_verdicts, 1);
  assert_int_equal(fx->stats.deferred, 1);
  c.idle = WR_CORE_BUSY_CLIENT_MS;
  publish(fx, "{\"id\":\"p2\",\"user_id\":\"p\"}");
  assert_int_equal(c.frames, 1);
  c.queued = 0;
  c.idle = 0;
  publish(fx, "{\"id\":\"p3\",\"user_id\":\"p\"}");
  assert_int_equal(c.frames, 2);
  wr_core_conn_close(&fx->core, cc);
  fx_free(fx);
}

/* A reload applies ack.timeout_ms to deliveries in flight and keeps the ack
 * mode. */
static void test_reload(void **state) {
  (void)state;
  fx_t *fx = fx_new(WR_ACK_CLIENT);
  fconn_t c = {0};
  wr_core_conn_t *cc = wr_core_conn_open(&fx->core, &c, "r", WR_WS_FORMAT_JSON);
  wr_core_config_t n = fx->core.cfg;

  publish(fx, "{\"id\":\"r1\",\"user_id\":\"r\"}");
  n.ack_timeout_ms = 500;
  n.ack_mode = WR_ACK_WRITE;
  wr_core_reload(&fx->core, &n);
  assert_int_equal(fx->core.cfg.ack_mode, WR_ACK_CLIENT);
  wr_core_tick(&fx->core, 1499, WALL + 499);
  assert_int_equal(fx->n_verdicts, 0);
  wr_core_tick(&fx->core, 1500, WALL + 500);
  assert_int_equal(fx->n_verdicts, 1);
  assert_int_equal(fx->stats.ack_timeouts, 1);
  wr_core_conn_close(&fx->core, cc);
  fx_free(fx);
}

/* Hostile headers and properties: an AMQP timestamp near 2^62 (its ms would
 * overflow: UBSan aborts), an attempt at UINT32_MAX (attempt + 1 would wrap
 * to 0 and restart the ladder), an x-warren-user the body does not name. */
static void test_hostile_headers(void **state) {
  (void)state;
  fx_t *fx = fx_new(WR_ACK_CLIENT);
  fconn_t c = {0};
  wr_core_conn_t *cc = wr_core_conn_open(&fx->core, &c, "h", WR_WS_FORMAT_JSON);
  wr_amqp_delivery_t *d = delivery(fx, "{\"id\":\"t1\",\"user_id\":\"h\",\"ttl_ms\":60000}");

  d->timestamp_s = (int64_t)1 << 62;
  wr_core_delivery(&fx->core, d);
  wr_core_client_ack(&fx->core, cc, "t1");
  assert_int_equal(fx->n_verdicts, 1);
  assert_int_equal(fx->verdicts[0]->verdict, WR_VERDICT_ACK);
  assert_int_equal(fx->stats.latency.count, 1);
  assert_true(fx->stats.latency.sum < 1000); /* counted from consume time */

  d = delivery(fx, "{\"id\":\"t2\",\"user_ids\":[\"h\",\"gone\"]}");
  d->attempt = UINT32_MAX;
  d->target_user = strdup("gone");
  wr_core_delivery(&fx->core, d);
  assert_int_equal(fx->n_verdicts, 2);
  assert_int_equal(fx->verdicts[1]->n_pubs, 1);
  assert_string_equal(fx->verdicts[1]->pubs[0].user, "gone");
  assert_int_equal(fx->verdicts[1]->pubs[0].kind, WR_PUB_PARK);
  assert_string_equal(fx->verdicts[1]->pubs[0].reason, "max_attempts");
  assert_int_equal(fx->verdicts[1]->pubs[0].attempt, UINT32_MAX);
  assert_int_equal(c.frames, 1); /* the copy was for "gone" only */

  d = delivery(fx, "{\"id\":\"t3\",\"user_id\":\"h\"}");
  d->target_user = strdup("mallory");
  wr_core_delivery(&fx->core, d);
  assert_int_equal(c.frames, 2); /* delivered to the body's target */
  assert_int_equal(fx->stats.copy_user_ignored, 1);
  wr_core_client_ack(&fx->core, cc, "t3");
  assert_int_equal(fx->n_verdicts, 3);
  assert_int_equal(fx->verdicts[2]->verdict, WR_VERDICT_ACK);
  wr_core_conn_close(&fx->core, cc);
  fx_free(fx);
}

/* A mailbox item for user, as the AMQP thread hands it over. */
static wr_amqp_delivery_t *mailbox_item(fx_t *fx, const char *id, const char *user, bool backlog) {
  char body[128];
  snprintf(body, sizeof(body), "{\"id\":\"%s\",\"user_id\":\"%s\"}", id, user);
  wr_amqp_delivery_t *d = delivery(fx, body);
  d->source = WR_SRC_MAILBOX;
  d->target_user = strdup(user);
  d->backlog = backlog;
  return d;
}

/* The replay latency (warren_mailbox_replay_seconds) times a returning
 * user's wait: from their first connection to the first backlog item on the
 * wire, once per online session. A mailbox that was empty (its first item
 * came later), the end of a pause and a second tab are not replays. */
static void test_replay_latency(void **state) {
  (void)state;
  fx_t *fx = fx_open(WR_ACK_CLIENT, true);
  fconn_t c = {0}, c2 = {0};

  /* An empty mailbox: its item an hour later is no replay. */
  wr_core_conn_t *cc = wr_core_conn_open(&fx->core, &c, "r", WR_WS_FORMAT_JSON);
  wr_core_clock(&fx->core, 1000 + 3600000, WALL);
  wr_core_delivery(&fx->core, mailbox_item(fx, "late", "r", false));
  assert_int_equal(c.frames, 1);
  assert_int_equal(fx->stats.mailbox_replay.count, 0);
  wr_core_client_ack(&fx->core, cc, "late");
  wr_core_conn_close(&fx->core, cc);

  /* Back with a backlog: timed from the connection (40 ms here), once,
   * even with a second tab open. */
  cc = wr_core_conn_open(&fx->core, &c, "r", WR_WS_FORMAT_JSON);
  wr_core_clock(&fx->core, 1000 + 3600000 + 40, WALL);
  wr_core_delivery(&fx->core, mailbox_item(fx, "b1", "r", true));
  wr_core_conn_t *cc2 = wr_core_conn_open(&fx->core, &c2, "r", WR_WS_FORMAT_JSON);
  wr_core_delivery(&fx->core, mailbox_item(fx, "b2", "r", true));
  assert_int_equal(fx->stats.mailbox_replay.count, 1);
  assert_true(fx->stats.mailbox_replay.sum == 40);

  /* b1 and b2 never acked: the mailbox pauses; its end brings the backlog
   * again (flagged by the AMQP thread), but the user waits no longer. */
  wr_core_tick(&fx->core, 1000 + 3600000 + 40 + 20000, WALL);
  assert_int_equal(fx->stats.mailbox_pauses, 1);
  wr_core_tick(&fx->core, 1000 + 3600000 + 40 + 40000, WALL);
  wr_core_delivery(&fx->core, mailbox_item(fx, "b3", "r", true));
  assert_int_equal(fx->stats.mailbox_replay.count, 1);
  wr_core_conn_close(&fx->core, cc2);
  wr_core_conn_close(&fx->core, cc);
  fx_free(fx);
}

/* A lost AMQP connection: what it delivered goes back as requeues, and a
 * delivery of that generation still in the ring is discarded on arrival. */
static void test_generation_lost(void **state) {
  (void)state;
  fx_t *fx = fx_new(WR_ACK_CLIENT);
  fconn_t c = {0};
  wr_core_conn_t *cc = wr_core_conn_open(&fx->core, &c, "g", WR_WS_FORMAT_JSON);

  publish(fx, "{\"id\":\"g1\",\"user_id\":\"g\"}");
  wr_core_generation_lost(&fx->core, 1);
  assert_int_equal(fx->n_verdicts, 1);
  assert_int_equal(fx->verdicts[0]->verdict, WR_VERDICT_REQUEUE);
  publish(fx, "{\"id\":\"g2\",\"user_id\":\"g\"}");
  assert_int_equal(fx->n_verdicts, 2);
  assert_int_equal(fx->verdicts[1]->verdict, WR_VERDICT_REQUEUE);
  assert_int_equal(c.frames, 1);
  assert_int_equal(fx->stats.discarded_stale, 2);
  wr_core_client_ack(&fx->core, cc, "g1"); /* too late: nothing to settle */
  assert_int_equal(fx->stats.client_acks_unknown, 1);
  wr_core_conn_close(&fx->core, cc);
  fx_free(fx);
}

int main(void) {
  wr_log_setup(WR_LOG_ERROR, WR_LOG_TEXT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_offline_copy_names_its_user_after_churn),
      cmocka_unit_test(test_write_mode_sync_failure_settles),
      cmocka_unit_test(test_pacing_at_half_the_cap),
      cmocka_unit_test(test_reload),
      cmocka_unit_test(test_hostile_headers),
      cmocka_unit_test(test_generation_lost),
      cmocka_unit_test(test_replay_latency),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
