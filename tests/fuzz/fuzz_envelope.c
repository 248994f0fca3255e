/* libFuzzer target for bridge/envelope.c and its one-pass fast path
 * (env_scan.c). The first byte picks the content type (and, with its top bit,
 * a fallback id). Every input is decoded twice, by wr_envelope_decode (fast
 * path first) and by the full decoder alone, and both must agree: same
 * result, same targets, expiry, id, created_at, and client messages that hold
 * the same values in both encodings. Then:
 * - a JSON body is checked against jansson's own parser (with \u0000 allowed
 *   and integers read as reals, as jansson has none beyond int64): the body
 *   is valid JSON for both or for neither, and the client message holds the
 *   body's values, exactly so when jansson reads them exactly;
 * - the client size limit is put at the exact size of the larger client
 *   message and one byte below: both paths must accept the first and refuse
 *   the second as too_large, and nothing accepted may be larger. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/envelope_int.h"

#define MAX_BODY 65536
#define BASE_MS 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* v with every integer beyond uint64 replaced by its nearest double, which
 * is what MessagePack carries for one (all integers, if all_reals: what
 * jansson reads with JSON_DECODE_INT_AS_REAL). Consumes v, returns the
 * result. */
static json_t *as_reals(json_t *v, bool all_reals) {
  const char *key, *digits;
  size_t n, i;
  json_t *item;
  if (json_is_object(v)) {
    json_object_foreach(v, key, item) {
      json_object_set_new(v, key, as_reals(json_incref(item), all_reals));
    }
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, item) {
      json_array_set_new(v, i, as_reals(json_incref(item), all_reals));
    }
  } else if ((digits = wr_json_bignum_digits(v, &n)) != NULL &&
             (all_reals || digits[0] == '-' || n > 20 ||
              (n == 20 && memcmp(digits, "18446744073709551615", 20) > 0))) {
    char *b = strndup(digits, n);
    json_t *r = json_real(strtod(b, NULL));
    free(b);
    json_decref(v);
    return r;
  } else if (all_reals && json_is_integer(v)) {
    json_t *r = json_real((double)json_integer_value(v));
    json_decref(v);
    return r;
  }
  return v;
}

/* The client message of env in format fmt, decoded back into a tree by the
 * readers that keep every value (integers beyond int64, NUL in strings);
 * its encoded size in *len. */
static json_t *client_tree(const wr_envelope_t *env, wr_env_format_t fmt, size_t *size) {
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
  if (size != NULL)
    *size = len - 3;
  return t;
}

static bool generated(const char *id) {
  return strncmp(id, "wr-", 3) == 0;
}

/* Whether the decoder reads body as JSON (envelope.c's pick_format). */
static bool json_body(const uint8_t *b, size_t n, const char *ct) {
  if (ct != NULL && *ct != '\0')
    return strcmp(ct, "application/json") == 0;
  if (n == 0 || (b[0] >= 0x80 && b[0] <= 0x8f) || b[0] == 0xde || b[0] == 0xdf)
    return false;
  for (size_t i = 0; i < n; i++) {
    if (b[i] == '{')
      return true;
    if (b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
      return false;
  }
  return false;
}

static int depth(const json_t *v) {
  const char *key;
  json_t *item;
  size_t i;
  int max = 0;
  if (json_is_object(v)) {
    json_object_foreach((json_t *)v, key, item) {
      int d = depth(item);
      max = d > max ? d : max;
    }
    return max + 1;
  }
  if (json_is_array(v)) {
    json_array_foreach(v, i, item) {
      int d = depth(item);
      max = d > max ? d : max;
    }
    return max + 1;
  }
  return 0;
}

/* The client's fields of body root j, as jansson read it: every top-level
 * field in order but the routing ones and the head (type, id). */
static json_t *client_fields(const json_t *j) {
  json_t *out = json_object(), *item;
  const char *key;
  json_object_foreach((json_t *)j, key, item) {
    wr_env_key_t k = wr_env_key_find(key, strlen(key));
    if (wr_env_key_to_client(k))
      json_object_set(out, key, item);
  }
  return out;
}

/* The same fields of the decoded client message t (consumed). */
static json_t *without_head(json_t *t) {
  json_object_del(t, "type");
  json_object_del(t, "id");
  return t;
}

/* A JSON body against jansson: the verdict on validity, then the values. */
static void check_json_oracle(const uint8_t *body, size_t n, wr_env_result_t r,
                              const wr_envelope_t *ref) {
  /* JSON text holds no NUL byte anywhere (RFC 8259); jansson's reader skips
   * one in some places (it ends its chunk there), so it is no judge. */
  if (memchr(body, '\0', n) != NULL) {
    if (r != WR_ENV_BAD_JSON)
      abort();
    return;
  }
  json_t *loose = json_loadb((const char *)body, n, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
  bool valid = loose != NULL && json_is_object(loose) && depth(loose) <= 32;
  if ((r == WR_ENV_BAD_JSON) == valid)
    abort();
  if (r == WR_ENV_OK) {
    json_t *want = as_reals(client_fields(loose), true);
    json_t *got = as_reals(without_head(client_tree(ref, WR_ENV_JSON, NULL)), true);
    if (!json_equal(want, got))
      abort();
    json_decref(want);
    json_decref(got);
    /* Where jansson reads every integer exactly, so must we. */
    json_t *exact = json_loadb((const char *)body, n, JSON_ALLOW_NUL, NULL);
    if (exact != NULL) {
      want = client_fields(exact);
      got = without_head(client_tree(ref, WR_ENV_JSON, NULL));
      if (!json_equal(want, got))
        abort();
      json_decref(want);
      json_decref(got);
      json_decref(exact);
    }
  }
  json_decref(loose);
}

/* The larger of env's two client messages, in bytes. */
static size_t client_max(const wr_envelope_t *env) {
  size_t j, m;
  json_decref(client_tree(env, WR_ENV_JSON, &j));
  json_decref(client_tree(env, WR_ENV_MSGPACK, &m));
  return j > m ? j : m;
}

/* Decodes at the client limit max on both paths: both must give want, and
 * an accepted message must fit. */
static void check_limit(const uint8_t *body, size_t n, const char *ct, const char *fb, size_t max,
                        wr_env_result_t want) {
  for (int full = 0; full < 2; full++) {
    wr_env_opts_t o = {MAX_BODY, max, BASE_MS, full};
    wr_envelope_t env;
    wr_env_result_t r = wr_envelope_decode_opts(&env, body, n, ct, fb, &o);
    if (r != want)
      abort();
    if (r == WR_ENV_OK && client_max(&env) > max)
      abort();
    wr_envelope_close(&env);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const types[] = {NULL, "application/json", "application/msgpack",
                                      "application/x-msgpack; charset=binary", ""};
  wr_envelope_t env, ref;

  if (size < 1)
    return 0;
  const char *ct = types[data[0] % 5];
  const char *fb = (data[0] & 0x80) ? "fb" : NULL;
  const uint8_t *body = data + 1;
  size_t n = size - 1;
  wr_env_result_t r = wr_envelope_decode(&env, body, n, ct, fb, MAX_BODY, BASE_MS);
  wr_env_result_t rr = wr_envelope_decode_full(&ref, body, n, ct, fb, MAX_BODY, BASE_MS);
  if (r != rr)
    abort();
  if (json_body(body, n, ct))
    check_json_oracle(body, n, rr, &ref);
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
      (env.has_created_at && env.created_at != ref.created_at &&
       !(isnan(env.created_at) && isnan(ref.created_at))))
    abort();
  for (size_t i = 0; i < env.n_users; i++)
    if (strcmp(env.users[i], ref.users[i]) != 0)
      abort();
  bool gen = generated(env.id) && generated(ref.id) && !fb;
  if (!gen && strcmp(env.id, ref.id) != 0)
    abort();

  for (int fmt = 0; fmt < 2; fmt++) {
    json_t *want = client_tree(&ref, (wr_env_format_t)fmt, NULL);
    json_t *got = client_tree(&env, (wr_env_format_t)fmt, NULL);
    if (gen) {
      json_object_set_new(want, "id", json_string("gen"));
      json_object_set_new(got, "id", json_string("gen"));
    }
    if (!json_equal(got, want))
      abort();
    /* The other format carries the same values. */
    json_t *other = client_tree(&env, (wr_env_format_t)!fmt, NULL);
    if (gen)
      json_object_set_new(other, "id", json_string("gen"));
    got = as_reals(got, false);
    other = as_reals(other, false);
    if (!json_equal(got, other))
      abort();
    json_decref(other);
    json_decref(got);
    json_decref(want);
  }

  /* The size limit at the full decoder's exact sizes; the fast path's own
   * JSON copy may be longer (escapes kept), never shorter. A generated id
   * differs in length from one decode to the next: only with a given id. */
  if (!gen) {
    size_t max = client_max(&ref), fast_max = client_max(&env);
    if (fast_max < max || max > wr_envelope_max_client(MAX_BODY))
      abort();
    check_limit(body, n, ct, fb, max, WR_ENV_OK);
    check_limit(body, n, ct, fb, max - 1, WR_ENV_TOO_LARGE);
    check_limit(body, n, ct, fb, fast_max, WR_ENV_OK);
  }
  wr_envelope_close(&env);
  wr_envelope_close(&ref);
  return 0;
}
