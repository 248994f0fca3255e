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
  if (wr_amqp_field_int(wr_amqp_table_get(t, "x-warren-attempt"), &v))
    *attempt = v < 0 ? 0 : (v > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v);
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

static bool is_warren_key(amqp_bytes_t k) {
  static const char prefix[] = "x-warren-";
  return k.len >= sizeof(prefix) - 1 && memcmp(k.bytes, prefix, sizeof(prefix) - 1) == 0;
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
  amqp_table_entry_t *e = calloc(n_orig + 4, sizeof(*e));
  int n = 0;

  out->num_entries = 0;
  out->entries = NULL;
  if (e == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n_orig; i++) {
    if (!is_warren_key(orig->entries[i].key))
      e[n++] = orig->entries[i];
  }
  add_i64(&e[n++], "x-warren-attempt", (int64_t)pub->attempt);
  if (pub->user != NULL)
    add_str(&e[n++], "x-warren-user", pub->user);
  if (pub->expires_at_ms != 0)
    add_i64(&e[n++], "x-warren-expires-at", pub->expires_at_ms);
  if (pub->kind == WR_PUB_PARK && pub->reason != NULL)
    add_str(&e[n++], "x-warren-reason", pub->reason);
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
