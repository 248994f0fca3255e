/* Text buffer, histogram and the two renderers of a metrics table (see
 * metrics_int.h). Pure: they only read the table, the values it points at
 * and what the getters return. */
#include "bridge/metrics_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wr_sbuf_printf(wr_sbuf_t *sb, const char *fmt, ...) {
  va_list ap;
  int n;
  if (sb->oom)
    return;
  for (;;) {
    size_t room = sb->cap - sb->len;
    va_start(ap, fmt);
    n = vsnprintf(sb->s ? sb->s + sb->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      sb->oom = true;
      return;
    }
    if ((size_t)n < room) {
      sb->len += (size_t)n;
      return;
    }
    size_t ncap = (sb->cap ? sb->cap * 2 : 4096) + (size_t)n;
    char *ns = realloc(sb->s, ncap);
    if (ns == NULL) {
      sb->oom = true;
      return;
    }
    sb->s = ns;
    sb->cap = ncap;
  }
}

void wr_sbuf_escaped(wr_sbuf_t *sb, const char *s, bool json) {
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '\\' || c == '"')
      wr_sbuf_printf(sb, "\\%c", c);
    else if (c == '\n')
      wr_sbuf_printf(sb, "\\n");
    else if (json && c < 0x20)
      wr_sbuf_printf(sb, "\\u%04x", c);
    else
      wr_sbuf_printf(sb, "%c", c);
  }
}

void wr_hist_init(wr_hist_t *h, const double *bounds, size_t n) {
  assert(n >= 1 && n <= WR_HIST_MAX_BOUNDS);
  for (size_t i = 1; i < n; i++)
    assert(bounds[i - 1] < bounds[i]);
  memset(h, 0, sizeof(*h));
  h->bounds = bounds;
  h->n_bounds = n;
}

void wr_hist_observe(wr_hist_t *h, double v) {
  size_t i;
  /* Clocks of two machines (created_at) or two threads can disagree a
   * little; a value below zero is a zero wait, and NaN must not poison sum. */
  if (!(v > 0))
    v = 0;
  for (i = 0; i < h->n_bounds && v > h->bounds[i]; i++)
    ;
  h->buckets[i]++;
  h->count++;
  h->sum += v;
  if (v > h->max)
    h->max = v;
}

double wr_hist_quantile(const wr_hist_t *h, double q) {
  double rank = q * (double)h->count, lo = 0;
  uint64_t cum = 0;
  if (h->count == 0)
    return -1;
  for (size_t i = 0; i < h->n_bounds; i++) {
    uint64_t n = h->buckets[i];
    if (n > 0 && (double)(cum + n) >= rank)
      return lo + (h->bounds[i] - lo) * ((rank - (double)cum) / (double)n);
    cum += n;
    lo = h->bounds[i];
  }
  return h->bounds[h->n_bounds - 1];
}

void wr_hist_render_prom(const wr_hist_t *h, const char *name, double divisor, wr_sbuf_t *sb) {
  uint64_t cum = 0;
  for (size_t i = 0; i < h->n_bounds; i++) {
    cum += h->buckets[i];
    wr_sbuf_printf(sb, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i] / divisor,
                   (unsigned long long)cum);
  }
  cum += h->buckets[h->n_bounds];
  wr_sbuf_printf(sb, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
                 (unsigned long long)cum, name, h->sum / divisor, name,
                 (unsigned long long)h->count);
}

static void json_num_or_null(wr_sbuf_t *sb, double v, const char *fmt) {
  if (v < 0)
    wr_sbuf_printf(sb, "null");
  else
    wr_sbuf_printf(sb, fmt, v);
}

void wr_hist_render_json(const wr_hist_t *h, wr_sbuf_t *sb) {
  size_t i;
  wr_sbuf_printf(sb, "{\"count\":%llu,\"sum_ms\":%.3f,\"p50_ms\":", (unsigned long long)h->count,
                 h->sum);
  json_num_or_null(sb, wr_hist_quantile(h, 0.5), "%.3f");
  wr_sbuf_printf(sb, ",\"p99_ms\":");
  json_num_or_null(sb, wr_hist_quantile(h, 0.99), "%.3f");
  wr_sbuf_printf(sb, ",\"bounds_ms\":[");
  for (i = 0; i < h->n_bounds; i++)
    wr_sbuf_printf(sb, "%s%g", i ? "," : "", h->bounds[i]);
  wr_sbuf_printf(sb, "],\"buckets\":[");
  for (i = 0; i <= h->n_bounds; i++)
    wr_sbuf_printf(sb, "%s%llu", i ? "," : "", (unsigned long long)h->buckets[i]);
  wr_sbuf_printf(sb, "]}");
}

wr_metric_value_t wr_metric_read(const wr_metric_t *m, const wr_metric_src_t *src) {
  wr_metric_value_t v = {0};
  const char *p;
  if (m->get != NULL)
    return m->get(src->data);
  if (m->kind == WR_MV_CUSTOM)
    return v;
  assert(m->base < WR_METRIC_NBASES && src->base[m->base] != NULL);
  p = (const char *)src->base[m->base] + m->off;
  switch (m->kind) {
  case WR_MV_U64:
    v.u = *(const uint64_t *)p;
    break;
  case WR_MV_U64_RELAXED:
    v.u = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
    break;
  case WR_MV_SIZE:
    v.u = *(const size_t *)p;
    break;
  case WR_MV_I64:
    v.i = *(const int64_t *)p;
    break;
  case WR_MV_BOOL:
    v.u = *(const bool *)p;
    break;
  case WR_MV_MS:
  case WR_MV_SECONDS:
    v.d = *(const double *)p;
    break;
  case WR_MV_HIST:
    v.h = (const wr_hist_t *)p;
    break;
  case WR_MV_CUSTOM:
    break;
  }
  return v;
}

/* Unknown values are left out of /metrics and null in /api/stats. */
static bool known(const wr_metric_t *m, const wr_metric_value_t *v) {
  if (m->kind == WR_MV_I64)
    return v->i >= 0;
  if (m->kind == WR_MV_SECONDS)
    return v->d >= 0;
  return true;
}

static bool starts_family(const wr_metric_t *prev, const wr_metric_t *m) {
  return prev == NULL || strcmp(prev->name, m->name) != 0;
}

static const char *type_str(wr_metric_type_t t) {
  switch (t) {
  case WR_METRIC_COUNTER:
    return "counter";
  case WR_METRIC_GAUGE:
    return "gauge";
  case WR_METRIC_HISTOGRAM:
    return "histogram";
  }
  return "untyped";
}

static void prom_sample(const wr_metric_t *m, const wr_metric_value_t *v, wr_sbuf_t *sb) {
  if (m->kind == WR_MV_HIST) {
    wr_hist_render_prom(v->h, m->name, 1000.0, sb);
    return;
  }
  wr_sbuf_printf(sb, "%s%s%s%s ", m->name, m->labels ? "{" : "", m->labels ? m->labels : "",
                 m->labels ? "}" : "");
  switch (m->kind) {
  case WR_MV_I64:
    wr_sbuf_printf(sb, "%lld\n", (long long)v->i);
    break;
  case WR_MV_MS:
    wr_sbuf_printf(sb, "%.6f\n", v->d / 1000.0);
    break;
  case WR_MV_SECONDS:
    wr_sbuf_printf(sb, "%.2f\n", v->d);
    break;
  default:
    wr_sbuf_printf(sb, "%llu\n", (unsigned long long)v->u);
    break;
  }
}

void wr_metrics_render_prom(const wr_metric_t *table, size_t n, const wr_metric_src_t *src,
                            wr_sbuf_t *sb) {
  const wr_metric_t *family = NULL, *header_due = NULL;
  for (size_t i = 0; i < n; i++) {
    const wr_metric_t *m = &table[i];
    wr_metric_value_t v = {0};
    if (m->name == NULL)
      continue;
    if (starts_family(family, m))
      family = header_due = m;
    if (m->kind != WR_MV_CUSTOM) {
      v = wr_metric_read(m, src);
      if (!known(m, &v))
        continue;
    }
    /* HELP and TYPE before the family's first sample, so a family whose
     * only value is unknown (no /proc) is left out whole. */
    if (header_due != NULL) {
      wr_sbuf_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", family->name, family->help, family->name,
                     type_str(family->type));
      header_due = NULL;
    }
    if (m->kind == WR_MV_CUSTOM)
      m->prom(src->data, m, sb);
    else
      prom_sample(m, &v, sb);
  }
}

/* Writes JSON keys, opening and closing the one level of nested objects
 * that "parent.key" paths ask for. */
typedef struct json_out_s {
  wr_sbuf_t *sb;
  const char *parent; /* open nested object, or NULL */
  size_t parent_len;
  bool top_empty, parent_empty;
} json_out_t;

static void json_key(json_out_t *j, const char *path) {
  const char *dot = strchr(path, '.');
  size_t plen = dot ? (size_t)(dot - path) : 0;
  if (j->parent != NULL &&
      (dot == NULL || plen != j->parent_len || strncmp(path, j->parent, plen) != 0)) {
    wr_sbuf_printf(j->sb, "}");
    j->parent = NULL;
  }
  if (dot != NULL && j->parent == NULL) {
    wr_sbuf_printf(j->sb, "%s\"%.*s\":{", j->top_empty ? "" : ",", (int)plen, path);
    j->top_empty = false;
    j->parent = path;
    j->parent_len = plen;
    j->parent_empty = true;
  }
  if (dot != NULL) {
    wr_sbuf_printf(j->sb, "%s\"%s\":", j->parent_empty ? "" : ",", dot + 1);
    j->parent_empty = false;
  } else {
    wr_sbuf_printf(j->sb, "%s\"%s\":", j->top_empty ? "" : ",", path);
    j->top_empty = false;
  }
}

static void json_value(const wr_metric_t *m, const wr_metric_src_t *src, wr_sbuf_t *sb) {
  wr_metric_value_t v;
  if (m->kind == WR_MV_CUSTOM) {
    m->json_value(src->data, sb);
    return;
  }
  v = wr_metric_read(m, src);
  if (!known(m, &v)) {
    wr_sbuf_printf(sb, "null");
    return;
  }
  switch (m->kind) {
  case WR_MV_I64:
    wr_sbuf_printf(sb, "%lld", (long long)v.i);
    break;
  case WR_MV_BOOL:
    wr_sbuf_printf(sb, "%s", v.u ? "true" : "false");
    break;
  case WR_MV_MS:
    wr_sbuf_printf(sb, "%.3f", v.d);
    break;
  case WR_MV_SECONDS:
    wr_sbuf_printf(sb, "%.2f", v.d);
    break;
  case WR_MV_HIST:
    wr_hist_render_json(v.h, sb);
    break;
  default:
    wr_sbuf_printf(sb, "%llu", (unsigned long long)v.u);
    break;
  }
}

void wr_metrics_render_json(const wr_metric_t *table, size_t n, const wr_metric_src_t *src,
                            wr_sbuf_t *sb) {
  json_out_t j = {.sb = sb, .top_empty = true};
  const wr_metric_t *family = NULL;
  wr_sbuf_printf(sb, "{");
  for (size_t i = 0; i < n; i++) {
    const wr_metric_t *m = &table[i];
    if (m->name != NULL && starts_family(family, m)) {
      family = m;
      if (m->json_sum != NULL) {
        uint64_t sum = 0;
        for (size_t k = i; k < n && table[k].name != NULL && strcmp(table[k].name, m->name) == 0;
             k++)
          sum += wr_metric_read(&table[k], src).u;
        json_key(&j, m->json_sum);
        wr_sbuf_printf(sb, "%llu", (unsigned long long)sum);
      }
    }
    if (m->json == NULL)
      continue;
    json_key(&j, m->json);
    json_value(m, src, sb);
  }
  wr_sbuf_printf(sb, "%s}\n", j.parent != NULL ? "}" : "");
}
