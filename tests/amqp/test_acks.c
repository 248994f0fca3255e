/* Coalesced acks (amqp/acks.c) against a model of the broker's channel: a
 * basic.ack(multiple) settles every outstanding tag up to its own, so the
 * tracker must never send one that covers a delivery nobody decided to ack. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "amqp/amqp_int.h"

#define MAXT 20000

enum { UNDECIDED = 0, WANT_ACK, NACKED };

typedef struct {
  uint8_t decided[MAXT + 1];  /* what warren decided for each tag */
  bool outstanding[MAXT + 1]; /* broker side: delivered, not settled */
  size_t acked;               /* deliveries the broker saw acked */
  size_t sends, multiples;    /* frames sent */
  size_t counted;             /* sum of the count argument */
} broker_t;

static int send_cb(uint64_t tag, bool multiple, size_t count, void *data) {
  broker_t *b = data;
  size_t n = 0;
  assert_true(tag >= 1 && tag <= MAXT);
  b->sends++;
  if (multiple) {
    b->multiples++;
    for (uint64_t t = 1; t <= tag; t++) {
      if (!b->outstanding[t])
        continue;
      /* The whole point: never settle a delivery not decided as ack. */
      if (b->decided[t] != WANT_ACK)
        fail_msg("multiple ack up to %llu covers tag %llu (decided %d)", (unsigned long long)tag,
                 (unsigned long long)t, b->decided[t]);
      b->outstanding[t] = false;
      n++;
    }
  } else {
    assert_true(b->outstanding[tag]);
    assert_int_equal(b->decided[tag], WANT_ACK);
    b->outstanding[tag] = false;
    n = 1;
  }
  assert_int_equal(n, count);
  b->acked += n;
  b->counted += count;
  return 0;
}

static void deliver(broker_t *b, uint64_t from, uint64_t to) {
  for (uint64_t t = from; t <= to; t++)
    b->outstanding[t] = true;
}

static void decide(broker_t *b, wr_amqp_acks_t *t, uint64_t tag, bool ack) {
  b->decided[tag] = ack ? WANT_ACK : NACKED;
  if (!ack)
    b->outstanding[tag] = false; /* a nack goes out at once */
  assert_int_equal(wr_amqp_acks_mark(t, tag, ack), 0);
}

static void in_order_pass_is_one_frame(void **state) {
  (void)state;
  broker_t *b = calloc(1, sizeof(*b));
  wr_amqp_acks_t t = {0};
  wr_amqp_acks_reset(&t);
  deliver(b, 1, 256);
  for (uint64_t i = 1; i <= 256; i++)
    decide(b, &t, i, true);
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_int_equal(b->sends, 1);
  assert_int_equal(b->multiples, 1);
  assert_int_equal(b->acked, 256);
  /* Nothing new: nothing sent. */
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_int_equal(b->sends, 1);
  wr_amqp_acks_free(&t);
  free(b);
}

static void open_tag_blocks_only_the_prefix(void **state) {
  (void)state;
  broker_t *b = calloc(1, sizeof(*b));
  wr_amqp_acks_t t = {0};
  wr_amqp_acks_reset(&t);
  deliver(b, 1, 100);
  decide(b, &t, 1, true);
  decide(b, &t, 2, false); /* a nack inside the prefix is stepped over */
  decide(b, &t, 3, true);
  /* 4 stays undecided (a client that has not acked yet). */
  for (uint64_t i = 5; i <= 100; i++)
    decide(b, &t, i, true);
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  /* One multiple for 1..3, then 96 single acks: none held back. */
  assert_int_equal(b->multiples, 1);
  assert_int_equal(b->sends, 1 + 96);
  assert_int_equal(b->acked, 2 + 96);
  assert_true(b->outstanding[4]);
  decide(b, &t, 4, true);
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_false(b->outstanding[4]);
  assert_int_equal(b->acked, 99);
  /* The prefix moved past everything: the next pass is one frame again. */
  deliver(b, 101, 150);
  for (uint64_t i = 101; i <= 150; i++)
    decide(b, &t, i, true);
  size_t before = b->sends;
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_int_equal(b->sends, before + 1);
  assert_int_equal(b->acked, 149);
  wr_amqp_acks_free(&t);
  free(b);
}

static void reset_starts_a_new_channel(void **state) {
  (void)state;
  broker_t *b = calloc(1, sizeof(*b));
  wr_amqp_acks_t t = {0};
  wr_amqp_acks_reset(&t);
  deliver(b, 1, 10);
  for (uint64_t i = 1; i <= 10; i++)
    decide(b, &t, i, i != 5);
  /* The connection dies before the flush: the new channel counts from 1
   * and nothing of the old one may be sent on it. */
  wr_amqp_acks_reset(&t);
  memset(b, 0, sizeof(*b));
  deliver(b, 1, 3);
  decide(b, &t, 2, true);
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_int_equal(b->acked, 1);
  assert_int_equal(b->multiples, 0);
  assert_true(b->outstanding[1] && b->outstanding[3]);
  wr_amqp_acks_free(&t);
  free(b);
}

/* Random decisions, flushes and a long-stuck tag that makes the ring grow
 * and wrap; at the end every tag decided as ack was acked exactly once. */
static void random_against_the_model(void **state) {
  (void)state;
  for (unsigned seed = 1; seed <= 20; seed++) {
    broker_t *b = calloc(1, sizeof(*b));
    wr_amqp_acks_t t = {0};
    uint64_t delivered = 0, want = 0;
    uint64_t *open = malloc(MAXT * sizeof(*open));
    size_t n_open = 0;
    srand(seed);
    wr_amqp_acks_reset(&t);
    while (delivered < MAXT || n_open > 0) {
      int r = rand() % 100;
      if (r < 40 && delivered < MAXT) {
        /* The broker sends up to a prefetch window. */
        uint64_t n = 1 + (uint64_t)(rand() % 64);
        if (delivered + n > MAXT)
          n = MAXT - delivered;
        deliver(b, delivered + 1, delivered + n);
        for (uint64_t i = 1; i <= n; i++)
          open[n_open++] = delivered + i;
        delivered += n;
      } else if (r < 90 && n_open > 0) {
        /* Decide one, mostly the oldest, sometimes any; tag 7 waits long. */
        size_t k = rand() % 4 == 0 ? (size_t)rand() % n_open : 0;
        if (open[k] == 7 && delivered < MAXT - 100)
          continue;
        bool ack = rand() % 10 != 0;
        want += ack;
        decide(b, &t, open[k], ack);
        memmove(open + k, open + k + 1, (n_open - k - 1) * sizeof(*open));
        n_open--;
      } else {
        assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
      }
    }
    assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
    assert_int_equal(b->acked, want);
    for (uint64_t i = 1; i <= MAXT; i++)
      assert_false(b->outstanding[i]);
    assert_true(b->multiples > 0);
    assert_true(b->sends < want); /* coalescing happened */
    free(open);
    wr_amqp_acks_free(&t);
    free(b);
  }
}

/* The batch a basic.ack waits for: a quarter of the prefetch window, never
 * 0, never more than 64. */
static void batch_is_a_quarter_of_the_window(void **state) {
  (void)state;
  assert_int_equal(wr_amqp_batch(1), 1);
  assert_int_equal(wr_amqp_batch(7), 1);
  assert_int_equal(wr_amqp_batch(100), 25);
  assert_int_equal(wr_amqp_batch(1000), 64);
  assert_int_equal(wr_amqp_batch(65535), 64);
}

/* The loop wakes the AMQP thread at once for half the window (at least a
 * batch), and never for more than the ring holds when the window is full:
 * prefetch unacked, fewer than a batch of them held as acks by the thread. */
static void wake_batch_never_lets_a_full_window_wait(void **state) {
  (void)state;
  assert_int_equal(wr_amqp_wake_batch(1), 1);
  assert_int_equal(wr_amqp_wake_batch(3), 1);
  assert_int_equal(wr_amqp_wake_batch(4), 2);
  assert_int_equal(wr_amqp_wake_batch(1000), 500);
  for (uint32_t p = 1; p <= 65535; p++) {
    size_t w = wr_amqp_wake_batch(p);
    if (w < 1 || w < wr_amqp_batch(p) || w > p - wr_amqp_batch(p) + 1)
      fail_msg("prefetch %u: wake batch %zu, ack batch %zu", p, w, wr_amqp_batch(p));
  }
}

/* Marked acks wait until a batch of them is there or the first has waited
 * WR_AMQP_BATCH_LAG_MS; each flush starts a new batch with a new clock. */
static void acks_wait_for_a_batch_or_the_lag(void **state) {
  (void)state;
  broker_t *b = calloc(1, sizeof(*b));
  wr_amqp_acks_t t = {0};
  int64_t left = 0;
  wr_amqp_acks_reset(&t);
  deliver(b, 1, 20);

  assert_false(wr_amqp_acks_due(&t, 4, 100, &left));
  assert_true(left == INT64_MAX); /* nothing waits: no deadline */

  for (uint64_t i = 1; i <= 3; i++)
    decide(b, &t, i, true);
  assert_false(wr_amqp_acks_due(&t, 4, 100, &left));
  assert_int_equal(left, WR_AMQP_BATCH_LAG_MS);
  assert_false(wr_amqp_acks_due(&t, 4, 100 + WR_AMQP_BATCH_LAG_MS - 1, &left));
  assert_int_equal(left, 1);
  assert_true(wr_amqp_acks_due(&t, 4, 100 + WR_AMQP_BATCH_LAG_MS, &left));
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_int_equal(b->acked, 3);
  assert_false(wr_amqp_acks_due(&t, 4, 500, NULL));

  /* A full batch goes at once, whatever the clock. */
  for (uint64_t i = 4; i <= 7; i++)
    decide(b, &t, i, true);
  assert_true(wr_amqp_acks_due(&t, 4, 500, NULL));
  assert_int_equal(wr_amqp_acks_flush(&t, send_cb, b), 0);
  assert_int_equal(b->acked, 7);

  /* The next batch's clock starts when it is first seen, not at 100. */
  decide(b, &t, 8, true);
  assert_false(wr_amqp_acks_due(&t, 4, 900, &left));
  assert_int_equal(left, WR_AMQP_BATCH_LAG_MS);
  wr_amqp_acks_free(&t);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(in_order_pass_is_one_frame),
      cmocka_unit_test(open_tag_blocks_only_the_prefix),
      cmocka_unit_test(reset_starts_a_new_channel),
      cmocka_unit_test(random_against_the_model),
      cmocka_unit_test(batch_is_a_quarter_of_the_window),
      cmocka_unit_test(wake_batch_never_lets_a_full_window_wait),
      cmocka_unit_test(acks_wait_for_a_batch_or_the_lag),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
