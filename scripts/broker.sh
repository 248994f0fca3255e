#!/bin/sh
# Private RabbitMQ node (or cluster of nodes) for tests and development.
#
#   scripts/broker.sh start DIR PORT     start (or find running) node, print its AMQP URL
#   scripts/broker.sh stop  DIR PORT     stop it and kill what is left of it
#   scripts/broker.sh ctl   DIR PORT ARGS…  rabbitmqctl -n NODE ARGS… with the node's environment
#   scripts/broker.sh pid   DIR PORT     print the OS pid of the node's Erlang VM (beam)
#
#   scripts/broker.sh cluster-start DIR PORT [N]   start (or find running) an N-node cluster
#                                                  (default 3), print its N AMQP URLs
#   scripts/broker.sh cluster-stop  DIR PORT [N]   stop all N nodes, kill what is left
#   scripts/broker.sh cluster-ctl   DIR PORT K ARGS…  rabbitmqctl against node K (1-based)
#   scripts/broker.sh cluster-pid   DIR PORT K     OS pid of node K's Erlang VM
#
# The node is named warren-PORT@localhost, listens for AMQP on 127.0.0.1:PORT,
# uses PORT+20000 for Erlang distribution and its own epmd on PORT+30000, and
# keeps every file (database, logs, cookie, config) under DIR, so several
# nodes can run side by side and never touch the Debian package's default
# node. Extra rabbitmq.conf lines may be passed in the environment variable
# BROKER_EXTRA_CONF.
#
# A cluster's node K (1..N) is the same kind of node, warren-(PORT+K-1)@localhost
# with AMQP on PORT+K-1, distribution on PORT+K-1+20000 and its files under
# DIR/nK, except that all N nodes register with ONE epmd on PORT+30000 (so
# they find each other by name) and share ONE cookie, DIR/.erlang.cookie
# (DIR/nK/.erlang.cookie links to it). Each node runs one scheduler (+S 1:1,
# appended to RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS). Nodes 2..N join node 1
# (stop_app, join_cluster, start_app) the first time; a cluster stopped with
# cluster-stop keeps its membership and data and comes back with cluster-start.
# Do not run a single node on a port a cluster uses (or its +20000/+30000).
#
# BROKER_IMAGE=IMAGE runs each node (single or of a cluster) in a podman
# container of that image instead, with the host's network and epmd, DIR
# mounted at the same path (a cluster's whole DIR, for the shared cookie) and
# the same environment, so nothing else changes: scripts/test-rabbitmq4 runs
# the integration tests this way against RabbitMQ 4.0.5 (Debian 13's package,
# image built by scripts/test-containers). A node's container is named
# warren-broker-PORT; ctl runs rabbitmqctl inside it; pid is the VM's pid as
# the host sees it (kill -9 and -STOP still work).
# BROKER_IMAGE_CONF adds rabbitmq.conf lines for that image only.
#
# We call /usr/lib/rabbitmq/bin/* directly rather than the /usr/sbin wrappers:
# run as root, the wrappers switch to the rabbitmq user, whose open-files
# limit is 1024 (the broker then refuses connections past ~900 sockets), and
# they cd to /var/lib/rabbitmq. The node therefore runs as the calling user,
# who owns DIR, with the open-files limit raised to the hard limit.
set -eu

RMQ_BIN=${RMQ_BIN:-/usr/lib/rabbitmq/bin}

usage() {
  echo "usage: $0 start|stop|ctl|pid DIR PORT [args…]" >&2
  echo "       $0 cluster-start|cluster-stop DIR PORT [N]" >&2
  echo "       $0 cluster-ctl DIR PORT K ARGS… | cluster-pid DIR PORT K" >&2
  exit 2
}

is_number() {
  case $1 in
  '' | *[!0-9]*) return 1 ;;
  esac
}

[ $# -ge 3 ] || usage
cmd=$1
dir=$2
port=$3
shift 3

if ! is_number "$port"; then
  echo "broker.sh: PORT must be a number, got '$port'" >&2
  exit 2
fi
if [ "$port" -lt 1 ] || [ "$port" -gt 35535 ]; then
  echo "broker.sh: PORT must be in 1..35535 (PORT+30000 is the epmd port)" >&2
  exit 2
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# node_env DIR PORT EPMD_PORT: the environment of node warren-PORT@localhost,
# files under DIR, registered with the epmd on EPMD_PORT. Sets dir, port,
# node, dist_port and epmd_port for the functions below.
#
# Same environment for server and rabbitmqctl: the shared HOME makes them use
# the same DIR/.erlang.cookie, the private epmd port keeps our node's name
# registry away from any other node on the machine.
node_env() {
  dir=$1
  port=$2
  epmd_port=$3
  node="warren-$port@localhost"
  dist_port=$((port + 20000))
  export HOME="$dir"
  export RABBITMQ_NODENAME="$node"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port"
  export RABBITMQ_DIST_PORT="$dist_port"
  export ERL_EPMD_PORT="$epmd_port"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
  export RABBITMQ_CTL_ERL_ARGS="${RABBITMQ_CTL_ERL_ARGS:-}"
  unset RABBITMQ_USE_LONGNAME || true
}

# 1 while the epmd belongs to this node alone (stop kills it), 0 in a cluster.
own_epmd=1

# The environment node_env exports, as podman -e options (values taken from
# this shell's environment).
ctr_env() {
  for v in HOME RABBITMQ_NODENAME RABBITMQ_NODE_IP_ADDRESS RABBITMQ_NODE_PORT RABBITMQ_DIST_PORT \
    ERL_EPMD_PORT ERL_EPMD_ADDRESS RABBITMQ_MNESIA_BASE RABBITMQ_LOG_BASE RABBITMQ_ENABLED_PLUGINS_FILE \
    RABBITMQ_CONFIG_FILE RABBITMQ_ADVANCED_CONFIG_FILE RABBITMQ_CONF_ENV_FILE RABBITMQ_PID_FILE \
    RABBITMQ_CTL_ERL_ARGS RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS; do
    printf -- '-e\n%s\n' "$v"
  done
}

ctl() {
  if [ -n "${BROKER_IMAGE:-}" ]; then
    # shellcheck disable=SC2046 # one option per line
    (IFS='
' && podman exec -w "$dir" $(ctr_env) "warren-broker-$port" "$RMQ_BIN/rabbitmqctl" -n "$node" "$@")
    return
  fi
  (cd "$dir" && "$RMQ_BIN/rabbitmqctl" -n "$node" "$@")
}

url() {
  echo "amqp://guest:guest@127.0.0.1:$port/"
}

answers() {
  ctl -q status >/dev/null 2>&1
}

beam_pid() {
  # The VM's command line carries "-home DIR -epmd_port EPMD" (from HOME and
  # ERL_EPMD_PORT), which is unique to this node.
  pgrep -f -- "-home $dir -epmd_port $epmd_port( |\$)" | head -n 1 | grep .
}

new_cookie() { # FILE: a private cookie, created once, readable only by its owner (Erlang refuses it otherwise)
  if [ ! -s "$1" ]; then
    umask 077
    od -An -N 16 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' >"$1"
    umask 022
  fi
  chmod 400 "$1"
}

write_files() {
  mkdir -p "$dir/mnesia" "$dir/log"
  new_cookie "$dir/.erlang.cookie"
  echo "[]." >"$dir/enabled_plugins"
  echo "[]." >"$dir/advanced.config"
  {
    echo "listeners.tcp.default = 127.0.0.1:$port"
    echo "loopback_users = none"
    echo "log.file.level = info"
    echo "log.console = false"
    if [ -n "${BROKER_EXTRA_CONF:-}" ]; then
      printf '%s\n' "$BROKER_EXTRA_CONF"
    fi
    if [ -n "${BROKER_IMAGE:-}" ] && [ -n "${BROKER_IMAGE_CONF:-}" ]; then
      printf '%s\n' "$BROKER_IMAGE_CONF"
    fi
  } >"$dir/rabbitmq.conf"
  # Sourced by rabbitmq-env instead of /etc/rabbitmq/rabbitmq-env.conf.
  echo "# generated by scripts/broker.sh" >"$dir/rabbitmq-env.conf"
}

start() {
  if answers; then
    url
    return 0
  fi
  write_files
  hard=$(ulimit -Hn)
  if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
  ulimit -n "$hard" 2>/dev/null || true
  # The node does not start an epmd on a non-default port by itself; ours is
  # private to this node (or shared by a cluster's nodes: a second one on the
  # same port exits at once) and killed by stop (cluster-stop).
  epmd -port "$epmd_port" -address 127.0.0.1 -daemon
  # setsid + nohup: the node must survive the shell that started it and must
  # not get the caller's terminal signals.
  if [ -n "${BROKER_IMAGE:-}" ]; then
    # The image's own logging settings (console) give way to the files
    # under DIR/log, as on the host.
    # shellcheck disable=SC2046 # one option per line
    if ! (IFS='
' && podman run -d --rm --replace --name "warren-broker-$port" --network host \
      --user "$(id -u):$(id -g)" -v "${mount_dir:-$dir}:${mount_dir:-$dir}" -w "$dir" $(ctr_env) \
      -e "RABBITMQ_LOGS=$dir/log/$node.log" "$BROKER_IMAGE" "$RMQ_BIN/rabbitmq-server") \
      >"$dir/log/startup.log" 2>&1 </dev/null; then
      echo "broker.sh: podman run of $BROKER_IMAGE failed:" >&2
      cat "$dir/log/startup.log" >&2
      return 1
    fi
  else
    (cd "$dir" && setsid nohup "$RMQ_BIN/rabbitmq-server" >"$dir/log/startup.log" 2>&1 </dev/null &)
  fi
  # await_startup fails at once while the node is not registered yet, so
  # first wait (within the same 60 s budget) for the VM to be reachable.
  deadline=$(($(date +%s) + 60))
  while ! ctl -q -t 5 ping >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! beam_pid >/dev/null; then
      break
    fi
    sleep 0.5
  done
  left=$((deadline - $(date +%s)))
  [ $left -gt 1 ] || left=1
  if ! ctl -q -t "$left" await_startup >"$dir/log/await.log" 2>&1; then
    echo "broker.sh: node $node did not start within 60 s; see $dir/log/" >&2
    tail -n 20 "$dir/log/startup.log" >&2 || true
    stop >/dev/null 2>&1 || true
    return 1
  fi
  url
}

stop() {
  p=$(beam_pid || true)
  # A node frozen by a kill -STOP test would never answer the stop request.
  [ -z "$p" ] || kill -CONT "$p" 2>/dev/null || true
  if answers; then
    ctl -q stop >/dev/null 2>&1 || true
  fi
  # Whatever survived a clean stop (or a node that never answered) is killed.
  if [ -n "$p" ]; then
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
      sleep 0.2
      i=$((i + 1))
    done
    kill -KILL "$p" 2>/dev/null || true
  fi
  # Our private epmd (only ours listens on this port). A cluster's shared
  # one is killed by cluster-stop once every node is down.
  if [ "$own_epmd" = 1 ]; then
    epmd -port "$epmd_port" -kill >/dev/null 2>&1 || true
  fi
  if [ -n "${BROKER_IMAGE:-}" ]; then
    podman rm -f "warren-broker-$port" >/dev/null 2>&1 || true
  fi
  return 0
}

# ---- cluster ----------------------------------------------------------------

cdir=$dir
cport=$port
cepmd=$((cport + 30000))
cnode1="warren-$cport@localhost"

cluster_size() { # [N] → n
  n=${1:-3}
  if ! is_number "$n" || [ "$n" -lt 1 ] || [ "$n" -gt 32 ]; then
    echo "broker.sh: N must be in 1..32, got '$n'" >&2
    exit 2
  fi
  if [ $((cport + n - 1)) -gt 35535 ]; then
    echo "broker.sh: PORT+N-1 must be at most 35535" >&2
    exit 2
  fi
}

# cluster_node K: the environment of node K (call it in a subshell).
cluster_node() {
  if ! is_number "$1" || [ "$1" -lt 1 ]; then
    echo "broker.sh: K must be a node number from 1, got '$1'" >&2
    exit 2
  fi
  mkdir -p "$cdir/n$1"
  node_env "$cdir/n$1" $((cport + $1 - 1)) "$cepmd"
  own_epmd=0
  # In a container (BROKER_IMAGE) the node also sees DIR/.erlang.cookie.
  mount_dir=$cdir
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:+$RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS }+S 1:1"
}

# The node names in node 1's cluster_status "running_nodes", one per line;
# nothing if node 1 does not answer.
cluster_running() {
  (cluster_node 1 && ctl -q -t 10 cluster_status --formatter json 2>/dev/null) |
    sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tr -d '" '
}

# True when all n nodes are running in one cluster.
cluster_complete() {
  running=$(cluster_running)
  k=1
  while [ $k -le "$n" ]; do
    printf '%s\n' "$running" | grep -qx "warren-$((cport + k - 1))@localhost" || return 1
    k=$((k + 1))
  done
}

cluster_urls() {
  k=1
  while [ $k -le "$n" ]; do
    echo "amqp://guest:guest@127.0.0.1:$((cport + k - 1))/"
    k=$((k + 1))
  done
}

# Node K's VM and app, in its environment: start it unless its VM runs. A
# member whose app was stopped (cluster-ctl … stop_app) keeps its VM, and a
# second VM of the same name would fail on the dist port and then take the
# first one down with it, so that member only gets start_app.
cluster_boot_node() {
  p=$(beam_pid || true)
  if [ -z "$p" ]; then
    start >/dev/null
    return
  fi
  kill -CONT "$p" 2>/dev/null || true
  deadline=$(($(date +%s) + 60))
  until ctl -q -t 5 ping >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "broker.sh: node $node (pid $p) runs but does not answer; cluster-stop it" >&2
      return 1
    fi
    if ! kill -0 "$p" 2>/dev/null; then
      start >/dev/null
      return
    fi
    sleep 0.5
  done
  if ! answers; then
    ctl -q start_app >"$dir/log/start_app.log" 2>&1 || true
    ctl -q -t 60 await_startup >"$dir/log/await.log" 2>&1
  fi
}

cluster_start() {
  cluster_size "$@"
  if cluster_complete; then
    cluster_urls
    return 0
  fi
  new_cookie "$cdir/.erlang.cookie"
  # Every node boots at once: faster, and a cluster stopped as a whole needs
  # it (a restarted member waits for its peers before it completes its boot).
  pids=
  k=1
  while [ $k -le "$n" ]; do
    mkdir -p "$cdir/n$k"
    ln -sf ../.erlang.cookie "$cdir/n$k/.erlang.cookie"
    (cluster_node $k && cluster_boot_node) &
    pids="$pids $!"
    k=$((k + 1))
  done
  failed=0
  for p in $pids; do
    wait "$p" || failed=1
  done
  if [ $failed = 1 ]; then
    echo "broker.sh: not every node of the cluster started; stopping it" >&2
    cluster_stop "$n" >/dev/null 2>&1 || true
    return 1
  fi
  # Nodes 2..N join node 1 unless they already know it (a restarted cluster).
  # join_cluster resets the joining node itself.
  k=2
  while [ $k -le "$n" ]; do
    if ! (cluster_node $k && ctl -q cluster_status --formatter json 2>/dev/null) | grep -q "\"$cnode1\""; then
      if ! (cluster_node $k && ctl -q stop_app && ctl -q join_cluster "$cnode1" && ctl -q start_app) >"$cdir/n$k/log/join.log" 2>&1; then
        echo "broker.sh: node $k (warren-$((cport + k - 1))@localhost) could not join $cnode1; see $cdir/n$k/log/join.log" >&2
        cat "$cdir/n$k/log/join.log" >&2 || true
        return 1
      fi
    fi
    k=$((k + 1))
  done
  deadline=$(($(date +%s) + 60))
  until cluster_complete; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "broker.sh: cluster_status of $cnode1 does not show all $n nodes running within 60 s:" >&2
      (cluster_node 1 && ctl cluster_status) >&2 || true
      return 1
    fi
    sleep 0.5
  done
  cluster_urls
}

cluster_stop() {
  cluster_size "$@"
  pids=
  k=1
  while [ $k -le "$n" ]; do
    (cluster_node $k && stop) &
    pids="$pids $!"
    k=$((k + 1))
  done
  for p in $pids; do
    wait "$p" || true
  done
  # The shared epmd, now that no node is registered with it.
  (cluster_node 1 && epmd -port "$cepmd" -kill >/dev/null 2>&1) || true
  return 0
}

case $cmd in
start | stop | ctl | pid) node_env "$dir" "$port" $((port + 30000)) ;;
esac

case $cmd in
start) start ;;
stop) stop ;;
ctl) ctl "$@" ;;
pid) beam_pid ;;
cluster-start) cluster_start "$@" ;;
cluster-stop) cluster_stop "$@" ;;
cluster-ctl)
  [ $# -ge 1 ] || usage
  k=$1
  shift
  cluster_node "$k"
  ctl "$@"
  ;;
cluster-pid)
  [ $# -ge 1 ] || usage
  cluster_node "$1"
  beam_pid
  ;;
*) usage ;;
esac
