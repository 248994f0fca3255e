// Losing the AMQP connection is not fatal: warren reconnects by itself
// (new channel generation) and keeps delivering; /readyz is 200 again once
// it consumes, and a notification in flight is not lost.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, waitFor, brokerCtl, closeAmqp, ensureBroker, assertQueuesEmpty } from './lib/index.js';

after(cleanupAll);

test('warren reconnects after the broker closes its connection', { timeout: 90000 }, async (t) => {
  const b = await ensureBroker();
  if (!b.dir || !b.port) {
    t.skip('WARREN_TEST_BROKER_DIR/PORT unknown: cannot drive rabbitmqctl');
    return;
  }
  const w = await startWarren({ name: 'reconnect' });
  const user = 'steady';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  let pub = await Publisher.open();
  await pub.publishAll(w.exchange, [{ id: 'before', user_id: user, title: 'before' }]);
  await c.waitForIds(['before']);
  // Our own connection would be closed too: close it first, reopen after.
  await pub.close();
  await closeAmqp();
  brokerCtl('close_all_connections', 'integration test');
  pub = await Publisher.open();
  await pub.publishAll(w.exchange, [{ id: 'after', user_id: user, title: 'after' }]);
  await c.waitForIds(['after'], { timeout: 30000 });
  await waitFor(async () => (await w.readyz()) === 200, { timeout: 30000, what: '/readyz 200 after reconnect' });
  assert.ok(w.running, 'warren exited after losing its AMQP connection');
  assert.ok(c.connected, 'the WebSocket client was disconnected by an AMQP reconnect');
  await pub.close();
  await assertQueuesEmpty(w);
});
