/* warren: RabbitMQ → WebSocket notification daemon. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bridge/bridge.h"
#include "config/log.h"

extern char **environ;

static void usage(FILE *out) {
  fprintf(out, "usage: warren [--config FILE] [--check-config] [--version] [--help]\n"
               "       warren [--config FILE] token --user USER [--ttl SECONDS]\n"
               "       warren [--config FILE] publish (--user U | --users A,B | --broadcast)\n"
               "              [--title T] [--content C] [--data JSON] [--msgpack] ...\n"
               "       warren [--config FILE] replay parked [--user U] [--limit N]\n"
               "              [--ignore-expiry] [--dry-run]\n"
               "       warren [--config FILE] replay dead [--limit N] [--dry-run]\n"
               "       warren [--config FILE] status [--json]\n"
               "\n"
               "Delivers notifications from a RabbitMQ queue to browsers over WebSocket.\n"
               "Configuration: the INI file, then WARREN_<SECTION>_<KEY> environment variables\n"
               "(e.g. WARREN_AMQP_URL, WARREN_AUTH_JWT_SECRET). See config/warren.ini.\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"check-config", no_argument, NULL, 'k'},
                                       {"version", no_argument, NULL, 'v'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *path = NULL;
  bool check = false;
  wr_config_t cfg;
  char err[1024];
  int c, rc;

  /* "+" stops at the first non-option so subcommands keep their options. */
  while ((c = getopt_long(argc, argv, "+c:kvh", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      path = optarg;
      break;
    case 'k':
      check = true;
      break;
    case 'v':
      printf("warren %s\n", WARREN_VERSION);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  /* `warren token --config F …` works as well as `warren --config F token …`:
   * take --config out of a subcommand's arguments before it parses them. */
  for (int i = optind + 1; i < argc; i++) {
    int skip = 0;
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      path = argv[i + 1];
      skip = 2;
    } else if (strncmp(argv[i], "--config=", 9) == 0) {
      path = argv[i] + 9;
      skip = 1;
    }
    if (skip > 0) {
      memmove(&argv[i], &argv[i + skip], (size_t)(argc - i - skip + 1) * sizeof(*argv));
      argc -= skip;
      i--;
    }
  }
  if (wr_config_load(&cfg, path, environ, err, sizeof(err)) != 0) {
    fprintf(stderr, "warren: configuration error: %s\n", err);
    wr_config_close(&cfg);
    return 2;
  }
  wr_log_setup(cfg.log_level, cfg.log_format);
  if (check) {
    printf("configuration ok\n");
    wr_config_close(&cfg);
    return 0;
  }
  if (optind < argc) {
    const char *cmd = argv[optind];
    if (strcmp(cmd, "token") == 0)
      rc = wr_cli_token(&cfg, argc - optind, argv + optind);
    else if (strcmp(cmd, "publish") == 0)
      rc = wr_cli_publish(&cfg, argc - optind, argv + optind);
    else if (strcmp(cmd, "replay") == 0)
      rc = wr_cli_replay(&cfg, argc - optind, argv + optind);
    else if (strcmp(cmd, "status") == 0)
      rc = wr_cli_status(&cfg, argc - optind, argv + optind);
    else {
      fprintf(stderr,
              "warren: unknown command \"%s\" (expected token, publish, replay or status)\n", cmd);
      rc = 2;
    }
    wr_config_close(&cfg);
    return rc;
  }
  rc = wr_bridge_run(&cfg, path);
  wr_config_close(&cfg);
  return rc;
}
