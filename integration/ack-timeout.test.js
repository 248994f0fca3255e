// A client that never acks does not lose the notification: after
// ack.timeout_ms it is treated as offline, comes back through the ladder and
// is delivered again; once acked, nothing is left.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, waitFor } from './lib/index.js';

after(cleanupAll);

test('unacked notification is redelivered after ack.timeout_ms, then acked', { timeout: 60000 }, async (t) => {
  const w = await startWarren({
    name: 'acktimeout',
    config: { ack: { mode: 'client', timeout_ms: 1000 }, amqp: { retry_delays_ms: '200', max_attempts: 50 } },
  });
  const pub = await Publisher.open();
  const user = 'lazy';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user, autoAck: false });
  assert.equal(c.welcome.ack_mode, 'client');
  const id = `lazy-${Date.now()}`;
  await pub.publishAll(w.exchange, [{ id, user_id: user, title: 'ack me' }]);

  const times = [];
  c.onMessageListener((m) => {
    if (m.id === id) times.push(Date.now());
  });
  await waitFor(() => times.length >= 2, { timeout: 15000, what: 'second delivery of the unacked notification' });
  const gap = times[1] - times[0];
  t.diagnostic(`redelivered after ${gap} ms (ack.timeout_ms=1000)`);
  assert.ok(gap >= 900, `redelivered after only ${gap} ms, before ack.timeout_ms`);
  c.ack(id);
  // After the ack no further delivery may be pending anywhere.
  await assertQueuesEmpty(w);
  await pub.close();
});

test('an ack for the first delivery frees it on a new connection too', { timeout: 60000 }, async () => {
  const w = await startWarren({
    name: 'acknewconn',
    config: { ack: { mode: 'client', timeout_ms: 1000 }, amqp: { retry_delays_ms: '200', max_attempts: 50 } },
  });
  const pub = await Publisher.open();
  const user = 'mover';
  const first = await connectClient(w.wsUrl(), await w.token(user), { name: 'first', autoAck: false });
  const id = `mover-${Date.now()}`;
  await pub.publishAll(w.exchange, [{ id, user_id: user, title: 'follow me' }]);
  await first.waitForIds([id]);
  // The tab closes without acking; the user comes back on a new connection
  // that acks: the notification must be delivered there.
  first.close();
  const second = await connectClient(w.wsUrl(), await w.token(user), { name: 'second', autoAck: true });
  await second.waitForIds([id], { timeout: 15000 });
  await assertQueuesEmpty(w);
  await pub.close();
});
