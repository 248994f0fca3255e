/* The AMQP thread against a real broker: WARREN_TEST_AMQP_URL (skipped when
 * unset). The reconnect test also needs WARREN_TEST_BROKER_DIR and
 * WARREN_TEST_BROKER_PORT to run scripts/broker.sh ctl close_all_connections.
 * Each test uses its own queue and exchange names and deletes them. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "amqp/amqp_int.h"
#include "config/log.h"
#include "table_entries.h"

#define MAXQ 64

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  wr_amqp_delivery_t *in[MAXQ]; /* delivered, waiting for the test */
  size_t n_in;
  wr_amqp_delivery_t *out[MAXQ]; /* verdicts, waiting for the AMQP thread */
  size_t n_out;
  bool consuming;
  uint64_t generation;
  int stats_calls;
  int64_t last_q_depth;
} sink_t;

typedef struct {
  wr_config_t cfg;
  sink_t sink;
  wr_amqp_callbacks_t cbs;
  wr_amqp_t *a;
  char queue[128];
} fixture_t;

static int deliver_cb(wr_amqp_delivery_t *d, void *data) {
  sink_t *s = data;
  pthread_mutex_lock(&s->mu);
  if (s->n_in == MAXQ) {
    pthread_mutex_unlock(&s->mu);
    return -ENOSPC;
  }
  s->in[s->n_in++] = d;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static wr_amqp_cmd_t *next_command_cb(void *data) {
  sink_t *s = data;
  wr_amqp_delivery_t *d = NULL;
  pthread_mutex_lock(&s->mu);
  if (s->n_out > 0) {
    d = s->out[0];
    memmove(s->out, s->out + 1, --s->n_out * sizeof(s->out[0]));
  }
  pthread_mutex_unlock(&s->mu);
  return d != NULL ? &d->cmd : NULL;
}

static void state_cb(bool consuming, bool lost, uint64_t generation, void *data) {
  (void)lost;
  sink_t *s = data;
  pthread_mutex_lock(&s->mu);
  s->consuming = consuming;
  s->generation = generation;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void queue_stats_cb(const wr_amqp_queue_stat_t *st, size_t n, void *data) {
  sink_t *s = data;
  pthread_mutex_lock(&s->mu);
  s->stats_calls++;
  if (n > 0)
    s->last_q_depth = st[0].messages;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void deadline_in(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static wr_amqp_delivery_t *wait_delivery(fixture_t *f, int ms) {
  struct timespec ts;
  wr_amqp_delivery_t *d = NULL;
  deadline_in(&ts, ms);
  pthread_mutex_lock(&f->sink.mu);
  while (f->sink.n_in == 0) {
    if (pthread_cond_timedwait(&f->sink.cv, &f->sink.mu, &ts) == ETIMEDOUT)
      break;
  }
  if (f->sink.n_in > 0) {
    d = f->sink.in[0];
    memmove(f->sink.in, f->sink.in + 1, --f->sink.n_in * sizeof(f->sink.in[0]));
  }
  pthread_mutex_unlock(&f->sink.mu);
  return d;
}

static bool wait_consuming(fixture_t *f, uint64_t generation, int ms) {
  struct timespec ts;
  bool ok;
  deadline_in(&ts, ms);
  pthread_mutex_lock(&f->sink.mu);
  while (!(f->sink.consuming && f->sink.generation >= generation)) {
    if (pthread_cond_timedwait(&f->sink.cv, &f->sink.mu, &ts) == ETIMEDOUT)
      break;
  }
  ok = f->sink.consuming && f->sink.generation >= generation;
  pthread_mutex_unlock(&f->sink.mu);
  return ok;
}

static void give_verdict(fixture_t *f, wr_amqp_delivery_t *d, wr_verdict_kind_t v) {
  d->verdict = v;
  pthread_mutex_lock(&f->sink.mu);
  assert_true(f->sink.n_out < MAXQ);
  f->sink.out[f->sink.n_out++] = d;
  pthread_mutex_unlock(&f->sink.mu);
  wr_amqp_wake(f->a);
}

static uint64_t stat(fixture_t *f, size_t off) {
  const wr_amqp_stats_t *s = wr_amqp_stats(f->a);
  return __atomic_load_n((const uint64_t *)((const char *)s + off), __ATOMIC_RELAXED);
}
#define STAT(f, field) stat((f), offsetof(wr_amqp_stats_t, field))

static bool wait_stat(fixture_t *f, size_t off, uint64_t want, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    if (stat(f, off) >= want)
      return true;
    usleep(10000);
  }
  return stat(f, off) >= want;
}
#define WAIT_STAT(f, field, want, ms) wait_stat((f), offsetof(wr_amqp_stats_t, field), (want), (ms))

/* Depth of a queue through a connection of its own (passive declare). */
static int64_t queue_depth(fixture_t *f, const char *suffix) {
  char name[256], err[256];
  amqp_connection_state_t c;
  int64_t n = -1;
  snprintf(name, sizeof(name), "%s%s", f->queue, suffix);
  if (wr_amqp_conn_open(&f->cfg, &c, err, sizeof(err)) < 0)
    return -1;
  if (wr_amqp_channel_open(c, 1, err, sizeof(err)) == 0) {
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    if (ok != NULL)
      n = ok->message_count;
  }
  wr_amqp_conn_close(c, true);
  return n;
}

static int64_t wait_depth(fixture_t *f, const char *suffix, int64_t want, int ms) {
  int64_t n = -1;
  for (int i = 0; i < ms / 100; i++) {
    n = queue_depth(f, suffix);
    if (n == want)
      return n;
    usleep(100000);
  }
  return n;
}

/* basic.get one message from Q<suffix>, acked; returns its headers' reason
 * and attempt through out-params. */
static bool get_one(fixture_t *f, const char *suffix, char *reason, size_t rlen, uint32_t *attempt,
                    char *user, size_t ulen) {
  char name[256], err[256];
  amqp_connection_state_t c;
  bool got = false;
  snprintf(name, sizeof(name), "%s%s", f->queue, suffix);
  if (wr_amqp_conn_open(&f->cfg, &c, err, sizeof(err)) < 0)
    return false;
  wr_amqp_channel_open(c, 1, err, sizeof(err));
  amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(name), 1);
  if (r.reply_type == AMQP_RESPONSE_NORMAL && r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
    amqp_message_t m;
    if (amqp_read_message(c, 1, &m, 0).reply_type == AMQP_RESPONSE_NORMAL) {
      const amqp_table_t *h = &m.properties.headers;
      const amqp_field_value_t *v = wr_amqp_table_get(h, "x-warren-reason");
      reason[0] = '\0';
      if (v != NULL && v->kind == AMQP_FIELD_KIND_UTF8)
        snprintf(reason, rlen, "%.*s", (int)v->value.bytes.len, (char *)v->value.bytes.bytes);
      char *u = NULL;
      int64_t exp;
      wr_amqp_headers_parse(h, attempt, &u, &exp);
      snprintf(user, ulen, "%s", u ? u : "");
      free(u);
      amqp_destroy_message(&m);
      got = true;
    }
  }
  wr_amqp_conn_close(c, true);
  return got;
}

static void delete_topology(fixture_t *f) {
  char err[256], name[256];
  amqp_connection_state_t c;
  static const char *queues[] = {"", ".retry.200", ".parked", ".dead", ".mailbox.new"};
  static const char *exchanges[] = {".retry", ".dlx", ".mailbox", ".mailbox.new"};
  if (wr_amqp_conn_open(&f->cfg, &c, err, sizeof(err)) < 0)
    return;
  wr_amqp_channel_open(c, 1, err, sizeof(err));
  for (size_t i = 0; i < sizeof(queues) / sizeof(queues[0]); i++) {
    snprintf(name, sizeof(name), "%s%s", f->queue, queues[i]);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(name), 0, 0);
  }
  for (size_t i = 0; i < sizeof(exchanges) / sizeof(exchanges[0]); i++) {
    snprintf(name, sizeof(name), "%s%s", f->queue, exchanges[i]);
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(name), 0);
  }
  amqp_exchange_delete(c, 1, amqp_cstring_bytes(f->cfg.exchange), 0);
  wr_amqp_conn_close(c, true);
}

static int setup(void **state) {
  static int seq;
  const char *url = getenv("WARREN_TEST_AMQP_URL");
  char err[256], name[160];
  /* A prestate asks for no depth poller, whose timer would otherwise wake
   * the thread (and service heartbeats) every 200 ms. */
  bool no_poll = *state != NULL;
  *state = NULL;
  if (url == NULL || *url == '\0')
    return 0;
  fixture_t *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(wr_config_init(&f->cfg), 0);
  snprintf(f->queue, sizeof(f->queue), "warren.test.%d.%d", (int)getpid(), ++seq);
  snprintf(name, sizeof(name), "%s.x", f->queue);
  assert_int_equal(wr_config_set(&f->cfg, "amqp", "url", url, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&f->cfg, "amqp", "queue", f->queue, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&f->cfg, "amqp", "exchange", name, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&f->cfg, "amqp", "retry_delays_ms", "200", err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&f->cfg, "amqp", "heartbeat_s", "2", err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&f->cfg, "amqp", "prefetch", "10", err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&f->cfg, "admin", "queue_poll_ms", "200", err, sizeof(err)), 0);
  pthread_mutex_init(&f->sink.mu, NULL);
  pthread_cond_init(&f->sink.cv, NULL);
  f->sink.last_q_depth = -2;
  f->cbs = (wr_amqp_callbacks_t){.data = &f->sink,
                                 .deliver_cb = deliver_cb,
                                 .next_command_cb = next_command_cb,
                                 .state_cb = state_cb,
                                 .queue_stats_cb = no_poll ? NULL : queue_stats_cb};
  assert_int_equal(wr_amqp_new(&f->a, &f->cfg, &f->cbs), 0);
  assert_int_equal(wr_amqp_start(f->a), 0);
  assert_true(wait_consuming(f, 1, 10000));
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f == NULL)
    return 0;
  wr_amqp_stop(f->a);
  for (size_t i = 0; i < f->sink.n_in; i++)
    wr_amqp_delivery_free(f->sink.in[i]);
  for (size_t i = 0; i < f->sink.n_out; i++)
    wr_amqp_delivery_free(f->sink.out[i]);
  wr_amqp_free(f->a);
  delete_topology(f);
  wr_config_close(&f->cfg);
  free(f);
  *state = NULL;
  return 0;
}

#define NEED_BROKER(f)                                                                             \
  do {                                                                                             \
    if ((f) == NULL) {                                                                             \
      print_message("skipped: WARREN_TEST_AMQP_URL is not set (scripts/broker.sh start prints "    \
                    "one)\n");                                                                     \
      skip();                                                                                      \
    }                                                                                              \
  } while (0)

static void publish(fixture_t *f, const char *body, const char *id) {
  char err[256];
  int rc = wr_amqp_publish_once(&f->cfg, "user.1001", (const uint8_t *)body, strlen(body),
                                "application/json", id, 5000, err, sizeof(err));
  if (rc != 0)
    print_error("publish: %s\n", err);
  assert_int_equal(rc, 0);
}

/* Publishes body with properties props through a connection of its own, to
 * exchange with routing key (rabbitmq-c as the publisher: its frames may be
 * as large as frame_max), and waits for the confirm. */
static void publish_props(fixture_t *f, const char *exchange, const char *key,
                          amqp_basic_properties_t *props, const void *body, size_t len) {
  char err[256];
  amqp_connection_state_t c;
  assert_int_equal(wr_amqp_conn_open(&f->cfg, &c, err, sizeof(err)), 0);
  assert_int_equal(wr_amqp_channel_open(c, 1, err, sizeof(err)), 0);
  amqp_confirm_select(c, 1);
  assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
  assert_int_equal(amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key),
                                      0, 0, props,
                                      (amqp_bytes_t){.len = len, .bytes = (void *)body}),
                   AMQP_STATUS_OK);
  amqp_frame_t fr;
  assert_int_equal(amqp_simple_wait_frame(c, &fr), AMQP_STATUS_OK);
  assert_int_equal(fr.frame_type, AMQP_FRAME_METHOD);
  assert_int_equal(fr.payload.method.id, AMQP_BASIC_ACK_METHOD);
  wr_amqp_conn_close(c, true);
}

static amqp_basic_properties_t json_props(amqp_table_t *headers) {
  amqp_basic_properties_t p;
  memset(&p, 0, sizeof(p));
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  if (headers != NULL) {
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = *headers;
  }
  return p;
}

/* The original's headers as the AMQP thread kept them for its copies. */
static const amqp_table_t *kept_headers(const wr_amqp_delivery_t *d) {
  const wr_amqp_dpriv_t *p = d->priv;
  return (p->props._flags & AMQP_BASIC_HEADERS_FLAG) ? &p->props.headers : NULL;
}

static void ack_empties_queue(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{\"user_id\":\"1001\",\"title\":\"hi\"}", "m-ack");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_int_equal(d->generation, 1);
  assert_false(d->redelivered);
  assert_string_equal(d->content_type, "application/json");
  assert_string_equal(d->message_id, "m-ack");
  assert_int_equal(d->body_len, strlen("{\"user_id\":\"1001\",\"title\":\"hi\"}"));
  assert_memory_equal(d->body, "{\"user_id\"", 10);
  assert_true(d->timestamp_s > 1700000000);
  assert_int_equal(d->attempt, 0);
  assert_null(d->target_user);
  assert_int_equal(STAT(f, unacked), 1);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
  assert_int_equal(STAT(f, consumed), 1);
  assert_int_equal(STAT(f, unacked), 0);
  assert_int_equal(STAT(f, connected), 1);
  /* the depth poller ran on channel 3 and saw Q */
  pthread_mutex_lock(&f->sink.mu);
  int calls = f->sink.stats_calls;
  pthread_mutex_unlock(&f->sink.mu);
  if (calls == 0) {
    usleep(500000);
    pthread_mutex_lock(&f->sink.mu);
    calls = f->sink.stats_calls;
    pthread_mutex_unlock(&f->sink.mu);
  }
  assert_true(calls > 0);
}

static void dead_goes_to_dead_queue(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "not json", "m-dead");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  give_verdict(f, d, WR_VERDICT_DEAD);
  assert_int_equal(wait_depth(f, ".dead", 1, 3000), 1);
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
  assert_int_equal(STAT(f, dead_lettered), 1);
}

static void requeue_redelivers(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{}", "m-requeue");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  give_verdict(f, d, WR_VERDICT_REQUEUE);
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->redelivered);
  assert_string_equal(d->message_id, "m-requeue");
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  assert_int_equal(STAT(f, requeued), 1);
}

static wr_amqp_pub_t *one_pub(wr_pub_kind_t kind, uint32_t attempt, const char *user,
                              const char *id, const char *reason) {
  wr_amqp_pub_t *p = calloc(1, sizeof(*p));
  assert_non_null(p);
  p->kind = kind;
  p->delay_ms = 200;
  p->attempt = attempt;
  p->user = user ? strdup(user) : NULL;
  p->id = strdup(id);
  p->reason = reason;
  return p;
}

static void retry_comes_back_with_attempt(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{\"user_ids\":[\"1001\",\"1002\"]}", "m-retry");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  d->pubs = one_pub(WR_PUB_RETRY, 1, "1002", "m-retry:1002", NULL);
  d->n_pubs = 1;
  d->pubs[0].expires_at_ms = 1795400000000;
  int64_t t0 = wr_amqp_wall_ms();
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  /* the original is acked once the copy is confirmed */
  assert_true(WAIT_STAT(f, published, 1, 3000));
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(wr_amqp_wall_ms() - t0 >= 150); /* it sat in Q.retry.200 */
  assert_int_equal(d->attempt, 1);
  assert_non_null(d->target_user);
  assert_string_equal(d->target_user, "1002");
  assert_string_equal(d->message_id, "m-retry:1002");
  assert_string_equal(d->content_type, "application/json");
  assert_true(d->expires_at_ms == 1795400000000);
  assert_memory_equal(d->body, "{\"user_ids\"", 11);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 2, 3000));
  assert_int_equal(STAT(f, publish_failures), 0);
}

static void park_lands_in_parked(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{\"user_id\":\"7\"}", "m-park");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  d->pubs = one_pub(WR_PUB_PARK, 50, "7", "m-park", "max_attempts");
  d->n_pubs = 1;
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  assert_int_equal(wait_depth(f, ".parked", 1, 3000), 1);
  char reason[64], user[64];
  uint32_t attempt = 0;
  assert_true(get_one(f, ".parked", reason, sizeof(reason), &attempt, user, sizeof(user)));
  assert_string_equal(reason, "max_attempts");
  assert_int_equal(attempt, 50);
  assert_string_equal(user, "7");
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
}

static void unroutable_copy_requeues_original(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{}", "m-unroutable");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  /* no ladder queue for 999 ms: the copy is returned, the original requeued */
  d->pubs = one_pub(WR_PUB_RETRY, 1, "1", "m-unroutable", NULL);
  d->pubs[0].delay_ms = 999;
  d->n_pubs = 1;
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  assert_true(WAIT_STAT(f, publish_failures, 1, 3000));
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->redelivered);
  assert_int_equal(d->attempt, 0);
  assert_int_equal(STAT(f, acked), 0);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
}

static wr_amqp_pub_t *retry_pub(const char *user, const char *id) {
  return one_pub(WR_PUB_RETRY, 1, user, id, NULL);
}

static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

static void long_id_copy_goes_without_message_id(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  char *id = repeat('i', 256);
  publish(f, "{\"user_id\":\"1001\"}", "m-long-id");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  /* A 256-byte id is fine for the envelope, too long for message_id. */
  d->pubs = retry_pub("1001", id);
  d->n_pubs = 1;
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->trusted);
  assert_null(d->message_id);
  assert_int_equal(d->attempt, 1);
  assert_string_equal(d->target_user, "1001");
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 2, 3000));
  assert_int_equal(STAT(f, copies_without_message_id), 1);
  assert_int_equal(STAT(f, publish_failures), 0);
  assert_int_equal(STAT(f, reconnects), 0);
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
  free(id);
}

static void empty_header_key_goes_through(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  amqp_table_entry_t e[2] = {ent_s("", "empty key"), ent_s("trace", "t1")};
  amqp_table_t h = {.num_entries = 2, .entries = e};
  amqp_basic_properties_t props = json_props(&h);
  const char *body = "{\"user_id\":\"1001\"}";
  publish_props(f, f->cfg.exchange, "user.1001", &props, body, strlen(body));
  /* rabbitmq-c's amqp_table_clone refused it: nacked with requeue, forever */
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_false(d->redelivered);
  assert_int_equal(STAT(f, requeued), 0);
  const amqp_field_value_t *v = wr_amqp_table_get(kept_headers(d), "");
  assert_non_null(v);
  assert_memory_equal(v->value.bytes.bytes, "empty key", 9);
  d->pubs = retry_pub("1001", "m-empty-key");
  d->n_pubs = 1;
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->trusted);
  assert_int_equal(d->attempt, 1);
  /* the copy carried it through the ladder */
  v = wr_amqp_table_get(kept_headers(d), "");
  assert_non_null(v);
  assert_memory_equal(v->value.bytes.bytes, "empty key", 9);
  assert_non_null(wr_amqp_table_get(kept_headers(d), "trace"));
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 2, 3000));
  assert_int_equal(STAT(f, copies_without_headers), 0);
  assert_int_equal(STAT(f, reconnects), 0);
}

/* Properties whose headers fill the content header up to slack bytes short
 * of frame_max; *value is malloc'd. */
static amqp_basic_properties_t big_props(amqp_table_entry_t *e, amqp_table_t *h, char **value,
                                         size_t slack) {
  static uint8_t buf[WR_AMQP_FRAME_MAX];
  *e = ent_s("big", "");
  *h = (amqp_table_t){.num_entries = 1, .entries = e};
  amqp_basic_properties_t p = json_props(h);
  int base = amqp_encode_properties(AMQP_BASIC_CLASS, &p,
                                    (amqp_bytes_t){.len = sizeof(buf), .bytes = buf});
  assert_true(base > 0);
  *value = repeat('h', WR_AMQP_FRAME_MAX - WR_AMQP_CONTENT_OVERHEAD - slack - (size_t)base);
  *e = ent_s("big", *value);
  return p;
}

static void headers_filling_the_frame_are_left_out_of_copies(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  /* 16 bytes short: the original fits, the copy with warren's headers not;
   * 200 bytes short: the copy fits, but not once the ladder queue's
   * dead-lettering adds x-death, and the broker would deliver that header
   * to warren anyway (rabbitmq-c then drops the connection). */
  static const size_t slacks[] = {16, 200};
  for (size_t i = 0; i < 2; i++) {
    amqp_table_entry_t e;
    amqp_table_t h;
    char *value;
    amqp_basic_properties_t props = big_props(&e, &h, &value, slacks[i]);
    const char *body = "{\"user_id\":\"1001\"}";
    publish_props(f, f->cfg.exchange, "user.1001", &props, body, strlen(body));
    wr_amqp_delivery_t *d = wait_delivery(f, 5000);
    assert_non_null(d);
    assert_non_null(wr_amqp_table_get(kept_headers(d), "big"));
    d->pubs = retry_pub("1001", "m-big-headers");
    d->n_pubs = 1;
    give_verdict(f, d, WR_VERDICT_PUBLISH);
    d = wait_delivery(f, 5000);
    assert_non_null(d);
    assert_true(d->trusted);
    assert_string_equal(d->target_user, "1001");
    assert_string_equal(d->message_id, "m-big-headers");
    assert_null(wr_amqp_table_get(kept_headers(d), "big"));
    give_verdict(f, d, WR_VERDICT_ACK);
    assert_true(WAIT_STAT(f, acked, 2 * (i + 1), 3000));
    assert_int_equal(STAT(f, copies_without_headers), i + 1);
    assert_int_equal(STAT(f, reconnects), 0);
    free(value);
  }
}

static void refused_copy_dead_letters_the_original(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{\"user_ids\":[\"1001\",\"1002\"]}", "m-refused");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  /* Two offline targets: one copy is fine, the other cannot be built (its
   * x-warren-user alone is larger than a frame). */
  char *huge = repeat('u', WR_AMQP_FRAME_MAX);
  d->pubs = calloc(2, sizeof(*d->pubs));
  assert_non_null(d->pubs);
  d->n_pubs = 2;
  d->pubs[0] = (wr_amqp_pub_t){.kind = WR_PUB_RETRY,
                               .delay_ms = 200,
                               .attempt = 1,
                               .user = strdup("1001"),
                               .id = strdup("m-refused")};
  d->pubs[1] = (wr_amqp_pub_t){
      .kind = WR_PUB_RETRY, .delay_ms = 200, .attempt = 1, .user = huge, .id = strdup("m-refused")};
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  assert_int_equal(wait_depth(f, ".dead", 1, 5000), 1);
  assert_int_equal(STAT(f, copies_refused), 1);
  assert_int_equal(STAT(f, dead_lettered), 1);
  assert_int_equal(STAT(f, published), 1);
  /* the good copy still went through the ladder */
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_string_equal(d->target_user, "1001");
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  assert_int_equal(STAT(f, reconnects), 0);
  assert_int_equal(STAT(f, connected), 1);
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
}

static void body_over_max_is_not_buffered(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  /* amqp.max_body_bytes is 65536 by default */
  size_t big = 300 * 1024;
  char *body = repeat('b', big);
  amqp_basic_properties_t props = json_props(NULL);
  publish_props(f, f->cfg.exchange, "user.1001", &props, body, big);
  publish(f, "{\"user_id\":\"1001\"}", "m-after-big");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_null(d->body);
  assert_int_equal(d->body_len, big);
  assert_int_equal(STAT(f, bodies_skipped), 1);
  give_verdict(f, d, WR_VERDICT_DEAD);
  /* the frames after it were read in step: the next message is intact */
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_string_equal(d->message_id, "m-after-big");
  assert_non_null(d->body);
  assert_memory_equal(d->body, "{\"user_id\":\"1001\"}", d->body_len);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  assert_int_equal(wait_depth(f, ".dead", 1, 3000), 1);
  assert_int_equal(STAT(f, reconnects), 0);
  /* A body exactly at the limit is still buffered. */
  size_t at = f->cfg.max_body_bytes;
  publish_props(f, f->cfg.exchange, "user.1001", &props, body, at);
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_non_null(d->body);
  assert_int_equal(d->body_len, at);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 2, 3000));
  free(body);
}

static void original_warren_headers_are_not_trusted(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  amqp_table_entry_t e[3] = {ent_s("x-warren-user", "someone-else"),
                             ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, 4294967295),
                             ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, 1)};
  amqp_table_t h = {.num_entries = 3, .entries = e};
  amqp_basic_properties_t props = json_props(&h);
  const char *body = "{\"user_id\":\"1001\"}";
  /* through amqp.exchange, and straight to Q through the default exchange */
  publish_props(f, f->cfg.exchange, "user.1001", &props, body, strlen(body));
  publish_props(f, "", f->queue, &props, body, strlen(body));
  wr_amqp_delivery_t *d[2];
  for (int i = 0; i < 2; i++) {
    d[i] = wait_delivery(f, 5000);
    assert_non_null(d[i]);
    assert_false(d[i]->trusted);
    assert_int_equal(d[i]->attempt, 0);
    assert_null(d[i]->target_user);
    assert_true(d[i]->expires_at_ms == 0);
  }
  assert_int_equal(STAT(f, untrusted_headers), 2);
  give_verdict(f, d[1], WR_VERDICT_ACK);
  /* warren's own copy of it, back from the ladder, is trusted */
  d[0]->pubs = retry_pub("1001", "m-trust");
  d[0]->pubs[0].attempt = UINT32_MAX;
  d[0]->n_pubs = 1;
  give_verdict(f, d[0], WR_VERDICT_PUBLISH);
  wr_amqp_delivery_t *c = wait_delivery(f, 5000);
  assert_non_null(c);
  assert_true(c->trusted);
  assert_string_equal(c->target_user, "1001");
  /* saturated one short of the wrap */
  assert_int_equal(c->attempt, WR_AMQP_ATTEMPT_MAX);
  give_verdict(f, c, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 3, 3000));
  assert_int_equal(STAT(f, untrusted_headers), 2);
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
}

static void publish_once_checks_short_strings(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  char err[256];
  char *id = repeat('i', 256);
  const char *body = "{\"user_id\":\"1001\"}";
  /* `warren publish --id` with an id the envelope allows: published, the id
   * left out of message_id */
  assert_int_equal(wr_amqp_publish_once(&f->cfg, "user.1001", (const uint8_t *)body, strlen(body),
                                        "application/json", id, 5000, err, sizeof(err)),
                   0);
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_null(d->message_id);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  /* a routing key the broker could not take: refused before connecting */
  assert_int_equal(wr_amqp_publish_once(&f->cfg, id, (const uint8_t *)body, strlen(body),
                                        "application/json", "m", 5000, err, sizeof(err)),
                   -ENAMETOOLONG);
  assert_non_null(strstr(err, "255"));
  free(id);
}

static void far_future_timestamp_reads_as_absent(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  amqp_basic_properties_t props = json_props(NULL);
  props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
  props.timestamp = (uint64_t)1 << 62;
  const char *body = "{\"user_id\":\"1001\"}";
  publish_props(f, f->cfg.exchange, "user.1001", &props, body, strlen(body));
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  /* the loop multiplies it by 1000: 2^62 s would overflow int64 ms */
  assert_true(d->timestamp_s == 0);
  d->pubs = retry_pub("1001", "m-far-future");
  d->n_pubs = 1;
  give_verdict(f, d, WR_VERDICT_PUBLISH);
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->timestamp_s == 0);
  /* the copy still carries the publisher's timestamp */
  const wr_amqp_dpriv_t *p = d->priv;
  assert_true(p->props._flags & AMQP_BASIC_TIMESTAMP_FLAG);
  assert_true(p->props.timestamp == (uint64_t)1 << 62);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 2, 3000));
  /* an ordinary one is kept */
  props.timestamp = 1795400000;
  publish_props(f, f->cfg.exchange, "user.1001", &props, body, strlen(body));
  d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->timestamp_s == 1795400000);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 3, 3000));
}

static void idle_connection_survives_heartbeats(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  /* heartbeat_s = 2 in the fixture: the broker drops a client that sends
   * nothing for ~2 intervals, and rabbitmq-c drops a silent broker. Idle for
   * three intervals, then the connection must still be the first one. */
  sleep(6);
  assert_int_equal(STAT(f, reconnects), 0);
  assert_int_equal(STAT(f, connected), 1);
  publish(f, "{}", "m-idle");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_int_equal(d->generation, 1);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
}

static void cancel_stops_consuming_but_runs_verdicts(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  publish(f, "{}", "m-cancel-1");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  wr_amqp_cancel(f->a);
  for (int i = 0; i < 300 && STAT(f, connected) != 0; i++)
    usleep(10000);
  assert_int_equal(STAT(f, connected), 0);
  /* verdicts still run after the cancel */
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  /* nothing new is consumed */
  publish(f, "{}", "m-cancel-2");
  assert_null(wait_delivery(f, 700));
  assert_int_equal(wait_depth(f, "", 1, 3000), 1);
}

static int run_ctl(const char *args) {
  const char *dir = getenv("WARREN_TEST_BROKER_DIR");
  const char *port = getenv("WARREN_TEST_BROKER_PORT");
  const char *data = getenv("WARREN_TEST_DATA");
  char cmd[1024];
  if (dir == NULL || port == NULL)
    return -1;
  snprintf(cmd, sizeof(cmd), "%s/../scripts/broker.sh ctl '%s' '%s' %s >/dev/null 2>&1",
           data ? data : "tests", dir, port, args);
  return system(cmd);
}

static void stale_verdict_dropped_after_reconnect(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  if (getenv("WARREN_TEST_BROKER_DIR") == NULL || getenv("WARREN_TEST_BROKER_PORT") == NULL) {
    print_message("skipped: WARREN_TEST_BROKER_DIR/PORT not set\n");
    skip();
  }
  publish(f, "{}", "m-stale");
  wr_amqp_delivery_t *old = wait_delivery(f, 5000);
  assert_non_null(old);
  assert_int_equal(old->generation, 1);
  assert_int_equal(run_ctl("close_all_connections test"), 0);
  assert_true(wait_consuming(f, 2, 15000));
  assert_true(STAT(f, reconnects) >= 1);
  /* the broker requeued it and redelivers it on the new channel */
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->generation >= 2);
  assert_true(d->redelivered);
  assert_string_equal(d->message_id, "m-stale");
  give_verdict(f, old, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, stale_verdicts, 1, 3000));
  assert_int_equal(STAT(f, acked), 0);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
  assert_int_equal(wait_depth(f, "", 0, 3000), 0);
}

static int broker_signal(const char *sig) {
  char cmd[1024];
  const char *data = getenv("WARREN_TEST_DATA");
  snprintf(cmd, sizeof(cmd), "kill -%s $(%s/../scripts/broker.sh pid '%s' '%s')", sig,
           data ? data : "tests", getenv("WARREN_TEST_BROKER_DIR"),
           getenv("WARREN_TEST_BROKER_PORT"));
  return system(cmd);
}

static void frozen_broker_detected_by_heartbeat(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  if (getenv("WARREN_TEST_BROKER_DIR") == NULL || getenv("WARREN_TEST_BROKER_PORT") == NULL) {
    print_message("skipped: WARREN_TEST_BROKER_DIR/PORT not set\n");
    skip();
  }
  assert_int_equal(broker_signal("STOP"), 0);
  /* heartbeat_s = 2: rabbitmq-c gives up on a silent broker after ~4 s */
  bool lost = false;
  for (int i = 0; i < 100 && !lost; i++) {
    usleep(100000);
    lost = STAT(f, connected) == 0;
  }
  /* resume the broker before any assertion can end the test */
  assert_int_equal(broker_signal("CONT"), 0);
  assert_true(lost);
  assert_true(wait_consuming(f, 2, 40000));
  publish(f, "{}", "m-after-freeze");
  wr_amqp_delivery_t *d = wait_delivery(f, 5000);
  assert_non_null(d);
  assert_true(d->generation >= 2);
  give_verdict(f, d, WR_VERDICT_ACK);
  assert_true(WAIT_STAT(f, acked, 1, 3000));
}

static void check_reports_problems(void **state) {
  fixture_t *f = *state;
  NEED_BROKER(f);
  char err[512];
  /* the topology exists already (classic): quorum must be refused clearly */
  wr_config_t cfg;
  assert_int_equal(wr_config_init(&cfg), 0);
  assert_int_equal(wr_config_set(&cfg, "amqp", "url", f->cfg.amqp_url, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&cfg, "amqp", "queue", f->queue, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&cfg, "amqp", "exchange", f->cfg.exchange, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&cfg, "amqp", "retry_delays_ms", "200", err, sizeof(err)), 0);
  assert_int_equal(wr_amqp_check(&cfg, err, sizeof(err)), 0);
  assert_int_equal(wr_config_set(&cfg, "amqp", "queue_type", "quorum", err, sizeof(err)), 0);
  int rc = wr_amqp_check(&cfg, err, sizeof(err));
  assert_int_equal(rc, -EEXIST);
  assert_non_null(strstr(err, f->queue));
  assert_non_null(strstr(err, "amqp.queue_type=classic"));
  /* a closed port */
  assert_int_equal(
      wr_config_set(&cfg, "amqp", "url", "amqp://guest:guest@127.0.0.1:1/", err, sizeof(err)), 0);
  rc = wr_amqp_check(&cfg, err, sizeof(err));
  assert_int_equal(rc, -ECONNREFUSED);
  assert_non_null(strstr(err, "cannot connect to 127.0.0.1:1"));
  /* bad credentials */
  char url[512];
  snprintf(url, sizeof(url), "%s", f->cfg.amqp_url);
  char *at = strchr(url, '@');
  assert_non_null(at);
  char bad[600];
  snprintf(bad, sizeof(bad), "amqp://nobody:wrong%s", at);
  assert_int_equal(wr_config_set(&cfg, "amqp", "url", bad, err, sizeof(err)), 0);
  rc = wr_amqp_check(&cfg, err, sizeof(err));
  assert_int_equal(rc, -EACCES);
  assert_null(strstr(err, "wrong")); /* never the password */
  wr_config_close(&cfg);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  static int no_poll = 1;
  wr_log_setup(WR_LOG_WARN, WR_LOG_TEXT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(ack_empties_queue, setup, teardown),
      cmocka_unit_test_setup_teardown(dead_goes_to_dead_queue, setup, teardown),
      cmocka_unit_test_setup_teardown(requeue_redelivers, setup, teardown),
      cmocka_unit_test_setup_teardown(retry_comes_back_with_attempt, setup, teardown),
      cmocka_unit_test_setup_teardown(park_lands_in_parked, setup, teardown),
      cmocka_unit_test_setup_teardown(unroutable_copy_requeues_original, setup, teardown),
      cmocka_unit_test_setup_teardown(check_reports_problems, setup, teardown),
      cmocka_unit_test_setup_teardown(long_id_copy_goes_without_message_id, setup, teardown),
      cmocka_unit_test_setup_teardown(empty_header_key_goes_through, setup, teardown),
      cmocka_unit_test_setup_teardown(headers_filling_the_frame_are_left_out_of_copies, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(refused_copy_dead_letters_the_original, setup, teardown),
      cmocka_unit_test_setup_teardown(body_over_max_is_not_buffered, setup, teardown),
      cmocka_unit_test_setup_teardown(original_warren_headers_are_not_trusted, setup, teardown),
      cmocka_unit_test_setup_teardown(far_future_timestamp_reads_as_absent, setup, teardown),
      cmocka_unit_test_setup_teardown(publish_once_checks_short_strings, setup, teardown),
      cmocka_unit_test_setup_teardown(cancel_stops_consuming_but_runs_verdicts, setup, teardown),
      cmocka_unit_test_prestate_setup_teardown(idle_connection_survives_heartbeats, setup, teardown,
                                               &no_poll),
      cmocka_unit_test_setup_teardown(stale_verdict_dropped_after_reconnect, setup, teardown),
      cmocka_unit_test_setup_teardown(frozen_broker_detected_by_heartbeat, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
