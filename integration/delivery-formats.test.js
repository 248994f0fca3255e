// JSON and MessagePack envelopes (with application/json, application/msgpack,
// application/x-msgpack and no content type) reach warren.json clients as
// JSON text frames and warren.msgpack clients as MessagePack binary frames,
// with every payload field intact and every routing field removed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { encode as msgpackEncode, decode as msgpackDecode } from '@msgpack/msgpack';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, routingFieldsIn, waitFor } from './lib/index.js';

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

// Integers beyond int64 and uint64, a uint64 past INT64_MAX and a NUL inside
// a string are valid in both body formats. A warren.json client gets the very
// digits and the \u0000 escape; a warren.msgpack client the exact uint64
// (beyond uint64, the nearest float64: the number JSON.parse reads from the
// same digits) and the string with its NUL. JavaScript's JSON.parse cannot
// keep such digits, so the JSON frames are checked as text.
test('big integers, uint64 and NUL in strings reach both client formats exactly', { timeout: 30000 }, async () => {
  if (!w.running) await w.start();
  const user = 'fmt-big';
  const tok = await w.token(user);
  const jsonClient = await connectClient(w.wsUrl(), tok, { protocol: 'warren.json', name: 'big-json' });
  const mpClient = await connectClient(w.wsUrl(), tok, { protocol: 'warren.msgpack', name: 'big-msgpack' });
  const jsonText = new Map(); // id -> the text frame as sent
  const mpExact = new Map(); // id -> the binary frame decoded with 64-bit integers as BigInt
  jsonClient.ws.on('message', (data, isBinary) => {
    if (!isBinary) jsonText.set(JSON.parse(data.toString('utf8')).id, data.toString('utf8'));
  });
  mpClient.ws.on('message', (data, isBinary) => {
    if (isBinary) {
      const m = msgpackDecode(data, { useBigInt64: true });
      mpExact.set(m.id, m);
    }
  });

  const tag = Date.now();
  const data = '{"big":123456789012345678901234567890,"u":18446744073709551615,"s":"a\\u0000b"}';
  const fast = `json-big-${tag}`;
  const full = `json-big-full-${tag}`;
  const mp = `mp-u64-${tag}`;
  // The fast path takes the first; the escaped key sends the second to the full decoder.
  await pub.publishRaw(w.exchange, Buffer.from(`{"id":"${fast}","user_id":"${user}","data":${data}}`), {
    contentType: 'application/json',
  });
  await pub.publishRaw(w.exchange, Buffer.from(`{"id":"${full}","user\\u005fid":"${user}","data":${data}}`), {
    contentType: 'application/json',
  });
  const mpBody = msgpackEncode(
    { id: mp, user_id: user, data: { u: 18446744073709551615n, past: 9223372036854775808n, s: 'a\u0000b' } },
    { useBigInt64: true },
  );
  await pub.publishRaw(w.exchange, Buffer.from(mpBody), { contentType: 'application/msgpack' });
  await pub.confirmed();
  await jsonClient.waitForIds([fast, full, mp]);
  await mpClient.waitForIds([fast, full, mp]);
  await waitFor(() => jsonText.size >= 3 && mpExact.size >= 3, { what: 'raw frames' });

  for (const id of [fast, full]) {
    assert.equal(jsonText.get(id), `{"type":"notification","id":"${id}","data":${data}}`, `${id} → warren.json`);
    const m = mpExact.get(id);
    assert.equal(m.data.big, JSON.parse('123456789012345678901234567890'), `${id} → warren.msgpack: big`);
    assert.equal(typeof m.data.big, 'number', `${id} → warren.msgpack: big is a float64`);
    assert.equal(m.data.u, 18446744073709551615n, `${id} → warren.msgpack: uint64`);
    assert.equal(m.data.s, 'a\u0000b', `${id} → warren.msgpack: NUL`);
  }
  assert.equal(
    jsonText.get(mp),
    `{"type":"notification","id":"${mp}","data":{"u":18446744073709551615,"past":9223372036854775808,"s":"a\\u0000b"}}`,
    'msgpack body → warren.json',
  );
  assert.deepEqual(mpExact.get(mp).data, { u: 18446744073709551615n, past: 9223372036854775808n, s: 'a\u0000b' });
  await assertQueuesEmpty(w);
});
