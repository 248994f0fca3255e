// The command line: `warren publish` delivers to a connected client,
// `--check-config` names the bad key, `--version` and `token` work, `warren
// status` shows a running daemon's figures and fails clearly without one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import {
  startWarren, cleanupAll, connectClient, runWarren, waitFor, Publisher, freePort, ARTIFACTS_DIR, randomHex, routingFieldsIn,
} from './lib/index.js';

let w;
before(async () => {
  w = await startWarren({ name: 'cli' });
});
after(cleanupAll);

test('warren publish --user delivers to a connected client', { timeout: 30000 }, async () => {
  const user = 'cli-user';
  const c = await connectClient(w.wsUrl(), await w.token(user));
  const id = `cli-${Date.now()}`;
  const r = await w.publishCli([
    '--user', user, '--title', 'Hello', '--content', 'It works',
    '--data', '{"order":42,"tags":["a","b"]}', '--type', 'order.paid', '--id', id,
  ]);
  assert.equal(r.code, 0, `publish exit ${r.code}: ${r.stderr}`);
  await c.waitForIds([id]);
  const m = c.notifications.find((n) => n.id === id);
  assert.equal(m.type, 'order.paid');
  assert.equal(m.title, 'Hello');
  assert.equal(m.content, 'It works');
  assert.deepEqual(m.data, { order: 42, tags: ['a', 'b'] });
  assert.deepEqual(routingFieldsIn(m), []);
  c.close();
});

test('warren publish --msgpack --users A,B reaches both users', { timeout: 30000 }, async () => {
  const a = await connectClient(w.wsUrl(), await w.token('cli-a'), { protocol: 'warren.msgpack' });
  const b = await connectClient(w.wsUrl(), await w.token('cli-b'));
  const id = `climp-${Date.now()}`;
  const r = await w.publishCli(['--users', 'cli-a,cli-b', '--title', 'T', '--content', 'C', '--id', id, '--msgpack']);
  assert.equal(r.code, 0, `publish exit ${r.code}: ${r.stderr}`);
  await a.waitForIds([id]);
  await b.waitForIds([id]);
  assert.equal(a.notifications.find((n) => n.id === id).title, 'T');
  a.close();
  b.close();
});

test('warren publish --broadcast reaches a connected client', { timeout: 30000 }, async () => {
  const c = await connectClient(w.wsUrl(), await w.token('cli-bc'));
  const id = `clibc-${Date.now()}`;
  const r = await w.publishCli(['--broadcast', '--title', 'All', '--content', 'hands', '--id', id]);
  assert.equal(r.code, 0, `publish exit ${r.code}: ${r.stderr}`);
  await c.waitForIds([id]);
  c.close();
});

test('warren publish fails (non-zero) when the broker cannot be reached', { timeout: 30000 }, async () => {
  const args = ['--user', 'nobody-online', '--title', 't', '--content', 'c'];
  // The same command succeeds against the real broker, so the failure below
  // is the broker's absence and nothing else.
  const ok = await w.publishCli(args);
  assert.equal(ok.code, 0, `publish exit ${ok.code}: ${ok.stderr}`);
  const r = await w.publishCli(args, { env: { WARREN_AMQP_URL: 'amqp://guest:guest@127.0.0.1:1/' } });
  assert.notEqual(r.code, 0, 'publish to a dead broker reported success');
});

test('warren publish fails (non-zero) when the exchange does not exist', { timeout: 30000 }, async () => {
  const r = await w.publishCli(['--user', 'x', '--title', 't', '--content', 'c'], {
    env: { WARREN_AMQP_EXCHANGE: `no-such-exchange-${randomHex()}` },
  });
  assert.notEqual(r.code, 0, 'publish to a missing exchange reported success');
});

// The brief's spelling: options of the subcommand may include --config.
test('`warren token --user U --config F` and `warren publish --config F …` accept --config after the subcommand', { timeout: 30000 }, async () => {
  const t = await runWarren(['token', '--user', 'late-config', '--config', w.iniFile]);
  assert.equal(t.code, 0, `token exit ${t.code}: ${t.stderr}`);
  const c = await connectClient(w.wsUrl(), t.stdout.trim());
  assert.equal(c.welcome.user_id, 'late-config');
  const id = `late-${Date.now()}`;
  const p = await runWarren(['publish', '--config', w.iniFile, '--user', 'late-config', '--title', 'T', '--content', 'C', '--id', id]);
  assert.equal(p.code, 0, `publish exit ${p.code}: ${p.stderr}`);
  await c.waitForIds([id]);
  c.close();
});

test('--check-config rejects amqp.prefetch=abc and names the key', async () => {
  const ini = path.join(ARTIFACTS_DIR, `bad-${randomHex()}.ini`);
  fs.writeFileSync(ini, `[auth]\njwt_secret = ${randomHex(24)}\n[amqp]\nprefetch = abc\n`);
  const r = await runWarren(['--check-config', '--config', ini]);
  assert.equal(r.code, 2, `exit ${r.code}, stderr: ${r.stderr}`);
  assert.match(r.stderr + r.stdout, /prefetch/, 'error does not name the key');
});

test('--check-config rejects a bad value given by environment', async () => {
  const r = await runWarren(['--check-config', '--config', w.iniFile], { env: { WARREN_AMQP_PREFETCH: 'abc' } });
  assert.equal(r.code, 2, `exit ${r.code}, stderr: ${r.stderr}`);
  assert.match(r.stderr + r.stdout, /prefetch/);
});

test('--check-config rejects auth.require_exp=maybe, naming the key and the accepted values', async () => {
  const ini = path.join(ARTIFACTS_DIR, `bad-${randomHex()}.ini`);
  fs.writeFileSync(ini, `[auth]\njwt_secret = ${randomHex(24)}\nrequire_exp = maybe\n`);
  const r = await runWarren(['--check-config', '--config', ini]);
  assert.equal(r.code, 2, `exit ${r.code}, stderr: ${r.stderr}`);
  assert.match(r.stderr, /:3: auth\.require_exp: invalid value "maybe" \(expected true, false/);
  const ok = await runWarren(['--check-config', '--config', w.iniFile], { env: { WARREN_AUTH_REQUIRE_EXP: 'false' } });
  assert.equal(ok.code, 0, `exit ${ok.code}, stderr: ${ok.stderr}`);
});

test('--check-config accepts a valid file', async () => {
  const r = await runWarren(['--check-config', '--config', w.iniFile]);
  assert.equal(r.code, 0, `exit ${r.code}, stderr: ${r.stderr}`);
});

test('--version prints the version and exits 0', async () => {
  const r = await runWarren(['--version']);
  assert.equal(r.code, 0);
  assert.match(r.stdout + r.stderr, /\d+\.\d+\.\d+/);
});

test('--help exits 0 and mentions publish and status', async () => {
  const r = await runWarren(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout + r.stderr, /publish/);
  assert.match(r.stdout + r.stderr, /status \[--json\]/);
});

test('warren token prints a JWT for the user', async () => {
  const r = await runWarren(['--config', w.iniFile, 'token', '--user', 'tok-user', '--ttl', '120']);
  assert.equal(r.code, 0, r.stderr);
  const parts = r.stdout.trim().split('.');
  assert.equal(parts.length, 3);
  const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
  const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  assert.equal(header.alg, 'HS256');
  assert.equal(payload.sub, 'tok-user');
  const ttl = payload.exp - Math.floor(Date.now() / 1000);
  assert.ok(ttl > 100 && ttl <= 121, `exp is ${ttl} s away, expected ~120`);
});

test('/healthz 200 and /api/stats is JSON', async () => {
  const h = await fetch(`${w.adminUrl}/healthz`);
  assert.equal(h.status, 200);
  const s = await fetch(`${w.adminUrl}/api/stats`);
  assert.equal(s.status, 200);
  const body = await s.json();
  assert.equal(typeof body, 'object');
});

// The table's row for label: the figures after it, split on runs of spaces.
function tableRow(text, label) {
  const line = text.split('\n').find((l) => l.startsWith(`  ${label}  `) || l === `  ${label}`);
  assert.ok(line, `no row "${label}" in:\n${text}`);
  return line.slice(2 + label.length).trim().split(/\s{2,}/);
}

test('warren status prints the running daemon\'s figures as a table; --json as /api/stats has them', { timeout: 60000 }, async (t) => {
  const ws = await startWarren({ name: 'status', config: { admin: { queue_poll_ms: 200 } } });
  const online = await connectClient(ws.wsUrl(), await ws.token('st-online'));
  const pub = await Publisher.open();
  await pub.publishAll(ws.exchange, [
    { id: 's1', user_id: 'st-online', title: 'a' },
    { id: 's2', user_id: 'st-online', title: 'b' },
    { id: 's3', user_id: 'st-away', title: 'waits in a mailbox' },
  ]);
  await pub.publishRaw(ws.exchange, Buffer.from('{"title": "broken'), { contentType: 'application/json' });
  await pub.confirmed();
  await pub.close();
  await online.waitForIds(['s1', 's2']);
  // Idle from here: every counter the table shows is final.
  const s = await waitFor(async () => {
    const x = await ws.stats();
    return x.mailbox.puts === 1 && x.client_acks === 2 && x.amqp_unacked === 0 && x.dead_lettered === 1 &&
      x.queues.some((q) => q.role === 'dead' && q.messages === 1)
      ? x
      : false;
  }, { timeout: 20000, what: 'traffic settled' });

  const r = await runWarren(['--config', ws.iniFile, 'status']);
  assert.equal(r.code, 0, `status exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stderr, '');
  const out = r.stdout;
  t.diagnostic(`\n${out}`);
  assert.match(out.split('\n')[0], new RegExp(`^warren ${s.version.replaceAll('.', '\\.')} at 127\\.0\\.0\\.1:${ws.adminPort}: ready, up 0h 00m \\d\\ds$`));
  assert.deepEqual(tableRow(out, 'connections'), ['1']);
  assert.deepEqual(tableRow(out, 'users online'), ['1']);
  // Totals, then the rate since start (a positive number for non-zero totals).
  for (const [label, total] of [['consumed', 3], ['delivered (frames)', 2], ['client acks', 2], ['offline targets', 1]]) {
    const [n, rate] = tableRow(out, label);
    assert.equal(Number(n), total, `${label}: ${n}`);
    assert.ok(Number(rate) > 0, `${label} per s: ${rate}`);
  }
  // Dead-lettered by reason: only the reasons that happened.
  const [dead, deadRate, deadWhy] = tableRow(out, 'dead-lettered');
  assert.equal(dead, '1');
  assert.ok(Number(deadRate) > 0, `dead-lettered per s: ${deadRate}`);
  assert.equal(deadWhy, 'bad_json 1');
  assert.equal(tableRow(out, 'parked')[0], '0');
  // Latency: the same p50/p99 as /api/stats, in ms.
  const ms = (x) => {
    const m = x.match(/^(\d+\.\d+) (ms|s)$/);
    assert.ok(m, `a duration: ${x}`);
    return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  };
  const [p50, p99] = tableRow(out, 'delivery').map(ms);
  assert.ok(Math.abs(p50 - s.latency.p50_ms) < 0.01 + s.latency.p50_ms * 0.01, `p50 ${p50} vs ${s.latency.p50_ms}`);
  assert.ok(Math.abs(p99 - s.latency.p99_ms) < 0.01 + s.latency.p99_ms * 0.01, `p99 ${p99} vs ${s.latency.p99_ms}`);
  // Every polled queue, with its role, depth and consumers.
  for (const q of s.queues) {
    const line = out.split('\n').find((l) => l.endsWith(`  ${q.name}`));
    assert.ok(line, `queue ${q.name} missing from:\n${out}`);
    assert.deepEqual(line.trim().split(/\s+/), [q.role, String(q.messages), String(q.consumers), q.name]);
  }
  assert.ok(out.includes(`mailbox_new`) && out.includes(`${ws.queue}.mailbox.new`), 'Q.mailbox.new listed');
  assert.deepEqual(tableRow(out, 'known'), ['1']);
  assert.equal(tableRow(out, 'puts')[0], '1');
  assert.equal(tableRow(out, 'replayed items')[0], '0');
  assert.deepEqual(tableRow(out, 'connected'), ['yes']);
  assert.deepEqual(tableRow(out, 'reconnects'), ['0']);

  const j = await runWarren(['--config', ws.iniFile, 'status', '--json']);
  assert.equal(j.code, 0, j.stderr);
  const parsed = JSON.parse(j.stdout);
  assert.equal(parsed.version, s.version);
  assert.equal(parsed.delivered, s.delivered);
  assert.deepEqual(parsed.mailbox, s.mailbox);
  assert.deepEqual(Object.keys(parsed), Object.keys(s));
  online.close();

  // SIGTERM: the daemon is gone; status says so and exits 1, at once.
  await ws.stop();
  const t0 = Date.now();
  const gone = await runWarren(['--config', ws.iniFile, 'status']);
  assert.equal(gone.code, 1, `exit ${gone.code}: ${gone.stdout}${gone.stderr}`);
  assert.equal(gone.stdout, '');
  assert.match(gone.stderr, new RegExp(`^warren status: cannot connect to 127\\.0\\.0\\.1:${ws.adminPort}: Connection refused; is warren running with this configuration\\?\\n$`));
  assert.ok(Date.now() - t0 < 5000, 'status took over 5 s against a stopped daemon');
});

test('warren status exits 1 with a clear message when admin.listen is off', async () => {
  const r = await runWarren(['--config', w.iniFile, 'status'], { env: { WARREN_ADMIN_LISTEN: 'off' } });
  assert.equal(r.code, 1, `exit ${r.code}: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /^warren status: admin\.listen is off in this configuration/);
  // The same configuration with admin on reads the running daemon.
  const ok = await runWarren(['--config', w.iniFile, 'status']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /: ready, up /);
});

test('warren status gives up after 2 s on a port that accepts but never answers, and refuses a non-warren answer', { timeout: 30000 }, async () => {
  const silent = net.createServer(() => {});
  const port = await freePort();
  await new Promise((r) => silent.listen(port, '127.0.0.1', r));
  try {
    const t0 = Date.now();
    const r = await runWarren(['--config', w.iniFile, 'status'], { env: { WARREN_ADMIN_LISTEN: `127.0.0.1:${port}` } });
    const took = Date.now() - t0;
    assert.equal(r.code, 1, `exit ${r.code}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`no answer from 127\\.0\\.0\\.1:${port} within 2000 ms`));
    assert.ok(took >= 1900 && took < 6000, `took ${took} ms`);
  } finally {
    silent.close();
  }
  const other = http.createServer((req, res) => {
    if (req.url === '/api/stats') res.end('{"hello": "not warren"}');
    else res.writeHead(404).end();
  });
  await new Promise((r) => other.listen(port, '127.0.0.1', r));
  try {
    const r = await runWarren(['--config', w.iniFile, 'status'], { env: { WARREN_ADMIN_LISTEN: `127.0.0.1:${port}` } });
    assert.equal(r.code, 1, `exit ${r.code}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /something that is not warren's statistics/);
  } finally {
    other.close();
  }
});
