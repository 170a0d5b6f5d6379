#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 600: the scheduled, longer run; scripts/test.sh runs
# them for a few seconds after the tests). Installs cargo-fuzz when it is missing; needs the nightly toolchain.
#
#   scripts/fuzz.sh [SECONDS]
#
# Each target starts from its committed seed corpus, fuzz/corpus/TARGET (left as it is), and grows a working corpus
# under fuzz/target/corpus/TARGET, so later runs on the same machine pick up where the last one stopped. A finding (a
# panic, an allocation over the limit below, an input taking over 10 s) fails the run and leaves the input in
# fuzz/artifacts/TARGET; replay it with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET fuzz/artifacts/TARGET/FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "installing the nightly Rust toolchain for cargo-fuzz" >&2
  rustup toolchain install nightly --profile minimal >/dev/null || {
    echo "error: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
  }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io) for the fuzz targets" >&2
  cargo install cargo-fuzz --locked
fi

for target in $(cargo +nightly fuzz list --fuzz-dir fuzz); do
  work="fuzz/target/corpus/$target"
  log="fuzz/target/$target.log"
  mkdir -p "$work"
  echo "fuzzing $target for ${seconds}s (the build, the first time, takes a few minutes; output in $log)" >&2
  # -malloc_limit_mb: no input of a few KB may make the decoder allocate anything near this in one go.
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --debug-assertions "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    echo "error: fuzz target $target failed (the input is in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  echo "fuzz target $target: no finding in $(grep -m1 -o 'Done [0-9]* runs' "$log" | cut -d' ' -f2) runs" >&2
done
