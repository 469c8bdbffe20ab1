#!/usr/bin/env bash
# Sequential internal round trips of a request: the local cluster (scripts/local-cluster.sh:
# 3 data nodes, replication 3, 2 frontends) with a hangar-delay-proxy of DELAY_MS (default
# 5) ms each way in front of every data node, so every call to a data node takes
# 2 x DELAY_MS longer, and the same cluster without the proxies. One client request at a time
# through frontend 1: the median latency of each workload with and without the delay; their
# difference divided by 2 x DELAY_MS is the number of round trips the request waited for one
# after another. Both topologies: separate frontend processes (every call crosses a proxy),
# and frontends served by data nodes 1 and 2 (HANGAR_COLOCATE=1: calls to the node of the
# same process stay in it, calls to the other two cross their proxies). Release build; data
# in temp dirs.
# Usage: scripts/bench-round-trips.sh   (prints the table recorded in BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p hangar -p hangar-integration-tests --bin hangar --bin hangar-load --bin hangar-delay-proxy
DELAY=${DELAY_MS:-5}
[ "$DELAY" -gt 0 ] 2>/dev/null || { echo "DELAY_MS must be a positive number of milliseconds" >&2; exit 2; }
OUT=$(mktemp -d)
trap 'for d in "$OUT"/c-*; do [ -d "$d" ] && scripts/local-cluster.sh down "$d" >/dev/null 2>&1; done; rm -rf "$OUT"' EXIT

# The workloads, one request at a time: name, hangar-load arguments.
WORKLOADS=(
    "4 KiB PUT|--size 4KiB --count 200 --op put --prefix small/"
    "4 KiB GET (cached key and bucket)|--size 4KiB --count 200 --op get --prefix small/"
    "1 MiB PUT|--size 1MiB --count 40 --op put --prefix large/"
    "1 MiB GET|--size 1MiB --count 40 --op get --prefix large/"
    "ListObjectsV2, a page of 200 keys|--size 0 --count 50 --op list --prefix small/"
)

# Runs every workload against a fresh cluster; $1: the delay (0: no proxy), $2: split or
# colocated. Writes OUT/<topology>-<delay>.txt: one "name|p50" line per workload.
# In a subshell: the cluster's export lines must not reach the next cluster's processes.
run() (
    local delay=$1 topology=$2 dir="$OUT/c-$2-$1" line name args p50
    if [ "$delay" = 0 ]; then unset HANGAR_RPC_DELAY_MS; else export HANGAR_RPC_DELAY_MS=$delay; fi
    if [ "$topology" = colocated ]; then export HANGAR_COLOCATE=1; else unset HANGAR_COLOCATE; fi
    local envs
    envs=$(HANGAR_LOG=warn scripts/local-cluster.sh up "$dir")
    eval "$envs"
    for line in "${WORKLOADS[@]}"; do
        name=${line%%|*}
        args=${line#*|}
        # shellcheck disable=SC2086
        p50=$(target/release/hangar-load --endpoint "$S3_ENDPOINT" --bucket roundtrips --concurrency 1 $args |
            sed -n 's/.* p50=\([0-9.]*\)ms.*/\1/p')
        echo "$name|$p50" >>"$OUT/$topology-$delay.txt"
    done
    scripts/local-cluster.sh down "$dir" >/dev/null 2>&1
)

for topology in split colocated; do
    run 0 "$topology"
    run "$DELAY" "$topology"
done
echo "| request (one at a time, frontend 1) | separate frontends: p50 without / with ${DELAY} ms each way | round trips | frontends in data nodes: p50 without / with | round trips |"
echo "|---|---|---|---|---|"
paste -d'|' "$OUT/split-0.txt" "$OUT/split-$DELAY.txt" "$OUT/colocated-0.txt" "$OUT/colocated-$DELAY.txt" |
    awk -F'|' -v d="$DELAY" '{ printf "| %s | %.1f / %.1f ms | %.1f | %.1f / %.1f ms | %.1f |\n",
        $1, $2, $4, ($4 - $2) / (2 * d), $6, $8, ($8 - $6) / (2 * d) }'
