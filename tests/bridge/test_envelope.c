/* Tests for bridge/envelope.c. MessagePack bodies are built with msgpack-c's
 * packer directly, so decoding is checked against an independent encoder. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "bridge/envelope_int.h"

#define MAX_BODY 65536
#define BASE_MS 1700000000000LL

static wr_env_result_t dec_ct(wr_envelope_t *env, const char *body, const char *ct) {
  return wr_envelope_decode(env, (const uint8_t *)body, strlen(body), ct, NULL, MAX_BODY, BASE_MS);
}

static wr_env_result_t dec(wr_envelope_t *env, const char *body) {
  return dec_ct(env, body, "application/json");
}

/* The client message as a tree, whichever way the decoder kept it (the
 * fast path keeps compact JSON text). Borrowed until the next call. */
static json_t *tree(const wr_envelope_t *env) {
  static json_t *last;
  json_decref(last);
  if (env->client != NULL)
    last = json_incref(env->client);
  else
    last = json_loadb((const char *)env->client_json, env->client_json_len, 0, NULL);
  assert_non_null(last);
  return last;
}

/* Decodes body as JSON and expects reason r; checks env holds nothing. */
static void expect_json(const char *body, wr_env_result_t r) {
  wr_envelope_t env;
  wr_env_result_t got = dec(&env, body);
  if (got != r)
    fail_msg("body %s: got %s, want %s", body, wr_env_result_str(got), wr_env_result_str(r));
  if (r != WR_ENV_OK) {
    assert_null(env.id);
    assert_null(env.client);
    assert_null(env.client_json);
    assert_null(env.users);
    assert_int_equal(env.n_users, 0);
  }
  wr_envelope_close(&env);
}

static char *encode_json(const wr_envelope_t *env) {
  uint8_t *out = NULL;
  size_t len = 0;
  assert_int_equal(wr_envelope_encode(env, WR_ENV_JSON, 0, &out, &len), 0);
  char *s = malloc(len + 1);
  memcpy(s, out, len);
  s[len] = '\0';
  free(out);
  return s;
}

/* A growable msgpack body built with msgpack-c's packer. */
typedef struct {
  msgpack_sbuffer sb;
  msgpack_packer pk;
} mp_t;

static void mp_init(mp_t *m) {
  msgpack_sbuffer_init(&m->sb);
  msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(mp_t *m, const char *s) {
  msgpack_pack_str(&m->pk, strlen(s));
  msgpack_pack_str_body(&m->pk, s, strlen(s));
}

static wr_env_result_t mp_dec(mp_t *m, wr_envelope_t *env, const char *ct) {
  return wr_envelope_decode(env, (const uint8_t *)m->sb.data, m->sb.size, ct, NULL, MAX_BODY,
                            BASE_MS);
}

static void test_json_targets(void **state) {
  (void)state;
  wr_envelope_t env;

  assert_int_equal(dec(&env, "{\"user_id\":\"1001\",\"title\":\"hi\"}"), WR_ENV_OK);
  assert_int_equal(env.format, WR_ENV_JSON);
  assert_int_equal(env.n_users, 1);
  assert_string_equal(env.users[0], "1001");
  assert_false(env.broadcast);
  assert_int_equal(env.expires_at_ms, 0);
  wr_envelope_close(&env);

  assert_int_equal(dec(&env, "{\"user_ids\":[\"b\",\"a\",\"b\",3,\"3\",\"a\"]}"), WR_ENV_OK);
  assert_int_equal(env.n_users, 3);
  assert_string_equal(env.users[0], "b");
  assert_string_equal(env.users[1], "a");
  assert_string_equal(env.users[2], "3");
  wr_envelope_close(&env);

  /* user_id and user_ids together: the union, deduplicated. */
  assert_int_equal(dec(&env, "{\"user_id\":\"x\",\"user_ids\":[\"y\",\"x\"]}"), WR_ENV_OK);
  assert_int_equal(env.n_users, 2);
  assert_string_equal(env.users[0], "x");
  assert_string_equal(env.users[1], "y");
  wr_envelope_close(&env);

  assert_int_equal(dec(&env, "{\"broadcast\":true,\"title\":\"all\"}"), WR_ENV_OK);
  assert_true(env.broadcast);
  assert_int_equal(env.n_users, 0);
  wr_envelope_close(&env);

  /* Broadcast wins over users. */
  assert_int_equal(dec(&env, "{\"broadcast\":true,\"user_ids\":[\"a\",\"b\"]}"), WR_ENV_OK);
  assert_true(env.broadcast);
  assert_int_equal(env.n_users, 0);
  assert_null(env.users);
  wr_envelope_close(&env);

  assert_int_equal(dec(&env, "{\"broadcast\":false,\"user_id\":\"a\"}"), WR_ENV_OK);
  assert_false(env.broadcast);
  assert_int_equal(env.n_users, 1);
  wr_envelope_close(&env);

  expect_json("{\"broadcast\":false}", WR_ENV_NO_TARGET);
  expect_json("{\"title\":\"nobody\"}", WR_ENV_NO_TARGET);
  expect_json("{}", WR_ENV_NO_TARGET);
}

static void test_int_user_ids(void **state) {
  (void)state;
  wr_envelope_t env;
  assert_int_equal(dec(&env, "{\"user_id\":1001}"), WR_ENV_OK);
  assert_string_equal(env.users[0], "1001");
  wr_envelope_close(&env);
  assert_int_equal(dec(&env, "{\"user_ids\":[-5,9223372036854775807,0]}"), WR_ENV_OK);
  assert_int_equal(env.n_users, 3);
  assert_string_equal(env.users[0], "-5");
  assert_string_equal(env.users[1], "9223372036854775807");
  assert_string_equal(env.users[2], "0");
  wr_envelope_close(&env);
}

static void test_user_id_limits(void **state) {
  (void)state;
  char body[12 * 10001 + 64];
  char id[300];
  memset(id, 'u', 256);
  id[256] = '\0';
  snprintf(body, sizeof(body), "{\"user_id\":\"%s\"}", id);
  expect_json(body, WR_ENV_OK);
  id[256] = 'u';
  id[257] = '\0';
  snprintf(body, sizeof(body), "{\"user_id\":\"%s\"}", id);
  expect_json(body, WR_ENV_BAD_FIELD);

  expect_json("{\"user_id\":\"\"}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_id\":1.5}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_id\":null}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_id\":[\"a\"]}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_id\":\"a\\nb\"}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_ids\":[]}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_ids\":\"a\"}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_ids\":[\"a\",null]}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_ids\":[\"a\",\"\"]}", WR_ENV_BAD_FIELD);
  expect_json("{\"user_ids\":[[\"a\"]]}", WR_ENV_BAD_FIELD);
  /* A malformed user field is refused even when broadcast=true. */
  expect_json("{\"broadcast\":true,\"user_ids\":7}", WR_ENV_BAD_FIELD);

  /* 10000 entries are fine, 10001 are not. */
  for (int n = 10000; n <= 10001; n++) {
    size_t off = (size_t)snprintf(body, sizeof(body), "{\"user_ids\":[");
    for (int i = 0; i < n; i++)
      off += (size_t)snprintf(body + off, sizeof(body) - off, "%s%d", i ? "," : "", i);
    snprintf(body + off, sizeof(body) - off, "]}");
    wr_envelope_t env;
    wr_env_result_t r = wr_envelope_decode(&env, (const uint8_t *)body, strlen(body), NULL, NULL,
                                           sizeof(body), BASE_MS);
    if (n == 10000) {
      assert_int_equal(r, WR_ENV_OK);
      assert_int_equal(env.n_users, 10000);
      assert_string_equal(env.users[9999], "9999");
    } else {
      assert_int_equal(r, WR_ENV_BAD_FIELD);
    }
    wr_envelope_close(&env);
  }
}

static void test_msgpack_targets(void **state) {
  (void)state;
  wr_envelope_t env;
  mp_t m;

  mp_init(&m);
  msgpack_pack_map(&m.pk, 2);
  mp_str(&m, "user_id");
  msgpack_pack_int(&m.pk, 42);
  mp_str(&m, "title");
  mp_str(&m, "caf\xc3\xa9");
  assert_int_equal(mp_dec(&m, &env, "application/msgpack"), WR_ENV_OK);
  assert_int_equal(env.format, WR_ENV_MSGPACK);
  assert_int_equal(env.n_users, 1);
  assert_string_equal(env.users[0], "42");
  wr_envelope_close(&env);
  /* Same body, no content type: the map marker decides. */
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  assert_int_equal(env.format, WR_ENV_MSGPACK);
  wr_envelope_close(&env);
  assert_int_equal(mp_dec(&m, &env, "application/x-msgpack"), WR_ENV_OK);
  wr_envelope_close(&env);
  msgpack_sbuffer_destroy(&m.sb);

  mp_init(&m);
  msgpack_pack_map(&m.pk, 1);
  mp_str(&m, "user_ids");
  msgpack_pack_array(&m.pk, 3);
  mp_str(&m, "7");
  msgpack_pack_int(&m.pk, 7);
  mp_str(&m, "8");
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  assert_int_equal(env.n_users, 2);
  assert_string_equal(env.users[0], "7");
  assert_string_equal(env.users[1], "8");
  wr_envelope_close(&env);
  msgpack_sbuffer_destroy(&m.sb);

  mp_init(&m);
  msgpack_pack_map(&m.pk, 1);
  mp_str(&m, "broadcast");
  msgpack_pack_true(&m.pk);
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  assert_true(env.broadcast);
  wr_envelope_close(&env);
  msgpack_sbuffer_destroy(&m.sb);

  mp_init(&m);
  msgpack_pack_map(&m.pk, 1);
  mp_str(&m, "title");
  mp_str(&m, "x");
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_NO_TARGET);
  msgpack_sbuffer_destroy(&m.sb);
}

static void test_content_type(void **state) {
  (void)state;
  wr_envelope_t env;
  const char *json = "{\"user_id\":\"a\"}";

  const char *json_ok[] = {"application/json",
                           "application/json; charset=utf-8",
                           "Application/JSON",
                           " application/json ;charset=UTF-8",
                           NULL,
                           ""};
  for (size_t i = 0; i < sizeof(json_ok) / sizeof(json_ok[0]); i++) {
    assert_int_equal(dec_ct(&env, json, json_ok[i]), WR_ENV_OK);
    assert_int_equal(env.format, WR_ENV_JSON);
    wr_envelope_close(&env);
  }
  const char *bad_ct[] = {"text/plain", "application/jsonx", "application/json5", "application/xml",
                          "application/msgpackx"};
  for (size_t i = 0; i < sizeof(bad_ct) / sizeof(bad_ct[0]); i++)
    assert_int_equal(dec_ct(&env, json, bad_ct[i]), WR_ENV_BAD_FORMAT);

  /* Sniffing: leading JSON whitespace is allowed before '{'. */
  assert_int_equal(dec_ct(&env, " \r\n\t{\"user_id\":\"a\"}", NULL), WR_ENV_OK);
  wr_envelope_close(&env);
  assert_int_equal(dec_ct(&env, "[{\"user_id\":\"a\"}]", NULL), WR_ENV_BAD_FORMAT);
  assert_int_equal(dec_ct(&env, "x{}", NULL), WR_ENV_BAD_FORMAT);
  assert_int_equal(dec_ct(&env, "   ", NULL), WR_ENV_BAD_FORMAT);
  assert_int_equal(dec_ct(&env, "", NULL), WR_ENV_BAD_FORMAT);
  /* An array marker is not a map marker. */
  const uint8_t arr[] = {0x91, 0x01};
  assert_int_equal(wr_envelope_decode(&env, arr, sizeof(arr), NULL, NULL, MAX_BODY, 0),
                   WR_ENV_BAD_FORMAT);

  /* The content type wins over the first byte. */
  assert_int_equal(dec_ct(&env, json, "application/msgpack"), WR_ENV_BAD_MSGPACK);
  const uint8_t map[] = {0x81, 0xa7, 'u', 's', 'e', 'r', '_', 'i', 'd', 0xa1, 'a'};
  assert_int_equal(
      wr_envelope_decode(&env, map, sizeof(map), "application/json", NULL, MAX_BODY, 0),
      WR_ENV_BAD_JSON);
  assert_int_equal(wr_envelope_decode(&env, map, sizeof(map), NULL, NULL, MAX_BODY, 0), WR_ENV_OK);
  wr_envelope_close(&env);
}

static void test_ids(void **state) {
  (void)state;
  wr_envelope_t env;
  const char *body = "{\"user_id\":\"a\"}";

  assert_int_equal(
      wr_envelope_decode(&env, (const uint8_t *)body, strlen(body), NULL, "amqp-7", MAX_BODY, 0),
      WR_ENV_OK);
  assert_string_equal(env.id, "amqp-7");
  assert_string_equal(json_string_value(json_object_get(tree(&env), "id")), "amqp-7");
  wr_envelope_close(&env);

  body = "{\"user_id\":\"a\",\"id\":\"own\"}";
  assert_int_equal(
      wr_envelope_decode(&env, (const uint8_t *)body, strlen(body), NULL, "amqp-7", MAX_BODY, 0),
      WR_ENV_OK);
  assert_string_equal(env.id, "own");
  wr_envelope_close(&env);

  /* Generated ids: wr-<16 hex>-<counter>, unique, same prefix. */
  body = "{\"user_id\":\"a\"}";
  enum { N = 2000 };
  char **ids = calloc(N, sizeof(char *));
  for (int i = 0; i < N; i++) {
    assert_int_equal(wr_envelope_decode(&env, (const uint8_t *)body, strlen(body), NULL,
                                        i % 2 ? "" : NULL, MAX_BODY, 0),
                     WR_ENV_OK);
    ids[i] = strdup(env.id);
    wr_envelope_close(&env);
    assert_int_equal(strncmp(ids[i], "wr-", 3), 0);
    assert_int_equal(ids[i][19], '-');
    for (int k = 3; k < 19; k++)
      assert_non_null(strchr("0123456789abcdef", ids[i][k]));
    assert_int_equal(strncmp(ids[i], ids[0], 20), 0);
  }
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      assert_string_not_equal(ids[i], ids[j]);
  for (int i = 0; i < N; i++)
    free(ids[i]);
  free(ids);

  char big[400];
  memset(big, 'i', 256);
  big[256] = '\0';
  char b2[600];
  snprintf(b2, sizeof(b2), "{\"user_id\":\"a\",\"id\":\"%s\"}", big);
  expect_json(b2, WR_ENV_OK);
  big[256] = 'i';
  big[257] = '\0';
  snprintf(b2, sizeof(b2), "{\"user_id\":\"a\",\"id\":\"%s\"}", big);
  expect_json(b2, WR_ENV_BAD_FIELD);
}

static void test_client_object(void **state) {
  (void)state;
  wr_envelope_t env;
  assert_int_equal(dec(&env,
                       "{\"title\":\"T\",\"user_ids\":[\"1\",\"2\"],\"content\":\"Caf\xc3\xa9\","
                       "\"ttl_ms\":5,\"type\":\"order.paid\",\"data\":{\"z\":1,\"a\":[1,2.5,"
                       "null,true,false]},\"id\":\"n1\",\"expires_at\":1795400000,"
                       "\"broadcast\":false,\"user_id\":\"3\",\"z\":\"last\"}"),
                   WR_ENV_OK);
  char *s = encode_json(&env);
  assert_string_equal(s, "{\"type\":\"order.paid\",\"id\":\"n1\",\"title\":\"T\",\"content\":"
                         "\"Caf\xc3\xa9\",\"data\":{\"z\":1,\"a\":[1,2.5,null,true,false]},"
                         "\"z\":\"last\"}");
  free(s);

  /* The prefix is reserved in front of the same bytes. */
  uint8_t *out;
  size_t len;
  assert_int_equal(wr_envelope_encode(&env, WR_ENV_JSON, 10, &out, &len), 0);
  assert_int_equal(len, 10 + strlen("{\"type\":\"order.paid\",\"id\":\"n1\",\"title\":\"T\","
                                    "\"content\":\"Caf\xc3\xa9\",\"data\":{\"z\":1,\"a\":[1,2.5,"
                                    "null,true,false]},\"z\":\"last\"}"));
  assert_memory_equal(out + 10, "{\"type\":\"order.paid\"", 20);
  free(out);
  assert_int_equal(wr_envelope_encode(&env, (wr_env_format_t)7, 0, &out, &len), -EINVAL);
  wr_envelope_close(&env);

  /* Defaults: type "notification", id generated, nothing else. */
  assert_int_equal(dec(&env, "{\"broadcast\":true}"), WR_ENV_OK);
  s = encode_json(&env);
  char want[128];
  snprintf(want, sizeof(want), "{\"type\":\"notification\",\"id\":\"%s\"}", env.id);
  assert_string_equal(s, want);
  free(s);
  wr_envelope_close(&env);

  /* Duplicate keys: the last value stays. */
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"title\":1,\"title\":2}"), WR_ENV_OK);
  assert_int_equal(json_integer_value(json_object_get(tree(&env), "title")), 2);
  wr_envelope_close(&env);
}

static void check_mp_str(const msgpack_object *o, const char *want) {
  assert_int_equal(o->type, MSGPACK_OBJECT_STR);
  assert_int_equal(o->via.str.size, strlen(want));
  assert_memory_equal(o->via.str.ptr, want, strlen(want));
}

static void test_msgpack_encode(void **state) {
  (void)state;
  wr_envelope_t env;
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"id\":\"m1\",\"n\":-3,\"big\":300000,"
                             "\"r\":0.25,\"s\":\"x\",\"nil\":null,\"t\":true,\"f\":false,"
                             "\"arr\":[1,\"two\"],\"obj\":{\"k\":\"v\"}}"),
                   WR_ENV_OK);
  for (size_t prefix = 0; prefix <= 14; prefix += 14) {
    uint8_t *out;
    size_t len, off = 0;
    assert_int_equal(wr_envelope_encode(&env, WR_ENV_MSGPACK, prefix, &out, &len), 0);
    assert_true(len > prefix);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, (const char *)out + prefix, len - prefix, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len - prefix);
    const msgpack_object *o = &up.data;
    assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o->via.map.size, 11);
    const msgpack_object_kv *kv = o->via.map.ptr;
    check_mp_str(&kv[0].key, "type");
    check_mp_str(&kv[0].val, "notification");
    check_mp_str(&kv[1].key, "id");
    check_mp_str(&kv[1].val, "m1");
    check_mp_str(&kv[2].key, "n");
    assert_int_equal(kv[2].val.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(kv[2].val.via.i64, -3);
    check_mp_str(&kv[3].key, "big");
    assert_int_equal(kv[3].val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(kv[3].val.via.u64, 300000);
    check_mp_str(&kv[4].key, "r");
    assert_int_equal(kv[4].val.type, MSGPACK_OBJECT_FLOAT64);
    assert_true(kv[4].val.via.f64 == 0.25);
    check_mp_str(&kv[5].val, "x");
    assert_int_equal(kv[6].val.type, MSGPACK_OBJECT_NIL);
    assert_int_equal(kv[7].val.type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(kv[7].val.via.boolean);
    assert_false(kv[8].val.via.boolean);
    check_mp_str(&kv[9].key, "arr");
    assert_int_equal(kv[9].val.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(kv[9].val.via.array.size, 2);
    check_mp_str(&kv[9].val.via.array.ptr[1], "two");
    check_mp_str(&kv[10].key, "obj");
    assert_int_equal(kv[10].val.type, MSGPACK_OBJECT_MAP);
    check_mp_str(&kv[10].val.via.map.ptr[0].val, "v");
    msgpack_unpacked_destroy(&up);

    /* And our own decoder reads it back to the same tree. */
    json_t *back = wr_msgpack_to_json(out + prefix, len - prefix);
    assert_non_null(back);
    assert_true(json_equal(back, tree(&env)));
    json_decref(back);
    free(out);
  }
  wr_envelope_close(&env);

  /* wr_msgpack_from_json on a plain value (welcome/pong use it). */
  json_t *pong = json_pack("{s:s}", "type", "pong");
  uint8_t *out;
  size_t len;
  assert_int_equal(wr_msgpack_from_json(pong, &out, &len), 0);
  const uint8_t want[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'o', 'n', 'g'};
  assert_int_equal(len, sizeof(want));
  assert_memory_equal(out, want, sizeof(want));
  free(out);
  json_decref(pong);
}

static void test_msgpack_values(void **state) {
  (void)state;
  mp_t m;
  mp_init(&m);
  msgpack_pack_map(&m.pk, 6);
  mp_str(&m, "user_id");
  mp_str(&m, "u");
  mp_str(&m, ""); /* empty key and empty value are valid */
  mp_str(&m, "");
  mp_str(&m, "empty");
  msgpack_pack_array(&m.pk, 0);
  mp_str(&m, "huge");
  msgpack_pack_uint64(&m.pk, UINT64_MAX);
  mp_str(&m, "f32");
  msgpack_pack_float(&m.pk, 1.5f);
  mp_str(&m, "neg");
  msgpack_pack_int64(&m.pk, INT64_MIN);
  wr_envelope_t env;
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  /* A uint64 beyond int64 stays exact (a bignum: jansson has no such integer). */
  size_t n;
  const char *huge = wr_json_bignum_digits(json_object_get(tree(&env), "huge"), &n);
  assert_non_null(huge);
  assert_int_equal(n, 20);
  assert_memory_equal(huge, "18446744073709551615", 20);
  assert_true(json_real_value(json_object_get(tree(&env), "f32")) == 1.5);
  assert_true(json_integer_value(json_object_get(tree(&env), "neg")) == INT64_MIN);
  assert_string_equal(json_string_value(json_object_get(tree(&env), "")), "");
  assert_int_equal(json_array_size(json_object_get(tree(&env), "empty")), 0);
  wr_envelope_close(&env);
  msgpack_sbuffer_destroy(&m.sb);
}

static void expect_mp(const uint8_t *b, size_t n, wr_env_result_t r) {
  wr_envelope_t env;
  assert_int_equal(wr_envelope_decode(&env, b, n, "application/msgpack", NULL, MAX_BODY, 0), r);
  wr_envelope_close(&env);
}

static void test_bad_json(void **state) {
  (void)state;
  expect_json("{\"user_id\":\"a\"", WR_ENV_BAD_JSON);
  expect_json("{\"user_id\":\"a\",}", WR_ENV_BAD_JSON);
  expect_json("{user_id:\"a\"}", WR_ENV_BAD_JSON);
  expect_json("{\"user_id\":\"\xff\"}", WR_ENV_BAD_JSON);
  expect_json("{\"user_id\":\"a\",\"t\":\"\xc3\"}", WR_ENV_BAD_JSON);
  expect_json("{\"user_id\":\"a\"}x", WR_ENV_BAD_JSON);
  expect_json("{\"user_id\":\"a\"}{}", WR_ENV_BAD_JSON);
  expect_json("[{\"user_id\":\"a\"}]", WR_ENV_BAD_JSON);
  expect_json("\"user\"", WR_ENV_BAD_JSON);
  expect_json("", WR_ENV_BAD_JSON);
  /* \u0000 is valid JSON, but jansson's keys (and ours) are C strings. */
  expect_json("{\"user_id\":\"a\",\"k\\u0000\":1}", WR_ENV_BAD_JSON);
  expect_json("{\"user_id\":\"a\",\"d\":{\"\\u0000\":1}}", WR_ENV_BAD_JSON);
  /* Trailing whitespace is still one JSON text. */
  expect_json("{\"user_id\":\"a\"} \n", WR_ENV_OK);

  /* An embedded NUL byte ends nothing early: the whole length is parsed. */
  wr_envelope_t env;
  const char nul[] = "{\"user_id\":\"a\"}\0{}";
  assert_int_equal(
      wr_envelope_decode(&env, (const uint8_t *)nul, sizeof(nul) - 1, NULL, NULL, MAX_BODY, 0),
      WR_ENV_BAD_JSON);
}

static void nest_json(char *buf, int depth) {
  size_t off = (size_t)sprintf(buf, "{\"user_id\":\"a\",\"d\":");
  for (int i = 1; i < depth - 1; i++)
    off += (size_t)sprintf(buf + off, "[");
  off += (size_t)sprintf(buf + off, "{}");
  for (int i = 1; i < depth - 1; i++)
    off += (size_t)sprintf(buf + off, "]");
  sprintf(buf + off, "}");
}

static void test_depth(void **state) {
  (void)state;
  char buf[512];
  nest_json(buf, 32); /* root object + 30 arrays + innermost object */
  expect_json(buf, WR_ENV_OK);
  nest_json(buf, 33);
  expect_json(buf, WR_ENV_BAD_JSON);
  nest_json(buf, 200);
  expect_json(buf, WR_ENV_BAD_JSON);

  for (int depth = 32; depth <= 34; depth++) {
    mp_t m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_str(&m, "user_id");
    mp_str(&m, "a");
    mp_str(&m, "d");
    for (int i = 1; i < depth; i++)
      msgpack_pack_array(&m.pk, 1);
    msgpack_pack_int(&m.pk, 1);
    wr_envelope_t env;
    assert_int_equal(mp_dec(&m, &env, NULL), depth == 32 ? WR_ENV_OK : WR_ENV_BAD_MSGPACK);
    wr_envelope_close(&env);
    msgpack_sbuffer_destroy(&m.sb);
  }
}

static void test_bad_msgpack(void **state) {
  (void)state;
  mp_t m;
  mp_init(&m);
  msgpack_pack_map(&m.pk, 3);
  mp_str(&m, "user_ids");
  msgpack_pack_array(&m.pk, 2);
  mp_str(&m, "a");
  msgpack_pack_uint32(&m.pk, 70000);
  mp_str(&m, "data");
  msgpack_pack_map(&m.pk, 1);
  mp_str(&m, "pi");
  msgpack_pack_double(&m.pk, 3.14);
  mp_str(&m, "title");
  msgpack_pack_str(&m.pk, 40);
  msgpack_pack_str_body(&m.pk, "0123456789012345678901234567890123456789", 40);
  const uint8_t *b = (const uint8_t *)m.sb.data;
  size_t n = m.sb.size;

  expect_mp(b, n, WR_ENV_OK);
  /* Every strict prefix is truncated input. */
  for (size_t i = 0; i < n; i++)
    expect_mp(b, i, WR_ENV_BAD_MSGPACK);
  /* Trailing bytes. */
  uint8_t *more = malloc(n + 1);
  memcpy(more, b, n);
  more[n] = 0xc0;
  expect_mp(more, n + 1, WR_ENV_BAD_MSGPACK);
  free(more);
  msgpack_sbuffer_destroy(&m.sb);

  /* bin and ext values, a non-string key, the never-used 0xc1 byte. */
  const uint8_t bin[] = {0x82, 0xa7, 'u',  's', 'e',  'r',  '_', 'i', 'd',
                         0xa1, 'a',  0xa1, 'b', 0xc4, 0x02, 'h', 'i'};
  expect_mp(bin, sizeof(bin), WR_ENV_BAD_MSGPACK);
  const uint8_t ext[] = {0x82, 0xa7, 'u', 's',  'e', 'r',  '_',  'i',
                         'd',  0xa1, 'a', 0xa1, 'e', 0xd4, 0x01, 0x00};
  expect_mp(ext, sizeof(ext), WR_ENV_BAD_MSGPACK);
  const uint8_t tstamp[] = {0x82, 0xa7, 'u', 's',  'e',  'r', '_', 'i', 'd', 0xa1,
                            'a',  0xa1, 't', 0xd6, 0xff, 0,   0,   0,   1};
  expect_mp(tstamp, sizeof(tstamp), WR_ENV_BAD_MSGPACK);
  const uint8_t intkey[] = {0x82, 0xa7, 'u', 's', 'e', 'r', '_', 'i', 'd', 0xa1, 'a', 0x01, 0x02};
  expect_mp(intkey, sizeof(intkey), WR_ENV_BAD_MSGPACK);
  const uint8_t c1[] = {0x82, 0xa7, 'u', 's', 'e', 'r', '_', 'i', 'd', 0xa1, 'a', 0xa1, 'x', 0xc1};
  expect_mp(c1, sizeof(c1), WR_ENV_BAD_MSGPACK);
  /* Invalid UTF-8 in a value and in a key; a NUL inside a string. */
  const uint8_t badutf[] = {0x81, 0xa7, 'u', 's', 'e', 'r', '_', 'i', 'd', 0xa2, 0xc3, 0x28};
  expect_mp(badutf, sizeof(badutf), WR_ENV_BAD_MSGPACK);
  const uint8_t badkey[] = {0x82, 0xa7, 'u',  's', 'e',  'r',  '_',
                            'i',  'd',  0xa1, 'a', 0xa1, 0xff, 0xc0};
  expect_mp(badkey, sizeof(badkey), WR_ENV_BAD_MSGPACK);
  /* A NUL in a key is refused, as \u0000 in a JSON key; in a user id it is a
   * bad field (ids are C strings); in any other string it passes. */
  const uint8_t nulkey[] = {0x82, 0xa7, 'u', 's',  'e', 'r', '_', 'i',
                            'd',  0xa1, 'a', 0xa2, 'k', 0,   0xc0};
  expect_mp(nulkey, sizeof(nulkey), WR_ENV_BAD_MSGPACK);
  const uint8_t nul[] = {0x81, 0xa7, 'u', 's', 'e', 'r', '_', 'i', 'd', 0xa3, 'a', 0, 'b'};
  expect_mp(nul, sizeof(nul), WR_ENV_BAD_FIELD);
  /* Top level is not a map (content type given, so format is msgpack). */
  const uint8_t arr[] = {0x91, 0x81, 0xa1, 'a', 0xa1, 'b'};
  expect_mp(arr, sizeof(arr), WR_ENV_BAD_MSGPACK);
  const uint8_t scalar[] = {0x05};
  expect_mp(scalar, sizeof(scalar), WR_ENV_BAD_MSGPACK);
  /* NaN has no JSON form. */
  const uint8_t nan[] = {0x82, 0xa7, 'u',  's',  'e',  'r', '_', 'i', 'd', 0xa1, 'a',
                         0xa1, 'n',  0xcb, 0x7f, 0xf8, 0,   0,   0,   0,   0,    0};
  expect_mp(nan, sizeof(nan), WR_ENV_BAD_MSGPACK);
  /* Declared sizes far beyond the body: refused without reserving memory. */
  const uint8_t hugearr[] = {0x81, 0xa1, 'd', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0};
  expect_mp(hugearr, sizeof(hugearr), WR_ENV_BAD_MSGPACK);
  const uint8_t hugemap[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a', 0xc0};
  expect_mp(hugemap, sizeof(hugemap), WR_ENV_BAD_MSGPACK);
  const uint8_t hugestr[] = {0x81, 0xa1, 'd', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'};
  expect_mp(hugestr, sizeof(hugestr), WR_ENV_BAD_MSGPACK);
  expect_mp((const uint8_t *)"", 0, WR_ENV_BAD_MSGPACK);
}

static void test_too_large(void **state) {
  (void)state;
  wr_envelope_t env;
  const char *body = "{\"user_id\":\"a\"}";
  size_t n = strlen(body);
  assert_int_equal(wr_envelope_decode(&env, (const uint8_t *)body, n, NULL, NULL, n, 0), WR_ENV_OK);
  wr_envelope_close(&env);
  assert_int_equal(wr_envelope_decode(&env, (const uint8_t *)body, n, NULL, NULL, n - 1, 0),
                   WR_ENV_TOO_LARGE);
  /* Size is checked before anything else, even the format. */
  assert_int_equal(
      wr_envelope_decode(&env, (const uint8_t *)"garbage!", 8, "text/plain", NULL, 4, 0),
      WR_ENV_TOO_LARGE);
}

static void test_bad_fields(void **state) {
  (void)state;
  const char *bad[] = {
      "{\"user_id\":\"a\",\"id\":5}",
      "{\"user_id\":\"a\",\"id\":\"\"}",
      "{\"user_id\":\"a\",\"id\":null}",
      "{\"user_id\":\"a\",\"type\":5}",
      "{\"user_id\":\"a\",\"type\":\"\"}",
      "{\"user_id\":\"a\",\"type\":{}}",
      "{\"user_id\":\"a\",\"broadcast\":\"yes\"}",
      "{\"user_id\":\"a\",\"broadcast\":1}",
      "{\"user_id\":\"a\",\"expires_at\":\"2026-01-01\"}",
      "{\"user_id\":\"a\",\"expires_at\":-1}",
      "{\"user_id\":\"a\",\"ttl_ms\":-1}",
      "{\"user_id\":\"a\",\"ttl_ms\":1.5}",
      "{\"user_id\":\"a\",\"ttl_ms\":\"60000\"}",
      "{\"user_id\":\"a\",\"ttl_ms\":null}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_json(bad[i], WR_ENV_BAD_FIELD);
}

static void test_expiry(void **state) {
  (void)state;
  wr_envelope_t env;
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"ttl_ms\":60000}"), WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, BASE_MS + 60000);
  assert_null(json_object_get(tree(&env), "ttl_ms"));
  wr_envelope_close(&env);
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"expires_at\":1795400000}"), WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, 1795400000000LL);
  assert_null(json_object_get(tree(&env), "expires_at"));
  wr_envelope_close(&env);
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"expires_at\":1795400000.25}"), WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, 1795400000250LL);
  wr_envelope_close(&env);
  /* Both: the earlier deadline. */
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"expires_at\":1795400000,\"ttl_ms\":1000}"),
                   WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, BASE_MS + 1000);
  wr_envelope_close(&env);
  /* Saturates instead of overflowing. */
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"ttl_ms\":9223372036854775807}"), WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, INT64_MAX);
  wr_envelope_close(&env);
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"expires_at\":1e300}"), WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, INT64_MAX);
  wr_envelope_close(&env);
  assert_int_equal(dec(&env, "{\"user_id\":\"a\"}"), WR_ENV_OK);
  assert_int_equal(env.expires_at_ms, 0);
  wr_envelope_close(&env);
}

/* The deadline of body from the fast path and from the full decoder alone,
 * which must agree; returns it, or -1 when both refuse the body as bad_field.
 * fast_taken tells whether the fast path decided the body itself. */
static int64_t deadline_both(const char *body, int64_t base_ms, bool *fast_taken) {
  wr_envelope_t fast, full;
  wr_env_result_t rf = wr_envelope_decode(&fast, (const uint8_t *)body, strlen(body),
                                          "application/json", NULL, MAX_BODY, base_ms);
  wr_env_result_t rr = wr_envelope_decode_full(&full, (const uint8_t *)body, strlen(body),
                                               "application/json", NULL, MAX_BODY, base_ms);
  if (rf != rr)
    fail_msg("%s: fast %s, full %s", body, wr_env_result_str(rf), wr_env_result_str(rr));
  if (rf != WR_ENV_OK) {
    assert_int_equal(rf, WR_ENV_BAD_FIELD);
    return -1;
  }
  if (fast.expires_at_ms != full.expires_at_ms)
    fail_msg("%s: fast %lld, full %lld", body, (long long)fast.expires_at_ms,
             (long long)full.expires_at_ms);
  if (fast_taken != NULL)
    *fast_taken = fast.client_json != NULL;
  int64_t at = fast.expires_at_ms;
  wr_envelope_close(&fast);
  wr_envelope_close(&full);
  return at;
}

/* A deadline past what int64 ms can hold saturates to INT64_MAX (never in
 * practice) on both paths, whatever the size of the number: no overflow
 * (UBSan would abort this test), no refusal. */
static void test_expiry_overflow(void **state) {
  (void)state;
  static const struct {
    const char *body;
    int64_t base_ms, want;
  } cases[] = {
      {"{\"user_id\":\"a\",\"expires_at\":1e300}", BASE_MS, INT64_MAX},
      {"{\"user_id\":\"a\",\"expires_at\":1.7976931348623157e308}", BASE_MS, INT64_MAX},
      {"{\"user_id\":\"a\",\"expires_at\":9223372036854775807}", BASE_MS, INT64_MAX},
      {"{\"user_id\":\"a\",\"expires_at\":9223372036854775.807}", BASE_MS, INT64_MAX},
      {"{\"user_id\":\"a\",\"expires_at\":9223372036854775}", BASE_MS, INT64_MAX},
      {"{\"user_id\":\"a\",\"expires_at\":4503599627370.496}", BASE_MS, 4503599627370496},
      {"{\"user_id\":\"a\",\"expires_at\":9007199254740.993}", BASE_MS, 9007199254740992},
      {"{\"user_id\":\"a\",\"ttl_ms\":9223372036854775807}", BASE_MS, INT64_MAX},
      {"{\"user_id\":\"a\",\"ttl_ms\":9223372036854775807}", -5, 9223372036854775802},
      {"{\"user_id\":\"a\",\"ttl_ms\":1}", INT64_MAX, INT64_MAX},
      {"{\"user_id\":\"a\",\"ttl_ms\":999999999999999999}", INT64_MAX - 5, INT64_MAX},
      {"{\"user_id\":\"a\",\"ttl_ms\":0}", INT64_MIN, 1},
      {"{\"user_id\":\"a\",\"ttl_ms\":1000}", -1000000, 1},
      {"{\"user_id\":\"a\",\"expires_at\":1e300,\"ttl_ms\":5}", BASE_MS, BASE_MS + 5},
      {"{\"user_id\":\"a\",\"expires_at\":1e-9}", BASE_MS, 1},
      {"{\"user_id\":\"a\",\"expires_at\":0}", BASE_MS, 0},
      {"{\"user_id\":\"a\",\"expires_at\":-1e300}", BASE_MS, -1},
      {"{\"user_id\":\"a\",\"expires_at\":-0.0}", BASE_MS, 0},
      {"{\"user_id\":\"a\",\"ttl_ms\":-9223372036854775808}", BASE_MS, -1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int64_t got = deadline_both(cases[i].body, cases[i].base_ms, NULL);
    if (got != cases[i].want)
      fail_msg("%s (base %lld): %lld, want %lld", cases[i].body, (long long)cases[i].base_ms,
               (long long)got, (long long)cases[i].want);
  }
  /* The fast path decides these itself: one rule, not a give-up. */
  bool fast = false;
  deadline_both("{\"user_id\":\"a\",\"expires_at\":1e300}", BASE_MS, &fast);
  assert_true(fast);
  deadline_both("{\"user_id\":\"a\",\"ttl_ms\":60000}", -5, &fast);
  assert_true(fast);

  /* The rule itself. */
  int64_t at;
  double s = 1e308 * 10; /* infinity */
  assert_int_equal(wr_env_expiry(&s, NULL, 0, &at), 0);
  assert_true(at == INT64_MAX);
  s = 0.0 / 0.0;
  assert_int_equal(wr_env_expiry(&s, NULL, 0, &at), -EINVAL);
  int64_t ttl = -1;
  assert_int_equal(wr_env_expiry(NULL, &ttl, 0, &at), -EINVAL);
  assert_int_equal(wr_env_expiry(NULL, NULL, BASE_MS, &at), 0);
  assert_int_equal(at, 0);
}

static void test_result_str(void **state) {
  (void)state;
  assert_string_equal(wr_env_result_str(WR_ENV_OK), "ok");
  assert_string_equal(wr_env_result_str(WR_ENV_TOO_LARGE), "too_large");
  assert_string_equal(wr_env_result_str(WR_ENV_BAD_FORMAT), "bad_format");
  assert_string_equal(wr_env_result_str(WR_ENV_BAD_JSON), "bad_json");
  assert_string_equal(wr_env_result_str(WR_ENV_BAD_MSGPACK), "bad_msgpack");
  assert_string_equal(wr_env_result_str(WR_ENV_NO_TARGET), "no_target");
  assert_string_equal(wr_env_result_str(WR_ENV_BAD_FIELD), "bad_field");
}

/* The one-pass path (env_scan.c) takes the usual body and writes the client
 * message itself: compact, routing fields gone, other bytes as sent. */
static void test_fast_path(void **state) {
  (void)state;
  wr_envelope_t env;
  const char *body = "{ \"id\": \"o-1\", \"user_ids\": [\"1001\", 1002, \"1001\"],\n"
                     "  \"type\": \"order.paid\", \"title\": \"Pay\\u00e9 \\\"ok\\\"\",\n"
                     "  \"data\": { \"order\": [1, 2.50, -3e2, true, null] },\n"
                     "  \"created_at\": 1795400000123, \"ttl_ms\": 60000 }";
  assert_int_equal(dec(&env, body), WR_ENV_OK);
  assert_null(env.client);
  assert_non_null(env.client_json);
  assert_string_equal(env.id, "o-1");
  assert_int_equal(env.n_users, 2);
  assert_string_equal(env.users[0], "1001");
  assert_string_equal(env.users[1], "1002");
  assert_int_equal(env.expires_at_ms, BASE_MS + 60000);
  assert_true(env.has_created_at && env.created_at == 1795400000123.0);
  char *json = encode_json(&env);
  assert_string_equal(json, "{\"type\":\"order.paid\",\"id\":\"o-1\",\"title\":\"Pay\\u00e9 "
                            "\\\"ok\\\"\",\"data\":{\"order\":[1,2.50,-3e2,true,null]},"
                            "\"created_at\":1795400000123}");
  free(json);
  wr_envelope_close(&env);

  /* What it leaves to the full decoder still decodes, the same way. */
  static const char *const full[] = {
      "{\"user\\u005fid\":\"a\",\"k\":1}",           /* escaped key */
      "{\"user_id\":\"a\",\"k\":1,\"k\":2}",         /* duplicate key */
      "{\"user_id\":\"a\\u0062\"}",                  /* escaped user id */
      "{\"user_id\":\"a\",\"n\":12345678901234567}", /* 17 digits: still fast */
  };
  for (size_t i = 0; i < sizeof(full) / sizeof(full[0]); i++) {
    assert_int_equal(dec(&env, full[i]), WR_ENV_OK);
    assert_true((env.client == NULL) == (i == 3));
    wr_envelope_close(&env);
  }
  assert_int_equal(dec(&env, "{\"user\\u005fid\":\"a\"}"), WR_ENV_OK);
  assert_string_equal(env.users[0], "a");
  assert_null(json_object_get(tree(&env), "user_id"));
  wr_envelope_close(&env);
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"k\":1,\"k\":2}"), WR_ENV_OK);
  assert_int_equal(json_integer_value(json_object_get(tree(&env), "k")), 2);
  wr_envelope_close(&env);
}

/* The fast path reads strings eight bytes at a time while they are plain
 * ASCII. Every kind of byte that stops it, at every offset around an 8-byte
 * word, must still be read as the full decoder reads it: the same verdict,
 * and for a valid body the same string reaching the client. */
static void test_fast_path_string_bytes(void **state) {
  (void)state;
  static const struct {
    const char *raw;     /* in the body, between plain padding */
    const char *decoded; /* what the client gets; NULL: the body is bad_json */
  } cases[] = {
      {"\\\"", "\""},
      {"\\\\", "\\"},
      {"\\u00e9", "\xc3\xa9"},
      {"\\n", "\n"},
      {"\xc3\xa9", "\xc3\xa9"},
      {"\xe2\x82\xac", "\xe2\x82\xac"},
      {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
      {"\x7f", "\x7f"},
      {" ~/", " ~/"},
      {"\x01", NULL},
      {"\x1f", NULL},
      {"\xff", NULL},
      {"\xc3", NULL},
      {"\xed\xa0\x80", NULL},
  };
  char body[256], want[128];
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
    for (int before = 0; before <= 17; before++)
      for (int after = 0; after <= 9; after += 3) {
        wr_envelope_t fast, full;
        int n = snprintf(body, sizeof body, "{\"user_id\":\"u\",\"c\":\"%.*s%s%.*s\"}", before,
                         "abcdefghijklmnopqrstuvwxyz", cases[c].raw, after, "ABCDEFGHIJ");
        assert_true(n > 0 && (size_t)n < sizeof body);
        wr_env_result_t rf = dec(&fast, body);
        wr_env_result_t rr = wr_envelope_decode_full(&full, (const uint8_t *)body, (size_t)n,
                                                     "application/json", NULL, MAX_BODY, BASE_MS);
        if (rf != rr)
          fail_msg("case %zu at %d: fast %s, full %s", c, before, wr_env_result_str(rf),
                   wr_env_result_str(rr));
        if (cases[c].decoded == NULL) {
          assert_int_equal(rf, WR_ENV_BAD_JSON);
          continue;
        }
        assert_int_equal(rf, WR_ENV_OK);
        assert_non_null(fast.client_json); /* it stayed on the fast path */
        snprintf(want, sizeof want, "%.*s%s%.*s", before, "abcdefghijklmnopqrstuvwxyz",
                 cases[c].decoded, after, "ABCDEFGHIJ");
        assert_string_equal(json_string_value(json_object_get(tree(&fast), "c")), want);
        assert_string_equal(json_string_value(json_object_get(tree(&full), "c")), want);
        wr_envelope_close(&fast);
        wr_envelope_close(&full);

        /* The same bytes in the id, a routing string the fast path reads itself. */
        n = snprintf(body, sizeof body, "{\"user_id\":\"u\",\"id\":\"%.*s%s%.*s\"}", before,
                     "abcdefghijklmnopqrstuvwxyz", cases[c].raw, after, "ABCDEFGHIJ");
        assert_int_equal(dec(&fast, body), WR_ENV_OK);
        assert_int_equal(wr_envelope_decode_full(&full, (const uint8_t *)body, (size_t)n,
                                                 "application/json", NULL, MAX_BODY, BASE_MS),
                         WR_ENV_OK);
        assert_string_equal(fast.id, want);
        assert_string_equal(full.id, want);
        wr_envelope_close(&fast);
        wr_envelope_close(&full);
      }
}

/* Numbers the fast path reads itself (created_at, expires_at) come out as the
 * very double strtod gives, and the full decoder: integers, decimals and
 * exponents on both sides of its exact range (18 digits, 2^53, 10^22), and
 * reals near overflow, which both must refuse alike. */
static void test_fast_path_numbers(void **state) {
  (void)state;
  static const char *const fixed[] = {"0",
                                      "-0",
                                      "1",
                                      "-1",
                                      "0.5",
                                      "1795400000123",
                                      "1795400000.123456",
                                      "999999999999999999",
                                      "9007199254740993",
                                      "9007199254740993.0",
                                      "123456789012345678",
                                      "1.7976931348623157e308",
                                      "2.2250738585072014e-308",
                                      "4.9e-324",
                                      "1e-400",
                                      "1e22",
                                      "1e23",
                                      "9007199254740991e22",
                                      "9007199254740992e-22",
                                      "0.1",
                                      "0.30000000000000004",
                                      "1E5",
                                      "1e+5",
                                      "-2.5E-3",
                                      "123.4e290",
                                      "9e300",
                                      "0.1e309",
                                      "1e308",
                                      "1e309",
                                      "-1e309",
                                      "12345678901234567e-5",
                                      "1234567890123456789e-3"};
  char num[64], body[160];
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]) + 20000; i++) {
    if (i < sizeof(fixed) / sizeof(fixed[0])) {
      snprintf(num, sizeof num, "%s", fixed[i]);
    } else { /* random: 1-20 digits, a point anywhere, an exponent or not */
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      int nd = 1 + (int)(x % 20), point = (int)((x >> 8) % (uint64_t)(nd + 1)), len = 0;
      uint64_t y = x;
      if ((x >> 16) & 1)
        num[len++] = '-';
      for (int d = 0; d < nd; d++) {
        if (d == point && d > 0)
          num[len++] = '.';
        y = y * 6364136223846793005ull + 1442695040888963407ull;
        num[len++] =
            (char)('0' + (d == 0 && nd > 1 && point != 1 ? 1 + (y >> 60) % 9 : (y >> 60) % 10));
      }
      if ((x >> 20) & 1)
        len += snprintf(num + len, sizeof num - (size_t)len, "e%d", (int)((x >> 24) % 61) - 30);
      num[len] = '\0';
    }
    int n = snprintf(body, sizeof body, "{\"user_id\":\"u\",\"created_at\":%s}", num);
    wr_envelope_t fast, full;
    wr_env_result_t rf = dec(&fast, body);
    wr_env_result_t rr = wr_envelope_decode_full(&full, (const uint8_t *)body, (size_t)n,
                                                 "application/json", NULL, MAX_BODY, BASE_MS);
    if (rf != rr)
      fail_msg("%s: fast %s, full %s", num, wr_env_result_str(rf), wr_env_result_str(rr));
    if (rf == WR_ENV_OK) {
      double want = strtod(num, NULL);
      /* It stays on the fast path, integers over 18 digits too. */
      if (fast.client_json == NULL)
        fail_msg("%s: fast path not taken", num);
      if (!fast.has_created_at || fast.created_at != want || !full.has_created_at ||
          full.created_at != want)
        fail_msg("%s: fast %.17g, full %.17g, strtod %.17g", num, fast.created_at, full.created_at,
                 want);
      /* The full decoder writes the number itself: the same value, in no more
       * bytes than the body spent (the fast path's size bound relies on it). */
      char *json = encode_json(&full);
      const char *v = strstr(json, "\"created_at\":") + 13;
      size_t vn = strlen(v) - 1;
      bool real_in = strcspn(num, ".eE") < strlen(num), real_out = strcspn(v, ".eE") < vn;
      if (vn > strlen(num) || strtod(v, NULL) != want || real_in != real_out)
        fail_msg("%s: written as %.*s", num, (int)vn, v);
      free(json);
    }
    wr_envelope_close(&fast);
    wr_envelope_close(&full);

    /* expires_at (unix seconds) goes through the same reading. */
    if (num[0] == '-')
      continue;
    n = snprintf(body, sizeof body, "{\"user_id\":\"u\",\"expires_at\":%s}", num);
    rf = dec(&fast, body);
    rr = wr_envelope_decode_full(&full, (const uint8_t *)body, (size_t)n, "application/json", NULL,
                                 MAX_BODY, BASE_MS);
    if (rf != rr || (rf == WR_ENV_OK && fast.expires_at_ms != full.expires_at_ms))
      fail_msg("expires_at %s: fast %s %lld, full %s %lld", num, wr_env_result_str(rf),
               (long long)fast.expires_at_ms, wr_env_result_str(rr), (long long)full.expires_at_ms);
    wr_envelope_close(&fast);
    wr_envelope_close(&full);
  }
}

/* The client message of env in MessagePack, unpacked by msgpack-c (an
 * independent decoder) into up; returns the map. */
static const msgpack_object *mp_client(const wr_envelope_t *env, msgpack_unpacked *up,
                                       uint8_t **out) {
  size_t len, off = 0;
  assert_int_equal(wr_envelope_encode(env, WR_ENV_MSGPACK, 0, out, &len), 0);
  msgpack_unpacked_init(up);
  assert_int_equal(msgpack_unpack_next(up, (const char *)*out, len, &off), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal(off, len);
  assert_int_equal(up->data.type, MSGPACK_OBJECT_MAP);
  return &up->data;
}

/* The value of key in a msgpack map, or NULL. */
static const msgpack_object *mp_get(const msgpack_object *map, const char *key) {
  for (uint32_t i = 0; i < map->via.map.size; i++) {
    const msgpack_object_kv *kv = &map->via.map.ptr[i];
    if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
        memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0)
      return &kv->val;
  }
  return NULL;
}

/* Integers beyond int64 and \u0000 in strings are valid JSON: they reach a
 * JSON client as the very bytes sent and a MessagePack client as the closest
 * value it has, on the fast path and on the full decoder's alike. */
static void test_json_bignum_nul(void **state) {
  (void)state;
  static const char *const bodies[] = {
      /* the fast path takes this one */
      "{\"user_id\":\"a\",\"id\":\"n1\",\"data\":{\"big\":123456789012345678901234567890,"
      "\"u\":18446744073709551615,\"s\":\"a\\u0000b\"}}",
      /* an escaped key sends this one to the full decoder */
      "{\"user\\u005fid\":\"a\",\"id\":\"n1\",\"data\":{\"big\":123456789012345678901234567890,"
      "\"u\":18446744073709551615,\"s\":\"a\\u0000b\"}}",
  };
  const char *want = "{\"type\":\"notification\",\"id\":\"n1\",\"data\":{\"big\":"
                     "123456789012345678901234567890,\"u\":18446744073709551615,\"s\":"
                     "\"a\\u0000b\"}}";
  for (int full = 0; full < 2; full++) {
    for (size_t b = 0; b < 2; b++) {
      wr_envelope_t env;
      wr_env_result_t r =
          full ? wr_envelope_decode_full(&env, (const uint8_t *)bodies[b], strlen(bodies[b]),
                                         "application/json", NULL, MAX_BODY, BASE_MS)
               : dec(&env, bodies[b]);
      if (r != WR_ENV_OK)
        fail_msg("body %zu, full %d: %s", b, full, wr_env_result_str(r));
      assert_true((env.client_json != NULL) == (!full && b == 0));
      char *json = encode_json(&env);
      assert_string_equal(json, want);
      free(json);

      msgpack_unpacked up;
      uint8_t *out;
      const msgpack_object *data = mp_get(mp_client(&env, &up, &out), "data");
      assert_non_null(data);
      const msgpack_object *big = mp_get(data, "big"), *u = mp_get(data, "u"),
                           *str = mp_get(data, "s");
      /* Beyond uint64: the nearest double, as JSON.parse reads the digits. */
      assert_int_equal(big->type, MSGPACK_OBJECT_FLOAT64);
      assert_true(big->via.f64 == 123456789012345678901234567890.0);
      assert_int_equal(u->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
      assert_true(u->via.u64 == UINT64_MAX);
      assert_int_equal(str->type, MSGPACK_OBJECT_STR);
      assert_int_equal(str->via.str.size, 3);
      assert_memory_equal(str->via.str.ptr, "a\0b", 3);
      msgpack_unpacked_destroy(&up);
      free(out);
      wr_envelope_close(&env);
    }
  }

  /* The int64 edges stay integers; one past them is a bignum; a NUL in the
   * type passes like any string the client reads (the escape sends it to the
   * full decoder, which writes -0 as the integer 0). */
  wr_envelope_t env;
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"id\":\"e\",\"type\":\"t\\u0000\",\"a\":"
                             "-9223372036854775808,\"b\":9223372036854775807,\"c\":"
                             "-9223372036854775809,\"d\":9223372036854775808,\"e\":-0}"),
                   WR_ENV_OK);
  char *json = encode_json(&env);
  assert_string_equal(json, "{\"type\":\"t\\u0000\",\"id\":\"e\",\"a\":-9223372036854775808,"
                            "\"b\":9223372036854775807,\"c\":-9223372036854775809,\"d\":"
                            "9223372036854775808,\"e\":0}");
  free(json);
  msgpack_unpacked up;
  uint8_t *out;
  const msgpack_object *m = mp_client(&env, &up, &out);
  assert_int_equal(mp_get(m, "type")->via.str.size, 2);
  assert_int_equal(mp_get(m, "a")->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
  assert_true(mp_get(m, "a")->via.i64 == INT64_MIN);
  assert_true(mp_get(m, "b")->via.u64 == INT64_MAX);
  assert_int_equal(mp_get(m, "c")->type, MSGPACK_OBJECT_FLOAT64);
  assert_true(mp_get(m, "c")->via.f64 == -9223372036854775809.0);
  assert_int_equal(mp_get(m, "d")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_true(mp_get(m, "d")->via.u64 == 9223372036854775808ull);
  assert_int_equal(mp_get(m, "e")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_true(mp_get(m, "e")->via.u64 == 0);
  msgpack_unpacked_destroy(&up);
  free(out);
  wr_envelope_close(&env);

  /* An integer a double cannot hold is refused like a real of that size:
   * 10^308 passes, 2 x 10^308 does not. */
  char body[800];
  int n = snprintf(body, sizeof body, "{\"user_id\":\"a\",\"n\":1");
  for (int i = 0; i < 308; i++)
    body[n++] = '0';
  snprintf(body + n, sizeof body - (size_t)n, "}");
  expect_json(body, WR_ENV_OK);
  body[strlen("{\"user_id\":\"a\",\"n\":")] = '2';
  expect_json(body, WR_ENV_BAD_JSON);
}

/* Routing fields keep their rules with the new values, on both paths. */
static void test_json_bignum_nul_routing(void **state) {
  (void)state;
  static const struct {
    const char *body;
    wr_env_result_t want;
  } cases[] = {
      /* A user id integer beyond int64 is still a bad field. */
      {"{\"user_id\":123456789012345678901234567890}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":9223372036854775808}", WR_ENV_BAD_FIELD},
      {"{\"user_ids\":[\"a\",18446744073709551615]}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":\"a\\u0000\"}", WR_ENV_BAD_FIELD},
      /* The id is a C string. */
      {"{\"user_id\":\"a\",\"id\":\"x\\u0000y\"}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":\"a\",\"id\":12345678901234567890}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":\"a\",\"type\":12345678901234567890}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":\"a\",\"broadcast\":12345678901234567890}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":\"a\",\"ttl_ms\":-12345678901234567890}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":\"a\",\"expires_at\":-12345678901234567890}", WR_ENV_BAD_FIELD},
      {"{\"user_id\":-9223372036854775808}", WR_ENV_OK},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    wr_envelope_t fast, full;
    const char *b = cases[i].body;
    wr_env_result_t rf = dec(&fast, b);
    wr_env_result_t rr = wr_envelope_decode_full(&full, (const uint8_t *)b, strlen(b),
                                                 "application/json", NULL, MAX_BODY, BASE_MS);
    if (rf != cases[i].want || rr != cases[i].want)
      fail_msg("%s: fast %s, full %s, want %s", b, wr_env_result_str(rf), wr_env_result_str(rr),
               wr_env_result_str(cases[i].want));
    wr_envelope_close(&fast);
    wr_envelope_close(&full);
  }
  /* A deadline or a timestamp beyond int64 is a number like any other. */
  assert_true(deadline_both("{\"user_id\":\"a\",\"ttl_ms\":123456789012345678901234567890}",
                            BASE_MS, NULL) == INT64_MAX);
  assert_true(deadline_both("{\"user_id\":\"a\",\"expires_at\":123456789012345678901234567890}",
                            BASE_MS, NULL) == INT64_MAX);
  wr_envelope_t env;
  assert_int_equal(dec(&env, "{\"user_id\":\"a\",\"created_at\":18446744073709551615}"), WR_ENV_OK);
  assert_true(env.has_created_at && env.created_at == 18446744073709551615.0);
  wr_envelope_close(&env);
  const char *b = "{\"user\\u005fid\":\"a\",\"created_at\":18446744073709551615}";
  assert_int_equal(
      wr_envelope_decode_full(&env, (const uint8_t *)b, strlen(b), NULL, NULL, MAX_BODY, BASE_MS),
      WR_ENV_OK);
  assert_true(env.has_created_at && env.created_at == 18446744073709551615.0);
  wr_envelope_close(&env);
}

/* A MessagePack uint64 beyond int64 reaches a MessagePack client as that
 * uint64 and a JSON client as its exact digits; a NUL in a string reaches
 * both. */
static void test_msgpack_uint64_nul(void **state) {
  (void)state;
  mp_t m;
  mp_init(&m);
  msgpack_pack_map(&m.pk, 6);
  mp_str(&m, "user_id");
  mp_str(&m, "u");
  mp_str(&m, "id");
  mp_str(&m, "m1");
  mp_str(&m, "max");
  msgpack_pack_uint64(&m.pk, UINT64_MAX);
  mp_str(&m, "past");
  msgpack_pack_uint64(&m.pk, (uint64_t)INT64_MAX + 1);
  mp_str(&m, "s");
  msgpack_pack_str(&m.pk, 3);
  msgpack_pack_str_body(&m.pk, "a\0b", 3);
  mp_str(&m, "r");
  msgpack_pack_double(&m.pk, 0.1);
  wr_envelope_t env;
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  char *json = encode_json(&env);
  assert_string_equal(json, "{\"type\":\"notification\",\"id\":\"m1\",\"max\":18446744073709551615,"
                            "\"past\":9223372036854775808,\"s\":\"a\\u0000b\",\"r\":0.1}");
  free(json);
  msgpack_unpacked up;
  uint8_t *out;
  const msgpack_object *o = mp_client(&env, &up, &out);
  assert_int_equal(mp_get(o, "max")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_true(mp_get(o, "max")->via.u64 == UINT64_MAX);
  assert_int_equal(mp_get(o, "past")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_true(mp_get(o, "past")->via.u64 == (uint64_t)INT64_MAX + 1);
  assert_int_equal(mp_get(o, "s")->via.str.size, 3);
  assert_memory_equal(mp_get(o, "s")->via.str.ptr, "a\0b", 3);
  msgpack_unpacked_destroy(&up);
  free(out);
  wr_envelope_close(&env);
  msgpack_sbuffer_destroy(&m.sb);

  /* A uint64 user id beyond int64 is a bad field, as in JSON. */
  mp_init(&m);
  msgpack_pack_map(&m.pk, 1);
  mp_str(&m, "user_id");
  msgpack_pack_uint64(&m.pk, UINT64_MAX);
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_BAD_FIELD);
  msgpack_sbuffer_destroy(&m.sb);

  /* Client messages keep refusing NUL (their strings are C strings). */
  const uint8_t ack[] = {0x82, 0xa4, 't', 'y', 'p',  'e', 0xa3, 'a', 'c',
                         'k',  0xa2, 'i', 'd', 0xa3, 'a', 0,    'b'};
  assert_null(wr_msgpack_to_json(ack, sizeof(ack)));
}

/* Reals from MessagePack are written as the shortest text that reads back
 * as the same double and stays a real: never longer than the text of a JSON
 * body, so the full decoder's client message is never longer than the fast
 * path's (which copies the body's bytes). */
static void test_real_text(void **state) {
  (void)state;
  static const struct {
    double d;
    const char *text;
  } cases[] = {
      {0.1, "0.1"},
      {1e22, "1e22"},
      {100000.0, "1e5"},
      {12000.0, "12e3"},
      {0.001, "1e-3"},
      {0.0123, "0.0123"},
      {-0.0, "-0.0"},
      {0.0, "0.0"},
      {2.5, "2.5"},
      {1.0, "1.0"},
      {10.0, "1e1"},
      {-1.5e-7, "-15e-8"},
      {123456.0, "123456.0"},
      {1.5e300, "15e299"},
      {1.25e-300, "125e-302"},
      {-2.5e-5, "-25e-6"},
      {0.000123, "123e-6"},
      {0.0, "0.0"},
      {5e-324, "5e-324"},
      {2.2250738585072009e-308, "2225073858507201e-323"},
      {1.7976931348623157e308, "17976931348623157e292"},
      {0.30000000000000004, "0.30000000000000004"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *o = json_pack("{s:f}", "r", cases[i].d);
    char want[96];
    snprintf(want, sizeof want, "{\"r\":%s}", cases[i].text);
    if (wr_json_size(o) != strlen(want))
      fail_msg("%.17g: size %zu, want %s", cases[i].d, wr_json_size(o), want);
    wr_envelope_t env = {.client = o, .id = NULL};
    char *json = encode_json(&env);
    assert_string_equal(json, want);
    free(json);
    json_decref(o);
  }
}

/* The sizes of env's client message in both formats, as encoded. */
static void client_sizes(const wr_envelope_t *env, size_t *json, size_t *mp) {
  uint8_t *out;
  assert_int_equal(wr_envelope_encode(env, WR_ENV_JSON, 0, &out, json), 0);
  free(out);
  assert_int_equal(wr_envelope_encode(env, WR_ENV_MSGPACK, 0, &out, mp), 0);
  free(out);
}

/* A MessagePack body {"user_id":"u","v":<n items of one byte each>}. */
static void mp_growth_body(mp_t *m, uint8_t item, size_t n, bool as_str) {
  mp_init(m);
  msgpack_pack_map(&m->pk, 2);
  mp_str(m, "user_id");
  mp_str(m, "u");
  mp_str(m, "v");
  if (as_str) {
    char *b = malloc(n);
    memset(b, item, n);
    msgpack_pack_str(&m->pk, n);
    msgpack_pack_str_body(&m->pk, b, n);
    free(b);
  } else {
    msgpack_pack_array(&m->pk, n);
    for (size_t i = 0; i < n; i++)
      msgpack_sbuffer_write(&m->sb, (const char *)&item, 1);
  }
}

/* A notification whose client message in the other format would pass
 * 2 x max_body + 2 KiB is refused as too_large, whatever format its body. */
static void test_client_growth_bound(void **state) {
  (void)state;
  wr_envelope_t env;
  mp_t m;
  size_t json, mp;
  assert_int_equal(wr_envelope_max_client(MAX_BODY), 2 * MAX_BODY + 2048);
  assert_int_equal(wr_envelope_max_client(SIZE_MAX / 2), SIZE_MAX);

  /* MessagePack bodies within max_body that grow in JSON text: control
   * characters (\u0001, 6x), nil ("null,", 5x), false ("false,", 6x),
   * small integers ("100,", 4x). */
  static const struct {
    uint8_t item;
    bool as_str;
  } grow[] = {{0x01, true}, {0xc0, false}, {0xc2, false}, {0x64, false}};
  for (size_t i = 0; i < sizeof(grow) / sizeof(grow[0]); i++) {
    mp_growth_body(&m, grow[i].item, 60000, grow[i].as_str);
    assert_true(m.sb.size <= MAX_BODY);
    if (mp_dec(&m, &env, NULL) != WR_ENV_TOO_LARGE)
      fail_msg("item 0x%02x: not too_large", grow[i].item);
    msgpack_sbuffer_destroy(&m.sb);
    /* A third of that fits: the bound is on the size, not the kind. */
    mp_growth_body(&m, grow[i].item, 20000, grow[i].as_str);
    assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
    client_sizes(&env, &json, &mp);
    assert_true(json > 2 * m.sb.size && json <= wr_envelope_max_client(MAX_BODY));
    wr_envelope_close(&env);
    msgpack_sbuffer_destroy(&m.sb);
  }

  /* A JSON body of reals grows in MessagePack (3 characters to 9 bytes), on
   * the fast path and the full decoder's alike. */
  char *body = malloc(MAX_BODY + 1);
  size_t n = (size_t)sprintf(body, "{\"user_id\":\"u\",\"v\":[1.5");
  while (n < MAX_BODY - 8)
    n += (size_t)sprintf(body + n, ",1.5");
  n += (size_t)sprintf(body + n, "]}");
  for (int full = 0; full < 2; full++) {
    wr_env_opts_t o = {MAX_BODY, wr_envelope_max_client(MAX_BODY), BASE_MS, full};
    assert_int_equal(wr_envelope_decode_opts(&env, (const uint8_t *)body, n, NULL, NULL, &o),
                     WR_ENV_TOO_LARGE);
  }

  /* Ordinary bodies at max_body pass in both formats. */
  n = (size_t)sprintf(body, "{\"user_id\":\"u\",\"title\":\"");
  while (n < MAX_BODY - 100) {
    body[n] = (char)('a' + n % 26);
    n++;
  }
  n += (size_t)sprintf(body + n, "\",\"n\":[1,2,3,\"x\",true,null]}");
  assert_int_equal(dec(&env, body), WR_ENV_OK);
  client_sizes(&env, &json, &mp);
  assert_true(json <= wr_envelope_max_client(MAX_BODY) && mp <= wr_envelope_max_client(MAX_BODY));
  wr_envelope_close(&env);
  mp_growth_body(&m, 'a', MAX_BODY - 40, true);
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  wr_envelope_close(&env);
  msgpack_sbuffer_destroy(&m.sb);
  free(body);
}

/* The limit is exact: a client message of max_client bytes in its larger
 * format passes, one byte less refused, on both paths; and a JSON body the
 * fast path's cheap bound cannot pass is measured by the full decoder. */
static void test_client_size_exact(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "{\"user_id\":\"u\",\"id\":\"i\",\"t\":\"plain text, longer as JSON than as MessagePack\"}",
      "{\"user_id\":\"u\",\"id\":\"i\",\"r\":[0.5,1e3,2.25,-7.5,1e-5,3.14159]}",
      "{\"user_id\":\"u\",\"id\":\"i\",\"b\":123456789012345678901234567890,\"s\":\"\\u0000\"}",
  };
  for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
    wr_envelope_t env;
    size_t json, mp, len = strlen(bodies[b]);
    assert_int_equal(dec(&env, bodies[b]), WR_ENV_OK);
    client_sizes(&env, &json, &mp);
    wr_envelope_close(&env);
    size_t max = json > mp ? json : mp;
    for (int full = 0; full < 2; full++) {
      wr_env_opts_t o = {MAX_BODY, max, BASE_MS, full};
      assert_int_equal(
          wr_envelope_decode_opts(&env, (const uint8_t *)bodies[b], len, NULL, NULL, &o),
          WR_ENV_OK);
      /* Reals: the fast path's bound passes this limit, the full decoder
       * measures and takes it. */
      if (b == 1)
        assert_non_null(env.client);
      wr_envelope_close(&env);
      o.max_client = max - 1;
      assert_int_equal(
          wr_envelope_decode_opts(&env, (const uint8_t *)bodies[b], len, NULL, NULL, &o),
          WR_ENV_TOO_LARGE);
    }
  }
  /* For a MessagePack body too: there JSON is the larger. */
  mp_t m;
  wr_envelope_t env;
  size_t json, mp;
  mp_growth_body(&m, 0x7f, 100, true);
  assert_int_equal(mp_dec(&m, &env, NULL), WR_ENV_OK);
  client_sizes(&env, &json, &mp);
  wr_envelope_close(&env);
  wr_env_opts_t o = {MAX_BODY, json, BASE_MS, false};
  assert_int_equal(
      wr_envelope_decode_opts(&env, (const uint8_t *)m.sb.data, m.sb.size, NULL, NULL, &o),
      WR_ENV_OK);
  wr_envelope_close(&env);
  o.max_client = json - 1;
  assert_int_equal(
      wr_envelope_decode_opts(&env, (const uint8_t *)m.sb.data, m.sb.size, NULL, NULL, &o),
      WR_ENV_TOO_LARGE);
  msgpack_sbuffer_destroy(&m.sb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_targets),
      cmocka_unit_test(test_int_user_ids),
      cmocka_unit_test(test_user_id_limits),
      cmocka_unit_test(test_msgpack_targets),
      cmocka_unit_test(test_content_type),
      cmocka_unit_test(test_ids),
      cmocka_unit_test(test_client_object),
      cmocka_unit_test(test_msgpack_encode),
      cmocka_unit_test(test_msgpack_values),
      cmocka_unit_test(test_bad_json),
      cmocka_unit_test(test_depth),
      cmocka_unit_test(test_bad_msgpack),
      cmocka_unit_test(test_too_large),
      cmocka_unit_test(test_client_growth_bound),
      cmocka_unit_test(test_client_size_exact),
      cmocka_unit_test(test_bad_fields),
      cmocka_unit_test(test_expiry),
      cmocka_unit_test(test_expiry_overflow),
      cmocka_unit_test(test_result_str),
      cmocka_unit_test(test_fast_path),
      cmocka_unit_test(test_fast_path_string_bytes),
      cmocka_unit_test(test_fast_path_numbers),
      cmocka_unit_test(test_json_bignum_nul),
      cmocka_unit_test(test_json_bignum_nul_routing),
      cmocka_unit_test(test_msgpack_uint64_nul),
      cmocka_unit_test(test_real_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
