/* Delivery tracking (DESIGN.md §5): every consumed message becomes a pending
 * delivery with one target per user; each target ends delivered or offline,
 * and the pending delivery's verdict follows from its targets. */
#include "bridge/bridge_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/log.h"

typedef enum { T_WAITING = 0, T_DELIVERED, T_OFFLINE } target_state_t;

/* A client heard from within this long is alive: over half its output cap it
 * is paced, not closed. */
#define WR_BUSY_CLIENT_MS 5000

typedef struct wr_pending_s wr_pending_t;

typedef struct target_s {
  wr_pending_t *p;
  wr_user_t *user;
  wr_list_t user_node;     /* in user->targets while waiting (client mode) */
  uint32_t writes_pending; /* write mode: frames not yet written */
  uint32_t writes_ok;
  uint8_t state;
  bool linked;
} target_t;

struct wr_pending_s {
  wr_list_t node; /* b->pendings while unresolved */
  wr_amqp_delivery_t *d;
  wr_envelope_t env;
  uint64_t deadline_ms; /* uv_now() + ack.timeout_ms (client mode) */
  int64_t origin_ms;    /* latency start: created_at, AMQP timestamp or consume time */
  wr_ws_buf_t *bufs[WR_WS_NFORMATS];
  uint32_t refs; /* 1 while unresolved + one per frame queued with a ctx */
  size_t n_open; /* targets still waiting */
  size_t n_targets;
  bool resolved;
  target_t targets[];
};

/* Up to 30 minutes: latency counts from the publisher's clock, so a
 * notification that waited on the retry ladder for an offline user lands in
 * the upper buckets. */
const double wr_latency_bounds[WR_LATENCY_NBOUNDS] = {0.5,  1,     2,     5,     10,     25,
                                                      50,   100,   250,   500,   1000,   2500,
                                                      5000, 10000, 30000, 60000, 300000, 1800000};

int64_t wr_now_realtime_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void observe_latency(wr_bridge_t *b, int64_t from_ms) {
  wr_hist_observe(&b->stats.latency, (double)(wr_now_realtime_ms() - from_ms));
}

/* Where delivery latency starts: the envelope's created_at (unix ms, or
 * seconds when the value is too small to be ms), else the AMQP timestamp
 * (whole seconds), else the moment warren read the message. */
static int64_t latency_origin_ms(const wr_envelope_t *env, const wr_amqp_delivery_t *d) {
  if (env->has_created_at) {
    double t = env->created_at;
    if (t < 1e11)
      t *= 1000.0;            /* seconds: 1e11 ms is 1973, 1e11 s is the year 5138 */
    if (t > 1e12 && t < 1e14) /* after 2001, before the year 5000 */
      return (int64_t)t;
  }
  if (d->timestamp_s > 0)
    return d->timestamp_s * 1000;
  return d->consumed_at_ms;
}

static void pending_unref(wr_pending_t *p) {
  if (--p->refs > 0)
    return;
  free(p);
}

static char *xstrdup(const char *s) {
  return s ? strdup(s) : NULL;
}

static wr_ws_buf_t *encoded(wr_pending_t *p, wr_ws_format_t fmt) {
  uint8_t *out = NULL;
  size_t len = 0;
  wr_ws_buf_t *buf;

  if (p->bufs[fmt] != NULL)
    return p->bufs[fmt];
  /* Encoded once per format straight into the shared buffer: the encoder
   * reserves the buffer's header, so nothing is copied. */
  if (wr_envelope_encode(&p->env, fmt == WR_WS_FORMAT_MSGPACK ? WR_ENV_MSGPACK : WR_ENV_JSON,
                         WR_WS_BUF_HEADER, &out, &len) != 0)
    return NULL;
  buf = wr_ws_buf_adopt(out, len - WR_WS_BUF_HEADER);
  p->bufs[fmt] = buf;
  return buf;
}

void wr_bridge_verdict(wr_bridge_t *b, wr_amqp_delivery_t *d) {
  if (b->ov_len == 0 && wr_ring_push(&b->commands, d) == 0) {
    b->wake_needed = true;
    return;
  }
  /* The ring is sized for several prefetch windows, so this is rare (a
   * reconnect with a full window still in the loop). Keep order. */
  if (b->ov_len == b->ov_cap) {
    size_t ncap = b->ov_cap ? b->ov_cap * 2 : 256;
    wr_amqp_delivery_t **n = malloc(ncap * sizeof(*n));
    if (n == NULL) {
      wr_error("bridge",
               "out of memory queueing verdict for delivery %llu; it will be "
               "redelivered after reconnect",
               (unsigned long long)d->tag);
      abort();
    }
    for (size_t i = 0; i < b->ov_len; i++)
      n[i] = b->overflow[(b->ov_head + i) % b->ov_cap];
    free(b->overflow);
    b->overflow = n;
    b->ov_head = 0;
    b->ov_cap = ncap;
  }
  b->overflow[(b->ov_head + b->ov_len) % b->ov_cap] = d;
  b->ov_len++;
  if (!uv_is_active((uv_handle_t *)&b->retry_timer))
    uv_timer_start(&b->retry_timer, wr_bridge_retry_cb, 1, 1);
}

static void set_verdict(wr_bridge_t *b, wr_amqp_delivery_t *d, wr_verdict_kind_t v) {
  d->verdict = v;
  wr_bridge_verdict(b, d);
}

/* Builds the ladder or park copy for one user who could not be reached. */
static void fill_offline_pub(wr_bridge_t *b, wr_pending_t *p, const char *user,
                             wr_amqp_pub_t *pub) {
  const wr_config_t *cfg = b->cfg;
  wr_amqp_delivery_t *d = p->d;
  uint32_t done = d->attempt + 1; /* attempts made, including this one */

  memset(pub, 0, sizeof(*pub));
  pub->user = xstrdup(user);
  pub->id = xstrdup(p->env.id);
  pub->expires_at_ms = p->env.expires_at_ms;
  pub->attempt = done;
  if (p->env.expires_at_ms != 0 && wr_now_realtime_ms() >= p->env.expires_at_ms) {
    pub->kind = WR_PUB_PARK;
    pub->reason = "expired";
    b->stats.parked_expired++;
  } else if (done >= cfg->max_attempts) {
    pub->kind = WR_PUB_PARK;
    pub->reason = "max_attempts";
    b->stats.parked_max_attempts++;
  } else {
    size_t step = d->attempt < cfg->n_retry_delays ? d->attempt : cfg->n_retry_delays - 1;
    pub->kind = WR_PUB_RETRY;
    pub->delay_ms = cfg->retry_delays_ms[step];
    b->stats.retried[step]++;
  }
}

/* All targets are settled: compute the verdict and hand the delivery back. */
static void finish(wr_bridge_t *b, wr_pending_t *p) {
  wr_amqp_delivery_t *d = p->d;
  size_t n_off = 0, i, k = 0;

  for (i = 0; i < p->n_targets; i++)
    if (p->targets[i].state == T_OFFLINE)
      n_off++;
  if (n_off == 0) {
    d->verdict = WR_VERDICT_ACK;
    b->stats.verdicts_acked++;
  } else {
    d->pubs = calloc(n_off, sizeof(*d->pubs));
    if (d->pubs == NULL) {
      d->verdict = WR_VERDICT_REQUEUE;
      b->stats.requeued++;
    } else {
      for (i = 0; i < p->n_targets; i++)
        if (p->targets[i].state == T_OFFLINE)
          fill_offline_pub(b, p, p->targets[i].user->id, &d->pubs[k++]);
      d->n_pubs = n_off;
      d->verdict = WR_VERDICT_PUBLISH;
    }
  }
  wr_debug("bridge", "delivery %s (tag %llu): %zu target(s), %zu offline", p->env.id,
           (unsigned long long)d->tag, p->n_targets, n_off);
  p->d = NULL;
  wr_bridge_verdict(b, d);
}

static void unlink_target(wr_bridge_t *b, target_t *t) {
  if (t->linked) {
    wr_list_remove(&t->user_node);
    t->linked = false;
    t->user->n_targets--;
  }
  wr_index_release(&b->index, t->user);
}

/* Releases the loop-side state of p (envelope, buffers, user links). */
static void retire(wr_bridge_t *b, wr_pending_t *p) {
  size_t i;
  p->resolved = true;
  wr_list_remove(&p->node);
  b->n_pendings--;
  for (i = 0; i < p->n_targets; i++)
    if (p->targets[i].user != NULL)
      unlink_target(b, &p->targets[i]);
  for (i = 0; i < WR_WS_NFORMATS; i++) {
    wr_ws_buf_unref(p->bufs[i]);
    p->bufs[i] = NULL;
  }
  wr_envelope_close(&p->env);
  pending_unref(p);
}

static void settle(wr_bridge_t *b, target_t *t, target_state_t st) {
  wr_pending_t *p = t->p;
  if (p->resolved || t->state != T_WAITING)
    return;
  t->state = st;
  if (st == T_DELIVERED) {
    b->stats.targets_delivered++;
    observe_latency(b, p->origin_ms);
  } else {
    b->stats.targets_offline++;
  }
  if (t->linked) {
    wr_list_remove(&t->user_node);
    t->linked = false;
    t->user->n_targets--;
  }
  if (--p->n_open == 0) {
    finish(b, p);
    retire(b, p);
  }
}

/* Queues p's frame on one connection. In write mode the frame carries the
 * target as context so its write completion settles it. */
static int send_one(wr_bridge_t *b, wr_pending_t *p, target_t *t, wr_bconn_t *c) {
  wr_ws_buf_t *buf = encoded(p, wr_ws_conn_format(c->ws));
  void *ctx = (t != NULL && b->cfg->ack_mode == WR_ACK_WRITE) ? t : NULL;
  int rc;

  if (buf == NULL)
    return -ENOMEM;
  /* Backpressure: a connection with more than half of server.max_queued_bytes
   * still unwritten, whose client spoke (acked, pinged) in the last few
   * seconds, is busy rather than gone: it gets nothing more for now. The
   * notification keeps waiting for the user's ack (client mode) or goes to
   * the ladder (write mode), so a returning client with a big backlog is
   * paced instead of being cut with 4008 over and over. A silent client is
   * sent to as usual and meets the cap (4008): it has stopped reading. */
  size_t queued = wr_ws_conn_queued_bytes(c->ws);
  if (queued > 0 && queued + buf->len > b->cfg->max_queued_bytes / 2 &&
      wr_ws_conn_idle_ms(c->ws) < WR_BUSY_CLIENT_MS) {
    b->stats.deferred++;
    return -EAGAIN;
  }
  rc = wr_ws_conn_send(c->ws, buf, ctx);
  if (rc == 0) {
    b->stats.delivered++;
    /* The client answers each notification with an ack: that answer does
     * not count against its message rate. */
    if (b->cfg->ack_mode == WR_ACK_CLIENT)
      wr_ws_conn_grant(c->ws);
    if (ctx != NULL) {
      t->writes_pending++;
      p->refs++;
    }
  }
  return rc;
}

/* Returns how many connections the frame was queued on. */
static size_t send_to_user(wr_bridge_t *b, wr_pending_t *p, target_t *t) {
  wr_list_t *it, *next;
  size_t sent = 0;
  /* A send can fail and close that connection (slow consumer), which removes
   * it from the list: walk with a saved next pointer. Closing is deferred by
   * ws/, so the list itself stays valid. */
  for (it = t->user->conns.next; it != &t->user->conns; it = next) {
    next = it->next;
    if (send_one(b, p, t, wr_container_of(it, wr_bconn_t, user_node)) == 0)
      sent++;
  }
  return sent;
}

static void dead(wr_bridge_t *b, wr_amqp_delivery_t *d, wr_env_result_t r) {
  b->stats.rejected++;
  b->stats.dead_by_reason[r < 8 ? r : 0]++;
  d->dead_reason = wr_env_result_str(r);
  wr_warn("bridge", "rejecting message %s (tag %llu, %zu bytes): %s; sent to %s.dead",
          d->message_id ? d->message_id : "(no message_id)", (unsigned long long)d->tag,
          d->body_len, d->dead_reason, b->cfg->queue);
  set_verdict(b, d, WR_VERDICT_DEAD);
}

static void broadcast(wr_bridge_t *b, wr_pending_t *p, uint64_t consumed_ns) {
  wr_bridge_stats_t *st = &b->stats;
  wr_list_t *it, *next;
  uint64_t sent = 0;
  st->broadcasts++;
  for (it = b->index.all_conns.next; it != &b->index.all_conns; it = next) {
    next = it->next;
    if (send_one(b, p, NULL, wr_container_of(it, wr_bconn_t, all_node)) == 0)
      sent++;
  }
  /* Fan-out time: the frame is now in every socket (or, for a socket that
   * could not take it all, queued behind its earlier frames). */
  if (consumed_ns == 0)
    return;
  uint64_t now = wr_amqp_now_ns();
  double ms = now > consumed_ns ? (double)(now - consumed_ns) / 1e6 : 0;
  wr_hist_observe(&st->fanout, ms);
  st->fanout_last_ms = ms;
  st->fanout_last_conns = sent;
}

void wr_delivery_handle(wr_bridge_t *b, wr_amqp_delivery_t *d) {
  const wr_config_t *cfg = b->cfg;
  wr_envelope_t env;
  wr_env_result_t r;
  int64_t base_ms = d->timestamp_s > 0 ? d->timestamp_s * 1000 : d->consumed_at_ms;
  size_t n, i;
  wr_pending_t *p;

  if (b->phase == WR_PHASE_CLOSING) {
    b->stats.requeued++;
    set_verdict(b, d, WR_VERDICT_REQUEUE);
    return;
  }
  r = wr_envelope_decode(&env, d->body, d->body_len, d->content_type, d->message_id,
                         cfg->max_body_bytes, base_ms);
  if (r != WR_ENV_OK) {
    dead(b, d, r);
    return;
  }
  b->stats.consumed[env.format == WR_ENV_MSGPACK ? 1 : 0]++;
  if (d->expires_at_ms != 0)
    env.expires_at_ms = d->expires_at_ms;
  /* A ladder copy targets exactly one user, whatever the body says. */
  n = d->target_user != NULL ? 1 : env.broadcast ? 0 : env.n_users;

  p = calloc(1, sizeof(*p) + n * sizeof(target_t));
  if (p == NULL) {
    wr_envelope_close(&env);
    b->stats.requeued++;
    set_verdict(b, d, WR_VERDICT_REQUEUE);
    return;
  }
  p->d = d;
  p->env = env;
  p->refs = 1;
  p->n_targets = n;
  p->n_open = n;
  p->origin_ms = latency_origin_ms(&p->env, d);
  p->deadline_ms = uv_now(&b->loop) + cfg->ack_timeout_ms;
  wr_list_push_back(&b->pendings, &p->node);
  b->n_pendings++;

  if (env.expires_at_ms != 0 && wr_now_realtime_ms() >= env.expires_at_ms) {
    /* Expired before delivery: park it whole, once. */
    d->pubs = calloc(1, sizeof(*d->pubs));
    if (d->pubs == NULL) {
      d->verdict = WR_VERDICT_REQUEUE;
    } else {
      d->n_pubs = 1;
      d->pubs[0].kind = WR_PUB_PARK;
      d->pubs[0].reason = "expired";
      d->pubs[0].attempt = d->attempt;
      d->pubs[0].user = xstrdup(d->target_user);
      d->pubs[0].id = xstrdup(env.id);
      d->pubs[0].expires_at_ms = env.expires_at_ms;
      d->verdict = WR_VERDICT_PUBLISH;
      b->stats.parked_expired++;
    }
    p->d = NULL;
    wr_bridge_verdict(b, d);
    retire(b, p);
    return;
  }

  if (n == 0) {
    /* Broadcast: everyone online now, then ack; never retried. */
    broadcast(b, p, d->consumed_ns);
    finish(b, p);
    retire(b, p);
    return;
  }

  for (i = 0; i < n; i++) {
    target_t *t = &p->targets[i];
    const char *uid = d->target_user != NULL ? d->target_user : env.users[i];
    t->p = p;
    wr_list_init(&t->user_node);
    t->user = wr_index_get(&b->index, uid, true);
    if (t->user == NULL) {
      t->state = T_WAITING;
      continue; /* out of memory: settled as offline below */
    }
    t->user->n_targets++;
    wr_list_push_back(&t->user->targets, &t->user_node);
    t->linked = true;
  }
  /* Pin p while settling targets one by one, so a target that settles the
   * whole delivery cannot free it under us. */
  p->refs++;
  for (i = 0; i < n && !p->resolved; i++) {
    target_t *t = &p->targets[i];
    if (t->user == NULL || t->user->n_conns == 0) {
      settle(b, t, T_OFFLINE);
      continue;
    }
    /* Nothing queued anywhere (every connection busy or closing): the ladder
     * brings it back soon, rather than waiting for the ack timeout. */
    if (send_to_user(b, p, t) == 0 && !p->resolved)
      settle(b, t, T_OFFLINE);
  }
  pending_unref(p);
}

void wr_delivery_conn_opened(wr_bridge_t *b, wr_bconn_t *c) {
  wr_list_t *it, *next;
  /* Every open connection of a user has seen every notification still
   * waiting for that user's ack, so "all connections closed" means offline.
   * A new tab therefore gets what is still unacknowledged. */
  if (b->cfg->ack_mode != WR_ACK_CLIENT)
    return;
  for (it = c->user->targets.next; it != &c->user->targets; it = next) {
    target_t *t = wr_container_of(it, target_t, user_node);
    next = it->next;
    send_one(b, t->p, t, c);
  }
}

void wr_delivery_conn_closed(wr_bridge_t *b, wr_bconn_t *c) {
  wr_user_t *u = c->user;
  /* Called after the connection left the index. */
  if (u->n_conns > 0 || b->cfg->ack_mode != WR_ACK_CLIENT)
    return;
  u->n_conns++; /* pin the user record: retiring the last target may release it */
  while (!wr_list_empty(&u->targets)) {
    target_t *t = wr_container_of(u->targets.next, target_t, user_node);
    settle(b, t, T_OFFLINE);
  }
  u->n_conns--;
}

void wr_delivery_client_ack(wr_bridge_t *b, wr_bconn_t *c, const char *id) {
  wr_list_t *it, *next;
  bool found = false;
  wr_user_t *u = c->user;

  /* The same id can wait more than once (a duplicate publish): settle all. */
  u->n_conns++; /* pin the user record while settling */
  for (it = u->targets.next; it != &u->targets; it = next) {
    target_t *t = wr_container_of(it, target_t, user_node);
    next = it->next;
    if (strcmp(t->p->env.id, id) == 0) {
      /* settle() may free other targets of this list only through their own
       * pendings; next stays valid because each pending has one target per
       * user. */
      found = true;
      settle(b, t, T_DELIVERED);
    }
  }
  u->n_conns--;
  if (found)
    b->stats.client_acks++;
  else
    b->stats.client_acks_unknown++;
}

void wr_delivery_sent(wr_bridge_t *b, void *ctx, int status) {
  target_t *t = ctx;
  wr_pending_t *p = t->p;

  b->stats.written += status == 0;
  if (!p->resolved) {
    t->writes_pending--;
    if (status == 0)
      t->writes_ok++;
    if (t->writes_pending == 0)
      settle(b, t, t->writes_ok > 0 ? T_DELIVERED : T_OFFLINE);
  }
  pending_unref(p);
}

void wr_delivery_sweep(wr_bridge_t *b, uint64_t now_ms) {
  /* Deadlines grow with arrival order, so stop at the first one not due. */
  while (!wr_list_empty(&b->pendings)) {
    wr_pending_t *p = wr_container_of(b->pendings.next, wr_pending_t, node);
    size_t i;
    if (p->deadline_ms > now_ms || b->cfg->ack_mode != WR_ACK_CLIENT)
      break;
    p->refs++;
    for (i = 0; i < p->n_targets && !p->resolved; i++) {
      if (p->targets[i].state == T_WAITING) {
        b->stats.ack_timeouts++;
        settle(b, &p->targets[i], T_OFFLINE);
      }
    }
    /* Every waiting target was just settled, so p is retired. */
    assert(p->resolved);
    pending_unref(p);
  }
}

static void give_back(wr_bridge_t *b, wr_pending_t *p, bool stale) {
  wr_amqp_delivery_t *d = p->d;
  p->d = NULL;
  if (stale)
    b->stats.discarded_stale++;
  else
    b->stats.requeued++;
  d->verdict = WR_VERDICT_REQUEUE;
  wr_bridge_verdict(b, d);
  retire(b, p);
}

void wr_delivery_discard_generation(wr_bridge_t *b, uint64_t gen) {
  wr_list_t *it, *next;
  for (it = b->pendings.next; it != &b->pendings; it = next) {
    wr_pending_t *p = wr_container_of(it, wr_pending_t, node);
    next = it->next;
    if (p->d != NULL && p->d->generation <= gen)
      give_back(b, p, true);
  }
}

void wr_delivery_requeue_all(wr_bridge_t *b) {
  while (!wr_list_empty(&b->pendings)) {
    wr_pending_t *p = wr_container_of(b->pendings.next, wr_pending_t, node);
    give_back(b, p, false);
  }
}
