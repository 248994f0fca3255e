// The admin dashboard (GET /dashboard on admin.listen) in a real headless
// Chromium: while traffic flows, its charts plot non-zero connections, queue
// depths, delivery rate, latency and mailbox puts; an offline user's return
// plots her replay (items/s, consumed mailboxes, replay p50/p99); a mailbox
// item never acked is parked and a poison message reaches Q.dead, and each
// raises the alert banner. Saves a screenshot to artifacts/dashboard.png, and with
// WARREN_UPDATE_DOCS=1 to docs/dashboard.png (shown by the README).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  startWarren, cleanupAll, connectClient, Publisher, httpGet, sleep, waitFor, ARTIFACTS_DIR, REPO_ROOT, browserSkip, launchBrowser,
} from './lib/index.js';


const skip = browserSkip;

let browser;
after(async () => {
  if (browser) await browser.close().catch(() => {});
  await cleanupAll();
});

test('/dashboard is one self-contained HTML page on the admin port', async () => {
  const w = await startWarren({ name: 'dash-static' });
  const r = await httpGet(`${w.adminUrl}/dashboard`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/html/);
  assert.match(r.body, /<canvas/);
  assert.ok(r.body.includes('/api/stats'), 'polls /api/stats');
  // Nothing is loaded from elsewhere: no external script, stylesheet or font.
  assert.doesNotMatch(r.body, /<script[^>]+src=|<link[^>]+href=|https?:\/\/|@import/);
  // Never on the public port.
  assert.equal((await httpGet(`http://127.0.0.1:${w.port}/dashboard`)).status, 404);
  await w.stop();
});

// Pixels of colour rgb on canvas id: a plotted line has some, a blank or
// grid-only canvas none.
function paintedPixels(page, charts) {
  return page.evaluate((list) =>
    list.map(([id, rgb]) => {
      const c = document.getElementById(id);
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let hits = 0;
      for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - rgb[0]) < 24 && Math.abs(d[i + 1] - rgb[1]) < 24 && Math.abs(d[i + 2] - rgb[2]) < 24 && d[i + 3] > 200) hits++;
      return hits;
    }), charts);
}

// The maxima of the page's series named (and how many queue lines it has),
// once pred(maxima) holds.
async function seriesMaxima(page, names, pred, timeout = 20000) {
  let last = null;
  const read = () =>
    page.evaluate((ns) => {
      const s = window.warrenDashboard.series;
      const max = (name) => Math.max(0, ...(s[name] || []).map((p) => p.v));
      const out = { queues: Object.keys(s).filter((k) => k.startsWith('queue:')).length };
      for (const n of ns) out[n] = max(n);
      return out;
    }, names);
  await waitFor(async () => pred((last = await read())), { timeout, interval: 200, what: `dashboard series ${names.join(', ')}` })
    .catch((err) => {
      err.message += `; last maxima ${JSON.stringify(last)}`;
      throw err;
    });
  return last;
}

const BLUE = [0x2f, 0x6f, 0xdf];
const GREEN = [0x2c, 0xa0, 0x5a];
const AMBER = [0xe8, 0x87, 0x1e];

test('the dashboard plots live traffic and mailboxes, and raises alerts when Q.parked or Q.dead grows', { skip, timeout: 120000 }, async () => {
  const w = await startWarren({
    name: 'dashboard',
    // A short ack timeout and one redelivery let a client that never acks
    // get its mailbox item parked within seconds.
    config: { ack: { timeout_ms: 1000 }, mailbox: { max_redeliveries: 1 }, admin: { queue_poll_ms: 200 } },
  });
  browser = await launchBrowser();
  const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${w.adminUrl}/dashboard`);
  await page.waitForFunction(() => window.warrenDashboard && window.warrenDashboard.polls >= 2);

  const users = ['ann', 'ben', 'cid'];
  const clients = [];
  for (const u of users) clients.push(await connectClient(w.wsUrl(), await w.token(u), { name: u }));
  const pub = await Publisher.open();
  // About 8 s of paced traffic: online users get theirs at once, the offline
  // one's wait in her mailbox.
  let n = 0;
  const sent = Object.fromEntries(users.map((u) => [u, []]));
  const offline = [];
  for (let round = 0; round < 16; round++) {
    const batch = [];
    for (const u of users) {
      for (let i = 0; i < 4; i++) {
        const id = `n${n++}`;
        sent[u].push(id);
        batch.push({ id, user_id: u, title: `round ${round}`, created_at: Date.now() });
      }
    }
    offline.push(`off${round}`);
    batch.push({ id: `off${round}`, user_id: 'dora', title: 'offline' });
    await pub.publishAll(w.exchange, batch);
    await sleep(500);
  }
  for (let i = 0; i < users.length; i++) await clients[i].waitForIds(sent[users[i]]);

  const figures = await seriesMaxima(
    page,
    ['connections', 'delivered_per_s', 'latency_p50_ms', 'latency_p99_ms', 'mbox_puts_per_s', 'mbox_known'],
    (m) => m.connections >= 3 && m.delivered_per_s > 0 && m.latency_p99_ms > 0 && m.queues >= 6 && m.mbox_puts_per_s > 0 && m.mbox_known >= 1,
  );
  console.log(`dashboard series maxima after the traffic: ${JSON.stringify(figures)}`);
  // dora's notifications went to her mailbox, none to the ladder.
  assert.equal(await page.evaluate(() => window.warrenDashboard.last.s.retried), 0);

  // The plotted lines are really on the canvases: in queue depths every
  // queue is at 0 and Q.mailbox.new's green, drawn last, covers the others;
  // elsewhere the first series' blue.
  let painted = await paintedPixels(page, [['c-queues', GREEN], ['c-conns', BLUE], ['c-rate', BLUE], ['c-lat', BLUE], ['c-mbox', BLUE], ['c-mbox-n', BLUE]]);
  assert.ok(painted.every((h) => h > 8), `line pixels per chart (queues, connections, rate, latency, mailbox traffic, mailboxes): ${painted}`);

  // No alert yet: nothing has been parked or dead-lettered.
  assert.equal(await page.evaluate(() => window.warrenDashboard.alerts.length), 0);
  assert.equal(await page.isVisible('#alert'), false);

  // dora comes back: her mailbox replays, and the replay panel plots it.
  const dora = await connectClient(w.wsUrl(), await w.token('dora'), { name: 'dora' });
  await dora.waitForIds(offline);
  const replayed = await seriesMaxima(
    page,
    ['mbox_items_per_s', 'mbox_consumed', 'replay_p50_ms', 'replay_p99_ms'],
    (m) => m.mbox_items_per_s > 0 && m.mbox_consumed >= 1 && m.replay_p50_ms > 0 && m.replay_p99_ms >= m.replay_p50_ms,
  );
  console.log(`dashboard series maxima after dora's replay: ${JSON.stringify(replayed)}`);
  assert.match(await page.textContent('#replay-now'), /^1 since start · p50 [\d.,]+ ms · p99 [\d.,]+ ms$/);
  assert.match(await page.textContent('#mbox-now'), /^\d+ known · 1 consumed$/);
  painted = await paintedPixels(page, [['c-replay', BLUE]]);
  assert.ok(painted[0] > 8, `line pixels in the replay chart: ${painted}`);

  // eve never acks: her item is redelivered once, then parked (unacked),
  // and the banner says Q.parked grew.
  const eve = await connectClient(w.wsUrl(), await w.token('eve'), { name: 'eve', autoAck: false });
  await pub.publishAll(w.exchange, [{ id: 'e1', user_id: 'eve', title: 'never acked' }]);
  await page.waitForSelector('#alert.show', { timeout: 20000 });
  let text = await page.textContent('#alert-text');
  assert.ok(text.includes(w.parkedQueue) && text.includes('parked'), `alert names ${w.parkedQueue}: ${text}`);
  const unacked = await seriesMaxima(page, ['mbox_redelivered_per_s', `queue:${w.parkedQueue}`], (m) => m.mbox_redelivered_per_s > 0);
  assert.equal(unacked[`queue:${w.parkedQueue}`], 1, 'the queue chart shows the parked one');
  painted = await paintedPixels(page, [['c-queues', AMBER], ['c-mbox', [0xd6, 0x27, 0x28]]]);
  assert.ok(painted.every((h) => h > 8), `Q.parked's amber line in queue depths, the redeliveries' red line in mailbox traffic: ${painted}`);
  assert.equal(await page.evaluate(() => window.warrenDashboard.last.s.parked_by_reason.unacked), 1);
  eve.close();

  await page.click('#alert-dismiss');
  assert.equal(await page.isVisible('#alert'), false);
  await pub.publishRaw(w.exchange, Buffer.from('{"title": "broken'), { contentType: 'application/json' });
  await pub.confirmed();
  await pub.close();
  await page.waitForSelector('#alert.show', { timeout: 15000 });
  text = await page.textContent('#alert-text');
  assert.ok(text.includes(w.deadQueue), `alert names ${w.deadQueue}: ${text}`);
  await sleep(1200); // one more poll so the screenshot shows the latest figures

  const shot = path.join(ARTIFACTS_DIR, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  // The README's picture changes only when asked: a test run leaves the
  // working tree clean.
  if (process.env.WARREN_UPDATE_DOCS === '1') {
    fs.mkdirSync(path.join(REPO_ROOT, 'docs'), { recursive: true });
    fs.copyFileSync(shot, path.join(REPO_ROOT, 'docs', 'dashboard.png'));
  }
  assert.deepEqual(pageErrors, []);
  await page.close();
});
