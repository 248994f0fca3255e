/* warren bridge: joins the AMQP thread and the WebSocket loop with two SPSC
 * rings, decodes envelopes, keeps the user → connections index and tracks
 * every delivery until its verdict (docs/architecture.md). */
#ifndef WARREN_BRIDGE_H
#define WARREN_BRIDGE_H

#include "config/config.h"

/* Runs the daemon until SIGTERM/SIGINT and a graceful drain. cfg is borrowed;
 * config_path (may be NULL) is re-read on SIGHUP. Returns the process exit
 * status (0 after a clean drain). */
int wr_bridge_run(const wr_config_t *cfg, const char *config_path);

/* `warren token`: prints a token for a user. argv starts after "token".
 * Returns the exit status. */
int wr_cli_token(const wr_config_t *cfg, int argc, char **argv);

/* `warren publish`: publishes one envelope with a confirm. argv starts after
 * "publish". Returns the exit status (0 only when confirmed). */
int wr_cli_publish(const wr_config_t *cfg, int argc, char **argv);

/* `warren replay parked|dead`: moves parked or dead messages back to
 * delivery (amqp/replay.c). argv starts at "replay". Returns the exit status:
 * 0 done, 1 broker error, 2 usage error, 130/143 stopped by SIGINT/SIGTERM. */
int wr_cli_replay(const wr_config_t *cfg, int argc, char **argv);

/* `warren status`: GET /api/stats from admin.listen (blocking, 2 s at most)
 * and prints it as a table, or as received with --json. argv starts after
 * "status". Returns the exit status: 0 when it could read it, 1 when warren
 * does not answer there or admin.listen is off, 2 on a usage error. */
int wr_cli_status(const wr_config_t *cfg, int argc, char **argv);

#endif
