// Helpers for the fault scenarios (integration/faults-*.test.js): a private
// broker each fault file may stop, kill, freeze and restart without touching
// the run's shared node; figures printed and appended to
// artifacts/reliability.json (read by scripts/reliability); /metrics parsing;
// an app-level ping probe that measures event-loop stalls; loss accounting.
//
// Counting follows docs/reliability.md: every published id is
// confirmed by the broker (or not counted), clients record ids and ack, and at
// the end whatever is left in Q, the ladder, Q.parked and Q.dead is drained:
// lost = confirmed − received by an acking client − still in a queue.
import { spawn, spawnSync, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import amqplib from 'amqplib';
import { before, after } from 'node:test';
import { encodeEnvelope } from './broker.js';
import { cleanupAll } from './warren.js';
import { ARTIFACTS_DIR, BROKER_SH, INTEGRATION_DIR, httpGet, sleep, waitFor } from './util.js';

// FULL forms (sizes of the issue) run under WARREN_RELIABILITY_FULL=1, from
// scripts/reliability; the SHORT forms run in CI.
export const FULL = process.env.WARREN_RELIABILITY_FULL === '1';
export const FORM = FULL ? 'full' : 'short';
export const size = (short, full) => (FULL ? full : short);

export const RELIABILITY_JSON = process.env.WARREN_RELIABILITY_JSON
  ? path.resolve(process.env.WARREN_RELIABILITY_JSON)
  : path.join(ARTIFACTS_DIR, 'reliability.json');

// Prints the figures as a test diagnostic and appends them, with the form and
// the time, to reliability.json (an array; a corrupt file is started over).
export function report(t, scenario, figures) {
  t.diagnostic(`${scenario} [${FORM}]: ${JSON.stringify(figures)}`);
  let all = [];
  try {
    all = JSON.parse(fs.readFileSync(RELIABILITY_JSON, 'utf8'));
    if (!Array.isArray(all)) all = [];
  } catch {
    all = [];
  }
  all.push({ scenario, form: FORM, date: new Date().toISOString(), figures });
  fs.mkdirSync(path.dirname(RELIABILITY_JSON), { recursive: true });
  fs.writeFileSync(RELIABILITY_JSON, `${JSON.stringify(all, null, 1)}\n`);
}

// Prometheus text → { 'name{labels}': number }.
export async function metrics(w) {
  const r = await httpGet(`${w.adminUrl}/metrics`);
  const out = {};
  for (const line of r.body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

// Loop iterations longer than le seconds between two scrapes (metrics()) of
// one of warren's loop histograms (warren_loop_busy_seconds, _cpu_seconds).
export function overLoop(a, b, name, le = '0.1') {
  const over = (m) => m[`${name}_count`] - m[`${name}_bucket{le="${le}"}`];
  return over(b) - over(a);
}

// /readyz status, or 0 when the admin port does not answer in time (a loop
// that stalls would show up here as 0).
export async function readyz(w, timeout = 1000) {
  try {
    return (await httpGet(`${w.adminUrl}/readyz`, timeout)).status;
  } catch {
    return 0;
  }
}

// One PrivateBroker for the whole test file: started before its tests,
// stopped after them (once every warren is gone). started(broker) receives it.
export function usePrivateBroker(opts, started) {
  let broker = null;
  before(() => {
    broker = new PrivateBroker(opts);
    broker.start();
    started(broker);
  });
  after(async () => {
    await cleanupAll();
    if (broker) await broker.stop();
  });
}

// A private RabbitMQ node (scripts/broker.sh) for one test file. Port from
// WARREN_TEST_FAULT_BROKER_PORT (default 5681; it also uses PORT+20000 and
// PORT+30000). extraConf: rabbitmq.conf lines; erlArgs: extra VM arguments.
export class PrivateBroker {
  constructor({ port, extraConf = '', erlArgs = '' } = {}) {
    this.port = Number(port || process.env.WARREN_TEST_FAULT_BROKER_PORT || 5681);
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-fault-broker-'));
    this.extraConf = extraConf;
    this.erlArgs = erlArgs;
    this.conn = null;
    process.on('exit', () => this.stopSync());
  }

  sh(cmd, ...args) {
    const env = { ...process.env, BROKER_EXTRA_CONF: this.extraConf };
    if (this.erlArgs) env.RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS = this.erlArgs;
    return spawnSync('sh', [BROKER_SH, cmd, this.dir, String(this.port), ...args], {
      encoding: 'utf8',
      timeout: 120000,
      env,
    });
  }

  // Starts the node (or restarts it on the same files after a kill) and
  // returns its URL. Throws with the script's output on failure.
  start() {
    const r = this.sh('start');
    if (r.status !== 0) throw new Error(`broker.sh start ${this.port} failed:\n${r.stdout}\n${r.stderr}`);
    this.url = r.stdout.trim().split('\n').pop();
    return this.url;
  }

  // The same without blocking the test's event loop (clients keep reading
  // and acking while the broker stops or starts).
  shAsync(cmd, ...args) {
    const env = { ...process.env, BROKER_EXTRA_CONF: this.extraConf };
    if (this.erlArgs) env.RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS = this.erlArgs;
    return new Promise((resolve, reject) => {
      execFile('sh', [BROKER_SH, cmd, this.dir, String(this.port), ...args], { encoding: 'utf8', timeout: 120000, env }, (err, stdout, stderr) => {
        if (err) reject(new Error(`broker.sh ${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
        else resolve(stdout);
      });
    });
  }

  async startAsync() {
    this.url = (await this.shAsync('start')).trim().split('\n').pop();
    return this.url;
  }

  ctlAsync(...args) {
    return this.shAsync('ctl', ...args);
  }

  ctl(...args) {
    const r = this.sh('ctl', ...args);
    if (r.status !== 0) throw new Error(`rabbitmqctl ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  pid() {
    const r = this.sh('pid');
    const pid = Number(r.stdout.trim());
    if (!pid) throw new Error(`no beam pid for the broker on ${this.port}`);
    return pid;
  }

  signal(sig) {
    process.kill(this.pid(), sig);
  }

  stopSync() {
    if (this.stopped) return;
    this.stopped = true;
    spawnSync('sh', [BROKER_SH, 'stop', this.dir, String(this.port)], { stdio: 'ignore', timeout: 60000 });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async stop() {
    await this.closeConn();
    this.stopSync();
  }

  // Our own amqplib connection to this node; reopened after a fault.
  async connection() {
    if (this.conn) return this.conn;
    const c = await amqplib.connect(this.url);
    c.on('error', () => {});
    c.on('close', () => {
      if (this.conn === c) this.conn = null;
    });
    this.conn = c;
    return c;
  }

  async closeConn() {
    const c = this.conn;
    this.conn = null;
    if (c) await c.close().catch(() => {});
  }

  async withChannel(fn) {
    const c = await this.connection();
    const ch = await c.createChannel();
    ch.on('error', () => {});
    try {
      return await fn(ch);
    } finally {
      await ch.close().catch(() => {});
    }
  }

  async queueCount(name) {
    try {
      return await this.withChannel(async (ch) => (await ch.checkQueue(name)).messageCount);
    } catch (err) {
      if (err && err.code === 404) return null;
      throw err;
    }
  }

  async counts(names) {
    const out = {};
    for (const n of names) out[n] = await this.queueCount(n);
    return out;
  }

  // Every ready message of the queues, taken with basic.get: id → queue.
  // Rounds repeat until every queue is empty: a ladder message whose TTL
  // expires moves to Q while we drain, and must not slip between two reads.
  async drain(names, { rounds = 20 } = {}) {
    const inQueue = new Map();
    for (let r = 0; r < rounds; r++) {
      for (const q of names) {
        await this.withChannel(async (ch) => {
          for (;;) {
            const m = await ch.get(q, { noAck: true }).catch(() => false);
            if (!m) break;
            let id = m.properties.messageId;
            try {
              id = JSON.parse(m.content.toString('utf8')).id || id;
            } catch {
              // not JSON: keep the message_id
            }
            if (id) inQueue.set(id, q);
          }
        });
      }
      const c = await this.counts(names);
      if (Object.values(c).every((n) => !n)) break;
      await sleep(200);
    }
    return inQueue;
  }

  async publisher() {
    return ConfirmPublisher.open(await this.connection());
  }
}

// A confirm-channel publisher that counts an id only once the broker has
// confirmed it: publishes that die with the connection (a broker stopped in
// the middle) are not "confirmed" and cannot be lost.
export class ConfirmPublisher {
  static async open(conn) {
    const p = new ConfirmPublisher();
    p.ch = await conn.createConfirmChannel();
    p.error = null;
    p.ch.on('error', (err) => {
      p.error = err;
    });
    p.ch.on('close', () => {
      p.closed = true;
    });
    p.confirmed = new Set();
    p.failed = 0;
    p.inflight = new Set();
    return p;
  }

  // Resolves once the message is written (respecting back-pressure); the
  // confirm is tracked in the background.
  async publish(exchange, env, { routingKey = 'notify', properties = {} } = {}) {
    if (this.closed) throw this.error || new Error('publisher channel closed');
    const { body, contentType } = encodeEnvelope(env);
    const props = { persistent: true, contentType, messageId: String(env.id), ...properties };
    let ok = true;
    const done = new Promise((resolve) => {
      ok = this.ch.publish(exchange, routingKey, body, props, (err) => {
        if (err) this.failed++;
        else this.confirmed.add(env.id);
        resolve();
      });
    });
    this.inflight.add(done);
    done.then(() => this.inflight.delete(done));
    if (!ok) await Promise.race([new Promise((r) => this.ch.once('drain', r)), sleep(5000)]);
  }

  // Waits for every confirm (or channel death), at most timeout ms.
  async settle(timeout = 30000) {
    await Promise.race([Promise.all([...this.inflight]), sleep(timeout)]);
  }

  async close() {
    await this.ch.close().catch(() => {});
  }
}

// lost = confirmed ids neither received by a client nor found in a queue.
export function lossOf(confirmedIds, receivedSet, inQueue) {
  const lost = [];
  let queued = 0;
  for (const id of confirmedIds) {
    if (receivedSet.has(id)) continue;
    if (inQueue.has(id)) queued++;
    else lost.push(id);
  }
  return { lost, queued };
}

// A client that sends {"type":"ping"} every interval ms and measures each
// pong's delay: a stalled event loop shows up as a long delay. It runs in a
// child process of its own, so that the test process (busy publishing and
// reading thousands of notifications) does not delay the pongs it measures.
const PROBE_SRC = `
const WebSocket = require(process.argv[1] + '/node_modules/ws');
const ws = new WebSocket(process.argv[2], ['warren.json']);
const interval = Number(process.argv[3]);
const sent = []; const delays = []; let max = 0; let over100 = 0; let welcomed = false;
ws.on('message', (d) => {
  const m = JSON.parse(d.toString());
  if (m.type === 'welcome') { welcomed = true; process.stdout.write('ready\\n'); return; }
  if (m.type !== 'pong') return;
  const t0 = sent.shift(); if (t0 === undefined) return;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6; delays.push(ms); if (ms > max) max = ms; if (ms > 100) over100++;
});
ws.on('close', (code) => { process.stdout.write('closed ' + code + '\\n'); });
setInterval(() => {
  if (!welcomed || ws.readyState !== 1) return;
  ws.send('{"type":"ping"}'); sent.push(process.hrtime.bigint());
}, interval);
setInterval(() => {
  const pending = sent.length ? Number(process.hrtime.bigint() - sent[0]) / 1e6 : 0;
  const s = [...delays].sort((a, b) => a - b);
  const p99 = s.length ? s[Math.min(s.length - 1, Math.floor(0.99 * s.length))] : null;
  process.stdout.write(JSON.stringify({ max: Math.max(max, pending), p99, n: delays.length, over100 }) + '\\n');
}, 250);
`;

export class PingProbe {
  static async open(w, token, { interval = 20 } = {}) {
    const p = new PingProbe();
    p.stats = { max: 0, p99: null, n: 0 };
    p.proc = spawn(process.execPath, ['-e', PROBE_SRC, INTEGRATION_DIR, w.wsUrl(token), String(interval)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    let ready;
    const isReady = new Promise((r) => {
      ready = r;
    });
    p.proc.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'ready') ready();
        else if (line.startsWith('{')) p.stats = JSON.parse(line);
      }
    });
    await Promise.race([isReady, sleep(10000).then(() => Promise.reject(new Error('ping probe never welcomed')))]);
    return p;
  }

  get maxDelayMs() {
    return this.stats.max;
  }

  get p99Ms() {
    return this.stats.p99;
  }

  get over100() {
    return this.stats.over100;
  }

  get count() {
    return this.stats.n;
  }

  async stop() {
    await sleep(300); // one last report
    this.proc.kill('SIGKILL');
  }
}

export function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

// Polls fn every interval ms until it is truthy; resolves the elapsed ms
// from `since` (a Date.now() value), or null on timeout.
export async function timeUntil(fn, { since = Date.now(), timeout = 60000, interval = 50 } = {}) {
  try {
    await waitFor(fn, { timeout, interval, what: 'condition' });
    return Date.now() - since;
  } catch {
    return null;
  }
}

export const round = (x, d = 1) => (x === null || x === undefined ? x : Math.round(x * 10 ** d) / 10 ** d);

// Peak resident memory (kB) of a running process, from /proc (VmHWM), and the
// current one (VmRSS).
export function memoryKb(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const get = (k) => Number((s.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm')) || [])[1] || 0);
    return { rss_kb: get('VmRSS'), hwm_kb: get('VmHWM') };
  } catch {
    return { rss_kb: null, hwm_kb: null };
  }
}

// Polls /readyz every interval ms in the background and records when it
// changes: { transitions: [{ at, status }] }; firstAfter(t, pred) gives the
// first time ≥ t whose status matches.
export class ReadyWatch {
  constructor(w, { interval = 50 } = {}) {
    this.transitions = [];
    this.last = null;
    this.running = true;
    this.done = (async () => {
      while (this.running) {
        const st = await readyz(w, 500);
        if (st !== this.last) {
          this.last = st;
          this.transitions.push({ at: Date.now(), status: st });
        }
        await sleep(interval);
      }
    })();
  }

  // The first moment at or after t when pred holds: t itself when the status
  // in force at t already satisfies it (warren can be ready again before the
  // broker's own start script returns), else the first later transition.
  firstAfter(t, pred) {
    const before = this.transitions.filter((x) => x.at <= t).pop();
    if (before && pred(before.status)) return t;
    const e = this.transitions.find((x) => x.at > t && pred(x.status));
    return e ? e.at : null;
  }

  async stop() {
    this.running = false;
    await this.done;
  }
}
