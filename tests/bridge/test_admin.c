/* warren's metrics table (bridge/admin.c) keeps /metrics and /api/stats in
 * step: the table is well formed, every dead-letter reason has its row, and
 * the two endpoints rendered from one fake bridge — every counter a distinct
 * number — show every row, with the same figure wherever a row is in both,
 * HELP and TYPE once before each family's samples, and JSON that parses and
 * holds no key the table does not declare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/bridge_int.h"

#define NROWS wr_admin_n_metrics
#define ROW(i) (&wr_admin_metrics[i])

static bool same_family(const wr_metric_t *a, const wr_metric_t *b) {
  return a->name != NULL && b->name != NULL && strcmp(a->name, b->name) == 0;
}

static bool valid_name(const char *s, bool dot_ok) {
  size_t dots = 0;
  if (*s == '\0' || isdigit((unsigned char)*s))
    return false;
  for (; *s != '\0'; s++) {
    if (*s == '.' && dot_ok && dots++ == 0)
      continue;
    if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
      return false;
  }
  return true;
}

static size_t parent_len(const char *path) {
  const char *dot = strchr(path, '.');
  return dot ? (size_t)(dot - path) : 0;
}

/* What the renderers rely on and what Prometheus' linter asks for. */
static void test_table_shape(void **state) {
  (void)state;
  assert_true(NROWS > 50);
  for (size_t i = 0; i < NROWS; i++) {
    const wr_metric_t *m = ROW(i), *prev = NULL;
    for (size_t k = i; k-- > 0;)
      if (ROW(k)->name != NULL) {
        prev = ROW(k);
        break;
      }
    assert_true(m->name != NULL || m->json != NULL);
    if (m->kind == WR_MV_CUSTOM) {
      assert_true(m->name == NULL || m->prom != NULL);
      assert_true(m->json == NULL || m->json_value != NULL);
    }
    if (m->name != NULL) {
      bool first = prev == NULL || !same_family(prev, m);
      assert_true(valid_name(m->name, false));
      /* A family's rows are adjacent: its name never comes back later. */
      for (size_t k = i + 1; k < NROWS && first; k++)
        if (ROW(k)->name != NULL && !same_family(ROW(k), m)) {
          for (size_t l = k + 1; l < NROWS; l++)
            if (same_family(ROW(l), m))
              fail_msg("family %s split by %s", m->name, ROW(k)->name);
          break;
        }
      if (first) {
        assert_non_null(m->help);
        assert_true(strlen(m->help) > 10 && m->help[strlen(m->help) - 1] == '.');
      } else {
        if (m->help != NULL || m->type != prev->type || m->json_sum != NULL)
          fail_msg("row %zu of %s: help and type come from the family's first row", i, m->name);
      }
      if (m->type == WR_METRIC_COUNTER)
        assert_non_null(strstr(m->name, "_total"));
      assert_true((m->type == WR_METRIC_HISTOGRAM) == (m->kind == WR_MV_HIST));
      if (m->kind == WR_MV_HIST)
        assert_null(m->labels);
      /* No two samples of one family share their labels. */
      for (size_t k = i + 1; k < NROWS; k++)
        if (same_family(ROW(k), m) && m->kind != WR_MV_CUSTOM)
          assert_false(m->labels == NULL || ROW(k)->labels == NULL ||
                       strcmp(m->labels, ROW(k)->labels) == 0);
    }
    if (m->json != NULL || m->json_sum != NULL) {
      /* Keys need no escaping, nest one level, and are unique; a parent's
       * keys are adjacent, so the object is opened once. */
      const char *keys[2] = {m->json, m->json_sum};
      for (int q = 0; q < 2; q++) {
        const char *key = keys[q];
        size_t pl;
        if (key == NULL)
          continue;
        assert_true(valid_name(key, true));
        pl = parent_len(key);
        for (size_t k = i + 1; k < NROWS; k++) {
          const char *other[2] = {ROW(k)->json, ROW(k)->json_sum};
          for (int r = 0; r < 2; r++) {
            if (other[r] == NULL)
              continue;
            if (strcmp(other[r], key) == 0)
              fail_msg("JSON key %s twice", key);
            if (pl > 0 && parent_len(other[r]) == 0 && strlen(other[r]) == pl &&
                strncmp(other[r], key, pl) == 0)
              fail_msg("JSON key %s is also the parent of %s", other[r], key);
          }
        }
        if (pl == 0)
          continue;
        bool left = false;
        for (size_t k = i + 1; k < NROWS; k++) {
          const char *o = ROW(k)->json ? ROW(k)->json : ROW(k)->json_sum;
          if (o == NULL)
            continue;
          bool same = parent_len(o) == pl && strncmp(o, key, pl) == 0;
          if (same && left)
            fail_msg("JSON object %.*s is split", (int)pl, key);
          if (!same)
            left = true;
        }
      }
    }
    if (m->json_sum != NULL)
      for (size_t k = i; k < NROWS && same_family(ROW(k), m); k++)
        assert_true(ROW(k)->kind == WR_MV_U64 || ROW(k)->kind == WR_MV_U64_RELAXED ||
                    ROW(k)->kind == WR_MV_SIZE);
  }
}

/* A reason added to wr_env_result_t needs its row, or its messages would go
 * to Q.dead uncounted. */
static void test_every_dead_letter_reason(void **state) {
  size_t rows = 0;
  (void)state;
  for (size_t i = 0; i < NROWS; i++)
    if (ROW(i)->name != NULL && strcmp(ROW(i)->name, "warren_dead_lettered_total") == 0)
      rows++;
  assert_int_equal(rows, WR_ENV_BAD_FIELD - WR_ENV_TOO_LARGE + 1);
  for (int r = WR_ENV_TOO_LARGE; r <= WR_ENV_BAD_FIELD; r++) {
    char labels[64];
    bool found = false;
    snprintf(labels, sizeof(labels), "reason=\"%s\"", wr_env_result_str((wr_env_result_t)r));
    for (size_t i = 0; i < NROWS; i++) {
      const wr_metric_t *m = ROW(i);
      if (m->name == NULL || strcmp(m->name, "warren_dead_lettered_total") != 0 ||
          strcmp(m->labels, labels) != 0)
        continue;
      found = true;
      assert_int_equal(m->off, offsetof(wr_bridge_stats_t, dead_by_reason[r]));
      assert_non_null(m->json);
      assert_string_equal(strchr(m->json, '.') + 1, wr_env_result_str((wr_env_result_t)r));
    }
    if (!found)
      fail_msg("no row for %s", labels);
  }
}

/* Every reason the core parks a copy for (amqp/amqp.h, wr_amqp_pub_t.reason)
 * has its row reading its own counter, so parked_by_reason adds up to what
 * Q.parked received from warren. */
static void test_every_park_reason(void **state) {
  static const struct {
    const char *reason;
    size_t off;
  } want[] = {{"max_attempts", offsetof(wr_bridge_stats_t, parked_max_attempts)},
              {"expired", offsetof(wr_bridge_stats_t, parked_expired)},
              {"unacked", offsetof(wr_bridge_stats_t, parked_unacked)}};
  size_t rows = 0;
  (void)state;
  for (size_t i = 0; i < NROWS; i++)
    if (ROW(i)->name != NULL && strcmp(ROW(i)->name, "warren_parked_total") == 0)
      rows++;
  assert_int_equal(rows, sizeof(want) / sizeof(want[0]));
  for (size_t r = 0; r < sizeof(want) / sizeof(want[0]); r++) {
    char labels[64], key[64];
    bool found = false;
    snprintf(labels, sizeof(labels), "reason=\"%s\"", want[r].reason);
    snprintf(key, sizeof(key), "parked_by_reason.%s", want[r].reason);
    for (size_t i = 0; i < NROWS; i++) {
      const wr_metric_t *m = ROW(i);
      if (m->name == NULL || strcmp(m->name, "warren_parked_total") != 0 ||
          strcmp(m->labels, labels) != 0)
        continue;
      found = true;
      assert_int_equal(m->base, 0); /* the loop's counters */
      assert_int_equal(m->off, want[r].off);
      assert_string_equal(m->json, key);
    }
    if (!found)
      fail_msg("no row for %s", labels);
  }
}

typedef struct fake_s {
  wr_config_t cfg;
  wr_bridge_t *b;
  wr_ws_stats_t ws;
  wr_amqp_stats_t as;
} fake_t;

static const double loop_bounds_check[] = {1, 2, 5, 10, 25, 50, 100, 250, 1000};

/* A bridge whose every figure is a different number. */
static void fake_init(fake_t *f) {
  wr_bridge_t *b = calloc(1, sizeof(*b));
  wr_bridge_stats_t *st;
  uint64_t *p;
  size_t i;
  static int items[3];

  memset(f, 0, sizeof(*f));
  assert_non_null(b);
  f->b = b;
  assert_int_equal(wr_config_init(&f->cfg), 0);
  f->cfg.n_retry_delays = 2;
  f->cfg.retry_delays_ms[0] = 300;
  f->cfg.retry_delays_ms[1] = 600;
  b->cfg = &f->cfg;
  pthread_mutex_init(&b->qstats_lock, NULL);
  atomic_init(&b->consuming, true);
  atomic_init(&b->lost_generation, 0);
  b->listening = true;
  b->phase = WR_PHASE_RUNNING;
  assert_int_equal(wr_ring_init(&b->deliveries, 4), 0);
  assert_int_equal(wr_ring_init(&b->commands, 8), 0);
  assert_int_equal(wr_ring_push(&b->deliveries, &items[0]), 0);
  assert_int_equal(wr_ring_push(&b->commands, &items[1]), 0);
  assert_int_equal(wr_ring_push(&b->commands, &items[2]), 0);

  p = (uint64_t *)&f->ws;
  for (i = 0; i < sizeof(f->ws) / sizeof(uint64_t); i++)
    p[i] = 10000 + i;
  p = (uint64_t *)&f->as;
  for (i = 0; i < sizeof(f->as) / sizeof(uint64_t); i++)
    p[i] = 20000 + i;

  st = &b->stats;
  wr_bridge_stats_init(st);
  /* The histograms got the bounds their metrics always had. */
  assert_int_equal(st->loop_busy.n_bounds, 9);
  assert_memory_equal(st->loop_busy.bounds, loop_bounds_check, sizeof(loop_bounds_check));
  assert_int_equal(st->latency.n_bounds, 18);
  assert_true(st->latency.bounds[0] == 0.5 && st->latency.bounds[17] == 1800000);
  st->consumed[0] = 30001;
  st->consumed[1] = 30002;
  for (i = 0; i < 8; i++)
    st->dead_by_reason[i] = 30010 + i;
  st->delivered = 30020;
  st->written = 30021;
  st->client_acks = 30022;
  st->client_acks_unknown = 30023;
  st->client_bad_messages = 30024;
  st->targets_delivered = 30025;
  st->targets_offline = 30026;
  st->ack_timeouts = 30027;
  for (i = 0; i < WR_CONFIG_MAX_DELAYS; i++)
    st->retried[i] = 30030 + i;
  st->parked_max_attempts = 30060;
  st->parked_expired = 30061;
  st->broadcasts = 30062;
  st->fanout_last_conns = 30063;
  st->deferred = 30064;
  st->requeued = 30065;
  st->discarded_stale = 30066;
  st->copy_user_ignored = 30067;
  st->mailbox_copies = 30070;
  st->mailbox_requeued = 30071;
  st->mailbox_redelivered = 30072;
  st->mailbox_pauses = 30073;
  st->mailbox_rejected = 30074;
  st->parked_unacked = 30075;
  wr_hist_observe(&st->mailbox_replay, 4);
  wr_hist_observe(&st->mailbox_replay, 40);
  st->fanout_last_ms = 12.5;
  wr_hist_observe(&st->fanout, 12.5);
  wr_hist_observe(&st->latency, 0.3);
  wr_hist_observe(&st->latency, 700);
  wr_hist_observe(&st->latency, 3000);
  wr_hist_observe(&st->loop_busy, 0.5);
  wr_hist_observe(&st->loop_busy, 30);
  wr_hist_observe(&st->loop_cpu, 0.4);
  wr_hist_observe(&st->loop_cpu, 3);
  b->core.index.users_online = 40001;
  b->core.n_pendings = 40002;
  b->ov_len = 40003;

  snprintf(b->qstats[0].name, sizeof(b->qstats[0].name), "%s", f->cfg.queue);
  b->qstats[0].messages = 50001;
  b->qstats[0].consumers = 50002;
  snprintf(b->qstats[1].name, sizeof(b->qstats[1].name), "%s.dead", f->cfg.queue);
  b->qstats[1].messages = -1;
  b->qstats[1].consumers = 50003;
  snprintf(b->qstats[2].name, sizeof(b->qstats[2].name), "odd\"name\\\n");
  b->qstats[2].messages = 50004;
  b->qstats[2].consumers = 50005;
  snprintf(b->qstats[3].name, sizeof(b->qstats[3].name), "%s.mailbox.new", f->cfg.queue);
  b->qstats[3].messages = 50006;
  b->qstats[3].consumers = 50007;
  b->n_qstats = 4;
}

static void fake_close(fake_t *f) {
  wr_ring_close(&f->b->deliveries);
  wr_ring_close(&f->b->commands);
  pthread_mutex_destroy(&f->b->qstats_lock);
  free(f->b);
  wr_config_close(&f->cfg);
}

#define MAX_LINES 1024

/* /metrics as parsed lines: samples keyed "name{labels}". */
typedef struct prom_s {
  char *text;
  size_t n;
  struct {
    const char *line;
    char key[512];
    double value;
    bool sample;
  } l[MAX_LINES];
} prom_t;

static void prom_parse(prom_t *p, char *text) {
  char *save = NULL, *line;
  p->text = text;
  p->n = 0;
  for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    assert_true(p->n < MAX_LINES);
    p->l[p->n].line = line;
    p->l[p->n].sample = line[0] != '#';
    if (p->l[p->n].sample) {
      char *sp = strrchr(line, ' ');
      assert_non_null(sp);
      assert_true((size_t)(sp - line) < sizeof(p->l[0].key));
      memcpy(p->l[p->n].key, line, (size_t)(sp - line));
      p->l[p->n].key[sp - line] = '\0';
      p->l[p->n].value = strtod(sp + 1, NULL);
    }
    p->n++;
  }
}

static bool prom_get(const prom_t *p, const char *key, double *v) {
  for (size_t i = 0; i < p->n; i++)
    if (p->l[i].sample && strcmp(p->l[i].key, key) == 0) {
      *v = p->l[i].value;
      return true;
    }
  return false;
}

static double prom_must(const prom_t *p, const char *name, const char *labels, const char *suffix) {
  char key[512];
  double v = 0;
  snprintf(key, sizeof(key), "%s%s%s%s%s", name, suffix, labels ? "{" : "", labels ? labels : "",
           labels ? "}" : "");
  if (!prom_get(p, key, &v))
    fail_msg("/metrics has no %s", key);
  return v;
}

static const wr_metric_t *family_of(const char *metric) {
  for (size_t i = 0; i < NROWS; i++) {
    const wr_metric_t *m = ROW(i);
    size_t n;
    if (m->name == NULL)
      continue;
    n = strlen(m->name);
    if (strcmp(metric, m->name) == 0)
      return m;
    if (m->type == WR_METRIC_HISTOGRAM && strncmp(metric, m->name, n) == 0 &&
        (strcmp(metric + n, "_bucket") == 0 || strcmp(metric + n, "_sum") == 0 ||
         strcmp(metric + n, "_count") == 0))
      return m;
  }
  return NULL;
}

static json_t *json_path(json_t *root, const char *path) {
  size_t pl = parent_len(path);
  char parent[64];
  if (pl == 0)
    return json_object_get(root, path);
  assert_true(pl < sizeof(parent));
  memcpy(parent, path, pl);
  parent[pl] = '\0';
  return json_object_get(json_object_get(root, parent), path + pl + 1);
}

static bool declared(const char *key, const char *parent) {
  for (size_t i = 0; i < NROWS; i++) {
    const char *keys[2] = {ROW(i)->json, ROW(i)->json_sum};
    for (int q = 0; q < 2; q++) {
      const char *k = keys[q];
      size_t pl;
      if (k == NULL)
        continue;
      pl = parent_len(k);
      if (parent == NULL && pl == 0 && strcmp(k, key) == 0)
        return true;
      if (parent == NULL && pl == strlen(key) && strncmp(k, key, pl) == 0)
        return true;
      if (parent != NULL && pl == strlen(parent) && strncmp(k, parent, pl) == 0 &&
          strcmp(k + pl + 1, key) == 0)
        return true;
    }
  }
  return false;
}

static bool near(double a, double b) {
  return fabs(a - b) <= 1e-6 * (fabs(b) > 1 ? fabs(b) : 1) + 0.006;
}

static void test_endpoints_agree(void **state) {
  static prom_t prom;
  fake_t f;
  wr_sbuf_t ps = {0}, js = {0};
  json_error_t err;
  json_t *root, *v;
  const char *key;
  double seen[MAX_LINES];
  size_t n_seen = 0;
  (void)state;

  fake_init(&f);
  wr_admin_render(f.b, &f.ws, &f.as, false, &ps);
  wr_admin_render(f.b, &f.ws, &f.as, true, &js);
  assert_false(ps.oom || js.oom);
  root = json_loads(js.s, 0, &err);
  if (root == NULL)
    fail_msg("/api/stats is not JSON: %s at %d: %s", err.text, err.position, js.s);
  prom_parse(&prom, ps.s);

  /* Each family: HELP then TYPE, once, then only its own samples. */
  const wr_metric_t *fam = NULL;
  for (size_t i = 0; i < prom.n; i++) {
    const char *line = prom.l[i].line;
    if (!prom.l[i].sample) {
      char name[128], word[16];
      assert_int_equal(sscanf(line, "# HELP %127s", name), 1);
      fam = family_of(name);
      if (fam == NULL || strcmp(fam->name, name) != 0)
        fail_msg("HELP of unknown family: %s", line);
      assert_string_equal(line + 7 + strlen(name) + 1, fam->help);
      assert_true(i + 1 < prom.n);
      assert_int_equal(sscanf(prom.l[i + 1].line, "# TYPE %127s %15s", name, word), 2);
      assert_string_equal(name, fam->name);
      assert_string_equal(word, fam->type == WR_METRIC_COUNTER ? "counter"
                                : fam->type == WR_METRIC_GAUGE ? "gauge"
                                                               : "histogram");
      for (size_t k = i + 2; k < prom.n; k++)
        if (!prom.l[k].sample && strncmp(prom.l[k].line + 7, fam->name, strlen(fam->name)) == 0 &&
            prom.l[k].line[7 + strlen(fam->name)] == ' ')
          fail_msg("%s has two headers", fam->name);
      i++;
      continue;
    }
    char metric[256];
    size_t len = strcspn(prom.l[i].key, "{");
    assert_true(len < sizeof(metric));
    memcpy(metric, prom.l[i].key, len);
    metric[len] = '\0';
    if (fam == NULL || family_of(metric) != fam)
      fail_msg("sample outside its family: %s", line);
    /* Every fake counter was a different number, so a row reading the
     * wrong field shows up as two samples with one value. */
    if (strncmp(metric, "warren_", 7) == 0 && fam->kind != WR_MV_HIST && prom.l[i].value >= 10000) {
      for (size_t k = 0; k < n_seen; k++)
        if (seen[k] == prom.l[i].value)
          fail_msg("%s has the value of another sample", line);
      seen[n_seen++] = prom.l[i].value;
    }
  }

  for (size_t i = 0; i < NROWS; i++) {
    const wr_metric_t *m = ROW(i);
    double pv = 0;
    bool in_prom = false;
    if (m->name != NULL) {
      double d;
      char help[512];
      snprintf(help, sizeof(help), "# HELP %s ", m->name);
      bool header = false;
      for (size_t k = 0; k < prom.n; k++)
        header = header || strncmp(prom.l[k].line, help, strlen(help)) == 0;
      if (!header)
        fail_msg("/metrics has no family %s", m->name);
      if (m->kind == WR_MV_HIST) {
        d = prom_must(&prom, m->name, NULL, "_count");
        assert_true(d == prom_must(&prom, m->name, "le=\"+Inf\"", "_bucket"));
        assert_true(d > 0);
        pv = d;
        in_prom = true;
      } else if (m->kind != WR_MV_CUSTOM) {
        pv = prom_must(&prom, m->name, m->labels, "");
        in_prom = true;
      }
    }
    if (m->json_sum != NULL) {
      double sum = 0;
      for (size_t k = i; k < NROWS && same_family(ROW(k), m); k++)
        sum += prom_must(&prom, m->name, ROW(k)->labels, "");
      v = json_path(root, m->json_sum);
      if (!json_is_integer(v) || (double)json_integer_value(v) != sum)
        fail_msg("%s is not the sum of %s", m->json_sum, m->name);
    }
    if (m->json == NULL)
      continue;
    v = json_path(root, m->json);
    if (v == NULL)
      fail_msg("/api/stats has no %s", m->json);
    /* process_* figures are read from /proc again by each scrape. */
    if (!in_prom || strncmp(m->name, "process_", 8) == 0)
      continue;
    switch (m->kind) {
    case WR_MV_BOOL:
      assert_true(json_is_boolean(v));
      assert_true(json_is_true(v) == (pv == 1));
      break;
    case WR_MV_MS:
      assert_true(near(json_number_value(v), pv * 1000));
      break;
    case WR_MV_HIST: {
      json_t *buckets = json_object_get(v, "buckets");
      uint64_t total = 0;
      size_t idx;
      json_t *b;
      assert_true(json_integer_value(json_object_get(v, "count")) == (json_int_t)pv);
      assert_true(near(json_number_value(json_object_get(v, "sum_ms")),
                       prom_must(&prom, m->name, NULL, "_sum") * 1000));
      json_array_foreach(buckets, idx, b) total += (uint64_t)json_integer_value(b);
      assert_true(total == (uint64_t)pv);
      assert_int_equal(json_array_size(buckets),
                       json_array_size(json_object_get(v, "bounds_ms")) + 1);
      break;
    }
    default:
      if (!json_is_number(v) || !near(json_number_value(v), pv))
        fail_msg("%s{%s} = %g in /metrics but %s in /api/stats", m->name,
                 m->labels ? m->labels : "", pv, json_dumps(v, JSON_ENCODE_ANY));
      break;
    }
  }

  /* /api/stats holds nothing the table does not declare. */
  json_object_foreach(root, key, v) {
    if (!declared(key, NULL))
      fail_msg("/api/stats key %s is in no row", key);
    if (json_is_object(v) && json_object_get(v, "bounds_ms") == NULL) {
      const char *sub;
      json_t *sv;
      json_object_foreach(v, sub, sv) {
        if (!declared(sub, key))
          fail_msg("/api/stats key %s.%s is in no row", key, sub);
      }
    }
  }

  /* The custom rows: one sample per ladder step and per queue that
   * answered, names escaped; the same in JSON. */
  assert_true(prom_must(&prom, "warren_retried_total", "step=\"2\",delay_ms=\"600\"", "") == 30031);
  v = json_array_get(json_object_get(root, "retried_by_step"), 1);
  assert_int_equal(json_integer_value(json_object_get(v, "count")), 30031);
  assert_int_equal(json_integer_value(json_object_get(v, "delay_ms")), 600);
  assert_int_equal(json_integer_value(json_object_get(root, "retried")), 30030 + 30031);
  assert_true(prom_must(&prom, "warren_queue_messages", "queue=\"warren.notify\",role=\"main\"",
                        "") == 50001);
  assert_true(prom_must(&prom, "warren_queue_consumers",
                        "queue=\"warren.notify.dead\",role=\"dead\"", "") == 50003);
  assert_true(prom_must(&prom, "warren_queue_messages",
                        "queue=\"odd\\\"name\\\\\\n\",role=\"other\"", "") == 50004);
  double unused;
  assert_false(prom_get(&prom, "warren_queue_messages{queue=\"warren.notify.dead\",role=\"dead\"}",
                        &unused));
  assert_true(prom_must(&prom, "warren_queue_messages",
                        "queue=\"warren.notify.mailbox.new\",role=\"mailbox_new\"", "") == 50006);
  v = json_object_get(root, "queues");
  assert_int_equal(json_array_size(v), 4);
  assert_string_equal(json_string_value(json_object_get(json_array_get(v, 3), "role")),
                      "mailbox_new");
  assert_true(json_is_null(json_object_get(json_array_get(v, 1), "messages")));
  assert_string_equal(json_string_value(json_object_get(json_array_get(v, 2), "name")),
                      "odd\"name\\\n");
  assert_string_equal(json_string_value(json_object_get(root, "version")), WARREN_VERSION);

  json_decref(root);
  free(ps.s);
  free(js.s);
  fake_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table_shape),
      cmocka_unit_test(test_every_dead_letter_reason),
      cmocka_unit_test(test_every_park_reason),
      cmocka_unit_test(test_endpoints_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
