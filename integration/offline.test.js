// A user who is offline loses nothing: their notifications wait in their
// mailbox and all arrive, in the order they were published, the moment the
// user connects; the queues end empty. With mailbox.enabled = false the
// retry ladder brings them back instead, as before mailboxes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, waitFor, queueCount } from './lib/index.js';

after(cleanupAll);

test('20 notifications published while offline wait in the mailbox and arrive in order on connect', { timeout: 90000 }, async (t) => {
  const w = await startWarren({ name: 'offline' });
  const pub = await Publisher.open();
  const user = 'off-user';
  const mailbox = `${w.queue}.mbox.u.${user}`;
  const tag = Date.now();
  const ids = Array.from({ length: 20 }, (_, i) => `off-${tag}-${i}`);
  await pub.publishAll(
    w.exchange,
    ids.map((id, i) => ({ id, user_id: user, title: `n${i}` })),
  );
  // They really wait in the user's mailbox, not on the ladder.
  await waitFor(async () => (await queueCount(mailbox)) === 20, { timeout: 10000, what: `${mailbox} to hold 20` });
  for (const q of w.retryQueues) assert.equal(await queueCount(q), 0, `${q} not empty`);
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  await c.waitForIds(ids, { timeout: 10000 });
  assert.deepEqual(c.notifications.map((m) => m.id), ids, 'the backlog arrives in publish order');
  t.diagnostic(`received ${c.notifications.length} frames for 20 ids (${c.duplicates} duplicates)`);
  await waitFor(async () => (await queueCount(mailbox)) === 0, { timeout: 10000, what: `${mailbox} empty` });
  assert.equal(await queueCount(w.parkedQueue), 0, 'nothing may be parked');
  await assertQueuesEmpty(w);
  await pub.close();
});

test('with mailbox.enabled = false the retry ladder brings them back', { timeout: 90000 }, async (t) => {
  const w = await startWarren({
    name: 'offline-ladder',
    config: { amqp: { retry_delays_ms: '300,600', max_attempts: 50 }, mailbox: { enabled: false } },
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
  assert.equal(await queueCount(`${w.queue}.mbox.u.${user}`), null, 'no mailbox with mailboxes off');
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  await c.waitForIds(ids, { timeout: 20000 });
  assert.equal(new Set(c.notifications.map((m) => m.id)).size, 20);
  t.diagnostic(`received ${c.notifications.length} frames for 20 ids (${c.duplicates} duplicates)`);
  assert.equal(await queueCount(w.parkedQueue), 0, 'nothing may be parked with max_attempts=50');
  await assertQueuesEmpty(w);
  await pub.close();
});
