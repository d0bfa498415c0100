#!/usr/bin/env bash
# The whole test suite, installing what it needs: formatting, lints, and
# every test. CI runs exactly this (through .ci/run) on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked
