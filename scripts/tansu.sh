#!/usr/bin/env bash
# Installs Tansu 0.6.0, the Kafka-compatible broker (brokers keep their data in PostgreSQL) that the scale-out tests
# and benchmarks run weir's systems on, into ~/.cache/weir/tansu (outside the repository, kept between runs), with
# its PostgreSQL schema beside it. Prints the binary's path. The first install compiles it: about 10 minutes here.
set -euo pipefail

version=0.6.0
cache="${WEIR_TANSU_CACHE:-$HOME/.cache/weir/tansu}"
binary="$cache/bin/tansu"
schema="$cache/010-schema-v$version.sql"
mkdir -p "$cache"

if [ ! -x "$binary" ]; then
  echo "installing Tansu $version into $cache (cargo install; about 10 minutes the first time)" >&2
  cargo install --quiet --locked tansu --version "$version" --features dynostore,postgres --root "$cache" >&2 || {
    echo "error: Tansu could not be installed (cargo install tansu --version $version)" >&2
    exit 1
  }
fi

# The schema is not part of the published crates: it is etc/initdb.d/010-schema.sql of the v0.6.0 tag.
if [ ! -s "$schema" ]; then
  url="https://raw.githubusercontent.com/tansu-io/tansu/v$version/etc/initdb.d/010-schema.sql"
  echo "fetching Tansu's PostgreSQL schema from $url" >&2
  # It is not on any package registry: a machine that reaches only those runs the tests on Tansu's in-memory
  # storage (weir_runtime::testing::Tansu says so in each test's output).
  if curl -fsSL --max-time 30 -o "$schema.part" "$url"; then
    mv "$schema.part" "$schema"
  else
    rm -f "$schema.part"
    echo "warning: Tansu's PostgreSQL schema could not be fetched from $url: the tests will run Tansu on its" >&2
    echo "         in-memory storage; put that file at $schema to run them on PostgreSQL" >&2
  fi
fi

echo "$binary"
