/* The `warren token`, `warren publish` and `warren replay` subcommands. */
#include "bridge/bridge_int.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ws/jwt_int.h"

int wr_cli_token(const wr_config_t *cfg, int argc, char **argv) {
  static const struct option opts[] = {{"user", required_argument, NULL, 'u'},
                                       {"ttl", required_argument, NULL, 't'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *user = NULL;
  long long ttl = 3600;
  wr_jwt_rules_t rules;
  char *tok, *end;
  int c;

  optind = 1;
  while ((c = getopt_long(argc, argv, "u:t:h", opts, NULL)) != -1) {
    switch (c) {
    case 'u':
      user = optarg;
      break;
    case 't':
      errno = 0;
      ttl = strtoll(optarg, &end, 10);
      if (errno != 0 || *end != '\0' || ttl <= 0 || ttl > 10LL * 365 * 86400) {
        fprintf(stderr, "warren token: --ttl must be a number of seconds (1..315360000)\n");
        return 2;
      }
      break;
    case 'h':
      printf("usage: warren [--config FILE] token --user USER [--ttl SECONDS]\n"
             "Prints an HS256 token for USER signed with auth.jwt_secret (default ttl 3600 s).\n");
      return 0;
    default:
      return 2;
    }
  }
  if (user == NULL || user[0] == '\0' || strlen(user) > 256) {
    fprintf(stderr, "warren token: --user USER is required (1..256 bytes)\n");
    return 2;
  }
  if (cfg->jwt_secret == NULL) {
    fprintf(stderr, "warren token: auth.jwt_secret is not set (tokens for RS256/ES256 keys are "
                    "minted by your identity provider)\n");
    return 2;
  }
  rules = (wr_jwt_rules_t){.issuer = cfg->issuer,
                           .audience = cfg->audience,
                           .leeway_s = cfg->leeway_s,
                           .user_claim = cfg->user_claim};
  tok = wr_jwt_sign_hs256((const uint8_t *)cfg->jwt_secret, strlen(cfg->jwt_secret), &rules, user,
                          (int64_t)time(NULL), ttl);
  if (tok == NULL) {
    fprintf(stderr, "warren token: out of memory\n");
    return 1;
  }
  printf("%s\n", tok);
  free(tok);
  return 0;
}

static int add_users(json_t *env, const char *list) {
  json_t *arr = json_array();
  char *copy = strdup(list), *save = NULL, *tok;
  if (arr == NULL || copy == NULL) {
    json_decref(arr);
    free(copy);
    return -ENOMEM;
  }
  for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
    if (*tok != '\0')
      json_array_append_new(arr, json_string(tok));
  free(copy);
  if (json_array_size(arr) == 0) {
    json_decref(arr);
    return -EINVAL;
  }
  json_object_set_new(env, "user_ids", arr);
  return 0;
}

int wr_cli_publish(const wr_config_t *cfg, int argc, char **argv) {
  static const struct option opts[] = {{"user", required_argument, NULL, 'u'},
                                       {"users", required_argument, NULL, 'U'},
                                       {"broadcast", no_argument, NULL, 'b'},
                                       {"title", required_argument, NULL, 't'},
                                       {"content", required_argument, NULL, 'c'},
                                       {"data", required_argument, NULL, 'd'},
                                       {"type", required_argument, NULL, 'y'},
                                       {"id", required_argument, NULL, 'i'},
                                       {"ttl-ms", required_argument, NULL, 'l'},
                                       {"msgpack", no_argument, NULL, 'm'},
                                       {"routing-key", required_argument, NULL, 'r'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *user = NULL, *users = NULL, *title = NULL, *content = NULL, *data = NULL;
  const char *type = NULL, *id = NULL, *ttl = NULL, *rk = "warren.cli";
  bool bcast = false, msgpack = false;
  json_t *env;
  uint8_t *body = NULL;
  size_t len = 0;
  char err[512];
  int c, rc, targets;

  optind = 1;
  while ((c = getopt_long(argc, argv, "u:U:bt:c:d:y:i:l:mr:h", opts, NULL)) != -1) {
    switch (c) {
    case 'u':
      user = optarg;
      break;
    case 'U':
      users = optarg;
      break;
    case 'b':
      bcast = true;
      break;
    case 't':
      title = optarg;
      break;
    case 'c':
      content = optarg;
      break;
    case 'd':
      data = optarg;
      break;
    case 'y':
      type = optarg;
      break;
    case 'i':
      id = optarg;
      break;
    case 'l':
      ttl = optarg;
      break;
    case 'm':
      msgpack = true;
      break;
    case 'r':
      rk = optarg;
      break;
    case 'h':
      printf("usage: warren [--config FILE] publish (--user U | --users A,B | --broadcast)\n"
             "       [--title T] [--content C] [--data JSON] [--type T] [--id ID]\n"
             "       [--ttl-ms N] [--msgpack] [--routing-key K]\n"
             "Publishes one envelope to amqp.exchange and waits for the broker's confirm.\n"
             "Exit status 0 only when the broker confirmed it.\n");
      return 0;
    default:
      return 2;
    }
  }
  targets = (user != NULL) + (users != NULL) + bcast;
  if (targets != 1) {
    fprintf(stderr, "warren publish: give exactly one of --user, --users, --broadcast\n");
    return 2;
  }
  env = json_object();
  if (env == NULL)
    return 1;
  if (id == NULL) {
    /* Give every notification a stable id, so a redelivery after a crash
     * carries the same id and clients can deduplicate it. */
    uint8_t r[12];
    static char gen[32];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
      fprintf(stderr, "warren publish: cannot generate an id\n");
      json_decref(env);
      return 1;
    }
    for (size_t i = 0; i < sizeof(r); i++)
      snprintf(gen + 2 * i, 3, "%02x", r[i]);
    id = gen;
  }
  if (id)
    json_object_set_new(env, "id", json_string(id));
  if (user)
    json_object_set_new(env, "user_id", json_string(user));
  if (users && add_users(env, users) != 0) {
    fprintf(stderr, "warren publish: --users needs a comma-separated list of user ids\n");
    json_decref(env);
    return 2;
  }
  if (bcast)
    json_object_set_new(env, "broadcast", json_true());
  if (type)
    json_object_set_new(env, "type", json_string(type));
  if (title)
    json_object_set_new(env, "title", json_string(title));
  if (content)
    json_object_set_new(env, "content", json_string(content));
  if (data) {
    json_error_t jerr;
    json_t *d = json_loads(data, JSON_DECODE_ANY, &jerr);
    if (d == NULL) {
      fprintf(stderr, "warren publish: --data is not valid JSON: %s\n", jerr.text);
      json_decref(env);
      return 2;
    }
    json_object_set_new(env, "data", d);
  }
  if (ttl) {
    char *end;
    long long v = strtoll(ttl, &end, 10);
    if (*end != '\0' || v < 0) {
      fprintf(stderr, "warren publish: --ttl-ms must be a non-negative integer\n");
      json_decref(env);
      return 2;
    }
    json_object_set_new(env, "ttl_ms", json_integer(v));
  }
  json_object_set_new(env, "created_at", json_integer((json_int_t)wr_now_realtime_ms()));
  if (msgpack) {
    rc = wr_msgpack_from_json(env, &body, &len);
  } else {
    char *s = json_dumps(env, JSON_COMPACT);
    rc = s ? 0 : -ENOMEM;
    body = (uint8_t *)s;
    len = s ? strlen(s) : 0;
  }
  json_decref(env);
  if (rc != 0) {
    fprintf(stderr, "warren publish: cannot encode the envelope\n");
    return 1;
  }
  rc =
      wr_amqp_publish_once(cfg, rk, body, len, msgpack ? "application/msgpack" : "application/json",
                           id, 10000, err, sizeof(err));
  free(body);
  if (rc != 0) {
    fprintf(stderr, "warren publish: not confirmed: %s\n", err);
    return 1;
  }
  printf("published %s to exchange %s (confirmed)\n", id, cfg->exchange);
  return 0;
}

/* `warren replay parked|dead` (README, "Replaying parked notifications"):
 * the options, a line per message worth a line, and the counts. The broker
 * side is wr_amqp_replay (amqp/replay.c). */

typedef struct {
  bool dry_run;
} replay_print_t;

/* A user id or message id as one safe, bounded token on a line. */
static void print_token(const char *s) {
  if (s == NULL) {
    fputc('-', stdout);
    return;
  }
  size_t n = strlen(s);
  for (size_t i = 0; i < n && i < 80; i++) {
    unsigned char ch = (unsigned char)s[i];
    fputc(ch < 0x21 || ch == 0x7f ? '?' : ch, stdout);
  }
  if (n > 80)
    fputs("...", stdout);
}

static void print_age(int64_t ms) {
  long long s = ms / 1000;
  if (ms < 0)
    fputs("?", stdout);
  else if (s < 60)
    printf("%llds", s);
  else if (s < 3600)
    printf("%lldm%02llds", s / 60, s % 60);
  else if (s < 86400)
    printf("%lldh%02lldm", s / 3600, s % 3600 / 60);
  else
    printf("%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

static void replay_item_cb(const wr_amqp_replay_item_t *it, void *data) {
  static const char *const action[WR_REPLAY_OUTCOMES] = {[WR_REPLAY_MAILBOX] = "replay to mailbox",
                                                         [WR_REPLAY_LADDER] = "replay to ladder",
                                                         [WR_REPLAY_EXCHANGE] =
                                                             "replay to exchange",
                                                         [WR_REPLAY_SKIPPED] = "skip (other user)",
                                                         [WR_REPLAY_LEFT] = "leave in place"};
  const replay_print_t *pr = data;

  /* A real run names only what stays against the operator's wish; the
   * counts say the rest. A dry run lists every message. */
  if (!pr->dry_run && it->outcome != WR_REPLAY_LEFT)
    return;
  printf("%s%-18s id=", pr->dry_run ? "would " : "",
         pr->dry_run ? action[it->outcome] : "left in place");
  print_token(it->id);
  fputs(" user=", stdout);
  print_token(it->user);
  fputs(" reason=", stdout);
  print_token(it->reason);
  fputs(" age=", stdout);
  print_age(it->age_ms);
  if (it->expires_again)
    fputs(" (deadline passed: will be parked as expired again)", stdout);
  if (it->why != NULL)
    printf(": %s", it->why);
  fputc('\n', stdout);
}

static bool replay_stop_cb(void *data) {
  sigset_t pending;
  (void)data;
  /* SIGINT and SIGTERM are blocked for the run and read here, between
   * messages: the message in hand is always settled first. */
  return sigpending(&pending) == 0 &&
         (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1);
}

static void replay_summary(const wr_config_t *cfg, const wr_amqp_replay_opts_t *o,
                           const wr_amqp_replay_counts_t *n) {
  const char *verb = o->dry_run ? "would be replayed" : "replayed";
  const char *src = o->from == WR_REPLAY_PARKED ? "parked" : "dead";
  unsigned long long u = 0;

  printf("%s.%s: %llu ready at start, %llu examined\n", cfg->queue, src,
         (unsigned long long)n->depth, (unsigned long long)n->examined);
  if (o->from == WR_REPLAY_PARKED) {
    if (cfg->mailbox_enabled || n->n[WR_REPLAY_MAILBOX] > 0)
      printf("%s to mailboxes: %llu\n", verb, (unsigned long long)n->n[WR_REPLAY_MAILBOX]);
    if (!cfg->mailbox_enabled || n->n[WR_REPLAY_LADDER] > 0)
      printf("%s to the retry ladder: %llu\n", verb, (unsigned long long)n->n[WR_REPLAY_LADDER]);
  }
  printf("%s to the exchange: %llu\n", verb, (unsigned long long)n->n[WR_REPLAY_EXCHANGE]);
  if (o->from == WR_REPLAY_PARKED)
    printf("skipped (other users): %llu\n", (unsigned long long)n->n[WR_REPLAY_SKIPPED]);
  printf("left in place: %llu\n", (unsigned long long)n->n[WR_REPLAY_LEFT]);
  if (o->from == WR_REPLAY_PARKED) {
    u = n->expires_again;
    printf("expired again: %llu\n", u);
    if (u > 0)
      printf("warning: %llu %s replayed with a deadline already passed: warren parks %s as "
             "expired again%s\n",
             u,
             o->dry_run ? "would be"
             : u == 1   ? "was"
                        : "were",
             u == 1 ? "it" : "them",
             o->ignore_expiry ? " (a notification parked whole carries its deadline in its body)"
                              : "; --ignore-expiry gives a copy for a user a fresh mailbox.ttl_ms "
                                "(one parked whole keeps its deadline in its body)");
  }
  if (n->limit_reached)
    printf("stopped at --limit %llu\n", (unsigned long long)o->limit);
  if (n->interrupted)
    printf("interrupted: the message in hand was settled; the rest stay in %s.%s\n", cfg->queue,
           src);
  if (o->dry_run)
    printf("dry run: nothing was moved\n");
}

static void replay_usage(FILE *out) {
  fprintf(out,
          "usage: warren [--config FILE] replay parked [--user U] [--limit N] [--ignore-expiry]\n"
          "                                           [--dry-run]\n"
          "       warren [--config FILE] replay dead [--limit N] [--dry-run]\n"
          "Moves parked notifications back to their users' mailboxes (or, parked whole, to\n"
          "amqp.exchange), or dead ones back to amqp.exchange, one at a time: each copy is\n"
          "confirmed by the broker before the message leaves its queue. Others stay in order.\n"
          "Ctrl-C stops after the message in hand. Exit 0 when done, 1 on a broker error,\n"
          "2 on a usage error, 130/143 when stopped by SIGINT/SIGTERM.\n");
}

int wr_cli_replay(const wr_config_t *cfg, int argc, char **argv) {
  static const struct option opts[] = {
      {"user", required_argument, NULL, 'u'}, {"limit", required_argument, NULL, 'n'},
      {"dry-run", no_argument, NULL, 'd'},    {"ignore-expiry", no_argument, NULL, 'e'},
      {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0}};
  wr_amqp_replay_opts_t o = {.from = WR_REPLAY_PARKED};
  wr_amqp_replay_counts_t n;
  replay_print_t pr = {0};
  sigset_t block, old;
  char err[1024], *end;
  int c, rc;

  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    replay_usage(stdout);
    return 0;
  }
  if (argc < 2 || (strcmp(argv[1], "parked") != 0 && strcmp(argv[1], "dead") != 0)) {
    fprintf(stderr, "warren replay: say what to replay: parked or dead\n");
    replay_usage(stderr);
    return 2;
  }
  o.from = strcmp(argv[1], "parked") == 0 ? WR_REPLAY_PARKED : WR_REPLAY_DEAD;
  optind = 1;
  while ((c = getopt_long(argc - 1, argv + 1, "u:n:deh", opts, NULL)) != -1) {
    switch (c) {
    case 'u':
      o.user = optarg;
      break;
    case 'n':
      errno = 0;
      o.limit = strtoull(optarg, &end, 10);
      if (errno != 0 || *end != '\0' || optarg[0] == '-' || o.limit == 0) {
        fprintf(stderr, "warren replay: --limit must be a positive number of messages\n");
        return 2;
      }
      break;
    case 'd':
      o.dry_run = true;
      break;
    case 'e':
      o.ignore_expiry = true;
      break;
    case 'h':
      replay_usage(stdout);
      return 0;
    default:
      replay_usage(stderr);
      return 2;
    }
  }
  if (optind < argc - 1) {
    fprintf(stderr, "warren replay: unexpected argument \"%s\"\n", argv[optind + 1]);
    return 2;
  }
  if (o.user != NULL && (o.user[0] == '\0' || strlen(o.user) > 256)) {
    fprintf(stderr, "warren replay: --user needs a user id (1..256 bytes)\n");
    return 2;
  }
  if (o.from == WR_REPLAY_DEAD && (o.user != NULL || o.ignore_expiry)) {
    fprintf(stderr, "warren replay dead: --user and --ignore-expiry apply to parked notifications "
                    "only (a dead message is an original: its body names its users and holds "
                    "its deadline)\n");
    return 2;
  }
  pr.dry_run = o.dry_run;
  o.stop_cb = replay_stop_cb;
  o.item_cb = replay_item_cb;
  o.data = &pr;

  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &old);
  rc = wr_amqp_replay(cfg, &o, &n, err, sizeof(err));
  /* A run that failed midway says what it did before. */
  if (rc == 0 || n.examined > 0)
    replay_summary(cfg, &o, &n);
  fflush(stdout);
  if (rc < 0) {
    fprintf(stderr, "warren replay: %s (whatever was not replayed stays in %s.%s)\n", err,
            cfg->queue, o.from == WR_REPLAY_PARKED ? "parked" : "dead");
    return 1;
  }
  if (n.interrupted) {
    sigset_t pending;
    /* Exit as a shell reports a process stopped by that signal; the signal
     * itself stays blocked and pending until the process ends. */
    return sigpending(&pending) == 0 && sigismember(&pending, SIGINT) == 1 ? 130 : 143;
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  return 0;
}
