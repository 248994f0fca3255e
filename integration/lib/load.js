// Helpers for the crash and shutdown tests: many users connected at once, a
// stream of notifications with unique ids, and the final count of what was
// received, what is still in a queue and what was lost.
import { WarrenClient } from './client.js';
import { signJwt, waitFor } from './util.js';

export class ClientPool {
  // One reconnecting, auto-acking client per user.
  static async open(w, nUsers, { prefix = 'load', protocol = 'warren.json', batch = 20 } = {}) {
    const pool = new ClientPool();
    pool.received = new Set();
    pool.frames = 0;
    pool.clients = [];
    pool.listeners = [];
    // Tokens are signed here with the daemon's secret (100 `warren token`
    // processes would only slow the test down; cli.test.js covers that path).
    const exp = Math.floor(Date.now() / 1000) + 3600;
    for (let i = 0; i < nUsers; i++) {
      const user = `${prefix}${i}`;
      const c = new WarrenClient(w.wsUrl(), signJwt({ sub: user, exp }, w.secret), {
        name: user,
        reconnect: true,
        autoAck: true,
        protocol: typeof protocol === 'function' ? protocol(i) : protocol,
      });
      c.onMessageListener((m) => {
        if (m.type === 'welcome' || m.type === 'pong' || m.id === undefined) return;
        pool.frames++;
        pool.received.add(m.id);
        for (const fn of pool.listeners) fn(m, c);
      });
      pool.clients.push(c);
    }
    for (let i = 0; i < pool.clients.length; i += batch) {
      await Promise.all(pool.clients.slice(i, i + batch).map((c) => c.connect()));
    }
    return pool;
  }

  user(i) {
    return this.clients[i % this.clients.length].opts.name;
  }

  onNotification(fn) {
    this.listeners.push(fn);
  }

  get duplicates() {
    return this.frames - this.received.size;
  }

  allConnected() {
    return this.clients.every((c) => c.connected);
  }

  close() {
    for (const c of this.clients) c.close();
  }
}

// Waits until every id is received, up to timeout; never throws.
export async function waitAllReceived(pool, ids, timeout) {
  try {
    await waitFor(() => ids.every((id) => pool.received.has(id)), { timeout, interval: 200, what: 'every id' });
    return true;
  } catch {
    return false;
  }
}

// Stops w (so nothing stays unacked and invisible), drains every queue it
// owns and returns the ids neither received nor found in a queue.
export async function accountFor(w, pool, ids) {
  if (w.running) await w.stop('SIGTERM');
  const inQueue = new Map();
  for (const q of w.allQueues) {
    for (const m of await w.drain(q)) if (m.id) inQueue.set(m.id, q);
  }
  const missing = ids.filter((id) => !pool.received.has(id));
  const lost = missing.filter((id) => !inQueue.has(id));
  const queued = missing.filter((id) => inQueue.has(id));
  return { lost, queued, inQueue };
}
