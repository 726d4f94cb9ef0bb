#!/usr/bin/env bash
# keygate against the nginx gateway, interleaved: both servers stay up and each round runs every
# case on one then the other (the order alternating between rounds), so a neighbour that slows
# the machine for a minute slows both sides of a comparison. run.sh runs each peer's cases as one
# block, minutes apart; on the shared VMs this project runs on, single cases then move by ±15%
# and a ratio from one run can land either side of a target. This reports, per case, the median
# of each side and the median and spread of the per-round ratios.
#
# Usage: bench/ab.sh
#   Needs the data and configs bench/run.sh prepared (run it once, even with --quick).
#   AGAINST=log compares keygate with its default access log on (no RUST_LOG: a line per request
#   to stderr, here a file) against keygate with it off, instead of against nginx.
#   AGAINST=redis compares keygate with --redis-url (limits shared through a redis-server this
#   script starts on :18379, pinned to the servers' CPU: the node pays for its Redis) against
#   keygate alone; the proxy route's plan has a throttle, so every valid request asks Redis.
# Env knobs: WORK (target/bench), AGAINST (nginx), ROUNDS (5), DURATION (5s), WARMUP (2s), CONNS ("32 128"),
#   DENY_CONNS (32), SERVER_CPU / CLIENT_CPU (0 / 1), PIN (1), KEYGATE_BIN
#   (target/release/keygate), OUT (default $WORK/ab/<UTC time>).
# Output: $OUT/ab.md (also printed) and $OUT/results.tsv (every run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
parse_args "$@"
WORK="${WORK:-$REPO/target/bench}"
ROUNDS="${ROUNDS:-5}"
AGAINST="${AGAINST:-nginx}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-2s}"
CONNS="${CONNS:-32 128}"
DENY_CONNS="${DENY_CONNS:-32}"
OUT="${OUT:-$WORK/ab/$(date -u +%Y%m%dT%H%M%SZ)}"
REPORT_LUA="$HERE/report.lua"
# Where run.sh keeps keygate's data directory (RUN_DIR: reachable by the function user).
RUN_DIR="${RUN_DIR:-/tmp/keygate-bench-$(id -u)}"
KG_DATA="$RUN_DIR/keygate-data"
FAILED=()
[ -d "$KG_DATA" ] && [ -f "$WORK/valid_key.txt" ] && [ -f "$WORK/nginx-gateway.conf" ] ||
  die "no bench data in $WORK: run bench/run.sh --quick first"
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: cargo build --release -p keygate"
VALID_KEY="$(cat "$WORK/valid_key.txt")"
mkdir -p "$OUT" "$WORK/logs"
TSV="$OUT/results.tsv"
printf 'peer\tcase\tconns\tstatus\trequests\trps\tp50_ms\tp99_ms\trss_mb\tcpu_us_per_req\tstartup_ms\tnon2xx3xx\tsock_errors\n' > "$TSV"
pin_to_client_cpu

start_server upstream http://127.0.0.1:18080/dev/candidates \
  nginx -p "$WORK" -e "$WORK/logs/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf"
case "$AGAINST" in
  nginx)
    OTHER=nginx OTHER_PORT=18081
    start_server nginx http://127.0.0.1:18081/dev/candidates \
      nginx -p "$WORK" -e "$WORK/logs/nginx-gateway.error.log" -c "$WORK/nginx-gateway.conf" ;;
  log)
    OTHER=keygate-log OTHER_PORT=18087
    start_server keygate-log http://127.0.0.1:18087/dev/candidates \
      env -u RUST_LOG "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18087 --admin-listen 127.0.0.1:18088 ;;
  redis)
    OTHER=keygate-redis OTHER_PORT=18089
    command -v redis-server >/dev/null || die "AGAINST=redis needs redis-server (apt-get install redis-server)"
    pin=(); [ "$PIN" = 1 ] && pin=(taskset -c "$SERVER_CPU")
    "${pin[@]}" redis-server --bind 127.0.0.1 --port 18379 --save "" --appendonly no >"$WORK/logs/redis.log" 2>&1 &
    STARTED_PIDS+=("$!")
    for _ in $(seq 1 100); do redis-cli -p 18379 ping >/dev/null 2>&1 && break; sleep 0.05; done
    start_server keygate-redis http://127.0.0.1:18089/dev/candidates \
      env RUST_LOG=warn "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18089 --admin-listen 127.0.0.1:18091 \
      --redis-url redis://127.0.0.1:18379 ;;
  *) die "AGAINST is nginx, log or redis, not $AGAINST" ;;
esac
OTHER_PID=$SERVER_PID
start_server keygate http://127.0.0.1:18085/dev/candidates \
  env RUST_LOG=warn "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18085 --admin-listen 127.0.0.1:18086
KEYGATE_PID=$SERVER_PID

# one PEER CASE CONNS: the case on one peer.
one() {
  local peer="$1" case="$2" conns="$3" port pid
  if [ "$peer" = "$OTHER" ]; then port=$OTHER_PORT pid=$OTHER_PID; else port=18085 pid=$KEYGATE_PID; fi
  case "$case" in
    valid) measure "$peer" valid "$conns" 200 "http://127.0.0.1:$port/dev/candidates" "$pid" "$VALID_KEY" ;;
    missing) measure "$peer" missing "$conns" 403 "http://127.0.0.1:$port/dev/candidates" "$pid" "" ;;
  esac
}

for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS"
  if [ $(( round % 2 )) = 1 ]; then order="$OTHER keygate"; else order="keygate $OTHER"; fi
  for c in $CONNS; do
    for peer in $order; do one "$peer" valid "$c"; done
  done
  for peer in $order; do one "$peer" missing "$DENY_CONNS"; done
done

python3 - "$TSV" "$ROUNDS" "$OTHER" > "$OUT/ab.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rounds = int(sys.argv[2])
other = sys.argv[3]
# Against nginx: keygate's rate over nginx's. Against keygate-log (keygate-redis): the log-on
# (Redis) rate over log-off (no Redis).
a, b = ("nginx", "keygate") if other == "nginx" else ("keygate", other)
cases = []
for r in rows:
    if (r["case"], r["conns"]) not in cases:
        cases.append((r["case"], r["conns"]))
print(f"# {b} against {a}, interleaved ({rounds} rounds)\n")
print(f"| case | conns | {a} req/s (median) | {b} req/s (median) | ratio (median) | ratio (min–max) "
      f"| {a} CPU µs/req | {b} CPU µs/req |")
print("|---|---:|---:|---:|---:|---|---:|---:|")
for case, conns in cases:
    side = lambda p: [r for r in rows if r["peer"] == p and r["case"] == case and r["conns"] == conns]
    n, k = side(a), side(b)
    ratios = [float(b["rps"]) / float(a["rps"]) for a, b in zip(n, k) if float(a["rps"]) > 0]
    med = lambda xs, f: statistics.median(float(x[f]) for x in xs)
    print(f"| {case} | {conns} | {med(n, 'rps'):,.0f} | {med(k, 'rps'):,.0f} | "
          f"{statistics.median(ratios):.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× | "
          f"{med(n, 'cpu_us_per_req'):.1f} | {med(k, 'cpu_us_per_req'):.1f} |")
EOF
cat "$OUT/ab.md"
log "bench: results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'bench: FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
