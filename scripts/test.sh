#!/usr/bin/env bash
# The whole test suite, installing what it needs: formatting, lints, every
# cargo test, then the field's validators on the generated artifacts.
# CI runs exactly this (through .ci/run) on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
huxley_setup_rust
huxley_setup_tools
huxley_setup_venv
# Real containers: dockerd and a registry on 127.0.0.1:5000, stopped at
# exit if this script started them.
huxley_setup_containers
# The node test's systemd machine (debootstrap once, then cached).
huxley_node_image

step() { printf '\n==> %s\n' "$*"; }
log=$(mktemp)
trap 'rm -f "$log"; huxley_stop_started' EXIT

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets --features e2e -- -D warnings"
cargo clippy --all-targets --features e2e --locked -- -D warnings

step "cargo test: the fast tier, then the end-to-end tests (emulator, sshd, Docker and the registry)"
huxley_static_service
cargo test --locked --features e2e -- --include-ignored 2>&1 | tee -a "$log"

step "shellcheck on the project's own scripts"
shellcheck scripts/*.sh .ci/run

step "cfn-lint, checkov, shellcheck, systemd-analyze and the Ignition schema on the goldens"
status=0
bash scripts/check-artifacts.sh 2>&1 | tee -a "$log" || status=$?

# One closing line for the whole suite: cargo's test binaries and the
# artifact checks.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     /^artifact checks:/ { p += $3; f += $5 }
     END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
