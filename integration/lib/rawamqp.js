// A minimal AMQP 0-9-1 publisher on a raw socket, for messages amqplib cannot
// encode: amqplib builds header tables in a 64 KiB scratch buffer, while the
// broker accepts a content header up to frame_max (131072 bytes). One
// connection per call: connect, confirm.select, one basic.publish, wait for
// the confirm, close.
import net from 'node:net';

const FRAME_METHOD = 1;
const FRAME_HEADER = 2;
const FRAME_BODY = 3;
const FRAME_END = 0xce;
const FRAME_OVERHEAD = 8; // type 1, channel 2, size 4, frame end 1
const CONTENT_PREFIX = 12; // class 2, weight 2, body size 8

function u8(n) {
  return Buffer.from([n]);
}

function u16(n) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u32(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function u64(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

function shortstr(s) {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(String(s));
  if (b.length > 255) throw new RangeError(`short string of ${b.length} bytes`);
  return Buffer.concat([u8(b.length), b]);
}

function longstr(s) {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(String(s));
  return Buffer.concat([u32(b.length), b]);
}

// A field table from [key, value] pairs (pairs, not an object, so that an
// empty key or a repeated one can be sent). Values: string or Buffer → 'S',
// bigint or integer number → 'l' (signed 64-bit), { timestamp } → 'T'.
export function encodeTable(pairs) {
  const parts = [];
  for (const [k, v] of pairs) {
    parts.push(shortstr(k));
    if (typeof v === 'string' || Buffer.isBuffer(v)) {
      parts.push(Buffer.from('S'), longstr(v));
    } else if (typeof v === 'bigint' || Number.isInteger(v)) {
      const b = Buffer.alloc(8);
      b.writeBigInt64BE(BigInt(v));
      parts.push(Buffer.from('l'), b);
    } else if (v && v.timestamp !== undefined) {
      parts.push(Buffer.from('T'), u64(v.timestamp));
    } else {
      throw new TypeError(`unsupported header value for ${k}: ${v}`);
    }
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([u32(body.length), body]);
}

// Basic-class properties as the content header carries them (flags first).
// props: contentType, headers ([key, value] pairs), deliveryMode, messageId,
// timestamp (seconds, number or bigint).
export function encodeProperties(props) {
  let flags = 0;
  const parts = [];
  if (props.contentType !== undefined) {
    flags |= 0x8000;
    parts.push(shortstr(props.contentType));
  }
  if (props.headers !== undefined) {
    flags |= 0x2000;
    parts.push(encodeTable(props.headers));
  }
  if (props.deliveryMode !== undefined) {
    flags |= 0x1000;
    parts.push(u8(props.deliveryMode));
  }
  if (props.messageId !== undefined) {
    flags |= 0x0080;
    parts.push(shortstr(props.messageId));
  }
  if (props.timestamp !== undefined) {
    flags |= 0x0040;
    parts.push(u64(props.timestamp));
  }
  return Buffer.concat([u16(flags), ...parts]);
}

function frame(type, channel, payload) {
  return Buffer.concat([u8(type), u16(channel), u32(payload.length), payload, u8(FRAME_END)]);
}

function method(channel, classId, methodId, args) {
  return frame(FRAME_METHOD, channel, Buffer.concat([u16(classId), u16(methodId), ...args]));
}

// Reads frames off the socket; next(pred) resolves with the first method
// frame pred accepts and rejects when the broker closes the channel or the
// connection.
class FrameReader {
  constructor(sock) {
    this.buf = Buffer.alloc(0);
    this.waiters = [];
    this.error = null;
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.pump();
    });
    const fail = (err) => {
      this.error = err;
      for (const w of this.waiters.splice(0)) w.reject(err);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('socket closed by the broker')));
  }

  pump() {
    while (this.buf.length >= 7) {
      const size = this.buf.readUInt32BE(3);
      if (this.buf.length < 7 + size + 1) return;
      const type = this.buf[0];
      const payload = this.buf.subarray(7, 7 + size);
      this.buf = this.buf.subarray(8 + size);
      if (type !== FRAME_METHOD) continue;
      const m = { classId: payload.readUInt16BE(0), methodId: payload.readUInt16BE(2), args: payload.subarray(4) };
      if ((m.classId === 10 && m.methodId === 50) || (m.classId === 20 && m.methodId === 40)) {
        const code = m.args.readUInt16BE(0);
        const text = m.args.subarray(3, 3 + m.args[2]).toString();
        const err = new Error(`broker closed the ${m.classId === 10 ? 'connection' : 'channel'}: ${code} ${text}`);
        this.error = err;
        for (const w of this.waiters.splice(0)) w.reject(err);
        continue;
      }
      const i = this.waiters.findIndex((w) => w.pred(m));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
    }
  }

  next(pred, what, timeout = 10000) {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, reject };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`raw AMQP: timed out waiting for ${what}`));
      }, timeout);
      w.resolve = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      w.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      this.waiters.push(w);
    });
  }
}

const is = (c, m) => (x) => x.classId === c && x.methodId === m;

// Publishes one message with publisher confirms; resolves once the broker
// acks it, rejects on a nack or a channel/connection close (with the
// broker's reason).
export async function rawPublish(url, { exchange, routingKey, properties = {}, body, frameMax = 131072 }) {
  const u = new URL(url);
  const sock = net.connect(Number(u.port || 5672), u.hostname);
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const rd = new FrameReader(sock);
  try {
    sock.write(Buffer.from('AMQP\x00\x00\x09\x01', 'latin1'));
    await rd.next(is(10, 10), 'connection.start');
    const user = decodeURIComponent(u.username || 'guest');
    const pass = decodeURIComponent(u.password || 'guest');
    sock.write(
      method(0, 10, 11, [encodeTable([]), shortstr('PLAIN'), longstr(`\0${user}\0${pass}`), shortstr('en_US')]),
    );
    const tune = await rd.next(is(10, 30), 'connection.tune');
    const serverMax = tune.args.readUInt32BE(2);
    const fmax = serverMax === 0 ? frameMax : Math.min(serverMax, frameMax);
    sock.write(method(0, 10, 31, [u16(tune.args.readUInt16BE(0)), u32(fmax), u16(0)]));
    const vhost = u.pathname && u.pathname !== '/' ? decodeURIComponent(u.pathname.slice(1)) : '/';
    sock.write(method(0, 10, 40, [shortstr(vhost), shortstr(''), u8(0)]));
    await rd.next(is(10, 41), 'connection.open-ok');
    sock.write(method(1, 20, 10, [shortstr('')]));
    await rd.next(is(20, 11), 'channel.open-ok');
    sock.write(method(1, 85, 10, [u8(0)]));
    await rd.next(is(85, 11), 'confirm.select-ok');

    const content = Buffer.isBuffer(body) ? body : Buffer.from(body);
    const props = encodeProperties({ deliveryMode: 2, ...properties });
    if (CONTENT_PREFIX + props.length + FRAME_OVERHEAD > fmax) {
      throw new RangeError(`properties of ${props.length} bytes do not fit frame_max ${fmax}`);
    }
    const confirm = rd.next((m) => m.classId === 60 && (m.methodId === 80 || m.methodId === 120), 'publisher confirm');
    sock.write(method(1, 60, 40, [u16(0), shortstr(exchange), shortstr(routingKey), u8(0)]));
    sock.write(frame(FRAME_HEADER, 1, Buffer.concat([u16(60), u16(0), u64(content.length), props])));
    for (let off = 0; off < content.length; off += fmax - FRAME_OVERHEAD) {
      sock.write(frame(FRAME_BODY, 1, content.subarray(off, off + fmax - FRAME_OVERHEAD)));
    }
    const c = await confirm;
    if (c.methodId === 120) throw new Error('the broker nacked the publish');
    sock.write(method(0, 10, 50, [u16(200), shortstr('bye'), u16(0), u16(0)]));
    await rd.next(is(10, 51), 'connection.close-ok').catch(() => {});
  } finally {
    sock.destroy();
  }
}

// Largest properties size a content header can carry within frame_max.
export function maxPropertiesBytes(frameMax = 131072) {
  return frameMax - FRAME_OVERHEAD - CONTENT_PREFIX;
}
