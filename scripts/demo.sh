#!/usr/bin/env bash
# The main job, end to end, on the local AWS emulator: build huxley,
# validate and compile every example, then for examples/blog: plan, apply,
# plan again (no changes), run the cluster's kick server, register one
# instance with it, and describe the cluster. The emulator and the kick
# server are started and stopped here.
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

step "huxley kick serve (the cluster's agent, here on 127.0.0.1, tokens from SSM) and one registered instance"
state=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
external=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$huxley" kick serve --config out/blog/kick/kick.toml --listen "127.0.0.1:$port" \
  --external "127.0.0.1:$external" --state-dir "$state" &
kick=$!
trap 'kill "$kick" "$HUXLEY_EMULATOR_PID" 2>/dev/null || true; rm -rf "$state"' EXIT
until huxley_http_ok "http://127.0.0.1:$port/healthz"; do sleep 0.2; done
# As a node agent would: blog.web's token from SSM (apply created it), on
# one of the cluster's nodes (the emulator launched them for the node group).
.venv/bin/python - "http://127.0.0.1:$port/v1/instances" <<'PY'
import json, sys, urllib.request
import boto3
token = boto3.client("ssm", region_name="us-west-2").get_parameter(Name="/huxley/acme/tokens/blog/web", WithDecryption=True)["Parameter"]["Value"]
reservations = boto3.client("ec2", region_name="us-west-2").describe_instances(
    Filters=[{"Name": "tag:huxley:cluster", "Values": ["acme"]}, {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
node = sorted(i["InstanceId"] for r in reservations for i in r["Instances"])[0]
body = {"app": "blog", "service": "web", "node": node, "address": "10.40.1.5", "port": 80, "version": "demo"}
request = urllib.request.Request(sys.argv[1], data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
print("registered:", urllib.request.urlopen(request, timeout=30).read().decode())
PY
sleep 2

step "huxley cluster describe acme (live, over TLS pinned to the certificate the kick server published; admin token from SSM)"
"$huxley" cluster describe acme --endpoint "https://127.0.0.1:$external"
echo
echo "demo: examples built under out/; examples/blog planned, applied, in sync, and described on the emulator"
