// Tests of the browser client (web/warren.js) and the demo page (web/demo.html).
//
// They run against a small stand-in server that speaks warren's client
// protocol (README.md, "Client protocol") and serves the two files as warren does with
// server.demo = true, so they need neither the daemon nor the broker:
// the client's reconnect, dedup and ack rules are checked on their own.
// The browser part needs Chromium (/usr/bin/chromium, or WARREN_CHROMIUM) and
// the npm package playwright-core; it is skipped, saying why, when either is missing.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, WebSocket } from 'ws';
import {
  startWarren, cleanupAll, Publisher, assertQueuesEmpty, httpGet, signJwt, waitFor, WARREN_BIN, browserSkip, launchBrowser,
} from './lib/index.js';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = path.join(here, '..', 'web');
const Warren = require(path.join(webDir, 'warren.js'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits until pred() is true, polling; fails with `what` after `ms`.
async function until(pred, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(5);
  }
}

// The token of a request as warren finds it: ?token=, else a "bearer.<token>"
// entry of Sec-WebSocket-Protocol.
function requestToken(req) {
  const q = new URL(req.url, 'http://x').searchParams.get('token');
  if (q) return q;
  const offered = String(req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
  const bearer = offered.find((p) => p.startsWith('bearer.'));
  return bearer ? bearer.slice('bearer.'.length) : '';
}

// A stand-in for warren's public port. Tokens "good-<user>" are accepted,
// anything else gets 401 before the upgrade, as warren answers. Like warren
// it selects only warren.json, never a "bearer." entry.
class FakeWarren {
  constructor() {
    this.conns = []; // every accepted connection, oldest first
    this.refused = 0;
    this.autoPong = true;
    this.http = http.createServer((req, res) => {
      const url = new URL(req.url, 'http://x');
      const file = { '/': 'demo.html', '/warren.js': 'warren.js' }[url.pathname];
      if (!file) {
        res.writeHead(404).end();
        return;
      }
      const type = file.endsWith('.html') ? 'text/html; charset=utf-8' : 'text/javascript; charset=utf-8';
      res.writeHead(200, { 'content-type': type }).end(fs.readFileSync(path.join(webDir, file)));
    });
    this.wss = new WebSocketServer({
      server: this.http,
      path: '/ws',
      handleProtocols: (protocols) => (protocols.has('warren.json') ? 'warren.json' : false),
      verifyClient: (info, cb) => {
        const token = requestToken(info.req);
        if (!token.startsWith('good-')) {
          this.refused += 1;
          cb(false, 401, 'Unauthorized');
          return;
        }
        cb(true);
      },
    });
    this.wss.on('connection', (ws, req) => {
      const c = {
        ws,
        url: req.url,
        offered: req.headers['sec-websocket-protocol'],
        protocol: ws.protocol,
        msgs: [],
        closed: false,
      };
      const user = requestToken(req).slice(5);
      ws.on('message', (data, isBinary) => {
        const m = isBinary ? { binary: true } : JSON.parse(String(data));
        c.msgs.push(m);
        if (m.type === 'ping' && this.autoPong) ws.send('{"type":"pong"}');
      });
      ws.on('close', () => {
        c.closed = true;
      });
      this.conns.push(c);
      ws.send(JSON.stringify({ type: 'welcome', user_id: user, ack_mode: 'client' }));
    });
  }
  async start() {
    await new Promise((r) => this.http.listen(0, '127.0.0.1', r));
    this.port = this.http.address().port;
    this.url = `ws://127.0.0.1:${this.port}/ws`;
  }
  last() {
    return this.conns[this.conns.length - 1];
  }
  acks(c = this.last()) {
    return c.msgs.filter((m) => m.type === 'ack').map((m) => m.id);
  }
  async stop() {
    for (const c of this.conns) c.ws.terminate();
    this.wss.close();
    await new Promise((r) => this.http.close(r));
  }
}

// A client wired to record its status events and notifications.
function makeClient(server, opts = {}) {
  const log = { status: [], notes: [] };
  const w = new Warren({
    url: server.url,
    token: 'good-1001',
    WebSocket,
    onStatus: (s) => log.status.push(s),
    onNotification: (n) => log.notes.push(n),
    ...opts,
  });
  return { w, log };
}

const statuses = (log) => log.status.map((s) => s.status);

describe('warren.js client', () => {
  let server;
  let client;
  before(async () => {
    server = new FakeWarren();
    await server.start();
  });
  after(async () => {
    await server.stop();
  });
  // Every client is closed after its test, passed or failed, so that no
  // reconnect timer keeps the process alive.
  const use = (c) => (client = c);
  const done = () => client && client.w.close();
  afterEach(() => {
    done();
    client = null;
  });

  test('offers the token as the subprotocol bearer.<token> next to warren.json, never in the URL', async () => {
    const { w, log } = use(makeClient(server, { token: 'good-1001' }));
    const before = server.conns.length;
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    assert.equal(server.conns.length, before + 1);
    assert.equal(server.last().url, '/ws');
    assert.deepEqual(server.last().offered.split(',').map((x) => x.trim()), ['warren.json', 'bearer.good-1001']);
    assert.equal(server.last().protocol, 'warren.json');
    assert.equal(log.status[1].userId, '1001');
    done();
  });

  test('a token that cannot be a subprotocol name fails at once, saying why, instead of leaking elsewhere', async () => {
    const { w, log } = use(makeClient(server, { token: 'good-a b&c', reconnectBaseMs: 10 }));
    const before = server.conns.length;
    w.connect();
    await until(() => statuses(log).includes('closed'), 'closed');
    assert.deepEqual(statuses(log), ['connecting', 'closed']);
    assert.match(log.status[1].reason, /subprotocol/i);
    await sleep(50);
    assert.equal(server.conns.length, before);
  });

  test("tokenIn: 'query' puts the token in the URL instead", async () => {
    const { w, log } = use(makeClient(server, { token: 'good-a b&c', tokenIn: 'query' }));
    const before = server.conns.length;
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    assert.equal(server.conns.length, before + 1);
    assert.equal(server.last().url, '/ws?token=' + encodeURIComponent('good-a b&c'));
    assert.equal(server.last().offered, 'warren.json');
    assert.equal(server.last().protocol, 'warren.json');
    assert.deepEqual(statuses(log), ['connecting', 'open']);
    assert.equal(log.status[1].userId, 'a b&c');
    assert.equal(log.status[1].ackMode, 'client');
    done();
    assert.equal(log.status.at(-1).status, 'closed');
  });

  test('hands a notification to the app, then acks it; a duplicate is acked but not handed again', async () => {
    const { w, log } = use(makeClient(server));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    const n = { type: 'order', id: 'n-1', title: 'Paid', data: { order: 7 } };
    c.ws.send(JSON.stringify(n));
    await until(() => server.acks(c).length === 1, 'first ack');
    assert.deepEqual(log.notes, [n]);
    assert.deepEqual(server.acks(c), ['n-1']);
    c.ws.send(JSON.stringify(n));
    await until(() => server.acks(c).length === 2, 'second ack');
    assert.equal(log.notes.length, 1, 'duplicate must not reach the app');
    done();
  });

  test('a notification is told apart by its id, not its type: types welcome, pong and error are handled and acked', async () => {
    const { w, log } = use(makeClient(server));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    const notes = [
      { type: 'welcome', id: 'w-1', title: 'Welcome aboard' },
      { type: 'pong', id: 'p-1', title: 'Table tennis results' },
      { type: 'error', id: 'e-1', title: 'Build failed', error: 'exit 2' },
    ];
    for (const n of notes) c.ws.send(JSON.stringify(n));
    await until(() => server.acks(c).length === 3, 'three acks');
    assert.deepEqual(log.notes, notes);
    assert.deepEqual(server.acks(c), ['w-1', 'p-1', 'e-1']);
    // None of them was taken for a control message.
    assert.deepEqual(statuses(log), ['connecting', 'open']);
    assert.equal(log.status[1].userId, '1001');
    done();
  });

  test('control messages (no id) are never handed to the app nor acked', async (t) => {
    const errors = [];
    t.mock.method(console, 'error', (...a) => errors.push(a));
    const { w, log } = use(makeClient(server));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    c.ws.send(JSON.stringify({ type: 'welcome', user_id: '1001', ack_mode: 'client' }));
    c.ws.send('{"type":"pong"}');
    c.ws.send('{"type":"error","error":"unknown_type"}');
    c.ws.send('{"type":"notification","id":"after"}');
    await until(() => server.acks(c).length === 1, 'ack of the notification');
    assert.deepEqual(log.notes.map((n) => n.id), ['after']);
    assert.deepEqual(server.acks(c), ['after']);
    assert.equal(errors.length, 1);
    assert.match(String(errors[0][0]), /unknown_type/);
    done();
  });

  test('acks only after the promise returned by the handler resolves', async () => {
    let release;
    const { w, log } = use(
      makeClient(server, {
        onNotification: (n) => {
          log.notes.push(n);
          return new Promise((r) => (release = r));
        },
      }),
    );
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    c.ws.send('{"type":"notification","id":42}');
    await until(() => log.notes.length === 1, 'handler call');
    // The same id arriving while the handler still runs is neither handed
    // again nor acked early; both arrivals are acked once it resolves.
    c.ws.send('{"type":"notification","id":42}');
    await sleep(50);
    assert.deepEqual(server.acks(c), []);
    assert.equal(log.notes.length, 1);
    release();
    await until(() => server.acks(c).length === 2, 'acks');
    assert.deepEqual(server.acks(c), [42, 42]);
    done();
  });

  test('does not ack when the handler throws, so the redelivery is handled again', async (t) => {
    const errors = [];
    t.mock.method(console, 'error', (...a) => errors.push(a));
    let fail = true;
    const { w, log } = use(
      makeClient(server, {
        onNotification: async (n) => {
          log.notes.push(n);
          if (fail) throw new Error('boom');
        },
      }),
    );
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    c.ws.send('{"id":"x"}');
    await until(() => errors.length === 1, 'console.error');
    await sleep(30);
    assert.deepEqual(server.acks(c), []);
    assert.match(String(errors[0][0]), /x/);
    fail = false;
    c.ws.send('{"id":"x"}');
    await until(() => server.acks(c).length === 1, 'ack of the redelivery');
    assert.equal(log.notes.length, 2);
    done();
  });

  test('forgets the oldest ids beyond dedupSize', async () => {
    const { w, log } = use(makeClient(server, { dedupSize: 2 }));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    // One at a time, so each is handled before the next arrives.
    const ids = ['a', 'b', 'c', 'c', 'a'];
    for (let i = 0; i < ids.length; i++) {
      c.ws.send(JSON.stringify({ id: ids[i] }));
      await until(() => server.acks(c).length === i + 1, 'ack ' + (i + 1));
    }
    assert.deepEqual(
      log.notes.map((n) => n.id),
      ['a', 'b', 'c', 'a'],
    );
    done();
  });

  test('ignores frames it cannot use without dropping the connection', async (t) => {
    t.mock.method(console, 'error', () => {});
    const { w, log } = use(makeClient(server));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    c.ws.send('not json');
    c.ws.send('[1,2]');
    c.ws.send('null');
    c.ws.send('{"type":"notice"}');
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    c.ws.send('{"id":"ok"}');
    await until(() => server.acks(c).length === 1, 'ack');
    assert.deepEqual(
      log.notes.map((n) => n.id),
      ['ok'],
    );
    assert.deepEqual(statuses(log), ['connecting', 'open']);
    done();
  });

  test('stops on close code 1008 and reports the reason', async () => {
    const { w, log } = use(makeClient(server, { reconnectBaseMs: 20 }));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const count = server.conns.length;
    server.last().ws.close(1008, 'token expired');
    await until(() => statuses(log).includes('closed'), 'closed');
    assert.deepEqual(log.status.at(-1), { status: 'closed', code: 1008, reason: 'token expired' });
    await sleep(150);
    assert.equal(server.conns.length, count, 'no reconnect after 1008');
    // connect() with a new token starts again.
    w.setToken('good-1001');
    w.connect();
    await until(() => statuses(log).filter((s) => s === 'open').length === 2, 'reopen');
    done();
  });

  for (const [code, why] of [
    [4008, 'slow consumer'],
    [1001, 'going away'],
    [1006, 'network error'],
  ]) {
    test(`reconnects after ${code} (${why})`, async () => {
      const { w, log } = use(makeClient(server, { reconnectBaseMs: 40, random: () => 0.5 }));
      w.connect();
      await until(() => statuses(log).includes('open'), 'open');
      const count = server.conns.length;
      if (code === 1006) server.last().ws.terminate();
      else server.last().ws.close(code, why);
      await until(() => statuses(log).includes('reconnecting'), 'reconnecting');
      const r = log.status.find((s) => s.status === 'reconnecting');
      assert.equal(r.attempt, 1);
      assert.equal(r.delayMs, 20); // half of the first cap, 40 ms
      assert.equal(r.code, code);
      await until(() => statuses(log).filter((s) => s === 'open').length === 2, 'reopen');
      assert.equal(server.conns.length, count + 1);
      assert.deepEqual(statuses(log), ['connecting', 'open', 'reconnecting', 'connecting', 'open']);
      done();
    });
  }

  test('backs off exponentially up to the cap while the server refuses', async () => {
    const { w, log } = use(
      makeClient(server, {
        token: 'expired',
        reconnectBaseMs: 4,
        reconnectMaxMs: 40,
        random: () => 0.999999,
      }),
    );
    w.connect();
    await until(() => log.status.filter((s) => s.status === 'reconnecting').length >= 7, 'seven retries');
    w.close();
    const delays = log.status.filter((s) => s.status === 'reconnecting').map((s) => s.delayMs);
    assert.deepEqual(delays.slice(0, 7), [3, 7, 15, 31, 39, 39, 39]);
    const attempts = log.status.filter((s) => s.status === 'reconnecting').map((s) => s.attempt);
    assert.deepEqual(attempts.slice(0, 4), [1, 2, 3, 4]);
    assert.ok(!statuses(log).includes('open'));
  });

  test('resets the backoff only once a connection has stayed open', async () => {
    const { w, log } = use(makeClient(server, { reconnectBaseMs: 10, stableAfterMs: 150, random: () => 0 }));
    w.connect();
    const opens = () => statuses(log).filter((s) => s === 'open').length;
    await until(() => opens() === 1, 'open');
    server.last().ws.close(4008, 'slow');
    await until(() => opens() === 2, 'second open');
    server.last().ws.close(4008, 'slow'); // dropped quickly: attempt keeps counting
    await until(() => opens() === 3, 'third open');
    await sleep(250); // stays open past stableAfterMs
    server.last().ws.close(4008, 'slow');
    await until(() => opens() === 4, 'fourth open');
    const attempts = log.status.filter((s) => s.status === 'reconnecting').map((s) => s.attempt);
    assert.deepEqual(attempts, [1, 2, 1]);
    done();
  });

  test('pings at pingIntervalMs and reconnects when no pong comes back', async () => {
    const { w, log } = use(makeClient(server, { pingIntervalMs: 30, pongTimeoutMs: 60, reconnectBaseMs: 10 }));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    await until(() => c.msgs.filter((m) => m.type === 'ping').length >= 3, 'three pings');
    assert.ok(!statuses(log).includes('reconnecting'), 'answered pings keep the connection');
    server.autoPong = false;
    try {
      await until(() => statuses(log).includes('reconnecting'), 'reconnect on ping timeout');
      const r = log.status.find((s) => s.status === 'reconnecting');
      assert.equal(r.reason, 'ping timeout');
      await until(() => c.closed, 'old socket closed');
    } finally {
      server.autoPong = true;
    }
    await until(() => statuses(log).filter((s) => s === 'open').length === 2, 'reopen');
    done();
  });

  test('close() stops for good', async () => {
    const { w, log } = use(makeClient(server, { reconnectBaseMs: 10 }));
    w.connect();
    await until(() => statuses(log).includes('open'), 'open');
    const c = server.last();
    const count = server.conns.length;
    w.close();
    await until(() => c.closed, 'server sees the close');
    await sleep(80);
    assert.equal(server.conns.length, count);
    assert.deepEqual(statuses(log), ['connecting', 'open', 'closed']);
  });
});

// The demo page in a real headless Chromium.
describe('demo page in Chromium', { skip: browserSkip }, () => {
  let server;
  let browser;
  before(async () => {
    server = new FakeWarren();
    await server.start();
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  test('connects with the token from the page URL, shows notifications safely and acks them', async () => {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    await page.goto(`http://127.0.0.1:${server.port}/?token=good-1001`);
    assert.equal(await page.inputValue('#token'), 'good-1001');
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as 1001');
    const c = server.last();
    const evil = '<img src=x onerror="window.pwned=1">';
    c.ws.send(JSON.stringify({ type: 'notification', id: 'n1', title: evil, content: 'first', data: { a: [1, 2] } }));
    c.ws.send(JSON.stringify({ type: 'alert', id: 'n2', title: 'Second', content: 'newest' }));
    c.ws.send(JSON.stringify({ type: 'alert', id: 'n2', title: 'Second', content: 'newest' }));
    await until(() => server.acks(c).length === 3, 'three acks');
    assert.deepEqual(server.acks(c), ['n1', 'n2', 'n2']);
    assert.equal(await page.textContent('#count'), '2');
    const cards = await page.$$eval('#list .card', (els) =>
      els.map((e) => ({
        id: e.dataset.id,
        title: e.querySelector('h2').textContent,
        imgs: e.querySelectorAll('img').length,
        data: e.querySelector('pre') ? e.querySelector('pre').textContent : null,
        text: e.textContent,
      })),
    );
    assert.deepEqual(
      cards.map((x) => x.id),
      ['n2', 'n1'],
      'newest first',
    );
    assert.equal(cards[1].title, evil, 'shown as text');
    assert.equal(cards[1].imgs, 0, 'not parsed as HTML');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.deepEqual(JSON.parse(cards[1].data), { a: [1, 2] });
    assert.equal(cards[0].data, null);
    assert.match(cards[0].text, /alert/);

    await page.click('#clear');
    assert.equal(await page.textContent('#count'), '0');
    assert.equal(await page.$$eval('#list .card', (els) => els.length), 0);

    // The reconnect delay is uniform under 1 s (full jitter): a short one
    // shows "reconnecting" for less than a polling interval, so every text
    // the status line shows is recorded.
    await page.evaluate(() => {
      const el = document.getElementById('status-text');
      window.statusLog = [];
      new MutationObserver((records) => {
        for (const r of records) for (const n of r.addedNodes) window.statusLog.push(n.textContent);
      }).observe(el, { childList: true });
    });
    c.ws.close(4008, 'slow consumer');
    await page.waitForFunction(() => window.statusLog.some((s) => /^reconnecting in \d+s \(attempt 1\)$/.test(s)));
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as 1001', null, {
      timeout: 5000,
    });
    server.last().ws.close(1008, 'token expired');
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'closed: token expired');
    assert.equal(await page.getAttribute('#dot', 'class'), 'dot closed');

    // A new token typed into the field connects again.
    await page.fill('#token', 'good-2002');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as 2002');
    assert.deepEqual(pageErrors, []);
    await page.close();
  });

  test('lays out without horizontal scrolling on a phone-sized screen', async () => {
    const page = await browser.newPage({ viewport: { width: 360, height: 640 } });
    await page.goto(`http://127.0.0.1:${server.port}/?token=good-${'x'.repeat(80)}`);
    await page.waitForFunction(() => document.getElementById('status-text').textContent.startsWith('connected as'));
    server.last().ws.send(JSON.stringify({ id: 'y'.repeat(120), title: 'z'.repeat(200), data: { k: 'v' } }));
    await page.waitForSelector('#list .card');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, 'page is ' + overflow + 'px wider than the screen');
    await page.close();
  });
});

// The same page served by the real daemon, with a real broker behind it.
const daemonSkip = browserSkip || (fs.existsSync(WARREN_BIN) ? false : WARREN_BIN + ' not built');

describe('demo page served by warren', { skip: daemonSkip }, () => {
  let w;
  let pub;
  let browser;
  const now = () => Math.floor(Date.now() / 1000);
  before(async () => {
    // A long ack timeout: the notification must be acked by the page itself,
    // not pass through the retry ladder and come back.
    w = await startWarren({
      name: 'web',
      config: { server: { demo: true }, auth: { leeway_s: 0 }, ack: { timeout_ms: 30000 } },
    });
    pub = await Publisher.open();
    browser = await launchBrowser();
  });
  after(async () => {
    if (browser) await browser.close();
    if (pub) await pub.close();
    await cleanupAll();
  });

  test('serves demo.html at / and warren.js at /warren.js, byte for byte', async () => {
    const base = `http://127.0.0.1:${w.port}`;
    const page = await httpGet(base + '/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    assert.equal(page.body, fs.readFileSync(path.join(webDir, 'demo.html'), 'utf8'));
    const js = await httpGet(base + '/warren.js');
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /javascript/);
    assert.equal(js.body, fs.readFileSync(path.join(webDir, 'warren.js'), 'utf8'));
  });

  test('a published notification appears as a card; after warren restarts the page reconnects by itself', async (t) => {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    const token = signJwt({ sub: 'web-restart', exp: now() + 600 }, w.secret);
    await page.goto(`http://127.0.0.1:${w.port}/?token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as web-restart');
    const cards = () => page.$$eval('#list .card', (els) => els.map((e) => e.dataset.id));

    const first = `web-r1-${Date.now()}`;
    const t0 = Date.now();
    await pub.publishAll(w.exchange, [{ id: first, user_id: 'web-restart', title: 'Before restart', content: 'one' }]);
    await page.waitForFunction((id) => !!document.querySelector(`#list .card[data-id="${id}"]`), first, { timeout: 10000 });
    const shownMs = Date.now() - t0;
    t.diagnostic(`publish (confirmed) → card on the page: ${shownMs} ms`);

    // Restart the daemon under the page: the page notices, backs off and
    // reconnects with no help.
    await w.restart();
    await page.waitForFunction(() => /^reconnecting/.test(document.getElementById('status-text').textContent) ||
      document.getElementById('status-text').textContent === 'connected as web-restart', null, { timeout: 10000 });
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as web-restart', null, {
      timeout: 40000,
    });
    const second = `web-r2-${Date.now()}`;
    await pub.publishAll(w.exchange, [{ id: second, user_id: 'web-restart', title: 'After restart', content: 'two' }]);
    await page.waitForFunction((id) => !!document.querySelector(`#list .card[data-id="${id}"]`), second, { timeout: 10000 });
    // Newest first, each shown once.
    assert.deepEqual(await cards(), [second, first]);
    assert.deepEqual(pageErrors, []);
    await page.close();
  });

  test('a published notification of type "welcome" is shown and acked like any other; the token never reaches the URL', async () => {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    const wsUrls = [];
    page.on('websocket', (ws) => wsUrls.push(ws.url()));
    const token = signJwt({ sub: 'web-welcome', exp: now() + 600 }, w.secret);
    await page.goto(`http://127.0.0.1:${w.port}/?token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as web-welcome');
    // warren.js offered the token as a subprotocol: the socket URL is bare.
    assert.deepEqual(wsUrls, [`ws://127.0.0.1:${w.port}/ws`]);
    const acks0 = (await w.stats()).client_acks;
    const id = `web-welcome-${Date.now()}`;
    await pub.publishAll(w.exchange, [{ id, user_id: 'web-welcome', type: 'welcome', title: 'Welcome to the team' }]);
    await page.waitForFunction((x) => !!document.querySelector(`#list .card[data-id="${x}"]`), id, { timeout: 10000 });
    const tag = await page.$eval(`#list .card[data-id="${id}"] .tag`, (e) => e.textContent);
    assert.equal(tag, 'welcome');
    // Still connected as the same user: the notification was not taken for a welcome.
    assert.equal(await page.textContent('#status-text'), 'connected as web-welcome');
    await waitFor(async () => (await w.stats()).client_acks > acks0, { timeout: 5000, what: 'the page acked it' });
    assert.deepEqual(pageErrors, []);
    await page.close();
  });

  test('the page receives a published notification, acks it, and stops when the token expires', async () => {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    // Expires in 4 s: long enough to deliver, short enough to see the 1008 close.
    const token = signJwt({ sub: 'web-user', exp: now() + 4 }, w.secret);
    await page.goto(`http://127.0.0.1:${w.port}/?token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'connected as web-user');
    const id = `web-${Date.now()}`;
    await pub.publishAll(w.exchange, [
      { id, user_id: 'web-user', type: 'order', title: '<b>Paid</b>', content: 'Order 7 is paid', data: { order: 7 } },
    ]);
    await page.waitForSelector('#list .card');
    const card = await page.$eval('#list .card', (e) => ({
      id: e.dataset.id,
      title: e.querySelector('h2').textContent,
      bold: e.querySelectorAll('b').length,
      data: e.querySelector('pre').textContent,
    }));
    assert.deepEqual(card, { id, title: '<b>Paid</b>', bold: 0, data: JSON.stringify({ order: 7 }, null, 2) });
    await page.waitForFunction(() => document.getElementById('status-text').textContent === 'closed: token expired', null, {
      timeout: 10000,
    });
    assert.deepEqual(pageErrors, []);
    await page.close();
    // Nothing waits in a queue and nothing was held unacked by warren: the
    // page's ack reached the broker.
    await assertQueuesEmpty(w, { timeout: 5000 });
  });
});
