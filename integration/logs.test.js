// Logs (README.md, "Operating"; docs/reliability.md, scenario 18): at log.level=debug, through good,
// bad and expired tokens (query, Bearer, bearer. subprotocol, cookie), an AMQP URL with a password,
// publishes, acks, a reconnect and a SIGTERM, every stderr line is one event in
// the chosen format (json: ts/level/module/msg) and no line holds a token, the
// JWT secret or the AMQP password. SIGHUP reloads log.level and the JWT secret
// without dropping connections.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  startWarren,
  cleanupAll,
  connectClient,
  openSocket,
  Publisher,
  waitFor,
  brokerCtl,
  closeAmqp,
  ensureBroker,
  signJwt,
  randomHex,
  sleep,
} from './lib/index.js';

after(cleanupAll);

const LEVELS = new Set(['error', 'warn', 'info', 'debug']);
const TEXT_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN |INFO |DEBUG) [a-z]+: \S/;

// The daemon's own lines: the harness writes "===== start" headers into the
// same file.
function daemonLines(w) {
  return w.logText().split('\n').filter((l) => l !== '' && !l.startsWith('===== start'));
}

// Parses one line of either format into { level, module, msg }.
function parseLine(line, format) {
  if (format === 'json') {
    const j = JSON.parse(line);
    assert.deepEqual(Object.keys(j), ['ts', 'level', 'module', 'msg'], line);
    assert.ok(!Number.isNaN(Date.parse(j.ts)), `ts: ${line}`);
    assert.ok(LEVELS.has(j.level), `level: ${line}`);
    return j;
  }
  const m = TEXT_LINE.exec(line);
  assert.ok(m, `not a text log line: ${JSON.stringify(line)}`);
  const rest = line.slice(30);
  const colon = rest.indexOf(': ');
  return { level: m[1].trim().toLowerCase(), module: rest.slice(0, colon), msg: rest.slice(colon + 2) };
}

async function brokerUser() {
  const b = await ensureBroker();
  if (!b.dir || !b.port) return null;
  const user = `wl-${randomHex(3)}`;
  const password = `pw-${randomHex(12)}`;
  brokerCtl('add_user', user, password);
  brokerCtl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
  const url = new URL(b.url);
  url.username = user;
  url.password = password;
  return { user, password, url: url.toString() };
}

for (const format of ['json', 'text']) {
  test(`log.format=${format}: one parseable line per event, no token, secret or password`, { timeout: 90000 }, async (t) => {
    const cred = await brokerUser();
    if (!cred) {
      t.skip('WARREN_TEST_BROKER_DIR/PORT unknown: cannot add a broker user or force a reconnect');
      return;
    }
    try {
      // Cookie authentication is on (it needs an Origin allow-list), so a
      // token in a cookie goes through the same checks as the others.
      const origin = 'https://app.example.test';
      const w = await startWarren({
        name: `logs-${format}`,
        config: {
          amqp: { url: cred.url },
          log: { level: 'debug', format },
          auth: { cookie_name: 'warren_token' },
          server: { allowed_origins: origin },
        },
      });
      const secrets = [w.secret, cred.password];
      const now = Math.floor(Date.now() / 1000);
      const good = await w.token('ann');
      const expired = signJwt({ sub: 'ann', iat: now - 7200, exp: now - 3600 }, w.secret);
      const forged = signJwt({ sub: 'ann', exp: now + 600 }, `not-the-secret-${randomHex(8)}`);
      const tokens = [good, expired, forged];

      const clients = [];
      const headers = { Origin: origin };
      for (const via of ['query', 'bearer', 'protocol', 'cookie']) {
        clients.push(await connectClient(w.wsUrl(), good, { via, headers, name: `ann-${via}` }));
        for (const bad of [expired, forged]) assert.equal((await openSocket(w.wsUrl(), bad, { via, headers })).status, 401);
      }
      const pub = await Publisher.open();
      await pub.publishAll(w.exchange, [{ id: 'l1', user_id: 'ann', title: 'one' }, { id: 'l2', user_id: 'ann', title: 'two' }]);
      for (const c of clients) await c.waitForIds(['l1', 'l2']);
      await pub.publishRaw(w.exchange, Buffer.from('{broken'), { contentType: 'application/json' });
      await pub.confirmed();
      await pub.close();

      // A reconnect, with its reason in the log.
      await closeAmqp();
      brokerCtl('close_all_connections', 'logs test');
      await waitFor(() => /reconnect/i.test(w.logText()) && /generation 2/.test(w.logText()), { timeout: 30000, what: 'reconnect logged' });
      await waitFor(async () => (await w.readyz()) === 200, { timeout: 30000, what: 'ready again' });
      clients[0].close();
      await sleep(200);
      const exit = await w.stop('SIGTERM');
      assert.equal(exit.code, 0);

      const lines = daemonLines(w);
      const events = lines.map((l) => parseLine(l, format));
      for (const line of lines) {
        for (const s of [...tokens, ...tokens.map((x) => x.split('.')[2]), ...secrets]) {
          assert.ok(!line.includes(s), `a log line leaks a secret or token: ${line}`);
        }
      }
      const has = (level, re) => events.some((e) => e.level === level && re.test(e.msg));
      const expect = [
        ['info', /listening on/],
        ['info', /connected \(generation 1\)/],
        ['info', /ready: consuming/],
        ['debug', /open for user ann/],
        ['debug', /answered 401/],
        ['warn', /rejecting message .*bad_json/],
        ['warn', /(disconnected|connection lost|closed).*(CONNECTION_FORCED|logs test|closed|reset|EOF)/i],
        ['info', /connected \(generation 2\)/],
        ['debug', /closed for user ann/],
        ['info', /SIGTERM: draining/],
        ['info', /stopped cleanly/],
      ];
      const missing = expect.filter(([lv, re]) => !has(lv, re)).map(([lv, re]) => `${lv} ${re}`);
      assert.deepEqual(missing, [], `missing log events; log was:\n${lines.join('\n')}`);
      t.diagnostic(`${lines.length} lines, ${events.filter((e) => e.level === 'debug').length} at debug; none holds one of ${tokens.length} tokens or ${secrets.length} secrets`);
    } finally {
      await closeAmqp();
      try {
        brokerCtl('delete_user', cred.user);
      } catch {
        // the broker may be gone already
      }
    }
  });
}

test('SIGHUP reloads log.level and the JWT secret; open connections keep receiving', { timeout: 60000 }, async () => {
  const w = await startWarren({ name: 'sighup', config: { log: { level: 'info', format: 'json' } } });
  const oldSecret = w.secret;
  const newSecret = `new-${randomHex(20)}`;
  const exp = Math.floor(Date.now() / 1000) + 600;
  const keeper = await connectClient(w.wsUrl(), await w.token('keeper'), { name: 'keeper' });
  const debugCount = () => daemonLines(w).filter((l) => JSON.parse(l).level === 'debug').length;
  assert.equal(debugCount(), 0, 'no debug lines at info');

  const reloads = () => daemonLines(w).filter((l) => /SIGHUP: reloaded/.test(l)).length;
  const rewrite = (level, secret) => {
    let ini = fs.readFileSync(w.iniFile, 'utf8');
    ini = ini.replace(/^level = .*$/m, `level = ${level}`).replace(/^jwt_secret = .*$/m, `jwt_secret = ${secret}`);
    fs.writeFileSync(w.iniFile, ini);
  };
  rewrite('debug', newSecret);
  w.proc.kill('SIGHUP');
  await waitFor(() => reloads() === 1, { what: 'SIGHUP reload logged' });

  // The connection opened before the reload is still served.
  const pub = await Publisher.open();
  await pub.publishAll(w.exchange, [{ id: 'after-hup', user_id: 'keeper' }]);
  await keeper.waitForIds(['after-hup']);
  assert.ok(keeper.connected);
  assert.equal(keeper.closes.length, 0);

  // New secret accepted, old one refused.
  assert.equal((await openSocket(w.wsUrl(), signJwt({ sub: 'old', exp }, oldSecret))).status, 401);
  const fresh = await connectClient(w.wsUrl(), signJwt({ sub: 'fresh', exp }, newSecret), { name: 'fresh' });
  assert.equal(fresh.welcome.user_id, 'fresh');
  await waitFor(() => debugCount() > 0, { what: 'debug lines after the reload to debug' });
  assert.ok(daemonLines(w).some((l) => /open for user fresh/.test(l)));

  // Back to info: debug lines stop.
  rewrite('info', newSecret);
  w.proc.kill('SIGHUP');
  await waitFor(() => reloads() === 2, { what: 'second SIGHUP reload logged' });
  const before = debugCount();
  const late = await connectClient(w.wsUrl(), signJwt({ sub: 'late', exp }, newSecret), { name: 'late' });
  assert.equal((await openSocket(w.wsUrl(), 'garbage.token.here')).status, 401);
  late.close();
  await pub.publishAll(w.exchange, [{ id: 'after-hup-2', user_id: 'keeper' }]);
  await keeper.waitForIds(['after-hup-2']);
  await sleep(200);
  assert.equal(debugCount(), before, 'no debug line after going back to info');
  await pub.close();
  assert.equal((await w.stop('SIGTERM')).code, 0);
});
