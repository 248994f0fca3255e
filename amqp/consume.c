/* The AMQP thread: connect, declare, consume, hand deliveries to the sink,
 * execute verdicts, reconnect. The only code that touches the connection. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/log.h"
#include "amqp/amqp_int.h"

#define DRAIN_BATCH 256      /* deliveries read per loop turn before verdicts run */
#define STOP_CONFIRM_MS 5000 /* how long stop waits for outstanding confirms */

static bool stop_requested(const wr_amqp_t *a) {
  return __atomic_load_n(&a->stop_req, __ATOMIC_ACQUIRE) != 0;
}

/* One read resets an eventfd counter (not EFD_SEMAPHORE). */
static void efd_drain(wr_amqp_t *a) {
  uint64_t v;
  ssize_t n = read(a->efd, &v, sizeof(v));
  (void)n;
}

/* Acks of originals go out in batches (wr_amqp_acks_due): every basic.ack
 * costs the broker (its busiest process handles each frame) and us a send;
 * all at once when stopping. *timeout (when given) is shortened to the lag
 * left, so a batch never waits longer than that in poll(). */
static int acks_maybe_send(wr_amqp_t *a, int64_t *timeout) {
  int64_t left;
  if (!a->stopping &&
      !wr_amqp_acks_due(&a->acks, wr_amqp_batch(a->cfg->prefetch), wr_amqp_now_ms(), &left)) {
    if (timeout != NULL && *timeout > left)
      *timeout = left;
    return 0;
  }
  return wr_amqp_acks_send(a);
}

/* Runs one command: a verdict, a mailbox or a binding command. */
static int run_command(wr_amqp_t *a, wr_amqp_cmd_t *c) {
  if (c->kind == WR_CMD_VERDICT)
    return wr_amqp_verdict_run(a, (wr_amqp_delivery_t *)c);
  if (c->kind == WR_CMD_MAILBOX_OPEN || c->kind == WR_CMD_MAILBOX_CLOSE)
    return wr_amqp_mbox_command(a, c);
  return wr_amqp_node_command(a, c);
}

/* The users a deferred command or verdict concerns, with how many items
 * wait for each: an exact map (a saturated summary would hold every verdict
 * back once thousands of users wait). */
typedef struct defer_user_s {
  struct defer_user_s *next;
  uint64_t hash;
  uint32_t n;
  char id[];
} defer_user_t;

/* The entry of user (made with n = 0 when make is set); NULL when absent or
 * out of memory. */
static defer_user_t **defer_find(wr_amqp_deferred_t *q, const char *user, uint64_t h) {
  if (q->nbuckets == 0)
    return NULL;
  defer_user_t **pp = (defer_user_t **)&q->buckets[h & (q->nbuckets - 1)];
  for (; *pp != NULL; pp = &(*pp)->next)
    if ((*pp)->hash == h && strcmp((*pp)->id, user) == 0)
      return pp;
  return pp;
}

static int defer_grow(wr_amqp_deferred_t *q) {
  size_t n = q->nbuckets ? q->nbuckets * 2 : 1024;
  void **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < q->nbuckets; i++) {
    for (defer_user_t *e = q->buckets[i], *next; e != NULL; e = next) {
      next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  }
  free(q->buckets);
  q->buckets = b;
  q->nbuckets = n;
  return 0;
}

/* Calls fn on every user c concerns: a mailbox or binding command's user; a
 * verdict's target (a mailbox item's owner) and its copies' users. */
static void for_users(wr_amqp_t *a, wr_amqp_cmd_t *c, void (*fn)(wr_amqp_t *, const char *, int),
                      int arg) {
  if (c->kind != WR_CMD_VERDICT) {
    fn(a, ((wr_amqp_mbox_cmd_t *)c)->user, arg);
    return;
  }
  wr_amqp_delivery_t *d = (wr_amqp_delivery_t *)c;
  if (d->target_user != NULL)
    fn(a, d->target_user, arg);
  for (size_t i = 0; i < d->n_pubs; i++)
    if (d->pubs[i].user != NULL)
      fn(a, d->pubs[i].user, arg);
}

static void count_user(wr_amqp_t *a, const char *user, int delta) {
  wr_amqp_deferred_t *q = &a->deferred;
  uint64_t h = wr_amqp_hash(user, strlen(user));
  if (delta > 0 && q->nusers >= q->nbuckets && defer_grow(q) < 0 && q->nbuckets == 0) {
    q->lost = true; /* no memory: every verdict waits from now on (safe) */
    return;
  }
  defer_user_t **pp = defer_find(q, user, h);
  if (pp == NULL)
    return;
  if (*pp == NULL) {
    if (delta < 0)
      return;
    size_t len = strlen(user);
    defer_user_t *e = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL) {
      q->lost = true;
      return;
    }
    e->hash = h;
    memcpy(e->id, user, len + 1);
    *pp = e;
    q->nusers++;
  }
  defer_user_t *e = *pp;
  if (delta > 0) {
    e->n++;
  } else if (--e->n == 0) {
    *pp = e->next;
    free(e);
    q->nusers--;
  }
}

static void check_user(wr_amqp_t *a, const char *user, int unused) {
  (void)unused;
  defer_user_t **pp = defer_find(&a->deferred, user, wr_amqp_hash(user, strlen(user)));
  if (a->deferred.lost || (pp != NULL && *pp != NULL))
    a->deferred.hit = true;
}

/* Whether c must wait behind the deferred commands: it is an RPC command
 * itself (they keep their order), or a verdict about a user who has one
 * waiting (a mailbox item's requeue after its mailbox's close, a copy mailed
 * after its stale binding is dropped). Other verdicts go ahead. */
static bool must_wait(wr_amqp_t *a, wr_amqp_cmd_t *c) {
  if (a->deferred.n == 0)
    return false;
  if (c->kind != WR_CMD_VERDICT)
    return true;
  a->deferred.hit = false;
  for_users(a, c, check_user, 0);
  return a->deferred.hit;
}

static int defer_push(wr_amqp_t *a, wr_amqp_cmd_t *c) {
  wr_amqp_deferred_t *q = &a->deferred;
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 256;
    wr_amqp_cmd_t **items = malloc(cap * sizeof(*items));
    if (items == NULL)
      return -ENOMEM;
    for (size_t k = 0; k < q->n; k++)
      items[k] = q->items[(q->head + k) % q->cap];
    free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
  }
  q->items[(q->head + q->n++) % q->cap] = c;
  for_users(a, c, count_user, 1);
  return 0;
}

/* Verdicts and mailbox and binding commands, in the order the loop sent
 * them for each user: a mailbox's consumer is cancelled before the nacks
 * that give its user's unacked notifications back, so the broker does not
 * deliver them again to a user who has gone. Mailbox and binding commands
 * are blocking RPCs: at most WR_AMQP_RPC_BUDGET of them run per turn, so a
 * burst of users connecting never holds deliveries and acks back for long;
 * the others wait in a FIFO of their own (a->deferred), in order, with the
 * verdicts about their users behind them, while every other verdict goes
 * ahead. A finished RPC is progress for the watchdog. */
static int drain_verdicts(wr_amqp_t *a) {
  wr_amqp_deferred_t *q = &a->deferred;
  wr_amqp_cmd_t *c;
  int rc = 0, r;
  /* Disconnected or stopping, commands cost nothing or everything must go. */
  bool bounded = a->conn != NULL && !a->stopping;
  int budget = WR_AMQP_RPC_BUDGET;

  while (q->n > 0 && (!bounded || budget > 0)) {
    c = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    for_users(a, c, count_user, -1);
    if (c->kind != WR_CMD_VERDICT) {
      budget--;
      __atomic_fetch_add(&a->progress, 1, __ATOMIC_RELAXED);
    }
    if ((r = run_command(a, c)) < 0 && rc == 0)
      rc = r;
  }
  while ((c = a->cbs->next_command_cb(a->cbs->data)) != NULL) {
    bool rpc = c->kind != WR_CMD_VERDICT;
    if (bounded && (must_wait(a, c) || (rpc && budget == 0))) {
      if (defer_push(a, c) == 0)
        continue;
      /* No memory to keep it waiting: run it now, in order. */
    }
    if (rpc) {
      budget--;
      __atomic_fetch_add(&a->progress, 1, __ATOMIC_RELAXED);
    }
    if ((r = run_command(a, c)) < 0 && rc == 0)
      rc = r;
  }
  a->more_commands = q->n > 0;
  if (q->n == 0)
    q->lost = false;
  if (rc == 0)
    rc = acks_maybe_send(a, NULL);
  return rc;
}

static uint32_t hb_half_ms(const wr_amqp_t *a) {
  uint32_t hb = a->cfg->heartbeat_s;
  return hb == 0 ? 1000 : hb * 500;
}

/* While the sink is full nothing else is sent; a bare heartbeat frame keeps
 * the broker from declaring us dead. */
static int keepalive(wr_amqp_t *a) {
  int64_t now = wr_amqp_now_ms();
  if (a->cfg->heartbeat_s == 0 || now - a->last_keepalive_ms < hb_half_ms(a))
    return 0;
  a->last_keepalive_ms = now;
  amqp_frame_t hb;
  memset(&hb, 0, sizeof(hb));
  hb.frame_type = AMQP_FRAME_HEARTBEAT;
  hb.channel = 0;
  return amqp_send_frame(a->conn, &hb) == AMQP_STATUS_OK ? 0 : -ECONNRESET;
}

static int server_close(wr_amqp_t *a, const amqp_method_t *m);

/* One allocation per delivery: the delivery, its private part, a deep copy
 * of the headers, the body and the two property strings. (amqp_consume_message
 * would make about six: three copies of deliver fields we do not use, a 4 KiB
 * property pool, the body; they were most of this thread's malloc time.) */
typedef struct {
  wr_amqp_delivery_t d;
  wr_amqp_dpriv_t p;
} dblock_t;

/* The header copy starts right after the block. */
_Static_assert(sizeof(dblock_t) % _Alignof(amqp_table_entry_t) == 0 &&
                   sizeof(dblock_t) % _Alignof(amqp_field_value_t) == 0,
               "header tables need pointer alignment after dblock_t");

static char *put_str(char **at, amqp_bytes_t b) {
  char *s = *at;
  if (b.len > 0)
    memcpy(s, b.bytes, b.len);
  s[b.len] = '\0';
  *at += b.len + 1;
  return s;
}

/* The x-warren-* headers steer a notification (its target, its attempt, its
 * expiry): they count only on a copy warren made, never on an original. */
static int read_warren_headers(wr_amqp_t *a, wr_amqp_delivery_t *d, const amqp_basic_deliver_t *m,
                               const amqp_table_t *h) {
  d->trusted = wr_amqp_headers_trusted(h, m->exchange, a->cfg->queue);
  if (d->trusted)
    return wr_amqp_headers_parse(h, &d->attempt, &d->target_user, &d->expires_at_ms);
  if (wr_amqp_headers_has_warren(h)) {
    WR_AMQP_STAT_ADD(a, untrusted_headers, 1);
    wr_debug("amqp",
             "delivery %llu came through exchange \"%.*s\", not back from the retry ladder: its "
             "x-warren-* headers are ignored",
             (unsigned long long)m->delivery_tag, (int)m->exchange.len,
             (const char *)m->exchange.bytes);
  }
  return 0;
}

/* Builds the delivery from a content header; the body follows. A body over
 * amqp.max_body_bytes gets no room (d->body stays NULL): the loop rejects it
 * on its announced size, and buffering up to the broker's maximum message
 * size first would let one publish cost that much memory. Reads nothing from
 * the connection's pool after it returns. NULL when out of memory. */

static wr_amqp_delivery_t *delivery_build(wr_amqp_t *a, const amqp_basic_deliver_t *m,
                                          amqp_channel_t ch, const amqp_basic_properties_t *pr,
                                          size_t body_len) {
  bool has_ct = (pr->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) != 0;
  bool has_mid = (pr->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0;
  const amqp_table_t *h = (pr->_flags & AMQP_BASIC_HEADERS_FLAG) ? &pr->headers : NULL;
  bool keep_body = body_len <= a->cfg->max_body_bytes;
  size_t hsize = 0;
  bool keep_headers = h != NULL && wr_amqp_table_copy(h, NULL, NULL, 0, &hsize) == 0;
  if (!keep_headers)
    hsize = 0;
  size_t extra = hsize + (keep_body ? body_len : 0) + (has_ct ? pr->content_type.len + 1 : 0) +
                 (has_mid ? pr->message_id.len + 1 : 0);
  if (extra > SIZE_MAX - sizeof(dblock_t) - 1)
    return NULL;
  dblock_t *blk = malloc(sizeof(*blk) + extra + 1);
  if (blk == NULL)
    return NULL;
  memset(blk, 0, sizeof(*blk));
  wr_amqp_delivery_t *d = &blk->d;
  wr_amqp_dpriv_t *p = &blk->p;
  char *at = (char *)(blk + 1);

  d->priv = p;
  d->tag = m->delivery_tag;
  d->generation = a->generation;
  d->redelivered = m->redelivered != 0;
  d->consumed_at_ms = wr_amqp_wall_ms();
  d->consumed_ns = wr_amqp_now_ns();
  /* The headers go on to ladder copies whole, so they are kept. */
  if (keep_headers) {
    wr_amqp_table_copy(h, &p->props.headers, at, hsize, NULL);
    p->props._flags |= AMQP_BASIC_HEADERS_FLAG;
    at += hsize;
  } else if (h != NULL) {
    /* Nested deeper than WR_AMQP_TABLE_MAX_DEPTH: the delivery goes on, its
     * copies (if any) go without these headers and are counted then. */
    p->headers_lost = true;
  }
  d->body_len = body_len;
  if (keep_body) {
    d->body = (uint8_t *)at;
    at += body_len;
  }
  p->props._flags |= pr->_flags & (AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                                   AMQP_BASIC_TIMESTAMP_FLAG);
  if (has_ct) {
    d->content_type = put_str(&at, pr->content_type);
    p->props.content_type = (amqp_bytes_t){.len = pr->content_type.len, .bytes = d->content_type};
  }
  if (has_mid) {
    d->message_id = put_str(&at, pr->message_id);
    p->props.message_id = (amqp_bytes_t){.len = pr->message_id.len, .bytes = d->message_id};
  }
  if (pr->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
    p->props.timestamp = pr->timestamp;
    /* The loop counts in milliseconds: a timestamp that would overflow them
     * (after the year 292 million) is treated as absent. Copies keep it. */
    d->timestamp_s = pr->timestamp > (uint64_t)(INT64_MAX / 1000) ? 0 : (int64_t)pr->timestamp;
  }
  /* Mailbox deliveries are for their mailbox's owner, node-queue copies for
   * the user they name (set_source). */
  bool set_later = ch == WR_AMQP_CH_MAILBOX || wr_amqp_bytes_is(m->consumer_tag, WR_AMQP_CONSUMER_TAG_NEW) ||
                      wr_amqp_bytes_is(m->consumer_tag, WR_AMQP_CONSUMER_TAG_NODE);
  if (!set_later && read_warren_headers(a, d, m, h) < 0) {
    wr_amqp_delivery_free(d);
    return NULL;
  }
  return d;
}

static int on_frame(wr_amqp_t *a, const amqp_frame_t *f);

/* The next frame of a message in progress on channel ch. Frames of other
 * channels (publisher confirms on the publish channel) may come in between:
 * they are handled as they arrive. Returns 0, or a negative errno after
 * logging (the connection is then dropped). */
static int content_frame(wr_amqp_t *a, amqp_channel_t ch, uint8_t type, amqp_frame_t *f) {
  for (;;) {
    int st = amqp_simple_wait_frame(a->conn, f);
    if (st != AMQP_STATUS_OK) {
      wr_warn("amqp", "connection lost: %s", amqp_error_string2(st));
      return -ECONNRESET;
    }
    if (f->channel == ch)
      break;
    int rc = on_frame(a, f);
    if (rc < 0)
      return rc;
  }
  if (f->frame_type == type)
    return 0;
  if (f->frame_type == AMQP_FRAME_METHOD && (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                                             f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD))
    return server_close(a, &f->payload.method);
  wr_warn("amqp", "broker sent frame type %u inside a message on channel %u; reconnecting",
          (unsigned)f->frame_type, (unsigned)ch);
  return -EPROTO;
}

/* Where d came from, and for a mailbox or a Q.mailbox.new copy the one user
 * it is for: the mailbox's owner, or the user the copy names (whose mailbox
 * is then declared); for a node-queue copy, the user it names. Returns 0; 1
 * when a mailbox delivery's consumer is unknown (requeue it); 2 when a
 * Q.mailbox.new message names no user (dead-letter it); 3 when it is an
 * expired broadcast (ack it); or a negative errno when the connection
 * failed. */
static int set_source(wr_amqp_t *a, wr_amqp_delivery_t *d, const amqp_basic_deliver_t *m,
                      amqp_channel_t ch) {
  wr_amqp_dpriv_t *p = d->priv;
  const amqp_table_t *h = (p->props._flags & AMQP_BASIC_HEADERS_FLAG) ? &p->props.headers : NULL;
  char *owner;

  if (ch == WR_AMQP_CH_MAILBOX) {
    const char *user = wr_amqp_mbox_owner(a, m->consumer_tag, &d->backlog);
    if (user == NULL)
      return 1;
    owner = strdup(user);
    d->source = WR_SRC_MAILBOX;
    WR_AMQP_STAT_ADD(a, mailbox_items, 1);
  } else if (wr_amqp_bytes_is(m->consumer_tag, WR_AMQP_CONSUMER_TAG_NODE)) {
    /* Only warren's routers publish to Q.route and Q.broadcast: its headers
     * are its own (the same trust as the ladder: broker permissions are the
     * boundary, docs/cluster.md). A broadcast names no user. */
    d->source = WR_SRC_NODE;
    d->trusted = true;
    WR_AMQP_STAT_ADD(a, node_items, 1);
    int rc = wr_amqp_node_inspect(a, h, WR_SRC_NODE, NULL, &d->fan);
    if (rc != 0)
      return rc;
    return wr_amqp_headers_parse(h, &d->attempt, &d->target_user, &d->expires_at_ms);
  } else if (wr_amqp_bytes_is(m->consumer_tag, WR_AMQP_CONSUMER_TAG_NEW)) {
    if (wr_amqp_bytes_is(m->routing_key, WR_AMQP_BROADCAST_KEY)) {
      /* A broadcast copy that waited in a node queue past its TTL: a
       * broadcast goes to who is online when it is sent, never later. */
      WR_AMQP_STAT_ADD(a, broadcasts_expired, 1);
      wr_debug("amqp", "a broadcast copy expired in a node queue; dropped");
      return 3;
    }
    owner = wr_amqp_mbox_new_owner(h, m->routing_key);
    if (owner == NULL) {
      WR_AMQP_STAT_ADD(a, mailbox_new_rejected, 1);
      wr_warn("amqp",
              "a message in %s.mailbox.new (routing key %.*s) names no user; dead-lettering it",
              a->cfg->queue, (int)m->routing_key.len, (const char *)m->routing_key.bytes);
      return 2;
    }
    int rc = wr_amqp_mbox_create(a, owner, false);
    if (rc != 0) {
      /* No mailbox can be made for it: to Q.dead rather than round and
       * round through Q.mailbox.new. */
      if (rc > 0)
        wr_warn("amqp", "cannot make the mailbox of user %s; dead-lettering its copy", owner);
      free(owner);
      return rc < 0 ? rc : 2;
    }
    d->source = WR_SRC_MAILBOX_NEW;
  } else {
    return 0;
  }
  if (owner == NULL)
    return -ENOMEM;
  if (a->cfg->cluster_node_id != NULL) {
    bool fan;
    int rc = wr_amqp_node_inspect(a, h, d->source, owner, &fan);
    if (rc != 0) {
      free(owner);
      return rc;
    }
  }
  /* The mailbox (or the routing key) says whom it is for, whatever headers
   * it carries; its attempt and expiry headers are warren's own or harmless
   * (they only shorten its own life). */
  free(d->target_user);
  d->target_user = owner;
  if (!d->trusted) {
    char *ignored = NULL;
    wr_amqp_headers_parse(h, &d->attempt, &ignored, &d->expires_at_ms);
    free(ignored);
    d->trusted = true;
  }
  return 0;
}

/* A basic.deliver method frame: reads the content header and body frames
 * that follow it on its channel and hands the delivery to the sink. */
static int on_delivery(wr_amqp_t *a, const amqp_frame_t *mf) {
  amqp_basic_deliver_t m = *(const amqp_basic_deliver_t *)mf->payload.method.decoded;
  amqp_channel_t ch = mf->channel;
  amqp_frame_t f;
  int rc;

  if ((rc = content_frame(a, ch, AMQP_FRAME_HEADER, &f)) < 0)
    return rc;
  uint64_t body_size = f.payload.properties.body_size;
  if (body_size > SIZE_MAX / 2) {
    wr_warn("amqp", "delivery %llu announces %llu body bytes; reconnecting",
            (unsigned long long)m.delivery_tag, (unsigned long long)body_size);
    return -EPROTO;
  }
  bool ours = ch == WR_AMQP_CH_CONSUME || (ch == WR_AMQP_CH_MAILBOX && a->mbox_channel_open);
  wr_amqp_delivery_t *d = NULL;
  if (ours && !a->stopping)
    d = delivery_build(a, &m, ch, f.payload.properties.decoded, (size_t)body_size);
  /* The body frames are read (and dropped when there is no delivery to put
   * them in) so the next frame read is the next method. */
  size_t got = 0;
  while (got < body_size) {
    if ((rc = content_frame(a, ch, AMQP_FRAME_BODY, &f)) < 0) {
      wr_amqp_delivery_free(d);
      return rc;
    }
    amqp_bytes_t frag = f.payload.body_fragment;
    if (frag.len > body_size - got) {
      wr_warn("amqp", "delivery %llu: body longer than announced; reconnecting",
              (unsigned long long)m.delivery_tag);
      wr_amqp_delivery_free(d);
      return -EPROTO;
    }
    if (d != NULL && d->body != NULL && frag.len > 0)
      memcpy(d->body + got, frag.bytes, frag.len);
    got += frag.len;
    /* Every frame read takes a page of the channel's pool, kept for reuse
     * until the pool is recycled: without this a body of N bytes would pin N
     * bytes of pages, buffered or not. Nothing read before is still needed
     * (delivery_build copied it out). */
    amqp_maybe_release_buffers_on_channel(a->conn, ch);
  }

  if (!ours)
    return 0;
  WR_AMQP_STAT_ADD(a, consumed, 1);
  if (a->stopping) {
    /* Nobody will decide on it any more; closing the channel requeues it. */
    return 0;
  }
  uint64_t tag = m.delivery_tag;
  if (d == NULL) {
    wr_warn("amqp", "out of memory for delivery %llu; requeueing it", (unsigned long long)tag);
    return amqp_basic_nack(a->conn, ch, tag, 0, 1) == AMQP_STATUS_OK ? 0 : -ECONNRESET;
  }
  if ((rc = set_source(a, d, &m, ch)) != 0) {
    /* No user to deliver it to: back to the broker (requeue = false
     * dead-letters a Q.mailbox.new message to Q.dead), or the connection
     * failed. */
    bool requeue = rc == 1;
    wr_amqp_delivery_free(d);
    if (rc < 0)
      return rc;
    int st = rc == 3 ? amqp_basic_ack(a->conn, ch, tag, 0)
                     : amqp_basic_nack(a->conn, ch, tag, 0, requeue);
    if (st != AMQP_STATUS_OK)
      return -ECONNRESET;
    /* Settled on the wire: channel 1's coalesced acks may cover it. */
    if (ch == WR_AMQP_CH_CONSUME)
      (void)wr_amqp_acks_mark(&a->acks, tag, false);
    return 0;
  }
  if (d->body == NULL && d->body_len > 0) {
    WR_AMQP_STAT_ADD(a, bodies_skipped, 1);
    wr_debug("amqp", "delivery %llu: %zu body bytes, over amqp.max_body_bytes (%u): not buffered",
             (unsigned long long)tag, d->body_len, a->cfg->max_body_bytes);
  }
  WR_AMQP_STAT_ADD(a, unacked, 1);
  for (;;) {
    rc = a->cbs->deliver_cb(d, a->cbs->data);
    if (rc == 0)
      return 0;
    if (rc != -ENOSPC || stop_requested(a)) {
      wr_warn("amqp", "delivery %llu refused by the sink (%s); requeueing it",
              (unsigned long long)tag, strerror(-rc));
      d->verdict = WR_VERDICT_REQUEUE;
      return wr_amqp_verdict_run(a, d);
    }
    /* The ring is full (it should not be: prefetch ≤ capacity); wait for the
     * loop thread, which never blocks, to make room. */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
    nanosleep(&ts, NULL);
    if (keepalive(a) < 0)
      return -ECONNRESET;
  }
}

static int server_close(wr_amqp_t *a, const amqp_method_t *m) {
  char err[512];
  amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = *m};
  int rc = wr_amqp_reply_err(r, "broker closed", err, sizeof(err));
  wr_warn("amqp", "%s", err);
  if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_ok_t ok = {0};
    amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  }
  return rc < 0 ? rc : -ECONNRESET;
}

/* Consumes Q, in cluster mode this node's queue, and, with mailboxes on,
 * Q.mailbox.new (copies for users who have no mailbox yet), all on channel
 * 1. */
static int consume_start(wr_amqp_t *a, char *err, size_t errlen) {
  char what[WR_AMQP_NAME_MAX + 32], fresh[WR_AMQP_NAME_MAX];
  int rc;
  if (!a->consuming) {
    amqp_basic_consume(a->conn, WR_AMQP_CH_CONSUME, amqp_cstring_bytes(a->cfg->queue),
                       amqp_cstring_bytes(WR_AMQP_CONSUMER_TAG), 0, 0, 0, amqp_empty_table);
    snprintf(what, sizeof(what), "cannot consume from %s", a->cfg->queue);
    if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), what, err, errlen)) < 0)
      return rc;
    a->consuming = true;
  }
  if (a->cfg->cluster_node_id != NULL && !a->node_consuming) {
    if (wr_amqp_node_queue_name(a->cfg, fresh, sizeof(fresh)) < 0)
      return -ENAMETOOLONG;
    amqp_basic_consume(a->conn, WR_AMQP_CH_CONSUME, amqp_cstring_bytes(fresh),
                       amqp_cstring_bytes(WR_AMQP_CONSUMER_TAG_NODE), 0, 0, 0, amqp_empty_table);
    snprintf(what, sizeof(what), "cannot consume from %s", fresh);
    if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), what, err, errlen)) < 0)
      return rc;
    a->node_consuming = true;
  }
  if (!a->cfg->mailbox_enabled || a->new_consuming)
    return 0;
  if (wr_amqp_name_fmt(fresh, sizeof(fresh), a->cfg->queue, ".mailbox.new") < 0)
    return -ENAMETOOLONG;
  amqp_basic_consume(a->conn, WR_AMQP_CH_CONSUME, amqp_cstring_bytes(fresh),
                     amqp_cstring_bytes(WR_AMQP_CONSUMER_TAG_NEW), 0, 0, 0, amqp_empty_table);
  snprintf(what, sizeof(what), "cannot consume from %s", fresh);
  if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), what, err, errlen)) < 0)
    return rc;
  a->new_consuming = true;
  return 0;
}

/* The broker cancelled our consumer: the queue was deleted (or, for quorum
 * queues, lost its leader). Put the topology back and consume again on the
 * same channel, so unsettled tags stay valid. */
static int on_broker_cancel(wr_amqp_t *a, amqp_bytes_t tag) {
  char err[512];
  bool fresh = wr_amqp_bytes_is(tag, WR_AMQP_CONSUMER_TAG_NEW), node = wr_amqp_bytes_is(tag, WR_AMQP_CONSUMER_TAG_NODE);
  wr_error("amqp",
           "the broker cancelled the consumer on %s%s%s (queue deleted?); redeclaring the "
           "topology and consuming again",
           a->cfg->queue, fresh ? ".mailbox.new" : node ? ".node." : "",
           node ? a->cfg->cluster_node_id : "");
  if (fresh || node) {
    if (fresh)
      a->new_consuming = false;
    else
      a->node_consuming = false;
    int rc = wr_amqp_topology_declare(a->conn, WR_AMQP_CH_CONSUME, a->cfg, err, sizeof(err));
    if (rc == 0 && !a->cancelled)
      rc = consume_start(a, err, sizeof(err));
    if (rc < 0)
      wr_error("amqp", "%s", err);
    return rc;
  }
  a->consuming = false;
  a->cbs->state_cb(false, false, a->generation, a->cbs->data);
  WR_AMQP_STAT_SET(a, connected, 0);
  int rc = wr_amqp_topology_declare(a->conn, WR_AMQP_CH_CONSUME, a->cfg, err, sizeof(err));
  if (rc == 0 && !a->cancelled)
    rc = consume_start(a, err, sizeof(err));
  if (rc < 0) {
    wr_error("amqp", "%s", err);
    return rc;
  }
  if (a->consuming) {
    WR_AMQP_STAT_SET(a, connected, 1);
    a->cbs->state_cb(true, false, a->generation, a->cbs->data);
  }
  return 0;
}

static int on_frame(wr_amqp_t *a, const amqp_frame_t *f) {
  if (f->frame_type != AMQP_FRAME_METHOD)
    return 0;
  const amqp_method_t *m = &f->payload.method;
  switch (m->id) {
  case AMQP_BASIC_ACK_METHOD: {
    const amqp_basic_ack_t *ack = m->decoded;
    if (f->channel != WR_AMQP_CH_PUBLISH)
      return 0;
    return wr_amqp_confirm_settle(a, ack->delivery_tag, ack->multiple != 0, true);
  }
  case AMQP_BASIC_NACK_METHOD: {
    const amqp_basic_nack_t *nack = m->decoded;
    if (f->channel != WR_AMQP_CH_PUBLISH)
      return 0;
    return wr_amqp_confirm_settle(a, nack->delivery_tag, nack->multiple != 0, false);
  }
  case AMQP_BASIC_RETURN_METHOD:
    return wr_amqp_confirm_return(a, m->decoded);
  case AMQP_BASIC_CANCEL_METHOD: {
    const amqp_basic_cancel_t *c = m->decoded;
    if (f->channel == WR_AMQP_CH_MAILBOX) {
      wr_amqp_mbox_cancelled(a, c->consumer_tag);
      return 0;
    }
    if (f->channel != WR_AMQP_CH_CONSUME)
      return 0;
    return on_broker_cancel(a, c->consumer_tag);
  }
  case AMQP_CHANNEL_CLOSE_METHOD:
  case AMQP_CONNECTION_CLOSE_METHOD:
    return server_close(a, m);
  default:
    return 0;
  }
}

/* Reads what the connection has buffered or the socket holds, without
 * waiting. Each call into rabbitmq-c also sends a heartbeat when one is due
 * and notices a broker that has been silent too long. */
static int drain_frames(wr_amqp_t *a) {
  for (int i = 0; i < DRAIN_BATCH; i++) {
    amqp_frame_t f;
    struct timeval zero = {0, 0};
    /* Once what the last read brought is used up, go back to poll(): another
     * call would cost a recv() that finds nothing and a poll() with a zero
     * timeout inside rabbitmq-c. The first call of a turn always goes in, for
     * the heartbeats it sends and checks. */
    if (i > 0 && !amqp_data_in_buffer(a->conn) && !amqp_frames_enqueued(a->conn))
      return 0;
    amqp_maybe_release_buffers(a->conn);
    int st = amqp_simple_wait_frame_noblock(a->conn, &f, &zero);
    if (st == AMQP_STATUS_TIMEOUT)
      return 0;
    if (st != AMQP_STATUS_OK) {
      wr_warn("amqp", "connection lost: %s", amqp_error_string2(st));
      return -ECONNRESET;
    }
    int rc = f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_DELIVER_METHOD
                 ? on_delivery(a, &f)
                 : on_frame(a, &f);
    if (rc < 0)
      return rc;
  }
  return 0;
}

static int poll_queues(wr_amqp_t *a) {
  wr_amqp_queue_stat_t st[WR_AMQP_POLLED_MAX];
  size_t n = 0;
  int64_t now = wr_amqp_now_ms();
  int rc;

  a->more_steps = false;
  if ((rc = wr_amqp_mbox_index_step(a)) < 0 || (rc = wr_amqp_mbox_janitor(a)) < 0 ||
      (rc = wr_amqp_node_unbind_due(a, &a->more_steps)) < 0 ||
      (rc = wr_amqp_node_resume_step(a)) < 0 || (rc = wr_amqp_mbox_resume_step(a)) < 0)
    return rc;
  if (a->binds.resuming || a->mboxes.resuming)
    a->more_steps = true;
  if (a->cbs->queue_stats_cb == NULL || now < a->next_poll_ms)
    return 0;
  a->next_poll_ms = now + (a->cfg->queue_poll_ms ? a->cfg->queue_poll_ms : 5000);
  rc = wr_amqp_topology_poll(a, st, sizeof(st) / sizeof(st[0]), &n);
  if (rc < 0)
    return rc;
  a->cbs->queue_stats_cb(st, n, a->cbs->data);
  return 0;
}

static void do_cancel(wr_amqp_t *a) {
  char err[256];
  a->cancelled = true;
  if (a->conn == NULL)
    return;
  /* Mailboxes: one channel close gives every unacked mailbox notification
   * back at once (however many users are online); their verdicts, if they
   * come, are dropped as stale (publish.c). */
  if (a->mbox_channel_open) {
    amqp_channel_close(a->conn, WR_AMQP_CH_MAILBOX, AMQP_REPLY_SUCCESS);
    wr_amqp_mbox_session_closed(a);
  }
  if (a->new_consuming) {
    amqp_basic_cancel(a->conn, WR_AMQP_CH_CONSUME, amqp_cstring_bytes(WR_AMQP_CONSUMER_TAG_NEW));
    if (wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "basic.cancel", err, sizeof(err)) < 0)
      wr_warn("amqp", "%s", err);
    a->new_consuming = false;
  }
  if (a->node_consuming) {
    amqp_basic_cancel(a->conn, WR_AMQP_CH_CONSUME, amqp_cstring_bytes(WR_AMQP_CONSUMER_TAG_NODE));
    if (wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "basic.cancel", err, sizeof(err)) < 0)
      wr_warn("amqp", "%s", err);
    a->node_consuming = false;
  }
  if (!a->consuming)
    return;
  /* An RPC: deliveries already on the wire are queued by rabbitmq-c and
   * still reach the sink afterwards. */
  amqp_basic_cancel(a->conn, WR_AMQP_CH_CONSUME, amqp_cstring_bytes(WR_AMQP_CONSUMER_TAG));
  if (wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "basic.cancel", err, sizeof(err)) < 0)
    wr_warn("amqp", "%s", err);
  a->consuming = false;
  WR_AMQP_STAT_SET(a, connected, 0);
  a->cbs->state_cb(false, false, a->generation, a->cbs->data);
}

static int session_open(wr_amqp_t *a, char *err, size_t errlen) {
  int rc = wr_amqp_conn_open(a->cfg, &a->conn, err, errlen);
  if (rc < 0)
    return rc;
  wr_amqp_watch_fd(a, amqp_get_sockfd(a->conn));
  a->generation++;
  a->pub_seq = 0;
  wr_amqp_acks_reset(&a->acks);
  a->poll_channel_open = false;
  a->consuming = false;
  a->new_consuming = false;
  a->node_consuming = false;
  a->next_poll_ms = 0;
  a->last_keepalive_ms = wr_amqp_now_ms();
  if ((rc = wr_amqp_channel_open(a->conn, WR_AMQP_CH_CONSUME, err, errlen)) < 0 ||
      (rc = wr_amqp_topology_declare(a->conn, WR_AMQP_CH_CONSUME, a->cfg, err, errlen)) < 0)
    return rc;
  uint16_t prefetch = a->cfg->prefetch > 65535 ? 65535 : (uint16_t)a->cfg->prefetch;
  amqp_basic_qos(a->conn, WR_AMQP_CH_CONSUME, 0, prefetch, 0);
  if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "basic.qos", err, errlen)) < 0)
    return rc;
  if ((rc = wr_amqp_channel_open(a->conn, WR_AMQP_CH_PUBLISH, err, errlen)) < 0)
    return rc;
  amqp_confirm_select(a->conn, WR_AMQP_CH_PUBLISH);
  if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "confirm.select", err, errlen)) < 0)
    return rc;
  /* The online users are bound again and their mailboxes consumed again in
   * steps once deliveries flow (poll_queues). */
  if (a->cfg->cluster_node_id != NULL)
    wr_amqp_node_session_open(a);
  if (a->cfg->mailbox_enabled && !a->cancelled &&
      (rc = wr_amqp_mbox_session_open(a, err, errlen)) < 0)
    return rc;
  if (!a->cancelled && (rc = consume_start(a, err, errlen)) < 0)
    return rc;
  return 0;
}

static void session_close(wr_amqp_t *a, bool graceful) {
  wr_amqp_confirm_drop_all(a);
  /* A graceful close is a send too: stay watched until it returns. */
  if (graceful && a->conn != NULL)
    amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
  wr_amqp_watch_fd(a, -1);
  wr_amqp_conn_close(a->conn, false);
  a->conn = NULL;
  a->consuming = false;
  a->new_consuming = false;
  a->node_consuming = false;
  wr_amqp_mbox_session_closed(a);
  WR_AMQP_STAT_SET(a, connected, 0);
  WR_AMQP_STAT_SET(a, unacked, 0);
  a->cbs->state_cb(false, true, a->generation, a->cbs->data);
}

/* Runs one connection until it fails (negative errno) or stop completes (0). */
static int session_run(wr_amqp_t *a) {
  int64_t stop_deadline = 0;

  for (;;) {
    int rc;
    __atomic_fetch_add(&a->progress, 1, __ATOMIC_RELAXED);
    if (stop_requested(a) && !a->stopping) {
      a->stopping = true;
      stop_deadline = wr_amqp_now_ms() + STOP_CONFIRM_MS;
      if (a->consuming)
        do_cancel(a);
    } else if (!a->cancelled && __atomic_load_n(&a->cancel_req, __ATOMIC_ACQUIRE)) {
      do_cancel(a);
    }
    if ((rc = drain_verdicts(a)) < 0)
      return rc;
    if (a->stopping) {
      if (a->n_pending == 0)
        return 0;
      if (wr_amqp_now_ms() >= stop_deadline) {
        wr_warn("amqp",
                "stopping with %zu publish(es) unconfirmed; their originals will be "
                "redelivered",
                a->n_pending);
        return 0;
      }
    }
    if ((rc = drain_frames(a)) < 0)
      return rc;
    if (!a->stopping && (rc = poll_queues(a)) < 0)
      return rc;

    int64_t now = wr_amqp_now_ms();
    int64_t timeout = hb_half_ms(a);
    if (a->cbs->queue_stats_cb != NULL && a->next_poll_ms - now < timeout)
      timeout = a->next_poll_ms - now;
    if (a->stopping && timeout > 50)
      timeout = 50;
    /* Acks marked by verdicts and by confirms that drain_frames read. */
    if ((rc = acks_maybe_send(a, &timeout)) < 0)
      return rc;
    /* Data rabbitmq-c has already read (or frames it queued during an RPC)
     * will never wake poll(). */
    if (amqp_frames_enqueued(a->conn) || amqp_data_in_buffer(a->conn))
      timeout = 0;
    /* The mailbox index is read in steps, between deliveries; so are
     * commands over one turn's RPC budget, unbinds due, and the re-binding
     * and re-consuming after a reconnect. */
    if ((!a->index_done && a->index_left > 0 && a->mbox_channel_open) || a->more_commands ||
        a->more_steps)
      timeout = 0;
    if (timeout < 0)
      timeout = 0;
    struct pollfd pfd[2] = {{.fd = amqp_get_sockfd(a->conn), .events = POLLIN},
                            {.fd = a->efd, .events = POLLIN}};
    if (poll(pfd, 2, (int)timeout) < 0 && errno != EINTR) {
      wr_error("amqp", "poll: %s", strerror(errno));
      return -errno;
    }
    if (pfd[1].revents & POLLIN)
      efd_drain(a);
  }
}

/* Sleeps until deadline or stop, freeing (as stale) any verdict that comes
 * back meanwhile: the connection they belong to is gone. */
static void backoff_wait(wr_amqp_t *a, uint32_t ms) {
  int64_t deadline = wr_amqp_now_ms() + ms;
  for (;;) {
    drain_verdicts(a);
    int64_t left = deadline - wr_amqp_now_ms();
    if (left <= 0 || stop_requested(a))
      return;
    struct pollfd pfd = {.fd = a->efd, .events = POLLIN};
    if (poll(&pfd, 1, (int)left) > 0)
      efd_drain(a);
  }
}

void *wr_amqp_thread_main(void *arg) {
  wr_amqp_t *a = arg;
  unsigned failures = 0;
  uint32_t seed = (uint32_t)wr_amqp_now_ms() ^ (uint32_t)(uintptr_t)a;
  char err[512];

  a->n_delays = wr_amqp_delays_distinct(a->cfg, a->delays);
  while (!stop_requested(a)) {
    int rc = session_open(a, err, sizeof(err));
    if (rc == 0) {
      if (a->generation > 1)
        WR_AMQP_STAT_ADD(a, reconnects, 1);
      wr_info("amqp", "connected (generation %llu), consuming %s with prefetch %u",
              (unsigned long long)a->generation, a->cfg->queue, a->cfg->prefetch);
      failures = 0;
      if (a->consuming) {
        WR_AMQP_STAT_SET(a, connected, 1);
        a->cbs->state_cb(true, false, a->generation, a->cbs->data);
      }
      rc = session_run(a);
      session_close(a, rc == 0);
      if (rc == 0)
        break;
      wr_warn("amqp", "disconnected from the broker (generation %llu): %s; reconnecting",
              (unsigned long long)a->generation, strerror(-rc));
    } else {
      wr_warn("amqp", "%s", err);
      if (a->conn != NULL)
        session_close(a, false);
    }
    if (stop_requested(a))
      break;
    seed = seed * 1103515245u + 12345u;
    uint32_t ms = wr_amqp_backoff_ms(failures < 20 ? failures : 20, seed);
    failures++;
    wr_info("amqp", "reconnecting in %u ms", ms);
    backoff_wait(a, ms);
  }
  /* Verdicts still waiting belong to a connection that is gone. */
  drain_verdicts(a);
  return NULL;
}
