/* warren WebSocket and HTTP server (loop thread only).
 *
 * Owns the listening sockets, the HTTP/1.1 request head parsing (llhttp), the
 * WebSocket handshake and JWT authentication, framing (wslay for client→server,
 * direct framing for server→client), per-connection state, pings, timeouts and
 * output caps. It reports opened/closed connections and client messages
 * through callbacks and never includes amqp/ or bridge/.
 *
 * Every function must be called on the thread that runs the uv loop. */
#ifndef WARREN_WS_H
#define WARREN_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"

typedef struct wr_ws_server_s wr_ws_server_t;
typedef struct wr_ws_conn_s wr_ws_conn_t;

/* The client's negotiated subprotocol. */
typedef enum { WR_WS_FORMAT_JSON = 0, WR_WS_FORMAT_MSGPACK = 1 } wr_ws_format_t;
#define WR_WS_NFORMATS 2

/* Close codes warren uses (RFC 6455 + our 4008). */
#define WR_WS_CLOSE_NORMAL 1000
#define WR_WS_CLOSE_GOING_AWAY 1001
#define WR_WS_CLOSE_PROTOCOL 1002
#define WR_WS_CLOSE_INVALID_DATA 1007
#define WR_WS_CLOSE_POLICY 1008
#define WR_WS_CLOSE_TOO_BIG 1009
#define WR_WS_CLOSE_INTERNAL 1011
#define WR_WS_CLOSE_SLOW_CONSUMER 4008

/* A refcounted, immutable payload shared by every connection it is sent to
 * (a notification is encoded once per format, never once per connection). */
typedef struct wr_ws_buf_s {
  uint32_t refs;
  size_t len;
  uint8_t data[]; /* len bytes */
} wr_ws_buf_t;

/* Allocates a buffer of len bytes with one reference. Returns NULL on ENOMEM. */
wr_ws_buf_t *wr_ws_buf_new(size_t len);
/* Bytes that precede the payload in a buffer's allocation. */
#define WR_WS_BUF_HEADER offsetof(wr_ws_buf_t, data)
/* Makes a buffer of mem without copying: mem is a malloc'd block of
 * WR_WS_BUF_HEADER + len bytes whose payload starts at WR_WS_BUF_HEADER (an
 * encoder asked to reserve that prefix). Takes ownership of mem; returns the
 * buffer with one reference. */
wr_ws_buf_t *wr_ws_buf_adopt(void *mem, size_t len);
/* Adds a reference and returns b. */
wr_ws_buf_t *wr_ws_buf_ref(wr_ws_buf_t *b);
/* Drops a reference; frees at zero. NULL is accepted. */
void wr_ws_buf_unref(wr_ws_buf_t *b);

/* A static HTTP response for a non-WebSocket GET (demo page, admin). */
typedef struct wr_ws_http_response_s {
  int status;                /* e.g. 200, 404, 503 */
  const char *content_type;  /* e.g. "text/html; charset=utf-8" */
  const char *extra_headers; /* NULL or "Name: value\r\n" lines */
  char *body;                /* owned by the server once returned when body_owned */
  size_t body_len;
  bool body_owned; /* true: the server free()s body after writing it */
} wr_ws_http_response_t;

typedef struct wr_ws_callbacks_s {
  void *data; /* passed back to every callback */

  /* A WebSocket connection is open and authenticated; the welcome message has
   * not been sent (the bridge sends it with wr_ws_conn_send). */
  void (*on_open_cb)(wr_ws_conn_t *conn, void *data);

  /* The connection is closed (for any reason). Called once per opened
   * connection, after on_sent_cb(-ECANCELED) for every frame it still held.
   * The conn pointer is invalid after this returns. */
  void (*on_close_cb)(wr_ws_conn_t *conn, void *data);

  /* One complete client message (text or binary), already UTF-8 checked for
   * text. Borrowed for the call. */
  void (*on_message_cb)(wr_ws_conn_t *conn, const uint8_t *msg, size_t len, bool binary,
                        void *data);

  /* A frame queued with a non-NULL ctx was handed to the kernel (status 0) or
   * will never be (status < 0: -ECANCELED when the connection closed first). */
  void (*on_sent_cb)(wr_ws_conn_t *conn, void *ctx, int status, void *data);

  /* A plain HTTP GET (no Upgrade) for a path other than server.path. Fill resp
   * and return 0, or return -ENOENT for 404. May be NULL (always 404). */
  int (*on_http_cb)(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                    wr_ws_http_response_t *resp, void *data);
} wr_ws_callbacks_t;

/* Counters, monotonic, read on the loop thread. */
typedef struct wr_ws_stats_s {
  uint64_t connections; /* open WebSocket connections now */
  uint64_t handshakes_accepted;
  uint64_t handshakes_bad_request;  /* 400/404/405/426/431 */
  uint64_t handshakes_unauthorized; /* 401 */
  uint64_t handshakes_forbidden;    /* 403 bad origin */
  uint64_t handshakes_over_limit;   /* 503: open connections + handshakes in progress reached
                                     * server.max_connections */
  uint64_t handshakes_in_progress;  /* now: TCP connections still reading their request head */
  uint64_t handshakes_timeout;
  uint64_t http_requests;        /* plain HTTP requests served */
  uint64_t closes_slow_consumer; /* 4008 */
  uint64_t closes_too_big;       /* 1009 */
  uint64_t closes_protocol;      /* 1002/1007 */
  uint64_t closes_idle;          /* idle timeout */
  uint64_t closes_token_expired; /* 1008 */
  uint64_t closes_rate_limited;  /* 1008 "rate limit": server.max_client_messages_per_s */
  uint64_t frames_sent;
  uint64_t bytes_sent;
  uint64_t messages_received;
} wr_ws_stats_t;

/* Creates a server on loop. websocket=false makes an HTTP-only server (the
 * admin port): every GET goes to on_http_cb. cfg and cbs are borrowed and must
 * outlive the server. Returns 0 or a negative errno. */
int wr_ws_server_new(wr_ws_server_t **out, uv_loop_t *loop, const wr_config_t *cfg,
                     const wr_ws_callbacks_t *cbs, bool websocket);

/* Binds host:port and starts accepting. Returns 0 or a negative errno (e.g.
 * -EADDRINUSE). */
int wr_ws_server_listen(wr_ws_server_t *srv, const char *host, uint16_t port);

/* The port actually bound (useful with port 0). */
uint16_t wr_ws_server_port(const wr_ws_server_t *srv);

/* Stops accepting new TCP connections (drain). Existing ones go on. */
void wr_ws_server_stop_accepting(wr_ws_server_t *srv);

/* Sends a close frame with code/reason to every open connection and closes
 * connections still in the handshake. */
void wr_ws_server_close_all(wr_ws_server_t *srv, uint16_t code, const char *reason);

/* Replaces the JWT key material / auth settings (SIGHUP). cfg is borrowed and
 * must outlive the server or the next call. */
void wr_ws_server_set_config(wr_ws_server_t *srv, const wr_config_t *cfg);

/* Closes every handle; done_cb (may be NULL) runs once every handle is closed
 * and the server memory is freed. */
void wr_ws_server_free(wr_ws_server_t *srv, void (*done_cb)(void *arg), void *arg);

const wr_ws_stats_t *wr_ws_server_stats(const wr_ws_server_t *srv);

/* Queues one complete message on conn as a single frame: a text frame for a
 * warren.json connection, binary for warren.msgpack. Takes a new reference
 * on buf (the caller keeps its own). ctx, if non-NULL, comes back in
 * on_sent_cb exactly once when this function returns 0 (never when it fails).
 * Returns 0, -ENOBUFS when the connection's queued bytes would pass
 * server.max_queued_bytes (the connection is then closed with 4008), or
 * -ENOTCONN when the connection is not open. */
int wr_ws_conn_send(wr_ws_conn_t *conn, wr_ws_buf_t *buf, void *ctx);

/* Sends a close frame and closes the connection after it is written (or after
 * a short grace time). on_close_cb follows. */
void wr_ws_conn_close(wr_ws_conn_t *conn, uint16_t code, const char *reason);
/* Lets the client send one data message outside server.max_client_messages_
 * per_s: an answer the server asked for. The bridge grants one per
 * notification it sends in ack mode client, so a client acking a burst of
 * notifications one by one is never closed for its rate; pings, invalid
 * messages and acks beyond what was sent still count. */
void wr_ws_conn_grant(wr_ws_conn_t *conn);

uint64_t wr_ws_conn_id(const wr_ws_conn_t *conn);      /* unique per process, from 1 */
const char *wr_ws_conn_user(const wr_ws_conn_t *conn); /* authenticated user id */
wr_ws_format_t wr_ws_conn_format(const wr_ws_conn_t *conn);
void *wr_ws_conn_get_data(const wr_ws_conn_t *conn); /* the bridge's pointer */
void wr_ws_conn_set_data(wr_ws_conn_t *conn, void *data);
size_t wr_ws_conn_queued_bytes(const wr_ws_conn_t *conn);
/* Milliseconds since the last byte was received from the client. */
uint64_t wr_ws_conn_idle_ms(const wr_ws_conn_t *conn);

#endif
