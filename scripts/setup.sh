#!/usr/bin/env bash
# Sourced by the project's scripts: checks the toolchain and installs what
# the build and tests need, pinned. Safe to run again: it installs only what
# is missing or out of date.
#   huxley_setup_rust    rustfmt and clippy; CI's target directory
#   huxley_setup_tools   shellcheck and systemd-analyze (Debian packages)
#   huxley_setup_venv    .venv/ with scripts/requirements.txt (PyPI)
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
