/* libFuzzer target for bridge/envelope.c and its one-pass fast path
 * (env_scan.c). The first byte picks the content type. Every input is decoded
 * twice, by wr_envelope_decode (fast path first) and by the full jansson
 * decoder alone, and both must agree: same result, same targets, expiry, id,
 * created_at, and client messages that are the same JSON value in both
 * encodings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/envelope_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* v with every integer beyond uint64 replaced by its nearest double, which
 * is what MessagePack carries for one (in place; returns v or its
 * replacement). */
static json_t *as_msgpack_values(json_t *v) {
  const char *key, *digits;
  size_t n, i;
  json_t *item;
  if (json_is_object(v)) {
    json_object_foreach(v, key, item)
        json_object_set_new(v, key, as_msgpack_values(json_incref(item)));
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, item) json_array_set_new(v, i, as_msgpack_values(json_incref(item)));
  } else if ((digits = wr_json_bignum_digits(v, &n)) != NULL &&
             (digits[0] == '-' || n > 20 ||
              (n == 20 && memcmp(digits, "18446744073709551615", 20) > 0))) {
    char *b = strndup(digits, n);
    json_t *r = json_real(strtod(b, NULL));
    free(b);
    json_decref(v);
    return r;
  }
  return v;
}

/* The client message of env in format fmt, decoded back into a tree by the
 * readers that keep every value (integers beyond int64, NUL in strings). */
static json_t *client_tree(const wr_envelope_t *env, wr_env_format_t fmt) {
  uint8_t *out;
  size_t len;
  json_t *t;
  if (wr_envelope_encode(env, fmt, 3, &out, &len) != 0)
    abort();
  if (fmt == WR_ENV_JSON)
    t = wr_json_load(out + 3, len - 3);
  else
    t = wr_msgpack_load(out + 3, len - 3);
  free(out);
  if (t == NULL || !json_is_object(t))
    abort();
  return t;
}

static bool generated(const char *id) {
  return strncmp(id, "wr-", 3) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const types[] = {NULL, "application/json", "application/msgpack",
                                      "application/x-msgpack; charset=binary", ""};
  wr_envelope_t env, ref;

  if (size < 1)
    return 0;
  const char *ct = types[data[0] % 5];
  const char *fb = (data[0] & 0x80) ? "fb" : NULL;
  wr_env_result_t r = wr_envelope_decode(&env, data + 1, size - 1, ct, fb, 65536, 1000);
  wr_env_result_t rr = wr_envelope_decode_full(&ref, data + 1, size - 1, ct, fb, 65536, 1000);
  if (r != rr)
    abort();
  if (r != WR_ENV_OK) {
    if (env.id || env.client || env.client_json || env.users)
      abort();
    return 0;
  }
  if (!env.id || (!env.client && !env.client_json) || env.n_users > 10000 ||
      env.broadcast == (env.n_users > 0))
    abort();
  if (env.format != ref.format || env.broadcast != ref.broadcast || env.n_users != ref.n_users ||
      env.expires_at_ms != ref.expires_at_ms || env.has_created_at != ref.has_created_at ||
      (env.has_created_at && env.created_at != ref.created_at))
    abort();
  for (size_t i = 0; i < env.n_users; i++)
    if (strcmp(env.users[i], ref.users[i]) != 0)
      abort();
  bool gen = generated(env.id) && generated(ref.id) && !fb;
  if (!gen && strcmp(env.id, ref.id) != 0)
    abort();

  for (int fmt = 0; fmt < 2; fmt++) {
    json_t *want = client_tree(&ref, (wr_env_format_t)fmt);
    json_t *got = client_tree(&env, (wr_env_format_t)fmt);
    if (gen) {
      json_object_set_new(want, "id", json_string("gen"));
      json_object_set_new(got, "id", json_string("gen"));
    }
    if (!json_equal(got, want))
      abort();
    /* The other format carries the same values. */
    json_t *other = client_tree(&env, (wr_env_format_t)!fmt);
    if (gen)
      json_object_set_new(other, "id", json_string("gen"));
    got = as_msgpack_values(got);
    other = as_msgpack_values(other);
    if (!json_equal(got, other))
      abort();
    json_decref(other);
    json_decref(got);
    json_decref(want);
  }
  wr_envelope_close(&env);
  wr_envelope_close(&ref);
  return 0;
}
