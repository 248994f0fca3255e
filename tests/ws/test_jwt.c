/* Tests for ws/jwt.c: tokens are built by hand here (header and payload JSON,
 * then signed with OpenSSL directly) so the verifier is checked against an
 * independent encoder, not only against its own minting code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "ws/jwt_int.h"

#define NOW 1800000000
static const char SECRET[] = "correct horse battery staple";

typedef enum { SIG_HS256, SIG_HS512, SIG_RS256, SIG_ES256, SIG_NONE } sig_kind_t;

static void b64url(const uint8_t *in, size_t n, char *out) {
  int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
  while (len > 0 && out[len - 1] == '=')
    len--;
  out[len] = '\0';
  for (int i = 0; i < len; i++) {
    if (out[i] == '+')
      out[i] = '-';
    else if (out[i] == '/')
      out[i] = '_';
  }
}

static size_t pkey_sign(EVP_PKEY *pkey, const char *in, size_t n, uint8_t *sig) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  size_t siglen = 1024;
  assert_non_null(ctx);
  assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey), 1);
  assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)in, n), 1);
  EVP_MD_CTX_free(ctx);
  return siglen;
}

/* Builds header.payload.signature; the secret is used by HS kinds, pkey by
 * RS/ES. Returns a malloc'd string. */
static char *make_token(const char *header, const char *payload, sig_kind_t kind,
                        const void *secret, size_t secret_len, EVP_PKEY *pkey) {
  char *tok = malloc(16384);
  uint8_t sig[1024];
  size_t siglen = 0;
  unsigned int maclen = 0;
  assert_non_null(tok);

  b64url((const uint8_t *)header, strlen(header), tok);
  strcat(tok, ".");
  b64url((const uint8_t *)payload, strlen(payload), tok + strlen(tok));
  size_t inlen = strlen(tok);

  switch (kind) {
  case SIG_HS256:
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)tok, inlen, sig, &maclen);
    siglen = maclen;
    break;
  case SIG_HS512:
    HMAC(EVP_sha512(), secret, (int)secret_len, (const unsigned char *)tok, inlen, sig, &maclen);
    siglen = maclen;
    break;
  case SIG_RS256:
    siglen = pkey_sign(pkey, tok, inlen, sig);
    break;
  case SIG_ES256: {
    uint8_t der[256];
    size_t derlen = pkey_sign(pkey, tok, inlen, der);
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    assert_non_null(es);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
    ECDSA_SIG_free(es);
    siglen = 64;
    break;
  }
  case SIG_NONE:
    siglen = 0;
    break;
  }
  strcat(tok, ".");
  b64url(sig, siglen, tok + strlen(tok));
  return tok;
}

static char *hs(const char *payload) {
  return make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SIG_HS256, SECRET,
                    strlen(SECRET), NULL);
}

static wr_jwt_key_t hs_key(void) {
  wr_jwt_key_t k = {
      .alg = WR_JWT_HS256, .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET)};
  return k;
}

/* exp is not required here so the tests of the other claims can use short
 * payloads; test_missing_exp covers rules.require_exp (on in production:
 * auth.require_exp defaults to true). */
static wr_jwt_rules_t default_rules(void) {
  wr_jwt_rules_t r = {
      .issuer = NULL, .audience = NULL, .leeway_s = 30, .user_claim = "sub", .require_exp = false};
  return r;
}

/* Verifies tok with the HS256 key and the given rules; user is written to
 * user_out when non-NULL. */
static wr_jwt_result_t check_with(const char *tok, const wr_jwt_key_t *key,
                                  const wr_jwt_rules_t *rules, char *user_out, int64_t *exp) {
  char user[257];
  memset(user, 'Z', sizeof(user));
  wr_jwt_result_t r = wr_jwt_verify(tok, strlen(tok), key, rules, NOW, user, sizeof(user), exp);
  if (user_out && r == WR_JWT_OK)
    memcpy(user_out, user, sizeof(user));
  return r;
}

static wr_jwt_result_t check_hs(const char *payload, const wr_jwt_rules_t *rules, char *user) {
  char *tok = hs(payload);
  wr_jwt_key_t k = hs_key();
  wr_jwt_result_t r = check_with(tok, &k, rules, user, NULL);
  free(tok);
  return r;
}

static void test_valid(void **state) {
  (void)state;
  char *tok = hs("{\"sub\":\"1001\",\"exp\":1800000100,\"iat\":1800000000}");
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  char user[257];
  int64_t exp = -1;
  assert_int_equal(check_with(tok, &k, &rules, user, &exp), WR_JWT_OK);
  assert_string_equal(user, "1001");
  assert_int_equal(exp, 1800000100);
  free(tok);

  /* No exp at all, when exp is not required: accepted, exp reported as 0. */
  tok = hs("{\"sub\":\"u\"}");
  exp = -1;
  assert_int_equal(check_with(tok, &k, &rules, user, &exp), WR_JWT_OK);
  assert_int_equal(exp, 0);
  free(tok);
}

static void test_expired(void **state) {
  (void)state;
  wr_jwt_rules_t rules = default_rules();
  rules.leeway_s = 0;
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1799999999}", &rules, NULL), WR_JWT_EXPIRED);
  /* exp == now is already expired (exp + leeway <= now). */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1800000000}", &rules, NULL), WR_JWT_EXPIRED);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1800000001}", &rules, NULL), WR_JWT_OK);
  /* Real-valued exp. */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1800000000.5}", &rules, NULL), WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1799999999.5}", &rules, NULL), WR_JWT_EXPIRED);
  /* Hostile huge exp neither overflows nor is refused. */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":9223372036854775807}", &rules, NULL),
                   WR_JWT_OK);
  /* exp of the wrong type. */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":\"1900000000\"}", &rules, NULL),
                   WR_JWT_MALFORMED);
}

/* Time claims are JSON numbers of any size; converting one to int64_t out of
 * range would be undefined, so exp is reported saturated and the checks run
 * in doubles (this test runs under UBSan in the ASan build). */
static void test_time_claims_out_of_range(void **state) {
  (void)state;
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  static const struct {
    const char *payload;
    wr_jwt_result_t r;
    int64_t exp;
  } cases[] = {
      {"{\"sub\":\"a\",\"exp\":9223372036854775807}", WR_JWT_OK, INT64_MAX},
      {"{\"sub\":\"a\",\"exp\":1e19}", WR_JWT_OK, INT64_MAX},
      {"{\"sub\":\"a\",\"exp\":1e308}", WR_JWT_OK, INT64_MAX},
      /* The largest double below 2^63 converts exactly. */
      {"{\"sub\":\"a\",\"exp\":9223372036854774784}", WR_JWT_OK, 9223372036854774784},
      {"{\"sub\":\"a\",\"exp\":1800000100.9}", WR_JWT_OK, 1800000100},
      {"{\"sub\":\"a\",\"exp\":-1e19}", WR_JWT_EXPIRED, 0},
      {"{\"sub\":\"a\",\"exp\":-9223372036854775808}", WR_JWT_EXPIRED, 0},
      {"{\"sub\":\"a\",\"exp\":1800000100,\"nbf\":-1e308}", WR_JWT_OK, 1800000100},
      {"{\"sub\":\"a\",\"exp\":1800000100,\"nbf\":1e308}", WR_JWT_NOT_YET_VALID, 0},
      {"{\"sub\":\"a\",\"exp\":1800000100,\"nbf\":9223372036854775807}", WR_JWT_NOT_YET_VALID, 0},
      {"{\"sub\":\"a\",\"exp\":1800000100,\"iat\":1e308}", WR_JWT_OK, 1800000100},
      /* jansson refuses a number it cannot hold. */
      {"{\"sub\":\"a\",\"exp\":1e400}", WR_JWT_MALFORMED, 0},
  };
  rules.leeway_s = 3600;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *tok = hs(cases[i].payload);
    int64_t exp = -1;
    wr_jwt_result_t r = check_with(tok, &k, &rules, NULL, &exp);
    free(tok);
    if (r != cases[i].r)
      fail_msg("%s: result %s, expected %s", cases[i].payload, wr_jwt_result_str(r),
               wr_jwt_result_str(cases[i].r));
    if (r == WR_JWT_OK && exp != cases[i].exp)
      fail_msg("%s: exp %lld, expected %lld", cases[i].payload, (long long)exp,
               (long long)cases[i].exp);
  }
}

static void test_missing_exp(void **state) {
  (void)state;
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  int64_t exp = -1;
  rules.require_exp = true;
  char *tok = hs("{\"sub\":\"u\",\"iat\":1800000000}");
  assert_int_equal(check_with(tok, &k, &rules, NULL, &exp), WR_JWT_MISSING_EXP);
  assert_string_equal(wr_jwt_result_str(WR_JWT_MISSING_EXP), "missing_exp");
  free(tok);
  /* exp: null is not a missing exp but a malformed one, as before. */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":null}", &rules, NULL), WR_JWT_MALFORMED);
  /* The signature is checked first: a forged token without exp is a forgery. */
  tok = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"a\"}", SIG_HS256, "other secret", 12, NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);
  /* With exp present nothing changes. */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1800000100}", &rules, NULL), WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1700000000}", &rules, NULL), WR_JWT_EXPIRED);
  /* The same token is accepted when the operator turned the rule off. */
  rules.require_exp = false;
  assert_int_equal(check_hs("{\"sub\":\"u\",\"iat\":1800000000}", &rules, NULL), WR_JWT_OK);
  /* Tokens warren mints always carry exp. */
  rules.require_exp = true;
  tok = wr_jwt_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), &rules, "u", NOW, 60);
  assert_non_null(tok);
  assert_int_equal(check_with(tok, &k, &rules, NULL, &exp), WR_JWT_OK);
  assert_int_equal(exp, NOW + 60);
  free(tok);
}

static void test_expired_within_leeway(void **state) {
  (void)state;
  wr_jwt_rules_t rules = default_rules(); /* leeway 30 */
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1799999980}", &rules, NULL), WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1799999971}", &rules, NULL), WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"exp\":1799999970}", &rules, NULL), WR_JWT_EXPIRED);
}

static void test_nbf(void **state) {
  (void)state;
  wr_jwt_rules_t rules = default_rules();
  assert_int_equal(check_hs("{\"sub\":\"a\",\"nbf\":1800000031}", &rules, NULL),
                   WR_JWT_NOT_YET_VALID);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"nbf\":1800003600}", &rules, NULL),
                   WR_JWT_NOT_YET_VALID);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"nbf\":1800000030}", &rules, NULL), WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"nbf\":1700000000}", &rules, NULL), WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"nbf\":null}", &rules, NULL), WR_JWT_MALFORMED);
}

static void test_bad_signature(void **state) {
  (void)state;
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  char *tok =
      make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"a\"}", SIG_HS256, "other secret", 12, NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  /* Signature of a different payload spliced onto this one. */
  char *a = hs("{\"sub\":\"alice\"}");
  char *b = hs("{\"sub\":\"admin\"}");
  char *sa = strrchr(a, '.'), *sb = strrchr(b, '.');
  assert_int_equal(strlen(sa), strlen(sb));
  memcpy(sb, sa, strlen(sa));
  assert_int_equal(check_with(b, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(a);
  free(b);

  /* Truncated signature (still valid base64url) and empty signature. */
  tok = hs("{\"sub\":\"a\"}");
  size_t n = strlen(tok);
  tok[n - 3] = '\0'; /* 40 characters: still canonical base64url */
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  *(strrchr(tok, '.') + 1) = '\0';
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  /* An empty configured secret verifies nothing. */
  tok = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"a\"}", SIG_HS256, "", 0, NULL);
  wr_jwt_key_t empty = {.alg = WR_JWT_HS256, .secret = (const uint8_t *)"", .secret_len = 0};
  assert_int_equal(check_with(tok, &empty, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);
}

static void test_alg_none_and_others(void **state) {
  (void)state;
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  struct {
    const char *header;
    sig_kind_t kind;
  } cases[] = {
      {"{\"alg\":\"none\"}", SIG_NONE},     {"{\"alg\":\"none\"}", SIG_HS256},
      {"{\"alg\":\"None\"}", SIG_NONE},     {"{\"alg\":\"HS512\"}", SIG_HS512},
      {"{\"alg\":\"HS512\"}", SIG_HS256},   {"{\"alg\":\"RS256\"}", SIG_HS256},
      {"{\"alg\":\"hs256\"}", SIG_HS256},   {"{\"alg\":\"HS256 \"}", SIG_HS256},
      {"{\"typ\":\"JWT\"}", SIG_HS256},     {"{\"alg\":null}", SIG_HS256},
      {"{\"alg\":[\"HS256\"]}", SIG_HS256},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *tok =
        make_token(cases[i].header, "{\"sub\":\"a\"}", cases[i].kind, SECRET, strlen(SECRET), NULL);
    assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_ALG);
    free(tok);
  }
  /* Header "crit" extensions are not understood, hence refused. */
  char *tok = make_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{\"sub\":\"a\"}", SIG_HS256,
                         SECRET, strlen(SECRET), NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_MALFORMED);
  free(tok);
}

static char *pubkey_pem(EVP_PKEY *pkey) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data, *copy;
  assert_non_null(bio);
  assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
  long n = BIO_get_mem_data(bio, &data);
  copy = malloc((size_t)n + 1);
  memcpy(copy, data, (size_t)n);
  copy[n] = '\0';
  BIO_free(bio);
  return copy;
}

static void test_rs256(void **state) {
  (void)state;
  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  EVP_PKEY *rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  assert_non_null(rsa);
  assert_non_null(rsa2);
  assert_non_null(ec);
  wr_jwt_key_t k = {.alg = WR_JWT_RS256, .pkey = rsa};
  wr_jwt_rules_t rules = default_rules();
  char user[257];

  char *tok = make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"r1\"}", SIG_RS256, NULL, 0, rsa);
  assert_int_equal(check_with(tok, &k, &rules, user, NULL), WR_JWT_OK);
  assert_string_equal(user, "r1");
  free(tok);

  tok = make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"r1\"}", SIG_RS256, NULL, 0, rsa2);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  /* The classic confusion: HS256 keyed with the server's public key PEM. */
  char *pem = pubkey_pem(rsa);
  tok = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"r1\"}", SIG_HS256, pem, strlen(pem), NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_ALG);
  free(tok);
  /* Same MAC but claiming RS256: the signature is not an RSA one. */
  tok = make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"r1\"}", SIG_HS256, pem, strlen(pem), NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);
  free(pem);

  /* Configured RS256 with an EC key: nothing verifies. */
  wr_jwt_key_t wrong = {.alg = WR_JWT_RS256, .pkey = ec};
  tok = make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"r1\"}", SIG_RS256, NULL, 0, rsa);
  assert_int_equal(check_with(tok, &wrong, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  EVP_PKEY_free(rsa);
  EVP_PKEY_free(rsa2);
  EVP_PKEY_free(ec);
}

static void test_es256(void **state) {
  (void)state;
  EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  assert_non_null(ec);
  assert_non_null(ec2);
  assert_non_null(p384);
  wr_jwt_key_t k = {.alg = WR_JWT_ES256, .pkey = ec};
  wr_jwt_rules_t rules = default_rules();
  char user[257];

  /* ECDSA signatures vary; sign several times so short r/s values (leading
   * zero bytes) are exercised now and then. */
  for (int i = 0; i < 20; i++) {
    char *tok = make_token("{\"alg\":\"ES256\"}", "{\"sub\":\"e1\"}", SIG_ES256, NULL, 0, ec);
    assert_int_equal(check_with(tok, &k, &rules, user, NULL), WR_JWT_OK);
    assert_string_equal(user, "e1");
    free(tok);
  }
  char *tok = make_token("{\"alg\":\"ES256\"}", "{\"sub\":\"e1\"}", SIG_ES256, NULL, 0, ec2);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  /* A DER signature (what OpenSSL emits) is not the JOSE form. */
  tok = make_token("{\"alg\":\"ES256\"}", "{\"sub\":\"e1\"}", SIG_RS256, NULL, 0, ec);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  tok = make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"e1\"}", SIG_ES256, NULL, 0, ec);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_BAD_ALG);
  free(tok);

  /* ES256 means P-256: a P-384 key is refused. */
  wr_jwt_key_t k384 = {.alg = WR_JWT_ES256, .pkey = p384};
  tok = make_token("{\"alg\":\"ES256\"}", "{\"sub\":\"e1\"}", SIG_ES256, NULL, 0, ec);
  assert_int_equal(check_with(tok, &k384, &rules, NULL, NULL), WR_JWT_BAD_SIGNATURE);
  free(tok);

  EVP_PKEY_free(ec);
  EVP_PKEY_free(ec2);
  EVP_PKEY_free(p384);
}

static void test_issuer_audience(void **state) {
  (void)state;
  wr_jwt_rules_t rules = default_rules();
  rules.issuer = "https://auth.example";
  rules.audience = "warren";
  assert_int_equal(
      check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example\",\"aud\":\"warren\"}", &rules, NULL),
      WR_JWT_OK);
  assert_int_equal(
      check_hs("{\"sub\":\"a\",\"iss\":\"https://evil.example\",\"aud\":\"warren\"}", &rules, NULL),
      WR_JWT_BAD_ISSUER);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"aud\":\"warren\"}", &rules, NULL), WR_JWT_BAD_ISSUER);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example/\",\"aud\":\"warren\"}",
                            &rules, NULL),
                   WR_JWT_BAD_ISSUER);
  assert_int_equal(
      check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example\",\"aud\":\"other\"}", &rules, NULL),
      WR_JWT_BAD_AUDIENCE);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example\"}", &rules, NULL),
                   WR_JWT_BAD_AUDIENCE);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example\","
                            "\"aud\":[\"billing\",\"warren\"]}",
                            &rules, NULL),
                   WR_JWT_OK);
  assert_int_equal(check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example\","
                            "\"aud\":[\"billing\",\"warrenx\",1]}",
                            &rules, NULL),
                   WR_JWT_BAD_AUDIENCE);
  assert_int_equal(
      check_hs("{\"sub\":\"a\",\"iss\":\"https://auth.example\",\"aud\":[]}", &rules, NULL),
      WR_JWT_BAD_AUDIENCE);
  /* Unchecked when not configured. */
  rules.issuer = rules.audience = NULL;
  assert_int_equal(check_hs("{\"sub\":\"a\",\"iss\":5,\"aud\":{}}", &rules, NULL), WR_JWT_OK);
}

static void test_user_claim(void **state) {
  (void)state;
  wr_jwt_rules_t rules = default_rules();
  char user[257];
  assert_int_equal(check_hs("{\"sub\":1001}", &rules, user), WR_JWT_OK);
  assert_string_equal(user, "1001");
  assert_int_equal(check_hs("{\"sub\":-7}", &rules, user), WR_JWT_OK);
  assert_string_equal(user, "-7");
  assert_int_equal(check_hs("{\"name\":\"x\"}", &rules, NULL), WR_JWT_NO_USER);
  assert_int_equal(check_hs("{\"sub\":\"\"}", &rules, NULL), WR_JWT_NO_USER);
  assert_int_equal(check_hs("{\"sub\":1.5}", &rules, NULL), WR_JWT_NO_USER);
  assert_int_equal(check_hs("{\"sub\":null}", &rules, NULL), WR_JWT_NO_USER);
  assert_int_equal(check_hs("{\"sub\":[\"a\"]}", &rules, NULL), WR_JWT_NO_USER);
  assert_int_equal(check_hs("{\"sub\":\"a\\nb\"}", &rules, NULL), WR_JWT_NO_USER);
  assert_int_equal(check_hs("{\"sub\":\"caf\\u00e9\"}", &rules, user), WR_JWT_OK);
  assert_string_equal(user, "caf\xc3\xa9");

  char payload[600], id[300];
  memset(id, 'u', 256);
  id[256] = '\0';
  snprintf(payload, sizeof(payload), "{\"sub\":\"%s\"}", id);
  assert_int_equal(check_hs(payload, &rules, user), WR_JWT_OK);
  assert_string_equal(user, id);
  id[256] = 'u';
  id[257] = '\0';
  snprintf(payload, sizeof(payload), "{\"sub\":\"%s\"}", id);
  assert_int_equal(check_hs(payload, &rules, NULL), WR_JWT_NO_USER);

  rules.user_claim = "uid";
  assert_int_equal(check_hs("{\"sub\":\"a\",\"uid\":\"b\"}", &rules, user), WR_JWT_OK);
  assert_string_equal(user, "b");
  assert_int_equal(check_hs("{\"sub\":\"a\"}", &rules, NULL), WR_JWT_NO_USER);
}

static void test_malformed(void **state) {
  (void)state;
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  const char *bad[] = {
      "",
      "abc",
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0",       /* two parts */
      "eyJhbGciOiJIUzI1NiJ9..sig",                  /* empty payload */
      ".eyJzdWIiOiJhIn0.sig",                       /* empty header */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.a.b",   /* four parts */
      "eyJhbGciOiJIUzI1NiJ9=.eyJzdWIiOiJhIn0.AAAA", /* '=' inside */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0=.AAAA", /* padded payload */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJh!n0.AAAA",  /* invalid char */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0+.AAAA", /* '+' is not base64url */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0A.AAAA", /* length % 4 == 1 */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.A",     /* signature length % 4 == 1 */
      "eyJhbGciOiJIUzI1NiJ9 .eyJzdWIiOiJhIn0.AAAA", /* space */
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn1.AAAA",  /* non-canonical last char */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char user[257];
    assert_int_equal(
        wr_jwt_verify(bad[i], strlen(bad[i]), &k, &rules, NOW, user, sizeof(user), NULL),
        WR_JWT_MALFORMED);
  }

  /* Properly signed, but the JSON inside is not an acceptable object. */
  const char *payloads[] = {"{\"sub\":\"a\"",
                            "[\"sub\",\"a\"]",
                            "\"a\"",
                            "42",
                            "{\"sub\":\"a\",\"sub\":\"b\"}",
                            "{\"sub\":\"a\"} x",
                            "",
                            "{\"sub\":\"\xff\"}"};
  for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++)
    assert_int_equal(check_hs(payloads[i], &rules, NULL), WR_JWT_MALFORMED);
  char *tok =
      make_token("{\"alg\":\"HS256\"", "{\"sub\":\"a\"}", SIG_HS256, SECRET, strlen(SECRET), NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_MALFORMED);
  free(tok);
  tok = make_token("[\"HS256\"]", "{\"sub\":\"a\"}", SIG_HS256, SECRET, strlen(SECRET), NULL);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_MALFORMED);
  free(tok);

  /* Over the 8192-byte cap, even when validly signed. */
  char *big = malloc(7000);
  strcpy(big, "{\"sub\":\"a\",\"pad\":\"");
  memset(big + strlen(big), 'p', 6500);
  strcpy(big + 18 + 6500, "\"}");
  tok = hs(big);
  assert_true(strlen(tok) > 8192);
  assert_int_equal(check_with(tok, &k, &rules, NULL, NULL), WR_JWT_MALFORMED);
  free(tok);
  free(big);

  /* The length argument is honoured: bytes past it are never read. */
  tok = hs("{\"sub\":\"a\"}");
  char user[257];
  size_t n = strlen(tok);
  char *copy = malloc(n); /* no terminator */
  memcpy(copy, tok, n);
  assert_int_equal(wr_jwt_verify(copy, n, &k, &rules, NOW, user, sizeof(user), NULL), WR_JWT_OK);
  free(copy);
  free(tok);
}

static void test_prefixes_and_mutations(void **state) {
  (void)state;
  wr_jwt_key_t k = hs_key();
  wr_jwt_rules_t rules = default_rules();
  char *tok = hs("{\"sub\":\"1001\",\"exp\":1800000100}");
  size_t n = strlen(tok);
  char user[257];

  for (size_t i = 0; i < n; i++) {
    char *p = malloc(i + 1);
    memcpy(p, tok, i);
    wr_jwt_result_t r = wr_jwt_verify(p, i, &k, &rules, NOW, user, sizeof(user), NULL);
    assert_int_not_equal(r, WR_JWT_OK);
    free(p);
  }
  assert_int_equal(wr_jwt_verify(tok, n, &k, &rules, NOW, user, sizeof(user), NULL), WR_JWT_OK);

  /* Changing any single character must never leave a valid token. */
  for (size_t i = 0; i < n; i++) {
    char saved = tok[i];
    tok[i] = saved == 'A' ? 'B' : 'A';
    assert_int_not_equal(wr_jwt_verify(tok, n, &k, &rules, NOW, user, sizeof(user), NULL),
                         WR_JWT_OK);
    tok[i] = saved;
  }
  free(tok);
}

static void test_sign_round_trip(void **state) {
  (void)state;
  wr_jwt_rules_t rules = {.issuer = "iss1", .audience = "aud1", .leeway_s = 0, .user_claim = "sub"};
  wr_jwt_key_t k = hs_key();
  char user[257];
  int64_t exp = 0;

  char *tok =
      wr_jwt_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), &rules, "user-42", NOW, 3600);
  assert_non_null(tok);
  assert_int_equal(wr_jwt_verify(tok, strlen(tok), &k, &rules, NOW, user, sizeof(user), &exp),
                   WR_JWT_OK);
  assert_string_equal(user, "user-42");
  assert_int_equal(exp, NOW + 3600);
  /* After its lifetime it is refused. */
  assert_int_equal(
      wr_jwt_verify(tok, strlen(tok), &k, &rules, NOW + 3600, user, sizeof(user), NULL),
      WR_JWT_EXPIRED);
  /* iss/aud were written because the rules ask for them. */
  wr_jwt_rules_t other = rules;
  other.audience = "aud2";
  assert_int_equal(wr_jwt_verify(tok, strlen(tok), &k, &other, NOW, user, sizeof(user), NULL),
                   WR_JWT_BAD_AUDIENCE);
  /* The header is exactly what standard libraries emit. */
  assert_memory_equal(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37);
  free(tok);

  rules.user_claim = "uid";
  tok = wr_jwt_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), &rules, "u2", NOW, 60);
  assert_non_null(tok);
  assert_int_equal(wr_jwt_verify(tok, strlen(tok), &k, &rules, NOW, user, sizeof(user), NULL),
                   WR_JWT_OK);
  assert_string_equal(user, "u2");
  free(tok);

  assert_null(wr_jwt_sign_hs256((const uint8_t *)"", 0, &rules, "u", NOW, 60));
  assert_null(wr_jwt_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), &rules, NULL, NOW, 60));
}

static void test_result_str(void **state) {
  (void)state;
  assert_string_equal(wr_jwt_result_str(WR_JWT_OK), "ok");
  assert_string_equal(wr_jwt_result_str(WR_JWT_MALFORMED), "malformed");
  assert_string_equal(wr_jwt_result_str(WR_JWT_BAD_ALG), "bad_alg");
  assert_string_equal(wr_jwt_result_str(WR_JWT_BAD_SIGNATURE), "bad_signature");
  assert_string_equal(wr_jwt_result_str(WR_JWT_EXPIRED), "expired");
  assert_string_equal(wr_jwt_result_str(WR_JWT_NOT_YET_VALID), "not_yet_valid");
  assert_string_equal(wr_jwt_result_str(WR_JWT_BAD_ISSUER), "bad_issuer");
  assert_string_equal(wr_jwt_result_str(WR_JWT_BAD_AUDIENCE), "bad_audience");
  assert_string_equal(wr_jwt_result_str(WR_JWT_NO_USER), "no_user");
  assert_string_equal(wr_jwt_result_str(WR_JWT_MISSING_EXP), "missing_exp");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_expired),
      cmocka_unit_test(test_expired_within_leeway),
      cmocka_unit_test(test_missing_exp),
      cmocka_unit_test(test_time_claims_out_of_range),
      cmocka_unit_test(test_nbf),
      cmocka_unit_test(test_bad_signature),
      cmocka_unit_test(test_alg_none_and_others),
      cmocka_unit_test(test_rs256),
      cmocka_unit_test(test_es256),
      cmocka_unit_test(test_issuer_audience),
      cmocka_unit_test(test_user_claim),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_prefixes_and_mutations),
      cmocka_unit_test(test_sign_round_trip),
      cmocka_unit_test(test_result_str),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
