/* The `warren token` and `warren publish` subcommands. */
#include "bridge/bridge_int.h"

#include <errno.h>
#include <getopt.h>
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
