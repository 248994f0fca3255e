// Graceful shutdown under load: SIGTERM while a stream is flowing closes
// every client with 1001 and exits 0; after a restart every notification is
// delivered (lost = 0).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, Publisher, ClientPool, waitAllReceived, accountFor, waitFor, sleep } from './lib/index.js';

after(cleanupAll);

const USERS = 50;
const TOTAL = 3000;

test('SIGTERM under load: 1001 to clients, exit 0, nothing lost after restart', { timeout: 180000 }, async (t) => {
  const w = await startWarren({
    name: 'sigterm',
    config: {
      amqp: { retry_delays_ms: '500,1000', max_attempts: 1000 },
      shutdown: { drain_timeout_ms: 3000 },
    },
  });
  const pool = await ClientPool.open(w, USERS, { prefix: 's' });
  const pub = await Publisher.open();
  const ids = Array.from({ length: TOTAL }, (_, i) => `st-${w.name}-${i}`);

  // A paced stream (about 2,500/s) so the signal lands while it flows.
  const t0 = Date.now();
  const publishing = (async () => {
    for (let i = 0; i < TOTAL; i++) {
      await pub.publish(w.exchange, { id: ids[i], user_id: pool.user(i), title: `n${i}` }, {
        properties: { messageId: ids[i] },
      });
      if (i % 50 === 49) await sleep(20);
    }
    await pub.confirmed();
  })();
  // Awaited below; this only keeps an early failure from being reported as
  // an unhandled rejection.
  publishing.catch(() => {});

  await waitFor(() => pool.received.size >= TOTAL / 3, { timeout: 60000, what: `${TOTAL / 3} received` });
  const receivedAtSignal = pool.received.size;
  const exit = await w.stop('SIGTERM', { timeout: 20000 });
  const tStopped = Date.now() - t0;
  assert.deepEqual(exit, { code: 0, signal: null }, 'warren did not exit 0 on SIGTERM');

  // Every client was connected when the signal came: each must have seen
  // its first close with 1001 going away.
  await waitFor(() => pool.clients.every((c) => c.closes.length > 0), { timeout: 5000, what: 'every client closed' });
  const firstCodes = pool.clients.map((c) => c.closes[0].code);
  const not1001 = firstCodes.filter((code) => code !== 1001);
  assert.deepEqual(not1001, [], `clients closed with ${JSON.stringify(not1001.slice(0, 10))} instead of 1001`);

  await w.start();
  await publishing;
  const complete = await waitAllReceived(pool, ids, 60000);
  const { lost, queued } = await accountFor(w, pool, ids);
  const figures = {
    users: USERS,
    published: TOTAL,
    received_at_signal: receivedAtSignal,
    stopped_ms: tStopped,
    done_ms: Date.now() - t0,
    received: pool.received.size,
    duplicates: pool.duplicates,
    still_in_queues: queued.length,
    lost: lost.length,
  };
  t.diagnostic(`SIGTERM figures: ${JSON.stringify(figures)}`);
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} notifications lost`);
  assert.ok(complete, `${queued.length} notifications were still in queues after restart`);
  pool.close();
  await pub.close();
});
