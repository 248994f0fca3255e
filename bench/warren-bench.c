/* warren-bench: load generator for warren. See bench/README.md. */
#include "bench/bench.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fputs("usage: warren-bench MODE [options]\n"
        "modes:\n"
        "  consume   minimal rabbitmq-c consumer draining --queue (the ceiling)\n"
        "  fill      publish --count confirmed persistent envelopes (to --exchange, else --queue)\n"
        "  publish   publish at --rate for --duration (or --count), with confirms; --broadcast\n"
        "  clients   open --conns WebSocket connections to --url, count/ack/time notifications;\n"
        "            with --connect-rate, churn: connections opened at a rate, each closed\n"
        "            after --life\n"
        "  burn      take --share of a core in --threads threads waking 5,000 times a second,\n"
        "            for --duration s or until SIGTERM (a stand-in for a bridge's CPU)\n"
        "  sink      accept connections on --listen and drop what they send, until --conns\n"
        "            came and went (the far end of consume --sink)\n"
        "  depth     ready messages of --queue, or of the mailboxes of --users users of warren's\n"
        "            amqp.queue --mailboxes Q, by passive declares; with --count N wait until\n"
        "            they hold N in all, spread as fill spreads N over the users, and have\n"
        "            no consumer (--count 0: empty and unused)\n"
        "  replay    users u0, u1, … connect one after another to their backlog of --count /\n"
        "            --users items (run --run, as fill made it): welcome -> first item, whole\n"
        "            backlog, items out of publish order, lost and duplicates; --settle-ms\n"
        "            pauses between users, --timeout is per user\n"
        "options:\n"
        "  --amqp URL            broker (amqp://guest:guest@127.0.0.1:5672/)\n"
        "  --exchange X          publish to X (routing key 'bench')\n"
        "  --queue Q             queue to fill without --exchange, or to consume\n"
        "  --declare             declare --queue as a plain durable queue first\n"
        "  --count N             notifications to fill / consume / publish / expect\n"
        "  --first K             fill: envelopes K … K+N-1 (0)\n"
        "  --mailboxes Q         depth: the mailboxes Q.mbox.u.u<k> of users u0 … u{U-1}\n"
        "  --users U             user ids u0..u{U-1}; notification i goes to u(i % U) (1000)\n"
        "  --run ID              id prefix: ids are ID-0, ID-1, … (broadcasts ID-b0, …) (bench)\n"
        "  --body-bytes B        envelope size (200)\n"
        "  --prefetch P          consume: basic.qos (1000)\n"
        "  --ack-every N         consume: ack multiple=true every N (100)\n"
        "  --sink IP:PORT        consume: also write each delivery as a WebSocket frame to one\n"
        "                        of --conns connections to a sink (the minimal bridge)\n"
        "  --listen IP:PORT      sink: address to accept connections on\n"
        "  --window W            fill/publish: unconfirmed publishes in flight (2000)\n"
        "  --rate R              publish: per second\n"
        "  --duration S          publish/burn: seconds\n"
        "  --share F             burn: share of one core, over all threads\n"
        "  --threads N           burn: threads (2)\n"
        "  --broadcast           publish: broadcast envelopes\n"
        "  --url ws://IP:PORT/ws clients: warren's WebSocket endpoint; several, comma-separated:\n"
        "                        connection c goes to URL c % n (one per cluster node)\n"
        "  --secret S            clients: auth.jwt_secret to mint HS256 tokens\n"
        "  --conns N             clients/consume/sink: connections (default --users);\n"
        "                        connection i is u(i % U)\n"
        "  --ack MODE            clients/replay: client (ack every notification) or none (client)\n"
        "  --expect-broadcast K  clients: broadcasts each connection must receive\n"
        "  --pid PID[,PID…]      clients/replay: warren's pid, for RSS / CPU samples; clients:\n"
        "                        several (cluster nodes), summed, all continued on SIGUSR1\n"
        "  --broker-pid PID      clients/consume/replay: the broker's pid, for CPU per item\n"
        "  --cont-on-usr1        clients: on SIGUSR1 send SIGCONT to --pid and start the clock\n"
        "  --ready-file F        clients: created once every connection is open and settled\n"
        "  --settle-ms MS        clients: wait after the last open before sampling RSS (1000);\n"
        "                        replay: pause between two users\n"
        "  --hold S              clients: with nothing expected, hold this long (0)\n"
        "  --timeout S           clients/consume/depth: give up after S s; replay: per user\n"
        "                        (120)\n"
        "  --ramp N              clients: handshakes in flight (256)\n"
        "  --per-src N           clients: connections per source address 127.0.0.k (20000)\n"
        "  --source IP           clients: bind connections to IP (and, past --per-src, the\n"
        "                        next addresses), instead of 127.0.0.2… only past --per-src\n"
        "  --first-user K        clients: connection c is user u(K + c % U) (no --count with K)\n"
        "  --connect-rate R      clients: churn: open --conns connections (distinct users) at R\n"
        "                        per second, each closed --life s after its welcome\n"
        "  --life S              clients: churn: connection lifetime after the welcome (1)\n"
        "  --reconnect-ms MS     clients: churn: each user connects once more MS after closing\n"
        "  --trace FILE          clients: one line per notification: seq recv_us latency_us;\n"
        "                        replay: one line per user\n"
        "  --json FILE           write a JSON summary\n",
        f);
}

int main(int argc, char **argv) {
  wr_bench_opts_t o = {
      .amqp_url = "amqp://guest:guest@127.0.0.1:5672/",
      .users = 1000,
      .run_id = "bench",
      .body_bytes = 200,
      .prefetch = 1000,
      .ack_every = 100,
      .window = 2000,
      .client_acks = true,
      .settle_ms = 1000,
      .timeout_s = 120,
      .ramp = 256,
      .per_src = 20000,
      .burn_threads = 2,
      .life_s = 1,
  };
  enum {
    O_AMQP = 256,
    O_EXCHANGE,
    O_QUEUE,
    O_DECLARE,
    O_COUNT,
    O_USERS,
    O_RUN,
    O_BODY,
    O_PREFETCH,
    O_ACK_EVERY,
    O_WINDOW,
    O_RATE,
    O_DURATION,
    O_BROADCAST,
    O_URL,
    O_SECRET,
    O_CONNS,
    O_ACK,
    O_BEXPECT,
    O_PID,
    O_CONT,
    O_READY,
    O_SETTLE,
    O_HOLD,
    O_TIMEOUT,
    O_RAMP,
    O_PERSRC,
    O_JSON,
    O_TRACE,
    O_BPID,
    O_SHARE,
    O_THREADS,
    O_SINK,
    O_LISTEN,
    O_FIRST,
    O_MAILBOXES,
    O_SOURCE,
    O_FIRST_USER,
    O_CONNECT_RATE,
    O_LIFE,
    O_RECONNECT,
    O_HELP
  };
  static const struct option opts[] = {
      {"amqp", required_argument, 0, O_AMQP},
      {"exchange", required_argument, 0, O_EXCHANGE},
      {"queue", required_argument, 0, O_QUEUE},
      {"declare", no_argument, 0, O_DECLARE},
      {"count", required_argument, 0, O_COUNT},
      {"users", required_argument, 0, O_USERS},
      {"run", required_argument, 0, O_RUN},
      {"body-bytes", required_argument, 0, O_BODY},
      {"prefetch", required_argument, 0, O_PREFETCH},
      {"ack-every", required_argument, 0, O_ACK_EVERY},
      {"window", required_argument, 0, O_WINDOW},
      {"rate", required_argument, 0, O_RATE},
      {"duration", required_argument, 0, O_DURATION},
      {"broadcast", no_argument, 0, O_BROADCAST},
      {"url", required_argument, 0, O_URL},
      {"secret", required_argument, 0, O_SECRET},
      {"conns", required_argument, 0, O_CONNS},
      {"ack", required_argument, 0, O_ACK},
      {"expect-broadcast", required_argument, 0, O_BEXPECT},
      {"pid", required_argument, 0, O_PID},
      {"trace", required_argument, 0, O_TRACE},
      {"broker-pid", required_argument, 0, O_BPID},
      {"share", required_argument, 0, O_SHARE},
      {"threads", required_argument, 0, O_THREADS},
      {"cont-on-usr1", no_argument, 0, O_CONT},
      {"ready-file", required_argument, 0, O_READY},
      {"settle-ms", required_argument, 0, O_SETTLE},
      {"hold", required_argument, 0, O_HOLD},
      {"timeout", required_argument, 0, O_TIMEOUT},
      {"ramp", required_argument, 0, O_RAMP},
      {"per-src", required_argument, 0, O_PERSRC},
      {"json", required_argument, 0, O_JSON},
      {"sink", required_argument, 0, O_SINK},
      {"listen", required_argument, 0, O_LISTEN},
      {"first", required_argument, 0, O_FIRST},
      {"mailboxes", required_argument, 0, O_MAILBOXES},
      {"source", required_argument, 0, O_SOURCE},
      {"first-user", required_argument, 0, O_FIRST_USER},
      {"connect-rate", required_argument, 0, O_CONNECT_RATE},
      {"life", required_argument, 0, O_LIFE},
      {"reconnect-ms", required_argument, 0, O_RECONNECT},
      {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0},
  };
  int ch;

  if (argc < 2 || argv[1][0] == '-') {
    usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
  }
  const char *mode = argv[1];
  optind = 2;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case O_AMQP:
      o.amqp_url = optarg;
      break;
    case O_EXCHANGE:
      o.exchange = optarg;
      break;
    case O_QUEUE:
      o.queue = optarg;
      break;
    case O_DECLARE:
      o.declare = true;
      break;
    case O_COUNT:
      o.count = strtoull(optarg, NULL, 10);
      o.count_set = true;
      break;
    case O_FIRST:
      o.first = strtoull(optarg, NULL, 10);
      break;
    case O_MAILBOXES:
      o.mailboxes = optarg;
      break;
    case O_USERS:
      o.users = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_RUN:
      o.run_id = optarg;
      break;
    case O_BODY:
      o.body_bytes = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_PREFETCH:
      o.prefetch = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_ACK_EVERY:
      o.ack_every = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_WINDOW:
      o.window = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_RATE:
      o.rate = strtod(optarg, NULL);
      break;
    case O_DURATION:
      o.duration_s = strtod(optarg, NULL);
      break;
    case O_BROADCAST:
      o.broadcast = true;
      break;
    case O_URL:
      o.ws_url = optarg;
      break;
    case O_SECRET:
      o.secret = optarg;
      break;
    case O_CONNS:
      o.conns = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_ACK:
      if (strcmp(optarg, "client") == 0)
        o.client_acks = true;
      else if (strcmp(optarg, "none") == 0)
        o.client_acks = false;
      else {
        fprintf(stderr, "warren-bench: --ack is client or none\n");
        return 2;
      }
      break;
    case O_BEXPECT:
      o.bcast_expect = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_PID: {
      char *p = optarg, *end;
      o.npids = 0;
      while (*p) {
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || o.npids == WR_BENCH_MAX_PIDS) {
          fprintf(stderr, "warren-bench: --pid takes up to %d pids, comma-separated\n",
                  WR_BENCH_MAX_PIDS);
          return 2;
        }
        o.pids[o.npids++] = (pid_t)v;
        p = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') {
          fprintf(stderr, "warren-bench: --pid %s: not a pid list\n", optarg);
          return 2;
        }
      }
      o.pid = o.npids ? o.pids[0] : 0;
      break;
    }
    case O_SOURCE:
      o.source = optarg;
      break;
    case O_FIRST_USER:
      o.first_user = strtoull(optarg, NULL, 10);
      break;
    case O_CONNECT_RATE:
      o.connect_rate = strtod(optarg, NULL);
      break;
    case O_LIFE:
      o.life_s = strtod(optarg, NULL);
      break;
    case O_RECONNECT:
      o.reconnect_ms = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_CONT:
      o.cont_on_usr1 = true;
      break;
    case O_READY:
      o.ready_file = optarg;
      break;
    case O_SETTLE:
      o.settle_ms = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_HOLD:
      o.hold_s = strtod(optarg, NULL);
      break;
    case O_TIMEOUT:
      o.timeout_s = strtod(optarg, NULL);
      break;
    case O_RAMP:
      o.ramp = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_PERSRC:
      o.per_src = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_JSON:
      o.json_path = optarg;
      break;
    case O_TRACE:
      o.trace_path = optarg;
      break;
    case O_BPID:
      o.broker_pid = (pid_t)strtol(optarg, NULL, 10);
      break;
    case O_SHARE:
      o.burn_share = strtod(optarg, NULL);
      break;
    case O_THREADS:
      o.burn_threads = (uint32_t)strtoul(optarg, NULL, 10);
      break;
    case O_SINK:
      o.sink = optarg;
      break;
    case O_LISTEN:
      o.listen = optarg;
      break;
    case O_HELP:
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc || o.users == 0 || o.window == 0 || o.ramp == 0) {
    usage(stderr);
    return 2;
  }
  if (o.conns == 0)
    o.conns = o.users;
  if (o.body_bytes > 3800)
    o.body_bytes = 3800;
  /* Output goes to files and pipes in bench/run: make every line visible at once. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(mode, "consume") == 0)
    return wr_bench_consume_run(&o);
  if (strcmp(mode, "fill") == 0)
    return wr_bench_fill_run(&o);
  if (strcmp(mode, "publish") == 0)
    return wr_bench_publish_run(&o);
  if (strcmp(mode, "clients") == 0)
    return wr_bench_clients_run(&o);
  if (strcmp(mode, "burn") == 0)
    return wr_bench_burn_run(&o);
  if (strcmp(mode, "sink") == 0)
    return wr_bench_sink_run(&o);
  if (strcmp(mode, "depth") == 0)
    return wr_bench_depth_run(&o);
  if (strcmp(mode, "replay") == 0)
    return wr_bench_replay_run(&o);
  fprintf(stderr, "warren-bench: unknown mode %s\n", mode);
  usage(stderr);
  return 2;
}
