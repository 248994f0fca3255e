// Fault 2 (docs/reliability.md, scenario 3): the broker restarts under warren, once with
// `rabbitmqctl stop_app` / `start_app` and once by SIGKILL of its VM and a
// fresh start on the same files. Queues are durable and messages persistent,
// so nothing the broker confirmed may be lost; warren must notice, reconnect
// by itself and consume again. Figures: lost, duplicates, time from the
// broker being back to warren's /readyz 200.
//
// Runs its own RabbitMQ node (WARREN_TEST_FAULT_BROKER_PORT, default 5681),
// never the run's shared one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, ClientPool, waitFor, sleep } from './lib/index.js';
import { size, report, usePrivateBroker, lossOf, metrics, ReadyWatch } from './lib/faults.js';

const USERS = size(20, 200);
const PER_PHASE = size(3000, 20000);

let broker;
usePrivateBroker(undefined, (b) => {
  broker = b;
});

// Publishes n notifications while the fault happens: fault() runs once a
// third of them were received. Returns the figures.
async function scenario(t, name, fault) {
  const w = await startWarren({
    name: `fault-${name}`,
    config: {
      amqp: { url: broker.url, heartbeat_s: 2, retry_delays_ms: '500,1000', max_attempts: 1000 },
      ack: { timeout_ms: 5000 },
    },
  });
  const pool = await ClientPool.open(w, USERS, { prefix: `${name}-u` });
  let pub = await broker.publisher();
  const ids = Array.from({ length: PER_PHASE }, (_, i) => `${name}-${w.name}-${i}`);
  const confirmed = new Set();
  const t0 = Date.now();

  // Stream the first half paced, so the fault lands with deliveries in
  // flight, unacked and with client acks on their way.
  const half = PER_PHASE / 2;
  const faultAt = Math.floor(half / 3);
  const streaming = (async () => {
    for (let i = 0; i < half; i++) {
      if (pub.closed) break;
      await pub.publish(w.exchange, { id: ids[i], user_id: pool.user(i), seq: i }).catch(() => {});
      if (i % 50 === 49) await sleep(100);
    }
  })();
  await waitFor(() => pool.received.size >= faultAt, { timeout: 60000, what: `${faultAt} received` });
  const watch = new ReadyWatch(w);
  const faultStart = Date.now();
  const back = await fault();
  const backAt = Date.now();
  await streaming;
  await pub.settle(15000);
  for (const id of pub.confirmed) confirmed.add(id);
  await waitFor(() => watch.firstAfter(backAt, (s) => s === 200), { timeout: 90000, what: '/readyz 200 after the broker is back' }).catch(() => {});
  await watch.stop();
  const notReady = watch.firstAfter(faultStart, (s) => s !== 200);
  const readyAgain = watch.firstAfter(backAt, (s) => s === 200);

  // The second half, published once the broker is back.
  await broker.closeConn();
  pub = await broker.publisher();
  for (let i = half; i < PER_PHASE; i++) await pub.publish(w.exchange, { id: ids[i], user_id: pool.user(i), seq: i });
  await pub.settle(30000);
  for (const id of pub.confirmed) confirmed.add(id);
  const confirmedIds = ids.filter((id) => confirmed.has(id));
  await waitFor(() => confirmedIds.every((id) => pool.received.has(id)), { timeout: 90000, interval: 200, what: 'every confirmed id' }).catch(() => {});
  const m = await metrics(w);
  await w.stop('SIGTERM');
  const inQueue = await broker.drain(w.allQueues);
  const { lost, queued } = lossOf(confirmedIds, pool.received, inQueue);
  const fig = {
    users: USERS,
    published: PER_PHASE,
    confirmed: confirmedIds.length,
    received_unique: pool.received.size,
    duplicates: pool.duplicates,
    still_in_queues: queued,
    lost: lost.length,
    broker_down_ms: backAt - faultStart,
    fault_to_not_ready_ms: notReady === null ? null : notReady - faultStart,
    broker_back_to_warren_ready_ms: readyAgain === null ? null : readyAgain - backAt,
    warren_reconnects: m.warren_amqp_reconnects_total,
    total_ms: Date.now() - t0,
    ...back,
  };
  pool.close();
  await pub.close();
  return { fig, lost, queued, confirmedIds, w };
}

test('stop_app / start_app under a stream: lost 0, warren consumes again', { timeout: 240000 }, async (t) => {
  const r = await scenario(t, 'stopapp', async () => {
    const s = Date.now();
    await broker.ctlAsync('stop_app');
    const stopMs = Date.now() - s;
    await sleep(1000);
    await broker.ctlAsync('start_app');
    return { stop_app_ms: stopMs };
  });
  report(t, 'broker-stop-app', r.fig);
  assert.deepEqual(r.lost.slice(0, 20), [], `${r.lost.length} confirmed notifications lost`);
  assert.equal(r.queued, 0, 'notifications left in queues after the clients came back');
  assert.ok(r.fig.broker_back_to_warren_ready_ms !== null, 'warren never became ready again');
  assert.ok(r.fig.warren_reconnects >= 1, 'warren did not reconnect');
});

test('broker VM killed with SIGKILL and restarted: lost 0 of what was confirmed', { timeout: 300000 }, async (t) => {
  const r = await scenario(t, 'brokerkill', async () => {
    const pid = broker.pid();
    process.kill(pid, 'SIGKILL');
    await waitFor(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, { timeout: 10000, what: 'broker VM gone' });
    const s = Date.now();
    await broker.startAsync();
    return { broker_restart_ms: Date.now() - s };
  });
  report(t, 'broker-kill9', r.fig);
  assert.deepEqual(r.lost.slice(0, 20), [], `${r.lost.length} confirmed notifications lost`);
  assert.equal(r.queued, 0, 'notifications left in queues after the clients came back');
  assert.ok(r.fig.broker_back_to_warren_ready_ms !== null, 'warren never became ready again');
});
