/* libFuzzer target for ws/handshake.c: the request head is fed whole, then
 * again in the chunking the first byte picks; both runs must reach the same
 * outcome. A complete head is then validated and answered, and its token
 * looked up in every source (a "bearer." subprotocol is never echoed). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/auth_int.h"
#include "ws/handshake_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  wr_ws_hs_state_t st;
  int status;
  size_t head_len; /* bytes of the input that belong to the head */
} outcome_t;

static outcome_t run(wr_ws_hs_t *hs, const uint8_t *data, size_t size, size_t step) {
  outcome_t o = {WR_WS_HS_MORE, 0, 0};
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < step ? size - off : step;
    size_t used = 0;
    int status = 0;
    o.st = wr_ws_hs_feed(hs, data + off, n, &used, &status);
    if (used > n)
      abort();
    if (o.st == WR_WS_HS_ERROR) {
      if (status != 400 && status != 431)
        abort();
      o.status = status;
      return o;
    }
    if (o.st == WR_WS_HS_DONE) {
      o.head_len = off + used;
      return o;
    }
    if (used != n) /* MORE consumes everything it was given */
      abort();
    off += n;
  }
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 3 * WR_WS_HEAD_MAX)
    return 0;
  size_t step = 1 + data[0] % 97;
  data++;
  size--;
  wr_ws_hs_t *a = wr_ws_hs_new(), *b = wr_ws_hs_new();
  if (a == NULL || b == NULL)
    abort();
  outcome_t whole = run(a, data, size, size ? size : 1);
  outcome_t parts = run(b, data, size, step);
  if (whole.st != parts.st || whole.status != parts.status || whole.head_len != parts.head_len)
    abort();
  if (whole.st == WR_WS_HS_DONE) {
    const wr_ws_request_t *ra = wr_ws_hs_request(a), *rb = wr_ws_hs_request(b);
    if (ra == NULL || rb == NULL || ra->path == NULL || ra->query == NULL || ra->method == NULL)
      abort();
    if (strcmp(ra->path, rb->path) != 0 || strcmp(ra->query, rb->query) != 0)
      abort();
    for (int i = 0; i < WR_WS_NHEADERS; i++) {
      if ((ra->headers[i] == NULL) != (rb->headers[i] == NULL))
        abort();
      if (ra->headers[i] != NULL && strcmp(ra->headers[i], rb->headers[i]) != 0)
        abort();
    }
    if (whole.head_len > size)
      abort();
    static char token[WR_WS_HEAD_MAX];
    ssize_t tn = wr_ws_auth_token(ra, "sid", token, sizeof(token));
    if (tn != -ENOENT && (tn <= 0 || (size_t)tn >= sizeof(token) || strlen(token) != (size_t)tn))
      abort();
    wr_ws_upgrade_t up;
    int st = wr_ws_hs_validate(ra, &up);
    if (st != up.status || (st == 101) != (up.error == NULL))
      abort();
    if (st == 101) {
      char head[512];
      if (strlen(up.accept) != 28 ||
          wr_ws_hs_101_write(head, sizeof(head), up.accept,
                             up.echo_protocol ? wr_ws_format_name(up.format) : NULL) <= 0 ||
          strstr(head, "bearer") != NULL)
        abort();
    } else {
      char head[512];
      if (wr_ws_http_head_write(head, sizeof(head), st, "application/json", up.extra_header, 10) <=
          0)
        abort();
    }
  }
  wr_ws_hs_free(a);
  wr_ws_hs_free(b);
  return 0;
}
