#!/usr/bin/env bash
# Hangar's single-process server beside Garage (single node, replication 1), same client
# (hangar-load), same workloads, one after the other on this machine. Garage is configured to
# fsync like Hangar always does: metadata_fsync = true, data_fsync = true, no compression.
# Needs `garage` on PATH (`cargo install garage --locked`; it is not a project dependency).
# Usage: scripts/bench-vs-garage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v garage >/dev/null || { echo "garage not found: cargo install garage --locked" >&2; exit 1; }
cargo build --release -q -p hangar -p hangar-integration-tests --bin hangar --bin hangar-load
BIN=target/release
DIR=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

workloads() { # endpoint; a failed workload is reported and the next one runs
    local load="$BIN/hangar-load --endpoint $1 --bucket bench"
    echo "### 4 KiB x 4000, 16 concurrent";  $load --size 4KiB --count 4000 --concurrency 16 --op both 2>&1 | cut -c1-240 || true
    echo "### 1 MiB x 400, 8 concurrent";    $load --size 1MiB --count 400 --concurrency 8 --op both 2>&1 | cut -c1-240 || true
    echo "### 64 MiB x 16, 4 concurrent";    $load --size 64MiB --count 16 --concurrency 4 --op both 2>&1 | cut -c1-240 || true
    echo "### 1 GiB multipart, 64 MiB parts"; $load --size 1GiB --count 1 --multipart-part-size 64MiB --op both 2>&1 | cut -c1-240 || true
}

echo "## Hangar (hangar server)"
S3=127.0.0.1:$(port)
HANGAR_LOG=warn "$BIN/hangar" server --data-dir "$DIR/hangar" --s3-addr "$S3" --rpc-addr 127.0.0.1:$(port) \
    --admin-addr 127.0.0.1:$(port) >"$DIR/hangar.out" 2>"$DIR/hangar.err" &
PID=$!
for _ in $(seq 100); do grep -q S3_ENDPOINT "$DIR/hangar.out" 2>/dev/null && break; sleep 0.1; done
(set -a; . "$DIR/hangar.out"; set +a; workloads "$S3_ENDPOINT")
kill "$PID"; wait "$PID" || true; PID=

echo "## Garage $(garage --version 2>/dev/null | head -1)"
GS3=127.0.0.1:$(port); GRPC=127.0.0.1:$(port)
cat >"$DIR/garage.toml" <<TOML
metadata_dir = "$DIR/garage/meta"
data_dir = "$DIR/garage/data"
db_engine = "lmdb"
replication_factor = 1
metadata_fsync = true
data_fsync = true
compression_level = "none"
rpc_bind_addr = "$GRPC"
rpc_public_addr = "$GRPC"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "$GS3"
root_domain = ".s3.garage"
TOML
G="garage -c $DIR/garage.toml"
RUST_LOG=warn $G server >"$DIR/garage.log" 2>&1 &
PID=$!
for _ in $(seq 100); do $G status >/dev/null 2>&1 && break; sleep 0.2; done
node=$($G status 2>/dev/null | awk '/^[0-9a-f]{16}/ {print $1; exit}')
$G layout assign -z dc1 -c 100G "$node" >/dev/null
$G layout apply --version 1 >/dev/null
keyout=$($G key create bench-key)
export AWS_ACCESS_KEY_ID=$(echo "$keyout" | awk '/Key ID:/ {print $3}')
export AWS_SECRET_ACCESS_KEY=$(echo "$keyout" | awk '/Secret key:/ {print $3}')
export AWS_DEFAULT_REGION=us-east-1
$G bucket create bench >/dev/null
$G bucket allow --read --write --owner bench --key bench-key >/dev/null
workloads "http://$GS3"
