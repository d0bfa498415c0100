#!/usr/bin/env bash
# Benchmark: huxley plan for a 1,000-service config (50 apps x 20) against
# the local AWS emulator. Prints wall time and AWS call count for a plan on
# an empty account, an apply, and a plan on the applied cluster. The call
# count must not grow with the number of services.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
# shellcheck source=scripts/emulator.sh
source scripts/emulator.sh
huxley_setup_rust
huxley_setup_venv

cargo build --locked --quiet
huxley="${CARGO_TARGET_DIR:-target}/debug/huxley"
work=$(mktemp -d)
trap 'rm -rf "$work"; kill "${HUXLEY_EMULATOR_PID:-0}" 2>/dev/null || true' EXIT
cargo run --locked --quiet --example synth -- 50 20 > "$work/huxley.toml"

export AWS_REGION=us-west-2 HUXLEY_NODE_BINARY="$work/node-binary"
echo '#!/bin/sh' > "$HUXLEY_NODE_BINARY"
huxley_emulator_start > /dev/null
huxley_emulator_zone synth.example.com > /dev/null

measure() {
  local label=$1
  shift
  local start end calls
  start=$(date +%s%N)
  "$huxley" "$@" -f "$work/huxley.toml" --verbose > "$work/out" 2> "$work/err" || true
  end=$(date +%s%N)
  calls=$(grep -o 'AWS calls: [0-9]*' "$work/err" | grep -o '[0-9]*$' || echo "?")
  printf '%-34s %8.0f ms  %4s AWS calls\n' "$label" "$(((end - start) / 1000000))" "$calls"
}

echo "1,000 services across 50 apps ($(wc -c < "$work/huxley.toml") bytes of huxley.toml), debug build, local emulator:"
measure "plan (empty account)" plan
measure "apply --yes" apply --yes
measure "plan (applied, no changes)" plan
