/* Helpers shared by the warren-bench modes: clocks, JWT minting, envelopes,
 * /proc sampling, quantiles and the JSON summary. */
#include "bench/bench.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

int64_t wr_bench_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wr_bench_realtime_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* base64url without padding; returns the length written (NUL-terminated). */
static size_t b64url(const unsigned char *in, size_t len, char *out) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0;
  size_t i = 0;
  for (; i + 2 < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = tab[(v >> 6) & 63];
    out[o++] = tab[v & 63];
  }
  if (i + 1 == len) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
  } else if (i + 2 == len) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = tab[(v >> 6) & 63];
  }
  out[o] = '\0';
  return o;
}

ssize_t wr_bench_jwt_mint(const char *secret, const char *user, int64_t ttl_s, char *out,
                          size_t cap) {
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  char payload[256];
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  int64_t now = (int64_t)time(NULL);
  int plen =
      snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"iat\":%" PRId64 ",\"exp\":%" PRId64 "}",
               user, now, now + ttl_s);
  if (plen < 0 || (size_t)plen >= sizeof payload)
    return -ENOSPC;
  /* header.payload.signature, each base64url: at most 4/3 of the input + 3. */
  if (cap < (sizeof header + (size_t)plen + EVP_MAX_MD_SIZE) * 4 / 3 + 16)
    return -ENOSPC;
  size_t o = b64url((const unsigned char *)header, sizeof header - 1, out);
  out[o++] = '.';
  o += b64url((const unsigned char *)payload, (size_t)plen, out + o);
  if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)out, o, mac, &maclen))
    return -EIO;
  out[o++] = '.';
  o += b64url(mac, maclen, out + o);
  return (ssize_t)o;
}

size_t wr_bench_envelope_build(char *out, size_t cap, const char *run, uint64_t i, uint32_t users,
                               bool broadcast, uint32_t body_bytes) {
  int64_t now = wr_bench_realtime_us();
  char target[64];
  int n;
  if (broadcast)
    snprintf(target, sizeof target, "\"broadcast\":true");
  else
    snprintf(target, sizeof target, "\"user_id\":\"u%" PRIu64 "\"", i % (users ? users : 1));
  n = snprintf(out, cap,
               "{\"id\":\"%s-%s%" PRIu64
               "\",%s,\"type\":\"bench\",\"title\":\"Bench notification\","
               "\"created_at\":%" PRId64 ",\"t_us\":%" PRId64 ",\"content\":\"",
               run, broadcast ? "b" : "", i, target, now / 1000, now);
  if (n < 0 || (size_t)n >= cap)
    return 0;
  size_t len = (size_t)n;
  /* Pad the content so the whole body is about body_bytes long. */
  while (len + 2 < body_bytes && len + 3 < cap) {
    out[len] = (char)('a' + (len % 26));
    len++;
  }
  if (len + 3 > cap)
    return 0;
  out[len++] = '"';
  out[len++] = '}';
  out[len] = '\0';
  return len;
}

/* Context switches of every thread of pid (each has its own counters). */
static long long ctxsw_sum(pid_t pid) {
  char path[96], line[256];
  long long sum = 0;
  DIR *d;
  struct dirent *e;

  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  if (!(d = opendir(path)))
    return 0;
  while ((e = readdir(d)) != NULL) {
    FILE *f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/%d/task/%.16s/status", (int)pid, e->d_name);
    if (!(f = fopen(path, "r")))
      continue;
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
        sum += strtoll(line + 24, NULL, 10);
      else if (strncmp(line, "nonvoluntary_ctxt_switches:", 27) == 0)
        sum += strtoll(line + 27, NULL, 10);
    }
    fclose(f);
  }
  closedir(d);
  return sum;
}

int wr_bench_proc_sample(pid_t pid, wr_bench_proc_t *out) {
  char path[64];
  char buf[4096];
  FILE *f;
  size_t n;

  memset(out, 0, sizeof *out);
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (!(f = fopen(path, "r")))
    return -errno;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* Fields after the command name (which may hold spaces): state is field 3,
   * utime field 14 and stime field 15. */
  char *p = strrchr(buf, ')');
  if (!p)
    return -EPROTO;
  p += 2;
  unsigned long long utime = 0, stime = 0;
  for (int field = 3; field <= 15 && *p; field++) {
    if (field == 14)
      utime = strtoull(p, NULL, 10);
    if (field == 15)
      stime = strtoull(p, NULL, 10);
    p = strchr(p, ' ');
    if (!p)
      break;
    p++;
  }
  out->cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
  out->sys_s = (double)stime / (double)sysconf(_SC_CLK_TCK);
  out->ctxsw = ctxsw_sum(pid);

  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!(f = fopen(path, "r")))
    return -errno;
  while (fgets(buf, sizeof buf, f)) {
    if (strncmp(buf, "VmRSS:", 6) == 0)
      out->rss_kb = strtol(buf + 6, NULL, 10);
    else if (strncmp(buf, "Threads:", 8) == 0)
      out->threads = strtol(buf + 8, NULL, 10);
  }
  fclose(f);
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

void wr_bench_sort_u32(uint32_t *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_u32);
}

uint32_t wr_bench_quantile(uint32_t *v, size_t n, double q) {
  if (n == 0)
    return 0;
  size_t rank = (size_t)(q * (double)n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return v[rank - 1];
}

int wr_bench_json_open(wr_bench_json_t *j, const char *path) {
  j->n = 0;
  j->f = NULL;
  if (!path)
    return 0;
  if (!(j->f = fopen(path, "w")))
    return -errno;
  fputc('{', j->f);
  return 0;
}

static void key(wr_bench_json_t *j, const char *k) {
  fprintf(j->f, "%s\n  \"%s\": ", j->n++ ? "," : "", k);
}

void wr_bench_json_str(wr_bench_json_t *j, const char *k, const char *v) {
  if (!j->f)
    return;
  key(j, k);
  fputc('"', j->f);
  for (const char *p = v; *p; p++) {
    if (*p == '"' || *p == '\\')
      fputc('\\', j->f);
    if ((unsigned char)*p >= 0x20)
      fputc(*p, j->f);
  }
  fputc('"', j->f);
}

void wr_bench_json_num(wr_bench_json_t *j, const char *k, double v) {
  if (!j->f)
    return;
  key(j, k);
  if (v != v)
    fputs("null", j->f);
  else
    fprintf(j->f, "%.6g", v);
}

void wr_bench_json_int(wr_bench_json_t *j, const char *k, long long v) {
  if (!j->f)
    return;
  key(j, k);
  fprintf(j->f, "%lld", v);
}

int wr_bench_json_close(wr_bench_json_t *j) {
  if (!j->f)
    return 0;
  fputs("\n}\n", j->f);
  int rc = fclose(j->f) == 0 ? 0 : -errno;
  j->f = NULL;
  return rc;
}

void wr_bench_json_budget(wr_bench_json_t *j, const wr_bench_budget_t *bu) {
  wr_bench_json_num(j, "broker_cpu_us_per_msg", bu->broker_us);
  if (bu->mid_us >= 0)
    wr_bench_json_num(j, "warren_cpu_us_per_msg", bu->mid_us);
  wr_bench_json_num(j, "self_cpu_us_per_msg", bu->self_us);
  wr_bench_json_num(j, "machine_busy_pct", bu->busy_pct);
  wr_bench_json_num(j, "cpu_bound_rate", bu->bound_rate);
}

double wr_bench_self_cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void wr_bench_cpu_sample(pid_t broker_pid, wr_bench_cpu_t *out) {
  wr_bench_proc_t p;
  memset(out, 0, sizeof *out);
  if (broker_pid > 0 && wr_bench_proc_sample(broker_pid, &p) == 0)
    out->broker_s = p.cpu_s;
  out->self_s = wr_bench_self_cpu_s();
  FILE *f = fopen("/proc/stat", "r");
  unsigned long long v[8] = {0};
  if (f) {
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
      for (int i = 0; i < 8; i++)
        out->total += v[i];
      out->busy = out->total - v[3] - v[4]; /* minus idle and iowait */
    }
    fclose(f);
  }
}

void wr_bench_budget(const char *who, const wr_bench_cpu_t *a, const wr_bench_cpu_t *b,
                     double mid_s, uint64_t n, wr_bench_budget_t *bu) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  memset(bu, 0, sizeof *bu);
  bu->mid_us = -1;
  if (n == 0)
    return;
  bu->broker_us = (b->broker_s - a->broker_s) * 1e6 / (double)n;
  bu->self_us = (b->self_s - a->self_s) * 1e6 / (double)n;
  if (mid_s >= 0)
    bu->mid_us = mid_s * 1e6 / (double)n;
  double per = bu->broker_us + bu->self_us + (mid_s >= 0 ? bu->mid_us : 0);
  bu->bound_rate = per > 0 ? (double)(ncpu > 0 ? ncpu : 1) * 1e6 / per : 0;
  bu->busy_pct =
      b->total > a->total ? 100.0 * (double)(b->busy - a->busy) / (double)(b->total - a->total) : 0;
  if (mid_s >= 0)
    printf("%s: CPU per notification: broker %.1f us, warren %.1f us, load generator %.1f us; "
           "machine %.0f%% busy; %ld cores at that cost carry at most %.0f/s\n",
           who, bu->broker_us, bu->mid_us, bu->self_us, bu->busy_pct, ncpu, bu->bound_rate);
  else
    printf("%s: CPU per notification: broker %.1f us, consumer %.1f us; machine %.0f%% busy; "
           "%ld cores at that cost carry at most %.0f/s\n",
           who, bu->broker_us, bu->self_us, bu->busy_pct, ncpu, bu->bound_rate);
}

size_t wr_bench_ws_frame_masked(uint32_t *rng, uint8_t *out, size_t off, uint8_t op,
                                const uint8_t *p, size_t len) {
  uint8_t *o = out + off;
  size_t h = 0;
  o[h++] = (uint8_t)(0x80 | op);
  if (len < 126)
    o[h++] = (uint8_t)(0x80 | len);
  else {
    o[h++] = 0x80 | 126;
    o[h++] = (uint8_t)(len >> 8);
    o[h++] = (uint8_t)len;
  }
  *rng ^= *rng << 13;
  *rng ^= *rng >> 17;
  *rng ^= *rng << 5;
  uint8_t m[4] = {(uint8_t)*rng, (uint8_t)(*rng >> 8), (uint8_t)(*rng >> 16),
                  (uint8_t)(*rng >> 24)};
  memcpy(o + h, m, 4);
  h += 4;
  for (size_t i = 0; i < len; i++)
    o[h + i] = p[i] ^ m[i & 3];
  return off + h + len;
}

bool wr_bench_parse_u64(const char *p, const char *end, uint64_t *v) {
  uint64_t x = 0;
  if (p >= end || *p < '0' || *p > '9')
    return false;
  while (p < end && *p >= '0' && *p <= '9')
    x = x * 10 + (uint64_t)(*p++ - '0');
  *v = x;
  return true;
}
