// Fault 3b (docs/reliability.md, scenario 4; amqp/README.md, "rabbitmq-c 0.11"): the
// broker hangs (SIGSTOP) while warren's AMQP thread has tens of MB to send —
// the situation in which rabbitmq-c 0.11 can wait forever inside a send.
// Users receive large notifications and never ack them; the broker is
// stopped; at ack.timeout_ms warren hands them all to the ladder, and the AMQP
// thread publishes 1,000 copies of 60 KiB (more than the loopback socket
// buffers hold) into a socket nobody reads. warren must notice the hung broker
// within 2 × heartbeat + 1 s — by rabbitmq-c's heartbeat check, the kernel's
// TCP_USER_TIMEOUT or, as the last guard, its own watchdog
// (warren_amqp_watchdog_kicks_total says whether that one had to fire) — and
// after SIGCONT, with clients that ack, every confirmed notification arrives.
//
// SHORT: heartbeat 3 s. FULL: heartbeat 5 s. Both 1,000 × 60 KiB.
// Runs its own RabbitMQ node (WARREN_TEST_FAULT_BROKER_PORT, default 5681).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, connectClient, waitFor, sleep, signJwt } from './lib/index.js';
import { FULL, size, report, usePrivateBroker, lossOf, metrics, ReadyWatch } from './lib/faults.js';

const HEARTBEAT_S = size(3, 5);
// More than the loopback socket buffers hold (tcp_rmem can grow to 32 MiB).
const N = size(1000, 1000);
const USERS = 10;
const PAD = 'w'.repeat(60 * 1024);
const ACK_TIMEOUT_MS = 3000;

let broker;
usePrivateBroker(undefined, (b) => {
  broker = b;
});

test(`broker hung while warren publishes 60 MB of ladder copies: noticed within 2 × heartbeat + 1 s, lost 0`, { timeout: FULL ? 600000 : 180000 }, async (t) => {
  const w = await startWarren({
    name: 'fault-wd',
    config: {
      server: { max_queued_bytes: 256 * 1024 * 1024 },
      amqp: { url: broker.url, heartbeat_s: HEARTBEAT_S, retry_delays_ms: '500', max_attempts: 1000, prefetch: 1000 },
      ack: { timeout_ms: ACK_TIMEOUT_MS },
      log: { level: 'debug' },
    },
  });
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const user = (i) => `wd${i % USERS}`;
  const tokens = Array.from({ length: USERS }, (_, i) => signJwt({ sub: user(i), exp }, w.secret));
  // Users that read but never ack: every notification stays in flight.
  const silent = [];
  for (const tok of tokens) silent.push(await connectClient(w.wsUrl(), tok, { name: 'silent', autoAck: false }));
  const pub = await broker.publisher();
  const ids = Array.from({ length: N }, (_, i) => `wd-${w.name}-${i}`);
  for (let i = 0; i < N; i++) await pub.publish(w.exchange, { id: ids[i], user_id: user(i), pad: PAD });
  await pub.settle(60000);
  const seen = () => silent.reduce((a, c) => a + c.ids.size, 0);
  await waitFor(() => seen() >= N, { timeout: 60000, interval: 20, what: 'every notification written to its user' });

  // Stop the broker; at the ack timeout warren publishes N ladder copies
  // (N × 60 KiB) into the stopped broker's socket.
  const watch = new ReadyWatch(w, { interval: 25 });
  const m0 = await metrics(w);
  const stopAt = Date.now();
  broker.signal('SIGSTOP');
  const bound = 2000 * HEARTBEAT_S + 1000;
  await waitFor(() => watch.firstAfter(stopAt, (st) => st !== 200), { timeout: bound + 15000, interval: 25, what: 'not ready' }).catch(() => {});
  // Hold the broker until the copies have been handed over and any guard
  // had its time to act.
  await sleep(Math.max(0, stopAt + ACK_TIMEOUT_MS + bound + 1000 - Date.now()));
  const mHung = await metrics(w);
  const contAt = Date.now();
  broker.signal('SIGCONT');
  await waitFor(() => watch.firstAfter(contAt, (st) => st === 200), { timeout: 60000, what: '/readyz 200 after SIGCONT' }).catch(() => {});

  // The users come back with clients that ack.
  for (const c of silent) c.close();
  const acking = [];
  for (const tok of tokens) acking.push(await connectClient(w.wsUrl(), tok, { name: 'acking' }));
  const received = new Set();
  const confirmedIds = ids.filter((id) => pub.confirmed.has(id));
  await waitFor(
    () => {
      for (const c of acking) for (const id of c.ids.keys()) received.add(id);
      return confirmedIds.every((id) => received.has(id));
    },
    { timeout: 120000, interval: 250, what: 'every confirmed id received after CONT' },
  ).catch(() => {});
  await watch.stop();
  const m1 = await metrics(w);
  const log = w.logText();
  await w.stop('SIGTERM');
  const inQueue = await broker.drain(w.allQueues);
  const { lost, queued } = lossOf(confirmedIds, received, inQueue);
  const lines = log.split('\n');
  const kickLine = lines.find((l) => /no progress/.test(l));
  const detectLine = lines.find((l) => /no progress|connection lost|disconnected from the broker|heartbeat|cannot publish/i.test(l));
  const ts = (l) => (l ? Date.parse(l.slice(0, 24)) : null);
  // The first hand-over to the ladder after the stop (debug log).
  const firstCopy = ts(lines.find((l) => / offline$/.test(l) && ts(l) >= stopAt));
  const notReady = watch.firstAfter(stopAt, (s) => s !== 200);
  const readyAgain = watch.firstAfter(contAt, (s) => s === 200);

  const fig = {
    heartbeat_s: HEARTBEAT_S,
    notifications: N,
    body_kib: 60,
    ack_timeout_ms: ACK_TIMEOUT_MS,
    confirmed: confirmedIds.length,
    watchdog_kicks: mHung.warren_amqp_watchdog_kicks_total - m0.warren_amqp_watchdog_kicks_total,
    stop_to_first_copy_ms: firstCopy ? firstCopy - stopAt : null,
    copies_published_while_hung: mHung.warren_amqp_published_total - m0.warren_amqp_published_total,
    detect_bound_ms: bound,
    stop_to_not_ready_ms: notReady === null ? null : notReady - stopAt,
    cont_to_ready_ms: readyAgain === null ? null : readyAgain - contAt,
    reconnects: m1.warren_amqp_reconnects_total,
    received_unique: received.size,
    duplicates: acking.reduce((a, c) => a + [...c.ids.values()].filter((n) => n > 1).length, 0),
    still_in_queues: queued,
    lost: lost.length,
    detect_log: detectLine ? detectLine.slice(0, 200) : null,
    kick_log: kickLine ? kickLine.slice(0, 200) : null,
  };
  report(t, 'watchdog', fig);
  assert.ok(fig.stop_to_first_copy_ms !== null, 'no notification was handed to the ladder while the broker was hung');
  assert.ok(fig.stop_to_not_ready_ms !== null && fig.stop_to_not_ready_ms <= bound,
    `noticed the hung broker ${fig.stop_to_not_ready_ms} ms after the stop (bound: 2 × heartbeat + 1 s = ${bound} ms)`);
  assert.ok(fig.cont_to_ready_ms !== null, 'warren never became ready again after SIGCONT');
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} confirmed notifications lost`);
  assert.equal(queued, 0, 'notifications left in queues');
  for (const c of acking) c.close();
  await pub.close();
});
