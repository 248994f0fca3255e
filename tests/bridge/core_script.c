/* The event-script runner of core_script.h.
 *
 * Three parts:
 *   - the world: what each delivery is (who it names, its id, generation…),
 *     decided by the script and shared by both sides;
 *   - the core side: the real delivery core with a fake sink that plays the
 *     connection layer (sends succeed, fail, or fail synchronously; write
 *     completions come when the script says) and records what the core did;
 *   - the model: the delivery semantics of docs/architecture.md ("The delivery
 *     core") written as plainly as possible over arrays, with its own copy of
 *     the connection layer's state.
 * After every event the frames and verdicts of both sides are compared, and
 * the invariants are checked on what the core did. */
#include "core_script.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/core_int.h"

#define MAX_USERS 8
#define MAX_CONNS 40
#define MAX_DELIVS 3000
#define WALL0 1800000000000LL /* fake unix ms at the start (2027) */

enum { ST_WAITING = 0, ST_DELIVERED, ST_OFFLINE };
enum { FAIL_NONE = 0, FAIL_NOBUFS, FAIL_SYNC };
enum { K_RETRY = 0, K_PARK = 1, K_MAILBOX = 2, K_ROUTE = 3, K_BROADCAST = 4 };
/* Commands to the AMQP side, per user: a mailbox consumer closes or opens;
 * in cluster mode the node queue's binding is made (join), dropped after
 * the grace (leave) or at once (stale). */
enum { C_CLOSE = 0, C_OPEN, C_JOIN, C_LEAVE, C_STALE };
enum { R_NONE = 0, R_EXPIRED, R_MAX, R_UNACKED };
/* Why a target went offline (a mailbox item's verdict depends on it). */
enum { WHY_NONE = 0, WHY_GONE, WHY_UNSENT, WHY_TIMEOUT, WHY_WRITE_FAILED };

/* ---- the world -------------------------------------------------------- */

typedef struct {
  uint64_t gen;
  int idnum;            /* the notification id is "n<idnum>" (duplicates share one) */
  unsigned names;       /* users the body names (bit per user) */
  int order[MAX_USERS]; /* the body's user_ids, in body order */
  int n_names;
  bool broadcast;
  bool bad;              /* undecodable body */
  int copy_user;         /* x-warren-user header, -1 none */
  uint32_t attempt;      /* x-warren-attempt */
  int64_t expires_at_ms; /* what the envelope will compute (0 none) */
  int64_t timestamp_s;   /* AMQP timestamp property */
  int source;            /* WR_SRC_*: Q, a mailbox, Q.mailbox.new, the node queue */
  int owner;             /* a mailbox or node-queue source's user (else -1) */
  bool fan;              /* a node-queue copy that is another node's fan copy */
} wdeliv_t;

typedef struct {
  int di;
  int kind; /* wr_verdict_kind_t */
  int n;
  struct {
    int user; /* -1: the copy names nobody */
    int kind, reason;
    uint32_t delay, attempt;
    int fb_kind, fb_reason; /* a mailbox or route copy's ladder fallback */
    uint32_t fb_delay, fb_attempt;
    bool fan; /* a route copy that is a fan copy */
  } c[MAX_USERS];
} verdict_t;

typedef struct {
  int user;
  int op; /* C_* */
} cmd_t;

typedef struct {
  int conn, di;
} send_t;

typedef struct {
  void *ctx;
  int di, ti;
} wwrite_t;

/* ---- the core side: fake connections ------------------------------------ */

typedef struct {
  int user;
  bool open, closing;
  int fail;
  bool stalled, talkative;
  wr_ws_format_t fmt;
  wr_core_conn_t *cc;
  wwrite_t *writes; /* outstanding write completions (write mode), oldest first */
  size_t n_writes, cap_writes;
  int *recv; /* deliveries received, for acks */
  size_t n_recv, cap_recv;
} fconn_t;

/* ---- the model ---------------------------------------------------------- */

typedef struct {
  int user;
  int state;
  int why;
  int writes_pending, writes_ok;
} mtarget_t;

typedef struct {
  bool live; /* handed in and unresolved */
  int n;
  mtarget_t t[MAX_USERS];
  uint64_t arrived;
} mdeliv_t;

typedef struct {
  bool open, closing;
  int fail;
  wwrite_t *writes; /* di, ti of outstanding writes */
  size_t n_writes, cap_writes;
} mconn_t;

/* A user's mailbox consumer, as the model sees it. */
typedef struct {
  bool open, paused;
  uint64_t resume;
  uint32_t backoff;
  int count_id[64]; /* ack timeouts of mailbox items, by id number, this session */
  uint32_t count[64];
  int n_counts;
} muser_t;

typedef struct run_s {
  const uint8_t *buf;
  size_t len, pos;
  bool trace;
  cs_result_t *res;
  bool failed;

  /* settings */
  wr_core_config_t cfg;
  int n_users;

  /* time */
  uint64_t now;
  int64_t wall;

  /* world */
  wdeliv_t *w;
  int nd;
  uint64_t gen, lost_gen;
  int *n_verdicts_seen;
  int max_d; /* deliveries, and frames or verdicts in one event, at most */

  /* core side */
  wr_core_t core;
  wr_bridge_stats_t stats;
  fconn_t fc[MAX_CONNS];
  int nc;               /* slots used so far (a closed slot is reused) */
  int order[MAX_CONNS]; /* open connections, in the order they opened */
  int n_order;
  send_t *csend;
  int n_csend;
  verdict_t *cverd;
  int n_cverd;
  cmd_t ccmd[8 * MAX_USERS];
  int n_ccmd;
  bool fake_open[MAX_USERS]; /* the AMQP side's view: consumer running */
  bool fake_joined[MAX_USERS]; /* cluster mode: the user's binding wanted */
  bool fake_closing;         /* shutdown was sent */
  int *requeued;             /* mailbox items requeued: the broker delivers them again */
  int n_requeued;

  /* model */
  mdeliv_t *md;
  mconn_t mc[MAX_CONNS];
  bool m_closing;
  uint64_t m_lost_gen;
  uint32_t m_timeout, m_max_attempts;
  send_t *msend;
  int n_msend;
  verdict_t *mverd;
  int n_mverd;
  wwrite_t *mdeferred; /* completions reported synchronously, applied after the event */
  int n_mdeferred;
  size_t cap_mdeferred;
  muser_t mu[MAX_USERS];
  cmd_t mcmd[8 * MAX_USERS];
  int n_mcmd;
} run_t;

static void fail(run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(run_t *r, const char *fmt, ...) {
  va_list ap;
  if (r->failed)
    return;
  r->failed = true;
  va_start(ap, fmt);
  vsnprintf(r->res->err, sizeof(r->res->err), fmt, ap);
  va_end(ap);
}

static unsigned next(run_t *r) {
  return r->pos < r->len ? r->buf[r->pos++] : 0;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return p;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need)
    n *= 2;
  void *q = realloc(p, n * elem);
  if (q == NULL)
    abort();
  *cap = n;
  return q;
}

static void user_name(int u, char *buf) {
  snprintf(buf, 8, "u%d", u & 7);
}

static int user_index(const char *s) {
  return s != NULL && s[0] == 'u' ? atoi(s + 1) : -1;
}

/* ---- core side: the sink ------------------------------------------------ */

/* Which delivery a frame carries: its "n" field. */
static int frame_di(run_t *r, const wr_ws_buf_t *frame, wr_ws_format_t fmt) {
  json_t *j;
  int di = -1;
  if (fmt == WR_WS_FORMAT_MSGPACK)
    j = wr_msgpack_to_json(frame->data, frame->len);
  else
    j = json_loadb((const char *)frame->data, frame->len, 0, NULL);
  if (j != NULL && json_is_integer(json_object_get(j, "n")))
    di = (int)json_integer_value(json_object_get(j, "n"));
  json_decref(j);
  if (di < 0 || di >= r->nd)
    fail(r, "a frame that carries no delivery of this script (%.*s)", (int)frame->len,
         (const char *)frame->data);
  return di;
}

static int send_cb(void *io, wr_ws_buf_t *frame, void *ctx, bool ack_expected, void *data) {
  run_t *r = data;
  fconn_t *c = io;
  int ci = (int)(c - r->fc);
  int di = frame_di(r, frame, c->fmt);
  (void)ack_expected;

  if (!c->open)
    fail(r, "the core sent on connection %d, which it was told is closed", ci);
  if (c->closing)
    return -ENOTCONN;
  if (c->fail == FAIL_NOBUFS) {
    c->fail = FAIL_NONE;
    c->closing = true;
    return -ENOBUFS;
  }
  if (di < 0 || r->n_csend >= r->max_d)
    return -EIO;
  r->csend[r->n_csend++] = (send_t){ci, di};
  r->res->frames++;
  if (c->n_recv < 4096) {
    c->recv = grow(c->recv, &c->cap_recv, c->n_recv + 1, sizeof(int));
    c->recv[c->n_recv++] = di;
  }
  if (c->fail == FAIL_SYNC) {
    /* uv_write failing inside the send: the completion comes back at once,
     * from inside the core's own call. */
    c->fail = FAIL_NONE;
    c->closing = true;
    if (ctx != NULL)
      wr_core_write_done(&r->core, ctx, -ECANCELED);
    return 0;
  }
  if (ctx != NULL) {
    c->writes = grow(c->writes, &c->cap_writes, c->n_writes + 1, sizeof(wwrite_t));
    c->writes[c->n_writes++] = (wwrite_t){ctx, di, -1};
  }
  return 0;
}

static void load_cb(void *io, size_t *queued, uint64_t *idle, void *data) {
  fconn_t *c = io;
  (void)data;
  *queued = c->stalled ? (size_t)1 << 40 : 0;
  *idle = c->talkative ? 0 : 60000;
}

static int reason_of(const char *s) {
  return s == NULL                        ? R_NONE
         : strcmp(s, "expired") == 0      ? R_EXPIRED
         : strcmp(s, "max_attempts") == 0 ? R_MAX
         : strcmp(s, "unacked") == 0      ? R_UNACKED
                                          : -1;
}

static void mailbox_cb(const char *user, bool open, void *data) {
  run_t *r = data;
  int u = user_index(user);
  if (u < 0 || u >= r->n_users) {
    fail(r, "a mailbox command for unknown user %s", user);
    return;
  }
  if (r->fake_open[u] == open)
    fail(r, "mailbox of user %d: %s twice in a row", u, open ? "open" : "close");
  /* Cluster mode: a mailbox is consumed only while its user is bound here,
   * or what it routes would miss this node. */
  if (open && r->cfg.cluster && !r->fake_joined[u])
    fail(r, "mailbox of user %d opened before the user joined this node", u);
  r->fake_open[u] = open;
  if (r->n_ccmd < (int)(sizeof(r->ccmd) / sizeof(r->ccmd[0])))
    r->ccmd[r->n_ccmd++] = (cmd_t){u, open ? C_OPEN : C_CLOSE};
}

static void node_cb(const char *user, wr_amqp_cmd_kind_t op, void *data) {
  run_t *r = data;
  int u = user_index(user);
  if (u < 0 || u >= r->n_users || !r->cfg.cluster) {
    fail(r, "a node command for user %s (cluster mode %d)", user, r->cfg.cluster);
    return;
  }
  int c = op == WR_CMD_NODE_JOIN ? C_JOIN : op == WR_CMD_NODE_LEAVE ? C_LEAVE : C_STALE;
  if ((c == C_JOIN) == r->fake_joined[u] && c != C_STALE)
    fail(r, "user %d: %s while %sjoined", u, c == C_JOIN ? "join" : "leave",
         r->fake_joined[u] ? "" : "not ");
  if (c == C_STALE && r->fake_joined[u])
    fail(r, "user %d: stale binding dropped while the user is connected here", u);
  if (c == C_LEAVE && r->fake_open[u])
    fail(r, "user %d: left while their mailbox is still consumed", u);
  if (c != C_STALE)
    r->fake_joined[u] = c == C_JOIN;
  if (r->n_ccmd < (int)(sizeof(r->ccmd) / sizeof(r->ccmd[0])))
    r->ccmd[r->n_ccmd++] = (cmd_t){u, c};
}

static void verdict_cb(wr_amqp_delivery_t *d, void *data) {
  run_t *r = data;
  int di = (int)d->tag - 1;
  verdict_t v;

  memset(&v, 0, sizeof(v));
  v.di = di;
  v.kind = (int)d->verdict;
  if (di < 0 || di >= r->nd) {
    fail(r, "a verdict for tag %" PRIu64 ", which this script never delivered", d->tag);
    wr_amqp_delivery_free(d);
    return;
  }
  if (++r->n_verdicts_seen[di] > 1)
    fail(r, "delivery %d got a second verdict", di);
  if (d->verdict != WR_VERDICT_REQUEUE && r->w[di].gen <= r->lost_gen)
    fail(r, "delivery %d of lost generation %" PRIu64 " got verdict %d (only a requeue may follow)",
         di, r->w[di].gen, (int)d->verdict);
  if (d->verdict == WR_VERDICT_PUBLISH && d->n_pubs > MAX_USERS)
    fail(r, "delivery %d: %zu copies", di, d->n_pubs);
  /* Invariant: a mailbox item is never requeued while its user's mailbox
   * is being consumed (the broker would hand it straight back: a spin),
   * unless its connection is gone (stale) or warren is shutting down. */
  const wdeliv_t *w = &r->w[di];
  if (d->verdict == WR_VERDICT_REQUEUE && w->source == WR_SRC_MAILBOX && w->gen > r->lost_gen &&
      !r->fake_closing && w->owner >= 0 && r->fake_open[w->owner])
    fail(r, "mailbox item %d of user %d requeued while its mailbox is consumed", di, w->owner);
  for (size_t i = 0; i < d->n_pubs && i < MAX_USERS; i++) {
    const wr_amqp_pub_t *p = &d->pubs[i];
    v.c[i].user = user_index(p->user);
    v.c[i].kind = p->kind == WR_PUB_PARK        ? K_PARK
                  : p->kind == WR_PUB_MAILBOX   ? K_MAILBOX
                  : p->kind == WR_PUB_ROUTE     ? K_ROUTE
                  : p->kind == WR_PUB_BROADCAST ? K_BROADCAST
                                                : K_RETRY;
    v.c[i].reason = reason_of(p->reason);
    v.c[i].delay = p->kind == WR_PUB_RETRY ? p->delay_ms : 0;
    v.c[i].attempt = p->attempt;
    v.c[i].fan = p->fan;
    if ((p->kind == WR_PUB_ROUTE || p->kind == WR_PUB_BROADCAST) && !r->cfg.cluster)
      fail(r, "delivery %d: a routed copy in single mode", di);
    if (p->kind == WR_PUB_BROADCAST && (!r->w[di].broadcast || p->user != NULL))
      fail(r, "delivery %d: a broadcast copy of a notification that is no broadcast", di);
    if (p->kind == WR_PUB_MAILBOX || (p->kind == WR_PUB_ROUTE && !p->fan)) {
      v.c[i].fb_kind = p->fallback_kind == WR_PUB_PARK ? K_PARK : K_RETRY;
      v.c[i].fb_reason = reason_of(p->fallback_reason);
      v.c[i].fb_delay = p->fallback_kind == WR_PUB_RETRY ? p->fallback_delay_ms : 0;
      v.c[i].fb_attempt = p->fallback_attempt;
    }
    /* Invariant 3, on the core's output alone: a copy names a user the
     * delivery names (or nobody, for a whole expired message), once. */
    if (v.c[i].user >= 0 && !(r->w[di].names & (1u << v.c[i].user)))
      fail(r, "delivery %d: a copy names user %s, which it does not target", di, p->user);
    for (size_t j = 0; j < i; j++)
      if (v.c[j].user == v.c[i].user)
        fail(r, "delivery %d: two copies for user %d", di, v.c[i].user);
    if (p->id == NULL || strtol(p->id + 1, NULL, 10) != r->w[di].idnum)
      fail(r, "delivery %d: a copy with id %s", di, p->id ? p->id : "(null)");
  }
  v.n = (int)(d->n_pubs < MAX_USERS ? d->n_pubs : MAX_USERS);
  /* A mailbox item given back waits in its mailbox: the broker hands it
   * out again later (event "mailbox redelivery"). */
  if (d->verdict == WR_VERDICT_REQUEUE && w->source == WR_SRC_MAILBOX && w->gen > r->lost_gen &&
      !r->fake_closing && r->n_requeued < r->max_d)
    r->requeued[r->n_requeued++] = di;
  if (r->n_cverd < r->max_d)
    r->cverd[r->n_cverd++] = v;
  switch (d->verdict) {
  case WR_VERDICT_ACK:
    r->res->acks++;
    break;
  case WR_VERDICT_DEAD:
    r->res->dead++;
    break;
  case WR_VERDICT_REQUEUE:
    r->res->requeues++;
    break;
  default:
    r->res->copies += d->n_pubs;
    break;
  }
  wr_amqp_delivery_free(d);
}

/* ---- the model ---------------------------------------------------------- */

static bool m_user_online(run_t *r, int u) {
  for (int k = 0; k < r->n_order; k++)
    if (r->mc[r->order[k]].open && r->fc[r->order[k]].user == u)
      return true;
  return false;
}

/* The mailbox consumer of user u: opened on the first connection, closed on
 * the last, paused (closed for a while) when one of its items goes unsent
 * or unacked while u is online. */
static void m_cmd(run_t *r, int u, bool open) {
  muser_t *mu = &r->mu[u];
  if (!r->cfg.mailbox_enabled || mu->open == open)
    return;
  mu->open = open;
  if (r->n_mcmd < (int)(sizeof(r->mcmd) / sizeof(r->mcmd[0])))
    r->mcmd[r->n_mcmd++] = (cmd_t){u, open ? C_OPEN : C_CLOSE};
}

/* Cluster mode: the user's binding to this node (join on the first
 * connection, leave after the last). */
static void m_node(run_t *r, int u, int op) {
  if (r->cfg.cluster && r->n_mcmd < (int)(sizeof(r->mcmd) / sizeof(r->mcmd[0])))
    r->mcmd[r->n_mcmd++] = (cmd_t){u, op};
}

static void m_pause(run_t *r, int u) {
  muser_t *mu = &r->mu[u];
  if (!r->cfg.mailbox_enabled || !m_user_online(r, u) || mu->paused)
    return;
  if (mu->backoff < WR_CORE_MBOX_PAUSE_MIN_MS)
    mu->backoff = WR_CORE_MBOX_PAUSE_MIN_MS;
  m_cmd(r, u, false);
  mu->paused = true;
  mu->resume = r->now + mu->backoff;
  mu->backoff =
      mu->backoff >= WR_CORE_MBOX_PAUSE_MAX_MS / 2 ? WR_CORE_MBOX_PAUSE_MAX_MS : mu->backoff * 2;
}

/* The ack timeouts of mailbox item idnum for u this session, counted up
 * (count) or forgotten. */
static uint32_t m_count(run_t *r, int u, int idnum, bool add) {
  muser_t *mu = &r->mu[u];
  for (int i = 0; i < mu->n_counts; i++) {
    if (mu->count_id[i] != idnum)
      continue;
    if (!add) {
      mu->count_id[i] = mu->count_id[mu->n_counts - 1];
      mu->count[i] = mu->count[--mu->n_counts];
      return 0;
    }
    return ++mu->count[i];
  }
  if (!add || mu->n_counts == 64)
    return 0;
  mu->count_id[mu->n_counts] = idnum;
  mu->count[mu->n_counts] = 1;
  mu->n_counts++;
  return 1;
}

/* A copy for an offline target: ladder or park; with mailboxes, a mailbox
 * copy whose fallback is that ladder or park copy (an expired one is parked
 * either way). */
static void m_offline_copy(run_t *r, const wdeliv_t *w, int user, verdict_t *v) {
  uint32_t done = w->attempt == UINT32_MAX ? UINT32_MAX : w->attempt + 1;
  int kind, reason = R_NONE;
  uint32_t delay = 0;
  if (w->expires_at_ms != 0 && r->wall >= w->expires_at_ms) {
    kind = K_PARK;
    reason = R_EXPIRED;
  } else if (done >= r->m_max_attempts) {
    kind = K_PARK;
    reason = R_MAX;
  } else {
    size_t step = w->attempt < r->cfg.n_retry_delays ? w->attempt : r->cfg.n_retry_delays - 1;
    kind = K_RETRY;
    delay = r->cfg.retry_delays_ms[step];
  }
  v->c[v->n].user = user;
  if (r->cfg.mailbox_enabled && reason != R_EXPIRED) {
    v->c[v->n].kind = K_MAILBOX;
    v->c[v->n].attempt = w->attempt;
    v->c[v->n].fb_kind = kind;
    v->c[v->n].fb_reason = reason;
    v->c[v->n].fb_delay = delay;
    v->c[v->n].fb_attempt = done;
  } else {
    v->c[v->n].kind = kind;
    v->c[v->n].reason = reason;
    v->c[v->n].delay = delay;
    v->c[v->n].attempt = done;
  }
  v->n++;
}

/* Cluster mode: a message from Q or Q.mailbox.new is routed, not
 * delivered: one route copy per target (the mailbox copy it would have
 * been, with the same fallback), or one broadcast copy. */
static void m_route(run_t *r, int di, int only) {
  const wdeliv_t *w = &r->w[di];
  verdict_t v;
  memset(&v, 0, sizeof(v));
  v.di = di;
  v.kind = WR_VERDICT_PUBLISH;
  if (w->broadcast) {
    v.n = 1;
    v.c[0].user = -1;
    v.c[0].kind = K_BROADCAST;
    v.c[0].attempt = w->attempt;
  } else if (only >= 0) {
    m_offline_copy(r, w, only, &v);
  } else {
    for (int i = 0; i < w->n_names; i++)
      m_offline_copy(r, w, w->order[i], &v);
  }
  for (int i = 0; i < v.n; i++)
    if (v.c[i].kind == K_MAILBOX)
      v.c[i].kind = K_ROUTE;
  if (r->n_mverd < r->max_d)
    r->mverd[r->n_mverd++] = v;
}

/* The delivery's verdict, once no target waits. */
static void m_finish(run_t *r, int di) {
  mdeliv_t *m = &r->md[di];
  const wdeliv_t *w = &r->w[di];
  verdict_t v;
  memset(&v, 0, sizeof(v));
  v.di = di;
  m->live = false;
  if (w->source == WR_SRC_MAILBOX) {
    /* Already in its mailbox: ack when delivered; else back in its place,
     * unless unacked mailbox.max_redeliveries times: parked. */
    const mtarget_t *t = &m->t[0];
    v.kind = WR_VERDICT_REQUEUE;
    if (t->state == ST_DELIVERED) {
      m_count(r, t->user, w->idnum, false);
      v.kind = WR_VERDICT_ACK;
      if (r->cfg.cluster) {
        /* Its fan copy, for the user's devices on other nodes. */
        v.kind = WR_VERDICT_PUBLISH;
        v.n = 1;
        v.c[0].user = t->user;
        v.c[0].kind = K_ROUTE;
        v.c[0].fan = true;
        v.c[0].attempt = w->attempt;
      }
    } else if (t->why == WHY_TIMEOUT &&
               m_count(r, t->user, w->idnum, true) >= r->cfg.mailbox_max_redeliveries) {
      m_count(r, t->user, w->idnum, false);
      v.kind = WR_VERDICT_PUBLISH;
      v.n = 1;
      v.c[0].user = t->user;
      v.c[0].kind = K_PARK;
      v.c[0].reason = R_UNACKED;
      v.c[0].attempt = w->attempt;
    }
  } else {
    /* A fan copy is for devices here only: never kept for later. */
    for (int i = 0; i < m->n && !w->fan; i++)
      if (m->t[i].state == ST_OFFLINE)
        m_offline_copy(r, w, m->t[i].user, &v);
    v.kind = v.n > 0 ? WR_VERDICT_PUBLISH : WR_VERDICT_ACK;
  }
  if (r->n_mverd < r->max_d)
    r->mverd[r->n_mverd++] = v;
}

static void m_verdict(run_t *r, int di, int kind) {
  verdict_t v;
  memset(&v, 0, sizeof(v));
  v.di = di;
  v.kind = kind;
  r->md[di].live = false;
  if (r->n_mverd < r->max_d)
    r->mverd[r->n_mverd++] = v;
}

static void m_settle(run_t *r, int di, int ti, int st, int why) {
  mdeliv_t *m = &r->md[di];
  if (!m->live || m->t[ti].state != ST_WAITING)
    return;
  m->t[ti].state = st;
  m->t[ti].why = st == ST_OFFLINE ? why : WHY_NONE;
  if (st == ST_OFFLINE && r->w[di].source == WR_SRC_MAILBOX && why != WHY_GONE)
    m_pause(r, m->t[ti].user);
  for (int i = 0; i < m->n; i++)
    if (m->t[i].state == ST_WAITING)
      return;
  m_finish(r, di);
}

/* One frame on one connection, as the connection layer answers it. Returns
 * whether it was queued. */
static bool m_send(run_t *r, int ci, int di, int ti) {
  mconn_t *c = &r->mc[ci];
  if (r->fc[ci].stalled && r->fc[ci].talkative)
    return false; /* paced: over half its cap and alive */
  if (c->closing)
    return false;
  if (c->fail == FAIL_NOBUFS) {
    c->fail = FAIL_NONE;
    c->closing = true;
    return false;
  }
  if (r->n_msend < r->max_d)
    r->msend[r->n_msend++] = (send_t){ci, di};
  bool tracked = ti >= 0 && r->cfg.ack_mode == WR_ACK_WRITE;
  if (tracked)
    r->md[di].t[ti].writes_pending++;
  if (c->fail == FAIL_SYNC) {
    c->fail = FAIL_NONE;
    c->closing = true;
    if (tracked) {
      r->mdeferred =
          grow(r->mdeferred, &r->cap_mdeferred, (size_t)r->n_mdeferred + 1, sizeof(wwrite_t));
      r->mdeferred[r->n_mdeferred++] = (wwrite_t){NULL, di, ti};
    }
    return true;
  }
  if (tracked) {
    c->writes = grow(c->writes, &c->cap_writes, c->n_writes + 1, sizeof(wwrite_t));
    c->writes[c->n_writes++] = (wwrite_t){NULL, di, ti};
  }
  return true;
}

static void m_write_done(run_t *r, int di, int ti, bool ok) {
  mdeliv_t *m = &r->md[di];
  if (!m->live)
    return;
  m->t[ti].writes_pending--;
  if (ok)
    m->t[ti].writes_ok++;
  if (m->t[ti].writes_pending == 0)
    m_settle(r, di, ti, m->t[ti].writes_ok > 0 ? ST_DELIVERED : ST_OFFLINE, WHY_WRITE_FAILED);
}

static void m_deliver(run_t *r, int di) {
  const wdeliv_t *w = &r->w[di];
  mdeliv_t *m = &r->md[di];
  memset(m, 0, sizeof(*m));
  if (r->m_closing || w->gen <= r->m_lost_gen) {
    r->md[di].live = true;
    m_verdict(r, di, WR_VERDICT_REQUEUE);
    return;
  }
  if (w->bad) {
    r->md[di].live = true;
    m_verdict(r, di, WR_VERDICT_DEAD);
    return;
  }
  /* A copy's header is honoured when the body names that user; a mailbox
   * item, a new-mailbox copy or a node-queue copy is for its user, who must
   * be named (a broadcast through the node queue is for everyone here). */
  int one = w->source != WR_SRC_QUEUE ? w->owner : w->copy_user;
  bool only = !w->broadcast && one >= 0 && (w->names & (1u << one));
  bool node_broadcast = w->source == WR_SRC_NODE && w->broadcast;
  if (w->source != WR_SRC_QUEUE && !only && !node_broadcast) {
    r->md[di].live = true;
    m_verdict(r, di, WR_VERDICT_DEAD);
    return;
  }
  if (w->expires_at_ms != 0 && r->wall >= w->expires_at_ms) {
    verdict_t v;
    memset(&v, 0, sizeof(v));
    v.di = di;
    v.kind = WR_VERDICT_PUBLISH;
    v.n = 1;
    v.c[0].user = only ? one : -1;
    v.c[0].kind = K_PARK;
    v.c[0].reason = R_EXPIRED;
    v.c[0].attempt = w->attempt;
    if (r->n_mverd < r->max_d)
      r->mverd[r->n_mverd++] = v;
    return;
  }
  if (r->cfg.cluster && (w->source == WR_SRC_QUEUE || w->source == WR_SRC_MAILBOX_NEW)) {
    m_route(r, di, only ? one : -1);
    return;
  }
  m->live = true;
  m->arrived = r->now;
  /* Connections in the order they opened, as the core keeps them. */
  if (w->broadcast) {
    for (int k = 0; k < r->n_order; k++)
      if (r->mc[r->order[k]].open)
        m_send(r, r->order[k], di, -1);
    m_verdict(r, di, WR_VERDICT_ACK);
    return;
  }
  if (only) {
    m->n = 1;
    m->t[0].user = one;
  } else {
    m->n = w->n_names;
    for (int i = 0; i < w->n_names; i++)
      m->t[i].user = w->order[i];
  }
  for (int i = 0; i < m->n; i++) {
    int u = m->t[i].user, sent = 0;
    if (m->t[i].state != ST_WAITING)
      continue;
    bool online = m_user_online(r, u);
    /* Routed here for a user who is not here: the binding goes first. */
    if (!online && w->source == WR_SRC_NODE && r->n_mcmd < (int)(sizeof(r->mcmd) / sizeof(r->mcmd[0])))
      r->mcmd[r->n_mcmd++] = (cmd_t){u, C_STALE};
    for (int k = 0; k < r->n_order; k++) {
      int ci = r->order[k];
      if (r->mc[ci].open && r->fc[ci].user == u && m_send(r, ci, di, i))
        sent++;
    }
    if (sent == 0)
      m_settle(r, di, i, ST_OFFLINE, online ? WHY_UNSENT : WHY_GONE);
  }
}

static void m_apply_deferred(run_t *r) {
  for (int i = 0; i < r->n_mdeferred; i++)
    m_write_done(r, r->mdeferred[i].di, r->mdeferred[i].ti, false);
  r->n_mdeferred = 0;
}

static void m_conn_open(run_t *r, int ci) {
  int u = r->fc[ci].user;
  bool first = !m_user_online(r, u);
  r->mc[ci].open = true;
  if (first)
    m_node(r, u, C_JOIN);
  if (first && !r->mu[u].paused)
    m_cmd(r, u, true);
  if (r->cfg.ack_mode != WR_ACK_CLIENT)
    return;
  for (int di = 0; di < r->nd; di++) {
    mdeliv_t *m = &r->md[di];
    if (!m->live)
      continue;
    for (int i = 0; i < m->n; i++)
      if (m->t[i].user == u && m->t[i].state == ST_WAITING)
        m_send(r, ci, di, i);
  }
}

static void m_conn_close(run_t *r, int ci) {
  int u = r->fc[ci].user;
  r->mc[ci].open = false;
  if (m_user_online(r, u))
    return;
  /* The user left: their mailbox consumer stops (before their mailbox
   * items go back), pauses and counts end with the session. */
  m_cmd(r, u, false);
  m_node(r, u, C_LEAVE);
  r->mu[u].paused = false;
  r->mu[u].backoff = 0;
  r->mu[u].n_counts = 0;
  if (r->cfg.ack_mode != WR_ACK_CLIENT)
    return;
  for (int di = 0; di < r->nd; di++)
    for (int i = 0; i < r->md[di].n; i++)
      if (r->md[di].t[i].user == u)
        m_settle(r, di, i, ST_OFFLINE, WHY_GONE);
}

static void m_client_ack(run_t *r, int ci, int idnum) {
  int u = r->fc[ci].user;
  bool found = false;
  for (int di = 0; di < r->nd; di++) {
    if (r->w[di].idnum != idnum || !r->md[di].live)
      continue;
    for (int i = 0; i < r->md[di].n; i++) {
      if (r->md[di].t[i].user == u && r->md[di].t[i].state == ST_WAITING) {
        found = true;
        m_settle(r, di, i, ST_DELIVERED, WHY_NONE);
      }
    }
  }
  /* An acking client ends a pause of its mailbox. */
  if (found) {
    r->mu[u].backoff = 0;
    if (r->mu[u].paused) {
      r->mu[u].paused = false;
      m_cmd(r, u, true);
    }
  }
}

static void m_tick(run_t *r) {
  for (int u = 0; u < r->n_users; u++) {
    if (r->mu[u].paused && r->mu[u].resume <= r->now) {
      r->mu[u].paused = false;
      m_cmd(r, u, true);
    }
  }
  if (r->cfg.ack_mode != WR_ACK_CLIENT)
    return;
  for (int di = 0; di < r->nd; di++) {
    mdeliv_t *m = &r->md[di];
    if (!m->live || m->arrived + r->m_timeout > r->now)
      continue;
    for (int i = 0; i < m->n; i++)
      m_settle(r, di, i, ST_OFFLINE, WHY_TIMEOUT);
  }
}

static void m_generation_lost(run_t *r, uint64_t gen) {
  r->m_lost_gen = gen;
  for (int di = 0; di < r->nd; di++)
    if (r->md[di].live && r->w[di].gen <= gen)
      m_verdict(r, di, WR_VERDICT_REQUEUE);
}

static void m_shutdown(run_t *r) {
  r->m_closing = true;
  for (int di = 0; di < r->nd; di++)
    if (r->md[di].live)
      m_verdict(r, di, WR_VERDICT_REQUEUE);
}

/* ---- comparing the two sides -------------------------------------------- */

static int cmp_send(const void *a, const void *b) {
  const send_t *x = a, *y = b;
  return x->conn != y->conn ? x->conn - y->conn : x->di - y->di;
}

static int cmp_verdict(const void *a, const void *b) {
  return ((const verdict_t *)a)->di - ((const verdict_t *)b)->di;
}

static void describe_verdict(const verdict_t *v, char *buf, size_t len) {
  int n = snprintf(buf, len, "d%d:%d[", v->di, v->kind);
  static const char *const kinds[] = {"retry", "park", "mailbox", "route", "broadcast"};
  for (int i = 0; i < v->n && n > 0 && (size_t)n < len; i++)
    n += snprintf(buf + n, len - (size_t)n, "%s u%d %s%s/%d a%u d%u fb %s/%d a%u d%u", i ? "," : "",
                  v->c[i].user, kinds[v->c[i].kind], v->c[i].fan ? "(fan)" : "", v->c[i].reason,
                  v->c[i].attempt, v->c[i].delay,
                  kinds[v->c[i].fb_kind], v->c[i].fb_reason, v->c[i].fb_attempt, v->c[i].fb_delay);
  if (n > 0 && (size_t)n < len)
    snprintf(buf + n, len - (size_t)n, "]");
}

static void compare(run_t *r, const char *event) {
  qsort(r->csend, (size_t)r->n_csend, sizeof(send_t), cmp_send);
  qsort(r->msend, (size_t)r->n_msend, sizeof(send_t), cmp_send);
  bool same = r->n_csend == r->n_msend;
  for (int i = 0; same && i < r->n_csend; i++)
    same = r->csend[i].conn == r->msend[i].conn && r->csend[i].di == r->msend[i].di;
  if (!same) {
    char a[512] = "", b[512] = "";
    int na = 0, nb = 0;
    for (int i = 0; i < r->n_csend && na < 400; i++)
      na += snprintf(a + na, sizeof(a) - (size_t)na, " c%d:d%d", r->csend[i].conn, r->csend[i].di);
    for (int i = 0; i < r->n_msend && nb < 400; i++)
      nb += snprintf(b + nb, sizeof(b) - (size_t)nb, " c%d:d%d", r->msend[i].conn, r->msend[i].di);
    fail(r, "event %" PRIu64 " (%s): frames differ\n  core: %s\n  model:%s", r->res->events, event,
         a, b);
  }
  qsort(r->cverd, (size_t)r->n_cverd, sizeof(verdict_t), cmp_verdict);
  qsort(r->mverd, (size_t)r->n_mverd, sizeof(verdict_t), cmp_verdict);
  same = r->n_cverd == r->n_mverd;
  for (int i = 0; same && i < r->n_cverd; i++) {
    const verdict_t *x = &r->cverd[i], *y = &r->mverd[i];
    same = x->di == y->di && x->kind == y->kind && x->n == y->n;
    /* Copies in target order on both sides. */
    for (int j = 0; same && j < x->n; j++)
      same = x->c[j].user == y->c[j].user && x->c[j].kind == y->c[j].kind &&
             x->c[j].reason == y->c[j].reason && x->c[j].attempt == y->c[j].attempt &&
             x->c[j].delay == y->c[j].delay && x->c[j].fb_kind == y->c[j].fb_kind &&
             x->c[j].fb_reason == y->c[j].fb_reason && x->c[j].fb_delay == y->c[j].fb_delay &&
             x->c[j].fb_attempt == y->c[j].fb_attempt && x->c[j].fan == y->c[j].fan;
  }
  if (!same) {
    char a[900] = "", b[900] = "", one[200];
    for (int i = 0; i < r->n_cverd && strlen(a) < 700; i++) {
      describe_verdict(&r->cverd[i], one, sizeof(one));
      strcat(a, " ");
      strcat(a, one);
    }
    for (int i = 0; i < r->n_mverd && strlen(b) < 700; i++) {
      describe_verdict(&r->mverd[i], one, sizeof(one));
      strcat(b, " ");
      strcat(b, one);
    }
    fail(r, "event %" PRIu64 " (%s): verdicts differ\n  core: %s\n  model:%s", r->res->events,
         event, a, b);
  }
  /* Invariant 1, on the core's output alone: frames only to connections of
   * the users a delivery names. */
  for (int i = 0; i < r->n_csend; i++) {
    const wdeliv_t *w = &r->w[r->csend[i].di];
    int u = r->fc[r->csend[i].conn].user;
    int one = w->source != WR_SRC_QUEUE ? w->owner : w->copy_user;
    bool only = !w->broadcast && one >= 0 && (w->names & (1u << one));
    if (w->source != WR_SRC_QUEUE && !w->broadcast && !only)
      fail(r, "event %" PRIu64 " (%s): delivery %d, for user %d who it does not name, was sent",
           r->res->events, event, r->csend[i].di, one);
    if (!w->broadcast && (!(w->names & (1u << u)) || (only && u != one)))
      fail(r, "event %" PRIu64 " (%s): delivery %d reached user %d, whom it does not name",
           r->res->events, event, r->csend[i].di, u);
  }
  /* Mailbox commands: for each user, the same sequence on both sides. */
  same = r->n_ccmd == r->n_mcmd;
  for (int u = 0; same && u < r->n_users; u++) {
    int i = 0, j = 0;
    for (;;) {
      while (i < r->n_ccmd && r->ccmd[i].user != u)
        i++;
      while (j < r->n_mcmd && r->mcmd[j].user != u)
        j++;
      if (i == r->n_ccmd || j == r->n_mcmd) {
        same = i == r->n_ccmd && j == r->n_mcmd;
        break;
      }
      if (r->ccmd[i].op != r->mcmd[j].op) {
        same = false;
        break;
      }
      i++;
      j++;
    }
  }
  if (!same) {
    static const char *const ops[] = {"close", "open", "join", "leave", "stale"};
    char a[256] = "", b[256] = "";
    int na = 0, nb = 0;
    for (int i = 0; i < r->n_ccmd && na < 200; i++)
      na += snprintf(a + na, sizeof(a) - (size_t)na, " u%d:%s", r->ccmd[i].user,
                     ops[r->ccmd[i].op]);
    for (int i = 0; i < r->n_mcmd && nb < 200; i++)
      nb += snprintf(b + nb, sizeof(b) - (size_t)nb, " u%d:%s", r->mcmd[i].user,
                     ops[r->mcmd[i].op]);
    fail(r, "event %" PRIu64 " (%s): mailbox and node commands differ\n  core: %s\n  model:%s",
         r->res->events, event, a, b);
  }
  r->n_csend = r->n_msend = r->n_cverd = r->n_mverd = r->n_ccmd = r->n_mcmd = 0;
}

/* ---- events ------------------------------------------------------------- */

static char *body_json(run_t *r, int di, bool msgpack, size_t *len) {
  const wdeliv_t *w = &r->w[di];
  json_t *o = json_object();
  char name[8], *out;
  json_object_set_new(o, "id", json_sprintf("n%d", w->idnum));
  json_object_set_new(o, "n", json_integer(di));
  if (w->broadcast) {
    json_object_set_new(o, "broadcast", json_true());
  } else if (w->n_names == 1 && (di & 1)) {
    user_name(w->order[0], name);
    json_object_set_new(o, "user_id", json_string(name));
  } else {
    json_t *a = json_array();
    for (int i = 0; i < w->n_names; i++) {
      user_name(w->order[i], name);
      json_array_append_new(a, json_string(name));
    }
    json_object_set_new(o, "user_ids", a);
  }
  json_object_set_new(o, "title", json_string("t"));
  if (w->expires_at_ms != 0) {
    /* Half of them as expires_at (seconds), half as ttl_ms from the publish
     * time: both must come out as the expiry the model expects. */
    int64_t base =
        w->timestamp_s > 0 && w->timestamp_s < 100000000000LL ? w->timestamp_s * 1000 : r->wall;
    if ((di & 2) && w->expires_at_ms > base)
      json_object_set_new(o, "ttl_ms", json_integer(w->expires_at_ms - base));
    else
      json_object_set_new(o, "expires_at", json_integer(w->expires_at_ms / 1000));
  }
  if (msgpack) {
    uint8_t *mp = NULL;
    if (wr_msgpack_from_json(o, &mp, len) != 0)
      abort();
    json_decref(o);
    return (char *)mp;
  }
  out = json_dumps(o, JSON_COMPACT);
  *len = strlen(out);
  json_decref(o);
  return out;
}

/* Hands delivery di to both sides. */
static void deliver(run_t *r, int di) {
  wdeliv_t *w = &r->w[di];
  wr_amqp_delivery_t *d = calloc(1, sizeof(*d));
  char name[8];
  bool msgpack = (next(r) % 4) == 0;
  size_t len = 0;

  d->tag = (uint64_t)di + 1;
  d->generation = w->gen;
  d->consumed_at_ms = r->wall;
  d->timestamp_s = w->timestamp_s;
  d->attempt = w->attempt;
  d->source = (wr_amqp_source_t)w->source;
  d->fan = w->fan;
  /* The backlog flag only times replays (no delivery outcome depends on
   * it): set on some mailbox items, without drawing from the script. */
  d->backlog = w->source == WR_SRC_MAILBOX && di % 3 == 0;
  if (w->source != WR_SRC_QUEUE && w->owner >= 0) {
    user_name(w->owner, name);
    d->target_user = strdup(name);
  } else if (w->copy_user >= 0) {
    user_name(w->copy_user, name);
    d->target_user = strdup(name);
  }
  if (w->bad) {
    d->body = (uint8_t *)strdup("{\"user_id\":");
    d->body_len = strlen((char *)d->body);
  } else {
    d->body = (uint8_t *)body_json(r, di, msgpack, &len);
    d->body_len = len;
    if (msgpack)
      d->content_type = strdup("application/msgpack");
  }
  r->res->deliveries++;
  wr_core_delivery(&r->core, d);
  m_deliver(r, di);
  m_apply_deferred(r);
}

static int new_delivery(run_t *r) {
  if (r->nd >= r->max_d - MAX_CONNS)
    return -1;
  int di = r->nd++;
  wdeliv_t *w = &r->w[di];
  memset(w, 0, sizeof(*w));
  memset(&r->md[di], 0, sizeof(r->md[di]));
  w->gen = r->gen;
  w->idnum = di;
  w->copy_user = -1;
  w->owner = -1;
  return di;
}

static void name_users(run_t *r, wdeliv_t *w, unsigned mask) {
  mask &= (1u << r->n_users) - 1;
  if (mask == 0)
    mask = 1u << (next(r) % (unsigned)r->n_users);
  w->names = mask;
  w->n_names = 0;
  /* Body order: a rotation of the users, so targets are not always sorted. */
  int start = (int)(next(r) % (unsigned)r->n_users);
  for (int k = 0; k < r->n_users; k++) {
    int u = (start + k) % r->n_users;
    if (mask & (1u << u))
      w->order[w->n_names++] = u;
  }
}

static void ev_connect(run_t *r) {
  unsigned u = next(r) % (unsigned)r->n_users, f = next(r);
  int ci;
  for (ci = 0; ci < r->nc && r->fc[ci].open; ci++)
    ;
  if (ci == MAX_CONNS)
    return;
  if (ci == r->nc)
    r->nc++;
  fconn_t *c = &r->fc[ci];
  mconn_t *m = &r->mc[ci];
  char name[8];
  /* A reused slot keeps its arrays, emptied. */
  wwrite_t *cw = c->writes, *mw = m->writes;
  int *recv = c->recv;
  size_t ccap = c->cap_writes, mcap = m->cap_writes, rcap = c->cap_recv;
  memset(c, 0, sizeof(*c));
  memset(m, 0, sizeof(*m));
  c->writes = cw;
  c->cap_writes = ccap;
  c->recv = recv;
  c->cap_recv = rcap;
  m->writes = mw;
  m->cap_writes = mcap;
  r->order[r->n_order++] = ci;
  c->user = (int)u;
  c->fmt = (f & 1) ? WR_WS_FORMAT_MSGPACK : WR_WS_FORMAT_JSON;
  c->open = true;
  user_name(c->user, name);
  c->cc = wr_core_conn_open(&r->core, c, name, c->fmt);
  if (c->cc == NULL)
    abort();
  m_conn_open(r, ci);
  m_apply_deferred(r);
}

static int pick_conn(run_t *r, bool usable) {
  int open[MAX_CONNS], n = 0;
  unsigned b = next(r);
  for (int i = 0; i < r->nc; i++)
    if (r->fc[i].open && (!usable || !r->fc[i].closing))
      open[n++] = i;
  return n > 0 ? open[b % (unsigned)n] : -1;
}

/* The oldest outstanding write of connection ci completes on both sides. */
static void complete_write(run_t *r, int ci, int status) {
  fconn_t *c = &r->fc[ci];
  mconn_t *m = &r->mc[ci];
  if (c->n_writes == 0 && m->n_writes == 0)
    return;
  if (c->n_writes == 0 || m->n_writes == 0 || c->writes[0].di != m->writes[0].di) {
    fail(r, "connection %d: outstanding writes differ (core %zu, model %zu)", ci, c->n_writes,
         m->n_writes);
    return;
  }
  wwrite_t cw = c->writes[0], mw = m->writes[0];
  memmove(c->writes, c->writes + 1, (c->n_writes - 1) * sizeof(wwrite_t));
  memmove(m->writes, m->writes + 1, (m->n_writes - 1) * sizeof(wwrite_t));
  c->n_writes--;
  m->n_writes--;
  if (status != 0) {
    /* A failed write ends the connection: nothing more is queued on it. */
    c->closing = true;
    m->closing = true;
  }
  wr_core_write_done(&r->core, cw.ctx, status);
  m_write_done(r, mw.di, mw.ti, status == 0);
}

static void disconnect(run_t *r, int ci) {
  fconn_t *c = &r->fc[ci];
  /* Every frame it still held fails before the close, as ws/ reports them. */
  while (c->n_writes > 0 || r->mc[ci].n_writes > 0) {
    complete_write(r, ci, -ECANCELED);
    if (r->failed)
      return;
  }
  c->open = false;
  for (int k = 0; k < r->n_order; k++) {
    if (r->order[k] == ci) {
      memmove(r->order + k, r->order + k + 1, (size_t)(r->n_order - k - 1) * sizeof(int));
      r->n_order--;
      break;
    }
  }
  wr_core_conn_close(&r->core, c->cc);
  c->cc = NULL;
  m_conn_close(r, ci);
  m_apply_deferred(r);
}

static void ev_ack(run_t *r) {
  int ci = pick_conn(r, true);
  unsigned b = next(r), k = next(r);
  char id[16];
  int idnum;
  if (ci < 0)
    return;
  fconn_t *c = &r->fc[ci];
  if (c->n_recv > 0 && (b & 7) != 0)
    idnum = r->w[c->recv[c->n_recv - 1 - (k % c->n_recv)]].idnum; /* mostly recent ones */
  else
    idnum = r->nd > 0 ? (int)(k % (unsigned)(r->nd + 3)) : 0; /* any id, known or not */
  snprintf(id, sizeof(id), "n%d", idnum);
  wr_core_client_ack(&r->core, c->cc, id);
  m_client_ack(r, ci, idnum);
  m_apply_deferred(r);
}

static void advance(run_t *r, uint64_t ms) {
  r->now += ms;
  r->wall += (int64_t)ms;
  wr_core_tick(&r->core, r->now, r->wall);
  m_tick(r);
  m_apply_deferred(r);
}

static const char *const event_names[] = {"connect",
                                          "connect",
                                          "disconnect",
                                          "publish one",
                                          "publish one",
                                          "publish several",
                                          "broadcast",
                                          "ladder copy",
                                          "expiring",
                                          "undecodable",
                                          "duplicate id",
                                          "client ack",
                                          "client ack",
                                          "client ack",
                                          "tick",
                                          "tick past timeout",
                                          "write done",
                                          "write done",
                                          "load",
                                          "reconnect",
                                          "stale delivery",
                                          "reload",
                                          "send failure",
                                          "shutdown",
                                          "mailbox item",
                                          "new-mailbox copy",
                                          "mailbox redelivery",
                                          "node-queue copy"};

/* Script bytes to events, weighted: connections come and go, publishes and
 * acks are common, reconnects and shutdown rare. */
#define N_OP_BYTES 34
static const uint8_t op_of_byte[N_OP_BYTES] = {0,  0,  1,  2,  2,  3,  4,  3,  5,  6,  7,  8,
                                               9,  10, 11, 12, 13, 24, 12, 14, 15, 16, 17, 16,
                                               18, 19, 20, 21, 22, 23, 26, 25, 27, 27};

static void run_event(run_t *r, unsigned op) {
  int di, ci;
  unsigned b;
  switch (op) {
  case 0:
  case 1:
    ev_connect(r);
    break;
  case 2:
    if ((ci = pick_conn(r, false)) >= 0)
      disconnect(r, ci);
    break;
  case 3:
  case 4:
  case 5:
  case 6:
  case 8:
  case 10:
    if ((di = new_delivery(r)) < 0)
      break;
    b = next(r);
    if (op == 6) {
      r->w[di].broadcast = true;
    } else {
      name_users(r, &r->w[di], op == 5 ? b | (b << 4) : op == 10 ? b : 1u << (b % 8));
    }
    if (op == 10 && di > 0)
      r->w[di].idnum = r->w[next(r) % (unsigned)di].idnum;
    if (op == 8) {
      /* Expired already, or soon (it may expire while it waits). */
      int64_t off = (int64_t)(next(r) % 40) * 1000 - 10000;
      r->w[di].expires_at_ms = (r->wall + off) / 1000 * 1000;
      if (r->w[di].expires_at_ms <= 0)
        r->w[di].expires_at_ms = 1000;
      b = next(r);
      r->w[di].timestamp_s = b % 3 == 0   ? 0
                             : b % 3 == 1 ? (r->wall - 3000) / 1000
                                          : (int64_t)1 << 62; /* nonsense: ignored */
    }
    deliver(r, di);
    break;
  case 7:
    if ((di = new_delivery(r)) < 0)
      break;
    b = next(r);
    name_users(r, &r->w[di], b);
    /* Usually a user the body names; sometimes one it does not. */
    r->w[di].copy_user = (next(r) % 8) != 0 ? r->w[di].order[0] : (int)(b % (unsigned)r->n_users);
    b = next(r);
    r->w[di].attempt = b < 250 ? b % (r->m_max_attempts + 2) : UINT32_MAX - (b - 250);
    deliver(r, di);
    break;
  case 9:
    if ((di = new_delivery(r)) < 0)
      break;
    r->w[di].bad = true;
    deliver(r, di);
    break;
  case 11:
  case 12:
  case 13:
    ev_ack(r);
    break;
  case 14:
    advance(r, next(r));
    break;
  case 15:
    advance(r, r->m_timeout + next(r) * 10);
    break;
  case 16:
  case 17:
    if ((ci = pick_conn(r, false)) >= 0)
      complete_write(r, ci, (next(r) % 6) == 0 ? -EPIPE : 0);
    m_apply_deferred(r);
    break;
  case 18:
    if ((ci = pick_conn(r, false)) >= 0) {
      b = next(r);
      r->fc[ci].stalled = (b & 1) != 0;
      r->fc[ci].talkative = (b & 2) != 0;
    }
    break;
  case 19:
    /* The AMQP connection is lost: a new generation begins. */
    if (next(r) >= 48)
      break;
    r->lost_gen = r->gen;
    r->gen++;
    wr_core_generation_lost(&r->core, r->lost_gen);
    m_generation_lost(r, r->lost_gen);
    m_apply_deferred(r);
    break;
  case 20:
    /* A delivery of the lost generation still in the ring. */
    if (r->lost_gen == 0 || (di = new_delivery(r)) < 0)
      break;
    r->w[di].gen = r->lost_gen;
    name_users(r, &r->w[di], next(r));
    deliver(r, di);
    break;
  case 21: {
    wr_core_config_t n = r->cfg;
    n.ack_timeout_ms = 100 + next(r) * 20;
    n.max_attempts = 1 + next(r) % 6;
    n.max_queued_bytes = 1024 + next(r) * 1024;
    n.ack_mode = next(r) & 1 ? WR_ACK_WRITE : WR_ACK_CLIENT; /* must be ignored */
    wr_core_reload(&r->core, &n);
    r->m_timeout = n.ack_timeout_ms;
    r->m_max_attempts = n.max_attempts;
    r->cfg.max_queued_bytes = n.max_queued_bytes;
    break;
  }
  case 22:
    if ((ci = pick_conn(r, true)) >= 0) {
      b = next(r);
      r->fc[ci].fail = r->mc[ci].fail = (b & 1) ? FAIL_SYNC : FAIL_NOBUFS;
    }
    break;
  case 24:
  case 25:
    /* A mailbox item (or a copy through Q.mailbox.new) for one user; its
     * body usually names that user, sometimes with others, sometimes not
     * at all (someone published it straight into Q.mailbox). */
    if ((di = new_delivery(r)) < 0)
      break;
    b = next(r);
    r->w[di].owner = (int)(b % (unsigned)r->n_users);
    name_users(r, &r->w[di],
               (next(r) % 8 != 0 ? 1u << r->w[di].owner : 0) | (b & 0xf0 ? next(r) : 0));
    if (!r->cfg.mailbox_enabled) {
      r->w[di].owner = -1; /* no mailboxes: an ordinary publish */
    } else {
      r->w[di].source = op == 24 ? WR_SRC_MAILBOX : WR_SRC_MAILBOX_NEW;
      r->w[di].attempt = next(r) % 4;
      if (next(r) % 8 == 0)
        r->w[di].expires_at_ms = (r->wall + (int64_t)(next(r) % 20) * 1000 - 5000) / 1000 * 1000;
    }
    deliver(r, di);
    break;
  case 26: {
    /* The broker delivers again the oldest requeued item of a user whose
     * mailbox is consumed: same id, same body, a new tag. */
    int k;
    for (k = 0; k < r->n_requeued && !r->fake_open[r->w[r->requeued[k]].owner]; k++)
      ;
    if (k == r->n_requeued || (di = new_delivery(r)) < 0)
      break;
    wdeliv_t *old = &r->w[r->requeued[k]];
    uint64_t gen = r->w[di].gen;
    r->w[di] = *old;
    r->w[di].gen = gen;
    memmove(r->requeued + k, r->requeued + k + 1, (size_t)(r->n_requeued - k - 1) * sizeof(int));
    r->n_requeued--;
    deliver(r, di);
    break;
  }
  case 27:
    /* Cluster mode: a copy routed to this node's queue for one user (its
     * body usually names them, sometimes not), a broadcast through
     * Q.broadcast, or another node's fan copy. Single mode: a publish. */
    if ((di = new_delivery(r)) < 0)
      break;
    b = next(r);
    if (r->cfg.cluster && (b & 7) == 0) {
      r->w[di].broadcast = true;
    } else {
      r->w[di].owner = (int)(b % (unsigned)r->n_users);
      name_users(r, &r->w[di], (next(r) % 8 != 0 ? 1u << r->w[di].owner : 0) |
                                   (b & 0x30 ? next(r) : 0));
    }
    if (r->cfg.cluster) {
      r->w[di].source = WR_SRC_NODE;
      r->w[di].fan = !r->w[di].broadcast && (b & 0xc0) == 0xc0;
      r->w[di].attempt = next(r) % 4;
    } else {
      r->w[di].owner = -1;
    }
    deliver(r, di);
    break;
  case 23:
    /* Shutdown is rare: it ends everything interesting. */
    if (next(r) != 0 || r->m_closing)
      break;
    r->fake_closing = true;
    wr_core_requeue_all(&r->core);
    m_shutdown(r);
    break;
  default:
    break;
  }
}

/* After the script: every write completes, every connection closes, time
 * passes; then every delivery must have had exactly one verdict. */
static void quiesce(run_t *r) {
  for (int ci = 0; ci < r->nc && !r->failed; ci++) {
    while (r->fc[ci].open && (r->fc[ci].n_writes > 0 || r->mc[ci].n_writes > 0) && !r->failed)
      complete_write(r, ci, 0);
    m_apply_deferred(r);
    compare(r, "final writes");
  }
  for (int ci = 0; ci < r->nc && !r->failed; ci++) {
    if (r->fc[ci].open)
      disconnect(r, ci);
    compare(r, "final disconnect");
  }
  if (!r->failed) {
    advance(r, (uint64_t)r->m_timeout + 1);
    compare(r, "final tick");
  }
  for (int di = 0; di < r->nd && !r->failed; di++)
    if (r->n_verdicts_seen[di] != 1)
      fail(r, "delivery %d ended with %d verdicts", di, r->n_verdicts_seen[di]);
  if (!r->failed && (r->core.n_pendings != 0 || r->core.index.nusers != 0))
    fail(r, "%zu deliveries pending and %zu user records left after everything settled",
         r->core.n_pendings, r->core.index.nusers);
}

int cs_run(const uint8_t *script, size_t len, bool trace, cs_result_t *res) {
  static const uint32_t delays[] = {100, 500, 2000};
  run_t *r = calloc(1, sizeof(*r));
  wr_core_sink_t sink;
  unsigned h0, h1, h2;
  int rc;

  if (r == NULL)
    abort();
  r->buf = script;
  r->len = len;
  r->trace = trace;
  r->res = res;
  h0 = next(r);
  h1 = next(r);
  h2 = next(r);
  r->n_users = 2 + (int)((h0 >> 1) % 7);
  r->cfg.ack_mode = (h0 & 1) ? WR_ACK_WRITE : WR_ACK_CLIENT;
  r->cfg.ack_timeout_ms = 100 + h1 * 20;
  r->cfg.max_attempts = 1 + h2 % 6;
  r->cfg.mailbox_enabled = (h2 & 0x80) != 0;
  r->cfg.mailbox_max_redeliveries = 1 + ((h2 >> 4) & 3);
  r->cfg.cluster = r->cfg.mailbox_enabled && (h2 & 0x40) != 0;
  memcpy(r->cfg.retry_delays_ms, delays, sizeof(delays));
  r->cfg.n_retry_delays = 3;
  r->cfg.max_queued_bytes = 1 << 20;
  r->cfg.max_body_bytes = 65536;
  r->m_timeout = r->cfg.ack_timeout_ms;
  r->m_max_attempts = r->cfg.max_attempts;
  r->now = 1000;
  r->wall = WALL0;
  r->gen = 1;
  /* An event takes a byte and a delivery at least two: one event's frames
   * (one per connection, or one per waiting delivery) and verdicts fit. */
  r->max_d = (int)((len < 2 * MAX_DELIVS ? len : 2 * MAX_DELIVS) / 2) + MAX_CONNS + 8;
  r->w = calloc((size_t)r->max_d, sizeof(*r->w));
  r->md = calloc((size_t)r->max_d, sizeof(*r->md));
  r->n_verdicts_seen = calloc((size_t)r->max_d, sizeof(int));
  r->requeued = calloc((size_t)r->max_d, sizeof(int));
  r->csend = calloc((size_t)r->max_d, sizeof(send_t));
  r->msend = calloc((size_t)r->max_d, sizeof(send_t));
  r->cverd = calloc((size_t)r->max_d, sizeof(verdict_t));
  r->mverd = calloc((size_t)r->max_d, sizeof(verdict_t));
  if (!r->w || !r->md || !r->n_verdicts_seen || !r->requeued || !r->csend || !r->msend ||
      !r->cverd || !r->mverd)
    abort();
  sink = (wr_core_sink_t){.data = r,
                          .send_cb = send_cb,
                          .load_cb = load_cb,
                          .verdict_cb = verdict_cb,
                          .mailbox_cb = mailbox_cb,
                          .node_cb = node_cb};
  wr_bridge_stats_init(&r->stats);
  if (wr_core_init(&r->core, &r->cfg, &sink, &r->stats) != 0)
    abort();
  wr_core_clock(&r->core, r->now, r->wall);

  while (r->pos < r->len && !r->failed) {
    unsigned op = op_of_byte[next(r) % N_OP_BYTES];
    if (trace)
      fprintf(stderr, "event %" PRIu64 ": %s (byte %zu)\n", res->events, event_names[op], r->pos);
    run_event(r, op);
    res->events++;
    compare(r, event_names[op]);
  }
  if (!r->failed)
    quiesce(r);
  res->delivered += r->stats.targets_delivered;

  /* Hand back what is left and free the core: ASan and LeakSanitizer check
   * its memory. A failed run may have left it anywhere: it is not torn down
   * (the failure is what matters then). */
  if (!r->failed) {
    wr_core_requeue_all(&r->core);
    wr_core_close(&r->core);
  }
  rc = r->failed ? -1 : 0;
  for (int ci = 0; ci < r->nc; ci++) {
    free(r->fc[ci].writes);
    free(r->fc[ci].recv);
    free(r->mc[ci].writes);
  }
  free(r->mdeferred);
  free(r->w);
  free(r->md);
  free(r->n_verdicts_seen);
  free(r->requeued);
  free(r->csend);
  free(r->msend);
  free(r->cverd);
  free(r->mverd);
  free(r);
  return rc;
}
