/* Notification envelopes (DESIGN.md §3): JSON or MessagePack in, one jansson
 * tree for the client out, encoded once per format. Pure functions: no I/O,
 * no logs. */
#include "bridge/envelope_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#define MAX_DEPTH 32
#define MAX_ID_LEN 256
#define MAX_TYPE_LEN 256
#define MAX_USER_LEN 256
#define MAX_USERS 10000

const char *wr_env_result_str(wr_env_result_t r) {
  switch (r) {
  case WR_ENV_OK:
    return "ok";
  case WR_ENV_TOO_LARGE:
    return "too_large";
  case WR_ENV_BAD_FORMAT:
    return "bad_format";
  case WR_ENV_BAD_JSON:
    return "bad_json";
  case WR_ENV_BAD_MSGPACK:
    return "bad_msgpack";
  case WR_ENV_NO_TARGET:
    return "no_target";
  case WR_ENV_BAD_FIELD:
    return "bad_field";
  }
  return "unknown";
}

/* ---- MessagePack → jansson ---- */

/* Reads a big-endian unsigned integer of n bytes at p. */
static uint64_t be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* Walks one MessagePack value at buf[*off..len) without building anything.
 * msgpack-c trusts declared container sizes and would reserve memory for a
 * 2^32-element array announced by a 5-byte body; this walk proves every
 * declared element can exist (each takes at least one byte) before msgpack-c
 * sees the input. It also refuses what we never accept (bin, ext, the unused
 * 0xc1 marker, nesting deeper than MAX_DEPTH) and truncation. */
static int prescan(const uint8_t *buf, size_t len, size_t *off, int depth) {
  size_t skip = 0, count = 0, lenbytes = 0, per = 1;
  bool container = false;
  uint8_t b;

  if (*off >= len)
    return -1;
  b = buf[(*off)++];
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
    return 0;
  if ((b & 0xe0) == 0xa0) {
    skip = b & 0x1f;
  } else if ((b & 0xf0) == 0x90 || (b & 0xf0) == 0x80) {
    container = true;
    count = b & 0x0f;
    per = (b & 0xf0) == 0x80 ? 2 : 1;
  } else {
    switch (b) {
    case 0xcc: /* uint8, int8 */
    case 0xd0:
      skip = 1;
      break;
    case 0xcd:
    case 0xd1:
      skip = 2;
      break;
    case 0xca: /* float32, uint32, int32 */
    case 0xce:
    case 0xd2:
      skip = 4;
      break;
    case 0xcb:
    case 0xcf:
    case 0xd3:
      skip = 8;
      break;
    case 0xd9: /* str8/16/32 */
      lenbytes = 1;
      break;
    case 0xda:
      lenbytes = 2;
      break;
    case 0xdb:
      lenbytes = 4;
      break;
    case 0xdc: /* array16/32, map16/32 */
    case 0xde:
      container = true;
      lenbytes = 2;
      per = b == 0xde ? 2 : 1;
      break;
    case 0xdd:
    case 0xdf:
      container = true;
      lenbytes = 4;
      per = b == 0xdf ? 2 : 1;
      break;
    default: /* 0xc1, bin 0xc4-0xc6, ext 0xc7-0xc9 and 0xd4-0xd8 */
      return -1;
    }
    if (lenbytes) {
      uint64_t n;
      if (len - *off < lenbytes)
        return -1;
      n = be(buf + *off, lenbytes);
      *off += lenbytes;
      if (n > len)
        return -1;
      if (container)
        count = (size_t)n;
      else
        skip = (size_t)n;
    }
  }
  if (!container) {
    if (len - *off < skip)
      return -1;
    *off += skip;
    return 0;
  }
  if (depth + 1 > MAX_DEPTH || count > (len - *off) / per)
    return -1;
  for (size_t i = 0; i < count * per; i++)
    if (prescan(buf, len, off, depth + 1) < 0)
      return -1;
  return 0;
}

/* Strings must be UTF-8 (the client gets JSON text) and, like jansson's JSON
 * parser, we refuse NUL bytes so every string is also a C string. */
static json_t *str_to_json(const char *p, size_t n) {
  /* msgpack-c leaves ptr NULL for an empty string. */
  if (n == 0)
    return json_string("");
  if (memchr(p, '\0', n))
    return NULL;
  return json_stringn(p, n);
}

static json_t *object_to_json(const msgpack_object *o, int depth) {
  json_t *v = NULL;

  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return json_null();
  case MSGPACK_OBJECT_BOOLEAN:
    return json_boolean(o->via.boolean);
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    /* jansson integers are signed 64-bit; larger ones survive as reals. */
    if (o->via.u64 > (uint64_t)INT64_MAX)
      return json_real((double)o->via.u64);
    return json_integer((json_int_t)o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return json_integer((json_int_t)o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    /* NaN and infinities have no JSON spelling: json_real refuses them. */
    return json_real(o->via.f64);
  case MSGPACK_OBJECT_STR:
    return str_to_json(o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_ARRAY:
    if (depth >= MAX_DEPTH)
      return NULL;
    v = json_array();
    if (!v)
      return NULL;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      json_t *item = object_to_json(&o->via.array.ptr[i], depth + 1);
      if (!item || json_array_append_new(v, item) < 0)
        goto fail;
    }
    return v;
  case MSGPACK_OBJECT_MAP:
    if (depth >= MAX_DEPTH)
      return NULL;
    v = json_object();
    if (!v)
      return NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      const char *key;
      size_t klen;
      json_t *item;
      if (kv->key.type != MSGPACK_OBJECT_STR)
        goto fail;
      klen = kv->key.via.str.size;
      key = klen ? kv->key.via.str.ptr : "";
      if (memchr(key, '\0', klen))
        goto fail;
      item = object_to_json(&kv->val, depth + 1);
      /* json_object_setn_new checks the key is UTF-8 and consumes item. */
      if (!item || json_object_setn_new(v, key, klen, item) < 0)
        goto fail;
    }
    return v;
  default: /* bin, ext */
    return NULL;
  }
fail:
  json_decref(v);
  return NULL;
}

json_t *wr_msgpack_to_json(const uint8_t *buf, size_t len) {
  msgpack_unpacked up;
  size_t off = 0;
  json_t *v = NULL;
  msgpack_unpack_return rc;

  if (!buf || len == 0 || prescan(buf, len, &off, 0) < 0 || off != len)
    return NULL;
  off = 0;
  msgpack_unpacked_init(&up);
  rc = msgpack_unpack_next(&up, (const char *)buf, len, &off);
  /* Success with off < len means trailing bytes; CONTINUE means truncated. */
  if (rc == MSGPACK_UNPACK_SUCCESS && off == len)
    v = object_to_json(&up.data, 0);
  msgpack_unpacked_destroy(&up);
  return v;
}

/* ---- jansson → MessagePack ---- */

static int pack_json(msgpack_packer *pk, const json_t *v, int depth) {
  const char *key;
  json_t *item;
  size_t i;

  if (depth > 2 * MAX_DEPTH)
    return -EINVAL;
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    if (msgpack_pack_map(pk, json_object_size(v)) < 0)
      return -ENOMEM;
    json_object_foreach((json_t *)v, key, item) {
      size_t klen = strlen(key);
      int rc;
      if (msgpack_pack_str(pk, klen) < 0 || msgpack_pack_str_body(pk, key, klen) < 0)
        return -ENOMEM;
      rc = pack_json(pk, item, depth + 1);
      if (rc < 0)
        return rc;
    }
    return 0;
  case JSON_ARRAY:
    if (msgpack_pack_array(pk, json_array_size(v)) < 0)
      return -ENOMEM;
    json_array_foreach(v, i, item) {
      int rc = pack_json(pk, item, depth + 1);
      if (rc < 0)
        return rc;
    }
    return 0;
  case JSON_STRING: {
    size_t n = json_string_length(v);
    if (msgpack_pack_str(pk, n) < 0 || msgpack_pack_str_body(pk, json_string_value(v), n) < 0)
      return -ENOMEM;
    return 0;
  }
  case JSON_INTEGER:
    return msgpack_pack_int64(pk, (int64_t)json_integer_value(v)) < 0 ? -ENOMEM : 0;
  case JSON_REAL:
    return msgpack_pack_double(pk, json_real_value(v)) < 0 ? -ENOMEM : 0;
  case JSON_TRUE:
    return msgpack_pack_true(pk) < 0 ? -ENOMEM : 0;
  case JSON_FALSE:
    return msgpack_pack_false(pk) < 0 ? -ENOMEM : 0;
  case JSON_NULL:
    return msgpack_pack_nil(pk) < 0 ? -ENOMEM : 0;
  }
  return -EINVAL;
}

static int msgpack_encode(const json_t *v, size_t prefix, uint8_t **out, size_t *len) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  int rc = 0;

  if (!v || !out || !len)
    return -EINVAL;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (prefix > 0) {
    /* Reserve the framing prefix in the same allocation. sbuffer grows from
     * NULL with realloc, so its data is released with free(). */
    void *p = malloc(prefix);
    if (!p) {
      rc = -ENOMEM;
      goto fail;
    }
    memset(p, 0, prefix);
    sb.data = p;
    sb.size = prefix;
    sb.alloc = prefix;
  }
  rc = pack_json(&pk, v, 0);
  if (rc < 0)
    goto fail;
  if (!sb.data) {
    rc = -ENOMEM; /* impossible for a packed value, but never return NULL as success */
    goto fail;
  }
  *out = (uint8_t *)sb.data;
  *len = sb.size;
  return 0;
fail:
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

int wr_msgpack_from_json(const json_t *v, uint8_t **out, size_t *len) {
  return msgpack_encode(v, 0, out, len);
}

/* ---- decoding ---- */

/* Returns the nesting depth of containers in v (a scalar is 0). Stops
 * counting once over the limit. */
static int json_depth(const json_t *v, int limit) {
  const char *key;
  json_t *item;
  size_t i;
  int max = 0, d;

  if (limit < 0)
    return 1;
  if (json_is_object(v)) {
    json_object_foreach((json_t *)v, key, item) {
      d = json_depth(item, limit - 1);
      if (d > max)
        max = d;
      if (max > limit)
        break;
    }
    return max + 1;
  }
  if (json_is_array(v)) {
    json_array_foreach(v, i, item) {
      d = json_depth(item, limit - 1);
      if (d > max)
        max = d;
      if (max > limit)
        break;
    }
    return max + 1;
  }
  return 0;
}

static bool is_json_ws(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Picks the body format from the content type (its media type, compared
 * without case, parameters ignored) or, when there is none, from the first
 * byte. Returns 0 or -1 for a format we do not take. */
static int pick_format(const uint8_t *body, size_t len, const char *ct, wr_env_format_t *fmt) {
  if (ct) {
    const char *start = ct, *end;
    while (*start == ' ' || *start == '\t')
      start++;
    end = start;
    while (*end && *end != ';')
      end++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
      end--;
    if (end > start) {
      size_t n = (size_t)(end - start);
      if (n == 16 && strncasecmp(start, "application/json", n) == 0) {
        *fmt = WR_ENV_JSON;
        return 0;
      }
      if ((n == 19 && strncasecmp(start, "application/msgpack", n) == 0) ||
          (n == 21 && strncasecmp(start, "application/x-msgpack", n) == 0)) {
        *fmt = WR_ENV_MSGPACK;
        return 0;
      }
      return -1;
    }
  }
  if (len == 0)
    return -1;
  if ((body[0] >= 0x80 && body[0] <= 0x8f) || body[0] == 0xde || body[0] == 0xdf) {
    *fmt = WR_ENV_MSGPACK;
    return 0;
  }
  for (size_t i = 0; i < len; i++) {
    if (body[i] == '{') {
      *fmt = WR_ENV_JSON;
      return 0;
    }
    if (!is_json_ws(body[i]))
      break;
  }
  return -1;
}

/* A user id as the user index knows it (the JWT user claim): 1..256 bytes,
 * no control characters, or an integer in decimal. */
static int user_from_json(const json_t *v, char **out) {
  char tmp[32];

  if (json_is_integer(v)) {
    snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    *out = strdup(tmp);
    return *out ? 0 : -ENOMEM;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > MAX_USER_LEN)
      return -EINVAL;
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
        return -EINVAL;
    *out = strdup(s);
    return *out ? 0 : -ENOMEM;
  }
  return -EINVAL;
}

/* Adds user id u (owned) to env unless already there; seen is a set. */
static int add_user(wr_envelope_t *env, json_t *seen, char *u) {
  if (json_object_get(seen, u)) {
    free(u);
    return 0;
  }
  if (json_object_set_new(seen, u, json_true()) < 0) {
    free(u);
    return -ENOMEM;
  }
  env->users[env->n_users++] = u;
  return 0;
}

/* A top-level field of root by its key in the table. */
static const json_t *field(const json_t *root, wr_env_key_t k) {
  return json_object_get(root, wr_env_keys[k].name);
}

static wr_env_result_t collect_users(wr_envelope_t *env, const json_t *root) {
  const json_t *one = field(root, WR_ENV_KEY_USER_ID);
  const json_t *many = field(root, WR_ENV_KEY_USER_IDS);
  size_t cap = (one ? 1 : 0), i;
  json_t *seen = NULL, *item;
  wr_env_result_t r = WR_ENV_BAD_FIELD;
  char *u;

  if (many) {
    if (!json_is_array(many) || json_array_size(many) == 0 || json_array_size(many) > MAX_USERS)
      return WR_ENV_BAD_FIELD;
    cap += json_array_size(many);
  }
  if (cap == 0)
    return WR_ENV_OK;
  env->users = calloc(cap, sizeof(char *));
  seen = json_object();
  if (!env->users || !seen)
    goto out;
  if (one) {
    if (user_from_json(one, &u) < 0 || add_user(env, seen, u) < 0)
      goto out;
  }
  if (many) {
    json_array_foreach(many, i, item) {
      if (user_from_json(item, &u) < 0 || add_user(env, seen, u) < 0)
        goto out;
    }
  }
  r = WR_ENV_OK;
out:
  json_decref(seen);
  return r;
}

/* Generated ids must be unique across processes (several warren processes
 * may share a queue) and across threads: a random per-process prefix plus an
 * atomic counter. This is the one piece of process-wide state here. */
static _Atomic uint64_t id_seed;
static _Atomic uint64_t id_counter;

char *wr_envelope_new_id(void) {
  uint64_t seed = atomic_load(&id_seed);
  char buf[64];

  if (seed == 0) {
    uint64_t fresh = 0, expected = 0;
    if (getrandom(&fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      fresh =
          ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
    }
    if (fresh == 0)
      fresh = 1;
    /* Whoever wins the race, every thread then uses the same seed. */
    atomic_compare_exchange_strong(&id_seed, &expected, fresh);
    seed = atomic_load(&id_seed);
  }
  snprintf(buf, sizeof(buf), "wr-%016" PRIx64 "-%" PRIu64, seed,
           atomic_fetch_add(&id_counter, 1) + 1);
  return strdup(buf);
}

int wr_env_expiry(const double *expires_at_s, const int64_t *ttl_ms, int64_t base_ms,
                  int64_t *at_ms) {
  int64_t from_at = 0, from_ttl = 0;

  if (expires_at_s != NULL) {
    double s = *expires_at_s, ms = s * 1000.0;
    if (!(s >= 0))
      return -EINVAL;
    /* Converting a double at or past 2^63 to int64 is undefined: a deadline
     * that far saturates instead. A double product overflows to infinity at
     * worst, which is defined, and saturates too. 0 keeps its "never". */
    if (ms >= 9223372036854775808.0)
      from_at = INT64_MAX;
    else
      from_at = (int64_t)ms;
    if (s > 0 && from_at == 0)
      from_at = 1;
  }
  if (ttl_ms != NULL) {
    if (*ttl_ms < 0)
      return -EINVAL;
    /* ttl_ms >= 0, so the sum can only pass INT64_MAX. */
    if (__builtin_add_overflow(base_ms, *ttl_ms, &from_ttl))
      from_ttl = INT64_MAX;
    if (from_ttl <= 0)
      from_ttl = 1; /* 0 would read as "never" */
  }
  if (from_at != 0 && from_ttl != 0)
    *at_ms = from_at < from_ttl ? from_at : from_ttl;
  else
    *at_ms = from_at != 0 ? from_at : from_ttl;
  return 0;
}

static wr_env_result_t read_expiry(wr_envelope_t *env, const json_t *root, int64_t base_ms) {
  const json_t *at = field(root, WR_ENV_KEY_EXPIRES_AT);
  const json_t *ttl = field(root, WR_ENV_KEY_TTL_MS);
  double at_s = 0;
  int64_t ttl_ms = 0;

  if (at != NULL) {
    if (!json_is_number(at))
      return WR_ENV_BAD_FIELD;
    at_s = json_number_value(at);
  }
  if (ttl != NULL) {
    if (!json_is_integer(ttl))
      return WR_ENV_BAD_FIELD;
    ttl_ms = (int64_t)json_integer_value(ttl);
  }
  if (wr_env_expiry(at != NULL ? &at_s : NULL, ttl != NULL ? &ttl_ms : NULL, base_ms,
                    &env->expires_at_ms) < 0)
    return WR_ENV_BAD_FIELD;
  return WR_ENV_OK;
}

static wr_env_result_t build(wr_envelope_t *env, json_t *root, const char *fallback_id,
                             int64_t base_ms) {
  const json_t *bc = field(root, WR_ENV_KEY_BROADCAST);
  const json_t *id = field(root, WR_ENV_KEY_ID);
  const json_t *type = field(root, WR_ENV_KEY_TYPE);
  const json_t *created = field(root, WR_ENV_KEY_CREATED_AT);
  const char *key;
  json_t *item;
  wr_env_result_t r;

  if (json_is_number(created)) {
    env->created_at = json_number_value(created);
    env->has_created_at = true;
  }

  if (bc && !json_is_boolean(bc))
    return WR_ENV_BAD_FIELD;
  if (id &&
      (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > MAX_ID_LEN))
    return WR_ENV_BAD_FIELD;
  if (type && (!json_is_string(type) || json_string_length(type) == 0 ||
               json_string_length(type) > MAX_TYPE_LEN))
    return WR_ENV_BAD_FIELD;
  r = read_expiry(env, root, base_ms);
  if (r != WR_ENV_OK)
    return r;

  /* Malformed user fields are refused even next to broadcast=true: they
   * show a publisher bug worth seeing in Q.dead. */
  r = collect_users(env, root);
  if (r != WR_ENV_OK)
    return r;
  if (json_is_true(bc)) {
    env->broadcast = true;
    for (size_t i = 0; i < env->n_users; i++)
      free(env->users[i]);
    free(env->users);
    env->users = NULL;
    env->n_users = 0;
  } else if (env->n_users == 0) {
    return WR_ENV_NO_TARGET;
  }

  if (id)
    env->id = strdup(json_string_value(id));
  else if (fallback_id && *fallback_id)
    env->id = strdup(fallback_id);
  else
    env->id = wr_envelope_new_id();
  if (!env->id)
    return WR_ENV_BAD_FIELD; /* out of memory */

  env->client = json_object();
  if (!env->client ||
      json_object_set_new(env->client, "type",
                          type ? json_incref((json_t *)type) : json_string("notification")) < 0 ||
      json_object_set_new(env->client, "id", json_string(env->id)) < 0)
    return WR_ENV_BAD_FIELD;
  json_object_foreach(root, key, item) {
    if (!wr_env_key_to_client(wr_env_key_find(key, strlen(key))))
      continue;
    if (json_object_set(env->client, key, item) < 0)
      return WR_ENV_BAD_FIELD;
  }
  return WR_ENV_OK;
}

static wr_env_result_t decode(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                              const char *content_type, const char *fallback_id, size_t max_body,
                              int64_t base_ms, bool fast) {
  wr_env_format_t fmt;
  json_t *root = NULL;
  wr_env_result_t r;

  memset(env, 0, sizeof(*env));
  if (body_len > max_body)
    return WR_ENV_TOO_LARGE;
  if (!body && body_len > 0)
    return WR_ENV_BAD_FORMAT;
  if (pick_format(body, body_len, content_type, &fmt) < 0)
    return WR_ENV_BAD_FORMAT;
  /* Most bodies are JSON the one-pass scanner decides (env_scan.c). */
  if (fast && fmt == WR_ENV_JSON &&
      wr_envelope_scan_json(env, body, body_len, fallback_id, base_ms) == 0)
    return WR_ENV_OK;
  env->format = fmt;

  if (fmt == WR_ENV_JSON) {
    /* Flags 0: the whole buffer must be one object or array (trailing bytes
     * fail), strings must be valid UTF-8 and may not hold \u0000. */
    root = body_len ? json_loadb((const char *)body, body_len, 0, NULL) : NULL;
    if (!root || !json_is_object(root) || json_depth(root, MAX_DEPTH) > MAX_DEPTH) {
      r = WR_ENV_BAD_JSON;
      goto fail;
    }
  } else {
    root = wr_msgpack_to_json(body, body_len);
    if (!root || !json_is_object(root)) {
      r = WR_ENV_BAD_MSGPACK;
      goto fail;
    }
  }

  r = build(env, root, fallback_id, base_ms);
  if (r != WR_ENV_OK)
    goto fail;
  json_decref(root);
  return WR_ENV_OK;
fail:
  json_decref(root);
  wr_envelope_close(env);
  env->format = WR_ENV_JSON;
  return r;
}

/* The header has no out-of-memory outcome; an allocation failure while
 * decoding is reported as BAD_FIELD. */
wr_env_result_t wr_envelope_decode(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                   const char *content_type, const char *fallback_id,
                                   size_t max_body, int64_t base_ms) {
  return decode(env, body, body_len, content_type, fallback_id, max_body, base_ms, true);
}

wr_env_result_t wr_envelope_decode_full(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                        const char *content_type, const char *fallback_id,
                                        size_t max_body, int64_t base_ms) {
  return decode(env, body, body_len, content_type, fallback_id, max_body, base_ms, false);
}

void wr_envelope_close(wr_envelope_t *env) {
  if (!env)
    return;
  if (env->block != NULL) {
    free(env->block); /* the fast path's id, users and client_json */
  } else {
    free(env->client_json);
    free(env->id);
    for (size_t i = 0; i < env->n_users; i++)
      free(env->users[i]);
    free(env->users);
  }
  json_decref(env->client);
  memset(env, 0, sizeof(*env));
}

int wr_envelope_encode(const wr_envelope_t *env, wr_env_format_t fmt, size_t prefix, uint8_t **out,
                       size_t *len) {
  size_t need;
  uint8_t *buf;

  if (!env || (!env->client && !env->client_json) || !out || !len)
    return -EINVAL;
  if (env->client_json != NULL) {
    if (fmt == WR_ENV_JSON) {
      need = env->client_json_len;
      if (need > SIZE_MAX - prefix || (buf = malloc(prefix + need)) == NULL)
        return -ENOMEM;
      memcpy(buf + prefix, env->client_json, need);
      *out = buf;
      *len = prefix + need;
      return 0;
    }
    if (fmt != WR_ENV_MSGPACK)
      return -EINVAL;
    /* MessagePack subscribers of a JSON body: rare enough to go through a
     * tree, built from the compact text. */
    json_t *tree = json_loadb((const char *)env->client_json, env->client_json_len, 0, NULL);
    int rc = tree != NULL ? msgpack_encode(tree, prefix, out, len) : -EINVAL;
    json_decref(tree);
    return rc;
  }
  if (fmt == WR_ENV_MSGPACK)
    return msgpack_encode(env->client, prefix, out, len);
  if (fmt != WR_ENV_JSON)
    return -EINVAL;

  /* Compact, UTF-8 kept as is, key order as decoded. */
  need = json_dumpb(env->client, NULL, 0, JSON_COMPACT);
  if (need == 0)
    return -EINVAL;
  if (need > SIZE_MAX - prefix)
    return -ENOMEM;
  buf = malloc(prefix + need);
  if (!buf)
    return -ENOMEM;
  if (json_dumpb(env->client, (char *)buf + prefix, need, JSON_COMPACT) != need) {
    free(buf);
    return -EINVAL;
  }
  *out = buf;
  *len = prefix + need;
  return 0;
}
