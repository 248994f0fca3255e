// Undecodable, untargeted and oversized envelopes are dead-lettered to
// Q.dead (never delivered, never retried) and do not disturb delivery of the
// valid notification that follows them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { encode as msgpackEncode } from '@msgpack/msgpack';
import {
  startWarren,
  cleanupAll,
  connectClient,
  Publisher,
  waitFor,
  queueCount,
  encodeEnvelope,
  httpGet,
} from './lib/index.js';

after(cleanupAll);

test('poison messages go to Q.dead and a valid one is still delivered', { timeout: 60000 }, async () => {
  const w = await startWarren({ name: 'poison', config: { amqp: { max_body_bytes: 512 } } });
  const pub = await Publisher.open();
  const user = 'victim';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: user });
  const tag = Date.now();

  const poison = [
    ['invalid JSON', Buffer.from(`{"id":"p1-${tag}","user_id":"${user}","title":`), 'application/json'],
    ['invalid msgpack', Buffer.from([0x81, 0xa2, 0x69, 0x64, 0xc1]), 'application/msgpack'],
    ['no target', Buffer.from(JSON.stringify({ id: `p3-${tag}`, title: 'to nobody' })), 'application/json'],
    [
      'too large',
      Buffer.from(JSON.stringify({ id: `p4-${tag}`, user_id: user, content: 'x'.repeat(2000) })),
      'application/json',
    ],
    ['not an object', Buffer.from('["user_id","victim"]'), 'application/json'],
    ['user id beyond int64', Buffer.from(`{"id":"p6-${tag}","user_id":123456789012345678901234567890}`), 'application/json'],
  ];
  for (const [label, body, ct] of poison) {
    await pub.publishRaw(w.exchange, body, { contentType: ct, properties: { messageId: `poison-${label}` } });
  }
  const valid = { id: `valid-${tag}`, user_id: user, title: 'still works' };
  const { body, contentType } = encodeEnvelope(valid);
  await pub.publishRaw(w.exchange, body, { contentType });
  await pub.confirmed();

  await c.waitForIds([valid.id]);
  await waitFor(async () => (await queueCount(w.deadQueue)) === poison.length, {
    timeout: 10000,
    what: `${poison.length} messages in ${w.deadQueue}`,
  });
  const dead = await w.drain(w.deadQueue);
  assert.deepEqual(
    dead.map((m) => m.properties.messageId).sort(),
    poison.map(([label]) => `poison-${label}`).sort(),
    'Q.dead does not hold exactly the poison messages',
  );
  assert.deepEqual(
    c.notifications.map((m) => m.id),
    [valid.id],
    'the client received something other than the valid notification',
  );
  for (const q of [w.queue, ...w.retryQueues, w.parkedQueue]) {
    assert.equal(await queueCount(q), 0, `${q} not empty`);
  }
  await pub.close();
});

// A body within amqp.max_body_bytes whose client message would grow past
// 2 x max_body_bytes + 2 KiB in the other format (a MessagePack string of
// control characters becomes \u0001 escapes in JSON; JSON reals become 9-byte
// float64s in MessagePack) is dead-lettered as too_large: no client of either
// format gets it. Bodies that grow less are delivered to both formats.
test('a notification too large for one client format goes to Q.dead as too_large', { timeout: 60000 }, async () => {
  const maxBody = 16384; // client messages up to 2 x 16384 + 2048 = 34816 bytes
  const w = await startWarren({ name: 'poison-growth', config: { amqp: { max_body_bytes: maxBody } } });
  const pub = await Publisher.open();
  const user = 'grower';
  const tok = await w.token(user);
  const jsonClient = await connectClient(w.wsUrl(), tok, { protocol: 'warren.json', name: 'grow-json' });
  const mpClient = await connectClient(w.wsUrl(), tok, { protocol: 'warren.msgpack', name: 'grow-msgpack' });
  const tag = Date.now();
  const reals = (id, n) => Buffer.from(`{"id":"${id}","user_id":"${user}","r":[${new Array(n).fill('1.5').join(',')}]}`);

  const tooLarge = [
    // 16,000 bytes of MessagePack, 96,000 of JSON text.
    ['control characters', Buffer.from(msgpackEncode({ id: `g1-${tag}`, user_id: user, s: '\u0001'.repeat(16000) })), 'application/msgpack'],
    // About 16,300 bytes of JSON, 36,800 of MessagePack.
    ['reals', reals(`g2-${tag}`, 4060), 'application/json'],
  ];
  for (const [label, body, ct] of tooLarge) {
    assert.ok(body.length <= maxBody, `${label}: body of ${body.length} bytes`);
    await pub.publishRaw(w.exchange, body, { contentType: ct, properties: { messageId: `too-large-${label}` } });
  }
  const fits = [
    { id: `ok1-${tag}`, body: Buffer.from(msgpackEncode({ id: `ok1-${tag}`, user_id: user, s: 'plain text '.repeat(1450) })), ct: 'application/msgpack' },
    { id: `ok2-${tag}`, body: Buffer.from(msgpackEncode({ id: `ok2-${tag}`, user_id: user, s: '\u0001'.repeat(5000) })), ct: 'application/msgpack' },
    { id: `ok3-${tag}`, body: reals(`ok3-${tag}`, 3000), ct: 'application/json' },
  ];
  for (const f of fits) {
    assert.ok(f.body.length <= maxBody);
    await pub.publishRaw(w.exchange, f.body, { contentType: f.ct });
  }
  await pub.confirmed();

  const ids = fits.map((f) => f.id);
  await jsonClient.waitForIds(ids);
  await mpClient.waitForIds(ids);
  await waitFor(async () => (await queueCount(w.deadQueue)) === tooLarge.length, {
    timeout: 10000,
    what: `${tooLarge.length} messages in ${w.deadQueue}`,
  });
  const dead = await w.drain(w.deadQueue);
  assert.deepEqual(
    dead.map((m) => m.properties.messageId).sort(),
    tooLarge.map(([label]) => `too-large-${label}`).sort(),
  );
  const metrics = (await httpGet(`${w.adminUrl}/metrics`)).body;
  assert.match(metrics, /^warren_dead_lettered_total\{reason="too_large"\} 2$/m);
  for (const c of [jsonClient, mpClient]) {
    assert.deepEqual(c.notifications.map((m) => m.id).sort(), [...ids].sort(), `${c.opts.protocol} client`);
    const ok2 = c.notifications.find((m) => m.id === `ok2-${tag}`);
    assert.equal(ok2.s, '\u0001'.repeat(5000), `${c.opts.protocol} client: control characters`);
    assert.equal(c.notifications.find((m) => m.id === `ok3-${tag}`).r.length, 3000);
  }
  await pub.close();
});
