// Fault 5 (docs/reliability.md, scenario 5): a warren with nothing to do for a long time
// keeps its AMQP connection: heartbeats flow both ways, the watchdog never
// fires, no reconnect; a notification afterwards is delivered at once.
// SHORT: 60 s idle with a 2 s heartbeat. FULL: 10 minutes with 5 s.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, sleep, assertQueuesEmpty } from './lib/index.js';
import { size, report, metrics, memoryKb } from './lib/faults.js';

after(cleanupAll);

const IDLE_MS = size(60000, 600000);
const HEARTBEAT_S = size(2, 5);

test(`idle ${IDLE_MS / 1000} s with heartbeat ${HEARTBEAT_S} s: no reconnect`, { timeout: IDLE_MS + 60000 }, async (t) => {
  const w = await startWarren({ name: 'fault-idle', config: { amqp: { heartbeat_s: HEARTBEAT_S } } });
  const c = await connectClient(w.wsUrl(), await w.token('idle'), { name: 'idle' });
  const m0 = await metrics(w);
  const mem0 = memoryKb(w.pid);
  // Check every few seconds, so a reconnect is caught even if it recovers.
  let notReady = 0;
  const t0 = Date.now();
  while (Date.now() - t0 < IDLE_MS) {
    await sleep(2000);
    if ((await w.readyz()) !== 200) notReady++;
  }
  const pub = await Publisher.open();
  const t1 = Date.now();
  await pub.publishAll(w.exchange, [{ id: 'after-idle', user_id: 'idle' }]);
  await c.waitForIds(['after-idle']);
  const deliverMs = Date.now() - t1;
  const m1 = await metrics(w);
  const mem1 = memoryKb(w.pid);
  const fig = {
    idle_ms: Date.now() - t0,
    heartbeat_s: HEARTBEAT_S,
    reconnects: m1.warren_amqp_reconnects_total - m0.warren_amqp_reconnects_total,
    watchdog_kicks: m1.warren_amqp_watchdog_kicks_total,
    readyz_not_200_samples: notReady,
    first_delivery_after_idle_ms: deliverMs,
    rss_kb_before: mem0.rss_kb,
    rss_kb_after: mem1.rss_kb,
  };
  report(t, 'idle', fig);
  assert.equal(fig.reconnects, 0, 'warren reconnected while idle');
  assert.equal(fig.watchdog_kicks, 0, 'the watchdog fired on an idle AMQP thread');
  assert.equal(notReady, 0);
  assert.ok(!/disconnected from the broker|heartbeat/i.test(w.logText()), 'the log shows a lost connection');
  c.close();
  await pub.close();
  await assertQueuesEmpty(w);
});
