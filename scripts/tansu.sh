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
  if ! curl -fsSL --max-time 60 -o "$schema.part" "$url"; then
    rm -f "$schema.part"
    echo "error: Tansu's schema could not be fetched from $url; put that file at $schema" >&2
    exit 1
  fi
  mv "$schema.part" "$schema"
fi

echo "$binary"
