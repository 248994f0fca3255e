/* One client connection: request head, handshake answer, WebSocket framing
 * (wslay parses client frames, server data frames are framed here), the
 * ordered output queue, and the close sequence.
 *
 * Every event (read, write completion, timer, send) ends in pump(), which
 * moves wslay's control frames into the output queue, starts at most one
 * uv_write, and cuts the TCP once a closing connection has flushed. Memory is
 * freed only in the uv_close callback, never inside a wslay or llhttp one. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/log.h"
#include "ws/auth_int.h"
#include "ws/server_int.h"

/* A connection quiet this long gives its wslay context back (see feed_ws). */
#define WS_CTX_IDLE_MS 2000

/* At most this many output items are written by one uv_write. */
#define WRITE_BATCH 32

typedef struct wreq_s {
  uv_write_t req;
  wr_ws_conn_t *conn;
  wr_ws_out_t *items; /* the batch, in order */
  size_t bytes;
  unsigned nbufs;
  uv_buf_t bufs[];
} wreq_t;

static void pump(wr_ws_conn_t *c);
static void close_slow_consumer(wr_ws_conn_t *c, size_t pending);
static int ensure_ws(wr_ws_conn_t *c);
static void maybe_release_ws(wr_ws_conn_t *c);

static uint64_t now_ms(const wr_ws_conn_t *c) {
  return uv_now(c->srv->loop);
}

static void out_append(wr_ws_conn_t *c, wr_ws_out_t *o) {
  o->next = NULL;
  if (c->q_tail != NULL)
    c->q_tail->next = o;
  else
    c->q_head = o;
  c->q_tail = o;
  c->queued_bytes += o->len;
}

/* Queues a copy of a followed by b as raw bytes. */
static int out_raw(wr_ws_conn_t *c, const void *a, size_t alen, const void *b, size_t blen) {
  wr_ws_out_t *o = malloc(sizeof(*o) + alen + blen);
  if (o == NULL)
    return -ENOMEM;
  memset(o, 0, sizeof(*o));
  o->len = alen + blen;
  if (alen > 0)
    memcpy(o->raw, a, alen);
  if (blen > 0)
    memcpy(o->raw + alen, b, blen);
  out_append(c, o);
  return 0;
}

/* Reports one item's fate to the bridge and frees it. */
static void out_finish(wr_ws_conn_t *c, wr_ws_out_t *o, int status) {
  const wr_ws_callbacks_t *cbs = c->srv->cbs;
  if (o->ctx != NULL && cbs->on_sent_cb != NULL)
    cbs->on_sent_cb(c, o->ctx, status, cbs->data);
  wr_ws_buf_unref(o->buf);
  free(o);
}

static void out_cancel_list(wr_ws_conn_t *c, wr_ws_out_t *o) {
  while (o != NULL) {
    wr_ws_out_t *next = o->next;
    out_finish(c, o, -ECANCELED);
    o = next;
  }
}

static size_t frame_header(uint8_t *h, uint8_t opcode, size_t len) {
  h[0] = (uint8_t)(0x80 | opcode); /* FIN, never fragmented */
  if (len < 126) {
    h[1] = (uint8_t)len;
    return 2;
  }
  if (len <= 0xffff) {
    h[1] = 126;
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
    return 4;
  }
  h[1] = 127;
  for (int i = 0; i < 8; i++)
    h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
  return 10;
}

static void conn_close_cb(uv_handle_t *h) {
  wr_ws_conn_t *c = h->data;
  wr_ws_server_t *srv = c->srv;
  const wr_ws_callbacks_t *cbs = srv->cbs;
  /* libuv has already failed the in-flight write (UV_ECANCELED) before this
   * callback, so the bridge sees every frame's fate before on_close_cb;
   * frames written directly are reported first (they were written first). */
  wr_ws_server_flush_sent(srv);
  out_cancel_list(c, c->q_head);
  c->q_head = c->q_tail = NULL;
  out_cancel_list(c, c->dropped);
  c->dropped = NULL;
  if (c->opened) {
    srv->stats.connections--;
    if (cbs->on_close_cb != NULL)
      cbs->on_close_cb(c, cbs->data);
  }
  if (c->ws != NULL)
    wslay_event_context_free(c->ws);
  wr_ws_hs_free(c->hs);
  free(c->user);
  wr_ws_server_conn_gone(srv, c);
}

/* The connection leaves the handshake (answered, opened or closed): it no
 * longer counts against server.max_connections as a handshake. */
static void handshake_over(wr_ws_conn_t *c) {
  if (!c->hs_counted)
    return;
  c->hs_counted = false;
  c->srv->stats.handshakes_in_progress--;
}

static void close_tcp(wr_ws_conn_t *c) {
  if (c->state == WR_WS_STATE_CLOSED)
    return;
  handshake_over(c);
  c->state = WR_WS_STATE_CLOSED;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

void wr_ws_conn_abort(wr_ws_conn_t *c) {
  close_tcp(c);
}

static void write_cb(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  wr_ws_conn_t *c = w->conn;
  wr_ws_server_t *srv = c->srv;
  c->writing = false;
  c->queued_bytes -= w->bytes;
  if (status == 0)
    srv->stats.bytes_sent += w->bytes;
  int st = status == 0 ? 0 : (status == UV_ECANCELED ? -ECANCELED : status);
  for (wr_ws_out_t *o = w->items; o != NULL;) {
    wr_ws_out_t *next = o->next;
    if (status == 0 && o->frame)
      srv->stats.frames_sent++;
    out_finish(c, o, st);
    o = next;
  }
  free(w);
  if (status < 0) {
    if (status != UV_ECANCELED)
      wr_debug("ws", "conn %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(status));
    close_tcp(c);
    return;
  }
  pump(c);
}

static void start_write(wr_ws_conn_t *c) {
  unsigned n = 0, nbufs = 0;
  wr_ws_out_t *last = NULL;
  for (wr_ws_out_t *o = c->q_head; o != NULL && n < WRITE_BATCH; o = o->next) {
    nbufs += o->buf != NULL ? 2 : 1;
    last = o;
    n++;
  }
  wreq_t *w = malloc(sizeof(*w) + nbufs * sizeof(uv_buf_t));
  if (w == NULL) {
    close_tcp(c);
    return;
  }
  w->conn = c;
  w->items = c->q_head;
  w->bytes = 0;
  w->nbufs = nbufs;
  c->q_head = last->next;
  if (c->q_head == NULL)
    c->q_tail = NULL;
  last->next = NULL;
  unsigned i = 0;
  for (wr_ws_out_t *o = w->items; o != NULL; o = o->next) {
    if (o->buf != NULL) {
      w->bufs[i++] = uv_buf_init((char *)o->hdr, o->hdr_len);
      w->bufs[i++] = uv_buf_init((char *)o->buf->data, (unsigned)o->buf->len);
    } else {
      w->bufs[i++] = uv_buf_init((char *)o->raw, (unsigned)o->len);
    }
    w->bytes += o->len;
  }
  c->write_started = now_ms(c);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, w->bufs, nbufs, write_cb);
  if (r < 0) {
    c->queued_bytes -= w->bytes;
    out_cancel_list(c, w->items);
    free(w);
    close_tcp(c);
    return;
  }
  c->writing = true;
}

/* wslay has just put a close frame in the output queue: count why when the
 * decision was wslay's (a protocol error or an oversized message). */
static void on_close_queued(wr_ws_conn_t *c) {
  wr_ws_server_t *srv = c->srv;
  if (c->state == WR_WS_STATE_OPEN) {
    c->state = WR_WS_STATE_CLOSING;
    c->close_deadline = now_ms(c) + WR_WS_CLOSE_GRACE_MS;
  }
  if (c->close_code != 0 || c->close_counted || wslay_event_get_close_received(c->ws))
    return;
  c->close_counted = true;
  uint16_t code = wslay_event_get_status_code_sent(c->ws);
  if (code == WR_WS_CLOSE_TOO_BIG)
    srv->stats.closes_too_big++;
  else if (code == WR_WS_CLOSE_PROTOCOL || code == WR_WS_CLOSE_INVALID_DATA)
    srv->stats.closes_protocol++;
  wr_debug("ws", "conn %llu: closed by protocol check (%u)", (unsigned long long)c->id, code);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* Closing a socket that still holds unread client bytes makes the kernel
 * send RST, which can destroy our answer before the client reads it. So
 * shut down our side, keep reading (and discarding) until the client's EOF,
 * and let the sweep cut the connection at close_deadline otherwise. */
static void linger(wr_ws_conn_t *c) {
  if (c->lingering || c->state == WR_WS_STATE_CLOSED)
    return;
  if (c->peer_eof) {
    close_tcp(c);
    return;
  }
  c->lingering = true;
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
    free(req);
    close_tcp(c);
  }
}

static void pump(wr_ws_conn_t *c) {
  if (c->in_wslay || c->state == WR_WS_STATE_CLOSED)
    return;
  if (c->ws != NULL && (c->state == WR_WS_STATE_OPEN || c->state == WR_WS_STATE_CLOSING)) {
    bool was_sent = wslay_event_get_close_sent(c->ws);
    c->in_wslay = true;
    int r = wslay_event_send(c->ws);
    c->in_wslay = false;
    if (r != 0) {
      close_tcp(c);
      return;
    }
    if (!was_sent && wslay_event_get_close_sent(c->ws))
      on_close_queued(c);
    /* wslay queues pongs whether or not the client reads them: a client
     * that pings without reading meets the same cap as notifications. */
    if (c->state == WR_WS_STATE_OPEN && c->queued_bytes > c->srv->cfg->max_queued_bytes) {
      close_slow_consumer(c, c->queued_bytes);
      return;
    }
  }
  if (!c->writing && c->q_head != NULL)
    start_write(c);
  if (c->state == WR_WS_STATE_CLOSED || c->writing || c->q_head != NULL)
    return;
  /* Everything is in the kernel: a finished HTTP answer or a sent close
   * frame ends the connection. */
  if (c->close_after_flush || (c->ws != NULL && wslay_event_get_close_sent(c->ws)))
    linger(c);
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user) {
  (void)flags;
  wr_ws_conn_t *c = user;
  if (c->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = c->in_len < len ? c->in_len : len;
  memcpy(buf, c->in, n);
  c->in += n;
  c->in_len -= n;
  return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user) {
  (void)flags;
  wr_ws_conn_t *c = user;
  if (out_raw(c, data, len, NULL, 0) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

/* Takes one message from the connection's token bucket (server.
 * max_client_messages_per_s per second, a burst of the same size). Returns
 * false when the client is over its rate. Tokens are kept in thousandths so
 * a low rate still refills between two sweeps of the loop clock. */
static bool rate_take(wr_ws_conn_t *c) {
  uint64_t rate = c->srv->cfg->max_client_messages_per_s;
  if (rate == 0)
    return true;
  uint64_t cap = rate * 1000, now = now_ms(c);
  uint64_t add = (now - c->rate_refill) * rate;
  c->rate_refill = now;
  /* A reload (SIGHUP) may have lowered the rate below what this bucket
   * holds; cap - rate_tokens would then wrap and leave the old burst in
   * place, so the bucket shrinks to the new cap first. */
  if (c->rate_tokens > cap)
    c->rate_tokens = cap;
  c->rate_tokens = add >= cap - c->rate_tokens ? cap : c->rate_tokens + add;
  if (c->rate_tokens < 1000)
    return false;
  c->rate_tokens -= 1000;
  return true;
}

void wr_ws_conn_grant(wr_ws_conn_t *c) {
  if (c->replies_owed < UINT32_MAX)
    c->replies_owed++;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user) {
  wr_ws_conn_t *c = user;
  /* Control frames arrive here too; wslay answers pings and closes itself,
   * but a ping costs us a pong, so pings count against the rate as well. */
  bool data = arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME;
  if ((!data && arg->opcode != WSLAY_PING) || c->state != WR_WS_STATE_OPEN)
    return;
  /* A pong wslay queued for a ping that came before this message must reach
   * the client before whatever the bridge answers to the message. */
  if (data && wslay_event_get_queued_msg_count(ctx) > 0 && !wslay_event_get_close_sent(ctx))
    (void)wslay_event_send(ctx); /* a failure shows again in pump() */
  if (data && c->replies_owed > 0)
    c->replies_owed--;
  else if (!rate_take(c)) {
    c->srv->stats.closes_rate_limited++;
    c->close_counted = true;
    wr_info("ws", "conn %llu: more than %u messages/s, closing with 1008",
            (unsigned long long)c->id, c->srv->cfg->max_client_messages_per_s);
    wr_ws_conn_close(c, WR_WS_CLOSE_POLICY, "rate limit");
    return;
  }
  if (!data)
    return;
  const wr_ws_callbacks_t *cbs = c->srv->cbs;
  c->srv->stats.messages_received++;
  if (cbs->on_message_cb != NULL)
    cbs->on_message_cb(c, arg->msg, arg->msg_length, arg->opcode == WSLAY_BINARY_FRAME, cbs->data);
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_msg_recv_callback = ws_msg_cb,
};

/* A wslay context costs about 8.8 KB, mostly its input buffer, so an idle
 * connection keeps none: it is made when client bytes or a control frame of
 * ours need it, and dropped again once the stream sits between messages with
 * nothing queued (the frame scanner knows the boundaries). */
static int ensure_ws(wr_ws_conn_t *c) {
  if (c->ws != NULL)
    return 0;
  return wr_ws_wslay_server_new(&c->ws, &ws_callbacks, c, c->srv->cfg->max_client_message_bytes);
}

static void maybe_release_ws(wr_ws_conn_t *c) {
  if (c->ws == NULL || c->in_wslay || c->state != WR_WS_STATE_OPEN || !wr_ws_fscan_idle(&c->scan) ||
      wslay_event_get_queued_msg_count(c->ws) > 0 || wslay_event_get_close_sent(c->ws) ||
      wslay_event_get_close_received(c->ws))
    return;
  wslay_event_context_free(c->ws);
  c->ws = NULL;
}

static void feed_ws(wr_ws_conn_t *c, const uint8_t *data, size_t len) {
  wr_ws_server_t *srv = c->srv;
  /* Frames before an offending header are still wslay's to answer. */
  size_t ok = wr_ws_fscan_feed(&c->scan, data, len, srv->cfg->max_client_message_bytes);
  if (ok > 0) {
    if (ensure_ws(c) != 0) {
      close_tcp(c);
      return;
    }
    c->in = data;
    c->in_len = ok;
    c->in_wslay = true;
    int r = wslay_event_recv(c->ws);
    c->in_wslay = false;
    /* Bytes wslay left unread (after a close) are dropped with the buffer. */
    c->in = NULL;
    c->in_len = 0;
    if (r != 0) {
      close_tcp(c);
      return;
    }
  }
  if (c->scan.code == 0) {
    /* The context stays while the client talks (an ack per notification
     * would otherwise create and free one each time); the sweep releases it
     * once the connection has been quiet for WS_CTX_IDLE_MS. */
    pump(c);
    return;
  }
  /* A close wslay queued for an earlier frame goes first and wins. */
  pump(c);
  if (c->state != WR_WS_STATE_OPEN)
    return;
  bool too_big = c->scan.code == WR_WS_CLOSE_TOO_BIG;
  if (too_big)
    srv->stats.closes_too_big++;
  else
    srv->stats.closes_protocol++;
  c->close_counted = true;
  wr_debug("ws", "conn %llu: frame header refused (%u)", (unsigned long long)c->id, c->scan.code);
  wr_ws_conn_close(c, c->scan.code, too_big ? "message too big" : "protocol error");
}

/* Queues a complete HTTP answer and closes the connection once it is
 * written. body is copied. */
static void respond(wr_ws_conn_t *c, int status, const char *content_type, const char *extra,
                    const char *body, size_t body_len) {
  /* on_http_cb may have freed the server, which already closed us. */
  if (c->state == WR_WS_STATE_CLOSED)
    return;
  size_t cap = 256 + (content_type ? strlen(content_type) : 0) + (extra ? strlen(extra) : 0);
  char *head = malloc(cap);
  if (head == NULL) {
    close_tcp(c);
    return;
  }
  ssize_t n = wr_ws_http_head_write(head, cap, status, content_type, extra, body_len);
  if (n < 0 || out_raw(c, head, (size_t)n, body, body_len) != 0) {
    free(head);
    close_tcp(c);
    return;
  }
  free(head);
  handshake_over(c);
  wr_ws_hs_free(c->hs);
  c->hs = NULL;
  c->state = WR_WS_STATE_HTTP;
  c->close_after_flush = true;
  c->close_deadline = now_ms(c) + WR_WS_CLOSE_GRACE_MS;
  pump(c);
}

static void respond_error(wr_ws_conn_t *c, int status, const char *error, const char *extra) {
  char body[128];
  int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", error);
  if (n < 0 || (size_t)n >= sizeof(body))
    n = 0;
  wr_debug("ws", "conn %llu: answered %d %s", (unsigned long long)c->id, status, error);
  respond(c, status, "application/json", extra, body, (size_t)n);
}

static void serve_http(wr_ws_conn_t *c, const wr_ws_request_t *req) {
  wr_ws_server_t *srv = c->srv;
  const wr_ws_callbacks_t *cbs = srv->cbs;
  wr_ws_http_response_t resp;
  memset(&resp, 0, sizeof(resp));
  srv->stats.http_requests++;
  int r = -ENOENT;
  if (cbs->on_http_cb != NULL)
    r = cbs->on_http_cb(srv, req->method, req->path, req->query, &resp, cbs->data);
  if (r == 0) {
    respond(c, resp.status > 0 ? resp.status : 200, resp.content_type, resp.extra_headers,
            resp.body, resp.body_len);
    if (resp.body_owned)
      free(resp.body);
  } else if (r == -ENOENT) {
    respond_error(c, 404, "not_found", NULL);
  } else {
    respond_error(c, 500, "internal", NULL);
  }
}

static void open_ws(wr_ws_conn_t *c, const wr_ws_upgrade_t *up, const char *user, int64_t exp,
                    const uint8_t *rest, size_t rest_len) {
  wr_ws_server_t *srv = c->srv;
  const wr_ws_callbacks_t *cbs = srv->cbs;
  char head[256];
  ssize_t n = wr_ws_hs_101_write(head, sizeof(head), up->accept,
                                 up->echo_protocol ? wr_ws_format_name(up->format) : NULL);
  c->user = strdup(user);
  if (n < 0 || c->user == NULL)
    goto fail;
  if (out_raw(c, head, (size_t)n, NULL, 0) != 0)
    goto fail;
  handshake_over(c);
  wr_ws_hs_free(c->hs);
  c->hs = NULL;
  c->format = up->format;
  c->token_exp = exp;
  c->state = WR_WS_STATE_OPEN;
  c->opened = true;
  c->last_recv = c->last_ping = now_ms(c);
  c->rate_refill = c->last_recv;
  wr_ws_fscan_init(&c->scan);
  c->rate_tokens = (uint64_t)srv->cfg->max_client_messages_per_s * 1000;
  srv->stats.connections++;
  srv->stats.handshakes_accepted++;
  wr_debug("ws", "conn %llu: open for user %s (%s)", (unsigned long long)c->id, c->user,
           wr_ws_format_name(c->format));
  if (cbs->on_open_cb != NULL)
    cbs->on_open_cb(c, cbs->data);
  /* Frames the client sent right behind its request head. */
  if (c->state == WR_WS_STATE_OPEN && rest_len > 0) {
    feed_ws(c, rest, rest_len);
    return;
  }
  pump(c);
  return;
fail:
  wr_warn("ws", "conn %llu: out of memory opening the connection", (unsigned long long)c->id);
  close_tcp(c);
}

static void dispatch(wr_ws_conn_t *c, const wr_ws_request_t *req, const uint8_t *rest,
                     size_t rest_len) {
  wr_ws_server_t *srv = c->srv;
  const wr_config_t *cfg = srv->cfg;
  bool ws_path = srv->websocket && strcmp(req->path, cfg->server_path) == 0;
  if (!ws_path) {
    if (!req->is_get) {
      srv->stats.handshakes_bad_request++;
      respond_error(c, 405, "method_not_allowed", "Allow: GET\r\n");
      return;
    }
    serve_http(c, req);
    return;
  }
  wr_ws_upgrade_t up;
  if (wr_ws_hs_validate(req, &up) != 101) {
    srv->stats.handshakes_bad_request++;
    respond_error(c, up.status, up.error, up.extra_header);
    return;
  }
  if (!wr_ws_origin_allowed(req->headers[WR_WS_H_ORIGIN], cfg->allowed_origins,
                            cfg->n_allowed_origins)) {
    srv->stats.handshakes_forbidden++;
    respond_error(c, 403, "origin_not_allowed", NULL);
    return;
  }
  /* Checked before the signature so an overloaded server spends no CPU on
   * HMACs it would refuse anyway. */
  if (srv->stats.connections >= cfg->max_connections) {
    srv->stats.handshakes_over_limit++;
    respond_error(c, 503, "over_capacity", NULL);
    return;
  }
  char user[WR_WS_USER_MAX];
  int64_t exp = 0;
  const char *error = NULL;
  if (wr_ws_auth_check(req, cfg, (int64_t)time(NULL), user, &exp, &error) != 0) {
    srv->stats.handshakes_unauthorized++;
    respond_error(c, 401, error, NULL);
    return;
  }
  open_ws(c, &up, user, exp, rest, rest_len);
}

static void on_head_bytes(wr_ws_conn_t *c, const uint8_t *data, size_t len) {
  size_t used = 0;
  int status = 0;
  wr_ws_hs_state_t st = wr_ws_hs_feed(c->hs, data, len, &used, &status);
  if (st == WR_WS_HS_MORE)
    return;
  if (st == WR_WS_HS_ERROR) {
    c->srv->stats.handshakes_bad_request++;
    respond_error(c, status, status == 431 ? "head_too_large" : "bad_request", NULL);
    return;
  }
  dispatch(c, wr_ws_hs_request(c->hs), data + used, len - used);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  wr_ws_conn_t *c = h->data;
  buf->base = (char *)c->srv->rbuf;
  buf->len = sizeof(c->srv->rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  wr_ws_conn_t *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* A client that half-closes after its request still gets the answer
     * or the close frame that is being written. */
    if (nread == UV_EOF && !c->lingering &&
        (c->state == WR_WS_STATE_HTTP || c->state == WR_WS_STATE_CLOSING)) {
      c->peer_eof = true;
      uv_read_stop(s);
      pump(c);
      return;
    }
    close_tcp(c);
    return;
  }
  c->last_recv = now_ms(c);
  const uint8_t *data = (const uint8_t *)buf->base;
  switch (c->state) {
  case WR_WS_STATE_HANDSHAKE:
    on_head_bytes(c, data, (size_t)nread);
    break;
  case WR_WS_STATE_OPEN:
    feed_ws(c, data, (size_t)nread);
    break;
  default:
    /* HTTP answer or close in progress: the client's bytes no longer
     * matter, they are read only to reach its EOF. */
    break;
  }
}

int wr_ws_conn_accept(wr_ws_server_t *srv) {
  wr_ws_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  int r = uv_tcp_init(srv->loop, &c->tcp);
  if (r < 0) {
    free(c);
    return r;
  }
  c->tcp.data = c;
  c->srv = srv;
  c->id = ++srv->next_id;
  c->state = WR_WS_STATE_HANDSHAKE;
  c->t_start = c->last_recv = uv_now(srv->loop);
  c->next = srv->conns;
  if (srv->conns != NULL)
    srv->conns->prev = c;
  srv->conns = c;
  srv->handles++;
  r = uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp);
  if (r < 0)
    goto fail;
  uv_tcp_nodelay(&c->tcp, 1);
  r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (r < 0)
    goto fail;
  /* A handshake holds a 16.6 KiB head parser for up to handshake_timeout_ms,
   * so handshakes in progress count against server.max_connections with the
   * open connections. One over the bound is answered 503 at once, without a
   * parser and without reading its request: the client (or a proxy in front
   * of warren) learns the server is full, as it does for an upgrade refused
   * at the limit, instead of seeing a reset it would take for a network
   * failure. That costs only this struct and a short answer, for at most the
   * close grace. */
  if (srv->stats.connections + srv->stats.handshakes_in_progress >= srv->cfg->max_connections) {
    srv->stats.handshakes_over_limit++;
    respond_error(c, 503, "over_capacity", NULL);
    return 0;
  }
  c->hs = wr_ws_hs_new();
  if (c->hs == NULL) {
    r = -ENOMEM;
    goto fail;
  }
  c->hs_counted = true;
  srv->stats.handshakes_in_progress++;
  return 0;
fail:
  close_tcp(c);
  return r;
}

/* The moment a token stops being honoured: exp plus the leeway. exp comes
 * from the client (a token may say 9223372036854775807), so the sum
 * saturates instead of overflowing, which would be undefined and, wrapped,
 * would close the connection at once as expired. */
static int64_t expiry(int64_t exp, uint32_t leeway_s) {
  int64_t t;
  if (__builtin_add_overflow(exp, (int64_t)leeway_s, &t))
    return INT64_MAX;
  return t;
}

void wr_ws_conn_sweep(wr_ws_conn_t *c, uint64_t now, int64_t wall) {
  wr_ws_server_t *srv = c->srv;
  const wr_config_t *cfg = srv->cfg;
  switch (c->state) {
  case WR_WS_STATE_HANDSHAKE:
    if (now - c->t_start >= cfg->handshake_timeout_ms) {
      srv->stats.handshakes_timeout++;
      wr_debug("ws", "conn %llu: handshake timeout", (unsigned long long)c->id);
      close_tcp(c);
    }
    break;
  case WR_WS_STATE_HTTP:
  case WR_WS_STATE_CLOSING:
    if (c->close_deadline != 0 && now >= c->close_deadline)
      close_tcp(c);
    break;
  case WR_WS_STATE_OPEN: {
    uint64_t idle = now - c->last_recv;
    /* The bridge stops sending to a connection whose output would pass half
     * the cap, so a client that has stopped reading no longer runs into the
     * cap: it shows as a write that does not complete. One stuck for a ping
     * interval (at most 10 s) is a slow consumer. */
    uint64_t stuck_ms =
        cfg->ping_interval_ms > 0 && cfg->ping_interval_ms < 10000 ? cfg->ping_interval_ms : 10000;
    if (c->writing && now - c->write_started >= stuck_ms) {
      close_slow_consumer(c, c->queued_bytes);
      break;
    }
    if (cfg->idle_timeout_ms > 0 && idle >= cfg->idle_timeout_ms) {
      srv->stats.closes_idle++;
      c->close_counted = true;
      wr_ws_conn_close(c, WR_WS_CLOSE_GOING_AWAY, "idle timeout");
    } else if (c->token_exp > 0 && wall >= expiry(c->token_exp, cfg->leeway_s)) {
      srv->stats.closes_token_expired++;
      c->close_counted = true;
      wr_ws_conn_close(c, WR_WS_CLOSE_POLICY, "token expired");
    } else if (cfg->ping_interval_ms > 0 && idle >= cfg->ping_interval_ms &&
               now - c->last_ping >= cfg->ping_interval_ms) {
      struct wslay_event_msg ping = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
      c->last_ping = now;
      if (ensure_ws(c) == 0 && wslay_event_queue_msg(c->ws, &ping) == 0) {
        pump(c);
        maybe_release_ws(c);
      }
    } else if (idle >= WS_CTX_IDLE_MS) {
      maybe_release_ws(c);
    }
    break;
  }
  default:
    break;
  }
}

/* Moves queued data frames aside (reported -ECANCELED when the connection
 * closes) so the close frame is not stuck behind them. */
static void drop_data_frames(wr_ws_conn_t *c) {
  wr_ws_out_t *keep = NULL, *keep_tail = NULL, **dtail = &c->dropped;
  while (*dtail != NULL)
    dtail = &(*dtail)->next;
  for (wr_ws_out_t *o = c->q_head; o != NULL;) {
    wr_ws_out_t *next = o->next;
    o->next = NULL;
    if (o->buf != NULL) {
      c->queued_bytes -= o->len;
      *dtail = o;
      dtail = &o->next;
    } else {
      if (keep_tail != NULL)
        keep_tail->next = o;
      else
        keep = o;
      keep_tail = o;
    }
    o = next;
  }
  c->q_head = keep;
  c->q_tail = keep_tail;
}

static void close_slow_consumer(wr_ws_conn_t *c, size_t pending) {
  c->srv->stats.closes_slow_consumer++;
  c->close_counted = true;
  wr_info("ws", "conn %llu: slow consumer (%zu bytes queued), closing with 4008",
          (unsigned long long)c->id, pending);
  drop_data_frames(c);
  wr_ws_conn_close(c, WR_WS_CLOSE_SLOW_CONSUMER, "slow consumer");
}

/* The common case: nothing queued or in flight, so the frame goes to the
 * kernel now with one writev and no allocation (no output item, no write
 * request, no POLLOUT watcher change). Returns 0 when the frame is written
 * or its unsent rest queued, 1 when it must take the queued path, or a
 * negative errno. */
static int write_direct(wr_ws_conn_t *c, const uint8_t *hdr, size_t hlen, wr_ws_buf_t *buf,
                        void *ctx) {
  wr_ws_server_t *srv = c->srv;
  size_t total = hlen + buf->len;
  if (c->writing || c->q_head != NULL || c->in_wslay ||
      (c->ws != NULL && wslay_event_want_write(c->ws)))
    return 1;
  /* Room for the owed on_sent_cb first: once written there is no way back. */
  if (ctx != NULL && srv->n_sent == srv->cap_sent) {
    size_t cap = srv->cap_sent ? srv->cap_sent * 2 : 256;
    wr_ws_sent_t *n = realloc(srv->sent, cap * sizeof(*n));
    if (n == NULL)
      return 1;
    srv->sent = n;
    srv->cap_sent = cap;
  }
  uv_buf_t bufs[2] = {uv_buf_init((char *)hdr, (unsigned)hlen),
                      uv_buf_init((char *)buf->data, (unsigned)buf->len)};
  int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, 2);
  if (n <= 0)
    return 1; /* EAGAIN, or an error uv_write will report and close on */
  if ((size_t)n < total) {
    /* The socket buffer filled up mid-frame: queue a copy of the rest. */
    size_t off = (size_t)n;
    const uint8_t *h = off < hlen ? hdr + off : NULL;
    size_t h_left = off < hlen ? hlen - off : 0;
    size_t b_off = off < hlen ? 0 : off - hlen;
    if (out_raw(c, h, h_left, buf->data + b_off, buf->len - b_off) != 0) {
      close_tcp(c); /* half a frame is on the wire: the stream is broken */
      return -ENOMEM;
    }
    c->q_tail->ctx = ctx;
    c->q_tail->frame = true;
    srv->stats.bytes_sent += off;
    pump(c);
    return 0;
  }
  srv->stats.bytes_sent += total;
  srv->stats.frames_sent++;
  if (ctx != NULL)
    srv->sent[srv->n_sent++] = (wr_ws_sent_t){c, ctx};
  return 0;
}

int wr_ws_conn_send(wr_ws_conn_t *c, wr_ws_buf_t *buf, void *ctx) {
  if (c->state != WR_WS_STATE_OPEN)
    return -ENOTCONN;
  wr_ws_server_t *srv = c->srv;
  uint8_t hdr[10];
  size_t hlen = frame_header(
      hdr, c->format == WR_WS_FORMAT_MSGPACK ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, buf->len);
  size_t total = hlen + buf->len;
  /* queued_bytes covers what libuv still holds (the in-flight write) as well
   * as our own queue; wslay's pending control frames count too. */
  size_t pending = c->queued_bytes + (c->ws != NULL ? wslay_event_get_queued_msg_length(c->ws) : 0);
  if (pending + total > srv->cfg->max_queued_bytes) {
    close_slow_consumer(c, pending);
    return -ENOBUFS;
  }
  int rc = write_direct(c, hdr, hlen, buf, ctx);
  if (rc <= 0)
    return rc;
  wr_ws_out_t *o = malloc(sizeof(*o));
  if (o == NULL)
    return -ENOMEM;
  memset(o, 0, sizeof(*o));
  memcpy(o->hdr, hdr, hlen);
  o->hdr_len = (uint8_t)hlen;
  o->buf = wr_ws_buf_ref(buf);
  o->ctx = ctx;
  o->len = total;
  o->frame = true;
  out_append(c, o);
  pump(c);
  return 0;
}

void wr_ws_conn_close(wr_ws_conn_t *c, uint16_t code, const char *reason) {
  if (c->state == WR_WS_STATE_HANDSHAKE) {
    close_tcp(c);
    return;
  }
  if (c->state != WR_WS_STATE_OPEN)
    return;
  c->close_code = code;
  c->state = WR_WS_STATE_CLOSING;
  c->close_deadline = now_ms(c) + WR_WS_CLOSE_GRACE_MS;
  size_t rlen = reason != NULL ? strnlen(reason, 123) : 0;
  if (ensure_ws(c) != 0) {
    close_tcp(c);
    return;
  }
  /* Fails only when wslay already queued a close of its own; that one wins. */
  (void)wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rlen);
  pump(c);
}

uint64_t wr_ws_conn_id(const wr_ws_conn_t *c) {
  return c->id;
}

const char *wr_ws_conn_user(const wr_ws_conn_t *c) {
  return c->user != NULL ? c->user : "";
}

wr_ws_format_t wr_ws_conn_format(const wr_ws_conn_t *c) {
  return c->format;
}

void *wr_ws_conn_get_data(const wr_ws_conn_t *c) {
  return c->data;
}

void wr_ws_conn_set_data(wr_ws_conn_t *c, void *data) {
  c->data = data;
}

size_t wr_ws_conn_queued_bytes(const wr_ws_conn_t *c) {
  return c->queued_bytes;
}

uint64_t wr_ws_conn_idle_ms(const wr_ws_conn_t *c) {
  return now_ms(c) - c->last_recv;
}
