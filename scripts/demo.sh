#!/usr/bin/env bash
# The main job, end to end: build huxley, validate every example and compile
# each into its artifacts under out/<example>/. (plan, apply and describe
# against the local AWS emulator join this script when those verbs land.)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
huxley_setup_rust

cargo build --locked
huxley="${CARGO_TARGET_DIR:-target}/debug/huxley"

for example in examples/*/; do
  example=${example%/}
  name=${example#examples/}
  "$huxley" validate -f "$example/huxley.toml"
  "$huxley" build -f "$example/huxley.toml" -o "out/$name"
done
echo "demo: every example is valid and built under out/"
