<?php
// Publishes a notification to warren from PHP with php-amqplib, and waits
// until RabbitMQ has confirmed it: the replacement for a hand-made /push
// endpoint. Copy this file into your service.
//
//   require 'warren_notify.php';
//   $id = warren_notify(1001, 'Payment received', 'Order #20260515001 is paid',
//                       ['order' => 20260515001]);
//
// Configuration comes from the environment (the same names warren uses):
//   WARREN_AMQP_URL       amqp://user:password@host:5672/vhost (amqps:// for TLS)
//   WARREN_AMQP_EXCHANGE  exchange warren consumes from (default warren.notify)
//
// warren_notify() returns the notification id once the broker has confirmed
// the message (it is then on disk and will reach the user, now or when they
// come back), and throws a RuntimeException when it was refused, could not be
// routed, or was not confirmed within 5 s: then nothing is guaranteed and the
// caller should retry or report the failure.
//
// Run from the command line, it publishes one notification and prints its id:
//   php warren_notify.php USER_ID TITLE CONTENT [DATA_JSON]

declare(strict_types=1);

// Debian's php-amqplib package; with Composer, require vendor/autoload.php
// instead.
if (!class_exists(\PhpAmqpLib\Connection\AMQPConnectionConfig::class)) {
    require_once '/usr/share/php/PhpAmqpLib/autoload.php';
}

use PhpAmqpLib\Channel\AMQPChannel;
use PhpAmqpLib\Connection\AMQPConnectionConfig;
use PhpAmqpLib\Connection\AMQPConnectionFactory;
use PhpAmqpLib\Message\AMQPMessage;

const WARREN_CONFIRM_TIMEOUT_S = 5.0;

// One connection and one confirm-mode channel per PHP process (a PHP-FPM
// worker keeps it across requests): opening an AMQP connection costs several
// round trips, publishing on an open one costs one.
function warren_channel(): AMQPChannel
{
    static $conn = null;
    static $ch = null;
    if ($ch !== null && $ch->is_open() && $conn->isConnected()) {
        return $ch;
    }
    $url = getenv('WARREN_AMQP_URL') ?: 'amqp://guest:guest@127.0.0.1:5672/';
    $u = parse_url($url);
    if ($u === false || !isset($u['scheme'], $u['host'])) {
        throw new InvalidArgumentException("WARREN_AMQP_URL is not an AMQP URL");
    }
    $secure = $u['scheme'] === 'amqps';
    $cfg = new AMQPConnectionConfig();
    $cfg->setHost($u['host']);
    $cfg->setPort((int)($u['port'] ?? ($secure ? 5671 : 5672)));
    $cfg->setUser(urldecode($u['user'] ?? 'guest'));
    $cfg->setPassword(urldecode($u['pass'] ?? 'guest'));
    // "amqp://h/" is the vhost "/"; "amqp://h/%2Fprod" is "/prod".
    $path = $u['path'] ?? '/';
    $cfg->setVhost($path === '' || $path === '/' ? '/' : urldecode(substr($path, 1)));
    $cfg->setIsSecure($secure);
    $cfg->setConnectionTimeout(3.0);
    $cfg->setReadTimeout(WARREN_CONFIRM_TIMEOUT_S + 1);
    $cfg->setWriteTimeout(WARREN_CONFIRM_TIMEOUT_S + 1);
    $conn = AMQPConnectionFactory::create($cfg);
    $ch = $conn->channel();
    // Publisher confirms: the broker answers every publish with ack (stored)
    // or nack (refused). Without them a publish "succeeds" even when the
    // broker drops the message, e.g. under a memory alarm.
    $ch->confirm_select();
    return $ch;
}

/**
 * Sends a notification to one user and waits for the broker's confirm.
 *
 * @param string|int $userId  target user (the JWT "sub" of their browser session)
 * @param array      $data    any JSON-serialisable payload for the client
 * @param array      $extra   more envelope fields: type, id, expires_at, ttl_ms, …
 * @return string the notification id (the client deduplicates by it)
 * @throws RuntimeException when the notification is not confirmed
 */
function warren_notify($userId, string $title, string $content, array $data = [], array $extra = []): string
{
    $id = (string)($extra['id'] ?? bin2hex(random_bytes(16)));
    $envelope = [
        'id' => $id,
        'user_id' => (string)$userId,
        'type' => 'notification',
        'title' => $title,
        'content' => $content,
        // An empty PHP array would encode as [], the client expects an object.
        'data' => (object)$data,
    ] + $extra;
    $body = json_encode($envelope, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);

    $exchange = getenv('WARREN_AMQP_EXCHANGE') ?: 'warren.notify';
    $msg = new AMQPMessage($body, [
        'content_type' => 'application/json',
        'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
        'message_id' => $id,
        'timestamp' => time(),
    ]);

    $ch = warren_channel();
    $failure = null;
    $ch->set_nack_handler(function () use (&$failure) {
        $failure = 'nacked by the broker';
    });
    // mandatory + return listener: a message that no queue would receive
    // (warren never started, binding removed) is an error, not a silent drop.
    $ch->set_return_listener(function ($code, $text) use (&$failure) {
        $failure = "unroutable ($code $text): is warren's queue bound to the exchange?";
    });
    try {
        // Routing key user.<id>: ignored by today's "#" binding, ready for
        // per-user routing.
        $ch->basic_publish($msg, $exchange, 'user.' . $userId, true);
        $ch->wait_for_pending_acks_returns(WARREN_CONFIRM_TIMEOUT_S);
    } catch (\PhpAmqpLib\Exception\AMQPTimeoutException $e) {
        throw new RuntimeException("warren_notify: no confirm within " . WARREN_CONFIRM_TIMEOUT_S . " s for $id", 0, $e);
    } catch (\PhpAmqpLib\Exception\AMQPExceptionInterface $e) {
        // e.g. 404 NOT_FOUND when the exchange does not exist: the channel is
        // closed, the next call opens a new one.
        throw new RuntimeException("warren_notify: publish failed for $id: " . $e->getMessage(), 0, $e);
    }
    if ($failure !== null) {
        throw new RuntimeException("warren_notify: $id $failure");
    }
    return $id;
}

// CLI wrapper, only when this file is run directly.
if (PHP_SAPI === 'cli' && isset($argv[0]) && realpath($argv[0]) === __FILE__) {
    if ($argc < 4) {
        fwrite(STDERR, "usage: php warren_notify.php USER_ID TITLE CONTENT [DATA_JSON]\n");
        exit(2);
    }
    try {
        $data = $argc > 4 ? json_decode($argv[4], true, 64, JSON_THROW_ON_ERROR) : [];
        echo warren_notify($argv[1], $argv[2], $argv[3], $data), "\n";
        exit(0);
    } catch (Throwable $e) {
        fwrite(STDERR, $e->getMessage() . "\n");
        exit(1);
    }
}
