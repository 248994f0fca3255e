/* `warren status` (README.md, Operating): reads /api/stats from the admin
 * port of the configuration and prints it as a table. The HTTP response
 * parser and the table are pure functions over buffers; status.c's socket
 * code only moves bytes into them. */
#ifndef WARREN_BRIDGE_STATUS_INT_H
#define WARREN_BRIDGE_STATUS_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "bridge/metrics_int.h"

/* Looks for one whole HTTP/1.x response in buf[0..len): a status line, headers
 * and a body of Content-Length bytes, or (without Content-Length) everything
 * up to the end of the stream, which eof says was reached. buf is borrowed.
 * Returns 0 with *status and the body at buf + *body_off, *body_len bytes;
 * -EAGAIN when more bytes are needed; -EPROTO when buf is not an HTTP/1.x
 * response (or ends before its Content-Length at eof). */
int wr_status_http_parse(const char *buf, size_t len, bool eof, int *status, size_t *body_off,
                         size_t *body_len);

/* Appends the table a person reads at a glance: state, uptime, clients,
 * notification totals and rates since start, latency p50/p99, queue depths,
 * mailboxes, the broker connection, parked and dead-lettered by reason.
 * stats is an /api/stats object (borrowed); figures it lacks print as "-".
 * where names the admin address it came from. */
void wr_status_format(const json_t *stats, const char *where, wr_sbuf_t *out);

#endif
