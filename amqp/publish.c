/* Verdicts: acks and nacks of originals, ladder/park copies published with
 * confirms on channel 2, and the bookkeeping that acks an original only once
 * every copy of it is confirmed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/log.h"
#include "amqp/amqp_int.h"

void wr_amqp_delivery_free(wr_amqp_delivery_t *d) {
  if (d == NULL)
    return;
  wr_amqp_dpriv_t *p = d->priv;
  for (size_t i = 0; i < d->n_pubs; i++) {
    free(d->pubs[i].user);
    free(d->pubs[i].id);
  }
  free(d->pubs);
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

/* Settles the original on channel 1 and frees it. */
static int settle_original(wr_amqp_t *a, wr_amqp_delivery_t *d, wr_verdict_kind_t how) {
  uint64_t tag = d->tag;
  int st;
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

static int pending_push(wr_amqp_t *a, uint64_t seq, wr_amqp_delivery_t *d, size_t pub) {
  if (a->n_pending == a->cap_pending) {
    size_t cap = a->cap_pending ? a->cap_pending * 2 : 64;
    wr_amqp_pending_t *p = realloc(a->pending, cap * sizeof(*p));
    if (p == NULL)
      return -ENOMEM;
    a->pending = p;
    a->cap_pending = cap;
  }
  a->pending[a->n_pending++] = (wr_amqp_pending_t){.seq = seq, .d = d, .pub = pub};
  return 0;
}

static int publish_copy(wr_amqp_t *a, wr_amqp_delivery_t *d, const wr_amqp_pub_t *pub) {
  wr_amqp_dpriv_t *p = d->priv;
  const amqp_basic_properties_t *orig = &p->props;
  amqp_basic_properties_t props;
  char exchange[WR_AMQP_NAME_MAX], key[WR_AMQP_NAME_MAX];
  int rc;

  memset(&props, 0, sizeof(props));
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
  props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  if (orig->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
    props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.content_type = orig->content_type;
  }
  if (orig->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
    props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    props.timestamp = orig->timestamp;
  }
  if (pub->id != NULL) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = amqp_cstring_bytes(pub->id);
  } else if (orig->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = orig->message_id;
  }
  const amqp_table_t *oh = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? &orig->headers : NULL;
  if ((rc = wr_amqp_headers_build(oh, pub, &props.headers)) < 0)
    return rc;

  if (pub->kind == WR_PUB_RETRY) {
    wr_amqp_name_fmt(exchange, sizeof(exchange), a->cfg->queue, ".retry");
    snprintf(key, sizeof(key), "%u", pub->delay_ms);
  } else {
    exchange[0] = '\0';
    wr_amqp_name_fmt(key, sizeof(key), a->cfg->queue, ".parked");
  }
  /* mandatory: a copy that no queue takes (a ladder queue deleted by hand)
   * comes back as basic.return instead of vanishing. */
  int st = amqp_basic_publish(a->conn, WR_AMQP_CH_PUBLISH, amqp_cstring_bytes(exchange),
                              amqp_cstring_bytes(key), 1, 0, &props,
                              (amqp_bytes_t){.len = d->body_len, .bytes = d->body});
  wr_amqp_headers_release(&props.headers);
  if (st != AMQP_STATUS_OK) {
    wr_warn("amqp", "cannot publish a copy of delivery %llu to %s/%s: %s",
            (unsigned long long)d->tag, exchange[0] ? exchange : "(default)", key,
            amqp_error_string2(st));
    return -ECONNRESET;
  }
  return 0;
}

int wr_amqp_verdict_run(wr_amqp_t *a, wr_amqp_delivery_t *d) {
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
  for (size_t i = 0; i < d->n_pubs; i++) {
    int rc = publish_copy(a, d, &d->pubs[i]);
    if (rc == -ENOMEM) {
      /* Nothing left the process for this copy: count it as failed and let
       * the earlier copies (if any) settle the original. */
      WR_AMQP_STAT_ADD(a, publish_failures, 1);
      p->failed = true;
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
    if (pending_push(a, a->pub_seq, d, i) < 0) {
      /* Keep the sequence numbers right even without memory to track them:
       * the copy's confirm will simply find nothing. */
      WR_AMQP_STAT_ADD(a, publish_failures, 1);
      p->failed = true;
      p->pending--;
    }
  }
  if (p->pending == 0)
    return settle_original(a, d, WR_VERDICT_REQUEUE);
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

int wr_amqp_confirm_settle(wr_amqp_t *a, uint64_t tag, bool multiple, bool ok) {
  int rc = 0;
  bool any = false;

  for (size_t i = 0; i < a->n_pending; i++) {
    wr_amqp_pending_t *e = &a->pending[i];
    if (e->settled || (multiple ? e->seq > tag : e->seq != tag))
      continue;
    e->settled = true;
    any = true;
    wr_amqp_delivery_t *d = e->d;
    wr_amqp_dpriv_t *p = d->priv;
    if (ok && !e->returned) {
      WR_AMQP_STAT_ADD(a, published, 1);
    } else {
      WR_AMQP_STAT_ADD(a, publish_failures, 1);
      p->failed = true;
      wr_warn("amqp",
              "copy %zu of delivery %llu (%s) was %s by the broker; requeueing the "
              "original",
              e->pub, (unsigned long long)d->tag, d->message_id ? d->message_id : "no message_id",
              e->returned ? "returned" : "nacked");
    }
    if (--p->pending == 0) {
      int r = settle_original(a, d, p->failed ? WR_VERDICT_REQUEUE : WR_VERDICT_ACK);
      if (r < 0 && rc == 0)
        rc = r;
    }
  }
  if (any)
    pending_compact(a);
  return rc;
}

static bool bytes_eq_str(amqp_bytes_t b, const char *s) {
  if (s == NULL)
    return b.len == 0;
  return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
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
  uint32_t attempt;
  char *user = NULL;
  int64_t exp;
  wr_amqp_headers_parse(h, &attempt, &user, &exp);
  amqp_bytes_t mid = (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? m.properties.message_id
                                                                        : amqp_empty_bytes;
  bool found = false;
  for (size_t i = 0; i < a->n_pending && !found; i++) {
    wr_amqp_pending_t *e = &a->pending[i];
    const wr_amqp_pub_t *pub = &e->d->pubs[e->pub];
    const char *pid = pub->id != NULL ? pub->id : e->d->message_id;
    if (e->settled || e->returned || pub->attempt != attempt || !bytes_eq_str(mid, pid))
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
