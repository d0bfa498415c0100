#!/usr/bin/env bash
# Sourced by the project's scripts: checks the toolchain and installs what
# the build and tests need, pinned. Safe to run again: it installs only what
# is missing or out of date.
#   huxley_setup_rust    rustfmt and clippy; CI's target directory
#   huxley_setup_tools   shellcheck and systemd-analyze (Debian packages)
#   huxley_setup_venv    .venv/ with scripts/requirements.txt (PyPI)
#   huxley_node_image    the node test's systemd machine (Debian, debootstrap)
set -euo pipefail

huxley_setup_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust from https://rustup.rs" >&2
    exit 2
  fi
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  # CI builds in a fresh clone each time; a target directory outside the
  # clone lets later runs on the same machine reuse the build.
  if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="${HOME}/.cache/huxley/target"
    mkdir -p "$CARGO_TARGET_DIR"
  fi
}

# apt-get as root, or through sudo when there is one.
huxley_apt() {
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "error: need root (or sudo) to install: $*" >&2
      exit 2
    }
    sudo=(sudo)
  fi
  if [[ -z "${HUXLEY_APT_UPDATED:-}" ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    export HUXLEY_APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

huxley_setup_tools() {
  local missing=()
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  # The hook server's git remote: sshd, and ssh for the pushes of the tests.
  [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "setup: installing ${missing[*]} (Debian)"
    huxley_apt "${missing[@]}"
  fi
}

huxley_setup_venv() {
  local requirements=scripts/requirements.txt stamp=.venv/.requirements.sha256 want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ -x .venv/bin/python && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  echo "setup: installing $(grep -cv '^#' "$requirements") Python tools into .venv/ (PyPI, pinned)"
  if ! python3 -m venv .venv >/dev/null 2>&1; then
    huxley_apt python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}

# Docker (Debian's docker.io) and a local registry (Debian's
# docker-registry) for the tests that run real containers. Starts dockerd
# and the registry on 127.0.0.1:5000 when they are not running, and stops
# at exit what it started. Exports HUXLEY_REGISTRY.
#   huxley_setup_containers
huxley_setup_containers() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "setup: installing ${missing[*]} (Debian)"
    huxley_apt "${missing[@]}"
  fi
  HUXLEY_STARTED_PIDS=${HUXLEY_STARTED_PIDS:-}
  local state="${TMPDIR:-/tmp}/huxley-containers"
  mkdir -p "$state"
  if ! docker info >/dev/null 2>&1; then
    echo "setup: starting dockerd (log: $state/dockerd.log)"
    # The replicas' units log through Docker's awslogs driver, which runs
    # in dockerd: it signs with these (the emulator takes any), and each
    # test's node points it at that test's emulator (awslogs-endpoint).
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
      dockerd > "$state/dockerd.log" 2>&1 &
    HUXLEY_STARTED_PIDS="$HUXLEY_STARTED_PIDS $!"
    huxley_wait_for dockerd "$state/dockerd.log" 150 docker info
  elif pid=$(pgrep -xo dockerd) && ! tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -q '^AWS_ACCESS_KEY_ID='; then
    echo "setup: warning: the running dockerd has no AWS_ACCESS_KEY_ID in its environment: containers that log through awslogs will not start; stop it and let this script start one" >&2
  fi
  if ! huxley_registry_up; then
    echo "setup: starting a registry on 127.0.0.1:5000 (log: $state/registry.log)"
    mkdir -p "$state/registry"
    cat > "$state/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $state/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
    docker-registry serve "$state/registry.yml" > "$state/registry.log" 2>&1 &
    HUXLEY_STARTED_PIDS="$HUXLEY_STARTED_PIDS $!"
    huxley_wait_for "the registry" "$state/registry.log" 100 huxley_registry_up
  fi
  export HUXLEY_REGISTRY=127.0.0.1:5000
}

# Waits until COMMAND succeeds, polling every 0.2 s at most TRIES times;
# then fails with the tail of LOG.
#   huxley_wait_for NAME LOG TRIES COMMAND...
huxley_wait_for() {
  local name=$1 log=$2 limit=$3 tries=0
  shift 3
  until "$@" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [[ $tries -gt $limit ]]; then
      echo "error: $name did not start; its log:" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

# Whether the registry answers its API on 127.0.0.1:5000.
huxley_registry_up() {
  python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=2)' >/dev/null 2>&1
}

# Removes what a hook server made on this host for its builds: the
# huxley-build network and its bridge's firewall rules (src/hook/sandbox.rs).
huxley_remove_build_sandbox() {
  local rule
  docker network rm huxley-build >/dev/null 2>&1 || true
  while iptables -w -D INPUT -i hx-build0 -j REJECT 2>/dev/null; do :; done
  while ip6tables -w -D INPUT -i hx-build0 -j REJECT 2>/dev/null; do :; done
  iptables -w -S DOCKER-USER 2>/dev/null | grep -- '-i hx-build0' | sed 's/^-A /-D /' |
    while read -r rule; do
      # shellcheck disable=SC2086 # the rule's words, as iptables printed them
      iptables -w $rule 2>/dev/null || true
    done
  return 0
}

# Stops what huxley_setup_containers started (for an EXIT trap).
huxley_stop_started() {
  local pid
  for pid in ${HUXLEY_STARTED_PIDS:-}; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in ${HUXLEY_STARTED_PIDS:-}; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  done
}

# The test service, linked statically so it runs in a `FROM scratch`
# image; exports HUXLEY_STATIC_SERVICE.
huxley_static_service() {
  local target="${CARGO_TARGET_DIR:-target}"
  cargo rustc --quiet --locked --bin huxley-test-service -- -C target-feature=+crt-static
  mkdir -p "$target/static"
  cp "$target/debug/huxley-test-service" "$target/static/huxley-test-service"
  export HUXLEY_STATIC_SERVICE="$PWD/$target/static/huxley-test-service"
  [[ "$target" = /* ]] && export HUXLEY_STATIC_SERVICE="$target/static/huxley-test-service"
  return 0
}

# The node test's machine: a Debian rootfs with systemd as PID 1 (made once
# with debootstrap from Debian's archive, cached under ~/.cache/huxley),
# imported into Docker as huxley-test-node:<key>; exports
# HUXLEY_NODE_IMAGE. What a Flatcar node has that the test needs: systemd,
# OpenSSH's sshd (the hook server's), git, iptables (the hook server's
# build network rules), the docker CLI (bind-mounted from the host by the
# test), and a docker.service (a stand-in: the test's
# node uses the host's Docker through its socket).
huxley_node_image() {
  local packages="systemd,systemd-sysv,dbus,openssh-server,git,ca-certificates,iproute2,procps,iptables"
  local key cache rootfs image
  key=$(printf '%s bookworm 1' "$packages" | sha256sum | cut -c1-12)
  image="huxley-test-node:$key"
  export HUXLEY_NODE_IMAGE="$image"
  if docker image inspect "$image" >/dev/null 2>&1; then
    return
  fi
  cache="${HOME}/.cache/huxley/node-rootfs-$key.tar"
  if [[ ! -f "$cache" ]]; then
    command -v debootstrap >/dev/null 2>&1 || huxley_apt debootstrap
    rootfs=$(mktemp -d)
    echo "setup: making the node test's Debian rootfs with debootstrap (once; log: $rootfs.log)"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" \
      http://deb.debian.org/debian > "$rootfs.log" 2>&1 || {
      tail -20 "$rootfs.log" >&2
      exit 1
    }
    # The node's own sshd is not part of the test (it would take the
    # host's port 22 on the host's network).
    ln -sf /dev/null "$rootfs/etc/systemd/system/ssh.service"
    ln -sf /dev/null "$rootfs/etc/systemd/system/ssh.socket"
    cat > "$rootfs/etc/systemd/system/docker.service" <<'UNIT'
[Unit]
Description=Docker (the host's, through its socket: a stand-in for the node's)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
UNIT
    ln -sf /etc/systemd/system/docker.service "$rootfs/etc/systemd/system/multi-user.target.wants/docker.service"
    mkdir -p "$(dirname "$cache")"
    tar -C "$rootfs" -cf "$cache.tmp" .
    mv "$cache.tmp" "$cache"
    rm -rf "$rootfs" "$rootfs.log"
  fi
  docker import "$cache" "$image" >/dev/null
}
