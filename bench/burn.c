/* warren-bench burn: takes a set share of the CPU the way a bridge and its
 * clients do (threads that work a little and sleep, thousands of times a
 * second), so the minimal consumer's ceiling can be measured on a machine
 * that is as busy as it is during a drain. */
#include "bench/bench.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define BURN_PERIOD_US 200 /* each thread wakes 5,000 times a second */
#define BURN_MAX_THREADS 16

static atomic_bool burn_stop;

static void on_stop(int sig) {
  (void)sig;
  atomic_store(&burn_stop, true);
}

typedef struct {
  double share;   /* of one core, for this thread */
  int64_t end_us; /* 0: until a signal */
  double cpu_s;   /* this thread's CPU time, at the end */
} burner_t;

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Each period, works off what the thread is behind its share (its own CPU
 * clock, so the cost of waking up counts too), at most one period, then
 * sleeps out the period. */
static void *burn_thread(void *arg) {
  burner_t *b = arg;
  volatile uint64_t spin = 0;
  int64_t start = wr_bench_now_us();
  double cpu0 = thread_cpu_s();
  while (!atomic_load(&burn_stop)) {
    int64_t t0 = wr_bench_now_us();
    if (b->end_us != 0 && t0 >= b->end_us)
      break;
    double owed_us = b->share * (double)(t0 - start) - (thread_cpu_s() - cpu0) * 1e6;
    int64_t busy = owed_us <= 0 ? 0 : owed_us > BURN_PERIOD_US ? BURN_PERIOD_US : (int64_t)owed_us;
    while (wr_bench_now_us() - t0 < busy)
      spin++;
    int64_t rest = BURN_PERIOD_US - (wr_bench_now_us() - t0);
    if (rest > 0) {
      struct timespec ts = {0, (long)rest * 1000};
      nanosleep(&ts, NULL);
    }
  }
  b->cpu_s = thread_cpu_s() - cpu0;
  return NULL;
}

int wr_bench_burn_run(const wr_bench_opts_t *o) {
  uint32_t n = o->burn_threads;
  if (n == 0 || n > BURN_MAX_THREADS || !(o->burn_share > 0) || o->burn_share > n) {
    fprintf(stderr, "burn: --share must be in (0, --threads], --threads in 1..%d\n",
            BURN_MAX_THREADS);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  burner_t b[BURN_MAX_THREADS];
  pthread_t th[BURN_MAX_THREADS];
  int64_t start = wr_bench_now_us();
  for (uint32_t i = 0; i < n; i++) {
    b[i].share = o->burn_share / n;
    b[i].end_us = o->duration_s > 0 ? start + (int64_t)(o->duration_s * 1e6) : 0;
    b[i].cpu_s = 0;
    int rc = pthread_create(&th[i], NULL, burn_thread, &b[i]);
    if (rc != 0) {
      fprintf(stderr, "burn: pthread_create: %s\n", strerror(rc));
      atomic_store(&burn_stop, true);
      n = i;
      break;
    }
  }
  double cpu = 0;
  for (uint32_t i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    cpu += b[i].cpu_s;
  }
  double wall = (double)(wr_bench_now_us() - start) / 1e6;
  printf("burn: %u threads took %.2f s of CPU in %.2f s: %.2f of a core (asked %.2f)\n", n, cpu,
         wall, wall > 0 ? cpu / wall : 0, o->burn_share);
  if (o->json_path != NULL) {
    FILE *f = fopen(o->json_path, "w");
    if (f == NULL) {
      fprintf(stderr, "burn: %s: %s\n", o->json_path, strerror(errno));
      return 1;
    }
    fprintf(
        f,
        "{\"threads\": %u, \"cpu_s\": %.3f, \"wall_s\": %.3f, \"cores\": %.3f, \"asked\": %.3f}\n",
        n, cpu, wall, wall > 0 ? cpu / wall : 0, o->burn_share);
    fclose(f);
  }
  return 0;
}
