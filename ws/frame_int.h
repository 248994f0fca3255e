/* A pure scanner of the client → server WebSocket frame stream that runs
 * ahead of wslay and decides from frame headers alone what wslay would only
 * notice late or answer badly: a data message whose announced length passes
 * the limit (wslay waits for the payload before it counts it, so a header
 * announcing 2^63 bytes would hold the connection open), and the header
 * errors wslay's frame layer fails without a status code (a control frame
 * that is fragmented or longer than 125 bytes, a close frame with a 1-byte
 * payload, a 64-bit length with its top bit set, a length not in its
 * shortest form). No I/O, no allocation, no logs. */
#ifndef WARREN_WS_FRAME_INT_H
#define WARREN_WS_FRAME_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <wslay/wslay.h>

typedef struct wr_ws_fscan_s {
  uint8_t hdr[14];  /* header bytes of the frame being read */
  uint8_t hlen;     /* how many of them we have */
  uint64_t skip;    /* payload bytes of the current frame still to pass */
  uint64_t msg_len; /* bytes of the data message in progress (all fragments so far) */
  uint16_t code;    /* the close code decided, 0 = none yet; sticky */
  bool frag;        /* a fragmented data message is in progress */
} wr_ws_fscan_t;

/* Starts a scanner at a frame boundary. */
void wr_ws_fscan_init(wr_ws_fscan_t *s);

/* True when the stream scanned so far ends exactly between two messages: no
 * header or payload half-read and no fragmented message open. A parser
 * holding no other state may then be dropped and made anew. */
bool wr_ws_fscan_idle(const wr_ws_fscan_t *s);

/* Scans len bytes (borrowed) of the client stream against a message limit of
 * max bytes. Returns how many of these bytes may go to the WebSocket parser:
 * len while every header seen is acceptable; otherwise the offset where the
 * offending frame's header starts in data (0 when it started in an earlier
 * call), and s->code is then 1002 (protocol error) or 1009 (message too big).
 * Once code is set, every later call returns 0. */
size_t wr_ws_fscan_feed(wr_ws_fscan_t *s, const uint8_t *data, size_t len, uint64_t max);

/* Creates the wslay server context of a connection: cbs and user as given,
 * the largest message max_msg bytes (wslay's own default is 2 GiB). Every
 * connection and the frame fuzzer use this one configuration. Returns 0 or
 * -ENOMEM; the context is freed with wslay_event_context_free. */
int wr_ws_wslay_server_new(wslay_event_context_ptr *out, const struct wslay_event_callbacks *cbs,
                           void *user, uint64_t max_msg);

#endif
