/* libFuzzer target for bridge/envelope.c. The first byte picks the content
 * type; on success both encodings are produced and the MessagePack one must
 * decode back to the same tree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/envelope_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const types[] = {NULL, "application/json", "application/msgpack",
                                      "application/x-msgpack; charset=binary", ""};
  wr_envelope_t env;
  uint8_t *out;
  size_t len;

  if (size < 1)
    return 0;
  const char *ct = types[data[0] % 5];
  wr_env_result_t r =
      wr_envelope_decode(&env, data + 1, size - 1, ct, (data[0] & 0x80) ? "fb" : NULL, 65536, 1000);
  if (r != WR_ENV_OK) {
    if (env.id || env.client || env.users)
      abort();
    return 0;
  }
  if (!env.id || !json_is_object(env.client) || env.n_users > 10000 ||
      env.broadcast == (env.n_users > 0))
    abort();
  if (wr_envelope_encode(&env, WR_ENV_JSON, 3, &out, &len) != 0)
    abort();
  json_t *again = json_loadb((const char *)out + 3, len - 3, 0, NULL);
  if (!again || !json_equal(again, env.client))
    abort();
  json_decref(again);
  free(out);
  if (wr_envelope_encode(&env, WR_ENV_MSGPACK, 0, &out, &len) != 0)
    abort();
  json_t *back = wr_msgpack_to_json(out, len);
  if (!back || !json_equal(back, env.client))
    abort();
  json_decref(back);
  free(out);
  wr_envelope_close(&env);
  return 0;
}
