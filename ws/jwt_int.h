/* JWT verification and minting (pure functions over bytes, no I/O, no logs).
 * The algorithm is pinned by configuration; the token's "alg" must match it. */
#ifndef WARREN_WS_JWT_INT_H
#define WARREN_WS_JWT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { WR_JWT_HS256 = 0, WR_JWT_RS256 = 1, WR_JWT_ES256 = 2 } wr_jwt_alg_t;

typedef struct wr_jwt_key_s {
  wr_jwt_alg_t alg;
  const uint8_t *secret; /* HS256: borrowed */
  size_t secret_len;
  void *pkey; /* RS256/ES256: EVP_PKEY *, borrowed (issue 4) */
} wr_jwt_key_t;

typedef struct wr_jwt_rules_s {
  const char *issuer;   /* NULL = not checked */
  const char *audience; /* NULL = not checked; "aud" may be a string or an array */
  uint32_t leeway_s;
  const char *user_claim; /* e.g. "sub"; the claim may be a string or an integer */
  bool require_exp;       /* a token without "exp" is refused (WR_JWT_MISSING_EXP) */
} wr_jwt_rules_t;

/* Outcome codes (returned negated is not used: these are positive reasons). */
typedef enum {
  WR_JWT_OK = 0,
  WR_JWT_MALFORMED, /* not three base64url parts, bad JSON, bad base64 */
  WR_JWT_BAD_ALG,   /* alg missing, "none", or not the configured one */
  WR_JWT_BAD_SIGNATURE,
  WR_JWT_EXPIRED,       /* exp + leeway <= now */
  WR_JWT_NOT_YET_VALID, /* nbf - leeway > now */
  WR_JWT_BAD_ISSUER,
  WR_JWT_BAD_AUDIENCE,
  WR_JWT_NO_USER,     /* user claim missing, empty, not string/integer, or > 256 bytes */
  WR_JWT_MISSING_EXP, /* no "exp" while rules->require_exp */
} wr_jwt_result_t;

/* Short, log-safe name of a result ("expired", "bad_signature"...). */
const char *wr_jwt_result_str(wr_jwt_result_t r);

/* Verifies token[0..len) at time now (unix seconds). On WR_JWT_OK writes the
 * user id (NUL-terminated) into user (capacity usercap, must be >= 257) and
 * the exp claim into *exp (0 when absent; saturated to INT64_MIN..INT64_MAX
 * when out of range). Never reads past len. */
wr_jwt_result_t wr_jwt_verify(const char *token, size_t len, const wr_jwt_key_t *key,
                              const wr_jwt_rules_t *rules, int64_t now, char *user, size_t usercap,
                              int64_t *exp);

/* Mints an HS256 token {"sub"/user_claim: user, "iat": now, "exp": now+ttl_s}
 * plus "iss"/"aud" when set in rules. Returns a malloc'd NUL-terminated
 * string (caller frees) or NULL on ENOMEM. */
char *wr_jwt_sign_hs256(const uint8_t *secret, size_t secret_len, const wr_jwt_rules_t *rules,
                        const char *user, int64_t now, int64_t ttl_s);

#endif
