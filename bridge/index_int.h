/* The user index: user id → open connections and the targets waiting for
 * that user. Part of the delivery core (core_int.h): loop thread only, no I/O.
 *
 * A user record is reference-counted. Each open connection holds one
 * reference, and so does each target that names the user, from the moment its
 * delivery arrives until that delivery is retired, whatever state the target
 * is in. The record is freed when the last reference goes, so nothing that
 * can still read the id (a verdict's copy names it) ever points at freed
 * memory. */
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

/* How many ack timeouts one mailbox notification met (core.c). */
typedef struct wr_redelivery_s {
  char *id;
  uint32_t count;
} wr_redelivery_t;

typedef struct wr_user_s {
  struct wr_user_s *hnext; /* hash chain */
  uint64_t hash;
  uint32_t refs;     /* open connections + targets not yet retired */
  wr_list_t conns;   /* wr_core_conn_t.user_node */
  size_t n_conns;    /* open connections */
  wr_list_t waiting; /* targets waiting for this user (core.c), oldest first */
  size_t n_waiting;
  /* The user's mailbox consumer (core.c), while they are online. */
  bool mbox_open;                /* an open command was sent, no close since */
  bool mbox_paused;              /* closed for a while: a mailbox item went unacked */
  uint64_t mbox_resume_ms;       /* core clock */
  uint32_t mbox_backoff_ms;      /* the next pause */
  uint64_t mbox_opened_ms;       /* core clock at the first connection (replay latency) */
  bool mbox_first_sent;          /* a backlog item went out since then */
  wr_list_t paused_node;         /* in the core's paused list while mbox_paused */
  wr_redelivery_t *redeliveries; /* mailbox items that timed out, by id */
  size_t n_redeliveries, cap_redeliveries;
  char id[]; /* NUL-terminated */
} wr_user_t;

/* One open WebSocket connection as the core sees it. */
typedef struct wr_core_conn_s {
  void *io;              /* the driver's handle, passed back in sink calls */
  wr_user_t *user;       /* holds a reference while the connection is open */
  wr_ws_format_t format; /* which encoding of a notification it gets */
  wr_list_t user_node;   /* in user->conns */
  wr_list_t all_node;    /* in the index's all_conns */
} wr_core_conn_t;

typedef struct wr_index_s {
  wr_user_t **buckets;
  size_t nbuckets;     /* power of two */
  size_t nusers;       /* records alive */
  size_t users_online; /* users with at least one connection */
  wr_list_t all_conns;
  size_t n_conns;
} wr_index_t;

int wr_index_init(wr_index_t *ix);
/* Frees the table. Every record must be gone (no reference left): a record
 * still here is a leak of the core, and asserted. */
void wr_index_close(wr_index_t *ix);

/* Finds or creates the record of user id and takes a reference on it.
 * Returns NULL only when out of memory. */
wr_user_t *wr_index_ref(wr_index_t *ix, const char *id);
/* Finds a record without taking a reference (NULL when absent). */
wr_user_t *wr_index_find(const wr_index_t *ix, const char *id);
/* Drops a reference; the record is freed with the last one. */
void wr_index_unref(wr_index_t *ix, wr_user_t *u);

/* Connection bookkeeping. add takes a reference on u for c. remove unlinks c
 * but leaves c->user and its reference to the caller, who drops it with
 * wr_index_unref once done with the record (the core settles the user's
 * waiting targets first). */
void wr_index_add_conn(wr_index_t *ix, wr_user_t *u, wr_core_conn_t *c);
void wr_index_remove_conn(wr_index_t *ix, wr_core_conn_t *c);

#endif
