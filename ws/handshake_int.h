/* HTTP/1.1 request head parsing and WebSocket handshake validation (pure:
 * no I/O, no logs, no uv_*). The socket code feeds bytes in; this module
 * says what the request was and what to answer. */
#ifndef WARREN_WS_HANDSHAKE_INT_H
#define WARREN_WS_HANDSHAKE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ws/ws.h"

/* Largest request head we accept; larger heads are answered 431. */
#define WR_WS_HEAD_MAX 8192

/* A Sec-WebSocket-Protocol entry "bearer.<jwt>" carries the client's token
 * (browsers cannot set Authorization on a WebSocket). It is never selected
 * nor echoed back: only warren.json / warren.msgpack are. */
#define WR_WS_BEARER_PROTOCOL "bearer."

/* The request headers warren looks at. Others are skipped. */
typedef enum {
  WR_WS_H_HOST = 0,
  WR_WS_H_UPGRADE,
  WR_WS_H_CONNECTION,
  WR_WS_H_KEY,
  WR_WS_H_VERSION,
  WR_WS_H_PROTOCOL,
  WR_WS_H_ORIGIN,
  WR_WS_H_AUTHORIZATION,
  WR_WS_H_COOKIE,
  WR_WS_NHEADERS
} wr_ws_header_t;

/* A parsed request head. Every string is NUL-terminated and lives in the
 * parser that produced it (valid until wr_ws_hs_free). */
typedef struct wr_ws_request_s {
  const char *method; /* "GET", "POST"... */
  bool is_get;
  uint8_t http_major;
  uint8_t http_minor;
  const char *path;                    /* raw path, without the query */
  const char *query;                   /* raw query after '?', "" when none */
  bool upgrade;                        /* llhttp saw Connection: upgrade together with Upgrade: */
  const char *headers[WR_WS_NHEADERS]; /* NULL when absent; list headers joined with ", " */
} wr_ws_request_t;

typedef struct wr_ws_hs_s wr_ws_hs_t;

typedef enum {
  WR_WS_HS_MORE = 0,  /* the head is not complete: feed more bytes */
  WR_WS_HS_DONE = 1,  /* the head is complete: see wr_ws_hs_request */
  WR_WS_HS_ERROR = 2, /* malformed (400) or too large (431): see *status */
} wr_ws_hs_state_t;

/* Allocates a parser for one request head. Returns NULL on ENOMEM. */
wr_ws_hs_t *wr_ws_hs_new(void);
/* Frees the parser and every string of its request. NULL is accepted. */
void wr_ws_hs_free(wr_ws_hs_t *hs);

/* Feeds len bytes (borrowed). Returns WR_WS_HS_MORE, WR_WS_HS_DONE with
 * *consumed = how many of these bytes belong to the head (the rest are the
 * first WebSocket bytes of an upgrade, or a pipelined request to ignore), or
 * WR_WS_HS_ERROR with *status = 400 or 431. After DONE or ERROR, further
 * calls return the same outcome and consume nothing. */
wr_ws_hs_state_t wr_ws_hs_feed(wr_ws_hs_t *hs, const uint8_t *data, size_t len, size_t *consumed,
                               int *status);

/* The request, or NULL before DONE. Borrowed from hs. */
const wr_ws_request_t *wr_ws_hs_request(const wr_ws_hs_t *hs);

/* The outcome of validating an upgrade request (origin and auth aside). */
typedef struct wr_ws_upgrade_s {
  int status;               /* 101 when valid, else 400/405/426 */
  const char *error;        /* short reason for the error body, NULL on 101 */
  const char *extra_header; /* NULL or one "Name: value\r\n" line to add to the error */
  wr_ws_format_t format;    /* negotiated subprotocol */
  bool echo_protocol;       /* the client asked: answer Sec-WebSocket-Protocol */
  char accept[29];          /* Sec-WebSocket-Accept, NUL-terminated */
} wr_ws_upgrade_t;

/* Checks method, HTTP version, Upgrade/Connection, Sec-WebSocket-Version,
 * Sec-WebSocket-Key and the subprotocol of req (a request for the WebSocket
 * path). Fills out and returns out->status. */
int wr_ws_hs_validate(const wr_ws_request_t *req, wr_ws_upgrade_t *out);

/* Computes Sec-WebSocket-Accept for key (RFC 6455 §4.2.2) into out (29
 * bytes with the NUL). Returns 0, or -EINVAL when key does not decode to 16
 * bytes of base64. */
int wr_ws_hs_accept_key(const char *key, char out[29]);

/* Picks the subprotocol from a Sec-WebSocket-Protocol value (NULL = header
 * absent): the first of warren.json / warren.msgpack in the client's order.
 * "bearer.<token>" entries are skipped: a header of only those selects the
 * default (warren.json) with *echo false. Returns 0 (*echo tells whether to
 * answer the header) or -EPROTO when the header lists other protocols and
 * none we support. */
int wr_ws_hs_select_protocol(const char *value, wr_ws_format_t *format, bool *echo);

/* Steps through a comma-separated header value (RFC 9110 list syntax):
 * returns the next non-empty item, trimmed of spaces and tabs, in *start /
 * *len (not NUL-terminated, borrowed from the value) and advances *s past
 * it; false at the end. */
bool wr_ws_list_next(const char **s, const char **start, size_t *len);

/* True when the comma-separated header value contains token
 * (case-insensitive, surrounding spaces ignored). */
bool wr_ws_hs_has_token(const char *value, const char *token);

/* Reason phrase for status ("Not Found"); "Unknown" for others. */
const char *wr_ws_http_reason(int status);

/* Writes a response head for a body of body_len bytes: status line,
 * Content-Type (when non-NULL), Content-Length, Connection: close,
 * Cache-Control: no-store, extra (NULL or full "Name: v\r\n" lines), blank
 * line. Returns the head length, or -ENOSPC when cap is too small. */
ssize_t wr_ws_http_head_write(char *out, size_t cap, int status, const char *content_type,
                              const char *extra, size_t body_len);

/* Writes the 101 Switching Protocols head. protocol may be NULL (no
 * Sec-WebSocket-Protocol line). Returns the length or -ENOSPC. */
ssize_t wr_ws_hs_101_write(char *out, size_t cap, const char *accept, const char *protocol);

/* Name of a format as a subprotocol ("warren.json"). */
const char *wr_ws_format_name(wr_ws_format_t f);

#endif
