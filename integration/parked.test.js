// With mailboxes off (the ladder only, as before mailboxes, and what a failed
// mailbox publish falls back to), a notification for a user who never
// connects is parked, not dropped, once its attempts are exhausted, with
// x-warren-reason=max_attempts. Mailbox caps and expiry: mailbox.test.js.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, Publisher, waitFor, queueCount } from './lib/index.js';

after(cleanupAll);

function headerString(v) {
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
}

test('max_attempts=2 parks the notification of an always-offline user', { timeout: 60000 }, async () => {
  const w = await startWarren({
    name: 'parked',
    config: { amqp: { retry_delays_ms: '200', max_attempts: 2 }, mailbox: { enabled: false } },
  });
  const pub = await Publisher.open();
  const id = `ghost-${Date.now()}`;
  await pub.publishAll(w.exchange, [{ id, user_id: 'ghost', title: 'nobody home', data: { k: 1 } }]);
  await waitFor(async () => (await queueCount(w.parkedQueue)) === 1, {
    timeout: 20000,
    what: `${w.parkedQueue} to hold 1 message`,
  });
  const msgs = await w.drain(w.parkedQueue);
  assert.equal(msgs.length, 1);
  const m = msgs[0];
  assert.equal(headerString(m.headers['x-warren-reason']), 'max_attempts', `headers: ${JSON.stringify(m.headers)}`);
  assert.equal(headerString(m.headers['x-warren-user']), 'ghost', `headers: ${JSON.stringify(m.headers)}`);
  // The parked copy still carries the notification so an operator can replay it.
  assert.equal(m.id, id, `parked copy: ${m.body.toString('utf8')} ${JSON.stringify(m.properties)}`);
  for (const q of [w.queue, ...w.retryQueues, w.deadQueue]) {
    assert.equal(await queueCount(q), 0, `${q} not empty`);
  }
  await pub.close();
});
