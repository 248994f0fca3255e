#include "bridge/ring_int.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

int wr_ring_init(wr_ring_t *r, size_t min_capacity) {
  size_t cap = 2;

  if (min_capacity > ((size_t)1 << 30))
    return -EINVAL;
  while (cap < min_capacity)
    cap <<= 1;
  r->slots = calloc(cap, sizeof(*r->slots));
  if (r->slots == NULL)
    return -ENOMEM;
  r->mask = cap - 1;
  atomic_init(&r->head, 0);
  atomic_init(&r->tail, 0);
  r->cached_head = 0;
  r->cached_tail = 0;
  return 0;
}

void wr_ring_close(wr_ring_t *r) {
  free(r->slots);
  r->slots = NULL;
}

size_t wr_ring_capacity(const wr_ring_t *r) {
  return r->mask + 1;
}

int wr_ring_push(wr_ring_t *r, void *item) {
  size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);

  if (head - r->cached_tail > r->mask) {
    r->cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (head - r->cached_tail > r->mask)
      return -ENOSPC;
  }
  r->slots[head & r->mask] = item;
  atomic_store_explicit(&r->head, head + 1, memory_order_release);
  return 0;
}

void *wr_ring_pop(wr_ring_t *r) {
  size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  void *item;

  if (tail == r->cached_head) {
    r->cached_head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (tail == r->cached_head)
      return NULL;
  }
  item = r->slots[tail & r->mask];
  /* Release so the producer's acquire of tail orders our read of the slot
   * before its next write to it. */
  atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
  return item;
}

size_t wr_ring_size(const wr_ring_t *r) {
  size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
  size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
  return head - tail;
}

size_t wr_ring_pushed(const wr_ring_t *r) {
  return atomic_load_explicit(&r->head, memory_order_relaxed);
}

size_t wr_ring_popped(const wr_ring_t *r) {
  return atomic_load_explicit(&r->tail, memory_order_acquire);
}

bool wr_ring_popped_all(const wr_ring_t *r, size_t mark) {
  return wr_ring_popped(r) - mark <= SIZE_MAX / 2;
}
