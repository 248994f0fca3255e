/* JWT verification (HS256, RS256, ES256) and HS256 minting. Pure functions:
 * no I/O, no logs. The algorithm comes from the key, never from the token. */
#include "ws/jwt_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Tokens travel in URLs and headers; anything longer is not a token we minted
 * or would accept, and the cap bounds the work an unauthenticated peer causes. */
#define MAX_TOKEN_LEN 8192
#define MAX_USER_LEN 256

const char *wr_jwt_result_str(wr_jwt_result_t r) {
  switch (r) {
  case WR_JWT_OK:
    return "ok";
  case WR_JWT_MALFORMED:
    return "malformed";
  case WR_JWT_BAD_ALG:
    return "bad_alg";
  case WR_JWT_BAD_SIGNATURE:
    return "bad_signature";
  case WR_JWT_EXPIRED:
    return "expired";
  case WR_JWT_NOT_YET_VALID:
    return "not_yet_valid";
  case WR_JWT_BAD_ISSUER:
    return "bad_issuer";
  case WR_JWT_BAD_AUDIENCE:
    return "bad_audience";
  case WR_JWT_NO_USER:
    return "no_user";
  case WR_JWT_MISSING_EXP:
    return "missing_exp";
  }
  return "unknown";
}

static const char *alg_name(wr_jwt_alg_t alg) {
  switch (alg) {
  case WR_JWT_HS256:
    return "HS256";
  case WR_JWT_RS256:
    return "RS256";
  case WR_JWT_ES256:
    return "ES256";
  }
  return NULL;
}

static bool is_b64url_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

static unsigned b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '-' ? 62 : 63;
}

/* Decodes unpadded base64url in[0..n) into a new buffer. Returns 0, -EINVAL
 * for anything that is not canonical base64url, or -ENOMEM. Canonical means
 * the unused low bits of the last character are zero, so one signature has
 * exactly one spelling. */
static int b64url_decode(const char *in, size_t n, uint8_t **out, size_t *outlen) {
  size_t rem = n % 4, padded, i;
  unsigned char *tmp;
  uint8_t *buf;
  int got;

  if (rem == 1)
    return -EINVAL;
  for (i = 0; i < n; i++)
    if (!is_b64url_char((unsigned char)in[i]))
      return -EINVAL;
  if (rem == 2 && (b64url_value((unsigned char)in[n - 1]) & 0x0f) != 0)
    return -EINVAL;
  if (rem == 3 && (b64url_value((unsigned char)in[n - 1]) & 0x03) != 0)
    return -EINVAL;

  padded = n + (rem ? 4 - rem : 0);
  tmp = malloc(padded + 1);
  buf = malloc(padded / 4 * 3 + 1);
  if (!tmp || !buf) {
    free(tmp);
    free(buf);
    return -ENOMEM;
  }
  for (i = 0; i < n; i++)
    tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : (unsigned char)in[i];
  for (; i < padded; i++)
    tmp[i] = '=';
  tmp[padded] = '\0';

  /* EVP_DecodeBlock counts the padding as zero bytes; remove them. */
  got = padded ? EVP_DecodeBlock(buf, tmp, (int)padded) : 0;
  free(tmp);
  if (got < 0) {
    free(buf);
    return -EINVAL;
  }
  if (rem == 2)
    *outlen = (size_t)got - 2;
  else if (rem == 3)
    *outlen = (size_t)got - 1;
  else
    *outlen = (size_t)got;
  *out = buf;
  return 0;
}

/* Encodes in[0..n) as unpadded base64url, NUL-terminated, malloc'd. */
static char *b64url_encode(const uint8_t *in, size_t n) {
  size_t cap = (n + 2) / 3 * 4 + 1, i, len;
  char *out = malloc(cap);

  if (!out)
    return NULL;
  len = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
  while (len > 0 && out[len - 1] == '=')
    len--;
  out[len] = '\0';
  for (i = 0; i < len; i++) {
    if (out[i] == '+')
      out[i] = '-';
    else if (out[i] == '/')
      out[i] = '_';
  }
  return out;
}

/* Parses a base64url JSON object. Duplicate keys are refused: two parsers that
 * keep different duplicates are how claims get smuggled past a check. */
static json_t *decode_json_part(const char *part, size_t n) {
  uint8_t *raw;
  size_t rawlen;
  json_t *v;

  if (b64url_decode(part, n, &raw, &rawlen) < 0)
    return NULL;
  v = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
  free(raw);
  if (v && !json_is_object(v)) {
    json_decref(v);
    return NULL;
  }
  return v;
}

static wr_jwt_result_t verify_hs256(const wr_jwt_key_t *key, const char *input, size_t inlen,
                                    const uint8_t *sig, size_t siglen) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;

  /* An empty secret would make every token forgeable. */
  if (!key->secret || key->secret_len == 0 || key->secret_len > INT32_MAX)
    return WR_JWT_BAD_SIGNATURE;
  if (!HMAC(EVP_sha256(), key->secret, (int)key->secret_len, (const unsigned char *)input, inlen,
            mac, &maclen))
    return WR_JWT_BAD_SIGNATURE;
  if (siglen != maclen || CRYPTO_memcmp(mac, sig, maclen) != 0)
    return WR_JWT_BAD_SIGNATURE;
  return WR_JWT_OK;
}

static wr_jwt_result_t digest_verify(EVP_PKEY *pkey, const char *input, size_t inlen,
                                     const uint8_t *sig, size_t siglen) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  wr_jwt_result_t r = WR_JWT_BAD_SIGNATURE;

  if (!ctx)
    return r;
  if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
      EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)input, inlen) == 1)
    r = WR_JWT_OK;
  EVP_MD_CTX_free(ctx);
  return r;
}

static wr_jwt_result_t verify_rs256(EVP_PKEY *pkey, const char *input, size_t inlen,
                                    const uint8_t *sig, size_t siglen) {
  /* A key of the wrong type is a configuration error; it verifies nothing. */
  if (!pkey || !EVP_PKEY_is_a(pkey, "RSA"))
    return WR_JWT_BAD_SIGNATURE;
  return digest_verify(pkey, input, inlen, sig, siglen);
}

/* JOSE carries an ES256 signature as raw r||s (32 bytes each) while OpenSSL
 * verifies DER ECDSA-Sig-Value, so the signature is re-encoded first. */
static wr_jwt_result_t verify_es256(EVP_PKEY *pkey, const char *input, size_t inlen,
                                    const uint8_t *sig, size_t siglen) {
  char group[64];
  size_t glen = 0;
  ECDSA_SIG *es = NULL;
  BIGNUM *r = NULL, *s = NULL;
  unsigned char *der = NULL;
  int derlen;
  wr_jwt_result_t res = WR_JWT_BAD_SIGNATURE;

  if (!pkey || !EVP_PKEY_is_a(pkey, "EC") || siglen != 64)
    return res;
  if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                      &glen) ||
      strcmp(group, "prime256v1") != 0)
    return res;

  es = ECDSA_SIG_new();
  r = BN_bin2bn(sig, 32, NULL);
  s = BN_bin2bn(sig + 32, 32, NULL);
  if (!es || !r || !s)
    goto out;
  if (ECDSA_SIG_set0(es, r, s) != 1)
    goto out;
  r = s = NULL; /* owned by es now */
  derlen = i2d_ECDSA_SIG(es, &der);
  if (derlen <= 0)
    goto out;
  res = digest_verify(pkey, input, inlen, der, (size_t)derlen);
out:
  OPENSSL_free(der);
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return res;
}

/* Compares a jansson string with a C string, byte for byte and length too. */
static bool string_equals(const json_t *v, const char *want) {
  size_t n = strlen(want);
  return json_is_string(v) && json_string_length(v) == n &&
         memcmp(json_string_value(v), want, n) == 0;
}

static bool audience_ok(const json_t *aud, const char *want) {
  size_t i;
  json_t *item;

  if (json_is_string(aud))
    return string_equals(aud, want);
  if (!json_is_array(aud))
    return false;
  json_array_foreach(aud, i, item) {
    if (string_equals(item, want))
      return true;
  }
  return false;
}

/* Extracts the user id: a string of 1..256 bytes with no control characters
 * (it ends up in logs and in the user index) or an integer. */
static wr_jwt_result_t extract_user(const json_t *claim, char *user, size_t usercap) {
  if (json_is_string(claim)) {
    const char *s = json_string_value(claim);
    size_t n = json_string_length(claim), i;
    if (n == 0 || n > MAX_USER_LEN || n + 1 > usercap)
      return WR_JWT_NO_USER;
    for (i = 0; i < n; i++) {
      unsigned char c = (unsigned char)s[i];
      if (c < 0x20 || c == 0x7f)
        return WR_JWT_NO_USER;
    }
    memcpy(user, s, n);
    user[n] = '\0';
    return WR_JWT_OK;
  }
  if (json_is_integer(claim)) {
    int w = snprintf(user, usercap, "%" JSON_INTEGER_FORMAT, json_integer_value(claim));
    if (w < 0 || (size_t)w >= usercap)
      return WR_JWT_NO_USER;
    return WR_JWT_OK;
  }
  return WR_JWT_NO_USER;
}

static wr_jwt_result_t check_claims(const json_t *payload, const wr_jwt_rules_t *rules, int64_t now,
                                    char *user, size_t usercap, int64_t *exp_out) {
  const json_t *exp = json_object_get(payload, "exp");
  const json_t *nbf = json_object_get(payload, "nbf");
  const char *claim_name = rules->user_claim ? rules->user_claim : "sub";
  double leeway = (double)rules->leeway_s;
  double expv = 0;
  wr_jwt_result_t r;

  /* Doubles keep every realistic timestamp exact and cannot overflow when
   * the leeway is added to a hostile exp such as 9223372036854775807. */
  /* A token without exp would be honoured forever, by every connection it
   * opens and after its holder lost access, unless the operator says their
   * identity provider mints such tokens on purpose. */
  if (!exp && rules->require_exp)
    return WR_JWT_MISSING_EXP;
  if (exp) {
    if (!json_is_number(exp))
      return WR_JWT_MALFORMED;
    expv = json_number_value(exp);
    if (expv + leeway <= (double)now)
      return WR_JWT_EXPIRED;
  }
  if (nbf) {
    if (!json_is_number(nbf))
      return WR_JWT_MALFORMED;
    if (json_number_value(nbf) - leeway > (double)now)
      return WR_JWT_NOT_YET_VALID;
  }
  if (rules->issuer && !string_equals(json_object_get(payload, "iss"), rules->issuer))
    return WR_JWT_BAD_ISSUER;
  if (rules->audience && !audience_ok(json_object_get(payload, "aud"), rules->audience))
    return WR_JWT_BAD_AUDIENCE;
  r = extract_user(json_object_get(payload, claim_name), user, usercap);
  if (r != WR_JWT_OK)
    return r;
  if (exp_out) {
    if (!exp)
      *exp_out = 0;
    else if (expv >= 9223372036854775807.0)
      *exp_out = INT64_MAX;
    else if (expv <= -9223372036854775808.0)
      *exp_out = INT64_MIN;
    else {
      /* Round down without libm: the conversion truncates toward zero. */
      *exp_out = (int64_t)expv;
      if ((double)*exp_out > expv)
        (*exp_out)--;
    }
  }
  return WR_JWT_OK;
}

wr_jwt_result_t wr_jwt_verify(const char *token, size_t len, const wr_jwt_key_t *key,
                              const wr_jwt_rules_t *rules, int64_t now, char *user, size_t usercap,
                              int64_t *exp) {
  const char *dot1, *dot2, *want_alg;
  size_t hlen, plen, slen;
  json_t *header = NULL, *payload = NULL, *alg;
  uint8_t *sig = NULL;
  size_t siglen = 0;
  wr_jwt_result_t r = WR_JWT_MALFORMED;

  if (exp)
    *exp = 0;
  if (!token || !key || !rules || !user || usercap == 0 || len == 0 || len > MAX_TOKEN_LEN)
    return WR_JWT_MALFORMED;

  dot1 = memchr(token, '.', len);
  if (!dot1)
    return WR_JWT_MALFORMED;
  dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
  if (!dot2)
    return WR_JWT_MALFORMED;
  hlen = (size_t)(dot1 - token);
  plen = (size_t)(dot2 - dot1 - 1);
  slen = len - (size_t)(dot2 + 1 - token);
  /* A third dot lands in the signature part and fails base64url there. */
  if (hlen == 0 || plen == 0)
    return WR_JWT_MALFORMED;

  header = decode_json_part(token, hlen);
  if (!header)
    goto out;
  if (b64url_decode(dot2 + 1, slen, &sig, &siglen) < 0) {
    sig = NULL;
    goto out;
  }
  payload = decode_json_part(dot1 + 1, plen);
  if (!payload)
    goto out;

  /* The configured algorithm is the only acceptable one: this is what stops
   * "none" and the HS256-with-the-RSA-public-key confusion. */
  want_alg = alg_name(key->alg);
  alg = json_object_get(header, "alg");
  if (!want_alg || !string_equals(alg, want_alg)) {
    r = WR_JWT_BAD_ALG;
    goto out;
  }
  /* Extensions we do not implement must not be silently ignored (RFC 7515
   * §4.1.11), and we implement none. */
  if (json_object_get(header, "crit")) {
    r = WR_JWT_MALFORMED;
    goto out;
  }

  switch (key->alg) {
  case WR_JWT_HS256:
    r = verify_hs256(key, token, (size_t)(dot2 - token), sig, siglen);
    break;
  case WR_JWT_RS256:
    r = verify_rs256(key->pkey, token, (size_t)(dot2 - token), sig, siglen);
    break;
  case WR_JWT_ES256:
    r = verify_es256(key->pkey, token, (size_t)(dot2 - token), sig, siglen);
    break;
  default:
    r = WR_JWT_BAD_ALG;
  }
  if (r != WR_JWT_OK)
    goto out;

  r = check_claims(payload, rules, now, user, usercap, exp);
out:
  free(sig);
  json_decref(header);
  json_decref(payload);
  return r;
}

static char *b64url_json(const json_t *v) {
  char *text = json_dumps(v, JSON_COMPACT);
  char *enc;

  if (!text)
    return NULL;
  enc = b64url_encode((const uint8_t *)text, strlen(text));
  free(text);
  return enc;
}

char *wr_jwt_sign_hs256(const uint8_t *secret, size_t secret_len, const wr_jwt_rules_t *rules,
                        const char *user, int64_t now, int64_t ttl_s) {
  json_t *header = NULL, *payload = NULL;
  char *h = NULL, *p = NULL, *s = NULL, *token = NULL;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  size_t hl, pl, sl;
  const char *claim = rules && rules->user_claim ? rules->user_claim : "sub";
  int64_t expires;

  if (!secret || secret_len == 0 || secret_len > INT32_MAX || !user)
    return NULL;
  if (__builtin_add_overflow(now, ttl_s, &expires))
    expires = ttl_s > 0 ? INT64_MAX : INT64_MIN;
  header = json_pack("{s:s,s:s}", "alg", "HS256", "typ", "JWT");
  payload =
      json_pack("{s:s,s:I,s:I}", claim, user, "iat", (json_int_t)now, "exp", (json_int_t)expires);
  if (!header || !payload)
    goto out;
  if (rules && rules->issuer && json_object_set_new(payload, "iss", json_string(rules->issuer)))
    goto out;
  if (rules && rules->audience && json_object_set_new(payload, "aud", json_string(rules->audience)))
    goto out;

  h = b64url_json(header);
  p = b64url_json(payload);
  if (!h || !p)
    goto out;
  hl = strlen(h);
  pl = strlen(p);
  token = malloc(hl + 1 + pl + 1 + 44);
  if (!token)
    goto out;
  memcpy(token, h, hl);
  token[hl] = '.';
  memcpy(token + hl + 1, p, pl);
  if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)token, hl + 1 + pl, mac,
            &maclen))
    goto fail;
  s = b64url_encode(mac, maclen);
  if (!s)
    goto fail;
  sl = strlen(s);
  token[hl + 1 + pl] = '.';
  memcpy(token + hl + 1 + pl + 1, s, sl + 1);
  goto out;
fail:
  free(token);
  token = NULL;
out:
  free(s);
  free(h);
  free(p);
  json_decref(header);
  json_decref(payload);
  return token;
}
