/* Where a browser's token comes from, and which origins may connect. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ws/auth_int.h"
#include "ws/jwt_int.h"

#include <openssl/evp.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static ssize_t percent_decode(const char *s, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= n)
        return -EINVAL;
      int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0)
        return -EINVAL;
      c = (char)(hi * 16 + lo);
      if (c == '\0')
        return -EINVAL;
      i += 2;
    }
    if (o + 1 >= cap)
      return -ENOSPC;
    out[o++] = c;
  }
  out[o] = '\0';
  return (ssize_t)o;
}

ssize_t wr_ws_query_get(const char *query, const char *name, char *out, size_t cap) {
  if (query == NULL || cap == 0)
    return -ENOENT;
  size_t nlen = strlen(name);
  const char *s = query;
  while (*s != '\0') {
    const char *end = strchr(s, '&');
    size_t plen = end ? (size_t)(end - s) : strlen(s);
    if (plen > nlen && strncmp(s, name, nlen) == 0 && s[nlen] == '=')
      return percent_decode(s + nlen + 1, plen - nlen - 1, out, cap);
    if (end == NULL)
      break;
    s = end + 1;
  }
  return -ENOENT;
}

static ssize_t copy_out(const char *s, size_t n, char *out, size_t cap) {
  if (n + 1 > cap)
    return -ENOSPC;
  memcpy(out, s, n);
  out[n] = '\0';
  return (ssize_t)n;
}

ssize_t wr_ws_cookie_get(const char *cookie, const char *name, char *out, size_t cap) {
  if (cookie == NULL || name == NULL || cap == 0)
    return -ENOENT;
  size_t nlen = strlen(name);
  const char *s = cookie;
  while (*s != '\0') {
    while (*s == ' ' || *s == '\t' || *s == ';')
      s++;
    const char *end = strchr(s, ';');
    size_t plen = end ? (size_t)(end - s) : strlen(s);
    if (plen > nlen && strncmp(s, name, nlen) == 0 && s[nlen] == '=') {
      const char *v = s + nlen + 1;
      size_t vlen = plen - nlen - 1;
      while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
      if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
        v++;
        vlen -= 2;
      }
      return copy_out(v, vlen, out, cap);
    }
    if (end == NULL)
      break;
    s = end + 1;
  }
  return -ENOENT;
}

ssize_t wr_ws_bearer_get(const char *authorization, char *out, size_t cap) {
  if (authorization == NULL || cap == 0)
    return -ENOENT;
  if (strncasecmp(authorization, "bearer", 6) != 0 ||
      (authorization[6] != ' ' && authorization[6] != '\t'))
    return -ENOENT;
  const char *v = authorization + 6;
  while (*v == ' ' || *v == '\t')
    v++;
  size_t n = strlen(v);
  while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
    n--;
  return copy_out(v, n, out, cap);
}

ssize_t wr_ws_protocol_token_get(const char *protocols, char *out, size_t cap) {
  const size_t plen = sizeof(WR_WS_BEARER_PROTOCOL) - 1;
  const char *item;
  size_t n;
  if (protocols == NULL || cap == 0)
    return -ENOENT;
  while (wr_ws_list_next(&protocols, &item, &n))
    if (n > plen && memcmp(item, WR_WS_BEARER_PROTOCOL, plen) == 0)
      return copy_out(item + plen, n - plen, out, cap);
  return -ENOENT;
}

ssize_t wr_ws_auth_token(const wr_ws_request_t *req, const char *cookie_name, char *out,
                         size_t cap) {
  ssize_t n = wr_ws_query_get(req->query, "token", out, cap);
  if (n > 0)
    return n;
  n = wr_ws_bearer_get(req->headers[WR_WS_H_AUTHORIZATION], out, cap);
  if (n > 0)
    return n;
  /* Browsers can set no header on a WebSocket but this one, and unlike the
   * query string it is not part of the request line that proxies log. */
  n = wr_ws_protocol_token_get(req->headers[WR_WS_H_PROTOCOL], out, cap);
  if (n > 0)
    return n;
  if (cookie_name != NULL && cookie_name[0] != '\0') {
    n = wr_ws_cookie_get(req->headers[WR_WS_H_COOKIE], cookie_name, out, cap);
    if (n > 0)
      return n;
  }
  return -ENOENT;
}

static size_t origin_len(const char *s) {
  size_t n = strlen(s);
  if (n > 0 && s[n - 1] == '/')
    n--;
  return n;
}

bool wr_ws_origin_allowed(const char *origin, char *const *allowed, size_t n) {
  if (n == 0)
    return true;
  if (origin == NULL || strcmp(origin, "null") == 0)
    return false;
  size_t olen = origin_len(origin);
  for (size_t i = 0; i < n; i++) {
    if (allowed[i] == NULL)
      break;
    if (origin_len(allowed[i]) == olen && strncasecmp(origin, allowed[i], olen) == 0)
      return true;
  }
  return false;
}

int wr_ws_auth_key(const wr_config_t *cfg, wr_jwt_key_t *key) {
  memset(key, 0, sizeof(*key));
  if (cfg->jwt_secret != NULL && cfg->jwt_secret[0] != '\0') {
    key->alg = WR_JWT_HS256;
    key->secret = (const uint8_t *)cfg->jwt_secret;
    key->secret_len = strlen(cfg->jwt_secret);
    return 0;
  }
  /* The configuration loaded the PEM and accepted only RSA and EC P-256, so
   * the key type alone pins the algorithm; the token's "alg" never does. */
  EVP_PKEY *pkey = cfg->jwt_pkey;
  if (pkey == NULL)
    return -ENOENT;
  if (EVP_PKEY_is_a(pkey, "RSA"))
    key->alg = WR_JWT_RS256;
  else if (EVP_PKEY_is_a(pkey, "EC"))
    key->alg = WR_JWT_ES256;
  else
    return -ENOENT;
  key->pkey = pkey;
  return 0;
}

void wr_ws_auth_describe(const wr_config_t *cfg, char *out, size_t cap) {
  wr_jwt_key_t key;
  char from[160];
  if (cap == 0)
    return;
  if (cfg->cookie_name != NULL)
    snprintf(from, sizeof(from),
             "?token=, Authorization: Bearer, subprotocol bearer.<token> or cookie %s",
             cfg->cookie_name);
  else
    snprintf(from, sizeof(from),
             "?token=, Authorization: Bearer or subprotocol bearer.<token> (no cookie: "
             "auth.cookie_name is unset)");
  if (wr_ws_auth_key(cfg, &key) != 0)
    snprintf(out, cap, "no JWT key configured: every handshake is refused");
  else if (key.alg == WR_JWT_HS256)
    snprintf(out, cap, "tokens: HS256 with auth.jwt_secret; from %s", from);
  else
    snprintf(out, cap, "tokens: %s with a %d-bit %s key from %s; from %s",
             key.alg == WR_JWT_RS256 ? "RS256" : "ES256", EVP_PKEY_get_bits(key.pkey),
             key.alg == WR_JWT_RS256 ? "RSA" : "EC P-256", cfg->jwt_public_key_file, from);
}

int wr_ws_auth_check(const wr_ws_request_t *req, const wr_config_t *cfg, int64_t now, char *user,
                     int64_t *exp, const char **error) {
  /* A token can be no longer than the head that carried it. */
  char token[WR_WS_HEAD_MAX];
  *exp = 0;
  ssize_t n = wr_ws_auth_token(req, cfg->cookie_name, token, sizeof(token));
  if (n <= 0) {
    *error = "missing_token";
    return 401;
  }
  wr_jwt_key_t key;
  if (wr_ws_auth_key(cfg, &key) != 0) {
    *error = "no_key";
    return 401;
  }
  wr_jwt_rules_t rules = {
      .issuer = cfg->issuer,
      .audience = cfg->audience,
      .leeway_s = cfg->leeway_s,
      .user_claim = cfg->user_claim ? cfg->user_claim : "sub",
      .require_exp = cfg->require_exp,
  };
  wr_jwt_result_t r = wr_jwt_verify(token, (size_t)n, &key, &rules, now, user, WR_WS_USER_MAX, exp);
  explicit_bzero(token, sizeof(token));
  if (r != WR_JWT_OK) {
    *error = wr_jwt_result_str(r);
    return 401;
  }
  return 0;
}
