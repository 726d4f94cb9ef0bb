#!/usr/bin/env bash
# keygate with many keys: import KEY_COUNT (default 1,000,000) keys, then report the import
# time, the time until the gateway answers, its RSS (and RSS per key against the same gateway
# with no keys), the proxy route's throughput with a random valid key on every request, and how
# long each page of the web console takes with every key in the store (all in one plan).
# The random-key case also runs first on the same node with BASE_COUNT (10,000) keys, so the
# report can say what a large key set costs: req/s and p99 against that node's, and the RSS
# each key used in the run adds (the counters made on first use). With REDIS=1 (the default) both
# random-key runs are repeated with the limits in Redis (`--redis-url`, a redis-server this script
# starts on :18379, pinned with the node), and reported the same way.
#
# Usage: bench/scale.sh [--quick] [--no-setup]
#   --quick     100,000 keys and 2 s of load (CI runs this so the script never rots)
# Env knobs: WORK (default target/bench-scale), KEY_COUNT, DURATION (10s), WARMUP (2s), CONNS (32),
#   BASE_COUNT (10000; quick 2000), REDIS (1), SERVER_CPU / CLIENT_CPU, PIN, KEYGATE_BIN, OUT.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
parse_args "$@"
WORK="${WORK:-$REPO/target/bench-scale}"
if [ "$QUICK" = 1 ]; then KEY_COUNT="${KEY_COUNT:-100000}" DURATION="${DURATION:-2s}" WARMUP="${WARMUP:-1s}"; fi
KEY_COUNT="${KEY_COUNT:-1000000}"
if [ "$QUICK" = 1 ]; then BASE_COUNT="${BASE_COUNT:-2000}"; fi
BASE_COUNT="${BASE_COUNT:-10000}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNS="${CONNS:-32}"
REDIS="${REDIS:-1}"
KEYGATE_LOG="${KEYGATE_LOG:-warn}"
OUT="${OUT:-$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)}"
REPORT_LUA="$HERE/report.lua"
TSV="$OUT/results.tsv"
FAILED=()
mkdir -p "$OUT" "$WORK"/{run,logs,tmp}

if [ "$SETUP" = 1 ]; then
  for b in wrk nginx redis-server; do
    command -v "$b" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx redis-server >/dev/null; break; }
  done
  build_bins keygate
fi
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: cargo build --release -p keygate"

KG_DATA="$WORK/keygate-data"
rm -rf "$KG_DATA"
kg() { "$KEYGATE_BIN" --data-dir "$KG_DATA" "$@"; }
kg deploy -c "$HERE/keygate/scale.yml" >/dev/null
PLAN="$(kg plans get keygate-bench-dev --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
log "bench: generating $KEY_COUNT keys"
python3 "$HERE/gen_keys.py" "$WORK" "$KEY_COUNT" "$PLAN"
sed "s#@WORK@#$WORK#g" "$HERE/peers/nginx-upstream.conf" > "$WORK/nginx-upstream.conf"

printf 'peer\tcase\tconns\tstatus\trequests\trps\tp50_ms\tp99_ms\trss_mb\tcpu_us_per_req\tstartup_ms\tnon2xx3xx\tsock_errors\n' > "$TSV"
pin_to_client_cpu
start_server upstream http://127.0.0.1:18080/dev/candidates \
  nginx -p "$WORK" -e "$WORK/logs/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf"
# serve NAME DATA_DIR [serve args...]
serve() { local name="$1" data="$2"; shift 2; start_server "$name" http://127.0.0.1:18085/dev/candidates \
  env RUST_LOG="$KEYGATE_LOG" "$KEYGATE_BIN" --data-dir "$data" serve --listen 127.0.0.1:18085 --admin-listen 127.0.0.1:18086 "$@"; }
REDIS_ARGS=()
if [ "$REDIS" = 1 ]; then
  start_redis 18379
  REDIS_ARGS=(--redis-url redis://127.0.0.1:18379)
fi
# random_key PEER KEYS_DIR: the random-key case against the node just started.
random_key() {
  KEYS_FILE="$2/keys.txt" REPORT_LUA="$REPORT_LUA" WRK_SCRIPT="$HERE/random_key.lua" \
    measure "$1" random-key "$CONNS" 200 http://127.0.0.1:18085/dev/candidates "$SERVER_PID" "$(cat "$2/valid_key.txt")"
}

serve keygate-empty "$KG_DATA"
EMPTY_MS=$STARTUP_MS EMPTY_KB=$IDLE_RSS_KB
stop_pid "$SERVER_PID"

# The same node with BASE_COUNT keys (a data directory of its own), random keys from those.
BASE_DIR="$WORK/base" BASE_DATA="$WORK/keygate-base"
rm -rf "$BASE_DIR" "$BASE_DATA"
"$KEYGATE_BIN" --data-dir "$BASE_DATA" deploy -c "$HERE/keygate/scale.yml" >/dev/null
BASE_PLAN="$("$KEYGATE_BIN" --data-dir "$BASE_DATA" plans get keygate-bench-dev --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
python3 "$HERE/gen_keys.py" "$BASE_DIR" "$BASE_COUNT" "$BASE_PLAN"
"$KEYGATE_BIN" --data-dir "$BASE_DATA" keys import "$BASE_DIR/keys.csv" --fail-on-warnings >/dev/null
serve keygate-base "$BASE_DATA"
random_key keygate-base "$BASE_DIR"
stop_pid "$SERVER_PID"
if [ "$REDIS" = 1 ]; then
  serve keygate-base-redis "$BASE_DATA" "${REDIS_ARGS[@]}"
  random_key keygate-base-redis "$BASE_DIR"
  stop_pid "$SERVER_PID"
fi

t0=$(now_ms)
kg keys import "$WORK/keys.csv" --fail-on-warnings >/dev/null
IMPORT_MS=$(( $(now_ms) - t0 ))
log "bench: imported $KEY_COUNT keys in ${IMPORT_MS} ms"
DB_MB=$(du -sm "$KG_DATA" | awk '{print $1}')

serve keygate-full "$KG_DATA"
FULL_MS=$STARTUP_MS FULL_KB=$IDLE_RSS_KB
random_key keygate "$WORK"
# The baseline of the RSS each key adds: after the warm-up, which sends one key, so what serving
# traffic costs whatever the keys (connection buffers, the allocator's caches, a Redis
# connection) is not put on the keys. RSS once the random-key run is over: the counters of every
# key it used are still held.
WARM_KB=$WARM_RSS_KB
AFTER_RANDOM_KB=$(rss_kb "$SERVER_PID")
measure keygate missing "$CONNS" 403 http://127.0.0.1:18085/dev/candidates "$SERVER_PID" ""

# The console's pages, signed in with a fresh admin token: each fetched CONSOLE_TRIES times by
# curl on loopback (its time_total, an upper bound of the server's time); median and max.
CONSOLE_TRIES="${CONSOLE_TRIES:-7}"
CONSOLE_TSV="$OUT/console.tsv"
ADMIN=http://127.0.0.1:18086
JAR="$WORK/tmp/console.jar"
TOKEN="$(kg admin token create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
rm -f "$JAR"
[ "$(curl -s -c "$JAR" -o /dev/null -w '%{http_code}' --data-urlencode "token=$TOKEN" "$ADMIN/console/signin")" = 303 ] \
  || FAILED+=("console sign-in")
KEY_ID="$(kg keys get bench-0005000 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
API_ID="$(kg info -c "$HERE/keygate/scale.yml" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("apiId",""))' 2>/dev/null || true)"
: > "$CONSOLE_TSV"
for path in /console/keys "/console/keys?q=bench-00050" "/console/keys/$KEY_ID" /console/plans \
    "/console/plans/$PLAN" "/console/plans/$PLAN/usage" /console/apis ${API_ID:+"/console/apis/$API_ID"} /console/audit; do
  times=()
  for _ in $(seq "$CONSOLE_TRIES"); do
    read -r code t < <(curl -s -b "$JAR" -o /dev/null -w '%{http_code} %{time_total}\n' "$ADMIN$path")
    [ "$code" = 200 ] || { FAILED+=("console $path: status $code"); break; }
    times+=("$t")
  done
  [ "${#times[@]}" -gt 0 ] || continue
  printf '%s\n' "${times[@]}" | sort -n | awk -v p="$path" '{ t[NR] = $1 * 1000 } END { printf "%s\t%.1f\t%.1f\n", p, t[int((NR + 1) / 2)], t[NR] }' >> "$CONSOLE_TSV"
done
stop_pid "$SERVER_PID"
if [ "$REDIS" = 1 ]; then
  serve keygate-full-redis "$KG_DATA" "${REDIS_ARGS[@]}"
  FULL_REDIS_KB=$IDLE_RSS_KB
  random_key keygate-redis "$WORK"
  WARM_REDIS_KB=$WARM_RSS_KB
  AFTER_RANDOM_REDIS_KB=$(rss_kb "$SERVER_PID")
  stop_pid "$SERVER_PID"
fi

PER_KEY=$(( (FULL_KB - EMPTY_KB) * 1024 / KEY_COUNT ))
# The random-key figures against the BASE_COUNT node's: req/s and p99 ratios, and the RSS added
# per key the run used (keys drawn uniformly: R requests touch N(1 - e^(-R/N)) distinct keys;
# the warm-up sends one key only).
# ratios BASE_PEER PEER WARM_KB AFTER_KB: "req/s-ratio p99-ratio bytes-per-key-used keys-used"
ratios() {
  python3 - "$TSV" "$KEY_COUNT" "$@" <<'EOF'
import csv, math, sys
rows = {r["peer"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if r["case"] == "random-key"}
n, base, big = int(sys.argv[2]), rows[sys.argv[3]], rows[sys.argv[4]]
warm_kb, after_kb = int(sys.argv[5]), int(sys.argv[6])
used = n * (1 - math.exp(-int(big["requests"]) / n))
print(f'{float(big["rps"]) / float(base["rps"]):.2f} {float(big["p99_ms"]) / float(base["p99_ms"]):.2f} '
      f'{int(max(0, after_kb - warm_kb) * 1024 / used)} {int(used)}')
EOF
}
read -r RPS_RATIO P99_RATIO PER_ACTIVE ACTIVE < <(ratios keygate-base keygate "$WARM_KB" "$AFTER_RANDOM_KB")
if [ "$REDIS" = 1 ]; then
  read -r R_RPS_RATIO R_P99_RATIO R_PER_ACTIVE R_ACTIVE < <(ratios keygate-base-redis keygate-redis "$WARM_REDIS_KB" "$AFTER_RANDOM_REDIS_KB")
fi
met() { python3 -c "print('met' if $1 else 'not met')"; }
# Quick runs (seconds of load, maybe a debug build) measure nothing: no target column then.
if [ "$QUICK" = 1 ]; then T() { :; } else T() { printf ' %s |' "$1"; }; fi
{
  echo "# keygate with $KEY_COUNT keys"
  echo
  if [ "$QUICK" = 1 ]; then
    echo "(quick$([ "$PROFILE" = debug ] && echo ', debug build'): not a measurement)"
    echo
    echo "| measure | value |"
    echo "|---|---:|"
  else
    echo "| measure | value | target |"
    echo "|---|---:|---|"
  fi
  echo "| import ($KEY_COUNT keys, \`keygate keys import\`) | ${IMPORT_MS} ms |$(T '')"
  echo "| store size on disk | ${DB_MB} MiB |$(T '')"
  echo "| ready after (no keys) | ${EMPTY_MS} ms |$(T '')"
  echo "| ready after ($KEY_COUNT keys) | ${FULL_MS} ms |$(T '≤ 2000 ms at 1M')"
  echo "| idle RSS (no keys) | $(( EMPTY_KB / 1024 )) MiB |$(T '')"
  echo "| idle RSS ($KEY_COUNT keys) | $(( FULL_KB / 1024 )) MiB |$(T '')"
  echo "| RSS per key | ${PER_KEY} B |$(T '≤ 200 B')"
  echo "| RSS after the one-key warm-up of the random-key run | $(( WARM_KB / 1024 )) MiB (idle $(( FULL_KB / 1024 )) MiB) |$(T '')"
  if [ "$REDIS" = 1 ]; then echo "| with Redis: RSS after the one-key warm-up | $(( WARM_REDIS_KB / 1024 )) MiB (idle $(( FULL_REDIS_KB / 1024 )) MiB) |$(T '')"; fi
  awk -F'\t' -v quick="$QUICK" -v base="$BASE_COUNT" -v n="$KEY_COUNT" 'NR>1 { printf "| %s with %s keys%s, c%s: req/s (p50 / p99 ms) | %.0f (%s / %s), status %s |%s\n", $2, ($1 ~ /^keygate-base/ ? base : n), ($1 ~ /redis$/ ? ", Redis" : ""), $3, $6, $7, $8, $4, (quick == 1 ? "" : " |") }' "$TSV"
  echo "| random-key req/s, $KEY_COUNT keys against $BASE_COUNT | ${RPS_RATIO}× |$(T "≥ 0.8× ($(met "$RPS_RATIO >= 0.8"))")"
  echo "| random-key p99, $KEY_COUNT keys against $BASE_COUNT | ${P99_RATIO}× |$(T "≤ 3× ($(met "$P99_RATIO <= 3"))")"
  echo "| RSS added per key the random-key run used (~$ACTIVE keys) | ${PER_ACTIVE} B |$(T "≤ 100 B ($(met "$PER_ACTIVE <= 100"))")"
  if [ "$REDIS" = 1 ]; then
    echo "| with Redis: random-key req/s, $KEY_COUNT keys against $BASE_COUNT | ${R_RPS_RATIO}× |$(T "≥ 0.8× ($(met "$R_RPS_RATIO >= 0.8"))")"
    echo "| with Redis: random-key p99, $KEY_COUNT keys against $BASE_COUNT | ${R_P99_RATIO}× |$(T "≤ 3× ($(met "$R_P99_RATIO <= 3"))")"
    echo "| with Redis: RSS added per key the random-key run used (~$R_ACTIVE keys) | ${R_PER_ACTIVE} B |$(T "≤ 100 B ($(met "$R_PER_ACTIVE <= 100"))")"
  fi
  awk -F'\t' -v quick="$QUICK" '{ printf "| console `GET %s`: median / max ms | %s / %s |%s\n", $1, $2, $3, (quick == 1 ? "" : " ≤ 100 ms |") }' "$CONSOLE_TSV"
} > "$OUT/results.md"
cat "$OUT/results.md"
log "bench: results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then printf 'bench: FAILED: %s\n' "${FAILED[@]}" >&2; exit 1; fi
