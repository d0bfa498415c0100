#!/usr/bin/env bash
# The main job, end to end, on the local AWS emulator: build huxley,
# validate and compile every example, then for examples/blog: plan, apply,
# plan again (no changes), run its control plane (a leader and a standby
# kick server) and a node agent on each of its three nodes, `git push` the
# web service (built on push) through the leader's hook server, wait until
# every replica is placed and healthy, and describe the cluster. The
# emulator, the kick servers, the hook server, the agents (and their
# replicas), dockerd and the registry are started and stopped here.
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
step "huxley secrets set blog DATABASE_URL - (web reads it; plan refuses a missing one)"
printf '%s\n' "postgres://blog:demo-only@db.acme.internal/blog" |
  "$huxley" secrets set blog DATABASE_URL - -f examples/blog/huxley.toml
"$huxley" secrets list blog -f examples/blog/huxley.toml
step "huxley plan -f examples/blog/huxley.toml"
"$huxley" plan -f examples/blog/huxley.toml --verbose
step "huxley apply -f examples/blog/huxley.toml --yes"
"$huxley" apply -f examples/blog/huxley.toml --yes
step "huxley plan -f examples/blog/huxley.toml --detailed-exitcode (expect: no changes)"
"$huxley" plan -f examples/blog/huxley.toml --detailed-exitcode --verbose

step "the control plane: two kick servers (a leader and a standby), tokens from SSM"
# On AWS every node's containers get a /24 of 100.64.0.0/16 routed to the
# node; here the nodes share this machine, so their subnets come from
# 127.77.0.0/16, which loopback answers for.
work=$(mktemp -d)
sed 's|container-range = "100.64.0.0/16"|container-range = "127.77.0.0/16"|' out/blog/kick/kick.toml > "$work/kick.toml"
free_port() { .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  kill "$HUXLEY_EMULATOR_PID" 2>/dev/null || true
  huxley_remove_build_sandbox
  huxley_stop_started
  rm -rf "$work"
}
trap cleanup EXIT
declare -A internal external
for kick in a b; do
  internal[$kick]=$(free_port)
  external[$kick]=$(free_port)
  # Deployed images come from the local registry (standing in for the
  # account's ECR): kick refuses images from any other.
  "$huxley" kick serve --config "$work/kick.toml" --listen "127.0.0.1:${internal[$kick]}" \
    --external "127.0.0.1:${external[$kick]}" --state-dir "$work/kick-$kick" --advertise 127.0.0.1 \
    --registry 127.0.0.1:5000 > "$work/kick-$kick.log" 2>&1 &
  pids+=($!)
done
leader=""
until [[ -n "$leader" ]]; do
  sleep 0.5
  for kick in a b; do
    if .venv/bin/python -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).read().startswith(b"ok: leader") else 1)' \
      "http://127.0.0.1:${internal[$kick]}/healthz" 2>/dev/null; then
      leader=$kick
    fi
  done
done
echo "kick-$leader leads; the other stands by"
sed 's/^/  /' "$work/kick-a.log" "$work/kick-b.log"

step "three node agents, one per node the emulator launched for the node group; replicas run as processes"
cargo build --locked --quiet --bin huxley-test-service
service="${CARGO_TARGET_DIR:-target}/debug/huxley-test-service"
# Each node, and its instance role's session (named after the instance, as
# EC2 gives it), which the agent proves itself to kick with.
mapfile -t nodes < <(.venv/bin/python - <<'PY'
import boto3
reservations = boto3.client("ec2", region_name="us-west-2").describe_instances(
    Filters=[{"Name": "tag:huxley:cluster", "Values": ["acme"]},
             {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
# The node group's machines, not the control plane's.
def group(instance):
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("huxley:role")
role = next(r["PhysicalResourceId"] for r in boto3.client("cloudformation", region_name="us-west-2")
            .list_stack_resources(StackName="huxley-acme")["StackResourceSummaries"] if r["LogicalResourceId"] == "NodeRole")
sts = boto3.client("sts", region_name="us-west-2")
for node in sorted(i["InstanceId"] for r in reservations for i in r["Instances"] if group(i) == "node"):
    c = sts.assume_role(RoleArn=f"arn:aws:iam::123456789012:role/{role}", RoleSessionName=node)["Credentials"]
    print(node, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
PY
)
if [ "${#nodes[@]}" -ne 3 ]; then
  echo "error: expected the node group's 3 nodes and their credentials, found ${#nodes[@]}" >&2
  exit 1
fi
for i in "${!nodes[@]}"; do
  read -r node key secret token <<<"${nodes[$i]}"
  # On a node, the identity comes from the instance metadata; here, flags.
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_SESSION_TOKEN=$token \
  "$huxley" node run --cluster acme --kick "http://127.0.0.1:${internal[a]},http://127.0.0.1:${internal[b]}" \
    --node "$node" --address "10.40.0.$((10 + i))" --runtime processes --state-dir "$work/node-$i" \
    --exec "blog.web=$service" --exec "blog.api=$service" --exec "blog.redis=$service" \
    > "$work/node-$i.log" 2>&1 &
  pids+=($!)
  echo "node agent for $node"
done

step "git push deploys blog's web (built on push): the leader's hook server builds it with Docker, pushes it to a local registry, and kick rolls it out"
# The hook server follows the leader; on AWS the kick name points there and
# images go to ECR. Here: loopback, and a registry on 127.0.0.1:5000.
huxley_setup_containers
huxley_static_service
hook_port=$(free_port)
user=$(id -un)
ssh-keygen -q -t ed25519 -N "" -C demo -f "$work/pusher"
cp "$work/pusher.pub" "$work/keys"
"$huxley" hook serve --config "$work/kick.toml" --listen "127.0.0.1:$hook_port" --state-dir "$work/hook" \
  --keys "$work/keys" --user "$user" --kick-url "http://127.0.0.1:${internal[$leader]}" \
  --registry 127.0.0.1:5000 > "$work/hook.log" 2>&1 &
pids+=($!)
until grep -q "hook: serving git over SSH" "$work/hook.log"; do sleep 0.2; done
mkdir -p "$work/blog/web"
cp "$HUXLEY_STATIC_SERVICE" "$work/blog/web/service"
printf 'FROM scratch\nCOPY service /service\nENTRYPOINT ["/service"]\n' > "$work/blog/web/Containerfile"
git -C "$work/blog" init --quiet --initial-branch main
git -C "$work/blog" -c user.email=dev@acme.example -c user.name=Dev add -A
git -C "$work/blog" -c user.email=dev@acme.example -c user.name=Dev commit --quiet -m "blog's web"
echo "\$ huxley remote add acme -C $work/blog"
"$huxley" remote add acme -C "$work/blog"
# The cluster's kick name does not resolve here: the hook server's
# loopback address instead.
git -C "$work/blog" remote set-url huxley "ssh://$user@127.0.0.1:$hook_port/blog.git"
echo "\$ git push huxley main"
GIT_SSH_COMMAND="ssh -i $work/pusher -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR" \
  git -C "$work/blog" push huxley main 2>&1 | grep -v -e 'DEPRECATED' -e 'buildx' -e 'remote: huxley: *$' -e '---> ' -e 'intermediate container'
echo "\$ huxley deploys blog --cluster acme"
"$huxley" deploys blog --cluster acme

step "waiting until every replica is placed, running and healthy (health checks every 10 s, two passes needed)"
admin=$(.venv/bin/python -c 'import boto3; print(boto3.client("ssm", region_name="us-west-2").get_parameter(Name="/huxley/acme/tokens/admin", WithDecryption=True)["Parameter"]["Value"])')
export HUXLEY_TOKEN=$admin
deadline=$((SECONDS + 120))
until "$huxley" cluster describe acme --json --endpoint "https://127.0.0.1:${external[$leader]}" 2>/dev/null | .venv/bin/python -c '
import json, sys
services = json.load(sys.stdin)["apps"]["blog"]["services"]
ok = all(s["healthy"] == s["desired"] and all(p["state"] == "running" for p in s["placed"]) and len(s["placed"]) == s["desired"] for s in services.values())
sys.exit(0 if ok else 1)'; do
  if [[ $SECONDS -gt $deadline ]]; then
    echo "error: the replicas did not all become healthy within 120 s; the agents and kick servers said:" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
  fi
  sleep 2
done

step "huxley cluster describe acme (live from the leader, over TLS pinned to the certificate it published; admin token from SSM)"
"$huxley" cluster describe acme --endpoint "https://127.0.0.1:${external[$leader]}"

step "huxley run blog web -- printenv API_URL (a one-off run of web, placed by kick on a node with room, its output streamed back)"
"$huxley" run blog web --cluster acme --endpoint "https://127.0.0.1:${external[$leader]}" -- printenv API_URL
echo
echo "demo: examples built under out/; examples/blog planned, applied, in sync, deployed with git push, and running: a leader, a standby, three node agents, every replica placed and healthy, and a one-off run"
