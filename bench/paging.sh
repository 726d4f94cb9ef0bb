#!/usr/bin/env bash
# Listing KEY_COUNT (default 1,000,000) keys page by page through the admin API: the time of one
# page of 500 at the start, the middle and the end of the list, for `GET /apikeys` (AWS
# get-api-keys), the same with a name prefix, and `GET /usageplans/{id}/keys` (a plan holding
# every key). Keyset pagination seeks to the page's start, so a page costs the same wherever it
# is; an offset or a whole-list slice would grow with its position.
#
# Usage: bench/paging.sh [--quick] [--no-setup]
#   --quick     20,000 keys and 5 requests per page (CI runs this so the script never rots)
# Env knobs: WORK (default target/bench-paging), KEY_COUNT, REQUESTS (20), PAGE (500),
#   SERVER_CPU / CLIENT_CPU, PIN, KEYGATE_BIN, OUT.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
parse_args "$@"
WORK="${WORK:-$REPO/target/bench-paging}"
if [ "$QUICK" = 1 ]; then KEY_COUNT="${KEY_COUNT:-20000}" REQUESTS="${REQUESTS:-5}"; fi
KEY_COUNT="${KEY_COUNT:-1000000}"
REQUESTS="${REQUESTS:-20}"
PAGE="${PAGE:-500}"
OUT="${OUT:-$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT" "$WORK"/{run,logs,tmp}

if [ "$SETUP" = 1 ]; then
  command -v curl >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
  build_bins keygate
fi
[ -x "$KEYGATE_BIN" ] || die "$KEYGATE_BIN missing: cargo build --release -p keygate"

KG_DATA="$WORK/keygate-data"
rm -rf "$KG_DATA"
kg() { "$KEYGATE_BIN" --data-dir "$KG_DATA" "$@"; }
kg deploy -c "$HERE/keygate/scale.yml" >/dev/null
PLAN="$(kg plans get keygate-bench-dev --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
log "bench: generating and importing $KEY_COUNT keys"
python3 "$HERE/gen_keys.py" "$WORK" "$KEY_COUNT" "$PLAN"
kg keys import "$WORK/keys.csv" --fail-on-warnings >/dev/null
TOKEN="$(kg admin token create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

pin_to_client_cpu
ADMIN=http://127.0.0.1:18086
start_server keygate "$ADMIN/apikeys" \
  env RUST_LOG=warn "$KEYGATE_BIN" --data-dir "$KG_DATA" serve --listen 127.0.0.1:18085 --admin-listen 127.0.0.1:18086

# page_ms PATH -> the median of REQUESTS timings (ms) of GET PATH; checks each answer is a full
# page of PAGE items.
page_ms() {
  local path="$1" i t times=()
  for (( i = 0; i < REQUESTS; i++ )); do
    t=$(curl -s -o "$WORK/tmp/page.json" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" "$ADMIN$path")
    python3 - "$WORK/tmp/page.json" "$PAGE" <<'PY' || die "GET $path did not answer a full page: $(head -c 300 "$WORK/tmp/page.json")"
import json, sys
page = json.load(open(sys.argv[1]))
sys.exit(0 if len(page.get("item", [])) == int(sys.argv[2]) else 1)
PY
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] * 1000 }'
}
# The position a page ends at: the hex of the name of key number N (gen_keys.py's bench-NNNNNNN).
position_of() { printf 'bench-%07d' "$1" | od -An -tx1 | tr -d ' \n'; }

printf 'list\tstart_ms\tmiddle_ms\tend_ms\n' > "$OUT/results.tsv"
row() { # LABEL PATH_WITHOUT_POSITION (ends with ? or &)
  local label="$1" path="$2" mid end
  mid=$(( KEY_COUNT / 2 )) end=$(( KEY_COUNT - PAGE - 1 ))
  printf '%s\t%s\t%s\t%s\n' "$label" \
    "$(page_ms "${path}limit=$PAGE")" \
    "$(page_ms "${path}limit=$PAGE&position=$(position_of "$mid")")" \
    "$(page_ms "${path}limit=$PAGE&position=$(position_of "$end")")" >> "$OUT/results.tsv"
}
row "GET /apikeys" "/apikeys?"
row "GET /apikeys?name=bench-" "/apikeys?name=bench-&"
row "GET /usageplans/{id}/keys" "/usageplans/$PLAN/keys?"
stop_pid "$SERVER_PID"

{
  echo "# listing $KEY_COUNT keys, pages of $PAGE (median of $REQUESTS requests, curl's total time)"
  echo
  [ "$QUICK" = 1 ] && { echo "(quick$([ "$PROFILE" = debug ] && echo ', debug build'): not a measurement)"; echo; }
  echo "| list | first page ms | middle page ms | last page ms |"
  echo "|---|---:|---:|---:|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$OUT/results.tsv"
} > "$OUT/results.md"
cat "$OUT/results.md"
log "bench: results in $OUT"
