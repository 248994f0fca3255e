/* User keys and mailbox names (amqp/names.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "amqp/amqp.h"

static void plain_ids_keep_their_name(void **state) {
  char k[WR_AMQP_USER_KEY_MAX];
  (void)state;
  assert_int_equal(wr_amqp_user_key("1001", k, sizeof(k)), 6);
  assert_string_equal(k, "u.1001");
  assert_int_equal(wr_amqp_user_key("alice@example.com", k, sizeof(k)), 19);
  assert_string_equal(k, "u.alice@example.com");
  char id[129];
  memset(id, 'a', 128);
  id[128] = '\0';
  assert_int_equal(wr_amqp_user_key(id, k, sizeof(k)), 130);
  assert_int_equal(k[0], 'u');
  assert_string_equal(k + 2, id);
}

static void other_ids_by_digest(void **state) {
  char k[WR_AMQP_USER_KEY_MAX], k2[WR_AMQP_USER_KEY_MAX];
  (void)state;
  /* SHA-256 of "a b". */
  assert_int_equal(wr_amqp_user_key("a b", k, sizeof(k)), 67);
  assert_string_equal(k, "u.~c8687a08aa5d6ed2044328fa6a697ab8e96dc34291e8c2034ae8c38e6fcc6d65");
  char id[130];
  memset(id, 'a', 129);
  id[129] = '\0';
  assert_int_equal(wr_amqp_user_key(id, k, sizeof(k)), 67); /* 129 bytes: too long */
  assert_int_equal(wr_amqp_user_key("", k, sizeof(k)), 67);
  assert_int_equal(wr_amqp_user_key("caf\xc3\xa9", k, sizeof(k)), 67);
  assert_int_equal(wr_amqp_user_key("tab\there", k, sizeof(k)), 67);
  assert_int_equal(wr_amqp_user_key("del\x7f", k, sizeof(k)), 67);
  /* A plain id can never be mistaken for a digest key: ids starting with
   * "~" are hashed as well. */
  assert_int_equal(
      wr_amqp_user_key("~c8687a08aa5d6ed2044328fa6a697ab8e96dc34291e8c2034ae8c38e6fcc6d65", k2,
                       sizeof(k2)),
      67);
  assert_int_equal(wr_amqp_user_key("a b", k, sizeof(k)), 67);
  assert_string_not_equal(k, k2);
}

static void too_small_buffers(void **state) {
  char k[8];
  (void)state;
  assert_int_equal(wr_amqp_user_key("abcdef", k, sizeof(k)), -ENOSPC);
  assert_int_equal(wr_amqp_user_key("abcde", k, sizeof(k)), 7);
  assert_int_equal(wr_amqp_user_key("a b", k, sizeof(k)), -ENOSPC);
}

static void mailbox_names(void **state) {
  char n[256], k[WR_AMQP_USER_KEY_MAX], q[120];
  (void)state;
  assert_int_equal(wr_amqp_mailbox_name("warren.notify", "u.1001", n, sizeof(n)), 25);
  assert_string_equal(n, "warren.notify.mbox.u.1001");
  /* The longest queue name mailboxes allow (119 bytes) with the longest key. */
  memset(q, 'q', 119);
  q[119] = '\0';
  char id[129];
  memset(id, 'i', 128);
  id[128] = '\0';
  assert_int_equal(wr_amqp_user_key(id, k, sizeof(k)), 130);
  assert_int_equal(wr_amqp_mailbox_name(q, k, n, sizeof(n)), 255);
  char q2[121];
  memset(q2, 'q', 120);
  q2[120] = '\0';
  assert_int_equal(wr_amqp_mailbox_name(q2, k, n, sizeof(n)), -ENAMETOOLONG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(plain_ids_keep_their_name),
      cmocka_unit_test(other_ids_by_digest),
      cmocka_unit_test(too_small_buffers),
      cmocka_unit_test(mailbox_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
