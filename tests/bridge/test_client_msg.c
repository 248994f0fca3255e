/* Tests for bridge/client_msg.c: client acks and pings, JSON and MessagePack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "bridge/envelope_int.h"

static void parse_text(wr_cmsg_t *m, const char *s) {
  wr_cmsg_parse(m, (const uint8_t *)s, strlen(s), false);
}

/* Expects s to be refused with exactly the error text why. */
static void expect_invalid(const char *s, bool binary, const char *why) {
  wr_cmsg_t m;
  wr_cmsg_parse(&m, (const uint8_t *)s, strlen(s), binary);
  if (m.kind != WR_CMSG_INVALID)
    fail_msg("%s: accepted", s);
  assert_non_null(m.error);
  assert_string_equal(m.error, why);
  assert_null(m.ids);
  assert_int_equal(m.n_ids, 0);
  wr_cmsg_close(&m);
}

static void test_ack_single(void **state) {
  (void)state;
  wr_cmsg_t m;
  parse_text(&m, "{\"type\":\"ack\",\"id\":\"n-1\"}");
  assert_int_equal(m.kind, WR_CMSG_ACK);
  assert_int_equal(m.n_ids, 1);
  assert_string_equal(m.ids[0], "n-1");
  assert_null(m.error);
  wr_cmsg_close(&m);
  assert_null(m.ids);

  /* Key order and whitespace do not matter. */
  parse_text(&m, " { \"id\" : \"x\" , \"type\" : \"ack\" } ");
  assert_int_equal(m.kind, WR_CMSG_ACK);
  assert_string_equal(m.ids[0], "x");
  wr_cmsg_close(&m);
}

static void test_ack_many(void **state) {
  (void)state;
  wr_cmsg_t m;
  parse_text(&m, "{\"type\":\"ack\",\"ids\":[\"a\",\"b\",\"c\"]}");
  assert_int_equal(m.kind, WR_CMSG_ACK);
  assert_int_equal(m.n_ids, 3);
  assert_string_equal(m.ids[0], "a");
  assert_string_equal(m.ids[1], "b");
  assert_string_equal(m.ids[2], "c");
  wr_cmsg_close(&m);

  /* 1000 ids are accepted, 1001 are not. */
  for (int n = 1000; n <= 1001; n++) {
    char *buf = malloc(16 * 1002 + 64);
    size_t off = (size_t)sprintf(buf, "{\"type\":\"ack\",\"ids\":[");
    for (int i = 0; i < n; i++)
      off += (size_t)sprintf(buf + off, "%s\"id%d\"", i ? "," : "", i);
    sprintf(buf + off, "]}");
    parse_text(&m, buf);
    if (n == 1000) {
      assert_int_equal(m.kind, WR_CMSG_ACK);
      assert_int_equal(m.n_ids, 1000);
      assert_string_equal(m.ids[999], "id999");
    } else {
      assert_int_equal(m.kind, WR_CMSG_INVALID);
      assert_string_equal(m.error, "bad ids");
    }
    wr_cmsg_close(&m);
    free(buf);
  }
}

static void test_ping(void **state) {
  (void)state;
  wr_cmsg_t m;
  parse_text(&m, "{\"type\":\"ping\"}");
  assert_int_equal(m.kind, WR_CMSG_PING);
  assert_int_equal(m.n_ids, 0);
  assert_null(m.error);
  wr_cmsg_close(&m);
  parse_text(&m, "{\"type\":\"ping\",\"t\":12345}");
  assert_int_equal(m.kind, WR_CMSG_PING);
  wr_cmsg_close(&m);
}

static void test_invalid_text(void **state) {
  (void)state;
  char id257[300], buf[400];
  memset(id257, 'i', 257);
  id257[257] = '\0';

  expect_invalid("", false, "invalid json");
  expect_invalid("ping", false, "invalid json");
  expect_invalid("{\"type\":\"ping\"", false, "invalid json");
  expect_invalid("{\"type\":\"ping\"} x", false, "invalid json");
  expect_invalid("{\"type\":\"ping\",\"x\":\"\xff\"}", false, "invalid json");
  expect_invalid("[\"ping\"]", false, "not an object");
  expect_invalid("{}", false, "missing type");
  expect_invalid("{\"type\":7}", false, "missing type");
  expect_invalid("{\"type\":\"pong\"}", false, "unknown type");
  expect_invalid("{\"type\":\"ACK\",\"id\":\"a\"}", false, "unknown type");
  expect_invalid("{\"type\":\"pingx\"}", false, "unknown type");
  expect_invalid("{\"type\":\"ack\"}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"id\":\"\"}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"id\":5}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"ids\":[]}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"ids\":\"a\"}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"ids\":[\"a\",5]}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"ids\":[\"a\",\"\"]}", false, "bad ids");
  expect_invalid("{\"type\":\"ack\",\"id\":\"a\",\"ids\":[\"b\"]}", false, "bad ids");
  snprintf(buf, sizeof(buf), "{\"type\":\"ack\",\"id\":\"%s\"}", id257);
  expect_invalid(buf, false, "bad ids");
  id257[256] = '\0';
  wr_cmsg_t m;
  parse_text(&m, (snprintf(buf, sizeof(buf), "{\"type\":\"ack\",\"id\":\"%s\"}", id257), buf));
  assert_int_equal(m.kind, WR_CMSG_ACK);
  wr_cmsg_close(&m);

  /* Text sent on the binary path is not MessagePack. */
  expect_invalid("{\"type\":\"ping\"}", true, "invalid msgpack");
  /* NULL buffer. */
  wr_cmsg_parse(&m, NULL, 0, false);
  assert_int_equal(m.kind, WR_CMSG_INVALID);
  wr_cmsg_close(&m);
}

static void test_msgpack(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  wr_cmsg_t m;

  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2);
  msgpack_pack_str_with_body(&pk, "type", 4);
  msgpack_pack_str_with_body(&pk, "ack", 3);
  msgpack_pack_str_with_body(&pk, "ids", 3);
  msgpack_pack_array(&pk, 2);
  msgpack_pack_str_with_body(&pk, "p", 1);
  msgpack_pack_str_with_body(&pk, "q", 1);
  wr_cmsg_parse(&m, (const uint8_t *)sb.data, sb.size, true);
  assert_int_equal(m.kind, WR_CMSG_ACK);
  assert_int_equal(m.n_ids, 2);
  assert_string_equal(m.ids[0], "p");
  assert_string_equal(m.ids[1], "q");
  wr_cmsg_close(&m);

  /* Every prefix is truncated; none parses. */
  for (size_t i = 0; i < sb.size; i++) {
    wr_cmsg_parse(&m, (const uint8_t *)sb.data, i, true);
    assert_int_equal(m.kind, WR_CMSG_INVALID);
    assert_string_equal(m.error, "invalid msgpack");
    wr_cmsg_close(&m);
  }
  /* The same bytes on the text path are not JSON. */
  wr_cmsg_parse(&m, (const uint8_t *)sb.data, sb.size, false);
  assert_int_equal(m.kind, WR_CMSG_INVALID);
  assert_string_equal(m.error, "invalid json");
  wr_cmsg_close(&m);
  msgpack_sbuffer_destroy(&sb);

  const uint8_t ping[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'i', 'n', 'g'};
  wr_cmsg_parse(&m, ping, sizeof(ping), true);
  assert_int_equal(m.kind, WR_CMSG_PING);
  wr_cmsg_close(&m);

  const uint8_t arr[] = {0x91, 0xa4, 'p', 'i', 'n', 'g'};
  wr_cmsg_parse(&m, arr, sizeof(arr), true);
  assert_int_equal(m.kind, WR_CMSG_INVALID);
  assert_string_equal(m.error, "not an object");
  wr_cmsg_close(&m);

  /* Binary id (bin 8) is refused. */
  const uint8_t bin[] = {0x82, 0xa4, 't',  'y', 'p', 'e',  0xa3, 'a',
                         'c',  'k',  0xa2, 'i', 'd', 0xc4, 0x01, 'x'};
  wr_cmsg_parse(&m, bin, sizeof(bin), true);
  assert_int_equal(m.kind, WR_CMSG_INVALID);
  assert_string_equal(m.error, "invalid msgpack");
  wr_cmsg_close(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ack_single), cmocka_unit_test(test_ack_many),
      cmocka_unit_test(test_ping),       cmocka_unit_test(test_invalid_text),
      cmocka_unit_test(test_msgpack),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
