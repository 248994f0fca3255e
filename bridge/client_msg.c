/* Client → server messages (DESIGN.md §4): ack and ping, in JSON text or
 * MessagePack. Pure function over bytes: no I/O, no logs. */
#include "bridge/envelope_int.h"

#include <stdlib.h>
#include <string.h>

#define MAX_ACK_IDS 1000
#define MAX_ID_LEN 256

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

void wr_cmsg_parse(wr_cmsg_t *m, const uint8_t *buf, size_t len, bool binary) {
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
  for (size_t i = 0; i < m->n_ids; i++)
    free(m->ids[i]);
  free(m->ids);
  memset(m, 0, sizeof(*m));
}
