/* The delivery core (docs/architecture.md, "The delivery core"): every
 * delivery decision warren makes, with no I/O of its own.
 *
 * Events go in: a delivery consumed from the broker, a connection opened or
 * closed, a client ack, a write done or failed, an AMQP connection generation
 * lost, a tick of the clock, a configuration reload, shutdown. Actions come
 * out through a small sink: queue this frame on this connection, hand back
 * this delivery with its verdict (ack, dead-letter, requeue, or publish these
 * copies then ack). The core owns the user index, the pending deliveries and
 * their targets, ack deadlines, pacing and the offline/park decisions; the
 * bridge (bridge.c) owns the rings, libuv handles, signals and the drain, and
 * only translates between them and this API.
 *
 * The contract it keeps, checked against a reference model by
 * tests/bridge/test_core_model.c and tests/fuzz/fuzz_core.c:
 *   1. a frame of a delivery goes only to connections of the users it names
 *      (any open connection, for a broadcast);
 *   2. each delivery gets exactly one verdict, only once every target has left
 *      the waiting state; none for a generation already lost (requeue, which
 *      the AMQP thread drops as stale);
 *   3. a verdict carries exactly one copy per offline target, naming that user;
 *   4. nothing a pending delivery refers to is freed before it is retired.
 *
 * The core is never re-entered: a write completion the sink reports from
 * inside one of the core's own sink calls (a write that fails synchronously)
 * is queued and applied when the event that caused it is done.
 *
 * Loop thread only. Time comes from the caller (wr_core_clock, wr_core_tick),
 * so tests run it on a fake clock. */
#ifndef WARREN_BRIDGE_CORE_INT_H
#define WARREN_BRIDGE_CORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "amqp/amqp.h"
#include "bridge/envelope_int.h"
#include "bridge/index_int.h"
#include "bridge/stats_int.h"
#include "config/config.h"
#include "ws/ws.h"

/* A client heard from within this long is alive: over half its output cap it
 * is paced, not sent to (see wr_core_sink_t.load_cb). */
#define WR_CORE_BUSY_CLIENT_MS 5000

/* The settings the core decides with: a snapshot, replaced whole on reload. */
typedef struct wr_core_config_s {
  wr_ack_mode_t ack_mode;  /* fixed for the life of the core */
  uint32_t ack_timeout_ms; /* client mode: from arrival to offline */
  uint32_t max_attempts;   /* ladder copies before a notification is parked */
  uint32_t retry_delays_ms[WR_CONFIG_MAX_DELAYS];
  size_t n_retry_delays;     /* >= 1 */
  uint64_t max_queued_bytes; /* a connection's output cap (pacing at half of it) */
  uint32_t max_body_bytes;
  bool mailbox_enabled;              /* offline copies go to mailboxes, fixed */
  uint32_t mailbox_max_redeliveries; /* ack timeouts of one mailbox item before it is parked */
  bool cluster; /* cluster mode (cluster.node_id set), fixed: Q and mailboxes are
                   routed to Q.route, this node's queue is delivered */
} wr_core_config_t;

/* The first pause of a user's mailbox after an item went unacked, and the
 * longest (each pause doubles the next). */
#define WR_CORE_MBOX_PAUSE_MIN_MS 1000
#define WR_CORE_MBOX_PAUSE_MAX_MS 300000

/* The snapshot of cfg's delivery settings. */
void wr_core_config_from(wr_core_config_t *out, const wr_config_t *cfg);

/* What the core asks of its driver. Every call is synchronous; data is passed
 * back. */
typedef struct wr_core_sink_s {
  void *data;
  /* Queue frame (borrowed; take a reference to keep it) on the connection io.
   * ctx, when non-NULL, must come back exactly once through
   * wr_core_write_done when this returns 0, and never when it fails.
   * ack_expected: the client will answer with an ack (client mode). Returns 0,
   * or a negative errno when nothing was queued (the connection is closing, or
   * over its output cap and being closed). */
  int (*send_cb)(void *io, wr_ws_buf_t *frame, void *ctx, bool ack_expected, void *data);
  /* The connection's unwritten output and how long ago the client last sent
   * anything, for pacing. */
  void (*load_cb)(void *io, size_t *queued_bytes, uint64_t *idle_ms, void *data);
  /* Takes ownership of d, whose verdict (and pubs) are set. */
  void (*verdict_cb)(wr_amqp_delivery_t *d, void *data);
  /* CLOCK_MONOTONIC ns, for the broadcast fan-out metric only; may be NULL. */
  uint64_t (*now_ns_cb)(void *data);
  /* Start (open) or stop consuming user's mailbox (mailboxes on). Sent in
   * the order the AMQP thread must act on them relative to verdicts: a
   * close always goes before the requeues of that user's mailbox items. */
  void (*mailbox_cb)(const char *user, bool open, void *data);
  /* Cluster mode: bind this node's queue for user (WR_CMD_NODE_JOIN, before
   * the mailbox opens), unbind it after the grace (WR_CMD_NODE_LEAVE, after
   * the mailbox closes), or now (WR_CMD_NODE_STALE, before the verdict of
   * the copy that found user gone). */
  void (*node_cb)(const char *user, wr_amqp_cmd_kind_t op, void *data);
} wr_core_sink_t;

typedef struct wr_pending_s wr_pending_t;

typedef struct wr_core_s {
  wr_core_config_t cfg;
  wr_core_sink_t sink;
  wr_bridge_stats_t *stats; /* borrowed */
  wr_index_t index;
  wr_list_t pendings; /* unresolved deliveries, in arrival order */
  size_t n_pendings;
  uint64_t now_ms;          /* monotonic, from the caller */
  int64_t wall_ms;          /* unix ms, from the caller */
  uint64_t lost_generation; /* deliveries of this generation or older are stale */
  bool closing;             /* shutdown: every delivery goes back at once */
  unsigned depth;           /* > 0 while an event runs */
  wr_list_t deferred;       /* targets with write completions to apply */
  wr_list_t paused;         /* online users whose mailbox is paused */
} wr_core_t;

/* Initializes core with a copy of cfg and sink; stats is borrowed. Returns 0
 * or -ENOMEM. */
int wr_core_init(wr_core_t *core, const wr_core_config_t *cfg, const wr_core_sink_t *sink,
                 wr_bridge_stats_t *stats);
/* Frees the core. Every connection must be closed and every delivery handed
 * back (wr_core_requeue_all) first; anything left is asserted. */
void wr_core_close(wr_core_t *core);

/* Sets the clock every later decision uses: now_ms (monotonic) and wall_ms
 * (unix ms; expiry and latency). */
void wr_core_clock(wr_core_t *core, uint64_t now_ms, int64_t wall_ms);
/* Sets the clock and settles, as offline, the targets whose ack deadline
 * (arrival + ack.timeout_ms) has passed (client mode). */
void wr_core_tick(wr_core_t *core, uint64_t now_ms, int64_t wall_ms);
/* Replaces the settings snapshot. ack_mode, mailbox_enabled and cluster are kept: they
 * cannot change while deliveries are in flight. Deadlines of deliveries in flight follow the new
 * ack_timeout_ms. */
void wr_core_reload(wr_core_t *core, const wr_core_config_t *cfg);

/* A consumed message (takes ownership of d; it comes back through verdict_cb,
 * now or later). */
void wr_core_delivery(wr_core_t *core, wr_amqp_delivery_t *d);
/* A WebSocket connection of user is open (io is the driver's handle). Sends
 * it what still waits for the user's ack (client mode). Returns the core's
 * record, or NULL when out of memory (the driver closes the connection). */
wr_core_conn_t *wr_core_conn_open(wr_core_t *core, void *io, const char *user,
                                  wr_ws_format_t format);
/* The connection is closed (after every write completion it owed). Frees c. */
void wr_core_conn_close(wr_core_t *core, wr_core_conn_t *c);
/* The client acked id. */
void wr_core_client_ack(wr_core_t *core, wr_core_conn_t *c, const char *id);
/* A frame queued with ctx was handed to the kernel (status 0) or never will be. */
void wr_core_write_done(wr_core_t *core, void *ctx, int status);
/* The AMQP connection of generation gen (and every older one) is gone: the
 * broker requeues their unsettled messages, so their deliveries are handed
 * back as stale requeues and no verdict of theirs is decided any more. */
void wr_core_generation_lost(wr_core_t *core, uint64_t gen);
/* Shutdown: hands back every pending delivery with WR_VERDICT_REQUEUE, and
 * from now on every new one at once. */
void wr_core_requeue_all(wr_core_t *core);

#endif
