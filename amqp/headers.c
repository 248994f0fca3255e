/* Pure helpers over rabbitmq-c tables and configuration: no I/O, no logs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp/amqp_int.h"

static bool key_is(amqp_bytes_t k, const char *s) {
  size_t n = strlen(s);
  return k.len == n && (n == 0 || memcmp(k.bytes, s, n) == 0);
}

const amqp_field_value_t *wr_amqp_table_get(const amqp_table_t *t, const char *key) {
  if (t == NULL || t->entries == NULL)
    return NULL;
  for (int i = 0; i < t->num_entries; i++) {
    if (key_is(t->entries[i].key, key))
      return &t->entries[i].value;
  }
  return NULL;
}

bool wr_amqp_field_int(const amqp_field_value_t *v, int64_t *out) {
  if (v == NULL)
    return false;
  switch (v->kind) {
  case AMQP_FIELD_KIND_I8:
    *out = v->value.i8;
    return true;
  case AMQP_FIELD_KIND_U8:
    *out = v->value.u8;
    return true;
  case AMQP_FIELD_KIND_I16:
    *out = v->value.i16;
    return true;
  case AMQP_FIELD_KIND_U16:
    *out = v->value.u16;
    return true;
  case AMQP_FIELD_KIND_I32:
    *out = v->value.i32;
    return true;
  case AMQP_FIELD_KIND_U32:
    *out = v->value.u32;
    return true;
  case AMQP_FIELD_KIND_I64:
    *out = v->value.i64;
    return true;
  case AMQP_FIELD_KIND_U64:
    /* Publishers in other languages use whatever kind their client picks;
     * a u64 beyond INT64_MAX is nonsense for our headers, so clamp. */
    *out = v->value.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
    return true;
  case AMQP_FIELD_KIND_TIMESTAMP:
    *out = v->value.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
    return true;
  default:
    return false;
  }
}

char *wr_amqp_bytes_strdup(amqp_bytes_t b) {
  if (b.bytes == NULL && b.len > 0)
    return NULL;
  char *s = malloc(b.len + 1);
  if (s == NULL)
    return NULL;
  if (b.len > 0)
    memcpy(s, b.bytes, b.len);
  s[b.len] = '\0';
  return s;
}

int wr_amqp_headers_parse(const amqp_table_t *t, uint32_t *attempt, char **user,
                          int64_t *expires_at_ms) {
  int64_t v;

  *attempt = 0;
  *user = NULL;
  *expires_at_ms = 0;
  /* Saturated one below UINT32_MAX: whoever counts this attempt adds one. */
  if (wr_amqp_field_int(wr_amqp_table_get(t, "x-warren-attempt"), &v))
    *attempt = v < 0 ? 0 : (v > (int64_t)WR_AMQP_ATTEMPT_MAX ? WR_AMQP_ATTEMPT_MAX : (uint32_t)v);
  if (wr_amqp_field_int(wr_amqp_table_get(t, "x-warren-expires-at"), &v))
    *expires_at_ms = v;
  const amqp_field_value_t *u = wr_amqp_table_get(t, "x-warren-user");
  if (u != NULL && (u->kind == AMQP_FIELD_KIND_UTF8 || u->kind == AMQP_FIELD_KIND_BYTES) &&
      u->value.bytes.len > 0) {
    /* A user id with an embedded NUL would be truncated silently by every
     * consumer of the C string: treat it as absent. */
    if (memchr(u->value.bytes.bytes, '\0', u->value.bytes.len) != NULL)
      return 0;
    *user = wr_amqp_bytes_strdup(u->value.bytes);
    if (*user == NULL)
      return -ENOMEM;
  }
  return 0;
}

bool wr_amqp_key_is_warren(amqp_bytes_t k) {
  static const char prefix[] = "x-warren-";
  return k.len >= sizeof(prefix) - 1 && memcmp(k.bytes, prefix, sizeof(prefix) - 1) == 0;
}

bool wr_amqp_headers_has_warren(const amqp_table_t *t) {
  if (t == NULL || t->entries == NULL)
    return false;
  for (int i = 0; i < t->num_entries; i++) {
    if (wr_amqp_key_is_warren(t->entries[i].key))
      return true;
  }
  return false;
}

static bool is_string(const amqp_field_value_t *v) {
  return v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES);
}

/* "<queue>.retry.<digits>": the name topology.c gives a ladder queue. */
static bool is_ladder_queue(amqp_bytes_t name, const char *queue) {
  size_t q = strlen(queue);
  static const char mid[] = ".retry.";
  size_t pre = q + sizeof(mid) - 1;
  if (name.len <= pre || memcmp(name.bytes, queue, q) != 0 ||
      memcmp((const char *)name.bytes + q, mid, sizeof(mid) - 1) != 0)
    return false;
  for (size_t i = pre; i < name.len; i++) {
    char c = ((const char *)name.bytes)[i];
    if (c < '0' || c > '9')
      return false;
  }
  return true;
}

uint64_t wr_amqp_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h;
}

bool wr_amqp_bytes_is(amqp_bytes_t b, const char *s) {
  return b.len == strlen(s) && (b.len == 0 || memcmp(b.bytes, s, b.len) == 0);
}

amqp_bytes_t wr_amqp_death_queue(const amqp_table_t *h) {
  const amqp_field_value_t *xd = wr_amqp_table_get(h, "x-death");
  if (xd == NULL || xd->kind != AMQP_FIELD_KIND_ARRAY || xd->value.array.num_entries < 1 ||
      xd->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE)
    return amqp_empty_bytes;
  const amqp_field_value_t *q = wr_amqp_table_get(&xd->value.array.entries[0].value.table, "queue");
  return is_string(q) ? q->value.bytes : amqp_empty_bytes;
}

bool wr_amqp_headers_trusted(const amqp_table_t *h, amqp_bytes_t exchange, const char *queue) {
  /* Originals come through amqp.exchange (or any exchange an operator bound
   * to Q); the ladder queues dead-letter through the default exchange. */
  if (exchange.len != 0)
    return false;
  /* The broker puts the newest dead-lettering first in x-death. A message
   * published straight to Q through the default exchange has none, unless
   * the publisher forged one. */
  const amqp_field_value_t *xd = wr_amqp_table_get(h, "x-death");
  if (xd == NULL || xd->kind != AMQP_FIELD_KIND_ARRAY || xd->value.array.num_entries < 1 ||
      xd->value.array.entries == NULL)
    return false;
  const amqp_field_value_t *newest = &xd->value.array.entries[0];
  if (newest->kind != AMQP_FIELD_KIND_TABLE)
    return false;
  const amqp_field_value_t *q = wr_amqp_table_get(&newest->value.table, "queue");
  const amqp_field_value_t *why = wr_amqp_table_get(&newest->value.table, "reason");
  return is_string(q) && is_string(why) && is_ladder_queue(q->value.bytes, queue) &&
         why->value.bytes.len == 7 && memcmp(why->value.bytes.bytes, "expired", 7) == 0;
}

/* A bump allocator over one block; with buf == NULL it only counts. */
typedef struct {
  uint8_t *buf;
  size_t len;
  size_t used;
} arena_t;

static void *arena_take(arena_t *ar, size_t n, size_t align) {
  size_t at = (ar->used + align - 1) & ~(align - 1);
  ar->used = at + n;
  if (ar->buf == NULL || ar->used > ar->len)
    return NULL;
  return ar->buf + at;
}

static int copy_table(const amqp_table_t *src, amqp_table_t *dst, arena_t *ar, int depth);

static int copy_bytes(amqp_bytes_t src, amqp_bytes_t *dst, arena_t *ar) {
  void *p = arena_take(ar, src.len, 1);
  if (dst != NULL) {
    dst->len = src.len;
    dst->bytes = p;
    if (src.len > 0)
      memcpy(p, src.bytes, src.len);
  }
  return 0;
}

static int copy_value(const amqp_field_value_t *src, amqp_field_value_t *dst, arena_t *ar,
                      int depth) {
  if (dst != NULL)
    *dst = *src;
  switch (src->kind) {
  case AMQP_FIELD_KIND_BOOLEAN:
  case AMQP_FIELD_KIND_I8:
  case AMQP_FIELD_KIND_U8:
  case AMQP_FIELD_KIND_I16:
  case AMQP_FIELD_KIND_U16:
  case AMQP_FIELD_KIND_I32:
  case AMQP_FIELD_KIND_U32:
  case AMQP_FIELD_KIND_I64:
  case AMQP_FIELD_KIND_U64:
  case AMQP_FIELD_KIND_F32:
  case AMQP_FIELD_KIND_F64:
  case AMQP_FIELD_KIND_DECIMAL:
  case AMQP_FIELD_KIND_TIMESTAMP:
  case AMQP_FIELD_KIND_VOID:
    return 0;
  case AMQP_FIELD_KIND_UTF8:
  case AMQP_FIELD_KIND_BYTES:
    if (src->value.bytes.len > UINT32_MAX)
      return -EINVAL;
    return copy_bytes(src->value.bytes, dst ? &dst->value.bytes : NULL, ar);
  case AMQP_FIELD_KIND_TABLE:
    return copy_table(&src->value.table, dst ? &dst->value.table : NULL, ar, depth + 1);
  case AMQP_FIELD_KIND_ARRAY: {
    const amqp_array_t *a = &src->value.array;
    int n = a->entries != NULL && a->num_entries > 0 ? a->num_entries : 0;
    if (depth + 1 > WR_AMQP_TABLE_MAX_DEPTH)
      return -ELOOP;
    amqp_field_value_t *v = arena_take(ar, (size_t)n * sizeof(*v), _Alignof(amqp_field_value_t));
    for (int i = 0; i < n; i++) {
      int rc = copy_value(&a->entries[i], v ? &v[i] : NULL, ar, depth + 1);
      if (rc < 0)
        return rc;
    }
    if (dst != NULL) {
      dst->value.array.num_entries = n;
      dst->value.array.entries = n > 0 ? v : NULL;
    }
    return 0;
  }
  default:
    /* amqp_encode_table would refuse it (AMQP_STATUS_INVALID_PARAMETER). */
    return -EINVAL;
  }
}

static int copy_table(const amqp_table_t *src, amqp_table_t *dst, arena_t *ar, int depth) {
  int n = src->entries != NULL && src->num_entries > 0 ? src->num_entries : 0;
  if (depth > WR_AMQP_TABLE_MAX_DEPTH)
    return -ELOOP;
  amqp_table_entry_t *e = arena_take(ar, (size_t)n * sizeof(*e), _Alignof(amqp_table_entry_t));
  for (int i = 0; i < n; i++) {
    const amqp_table_entry_t *s = &src->entries[i];
    /* amqp_encode_table writes the key length as one byte without checking
     * it: a longer key would corrupt the frame. An empty key is valid AMQP
     * (amqp_table_clone refuses it, which is why this copy exists). */
    if (s->key.len > 255)
      return -EINVAL;
    int rc = copy_bytes(s->key, e ? &e[i].key : NULL, ar);
    if (rc == 0)
      rc = copy_value(&s->value, e ? &e[i].value : NULL, ar, depth);
    if (rc < 0)
      return rc;
  }
  if (dst != NULL) {
    dst->num_entries = n;
    dst->entries = n > 0 ? e : NULL;
  }
  return 0;
}

int wr_amqp_table_copy(const amqp_table_t *t, amqp_table_t *out, void *buf, size_t len,
                       size_t *need) {
  arena_t ar = {.buf = buf, .len = len, .used = 0};
  int rc;

  /* Measure first, so that a short block is an error and not an overflow. */
  if (buf != NULL) {
    size_t n = 0;
    if ((rc = wr_amqp_table_copy(t, NULL, NULL, 0, &n)) < 0)
      return rc;
    if (n > len)
      return -ENOSPC;
  }
  rc = copy_table(t, buf != NULL ? out : NULL, &ar, 1);
  if (need != NULL)
    *need = ar.used;
  return rc;
}

static void add_i64(amqp_table_entry_t *e, const char *key, int64_t v) {
  e->key = amqp_cstring_bytes(key);
  e->value.kind = AMQP_FIELD_KIND_I64;
  e->value.value.i64 = v;
}

static void add_str(amqp_table_entry_t *e, const char *key, const char *v) {
  e->key = amqp_cstring_bytes(key);
  e->value.kind = AMQP_FIELD_KIND_UTF8;
  e->value.value.bytes = amqp_cstring_bytes(v);
}

int wr_amqp_headers_build(const amqp_table_t *orig, const wr_amqp_pub_t *pub, amqp_table_t *out) {
  size_t n_orig = (orig != NULL && orig->entries != NULL && orig->num_entries > 0)
                      ? (size_t)orig->num_entries
                      : 0;
  amqp_table_entry_t *e = calloc(n_orig + 5, sizeof(*e));
  int n = 0;

  out->num_entries = 0;
  out->entries = NULL;
  if (e == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n_orig; i++) {
    if (!wr_amqp_key_is_warren(orig->entries[i].key))
      e[n++] = orig->entries[i];
  }
  add_i64(&e[n++], "x-warren-attempt", (int64_t)pub->attempt);
  if (pub->user != NULL)
    add_str(&e[n++], "x-warren-user", pub->user);
  if (pub->expires_at_ms != 0)
    add_i64(&e[n++], "x-warren-expires-at", pub->expires_at_ms);
  if (pub->kind == WR_PUB_PARK && pub->reason != NULL)
    add_str(&e[n++], "x-warren-reason", pub->reason);
  if (pub->kind == WR_PUB_ROUTE && pub->fan && pub->fan_from != NULL)
    add_str(&e[n++], "x-warren-fan", pub->fan_from);
  out->entries = e;
  out->num_entries = n;
  return 0;
}

void wr_amqp_headers_release(amqp_table_t *t) {
  free(t->entries);
  t->entries = NULL;
  t->num_entries = 0;
}

uint32_t wr_amqp_backoff_ms(unsigned n, uint32_t rnd) {
  uint64_t base = 100;
  for (unsigned i = 0; i < n && base < 30000; i++)
    base *= 2;
  if (base > 30000)
    base = 30000;
  /* 0.75 + 0.5 × rnd/UINT32_MAX, in integer arithmetic. */
  uint64_t scaled = base * 3 / 4 + (base * (uint64_t)rnd) / (2ull * UINT32_MAX);
  return (uint32_t)scaled;
}

size_t wr_amqp_delays_distinct(const wr_config_t *cfg, uint32_t *out) {
  size_t n = 0;
  for (size_t i = 0; i < cfg->n_retry_delays && i < WR_CONFIG_MAX_DELAYS; i++) {
    bool seen = false;
    for (size_t j = 0; j < n; j++)
      seen = seen || out[j] == cfg->retry_delays_ms[i];
    if (!seen)
      out[n++] = cfg->retry_delays_ms[i];
  }
  return n;
}

int wr_amqp_name_fmt(char *buf, size_t len, const char *queue, const char *suffix) {
  int n = snprintf(buf, len, "%s%s", queue, suffix);
  if (n < 0 || (size_t)n >= len || n > 255)
    return -ENAMETOOLONG;
  return 0;
}
