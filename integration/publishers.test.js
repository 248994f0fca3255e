// The publisher examples in integration/publishers/ (PHP php-amqplib, Python
// pika, Node amqplib) and `warren publish` each deliver a notification that a
// connected client receives intact; each one sets the envelope properties the
// README promises and fails (non-zero exit) when the broker refuses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  startWarren,
  cleanupAll,
  connectClient,
  ensureBroker,
  withChannel,
  deleteObjects,
  daemonEnv,
  routingFieldsIn,
  randomHex,
  waitFor,
  sleep,
  INTEGRATION_DIR,
} from './lib/index.js';

const PUB_DIR = path.join(INTEGRATION_DIR, 'publishers');
// Debian's python3 carries python3-pika; a python3 earlier on the PATH
// (pyenv, a venv) may not.
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

// Each publisher as a command line: argv prefix, then USER TITLE CONTENT DATA.
const PUBLISHERS = {
  php: ['php', path.join(PUB_DIR, 'php', 'warren_notify.php')],
  python: [PYTHON, path.join(PUB_DIR, 'python', 'warren_notify.py')],
  node: [process.execPath, path.join(PUB_DIR, 'node', 'warren-notify.mjs')],
};

function run(argv, env) {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { env: daemonEnv(env), timeout: 30000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let w;
let broker;
before(async () => {
  broker = await ensureBroker();
  w = await startWarren({ name: 'publishers' });
});
after(cleanupAll);

const DATA = { order: 20260515001, items: [{ sku: 'A-1', qty: 2 }], note: 'ünïcode ✓' };

for (const [name, argv] of Object.entries(PUBLISHERS)) {
  test(`${name} example: a connected client receives the notification intact`, { timeout: 60000 }, async () => {
    const user = `pub-${name}`;
    const c = await connectClient(w.wsUrl(), await w.token(user));
    const title = `Payment received (${name})`;
    const content = 'Order #20260515001 is paid — “quoted”';
    const r = await run([...argv, user, title, content, JSON.stringify(DATA)], {
      WARREN_AMQP_URL: broker.url,
      WARREN_AMQP_EXCHANGE: w.exchange,
    });
    assert.equal(r.code, 0, `${name} publisher exit ${r.code}: ${r.stderr}`);
    const id = r.stdout.trim();
    assert.match(id, /^[\w-]{16,}$/, `${name} publisher printed no id: ${r.stdout}`);
    await c.waitForIds([id], { timeout: 15000 });
    const m = c.notifications.find((n) => n.id === id);
    assert.equal(m.type, 'notification');
    assert.equal(m.title, title);
    assert.equal(m.content, content);
    assert.deepEqual(m.data, DATA);
    assert.deepEqual(routingFieldsIn(m), [], 'routing fields reached the client');
    c.close();
  });
}

test('warren publish (CLI): a connected client receives the notification intact', { timeout: 30000 }, async () => {
  const user = 'pub-cli';
  const c = await connectClient(w.wsUrl(), await w.token(user));
  const id = `pub-cli-${randomHex()}`;
  const r = await w.publishCli(['--user', user, '--title', 'T', '--content', 'C', '--data', JSON.stringify(DATA), '--id', id]);
  assert.equal(r.code, 0, `warren publish exit ${r.code}: ${r.stderr}`);
  await c.waitForIds([id], { timeout: 15000 });
  const m = c.notifications.find((n) => n.id === id);
  assert.deepEqual([m.title, m.content, m.data], ['T', 'C', DATA]);
  assert.deepEqual(routingFieldsIn(m), []);
  c.close();
});

// What the broker receives from each example: the properties the README
// documents (JSON content type, persistent, message_id = envelope id) and a
// single-target envelope. A private exchange and queue, so warren does not
// consume it first.
test('every example publishes persistent application/json with message_id = id', { timeout: 60000 }, async () => {
  const x = `t-pubprops-${randomHex()}`;
  const q = `${x}.q`;
  await withChannel(async (ch) => {
    await ch.assertExchange(x, 'topic', { durable: false, autoDelete: false });
    await ch.assertQueue(q, { durable: false });
    await ch.bindQueue(q, x, '#');
  });
  try {
    for (const [name, argv] of Object.entries(PUBLISHERS)) {
      const r = await run([...argv, '42', 't', 'c'], { WARREN_AMQP_URL: broker.url, WARREN_AMQP_EXCHANGE: x });
      assert.equal(r.code, 0, `${name} publisher exit ${r.code}: ${r.stderr}`);
      const id = r.stdout.trim();
      const m = await withChannel((ch) => ch.get(q, { noAck: true }));
      assert.ok(m, `${name}: nothing reached the queue`);
      assert.equal(m.properties.contentType, 'application/json', name);
      assert.equal(m.properties.deliveryMode, 2, `${name}: not persistent`);
      assert.equal(m.properties.messageId, id, `${name}: message_id`);
      const env = JSON.parse(m.content.toString('utf8'));
      assert.equal(env.id, id, name);
      assert.equal(env.user_id, '42', name);
      assert.deepEqual(env.data, {}, `${name}: default data is an empty object`);
      assert.equal(m.fields.routingKey, 'user.42', name);
    }
  } finally {
    await deleteObjects({ queues: [q], exchanges: [x] });
  }
});

// Confirms and mandatory publishing make a refused notification an error the
// caller sees, never a silent success.
test('every example exits non-zero for a missing exchange or an unroutable message', { timeout: 60000 }, async () => {
  const x = `t-pubunroutable-${randomHex()}`;
  await withChannel((ch) => ch.assertExchange(x, 'topic', { durable: false }));
  try {
    for (const [name, argv] of Object.entries(PUBLISHERS)) {
      const missing = await run([...argv, 'u', 't', 'c'], {
        WARREN_AMQP_URL: broker.url,
        WARREN_AMQP_EXCHANGE: `no-such-exchange-${randomHex()}`,
      });
      assert.notEqual(missing.code, 0, `${name}: publish to a missing exchange reported success`);
      assert.match(missing.stderr, /NOT_FOUND|404/, `${name}: ${missing.stderr}`);
      const unroutable = await run([...argv, 'u', 't', 'c'], { WARREN_AMQP_URL: broker.url, WARREN_AMQP_EXCHANGE: x });
      assert.notEqual(unroutable.code, 0, `${name}: an unroutable publish reported success`);
      assert.match(unroutable.stderr, /unroutable/, `${name}: ${unroutable.stderr}`);
      const dead = await run([...argv, 'u', 't', 'c'], { WARREN_AMQP_URL: 'amqp://guest:guest@127.0.0.1:1/' });
      assert.notEqual(dead.code, 0, `${name}: publish to a dead broker reported success`);
    }
  } finally {
    await deleteObjects({ exchanges: [x] });
  }
});

// The demo publisher of docker-compose.yml runs this loop as its container's
// PID 1, where SIGTERM without a handler is ignored: it must handle the
// signal itself and end cleanly (status 0, not killed by the signal).
test('the python example publishing --every N stops with status 0 on SIGTERM and on SIGINT', { timeout: 60000 }, async () => {
  const user = 'pub-every';
  const c = await connectClient(w.wsUrl(), await w.token(user));
  for (const sig of ['SIGTERM', 'SIGINT']) {
    const p = spawn(PUBLISHERS.python[0], [PUBLISHERS.python[1], '--every', '0.2', user, 'tick', 'loop'], {
      env: daemonEnv({ WARREN_AMQP_URL: broker.url, WARREN_AMQP_EXCHANGE: w.exchange }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
    await waitFor(() => out.split('\n').filter(Boolean).length >= 2, { timeout: 15000, what: `two ids printed (${err})` });
    await c.waitForIds(out.split('\n').filter(Boolean).slice(0, 2), { timeout: 15000 });
    p.kill(sig);
    const r = await Promise.race([exited, sleep(5000).then(() => ({ code: 'still running 5 s after ' + sig }))]);
    if (r.code === undefined || typeof r.code === 'string') p.kill('SIGKILL');
    assert.deepEqual(r, { code: 0, signal: null }, `after ${sig}: ${err}`);
  }
  c.close();
});
