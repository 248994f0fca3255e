/* Pure helpers of amqp/: header tables, backoff, ladder names. No broker. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "amqp/amqp_int.h"
#include "table_entries.h"

static void parse_every_integer_kind(void **state) {
  (void)state;
  static const uint8_t kinds[] = {AMQP_FIELD_KIND_I8,  AMQP_FIELD_KIND_U8,  AMQP_FIELD_KIND_I16,
                                  AMQP_FIELD_KIND_U16, AMQP_FIELD_KIND_I32, AMQP_FIELD_KIND_U32,
                                  AMQP_FIELD_KIND_I64, AMQP_FIELD_KIND_U64};
  for (size_t i = 0; i < sizeof(kinds); i++) {
    amqp_table_entry_t e[3] = {ent_i("x-warren-attempt", kinds[i], 7),
                               ent_s("x-warren-user", "1001"),
                               ent_i("x-warren-expires-at", AMQP_FIELD_KIND_I64, 1795400000000)};
    amqp_table_t t = {.num_entries = 3, .entries = e};
    uint32_t attempt = 99;
    char *user = NULL;
    int64_t exp = 0;
    assert_int_equal(wr_amqp_headers_parse(&t, &attempt, &user, &exp), 0);
    assert_int_equal(attempt, 7);
    assert_non_null(user);
    assert_string_equal(user, "1001");
    assert_true(exp == 1795400000000);
    free(user);
  }
}

static void parse_absent_and_bad_values(void **state) {
  (void)state;
  uint32_t attempt = 5;
  char *user = (char *)"x";
  int64_t exp = 5;
  assert_int_equal(wr_amqp_headers_parse(NULL, &attempt, &user, &exp), 0);
  assert_int_equal(attempt, 0);
  assert_null(user);
  assert_true(exp == 0);

  /* negative attempt → 0, string attempt ignored, huge → clamped, user with NUL ignored */
  amqp_table_entry_t e[2] = {ent_i("x-warren-attempt", AMQP_FIELD_KIND_I32, -3),
                             ent_s("x-warren-expires-at", "soon")};
  amqp_table_t t = {.num_entries = 2, .entries = e};
  assert_int_equal(wr_amqp_headers_parse(&t, &attempt, &user, &exp), 0);
  assert_int_equal(attempt, 0);
  assert_true(exp == 0);

  e[0] = ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, (int64_t)1 << 40);
  e[1].key = amqp_cstring_bytes("x-warren-user");
  e[1].value.kind = AMQP_FIELD_KIND_BYTES;
  e[1].value.value.bytes = (amqp_bytes_t){.len = 3, .bytes = (void *)"a\0b"};
  assert_int_equal(wr_amqp_headers_parse(&t, &attempt, &user, &exp), 0);
  assert_int_equal(attempt, WR_AMQP_ATTEMPT_MAX);
  assert_null(user);
}

static void parse_saturates_attempt_below_wrap(void **state) {
  (void)state;
  /* The loop counts the next attempt as attempt + 1: a header of
   * UINT32_MAX must not come out as a value that wraps it to 0. */
  static const int64_t values[] = {UINT32_MAX, (int64_t)UINT32_MAX - 1, INT64_MAX};
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    amqp_table_entry_t e = ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, values[i]);
    amqp_table_t t = {.num_entries = 1, .entries = &e};
    uint32_t attempt = 0;
    char *user = NULL;
    int64_t exp = 0;
    assert_int_equal(wr_amqp_headers_parse(&t, &attempt, &user, &exp), 0);
    assert_int_equal(attempt, UINT32_MAX - 1);
    assert_true(attempt + 1 > attempt);
  }
  amqp_table_entry_t e = ent_i("x-warren-attempt", AMQP_FIELD_KIND_U32, UINT32_MAX);
  amqp_table_t t = {.num_entries = 1, .entries = &e};
  uint32_t attempt = 0;
  char *user = NULL;
  int64_t exp = 0;
  assert_int_equal(wr_amqp_headers_parse(&t, &attempt, &user, &exp), 0);
  assert_int_equal(attempt, WR_AMQP_ATTEMPT_MAX);
}

static void build_replaces_warren_headers(void **state) {
  (void)state;
  amqp_table_entry_t e[4] = {ent_s("trace-id", "abc"),
                             ent_i("x-warren-attempt", AMQP_FIELD_KIND_I8, 3),
                             ent_s("x-warren-user", "old"), ent_s("x-warren-reason", "stale")};
  amqp_table_t orig = {.num_entries = 4, .entries = e};
  wr_amqp_pub_t pub = {.kind = WR_PUB_RETRY,
                       .delay_ms = 1000,
                       .attempt = 4,
                       .user = (char *)"1002",
                       .id = (char *)"n1",
                       .expires_at_ms = 1234,
                       .reason = "ignored-for-retry"};
  amqp_table_t out;
  assert_int_equal(wr_amqp_headers_build(&orig, &pub, &out), 0);
  assert_int_equal(out.num_entries, 4);

  const amqp_field_value_t *v = wr_amqp_table_get(&out, "trace-id");
  assert_non_null(v);
  assert_memory_equal(v->value.bytes.bytes, "abc", 3);
  v = wr_amqp_table_get(&out, "x-warren-attempt");
  assert_non_null(v);
  assert_int_equal(v->kind, AMQP_FIELD_KIND_I64);
  assert_int_equal(v->value.i64, 4);
  v = wr_amqp_table_get(&out, "x-warren-user");
  assert_non_null(v);
  assert_int_equal(v->value.bytes.len, 4);
  assert_memory_equal(v->value.bytes.bytes, "1002", 4);
  v = wr_amqp_table_get(&out, "x-warren-expires-at");
  assert_non_null(v);
  assert_int_equal(v->kind, AMQP_FIELD_KIND_I64);
  assert_int_equal(v->value.i64, 1234);
  assert_null(wr_amqp_table_get(&out, "x-warren-reason"));
  wr_amqp_headers_release(&out);
  assert_null(out.entries);
}

static void build_park_without_original_headers(void **state) {
  (void)state;
  wr_amqp_pub_t pub = {.kind = WR_PUB_PARK, .attempt = 50, .reason = "max_attempts"};
  amqp_table_t out;
  assert_int_equal(wr_amqp_headers_build(NULL, &pub, &out), 0);
  assert_int_equal(out.num_entries, 2);
  assert_null(wr_amqp_table_get(&out, "x-warren-user"));
  assert_null(wr_amqp_table_get(&out, "x-warren-expires-at"));
  const amqp_field_value_t *v = wr_amqp_table_get(&out, "x-warren-reason");
  assert_non_null(v);
  assert_int_equal(v->value.bytes.len, strlen("max_attempts"));

  /* The built table round-trips through rabbitmq-c's own encoder/decoder
   * and parses back to what was asked. */
  char buf[512];
  amqp_bytes_t enc = {.len = sizeof(buf), .bytes = buf};
  size_t off = 0;
  assert_int_equal(amqp_encode_table(enc, &out, &off), AMQP_STATUS_OK);
  amqp_pool_t pool;
  init_amqp_pool(&pool, 1024);
  amqp_table_t back;
  size_t roff = 0;
  enc.len = off;
  assert_int_equal(amqp_decode_table(enc, &pool, &back, &roff), AMQP_STATUS_OK);
  uint32_t attempt;
  char *user;
  int64_t exp;
  assert_int_equal(wr_amqp_headers_parse(&back, &attempt, &user, &exp), 0);
  assert_int_equal(attempt, 50);
  assert_null(user);
  empty_amqp_pool(&pool);
  wr_amqp_headers_release(&out);
}

/* Encodes t with rabbitmq-c (what a copy puts on the wire). */
static size_t encode(const amqp_table_t *t, uint8_t *buf, size_t len) {
  size_t off = 0;
  assert_int_equal(
      amqp_encode_table((amqp_bytes_t){.len = len, .bytes = buf}, (amqp_table_t *)t, &off),
      AMQP_STATUS_OK);
  return off;
}

/* Decodes what a publisher would send: every field kind, an empty key, a
 * table inside an array inside a table. */
static void table_with_every_kind(amqp_pool_t *pool, amqp_table_t *out) {
  static amqp_table_entry_t inner[2];
  static amqp_field_value_t arr[3];
  static amqp_table_entry_t e[19];
  int n = 0;
  inner[0] = ent_s("queue", "q.retry.200");
  inner[1] = ent_i("count", AMQP_FIELD_KIND_I64, 3);
  arr[0].kind = AMQP_FIELD_KIND_TABLE;
  arr[0].value.table = (amqp_table_t){.num_entries = 2, .entries = inner};
  arr[1].kind = AMQP_FIELD_KIND_UTF8;
  arr[1].value.bytes = amqp_cstring_bytes("s");
  arr[2].kind = AMQP_FIELD_KIND_VOID;
  e[n++] = ent_s("", "empty key");
  e[n++] = ent_i("i8", AMQP_FIELD_KIND_I8, -5);
  e[n++] = ent_i("u8", AMQP_FIELD_KIND_U8, 250);
  e[n++] = ent_i("i16", AMQP_FIELD_KIND_I16, -300);
  e[n++] = ent_i("u16", AMQP_FIELD_KIND_U16, 60000);
  e[n++] = ent_i("i32", AMQP_FIELD_KIND_I32, -70000);
  e[n++] = ent_i("u32", AMQP_FIELD_KIND_U32, 4000000000);
  e[n++] = ent_i("i64", AMQP_FIELD_KIND_I64, INT64_MIN);
  e[n++] = ent_i("u64", AMQP_FIELD_KIND_U64, -1);
  e[n] = ent_i("ts", AMQP_FIELD_KIND_TIMESTAMP, 0);
  e[n++].value.value.u64 = (uint64_t)1 << 62;
  e[n] = ent_i("bool", AMQP_FIELD_KIND_BOOLEAN, 0);
  e[n++].value.value.boolean = 1;
  e[n] = ent_i("f32", AMQP_FIELD_KIND_F32, 0);
  e[n++].value.value.f32 = 1.5f;
  e[n] = ent_i("f64", AMQP_FIELD_KIND_F64, 0);
  e[n++].value.value.f64 = -2.25;
  e[n] = ent_i("dec", AMQP_FIELD_KIND_DECIMAL, 0);
  e[n++].value.value.decimal = (amqp_decimal_t){.decimals = 2, .value = 12345};
  e[n] = ent_s("bytes", "");
  e[n].value.kind = AMQP_FIELD_KIND_BYTES;
  e[n++].value.value.bytes = (amqp_bytes_t){.len = 3, .bytes = (void *)"a\0b"};
  e[n] = ent_i("void", AMQP_FIELD_KIND_VOID, 0);
  n++;
  e[n] = ent_s("x-death", "");
  e[n].value.kind = AMQP_FIELD_KIND_ARRAY;
  e[n++].value.value.array = (amqp_array_t){.num_entries = 3, .entries = arr};
  e[n] = ent_s("empty-table", "");
  e[n].value.kind = AMQP_FIELD_KIND_TABLE;
  e[n++].value.value.table = (amqp_table_t){.num_entries = 0, .entries = NULL};
  e[n] = ent_s("empty-array", "");
  e[n].value.kind = AMQP_FIELD_KIND_ARRAY;
  e[n++].value.value.array = (amqp_array_t){.num_entries = 0, .entries = NULL};
  amqp_table_t t = {.num_entries = n, .entries = e};

  /* Through the wire format, as rabbitmq-c hands it to consume.c. */
  static uint8_t buf[2048];
  size_t len = encode(&t, buf, sizeof(buf));
  size_t off = 0;
  assert_int_equal(amqp_decode_table((amqp_bytes_t){.len = len, .bytes = buf}, pool, out, &off),
                   AMQP_STATUS_OK);
  assert_int_equal(out->num_entries, n);
}

static void table_copy_keeps_empty_key_and_every_kind(void **state) {
  (void)state;
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  amqp_table_t orig;
  table_with_every_kind(&pool, &orig);

  /* rabbitmq-c's own clone refuses the empty key: that refusal requeued
   * such a message forever ("out of memory"). */
  amqp_pool_t cpool;
  init_amqp_pool(&cpool, 4096);
  amqp_table_t clone;
  assert_int_not_equal(amqp_table_clone(&orig, &clone, &cpool), AMQP_STATUS_OK);
  empty_amqp_pool(&cpool);

  size_t need = 0;
  assert_int_equal(wr_amqp_table_copy(&orig, NULL, NULL, 0, &need), 0);
  assert_true(need > 0);
  void *block = malloc(need);
  assert_non_null(block);
  amqp_table_t copy;
  size_t used = 0;
  assert_int_equal(wr_amqp_table_copy(&orig, &copy, block, need, &used), 0);
  assert_int_equal(used, need);

  /* Byte for byte what the original encodes to... */
  static uint8_t a[2048], b[2048];
  size_t la = encode(&orig, a, sizeof(a));
  size_t lb = encode(&copy, b, sizeof(b));
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  const amqp_field_value_t *v = wr_amqp_table_get(&copy, "");
  assert_non_null(v);
  assert_memory_equal(v->value.bytes.bytes, "empty key", 9);

  /* ...and owning its memory: the pool it came from can go. */
  empty_amqp_pool(&pool);
  size_t lc = encode(&copy, a, sizeof(a));
  assert_int_equal(lc, lb);
  assert_memory_equal(a, b, lb);
  free(block);
}

/* Headers whose containers nest depth levels deep (the headers table is
 * level 1), alternating tables and arrays, with an integer at the bottom.
 * e and v must hold depth + 1 entries. */
static amqp_table_t nested(amqp_table_entry_t *e, amqp_field_value_t *v, int depth) {
  amqp_field_value_t inner = {.kind = AMQP_FIELD_KIND_I8, .value.i8 = 1};
  for (int lvl = depth; lvl >= 2; lvl--) {
    if (lvl % 2 == 0) {
      e[lvl].key = amqp_cstring_bytes("k");
      e[lvl].value = inner;
      inner.kind = AMQP_FIELD_KIND_TABLE;
      inner.value.table = (amqp_table_t){.num_entries = 1, .entries = &e[lvl]};
    } else {
      v[lvl] = inner;
      inner.kind = AMQP_FIELD_KIND_ARRAY;
      inner.value.array = (amqp_array_t){.num_entries = 1, .entries = &v[lvl]};
    }
  }
  e[1].key = amqp_cstring_bytes("k");
  e[1].value = inner;
  return (amqp_table_t){.num_entries = 1, .entries = &e[1]};
}

static void table_copy_depth_is_bounded(void **state) {
  (void)state;
  static amqp_table_entry_t e[WR_AMQP_TABLE_MAX_DEPTH * 2 + 5];
  static amqp_field_value_t arr[WR_AMQP_TABLE_MAX_DEPTH * 2 + 5];
  size_t need;

  amqp_table_t ok = nested(e, arr, WR_AMQP_TABLE_MAX_DEPTH);
  assert_int_equal(wr_amqp_table_copy(&ok, NULL, NULL, 0, &need), 0);
  void *block = malloc(need);
  amqp_table_t copy;
  assert_int_equal(wr_amqp_table_copy(&ok, &copy, block, need, NULL), 0);
  free(block);

  amqp_table_t deep = nested(e, arr, WR_AMQP_TABLE_MAX_DEPTH + 1);
  assert_int_equal(wr_amqp_table_copy(&deep, NULL, NULL, 0, &need), -ELOOP);
  deep = nested(e, arr, WR_AMQP_TABLE_MAX_DEPTH * 2 + 4);
  assert_int_equal(wr_amqp_table_copy(&deep, NULL, NULL, 0, &need), -ELOOP);
}

static void table_copy_refuses_what_cannot_be_encoded(void **state) {
  (void)state;
  char key[300];
  memset(key, 'k', sizeof(key) - 1);
  key[sizeof(key) - 1] = '\0';
  amqp_table_entry_t e = ent_s(key, "v");
  amqp_table_t t = {.num_entries = 1, .entries = &e};
  size_t need;
  /* A 299-byte key: amqp_encode_table would write its length as 43. */
  assert_int_equal(wr_amqp_table_copy(&t, NULL, NULL, 0, &need), -EINVAL);
  key[255] = '\0';
  e = ent_s(key, "v");
  assert_int_equal(wr_amqp_table_copy(&t, NULL, NULL, 0, &need), 0);

  e.value.kind = 'Z';
  assert_int_equal(wr_amqp_table_copy(&t, NULL, NULL, 0, &need), -EINVAL);

  e = ent_s("k", "value");
  assert_int_equal(wr_amqp_table_copy(&t, NULL, NULL, 0, &need), 0);
  void *block = malloc(need);
  amqp_table_t copy;
  assert_int_equal(wr_amqp_table_copy(&t, &copy, block, need - 1, NULL), -ENOSPC);
  free(block);
}

/* x-death as the broker writes it: newest first. */
static amqp_table_t with_x_death(amqp_table_entry_t *e, amqp_field_value_t *arr,
                                 amqp_table_entry_t *d0, amqp_table_entry_t *d1, const char *queue0,
                                 const char *reason0, const char *queue1) {
  d0[0] = ent_s("queue", queue0);
  d0[1] = ent_s("reason", reason0);
  d1[0] = ent_s("queue", queue1);
  d1[1] = ent_s("reason", "expired");
  arr[0].kind = AMQP_FIELD_KIND_TABLE;
  arr[0].value.table = (amqp_table_t){.num_entries = 2, .entries = d0};
  arr[1].kind = AMQP_FIELD_KIND_TABLE;
  arr[1].value.table = (amqp_table_t){.num_entries = 2, .entries = d1};
  e[0] = ent_i("x-warren-attempt", AMQP_FIELD_KIND_I64, 2);
  e[1] = ent_s("x-death", "");
  e[1].value.kind = AMQP_FIELD_KIND_ARRAY;
  e[1].value.value.array = (amqp_array_t){.num_entries = 2, .entries = arr};
  return (amqp_table_t){.num_entries = 2, .entries = e};
}

static void trusted_only_back_from_the_ladder(void **state) {
  (void)state;
  amqp_table_entry_t e[2], d0[2], d1[2];
  amqp_field_value_t arr[2];
  amqp_bytes_t dflt = amqp_empty_bytes;
  amqp_table_t h;

  h = with_x_death(e, arr, d0, d1, "wq.retry.200", "expired", "wq.retry.5000");
  assert_true(wr_amqp_headers_trusted(&h, dflt, "wq"));
  assert_true(wr_amqp_headers_has_warren(&h));
  /* published to amqp.exchange (or any named exchange): an original */
  assert_false(wr_amqp_headers_trusted(&h, amqp_cstring_bytes("warren.notify"), "wq"));
  /* the newest dead-lettering is not from our ladder */
  h = with_x_death(e, arr, d0, d1, "wq.parked", "expired", "wq.retry.200");
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  h = with_x_death(e, arr, d0, d1, "other.retry.200", "expired", "wq.retry.200");
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  h = with_x_death(e, arr, d0, d1, "wq.retry.", "expired", "wq.retry.200");
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  h = with_x_death(e, arr, d0, d1, "wq.retry.2x0", "expired", "wq.retry.200");
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  h = with_x_death(e, arr, d0, d1, "wq.retry.200", "rejected", "wq.retry.200");
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  /* through the default exchange but never dead-lettered */
  h.num_entries = 1;
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  assert_false(wr_amqp_headers_trusted(NULL, dflt, "wq"));
  /* x-death of the wrong kind */
  e[0] = ent_s("x-death", "wq.retry.200");
  assert_false(wr_amqp_headers_trusted(&h, dflt, "wq"));
  assert_false(wr_amqp_headers_has_warren(&h));
  assert_false(wr_amqp_headers_has_warren(NULL));
}

/* Cluster mode reads the queue of the newest x-death entry (a copy that
 * expired in another node's queue), and a fan copy names its node. */
static void death_queue_and_fan_header(void **state) {
  (void)state;
  amqp_table_entry_t e[2], d0[2], d1[2];
  amqp_field_value_t arr[2];
  amqp_table_t h = with_x_death(e, arr, d0, d1, "wq.node.n2", "expired", "wq.retry.200");
  amqp_bytes_t q = wr_amqp_death_queue(&h);
  assert_int_equal(q.len, strlen("wq.node.n2"));
  assert_memory_equal(q.bytes, "wq.node.n2", q.len);
  h.num_entries = 1; /* no x-death */
  assert_int_equal(wr_amqp_death_queue(&h).len, 0);
  assert_int_equal(wr_amqp_death_queue(NULL).len, 0);
  e[0] = ent_s("x-death", "wq.node.n2"); /* of the wrong kind */
  assert_int_equal(wr_amqp_death_queue(&h).len, 0);

  wr_amqp_pub_t pub = {.kind = WR_PUB_ROUTE, .attempt = 0, .user = (char *)"u1", .fan = true,
                       .fan_from = "n1"};
  amqp_table_t out;
  assert_int_equal(wr_amqp_headers_build(NULL, &pub, &out), 0);
  const amqp_field_value_t *v = wr_amqp_table_get(&out, "x-warren-fan");
  assert_non_null(v);
  assert_int_equal(v->value.bytes.len, 2);
  assert_memory_equal(v->value.bytes.bytes, "n1", 2);
  wr_amqp_headers_release(&out);
  /* A route copy that is no fan copy, and a fan flag on another kind: none. */
  pub.fan = false;
  assert_int_equal(wr_amqp_headers_build(NULL, &pub, &out), 0);
  assert_null(wr_amqp_table_get(&out, "x-warren-fan"));
  wr_amqp_headers_release(&out);
  pub.fan = true;
  pub.kind = WR_PUB_MAILBOX;
  assert_int_equal(wr_amqp_headers_build(NULL, &pub, &out), 0);
  assert_null(wr_amqp_table_get(&out, "x-warren-fan"));
  wr_amqp_headers_release(&out);
}

static void backoff_grows_caps_and_jitters(void **state) {
  (void)state;
  /* rnd = midpoint → exactly the base */
  uint32_t mid = UINT32_MAX / 2;
  assert_in_range(wr_amqp_backoff_ms(0, mid), 99, 100);
  assert_in_range(wr_amqp_backoff_ms(1, mid), 199, 200);
  assert_in_range(wr_amqp_backoff_ms(3, mid), 799, 800);
  assert_in_range(wr_amqp_backoff_ms(20, mid), 29999, 30000);
  assert_in_range(wr_amqp_backoff_ms(1000, mid), 29999, 30000);
  /* extremes of the jitter: ±25% */
  assert_int_equal(wr_amqp_backoff_ms(0, 0), 75);
  assert_int_equal(wr_amqp_backoff_ms(0, UINT32_MAX), 125);
  assert_int_equal(wr_amqp_backoff_ms(30, 0), 22500);
  assert_int_equal(wr_amqp_backoff_ms(30, UINT32_MAX), 37500);
}

static void delays_are_distinct_in_order(void **state) {
  (void)state;
  wr_config_t cfg;
  memset(&cfg, 0, sizeof(cfg));
  uint32_t d[] = {1000, 5000, 1000, 30000, 5000, 30000};
  memcpy(cfg.retry_delays_ms, d, sizeof(d));
  cfg.n_retry_delays = 6;
  uint32_t out[WR_CONFIG_MAX_DELAYS];
  assert_int_equal(wr_amqp_delays_distinct(&cfg, out), 3);
  assert_int_equal(out[0], 1000);
  assert_int_equal(out[1], 5000);
  assert_int_equal(out[2], 30000);
}

static void names_fit_amqp_limit(void **state) {
  (void)state;
  char buf[256];
  assert_int_equal(wr_amqp_name_fmt(buf, sizeof(buf), "warren.notify", ".parked"), 0);
  assert_string_equal(buf, "warren.notify.parked");
  char longq[251];
  memset(longq, 'q', 250);
  longq[250] = '\0';
  assert_int_equal(wr_amqp_name_fmt(buf, sizeof(buf), longq, ".dead"), 0);
  assert_int_equal(wr_amqp_name_fmt(buf, sizeof(buf), longq, ".parked"), -ENAMETOOLONG);
}

static void delivery_free_releases_everything(void **state) {
  (void)state;
  /* Run under ASan/valgrind this catches leaks; here it must not crash on a
   * delivery without an envelope and with pubs. */
  wr_amqp_delivery_t *d = calloc(1, sizeof(*d));
  assert_non_null(d);
  d->body = malloc(4);
  d->body_len = 4;
  d->content_type = strdup("application/json");
  d->pubs = calloc(2, sizeof(*d->pubs));
  d->n_pubs = 2;
  d->pubs[0].user = strdup("u");
  d->pubs[1].id = strdup("i");
  wr_amqp_delivery_free(d);
  wr_amqp_delivery_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_every_integer_kind),
      cmocka_unit_test(parse_absent_and_bad_values),
      cmocka_unit_test(parse_saturates_attempt_below_wrap),
      cmocka_unit_test(table_copy_keeps_empty_key_and_every_kind),
      cmocka_unit_test(table_copy_depth_is_bounded),
      cmocka_unit_test(table_copy_refuses_what_cannot_be_encoded),
      cmocka_unit_test(trusted_only_back_from_the_ladder),
      cmocka_unit_test(death_queue_and_fan_header),
      cmocka_unit_test(build_replaces_warren_headers),
      cmocka_unit_test(build_park_without_original_headers),
      cmocka_unit_test(backoff_grows_caps_and_jitters),
      cmocka_unit_test(delays_are_distinct_in_order),
      cmocka_unit_test(names_fit_amqp_limit),
      cmocka_unit_test(delivery_free_releases_everything),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
