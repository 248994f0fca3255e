/* Internal state shared by ws/server.c (listener, sweep, lifetime) and
 * ws/conn.c (one client connection). Loop thread only. */
#ifndef WARREN_WS_SERVER_INT_H
#define WARREN_WS_SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "ws/frame_int.h"
#include "ws/handshake_int.h"
#include "ws/ws.h"

/* One loop-wide read buffer serves every uv_read callback of a server: the
 * bytes are consumed (parsed or copied) before the callback returns. */
#define WR_WS_READ_BUF 65536

/* How long a closing connection may take to flush before its TCP is cut. */
#define WR_WS_CLOSE_GRACE_MS 2000

typedef enum {
  WR_WS_STATE_HANDSHAKE = 0, /* reading the request head */
  WR_WS_STATE_HTTP,          /* writing a plain HTTP answer, then close */
  WR_WS_STATE_OPEN,          /* WebSocket open */
  WR_WS_STATE_CLOSING,       /* close frame queued or exchanged, flushing */
  WR_WS_STATE_CLOSED,        /* TCP handle closing or closed */
} wr_ws_state_t;

/* One queued output item: either a server data frame (header + shared
 * payload) or raw bytes (HTTP head, bytes from wslay) stored after it. */
typedef struct wr_ws_out_s {
  struct wr_ws_out_s *next;
  wr_ws_buf_t *buf; /* data frame payload (a reference), NULL for raw */
  void *ctx;        /* on_sent_cb context, NULL = none */
  size_t len;       /* total bytes: header + payload, or raw length */
  uint8_t hdr_len;
  uint8_t hdr[10];
  bool frame;    /* counts in frames_sent (a data frame, or the unsent rest of one) */
  uint8_t raw[]; /* raw bytes when buf == NULL */
} wr_ws_out_t;

/* A frame written straight to the socket whose on_sent_cb is still owed. */
typedef struct {
  wr_ws_conn_t *conn;
  void *ctx;
} wr_ws_sent_t;

struct wr_ws_conn_s {
  uv_tcp_t tcp; /* first: the handle's data points back here too */
  wr_ws_server_t *srv;
  wr_ws_conn_t *prev, *next; /* server's connection list */
  uint64_t id;
  wr_ws_state_t state;
  bool opened;   /* reached OPEN: on_close_cb is owed */
  bool writing;  /* one uv_write in flight */
  bool in_wslay; /* inside wslay_event_recv/send: no pump, no re-entry */
  bool close_after_flush;
  bool close_counted; /* the close reason was counted in the stats */
  bool lingering;     /* our side is shut down, waiting for the client's EOF */
  bool peer_eof;      /* the client half-closed while we were still writing */
  bool hs_counted;    /* counted in stats.handshakes_in_progress */
  wr_ws_format_t format;
  uint16_t close_code;   /* close we initiated, 0 = none */
  uint32_t replies_owed; /* client messages allowed outside the rate (wr_ws_conn_grant) */
  char *user;
  void *data;
  wr_ws_hs_t *hs;             /* only during HANDSHAKE */
  wslay_event_context_ptr ws; /* only once OPEN */
  wr_ws_fscan_t scan;         /* frame headers, checked ahead of wslay */
  const uint8_t *in;          /* unread part of the current read */
  size_t in_len;
  wr_ws_out_t *q_head, *q_tail; /* not yet handed to uv_write */
  wr_ws_out_t *dropped;         /* data frames dropped by a slow-consumer close */
  size_t queued_bytes;          /* queued + in-flight bytes */
  uint64_t t_start;             /* ms (uv_now) at accept */
  uint64_t last_recv;           /* ms of the last byte received */
  uint64_t last_ping;           /* ms of the last ping sent (or open) */
  uint64_t write_started;       /* ms when the write in flight was started */
  uint64_t close_deadline;      /* ms after which the TCP is cut, 0 = none */
  int64_t token_exp;            /* unix s, 0 = none */
  uint64_t rate_tokens;         /* message token bucket, in 1/1000 of a message */
  uint64_t rate_refill;         /* ms (uv_now) of the last refill */
};

struct wr_ws_server_s {
  uv_loop_t *loop;
  const wr_config_t *cfg;
  const wr_ws_callbacks_t *cbs;
  bool websocket;
  bool listener_open;
  bool freeing;
  uv_tcp_t listener;
  uv_timer_t sweep;
  /* on_sent_cb is never called from inside wr_ws_conn_send: frames written
   * there wait here for the check handle (same loop iteration). */
  uv_check_t sent_check;
  wr_ws_sent_t *sent;
  size_t n_sent, cap_sent;
  unsigned handles; /* initialized handles not yet closed */
  wr_ws_conn_t *conns;
  uint64_t next_id;
  wr_ws_stats_t stats;
  void (*done_cb)(void *arg);
  void *done_arg;
  uint8_t rbuf[WR_WS_READ_BUF];
};

/* Accepts one pending connection from the listener. Returns 0 or a negative
 * errno (the connection is then dropped). */
int wr_ws_conn_accept(wr_ws_server_t *srv);

/* Periodic checks of one connection: handshake timeout, ping, idle, token
 * expiry, close grace. now is uv_now, wall is unix seconds. */
void wr_ws_conn_sweep(wr_ws_conn_t *c, uint64_t now, int64_t wall);

/* Closes the TCP handle now (no close frame). on_close_cb follows from the
 * close callback for opened connections. */
void wr_ws_conn_abort(wr_ws_conn_t *c);

/* Runs the owed on_sent_cb(0) of frames written directly, in order. */
void wr_ws_server_flush_sent(wr_ws_server_t *srv);

/* Called by conn.c from the last close callback of a connection. */
void wr_ws_server_conn_gone(wr_ws_server_t *srv, wr_ws_conn_t *c);

#endif
