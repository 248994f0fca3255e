/* The AMQP side of warren-bench: the minimal consumer that sets the ceiling,
 * the confirmed pre-filler and the fixed-rate publisher. One rabbitmq-c
 * connection, one channel, heartbeats off (the runs are short and these
 * processes never stop reading for long). */
#include "bench/bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#define CH 1

typedef struct {
  amqp_connection_state_t conn;
  uint64_t published; /* sequence number of the last publish (confirms count from 1) */
  uint64_t confirmed; /* acked by the broker */
  uint64_t nacked;
  uint64_t low;     /* every seq <= low is settled */
  uint8_t *settled; /* settled[seq], seq in 1..cap */
  uint64_t cap;
} link_t;

static bool rpc_ok(amqp_connection_state_t c, const char *what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
  if (r.reply_type == AMQP_RESPONSE_NORMAL)
    return true;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
    fprintf(stderr, "warren-bench: %s: %s\n", what, amqp_error_string2(r.library_error));
  else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_t *m = r.reply.decoded;
    fprintf(stderr, "warren-bench: %s: channel closed: %.*s\n", what, (int)m->reply_text.len,
            (const char *)m->reply_text.bytes);
  } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_t *m = r.reply.decoded;
    fprintf(stderr, "warren-bench: %s: connection closed: %.*s\n", what, (int)m->reply_text.len,
            (const char *)m->reply_text.bytes);
  } else
    fprintf(stderr, "warren-bench: %s: broker error\n", what);
  return false;
}

static int link_open(link_t *l, const char *url, bool confirms) {
  struct amqp_connection_info ci;
  char *u = strdup(url);
  amqp_socket_t *s;
  memset(l, 0, sizeof *l);
  if (!u || amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
    fprintf(stderr, "warren-bench: bad AMQP URL %s\n", url);
    free(u);
    return -EINVAL;
  }
  /* "amqp://host:port/" names the empty vhost in rabbitmq-c; mean "/" as warren does. */
  if (!ci.vhost || !*ci.vhost)
    ci.vhost = "/";
  l->conn = amqp_new_connection();
  if (!l->conn || !(s = amqp_tcp_socket_new(l->conn)))
    goto fail;
  if (amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK) {
    fprintf(stderr, "warren-bench: cannot connect to %s:%d\n", ci.host, ci.port);
    goto fail;
  }
  amqp_rpc_reply_t r =
      amqp_login(l->conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    fprintf(stderr, "warren-bench: login to %s failed\n", url);
    goto fail;
  }
  amqp_channel_open(l->conn, CH);
  if (!rpc_ok(l->conn, "channel.open"))
    goto fail;
  if (confirms) {
    amqp_confirm_select(l->conn, CH);
    if (!rpc_ok(l->conn, "confirm.select"))
      goto fail;
  }
  free(u);
  return 0;
fail:
  if (l->conn)
    amqp_destroy_connection(l->conn);
  l->conn = NULL;
  free(u);
  return -EIO;
}

static void link_close(link_t *l) {
  if (!l->conn)
    return;
  amqp_channel_close(l->conn, CH, AMQP_REPLY_SUCCESS);
  amqp_connection_close(l->conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(l->conn);
  l->conn = NULL;
  free(l->settled);
  l->settled = NULL;
}

static int declare_plain(link_t *l, const char *queue) {
  amqp_queue_declare(l->conn, CH, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
  return rpc_ok(l->conn, "queue.declare") ? 0 : -EIO;
}

static void settle(link_t *l, uint64_t tag, bool multiple, bool ok) {
  uint64_t from = multiple ? l->low + 1 : tag;
  for (uint64_t t = from; t <= tag && t <= l->cap; t++) {
    if (l->settled[t])
      continue;
    l->settled[t] = 1;
    if (ok)
      l->confirmed++;
    else
      l->nacked++;
  }
  while (l->low < l->cap && l->settled[l->low + 1])
    l->low++;
}

/* Reads publisher confirms for up to wait_us (0: only what is already there).
 * Returns 0, or -EIO when the connection or channel failed. */
static int read_confirms(link_t *l, int64_t wait_us) {
  for (;;) {
    amqp_frame_t f;
    struct timeval tv = {(time_t)(wait_us / 1000000), (suseconds_t)(wait_us % 1000000)};
    int st = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT)
      return 0;
    if (st != AMQP_STATUS_OK) {
      fprintf(stderr, "warren-bench: reading confirms: %s\n", amqp_error_string2(st));
      return -EIO;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
      continue;
    if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
      amqp_basic_ack_t *a = f.payload.method.decoded;
      settle(l, a->delivery_tag, a->multiple, true);
    } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
      amqp_basic_nack_t *a = f.payload.method.decoded;
      settle(l, a->delivery_tag, a->multiple, false);
    } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
               f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      fprintf(stderr, "warren-bench: the broker closed the channel while publishing (missing "
                      "exchange?)\n");
      return -EIO;
    }
    wait_us = 0;
  }
}

static int publish_one(link_t *l, const wr_bench_opts_t *o, uint64_t i, bool broadcast) {
  char body[4096];
  size_t len =
      wr_bench_envelope_build(body, sizeof body, o->run_id, i, o->users, broadcast, o->body_bytes);
  amqp_basic_properties_t p;
  memset(&p, 0, sizeof p);
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.delivery_mode = 2;
  amqp_bytes_t b = {len, body};
  int st = amqp_basic_publish(l->conn, CH, amqp_cstring_bytes(o->exchange ? o->exchange : ""),
                              amqp_cstring_bytes(o->exchange ? "bench" : o->queue), 0, 0, &p, b);
  if (st != AMQP_STATUS_OK) {
    fprintf(stderr, "warren-bench: publish: %s\n", amqp_error_string2(st));
    return -EIO;
  }
  l->published++;
  return 0;
}

static int confirms_alloc(link_t *l, uint64_t n) {
  l->cap = n;
  l->settled = calloc(n + 1, 1);
  return l->settled ? 0 : -ENOMEM;
}

/* Waits until every publish is settled (or 30 s pass). */
static int confirms_drain(link_t *l) {
  int64_t deadline = wr_bench_now_us() + 30000000;
  while (l->confirmed + l->nacked < l->published) {
    if (wr_bench_now_us() > deadline) {
      fprintf(stderr, "warren-bench: %" PRIu64 " publishes never confirmed\n",
              l->published - l->confirmed - l->nacked);
      return -ETIMEDOUT;
    }
    if (read_confirms(l, 100000) != 0)
      return -EIO;
  }
  return 0;
}

int wr_bench_fill_run(const wr_bench_opts_t *o) {
  link_t l;
  wr_bench_json_t j;
  int rc = 1;
  if (!o->queue && !o->exchange) {
    fprintf(stderr, "warren-bench fill: --queue or --exchange is required\n");
    return 2;
  }
  if (link_open(&l, o->amqp_url, true) != 0)
    return 1;
  if (o->declare && (!o->queue || declare_plain(&l, o->queue) != 0))
    goto out;
  if (confirms_alloc(&l, o->count) != 0)
    goto out;
  int64_t t0 = wr_bench_now_us();
  for (uint64_t i = 0; i < o->count; i++) {
    while (l.published - l.confirmed - l.nacked >= o->window)
      if (read_confirms(&l, 100000) != 0)
        goto out;
    if (publish_one(&l, o, o->first + i, false) != 0 || read_confirms(&l, 0) != 0)
      goto out;
  }
  if (confirms_drain(&l) != 0)
    goto out;
  double secs = (double)(wr_bench_now_us() - t0) / 1e6;
  printf("fill: %" PRIu64 " confirmed, %" PRIu64 " nacked in %.2f s (%.0f/s) to %s%s, %u users\n",
         l.confirmed, l.nacked, secs, (double)l.confirmed / secs,
         o->exchange ? "exchange " : "queue ", o->exchange ? o->exchange : o->queue, o->users);
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "fill");
    wr_bench_json_int(&j, "confirmed", (long long)l.confirmed);
    wr_bench_json_int(&j, "nacked", (long long)l.nacked);
    wr_bench_json_num(&j, "seconds", secs);
    wr_bench_json_num(&j, "rate", (double)l.confirmed / secs);
    wr_bench_json_close(&j);
  }
  rc = l.nacked == 0 ? 0 : 1;
out:
  link_close(&l);
  return rc;
}

int wr_bench_publish_run(const wr_bench_opts_t *o) {
  link_t l;
  wr_bench_json_t j;
  int rc = 1;
  uint64_t n = o->count ? o->count : (uint64_t)(o->rate * o->duration_s + 0.5);
  if (!o->queue && !o->exchange) {
    fprintf(stderr, "warren-bench publish: --queue or --exchange is required\n");
    return 2;
  }
  if (o->rate <= 0 || n == 0) {
    fprintf(stderr, "warren-bench publish: --rate and --count or --duration are required\n");
    return 2;
  }
  if (link_open(&l, o->amqp_url, true) != 0)
    return 1;
  if (confirms_alloc(&l, n) != 0)
    goto out;
  int64_t t0 = wr_bench_now_us();
  int64_t max_behind = 0;
  while (l.published < n) {
    int64_t now = wr_bench_now_us();
    uint64_t due = (uint64_t)((double)(now - t0) * o->rate / 1e6) + 1;
    if (due > n)
      due = n;
    if (due > l.published + 1) {
      int64_t behind = (int64_t)(due - l.published - 1);
      if (behind > max_behind)
        max_behind = behind;
    }
    while (l.published < due && l.published - l.confirmed - l.nacked < o->window)
      if (publish_one(&l, o, l.published, o->broadcast) != 0)
        goto out;
    if (read_confirms(&l, 0) != 0)
      goto out;
    if (l.published < n) {
      /* Sleep until the next token is due, in ticks of at least 1 ms: waking
       * for every token and every confirm cost this process most of a core at
       * 5,000/s, CPU the broker and warren need on a small machine. At high
       * rates the due tokens go out together at each tick, like a real
       * producer's batch; each envelope carries its own publish time. */
      int64_t next = t0 + (int64_t)((double)(l.published) * 1e6 / o->rate);
      int64_t wait = next - wr_bench_now_us();
      if (l.published - l.confirmed - l.nacked >= o->window) {
        if (read_confirms(&l, 1000) != 0) /* window full: wait for confirms */
          goto out;
      } else if (wait > 0) {
        if (wait < 1000)
          wait = 1000;
        struct timespec ts = {(time_t)(wait / 1000000), (long)(wait % 1000000) * 1000};
        nanosleep(&ts, NULL);
      }
    }
  }
  double secs = (double)(wr_bench_now_us() - t0) / 1e6;
  if (confirms_drain(&l) != 0)
    goto out;
  printf("publish: %" PRIu64 " %s in %.2f s (%.0f/s, target %.0f/s, at most %" PRId64
         " behind), %" PRIu64 " confirmed, %" PRIu64 " nacked\n",
         l.published, o->broadcast ? "broadcasts" : "notifications", secs,
         (double)l.published / secs, o->rate, max_behind, l.confirmed, l.nacked);
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "publish");
    wr_bench_json_int(&j, "published", (long long)l.published);
    wr_bench_json_int(&j, "confirmed", (long long)l.confirmed);
    wr_bench_json_num(&j, "seconds", secs);
    wr_bench_json_num(&j, "rate", (double)l.published / secs);
    wr_bench_json_num(&j, "target_rate", o->rate);
    wr_bench_json_int(&j, "max_behind", (long long)max_behind);
    wr_bench_json_close(&j);
  }
  rc = l.nacked == 0 ? 0 : 1;
out:
  link_close(&l);
  return rc;
}

int wr_bench_consume_run(const wr_bench_opts_t *o) {
  link_t l;
  wr_bench_json_t j;
  int rc = 1;
  uint64_t got = 0, last_tag = 0, acked_tag = 0;
  int64_t t_first = 0, t_last = 0;
  if (!o->queue) {
    fprintf(stderr, "warren-bench consume: --queue is required\n");
    return 2;
  }
  if (o->ack_every == 0 || o->ack_every > o->prefetch) {
    fprintf(stderr, "warren-bench consume: --ack-every must be in 1..prefetch\n");
    return 2;
  }
  /* Latency is only meaningful when the queue is fed at a fixed rate while we
   * consume; for a pre-filled queue it is the time spent waiting in it. */
  size_t lat_cap = o->count ? (size_t)o->count : 1000000, lat_n = 0;
  uint32_t *lat = malloc(lat_cap * sizeof *lat);
  if (!lat)
    return 1;
  wr_bench_sink_t sink = {0};
  const char *who = o->sink ? "bridge" : "consume";
  if (o->sink && wr_bench_sink_open(&sink, o->sink, o->conns) != 0) {
    free(lat);
    return 1;
  }
  if (link_open(&l, o->amqp_url, false) != 0) {
    free(lat);
    wr_bench_sink_close(&sink);
    return 1;
  }
  if (o->declare && declare_plain(&l, o->queue) != 0)
    goto out;
  amqp_basic_qos(l.conn, CH, 0, (uint16_t)o->prefetch, 0);
  if (!rpc_ok(l.conn, "basic.qos"))
    goto out;
  amqp_basic_consume(l.conn, CH, amqp_cstring_bytes(o->queue), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  if (!rpc_ok(l.conn, "basic.consume"))
    goto out;
  int64_t t0 = wr_bench_now_us();
  wr_bench_cpu_t c0, c1;
  wr_bench_cpu_sample(o->broker_pid, &c0);
  /* Without --count, drain until the queue has been quiet for 2 s. */
  int64_t idle_limit_us = o->count ? (int64_t)(o->timeout_s * 1e6) : 2000000;
  while (!o->count || got < o->count) {
    amqp_envelope_t env;
    struct timeval tv = {0, 200000};
    amqp_maybe_release_buffers(l.conn);
    amqp_rpc_reply_t r = amqp_consume_message(l.conn, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      int64_t since = wr_bench_now_us() - (t_last ? t_last : t0);
      if (since > idle_limit_us)
        break;
      continue;
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      fprintf(stderr, "warren-bench consume: consume failed\n");
      goto out;
    }
    t_last = wr_bench_now_us();
    if (!t_first)
      t_first = t_last;
    got++;
    last_tag = env.delivery_tag;
    if (lat_n < lat_cap) {
      const char *b = env.message.body.bytes;
      const char *t = memmem(b, env.message.body.len, "\"t_us\":", 7);
      int64_t now_rt = wr_bench_realtime_us();
      if (t) {
        int64_t sent = strtoll(t + 7, NULL, 10);
        lat[lat_n++] = now_rt > sent ? (uint32_t)(now_rt - sent) : 0;
      }
    }
    /* The bridge's work: the body to the user's connection, acked once written. */
    if (o->sink && wr_bench_sink_write(&sink, (uint32_t)((got - 1) % sink.n),
                                       env.message.body.bytes, env.message.body.len) != 0) {
      amqp_destroy_envelope(&env);
      goto out;
    }
    amqp_destroy_envelope(&env);
    if (got % o->ack_every == 0) {
      amqp_basic_ack(l.conn, CH, last_tag, 1);
      acked_tag = last_tag;
    }
  }
  if (last_tag != acked_tag)
    amqp_basic_ack(l.conn, CH, last_tag, 1);
  wr_bench_cpu_sample(o->broker_pid, &c1);
  double secs = t_last > t0 ? (double)(t_last - t0) / 1e6 : 0;
  double rate = secs > 0 ? (double)got / secs : 0;
  printf("%s: %" PRIu64 " messages from %s in %.2f s: %.0f/s (prefetch %u, ack multiple "
         "every %u)\n",
         who, got, o->queue, secs, rate, o->prefetch, o->ack_every);
  if (o->sink)
    printf("bridge: %" PRIu64 " frames written to %u connections\n", sink.frames, sink.n);
  wr_bench_sort_u32(lat, lat_n);
  uint32_t p50 = wr_bench_quantile(lat, lat_n, 0.5), p99 = wr_bench_quantile(lat, lat_n, 0.99),
           p999 = wr_bench_quantile(lat, lat_n, 0.999);
  printf("%s: latency since t_us p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n", who, p50 / 1e3,
         p99 / 1e3, p999 / 1e3);
  wr_bench_budget_t bu;
  if (o->broker_pid > 0)
    wr_bench_budget(who, &c0, &c1, -1, got, &bu);
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", who);
    if (o->sink)
      wr_bench_json_int(&j, "frames", (long long)sink.frames);
    if (o->broker_pid > 0)
      wr_bench_json_budget(&j, &bu);
    wr_bench_json_int(&j, "consumed", (long long)got);
    wr_bench_json_num(&j, "seconds", secs);
    wr_bench_json_num(&j, "rate", rate);
    wr_bench_json_int(&j, "lat_p50_us", p50);
    wr_bench_json_int(&j, "lat_p99_us", p99);
    wr_bench_json_int(&j, "lat_p999_us", p999);
    wr_bench_json_close(&j);
  }
  rc = (!o->count || got == o->count) ? 0 : 1;
out:
  free(lat);
  link_close(&l);
  wr_bench_sink_close(&sink);
  return rc;
}

/* One passive queue.declare: the queue's ready messages and consumers, or
 * -ENOENT when it does not exist (the broker closes the channel with 404; it
 * is opened again for the next declare). */
static int passive_depth(link_t *l, const char *queue, uint32_t *messages, uint32_t *consumers) {
  amqp_queue_declare_ok_t *ok =
      amqp_queue_declare(l->conn, CH, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
  if (ok) {
    *messages = ok->message_count;
    *consumers = ok->consumer_count;
    return 0;
  }
  amqp_rpc_reply_t r = amqp_get_rpc_reply(l->conn);
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_t *m = r.reply.decoded;
    int code = m->reply_code;
    amqp_channel_close_ok_t close_ok = {0};
    amqp_send_method(l->conn, CH, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
    amqp_channel_open(l->conn, CH);
    if (!rpc_ok(l->conn, "channel.open"))
      return -EIO;
    if (code == 404)
      return -ENOENT;
    fprintf(stderr, "warren-bench depth: %s: channel closed with %d\n", queue, code);
    return -EIO;
  }
  rpc_ok(l->conn, "queue.declare (passive)");
  return -EIO;
}

/* `depth`: the ready messages of one queue (--queue) or of users' mailboxes
 * (--mailboxes Q --users U: Q.mbox.u.u0 … Q.mbox.u.u{U-1}, docs/mailboxes.md
 * "Names and keys"), by passive declares. With --count N it waits (up to
 * --timeout) until they hold N in all, spread as `fill` spreads N over U users
 * (queue k: N / U, one more for k < N % U) and none has a consumer; --count 0
 * waits until all are empty and unused. */
int wr_bench_depth_run(const wr_bench_opts_t *o) {
  link_t l;
  wr_bench_json_t j;
  int rc = 1;
  uint32_t nq = o->mailboxes ? o->users : 1;
  char name[300];
  if (!o->queue && !o->mailboxes) {
    fprintf(stderr, "warren-bench depth: --queue or --mailboxes is required\n");
    return 2;
  }
  uint32_t *msgs = calloc(nq, sizeof *msgs), *cons = calloc(nq, sizeof *cons);
  uint8_t *done = calloc(nq, 1), *exists = calloc(nq, 1);
  if (!msgs || !cons || !done || !exists || link_open(&l, o->amqp_url, false) != 0) {
    free(msgs);
    free(cons);
    free(done);
    free(exists);
    return 1;
  }
  int64_t t0 = wr_bench_now_us(), polls = 0;
  uint64_t total = 0;
  uint32_t n_exist = 0, n_done = 0;
  for (;;) {
    polls++;
    for (uint32_t k = 0; k < nq; k++) {
      if (done[k])
        continue;
      if (o->mailboxes)
        snprintf(name, sizeof name, "%s.mbox.u.u%u", o->mailboxes, k);
      else
        snprintf(name, sizeof name, "%s", o->queue);
      amqp_maybe_release_buffers(l.conn);
      int r = passive_depth(&l, name, &msgs[k], &cons[k]);
      if (r == -EIO)
        goto out;
      exists[k] = r == 0;
      if (!exists[k])
        msgs[k] = cons[k] = 0;
      /* While waiting, one missing queue ends the pass: each 404 costs the
       * broker a channel and an error in its log, and thousands of them per
       * pass slow down the very declares being waited for. */
      if (!exists[k] && o->count_set)
        break;
      uint64_t want = o->count / nq + (k < o->count % nq ? 1 : 0);
      if (o->count_set && exists[k] && msgs[k] == want && cons[k] == 0) {
        done[k] = 1;
        n_done++;
      }
    }
    if (!o->count_set || n_done == nq)
      break;
    if ((double)(wr_bench_now_us() - t0) / 1e6 > o->timeout_s) {
      fprintf(stderr,
              "warren-bench depth: timed out after %.0f s with %u of %u queues as "
              "expected\n",
              o->timeout_s, n_done, nq);
      break;
    }
    struct timespec ts = {0, polls < 10 ? 200000000 : 500000000};
    nanosleep(&ts, NULL);
  }
  uint32_t mn = UINT32_MAX, mx = 0;
  uint64_t consumers = 0;
  for (uint32_t k = 0; k < nq; k++) {
    n_exist += exists[k];
    total += msgs[k];
    consumers += cons[k];
    if (msgs[k] < mn)
      mn = msgs[k];
    if (msgs[k] > mx)
      mx = msgs[k];
  }
  double secs = (double)(wr_bench_now_us() - t0) / 1e6;
  printf("depth: %u of %u queues exist, %" PRIu64 " messages ready (min %u, max %u), %" PRIu64
         " consumers%s, after %.1f s (%lld polls)\n",
         n_exist, nq, total, mn, mx, consumers,
         o->count_set ? (n_done == nq ? ", as expected" : ", NOT as expected") : "", secs,
         (long long)polls);
  if (wr_bench_json_open(&j, o->json_path) == 0) {
    wr_bench_json_str(&j, "mode", "depth");
    wr_bench_json_int(&j, "queues", nq);
    wr_bench_json_int(&j, "exist", n_exist);
    wr_bench_json_int(&j, "messages", (long long)total);
    wr_bench_json_int(&j, "min", mn);
    wr_bench_json_int(&j, "max", mx);
    wr_bench_json_int(&j, "consumers", (long long)consumers);
    wr_bench_json_num(&j, "seconds", secs);
    wr_bench_json_close(&j);
  }
  rc = !o->count_set || n_done == nq ? 0 : 1;
out:
  link_close(&l);
  free(msgs);
  free(cons);
  free(done);
  free(exists);
  return rc;
}
