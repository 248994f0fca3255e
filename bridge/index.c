#include "bridge/index_int.h"

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
  for (size_t i = 0; i < ix->nbuckets; i++) {
    wr_user_t *u = ix->buckets[i];
    while (u != NULL) {
      wr_user_t *next = u->hnext;
      free(u);
      u = next;
    }
  }
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

wr_user_t *wr_index_get(wr_index_t *ix, const char *id, bool create) {
  uint64_t h = hash_str(id);
  wr_user_t *u;
  size_t len;

  for (u = ix->buckets[h & (ix->nbuckets - 1)]; u != NULL; u = u->hnext)
    if (u->hash == h && strcmp(u->id, id) == 0)
      return u;
  if (!create)
    return NULL;
  len = strlen(id);
  u = malloc(sizeof(*u) + len + 1);
  if (u == NULL)
    return NULL;
  memcpy(u->id, id, len + 1);
  u->hash = h;
  wr_list_init(&u->conns);
  wr_list_init(&u->targets);
  u->n_conns = 0;
  u->n_targets = 0;
  if (ix->nusers >= ix->nbuckets)
    grow(ix);
  u->hnext = ix->buckets[h & (ix->nbuckets - 1)];
  ix->buckets[h & (ix->nbuckets - 1)] = u;
  ix->nusers++;
  return u;
}

void wr_index_release(wr_index_t *ix, wr_user_t *u) {
  wr_user_t **pp;

  if (u->n_conns > 0 || u->n_targets > 0)
    return;
  for (pp = &ix->buckets[u->hash & (ix->nbuckets - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == u) {
      *pp = u->hnext;
      ix->nusers--;
      free(u);
      return;
    }
  }
}

void wr_index_add_conn(wr_index_t *ix, wr_user_t *u, wr_bconn_t *c) {
  c->user = u;
  wr_list_push_back(&u->conns, &c->user_node);
  if (u->n_conns++ == 0)
    ix->users_online++;
  wr_list_push_back(&ix->all_conns, &c->all_node);
  ix->n_conns++;
}

void wr_index_remove_conn(wr_index_t *ix, wr_bconn_t *c) {
  wr_list_remove(&c->user_node);
  wr_list_remove(&c->all_node);
  ix->n_conns--;
  if (--c->user->n_conns == 0)
    ix->users_online--;
}
