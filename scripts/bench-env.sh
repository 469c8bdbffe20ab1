# Sourced by the bench scripts: builds the release binaries, starts the local cluster
# (scripts/local-cluster.sh) in a temp dir DIR that is removed on exit, exports its
# variables and sets LOAD to hangar-load against frontend 1 and bucket `demo`.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p hangar -p hangar-integration-tests --bin hangar --bin hangar-load
DIR=$(mktemp -d)
trap 'scripts/local-cluster.sh down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
HANGAR_LOG=warn HANGAR_BIN=target/release/hangar scripts/local-cluster.sh up "$DIR" >"$DIR/env"
. "$DIR/env"
LOAD="target/release/hangar-load --endpoint $S3_ENDPOINT --bucket demo"
