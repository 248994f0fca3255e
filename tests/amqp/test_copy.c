/* The copy builder (amqp/copy.c): what a ladder or park copy carries, and
 * that whatever it hands to amqp_basic_publish encodes within the frame. No
 * broker. */
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

#define PROPS_MAX (WR_AMQP_FRAME_MAX - WR_AMQP_CONTENT_OVERHEAD)

static uint8_t scratch[WR_AMQP_FRAME_MAX];

static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* The original's properties as delivery_build keeps them. */
static amqp_basic_properties_t orig_props(amqp_table_t *headers, const char *mid) {
  amqp_basic_properties_t p;
  memset(&p, 0, sizeof(p));
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.timestamp = (uint64_t)1 << 62;
  if (headers != NULL) {
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = *headers;
  }
  if (mid != NULL) {
    p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p.message_id = amqp_cstring_bytes(mid);
  }
  return p;
}

static wr_amqp_pub_t retry_pub(char *id, char *user) {
  return (wr_amqp_pub_t){
      .kind = WR_PUB_RETRY, .delay_ms = 1000, .attempt = 2, .user = user, .id = id};
}

/* What rabbitmq-c puts in the content header, decoded back. */
static size_t encode_decode(wr_amqp_copy_t *c, amqp_pool_t *pool, amqp_basic_properties_t **out) {
  int n = amqp_encode_properties(AMQP_BASIC_CLASS, &c->props,
                                 (amqp_bytes_t){.len = sizeof(scratch), .bytes = scratch});
  assert_true(n > 0);
  assert_true((size_t)n <= PROPS_MAX);
  assert_int_equal(amqp_decode_properties(AMQP_BASIC_CLASS, pool,
                                          (amqp_bytes_t){.len = (size_t)n, .bytes = scratch},
                                          (void **)out),
                   AMQP_STATUS_OK);
  return (size_t)n;
}

static void id_of_255_bytes_is_the_message_id(void **state) {
  (void)state;
  char *id = repeat('i', 255);
  wr_amqp_pub_t pub = retry_pub(id, (char *)"1001");
  amqp_basic_properties_t orig = orig_props(NULL, "original-mid");
  wr_amqp_copy_t c;
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_int_equal(c.dropped, 0);

  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  amqp_basic_properties_t *back;
  encode_decode(&c, &pool, &back);
  assert_true(back->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
  assert_int_equal(back->message_id.len, 255);
  assert_memory_equal(back->message_id.bytes, id, 255);
  assert_int_equal(back->delivery_mode, AMQP_DELIVERY_PERSISTENT);
  assert_true(back->timestamp == (uint64_t)1 << 62);
  assert_int_equal(back->content_type.len, strlen("application/json"));
  uint32_t attempt;
  char *user;
  int64_t exp;
  assert_int_equal(wr_amqp_headers_parse(&back->headers, &attempt, &user, &exp), 0);
  assert_int_equal(attempt, 2);
  assert_string_equal(user, "1001");
  free(user);
  empty_amqp_pool(&pool);
  wr_amqp_copy_release(&c);
  free(id);
}

static void id_over_255_bytes_goes_without_message_id(void **state) {
  (void)state;
  for (size_t len = 256; len <= 300; len += 44) {
    char *id = repeat('i', len);
    wr_amqp_pub_t pub = retry_pub(id, (char *)"1001");
    amqp_basic_properties_t orig = orig_props(NULL, "original-mid");
    wr_amqp_copy_t c;
    assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
    assert_int_equal(c.dropped, WR_COPY_NO_MESSAGE_ID);
    /* Not the original's message_id either: that one is another id. */
    assert_false(c.props._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t *back;
    encode_decode(&c, &pool, &back);
    assert_false(back->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    assert_non_null(wr_amqp_table_get(&back->headers, "x-warren-user"));
    empty_amqp_pool(&pool);
    wr_amqp_copy_release(&c);
    free(id);
  }
}

static void original_message_id_when_the_loop_gives_none(void **state) {
  (void)state;
  wr_amqp_pub_t pub = retry_pub(NULL, NULL);
  amqp_basic_properties_t orig = orig_props(NULL, "original-mid");
  wr_amqp_copy_t c;
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_true(c.props._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
  assert_memory_equal(c.props.message_id.bytes, "original-mid", 12);
  wr_amqp_copy_release(&c);

  orig = orig_props(NULL, NULL);
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_false(c.props._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
  assert_int_equal(c.dropped, 0);
  wr_amqp_copy_release(&c);
}

static void empty_key_and_original_headers_travel(void **state) {
  (void)state;
  amqp_table_entry_t e[3] = {ent_s("", "empty key"), ent_s("trace", "t1"),
                             ent_s("x-warren-user", "forged")};
  amqp_table_t h = {.num_entries = 3, .entries = e};
  wr_amqp_pub_t pub = retry_pub((char *)"n1", (char *)"1001");
  amqp_basic_properties_t orig = orig_props(&h, NULL);
  wr_amqp_copy_t c;
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_int_equal(c.dropped, 0);
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  amqp_basic_properties_t *back;
  encode_decode(&c, &pool, &back);
  const amqp_field_value_t *v = wr_amqp_table_get(&back->headers, "");
  assert_non_null(v);
  assert_memory_equal(v->value.bytes.bytes, "empty key", 9);
  assert_non_null(wr_amqp_table_get(&back->headers, "trace"));
  v = wr_amqp_table_get(&back->headers, "x-warren-user");
  assert_memory_equal(v->value.bytes.bytes, "1001", 4);
  empty_amqp_pool(&pool);
  wr_amqp_copy_release(&c);
}

/* Headers that fill the frame up to slack bytes, for the original. */
static amqp_table_entry_t big_header(char **value, size_t slack) {
  amqp_basic_properties_t probe;
  amqp_table_entry_t e = ent_s("big", "");
  amqp_table_t h = {.num_entries = 1, .entries = &e};
  probe = orig_props(&h, NULL);
  int base = amqp_encode_properties(AMQP_BASIC_CLASS, &probe,
                                    (amqp_bytes_t){.len = sizeof(scratch), .bytes = scratch});
  assert_true(base > 0);
  *value = repeat('h', PROPS_MAX - slack - (size_t)base);
  e = ent_s("big", *value);
  return e;
}

static void headers_that_no_longer_fit_are_dropped(void **state) {
  (void)state;
  char *value;
  amqp_table_entry_t e[2] = {big_header(&value, 16), ent_s("trace", "t1")};
  amqp_table_t h = {.num_entries = 1, .entries = e};
  amqp_basic_properties_t orig = orig_props(&h, NULL);
  /* The original itself fits, exactly as the broker delivered it. */
  assert_int_equal(amqp_encode_properties(AMQP_BASIC_CLASS, &orig,
                                          (amqp_bytes_t){.len = PROPS_MAX, .bytes = scratch}),
                   PROPS_MAX - 16);

  wr_amqp_pub_t pub = retry_pub((char *)"n1", (char *)"1001");
  wr_amqp_copy_t c;
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_int_equal(c.dropped, WR_COPY_NO_HEADERS);
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  amqp_basic_properties_t *back;
  encode_decode(&c, &pool, &back);
  assert_null(wr_amqp_table_get(&back->headers, "big"));
  assert_non_null(wr_amqp_table_get(&back->headers, "x-warren-attempt"));
  assert_non_null(wr_amqp_table_get(&back->headers, "x-warren-user"));
  assert_true(back->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
  empty_amqp_pool(&pool);
  wr_amqp_copy_release(&c);

  /* The bound is exact: the copy with its headers fits props_max when
   * props_max is its encoded size, not one byte less. */
  h.num_entries = 2;
  e[0] = ent_s("small", "s");
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  int n = amqp_encode_properties(AMQP_BASIC_CLASS, &c.props,
                                 (amqp_bytes_t){.len = PROPS_MAX, .bytes = scratch});
  wr_amqp_copy_release(&c);
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, (size_t)n), 0);
  assert_int_equal(c.dropped, 0);
  wr_amqp_copy_release(&c);
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, (size_t)n - 1),
                   0);
  assert_int_equal(c.dropped, WR_COPY_NO_HEADERS);
  wr_amqp_copy_release(&c);
  free(value);
}

static void headers_rabbitmq_c_cannot_encode_are_dropped(void **state) {
  (void)state;
  char *key = repeat('k', 300);
  amqp_table_entry_t e[1] = {ent_s(key, "v")};
  amqp_table_t h = {.num_entries = 1, .entries = e};
  amqp_basic_properties_t orig = orig_props(&h, NULL);
  wr_amqp_pub_t pub = retry_pub((char *)"n1", NULL);
  wr_amqp_copy_t c;
  /* A key over 255 bytes: amqp_encode_table would not fail, it would write
   * a wrong length and a corrupt frame. */
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_int_equal(c.dropped, WR_COPY_NO_HEADERS);
  wr_amqp_copy_release(&c);

  e[0] = ent_s("odd", "v");
  e[0].value.kind = 'Z';
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX), 0);
  assert_int_equal(c.dropped, WR_COPY_NO_HEADERS);
  wr_amqp_copy_release(&c);
  free(key);
}

static void refused_when_even_warrens_own_do_not_fit(void **state) {
  (void)state;
  char *user = repeat('u', PROPS_MAX);
  wr_amqp_pub_t pub = retry_pub((char *)"n1", user);
  amqp_table_entry_t e[1] = {ent_s("trace", "t1")};
  amqp_table_t h = {.num_entries = 1, .entries = e};
  amqp_basic_properties_t orig = orig_props(&h, NULL);
  wr_amqp_copy_t c;
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX),
                   -EMSGSIZE);
  assert_null(c.props.headers.entries);
  orig = orig_props(NULL, NULL);
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, PROPS_MAX),
                   -EMSGSIZE);
  /* A budget that leaves no room at all (a tiny negotiated frame_max). */
  pub.user = (char *)"1001";
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "q.retry", "1000", 0, scratch, 0), -EMSGSIZE);
  free(user);
}

static void long_exchange_or_routing_key_refused(void **state) {
  (void)state;
  char *name = repeat('q', 256);
  wr_amqp_pub_t pub = retry_pub((char *)"n1", NULL);
  amqp_basic_properties_t orig = orig_props(NULL, NULL);
  wr_amqp_copy_t c;
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, name, "1000", 0, scratch, PROPS_MAX),
                   -ENAMETOOLONG);
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "", name, 0, scratch, PROPS_MAX),
                   -ENAMETOOLONG);
  name[255] = '\0';
  assert_int_equal(wr_amqp_copy_build(&c, &orig, &pub, "", name, 0, scratch, PROPS_MAX), 0);
  wr_amqp_copy_release(&c);
  free(name);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(id_of_255_bytes_is_the_message_id),
      cmocka_unit_test(id_over_255_bytes_goes_without_message_id),
      cmocka_unit_test(original_message_id_when_the_loop_gives_none),
      cmocka_unit_test(empty_key_and_original_headers_travel),
      cmocka_unit_test(headers_that_no_longer_fit_are_dropped),
      cmocka_unit_test(headers_rabbitmq_c_cannot_encode_are_dropped),
      cmocka_unit_test(refused_when_even_warrens_own_do_not_fit),
      cmocka_unit_test(long_exchange_or_routing_key_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
