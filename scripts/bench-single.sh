#!/usr/bin/env bash
# Measures the single-process server: PUT/GET throughput of 4 KiB, 1 MiB and 64 MiB objects and a
# 1 GiB multipart upload, and the
# server's resident memory during a 1 GiB PUT and GET. Release build; data in a temp dir.
# Usage: scripts/bench-single.sh   (prints the figures recorded in BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p hangar -p hangar-integration-tests --bin hangar --bin hangar-load
BIN=target/release
DIR=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3=127.0.0.1:$(port); RPC=127.0.0.1:$(port); ADM=127.0.0.1:$(port)
HANGAR_LOG=warn "$BIN/hangar" server --data-dir "$DIR/data" --s3-addr "$S3" --rpc-addr "$RPC" --admin-addr "$ADM" >"$DIR/out" 2>"$DIR/err" &
PID=$!
for _ in $(seq 100); do grep -q S3_ENDPOINT "$DIR/out" 2>/dev/null && break; sleep 0.1; done
set -a; . "$DIR/out"; set +a
LOAD="$BIN/hangar-load --endpoint $S3_ENDPOINT --bucket bench"
"$BIN/hangar-load" --endpoint "$S3_ENDPOINT" --bucket bench --size 1 --count 1 --concurrency 1 --op put >/dev/null

rss() { awk "/^$1:/ {print \$2}" /proc/$PID/status; }
# Memory first, on a fresh process, so earlier transfers do not inflate the baseline.
echo "## 1 GiB object, memory of the server process"
echo 5 > /proc/$PID/clear_refs   # resets VmHWM (peak RSS) to the current RSS
before=$(rss VmRSS)
$LOAD --size 1GiB --count 1 --concurrency 1 --op put
peak_put=$(rss VmHWM)
echo 5 > /proc/$PID/clear_refs
before_get=$(rss VmRSS)
$LOAD --size 1GiB --count 1 --concurrency 1 --op get
peak_get=$(rss VmHWM)
echo "RSS before PUT: $((before / 1024)) MiB, peak during PUT: $((peak_put / 1024)) MiB (+$(((peak_put - before) / 1024)) MiB)"
echo "RSS before GET: $((before_get / 1024)) MiB, peak during GET: $((peak_get / 1024)) MiB (+$(((peak_get - before_get) / 1024)) MiB)"

echo "## 4 KiB objects, 4000 ops, 16 concurrent"
$LOAD --size 4KiB --count 4000 --concurrency 16 --op both
echo "## 64 MiB objects, 16 ops, 4 concurrent"
$LOAD --size 64MiB --count 16 --concurrency 4 --op both
echo "## 1 MiB objects, 400 ops, 8 concurrent"
$LOAD --size 1MiB --count 400 --concurrency 8 --op both
echo "## 1 GiB object, multipart (64 MiB parts)"
$LOAD --size 1GiB --count 1 --concurrency 1 --multipart-part-size 64MiB --op both
