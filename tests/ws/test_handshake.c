/* The pure request-head parser, handshake validation, token extraction and
 * response heads. Every request is fed whole, one byte at a time, and split
 * at every position. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws/auth_int.h"
#include "ws/handshake_int.h"

#define SAMPLE_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define SAMPLE_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define UPGRADE_HEAD(extra)                                                                        \
  "GET /ws?token=abc HTTP/1.1\r\n"                                                                 \
  "Host: example.com\r\n"                                                                          \
  "Upgrade: websocket\r\n"                                                                         \
  "Connection: Upgrade\r\n"                                                                        \
  "Sec-WebSocket-Key: " SAMPLE_KEY "\r\n"                                                          \
  "Sec-WebSocket-Version: 13\r\n" extra "\r\n"

typedef enum { WHOLE = 0, BYTES = 1, SPLIT = 2 } mode_t_;

typedef struct parsed_s {
  wr_ws_hs_t *hs;
  wr_ws_hs_state_t st;
  int status;
  size_t head_len; /* bytes of the input that belonged to the head */
} parsed_t;

/* Feeds data according to mode (split: two pieces cut at `at`). */
static void parse(parsed_t *p, const char *data, size_t len, mode_t_ mode, size_t at) {
  memset(p, 0, sizeof(*p));
  p->hs = wr_ws_hs_new();
  assert_non_null(p->hs);
  size_t off = 0;
  p->st = WR_WS_HS_MORE;
  while (off < len && p->st == WR_WS_HS_MORE) {
    size_t n = len - off;
    if (mode == BYTES)
      n = 1;
    else if (mode == SPLIT && off < at)
      n = at - off;
    size_t used = 0;
    p->st = wr_ws_hs_feed(p->hs, (const uint8_t *)data + off, n, &used, &p->status);
    assert_true(used <= n);
    off += used;
    if (p->st != WR_WS_HS_MORE)
      break;
  }
  p->head_len = off;
}

static void done(parsed_t *p) {
  wr_ws_hs_free(p->hs);
  p->hs = NULL;
}

/* Runs check on the request fed whole, bytewise and split at every byte. */
static void each_mode(const char *data, size_t len, void (*check)(parsed_t *p, size_t len)) {
  parsed_t p;
  parse(&p, data, len, WHOLE, 0);
  check(&p, len);
  done(&p);
  parse(&p, data, len, BYTES, 0);
  check(&p, len);
  done(&p);
  for (size_t at = 1; at < len; at++) {
    parse(&p, data, len, SPLIT, at);
    check(&p, len);
    done(&p);
  }
}

static const char *valid_head = UPGRADE_HEAD("Sec-WebSocket-Protocol: foo, warren.msgpack\r\n"
                                             "Origin: https://app.example.com\r\n");

static void check_valid(parsed_t *p, size_t len) {
  assert_int_equal(p->st, WR_WS_HS_DONE);
  /* Everything after the head is the client's first WebSocket bytes. */
  assert_int_equal(p->head_len, strlen(valid_head));
  assert_true(len - p->head_len == 6);
  const wr_ws_request_t *r = wr_ws_hs_request(p->hs);
  assert_non_null(r);
  assert_true(r->is_get);
  assert_string_equal(r->method, "GET");
  assert_string_equal(r->path, "/ws");
  assert_string_equal(r->query, "token=abc");
  assert_true(r->upgrade);
  assert_string_equal(r->headers[WR_WS_H_HOST], "example.com");
  assert_string_equal(r->headers[WR_WS_H_KEY], SAMPLE_KEY);
  assert_string_equal(r->headers[WR_WS_H_ORIGIN], "https://app.example.com");
  assert_null(r->headers[WR_WS_H_COOKIE]);
  wr_ws_upgrade_t up;
  assert_int_equal(wr_ws_hs_validate(r, &up), 101);
  assert_string_equal(up.accept, SAMPLE_ACCEPT);
  assert_int_equal(up.format, WR_WS_FORMAT_MSGPACK);
  assert_true(up.echo_protocol);
}

static void test_valid_upgrade_with_trailing_bytes(void **state) {
  (void)state;
  char buf[1024];
  size_t hl = strlen(valid_head);
  memcpy(buf, valid_head, hl);
  memcpy(buf + hl, "\x81\x84\x01\x02\x03\x04", 6);
  each_mode(buf, hl + 6, check_valid);
}

static void test_accept_key_rfc_sample(void **state) {
  (void)state;
  char out[29];
  assert_int_equal(wr_ws_hs_accept_key(SAMPLE_KEY, out), 0);
  assert_string_equal(out, SAMPLE_ACCEPT);
  assert_int_equal(wr_ws_hs_accept_key("dGhlIHNhbXBsZQ==", out), -EINVAL); /* 10 bytes */
  assert_int_equal(wr_ws_hs_accept_key("dGhlIHNhbXBsZSBub25jZQ", out), -EINVAL);
  assert_int_equal(wr_ws_hs_accept_key("dGhlIHNhbXBsZSBub25j!Q==", out), -EINVAL);
  assert_int_equal(wr_ws_hs_accept_key(NULL, out), -EINVAL);
}

/* Parses a complete head (fed whole and bytewise) and validates it. */
static int validate_status(const char *head, const char **extra) {
  int status[2];
  for (int mode = 0; mode < 2; mode++) {
    parsed_t p;
    parse(&p, head, strlen(head), (mode_t_)mode, 0);
    assert_int_equal(p.st, WR_WS_HS_DONE);
    assert_int_equal(p.head_len, strlen(head));
    wr_ws_upgrade_t up;
    status[mode] = wr_ws_hs_validate(wr_ws_hs_request(p.hs), &up);
    assert_int_equal(status[mode], up.status);
    if (extra != NULL)
      *extra = up.extra_header;
    if (status[mode] != 101)
      assert_non_null(up.error);
    done(&p);
  }
  assert_int_equal(status[0], status[1]);
  return status[0];
}

static void test_bad_key(void **state) {
  (void)state;
  const char *missing = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(validate_status(missing, NULL), 400);
  const char *shortkey = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(validate_status(shortkey, NULL), 400);
}

static void test_duplicate_key_is_bad_request(void **state) {
  (void)state;
  const char *head = UPGRADE_HEAD("Sec-WebSocket-Key: " SAMPLE_KEY "\r\n");
  for (int mode = 0; mode < 2; mode++) {
    parsed_t p;
    parse(&p, head, strlen(head), (mode_t_)mode, 0);
    assert_int_equal(p.st, WR_WS_HS_ERROR);
    assert_int_equal(p.status, 400);
    done(&p);
  }
}

static void test_wrong_version(void **state) {
  (void)state;
  const char *head = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                     "Sec-WebSocket-Version: 8\r\n\r\n";
  const char *extra = NULL;
  assert_int_equal(validate_status(head, &extra), 426);
  assert_string_equal(extra, "Sec-WebSocket-Version: 13\r\n");
}

static void test_not_upgrade(void **state) {
  (void)state;
  const char *extra = NULL;
  const char *plain = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(validate_status(plain, &extra), 426);
  assert_string_equal(extra, "Upgrade: websocket\r\n");
  const char *noconn = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       "Connection: keep-alive\r\nSec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(validate_status(noconn, NULL), 426);
  const char *h2c = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(validate_status(h2c, NULL), 426);
}

static void test_connection_token_list_and_duplicates(void **state) {
  (void)state;
  const char *head = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
                     "Connection: keep-alive\r\nconnection: UPGRADE\r\n"
                     "sec-websocket-key: " SAMPLE_KEY "\r\n"
                     "SEC-WEBSOCKET-VERSION: 13\r\n\r\n";
  assert_int_equal(validate_status(head, NULL), 101);
  assert_true(wr_ws_hs_has_token("keep-alive, Upgrade", "upgrade"));
  assert_true(wr_ws_hs_has_token(" upgrade ", "upgrade"));
  assert_false(wr_ws_hs_has_token("upgrades", "upgrade"));
  assert_false(wr_ws_hs_has_token(NULL, "upgrade"));
}

static void test_post_is_405(void **state) {
  (void)state;
  const char *head = "POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\n";
  assert_int_equal(validate_status(head, NULL), 405);
  /* A plain POST with a body: the head ends before the body, which is never
   * waited for. */
  const char *post = "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc";
  parsed_t p;
  parse(&p, post, strlen(post), WHOLE, 0);
  assert_int_equal(p.st, WR_WS_HS_DONE);
  assert_int_equal(p.head_len, strlen(post) - 3);
  assert_false(wr_ws_hs_request(p.hs)->is_get);
  assert_string_equal(wr_ws_hs_request(p.hs)->method, "POST");
  done(&p);
}

static void test_http10_is_400(void **state) {
  (void)state;
  const char *head = "GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
  assert_int_equal(validate_status(head, NULL), 400);
}

static void test_head_over_8k_is_431(void **state) {
  (void)state;
  size_t len = 9000;
  char *big = malloc(len + 16);
  assert_non_null(big);
  strcpy(big, "GET /ws HTTP/1.1\r\nX-Big: ");
  size_t off = strlen(big);
  memset(big + off, 'a', len - off);
  for (int mode = 0; mode < 2; mode++) {
    parsed_t p;
    parse(&p, big, len, (mode_t_)mode, 0);
    assert_int_equal(p.st, WR_WS_HS_ERROR);
    assert_int_equal(p.status, 431);
    assert_true(p.head_len <= WR_WS_HEAD_MAX);
    /* Further bytes change nothing. */
    size_t used = 1;
    int st = 0;
    assert_int_equal(wr_ws_hs_feed(p.hs, (const uint8_t *)"x", 1, &used, &st), WR_WS_HS_ERROR);
    assert_int_equal(used, 0);
    assert_int_equal(st, 431);
    done(&p);
  }
  free(big);
}

static void test_head_just_under_8k_is_accepted(void **state) {
  (void)state;
  char *head = malloc(WR_WS_HEAD_MAX + 1);
  assert_non_null(head);
  const char *pre = "GET /x HTTP/1.1\r\nX-Pad: ";
  size_t plen = strlen(pre);
  size_t pad = WR_WS_HEAD_MAX - plen - 4;
  memcpy(head, pre, plen);
  memset(head + plen, 'p', pad);
  memcpy(head + plen + pad, "\r\n\r\n", 5);
  assert_int_equal(strlen(head), WR_WS_HEAD_MAX);
  parsed_t p;
  parse(&p, head, WR_WS_HEAD_MAX, WHOLE, 0);
  assert_int_equal(p.st, WR_WS_HS_DONE);
  done(&p);
  free(head);
}

static void test_malformed_is_400(void **state) {
  (void)state;
  const char *bad[] = {"GARBAGE\r\n\r\n", "GET /ws HTTP/9.x\r\n\r\n",
                       "GET /ws HTTP/1.1\r\nBad Header\r\n\r\n", "\x16\x03\x01\x02\x00"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    for (int mode = 0; mode < 2; mode++) {
      parsed_t p;
      parse(&p, bad[i], strlen(bad[i]), (mode_t_)mode, 0);
      assert_int_equal(p.st, WR_WS_HS_ERROR);
      assert_int_equal(p.status, 400);
      done(&p);
    }
  }
}

static void check_plain_get(parsed_t *p, size_t len) {
  assert_int_equal(p->st, WR_WS_HS_DONE);
  assert_int_equal(p->head_len, len);
  const wr_ws_request_t *r = wr_ws_hs_request(p->hs);
  assert_false(r->upgrade);
  assert_string_equal(r->path, "/metrics");
  assert_string_equal(r->query, "");
  assert_string_equal(r->headers[WR_WS_H_COOKIE], "a=1; warren_token=tok; b=2");
  assert_string_equal(r->headers[WR_WS_H_AUTHORIZATION], "Bearer xyz");
  assert_string_equal(r->headers[WR_WS_H_HOST], "");
}

static void test_plain_get_and_empty_value(void **state) {
  (void)state;
  const char *head = "GET /metrics HTTP/1.1\r\nHost:\r\nCookie: a=1\r\n"
                     "Authorization:   Bearer xyz  \r\nCookie: warren_token=tok; b=2\r\n\r\n";
  each_mode(head, strlen(head), check_plain_get);
}

static void test_query_token_decoding(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(wr_ws_query_get("a=1&token=ab%2Ecd%3d&z", "token", out, sizeof(out)), 6);
  assert_string_equal(out, "ab.cd=");
  assert_int_equal(wr_ws_query_get("token=x+y", "token", out, sizeof(out)), 3);
  assert_string_equal(out, "x+y");
  assert_int_equal(wr_ws_query_get("tokenx=1&xtoken=2", "token", out, sizeof(out)), -ENOENT);
  assert_int_equal(wr_ws_query_get("", "token", out, sizeof(out)), -ENOENT);
  assert_int_equal(wr_ws_query_get("token=%zz", "token", out, sizeof(out)), -EINVAL);
  assert_int_equal(wr_ws_query_get("token=ab%4", "token", out, sizeof(out)), -EINVAL);
  assert_int_equal(wr_ws_query_get("token=ab%", "token", out, sizeof(out)), -EINVAL);
  assert_int_equal(wr_ws_query_get("token=a%00b", "token", out, sizeof(out)), -EINVAL);
  assert_int_equal(wr_ws_query_get("token=abcdef", "token", out, 4), -ENOSPC);
  assert_int_equal(wr_ws_query_get("token=", "token", out, sizeof(out)), 0);
}

static void test_cookie_parsing(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(wr_ws_cookie_get("a=1; warren_token=xyz; b=2", "warren_token", out, 64), 3);
  assert_string_equal(out, "xyz");
  assert_int_equal(wr_ws_cookie_get("warren_token=\"q.v\"", "warren_token", out, 64), 3);
  assert_string_equal(out, "q.v");
  assert_int_equal(wr_ws_cookie_get("xwarren_token=1;warren_token2=3", "warren_token", out, 64),
                   -ENOENT);
  assert_int_equal(wr_ws_cookie_get("a=1;warren_token=last", "warren_token", out, 64), 4);
  assert_string_equal(out, "last");
  assert_int_equal(wr_ws_cookie_get(NULL, "warren_token", out, 64), -ENOENT);
}

static void test_bearer_parsing(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(wr_ws_bearer_get("Bearer abc.def", out, 64), 7);
  assert_string_equal(out, "abc.def");
  assert_int_equal(wr_ws_bearer_get("bearer   tok  ", out, 64), 3);
  assert_string_equal(out, "tok");
  assert_int_equal(wr_ws_bearer_get("Basic dXNlcjpw", out, 64), -ENOENT);
  assert_int_equal(wr_ws_bearer_get("Bearerabc", out, 64), -ENOENT);
  assert_int_equal(wr_ws_bearer_get(NULL, out, 64), -ENOENT);
}

static void test_token_source_order(void **state) {
  (void)state;
  char out[64];
  wr_ws_request_t r;
  memset(&r, 0, sizeof(r));
  r.query = "token=fromquery";
  r.headers[WR_WS_H_AUTHORIZATION] = "Bearer frombearer";
  r.headers[WR_WS_H_COOKIE] = "warren_token=fromcookie";
  assert_true(wr_ws_auth_token(&r, "warren_token", out, 64) > 0);
  assert_string_equal(out, "fromquery");
  r.query = "token=";
  assert_true(wr_ws_auth_token(&r, "warren_token", out, 64) > 0);
  assert_string_equal(out, "frombearer");
  r.headers[WR_WS_H_AUTHORIZATION] = NULL;
  r.headers[WR_WS_H_PROTOCOL] = "warren.json, bearer.fromprotocol";
  assert_true(wr_ws_auth_token(&r, "warren_token", out, 64) > 0);
  assert_string_equal(out, "fromprotocol");
  r.headers[WR_WS_H_PROTOCOL] = "warren.json";
  assert_true(wr_ws_auth_token(&r, "warren_token", out, 64) > 0);
  assert_string_equal(out, "fromcookie");
  assert_int_equal(wr_ws_auth_token(&r, "other", out, 64), -ENOENT);
  assert_int_equal(wr_ws_auth_token(&r, NULL, out, 64), -ENOENT);
}

static void test_subprotocol_selection(void **state) {
  (void)state;
  wr_ws_format_t f;
  bool echo;
  assert_int_equal(wr_ws_hs_select_protocol(NULL, &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_JSON);
  assert_false(echo);
  assert_int_equal(wr_ws_hs_select_protocol("warren.json", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_JSON);
  assert_true(echo);
  assert_int_equal(wr_ws_hs_select_protocol("chat, warren.msgpack ,warren.json", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_MSGPACK);
  assert_true(echo);
  assert_int_equal(wr_ws_hs_select_protocol("warren.json,warren.msgpack", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_JSON);
  assert_int_equal(wr_ws_hs_select_protocol("chat, superchat", &f, &echo), -EPROTO);
  assert_int_equal(wr_ws_hs_select_protocol("warren.jsonx", &f, &echo), -EPROTO);
  /* The header present with none supported is refused at validation. */
  assert_int_equal(validate_status(UPGRADE_HEAD("Sec-WebSocket-Protocol: mqtt\r\n"), NULL), 400);
}

/* A token offered as the subprotocol "bearer.<token>" is never a protocol:
 * it is skipped when choosing one, so it can never be echoed back. */
static void test_subprotocol_bearer_entries(void **state) {
  (void)state;
  wr_ws_format_t f;
  bool echo;
  char out[64];
  assert_int_equal(wr_ws_hs_select_protocol("bearer.abc", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_JSON);
  assert_false(echo);
  assert_int_equal(wr_ws_hs_select_protocol(" bearer.abc ,, bearer.def ", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_JSON);
  assert_false(echo);
  assert_int_equal(wr_ws_hs_select_protocol("bearer.", &f, &echo), 0);
  assert_false(echo);
  assert_int_equal(wr_ws_hs_select_protocol("bearer.abc, warren.msgpack", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_MSGPACK);
  assert_true(echo);
  assert_int_equal(wr_ws_hs_select_protocol("warren.json,bearer.abc", &f, &echo), 0);
  assert_int_equal(f, WR_WS_FORMAT_JSON);
  assert_true(echo);
  /* Another protocol next to a token is still a protocol we do not speak,
   * and subprotocol names are case-sensitive. */
  assert_int_equal(wr_ws_hs_select_protocol("bearer.abc, chat", &f, &echo), -EPROTO);
  assert_int_equal(wr_ws_hs_select_protocol("Bearer.abc", &f, &echo), -EPROTO);

  assert_int_equal(wr_ws_protocol_token_get("warren.json, bearer.a.b-c_d ", out, 64), 7);
  assert_string_equal(out, "a.b-c_d");
  assert_int_equal(wr_ws_protocol_token_get("bearer.first,bearer.second", out, 64), 5);
  assert_string_equal(out, "first");
  assert_int_equal(wr_ws_protocol_token_get("bearer., bearer.x", out, 64), 1);
  assert_string_equal(out, "x");
  assert_int_equal(wr_ws_protocol_token_get("bearer.", out, 64), -ENOENT);
  assert_int_equal(wr_ws_protocol_token_get("warren.json", out, 64), -ENOENT);
  assert_int_equal(wr_ws_protocol_token_get("xbearer.abc, Bearer.abc", out, 64), -ENOENT);
  assert_int_equal(wr_ws_protocol_token_get(NULL, out, 64), -ENOENT);
  assert_int_equal(wr_ws_protocol_token_get("bearer.abcdef", out, 4), -ENOSPC);
}

/* A real JWT is 1-4 KiB: one of 4 KiB in Sec-WebSocket-Protocol, alone or
 * next to warren.msgpack, in one header or two, fed whole, one byte at a time
 * and split at every position. */
#define LONG_TOKEN_LEN 4096
static char long_token[LONG_TOKEN_LEN + 1];
static const char *long_head;
static wr_ws_format_t long_format;
static bool long_echo;

static void check_long_token(parsed_t *p, size_t len) {
  char out[WR_WS_HEAD_MAX];
  assert_int_equal(p->st, WR_WS_HS_DONE);
  assert_int_equal(p->head_len, len);
  const wr_ws_request_t *r = wr_ws_hs_request(p->hs);
  assert_non_null(r);
  wr_ws_upgrade_t up;
  assert_int_equal(wr_ws_hs_validate(r, &up), 101);
  assert_int_equal(up.format, long_format);
  assert_int_equal(up.echo_protocol, long_echo);
  assert_int_equal(wr_ws_auth_token(r, NULL, out, sizeof(out)), LONG_TOKEN_LEN);
  assert_memory_equal(out, long_token, LONG_TOKEN_LEN + 1);
  /* The answer names at most the format, never the token. */
  char head[512];
  assert_true(wr_ws_hs_101_write(head, sizeof(head), up.accept,
                                 up.echo_protocol ? wr_ws_format_name(up.format) : NULL) > 0);
  assert_null(strstr(head, "bearer"));
}

static void test_long_bearer_subprotocol(void **state) {
  (void)state;
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < LONG_TOKEN_LEN; i++)
    long_token[i] = (i == 36 || i == 3000) ? '.' : b64[(i * 7) % 64];
  long_token[LONG_TOKEN_LEN] = '\0';
  static const struct {
    const char *fmt;
    wr_ws_format_t format;
    bool echo;
  } cases[] = {
      {"Sec-WebSocket-Protocol: bearer.%s\r\n", WR_WS_FORMAT_JSON, false},
      {"Sec-WebSocket-Protocol: warren.msgpack, bearer.%s\r\n", WR_WS_FORMAT_MSGPACK, true},
      {"Sec-WebSocket-Protocol: bearer.%s\r\nSec-WebSocket-Protocol: warren.json\r\n",
       WR_WS_FORMAT_JSON, true},
  };
  char *head = malloc(WR_WS_HEAD_MAX);
  assert_non_null(head);
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    char extra[LONG_TOKEN_LEN + 128];
    snprintf(extra, sizeof(extra), cases[c].fmt, long_token);
    int n = snprintf(head, WR_WS_HEAD_MAX,
                     "GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     extra);
    assert_true(n > 0 && n < WR_WS_HEAD_MAX);
    long_head = head;
    long_format = cases[c].format;
    long_echo = cases[c].echo;
    each_mode(long_head, (size_t)n, check_long_token);
  }
  free(head);
}

static void test_origin_allow_list(void **state) {
  (void)state;
  char *allowed[] = {"https://app.example.com", "http://localhost:8000", NULL};
  assert_true(wr_ws_origin_allowed(NULL, allowed, 0));
  assert_true(wr_ws_origin_allowed("https://evil.com", allowed, 0));
  assert_true(wr_ws_origin_allowed("https://app.example.com", allowed, 2));
  assert_true(wr_ws_origin_allowed("HTTPS://App.Example.com", allowed, 2));
  assert_true(wr_ws_origin_allowed("http://localhost:8000", allowed, 2));
  assert_false(wr_ws_origin_allowed("http://localhost:8001", allowed, 2));
  assert_false(wr_ws_origin_allowed("https://app.example.com.evil.com", allowed, 2));
  assert_false(wr_ws_origin_allowed("null", allowed, 2));
  assert_false(wr_ws_origin_allowed(NULL, allowed, 2));
}

static void test_response_heads(void **state) {
  (void)state;
  char out[512];
  ssize_t n = wr_ws_http_head_write(out, sizeof(out), 426, "application/json",
                                    "Upgrade: websocket\r\n", 17);
  assert_true(n > 0);
  assert_int_equal((size_t)n, strlen(out));
  assert_non_null(strstr(out, "HTTP/1.1 426 Upgrade Required\r\n"));
  assert_non_null(strstr(out, "Content-Type: application/json\r\n"));
  assert_non_null(strstr(out, "Content-Length: 17\r\n"));
  assert_non_null(strstr(out, "Connection: close\r\n"));
  assert_non_null(strstr(out, "Cache-Control: no-store\r\n"));
  assert_non_null(strstr(out, "Upgrade: websocket\r\n"));
  assert_string_equal(out + n - 4, "\r\n\r\n");
  assert_int_equal(wr_ws_http_head_write(out, 20, 200, NULL, NULL, 0), -ENOSPC);
  n = wr_ws_hs_101_write(out, sizeof(out), SAMPLE_ACCEPT, "warren.msgpack");
  assert_true(n > 0);
  assert_non_null(strstr(out, "HTTP/1.1 101 Switching Protocols\r\n"));
  assert_non_null(strstr(out, "Sec-WebSocket-Accept: " SAMPLE_ACCEPT "\r\n"));
  assert_non_null(strstr(out, "Sec-WebSocket-Protocol: warren.msgpack\r\n"));
  n = wr_ws_hs_101_write(out, sizeof(out), SAMPLE_ACCEPT, NULL);
  assert_null(strstr(out, "Sec-WebSocket-Protocol"));
}

static void test_buf_refcount(void **state) {
  (void)state;
  wr_ws_buf_t *b = wr_ws_buf_new(5);
  assert_non_null(b);
  assert_int_equal(b->refs, 1);
  assert_int_equal(b->len, 5);
  assert_ptr_equal(wr_ws_buf_ref(b), b);
  assert_int_equal(b->refs, 2);
  wr_ws_buf_unref(b);
  assert_int_equal(b->refs, 1);
  wr_ws_buf_unref(b);
  wr_ws_buf_unref(NULL);
  assert_null(wr_ws_buf_new(SIZE_MAX));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_upgrade_with_trailing_bytes),
      cmocka_unit_test(test_accept_key_rfc_sample),
      cmocka_unit_test(test_bad_key),
      cmocka_unit_test(test_duplicate_key_is_bad_request),
      cmocka_unit_test(test_wrong_version),
      cmocka_unit_test(test_not_upgrade),
      cmocka_unit_test(test_connection_token_list_and_duplicates),
      cmocka_unit_test(test_post_is_405),
      cmocka_unit_test(test_http10_is_400),
      cmocka_unit_test(test_head_over_8k_is_431),
      cmocka_unit_test(test_head_just_under_8k_is_accepted),
      cmocka_unit_test(test_malformed_is_400),
      cmocka_unit_test(test_plain_get_and_empty_value),
      cmocka_unit_test(test_query_token_decoding),
      cmocka_unit_test(test_cookie_parsing),
      cmocka_unit_test(test_bearer_parsing),
      cmocka_unit_test(test_token_source_order),
      cmocka_unit_test(test_subprotocol_selection),
      cmocka_unit_test(test_subprotocol_bearer_entries),
      cmocka_unit_test(test_long_bearer_subprotocol),
      cmocka_unit_test(test_origin_allow_list),
      cmocka_unit_test(test_response_heads),
      cmocka_unit_test(test_buf_refcount),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
