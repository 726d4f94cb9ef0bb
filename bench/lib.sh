# Shared helpers and knobs of the bench scripts (sourced, not run).
# Process-tree sampling reads /proc; every server started with start_server is stopped by PID
# on exit (also on Ctrl-C), children included.

# parse_args "$@": --quick (QUICK=1), --no-setup (SETUP=0), --help (the script's header comment).
parse_args() {
  QUICK=0 SETUP=1
  local a
  for a in "$@"; do
    case "$a" in
      --quick) QUICK=1 ;;
      --no-setup) SETUP=0 ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
      *) echo "$(basename "$0"): unknown argument $a (use --quick, --no-setup)" >&2; exit 2 ;;
    esac
  done
}

STARTED_PIDS=()
declare -A STOPPED=()
TICK="$(getconf CLK_TCK)"

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: $*"; exit 1; }
now_ms() { date +%s%3N; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" 2>/dev/null || true; }

# The knobs every script shares (each script's header documents them): servers on SERVER_CPU,
# the load and the sampler on CLIENT_CPU, PIN=0 to pin nothing (forced on a one-CPU machine),
# and the keygate binary of PROFILE.
BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PIN="${PIN:-1}"
[ "$(nproc)" -ge 2 ] || { [ "$PIN" = 0 ] || log "bench: one CPU: not pinning"; PIN=0; }
PROFILE="${PROFILE:-release}"
KEYGATE_BIN="${KEYGATE_BIN:-$BENCH_REPO/target/$PROFILE/keygate}"

# build_bins PKG...: builds the packages' binaries for PROFILE. A debug build is the test
# phase's own (`cargo build --workspace`, nothing to rebuild): building a subset would resolve
# other features and compile a second copy of the dependencies.
build_bins() {
  if [ "$PROFILE" = release ]; then
    local args=() p
    for p in "$@"; do args+=(-p "$p"); done
    (cd "$BENCH_REPO" && cargo build --release -q "${args[@]}")
  else
    (cd "$BENCH_REPO" && cargo build -q --workspace)
  fi
}

# Moves this script (the load's side: wrk's parent, the sampler) to CLIENT_CPU when pinning.
pin_to_client_cpu() {
  if [ "$PIN" = 1 ]; then taskset -pc "$CLIENT_CPU" $$ >/dev/null; fi
}

descendants() { # PID -> PID and all its descendants, one per line
  ps -eo pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      inc[root] = 1; changed = 1
      while (changed) { changed = 0
        for (p in parent) if (!(p in inc) && (parent[p] in inc)) { inc[p] = 1; changed = 1 } }
      for (p in inc) print p }'
}
rss_kb() { # PID -> summed RSS (KiB) of its process tree
  local s=0 r p
  for p in $(descendants "$1"); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true); s=$(( s + ${r:-0} ))
  done
  echo "$s"
}
cpu_ticks() { # PID -> CPU (clock ticks) of its process tree, exited members included
  local s=0 t p
  # utime+stime of each live process, plus cutime+cstime: the CPU of children it has reaped (a
  # function process retired mid-run still counts; a live one is counted once, by itself).
  for p in $(descendants "$1"); do
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || true); s=$(( s + ${t:-0} ))
  done
  echo "$s"
}

stop_pid() { # stop a started server and its children
  local root="$1" p kids
  [ -n "${STOPPED[$root]:-}" ] && return 0
  STOPPED[$root]=1
  kill -0 "$root" 2>/dev/null || return 0
  kids="$(descendants "$root" | grep -vx "$root" || true)"
  kill -TERM "$root" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$root" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$root" 2>/dev/null && kill -KILL "$root" 2>/dev/null || true
  for p in $kids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done
  wait "$root" 2>/dev/null || true
}
stop_all() {
  local p
  for p in "${STARTED_PIDS[@]}"; do stop_pid "$p"; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# start_server NAME READY_URL CMD... : starts CMD pinned to SERVER_CPU (when PIN=1), waits for
# READY_URL to answer anything; sets SERVER_PID, STARTUP_MS (spawn to first HTTP answer) and
# IDLE_RSS_KB (1 s after ready).
start_server() {
  local name="$1" ready="$2"; shift 2
  local pin=() t0
  [ "$PIN" = 1 ] && pin=(taskset -c "$SERVER_CPU")
  t0=$(now_ms)
  "${pin[@]}" "$@" >"$WORK/logs/$name.log" 2>&1 &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  while :; do
    [ "$(http_code "$ready")" != 000 ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "bench: $name exited during startup; its log:"; cat "$WORK/logs/$name.log" >&2; exit 1; }
    [ $(( $(now_ms) - t0 )) -gt 120000 ] && die "$name not ready after 120 s (log: $WORK/logs/$name.log)"
    sleep 0.005
  done
  STARTUP_MS=$(( $(now_ms) - t0 ))
  sleep 1
  IDLE_RSS_KB=$(rss_kb "$SERVER_PID")
  log "  started $name (pid $SERVER_PID) in ${STARTUP_MS} ms, idle RSS $(( IDLE_RSS_KB / 1024 )) MiB"
}

# start_redis PORT : a redis-server of the run's own on PORT (nothing kept on disk), pinned with
# the servers (when PIN=1); sets REDIS_PID once it answers.
start_redis() {
  local port="$1" pin=()
  [ "$PIN" = 1 ] && pin=(taskset -c "$SERVER_CPU")
  "${pin[@]}" redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no >"$WORK/logs/redis.log" 2>&1 &
  REDIS_PID=$!
  STARTED_PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$port" ping >/dev/null 2>&1 || die "redis-server on :$port did not start (log: $WORK/logs/redis.log)"
}

# measure PEER CASE CONNS EXPECT URL PID KEY [wrk args...] : one wrk run (after an unrecorded
# warm-up) sending KEY (none when empty) in x-api-key, with the server tree sampled for RSS and
# CPU; appends a row to $TSV and records a failure when the status is not EXPECT. Sets
# WARM_RSS_KB (the server's RSS right after the warm-up, which sends KEY only).
measure() {
  local peer="$1" case="$2" conns="$3" expect="$4" url="$5" pid="$6" key="$7"; shift 7
  local hdr=() pin=() status raw rssmax=0 r c0 c1 res
  [ -n "$key" ] && hdr=(-H "x-api-key: $key")
  local args=("${hdr[@]}" "$@")
  [ "$PIN" = 1 ] && pin=(taskset -c "$CLIENT_CPU")
  "${pin[@]}" wrk -t1 -c"$conns" -d"$WARMUP" --timeout 5s "${args[@]}" "$url" >/dev/null 2>&1 || true
  WARM_RSS_KB=$(rss_kb "$pid")
  # Right after the warm-up and twice, so a 1 r/s route shows its 429 even if a token came back.
  http_code "${hdr[@]}" "$url" >/dev/null
  status=$(http_code "${hdr[@]}" "$url")
  raw="$OUT/wrk.$peer.$case.c$conns.txt"
  c0=$(cpu_ticks "$pid")
  "${pin[@]}" wrk -t1 -c"$conns" -d"$DURATION" --timeout 5s --latency -s "${WRK_SCRIPT:-$REPORT_LUA}" "${args[@]}" "$url" >"$raw" 2>&1 &
  local wpid=$!
  while kill -0 "$wpid" 2>/dev/null; do
    r=$(rss_kb "$pid"); [ "$r" -gt "$rssmax" ] && rssmax=$r
    sleep 0.25
  done
  wait "$wpid" || true
  c1=$(cpu_ticks "$pid")
  res=$(grep '^RESULT' "$raw" || true)
  if [ -z "$res" ]; then
    log "bench: wrk produced no result for $peer/$case (see $raw)"
    FAILED+=("$peer/$case: no result")
    return 0
  fi
  local requests duration_s rps p50_us p90_us p99_us max_us err_connect err_read err_write err_timeout non2xx3xx
  # shellcheck disable=SC2046
  eval "$(echo "${res#RESULT }" | tr ' ' '\n' | sed 's/^/local /')"
  local cpu_s us_per_req
  cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN{printf "%.2f", (b-a)/t}')
  us_per_req=$(awk -v c="$cpu_s" -v n="$requests" 'BEGIN{ if (n>0) printf "%.1f", 1e6*c/n; else print "-" }')
  printf '%s\t%s\t%s\t%s\t%s\t%.0f\t%.3f\t%.3f\t%.1f\t%s\t%s\t%s\t%s\n' \
    "$peer" "$case" "$conns" "$status" "$requests" "$rps" \
    "$(awk -v v="$p50_us" 'BEGIN{print v/1000}')" "$(awk -v v="$p99_us" 'BEGIN{print v/1000}')" \
    "$(awk -v v="$rssmax" 'BEGIN{print v/1024}')" "$us_per_req" "$STARTUP_MS" \
    "$non2xx3xx" "$(( err_connect + err_read + err_write + err_timeout ))" >> "$TSV"
  log "  $(printf '%-12s %-9s c=%-4s status=%s req/s=%.0f p50=%sus p99=%sus rss=%sMiB cpu=%sus/req' \
    "$peer" "$case" "$conns" "$status" "$rps" "$p50_us" "$p99_us" "$(( rssmax / 1024 ))" "$us_per_req")"
  if [ "$status" != "$expect" ]; then FAILED+=("$peer/$case: status $status, expected $expect"); fi
  if [ "$requests" -le 0 ]; then FAILED+=("$peer/$case: no requests completed"); fi
}
