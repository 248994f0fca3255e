/* The fast path of envelope decoding: one pass over a JSON body that
 * validates it, reads the routing fields and writes the client message as
 * JSON text, copying every other field's bytes (whitespace removed) instead
 * of building a jansson tree and dumping it again.
 *
 * It takes only what it can decide exactly as the full decoder would
 * (envelope.c): anything unusual — an error of any kind, escapes in keys or
 * routing strings, routing integers over 18 digits, nesting over 32,
 * duplicate top-level keys, more than 64 top-level fields or user ids, a
 * client message that may pass the size limit — makes it give up, and the
 * full decoder decides. Strings holding \u0000 and integers beyond int64 are
 * no reason to give up: they reach a JSON client as the very bytes sent. The
 * fuzzer checks that both agree (tests/fuzz/fuzz_envelope.c).
 *
 * The full decoder's JSON parser is here too (wr_json_load): the same
 * validating scanner, building a jansson tree, since jansson's own parser
 * refuses integers beyond int64. Pure functions: no I/O, no logs. */
#include "bridge/envelope_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32
#define MAX_FIELDS 64
#define MAX_FAST_USERS 64
#define MAX_STR 256 /* id, type and user id lengths */

typedef struct {
  const uint8_t *p, *end;
  uint8_t *out; /* minified copy goes here when not NULL */
  size_t out_len;
  size_t reals; /* real numbers read (each may grow 3 bytes to 9 in MessagePack) */
} scan_t;

typedef struct {
  const uint8_t *k; /* key without quotes */
  size_t kn;
  const uint8_t *v; /* value, raw */
  size_t vn;
  bool routing; /* a routing or head field: not copied to the client */
} field_t;

static inline void ws(scan_t *s) {
  /* Most calls find a token at once: every whitespace byte is <= ' '. */
  while (s->p < s->end && *s->p <= ' ' &&
         (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

static void emit(scan_t *s, const uint8_t *from, size_t n) {
  if (s->out != NULL) {
    memcpy(s->out + s->out_len, from, n);
    s->out_len += n;
  }
}

static int hex4(const uint8_t *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t c = p[i];
    *v <<= 4;
    if (c >= '0' && c <= '9')
      *v |= c - '0';
    else if (c >= 'a' && c <= 'f')
      *v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      *v |= c - 'A' + 10;
    else
      return -1;
  }
  return 0;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), 0 if invalid. */
static size_t utf8_len(const uint8_t *p, const uint8_t *end) {
  size_t n = (size_t)(end - p);
  uint8_t c = p[0];
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
      return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f))
      return 0;
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
      return 0;
    if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
      return 0;
    return 4;
  }
  return 0;
}

/* Skips the bytes that need no look of their own inside a string: printable
 * ASCII other than the quote, the backslash and DEL. Eight at a time: a word
 * with a special byte (a control byte, '"', '\\', DEL or >= 0x80) says where
 * the first one is; the last few bytes before end go one at a time. Bodies
 * are mostly plain text, and this is where a notification's bytes are read. */
static const uint8_t *skip_plain(const uint8_t *q, const uint8_t *end) {
  const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  while (end - q >= 8) {
    uint64_t x;
    memcpy(&x, q, 8);
    /* Per byte b with its top bit clear, (b - k) & ~b & 0x80 is set exactly
     * when b < k, or when a borrow comes from the byte below, which happens
     * only if that byte is itself below k, so flagged. The lowest flag is
     * therefore exact: a byte below 0x20, a zero of an XOR (a '"', '\\' or
     * DEL), or a top bit of x itself. */
    uint64_t quote = x ^ (ones * '"'), bslash = x ^ (ones * '\\'), del = x ^ (ones * 0x7f);
    uint64_t special =
        (x & highs) |
        (((x - ones * 0x20) | (quote - ones) | (bslash - ones) | (del - ones)) & ~x & highs);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (special != 0)
      return q + (__builtin_ctzll(special) >> 3);
#else
    if (special != 0)
      break; /* the lowest flag is the last byte in memory: go one at a time */
#endif
    q += 8;
  }
  while (q < end && *q >= 0x20 && *q < 0x7f && *q != '"' && *q != '\\')
    q++;
  return q;
}

/* A string at s->p (on its quote). *plain tells whether it has no escapes
 * and no byte outside printable ASCII except UTF-8 (and no DEL). A key may
 * not hold \u0000: jansson refuses one (its keys are C strings), and so
 * do we, for keys, everywhere. */
static int string(scan_t *s, bool *plain, bool key) {
  const uint8_t *start = s->p, *q;
  bool pl = true;
  if (s->p >= s->end || *s->p != '"')
    return -1;
  q = s->p + 1;
  for (;;) {
    q = skip_plain(q, s->end);
    if (q >= s->end || *q == '"')
      break;
    uint8_t c = *q;
    if (c < 0x20)
      return -1;
    if (c == '\\') {
      pl = false;
      if (q + 1 >= s->end)
        return -1;
      c = q[1];
      if (c == 'u') {
        unsigned v, w;
        if (s->end - q < 6 || hex4(q + 2, &v) < 0 || (v == 0 && key))
          return -1;
        q += 6;
        if (v >= 0xdc00 && v <= 0xdfff)
          return -1;
        if (v >= 0xd800 && v <= 0xdbff) {
          if (s->end - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &w) < 0 || w < 0xdc00 ||
              w > 0xdfff)
            return -1;
          q += 6;
        }
        continue;
      }
      if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
          c != 't')
        return -1;
      q += 2;
      continue;
    }
    if (c >= 0x80) {
      size_t n = utf8_len(q, s->end);
      if (n == 0)
        return -1;
      q += n;
      continue;
    }
    if (c == 0x7f)
      pl = false;
    q++;
  }
  if (q >= s->end)
    return -1;
  s->p = q + 1;
  emit(s, start, (size_t)(s->p - start));
  if (plain != NULL)
    *plain = pl;
  return 0;
}

/* strtod of the n bytes of a valid JSON number at p (not NUL-terminated). */
static double num_strtod(const uint8_t *p, size_t n) {
  char buf[64], *b = buf;
  double d;
  if (n >= sizeof(buf) && (b = malloc(n + 1)) == NULL)
    return INFINITY; /* out of memory: refused like an overflow */
  memcpy(b, p, n);
  b[n] = '\0';
  d = strtod(b, NULL);
  if (b != buf)
    free(b);
  return d;
}

/* A number: the JSON grammar, and a value within a double's range. jansson
 * refuses a real that overflows a double, and so do we, and an integer of
 * that size too: a client could read only infinity from either. Integers
 * beyond int64 otherwise pass (their digits reach a JSON client as sent). */
static int number(scan_t *s, bool *is_int) {
  const uint8_t *start = s->p, *q = s->p;
  size_t digits = 0;
  long pexp = 0; /* a positive exponent's value, capped */
  bool real = false;
  if (q < s->end && *q == '-')
    q++;
  if (q >= s->end)
    return -1;
  if (*q == '0') {
    q++;
    digits = 1;
  } else if (*q >= '1' && *q <= '9') {
    while (q < s->end && *q >= '0' && *q <= '9') {
      q++;
      digits++;
    }
  } else {
    return -1;
  }
  if (q < s->end && *q == '.') {
    real = true;
    q++;
    if (q >= s->end || *q < '0' || *q > '9')
      return -1;
    while (q < s->end && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < s->end && (*q == 'e' || *q == 'E')) {
    bool minus;
    real = true;
    q++;
    minus = q < s->end && *q == '-';
    if (q < s->end && (*q == '+' || *q == '-'))
      q++;
    if (q >= s->end || *q < '0' || *q > '9')
      return -1;
    while (q < s->end && *q >= '0' && *q <= '9') {
      if (!minus && pexp < 100000)
        pexp = pexp * 10 + (*q - '0');
      q++;
    }
  }
  /* It overflows a double only if its integer digits plus a positive
   * exponent pass 308: only then ask strtod. */
  if (digits + (size_t)pexp > 300 && isinf(num_strtod(start, (size_t)(q - start))))
    return -1;
  s->reals += real;
  s->p = q;
  emit(s, start, (size_t)(q - start));
  if (is_int != NULL)
    *is_int = !real;
  return 0;
}

static int literal(scan_t *s, const char *word, size_t n) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
    return -1;
  emit(s, s->p, n);
  s->p += n;
  return 0;
}

static int value(scan_t *s, int depth);

static int container(scan_t *s, int depth, bool object) {
  uint8_t close = object ? '}' : ']';
  if (depth >= MAX_DEPTH)
    return -1;
  emit(s, s->p, 1);
  s->p++;
  ws(s);
  if (s->p < s->end && *s->p == close) {
    emit(s, s->p, 1);
    s->p++;
    return 0;
  }
  for (;;) {
    if (object) {
      ws(s);
      if (string(s, NULL, true) < 0)
        return -1;
      ws(s);
      if (s->p >= s->end || *s->p != ':')
        return -1;
      emit(s, s->p, 1);
      s->p++;
    }
    if (value(s, depth + 1) < 0)
      return -1;
    ws(s);
    if (s->p >= s->end)
      return -1;
    if (*s->p == ',') {
      emit(s, s->p, 1);
      s->p++;
      continue;
    }
    if (*s->p != close)
      return -1;
    emit(s, s->p, 1);
    s->p++;
    return 0;
  }
}

/* One value at s->p (after whitespace), depth = containers around it. */
static int value(scan_t *s, int depth) {
  ws(s);
  if (s->p >= s->end)
    return -1;
  switch (*s->p) {
  case '"':
    return string(s, NULL, false);
  case '{':
    return container(s, depth, true);
  case '[':
    return container(s, depth, false);
  case 't':
    return literal(s, "true", 4);
  case 'f':
    return literal(s, "false", 5);
  case 'n':
    return literal(s, "null", 4);
  default:
    return number(s, NULL);
  }
}

/* A plain string value (quotes included in v/vn): its content, 1..MAX_STR
 * bytes, no escapes, no DEL. v is a value pass 1 (or user_items) validated,
 * so a string there needs no second check, only the look for a backslash or
 * a DEL. */
static int plain_str(const uint8_t *v, size_t vn, const uint8_t **c, size_t *cn) {
  if (vn < 2 || v[0] != '"')
    return -1;
  for (size_t i = 1; i + 1 < vn; i++)
    if (v[i] == '\\' || v[i] == 0x7f)
      return -1;
  *c = v + 1;
  *cn = vn - 2;
  return *cn >= 1 && *cn <= MAX_STR ? 0 : -1;
}

/* Reads the integer of a raw number value of at most 18 digits (a longer
 * one may not fit int64: the full decoder decides). */
static int int_of(const uint8_t *v, size_t vn, int64_t *out) {
  scan_t s = {.p = v, .end = v + vn};
  bool is_int;
  char buf[24];
  if (vn == 0 || vn - (v[0] == '-') > 18 || number(&s, &is_int) < 0 || !is_int || s.p != s.end)
    return -1;
  memcpy(buf, v, vn);
  buf[vn] = '\0';
  *out = strtoll(buf, NULL, 10);
  return 0;
}

/* The double of a valid JSON number without strtod when that is exact
 * (Clinger's fast path): at most 18 digits and no exponent, or a mantissa
 * below 2^53 scaled by at most 10^22 — one correctly rounded conversion,
 * multiplication or division, so the same double strtod returns. Timestamps
 * (created_at, expires_at) always take it. False: ask strtod. */
static bool real_fast(const uint8_t *v, size_t vn, double *out) {
  static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const uint8_t *p = v, *end = v + vn;
  bool neg = p < end && *p == '-';
  uint64_t m = 0;
  int nd = 0, e10 = 0;
  double r;
  if (neg)
    p++;
  for (; p < end && *p >= '0' && *p <= '9'; p++, nd++)
    m = m * 10 + (uint64_t)(*p - '0');
  if (p < end && *p == '.')
    for (p++; p < end && *p >= '0' && *p <= '9'; p++, nd++, e10--)
      m = m * 10 + (uint64_t)(*p - '0');
  if (nd > 18) /* m may have wrapped */
    return false;
  if (p < end) { /* 'e' or 'E', as number() checked */
    bool eneg;
    int x = 0;
    p++;
    eneg = *p == '-';
    if (*p == '+' || *p == '-')
      p++;
    for (; p < end; p++)
      if ((x = x * 10 + (*p - '0')) > 1000)
        return false;
    e10 += eneg ? -x : x;
  }
  if (e10 == 0)
    r = (double)(int64_t)m;
  else if (m < (1ull << 53) && e10 > 0 && e10 <= 22)
    r = (double)m * p10[e10];
  else if (m < (1ull << 53) && e10 < 0 && e10 >= -22)
    r = (double)m / p10[-e10];
  else
    return false;
  *out = neg ? -r : r;
  return true;
}

/* The double of a value pass 1 validated: one that starts like a number is
 * a valid one. */
static int real_of(const uint8_t *v, size_t vn, double *out) {
  if (vn == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')))
    return -1;
  if (!real_fast(v, vn, out))
    *out = num_strtod(v, vn);
  return 0;
}

/* One user id value into out, which has room for vn + 1 bytes: a plain
 * string's content or an integer's decimal form (never longer than the
 * integer's JSON text), as user_from_json. Its length, or -1. */
static int user_into(const uint8_t *v, size_t vn, char *out) {
  const uint8_t *c;
  size_t cn;
  int64_t n;
  char tmp[32];
  if (vn > 0 && v[0] == '"') {
    if (plain_str(v, vn, &c, &cn) < 0)
      return -1;
  } else {
    if (int_of(v, vn, &n) < 0)
      return -1;
    cn = (size_t)snprintf(tmp, sizeof(tmp), "%" PRId64, n);
    c = (const uint8_t *)tmp;
    if (cn > vn)
      return -1;
  }
  memcpy(out, c, cn);
  out[cn] = '\0';
  return (int)cn;
}

/* The raw values of user_id and user_ids (either may be NULL), at most
 * 1 + MAX_FAST_USERS of them, into items/lens. 0 or -1. */
static int user_items(const field_t *one, const field_t *many, const uint8_t **items, size_t *lens,
                      size_t *n) {
  *n = 0;
  if (one != NULL) {
    items[0] = one->v;
    lens[(*n)++] = one->vn;
  }
  if (many != NULL) {
    scan_t s = {.p = many->v, .end = many->v + many->vn};
    if (*s.p != '[')
      return -1;
    s.p++;
    ws(&s);
    if (s.p < s.end && *s.p == ']')
      return -1; /* empty: the full decoder names the error */
    for (size_t k = 0;; k++) {
      const uint8_t *start;
      ws(&s);
      start = s.p;
      if (k == MAX_FAST_USERS || value(&s, 1) < 0)
        return -1;
      items[*n] = start;
      lens[(*n)++] = (size_t)(s.p - start);
      ws(&s);
      if (s.p < s.end && *s.p == ',') {
        s.p++;
        continue;
      }
      break;
    }
  }
  return 0;
}

static size_t put(uint8_t *o, const void *p, size_t n) {
  memcpy(o, p, n);
  return n;
}

/* An id as a JSON string body: printable ASCII without quote or backslash
 * only (anything else: the full decoder). */
static bool id_plain(const char *id, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7e || id[i] == '"' || id[i] == '\\')
      return false;
  return true;
}

int wr_envelope_scan_json(wr_envelope_t *env, const uint8_t *body, size_t len,
                          const char *fallback_id, int64_t base_ms, size_t *reals) {
  field_t f[MAX_FIELDS];
  const field_t *named[WR_ENV_KEY_COUNT] = {NULL};
  size_t nf = 0;
  const field_t *user_id, *user_ids, *broadcast, *expires_at, *ttl_ms, *type, *id, *created_at;
  scan_t s = {.p = body, .end = body + len};
  const uint8_t *type_c = (const uint8_t *)"notification", *id_c;
  size_t type_n = 12, id_n, cap, o;
  double at_s;
  int64_t ttl;

  /* env comes zeroed (wr_envelope_decode_opts). Pass 1: validate, and find
   * the top-level fields. */
  ws(&s);
  if (s.p >= s.end || *s.p != '{')
    return -1;
  s.p++;
  ws(&s);
  if (s.p < s.end && *s.p == '}') {
    s.p++;
  } else {
    for (;;) {
      bool plain;
      const uint8_t *kstart;
      ws(&s);
      kstart = s.p;
      if (nf == MAX_FIELDS || string(&s, &plain, true) < 0 || !plain)
        return -1;
      f[nf].k = kstart + 1;
      f[nf].kn = (size_t)(s.p - kstart) - 2;
      ws(&s);
      if (s.p >= s.end || *s.p != ':')
        return -1;
      s.p++;
      ws(&s);
      f[nf].v = s.p;
      if (value(&s, 1) < 0)
        return -1;
      f[nf].vn = (size_t)(s.p - f[nf].v);
      /* A key's first byte is there even when it is empty (the quote). */
      const uint8_t *k = f[nf].k;
      size_t kn = f[nf].kn;
      for (size_t i = 0; i < nf; i++)
        if (f[i].kn == kn && f[i].k[0] == k[0] && memcmp(f[i].k, k, kn) == 0)
          return -1; /* duplicate key: jansson keeps the last, let it */
      nf++;
      ws(&s);
      if (s.p < s.end && *s.p == ',') {
        s.p++;
        continue;
      }
      if (s.p >= s.end || *s.p != '}')
        return -1;
      s.p++;
      break;
    }
  }
  ws(&s);
  if (s.p != s.end)
    return -1;

  for (size_t i = 0; i < nf; i++) {
    wr_env_key_t k = wr_env_key_find((const char *)f[i].k, f[i].kn);
    if (k < WR_ENV_KEY_COUNT)
      named[k] = &f[i];
    f[i].routing = !wr_env_key_to_client(k);
  }
  user_id = named[WR_ENV_KEY_USER_ID];
  user_ids = named[WR_ENV_KEY_USER_IDS];
  broadcast = named[WR_ENV_KEY_BROADCAST];
  expires_at = named[WR_ENV_KEY_EXPIRES_AT];
  ttl_ms = named[WR_ENV_KEY_TTL_MS];
  type = named[WR_ENV_KEY_TYPE];
  id = named[WR_ENV_KEY_ID];
  created_at = named[WR_ENV_KEY_CREATED_AT];

  /* Routing fields, with the rules of envelope.c's build(). */
  if (broadcast != NULL && !(broadcast->vn == 4 && memcmp(broadcast->v, "true", 4) == 0) &&
      !(broadcast->vn == 5 && memcmp(broadcast->v, "false", 5) == 0))
    return -1;
  if (id != NULL && plain_str(id->v, id->vn, &id_c, &id_n) < 0)
    return -1;
  if (type != NULL && plain_str(type->v, type->vn, &type_c, &type_n) < 0)
    return -1;
  /* The full decoder names a bad expires_at or ttl_ms; one this reads is
   * the same double or integer it reads, and the rule is the same function. */
  if ((expires_at != NULL || ttl_ms != NULL) &&
      ((expires_at != NULL && real_of(expires_at->v, expires_at->vn, &at_s) < 0) ||
       (ttl_ms != NULL && int_of(ttl_ms->v, ttl_ms->vn, &ttl) < 0) ||
       wr_env_expiry(expires_at != NULL ? &at_s : NULL, ttl_ms != NULL ? &ttl : NULL, base_ms,
                     &env->expires_at_ms) < 0))
    return -1;
  if (created_at != NULL && real_of(created_at->v, created_at->vn, &env->created_at) == 0)
    env->has_created_at = true;

  /* Targets and id first, for the sizes: everything the envelope owns then
   * goes in one allocation (env->block), freed at once by wr_envelope_close. */
  const uint8_t *uitems[MAX_FAST_USERS + 1];
  size_t ulens[MAX_FAST_USERS + 1], nu = 0, ubytes = 0;
  if ((user_id != NULL || user_ids != NULL) &&
      user_items(user_id, user_ids, uitems, ulens, &nu) < 0)
    goto giveup;
  for (size_t i = 0; i < nu; i++)
    ubytes += ulens[i] + 1;
  bool bcast = broadcast != NULL && broadcast->v[0] == 't';
  if (!bcast && nu == 0)
    goto giveup; /* no target: the full decoder counts the reason */

  const char *idp = (const char *)id_c;
  char *gen = NULL;
  if (id == NULL && fallback_id != NULL && *fallback_id) {
    idp = fallback_id;
    id_n = strlen(fallback_id);
  } else if (id == NULL) {
    if ((gen = wr_envelope_new_id()) == NULL)
      goto giveup;
    idp = gen;
    id_n = strlen(gen);
  }
  if (id_n > MAX_STR || !id_plain(idp, id_n)) {
    free(gen);
    goto giveup;
  }

  /* Pass 2 writes the client message, every non-routing field minified. */
  cap = 32 + type_n + id_n + len;
  size_t ptrs = (nu + 1) * sizeof(char *);
  uint8_t *block = malloc(ptrs + cap + id_n + 1 + ubytes);
  if (block == NULL) {
    free(gen);
    goto giveup;
  }
  env->block = block;
  env->users = (char **)(void *)block;
  env->client_json = block + ptrs;
  env->id = (char *)env->client_json + cap;
  memcpy(env->id, idp, id_n);
  env->id[id_n] = '\0';
  free(gen);
  char *u = env->id + id_n + 1;
  for (size_t i = 0; i < nu; i++) {
    int k = user_into(uitems[i], ulens[i], u);
    bool dup = false;
    if (k < 0)
      goto giveup;
    for (size_t j = 0; j < env->n_users && !dup; j++)
      dup = strcmp(env->users[j], u) == 0;
    if (!dup) {
      env->users[env->n_users++] = u;
      u += k + 1;
    }
  }
  env->users[env->n_users] = NULL;
  if (bcast) {
    env->users = NULL;
    env->n_users = 0;
    env->broadcast = true;
  }

  o = put(env->client_json, "{\"type\":\"", 9);
  o += put(env->client_json + o, type_c, type_n);
  o += put(env->client_json + o, "\",\"id\":\"", 8);
  o += put(env->client_json + o, env->id, id_n);
  o += put(env->client_json + o, "\"", 1);
  for (size_t i = 0; i < nf; i++) {
    const field_t *x = &f[i];
    if (x->routing)
      continue;
    scan_t w = {.p = x->v, .end = x->v + x->vn, .out = env->client_json, .out_len = o};
    env->client_json[w.out_len++] = ',';
    env->client_json[w.out_len++] = '"';
    memcpy(env->client_json + w.out_len, x->k, x->kn);
    w.out_len += x->kn;
    env->client_json[w.out_len++] = '"';
    env->client_json[w.out_len++] = ':';
    if (x->v[0] != '{' && x->v[0] != '[') {
      /* A string, number or literal holds no whitespace to remove, and pass
       * 1 validated it: its bytes as they are. */
      memcpy(env->client_json + w.out_len, x->v, x->vn);
      w.out_len += x->vn;
    } else if (value(&w, 1) < 0) {
      goto giveup; /* cannot happen: pass 1 validated it */
    }
    o = w.out_len;
  }
  env->client_json[o++] = '}';
  env->client_json_len = o;
  *reals = s.reals;
  env->format = WR_ENV_JSON;
  return 0;

giveup:
  wr_envelope_close(env);
  return -1;
}

/* ---- the full decoder's parser: JSON text → jansson tree ---- */

/* Writes code point v as UTF-8 at o; returns the bytes written. */
static size_t utf8_put(uint8_t *o, unsigned v) {
  if (v < 0x80) {
    o[0] = (uint8_t)v;
    return 1;
  }
  if (v < 0x800) {
    o[0] = (uint8_t)(0xc0 | (v >> 6));
    o[1] = (uint8_t)(0x80 | (v & 0x3f));
    return 2;
  }
  if (v < 0x10000) {
    o[0] = (uint8_t)(0xe0 | (v >> 12));
    o[1] = (uint8_t)(0x80 | ((v >> 6) & 0x3f));
    o[2] = (uint8_t)(0x80 | (v & 0x3f));
    return 3;
  }
  o[0] = (uint8_t)(0xf0 | (v >> 18));
  o[1] = (uint8_t)(0x80 | ((v >> 12) & 0x3f));
  o[2] = (uint8_t)(0x80 | ((v >> 6) & 0x3f));
  o[3] = (uint8_t)(0x80 | (v & 0x3f));
  return 4;
}

/* The content of the string string() validated at p (n bytes, quotes
 * included), unescaped into out, which has room for n bytes: unescaping
 * never grows a string. Returns its length. */
static size_t unescape(const uint8_t *p, size_t n, uint8_t *out) {
  const uint8_t *q = p + 1, *end = p + n - 1;
  size_t o = 0;
  while (q < end) {
    const uint8_t *bs = memchr(q, '\\', (size_t)(end - q));
    size_t run = (size_t)((bs != NULL ? bs : end) - q);
    memcpy(out + o, q, run);
    o += run;
    q += run;
    if (q >= end)
      break;
    unsigned v, w;
    switch (q[1]) {
    case 'u':
      hex4(q + 2, &v);
      q += 6;
      if (v >= 0xd800 && v <= 0xdbff) { /* string() checked the low half follows */
        hex4(q + 2, &w);
        q += 6;
        v = 0x10000 + ((v - 0xd800) << 10) + (w - 0xdc00);
      }
      o += utf8_put(out + o, v);
      continue;
    case 'b':
      out[o++] = '\b';
      break;
    case 'f':
      out[o++] = '\f';
      break;
    case 'n':
      out[o++] = '\n';
      break;
    case 'r':
      out[o++] = '\r';
      break;
    case 't':
      out[o++] = '\t';
      break;
    default: /* '"', '\\', '/' */
      out[o++] = q[1];
      break;
    }
    q += 2;
  }
  return o;
}

/* The validated string at p (n bytes, quotes included) as a jansson string. */
static json_t *tree_string(const uint8_t *p, size_t n) {
  uint8_t *buf;
  size_t len;
  json_t *v;
  if (memchr(p + 1, '\\', n - 2) == NULL)
    return json_stringn_nocheck((const char *)p + 1, n - 2); /* UTF-8 checked */
  if ((buf = malloc(n)) == NULL)
    return NULL;
  len = unescape(p, n, buf);
  v = json_stringn_nocheck((const char *)buf, len);
  free(buf);
  return v;
}

/* The validated number at p (n bytes): an integer that fits int64 as a
 * jansson integer, a larger one as a bignum, a real as a double. */
static json_t *tree_number(const uint8_t *p, size_t n, bool is_int) {
  const uint8_t *q = p;
  bool neg = *q == '-';
  uint64_t m = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  if (!is_int)
    return json_real(num_strtod(p, n));
  for (q += neg; q < p + n; q++) {
    unsigned d = (unsigned)(*q - '0');
    if (m > (limit - d) / 10)
      return wr_json_bignum((const char *)p, n);
    m = m * 10 + d;
  }
  /* -(m - 1) - 1 is -m without overflowing at INT64_MIN. */
  return json_integer(neg ? (m == 0 ? 0 : -(json_int_t)(m - 1) - 1) : (json_int_t)m);
}

static json_t *tree_value(scan_t *s, int depth);

static json_t *tree_container(scan_t *s, int depth, bool object) {
  uint8_t close = object ? '}' : ']';
  json_t *c;
  if (depth >= MAX_DEPTH)
    return NULL;
  if ((c = object ? json_object() : json_array()) == NULL)
    return NULL;
  s->p++;
  ws(s);
  if (s->p < s->end && *s->p == close) {
    s->p++;
    return c;
  }
  for (;;) {
    uint8_t kbuf[128], *key = NULL;
    json_t *v;
    int rc;
    if (object) {
      const uint8_t *kstart;
      size_t kn;
      ws(s);
      kstart = s->p;
      if (string(s, NULL, true) < 0)
        goto fail;
      kn = (size_t)(s->p - kstart);
      key = kn + 1 <= sizeof(kbuf) ? kbuf : malloc(kn + 1);
      if (key == NULL)
        goto fail;
      key[unescape(kstart, kn, key)] = '\0'; /* no NUL inside: string() refused \u0000 */
      ws(s);
      if (s->p >= s->end || *s->p != ':') {
        if (key != kbuf)
          free(key);
        goto fail;
      }
      s->p++;
    }
    v = tree_value(s, depth + 1);
    /* Both steal v, even when they fail. Like jansson's own parser, a
     * repeated key keeps its first place and takes the last value. */
    if (object)
      rc = v != NULL ? json_object_set_new_nocheck(c, (const char *)key, v) : -1;
    else
      rc = v != NULL ? json_array_append_new(c, v) : -1;
    if (key != kbuf)
      free(key);
    if (rc < 0)
      goto fail;
    ws(s);
    if (s->p < s->end && *s->p == ',') {
      s->p++;
      continue;
    }
    if (s->p >= s->end || *s->p != close)
      goto fail;
    s->p++;
    return c;
  }
fail:
  json_decref(c);
  return NULL;
}

/* One value at s->p (after whitespace), depth = containers around it. */
static json_t *tree_value(scan_t *s, int depth) {
  const uint8_t *start;
  bool is_int;
  ws(s);
  if (s->p >= s->end)
    return NULL;
  start = s->p;
  switch (*s->p) {
  case '"':
    return string(s, NULL, false) < 0 ? NULL : tree_string(start, (size_t)(s->p - start));
  case '{':
    return tree_container(s, depth, true);
  case '[':
    return tree_container(s, depth, false);
  case 't':
    return literal(s, "true", 4) < 0 ? NULL : json_true();
  case 'f':
    return literal(s, "false", 5) < 0 ? NULL : json_false();
  case 'n':
    return literal(s, "null", 4) < 0 ? NULL : json_null();
  default:
    return number(s, &is_int) < 0 ? NULL : tree_number(start, (size_t)(s->p - start), is_int);
  }
}

json_t *wr_json_load(const uint8_t *buf, size_t len) {
  scan_t s = {.p = buf, .end = buf + len};
  json_t *root;
  ws(&s);
  if (s.p >= s.end || *s.p != '{')
    return NULL;
  root = tree_container(&s, 0, true);
  ws(&s);
  if (root != NULL && s.p != s.end) {
    json_decref(root);
    return NULL;
  }
  return root;
}
