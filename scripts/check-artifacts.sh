#!/usr/bin/env bash
# Runs the tools users trust on every golden build output:
#   cfn-lint (no errors or warnings), checkov and parliament (every IAM
#   policy, scripts/iam-lint.py) on the templates,
#   the git hooks through shellcheck, systemd-analyze verify on the units,
#   and the official Ignition 3.4 JSON Schema on the Ignition configs;
#   `huxley validate --format sarif` against the SARIF 2.1.0 schema.
# Also builds one example as YAML and checks it with cfn-lint and against
# the JSON template. Prints one line per check and a closing count; exits 1
# if any check failed. Expects scripts/setup.sh to have installed the tools.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

huxley="${CARGO_TARGET_DIR:-target}/debug/huxley"
venv=.venv/bin
passed=0
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() {
  local name=$1
  shift
  local out
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$name"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$name"
    printf '%s\n' "$out" | sed 's/^/      /'
  fi
}

# systemd-analyze reports parse problems as warnings with exit status 0, so
# any output at all is a failure. Template units are verified through an
# instance name, in a root holding the host's units and stubs for Docker and
# the huxley binary.
verify_units() {
  local units=$1 root
  root=$(mktemp -d "$work/root.XXXX")
  mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/bin" "$root/opt/bin"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  printf '[Unit]\nDescription=stub\n[Service]\nExecStart=/usr/bin/docker\n' > "$root/etc/systemd/system/docker.service"
  for bin in usr/bin/docker usr/bin/rm opt/bin/huxley; do
    printf '#!/bin/sh\n' > "$root/$bin"
    chmod +x "$root/$bin"
  done
  local names=()
  for unit in "$units"/*.service; do
    local name
    name=$(basename "$unit")
    case "$name" in
      *@.service) name="${name%@.service}@1.service" ;;
    esac
    cp "$unit" "$root/etc/systemd/system/$name"
    names+=("$root/etc/systemd/system/$name")
  done
  local out
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --root="$root" "${names[@]}" 2>&1)
  local status=$?
  if [[ $status -ne 0 || -n "$out" ]]; then
    printf '%s\n' "$out"
    return 1
  fi
}

# A JSON document against a JSON Schema: json_schema SCHEMA FILE.
json_schema() {
  "$venv/python" - "$1" "$2" <<'PY'
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
document = json.load(open(sys.argv[2]))
validator = jsonschema.validators.validator_for(schema)
validator.check_schema(schema)
errors = sorted(validator(schema).iter_errors(document), key=lambda e: list(e.path))
for error in errors:
    print("/".join(map(str, error.path)) + ": " + error.message)
sys.exit(1 if errors else 0)
PY
}

ignition_schema() {
  json_schema schemas/ignition-v3.4.schema.json "$1"
}

# `huxley validate --format sarif` against the SARIF 2.1.0 schema (OASIS),
# for a file with errors, one with warnings and a valid one.
sarif_schema() {
  local log="$work/validate.sarif"
  "$huxley" validate --format sarif -f "$1" > "$log" 2> /dev/null
  json_schema schemas/sarif-2.1.0.schema.json "$log"
}

yaml_matches_json() {
  "$venv/python" - "$1" "$2" <<'PY'
import json, sys
import yaml
class Loader(yaml.SafeLoader):
    pass
assert json.load(open(sys.argv[1])) == yaml.load(open(sys.argv[2]), Loader=Loader), "the YAML template differs from the JSON one"
PY
}

for golden in golden/*/; do
  golden=${golden%/}
  template="$golden/cloudformation/cluster.json"
  check "cfn-lint $template" "$venv/cfn-lint" --non-zero-exit-code warning "$template"
  check "checkov $template" "$venv/checkov" --quiet --compact --skip-download --framework cloudformation -f "$template"
  check "parliament (IAM) $template" "$venv/python" scripts/iam-lint.py "$template"
  for hook in "$golden"/hooks/*/pre-receive; do
    check "shellcheck $hook" shellcheck --shell=sh --severity=style "$hook"
  done
  check "systemd-analyze verify $golden/units" verify_units "$golden/units"
  check "ignition schema $golden/ignition/node.ign" ignition_schema "$golden/ignition/node.ign"
  check "ignition schema $golden/ignition/control.ign" ignition_schema "$golden/ignition/control.ign"
done

for file in tests/invalid/three-mistakes.toml tests/warnings/env-looks-secret.toml examples/blog/huxley.toml; do
  check "sarif schema: validate --format sarif $file" sarif_schema "$file"
done

"$huxley" build -f examples/blog/huxley.toml -o "$work/yaml" --format yaml > /dev/null
check "cfn-lint examples/blog as YAML" "$venv/cfn-lint" --non-zero-exit-code warning "$work/yaml/cloudformation/cluster.yaml"
check "YAML template equals the JSON one" yaml_matches_json golden/blog/cloudformation/cluster.json "$work/yaml/cloudformation/cluster.yaml"

printf '\nartifact checks: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
