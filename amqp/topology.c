/* The broker objects warren needs (docs/architecture.md, "Topology"), declared idempotently on
 * every connect, and the passive declares that measure their depths. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config/log.h"
#include "amqp/amqp_int.h"

static int declare_exchange_args(amqp_connection_state_t c, amqp_channel_t ch, const char *name,
                                 const char *type, amqp_table_t args, char *err, size_t errlen) {
  char why[512];
  amqp_exchange_declare(c, ch, amqp_cstring_bytes(name), amqp_cstring_bytes(type), 0, 1, 0, 0,
                        args);
  int rc = wr_amqp_reply_err(amqp_get_rpc_reply(c), "", why, sizeof(why));
  if (rc == -EEXIST)
    snprintf(err, errlen,
             "cannot declare exchange %s (%s, durable)%s; it exists with another type or "
             "arguments: delete it or choose another name",
             name, type, why);
  else if (rc < 0)
    snprintf(err, errlen, "cannot declare exchange %s%s", name, why);
  return rc;
}

static int declare_exchange(amqp_connection_state_t c, amqp_channel_t ch, const char *name,
                            const char *type, char *err, size_t errlen) {
  return declare_exchange_args(c, ch, name, type, amqp_empty_table, err, errlen);
}

static int declare_queue_once(amqp_connection_state_t c, amqp_channel_t ch, const char *name,
                              amqp_table_t args, wr_queue_type_t type, char *err, size_t errlen) {
  char why[512];
  amqp_queue_declare(c, ch, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
  int rc = wr_amqp_reply_err(amqp_get_rpc_reply(c), "", why, sizeof(why));
  if (rc == -EEXIST)
    snprintf(err, errlen,
             "cannot declare queue %s%s; it exists with other arguments (x-queue-type "
             "differs?): delete it or set amqp.queue_type=%s",
             name, why, type == WR_QUEUE_QUORUM ? "classic" : "quorum");
  else if (rc < 0)
    snprintf(err, errlen, "cannot declare queue %s%s", name, why);
  return rc;
}

static void set_str(amqp_table_entry_t *e, const char *k, const char *v) {
  e->key = amqp_cstring_bytes(k);
  e->value.kind = AMQP_FIELD_KIND_UTF8;
  e->value.value.bytes = amqp_cstring_bytes(v);
}

/* A durable queue. A quorum queue gets x-queue-type and an explicit
 * x-delivery-limit appended to args (room for two more entries is the
 * caller's): RabbitMQ 4.0 gives quorum queues a default limit of 20
 * otherwise. One an earlier warren declared without the limit refuses the
 * new argument (406); it is then declared as it is, with a warning, and keeps
 * working (what passes the broker's limit goes to its dead-letter exchange). */
static int declare_queue(amqp_connection_state_t c, amqp_channel_t ch, const char *name,
                         amqp_table_t args, wr_queue_type_t type, char *err, size_t errlen) {
  if (type != WR_QUEUE_QUORUM)
    return declare_queue_once(c, ch, name, args, type, err, errlen);
  amqp_table_entry_t *e = args.entries;
  set_str(&e[args.num_entries++], "x-queue-type", "quorum");
  e[args.num_entries].key = amqp_cstring_bytes("x-delivery-limit");
  e[args.num_entries].value.kind = AMQP_FIELD_KIND_I64;
  e[args.num_entries++].value.value.i64 = WR_AMQP_DELIVERY_LIMIT;
  int rc = declare_queue_once(c, ch, name, args, type, err, errlen);
  if (rc != -EEXIST)
    return rc;
  amqp_channel_close_ok_t ok = {0};
  if (amqp_send_method(c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
    return -ECONNRESET;
  if ((rc = wr_amqp_channel_open(c, ch, err, errlen)) < 0)
    return rc;
  args.num_entries--;
  if ((rc = declare_queue_once(c, ch, name, args, type, err, errlen)) < 0)
    return rc;
  wr_warn("amqp",
          "quorum queue %s exists without x-delivery-limit (declared by an earlier warren): "
          "RabbitMQ 4.0 and later apply their default limit of 20 redeliveries to it; set a "
          "delivery-limit policy on it, or recreate it empty, to make the limit explicit",
          name);
  return 0;
}

static int bind_queue(amqp_connection_state_t c, amqp_channel_t ch, const char *queue,
                      const char *exchange, const char *key, char *err, size_t errlen) {
  char why[512];
  amqp_queue_bind(c, ch, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                  amqp_cstring_bytes(key), amqp_empty_table);
  int rc = wr_amqp_reply_err(amqp_get_rpc_reply(c), "", why, sizeof(why));
  if (rc < 0)
    snprintf(err, errlen, "cannot bind queue %s to exchange %s with key \"%s\"%s", queue, exchange,
             key, why);
  return rc;
}

/* Q.mailbox (direct, alternate exchange Q.mailbox.new) and Q.mailbox.new
 * (fanout) with its queue, which holds copies for users who have no mailbox
 * yet; what that queue cannot take (no user) dead-letters to Q.dlx. And
 * Q.mailbox.index, one entry per mailbox made (amqp/mailbox.c). */
static int declare_mailbox_exchanges(amqp_connection_state_t c, amqp_channel_t ch,
                                     const wr_config_t *cfg, const char *dlx, char *err,
                                     size_t errlen) {
  char mailbox[WR_AMQP_NAME_MAX], fresh[WR_AMQP_NAME_MAX], index[WR_AMQP_NAME_MAX];
  amqp_table_entry_t e[1];
  amqp_table_t args = {.num_entries = 1, .entries = e};
  int rc;

  if (wr_amqp_name_fmt(mailbox, sizeof(mailbox), cfg->queue, ".mailbox") < 0 ||
      wr_amqp_name_fmt(fresh, sizeof(fresh), cfg->queue, ".mailbox.new") < 0 ||
      wr_amqp_name_fmt(index, sizeof(index), cfg->queue, ".mailbox.index") < 0) {
    snprintf(err, errlen, "amqp.queue is too long for the mailbox exchanges");
    return -ENAMETOOLONG;
  }
  if ((rc = declare_queue(c, ch, index, amqp_empty_table, WR_QUEUE_CLASSIC, err, errlen)) < 0)
    return rc;
  if ((rc = declare_exchange(c, ch, fresh, "fanout", err, errlen)) < 0)
    return rc;
  set_str(&e[0], "x-dead-letter-exchange", dlx);
  if ((rc = declare_queue(c, ch, fresh, args, WR_QUEUE_CLASSIC, err, errlen)) < 0)
    return rc;
  if ((rc = bind_queue(c, ch, fresh, fresh, "", err, errlen)) < 0)
    return rc;
  set_str(&e[0], "alternate-exchange", fresh);
  return declare_exchange_args(c, ch, mailbox, "direct", args, err, errlen);
}

int wr_amqp_node_queue_name(const wr_config_t *cfg, char *out, size_t outlen) {
  int n = snprintf(out, outlen, "%s.node.%s", cfg->queue,
                   cfg->cluster_node_id != NULL ? cfg->cluster_node_id : "");
  return n < 0 || (size_t)n >= outlen || n > 255 ? -ENAMETOOLONG : 0;
}

/* Cluster mode (docs/cluster.md): Q.route (direct; what no node is bound
 * for goes on to Q.mailbox, its alternate exchange), Q.broadcast (fanout),
 * and this node's queue Q.node.<id>, bound to Q.broadcast. The node queue
 * keeps a copy at most cluster.node_ttl_ms, then dead-letters it to
 * Q.mailbox with its routing key (the user key), so a node that never comes
 * back strands nothing. As a quorum queue (the default) that dead-lettering
 * is at-least-once, which needs overflow reject-publish; its delivery limit
 * is explicit, as on every quorum queue (declare_queue). */
static int declare_cluster(amqp_connection_state_t c, amqp_channel_t ch, const wr_config_t *cfg,
                           char *err, size_t errlen) {
  char route[WR_AMQP_NAME_MAX], bcast[WR_AMQP_NAME_MAX], mailbox[WR_AMQP_NAME_MAX],
      node[WR_AMQP_NAME_MAX];
  amqp_table_entry_t e[6]; /* with declare_queue's two */
  amqp_table_t args = {.num_entries = 0, .entries = e};
  bool quorum = cfg->node_queue_type == WR_QUEUE_QUORUM;
  int rc;

  if (wr_amqp_name_fmt(route, sizeof(route), cfg->queue, ".route") < 0 ||
      wr_amqp_name_fmt(bcast, sizeof(bcast), cfg->queue, ".broadcast") < 0 ||
      wr_amqp_name_fmt(mailbox, sizeof(mailbox), cfg->queue, ".mailbox") < 0 ||
      wr_amqp_node_queue_name(cfg, node, sizeof(node)) < 0) {
    snprintf(err, errlen, "amqp.queue and cluster.node_id are too long for the cluster names");
    return -ENAMETOOLONG;
  }
  set_str(&e[0], "alternate-exchange", mailbox);
  args.num_entries = 1;
  if ((rc = declare_exchange_args(c, ch, route, "direct", args, err, errlen)) < 0)
    return rc;
  if ((rc = declare_exchange(c, ch, bcast, "fanout", err, errlen)) < 0)
    return rc;
  e[0].key = amqp_cstring_bytes("x-message-ttl");
  e[0].value.kind = AMQP_FIELD_KIND_I64;
  e[0].value.value.i64 = cfg->cluster_node_ttl_ms;
  set_str(&e[1], "x-dead-letter-exchange", mailbox);
  args.num_entries = 2;
  if (quorum) {
    set_str(&e[args.num_entries++], "x-dead-letter-strategy", "at-least-once");
    set_str(&e[args.num_entries++], "x-overflow", "reject-publish");
  } else {
    e[args.num_entries].key = amqp_cstring_bytes("x-queue-version");
    e[args.num_entries].value.kind = AMQP_FIELD_KIND_I64;
    e[args.num_entries++].value.value.i64 = 2;
  }
  if ((rc = declare_queue(c, ch, node, args, cfg->node_queue_type, err, errlen)) < 0) {
    if (rc == -EEXIST)
      snprintf(err, errlen,
               "cannot declare this node's queue %s (%s, x-message-ttl %u): it exists with other "
               "arguments; set cluster.queue_type / cluster.node_ttl_ms to match it, or delete it "
               "once it is empty",
               node, quorum ? "quorum" : "classic", cfg->cluster_node_ttl_ms);
    return rc;
  }
  if ((rc = bind_queue(c, ch, node, bcast, "", err, errlen)) < 0)
    return rc;
  wr_info("amqp", "cluster mode: node %s consumes %s (%s, ttl %u ms), routing through %s and %s",
          cfg->cluster_node_id, node, quorum ? "quorum" : "classic", cfg->cluster_node_ttl_ms,
          route, bcast);
  return 0;
}

int wr_amqp_mailbox_args(const wr_config_t *cfg, amqp_table_entry_t e[WR_AMQP_MAILBOX_ARGS],
                         char *parked, size_t parked_len) {
  if (wr_amqp_name_fmt(parked, parked_len, cfg->queue, ".parked") < 0)
    return -ENAMETOOLONG;
  e[0].key = amqp_cstring_bytes("x-message-ttl");
  e[0].value.kind = AMQP_FIELD_KIND_I64;
  e[0].value.value.i64 = cfg->mailbox_ttl_ms;
  e[1].key = amqp_cstring_bytes("x-max-length");
  e[1].value.kind = AMQP_FIELD_KIND_I64;
  e[1].value.value.i64 = cfg->mailbox_max_messages;
  set_str(&e[2], "x-overflow", "drop-head");
  set_str(&e[3], "x-dead-letter-exchange", "");
  set_str(&e[4], "x-dead-letter-routing-key", parked);
  /* Classic queue version 2: the only version from RabbitMQ 4.0 on (on 3.10
   * it took no less memory than version 1 per idle mailbox, and reserves 2
   * to 3 file handles once used: BENCHMARKS.md, "Mailboxes"). */
  e[5].key = amqp_cstring_bytes("x-queue-version");
  e[5].value.kind = AMQP_FIELD_KIND_I64;
  e[5].value.value.i64 = 2;
  return WR_AMQP_MAILBOX_ARGS;
}

int wr_amqp_topology_declare(amqp_connection_state_t c, amqp_channel_t ch, const wr_config_t *cfg,
                             char *err, size_t errlen) {
  const char *q = cfg->queue;
  bool quorum = cfg->queue_type == WR_QUEUE_QUORUM;
  char retry_x[WR_AMQP_NAME_MAX], parked[WR_AMQP_NAME_MAX], dlx[WR_AMQP_NAME_MAX],
      dead[WR_AMQP_NAME_MAX], name[WR_AMQP_NAME_MAX];
  uint32_t delays[WR_CONFIG_MAX_DELAYS];
  size_t n_delays = wr_amqp_delays_distinct(cfg, delays);
  /* A retry queue's 3 arguments, and declare_queue's two for a quorum one. */
  amqp_table_entry_t e[5];
  amqp_table_t args = {.num_entries = 0, .entries = e};
  int rc;

  if (wr_amqp_name_fmt(retry_x, sizeof(retry_x), q, ".retry") < 0 ||
      wr_amqp_name_fmt(parked, sizeof(parked), q, ".parked") < 0 ||
      wr_amqp_name_fmt(dlx, sizeof(dlx), q, ".dlx") < 0 ||
      wr_amqp_name_fmt(dead, sizeof(dead), q, ".dead") < 0 ||
      wr_amqp_name_fmt(name, sizeof(name), q, ".retry.4294967295") < 0) {
    snprintf(err, errlen, "amqp.queue is too long: queue names derived from it exceed 255 bytes");
    return -ENAMETOOLONG;
  }

  if ((rc = declare_exchange(c, ch, cfg->exchange, "topic", err, errlen)) < 0)
    return rc;

  /* Classic queues get no x-queue-type at all (declare_queue adds it for
   * quorum ones) so that a queue declared by an older warren (or by hand)
   * without it still matches. */
  set_str(&e[0], "x-dead-letter-exchange", dlx);
  args.num_entries = 1;
  if ((rc = declare_queue(c, ch, q, args, cfg->queue_type, err, errlen)) < 0)
    return rc;
  if ((rc = bind_queue(c, ch, q, cfg->exchange, "#", err, errlen)) < 0)
    return rc;

  if ((rc = declare_exchange(c, ch, retry_x, "direct", err, errlen)) < 0)
    return rc;
  for (size_t i = 0; i < n_delays; i++) {
    char key[16];
    snprintf(key, sizeof(key), "%u", delays[i]);
    snprintf(name, sizeof(name), "%s.retry.%u", q, delays[i]);
    e[0].key = amqp_cstring_bytes("x-message-ttl");
    e[0].value.kind = AMQP_FIELD_KIND_I64;
    e[0].value.value.i64 = delays[i];
    set_str(&e[1], "x-dead-letter-exchange", "");
    set_str(&e[2], "x-dead-letter-routing-key", q);
    args.num_entries = 3;
    if ((rc = declare_queue(c, ch, name, args, cfg->queue_type, err, errlen)) < 0)
      return rc;
    if ((rc = bind_queue(c, ch, name, retry_x, key, err, errlen)) < 0)
      return rc;
  }

  args.num_entries = 0;
  if ((rc = declare_queue(c, ch, parked, args, cfg->queue_type, err, errlen)) < 0)
    return rc;

  if ((rc = declare_exchange(c, ch, dlx, "fanout", err, errlen)) < 0)
    return rc;
  if ((rc = declare_queue(c, ch, dead, amqp_empty_table, WR_QUEUE_CLASSIC, err, errlen)) < 0)
    return rc;
  if ((rc = bind_queue(c, ch, dead, dlx, "", err, errlen)) < 0)
    return rc;
  if (cfg->mailbox_enabled && (rc = declare_mailbox_exchanges(c, ch, cfg, dlx, err, errlen)) < 0)
    return rc;
  if (cfg->cluster_node_id != NULL && (rc = declare_cluster(c, ch, cfg, err, errlen)) < 0)
    return rc;
  wr_info("amqp",
          "topology declared: exchange %s -> queue %s (%s), %zu ladder queue(s) via %s, %s, "
          "%s -> %s",
          cfg->exchange, cfg->queue, quorum ? "quorum" : "classic", n_delays, retry_x, parked, dlx,
          dead);
  return 0;
}

/* A refused RPC closes channel 3: acknowledge the close and open it again
 * for the next one. */
static int reopen_poll_channel(wr_amqp_t *a) {
  amqp_channel_close_ok_t ok = {0};
  if (amqp_send_method(a->conn, WR_AMQP_CH_POLL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) !=
      AMQP_STATUS_OK)
    return -ECONNRESET;
  a->poll_channel_open = false;
  return wr_amqp_poll_open(a);
}

int wr_amqp_poll_open(wr_amqp_t *a) {
  char err[256];
  int rc;
  if (a->poll_channel_open)
    return 0;
  if ((rc = wr_amqp_channel_open(a->conn, WR_AMQP_CH_POLL, err, sizeof(err))) < 0) {
    wr_warn("amqp", "%s", err);
    return rc;
  }
  a->poll_channel_open = true;
  return 0;
}

int wr_amqp_bind_rpc(wr_amqp_t *a, amqp_bytes_t queue, const char *exchange, const char *key,
                     bool bind, const char *what) {
  int rc, refusal = 0;
  if ((rc = wr_amqp_poll_open(a)) < 0)
    return rc;
  if (bind)
    amqp_queue_bind(a->conn, WR_AMQP_CH_POLL, queue, amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(key), amqp_empty_table);
  else
    amqp_queue_unbind(a->conn, WR_AMQP_CH_POLL, queue, amqp_cstring_bytes(exchange),
                      amqp_cstring_bytes(key), amqp_empty_table);
  rc = wr_amqp_poll_reply(a, what, &refusal);
  if (rc == 1)
    wr_warn("amqp", "cannot %s %.*s (exchange %s, key %s): %s", bind ? "bind" : "unbind",
            (int)queue.len, (const char *)queue.bytes, exchange, key, strerror(-refusal));
  return rc;
}

int wr_amqp_poll_reply(wr_amqp_t *a, const char *what, int *refusal) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
  char err[512];
  int rc = wr_amqp_reply_err(r, what, err, sizeof(err));
  if (rc == 0)
    return 0;
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    if (refusal != NULL)
      *refusal = rc;
    wr_debug("amqp", "%s", err);
    int r2 = reopen_poll_channel(a);
    return r2 < 0 ? r2 : 1;
  }
  wr_warn("amqp", "%s", err);
  return rc < 0 ? rc : -ECONNRESET;
}

static int poll_one(wr_amqp_t *a, wr_amqp_queue_stat_t *st) {
  amqp_queue_declare_ok_t *ok = amqp_queue_declare(
      a->conn, WR_AMQP_CH_POLL, amqp_cstring_bytes(st->name), 1, 0, 0, 0, amqp_empty_table);
  int rc = wr_amqp_poll_reply(a, "connection lost while polling queue depths", NULL);

  st->messages = -1;
  st->consumers = -1;
  if (rc == 0 && ok != NULL) {
    st->messages = ok->message_count;
    st->consumers = ok->consumer_count;
    return 0;
  }
  return rc < 0 ? rc : 0;
}

int wr_amqp_topology_poll(wr_amqp_t *a, wr_amqp_queue_stat_t *out, size_t cap, size_t *n) {
  const char *q = a->cfg->queue;
  size_t k = 0;
  int rc;

  *n = 0;
  if ((rc = wr_amqp_poll_open(a)) < 0)
    return rc;
  if (k < cap)
    snprintf(out[k++].name, sizeof(out->name), "%s", q);
  for (size_t i = 0; i < a->n_delays && k < cap; i++)
    snprintf(out[k++].name, sizeof(out->name), "%s.retry.%u", q, a->delays[i]);
  if (k < cap)
    snprintf(out[k++].name, sizeof(out->name), "%s.parked", q);
  if (k < cap)
    snprintf(out[k++].name, sizeof(out->name), "%s.dead", q);
  /* Copies for users who have no mailbox yet wait here for the AMQP thread:
   * a depth that stays up means it is not keeping up. The mailboxes
   * themselves are one per user, too many to poll. */
  if (a->cfg->mailbox_enabled && k < cap)
    snprintf(out[k++].name, sizeof(out->name), "%s.mailbox.new", q);
  /* This node's queue: a depth that grows means it does not keep up. */
  if (a->cfg->cluster_node_id != NULL && k < cap &&
      wr_amqp_node_queue_name(a->cfg, out[k].name, sizeof(out->name)) == 0)
    k++;
  for (size_t i = 0; i < k; i++) {
    if ((rc = poll_one(a, &out[i])) < 0)
      return rc;
  }
  *n = k;
  return 0;
}
