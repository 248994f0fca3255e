/* Frame header scanner run ahead of wslay (see frame_int.h). */
#include "ws/frame_int.h"

#include <errno.h>
#include <string.h>

#define CLOSE_PROTOCOL 1002
#define CLOSE_TOO_BIG 1009

void wr_ws_fscan_init(wr_ws_fscan_t *s) {
  memset(s, 0, sizeof(*s));
}

/* Bytes a header needs, known from its first two bytes. */
static uint8_t header_size(const uint8_t *h) {
  uint8_t n = 2 + ((h[1] & 0x80) ? 4 : 0);
  uint8_t l7 = h[1] & 0x7f;
  return n + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
}

/* Judges a complete header: 0 when acceptable (s->skip set), else a code. */
static uint16_t judge(wr_ws_fscan_t *s, uint64_t max) {
  const uint8_t *h = s->hdr;
  bool fin = (h[0] & 0x80) != 0;
  uint8_t opcode = h[0] & 0x0f;
  uint8_t l7 = h[1] & 0x7f;
  uint64_t len = l7;
  if (l7 == 126) {
    len = (uint64_t)h[2] << 8 | h[3];
    if (len < 126)
      return CLOSE_PROTOCOL; /* RFC 6455 §5.2: the minimal length encoding */
  } else if (l7 == 127) {
    len = 0;
    for (int i = 0; i < 8; i++)
      len = len << 8 | h[2 + i];
    if (len >> 63)
      return CLOSE_PROTOCOL;
    if (len <= 0xffff)
      return CLOSE_PROTOCOL;
  }
  if (opcode >= 8) {
    /* Control frames: never fragmented, at most 125 bytes, and a close
     * payload is empty or starts with a 2-byte code. */
    if (!fin || len > 125 || (opcode == 8 && len == 1))
      return CLOSE_PROTOCOL;
  } else if (opcode == 1 || opcode == 2) {
    s->frag = !fin;
    s->msg_len = len;
    if (len > max)
      return CLOSE_TOO_BIG;
  } else if (opcode == 0) {
    /* A continuation without a message is wslay's to reject; the sum is
     * checked either way so a long run of them cannot pass the limit. */
    if (len > max - s->msg_len) /* msg_len <= max always holds here */
      return CLOSE_TOO_BIG;
    s->msg_len += len;
    if (fin)
      s->frag = false;
  }
  s->skip = len;
  return 0;
}

size_t wr_ws_fscan_feed(wr_ws_fscan_t *s, const uint8_t *data, size_t len, uint64_t max) {
  size_t off = 0;
  size_t start = 0; /* where the current header starts in data; 0 if earlier */
  if (s->code != 0)
    return 0;
  while (off < len) {
    if (s->skip > 0) {
      uint64_t n = len - off < s->skip ? len - off : s->skip;
      s->skip -= n;
      off += (size_t)n;
      continue;
    }
    if (s->hlen == 0)
      start = off;
    s->hdr[s->hlen++] = data[off++];
    if (s->hlen < 2 || s->hlen < header_size(s->hdr))
      continue;
    uint16_t code = judge(s, max);
    s->hlen = 0;
    if (code != 0) {
      s->code = code;
      return start;
    }
  }
  return len;
}

bool wr_ws_fscan_idle(const wr_ws_fscan_t *s) {
  return s->code == 0 && s->hlen == 0 && s->skip == 0 && !s->frag;
}

int wr_ws_wslay_server_new(wslay_event_context_ptr *out, const struct wslay_event_callbacks *cbs,
                           void *user, uint64_t max_msg) {
  if (wslay_event_context_server_init(out, cbs, user) != 0)
    return -ENOMEM;
  wslay_event_config_set_max_recv_msg_length(*out, max_msg);
  return 0;
}
