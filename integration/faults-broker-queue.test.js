// Fault 4 (docs/reliability.md, scenarios 6, 9, 10), on a private broker whose
// consumer_timeout is 5 s:
// * a client that never acks while ack.timeout_ms is longer than the broker's
//   consumer_timeout: the broker closes warren's channel (PRECONDITION_FAILED
//   delivery acknowledgement timed out); warren reconnects and carries on;
// * Q deleted under the consumer: noticed (consumer cancel), re-declared,
//   consuming again, loudly logged; later notifications are delivered;
// * close_all_connections while client acks are pending: those acks (old
//   delivery tags) never reach the new channel — the broker would close it
//   with PRECONDITION_FAILED "unknown delivery tag" — so exactly one
//   reconnect and no channel error in warren's log; lost 0.
//
// RabbitMQ 3.10 checks consumer_timeout on the channel tick, every
// channel_tick_interval (60 s by default): the node runs with
// `-rabbit channel_tick_interval 1000` so the timeout fires within ~6 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, connectClient, waitFor, sleep } from './lib/index.js';
import { report, usePrivateBroker, lossOf, metrics, ReadyWatch } from './lib/faults.js';

const CONSUMER_TIMEOUT_MS = 5000;

let broker;
usePrivateBroker(
  {
    extraConf: `consumer_timeout = ${CONSUMER_TIMEOUT_MS}`,
    erlArgs: '-rabbit channel_tick_interval 1000',
  },
  (b) => {
    broker = b;
  },
);

function start(name, extra = {}) {
  return startWarren({
    name,
    config: {
      amqp: { url: broker.url, heartbeat_s: 2, retry_delays_ms: '500,1000', max_attempts: 1000 },
      ack: { timeout_ms: 5000, ...extra },
    },
  });
}

test('broker consumer_timeout with a client that never acks: warren recovers, lost 0', { timeout: 120000 }, async (t) => {
  const w = await start('fault-ctimeout', { timeout_ms: 60000 });
  const silent = await connectClient(w.wsUrl(), await w.token('silent'), { name: 'silent', autoAck: false });
  const pub = await broker.publisher();
  const ids = ['ct-0', 'ct-1', 'ct-2'];
  for (const id of ids) await pub.publish(w.exchange, { id, user_id: 'silent' });
  await pub.settle();
  await silent.waitForIds(ids);
  const watch = new ReadyWatch(w);
  const t0 = Date.now();
  // The broker times the consumer out; warren reconnects.
  await waitFor(async () => (await metrics(w)).warren_amqp_reconnects_total >= 1, {
    timeout: CONSUMER_TIMEOUT_MS + 30000,
    interval: 100,
    what: 'warren reconnected after the consumer timeout',
  });
  const reconnectMs = Date.now() - t0;
  await waitFor(async () => (await w.readyz()) === 200, { timeout: 20000, what: '/readyz 200' });
  const readyMs = Date.now() - t0;
  await watch.stop();
  // The client finally acks everything it has (and what comes again).
  silent.opts.autoAck = true;
  silent.ack([...silent.ids.keys()]);
  await pub.publish(w.exchange, { id: 'ct-after', user_id: 'silent' });
  await pub.settle();
  await silent.waitForIds(['ct-after'], { timeout: 20000 });
  await sleep(1000);
  const m = await metrics(w);
  await w.stop('SIGTERM');
  const inQueue = await broker.drain(w.allQueues);
  const all = [...ids, 'ct-after'];
  const { lost, queued } = lossOf(all, silent.ids, inQueue);
  const log = w.logText();
  const fig = {
    consumer_timeout_ms: CONSUMER_TIMEOUT_MS,
    ack_timeout_ms: 60000,
    timeout_to_reconnect_ms: reconnectMs,
    timeout_to_ready_ms: readyMs,
    reconnects: m.warren_amqp_reconnects_total,
    broker_said_timeout: /acknowledgement timed out|PRECONDITION_FAILED/i.test(log),
    duplicates: silent.duplicates,
    still_in_queues: queued,
    lost: lost.length,
  };
  report(t, 'consumer-timeout', fig);
  assert.deepEqual(lost, []);
  assert.equal(queued, 0);
  assert.ok(fig.broker_said_timeout, 'the log does not show the broker closing the channel for the timeout');
  silent.close();
  await pub.close();
});

test('Q deleted under the consumer: noticed, re-declared, consuming again, loudly logged', { timeout: 90000 }, async (t) => {
  const w = await start('fault-qdel');
  const c = await connectClient(w.wsUrl(), await w.token('u'), { name: 'u' });
  const pub = await broker.publisher();
  await pub.publish(w.exchange, { id: 'qd-before', user_id: 'u' });
  await pub.settle();
  await c.waitForIds(['qd-before']);
  const watch = new ReadyWatch(w, { interval: 25 });
  const t0 = Date.now();
  await broker.withChannel((ch) => ch.deleteQueue(w.queue));
  // Noticed and logged as an error.
  const noticedMs = await waitFor(() => /ERROR.*cancelled the consumer/.test(w.logText()) && Date.now() - t0, {
    timeout: 10000,
    interval: 25,
    what: 'consumer cancel logged',
  });
  // Consuming again: the queue exists with a consumer and /readyz is 200.
  await waitFor(async () => (await broker.withChannel((ch) => ch.checkQueue(w.queue)).catch(() => ({}))).consumerCount === 1, {
    timeout: 15000,
    interval: 50,
    what: 'Q re-declared with a consumer',
  });
  const consumingMs = Date.now() - t0;
  await waitFor(async () => (await w.readyz()) === 200, { timeout: 10000, what: '/readyz 200' });
  await watch.stop();
  const ids = Array.from({ length: 20 }, (_, i) => `qd-after-${i}`);
  for (const id of ids) await pub.publish(w.exchange, { id, user_id: 'u' });
  await pub.settle();
  await c.waitForIds(ids, { timeout: 15000 });
  const m = await metrics(w);
  await w.stop('SIGTERM');
  const inQueue = await broker.drain(w.allQueues);
  const { lost } = lossOf(ids, c.ids, inQueue);
  const fig = {
    delete_to_logged_ms: noticedMs,
    delete_to_consuming_ms: consumingMs,
    readyz_went_503: watch.firstAfter(t0, (s) => s !== 200) !== null,
    reconnects: m.warren_amqp_reconnects_total,
    delivered_after: ids.filter((id) => c.ids.has(id)).length,
    lost: lost.length,
  };
  report(t, 'queue-deleted', fig);
  assert.equal(fig.delivered_after, ids.length);
  assert.deepEqual(lost, []);
  c.close();
  await pub.close();
});

test('close_all_connections with client acks pending: no old tag on the new channel, lost 0', { timeout: 90000 }, async (t) => {
  const w = await start('fault-closeall', { timeout_ms: 30000 });
  const c = await connectClient(w.wsUrl(), await w.token('late'), { name: 'late', autoAck: false });
  let pub = await broker.publisher();
  const ids = Array.from({ length: 50 }, (_, i) => `ca-${i}`);
  for (const id of ids) await pub.publish(w.exchange, { id, user_id: 'late' });
  await pub.settle();
  await c.waitForIds(ids);
  await pub.close();
  await broker.closeConn();
  const t0 = Date.now();
  await broker.ctlAsync('close_all_connections', 'fault test');
  await waitFor(async () => (await metrics(w)).warren_amqp_reconnects_total >= 1 && (await w.readyz()) === 200, {
    timeout: 20000,
    interval: 50,
    what: 'warren reconnected',
  });
  const reconnectMs = Date.now() - t0;
  // Now the acks of the old deliveries arrive, on the new generation.
  c.ack(ids);
  c.opts.autoAck = true;
  // Redeliveries (the broker requeued them) come and are acked.
  await sleep(3000);
  pub = await broker.publisher();
  await pub.publish(w.exchange, { id: 'ca-after', user_id: 'late' });
  await pub.settle();
  await c.waitForIds(['ca-after'], { timeout: 15000 });
  await sleep(1000);
  const m = await metrics(w);
  await w.stop('SIGTERM');
  const inQueue = await broker.drain(w.allQueues);
  const { lost, queued } = lossOf([...ids, 'ca-after'], c.ids, inQueue);
  const log = w.logText();
  const fig = {
    acks_pending: ids.length,
    close_to_ready_ms: reconnectMs,
    reconnects: m.warren_amqp_reconnects_total,
    channel_errors_in_log: (log.match(/unknown delivery tag|PRECONDITION_FAILED/gi) || []).length,
    duplicates: c.duplicates,
    still_in_queues: queued,
    lost: lost.length,
  };
  report(t, 'close-all-connections', fig);
  assert.equal(fig.channel_errors_in_log, 0, 'an old delivery tag reached the new channel');
  assert.equal(fig.reconnects, 1, 'warren reconnected more than once (a channel error?)');
  assert.deepEqual(lost, []);
  assert.equal(queued, 0);
  c.close();
  await pub.close();
});
