#!/usr/bin/env bash
# Sourced by the demo and the benchmarks: the local AWS emulator (moto, from
# .venv/) on 127.0.0.1, on a free port, stopped when the sourcing script
# exits. Exports what the AWS SDK needs to reach it.
#   huxley_emulator_start        start it, export AWS_ENDPOINT_URL and dummy credentials
#   huxley_emulator_zone NAME    create a public hosted zone, as the user's own
set -euo pipefail

# Whether a GET of the URL answers 2xx (Python's urllib: no curl needed).
huxley_http_ok() {
  .venv/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" > /dev/null 2>&1
}

huxley_emulator_start() {
  local port
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  MOTO_ACM_VALIDATION_WAIT=2 MOTO_AMIS_PATH="$PWD/tests/emulator/flatcar-amis.json" .venv/bin/moto_server -H 127.0.0.1 -p "$port" > "${TMPDIR:-/tmp}/huxley-moto-$port.log" 2>&1 &
  HUXLEY_EMULATOR_PID=$!
  trap 'kill "$HUXLEY_EMULATOR_PID" 2>/dev/null || true' EXIT
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
  export AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN
  local tries=0
  until huxley_http_ok "$AWS_ENDPOINT_URL/moto-api/"; do
    tries=$((tries + 1))
    if [[ $tries -gt 150 ]]; then
      echo "error: the emulator did not start; its log:" >&2
      cat "${TMPDIR:-/tmp}/huxley-moto-$port.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "emulator: moto on $AWS_ENDPOINT_URL"
}

huxley_emulator_zone() {
  AWS_DEFAULT_REGION="${AWS_REGION:-us-east-1}" .venv/bin/python - "$1" <<'PY'
import sys
import boto3
zone = boto3.client("route53").create_hosted_zone(Name=sys.argv[1], CallerReference="huxley-" + sys.argv[1])
print("emulator: public zone", sys.argv[1], zone["HostedZone"]["Id"])
PY
}
