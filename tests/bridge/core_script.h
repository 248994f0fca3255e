/* Event scripts for the delivery core: one byte string drives the real core
 * (bridge/core.c, through a fake connection layer) and a reference model of
 * the delivery semantics side by side, and after every event compares what
 * each did. Any byte string is a valid script, so the same runner serves the
 * model-based unit test (random scripts from fixed seeds) and the libFuzzer
 * target (tests/fuzz/fuzz_core.c). */
#ifndef WARREN_TESTS_CORE_SCRIPT_H
#define WARREN_TESTS_CORE_SCRIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cs_result_s {
  uint64_t events;     /* events run (the model's "steps") */
  uint64_t deliveries; /* deliveries handed to the core */
  uint64_t frames;     /* frames queued on connections */
  uint64_t delivered;  /* targets settled delivered */
  uint64_t copies;     /* offline copies in verdicts (ladder or park) */
  uint64_t acks;       /* ack verdicts */
  uint64_t requeues;   /* requeue verdicts (stale generation, shutdown) */
  uint64_t dead;       /* dead-letter verdicts */
  char err[2048];      /* what disagreed, when cs_run returns -1 */
} cs_result_t;

/* Runs script. Returns 0 when the core and the model agreed after every
 * event and every invariant held (a frame only to connections of the users a
 * delivery names, exactly one verdict per delivery and only once its targets
 * are settled, none but a requeue for a lost generation, copies naming the
 * offline targets), else -1 with res->err describing the first difference.
 * res accumulates across calls. trace prints every event to stderr. */
int cs_run(const uint8_t *script, size_t len, bool trace, cs_result_t *res);

#endif
