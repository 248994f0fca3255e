/* The pure parts of the admin endpoints (README.md, Operating): a growable text
 * buffer, a fixed-bucket histogram, and a metrics table with its two
 * renderers, Prometheus text for /metrics and JSON for /api/stats. No I/O, no
 * locks, no knowledge of the bridge: admin.c holds warren's table and gathers
 * what a scrape reads. */
#ifndef WARREN_BRIDGE_METRICS_INT_H
#define WARREN_BRIDGE_METRICS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable string for response bodies. Zero-initialise it; the caller
 * frees s. After an allocation failure oom is set and appends do nothing. */
typedef struct wr_sbuf_s {
  char *s; /* NUL-terminated once anything was appended */
  size_t len, cap;
  bool oom;
} wr_sbuf_t;

/* Appends printf-formatted text. */
void wr_sbuf_printf(wr_sbuf_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends s escaped for a Prometheus label value (\\, \" and \n) or, with
 * json set, for the inside of a JSON string (also every other control
 * character). s is borrowed. */
void wr_sbuf_escaped(wr_sbuf_t *sb, const char *s, bool json);

#define WR_HIST_MAX_BOUNDS 24

/* Counts of observed values by fixed upper bounds, as a Prometheus
 * histogram keeps them. Values are milliseconds: the Prometheus rendering
 * scales them, the JSON rendering names them _ms. Embedded; a zeroed one must
 * be given its bounds with wr_hist_init before the first observation. */
typedef struct wr_hist_s {
  const double *bounds; /* ascending, finite; borrowed, must outlive the histogram */
  size_t n_bounds;      /* 1..WR_HIST_MAX_BOUNDS */
  /* buckets[i] counts values in (bounds[i-1], bounds[i]], not cumulative;
   * buckets[n_bounds] counts those above the last bound (+Inf). */
  uint64_t buckets[WR_HIST_MAX_BOUNDS + 1];
  uint64_t count;
  double sum; /* of every value observed */
  double max; /* largest value observed, 0 before the first */
} wr_hist_t;

/* Empties h and sets its bounds (borrowed: n ascending finite values). */
void wr_hist_init(wr_hist_t *h, const double *bounds, size_t n);

/* Counts v (negative or NaN counts as 0). */
void wr_hist_observe(wr_hist_t *h, double v);

/* The q-quantile (0..1), interpolated linearly inside its bucket as
 * Prometheus' histogram_quantile() does (the first bucket starts at 0; a rank
 * in the +Inf bucket answers the last bound); -1 when h is empty. */
double wr_hist_quantile(const wr_hist_t *h, double q);

/* Appends the sample lines of the Prometheus histogram name: cumulative
 * name_bucket{le="…"} lines up to +Inf, name_sum and name_count, bounds and
 * sum divided by divisor (1000 turns ms into seconds). No HELP/TYPE. */
void wr_hist_render_prom(const wr_hist_t *h, const char *name, double divisor, wr_sbuf_t *sb);

/* Appends a JSON object: {"count","sum_ms","p50_ms","p99_ms" (null when
 * empty),"bounds_ms":[…],"buckets":[…]} with the buckets not cumulative and
 * one more than the bounds (+Inf), so a client can compute percentiles over
 * any window from the difference of two polls. */
void wr_hist_render_json(const wr_hist_t *h, wr_sbuf_t *sb);

typedef enum { WR_METRIC_COUNTER, WR_METRIC_GAUGE, WR_METRIC_HISTOGRAM } wr_metric_type_t;

/* How a row's value is stored, and so how both renderers print it. */
typedef enum {
  WR_MV_U64,         /* uint64_t, written by the thread that scrapes */
  WR_MV_U64_RELAXED, /* uint64_t another thread writes with relaxed atomics */
  WR_MV_SIZE,        /* size_t */
  WR_MV_I64,         /* int64_t; negative means unknown: no sample, JSON null */
  WR_MV_BOOL,        /* bool: 0/1 in Prometheus, false/true in JSON */
  WR_MV_MS,          /* double ms: seconds in Prometheus, ms in JSON */
  WR_MV_SECONDS,     /* double s, two decimals; negative means unknown */
  WR_MV_HIST,        /* wr_hist_t of ms: seconds in Prometheus */
  WR_MV_CUSTOM,      /* the row's prom and json callbacks print it */
} wr_metric_kind_t;

/* A value read for a row: the member the row's kind names is set. */
typedef struct wr_metric_value_s {
  uint64_t u; /* U64, U64_RELAXED, SIZE, BOOL */
  int64_t i;  /* I64 */
  double d;   /* MS, SECONDS */
  const wr_hist_t *h;
} wr_metric_value_t;

#define WR_METRIC_NBASES 8

/* What a table's rows read during one rendering: base[row->base] + row->off
 * is where a value is stored; data goes to getters and callbacks. Borrowed. */
typedef struct wr_metric_src_s {
  const void *base[WR_METRIC_NBASES];
  const void *data;
} wr_metric_src_t;

/* One row of a metrics table: one Prometheus sample (or histogram, or what a
 * custom callback prints) and/or one key of the JSON object. Rows of a
 * Prometheus family are adjacent; the first one carries its help text (HELP
 * and TYPE are printed once, before the first sample; a family with no
 * known value is left out). */
typedef struct wr_metric_s wr_metric_t;
struct wr_metric_s {
  const char *name; /* Prometheus family; NULL: JSON only */
  wr_metric_type_t type;
  const char *help;   /* on a family's first row, NULL on the others */
  const char *labels; /* `k="v",…` without braces, NULL for none */
  /* Key in the JSON object, "parent.key" for a key of a nested object
   * (rows of one parent adjacent); NULL: Prometheus only. */
  const char *json;
  /* On a family's first row: a JSON key that gets the sum of the family's
   * values, printed before them. */
  const char *json_sum;
  wr_metric_kind_t kind;
  unsigned base; /* index into wr_metric_src_t.base */
  size_t off;
  /* When set, reads the value instead of base + off. */
  wr_metric_value_t (*get)(const void *data);
  /* WR_MV_CUSTOM: appends the family's sample lines (after HELP/TYPE), and
   * the JSON value for the key json. */
  void (*prom)(const void *data, const wr_metric_t *m, wr_sbuf_t *sb);
  void (*json_value)(const void *data, wr_sbuf_t *sb);
};

/* Appends every row of table (n rows) as Prometheus text format 0.0.4.
 * table and src are borrowed. */
void wr_metrics_render_prom(const wr_metric_t *table, size_t n, const wr_metric_src_t *src,
                            wr_sbuf_t *sb);

/* Appends the rows that have a JSON key as one JSON object and a newline. */
void wr_metrics_render_json(const wr_metric_t *table, size_t n, const wr_metric_src_t *src,
                            wr_sbuf_t *sb);

/* Reads row m's value (for tests and sums). */
wr_metric_value_t wr_metric_read(const wr_metric_t *m, const wr_metric_src_t *src);

#endif
