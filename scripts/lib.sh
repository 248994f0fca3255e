# Shared by scripts/test and scripts/run-demo (sourced, bash). Installs what
# a fresh Debian bookworm lacks, builds warren, small helpers.

# shellcheck shell=bash

WARREN_DEB_PACKAGES=(build-essential cmake pkg-config librabbitmq-dev libuv1-dev libwslay-dev
  node-llhttp libmsgpack-dev libjansson-dev libinih-dev libssl-dev libcmocka-dev rabbitmq-server)

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Installs the missing Debian packages (only those), plus Debian's nodejs and
# npm when no `node` is on the PATH at all: a newer Node installed elsewhere
# (e.g. /usr/bin/node 20 from NodeSource) is kept, never shadowed.
# ensure_deps [extra packages…]: scripts/test adds chromium for the browser tests.
ensure_deps() {
  local missing=() p
  for p in "${WARREN_DEB_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs npm)
  elif ! command -v npm >/dev/null 2>&1; then
    die "node is installed ($(command -v node)) but npm is not; install npm for that Node"
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || die "missing packages (${missing[*]}) and not root; install them first"
      sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    # The Debian package starts its default node at install time; our
    # scripts use private nodes, so stop it (if systemd is not running this
    # is a no-op).
    if [[ " ${missing[*]} " == *" rabbitmq-server "* ]]; then
      "${sudo[@]}" service rabbitmq-server stop >/dev/null 2>&1 || true
    fi
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    log "warning: Node $(node --version) found; the integration tests are written for Node >= 20"
  fi
}

# build_warren DIR [cmake args…]: configure and build into DIR.
build_warren() {
  local dir=$1
  shift
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  log "building into $dir"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

# amqp_answers HOST PORT: true when something accepts TCP there.
tcp_answers() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# http_status HOST PORT PATH: prints the HTTP status code (or nothing).
http_status() {
  local line
  line=$( (
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
    head -n 1 <&3
  ) 2>/dev/null) || return 0
  printf '%s\n' "$line" | awk '{print $2}'
}

# tap_counts FILE: "PASS FAIL SKIP" from the last summary of node --test's
# TAP output in FILE (0 for what it lacks).
tap_counts() {
  local p f k
  p=$(sed -nE 's/^# pass ([0-9]+)$/\1/p' "$1" | tail -1)
  f=$(sed -nE 's/^# fail ([0-9]+)$/\1/p' "$1" | tail -1)
  k=$(sed -nE 's/^# skipped ([0-9]+)$/\1/p' "$1" | tail -1)
  echo "${p:-0} ${f:-0} ${k:-0}"
}
