/* Verdicts: acks and nacks of originals, ladder/park copies published with
 * confirms on channel 2, and the bookkeeping that acks an original only once
 * every copy of it is confirmed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/log.h"
#include "amqp/amqp_int.h"

void wr_amqp_delivery_drop_pubs(wr_amqp_delivery_t *d) {
  for (size_t i = 0; i < d->n_pubs; i++) {
    free(d->pubs[i].user);
    free(d->pubs[i].id);
  }
  free(d->pubs);
  d->pubs = NULL;
  d->n_pubs = 0;
}

void wr_amqp_delivery_free(wr_amqp_delivery_t *d) {
  if (d == NULL)
    return;
  wr_amqp_dpriv_t *p = d->priv;
  wr_amqp_delivery_drop_pubs(d);
  free(d->target_user);
  /* Read from the broker, one block holds d, p, the headers, the body and
   * the strings; built by hand (tests), each part is its own allocation. */
  if (p == NULL) {
    free(d->body);
    free(d->content_type);
    free(d->message_id);
  }
  free(d);
}

static int send_status(int st) {
  return st == AMQP_STATUS_OK ? 0 : -ECONNRESET;
}

void wr_amqp_cmd_free(wr_amqp_cmd_t *c) {
  if (c == NULL)
    return;
  if (c->kind == WR_CMD_VERDICT)
    wr_amqp_delivery_free((wr_amqp_delivery_t *)c);
  else
    free(c);
}

/* A mailbox delivery on channel 4: acks and nacks go at once, one each (a
 * user's replay is a few hundred at most, and they are spread over many
 * consumers, so the coalescing of channel 1 would buy little). */
static int settle_mailbox(wr_amqp_t *a, wr_amqp_delivery_t *d, wr_verdict_kind_t how) {
  uint64_t tag = d->tag;
  int st;
  if (how == WR_VERDICT_ACK)
    st = amqp_basic_ack(a->conn, WR_AMQP_CH_MAILBOX, tag, 0);
  else
    /* Dead: its mailbox dead-letters it to Q.parked (x-death reason
     * "rejected"). Requeue: it waits in the mailbox, in its place. */
    st = amqp_basic_nack(a->conn, WR_AMQP_CH_MAILBOX, tag, 0, how == WR_VERDICT_DEAD ? 0 : 1);
  if (st == AMQP_STATUS_OK) {
    if (how == WR_VERDICT_ACK) {
      WR_AMQP_STAT_ADD(a, acked, 1);
      WR_AMQP_STAT_ADD(a, ack_frames, 1);
    } else if (how == WR_VERDICT_DEAD) {
      WR_AMQP_STAT_ADD(a, dead_lettered, 1);
    } else {
      WR_AMQP_STAT_ADD(a, requeued, 1);
    }
  }
  WR_AMQP_STAT_SUB(a, unacked, 1);
  wr_amqp_delivery_free(d);
  if (st != AMQP_STATUS_OK)
    wr_warn("amqp", "cannot settle mailbox delivery %llu: %s", (unsigned long long)tag,
            amqp_error_string2(st));
  return send_status(st);
}

/* Settles the original on its channel and frees it. */
static int settle_original(wr_amqp_t *a, wr_amqp_delivery_t *d, wr_verdict_kind_t how) {
  uint64_t tag = d->tag;
  int st;
  if (d->source == WR_SRC_MAILBOX)
    return settle_mailbox(a, d, how);
  switch (how) {
  case WR_VERDICT_ACK:
    /* Sent by the next wr_amqp_acks_send(), coalesced with its neighbours. */
    if (wr_amqp_acks_mark(&a->acks, d->tag, true) == 0) {
      st = AMQP_STATUS_OK;
      break;
    }
    st = amqp_basic_ack(a->conn, WR_AMQP_CH_CONSUME, d->tag, 0);
    if (st == AMQP_STATUS_OK) {
      WR_AMQP_STAT_ADD(a, acked, 1);
      WR_AMQP_STAT_ADD(a, ack_frames, 1);
    }
    break;
  case WR_VERDICT_DEAD:
    st = amqp_basic_nack(a->conn, WR_AMQP_CH_CONSUME, d->tag, 0, 0);
    if (st == AMQP_STATUS_OK)
      WR_AMQP_STAT_ADD(a, dead_lettered, 1);
    break;
  default:
    st = amqp_basic_nack(a->conn, WR_AMQP_CH_CONSUME, d->tag, 0, 1);
    if (st == AMQP_STATUS_OK)
      WR_AMQP_STAT_ADD(a, requeued, 1);
    break;
  }
  if (how != WR_VERDICT_ACK && st == AMQP_STATUS_OK)
    (void)wr_amqp_acks_mark(&a->acks, tag, false); /* out of memory: the tag just stays open */
  WR_AMQP_STAT_SUB(a, unacked, 1);
  wr_amqp_delivery_free(d);
  if (st != AMQP_STATUS_OK)
    wr_warn("amqp", "cannot settle delivery %llu: %s", (unsigned long long)tag,
            amqp_error_string2(st));
  return send_status(st);
}

static int send_ack_cb(uint64_t tag, bool multiple, size_t count, void *data) {
  wr_amqp_t *a = data;
  int st = amqp_basic_ack(a->conn, WR_AMQP_CH_CONSUME, tag, multiple ? 1 : 0);
  if (st != AMQP_STATUS_OK) {
    wr_warn("amqp", "cannot ack delivery %llu%s: %s", (unsigned long long)tag,
            multiple ? " and those before it" : "", amqp_error_string2(st));
    return -ECONNRESET;
  }
  WR_AMQP_STAT_ADD(a, acked, count);
  WR_AMQP_STAT_ADD(a, ack_frames, 1);
  return 0;
}

int wr_amqp_acks_send(wr_amqp_t *a) {
  if (a->conn == NULL)
    return 0;
  return wr_amqp_acks_flush(&a->acks, send_ack_cb, a);
}

static int pending_push(wr_amqp_t *a, uint64_t seq, wr_amqp_delivery_t *d, size_t pub,
                        bool no_mid) {
  if (a->n_pending == a->cap_pending) {
    size_t cap = a->cap_pending ? a->cap_pending * 2 : 64;
    wr_amqp_pending_t *p = realloc(a->pending, cap * sizeof(*p));
    if (p == NULL)
      return -ENOMEM;
    a->pending = p;
    a->cap_pending = cap;
  }
  a->pending[a->n_pending++] =
      (wr_amqp_pending_t){.seq = seq, .d = d, .pub = pub, .no_message_id = no_mid};
  return 0;
}

/* Settles an original whose copies have all been sent and answered: a copy
 * the broker refused or lost sends it back to Q (it comes again and is tried
 * again); one that could not be built at all dead-letters it; else ack. */
static int settle_copied(wr_amqp_t *a, wr_amqp_delivery_t *d) {
  wr_amqp_dpriv_t *p = d->priv;
  if (p->failed)
    return settle_original(a, d, WR_VERDICT_REQUEUE);
  if (p->refused)
    return settle_original(a, d, WR_VERDICT_DEAD);
  return settle_original(a, d, WR_VERDICT_ACK);
}

/* Publishes copy i of d. Returns 0 when it was sent (*no_mid: without
 * message_id), -ENOMEM or -EMSGSIZE when nothing was sent for it (the
 * message's outcome), -ECONNRESET when the connection failed. */
static int publish_copy(wr_amqp_t *a, wr_amqp_delivery_t *d, size_t i, bool *no_mid) {
  wr_amqp_dpriv_t *p = d->priv;
  const wr_amqp_pub_t *pub = &d->pubs[i];
  const char *id = pub->id != NULL ? pub->id : d->message_id ? d->message_id : "(no id)";
  char exchange[WR_AMQP_NAME_MAX], key[WR_AMQP_NAME_MAX];
  wr_amqp_copy_t c;
  int rc;

  if (pub->kind == WR_PUB_RETRY) {
    rc = wr_amqp_name_fmt(exchange, sizeof(exchange), a->cfg->queue, ".retry");
    snprintf(key, sizeof(key), "%u", pub->delay_ms);
  } else if (pub->kind == WR_PUB_MAILBOX) {
    rc = wr_amqp_name_fmt(exchange, sizeof(exchange), a->cfg->queue, ".mailbox");
    if (rc == 0 && (pub->user == NULL || wr_amqp_user_key(pub->user, key, sizeof(key)) < 0))
      rc = -EINVAL;
    /* The first copy for a user makes their mailbox first, so the copies
     * keep their order (one through Q.mailbox.new would arrive after those
     * published behind it) and cost no detour. A failure here is left to
     * the alternate exchange. */
    if (rc == 0) {
      if (wr_amqp_mbox_create(a, pub->user, true) < 0)
        return -ECONNRESET;
    }
  } else if (pub->kind == WR_PUB_ROUTE) {
    d->pubs[i].fan_from = a->cfg->cluster_node_id;
    rc = wr_amqp_name_fmt(exchange, sizeof(exchange), a->cfg->queue, ".route");
    if (rc == 0 && (pub->user == NULL || wr_amqp_user_key(pub->user, key, sizeof(key)) < 0))
      rc = -EINVAL;
    /* A copy no node is bound for goes on to Q.mailbox (the alternate
     * exchange) under the same key, and to Q.mailbox.new when the user has
     * no mailbox yet. The router does not make the mailbox first, as a
     * mailbox copy does: it cannot know whether the user is connected
     * somewhere, and most are (docs/cluster.md, "Ordering"). */
  } else if (pub->kind == WR_PUB_BROADCAST) {
    rc = wr_amqp_name_fmt(exchange, sizeof(exchange), a->cfg->queue, ".broadcast");
    snprintf(key, sizeof(key), "%s", WR_AMQP_BROADCAST_KEY);
  } else {
    exchange[0] = '\0';
    rc = wr_amqp_name_fmt(key, sizeof(key), a->cfg->queue, ".parked");
  }
  if (d->body == NULL && d->body_len > 0) {
    /* The body was never buffered (over amqp.max_body_bytes): there is
     * nothing to copy. The loop rejects such deliveries before this. */
    rc = -EMSGSIZE;
  } else if (rc == 0) {
    if (a->scratch == NULL && (a->scratch = malloc(WR_AMQP_FRAME_MAX)) == NULL)
      return -ENOMEM;
    int frame_max = amqp_get_frame_max(a->conn);
    size_t props_max = frame_max > WR_AMQP_CONTENT_OVERHEAD && frame_max <= WR_AMQP_FRAME_MAX
                           ? (size_t)frame_max - WR_AMQP_CONTENT_OVERHEAD
                           : WR_AMQP_FRAME_MAX - WR_AMQP_CONTENT_OVERHEAD;
    /* Ladder, mailbox and routed copies can come back dead-lettered
     * (x-death added): leave room for it. */
    if (pub->kind != WR_PUB_PARK)
      props_max =
          props_max > WR_AMQP_DEADLETTER_RESERVE ? props_max - WR_AMQP_DEADLETTER_RESERVE : 0;
    rc = wr_amqp_copy_build(&c, &p->props, pub, exchange, key, wr_amqp_wall_ms(), a->scratch,
                            props_max);
  }
  if (rc == -ENOMEM)
    return rc;
  if (rc < 0) {
    WR_AMQP_STAT_ADD(a, copies_refused, 1);
    wr_warn("amqp",
            "cannot build a copy of delivery %llu (id %.64s%s) for user %s: %s; dead-lettering "
            "the original to %s.dead",
            (unsigned long long)d->tag, id, strlen(id) > 64 ? "…" : "",
            pub->user ? pub->user : "(any)",
            d->body == NULL && d->body_len > 0 ? "its body was not kept"
            : rc == -ENAMETOOLONG              ? "an exchange or routing key over 255 bytes"
                                               : "even warren's own properties do not fit a frame",
            a->cfg->queue);
    return -EMSGSIZE;
  }
  if (c.dropped & WR_COPY_NO_MESSAGE_ID) {
    WR_AMQP_STAT_ADD(a, copies_without_message_id, 1);
    /* Every trip round the ladder makes another copy: say it once. */
    wr_log(d->trusted ? WR_LOG_DEBUG : WR_LOG_INFO, "amqp",
           "delivery %llu (id %.64s…): its id (%zu bytes) is longer than an AMQP message_id "
           "(255); its copies go without one and keep the id in their body",
           (unsigned long long)d->tag, id, strlen(id));
  }
  if ((c.dropped & WR_COPY_NO_HEADERS) ||
      (p->headers_lost && !(p->props._flags & AMQP_BASIC_HEADERS_FLAG))) {
    WR_AMQP_STAT_ADD(a, copies_without_headers, 1);
    wr_warn("amqp",
            "delivery %llu (id %.64s%s): its headers %s; the copy goes with warren's x-warren-* "
            "headers only",
            (unsigned long long)d->tag, id, strlen(id) > 64 ? "…" : "",
            p->headers_lost ? "are nested too deep to keep"
                            : "cannot be encoded or do not fit a frame with warren's");
  }
  *no_mid =
      (c.dropped & WR_COPY_NO_MESSAGE_ID) != 0 || !(c.props._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
  /* mandatory: a copy that no queue takes (a ladder queue deleted by hand)
   * comes back as basic.return instead of vanishing. Everything it encodes
   * was checked above, so a failure here is the connection's. */
  /* Not a broadcast: no node bound is no one online, not a failure. */
  int st = amqp_basic_publish(a->conn, WR_AMQP_CH_PUBLISH, amqp_cstring_bytes(exchange),
                              amqp_cstring_bytes(key), pub->kind != WR_PUB_BROADCAST, 0, &c.props,
                              (amqp_bytes_t){.len = d->body_len, .bytes = d->body});
  wr_amqp_copy_release(&c);
  if (st != AMQP_STATUS_OK) {
    wr_warn("amqp", "cannot publish a copy of delivery %llu to %s/%s: %s",
            (unsigned long long)d->tag, exchange[0] ? exchange : "(default)", key,
            amqp_error_string2(st));
    return -ECONNRESET;
  }
  return 0;
}

int wr_amqp_verdict_run(wr_amqp_t *a, wr_amqp_delivery_t *d) {
  /* A mailbox delivery whose channel was closed (shutdown) went back to its
   * mailbox with it. */
  if (a->conn != NULL && d->generation == a->generation && d->source == WR_SRC_MAILBOX &&
      !a->mbox_channel_open) {
    /* Shutdown closed the mailbox channel: the item is back in its mailbox. */
    WR_AMQP_STAT_ADD(a, stale_verdicts, 1);
    WR_AMQP_STAT_SUB(a, unacked, 1);
    wr_amqp_delivery_free(d);
    return 0;
  }
  if (a->conn == NULL || d->generation != a->generation) {
    /* The channel that delivered it is gone and the broker has requeued the
     * message; its tag means nothing on the current channel. */
    WR_AMQP_STAT_ADD(a, stale_verdicts, 1);
    wr_amqp_delivery_free(d);
    return 0;
  }
  switch (d->verdict) {
  case WR_VERDICT_ACK:
  case WR_VERDICT_DEAD:
    return settle_original(a, d, d->verdict);
  case WR_VERDICT_PUBLISH:
    break;
  default:
    return settle_original(a, d, WR_VERDICT_REQUEUE);
  }
  if (d->n_pubs == 0 || d->priv == NULL)
    return settle_original(a, d, WR_VERDICT_ACK);

  wr_amqp_dpriv_t *p = d->priv;
  p->pending = d->n_pubs;
  p->failed = false;
  p->refused = false;
  for (size_t i = 0; i < d->n_pubs; i++) {
    bool no_mid = false;
    int rc = publish_copy(a, d, i, &no_mid);
    if (rc == -ENOMEM || rc == -EMSGSIZE) {
      /* Nothing left the process for this copy: out of memory, it counts
       * as failed (the original comes back and is tried again); refused, the
       * original is dead-lettered once the other copies settle. */
      if (rc == -ENOMEM) {
        WR_AMQP_STAT_ADD(a, publish_failures, 1);
        p->failed = true;
      } else {
        p->refused = true;
      }
      p->pending--;
      continue;
    }
    if (rc < 0) {
      /* The connection is broken: copies already sent stay pending and are
       * dropped with the connection; the rest are never sent. */
      p->pending -= d->n_pubs - i;
      if (p->pending == 0) {
        WR_AMQP_STAT_SUB(a, unacked, 1);
        wr_amqp_delivery_free(d);
      }
      return rc;
    }
    a->pub_seq++;
    if (pending_push(a, a->pub_seq, d, i, no_mid) < 0) {
      /* Keep the sequence numbers right even without memory to track them:
       * the copy's confirm will simply find nothing. */
      WR_AMQP_STAT_ADD(a, publish_failures, 1);
      p->failed = true;
      p->pending--;
    }
  }
  if (p->pending == 0)
    return settle_copied(a, d);
  return 0;
}

/* Removes settled entries from the front (confirms come mostly in order). */
static void pending_compact(wr_amqp_t *a) {
  size_t w = 0;
  for (size_t r = 0; r < a->n_pending; r++) {
    if (!a->pending[r].settled)
      a->pending[w++] = a->pending[r];
  }
  a->n_pending = w;
}

/* A mailbox or route copy the broker nacked or returned (the mailbox
 * unavailable, its exchange gone): the ladder takes it, as before mailboxes.
 * Publishes the fallback copy in its place. Returns 0 when it was sent (its
 * confirm is awaited now), 1 when nothing could be sent for it, or a
 * negative errno when the connection failed. */
static int fall_back(wr_amqp_t *a, wr_amqp_delivery_t *d, size_t i) {
  wr_amqp_pub_t *pub = &d->pubs[i];
  bool no_mid = false;
  bool routed = pub->kind == WR_PUB_ROUTE;
  pub->kind = pub->fallback_kind;
  pub->delay_ms = pub->fallback_delay_ms;
  pub->attempt = pub->fallback_attempt;
  pub->reason = pub->fallback_reason;
  if (routed)
    WR_AMQP_STAT_ADD(a, route_fallbacks, 1);
  else
    WR_AMQP_STAT_ADD(a, mailbox_fallbacks, 1);
  wr_warn("amqp", "the %s copy of delivery %llu for user %s was refused; sending it to %s",
          routed ? "routed" : "mailbox", (unsigned long long)d->tag, pub->user ? pub->user : "?",
          pub->kind == WR_PUB_RETRY ? "the retry ladder" : "the parked queue");
  int rc = publish_copy(a, d, i, &no_mid);
  if (rc == -ENOMEM || rc == -EMSGSIZE)
    return 1;
  if (rc < 0)
    return rc;
  a->pub_seq++;
  return pending_push(a, a->pub_seq, d, i, no_mid) < 0 ? 1 : 0;
}

int wr_amqp_confirm_settle(wr_amqp_t *a, uint64_t tag, bool multiple, bool ok) {
  int rc = 0;
  bool any = false;

  /* By index: a fallback copy is pushed onto a->pending meanwhile (with a
   * sequence number above tag, so this confirm never covers it). */
  for (size_t i = 0; i < a->n_pending; i++) {
    wr_amqp_pending_t *e = &a->pending[i];
    if (e->settled || (multiple ? e->seq > tag : e->seq != tag))
      continue;
    e->settled = true;
    any = true;
    wr_amqp_delivery_t *d = e->d;
    wr_amqp_dpriv_t *p = d->priv;
    size_t pub = e->pub;
    bool returned = e->returned;
    if (ok && !returned) {
      WR_AMQP_STAT_ADD(a, published, 1);
      if (d->pubs[pub].kind == WR_PUB_MAILBOX)
        WR_AMQP_STAT_ADD(a, mailbox_puts, 1);
      else if (d->pubs[pub].kind == WR_PUB_ROUTE)
        WR_AMQP_STAT_ADD(a, routed, 1);
      else if (d->pubs[pub].kind == WR_PUB_BROADCAST)
        WR_AMQP_STAT_ADD(a, broadcasts_routed, 1);
    } else if (d->pubs[pub].kind == WR_PUB_MAILBOX ||
               (d->pubs[pub].kind == WR_PUB_ROUTE && !d->pubs[pub].fan)) {
      int r = fall_back(a, d, pub);
      if (r == 0)
        continue; /* the fallback copy stands in for this one */
      if (r < 0 && rc == 0)
        rc = r;
      WR_AMQP_STAT_ADD(a, publish_failures, 1);
      p->failed = true;
    } else {
      WR_AMQP_STAT_ADD(a, publish_failures, 1);
      p->failed = true;
      wr_warn("amqp",
              "copy %zu of delivery %llu (%s) was %s by the broker; requeueing the "
              "original",
              pub, (unsigned long long)d->tag, d->message_id ? d->message_id : "no message_id",
              returned ? "returned" : "nacked");
    }
    if (--p->pending == 0) {
      int r = settle_copied(a, d);
      if (r < 0 && rc == 0)
        rc = r;
    }
  }
  if (any)
    pending_compact(a);
  return rc;
}

static bool bytes_eq_str(amqp_bytes_t b, const char *s) {
  return s == NULL ? b.len == 0 : wr_amqp_bytes_is(b, s);
}

int wr_amqp_confirm_return(wr_amqp_t *a, const amqp_basic_return_t *ret) {
  amqp_message_t m;
  amqp_rpc_reply_t r = amqp_read_message(a->conn, WR_AMQP_CH_PUBLISH, &m, 0);
  char err[256];

  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    int rc = wr_amqp_reply_err(r, "reading a returned message", err, sizeof(err));
    wr_warn("amqp", "%s", err);
    return rc;
  }
  /* basic.return carries no sequence number, but it precedes the confirm of
   * the same publish: mark the oldest unconfirmed copy with the same
   * message_id, user and attempt, which is that publish or an identical one. */
  const amqp_table_t *h =
      (m.properties._flags & AMQP_BASIC_HEADERS_FLAG) ? &m.properties.headers : NULL;
  uint32_t unused;
  char *user = NULL;
  int64_t exp, attempt = -1;
  wr_amqp_headers_parse(h, &unused, &user, &exp);
  /* The attempt as sent, not clamped the way a delivery's is. */
  wr_amqp_field_int(wr_amqp_table_get(h, "x-warren-attempt"), &attempt);
  amqp_bytes_t mid = (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? m.properties.message_id
                                                                        : amqp_empty_bytes;
  bool found = false;
  for (size_t i = 0; i < a->n_pending && !found; i++) {
    wr_amqp_pending_t *e = &a->pending[i];
    const wr_amqp_pub_t *pub = &e->d->pubs[e->pub];
    const char *pid = e->no_message_id ? NULL : pub->id != NULL ? pub->id : e->d->message_id;
    if (e->settled || e->returned || (int64_t)pub->attempt != attempt || !bytes_eq_str(mid, pid))
      continue;
    if ((pub->user == NULL) != (user == NULL) || (user != NULL && strcmp(user, pub->user) != 0))
      continue;
    e->returned = true;
    found = true;
  }
  wr_warn("amqp", "a published copy was returned: %u %.*s (exchange %.*s, key %.*s)%s",
          ret->reply_code, (int)ret->reply_text.len, (const char *)ret->reply_text.bytes,
          (int)ret->exchange.len, (const char *)ret->exchange.bytes, (int)ret->routing_key.len,
          (const char *)ret->routing_key.bytes, found ? "" : "; no matching publish found");
  free(user);
  amqp_destroy_message(&m);
  return 0;
}

void wr_amqp_confirm_drop_all(wr_amqp_t *a) {
  for (size_t i = 0; i < a->n_pending; i++) {
    wr_amqp_pending_t *e = &a->pending[i];
    if (e->settled)
      continue;
    e->settled = true;
    WR_AMQP_STAT_ADD(a, publish_failures, 1);
    wr_amqp_dpriv_t *p = e->d->priv;
    if (--p->pending == 0)
      wr_amqp_delivery_free(e->d);
  }
  a->n_pending = 0;
}
