// Crash safety: 100 connected users, 10,000 confirmed notifications, warren
// is killed with SIGKILL in the middle and restarted on the same queue;
// clients reconnect by themselves. Every id must end up received (or, at
// worst, still waiting in a queue): lost must be 0. Duplicates are allowed
// (at-least-once) and reported.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, Publisher, ClientPool, waitAllReceived, accountFor, waitFor } from './lib/index.js';

after(cleanupAll);

const USERS = Number(process.env.WARREN_TEST_KILL9_USERS || 100);
const TOTAL = Number(process.env.WARREN_TEST_KILL9_TOTAL || 10000);
const KILL_AT = Math.floor(TOTAL * 0.3);

test(`kill -9 with ${USERS} users and ${TOTAL} notifications loses nothing`, { timeout: 240000 }, async (t) => {
  const w = await startWarren({
    name: 'kill9',
    config: { amqp: { retry_delays_ms: '500,1000', max_attempts: 1000 }, ack: { timeout_ms: 5000 } },
  });
  const pool = await ClientPool.open(w, USERS, { prefix: 'k', protocol: (i) => (i % 2 ? 'warren.msgpack' : 'warren.json') });
  const pub = await Publisher.open();
  const ids = Array.from({ length: TOTAL }, (_, i) => `k9-${w.name}-${i}`);

  let killedAt = null;
  pool.onNotification(() => {
    if (killedAt === null && pool.received.size >= KILL_AT) {
      killedAt = pool.received.size;
      // Synchronously, from the message handler, so the crash really lands
      // in the middle of the stream.
      process.kill(w.pid, 'SIGKILL');
    }
  });

  const t0 = Date.now();
  for (let i = 0; i < TOTAL; i++) {
    await pub.publish(w.exchange, { id: ids[i], user_id: pool.user(i), title: `n${i}`, seq: i }, {
      properties: { messageId: ids[i] },
    });
  }
  await pub.confirmed();
  const tConfirmed = Date.now() - t0;

  await waitFor(() => killedAt !== null, { timeout: 60000, what: `${KILL_AT} notifications received before the kill` });
  const exit = await w.exited;
  assert.equal(exit.signal, 'SIGKILL');
  const tKill = Date.now() - t0;
  await w.start();
  const tRestart = Date.now() - t0;

  const complete = await waitAllReceived(pool, ids, 120000);
  const tDone = Date.now() - t0;
  await waitFor(() => pool.allConnected(), { timeout: 10000, what: 'every client reconnected' }).catch(() => {});
  const { lost, queued } = await accountFor(w, pool, ids);

  const figures = {
    users: USERS,
    published: TOTAL,
    confirmed_ms: tConfirmed,
    received_before_kill: killedAt,
    killed_at_ms: tKill,
    restarted_ready_at_ms: tRestart,
    all_received: complete,
    done_ms: tDone,
    received: pool.received.size,
    frames: pool.frames,
    duplicates: pool.duplicates,
    still_in_queues: queued.length,
    lost: lost.length,
  };
  t.diagnostic(`kill -9 figures: ${JSON.stringify(figures)}`);
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} notifications lost`);
  assert.ok(complete, `${queued.length} notifications were still in queues, not delivered, after 120 s`);
  pool.close();
  await pub.close();
});
