#!/usr/bin/env bash
# Runs weir's benchmark scenarios and, in the same run on the same machine, the peers (Redis Streams, NATS JetStream and
# RabbitMQ, which must be running on 127.0.0.1). Prints one JSON object per result on stdout; progress goes to stderr.
# docs/BENCHMARKS.md records the figures and how to read them.
#
#   scripts/bench.sh > results.jsonl           # everything (about 10 minutes)
#   scripts/bench.sh quick > results.jsonl     # smaller counts, a smoke run
#   scripts/bench.sh wire > results.jsonl      # only the Kafka-protocol comparison and the peers it is read against
#   scripts/bench.sh http > results.jsonl      # only the HTTP produce benchmark (wrk, Debian package)
#   scripts/bench.sh runtime > results.jsonl   # only the processing runtime (handlers, outbox) on SQLite and PostgreSQL
#   scripts/bench.sh analytics > results.jsonl # only a simulated day of the analytics pipeline (5 M events)
#   scripts/bench.sh wedding > results.jsonl   # only wedding operations: policies against the optimum, 1 M events
#   scripts/bench.sh txn > results.jsonl       # only transactions over the Kafka protocol (1, 10, 100 records each)
#                                              # and read_committed consumption, beside their plain counterparts
#   scripts/bench.sh security > results.jsonl  # what SASL, ACL checks and TLS cost on the Kafka and HTTP listeners
#                                              # (security-http: the HTTP listener only)
#   scripts/bench.sh schemas > results.jsonl   # the schema registry: lookups/s, registrations/s, validation's cost
#   scripts/bench.sh scale > results.jsonl     # the systems on a Kafka-compatible cluster (weir's listener, Tansu on
#                                              # PostgreSQL), one and two instances, against embedded
#   scripts/bench.sh repair > results.jsonl    # the car repair shop end to end (`weir repair simulate`): embedded on
#                                              # SQLite and PostgreSQL, 1 and 2 workers; on Tansu, 1 and 2 instances
#                                              # (repair-quick: 2,000 tickets, one run each)
#   scripts/bench.sh dispatch > results.jsonl  # dispatch (`weir dispatch simulate`, 1,000 reviewers, 50,000 events):
#                                              # embedded on SQLite and PostgreSQL, end to end and the assignment
#                                              # service alone; on Tansu, 1 and 2 instances (dispatch-quick: one run each)
#   scripts/bench.sh waitroom > results.jsonl  # the waitroom on one `weir up` (embedded store): joins/s over HTTP (wrk)
#                                              # and gRPC, status lookups/s with 100,000 queued, stream fan-out to
#                                              # 10,000 subscribers, peak memory (waitroom-redis: sessions in Redis)
#
# WEIR_BENCH_NO_BUILD=1 skips the `cargo build` below and measures target/release/weir as it is.
#
# The Kafka-protocol part drives `weir up` and Tansu (a Kafka-compatible broker in Rust) with the same librdkafka
# producer and consumer (`weir bench wire`). Tansu is $TANSU, or what scripts/tansu.sh installs into
# ~/.cache/weir/tansu (about 10 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
count=5000000   # 100-byte records
kcount=1000000  # 1 KiB records
secs=10
if [ "$mode" = quick ]; then count=300000; kcount=60000; secs=2; fi
case "$mode" in full|quick|wire|txn|http|security|security-http|schemas|runtime|analytics|wedding|scale|scale-quick|repair|repair-quick|dispatch|dispatch-quick|waitroom|waitroom-redis) ;; *) echo "usage: $0 [full|quick|wire|txn|http|security|security-http|schemas|runtime|analytics|wedding|scale|scale-quick|repair|repair-quick|dispatch|dispatch-quick|waitroom|waitroom-redis]" >&2; exit 2 ;; esac

[ -n "${WEIR_BENCH_NO_BUILD:-}" ] || cargo build --release --quiet --bin weir
weir=target/release/weir
peers=target/release/weir-bench-peers
# The peers' clients only where they are measured.
case "$mode" in full|quick|wire) cargo build --release --quiet --manifest-path bench/peers/Cargo.toml --target-dir target ;; esac

# Each run starts with the kernel's dirty pages written out, so one run's writeback does not land on the next.
run() { sync; echo "+ $*" >&2; "$@"; }

# Waits until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# CPU time (user + system, in clock ticks of 10 ms) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }

# One librdkafka producer, then one consumer, over loopback TCP: against `weir up`, then Tansu; and the peers' own
# clients against them in the same run.
wire() {
  local scratch port pid label
  scratch=$(mktemp -d)
  local tansu=${TANSU:-$(scripts/tansu.sh)}
  for label in weir tansu-memory; do
    if [ "$label" = weir ]; then
      port=19092
      $weir --data-dir "$scratch/weir" up --systems none --status-every 3600 --kafka-listen 127.0.0.1:$port --http-listen none --schema-registry-listen none \
        --rest-proxy-listen none 2>"$scratch/$label.log" &
    elif [ -x "$tansu" ]; then
      port=19093
      "$tansu" broker --listener-url tcp://127.0.0.1:$port --advertised-listener-url tcp://127.0.0.1:$port \
        --storage-engine memory://tansu/ >"$scratch/$label.log" 2>&1 &
    else
      echo "tansu not found: skipping it (scripts/tansu.sh installs it)" >&2
      continue
    fi
    pid=$!
    wait_port $port
    sleep 0.5
    kill -0 $pid 2>/dev/null || { echo "$label did not start:" >&2; cat "$scratch/$label.log" >&2; exit 1; }
    for size in 100 1024; do
      n=$count; [ "$size" = 1024 ] && n=$kcount
      for parts in 1 8; do
        before=$(cpu_ticks $pid)
        run $weir bench wire --json --label $label --server 127.0.0.1:$port --size $size --count $n --partitions $parts \
          || echo "$label run failed (see $scratch/$label.log)" >&2
        # What the server itself spent producing and consuming those records (the client is the rest of the machine).
        echo "{\"peer\": \"$label\", \"scenario\": \"server_cpu\", \"size\": $size, \"partitions\": $parts, \"records\": $((2 * n)), \"cpu_seconds\": $(( $(cpu_ticks $pid) - before ))e-2}"
      done
    done
    run $weir bench wire --json --label $label --server 127.0.0.1:$port --rate 10000 --seconds $secs --size 100 \
      || echo "$label latency run failed (see $scratch/$label.log)" >&2
    kill $pid; wait $pid || true
  done
  rm -rf "$scratch"
}

# HTTP produce through `weir up` with wrk (one thread, so weir keeps a core): one 100-byte record per request over 64
# connections, then 1,000 records per request over 16. The Lua script prints one JSON line per run.
# Transactions (issue 16): one librdkafka transactional producer committing transactions of 1, 10 and 100 records,
# beside the idempotent producer without transactions; then read_committed consumption beside read_uncommitted. Each
# run on a topic of its own on one `weir up` (fsync at the default interval; the coordinator's log fsyncs always).
txn() {
  local scratch port=19093 pid
  scratch=$(mktemp -d)
  $weir --data-dir "$scratch/weir" up --systems none --status-every 3600 --kafka-listen 127.0.0.1:$port --http-listen none --schema-registry-listen none \
    --rest-proxy-listen none 2>"$scratch/weir.log" &
  pid=$!
  wait_port $port
  local bench="$weir --server 127.0.0.1:$port bench wire --json --label weir"
  local n=$((count / 10))
  run $bench --count "$n"
  run $bench --count "$n" --isolation read_committed
  run $bench --count 3000 --transaction-size 1
  run $bench --count 30000 --transaction-size 10
  run $bench --count "$n" --transaction-size 100
  run $bench --count "$n" --transaction-size 100 --isolation read_committed
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$scratch"
}

# The waitroom (issue 21) on one `weir up --systems waitroom` (admission paused, so the queue only grows): joins over
# HTTP with wrk (one thread, 64 connections, a new user each request) for $secs s, then `weir waitroom bench` over
# gRPC (128 requests in flight over 8 HTTP/2 connections): 100,000 joins, status lookups with all of them queued, 10,000
# position streams and the time one change takes to reach them all; then wrk's status lookups over HTTP on the same
# ids (WAITROOM_JOINS and WAITROOM_STREAMS change the counts). $1: "redis" keeps the sessions in Redis (127.0.0.1:6379, database 13, emptied first).
waitroom() {
  local scratch http=18090 grpc=15056 pid redis=()
  command -v wrk >/dev/null || { echo "wrk not found (Debian package wrk)" >&2; exit 1; }
  scratch=$(mktemp -d)
  if [ "${1:-}" = redis ]; then
    redis=(--redis redis://127.0.0.1:6379/13)
    (exec 3<>/dev/tcp/127.0.0.1/6379 && printf '*2\r\n$6\r\nSELECT\r\n$2\r\n13\r\n*1\r\n$7\r\nFLUSHDB\r\n' >&3 && sleep 0.2)
  fi
  $weir --data-dir "$scratch/weir" up --systems waitroom --status-every 3600 --kafka-listen none \
    --http-listen 127.0.0.1:$http --schema-registry-listen none --rest-proxy-listen none --grpc-listen 127.0.0.1:$grpc \
    --set waitroom.jwt_secret=bench "${redis[@]}" 2>"$scratch/up.log" &
  pid=$!
  trap "kill $pid 2>/dev/null || true" EXIT
  wait_port $http
  wait_port $grpc
  curl -fsS -XPOST "http://127.0.0.1:$http/api/v1/waitroom/events/bench-http/config" \
    -d '{"paused": true, "capacity": 100000000}' >/dev/null
  sync; echo "+ wrk waitroom_join -c64 -d${secs}s" >&2
  EVENT=bench-http wrk -t1 -c64 -d${secs}s -s bench/http/waitroom_join.lua http://127.0.0.1:$http | grep '^{'
  run $weir waitroom bench --http 127.0.0.1:$http --grpc 127.0.0.1:$grpc --event bench --joins "${WAITROOM_JOINS:-100000}" \
    --lookups 100000 --streams "${WAITROOM_STREAMS:-10000}" --ids-out "$scratch/ids.txt"
  sync; echo "+ wrk waitroom_status -c64 -d${secs}s" >&2
  IDS="$scratch/ids.txt" wrk -t1 -c64 -d${secs}s -s bench/http/waitroom_status.lua http://127.0.0.1:$http | grep '^{'
  local rss
  rss=$(awk '/VmHWM/ {print $2 * 1024}' /proc/$pid/status)
  echo "{\"peer\": \"weir\", \"scenario\": \"waitroom_peak_rss\", \"store\": \"${1:-embedded}\", \"bytes\": $rss}"
  kill $pid; wait $pid || true
  rm -rf "$scratch"
}

http() {
  local scratch port=18080 pid records conns
  command -v wrk >/dev/null || { echo "wrk not found (Debian package wrk): skipping the HTTP benchmark" >&2; return 0; }
  scratch=$(mktemp -d)
  $weir --data-dir "$scratch/weir" up --systems none --status-every 3600 --kafka-listen none \
    --http-listen 127.0.0.1:$port --schema-registry-listen none --rest-proxy-listen none 2>"$scratch/up.log" &
  pid=$!
  wait_port $port
  for records in 1 1000; do
    conns=64; [ "$records" = 1000 ] && conns=16
    sync; echo "+ wrk RECORDS=$records -c$conns" >&2
    RECORDS=$records wrk -t1 -c$conns -d${secs}s -s bench/http/produce.lua http://127.0.0.1:$port | grep '^{'
  done
  kill $pid; wait $pid || true
  rm -rf "$scratch"
}

# Security (issue 17): what authentication, ACL checks and TLS cost, three `weir up`s in turn on the same machine:
#   open      plaintext, no authentication (the baseline);
#   tls       TLS on both listeners, no authentication;
#   secured   SASL/PLAIN and the ACL authorizer on Kafka (every request checked), TLS plus HTTP Basic and ACLs on HTTP.
# Kafka: `weir bench wire` (the rdkafka crate, built here without OpenSSL, so SASL_PLAINTEXT) against open and secured;
# kcat (Debian's librdkafka, with OpenSSL) producing then consuming over plaintext and over TLS (its consumer with
# queued.min.messages raised; librdkafka 2.0.2 has no fetch.queue.backoff.ms). HTTP: wrk posting to
# the REST Proxy over http, https, and https with Basic credentials checked against the ACLs on every request.
security() {
  local scratch port=19094 hport=18094 pid n=$((count / 5)) line
  command -v kcat >/dev/null || { echo "kcat not found (Debian package kcat)" >&2; exit 1; }
  scratch=$(mktemp -d)
  $weir --data-dir "$scratch/open" certs dev --dir "$scratch/certs" >/dev/null
  printf '[security.tls]\ncert = "%s"\nkey = "%s"\n' "$scratch/certs/server.pem" "$scratch/certs/server-key.pem" \
    >"$scratch/tls.toml"
  { printf '[kafka.users]\nbench = "bench-pw"\n[security]\nauthorizer = "acl"\n'
    printf '[security.tls]\ncert = "%s"\nkey = "%s"\nlisteners = ["http"]\n' "$scratch/certs/server.pem" \
      "$scratch/certs/server-key.pem"; } >"$scratch/secured.toml"
  local acls="$weir --data-dir $scratch/secured acls add --allow User:bench"
  $acls --operation all --topic weir-bench --prefixed >/dev/null
  $acls --operation all --topic bench-http >/dev/null
  $acls --operation all --group '*' >/dev/null
  $acls --operation create --cluster >/dev/null
  python3 -c "import sys; sys.stdout.write(('x' * 100 + '\n') * $n)" >"$scratch/records"
  local ca="$scratch/certs/ca.pem"
  for setup in open tls secured; do
    local config=() scheme=http
    [ $setup = open ] || config=(--config "$scratch/$setup.toml")
    [ $setup = open ] || scheme=https
    $weir --data-dir "$scratch/$setup" "${config[@]}" up --systems none --status-every 3600 \
      --kafka-listen 127.0.0.1:$port --http-listen 127.0.0.1:$hport --schema-registry-listen none \
      --rest-proxy-listen none 2>"$scratch/$setup.log" &
    pid=$!
    wait_port $port; wait_port $hport
    # `security-http`: the HTTP part only.
    [ "$mode" = security-http ] || case $setup in
      open) run $weir bench wire --json --label open --server 127.0.0.1:$port --size 100 --count "$count" ;;
      secured) run $weir bench wire --json --label sasl-plain-acl --server "bench:bench-pw@127.0.0.1:$port" \
                 --size 100 --count "$count" ;;
    esac
    if [ $setup != secured ] && [ "$mode" != security-http ]; then
      local tls=(); [ $setup = tls ] && tls=(-X security.protocol=ssl -X "ssl.ca.location=$ca")
      local started took
      started=$(date +%s.%N)
      run kcat -b 127.0.0.1:$port "${tls[@]}" -P -t kcat-$setup -l -X linger.ms=5 -X batch.num.messages=10000 \
        -X queue.buffering.max.messages=1000000 "$scratch/records"
      took=$(echo "$(date +%s.%N) - $started" | bc)
      echo "{\"bench\": \"security-kcat\", \"transport\": \"$setup\", \"phase\": \"produce\", \"records\": $n, \"records_per_s\": $(echo "$n / $took" | bc)}"
      started=$(date +%s.%N)
      line=$(run kcat -b 127.0.0.1:$port "${tls[@]}" -C -t kcat-$setup -o beginning -e -q -c $n \
        -X queued.min.messages=1000000 | wc -l)
      took=$(echo "$(date +%s.%N) - $started" | bc)
      [ "$line" = "$n" ] || echo "kcat consumed $line of $n records over $setup" >&2
      echo "{\"bench\": \"security-kcat\", \"transport\": \"$setup\", \"phase\": \"consume\", \"records\": $line, \"records_per_s\": $(echo "$line / $took" | bc)}"
    fi
    local auth=(); [ $setup = secured ] && auth=(env "AUTHORIZATION=Basic $(printf bench:bench-pw | base64)")
    for records in 1 1000; do
      local conns=64; [ "$records" = 1000 ] && conns=16
      sync; echo "+ wrk $setup RECORDS=$records -c$conns" >&2
      "${auth[@]}" env RECORDS=$records TRANSPORT="$scheme-$setup" wrk -t1 -c$conns -d${secs}s -s bench/http/produce.lua \
        $scheme://127.0.0.1:$hport | grep '^{'
    done
    kill $pid; wait $pid || true
  done
  rm -rf "$scratch"
}

# The schema registry (issue 18) on one `weir up`: id lookups/s and registrations/s over its REST API (wrk, one thread,
# 16 connections; each registration is written to `_schemas` and read back before it is answered), then what
# broker-side validation costs producers: `weir bench wire` (100-byte values framed with schema id 1, a fixed(95) Avro
# schema registered under RecordNameStrategy's subject) into a topic without validation, with id validation, and with
# full payload validation.
schemas() {
  local scratch port=19095 sport=18095 pid
  command -v wrk >/dev/null || { echo "wrk not found (Debian package wrk)" >&2; exit 1; }
  scratch=$(mktemp -d)
  $weir --data-dir "$scratch/weir" up --systems none --status-every 3600 --kafka-listen 127.0.0.1:$port \
    --http-listen none --schema-registry-listen 127.0.0.1:$sport --rest-proxy-listen none 2>"$scratch/up.log" &
  pid=$!
  wait_port $port; wait_port $sport
  curl -sf -X POST "http://127.0.0.1:$sport/subjects/R/versions" -H 'Content-Type: application/json' \
    -d '{"schema": "{\"type\": \"fixed\", \"name\": \"R\", \"size\": 95}"}' >/dev/null
  for scenario in lookup register; do
    sync; echo "+ wrk SCENARIO=$scenario" >&2
    SCENARIO=$scenario wrk -t1 -c16 -d${secs}s -s bench/http/registry.lua http://127.0.0.1:$sport | grep '^{'
  done
  local strategy=(--topic-config confluent.value.subject.name.strategy=RecordNameStrategy)
  run $weir bench wire --json --label no-validation --server 127.0.0.1:$port --size 100 --count "$count" --framed 1
  run $weir bench wire --json --label id-validation --server 127.0.0.1:$port --size 100 --count "$count" --framed 1 \
    --topic-config confluent.value.schema.validation=true "${strategy[@]}"
  run $weir bench wire --json --label payload-validation --server 127.0.0.1:$port --size 100 --count "$count" \
    --framed 1 --topic-config confluent.value.schema.validation=true "${strategy[@]}" \
    --topic-config weir.schema.validation.payload=true
  kill $pid; wait $pid || true
  rm -rf "$scratch"
}

# The processing runtime with a trivial handler, on SQLite (scratch file) and on PostgreSQL (a scratch database
# weir_bench, recreated for each run; $WEIR_BENCH_POSTGRES points elsewhere).
runtime() {
  local pg=${WEIR_BENCH_POSTGRES:-postgres://postgres:postgres@127.0.0.1:5432}
  local n=1000000
  [ "$mode" = quick ] && n=100000
  fresh_pg() { psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS weir_bench" -qc "CREATE DATABASE weir_bench" >/dev/null 2>&1; }
  for m in at-least-once exactly-once; do
    run $weir bench handlers --json --mode $m --count $n
    fresh_pg && run $weir bench handlers --json --mode $m --count $n --database "$pg/weir_bench"
  done
  run $weir bench outbox --json --count $((n / 5)) --batch 1000
  fresh_pg && run $weir bench outbox --json --count $((n / 5)) --batch 1000 --database "$pg/weir_bench"
}

# A simulated day of the analytics pipeline at the seed's rate, produced and aggregated as fast as possible, on
# SQLite and on PostgreSQL (a fresh weir_bench database).
analytics() {
  local pg=${WEIR_BENCH_POSTGRES:-postgres://postgres:postgres@127.0.0.1:5432}
  local n=5000000
  [ "$mode" = quick ] && n=500000
  run $weir bench analytics --json --events $n
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS weir_bench" -qc "CREATE DATABASE weir_bench" >/dev/null 2>&1 &&
    run $weir bench analytics --json --events $n --database "$pg/weir_bench"
}

# Runs a command, prints its stdout's last line as JSON with `extra` fields merged in, plus its wall time and peak
# resident memory (the child's, from getrusage).
measured() {
  local extra=$1; shift
  echo "+ $*" >&2
  python3 - "$extra" "$@" <<'PY'
import json, resource, subprocess, sys, time
extra = json.loads(sys.argv[1])
t = time.monotonic()
out = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, check=True).stdout.decode()
wall = time.monotonic() - t
r = json.loads(out.strip().splitlines()[-1])
keep = {k: r[k] for k in ("events", "happy", "stress", "upper_bound", "upper_bound_kind", "policy") if k in r}
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({**extra, **keep, "wall_s": round(wall, 2), "events_per_s": round(r["events"] / wall),
                  "peak_rss_mib": round(rss / 1024, 1)}))
PY
}

# Wedding operations: fifo and edf against the exact optimum on five generated 1,000-event weddings (an embedded weir
# on the virtual clock at full speed), then a million events through ingest -> topics -> teams -> database, on SQLite
# and on PostgreSQL, and once more against a separate `weir up` to see the server's own memory.
wedding() {
  local pg=${WEIR_BENCH_POSTGRES:-postgres://postgres:postgres@127.0.0.1:5432}
  local n=1000000
  [ "$mode" = quick ] && n=100000
  for seed in 1 2 3 4 5; do
    for policy in fifo edf; do
      measured "{\"bench\":\"wedding-policy\",\"seed\":$seed}" \
        $weir wedding simulate --speed max --seed $seed --policy $policy --report json
    done
  done
  measured '{"bench":"wedding-million","database":"sqlite"}' $weir wedding simulate --speed max --events $n --report json
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS weir_bench" -qc "CREATE DATABASE weir_bench" >/dev/null 2>&1 &&
    measured '{"bench":"wedding-million","database":"postgres"}' \
      $weir wedding simulate --speed max --events $n --report json --database "$pg/weir_bench"
  local scratch pid
  scratch=$(mktemp -d)
  $weir --data-dir "$scratch" up --systems wedding --status-every 3600 --kafka-listen none \
    --http-listen 127.0.0.1:18080 --rest-proxy-listen none 2>"$scratch/up.log" &
  pid=$!
  wait_port 18080
  measured '{"bench":"wedding-million-target","database":"sqlite"}' \
    $weir wedding simulate --target http://127.0.0.1:18080 --clock virtual --speed max --events $n --report json
  echo "{\"bench\":\"wedding-million-server\",\"peak_rss_mib\":$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' /proc/$pid/status)}"
  kill $pid; wait $pid || true
  rm -rf "$scratch"
}

# The systems on a Kafka-compatible cluster, against the same systems embedded. Engines: weir's own listener (`weir up
# --systems none`, a fresh data directory each run) and Tansu with its data in PostgreSQL (a fresh database each run);
# every weir instance keeps its state in a fresh PostgreSQL database (weir_bench). Per engine:
# - the analytics producer (`weir analytics produce --bulk N --server`, 4 chunks in flight) against a bare librdkafka
#   producer and consumer (`weir bench wire`, 150-byte records like the analytics events, 4 partitions);
# - the aggregation: N events produced first, then one or two `weir up --bus kafka://...` instances started, timed
#   from their start until every event's offset is stored (flush every second);
# - the wedding end to end (`weir wedding simulate --target`, virtual clock, full speed) on one instance: its desks
#   run on one instance at a time by design, a second one adds HTTP ingest and a standby.
# Embedded: the same aggregation and wedding with `weir up`'s own broker.
scale() {
  local pg=${WEIR_BENCH_POSTGRES:-postgres://postgres:postgres@127.0.0.1:5432}
  local n=1000000 wn=20000 tansu scratch engine instances
  [ "$mode" = scale-quick ] && { n=50000; wn=5000; }
  tansu=${TANSU:-$(scripts/tansu.sh)}
  scratch=$(mktemp -d)
  fresh_db() { psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $1" -qc "CREATE DATABASE $1" >/dev/null 2>&1; }
  # A fresh engine on 127.0.0.1:19092 ($engine_pid), or for `embedded` a data directory with the events in it.
  engine_up() {
    rm -rf "$scratch/cluster"
    case $1 in
      weir|embedded)
        $weir --data-dir "$scratch/cluster" up --systems none --status-every 3600 --kafka-listen 127.0.0.1:19092 \
          --http-listen none --rest-proxy-listen none 2>"$scratch/engine.log" & ;;
      tansu)
        fresh_db tansu_bench
        psql "$pg/tansu_bench" -q -f "$(dirname "$tansu")/../010-schema-v0.6.0.sql" >/dev/null
        "$tansu" broker --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
          --storage-engine "$pg/tansu_bench?sslmode=disable" >"$scratch/engine.log" 2>&1 & ;;
    esac
    engine_pid=$!
    wait_port 19092
    sleep 0.5
  }
  engine_down() { kill $engine_pid; wait $engine_pid || true; }
  stored() { psql "$pg/weir_bench" -Atc "SELECT COALESCE(SUM(next_offset), 0) FROM weir_consumer_offsets WHERE group_id = 'analytics-aggregator'" 2>/dev/null || echo 0; }
  for engine in embedded weir tansu; do
    if [ $engine != embedded ]; then
      engine_up $engine
      run $weir bench wire --json --label "scale-$engine" --server 127.0.0.1:19092 --size 150 --count $n --partitions 4
      engine_down
    fi
    for instances in 1 2; do
      [ $engine = embedded ] && [ $instances = 2 ] && continue
      engine_up $engine
      echo "+ weir analytics produce --bulk $n --server ($engine)" >&2
      local line
      line=$($weir --data-dir "$scratch/producer" --server 127.0.0.1:19092 analytics produce --bulk $n --quiet 2>&1 | tail -1)
      echo "{\"bench\": \"scale-produce\", \"engine\": \"$engine\", \"events\": $n, \"events_per_s\": $(echo "$line" | sed -E 's/.*: ([0-9]+) events\/s.*/\1/')}"
      fresh_db weir_bench
      local bus="kafka://127.0.0.1:19092?session.timeout.ms=10000" pids=() started
      [ $engine = embedded ] && { engine_down; bus=embedded; }
      started=$(date +%s.%N)
      for i in $(seq $instances); do
        local dir="$scratch/instance-$i"
        [ $engine = embedded ] && dir="$scratch/cluster"
        $weir --data-dir "$dir" up --systems analytics --bus "$bus" --database "$pg/weir_bench" --status-every 3600 \
          --kafka-listen none --http-listen none --set analytics.producer=false \
          --set analytics.flush_interval_seconds=1 2>"$scratch/instance-$i.log" &
        pids+=($!)
      done
      echo "+ $instances analytics instance(s) on $engine until $n events are stored" >&2
      until [ "$(stored)" -ge $n ]; do sleep 0.1; done
      local took
      took=$(echo "$(date +%s.%N) - $started" | bc)
      echo "{\"bench\": \"scale-aggregate\", \"engine\": \"$engine\", \"instances\": $instances, \"events\": $n, \"wall_s\": $took, \"events_per_s\": $(echo "$n / $took" | bc)}"
      kill "${pids[@]}"; wait "${pids[@]}" || true
      [ $engine = embedded ] || engine_down
    done
    # The wedding, one instance.
    local bus="kafka://127.0.0.1:19092" pid
    if [ $engine = embedded ]; then bus=embedded; rm -rf "$scratch/cluster"; else engine_up $engine; fi
    fresh_db weir_bench
    $weir --data-dir "$scratch/wedding" up --systems wedding --bus "$bus" --database "$pg/weir_bench" --status-every 3600 \
      --kafka-listen none --http-listen 127.0.0.1:18080 2>"$scratch/wedding.log" &
    pid=$!
    wait_port 18080
    measured "{\"bench\":\"scale-wedding\",\"engine\":\"$engine\",\"instances\":1}" \
      $weir wedding simulate --target http://127.0.0.1:18080 --clock virtual --speed max --events $wn --report json
    kill $pid; wait $pid || true
    rm -rf "$scratch/wedding"
    [ $engine = embedded ] || engine_down
  done
  rm -rf "$scratch"
}

# For the systems' simulations (repair, dispatch): a fresh PostgreSQL database $1 (on $pg).
fresh_db() { psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $1" -qc "CREATE DATABASE $1" >/dev/null 2>&1; }
# Waits until a weir's /health on 127.0.0.1:$1 answers 200.
wait_health() {
  for _ in $(seq 600); do
    curl -sf "127.0.0.1:$1/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "no weir answers on 127.0.0.1:$1/health" >&2
  return 1
}
# Busy and total CPU time of the whole machine so far (all cores, clock ticks); then the busy share since then.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
machine_busy() {
  echo "$1 $(machine_ticks)" | awk '{printf "%.2f", ($3 - $1) / ($4 - $2)}'
}
# A simulate's report ($2, its last line) between the labels ($1) and the measurements ($3), one JSON line.
simulate_line() {
  python3 - "$@" <<'PY'
import json, sys
r = json.loads(sys.argv[2].strip().splitlines()[-1])
print(json.dumps({**json.loads(sys.argv[1]), **r, **json.loads(sys.argv[3])}))
PY
}
# One run of a simulate on a weir of its own: $1 its labels (a JSON object), the rest the command. Prints its line
# with the simulate process's wall time, CPU time and peak RSS (its weir included) and how busy the whole machine
# was (PostgreSQL's processes are not the simulate's); a failed run says so and is skipped. Uses $scratch.
embedded_run() {
  local labels=$1 machine out
  shift
  sync; echo "+ $*" >&2
  machine=$(machine_ticks)
  out=$(/usr/bin/time -v -o "$scratch/time" "$@") || { echo "failed: $*" >&2; return 0; }
  simulate_line "$labels" "$out" "$(time_fields "$scratch/time" "$machine")"
}
# Tansu on in-memory storage listening on 127.0.0.1:$1 (a fresh process: it keeps topics across weir restarts),
# logging to $scratch/tansu.log; sets $tpid. Fails (returns 1) if Tansu is not installed.
start_tansu() {
  if [ ! -x "$tansu" ]; then
    echo "tansu not found: skipping the cluster runs (scripts/tansu.sh installs it)" >&2
    return 1
  fi
  "$tansu" broker --listener-url tcp://127.0.0.1:$1 --advertised-listener-url tcp://127.0.0.1:$1 \
    --storage-engine memory://tansu/ >"$scratch/tansu.log" 2>&1 &
  tpid=$!
  wait_port $1
}
# $2 `weir up --systems $1` on Tansu (127.0.0.1:$tport) and one PostgreSQL database ($pg/$db), HTTP on $3+1, $3+2,
# ..., with the remaining arguments; one after the other, each waited for (the second starts on the tables and topics
# the first created). Sets $pids and $ports; logs go to $scratch/up-N.log.
start_instances() {
  local system=$1 count=$2 base=$3 i
  shift 3
  pids=(); ports=()
  for i in $(seq $count); do
    rm -rf "$scratch/d$i"
    $weir --data-dir "$scratch/d$i" up --systems $system --bus kafka://127.0.0.1:$tport --database "$pg/$db" \
      --status-every 3600 --http-listen 127.0.0.1:$((base + i)) --schema-registry-listen none \
      --rest-proxy-listen none "$@" 2>"$scratch/up-$i.log" &
    pids+=($!); ports+=($((base + i)))
    wait_health $((base + i))
  done
}
# The peak RSS, wall and CPU time `/usr/bin/time -v` wrote to $1, and the machine's busy share since $2, as JSON.
time_fields() {
  awk -F': ' -v busy="$(machine_busy "$2")" '
    /Maximum resident set size/ {rss = $2} /(User|System) time/ {cpu += $2}
    /Elapsed \(wall clock\)/ {n = split($2, a, ":"); for (i = 1; i <= n; i++) wall = wall * 60 + a[i]}
    END {printf "{\"rss_of\": \"simulate\", \"peak_rss_mib\": %.1f, \"process_wall_s\": %.2f, \"cpu_seconds\": %.2f, \"machine_busy\": %s}", rss / 1024, wall, cpu, busy}' "$1"
}

# The car repair shop end to end (seed 001): `weir repair simulate` opens N tickets (100,000) through POST
# /api/repair/tickets in requests of 1,000, two at a time, and waits until every one is closed (a ticket is 4 events over 3 hops: secretary, cash desk,
# ticketing; each hop a consume-transform-produce loop whose batch is one database transaction).
# - Embedded: the simulate starts a weir of its own in a temporary directory (its broker, schema registry and clock at
#   full speed) on SQLite, then on PostgreSQL (a fresh database each run), with 1 and 2 workers per service; the
#   simulate's peak RSS, wall and CPU time from /usr/bin/time -v, and the machine's busy share (/proc/stat).
# - On a Kafka-compatible cluster: Tansu with in-memory storage (a fresh process each run: it keeps topics across weir
#   restarts), one `weir up --systems repair --bus kafka://...` on a fresh PostgreSQL database, the simulate driving it
#   over HTTP; then once with two instances (the simulate targets the first), each one's repair_events_in_total. Tansu
#   0.6 has no EndTxn (Kafka transactions), hence repair.transactions=false there. The instances' peak RSS (VmHWM) and
#   CPU time over the run (/proc), Tansu's CPU time, the machine's busy share.
repair() {
  local pg=${WEIR_BENCH_POSTGRES:-postgres://postgres:postgres@127.0.0.1:5432}
  local n=100000 runs=3 db=weir_bench_repair tport=19097 settle=5 scratch tansu engine workers run out machine
  [ "$mode" = repair-quick ] && { n=2000; runs=1; }
  scratch=$(mktemp -d)
  # Two requests opening tickets at once; the scratch weir's services take batches of up to 2,000 records.
  local simulate=($weir repair simulate --tickets $n --batch 1000 --in-flight 2 --report json)
  for engine in sqlite postgres; do
    for workers in 1 2; do
      for run in $(seq $runs); do
        local database=()
        if [ $engine = postgres ]; then fresh_db $db; database=(--database "$pg/$db"); fi
        embedded_run "{\"bench\": \"repair\", \"mode\": \"embedded\", \"engine\": \"$engine\", \"instances\": 1, \"workers\": $workers, \"run\": $run}" \
          "${simulate[@]}" --workers $workers --max-batch 2000 "${database[@]}"
      done
    done
  done

  tansu=${TANSU:-$(scripts/tansu.sh)}
  local plan instances tpid tcpu pids ports cpus i up extra
  for plan in $(seq $runs | sed 's/^/1:/') 2:1; do
    instances=${plan%%:*}; run=${plan#*:}
    fresh_db $db
    start_tansu $tport || break
    start_instances repair $instances 18096 \
      --set repair.clock_speed=max --set repair.transactions=false --set repair.max_batch=2000
    # The services' groups settle (the second instance's members join) before the clock starts.
    sleep $settle
    cpus=(); for i in "${!pids[@]}"; do cpus+=($(cpu_ticks ${pids[$i]})); done
    tcpu=$(cpu_ticks $tpid)
    sync; echo "+ ${simulate[*]} --target 127.0.0.1:${ports[0]} ($instances weir up on Tansu)" >&2
    machine=$(machine_ticks)
    if out=$("${simulate[@]}" --target 127.0.0.1:${ports[0]}); then
      up=()
      for i in "${!pids[@]}"; do
        up+=("{\"instance\": $((i + 1)), \"peak_rss_mib\": $(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' /proc/${pids[$i]}/status), \"cpu_seconds\": $(( $(cpu_ticks ${pids[$i]}) - cpus[i] ))e-2, \"events_in\": {$(curl -s 127.0.0.1:${ports[$i]}/metrics | sed -nE 's/^repair_events_in_total\{service="([^"]+)"\} (.+)$/"\1": \2/p' | paste -sd, | sed 's/,/, /g')}}")
      done
      extra="{\"rss_of\": \"weir up\", \"peak_rss_mib\": $(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' /proc/${pids[0]}/status), \"machine_busy\": $(machine_busy "$machine"), \"tansu_cpu_seconds\": $(( $(cpu_ticks $tpid) - tcpu ))e-2, \"up\": [$(IFS=,; echo "${up[*]}")]}"
      simulate_line "{\"bench\": \"repair\", \"mode\": \"cluster\", \"engine\": \"tansu-memory+postgres\", \"instances\": $instances, \"workers\": 1, \"run\": $run}" \
        "$out" "$extra"
    else
      echo "repair simulate against Tansu failed (see $scratch/up-*.log, $scratch/tansu.log)" >&2
    fi
    kill "${pids[@]}"; wait "${pids[@]}" || true
    kill $tpid; wait $tpid || true
  done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}

# Dispatch (`weir dispatch simulate`): 1,000 reviewers, 50,000 events written through the API.
# - Embedded (the simulate's own weir, embedded bus) on SQLite and PostgreSQL, two ways: `end-to-end` (reviewers
#   online first: from the first write to the last assignment) and `queued` (--queued-first: every event waiting in
#   the assignment service's queue first, then the reviewers online: the assignment service alone).
# - On Tansu (in-memory storage) with one and two `weir up --systems dispatch --bus kafka://...` on one PostgreSQL
#   database, the simulate driving the first over HTTP, end to end.
dispatch() {
  local pg=${WEIR_BENCH_POSTGRES:-postgres://postgres:postgres@127.0.0.1:5432}
  local runs=3 db=weir_bench_dispatch tport=19098 settle=5 scratch tansu engine how run out machine
  [ "$mode" = dispatch-quick ] && runs=1
  scratch=$(mktemp -d)
  local simulate=($weir dispatch simulate --events 50000 --users 1000 --report json)
  for engine in sqlite postgres; do
    for how in end-to-end queued; do
      for run in $(seq $runs); do
        local database=() flags=()
        if [ $engine = postgres ]; then fresh_db $db; database=(--database "$pg/$db"); fi
        [ $how = queued ] && flags=(--queued-first)
        embedded_run "{\"bench\": \"dispatch\", \"bus\": \"embedded\", \"engine\": \"$engine\", \"instances\": 1, \"run\": $run}" \
          "${simulate[@]}" "${flags[@]}" "${database[@]}"
      done
    done
  done

  tansu=${TANSU:-$(scripts/tansu.sh)}
  local plan instances tpid pids ports i
  for plan in $(seq $runs | sed 's/^/1:/') 2:1; do
    instances=${plan%%:*}; run=${plan#*:}
    fresh_db $db
    start_tansu $tport || break
    start_instances dispatch $instances 18196
    sleep $settle
    sync; echo "+ ${simulate[*]} --target 127.0.0.1:${ports[0]} ($instances weir up on Tansu)" >&2
    machine=$(machine_ticks)
    if out=$("${simulate[@]}" --target 127.0.0.1:${ports[0]}); then
      simulate_line "{\"bench\": \"dispatch\", \"bus\": \"tansu-memory\", \"engine\": \"postgres\", \"instances\": $instances, \"run\": $run}" \
        "$out" "{\"rss_of\": \"weir up\", \"peak_rss_mib\": $(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' /proc/${pids[0]}/status), \"machine_busy\": $(machine_busy "$machine")}"
    else
      echo "dispatch simulate against Tansu failed (see $scratch/up-*.log, $scratch/tansu.log)" >&2
    fi
    kill "${pids[@]}"; wait "${pids[@]}" || true
    kill $tpid; wait $tpid || true
  done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}

if [ "$mode" = waitroom ]; then
  waitroom
  exit 0
fi
if [ "$mode" = waitroom-redis ]; then
  waitroom redis
  exit 0
fi
if [ "$mode" = dispatch ] || [ "$mode" = dispatch-quick ]; then
  dispatch
  exit 0
fi

if [ "$mode" = repair ] || [ "$mode" = repair-quick ]; then
  repair
  exit 0
fi

if [ "$mode" = scale ] || [ "$mode" = scale-quick ]; then
  scale
  exit 0
fi

if [ "$mode" = wedding ]; then
  wedding
  exit 0
fi

if [ "$mode" = analytics ]; then
  analytics
  exit 0
fi

if [ "$mode" = runtime ]; then
  runtime
  exit 0
fi

if [ "$mode" = http ]; then
  http
  exit 0
fi

if [ "$mode" = txn ]; then
  txn
  exit 0
fi

if [ "$mode" = security ] || [ "$mode" = security-http ]; then
  security
  exit 0
fi

if [ "$mode" = schemas ]; then
  schemas
  exit 0
fi
if [ "$mode" = wire ]; then
  wire
  for size in 100 1024; do
    n=$count; [ "$size" = 1024 ] && n=$kcount
    for peer in redis nats; do run $peers throughput --json --peer $peer --size $size --count $n; done
    run $peers throughput --json --peer rabbitmq --size $size --count $((n / 25))
  done
  for peer in redis nats rabbitmq; do run $peers latency --json --peer $peer --rate 10000 --seconds $secs --size 100; done
  exit 0
fi

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
wire
txn
http
runtime
analytics
wedding
