/* The loop thread's counters: written by the delivery core (core.c) and the
 * bridge, read by the admin endpoints. Loop thread only. */
#ifndef WARREN_BRIDGE_STATS_INT_H
#define WARREN_BRIDGE_STATS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/metrics_int.h"
#include "config/config.h"

#define WR_LATENCY_NBOUNDS 18 /* finite histogram bounds, see wr_latency_bounds */
#define WR_LOOP_NBOUNDS 9     /* see wr_loop_bounds */

/* Loop-thread counters (monotonic unless noted). */
typedef struct wr_bridge_stats_s {
  uint64_t consumed[2];         /* by body format: json, msgpack */
  uint64_t rejected;            /* undecodable/too large/no target → Q.dead */
  uint64_t dead_by_reason[8];   /* indexed by wr_env_result_t */
  uint64_t delivered;           /* notification frames queued to clients */
  uint64_t written;             /* notification frames handed to the kernel */
  uint64_t client_acks;         /* ids acked by clients that matched a waiting target */
  uint64_t client_acks_unknown; /* ids acked that matched nothing (late/duplicate) */
  uint64_t client_bad_messages;
  uint64_t targets_delivered;
  uint64_t targets_offline;
  uint64_t ack_timeouts;
  uint64_t retried[WR_CONFIG_MAX_DELAYS]; /* ladder copies by step */
  uint64_t parked_max_attempts;
  uint64_t parked_expired;
  uint64_t broadcasts;
  /* Broadcast fan-out in ms: from consume (AMQP thread) to the frame handed
   * to the last connection's socket, by wr_loop_bounds, and the last one. */
  wr_hist_t fanout;
  double fanout_last_ms; /* the latest broadcast */
  uint64_t fanout_last_conns;
  uint64_t deferred; /* frames not sent: connection over half its output cap */
  uint64_t verdicts_acked;
  uint64_t requeued;
  uint64_t discarded_stale;   /* deliveries of a lost connection dropped */
  uint64_t copy_user_ignored; /* x-warren-user naming a user the body does not target */
  /* Mailboxes (core.c). */
  uint64_t mailbox_copies;      /* offline copies sent to mailboxes */
  uint64_t mailbox_requeued;    /* mailbox items given back to their mailbox */
  uint64_t mailbox_redelivered; /* mailbox items unacked within ack.timeout_ms */
  uint64_t mailbox_pauses;      /* mailbox consumers paused after such an item */
  uint64_t mailbox_rejected;    /* mailbox items whose body does not name the user */
  uint64_t parked_unacked;      /* mailbox items parked at mailbox.max_redeliveries */
  /* Cluster mode (core.c, docs/cluster.md). */
  uint64_t routed_copies;    /* copies for Q.route in verdicts (one per target) */
  uint64_t routed_broadcasts; /* broadcasts sent once to Q.broadcast */
  uint64_t node_stale;       /* node-queue copies for a user with no connection
                                here: wasted (a stale or grace binding), mailed */
  uint64_t fan_copies;       /* fan copies of delivered mailbox items, for the
                                user's devices on other nodes */
  uint64_t fan_undelivered;  /* fan copies no device here took: dropped */
  /* From a user's mailbox opening (their first connection) to its first
   * item on the wire, in ms, by wr_loop_bounds. */
  wr_hist_t mailbox_replay;
  /* Delivery latency in ms, from the envelope's created_at, else the AMQP
   * timestamp, else consume time, to the client ack (or write in write mode),
   * by wr_latency_bounds. */
  wr_hist_t latency;
  /* Event-loop iterations in ms by busy time (wall, from one poll to the
   * next, minus the time blocked in poll) and by the loop thread's CPU time
   * over the same span, by wr_loop_bounds; max is the largest iteration. A
   * busy wall time far above its CPU time means the thread waited for a core. */
  wr_hist_t loop_busy, loop_cpu;
} wr_bridge_stats_t;

extern const double wr_latency_bounds[WR_LATENCY_NBOUNDS];
extern const double wr_loop_bounds[WR_LOOP_NBOUNDS];
/* Zeroes st and gives its histograms their bounds. */
void wr_bridge_stats_init(wr_bridge_stats_t *st);

#endif
