/* Life cycle of the AMQP side and its thread-safe entry points. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amqp/amqp_int.h"
#include "config/log.h"

int wr_amqp_new(wr_amqp_t **out, const wr_config_t *cfg, const wr_amqp_callbacks_t *cbs) {
  if (out == NULL || cfg == NULL || cbs == NULL || cbs->deliver_cb == NULL ||
      cbs->next_command_cb == NULL || cbs->state_cb == NULL)
    return -EINVAL;
  wr_amqp_t *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return -ENOMEM;
  a->cfg = cfg;
  a->cbs = cbs;
  a->sockfd = -1;
  pthread_mutex_init(&a->fd_lock, NULL);
  a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (a->efd < 0) {
    int e = errno;
    free(a);
    return -e;
  }
  *out = a;
  return 0;
}

int wr_amqp_start(wr_amqp_t *a) {
  pthread_attr_t attr;
  int rc;

  if (a->started)
    return -EALREADY;
  if ((rc = pthread_attr_init(&attr)) != 0)
    return -rc;
  /* rabbitmq-c decodes nested header tables recursively with no depth
   * limit: keep a full-size stack whatever the process default is. */
  pthread_attr_setstacksize(&attr, 8u << 20);
  rc = pthread_create(&a->thread, &attr, wr_amqp_thread_main, a);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return -rc;
  pthread_setname_np(a->thread, "warren-amqp");
  a->started = true;
  return 0;
}

void wr_amqp_wake(wr_amqp_t *a) {
  uint64_t one = 1;
  /* EAGAIN means the counter is already non-zero: the thread will wake. */
  ssize_t n = write(a->efd, &one, sizeof(one));
  (void)n;
}

void wr_amqp_cancel(wr_amqp_t *a) {
  __atomic_store_n(&a->cancel_req, 1, __ATOMIC_RELEASE);
  wr_amqp_wake(a);
}

void wr_amqp_stop(wr_amqp_t *a) {
  if (!a->started)
    return;
  __atomic_store_n(&a->stop_req, 1, __ATOMIC_RELEASE);
  wr_amqp_wake(a);
  pthread_join(a->thread, NULL);
  a->started = false;
}

void wr_amqp_free(wr_amqp_t *a) {
  if (a == NULL)
    return;
  wr_amqp_stop(a);
  free(a->pending);
  free(a->scratch);
  wr_amqp_acks_free(&a->acks);
  wr_amqp_mbox_free(a);
  wr_amqp_node_free(a);
  free(a->deferred.items);
  free(a->deferred.buckets); /* empty: the thread ran every deferred item before it ended */
  pthread_mutex_destroy(&a->fd_lock);
  close(a->efd);
  free(a);
}

const wr_amqp_stats_t *wr_amqp_stats(const wr_amqp_t *a) {
  return &a->stats;
}

void wr_amqp_watch_fd(wr_amqp_t *a, int fd) {
  pthread_mutex_lock(&a->fd_lock);
  a->sockfd = fd;
  pthread_mutex_unlock(&a->fd_lock);
}

bool wr_amqp_watchdog(wr_amqp_t *a) {
  uint64_t p = __atomic_load_n(&a->progress, __ATOMIC_RELAXED);
  int64_t now = wr_amqp_now_ms();
  int64_t limit = a->cfg->heartbeat_s > 0 ? 2000 * (int64_t)a->cfg->heartbeat_s : 20000;
  bool kicked = false;

  if (p != a->wd_seen || a->wd_since_ms == 0) {
    a->wd_seen = p;
    a->wd_since_ms = now;
    return false;
  }
  if (now - a->wd_since_ms < limit)
    return false;
  /* The lock keeps the AMQP thread from closing (and the kernel from
   * reusing) the descriptor while we shut it down. */
  pthread_mutex_lock(&a->fd_lock);
  if (a->sockfd >= 0) {
    shutdown(a->sockfd, SHUT_RDWR);
    kicked = true;
  }
  pthread_mutex_unlock(&a->fd_lock);
  if (kicked) {
    WR_AMQP_STAT_ADD(a, watchdog_kicks, 1);
    wr_error("amqp",
             "the AMQP thread made no progress for %lld ms (broker hung?); shutting its "
             "socket down to force a reconnect",
             (long long)(now - a->wd_since_ms));
  }
  a->wd_since_ms = now;
  return kicked;
}
