// Fault 3 (docs/reliability.md, scenario 4): the broker hangs (kill -STOP) in the middle
// of a burst, with acks and ladder publishes in flight, then resumes
// (kill -CONT). warren must notice within 2 × heartbeat + 1 s (/readyz 503),
// its event loop must keep serving clients throughout (a client pings every
// 20 ms and the longest pong delay is reported), and once the broker resumes
// everything confirmed is delivered: lost 0.
//
// The burst carries 16 KiB bodies for users who are offline, so warren has
// many large ladder copies to publish when the broker stops reading: the
// situation in which rabbitmq-c 0.11 can block forever inside a send
// (amqp/README.md, "rabbitmq-c 0.11"). The watchdog (wr_amqp_watchdog) must then cut the socket;
// warren_amqp_watchdog_kicks_total and the log say whether it had to.
//
// SHORT: heartbeat 2 s, hung 10 s. FULL: heartbeat 5 s, hung 30 s.
// Runs its own RabbitMQ node (WARREN_TEST_FAULT_BROKER_PORT, default 5681).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { startWarren, ClientPool, waitFor, sleep, signJwt } from './lib/index.js';
import { FULL, size, report, usePrivateBroker, lossOf, metrics, ReadyWatch, PingProbe, round, overLoop } from './lib/faults.js';

const HEARTBEAT_S = size(2, 5);
const HANG_MS = size(10000, 30000);
const ONLINE = size(20, 100);
const OFFLINE = size(10, 50);
const BURST = size(3000, 10000);
const PAD = 'x'.repeat(16 * 1024);

let broker;
usePrivateBroker(undefined, (b) => {
  broker = b;
});

test(`broker hung ${HANG_MS / 1000} s (heartbeat ${HEARTBEAT_S} s): detected, loop responsive, lost 0`, { timeout: FULL ? 600000 : 180000 }, async (t) => {
  const w = await startWarren({
    name: 'fault-hang',
    config: {
      // A returning user's backlog of 16 KiB notifications is larger than the
      // default 1 MiB cap; the slow-consumer cap is fault 6's subject.
      server: { max_queued_bytes: 64 * 1024 * 1024 },
      amqp: { url: broker.url, heartbeat_s: HEARTBEAT_S, retry_delays_ms: '500,1000', max_attempts: 1000, prefetch: 1000 },
      ack: { timeout_ms: 5000 },
    },
  });
  const online = await ClientPool.open(w, ONLINE, { prefix: 'on' });
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const probe = await PingProbe.open(w, signJwt({ sub: 'probe', exp }, w.secret), { interval: 20 });
  const pub = await broker.publisher();
  const ids = Array.from({ length: BURST }, (_, i) => `hang-${w.name}-${i}`);
  const offlineUser = (i) => `off${i % OFFLINE}`;
  const envOf = (i) =>
    i % 2 ? { id: ids[i], user_id: online.user(i), seq: i } : { id: ids[i], user_id: offlineUser(i), seq: i, pad: PAD };

  const publishing = (async () => {
    for (let i = 0; i < BURST; i++) await pub.publish(w.exchange, envOf(i)).catch(() => {});
  })();
  // Stop the broker while the burst is being consumed.
  await waitFor(() => online.received.size >= BURST / 10, { timeout: 60000, interval: 5, what: 'burst under way' });
  const watch = new ReadyWatch(w, { interval: 25 });
  const m0 = await metrics(w);
  const stopAt = Date.now();
  broker.signal('SIGSTOP');
  await waitFor(() => watch.firstAfter(stopAt, (s) => s !== 200), { timeout: HANG_MS, interval: 25, what: 'not ready' }).catch(() => {});
  const elapsed = Date.now() - stopAt;
  if (elapsed < HANG_MS) await sleep(HANG_MS - elapsed);
  const mHung = await metrics(w);
  const contAt = Date.now();
  broker.signal('SIGCONT');
  await waitFor(() => watch.firstAfter(contAt, (s) => s === 200), { timeout: 60000, what: '/readyz 200 after SIGCONT' }).catch(() => {});
  const probeMaxDuringFault = probe.maxDelayMs;
  const mCont = await metrics(w);

  await publishing;
  await pub.settle(30000);
  // The offline users come back and collect their notifications.
  const offline = await ClientPool.open(w, OFFLINE, { prefix: 'off' });
  const received = new Set([...online.received, ...offline.received]);
  const confirmedIds = ids.filter((id) => pub.confirmed.has(id));
  await waitFor(
    () => {
      for (const id of offline.received) received.add(id);
      for (const id of online.received) received.add(id);
      return confirmedIds.every((id) => received.has(id));
    },
    { timeout: 120000, interval: 250, what: 'every confirmed id received' },
  ).catch(() => {});
  await watch.stop();
  await probe.stop();
  const m1 = await metrics(w);
  await w.stop('SIGTERM');
  const inQueue = await broker.drain(w.allQueues);
  const { lost, queued } = lossOf(confirmedIds, received, inQueue);
  const log = w.logText();
  const notReady = watch.firstAfter(stopAt, (s) => s !== 200);
  const readyAgain = watch.firstAfter(contAt, (s) => s === 200);
  const detectLine = log.split('\n').find((l) => /no progress|connection lost|disconnected from the broker|heartbeat/i.test(l));

  const fig = {
    heartbeat_s: HEARTBEAT_S,
    hung_ms: contAt - stopAt,
    burst: BURST,
    confirmed: confirmedIds.length,
    received_unique: received.size,
    duplicates: online.duplicates + offline.duplicates,
    still_in_queues: queued,
    lost: lost.length,
    detected_ms: notReady === null ? null : notReady - stopAt,
    detect_bound_ms: 2000 * HEARTBEAT_S + 1000,
    cont_to_ready_ms: readyAgain === null ? null : readyAgain - contAt,
    connected_metric_while_hung: mHung.warren_amqp_connected,
    watchdog_kicks: m1.warren_amqp_watchdog_kicks_total - m0.warren_amqp_watchdog_kicks_total,
    reconnects: m1.warren_amqp_reconnects_total,
    retried: Object.entries(m1).filter(([k]) => k.startsWith('warren_retried_total')).reduce((a, [, v]) => a + v, 0),
    ping_max_hung_ms: round(probeMaxDuringFault),
    ping_max_ms: round(probe.maxDelayMs),
    ping_p99_ms: round(probe.p99Ms),
    pings: probe.count,
    pings_over_100ms: probe.over100,
    // warren's own view of its loop from the stop to readiness after CONT:
    // iterations longer than 100 ms in wall time, and in the loop thread's
    // CPU time (wall far above CPU = the thread waited for one of the cores).
    loop_over_100ms: overLoop(m0, mCont, 'warren_loop_busy_seconds'),
    loop_cpu_over_100ms: overLoop(m0, mCont, 'warren_loop_cpu_seconds'),
    loop_iterations: mCont.warren_loop_busy_seconds_count - m0.warren_loop_busy_seconds_count,
    loop_busy_max_ms: round(mCont.warren_loop_busy_max_seconds * 1000),
    loop_cpu_max_ms: round(mCont.warren_loop_cpu_max_seconds * 1000),
    load_avg_1m: round(os.loadavg()[0], 2),
    detect_log: detectLine ? detectLine.slice(0, 160) : null,
  };
  report(t, 'broker-hang', fig);
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} confirmed notifications lost`);
  assert.equal(queued, 0, 'notifications left in queues');
  assert.ok(fig.detected_ms !== null, 'warren never noticed the hung broker (/readyz stayed 200)');
  assert.ok(fig.detected_ms <= fig.detect_bound_ms, `noticed after ${fig.detected_ms} ms > 2 × heartbeat + 1 s`);
  assert.equal(fig.connected_metric_while_hung, 0, 'warren_amqp_connected stayed 1 while the broker was hung');
  assert.ok(fig.cont_to_ready_ms !== null, 'warren never became ready again after SIGCONT');
  // Generous bound (the machine is shared); the figure above is the measure.
  assert.ok(fig.ping_max_hung_ms < 1000, `a client ping waited ${fig.ping_max_ms} ms: the event loop stalled`);
  online.close();
  offline.close();
  await pub.close();
});
