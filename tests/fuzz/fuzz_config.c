/* libFuzzer target for config/config.c: the input is an INI file, loaded
 * through wr_config_load from a memfd (config only loads from a path). A
 * configuration that loads must validate and dump. Inputs that name device
 * or proc files are skipped: a key file path such as /dev/zero would make the
 * PEM reader read forever, which is the operator's choice, not a bug. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int names_special_file(const uint8_t *data, size_t size) {
  static const char *const bad[] = {"/dev", "/proc", "/sys", "/run"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (memmem(data, size, bad[i], strlen(bad[i])) != NULL)
      return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int fd = -1;
  static char path[64];
  if (size > 65536 || names_special_file(data, size))
    return 0;
  if (fd < 0) {
    fd = memfd_create("warren-fuzz.ini", 0);
    if (fd < 0)
      abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
    abort();
  wr_config_t cfg;
  char err[512];
  err[0] = 'x';
  int rc = wr_config_load(&cfg, path, NULL, err, sizeof(err));
  if (rc > 0)
    abort();
  if (rc == 0) {
    if (wr_config_validate(&cfg, err, sizeof(err)) != 0)
      abort();
    /* Cookie authentication never loads without an Origin allow-list. */
    if (cfg.cookie_name != NULL && cfg.n_allowed_origins == 0)
      abort();
    FILE *out = fopen("/dev/null", "w");
    if (out != NULL) {
      wr_config_dump(&cfg, out);
      fclose(out);
    }
  } else if (strnlen(err, sizeof(err)) == 0 || strnlen(err, sizeof(err)) == sizeof(err)) {
    abort(); /* every failure says why, NUL-terminated */
  }
  wr_config_close(&cfg);
  return 0;
}
