/* warren configuration: defaults, INI file, WARREN_<SECTION>_<KEY> environment
 * overrides and validation. The loaded configuration is immutable; a reload
 * builds a new one. */
#ifndef WARREN_CONFIG_H
#define WARREN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { WR_QUEUE_CLASSIC = 0, WR_QUEUE_QUORUM = 1 } wr_queue_type_t;
typedef enum { WR_ACK_CLIENT = 0, WR_ACK_WRITE = 1 } wr_ack_mode_t;
typedef enum { WR_LOG_ERROR = 0, WR_LOG_WARN, WR_LOG_INFO, WR_LOG_DEBUG } wr_log_level_t;
typedef enum { WR_LOG_TEXT = 0, WR_LOG_JSON = 1 } wr_log_format_t;

#define WR_CONFIG_MAX_DELAYS 32
/* The longest amqp.queue mailboxes allow: 255 - strlen(".mbox.u.") - 128. */
#define WR_CONFIG_MAILBOX_QUEUE_MAX 119
/* The longest cluster.node_id: <queue>.node.<node_id> stays within 255 bytes. */
#define WR_CONFIG_NODE_ID_MAX 64

/* The largest client message a notification may become, in either format,
 * for amqp.max_body_bytes = max_body: 2 x max_body + WR_CONFIG_CLIENT_SLACK
 * (bridge/envelope.c refuses bodies that would exceed it as too_large). The
 * slack is what warren adds besides the body's own bytes (type, id). */
#define WR_CONFIG_CLIENT_SLACK 2048
#define WR_CONFIG_MAX_CLIENT_MESSAGE(max_body) (2 * (uint64_t)(max_body) + WR_CONFIG_CLIENT_SLACK)

typedef struct wr_config_s {
  /* [server] */
  char *server_listen;    /* "host:port" as written, e.g. "127.0.0.1:8080" */
  char server_host[64];   /* parsed host of server_listen */
  uint16_t server_port;   /* parsed port of server_listen (0 = ephemeral) */
  char *server_path;      /* WebSocket path, starts with '/', default "/ws" */
  char **allowed_origins; /* NULL-terminated list; empty list = any origin */
  size_t n_allowed_origins;
  uint32_t max_connections;          /* default 100000 */
  uint32_t ping_interval_ms;         /* default 25000 */
  uint32_t idle_timeout_ms;          /* default 60000 */
  uint32_t handshake_timeout_ms;     /* default 5000 */
  uint32_t max_client_message_bytes; /* default 4096 */
  uint32_t
      max_client_messages_per_s; /* per connection, burst the same; 0 = unlimited, default 100 */
  uint64_t max_queued_bytes;     /* per connection, default 1048576 */
  bool demo;                     /* server.demo: serve the demo page at "/", default false */

  /* [auth] */
  char *jwt_secret;          /* HS256 secret; required unless jwt_public_key_file */
  char *jwt_public_key_file; /* PEM for RS256/ES256 (issue 4); NULL if unset */
  void *jwt_pkey;            /* EVP_PKEY * read from jwt_public_key_file when the key is
                              * set (RSA >= 2048 bits -> RS256, EC P-256 -> ES256); owned,
                              * freed by wr_config_close; NULL if unset */
  char *issuer;              /* NULL = not checked */
  char *audience;            /* NULL = not checked */
  uint32_t leeway_s;         /* default 30 */
  bool require_exp;          /* auth.require_exp: refuse tokens without exp, default true */
  char *user_claim;          /* default "sub" */
  char *cookie_name;         /* auth.cookie_name; NULL (default) = cookies are not read;
                              * needs allowed_origins (wr_config_validate) */

  /* [amqp] */
  char *amqp_url;                                 /* default "amqp://guest:guest@127.0.0.1:5672/" */
  char *exchange;                                 /* default "warren.notify" */
  char *queue;                                    /* default "warren.notify" */
  wr_queue_type_t queue_type;                     /* default classic */
  uint32_t prefetch;                              /* 1..65535, default 1000 */
  uint32_t heartbeat_s;                           /* 0 (off) or 1..3600, default 10 */
  uint32_t retry_delays_ms[WR_CONFIG_MAX_DELAYS]; /* ascending not required; last repeats */
  size_t n_retry_delays;                          /* >= 1 */
  uint32_t max_attempts;                          /* >= 1, default 50 */
  uint32_t max_body_bytes;                        /* default 65536 */
  char *tls_ca_file;   /* amqps:// CA bundle (PEM); NULL = system store */
  char *tls_cert_file; /* amqps:// client certificate (PEM); NULL = none */
  char *tls_key_file;  /* its private key (PEM); set with tls_cert_file */
  bool tls_verify;     /* verify the broker certificate and host name, default true */

  /* [ack] */
  wr_ack_mode_t ack_mode;  /* default client */
  uint32_t ack_timeout_ms; /* default 10000 */

  /* [mailbox] (docs/mailboxes.md) */
  bool mailbox_enabled;              /* offline copies go to per-user mailboxes, default true */
  uint32_t mailbox_ttl_ms;           /* x-message-ttl of a mailbox, default 7 days */
  uint32_t mailbox_max_messages;     /* x-max-length (drop-head), default 1000 */
  uint32_t mailbox_prefetch;         /* unacked mailbox items per online user, default 100 */
  uint32_t mailbox_max_redeliveries; /* unacked ack timeouts of one item before it is parked */
  uint32_t mailbox_idle_ms;          /* the janitor deletes a mailbox empty and unused this long */
  uint32_t mailbox_janitor_ms;       /* how often the janitor looks (0 = never) */
  uint32_t mailbox_unbind_grace_ms;  /* from unbinding a mailbox to deleting it */

  /* [cluster] (docs/cluster.md) */
  char *cluster_node_id;            /* NULL (default) = single mode; else this node's id */
  wr_queue_type_t node_queue_type;  /* cluster.queue_type of <queue>.node.<id>, default quorum */
  uint32_t cluster_node_ttl_ms;     /* x-message-ttl of a node queue, default 5 min */
  uint32_t cluster_unbind_grace_ms; /* a user's binding outlives their last connection this long */

  /* [admin] */
  char *admin_listen; /* default "127.0.0.1:9090"; "" or "off" disables */
  char admin_host[64];
  uint16_t admin_port;
  bool admin_enabled;
  uint32_t queue_poll_ms; /* admin.queue_poll_ms, default 5000 */

  /* [log] */
  wr_log_level_t log_level;   /* default info */
  wr_log_format_t log_format; /* default text */

  /* [shutdown] */
  uint32_t drain_timeout_ms; /* default 10000 */
} wr_config_t;

/* Fills cfg with the defaults (README.md, Configuration). Strings are heap copies owned by
 * cfg. Returns 0 or -ENOMEM. */
int wr_config_init(wr_config_t *cfg);

/* Sets one key, e.g. ("amqp", "prefetch", "200"). Validates the value.
 * On error returns -EINVAL (or -ENOENT for an unknown key) and writes a message
 * that names the key and the accepted values into err. */
int wr_config_set(wr_config_t *cfg, const char *section, const char *key, const char *value,
                  char *err, size_t errlen);

/* Defaults, then the INI file at path (if non-NULL), then every
 * WARREN_<SECTION>_<KEY> variable of envp (NULL-terminated, may be NULL), then
 * the cross-key checks (wr_config_validate). On error returns a negative errno
 * and a message naming the key (and file:line for the file) in err. cfg must be
 * released with wr_config_close in every case. */
int wr_config_load(wr_config_t *cfg, const char *path, char *const *envp, char *err, size_t errlen);

/* Cross-key checks: a JWT key is configured, prefetch fits, etc. */
/* The placeholder auth.jwt_secret of config/warren.ini, which validation refuses. */
#define WR_CONFIG_EXAMPLE_SECRET "change-me-to-a-long-random-secret"

int wr_config_validate(const wr_config_t *cfg, char *err, size_t errlen);

/* Writes the effective configuration as INI to out (secrets shown as "***"). */
#include <stdio.h>
void wr_config_dump(const wr_config_t *cfg, FILE *out);

/* Frees every string of cfg. */
void wr_config_close(wr_config_t *cfg);

/* Parses "host:port" ("[::1]:80" too). Returns 0 or -EINVAL. */
int wr_config_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);

#endif
