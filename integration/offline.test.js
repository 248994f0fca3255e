// A user who is offline loses nothing: notifications wait in the retry
// ladder and all arrive once the user connects; the queues end empty.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, waitFor, queueCount } from './lib/index.js';

after(cleanupAll);

test('20 notifications published while offline all arrive after connecting', { timeout: 90000 }, async (t) => {
  const w = await startWarren({
    name: 'offline',
    config: { amqp: { retry_delays_ms: '300,600', max_attempts: 50 } },
  });
  const pub = await Publisher.open();
  const user = 'off-user';
  const tag = Date.now();
  const ids = Array.from({ length: 20 }, (_, i) => `off-${tag}-${i}`);
  await pub.publishAll(
    w.exchange,
    ids.map((id, i) => ({ id, user_id: user, title: `n${i}` })),
  );
  // Prove they really went through the offline path before the user shows up.
  await waitFor(
    async () => {
      let n = 0;
      for (const q of w.retryQueues) n += (await queueCount(q)) || 0;
      return n > 0;
    },
    { timeout: 10000, what: 'notifications in the retry ladder' },
  );
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  await c.waitForIds(ids, { timeout: 20000 });
  assert.equal(new Set(c.notifications.map((m) => m.id)).size, 20);
  t.diagnostic(`received ${c.notifications.length} frames for 20 ids (${c.duplicates} duplicates)`);
  const parked = await queueCount(w.parkedQueue);
  assert.equal(parked, 0, 'nothing may be parked with max_attempts=50');
  await assertQueuesEmpty(w);
  await pub.close();
});
