// AMQP over TLS (amqps://) against a private RabbitMQ node with a TLS
// listener that requires a client certificate. Certificates are made here
// with the openssl command: a CA, a broker certificate, a client certificate
// and an unrelated CA. Checks: a notification is delivered over amqps:// with
// the CA and client certificate; a wrong CA, a host name the broker
// certificate does not list, and a missing client certificate each make
// warren log why and never consume; tls_verify = false connects (with a
// warning) where only the host name was wrong.
//
// The TLS broker uses ports WARREN_TEST_TLS_PORT (default 5733, AMQP) and
// +1 (TLS); it is started and stopped by this file.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import amqplib from 'amqplib';
import { Warren, cleanupAll, connectClient, waitFor, BROKER_SH, randomHex } from './lib/index.js';

const PORT = Number(process.env.WARREN_TEST_TLS_PORT || 5733);
const TLS_PORT = PORT + 1;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-tls-'));
const certs = path.join(dir, 'certs');
const brokerDir = path.join(dir, 'broker');
let brokerStarted = false;
let pubConn;

function openssl(...args) {
  execFileSync('openssl', args, { cwd: certs, stdio: ['ignore', 'ignore', 'pipe'] });
}

// A CA, and a certificate signed by it for subject CN with the given SAN.
function makeCa(name) {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}
function makeCert(name, ca, cn, san, usage) {
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
  const ext = `${name}.ext`;
  fs.writeFileSync(path.join(certs, ext), `${san ? `subjectAltName=${san}\n` : ''}extendedKeyUsage=${usage}\nbasicConstraints=CA:FALSE\n`);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-days', '2', '-out', `${name}.pem`, '-extfile', ext);
}
const cert = (n) => path.join(certs, n);

function broker(cmd, extraConf) {
  return execFileSync(BROKER_SH, [cmd, brokerDir, String(PORT)], {
    env: { ...process.env, BROKER_EXTRA_CONF: extraConf || '' },
    encoding: 'utf8',
    timeout: 90000,
  });
}

before(async () => {
  fs.mkdirSync(certs, { recursive: true });
  makeCa('ca');
  makeCa('other-ca');
  // The broker's certificate names localhost only: amqps://127.0.0.1 must
  // then fail host name verification although the chain is fine.
  makeCert('broker', 'ca', 'localhost', 'DNS:localhost', 'serverAuth');
  makeCert('client', 'ca', 'warren', null, 'clientAuth');
  makeCert('rogue-client', 'other-ca', 'warren', null, 'clientAuth');
  // The node runs as this user and reads the files itself.
  for (const f of fs.readdirSync(certs)) fs.chmodSync(path.join(certs, f), 0o644);
  broker(
    'start',
    [
      `listeners.ssl.default = 127.0.0.1:${TLS_PORT}`,
      `ssl_options.cacertfile = ${cert('ca.pem')}`,
      `ssl_options.certfile = ${cert('broker.pem')}`,
      `ssl_options.keyfile = ${cert('broker.key')}`,
      'ssl_options.verify = verify_peer',
      'ssl_options.fail_if_no_peer_cert = true',
    ].join('\n'),
  );
  brokerStarted = true;
  pubConn = await amqplib.connect(`amqp://guest:guest@127.0.0.1:${PORT}/`);
});

after(async () => {
  await cleanupAll();
  if (pubConn) await pubConn.close().catch(() => {});
  if (brokerStarted) broker('stop');
  fs.rmSync(dir, { recursive: true, force: true });
});

// A warren whose broker is the TLS node; not waited for when it is expected
// never to become ready.
async function tlsWarren(name, amqp, { ready = true } = {}) {
  const w = new Warren({
    name,
    config: { amqp: { url: `amqps://guest:guest@localhost:${TLS_PORT}/`, tls_ca_file: cert('ca.pem'), tls_cert_file: cert('client.pem'), tls_key_file: cert('client.key'), ...amqp } },
  });
  await w.init();
  if (ready) return w.start();
  w.start({ readyTimeout: 60000 }).catch(() => {});
  return w;
}

// Consumers of queue on the TLS node (0 when warren never got to declare it).
function consumers(queue) {
  const out = execFileSync(BROKER_SH, ['ctl', brokerDir, String(PORT), '-q', 'list_queues', 'name', 'consumers'], { encoding: 'utf8' });
  const line = out.split('\n').find((l) => l.split(/\s+/)[0] === queue);
  return line ? Number(line.split(/\s+/)[1]) : 0;
}

// Asserts w logs pattern, stays not ready, keeps retrying and never consumes.
async function expectNoConsume(w, pattern) {
  try {
    await waitFor(() => pattern.test(w.logText()), { timeout: 15000, what: `log line ${pattern}` });
    assert.equal(await w.readyz(), 503);
    assert.equal(consumers(w.queue), 0, `queue ${w.queue} has a consumer`);
    assert.ok(w.running, 'warren should keep retrying, not exit');
  } finally {
    await w.stop();
  }
}

async function publish(w, bodies) {
  const ch = await pubConn.createConfirmChannel();
  for (const b of bodies) ch.publish(w.exchange, 'n', Buffer.from(JSON.stringify(b)), { contentType: 'application/json', persistent: true });
  await ch.waitForConfirms();
  await ch.close();
}

describe('amqps://', () => {
  test('CA + client certificate: connected, consuming, notifications delivered', { timeout: 60000 }, async (t) => {
    const w = await tlsWarren('tls-ok');
    const c = await connectClient(w.wsUrl(), await w.token('tls-user'));
    const ids = Array.from({ length: 200 }, (_, i) => `tls-${randomHex(3)}-${i}`);
    const t0 = Date.now();
    await publish(w, ids.map((id) => ({ id, user_id: 'tls-user', title: 'over TLS' })));
    await c.waitForIds(ids, { timeout: 20000 });
    t.diagnostic(`200 notifications over amqps:// in ${Date.now() - t0} ms`);
    assert.equal(consumers(w.queue), 1);
    assert.equal(c.duplicates, 0);
    // The broker sees warren's connection as TLS with our client certificate.
    const conns = execFileSync(BROKER_SH, ['ctl', brokerDir, String(PORT), '-q', 'list_connections', 'name', 'ssl', 'peer_cert_subject', 'client_properties'], { encoding: 'utf8' });
    assert.match(conns, /true\s+CN=warren/, conns);
    // Nothing left: every notification was acked on the TLS connection.
    await waitFor(async () => {
      const ch = await pubConn.createChannel();
      const q = await ch.checkQueue(w.queue);
      await ch.close();
      return q.messageCount === 0;
    }, { timeout: 15000, what: 'queue empty' });
    c.close();
    await w.stop();
  });

  test('a CA that did not sign the broker certificate: verification failure logged, never consumes', { timeout: 60000 }, async () => {
    const w = await tlsWarren('tls-badca', { tls_ca_file: cert('other-ca.pem') }, { ready: false });
    await expectNoConsume(w, /TLS certificate verification failed: (unable to get local issuer certificate|self-signed certificate in certificate chain)/);
  });

  test('system CA store (no tls_ca_file): the private CA is not trusted', { timeout: 60000 }, async () => {
    const w = await tlsWarren('tls-sysca', { tls_ca_file: '' }, { ready: false });
    await expectNoConsume(w, /TLS certificate verification failed/);
  });

  test('host name not in the certificate (127.0.0.1): verification failure logged, never consumes', { timeout: 60000 }, async () => {
    const w = await tlsWarren('tls-host', { url: `amqps://guest:guest@127.0.0.1:${TLS_PORT}/` }, { ready: false });
    await expectNoConsume(w, /TLS certificate verification failed.*(hostname mismatch|does not name 127\.0\.0\.1)/);
  });

  test('tls_verify = false accepts that certificate, and warns', { timeout: 60000 }, async () => {
    const w = await tlsWarren('tls-noverify', { url: `amqps://guest:guest@127.0.0.1:${TLS_PORT}/`, tls_verify: 'false' });
    assert.equal(await w.readyz(), 200);
    assert.match(w.logText(), /WARN.*amqp\.tls_verify = false/);
    await w.stop();
  });

  test('no client certificate: the broker refuses, warren logs it and never consumes', { timeout: 60000 }, async () => {
    const w = await tlsWarren('tls-nocert', { tls_cert_file: '', tls_key_file: '' }, { ready: false });
    await expectNoConsume(w, /the broker closed the TLS connection \(.*certificate required/);
  });

  test('a client certificate from another CA: the broker refuses it', { timeout: 60000 }, async () => {
    const w = await tlsWarren('tls-rogue', { tls_cert_file: cert('rogue-client.pem'), tls_key_file: cert('rogue-client.key') }, { ready: false });
    await expectNoConsume(w, /the broker closed the TLS connection \(.*unknown ca/);
  });
});
