#!/usr/bin/env bash
# The main job, end to end, on the local AWS emulator: build huxley,
# validate and compile every example, then for examples/blog: plan, apply,
# plan again (no changes), with the emulator started and stopped here.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
# shellcheck source=scripts/emulator.sh
source scripts/emulator.sh
huxley_setup_rust
huxley_setup_venv

cargo build --locked
huxley="${CARGO_TARGET_DIR:-target}/debug/huxley"

for example in examples/*/; do
  example=${example%/}
  name=${example#examples/}
  "$huxley" validate -f "$example/huxley.toml"
  "$huxley" build -f "$example/huxley.toml" -o "out/$name"
done

export AWS_REGION=us-west-2
huxley_emulator_start
huxley_emulator_zone acme.example.com

step() { printf '\n==> %s\n' "$*"; }
step "huxley plan -f examples/blog/huxley.toml"
"$huxley" plan -f examples/blog/huxley.toml --verbose
step "huxley apply -f examples/blog/huxley.toml --yes"
"$huxley" apply -f examples/blog/huxley.toml --yes
step "huxley plan -f examples/blog/huxley.toml --detailed-exitcode (expect: no changes)"
"$huxley" plan -f examples/blog/huxley.toml --detailed-exitcode --verbose
echo
echo "demo: examples built under out/; examples/blog planned, applied and in sync on the emulator"
