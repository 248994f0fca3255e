/* Coalesced acks of originals on channel 1 (see amqp_int.h). Pure
 * bookkeeping: the caller sends what wr_amqp_acks_flush() hands it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "amqp/amqp_int.h"

enum { OPEN = 0, ACKED = 1, DONE = 2 };

static uint8_t *slot(wr_amqp_acks_t *t, uint64_t tag) {
  return &t->st[(tag - t->base + t->head) & (t->cap - 1)];
}

void wr_amqp_acks_reset(wr_amqp_acks_t *t) {
  if (t->st != NULL)
    memset(t->st, OPEN, t->cap);
  t->base = 1;
  t->head = 0;
  t->n_recent = 0;
  t->since_ms = -1;
}

void wr_amqp_acks_free(wr_amqp_acks_t *t) {
  free(t->st);
  free(t->recent);
  memset(t, 0, sizeof(*t));
}

/* Makes the ring hold tags base .. tag. */
static int grow(wr_amqp_acks_t *t, uint64_t tag) {
  size_t cap = t->cap ? t->cap : 1024;
  while (tag - t->base >= cap) {
    if (cap > SIZE_MAX / 2)
      return -ENOMEM;
    cap *= 2;
  }
  if (cap == t->cap)
    return 0;
  uint8_t *st = calloc(cap, 1);
  if (st == NULL)
    return -ENOMEM;
  /* Unroll the old ring so that base sits at index 0. */
  for (size_t i = 0; i < t->cap; i++)
    st[i] = t->st[(t->head + i) & (t->cap - 1)];
  free(t->st);
  t->st = st;
  t->cap = cap;
  t->head = 0;
  return 0;
}

int wr_amqp_acks_mark(wr_amqp_acks_t *t, uint64_t tag, bool acked) {
  if (tag < t->base)
    return 0; /* already covered; the broker never repeats a tag on a channel */
  if (grow(t, tag) < 0)
    return -ENOMEM;
  if (acked) {
    if (t->n_recent == t->cap_recent) {
      size_t n = t->cap_recent ? t->cap_recent * 2 : 256;
      uint64_t *r = realloc(t->recent, n * sizeof(*r));
      if (r == NULL)
        return -ENOMEM;
      t->recent = r;
      t->cap_recent = n;
    }
    t->recent[t->n_recent++] = tag;
  }
  *slot(t, tag) = acked ? ACKED : DONE;
  return 0;
}

size_t wr_amqp_batch(uint32_t prefetch) {
  size_t n = prefetch / 4;
  return n < 1 ? 1 : n > 64 ? 64 : n;
}

size_t wr_amqp_wake_batch(uint32_t prefetch) {
  size_t half = prefetch / 2, batch = wr_amqp_batch(prefetch);
  return half > batch ? half : batch;
}

bool wr_amqp_acks_due(wr_amqp_acks_t *t, size_t batch, int64_t now, int64_t *left_ms) {
  int64_t left = INT64_MAX;
  bool due = false;
  if (t->n_recent > 0) {
    if (t->since_ms < 0)
      t->since_ms = now;
    left = t->since_ms + WR_AMQP_BATCH_LAG_MS - now;
    due = t->n_recent >= batch || left <= 0;
  }
  if (left_ms != NULL)
    *left_ms = left;
  return due;
}

int wr_amqp_acks_flush(wr_amqp_acks_t *t, wr_amqp_acks_send_cb send, void *data) {
  uint64_t last = 0;
  size_t covered = 0;
  int rc;

  if (t->n_recent == 0)
    return 0;
  /* The settled prefix: everything from base up to the first tag still open.
   * Its acks go out as one basic.ack(multiple) for the last of them. */
  while (t->cap > 0) {
    uint8_t *s = slot(t, t->base);
    if (*s == OPEN)
      break;
    if (*s == ACKED) {
      last = t->base;
      covered++;
    }
    *s = OPEN;
    t->base++;
    t->head = (t->head + 1) & (t->cap - 1);
  }
  if (last != 0 && (rc = send(last, true, covered, data)) < 0)
    return rc;
  /* Acks behind a tag still open are sent one by one rather than held back:
   * holding them would count against the prefetch window. */
  for (size_t i = 0; i < t->n_recent; i++) {
    uint64_t tag = t->recent[i];
    if (tag < t->base || *slot(t, tag) != ACKED)
      continue;
    *slot(t, tag) = DONE;
    if ((rc = send(tag, false, 1, data)) < 0)
      return rc;
  }
  t->n_recent = 0;
  t->since_ms = -1;
  return 0;
}
