#include "bridge/index_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a: short keys, no attacker-controlled collisions beyond what a
 * per-user chain costs (user ids come from verified tokens or envelopes). */
static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return h;
}

int wr_index_init(wr_index_t *ix) {
  memset(ix, 0, sizeof(*ix));
  ix->nbuckets = 1024;
  ix->buckets = calloc(ix->nbuckets, sizeof(*ix->buckets));
  if (ix->buckets == NULL)
    return -ENOMEM;
  wr_list_init(&ix->all_conns);
  return 0;
}

void wr_index_close(wr_index_t *ix) {
  assert(ix->nusers == 0 && ix->n_conns == 0);
  free(ix->buckets);
  ix->buckets = NULL;
}

static void grow(wr_index_t *ix) {
  size_t n = ix->nbuckets * 2;
  wr_user_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return; /* keep the old table: longer chains, still correct */
  for (size_t i = 0; i < ix->nbuckets; i++) {
    wr_user_t *u = ix->buckets[i];
    while (u != NULL) {
      wr_user_t *next = u->hnext;
      u->hnext = b[u->hash & (n - 1)];
      b[u->hash & (n - 1)] = u;
      u = next;
    }
  }
  free(ix->buckets);
  ix->buckets = b;
  ix->nbuckets = n;
}

static wr_user_t *lookup(const wr_index_t *ix, const char *id, uint64_t h) {
  for (wr_user_t *u = ix->buckets[h & (ix->nbuckets - 1)]; u != NULL; u = u->hnext)
    if (u->hash == h && strcmp(u->id, id) == 0)
      return u;
  return NULL;
}

wr_user_t *wr_index_find(const wr_index_t *ix, const char *id) {
  return lookup(ix, id, hash_str(id));
}

wr_user_t *wr_index_ref(wr_index_t *ix, const char *id) {
  uint64_t h = hash_str(id);
  wr_user_t *u = lookup(ix, id, h);
  size_t len;

  if (u != NULL) {
    assert(u->refs < UINT32_MAX);
    u->refs++;
    return u;
  }
  len = strlen(id);
  u = malloc(sizeof(*u) + len + 1);
  if (u == NULL)
    return NULL;
  memcpy(u->id, id, len + 1);
  u->hash = h;
  u->refs = 1;
  wr_list_init(&u->conns);
  wr_list_init(&u->waiting);
  wr_list_init(&u->paused_node);
  u->n_conns = 0;
  u->n_waiting = 0;
  u->mbox_open = u->mbox_paused = false;
  u->mbox_resume_ms = 0;
  u->mbox_backoff_ms = 0;
  u->mbox_opened_ms = 0;
  u->mbox_first_sent = false;
  u->redeliveries = NULL;
  u->n_redeliveries = u->cap_redeliveries = 0;
  if (ix->nusers >= ix->nbuckets)
    grow(ix);
  u->hnext = ix->buckets[h & (ix->nbuckets - 1)];
  ix->buckets[h & (ix->nbuckets - 1)] = u;
  ix->nusers++;
  return u;
}

void wr_index_unref(wr_index_t *ix, wr_user_t *u) {
  wr_user_t **pp;

  assert(u->refs > 0);
  if (--u->refs > 0)
    return;
  /* Nothing refers to the record any more, so nothing can be linked to it. */
  assert(u->n_conns == 0 && u->n_waiting == 0 && wr_list_empty(&u->paused_node));
  for (size_t i = 0; i < u->n_redeliveries; i++)
    free(u->redeliveries[i].id);
  free(u->redeliveries);
  for (pp = &ix->buckets[u->hash & (ix->nbuckets - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == u) {
      *pp = u->hnext;
      ix->nusers--;
      free(u);
      return;
    }
  }
  assert(!"user record missing from its hash chain");
}

void wr_index_add_conn(wr_index_t *ix, wr_user_t *u, wr_core_conn_t *c) {
  assert(u->refs < UINT32_MAX);
  u->refs++;
  c->user = u;
  wr_list_push_back(&u->conns, &c->user_node);
  if (u->n_conns++ == 0)
    ix->users_online++;
  wr_list_push_back(&ix->all_conns, &c->all_node);
  ix->n_conns++;
}

void wr_index_remove_conn(wr_index_t *ix, wr_core_conn_t *c) {
  wr_user_t *u = c->user;
  wr_list_remove(&c->user_node);
  wr_list_remove(&c->all_node);
  ix->n_conns--;
  if (--u->n_conns == 0)
    ix->users_online--;
}
