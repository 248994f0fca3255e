/* The pure parts of the admin endpoints: the text buffer, the histogram
 * (bucketing, quantiles as Prometheus computes them, both renderings) and the
 * two renderers of a metrics table, on a small table of their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/metrics_int.h"

static void test_sbuf_grows_and_escapes(void **state) {
  wr_sbuf_t sb = {0};
  char big[6000];
  (void)state;
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  wr_sbuf_printf(&sb, "a%d", 1);
  wr_sbuf_printf(&sb, "%s", big);
  assert_false(sb.oom);
  assert_int_equal(sb.len, 2 + sizeof(big) - 1);
  assert_int_equal(strlen(sb.s), sb.len);
  assert_memory_equal(sb.s, "a1xx", 4);
  free(sb.s);

  memset(&sb, 0, sizeof(sb));
  wr_sbuf_escaped(&sb, "q\"\\\n\t.", false);
  wr_sbuf_printf(&sb, "|");
  wr_sbuf_escaped(&sb, "q\"\\\n\t.", true);
  assert_string_equal(sb.s, "q\\\"\\\\\\n\t.|q\\\"\\\\\\n\\u0009.");
  free(sb.s);
}

static const double bounds3[] = {1, 2, 5};

static void test_hist_observe_buckets(void **state) {
  wr_hist_t h;
  (void)state;
  wr_hist_init(&h, bounds3, 3);
  /* A value equal to a bound belongs to that bound's bucket (le). */
  wr_hist_observe(&h, 1);
  wr_hist_observe(&h, 1.0001);
  wr_hist_observe(&h, 2);
  wr_hist_observe(&h, 5);
  wr_hist_observe(&h, 5.5);
  wr_hist_observe(&h, 1e9);
  /* Below zero (clocks of two machines) and NaN count as 0. */
  wr_hist_observe(&h, -30);
  wr_hist_observe(&h, NAN);
  assert_int_equal(h.buckets[0], 3);
  assert_int_equal(h.buckets[1], 2);
  assert_int_equal(h.buckets[2], 1);
  assert_int_equal(h.buckets[3], 2);
  assert_int_equal(h.count, 8);
  assert_true(fabs(h.sum - (1 + 1.0001 + 2 + 5 + 5.5 + 1e9)) < 1e-3);
  assert_true(h.max == 1e9);

  /* init empties it again. */
  wr_hist_init(&h, bounds3, 3);
  assert_int_equal(h.count, 0);
  assert_int_equal(h.buckets[3], 0);
  assert_true(h.sum == 0 && h.max == 0);
}

/* The figures Prometheus' histogram_quantile() gives for the same buckets. */
static void test_hist_quantile(void **state) {
  wr_hist_t h;
  int i;
  (void)state;
  wr_hist_init(&h, bounds3, 3);
  assert_true(wr_hist_quantile(&h, 0.5) == -1);
  /* 10 values in (1, 2]: the median is half-way through that bucket. */
  for (i = 0; i < 10; i++)
    wr_hist_observe(&h, 1.5);
  assert_true(fabs(wr_hist_quantile(&h, 0.5) - 1.5) < 1e-9);
  assert_true(fabs(wr_hist_quantile(&h, 1.0) - 2.0) < 1e-9);
  /* The first bucket starts at 0: 10 more values <= 1 put the median at 1. */
  for (i = 0; i < 10; i++)
    wr_hist_observe(&h, 0.2);
  assert_true(fabs(wr_hist_quantile(&h, 0.5) - 1.0) < 1e-9);
  assert_true(fabs(wr_hist_quantile(&h, 0.25) - 0.5) < 1e-9);
  assert_true(fabs(wr_hist_quantile(&h, 0.0)) < 1e-9);
  /* A rank in the +Inf bucket answers the last finite bound. */
  for (i = 0; i < 80; i++)
    wr_hist_observe(&h, 100);
  assert_true(fabs(wr_hist_quantile(&h, 0.99) - 5.0) < 1e-9);
  /* An empty bucket in between is skipped, not interpolated into. */
  wr_hist_init(&h, bounds3, 3);
  wr_hist_observe(&h, 0.5);
  wr_hist_observe(&h, 4);
  assert_true(fabs(wr_hist_quantile(&h, 0.75) - 3.5) < 1e-9);
}

static const double ms_bounds[] = {0.5, 1, 1800000};

static void test_hist_render_prom(void **state) {
  wr_hist_t h;
  wr_sbuf_t sb = {0};
  (void)state;
  wr_hist_init(&h, ms_bounds, 3);
  wr_hist_observe(&h, 0.25);
  wr_hist_observe(&h, 750);
  wr_hist_observe(&h, 4e6);
  /* Cumulative buckets, bounds and sum in seconds. */
  wr_hist_render_prom(&h, "x_seconds", 1000.0, &sb);
  assert_string_equal(sb.s, "x_seconds_bucket{le=\"0.0005\"} 1\n"
                            "x_seconds_bucket{le=\"0.001\"} 1\n"
                            "x_seconds_bucket{le=\"1800\"} 2\n"
                            "x_seconds_bucket{le=\"+Inf\"} 3\n"
                            "x_seconds_sum 4000.750250\n"
                            "x_seconds_count 3\n");
  free(sb.s);
}

static void test_hist_render_json(void **state) {
  wr_hist_t h;
  wr_sbuf_t sb = {0};
  (void)state;
  wr_hist_init(&h, ms_bounds, 3);
  wr_hist_render_json(&h, &sb);
  assert_string_equal(sb.s, "{\"count\":0,\"sum_ms\":0.000,\"p50_ms\":null,\"p99_ms\":null,"
                            "\"bounds_ms\":[0.5,1,1.8e+06],\"buckets\":[0,0,0,0]}");
  free(sb.s);
  memset(&sb, 0, sizeof(sb));
  wr_hist_observe(&h, 0.75);
  wr_hist_observe(&h, 0.75);
  wr_hist_observe(&h, 4e6);
  wr_hist_render_json(&h, &sb);
  /* p50: rank 1.5 of the two in (0.5, 1]; p99 lands in +Inf. */
  assert_string_equal(sb.s, "{\"count\":3,\"sum_ms\":4000001.500,\"p50_ms\":0.875,"
                            "\"p99_ms\":1800000.000,\"bounds_ms\":[0.5,1,1.8e+06],"
                            "\"buckets\":[0,2,0,1]}");
  free(sb.s);
}

/* A small table over a struct of its own, with every kind of row. */
typedef struct fake_s {
  uint64_t a, b, c;
  size_t n;
  bool up;
  int64_t unknown, known;
  double ms, secs, no_secs;
  wr_hist_t h;
} fake_t;

static wr_metric_value_t get_seven(const void *data) {
  (void)data;
  return (wr_metric_value_t){.u = 7};
}

static void prom_list(const void *data, const wr_metric_t *m, wr_sbuf_t *sb) {
  (void)data;
  wr_sbuf_printf(sb, "%s{i=\"1\"} 10\n%s{i=\"2\"} 20\n", m->name, m->name);
}

static void json_list(const void *data, wr_sbuf_t *sb) {
  assert_string_equal((const char *)data, "scrape");
  wr_sbuf_printf(sb, "[10,20]");
}

#define F(k, f) .kind = WR_MV_##k, .base = 1, .off = offsetof(fake_t, f)

static const wr_metric_t fake_table[] = {
    {NULL, 0, NULL, NULL, "first", .kind = WR_MV_U64, .get = get_seven},
    {"t_things_total", WR_METRIC_COUNTER, "Things.", "k=\"a\"", "things.a",
     .json_sum = "things_all", F(U64, a)},
    {"t_things_total", WR_METRIC_COUNTER, NULL, "k=\"b\"", "things.b", F(U64, b)},
    {"t_things_total", WR_METRIC_COUNTER, NULL, "k=\"c\"", NULL, F(U64, c)},
    {"t_size", WR_METRIC_GAUGE, "A size.", NULL, "size", F(SIZE, n)},
    {"t_up", WR_METRIC_GAUGE, "Up.", NULL, "up", F(BOOL, up)},
    {"t_unknown", WR_METRIC_GAUGE, "Never printed.", NULL, "sub.unknown", F(I64, unknown)},
    {"t_known", WR_METRIC_GAUGE, "Known.", NULL, "sub.known", F(I64, known)},
    {"t_no_seconds", WR_METRIC_GAUGE, "Never printed.", NULL, "sub.no_secs", F(SECONDS, no_secs)},
    {"t_last_seconds", WR_METRIC_GAUGE, "Milliseconds.", NULL, "last_ms", F(MS, ms)},
    {"t_seconds", WR_METRIC_GAUGE, "Seconds.", NULL, "secs", F(SECONDS, secs)},
    {"t_list", WR_METRIC_GAUGE, "A list.", NULL, "list", .kind = WR_MV_CUSTOM, .prom = prom_list,
     .json_value = json_list},
    {"t_wait_seconds", WR_METRIC_HISTOGRAM, "Waits.", NULL, "wait", F(HIST, h)},
    {"t_relaxed_total", WR_METRIC_COUNTER, "Another thread's.", NULL, NULL,
     .kind = WR_MV_U64_RELAXED, .base = 2, .off = 0},
};

static void fake_render(bool json, wr_sbuf_t *sb) {
  static const double b1[] = {1};
  static const uint64_t relaxed = 99;
  fake_t f = {.a = 1,
              .b = 2,
              .c = 4,
              .n = 5,
              .up = true,
              .unknown = -1,
              .known = 0,
              .ms = 1500,
              .secs = 12.346,
              .no_secs = -1};
  wr_metric_src_t src = {.base = {NULL, &f, &relaxed}, .data = "scrape"};
  wr_hist_init(&f.h, b1, 1);
  wr_hist_observe(&f.h, 0.5);
  wr_hist_observe(&f.h, 2000);
  if (json)
    wr_metrics_render_json(fake_table, sizeof(fake_table) / sizeof(fake_table[0]), &src, sb);
  else
    wr_metrics_render_prom(fake_table, sizeof(fake_table) / sizeof(fake_table[0]), &src, sb);
}

/* HELP and TYPE once per family from its first row; unknown values left
 * out with their family; ms as seconds; JSON-only rows absent. */
static void test_render_prom(void **state) {
  wr_sbuf_t sb = {0};
  (void)state;
  fake_render(false, &sb);
  assert_string_equal(sb.s, "# HELP t_things_total Things.\n"
                            "# TYPE t_things_total counter\n"
                            "t_things_total{k=\"a\"} 1\n"
                            "t_things_total{k=\"b\"} 2\n"
                            "t_things_total{k=\"c\"} 4\n"
                            "# HELP t_size A size.\n"
                            "# TYPE t_size gauge\n"
                            "t_size 5\n"
                            "# HELP t_up Up.\n"
                            "# TYPE t_up gauge\n"
                            "t_up 1\n"
                            "# HELP t_known Known.\n"
                            "# TYPE t_known gauge\n"
                            "t_known 0\n"
                            "# HELP t_last_seconds Milliseconds.\n"
                            "# TYPE t_last_seconds gauge\n"
                            "t_last_seconds 1.500000\n"
                            "# HELP t_seconds Seconds.\n"
                            "# TYPE t_seconds gauge\n"
                            "t_seconds 12.35\n"
                            "# HELP t_list A list.\n"
                            "# TYPE t_list gauge\n"
                            "t_list{i=\"1\"} 10\n"
                            "t_list{i=\"2\"} 20\n"
                            "# HELP t_wait_seconds Waits.\n"
                            "# TYPE t_wait_seconds histogram\n"
                            "t_wait_seconds_bucket{le=\"0.001\"} 1\n"
                            "t_wait_seconds_bucket{le=\"+Inf\"} 2\n"
                            "t_wait_seconds_sum 2.000500\n"
                            "t_wait_seconds_count 2\n"
                            "# HELP t_relaxed_total Another thread's.\n"
                            "# TYPE t_relaxed_total counter\n"
                            "t_relaxed_total 99\n");
  free(sb.s);
}

/* Nested objects opened and closed around adjacent "parent.key" rows, the
 * family sum before the family, null for unknown values, Prometheus-only
 * rows absent; and the result is JSON. */
static void test_render_json(void **state) {
  wr_sbuf_t sb = {0};
  json_error_t err;
  json_t *j;
  (void)state;
  fake_render(true, &sb);
  assert_string_equal(sb.s, "{\"first\":7,\"things_all\":7,\"things\":{\"a\":1,\"b\":2},\"size\":5,"
                            "\"up\":true,\"sub\":{\"unknown\":null,\"known\":0,\"no_secs\":null},"
                            "\"last_ms\":1500.000,\"secs\":12.35,\"list\":[10,20],"
                            "\"wait\":{\"count\":2,\"sum_ms\":2000.500,\"p50_ms\":1.000,"
                            "\"p99_ms\":1.000,\"bounds_ms\":[1],\"buckets\":[1,1]}}\n");
  j = json_loads(sb.s, 0, &err);
  assert_non_null(j);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "things"), "b")), 2);
  json_decref(j);
  free(sb.s);
}

/* A table whose last JSON row is nested still closes both objects. */
static void test_render_json_ends_nested(void **state) {
  wr_sbuf_t sb = {0};
  const wr_metric_t t[] = {{NULL, 0, NULL, NULL, "a.b", .kind = WR_MV_U64, .get = get_seven}};
  wr_metric_src_t src = {0};
  (void)state;
  wr_metrics_render_json(t, 1, &src, &sb);
  assert_string_equal(sb.s, "{\"a\":{\"b\":7}}\n");
  free(sb.s);
  memset(&sb, 0, sizeof(sb));
  wr_metrics_render_json(t, 0, &src, &sb);
  assert_string_equal(sb.s, "{}\n");
  free(sb.s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sbuf_grows_and_escapes),
      cmocka_unit_test(test_hist_observe_buckets),
      cmocka_unit_test(test_hist_quantile),
      cmocka_unit_test(test_hist_render_prom),
      cmocka_unit_test(test_hist_render_json),
      cmocka_unit_test(test_render_prom),
      cmocka_unit_test(test_render_json),
      cmocka_unit_test(test_render_json_ends_nested),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
