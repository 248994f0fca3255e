/* Logger: every call formats one complete line on the stack and hands it to a
 * single write(2). A write of at most PIPE_BUF bytes to a pipe is atomic, so
 * lines from the loop thread and the AMQP thread never interleave and no lock
 * is needed. The level and format are the only global state of the program. */
#include "config/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Linux PIPE_BUF: the largest write that stays atomic on a pipe. */
#define LINE_MAX_BYTES 4096

static _Atomic int log_level = WR_LOG_INFO;
static _Atomic int log_format = WR_LOG_TEXT;

static const char *const level_json[] = {"error", "warn", "info", "debug"};
static const char *const level_text[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

static const char ellipsis[] = "\xe2\x80\xa6"; /* U+2026 "…" */

void wr_log_setup(wr_log_level_t level, wr_log_format_t format) {
  atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
  atomic_store_explicit(&log_format, (int)format, memory_order_relaxed);
}

int wr_log_enabled(wr_log_level_t level) {
  return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the
 * bytes are not valid UTF-8 (overlong forms and surrogates included), or -1
 * when a valid prefix is cut off by the end of the buffer. */
static int utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0], lo = 0x80, hi = 0xbf;
  int len, i;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0;
    else if (c == 0xed)
      hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90;
    else if (c == 0xf4)
      hi = 0x8f;
  } else
    return 0;
  for (i = 1; i < len; i++) {
    if ((size_t)i >= n)
      return -1;
    if (s[i] < lo || s[i] > hi)
      return 0;
    lo = 0x80;
    hi = 0xbf;
  }
  return len;
}

struct out {
  char *buf;
  size_t len;
  size_t cap; /* bytes usable for content, the tail is reserved by the caller */
  int full;
};

static void put(struct out *o, const char *s, size_t n) {
  if (o->full || o->len + n > o->cap) {
    o->full = 1;
    return;
  }
  memcpy(o->buf + o->len, s, n);
  o->len += n;
}

/* Appends s escaped for the line format: JSON string escapes, or in text mode
 * visible escapes for control characters so that a message can never break
 * the one-line-per-event rule. Invalid UTF-8 becomes U+FFFD (JSON) or '?'. An
 * escape or character that does not fit is dropped whole, never cut. */
static void put_escaped(struct out *o, const char *s, size_t n, int json) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  char tmp[8];
  while (i < n && !o->full) {
    unsigned char c = p[i];
    int len = utf8_seq(p + i, n - i);
    if (len <= 0) {
      if (json)
        put(o, "\\ufffd", 6);
      else
        put(o, "?", 1);
      i++;
      continue;
    }
    if (len > 1) {
      put(o, s + i, (size_t)len);
      i += (size_t)len;
      continue;
    }
    if (c == '\n')
      put(o, "\\n", 2);
    else if (c == '\r')
      put(o, "\\r", 2);
    else if (c == '\t')
      put(o, "\\t", 2);
    else if (json && (c == '"' || c == '\\')) {
      tmp[0] = '\\';
      tmp[1] = (char)c;
      put(o, tmp, 2);
    } else if (c < 0x20 || c == 0x7f) {
      if (json)
        snprintf(tmp, sizeof(tmp), "\\u%04x", c);
      else
        snprintf(tmp, sizeof(tmp), "\\x%02x", c);
      put(o, tmp, strlen(tmp));
    } else
      put(o, s + i, 1);
    i++;
  }
}

static void write_all(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(STDERR_FILENO, buf, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere left to report a failing stderr */
    }
    buf += w;
    len -= (size_t)w;
  }
}

void wr_log(wr_log_level_t level, const char *module, const char *fmt, ...) {
  char msg[LINE_MAX_BYTES];
  char line[LINE_MAX_BYTES];
  char ts[96];
  struct timespec now;
  struct tm tm;
  struct out o;
  va_list ap;
  int n, json, lv = (int)level;
  size_t msglen, tail;

  if (!wr_log_enabled(level))
    return;
  if (lv < WR_LOG_ERROR || lv > WR_LOG_DEBUG)
    lv = WR_LOG_ERROR;
  if (!module)
    module = "-";
  json = atomic_load_explicit(&log_format, memory_order_relaxed) == WR_LOG_JSON;

  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (n < 0) {
    msg[0] = '\0';
    n = 0;
  }
  msglen = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
  if ((size_t)n >= sizeof(msg)) {
    /* vsnprintf may have cut a multi-byte character: drop its first bytes
     * rather than print them as invalid UTF-8 before the "…". */
    size_t lead = msglen;
    while (lead > 0 && msglen - lead < 4 && ((unsigned char)msg[lead - 1] & 0xc0) == 0x80)
      lead--;
    if (lead > 0 && utf8_seq((const unsigned char *)msg + lead - 1, msglen - lead + 1) < 0)
      msglen = lead - 1;
  }

  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));

  /* Keep room for "…", the closing of the JSON object and the newline. */
  tail = sizeof(ellipsis) - 1 + (json ? 2 : 0) + 1;
  o.buf = line;
  o.len = 0;
  o.cap = sizeof(line) - tail;
  o.full = 0;
  if (json) {
    put(&o, "{\"ts\":\"", 7);
    put(&o, ts, strlen(ts));
    put(&o, "\",\"level\":\"", 11);
    put(&o, level_json[lv], strlen(level_json[lv]));
    put(&o, "\",\"module\":\"", 12);
    put_escaped(&o, module, strnlen(module, 64), 1);
    put(&o, "\",\"msg\":\"", 9);
  } else {
    put(&o, ts, strlen(ts));
    put(&o, " ", 1);
    put(&o, level_text[lv], 5);
    put(&o, " ", 1);
    put_escaped(&o, module, strnlen(module, 64), 0);
    put(&o, ": ", 2);
  }
  put_escaped(&o, msg, msglen, json);
  if (o.full || (size_t)n >= sizeof(msg)) {
    memcpy(line + o.len, ellipsis, sizeof(ellipsis) - 1);
    o.len += sizeof(ellipsis) - 1;
  }
  if (json) {
    memcpy(line + o.len, "\"}", 2);
    o.len += 2;
  }
  line[o.len++] = '\n';
  write_all(line, o.len);
}
