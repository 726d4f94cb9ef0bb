#!/usr/bin/env bash
# keygate over TLS, HTTP/1.1 against HTTP/2, interleaved: one keygate serving HTTPS
# (`--tls-cert`, a self-signed certificate made here), one load tool for both protocols
# (h2load, from nghttp2-client: `--h1` for HTTP/1.1), the same connections and routes. Cases:
#   valid    GET /dev/candidates with the key (proxied to the nginx upstream on :18080)
#   missing  the same without a key (403, keygate alone)
# and for each: h1 (one request at a time per connection), h2 (the same: one stream at a time per
# connection) and h2-mux (MUX_CONNS connections, MUX_STREAMS streams each: what HTTP/2 is for).
# Each round runs every case on every protocol (order alternating between rounds); the report
# gives the median req/s of each and the median of the per-round ratios to h1.
#
# Usage: bench/h2.sh [--quick] [--no-setup]
#   Needs the data and configs bench/run.sh prepared (run it once, even with --quick).
#   --quick  one short round (CI: the harness runs and answers; no speed verdicts)
# Env knobs: WORK (target/bench), ROUNDS (5; quick 1), DURATION (5s; quick 1s), WARMUP (2s;
#   quick 1s), CONNS (32), MUX_CONNS (4), MUX_STREAMS (8), SERVER_CPU / CLIENT_CPU (0 / 1),
#   PIN (1), KEYGATE_BIN (target/release/keygate), OUT (default $WORK/h2/<UTC time>).
# Output: $OUT/h2.md (also printed) and $OUT/results.tsv (every run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
parse_args "$@"
WORK="${WORK:-$REPO/target/bench}"
if [ "$QUICK" = 1 ]; then ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-1s}" WARMUP="${WARMUP:-1s}"; fi
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-2s}"
CONNS="${CONNS:-32}"
MUX_CONNS="${MUX_CONNS:-4}"
MUX_STREAMS="${MUX_STREAMS:-8}"
OUT="${OUT:-$WORK/h2/$(date -u +%Y%m%dT%H%M%SZ)}"
RUN_DIR="${RUN_DIR:-/tmp/keygate-bench-$(id -u)}"
KG_DATA="$RUN_DIR/keygate-data"
FAILED=()
if [ "$SETUP" = 1 ] && ! command -v h2load >/dev/null 2>&1; then
  log "bench: apt-get install nghttp2-client (h2load)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
fi
command -v h2load >/dev/null 2>&1 || die "h2load missing: apt-get install nghttp2-client, or run without --no-setup"
command -v openssl >/dev/null 2>&1 || die "openssl missing (it makes the test certificate)"
[ -d "$KG_DATA" ] && [ -f "$WORK/valid_key.txt" ] && [ -f "$WORK/nginx-upstream.conf" ] ||
  die "no bench data in $WORK: run bench/run.sh --quick first"
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: cargo build --release -p keygate"
VALID_KEY="$(cat "$WORK/valid_key.txt")"
mkdir -p "$OUT" "$WORK/logs"
TSV="$OUT/results.tsv"
printf 'round\tcase\tproto\tstatus\trequests\trps\tcpu_us_per_req\n' > "$TSV"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" >/dev/null 2>&1
# curl (the readiness probe) trusts the certificate too.
export CURL_CA_BUNDLE="$OUT/cert.pem"
pin_to_client_cpu

start_server upstream http://127.0.0.1:18080/dev/candidates \
  nginx -p "$WORK" -e "$WORK/logs/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf"
# Access log off, as in run.sh's headline cases (RUST_LOG=warn).
start_server keygate-tls https://127.0.0.1:18089/dev/candidates \
  env RUST_LOG=warn "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18089 \
  --admin-listen 127.0.0.1:18088 --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem"
KG_PID=$SERVER_PID

# one ROUND CASE PROTO: one h2load run (its warm-up not recorded); a row in $TSV.
one() {
  local round="$1" case="$2" proto="$3" url=https://127.0.0.1:18089/dev/candidates
  local args=() pin=() raw c0 c1 rps requests status
  [ "$case" = valid ] && args+=(-H "x-api-key: $VALID_KEY")
  case "$proto" in
    h1) args+=(--h1 -c "$CONNS" -m 1) ;;
    h2) args+=(-c "$CONNS" -m 1) ;;
    h2-mux) args+=(-c "$MUX_CONNS" -m "$MUX_STREAMS") ;;
  esac
  [ "$PIN" = 1 ] && pin=(taskset -c "$CLIENT_CPU")
  "${pin[@]}" h2load -t 1 -D "$WARMUP" "${args[@]}" "$url" >/dev/null 2>&1 || true
  raw="$OUT/h2load.$round.$case.$proto.txt"
  c0=$(cpu_ticks "$KG_PID")
  "${pin[@]}" h2load -t 1 -D "$DURATION" "${args[@]}" "$url" >"$raw" 2>&1 || true
  c1=$(cpu_ticks "$KG_PID")
  rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^req\/s/) { gsub(",", "", $i); print $i } }' "$raw")
  requests=$(awk '/^requests:/ { print $6 }' "$raw")
  # The status class every answer had: 2xx for valid, 4xx for missing (h2load counts by class).
  status=$(awk '/^status codes:/ { gsub(",", ""); if ($3 > 0) print "2xx"; else if ($7 > 0) print "4xx"; else print "other" }' "$raw")
  if [ -z "$rps" ] || [ -z "$requests" ] || [ "$requests" -le 0 ]; then
    FAILED+=("$case/$proto: no result (see $raw)")
    return 0
  fi
  local want=2xx; [ "$case" = missing ] && want=4xx
  [ "$status" = "$want" ] || FAILED+=("$case/$proto: answered $status, expected $want (see $raw)")
  local us
  us=$(awk -v a="$c0" -v b="$c1" -v t="$TICK" -v n="$requests" 'BEGIN{ if (n>0) printf "%.1f", 1e6*(b-a)/t/n; else print "-" }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$case" "$proto" "$status" "$requests" "$rps" "$us" >> "$TSV"
  log "  round $round $(printf '%-8s %-7s' "$case" "$proto") status=$status req/s=$rps cpu=${us}us/req"
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $(( round % 2 )) = 1 ]; then order="h1 h2 h2-mux"; else order="h2-mux h2 h1"; fi
  for case in valid missing; do
    for proto in $order; do one "$round" "$case" "$proto"; done
  done
done
stop_pid "$KG_PID"

python3 - "$TSV" "$QUICK" "$CONNS" "$MUX_CONNS" "$MUX_STREAMS" > "$OUT/h2.md" <<'EOF'
import csv, statistics, sys
tsv, quick, conns, mux_conns, mux_streams = sys.argv[1:]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
out = ["# keygate over TLS: HTTP/1.1 vs HTTP/2 (h2load, interleaved rounds)", ""]
if quick == "1":
    out += ["quick mode: the harness ran; these numbers are no measurement.", ""]
out += [f"h1 and h2: {conns} connections, one request at a time each; h2-mux: {mux_conns} "
        f"connections x {mux_streams} streams.", "",
        "| case | protocol | median req/s | median CPU us/req | ratio to h1 (median of rounds) | spread |",
        "|---|---|---:|---:|---:|---|"]
for case in ("valid", "missing"):
    by = {}
    for r in rows:
        if r["case"] == case:
            by.setdefault(r["proto"], {})[r["round"]] = r
    h1 = by.get("h1", {})
    for proto in ("h1", "h2", "h2-mux"):
        runs = by.get(proto, {})
        if not runs:
            continue
        rps = statistics.median(float(r["rps"]) for r in runs.values())
        cpu = statistics.median(float(r["cpu_us_per_req"]) for r in runs.values())
        ratios = sorted(float(r["rps"]) / float(h1[k]["rps"]) for k, r in runs.items() if k in h1)
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if ratios else "-"
        out.append(f"| {case} | {proto} | {rps:,.0f} | {cpu:.1f} | {ratio} | {spread} |")
print("\n".join(out))
EOF
cat "$OUT/h2.md"
log "bench: results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'bench: FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
