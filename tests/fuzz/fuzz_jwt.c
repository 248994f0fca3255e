/* libFuzzer target for ws/jwt.c. Mode 0 verifies the input as a token; mode 1
 * treats the input as a claims payload and signs it first, so the fuzzer
 * reaches the claim checks that a forged signature never would. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ws/jwt_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SECRET[] = "fuzz-secret";

static size_t b64url(const uint8_t *in, size_t n, char *out) {
  int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
  while (len > 0 && out[len - 1] == '=')
    len--;
  for (int i = 0; i < len; i++)
    out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
  out[len] = '\0';
  return (size_t)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  wr_jwt_key_t key = {
      .alg = WR_JWT_HS256, .secret = (const uint8_t *)SECRET, .secret_len = sizeof(SECRET) - 1};
  wr_jwt_rules_t rules = {.issuer = NULL, .audience = NULL, .leeway_s = 30, .user_claim = "sub"};
  char user[257];
  int64_t exp;

  if (size < 1 || size > 12000)
    return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  if (mode & 2) {
    rules.issuer = "iss";
    rules.audience = "aud";
  }
  rules.require_exp = (mode & 16) != 0;
  if (mode & 4)
    key.alg = (mode & 8) ? WR_JWT_ES256 : WR_JWT_RS256; /* no pkey: nothing may verify */

  wr_jwt_result_t r;
  if (mode & 1) {
    static const char hdr[] = "{\"alg\":\"HS256\"}";
    char *tok = malloc(size * 2 + 128);
    size_t off = b64url((const uint8_t *)hdr, sizeof(hdr) - 1, tok);
    tok[off++] = '.';
    off += b64url(data, size, tok + off);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), SECRET, (int)sizeof(SECRET) - 1, (const unsigned char *)tok, off, mac,
         &maclen);
    tok[off++] = '.';
    off += b64url(mac, maclen, tok + off);
    r = wr_jwt_verify(tok, off, &key, &rules, 1800000000, user, sizeof(user), &exp);
    free(tok);
  } else {
    r = wr_jwt_verify((const char *)data, size, &key, &rules, 1800000000, user, sizeof(user), &exp);
  }
  if (r == WR_JWT_OK) {
    size_t n = strnlen(user, sizeof(user));
    if (n == 0 || n > 256 || key.alg != WR_JWT_HS256)
      abort();
    /* A token accepted while exp is required has an exp within the leeway
     * of now or later (reported rounded down). */
    if (rules.require_exp && exp < 1800000000 - 30)
      abort();
  }
  if (!wr_jwt_result_str(r))
    abort();
  return 0;
}
