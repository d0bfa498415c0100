#!/usr/bin/env bash
# Benchmark: the kick server under load, on loopback against the local AWS
# emulator (bench/kick.rs). Prints registrations per second, p50/p99
# registration latency and Route53 calls for 1,000 concurrent
# registrations, and GET /v1/cluster latency with 10,000 instances.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
huxley_setup_rust
huxley_setup_venv

cargo run --locked --quiet --example kick-load
