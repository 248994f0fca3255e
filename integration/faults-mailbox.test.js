// Mailboxes under faults (docs/mailboxes.md), on a private RabbitMQ node:
// warren killed with SIGKILL while a backlog replays; the broker restarted
// (stop_app / start_app) with mailboxes holding backlogs, one user online
// through it; and an upgrade from a warren without mailboxes whose ladder
// is full of copies. Each reports lost (must be 0) and duplicates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, WarrenClient, signJwt, waitFor, sleep } from './lib/index.js';
import { size, report, usePrivateBroker, lossOf } from './lib/faults.js';

const BACKLOG = size(1000, 5000);
// mailbox.max_messages (1,000 by default) would drop the head of the full
// forms' backlogs (5,000; 2,000) to Q.parked: room for all of them.
const CAP = 10000;

let broker;
usePrivateBroker(undefined, (b) => {
  broker = b;
});

const mailboxOf = (w, user) => `${w.queue}.mbox.u.${user}`;

async function fill(w, user, ids) {
  const pub = await broker.publisher();
  for (const [i, id] of ids.entries()) await pub.publish(w.exchange, { id, user_id: user, seq: i });
  await pub.settle(30000);
  const confirmed = ids.filter((id) => pub.confirmed.has(id));
  await pub.close();
  return confirmed;
}

function client(w, user, opts = {}) {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return new WarrenClient(w.wsUrl(), signJwt({ sub: user, exp }, w.secret), { name: user, ...opts });
}

test('warren killed with SIGKILL while a backlog replays: lost 0', { timeout: 180000 }, async (t) => {
  const w = await startWarren({
    name: 'fault-mbox-kill',
    config: { amqp: { url: broker.url, heartbeat_s: 2 }, mailbox: { prefetch: 50, max_messages: CAP } },
  });
  const user = 'backlogged';
  const ids = Array.from({ length: BACKLOG }, (_, i) => `kb-${w.name}-${i}`);
  const confirmed = await fill(w, user, ids);
  await waitFor(async () => (await broker.queueCount(mailboxOf(w, user))) === confirmed.length, {
    timeout: 30000,
    what: 'the backlog in the mailbox',
  });
  const c = client(w, user, { reconnect: true });
  await c.connect();
  const killAt = Math.floor(confirmed.length / 3);
  await waitFor(() => c.ids.size >= killAt, { timeout: 30000, what: `${killAt} received` });
  await w.kill9();
  const receivedAtKill = c.ids.size;
  await w.start();
  await waitFor(() => confirmed.every((id) => c.ids.has(id)), { timeout: 90000, interval: 200, what: 'the whole backlog' }).catch(() => {});
  c.close();
  await w.stop('SIGTERM');
  const inQueue = await broker.drain([...w.allQueues, mailboxOf(w, user)]);
  const { lost } = lossOf(confirmed, new Set(c.ids.keys()), inQueue);
  let duplicates = 0;
  for (const n of c.ids.values()) duplicates += n - 1;
  const order = c.notifications.map((m) => m.seq);
  let inversions = 0;
  for (let i = 1; i < order.length; i++) if (order[i] < order[i - 1]) inversions++;
  report(t, 'mailbox-kill9', {
    backlog: confirmed.length,
    received_before_kill: receivedAtKill,
    received_unique: c.ids.size,
    duplicates,
    order_inversions: inversions,
    lost: lost.length,
  });
  assert.equal(lost.length, 0, `lost: ${lost.slice(0, 5)}`);
});

test('broker restarted with mailboxes holding backlogs: lost 0', { timeout: 240000 }, async (t) => {
  const w = await startWarren({
    name: 'fault-mbox-broker',
    config: { amqp: { url: broker.url, heartbeat_s: 2 }, mailbox: { max_messages: CAP } },
  });
  const away = 'away-through-restart';
  const online = 'online-through-restart';
  const awayIds = Array.from({ length: size(200, 2000) }, (_, i) => `ba-${w.name}-${i}`);
  const onlineIds = Array.from({ length: size(200, 2000) }, (_, i) => `bo-${w.name}-${i}`);
  const awayConfirmed = await fill(w, away, awayIds);
  // The online user has a backlog too, and stays connected (not acking
  // until the broker is back) through the restart.
  const onlineConfirmed = await fill(w, online, onlineIds);
  await waitFor(async () => (await broker.queueCount(mailboxOf(w, online))) === onlineConfirmed.length, {
    what: 'the backlog of the online user',
  });
  const c = client(w, online, { reconnect: true });
  await c.connect();
  await waitFor(() => c.ids.size > 0, { what: 'the replay started' });
  const t0 = Date.now();
  await broker.closeConn();
  await broker.ctlAsync('stop_app');
  await sleep(1000);
  await broker.ctlAsync('start_app');
  const backAt = Date.now();
  await waitFor(async () => (await w.readyz()) === 200, { timeout: 60000, what: 'warren ready again' });
  const readyMs = Date.now() - backAt;
  await waitFor(() => onlineConfirmed.every((id) => c.ids.has(id)), { timeout: 60000, interval: 200, what: "the online user's backlog" }).catch(() => {});
  const c2 = client(w, away);
  await c2.connect();
  await waitFor(() => awayConfirmed.every((id) => c2.ids.has(id)), { timeout: 60000, interval: 200, what: "the away user's backlog" }).catch(() => {});
  c.close();
  c2.close();
  await w.stop('SIGTERM');
  const inQueue = await broker.drain([...w.allQueues, mailboxOf(w, away), mailboxOf(w, online)]);
  const lostOnline = lossOf(onlineConfirmed, new Set(c.ids.keys()), inQueue).lost;
  const lostAway = lossOf(awayConfirmed, new Set(c2.ids.keys()), inQueue).lost;
  let duplicates = 0;
  for (const n of [...c.ids.values(), ...c2.ids.values()]) duplicates += n - 1;
  report(t, 'mailbox-broker-restart', {
    backlog_online: onlineConfirmed.length,
    backlog_away: awayConfirmed.length,
    restart_ms: backAt - t0,
    ready_after_ms: readyMs,
    duplicates,
    lost: lostOnline.length + lostAway.length,
  });
  assert.equal(lostOnline.length + lostAway.length, 0);
});

test('upgrade from a warren without mailboxes whose ladder is full: lost 0', { timeout: 180000 }, async (t) => {
  // The old warren: the ladder only, with a long delay so copies sit there.
  const old = await startWarren({
    name: 'fault-mbox-upgrade',
    config: {
      amqp: { url: broker.url, retry_delays_ms: '3000', max_attempts: 50 },
      mailbox: { enabled: false },
    },
  });
  const user = 'upgraded';
  const ids = Array.from({ length: size(300, 3000) }, (_, i) => `up-${old.name}-${i}`);
  const confirmed = await fill(old, user, ids);
  await waitFor(async () => (await broker.queueCount(`${old.queue}.retry.3000`)) === confirmed.length, {
    timeout: 30000,
    what: 'every copy on the ladder',
  });
  await old.stop('SIGTERM');
  // The new one, same queue, mailboxes on (the default): the copies come
  // back from the ladder into Q and go to the user's mailbox.
  old.config.mailbox = { enabled: true, max_messages: CAP };
  const fs = await import('node:fs');
  const ini = fs
    .readFileSync(old.iniFile, 'utf8')
    .replace(/\[mailbox\]\nenabled = false\n/, `[mailbox]\nenabled = true\nmax_messages = ${CAP}\n`);
  fs.writeFileSync(old.iniFile, ini);
  await old.start();
  await waitFor(async () => (await broker.queueCount(mailboxOf(old, user))) === confirmed.length, {
    timeout: 30000,
    what: 'every copy in the mailbox',
  });
  const c = client(old, user);
  await c.connect();
  await waitFor(() => confirmed.every((id) => c.ids.has(id)), { timeout: 30000, interval: 200, what: 'all of them' }).catch(() => {});
  c.close();
  await old.stop('SIGTERM');
  const inQueue = await broker.drain([...old.allQueues, mailboxOf(old, user)]);
  const { lost } = lossOf(confirmed, new Set(c.ids.keys()), inQueue);
  let duplicates = 0;
  for (const n of c.ids.values()) duplicates += n - 1;
  report(t, 'mailbox-upgrade', { on_ladder: confirmed.length, received_unique: c.ids.size, duplicates, lost: lost.length });
  assert.equal(lost.length, 0);
  assert.equal(await broker.queueCount(old.parkedQueue), 0, 'nothing parked');
});
