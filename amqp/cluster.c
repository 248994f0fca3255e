/* Cluster mode on the AMQP thread (docs/cluster.md): this node's queue is
 * bound to Q.route with the user key of every user connected here, so the
 * copies the routers publish for them reach it. The loop says when a user's
 * first connection opens (join: bind now), when their last one closes
 * (leave: unbind after cluster.unbind_grace_ms, unless they join again
 * meanwhile: a page reload costs no broker work), and when a copy came for
 * a user with no connection here (stale: unbind now, before that copy is
 * mailed). Binds and unbinds are RPCs on channel 3. Bindings between a
 * durable exchange and a durable queue outlive connections and restarts, so
 * a lost connection changes nothing here; a new one binds again every user
 * still online (cheap, idempotent, and it repairs a node queue deleted
 * behind warren's back). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/log.h"
#include "amqp/amqp_int.h"

static wr_nodebind_t **slot(wr_nodebinds_t *t, const char *key, size_t len, uint64_t h) {
  wr_nodebind_t **pp = &t->buckets[h & (t->nbuckets - 1)];
  for (; *pp != NULL; pp = &(*pp)->hnext)
    if ((*pp)->hash == h && strlen((*pp)->key) == len && memcmp((*pp)->key, key, len) == 0)
      break;
  return pp;
}

static int rehash(wr_nodebinds_t *t) {
  size_t n = t->nbuckets ? t->nbuckets * 2 : 256;
  wr_nodebind_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (wr_nodebind_t *e = t->buckets[i], *next; e != NULL; e = next) {
      next = e->hnext;
      e->hnext = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = n;
  return 0;
}

/* The entry of a user key, made when absent and make is set. */
static wr_nodebind_t *lookup(wr_nodebinds_t *t, const char *key, bool make) {
  size_t len = strlen(key);
  uint64_t h = wr_amqp_hash(key, len);
  wr_nodebind_t **pp, *e;
  if (t->nbuckets == 0 && (!make || rehash(t) < 0))
    return NULL;
  if ((e = *slot(t, key, len, h)) != NULL || !make)
    return e;
  if (t->n >= t->nbuckets && rehash(t) < 0 && t->nbuckets == 0)
    return NULL;
  if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
    return NULL;
  memcpy(e->key, key, len + 1);
  e->hash = h;
  pp = &t->buckets[h & (t->nbuckets - 1)];
  e->hnext = *pp;
  *pp = e;
  t->n++;
  return e;
}

static void forget(wr_nodebinds_t *t, wr_nodebind_t *e) {
  wr_nodebind_t **pp = slot(t, e->key, strlen(e->key), e->hash);
  if (*pp == e) {
    *pp = e->hnext;
    t->n--;
  }
  free(e);
}

/* Takes e out of the unbind queue (it is rarely far from the head: a user
 * who comes back within the grace). */
static void dequeue(wr_nodebinds_t *t, wr_nodebind_t *e) {
  wr_nodebind_t *prev = NULL;
  for (wr_nodebind_t *q = t->qhead; q != NULL; prev = q, q = q->qnext) {
    if (q != e)
      continue;
    if (prev == NULL)
      t->qhead = q->qnext;
    else
      prev->qnext = q->qnext;
    if (t->qtail == q)
      t->qtail = prev;
    break;
  }
  e->qnext = NULL;
  e->leaving = false;
}

/* queue.bind / queue.unbind of node queue node (this node's, or another's)
 * to Q.route with key: wr_amqp_bind_rpc's answer. */
static int route_bind(wr_amqp_t *a, amqp_bytes_t node, const char *key, bool bind) {
  char route[WR_AMQP_NAME_MAX];
  int rc;
  if ((rc = wr_amqp_name_fmt(route, sizeof(route), a->cfg->queue, ".route")) < 0)
    return rc;
  return wr_amqp_bind_rpc(a, node, route, key, bind, bind ? "node bind" : "node unbind");
}

static int bind_rpc(wr_amqp_t *a, const char *key, bool bind) {
  char node[WR_AMQP_NAME_MAX];
  int rc;
  if ((rc = wr_amqp_node_queue_name(a->cfg, node, sizeof(node))) < 0)
    return rc;
  return route_bind(a, amqp_cstring_bytes(node), key, bind);
}

static int do_bind(wr_amqp_t *a, wr_nodebind_t *e) {
  int rc;
  if (a->conn == NULL)
    return 0; /* the next connection binds it (wr_amqp_node_session_open) */
  if ((rc = bind_rpc(a, e->key, true)) < 0)
    return rc;
  WR_AMQP_STAT_ADD(a, node_binds, 1);
  e->bound_gen = a->generation;
  if (rc == 0 && !e->bound) {
    e->bound = true;
    WR_AMQP_STAT_ADD(a, node_users_bound, 1);
  }
  return 0;
}

/* Unbinds e's key (if connected) and forgets e. A binding left behind by a
 * refused unbind is cleaned the next time a copy uses it. */
static int do_unbind(wr_amqp_t *a, wr_nodebind_t *e) {
  int rc = 0;
  if (a->conn != NULL) {
    rc = bind_rpc(a, e->key, false);
    if (rc >= 0)
      WR_AMQP_STAT_ADD(a, node_unbinds, 1);
  }
  if (e->bound)
    WR_AMQP_STAT_SUB(a, node_users_bound, 1);
  if (e->leaving)
    dequeue(&a->binds, e);
  forget(&a->binds, e);
  return rc < 0 ? rc : 0;
}

int wr_amqp_node_command(wr_amqp_t *a, wr_amqp_cmd_t *c) {
  wr_amqp_mbox_cmd_t *mc = (wr_amqp_mbox_cmd_t *)c;
  wr_nodebinds_t *t = &a->binds;
  char key[WR_AMQP_USER_KEY_MAX];
  wr_nodebind_t *e = NULL;
  int rc = 0;

  if (wr_amqp_user_key(mc->user, key, sizeof(key)) < 0) {
    wr_error("amqp", "no user key for user %s", mc->user);
  } else if (c->kind == WR_CMD_NODE_JOIN) {
    if ((e = lookup(t, key, true)) == NULL) {
      wr_error("amqp", "out of memory binding user %s to this node", mc->user);
    } else if (e->leaving) {
      /* Back within the grace: still bound. */
      dequeue(t, e);
      WR_AMQP_STAT_ADD(a, node_rejoins, 1);
    } else if (!e->bound) {
      rc = do_bind(a, e);
    }
  } else if (c->kind == WR_CMD_NODE_LEAVE) {
    if ((e = lookup(t, key, false)) != NULL && !e->leaving) {
      e->leaving = true;
      e->due_ms = wr_amqp_now_ms() + a->cfg->cluster_unbind_grace_ms;
      e->qnext = NULL;
      if (t->qtail != NULL)
        t->qtail->qnext = e;
      else
        t->qhead = e;
      t->qtail = e;
      if (a->cfg->cluster_unbind_grace_ms == 0)
        rc = wr_amqp_node_unbind_due(a, NULL);
    }
  } else {
    /* Stale: no connection here, whatever the entry says (a binding of an
     * earlier run has none). */
    e = lookup(t, key, true);
    if (e == NULL) {
      if (a->conn != NULL && (rc = bind_rpc(a, key, false)) >= 0)
        WR_AMQP_STAT_ADD(a, node_unbinds, 1);
    } else {
      rc = do_unbind(a, e);
    }
    wr_debug("amqp", "user %s has no connection here: unbound", mc->user);
  }
  free(c);
  return rc < 0 ? rc : 0;
}

#define CONTROL_MAILBOX "mailbox"

int wr_amqp_node_mailbox_made(wr_amqp_t *a, const char *key, const char *user) {
  char route[WR_AMQP_NAME_MAX];
  amqp_table_entry_t e[2];
  amqp_basic_properties_t props = {._flags = AMQP_BASIC_HEADERS_FLAG};
  e[0].key = amqp_cstring_bytes("x-warren-control");
  e[0].value.kind = AMQP_FIELD_KIND_UTF8;
  e[0].value.value.bytes = amqp_cstring_bytes(CONTROL_MAILBOX);
  e[1].key = amqp_cstring_bytes("x-warren-user");
  e[1].value.kind = AMQP_FIELD_KIND_UTF8;
  e[1].value.value.bytes = amqp_cstring_bytes(user);
  props.headers = (amqp_table_t){.num_entries = 2, .entries = e};
  if (wr_amqp_name_fmt(route, sizeof(route), a->cfg->queue, ".route") < 0 ||
      wr_amqp_poll_open(a) < 0)
    return 0;
  /* A hint, not a notification: transient, unconfirmed. A user id of any
   * length fits: a header's value is a long string. */
  int st = amqp_basic_publish(a->conn, WR_AMQP_CH_POLL, amqp_cstring_bytes(route),
                              amqp_cstring_bytes(key), 0, 0, &props, amqp_empty_bytes);
  return st == AMQP_STATUS_OK ? 0 : -ECONNRESET;
}

int wr_amqp_node_inspect(wr_amqp_t *a, const amqp_table_t *h, wr_amqp_source_t source,
                         const char *user, bool *fan) {
  const amqp_field_value_t *ctl = wr_amqp_table_get(h, "x-warren-control");
  if (ctl != NULL) {
    *fan = false;
    if (source != WR_SRC_NODE)
      return 3; /* a hint that found no node: nothing to do */
    const amqp_field_value_t *u = wr_amqp_table_get(h, "x-warren-user");
    if ((ctl->kind == AMQP_FIELD_KIND_UTF8 || ctl->kind == AMQP_FIELD_KIND_BYTES) &&
        wr_amqp_bytes_is(ctl->value.bytes, CONTROL_MAILBOX) && u != NULL &&
        (u->kind == AMQP_FIELD_KIND_UTF8 || u->kind == AMQP_FIELD_KIND_BYTES)) {
      char *who = wr_amqp_bytes_strdup(u->value.bytes);
      int rc = who != NULL ? wr_amqp_mbox_made_elsewhere(a, who) : -ENOMEM;
      free(who);
      if (rc < 0 && rc != -ENOMEM)
        return rc;
    }
    return 3;
  }
  const amqp_field_value_t *f = wr_amqp_table_get(h, "x-warren-fan");
  bool is_fan = f != NULL && (f->kind == AMQP_FIELD_KIND_UTF8 || f->kind == AMQP_FIELD_KIND_BYTES);
  char own[WR_AMQP_NAME_MAX], key[WR_AMQP_USER_KEY_MAX];

  *fan = false;
  if (source == WR_SRC_NODE) {
    if (is_fan && wr_amqp_bytes_is(f->value.bytes, a->cfg->cluster_node_id)) {
      WR_AMQP_STAT_ADD(a, fan_echoes, 1);
      return 3;
    }
    *fan = is_fan;
    return 0;
  }
  if (is_fan) {
    WR_AMQP_STAT_ADD(a, fan_dropped, 1);
    return 3;
  }
  /* "<queue>.node.<id>" of another node: it held a binding for user and
   * left the copy unconsumed for its TTL. Its binding goes, or every later
   * copy for user would wait out that TTL there too. A node that was only
   * stopped binds its online users again when it reconnects. */
  amqp_bytes_t dq = wr_amqp_death_queue(h);
  size_t qlen = strlen(a->cfg->queue);
  if (dq.len <= qlen + 6 || memcmp(dq.bytes, a->cfg->queue, qlen) != 0 ||
      memcmp((const char *)dq.bytes + qlen, ".node.", 6) != 0 || user == NULL ||
      wr_amqp_node_queue_name(a->cfg, own, sizeof(own)) < 0 || wr_amqp_bytes_is(dq, own))
    return 0;
  if (wr_amqp_user_key(user, key, sizeof(key)) < 0)
    return 0;
  int rc = route_bind(a, dq, key, false);
  if (rc < 0)
    return rc;
  if (rc == 0) {
    WR_AMQP_STAT_ADD(a, node_foreign_unbinds, 1);
    wr_info("amqp", "a copy for user %s expired in %.*s: that node's binding removed", user,
            (int)dq.len, (const char *)dq.bytes);
  }
  return 0;
}

int wr_amqp_node_unbind_due(wr_amqp_t *a, bool *more) {
  wr_nodebinds_t *t = &a->binds;
  int64_t now = wr_amqp_now_ms();
  for (int n = 0; t->qhead != NULL && t->qhead->due_ms <= now; n++) {
    if (n == WR_AMQP_RPC_BUDGET) {
      if (more != NULL)
        *more = true;
      return 0;
    }
    int rc = do_unbind(a, t->qhead);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Bindings of a durable exchange and queue outlive connections, so this
 * only repairs a node queue deleted behind warren's back: it runs in steps
 * between deliveries, never before them. */
void wr_amqp_node_session_open(wr_amqp_t *a) {
  a->binds.resume_bucket = 0;
  a->binds.resume_nbuckets = a->binds.nbuckets;
  a->binds.resuming = a->binds.n > 0;
}

int wr_amqp_node_resume_step(wr_amqp_t *a) {
  wr_nodebinds_t *t = &a->binds;
  int budget = WR_AMQP_RPC_BUDGET;
  if (!t->resuming || a->conn == NULL)
    return 0;
  if (t->resume_nbuckets != t->nbuckets) {
    /* Rehashed meanwhile: go over it again (the bound ones are skipped). */
    t->resume_bucket = 0;
    t->resume_nbuckets = t->nbuckets;
  }
  for (; t->resume_bucket < t->nbuckets; t->resume_bucket++) {
    for (wr_nodebind_t *e = t->buckets[t->resume_bucket]; e != NULL; e = e->hnext) {
      if (e->leaving || e->bound_gen == a->generation)
        continue; /* unbound when its grace is over; or bound already */
      if (budget-- == 0)
        return 0;
      int rc = do_bind(a, e);
      if (rc < 0)
        return rc;
    }
  }
  t->resuming = false;
  wr_info("amqp", "the users online here are bound to this node again");
  return 0;
}

void wr_amqp_node_free(wr_amqp_t *a) {
  wr_nodebinds_t *t = &a->binds;
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (wr_nodebind_t *e = t->buckets[i], *next; e != NULL; e = next) {
      next = e->hnext;
      free(e);
    }
  }
  free(t->buckets);
  memset(t, 0, sizeof(*t));
}
