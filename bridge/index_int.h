/* The user index: user id → open connections and waiting notifications.
 * Loop thread only. */
#ifndef WARREN_BRIDGE_INDEX_INT_H
#define WARREN_BRIDGE_INDEX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/ws.h"

typedef struct wr_list_s {
  struct wr_list_s *prev, *next;
} wr_list_t;

#define wr_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void wr_list_init(wr_list_t *h) {
  h->prev = h->next = h;
}
static inline bool wr_list_empty(const wr_list_t *h) {
  return h->next == h;
}
static inline void wr_list_push_back(wr_list_t *h, wr_list_t *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}
static inline void wr_list_remove(wr_list_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

typedef struct wr_user_s {
  struct wr_user_s *hnext; /* hash chain */
  uint64_t hash;
  wr_list_t conns; /* wr_bconn_t.user_node */
  size_t n_conns;
  wr_list_t targets; /* waiting targets (delivery.c), oldest first */
  size_t n_targets;
  char id[]; /* NUL-terminated */
} wr_user_t;

/* The bridge's per-connection state, attached with wr_ws_conn_set_data. */
typedef struct wr_bconn_s {
  wr_ws_conn_t *ws;
  wr_user_t *user;
  wr_list_t user_node;
  wr_list_t all_node;
} wr_bconn_t;

typedef struct wr_index_s {
  wr_user_t **buckets;
  size_t nbuckets; /* power of two */
  size_t nusers;
  size_t users_online; /* users with at least one connection */
  wr_list_t all_conns;
  size_t n_conns;
} wr_index_t;

int wr_index_init(wr_index_t *ix);
/* Frees every user record (connections must be gone). */
void wr_index_close(wr_index_t *ix);

/* Finds a user; creates an empty record when create is true. Returns NULL when
 * absent (or on ENOMEM). */
wr_user_t *wr_index_get(wr_index_t *ix, const char *id, bool create);

/* Frees the record if it has no connection and no waiting target. */
void wr_index_release(wr_index_t *ix, wr_user_t *u);

/* Connection bookkeeping. */
void wr_index_add_conn(wr_index_t *ix, wr_user_t *u, wr_bconn_t *c);
void wr_index_remove_conn(wr_index_t *ix, wr_bconn_t *c);

#endif
