#!/usr/bin/env bash
# Another route's latency while a function floods its stdout (issue 25, finding 10): wrk on a
# private mock route (c32, 10 s, keygate pinned to CPU 0 with its function processes, wrk to
# CPU 1), first alone, then while a function of the same keygate prints as fast as it can
# (`yes`, for its whole 30 s timeout). Prints both latency summaries and the p99 ratio.
#
# Usage: bench/flood.sh. Env: KEYGATE_BIN (target/release/keygate), DURATION (10s), CONNS (32),
#   PIN (1; 0 turns pinning off). Needs wrk (installed with apt when missing).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
KEYGATE_BIN="${KEYGATE_BIN:-$REPO/target/release/keygate}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-32}"
PIN="${PIN:-1}"
log() { printf '%s\n' "$*" >&2; }
[ -x "$KEYGATE_BIN" ] || { log "$KEYGATE_BIN missing: cargo build --release -p keygate"; exit 1; }
command -v wrk >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
server_pin=() client_pin=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  server_pin=(taskset -c 0) client_pin=(taskset -c 1)
fi

WORK="$(mktemp -d)"
chmod 0711 "$WORK"
KG_PID=""
cleanup() {
  [ -n "$KG_PID" ] && kill "$KG_PID" 2>/dev/null && wait "$KG_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -m 0755 "$WORK/svc"
# FLOOD_CMD: what the function runs instead (e.g. `sleep 100`, to see what a function that
# never answers costs without the output).
printf '#!/bin/sh\nexec %s\n' \
  "${FLOOD_CMD:-yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx}" \
  >"$WORK/svc/bootstrap"
chmod 0755 "$WORK/svc/bootstrap"
cat >"$WORK/svc/serverless.yml" <<'YML'
service: flood
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys: [flood-key]
functions:
  other:
    handler: unused
    events:
      - http: {path: other, method: get, private: true, integration: mock}
  flood:
    handler: flood
    timeout: 30
    package: {artifact: bootstrap}
    events:
      - http: {path: flood, method: get, private: true}
YML
export KEYGATE_DATA_DIR="$WORK/data"
KEY="$("$KEYGATE_BIN" deploy -c "$WORK/svc/serverless.yml" --json | python3 -c \
  'import json, sys; print(json.load(sys.stdin)["apiKeys"][0]["value"])')"
RUST_LOG=warn "${server_pin[@]}" "$KEYGATE_BIN" serve --listen 127.0.0.1:18095 \
  --admin-listen 127.0.0.1:18096 >"$WORK/serve.out" 2>"$WORK/serve.err" &
KG_PID=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null -H "x-api-key: $KEY" http://127.0.0.1:18095/dev/other && break
  sleep 0.1
done

run() {
  "${client_pin[@]}" wrk -t1 -c"$CONNS" -d2s -H "x-api-key: $KEY" \
    http://127.0.0.1:18095/dev/other >/dev/null
  "${client_pin[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "x-api-key: $KEY" \
    http://127.0.0.1:18095/dev/other
}
p99_ms() { # wrk --latency output -> p99 in ms
  awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
    print v }'
}
log "== the mock route alone"
alone="$(run)"
printf '%s\n' "$alone"
log "== the same while the function 'flood' prints as fast as it can"
curl -s -o /dev/null -H "x-api-key: $KEY" --max-time 40 http://127.0.0.1:18095/dev/flood &
sleep 1
flooded="$(run)"
printf '%s\n' "$flooded"
log "== flooding processes: $(pgrep -c -x yes || true); keygate's threads' CPU: $(ps -L -o time= -p "$KG_PID" | tr '\n' ' ')"
a="$(printf '%s\n' "$alone" | p99_ms)"
f="$(printf '%s\n' "$flooded" | p99_ms)"
dropped="$(grep -c 'bytes of output dropped' "$WORK/serve.err" || true)"
python3 -c "print(f'p99 alone {float(\"$a\"):.3f} ms, flooded {float(\"$f\"):.3f} ms: ' \
  f'{float(\"$f\") / float(\"$a\"):.2f}x ($dropped drop warnings)')"
