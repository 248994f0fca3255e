/* Token extraction and origin checks for the WebSocket handshake (pure: no
 * I/O, no logs). Tokens are secrets: callers must never log them. */
#ifndef WARREN_WS_AUTH_INT_H
#define WARREN_WS_AUTH_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "ws/handshake_int.h"

/* Capacity of a user id buffer (wr_jwt_verify needs >= 257). */
#define WR_WS_USER_MAX 257

/* Finds parameter name in a raw query string ("a=1&token=x") and writes its
 * percent-decoded value (NUL-terminated) into out. Returns the value length,
 * -ENOENT when absent, -EINVAL for a bad %-escape or a decoded NUL, -ENOSPC
 * when it does not fit in cap (counting the NUL). */
ssize_t wr_ws_query_get(const char *query, const char *name, char *out, size_t cap);

/* Finds cookie name in a Cookie header value ("a=1; b=2"), strips optional
 * double quotes. Same returns as wr_ws_query_get (no decoding). */
ssize_t wr_ws_cookie_get(const char *cookie, const char *name, char *out, size_t cap);

/* Extracts the token of "Authorization: Bearer <token>" (scheme
 * case-insensitive). Same returns as wr_ws_query_get. */
ssize_t wr_ws_bearer_get(const char *authorization, char *out, size_t cap);

/* Extracts the token of the first "bearer.<token>" entry of a
 * Sec-WebSocket-Protocol value. Same returns as wr_ws_query_get. */
ssize_t wr_ws_protocol_token_get(const char *protocols, char *out, size_t cap);

/* The request's token: query "token", then the Bearer header, then a
 * "bearer.<token>" subprotocol, then cookie cookie_name (NULL = cookies are
 * not read, the default); an empty value counts as absent.
 * Returns the length or -ENOENT when no source carries one. */
ssize_t wr_ws_auth_token(const wr_ws_request_t *req, const char *cookie_name, char *out,
                         size_t cap);

/* True when origin may connect: n == 0 allows any origin; otherwise origin
 * must equal one of allowed (ASCII case-insensitive, a trailing '/' on
 * either side ignored). A missing or "null" origin is refused then. */
bool wr_ws_origin_allowed(const char *origin, char *const *allowed, size_t n);

struct wr_jwt_key_s;

/* Fills key (borrowing from cfg) with the configured JWT key: HS256 when
 * auth.jwt_secret is set, else RS256 for an RSA or ES256 for an EC P-256
 * auth.jwt_public_key_file (loaded by the configuration). Returns 0, or
 * -ENOENT when cfg holds no usable key. */
int wr_ws_auth_key(const wr_config_t *cfg, struct wr_jwt_key_s *key);

/* Writes a one-line, log-safe description of how handshakes are
 * authenticated ("RS256 (RSA 2048-bit key from /etc/warren/jwt.pem)...") into
 * out (NUL-terminated, truncated to cap). Never includes a secret. */
void wr_ws_auth_describe(const wr_config_t *cfg, char *out, size_t cap);

/* Authenticates req against cfg's JWT settings at unix time now. Returns 0
 * with user (capacity WR_WS_USER_MAX) and *exp (0 = none) filled, or 401
 * with *error set to a short log-safe reason ("missing_token", "expired",
 * "missing_exp", "no_key"...). */
int wr_ws_auth_check(const wr_ws_request_t *req, const wr_config_t *cfg, int64_t now, char *user,
                     int64_t *exp, const char **error);

#endif
