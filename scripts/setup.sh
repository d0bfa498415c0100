#!/usr/bin/env bash
# Sourced by the project's scripts: checks the toolchain and installs what
# the build and tests need. Safe to run again; it only installs what is
# missing.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust from https://rustup.rs" >&2
  exit 2
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

# CI builds in a fresh clone each time; a target directory outside the clone
# lets later runs on the same machine reuse the build.
if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
  export CARGO_TARGET_DIR="${HOME}/.cache/huxley/target"
  mkdir -p "$CARGO_TARGET_DIR"
fi
