/* libFuzzer target for bridge/client_msg.c: the first byte picks text or
 * binary (MessagePack); the result must match the full (jansson) parser's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/envelope_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  wr_cmsg_t m;

  if (size < 1)
    return 0;
  wr_cmsg_parse(&m, data + 1, size - 1, data[0] & 1);
  switch (m.kind) {
  case WR_CMSG_ACK:
    if (m.n_ids < 1 || m.n_ids > 1000 || m.error)
      abort();
    for (size_t i = 0; i < m.n_ids; i++)
      if (strlen(m.ids[i]) < 1 || strlen(m.ids[i]) > 256)
        abort();
    break;
  case WR_CMSG_PING:
    if (m.ids || m.error)
      abort();
    break;
  case WR_CMSG_INVALID:
    if (!m.error || m.ids)
      abort();
    break;
  default:
    abort();
  }
  /* The fast path must agree with the full parser. */
  wr_cmsg_t full;
  wr_cmsg_parse_full(&full, data + 1, size - 1, data[0] & 1);
  if (full.kind != m.kind || full.n_ids != m.n_ids || (full.error == NULL) != (m.error == NULL) ||
      (full.error != NULL && strcmp(full.error, m.error) != 0))
    abort();
  for (size_t i = 0; i < m.n_ids; i++)
    if (strcmp(full.ids[i], m.ids[i]) != 0)
      abort();
  wr_cmsg_close(&full);
  wr_cmsg_close(&m);
  return 0;
}
