/* Refcounted immutable payloads shared by every connection a notification is
 * sent to. Only the loop thread touches them, so the count is a plain integer. */
#include <assert.h>
#include <stdlib.h>

#include "ws/ws.h"

wr_ws_buf_t *wr_ws_buf_new(size_t len) {
  /* Refuse sizes whose header addition would wrap around. */
  if (len > SIZE_MAX - sizeof(wr_ws_buf_t))
    return NULL;
  wr_ws_buf_t *b = malloc(sizeof(*b) + len);
  if (b == NULL)
    return NULL;
  b->refs = 1;
  b->len = len;
  return b;
}

wr_ws_buf_t *wr_ws_buf_adopt(void *mem, size_t len) {
  wr_ws_buf_t *b = mem;
  b->refs = 1;
  b->len = len;
  return b;
}

wr_ws_buf_t *wr_ws_buf_ref(wr_ws_buf_t *b) {
  assert(b != NULL && b->refs > 0 && b->refs < UINT32_MAX);
  b->refs++;
  return b;
}

void wr_ws_buf_unref(wr_ws_buf_t *b) {
  if (b == NULL)
    return;
  assert(b->refs > 0);
  if (--b->refs == 0)
    free(b);
}
