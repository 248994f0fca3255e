/* The listener, the sweep timer, the stats and the server's lifetime. The
 * per-connection work lives in ws/conn.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/log.h"
#include "ws/auth_int.h"
#include "ws/server_int.h"

#define LISTEN_BACKLOG 4096

static void maybe_finish(wr_ws_server_t *srv) {
  if (!srv->freeing || srv->handles > 0)
    return;
  void (*done_cb)(void *) = srv->done_cb;
  void *arg = srv->done_arg;
  free(srv->sent);
  free(srv);
  if (done_cb != NULL)
    done_cb(arg);
}

static void handle_close_cb(uv_handle_t *h) {
  wr_ws_server_t *srv = h->data;
  srv->handles--;
  maybe_finish(srv);
}

void wr_ws_server_conn_gone(wr_ws_server_t *srv, wr_ws_conn_t *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  free(c);
  srv->handles--;
  maybe_finish(srv);
}

void wr_ws_server_flush_sent(wr_ws_server_t *srv) {
  const wr_ws_callbacks_t *cbs = srv->cbs;
  /* A callback may send again and append (and realloc): index, re-read n. */
  for (size_t i = 0; i < srv->n_sent; i++) {
    wr_ws_sent_t e = srv->sent[i];
    if (cbs->on_sent_cb != NULL)
      cbs->on_sent_cb(e.conn, e.ctx, 0, cbs->data);
  }
  srv->n_sent = 0;
}

static void sent_check_cb(uv_check_t *h) {
  wr_ws_server_t *srv = h->data;
  if (srv->n_sent > 0)
    wr_ws_server_flush_sent(srv);
}

static void sweep_cb(uv_timer_t *t) {
  wr_ws_server_t *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  int64_t wall = (int64_t)time(NULL);
  /* Closing never unlinks synchronously (only the close callback does), so
   * the next pointer stays valid. */
  for (wr_ws_conn_t *c = srv->conns, *next; c != NULL; c = next) {
    next = c->next;
    wr_ws_conn_sweep(c, now, wall);
  }
}

static void connection_cb(uv_stream_t *listener, int status) {
  wr_ws_server_t *srv = listener->data;
  if (status < 0) {
    wr_warn("ws", "accept failed: %s", uv_strerror(status));
    return;
  }
  int r = wr_ws_conn_accept(srv);
  if (r < 0)
    wr_warn("ws", "cannot accept a connection: %s", uv_strerror(r));
}

/* The cookie is sent by the browser whatever page opens the socket, so
 * without an Origin allow-list any site the user visits can connect as them
 * (cross-site WebSocket hijacking); the other token sources are not exposed.
 * wr_config_validate refuses that combination, so the warning below is only
 * for a configuration that skipped validation. */
static void log_auth(const wr_config_t *cfg) {
  char what[512];
  wr_ws_auth_describe(cfg, what, sizeof(what));
  wr_info("ws", "%s", what);
  if (!cfg->require_exp)
    wr_warn("ws",
            "auth.require_exp is false: a token without exp is accepted for as long as the "
            "key verifies it; set auth.require_exp = true unless your tokens never carry exp");
  if (cfg->cookie_name != NULL && cfg->n_allowed_origins == 0)
    wr_warn("ws",
            "server.allowed_origins is empty: any web page can open a WebSocket with the "
            "user's %s cookie; set server.allowed_origins to your site's origins",
            cfg->cookie_name);
}

int wr_ws_server_new(wr_ws_server_t **out, uv_loop_t *loop, const wr_config_t *cfg,
                     const wr_ws_callbacks_t *cbs, bool websocket) {
  *out = NULL;
  wr_ws_server_t *srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return -ENOMEM;
  srv->loop = loop;
  srv->cfg = cfg;
  srv->cbs = cbs;
  srv->websocket = websocket;
  int r = uv_timer_init(loop, &srv->sweep);
  if (r < 0) {
    free(srv);
    return r;
  }
  srv->sweep.data = srv;
  srv->handles++;
  /* Coarse enough to cost nothing, fine enough for the handshake timeout. */
  uint64_t period = cfg->handshake_timeout_ms / 2;
  if (period > 1000)
    period = 1000;
  if (period < 10)
    period = 10;
  uv_timer_start(&srv->sweep, sweep_cb, period, period);
  uv_check_init(loop, &srv->sent_check);
  srv->sent_check.data = srv;
  srv->handles++;
  uv_check_start(&srv->sent_check, sent_check_cb);
  if (websocket)
    log_auth(cfg);
  *out = srv;
  return 0;
}

int wr_ws_server_listen(wr_ws_server_t *srv, const char *host, uint16_t port) {
  struct sockaddr_storage addr;
  int r;
  if (srv->listener_open || srv->freeing)
    return -EALREADY;
  if (strchr(host, ':') != NULL)
    r = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  else
    r = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (r < 0)
    return r;
  r = uv_tcp_init(srv->loop, &srv->listener);
  if (r < 0)
    return r;
  srv->listener.data = srv;
  srv->handles++;
  srv->listener_open = true;
  r = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&srv->listener, LISTEN_BACKLOG, connection_cb);
  if (r < 0) {
    srv->listener_open = false;
    uv_close((uv_handle_t *)&srv->listener, handle_close_cb);
    return r;
  }
  return 0;
}

uint16_t wr_ws_server_port(const wr_ws_server_t *srv) {
  struct sockaddr_storage addr;
  int len = sizeof(addr);
  if (!srv->listener_open ||
      uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&addr, &len) != 0)
    return 0;
  if (addr.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
  return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

void wr_ws_server_stop_accepting(wr_ws_server_t *srv) {
  if (!srv->listener_open)
    return;
  srv->listener_open = false;
  uv_close((uv_handle_t *)&srv->listener, handle_close_cb);
}

void wr_ws_server_close_all(wr_ws_server_t *srv, uint16_t code, const char *reason) {
  for (wr_ws_conn_t *c = srv->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->state == WR_WS_STATE_OPEN || c->state == WR_WS_STATE_HANDSHAKE)
      wr_ws_conn_close(c, code, reason);
  }
}

void wr_ws_server_set_config(wr_ws_server_t *srv, const wr_config_t *cfg) {
  srv->cfg = cfg;
}

void wr_ws_server_free(wr_ws_server_t *srv, void (*done_cb)(void *arg), void *arg) {
  if (srv->freeing)
    return;
  srv->freeing = true;
  srv->done_cb = done_cb;
  srv->done_arg = arg;
  wr_ws_server_stop_accepting(srv);
  uv_timer_stop(&srv->sweep);
  uv_close((uv_handle_t *)&srv->sweep, handle_close_cb);
  wr_ws_server_flush_sent(srv);
  uv_close((uv_handle_t *)&srv->sent_check, handle_close_cb);
  for (wr_ws_conn_t *c = srv->conns, *next; c != NULL; c = next) {
    next = c->next;
    wr_ws_conn_abort(c);
  }
}

const wr_ws_stats_t *wr_ws_server_stats(const wr_ws_server_t *srv) {
  return &srv->stats;
}
