// ack.mode=write: a notification is acked to the broker once written to the
// client, who never has to ack.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty } from './lib/index.js';

after(cleanupAll);

test('ack.mode=write empties the queues without client acks', { timeout: 60000 }, async () => {
  const w = await startWarren({ name: 'ackwrite', config: { ack: { mode: 'write', timeout_ms: 1000 } } });
  const pub = await Publisher.open();
  const user = 'writer';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user, autoAck: false });
  assert.equal(c.welcome.ack_mode, 'write');
  const tag = Date.now();
  const ids = Array.from({ length: 10 }, (_, i) => `w-${tag}-${i}`);
  await pub.publishAll(
    w.exchange,
    ids.map((id) => ({ id, user_id: user, title: id })),
  );
  await c.waitForIds(ids);
  // ack.timeout_ms is 1 s: if warren waited for client acks they would come
  // back through the ladder and be delivered twice. Stopping warren also
  // proves nothing was held unacked.
  await assertQueuesEmpty(w);
  assert.equal(c.duplicates, 0, 'write mode redelivered notifications');
  await pub.close();
});
