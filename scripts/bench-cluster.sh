#!/usr/bin/env bash
# Measures the local cluster (scripts/local-cluster.sh: 1 control plane, 3 data nodes,
# 2 frontends, replication 3, all on this machine): PUT/GET throughput and latency of 4 KiB
# and 1 MiB objects, and a 1 GiB multipart upload, through frontend 1.
# Usage: scripts/bench-cluster.sh
set -euo pipefail
. "$(dirname "$0")/bench-env.sh"

echo "## 4 KiB objects, 4000 ops, 16 concurrent"
$LOAD --size 4KiB --count 4000 --concurrency 16 --op both
echo "## 1 MiB objects, 400 ops, 8 concurrent"
$LOAD --size 1MiB --count 400 --concurrency 8 --op both
echo "## 1 GiB object, multipart (64 MiB parts)"
$LOAD --size 1GiB --count 1 --concurrency 1 --multipart-part-size 64MiB --op both
