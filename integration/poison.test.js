// Undecodable, untargeted and oversized envelopes are dead-lettered to
// Q.dead (never delivered, never retried) and do not disturb delivery of the
// valid notification that follows them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, waitFor, queueCount, encodeEnvelope } from './lib/index.js';

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
