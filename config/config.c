/* Configuration: one table of keys drives the defaults, the INI file, the
 * WARREN_<SECTION>_<KEY> environment overrides, the error messages and the dump,
 * so a key cannot be documented in one place and forgotten in another. */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

enum kind {
  K_LISTEN,  /* host:port, required */
  K_ADMIN,   /* host:port, or "off"/"" */
  K_PATH,    /* URL path of the WebSocket endpoint */
  K_ORIGINS, /* comma-separated list of origins */
  K_U32,
  K_U64,
  K_BOOL,
  K_SECRET,  /* HS256 secret, never echoed */
  K_KEYFILE, /* PEM public key, parsed now into jwt_pkey */
  K_FILE,    /* path of a file that must be readable now, "" = unset */
  K_OPTSTR,  /* free text, "" = unset */
  K_CLAIM,   /* JWT claim name */
  K_COOKIE,  /* cookie name token */
  K_URL,     /* amqp:// or amqps:// URL, password never echoed */
  K_NAME,    /* AMQP exchange or queue name */
  K_ENUM,
  K_DELAYS, /* comma-separated list of ms */
};

struct keydef {
  const char *section;
  const char *name;
  enum kind kind;
  size_t off;
  uint64_t min, max;          /* integers; for K_ENUM, min is the enum id */
  const char *def;            /* applied by wr_config_init; NULL = unset */
  const char *const *choices; /* K_ENUM: accepted names, in enum order */
};

enum enum_id { E_QUEUE_TYPE, E_ACK_MODE, E_LOG_LEVEL, E_LOG_FORMAT, E_NODE_QUEUE_TYPE };

static const char *const queue_types[] = {"classic", "quorum", NULL};
static const char *const ack_modes[] = {"client", "write", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

#define OFF(f) offsetof(wr_config_t, f)
#define DAY_MS 86400000u

static const struct keydef keys[] = {
    {"server", "listen", K_LISTEN, OFF(server_listen), 0, 0, "127.0.0.1:8080", NULL},
    {"server", "path", K_PATH, OFF(server_path), 0, 0, "/ws", NULL},
    {"server", "allowed_origins", K_ORIGINS, OFF(allowed_origins), 0, 0, "", NULL},
    {"server", "max_connections", K_U32, OFF(max_connections), 1, 10000000, "100000", NULL},
    {"server", "ping_interval_ms", K_U32, OFF(ping_interval_ms), 1, DAY_MS, "25000", NULL},
    {"server", "idle_timeout_ms", K_U32, OFF(idle_timeout_ms), 1, DAY_MS, "60000", NULL},
    {"server", "handshake_timeout_ms", K_U32, OFF(handshake_timeout_ms), 1, DAY_MS, "5000", NULL},
    {"server", "max_client_message_bytes", K_U32, OFF(max_client_message_bytes), 64, 16777216,
     "4096", NULL},
    {"server", "max_client_messages_per_s", K_U32, OFF(max_client_messages_per_s), 0, 1000000,
     "100", NULL},
    {"server", "max_queued_bytes", K_U64, OFF(max_queued_bytes), 4096, UINT64_MAX, "1048576", NULL},
    {"server", "demo", K_BOOL, OFF(demo), 0, 0, "false", NULL},
    {"auth", "jwt_secret", K_SECRET, OFF(jwt_secret), 16, 0, NULL, NULL},
    {"auth", "jwt_public_key_file", K_KEYFILE, OFF(jwt_public_key_file), 0, 0, NULL, NULL},
    {"auth", "issuer", K_OPTSTR, OFF(issuer), 0, 0, NULL, NULL},
    {"auth", "audience", K_OPTSTR, OFF(audience), 0, 0, NULL, NULL},
    {"auth", "leeway_s", K_U32, OFF(leeway_s), 0, 3600, "30", NULL},
    {"auth", "require_exp", K_BOOL, OFF(require_exp), 0, 0, "true", NULL},
    {"auth", "user_claim", K_CLAIM, OFF(user_claim), 0, 0, "sub", NULL},
    {"auth", "cookie_name", K_COOKIE, OFF(cookie_name), 0, 0, NULL, NULL},
    {"amqp", "url", K_URL, OFF(amqp_url), 0, 0, "amqp://guest:guest@127.0.0.1:5672/", NULL},
    {"amqp", "exchange", K_NAME, OFF(exchange), 0, 0, "warren.notify", NULL},
    {"amqp", "queue", K_NAME, OFF(queue), 0, 0, "warren.notify", NULL},
    {"amqp", "queue_type", K_ENUM, OFF(queue_type), E_QUEUE_TYPE, 0, "classic", queue_types},
    {"amqp", "prefetch", K_U32, OFF(prefetch), 1, 65535, "1000", NULL},
    {"amqp", "heartbeat_s", K_U32, OFF(heartbeat_s), 0, 3600, "10", NULL},
    {"amqp", "retry_delays_ms", K_DELAYS, OFF(retry_delays_ms), 1, DAY_MS,
     "1000,5000,30000,120000,600000", NULL},
    {"amqp", "max_attempts", K_U32, OFF(max_attempts), 1, 10000, "50", NULL},
    {"amqp", "max_body_bytes", K_U32, OFF(max_body_bytes), 16, 16777216, "65536", NULL},
    {"amqp", "tls_ca_file", K_FILE, OFF(tls_ca_file), 0, 0, NULL, NULL},
    {"amqp", "tls_cert_file", K_FILE, OFF(tls_cert_file), 0, 0, NULL, NULL},
    {"amqp", "tls_key_file", K_FILE, OFF(tls_key_file), 0, 0, NULL, NULL},
    {"amqp", "tls_verify", K_BOOL, OFF(tls_verify), 0, 0, "true", NULL},
    {"ack", "mode", K_ENUM, OFF(ack_mode), E_ACK_MODE, 0, "client", ack_modes},
    {"ack", "timeout_ms", K_U32, OFF(ack_timeout_ms), 100, DAY_MS, "10000", NULL},
    {"mailbox", "enabled", K_BOOL, OFF(mailbox_enabled), 0, 0, "true", NULL},
    {"mailbox", "ttl_ms", K_U32, OFF(mailbox_ttl_ms), 1000, 4294967295u, "604800000", NULL},
    {"mailbox", "max_messages", K_U32, OFF(mailbox_max_messages), 1, 100000000, "1000", NULL},
    {"mailbox", "prefetch", K_U32, OFF(mailbox_prefetch), 1, 65535, "100", NULL},
    {"mailbox", "max_redeliveries", K_U32, OFF(mailbox_max_redeliveries), 1, 1000, "5", NULL},
    {"mailbox", "idle_ms", K_U32, OFF(mailbox_idle_ms), 1000, 4294967295u, "3600000", NULL},
    {"mailbox", "janitor_ms", K_U32, OFF(mailbox_janitor_ms), 0, DAY_MS, "60000", NULL},
    {"mailbox", "unbind_grace_ms", K_U32, OFF(mailbox_unbind_grace_ms), 100, DAY_MS, "5000", NULL},
    {"cluster", "node_id", K_OPTSTR, OFF(cluster_node_id), 0, 0, NULL, NULL},
    {"cluster", "queue_type", K_ENUM, OFF(node_queue_type), E_NODE_QUEUE_TYPE, 0, "quorum",
     queue_types},
    {"cluster", "node_ttl_ms", K_U32, OFF(cluster_node_ttl_ms), 1000, 4294967295u, "300000", NULL},
    {"cluster", "unbind_grace_ms", K_U32, OFF(cluster_unbind_grace_ms), 0, DAY_MS, "5000", NULL},
    {"admin", "listen", K_ADMIN, OFF(admin_listen), 0, 0, "127.0.0.1:9090", NULL},
    {"admin", "queue_poll_ms", K_U32, OFF(queue_poll_ms), 100, DAY_MS, "5000", NULL},
    {"log", "level", K_ENUM, OFF(log_level), E_LOG_LEVEL, 0, "info", log_levels},
    {"log", "format", K_ENUM, OFF(log_format), E_LOG_FORMAT, 0, "text", log_formats},
    {"shutdown", "drain_timeout_ms", K_U32, OFF(drain_timeout_ms), 0, DAY_MS, "10000", NULL},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))
#define MAX_NAME_LEN 200

static const char *const sections[] = {"server", "auth", "amqp",     "ack",     "mailbox",
                                       "cluster", "admin", "log", "shutdown", NULL};

#define FIELD(cfg, def, type) ((type *)(void *)((char *)(cfg) + (def)->off))
#define CFIELD(cfg, def, type) ((const type *)(const void *)((const char *)(cfg) + (def)->off))

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Values are echoed in messages so the operator sees what was read, but an
 * environment variable can be arbitrarily long or hold control characters that
 * would garble a log line: cap and sanitise the copy. */
static void quote(char *dst, size_t n, const char *v) {
  size_t i = 0, max = 80;
  for (; *v && i + 4 < n && max > 0; v++, max--)
    dst[i++] = ((unsigned char)*v < 0x20 || *v == 0x7f || *v == '"') ? '?' : *v;
  if (*v && i + 4 <= n) {
    memcpy(dst + i, "...", 3);
    i += 3;
  }
  dst[i] = '\0';
}

/* Copies url with the password of its userinfo replaced by "***". */
static void mask_url(char *dst, size_t n, const char *url) {
  const char *auth = strstr(url, "://");
  const char *at = NULL, *colon = NULL, *p;
  size_t alen;
  if (auth) {
    auth += 3;
    alen = strcspn(auth, "/?#");
    for (p = auth; p < auth + alen; p++)
      if (*p == '@')
        at = p;
    if (at)
      colon = memchr(auth, ':', (size_t)(at - auth));
  }
  if (!colon) {
    snprintf(dst, n, "%s", url);
    return;
  }
  snprintf(dst, n, "%.*s***%s", (int)(colon + 1 - url), url, at);
}

static void invalid(char *err, size_t errlen, const struct keydef *k, const char *value,
                    const char *expected) {
  char q[96];
  quote(q, sizeof(q), value);
  errf(err, errlen, "%s.%s: invalid value \"%s\" (expected %s)", k->section, k->name, q, expected);
}

/* Decimal digits only: no sign, no spaces, no hex, no trailing junk. */
static int parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (!*s)
    return -EINVAL;
  for (; *s; s++) {
    unsigned d;
    if (*s < '0' || *s > '9')
      return -EINVAL;
    d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -ERANGE;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static void range_text(char *dst, size_t n, uint64_t min, uint64_t max) {
  if (max == UINT64_MAX)
    snprintf(dst, n, "an integer >= %llu", (unsigned long long)min);
  else
    snprintf(dst, n, "an integer %llu..%llu", (unsigned long long)min, (unsigned long long)max);
}

int wr_config_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port) {
  const char *h, *colon;
  size_t hl;
  uint64_t p;
  char tmp[INET6_ADDRSTRLEN + 1];
  unsigned char bin[16];
  int v6 = 0;

  if (!s || !host || !port)
    return -EINVAL;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':')
      return -EINVAL;
    h = s + 1;
    hl = (size_t)(close - h);
    colon = close + 1;
    v6 = 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon)
      return -EINVAL;
    h = s;
    hl = (size_t)(colon - s);
  }
  if (hl == 0 || hl >= sizeof(tmp) || hl >= hostlen)
    return -EINVAL;
  memcpy(tmp, h, hl);
  tmp[hl] = '\0';
  /* Only numeric addresses: a name would need a blocking DNS lookup and can
   * resolve to several addresses; saying so now beats a bind error later. */
  if (inet_pton(v6 ? AF_INET6 : AF_INET, tmp, bin) != 1)
    return -EINVAL;
  if (parse_u64(colon + 1, &p) != 0 || p > 65535)
    return -EINVAL;
  memcpy(host, tmp, hl + 1);
  *port = (uint16_t)p;
  return 0;
}

static int replace_str(char **slot, const char *value) {
  char *copy = NULL;
  if (value) {
    copy = strdup(value);
    if (!copy)
      return -ENOMEM;
  }
  free(*slot);
  *slot = copy;
  return 0;
}

static int parse_bool(const char *v, bool *out) {
  static const char *const yes[] = {"true", "yes", "1", "on"};
  static const char *const no[] = {"false", "no", "0", "off"};
  size_t i;
  for (i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(v, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return -EINVAL;
}

static void enum_store(wr_config_t *cfg, uint64_t id, int v) {
  switch (id) {
  case E_QUEUE_TYPE:
    cfg->queue_type = (wr_queue_type_t)v;
    break;
  case E_ACK_MODE:
    cfg->ack_mode = (wr_ack_mode_t)v;
    break;
  case E_LOG_LEVEL:
    cfg->log_level = (wr_log_level_t)v;
    break;
  case E_NODE_QUEUE_TYPE:
    cfg->node_queue_type = (wr_queue_type_t)v;
    break;
  default:
    cfg->log_format = (wr_log_format_t)v;
    break;
  }
}

static int enum_load(const wr_config_t *cfg, uint64_t id) {
  switch (id) {
  case E_QUEUE_TYPE:
    return (int)cfg->queue_type;
  case E_ACK_MODE:
    return (int)cfg->ack_mode;
  case E_LOG_LEVEL:
    return (int)cfg->log_level;
  case E_NODE_QUEUE_TYPE:
    return (int)cfg->node_queue_type;
  default:
    return (int)cfg->log_format;
  }
}

static int valid_path(const char *v) {
  if (v[0] != '/' || strlen(v) > MAX_NAME_LEN)
    return 0;
  for (; *v; v++)
    if ((unsigned char)*v <= 0x20 || *v == 0x7f || *v == '?' || *v == '#')
      return 0;
  return 1;
}

/* An Origin header is scheme://host[:port] with no path, so an entry with a
 * path or trailing slash could never match: reject it instead of silently
 * refusing every browser. */
static int valid_origin(const char *o, size_t len) {
  size_t skip, i;
  if (len > 7 && strncmp(o, "http://", 7) == 0)
    skip = 7;
  else if (len > 8 && strncmp(o, "https://", 8) == 0)
    skip = 8;
  else
    return 0;
  for (i = skip; i < len; i++)
    if ((unsigned char)o[i] <= 0x20 || o[i] == 0x7f || o[i] == '/' || o[i] == '?' || o[i] == '#' ||
        o[i] == '@')
      return 0;
  return 1;
}

static void free_list(char **list) {
  char **p;
  if (!list)
    return;
  for (p = list; *p; p++)
    free(*p);
  free(list);
}

static int is_space(char c) {
  return c == ' ' || c == '\t';
}

/* Splits a comma-separated list into trimmed items; calls fn for each. Empty
 * items are an error (",," is more likely a typo than intent). */
static int split_list(const char *v, int (*fn)(void *ud, const char *item, size_t len), void *ud) {
  const char *p = v;
  while (1) {
    const char *end = strchr(p, ',');
    const char *e = end ? end : p + strlen(p);
    const char *b = p;
    int rc;
    while (b < e && is_space(*b))
      b++;
    while (e > b && is_space(e[-1]))
      e--;
    if (e == b)
      return -EINVAL;
    rc = fn(ud, b, (size_t)(e - b));
    if (rc)
      return rc;
    if (!end)
      return 0;
    p = end + 1;
  }
}

struct origins_acc {
  char **list;
  size_t n;
};

static int origin_cb(void *ud, const char *item, size_t len) {
  struct origins_acc *a = ud;
  char **grown;
  if (!valid_origin(item, len))
    return -EINVAL;
  grown = realloc(a->list, (a->n + 2) * sizeof(*grown));
  if (!grown)
    return -ENOMEM;
  a->list = grown;
  a->list[a->n] = strndup(item, len);
  if (!a->list[a->n])
    return -ENOMEM;
  a->list[++a->n] = NULL;
  return 0;
}

struct delays_acc {
  uint32_t v[WR_CONFIG_MAX_DELAYS];
  size_t n;
  uint64_t min, max;
};

static int delay_cb(void *ud, const char *item, size_t len) {
  struct delays_acc *a = ud;
  char buf[24];
  uint64_t v;
  if (a->n == WR_CONFIG_MAX_DELAYS || len >= sizeof(buf))
    return -EINVAL;
  memcpy(buf, item, len);
  buf[len] = '\0';
  if (parse_u64(buf, &v) != 0 || v < a->min || v > a->max)
    return -EINVAL;
  a->v[a->n++] = (uint32_t)v;
  return 0;
}

static int valid_amqp_name(const char *v) {
  size_t len = strlen(v);
  if (len == 0 || len > MAX_NAME_LEN || strncmp(v, "amq.", 4) == 0)
    return 0;
  for (; *v; v++)
    if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9') ||
          *v == '.' || *v == '_' || *v == '-' || *v == ':'))
      return 0;
  return 1;
}

/* RFC 6265 cookie-name is an RFC 7230 token. */
static int valid_token(const char *v) {
  if (!*v || strlen(v) > 64)
    return 0;
  for (; *v; v++)
    if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9') ||
          strchr("!#$%&'*+-.^_`|~", *v)))
      return 0;
  return 1;
}

static int valid_claim(const char *v) {
  if (!*v || strlen(v) > 64)
    return 0;
  for (; *v; v++)
    if ((unsigned char)*v < 0x20 || *v == 0x7f || *v == '"' || *v == '\\')
      return 0;
  return 1;
}

/* Reads the JWT public key at path. The algorithm follows from the key (RSA ->
 * RS256, EC P-256 -> ES256), so anything else is refused here, at start-up,
 * rather than turning every handshake into a 401 later. A certificate is
 * accepted too (its public key is used), since identity providers often
 * publish one. Returns 0 with *out owned by the caller, or -EINVAL with a
 * message naming the key and the file. */
static int load_public_key(const struct keydef *k, const char *path, void **out, char *err,
                           size_t errlen) {
  char q[96], group[64] = "";
  char buf[65536];
  size_t n, glen = 0;
  FILE *f;
  BIO *bio;
  EVP_PKEY *pkey = NULL;

  quote(q, sizeof(q), path);
  f = fopen(path, "r");
  if (!f) {
    int e = errno;
    errf(err, errlen, "%s.%s: cannot read \"%s\": %s", k->section, k->name, q, strerror(e));
    return -EINVAL;
  }
  n = fread(buf, 1, sizeof(buf), f);
  if (ferror(f) || (n == sizeof(buf) && getc(f) != EOF)) {
    errf(err, errlen, "%s.%s: cannot read \"%s\": %s", k->section, k->name, q,
         ferror(f) ? strerror(EIO) : "larger than 64 KiB, not a public key");
    fclose(f);
    return -EINVAL;
  }
  fclose(f);
  bio = BIO_new_mem_buf(buf, (int)n);
  if (!bio)
    return -ENOMEM;
  pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  if (!pkey) {
    X509 *x;
    (void)BIO_reset(bio);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x) {
      pkey = X509_get_pubkey(x);
      X509_free(x);
    }
  }
  BIO_free(bio);
  if (!pkey) {
    bool priv = memmem(buf, n, "PRIVATE KEY-----", 16) != NULL;
    explicit_bzero(buf, sizeof(buf));
    errf(err, errlen, "%s.%s: \"%s\" is not a PEM public key%s", k->section, k->name, q,
         priv ? " (it holds a private key: give the public half, from openssl pkey -pubout)"
              : " (expected -----BEGIN PUBLIC KEY----- or a certificate)");
    return -EINVAL;
  }
  explicit_bzero(buf, sizeof(buf));
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    if (EVP_PKEY_get_bits(pkey) < 2048) {
      errf(err, errlen, "%s.%s: \"%s\" is a %d-bit RSA key (RS256 needs at least 2048 bits)",
           k->section, k->name, q, EVP_PKEY_get_bits(pkey));
      EVP_PKEY_free(pkey);
      return -EINVAL;
    }
  } else if (!EVP_PKEY_is_a(pkey, "EC") ||
             !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                             &glen) ||
             strcmp(group, "prime256v1") != 0) {
    errf(err, errlen,
         "%s.%s: \"%s\" holds a %s%s%s key (expected RSA for RS256 or EC P-256 for ES256)",
         k->section, k->name, q,
         EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "unknown",
         group[0] ? " " : "", group);
    EVP_PKEY_free(pkey);
    return -EINVAL;
  }
  *out = pkey;
  return 0;
}

static int set_key(wr_config_t *cfg, const struct keydef *k, const char *v, char *err,
                   size_t errlen) {
  char text[96];
  uint64_t n;
  int rc;

  switch (k->kind) {
  case K_LISTEN:
  case K_ADMIN: {
    char host[64] = "";
    uint16_t port = 0;
    bool off = k->kind == K_ADMIN && (v[0] == '\0' || strcasecmp(v, "off") == 0);
    if (!off && wr_config_parse_hostport(v, host, sizeof(host), &port) != 0) {
      invalid(err, errlen, k, v,
              k->kind == K_ADMIN ? "ip:port such as 127.0.0.1:9090 or [::1]:9090, or off"
                                 : "ip:port such as 127.0.0.1:8080 or [::1]:8080");
      return -EINVAL;
    }
    rc = replace_str(FIELD(cfg, k, char *), v);
    if (rc)
      return rc;
    if (k->kind == K_LISTEN) {
      memcpy(cfg->server_host, host, sizeof(host));
      cfg->server_port = port;
    } else if (off) {
      cfg->admin_host[0] = '\0';
      cfg->admin_port = 0;
      cfg->admin_enabled = false;
    } else {
      memcpy(cfg->admin_host, host, sizeof(host));
      cfg->admin_port = port;
      cfg->admin_enabled = true;
    }
    return 0;
  }
  case K_PATH:
    if (!valid_path(v)) {
      invalid(err, errlen, k, v, "a path starting with / without spaces, ? or #");
      return -EINVAL;
    }
    return replace_str(FIELD(cfg, k, char *), v);
  case K_ORIGINS: {
    struct origins_acc a = {NULL, 0};
    const char *p = v;
    while (is_space(*p))
      p++;
    a.list = calloc(1, sizeof(char *));
    if (!a.list)
      return -ENOMEM;
    rc = *p ? split_list(v, origin_cb, &a) : 0;
    if (rc) {
      free_list(a.list);
      if (rc == -EINVAL)
        invalid(err, errlen, k, v,
                "a comma-separated list of origins such as https://app.example.com, each "
                "starting with http:// or https:// and without a path");
      return rc;
    }
    free_list(cfg->allowed_origins);
    cfg->allowed_origins = a.list;
    cfg->n_allowed_origins = a.n;
    return 0;
  }
  case K_U32:
  case K_U64:
    if (parse_u64(v, &n) != 0 || n < k->min || n > k->max) {
      range_text(text, sizeof(text), k->min, k->max);
      invalid(err, errlen, k, v, text);
      return -EINVAL;
    }
    if (k->kind == K_U32)
      *FIELD(cfg, k, uint32_t) = (uint32_t)n;
    else
      *FIELD(cfg, k, uint64_t) = n;
    return 0;
  case K_BOOL:
    if (parse_bool(v, FIELD(cfg, k, bool)) != 0) {
      invalid(err, errlen, k, v, "true, false, yes, no, on, off, 1 or 0");
      return -EINVAL;
    }
    return 0;
  case K_SECRET:
    /* The secret itself never appears in a message, only its length. */
    if (v[0] && strlen(v) < k->min) {
      errf(err, errlen, "%s.%s: too short (%zu bytes; expected at least %llu bytes)", k->section,
           k->name, strlen(v), (unsigned long long)k->min);
      return -EINVAL;
    }
    return replace_str(FIELD(cfg, k, char *), v[0] ? v : NULL);
  case K_KEYFILE: {
    void *pkey = NULL;
    if (v[0] && (rc = load_public_key(k, v, &pkey, err, errlen)) != 0)
      return rc;
    rc = replace_str(FIELD(cfg, k, char *), v[0] ? v : NULL);
    if (rc) {
      EVP_PKEY_free(pkey);
      return rc;
    }
    EVP_PKEY_free(cfg->jwt_pkey);
    cfg->jwt_pkey = pkey;
    return 0;
  }
  case K_FILE:
    if (v[0]) {
      FILE *f = fopen(v, "r");
      if (!f) {
        char q[96];
        int e = errno;
        quote(q, sizeof(q), v);
        errf(err, errlen, "%s.%s: cannot read \"%s\": %s", k->section, k->name, q, strerror(e));
        return -EINVAL;
      }
      fclose(f);
    }
    return replace_str(FIELD(cfg, k, char *), v[0] ? v : NULL);
  case K_OPTSTR:
    return replace_str(FIELD(cfg, k, char *), v[0] ? v : NULL);
  case K_CLAIM:
    if (!valid_claim(v)) {
      invalid(err, errlen, k, v, "a claim name of 1..64 characters, such as sub");
      return -EINVAL;
    }
    return replace_str(FIELD(cfg, k, char *), v);
  case K_COOKIE:
    if (v[0] && !valid_token(v)) {
      invalid(err, errlen, k, v,
              "a cookie name of 1..64 letters, digits or !#$%&'*+-.^_`|~, or empty for no cookie");
      return -EINVAL;
    }
    return replace_str(FIELD(cfg, k, char *), v[0] ? v : NULL);
  case K_URL:
    if (strncmp(v, "amqp://", 7) != 0 && strncmp(v, "amqps://", 8) != 0) {
      char masked[256];
      mask_url(masked, sizeof(masked), v);
      invalid(err, errlen, k, masked, "a URL starting with amqp:// or amqps://");
      return -EINVAL;
    }
    return replace_str(FIELD(cfg, k, char *), v);
  case K_NAME:
    if (!valid_amqp_name(v)) {
      invalid(err, errlen, k, v,
              "1..200 letters, digits, '.', '_', '-' or ':', not starting with amq.");
      return -EINVAL;
    }
    return replace_str(FIELD(cfg, k, char *), v);
  case K_ENUM: {
    int i;
    char *t = text;
    size_t left = sizeof(text);
    for (i = 0; k->choices[i]; i++)
      if (strcasecmp(v, k->choices[i]) == 0) {
        enum_store(cfg, k->min, i);
        return 0;
      }
    /* Build "a, b or c" from the table so the message never drifts. */
    text[0] = '\0';
    for (i = 0; k->choices[i] && left > 1; i++) {
      int w = snprintf(t, left, "%s%s", i == 0 ? "" : (k->choices[i + 1] ? ", " : " or "),
                       k->choices[i]);
      if (w < 0 || (size_t)w >= left)
        break;
      t += w;
      left -= (size_t)w;
    }
    invalid(err, errlen, k, v, text);
    return -EINVAL;
  }
  case K_DELAYS: {
    struct delays_acc a;
    a.n = 0;
    a.min = k->min;
    a.max = k->max;
    if (split_list(v, delay_cb, &a) != 0) {
      snprintf(text, sizeof(text), "1 to %d comma-separated integers %llu..%llu",
               WR_CONFIG_MAX_DELAYS, (unsigned long long)k->min, (unsigned long long)k->max);
      invalid(err, errlen, k, v, text);
      return -EINVAL;
    }
    memcpy(cfg->retry_delays_ms, a.v, sizeof(a.v));
    cfg->n_retry_delays = a.n;
    return 0;
  }
  }
  return -EINVAL;
}

static const struct keydef *find_key(const char *section, const char *key) {
  size_t i;
  for (i = 0; i < N_KEYS; i++)
    if (strcasecmp(keys[i].section, section) == 0 && strcasecmp(keys[i].name, key) == 0)
      return &keys[i];
  return NULL;
}

static int known_section(const char *section) {
  size_t i;
  for (i = 0; sections[i]; i++)
    if (strcasecmp(sections[i], section) == 0)
      return 1;
  return 0;
}

/* Edit distance, to suggest the key a typo was meant to be. */
static size_t distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), i, j;
  size_t row[64];
  if (la >= 64 || lb >= 64)
    return 64;
  for (j = 0; j <= lb; j++)
    row[j] = j;
  for (i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + ((a[i - 1] | 0x20) == (b[j - 1] | 0x20) ? 0 : 1);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

static void unknown_key(const char *section, const char *key, char *err, size_t errlen) {
  const struct keydef *best = NULL;
  size_t i, bestd = 3;
  char qs[96], qk[96];
  quote(qs, sizeof(qs), section);
  quote(qk, sizeof(qk), key);
  if (!section[0]) {
    errf(err, errlen, "key %s is outside any [section]", qk);
    return;
  }
  if (!known_section(section)) {
    errf(err, errlen,
         "unknown section [%s] (expected server, auth, amqp, ack, admin, log or shutdown)", qs);
    return;
  }
  for (i = 0; i < N_KEYS; i++) {
    size_t d;
    if (strcasecmp(keys[i].section, section) != 0)
      continue;
    d = distance(keys[i].name, key);
    if (d < bestd) {
      bestd = d;
      best = &keys[i];
    }
  }
  if (best)
    errf(err, errlen, "unknown key %s.%s (did you mean %s.%s?)", qs, qk, best->section, best->name);
  else
    errf(err, errlen, "unknown key %s.%s", qs, qk);
}

int wr_config_set(wr_config_t *cfg, const char *section, const char *key, const char *value,
                  char *err, size_t errlen) {
  const struct keydef *k;
  if (!cfg || !section || !key || !value) {
    errf(err, errlen, "invalid argument");
    return -EINVAL;
  }
  k = find_key(section, key);
  if (!k) {
    unknown_key(section, key, err, errlen);
    return -ENOENT;
  }
  return set_key(cfg, k, value, err, errlen);
}

void wr_config_close(wr_config_t *cfg) {
  size_t i;
  if (!cfg)
    return;
  for (i = 0; i < N_KEYS; i++) {
    switch (keys[i].kind) {
    case K_LISTEN:
    case K_ADMIN:
    case K_PATH:
    case K_SECRET:
    case K_KEYFILE:
    case K_FILE:
    case K_OPTSTR:
    case K_CLAIM:
    case K_COOKIE:
    case K_URL:
    case K_NAME:
      free(*FIELD(cfg, &keys[i], char *));
      break;
    default:
      break;
    }
  }
  free_list(cfg->allowed_origins);
  EVP_PKEY_free(cfg->jwt_pkey);
  memset(cfg, 0, sizeof(*cfg));
}

int wr_config_init(wr_config_t *cfg) {
  size_t i;
  char err[256];
  memset(cfg, 0, sizeof(*cfg));
  for (i = 0; i < N_KEYS; i++) {
    int rc;
    if (!keys[i].def)
      continue;
    rc = set_key(cfg, &keys[i], keys[i].def, err, sizeof(err));
    if (rc) {
      wr_config_close(cfg);
      return rc;
    }
  }
  return 0;
}

/* Two listeners collide when their ports are equal (and not ephemeral) and
 * either address is the wildcard or they are the same address. */
static int same_endpoint(const char *h1, uint16_t p1, const char *h2, uint16_t p2) {
  if (p1 == 0 || p1 != p2)
    return 0;
  return strcmp(h1, h2) == 0 || strcmp(h1, "0.0.0.0") == 0 || strcmp(h2, "0.0.0.0") == 0 ||
         strcmp(h1, "::") == 0 || strcmp(h2, "::") == 0;
}

int wr_config_validate(const wr_config_t *cfg, char *err, size_t errlen) {
  if (!cfg->jwt_secret && !cfg->jwt_public_key_file) {
    errf(err, errlen,
         "auth.jwt_secret or auth.jwt_public_key_file is required (set one in the config file "
         "or in WARREN_AUTH_JWT_SECRET)");
    return -EINVAL;
  }
  /* Whoever knows the shipped example knows this secret and can sign a
   * token for any user. */
  if (cfg->jwt_secret && strcmp(cfg->jwt_secret, WR_CONFIG_EXAMPLE_SECRET) == 0) {
    errf(err, errlen,
         "auth.jwt_secret is still the example's placeholder; set a long random secret "
         "(for example: openssl rand -hex 32)");
    return -EINVAL;
  }
  if (cfg->jwt_secret && cfg->jwt_public_key_file) {
    errf(err, errlen,
         "auth.jwt_secret and auth.jwt_public_key_file are both set (set only one: the "
         "algorithm is pinned by the key)");
    return -EINVAL;
  }
  /* A browser sends the cookie with a WebSocket opened by any page, whatever
   * its origin, so cookie authentication without an Origin allow-list lets
   * any web site the user visits connect as them (cross-site WebSocket
   * hijacking). Refusing to start is the only safe answer. */
  if (cfg->cookie_name && cfg->n_allowed_origins == 0) {
    errf(err, errlen,
         "auth.cookie_name is set but server.allowed_origins is empty: any web site could open a "
         "WebSocket with the user's cookie; set server.allowed_origins to the origins of your "
         "pages (e.g. https://app.example.com), or unset auth.cookie_name and send the token "
         "another way (the subprotocol bearer.<token>, Authorization: Bearer or ?token=)");
    return -EINVAL;
  }
  if (!cfg->tls_cert_file != !cfg->tls_key_file) {
    errf(err, errlen,
         "amqp.tls_cert_file and amqp.tls_key_file go together (set both for a client "
         "certificate, or neither)");
    return -EINVAL;
  }
  if ((cfg->tls_ca_file || cfg->tls_cert_file) && cfg->amqp_url &&
      strncmp(cfg->amqp_url, "amqps://", 8) != 0) {
    errf(err, errlen,
         "amqp.tls_ca_file / amqp.tls_cert_file are set but amqp.url does not start with "
         "amqps:// (use amqps://host:5671/ to connect over TLS)");
    return -EINVAL;
  }
  if (cfg->idle_timeout_ms <= cfg->ping_interval_ms) {
    errf(err, errlen,
         "server.idle_timeout_ms (%u) must be greater than server.ping_interval_ms (%u), or "
         "clients that answer every ping would still be closed as idle",
         cfg->idle_timeout_ms, cfg->ping_interval_ms);
    return -EINVAL;
  }
  /* A client frame is at most the largest client message plus a 10-byte
   * WebSocket header. */
  if (cfg->max_queued_bytes < WR_CONFIG_MAX_CLIENT_MESSAGE(cfg->max_body_bytes) + 10) {
    errf(err, errlen,
         "server.max_queued_bytes (%llu) must be at least %llu: a notification of "
         "amqp.max_body_bytes (%u) can become a client message of up to 2 x that + %d bytes, "
         "which could otherwise never be queued to a client",
         (unsigned long long)cfg->max_queued_bytes,
         (unsigned long long)(WR_CONFIG_MAX_CLIENT_MESSAGE(cfg->max_body_bytes) + 10),
         cfg->max_body_bytes, WR_CONFIG_CLIENT_SLACK);
    return -EINVAL;
  }
  /* "<queue>.mbox.u.<128-byte id>" must stay an AMQP short string. */
  if (cfg->mailbox_enabled && strlen(cfg->queue) > WR_CONFIG_MAILBOX_QUEUE_MAX) {
    errf(err, errlen,
         "amqp.queue is %zu bytes: with mailbox.enabled it may have at most %d (mailbox queues "
         "are named <amqp.queue>.mbox.<user key>, at most 255 bytes); shorten it or set "
         "mailbox.enabled = false",
         strlen(cfg->queue), WR_CONFIG_MAILBOX_QUEUE_MAX);
    return -EINVAL;
  }
  if (cfg->cluster_node_id != NULL) {
    const char *id = cfg->cluster_node_id;
    size_t n = strlen(id);
    if (n > WR_CONFIG_NODE_ID_MAX || n != strspn(id, "abcdefghijklmnopqrstuvwxyz"
                                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")) {
      errf(err, errlen,
           "cluster.node_id \"%s\": a node id is 1 to %d bytes of letters, digits, '.', '_' "
           "and '-' (it names the node's queue, <amqp.queue>.node.<node_id>)",
           id, WR_CONFIG_NODE_ID_MAX);
      return -EINVAL;
    }
    if (!cfg->mailbox_enabled) {
      errf(err, errlen,
           "cluster.node_id is set but mailbox.enabled = false: in cluster mode a copy for a user "
           "connected to no node goes to their mailbox; enable mailboxes or unset "
           "cluster.node_id");
      return -EINVAL;
    }
  }
  if (cfg->n_retry_delays < 1 || cfg->n_retry_delays > WR_CONFIG_MAX_DELAYS) {
    errf(err, errlen, "amqp.retry_delays_ms: needs 1 to %d delays", WR_CONFIG_MAX_DELAYS);
    return -EINVAL;
  }
  if (cfg->admin_enabled &&
      same_endpoint(cfg->server_host, cfg->server_port, cfg->admin_host, cfg->admin_port)) {
    errf(err, errlen,
         "admin.listen (%s) and server.listen (%s) use the same port (the admin endpoints must "
         "never be on the public port)",
         cfg->admin_listen, cfg->server_listen);
    return -EINVAL;
  }
  return 0;
}

struct file_ctx {
  FILE *f;
  wr_config_t *cfg;
  const char *path;
  int lineno;
  int err_line;
  int rc;
  char *err;
  size_t errlen;
};

/* Our own reader rather than ini_parse_file: it counts lines itself (the
 * handler has no line number in this inih build), stops at an over-long line
 * instead of letting inih parse its two halves as separate lines, and strips
 * leading blanks so an indented "key = value" is not taken for a multi-line
 * continuation of the previous key. */
static char *reader_cb(char *str, int num, void *stream) {
  struct file_ctx *c = stream;
  size_t len, skip = 0;
  if (c->err_line)
    return NULL;
  if (!fgets(str, num, c->f))
    return NULL;
  c->lineno++;
  len = strlen(str);
  if (len > 0 && str[len - 1] != '\n') {
    int ch = getc(c->f);
    if (ch == '\r')
      ch = getc(c->f);
    if (ch != EOF && ch != '\n') {
      c->err_line = c->lineno;
      c->rc = -EINVAL;
      errf(c->err, c->errlen, "%s:%d: line too long (max %d characters)", c->path, c->lineno,
           num - 1);
      return NULL;
    }
  }
  while (is_space(str[skip]))
    skip++;
  if (skip)
    memmove(str, str + skip, len - skip + 1);
  return str;
}

static int handler_cb(void *user, const char *section, const char *name, const char *value) {
  struct file_ctx *c = user;
  char msg[512];
  int rc;
  if (c->err_line)
    return 1;
  rc = wr_config_set(c->cfg, section, name, value ? value : "", msg, sizeof(msg));
  if (rc == 0)
    return 1;
  c->err_line = c->lineno;
  c->rc = rc == -ENOMEM ? rc : -EINVAL;
  errf(c->err, c->errlen, "%s:%d: %s", c->path, c->lineno, msg);
  return 0;
}

static int load_file(wr_config_t *cfg, const char *path, char *err, size_t errlen) {
  struct file_ctx c;
  int r;
  memset(&c, 0, sizeof(c));
  c.cfg = cfg;
  c.path = path;
  c.err = err;
  c.errlen = errlen;
  c.f = fopen(path, "r");
  if (!c.f) {
    int e = errno;
    errf(err, errlen, "cannot read config file %s: %s", path, strerror(e));
    return -e;
  }
  r = ini_parse_stream(reader_cb, &c, handler_cb, &c);
  if (ferror(c.f)) {
    errf(err, errlen, "cannot read config file %s: %s", path, strerror(EIO));
    fclose(c.f);
    return -EIO;
  }
  fclose(c.f);
  /* inih reports the first failing line; if it is earlier than ours (or we
   * have none), it is a line inih itself could not parse. */
  if (c.err_line && (r <= 0 || r >= c.err_line))
    return c.rc;
  if (r == -2) {
    errf(err, errlen, "cannot read config file %s: %s", path, strerror(ENOMEM));
    return -ENOMEM;
  }
  if (r != 0) {
    errf(err, errlen, "%s:%d: syntax error (expected [section], key = value or a ; comment)", path,
         r);
    return -EINVAL;
  }
  return 0;
}

static int load_env(wr_config_t *cfg, char *const *envp, char *err, size_t errlen) {
  static const char prefix[] = "WARREN_";
  char *const *e;
  for (e = envp; e && *e; e++) {
    const char *var = *e, *eq, *us, *value;
    char section[16], key[64], msg[512];
    size_t slen, klen, i;
    int rc;
    if (strncmp(var, prefix, sizeof(prefix) - 1) != 0)
      continue;
    eq = strchr(var, '=');
    if (!eq)
      continue;
    if (strncmp(var, "WARREN_TEST_", 12) == 0 ||
        ((size_t)(eq - var) == 13 && strncmp(var, "WARREN_CONFIG", 13) == 0))
      continue;
    value = eq + 1;
    var += sizeof(prefix) - 1;
    us = memchr(var, '_', (size_t)(eq - var));
    slen = us ? (size_t)(us - var) : 0;
    klen = us ? (size_t)(eq - us - 1) : 0;
    /* Only WARREN_<SECTION>_<KEY> with a known section is ours; other
     * WARREN_* variables (WARREN_BIN in a test shell, say) belong to someone
     * else and are left alone. A typo in the key of a known section is an
     * error. */
    if (!us || slen == 0 || slen >= sizeof(section) || klen == 0 || klen >= sizeof(key))
      continue;
    for (i = 0; i < slen; i++)
      section[i] = (char)(var[i] | 0x20);
    section[slen] = '\0';
    for (i = 0; i < klen; i++)
      key[i] = (char)((us[1 + i] >= 'A' && us[1 + i] <= 'Z') ? us[1 + i] | 0x20 : us[1 + i]);
    key[klen] = '\0';
    if (!known_section(section))
      continue;
    rc = wr_config_set(cfg, section, key, value, msg, sizeof(msg));
    if (rc) {
      errf(err, errlen, "environment variable %.*s: %s", (int)(eq - *e), *e, msg);
      return rc == -ENOMEM ? rc : -EINVAL;
    }
  }
  return 0;
}

int wr_config_load(wr_config_t *cfg, const char *path, char *const *envp, char *err,
                   size_t errlen) {
  int rc;
  if (err && errlen)
    err[0] = '\0';
  rc = wr_config_init(cfg);
  if (rc) {
    errf(err, errlen, "cannot initialise the configuration: %s", strerror(-rc));
    return rc;
  }
  if (path) {
    rc = load_file(cfg, path, err, errlen);
    if (rc)
      return rc;
  }
  rc = load_env(cfg, envp, err, errlen);
  if (rc)
    return rc;
  return wr_config_validate(cfg, err, errlen);
}

static void dump_str(FILE *out, const char *s) {
  if (s && *s)
    fprintf(out, " %s", s);
}

void wr_config_dump(const wr_config_t *cfg, FILE *out) {
  const char *section = "";
  size_t i, j;
  for (i = 0; i < N_KEYS; i++) {
    const struct keydef *k = &keys[i];
    if (strcmp(section, k->section) != 0) {
      fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
      section = k->section;
    }
    /* Empty values print as "key =" so the dump reloads to the same config. */
    fprintf(out, "%s =", k->name);
    switch (k->kind) {
    case K_SECRET:
      dump_str(out, *CFIELD(cfg, k, char *) ? "***" : NULL);
      break;
    case K_URL: {
      char masked[1024];
      mask_url(masked, sizeof(masked), *CFIELD(cfg, k, char *));
      dump_str(out, masked);
      break;
    }
    case K_ADMIN:
      dump_str(out, cfg->admin_enabled ? cfg->admin_listen : "off");
      break;
    case K_LISTEN:
    case K_PATH:
    case K_KEYFILE:
    case K_FILE:
    case K_OPTSTR:
    case K_CLAIM:
    case K_COOKIE:
    case K_NAME:
      dump_str(out, *CFIELD(cfg, k, char *));
      break;
    case K_ORIGINS:
      for (j = 0; j < cfg->n_allowed_origins; j++)
        fprintf(out, "%s%s", j ? "," : " ", cfg->allowed_origins[j]);
      break;
    case K_U32:
      fprintf(out, " %u", *CFIELD(cfg, k, uint32_t));
      break;
    case K_U64:
      fprintf(out, " %llu", (unsigned long long)*CFIELD(cfg, k, uint64_t));
      break;
    case K_BOOL:
      dump_str(out, *CFIELD(cfg, k, bool) ? "true" : "false");
      break;
    case K_ENUM:
      dump_str(out, k->choices[enum_load(cfg, k->min)]);
      break;
    case K_DELAYS:
      for (j = 0; j < cfg->n_retry_delays; j++)
        fprintf(out, "%s%u", j ? "," : " ", cfg->retry_delays_ms[j]);
      break;
    }
    fputc('\n', out);
  }
}
