// Cluster mode (docs/cluster.md) as users see it, with three warren nodes on
// one queue: docs/reliability.md scenarios 24–26.
//
// 24. Users on random nodes, some on two nodes at once, some moving between
//     them: every device gets every notification for its user, nobody gets
//     another user's (leaked 0), nothing is lost; a mailbox backlog that one
//     node drains reaches the user's devices on the other nodes too.
// 25. kill -9 of a node under load, restarted with the same id; and a node
//     killed and never restarted (its queue's TTL hands its copies to the
//     mailboxes): lost 0.
// 26. A rolling restart of every node under load: lost 0.
//
// Each reports lost, leaked, duplicates, wasted copies (routed to a node the
// user had left) and the time until a moved user's notifications flow again.
// The broker is the test broker (one node) here; scripts/reliability runs the
// same file against a three-node RabbitMQ cluster (WARREN_TEST_CLUSTER_URLS,
// one AMQP URL per broker node: node i of warren connects to broker i), where
// scenario 26 also stops one broker node.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Warren,
  cleanupAll,
  WarrenClient,
  Publisher,
  signJwt,
  sleep,
  waitFor,
  uniqueName,
  randomHex,
  withChannel,
  queueCount,
  listQueues,
  drainQueue,
} from './lib/index.js';
import { execFileSync } from 'node:child_process';
import { FULL, report, metrics } from './lib/faults.js';

after(cleanupAll);

const BROKER_URLS = (process.env.WARREN_TEST_CLUSTER_URLS || '').split(/[\s,]+/).filter(Boolean);
// "DIR PORT" of the broker cluster (scripts/broker.sh cluster-start DIR PORT).
const CLUSTER_CTL = process.env.WARREN_TEST_CLUSTER_CTL;
function clusterCtl(k, ...args) {
  const [dir, port] = CLUSTER_CTL.split(/\s+/);
  execFileSync(new URL('../scripts/broker.sh', import.meta.url).pathname, ['cluster-ctl', dir, port, String(k), ...args], { stdio: 'ignore', timeout: 120000 });
}

// A small deterministic generator, so a failure can be replayed.
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

// n warren nodes sharing one queue, exchange and JWT secret.
async function startCluster(n, { name, config = {}, grace = 1000 } = {}) {
  const base = uniqueName(name);
  const secret = randomHex(24);
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const amqp = { ...(config.amqp || {}) };
    if (BROKER_URLS.length) amqp.url = BROKER_URLS[i % BROKER_URLS.length];
    const w = new Warren({
      name: `${name}-${i + 1}`,
      queue: base,
      exchange: `${base}.in`,
      secret,
      config: {
        ...config,
        amqp,
        cluster: { node_id: `node-${i + 1}`, unbind_grace_ms: grace, ...(config.cluster || {}) },
      },
    });
    await w.init();
    await w.start();
    nodes.push(w);
  }
  return { nodes, exchange: `${base}.in`, queue: base, secret };
}

const token = (c, user) => signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }, c.secret);

async function device(c, node, user, opts = {}) {
  const d = new WarrenClient(node.wsUrl(), token(c, user), { name: `${user}@${node.name}`, ...opts });
  d.user = user;
  await d.connect();
  return d;
}

// Sums a counter over the nodes' /metrics.
async function sumMetric(nodes, name) {
  let total = 0;
  for (const w of nodes) {
    if (!w.running) continue;
    const m = await metrics(w).catch(() => ({}));
    for (const [k, v] of Object.entries(m)) if (k === name || k.startsWith(`${name}{`)) total += v;
  }
  return total;
}

// What the devices saw against what was published: for each published
// notification, the users it names (or every user, for a broadcast).
function account(devices, published, users) {
  const byUser = new Map(users.map((u) => [u, new Set()]));
  let leaked = 0;
  let duplicates = 0;
  const names = new Map(published.map((p) => [p.id, p]));
  for (const d of devices) {
    for (const [id, times] of d.ids) {
      const p = names.get(id);
      if (!p) continue;
      if (!p.broadcast && !p.users.includes(d.user)) leaked++;
      duplicates += times - 1;
      byUser.get(d.user)?.add(id);
    }
  }
  const missing = [];
  for (const p of published) {
    if (p.broadcast) continue;
    for (const u of p.users) if (!byUser.get(u).has(p.id)) missing.push(`${p.id}→${u}`);
  }
  return { leaked, duplicates, missing };
}

function envelope(p) {
  if (p.broadcast) return { id: p.id, broadcast: true, title: p.id };
  return p.users.length === 1 ? { id: p.id, user_id: p.users[0], title: p.id } : { id: p.id, user_ids: p.users, title: p.id };
}

test('scenario 24: users on random nodes, on two at once and moving: every device gets each notification, no other user does', { timeout: 180000 }, async (t) => {
  const c = await startCluster(3, { name: 'cl-24' });
  const [n1, n2, n3] = c.nodes;
  const rand = rng(24);
  const users = Array.from({ length: FULL ? 24 : 12 }, (_, i) => `cu${i}`);
  const devices = [];
  // One device on a random node; every third user a second device on another.
  for (const [i, u] of users.entries()) {
    const k = Math.floor(rand() * 3);
    devices.push(await device(c, c.nodes[k], u));
    if (i % 3 === 0) devices.push(await device(c, c.nodes[(k + 1) % 3], u));
  }
  const pub = await Publisher.open();
  const published = [];
  const total = FULL ? 1200 : 300;
  let b = 0;
  for (let i = 0; i < total; i++) {
    const r = rand();
    const p =
      r < 0.05
        ? { id: `cl24-b${b++}`, broadcast: true }
        : { id: `cl24-${i}`, users: r < 0.8 ? [users[Math.floor(rand() * users.length)]] : [...new Set([0, 1, 2].map(() => users[Math.floor(rand() * users.length)]))] };
    published.push(p);
    await pub.publish(c.exchange, envelope(p));
  }
  // Every device of a named user gets it; every device gets each broadcast.
  for (const d of devices) {
    const want = published.filter((p) => p.broadcast || p.users.includes(d.user)).map((p) => p.id);
    await d.waitForIds(want, { timeout: 30000 });
  }
  const live = account(devices, published, users);
  assert.equal(live.leaked, 0, 'a notification reached a user it does not name');
  assert.deepEqual(live.missing, []);

  // Moving: a third of the single-device users leave their node and open on
  // another; notifications to them flow again from the new node.
  const movers = devices.filter((d, i) => devices.filter((e) => e.user === d.user).length === 1 && i % 3 === 1).slice(0, 4);
  const flowMs = [];
  for (const d of movers) {
    const from = c.nodes.find((w) => d.url.startsWith(w.wsUrl()));
    const to = c.nodes[(c.nodes.indexOf(from) + 1) % 3];
    d.close();
    await sleep(50);
    const moved = await device(c, to, d.user);
    devices.push(moved);
    const t0 = Date.now();
    // A notification every 20 ms until the first one arrives on the new node.
    for (let k = 0; ; k++) {
      const p = { id: `cl24-move-${d.user}-${k}`, users: [d.user] };
      published.push(p);
      await pub.publish(c.exchange, envelope(p));
      if (moved.ids.size > 0) break;
      await sleep(20);
      if (Date.now() - t0 > 10000) assert.fail(`no notification reached ${d.user} on its new node in 10 s`);
    }
    flowMs.push(Date.now() - t0);
  }
  // What the movers were sent while moving reaches them on the new node:
  // live, or from their mailbox, through the node they left (stale binding).
  for (const d of devices.filter((x) => !x.closed)) {
    const want = published.filter((p) => !p.broadcast && p.users.includes(d.user) && p.id.startsWith('cl24-move-')).map((p) => p.id);
    await d.waitForIds(want, { timeout: 30000 });
  }

  // A backlog drained by one node reaches the user's devices on the others:
  // copies put straight into the mailbox of a user online on two nodes.
  const twoNode = devices.filter((d) => !d.closed && devices.filter((e) => !e.closed && e.user === d.user).length === 2);
  const mu = twoNode[0].user;
  const backlog = Array.from({ length: 20 }, (_, i) => ({ id: `cl24-mbox-${i}`, user_id: mu, title: 'mbox' }));
  await withChannel(async (ch) => {
    for (const env of backlog)
      ch.publish(`${c.queue}.mailbox`, `u.${mu}`, Buffer.from(JSON.stringify(env)), {
        persistent: true,
        contentType: 'application/json',
        messageId: env.id,
        headers: { 'x-warren-user': mu },
      });
  });
  for (const d of twoNode.filter((x) => x.user === mu)) await d.waitForIds(backlog.map((e) => e.id), { timeout: 20000 });

  const wasted = await sumMetric(c.nodes, 'warren_cluster_wasted_total');
  const routed = await sumMetric(c.nodes, 'warren_cluster_routed_total');
  const all = account(devices, published, users);
  report(t, 'cluster-users', {
    nodes: 3,
    users: users.length,
    devices: devices.length,
    notifications: published.length,
    lost: all.missing.length,
    leaked: all.leaked,
    duplicates: all.duplicates,
    wasted,
    routed_metric_sum: routed,
    move_flow_ms_max: Math.max(...flowMs),
    move_flow_ms: flowMs,
  });
  assert.equal(all.leaked, 0);
  assert.deepEqual(all.missing, []);
  // Nothing is left behind in the node queues once everyone has acked.
  for (const w of c.nodes) await waitFor(async () => (await queueCount(`${c.queue}.node.${w.config.cluster.node_id}`)) === 0, { timeout: 10000, what: `${w.name}'s queue empty` });
  await pub.close?.();
  void n1, n2, n3;
});

// Publishes `total` notifications to `users` at about `rate` per second while
// `during` runs (started at the halfway mark); resolves with what was sent.
async function underLoad(c, users, { total, rate, seed, prefix }, during) {
  const pub = await Publisher.open();
  const rand = rng(seed);
  const published = [];
  let midway;
  for (let i = 0; i < total; i++) {
    const p = { id: `${prefix}-${i}`, users: [users[Math.floor(rand() * users.length)]] };
    if (rand() < 0.15) p.users = [...new Set([...p.users, users[Math.floor(rand() * users.length)]])];
    published.push(p);
    await pub.publish(c.exchange, envelope(p));
    if (i === Math.floor(total / 2)) midway = during();
    await sleep(1000 / rate);
  }
  await midway;
  return published;
}

// Every (notification, user) pair acked by a device of that user. Pairs
// still missing at the timeout are looked for in the broker's queues (which
// drains them: the test fails then anyway) and reported where found.
async function waitAllDelivered(c, devices, published, users, timeout) {
  await waitFor(() => account(devices, published, users).missing.length === 0, { timeout, interval: 200, what: 'every pair delivered' }).catch(() => {});
  const r = account(devices, published, users);
  if (r.missing.length) {
    const ids = new Set(r.missing.map((m) => m.split('→')[0]));
    const where = [];
    for (const q of (await listQueues()).filter((n) => n.startsWith(c.queue))) {
      for (const m of await drainQueue(q)) if (ids.has(m.id)) where.push(`${m.id} in ${q} (x-death ${JSON.stringify((m.headers["x-death"] || []).map((x) => [String(x.queue), String(x.reason)]))})`);
    }
    console.error(`missing ${r.missing.join(' ')}; found: ${where.join(', ') || 'nowhere'}`);
  }
  return r;
}

test('scenario 25: kill -9 of a node under load, restarted with the same id, and one never restarted: lost 0', { timeout: 240000 }, async (t) => {
  const c = await startCluster(3, { name: 'cl-25', config: { cluster: { node_ttl_ms: 3000 } } });
  const users = Array.from({ length: 12 }, (_, i) => `ku${i}`);
  const devices = [];
  for (const [i, u] of users.entries()) devices.push(await device(c, c.nodes[i % 3], u, { reconnect: true }));
  const figures = {};

  // Node 2 is killed halfway and restarted with the same id; its devices
  // reconnect to it (the same URL) once it is back.
  let killedAt = 0;
  let backAt = 0;
  const published = await underLoad(c, users, { total: FULL ? 1200 : 400, rate: 100, seed: 25, prefix: 'cl25a' }, async () => {
    await c.nodes[1].kill9();
    killedAt = Date.now();
    await sleep(1000);
    await c.nodes[1].start();
    backAt = Date.now();
  });
  const mine = devices.filter((d) => d.url.startsWith(c.nodes[1].wsUrl()));
  await waitFor(() => mine.every((d) => d.connected), { timeout: 20000, what: "node 2's devices back" });
  const backMs = Date.now() - backAt;
  const pub2 = await Publisher.open();
  const flowBack = [];
  for (const d of mine) {
    const t0 = Date.now();
    const id = `cl25-back-${d.user}`;
    published.push({ id, users: [d.user] });
    await pub2.publish(c.exchange, envelope({ id, users: [d.user] }));
    await d.waitForIds([id], { timeout: 20000 });
    flowBack.push(Date.now() - t0);
  }
  const r1 = await waitAllDelivered(c, devices, published, users, 30000);
  figures.restarted = { lost: r1.missing.length, leaked: r1.leaked, duplicates: r1.duplicates, down_ms: backAt - killedAt, reconnect_after_restart_ms: backMs, flow_after_reconnect_ms: flowBack };
  assert.equal(r1.leaked, 0);
  assert.deepEqual(r1.missing, [], 'pairs never delivered after the restart');

  // Node 3 is killed and never comes back; its users move to node 1. What
  // waited in node 3's queue reaches them through their mailboxes once the
  // node queue's TTL (3 s here) passes.
  const moved = devices.filter((d) => d.url.startsWith(c.nodes[2].wsUrl()));
  let movedAt = 0;
  const published2 = await underLoad(c, users, { total: FULL ? 1200 : 400, rate: 100, seed: 26, prefix: 'cl25b' }, async () => {
    for (const d of moved) d.url = c.nodes[0].wsUrl();
    await c.nodes[2].kill9();
    movedAt = Date.now();
  });
  await waitFor(() => moved.every((d) => d.connected), { timeout: 20000, what: "node 3's devices on node 1" });
  const reconnectMs = Date.now() - movedAt;
  // Once back on node 1, how long until a new notification reaches them.
  const flow = [];
  for (const d of moved) {
    const t0 = Date.now();
    const id = `cl25-flow-${d.user}`;
    published2.push({ id, users: [d.user] });
    await pub2.publish(c.exchange, envelope({ id, users: [d.user] }));
    await d.waitForIds([id], { timeout: 20000 });
    flow.push(Date.now() - t0);
  }
  const r2 = await waitAllDelivered(c, devices, published2, users, 40000);
  // Broadcasts also reach node 3's queue, where nobody reads them: they
  // expire into Q.mailbox under the broadcast key and are dropped, never
  // parked or dead-lettered (a broadcast is for whoever is online).
  for (let k = 0; k < 3; k++) await pub2.publish(c.exchange, { id: `cl25-bc-${k}`, broadcast: true, title: 'b' });
  await waitFor(async () => (await sumMetric(c.nodes, 'warren_cluster_broadcasts_total{state="expired"}')) >= 3, {
    timeout: 20000,
    what: "broadcasts expired in node 3's queue, dropped",
  });
  assert.equal(await queueCount(`${c.queue}.dead`), 0, 'nothing dead-lettered');
  assert.equal(await queueCount(`${c.queue}.parked`), 0, 'nothing parked');
  const wasted = await sumMetric(c.nodes, 'warren_cluster_wasted_total');
  figures.never_restarted = { lost: r2.missing.length, leaked: r2.leaked, duplicates: r2.duplicates, reconnect_ms: reconnectMs, flow_after_reconnect_ms: flow };
  report(t, 'cluster-kill9', { ...figures, wasted });
  assert.equal(r2.leaked, 0);
  assert.deepEqual(r2.missing, [], 'pairs never delivered with node 3 gone');
});

test('scenario 26: a rolling restart of every node under load: lost 0', { timeout: 240000 }, async (t) => {
  const c = await startCluster(3, { name: 'cl-26' });
  const users = Array.from({ length: 12 }, (_, i) => `ru${i}`);
  const devices = [];
  for (const [i, u] of users.entries()) devices.push(await device(c, c.nodes[i % 3], u, { reconnect: true }));
  const published = await underLoad(c, users, { total: FULL ? 1500 : 600, rate: 100, seed: 27, prefix: 'cl26' }, async () => {
    for (const w of c.nodes) {
      await w.stop('SIGTERM');
      await w.start();
      await sleep(300);
    }
    if (CLUSTER_CTL) {
      // Broker node 2 stops and comes back; the warren node connected to
      // it reconnects when it returns.
      clusterCtl(2, 'stop_app');
      await sleep(3000);
      clusterCtl(2, 'start_app');
    }
  });
  const r = await waitAllDelivered(c, devices, published, users, 40000);
  report(t, 'cluster-rolling', { broker_nodes: BROKER_URLS.length || 1, broker_node_stopped: !!CLUSTER_CTL, lost: r.missing.length, leaked: r.leaked, duplicates: r.duplicates, wasted: await sumMetric(c.nodes, 'warren_cluster_wasted_total') });
  assert.equal(r.leaked, 0);
  assert.deepEqual(r.missing, []);
});
