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

static amqp_table_entry_t ent_i(const char *k, uint8_t kind, int64_t v) {
  amqp_table_entry_t e;
  memset(&e, 0, sizeof(e));
  e.key = amqp_cstring_bytes(k);
  e.value.kind = kind;
  switch (kind) {
  case AMQP_FIELD_KIND_I8:
    e.value.value.i8 = (int8_t)v;
    break;
  case AMQP_FIELD_KIND_U8:
    e.value.value.u8 = (uint8_t)v;
    break;
  case AMQP_FIELD_KIND_I16:
    e.value.value.i16 = (int16_t)v;
    break;
  case AMQP_FIELD_KIND_U16:
    e.value.value.u16 = (uint16_t)v;
    break;
  case AMQP_FIELD_KIND_I32:
    e.value.value.i32 = (int32_t)v;
    break;
  case AMQP_FIELD_KIND_U32:
    e.value.value.u32 = (uint32_t)v;
    break;
  case AMQP_FIELD_KIND_U64:
    e.value.value.u64 = (uint64_t)v;
    break;
  default:
    e.value.value.i64 = v;
    break;
  }
  return e;
}

static amqp_table_entry_t ent_s(const char *k, const char *v) {
  amqp_table_entry_t e;
  memset(&e, 0, sizeof(e));
  e.key = amqp_cstring_bytes(k);
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = amqp_cstring_bytes(v);
  return e;
}

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
  assert_int_equal(attempt, UINT32_MAX);
  assert_null(user);
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
      cmocka_unit_test(build_replaces_warren_headers),
      cmocka_unit_test(build_park_without_original_headers),
      cmocka_unit_test(backoff_grows_caps_and_jitters),
      cmocka_unit_test(delays_are_distinct_in_order),
      cmocka_unit_test(names_fit_amqp_limit),
      cmocka_unit_test(delivery_free_releases_everything),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
