#!/usr/bin/env bash
# The proxied route on one node and on two, with and without limits shared through Redis: the
# nodes share one PostgreSQL database (the machine's, on 127.0.0.1:5432, user postgres; this
# script makes and drops the database keygate_bench_nodes) and, in the Redis cases, a
# redis-server this script starts on :18379. Every process under test (the nodes, Redis) runs on
# SERVER_CPU and pays for what it does; the load (one wrk per node, the connections split
# evenly) runs on CLIENT_CPU. On a two-core machine the two nodes share one core: the two-node
# rows say what splitting the traffic and sharing the limits cost, not how nodes scale.
# PostgreSQL is the machine's own, on no pinned CPU, and its CPU is not in the figures (the nodes
# write their usage to it twice a second).
#
# Two kinds of traffic: `valid` (one key: after its first request the node serves it from a
# lease, 10 ms of the plan's rate) and `random-key` (a random one of KEY_COUNT keys per request:
# at this rate each key's lease has lapsed by its next request, so nearly every request asks
# Redis: the worst case for leases).
#
# Usage: bench/nodes.sh [--quick] [--no-setup]
#   --quick     2 s per case, one round (CI runs this so the script never rots; not a measurement)
# Env knobs: WORK (target/bench-nodes), KEY_COUNT (10000), ROUNDS (3), DURATION (5s), WARMUP (2s),
#   CONNS (32, split between the nodes), PG_URL (postgres://postgres@127.0.0.1:5432),
#   SERVER_CPU / CLIENT_CPU, PIN, KEYGATE_BIN, OUT.
# Output: $OUT/nodes.md (also printed) and $OUT/results.tsv (every run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
parse_args "$@"
WORK="${WORK:-$REPO/target/bench-nodes}"
if [ "$QUICK" = 1 ]; then DURATION="${DURATION:-2s}" WARMUP="${WARMUP:-1s}" ROUNDS="${ROUNDS:-1}"; fi
KEY_COUNT="${KEY_COUNT:-10000}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-2s}"
CONNS="${CONNS:-32}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
DB=keygate_bench_nodes
OUT="${OUT:-$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)}"
TSV="$OUT/results.tsv"
FAILED=()
mkdir -p "$OUT" "$WORK"/{run,logs,tmp}

if [ "$SETUP" = 1 ]; then
  need=()
  for bin_pkg in wrk:wrk nginx:nginx redis-server:redis-server psql:postgresql-client; do
    command -v "${bin_pkg%%:*}" >/dev/null 2>&1 || need+=("${bin_pkg##*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  build_bins keygate
fi
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: cargo build --release -p keygate"
psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null 2>&1 ||
  die "cannot make the database $DB on $PG_URL (is PostgreSQL running?)"
STORE="$PG_URL/$DB"
drop_db() { psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'stop_all; drop_db' EXIT

kg() { "$KEYGATE_BIN" --database-url "$STORE" "$@"; }
kg deploy -c "$HERE/keygate/scale.yml" >/dev/null
PLAN="$(kg plans get keygate-bench-dev --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
python3 "$HERE/gen_keys.py" "$WORK" "$KEY_COUNT" "$PLAN"
kg keys import "$WORK/keys.csv" --fail-on-warnings >/dev/null
VALID_KEY="$(cat "$WORK/valid_key.txt")"
sed "s#@WORK@#$WORK#g" "$HERE/peers/nginx-upstream.conf" > "$WORK/nginx-upstream.conf"

pin_to_client_cpu
start_server upstream http://127.0.0.1:18080/dev/candidates \
  nginx -p "$WORK" -e "$WORK/logs/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf"
start_redis 18379

# node NAME PORT [serve args...]: a node on PORT (admin on PORT+1000); sets NODE_PID.
node() {
  local name="$1" port="$2"; shift 2
  start_server "$name" "http://127.0.0.1:$port/dev/candidates" \
    env RUST_LOG=warn "$KEYGATE_BIN" --database-url "$STORE" serve --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$(( port + 1000 ))" "$@"
  NODE_PID=$SERVER_PID
}
node alone 18085; ALONE=$NODE_PID
node alone-b 18095; ALONE_B=$NODE_PID
node redis 18089 --redis-url redis://127.0.0.1:18379; SHARED=$NODE_PID
node redis-b 18099 --redis-url redis://127.0.0.1:18379; SHARED_B=$NODE_PID

printf 'setup\tnodes\tcase\tround\trequests\trps\tp99_ms\tcpu_us_per_req\tnon2xx3xx\tsock_errors\n' > "$TSV"
# run SETUP CASE ROUND PIDS PORTS: one wrk per port at once (CONNS split between them), the
# CPU of PIDS (the nodes, and Redis when it is used) over the run; one row of the summed rates.
run() {
  local setup="$1" case="$2" round="$3" pids="$4" ports="$5"
  local n c0=0 c1=0 p port script=() wpids=() raw
  n=$(wc -w <<<"$ports")
  local conns=$(( CONNS / n )) wpin=()
  [ "$PIN" = 1 ] && wpin=(taskset -c "$CLIENT_CPU")
  if [ "$case" = random-key ]; then script=(-s "$HERE/random_key.lua"); export KEYS_FILE="$WORK/keys.txt"; else script=(-s "$HERE/report.lua"); fi
  export REPORT_LUA="$HERE/report.lua"
  for port in $ports; do
    "${wpin[@]}" wrk -t1 -c"$conns" -d"$WARMUP" -H "x-api-key: $VALID_KEY" "http://127.0.0.1:$port/dev/candidates" >/dev/null 2>&1 &
    wpids+=("$!")
  done
  wait "${wpids[@]}" || true
  wpids=()
  for p in $pids; do c0=$(( c0 + $(cpu_ticks "$p") )); done
  for port in $ports; do
    raw="$OUT/wrk.$setup.$case.$round.$port.txt"
    "${wpin[@]}" wrk -t1 -c"$conns" -d"$DURATION" --timeout 5s --latency "${script[@]}" \
      -H "x-api-key: $VALID_KEY" "http://127.0.0.1:$port/dev/candidates" >"$raw" 2>&1 &
    wpids+=("$!")
  done
  wait "${wpids[@]}" || true
  for p in $pids; do c1=$(( c1 + $(cpu_ticks "$p") )); done
  if ! python3 - "$OUT" "$setup" "$case" "$round" "$n" "$(( c1 - c0 ))" "$TICK" $ports >>"$TSV" <<'EOF'
import sys
out, setup, case, rnd, n, ticks, tick = sys.argv[1:8]
ports = sys.argv[8:]
res = []
for port in ports:
    line = [l for l in open(f"{out}/wrk.{setup}.{case}.{rnd}.{port}.txt") if l.startswith("RESULT")]
    if not line:
        sys.exit(f"no RESULT from wrk on :{port}")
    res.append(dict(kv.split("=") for kv in line[0].split()[1:]))
req = sum(int(r["requests"]) for r in res)
rps = sum(float(r["rps"]) for r in res)
p99 = max(int(r["p99_us"]) for r in res) / 1000
cpu = 1e6 * int(ticks) / int(tick) / req if req else 0
errs = sum(int(r[k]) for r in res for k in ("err_connect", "err_read", "err_write", "err_timeout"))
non2xx = sum(int(r["non2xx3xx"]) for r in res)
print(f"{setup}\t{n}\t{case}\t{rnd}\t{req}\t{rps:.0f}\t{p99:.3f}\t{cpu:.1f}\t{non2xx}\t{errs}")
EOF
  then FAILED+=("$setup/$case: no result"); return 0; fi
  log "  $(tail -1 "$TSV" | awk -F'\t' '{printf "%-6s nodes=%s %-10s req/s=%s p99=%sms cpu=%sus/req non2xx=%s", $1, $2, $3, $6, $7, $8, $9}')"
  [ "$(tail -1 "$TSV" | cut -f9)" = 0 ] || FAILED+=("$setup/$case: non-2xx answers")
}

for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS"
  if [ $(( round % 2 )) = 1 ]; then order="alone redis"; else order="redis alone"; fi
  for case in valid random-key; do
    for setup in $order; do
      if [ "$setup" = alone ]; then
        run alone "$case" "$round" "$ALONE" 18085
        run alone "$case" "$round" "$ALONE $ALONE_B" "18085 18095"
      else
        run redis "$case" "$round" "$SHARED $REDIS_PID" 18089
        run redis "$case" "$round" "$SHARED $SHARED_B $REDIS_PID" "18089 18099"
      fi
    done
  done
done

QUICK="$QUICK" PROFILE="$PROFILE" python3 - "$TSV" "$ROUNDS" "$KEY_COUNT" > "$OUT/nodes.md" <<'EOF'
import csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rounds, keys = sys.argv[2], sys.argv[3]
med = lambda xs, f: statistics.median(float(x[f]) for x in xs)
print(f"# The proxied route on one node and two, without and with Redis ({rounds} rounds, {keys} keys)\n")
if os.environ.get("QUICK") == "1":
    debug = ", debug build" if os.environ.get("PROFILE") == "debug" else ""
    print(f"(quick{debug}: not a measurement)\n")
print("| traffic | nodes | req/s alone (median) | req/s with Redis (median) | ratio (median) | ratio (min–max) "
      "| p99 ms alone / with Redis | CPU µs/req alone / with Redis (nodes + Redis) |")
print("|---|---:|---:|---:|---:|---|---|---|")
for case in ("valid", "random-key"):
    for n in ("1", "2"):
        side = lambda s: [r for r in rows if r["setup"] == s and r["case"] == case and r["nodes"] == n]
        a, b = side("alone"), side("redis")
        if not a or not b:
            continue
        ratios = [float(y["rps"]) / float(x["rps"]) for x, y in zip(a, b) if float(x["rps"]) > 0]
        print(f"| {case} | {n} | {med(a, 'rps'):,.0f} | {med(b, 'rps'):,.0f} | {statistics.median(ratios):.2f}× "
              f"| {min(ratios):.2f}–{max(ratios):.2f}× | {med(a, 'p99_ms'):.2f} / {med(b, 'p99_ms'):.2f} "
              f"| {med(a, 'cpu_us_per_req'):.1f} / {med(b, 'cpu_us_per_req'):.1f} |")
EOF
cat "$OUT/nodes.md"
log "bench: results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then printf 'bench: FAILED: %s\n' "${FAILED[@]}" >&2; exit 1; fi
