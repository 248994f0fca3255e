/* Internal state of the bridge, shared by the bridge sources. Loop thread unless a
 * field says otherwise. */
#ifndef WARREN_BRIDGE_INT_H
#define WARREN_BRIDGE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "amqp/amqp.h"
#include "bridge/bridge.h"
#include "bridge/core_int.h"
#include "bridge/envelope_int.h"
#include "bridge/metrics_int.h"
#include "bridge/ring_int.h"
#include "bridge/stats_int.h"
#include "ws/ws.h"

#define WR_MAX_QUEUE_STATS WR_AMQP_POLLED_MAX
typedef enum { WR_PHASE_RUNNING = 0, WR_PHASE_DRAINING, WR_PHASE_CLOSING } wr_phase_t;

typedef struct wr_bridge_s {
  const wr_config_t *cfg; /* as started: the AMQP thread and the admin server keep it */
  const char *config_path;
  wr_config_t *reloaded; /* the latest SIGHUP configuration (the ws server's), or NULL */
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

  wr_core_t core; /* the delivery decisions: index, pending deliveries */

  /* Commands that found the command ring full, FIFO. */
  wr_amqp_cmd_t **overflow;
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

/* bridge.c */
/* Sends a command (a delivery with its verdict, a mailbox command) to the
 * AMQP thread, in order; takes ownership of c. */
void wr_bridge_command(wr_bridge_t *b, wr_amqp_cmd_t *c);

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
