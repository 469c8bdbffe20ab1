#!/usr/bin/env bash
# What tracing costs: the same load against a release `hangar server` without a trace sink,
# with one at sampling ratio 1.0 (every request exported) and at 0.0 (none exported). The sink is hangar-otlp-sink (an OTLP/gRPC receiver that counts spans) on the
# same machine. Rounds alternate between the three settings (ROUNDS of each, default 2) and
# every round starts a fresh server; prints each round's figures.
# Usage: scripts/bench-tracing.sh   (the figures recorded in BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p hangar -p hangar-integration-tests --bin hangar --bin hangar-load --bin hangar-otlp-sink
BIN=target/release
DIR=$(mktemp -d)
PID=""
SINK_PID=""
trap 'kill $PID $SINK_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK=127.0.0.1:$(port)
"$BIN/hangar-otlp-sink" "$SINK" >"$DIR/sink.log" 2>&1 &
SINK_PID=$!

# Starts a server with the given extra environment; sets PID and LOAD.
start() {
    local data=$DIR/data-$RANDOM
    S3=127.0.0.1:$(port); RPC=127.0.0.1:$(port); ADM=127.0.0.1:$(port)
    env HANGAR_LOG=warn "$@" "$BIN/hangar" server --data-dir "$data" --s3-addr "$S3" --rpc-addr "$RPC" \
        --admin-addr "$ADM" >"$DIR/out" 2>"$DIR/err" &
    PID=$!
    for _ in $(seq 100); do grep -q S3_ENDPOINT "$DIR/out" 2>/dev/null && break; sleep 0.1; done
    set -a; . "$DIR/out"; set +a
    LOAD="$BIN/hangar-load --endpoint $S3_ENDPOINT --bucket bench"
    $LOAD --size 1 --count 1 --concurrency 1 --op put >/dev/null
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

for round in $(seq "${ROUNDS:-2}"); do
    for mode in none ratio-1.0 ratio-0.0; do
        case $mode in
            none) start ;;
            ratio-1.0) start HANGAR_ADMIN_TRACE_SINK="http://$SINK" HANGAR_ADMIN_TRACE_SAMPLE_RATIO=1.0 ;;
            ratio-0.0) start HANGAR_ADMIN_TRACE_SINK="http://$SINK" HANGAR_ADMIN_TRACE_SAMPLE_RATIO=0.0 ;;
        esac
        echo "## round $round, $mode: 4 KiB objects, 3000 ops, 16 concurrent"
        $LOAD --size 4KiB --count 3000 --concurrency 16 --op both
        echo "## round $round, $mode: 1 MiB objects, 300 ops, 8 concurrent"
        $LOAD --size 1MiB --count 300 --concurrency 8 --op both
        stop
    done
done
kill -INT "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""
tail -n 1 "$DIR/sink.log"
