/* The bridge: wires the AMQP thread to the WebSocket loop and runs the
 * process lifecycle (start, SIGHUP reload, SIGTERM drain, teardown). */
#include "bridge/bridge_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/log.h"

extern char **environ;

/* ---- AMQP thread side ---------------------------------------------------- */

static int deliver_cb(wr_amqp_delivery_t *d, void *data) {
  wr_bridge_t *b = data;
  if (wr_ring_push(&b->deliveries, d) != 0)
    return -ENOSPC;
  uv_async_send(&b->async);
  return 0;
}

static wr_amqp_cmd_t *next_command_cb(void *data) {
  wr_bridge_t *b = data;
  return wr_ring_pop(&b->commands);
}

static void state_cb(bool consuming, bool lost, uint64_t generation, void *data) {
  wr_bridge_t *b = data;
  if (lost) {
    uint64_t cur = atomic_load(&b->lost_generation);
    while (cur < generation && !atomic_compare_exchange_weak(&b->lost_generation, &cur, generation))
      ;
  }
  atomic_store(&b->consuming, consuming);
  uv_async_send(&b->async);
}

static void queue_stats_cb(const wr_amqp_queue_stat_t *stats, size_t n, void *data) {
  wr_bridge_t *b = data;
  if (n > WR_MAX_QUEUE_STATS)
    n = WR_MAX_QUEUE_STATS;
  pthread_mutex_lock(&b->qstats_lock);
  memcpy(b->qstats, stats, n * sizeof(*stats));
  b->n_qstats = n;
  pthread_mutex_unlock(&b->qstats_lock);
}

/* ---- loop side ------------------------------------------------------------ */

static void wake_amqp(wr_bridge_t *b);
static void retry_cb(uv_timer_t *t);

int64_t wr_now_realtime_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wr_bridge_command(wr_bridge_t *b, wr_amqp_cmd_t *c) {
  if (b->ov_len == 0 && wr_ring_push(&b->commands, c) == 0) {
    b->wake_needed = true;
    return;
  }
  /* The ring is sized for several prefetch windows, so this is rare (a
   * reconnect with a full window still in the loop). Keep order. */
  if (b->ov_len == b->ov_cap) {
    size_t ncap = b->ov_cap ? b->ov_cap * 2 : 256;
    wr_amqp_cmd_t **n = malloc(ncap * sizeof(*n));
    if (n == NULL) {
      /* A verdict lost here would leave its message unacked until the
       * channel closes, a mailbox command a user's mailbox unread: stop. */
      wr_error("bridge", "out of memory queueing a command for the AMQP thread");
      abort();
    }
    for (size_t i = 0; i < b->ov_len; i++)
      n[i] = b->overflow[(b->ov_head + i) % b->ov_cap];
    free(b->overflow);
    b->overflow = n;
    b->ov_head = 0;
    b->ov_cap = ncap;
  }
  b->overflow[(b->ov_head + b->ov_len) % b->ov_cap] = c;
  b->ov_len++;
  if (!uv_is_active((uv_handle_t *)&b->retry_timer))
    uv_timer_start(&b->retry_timer, retry_cb, 1, 1);
}

/* The core's clock: the loop's time and the wall clock, read once per
 * callback. */
static void core_clock(wr_bridge_t *b) {
  wr_core_clock(&b->core, uv_now(&b->loop), wr_now_realtime_ms());
}

/* ---- the delivery core's sink ---------------------------------------------- */

static int core_send_cb(void *io, wr_ws_buf_t *frame, void *ctx, bool ack_expected, void *data) {
  wr_ws_conn_t *conn = io;
  (void)data;
  int rc = wr_ws_conn_send(conn, frame, ctx);
  /* The client answers each notification with an ack: that answer does not
   * count against its message rate. */
  if (rc == 0 && ack_expected)
    wr_ws_conn_grant(conn);
  return rc;
}

static void core_load_cb(void *io, size_t *queued_bytes, uint64_t *idle_ms, void *data) {
  (void)data;
  *queued_bytes = wr_ws_conn_queued_bytes(io);
  *idle_ms = wr_ws_conn_idle_ms(io);
}

static void core_verdict_cb(wr_amqp_delivery_t *d, void *data) {
  wr_bridge_command(data, &d->cmd);
}

static void core_mailbox_cb(const char *user, bool open, void *data) {
  wr_amqp_cmd_t *c = wr_amqp_mbox_cmd_new(open ? WR_CMD_MAILBOX_OPEN : WR_CMD_MAILBOX_CLOSE, user);
  if (c == NULL) {
    /* A lost close would let the broker hand a gone user's mailbox items
     * straight back, a lost open leave a backlog unread: stop. */
    wr_error("bridge", "out of memory for a mailbox command (user %s)", user);
    abort();
  }
  wr_bridge_command(data, c);
}

static void core_node_cb(const char *user, wr_amqp_cmd_kind_t op, void *data) {
  wr_amqp_cmd_t *c = wr_amqp_mbox_cmd_new(op, user);
  if (c == NULL) {
    /* A lost join would leave an online user unreachable here: stop. */
    wr_error("bridge", "out of memory for a node binding command (user %s)", user);
    abort();
  }
  wr_bridge_command(data, c);
}

static uint64_t core_now_ns_cb(void *data) {
  (void)data;
  return wr_amqp_now_ns();
}

static void flush_overflow(wr_bridge_t *b) {
  while (b->ov_len > 0) {
    if (wr_ring_push(&b->commands, b->overflow[b->ov_head]) != 0)
      break;
    b->ov_head = (b->ov_head + 1) % b->ov_cap;
    b->ov_len--;
    b->wake_needed = true;
  }
  if (b->ov_len == 0)
    uv_timer_stop(&b->retry_timer);
}

static void retry_cb(uv_timer_t *t) {
  wr_bridge_t *b = t->data;
  flush_overflow(b);
  if (b->wake_needed)
    wake_amqp(b);
}

static void maybe_finish_drain(wr_bridge_t *b);

#define PASS_MAX 256            /* deliveries handled per loop iteration */
#define PASS_BYTES (512 * 1024) /* body bytes decoded per loop iteration */

static void async_cb(uv_async_t *h) {
  wr_bridge_t *b = h->data;
  uint64_t lost = atomic_load(&b->lost_generation);
  wr_amqp_delivery_t *d;
  unsigned n = 0;
  size_t bytes = 0;

  bool consuming = atomic_load(&b->consuming);

  core_clock(b);
  if (lost > b->seen_lost_generation) {
    b->seen_lost_generation = lost;
    wr_core_generation_lost(&b->core, lost);
  }
  if (consuming != b->was_consuming) {
    b->was_consuming = consuming;
    if (consuming)
      wr_info("main", "ready: consuming %s, accepting clients on %s", b->cfg->queue,
              b->cfg->server_listen);
    else if (b->phase == WR_PHASE_RUNNING)
      wr_warn("main", "not ready: not consuming (AMQP connection lost or consumer cancelled); "
                      "clients stay connected");
  }
  /* uv_async_send coalesces: drain everything, but in passes of at most
   * PASS_MAX deliveries or PASS_BYTES of bodies (a few milliseconds of
   * decoding), re-arming the async handle so client I/O and pongs run between
   * passes: a burst of thousands, or of large bodies, must not stall the loop
   * for hundreds of milliseconds. */
  while ((d = wr_ring_pop(&b->deliveries)) != NULL) {
    bytes += d->body != NULL ? d->body_len : 0;
    wr_core_delivery(&b->core, d);
    if (++n == PASS_MAX || bytes >= PASS_BYTES) {
      uv_async_send(&b->async);
      break;
    }
  }
  if (b->phase == WR_PHASE_DRAINING)
    maybe_finish_drain(b);
}

/* Waking the AMQP thread for verdicts, in batches (wr_amqp_wake_batch):
 * under load it wakes for broker data many times a millisecond and takes
 * every verdict in the ring each time, so an eventfd write per loop iteration
 * mostly buys a context switch. The loop wakes it at once when half the
 * prefetch window waits or warren is shutting down; otherwise verdict_timer
 * looks again after the batch lag and wakes it if the verdicts that were
 * there then are still there (a verdict pushed while the timer runs may so
 * wait up to two lags). */

static void verdict_timer_cb(uv_timer_t *t);

static void wake_amqp(wr_bridge_t *b) {
  b->wake_needed = false;
  uv_timer_stop(&b->verdict_timer);
  wr_amqp_wake(b->amqp);
}

static void arm_verdict_timer(wr_bridge_t *b) {
  b->verdict_mark = wr_ring_pushed(&b->commands);
  uv_timer_start(&b->verdict_timer, verdict_timer_cb, WR_AMQP_BATCH_LAG_MS, 0);
}

/* Under load the ring is seldom empty, but its verdicts are new ones: the
 * thread is awake if it took every verdict that was there when the timer
 * was armed. Only one it left there a whole lag says it is asleep. */
static void verdict_timer_cb(uv_timer_t *t) {
  wr_bridge_t *b = t->data;
  if (!wr_ring_popped_all(&b->commands, b->verdict_mark))
    wake_amqp(b);
  else if (wr_ring_size(&b->commands) > 0)
    arm_verdict_timer(b);
  else
    b->wake_needed = false; /* the AMQP thread took them meanwhile */
}

/* Once per loop iteration, after the verdicts of this iteration are pushed. */
static void check_cb(uv_check_t *h) {
  wr_bridge_t *b = h->data;
  if (b->ov_len > 0)
    flush_overflow(b);
  if (!b->wake_needed)
    return;
  size_t queued = wr_ring_size(&b->commands);
  if (queued == 0 && b->ov_len == 0)
    b->wake_needed = false;
  else if (queued >= wr_amqp_wake_batch(b->cfg->prefetch) || b->ov_len > 0 ||
           b->phase != WR_PHASE_RUNNING)
    wake_amqp(b);
  else if (!uv_is_active((uv_handle_t *)&b->verdict_timer))
    arm_verdict_timer(b);
}

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Right before the loop polls: what the iteration since the previous poll
 * cost. This is the stall a client sees (its ping waits that long). */
static void prepare_cb(uv_prepare_t *h) {
  wr_bridge_t *b = h->data;
  wr_bridge_stats_t *st = &b->stats;
  uint64_t wall = uv_hrtime(), idle = uv_metrics_idle_time(&b->loop), cpu = thread_cpu_ns();

  if (b->it_wall_ns != 0) {
    uint64_t span = wall - b->it_wall_ns, waited = idle - b->it_idle_ns;
    double busy = (double)(span > waited ? span - waited : 0) / 1e6;
    double used = (double)(cpu - b->it_cpu_ns) / 1e6;
    wr_hist_observe(&st->loop_busy, busy);
    wr_hist_observe(&st->loop_cpu, used);
  }
  b->it_wall_ns = wall;
  b->it_idle_ns = idle;
  b->it_cpu_ns = cpu;
}

static void sweep_cb(uv_timer_t *t) {
  wr_bridge_t *b = t->data;
  wr_core_tick(&b->core, uv_now(&b->loop), wr_now_realtime_ms());
  wr_amqp_watchdog(b->amqp);
}

/* Encodes a small server message (welcome, pong, error) for a client format. */
static wr_ws_buf_t *encode_msg(const json_t *msg, wr_ws_format_t fmt) {
  uint8_t *out = NULL;
  size_t len = 0;
  wr_ws_buf_t *buf;

  if (fmt == WR_WS_FORMAT_MSGPACK) {
    if (wr_msgpack_from_json(msg, &out, &len) != 0)
      return NULL;
  } else {
    out = (uint8_t *)json_dumps(msg, JSON_COMPACT);
    if (out == NULL)
      return NULL;
    len = strlen((char *)out);
  }
  buf = wr_ws_buf_new(len);
  if (buf != NULL)
    memcpy(buf->data, out, len);
  free(out);
  return buf;
}

/* Sends a small JSON object (welcome, error) encoded for the connection's
 * format. */
static int send_json(wr_ws_conn_t *conn, json_t *msg) {
  wr_ws_buf_t *buf = encode_msg(msg, wr_ws_conn_format(conn));
  int rc;

  if (buf == NULL)
    return -ENOMEM;
  rc = wr_ws_conn_send(conn, buf, NULL);
  wr_ws_buf_unref(buf);
  return rc;
}

static void on_open_cb(wr_ws_conn_t *conn, void *data) {
  wr_bridge_t *b = data;
  const char *user = wr_ws_conn_user(conn);
  wr_core_conn_t *c;
  json_t *w;

  /* The welcome goes first; then the core sends what waits for the user. */
  w = json_pack("{s:s, s:s, s:s}", "type", "welcome", "user_id", user, "ack_mode",
                b->core.cfg.ack_mode == WR_ACK_WRITE ? "write" : "client");
  if (w != NULL) {
    send_json(conn, w);
    json_decref(w);
  }
  core_clock(b);
  c = wr_core_conn_open(&b->core, conn, user, wr_ws_conn_format(conn));
  if (c == NULL) {
    wr_error("bridge", "out of memory accepting connection %llu",
             (unsigned long long)wr_ws_conn_id(conn));
    wr_ws_conn_close(conn, WR_WS_CLOSE_INTERNAL, "out of memory");
    return;
  }
  wr_ws_conn_set_data(conn, c);
  wr_debug("bridge", "connection %llu open for user %s (%zu connection(s))",
           (unsigned long long)wr_ws_conn_id(conn), user, c->user->n_conns);
}

static void on_close_cb(wr_ws_conn_t *conn, void *data) {
  wr_bridge_t *b = data;
  wr_core_conn_t *c = wr_ws_conn_get_data(conn);

  if (c == NULL)
    return;
  wr_debug("bridge", "connection %llu closed for user %s", (unsigned long long)wr_ws_conn_id(conn),
           c->user->id);
  wr_ws_conn_set_data(conn, NULL);
  core_clock(b);
  wr_core_conn_close(&b->core, c);
}

static void on_message_cb(wr_ws_conn_t *conn, const uint8_t *msg, size_t len, bool binary,
                          void *data) {
  wr_bridge_t *b = data;
  wr_core_conn_t *c = wr_ws_conn_get_data(conn);
  wr_cmsg_t m;

  if (c == NULL)
    return;
  wr_cmsg_parse(&m, msg, len, binary);
  switch (m.kind) {
  case WR_CMSG_ACK:
    core_clock(b);
    for (size_t i = 0; i < m.n_ids; i++)
      wr_core_client_ack(&b->core, c, m.ids[i]);
    break;
  case WR_CMSG_PING:
    wr_ws_conn_send(conn, b->pong[wr_ws_conn_format(conn)], NULL);
    break;
  default: {
    json_t *e = json_pack("{s:s, s:s}", "type", "error", "error", m.error ? m.error : "invalid");
    b->stats.client_bad_messages++;
    wr_debug("bridge", "connection %llu: invalid client message: %s",
             (unsigned long long)wr_ws_conn_id(conn), m.error ? m.error : "invalid");
    if (e != NULL) {
      send_json(conn, e);
      json_decref(e);
    }
    break;
  }
  }
  wr_cmsg_close(&m);
}

static void on_sent_cb(wr_ws_conn_t *conn, void *ctx, int status, void *data) {
  wr_bridge_t *b = data;
  (void)conn;
  wr_core_write_done(&b->core, ctx, status);
}

/* ---- lifecycle ------------------------------------------------------------ */

static void close_handles(wr_bridge_t *b);

static void final_stop(wr_bridge_t *b) {
  wr_amqp_delivery_t *d;

  /* Hand the AMQP thread every verdict still here, then let it finish: it
   * executes them, waits for outstanding confirms and closes cleanly. */
  flush_overflow(b);
  while (b->ov_len > 0) {
    /* The AMQP thread keeps popping while we wait. */
    wr_amqp_wake(b->amqp);
    usleep(1000);
    flush_overflow(b);
  }
  wr_amqp_wake(b->amqp);
  wr_amqp_stop(b->amqp);
  /* Deliveries that arrived after the last pass: the AMQP thread is gone, so
   * they are freed here; the broker requeued them when the channel closed. */
  while ((d = wr_ring_pop(&b->deliveries)) != NULL)
    wr_amqp_delivery_free(d);
  wr_amqp_cmd_t *c;
  while ((c = wr_ring_pop(&b->commands)) != NULL)
    wr_amqp_cmd_free(c);
  close_handles(b);
}

static void closing_timer_cb(uv_timer_t *t) {
  wr_bridge_t *b = t->data;
  /* Clients had their 1001 close frames written (or the grace ran out). */
  if (b->core.index.n_conns > 0 && uv_now(&b->loop) < b->deadline_ms)
    return;
  uv_timer_stop(t);
  final_stop(b);
}

static void begin_closing(wr_bridge_t *b) {
  if (b->phase == WR_PHASE_CLOSING)
    return;
  b->phase = WR_PHASE_CLOSING;
  uv_timer_stop(&b->drain_timer);
  if (b->core.n_pendings > 0)
    wr_info("main", "drain: requeueing %zu undelivered message(s)", b->core.n_pendings);
  wr_core_requeue_all(&b->core);
  flush_overflow(b);
  wr_amqp_wake(b->amqp);
  wr_info("main", "closing %zu client connection(s) with 1001", b->core.index.n_conns);
  wr_ws_server_close_all(b->ws, WR_WS_CLOSE_GOING_AWAY, "server shutting down");
  /* Up to 2 s for the close frames to be written. */
  b->deadline_ms = uv_now(&b->loop) + 2000;
  uv_timer_start(&b->drain_timer, closing_timer_cb, 10, 10);
}

static void maybe_finish_drain(wr_bridge_t *b) {
  if (b->phase == WR_PHASE_DRAINING && b->core.n_pendings == 0 && b->ov_len == 0 &&
      wr_ring_size(&b->deliveries) == 0)
    begin_closing(b);
}

static void drain_timer_cb(uv_timer_t *t) {
  wr_bridge_t *b = t->data;
  if (b->phase != WR_PHASE_DRAINING)
    return;
  if (uv_now(&b->loop) >= b->deadline_ms) {
    wr_warn("main", "drain: timeout after %u ms", b->cfg->drain_timeout_ms);
    begin_closing(b);
  } else {
    maybe_finish_drain(b);
  }
}

static void begin_drain(wr_bridge_t *b, const char *why) {
  if (b->phase != WR_PHASE_RUNNING) {
    if (b->phase == WR_PHASE_DRAINING) {
      wr_warn("main", "%s again: skipping the rest of the drain", why);
      begin_closing(b);
    }
    return;
  }
  wr_info("main", "%s: draining (%zu delivery(ies) in flight, up to %u ms)", why,
          b->core.n_pendings, b->cfg->drain_timeout_ms);
  b->phase = WR_PHASE_DRAINING;
  wr_ws_server_stop_accepting(b->ws);
  wr_amqp_cancel(b->amqp);
  b->deadline_ms = uv_now(&b->loop) + b->cfg->drain_timeout_ms;
  uv_timer_start(&b->drain_timer, drain_timer_cb, 20, 20);
}

/* Keys a running process cannot apply: the AMQP thread, the listeners and
 * the ladder topology were set up with the values warren started with. */
static void restart_keys(const wr_config_t *old, const wr_config_t *n, char *buf, size_t len) {
  size_t at = 0;
  buf[0] = '\0';
#define DIFF(cond, name)                                                                           \
  do {                                                                                             \
    if ((cond) && at < len)                                                                        \
      at += (size_t)snprintf(buf + at, len - at, "%s%s", at ? ", " : "", name);                    \
  } while (0)
  DIFF(strcmp(old->server_listen, n->server_listen) != 0, "server.listen");
  DIFF(strcmp(old->server_path, n->server_path) != 0, "server.path");
  DIFF(strcmp(old->admin_listen, n->admin_listen) != 0, "admin.listen");
  DIFF(old->ack_mode != n->ack_mode, "ack.mode");
  DIFF(strcmp(old->amqp_url, n->amqp_url) != 0, "amqp.url");
  DIFF(strcmp(old->exchange, n->exchange) != 0, "amqp.exchange");
  DIFF(strcmp(old->queue, n->queue) != 0, "amqp.queue");
  DIFF(old->queue_type != n->queue_type, "amqp.queue_type");
  DIFF(old->prefetch != n->prefetch, "amqp.prefetch");
  DIFF(old->heartbeat_s != n->heartbeat_s, "amqp.heartbeat_s");
  DIFF(old->n_retry_delays != n->n_retry_delays ||
           memcmp(old->retry_delays_ms, n->retry_delays_ms,
                  old->n_retry_delays * sizeof(old->retry_delays_ms[0])) != 0,
       "amqp.retry_delays_ms");
  DIFF(old->max_body_bytes != n->max_body_bytes, "amqp.max_body_bytes");
  DIFF(old->mailbox_enabled != n->mailbox_enabled, "mailbox.enabled");
  DIFF(old->mailbox_ttl_ms != n->mailbox_ttl_ms, "mailbox.ttl_ms");
  DIFF(old->mailbox_max_messages != n->mailbox_max_messages, "mailbox.max_messages");
  DIFF(old->mailbox_prefetch != n->mailbox_prefetch, "mailbox.prefetch");
  DIFF(old->mailbox_idle_ms != n->mailbox_idle_ms ||
           old->mailbox_janitor_ms != n->mailbox_janitor_ms ||
           old->mailbox_unbind_grace_ms != n->mailbox_unbind_grace_ms,
       "the mailbox janitor's timings");
  DIFF((old->cluster_node_id == NULL) != (n->cluster_node_id == NULL) ||
           (old->cluster_node_id != NULL && strcmp(old->cluster_node_id, n->cluster_node_id) != 0),
       "cluster.node_id");
  DIFF(old->node_queue_type != n->node_queue_type || old->cluster_node_ttl_ms != n->cluster_node_ttl_ms,
       "cluster.queue_type / node_ttl_ms");
  DIFF(old->cluster_unbind_grace_ms != n->cluster_unbind_grace_ms, "cluster.unbind_grace_ms");
#undef DIFF
}

/* SIGHUP: loads the configuration again and applies what a running process
 * can: log settings, authentication (keys, issuer, audience, origins), the
 * server's limits and timeouts, ack.timeout_ms, amqp.max_attempts and
 * mailbox.max_redeliveries. The
 * keys restart_keys lists keep their running values. Reloads are unlimited:
 * only the configuration warren started with (which the AMQP thread and the
 * admin server keep) and the latest one stay allocated. */
static void reload(wr_bridge_t *b) {
  wr_config_t *n = calloc(1, sizeof(*n));
  wr_core_config_t core_cfg;
  char err[512], keys[512];

  if (n == NULL) {
    wr_error("main", "SIGHUP: out of memory; configuration not reloaded");
    return;
  }
  if (wr_config_load(n, b->config_path, environ, err, sizeof(err)) != 0) {
    wr_error("main", "SIGHUP: configuration not reloaded: %s", err);
    wr_config_close(n);
    free(n);
    return;
  }
  restart_keys(b->cfg, n, keys, sizeof(keys));
  if (keys[0] != '\0')
    wr_warn("main", "SIGHUP: %s changed; restart warren to apply (running values kept)", keys);
  wr_log_setup(n->log_level, n->log_format);
  wr_ws_server_set_config(b->ws, n);
  /* The core takes a snapshot by value; the ladder and the body cap stay as
   * the AMQP thread declared and applies them. */
  wr_core_config_from(&core_cfg, n);
  memcpy(core_cfg.retry_delays_ms, b->core.cfg.retry_delays_ms, sizeof(core_cfg.retry_delays_ms));
  core_cfg.n_retry_delays = b->core.cfg.n_retry_delays;
  core_cfg.max_body_bytes = b->core.cfg.max_body_bytes;
  wr_core_reload(&b->core, &core_cfg);
  /* Nothing keeps a pointer into the previous reload: the ws server reads
   * its configuration at each use and now has n. */
  if (b->reloaded != NULL) {
    wr_config_close(b->reloaded);
    free(b->reloaded);
  }
  b->reloaded = n;
  wr_info("main", "SIGHUP: reloaded the configuration");
}

static void signal_cb(uv_signal_t *h, int signum) {
  wr_bridge_t *b = h->data;
  if (signum == SIGHUP) {
    reload(b);
    return;
  }
  begin_drain(b, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void handle_closed_cb(uv_handle_t *h) {
  (void)h;
}

static void server_freed_cb(void *arg) {
  (void)arg;
}

static void close_handles(wr_bridge_t *b) {
  uv_close((uv_handle_t *)&b->async, handle_closed_cb);
  uv_close((uv_handle_t *)&b->check, handle_closed_cb);
  uv_close((uv_handle_t *)&b->prepare, handle_closed_cb);
  uv_close((uv_handle_t *)&b->sweep, handle_closed_cb);
  uv_close((uv_handle_t *)&b->drain_timer, handle_closed_cb);
  uv_close((uv_handle_t *)&b->retry_timer, handle_closed_cb);
  uv_close((uv_handle_t *)&b->verdict_timer, handle_closed_cb);
  uv_close((uv_handle_t *)&b->sig_term, handle_closed_cb);
  uv_close((uv_handle_t *)&b->sig_int, handle_closed_cb);
  uv_close((uv_handle_t *)&b->sig_hup, handle_closed_cb);
  if (b->ws != NULL) {
    wr_ws_server_free(b->ws, server_freed_cb, NULL);
    b->ws = NULL;
  }
  if (b->admin != NULL) {
    wr_ws_server_free(b->admin, server_freed_cb, NULL);
    b->admin = NULL;
  }
}

static wr_ws_buf_t *make_pong(wr_ws_format_t fmt) {
  json_t *p = json_pack("{s:s}", "type", "pong");
  wr_ws_buf_t *buf = p != NULL ? encode_msg(p, fmt) : NULL;
  json_decref(p);
  return buf;
}

int wr_bridge_run(const wr_config_t *cfg, const char *config_path) {
  wr_bridge_t *b;
  sigset_t set, old;
  size_t cap;
  int rc, status = 1;
  uint32_t sweep_ms;

  b = calloc(1, sizeof(*b));
  if (b == NULL)
    return 1;
  b->cfg = cfg;
  b->config_path = config_path;
  wr_bridge_stats_init(&b->stats);
  pthread_mutex_init(&b->qstats_lock, NULL);
  atomic_init(&b->consuming, false);
  atomic_init(&b->lost_generation, 0);
  signal(SIGPIPE, SIG_IGN);

  /* prefetch ≤ delivery ring capacity, so the ring never overflows; the
   * command ring also holds verdicts of a lost generation still in the loop. */
  cap = cfg->prefetch * 2;
  if ((rc = uv_loop_init(&b->loop)) != 0)
    goto fail_free;
  /* For the iteration figures of prepare_cb (libuv >= 1.39). */
  uv_loop_configure(&b->loop, UV_METRICS_IDLE_TIME);
  wr_core_config_t core_cfg;
  wr_core_config_from(&core_cfg, cfg);
  wr_core_sink_t sink = {.data = b,
                         .send_cb = core_send_cb,
                         .load_cb = core_load_cb,
                         .verdict_cb = core_verdict_cb,
                         .now_ns_cb = core_now_ns_cb,
                         .mailbox_cb = core_mailbox_cb,
                         .node_cb = core_node_cb};
  if (wr_ring_init(&b->deliveries, cap) != 0 || wr_ring_init(&b->commands, cap * 2) != 0 ||
      wr_core_init(&b->core, &core_cfg, &sink, &b->stats) != 0) {
    wr_error("main", "out of memory");
    goto fail_loop;
  }
  b->pong[WR_WS_FORMAT_JSON] = make_pong(WR_WS_FORMAT_JSON);
  b->pong[WR_WS_FORMAT_MSGPACK] = make_pong(WR_WS_FORMAT_MSGPACK);

  uv_async_init(&b->loop, &b->async, async_cb);
  uv_check_init(&b->loop, &b->check);
  uv_prepare_init(&b->loop, &b->prepare);
  uv_timer_init(&b->loop, &b->sweep);
  uv_timer_init(&b->loop, &b->drain_timer);
  uv_timer_init(&b->loop, &b->retry_timer);
  uv_timer_init(&b->loop, &b->verdict_timer);
  uv_signal_init(&b->loop, &b->sig_term);
  uv_signal_init(&b->loop, &b->sig_int);
  uv_signal_init(&b->loop, &b->sig_hup);
  b->prepare.data = b;
  b->async.data = b->check.data = b->sweep.data = b->drain_timer.data = b->retry_timer.data = b;
  b->verdict_timer.data = b;
  b->sig_term.data = b->sig_int.data = b->sig_hup.data = b;
  uv_check_start(&b->check, check_cb);
  uv_prepare_start(&b->prepare, prepare_cb);
  /* Coarse sweep: ack deadlines have this resolution. */
  sweep_ms = cfg->ack_timeout_ms / 10;
  if (sweep_ms > 1000)
    sweep_ms = 1000;
  if (sweep_ms < 20)
    sweep_ms = 20;
  uv_timer_start(&b->sweep, sweep_cb, sweep_ms, sweep_ms);
  uv_signal_start(&b->sig_term, signal_cb, SIGTERM);
  uv_signal_start(&b->sig_int, signal_cb, SIGINT);
  uv_signal_start(&b->sig_hup, signal_cb, SIGHUP);

  b->ws_cbs = (wr_ws_callbacks_t){.data = b,
                                  .on_open_cb = on_open_cb,
                                  .on_close_cb = on_close_cb,
                                  .on_message_cb = on_message_cb,
                                  .on_sent_cb = on_sent_cb,
                                  .on_http_cb = wr_public_http_cb};
  b->admin_cbs = (wr_ws_callbacks_t){.data = b, .on_http_cb = wr_admin_http_cb};
  if ((rc = wr_ws_server_new(&b->ws, &b->loop, cfg, &b->ws_cbs, true)) != 0)
    goto fail_handles;
  if ((rc = wr_ws_server_listen(b->ws, cfg->server_host, cfg->server_port)) != 0) {
    wr_error("main", "cannot listen on %s: %s (set server.listen)", cfg->server_listen,
             strerror(-rc));
    goto fail_handles;
  }
  if (cfg->admin_enabled) {
    if ((rc = wr_ws_server_new(&b->admin, &b->loop, cfg, &b->admin_cbs, false)) != 0)
      goto fail_handles;
    if ((rc = wr_ws_server_listen(b->admin, cfg->admin_host, cfg->admin_port)) != 0) {
      wr_error("main", "cannot listen on %s: %s (set admin.listen)", cfg->admin_listen,
               strerror(-rc));
      goto fail_handles;
    }
  }
  b->listening = true;

  b->amqp_cbs = (wr_amqp_callbacks_t){.data = b,
                                      .deliver_cb = deliver_cb,
                                      .next_command_cb = next_command_cb,
                                      .state_cb = state_cb,
                                      .queue_stats_cb = queue_stats_cb};
  if ((rc = wr_amqp_new(&b->amqp, cfg, &b->amqp_cbs)) != 0)
    goto fail_handles;
  /* The AMQP thread must never take a signal meant for the loop. */
  sigfillset(&set);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  rc = wr_amqp_start(b->amqp);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    wr_error("main", "cannot start the AMQP thread: %s", strerror(-rc));
    wr_amqp_free(b->amqp);
    b->amqp = NULL;
    goto fail_handles;
  }
  wr_info("main", "warren %s listening on %s (path %s), admin on %s, ack mode %s", WARREN_VERSION,
          cfg->server_listen, cfg->server_path, cfg->admin_enabled ? cfg->admin_listen : "off",
          cfg->ack_mode == WR_ACK_WRITE ? "write" : "client");

  uv_run(&b->loop, UV_RUN_DEFAULT);
  status = 0;
  wr_amqp_free(b->amqp);
  goto done;

fail_handles:
  close_handles(b);
  uv_run(&b->loop, UV_RUN_DEFAULT);
done:
  if (uv_loop_close(&b->loop) != 0)
    wr_warn("main", "event loop closed with handles still open");
  wr_ws_buf_unref(b->pong[0]);
  wr_ws_buf_unref(b->pong[1]);
  wr_core_close(&b->core);
  wr_ring_close(&b->deliveries);
  wr_ring_close(&b->commands);
  free(b->overflow);
  if (b->reloaded != NULL) {
    wr_config_close(b->reloaded);
    free(b->reloaded);
  }
  pthread_mutex_destroy(&b->qstats_lock);
  if (status == 0)
    wr_info("main", "stopped cleanly");
  free(b);
  return status;
fail_loop:
  uv_loop_close(&b->loop);
fail_free:
  free(b);
  return 1;
}
