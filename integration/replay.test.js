// `warren replay parked|dead` against the real broker and daemon: parked
// notifications of every reason warren gives (max_attempts, a mailbox's
// maxlen and expired, parked whole as expired) and dead-lettered ones go
// back to delivery, confirmed, counted, in order, and only what was asked;
// a dry run moves nothing; an interrupted run loses nothing (README,
// "Replaying parked notifications").
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  Warren,
  startWarren,
  cleanupAll,
  connectClient,
  Publisher,
  waitFor,
  queueCount,
  drainQueue,
  ensureBroker,
  rawPublish,
  maxPropertiesBytes,
  runWarren,
  daemonEnv,
  amqpConnection,
  sleep,
  WARREN_BIN,
} from './lib/index.js';

after(cleanupAll);

function replay(w, args, opts) {
  return runWarren(['--config', w.iniFile, 'replay', ...args], opts);
}

// The number on a summary line such as "replayed to mailboxes: 3".
function count(r, label) {
  const m = r.stdout.match(new RegExp(`^${label.replace(/[()]/g, '\\$&')}: (\\d+)$`, 'm'));
  assert.ok(m, `no "${label}: N" line in:\n${r.stdout}\n${r.stderr}`);
  return Number(m[1]);
}

const idsOf = (msgs) => msgs.map((m) => m.id);

function headerString(v) {
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
}

// A daemon on the same queue, exchange and secret as w, with other settings.
async function sameQueues(w, name, config) {
  const w2 = new Warren({ name, queue: w.queue, exchange: w.exchange, secret: w.secret, config });
  await w2.init();
  return w2.start();
}

test('replay parked --user U: only U\'s go back and reach U in order; the rest stay parked in order', { timeout: 90000 }, async () => {
  // Without mailboxes and with one attempt, an offline user's notification
  // is parked at once (max_attempts).
  const wa = await startWarren({
    name: 'replay-user',
    config: { amqp: { max_attempts: 1, retry_delays_ms: '200' }, mailbox: { enabled: false } },
  });
  const pub = await Publisher.open();
  const t = Date.now();
  const order = [
    ['a1', 'alice'], ['b1', 'bob'], ['a2', 'alice'], ['c1', 'carol'], ['b2', 'bob'], ['a3', 'alice'],
  ];
  // Published two minutes ago (AMQP timestamp), which the dry run shows as their age.
  const properties = { timestamp: Math.floor(t / 1000) - 120 };
  for (const [id, user] of order) await pub.publish(wa.exchange, { id: `${id}-${t}`, user_id: user, title: id }, { properties });
  // Expired on arrival: parked whole, without x-warren-user.
  await pub.publish(wa.exchange, { id: `x1-${t}`, user_id: 'alice', title: 'late', expires_at: Math.floor(t / 1000) - 60 });
  await pub.confirmed();
  await waitFor(async () => (await queueCount(wa.parkedQueue)) === 7, { timeout: 20000, what: '7 parked' });
  await wa.stop();

  const w = await sameQueues(wa, 'replay-user-mbox', {});
  // Alice has a mailbox (a notification is waiting in it). Copies for a user
  // who has none yet go through Q.mailbox.new, which makes it, and the first
  // of them may land after later ones (README, "Replaying parked
  // notifications"); with one, the copies land in the order replayed.
  const mbox = `${w.queue}.mbox.u.alice`;
  await pub.publishAll(w.exchange, [{ id: `a0-${t}`, user_id: 'alice', title: 'a0' }]);
  await waitFor(async () => (await queueCount(mbox)) === 1, { timeout: 10000, what: `${mbox} to hold a0` });

  const dry = await replay(w, ['parked', '--user', 'alice', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(count(dry, 'would be replayed to mailboxes'), 3);
  assert.equal(count(dry, 'skipped (other users)'), 4);
  for (const id of ['a1', 'a2', 'a3'])
    assert.match(dry.stdout, new RegExp(`^would replay to mailbox +id=${id}-${t} user=alice reason=max_attempts age=2m0\\ds$`, 'm'));
  assert.match(dry.stdout, new RegExp(`^would skip \\(other user\\) +id=b1-${t} user=bob reason=max_attempts`, 'm'));
  assert.match(dry.stdout, new RegExp(`^would skip \\(other user\\) +id=x1-${t} user=- reason=expired`, 'm'));
  assert.match(dry.stdout, /^dry run: nothing was moved$/m);
  assert.equal(await queueCount(w.parkedQueue), 7, 'the dry run moved something');

  const r = await replay(w, ['parked', '--user', 'alice']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(count(r, 'replayed to mailboxes'), 3);
  assert.equal(count(r, 'skipped (other users)'), 4);
  assert.equal(count(r, 'left in place'), 0);
  assert.equal(count(r, 'expired again'), 0);
  assert.equal(await queueCount(w.parkedQueue), 4);

  // She gets them when she connects, in their order.
  await waitFor(async () => (await queueCount(mbox)) === 4, { timeout: 10000, what: `${mbox} to hold 4` });
  const alice = await connectClient(w.wsUrl(), await w.token('alice'), { name: 'alice' });
  await alice.waitForIds([`a1-${t}`, `a2-${t}`, `a3-${t}`]);
  await sleep(300);
  assert.deepEqual(idsOf(alice.notifications), [`a0-${t}`, `a1-${t}`, `a2-${t}`, `a3-${t}`]);
  assert.equal(alice.notifications[1].title, 'a1');

  const rest = await drainQueue(w.parkedQueue);
  assert.deepEqual(idsOf(rest), [`b1-${t}`, `c1-${t}`, `b2-${t}`, `x1-${t}`], 'the others are not parked in their order');
  await pub.close();
});

test('maxlen and expired mailbox items: --limit, expired again, --ignore-expiry', { timeout: 90000 }, async () => {
  const w = await startWarren({ name: 'replay-reasons', config: { mailbox: { max_messages: 2 } } });
  const pub = await Publisher.open();
  const t = Date.now();
  const dmbox = `${w.queue}.mbox.u.dave`;
  // d1 makes dave's mailbox; d2..d4 then go straight to it, in order, and
  // push d1 and d2 out to Q.parked (maxlen).
  await pub.publishAll(w.exchange, [{ id: `d1-${t}`, user_id: 'dave', title: 'd1' }]);
  await waitFor(async () => (await queueCount(dmbox)) === 1, { timeout: 10000, what: `${dmbox} to hold d1` });
  await pub.publishAll(w.exchange, ['d2', 'd3', 'd4'].map((d) => ({ id: `${d}-${t}`, user_id: 'dave', title: d })));
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 2, { timeout: 10000, what: '2 parked (maxlen)' });
  // Erin's expires in her mailbox and is dead-lettered to Q.parked
  // (expired). Its deadline is absolute (expires_at, in the body): dropping
  // the copy's x-warren-expires-at would not revive it.
  const expiresAt = Math.floor(Date.now() / 1000) + 2;
  await pub.publishAll(w.exchange, [{ id: `e1-${t}`, user_id: 'erin', title: 'e1', expires_at: expiresAt }]);
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 3, { timeout: 15000, what: '3 parked' });

  const dry = await replay(w, ['parked', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, new RegExp(`^would replay to mailbox +id=d1-${t} user=dave reason=maxlen `, 'm'));
  assert.match(dry.stdout, new RegExp(`^would replay to mailbox +id=e1-${t} user=erin reason=expired .*will be parked as expired again`, 'm'));
  assert.equal(count(dry, 'expired again'), 1);

  const dave = await connectClient(w.wsUrl(), await w.token('dave'), { name: 'dave' });
  await dave.waitForIds([`d3-${t}`, `d4-${t}`]);

  const one = await replay(w, ['parked', '--limit', '1']);
  assert.equal(one.code, 0, one.stderr);
  assert.equal(count(one, 'replayed to mailboxes'), 1);
  assert.match(one.stdout, /^stopped at --limit 1$/m);
  await dave.waitForIds([`d1-${t}`]);

  // Without --ignore-expiry the copy carries its passed deadline: the
  // mailbox expires it at once and it is parked again, and the run says so.
  const again = await replay(w, ['parked', '--user', 'erin']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(count(again, 'replayed to mailboxes'), 1);
  assert.equal(count(again, 'expired again'), 1);
  assert.match(again.stdout, /^warning: 1 was replayed with a deadline already passed.*--ignore-expiry/m);
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 2, { timeout: 10000, what: 'e1 parked again' });

  const fresh = await replay(w, ['parked', '--user', 'erin', '--ignore-expiry']);
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.equal(count(fresh, 'replayed to mailboxes'), 1);
  assert.equal(count(fresh, 'expired again'), 0);
  const erin = await connectClient(w.wsUrl(), await w.token('erin'), { name: 'erin' });
  await erin.waitForIds([`e1-${t}`]);

  await sleep(300);
  assert.deepEqual(idsOf(dave.notifications), [`d3-${t}`, `d4-${t}`, `d1-${t}`]);
  const rest = await drainQueue(w.parkedQueue);
  assert.deepEqual(idsOf(rest), [`d2-${t}`], '--limit 1 replayed more than one');
  await pub.close();
});

test('replay dead: a too_large notification is delivered once the limit is raised; poison goes back to Q.dead', { timeout: 90000 }, async () => {
  const w0 = await startWarren({ name: 'replay-dead', config: { amqp: { max_body_bytes: 512 } } });
  const pub = await Publisher.open();
  const t = Date.now();
  const big = { id: `big-${t}`, user_id: 'frank', title: 'big', content: 'x'.repeat(2000) };
  await pub.publish(w0.exchange, big);
  await pub.publishRaw(w0.exchange, Buffer.from('{"id":"broken","user_id":'), {
    contentType: 'application/json',
    properties: { messageId: `poison-${t}` },
  });
  await pub.confirmed();
  await waitFor(async () => (await queueCount(w0.deadQueue)) === 2, { timeout: 10000, what: '2 in Q.dead' });

  const dry = await replay(w0, ['dead', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(count(dry, 'would be replayed to the exchange'), 2);
  assert.equal(await queueCount(w0.deadQueue), 2, 'the dry run moved something');
  await w0.stop();

  // The operator fixed the cause: the limit is the default again.
  const w = await sameQueues(w0, 'replay-dead-fixed', {});
  const frank = await connectClient(w.wsUrl(), await w.token('frank'), { name: 'frank' });
  const r = await replay(w, ['dead']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(count(r, 'replayed to the exchange'), 2);
  assert.equal(count(r, 'left in place'), 0);
  await frank.waitForIds([big.id]);
  assert.equal(frank.notifications.find((n) => n.id === big.id).content.length, 2000);

  // Still poison: dead-lettered again, as a new original (one x-death).
  await waitFor(async () => (await queueCount(w.deadQueue)) === 1, { timeout: 10000, what: 'the poison back in Q.dead' });
  const dead = await drainQueue(w.deadQueue);
  assert.equal(dead[0].properties.messageId, `poison-${t}`);
  const xd = dead[0].headers['x-death'];
  assert.equal(xd.length, 1, JSON.stringify(xd));
  assert.equal(xd[0].count, 1, 'the replayed copy kept the x-death of its first trip');
  await pub.close();
});

test('SIGINT midway: every message is either replayed once or still parked, in order', { timeout: 120000 }, async () => {
  // A daemon with mailboxes declares Q.mailbox; it is then stopped, so the
  // copies wait in the users' mailbox (which the replay makes before each
  // user's first copy) to be counted.
  const w = await startWarren({ name: 'replay-sigint' });
  await w.stop();
  const total = 3000;
  const conn = await amqpConnection();
  const ch = await conn.createConfirmChannel();
  for (let i = 0; i < total; i++) {
    const user = `u${i % 3}`;
    const ok = ch.publish('', w.parkedQueue, Buffer.from(JSON.stringify({ id: `n${i}`, user_id: user })), {
      persistent: true,
      contentType: 'application/json',
      messageId: `n${i}`,
      headers: { 'x-warren-user': user, 'x-warren-reason': 'max_attempts', 'x-warren-attempt': 50 },
    });
    if (!ok) await new Promise((res) => ch.once('drain', res));
  }
  await ch.waitForConfirms();
  await ch.close();
  assert.equal(await queueCount(w.parkedQueue), total);

  const proc = spawn(WARREN_BIN, ['--config', w.iniFile, 'replay', 'parked'], { env: daemonEnv() });
  let out = '';
  let errOut = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (errOut += d));
  const exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  await waitFor(async () => (await queueCount(w.parkedQueue)) < total - 200, { timeout: 20000, interval: 10, what: 'the replay under way' });
  proc.kill('SIGINT');
  const ex = await exited;
  assert.equal(ex.code, 130, `exit ${JSON.stringify(ex)}\n${out}\n${errOut}`);
  assert.match(out, /^interrupted: /m);
  const n = count({ stdout: out, stderr: errOut }, 'replayed to mailboxes');
  assert.ok(n > 0 && n < total, `replayed ${n} of ${total}: not interrupted midway`);

  const parked = await queueCount(w.parkedQueue);
  const boxes = ['u0', 'u1', 'u2'].map((u) => `${w.queue}.mbox.u.${u}`);
  let mailed = 0;
  for (const b of boxes) mailed += (await queueCount(b)) || 0;
  assert.equal(parked + n, total, `parked ${parked} + replayed ${n} != ${total}`);
  assert.equal(mailed, n, 'copies in the mailboxes differ from the count replayed');
  assert.equal(await queueCount(`${w.queue}.mailbox.new`), 0, 'no copy took the detour');
  // The mailboxes the replay made are in the index, for the daemon's janitor.
  const index = await drainQueue(w.indexQueue);
  assert.deepEqual(index.map((m) => m.body.toString()).sort(), ['u0', 'u1', 'u2']);
  // Each user's copies are in their mailbox in order.
  for (const [k, b] of boxes.entries()) {
    const copies = await drainQueue(b);
    const want = Array.from({ length: n }, (_, i) => i).filter((i) => i % 3 === k).map((i) => `n${i}`);
    assert.deepEqual(idsOf(copies), want, `${b} in order`);
  }
  const rest = await drainQueue(w.parkedQueue);
  assert.deepEqual(idsOf(rest), Array.from({ length: total - n }, (_, i) => `n${n + i}`));
});

test('a copy that cannot keep its headers is left in place, whole; an empty header key travels', { timeout: 60000 }, async () => {
  const w = await startWarren({ name: 'replay-left' });
  await w.stop();
  const { url } = await ensureBroker();
  const body = (id) => Buffer.from(JSON.stringify({ id, user_id: 'alice' }));
  const base = [['x-warren-user', 'alice'], ['x-warren-reason', 'max_attempts']];
  await rawPublish(url, {
    exchange: '',
    routingKey: w.parkedQueue,
    properties: { contentType: 'application/json', messageId: 'm1', headers: [...base, ['', 'empty key']] },
    body: body('m1'),
  });
  // Headers that fit Q.parked's frame but leave a mailbox copy no room for
  // the x-death its mailbox would add.
  const blob = 'b'.repeat(maxPropertiesBytes() - 1000);
  await rawPublish(url, {
    exchange: '',
    routingKey: w.parkedQueue,
    properties: { contentType: 'application/json', messageId: 'm2', headers: [...base, ['blob', blob]] },
    body: body('m2'),
  });
  await rawPublish(url, {
    exchange: '',
    routingKey: w.parkedQueue,
    properties: { contentType: 'application/json', messageId: 'm3', headers: base },
    body: body('m3'),
  });

  const r = await replay(w, ['parked']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(count(r, 'replayed to mailboxes'), 2);
  assert.equal(count(r, 'left in place'), 1);
  assert.match(r.stdout, /^left in place +id=m2 user=alice reason=max_attempts age=\S+: its headers cannot be encoded, or do not fit a frame/m);

  const kept = await drainQueue(w.parkedQueue);
  assert.deepEqual(idsOf(kept), ['m2']);
  assert.equal(headerString(kept[0].headers.blob).length, blob.length, 'the message left in place lost its headers');
  const copies = await drainQueue(`${w.queue}.mbox.u.alice`);
  assert.deepEqual(idsOf(copies), ['m1', 'm3']);
  assert.equal(headerString(copies[0].headers['']), 'empty key');
  assert.equal(headerString(copies[0].headers['x-warren-user']), 'alice');
  for (const k of ['x-warren-reason', 'x-warren-attempt']) assert.equal(copies[0].headers[k], undefined, k);
});

test('usage errors exit 2, a missing queue exits 1 with a message, --help documents replay', { timeout: 30000 }, async () => {
  const w = new Warren({ name: 'replay-usage' });
  await w.init(); // an INI for queues that were never declared
  for (const args of [[], ['everything'], ['dead', '--user', 'x'], ['dead', '--ignore-expiry'], ['parked', '--limit', '0'], ['parked', '--limit', 'x'], ['parked', 'extra']]) {
    const r = await replay(w, args);
    assert.equal(r.code, 2, `replay ${args.join(' ')}: exit ${r.code} ${r.stderr}`);
  }
  const r = await replay(w, ['parked']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`queue ${w.queue}\\.parked does not exist`));
  const h = await runWarren(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /replay parked \[--user U\] \[--limit N\]/);
  assert.match(h.stdout, /replay dead \[--limit N\] \[--dry-run\]/);
});
