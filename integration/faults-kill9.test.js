// Fault 1 (docs/reliability.md, scenario 2): warren is killed with SIGKILL several times
// during a stream to many users and restarted each time on the same queue;
// clients reconnect by themselves. lost must be 0; duplicates are counted and
// must stay within kills × prefetch (what one dead process can have had in
// flight). SHORT: 20,000 notifications to 200 users, 3 kills. FULL
// (WARREN_RELIABILITY_FULL=1): 100,000 to 1,000 users, 10 kills.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, Publisher, ClientPool, waitAllReceived, accountFor, waitFor } from './lib/index.js';
import { FULL, size, report, memoryKb } from './lib/faults.js';

after(cleanupAll);

const USERS = size(200, 1000);
const TOTAL = size(20000, 100000);
const KILLS = size(3, 10);
const PREFETCH = 1000;

test(`kill -9 ${KILLS} times during ${TOTAL} notifications to ${USERS} users: lost 0`, { timeout: FULL ? 1800000 : 180000 }, async (t) => {
  const w = await startWarren({
    name: 'fault-kill9',
    config: {
      amqp: { retry_delays_ms: '500,1000', max_attempts: 1000, prefetch: PREFETCH },
      ack: { timeout_ms: 5000 },
    },
  });
  const pool = await ClientPool.open(w, USERS, { prefix: 'k', batch: 50 });
  const pub = await Publisher.open();
  const ids = Array.from({ length: TOTAL }, (_, i) => `fk9-${w.name}-${i}`);
  const t0 = Date.now();
  const kills = [];
  let peakKb = 0;

  // The killer: at evenly spaced points of the stream (by ids received), at
  // least 2 s apart, SIGKILL then restart at once.
  const killer = (async () => {
    for (let k = 1; k <= KILLS; k++) {
      const at = Math.floor((TOTAL * k) / (KILLS + 1));
      await waitFor(() => pool.received.size >= at, { timeout: FULL ? 600000 : 120000, interval: 5, what: `${at} received` });
      const last = kills[kills.length - 1];
      if (last && Date.now() - t0 - last.ready_ms < 2000) await new Promise((r) => setTimeout(r, 2000));
      peakKb = Math.max(peakKb, memoryKb(w.pid).hwm_kb || 0);
      const received = pool.received.size;
      process.kill(w.pid, 'SIGKILL');
      const exit = await w.exited;
      assert.equal(exit.signal, 'SIGKILL');
      const killedMs = Date.now() - t0;
      await w.start({ readyTimeout: 60000 });
      kills.push({ received, killed_ms: killedMs, ready_ms: Date.now() - t0 });
    }
  })();

  for (let i = 0; i < TOTAL; i++) {
    await pub.publish(w.exchange, { id: ids[i], user_id: pool.user(i), title: `n${i}`, seq: i }, {
      properties: { messageId: ids[i] },
    });
  }
  await pub.confirmed();
  const confirmedMs = Date.now() - t0;
  await killer;

  const complete = await waitAllReceived(pool, ids, FULL ? 600000 : 120000);
  const doneMs = Date.now() - t0;
  peakKb = Math.max(peakKb, memoryKb(w.pid).hwm_kb || 0);
  const { lost, queued } = await accountFor(w, pool, ids);

  const figures = {
    users: USERS,
    confirmed: TOTAL,
    kills: kills.length,
    prefetch: PREFETCH,
    received_unique: pool.received.size,
    duplicates: pool.duplicates,
    duplicate_bound: kills.length * PREFETCH,
    still_in_queues: queued.length,
    lost: lost.length,
    restart_to_ready_ms: kills.map((k) => k.ready_ms - k.killed_ms),
    confirmed_ms: confirmedMs,
    all_received_ms: doneMs,
    throughput_per_s: Math.round((pool.received.size * 1000) / doneMs),
    warren_peak_rss_kb: peakKb,
  };
  report(t, 'kill9-repeated', figures);
  assert.equal(kills.length, KILLS);
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} notifications lost`);
  assert.ok(complete, `${queued.length} notifications still queued, not delivered`);
  assert.ok(pool.duplicates <= kills.length * PREFETCH, `${pool.duplicates} duplicates > ${kills.length} × ${PREFETCH}`);
  pool.close();
  await pub.close();
});
