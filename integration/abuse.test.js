// Abuse limits: what a hostile or broken client can do to warren, and what
// it must not be able to do to everybody else.
//   * slowloris: 1,000 connections trickling header bytes are all closed at
//     server.handshake_timeout_ms while a fresh client still connects;
//   * a request head over 8 KiB → 431; just under it → 101;
//   * server.max_connections → 503 past it, counting handshakes in progress
//     (a trickling head holds a place), and room again once one closes;
//   * a message flood → close 1008 "rate limit" (server.max_client_messages_per_s)
//     while a client within the rate is served;
//   * oversized and deeply nested envelopes → Q.dead, and the daemon keeps
//     delivering.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execSync } from 'node:child_process';
import crypto from 'node:crypto';
import { encode as mpEncode } from '@msgpack/msgpack';
import {
  startWarren,
  cleanupAll,
  connectClient,
  openSocket,
  Publisher,
  waitFor,
  queueCount,
  encodeEnvelope,
  sleep,
} from './lib/index.js';

const HANDSHAKE_TIMEOUT = 2000;
const MAX_CONNECTIONS = 20;
const RATE = 50;

let w; // server.max_connections at its default (100000)
let wMax; // server.max_connections = MAX_CONNECTIONS
let token;
let tokenMax;

before(async () => {
  [w, wMax] = await Promise.all([
    startWarren({
      name: 'abuse',
      config: { server: { handshake_timeout_ms: HANDSHAKE_TIMEOUT, max_client_messages_per_s: RATE } },
    }),
    startWarren({
      name: 'abuse-max',
      config: { server: { handshake_timeout_ms: HANDSHAKE_TIMEOUT, max_connections: MAX_CONNECTIONS } },
    }),
  ]);
  [token, tokenMax] = await Promise.all([w.token('abuser'), wMax.token('abuser')]);
});
after(cleanupAll);

// Sends raw bytes and resolves with everything received until the server
// closes (or timeout ms).
function rawExchange(port, bytes, timeout = 5000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got.toString('latin1'));
    };
    const timer = setTimeout(done, timeout);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
    });
    s.on('end', done);
    s.on('error', done);
  });
}

function upgradeHead(extra = '') {
  const key = crypto.randomBytes(16).toString('base64');
  return (
    `GET /ws?token=${token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
  );
}

test('slowloris: 1,000 trickling handshakes closed at the timeout, a fresh client still served', { timeout: 60000 }, async (t) => {
  const limit = Number(execSync('ulimit -n', { shell: '/bin/sh' }).toString().trim());
  t.diagnostic(`open files limit (ulimit -n) inherited by the test: ${limit}`);
  assert.ok(limit >= 4096, `ulimit -n is ${limit}: raise it to 4096 or more before running this test`);
  const N = 1000;
  const before0 = (await w.stats()).handshakes.timeout;
  const socks = [];
  const connectedAt = [];
  const closedAt = new Array(N).fill(0);
  const answered = [];
  for (let i = 0; i < N; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 100); j++) {
      batch.push(
        new Promise((resolve, reject) => {
          const s = net.connect(w.port, '127.0.0.1');
          s.setNoDelay(true);
          s.on('connect', () => {
            connectedAt[j] = Date.now();
            s.write('GET /ws?token=');
            resolve();
          });
          s.on('data', (d) => answered.push(d.toString('latin1').slice(0, 40)));
          s.on('close', () => {
            if (!closedAt[j]) closedAt[j] = Date.now();
          });
          s.on('error', (err) => {
            if (!connectedAt[j]) reject(err);
          });
          socks[j] = s;
        }),
      );
    }
    await Promise.all(batch);
  }
  // One more header byte on every connection every 250 ms: a slowloris
  // never lets the connection go silent, so only the deadline can end it.
  const trickle = setInterval(() => {
    for (const s of socks) if (!s.destroyed && s.writable) s.write('a');
  }, 250);
  try {
    await sleep(500);
    // A fresh client in the middle of it.
    const t0 = Date.now();
    const fresh = await connectClient(w.wsUrl(), await w.token('fresh'), { name: 'fresh' });
    const connectMs = Date.now() - t0;
    t.diagnostic(`fresh client upgraded and welcomed in ${connectMs} ms with ${N} slowloris connections open`);
    assert.ok(connectMs < 1500, `fresh client took ${connectMs} ms`);

    await waitFor(() => closedAt.every((x) => x > 0), {
      timeout: HANDSHAKE_TIMEOUT + 10000,
      interval: 100,
      what: 'every slowloris connection closed',
    });
    const lifetimes = closedAt.map((c, i) => c - connectedAt[i]).sort((a, b) => a - b);
    const pct = (p) => lifetimes[Math.min(N - 1, Math.floor((p / 100) * N))];
    t.diagnostic(
      `slowloris lifetimes (ms): min ${lifetimes[0]}, p50 ${pct(50)}, p99 ${pct(99)}, max ${lifetimes[N - 1]} ` +
        `(handshake_timeout_ms ${HANDSHAKE_TIMEOUT}, sweep period 1000)`,
    );
    // Never before the deadline (allowing for clock granularity), and all of
    // them by the deadline plus one sweep period plus slack for a busy box.
    assert.ok(lifetimes[0] >= HANDSHAKE_TIMEOUT - 50, `a connection was closed after ${lifetimes[0]} ms`);
    assert.ok(lifetimes[N - 1] <= HANDSHAKE_TIMEOUT + 4000, `a connection lived ${lifetimes[N - 1]} ms`);
    assert.deepEqual(answered, [], 'a slowloris connection got an HTTP answer instead of a close');
    const st = await w.stats();
    assert.ok(st.handshakes.timeout - before0 >= N, `handshake timeouts counted: ${st.handshakes.timeout - before0}`);
    // The fresh client is still open and served.
    fresh.send({ type: 'ping' });
    await fresh.waitForMessage((m) => m.type === 'pong', { what: 'pong after the slowloris' });
    assert.equal(fresh.closes.length, 0);
    fresh.close();
  } finally {
    clearInterval(trickle);
    for (const s of socks) s.destroy();
  }
});

test('a request head over 8 KiB is answered 431; one just under is upgraded', { timeout: 30000 }, async () => {
  const big = await rawExchange(w.port, upgradeHead(`X-Pad: ${'p'.repeat(8300)}\r\n`));
  assert.match(big, /^HTTP\/1\.1 431 /, `answer: ${big.slice(0, 80)}`);
  // The same head padded to just under 8 KiB in total.
  const base = upgradeHead('X-Pad: \r\n').length;
  const ok = await rawExchange(w.port, upgradeHead(`X-Pad: ${'p'.repeat(8192 - base - 1)}\r\n`), 1500);
  assert.match(ok, /^HTTP\/1\.1 101 /, `answer: ${ok.slice(0, 80)}`);
  // Pipelining an over-size head in many small writes ends the same way.
  const s = net.connect(w.port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  let got = '';
  s.on('data', (d) => (got += d.toString('latin1')));
  s.write('GET /ws HTTP/1.1\r\n');
  for (let i = 0; i < 20 && !got; i++) {
    s.write(`X-Fill-${i}: ${'f'.repeat(500)}\r\n`);
    await sleep(5);
  }
  await waitFor(() => got.length > 0, { timeout: 5000, what: '431 answer to a trickled big head' });
  s.destroy();
  assert.match(got, /^HTTP\/1\.1 431 /);
});

test('server.max_connections: 503 past it, room again after a close', { timeout: 30000 }, async (t) => {
  const clients = [];
  for (let i = 0; i < MAX_CONNECTIONS; i++) clients.push(await connectClient(wMax.wsUrl(), tokenMax, { name: `c${i}` }));
  const r = await openSocket(wMax.wsUrl(), tokenMax);
  assert.equal(r.status, 503, `connection ${MAX_CONNECTIONS + 1} answered ${r.status}`);
  assert.match(r.body, /over_capacity/);
  const st = await wMax.stats();
  t.diagnostic(`connections ${st.connections}, over_limit ${st.handshakes.over_limit}`);
  assert.equal(st.connections, MAX_CONNECTIONS);
  assert.ok(st.handshakes.over_limit >= 1);
  clients.pop().close();
  await waitFor(async () => (await wMax.stats()).connections < MAX_CONNECTIONS, { what: 'a slot freed' });
  clients.push(await connectClient(wMax.wsUrl(), tokenMax, { name: 'again' }));
  for (const c of clients) c.close();
  await waitFor(async () => (await wMax.stats()).connections === 0, { what: 'all closed' });
});

test('server.max_connections counts handshakes in progress: trickling heads fill it, the next gets 503 at once', { timeout: 30000 }, async (t) => {
  const half = MAX_CONNECTIONS / 2;
  const clients = [];
  for (let i = 0; i < half; i++) clients.push(await connectClient(wMax.wsUrl(), tokenMax, { name: `h${i}` }));
  // The other half: connections that never finish their request head.
  const socks = [];
  let closed = 0;
  for (let i = 0; i < half; i++) {
    const s = net.connect(wMax.port, '127.0.0.1');
    await new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    s.on('close', () => closed++);
    s.on('error', () => {});
    s.resume();
    s.write('GET /ws HTTP/1.1\r\n');
    socks.push(s);
  }
  const before = (await wMax.stats()).handshakes.over_limit;
  try {
    // Answered before it sends a byte: nothing of this connection is parsed.
    const t0 = Date.now();
    const answer = await rawExchange(wMax.port, '', 3000);
    t.diagnostic(`connection ${MAX_CONNECTIONS + 1} (${half} open, ${half} handshaking): answered in ${Date.now() - t0} ms`);
    assert.match(answer, /^HTTP\/1\.1 503 /, `answer: ${answer.slice(0, 80)}`);
    assert.match(answer, /over_capacity/);
    const r = await openSocket(wMax.wsUrl(), tokenMax);
    assert.equal(r.status, 503);
    assert.equal((await wMax.stats()).handshakes.over_limit, before + 2);
    // Once the trickling heads reach the handshake timeout, there is room.
    await waitFor(() => closed === half, {
      timeout: HANDSHAKE_TIMEOUT + 4000,
      interval: 50,
      what: 'trickling heads closed at the handshake timeout',
    });
    clients.push(await connectClient(wMax.wsUrl(), tokenMax, { name: 'after' }));
  } finally {
    for (const s of socks) s.destroy();
    for (const c of clients) c.close();
  }
  await waitFor(async () => (await wMax.stats()).connections === 0, { what: 'all closed' });
});

test('message flood: closed with 1008 "rate limit"; a client within the rate is served', { timeout: 30000 }, async (t) => {
  const polite = await connectClient(w.wsUrl(), await w.token('polite'), { name: 'polite' });
  const flooder = await connectClient(w.wsUrl(), token, { name: 'flooder' });
  // 20 messages/s for 2 s: under the rate, all answered.
  const politeTick = setInterval(() => polite.send({ type: 'ping' }), 50);
  const FLOOD = 1000;
  const t0 = Date.now();
  for (let i = 0; i < FLOOD && flooder.connected; i++) flooder.send({ type: 'ping' });
  const close = await flooder.waitForClose();
  const elapsed = (Date.now() - t0) / 1000;
  await sleep(2000);
  clearInterval(politeTick);
  const pongs = flooder.messages.filter((m) => m.type === 'pong').length;
  t.diagnostic(`flooder sent up to ${FLOOD} pings at once: ${pongs} pongs, then close ${close.code} "${close.reason}"`);
  assert.equal(close.code, 1008);
  assert.equal(close.reason, 'rate limit');
  // The burst is the rate, plus what the bucket refilled while the flood
  // was being read (a busy machine spreads it over more time).
  const bound = RATE + Math.ceil(RATE * elapsed);
  t.diagnostic(`flood read in ≤ ${elapsed.toFixed(2)} s: at most ${bound} pongs allowed`);
  assert.ok(pongs >= RATE && pongs <= bound, `${pongs} pongs before the close (bound ${bound})`);
  const sent = polite.messages.length; // welcome + pongs so far
  await waitFor(() => polite.messages.filter((m) => m.type === 'pong').length >= 39, {
    timeout: 5000,
    what: 'polite client pongs',
  });
  t.diagnostic(`polite client: ${polite.messages.filter((m) => m.type === 'pong').length} pongs, still open`);
  assert.ok(sent > 0);
  assert.ok(polite.connected, 'the polite client was closed');
  assert.equal(polite.closes.length, 0);
  polite.close();
});

// Acks answer notifications: a client acking a burst one by one (ack mode
// client) is far over RATE messages/s and must not be cut for it; acks of
// ids it was never sent still count.
test('acking a burst of 10 × the rate one by one is not a flood; unsolicited acks are', { timeout: 60000 }, async (t) => {
  const user = 'burst-acker';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  const pub = await Publisher.open();
  const acks0 = (await w.stats()).client_acks;
  const ids = Array.from({ length: RATE * 10 }, (_, i) => `burst-${Date.now()}-${i}`);
  const t0 = Date.now();
  await pub.publishAll(w.exchange, ids.map((id) => ({ id, user_id: user, title: 'burst' })));
  await c.waitForIds(ids, { timeout: 20000 });
  const ms = Date.now() - t0;
  t.diagnostic(`${ids.length} notifications received and acked one by one in ${ms} ms`);
  // Each ack matched its notification at warren (and was passed to the broker).
  await waitFor(async () => (await w.stats()).client_acks - acks0 === ids.length, { timeout: 15000, what: 'every ack matched' });
  assert.equal(c.closes.length, 0, `closed: ${JSON.stringify(c.closes)}`);
  assert.ok(c.connected);
  assert.equal(c.duplicates, 0);
  // The same connection sending acks nobody asked for is throttled as usual.
  for (let i = 0; i < 1000 && c.connected; i++) c.send({ type: 'ack', id: `never-sent-${i}` });
  const close = await c.waitForClose();
  assert.equal(close.code, 1008);
  assert.equal(close.reason, 'rate limit');
  await pub.close();
});

test('oversized and deeply nested envelopes go to Q.dead; delivery goes on', { timeout: 60000 }, async (t) => {
  const pub = await Publisher.open();
  const user = 'nested-victim';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  const tag = Date.now();
  const deepJson = (depth) =>
    Buffer.from(`{"id":"d-${depth}-${tag}","user_id":"${user}","data":${'['.repeat(depth)}1${']'.repeat(depth)}}`);
  const deepMp = (depth) => {
    const head = Buffer.from(mpEncode({ id: `m-${depth}-${tag}`, user_id: user }));
    // Rewrite the map header to 3 entries and append "data": [[[…nil…]]].
    head[0] = 0x83;
    return Buffer.concat([head, Buffer.from(mpEncode('data')), Buffer.alloc(depth, 0x91), Buffer.from([0xc0])]);
  };
  const poison = [
    ['1 MiB JSON', Buffer.from(JSON.stringify({ id: `big-${tag}`, user_id: user, content: 'x'.repeat(1 << 20) })), 'application/json'],
    ['JSON nested 40 deep', deepJson(40), 'application/json'],
    ['JSON nested 30000 deep', deepJson(30000), 'application/json'],
    ['msgpack nested 40 deep', deepMp(40), 'application/msgpack'],
    ['msgpack nested 60000 deep', deepMp(60000), 'application/msgpack'],
  ];
  for (const [label, body, ct] of poison) {
    await pub.publishRaw(w.exchange, body, { contentType: ct, properties: { messageId: `poison-${label}` } });
  }
  // Nesting within the limit is a normal notification.
  const fine = { id: `fine-${tag}`, user_id: user, data: JSON.parse(`${'['.repeat(20)}1${']'.repeat(20)}`) };
  const { body, contentType } = encodeEnvelope(fine);
  await pub.publishRaw(w.exchange, body, { contentType });
  await pub.confirmed();
  await c.waitForIds([fine.id]);
  await waitFor(async () => (await queueCount(w.deadQueue)) === poison.length, {
    timeout: 15000,
    what: `${poison.length} messages in ${w.deadQueue}`,
  });
  const dead = await w.drain(w.deadQueue);
  assert.deepEqual(
    dead.map((m) => m.properties.messageId).sort(),
    poison.map(([label]) => `poison-${label}`).sort(),
  );
  assert.deepEqual(
    c.notifications.map((m) => m.id),
    [fine.id],
  );
  assert.ok(w.running, 'warren exited');
  const st = await w.stats();
  t.diagnostic(`dead-lettered: ${JSON.stringify(st.dead_lettered_by_reason)}`);
  await pub.close();
  c.close();
});
