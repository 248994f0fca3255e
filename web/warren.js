/* warren browser client: connects to warren over WebSocket, reconnects with
 * backoff, deduplicates notifications by id and acknowledges them once the
 * application has handled them. Plain ES2017, no dependencies. Defines
 * window.Warren in a browser and module.exports in CommonJS. */
(function (root) {
  'use strict';

  var DEFAULTS = {
    protocol: 'warren.json',
    tokenIn: 'protocol',
    dedupSize: 1000,
    pingIntervalMs: 20000,
    pongTimeoutMs: 10000,
    reconnectBaseMs: 1000,
    reconnectMaxMs: 30000,
    stableAfterMs: 10000
  };

  function defaultUrl() {
    var loc = root.location;
    if (!loc) throw new Error('warren: no url given and no location to derive it from');
    return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws';
  }

  // A set that forgets its oldest entries past `max`: Map keeps insertion
  // order, and a hit is re-inserted so that recently seen ids stay longest.
  class LruSet {
    constructor(max) {
      this.max = Math.max(1, max | 0);
      this.map = new Map();
    }
    has(key) {
      if (!this.map.has(key)) return false;
      this.map.delete(key);
      this.map.set(key, true);
      return true;
    }
    add(key) {
      this.map.delete(key);
      this.map.set(key, true);
      while (this.map.size > this.max) this.map.delete(this.map.keys().next().value);
    }
    get size() {
      return this.map.size;
    }
  }

  class Warren {
    constructor(options) {
      var o = Object.assign({}, DEFAULTS, options || {});
      this.url = o.url || defaultUrl();
      this.token = o.token;
      this.protocol = o.protocol;
      if (o.tokenIn !== 'protocol' && o.tokenIn !== 'query') {
        throw new Error("warren: tokenIn must be 'protocol' or 'query'");
      }
      this.tokenIn = o.tokenIn;
      this.onNotification = o.onNotification || function () {};
      this.onStatus = o.onStatus || function () {};
      this.pingIntervalMs = o.pingIntervalMs;
      this.pongTimeoutMs = o.pongTimeoutMs;
      this.reconnectBaseMs = o.reconnectBaseMs;
      this.reconnectMaxMs = o.reconnectMaxMs;
      this.stableAfterMs = o.stableAfterMs;
      this.random = o.random || Math.random;
      this.WebSocket = o.WebSocket || root.WebSocket;
      if (!this.WebSocket) throw new Error('warren: no WebSocket implementation');
      this.seen = new LruSet(o.dedupSize);
      this.inFlight = new Map(); /* key -> arrivals while its handler runs */
      this.ws = null;
      this.state = 'closed';
      this.attempt = 0;
      this.userId = null;
      this.timers = {};
    }

    // Opens the connection. Does nothing if one is already open or pending.
    connect() {
      if (this.state !== 'closed') return;
      this.attempt = 0;
      this.open();
    }

    // Closes the connection for good: no reconnect until connect() again.
    close() {
      var was = this.state;
      this.state = 'closed';
      this.teardown(1000, 'client closed');
      if (was !== 'closed') this.emit({ status: 'closed', code: 1000, reason: 'client closed' });
    }

    // Replaces the token used by the next connection (e.g. after 1008).
    setToken(token) {
      this.token = token;
    }

    emit(s) {
      try {
        this.onStatus(s);
      } catch (e) {
        logError('warren: onStatus threw', e);
      }
    }

    clearTimer(name) {
      if (this.timers[name] !== undefined) {
        clearTimeout(this.timers[name]);
        clearInterval(this.timers[name]);
        delete this.timers[name];
      }
    }

    clearTimers() {
      Object.keys(this.timers).forEach(this.clearTimer, this);
    }

    open() {
      var self = this;
      var url = this.url;
      var protocols = [this.protocol];
      if (this.token && this.tokenIn === 'query') {
        url += (url.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(this.token);
      } else if (this.token) {
        // The token rides as an extra offered subprotocol, the one header a
        // browser lets a page set on a WebSocket. Unlike ?token= it is not in
        // the request line, which proxies write to their logs. warren never
        // selects it: the server answers with this.protocol.
        protocols.push('bearer.' + this.token);
      }
      this.state = 'connecting';
      this.userId = null;
      this.emit({ status: 'connecting', attempt: this.attempt });
      var ws;
      try {
        ws = new this.WebSocket(url, protocols);
      } catch (e) {
        // A malformed URL, or a token that is not a valid subprotocol name
        // (a JWT always is), throws synchronously; it will not heal by itself.
        this.state = 'closed';
        this.emit({ status: 'closed', code: 0, reason: String(e && e.message ? e.message : e) });
        return;
      }
      this.ws = ws;
      // Handlers check that the socket is still the current one: a socket we
      // abandoned (ping timeout) may still report events later.
      ws.onopen = function () {
        if (self.ws === ws) self.opened();
      };
      ws.onmessage = function (ev) {
        if (self.ws === ws) self.received(ev.data);
      };
      ws.onclose = function (ev) {
        if (self.ws === ws) self.closed(ev.code, ev.reason);
      };
      ws.onerror = function () {
        /* Always followed by close, which decides what to do. */
      };
    }

    opened() {
      var self = this;
      this.timers.ping = setInterval(function () {
        self.ping();
      }, this.pingIntervalMs);
    }

    ping() {
      var self = this;
      if (!this.send({ type: 'ping' })) return;
      if (this.timers.pong !== undefined) return;
      this.timers.pong = setTimeout(function () {
        delete self.timers.pong;
        self.lost(4000, 'ping timeout');
      }, this.pongTimeoutMs);
    }

    send(msg) {
      var ws = this.ws;
      if (!ws || ws.readyState !== 1) return false;
      try {
        ws.send(JSON.stringify(msg));
        return true;
      } catch (e) {
        return false;
      }
    }

    received(data) {
      if (typeof data !== 'string') return; /* warren.json speaks text frames only */
      var msg;
      try {
        msg = JSON.parse(data);
      } catch (e) {
        logError('warren: ignoring a message that is not JSON', e);
        return;
      }
      if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return;
      // Every notification carries an id and no control message does, so
      // the id, not the type, tells them apart: a notification whose type
      // happens to be "welcome", "pong" or "error" is still one to handle
      // and ack.
      if (msg.id !== undefined && msg.id !== null) {
        this.deliver(msg);
        return;
      }
      if (msg.type === 'welcome') {
        var self = this;
        this.state = 'open';
        this.userId = msg.user_id;
        this.emit({ status: 'open', userId: msg.user_id, ackMode: msg.ack_mode });
        // Only a connection that lasts resets the backoff, so a server that
        // accepts then drops at once is not hammered every second.
        this.timers.stable = setTimeout(function () {
          delete self.timers.stable;
          self.attempt = 0;
        }, this.stableAfterMs);
        return;
      }
      if (msg.type === 'pong') {
        this.clearTimer('pong');
        return;
      }
      if (msg.type === 'error') logError('warren: the server refused a message: ' + String(msg.error));
    }

    async deliver(n) {
      var key = typeof n.id + ':' + String(n.id);
      if (this.seen.has(key)) {
        // A redelivery of something already handled: the ack was lost or late.
        this.send({ type: 'ack', id: n.id });
        return;
      }
      // The same id arriving while its handler runs is not handed over twice;
      // each arrival is acked once the handler succeeds.
      if (this.inFlight.has(key)) {
        this.inFlight.set(key, this.inFlight.get(key) + 1);
        return;
      }
      this.inFlight.set(key, 1);
      var arrivals;
      try {
        await this.onNotification(n);
      } catch (e) {
        // No ack: the server redelivers after its ack timeout.
        logError('warren: onNotification failed for ' + String(n.id), e);
        return;
      } finally {
        arrivals = this.inFlight.get(key);
        this.inFlight.delete(key);
      }
      this.seen.add(key);
      for (var i = 0; i < arrivals; i++) this.send({ type: 'ack', id: n.id });
    }

    closed(code, reason) {
      this.ws = null;
      this.clearTimers();
      if (this.state === 'closed') return;
      if (code === 1008) {
        // Policy: expired token or refused origin. Retrying with the same
        // token cannot succeed; the application must get a new one.
        this.state = 'closed';
        this.emit({ status: 'closed', code: code, reason: reason || 'policy violation' });
        return;
      }
      this.reconnect(code, reason);
    }

    // Gives up on a socket that stopped answering and reconnects at once,
    // without waiting for a close handshake that may never come.
    lost(code, reason) {
      if (this.state === 'closed') return;
      this.teardown(code, reason);
      this.reconnect(code, reason);
    }

    teardown(code, reason) {
      this.clearTimers();
      var ws = this.ws;
      this.ws = null;
      if (ws && ws.readyState < 2) {
        try {
          ws.close(code, reason);
        } catch (e) {
          /* Already closing. */
        }
      }
    }

    reconnect(code, reason) {
      var self = this;
      this.attempt += 1;
      // Full jitter: a uniform delay under the exponential cap, so that many
      // clients cut off together do not come back together.
      var cap = Math.min(this.reconnectMaxMs, this.reconnectBaseMs * Math.pow(2, this.attempt - 1));
      var delay = Math.floor(this.random() * cap);
      this.state = 'reconnecting';
      this.emit({
        status: 'reconnecting',
        attempt: this.attempt,
        delayMs: delay,
        code: code,
        reason: reason || ''
      });
      this.timers.reconnect = setTimeout(function () {
        delete self.timers.reconnect;
        if (self.state === 'reconnecting') self.open();
      }, delay);
    }
  }

  function logError(what, e) {
    if (typeof console !== 'undefined' && console.error) console.error(what, e);
  }

  Warren.LruSet = LruSet;
  if (typeof module !== 'undefined' && module.exports) module.exports = Warren;
  if (typeof root.window !== 'undefined' || typeof module === 'undefined') root.Warren = Warren;
})(typeof globalThis !== 'undefined' ? globalThis : this);
