// The RabbitMQ broker shared by a whole run, an amqplib connection to it, a
// publisher with confirms and queue inspection.
//
// scripts/test (or lib/run.js) starts one private node and exports
// WARREN_TEST_AMQP_URL, WARREN_TEST_BROKER_DIR and WARREN_TEST_BROKER_PORT.
// When a test file is run alone without them, ensureBroker() starts a node
// with scripts/broker.sh in a temporary folder and stops it when the process
// exits.
import { spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import amqplib from 'amqplib';
import { encode as msgpackEncode } from '@msgpack/msgpack';
import { BROKER_SH, portIsFree } from './util.js';

let broker = null;
let conn = null;
let connPromise = null;

async function pickBrokerPort() {
  // broker.sh uses PORT, PORT+20000 (distribution) and PORT+30000 (epmd).
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 5000);
    if ((await portIsFree(port)) && (await portIsFree(port + 20000)) && (await portIsFree(port + 30000)))
      return port;
  }
  throw new Error('no free port triple for a private broker');
}

export function startBrokerSync(dir, port) {
  const r = spawnSync('sh', [BROKER_SH, 'start', dir, String(port)], { encoding: 'utf8', timeout: 120000 });
  if (r.status !== 0) {
    throw new Error(`scripts/broker.sh start ${dir} ${port} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout.trim().split('\n').pop();
}

export function stopBrokerSync(dir, port) {
  spawnSync('sh', [BROKER_SH, 'stop', dir, String(port)], { stdio: 'ignore', timeout: 60000 });
}

// Returns { url, dir, port } of the broker for this run, starting one if the
// environment names none.
export async function ensureBroker() {
  if (broker) return broker;
  const env = process.env;
  if (env.WARREN_TEST_AMQP_URL) {
    broker = {
      url: env.WARREN_TEST_AMQP_URL,
      dir: env.WARREN_TEST_BROKER_DIR || null,
      port: env.WARREN_TEST_BROKER_PORT ? Number(env.WARREN_TEST_BROKER_PORT) : null,
      owned: false,
    };
    return broker;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-it-broker-'));
  const port = await pickBrokerPort();
  const url = startBrokerSync(dir, port);
  broker = { url, dir, port, owned: true };
  env.WARREN_TEST_AMQP_URL = url;
  env.WARREN_TEST_BROKER_DIR = dir;
  env.WARREN_TEST_BROKER_PORT = String(port);
  process.on('exit', () => {
    stopBrokerSync(dir, port);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // A run interrupted by Ctrl-C or a timeout must not leave the node behind:
  // exiting runs the handler above.
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) process.once(sig, () => process.exit(code));
  return broker;
}

// rabbitmqctl for the run's broker (needs WARREN_TEST_BROKER_DIR/PORT).
export function brokerCtl(...args) {
  if (!broker || !broker.dir || !broker.port) throw new Error('brokerCtl: broker dir/port unknown');
  return execFileSync('sh', [BROKER_SH, 'ctl', broker.dir, String(broker.port), ...args], {
    encoding: 'utf8',
    timeout: 60000,
  });
}

export async function amqpConnection() {
  if (conn) return conn;
  if (!connPromise) {
    connPromise = (async () => {
      const b = await ensureBroker();
      const c = await amqplib.connect(b.url);
      c.on('error', () => {});
      c.on('close', () => {
        conn = null;
        connPromise = null;
      });
      conn = c;
      return c;
    })();
  }
  return connPromise;
}

export async function closeAmqp() {
  const c = conn;
  conn = null;
  connPromise = null;
  if (c) await c.close().catch(() => {});
}

// Runs fn(channel) on a throwaway channel: a passive declare of a missing
// queue closes its channel, and that must not break the next check.
export async function withChannel(fn) {
  const c = await amqpConnection();
  const ch = await c.createChannel();
  ch.on('error', () => {});
  try {
    return await fn(ch);
  } finally {
    await ch.close().catch(() => {});
  }
}

// Ready-message count of a queue (messages a consumer holds unacked are not
// counted), or null when the queue does not exist.
export async function queueCount(name) {
  try {
    return await withChannel(async (ch) => (await ch.checkQueue(name)).messageCount);
  } catch (err) {
    if (err && err.code === 404) return null;
    throw err;
  }
}

export async function queueCounts(names) {
  const out = {};
  for (const n of names) out[n] = await queueCount(n);
  return out;
}

// Takes every ready message out of a queue with basic.get (no ack needed) and
// returns them decoded: { id, headers, properties, body, json }.
export async function drainQueue(name, max = 100000) {
  return withChannel(async (ch) => {
    const out = [];
    while (out.length < max) {
      const m = await ch.get(name, { noAck: true });
      if (!m) break;
      out.push(decodeMessage(m));
    }
    return out;
  });
}

function decodeMessage(m) {
  let json = null;
  try {
    json = JSON.parse(m.content.toString('utf8'));
  } catch {
    // Poison bodies and msgpack bodies stay undecoded; callers use `body`.
  }
  return {
    id: (json && json.id) || m.properties.messageId || null,
    headers: m.properties.headers || {},
    properties: m.properties,
    body: m.content,
    json,
  };
}

// Names of every queue of the test broker (rabbitmqctl; about 1 s).
export async function listQueues() {
  const out = await brokerCtl('list_queues', '-q', '--no-table-headers', 'name');
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

// Deletes a test's queues and exchanges; missing ones are fine.
export async function deleteObjects({ queues = [], exchanges = [] }) {
  for (const q of queues) {
    await withChannel((ch) => ch.deleteQueue(q)).catch(() => {});
  }
  for (const x of exchanges) {
    await withChannel((ch) => ch.deleteExchange(x)).catch(() => {});
  }
}

// Encodes one envelope body the way a business service would.
//   format: 'json' | 'msgpack'
//   contentType: undefined = the standard one for the format, null = none,
//                or any string
export function encodeEnvelope(env, { format = 'json', contentType } = {}) {
  const body = format === 'msgpack' ? Buffer.from(msgpackEncode(env)) : Buffer.from(JSON.stringify(env));
  let ct = contentType;
  if (ct === undefined) ct = format === 'msgpack' ? 'application/msgpack' : 'application/json';
  return { body, contentType: ct };
}

// A publisher on a confirm channel. publish() respects the channel's write
// back-pressure; confirmed() waits until the broker confirmed everything.
export class Publisher {
  // dedicated: its own AMQP connection (another service publishing), so its
  // bytes do not queue ahead of the shared connection's in one TCP stream.
  static async open({ dedicated = false } = {}) {
    let c;
    if (dedicated) {
      c = await amqplib.connect((await ensureBroker()).url);
      c.on('error', () => {});
    } else {
      c = await amqpConnection();
    }
    const p = new Publisher();
    p.ch = await c.createConfirmChannel();
    p.ch.on('error', (err) => {
      p.error = err;
    });
    p.nacked = 0;
    p.dedicated = dedicated;
    p.conn = c;
    return p;
  }

  async publishRaw(exchange, body, { contentType = null, routingKey = 'notify', properties = {} } = {}) {
    if (this.error) throw this.error;
    const props = { persistent: true, ...properties };
    if (contentType) props.contentType = contentType;
    const ok = this.ch.publish(exchange, routingKey, body, props, (err) => {
      if (err) this.nacked++;
    });
    if (!ok) await new Promise((r) => this.ch.once('drain', r));
  }

  async publish(exchange, env, opts = {}) {
    const { body, contentType } = encodeEnvelope(env, opts);
    await this.publishRaw(exchange, body, { ...opts, contentType });
  }

  // Publishes many envelopes and waits for their confirms.
  async publishAll(exchange, envs, opts = {}) {
    for (const e of envs) await this.publish(exchange, e, opts);
    await this.confirmed();
  }

  async confirmed() {
    await this.ch.waitForConfirms();
    if (this.nacked) throw new Error(`${this.nacked} publishes were nacked by the broker`);
  }

  async close() {
    await this.ch.close().catch(() => {});
    if (this.dedicated) await this.conn.close().catch(() => {});
  }
}
