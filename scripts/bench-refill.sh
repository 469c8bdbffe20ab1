#!/usr/bin/env bash
# Measures self-healing on the local cluster (scripts/local-cluster.sh, replication 3):
# N objects of 16 KiB (default 10 000, one block each, all different) are written, then
# data node 3 is stopped, its metadata and block directories deleted, and the node started
# again with its own command line. Prints how long it takes to hold again every block its peers held and to
# serve reads (its first complete anti-entropy round), and the throughput of the same client
# workload before the wipe and while the node refills.
# Usage: scripts/bench-refill.sh [N]
set -euo pipefail
N=${1:-10000}
. "$(dirname "$0")/bench-env.sh"
# The same workload before and during the refill: 4 KiB PUTs then GETs, 8 at a time.
WORKLOAD="--size 4KiB --count 3000 --concurrency 8 --op both"

blocks() { find "$DIR/$1/blocks" -path '*/[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*' -type f -printf '%f\n' | sort; }

echo "## writing $N objects of 16 KiB"
$LOAD --size 16KiB --count "$N" --concurrency 16 --op put --prefix fill/ --unique
# Every node holds every block before the wipe (the third copy lands after the quorum).
for _ in $(seq 600); do
    [ "$(blocks data1 | wc -l)" = "$(blocks data3 | wc -l)" ] && [ "$(blocks data2 | wc -l)" = "$(blocks data3 | wc -l)" ] && break
    sleep 0.5
done
blocks data1 >"$DIR/before"
echo "blocks per node: $(wc -l <"$DIR/before")"

echo "## workload without a refill"
$LOAD $WORKLOAD --prefix base/

HANGAR_BIN=target/release/hangar scripts/local-cluster.sh stop "$DIR" data3
rm -rf "$DIR/data3/meta" "$DIR/data3/blocks"
start=$(date +%s.%N)
# At info level its log says when the rebuild is over.
HANGAR_LOG=info HANGAR_BIN=target/release/hangar scripts/local-cluster.sh restart "$DIR" data3
echo "## workload while data3 refills"
$LOAD $WORKLOAD --prefix during/ >"$DIR/during" 2>&1 &
load=$!
blocks_at="" rebuilt_at=""
while [ -z "$blocks_at" ] || [ -z "$rebuilt_at" ]; do
    now=$(date +%s.%N)
    if [ -z "$blocks_at" ] && [ -z "$(comm -23 "$DIR/before" <(blocks data3))" ]; then
        blocks_at=$(echo "$now - $start" | bc)
    fi
    if [ -z "$rebuilt_at" ] && grep -q "rebuilt from the other replicas" "$DIR/data3.log"; then
        rebuilt_at=$(echo "$now - $start" | bc)
    fi
    if (($(echo "$now - $start > 1800" | bc))); then echo "data3 did not refill within 30 minutes" >&2; exit 1; fi
    sleep 0.5
done
wait "$load"
cat "$DIR/during"
echo "## data3 holds every block its peers held after ${blocks_at}s; serves reads again after ${rebuilt_at}s (from its restart, which includes up to 7 s for the control plane to see the old process gone)"
