/* A bounded single-producer/single-consumer lock-free ring of pointers
 * (C11 atomics). One thread pushes, one other thread pops; neither blocks.
 * The producer publishes an item with release semantics, so everything it
 * wrote to the pointed-to object before the push is visible to the consumer
 * after its acquire pop. */
#ifndef WARREN_BRIDGE_RING_INT_H
#define WARREN_BRIDGE_RING_INT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct wr_ring_s {
  /* Producer and consumer indices live on their own cache lines so the two
   * threads do not false-share. Each side keeps a cached copy of the other
   * side's index and re-reads it only when the cache says full/empty. */
  alignas(64) atomic_size_t head; /* next slot to write, producer-owned */
  size_t cached_tail;             /* producer's last view of tail */
  alignas(64) atomic_size_t tail; /* next slot to read, consumer-owned */
  size_t cached_head;             /* consumer's last view of head */
  alignas(64) size_t mask;        /* capacity - 1 (capacity is a power of two) */
  void **slots;
} wr_ring_t;

/* Initialises a ring that holds at least min_capacity items (rounded up to a
 * power of two, at least 2). Returns 0 or -ENOMEM / -EINVAL. */
int wr_ring_init(wr_ring_t *r, size_t min_capacity);

/* Frees the slots (not the items). */
void wr_ring_close(wr_ring_t *r);

size_t wr_ring_capacity(const wr_ring_t *r);

/* Producer only. Returns 0, or -ENOSPC when full (item not taken). item must
 * not be NULL. */
int wr_ring_push(wr_ring_t *r, void *item);

/* Consumer only. Returns the oldest item or NULL when empty. */
void *wr_ring_pop(wr_ring_t *r);

/* Either thread: an approximate count (exact when both are quiescent). */
size_t wr_ring_size(const wr_ring_t *r);

/* Items pushed (producer only) and popped (either thread) since init, as
 * free-running counters. */
size_t wr_ring_pushed(const wr_ring_t *r);
size_t wr_ring_popped(const wr_ring_t *r);
/* Producer: whether every item pushed before mark = wr_ring_pushed() has
 * been popped since (wrap-safe). */
bool wr_ring_popped_all(const wr_ring_t *r, size_t mark);

#endif
