/* Header-table entries for the amqp/ unit tests: a string and an integer of
 * any field kind. Keys and values are borrowed. */
#ifndef WARREN_TESTS_AMQP_TABLE_ENTRIES_H
#define WARREN_TESTS_AMQP_TABLE_ENTRIES_H

#include <string.h>
#include <sys/time.h>

#include <amqp.h>

static inline amqp_table_entry_t ent_s(const char *k, const char *v) {
  amqp_table_entry_t e;
  memset(&e, 0, sizeof(e));
  e.key = amqp_cstring_bytes(k);
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = amqp_cstring_bytes(v);
  return e;
}

static inline amqp_table_entry_t ent_i(const char *k, uint8_t kind, int64_t v) {
  amqp_table_entry_t e;
  memset(&e, 0, sizeof(e));
  e.key = amqp_cstring_bytes(k);
  e.value.kind = kind;
  switch (kind) {
  case AMQP_FIELD_KIND_I8:
    e.value.value.i8 = (int8_t)v;
    break;
  case AMQP_FIELD_KIND_U8:
    e.value.value.u8 = (uint8_t)v;
    break;
  case AMQP_FIELD_KIND_I16:
    e.value.value.i16 = (int16_t)v;
    break;
  case AMQP_FIELD_KIND_U16:
    e.value.value.u16 = (uint16_t)v;
    break;
  case AMQP_FIELD_KIND_I32:
    e.value.value.i32 = (int32_t)v;
    break;
  case AMQP_FIELD_KIND_U32:
    e.value.value.u32 = (uint32_t)v;
    break;
  case AMQP_FIELD_KIND_U64:
    e.value.value.u64 = (uint64_t)v;
    break;
  default:
    e.value.value.i64 = v;
    break;
  }
  return e;
}

#endif
