/* `warren status` (bridge/status.c): the HTTP response parser fed whole and
 * one byte at a time, and the table it prints from /api/stats — the figures
 * an operator reads, "-" for what the daemon did not say, a percentile past
 * the histogram's last bound shown as such. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/status_int.h"

static int parse(const char *s, bool eof, int *status, size_t *off, size_t *len) {
  return wr_status_http_parse(s, strlen(s), eof, status, off, len);
}

static void test_parse_whole_and_byte_by_byte(void **state) {
  static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "content-length: 7\r\nConnection: close\r\n\r\n{\"a\":1}";
  size_t n = strlen(resp), off = 0, len = 0;
  int status = 0;
  (void)state;

  assert_int_equal(wr_status_http_parse(resp, n, false, &status, &off, &len), 0);
  assert_int_equal(status, 200);
  assert_int_equal(len, 7);
  assert_memory_equal(resp + off, "{\"a\":1}", 7);
  /* Every shorter prefix asks for more, and is refused at the end of the
   * stream: the body is short of its Content-Length. */
  for (size_t k = 0; k < n; k++) {
    assert_int_equal(wr_status_http_parse(resp, k, false, &status, &off, &len), -EAGAIN);
    assert_int_equal(wr_status_http_parse(resp, k, true, &status, &off, &len), -EPROTO);
  }
  /* Bytes past the body (a second response) are not part of it. */
  char more[256];
  snprintf(more, sizeof(more), "%sHTTP/1.1 200 OK\r\n", resp);
  assert_int_equal(parse(more, false, &status, &off, &len), 0);
  assert_int_equal(len, 7);
}

static void test_parse_without_length_reads_to_eof(void **state) {
  size_t off = 0, len = 0;
  int status = 0;
  (void)state;
  assert_int_equal(parse("HTTP/1.0 404 Not Found\r\n\r\nnope", false, &status, &off, &len),
                   -EAGAIN);
  assert_int_equal(parse("HTTP/1.0 404 Not Found\r\n\r\nnope", true, &status, &off, &len), 0);
  assert_int_equal(status, 404);
  assert_int_equal(len, 4);
  assert_int_equal(off, 26);
}

static void test_parse_refuses_what_is_not_http(void **state) {
  size_t off, len;
  int status;
  (void)state;
  assert_int_equal(parse("SSH-2.0-OpenSSH_9.2\r\n", false, &status, &off, &len), -EPROTO);
  assert_int_equal(parse("HTTP/2 200\r\n\r\n", false, &status, &off, &len), -EPROTO);
  assert_int_equal(parse("HTTP/1.1 2x0 OK\r\n\r\n", false, &status, &off, &len), -EPROTO);
  assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                         false, &status, &off, &len),
                   -EPROTO);
  assert_int_equal(
      parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, &status, &off, &len), -EPROTO);
  assert_int_equal(
      parse("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", false, &status, &off, &len),
      -EPROTO);
  assert_int_equal(parse("HTTP/1.1 200", true, &status, &off, &len), -EPROTO);
}

/* The table of one /api/stats object. */
static char *table(const char *json) {
  json_error_t err;
  json_t *s = json_loads(json, 0, &err);
  wr_sbuf_t sb = {0};
  if (s == NULL)
    fail_msg("bad test JSON: %s", err.text);
  wr_status_format(s, "127.0.0.1:9090", &sb);
  json_decref(s);
  assert_false(sb.oom);
  return sb.s;
}

/* The line that starts with "  label  ", NUL-terminated in buf. */
static const char *line_of(const char *text, const char *label, char *buf, size_t len) {
  char key[64];
  const char *p;
  snprintf(key, sizeof(key), "\n  %s  ", label);
  p = strstr(text, key);
  if (p == NULL)
    fail_msg("no row %s in:\n%s", label, text);
  p++;
  size_t n = strcspn(p, "\n");
  assert_true(n < len);
  memcpy(buf, p, n);
  buf[n] = '\0';
  return buf;
}

static void assert_row(const char *text, const char *label, const char *want) {
  char buf[256], got[256];
  line_of(text, label, buf, sizeof(buf));
  /* The figures after the label, single-spaced. */
  size_t k = 0;
  for (const char *p = buf + 2 + strlen(label); *p != '\0'; p++) {
    if (*p == ' ' && (k == 0 || got[k - 1] == ' '))
      continue;
    got[k++] = *p;
  }
  got[k] = '\0';
  if (strcmp(got, want) != 0)
    fail_msg("row %s: \"%s\", expected \"%s\"", label, got, want);
}

static const char *FULL =
    "{\"version\":\"1.2.3\",\"ts_ms\":1000000,\"ready\":true,\"draining\":false,"
    "\"connections\":12,\"users_online\":9,\"handshakes_in_progress\":0,"
    "\"consumed\":400,\"delivered\":380,\"client_acks\":370,\"targets_offline\":20,"
    "\"ack_timeouts\":3,\"retried\":0,\"parked\":2,"
    "\"parked_by_reason\":{\"max_attempts\":0,\"expired\":1,\"unacked\":1},"
    "\"dead_lettered\":4,\"dead_lettered_by_reason\":{\"too_large\":0,\"bad_json\":3,"
    "\"no_target\":1},"
    "\"latency\":{\"count\":370,\"p50_ms\":4.5,\"p99_ms\":2500,\"bounds_ms\":[1,10,100,5000],"
    "\"buckets\":[1,300,65,4,0]},"
    "\"mailbox_replay\":{\"count\":3,\"p50_ms\":1000,\"p99_ms\":1000,\"bounds_ms\":[1,1000],"
    "\"buckets\":[0,1,2]},"
    "\"queues\":[{\"name\":\"warren.notify\",\"role\":\"main\",\"messages\":5,\"consumers\":1},"
    "{\"name\":\"warren.notify.mailbox.new\",\"role\":\"mailbox_new\",\"messages\":null,"
    "\"consumers\":null}],"
    "\"mailbox\":{\"known\":30,\"consumed\":9,\"puts\":20,\"items\":18,\"redelivered\":1,"
    "\"pauses\":1,\"fallbacks\":0},"
    "\"node_id\":\"node-2\",\"cluster\":{\"routed_copies\":600,\"routed\":600,\"users_bound\":7,"
    "\"node_items\":410,\"wasted\":2,\"binds\":11,\"unbinds\":4,\"route_fallbacks\":0},"
    "\"amqp_connected\":true,\"reconnects\":2,\"amqp_unacked\":1,\"in_flight\":1,"
    "\"start_time_s\":800.00}";

static void test_table_figures(void **state) {
  char *t = table(FULL);
  (void)state;
  /* Up 200 s: rates are totals / 200. */
  {
    static const char head[] = "warren 1.2.3 at 127.0.0.1:9090: ready, up 0h 03m 20s\n";
    if (strncmp(t, head, sizeof(head) - 1) != 0)
      fail_msg("first line of:\n%s", t);
  }
  assert_row(t, "connections", "12");
  assert_row(t, "users online", "9");
  assert_row(t, "consumed", "400 2.00");
  assert_row(t, "delivered (frames)", "380 1.90");
  assert_row(t, "parked", "2 0.01 expired 1, unacked 1");
  assert_row(t, "dead-lettered", "4 0.02 bad_json 3, no_target 1");
  assert_row(t, "delivery", "4.50 ms 2.50 s");
  /* The replay's ranks fall past its last bound (1 s). */
  assert_row(t, "mailbox replay", "> 1 s > 1 s");
  assert_row(t, "main", "5 1 warren.notify");
  assert_row(t, "mailbox_new", "- - warren.notify.mailbox.new");
  assert_row(t, "known", "30");
  assert_row(t, "consumed (user online)", "9");
  assert_row(t, "puts", "20 0.10");
  assert_row(t, "replayed items", "18 0.09");
  assert_row(t, "redeliveries", "1 0.01");
  assert_row(t, "node id", "node-2");
  assert_row(t, "users bound here", "7");
  assert_row(t, "routed copies", "600 3.00");
  assert_row(t, "wasted (user not here)", "2 0.01");
  assert_row(t, "binds", "11 0.06");
  assert_row(t, "unbinds", "4 0.02");
  assert_row(t, "connected", "yes");
  assert_row(t, "reconnects", "2");
  assert_row(t, "unacked deliveries", "1");
  free(t);
}

static void test_table_states_and_gaps(void **state) {
  char *t;
  (void)state;
  t = table("{\"version\":\"1.2.3\",\"ready\":false,\"draining\":true,\"amqp_connected\":true,"
            "\"node_id\":null,\"cluster\":{\"binds\":0}}");
  assert_non_null(strstr(t, ": draining, up -\n"));
  /* What the daemon did not say is "-", never 0. */
  assert_row(t, "connections", "-");
  assert_row(t, "consumed", "- -");
  assert_row(t, "delivery", "- -");
  assert_non_null(strstr(t, "(not polled yet)"));
  /* An older daemon without mailboxes has no mailbox section, a single-mode
   * one no cluster section. */
  assert_null(strstr(t, "Mailboxes"));
  assert_null(strstr(t, "Cluster"));
  free(t);
  t = table("{\"version\":\"1.2.3\",\"ready\":false,\"draining\":false,\"amqp_connected\":false,"
            "\"ts_ms\":90061000,\"start_time_s\":0}");
  assert_non_null(
      strstr(t, ": NOT READY (not consuming: broker connection lost), up 1d 01h 01m\n"));
  assert_row(t, "connected", "no");
  free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_whole_and_byte_by_byte),
      cmocka_unit_test(test_parse_without_length_reads_to_eof),
      cmocka_unit_test(test_parse_refuses_what_is_not_http),
      cmocka_unit_test(test_table_figures),
      cmocka_unit_test(test_table_states_and_gaps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
