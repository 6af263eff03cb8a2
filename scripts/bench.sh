#!/usr/bin/env bash
# `make bench`: release build, then galaxy-bench against the local servers, in a database
# (galaxy_bench) and Redis keys (database 13, prefix bench:) of its own. Extra arguments go
# to galaxy-bench (see `target/release/galaxy-bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin gamemaster --bin galaxy-bench >&2
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "postgres: $(psql "${GALAXY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}" -Atc 'show server_version' 2>/dev/null || echo '?'), redis: $(redis-server --version 2>/dev/null | awk '{print $3}')"
exec "${CARGO_TARGET_DIR:-target}/release/galaxy-bench" "$@"
