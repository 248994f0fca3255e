// Open file descriptors of a RabbitMQ node per mailbox-shaped classic queue
// (the arguments of amqp/topology.c, wr_amqp_mailbox_args): declared, holding
// one persistent message, used and empty, deleted. Run against any broker
// version the same way (BENCHMARKS.md, "Mailboxes"):
//
//   node bench/mailbox-handles.mjs AMQP_URL BEAM_PID [N=2000] [CTL…]
//
// BEAM_PID: scripts/broker.sh pid DIR PORT (the node's VM as this host sees
// it, also for a node in a container). CTL: a rabbitmqctl command line (e.g.
// scripts/broker.sh ctl DIR PORT): with it, the handles the node's
// file_handle_cache counts as used (3.x reserves them per queue, open or
// not) are reported next to the open descriptors. Prints one JSON line.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../integration/package.json', import.meta.url));
const amqplib = require('amqplib');
const [url, pid, nArg, ...ctl] = process.argv.slice(2);
const N = Number(nArg || 2000);
const fhc = () =>
  ctl.length
    ? Number(execFileSync(ctl[0], [...ctl.slice(1), '-q', 'eval', 'proplists:get_value(total_used, file_handle_cache:info([total_used])).'], { encoding: 'utf8' }).trim())
    : null;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// [open descriptors, file_handle_cache's used count] once the node settled.
const settle = async () => {
  await sleep(3000);
  return [fs.readdirSync(`/proc/${pid}/fd`).length, fhc()];
};

const conn = await amqplib.connect(url);
const ch = await conn.createConfirmChannel();
const prefix = `fdprobe-${process.pid}`;
const args = {
  'x-message-ttl': 604800000,
  'x-max-length': 1000,
  'x-overflow': 'drop-head',
  'x-dead-letter-exchange': '',
  'x-dead-letter-routing-key': `${prefix}.parked`,
  'x-queue-version': 2,
};
const out = { n: N, before: await settle() };
for (let i = 0; i < N; i++) await ch.assertQueue(`${prefix}.${i}`, { durable: true, arguments: args });
out.declared = await settle();
const body = Buffer.alloc(200, 'x');
for (let i = 0; i < N; i++) ch.sendToQueue(`${prefix}.${i}`, body, { persistent: true });
await ch.waitForConfirms();
out.one_message = await settle();
for (let i = 0; i < N; i++) {
  const m = await ch.get(`${prefix}.${i}`);
  if (m) ch.ack(m);
}
await ch.waitForConfirms();
out.used_empty = await settle();
for (let i = 0; i < N; i++) await ch.deleteQueue(`${prefix}.${i}`);
out.deleted = await settle();
await conn.close();
// Per queue: [open descriptors, file_handle_cache used].
const per = (k) => out[k].map((v, i) => (v === null ? null : Number(((v - out.before[i]) / N).toFixed(3))));
out.per_queue = { declared: per('declared'), one_message: per('one_message'), used_empty: per('used_empty'), deleted: per('deleted') };
console.log(JSON.stringify(out));
