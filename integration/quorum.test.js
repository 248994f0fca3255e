// amqp.queue_type = quorum: Q, its ladder and Q.parked are quorum queues with
// an explicit x-delivery-limit (RabbitMQ 4.0 applies a default of 20 when it
// is absent; README.md, "Broker versions"); a notification reaches an online
// user and an offline one through the ladder; a Q declared by an earlier
// warren without the limit is used as it is, with a warning, not refused; a
// cluster node queue carries the same limit.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startWarren,
  cleanupAll,
  connectClient,
  Publisher,
  withChannel,
  brokerCtl,
  ensureBroker,
} from './lib/index.js';

after(cleanupAll);

// { queue name: arguments as rabbitmqctl prints them } for these queues.
function queueArgs(names) {
  const out = brokerCtl('-q', 'list_queues', 'name', 'arguments', '--formatter', 'json');
  const all = JSON.parse(out);
  const m = {};
  for (const q of all) {
    if (!names.includes(q.name)) continue;
    // [[key, type, value], …] (3.10 and 4.0) or { key: value }.
    const a = q.arguments;
    m[q.name] = Array.isArray(a) ? Object.fromEntries(a.map(([k, , v]) => [k, v])) : a;
  }
  return m;
}

const config = { amqp: { queue_type: 'quorum' }, mailbox: { enabled: false } };

test('quorum queues carry x-delivery-limit 20 and deliver online and through the ladder', { timeout: 60000 }, async (t) => {
  const b = await ensureBroker();
  if (!b.dir) return t.skip('WARREN_TEST_BROKER_DIR unknown: cannot list queue arguments');
  const w = await startWarren({ name: 'quorum', config });
  const args = queueArgs([w.queue, ...w.retryQueues, w.parkedQueue]);
  assert.equal(Object.keys(args).length, 2 + w.retryQueues.length, JSON.stringify(args));
  for (const [name, a] of Object.entries(args)) {
    assert.equal(a['x-queue-type'], 'quorum', `${name}: ${JSON.stringify(a)}`);
    assert.equal(a['x-delivery-limit'], 20, `${name}: ${JSON.stringify(a)}`);
  }
  const pub = await Publisher.open();
  const c = await connectClient(w.wsUrl(), await w.token('q-on'));
  await pub.publishAll(w.exchange, [{ id: 'q-on-1', user_id: 'q-on', title: 'online' }]);
  await c.waitForIds(['q-on-1'], { timeout: 10000 });
  await pub.publishAll(w.exchange, [{ id: 'q-off-1', user_id: 'q-off', title: 'offline' }]);
  // The ladder (0.5 s, 1 s) brings it back; the user connects meanwhile.
  const late = await connectClient(w.wsUrl(), await w.token('q-off'));
  await late.waitForIds(['q-off-1'], { timeout: 15000 });
  assert.doesNotMatch(w.logText(), /exists without x-delivery-limit/);
});

test('a quorum Q an earlier warren declared without x-delivery-limit is used as it is, with a warning', { timeout: 60000 }, async () => {
  const name = `quorum-old-${Date.now().toString(16)}`;
  await withChannel((ch) => ch.assertQueue(name, { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-dead-letter-exchange': `${name}.dlx` } }));
  const w = await startWarren({ name: 'quorum-old', queue: name, config });
  assert.match(w.logText(), new RegExp(`quorum queue ${name} exists without x-delivery-limit`));
  assert.equal(await w.readyz(), 200);
  const pub = await Publisher.open();
  const c = await connectClient(w.wsUrl(), await w.token('q-old'));
  await pub.publishAll(w.exchange, [{ id: 'q-old-1', user_id: 'q-old', title: 'still delivered' }]);
  await c.waitForIds(['q-old-1'], { timeout: 10000 });
});

test('a cluster node queue (quorum by default) carries the same explicit x-delivery-limit', { timeout: 60000 }, async (t) => {
  const b = await ensureBroker();
  if (!b.dir) return t.skip('WARREN_TEST_BROKER_DIR unknown: cannot list queue arguments');
  const w = await startWarren({ name: 'quorum-node', config: { cluster: { node_id: 'qn-1' } } });
  const node = `${w.queue}.node.qn-1`;
  const a = queueArgs([node])[node];
  assert.ok(a, `${node} not declared`);
  assert.equal(a['x-queue-type'], 'quorum', JSON.stringify(a));
  assert.equal(a['x-delivery-limit'], 20, JSON.stringify(a));
  assert.equal(a['x-dead-letter-strategy'], 'at-least-once', JSON.stringify(a));
  await w.stop();
  await withChannel((ch) => ch.deleteQueue(node));
});
