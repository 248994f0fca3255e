// A WebSocket client that behaves like a browser tab using warren: it
// connects with a token, decodes warren.json or warren.msgpack frames,
// collects what it receives, acks (or not) and can reconnect by itself.
import WebSocket from 'ws';
import { encode as msgpackEncode, decode as msgpackDecode } from '@msgpack/msgpack';
import { sleep, waitFor } from './util.js';

const clients = new Set();

export function closeAllClients() {
  for (const c of clients) c.close();
  clients.clear();
}

// One handshake attempt. Resolves { ws, status: 101 } on upgrade or
// { status, body } when the server answered with a plain HTTP response
// (401, 403…); rejects on a network error.
//   via: 'query' | 'bearer' | 'protocol' (Sec-WebSocket-Protocol bearer.<token>,
//   offered after `protocol`) | 'cookie' | 'none'
//   onOpen(ws): called synchronously on 'open', before any message event, so
//   the welcome sent in the same TCP segment as the 101 is never missed.
export function openSocket(
  baseUrl,
  token,
  { via = 'query', protocol = 'warren.json', cookieName = 'warren_token', headers = {}, onOpen } = {},
) {
  let url = baseUrl;
  const h = { ...headers };
  const protocols = protocol ? [protocol] : [];
  if (token !== undefined && token !== null) {
    if (via === 'query') url += `${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
    else if (via === 'bearer') h.Authorization = `Bearer ${token}`;
    else if (via === 'protocol') protocols.push(`bearer.${token}`);
    else if (via === 'cookie') h.Cookie = `${cookieName}=${token}`;
  }
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers: h, handshakeTimeout: 5000 });
    let settled = false;
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      const done = () => {
        if (settled) return;
        settled = true;
        req.destroy();
        resolve({ status: res.statusCode, body, headers: res.headers });
      };
      res.on('end', done);
      res.on('error', done);
      setTimeout(done, 1000);
    });
        ws.once('open', () => {
      if (settled) return;
      settled = true;
      if (onOpen) onOpen(ws);
      resolve({ ws, status: 101 });
    });
    ws.once('error', (err) => {
      if (settled) return;
      settled = true;
      reject(err);
    });
  });
}

function decodeFrame(data, isBinary) {
  if (isBinary) return msgpackDecode(data);
  return JSON.parse(data.toString('utf8'));
}

export class WarrenClient {
  // url: ws://host:port/ws (no token); opts:
  //   protocol 'warren.json' | 'warren.msgpack', autoAck (true), via,
  //   reconnect (false), name (for diagnostics)
  constructor(url, token, opts = {}) {
    this.url = url;
    this.token = token;
    this.opts = { protocol: 'warren.json', autoAck: true, via: 'query', reconnect: false, ...opts };
    this.messages = []; // every decoded server message, in order, across reconnects
    this.notifications = []; // those that are notifications
    this.ids = new Map(); // id -> times received
    this.frames = { text: 0, binary: 0 };
    this.closes = []; // { code, reason } per closed socket
    this.welcomes = [];
    this.errors = [];
    this.opens = 0;
    this.duplicates = 0;
    this.closed = false; // closed by us
    this.ws = null;
    this.listeners = new Set();
    clients.add(this);
  }

  get welcome() {
    return this.welcomes[this.welcomes.length - 1];
  }

  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  // Connects and resolves with the welcome message. Rejects with err.status
  // when the handshake is refused.
  async connect() {
    const n = this.welcomes.length;
    const r = await openSocket(this.url, this.token, { ...this.opts, onOpen: (ws) => this.attach(ws) });
    if (r.status !== 101) {
      const err = new Error(`handshake refused: HTTP ${r.status} ${r.body || ''}`);
      err.status = r.status;
      throw err;
    }
    await waitFor(() => this.welcomes.length > n, { timeout: 5000, interval: 10, what: 'welcome message' });
    return this.welcome;
  }

  attach(ws) {
    this.ws = ws;
    this.opens++;
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('error', (err) => this.errors.push(err.message));
    ws.on('close', (code, reason) => {
      this.closes.push({ code, reason: reason.toString() });
      if (this.ws === ws) this.ws = null;
      if (this.opts.reconnect && !this.closed) this.reconnectLoop();
    });
  }

  async reconnectLoop() {
    if (this.reconnecting) return;
    this.reconnecting = true;
    try {
      while (!this.closed && !this.connected) {
        await sleep(100 + Math.random() * 200);
        if (this.closed) break;
        try {
          await this.connect();
        } catch {
          // daemon still down or not ready yet: try again
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }

  onMessage(data, isBinary) {
    if (isBinary) this.frames.binary++;
    else this.frames.text++;
    let msg;
    try {
      msg = decodeFrame(data, isBinary);
    } catch (err) {
      this.errors.push(`undecodable frame: ${err.message}`);
      return;
    }
    this.messages.push(msg);
    if (msg && msg.type === 'welcome') {
      this.welcomes.push(msg);
    } else if (msg && msg.type !== 'pong' && msg.type !== 'error' && msg.id !== undefined) {
      this.notifications.push(msg);
      const n = (this.ids.get(msg.id) || 0) + 1;
      this.ids.set(msg.id, n);
      if (n > 1) this.duplicates++;
      if (this.opts.autoAck) this.ack(msg.id);
    }
    for (const fn of this.listeners) fn(msg, this);
  }

  onMessageListener(fn) {
    this.listeners.add(fn);
  }

  // Sends a client message: msgpack binary on a warren.msgpack connection
  // (what a msgpack client would do), JSON text otherwise.
  send(obj, { asText = false } = {}) {
    if (!this.connected) return false;
    if (this.opts.protocol === 'warren.msgpack' && !asText) this.ws.send(Buffer.from(msgpackEncode(obj)), { binary: true });
    else this.ws.send(JSON.stringify(obj));
    return true;
  }

  ack(idOrIds) {
    if (Array.isArray(idOrIds)) return this.send({ type: 'ack', ids: idOrIds });
    return this.send({ type: 'ack', id: idOrIds });
  }

  waitForIds(ids, { timeout = 10000 } = {}) {
    return waitFor(() => ids.every((id) => this.ids.has(id)), {
      timeout,
      interval: 20,
      what: () => {
        const missing = ids.filter((id) => !this.ids.has(id));
        const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
        return `ids ${missing.slice(0, 5).join(',')}${more} (${missing.length} of ${ids.length} missing) on client ${this.opts.name || ''}`;
      },
    });
  }

  waitForMessage(pred, { timeout = 10000, what = 'message' } = {}) {
    return waitFor(() => this.messages.find(pred), { timeout, interval: 20, what });
  }

  waitForClose({ timeout = 10000 } = {}) {
    return waitFor(() => this.closes[this.closes.length - 1], { timeout, interval: 20, what: 'close' });
  }

  close() {
    this.closed = true;
    if (this.ws) {
      try {
        this.ws.terminate();
      } catch {
        // already closed
      }
    }
    clients.delete(this);
  }
}

// Connects a client and returns it once welcomed.
export async function connectClient(url, token, opts) {
  const c = new WarrenClient(url, token, opts);
  await c.connect();
  return c;
}
