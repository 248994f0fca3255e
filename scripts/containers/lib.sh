# Sourced (bash) by scripts/test-containers and scripts/test-rabbitmq4 after
# scripts/lib.sh: podman set up from Debian packages alone, and the images
# the compose stack names, built once from Debian packages and kept in
# podman's image store (no image registry is needed or reachable).

# shellcheck shell=bash

CONTAINERS_DIR=$root/scripts/containers
export CONTAINERS_CONF=$CONTAINERS_DIR/containers.conf
# Docker image format: the OCI format drops HEALTHCHECK.
export BUILDAH_FORMAT=docker
# Images this file builds carry this label (a real registry image under the
# same tag is used as it is, never replaced).
STANDIN_LABEL=org.warren.stand-in
DEBIAN_MIRROR=${WARREN_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# containers_setup: installs podman and friends when missing (root), checks
# podman runs a container. On failure prints why and returns 1: the caller
# skips with that message.
containers_setup() {
  local need=() p
  for p in podman podman-compose buildah runc debootstrap netavark aardvark-dns; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "not root and missing Debian packages: ${need[*]}"
      return 1
    fi
    log "installing: ${need[*]}"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >"$CT_LOGS/apt.log" 2>&1; then
      echo "apt-get install ${need[*]} failed: $(tail -n 3 "$CT_LOGS/apt.log" | tr '\n' ' ')"
      return 1
    fi
  fi
  if [ "$(id -u)" -ne 0 ]; then
    # Rootless podman would need subuids and debootstrap needs root.
    echo "not root: the base images are made with debootstrap, and the checks read container processes"
    return 1
  fi
  local out
  if ! out=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}' 2>&1); then
    echo "podman info fails: $out"
    return 1
  fi
  log "podman $(podman version --format '{{.Client.Version}}' 2>/dev/null), runtime and network: $out"
}

# base_image SUITE TAG [SLIM_TAG]: debootstrap --variant=minbase SUITE,
# imported as TAG, unless TAG exists; SLIM_TAG, as the registry's -slim
# images are made: the same without documentation, manual pages and
# translations, and dpkg told to leave them out of later installs.
base_image() {
  local suite=$1
  shift
  if podman image exists "$1" && { [ $# -lt 2 ] || podman image exists "$2"; }; then
    return 0
  fi
  local t0=$SECONDS dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/warren-rootfs-$suite.XXXXXX")
  log "debootstrap --variant=minbase $suite (for $*)"
  if ! debootstrap --variant=minbase "$suite" "$dir" "$DEBIAN_MIRROR" >"$CT_LOGS/debootstrap-$suite.log" 2>&1; then
    tail -n 20 "$CT_LOGS/debootstrap-$suite.log" >&2
    rm -rf "$dir"
    return 1
  fi
  # Like the registry's images: no package lists or downloaded packages.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
  tar -C "$dir" -c . | podman import -q --change "CMD [\"bash\"]" - "$1" >/dev/null
  if [ $# -ge 2 ]; then
    rm -rf "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
      >"$dir/etc/dpkg/dpkg.cfg.d/slim"
    tar -C "$dir" -c . | podman import -q --change "CMD [\"bash\"]" - "$2" >/dev/null
  fi
  rm -rf "$dir"
  log "$suite imported as $* in $((SECONDS - t0)) s"
}

# standin TAG DIR: builds DIR/Dockerfile as TAG, unless TAG is an image that
# is not ours (then it is used as it is). An unchanged Dockerfile rebuilds
# from podman's layer cache in a second.
standin() {
  local tag=$1 ctx=$2 label
  if podman image exists "$tag"; then
    label=$(podman image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$tag" 2>/dev/null || true)
    if [ -z "$label" ] || [ "$label" = "<no value>" ]; then
      log "$tag: using the image already there (not a stand-in)"
      return 0
    fi
  fi
  local t0=$SECONDS
  if ! podman build -q --pull=never --label "$STANDIN_LABEL=$ctx" -t "$tag" "$root/$ctx" \
    >"$CT_LOGS/build-$(basename "$ctx").log" 2>&1; then
    tail -n 30 "$CT_LOGS/build-$(basename "$ctx").log" >&2
    return 1
  fi
  log "$tag built from $ctx in $((SECONDS - t0)) s"
}

# The registry images the compose files name, as stand-ins from Debian
# packages; Grafana is not packaged, so the stack runs without it.
RABBITMQ_IMAGE=docker.io/library/rabbitmq:4.0.5-management
containers_images() {
  # The two debootstraps side by side (about 30 s each, mostly waiting).
  local pid rc=0
  base_image trixie docker.io/library/debian:trixie &
  pid=$!
  base_image bookworm docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim || rc=1
  wait "$pid" || rc=1
  [ $rc = 0 ] &&
    standin "$RABBITMQ_IMAGE" scripts/containers/rabbitmq &&
    standin docker.io/prom/prometheus:v2.42.0 scripts/containers/prometheus &&
    standin docker.io/library/nginx:1.25 scripts/containers/nginx
}
