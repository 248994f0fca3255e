// The compose stacks of docker-compose.yml and docker-compose.cluster.yml,
// built and run for real, checked as a user would (scripts/test-containers
// runs this file once podman is set up and the images the stacks name exist;
// README.md, "Docker"). Host ports are free ones picked here (STACK_* of the
// compose files), so a broker or a warren already running on the usual ports
// is no obstacle. STACK_COMPOSE (default "podman-compose") names the compose
// command ("docker compose" works too), STACK_ENGINE (default "podman") the
// engine that inspects what it ran.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { connectClient, closeAllClients, freePort, httpGet, waitFor, sleep, INTEGRATION_DIR } from '../lib/index.js';

const ROOT = path.resolve(INTEGRATION_DIR, '..');
const COMPOSE = (process.env.STACK_COMPOSE || 'podman-compose').split(' ');
const ENGINE = process.env.STACK_ENGINE || 'podman';
const LOGS = path.join(INTEGRATION_DIR, 'artifacts', 'containers');
fs.mkdirSync(LOGS, { recursive: true });

// Runs a command in the repository root; returns { code, out } (stdout and
// stderr together also go to artifacts/containers/<log>).
function run(argv, { env = {}, timeout = 120000, log = 'commands.log', input } = {}) {
  const r = spawnSync(argv[0], argv.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout,
    input,
    maxBuffer: 64 << 20,
  });
  const out = `${r.stdout || ''}${r.stderr || ''}`;
  fs.appendFileSync(path.join(LOGS, log), `\n$ ${argv.join(' ')}\n${out}${r.error ? `\n${r.error}` : ''}\n`);
  return { code: r.status, out, stdout: r.stdout || '' };
}

function engine(...args) {
  return run([ENGINE, ...args]);
}

// One compose project: a name, its files, its host ports.
class Stack {
  constructor(name, files, ports) {
    this.project = `${name}-${process.pid}`;
    this.files = files;
    this.env = ports;
    this.up = false;
  }

  compose(args, opts = {}) {
    return run(this.argv(args), { ...opts, env: { ...this.env, ...(opts.env || {}) }, log: `${this.project}.log` });
  }

  argv(args) {
    return [...COMPOSE, '-p', this.project, ...this.files.flatMap((f) => ['-f', f]), ...args];
  }

  // The same without blocking this process: its WebSocket clients keep
  // answering (a close frame, say) while the command runs. Resolves the
  // exit status.
  composeAsync(args) {
    const argv = this.argv(args);
    return new Promise((resolve) => {
      const p = spawn(argv[0], argv.slice(1), { cwd: ROOT, env: { ...process.env, ...this.env }, stdio: 'ignore' });
      p.on('exit', (code) => resolve(code));
      p.on('error', () => resolve(-1));
    });
  }

  // A command in a service's running container; its stdout. The engine's
  // exec rather than "compose exec": podman-compose 1.0.3 writes its own
  // trace (podman command lines, the merged configuration of several -f
  // files, "exit code: N") on the same stdout as the command.
  exec(service, argv) {
    const r = engine('exec', this.container(service), ...argv);
    assert.equal(r.code, 0, `exec ${service} ${argv.join(' ')}: ${r.out}`);
    return r.stdout;
  }

  // The engine's names of this project's containers (running or not).
  containers() {
    const r = engine('ps', '-a', '--filter', `label=com.docker.compose.project=${this.project}`, '--format', '{{.Names}}');
    return r.stdout.split('\n').filter(Boolean);
  }

  container(service) {
    const r = engine('ps', '-a', '--filter', `label=com.docker.compose.project=${this.project}`,
      '--filter', `label=com.docker.compose.service=${service}`, '--format', '{{.Names}}');
    const name = r.stdout.split('\n').filter(Boolean)[0];
    assert.ok(name, `no container for service ${service}`);
    return name;
  }

  // What is left of the project in the engine: containers, volumes, networks.
  leftovers() {
    const vols = engine('volume', 'ls', '--format', '{{.Name}}').stdout.split('\n').filter((v) => v.startsWith(`${this.project}_`));
    const nets = engine('network', 'ls', '--format', '{{.Name}}').stdout.split('\n').filter((n) => n.startsWith(`${this.project}_`));
    return { containers: this.containers(), volumes: vols, networks: nets };
  }

  // down -v, then whatever the compose tool left (last resort, for a test
  // that failed half-way).
  teardown() {
    if (!this.up) return;
    this.compose(['down', '-v', '-t', '20'], { timeout: 180000 });
    for (const c of this.containers()) engine('rm', '-f', '-v', c);
    const left = this.leftovers();
    for (const v of left.volumes) engine('volume', 'rm', '-f', v);
    for (const n of left.networks) engine('network', 'rm', '-f', n);
    this.up = false;
  }
}

const stacks = [];
after(() => {
  closeAllClients();
  for (const s of stacks) s.teardown();
});

// `up -d SERVICES` of a new project of FILES, every host port of
// docker-compose.yml (and EXTRA_PORTS) a free one; { s, ports, t0 }.
async function upStack(name, files, extraPorts, services) {
  const ports = {};
  for (const n of ['STACK_WARREN_PORT', 'STACK_ADMIN_PORT', 'STACK_RABBITMQ_PORT', 'STACK_RABBITMQ_UI_PORT',
    'STACK_PROMETHEUS_PORT', 'STACK_GRAFANA_PORT', ...extraPorts]) ports[n] = String(await freePort());
  const s = new Stack(name, files, ports);
  stacks.push(s);
  const t0 = Date.now();
  s.up = true;
  const up = s.compose(['up', '-d', ...services], { timeout: 600000 });
  assert.equal(up.code, 0, `compose up failed:\n${up.out.slice(-4000)}`);
  return { s, ports, t0 };
}

async function ready(adminPort, what) {
  await waitFor(async () => {
    try {
      return (await httpGet(`http://127.0.0.1:${adminPort}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, { timeout: 120000, interval: 500, what: `${what} /readyz 200` });
}

// The OS user of a container's main process, read on the host.
function uidOf(container) {
  const pid = engine('inspect', '--format', '{{.State.Pid}}', container).stdout.trim();
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^Uid:\s+(\d+)/m.exec(status)[1]);
}

async function stats(adminPort) {
  return JSON.parse((await httpGet(`http://127.0.0.1:${adminPort}/api/stats`)).body);
}

test('the images build with the compose file: warren runs as non-root with runtime libraries only', { timeout: 900000 }, (t) => {
  const s = new Stack('warren-build', ['docker-compose.yml'], {});
  const t0 = Date.now();
  const r = s.compose(['build', 'warren', 'demo-publisher'], { timeout: 900000 });
  assert.equal(r.code, 0, `compose build failed:\n${r.out.slice(-4000)}`);
  t.diagnostic(`compose build (warren + demo-publisher): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const img = 'warren:dev';
  const info = JSON.parse(engine('image', 'inspect', img).stdout)[0];
  assert.equal(info.Config.User, 'warren', 'the image runs as user warren');
  // Docker keeps it in Config, podman also at the top (only in the docker
  // image format: BUILDAH_FORMAT=docker).
  const hc = info.Config.Healthcheck || info.Healthcheck || info.HealthCheck;
  assert.ok(hc && hc.Test && hc.Test.length, `HEALTHCHECK kept: ${JSON.stringify(hc)}`);
  const size = engine('image', 'inspect', '--format', '{{.Size}}', img).stdout.trim();
  t.diagnostic(`warren:dev image: ${(Number(size) / 1e6).toFixed(1)} MB`);
  // No compiler, no headers, no -dev package; every shared library found.
  const probe = run([ENGINE, 'run', '--rm', '--entrypoint', 'sh', img, '-c',
    'id -u; for c in cc gcc g++ cmake make ld; do command -v $c; done; ' +
    'dpkg-query -W -f "\\${Package}\\n" | grep -E -- "-dev$|^(gcc|cpp|g\\+\\+|cmake|make|binutils)(-[0-9]+)?$"; ' +
    'ls /usr/include 2>/dev/null | head -3; ldd /usr/local/bin/warren | grep "not found"; true']);
  assert.equal(probe.code, 0, probe.out);
  const lines = probe.stdout.split('\n').filter(Boolean);
  assert.equal(lines[0], '10001', `uid in the image: ${lines[0]}`);
  assert.deepEqual(lines.slice(1), [], `build tools or headers in the runtime image:\n${lines.slice(1).join('\n')}`);
});

test('the dev stack: demo page, warren publish to a WebSocket client, Prometheus, clean stop and down', { timeout: 600000 }, async (t) => {
  // Grafana has no Debian package, hence no stand-in image: the rest of the
  // stack runs without it.
  const { s, ports, t0 } = await upStack('warren-dev', ['docker-compose.yml'], [], ['rabbitmq', 'warren', 'demo-publisher', 'prometheus']);
  await ready(ports.STACK_ADMIN_PORT, 'warren');
  t.diagnostic(`up -d until /readyz 200: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t.diagnostic(`broker: RabbitMQ ${s.exec('rabbitmq', ['rabbitmqctl', '-q', 'version']).trim()}`);

  // The demo page and the client library, on the published port.
  const base = `http://127.0.0.1:${ports.STACK_WARREN_PORT}`;
  const page = await httpGet(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /text\/html/);
  assert.match(page.body, /warren\.js/, 'the demo page loads /warren.js');
  const js = await httpGet(`${base}/warren.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type'), /javascript/);
  assert.match(js.body, /WebSocket/);

  // A token and a notification, both made inside the stack.
  const user = 'stack-user';
  const token = s.exec('warren', ['warren', 'token', '--user', user]).trim();
  const c = await connectClient(`ws://127.0.0.1:${ports.STACK_WARREN_PORT}/ws`, token, { via: 'protocol' });
  const id = `stack-${Date.now()}`;
  s.exec('warren', ['warren', 'publish', '--user', user, '--id', id, '--title', 'from inside the stack', '--content', 'compose exec']);
  await c.waitForIds([id], { timeout: 15000 });
  assert.equal(c.notifications.find((n) => n.id === id).title, 'from inside the stack');
  // The demo publisher notifies "demo" every 5 s.
  const demo = await connectClient(`ws://127.0.0.1:${ports.STACK_WARREN_PORT}/ws`,
    s.exec('warren', ['warren', 'token', '--user', 'demo']).trim(), { via: 'protocol' });
  await waitFor(() => demo.notifications.some((n) => /Hello from the demo publisher/.test(n.title)), { timeout: 30000, what: 'a demo publisher notification' });

  // Prometheus scrapes warren and RabbitMQ (its prometheus plugin), and has
  // warren's delivery counter.
  const prom = `http://127.0.0.1:${ports.STACK_PROMETHEUS_PORT}`;
  let targets = [];
  await waitFor(async () => {
    try {
      targets = JSON.parse((await httpGet(`${prom}/api/v1/targets`)).body).data.activeTargets;
    } catch {
      return false;
    }
    return ['warren', 'rabbitmq'].every((j) => targets.some((x) => x.labels.job === j && x.health === 'up'));
  }, { timeout: 90000, interval: 1000, what: 'Prometheus targets warren and rabbitmq up' });
  let delivered = 0;
  await waitFor(async () => {
    const q = JSON.parse((await httpGet(`${prom}/api/v1/query?query=sum(warren_notifications_delivered_total)`)).body);
    delivered = q.data.result.length ? Number(q.data.result[0].value[1]) : 0;
    return delivered >= 2;
  }, { timeout: 60000, interval: 1000, what: 'warren_notifications_delivered_total >= 2 in Prometheus' });
  t.diagnostic(`Prometheus: targets ${targets.map((x) => `${x.labels.job}=${x.health}`).join(', ')}; sum(warren_notifications_delivered_total) = ${delivered}`);

  // Non-root at run time, and the image's HEALTHCHECK passes when run.
  assert.equal(uidOf(s.container('warren')), 10001, 'warren runs as uid 10001');
  if (ENGINE === 'podman') {
    const hc = engine('healthcheck', 'run', s.container('warren'));
    assert.equal(hc.code, 0, `podman healthcheck run: ${hc.out}`);
  }

  // SIGTERM: the demo publisher and warren stop by themselves, status 0.
  // Its clients are told 1001 (going away).
  const closes = [c, demo].map((x) => new Promise((resolve) => x.ws.once('close', (code) => resolve(code))));
  for (const svc of ['demo-publisher', 'warren']) {
    const name = s.container(svc);
    const t1 = Date.now();
    assert.equal(await s.composeAsync(['stop', '-t', '20', svc]), 0, `compose stop ${svc}`);
    const secs = (Date.now() - t1) / 1000;
    const code = engine('inspect', '--format', '{{.State.ExitCode}}', name).stdout.trim();
    t.diagnostic(`${svc}: stopped in ${secs.toFixed(1)} s, exit status ${code}`);
    assert.equal(code, '0', `${svc} exit status`);
    assert.ok(secs < 15, `${svc} took ${secs} s to stop (killed after the grace period?)`);
  }
  assert.match(engine('logs', s.container('warren')).out, /stopped cleanly/);
  assert.deepEqual(await Promise.all(closes), [1001, 1001], 'close codes the clients saw');

  // down -v leaves nothing.
  const down = s.compose(['down', '-v', '-t', '20'], { timeout: 180000 });
  assert.equal(down.code, 0, down.out);
  const left = s.leftovers();
  assert.deepEqual(left.containers, [], 'containers left');
  assert.deepEqual(left.volumes, [], 'volumes left');
  if (left.networks.length && COMPOSE[0] === 'podman-compose') {
    // podman-compose 1.0.3 (Debian 12) never removes the project's network;
    // docker compose does. Named here, then removed.
    t.diagnostic(`podman-compose left its network ${left.networks.join(', ')} (it never removes one); removed`);
    for (const n of left.networks) assert.equal(engine('network', 'rm', n).code, 0);
  } else {
    assert.deepEqual(left.networks, [], 'networks left');
  }
  assert.deepEqual(s.leftovers(), { containers: [], volumes: [], networks: [] });
  s.up = false;
});

test('the two-node stack behind nginx: a notification reaches a user on each node', { timeout: 600000 }, async (t) => {
  const { s, ports, t0 } = await upStack('warren-cluster', ['docker-compose.yml', 'docker-compose.cluster.yml'],
    ['STACK_ADMIN2_PORT', 'STACK_NGINX_PORT'], ['rabbitmq', 'warren', 'warren-2', 'nginx']);
  await ready(ports.STACK_ADMIN_PORT, 'warren-1');
  await ready(ports.STACK_ADMIN2_PORT, 'warren-2');
  t.diagnostic(`up -d until both nodes ready: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const admins = { 'warren-1': ports.STACK_ADMIN_PORT, 'warren-2': ports.STACK_ADMIN2_PORT };
  for (const [svc, node] of [['warren', 'warren-1'], ['warren-2', 'warren-2']]) {
    assert.match(engine('logs', s.container(svc)).out, new RegExp(`cluster mode: node ${node} consumes`), `${svc} runs as cluster node ${node}`);
  }
  const nginx = `http://127.0.0.1:${ports.STACK_NGINX_PORT}`;
  assert.equal((await httpGet(`${nginx}/`)).status, 200, 'the demo page through nginx');
  assert.equal((await httpGet(`${nginx}/warren.js`)).status, 200, '/warren.js through nginx');

  // Clients through nginx (least_conn) until one user is on each node.
  const onNode = {};
  for (let i = 0; i < 8 && Object.keys(onNode).length < 2; i++) {
    const user = `cl-user-${i}`;
    const before = {};
    for (const [node, port] of Object.entries(admins)) before[node] = (await stats(port)).connections;
    const token = s.exec('warren', ['warren', 'token', '--user', user]).trim();
    const c = await connectClient(`ws://127.0.0.1:${ports.STACK_NGINX_PORT}/ws`, token, { via: 'protocol' });
    let node = null;
    await waitFor(async () => {
      for (const [n, port] of Object.entries(admins)) if ((await stats(port)).connections > before[n]) node = n;
      return node !== null;
    }, { timeout: 10000, what: `${user}'s connection on a node` });
    if (!onNode[node]) onNode[node] = { user, c };
  }
  assert.deepEqual(Object.keys(onNode).sort(), ['warren-1', 'warren-2'], 'nginx spread the clients over both nodes');
  const users = Object.values(onNode).map((x) => x.user);
  // One notification for both, published inside the stack on node 1.
  const id = `per-node-${Date.now()}`;
  s.exec('warren', ['warren', 'publish', '--users', users.join(','), '--id', id, '--title', 'one per node']);
  for (const [node, { user, c }] of Object.entries(onNode)) {
    await c.waitForIds([id], { timeout: 15000 });
    t.diagnostic(`${user} on ${node} received ${id}`);
  }
  closeAllClients();
  await sleep(200);
  const down = s.compose(['down', '-v', '-t', '20'], { timeout: 180000 });
  assert.equal(down.code, 0, down.out);
  const left = s.leftovers();
  assert.deepEqual(left.containers, [], 'containers left');
  assert.deepEqual(left.volumes, [], 'volumes left');
  for (const n of left.networks) engine('network', 'rm', n);
  s.up = false;
});
