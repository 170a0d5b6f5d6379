#!/usr/bin/env bash
# Runs weir's benchmark scenarios and, in the same run on the same machine, the peers (Redis Streams, NATS JetStream and
# RabbitMQ, which must be running on 127.0.0.1). Prints one JSON object per result on stdout; progress goes to stderr.
# docs/BENCHMARKS.md records the figures and how to read them.
#
#   scripts/bench.sh > results.jsonl           # everything (about 5 minutes)
#   scripts/bench.sh quick > results.jsonl     # smaller counts, a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
count=5000000   # 100-byte records
kcount=1000000  # 1 KiB records
secs=10
if [ "$mode" = quick ]; then count=300000; kcount=60000; secs=2; fi

cargo build --release --quiet --bin weir
cargo build --release --quiet --manifest-path bench/peers/Cargo.toml --target-dir target
weir=target/release/weir
peers=target/release/weir-bench-peers

# Each run starts with the kernel's dirty pages written out, so one run's writeback does not land on the next.
run() { sync; echo "+ $*" >&2; "$@"; }

for size in 100 1024; do
  n=$count; [ "$size" = 1024 ] && n=$kcount
  for parts in 1 8; do
    for fsync in interval never always; do
      run $weir bench throughput --json --size $size --count $n --partitions $parts --fsync $fsync
    done
  done
  run $peers throughput --json --peer redis --size $size --count $n
  run $peers throughput --json --peer nats --size $size --count $n
  # RabbitMQ confirms persistent messages at tens of thousands per second: a smaller count keeps the run short.
  run $peers throughput --json --peer rabbitmq --size $size --count $((n / 25))
done
# fsync=always with 16 concurrent producers: pipelined (the default window), 64 in flight each, and strictly one at a time.
for window in 65536 64 1; do
  n=$count; [ "$window" = 1 ] && n=$((count / 50))
  run $weir bench throughput --json --size 100 --count $n --fsync always --producers 16 --window $window
done
for fsync in interval always; do
  run $weir bench latency --json --rate 10000 --seconds $secs --size 100 --fsync $fsync
done
run $peers latency --json --peer redis --rate 10000 --seconds $secs --size 100
run $peers latency --json --peer nats --rate 10000 --seconds $secs --size 100
run $peers latency --json --peer rabbitmq --rate 10000 --seconds $secs --size 100
if [ "$mode" = quick ]; then
  run $weir bench memory --json --bytes 500M --size 1024
else
  run $weir bench memory --json --bytes 5G --size 1024
fi
