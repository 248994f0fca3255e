/* Client → server messages (README.md, "Client protocol"): ack and ping, in JSON text or
 * MessagePack. Pure function over bytes: no I/O, no logs. */
#include "bridge/envelope_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ACK_IDS 1000
#define MAX_ID_LEN WR_CMSG_MAX_ID

static void invalid(wr_cmsg_t *m, const char *why) {
  wr_cmsg_close(m);
  m->kind = WR_CMSG_INVALID;
  m->error = why;
}

static bool valid_id(const json_t *v) {
  return json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= MAX_ID_LEN;
}

static const char *parse_ack(wr_cmsg_t *m, const json_t *root) {
  const json_t *id = json_object_get(root, "id");
  const json_t *ids = json_object_get(root, "ids");
  const json_t *item;
  size_t i;

  /* One spelling per message: a client sending both has a bug we want it to
   * see rather than have half its ids silently dropped or merged. */
  if ((id && ids) || (!id && !ids))
    return "bad ids";
  if (id) {
    if (!valid_id(id))
      return "bad ids";
    m->ids = calloc(1, sizeof(char *));
    if (!m->ids || !(m->ids[0] = strdup(json_string_value(id))))
      return "out of memory";
    m->n_ids = 1;
    return NULL;
  }
  if (!json_is_array(ids) || json_array_size(ids) == 0 || json_array_size(ids) > MAX_ACK_IDS)
    return "bad ids";
  json_array_foreach(ids, i, item) {
    if (!valid_id(item))
      return "bad ids";
  }
  m->ids = calloc(json_array_size(ids), sizeof(char *));
  if (!m->ids)
    return "out of memory";
  json_array_foreach(ids, i, item) {
    m->ids[i] = strdup(json_string_value(item));
    if (!m->ids[i])
      return "out of memory";
    m->n_ids = i + 1;
  }
  return NULL;
}

/* ---- fast path ----
 * Nearly every client message is {"type":"ack","id":"<id>"} (or a ping)
 * with plain ASCII strings. Those are recognised here without building a
 * tree; anything else (escapes, non-ASCII, other keys, ids arrays, errors)
 * goes to the full parser below, so both give the same result. */

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* A string of printable ASCII without escapes: sets *s, *n past the quotes. */
static const uint8_t *plain_string(const uint8_t *p, const uint8_t *end, const uint8_t **s,
                                   size_t *n) {
  const uint8_t *q;
  if (p >= end || *p != '"')
    return NULL;
  for (q = ++p; q < end && *q != '"'; q++)
    if (*q < 0x20 || *q > 0x7e || *q == '\\')
      return NULL;
  if (q >= end)
    return NULL;
  *s = p;
  *n = (size_t)(q - p);
  return q + 1;
}

static bool parse_fast(wr_cmsg_t *m, const uint8_t *p, size_t len) {
  const uint8_t *end = p + len, *type = NULL, *id = NULL;
  size_t type_n = 0, id_n = 0;

  p = skip_ws(p, end);
  if (p >= end || *p++ != '{')
    return false;
  for (int i = 0; i < 2; i++) {
    const uint8_t *k, *v;
    size_t kn, vn;
    p = plain_string(skip_ws(p, end), end, &k, &kn);
    if (p == NULL)
      return false;
    p = skip_ws(p, end);
    if (p >= end || *p++ != ':')
      return false;
    p = plain_string(skip_ws(p, end), end, &v, &vn);
    if (p == NULL)
      return false;
    if (kn == 4 && memcmp(k, "type", 4) == 0 && type == NULL) {
      type = v;
      type_n = vn;
    } else if (kn == 2 && memcmp(k, "id", 2) == 0 && id == NULL) {
      id = v;
      id_n = vn;
    } else {
      return false;
    }
    p = skip_ws(p, end);
    if (p < end && *p == ',' && i == 0) {
      p++;
      continue;
    }
    break;
  }
  if (p >= end || *p++ != '}' || skip_ws(p, end) != end || type == NULL)
    return false;
  if (type_n == 4 && memcmp(type, "ping", 4) == 0 && id == NULL) {
    m->kind = WR_CMSG_PING;
    return true;
  }
  if (type_n != 3 || memcmp(type, "ack", 3) != 0 || id == NULL || id_n < 1 || id_n > MAX_ID_LEN)
    return false;
  memcpy(m->one_id, id, id_n);
  m->one_id[id_n] = '\0';
  m->one_slot = m->one_id;
  m->ids = &m->one_slot;
  m->kind = WR_CMSG_ACK;
  m->n_ids = 1;
  return true;
}

void wr_cmsg_parse(wr_cmsg_t *m, const uint8_t *buf, size_t len, bool binary) {
  memset(m, 0, sizeof(*m));
  if (!binary && buf != NULL && parse_fast(m, buf, len))
    return;
  wr_cmsg_parse_full(m, buf, len, binary);
}

void wr_cmsg_parse_full(wr_cmsg_t *m, const uint8_t *buf, size_t len, bool binary) {
  json_t *root;
  const json_t *type;
  const char *err = NULL;

  memset(m, 0, sizeof(*m));
  if (!buf || len == 0) {
    invalid(m, binary ? "invalid msgpack" : "invalid json");
    return;
  }
  if (binary)
    root = wr_msgpack_to_json(buf, len);
  else
    root = json_loadb((const char *)buf, len, 0, NULL);
  if (!root) {
    invalid(m, binary ? "invalid msgpack" : "invalid json");
    return;
  }
  if (!json_is_object(root)) {
    err = "not an object";
    goto out;
  }
  type = json_object_get(root, "type");
  if (!json_is_string(type)) {
    err = "missing type";
    goto out;
  }
  if (strcmp(json_string_value(type), "ping") == 0 && json_string_length(type) == 4) {
    m->kind = WR_CMSG_PING;
  } else if (strcmp(json_string_value(type), "ack") == 0 && json_string_length(type) == 3) {
    m->kind = WR_CMSG_ACK;
    err = parse_ack(m, root);
  } else {
    err = "unknown type";
  }
out:
  if (err)
    invalid(m, err);
  json_decref(root);
}

void wr_cmsg_close(wr_cmsg_t *m) {
  if (!m)
    return;
  if (m->ids != &m->one_slot) {
    for (size_t i = 0; i < m->n_ids; i++)
      free(m->ids[i]);
    free(m->ids);
  }
  memset(m, 0, offsetof(wr_cmsg_t, one_id)); /* one_id is only read through ids */
}
