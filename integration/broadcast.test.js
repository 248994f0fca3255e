// A broadcast reaches every connection online now, without the routing field,
// and leaves nothing in the queues (offline users are not tracked).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, routingFieldsIn } from './lib/index.js';

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
  await pub.publishAll(w.exchange, [{ id, broadcast: true, type: 'announcement', title: 'Maintenance at 22:00' }]);
  for (const c of clients) {
    await c.waitForIds([id]);
    const m = c.notifications.find((x) => x.id === id);
    assert.equal(m.type, 'announcement', c.opts.name);
    assert.equal(m.title, 'Maintenance at 22:00', c.opts.name);
    assert.deepEqual(routingFieldsIn(m), [], `${c.opts.name}: routing fields leaked`);
  }
  // A broadcast is acked once written, whatever the clients do, and never
  // goes to the retry ladder.
  await assertQueuesEmpty(w);
});
