/* warren AMQP thread: the only owner of the rabbitmq-c connection.
 *
 * It declares the topology (docs/architecture.md, "Topology"), consumes amqp.queue with manual
 * acks and qos = amqp.prefetch, hands every delivery to a sink callback, and
 * executes verdicts it pulls from a command source when woken: acks, nacks,
 * ladder/park publishes with publisher confirms (then the ack of the
 * original). It reconnects with capped exponential backoff and jitter; each
 * new connection has a new generation and verdicts of older generations are
 * dropped (the broker has requeued those messages already).
 *
 * amqp/ knows nothing of rings or sockets: the bridge supplies callbacks. */
#ifndef WARREN_AMQP_H
#define WARREN_AMQP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct wr_amqp_s wr_amqp_t;

/* What the loop decided for one delivery. */
typedef enum {
  WR_VERDICT_NONE = 0,
  WR_VERDICT_ACK,     /* basic.ack */
  WR_VERDICT_DEAD,    /* basic.nack(requeue=false) → Q.dlx → Q.dead */
  WR_VERDICT_REQUEUE, /* basic.nack(requeue=true) */
  WR_VERDICT_PUBLISH, /* publish every entry of pubs with confirms, then ack;
                         if any publish is nacked or the channel fails, the
                         original is not acked (it will be redelivered); if a
                         copy cannot be built at all (copies_refused), the
                         original is dead-lettered once the others settle */
} wr_verdict_kind_t;

typedef enum {
  WR_PUB_RETRY = 0,   /* to exchange Q.retry, routing key "<delay_ms>" */
  WR_PUB_PARK = 1,    /* to the default exchange, routing key Q.parked */
  WR_PUB_MAILBOX = 2, /* to exchange Q.mailbox, routing key the user key of user,
                         mandatory, with the envelope's remaining lifetime as
                         its expiration; when the broker nacks or returns it,
                         the fallback copy below is published instead */
  WR_PUB_ROUTE = 3,     /* cluster mode (docs/cluster.md): to exchange Q.route,
                           routing key the user key of user, mandatory; the
                           nodes bound for the user get it, or (no node) its
                           alternate exchange Q.mailbox; nacked or returned:
                           the fallback copy */
  WR_PUB_BROADCAST = 4, /* cluster mode: to exchange Q.broadcast (every node) */
} wr_pub_kind_t;

/* Where a delivery was consumed from (docs/mailboxes.md). */
typedef enum {
  WR_SRC_QUEUE = 0,   /* Q: originals and ladder copies */
  WR_SRC_MAILBOX,     /* a user's mailbox: target_user is its owner */
  WR_SRC_MAILBOX_NEW, /* Q.mailbox.new: a copy for target_user, who had no
                         mailbox; it has one now */
  WR_SRC_NODE,        /* cluster mode: this node's queue Q.node.<id>, a copy
                         for target_user (or a broadcast: target_user NULL) */
} wr_amqp_source_t;

/* What the loop sends the AMQP thread through the command source: a
 * delivery with its verdict, or a mailbox command. Every command starts with
 * this header. */
typedef enum {
  WR_CMD_VERDICT = 0,   /* a wr_amqp_delivery_t */
  WR_CMD_MAILBOX_OPEN,  /* a wr_amqp_mbox_cmd_t: the user is online, consume
                           their mailbox (if it exists, or once it does) */
  WR_CMD_MAILBOX_CLOSE, /* a wr_amqp_mbox_cmd_t: stop consuming it */
  WR_CMD_NODE_JOIN,     /* cluster mode, a wr_amqp_mbox_cmd_t: the user's first
                           connection on this node: bind the node queue to
                           Q.route with their key (before the mailbox opens) */
  WR_CMD_NODE_LEAVE,    /* their last connection closed: unbind after
                           cluster.unbind_grace_ms unless they join again */
  WR_CMD_NODE_STALE,    /* a copy for them came with no connection here:
                           unbind now (before the verdict that mails it) */
} wr_amqp_cmd_kind_t;

typedef struct wr_amqp_cmd_s {
  wr_amqp_cmd_kind_t kind;
} wr_amqp_cmd_t;

typedef struct wr_amqp_mbox_cmd_s {
  wr_amqp_cmd_t cmd;
  char user[]; /* NUL-terminated user id */
} wr_amqp_mbox_cmd_t;

/* A mailbox command for user (copied). Any thread. NULL when out of memory. */
wr_amqp_cmd_t *wr_amqp_mbox_cmd_new(wr_amqp_cmd_kind_t kind, const char *user);
/* Frees any command (a delivery with wr_amqp_delivery_free). Same threads as
 * wr_amqp_delivery_free. */
void wr_amqp_cmd_free(wr_amqp_cmd_t *c);

/* One copy of the original message to publish. The AMQP thread copies the
 * original body, content_type, timestamp and headers, and sets/overrides the
 * headers x-warren-attempt (attempt), x-warren-user (user, if non-NULL),
 * x-warren-expires-at (expires_at_ms, if non-zero), x-warren-reason (reason,
 * park only), and message_id = id. Persistent (delivery_mode 2). An id over
 * 255 bytes (an AMQP short string) is left out of message_id, and original
 * headers that cannot be encoded or do not fit the frame are left out of the
 * copy; both are counted (wr_amqp_stats_t). */
typedef struct wr_amqp_pub_s {
  wr_pub_kind_t kind;
  uint32_t delay_ms;     /* retry: which ladder queue */
  uint32_t attempt;      /* value for x-warren-attempt */
  char *user;            /* malloc'd by the loop, freed with the delivery */
  char *id;              /* malloc'd by the loop, freed with the delivery */
  int64_t expires_at_ms; /* 0 = none */
  const char *reason;    /* static string, park only: "max_attempts", "expired",
                            "unacked" */
  /* WR_PUB_MAILBOX: the ladder or park copy to publish instead when the
   * mailbox publish is nacked or returned (attempt, delay_ms, reason too). */
  wr_pub_kind_t fallback_kind;
  uint32_t fallback_delay_ms;
  uint32_t fallback_attempt;
  const char *fallback_reason;
  /* WR_PUB_ROUTE only: a fan copy of a mailbox item this node delivered,
   * for the user's devices on other nodes (docs/cluster.md). It carries
   * x-warren-fan = this node's id (set by the AMQP thread): its own node
   * drops it, other nodes deliver it but never mail it, and one that ends
   * in a mailbox is dropped. It has no fallback: refused, the mailbox item
   * is requeued. */
  bool fan;
  const char *fan_from; /* the AMQP thread's: cluster.node_id */
} wr_amqp_pub_t;

/* One consumed message. Allocated on the AMQP thread, travels to the loop and
 * back (with a verdict) and is freed on the AMQP thread. While the loop owns
 * it, the AMQP thread never touches it. */
typedef struct wr_amqp_delivery_s {
  wr_amqp_cmd_t cmd;       /* kind WR_CMD_VERDICT: it travels back as a command */
  wr_amqp_source_t source; /* which queue it came from (and so which channel) */
  uint64_t tag;            /* delivery tag on its channel */
  uint64_t generation;     /* connection generation it came from (from 1) */
  bool redelivered;
  bool backlog;           /* the first mailbox item after a consume that found
                             the mailbox holding messages */
  bool fan;               /* WR_SRC_NODE: a fan copy from another node (see
                             wr_amqp_pub_t.fan): deliver, never mail */
  char *content_type;     /* NUL-terminated or NULL */
  char *message_id;       /* NULL if absent */
  int64_t timestamp_s;    /* AMQP timestamp property, 0 if absent */
  int64_t consumed_at_ms; /* CLOCK_REALTIME ms when it was read */
  uint64_t consumed_ns;   /* CLOCK_MONOTONIC ns when it was read (0 = unknown) */
  uint32_t attempt;       /* header x-warren-attempt, 0 if absent; at most
                             WR_AMQP_ATTEMPT_MAX */
  char *target_user;      /* header x-warren-user (a ladder copy for one user), or NULL */
  int64_t expires_at_ms;  /* header x-warren-expires-at, 0 if absent */
  bool trusted;           /* a copy warren made that came back from its retry
                             ladder: only then are attempt, target_user and
                             expires_at_ms read from the x-warren-* headers;
                             an original's are ignored (amqp/README.md) */
  uint8_t *body;          /* NULL when body_len > amqp.max_body_bytes: such a
                             body is read and dropped, never buffered */
  size_t body_len;        /* as announced by the broker */

  /* Set by the loop before it hands the delivery back. */
  wr_verdict_kind_t verdict;
  const char *dead_reason; /* static, for logs/counters with WR_VERDICT_DEAD */
  wr_amqp_pub_t *pubs;     /* malloc'd array (WR_VERDICT_PUBLISH), freed with the delivery */
  size_t n_pubs;

  void *priv; /* the AMQP thread's own data (e.g. the raw envelope) */
} wr_amqp_delivery_t;

/* The largest attempt a delivery reports, so that the loop's attempt + 1
 * never wraps around to 0 (which would restart the ladder forever). */
#define WR_AMQP_ATTEMPT_MAX (UINT32_MAX - 1)

/* The user key (docs/mailboxes.md, "Names and keys"): the routing key and
 * mailbox name part of a user. "u.<id>" when the id is 1..128 bytes of
 * printable ASCII other than space and does not start with "~", else
 * "u.~<lowercase hex SHA-256 of the id>". Writes it NUL-terminated to out and
 * returns its length, or -ENOSPC when outlen is too small
 * (WR_AMQP_USER_KEY_MAX always suffices). */
#define WR_AMQP_USER_KEY_PLAIN_MAX 128
#define WR_AMQP_USER_KEY_MAX (2 + WR_AMQP_USER_KEY_PLAIN_MAX + 1)
int wr_amqp_user_key(const char *user, char *out, size_t outlen);

/* "<queue>.mbox.<key>", the mailbox queue of a user key. Returns its length or
 * -ENAMETOOLONG past 255 bytes (or outlen). */
int wr_amqp_mailbox_name(const char *queue, const char *key, char *out, size_t outlen);

/* Frees a delivery including pubs[] and their strings. Call only on the AMQP
 * thread, or when no AMQP thread runs any more (tests, teardown). */
void wr_amqp_delivery_free(wr_amqp_delivery_t *d);

/* Frees d's copies (pubs and their strings) and empties the list: a verdict
 * that will not publish after all. Whoever owns d. */
void wr_amqp_delivery_drop_pubs(wr_amqp_delivery_t *d);

/* CLOCK_MONOTONIC in ns: the clock of consumed_ns. Any thread. */
uint64_t wr_amqp_now_ns(void);

/* Depth and consumers of one queue, from a passive queue.declare. */
typedef struct wr_amqp_queue_stat_s {
  char name[256];
  int64_t messages;  /* -1 when unknown */
  int64_t consumers; /* -1 when unknown */
} wr_amqp_queue_stat_t;

/* Most queues one poll reports: Q, one per retry delay, Q.parked, Q.dead,
 * Q.mailbox.new and this node's queue. */
#define WR_AMQP_POLLED_MAX (WR_CONFIG_MAX_DELAYS + 5)

typedef struct wr_amqp_callbacks_s {
  void *data;
  /* AMQP thread. Takes ownership of d. Returns 0, or -ENOSPC when the sink is
   * full (the AMQP thread then waits a little and tries again, still servicing
   * heartbeats). */
  int (*deliver_cb)(wr_amqp_delivery_t *d, void *data);
  /* AMQP thread. Returns the next command (a delivery carrying its verdict,
   * or a mailbox command), or NULL when none is waiting. Ownership comes back
   * to the AMQP thread. */
  wr_amqp_cmd_t *(*next_command_cb)(void *data);
  /* AMQP thread. State changes: consuming = true once basic.consume is ok on
   * a generation; false after basic.cancel, a broker-side consumer cancel or
   * when the connection ends. lost = true only when the connection of that
   * generation is gone (its unsettled deliveries will be redelivered, so
   * their verdicts are useless). */
  void (*state_cb)(bool consuming, bool lost, uint64_t generation, void *data);
  /* AMQP thread. Queue depths polled every admin.queue_poll_ms (may be NULL).
   * stats is borrowed for the call. */
  void (*queue_stats_cb)(const wr_amqp_queue_stat_t *stats, size_t n, void *data);
} wr_amqp_callbacks_t;

/* Counters, written by the AMQP thread with relaxed atomics, readable from any
 * thread with __atomic_load_n(…, __ATOMIC_RELAXED). */
typedef struct wr_amqp_stats_s {
  uint64_t connected;  /* 1 while connected and consuming */
  uint64_t reconnects; /* connections opened after the first */
  uint64_t consumed;
  uint64_t acked;
  uint64_t ack_frames; /* basic.ack frames that carried them (multiple=true coalesces) */
  uint64_t dead_lettered;
  uint64_t requeued;
  uint64_t published;        /* ladder + park copies confirmed */
  uint64_t publish_failures; /* nacked or lost before confirm */
  uint64_t stale_verdicts;   /* dropped: older generation */
  uint64_t unacked;          /* deliveries of the current generation not yet settled */
  uint64_t watchdog_kicks;   /* sockets shut down because the thread was stuck */
  /* Copies of one message that could not be published as asked. Each is that
   * message's outcome, never the connection's (amqp/README.md). */
  uint64_t copies_without_message_id; /* id over 255 bytes: sent without message_id */
  uint64_t copies_without_headers;    /* the original's headers could not be encoded,
                                         kept or did not fit: sent with warren's only */
  uint64_t copies_refused;            /* not even that copy could be built: the
                                         original was dead-lettered */
  uint64_t untrusted_headers;         /* originals whose x-warren-* headers were ignored */
  uint64_t mailbox_puts;              /* mailbox copies confirmed */
  uint64_t mailbox_fallbacks;         /* mailbox copies nacked or returned: the ladder took them */
  uint64_t mailboxes_created;         /* declared for a copy that found no mailbox */
  uint64_t mailbox_items;             /* deliveries consumed from mailboxes */
  uint64_t mailbox_consumers;         /* now: mailboxes being consumed (users online with one) */
  uint64_t mailboxes_known;           /* now: mailboxes this process knows to exist */
  uint64_t mailbox_probes;            /* passive declares: does this online user have one? */
  uint64_t mailboxes_deleted;         /* by the janitor, empty and unused */
  uint64_t mailbox_rebinds;           /* the janitor's delete found a message: bound again */
  uint64_t mailbox_new_rejected;      /* Q.mailbox.new messages naming no user: to Q.dead */
  uint64_t bodies_skipped;            /* bodies over amqp.max_body_bytes read and
                                         dropped unbuffered (the loop dead-letters them) */
  /* Cluster mode (docs/cluster.md). */
  uint64_t routed;            /* copies to Q.route confirmed */
  uint64_t route_fallbacks;   /* route copies nacked or returned: the ladder took them */
  uint64_t broadcasts_routed; /* copies to Q.broadcast confirmed */
  uint64_t node_items;        /* deliveries consumed from this node's queue */
  uint64_t node_binds;        /* queue.bind of a user key to this node's queue */
  uint64_t node_unbinds;      /* queue.unbind: grace over, or a stale binding */
  uint64_t node_rejoins;      /* a user back within the grace: no unbind, no bind */
  uint64_t node_users_bound;  /* now: user keys bound to this node's queue */
  uint64_t broadcasts_expired; /* broadcast copies dead-lettered from a node queue: dropped */
  uint64_t fan_echoes;        /* this node's own fan copies back from its queue: dropped */
  uint64_t fan_dropped;       /* fan copies that ended in a mailbox: dropped */
  uint64_t node_foreign_unbinds; /* another node's binding removed: a copy expired in its queue */
} wr_amqp_stats_t;

/* Creates the AMQP side (does not connect). cfg and cbs are borrowed and must
 * outlive it. Returns 0 or a negative errno. */
int wr_amqp_new(wr_amqp_t **out, const wr_config_t *cfg, const wr_amqp_callbacks_t *cbs);

/* Connects once, declares the topology and closes: used by start-up to fail
 * fast with a clear message (e.g. queue_type mismatch). Blocking. Returns 0 or
 * a negative errno and a message in err. */
int wr_amqp_check(const wr_config_t *cfg, char *err, size_t errlen);

/* Starts the AMQP thread (signals must already be blocked by the caller).
 * Returns 0 or a negative errno. */
int wr_amqp_start(wr_amqp_t *a);

/* Thread-safe, async-signal-safe wake-up (an eventfd write): verdicts are
 * waiting. Cheap to call often. */
void wr_amqp_wake(wr_amqp_t *a);

/* The AMQP thread's acks go to the broker in batches: a batch goes when it
 * holds wr_amqp_batch(prefetch) acks (a quarter of the prefetch window, at
 * most 64 and at least 1, so the broker never waits on the window) or when
 * its first ack is WR_AMQP_BATCH_LAG_MS old. Verdicts wake the thread by the
 * rule of wr_amqp_wake_batch below; under load it wakes for broker data many
 * times a millisecond and takes whatever waits. */
#define WR_AMQP_BATCH_LAG_MS 1
size_t wr_amqp_batch(uint32_t prefetch);

/* How many verdicts make the loop wake the AMQP thread at once rather than
 * WR_AMQP_BATCH_LAG_MS later: half the prefetch window (at least one batch).
 * Under load the thread wakes for broker data anyway and takes them then; a
 * wake-up of its own costs an eventfd write and a context switch. The window never
 * waits on the lag: when the broker stops because prefetch deliveries are
 * unacked and the loop has finished them all, at least prefetch - batch + 1
 * verdicts are in the ring (the thread holds fewer than a batch of acks),
 * which is never below this. */
size_t wr_amqp_wake_batch(uint32_t prefetch);

/* Thread-safe: stop consuming (basic.cancel) but keep executing verdicts. */
void wr_amqp_cancel(wr_amqp_t *a);

/* Thread-safe: executes every verdict still waiting (the bridge hands back
 * undecided deliveries as WR_VERDICT_REQUEUE before calling this), closes the
 * channel and connection cleanly and joins the thread. */
void wr_amqp_stop(wr_amqp_t *a);

/* Thread-safe; call about once a second from another thread (the loop's
 * sweep). When the AMQP thread has made no progress for 2 × amqp.heartbeat_s
 * (20 s with heartbeats off) while connected — stuck inside a send to a hung
 * broker — shuts its socket down so the call fails and it reconnects. Returns
 * true when it did. */
bool wr_amqp_watchdog(wr_amqp_t *a);

/* Frees it (after wr_amqp_stop). */
void wr_amqp_free(wr_amqp_t *a);

const wr_amqp_stats_t *wr_amqp_stats(const wr_amqp_t *a);

/* One-shot publisher for the CLI: connects to cfg->amqp_url, enables confirms,
 * publishes body to cfg->exchange with routing_key, persistent, with
 * content_type and message_id (may be NULL; left out when over 255 bytes, an
 * AMQP short string), waits for the confirm up to timeout_ms. Returns 0 when
 * confirmed, -EPROTO when nacked/returned, -ETIMEDOUT, -ENAMETOOLONG for a
 * routing key or content type over 255 bytes, or another negative errno; err
 * gets a message. Blocking. */
int wr_amqp_publish_once(const wr_config_t *cfg, const char *routing_key, const uint8_t *body,
                         size_t len, const char *content_type, const char *message_id,
                         uint32_t timeout_ms, char *err, size_t errlen);

/* `warren replay` (amqp/replay.c; README, "Replaying parked notifications"):
 * moves the messages of Q.parked or Q.dead back to delivery, one at a time:
 * basic.get (manual ack), the copy published on a confirm channel, its
 * confirm awaited, then the source message acked. A message is never acked
 * before its copy is confirmed. Messages that stay (another user's, one that
 * cannot be republished, one the broker refused) are held unacked and
 * requeued together at the end, which puts each back in its place in a
 * classic queue; a connection that dies requeues them just the same. */
typedef enum {
  WR_REPLAY_PARKED = 0, /* Q.parked */
  WR_REPLAY_DEAD,       /* Q.dead */
} wr_amqp_replay_from_t;

/* What happened, or in a dry run would happen, to one message. */
typedef enum {
  WR_REPLAY_MAILBOX = 0, /* to the mailbox of its x-warren-user (exchange Q.mailbox) */
  WR_REPLAY_LADDER,      /* mailbox.enabled = false: to the retry ladder for its user
                            (exchange Q.retry, the first delay) */
  WR_REPLAY_EXCHANGE,    /* to amqp.exchange, routing key "replay", as a new original */
  WR_REPLAY_SKIPPED,     /* another user's (opts.user): stays */
  WR_REPLAY_LEFT,        /* cannot be republished, or the broker refused its copy: stays */
  WR_REPLAY_OUTCOMES
} wr_amqp_replay_outcome_t;

/* One message examined; every pointer is borrowed for the callback only. */
typedef struct wr_amqp_replay_item_s {
  wr_amqp_replay_outcome_t outcome;
  const char *id;     /* AMQP message_id, NULL if none */
  const char *user;   /* x-warren-user (parked only), NULL if none */
  const char *reason; /* x-warren-reason, else the newest x-death reason, NULL if none */
  int64_t age_ms;     /* since its AMQP timestamp, else since it was dead-lettered
                         (x-death time); -1 when unknown */
  bool expires_again; /* replayed with its deadline (x-warren-expires-at) already
                         passed: warren will park it as expired again */
  const char *why;    /* WR_REPLAY_LEFT: why it stays */
} wr_amqp_replay_item_t;

typedef struct wr_amqp_replay_opts_s {
  wr_amqp_replay_from_t from;
  const char *user;   /* parked only: replay only this user's; NULL = all */
  uint64_t limit;     /* stop after this many replayed (or, dry, would be); 0 = all */
  bool dry_run;       /* decide and report every message, move none */
  bool ignore_expiry; /* a copy for a user gets a fresh deadline, now +
                         mailbox.ttl_ms, instead of the one that has passed */
  /* Polled before each message: true stops the run there (the message in
   * hand, if any, is settled first). May be NULL. */
  bool (*stop_cb)(void *data);
  /* Called for every message examined, once its outcome is known. May be NULL. */
  void (*item_cb)(const wr_amqp_replay_item_t *item, void *data);
  void *data;
} wr_amqp_replay_opts_t;

typedef struct wr_amqp_replay_counts_s {
  uint64_t depth;                 /* ready messages in the source queue at start */
  uint64_t examined;              /* messages read (at most depth) */
  uint64_t n[WR_REPLAY_OUTCOMES]; /* by outcome (dry run: would be) */
  uint64_t expires_again;         /* replayed ones with expires_again */
  bool interrupted;               /* stop_cb said stop */
  bool limit_reached;
} wr_amqp_replay_counts_t;

/* Runs one replay against cfg->amqp_url (blocking; opens and closes its own
 * connection). opts and cfg are borrowed; counts (zeroed here) says what
 * happened, also when it fails midway. Returns 0; -ENOENT when the source
 * queue or a destination exchange does not exist (warren never ran with this
 * configuration); -ETIMEDOUT when the broker did not answer in time; another
 * negative errno when the connection or a channel failed. err gets a
 * message on failure. Whatever was not acked went back to its queue. */
int wr_amqp_replay(const wr_config_t *cfg, const wr_amqp_replay_opts_t *opts,
                   wr_amqp_replay_counts_t *counts, char *err, size_t errlen);

#endif
