// JSON and MessagePack envelopes (with application/json, application/msgpack,
// application/x-msgpack and no content type) reach warren.json clients as
// JSON text frames and warren.msgpack clients as MessagePack binary frames,
// with every payload field intact and every routing field removed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, routingFieldsIn } from './lib/index.js';

let w;
let pub;
before(async () => {
  w = await startWarren({ name: 'formats' });
  pub = await Publisher.open();
});
after(cleanupAll);

const CASES = [
  { label: 'json, application/json', format: 'json', contentType: undefined },
  { label: 'json, no content type', format: 'json', contentType: null },
  { label: 'msgpack, application/msgpack', format: 'msgpack', contentType: undefined },
  { label: 'msgpack, application/x-msgpack', format: 'msgpack', contentType: 'application/x-msgpack' },
  { label: 'msgpack, no content type', format: 'msgpack', contentType: null },
];

test('every envelope format reaches json and msgpack clients with payload intact', { timeout: 60000 }, async () => {
  const user = 'fmt-user';
  const tok = await w.token(user);
  const jsonClient = await connectClient(w.wsUrl(), tok, { protocol: 'warren.json', name: 'json' });
  const mpClient = await connectClient(w.wsUrl(), tok, { protocol: 'warren.msgpack', name: 'msgpack' });
  assert.equal(jsonClient.welcome.user_id, user);
  assert.equal(mpClient.welcome.user_id, user);
  assert.equal(jsonClient.welcome.ack_mode, 'client');

  const sent = CASES.map((c, i) => ({
    case: c,
    env: {
      id: `fmt-${i}-${Date.now()}`,
      user_id: user,
      type: i % 2 ? 'order.paid' : undefined,
      title: `Title ${i} é ✓`,
      content: c.label,
      data: { order: 20260515001 + i, items: [1, 'two', { three: true }], nested: { deep: null } },
      extra_field: i,
      ttl_ms: 600000,
      expires_at: Math.floor(Date.now() / 1000) + 3600,
    },
  }));
  for (const s of sent) {
    if (s.env.type === undefined) delete s.env.type;
    await pub.publish(w.exchange, s.env, { format: s.case.format, contentType: s.case.contentType });
  }
  await pub.confirmed();

  const ids = sent.map((s) => s.env.id);
  await jsonClient.waitForIds(ids);
  await mpClient.waitForIds(ids);

  for (const [client, frameKind] of [
    [jsonClient, 'text'],
    [mpClient, 'binary'],
  ]) {
    for (const s of sent) {
      const m = client.notifications.find((n) => n.id === s.env.id);
      const where = `${s.case.label} → ${client.opts.protocol}`;
      assert.ok(m, `${where}: not received`);
      assert.equal(m.type, s.env.type || 'notification', `${where}: type`);
      assert.equal(m.title, s.env.title, `${where}: title`);
      assert.equal(m.content, s.env.content, `${where}: content`);
      assert.deepEqual(m.data, s.env.data, `${where}: data`);
      assert.equal(m.extra_field, s.env.extra_field, `${where}: extra field`);
      assert.deepEqual(routingFieldsIn(m), [], `${where}: routing fields leaked`);
    }
    const other = frameKind === 'text' ? 'binary' : 'text';
    assert.equal(client.frames[other], 0, `${client.opts.protocol} client got ${other} frames`);
    assert.equal(client.duplicates, 0, `${client.opts.protocol} client got duplicates`);
  }
  // Both clients auto-acked, so nothing may be left in any queue.
  await assertQueuesEmpty(w);
});

test('an envelope without id gets one from message_id, else a generated one', { timeout: 30000 }, async () => {
  if (!w.running) await w.start();
  const user = 'fmt-noid';
  const c = await connectClient(w.wsUrl(), await w.token(user), { name: 'noid' });
  await pub.publish(w.exchange, { user_id: user, title: 'from message_id' }, { properties: { messageId: 'amqp-msg-id-1' } });
  await pub.publish(w.exchange, { user_id: user, title: 'generated' });
  await pub.confirmed();
  await c.waitForMessage((m) => m.title === 'generated');
  await c.waitForMessage((m) => m.title === 'from message_id');
  const a = c.notifications.find((m) => m.title === 'from message_id');
  const b = c.notifications.find((m) => m.title === 'generated');
  assert.equal(a.id, 'amqp-msg-id-1');
  assert.equal(typeof b.id, 'string');
  assert.ok(b.id.length > 0, 'generated id is empty');
});
