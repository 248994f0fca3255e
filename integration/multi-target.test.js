// Every open connection of a user receives its notifications; a user_ids
// notification reaches each target and never reveals the other recipients;
// users who are not targeted receive nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWarren, cleanupAll, connectClient, Publisher, assertQueuesEmpty, routingFieldsIn } from './lib/index.js';

let w;
let pub;
before(async () => {
  w = await startWarren({ name: 'multi' });
  pub = await Publisher.open();
});
after(cleanupAll);

test('two connections of one user, user_ids and integer user ids', { timeout: 60000 }, async () => {
  const url = w.wsUrl();
  const a1 = await connectClient(url, await w.token('alice'), { name: 'alice-1' });
  const a2 = await connectClient(url, await w.token('alice'), { name: 'alice-2', protocol: 'warren.msgpack' });
  const b = await connectClient(url, await w.token('bob'), { name: 'bob' });
  const n = await connectClient(url, await w.token('1001'), { name: '1001' });
  const carol = await connectClient(url, await w.token('carol'), { name: 'carol' });

  const tag = Date.now();
  const single = { id: `single-${tag}`, user_id: 'alice', title: 'for alice' };
  const multi = { id: `multi-${tag}`, user_ids: ['alice', 'bob', 1001], title: 'for three' };
  const numeric = { id: `num-${tag}`, user_id: 1001, title: 'integer user id' };
  const sentinel = { id: `sentinel-${tag}`, user_id: 'carol', title: 'last' };
  for (const e of [single, multi, numeric]) await pub.publish(w.exchange, e);
  await pub.confirmed();
  await a1.waitForIds([single.id, multi.id]);
  await a2.waitForIds([single.id, multi.id]);
  await b.waitForIds([multi.id]);
  await n.waitForIds([multi.id, numeric.id]);
  // carol is online but not targeted: once her own later notification has
  // arrived, she must have received nothing else.
  await pub.publishAll(w.exchange, [sentinel]);
  await carol.waitForIds([sentinel.id]);

  for (const c of [a1, a2, b, n]) {
    for (const m of c.notifications) {
      assert.deepEqual(routingFieldsIn(m), [], `${c.opts.name}: routing fields in ${JSON.stringify(m)}`);
    }
    assert.equal(c.duplicates, 0, `${c.opts.name}: duplicates`);
  }
  assert.deepEqual(
    b.notifications.map((m) => m.id),
    [multi.id],
    'bob received something not meant for him',
  );
  assert.deepEqual(
    n.notifications.map((m) => m.id).sort(),
    [multi.id, numeric.id].sort(),
  );
  assert.deepEqual(
    carol.notifications.map((m) => m.id),
    [sentinel.id],
    'carol received notifications for other users',
  );
  assert.equal(a1.notifications.find((m) => m.id === multi.id).title, 'for three');
  await assertQueuesEmpty(w);
});
