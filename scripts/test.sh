#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed (https://rustup.rs)" >&2
  exit 1
fi

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# A command the tests drive, from its Debian package when missing; the tests fail, not skip, without it.
need() { # need COMMAND PACKAGE WHY
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (Debian package) for $3" >&2
  apt_install "$2" || true
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is required by the tests and could not be installed" >&2; exit 1; }
}

need kcat kcat "the Kafka compatibility tests"   # librdkafka's command-line client
need curl curl "the HTTP tests of weir up"       # the seed documents' requests are curl commands
need unshare util-linux "the full-disk test"      # mounts a small tmpfs in a namespace of its own, without root
# promtool checks deploy/prometheus and runs its alert rules over weir's own metrics (Debian's prometheus package,
# without the exporters it recommends).
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (Debian package) for promtool, which the alert rules' tests run" >&2
  apt_install --no-install-recommends prometheus || true
  command -v promtool >/dev/null 2>&1 || { echo "error: promtool is required by the tests and could not be installed" >&2; exit 1; }
fi

# kafka-python (PyPI) drives the Python client test; it fails, not skips, without it.
if ! python3 -c "import kafka" >/dev/null 2>&1; then
  echo "installing kafka-python (PyPI) for the Python client test" >&2
  python3 -m pip install -q kafka-python >/dev/null 2>&1 || true
  python3 -c "import kafka" >/dev/null 2>&1 || { echo "error: kafka-python is required by the tests and could not be installed" >&2; exit 1; }
fi

# confluent-kafka (librdkafka 2.x) and aiokafka (PyPI) drive the transaction tests; they fail, not skip, without them.
for module in confluent_kafka:confluent-kafka aiokafka:aiokafka; do
  if ! python3 -c "import ${module%%:*}" >/dev/null 2>&1; then
    echo "installing ${module#*:} (PyPI) for the transaction tests" >&2
    python3 -m pip install -q "${module#*:}" >/dev/null 2>&1 || true
    python3 -c "import ${module%%:*}" >/dev/null 2>&1 || { echo "error: ${module#*:} is required by the tests and could not be installed" >&2; exit 1; }
  fi
done

# confluent-kafka's schema registry client and its Avro, JSON Schema and Protobuf serializers (the package's extras:
# fastavro, jsonschema, protobuf, authlib, ...) drive the schema registry tests.
if ! python3 -c "import confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.json_schema, \
confluent_kafka.schema_registry.protobuf" >/dev/null 2>&1; then
  echo "installing confluent-kafka's schema registry extras (PyPI) for the schema registry tests" >&2
  python3 -m pip install -q "confluent-kafka[avro,json,protobuf,schemaregistry]" >/dev/null 2>&1 || true
  python3 -c "import confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.json_schema, \
confluent_kafka.schema_registry.protobuf" >/dev/null 2>&1 ||
    { echo "error: confluent-kafka's schema registry extras are required by the tests and could not be installed" >&2; exit 1; }
fi

# grpcio and grpcio-tools (PyPI) drive the waitroom's gRPC test: a client generated from the repository's .proto.
if ! python3 -c "import grpc, grpc_tools" >/dev/null 2>&1; then
  echo "installing grpcio and grpcio-tools (PyPI) for the waitroom's gRPC test" >&2
  python3 -m pip install -q grpcio grpcio-tools >/dev/null 2>&1 || true
  python3 -c "import grpc, grpc_tools" >/dev/null 2>&1 ||
    { echo "error: grpcio and grpcio-tools are required by the tests and could not be installed" >&2; exit 1; }
fi

# kafkajs (npm) drives the JavaScript client test; installed once into ~/.cache/weir/node, outside the repo.
need node nodejs "the kafkajs test"
need npm npm "installing kafkajs"
node_modules="${WEIR_NODE_MODULES:-$HOME/.cache/weir/node/node_modules}"
if [ ! -d "$node_modules/kafkajs" ]; then
  echo "installing kafkajs (npm) into $(dirname "$node_modules") for the JavaScript client test" >&2
  mkdir -p "$(dirname "$node_modules")"
  (cd "$(dirname "$node_modules")" && npm install --silent --no-audit --no-fund kafkajs@2 >/dev/null 2>&1) || true
  [ -d "$node_modules/kafkajs" ] || { echo "error: kafkajs is required by the tests and could not be installed" >&2; exit 1; }
fi

# The web console's browser test: Debian's Chromium, driven by npm's playwright-core (beside kafkajs).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the web console's browser test" >&2
  apt_install --no-install-recommends chromium || true
  command -v chromium >/dev/null 2>&1 || { echo "error: chromium is required by the tests and could not be installed" >&2; exit 1; }
fi
if [ ! -d "$node_modules/playwright-core" ]; then
  echo "installing playwright-core (npm) into $(dirname "$node_modules") for the web console's browser test" >&2
  (cd "$(dirname "$node_modules")" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null 2>&1) || true
  [ -d "$node_modules/playwright-core" ] || { echo "error: playwright-core is required by the tests and could not be installed" >&2; exit 1; }
fi

# schemathesis (PyPI) fuzzes the HTTP API against its OpenAPI document; the test fails, not skips, without it.
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "installing schemathesis (PyPI) for the HTTP API fuzz test" >&2
  python3 -m pip install -q schemathesis >/dev/null 2>&1 || true
  command -v schemathesis >/dev/null 2>&1 || { echo "error: schemathesis is required by the tests and could not be installed" >&2; exit 1; }
fi

# PyYAML (PyPI) reads deploy/scale-out's files in scripts/check-deploy.py.
if ! python3 -c "import yaml" >/dev/null 2>&1; then
  echo "installing PyYAML (PyPI) for the deployment files' check" >&2
  python3 -m pip install -q pyyaml >/dev/null 2>&1 || true
  python3 -c "import yaml" >/dev/null 2>&1 || { echo "error: PyYAML is required by the tests and could not be installed" >&2; exit 1; }
fi

# PostgreSQL and Redis back the runtime's store tests, which fail, not skip, without them: start them, or install them
# from Debian's packages first on a machine that has neither.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_port() { for _ in $(seq 50); do port_open "$1" && return 0; sleep 0.2; done; return 1; }

if ! port_open 5432; then
  echo "PostgreSQL is not running on 127.0.0.1:5432: starting it" >&2
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
  as_root service postgresql start >/dev/null 2>&1 || as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -1)" main start || true
  wait_port 5432 || { echo "error: PostgreSQL is required by the tests and could not be started" >&2; exit 1; }
  # A fresh Debian cluster asks for a password over TCP: give the tests' user the one they send.
  as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
fi
if ! port_open 6379; then
  echo "Redis is not running on 127.0.0.1:6379: starting it" >&2
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null 2>&1 || true
  wait_port 6379 || { echo "error: Redis is required by the tests and could not be started" >&2; exit 1; }
fi

# Tansu (a Kafka-compatible broker keeping its data in PostgreSQL) is the cluster the scale-out tests run weir on;
# installed once into ~/.cache/weir/tansu (about 10 minutes the first time), never skipped.
scripts/tansu.sh >/dev/null

# cargo-nextest runs each test in its own process (the crash tests re-execute their own binary); fall back to cargo test.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --workspace --no-fail-fast "$@"
fi

# The documentation's examples (nextest does not run doctests).
cargo test --workspace --doc --quiet

# A brief run of the cargo-fuzz targets in fuzz/ (Kafka request decoding; nightly, its first build takes about five
# minutes): a crash fails the suite. `scripts/fuzz.sh` without an argument is the longer, scheduled run.
scripts/fuzz.sh 20
