/* Internal state of the bridge, shared by the bridge sources. Loop thread unless a
 * field says otherwise. */
#ifndef WARREN_BRIDGE_INT_H
#define WARREN_BRIDGE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "amqp/amqp.h"
#include "bridge/bridge.h"
#include "bridge/envelope_int.h"
#include "bridge/index_int.h"
#include "bridge/metrics_int.h"
#include "bridge/ring_int.h"
#include "ws/ws.h"

#define WR_MAX_QUEUE_STATS (WR_CONFIG_MAX_DELAYS + 4)
#define WR_LATENCY_NBOUNDS 18 /* finite histogram bounds, see wr_latency_bounds */
#define WR_LOOP_NBOUNDS 9     /* see wr_loop_bounds */

typedef enum { WR_PHASE_RUNNING = 0, WR_PHASE_DRAINING, WR_PHASE_CLOSING } wr_phase_t;

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
  uint64_t discarded_stale; /* deliveries of a lost connection dropped */
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
/* Zeroes st and gives its histograms their bounds (admin.c). */
void wr_bridge_stats_init(wr_bridge_stats_t *st);

typedef struct wr_bridge_s {
  const wr_config_t *cfg;
  const char *config_path;
  wr_config_t *reloaded[16]; /* configs loaded by SIGHUP, kept until exit */
  size_t n_reloaded;
  uv_loop_t loop;
  wr_ws_server_t *ws;
  wr_ws_server_t *admin;
  wr_ws_callbacks_t ws_cbs;
  wr_ws_callbacks_t admin_cbs;
  wr_amqp_t *amqp;
  wr_amqp_callbacks_t amqp_cbs;

  wr_ring_t deliveries; /* AMQP thread → loop */
  wr_ring_t commands;   /* loop → AMQP thread */
  uv_async_t async;
  uv_check_t check;
  uv_prepare_t prepare;                       /* measures each loop iteration */
  uint64_t it_wall_ns, it_idle_ns, it_cpu_ns; /* at the previous prepare */
  uv_timer_t sweep;
  uv_timer_t drain_timer;
  uv_timer_t retry_timer;   /* flushes the overflow when the command ring was full */
  uv_timer_t verdict_timer; /* wakes the AMQP thread for verdicts it has not taken */
  size_t verdict_mark;      /* wr_ring_pushed(&commands) when verdict_timer was armed */
  uv_signal_t sig_term, sig_int, sig_hup;

  wr_index_t index;
  wr_list_t pendings; /* wr_pending_t.node, in arrival order */
  size_t n_pendings;

  /* Verdicts that found the command ring full, FIFO. */
  wr_amqp_delivery_t **overflow;
  size_t ov_head, ov_len, ov_cap;
  bool wake_needed;

  /* Written by the AMQP thread. */
  atomic_bool consuming;
  atomic_uint_fast64_t lost_generation; /* highest generation known lost */
  uint64_t seen_lost_generation;        /* loop's copy */
  pthread_mutex_t qstats_lock;
  wr_amqp_queue_stat_t qstats[WR_MAX_QUEUE_STATS];
  size_t n_qstats;

  bool was_consuming; /* loop's view, for logs */
  wr_phase_t phase;
  bool listening;
  uint64_t deadline_ms; /* loop time: end of the drain, then of the close grace */
  int exit_code;
  wr_ws_buf_t *pong[WR_WS_NFORMATS];
  wr_bridge_stats_t stats;
} wr_bridge_t;

/* delivery.c */
void wr_delivery_handle(wr_bridge_t *b, wr_amqp_delivery_t *d);
void wr_delivery_conn_opened(wr_bridge_t *b, wr_bconn_t *c);
void wr_delivery_conn_closed(wr_bridge_t *b, wr_bconn_t *c);
void wr_delivery_client_ack(wr_bridge_t *b, wr_bconn_t *c, const char *id);
void wr_delivery_sent(wr_bridge_t *b, void *ctx, int status);
void wr_delivery_sweep(wr_bridge_t *b, uint64_t now_ms);
/* Hands back every delivery of a generation <= gen as stale (REQUEUE, which
 * the AMQP thread drops). */
void wr_delivery_discard_generation(wr_bridge_t *b, uint64_t gen);
/* Hands back every pending delivery with WR_VERDICT_REQUEUE (shutdown). */
void wr_delivery_requeue_all(wr_bridge_t *b);
/* Sends a verdict to the AMQP thread (takes ownership of d). */
void wr_bridge_verdict(wr_bridge_t *b, wr_amqp_delivery_t *d);
/* Timer callback that retries verdicts which found the command ring full. */
void wr_bridge_retry_cb(uv_timer_t *t);
/* Sends a small JSON object (encoded for the connection's format). */
int wr_bridge_send_json(wr_bridge_t *b, wr_bconn_t *c, json_t *msg);

/* admin.c */
int wr_admin_http_cb(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                     wr_ws_http_response_t *resp, void *data);
int wr_public_http_cb(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                      wr_ws_http_response_t *resp, void *data);
/* warren's metrics table, rows in /metrics order (for tests). */
extern const wr_metric_t wr_admin_metrics[];
extern const size_t wr_admin_n_metrics;
/* Appends the /metrics text (json false) or the /api/stats object (json true)
 * of b, with the WebSocket and AMQP counters read from ws and as. Loop thread;
 * everything is borrowed. */
void wr_admin_render(wr_bridge_t *b, const wr_ws_stats_t *ws, const wr_amqp_stats_t *as, bool json,
                     wr_sbuf_t *sb);

int64_t wr_now_realtime_ms(void);

#endif
