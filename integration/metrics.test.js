// Admin endpoints (README.md, "Operating"): /metrics after real traffic (delivered,
// mailed and replayed, poison; without mailboxes retried and parked; a mailbox
// item never acked, parked) has the counts a user would expect, promtool
// accepts it, a real Prometheus server scrapes it; /api/stats carries the same
// figures with p50/p99; what both expose (families, labels, HELP, TYPE, JSON
// keys and their types) is exactly integration/metrics-schema.txt; /readyz is
// 503 while the broker is away and while draining.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import {
  startWarren,
  cleanupAll,
  connectClient,
  openSocket,
  Publisher,
  waitFor,
  httpGet,
  freePort,
  brokerCtl,
  closeAmqp,
  ensureBroker,
  queueCounts,
  signJwt,
  sleep,
  INTEGRATION_DIR,
} from './lib/index.js';

after(cleanupAll);

// Parses Prometheus text format into { 'name{a="b"}': value } (labels in the
// order warren prints them) plus the TYPE of every family.
function parseMetrics(text) {
  const values = {};
  const types = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types[name] = type;
    } else if (line && !line.startsWith('#')) {
      const i = line.lastIndexOf(' ');
      values[line.slice(0, i)] = Number(line.slice(i + 1));
    }
  }
  return { values, types };
}

// The shape of both endpoints, values left out: every HELP and TYPE line
// and every sample's name and labels of /metrics (the test's queue name and
// the version replaced), every key path of /api/stats with its JSON type
// (array elements as `key[]`, merged).
function schemaOf(metricsText, stats, queue) {
  const lines = new Set();
  for (const line of metricsText.split('\n')) {
    if (!line) continue;
    const entry = line.startsWith('#') ? line : line.slice(0, line.lastIndexOf(' '));
    lines.add(`/metrics ${entry.replaceAll(`queue="${queue}`, 'queue="Q').replace(/version="[^"]*"/, 'version="*"')}`);
  }
  const walk = (v, p) => {
    const type = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
    lines.add(`/api/stats ${p} ${type}`);
    if (type === 'array') for (const x of v) walk(x, `${p}[]`);
    if (type === 'object') for (const [k, x] of Object.entries(v)) walk(x, p ? `${p}.${k}` : k);
  };
  for (const [k, x] of Object.entries(stats)) walk(x, k);
  return [...lines].sort();
}

const SCHEMA_FILE = path.join(INTEGRATION_DIR, 'metrics-schema.txt');

async function scrape(w) {
  const r = await httpGet(`${w.adminUrl}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return { text: r.body, ...parseMetrics(r.body) };
}

let w;
let client;

before(async () => {
  // Mailboxes on (the default): an offline user's notifications wait in
  // their mailbox. The ladder settings only matter for a mailbox copy the
  // broker refuses.
  w = await startWarren({
    name: 'metrics',
    config: {
      amqp: { retry_delays_ms: '300,600', max_attempts: 2 },
      admin: { queue_poll_ms: 200 },
    },
  });
});

// Scrapes until pred(values) holds; the error shows the samples matching
// show, so a count that never arrives says where it stopped.
async function scrapeUntil(d, pred, show, what) {
  let seen = {};
  return waitFor(
    async () => {
      const s = await scrape(d);
      seen = Object.fromEntries(Object.entries(s.values).filter(([k]) => show.test(k)));
      return pred(s.values) ? s : false;
    },
    { timeout: 20000, what },
  ).catch((err) => {
    err.message += `\nlast scrape: ${JSON.stringify(seen)}`;
    throw err;
  });
}

function assertValues(v, expect) {
  for (const [k, want] of Object.entries(expect)) assert.equal(v[k], want, `${k} = ${v[k]}, expected ${want}`);
}

test('/metrics counts real traffic: delivered, mailed, replayed, dead-lettered', { timeout: 60000 }, async () => {
  client = await connectClient(w.wsUrl(), await w.token('alice'), { name: 'alice' });
  // A refused handshake is counted too.
  const refused = await openSocket(w.wsUrl(), signJwt({ sub: 'x', exp: Math.floor(Date.now() / 1000) + 60 }, 'wrong-secret-wrong-secret'));
  assert.equal(refused.status, 401);

  const pub = await Publisher.open();
  const now = Date.now();
  await pub.publishAll(w.exchange, [
    { id: 'j1', user_id: 'alice', title: 'a' },
    { id: 'j2', user_id: 'alice', title: 'b' },
    { id: 'j3', user_id: 'alice', title: 'c' },
    // Latency counts from created_at: unix ms here, unix seconds below.
    { id: 'j4', user_id: 'alice', title: 'd', created_at: now - 2000 },
    { id: 'j5', user_id: 'alice', title: 'e', created_at: (now - 2000) / 1000 },
    // Offline: bob has no mailbox yet; warren makes it, then mails b1 into it.
    { id: 'b1', user_id: 'bob', title: 'offline' },
  ]);
  await pub.publishAll(w.exchange, [{ id: 'm1', user_id: 'alice' }, { id: 'm2', user_id: 'alice' }], { format: 'msgpack' });
  await pub.publishRaw(w.exchange, Buffer.from('{not json'), { contentType: 'application/json' });
  await pub.publishRaw(w.exchange, Buffer.from('{"title":"nobody"}'), { contentType: 'application/json' });
  await pub.confirmed();
  await pub.close();

  await client.waitForIds(['j1', 'j2', 'j3', 'j4', 'j5', 'm1', 'm2']);
  const deadQ = w.deadQueue;
  const parkedQ = w.parkedQueue;
  const newQ = `${w.queue}.mailbox.new`;
  const show = /parked_total|acks_total|queue_messages|unacked|mailbox/;
  const m = await scrapeUntil(
    w,
    (v) =>
      v.warren_mailbox_puts_total === 1 &&
      v['warren_client_acks_total{matched="true"}'] === 7 &&
      v[`warren_queue_messages{queue="${newQ}",role="mailbox_new"}`] === 0 &&
      v[`warren_queue_messages{queue="${deadQ}",role="dead"}`] === 2 &&
      v.warren_amqp_unacked === 0,
    show,
    'counters after the traffic settled',
  );
  const v = m.values;
  assertValues(v, {
    warren_connections: 1,
    warren_users_online: 1,
    warren_ready: 1,
    warren_amqp_connected: 1,
    'warren_handshakes_total{outcome="accepted"}': 1,
    'warren_handshakes_total{outcome="unauthorized"}': 1,
    'warren_notifications_consumed_total{format="json"}': 6,
    'warren_notifications_consumed_total{format="msgpack"}': 2,
    warren_notifications_delivered_total: 7,
    'warren_targets_total{outcome="delivered"}': 7,
    'warren_targets_total{outcome="offline"}': 1,
    'warren_client_acks_total{matched="true"}': 7,
    // One mailbox copy, confirmed: warren made bob's mailbox before it.
    warren_mailbox_copies_total: 1,
    warren_mailbox_puts_total: 1,
    warren_mailbox_fallbacks_total: 0,
    warren_mailboxes_created_total: 1,
    'warren_mailboxes{state="known"}': 1,
    'warren_mailboxes{state="consumed"}': 0,
    // alice connected: does she have a mailbox? (She has none.)
    warren_mailbox_probes_total: 1,
    warren_mailbox_items_total: 0,
    warren_mailbox_replay_seconds_count: 0,
    'warren_mailbox_rejected_total{reason="not_addressed"}': 0,
    'warren_mailbox_rejected_total{reason="no_user"}': 0,
    // Nothing went to the ladder or was parked.
    'warren_retried_total{step="1",delay_ms="300"}': 0,
    'warren_retried_total{step="2",delay_ms="600"}': 0,
    'warren_parked_total{reason="max_attempts"}': 0,
    'warren_parked_total{reason="expired"}': 0,
    'warren_parked_total{reason="unacked"}': 0,
    'warren_dead_lettered_total{reason="bad_json"}': 1,
    'warren_dead_lettered_total{reason="no_target"}': 1,
    'warren_dead_lettered_total{reason="too_large"}': 0,
    'warren_amqp_nacked_total{requeue="false"}': 2,
    // 7 delivered + bob's original (after its mailbox copy was confirmed).
    warren_amqp_acked_total: 8,
    warren_amqp_published_total: 1,
    warren_amqp_reconnects_total: 0,
    warren_delivery_latency_seconds_count: 7,
    'warren_delivery_latency_seconds_bucket{le="+Inf"}': 7,
    [`warren_queue_messages{queue="${w.queue}",role="main"}`]: 0,
    [`warren_queue_consumers{queue="${w.queue}",role="main"}`]: 1,
    [`warren_queue_messages{queue="${parkedQ}",role="parked"}`]: 0,
    [`warren_queue_messages{queue="${deadQ}",role="dead"}`]: 2,
    [`warren_queue_messages{queue="${w.queue}.retry.300",role="retry"}`]: 0,
    [`warren_queue_consumers{queue="${w.queue}.retry.600",role="retry"}`]: 0,
    // The AMQP thread consumes Q.mailbox.new itself.
    [`warren_queue_consumers{queue="${newQ}",role="mailbox_new"}`]: 1,
    'warren_ring_depth{ring="delivery"}': 0,
  });
  // Acks coalesce: at least one frame, never more frames than messages acked.
  assert.ok(v.warren_amqp_ack_frames_total >= 1 && v.warren_amqp_ack_frames_total <= v.warren_amqp_acked_total,
    `ack frames ${v.warren_amqp_ack_frames_total} for ${v.warren_amqp_acked_total} acks`);
  // The loop timing histograms saw the iterations that did this work: both
  // count every iteration, and each has a maximum.
  assert.ok(v.warren_loop_busy_seconds_count > 0, 'no loop iteration measured');
  assert.equal(v.warren_loop_cpu_seconds_count, v.warren_loop_busy_seconds_count);
  assert.equal(v['warren_loop_busy_seconds_bucket{le="+Inf"}'], v.warren_loop_busy_seconds_count);
  assert.ok(v.warren_loop_busy_max_seconds > 0 && v.warren_loop_cpu_max_seconds > 0);

  // The two with created_at 2 s in the past are the only ones over 1 s.
  assert.equal(v['warren_delivery_latency_seconds_bucket{le="1"}'], 5, 'five fast deliveries');
  assert.equal(v['warren_delivery_latency_seconds_bucket{le="5"}'], 7, 'two at ~2 s, from created_at (ms and s)');
  assert.ok(v.warren_delivery_latency_seconds_sum >= 4, `latency sum ${v.warren_delivery_latency_seconds_sum} s includes 2 × ~2 s`);

  // Standard process metrics, read from /proc at scrape time.
  assert.ok(v.process_resident_memory_bytes > 1e6, 'RSS');
  assert.ok(v.process_open_fds >= 5, 'open fds');
  assert.ok(v.process_cpu_seconds_total >= 0, 'cpu');
  assert.ok(Math.abs(v.process_start_time_seconds - Date.now() / 1000) < 300, 'start time is recent');
  assert.equal(m.types.warren_delivery_latency_seconds, 'histogram');
  assert.equal(m.types.warren_mailbox_replay_seconds, 'histogram');
  assert.equal(m.types.warren_handshakes_total, 'counter');
  assert.equal(m.types.warren_mailboxes, 'gauge');
  assert.equal(m.types.warren_connections, 'gauge');

  // bob comes back: his mailbox is consumed and replays b1 at once.
  const bob = await connectClient(w.wsUrl(), await w.token('bob'), { name: 'bob' });
  await bob.waitForIds(['b1']);
  const r = await scrapeUntil(
    w,
    (x) => x.warren_mailbox_replay_seconds_count === 1 && x.warren_amqp_acked_total === 9 && x.warren_amqp_unacked === 0,
    show,
    "bob's replay counted and acked",
  );
  assertValues(r.values, {
    warren_users_online: 2,
    warren_mailbox_items_total: 1,
    'warren_mailboxes{state="known"}': 1,
    'warren_mailboxes{state="consumed"}': 1,
    warren_mailbox_puts_total: 1,
    warren_mailbox_requeued_total: 0,
    warren_mailbox_redelivered_total: 0,
    warren_mailbox_pauses_total: 0,
    warren_notifications_delivered_total: 8,
    'warren_targets_total{outcome="delivered"}': 8,
    // From bob's connection to b1 on the wire: well under a second.
    'warren_mailbox_replay_seconds_bucket{le="1"}': 1,
    warren_delivery_latency_seconds_count: 8,
  });
  assert.ok(r.values.warren_mailbox_replay_seconds_sum >= 0 && r.values.warren_mailbox_replay_seconds_sum < 1);
  // Nothing was parked or left in bob's mailbox.
  assert.deepEqual(await queueCounts([parkedQ, `${w.queue}.mbox.u.bob`]), { [parkedQ]: 0, [`${w.queue}.mbox.u.bob`]: 0 });
});

test('promtool check metrics accepts /metrics without errors or lint warnings', { timeout: 20000 }, async (t) => {
  if (!fs.existsSync('/usr/bin/promtool')) {
    t.skip('promtool not installed (Debian package prometheus)');
    return;
  }
  const { text } = await scrape(w);
  const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 15000 });
  assert.equal(r.status, 0, `promtool exit ${r.status}: ${r.stdout}${r.stderr}`);
  assert.equal((r.stdout + r.stderr).trim(), '', `promtool said: ${r.stdout}${r.stderr}`);
});

test('/api/stats carries the same figures, p50/p99, mailboxes and queue depths', async () => {
  const s = await w.stats();
  assert.equal(s.ready, true);
  assert.equal(s.connections, 2);
  assert.equal(s.delivered, 8);
  // 8 from the queue (bad ones are dead-lettered, not consumed) + b1 from bob's mailbox.
  assert.equal(s.consumed, 9);
  assert.equal(s.retried, 0);
  assert.equal(s.parked, 0);
  assert.deepEqual(s.parked_by_reason, { max_attempts: 0, expired: 0, unacked: 0 });
  assert.equal(s.dead_lettered, 2);
  assert.equal(s.dead_lettered_by_reason.bad_json, 1);
  assert.equal(s.handshakes.unauthorized, 1);
  assert.equal(s.mailbox.copies, 1);
  assert.equal(s.mailbox.puts, 1);
  assert.equal(s.mailbox.created, 1);
  assert.equal(s.mailbox.items, 1);
  assert.equal(s.mailbox.known, 1);
  assert.equal(s.mailbox.consumed, 1);
  assert.equal(s.mailbox_replay.count, 1);
  assert.ok(s.mailbox_replay.p50_ms >= 0 && s.mailbox_replay.p50_ms <= 1000, `replay p50 ${s.mailbox_replay.p50_ms}`);
  assert.equal(s.latency.count, 8);
  // Six fast (< 1 s) and two at ~2 s: the median is fast, p99 is ~2 s.
  assert.ok(s.latency.p50_ms >= 0 && s.latency.p50_ms <= 1000, `p50 ${s.latency.p50_ms}`);
  assert.ok(s.latency.p99_ms > 1000 && s.latency.p99_ms <= 2500, `p99 ${s.latency.p99_ms}`);
  assert.equal(s.latency.buckets.reduce((a, b) => a + b, 0), 8);
  const roles = Object.fromEntries(s.queues.map((q) => [q.role + (q.role === 'retry' ? q.name.slice(-4) : ''), q]));
  assert.equal(roles.main.consumers, 1);
  assert.equal(roles.mailbox_new.name, `${w.queue}.mailbox.new`);
  assert.equal(roles.mailbox_new.messages, 0);
  assert.ok(roles.dead && roles.parked && s.queues.filter((q) => q.role === 'retry').length === 2, JSON.stringify(s.queues));
  assert.ok(s.process.rss_bytes > 0 && s.process.open_fds > 0);
  // delivered is a monotonic counter: it never goes down between polls.
  const again = await w.stats();
  assert.ok(again.delivered >= s.delivered);
});

test('without mailboxes an offline user goes to the ladder: retried, then parked', { timeout: 60000 }, async () => {
  const wl = await startWarren({
    name: 'metrics-ladder',
    config: {
      amqp: { retry_delays_ms: '300,600', max_attempts: 2 },
      admin: { queue_poll_ms: 200 },
      mailbox: { enabled: false },
    },
  });
  const pub = await Publisher.open();
  await pub.publishAll(wl.exchange, [{ id: 'b1', user_id: 'bob', title: 'offline' }]);
  await pub.close();
  const m = await scrapeUntil(
    wl,
    (v) =>
      v['warren_parked_total{reason="max_attempts"}'] === 1 &&
      v[`warren_queue_messages{queue="${wl.parkedQueue}",role="parked"}`] === 1 &&
      v.warren_amqp_unacked === 0,
    /parked_total|retried|queue_messages|unacked|mailbox/,
    'b1 retried once, then parked',
  );
  assertValues(m.values, {
    // The original and its ladder copy: attempt 1 goes to step 1, attempt 2
    // reaches amqp.max_attempts and is parked.
    'warren_notifications_consumed_total{format="json"}': 2,
    'warren_targets_total{outcome="offline"}': 2,
    'warren_retried_total{step="1",delay_ms="300"}': 1,
    'warren_retried_total{step="2",delay_ms="600"}': 0,
    'warren_parked_total{reason="max_attempts"}': 1,
    'warren_parked_total{reason="expired"}': 0,
    'warren_parked_total{reason="unacked"}': 0,
    warren_amqp_published_total: 2,
    warren_amqp_acked_total: 2,
    warren_mailbox_copies_total: 0,
    warren_mailbox_puts_total: 0,
    'warren_mailboxes{state="known"}': 0,
    warren_mailbox_probes_total: 0,
  });
  // Q.mailbox.new does not exist without mailboxes, so it is not polled.
  assert.deepEqual(Object.keys(m.values).filter((k) => k.includes('mailbox_new')), []);
  const parked = await wl.drain(wl.parkedQueue);
  assert.deepEqual(parked.map((x) => [x.id, x.headers['x-warren-reason']]), [['b1', 'max_attempts']]);
  await wl.stop();
});

test('with the most retry delays a config allows, every queue is still polled', { timeout: 30000 }, async () => {
  // 32 distinct delays: Q, 32 retry queues, Q.parked, Q.dead and Q.mailbox.new.
  const delays = Array.from({ length: 32 }, (_, i) => 1000 + i);
  const wm = await startWarren({ name: 'metrics-maxdelays', config: { amqp: { retry_delays_ms: delays.join(',') }, admin: { queue_poll_ms: 200 } } });
  try {
    const s = await waitFor(async () => {
      const x = await wm.stats();
      return x.queues.length > 0 && x.queues.every((q) => q.messages >= 0) ? x : false;
    }, { timeout: 10000, what: 'queue depths polled' });
    const roles = s.queues.map((q) => q.role);
    assert.equal(roles.filter((r) => r === 'retry').length, 32, JSON.stringify(roles));
    for (const r of ['main', 'parked', 'dead', 'mailbox_new']) assert.equal(roles.filter((x) => x === r).length, 1, `${r} in ${roles}`);
  } finally {
    await wm.stop();
  }
});

test('a mailbox item its user never acks is redelivered, paused, then parked as unacked', { timeout: 60000 }, async () => {
  const wu = await startWarren({
    name: 'metrics-unacked',
    config: { ack: { timeout_ms: 1000 }, admin: { queue_poll_ms: 200 }, mailbox: { max_redeliveries: 2 } },
  });
  const pub = await Publisher.open();
  await pub.publishAll(wu.exchange, [{ id: 'c1', user_id: 'carol', title: 'never acked' }]);
  await pub.close();
  await scrapeUntil(wu, (v) => v.warren_mailbox_puts_total === 1 && v.warren_amqp_unacked === 0, /mailbox/, 'c1 in carol\'s mailbox');
  // carol's client receives but never acks: each ack timeout requeues c1
  // and pauses her mailbox; the second one parks it.
  const carol = await connectClient(wu.wsUrl(), await wu.token('carol'), { name: 'carol', autoAck: false });
  await carol.waitForIds(['c1']);
  const m = await scrapeUntil(
    wu,
    (v) => v['warren_parked_total{reason="unacked"}'] === 1 && v[`warren_queue_messages{queue="${wu.parkedQueue}",role="parked"}`] === 1,
    /parked_total|mailbox|ack_timeouts|queue_messages/,
    'c1 parked as unacked',
  );
  const v = m.values;
  assertValues(v, {
    warren_mailbox_items_total: 2,
    warren_mailbox_redelivered_total: 2,
    warren_mailbox_requeued_total: 1,
    warren_ack_timeouts_total: 2,
    'warren_parked_total{reason="max_attempts"}': 0,
    'warren_parked_total{reason="unacked"}': 1,
    'warren_client_acks_total{matched="true"}': 0,
  });
  assert.ok(v.warren_mailbox_pauses_total >= 1, `pauses ${v.warren_mailbox_pauses_total}`);
  assert.equal(carol.notifications.filter((n) => n.id === 'c1').length, 2, 'c1 reached carol twice');
  const s = await wu.stats();
  assert.equal(s.parked, 1);
  assert.equal(s.parked_by_reason.unacked, 1);
  assert.equal(s.mailbox.redelivered, 2);
  const parked = await wu.drain(wu.parkedQueue);
  assert.deepEqual(parked.map((x) => [x.id, x.headers['x-warren-reason']]), [['c1', 'unacked']]);
  carol.close();
  await wu.stop();
});

// Dashboards, Grafana panels, alerts and web/dashboard.html depend on these
// names: a change to them must be deliberate, so it shows as a change to the
// schema file (regenerate with WARREN_UPDATE_SCHEMA=1 and review the diff).
test('/metrics and /api/stats expose exactly the families, labels and keys of metrics-schema.txt', async () => {
  const { text } = await scrape(w);
  const got = schemaOf(text, await w.stats(), w.queue);
  if (process.env.WARREN_UPDATE_SCHEMA === '1') {
    const head = [
      '// What /metrics and /api/stats expose after the traffic of integration/metrics.test.js,',
      '// values left out; checked by that test, regenerated with WARREN_UPDATE_SCHEMA=1.',
    ];
    fs.writeFileSync(SCHEMA_FILE, [...head, ...got, ''].join('\n'));
  }
  const want = fs.readFileSync(SCHEMA_FILE, 'utf8').split('\n').filter((l) => l && !l.startsWith('//'));
  const missing = want.filter((l) => !got.includes(l));
  const extra = got.filter((l) => !want.includes(l));
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] });
  assert.ok(want.length > 250, `schema has only ${want.length} lines`);
});

test('a real Prometheus server scrapes warren and answers a query', { timeout: 60000 }, async (t) => {
  if (!fs.existsSync('/usr/bin/prometheus')) {
    t.skip('prometheus not installed');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-prom-'));
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: warren\n    static_configs:\n      - targets: ['127.0.0.1:${w.adminPort}']\n`,
  );
  const log = fs.openSync(path.join(dir, 'prometheus.log'), 'a');
  const prom = spawn(
    '/usr/bin/prometheus',
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  const exited = new Promise((r) => prom.on('exit', r));
  try {
    const api = `http://127.0.0.1:${port}/api/v1/query?query=`;
    const result = await waitFor(
      async () => {
        const r = await httpGet(api + 'warren_connections', 2000);
        if (r.status !== 200) return false;
        const j = JSON.parse(r.body);
        return j.status === 'success' && j.data.result.length ? j.data.result : false;
      },
      { timeout: 40000, interval: 500, what: 'Prometheus to return warren_connections' },
    );
    // alice and bob, still connected from the first test.
    assert.equal(result[0].value[1], '2', `warren_connections = ${JSON.stringify(result)}`);
    const up = JSON.parse((await httpGet(api + 'up{job="warren"}')).body);
    assert.equal(up.data.result[0].value[1], '1');
    const puts = JSON.parse((await httpGet(api + 'warren_mailbox_puts_total')).body);
    assert.equal(puts.data.result[0].value[1], '1');
    const known = JSON.parse((await httpGet(api + encodeURIComponent('warren_mailboxes{state="known"}'))).body);
    assert.equal(known.data.result[0].value[1], '1');
  } catch (err) {
    err.message += `\n--- prometheus.log ---\n${fs.readFileSync(path.join(dir, 'prometheus.log'), 'utf8').slice(-3000)}`;
    throw err;
  } finally {
    prom.kill('SIGTERM');
    const timer = setTimeout(() => prom.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// The header lines of one raw HTTP/1.0 response (fetch would fold repeated
// headers into one value and hide a duplicate).
function rawHeadLines(url) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname);
    let buf = '';
    s.setTimeout(3000, () => s.destroy(new Error(`no answer from ${url}`)));
    s.on('connect', () => s.write(`GET ${u.pathname} HTTP/1.0\r\nHost: ${u.host}\r\n\r\n`));
    s.on('data', (d) => (buf += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve(buf.split('\r\n\r\n')[0].split('\r\n')));
  });
}

test('every admin response names each header once, Cache-Control: no-store among them', async () => {
  for (const p of ['/readyz', '/healthz', '/api/stats', '/metrics', '/dashboard']) {
    const lines = await rawHeadLines(`${w.adminUrl}${p}`);
    assert.match(lines[0], /^HTTP\/1\.1 200 /, `${p}: ${lines[0]}`);
    const names = lines.slice(1).map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    const repeated = names.filter((n, i) => names.indexOf(n) !== i);
    assert.deepEqual(repeated, [], `${p} repeats ${repeated.join(', ')}:\n${lines.join('\n')}`);
    assert.ok(lines.includes('Cache-Control: no-store'), `${p} has Cache-Control: no-store`);
  }
});

test('/readyz is 503 while the broker is away, 200 once consuming again', { timeout: 90000 }, async (t) => {
  const b = await ensureBroker();
  if (!b.dir || !b.port) {
    t.skip('WARREN_TEST_BROKER_DIR/PORT unknown: cannot drive rabbitmqctl');
    return;
  }
  assert.equal(await w.readyz(), 200);
  await closeAmqp();
  brokerCtl('stop_app');
  try {
    await waitFor(async () => (await w.readyz()) === 503, { timeout: 20000, what: '/readyz 503 with the broker stopped' });
    const body = (await httpGet(`${w.adminUrl}/readyz`)).body;
    assert.match(body, /not consuming/);
    const { values } = await scrape(w);
    assert.equal(values.warren_amqp_connected, 0);
    assert.equal(values.warren_ready, 0);
    assert.equal((await httpGet(`${w.adminUrl}/healthz`)).status, 200, 'still alive');
  } finally {
    brokerCtl('start_app');
  }
  await waitFor(async () => (await w.readyz()) === 200, { timeout: 60000, interval: 200, what: '/readyz 200 after start_app' });
  const { values } = await scrape(w);
  assert.ok(values.warren_amqp_reconnects_total >= 1, 'reconnect counted');
  assert.ok(client.connected, 'the client stayed connected');
});

test('/readyz is 503 while draining after SIGTERM', { timeout: 30000 }, async () => {
  // A notification that is never acked keeps the drain going.
  const holder = await connectClient(w.wsUrl(), await w.token('holder'), { name: 'holder', autoAck: false });
  const pub = await Publisher.open();
  await pub.publishAll(w.exchange, [{ id: 'held', user_id: 'holder' }]);
  await pub.close();
  await holder.waitForIds(['held']);
  w.proc.kill('SIGTERM');
  const r = await waitFor(
    async () => {
      const x = await httpGet(`${w.adminUrl}/readyz`, 1000);
      return x.status === 503 ? x : false;
    },
    { timeout: 2500, interval: 20, what: '/readyz 503 during the drain' },
  );
  assert.match(r.body, /draining/);
  const s = await w.stats();
  assert.equal(s.draining, true);
  const exit = await w.exited;
  assert.equal(exit.code, 0);
  await sleep(10);
});
