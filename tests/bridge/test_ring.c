/* Ring tests: single-thread semantics and a two-thread stress test (run it
 * under TSan with -DWARREN_TSAN=ON). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "bridge/ring_int.h"

static void test_capacity_rounds_up(void **state) {
  wr_ring_t r;
  (void)state;
  assert_int_equal(wr_ring_init(&r, 1000), 0);
  assert_int_equal(wr_ring_capacity(&r), 1024);
  wr_ring_close(&r);
  assert_int_equal(wr_ring_init(&r, 0), 0);
  assert_int_equal(wr_ring_capacity(&r), 2);
  wr_ring_close(&r);
}

static void test_fifo_full_empty(void **state) {
  wr_ring_t r;
  uintptr_t i;
  (void)state;
  assert_int_equal(wr_ring_init(&r, 4), 0);
  assert_null(wr_ring_pop(&r));
  for (i = 1; i <= 4; i++)
    assert_int_equal(wr_ring_push(&r, (void *)i), 0);
  assert_int_equal(wr_ring_push(&r, (void *)5), -ENOSPC);
  assert_int_equal(wr_ring_size(&r), 4);
  for (i = 1; i <= 4; i++)
    assert_ptr_equal(wr_ring_pop(&r), (void *)i);
  assert_null(wr_ring_pop(&r));
  /* Wrap around many times. */
  for (i = 1; i <= 1000; i++) {
    assert_int_equal(wr_ring_push(&r, (void *)i), 0);
    assert_ptr_equal(wr_ring_pop(&r), (void *)i);
  }
  assert_int_equal(wr_ring_size(&r), 0);
  wr_ring_close(&r);
}

/* The counters the loop uses to tell whether the AMQP thread took every
 * verdict that was waiting when its timer was armed: a refused push counts
 * nothing, and they keep counting across wrap-around. */
static void test_pushed_popped_counters(void **state) {
  wr_ring_t r;
  uintptr_t i;
  (void)state;
  assert_int_equal(wr_ring_init(&r, 4), 0);
  assert_int_equal(wr_ring_pushed(&r), 0);
  assert_int_equal(wr_ring_popped(&r), 0);
  for (i = 1; i <= 5; i++)
    (void)wr_ring_push(&r, (void *)i);
  assert_int_equal(wr_ring_pushed(&r), 4); /* the fifth was refused */
  size_t mark = wr_ring_pushed(&r);
  assert_non_null(wr_ring_pop(&r));
  assert_int_equal(wr_ring_popped(&r), 1);
  assert_false(wr_ring_popped_all(&r, mark)); /* three still wait */
  while (wr_ring_pop(&r) != NULL)
    ;
  assert_true(wr_ring_popped_all(&r, mark)); /* all taken */
  for (i = 1; i <= 1000; i++) {
    assert_int_equal(wr_ring_push(&r, (void *)i), 0);
    assert_ptr_equal(wr_ring_pop(&r), (void *)i);
  }
  assert_int_equal(wr_ring_pushed(&r), 1004);
  assert_int_equal(wr_ring_popped(&r), 1004);
  wr_ring_close(&r);
}

#define STRESS_ITEMS 2000000u

typedef struct item_s {
  uint64_t seq;
  uint64_t check; /* written by the producer before the push */
} item_t;

static void *producer_main(void *arg) {
  wr_ring_t *r = arg;
  for (uint64_t i = 0; i < STRESS_ITEMS; i++) {
    item_t *it = malloc(sizeof(*it));
    it->seq = i;
    it->check = i * 2654435761u;
    while (wr_ring_push(r, it) != 0)
      sched_yield();
  }
  return NULL;
}

static void test_two_thread_stress(void **state) {
  wr_ring_t r;
  pthread_t th;
  uint64_t expect = 0;
  (void)state;
  assert_int_equal(wr_ring_init(&r, 64), 0);
  assert_int_equal(pthread_create(&th, NULL, producer_main, &r), 0);
  while (expect < STRESS_ITEMS) {
    item_t *it = wr_ring_pop(&r);
    if (it == NULL) {
      sched_yield();
      continue;
    }
    /* Order is kept and the item's contents are fully visible. */
    assert_int_equal(it->seq, expect);
    assert_int_equal(it->check, expect * 2654435761u);
    free(it);
    expect++;
  }
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_null(wr_ring_pop(&r));
  wr_ring_close(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_capacity_rounds_up),
      cmocka_unit_test(test_fifo_full_empty),
      cmocka_unit_test(test_pushed_popped_counters),
      cmocka_unit_test(test_two_thread_stress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
