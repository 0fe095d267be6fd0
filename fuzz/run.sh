#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) with libFuzzer:
#
#   fuzz/run.sh 30          # what CI runs
#   fuzz/run.sh 600         # before a release
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Inputs that grow coverage go to fuzz/target/corpus/TARGET (kept between
# runs, not committed); the seeds in fuzz/corpus/TARGET are read only. A
# crash stops the run with libFuzzer's report and the input in
# fuzz/artifacts/TARGET/: keep it as a regression test in tests/fuzz_regressions.rs.
#
# No sanitizer (-s none) and a dev build: the code under test is safe Rust,
# so what we look for is panics (overflow checks on), and the build is
# minutes shorter than an ASan release build. Prints executions per target.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-30}
command -v cargo-fuzz >/dev/null 2>&1 || { echo "run.sh: cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }
targets=(query_reply upstream_reply zone_file config)
cargo +nightly fuzz build --dev -s none >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t"
  log="target/fuzz-$t.log"
  if ! cargo +nightly fuzz run "$t" --dev -s none "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "run.sh: $t failed (full log: fuzz/$log)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  echo "$t: ${runs:-?} executions in ${SECONDS_EACH}s, no crash"
done
