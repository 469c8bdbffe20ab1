#!/usr/bin/env bash
# What the frontend's catalog cache gives the read path: the same release `hangar server`
# binary with `[s3_api] catalog_cache_ms` at its default (1000) and at 0 (every request reads
# its key, bucket and rights), rounds alternating, two of each. GETs of 4 KiB objects at
# concurrency 1 and 32, of 1 MiB objects at 8 and of 64 MiB objects at 2. Data in temp dirs.
# Usage: scripts/bench-read-path.sh   (prints one line per workload and round)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p hangar -p hangar-integration-tests --bin hangar --bin hangar-load
BIN=target/release
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

dir="" pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$dir" ] && rm -rf "$dir"' EXIT

round() { # catalog_cache_ms
    dir=$(mktemp -d)
    S3=127.0.0.1:$(port) RPC=127.0.0.1:$(port) ADM=127.0.0.1:$(port)
    HANGAR_S3_CATALOG_CACHE_MS=$1 HANGAR_LOG=warn "$BIN/hangar" server --data-dir "$dir/data" \
        --s3-addr "$S3" --rpc-addr "$RPC" --admin-addr "$ADM" >"$dir/out" 2>"$dir/err" &
    pid=$!
    for _ in $(seq 600); do grep -q S3_ENDPOINT "$dir/out" 2>/dev/null && break; sleep 0.1; done
    set -a; . "$dir/out"; set +a
    local load="$BIN/hangar-load --endpoint $S3_ENDPOINT --bucket bench"
    result() { echo "cache_ms=$1 $2: $(grep -o 'ops/s=.*')"; }
    $load --size 4KiB --count 2000 --concurrency 16 --op put >/dev/null
    $load --size 4KiB --count 1000 --concurrency 1 --op get | result "$1" "4 KiB GET, 1 at a time"
    $load --size 4KiB --count 2000 --concurrency 32 --op get | result "$1" "4 KiB GET, 32 concurrent"
    $load --size 1MiB --count 300 --concurrency 8 --op put --prefix m/ >/dev/null
    $load --size 1MiB --count 300 --concurrency 8 --op get --prefix m/ | result "$1" "1 MiB GET, 8 concurrent"
    $load --size 64MiB --count 4 --concurrency 2 --op put --prefix g/ >/dev/null
    $load --size 64MiB --count 4 --concurrency 2 --op get --prefix g/ | result "$1" "64 MiB GET, 2 concurrent"
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
    pid="" dir=""
}

for _ in 1 2; do round 1000; round 0; done
