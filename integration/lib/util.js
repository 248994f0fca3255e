// Small helpers shared by the harness: paths, free ports, waiting for a
// condition instead of sleeping a fixed time.
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const INTEGRATION_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(INTEGRATION_DIR, '..');
export const WARREN_BIN = process.env.WARREN_BIN
  ? path.resolve(process.env.WARREN_BIN)
  : path.join(REPO_ROOT, 'build', 'warren');
export const BROKER_SH = path.join(REPO_ROOT, 'scripts', 'broker.sh');

// Logs of every daemon a test started live here (git-ignored) so a failure
// can be diagnosed after the run.
export const ARTIFACTS_DIR = process.env.WARREN_TEST_ARTIFACTS
  ? path.resolve(process.env.WARREN_TEST_ARTIFACTS)
  : path.join(INTEGRATION_DIR, 'artifacts');
fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function randomHex(bytes = 4) {
  return crypto.randomBytes(bytes).toString('hex');
}

// Names unique per test and per run, e.g. "t-poison-1a2b3c4d".
export function uniqueName(name) {
  const clean = String(name).toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 24);
  return `t-${clean}-${randomHex(4)}`;
}

// Asks the kernel for a free TCP port on 127.0.0.1. Another process could
// take it before warren binds it, but within one test run that is rare and
// shows up as a clear EADDRINUSE in the daemon log.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function portIsFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// Polls fn (sync or async) until it returns a truthy value, which is returned.
// On timeout throws an error naming what was awaited and the last value seen,
// so a failing test says what it was waiting for. fn may throw an error with
// .fatal = true to stop waiting at once. what may be a function, called at
// the timeout (to name what is still missing then).
export async function waitFor(fn, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      lastErr = undefined;
      if (last) return last;
    } catch (err) {
      // A fatal error (the daemon died, say) makes further polling pointless.
      if (err && err.fatal) throw err;
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const seen = lastErr ? `last error: ${lastErr.message}` : `last value: ${fmt(last)}`;
      const name = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeout} ms waiting for ${name} (${seen})`);
    }
    await sleep(interval);
  }
}

function fmt(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

// Last lines of a log file, for error messages.
export function tailFile(file, lines = 40) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${err.message})`;
  }
}

// Plain HTTP GET with a short timeout; resolves { status, body } or rejects.
export async function httpGet(url, timeout = 2000) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeout);
  try {
    const res = await fetch(url, { signal: ctl.signal });
    const body = await res.text();
    return { status: res.status, body, headers: res.headers };
  } finally {
    clearTimeout(timer);
  }
}

// HS256 JWT signed here, independently of warren, for negative auth tests
// (bad signature, expired) and as a cross-check of warren's verifier.
export function signJwt(payload, secret) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(payload);
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// Envelope fields warren must strip before a notification reaches a client.
export const ROUTING_FIELDS = ['user_id', 'user_ids', 'broadcast', 'expires_at', 'ttl_ms'];

export function routingFieldsIn(msg) {
  return ROUTING_FIELDS.filter((f) => Object.prototype.hasOwnProperty.call(msg, f));
}
