// deploy/nginx/warren.conf, run by Debian's nginx with a self-signed
// certificate: a browser-like client connects over wss:// through it and
// receives a notification; a token offered as the subprotocol bearer.<token>
// passes through; the admin endpoints are not reachable through it; plain
// HTTP redirects to HTTPS; tokens stay out of the access log; and, with
// warren down (502), a subprotocol token stays out of the error log too while
// a ?token= one is written there (nginx logs the request line of upstream
// errors), which is why the README recommends the subprotocol.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { startWarren, cleanupAll, Publisher, freePort, waitFor, routingFieldsIn, randomHex, REPO_ROOT } from './lib/index.js';

const NGINX = fs.existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
const CONF = path.join(REPO_ROOT, 'deploy', 'nginx', 'warren.conf');

let w;
let dir;
let nginx;
let nginxExit;
let tlsPort;
let httpPort;
let ca;

// Replaces what matches re in text, and fails unless it matched `count`
// times: if deploy/nginx/warren.conf changes shape, this test must notice
// rather than silently test something else.
function sub(text, re, replacement, count) {
  const n = (text.match(new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`)) || []).length;
  assert.equal(n, count, `deploy/nginx/warren.conf: expected ${count} match(es) of ${re}, found ${n}`);
  return text.replace(re, replacement);
}

// The real file with only addresses, certificate and log paths changed.
function deriveSiteConf(src) {
  let s = src;
  s = sub(s, /^(\s*)listen \[::\]:\d+[^;]*;\n/gm, '', 2);
  s = sub(s, /^(\s*)listen 443 ssl;/m, `$1listen 127.0.0.1:${tlsPort} ssl;`, 1);
  s = sub(s, /^(\s*)listen 80;/m, `$1listen 127.0.0.1:${httpPort};`, 1);
  s = sub(s, /^(\s*)ssl_certificate\s+\S+;/m, `$1ssl_certificate ${dir}/cert.pem;`, 1);
  s = sub(s, /^(\s*)ssl_certificate_key\s+\S+;/m, `$1ssl_certificate_key ${dir}/key.pem;`, 1);
  s = sub(s, /^(\s*)server 127\.0\.0\.1:8080;/m, `$1server 127.0.0.1:${w.port};`, 1);
  s = sub(s, /^(\s*)access_log \/var\/log\/nginx\/warren\.access\.log/m, `$1access_log ${dir}/warren.access.log`, 1);
  return s;
}

function mainConf() {
  const lines = [
    'daemon off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log info;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    `  client_body_temp_path ${dir}/tmp/body;`,
    `  proxy_temp_path ${dir}/tmp/proxy;`,
    `  fastcgi_temp_path ${dir}/tmp/fastcgi;`,
    `  uwsgi_temp_path ${dir}/tmp/uwsgi;`,
    `  scgi_temp_path ${dir}/tmp/scgi;`,
    `  include ${dir}/warren.conf;`,
    '}',
  ];
  // As root, nginx's workers would switch to "nobody", who cannot read the
  // key in our private temp folder.
  if (process.getuid && process.getuid() === 0) lines.unshift('user root;');
  return lines.join('\n') + '\n';
}

function tlsGet(pathname) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', servername: 'localhost', port: tlsPort, path: pathname, ca, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

// via 'query': ?token=<token>; via 'protocol': offered as the subprotocol
// bearer.<token> next to warren.json, as web/warren.js does.
function wsTarget(token, via, query = '') {
  if (via === 'query') return { url: `wss://localhost:${tlsPort}/ws?${query}token=${encodeURIComponent(token)}`, protocols: ['warren.json'] };
  return { url: `wss://localhost:${tlsPort}/ws${query ? `?${query.replace(/&$/, '')}` : ''}`, protocols: ['warren.json', `bearer.${token}`] };
}

function openWss(token, via = 'query') {
  const { url, protocols } = wsTarget(token, via);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, {
      ca,
      handshakeTimeout: 5000,
    });
    const messages = [];
    ws.on('message', (data) => messages.push(JSON.parse(data.toString('utf8'))));
    ws.once('open', () => resolve({ ws, messages }));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`handshake through nginx: HTTP ${res.statusCode}`)));
  });
}

before(async () => {
  w = await startWarren({ name: 'nginx' });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-nginx-'));
  fs.mkdirSync(path.join(dir, 'tmp'));
  tlsPort = await freePort();
  httpPort = await freePort();
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
    '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'pipe' });
  ca = fs.readFileSync(path.join(dir, 'cert.pem'));
  fs.writeFileSync(path.join(dir, 'warren.conf'), deriveSiteConf(fs.readFileSync(CONF, 'utf8')));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), mainConf());
  const args = ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')];
  // nginx -t names the line of a bad directive.
  execFileSync(NGINX, [...args, '-t', '-q'], { stdio: 'pipe' });
  nginx = spawn(NGINX, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  nginx.stderr.on('data', (d) => (stderr += d));
  nginxExit = new Promise((resolve) => nginx.on('exit', (code, signal) => resolve({ code, signal })));
  await waitFor(
    async () => {
      if (nginx.exitCode !== null) {
        throw Object.assign(new Error(`nginx exited ${nginx.exitCode}: ${stderr}`), { fatal: true });
      }
      return (await tlsGet('/')).status > 0;
    },
    { timeout: 10000, interval: 100, what: 'nginx answering over TLS' },
  );
});

after(async () => {
  if (nginx && nginx.exitCode === null && nginx.signalCode === null) {
    nginx.kill('SIGTERM');
    const timer = setTimeout(() => nginx.kill('SIGKILL'), 5000);
    await nginxExit;
    clearTimeout(timer);
  }
  await cleanupAll();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('a wss:// client through nginx receives and acks a notification', { timeout: 30000 }, async () => {
  const user = 'via-nginx';
  const token = await w.token(user);
  const { ws, messages } = await openWss(token);
  assert.equal(ws.protocol, 'warren.json');
  const welcome = await waitFor(() => messages.find((m) => m.type === 'welcome'), { what: 'welcome through nginx' });
  assert.equal(welcome.user_id, user);

  const id = `nginx-${randomHex()}`;
  const pub = await Publisher.open();
  await pub.publishAll(w.exchange, [{ id, user_id: user, title: 'Through nginx', content: 'over TLS', data: { n: 1 } }]);
  await pub.close();
  const m = await waitFor(() => messages.find((x) => x.id === id), { what: `notification ${id} through nginx` });
  assert.equal(m.title, 'Through nginx');
  assert.equal(m.content, 'over TLS');
  assert.deepEqual(m.data, { n: 1 });
  assert.deepEqual(routingFieldsIn(m), []);
  ws.send(JSON.stringify({ type: 'ack', id }));
  ws.send(JSON.stringify({ type: 'ping' }));
  await waitFor(() => messages.find((x) => x.type === 'pong'), { what: 'pong through nginx' });
  // The ack went through nginx too: warren settled the message.
  await waitFor(async () => (await w.stats()).client_acks >= 1, { what: 'client ack counted by warren' });
  ws.close(1000);

  // The query string (the token) is not in nginx's access log.
  await waitFor(() => fs.existsSync(path.join(dir, 'warren.access.log')) && fs.readFileSync(path.join(dir, 'warren.access.log'), 'utf8').includes('/ws'), {
    what: 'the /ws request in the access log',
  });
  const log = fs.readFileSync(path.join(dir, 'warren.access.log'), 'utf8');
  assert.ok(!log.includes(token) && !log.includes('token='), `token in nginx access log:\n${log}`);
});

test('a bad token is refused with 401 through nginx', { timeout: 15000 }, async () => {
  await assert.rejects(openWss('not-a-jwt'), /HTTP 401/);
  await assert.rejects(openWss('not-a-jwt', 'protocol'), /HTTP 401/);
});

test('a token offered as the subprotocol bearer.<token> passes through nginx; only warren.json is answered', { timeout: 15000 }, async () => {
  const user = 'via-nginx-protocol';
  const { ws, messages } = await openWss(await w.token(user), 'protocol');
  assert.equal(ws.protocol, 'warren.json');
  const welcome = await waitFor(() => messages.find((m) => m.type === 'welcome'), { what: 'welcome through nginx' });
  assert.equal(welcome.user_id, user);
  ws.close(1000);
});

test('admin endpoints and other paths are not reachable through nginx', { timeout: 15000 }, async () => {
  for (const p of ['/metrics', '/healthz', '/readyz', '/api/stats', '/dashboard', '/']) {
    const r = await tlsGet(p);
    assert.equal(r.status, 404, `${p} through nginx answered ${r.status}`);
    assert.ok(!r.body.includes('warren_'), `${p} leaked metrics`);
  }
  // They do answer on the admin port itself, so the 404s above are nginx's doing.
  assert.equal(await w.readyz(), 200);
  const directives = fs.readFileSync(CONF, 'utf8').replace(/#.*$/gm, '');
  assert.ok(!directives.includes(':9090'), 'deploy/nginx/warren.conf proxies to the admin port');
  assert.deepEqual(directives.match(/proxy_pass\s+[^;]+/g), ['proxy_pass http://warren'], 'only /ws is proxied');
});

test('plain HTTP redirects to HTTPS', { timeout: 15000 }, async () => {
  const r = await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: httpPort, path: '/ws', headers: { Host: 'notify.example.com' } }, (res) => {
      res.resume();
      resolve({ status: res.statusCode, location: res.headers.location });
    }).on('error', reject);
  });
  assert.equal(r.status, 301);
  assert.equal(r.location, 'https://notify.example.com/ws');
});

// Resolves the HTTP status nginx answers a handshake with (101 when upgraded).
function handshakeStatus(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { ca, handshakeTimeout: 5000 });
    ws.once('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.once('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      resolve(res.statusCode);
    });
    ws.once('error', reject);
  });
}

// Both run with warren stopped: nginx cannot reach its upstream, answers 502
// and writes an error line naming the request. They come last in this file.
const logs = () => ({
  access: fs.readFileSync(path.join(dir, 'warren.access.log'), 'utf8'),
  error: fs.readFileSync(path.join(dir, 'error.log'), 'utf8'),
});

test('warren down (502): a token in the subprotocol is in neither nginx log', { timeout: 30000 }, async () => {
  await w.stop();
  const token = await w.token('down-protocol');
  const probe = `probe=${randomHex()}`;
  const { url, protocols } = wsTarget(token, 'protocol', `${probe}&`);
  assert.equal(await handshakeStatus(url, protocols), 502);
  // The error line for this very request is there (so the check below is
  // not vacuous): nginx logs the request line of an upstream failure.
  await waitFor(() => logs().error.includes(probe), { what: `nginx error.log line for ${probe}` });
  await waitFor(() => logs().access.includes(' 502 '), { what: 'the 502 in the access log' });
  const { access, error } = logs();
  const sig = token.split('.')[2];
  for (const [name, text] of [['access', access], ['error', error]]) {
    assert.ok(!text.includes(token) && !text.includes(sig), `token in nginx ${name} log:\n${text}`);
  }
});

test('warren down (502): a ?token= token IS written to nginx\'s error log (why the README advises the subprotocol)', { timeout: 30000 }, async () => {
  if (w.running) await w.stop();
  const token = await w.token('down-query');
  const { url, protocols } = wsTarget(token, 'query');
  assert.equal(await handshakeStatus(url, protocols), 502);
  await waitFor(() => logs().error.includes(token), { what: 'the ?token= token in nginx error.log' });
  // The access log format drops the query string, so only the error log has it.
  assert.ok(!logs().access.includes(token), 'token in nginx access log');
  const line = logs().error.split('\n').find((l) => l.includes(token));
  assert.match(line, /request: "GET \/ws\?token=/);
});
