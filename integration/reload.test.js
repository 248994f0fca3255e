// SIGHUP reloads the configuration as often as an operator wants: key
// rotation never stops working, delivery settings a running process can
// apply (ack.timeout_ms) take effect for what is in flight, and keys that
// need a restart keep their running values with a warning.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startWarren, cleanupAll, connectClient, openSocket, signJwt, Publisher, waitFor, randomHex } from './lib/index.js';

after(cleanupAll);

function rewrite(w, edits) {
  let ini = fs.readFileSync(w.iniFile, 'utf8');
  for (const [section, key, value] of edits) {
    const re = new RegExp(`^${key} = .*$`, 'm');
    // Keys the harness wrote are replaced in place; others go under their section.
    if (re.test(ini)) ini = ini.replace(re, `${key} = ${value}`);
    else ini = ini.replace(`[${section}]\n`, `[${section}]\n${key} = ${value}\n`);
  }
  fs.writeFileSync(w.iniFile, ini);
}

const reloads = (w) => (w.logText().match(/SIGHUP: reloaded/g) || []).length;

test('40 key rotations by SIGHUP: each new secret works, the previous one is refused', { timeout: 120000 }, async (t) => {
  const w = await startWarren({ name: 'rotate' });
  const exp = Math.floor(Date.now() / 1000) + 600;
  const keeper = await connectClient(w.wsUrl(), await w.token('keeper'), { name: 'keeper' });
  let previous = w.secret;
  for (let i = 1; i <= 40; i++) {
    const secret = `rot-${i}-${randomHex(16)}`;
    rewrite(w, [['auth', 'jwt_secret', secret]]);
    w.proc.kill('SIGHUP');
    await waitFor(() => reloads(w) === i, { what: `reload ${i} logged` });
    const ok = await openSocket(w.wsUrl(), signJwt({ sub: `r${i}`, exp }, secret));
    assert.equal(ok.status, 101, `rotation ${i}: the new secret must be accepted`);
    ok.ws.terminate();
    const old = await openSocket(w.wsUrl(), signJwt({ sub: `o${i}`, exp }, previous));
    assert.equal(old.status, 401, `rotation ${i}: the previous secret must be refused`);
    previous = secret;
  }
  // The connection opened before the first rotation is still served.
  const pub = await Publisher.open();
  await pub.publishAll(w.exchange, [{ id: 'after-rotations', user_id: 'keeper' }]);
  await keeper.waitForIds(['after-rotations']);
  t.diagnostic('40 rotations, each applied; the first connection kept receiving');
  await pub.close();
  assert.equal((await w.stop('SIGTERM')).code, 0);
});

test('ack.timeout_ms reloads for notifications in flight; restart-only keys are kept with a warning', { timeout: 60000 }, async (t) => {
  const w = await startWarren({
    name: 'reloadack',
    config: { ack: { timeout_ms: 60000 }, amqp: { retry_delays_ms: '200' } },
  });
  const pub = await Publisher.open();
  const lazy = await connectClient(w.wsUrl(), await w.token('lazy'), { name: 'lazy', autoAck: false });
  const times = [];
  lazy.onMessageListener((m) => {
    if (m.id === 'slow-ack') times.push(Date.now());
  });
  await pub.publishAll(w.exchange, [{ id: 'slow-ack', user_id: 'lazy' }]);
  await waitFor(() => times.length === 1, { what: 'first delivery' });
  // With 60 s it would wait a minute; after the reload it times out in ~1 s.
  rewrite(w, [
    ['ack', 'timeout_ms', 1000],
    ['ack', 'mode', 'write'],
    ['amqp', 'prefetch', 7],
  ]);
  w.proc.kill('SIGHUP');
  await waitFor(() => reloads(w) === 1, { what: 'reload logged' });
  await waitFor(() => times.length >= 2, { timeout: 10000, what: 'redelivery after the reloaded ack timeout' });
  t.diagnostic(`redelivered ${times[1] - times[0]} ms after the first frame`);
  assert.match(w.logText(), /SIGHUP: ack\.mode, amqp\.prefetch changed; restart warren to apply/);
  // ack.mode kept its running value: a new connection is still told "client".
  const probe = await connectClient(w.wsUrl(), await w.token('probe'), { name: 'probe' });
  assert.equal(probe.welcome.ack_mode, 'client');
  lazy.ack('slow-ack');
  await pub.close();
  assert.equal((await w.stop('SIGTERM')).code, 0);
});
