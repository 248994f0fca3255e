/* Handshake authentication with public keys: the configuration loads
 * auth.jwt_public_key_file (RSA -> RS256, EC P-256 -> ES256, anything else is
 * a start-up error), and wr_ws_auth_check verifies tokens with it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "config/config.h"
#include "ws/auth_int.h"
#include "ws/jwt_int.h"

static char tmpdir[64];

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/warren-test-auth-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to tmpdir/name and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text, size_t n) {
  static char path[128];
  snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, n, f), n);
  fclose(f);
  return path;
}

typedef int (*pem_writer_t)(BIO *, EVP_PKEY *);

static int write_pub(BIO *b, EVP_PKEY *k) {
  return PEM_write_bio_PUBKEY(b, k);
}

static int write_priv(BIO *b, EVP_PKEY *k) {
  return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static const char *write_key(const char *name, EVP_PKEY *pkey, pem_writer_t writer) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data;
  assert_non_null(bio);
  assert_int_equal(writer(bio, pkey), 1);
  long n = BIO_get_mem_data(bio, &data);
  const char *path = write_file(name, data, (size_t)n);
  BIO_free(bio);
  return path;
}

static void b64url(const uint8_t *in, size_t n, char *out) {
  int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
  while (len > 0 && out[len - 1] == '=')
    len--;
  out[len] = '\0';
  for (int i = 0; i < len; i++)
    out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

/* Signs {"alg":alg}.payload with pkey (RS256, ES256 in JOSE r||s form) or,
 * when pkey is NULL, with HMAC-SHA256 under secret. Returns a static token. */
static const char *sign(const char *alg, const char *payload, EVP_PKEY *pkey, const char *secret) {
  static char tok[8192];
  char header[64], h64[128], p64[1024], s64[1024];
  uint8_t sig[1024];
  size_t siglen = sizeof(sig);

  snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
  b64url((const uint8_t *)header, strlen(header), h64);
  b64url((const uint8_t *)payload, strlen(payload), p64);
  int n = snprintf(tok, sizeof(tok), "%s.%s", h64, p64);
  if (pkey == NULL) {
    unsigned int maclen = 0;
    assert_non_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)tok,
                         (size_t)n, sig, &maclen));
    siglen = maclen;
  } else {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)tok, (size_t)n), 1);
    EVP_MD_CTX_free(ctx);
    if (EVP_PKEY_is_a(pkey, "EC")) {
      const unsigned char *p = sig;
      ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
      assert_non_null(es);
      memset(sig, 0, 64);
      BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
      ECDSA_SIG_free(es);
      siglen = 64;
    }
  }
  b64url(sig, siglen, s64);
  snprintf(tok + n, sizeof(tok) - (size_t)n, ".%s", s64);
  return tok;
}

/* Runs wr_ws_auth_check on a request carrying token as ?token=. */
static int check(const wr_config_t *cfg, const char *token, char *user, const char **error) {
  char query[8300];
  wr_ws_request_t req;
  int64_t exp = 0;
  memset(&req, 0, sizeof(req));
  snprintf(query, sizeof(query), "token=%s", token);
  req.path = "/ws";
  req.query = query;
  *error = NULL;
  return wr_ws_auth_check(&req, cfg, (int64_t)time(NULL), user, &exp, error);
}

static int set_keyfile(wr_config_t *cfg, const char *path, char *err, size_t errlen) {
  return wr_config_set(cfg, "auth", "jwt_public_key_file", path, err, errlen);
}

static void payload_for(char *out, size_t cap, const char *user) {
  snprintf(out, cap, "{\"sub\":\"%s\",\"exp\":%lld}", user, (long long)time(NULL) + 600);
}

static void test_rsa_key_pins_rs256(void **state) {
  (void)state;
  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  wr_config_t cfg;
  char err[512], user[WR_WS_USER_MAX], payload[256];
  const char *error;
  wr_jwt_key_t key;

  assert_int_equal(wr_config_init(&cfg), 0);
  const char *path = write_key("rsa.pem", rsa, write_pub);
  assert_int_equal(set_keyfile(&cfg, path, err, sizeof(err)), 0);
  assert_int_equal(wr_config_validate(&cfg, err, sizeof(err)), 0);
  assert_non_null(cfg.jwt_pkey);
  assert_int_equal(wr_ws_auth_key(&cfg, &key), 0);
  assert_int_equal(key.alg, WR_JWT_RS256);

  payload_for(payload, sizeof(payload), "alice");
  assert_int_equal(check(&cfg, sign("RS256", payload, rsa, NULL), user, &error), 0);
  assert_string_equal(user, "alice");
  /* Another key, another algorithm, or HS256 keyed with the public PEM
   * itself (the classic confusion attack) are all refused. */
  assert_int_equal(check(&cfg, sign("RS256", payload, other, NULL), user, &error), 401);
  assert_string_equal(error, "bad_signature");
  FILE *f = fopen(path, "r");
  char pem[4096] = "";
  assert_non_null(f);
  pem[fread(pem, 1, sizeof(pem) - 1, f)] = '\0';
  fclose(f);
  assert_int_equal(check(&cfg, sign("HS256", payload, NULL, pem), user, &error), 401);
  assert_string_equal(error, "bad_alg");
  assert_int_equal(check(&cfg, sign("ES256", payload, rsa, NULL), user, &error), 401);
  assert_string_equal(error, "bad_alg");

  char desc[512];
  wr_ws_auth_describe(&cfg, desc, sizeof(desc));
  assert_non_null(strstr(desc, "RS256"));
  assert_non_null(strstr(desc, "2048-bit RSA"));

  wr_config_close(&cfg);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(other);
}

static void test_ec_key_pins_es256(void **state) {
  (void)state;
  EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  wr_config_t cfg;
  char err[512], user[WR_WS_USER_MAX], payload[256];
  const char *error;
  wr_jwt_key_t key;

  assert_int_equal(wr_config_init(&cfg), 0);
  assert_int_equal(set_keyfile(&cfg, write_key("ec.pem", ec, write_pub), err, sizeof(err)), 0);
  assert_int_equal(wr_ws_auth_key(&cfg, &key), 0);
  assert_int_equal(key.alg, WR_JWT_ES256);
  payload_for(payload, sizeof(payload), "bob");
  assert_int_equal(check(&cfg, sign("ES256", payload, ec, NULL), user, &error), 0);
  assert_string_equal(user, "bob");
  assert_int_equal(check(&cfg, sign("ES256", payload, ec2, NULL), user, &error), 401);
  assert_string_equal(error, "bad_signature");
  assert_int_equal(check(&cfg, sign("RS256", payload, ec, NULL), user, &error), 401);
  assert_string_equal(error, "bad_alg");

  /* A reload to another key replaces (and frees) the first one; an empty
   * value unsets it, and then nothing verifies. */
  assert_int_equal(set_keyfile(&cfg, write_key("ec2.pem", ec2, write_pub), err, sizeof(err)), 0);
  assert_int_equal(check(&cfg, sign("ES256", payload, ec2, NULL), user, &error), 0);
  assert_int_equal(check(&cfg, sign("ES256", payload, ec, NULL), user, &error), 401);
  assert_int_equal(set_keyfile(&cfg, "", err, sizeof(err)), 0);
  assert_null(cfg.jwt_pkey);
  assert_int_equal(wr_ws_auth_key(&cfg, &key), -ENOENT);
  assert_int_equal(check(&cfg, sign("ES256", payload, ec2, NULL), user, &error), 401);
  assert_string_equal(error, "no_key");

  wr_config_close(&cfg);
  EVP_PKEY_free(ec);
  EVP_PKEY_free(ec2);
}

static void test_certificate_is_accepted(void **state) {
  (void)state;
  EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  BIO *bio = BIO_new(BIO_s_mem());
  wr_config_t cfg;
  char err[512], user[WR_WS_USER_MAX], payload[256], *data;

  assert_non_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, ec);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"idp", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  assert_true(X509_sign(x, ec, EVP_sha256()) > 0);
  assert_int_equal(PEM_write_bio_X509(bio, x), 1);
  long n = BIO_get_mem_data(bio, &data);
  const char *path = write_file("cert.pem", data, (size_t)n);

  assert_int_equal(wr_config_init(&cfg), 0);
  assert_int_equal(set_keyfile(&cfg, path, err, sizeof(err)), 0);
  const char *error;
  payload_for(payload, sizeof(payload), "carol");
  assert_int_equal(check(&cfg, sign("ES256", payload, ec, NULL), user, &error), 0);
  wr_config_close(&cfg);
  BIO_free(bio);
  X509_free(x);
  EVP_PKEY_free(ec);
}

/* Every refused file leaves the previous value in place and explains why,
 * naming the key. */
static void expect_refused(const char *path, const char *why) {
  wr_config_t cfg;
  char err[512] = "";
  assert_int_equal(wr_config_init(&cfg), 0);
  assert_int_equal(set_keyfile(&cfg, path, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "auth.jwt_public_key_file"));
  if (strstr(err, why) == NULL)
    fail_msg("message \"%s\" does not say \"%s\"", err, why);
  assert_null(cfg.jwt_pkey);
  assert_null(cfg.jwt_public_key_file);
  wr_config_close(&cfg);
}

static void test_bad_files(void **state) {
  (void)state;
  char missing[128];
  snprintf(missing, sizeof(missing), "%s/nope.pem", tmpdir);
  expect_refused(missing, "No such file");
  expect_refused(write_file("garbage.pem", "hello\n", 6), "not a PEM public key");
  expect_refused(write_file("empty.pem", "", 0), "not a PEM public key");
  const char trunc[] = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
                       "-----END PUBLIC KEY-----\n";
  expect_refused(write_file("trunc.pem", trunc, sizeof(trunc) - 1), "not a PEM public key");

  EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  expect_refused(write_key("private.pem", ec, write_priv), "private key");
  EVP_PKEY_free(ec);
}

static void test_unsupported_key_types(void **state) {
  (void)state;
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  assert_non_null(p384);
  assert_non_null(ed);
  assert_non_null(rsa1024);
  expect_refused(write_key("p384.pem", p384, write_pub), "secp384r1");
  expect_refused(write_key("ed.pem", ed, write_pub), "ED25519");
  expect_refused(write_key("rsa1024.pem", rsa1024, write_pub), "1024-bit RSA");
  EVP_PKEY_free(p384);
  EVP_PKEY_free(ed);
  EVP_PKEY_free(rsa1024);
}

/* The whole load path (file, then validation) as main runs it: a bad key
 * stops it with a message naming the file's line and the key. */
static void test_load_from_ini(void **state) {
  (void)state;
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  char ini[512], keypath[128], err[512] = "";
  wr_config_t cfg;
  snprintf(keypath, sizeof(keypath), "%s", write_key("ed.pem", ed, write_pub));
  int n = snprintf(ini, sizeof(ini), "[auth]\njwt_public_key_file = %s\n", keypath);
  char inipath[128];
  snprintf(inipath, sizeof(inipath), "%s", write_file("w.ini", ini, (size_t)n));
  assert_int_equal(wr_config_load(&cfg, inipath, NULL, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "w.ini:2: auth.jwt_public_key_file"));
  wr_config_close(&cfg);
  EVP_PKEY_free(ed);
}

static void test_hs256_key(void **state) {
  (void)state;
  wr_config_t cfg;
  char err[256];
  wr_jwt_key_t key;
  assert_int_equal(wr_config_init(&cfg), 0);
  assert_int_equal(wr_ws_auth_key(&cfg, &key), -ENOENT);
  assert_int_equal(
      wr_config_set(&cfg, "auth", "jwt_secret", "0123456789abcdef0123", err, sizeof(err)), 0);
  assert_int_equal(wr_ws_auth_key(&cfg, &key), 0);
  assert_int_equal(key.alg, WR_JWT_HS256);
  char desc[512];
  wr_ws_auth_describe(&cfg, desc, sizeof(desc));
  assert_null(strstr(desc, "0123456789abcdef0123"));
  assert_non_null(strstr(desc, "no cookie: auth.cookie_name is unset"));
  assert_int_equal(wr_config_set(&cfg, "auth", "cookie_name", "sid", err, sizeof(err)), 0);
  wr_ws_auth_describe(&cfg, desc, sizeof(desc));
  assert_non_null(strstr(desc, "or cookie sid"));
  wr_config_close(&cfg);
}

/* auth.require_exp (default true): a token without exp is refused with
 * missing_exp; an operator can turn that off. */
static void test_require_exp(void **state) {
  (void)state;
  static const char secret[] = "0123456789abcdef0123";
  wr_config_t cfg;
  char err[256], user[WR_WS_USER_MAX], payload[256];
  const char *error;
  assert_int_equal(wr_config_init(&cfg), 0);
  assert_true(cfg.require_exp);
  assert_int_equal(wr_config_set(&cfg, "auth", "jwt_secret", secret, err, sizeof(err)), 0);
  snprintf(payload, sizeof(payload), "{\"sub\":\"dave\",\"iat\":%lld}", (long long)time(NULL));
  char *no_exp = strdup(sign("HS256", payload, NULL, secret));
  assert_int_equal(check(&cfg, no_exp, user, &error), 401);
  assert_string_equal(error, "missing_exp");
  payload_for(payload, sizeof(payload), "dave");
  assert_int_equal(check(&cfg, sign("HS256", payload, NULL, secret), user, &error), 0);
  assert_int_equal(wr_config_set(&cfg, "auth", "require_exp", "false", err, sizeof(err)), 0);
  assert_int_equal(check(&cfg, no_exp, user, &error), 0);
  assert_string_equal(user, "dave");
  free(no_exp);
  wr_config_close(&cfg);
}

static void test_origin_allowed(void **state) {
  (void)state;
  char *allowed[] = {"https://app.example.com", "http://127.0.0.1:8080/", NULL};
  assert_true(wr_ws_origin_allowed(NULL, allowed, 0));
  assert_true(wr_ws_origin_allowed("https://evil.example", allowed, 0));
  assert_true(wr_ws_origin_allowed("https://app.example.com", allowed, 2));
  assert_true(wr_ws_origin_allowed("HTTPS://APP.EXAMPLE.COM/", allowed, 2));
  assert_true(wr_ws_origin_allowed("http://127.0.0.1:8080", allowed, 2));
  assert_false(wr_ws_origin_allowed(NULL, allowed, 2));
  assert_false(wr_ws_origin_allowed("null", allowed, 2));
  assert_false(wr_ws_origin_allowed("", allowed, 2));
  assert_false(wr_ws_origin_allowed("https://app.example.com.evil.example", allowed, 2));
  assert_false(wr_ws_origin_allowed("https://app.example.co", allowed, 2));
  assert_false(wr_ws_origin_allowed("http://app.example.com", allowed, 2));
  assert_false(wr_ws_origin_allowed("http://127.0.0.1:80801", allowed, 2));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rsa_key_pins_rs256),
      cmocka_unit_test(test_ec_key_pins_es256),
      cmocka_unit_test(test_certificate_is_accepted),
      cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_unsupported_key_types),
      cmocka_unit_test(test_load_from_ini),
      cmocka_unit_test(test_hs256_key),
      cmocka_unit_test(test_require_exp),
      cmocka_unit_test(test_origin_allowed),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
