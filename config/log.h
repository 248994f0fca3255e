/* warren logging: one line per event on stderr, text or JSON, safe to call from
 * any thread (each line is written with a single write()). Levels and format
 * can be changed at run time (SIGHUP reload). Never pass tokens or secrets. */
#ifndef WARREN_LOG_H
#define WARREN_LOG_H

#include "config/config.h"

/* Sets the level and format used from now on (atomic, any thread). */
void wr_log_setup(wr_log_level_t level, wr_log_format_t format);

/* True when a message at level would be written. */
int wr_log_enabled(wr_log_level_t level);

/* Writes one line: "2026-11-22T07:05:56.123Z INFO  amqp: connected to ..." or
 * {"ts":"…","level":"info","module":"amqp","msg":"…"}. module is a short
 * component name ("amqp", "ws", "bridge", "config", "main"). */
void wr_log(wr_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define wr_error(m, ...) wr_log(WR_LOG_ERROR, m, __VA_ARGS__)
#define wr_warn(m, ...) wr_log(WR_LOG_WARN, m, __VA_ARGS__)
#define wr_info(m, ...) wr_log(WR_LOG_INFO, m, __VA_ARGS__)
#define wr_debug(m, ...)                                                                           \
  do {                                                                                             \
    if (wr_log_enabled(WR_LOG_DEBUG))                                                              \
      wr_log(WR_LOG_DEBUG, m, __VA_ARGS__);                                                        \
  } while (0)

#endif
