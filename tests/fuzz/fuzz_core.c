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

/* Two flags of our own, before the command line's (which win): scripts of
 * up to 2 KiB (a thousand events reach every state; longer ones only slow
 * each run), and the plain scheduler: this runner yields so many coverage
 * features per input that libFuzzer's entropic bookkeeping took three
 * quarters of the time (70 runs/s against 440 without it). */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  static char *args[256];
  int n = 0;
  wr_log_setup(WR_LOG_ERROR, WR_LOG_TEXT);
  if (*argc < 1 || *argc > 250)
    return 0;
  args[n++] = (*argv)[0];
  args[n++] = "-entropic=0";
  args[n++] = "-max_len=2048";
  for (int i = 1; i < *argc; i++)
    args[n++] = (*argv)[i];
  args[n] = NULL;
  *argc = n;
  *argv = args;
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
