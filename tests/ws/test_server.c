/* The WebSocket server on a real loop bound to 127.0.0.1:0, driven by a
 * plain blocking-socket client in a second thread. The client records the
 * first failed check; cmocka asserts run on the main thread once the loop
 * has ended, and every test ends with uv_loop_close() == 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "ws/jwt_int.h"
#include "ws/ws.h"

#define SECRET "test-secret-0123456789abcdef"
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

typedef struct fx_s fx_t;
typedef void (*client_fn)(fx_t *fx);

struct fx_s {
  uv_loop_t loop;
  wr_config_t cfg;
  wr_ws_callbacks_t cbs;
  wr_ws_server_t *srv;
  uint16_t port;
  uv_async_t async;
  uv_timer_t flood;
  bool flood_on;
  pthread_t thread;
  client_fn client;
  char why[512]; /* first failed client check, "" = none */
  /* loop side */
  int opens, closes, messages, sent_ok, sent_cancelled, send_enobufs, accepted;
  bool in_send;       /* inside wr_ws_conn_send with a ctx */
  int sent_reentered; /* on_sent_cb called from inside wr_ws_conn_send */
  int send_after_close;
  bool http_only;
  int leak_fd; /* a client socket left open on purpose, closed after the loop */
  bool freed;
  bool close_all_on_message;
  wr_config_t cfg2; /* applied with wr_ws_server_set_config on a "reload" message */
  bool cfg2_set;
  size_t flood_frame;
  char last_msg[256];
  bool last_binary;
  wr_ws_conn_t *conn;
  const char *welcome; /* sent on open when non-NULL */
  int grants;          /* wr_ws_conn_grant calls on open */
  wr_ws_stats_t stats; /* copied just before the server is freed */
  atomic_int slow;     /* set when a send returned -ENOBUFS */
};

/* ---- client helpers (run on the client thread; never call cmocka) ---- */

#define CK(fx, cond)                                                                               \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      if ((fx)->why[0] == '\0')                                                                    \
        snprintf((fx)->why, sizeof((fx)->why), "%s:%d: %s", __FILE__, __LINE__, #cond);            \
      goto out;                                                                                    \
    }                                                                                              \
  } while (0)

static int cl_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static bool cl_send(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w <= 0)
      return false;
    b += w;
    n -= (size_t)w;
  }
  return true;
}

static bool cl_recv_exact(int fd, void *p, size_t n) {
  uint8_t *b = p;
  while (n > 0) {
    ssize_t r = recv(fd, b, n, 0);
    if (r <= 0)
      return false;
    b += r;
    n -= (size_t)r;
  }
  return true;
}

/* Reads a response head byte by byte (so no frame bytes are consumed).
 * Returns the status code or -1. */
static int cl_read_head(int fd, char *head, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    if (!cl_recv_exact(fd, head + n, 1))
      return -1;
    n++;
    head[n] = '\0';
    if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0) {
      int status = -1;
      if (sscanf(head, "HTTP/1.1 %d", &status) != 1)
        return -1;
      return status;
    }
  }
  return -1;
}

/* Reads the body announced by Content-Length, then expects EOF. */
static bool cl_read_body(int fd, const char *head, char *body, size_t cap) {
  const char *cl = strstr(head, "Content-Length: ");
  if (cl == NULL)
    return false;
  size_t len = strtoul(cl + 16, NULL, 10);
  if (len + 1 > cap || !cl_recv_exact(fd, body, len))
    return false;
  body[len] = '\0';
  char extra;
  return recv(fd, &extra, 1, 0) == 0; /* Connection: close */
}

static bool cl_send_frame(int fd, uint8_t opcode, const void *data, size_t len, bool masked) {
  uint8_t h[14];
  size_t hl = 0;
  h[hl++] = (uint8_t)(0x80 | opcode);
  uint8_t m = masked ? 0x80 : 0;
  if (len < 126) {
    h[hl++] = (uint8_t)(m | len);
  } else if (len <= 0xffff) {
    h[hl++] = m | 126;
    h[hl++] = (uint8_t)(len >> 8);
    h[hl++] = (uint8_t)len;
  } else {
    h[hl++] = m | 127;
    for (int i = 7; i >= 0; i--)
      h[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
  if (masked) {
    memcpy(h + hl, mask, 4);
    hl += 4;
  }
  uint8_t *p = malloc(len + 1);
  if (p == NULL)
    return false;
  for (size_t i = 0; i < len; i++)
    p[i] = ((const uint8_t *)data)[i] ^ (masked ? mask[i % 4] : 0);
  bool ok = cl_send(fd, h, hl) && cl_send(fd, p, len);
  free(p);
  return ok;
}

/* Reads one server frame; the payload is NUL-terminated. Returns false on
 * EOF, timeout, a masked frame (servers never mask) or overflow. */
static bool cl_read_frame(int fd, uint8_t *opcode, uint8_t *payload, size_t cap, size_t *len) {
  uint8_t h[2];
  if (!cl_recv_exact(fd, h, 2) || (h[1] & 0x80) != 0)
    return false;
  *opcode = h[0] & 0x0f;
  uint64_t n = h[1] & 0x7f;
  if (n == 126) {
    uint8_t e[2];
    if (!cl_recv_exact(fd, e, 2))
      return false;
    n = (uint64_t)e[0] << 8 | e[1];
  } else if (n == 127) {
    uint8_t e[8];
    if (!cl_recv_exact(fd, e, 8))
      return false;
    n = 0;
    for (int i = 0; i < 8; i++)
      n = n << 8 | e[i];
  }
  if (n + 1 > cap || !cl_recv_exact(fd, payload, (size_t)n))
    return false;
  payload[n] = '\0';
  *len = (size_t)n;
  return true;
}

static char *mint(fx_t *fx, const char *user, int64_t ttl) {
  wr_jwt_rules_t rules = {.leeway_s = 0, .user_claim = "sub"};
  (void)fx;
  return wr_jwt_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), &rules, user, time(NULL), ttl);
}

/* Sends an upgrade request for /ws?token=<token> (token NULL: none) with
 * optional extra header lines. */
static bool cl_upgrade(int fd, const char *token, const char *extra) {
  char req[4096];
  int n = snprintf(req, sizeof(req),
                   "GET /ws%s%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s\r\n",
                   token ? "?token=" : "", token ? token : "", extra ? extra : "");
  return cl_send(fd, req, (size_t)n);
}

/* Opens an authenticated WebSocket for user. Returns the fd or -1. */
static int cl_open(fx_t *fx, const char *user, const char *extra, char *head, size_t cap) {
  char *tok = mint(fx, user, 3600);
  int fd = cl_connect(fx->port);
  bool ok =
      tok != NULL && fd >= 0 && cl_upgrade(fd, tok, extra) && cl_read_head(fd, head, cap) == 101;
  free(tok);
  if (!ok && fd >= 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* Reads frames until a close frame; returns its code or -1. */
static int cl_wait_close(int fd, char *reason, size_t cap) {
  uint8_t buf[70000];
  uint8_t op;
  size_t len;
  while (cl_read_frame(fd, &op, buf, sizeof(buf), &len)) {
    if (op == 0x8) {
      if (len < 2)
        return -1;
      if (reason != NULL)
        snprintf(reason, cap, "%.*s", (int)(len - 2), (const char *)buf + 2);
      return buf[0] << 8 | buf[1];
    }
  }
  return -1;
}

/* The test server echoes a text message "echo": the connection is alive. */
static bool cl_echoes(int fd) {
  uint8_t buf[16], op;
  size_t len;
  return cl_send_frame(fd, 0x1, "echo", 4, true) && cl_read_frame(fd, &op, buf, sizeof(buf), &len) &&
         op == 0x1 && len == 4 && memcmp(buf, "echo", 4) == 0;
}

/* A normal close from the client (1000), answered with 1000 by the server. */
static bool cl_close_normal(int fd) {
  const uint8_t cl[2] = {0x03, 0xe8};
  return cl_send_frame(fd, 0x8, cl, 2, true) && cl_wait_close(fd, NULL, 0) == 1000;
}

static bool cl_eof(int fd) {
  char b[4096];
  for (;;) {
    ssize_t r = recv(fd, b, sizeof(b), 0);
    if (r == 0)
      return true;
    if (r < 0)
      return errno == ECONNRESET;
  }
}

/* ---- loop side ---- */

static void flood_cb(uv_timer_t *t);

static void on_open(wr_ws_conn_t *c, void *data) {
  fx_t *fx = data;
  fx->opens++;
  fx->conn = c;
  if (fx->welcome != NULL) {
    size_t n = strlen(fx->welcome);
    wr_ws_buf_t *b = wr_ws_buf_new(n);
    memcpy(b->data, fx->welcome, n);
    fx->in_send = true;
    int r = wr_ws_conn_send(c, b, fx);
    fx->in_send = false;
    wr_ws_buf_unref(b);
    if (r != 0)
      fx->send_enobufs = -1000;
  }
  for (int i = 0; i < fx->grants; i++)
    wr_ws_conn_grant(c);
  if (fx->flood_frame > 0)
    uv_timer_start(&fx->flood, flood_cb, 1, 1);
}

static void on_close(wr_ws_conn_t *c, void *data) {
  fx_t *fx = data;
  fx->closes++;
  wr_ws_buf_t *b = wr_ws_buf_new(1);
  b->data[0] = 'x';
  fx->send_after_close = wr_ws_conn_send(c, b, fx);
  wr_ws_buf_unref(b);
  if (fx->conn == c)
    fx->conn = NULL;
}

static void on_message(wr_ws_conn_t *c, const uint8_t *msg, size_t len, bool binary, void *data) {
  fx_t *fx = data;
  fx->messages++;
  snprintf(fx->last_msg, sizeof(fx->last_msg), "%.*s", (int)len, (const char *)msg);
  fx->last_binary = binary;
  if (fx->close_all_on_message)
    wr_ws_server_close_all(fx->srv, WR_WS_CLOSE_GOING_AWAY, "shutdown");
  else if (fx->cfg2_set && len == 6 && memcmp(msg, "reload", 6) == 0) {
    /* What SIGHUP does: the server reads its limits from the new config. */
    wr_ws_server_set_config(fx->srv, &fx->cfg2);
    wr_ws_buf_t *b = wr_ws_buf_new(2);
    memcpy(b->data, "ok", 2);
    wr_ws_conn_send(c, b, NULL);
    wr_ws_buf_unref(b);
  } else if (len == 4 && memcmp(msg, "echo", 4) == 0) {
    wr_ws_buf_t *b = wr_ws_buf_new(len);
    memcpy(b->data, msg, len);
    wr_ws_conn_send(c, b, NULL);
    wr_ws_buf_unref(b);
  }
}

static void on_sent(wr_ws_conn_t *c, void *ctx, int status, void *data) {
  (void)c;
  fx_t *fx = data;
  if (ctx == NULL)
    return;
  if (fx->in_send)
    fx->sent_reentered++;
  if (status == 0)
    fx->sent_ok++;
  else if (status == -ECANCELED)
    fx->sent_cancelled++;
}

static int on_http(wr_ws_server_t *srv, const char *method, const char *path, const char *query,
                   wr_ws_http_response_t *resp, void *data) {
  (void)srv;
  (void)data;
  (void)method;
  if (strcmp(path, "/healthz") != 0)
    return -ENOENT;
  char *body = malloc(64);
  int n = snprintf(body, 64, "ok %s", query);
  resp->status = 200;
  resp->content_type = "text/plain";
  resp->extra_headers = "X-Test: 1\r\n";
  resp->body = body;
  resp->body_len = (size_t)n;
  resp->body_owned = true;
  return 0;
}

static void flood_cb(uv_timer_t *t) {
  fx_t *fx = t->data;
  if (fx->conn == NULL)
    return;
  wr_ws_buf_t *b = wr_ws_buf_new(fx->flood_frame);
  memset(b->data, 'x', fx->flood_frame);
  for (int i = 0; i < 4 && fx->conn != NULL; i++) {
    fx->in_send = true;
    int r = wr_ws_conn_send(fx->conn, b, fx);
    fx->in_send = false;
    if (r == 0)
      fx->accepted++;
    if (r == -ENOBUFS) {
      fx->send_enobufs++;
      atomic_store(&fx->slow, 1);
      uv_timer_stop(t);
      break;
    }
  }
  wr_ws_buf_unref(b);
}

static void freed_cb(void *arg) {
  fx_t *fx = arg;
  fx->freed = true;
}

static void async_cb(uv_async_t *a) {
  fx_t *fx = a->data;
  pthread_join(fx->thread, NULL);
  fx->stats = *wr_ws_server_stats(fx->srv);
  wr_ws_server_free(fx->srv, freed_cb, fx);
  uv_close((uv_handle_t *)&fx->async, NULL);
  uv_close((uv_handle_t *)&fx->flood, NULL);
}

static void *client_main(void *arg) {
  fx_t *fx = arg;
  fx->client(fx);
  uv_async_send(&fx->async);
  return NULL;
}

static void fx_init(fx_t *fx) {
  memset(fx, 0, sizeof(*fx));
  char err[256];
  assert_int_equal(wr_config_init(&fx->cfg), 0);
  assert_int_equal(wr_config_set(&fx->cfg, "auth", "jwt_secret", SECRET, err, sizeof(err)), 0);
  fx->cfg.leeway_s = 0;
  fx->cbs = (wr_ws_callbacks_t){.data = fx,
                                .on_open_cb = on_open,
                                .on_close_cb = on_close,
                                .on_message_cb = on_message,
                                .on_sent_cb = on_sent,
                                .on_http_cb = on_http};
}

/* Runs the loop until the client is done and the server freed. */
static void fx_run(fx_t *fx, client_fn fn) {
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  assert_int_equal(wr_ws_server_new(&fx->srv, &fx->loop, &fx->cfg, &fx->cbs, !fx->http_only), 0);
  assert_int_equal(wr_ws_server_listen(fx->srv, "127.0.0.1", 0), 0);
  fx->port = wr_ws_server_port(fx->srv);
  assert_true(fx->port > 0);
  assert_int_equal(uv_async_init(&fx->loop, &fx->async, async_cb), 0);
  fx->async.data = fx;
  assert_int_equal(uv_timer_init(&fx->loop, &fx->flood), 0);
  fx->flood.data = fx;
  fx->client = fn;
  assert_int_equal(pthread_create(&fx->thread, NULL, client_main, fx), 0);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_true(fx->freed);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  wr_config_close(&fx->cfg);
  if (fx->cfg2_set)
    wr_config_close(&fx->cfg2);
  if (fx->why[0] != '\0')
    fail_msg("client: %s", fx->why);
  /* Every opened connection was closed exactly once. */
  assert_int_equal(fx->opens, fx->closes);
}

/* ---- scenarios ---- */

static void client_json_roundtrip(fx_t *fx) {
  char head[2048];
  uint8_t buf[1024];
  uint8_t op;
  size_t len;
  int fd = cl_open(fx, "u1", "Origin: https://anything.example\r\n", head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, strstr(head, "Sec-WebSocket-Accept: " ACCEPT "\r\n") != NULL);
  CK(fx, strstr(head, "Sec-WebSocket-Protocol") == NULL);
  /* The welcome frame queued in on_open_cb: text for warren.json. */
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x1);
  CK(fx, strcmp((char *)buf, "{\"type\":\"welcome\"}") == 0);
  CK(fx, cl_send_frame(fd, 0x1, "hi there", 8, true));
  CK(fx, cl_send_frame(fd, 0x9, "p1", 2, true));
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0xA && len == 2 && memcmp(buf, "p1", 2) == 0);
  CK(fx, cl_echoes(fd));
  uint8_t cl[2] = {0x03, 0xe8};
  CK(fx, cl_send_frame(fd, 0x8, cl, 2, true));
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x8 && len >= 2 && buf[0] == 0x03 && buf[1] == 0xe8);
  CK(fx, cl_eof(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_json_roundtrip(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.welcome = "{\"type\":\"welcome\"}";
  fx_run(&fx, client_json_roundtrip);
  assert_int_equal(fx.opens, 1);
  assert_int_equal(fx.closes, 1);
  assert_int_equal(fx.messages, 2);
  assert_string_equal(fx.last_msg, "echo");
  assert_false(fx.last_binary);
  assert_int_equal(fx.sent_ok, 1);
  /* The welcome went straight to the socket, its report came afterwards. */
  assert_int_equal(fx.sent_reentered, 0);
  assert_int_equal(fx.stats.handshakes_accepted, 1);
  assert_int_equal(fx.stats.messages_received, 2);
  assert_int_equal(fx.stats.frames_sent, 2);
  assert_int_equal(fx.send_after_close, -ENOTCONN);
}

static void client_msgpack(fx_t *fx) {
  char head[2048];
  uint8_t buf[1024];
  uint8_t op;
  size_t len;
  int fd = cl_open(fx, "u2", "Sec-WebSocket-Protocol: chat, warren.msgpack, warren.json\r\n", head,
                   sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, strstr(head, "Sec-WebSocket-Protocol: warren.msgpack\r\n") != NULL);
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x2 && len == 5 && memcmp(buf, "hello", 5) == 0);
  CK(fx, cl_send_frame(fd, 0x2, "\x81\xa1t", 3, true));
  CK(fx, cl_close_normal(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_msgpack_binary(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.welcome = "hello";
  fx_run(&fx, client_msgpack);
  assert_int_equal(fx.opens, 1);
  assert_int_equal(fx.messages, 1);
  assert_true(fx.last_binary);
}

/* The token as the subprotocol "bearer.<token>": accepted, and the 101
 * names only the format (browsers require one of the offered protocols
 * back, so they offer warren.json too), never the token. */
static void client_bearer_subprotocol(fx_t *fx) {
  char head[2048], extra[4096];
  uint8_t buf[256], op;
  size_t len;
  int fd = -1;
  char *tok = mint(fx, "u2b", 3600);
  CK(fx, tok != NULL);
  snprintf(extra, sizeof(extra), "Sec-WebSocket-Protocol: warren.json, bearer.%s\r\n", tok);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, extra));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  CK(fx, strstr(head, "Sec-WebSocket-Protocol: warren.json\r\n") != NULL);
  CK(fx, strstr(head, "bearer") == NULL && strstr(head, tok) == NULL);
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x1 && strcmp((char *)buf, "{\"type\":\"welcome\"}") == 0);
  CK(fx, cl_close_normal(fd));
  close(fd);
  /* Only the token offered: the default format, and no protocol answered. */
  snprintf(extra, sizeof(extra), "Sec-WebSocket-Protocol: bearer.%s\r\n", tok);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, extra));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  CK(fx, strstr(head, "Sec-WebSocket-Protocol") == NULL);
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x1);
  CK(fx, cl_close_normal(fd));
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_bearer_subprotocol(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.welcome = "{\"type\":\"welcome\"}";
  fx_run(&fx, client_bearer_subprotocol);
  assert_int_equal(fx.opens, 2);
  assert_int_equal(fx.stats.handshakes_accepted, 2);
}

static void client_bad_tokens(fx_t *fx) {
  char head[2048], body[256];
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, "not-a-jwt", NULL));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 401);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "{\"error\":\"malformed\"}\n") == 0);
  close(fd);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, NULL));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 401);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "{\"error\":\"missing_token\"}\n") == 0);
  close(fd);
  /* An expired token, in the Authorization header this time. */
  char *tok = mint(fx, "u3", -100);
  char extra[1024];
  snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\n", tok);
  free(tok);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, extra));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 401);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "{\"error\":\"expired\"}\n") == 0);
out:
  if (fd >= 0)
    close(fd);
}

static void test_bad_token_401(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx_run(&fx, client_bad_tokens);
  assert_int_equal(fx.opens, 0);
  assert_int_equal(fx.stats.handshakes_unauthorized, 3);
  assert_int_equal(fx.stats.handshakes_accepted, 0);
}

/* Cookies are not read unless auth.cookie_name is set: a browser would send
 * one from any page, so a valid token in one opens nothing by default. */
static void client_cookie_ignored(fx_t *fx) {
  char head[2048], body[256], extra[1024];
  char *tok = mint(fx, "u3b", 3600);
  snprintf(extra, sizeof(extra), "Cookie: warren_token=%s\r\n", tok);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, extra));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 401);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "{\"error\":\"missing_token\"}\n") == 0);
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_cookie_not_read_by_default(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx_run(&fx, client_cookie_ignored);
  assert_int_equal(fx.opens, 0);
  assert_int_equal(fx.stats.handshakes_unauthorized, 1);
}

static void client_cookie_auth(fx_t *fx) {
  char head[2048], body[256], extra[1024];
  char *tok = mint(fx, "u3c", 3600), *old = mint(fx, "u3c", -100);
  snprintf(extra, sizeof(extra), "Origin: https://app.example\r\nCookie: a=b; sid=%s\r\n", tok);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, extra));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  CK(fx, cl_close_normal(fd));
  close(fd);
  snprintf(extra, sizeof(extra), "Origin: https://app.example\r\nCookie: sid=%s\r\n", old);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, NULL, extra));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 401);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "{\"error\":\"expired\"}\n") == 0);
out:
  free(tok);
  free(old);
  if (fd >= 0)
    close(fd);
}

static void test_cookie_auth_opt_in(void **state) {
  (void)state;
  fx_t fx;
  char err[256];
  fx_init(&fx);
  assert_int_equal(wr_config_set(&fx.cfg, "auth", "cookie_name", "sid", err, sizeof(err)), 0);
  assert_int_equal(
      wr_config_set(&fx.cfg, "server", "allowed_origins", "https://app.example", err, sizeof(err)),
      0);
  assert_int_equal(wr_config_validate(&fx.cfg, err, sizeof(err)), 0);
  fx_run(&fx, client_cookie_auth);
  assert_int_equal(fx.opens, 1);
  assert_int_equal(fx.stats.handshakes_unauthorized, 1);
}

static void client_origins(fx_t *fx) {
  char head[2048], body[256];
  char *tok = mint(fx, "u4", 3600);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, tok, "Origin: https://evil.example\r\n"));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 403);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  close(fd);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, tok, NULL));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 403);
  close(fd);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, tok, "Origin: https://GOOD.example\r\n"));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  CK(fx, cl_close_normal(fd));
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_bad_origin_403(void **state) {
  (void)state;
  fx_t fx;
  char err[256];
  fx_init(&fx);
  assert_int_equal(wr_config_set(&fx.cfg, "server", "allowed_origins",
                                 "https://good.example, http://localhost:8000", err, sizeof(err)),
                   0);
  fx_run(&fx, client_origins);
  assert_int_equal(fx.stats.handshakes_forbidden, 2);
  assert_int_equal(fx.opens, 1);
}

static void client_over_limit(fx_t *fx) {
  char head[2048], body[256];
  int fd2 = -1;
  int fd = cl_open(fx, "u5", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  char *tok = mint(fx, "u6", 3600);
  fd2 = cl_connect(fx->port);
  CK(fx, fd2 >= 0);
  CK(fx, cl_upgrade(fd2, tok, NULL));
  free(tok);
  CK(fx, cl_read_head(fd2, head, sizeof(head)) == 503);
  CK(fx, cl_read_body(fd2, head, body, sizeof(body)));
  CK(fx, strstr(head, "Connection: close\r\n") != NULL);
out:
  if (fd >= 0)
    close(fd);
  if (fd2 >= 0)
    close(fd2);
}

static void test_over_limit_503(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_connections = 1;
  fx_run(&fx, client_over_limit);
  assert_int_equal(fx.stats.handshakes_over_limit, 1);
  assert_int_equal(fx.opens, 1);
}

/* Handshakes in progress count against max_connections with the open
 * connections: with one open and one trickling its head, a third TCP
 * connection is answered 503 at once, before it sends a byte. Once the
 * trickling one times out there is room again. */
static void client_handshakes_bounded(fx_t *fx) {
  char head[2048], body[256];
  int fd2 = -1, fd3 = -1, fd4 = -1;
  int fd = cl_open(fx, "u5b", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  fd2 = cl_connect(fx->port);
  CK(fx, fd2 >= 0);
  CK(fx, cl_send(fd2, "GET /ws HTTP/1.1\r\n", 18));
  fd3 = cl_connect(fx->port);
  CK(fx, fd3 >= 0);
  CK(fx, cl_read_head(fd3, head, sizeof(head)) == 503);
  CK(fx, cl_read_body(fd3, head, body, sizeof(body)));
  CK(fx, strcmp(body, "{\"error\":\"over_capacity\"}\n") == 0);
  close(fd3);
  fd3 = -1;
  /* The handshake timeout ends the trickling one and frees its place. */
  CK(fx, cl_eof(fd2));
  char *tok = mint(fx, "u5c", 3600);
  fd4 = cl_connect(fx->port);
  CK(fx, fd4 >= 0);
  bool sent = cl_upgrade(fd4, tok, NULL);
  free(tok);
  CK(fx, sent);
  CK(fx, cl_read_head(fd4, head, sizeof(head)) == 101);
out:
  if (fd >= 0)
    close(fd);
  if (fd2 >= 0)
    close(fd2);
  if (fd3 >= 0)
    close(fd3);
  if (fd4 >= 0)
    close(fd4);
}

static void test_handshakes_count_toward_max_connections(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_connections = 2;
  fx.cfg.handshake_timeout_ms = 300;
  fx_run(&fx, client_handshakes_bounded);
  assert_int_equal(fx.opens, 2);
  assert_int_equal(fx.stats.handshakes_over_limit, 1);
  assert_int_equal(fx.stats.handshakes_timeout, 1);
  assert_int_equal(fx.stats.handshakes_accepted, 2);
  /* The 503 was a plain answer, not a handshake that timed out. */
  assert_int_equal(fx.stats.handshakes_bad_request, 0);
  assert_int_equal(fx.stats.handshakes_in_progress, 0);
}

static void client_http(fx_t *fx) {
  char head[2048], body[256];
  const char *get = "GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_send(fd, get, strlen(get)));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 200);
  CK(fx, strstr(head, "Content-Type: text/plain\r\n") != NULL);
  CK(fx, strstr(head, "Cache-Control: no-store\r\n") != NULL);
  CK(fx, strstr(head, "X-Test: 1\r\n") != NULL);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "ok x=1") == 0);
  close(fd);

  const char *missing = "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_send(fd, missing, strlen(missing)));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 404);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  close(fd);

  const char *post = "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_send(fd, post, strlen(post)));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 405);
  close(fd);

  const char *plain_ws = "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_send(fd, plain_ws, strlen(plain_ws)));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 426);
  CK(fx, strstr(head, "Upgrade: websocket\r\n") != NULL);
  close(fd);

  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  char big[9000];
  memset(big, 'a', sizeof(big));
  memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
  CK(fx, cl_send(fd, big, sizeof(big)));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 431);
out:
  if (fd >= 0)
    close(fd);
}

static void test_http_requests(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx_run(&fx, client_http);
  assert_int_equal(fx.stats.http_requests, 2);
  assert_int_equal(fx.stats.handshakes_bad_request, 3);
}

static void client_too_big(fx_t *fx) {
  char head[2048];
  char msg[100];
  memset(msg, 'a', sizeof(msg));
  int fd = cl_open(fx, "u7", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_send_frame(fd, 0x1, msg, sizeof(msg), true));
  CK(fx, cl_wait_close(fd, NULL, 0) == 1009);
  CK(fx, cl_eof(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_too_big_1009(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_client_message_bytes = 64;
  fx_run(&fx, client_too_big);
  assert_int_equal(fx.stats.closes_too_big, 1);
  assert_int_equal(fx.messages, 0);
  assert_int_equal(fx.closes, 1);
}

static void client_unmasked(fx_t *fx) {
  char head[2048];
  int fd = cl_open(fx, "u8", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_send_frame(fd, 0x1, "hello", 5, false));
  CK(fx, cl_wait_close(fd, NULL, 0) == 1002);
  close(fd);
  /* Invalid UTF-8 in a text frame. */
  fd = cl_open(fx, "u8", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_send_frame(fd, 0x1, "\xc3\x28", 2, true));
  CK(fx, cl_wait_close(fd, NULL, 0) == 1007);
out:
  if (fd >= 0)
    close(fd);
}

static void test_unmasked_1002(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx_run(&fx, client_unmasked);
  assert_int_equal(fx.stats.closes_protocol, 2);
  assert_int_equal(fx.messages, 0);
  assert_int_equal(fx.closes, 2);
}

static void client_slow(fx_t *fx) {
  char head[2048], reason[128];
  int fd = cl_open(fx, "u9", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  /* Never read until the server gives up on us. */
  for (int i = 0; i < 1000 && !atomic_load(&fx->slow); i++)
    usleep(10000);
  CK(fx, atomic_load(&fx->slow));
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 4008);
  CK(fx, strcmp(reason, "slow consumer") == 0);
  CK(fx, cl_eof(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_slow_consumer_4008(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_queued_bytes = 256 * 1024;
  fx.flood_frame = 32 * 1024;
  fx_run(&fx, client_slow);
  assert_int_equal(fx.send_enobufs, 1);
  assert_int_equal(fx.stats.closes_slow_consumer, 1);
  assert_int_equal(fx.closes, 1);
  /* Every accepted frame was reported exactly once, written or cancelled. */
  assert_true(fx.sent_ok > 0);
  assert_int_equal(fx.sent_ok + fx.sent_cancelled, fx.accepted);
  assert_int_equal(fx.sent_ok, (int)fx.stats.frames_sent);
  assert_int_equal(fx.sent_reentered, 0);
}

static void client_idle(fx_t *fx) {
  char head[2048], reason[128];
  uint8_t buf[256], op;
  size_t len;
  int fd = cl_open(fx, "u10", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x9); /* server ping */
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1001);
  CK(fx, strcmp(reason, "idle timeout") == 0);
out:
  if (fd >= 0)
    close(fd);
}

static void test_ping_then_idle_close(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.handshake_timeout_ms = 100;
  fx.cfg.ping_interval_ms = 100;
  fx.cfg.idle_timeout_ms = 400;
  fx_run(&fx, client_idle);
  assert_int_equal(fx.stats.closes_idle, 1);
  assert_int_equal(fx.closes, 1);
}

static void client_handshake_timeout(fx_t *fx) {
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_send(fd, "GET /ws HTTP/1.1\r\n", 18));
  CK(fx, cl_eof(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_handshake_timeout(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.handshake_timeout_ms = 100;
  fx_run(&fx, client_handshake_timeout);
  assert_int_equal(fx.stats.handshakes_timeout, 1);
  assert_int_equal(fx.opens, 0);
}

static void client_token_expiry(fx_t *fx) {
  char head[2048], reason[128];
  char *tok = mint(fx, "u11", 2);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, tok, NULL));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1008);
  CK(fx, strcmp(reason, "token expired") == 0);
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_token_expiry_1008(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.handshake_timeout_ms = 200;
  fx_run(&fx, client_token_expiry);
  assert_int_equal(fx.stats.closes_token_expired, 1);
}

/* A token whose exp is the largest int64 (the minting helper saturates
 * now + ttl there): adding the leeway must not overflow, and the connection
 * must stay open across several sweeps instead of being closed as expired. */
static void client_exp_near_int64_max(fx_t *fx) {
  char head[2048];
  char *tok = mint(fx, "u11b", INT64_MAX);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  CK(fx, cl_upgrade(fd, tok, NULL));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  usleep(350000); /* the sweep runs every 100 ms here */
  CK(fx, cl_echoes(fd));
  CK(fx, cl_close_normal(fd));
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_token_exp_near_int64_max(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.handshake_timeout_ms = 200;
  fx.cfg.leeway_s = 3600;
  fx_run(&fx, client_exp_near_int64_max);
  assert_int_equal(fx.opens, 1);
  assert_int_equal(fx.stats.closes_token_expired, 0);
  assert_int_equal(fx.messages, 1);
}

static void client_close_all(fx_t *fx) {
  char head[2048], reason[128];
  int fd2 = -1;
  int fd = cl_open(fx, "u12", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  fd2 = cl_connect(fx->port); /* still in the handshake */
  CK(fx, fd2 >= 0);
  CK(fx, cl_send(fd2, "GET /ws HTTP/1.1\r\n", 18));
  usleep(50000);
  /* A message makes the bridge side call close_all. */
  CK(fx, cl_send_frame(fd, 0x1, "bye", 3, true));
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1001);
  CK(fx, strcmp(reason, "shutdown") == 0);
  CK(fx, cl_eof(fd));
  CK(fx, cl_eof(fd2));
out:
  if (fd >= 0)
    close(fd);
  if (fd2 >= 0)
    close(fd2);
}

static void test_close_all(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.close_all_on_message = true;
  fx_run(&fx, client_close_all);
  assert_int_equal(fx.messages, 1);
  assert_int_equal(fx.closes, 1);
}

static void client_glued_frame(fx_t *fx) {
  char req[4096];
  char head[2048];
  char *tok = mint(fx, "u13", 3600);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  /* The request head and a first masked frame in one segment. */
  int n = snprintf(req, sizeof(req),
                   "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n"
                   "Authorization: Bearer %s\r\n\r\n",
                   tok);
  CK(fx, n > 0 && (size_t)n + 8 < sizeof(req));
  memcpy(req + n, "\x81\x82\x00\x00\x00\x00hi", 8);
  CK(fx, cl_send(fd, req, (size_t)n + 8));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 101);
  CK(fx, cl_close_normal(fd));
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_frame_glued_to_head(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx_run(&fx, client_glued_frame);
  assert_int_equal(fx.messages, 1);
  assert_string_equal(fx.last_msg, "hi");
}

static void client_leave_open(fx_t *fx) {
  char head[2048];
  int fd = cl_open(fx, "u14", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  /* The server is freed while this connection is open. */
  fx->leak_fd = fd;
out:
  return;
}

static void test_free_with_open_connection(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.leak_fd = -1;
  fx_run(&fx, client_leave_open);
  assert_true(fx.leak_fd >= 0);
  close(fx.leak_fd);
  assert_int_equal(fx.opens, 1);
  assert_int_equal(fx.closes, 1);
}

static void client_http_only(fx_t *fx) {
  char head[2048], body[256];
  char *tok = mint(fx, "u15", 3600);
  int fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  /* On the admin port even an upgrade request is a plain GET. */
  CK(fx, cl_upgrade(fd, tok, NULL));
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 404);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  close(fd);
  fd = cl_connect(fx->port);
  CK(fx, fd >= 0);
  /* Half-closing right after the request still gets the whole answer. */
  CK(fx, cl_send(fd, "GET /healthz HTTP/1.1\r\n\r\n", 25));
  CK(fx, shutdown(fd, SHUT_WR) == 0);
  CK(fx, cl_read_head(fd, head, sizeof(head)) == 200);
  CK(fx, cl_read_body(fd, head, body, sizeof(body)));
  CK(fx, strcmp(body, "ok ") == 0);
out:
  free(tok);
  if (fd >= 0)
    close(fd);
}

static void test_http_only_mode(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.http_only = true;
  fx_run(&fx, client_http_only);
  assert_int_equal(fx.opens, 0);
  assert_int_equal(fx.stats.http_requests, 2);
  assert_int_equal(fx.stats.handshakes_accepted, 0);
}

static void client_flood(fx_t *fx) {
  char head[2048], reason[128];
  int fd = cl_open(fx, "u16", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  /* All in one burst: the bucket cannot refill in between. */
  for (int i = 0; i < 20; i++)
    CK(fx, cl_send_frame(fd, 0x1, "m", 1, true));
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1008);
  CK(fx, strcmp(reason, "rate limit") == 0);
  CK(fx, cl_eof(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_rate_limit_1008(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_client_messages_per_s = 5;
  fx_run(&fx, client_flood);
  /* The burst is the rate: five get through, the sixth closes. */
  assert_int_equal(fx.messages, 5);
  assert_int_equal(fx.stats.messages_received, 5);
  assert_int_equal(fx.stats.closes_rate_limited, 1);
  assert_int_equal(fx.stats.closes_protocol, 0);
  assert_int_equal(fx.closes, 1);
}

/* Granted answers (acks of notifications the server sent) do not count
 * against the rate; the messages after them do. */
static void test_rate_limit_grants(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_client_messages_per_s = 5;
  fx.grants = 10;
  fx_run(&fx, client_flood);
  assert_int_equal(fx.messages, 15);
  assert_int_equal(fx.stats.closes_rate_limited, 1);
  assert_int_equal(fx.closes, 1);
}

/* Pings are never answers the server asked for: granted messages do not
 * cover them. */
static void client_ping_flood(fx_t *fx) {
  char head[2048], reason[64];
  int fd = cl_open(fx, "u17", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  for (int i = 0; i < 20; i++)
    CK(fx, cl_send_frame(fd, 0x9, "p", 1, true));
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1008);
  CK(fx, strcmp(reason, "rate limit") == 0);
out:
  if (fd >= 0)
    close(fd);
}

static void test_rate_limit_grants_not_pings(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_client_messages_per_s = 5;
  fx.grants = 10;
  fx_run(&fx, client_ping_flood);
  assert_int_equal(fx.messages, 0);
  assert_int_equal(fx.stats.closes_rate_limited, 1);
}

/* A connection opened under a high rate, then the configuration is
 * replaced by one with a rate of 5 (SIGHUP): it keeps working and is held
 * to the new rate, neither unlimited (its old burst kept) nor closed at once. */
static void client_rate_lowered(fx_t *fx) {
  char head[2048], reason[128];
  uint8_t buf[256], op;
  size_t len;
  int fd = cl_open(fx, "u16b", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_send_frame(fd, 0x1, "reload", 6, true));
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x1 && len == 2 && memcmp(buf, "ok", 2) == 0);
  for (int i = 0; i < 20; i++)
    CK(fx, cl_send_frame(fd, 0x1, "m", 1, true));
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1008);
  CK(fx, strcmp(reason, "rate limit") == 0);
out:
  if (fd >= 0)
    close(fd);
}

static void test_rate_lowered_by_reload(void **state) {
  (void)state;
  fx_t fx;
  char err[256];
  fx_init(&fx);
  fx.cfg.max_client_messages_per_s = 1000;
  assert_int_equal(wr_config_init(&fx.cfg2), 0);
  assert_int_equal(wr_config_set(&fx.cfg2, "auth", "jwt_secret", SECRET, err, sizeof(err)), 0);
  fx.cfg2.leeway_s = 0;
  fx.cfg2.max_client_messages_per_s = 5;
  fx.cfg2_set = true;
  fx_run(&fx, client_rate_lowered);
  /* "reload" itself, then the new burst of five; the sixth closes. */
  assert_int_equal(fx.messages, 1 + 5);
  assert_int_equal(fx.stats.closes_rate_limited, 1);
  assert_int_equal(fx.closes, 1);
}

static void client_many(fx_t *fx) {
  char head[2048];
  int fd = cl_open(fx, "u17", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  for (int i = 0; i < 300; i++)
    CK(fx, cl_send_frame(fd, 0x1, "m", 1, true));
  CK(fx, cl_close_normal(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_rate_limit_off(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_client_messages_per_s = 0;
  fx_run(&fx, client_many);
  assert_int_equal(fx.messages, 300);
  assert_int_equal(fx.stats.closes_rate_limited, 0);
}

/* Sends one masked frame whose first byte is b0 (FIN, RSV, opcode) as is. */
static bool cl_send_b0(int fd, uint8_t b0, const void *data, size_t len) {
  uint8_t f[256];
  if (len > 125)
    return false;
  f[0] = b0;
  f[1] = (uint8_t)(0x80 | len);
  memset(f + 2, 0, 4); /* a zero mask leaves the payload as it is */
  memcpy(f + 6, data, len);
  return cl_send(fd, f, 6 + len);
}

static void client_header_checks(fx_t *fx) {
  char head[2048], reason[128];
  uint8_t buf[1024];
  uint8_t op;
  size_t len;
  /* A ping between two fragments: its pong comes before the reply to the
   * message, even when all three frames arrive in one segment. */
  int fd = cl_open(fx, "u18", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  uint8_t three[64];
  size_t n = 0;
  const uint8_t f1[] = {0x01, 0x82, 0, 0, 0, 0, 'e', 'c'};
  const uint8_t f2[] = {0x89, 0x83, 0, 0, 0, 0, 'm', 'i', 'd'};
  const uint8_t f3[] = {0x80, 0x82, 0, 0, 0, 0, 'h', 'o'};
  memcpy(three + n, f1, sizeof(f1)), n += sizeof(f1);
  memcpy(three + n, f2, sizeof(f2)), n += sizeof(f2);
  memcpy(three + n, f3, sizeof(f3)), n += sizeof(f3);
  CK(fx, cl_send(fd, three, n));
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0xA && len == 3 && memcmp(buf, "mid", 3) == 0);
  CK(fx, cl_read_frame(fd, &op, buf, sizeof(buf), &len));
  CK(fx, op == 0x1 && len == 4 && memcmp(buf, "echo", 4) == 0);
  CK(fx, cl_close_normal(fd));
  close(fd);
  /* A 126-byte ping: too long for a control frame. */
  fd = cl_open(fx, "u18", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  uint8_t big[126];
  memset(big, 'p', sizeof(big));
  CK(fx, cl_send_frame(fd, 0x9, big, sizeof(big), true));
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1002);
  close(fd);
  /* A close frame with a 1-byte payload, and a fragmented ping. */
  fd = cl_open(fx, "u18", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_send_b0(fd, 0x88, "\x03", 1));
  CK(fx, cl_wait_close(fd, NULL, 0) == 1002);
  close(fd);
  fd = cl_open(fx, "u18", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  CK(fx, cl_send_b0(fd, 0x09, "a", 1));
  CK(fx, cl_wait_close(fd, NULL, 0) == 1002);
  close(fd);
  /* A header announcing 2^63-1 bytes, one byte at a time: closed with 1009
   * as soon as the length is known, without waiting for any payload. */
  fd = cl_open(fx, "u18", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  const uint8_t h[] = {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
  for (size_t i = 0; i < sizeof(h); i++) {
    CK(fx, cl_send(fd, h + i, 1));
    usleep(2000);
  }
  CK(fx, cl_wait_close(fd, reason, sizeof(reason)) == 1009);
  CK(fx, strcmp(reason, "message too big") == 0);
  CK(fx, cl_eof(fd));
out:
  if (fd >= 0)
    close(fd);
}

static void test_frame_header_checks(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx_run(&fx, client_header_checks);
  assert_int_equal(fx.messages, 1);
  assert_string_equal(fx.last_msg, "echo");
  assert_int_equal(fx.stats.closes_protocol, 3);
  assert_int_equal(fx.stats.closes_too_big, 1);
  assert_int_equal(fx.closes, 5);
}

static void client_ping_no_read(fx_t *fx) {
  char head[2048];
  int fd = cl_open(fx, "u19", NULL, head, sizeof(head));
  CK(fx, fd >= 0);
  /* 60,000 pings of 125 bytes (7.9 MB of pongs owed), none read: the pongs
   * fill the kernel buffers, then the connection's own queue, which is
   * capped like any other output. */
  uint8_t f[6 + 125];
  f[0] = 0x89;
  f[1] = 0x80 | 125;
  memset(f + 2, 0, 4);
  memset(f + 6, 'p', 125);
  for (int i = 0; i < 60000; i++)
    if (!cl_send(fd, f, sizeof(f)))
      break; /* closed under us: fine, the cap did its work */
  CK(fx, cl_wait_close(fd, NULL, 0) == 4008);
out:
  if (fd >= 0)
    close(fd);
}

static void test_pong_flood_capped(void **state) {
  (void)state;
  fx_t fx;
  fx_init(&fx);
  fx.cfg.max_client_messages_per_s = 0;
  fx.cfg.max_queued_bytes = 65536;
  fx_run(&fx, client_ping_no_read);
  assert_int_equal(fx.stats.closes_slow_consumer, 1);
  assert_int_equal(fx.closes, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_roundtrip),
      cmocka_unit_test(test_msgpack_binary),
      cmocka_unit_test(test_bearer_subprotocol),
      cmocka_unit_test(test_bad_token_401),
      cmocka_unit_test(test_cookie_not_read_by_default),
      cmocka_unit_test(test_cookie_auth_opt_in),
      cmocka_unit_test(test_bad_origin_403),
      cmocka_unit_test(test_over_limit_503),
      cmocka_unit_test(test_handshakes_count_toward_max_connections),
      cmocka_unit_test(test_http_requests),
      cmocka_unit_test(test_too_big_1009),
      cmocka_unit_test(test_unmasked_1002),
      cmocka_unit_test(test_slow_consumer_4008),
      cmocka_unit_test(test_ping_then_idle_close),
      cmocka_unit_test(test_handshake_timeout),
      cmocka_unit_test(test_token_expiry_1008),
      cmocka_unit_test(test_token_exp_near_int64_max),
      cmocka_unit_test(test_close_all),
      cmocka_unit_test(test_frame_glued_to_head),
      cmocka_unit_test(test_free_with_open_connection),
      cmocka_unit_test(test_http_only_mode),
      cmocka_unit_test(test_rate_limit_1008),
      cmocka_unit_test(test_rate_limit_grants),
      cmocka_unit_test(test_rate_limit_grants_not_pings),
      cmocka_unit_test(test_rate_limit_off),
      cmocka_unit_test(test_rate_lowered_by_reload),
      cmocka_unit_test(test_frame_header_checks),
      cmocka_unit_test(test_pong_flood_capped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
