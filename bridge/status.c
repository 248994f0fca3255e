/* The `warren status` subcommand: one HTTP GET of /api/stats on the admin
 * port of the configuration, printed as a table (or as it came, --json).
 *
 * It runs in its own short-lived process, never on the daemon's loop, so it
 * simply waits on one socket (poll() with a deadline, so a daemon that
 * accepts but never answers cannot hang it); the admin server answers with
 * Content-Length and closes the connection. */
#include "bridge/status_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bridge/bridge.h"

/* How long the whole exchange may take: the admin server answers from
 * memory, so anything slower is a daemon that is stuck or not warren. */
#define STATUS_TIMEOUT_MS 2000
/* /api/stats is a few KiB; anything this large is not it. */
#define STATUS_MAX_RESPONSE (4u << 20)

int wr_status_http_parse(const char *buf, size_t len, bool eof, int *status, size_t *body_off,
                         size_t *body_len) {
  const char *end = NULL, *line, *next;
  long long clen = -1;
  int code;

  /* "HTTP/1.x NNN" must be whole before anything else is judged. */
  if (len < 12)
    return eof ? -EPROTO : -EAGAIN;
  if (memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ')
    return -EPROTO;
  code = 0;
  for (int i = 9; i < 12; i++) {
    if (buf[i] < '0' || buf[i] > '9')
      return -EPROTO;
    code = code * 10 + (buf[i] - '0');
  }
  for (size_t i = 0; i + 3 < len; i++) {
    if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
      end = buf + i + 2; /* the headers' last CRLF */
      break;
    }
  }
  if (end == NULL)
    return eof || len > 65536 ? -EPROTO : -EAGAIN;
  /* The status line ends at or before the headers' last CRLF. */
  line = (const char *)memchr(buf, '\n', (size_t)(end - buf)) + 1;
  for (; line < end; line = next) {
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    next = eol + 1;
    if ((size_t)(eol - line) > 15 && strncasecmp(line, "Content-Length:", 15) == 0) {
      const char *p = line + 15;
      long long v = 0;
      while (*p == ' ' || *p == '\t')
        p++;
      if (*p < '0' || *p > '9')
        return -EPROTO;
      for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > (long long)STATUS_MAX_RESPONSE)
          return -EPROTO;
      }
      while (*p == ' ' || *p == '\t')
        p++;
      if (*p != '\r' || clen >= 0)
        return -EPROTO;
      clen = v;
    }
  }
  *body_off = (size_t)(end + 2 - buf);
  if (clen >= 0) {
    if (len - *body_off < (size_t)clen)
      return eof ? -EPROTO : -EAGAIN;
    *body_len = (size_t)clen;
  } else {
    if (!eof)
      return -EAGAIN;
    *body_len = len - *body_off;
  }
  *status = code;
  return 0;
}

/* ---- the table ------------------------------------------------------------ */

/* The number at "key" or "parent.key" of o; NAN when absent or not a number. */
static double num(const json_t *o, const char *path) {
  const char *dot = strchr(path, '.');
  json_t *v;
  if (dot != NULL) {
    char parent[64];
    size_t n = (size_t)(dot - path);
    if (n >= sizeof(parent))
      return NAN;
    memcpy(parent, path, n);
    parent[n] = '\0';
    o = json_object_get(o, parent);
    path = dot + 1;
  }
  v = json_object_get(o, path);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static bool truth(const json_t *o, const char *key) {
  return json_is_true(json_object_get(o, key));
}

/* A count as digits, or "-" when unknown. */
static const char *count(char *buf, size_t len, double v) {
  if (isnan(v))
    snprintf(buf, len, "-");
  else
    snprintf(buf, len, "%.0f", v);
  return buf;
}

static const char *rate(char *buf, size_t len, double total, double uptime_s) {
  if (isnan(total) || !(uptime_s > 0))
    snprintf(buf, len, "-");
  else
    snprintf(buf, len, "%.2f", total / uptime_s);
  return buf;
}

/* A duration in ms as a person reads it: ms below a second, else s. */
static void duration(char *buf, size_t len, double ms) {
  if (ms < 10)
    snprintf(buf, len, "%.2f ms", ms);
  else if (ms < 1000)
    snprintf(buf, len, "%.1f ms", ms);
  else
    snprintf(buf, len, "%.2f s", ms / 1000);
}

/* A quantile of a histogram object (ms). A rank past the last bound is
 * reported as that bound by the daemon; say "> bound" then, not the bound. */
static const char *quantile(char *buf, size_t len, const json_t *h, const char *key) {
  double v = num(h, key);
  const json_t *bounds = json_object_get(h, "bounds_ms");
  const json_t *buckets = json_object_get(h, "buckets");
  size_t nb = json_array_size(bounds);
  if (isnan(v)) {
    snprintf(buf, len, "-");
    return buf;
  }
  if (nb > 0 && json_array_size(buckets) == nb + 1 &&
      json_integer_value(json_array_get(buckets, nb)) > 0 &&
      v >= json_number_value(json_array_get(bounds, nb - 1))) {
    double last = json_number_value(json_array_get(bounds, nb - 1));
    if (last >= 1000)
      snprintf(buf, len, "> %g s", last / 1000);
    else
      snprintf(buf, len, "> %g ms", last);
  } else {
    duration(buf, len, v);
  }
  return buf;
}

static void row(wr_sbuf_t *sb, const char *label, const char *value) {
  wr_sbuf_printf(sb, "  %-26s %12s\n", label, value);
}

static void row_count(wr_sbuf_t *sb, const char *label, double v) {
  char b[32];
  row(sb, label, count(b, sizeof(b), v));
}

static void row_rate(wr_sbuf_t *sb, const char *label, double total, double uptime_s) {
  char b1[32], b2[32];
  wr_sbuf_printf(sb, "  %-26s %12s %10s\n", label, count(b1, sizeof(b1), total),
                 rate(b2, sizeof(b2), total, uptime_s));
}

/* "reason n, reason n" for the non-zero members of an object of counts. */
static void reasons(wr_sbuf_t *sb, const json_t *o) {
  const char *k;
  json_t *v;
  bool any = false;
  json_object_foreach((json_t *)o, k, v) {
    if (!json_is_integer(v) || json_integer_value(v) == 0)
      continue;
    wr_sbuf_printf(sb, "%s%s %lld", any ? ", " : "  ", k, (long long)json_integer_value(v));
    any = true;
  }
}

static void uptime_text(char *buf, size_t len, double s) {
  long long t;
  if (!(s >= 0)) {
    snprintf(buf, len, "-");
    return;
  }
  t = (long long)s;
  if (t >= 86400)
    snprintf(buf, len, "%lldd %02lldh %02lldm", t / 86400, t / 3600 % 24, t / 60 % 60);
  else
    snprintf(buf, len, "%lldh %02lldm %02llds", t / 3600, t / 60 % 60, t % 60);
}

void wr_status_format(const json_t *s, const char *where, wr_sbuf_t *sb) {
  const json_t *version = json_object_get(s, "version");
  const json_t *queues = json_object_get(s, "queues");
  const json_t *mbox = json_object_get(s, "mailbox");
  const json_t *h;
  double uptime = num(s, "ts_ms") / 1000.0 - num(s, "start_time_s");
  const char *state;
  char b1[48], b2[48];

  if (truth(s, "draining"))
    state = "draining";
  else if (truth(s, "ready"))
    state = "ready";
  else if (!truth(s, "amqp_connected"))
    state = "NOT READY (not consuming: broker connection lost)";
  else
    state = "NOT READY";
  uptime_text(b1, sizeof(b1), uptime);
  wr_sbuf_printf(sb, "warren %s at %s: %s, up %s\n",
                 json_is_string(version) ? json_string_value(version) : "?", where, state, b1);

  wr_sbuf_printf(sb, "\nClients\n");
  row_count(sb, "connections", num(s, "connections"));
  row_count(sb, "users online", num(s, "users_online"));
  row_count(sb, "handshakes in progress", num(s, "handshakes_in_progress"));

  wr_sbuf_printf(sb, "\n%-28s %12s %10s\n", "Notifications", "total", "per s");
  row_rate(sb, "consumed", num(s, "consumed"), uptime);
  row_rate(sb, "delivered (frames)", num(s, "delivered"), uptime);
  row_rate(sb, "client acks", num(s, "client_acks"), uptime);
  row_rate(sb, "offline targets", num(s, "targets_offline"), uptime);
  row_rate(sb, "ack timeouts", num(s, "ack_timeouts"), uptime);
  row_rate(sb, "retried (ladder)", num(s, "retried"), uptime);
  wr_sbuf_printf(sb, "  %-26s %12s %10s", "parked", count(b1, sizeof(b1), num(s, "parked")),
                 rate(b2, sizeof(b2), num(s, "parked"), uptime));
  reasons(sb, json_object_get(s, "parked_by_reason"));
  wr_sbuf_printf(sb, "\n  %-26s %12s %10s", "dead-lettered",
                 count(b1, sizeof(b1), num(s, "dead_lettered")),
                 rate(b2, sizeof(b2), num(s, "dead_lettered"), uptime));
  reasons(sb, json_object_get(s, "dead_lettered_by_reason"));
  wr_sbuf_printf(sb, "\n");

  wr_sbuf_printf(sb, "\n%-28s %12s %10s\n", "Latency since start", "p50", "p99");
  h = json_object_get(s, "latency");
  wr_sbuf_printf(sb, "  %-26s %12s %10s\n", "delivery", quantile(b1, sizeof(b1), h, "p50_ms"),
                 quantile(b2, sizeof(b2), h, "p99_ms"));
  h = json_object_get(s, "mailbox_replay");
  if (h != NULL)
    wr_sbuf_printf(sb, "  %-26s %12s %10s\n", "mailbox replay",
                   quantile(b1, sizeof(b1), h, "p50_ms"), quantile(b2, sizeof(b2), h, "p99_ms"));

  wr_sbuf_printf(sb, "\n%-28s %12s %10s  %s\n", "Queues", "messages", "consumers", "name");
  for (size_t i = 0; i < json_array_size(queues); i++) {
    const json_t *q = json_array_get(queues, i);
    const json_t *name = json_object_get(q, "name"), *role = json_object_get(q, "role");
    wr_sbuf_printf(
        sb, "  %-26s %12s %10s  %s\n", json_is_string(role) ? json_string_value(role) : "?",
        count(b1, sizeof(b1), num(q, "messages")), count(b2, sizeof(b2), num(q, "consumers")),
        json_is_string(name) ? json_string_value(name) : "?");
  }
  if (json_array_size(queues) == 0)
    wr_sbuf_printf(sb, "  (not polled yet)\n");

  if (json_is_object(mbox)) {
    wr_sbuf_printf(sb, "\n%-28s %12s %10s\n", "Mailboxes", "", "per s");
    row_count(sb, "known", num(mbox, "known"));
    row_count(sb, "consumed (user online)", num(mbox, "consumed"));
    row_rate(sb, "puts", num(mbox, "puts"), uptime);
    row_rate(sb, "replayed items", num(mbox, "items"), uptime);
    row_rate(sb, "redeliveries", num(mbox, "redelivered"), uptime);
    row_rate(sb, "pauses", num(mbox, "pauses"), uptime);
    row_rate(sb, "fallbacks to the ladder", num(mbox, "fallbacks"), uptime);
  }

  const json_t *cl = json_object_get(s, "cluster");
  const json_t *node = json_object_get(s, "node_id");
  if (json_is_object(cl) && json_is_string(node)) {
    wr_sbuf_printf(sb, "\n%-28s %12s %10s\n", "Cluster", "", "per s");
    row(sb, "node id", json_string_value(node));
    row_count(sb, "users bound here", num(cl, "users_bound"));
    row_rate(sb, "routed copies", num(cl, "routed_copies"), uptime);
    row_rate(sb, "node queue items", num(cl, "node_items"), uptime);
    row_rate(sb, "wasted (user not here)", num(cl, "wasted"), uptime);
    row_rate(sb, "binds", num(cl, "binds"), uptime);
    row_rate(sb, "unbinds", num(cl, "unbinds"), uptime);
    row_rate(sb, "fallbacks to the ladder", num(cl, "route_fallbacks"), uptime);
  }

  wr_sbuf_printf(sb, "\nBroker\n");
  row(sb, "connected", truth(s, "amqp_connected") ? "yes" : "no");
  row_count(sb, "reconnects", num(s, "reconnects"));
  row_count(sb, "unacked deliveries", num(s, "amqp_unacked"));
  row_count(sb, "in flight in the loop", num(s, "in_flight"));
}

/* ---- the request ---------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes: 0, -ETIMEDOUT,
 * or a negative errno. */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    if (left <= 0)
      return -ETIMEDOUT;
    n = poll(&p, 1, (int)left);
    if (n > 0)
      return 0;
    if (n == 0)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
}

typedef struct response_s {
  char *buf;
  size_t len, cap;
  int status;
  size_t body_off, body_len;
} response_t;

/* GET path from host:port (a numeric address; where is how messages name
 * it) within timeout_ms; the response is whole in r on success. Returns 0 or
 * a negative errno with a message in err. */
static int http_get(const char *host, uint16_t port, const char *where, const char *path,
                    int timeout_ms, response_t *r, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sl;
  int64_t deadline = now_ms() + timeout_ms;
  char req[512];
  int fd, rc, n;
  size_t sent = 0;
  int soerr = 0;
  socklen_t el = sizeof(soerr);

  memset(&ss, 0, sizeof(ss));
  if (strchr(host, ':') != NULL) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    rc = inet_pton(AF_INET6, host, &a->sin6_addr);
    sl = sizeof(*a);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    rc = inet_pton(AF_INET, host, &a->sin_addr);
    sl = sizeof(*a);
  }
  if (rc != 1) {
    snprintf(err, errlen, "admin.listen host %s is not a numeric address", host);
    return -EINVAL;
  }
  n = snprintf(req, sizeof(req),
               "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
               "Connection: close\r\nUser-Agent: warren-status\r\n\r\n",
               path, where);
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot create a socket: %s", strerror(-rc));
    return rc;
  }
  if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
    if (errno != EINPROGRESS) {
      rc = -errno;
      goto fail_connect;
    }
    if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0)
      goto fail_connect;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) != 0)
      soerr = errno;
    if (soerr != 0) {
      rc = -soerr;
      goto fail_connect;
    }
  }
  while (sent < (size_t)n) {
    ssize_t w = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
    if (w > 0) {
      sent += (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0)
        goto fail_io;
      continue;
    }
    rc = -errno;
    goto fail_io;
  }
  for (;;) {
    ssize_t got;
    bool eof = false;
    if (r->cap - r->len < 4096) {
      size_t cap = r->cap ? r->cap * 2 : 16384;
      char *b;
      if (cap > STATUS_MAX_RESPONSE) {
        rc = -EMSGSIZE;
        snprintf(err, errlen,
                 "the answer from %s is larger than %u bytes (is that warren's admin "
                 "port?)",
                 where, STATUS_MAX_RESPONSE);
        goto fail;
      }
      if ((b = realloc(r->buf, cap)) == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
      r->buf = b;
      r->cap = cap;
    }
    got = recv(fd, r->buf + r->len, r->cap - r->len, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if ((rc = wait_fd(fd, POLLIN, deadline)) < 0)
        goto fail_io;
      continue;
    }
    if (got < 0) {
      rc = -errno;
      goto fail_io;
    }
    if (got == 0)
      eof = true;
    r->len += (size_t)got;
    rc = wr_status_http_parse(r->buf, r->len, eof, &r->status, &r->body_off, &r->body_len);
    if (rc == 0)
      break;
    if (rc != -EAGAIN) {
      snprintf(err, errlen, "%s did not answer with HTTP (is that warren's admin port?)", where);
      goto fail;
    }
  }
  close(fd);
  return 0;

fail_connect:
  if (rc == -ETIMEDOUT)
    snprintf(err, errlen,
             "no connection to %s within %d ms; is warren running with this "
             "configuration?",
             where, timeout_ms);
  else
    snprintf(err, errlen, "cannot connect to %s: %s; is warren running with this configuration?",
             where, strerror(-rc));
  goto fail;
fail_io:
  if (rc == -ETIMEDOUT)
    snprintf(err, errlen,
             "no answer from %s within %d ms (is warren stuck, or is that port "
             "another program's?)",
             where, timeout_ms);
  else
    snprintf(err, errlen, "reading from %s failed: %s", where, strerror(-rc));
fail:
  close(fd);
  return rc;
}

int wr_cli_status(const wr_config_t *cfg, int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  bool raw = false;
  char host[64], where[96], err[512];
  response_t r = {0};
  json_t *stats;
  json_error_t jerr;
  wr_sbuf_t sb = {0};
  int c, rc = 1;

  optind = 1;
  while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
    switch (c) {
    case 'j':
      raw = true;
      break;
    case 'h':
      printf("usage: warren [--config FILE] status [--json]\n"
             "Reads /api/stats from admin.listen of the configuration and prints it as a table\n"
             "(--json: as received). Exit status 0 when it could read it, 1 when warren is not\n"
             "running, admin.listen is off, or the answer is not warren's.\n");
      return 0;
    default:
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "warren status: unexpected argument \"%s\"\n", argv[optind]);
    return 2;
  }
  if (!cfg->admin_enabled) {
    fprintf(stderr, "warren status: admin.listen is off in this configuration, so warren serves no "
                    "/api/stats to read; set admin.listen (default 127.0.0.1:9090) and restart "
                    "warren\n");
    return 1;
  }
  if (cfg->admin_port == 0) {
    fprintf(stderr, "warren status: admin.listen has port 0 (chosen by the system at start-up); "
                    "give it a fixed port to use warren status\n");
    return 1;
  }
  /* A wildcard address listens on every interface: ask the loopback one. */
  if (strcmp(cfg->admin_host, "0.0.0.0") == 0)
    snprintf(host, sizeof(host), "127.0.0.1");
  else if (strcmp(cfg->admin_host, "::") == 0)
    snprintf(host, sizeof(host), "::1");
  else
    snprintf(host, sizeof(host), "%s", cfg->admin_host);
  snprintf(where, sizeof(where), "%s%s%s:%u", strchr(host, ':') ? "[" : "", host,
           strchr(host, ':') ? "]" : "", (unsigned)cfg->admin_port);

  if (http_get(host, cfg->admin_port, where, "/api/stats", STATUS_TIMEOUT_MS, &r, err,
               sizeof(err)) != 0) {
    fprintf(stderr, "warren status: %s\n", err);
    goto out;
  }
  if (r.status != 200) {
    fprintf(stderr,
            "warren status: %s answered HTTP %d to GET /api/stats (is that warren's admin "
            "port?)\n",
            where, r.status);
    goto out;
  }
  stats = json_loadb(r.buf + r.body_off, r.body_len, 0, &jerr);
  if (!json_is_object(stats) || json_object_get(stats, "version") == NULL) {
    fprintf(stderr,
            "warren status: %s answered GET /api/stats with something that is not "
            "warren's statistics\n",
            where);
    json_decref(stats);
    goto out;
  }
  if (raw) {
    fwrite(r.buf + r.body_off, 1, r.body_len, stdout);
    if (r.body_len == 0 || r.buf[r.body_off + r.body_len - 1] != '\n')
      putchar('\n');
  } else {
    wr_status_format(stats, where, &sb);
    if (sb.oom) {
      fprintf(stderr, "warren status: out of memory\n");
      json_decref(stats);
      goto out;
    }
    fputs(sb.s, stdout);
  }
  json_decref(stats);
  rc = fflush(stdout) == 0 ? 0 : 1;
out:
  free(sb.s);
  free(r.buf);
  return rc;
}
