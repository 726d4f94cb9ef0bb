#!/usr/bin/env bash
# keygate against the peers a user would pick instead, in one run on this machine:
#   upstream   nginx answering {"candidates":[]} on :18080 (the no-gateway ceiling)
#   nginx      nginx as an API-key gateway (map of the keys, limit_req, keep-alive pool) on :18081
#   sls        serverless-offline 13 with the Node handler of the same route on :18090
#   keygate    `keygate serve` on :18085 (RUST_LOG=warn: access log off, as nginx's): the proxy
#              route, the 429 route, then the proxy and 403 routes with the default access log
#              on (peer keygate-log) interleaved with log off (keygate-nolog), the Rust function
#              route (the example's candidates.list, lambda_http), and serverless-offline's own
#              Node handler (also as a managed-instances function, and the same in Python) on
#              the machine's node / python3
# Each case is one wrk run with the same settings; servers on SERVER_CPU, wrk on CLIENT_CPU.
#
# Usage: bench/run.sh [--quick] [--no-setup]
#   --quick     a few seconds per case (CI runs this so the harness never rots): checks that
#               every case ran, answered the expected status and produced numbers; never a
#               speed threshold
#   --no-setup  skip installing packages (apt, npm) and building keygate
# Env knobs: WORK (scratch dir, default target/bench), KEY_COUNT (10000), DURATION (10s),
#   WARMUP (3s), CONNS ("32 128"), DENY_CONNS (32), LOG_ROUNDS (3; quick 1), PEERS ("upstream nginx sls keygate"),
#   RUN_DIR (where the data directory and the functions' database go, default
#   /tmp/keygate-bench-<uid>: the function user must reach them),
#   SERVER_CPU / CLIENT_CPU (0 / 1), PIN (1; 0 = no CPU pinning), KEYGATE_BIN
#   (target/release/keygate), OUT (results dir, default $WORK/results/<UTC time>).
# Output: $OUT/results.md (the tables, also printed), $OUT/results.tsv, raw wrk output.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
parse_args "$@"
WORK="${WORK:-$REPO/target/bench}"
KEY_COUNT="${KEY_COUNT:-10000}"
if [ "$QUICK" = 1 ]; then DURATION="${DURATION:-2s}" WARMUP="${WARMUP:-1s}"; fi
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
CONNS="${CONNS:-32 128}"
DENY_CONNS="${DENY_CONNS:-32}"
if [ "$QUICK" = 1 ]; then LOG_ROUNDS="${LOG_ROUNDS:-1}"; fi
LOG_ROUNDS="${LOG_ROUNDS:-3}"
PEERS="${PEERS:-upstream nginx sls keygate}"
KEYGATE_LOG="${KEYGATE_LOG:-warn}"
CANDIDATE_BIN="${CANDIDATE_BIN:-$REPO/target/$PROFILE/candidate-service}"
SLS_VERSION=3.40.0
SLS_OFFLINE_VERSION=13.10.1
OUT="${OUT:-$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)}"
REPORT_LUA="$HERE/report.lua"
TSV="$OUT/results.tsv"
FAILED=()
mkdir -p "$OUT" "$WORK"/{run,logs,tmp}

# --- setup --------------------------------------------------------------------------------
if [ "$SETUP" = 1 ]; then
  need=()
  for bin_pkg in wrk:wrk nginx:nginx taskset:util-linux curl:curl python3:python3 node:nodejs npm:npm; do
    command -v "${bin_pkg%%:*}" >/dev/null 2>&1 || need+=("${bin_pkg##*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    log "bench: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  build_bins keygate candidate-service
fi
SLS_DIR="$WORK/sls"
if [[ " $PEERS " == *" sls "* ]] && [ ! -d "$SLS_DIR/node_modules/serverless-offline" ]; then
  [ "$SETUP" = 1 ] || die "serverless-offline is not installed in $SLS_DIR; run without --no-setup"
  log "bench: npm install serverless@$SLS_VERSION serverless-offline@$SLS_OFFLINE_VERSION into $SLS_DIR"
  mkdir -p "$SLS_DIR"
  ( cd "$SLS_DIR"
    [ -f package.json ] || printf '{"name":"keygate-bench-peer","version":"1.0.0","private":true}\n' > package.json
    npm_config_cache="$WORK/npm-cache" npm install --no-audit --no-fund --loglevel=error \
      "serverless@$SLS_VERSION" "serverless-offline@$SLS_OFFLINE_VERSION" >&2 )
fi
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: build it (cargo build --release -p keygate) or run without --no-setup"
[ -x "$CANDIDATE_BIN" ] || die "$CANDIDATE_BIN missing: cargo build --release -p candidate-service"

render() { sed -e "s#@WORK@#$WORK#g" -e "s#@VALID_KEY@#${VALID_KEY:-}#g" "$1" > "$2"; }

# keygate: a fresh data dir with both bench services deployed and KEY_COUNT keys imported into
# both usage plans (done before the measured start, like nginx's rendered key map).
# Run as root, keygate runs the functions as `nobody`, who must reach the staged code in the data
# directory and the functions' database: both live under RUN_DIR, a directory every user may
# enter, not under WORK (a checkout in /root or a `mktemp -d` is closed to `nobody`).
RUN_DIR="${RUN_DIR:-/tmp/keygate-bench-$(id -u)}"
mkdir -p "$RUN_DIR" && chmod 0711 "$RUN_DIR"
KG_DATA="$RUN_DIR/keygate-data"
rm -rf "$KG_DATA"
# Run as root, keygate runs each function as a uid of its own: their database lives in a
# directory every user may write and delete in (SQLite removes the -wal file another made).
mkdir -p "$RUN_DIR/function-db" && chmod 0777 "$RUN_DIR/function-db"
export BENCH_CANDIDATE_DB="$RUN_DIR/function-db/candidates.db" BENCH_CANDIDATE_ARTIFACT="$CANDIDATE_BIN"
rm -f "$BENCH_CANDIDATE_DB"
kg() { "$KEYGATE_BIN" --data-dir "$KG_DATA" "$@"; }
kg deploy -c "$HERE/keygate/serverless.yml" >/dev/null
kg deploy -c "$HERE/keygate/limited.yml" >/dev/null
plan_id() { kg plans get "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
PLANS="$(plan_id keygate-bench-dev),$(plan_id keygate-bench-limited-limited)"
python3 "$HERE/gen_keys.py" "$WORK" "$KEY_COUNT" "$PLANS"
VALID_KEY="$(cat "$WORK/valid_key.txt")"
t0=$(now_ms)
kg keys import "$WORK/keys.csv" --fail-on-warnings >/dev/null
IMPORT_MS=$(( $(now_ms) - t0 ))
log "bench: imported $KEY_COUNT keys into keygate in ${IMPORT_MS} ms"
render "$HERE/peers/nginx-upstream.conf" "$WORK/nginx-upstream.conf"
render "$HERE/peers/nginx-gateway.conf" "$WORK/nginx-gateway.conf"
if [ -d "$SLS_DIR" ]; then
  render "$HERE/peers/serverless/serverless.yml" "$SLS_DIR/serverless.yml"
  cp "$HERE/peers/serverless/handler.js" "$SLS_DIR/handler.js"
fi

{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "keygate: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "nginx:   $(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "wrk:     $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  if [ -d "$SLS_DIR/node_modules/serverless-offline" ]; then
    echo "node:    $(node --version)"
    echo "serverless-offline: $(node -p "require('$SLS_DIR/node_modules/serverless-offline/package.json').version")"
  fi
  echo "cpu:     $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
  echo "mode:    $([ "$QUICK" = 1 ] && echo quick || echo full), $DURATION per case after $WARMUP warm-up, $KEY_COUNT keys, pinning $([ "$PIN" = 1 ] && echo "servers cpu $SERVER_CPU, wrk cpu $CLIENT_CPU" || echo off)"
} > "$OUT/versions.txt"

# --- run ----------------------------------------------------------------------------------
printf 'peer\tcase\tconns\tstatus\trequests\trps\tp50_ms\tp99_ms\trss_mb\tcpu_us_per_req\tstartup_ms\tnon2xx3xx\tsock_errors\n' > "$TSV"
pin_to_client_cpu   # keep the sampler off the server core
STARTUPS=()
start_keygate() {
  start_server keygate http://127.0.0.1:18085/dev/candidates \
    env RUST_LOG="$KEYGATE_LOG" "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18085 --admin-listen 127.0.0.1:18086
}
start_keygate_logging() {
  start_server keygate-log http://127.0.0.1:18087/dev/candidates \
    env -u RUST_LOG "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18087 --admin-listen 127.0.0.1:18088
}
start_server upstream http://127.0.0.1:18080/dev/candidates \
  nginx -p "$WORK" -e "$WORK/logs/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf"
UP_PID=$SERVER_PID
STARTUPS+=("upstream	$STARTUP_MS	$IDLE_RSS_KB")
for peer in $PEERS; do
  case "$peer" in
    upstream)
      measure upstream valid 32 200 http://127.0.0.1:18080/dev/candidates "$UP_PID" "" ;;
    nginx)
      start_server nginx http://127.0.0.1:18081/dev/candidates \
        nginx -p "$WORK" -e "$WORK/logs/nginx-gateway.error.log" -c "$WORK/nginx-gateway.conf"
      STARTUPS+=("nginx	$STARTUP_MS	$IDLE_RSS_KB")
      for c in $CONNS; do measure nginx valid "$c" 200 http://127.0.0.1:18081/dev/candidates "$SERVER_PID" "$VALID_KEY"; done
      measure nginx missing "$DENY_CONNS" 403 http://127.0.0.1:18081/dev/candidates "$SERVER_PID" ""
      measure nginx limited "$DENY_CONNS" 429 http://127.0.0.1:18081/limited/candidates "$SERVER_PID" "$VALID_KEY"
      stop_pid "$SERVER_PID" ;;
    sls)
      pushd "$SLS_DIR" >/dev/null
      SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off \
        start_server sls http://127.0.0.1:18090/dev/candidates \
        node "$SLS_DIR/node_modules/serverless/bin/serverless.js" offline
      popd >/dev/null
      STARTUPS+=("serverless-offline	$STARTUP_MS	$IDLE_RSS_KB")
      measure sls function 32 200 http://127.0.0.1:18090/dev/candidates "$SERVER_PID" "$VALID_KEY"
      measure sls missing "$DENY_CONNS" 403 http://127.0.0.1:18090/dev/candidates "$SERVER_PID" ""
      stop_pid "$SERVER_PID" ;;
    keygate)
      start_keygate
      STARTUPS+=("keygate ($KEY_COUNT keys)	$STARTUP_MS	$IDLE_RSS_KB")
      for c in $CONNS; do measure keygate valid "$c" 200 http://127.0.0.1:18085/dev/candidates "$SERVER_PID" "$VALID_KEY"; done
      measure keygate missing "$DENY_CONNS" 403 http://127.0.0.1:18085/dev/candidates "$SERVER_PID" ""
      measure keygate limited "$DENY_CONNS" 429 http://127.0.0.1:18085/limited/candidates "$SERVER_PID" "$VALID_KEY"
      # The proxy and 403 cases with the access log on, as a user runs keygate (no RUST_LOG: a
      # line per request to stderr, here a file), interleaved with the same cases on the log-off
      # keygate (peer keygate-nolog), LOG_ROUNDS rounds in alternating order: run minutes
      # apart, ratios this close to 1 land either side of a target on these VMs.
      OFF_PID=$SERVER_PID
      start_keygate_logging
      ON_PID=$SERVER_PID
      for round in $(seq 1 "$LOG_ROUNDS"); do
        if [ $(( round % 2 )) = 1 ]; then order="off on"; else order="on off"; fi
        for case in valid missing; do
          for side in $order; do
            if [ "$side" = on ]; then peer=keygate-log port=18087 pid=$ON_PID; else peer=keygate-nolog port=18085 pid=$OFF_PID; fi
            if [ "$case" = valid ]; then
              measure "$peer" valid 32 200 "http://127.0.0.1:$port/dev/candidates" "$pid" "$VALID_KEY"
            else
              measure "$peer" missing "$DENY_CONNS" 403 "http://127.0.0.1:$port/dev/candidates" "$pid" ""
            fi
          done
        done
      done
      stop_pid "$ON_PID"
      SERVER_PID=$OFF_PID
      measure keygate function 32 200 http://127.0.0.1:18085/dev/fn/candidates "$SERVER_PID" "$VALID_KEY"
      stop_pid "$SERVER_PID"
      # The managed-instances function on a fresh keygate, so the tree's RSS holds only its process.
      start_keygate
      measure keygate function-mi 32 200 http://127.0.0.1:18085/dev/fn-mi/candidates "$SERVER_PID" "$VALID_KEY"
      stop_pid "$SERVER_PID"
      # serverless-offline's own Node handler, then the same in Python, each on a fresh keygate.
      start_keygate
      measure keygate node 32 200 http://127.0.0.1:18085/dev/node/candidates "$SERVER_PID" "$VALID_KEY"
      stop_pid "$SERVER_PID"
      start_keygate
      measure keygate node-mi 32 200 http://127.0.0.1:18085/dev/node-mi/candidates "$SERVER_PID" "$VALID_KEY"
      stop_pid "$SERVER_PID"
      start_keygate
      measure keygate python 32 200 http://127.0.0.1:18085/dev/python/candidates "$SERVER_PID" "$VALID_KEY"
      stop_pid "$SERVER_PID" ;;
    *) die "unknown peer $peer (use upstream nginx sls keygate)" ;;
  esac
done
stop_pid "$UP_PID"

# --- report -------------------------------------------------------------------------------
QUICK="$QUICK" PROFILE="$PROFILE" python3 "$HERE/report.py" "$TSV" "$OUT/versions.txt" "$(printf '%s\n' "${STARTUPS[@]}")" > "$OUT/results.md"
cat "$OUT/results.md"
log "bench: results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'bench: FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
