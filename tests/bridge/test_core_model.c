/* Model-based test of the delivery core: random event scripts from fixed
 * seeds drive the core and the reference model side by side
 * (core_script.c); after every event their frames and verdicts must agree
 * and the invariants hold.
 *
 * WARREN_CORE_MODEL_SCRIPTS (default 1500) scripts of WARREN_CORE_MODEL_BYTES
 * (default 3000) bytes each, seeds 1..N; scripts/core-model runs more. A
 * failing script is written to WARREN_TEST_ARTIFACTS (or the current folder)
 * as core-seed-<seed>.bin: `build-fuzz/tests/fuzz_core FILE` replays it, and
 * WARREN_CORE_MODEL_TRACE=1 with WARREN_CORE_MODEL_SEED=<seed> prints its
 * events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "config/log.h"
#include "core_script.h"

static uint64_t env_u64(const char *name, uint64_t def) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? strtoull(v, NULL, 10) : def;
}

/* xorshift64*: a random byte string per seed. */
static void fill(uint8_t *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    buf[i] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
  }
}

static void save(const uint8_t *buf, size_t len, uint64_t seed) {
  const char *dir = getenv("WARREN_TEST_ARTIFACTS");
  char path[512];
  snprintf(path, sizeof(path), "%s/core-seed-%llu.bin", dir != NULL ? dir : ".",
           (unsigned long long)seed);
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return;
  fwrite(buf, 1, len, f);
  fclose(f);
  print_message("the failing script is in %s\n", path);
}

static void test_random_scripts(void **state) {
  (void)state;
  uint64_t n = env_u64("WARREN_CORE_MODEL_SCRIPTS", 1500);
  size_t len = (size_t)env_u64("WARREN_CORE_MODEL_BYTES", 3000);
  uint64_t only = env_u64("WARREN_CORE_MODEL_SEED", 0);
  bool trace = env_u64("WARREN_CORE_MODEL_TRACE", 0) != 0;
  uint8_t *buf = malloc(len);
  cs_result_t res = {0};
  struct timespec t0, t1;

  assert_non_null(buf);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (uint64_t seed = only ? only : 1; seed <= (only ? only : n); seed++) {
    fill(buf, len, seed);
    if (cs_run(buf, len, trace, &res) != 0) {
      save(buf, len, seed);
      fail_msg("seed %llu: %s", (unsigned long long)seed, res.err);
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  print_message("core model: %llu scripts, %llu events, %llu deliveries, %llu frames, "
                "%llu targets delivered, %llu offline copies, %llu acks, %llu requeues, "
                "%llu dead in %.1f s\n",
                (unsigned long long)(only ? 1 : n), (unsigned long long)res.events,
                (unsigned long long)res.deliveries, (unsigned long long)res.frames,
                (unsigned long long)res.delivered, (unsigned long long)res.copies,
                (unsigned long long)res.acks, (unsigned long long)res.requeues,
                (unsigned long long)res.dead, s);
  /* The scripts must reach every kind of outcome, or the test proves less
   * than it says. */
  assert_true(res.delivered > 0 && res.copies > 0 && res.acks > 0 && res.requeues > 0 &&
              res.dead > 0);
  free(buf);
}

int main(void) {
  wr_log_setup(WR_LOG_ERROR, WR_LOG_TEXT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_scripts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
