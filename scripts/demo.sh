#!/usr/bin/env bash
# The main job, end to end: build huxley, then validate every example and
# print its JSON Schema. (plan, apply and describe against the local AWS
# emulator join this script when those verbs land.)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh

cargo build --locked
huxley="${CARGO_TARGET_DIR:-target}/debug/huxley"

for example in examples/*/huxley.toml; do
  "$huxley" validate -f "$example"
done
"$huxley" schema > /dev/null
echo "demo: all examples are valid"
