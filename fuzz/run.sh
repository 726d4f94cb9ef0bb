#!/usr/bin/env bash
# Builds the fuzz targets with cargo-afl (coverage-guided AFL++ on the stable toolchain) and
# runs each for a bounded time; exits non-zero if any target crashed or hung.
#
#   fuzz/run.sh [SECONDS]         total budget, split evenly over the targets (default 60)
#   TARGETS="csv sigv4" fuzz/run.sh 600    only these targets
#
# A longer run (hours, one target): see "Fuzzing" in docs/security.md. Crashing inputs are kept
# in fuzz/out/<target>/default/crashes/; replay one with
#   fuzz/target/release/<target> < fuzz/out/<target>/default/crashes/<file>
set -euo pipefail
cd "$(dirname "$0")"

TOTAL=${1:-60}
ALL=(config csv http_head http_chunked router sigv4 lambda_response)
read -r -a TARGETS <<<"${TARGETS:-${ALL[*]}}"
PER=$(( TOTAL / ${#TARGETS[@]} ))
(( PER >= 1 )) || PER=1

# cargo-afl installs and builds AFL++ for the toolchain once (cached in ~/.local/share/afl.rs).
if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl"
  cargo install cargo-afl --locked --version 0.18.2
fi
if ! cargo afl config --build >/dev/null 2>&1; then
  : # Already built for this toolchain (the command refuses to rebuild without --force).
fi

echo "== building the fuzz targets (AFL-instrumented)"
cargo afl build --release --quiet

# No UI, no CPU pinning (CI shares its cores), no core-pattern or CPU-governor checks (a
# container cannot change them); a target that takes 5 s on one input is a hang (generous: CI shares its cores).
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
mkdir -p out
failed=()
for t in "${TARGETS[@]}"; do
  echo "== fuzzing $t for ${PER}s"
  rm -rf "out/$t"
  cargo afl fuzz -V "$PER" -t 5000 -i "seeds/$t" -o "out/$t" "target/release/$t" \
    >"out/$t.log" 2>&1 || { tail -20 "out/$t.log"; failed+=("$t (afl-fuzz failed)"); continue; }
  stats="out/$t/default/fuzzer_stats"
  execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
  paths=$(awk -F' *: *' '$1=="corpus_count"{print $2}' "$stats")
  crashes=$(find "out/$t/default/crashes" -type f ! -name README.txt | wc -l)
  hangs=$(find "out/$t/default/hangs" -type f | wc -l)
  echo "   $execs executions, $paths inputs in the corpus, $crashes crashes, $hangs hangs"
  if (( crashes > 0 || hangs > 0 )); then
    failed+=("$t ($crashes crashes, $hangs hangs: fuzz/out/$t/default/)")
  fi
done

if (( ${#failed[@]} > 0 )); then
  printf 'fuzzing found problems:\n'
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "fuzzing: ${#TARGETS[@]} targets, no crash and no hang"
