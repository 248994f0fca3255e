// The admin dashboard (GET /dashboard on admin.listen) in a real headless
// Chromium: while traffic flows, its charts plot non-zero connections, queue
// depths, delivery rate and latency; a poison message reaching Q.dead raises
// the alert banner. Saves a screenshot to artifacts/dashboard.png, and with
// WARREN_UPDATE_DOCS=1 to docs/dashboard.png (shown by the README).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  startWarren, cleanupAll, connectClient, Publisher, httpGet, sleep, ARTIFACTS_DIR, REPO_ROOT, browserSkip, launchBrowser,
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

test('the dashboard plots live traffic and raises an alert when Q.dead grows', { skip, timeout: 90000 }, async () => {
  const w = await startWarren({
    name: 'dashboard',
    // A long first ladder step keeps an offline user's notifications visible
    // in a retry queue; nothing parks during the test.
    config: { amqp: { retry_delays_ms: '4000,8000' }, admin: { queue_poll_ms: 200 } },
  });
  browser = await launchBrowser();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${w.adminUrl}/dashboard`);
  await page.waitForFunction(() => window.warrenDashboard && window.warrenDashboard.polls >= 2);

  const users = ['ann', 'ben', 'cid'];
  const clients = [];
  for (const u of users) clients.push(await connectClient(w.wsUrl(), await w.token(u), { name: u }));
  const pub = await Publisher.open();
  // About 8 s of paced traffic: online users get theirs at once, the offline
  // one's wait on the ladder.
  let n = 0;
  const sent = Object.fromEntries(users.map((u) => [u, []]));
  for (let round = 0; round < 16; round++) {
    const batch = [];
    for (const u of users) {
      for (let i = 0; i < 4; i++) {
        const id = `n${n++}`;
        sent[u].push(id);
        batch.push({ id, user_id: u, title: `round ${round}`, created_at: Date.now() });
      }
    }
    batch.push({ id: `off${round}`, user_id: 'dora', title: 'offline' });
    await pub.publishAll(w.exchange, batch);
    await sleep(500);
  }
  for (let i = 0; i < users.length; i++) await clients[i].waitForIds(sent[users[i]]);

  const series = await page.waitForFunction(
    () => {
      const s = window.warrenDashboard.series;
      const max = (name) => Math.max(0, ...(s[name] || []).map((p) => p.v));
      const queues = Object.keys(s).filter((k) => k.startsWith('queue:'));
      const out = {
        connections: max('connections'),
        rate: max('delivered_per_s'),
        p50: max('latency_p50_ms'),
        p99: max('latency_p99_ms'),
        queues: queues.length,
        queueMax: Math.max(0, ...queues.map(max)),
      };
      return out.connections >= 3 && out.rate > 0 && out.p99 > 0 && out.queues >= 5 && out.queueMax > 0 ? out : false;
    },
    null,
    { timeout: 20000, polling: 200 },
  );
  const figures = await series.jsonValue();
  console.log(`dashboard series maxima: ${JSON.stringify(figures)}`);

  // The plotted lines are really on the canvases: count pixels of a series
  // colour in each chart (the first retry queue's purple for queue depths,
  // the first series' blue elsewhere). Blank or grid-only canvases have none.
  const painted = await page.evaluate(() =>
    [['c-queues', [0x8c, 0x6b, 0xd6]], ['c-conns', [0x2f, 0x6f, 0xdf]], ['c-rate', [0x2f, 0x6f, 0xdf]], ['c-lat', [0x2f, 0x6f, 0xdf]]].map(([id, rgb]) => {
      const c = document.getElementById(id);
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let hits = 0;
      for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - rgb[0]) < 24 && Math.abs(d[i + 1] - rgb[1]) < 24 && Math.abs(d[i + 2] - rgb[2]) < 24 && d[i + 3] > 200) hits++;
      return hits;
    }),
  );
  assert.ok(painted.every((h) => h > 8), `line pixels per chart (queues, connections, rate, latency): ${painted}`);

  // No alert yet: nothing has been parked or dead-lettered.
  assert.equal(await page.evaluate(() => window.warrenDashboard.alerts.length), 0);
  assert.equal(await page.isVisible('#alert'), false);
  await pub.publishRaw(w.exchange, Buffer.from('{"title": "broken'), { contentType: 'application/json' });
  await pub.confirmed();
  await pub.close();
  await page.waitForSelector('#alert.show', { timeout: 15000 });
  const text = await page.textContent('#alert-text');
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
