#!/usr/bin/env python3
"""Publish a notification to warren from Python with pika, with publisher confirms.

Copy this file into your service:

    from warren_notify import WarrenNotifier
    notifier = WarrenNotifier()          # one per process; reuses its connection
    nid = notifier.notify(1001, "Payment received", "Order #20260515001 is paid",
                          {"order": 20260515001})

Configuration comes from the environment (the same names warren uses):
    WARREN_AMQP_URL       amqp://user:password@host:5672/%2F  (amqps:// for TLS)
    WARREN_AMQP_EXCHANGE  exchange warren consumes from (default warren.notify)

notify() returns the notification id once RabbitMQ has confirmed the message
(it is stored and will reach the user, now or when they come back). It raises
WarrenNotifyError when the broker refused it (nack), could not route it to any
queue, or the connection failed: then nothing is guaranteed and the caller
should retry or report the failure.

Run directly, it publishes one notification and prints its id:
    python3 warren_notify.py USER_ID TITLE CONTENT [DATA_JSON]
and with --every SECONDS it keeps publishing (the demo publisher in
docker-compose.yml), until SIGTERM or SIGINT, which end it with status 0.

pika's BlockingConnection is not thread-safe: use one WarrenNotifier per thread.
"""

import json
import os
import signal
import sys
import time
import uuid

import pika
import pika.exceptions


class WarrenNotifyError(RuntimeError):
    """The notification was not confirmed by the broker."""


class WarrenNotifier:
    def __init__(self, url=None, exchange=None):
        self.url = url or os.environ.get("WARREN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
        self.exchange = exchange or os.environ.get("WARREN_AMQP_EXCHANGE", "warren.notify")
        self._conn = None
        self._ch = None

    def _channel(self):
        if self._ch is not None and self._ch.is_open:
            return self._ch
        if self._conn is None or not self._conn.is_open:
            params = pika.URLParameters(self.url)
            params.connection_attempts = 1
            params.socket_timeout = 5
            params.blocked_connection_timeout = 10
            self._conn = pika.BlockingConnection(params)
        self._ch = self._conn.channel()
        # Publisher confirms: basic_publish now waits for the broker's ack and
        # raises on a nack, so a message the broker dropped is never reported
        # as sent.
        self._ch.confirm_delivery()
        return self._ch

    def notify(self, user_id, title, content, data=None, **extra):
        """Send one notification to user_id; returns its id once confirmed.

        extra: more envelope fields (type, id, expires_at, ttl_ms, ...).
        """
        nid = str(extra.pop("id", None) or uuid.uuid4().hex)
        envelope = {
            "id": nid,
            "user_id": str(user_id),
            "type": "notification",
            "title": title,
            "content": content,
            "data": data if data is not None else {},
        }
        envelope.update(extra)
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,  # persistent: survives a broker restart
            message_id=nid,
            timestamp=int(time.time()),
        )
        try:
            # mandatory=True: a message no queue would receive (warren never
            # started, binding removed) raises UnroutableError instead of
            # vanishing. The routing key user.<id> is ignored by today's "#"
            # binding and ready for per-user routing.
            self._channel().basic_publish(
                self.exchange, "user.%s" % user_id, body, props, mandatory=True
            )
        except pika.exceptions.UnroutableError as e:
            raise WarrenNotifyError("%s unroutable: is warren's queue bound to %s?" % (nid, self.exchange)) from e
        except pika.exceptions.NackError as e:
            raise WarrenNotifyError("%s nacked by the broker" % nid) from e
        except pika.exceptions.AMQPError as e:
            # Channel closed (e.g. 404 no such exchange) or connection lost:
            # the next call opens new ones.
            self._ch = None
            raise WarrenNotifyError("%s not published: %r" % (nid, e)) from e
        return nid

    def close(self):
        if self._conn is not None and self._conn.is_open:
            self._conn.close()
        self._conn = self._ch = None


def _stop(signum, frame):
    raise SystemExit(0)


def main(argv):
    # SIGTERM's default action would end the process, except as a container's
    # PID 1, where the kernel ignores a signal without a handler: "docker
    # stop" then waits out its grace period and kills it with 137.
    signal.signal(signal.SIGTERM, _stop)
    every = None
    if len(argv) > 2 and argv[1] == "--every":
        every = float(argv[2])
        argv = argv[:1] + argv[3:]
    if len(argv) < 4:
        sys.stderr.write("usage: warren_notify.py [--every SECONDS] USER_ID TITLE CONTENT [DATA_JSON]\n")
        return 2
    data = json.loads(argv[4]) if len(argv) > 4 else {}
    notifier = WarrenNotifier()
    try:
        return _loop(notifier, argv, every, data)
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            notifier.close()
        except pika.exceptions.AMQPError:
            pass


def _loop(notifier, argv, every, data):
    n = 0
    while True:
        try:
            n += 1
            content = argv[3] if every is None else "%s #%d" % (argv[3], n)
            print(notifier.notify(argv[1], argv[2], content, data), flush=True)
        except (WarrenNotifyError, pika.exceptions.AMQPError, OSError) as e:
            sys.stderr.write("warren_notify: %s\n" % e)
            if every is None:
                return 1
            notifier.close()
        if every is None:
            return 0
        time.sleep(every)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
