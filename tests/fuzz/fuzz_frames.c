/* libFuzzer target for the client → server WebSocket frame stream: the
 * frame header scanner (ws/frame.c) ahead of a wslay server context made by
 * wr_ws_wslay_server_new, fed the way ws/conn.c feeds them, without sockets.
 * Byte 0 picks the read size (0 = all at once), byte 1 the message limit;
 * the rest is the stream. Every message that reaches the application must
 * fit the limit and, for text, be valid UTF-8. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/frame_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  const uint8_t *in;
  size_t in_len;
  uint64_t max;
  size_t out_bytes;
} sim_t;

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user) {
  (void)flags;
  sim_t *s = user;
  if (s->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = s->in_len < len ? s->in_len : len;
  memcpy(buf, s->in, n);
  s->in += n;
  s->in_len -= n;
  return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *d, size_t len, int flags,
                       void *user) {
  (void)ctx;
  (void)d;
  (void)flags;
  sim_t *s = user;
  s->out_bytes += len;
  return (ssize_t)len;
}

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing past U+10FFFF. */
static int utf8_ok(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    size_t k;
    uint32_t cp, min;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      k = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      k = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      k = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (i + k >= n)
      return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((p[i + j] & 0xc0) != 0x80)
        return 0;
      cp = cp << 6 | (p[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += k + 1;
  }
  return 1;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user) {
  sim_t *s = user;
  if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME) {
    if ((arg->opcode == WSLAY_PING || arg->opcode == WSLAY_PONG) && arg->msg_length > 125)
      abort();
    return;
  }
  if (arg->msg_length > s->max)
    abort();
  if (arg->opcode == WSLAY_TEXT_FRAME && !utf8_ok(arg->msg, arg->msg_length))
    abort();
  /* What conn.c does before dispatching: flush a pending pong. */
  if (wslay_event_get_queued_msg_count(ctx) > 0 && !wslay_event_get_close_sent(ctx))
    (void)wslay_event_send(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint64_t limits[4] = {64, 125, 4096, 65536};
  static const struct wslay_event_callbacks cbs = {
      .recv_callback = recv_cb, .send_callback = send_cb, .on_msg_recv_callback = msg_cb};
  if (size < 2)
    return 0;
  size_t step = data[0] == 0 ? size : data[0];
  sim_t s = {.max = limits[data[1] & 3]};
  data += 2;
  size -= 2;
  wslay_event_context_ptr ctx;
  if (wr_ws_wslay_server_new(&ctx, &cbs, &s, s.max) != 0)
    return 0;
  wr_ws_fscan_t scan;
  wr_ws_fscan_init(&scan);
  for (size_t off = 0; off < size;) {
    size_t n = size - off < step ? size - off : step;
    size_t ok = wr_ws_fscan_feed(&scan, data + off, n, s.max);
    if (ok > n || (ok < n && scan.code == 0))
      abort();
    if (scan.code != 0 && scan.code != 1002 && scan.code != 1009)
      abort();
    if (ok > 0) {
      s.in = data + off;
      s.in_len = ok;
      if (wslay_event_recv(ctx) != 0)
        break;
    }
    if (wslay_event_send(ctx) != 0 || scan.code != 0)
      break;
    off += n;
  }
  wslay_event_context_free(ctx);
  return 0;
}
