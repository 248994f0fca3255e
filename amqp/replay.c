/* `warren replay`: the messages of Q.parked or Q.dead back to delivery,
 * confirmed, counted and safe to interrupt (README, "Replaying parked
 * notifications").
 *
 * One message at a time on its own connection: basic.get with manual ack on
 * channel 1, its copy published on channel 2 (confirm.select, mandatory),
 * the confirm awaited, and only then the ack. A message that stays (another
 * user's, one that cannot be republished, one the broker refused) is held
 * unacked until the end and requeued then with one basic.nack(multiple,
 * requeue): a classic queue puts every requeued message back in its place,
 * so the queue keeps its order. The run reads at most the depth the queue had
 * when it started, so copies that come back into the same queue (a mailbox
 * that dead-letters to Q.parked again) are never read twice. If the
 * connection dies, or the process is killed, the broker requeues whatever was
 * not acked: at worst the one message whose copy was confirmed and not yet
 * acked is replayed twice. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp/replay_int.h"

#define CH_GET 1  /* passive declares, basic.get, acks, the final requeue */
#define CH_PUB 2  /* confirm.select: the copies */
#define CH_DECL 3 /* declares and binds of missing mailboxes (a refusal closes it) */

static bool has_prefix(amqp_bytes_t k, const char *p) {
  size_t n = strlen(p);
  return k.len >= n && memcmp(k.bytes, p, n) == 0;
}

bool wr_amqp_replay_key_is_death(amqp_bytes_t k) {
  return (k.len == 7 && memcmp(k.bytes, "x-death", 7) == 0) || has_prefix(k, "x-first-death-") ||
         has_prefix(k, "x-last-death-");
}

int wr_amqp_replay_headers_reset(const amqp_table_t *in, amqp_table_t *out) {
  int n_in = in != NULL && in->entries != NULL && in->num_entries > 0 ? in->num_entries : 0;
  out->num_entries = 0;
  out->entries = NULL;
  if (n_in == 0)
    return 0;
  amqp_table_entry_t *e = calloc((size_t)n_in, sizeof(*e));
  if (e == NULL)
    return -ENOMEM;
  int n = 0;
  for (int i = 0; i < n_in; i++) {
    amqp_bytes_t k = in->entries[i].key;
    /* The dead-letter records describe a trip that is over, and a copy that
     * carried them into a mailbox or the ladder would only make the next
     * record larger. warren's own headers are set again by the plan. */
    if (!wr_amqp_key_is_warren(k) && !wr_amqp_replay_key_is_death(k))
      e[n++] = in->entries[i];
  }
  out->entries = e;
  out->num_entries = n;
  return 0;
}

static int set_name(char *buf, size_t len, const char *name) {
  int n = snprintf(buf, len, "%s", name);
  return n < 0 || (size_t)n >= len || n > 255 ? -ENAMETOOLONG : 0;
}

int wr_amqp_replay_plan(wr_amqp_replay_plan_t *p, const wr_config_t *cfg,
                        const wr_amqp_replay_opts_t *o, const amqp_table_t *h, int64_t now_ms) {
  uint32_t attempt;
  int rc;

  memset(p, 0, sizeof(*p));
  /* A ladder-kind copy: no park reason, no expiration of its own. */
  p->pub.kind = WR_PUB_RETRY;
  /* Q.dead holds originals as they were published: their x-warren-* headers
   * are the publisher's, which warren never trusts (amqp/README.md). */
  if (o->from == WR_REPLAY_PARKED &&
      (rc = wr_amqp_headers_parse(h, &attempt, &p->user, &p->deadline_ms)) < 0)
    return rc;
  bool passed = p->deadline_ms != 0 && p->deadline_ms <= now_ms;
  if (o->user != NULL && (p->user == NULL || strcmp(p->user, o->user) != 0)) {
    p->outcome = WR_REPLAY_SKIPPED;
    return 0;
  }
  if (p->user == NULL) {
    /* A new original: the daemon reads its deadline from the body, where
     * no header can move it. */
    p->outcome = WR_REPLAY_EXCHANGE;
    p->expires_again = passed;
    snprintf(p->key, sizeof(p->key), "%s", WR_AMQP_REPLAY_KEY);
    return set_name(p->exchange, sizeof(p->exchange), cfg->exchange);
  }
  p->pub.user = p->user;
  p->pub.expires_at_ms = p->deadline_ms;
  if (p->deadline_ms != 0 && o->ignore_expiry) {
    /* Dropping the header would not do: the body's expires_at or ttl_ms
     * would apply again. warren honours x-warren-expires-at over the body
     * on a mailbox item and a ladder copy (bridge/core.c, handle), so the
     * copy gets a fresh one: as long as a mailbox keeps anything. */
    int64_t fresh = now_ms + (int64_t)cfg->mailbox_ttl_ms;
    p->pub.expires_at_ms = fresh > p->deadline_ms ? fresh : p->deadline_ms;
  } else {
    p->expires_again = passed;
  }
  if (cfg->mailbox_enabled) {
    p->outcome = WR_REPLAY_MAILBOX;
    p->pub.kind = WR_PUB_MAILBOX;
    if (wr_amqp_user_key(p->user, p->key, sizeof(p->key)) < 0)
      return -ENAMETOOLONG;
    return wr_amqp_name_fmt(p->exchange, sizeof(p->exchange), cfg->queue, ".mailbox");
  }
  /* Without mailboxes, the ladder is how a copy for one user travels: it
   * comes back to Q trusted (its x-death names a ladder queue), with its
   * attempts counted from 0 again. */
  p->outcome = WR_REPLAY_LADDER;
  p->pub.delay_ms = cfg->n_retry_delays > 0 ? cfg->retry_delays_ms[0] : 1000;
  snprintf(p->key, sizeof(p->key), "%u", p->pub.delay_ms);
  return wr_amqp_name_fmt(p->exchange, sizeof(p->exchange), cfg->queue, ".retry");
}

void wr_amqp_replay_plan_free(wr_amqp_replay_plan_t *p) {
  free(p->user);
  p->user = NULL;
  p->pub.user = NULL;
}

int wr_amqp_replay_copy_build(wr_amqp_replay_copy_t *rc, const amqp_basic_properties_t *msg,
                              const wr_amqp_replay_plan_t *plan, int64_t now_ms, uint8_t *scratch,
                              size_t frame_max) {
  amqp_basic_properties_t *k = &rc->kept;
  int r;

  memset(rc, 0, sizeof(*rc));
  k->_flags = msg->_flags & (AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                             AMQP_BASIC_TIMESTAMP_FLAG);
  k->content_type = msg->content_type;
  k->message_id = msg->message_id;
  k->timestamp = msg->timestamp;
  if (msg->_flags & AMQP_BASIC_HEADERS_FLAG) {
    if ((r = wr_amqp_replay_headers_reset(&msg->headers, &k->headers)) < 0)
      return r;
    k->_flags |= AMQP_BASIC_HEADERS_FLAG;
  }
  size_t props_max =
      frame_max > WR_AMQP_CONTENT_OVERHEAD ? frame_max - WR_AMQP_CONTENT_OVERHEAD : 0;
  /* A mailbox dead-letters to Q.parked and a ladder queue back to Q, both
   * adding x-death: leave the room warren's own copies leave
   * (amqp/README.md, "How a copy is checked"). */
  if (plan->outcome == WR_REPLAY_MAILBOX || plan->outcome == WR_REPLAY_LADDER)
    props_max = props_max > WR_AMQP_DEADLETTER_RESERVE ? props_max - WR_AMQP_DEADLETTER_RESERVE : 0;
  r = wr_amqp_copy_build(&rc->copy, k, &plan->pub, plan->exchange, plan->key, now_ms, scratch,
                         props_max);
  /* warren's ladder copies may go without the publisher's headers; a
   * replay is an operator's act on one message and leaves it in place
   * instead, whole. */
  if (r == 0 && (rc->copy.dropped & WR_COPY_NO_HEADERS)) {
    wr_amqp_copy_release(&rc->copy);
    r = -EMSGSIZE;
  }
  if (r < 0) {
    wr_amqp_headers_release(&k->headers);
    return r;
  }
  /* wr_amqp_copy_build always writes an attempt; a replayed copy starts
   * with none. Removing an entry only shrinks what was checked. */
  amqp_table_t *t = &rc->copy.props.headers;
  int n = 0;
  for (int i = 0; i < t->num_entries; i++) {
    if (!(t->entries[i].key.len == 16 &&
          memcmp(t->entries[i].key.bytes, "x-warren-attempt", 16) == 0))
      t->entries[n++] = t->entries[i];
  }
  t->num_entries = n;
  if (n == 0)
    rc->copy.props._flags &= ~AMQP_BASIC_HEADERS_FLAG;
  return 0;
}

void wr_amqp_replay_copy_release(wr_amqp_replay_copy_t *rc) {
  wr_amqp_copy_release(&rc->copy);
  wr_amqp_headers_release(&rc->kept.headers);
}

/* One run's state. */
typedef struct {
  const wr_config_t *cfg;
  const wr_amqp_replay_opts_t *o;
  wr_amqp_replay_counts_t *n;
  amqp_connection_state_t conn;
  char source[WR_AMQP_NAME_MAX];
  uint64_t held;  /* highest delivery tag held unacked on CH_GET, 0 = none */
  uint64_t seq;   /* last publish sequence number on CH_PUB */
  bool broken;    /* the connection failed: close it without a goodbye */
  bool get_open;  /* CH_GET is open (a broker refusal closes it) */
  bool decl_open; /* CH_DECL is open */
  char **made;    /* user keys whose mailbox this run made sure of */
  size_t n_made, cap_made;
  uint8_t *scratch;
  size_t frame_max;
  char *err;
  size_t errlen;
} run_t;

/* A message read with basic.get, copied out of rabbitmq-c's pool: its
 * decoded frames live only until the channel's buffers are recycled. */
typedef struct {
  uint64_t tag;
  amqp_basic_properties_t props; /* content_type, message_id, timestamp, headers: own copies */
  char *content_type;
  char *id;
  void *hblock;      /* the deep copy of the headers */
  bool headers_lost; /* nested deeper than WR_AMQP_TABLE_MAX_DEPTH */
  uint8_t *body;
  size_t body_len;
} msg_t;

static void msg_free(msg_t *m) {
  free(m->content_type);
  free(m->id);
  free(m->hblock);
  free(m->body);
}

static int oom(run_t *r) {
  snprintf(r->err, r->errlen, "out of memory");
  return -ENOMEM;
}

/* The broker closed a channel or the connection: its reason in r->err. A
 * closed CH_PUB leaves CH_GET usable (held messages can still be requeued
 * in order); anything else ends the run. */
static int server_close(run_t *r, const amqp_frame_t *f) {
  amqp_rpc_reply_t rr = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f->payload.method};
  const char *what = f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD
                         ? "the broker closed the connection"
                     : f->channel == CH_PUB ? "the broker refused a copy and closed its channel"
                                            : "the broker closed the channel of the source queue";
  int rc = wr_amqp_reply_err(rr, what, r->err, r->errlen);
  if (f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_ok_t ok = {0};
    amqp_send_method(r->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    r->broken = true;
  } else {
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(r->conn, f->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
      r->broken = true;
    if (f->channel == CH_GET)
      r->get_open = false;
  }
  return rc < 0 ? rc : -EPROTO;
}

/* The next frame, waiting at most WR_AMQP_RPC_TIMEOUT_S (heartbeats are
 * serviced meanwhile by rabbitmq-c). */
static int next_frame(run_t *r, amqp_frame_t *f, const char *what) {
  struct timeval tv = {.tv_sec = WR_AMQP_RPC_TIMEOUT_S, .tv_usec = 0};
  int st = amqp_simple_wait_frame_noblock(r->conn, f, &tv);
  if (st == AMQP_STATUS_OK)
    return 0;
  r->broken = true;
  if (st == AMQP_STATUS_TIMEOUT) {
    snprintf(r->err, r->errlen, "%s: no answer from the broker within %d s", what,
             WR_AMQP_RPC_TIMEOUT_S);
    return -ETIMEDOUT;
  }
  snprintf(r->err, r->errlen, "%s: %s", what, amqp_error_string2(st));
  return -ECONNRESET;
}

/* The next frame of a message in progress on channel ch, of type type. */
static int content_frame(run_t *r, amqp_channel_t ch, uint8_t type, amqp_frame_t *f) {
  int rc = next_frame(r, f, "reading a message");
  if (rc < 0)
    return rc;
  if (f->frame_type == AMQP_FRAME_METHOD && (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                                             f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD))
    return server_close(r, f);
  if (f->channel != ch || f->frame_type != type) {
    r->broken = true;
    snprintf(r->err, r->errlen, "reading a message: unexpected frame type %u on channel %u",
             (unsigned)f->frame_type, (unsigned)f->channel);
    return -EPROTO;
  }
  return 0;
}

/* Keeps what a copy carries over (the headers by wr_amqp_table_copy, which
 * unlike amqp_table_clone takes an empty key and bounds the depth). */
static int msg_keep_props(msg_t *m, const amqp_basic_properties_t *p) {
  m->props._flags = p->_flags & AMQP_BASIC_TIMESTAMP_FLAG;
  m->props.timestamp = p->timestamp;
  if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
    if ((m->content_type = wr_amqp_bytes_strdup(p->content_type)) == NULL)
      return -ENOMEM;
    m->props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    m->props.content_type = (amqp_bytes_t){.len = p->content_type.len, .bytes = m->content_type};
  }
  if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
    if ((m->id = wr_amqp_bytes_strdup(p->message_id)) == NULL)
      return -ENOMEM;
    m->props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    m->props.message_id = (amqp_bytes_t){.len = p->message_id.len, .bytes = m->id};
  }
  if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
    size_t need = 0;
    if (wr_amqp_table_copy(&p->headers, NULL, NULL, 0, &need) < 0) {
      m->headers_lost = true;
      return 0;
    }
    if ((m->hblock = malloc(need > 0 ? need : 1)) == NULL)
      return -ENOMEM;
    wr_amqp_table_copy(&p->headers, &m->props.headers, m->hblock, need, NULL);
    m->props._flags |= AMQP_BASIC_HEADERS_FLAG;
  }
  return 0;
}

/* Reads the content header and body frames of a message on channel ch into
 * m, or drops them when m is NULL (a returned copy). */
static int read_content(run_t *r, amqp_channel_t ch, msg_t *m) {
  amqp_frame_t f;
  int rc = content_frame(r, ch, AMQP_FRAME_HEADER, &f);
  if (rc < 0)
    return rc;
  uint64_t size = f.payload.properties.body_size;
  if (size > SIZE_MAX / 2) {
    r->broken = true;
    snprintf(r->err, r->errlen, "a message announces %llu body bytes", (unsigned long long)size);
    return -EPROTO;
  }
  if (m != NULL) {
    if (msg_keep_props(m, f.payload.properties.decoded) < 0 ||
        (m->body = malloc(size > 0 ? (size_t)size : 1)) == NULL)
      return oom(r);
    m->body_len = (size_t)size;
  }
  size_t got = 0;
  while (got < size) {
    if ((rc = content_frame(r, ch, AMQP_FRAME_BODY, &f)) < 0)
      return rc;
    amqp_bytes_t frag = f.payload.body_fragment;
    if (frag.len > size - got) {
      r->broken = true;
      snprintf(r->err, r->errlen, "a message's body is longer than announced");
      return -EPROTO;
    }
    if (m != NULL && frag.len > 0)
      memcpy(m->body + got, frag.bytes, frag.len);
    got += frag.len;
    /* Everything read so far is copied out: recycle the channel's pages, so
     * a large body does not pin its size in them. */
    amqp_maybe_release_buffers_on_channel(r->conn, ch);
  }
  amqp_maybe_release_buffers_on_channel(r->conn, ch);
  return 0;
}

/* Waits for the broker's answer to publish r->seq on CH_PUB. Returns 0 when
 * confirmed, 1 when nacked or returned (why says which), or a negative errno
 * when a channel or the connection failed. */
static int await_confirm(run_t *r, char *why, size_t whylen) {
  bool returned = false;
  amqp_frame_t f;
  int rc;

  for (;;) {
    if ((rc = next_frame(r, &f, "waiting for the broker's confirm")) < 0)
      return rc;
    if (f.frame_type != AMQP_FRAME_METHOD)
      continue;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      const amqp_basic_ack_t *a = f.payload.method.decoded;
      if (f.channel == CH_PUB &&
          (a->delivery_tag == r->seq || (a->multiple && a->delivery_tag >= r->seq)))
        return returned ? 1 : 0;
      break;
    }
    case AMQP_BASIC_NACK_METHOD: {
      const amqp_basic_nack_t *a = f.payload.method.decoded;
      if (f.channel == CH_PUB &&
          (a->delivery_tag == r->seq || (a->multiple && a->delivery_tag >= r->seq))) {
        snprintf(why, whylen, "the broker nacked its copy");
        return 1;
      }
      break;
    }
    case AMQP_BASIC_RETURN_METHOD: {
      /* mandatory: no queue took it. The confirm (an ack) follows. */
      const amqp_basic_return_t *ret = f.payload.method.decoded;
      snprintf(why, whylen,
               "the broker returned its copy: %u %.*s (no queue bound to %.*s for key %.*s)",
               ret->reply_code, (int)ret->reply_text.len, (const char *)ret->reply_text.bytes,
               (int)ret->exchange.len, (const char *)ret->exchange.bytes, (int)ret->routing_key.len,
               (const char *)ret->routing_key.bytes);
      returned = true;
      if ((rc = read_content(r, f.channel, NULL)) < 0)
        return rc;
      break;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
      return server_close(r, &f);
    default:
      break;
    }
  }
}

static bool is_string(const amqp_field_value_t *v) {
  return v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES);
}

/* The newest x-death entry (the broker puts it first), or NULL. */
static const amqp_table_t *newest_death(const amqp_table_t *h) {
  const amqp_field_value_t *xd = wr_amqp_table_get(h, "x-death");
  if (xd == NULL || xd->kind != AMQP_FIELD_KIND_ARRAY || xd->value.array.num_entries < 1 ||
      xd->value.array.entries == NULL || xd->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE)
    return NULL;
  return &xd->value.array.entries[0].value.table;
}

/* Why it was parked or dead-lettered: x-warren-reason (warren parked it),
 * else the newest x-death reason (a mailbox or Q dead-lettered it). */
static void reason_of(const wr_amqp_replay_opts_t *o, const amqp_table_t *h, char *out,
                      size_t len) {
  const amqp_field_value_t *v =
      o->from == WR_REPLAY_PARKED ? wr_amqp_table_get(h, "x-warren-reason") : NULL;
  if (!is_string(v)) {
    const amqp_table_t *d = newest_death(h);
    v = d != NULL ? wr_amqp_table_get(d, "reason") : NULL;
  }
  out[0] = '\0';
  if (is_string(v))
    snprintf(out, len, "%.*s", (int)(v->value.bytes.len < 64 ? v->value.bytes.len : 64),
             (const char *)v->value.bytes.bytes);
}

static int64_t age_of(const amqp_basic_properties_t *p, const amqp_table_t *h, int64_t now_ms) {
  int64_t t = 0;
  if ((p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) && p->timestamp <= (uint64_t)(INT64_MAX / 1000))
    t = (int64_t)p->timestamp;
  if (t <= 0) {
    const amqp_table_t *d = newest_death(h);
    if (d == NULL || !wr_amqp_field_int(wr_amqp_table_get(d, "time"), &t) || t > INT64_MAX / 1000)
      t = 0;
  }
  if (t <= 0)
    return -1;
  return now_ms > t * 1000 ? now_ms - t * 1000 : 0;
}

static bool replayed(wr_amqp_replay_outcome_t o) {
  return o == WR_REPLAY_MAILBOX || o == WR_REPLAY_LADDER || o == WR_REPLAY_EXCHANGE;
}

static uint64_t n_replayed(const wr_amqp_replay_counts_t *n) {
  return n->n[WR_REPLAY_MAILBOX] + n->n[WR_REPLAY_LADDER] + n->n[WR_REPLAY_EXCHANGE];
}

/* Makes sure the mailbox of the user key exists and is bound before the
 * first copy for it, as warren does for its own first copies: one that went
 * through Q.mailbox.new would land behind copies replayed after it. Once per
 * user key and run. A refusal leaves it to Q.mailbox.new (which makes it);
 * returns a negative errno only when the connection failed. */
static int ensure_mailbox(run_t *r, const char *key, const char *user) {
  char name[WR_AMQP_NAME_MAX], x[WR_AMQP_NAME_MAX], parked[WR_AMQP_NAME_MAX], err[256];
  amqp_table_entry_t e[WR_AMQP_MAILBOX_ARGS];
  int n;

  for (size_t i = 0; i < r->n_made; i++)
    if (strcmp(r->made[i], key) == 0)
      return 0;
  if (r->n_made == r->cap_made) {
    size_t cap = r->cap_made ? r->cap_made * 2 : 64;
    char **nm = realloc(r->made, cap * sizeof(*nm));
    if (nm == NULL)
      return 0; /* Q.mailbox.new makes it then */
    r->made = nm;
    r->cap_made = cap;
  }
  if ((r->made[r->n_made] = strdup(key)) == NULL)
    return 0;
  r->n_made++;
  if (wr_amqp_mailbox_name(r->cfg->queue, key, name, sizeof(name)) < 0 ||
      wr_amqp_name_fmt(x, sizeof(x), r->cfg->queue, ".mailbox") < 0 ||
      (n = wr_amqp_mailbox_args(r->cfg, e, parked, sizeof(parked))) < 0)
    return 0;
  if (!r->decl_open) {
    if (wr_amqp_channel_open(r->conn, CH_DECL, err, sizeof(err)) < 0) {
      r->broken = true;
      snprintf(r->err, r->errlen, "%s", err);
      return -ECONNRESET;
    }
    r->decl_open = true;
  }
  /* A mailbox made with other arguments (the settings changed since) is
   * refused with 406: it exists, which is all that matters here. */
  amqp_queue_declare(r->conn, CH_DECL, amqp_cstring_bytes(name), 0, 1, 0, 0,
                     (amqp_table_t){.num_entries = n, .entries = e});
  amqp_rpc_reply_t rr = amqp_get_rpc_reply(r->conn);
  if (rr.reply_type == AMQP_RESPONSE_NORMAL) {
    amqp_queue_bind(r->conn, CH_DECL, amqp_cstring_bytes(name), amqp_cstring_bytes(x),
                    amqp_cstring_bytes(key), amqp_empty_table);
    rr = amqp_get_rpc_reply(r->conn);
  }
  if (rr.reply_type == AMQP_RESPONSE_NORMAL) {
    /* Listed for the janitor of the daemon's next start (amqp/mailbox.c). */
    if (wr_amqp_mbox_index_put(r->conn, CH_DECL, r->cfg, user) < 0) {
      r->broken = true;
      snprintf(r->err, r->errlen, "cannot list mailbox %s in the mailbox index", name);
      return -ECONNRESET;
    }
    return 0;
  }
  if (rr.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && rr.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_ok_t ok = {0};
    r->decl_open = false;
    if (amqp_send_method(r->conn, CH_DECL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) == AMQP_STATUS_OK)
      return 0;
  }
  r->broken = true;
  wr_amqp_reply_err(rr, "declaring a mailbox", r->err, r->errlen);
  return -ECONNRESET;
}

/* Publishes the copy and waits for its confirm: 0, 1 (refused: why), or a
 * negative errno. */
static int publish(run_t *r, const msg_t *m, const wr_amqp_replay_plan_t *plan,
                   const wr_amqp_replay_copy_t *c, char *why, size_t whylen) {
  /* Everything amqp_basic_publish encodes was checked by
   * wr_amqp_replay_copy_build: a failure here is the connection's. */
  int st = amqp_basic_publish(r->conn, CH_PUB, amqp_cstring_bytes(plan->exchange),
                              amqp_cstring_bytes(plan->key), 1, 0, &c->copy.props,
                              (amqp_bytes_t){.len = m->body_len, .bytes = m->body});
  if (st != AMQP_STATUS_OK) {
    r->broken = true;
    snprintf(r->err, r->errlen, "publishing to exchange %s: %s", plan->exchange,
             amqp_error_string2(st));
    return -ECONNRESET;
  }
  r->seq++;
  return await_confirm(r, why, whylen);
}

/* Decides, publishes and settles one message. Returns 0 or a negative errno
 * (the message is then held, so it goes back with the others). */
static int settle(run_t *r, msg_t *m) {
  const wr_amqp_replay_opts_t *o = r->o;
  const amqp_table_t *h = (m->props._flags & AMQP_BASIC_HEADERS_FLAG) ? &m->props.headers : NULL;
  int64_t now = wr_amqp_wall_ms();
  wr_amqp_replay_plan_t plan;
  char reason[72], why[512] = "";
  uint64_t before = r->held;
  int rc;

  /* Held until it is acked: every way out below but the ack leaves it to
   * the final requeue. */
  r->held = m->tag;
  if ((rc = wr_amqp_replay_plan(&plan, r->cfg, o, h, now)) < 0) {
    wr_amqp_replay_plan_free(&plan);
    if (rc == -ENOMEM)
      return oom(r);
    snprintf(r->err, r->errlen, "amqp.queue or amqp.exchange is too long for a replay's names");
    return rc;
  }
  wr_amqp_replay_outcome_t out = plan.outcome;
  if (out != WR_REPLAY_SKIPPED && m->headers_lost) {
    out = WR_REPLAY_LEFT;
    snprintf(why, sizeof(why), "its headers are nested deeper than %d levels and cannot be copied",
             WR_AMQP_TABLE_MAX_DEPTH);
  } else if (out != WR_REPLAY_SKIPPED) {
    wr_amqp_replay_copy_t c;
    rc = wr_amqp_replay_copy_build(&c, &m->props, &plan, now, r->scratch, r->frame_max);
    if (rc == -ENOMEM) {
      wr_amqp_replay_plan_free(&plan);
      return oom(r);
    }
    if (rc < 0) {
      out = WR_REPLAY_LEFT;
      snprintf(why, sizeof(why), "%s",
               rc == -ENAMETOOLONG
                   ? "an exchange or routing key over 255 bytes"
                   : "its headers cannot be encoded, or do not fit a frame with the "
                     "room a copy needs");
    } else {
      if (!o->dry_run && out == WR_REPLAY_MAILBOX)
        rc = ensure_mailbox(r, plan.key, plan.user);
      if (!o->dry_run && rc == 0)
        rc = publish(r, m, &plan, &c, why, sizeof(why));
      wr_amqp_replay_copy_release(&c);
      if (rc < 0) {
        wr_amqp_replay_plan_free(&plan);
        return rc;
      }
      if (rc == 1)
        out = WR_REPLAY_LEFT;
    }
  }
  if (replayed(out) && !o->dry_run) {
    /* The copy is confirmed: only now may the message leave its queue. */
    if (amqp_basic_ack(r->conn, CH_GET, m->tag, 0) != AMQP_STATUS_OK) {
      r->broken = true;
      snprintf(r->err, r->errlen,
               "cannot ack message %s after its copy was confirmed: the connection failed (the "
               "message goes back to %s, and is replayed twice if run again)",
               m->id ? m->id : "(no id)", r->source);
      wr_amqp_replay_plan_free(&plan);
      return -ECONNRESET;
    }
    /* The final basic.nack(multiple) must name a tag still unacked. */
    r->held = before;
  }
  r->n->n[out]++;
  if (replayed(out) && plan.expires_again)
    r->n->expires_again++;
  if (o->item_cb != NULL) {
    reason_of(o, h, reason, sizeof(reason));
    wr_amqp_replay_item_t it = {.outcome = out,
                                .id = m->id,
                                .user = plan.user,
                                .reason = reason[0] ? reason : NULL,
                                .age_ms = age_of(&m->props, h, now),
                                .expires_again = replayed(out) && plan.expires_again,
                                .why = out == WR_REPLAY_LEFT ? why : NULL};
    o->item_cb(&it, o->data);
  }
  wr_amqp_replay_plan_free(&plan);
  return 0;
}

/* Gets the next message: 0 when one was settled, 1 when the queue has no
 * more ready, or a negative errno. */
static int step(run_t *r) {
  amqp_rpc_reply_t rr = amqp_basic_get(r->conn, CH_GET, amqp_cstring_bytes(r->source), 0);
  char what[WR_AMQP_NAME_MAX + 32];
  msg_t m;
  int rc;

  if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
    /* A refusal closes CH_GET, which requeues what it held; any other
     * failure is the connection's. Either way the run ends here. */
    snprintf(what, sizeof(what), "basic.get from %s", r->source);
    rc = wr_amqp_reply_err(rr, what, r->err, r->errlen);
    if (rr.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        rr.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      amqp_channel_close_ok_t ok = {0};
      r->get_open = false;
      if (amqp_send_method(r->conn, CH_GET, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
        r->broken = true;
    } else {
      r->broken = true;
    }
    return rc < 0 ? rc : -EPROTO;
  }
  if (rr.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
    return 1;
  memset(&m, 0, sizeof(m));
  m.tag = ((const amqp_basic_get_ok_t *)rr.reply.decoded)->delivery_tag;
  r->n->examined++;
  rc = read_content(r, CH_GET, &m);
  if (rc == 0)
    rc = settle(r, &m);
  else
    r->held = m.tag;
  msg_free(&m);
  return rc;
}

/* Passive declares: the source queue's depth, and that every exchange a copy
 * may go to exists (a publish to a missing one would close CH_PUB). */
static int check_topology(run_t *r) {
  const wr_config_t *cfg = r->cfg;
  char x[WR_AMQP_NAME_MAX];
  int rc;

  amqp_queue_declare_ok_t *ok = amqp_queue_declare(r->conn, CH_GET, amqp_cstring_bytes(r->source),
                                                   1, 0, 0, 0, amqp_empty_table);
  rc = wr_amqp_reply_err(amqp_get_rpc_reply(r->conn), "", r->err, r->errlen);
  if (rc == -ENOENT) {
    snprintf(r->err, r->errlen,
             "queue %s does not exist: has warren run on this broker with amqp.queue = %s?",
             r->source, cfg->queue);
    return rc;
  }
  if (rc < 0 || ok == NULL) {
    char why[512];
    snprintf(why, sizeof(why), "%s", r->err);
    snprintf(r->err, r->errlen, "cannot look at queue %s%s", r->source, why);
    return rc < 0 ? rc : -EPROTO;
  }
  r->n->depth = ok->message_count;

  const char *need[2] = {cfg->exchange, NULL};
  if (r->o->from == WR_REPLAY_PARKED) {
    if ((rc = wr_amqp_name_fmt(x, sizeof(x), cfg->queue,
                               cfg->mailbox_enabled ? ".mailbox" : ".retry")) < 0) {
      snprintf(r->err, r->errlen, "amqp.queue is too long");
      return rc;
    }
    need[1] = x;
  }
  for (size_t i = 0; i < 2 && need[i] != NULL; i++) {
    amqp_exchange_declare(r->conn, CH_GET, amqp_cstring_bytes(need[i]), amqp_empty_bytes, 1, 0, 0,
                          0, amqp_empty_table);
    rc = wr_amqp_reply_err(amqp_get_rpc_reply(r->conn), "", r->err, r->errlen);
    if (rc == -ENOENT) {
      snprintf(r->err, r->errlen,
               "exchange %s does not exist: start warren once with this configuration, which "
               "declares it",
               need[i]);
      return rc;
    }
    if (rc < 0) {
      char why[512];
      snprintf(why, sizeof(why), "%s", r->err);
      snprintf(r->err, r->errlen, "cannot look at exchange %s%s", need[i], why);
      return rc;
    }
  }
  return 0;
}

static int run(run_t *r) {
  const wr_amqp_replay_opts_t *o = r->o;
  int rc;

  if ((rc = wr_amqp_channel_open(r->conn, CH_GET, r->err, r->errlen)) < 0 ||
      (rc = wr_amqp_channel_open(r->conn, CH_PUB, r->err, r->errlen)) < 0)
    return rc;
  r->get_open = true;
  amqp_confirm_select(r->conn, CH_PUB);
  if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(r->conn), "confirm.select", r->err, r->errlen)) <
      0)
    return rc;
  if ((rc = check_topology(r)) < 0)
    return rc;
  int fm = amqp_get_frame_max(r->conn);
  r->frame_max = fm > 0 && fm <= WR_AMQP_FRAME_MAX ? (size_t)fm : WR_AMQP_FRAME_MAX;
  if ((r->scratch = malloc(r->frame_max)) == NULL)
    return oom(r);

  while (r->n->examined < r->n->depth) {
    if (o->limit != 0 && n_replayed(r->n) >= o->limit) {
      r->n->limit_reached = true;
      break;
    }
    if (o->stop_cb != NULL && o->stop_cb(o->data)) {
      r->n->interrupted = true;
      break;
    }
    if ((rc = step(r)) < 0)
      return rc;
    if (rc == 1)
      break;
  }
  return 0;
}

int wr_amqp_replay(const wr_config_t *cfg, const wr_amqp_replay_opts_t *opts,
                   wr_amqp_replay_counts_t *counts, char *err, size_t errlen) {
  run_t r = {.cfg = cfg, .o = opts, .n = counts, .err = err, .errlen = errlen};
  int rc;

  memset(counts, 0, sizeof(*counts));
  if (wr_amqp_name_fmt(r.source, sizeof(r.source), cfg->queue,
                       opts->from == WR_REPLAY_PARKED ? ".parked" : ".dead") < 0) {
    snprintf(err, errlen, "amqp.queue is too long");
    return -ENAMETOOLONG;
  }
  if ((rc = wr_amqp_conn_open(cfg, &r.conn, err, errlen)) < 0)
    return rc;
  rc = run(&r);
  /* Whatever stayed goes back in its place now. If this fails, or the
   * connection is broken, closing it requeues them all the same. */
  if (!r.broken && r.get_open && r.held != 0 &&
      amqp_basic_nack(r.conn, CH_GET, r.held, 1, 1) != AMQP_STATUS_OK)
    r.broken = true;
  wr_amqp_conn_close(r.conn, !r.broken);
  free(r.scratch);
  for (size_t i = 0; i < r.n_made; i++)
    free(r.made[i]);
  free(r.made);
  return rc;
}
