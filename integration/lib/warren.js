// Starts and stops real warren daemons, each with its own ports, queue,
// exchange and JWT secret, and cleans up what it created.
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureBroker, queueCounts, drainQueue, deleteObjects, closeAmqp, listQueues } from './broker.js';
import { closeAllClients } from './client.js';
import {
  ARTIFACTS_DIR,
  WARREN_BIN,
  freePort,
  httpGet,
  randomHex,
  tailFile,
  uniqueName,
  waitFor,
} from './util.js';

const live = new Set();

// Whatever happens to the test process, no daemon outlives it.
process.on('exit', () => {
  for (const w of live) {
    if (w.proc && w.proc.exitCode === null && w.proc.signalCode === null) {
      try {
        w.proc.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  }
});

function toIni(sections) {
  const lines = ['# written by integration/lib/warren.js'];
  for (const [sec, keys] of Object.entries(sections)) {
    lines.push(`[${sec}]`);
    for (const [k, v] of Object.entries(keys)) {
      if (v === undefined || v === null) continue;
      lines.push(`${k} = ${v}`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

function mergeConfig(base, extra) {
  const out = {};
  for (const [sec, keys] of Object.entries(base)) out[sec] = { ...keys };
  for (const [sec, keys] of Object.entries(extra || {})) out[sec] = { ...(out[sec] || {}), ...keys };
  return out;
}

// The daemon's environment: ours without any WARREN_* variable (a developer's
// WARREN_AMQP_URL must not override a test's config, and the harness's own
// WARREN_TEST_* / WARREN_BIN are not daemon settings), plus extra.
export function daemonEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WARREN_')) env[k] = v;
  return { ...env, ...extra };
}

// Runs `warren <args>`; resolves { code, stdout, stderr } whatever the exit code.
export function runWarren(args, { env = {}, timeout = 20000 } = {}) {
  return new Promise((resolve) => {
    execFile(WARREN_BIN, args, { env: daemonEnv(env), timeout, encoding: 'utf8' }, (err, stdout, stderr) => {
      let code = 0;
      if (err) code = typeof err.code === 'number' ? err.code : (err.signal ?? err.code ?? -1);
      resolve({ code, stdout, stderr });
    });
  });
}

export class Warren {
  // opts.name: short test name (queue/exchange prefix)
  // opts.config: { section: { key: value } } on top of the harness defaults
  // opts.env: extra environment for the daemon
  constructor(opts = {}) {
    this.name = uniqueName(opts.name || 'warren');
    this.opts = opts;
    this.queue = opts.queue || this.name;
    this.exchange = opts.exchange || `${this.name}.in`;
    this.secret = opts.secret || randomHex(24);
    this.proc = null;
    this.exit = null;
    this.starts = 0;
    this.logFile = path.join(ARTIFACTS_DIR, `${this.name}.log`);
    this.iniFile = path.join(ARTIFACTS_DIR, `${this.name}.ini`);
    live.add(this);
  }

  async init() {
    const broker = await ensureBroker();
    this.port = this.opts.port || (await freePort());
    this.adminPort = this.opts.adminPort || (await freePort());
    this.config = mergeConfig(
      {
        server: { listen: `127.0.0.1:${this.port}` },
        auth: { jwt_secret: this.secret },
        amqp: {
          url: broker.url,
          exchange: this.exchange,
          queue: this.queue,
          retry_delays_ms: '500,1000',
          heartbeat_s: 10,
        },
        admin: { listen: `127.0.0.1:${this.adminPort}`, queue_poll_ms: 500 },
        log: { level: 'info' },
        shutdown: { drain_timeout_ms: 3000 },
      },
      this.opts.config,
    );
    fs.writeFileSync(this.iniFile, toIni(this.config));
    const delays = String(this.config.amqp.retry_delays_ms)
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    this.retryQueues = [...new Set(delays)].map((d) => `${this.queue}.retry.${d}`);
    this.parkedQueue = `${this.queue}.parked`;
    this.deadQueue = `${this.queue}.dead`;
    // One entry per mailbox made: not a notification queue, never empty
    // while mailboxes exist, so not in allQueues.
    this.indexQueue = `${this.queue}.mailbox.index`;
    return this;
  }

  get allQueues() {
    return [this.queue, ...this.retryQueues, this.parkedQueue, this.deadQueue];
  }

  get adminUrl() {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  wsUrl(token) {
    const base = `ws://127.0.0.1:${this.port}/ws`;
    return token === undefined ? base : `${base}?token=${encodeURIComponent(token)}`;
  }

  get pid() {
    return this.proc ? this.proc.pid : null;
  }

  get running() {
    return !!this.proc && this.exit === null;
  }

  // Spawns the daemon and resolves once /readyz answers 200. Rejects with the
  // log tail if it exits first or never becomes ready.
  async start({ readyTimeout = 20000 } = {}) {
    if (this.running) throw new Error('warren already running');
    this.starts++;
    fs.appendFileSync(this.logFile, `\n===== start #${this.starts} at ${new Date().toISOString()} =====\n`);
    const log = fs.openSync(this.logFile, 'a');
    this.exit = null;
    // opts.wrapper: a command the daemon runs under, e.g. ['valgrind', …].
    const wrapper = this.opts.wrapper || [];
    const argv = [...wrapper.slice(1), WARREN_BIN, '--config', this.iniFile];
    const proc = spawn(wrapper.length ? wrapper[0] : WARREN_BIN, wrapper.length ? argv : argv.slice(1), {
      env: daemonEnv(this.opts.env),
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.proc = proc;
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      proc.on('error', (err) => {
        this.exit = { code: null, signal: null, error: err };
        resolve(this.exit);
      });
    });
    try {
      await waitFor(
        async () => {
          if (this.exit) {
            const e = this.exit.error;
            throw Object.assign(new Error(e ? `cannot run ${WARREN_BIN}: ${e.message}` : `warren exited`), {
              fatal: true,
            });
          }
          const r = await httpGet(`${this.adminUrl}/readyz`, 1000);
          return r.status === 200;
        },
        { timeout: readyTimeout, interval: 100, what: `warren ${this.name} /readyz 200` },
      );
    } catch (err) {
      const exitInfo = this.exit ? ` (exit ${JSON.stringify(this.exit)})` : '';
      throw new Error(`${err.message}${exitInfo}\n--- ${this.logFile} ---\n${tailFile(this.logFile)}`);
    }
    return this;
  }

  // Sends signal and waits for exit; resolves { code, signal }. Escalates to
  // SIGKILL after timeout so a hung daemon never outlives the test.
  async stop(signal = 'SIGTERM', { timeout = 15000 } = {}) {
    if (!this.running) return this.exit;
    this.proc.kill(signal);
    const timer = setTimeout(() => {
      if (this.running) this.proc.kill('SIGKILL');
    }, timeout);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }

  async kill9() {
    return this.stop('SIGKILL');
  }

  async restart(opts) {
    if (this.running) await this.stop();
    return this.start(opts);
  }

  logText() {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async readyz() {
    return (await httpGet(`${this.adminUrl}/readyz`)).status;
  }

  async stats() {
    const r = await httpGet(`${this.adminUrl}/api/stats`);
    return JSON.parse(r.body);
  }

  // A JWT minted by `warren token`, so the test uses the daemon's own key
  // handling; ttl in seconds.
  async token(user, { ttl } = {}) {
    // Global options before the subcommand: the form `warren --help` documents.
    const args = ['--config', this.iniFile, 'token', '--user', String(user)];
    if (ttl !== undefined) args.push('--ttl', String(ttl));
    const r = await runWarren(args);
    const tok = r.stdout.trim();
    if (r.code !== 0 || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(tok)) {
      throw new Error(`warren token failed (exit ${r.code}): stdout=${r.stdout} stderr=${r.stderr}`);
    }
    return tok;
  }

  // `warren --config <this ini> publish args…`
  publishCli(args, opts) {
    return runWarren(['--config', this.iniFile, 'publish', ...args], opts);
  }

  async counts() {
    return queueCounts(this.allQueues);
  }

  // True when every queue of this daemon has no ready message. Messages held
  // unacked by warren are not visible here; see assertQueuesEmpty.
  async queuesEmpty() {
    const c = await this.counts();
    return Object.values(c).every((n) => n === 0) ? c : false;
  }

  drain(queue) {
    return drainQueue(queue);
  }

  // Deletes everything this daemon declared; kills it first if needed.
  async cleanup() {
    if (this.running) await this.stop('SIGKILL');
    live.delete(this);
    await deleteObjects({
      queues: [...this.allQueues, `${this.queue}.mailbox.new`, this.indexQueue],
      exchanges: [
        this.exchange,
        `${this.queue}.retry`,
        `${this.queue}.dlx`,
        `${this.queue}.mailbox`,
        `${this.queue}.mailbox.new`,
        `${this.queue}.route`,
        `${this.queue}.broadcast`,
      ],
    });
  }
}

export async function startWarren(opts = {}) {
  const w = new Warren(opts);
  await w.init();
  await w.start(opts);
  return w;
}

// Waits until every queue of w is empty, then stops w with SIGTERM (so any
// message it still held unacked goes back to its queue) and checks again:
// only then "nothing is left" is proven. Returns the final counts.
export async function assertQueuesEmpty(w, { timeout = 15000 } = {}) {
  await waitFor(() => w.queuesEmpty(), { timeout, what: `queues of ${w.name} empty` });
  const r = await w.stop('SIGTERM');
  const after = await w.counts();
  const nonEmpty = Object.entries(after).filter(([, n]) => n !== 0);
  if (nonEmpty.length) {
    throw new Error(`after stopping warren (${JSON.stringify(r)}) queues hold messages: ${JSON.stringify(after)}`);
  }
  return after;
}

// Call from a file-level after(): closes clients, kills daemons, deletes
// their queues, closes the AMQP connection.
export async function cleanupAll() {
  closeAllClients();
  // Mailbox and node queues (cluster mode) are named after users and nodes.
  const prefixes = [...live].flatMap((w) => [`${w.queue}.mbox.`, `${w.queue}.node.`]);
  for (const w of [...live]) await w.cleanup().catch(() => {});
  // One listing finds them all.
  if (prefixes.length) {
    const names = await listQueues().catch(() => []);
    const mine = names.filter((n) => prefixes.some((p) => n.startsWith(p)));
    if (mine.length) await deleteObjects({ queues: mine });
  }
  await closeAmqp();
}
