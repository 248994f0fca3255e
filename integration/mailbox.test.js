// Per-user mailboxes (docs/mailboxes.md) as a user and an operator see them:
// docs/reliability.md scenarios 22 and 23, the mailbox caps and expiry ending
// in Q.parked with their reasons, a client that never acks not spinning the
// mailbox, and a copy straight into Q.mailbox for a user with no mailbox yet.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startWarren,
  cleanupAll,
  connectClient,
  Publisher,
  waitFor,
  queueCount,
  queueCounts,
  drainQueue,
  withChannel,
  sleep,
} from './lib/index.js';

after(cleanupAll);

const mailboxOf = (w, user) => `${w.queue}.mbox.u.${user}`;
const header = (v) => (Buffer.isBuffer(v) ? v.toString('utf8') : v === undefined ? undefined : String(v));
const deathReason = (m) => {
  const d = m.headers['x-death'];
  return Array.isArray(d) && d.length ? header(d[0].reason) : undefined;
};

// Publishes a copy the way warren does it, straight into Q.mailbox with the
// user key as routing key (what a publisher on another broker node racing
// the user's connect, or an operator, can do).
async function publishToMailbox(w, user, env) {
  await withChannel(async (ch) => {
    ch.publish(`${w.queue}.mailbox`, `u.${user}`, Buffer.from(JSON.stringify(env)), {
      persistent: true,
      contentType: 'application/json',
      messageId: env.id,
      headers: { 'x-warren-user': user },
    });
  });
}

test('scenario 22: a user away longer than the old ladder gets the whole backlog at once, in order', { timeout: 60000 }, async (t) => {
  // The old ladder with these settings parked a notification after two
  // attempts, about a second: mailboxes keep it until the user returns.
  const w = await startWarren({
    name: 'mbox-away',
    config: { amqp: { retry_delays_ms: '200,400', max_attempts: 2 } },
  });
  const pub = await Publisher.open();
  const user = 'away';
  const ids = Array.from({ length: 200 }, (_, i) => `away-${i}`);
  await pub.publishAll(w.exchange, ids.map((id, i) => ({ id, user_id: user, title: `n${i}` })));
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 200, { what: 'the backlog in the mailbox' });
  await sleep(2000); // longer than the ladder would have kept them
  assert.equal(await queueCount(w.parkedQueue), 0, 'nothing parked while the user was away');

  const t0 = Date.now();
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  await c.waitForIds(ids, { timeout: 20000 });
  // The figure only: first-item latency and replay rate are measured by
  // bench/run (BENCHMARKS.md, "Mailboxes").
  t.diagnostic(`200 items within ${Date.now() - t0} ms of connecting; duplicates ${c.duplicates}`);
  assert.deepEqual(c.notifications.map((m) => m.id), ids, 'mailbox order');
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 0, { what: 'the mailbox drained' });
  const st = await w.stats();
  // Acked, not only taken: stopped, warren would give back what it held.
  assert.equal((await w.stop('SIGTERM')).code, 0);
  assert.equal(await queueCount(mailboxOf(w, user)), 0, 'every item was acked to its mailbox');
  t.diagnostic(`stats: ${JSON.stringify({ consumed: st.consumed, delivered: st.delivered })}`);
  await pub.close();
});

test('scenario 23: a copy put straight into an online user\'s mailbox arrives', { timeout: 60000 }, async (t) => {
  const w = await startWarren({ name: 'mbox-race' });
  const pub = await Publisher.open();
  const user = 'racer';
  // The user has a mailbox (one notification while offline), then connects.
  await pub.publishAll(w.exchange, [{ id: 'first', user_id: user }]);
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 1, { what: 'the mailbox made' });
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  await c.waitForIds(['first']);
  // A copy that lands in the mailbox while the user is online (the race a
  // publisher on another node can lose against the connect).
  const t0 = Date.now();
  await publishToMailbox(w, user, { id: 'late-copy', user_id: user, title: 'raced the connect' });
  await c.waitForIds(['late-copy'], { timeout: 2000 });
  t.diagnostic(`arrived ${Date.now() - t0} ms after it was put in the mailbox`);

  // And for a user online with no mailbox at all: the copy goes through
  // Q.mailbox.new, which makes the mailbox and delivers it.
  const other = 'fresh';
  const c2 = await connectClient(w.wsUrl(), await w.token(other), { name: other });
  const t1 = Date.now();
  await publishToMailbox(w, other, { id: 'no-mailbox-yet', user_id: other });
  await c2.waitForIds(['no-mailbox-yet'], { timeout: 2000 });
  t.diagnostic(`through Q.mailbox.new: ${Date.now() - t1} ms`);
  assert.equal(await queueCount(mailboxOf(w, other)), 0);
  assert.equal(await queueCount(`${w.queue}.mailbox.new`), 0);
  await pub.close();
});

test('mailbox caps and expiry end in Q.parked with their reasons', { timeout: 60000 }, async (t) => {
  const w = await startWarren({
    name: 'mbox-caps',
    config: { mailbox: { max_messages: 3, ttl_ms: 1500 } },
  });
  const pub = await Publisher.open();
  // Five for a user whose mailbox keeps three: the two oldest are pushed out.
  await pub.publishAll(w.exchange, [1, 2, 3, 4, 5].map((i) => ({ id: `cap-${i}`, user_id: 'capped' })));
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 2, { what: '2 pushed out to Q.parked' });
  let parked = await drainQueue(w.parkedQueue);
  assert.deepEqual(parked.map((m) => m.id).sort(), ['cap-1', 'cap-2']);
  for (const m of parked) {
    assert.equal(deathReason(m), 'maxlen', JSON.stringify(m.headers));
    assert.equal(header(m.headers['x-warren-user']), 'capped', 'the parked copy still names its user');
  }
  // The three left expire after mailbox.ttl_ms.
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 3, { timeout: 15000, what: '3 expired to Q.parked' });
  parked = await drainQueue(w.parkedQueue);
  assert.deepEqual(parked.map((m) => m.id).sort(), ['cap-3', 'cap-4', 'cap-5']);
  for (const m of parked) assert.equal(deathReason(m), 'expired');
  // An envelope's own ttl_ms is its copy's expiration.
  await pub.publishAll(w.exchange, [{ id: 'short', user_id: 'brief', ttl_ms: 300 }]);
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 1, { timeout: 10000, what: 'the short-lived one parked' });
  parked = await drainQueue(w.parkedQueue);
  assert.equal(parked[0].id, 'short');
  assert.equal(deathReason(parked[0]), 'expired');
  // The broker keeps a dead-lettered message's expiration in x-death.
  const orig = header(parked[0].headers['x-death'][0]['original-expiration']);
  assert.ok(Number(orig) > 0 && Number(orig) <= 300, `original-expiration ${orig}`);
  t.diagnostic('maxlen: 2 parked with x-death maxlen; ttl: 3 with expired; envelope ttl_ms: 1 with expired');
  await pub.close();
});

test('a client that receives but never acks does not spin the mailbox', { timeout: 60000 }, async (t) => {
  const w = await startWarren({
    name: 'mbox-noack',
    config: { ack: { timeout_ms: 300 }, mailbox: { max_redeliveries: 3 } },
  });
  const pub = await Publisher.open();
  const user = 'deaf';
  const ids = ['na-1', 'na-2', 'na-3'];
  await pub.publishAll(w.exchange, ids.map((id) => ({ id, user_id: user })));
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 3, { what: 'the backlog' });
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user, autoAck: false });
  // Pauses of 1 s then 2 s between the 3 deliveries: parked as unacked
  // after the third timeout, about 4 s in.
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 3, { timeout: 20000, what: 'parked as unacked' });
  const parked = await drainQueue(w.parkedQueue);
  for (const m of parked) assert.equal(header(m.headers['x-warren-reason']), 'unacked');
  const frames = Object.fromEntries(ids.map((id) => [id, c.ids.get(id) || 0]));
  t.diagnostic(`frames per notification before parking: ${JSON.stringify(frames)}`);
  for (const id of ids) assert.ok(frames[id] >= 1 && frames[id] <= 3, `${id} sent ${frames[id]} times (bounded by max_redeliveries)`);
  const st = await w.stats();
  t.diagnostic(`mailbox counters: ${JSON.stringify(Object.fromEntries(Object.entries(st).filter(([k]) => k.startsWith('mailbox') || k.startsWith('parked'))))}`);
  // Nothing more arrives: the mailbox is empty and paused states ended.
  const before = c.notifications.length;
  await sleep(1500);
  assert.equal(c.notifications.length, before, 'no further redelivery');
  await pub.close();
});

test('an acking client resumes at once; what a client left unacked waits in place for the next connection', { timeout: 60000 }, async () => {
  const w = await startWarren({ name: 'mbox-resume', config: { ack: { timeout_ms: 30000 } } });
  const pub = await Publisher.open();
  const user = 'tabs';
  const ids = Array.from({ length: 10 }, (_, i) => `tab-${i}`);
  await pub.publishAll(w.exchange, ids.map((id) => ({ id, user_id: user })));
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 10, { what: 'the backlog' });
  // A tab that receives without acking, then closes: every item goes back
  // to the mailbox, in its place.
  const lazy = await connectClient(w.wsUrl(), await w.token(user), { name: 'lazy', autoAck: false });
  await lazy.waitForIds(ids);
  lazy.close();
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 10, { what: 'items back in the mailbox' });
  const tab = await connectClient(w.wsUrl(), await w.token(user), { name: 'tab' });
  await tab.waitForIds(ids);
  assert.deepEqual(tab.notifications.map((m) => m.id), ids, 'still in mailbox order');
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 0, { what: 'the mailbox drained' });
  await pub.close();
});

test('the janitor deletes a mailbox left empty and unused, keeps one that holds a notification', { timeout: 60000 }, async (t) => {
  const w = await startWarren({
    name: 'mbox-janitor',
    config: {
      mailbox: { janitor_ms: 200, idle_ms: 1000, unbind_grace_ms: 500 },
      admin: { queue_poll_ms: 200 },
    },
  });
  const pub = await Publisher.open();
  // gone: had a backlog, read it, left; kept: still has one waiting.
  await pub.publishAll(w.exchange, [
    { id: 'for-gone', user_id: 'gone' },
    { id: 'for-kept', user_id: 'kept' },
  ]);
  await waitFor(async () => (await queueCount(mailboxOf(w, 'gone'))) === 1, { what: "gone's mailbox" });
  const c = await connectClient(w.wsUrl(), await w.token('gone'), { name: 'gone' });
  await c.waitForIds(['for-gone']);
  await waitFor(async () => (await queueCount(mailboxOf(w, 'gone'))) === 0, { what: "gone's mailbox read" });
  c.close();
  const t0 = Date.now();
  await waitFor(async () => (await queueCount(mailboxOf(w, 'gone'))) === null, {
    timeout: 20000,
    what: "gone's mailbox deleted",
  });
  t.diagnostic(`deleted ${Date.now() - t0} ms after its user left (idle 1000 + grace 500 ms + janitor period)`);
  assert.equal(await queueCount(mailboxOf(w, 'kept')), 1, 'a mailbox holding a notification is kept');
  // The user comes back later: a new notification makes a new mailbox.
  await pub.publishAll(w.exchange, [{ id: 'after', user_id: 'gone' }]);
  await waitFor(async () => (await queueCount(mailboxOf(w, 'gone'))) === 1, { what: 'a new mailbox' });
  const c2 = await connectClient(w.wsUrl(), await w.token('gone'), { name: 'gone-again' });
  await c2.waitForIds(['after']);
  await pub.close();
});

test('a restarted warren knows the mailboxes of its earlier runs: the janitor deletes the idle ones, the index keeps one entry per mailbox', { timeout: 120000 }, async (t) => {
  const fs = await import('node:fs');
  // More mailboxes than one janitor pass looks at (200), and more that hold
  // a notification than that: every pass must go on where the last stopped,
  // or the idle mailboxes behind the held ones would never get a turn.
  const idle = Array.from({ length: 300 }, (_, i) => `idle-${i}`);
  const kept = Array.from({ length: 250 }, (_, i) => `kept-${i}`);
  const all = [...idle, ...kept];
  const w = await startWarren({ name: 'mbox-index', config: { admin: { queue_poll_ms: 200 } } });
  const pub = await Publisher.open();
  await pub.publishAll(w.exchange, all.map((u) => ({ id: `for-${u}`, user_id: u })));
  await pub.close();
  await waitFor(async () => (await queueCount(w.indexQueue)) === all.length, { timeout: 30000, what: 'one index entry per mailbox made' });
  await waitFor(async () => (await w.stats()).mailbox.puts === all.length, { what: 'every mailbox filled' });
  // The idle users read their mailboxes (an operator's purge does the same
  // here); the kept ones' notifications still wait.
  await withChannel(async (ch) => {
    for (const u of idle) await ch.purgeQueue(mailboxOf(w, u));
  });
  await w.stop('SIGTERM');

  // The next process, with a short idle time: it never saw these mailboxes
  // being made, and knows them from the index.
  const ini = fs.readFileSync(w.iniFile, 'utf8');
  fs.writeFileSync(w.iniFile, `${ini}\n[mailbox]\njanitor_ms = 200\nidle_ms = 1000\nunbind_grace_ms = 300\n`);
  await w.start();
  const t0 = Date.now();
  await waitFor(async () => (await w.stats()).mailbox.deleted === idle.length, {
    timeout: 40000,
    what: 'every idle mailbox of the earlier run deleted',
  });
  t.diagnostic(`${idle.length} idle mailboxes of the earlier run deleted ${Date.now() - t0} ms after the start`);
  const left = await queueCounts(all.map((u) => mailboxOf(w, u)));
  assert.deepEqual(idle.filter((u) => left[mailboxOf(w, u)] !== null), [], 'no idle mailbox left');
  assert.deepEqual(kept.filter((u) => left[mailboxOf(w, u)] !== 1), [], 'every mailbox holding a notification kept');
  await w.stop('SIGTERM');

  // A duplicate and two malformed entries: the next read keeps one entry per
  // mailbox that still exists, and drops the rest.
  await withChannel(async (ch) => {
    ch.sendToQueue(w.indexQueue, Buffer.from(kept[0]), { persistent: true });
    ch.sendToQueue(w.indexQueue, Buffer.alloc(0), { persistent: true });
    ch.sendToQueue(w.indexQueue, Buffer.from('a\u0000b'), { persistent: true });
  });
  await w.start();
  await waitFor(async () => (await queueCount(w.indexQueue)) === kept.length, { timeout: 30000, what: 'the index compacted to the mailboxes left' });
  const read = new RegExp(`mailbox index read: ${kept.length} mailbox\\(es\\) known from earlier runs, ${idle.length} entr\\(ies\\) of mailboxes gone, 1 duplicate\\(s\\), 2 malformed`);
  await waitFor(() => read.test(w.logText()), { what: 'the index read logged' });
  const c = await connectClient(w.wsUrl(), await w.token(kept[0]), { name: kept[0] });
  await c.waitForIds([`for-${kept[0]}`]);
  c.close();
});

test('a notification for a user whose idle mailbox was just unbound is kept, and the mailbox with it', { timeout: 60000 }, async () => {
  const w = await startWarren({
    name: 'mbox-janitor-race',
    config: { mailbox: { janitor_ms: 200, idle_ms: 1000, unbind_grace_ms: 4000 } },
  });
  const pub = await Publisher.open();
  const user = 'returning';
  await pub.publishAll(w.exchange, [{ id: 'r1', user_id: user }]);
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 1, { what: 'the mailbox' });
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  await c.waitForIds(['r1']);
  c.close();
  // Wait until the janitor has unbound it (the binding is gone), then
  // publish inside the grace period.
  const { brokerCtl } = await import('./lib/index.js');
  await waitFor(
    () => !brokerCtl('list_bindings', '-q', '--no-table-headers', 'destination_name').includes(mailboxOf(w, user)),
    { timeout: 15000, interval: 300, what: 'the mailbox unbound' },
  );
  await pub.publishAll(w.exchange, [{ id: 'r2', user_id: user }]);
  await sleep(5000); // past the grace: the delete must have been refused or skipped
  assert.equal(await queueCount(mailboxOf(w, user)), 1, 'the mailbox and its notification are kept');
  const c2 = await connectClient(w.wsUrl(), await w.token(user), { name: `${user}-2` });
  await c2.waitForIds(['r2']);
  await pub.close();
});

test('ack.mode = write: the backlog replays and the mailbox empties as frames are written', { timeout: 60000 }, async () => {
  const w = await startWarren({ name: 'mbox-write', config: { ack: { mode: 'write' } } });
  const pub = await Publisher.open();
  const user = 'writer';
  const ids = Array.from({ length: 50 }, (_, i) => `wr-${i}`);
  await pub.publishAll(w.exchange, ids.map((id) => ({ id, user_id: user })));
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 50, { what: 'the backlog' });
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user, autoAck: false });
  assert.equal(c.welcome.ack_mode, 'write');
  await c.waitForIds(ids);
  assert.deepEqual(c.notifications.map((m) => m.id), ids);
  await waitFor(async () => (await queueCount(mailboxOf(w, user))) === 0, { what: 'the mailbox drained without acks' });
  // Acked, not only taken: stopped, warren would give back what it held.
  assert.equal((await w.stop('SIGTERM')).code, 0);
  assert.equal(await queueCount(mailboxOf(w, user)), 0, 'every item was acked to its mailbox');
  await pub.close();
});

test('a mailbox the broker refuses to make: its notification ends in Q.dead, no reconnect', { timeout: 60000 }, async (t) => {
  const { brokerCtl, ensureBroker } = await import('./lib/index.js');
  const broker = await ensureBroker();
  // A broker user that may configure everything but mailboxes.
  const name = `nombox${Date.now() % 100000}`;
  brokerCtl('add_user', name, 'pw');
  try {
    brokerCtl('set_permissions', '-p', '/', name, '^(?!.*\\.mbox\\.).*$', '.*', '.*');
    const url = broker.url.replace('guest:guest', `${name}:pw`);
    const w = await startWarren({ name: 'mbox-refused', config: { amqp: { url } } });
    const pub = await Publisher.open();
    const online = await connectClient(w.wsUrl(), await w.token('here'), { name: 'here' });
    const reconnects0 = (await w.stats()).reconnects;
    await pub.publishAll(w.exchange, [{ id: 'homeless', user_id: 'nobody-home' }]);
    await waitFor(async () => (await queueCount(w.deadQueue)) === 1, { timeout: 15000, what: 'the copy in Q.dead' });
    const dead = await drainQueue(w.deadQueue);
    assert.equal(dead[0].id, 'homeless');
    await pub.publishAll(w.exchange, [{ id: 'next', user_id: 'here' }]);
    await online.waitForIds(['next']);
    assert.equal((await w.stats()).reconnects, reconnects0, 'no reconnect');
    assert.equal(await w.readyz(), 200);
    t.diagnostic('refused mailbox: the copy went through Q.mailbox.new to Q.dead; the next notification flowed');
    await pub.close();
    await w.cleanup();
  } finally {
    brokerCtl('delete_user', name);
  }
});
