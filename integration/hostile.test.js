// Hostile-but-valid publishes: messages the broker accepts but that push at
// a limit somewhere in warren (ids at the AMQP short-string limit, header
// tables rabbitmq-c cannot copy or that no longer fit a frame once warren's
// headers are added, extreme timestamps and numbers, x-warren-* headers set
// by a publisher, reserved types). Each must end in a counted outcome —
// delivered to the client, parked, or in Q.dead — without a reconnect, with
// /readyz 200 throughout, and the next notification must still flow (the
// README's "Delivery guarantees"; amqp/README.md "Hostile publishes").
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  startWarren,
  cleanupAll,
  connectClient,
  Publisher,
  waitFor,
  queueCount,
  drainQueue,
  ensureBroker,
  httpGet,
  sleep,
  randomHex,
  rawPublish,
  signJwt,
  encodeProperties,
  maxPropertiesBytes,
} from './lib/index.js';

after(cleanupAll);

const ONLINE = 'victim';
const OFFLINE = 'ghost';
const BYSTANDER = 'bystander';
const MAX_ATTEMPTS = 3;

function headerString(v) {
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
}

// An id of exactly n bytes that says which case it belongs to.
function idOf(tag, name, n) {
  const s = `${name}-${tag}-`;
  assert.ok(s.length < n, `${s} is longer than ${n}`);
  return s + 'x'.repeat(n - s.length);
}

// Polls /readyz every 100 ms for the whole test and remembers every answer
// that was not 200.
function readyMonitor(w) {
  const bad = [];
  let on = true;
  const done = (async () => {
    while (on) {
      const r = await httpGet(`${w.adminUrl}/readyz`, 1000).catch((err) => ({ status: err.message }));
      if (r.status !== 200) bad.push({ at: new Date().toISOString(), status: r.status });
      await sleep(100);
    }
  })();
  return {
    bad,
    stop: async () => {
      on = false;
      await done;
    },
  };
}

// The properties of a message whose header table fills the content header
// frame up to `slack` bytes short of frame_max (131072 on the test broker).
function bigHeaderProps(slack, contentType = 'application/json') {
  const base = encodeProperties({ contentType, deliveryMode: 2, headers: [['big', '']] }).length;
  const n = maxPropertiesBytes() - slack - base;
  const props = { contentType, headers: [['big', 'h'.repeat(n)]] };
  assert.equal(encodeProperties({ ...props, deliveryMode: 2 }).length, maxPropertiesBytes() - slack);
  return props;
}

// The cases: name; expect, the outcomes that count as correct ('client',
// 'mailbox' (the offline user's), 'parked', 'dead'); n, the length of the id;
// publish(ctx, id) sends the hostile message; check(found, ctx) looks closer
// at where it went; config, settings of its own (the ladder path: mailboxes
// off, so the copy climbs the ladder until parked).
function hostileCases() {
  const cases = [];
  const json = (ctx, body, properties) => ctx.publishJson(body, properties);
  const ladder = { mailbox: { enabled: false } };

  for (const [who, user] of [
    ['offline', OFFLINE],
    ['online', ONLINE],
  ]) {
    const landed = who === 'offline' ? 'mailbox' : 'client';
    // Offline copies go to the user's mailbox; the ladder, with mailboxes
    // off (or as their fallback), builds its copies the same way: the id and
    // header cases run once more on it.
    if (who === 'offline') {
      cases.push({
        name: 'id of 256 bytes, offline, ladder',
        config: ladder,
        expect: ['parked'],
        n: 256,
        publish: (ctx, id) => json(ctx, { id, user_id: user, title: 't' }),
        check: (m) => {
          assert.equal(m.msg.properties.messageId, undefined);
          assert.equal(m.msg.json.id, m.id);
          assert.equal(Number(m.msg.headers['x-warren-attempt']), MAX_ATTEMPTS);
        },
      });
      cases.push({
        name: 'headers 200 bytes short of the frame (x-death growth), offline, ladder',
        config: ladder,
        expect: ['parked'],
        n: 40,
        publish: (ctx, id) => ctx.publishBig(id, user, 200),
        check: (m) => assert.equal(headerString(m.msg.headers['x-warren-user']), OFFLINE),
      });
    }
    cases.push({
      name: `id of 255 bytes, ${who}`,
      expect: [landed],
      n: 255,
      publish: (ctx, id) => json(ctx, { id, user_id: user, title: 't' }),
      check: (m) => {
        if (m.where === 'mailbox') assert.equal(m.msg.properties.messageId, m.id, 'the copy keeps message_id');
      },
    });
    cases.push({
      name: `id of 256 bytes, ${who}`,
      expect: [landed],
      n: 256,
      publish: (ctx, id) => json(ctx, { id, user_id: user, title: 't' }),
      check: (m) => {
        if (m.where !== 'mailbox') return;
        // 256 bytes cannot be an AMQP message_id: the copy goes without it
        // and the id travels in the body.
        assert.equal(m.msg.properties.messageId, undefined);
        assert.equal(m.msg.json.id, m.id);
        assert.equal(headerString(m.msg.headers['x-warren-user']), OFFLINE);
      },
    });
    cases.push({
      name: `id of 300 bytes, ${who}`,
      expect: ['dead'],
      n: 300,
      publish: (ctx, id) => json(ctx, { id, user_id: user, title: 't' }),
    });
    cases.push({
      name: `message_id property of 255 bytes, ${who}`,
      expect: [landed],
      n: 255,
      publish: (ctx, id) => json(ctx, { user_id: user }, { messageId: id }),
      check: (m) => {
        if (m.where === 'mailbox') assert.equal(m.msg.properties.messageId, m.id);
      },
    });
    cases.push({
      name: `header with an empty key, ${who}`,
      expect: [landed],
      n: 40,
      publish: (ctx, id) => json(ctx, { id, user_id: user }, { headers: { '': 'empty key', trace: 't1' } }),
      check: (m) => {
        if (m.where !== 'mailbox') return;
        assert.equal(headerString(m.msg.headers['']), 'empty key', 'the empty-key header travels with the copy');
        assert.equal(headerString(m.msg.headers.trace), 't1');
      },
    });
    cases.push({
      name: `headers filling the frame (copy does not fit), ${who}`,
      expect: [landed],
      n: 40,
      publish: (ctx, id) => ctx.publishBig(id, user, 16),
      check: (m) => {
        if (m.where !== 'mailbox') return;
        assert.equal(m.msg.headers.big, undefined, 'the copy dropped the headers that did not fit');
        assert.equal(headerString(m.msg.headers['x-warren-user']), OFFLINE, "warren's own headers are kept");
        assert.equal(m.msg.json.id, m.id);
      },
    });
    // The copy fits the frame, but the broker adds x-death (and
    // x-first-death-*) when the ladder queue dead-letters it back to Q; the
    // content header it then delivers must still fit warren's frame_max.
    cases.push({
      name: `headers 200 bytes short of the frame (x-death growth), ${who}`,
      expect: [landed],
      n: 40,
      publish: (ctx, id) => ctx.publishBig(id, user, 200),
      check: (m) => {
        if (m.where !== 'mailbox') return;
        assert.equal(headerString(m.msg.headers['x-warren-user']), OFFLINE);
        assert.equal(m.msg.json.id, m.id);
      },
    });
    cases.push({
      name: `AMQP timestamp 2^62, ${who}`,
      expect: [landed],
      n: 40,
      publish: (ctx, id) => json(ctx, { id, user_id: user, title: 'far future' }, { timestamp: 2 ** 62 }),
    });
  }
  // A huge expires_at means "never expires" or is refused as bad_field;
  // parked as expired would be wrong.
  for (const exp of ['1e300', '9223372036854775807']) {
    cases.push({
      name: `expires_at ${exp}, online`,
      expect: ['client', 'dead'],
      n: 40,
      publish: (ctx, id) => json(ctx, `{"id":"${id}","user_id":"${ONLINE}","title":"never","expires_at":${exp}}`),
    });
  }
  cases.push({
    name: 'integer beyond int64 in data, online',
    expect: ['client'],
    n: 40,
    publish: (ctx, id) => json(ctx, `{"id":"${id}","user_id":"${ONLINE}","data":{"n":123456789012345678901234567890}}`),
    check: (m) => assert.match(m.frame, /"n":\s*123456789012345678901234567890[,}]/, `frame: ${m.frame}`),
  });
  cases.push({
    name: 'x-warren-user/attempt/expires-at on an original, online',
    expect: ['client'],
    n: 40,
    publish: (ctx, id) =>
      json(
        ctx,
        { id, user_id: ONLINE, title: 'not for the bystander' },
        { headers: { 'x-warren-user': BYSTANDER, 'x-warren-attempt': 4294967295, 'x-warren-expires-at': 1 } },
      ),
    check: async (m, ctx) => {
      await sleep(300);
      assert.ok(!ctx.bystander.messages.some((x) => x.id === m.id), 'x-warren-user on an original retargeted it');
    },
  });
  cases.push({
    name: 'x-warren-attempt on an original, offline',
    expect: ['mailbox'],
    n: 40,
    publish: (ctx, id) => json(ctx, { id, user_id: OFFLINE }, { headers: { 'x-warren-attempt': 1000 } }),
    // Honoured, the mailbox copy would carry attempt 1000 (and its ladder
    // fallback park it at once); ignored, it starts at 0.
    check: (m) => assert.equal(Number(m.msg.headers['x-warren-attempt']), 0),
  });
  cases.push({
    name: 'x-warren-attempt on an original, offline, ladder',
    config: ladder,
    expect: ['parked'],
    n: 40,
    publish: (ctx, id) => json(ctx, { id, user_id: OFFLINE }, { headers: { 'x-warren-attempt': 1000 } }),
    // Honoured, it would be parked at once with attempt 1001; ignored, the
    // copy climbs the whole ladder.
    check: (m) => assert.equal(Number(m.msg.headers['x-warren-attempt']), MAX_ATTEMPTS),
  });
  for (const type of ['welcome', 'pong']) {
    cases.push({
      name: `type ${type}, online`,
      expect: ['client', 'dead'],
      n: 40,
      publish: (ctx, id) => json(ctx, { id, user_id: ONLINE, type }),
    });
  }
  return cases;
}

// One case on a daemon and queues of its own, so that a case that breaks
// warren cannot make the next one fail: publish it, then a sentinel for the
// online user; the sentinel must arrive, the hostile message must end where
// the case expects it, with no reconnect and /readyz 200 all along; at the
// end warren stops cleanly with every queue empty.
async function runCase(t, k, tag, seq) {
  const w = await startWarren({
    name: `hostile-${seq}`,
    config: { amqp: { retry_delays_ms: '200', max_attempts: MAX_ATTEMPTS, max_body_bytes: 4096 }, ...(k.config || {}) },
  });
  const broker = await ensureBroker();
  const pub = await Publisher.open();
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const c = await connectClient(w.wsUrl(), signJwt({ sub: ONLINE, exp }, w.secret), { name: ONLINE });
  const bystander = await connectClient(w.wsUrl(), signJwt({ sub: BYSTANDER, exp }, w.secret), { name: BYSTANDER });
  // Raw frames as the browser gets them: JSON.parse would round a big
  // integer, and the harness client files a frame typed welcome or pong
  // under its own protocol messages, not notifications.
  const frames = new Map(); // id -> raw text of the first frame carrying it
  c.ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString('utf8');
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    if (m && m.id !== undefined && !frames.has(m.id)) frames.set(m.id, text);
    // The harness acks notifications; it does not ack what it takes for
    // protocol messages, so do it here for a notification typed like one.
    if (m && (m.type === 'welcome' || m.type === 'pong') && m.id !== undefined) c.ack(m.id);
  });
  const ready = readyMonitor(w);
  const reconnects0 = (await w.stats()).reconnects;
  const ctx = {
    bystander,
    publishJson: async (body, properties = {}) => {
      const buf = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      await pub.publishRaw(w.exchange, buf, { contentType: 'application/json', properties });
      await pub.confirmed();
    },
    publishBig: (id, user, slack) =>
      rawPublish(broker.url, {
        exchange: w.exchange,
        routingKey: 'notify',
        properties: bigHeaderProps(slack),
        body: JSON.stringify({ id, user_id: user, title: 'big headers' }),
      }),
  };
  const where = async (id) => {
    if (frames.has(id)) return { where: 'client', frame: frames.get(id) };
    for (const [name, q] of [
      ['mailbox', `${w.queue}.mbox.u.${OFFLINE}`],
      ['parked', w.parkedQueue],
      ['dead', w.deadQueue],
    ]) {
      if (!(await queueCount(q))) continue;
      const msgs = await drainQueue(q);
      const msg = msgs.find((x) => x.id === id);
      assert.deepEqual(msgs.filter((x) => x !== msg).map((x) => x.id), [], `unexpected messages in ${q}`);
      if (msg) return { where: name, msg };
    }
    return null;
  };

  try {
    const id = idOf(tag, `h${seq}`, k.n);
    await k.publish(ctx, id);
    const sentinel = `sentinel-${tag}-${seq}`;
    await ctx.publishJson({ id: sentinel, user_id: ONLINE, title: 'next' });
    await c.waitForIds([sentinel], { timeout: 10000 });
    const found = await waitFor(() => where(id), {
      timeout: 15000,
      interval: 100,
      what: `the message to end in ${k.expect.join(' or ')}`,
    }).catch(async (err) => {
      const st = await w.stats().catch(() => ({}));
      throw new Error(`${err.message}; queues ${JSON.stringify(await w.counts())}, reconnects ${st.reconnects}`);
    });
    t.diagnostic(`${k.name}: ${found.where}`);
    assert.ok(k.expect.includes(found.where), `ended in ${found.where}, expected ${k.expect.join(' or ')}`);
    if (k.check) await k.check({ id, ...found }, ctx);
    assert.equal((await w.stats()).reconnects, reconnects0, 'warren reconnected to the broker');
    await ready.stop();
    assert.deepEqual(ready.bad, [], '/readyz was not 200');
    // Nothing left anywhere, and nothing held unacked (stopping warren
    // would put that back in Q).
    const stop = await w.stop('SIGTERM');
    assert.equal(stop.code, 0, `warren exited with ${JSON.stringify(stop)}`);
    const left = await w.counts();
    assert.ok(Object.values(left).every((n) => n === 0), `queues not empty at the end: ${JSON.stringify(left)}`);
  } finally {
    await ready.stop();
    c.close();
    bystander.close();
    await pub.close();
    await w.cleanup();
  }
}

test('hostile-but-valid publishes each end in a counted outcome, with no reconnect', { timeout: 900000 }, async (t) => {
  const tag = randomHex(4);
  let seq = 0;
  for (const k of hostileCases()) {
    seq++;
    await t.test(k.name, { timeout: 60000 }, (st) => runCase(st, k, tag, seq));
  }
});

function vmHWM(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) * 1024;
}

test('a body over max_body_bytes goes to Q.dead without being buffered', { timeout: 60000 }, async (t) => {
  const w = await startWarren({ name: 'hostile-big', config: { amqp: { max_body_bytes: 512 } } });
  const pub = await Publisher.open();
  const c = await connectClient(w.wsUrl(), await w.token(ONLINE), { name: ONLINE });
  const tag = randomHex(4);
  const publish = async (env) => {
    await pub.publishRaw(w.exchange, Buffer.from(JSON.stringify(env)), { contentType: 'application/json' });
    await pub.confirmed();
  };
  // Warm up every path first, so the peak below measures the big body only.
  for (let i = 0; i < 5; i++) await publish({ id: `warm-${tag}-${i}`, user_id: ONLINE, title: 'warm' });
  await c.waitForIds([0, 1, 2, 3, 4].map((i) => `warm-${tag}-${i}`));
  const reconnects0 = (await w.stats()).reconnects;
  const before = vmHWM(w.pid);

  // 1 MiB, then 4 MiB: buffered, the second alone would raise the peak by
  // 4 MiB (8 MiB counting the rabbitmq-c frame pages it used to pin).
  const sizes = [1024 * 1024, 4 * 1024 * 1024];
  const bigIds = sizes.map((n) => `big-${n}-${tag}`);
  for (let i = 0; i < sizes.length; i++) {
    await publish({ id: bigIds[i], user_id: ONLINE, content: 'x'.repeat(sizes[i]) });
    await publish({ id: `after-${i}-${tag}`, user_id: ONLINE, title: 'next' });
    await c.waitForIds([`after-${i}-${tag}`]);
  }
  await waitFor(async () => (await queueCount(w.deadQueue)) === sizes.length, {
    timeout: 10000,
    what: `${sizes.length} messages in ${w.deadQueue}`,
  });
  const grew = vmHWM(w.pid) - before;
  t.diagnostic(`peak RSS before ${before} bytes, growth ${grew} bytes for bodies of ${sizes.join(' and ')} bytes`);

  const dead = await w.drain(w.deadQueue);
  assert.deepEqual(dead.map((m) => m.id), bigIds);
  for (let i = 0; i < sizes.length; i++) assert.ok(dead[i].body.length > sizes[i], 'Q.dead holds the whole body');
  for (const id of bigIds) assert.ok(!c.ids.has(id), 'an oversized notification reached the client');
  // Never held whole: the peak grows by a few rabbitmq-c frame pages (128 KiB
  // each), far less than the 1 MiB of the smaller body.
  assert.ok(grew < 1024 * 1024, `warren's peak RSS grew by ${grew} bytes while it handled those bodies`);
  assert.equal((await w.stats()).reconnects, reconnects0);
  assert.equal(await w.readyz(), 200);
  await pub.close();
});
