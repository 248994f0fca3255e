/* libFuzzer target for the delivery core (bridge/core.c): the input is an
 * event script (tests/bridge/core_script.h) run against the core and the
 * reference model side by side. A disagreement, a broken invariant, or a
 * memory error under ASan aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/log.h"
#include "core_script.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  wr_log_setup(WR_LOG_ERROR, WR_LOG_TEXT);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cs_result_t res = {0};
  if (size > 8192)
    return 0;
  if (cs_run(data, size, getenv("WARREN_CORE_MODEL_TRACE") != NULL, &res) != 0) {
    fprintf(stderr, "core and model disagree: %s\n", res.err);
    abort();
  }
  return 0;
}
