#!/usr/bin/env bash
# Benchmark: `git push` to every replica on the new release, for 10
# replicas on 3 node agents, on loopback with a trivial image (FROM
# scratch, the static test service), against the local AWS emulator.
# Starts Docker and a registry (and stops them), builds the static test
# service, and prints the build, rollout and push times of two pushes.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
huxley_setup_rust
huxley_setup_venv
huxley_setup_containers
trap huxley_stop_started EXIT
huxley_static_service

cargo test --locked --quiet --features e2e --test e2e ten_replicas_on_three_nodes -- --ignored --nocapture --test-threads 1 2>/dev/null | grep -E '^(git push|  commit)'
