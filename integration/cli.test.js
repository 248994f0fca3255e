// The command line: `warren publish` delivers to a connected client,
// `--check-config` names the bad key, `--version` and `token` work.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startWarren, cleanupAll, connectClient, runWarren, ARTIFACTS_DIR, randomHex, routingFieldsIn } from './lib/index.js';

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

test('--help exits 0 and mentions publish', async () => {
  const r = await runWarren(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout + r.stderr, /publish/);
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
