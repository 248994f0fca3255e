// The daemon under valgrind: it serves real traffic (JSON and MessagePack,
// two formats of client, a ladder retry, a poison message), then exits
// cleanly on SIGTERM with no memory error and no leak.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startWarren, cleanupAll, connectClient, Publisher } from './lib/index.js';

after(cleanupAll);

let valgrind = null;
try {
  valgrind = execFileSync('sh', ['-c', 'command -v valgrind'], { encoding: 'utf8' }).trim();
} catch {
  valgrind = null;
}

test('exits clean under valgrind after serving traffic', { skip: valgrind ? false : 'valgrind not installed', timeout: 180000 }, async (t) => {
  const w = await startWarren({
    name: 'valgrind',
    wrapper: [valgrind, '--leak-check=full', '--show-leak-kinds=definite,indirect',
      '--errors-for-leak-kinds=definite,indirect', '--error-exitcode=99', '--track-fds=no'],
    readyTimeout: 90000,
    config: { ack: { timeout_ms: 2000 }, shutdown: { drain_timeout_ms: 5000 } },
  });
  const pub = await Publisher.open();
  const url = w.wsUrl();
  const json = await connectClient(url, await w.token('vg-a'), { name: 'vg-a' });
  const mp = await connectClient(url, await w.token('vg-b'), { name: 'vg-b', protocol: 'warren.msgpack' });
  const ids = [];
  for (let i = 0; i < 20; i++) {
    const id = `vg-${i}`;
    ids.push(id);
    await pub.publish(w.exchange, { id, user_ids: ['vg-a', 'vg-b'], title: `n${i}`, data: { i } }, { format: i % 2 === 1 ? 'msgpack' : 'json' });
  }
  // An offline user (ladder) and a poison message exercise the other paths.
  await pub.publish(w.exchange, { id: 'vg-offline', user_id: 'vg-nobody', title: 'later' });
  await pub.publishRaw(w.exchange, Buffer.from('{not json'), { contentType: 'application/json' });
  await pub.confirmed();
  await json.waitForIds(ids, { timeout: 60000 });
  await mp.waitForIds(ids, { timeout: 60000 });
  json.close();
  mp.close();
  const exit = await w.stop('SIGTERM', { timeout: 60000 });
  const log = w.logText();
  const summary = (log.match(/ERROR SUMMARY: \d+ errors/g) || []).at(-1);
  t.diagnostic(`valgrind: ${summary}; ${(log.match(/(definitely|indirectly) lost: [^\n]*/g) || ['no leak lines']).join('; ')}`);
  assert.equal(exit.code, 0, `warren under valgrind exited with ${JSON.stringify(exit)}\n${log.slice(-3000)}`);
  assert.match(log, /ERROR SUMMARY: 0 errors/);
  assert.match(log, /All heap blocks were freed|definitely lost: 0 bytes/);
  await pub.close();
});
