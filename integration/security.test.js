// Security of the handshake against the real daemon (docs/reliability.md, scenarios 16, 17):
// RS256 and ES256 public keys, the JWT rejection matrix (every refusal is an
// HTTP 401 before the upgrade, with the reason; a token without exp is one of
// them unless auth.require_exp = false), a token that expires while
// connected (close 1008), key rotation on SIGHUP, a bad key file stopping
// start-up, cookie authentication being opt-in (and refused without an Origin
// allow-list), the Origin allow-list, and a cross-site WebSocket hijacking
// attempt from a real Chromium carrying the user's cookie.
//
// Tokens are signed here with node:crypto, independently of warren.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
  startWarren,
  cleanupAll,
  connectClient,
  openSocket,
  runWarren,
  freePort,
  httpGet,
  waitFor,
  browserSkip,
  launchBrowser,
} from './lib/index.js';

const now = () => Math.floor(Date.now() / 1000);
const b64 = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');

const ISS = 'https://auth.example.test';
const AUD = 'warren';

// Signs header.payload with the algorithm named in the header (the header
// may lie: that is the point of several tests). alg selects how: 'RS256'
// (PKCS#1 v1.5), 'ES256' (JOSE r||s), 'HS256' (key = secret bytes).
function sign(payload, { alg, key, header = {} }) {
  const input = `${b64({ alg, typ: 'JWT', ...header })}.${b64(payload)}`;
  return `${input}.${rawSign(input, alg, key)}`;
}

function rawSign(input, alg, key) {
  if (alg === 'HS256') return crypto.createHmac('sha256', key).update(input).digest('base64url');
  if (alg === 'ES256') return crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  return crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-sec-'));
function writePem(name, keyObject) {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, keyObject.export({ type: 'spki', format: 'pem' }));
  return file;
}

const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaOther = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ecNext = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaPemFile = writePem('rsa.pem', rsa.publicKey);
const rsaPem = fs.readFileSync(rsaPemFile, 'utf8');
const ecPemFile = writePem('ec.pem', ec.publicKey);

const claims = (extra = {}) => ({ sub: 'alice', iss: ISS, aud: AUD, exp: now() + 600, ...extra });
const rs = (payload, opts = {}) => sign(payload, { alg: 'RS256', key: rsa.privateKey, ...opts });
const es = (payload, key = ec.privateKey) => sign(payload, { alg: 'ES256', key });

async function metric(w, outcome) {
  const r = await httpGet(`${w.adminUrl}/metrics`);
  const m = r.body.match(new RegExp(`^warren_handshakes_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm'));
  assert.ok(m, `metric handshakes_total{outcome="${outcome}"} missing`);
  return Number(m[1]);
}

// Asserts the handshake is refused with `status` before any upgrade and
// (for 401s) that the JSON body names the reason.
async function expectRefused(w, token, status, reason, opts = {}) {
  const r = await openSocket(w.wsUrl(), token, opts);
  if (r.ws) r.ws.terminate();
  assert.equal(r.status, status, `expected HTTP ${status} (${reason}), got ${r.status} ${r.body || ''}`);
  if (reason) assert.equal(JSON.parse(r.body).error, reason, `401 body ${r.body}`);
}

let wRS; // RS256, iss + aud required, leeway 5 s, any origin
let wES; // ES256, leeway 0, any origin
before(async () => {
  [wRS, wES] = await Promise.all([
    startWarren({
      name: 'sec-rs',
      config: { auth: { jwt_secret: '', jwt_public_key_file: rsaPemFile, issuer: ISS, audience: AUD, leeway_s: 5 } },
    }),
    startWarren({
      name: 'sec-es',
      config: { auth: { jwt_secret: '', jwt_public_key_file: ecPemFile, leeway_s: 0 } },
    }),
  ]);
});
after(async () => {
  await cleanupAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('RS256 rejection matrix (all HTTP 401 before the upgrade)', () => {
  test('valid RS256 token is accepted and names the user', async () => {
    const c = await connectClient(wRS.wsUrl(), rs(claims()));
    assert.equal(c.welcome.user_id, 'alice');
    c.close();
  });

  test('alg "none" (no signature) → 401 bad_alg', async () => {
    await expectRefused(wRS, `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims())}.`, 401, 'bad_alg');
    await expectRefused(wRS, `${b64({ alg: 'None', typ: 'JWT' })}.${b64(claims())}.`, 401, 'bad_alg');
  });

  test('HS256 signed with the RSA public key PEM as the secret → 401 bad_alg', async () => {
    await expectRefused(wRS, sign(claims(), { alg: 'HS256', key: rsaPem }), 401, 'bad_alg');
    await expectRefused(wRS, sign(claims(), { alg: 'HS256', key: rsaPem.trim() }), 401, 'bad_alg');
  });

  test('an algorithm other than the configured one → 401 bad_alg', async () => {
    await expectRefused(wRS, es(claims()), 401, 'bad_alg');
    // A valid RS256 signature under a header that claims RS512 or PS256.
    for (const alg of ['RS512', 'PS256', 'rs256']) {
      const input = `${b64({ alg, typ: 'JWT' })}.${b64(claims())}`;
      await expectRefused(wRS, `${input}.${rawSign(input, 'RS256', rsa.privateKey)}`, 401, 'bad_alg');
    }
  });

  test('bad signature → 401 bad_signature', async () => {
    await expectRefused(wRS, rs(claims(), { key: rsaOther.privateKey }), 401, 'bad_signature');
    const good = rs(claims());
    const [h, p, s] = good.split('.');
    const flipped = (s[10] === 'A' ? 'B' : 'A');
    await expectRefused(wRS, `${h}.${p}.${s.slice(0, 10)}${flipped}${s.slice(11)}`, 401, 'bad_signature');
    // Someone else's payload under a valid signature.
    await expectRefused(wRS, `${h}.${b64(claims({ sub: 'admin' }))}.${s}`, 401, 'bad_signature');
    await expectRefused(wRS, `${h}.${p}.`, 401, 'bad_signature');
  });

  test('expired beyond the leeway → 401 expired; within the leeway → accepted', async () => {
    await expectRefused(wRS, rs(claims({ exp: now() - 60 })), 401, 'expired');
    await expectRefused(wRS, rs(claims({ exp: now() - 6 })), 401, 'expired');
    const c = await connectClient(wRS.wsUrl(), rs(claims({ sub: 'late-but-ok', exp: now() - 2 })));
    assert.equal(c.welcome.user_id, 'late-but-ok');
    c.close();
  });

  test('a token without exp → 401 missing_exp (auth.require_exp is true by default)', async () => {
    await expectRefused(wRS, rs(claims({ exp: undefined })), 401, 'missing_exp');
    await expectRefused(wRS, rs(claims({ exp: undefined, iat: now(), nbf: now() - 10 })), 401, 'missing_exp');
  });

  test('nbf in the future → 401 not_yet_valid; within the leeway → accepted', async () => {
    await expectRefused(wRS, rs(claims({ nbf: now() + 120 })), 401, 'not_yet_valid');
    const c = await connectClient(wRS.wsUrl(), rs(claims({ sub: 'early-ok', nbf: now() + 2 })));
    assert.equal(c.welcome.user_id, 'early-ok');
    c.close();
  });

  test('wrong or missing iss → 401 bad_issuer', async () => {
    await expectRefused(wRS, rs(claims({ iss: 'https://evil.example' })), 401, 'bad_issuer');
    await expectRefused(wRS, rs(claims({ iss: `${ISS}/` })), 401, 'bad_issuer');
    await expectRefused(wRS, rs(claims({ iss: undefined })), 401, 'bad_issuer');
  });

  test('wrong or missing aud → 401 bad_audience; aud array containing it → accepted', async () => {
    await expectRefused(wRS, rs(claims({ aud: 'other' })), 401, 'bad_audience');
    await expectRefused(wRS, rs(claims({ aud: ['other', 'warren2'] })), 401, 'bad_audience');
    await expectRefused(wRS, rs(claims({ aud: undefined })), 401, 'bad_audience');
    const c = await connectClient(wRS.wsUrl(), rs(claims({ sub: 'multi-aud', aud: ['other', AUD] })));
    assert.equal(c.welcome.user_id, 'multi-aud');
    c.close();
  });

  test('malformed base64 or JSON → 401 malformed', async () => {
    const good = rs(claims());
    const [h, p, s] = good.split('.');
    await expectRefused(wRS, `${h}!.${p}.${s}`, 401, 'malformed');
    await expectRefused(wRS, `${h}.${p}*.${s}`, 401, 'malformed');
    await expectRefused(wRS, `${h}.${p}.${s}=`, 401, 'malformed');
    await expectRefused(wRS, `${b64('{"alg":"RS256"')}.${p}.${s}`, 401, 'malformed');
    await expectRefused(wRS, `${h}.${b64('{"sub":"alice",')}.${s}`, 401, 'malformed');
    await expectRefused(wRS, `${h}.${b64('["alice"]')}.${s}`, 401, 'malformed');
    await expectRefused(wRS, `${h}.${p}`, 401, 'malformed');
    await expectRefused(wRS, 'not-a-jwt', 401, 'malformed');
    await expectRefused(wRS, undefined, 401, 'missing_token');
  });

  test('every refusal is counted as unauthorized, none as accepted', async () => {
    const before = { u: await metric(wRS, 'unauthorized'), a: await metric(wRS, 'accepted') };
    await expectRefused(wRS, rs(claims({ aud: 'x' })), 401, 'bad_audience');
    await expectRefused(wRS, `${b64({ alg: 'none' })}.${b64(claims())}.`, 401, 'bad_alg');
    assert.equal(await metric(wRS, 'unauthorized'), before.u + 2);
    assert.equal(await metric(wRS, 'accepted'), before.a);
  });

  test('start-up log names the algorithm and says cookies are not read', () => {
    const log = fs.readFileSync(wRS.logFile, 'utf8');
    assert.match(log, /RS256 with a 2048-bit RSA key from /);
    assert.match(log, /no cookie: auth\.cookie_name is unset/);
    // No cookie, so an empty allow-list exposes nothing and is not warned about.
    assert.doesNotMatch(log, /allowed_origins is empty/);
  });
});

describe('auth.require_exp = false', () => {
  let w;
  before(async () => {
    w = await startWarren({ name: 'sec-noexp', config: { auth: { require_exp: false, leeway_s: 0 } } });
  });

  test('a token without exp is accepted; one with a past exp is still refused', async () => {
    const c = await connectClient(w.wsUrl(), sign({ sub: 'no-exp', iat: now() }, { alg: 'HS256', key: w.secret }));
    assert.equal(c.welcome.user_id, 'no-exp');
    c.close();
    await expectRefused(w, sign({ sub: 'late', exp: now() - 5 }, { alg: 'HS256', key: w.secret }), 401, 'expired');
  });

  test('start-up log warns that tokens without exp are accepted', () => {
    assert.match(fs.readFileSync(w.logFile, 'utf8'), /WARN.*auth\.require_exp is false/);
    assert.doesNotMatch(fs.readFileSync(wRS.logFile, 'utf8'), /require_exp/);
  });
});

describe('ES256', () => {
  test('valid ES256 token accepted; RS256, HS256-with-PEM and another EC key refused', async () => {
    const c = await connectClient(wES.wsUrl(), es({ sub: 'bob', exp: now() + 600 }));
    assert.equal(c.welcome.user_id, 'bob');
    c.close();
    await expectRefused(wES, rs({ sub: 'bob', exp: now() + 600 }), 401, 'bad_alg');
    const ecPem = fs.readFileSync(ecPemFile, 'utf8');
    await expectRefused(wES, sign({ sub: 'bob', exp: now() + 600 }, { alg: 'HS256', key: ecPem }), 401, 'bad_alg');
    await expectRefused(wES, es({ sub: 'bob', exp: now() + 600 }, ecNext.privateKey), 401, 'bad_signature');
  });

  test('a token that expires while connected closes the socket with 1008', { timeout: 20000 }, async (t) => {
    const t0 = Date.now();
    const c = await connectClient(wES.wsUrl(), es({ sub: 'short', exp: now() + 2 }));
    assert.equal(c.welcome.user_id, 'short');
    // Still served before it expires.
    c.send({ type: 'ping' });
    await c.waitForMessage((m) => m.type === 'pong', { timeout: 1500, what: 'pong before expiry' });
    const closed = await c.waitForClose({ timeout: 8000 });
    const after = (Date.now() - t0) / 1000;
    t.diagnostic(`closed after ${after.toFixed(1)} s`);
    assert.equal(closed.code, 1008, `close ${JSON.stringify(closed)}`);
    assert.match(closed.reason, /expired/);
    assert.ok(after >= 1, `closed too early (${after} s)`);
    c.close();
  });

  test('SIGHUP rotates the key: the new key verifies, the old one no longer does', { timeout: 20000 }, async () => {
    const kept = await connectClient(wES.wsUrl(), es({ sub: 'kept', exp: now() + 600 }));
    fs.writeFileSync(ecPemFile, ecNext.publicKey.export({ type: 'spki', format: 'pem' }));
    wES.proc.kill('SIGHUP');
    await waitFor(() => /SIGHUP: reloaded/.test(fs.readFileSync(wES.logFile, 'utf8')), { what: 'reload log line' });
    const c = await connectClient(wES.wsUrl(), es({ sub: 'rotated', exp: now() + 600 }, ecNext.privateKey));
    assert.equal(c.welcome.user_id, 'rotated');
    c.close();
    await expectRefused(wES, es({ sub: 'old', exp: now() + 600 }), 401, 'bad_signature');
    // A reload to an unusable key is refused and the current key stays.
    fs.writeFileSync(ecPemFile, 'not a key\n');
    wES.proc.kill('SIGHUP');
    await waitFor(() => /SIGHUP: configuration not reloaded: .*auth\.jwt_public_key_file/.test(fs.readFileSync(wES.logFile, 'utf8')), {
      what: 'refused reload log line',
    });
    const c2 = await connectClient(wES.wsUrl(), es({ sub: 'still', exp: now() + 600 }, ecNext.privateKey));
    assert.equal(c2.welcome.user_id, 'still');
    c2.close();
    // Connections opened under the old key are not dropped by the reload.
    assert.ok(kept.connected, 'connection dropped by SIGHUP');
    kept.close();
  });
});

describe('a bad key file stops start-up (exit 2, before listening)', () => {
  async function expectStartFailure(keyFile, pattern) {
    const port = await freePort();
    const ini = path.join(tmp, `bad-${path.basename(keyFile)}.ini`);
    fs.writeFileSync(ini, `[server]\nlisten = 127.0.0.1:${port}\n[auth]\njwt_public_key_file = ${keyFile}\n[admin]\nlisten = off\n`);
    const t0 = Date.now();
    const r = await runWarren(['--config', ini], { timeout: 15000 });
    assert.equal(r.code, 2, `exit ${r.code}; stderr ${r.stderr}`);
    assert.match(r.stderr, /auth\.jwt_public_key_file/);
    assert.match(r.stderr, pattern);
    assert.doesNotMatch(r.stderr, /listening/i);
    assert.ok(Date.now() - t0 < 5000, 'took too long to refuse');
    const check = await runWarren(['--config', ini, '--check-config']);
    assert.equal(check.code, 2);
    assert.match(check.stderr, pattern);
  }
  const write = (name, text) => {
    const f = path.join(tmp, name);
    fs.writeFileSync(f, text);
    return f;
  };

  test('missing file', async () => {
    await expectStartFailure(path.join(tmp, 'does-not-exist.pem'), /No such file/);
  });
  test('not a PEM key', async () => {
    await expectStartFailure(write('garbage.pem', 'hello\n'), /not a PEM public key/);
  });
  test('a private key instead of the public one', async () => {
    const f = write('private.pem', ec.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await expectStartFailure(f, /private key/);
  });
  test('unsupported key types: Ed25519, EC P-384, RSA 1024', async () => {
    await expectStartFailure(writePem('ed.pem', crypto.generateKeyPairSync('ed25519').publicKey), /ED25519.*expected RSA/);
    await expectStartFailure(writePem('p384.pem', crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey), /secp384r1/);
    await expectStartFailure(writePem('rsa1024.pem', crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey), /1024-bit RSA/);
  });
});

describe('cookie authentication is opt-in and needs an Origin allow-list', () => {
  test('auth.cookie_name with an empty server.allowed_origins stops start-up (exit 2) naming both keys', async () => {
    const port = await freePort();
    const ini = path.join(tmp, 'cookie-no-origins.ini');
    fs.writeFileSync(ini, `[server]\nlisten = 127.0.0.1:${port}\n[auth]\njwt_secret = ${crypto.randomBytes(16).toString('hex')}\ncookie_name = warren_token\n[admin]\nlisten = off\n`);
    for (const args of [['--config', ini], ['--config', ini, '--check-config']]) {
      const r = await runWarren(args, { timeout: 15000 });
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}; stderr ${r.stderr}`);
      assert.match(r.stderr, /auth\.cookie_name is set but server\.allowed_origins is empty/);
      assert.match(r.stderr, /set server\.allowed_origins to the origins of your pages/);
      assert.doesNotMatch(r.stderr, /listening/i);
    }
    // The same from the environment, and fixed by an allow-list.
    const env = { WARREN_AUTH_JWT_SECRET: crypto.randomBytes(16).toString('hex'), WARREN_AUTH_COOKIE_NAME: 'sid' };
    assert.equal((await runWarren(['--check-config'], { env })).code, 2);
    const ok = await runWarren(['--check-config'], { env: { ...env, WARREN_SERVER_ALLOWED_ORIGINS: 'https://app.example.test' } });
    assert.equal(ok.code, 0, ok.stderr);
  });
});

describe('Origin allow-list', () => {
  let w;
  let appOrigin;
  before(async () => {
    const port = await freePort();
    appOrigin = `http://127.0.0.1:${port}`;
    w = await startWarren({
      name: 'sec-origin',
      port,
      config: { server: { allowed_origins: `${appOrigin},https://app.example.test` }, auth: { cookie_name: 'warren_token' } },
    });
  });

  const withOrigin = (origin) => ({ headers: origin === undefined ? {} : { Origin: origin } });

  test('an allowed origin → 101', async () => {
    for (const origin of [appOrigin, 'https://app.example.test', 'HTTPS://APP.EXAMPLE.TEST']) {
      const r = await openSocket(w.wsUrl(), await w.token('u1'), withOrigin(origin));
      assert.equal(r.status, 101, `${origin}: ${r.status} ${r.body || ''}`);
      r.ws.terminate();
    }
  });

  test('disallowed, missing and null Origin → 403, even with a valid token', async () => {
    const token = await w.token('u1');
    const before = await metric(w, 'forbidden_origin');
    const origins = [
      'https://evil.example',
      'https://app.example.test.evil.example',
      'http://app.example.test',
      `http://localhost:${w.port}`,
      `${appOrigin}0`,
      'null',
      undefined,
    ];
    for (const origin of origins) {
      const r = await openSocket(w.wsUrl(), token, withOrigin(origin));
      if (r.ws) r.ws.terminate();
      assert.equal(r.status, 403, `Origin ${origin}: expected 403, got ${r.status}`);
    }
    assert.equal(await metric(w, 'forbidden_origin'), before + origins.length);
  });

  test('no start-up warning about origins when an allow-list is set', () => {
    assert.doesNotMatch(fs.readFileSync(w.logFile, 'utf8'), /allowed_origins is empty/);
  });

  // Cross-site WebSocket hijacking in a real browser.
  const skip = browserSkip;

  describe('Chromium with the user\'s cookie', { skip }, () => {
    let browser;
    let site; // the attacker's page server
    before(async () => {
      browser = await launchBrowser();
      site = http.createServer((req, res) => {
        res.setHeader('Content-Type', 'text/html');
        res.end('<!doctype html><title>other site</title><p>cat pictures</p>');
      });
      await new Promise((r) => site.listen(0, '127.0.0.1', r));
    });
    after(async () => {
      if (browser) await browser.close();
      if (site) await new Promise((r) => site.close(r));
    });

    // Opens a page at pageUrl in a context holding the user's warren cookie
    // for 127.0.0.1, and from that page tries `new WebSocket(wsUrl)`.
    // Resolves what the page saw: opened, welcome, close code.
    async function attempt(pageUrl, wsUrl, token) {
      const ctx = await browser.newContext();
      await ctx.addCookies([{ name: 'warren_token', value: token, domain: '127.0.0.1', path: '/', httpOnly: true }]);
      const page = await ctx.newPage();
      await page.goto(pageUrl);
      const seen = await page.evaluate(
        (u) =>
          new Promise((resolve) => {
            const out = { opened: false, messages: [], code: null };
            const ws = new WebSocket(u, 'warren.json');
            ws.onopen = () => (out.opened = true);
            ws.onmessage = (e) => {
              out.messages.push(JSON.parse(e.data));
              ws.close();
            };
            ws.onclose = (e) => {
              out.code = e.code;
              resolve(out);
            };
            setTimeout(() => resolve(out), 5000);
          }),
        wsUrl,
      );
      await ctx.close();
      return seen;
    }

    test('the same page on the allowed origin connects with the cookie (the cookie works)', async () => {
      // Any page of the app's origin will do; warren answers / with a 404 page.
      const seen = await attempt(`${appOrigin}/`, `ws://127.0.0.1:${w.port}/ws`, await w.token('victim'));
      assert.equal(seen.opened, true, JSON.stringify(seen));
      assert.equal(seen.messages[0]?.type, 'welcome');
      assert.equal(seen.messages[0]?.user_id, 'victim');
    });

    test('a page on another origin of the same site (cookie sent) is refused: 0 accepted, no welcome', async (t) => {
      const evil = `http://127.0.0.1:${site.address().port}/`;
      const before = { f: await metric(w, 'forbidden_origin'), a: await metric(w, 'accepted') };
      const seen = await attempt(evil, `ws://127.0.0.1:${w.port}/ws`, await w.token('victim'));
      assert.equal(seen.opened, false, JSON.stringify(seen));
      assert.deepEqual(seen.messages, []);
      assert.equal(await metric(w, 'accepted'), before.a);
      assert.equal(await metric(w, 'forbidden_origin'), before.f + 1);
      t.diagnostic(`page ${evil}: close ${seen.code}, forbidden_origin +1, accepted +0`);
    });

    test('without an allow-list cookies are not read at all: the same attack gets 401, no welcome', async () => {
      // wES has no allow-list and so no cookie authentication (warren would
      // refuse to start with one); the browser still sends a valid ES256
      // token in the cookie, and it opens nothing.
      const token = es({ sub: 'victim', exp: now() + 600 }, ecNext.privateKey);
      const before = { u: await metric(wES, 'unauthorized'), a: await metric(wES, 'accepted') };
      const seen = await attempt(`http://127.0.0.1:${site.address().port}/`, `ws://127.0.0.1:${wES.port}/ws`, token);
      assert.equal(seen.opened, false, JSON.stringify(seen));
      assert.deepEqual(seen.messages, []);
      assert.equal(await metric(wES, 'accepted'), before.a);
      assert.equal(await metric(wES, 'unauthorized'), before.u + 1);
    });

    test('a cross-site page (localhost): Chromium withholds the SameSite=Lax cookie, and the Origin check refuses it anyway', async (t) => {
      const evil = `http://localhost:${site.address().port}/`;
      const before = { f: await metric(w, 'forbidden_origin'), a: await metric(w, 'accepted') };
      const seen = await attempt(evil, `ws://127.0.0.1:${w.port}/ws`, await w.token('victim'));
      assert.equal(seen.opened, false);
      assert.equal(await metric(w, 'accepted'), before.a);
      assert.equal(await metric(w, 'forbidden_origin'), before.f + 1);
      // Without an allow-list (wES) cookies are not read: the handshake
      // reaches the token check and fails for lack of a token.
      const u = await metric(wES, 'unauthorized');
      const token = es({ sub: 'victim', exp: now() + 600 }, ecNext.privateKey);
      const control = await attempt(evil, `ws://127.0.0.1:${wES.port}/ws`, token);
      assert.equal(control.opened, false);
      assert.equal(await metric(wES, 'unauthorized'), u + 1);
      t.diagnostic('cross-site: cookie not sent by Chromium (SameSite=Lax); allow-list → 403 forbidden_origin');
    });
  });
});
