// Publishes a notification to warren from Node.js with amqplib, on a confirm
// channel. Copy this file into your service (npm install amqplib).
//
//   import { WarrenNotifier } from './warren-notify.mjs';
//   const notifier = new WarrenNotifier();          // one per process
//   const id = await notifier.notify(1001, 'Payment received',
//     'Order #20260515001 is paid', { order: 20260515001 });
//   await notifier.close();                         // at shutdown
//
// Configuration comes from the environment (the same names warren uses):
//   WARREN_AMQP_URL       amqp://user:password@host:5672/ (amqps:// for TLS)
//   WARREN_AMQP_EXCHANGE  exchange warren consumes from (default warren.notify)
//
// notify() resolves with the notification id once RabbitMQ has confirmed the
// message, and rejects when the broker nacked it, could not route it to any
// queue, or the channel failed: then nothing is guaranteed and the caller
// should retry or report the failure.
//
// Run directly, it publishes one notification and prints its id:
//   node warren-notify.mjs USER_ID TITLE CONTENT [DATA_JSON]
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import amqplib from 'amqplib';

export class WarrenNotifier {
  constructor({ url, exchange } = {}) {
    this.url = url || process.env.WARREN_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
    this.exchange = exchange || process.env.WARREN_AMQP_EXCHANGE || 'warren.notify';
    this.channel = null;
    this.returned = new Set();
  }

  async open() {
    if (this.channel) return this.channel;
    if (!this.opening) {
      this.opening = (async () => {
        const conn = await amqplib.connect(this.url);
        conn.on('error', () => {});
        conn.on('close', () => {
          this.conn = null;
          this.channel = null;
        });
        // A confirm channel: every publish gets the broker's ack (stored) or
        // nack (refused) in its callback.
        const ch = await conn.createConfirmChannel();
        ch.on('error', (err) => {
          this.lastError = err;
        });
        ch.on('close', () => {
          this.channel = null;
        });
        // With mandatory, an unroutable message comes back as basic.return
        // just before its confirm: remember it so the confirm is a failure.
        ch.on('return', (msg) => this.returned.add(msg.properties.messageId));
        this.conn = conn;
        this.channel = ch;
        return ch;
      })().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  // Sends one notification to userId; resolves with its id once confirmed.
  // extra: more envelope fields (type, id, expires_at, ttl_ms…).
  async notify(userId, title, content, data = {}, extra = {}) {
    this.lastError = null;
    const id = String(extra.id || crypto.randomUUID());
    const envelope = { id, user_id: String(userId), type: 'notification', title, content, data, ...extra };
    const ch = await this.open();
    await new Promise((resolve, reject) => {
      const onClose = () => reject(new Error(`warren-notify: channel closed before ${id} was confirmed`));
      ch.once('close', onClose);
      // Routing key user.<id>: ignored by today's "#" binding, ready for
      // per-user routing. mandatory: a message no queue would receive
      // (warren never started) is an error, not a silent drop.
      ch.publish(
        this.exchange,
        `user.${userId}`,
        Buffer.from(JSON.stringify(envelope)),
        {
          contentType: 'application/json',
          persistent: true,
          messageId: id,
          timestamp: Math.floor(Date.now() / 1000),
          mandatory: true,
        },
        (err) => {
          ch.removeListener('close', onClose);
          if (err) {
            // A nack, or the channel closed by an error (e.g. 404 no such
            // exchange), which amqplib reports through the same callback.
            const why = this.lastError ? this.lastError.message : 'nacked by the broker';
            return reject(new Error(`warren-notify: ${id} not confirmed: ${why}`));
          }
          if (this.returned.delete(id)) {
            return reject(new Error(`warren-notify: ${id} unroutable: is warren's queue bound to ${this.exchange}?`));
          }
          resolve();
        },
      );
    });
    return id;
  }

  async close() {
    const c = this.conn;
    this.conn = null;
    this.channel = null;
    if (c) await c.close().catch(() => {});
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [user, title, content, data] = process.argv.slice(2);
  if (content === undefined) {
    process.stderr.write('usage: node warren-notify.mjs USER_ID TITLE CONTENT [DATA_JSON]\n');
    process.exit(2);
  }
  const notifier = new WarrenNotifier();
  try {
    console.log(await notifier.notify(user, title, content, data ? JSON.parse(data) : {}));
    await notifier.close();
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    await notifier.close();
    process.exit(1);
  }
}
