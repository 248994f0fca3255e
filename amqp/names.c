/* Names derived from user ids (docs/mailboxes.md, "Names and keys"): pure
 * functions, no I/O. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "amqp/amqp.h"

int wr_amqp_user_key(const char *user, char *out, size_t outlen) {
  size_t n = strlen(user);
  /* "~" starts only digest keys, so an id starting with it is hashed too:
   * the two forms can never collide. */
  bool plain = n >= 1 && n <= WR_AMQP_USER_KEY_PLAIN_MAX && user[0] != '~';
  for (size_t i = 0; plain && i < n; i++)
    plain = user[i] > 0x20 && user[i] < 0x7f;
  if (plain) {
    if (n + 3 > outlen)
      return -ENOSPC;
    memcpy(out, "u.", 2);
    memcpy(out + 2, user, n + 1);
    return (int)(n + 2);
  }
  /* Anything else (long, spaces, control bytes, UTF-8) by its digest: a key
   * is an AMQP short string (routing key, part of a queue name). */
  if (outlen < WR_AMQP_USER_KEY_MAX)
    return -ENOSPC;
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)user, n, md);
  memcpy(out, "u.~", 3);
  for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++)
    snprintf(out + 3 + 2 * i, 3, "%02x", md[i]);
  return 3 + 2 * SHA256_DIGEST_LENGTH;
}

int wr_amqp_mailbox_name(const char *queue, const char *key, char *out, size_t outlen) {
  int n = snprintf(out, outlen, "%s.mbox.%s", queue, key);
  if (n < 0 || (size_t)n >= outlen || n > 255)
    return -ENAMETOOLONG;
  return n;
}
