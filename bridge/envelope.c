/* Notification envelopes (README.md, "Publishing a notification"): JSON or MessagePack in, one
 * jansson tree for the client out, encoded once per format by the writers here (not jansson's
 * json_dumpb, which knows no integers beyond int64). Pure functions: no I/O, no logs. */
#include "bridge/envelope_int.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
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

/* ---- integers beyond int64 ---- */

#define BIGNUM_TAG 0xff

json_t *wr_json_bignum(const char *digits, size_t n) {
  char buf[64], *b = buf;
  json_t *v;
  if (n + 1 > sizeof(buf) && (b = malloc(n + 1)) == NULL)
    return NULL;
  b[0] = (char)BIGNUM_TAG;
  memcpy(b + 1, digits, n);
  v = json_stringn_nocheck(b, n + 1);
  if (b != buf)
    free(b);
  return v;
}

const char *wr_json_bignum_digits(const json_t *v, size_t *n) {
  const char *s;
  if (!json_is_string(v) || json_string_length(v) < 2)
    return NULL;
  s = json_string_value(v);
  if ((uint8_t)s[0] != BIGNUM_TAG)
    return NULL;
  *n = json_string_length(v) - 1;
  return s + 1;
}

/* Whether v is a string of the body (not a bignum). */
static bool is_text(const json_t *v) {
  size_t n;
  return json_is_string(v) && wr_json_bignum_digits(v, &n) == NULL;
}

/* A bignum's value: a uint64 (true) when it is one, else the nearest double. */
static bool bignum_value(const char *digits, size_t n, uint64_t *u, double *d) {
  char buf[32];
  if (digits[0] != '-' &&
      (n < 20 || (n == 20 && memcmp(digits, "18446744073709551615", 20) <= 0))) {
    memcpy(buf, digits, n);
    buf[n] = '\0';
    *u = strtoull(buf, NULL, 10);
    return true;
  }
  char *b = malloc(n + 1);
  if (b == NULL) {
    *d = digits[0] == '-' ? -HUGE_VAL : HUGE_VAL; /* never: the parser checked strtod */
    return false;
  }
  memcpy(b, digits, n);
  b[n] = '\0';
  *d = strtod(b, NULL);
  free(b);
  return false;
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

/* Strings must be UTF-8 (the client gets JSON text). exact (envelopes) lets
 * them hold NUL, as JSON strings may hold \u0000; client messages refuse it,
 * so every string there is also a C string. */
static json_t *str_to_json(const char *p, size_t n, bool exact) {
  /* msgpack-c leaves ptr NULL for an empty string. */
  if (n == 0)
    return json_string("");
  if (!exact && memchr(p, '\0', n))
    return NULL;
  return json_stringn(p, n);
}

/* exact: a uint64 beyond int64 becomes a bignum (envelopes), else a double. */
static json_t *object_to_json(const msgpack_object *o, int depth, bool exact) {
  json_t *v = NULL;

  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return json_null();
  case MSGPACK_OBJECT_BOOLEAN:
    return json_boolean(o->via.boolean);
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    /* jansson integers are signed 64-bit. */
    if (o->via.u64 > (uint64_t)INT64_MAX) {
      char digits[24];
      if (!exact)
        return json_real((double)o->via.u64);
      return wr_json_bignum(digits,
                            (size_t)snprintf(digits, sizeof(digits), "%" PRIu64, o->via.u64));
    }
    return json_integer((json_int_t)o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return json_integer((json_int_t)o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    /* NaN and infinities have no JSON spelling: json_real refuses them. */
    return json_real(o->via.f64);
  case MSGPACK_OBJECT_STR:
    return str_to_json(o->via.str.ptr, o->via.str.size, exact);
  case MSGPACK_OBJECT_ARRAY:
    if (depth >= MAX_DEPTH)
      return NULL;
    v = json_array();
    if (!v)
      return NULL;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      json_t *item = object_to_json(&o->via.array.ptr[i], depth + 1, exact);
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
      /* Keys are C strings in jansson, and JSON keys with \u0000 are refused
       * too (env_scan.c): the same rule for both formats. */
      if (memchr(key, '\0', klen))
        goto fail;
      item = object_to_json(&kv->val, depth + 1, exact);
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

static json_t *mp_to_tree(const uint8_t *buf, size_t len, bool exact) {
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
    v = object_to_json(&up.data, 0, exact);
  msgpack_unpacked_destroy(&up);
  return v;
}

json_t *wr_msgpack_to_json(const uint8_t *buf, size_t len) {
  return mp_to_tree(buf, len, false);
}

json_t *wr_msgpack_load(const uint8_t *buf, size_t len) {
  return mp_to_tree(buf, len, true);
}

/* ---- writers: a tree as compact JSON text or as MessagePack ----
 * Each writes at o, or with o NULL only counts: the size-only pass that
 * bounds a client message without building it, and sizes the buffer the
 * writing pass then fills. SIZE_MAX: the tree cannot be written (nested
 * deeper than any decoded body). */

#define MAX_WRITE_DEPTH (2 * MAX_DEPTH)

static size_t put(uint8_t *o, const void *p, size_t n) {
  if (o != NULL)
    memcpy(o, p, n);
  return n;
}

/* A string's JSON text: escaped as jansson escapes (the quote, the backslash
 * and control characters; everything else, DEL and UTF-8 included, as is).
 * Never longer than any valid JSON spelling of the same string. */
static size_t json_str(const char *p, size_t n, uint8_t *o) {
  static const char hex[] = "0123456789ABCDEF";
  size_t len = put(o, "\"", 1);
  for (size_t i = 0; i < n;) {
    size_t run = i;
    while (run < n && (uint8_t)p[run] >= 0x20 && p[run] != '"' && p[run] != '\\')
      run++;
    len += put(o != NULL ? o + len : NULL, p + i, run - i);
    if ((i = run) >= n)
      break;
    uint8_t c = (uint8_t)p[i++], e[6] = {'\\', 0, '0', '0', 0, 0};
    switch (c) {
    case '"':
    case '\\':
      e[1] = c;
      break;
    case '\b':
      e[1] = 'b';
      break;
    case '\f':
      e[1] = 'f';
      break;
    case '\n':
      e[1] = 'n';
      break;
    case '\r':
      e[1] = 'r';
      break;
    case '\t':
      e[1] = 't';
      break;
    default:
      e[1] = 'u';
      e[4] = (uint8_t)hex[c >> 4];
      e[5] = (uint8_t)hex[c & 15];
      len += put(o != NULL ? o + len : NULL, e, 6);
      continue;
    }
    len += put(o != NULL ? o + len : NULL, e, 2);
  }
  return len + put(o != NULL ? o + len : NULL, "\"", 1);
}

/* The text of a double that reads back as the same double and as a JSON
 * real (a '.' or an exponent), and is no longer than any other such text:
 * the fewest significant digits that round-trip (at most 17), written
 * positionally ("0.001", "12.5", "12000.0"), as d.ddde±x, or with an integer
 * mantissa ("12e3"), whichever is shortest. So a real decoded from JSON text
 * never comes out longer than it came in. Returns the length (at most 26). */
static size_t real_text(double d, char *out) {
  char e[40], dig[20];
  int nd = 0, exp10, n;
  const char *p;
  bool neg;
  /* A decimal of at most 15 digits reads back from the double it gave
   * (DBL_DIG), so when the shortest text has at most 15 digits, the 15-digit
   * rounding is it, with zeros after: one try in most cases. Not so below
   * DBL_MIN, where doubles have fewer digits: try every precision. */
  int prec = d != 0 && fabs(d) < DBL_MIN ? 1 : 15;
  for (;; prec++) {
    snprintf(e, sizeof(e), "%.*e", prec - 1, d);
    if (prec == 17 || strtod(e, NULL) == d)
      break;
  }
  neg = e[0] == '-';
  for (p = e + neg; *p != 'e'; p++)
    if (*p != '.')
      dig[nd++] = *p;
  exp10 = atoi(p + 1);
  while (nd > 1 && dig[nd - 1] == '0')
    nd--;
  /* Positional, unless so far from the point that an exponent is shorter
   * anyway (an exponent form has at most 24 characters). */
  char a[48], b[48], c[48];
  size_t la = 0, lb = 0, lc = 0;
  if (neg)
    a[la++] = b[lb++] = c[lc++] = '-';
  if (exp10 >= 0 && exp10 < 24) {
    for (int i = 0; i <= exp10; i++)
      a[la++] = i < nd ? dig[i] : '0';
    a[la++] = '.';
    if (nd > exp10 + 1)
      for (int i = exp10 + 1; i < nd; i++)
        a[la++] = dig[i];
    else
      a[la++] = '0';
  } else if (exp10 < 0 && -exp10 + nd < 30) {
    a[la++] = '0';
    a[la++] = '.';
    for (int i = 1; i < -exp10; i++)
      a[la++] = '0';
    for (int i = 0; i < nd; i++)
      a[la++] = dig[i];
  } else {
    la = sizeof(a); /* longer than the others */
  }
  /* d.ddde±x */
  b[lb++] = dig[0];
  if (nd > 1) {
    b[lb++] = '.';
    for (int i = 1; i < nd; i++)
      b[lb++] = dig[i];
  }
  n = snprintf(b + lb, sizeof(b) - lb, "e%d", exp10);
  lb += (size_t)n;
  /* dddde±x */
  for (int i = 0; i < nd; i++)
    c[lc++] = dig[i];
  n = snprintf(c + lc, sizeof(c) - lc, "e%d", exp10 - (nd - 1));
  lc += (size_t)n;
  if (la <= lb && la <= lc) {
    memcpy(out, a, la);
    return la;
  }
  if (lb <= lc) {
    memcpy(out, b, lb);
    return lb;
  }
  memcpy(out, c, lc);
  return lc;
}

static size_t json_put(const json_t *v, uint8_t *o, int depth) {
  char num[40];
  const char *digits, *key;
  size_t len = 0, n, klen, i;
  json_t *item;

  if (depth > MAX_WRITE_DEPTH)
    return SIZE_MAX;
#define OUT (o != NULL ? o + len : NULL)
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    len += put(OUT, "{", 1);
    json_object_keylen_foreach((json_t *)v, key, klen, item) {
      if (len > 1)
        len += put(OUT, ",", 1);
      len += json_str(key, klen, OUT);
      len += put(OUT, ":", 1);
      if ((n = json_put(item, OUT, depth + 1)) == SIZE_MAX)
        return SIZE_MAX;
      len += n;
    }
    return len + put(OUT, "}", 1);
  case JSON_ARRAY:
    len += put(OUT, "[", 1);
    json_array_foreach(v, i, item) {
      if (i > 0)
        len += put(OUT, ",", 1);
      if ((n = json_put(item, OUT, depth + 1)) == SIZE_MAX)
        return SIZE_MAX;
      len += n;
    }
    return len + put(OUT, "]", 1);
  case JSON_STRING:
    if ((digits = wr_json_bignum_digits(v, &n)) != NULL)
      return put(o, digits, n);
    return json_str(json_string_value(v), json_string_length(v), o);
  case JSON_INTEGER:
    return put(o, num,
               (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
  case JSON_REAL:
    return put(o, num, real_text(json_real_value(v), num));
  case JSON_TRUE:
    return put(o, "true", 4);
  case JSON_FALSE:
    return put(o, "false", 5);
  case JSON_NULL:
    return put(o, "null", 4);
  }
#undef OUT
  return SIZE_MAX;
}

/* A MessagePack type byte then n big-endian bytes of x. */
static size_t mp_head(uint8_t *o, uint8_t type, uint64_t x, size_t n) {
  if (o != NULL) {
    o[0] = type;
    for (size_t i = 0; i < n; i++)
      o[1 + i] = (uint8_t)(x >> (8 * (n - 1 - i)));
  }
  return 1 + n;
}

/* The header of a str, array or map of n items, in the smallest form (as
 * msgpack-c packs). */
static size_t mp_len(uint8_t *o, json_type t, size_t n) {
  if (t == JSON_STRING)
    return n < 32      ? mp_head(o, (uint8_t)(0xa0 | n), 0, 0)
           : n < 256   ? mp_head(o, 0xd9, n, 1)
           : n < 65536 ? mp_head(o, 0xda, n, 2)
                       : mp_head(o, 0xdb, n, 4);
  if (n < 16)
    return mp_head(o, (uint8_t)((t == JSON_ARRAY ? 0x90 : 0x80) | n), 0, 0);
  if (n < 65536)
    return mp_head(o, t == JSON_ARRAY ? 0xdc : 0xde, n, 2);
  return mp_head(o, t == JSON_ARRAY ? 0xdd : 0xdf, n, 4);
}

/* An int64 in the smallest form, as msgpack_pack_int64. */
static size_t mp_int(uint8_t *o, int64_t d) {
  if (d < -(1LL << 5)) {
    if (d < -(1LL << 15))
      return d < -(1LL << 31) ? mp_head(o, 0xd3, (uint64_t)d, 8) : mp_head(o, 0xd2, (uint64_t)d, 4);
    return d < -(1LL << 7) ? mp_head(o, 0xd1, (uint64_t)d, 2) : mp_head(o, 0xd0, (uint64_t)d, 1);
  }
  if (d < (1LL << 7))
    return mp_head(o, (uint8_t)d, 0, 0);
  if (d < (1LL << 16))
    return d < (1LL << 8) ? mp_head(o, 0xcc, (uint64_t)d, 1) : mp_head(o, 0xcd, (uint64_t)d, 2);
  return d < (1LL << 32) ? mp_head(o, 0xce, (uint64_t)d, 4) : mp_head(o, 0xcf, (uint64_t)d, 8);
}

static size_t mp_double(uint8_t *o, double d) {
  uint64_t bits;
  memcpy(&bits, &d, sizeof(bits));
  return mp_head(o, 0xcb, bits, 8);
}

/* A bignum in MessagePack, which has no integer beyond uint64: a uint64 up
 * to UINT64_MAX, exact; beyond (or below INT64_MIN) the nearest float64,
 * the number a JSON client's JSON.parse reads from the same digits. Not the
 * digits as a string: the type would differ between the two formats, and
 * code that compares or adds would break silently. */
static size_t mp_bignum(uint8_t *o, const char *digits, size_t n) {
  uint64_t u;
  double d;
  if (bignum_value(digits, n, &u, &d))
    return mp_head(o, 0xcf, u, 8);
  return mp_double(o, d);
}

static size_t mp_put(const json_t *v, uint8_t *o, int depth) {
  const char *key, *digits;
  size_t len, n, klen, i;
  json_t *item;

  if (depth > MAX_WRITE_DEPTH)
    return SIZE_MAX;
#define OUT (o != NULL ? o + len : NULL)
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    len = mp_len(o, JSON_OBJECT, json_object_size(v));
    json_object_keylen_foreach((json_t *)v, key, klen, item) {
      len += mp_len(OUT, JSON_STRING, klen);
      len += put(OUT, key, klen);
      if ((n = mp_put(item, OUT, depth + 1)) == SIZE_MAX)
        return SIZE_MAX;
      len += n;
    }
    return len;
  case JSON_ARRAY:
    len = mp_len(o, JSON_ARRAY, json_array_size(v));
    json_array_foreach(v, i, item) {
      if ((n = mp_put(item, OUT, depth + 1)) == SIZE_MAX)
        return SIZE_MAX;
      len += n;
    }
    return len;
  case JSON_STRING:
    if ((digits = wr_json_bignum_digits(v, &n)) != NULL)
      return mp_bignum(o, digits, n);
    n = json_string_length(v);
    len = mp_len(o, JSON_STRING, n);
    return len + put(OUT, json_string_value(v), n);
  case JSON_INTEGER:
    return mp_int(o, (int64_t)json_integer_value(v));
  case JSON_REAL:
    return mp_double(o, json_real_value(v));
  case JSON_TRUE:
    return mp_head(o, 0xc3, 0, 0);
  case JSON_FALSE:
    return mp_head(o, 0xc2, 0, 0);
  case JSON_NULL:
    return mp_head(o, 0xc0, 0, 0);
  }
#undef OUT
  return SIZE_MAX;
}

size_t wr_json_size(const json_t *v) {
  return v != NULL ? json_put(v, NULL, 0) : SIZE_MAX;
}

size_t wr_msgpack_size(const json_t *v) {
  return v != NULL ? mp_put(v, NULL, 0) : SIZE_MAX;
}

/* v in format fmt into a new buffer of exactly its size, after prefix
 * reserved (uninitialised) bytes. */
static int write_tree(const json_t *v, wr_env_format_t fmt, size_t prefix, uint8_t **out,
                      size_t *len) {
  size_t need = fmt == WR_ENV_JSON ? wr_json_size(v) : wr_msgpack_size(v);
  uint8_t *buf;

  if (need == SIZE_MAX)
    return -EINVAL;
  if (need > SIZE_MAX - prefix || (buf = malloc(prefix + need)) == NULL)
    return -ENOMEM;
  if (fmt == WR_ENV_JSON)
    json_put(v, buf + prefix, 0);
  else
    mp_put(v, buf + prefix, 0);
  *out = buf;
  *len = prefix + need;
  return 0;
}

int wr_msgpack_from_json(const json_t *v, uint8_t **out, size_t *len) {
  if (v == NULL || out == NULL || len == NULL)
    return -EINVAL;
  return write_tree(v, WR_ENV_MSGPACK, 0, out, len);
}

/* ---- decoding ---- */

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
      /* Nearly every publisher spells it so: no need to fold case. */
      if (n == 16 && (memcmp(start, "application/json", n) == 0 ||
                      strncasecmp(start, "application/json", n) == 0)) {
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
 * no control characters, or an integer in decimal; not an integer beyond
 * int64 (a bignum), which no JWT claim of ours could match in every client
 * library. */
static int user_from_json(const json_t *v, char **out) {
  char tmp[32];

  if (json_is_integer(v)) {
    snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    *out = strdup(tmp);
    return *out ? 0 : -ENOMEM;
  }
  if (is_text(v)) {
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

/* The double of a number field: an integer, a real or a bignum. */
static bool number_of(const json_t *v, double *out) {
  const char *digits;
  size_t n;
  uint64_t u;
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return true;
  }
  if ((digits = wr_json_bignum_digits(v, &n)) == NULL)
    return false;
  if (bignum_value(digits, n, &u, out))
    *out = (double)u;
  return true;
}

static wr_env_result_t read_expiry(wr_envelope_t *env, const json_t *root, int64_t base_ms) {
  const json_t *at = field(root, WR_ENV_KEY_EXPIRES_AT);
  const json_t *ttl = field(root, WR_ENV_KEY_TTL_MS);
  const char *digits;
  size_t n;
  double at_s = 0;
  int64_t ttl_ms = 0;

  if (at != NULL && !number_of(at, &at_s))
    return WR_ENV_BAD_FIELD;
  if (ttl != NULL) {
    if (json_is_integer(ttl))
      ttl_ms = (int64_t)json_integer_value(ttl);
    else if ((digits = wr_json_bignum_digits(ttl, &n)) != NULL)
      ttl_ms = digits[0] == '-' ? INT64_MIN : INT64_MAX; /* refused, or saturates */
    else
      return WR_ENV_BAD_FIELD;
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

  if (created != NULL && number_of(created, &env->created_at))
    env->has_created_at = true;

  if (bc && !json_is_boolean(bc))
    return WR_ENV_BAD_FIELD;
  /* The id is a C string (acks, logs, headers): no NUL inside. The type only
   * reaches clients, so it is any string. */
  if (id && (!is_text(id) || json_string_length(id) == 0 || json_string_length(id) > MAX_ID_LEN ||
             strlen(json_string_value(id)) != json_string_length(id)))
    return WR_ENV_BAD_FIELD;
  if (type &&
      (!is_text(type) || json_string_length(type) == 0 || json_string_length(type) > MAX_TYPE_LEN))
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

static size_t sat_mul(size_t a, size_t k) {
  return a > SIZE_MAX / k ? SIZE_MAX : a * k;
}

static size_t sat_add(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

size_t wr_envelope_max_client(size_t max_body) {
  return sat_add(sat_mul(max_body, 2), WR_ENV_CLIENT_SLACK);
}

/* Whether env's client message fits max_client bytes in both formats. The
 * size-only passes run only when a bound does not settle it. Bounds, from a
 * body of body_len bytes: written as JSON text, a JSON body's values take no
 * more bytes than they were sent in (env_scan.c, real_text), a MessagePack
 * body's at most 6 per byte (a control character in a string becomes
 * \u0001, false with its comma "false,"); as MessagePack, a MessagePack
 * body's values at most 9/5 of their bytes (a float32 becomes a float64).
 * What warren adds, the type "notification" and an id not in the body (at
 * most 6 bytes per byte with JSON escapes), is within 64 + 6 x the id. */
static wr_env_result_t check_size(const wr_envelope_t *env, wr_env_format_t fmt, size_t body_len,
                                  size_t max_client) {
  size_t head = sat_add(64, sat_mul(strlen(env->id), 6));
  size_t json_bound = sat_add(fmt == WR_ENV_JSON ? body_len : sat_mul(body_len, 6), head);
  size_t mp_bound = fmt == WR_ENV_MSGPACK ? sat_add(sat_mul(body_len, 2), head) : SIZE_MAX;

  if (json_bound > max_client && wr_json_size(env->client) > max_client)
    return WR_ENV_TOO_LARGE;
  if (mp_bound > max_client && wr_msgpack_size(env->client) > max_client)
    return WR_ENV_TOO_LARGE;
  return WR_ENV_OK;
}

/* The header has no out-of-memory outcome; an allocation failure while
 * decoding is reported as BAD_FIELD. */
wr_env_result_t wr_envelope_decode_opts(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                        const char *content_type, const char *fallback_id,
                                        const wr_env_opts_t *o) {
  wr_env_format_t fmt;
  json_t *root = NULL;
  wr_env_result_t r;
  size_t reals;

  memset(env, 0, sizeof(*env));
  if (body_len > o->max_body)
    return WR_ENV_TOO_LARGE;
  if (!body && body_len > 0)
    return WR_ENV_BAD_FORMAT;
  if (pick_format(body, body_len, content_type, &fmt) < 0)
    return WR_ENV_BAD_FORMAT;
  /* Most bodies are JSON the one-pass scanner decides (env_scan.c). */
  if (!o->full && fmt == WR_ENV_JSON &&
      wr_envelope_scan_json(env, body, body_len, fallback_id, o->base_ms, &reals) == 0) {
    size_t n = env->client_json_len;
    /* The same message as MessagePack, which clients of that format get, is
     * at most this text plus 6 bytes per real (3 characters can become 9
     * bytes) plus 1 per string of 256 bytes or more (3 from 64 KiB): a
     * string takes its bytes unescaped and a header no longer than its
     * quotes below that, a container a header no longer than its brackets
     * and commas, an integer or a literal no more bytes than its digits or
     * letters. When even that bound passes the limit, the full decoder
     * measures exactly. */
    if (n <= o->max_client && n + n / 128 + 6 * reals <= o->max_client)
      return WR_ENV_OK;
    wr_envelope_close(env);
  }
  env->format = fmt;

  if (fmt == WR_ENV_JSON) {
    /* Our own parser (env_scan.c): jansson's refuses integers beyond int64. */
    root = wr_json_load(body, body_len);
    if (!root) {
      r = WR_ENV_BAD_JSON;
      goto fail;
    }
  } else {
    root = wr_msgpack_load(body, body_len);
    if (!root || !json_is_object(root)) {
      r = WR_ENV_BAD_MSGPACK;
      goto fail;
    }
  }

  r = build(env, root, fallback_id, o->base_ms);
  if (r == WR_ENV_OK)
    r = check_size(env, fmt, body_len, o->max_client);
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

wr_env_result_t wr_envelope_decode(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                   const char *content_type, const char *fallback_id,
                                   size_t max_body, int64_t base_ms) {
  wr_env_opts_t o = {max_body, wr_envelope_max_client(max_body), base_ms, false};
  return wr_envelope_decode_opts(env, body, body_len, content_type, fallback_id, &o);
}

wr_env_result_t wr_envelope_decode_full(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                        const char *content_type, const char *fallback_id,
                                        size_t max_body, int64_t base_ms) {
  wr_env_opts_t o = {max_body, wr_envelope_max_client(max_body), base_ms, true};
  return wr_envelope_decode_opts(env, body, body_len, content_type, fallback_id, &o);
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
  if (!env || (!env->client && !env->client_json) || !out || !len)
    return -EINVAL;
  if (fmt != WR_ENV_JSON && fmt != WR_ENV_MSGPACK)
    return -EINVAL;
  if (env->client_json != NULL) {
    size_t need = env->client_json_len;
    uint8_t *buf;
    if (fmt == WR_ENV_JSON) {
      if (need > SIZE_MAX - prefix || (buf = malloc(prefix + need)) == NULL)
        return -ENOMEM;
      memcpy(buf + prefix, env->client_json, need);
      *out = buf;
      *len = prefix + need;
      return 0;
    }
    /* MessagePack subscribers of a JSON body: rare enough to go through a
     * tree, built from the compact text. */
    json_t *tree = wr_json_load(env->client_json, env->client_json_len);
    int rc = tree != NULL ? write_tree(tree, fmt, prefix, out, len) : -EINVAL;
    json_decref(tree);
    return rc;
  }
  return write_tree(env->client, fmt, prefix, out, len);
}
