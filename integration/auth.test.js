// Handshake authentication: a missing, forged or expired token is answered
// with HTTP 401 before the upgrade; query and Bearer tokens are accepted; a
// cookie only when auth.cookie_name is set (with server.allowed_origins, or
// warren refuses to start); the application-level ping is answered with pong.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, openSocket, signJwt, Publisher } from './lib/index.js';

let w;
before(async () => {
  w = await startWarren({ name: 'auth' });
});
after(cleanupAll);

const now = () => Math.floor(Date.now() / 1000);

async function expectStatus(token, via, status) {
  const r = await openSocket(w.wsUrl(), token, { via });
  if (r.ws) r.ws.terminate();
  assert.equal(r.status, status, `token via ${via}: expected HTTP ${status}, got ${r.status}`);
}

test('missing token → 401', async () => {
  await expectStatus(undefined, 'none', 401);
});

test('token signed with another secret → 401', async () => {
  await expectStatus(signJwt({ sub: 'mallory', exp: now() + 600 }, 'not-the-secret'), 'query', 401);
});

test('tampered payload with a valid signature of another payload → 401', async () => {
  const good = await w.token('eve');
  const [h, , s] = good.split('.');
  const forged = Buffer.from(JSON.stringify({ sub: 'admin', exp: now() + 600 })).toString('base64url');
  await expectStatus(`${h}.${forged}.${s}`, 'query', 401);
});

test('alg=none token → 401', async () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  await expectStatus(`${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'x', exp: now() + 600 })}.`, 'query', 401);
});

test('expired token (beyond leeway) → 401', async () => {
  await expectStatus(signJwt({ sub: 'late', exp: now() - 3600 }, w.secret), 'query', 401);
});

test('garbage token → 401', async () => {
  await expectStatus('not-a-jwt', 'query', 401);
});

test('a token signed with the configured secret is accepted (independent signer)', async () => {
  const c = await connectClient(w.wsUrl(), signJwt({ sub: 'indep', exp: now() + 600 }, w.secret));
  assert.equal(c.welcome.user_id, 'indep');
  c.close();
});

for (const via of ['query', 'bearer', 'protocol']) {
  test(`token via ${via} is accepted and names the user`, async () => {
    const c = await connectClient(w.wsUrl(), await w.token(`via-${via}`), { via });
    assert.equal(c.welcome.type, 'welcome');
    assert.equal(c.welcome.user_id, `via-${via}`);
    c.close();
  });
}

test('a token offered as the subprotocol bearer.<token> is never selected: the format is', async () => {
  for (const protocol of ['warren.json', 'warren.msgpack']) {
    const c = await connectClient(w.wsUrl(), await w.token('proto-user'), { via: 'protocol', protocol });
    assert.equal(c.ws.protocol, protocol);
    assert.equal(c.welcome.user_id, 'proto-user');
    c.close();
  }
  // A bad token there is refused like any other.
  const r = await openSocket(w.wsUrl(), 'not-a-jwt', { via: 'protocol' });
  assert.equal(r.status, 401);
  assert.equal(JSON.parse(r.body).error, 'malformed');
});

test('a valid token in a cookie is not read by default → 401 missing_token', async () => {
  const r = await openSocket(w.wsUrl(), await w.token('cookie-default'), { via: 'cookie' });
  if (r.ws) r.ws.terminate();
  assert.equal(r.status, 401);
  assert.equal(JSON.parse(r.body).error, 'missing_token');
});

describe('auth.cookie_name set (with server.allowed_origins)', () => {
  const ORIGIN = 'https://app.example.test';
  let wc;
  before(async () => {
    wc = await startWarren({
      name: 'auth-cookie',
      config: { auth: { cookie_name: 'sid' }, server: { allowed_origins: ORIGIN } },
    });
  });
  const cookie = { via: 'cookie', cookieName: 'sid', headers: { Origin: ORIGIN } };

  test('token via cookie with an allowed Origin is accepted and names the user', async () => {
    const c = await connectClient(wc.wsUrl(), await wc.token('via-cookie'), cookie);
    assert.equal(c.welcome.user_id, 'via-cookie');
    c.close();
  });

  test('the same cookie from another or no Origin → 403', async () => {
    const token = await wc.token('via-cookie');
    for (const headers of [{ Origin: 'https://evil.example' }, {}]) {
      const r = await openSocket(wc.wsUrl(), token, { ...cookie, headers });
      if (r.ws) r.ws.terminate();
      assert.equal(r.status, 403, `headers ${JSON.stringify(headers)}: ${r.status}`);
    }
  });

  test('a cookie-authenticated client receives its notifications', { timeout: 20000 }, async () => {
    const user = 'cookie-user';
    const c = await connectClient(wc.wsUrl(), await wc.token(user), cookie);
    const pub = await Publisher.open();
    const id = `ck-${Date.now()}`;
    await pub.publishAll(wc.exchange, [{ id, user_id: user, title: 'hi' }]);
    await c.waitForIds([id]);
    await pub.close();
    c.close();
  });
});

for (const protocol of ['warren.json', 'warren.msgpack']) {
  test(`{"type":"ping"} → {"type":"pong"} (${protocol})`, async () => {
    const c = await connectClient(w.wsUrl(), await w.token('pinger'), { protocol });
    c.send({ type: 'ping' });
    await c.waitForMessage((m) => m.type === 'pong', { timeout: 5000, what: 'pong' });
    c.close();
  });
}

test('the server picks warren.msgpack when asked and answers in binary', async () => {
  const c = await connectClient(w.wsUrl(), await w.token('mp'), { protocol: 'warren.msgpack' });
  assert.equal(c.ws.protocol, 'warren.msgpack');
  assert.equal(c.frames.binary, 1, 'welcome was not a binary frame');
  assert.equal(c.frames.text, 0);
  c.close();
});
