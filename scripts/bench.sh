#!/usr/bin/env bash
# Runs weir's benchmark scenarios and, in the same run, the peers on this machine (Redis Streams, NATS JetStream),
# printing JSON lines to stdout (and a human summary to stderr). docs/BENCHMARKS.md records the figures.
#
#   scripts/bench.sh                 # everything (several minutes)
#   scripts/bench.sh quick           # smaller counts, for a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
count=5000000
kcount=1000000
if [ "$mode" = quick ]; then count=500000; kcount=100000; fi

cargo build --release --quiet --bin weir
weir=target/release/weir
peers=""
if [ -f bench/peers/Cargo.toml ]; then
  cargo build --release --quiet --manifest-path bench/peers/Cargo.toml --target-dir target
  peers=target/release/weir-bench-peers
fi

run() { echo "+ $*" >&2; "$@"; }

for size in 100 1024; do
  n=$count; [ "$size" = 1024 ] && n=$kcount
  for parts in 1 8; do
    for fsync in interval never always; do
      p=1; [ "$fsync" = always ] && p=16
      run $weir bench throughput --json --size $size --count $n --partitions $parts --fsync $fsync --producers $p
    done
  done
  if [ -n "$peers" ]; then
    run $peers throughput --json --peer redis --size $size --count $n
    run $peers throughput --json --peer nats --size $size --count $n
  fi
done
for fsync in interval always; do
  run $weir bench latency --json --rate 10000 --seconds 10 --size 100 --fsync $fsync
done
if [ -n "$peers" ]; then
  run $peers latency --json --peer redis --rate 10000 --seconds 10 --size 100
  run $peers latency --json --peer nats --rate 10000 --seconds 10 --size 100
fi
if [ "$mode" != quick ]; then
  run $weir bench memory --json --bytes 5G --size 1024
fi
