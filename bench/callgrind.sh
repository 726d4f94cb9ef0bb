#!/usr/bin/env bash
# keygate's user-space instructions per request, counted by callgrind: a figure that does not move
# with a noisy neighbour (wall-clock req/s on shared VMs moves ±15%, and differs 3x between the
# hosts this project runs on), so a change to the hot path can be judged by itself.
#
# Usage: bench/callgrind.sh [case ...]     cases: valid missing limited function function-mi
#                                          (default: all five),
#   and nginx-valid nginx-missing: the nginx gateway peer's instructions for the same requests
#   (one process, `master_process off`), to set keygate's figures against.
#   Needs a data dir prepared by bench/run.sh (run it once, even with --quick) and valgrind
#   (installed with apt when missing). Env: WORK (target/bench), KEYGATE_LOG (RUST_LOG of
#   keygate: warn, the access log off; info counts it on, its writer thread included), KEYGATE_BIN
#   (target/release/keygate), REQUESTS (2000 per case), CONNS (8), OUT (callgrind files).
# Output: one line per case: requests, instructions per request (Ir/req), and the callgrind file
#   to open with callgrind_annotate for the function-by-function split.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
WORK="${WORK:-$REPO/target/bench}"
REQUESTS="${REQUESTS:-2000}"
CONNS="${CONNS:-8}"
OUT="${OUT:-$WORK/callgrind}"
CASES=("$@")
[ "${#CASES[@]}" -gt 0 ] || CASES=(valid missing limited function function-mi)
# Where run.sh keeps keygate's data directory (RUN_DIR: reachable by the function user).
RUN_DIR="${RUN_DIR:-/tmp/keygate-bench-$(id -u)}"
KG_DATA="$RUN_DIR/keygate-data"
[ -d "$KG_DATA" ] && [ -f "$WORK/valid_key.txt" ] || die "no bench data in $WORK: run bench/run.sh --quick first"
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: cargo build --release -p keygate"
command -v valgrind >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
command -v python3 >/dev/null || die "python3 missing"
VALID_KEY="$(cat "$WORK/valid_key.txt")"
# Run as root, keygate runs each function as a uid of its own: a directory every user may write.
mkdir -p "$WORK/function-db" && chmod 0777 "$WORK/function-db"
export BENCH_CANDIDATE_DB="$WORK/function-db/candidates.db"
export BENCH_CANDIDATE_ARTIFACT="${CANDIDATE_BIN:-$REPO/target/release/candidate-service}"
mkdir -p "$OUT" "$WORK"/{run,logs,tmp}
sed -e "s#@WORK@#$WORK#g" "$HERE/peers/nginx-upstream.conf" > "$WORK/nginx-upstream.conf"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

nginx -p "$WORK" -e "$WORK/logs/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf" &
PIDS+=($!)

# Sends exactly $1 requests over $CONNS keep-alive connections and checks every status is one of
# $4 (comma-separated), on port $port.
load() {
  python3 - "$1" "$CONNS" "$2" "$3" "$4" "$port" <<'EOF'
import http.client, sys, threading
n, conns, path, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
want = {int(s) for s in sys.argv[5].split(",")}
port = int(sys.argv[6])
bad = []
def worker(count):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"x-api-key": key} if key else {}
    for _ in range(count):
        c.request("GET", path, headers=headers)
        r = c.getresponse(); r.read()
        if r.status not in want: bad.append(r.status)
threads = [threading.Thread(target=worker, args=(n // conns,)) for _ in range(conns)]
[t.start() for t in threads]; [t.join() for t in threads]
if bad: sys.exit(f"unexpected statuses: {sorted(set(bad))} ({len(bad)} of {n})")
EOF
}

for case in "${CASES[@]}"; do
  server=keygate port=18085
  case "$case" in
    valid) path=/dev/candidates key="$VALID_KEY" want=200 ;;
    missing) path=/dev/candidates key="" want=403 ;;
    # 1 r/s: under valgrind a run spans seconds, so the bucket admits a request now and then.
    limited) path=/limited/candidates key="$VALID_KEY" want=429,200 ;;
    function) path=/dev/fn/candidates key="$VALID_KEY" want=200 ;;
    function-mi) path=/dev/fn-mi/candidates key="$VALID_KEY" want=200 ;;
    nginx-valid) server=nginx port=18081 path=/dev/candidates key="$VALID_KEY" want=200 ;;
    nginx-missing) server=nginx port=18081 path=/dev/candidates key="" want=403 ;;
    *) die "unknown case $case (valid missing limited function function-mi nginx-valid nginx-missing)" ;;
  esac
  file="$OUT/callgrind.$case.out"
  rm -f "$file"
  if [ "$server" = nginx ]; then
    [ -f "$WORK/nginx-gateway.conf" ] || die "no $WORK/nginx-gateway.conf: run bench/run.sh first"
    # One process: callgrind follows the worker only when there is no master to fork it.
    sed '1i master_process off;' "$WORK/nginx-gateway.conf" > "$WORK/nginx-gateway-callgrind.conf"
    valgrind --tool=callgrind --callgrind-out-file="$file" --instr-atstart=no \
      nginx -p "$WORK" -e "$WORK/logs/nginx-gateway.error.log" -c "$WORK/nginx-gateway-callgrind.conf" \
      >"$WORK/logs/callgrind.$case.log" 2>&1 &
  else
    RUST_LOG="${KEYGATE_LOG:-warn}" valgrind --tool=callgrind --callgrind-out-file="$file" --instr-atstart=no \
      "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18085 --admin-listen 127.0.0.1:18086 \
      >"$WORK/logs/callgrind.$case.log" 2>&1 &
  fi
  vg=$!
  PIDS+=("$vg")
  for _ in $(seq 1200); do
    [ "$(http_code "http://127.0.0.1:$port/dev/candidates")" != 000 ] && break
    kill -0 "$vg" 2>/dev/null || die "$server under valgrind exited (see $WORK/logs/callgrind.$case.log)"
    sleep 0.1
  done
  # Warm up (connections, counters, function processes), then count exactly REQUESTS requests.
  load $(( CONNS * 50 )) "$path" "$key" "$want"
  callgrind_control -i on "$vg" >/dev/null
  load "$REQUESTS" "$path" "$key" "$want"
  callgrind_control -i off "$vg" >/dev/null
  kill -INT "$vg"; wait "$vg" 2>/dev/null || true
  ir=$(awk '/^totals:/ {print $2; exit}' "$file")
  printf '%-9s %6d requests  %8d Ir/req  %s\n' "$case" "$REQUESTS" $(( ir / REQUESTS )) "$file"
done
