/* The pure parts of `warren replay` (amqp/replay.c): where a parked or dead
 * message goes, and what its copy carries, decoded back from the bytes
 * rabbitmq-c would send. No broker. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "amqp/replay_int.h"
#include "table_entries.h"

#define NOW 1800000000000LL /* ms */
#define TTL 604800000LL     /* mailbox.ttl_ms, the default */

static uint8_t scratch[WR_AMQP_FRAME_MAX];

static void load_cfg(wr_config_t *cfg, bool mailboxes) {
  char *env[] = {(char *)"WARREN_AUTH_JWT_SECRET=0123456789abcdef0123456789abcdef",
                 (char *)"WARREN_AMQP_QUEUE=q",
                 (char *)"WARREN_AMQP_EXCHANGE=x.in",
                 (char *)"WARREN_AMQP_RETRY_DELAYS_MS=700,5000",
                 mailboxes ? (char *)"WARREN_MAILBOX_ENABLED=true"
                           : (char *)"WARREN_MAILBOX_ENABLED=false",
                 NULL};
  char err[256];
  assert_int_equal(wr_config_load(cfg, NULL, env, err, sizeof(err)), 0);
  assert_int_equal(cfg->mailbox_ttl_ms, TTL);
}

static amqp_table_entry_t ent_death(amqp_table_entry_t *inner, int n) {
  static amqp_field_value_t arr[1];
  amqp_table_entry_t e;
  memset(&e, 0, sizeof(e));
  arr[0].kind = AMQP_FIELD_KIND_TABLE;
  arr[0].value.table.num_entries = n;
  arr[0].value.table.entries = inner;
  e.key = amqp_cstring_bytes("x-death");
  e.value.kind = AMQP_FIELD_KIND_ARRAY;
  e.value.value.array.num_entries = 1;
  e.value.value.array.entries = arr;
  return e;
}

static bool has_key(const amqp_table_t *t, const char *k) {
  return wr_amqp_table_get(t, k) != NULL;
}

static void reset_drops_death_records_and_warren_headers(void **state) {
  (void)state;
  amqp_table_entry_t inner[2] = {ent_s("reason", "expired"), ent_s("queue", "q.mbox.u.alice")};
  amqp_table_entry_t e[] = {
      ent_s("trace", "abc"),
      ent_death(inner, 2),
      ent_s("x-first-death-reason", "expired"),
      ent_s("x-first-death-queue", "q.mbox.u.alice"),
      ent_s("x-first-death-exchange", ""),
      ent_s("x-last-death-reason", "maxlen"),
      ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, 7),
      ent_s("x-warren-reason", "max_attempts"),
      ent_s("x-warren-user", "alice"),
      ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW),
      ent_s("", "empty key"),
      ent_s("x-deaths-door", "not a death record"),
  };
  amqp_table_t in = {.num_entries = (int)(sizeof(e) / sizeof(e[0])), .entries = e}, out;
  assert_int_equal(wr_amqp_replay_headers_reset(&in, &out), 0);
  assert_int_equal(out.num_entries, 3);
  assert_true(has_key(&out, "trace"));
  assert_true(has_key(&out, ""));
  assert_true(has_key(&out, "x-deaths-door"));
  wr_amqp_headers_release(&out);

  assert_int_equal(wr_amqp_replay_headers_reset(NULL, &out), 0);
  assert_int_equal(out.num_entries, 0);
  assert_null(out.entries);
}

static wr_amqp_replay_opts_t parked(const char *user, bool ignore_expiry) {
  return (wr_amqp_replay_opts_t){
      .from = WR_REPLAY_PARKED, .user = user, .ignore_expiry = ignore_expiry};
}

static void parked_copy_goes_to_its_users_mailbox(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  amqp_table_entry_t e[] = {ent_s("x-warren-user", "alice"),
                            ent_s("x-warren-reason", "max_attempts"),
                            ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, 50),
                            ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW + 5000)};
  amqp_table_t h = {.num_entries = 4, .entries = e};
  wr_amqp_replay_opts_t o = parked(NULL, false);
  wr_amqp_replay_plan_t p;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_MAILBOX);
  assert_string_equal(p.exchange, "q.mailbox");
  assert_string_equal(p.key, "u.alice");
  assert_string_equal(p.user, "alice");
  assert_int_equal(p.pub.kind, WR_PUB_MAILBOX);
  assert_ptr_equal(p.pub.user, p.user);
  assert_int_equal(p.pub.expires_at_ms, NOW + 5000);
  assert_false(p.expires_again);
  wr_amqp_replay_plan_free(&p);

  /* A user id that is no plain key goes by its digest, like every copy. */
  e[0] = ent_s("x-warren-user", "a b");
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_string_equal(p.key, "u.~c8687a08aa5d6ed2044328fa6a697ab8e96dc34291e8c2034ae8c38e6fcc6d65");
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

static void passed_deadline_expires_again_unless_ignored(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  amqp_table_entry_t e[] = {ent_s("x-warren-user", "alice"), ent_s("x-warren-reason", "expired"),
                            ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW - 1)};
  amqp_table_t h = {.num_entries = 3, .entries = e};
  wr_amqp_replay_opts_t o = parked(NULL, false);
  wr_amqp_replay_plan_t p;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_true(p.expires_again);
  assert_int_equal(p.pub.expires_at_ms, NOW - 1);
  wr_amqp_replay_plan_free(&p);

  /* The exact deadline has passed too: warren parks at wall >= deadline. */
  e[2].value.value.i64 = NOW;
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_true(p.expires_again);
  wr_amqp_replay_plan_free(&p);

  o.ignore_expiry = true;
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_false(p.expires_again);
  assert_int_equal(p.pub.expires_at_ms, NOW + TTL);
  wr_amqp_replay_plan_free(&p);

  /* A deadline later than the fresh one is kept: --ignore-expiry never
   * shortens a life. */
  e[2].value.value.i64 = NOW + 2 * TTL;
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.pub.expires_at_ms, NOW + 2 * TTL);
  wr_amqp_replay_plan_free(&p);

  /* No deadline: none is added. */
  h.num_entries = 2;
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.pub.expires_at_ms, 0);
  assert_false(p.expires_again);
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

static void without_mailboxes_the_ladder_takes_it(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, false);
  amqp_table_entry_t e[] = {ent_s("x-warren-user", "bob")};
  amqp_table_t h = {.num_entries = 1, .entries = e};
  wr_amqp_replay_opts_t o = parked(NULL, false);
  wr_amqp_replay_plan_t p;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_LADDER);
  assert_string_equal(p.exchange, "q.retry");
  assert_string_equal(p.key, "700");
  assert_int_equal(p.pub.kind, WR_PUB_RETRY);
  assert_string_equal(p.pub.user, "bob");
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

static void parked_whole_goes_to_the_exchange(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  amqp_table_entry_t e[] = {ent_s("x-warren-reason", "expired"),
                            ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW - 1000)};
  amqp_table_t h = {.num_entries = 2, .entries = e};
  wr_amqp_replay_opts_t o = parked(NULL, true);
  wr_amqp_replay_plan_t p;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_EXCHANGE);
  assert_string_equal(p.exchange, "x.in");
  assert_string_equal(p.key, "replay");
  assert_null(p.user);
  assert_null(p.pub.user);
  assert_int_equal(p.pub.expires_at_ms, 0);
  /* Its body holds the deadline: even --ignore-expiry cannot move it. */
  assert_true(p.expires_again);
  wr_amqp_replay_plan_free(&p);

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, NULL, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_EXCHANGE);
  assert_false(p.expires_again);
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

static void user_filter_skips_everyone_else(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  amqp_table_entry_t alice[] = {ent_s("x-warren-user", "alice")};
  amqp_table_entry_t alicia[] = {ent_s("x-warren-user", "alicia")};
  amqp_table_entry_t none[] = {ent_s("x-warren-reason", "expired")};
  amqp_table_t ha = {.num_entries = 1, .entries = alice};
  amqp_table_t hb = {.num_entries = 1, .entries = alicia};
  amqp_table_t hn = {.num_entries = 1, .entries = none};
  wr_amqp_replay_opts_t o = parked("alice", false);
  wr_amqp_replay_plan_t p;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &ha, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_MAILBOX);
  wr_amqp_replay_plan_free(&p);
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &hb, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_SKIPPED);
  wr_amqp_replay_plan_free(&p);
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &hn, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_SKIPPED);
  wr_amqp_replay_plan_free(&p);
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, NULL, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_SKIPPED);
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

static void dead_message_is_a_new_original_whatever_its_headers(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  /* A publisher's forged steering headers: warren never trusted them on the
   * original, and a replay does not start now. */
  amqp_table_entry_t e[] = {ent_s("x-warren-user", "mallory"),
                            ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW - 1)};
  amqp_table_t h = {.num_entries = 2, .entries = e};
  wr_amqp_replay_opts_t o = {.from = WR_REPLAY_DEAD};
  wr_amqp_replay_plan_t p;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_EXCHANGE);
  assert_string_equal(p.exchange, "x.in");
  assert_string_equal(p.key, "replay");
  assert_null(p.user);
  assert_false(p.expires_again);
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

/* The message as basic.get returned it. */
static amqp_basic_properties_t msg_props(amqp_table_t *headers) {
  amqp_basic_properties_t p;
  memset(&p, 0, sizeof(p));
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
             AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
             AMQP_BASIC_CORRELATION_ID_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.timestamp = 1790000000;
  p.message_id = amqp_cstring_bytes("n-42");
  p.expiration = amqp_cstring_bytes("5000");
  p.delivery_mode = 1;
  p.correlation_id = amqp_cstring_bytes("corr");
  if (headers != NULL) {
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = *headers;
  }
  return p;
}

/* What rabbitmq-c would put in the content header, decoded back. */
static amqp_basic_properties_t *sent(wr_amqp_replay_copy_t *c, amqp_pool_t *pool, size_t max) {
  amqp_basic_properties_t *back;
  int n = amqp_encode_properties(AMQP_BASIC_CLASS, &c->copy.props,
                                 (amqp_bytes_t){.len = sizeof(scratch), .bytes = scratch});
  assert_true(n > 0);
  assert_true((size_t)n <= max);
  assert_int_equal(amqp_decode_properties(AMQP_BASIC_CLASS, pool,
                                          (amqp_bytes_t){.len = (size_t)n, .bytes = scratch},
                                          (void **)&back),
                   AMQP_STATUS_OK);
  return back;
}

static void mailbox_copy_carries_the_reset_headers(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  amqp_table_entry_t inner[1] = {ent_s("reason", "maxlen")};
  amqp_table_entry_t e[] = {ent_s("trace", "abc"),
                            ent_s("", "empty key"),
                            ent_death(inner, 1),
                            ent_s("x-first-death-reason", "maxlen"),
                            ent_s("x-warren-user", "alice"),
                            ent_s("x-warren-reason", "unacked"),
                            ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, 3),
                            ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW + 9000)};
  amqp_table_t h = {.num_entries = (int)(sizeof(e) / sizeof(e[0])), .entries = e};
  amqp_basic_properties_t msg = msg_props(&h);
  wr_amqp_replay_opts_t o = parked(NULL, false);
  wr_amqp_replay_plan_t p;
  wr_amqp_replay_copy_t c;
  amqp_pool_t pool;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX), 0);
  init_amqp_pool(&pool, 4096);
  amqp_basic_properties_t *b = sent(&c, &pool, WR_AMQP_FRAME_MAX - WR_AMQP_CONTENT_OVERHEAD);
  assert_int_equal(b->_flags & AMQP_BASIC_CORRELATION_ID_FLAG, 0);
  assert_int_equal(b->delivery_mode, AMQP_DELIVERY_PERSISTENT);
  assert_int_equal(b->message_id.len, 4);
  assert_memory_equal(b->message_id.bytes, "n-42", 4);
  assert_int_equal(b->content_type.len, 16);
  assert_int_equal(b->timestamp, 1790000000);
  /* The original expiration is not copied; a mailbox copy lives as long as
   * its deadline lets it, as warren's own do. */
  assert_true(b->_flags & AMQP_BASIC_EXPIRATION_FLAG);
  assert_int_equal(b->expiration.len, 4);
  assert_memory_equal(b->expiration.bytes, "9000", 4);
  const amqp_table_t *t = &b->headers;
  assert_int_equal(t->num_entries, 4);
  assert_true(has_key(t, "trace"));
  assert_true(has_key(t, ""));
  int64_t v;
  assert_true(wr_amqp_field_int(wr_amqp_table_get(t, "x-warren-expires-at"), &v));
  assert_int_equal(v, NOW + 9000);
  const amqp_field_value_t *u = wr_amqp_table_get(t, "x-warren-user");
  assert_non_null(u);
  assert_int_equal(u->value.bytes.len, 5);
  assert_memory_equal(u->value.bytes.bytes, "alice", 5);
  empty_amqp_pool(&pool);
  wr_amqp_replay_copy_release(&c);
  wr_amqp_replay_plan_free(&p);

  /* Its deadline passed: expiration 0, the broker expires it at the head of
   * the mailbox (back to Q.parked) unless --ignore-expiry. */
  e[7].value.value.i64 = NOW - 1;
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX), 0);
  init_amqp_pool(&pool, 4096);
  b = sent(&c, &pool, WR_AMQP_FRAME_MAX);
  assert_int_equal(b->expiration.len, 1);
  assert_memory_equal(b->expiration.bytes, "0", 1);
  empty_amqp_pool(&pool);
  wr_amqp_replay_copy_release(&c);
  wr_amqp_replay_plan_free(&p);

  o.ignore_expiry = true;
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX), 0);
  init_amqp_pool(&pool, 4096);
  b = sent(&c, &pool, WR_AMQP_FRAME_MAX);
  assert_int_equal(b->expiration.len, 9);
  assert_memory_equal(b->expiration.bytes, "604800000", 9);
  assert_true(wr_amqp_field_int(wr_amqp_table_get(&b->headers, "x-warren-expires-at"), &v));
  assert_int_equal(v, NOW + TTL);
  empty_amqp_pool(&pool);
  wr_amqp_replay_copy_release(&c);
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

static void exchange_copy_is_a_plain_original(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  amqp_table_entry_t inner[1] = {ent_s("reason", "rejected")};
  amqp_table_entry_t e[] = {ent_death(inner, 1), ent_s("x-first-death-queue", "q"),
                            ent_s("x-warren-reason", "expired"),
                            ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, NOW)};
  amqp_table_t h = {.num_entries = 4, .entries = e};
  amqp_basic_properties_t msg = msg_props(&h);
  wr_amqp_replay_opts_t o = {.from = WR_REPLAY_DEAD};
  wr_amqp_replay_plan_t p;
  wr_amqp_replay_copy_t c;
  amqp_pool_t pool;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX), 0);
  init_amqp_pool(&pool, 4096);
  amqp_basic_properties_t *b = sent(&c, &pool, WR_AMQP_FRAME_MAX);
  /* Nothing left to say: no headers at all, no expiration. */
  assert_int_equal(b->_flags & AMQP_BASIC_HEADERS_FLAG, 0);
  assert_int_equal(b->_flags & AMQP_BASIC_EXPIRATION_FLAG, 0);
  assert_int_equal(b->message_id.len, 4);
  assert_int_equal(b->delivery_mode, AMQP_DELIVERY_PERSISTENT);
  empty_amqp_pool(&pool);
  wr_amqp_replay_copy_release(&c);
  wr_amqp_replay_plan_free(&p);

  /* Without any headers at all. */
  msg = msg_props(NULL);
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, NULL, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX), 0);
  assert_int_equal(c.copy.props._flags & AMQP_BASIC_HEADERS_FLAG, 0);
  wr_amqp_replay_copy_release(&c);
  wr_amqp_replay_plan_free(&p);
  wr_config_close(&cfg);
}

/* Headers that filled the frame in Q.parked may not leave a mailbox copy
 * the room a dead-lettering needs: the message stays, whole, instead of
 * going without them. */
static void headers_that_do_not_fit_leave_it_in_place(void **state) {
  (void)state;
  wr_config_t cfg;
  load_cfg(&cfg, true);
  size_t big = WR_AMQP_FRAME_MAX - WR_AMQP_CONTENT_OVERHEAD - 1024;
  char *v = malloc(big + 1);
  assert_non_null(v);
  memset(v, 'v', big);
  v[big] = '\0';
  amqp_table_entry_t e[] = {ent_s("x-warren-user", "alice"), ent_s("blob", v)};
  amqp_table_t h = {.num_entries = 2, .entries = e};
  amqp_basic_properties_t msg = msg_props(&h);
  wr_amqp_replay_opts_t o = parked(NULL, false);
  wr_amqp_replay_plan_t p;
  wr_amqp_replay_copy_t c;

  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX),
                   -EMSGSIZE);
  wr_amqp_replay_plan_free(&p);

  /* As a new original (no dead-lettering reserve) the same headers fit. */
  e[0] = ent_s("x-warren-reason", "expired");
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(p.outcome, WR_REPLAY_EXCHANGE);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX), 0);
  wr_amqp_replay_copy_release(&c);
  wr_amqp_replay_plan_free(&p);

  /* A field kind rabbitmq-c cannot encode: left in place too, never sent. */
  e[1].value.kind = 'Z';
  assert_int_equal(wr_amqp_replay_plan(&p, &cfg, &o, &h, NOW), 0);
  assert_int_equal(wr_amqp_replay_copy_build(&c, &msg, &p, NOW, scratch, WR_AMQP_FRAME_MAX),
                   -EMSGSIZE);
  wr_amqp_replay_plan_free(&p);
  free(v);
  wr_config_close(&cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reset_drops_death_records_and_warren_headers),
      cmocka_unit_test(parked_copy_goes_to_its_users_mailbox),
      cmocka_unit_test(passed_deadline_expires_again_unless_ignored),
      cmocka_unit_test(without_mailboxes_the_ladder_takes_it),
      cmocka_unit_test(parked_whole_goes_to_the_exchange),
      cmocka_unit_test(user_filter_skips_everyone_else),
      cmocka_unit_test(dead_message_is_a_new_original_whatever_its_headers),
      cmocka_unit_test(mailbox_copy_carries_the_reset_headers),
      cmocka_unit_test(exchange_copy_is_a_plain_original),
      cmocka_unit_test(headers_that_do_not_fit_leave_it_in_place),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
