/* Internals of amqp/: shared between its .c files and its unit tests only. */
#ifndef WARREN_AMQP_INT_H
#define WARREN_AMQP_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "amqp/amqp.h"

#define WR_AMQP_CH_CONSUME 1 /* topology, qos, consume, acks of originals */
#define WR_AMQP_CH_PUBLISH 2 /* confirm.select; every ladder/park copy */
#define WR_AMQP_CH_POLL                                                                            \
  3 /* passive queue.declare for depths; mailbox                                                   \
       probes, declares, binds and deletes (a failed                                               \
       one closes the channel: it is reopened) */
#define WR_AMQP_CH_MAILBOX                                                                         \
  4 /* one consumer per online user with a mailbox                                                 \
       (tag: the user key); their acks and nacks */
#define WR_AMQP_CH_INDEX                                                                           \
  5 /* the mailbox index, read once per process start                                              \
       (basic.get, republish, ack; mailbox.c) */
#define WR_AMQP_CONSUMER_TAG "warren"
#define WR_AMQP_CONSUMER_TAG_NEW "warren.new"   /* Q.mailbox.new, on channel 1 */
#define WR_AMQP_CONSUMER_TAG_NODE "warren.node" /* Q.node.<id> (cluster mode), channel 1 */
/* The routing key of a broadcast copy. It is no user key (those start with
 * "u."), so one dead-lettered from a node queue into Q.mailbox finds no
 * mailbox and lands in Q.mailbox.new, which drops it (a broadcast is never
 * kept for later). */
#define WR_AMQP_BROADCAST_KEY "b"
#define WR_AMQP_FRAME_MAX 131072
#define WR_AMQP_RPC_TIMEOUT_S 10
/* Blocking RPCs (binds, unbinds, probes) one turn of the AMQP thread's loop
 * makes at most before it reads deliveries and sends acks again: a burst of
 * users connecting, or a reconnect with thousands online, never holds
 * deliveries back for more than a few tens of ms at a time. */
#define WR_AMQP_RPC_BUDGET 32
#define WR_AMQP_NAME_MAX 256

/* What the AMQP thread keeps with each delivery so that it can republish
 * it. Everything lives in the delivery's own allocation, so it stays valid
 * after the connection it came from is destroyed. */
typedef struct wr_amqp_dpriv_s {
  /* The original's properties that ladder and park copies carry over:
   * content_type and message_id point at the delivery's own strings, the
   * headers table (if any) is a deep copy (wr_amqp_table_copy) in the same
   * block. Other fields are cleared. */
  amqp_basic_properties_t props;
  bool headers_lost; /* the original had headers that could not be kept
                        (nested too deep): copies go without them */
  size_t pending;    /* copies published and not yet confirmed */
  bool failed;       /* a copy was nacked or returned: requeue the original */
  bool refused;      /* a copy could not be built at all: dead-letter it */
} wr_amqp_dpriv_t;

/* One publish on channel 2 waiting for its confirm. */
typedef struct wr_amqp_pending_s {
  uint64_t seq;
  wr_amqp_delivery_t *d;
  size_t pub;         /* index in d->pubs */
  bool no_message_id; /* sent without message_id (id over 255 bytes) */
  bool returned;
  bool settled;
} wr_amqp_pending_t;

/* Acks of originals on channel 1, coalesced: a verdict to ack marks its tag,
 * and at each flush (batched: wr_amqp_acks_due) the contiguous settled prefix
 * of tags goes out as one basic.ack(multiple=true). A tag is OPEN until
 * marked (delivered and undecided, or never seen), so multiple=true never
 * covers a delivery nobody decided on. Acks behind an open tag are sent
 * singly at the same flush, so nothing is held back against the prefetch
 * window. Tags restart at 1 with every channel: reset on each new
 * connection. */
typedef struct wr_amqp_acks_s {
  uint8_t *st;      /* ring of states for tags base .. base + cap - 1 */
  size_t cap;       /* power of two, 0 before the first mark */
  size_t head;      /* index of base in st */
  uint64_t base;    /* lowest tag not yet settled on the wire */
  uint64_t *recent; /* tags marked acked since the last flush */
  size_t n_recent, cap_recent;
  int64_t since_ms; /* when wr_amqp_acks_due first saw this batch, -1: not yet */
} wr_amqp_acks_t;

/* Sends one ack: tag, multiple, and how many deliveries it settles. */
typedef int (*wr_amqp_acks_send_cb)(uint64_t tag, bool multiple, size_t count, void *data);

void wr_amqp_acks_reset(wr_amqp_acks_t *t);
void wr_amqp_acks_free(wr_amqp_acks_t *t);
/* Marks tag as decided: acked (to be sent by the next flush) or settled
 * already on the wire (a nack). Returns 0 or -ENOMEM. */
int wr_amqp_acks_mark(wr_amqp_acks_t *t, uint64_t tag, bool acked);
/* Whether the acks marked since the last flush should go now: batch of them
 * wait, or WR_AMQP_BATCH_LAG_MS passed since this call first saw them (now:
 * monotonic ms). Otherwise *left_ms (when given) is the wait left, and
 * INT64_MAX when nothing waits. */
bool wr_amqp_acks_due(wr_amqp_acks_t *t, size_t batch, int64_t now, int64_t *left_ms);
/* Sends the acks marked since the last flush; returns the first negative
 * result of send, else 0. */
int wr_amqp_acks_flush(wr_amqp_acks_t *t, wr_amqp_acks_send_cb send, void *data);
/* Flushes a->acks on the current connection (publish.c). */
int wr_amqp_acks_send(wr_amqp_t *a);

/* What the AMQP thread knows of one user's mailbox (mailbox.c). */
typedef enum { WR_MBOX_UNKNOWN = 0, WR_MBOX_ABSENT, WR_MBOX_EXISTS } wr_mbox_state_t;

typedef struct wr_mbox_s {
  struct wr_mbox_s *hnext;
  uint64_t hash;
  wr_mbox_state_t state;
  bool wanted;        /* its user is online: the loop asked to consume it */
  bool consuming;     /* basic.consume ok on this connection */
  int64_t used_ms;    /* monotonic: last wanted, consumed or filled */
  int64_t unbound_ms; /* the janitor unbound it then (0: bound) */
  bool backlog;       /* it held messages when consumed: its next delivery
                         is the first of a backlog (replay latency) */
  bool indexed;       /* an entry for it was put in Q.mailbox.index since the
                         index read began (a second one is a duplicate) */
  uint64_t want_gen;  /* the connection generation its consumer was last sought on */
  char *user;         /* the user id (malloc'd) */
  char key[];         /* the user key, also its consumer tag */
} wr_mbox_t;

typedef struct wr_mboxes_s {
  wr_mbox_t **buckets;
  size_t nbuckets; /* power of two, 0 before the first entry */
  size_t n;
  size_t resume_bucket;   /* a new connection consumes the online users' mailboxes again from here */
  size_t resume_nbuckets; /* the table's size when that pass began (a rehash restarts it) */
  bool resuming;
} wr_mboxes_t;

/* Cluster mode (cluster.c): one user's binding to this node's queue. */
typedef struct wr_nodebind_s {
  struct wr_nodebind_s *hnext;
  struct wr_nodebind_s *qnext; /* in the unbind queue while leaving */
  uint64_t hash;
  bool bound;       /* queue.bind done (on this or an earlier connection) */
  uint64_t bound_gen; /* the connection generation it was last bound on */
  bool leaving;     /* the user's last connection closed: in the unbind queue */
  int64_t due_ms;   /* monotonic: unbind then, unless they join again */
  char key[];       /* the user key, the routing key */
} wr_nodebind_t;

typedef struct wr_nodebinds_s {
  wr_nodebind_t **buckets;
  size_t nbuckets; /* power of two, 0 before the first entry */
  size_t n;
  wr_nodebind_t *qhead, *qtail; /* leaving users, by due time (one grace for all) */
  size_t resume_bucket;  /* a new connection binds the online users again from here */
  size_t resume_nbuckets; /* the table's size when that pass began (a rehash restarts it) */
  bool resuming;
} wr_nodebinds_t;

/* Mailbox and binding commands over one turn's RPC budget, and the verdicts
 * about their users, waiting in order (consume.c, drain_verdicts). */
typedef struct wr_amqp_deferred_s {
  struct wr_amqp_cmd_s **items; /* a ring of cap */
  size_t head, n, cap;
  void **buckets; /* the users they concern, with counts (consume.c) */
  size_t nbuckets, nusers;
  bool lost; /* out of memory counting them: every verdict waits until the FIFO empties */
  bool hit;  /* scratch of must_wait */
} wr_amqp_deferred_t;

struct wr_amqp_s {
  const wr_config_t *cfg;
  const wr_amqp_callbacks_t *cbs;
  int efd; /* eventfd: wake-ups from other threads */
  pthread_t thread;
  bool started;
  int stop_req;   /* atomic */
  int cancel_req; /* atomic */
  wr_amqp_stats_t stats;

  /* Everything below belongs to the AMQP thread. */
  amqp_connection_state_t conn; /* NULL while disconnected */
  uint64_t generation;          /* of conn; deliveries of others are stale */
  bool consuming;
  bool cancelled;
  bool stopping;
  bool poll_channel_open;
  uint64_t pub_seq; /* last publish sequence number on channel 2 */
  wr_amqp_pending_t *pending;
  wr_amqp_acks_t acks; /* channel 1, this connection */
  size_t n_pending, cap_pending;
  int64_t next_poll_ms;      /* monotonic */
  int64_t last_keepalive_ms; /* monotonic, heartbeat sent while the sink is full */
  uint32_t delays[WR_CONFIG_MAX_DELAYS];
  size_t n_delays;
  uint8_t *scratch;        /* WR_AMQP_FRAME_MAX bytes: copies' properties are
                              encoded here first (wr_amqp_copy_build) */
  wr_mboxes_t mboxes;      /* every user with a mailbox or online (mailbox.c) */
  bool mbox_channel_open;  /* channel 4 */
  bool new_consuming;      /* the consumer of Q.mailbox.new */
  bool node_consuming;     /* the consumer of this node's queue (cluster mode) */
  bool more_commands;      /* commands wait in deferred for the next turn */
  wr_amqp_deferred_t deferred;
  bool more_steps;         /* unbinds due, or re-binding/re-consuming, left for the next turn */
  wr_nodebinds_t binds;    /* users bound to this node's queue (cluster.c) */
  int64_t next_janitor_ms; /* monotonic */
  size_t janitor_cursor;   /* the bucket the janitor's next pass starts at */
  /* The read of Q.mailbox.index (mailbox.c): once per process, restarted
   * from scratch on a new connection until it completes. */
  bool index_done;
  bool index_channel_open;     /* channel 5 */
  uint64_t index_left;         /* entries still to read (counted at session open) */
  uint64_t index_counts[4];    /* this read: kept, gone, duplicate, malformed */

  /* Watchdog (amqp/README.md, "rabbitmq-c 0.11": a send can block forever on a
   * hung broker). The AMQP thread bumps progress every loop turn; the
   * watchdog, called from another thread, shuts the socket down when it has
   * not moved for too long, so the blocked call returns with an error. */
  uint64_t progress; /* atomic */
  pthread_mutex_t fd_lock;
  int sockfd;       /* guarded by fd_lock; -1 while disconnected */
  uint64_t wd_seen; /* watchdog caller's state */
  int64_t wd_since_ms;
};

/* Publishes (fd >= 0) or withdraws (-1) the socket the watchdog may shut down. */
void wr_amqp_watch_fd(wr_amqp_t *a, int fd);

#define WR_AMQP_STAT_ADD(a, field, n) __atomic_fetch_add(&(a)->stats.field, (n), __ATOMIC_RELAXED)
#define WR_AMQP_STAT_SUB(a, field, n) __atomic_fetch_sub(&(a)->stats.field, (n), __ATOMIC_RELAXED)
#define WR_AMQP_STAT_SET(a, field, v) __atomic_store_n(&(a)->stats.field, (v), __ATOMIC_RELAXED)

/* headers.c — pure helpers, no I/O. */

/* Reads x-warren-attempt (any integer kind, clamped to
 * 0..WR_AMQP_ATTEMPT_MAX), x-warren-user (string; *user is malloc'd, NULL if
 * absent) and x-warren-expires-at (any integer kind). Absent or ill-typed
 * values give 0 / NULL. Returns 0 or -ENOMEM. */
int wr_amqp_headers_parse(const amqp_table_t *t, uint32_t *attempt, char **user,
                          int64_t *expires_at_ms);

/* Whether a header key starts with "x-warren-" (warren's own headers). */
bool wr_amqp_key_is_warren(amqp_bytes_t key);

/* Whether t (may be NULL) holds any x-warren-* header. */
bool wr_amqp_headers_has_warren(const amqp_table_t *t);

/* Whether the x-warren-* headers of a delivery are warren's own, i.e. it is a
 * ladder copy coming back: it came through the default exchange (exchange
 * empty: the ladder queues dead-letter to it, see topology.c) and its newest
 * x-death entry says it expired in a ladder queue "<queue>.retry.<digits>".
 * Anything else (an original published to amqp.exchange or elsewhere) is not
 * trusted. h may be NULL. */
bool wr_amqp_headers_trusted(const amqp_table_t *h, amqp_bytes_t exchange, const char *queue);

/* FNV-1a of s[0..n): the registries' and maps' hash. */
uint64_t wr_amqp_hash(const char *s, size_t n);
/* Whether b holds exactly the NUL-terminated s. */
bool wr_amqp_bytes_is(amqp_bytes_t b, const char *s);

/* queue.bind (bind) or queue.unbind of queue to exchange with key on
 * channel 3; what names it in logs. Returns 0, 1 when the broker refused
 * (logged; channel 3 is open again), or a negative errno when the
 * connection failed (topology.c). */
int wr_amqp_bind_rpc(wr_amqp_t *a, amqp_bytes_t queue, const char *exchange, const char *key,
                     bool bind, const char *what);

/* The queue of the newest x-death entry of h (may be NULL), or empty bytes. */
amqp_bytes_t wr_amqp_death_queue(const amqp_table_t *h);

/* Tables nested deeper than this (headers = depth 1) are not copied. */
#define WR_AMQP_TABLE_MAX_DEPTH 32

/* Deep copy of a field table (what amqp_table_clone does, but an empty key is
 * fine, depth is bounded and everything goes into one caller-provided
 * block). With buf == NULL it only measures: *need (may be NULL) gets the
 * bytes the copy takes (the block must be aligned for pointers). Returns 0,
 * -ELOOP (nested deeper than WR_AMQP_TABLE_MAX_DEPTH), -EINVAL (a key over
 * 255 bytes or a field kind rabbitmq-c cannot encode) or -ENOSPC (len is
 * smaller than what it measures). out (unused when measuring) borrows buf. */
int wr_amqp_table_copy(const amqp_table_t *t, amqp_table_t *out, void *buf, size_t len,
                       size_t *need);

/* Builds the headers of a ladder/park copy: every entry of orig (may be NULL)
 * whose key does not start with "x-warren-", then x-warren-attempt (I64),
 * x-warren-user (if pub->user), x-warren-expires-at (I64, if non-zero),
 * x-warren-reason (park, if pub->reason). out->entries is malloc'd (release
 * with wr_amqp_headers_release); values are borrowed from orig and pub, which
 * must outlive out. Returns 0 or -ENOMEM. */
int wr_amqp_headers_build(const amqp_table_t *orig, const wr_amqp_pub_t *pub, amqp_table_t *out);
void wr_amqp_headers_release(amqp_table_t *t);

/* Finds key in t, NULL if absent. */
const amqp_field_value_t *wr_amqp_table_get(const amqp_table_t *t, const char *key);

/* Integer value of any integer field kind; returns false for other kinds. */
bool wr_amqp_field_int(const amqp_field_value_t *v, int64_t *out);

/* Reconnect delay for the n-th consecutive failure (n from 0): 100 ms × 2^n
 * capped at 30 s, scaled by 0.75 + 0.5 × rnd / UINT32_MAX (±25% jitter). */
uint32_t wr_amqp_backoff_ms(unsigned n, uint32_t rnd);

/* The distinct values of cfg->retry_delays_ms in first-seen order; returns
 * how many were written to out (at most WR_CONFIG_MAX_DELAYS). */
size_t wr_amqp_delays_distinct(const wr_config_t *cfg, uint32_t *out);

/* NUL-terminated malloc'd copy of b (NULL for b.bytes == NULL or on ENOMEM). */
char *wr_amqp_bytes_strdup(amqp_bytes_t b);

/* "Q" + suffix into buf; returns 0 or -ENAMETOOLONG (AMQP names are ≤ 255). */
int wr_amqp_name_fmt(char *buf, size_t len, const char *queue, const char *suffix);

/* copy.c — pure: the properties of a ladder/park copy, checked before
 * anything is sent. */

/* Bytes of a content header frame around its properties: frame header 7,
 * class id, weight and body size 12, frame end 1. */
#define WR_AMQP_CONTENT_OVERHEAD 20

/* What the broker adds to a ladder copy's headers when its retry queue
 * dead-letters it back to Q: one x-death entry (count, reason, queue, time,
 * exchange, routing-keys) and x-first-death-reason/-queue/-exchange, about
 * 200 bytes plus twice each name (queue and exchange names are at most 255
 * bytes): at most 1,232 bytes. The copy leaves that much room so the header
 * the broker then delivers still fits warren's frame_max; rabbitmq-c drops
 * the connection on a larger frame, and the broker would deliver it again. */
#define WR_AMQP_DEADLETTER_RESERVE 1536

#define WR_COPY_NO_MESSAGE_ID 1u /* id over 255 bytes: message_id left out */
#define WR_COPY_NO_HEADERS 2u    /* the original's headers left out */

typedef struct wr_amqp_copy_s {
  amqp_basic_properties_t props; /* borrows orig and pub; headers.entries is malloc'd */
  unsigned dropped;              /* WR_COPY_* */
  char expiration[24];           /* a mailbox copy's expiration (ms), props borrow it */
} wr_amqp_copy_t;

/* The properties of the copy pub of a message whose kept properties are orig
 * (content_type, message_id, timestamp, headers), to be published to exchange
 * with routing_key, checked the way amqp_basic_publish would check them but
 * before anything is sent (it sends the method frame first and encodes the
 * properties after, so a failure there breaks the channel): exchange and
 * routing_key are short strings, and the properties are encoded with
 * amqp_encode_properties into scratch, props_max bytes (frame_max −
 * WR_AMQP_CONTENT_OVERHEAD, less WR_AMQP_DEADLETTER_RESERVE for a ladder
 * copy). A message_id over 255 bytes is left out; if the properties then do
 * not encode within props_max, the original's headers are left out (warren's
 * x-warren-* ones stay) and they are tried once more. Borrows everything.
 * Returns 0 (release c with wr_amqp_copy_release), -ENOMEM, -ENAMETOOLONG
 * (exchange or routing key over 255 bytes) or -EMSGSIZE (not even that copy
 * encodes within props_max). */
int wr_amqp_copy_build(wr_amqp_copy_t *c, const amqp_basic_properties_t *orig,
                       const wr_amqp_pub_t *pub, const char *exchange, const char *routing_key,
                       int64_t now_ms, uint8_t *scratch, size_t props_max);
void wr_amqp_copy_release(wr_amqp_copy_t *c);

/* connection.c */

/* Opens a TCP or TLS connection to cfg->amqp_url and logs in with warren's
 * client properties, heartbeat cfg->heartbeat_s and the RPC timeout. On
 * failure writes a message to err and returns a negative errno. */
int wr_amqp_conn_open(const wr_config_t *cfg, amqp_connection_state_t *out, char *err,
                      size_t errlen);

/* Sends connection.close (if graceful; it closes every channel too), then
 * destroys the connection. NULL is a no-op. */
void wr_amqp_conn_close(amqp_connection_state_t conn, bool graceful);

/* Translates an RPC reply: 0 for AMQP_RESPONSE_NORMAL, else a negative errno
 * and "<what>: <reason>" in err. */
int wr_amqp_reply_err(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen);

/* Opens channel ch (an RPC). */
int wr_amqp_channel_open(amqp_connection_state_t conn, amqp_channel_t ch, char *err, size_t errlen);

/* topology.c */

/* Declares exchange, Q, the ladder, Q.parked, Q.dlx and Q.dead on channel ch
 * (docs/architecture.md, "Topology"), idempotently. Returns 0 or a negative errno with a message
 * naming the object and what to do in err. */
int wr_amqp_topology_declare(amqp_connection_state_t conn, amqp_channel_t ch,
                             const wr_config_t *cfg, char *err, size_t errlen);

/* Opens channel 3 unless it is open. Returns 0 or a negative errno. */
int wr_amqp_poll_open(wr_amqp_t *a);
/* The reply of the RPC just made on channel 3: 0 when it succeeded; 1 when
 * the broker refused it (the channel, which that closes, is open again;
 * *refusal, when given, gets -ENOENT for 404, -EEXIST for 406, -EACCES or
 * -EPROTO); a negative errno when the connection failed. what names the
 * operation in logs. */
int wr_amqp_poll_reply(wr_amqp_t *a, const char *what, int *refusal);

/* The arguments of a mailbox queue (docs/mailboxes.md): message TTL
 * mailbox.ttl_ms, at most mailbox.max_messages (drop-head), dead-lettered to
 * Q.parked (whose name is written to parked, which e[] borrows), classic
 * version 2. Fills e and returns how many entries, or -ENAMETOOLONG. */
/* "<queue>.node.<cluster.node_id>", this node's queue (cluster mode). 0 or
 * -ENAMETOOLONG. */
int wr_amqp_node_queue_name(const wr_config_t *cfg, char *out, size_t outlen);
/* x-delivery-limit of every quorum queue warren declares (RabbitMQ 4.0
 * defaults it to 20 when absent): a message delivered this many times
 * without an ack is dead-lettered: a node queue's copy to its user's
 * mailbox, Q's and the ladder's to Q.dlx (then Q.dead). */
#define WR_AMQP_DELIVERY_LIMIT 20

#define WR_AMQP_MAILBOX_ARGS 6
int wr_amqp_mailbox_args(const wr_config_t *cfg, amqp_table_entry_t e[WR_AMQP_MAILBOX_ARGS],
                         char *parked, size_t parked_len);

/* Passive queue.declare of Q, each ladder queue, Q.parked, Q.dead and (with
 * mailboxes) Q.mailbox.new on channel WR_AMQP_CH_POLL (reopened after a
 * failed declare closes it). Fills up to cap entries of out, in that order,
 * and sets *n: with mailboxes, n_delays + 5 entries hold them all.
 * Returns 0, or a negative errno when the connection itself failed. */
int wr_amqp_topology_poll(wr_amqp_t *a, wr_amqp_queue_stat_t *out, size_t cap, size_t *n);

/* mailbox.c — per-user mailboxes (docs/mailboxes.md) */

/* Executes a mailbox command (takes ownership of c). Returns 0 or a negative
 * errno when the connection failed. */
int wr_amqp_mbox_command(wr_amqp_t *a, wr_amqp_cmd_t *c);
/* The owner (user id, borrowed) of the mailbox consumer with this tag, or
 * NULL. */
const char *wr_amqp_mbox_owner(wr_amqp_t *a, amqp_bytes_t consumer_tag, bool *backlog);
/* Declares and binds user's mailbox (and consumes it if they are online):
 * before the first copy for them is published (known_ok: nothing to do when
 * it is known to exist and be bound), and when a copy came through
 * Q.mailbox.new (it found no binding: declared whatever the registry says).
 * Returns 0; 1 when the broker refused (permissions, say: logged); or a
 * negative errno when the connection failed. */
int wr_amqp_mbox_create(wr_amqp_t *a, const char *user, bool known_ok);
/* The user a Q.mailbox.new message is for: its x-warren-user header when
 * that user's key is the routing key, else the id of a plain routing key
 * ("u.<id>"); NULL when neither (malloc'd). */
char *wr_amqp_mbox_new_owner(const amqp_table_t *headers, amqp_bytes_t routing_key);
/* After a new connection: seeks the mailboxes of up to WR_AMQP_RPC_BUDGET
 * online users not yet sought on it (probe, consume). a->mboxes.resuming
 * stays true while users are left. */
int wr_amqp_mbox_resume_step(wr_amqp_t *a);
/* A new connection: opens channel 4 and consumes the mailboxes of online
 * users again. Returns 0 or a negative errno. */
int wr_amqp_mbox_session_open(wr_amqp_t *a, char *err, size_t errlen);
/* The connection is gone: no consumer runs any more. */
void wr_amqp_mbox_session_closed(wr_amqp_t *a);
/* The broker cancelled the consumer with this tag on channel 4. */
void wr_amqp_mbox_cancelled(wr_amqp_t *a, amqp_bytes_t consumer_tag);
/* Deletes mailboxes empty and unused for mailbox.idle_ms, when due. Returns
 * 0 or a negative errno when the connection failed. */
int wr_amqp_mbox_janitor(wr_amqp_t *a);
/* Puts an entry for user's mailbox in Q.mailbox.index (body: the user id,
 * persistent, not confirmed): a later process reads it to know the mailbox.
 * Any connection and open channel (warren replay uses it too). Returns 0 or
 * a negative errno. */
int wr_amqp_mbox_index_put(amqp_connection_state_t c, amqp_channel_t ch, const wr_config_t *cfg,
                           const char *user);
/* Reads the next entries of Q.mailbox.index, once per process: each is
 * probed, kept (put again) if its mailbox exists and it is not a duplicate,
 * dropped otherwise, so the janitor knows the mailboxes of earlier runs.
 * Returns 1 while entries remain, 0 when done, or a negative errno when the
 * connection failed. */
int wr_amqp_mbox_index_step(wr_amqp_t *a);
void wr_amqp_mbox_free(wr_amqp_t *a);
/* Cluster mode: another node made user's mailbox; consume it if user is
 * online here. 0 or a negative errno. */
int wr_amqp_mbox_made_elsewhere(wr_amqp_t *a, const char *user);

/* cluster.c — this node's bindings (docs/cluster.md). */
/* A WR_CMD_NODE_* command (freed here). Returns 0 or a negative errno when the
 * connection failed. */
int wr_amqp_node_command(wr_amqp_t *a, wr_amqp_cmd_t *c);
/* A new connection: binds again every user bound before (a node queue
 * deleted behind warren's back comes back with the topology). */
void wr_amqp_node_session_open(wr_amqp_t *a);
/* Unbinds the users whose grace is over, at most WR_AMQP_RPC_BUDGET of them;
 * *more (may be NULL) is set when more are due. */
int wr_amqp_node_unbind_due(wr_amqp_t *a, bool *more);
/* After a new connection: binds again up to WR_AMQP_RPC_BUDGET online users
 * not yet bound on it. Returns 0 or a negative errno; a->binds.resuming
 * stays true while users are left. */
int wr_amqp_node_resume_step(wr_amqp_t *a);
/* Cluster mode: what a delivery's headers say before it goes to the loop.
 * Returns 0 (deliver it), 3 when it is a fan copy that ended in a mailbox or
 * this node's own fan copy (ack and drop it: the node that sent it delivered
 * it) or a control message (acted on, then acked), or a negative errno. A copy that
 * expired in another node's queue unbinds that node for user (it did not
 * consume its queue for cluster.node_ttl_ms: stopped, or gone for good). */
/* Tells the nodes where user (key) is connected that their mailbox now
 * exists: a control message through Q.route (none bound: it lands in the
 * new mailbox, whose consumers drop it). 0 or -ECONNRESET. */
int wr_amqp_node_mailbox_made(wr_amqp_t *a, const char *key, const char *user);
int wr_amqp_node_inspect(wr_amqp_t *a, const amqp_table_t *h, wr_amqp_source_t source,
                         const char *user, bool *fan);
void wr_amqp_node_free(wr_amqp_t *a);

/* consume.c — the thread body */
void *wr_amqp_thread_main(void *arg);

/* publish.c — verdicts and confirms */

/* Executes the verdict of d (takes ownership). Returns 0, or a negative
 * errno when the connection failed (d has been freed or kept as pending). */
int wr_amqp_verdict_run(wr_amqp_t *a, wr_amqp_delivery_t *d);

/* basic.ack / basic.nack from channel 2. Returns 0 or a negative errno. */
int wr_amqp_confirm_settle(wr_amqp_t *a, uint64_t tag, bool multiple, bool ok);

/* basic.return on channel 2: reads the returned message and marks the copy it
 * belongs to as failed. Returns 0 or a negative errno. */
int wr_amqp_confirm_return(wr_amqp_t *a, const amqp_basic_return_t *ret);

/* Drops every pending confirm (connection lost): the originals are freed
 * unacked (the broker requeues them), publish_failures counts the copies. */
void wr_amqp_confirm_drop_all(wr_amqp_t *a);

/* Monotonic and wall clocks in ms. */
int64_t wr_amqp_now_ms(void);
int64_t wr_amqp_wall_ms(void);

#endif
