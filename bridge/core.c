/* The delivery core (core_int.h): every consumed message becomes a pending
 * delivery with one target per user; each target ends delivered or offline,
 * and the verdict follows from its targets. No I/O: frames and verdicts leave
 * through the sink. */
#include "bridge/core_int.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/log.h"

typedef enum { T_WAITING = 0, T_DELIVERED, T_OFFLINE } target_state_t;

/* Why a target went offline: a mailbox item is requeued for a user who left,
 * but one their connections did not take or ack pauses their mailbox. */
typedef enum { WHY_NONE = 0, WHY_GONE, WHY_UNSENT, WHY_TIMEOUT, WHY_WRITE_FAILED } why_t;

typedef struct target_s {
  wr_pending_t *p;
  wr_user_t *user;         /* a reference, held until p is retired */
  wr_list_t wait_node;     /* in user->waiting while T_WAITING */
  wr_list_t defer_node;    /* in core->deferred while completions wait */
  uint32_t writes_pending; /* write mode: frames queued and not yet done */
  uint32_t writes_ok;
  uint32_t deferred_ok, deferred_failed; /* completions reported re-entrantly */
  uint8_t state;
  uint8_t why; /* why_t, once T_OFFLINE */
} target_t;

struct wr_pending_s {
  wr_list_t node; /* core->pendings while unresolved */
  wr_amqp_delivery_t *d;
  wr_envelope_t env;
  uint64_t arrived_ms; /* core clock at arrival: the ack deadline counts from here */
  int64_t origin_ms;   /* latency start: created_at, AMQP timestamp or consume time */
  wr_ws_buf_t *bufs[WR_WS_NFORMATS];
  uint32_t refs; /* 1 while unresolved + one per write completion owed + holds */
  size_t n_open; /* targets still waiting */
  size_t n_targets;
  wr_amqp_source_t source; /* the delivery's, kept past its verdict */
  bool fan;                /* the delivery's: a fan copy from another node */
  bool backlog;            /* the delivery's: first item of a mailbox backlog */
  bool resolved;
  target_t targets[];
};

void wr_core_config_from(wr_core_config_t *out, const wr_config_t *cfg) {
  memset(out, 0, sizeof(*out));
  out->ack_mode = cfg->ack_mode;
  out->ack_timeout_ms = cfg->ack_timeout_ms;
  out->max_attempts = cfg->max_attempts;
  out->n_retry_delays = cfg->n_retry_delays;
  memcpy(out->retry_delays_ms, cfg->retry_delays_ms, sizeof(out->retry_delays_ms));
  out->max_queued_bytes = cfg->max_queued_bytes;
  out->max_body_bytes = cfg->max_body_bytes;
  out->mailbox_enabled = cfg->mailbox_enabled;
  out->mailbox_max_redeliveries = cfg->mailbox_max_redeliveries;
  out->cluster = cfg->cluster_node_id != NULL;
}

/* The AMQP timestamp property in ms, when it is a plausible time (after
 * 1970, before the year 5000); else 0. It is whatever the publisher wrote,
 * so it is never multiplied unchecked. */
static int64_t amqp_timestamp_ms(const wr_amqp_delivery_t *d) {
  return d->timestamp_s > 0 && d->timestamp_s < 100000000000 ? d->timestamp_s * 1000 : 0;
}

static void observe_latency(wr_core_t *core, int64_t from_ms) {
  /* from_ms may be anything a publisher wrote: no subtraction that overflows. */
  wr_hist_observe(&core->stats->latency, (double)core->wall_ms - (double)from_ms);
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
  int64_t ts = amqp_timestamp_ms(d);
  return ts != 0 ? ts : d->consumed_at_ms;
}

static void pending_unref(wr_pending_t *p) {
  assert(p->refs > 0);
  if (--p->refs > 0)
    return;
  assert(p->resolved);
  free(p);
}

/* An event starts: completions the sink reports from now on wait for its end. */
static void enter(wr_core_t *core) {
  core->depth++;
}

static void settle(wr_core_t *core, target_t *t, target_state_t st, why_t why);

static void apply_deferred(wr_core_t *core) {
  while (!wr_list_empty(&core->deferred)) {
    target_t *t = wr_container_of(core->deferred.next, target_t, defer_node);
    wr_pending_t *p = t->p;
    uint32_t ok = t->deferred_ok, failed = t->deferred_failed;
    wr_list_remove(&t->defer_node);
    t->deferred_ok = t->deferred_failed = 0;
    if (!p->resolved) {
      assert(t->writes_pending >= ok + failed);
      t->writes_pending -= ok + failed;
      t->writes_ok += ok;
      if (t->writes_pending == 0)
        settle(core, t, t->writes_ok > 0 ? T_DELIVERED : T_OFFLINE, WHY_WRITE_FAILED);
    }
    /* Each completion held a reference on p. */
    for (uint32_t i = 0; i < ok + failed; i++)
      pending_unref(p);
  }
}

/* An event ends: apply what was deferred, at the outermost level only. */
static void leave(wr_core_t *core) {
  assert(core->depth > 0);
  if (core->depth == 1)
    apply_deferred(core);
  core->depth--;
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

static void hand_back(wr_core_t *core, wr_amqp_delivery_t *d, wr_verdict_kind_t v) {
  d->verdict = v;
  core->sink.verdict_cb(d, core->sink.data);
}

/* Builds the ladder or park copy for one user who could not be reached.
 * Returns 0 or -ENOMEM. */
static int fill_offline_pub(wr_core_t *core, const wr_envelope_t *env,
                            const wr_amqp_delivery_t *d, const char *user, wr_amqp_pub_t *pub) {
  const wr_core_config_t *cfg = &core->cfg;
  /* Attempts made, including this one; the header is whatever a copy
   * carried, so never wrap. */
  uint32_t done = d->attempt < UINT32_MAX ? d->attempt + 1 : UINT32_MAX;

  memset(pub, 0, sizeof(*pub));
  pub->user = strdup(user);
  pub->id = strdup(env->id);
  if (pub->user == NULL || pub->id == NULL)
    return -ENOMEM;
  pub->expires_at_ms = env->expires_at_ms;
  pub->attempt = done;
  bool expired = env->expires_at_ms != 0 && core->wall_ms >= env->expires_at_ms;
  if (expired) {
    pub->kind = WR_PUB_PARK;
    pub->reason = "expired";
  } else if (done >= cfg->max_attempts) {
    pub->kind = WR_PUB_PARK;
    pub->reason = "max_attempts";
  } else {
    size_t step = d->attempt < cfg->n_retry_delays ? d->attempt : cfg->n_retry_delays - 1;
    pub->kind = WR_PUB_RETRY;
    pub->delay_ms = cfg->retry_delays_ms[step];
  }
  /* With mailboxes the copy waits in the user's mailbox; the ladder copy
   * above is what the AMQP thread publishes instead if the mailbox refuses
   * it. An expired one is parked either way. */
  if (cfg->mailbox_enabled && !expired) {
    pub->fallback_kind = pub->kind;
    pub->fallback_delay_ms = pub->delay_ms;
    pub->fallback_attempt = pub->attempt;
    pub->fallback_reason = pub->reason;
    pub->kind = WR_PUB_MAILBOX;
    pub->delay_ms = 0;
    pub->attempt = d->attempt;
    pub->reason = NULL;
  }
  return 0;
}

/* The park copy of a mailbox item its user never acked. */
static int fill_unacked_pub(const wr_pending_t *p, const wr_amqp_delivery_t *d, const char *user,
                            wr_amqp_pub_t *pub) {
  memset(pub, 0, sizeof(*pub));
  pub->user = strdup(user);
  pub->id = strdup(p->env.id);
  pub->kind = WR_PUB_PARK;
  pub->reason = "unacked";
  pub->attempt = d->attempt;
  pub->expires_at_ms = p->env.expires_at_ms;
  return pub->user != NULL && pub->id != NULL ? 0 : -ENOMEM;
}

static void count_pub(wr_core_t *core, const wr_amqp_pub_t *pub);

/* The fan copy of a mailbox item delivered here (wr_amqp_pub_t.fan). 0, or
 * -ENOMEM: the item is acked without it (the other devices miss it; the
 * user has it). */
static int fan_pub(wr_core_t *core, const wr_pending_t *p, wr_amqp_delivery_t *d,
                   const char *user) {
  wr_amqp_pub_t *pub = calloc(1, sizeof(*pub));
  if (pub == NULL)
    return -ENOMEM;
  d->pubs = pub;
  d->n_pubs = 1;
  pub->kind = WR_PUB_ROUTE;
  pub->fan = true;
  pub->attempt = d->attempt;
  pub->expires_at_ms = p->env.expires_at_ms;
  pub->user = strdup(user);
  pub->id = strdup(p->env.id);
  if (pub->user == NULL || pub->id == NULL) {
    wr_amqp_delivery_drop_pubs(d);
    return -ENOMEM;
  }
  count_pub(core, pub);
  return 0;
}

static void count_pub(wr_core_t *core, const wr_amqp_pub_t *pub) {
  wr_bridge_stats_t *st = core->stats;
  if (pub->kind == WR_PUB_MAILBOX) {
    st->mailbox_copies++;
  } else if (pub->kind == WR_PUB_ROUTE && pub->fan) {
    st->fan_copies++;
  } else if (pub->kind == WR_PUB_ROUTE) {
    st->routed_copies++;
  } else if (pub->kind == WR_PUB_BROADCAST) {
    st->routed_broadcasts++;
  } else if (pub->kind == WR_PUB_RETRY) {
    for (size_t i = 0; i < core->cfg.n_retry_delays; i++) {
      if (core->cfg.retry_delays_ms[i] == pub->delay_ms) {
        st->retried[i]++;
        break;
      }
    }
  } else if (strcmp(pub->reason, "expired") == 0) {
    st->parked_expired++;
  } else if (strcmp(pub->reason, "unacked") == 0) {
    st->parked_unacked++;
  } else {
    st->parked_max_attempts++;
  }
}

/* ---- mailbox items -------------------------------------------------------- */

static wr_redelivery_t *redelivery(wr_user_t *u, const char *id) {
  for (size_t i = 0; i < u->n_redeliveries; i++)
    if (strcmp(u->redeliveries[i].id, id) == 0)
      return &u->redeliveries[i];
  return NULL;
}

static void redelivery_forget(wr_user_t *u, const char *id) {
  wr_redelivery_t *r = redelivery(u, id);
  if (r == NULL)
    return;
  free(r->id);
  *r = u->redeliveries[--u->n_redeliveries];
}

/* One more ack timeout of mailbox item id: how many so far (0 when out of
 * memory to count: it is then requeued, as the first time). */
static uint32_t redelivery_count(wr_user_t *u, const char *id) {
  wr_redelivery_t *r = redelivery(u, id);
  if (r == NULL) {
    if (u->n_redeliveries == u->cap_redeliveries) {
      size_t cap = u->cap_redeliveries ? u->cap_redeliveries * 2 : 4;
      wr_redelivery_t *n = realloc(u->redeliveries, cap * sizeof(*n));
      if (n == NULL)
        return 0;
      u->redeliveries = n;
      u->cap_redeliveries = cap;
    }
    r = &u->redeliveries[u->n_redeliveries];
    if ((r->id = strdup(id)) == NULL)
      return 0;
    r->count = 0;
    u->n_redeliveries++;
  }
  return ++r->count;
}

/* The verdict of a mailbox item: it is already in its user's mailbox, so
 * nothing is copied unless it is parked. Delivered: ack. Its user gone, or
 * it went unsent or its writes failed: requeue (it waits in its place).
 * Unacked for ack.timeout_ms: requeue, or park ("unacked") at
 * mailbox.max_redeliveries. */
static void finish_mailbox(wr_core_t *core, wr_pending_t *p, wr_amqp_delivery_t *d) {
  target_t *t = &p->targets[0];
  wr_user_t *u = t->user;
  if (t->state == T_DELIVERED) {
    redelivery_forget(u, p->env.id);
    core->stats->verdicts_acked++;
    /* Cluster mode: the user's devices on other nodes get a fan copy
     * through Q.route; then the item is acked. */
    if (core->cfg.cluster && fan_pub(core, p, d, u->id) == 0) {
      hand_back(core, d, WR_VERDICT_PUBLISH);
      return;
    }
    hand_back(core, d, WR_VERDICT_ACK);
    return;
  }
  if (t->why == WHY_TIMEOUT) {
    uint32_t n = redelivery_count(u, p->env.id);
    core->stats->mailbox_redelivered++;
    if (n >= core->cfg.mailbox_max_redeliveries) {
      redelivery_forget(u, p->env.id);
      d->pubs = calloc(1, sizeof(*d->pubs));
      if (d->pubs != NULL) {
        d->n_pubs = 1;
        if (fill_unacked_pub(p, d, u->id, &d->pubs[0]) == 0) {
          count_pub(core, &d->pubs[0]);
          wr_info("core", "mailbox item %s of user %s went unacked %u times: parked", p->env.id,
                  u->id, n);
          hand_back(core, d, WR_VERDICT_PUBLISH);
          return;
        }
        wr_amqp_delivery_drop_pubs(d);
      }
    }
  }
  core->stats->mailbox_requeued++;
  hand_back(core, d, WR_VERDICT_REQUEUE);
}

/* Start or stop consuming u's mailbox, when mailboxes are on. */
static void mbox_command(wr_core_t *core, wr_user_t *u, bool open) {
  if (!core->cfg.mailbox_enabled || u->mbox_open == open)
    return;
  u->mbox_open = open;
  if (core->sink.mailbox_cb != NULL)
    core->sink.mailbox_cb(u->id, open, core->sink.data);
}

/* Cluster mode: this node's binding for u (core_int.h, node_cb). */
static void node_command(wr_core_t *core, const char *user, wr_amqp_cmd_kind_t op) {
  if (core->cfg.cluster && core->sink.node_cb != NULL)
    core->sink.node_cb(user, op, core->sink.data);
}

static void mbox_unpause(wr_core_t *core, wr_user_t *u) {
  (void)core;
  if (!u->mbox_paused)
    return;
  u->mbox_paused = false;
  wr_list_remove(&u->paused_node);
}

/* A mailbox item of u went unsent or unacked while u is online: stop
 * consuming u's mailbox for a while, so the broker does not hand the same
 * items straight back (it would spin). The pause doubles each time, and ends
 * early when u acks something. The close goes before the item's requeue. */
static void mbox_pause(wr_core_t *core, wr_user_t *u) {
  if (!core->cfg.mailbox_enabled || u->n_conns == 0 || u->mbox_paused)
    return;
  if (u->mbox_backoff_ms < WR_CORE_MBOX_PAUSE_MIN_MS)
    u->mbox_backoff_ms = WR_CORE_MBOX_PAUSE_MIN_MS;
  mbox_command(core, u, false);
  u->mbox_paused = true;
  u->mbox_resume_ms = core->now_ms + u->mbox_backoff_ms;
  wr_list_push_back(&core->paused, &u->paused_node);
  core->stats->mailbox_pauses++;
  u->mbox_backoff_ms = u->mbox_backoff_ms >= WR_CORE_MBOX_PAUSE_MAX_MS / 2
                           ? WR_CORE_MBOX_PAUSE_MAX_MS
                           : u->mbox_backoff_ms * 2;
}

/* Every target is settled: the verdict goes back with one copy per offline
 * target. */
static void finish(wr_core_t *core, wr_pending_t *p) {
  wr_amqp_delivery_t *d = p->d;
  size_t n_off = 0, i, k = 0;

  p->d = NULL;
  if (p->source == WR_SRC_MAILBOX) {
    finish_mailbox(core, p, d);
    return;
  }
  for (i = 0; i < p->n_targets; i++)
    if (p->targets[i].state == T_OFFLINE)
      n_off++;
  if (n_off > 0 && p->fan) {
    /* A fan copy: the node that sent it delivered it to the user; it is
     * for devices here, never kept for later. */
    core->stats->fan_undelivered++;
    n_off = 0;
  }
  if (n_off == 0) {
    core->stats->verdicts_acked++;
    hand_back(core, d, WR_VERDICT_ACK);
    return;
  }
  d->pubs = calloc(n_off, sizeof(*d->pubs));
  if (d->pubs == NULL)
    goto oom;
  d->n_pubs = n_off;
  for (i = 0; i < p->n_targets; i++) {
    if (p->targets[i].state != T_OFFLINE)
      continue;
    /* The target's reference keeps its user record, and so this id, alive. */
    if (fill_offline_pub(core, &p->env, d, p->targets[i].user->id, &d->pubs[k++]) != 0)
      goto oom;
  }
  for (i = 0; i < n_off; i++)
    count_pub(core, &d->pubs[i]);
  wr_debug("core", "delivery %s (tag %llu): %zu target(s), %zu offline", p->env.id,
           (unsigned long long)d->tag, p->n_targets, n_off);
  hand_back(core, d, WR_VERDICT_PUBLISH);
  return;
oom:
  /* Nothing was published: the broker redelivers the whole message. */
  wr_amqp_delivery_drop_pubs(d);
  core->stats->requeued++;
  wr_warn("core", "out of memory building the copies of delivery %llu; requeueing it",
          (unsigned long long)d->tag);
  hand_back(core, d, WR_VERDICT_REQUEUE);
}

/* Releases what p holds (users, buffers, envelope) once its verdict is gone. */
static void retire(wr_core_t *core, wr_pending_t *p) {
  size_t i;
  assert(p->d == NULL && !p->resolved);
  p->resolved = true;
  wr_list_remove(&p->node);
  core->n_pendings--;
  for (i = 0; i < p->n_targets; i++) {
    target_t *t = &p->targets[i];
    if (t->state == T_WAITING) {
      wr_list_remove(&t->wait_node);
      t->user->n_waiting--;
    }
    wr_index_unref(&core->index, t->user);
    t->user = NULL;
  }
  for (i = 0; i < WR_WS_NFORMATS; i++) {
    wr_ws_buf_unref(p->bufs[i]);
    p->bufs[i] = NULL;
  }
  wr_envelope_close(&p->env);
  pending_unref(p);
}

static void settle(wr_core_t *core, target_t *t, target_state_t st, why_t why) {
  wr_pending_t *p = t->p;
  if (p->resolved || t->state != T_WAITING)
    return;
  t->state = st;
  t->why = st == T_OFFLINE ? why : WHY_NONE;
  wr_list_remove(&t->wait_node);
  t->user->n_waiting--;
  if (st == T_DELIVERED) {
    core->stats->targets_delivered++;
    observe_latency(core, p->origin_ms);
  } else {
    core->stats->targets_offline++;
    /* Before the verdict: the close must reach the AMQP thread before the
     * requeue. */
    if (p->source == WR_SRC_MAILBOX && why != WHY_GONE)
      mbox_pause(core, t->user);
  }
  if (--p->n_open == 0) {
    finish(core, p);
    retire(core, p);
  }
}

/* Pacing: a connection with more than half of its output cap unwritten,
 * whose client spoke (acked, pinged) in the last few seconds, is busy rather
 * than gone: it gets nothing more for now. The notification keeps waiting for
 * the user's ack (client mode) or goes offline (write mode), so a returning
 * client with a big backlog is paced instead of being cut with 4008 over and
 * over. A silent client is sent to as usual and meets the cap: it has
 * stopped reading. */
static bool busy(wr_core_t *core, wr_core_conn_t *c, size_t len) {
  size_t queued = 0;
  uint64_t idle = UINT64_MAX;
  core->sink.load_cb(c->io, &queued, &idle, core->sink.data);
  return queued > 0 && queued + len > core->cfg.max_queued_bytes / 2 &&
         idle < WR_CORE_BUSY_CLIENT_MS;
}

/* Queues p's frame on one connection. In write mode the frame carries the
 * target as context, so its completion settles it. Returns 0 when queued. */
static int send_one(wr_core_t *core, wr_pending_t *p, target_t *t, wr_core_conn_t *c) {
  wr_ws_buf_t *buf = encoded(p, c->format);
  bool write_mode = core->cfg.ack_mode == WR_ACK_WRITE;
  void *ctx = (t != NULL && write_mode) ? t : NULL;
  int rc;

  if (buf == NULL)
    return -ENOMEM;
  if (busy(core, c, buf->len)) {
    core->stats->deferred++;
    return -EAGAIN;
  }
  /* Counted before the call: a completion reported from inside it is
   * deferred, but must never find the count lower than what it settles. */
  if (ctx != NULL) {
    t->writes_pending++;
    p->refs++;
  }
  rc = core->sink.send_cb(c->io, buf, ctx, !write_mode, core->sink.data);
  if (rc != 0) {
    if (ctx != NULL) {
      t->writes_pending--;
      pending_unref(p);
    }
    return rc;
  }
  core->stats->delivered++;
  /* Replay latency: from the user's first connection to the first item of
   * the backlog that waited in their mailbox, once per online session (a
   * pause's end, or a mailbox that was empty, are not replays). */
  if (p->backlog && t != NULL && !t->user->mbox_first_sent) {
    t->user->mbox_first_sent = true;
    wr_hist_observe(&core->stats->mailbox_replay, (double)(core->now_ms - t->user->mbox_opened_ms));
  }
  return 0;
}

/* Returns how many connections of t's user the frame was queued on. */
static size_t send_to_user(wr_core_t *core, wr_pending_t *p, target_t *t) {
  wr_list_t *it;
  size_t sent = 0;
  /* A send never removes a connection from the list (a failed one is closed
   * later, by an event of its own), and completions are deferred. */
  for (it = t->user->conns.next; it != &t->user->conns; it = it->next)
    if (send_one(core, p, t, wr_container_of(it, wr_core_conn_t, user_node)) == 0)
      sent++;
  return sent;
}

static void dead(wr_core_t *core, wr_amqp_delivery_t *d, wr_env_result_t r) {
  wr_bridge_stats_t *st = core->stats;
  st->rejected++;
  st->dead_by_reason[(size_t)r < sizeof(st->dead_by_reason) / sizeof(st->dead_by_reason[0]) ? r
                                                                                            : 0]++;
  d->dead_reason = wr_env_result_str(r);
  wr_warn("core", "rejecting message %s (tag %llu, %zu bytes): %s; dead-lettered",
          d->message_id ? d->message_id : "(no message_id)", (unsigned long long)d->tag,
          d->body_len, d->dead_reason);
  hand_back(core, d, WR_VERDICT_DEAD);
}

static void broadcast(wr_core_t *core, wr_pending_t *p, uint64_t consumed_ns) {
  wr_bridge_stats_t *st = core->stats;
  wr_list_t *it;
  uint64_t sent = 0;
  st->broadcasts++;
  for (it = core->index.all_conns.next; it != &core->index.all_conns; it = it->next)
    if (send_one(core, p, NULL, wr_container_of(it, wr_core_conn_t, all_node)) == 0)
      sent++;
  /* Fan-out time: the frame is now in every socket (or, for a socket that
   * could not take it all, queued behind its earlier frames). */
  if (consumed_ns == 0 || core->sink.now_ns_cb == NULL)
    return;
  uint64_t now = core->sink.now_ns_cb(core->sink.data);
  double ms = now > consumed_ns ? (double)(now - consumed_ns) / 1e6 : 0;
  wr_hist_observe(&st->fanout, ms);
  st->fanout_last_ms = ms;
  st->fanout_last_conns = sent;
}

/* Expired before delivery: one park copy of the whole message. */
static void park_expired(wr_core_t *core, wr_amqp_delivery_t *d, const wr_envelope_t *env,
                         const char *user) {
  d->pubs = calloc(1, sizeof(*d->pubs));
  if (d->pubs != NULL) {
    d->pubs[0].kind = WR_PUB_PARK;
    d->pubs[0].reason = "expired";
    d->pubs[0].attempt = d->attempt;
    d->pubs[0].id = strdup(env->id);
    d->pubs[0].user = user != NULL ? strdup(user) : NULL;
    d->pubs[0].expires_at_ms = env->expires_at_ms;
    d->n_pubs = 1;
    if (d->pubs[0].id != NULL && (user == NULL || d->pubs[0].user != NULL)) {
      core->stats->parked_expired++;
      hand_back(core, d, WR_VERDICT_PUBLISH);
      return;
    }
    wr_amqp_delivery_drop_pubs(d);
  }
  core->stats->requeued++;
  hand_back(core, d, WR_VERDICT_REQUEUE);
}

static bool names(const wr_envelope_t *env, const char *user) {
  if (user == NULL)
    return false;
  for (size_t i = 0; i < env->n_users; i++)
    if (strcmp(env->users[i], user) == 0)
      return true;
  return false;
}

/* The user a ladder copy is for: its x-warren-user header, honoured only when
 * the body names that user (a copy warren made always does). */
static const char *copy_target(wr_core_t *core, const wr_amqp_delivery_t *d,
                               const wr_envelope_t *env) {
  if (d->target_user == NULL)
    return NULL;
  if (names(env, d->target_user))
    return d->target_user;
  core->stats->copy_user_ignored++;
  wr_warn("core",
          "message %s names x-warren-user %s, which its body does not target; "
          "delivering it to the body's targets",
          env->id, d->target_user);
  return NULL;
}

/* Cluster mode (docs/cluster.md): a message from Q or Q.mailbox.new is
 * routed rather than delivered here: one copy per target
 * user to Q.route, which the nodes where that user is connected are bound to
 * (with none, its alternate exchange puts the copy in the user's mailbox), or
 * a broadcast once to Q.broadcast; the message is acked once they are
 * confirmed. A route copy the broker refuses falls back to the ladder copy
 * the user would have had (single mode's offline copy). */
static void route(wr_core_t *core, wr_amqp_delivery_t *d, const wr_envelope_t *env,
                  const char *only) {
  size_t n = env->broadcast || only != NULL ? 1 : env->n_users;
  d->pubs = calloc(n, sizeof(*d->pubs));
  if (d->pubs == NULL)
    goto oom;
  d->n_pubs = n;
  if (env->broadcast) {
    wr_amqp_pub_t *pub = &d->pubs[0];
    pub->kind = WR_PUB_BROADCAST;
    pub->attempt = d->attempt;
    pub->expires_at_ms = env->expires_at_ms;
    if ((pub->id = strdup(env->id)) == NULL)
      goto oom;
  } else {
    /* Not expired (handle parked it): fill_offline_pub makes a mailbox copy
     * with its ladder fallback, which becomes the route copy's. */
    for (size_t i = 0; i < n; i++) {
      if (fill_offline_pub(core, env, d, only != NULL ? only : env->users[i], &d->pubs[i]) != 0)
        goto oom;
      assert(d->pubs[i].kind == WR_PUB_MAILBOX);
      d->pubs[i].kind = WR_PUB_ROUTE;
    }
  }
  for (size_t i = 0; i < n; i++)
    count_pub(core, &d->pubs[i]);
  hand_back(core, d, WR_VERDICT_PUBLISH);
  return;
oom:
  wr_amqp_delivery_drop_pubs(d);
  core->stats->requeued++;
  wr_warn("core", "out of memory routing delivery %llu; requeueing it", (unsigned long long)d->tag);
  hand_back(core, d, WR_VERDICT_REQUEUE);
}

static void handle(wr_core_t *core, wr_amqp_delivery_t *d) {
  wr_envelope_t env;
  wr_env_result_t r;
  /* ttl_ms counts from the publish time, else from now. */
  int64_t base_ms = amqp_timestamp_ms(d) != 0 ? amqp_timestamp_ms(d) : d->consumed_at_ms;
  size_t n, i;
  wr_pending_t *p;
  const char *only;

  if (core->closing) {
    core->stats->requeued++;
    hand_back(core, d, WR_VERDICT_REQUEUE);
    return;
  }
  if (d->generation <= core->lost_generation) {
    /* Its channel is gone and the broker redelivers it. */
    core->stats->discarded_stale++;
    hand_back(core, d, WR_VERDICT_REQUEUE);
    return;
  }
  r = wr_envelope_decode(&env, d->body, d->body_len, d->content_type, d->message_id,
                         core->cfg.max_body_bytes, base_ms);
  if (r != WR_ENV_OK) {
    dead(core, d, r);
    return;
  }
  core->stats->consumed[env.format == WR_ENV_MSGPACK ? 1 : 0]++;
  if (d->expires_at_ms != 0)
    env.expires_at_ms = d->expires_at_ms;
  if (d->source == WR_SRC_NODE && env.broadcast) {
    /* A broadcast through Q.broadcast: to everyone connected here. */
    only = NULL;
  } else if (d->source != WR_SRC_QUEUE) {
    /* A mailbox item, a copy for a user who had no mailbox, or a copy routed
     * to this node: for its one user, who must be one the body names. */
    only = env.broadcast || !names(&env, d->target_user) ? NULL : d->target_user;
    if (only == NULL) {
      wr_envelope_close(&env);
      core->stats->mailbox_rejected++;
      wr_warn("core", "a %s item for user %s does not name that user; dead-lettering it",
              d->source == WR_SRC_MAILBOX ? "mailbox"
              : d->source == WR_SRC_NODE  ? "node-queue"
                                          : "new-mailbox",
              d->target_user ? d->target_user : "?");
      d->dead_reason = "not_addressed";
      hand_back(core, d, WR_VERDICT_DEAD);
      return;
    }
  } else {
    only = env.broadcast ? NULL : copy_target(core, d, &env);
  }
  if (env.expires_at_ms != 0 && core->wall_ms >= env.expires_at_ms) {
    park_expired(core, d, &env, only);
    wr_envelope_close(&env);
    return;
  }
  if (core->cfg.cluster && (d->source == WR_SRC_QUEUE || d->source == WR_SRC_MAILBOX_NEW)) {
    route(core, d, &env, only);
    wr_envelope_close(&env);
    return;
  }
  n = env.broadcast ? 0 : only != NULL ? 1 : env.n_users;

  p = calloc(1, sizeof(*p) + n * sizeof(target_t));
  if (p == NULL)
    goto oom;
  for (i = 0; i < n; i++) {
    target_t *t = &p->targets[i];
    t->p = p;
    wr_list_init(&t->wait_node);
    wr_list_init(&t->defer_node);
    t->user = wr_index_ref(&core->index, only != NULL ? only : env.users[i]);
    if (t->user == NULL) {
      while (i-- > 0)
        wr_index_unref(&core->index, p->targets[i].user);
      free(p);
      goto oom;
    }
  }
  p->d = d;
  p->env = env;
  p->refs = 1;
  p->n_targets = n;
  p->n_open = n;
  p->origin_ms = latency_origin_ms(&p->env, d);
  p->arrived_ms = core->now_ms;
  p->source = d->source;
  p->fan = d->fan && d->source == WR_SRC_NODE;
  p->backlog = d->backlog && d->source == WR_SRC_MAILBOX;
  wr_list_push_back(&core->pendings, &p->node);
  core->n_pendings++;

  if (n == 0) {
    /* Broadcast: everyone online now, then ack; never retried. */
    broadcast(core, p, d->consumed_ns);
    p->d = NULL;
    core->stats->verdicts_acked++;
    hand_back(core, d, WR_VERDICT_ACK);
    retire(core, p);
    return;
  }
  for (i = 0; i < n; i++) {
    target_t *t = &p->targets[i];
    wr_list_push_back(&t->user->waiting, &t->wait_node);
    t->user->n_waiting++;
  }
  /* Hold p while its targets settle one by one: the last one retires it. */
  p->refs++;
  for (i = 0; i < n && !p->resolved; i++) {
    target_t *t = &p->targets[i];
    /* No connection, or nothing queued on any of them (every one busy or
     * closing): the ladder brings it back soon, rather than waiting for the
     * ack timeout. */
    if (t->user->n_conns == 0) {
      if (p->source == WR_SRC_NODE) {
        /* Routed here for a user who has no connection here (they moved,
         * or a binding outlived a crash): a wasted copy. The binding goes
         * before the verdict mails it, or the mailbox's consumer on the
         * user's node could route it back here. */
        core->stats->node_stale++;
        node_command(core, t->user->id, WR_CMD_NODE_STALE);
      }
      settle(core, t, T_OFFLINE, WHY_GONE);
    }
    else if (send_to_user(core, p, t) == 0)
      settle(core, t, T_OFFLINE, WHY_UNSENT);
  }
  pending_unref(p);
  return;
oom:
  wr_envelope_close(&env);
  core->stats->requeued++;
  wr_warn("core", "out of memory for delivery %llu; requeueing it", (unsigned long long)d->tag);
  hand_back(core, d, WR_VERDICT_REQUEUE);
}

void wr_core_delivery(wr_core_t *core, wr_amqp_delivery_t *d) {
  enter(core);
  handle(core, d);
  leave(core);
}

wr_core_conn_t *wr_core_conn_open(wr_core_t *core, void *io, const char *user,
                                  wr_ws_format_t format) {
  wr_core_conn_t *c = calloc(1, sizeof(*c));
  wr_user_t *u;
  wr_list_t *it;

  if (c == NULL)
    return NULL;
  u = wr_index_ref(&core->index, user);
  if (u == NULL) {
    free(c);
    return NULL;
  }
  c->io = io;
  c->format = format;
  wr_index_add_conn(&core->index, u, c);
  /* The connection's own reference is enough from here on. */
  wr_index_unref(&core->index, u);
  /* The user's first connection: what waits in their mailbox starts
   * flowing (unless a pause runs: the tick or their next ack ends it). */
  if (u->n_conns == 1) {
    /* Cluster mode: bound before the mailbox opens, so what it routes
     * reaches this node. */
    node_command(core, u->id, WR_CMD_NODE_JOIN);
    u->mbox_opened_ms = core->now_ms;
    u->mbox_first_sent = false;
    if (!u->mbox_paused)
      mbox_command(core, u, true);
  }
  /* Every open connection of a user has been offered every notification
   * still waiting for that user's ack, so "all connections closed" means
   * offline. A new tab therefore gets what is still unacknowledged. */
  if (core->cfg.ack_mode != WR_ACK_CLIENT)
    return c;
  enter(core);
  for (it = u->waiting.next; it != &u->waiting; it = it->next) {
    target_t *t = wr_container_of(it, target_t, wait_node);
    send_one(core, t->p, t, c);
  }
  leave(core);
  return c;
}

void wr_core_conn_close(wr_core_t *core, wr_core_conn_t *c) {
  wr_user_t *u = c->user;
  enter(core);
  wr_index_remove_conn(&core->index, c);
  /* The connection's reference keeps u alive while its targets settle. */
  if (u->n_conns == 0) {
    /* The mailbox consumer stops before the user's mailbox items are
     * requeued, or the broker would hand them straight back. */
    mbox_command(core, u, false);
    node_command(core, u->id, WR_CMD_NODE_LEAVE);
    mbox_unpause(core, u);
    u->mbox_backoff_ms = 0;
    /* Ack timeouts of mailbox items count per online session. */
    for (size_t i = 0; i < u->n_redeliveries; i++)
      free(u->redeliveries[i].id);
    u->n_redeliveries = 0;
  }
  if (u->n_conns == 0 && core->cfg.ack_mode == WR_ACK_CLIENT) {
    while (!wr_list_empty(&u->waiting))
      settle(core, wr_container_of(u->waiting.next, target_t, wait_node), T_OFFLINE, WHY_GONE);
  }
  wr_index_unref(&core->index, u);
  free(c);
  leave(core);
}

void wr_core_client_ack(wr_core_t *core, wr_core_conn_t *c, const char *id) {
  wr_list_t *it, *next;
  bool found = false;
  wr_user_t *u = c->user;

  enter(core);
  /* The same id can wait more than once (a duplicate publish): settle all.
   * Settling t removes only t from this list (a delivery has one target per
   * user), and c's reference keeps u alive, so next stays valid. */
  for (it = u->waiting.next; it != &u->waiting; it = next) {
    target_t *t = wr_container_of(it, target_t, wait_node);
    next = it->next;
    if (strcmp(t->p->env.id, id) == 0) {
      found = true;
      settle(core, t, T_DELIVERED, WHY_NONE);
    }
  }
  if (found) {
    core->stats->client_acks++;
    /* The client is alive and acking: a paused mailbox flows again. */
    u->mbox_backoff_ms = 0;
    if (u->mbox_paused) {
      mbox_unpause(core, u);
      mbox_command(core, u, true);
    }
  } else {
    core->stats->client_acks_unknown++;
  }
  leave(core);
}

void wr_core_write_done(wr_core_t *core, void *ctx, int status) {
  target_t *t = ctx;
  core->stats->written += status == 0;
  if (wr_list_empty(&t->defer_node))
    wr_list_push_back(&core->deferred, &t->defer_node);
  if (status == 0)
    t->deferred_ok++;
  else
    t->deferred_failed++;
  /* From the driver's own loop: apply now. From inside a sink call: when the
   * event that made it is done. */
  if (core->depth == 0) {
    enter(core);
    leave(core);
  }
}

void wr_core_clock(wr_core_t *core, uint64_t now_ms, int64_t wall_ms) {
  core->now_ms = now_ms;
  core->wall_ms = wall_ms;
}

void wr_core_tick(wr_core_t *core, uint64_t now_ms, int64_t wall_ms) {
  wr_core_clock(core, now_ms, wall_ms);
  enter(core);
  /* Paused mailboxes whose pause is over flow again (oldest pause first). */
  for (wr_list_t *it = core->paused.next, *next; it != &core->paused; it = next) {
    wr_user_t *u = wr_container_of(it, wr_user_t, paused_node);
    next = it->next;
    if (u->mbox_resume_ms > now_ms)
      continue;
    mbox_unpause(core, u);
    mbox_command(core, u, true);
  }
  if (core->cfg.ack_mode != WR_ACK_CLIENT) {
    leave(core);
    return;
  }
  /* Deadlines are arrival + one timeout, so they grow with arrival order:
   * stop at the first one not due. */
  while (!wr_list_empty(&core->pendings)) {
    wr_pending_t *p = wr_container_of(core->pendings.next, wr_pending_t, node);
    if (p->arrived_ms + core->cfg.ack_timeout_ms > now_ms)
      break;
    p->refs++;
    for (size_t i = 0; i < p->n_targets && !p->resolved; i++) {
      if (p->targets[i].state == T_WAITING) {
        core->stats->ack_timeouts++;
        settle(core, &p->targets[i], T_OFFLINE, WHY_TIMEOUT);
      }
    }
    /* Every waiting target was just settled, so p is retired. */
    assert(p->resolved);
    pending_unref(p);
  }
  leave(core);
}

void wr_core_reload(wr_core_t *core, const wr_core_config_t *cfg) {
  wr_ack_mode_t mode = core->cfg.ack_mode;
  bool mailboxes = core->cfg.mailbox_enabled, cluster = core->cfg.cluster;
  core->cfg = *cfg;
  core->cfg.ack_mode = mode;
  core->cfg.mailbox_enabled = mailboxes;
  core->cfg.cluster = cluster;
}

static void give_back(wr_core_t *core, wr_pending_t *p, bool stale) {
  wr_amqp_delivery_t *d = p->d;
  p->d = NULL;
  if (stale)
    core->stats->discarded_stale++;
  else
    core->stats->requeued++;
  hand_back(core, d, WR_VERDICT_REQUEUE);
  retire(core, p);
}

void wr_core_generation_lost(wr_core_t *core, uint64_t gen) {
  wr_list_t *it, *next;
  if (gen <= core->lost_generation)
    return;
  core->lost_generation = gen;
  enter(core);
  for (it = core->pendings.next; it != &core->pendings; it = next) {
    wr_pending_t *p = wr_container_of(it, wr_pending_t, node);
    next = it->next;
    if (p->d->generation <= gen)
      give_back(core, p, true);
  }
  leave(core);
}

void wr_core_requeue_all(wr_core_t *core) {
  core->closing = true;
  enter(core);
  while (!wr_list_empty(&core->pendings))
    give_back(core, wr_container_of(core->pendings.next, wr_pending_t, node), false);
  leave(core);
}

int wr_core_init(wr_core_t *core, const wr_core_config_t *cfg, const wr_core_sink_t *sink,
                 wr_bridge_stats_t *stats) {
  memset(core, 0, sizeof(*core));
  core->cfg = *cfg;
  core->sink = *sink;
  core->stats = stats;
  wr_list_init(&core->pendings);
  wr_list_init(&core->deferred);
  wr_list_init(&core->paused);
  return wr_index_init(&core->index);
}

void wr_core_close(wr_core_t *core) {
  assert(core->n_pendings == 0 && wr_list_empty(&core->deferred));
  wr_index_close(&core->index);
}
