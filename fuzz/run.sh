#!/usr/bin/env bash
# Runs every fuzz target (or the ones named after SECS) for SECS seconds each (default 60), one
# after the other, and prints the inputs each one tried. Installs cargo-fuzz if it is missing. The stable toolchain takes
# cargo-fuzz's sanitizer flags with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets="${*:-$(cargo fuzz list)}"
for t in $targets; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  mkdir -p "work/$t"
  # New inputs go to work/ (not committed); corpus/ holds the seeds.
  if ! cargo fuzz run "$t" "work/$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "$t: FAILED (crash reproducer in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)
  echo "$t: ${runs:-?} inputs in ${secs} s, no crash"
  rm -f "$log"
done
