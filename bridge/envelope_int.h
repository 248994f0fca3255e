/* Notification envelopes (README.md, "Publishing a notification"): decode JSON or MessagePack
 * bodies, encode the client message once per format. Pure functions: no I/O, no logs. */
#ifndef WARREN_BRIDGE_ENVELOPE_INT_H
#define WARREN_BRIDGE_ENVELOPE_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"

typedef enum { WR_ENV_JSON = 0, WR_ENV_MSGPACK = 1 } wr_env_format_t;

/* Why a body was rejected; each maps to a Q.dead reason counter. */
typedef enum {
  WR_ENV_OK = 0,
  WR_ENV_TOO_LARGE,   /* body_len > max_body, or the client message in either format
                         would pass wr_envelope_max_client(max_body) bytes */
  WR_ENV_BAD_FORMAT,  /* unknown content type, or first byte neither '{' nor a map marker */
  WR_ENV_BAD_JSON,    /* invalid JSON / invalid UTF-8 / not an object / trailing bytes */
  WR_ENV_BAD_MSGPACK, /* invalid or truncated msgpack, trailing bytes, non-string keys,
                         bin/ext values, nesting deeper than 32, not a map */
  WR_ENV_NO_TARGET,   /* none of user_id / user_ids / broadcast=true, or empty/invalid ones */
  WR_ENV_BAD_FIELD,   /* a routing/known field of the wrong type (e.g. ttl_ms negative,
                         id not a string, type not a string, user id longer than 256) */
} wr_env_result_t;

/* The top-level fields warren reads itself (README.md, "Publishing a notification"), one table for
 * both decoders (envelope.c and its fast path env_scan.c). The routing fields come first and never
 * reach a client; type and id head the client message, written there by warren; created_at is read
 * (latency) and also passed on where it stands, like any other field. */
typedef enum {
  WR_ENV_KEY_USER_ID = 0,
  WR_ENV_KEY_USER_IDS,
  WR_ENV_KEY_BROADCAST,
  WR_ENV_KEY_EXPIRES_AT,
  WR_ENV_KEY_TTL_MS,
  WR_ENV_KEY_TYPE,
  WR_ENV_KEY_ID,
  WR_ENV_KEY_CREATED_AT,
  WR_ENV_KEY_COUNT /* not a named key */
} wr_env_key_t;

#define WR_ENV_KEY(k, c)                                                                           \
  { k, sizeof(k) - 1, c }
static const struct {
  const char *name;
  size_t len;
  bool to_client; /* copied to the client message where it stands */
} wr_env_keys[WR_ENV_KEY_COUNT] = {
    [WR_ENV_KEY_USER_ID] = WR_ENV_KEY("user_id", false),
    [WR_ENV_KEY_USER_IDS] = WR_ENV_KEY("user_ids", false),
    [WR_ENV_KEY_BROADCAST] = WR_ENV_KEY("broadcast", false),
    [WR_ENV_KEY_EXPIRES_AT] = WR_ENV_KEY("expires_at", false),
    [WR_ENV_KEY_TTL_MS] = WR_ENV_KEY("ttl_ms", false),
    [WR_ENV_KEY_TYPE] = WR_ENV_KEY("type", false),
    [WR_ENV_KEY_ID] = WR_ENV_KEY("id", false),
    [WR_ENV_KEY_CREATED_AT] = WR_ENV_KEY("created_at", true),
};
#undef WR_ENV_KEY

/* Which named key the n bytes at k are (not NUL-terminated), or
 * WR_ENV_KEY_COUNT. Length and first byte first: a memcmp only for a key
 * that may be the one. */
static inline wr_env_key_t wr_env_key_find(const char *k, size_t n) {
  for (int j = 0; j < WR_ENV_KEY_COUNT; j++)
    if (n == wr_env_keys[j].len && k[0] == wr_env_keys[j].name[0] &&
        memcmp(k, wr_env_keys[j].name, n) == 0)
      return (wr_env_key_t)j;
  return WR_ENV_KEY_COUNT;
}

/* Whether a top-level field of key k reaches the client where it stands. */
static inline bool wr_env_key_to_client(wr_env_key_t k) {
  return k == WR_ENV_KEY_COUNT || wr_env_keys[k].to_client;
}

/* The deadline rule of README.md ("Publishing a notification"), for both decoders. expires_at_s is
 * the expires_at field (unix seconds) and ttl_ms the ttl_ms field, each NULL when absent (the
 * caller passes an integer ttl_ms beyond int64 as INT64_MAX); ttl_ms counts from base_ms. With
 * both, the earlier deadline holds. Sets *at_ms to the deadline in unix ms: 0 (never) when neither
 * is given or expires_at is 0; 1 for a deadline at or before the epoch (long expired, as 0 would
 * read as never); INT64_MAX for a deadline past what int64 ms can hold (e.g. expires_at 1e300 or
 * ttl_ms 9223372036854775807: the year 292 million, never in practice), computed without overflow.
 * Returns 0, or -EINVAL when expires_at is negative or NaN or ttl_ms is negative. */
int wr_env_expiry(const double *expires_at_s, const int64_t *ttl_ms, int64_t base_ms,
                  int64_t *at_ms);

/* Short reason string for counters and x-warren-reason ("too_large", "bad_json"...). */
const char *wr_env_result_str(wr_env_result_t r);

typedef struct wr_envelope_s {
  wr_env_format_t format; /* format of the body */
  char *id;               /* "id" field, else fallback_id, else generated; owned */
  char **users;           /* distinct target user ids, owned; n_users may be 0 with broadcast */
  size_t n_users;
  bool broadcast;
  int64_t expires_at_ms; /* 0 = never; from expires_at (unix s) or ttl_ms (+ base_ms) */
  json_t *client;        /* the client message: {"type": type or "notification",
                            "id": id, ...every non-routing field in original order};
                            owned reference, or NULL when client_json holds it.
                            Integers beyond int64 are bignums (wr_json_bignum):
                            encode it with wr_envelope_encode, never json_dumpb */
  uint8_t *client_json;  /* the same message as compact JSON text, owned (fast path) */
  size_t client_json_len;
  double created_at; /* the top-level "created_at" number, if has_created_at */
  bool has_created_at;
  void *block; /* the fast path's one allocation holding users, their strings,
                  id and client_json (then none of them is freed alone); or NULL */
} wr_envelope_t;

/* What warren adds to a client message besides the body's own bytes: the
 * type and id heading it (an id of up to 256 bytes, written with JSON escapes
 * as needed), with room to spare. */
#define WR_ENV_CLIENT_SLACK WR_CONFIG_CLIENT_SLACK

/* The largest client message, in either format, of a body of at most
 * max_body bytes: 2 x max_body + WR_ENV_CLIENT_SLACK. A body in one format
 * always fits in its own (JSON is only minified; MessagePack grows at most
 * 9/5, a float32 becoming a float64), and most fit in the other, which can
 * grow much more: a MessagePack string of control characters becomes \u0001
 * escapes (6x), an array of nil "null," (5x), of false "false," (6x); JSON
 * reals become 9 bytes each. A notification over it in either format is
 * refused as too_large rather than sent to one format's clients only, so
 * every frame warren sends is bounded. */
size_t wr_envelope_max_client(size_t max_body);

/* Decodes body. content_type may be NULL (then the first byte decides).
 * User ids given as integers become their decimal string. fallback_id (may be
 * NULL) is the AMQP message_id; when neither exists an id is generated
 * (unique per process: random 64-bit hex + counter). base_ms is the time ttl_ms
 * counts from (the publish timestamp or now). On success env must be released
 * with wr_envelope_close; on failure env holds nothing. */
wr_env_result_t wr_envelope_decode(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                   const char *content_type, const char *fallback_id,
                                   size_t max_body, int64_t base_ms);

void wr_envelope_close(wr_envelope_t *env);

/* The same decoder without its fast path (the tree for every body): what the
 * fuzzer checks wr_envelope_decode against. */
wr_env_result_t wr_envelope_decode_full(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                        const char *content_type, const char *fallback_id,
                                        size_t max_body, int64_t base_ms);

/* wr_envelope_decode with every limit its own: what the tests and the
 * fuzzer use to put the client size limit anywhere. */
typedef struct {
  size_t max_body;   /* bytes of body */
  size_t max_client; /* bytes of the client message in either format */
  int64_t base_ms;   /* what ttl_ms counts from */
  bool full;         /* no fast path (wr_envelope_decode_full) */
} wr_env_opts_t;
wr_env_result_t wr_envelope_decode_opts(wr_envelope_t *env, const uint8_t *body, size_t body_len,
                                        const char *content_type, const char *fallback_id,
                                        const wr_env_opts_t *opts);

/* env_scan.c: decodes a JSON body in one pass into env, which the caller
 * zeroed (client_json set, client NULL), and counts in *reals the real numbers it read (for the
 * size bound of the client message in MessagePack). Returns 0, or -1 with env empty when the body
 * needs the full decoder (which decides every error). */
int wr_envelope_scan_json(wr_envelope_t *env, const uint8_t *body, size_t len,
                          const char *fallback_id, int64_t base_ms, size_t *reals);

/* A new id, unique across processes and threads (malloc'd, NULL on ENOMEM). */
char *wr_envelope_new_id(void);

/* Encodes env->client for a client in format fmt (JSON text or MessagePack
 * map). Returns a malloc'd buffer in *out and its length in *len, or a negative errno. If
 * prefix > 0, that many bytes are reserved (uninitialised) before the payload
 * and *out points at the start of the reservation (for zero-copy framing). */
int wr_envelope_encode(const wr_envelope_t *env, wr_env_format_t fmt, size_t prefix, uint8_t **out,
                       size_t *len);

/* Encodes any jansson value as MessagePack (used for welcome/pong too), in a
 * new buffer in *out of *len bytes. Returns 0, -EINVAL (NULL argument, or
 * nested deeper than 64) or -ENOMEM. */
int wr_msgpack_from_json(const json_t *v, uint8_t **out, size_t *len);

/* Decodes a MessagePack value into a new jansson value (max depth 32).
 * Returns NULL when invalid, truncated, followed by trailing bytes, when a
 * map key is not a string, or when a string holds a NUL (client messages:
 * every string is a C string). A uint64 beyond int64 becomes a double. */
json_t *wr_msgpack_to_json(const uint8_t *buf, size_t len);

/* The same for envelope bodies: strings may hold NUL (as JSON strings may
 * hold \u0000), a uint64 beyond int64 becomes a bignum, exact; map keys still
 * may not hold NUL. */
json_t *wr_msgpack_load(const uint8_t *buf, size_t len);

/* Integers beyond int64, which jansson has not: the decoders keep one as a
 * "bignum", a jansson string whose first byte is 0xff (never valid UTF-8, so
 * never a string decoded from a body) followed by the integer's decimal
 * digits as sent ("-" first if negative). The writers here give a JSON client
 * those digits, a MessagePack client a uint64 up to UINT64_MAX and beyond
 * that (or below INT64_MIN) the nearest float64 — the number JSON.parse reads
 * from the same digits; a string would change its type in one format only.
 * wr_json_bignum returns a new reference (NULL on ENOMEM); digits are
 * borrowed. wr_json_bignum_digits returns the digits of v and their count in
 * *n, or NULL when v is no bignum. */
json_t *wr_json_bignum(const char *digits, size_t n);
const char *wr_json_bignum_digits(const json_t *v, size_t *n);

/* env_scan.c: parses a JSON object as the full decoder does (RFC 8259,
 * strict UTF-8, nesting at most 32, numbers within a double's range, no
 * \u0000 in keys; strings may hold \u0000, integers beyond int64 become
 * bignums, a repeated key keeps its first place and its last value, as
 * jansson's parser). Returns a new tree, or NULL when buf is not that. */
json_t *wr_json_load(const uint8_t *buf, size_t len);

/* Size-only passes: the bytes of v as compact JSON text (as
 * wr_envelope_encode writes it) and as MessagePack, without writing either;
 * SIZE_MAX when v cannot be written (nested deeper than 64). */
size_t wr_json_size(const json_t *v);
size_t wr_msgpack_size(const json_t *v);

/* Client → server messages (README.md, "Client protocol"). */
typedef enum {
  WR_CMSG_ACK = 0, /* ids/n_ids set */
  WR_CMSG_PING,
  WR_CMSG_INVALID, /* not an object, unknown type, bad ids: answer with an error message */
} wr_cmsg_kind_t;

#define WR_CMSG_MAX_ID 256 /* bytes of one acked id */

typedef struct wr_cmsg_s {
  wr_cmsg_kind_t kind;
  char **ids; /* owned (or one_slot, below); at most 1000 */
  size_t n_ids;
  const char *error; /* static text for WR_CMSG_INVALID */
  /* The plain single-id ack, nearly every client message, needs no
   * allocation: ids then points at one_slot, which points at one_id. */
  char *one_slot;
  char one_id[WR_CMSG_MAX_ID + 1];
} wr_cmsg_t;

/* Parses one client message: JSON text (binary=false) or MessagePack
 * (binary=true). Always fills m; release with wr_cmsg_close. */
void wr_cmsg_parse(wr_cmsg_t *m, const uint8_t *buf, size_t len, bool binary);
/* The same without the fast path for plain acks and pings (jansson for all):
 * what the fuzzer checks wr_cmsg_parse against. */
void wr_cmsg_parse_full(wr_cmsg_t *m, const uint8_t *buf, size_t len, bool binary);
void wr_cmsg_close(wr_cmsg_t *m);

#endif
