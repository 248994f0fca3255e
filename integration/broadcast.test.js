// A broadcast reaches every connection online now, without the routing field,
// and leaves nothing in the queues (offline users are not tracked).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, routingFieldsIn } from './lib/index.js';
import { metrics } from './lib/faults.js';

let w;
let pub;
before(async () => {
  w = await startWarren({ name: 'broadcast' });
  pub = await Publisher.open();
});
after(cleanupAll);

test('broadcast reaches every connected user', { timeout: 60000 }, async () => {
  const url = w.wsUrl();
  const clients = [];
  for (const [user, protocol] of [
    ['u1', 'warren.json'],
    ['u1', 'warren.msgpack'],
    ['u2', 'warren.json'],
    ['u3', 'warren.msgpack'],
  ]) {
    clients.push(await connectClient(url, await w.token(user), { name: `${user}/${protocol}`, protocol }));
  }
  const id = `bc-${Date.now()}`;
  const m0 = await metrics(w);
  await pub.publishAll(w.exchange, [{ id, broadcast: true, type: 'announcement', title: 'Maintenance at 22:00' }]);
  for (const c of clients) {
    await c.waitForIds([id]);
    const m = c.notifications.find((x) => x.id === id);
    assert.equal(m.type, 'announcement', c.opts.name);
    assert.equal(m.title, 'Maintenance at 22:00', c.opts.name);
    assert.deepEqual(routingFieldsIn(m), [], `${c.opts.name}: routing fields leaked`);
  }
  // The fan-out is measured: one more broadcast, sent to the four
  // connections, timed from consume to the last socket.
  const m1 = await metrics(w);
  assert.equal(m1.warren_broadcast_fanout_seconds_count - m0.warren_broadcast_fanout_seconds_count, 1);
  assert.equal(m1.warren_broadcast_last_connections, 4);
  const last = m1.warren_broadcast_last_fanout_seconds;
  assert.ok(last > 0 && last < 30, `fan-out ${last} s`);
  assert.ok(m1.warren_broadcast_fanout_seconds_sum >= last);
  // A broadcast is acked once written, whatever the clients do, and never
  // goes to the retry ladder.
  await assertQueuesEmpty(w);
});
