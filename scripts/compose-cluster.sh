#!/usr/bin/env bash
# A Hangar cluster in containers (compose.yml): a control plane, three data nodes in zones
# a, b and c, two S3 frontends.
#
#   scripts/compose-cluster.sh up     build the image, start the cluster, wait for the
#                                     automatic layout, create a key and a bucket `demo`,
#                                     print `export` lines for the aws CLI and the hangar CLI
#   scripts/compose-cluster.sh down   stop it and delete its containers, network and volumes
#   scripts/compose-cluster.sh stop|start|restart NODE   one container (control-plane,
#                                     data1..3, s3-1, s3-2); its volumes stay
#
# Its state (secret, admin token, published ports, the key) is in $HANGAR_COMPOSE_DIR
# (default target/compose); `up` on a running cluster prints the same lines again.
# Docker and docker-compose (or `docker compose`) are needed; HANGAR_BIN picks the binary
# put in the image (default: target/release/hangar, built if needed).
#
# HANGAR_TELEMETRY=1 on `up` adds the telemetry stack of docker/telemetry/compose.yml
# (collector, Jaeger, Prometheus, Grafana; every process exports its traces to the
# collector); the cluster's later commands keep it until `down`.
set -euo pipefail

usage() { echo "usage: $0 up|down  or  $0 stop|start|restart NODE" >&2; exit 2; }
[ $# -ge 1 ] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
state=${HANGAR_COMPOSE_DIR:-$root/target/compose}
project=${COMPOSE_PROJECT_NAME:-hangar}
env_file=$state/cluster.env

# The Compose plugin where the Docker CLI has it, else the standalone docker-compose.
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    compose_cmd=(docker-compose)
fi
files=(-f "$root/compose.yml")
if [ "${1:-}" = up ] && [ "${HANGAR_TELEMETRY:-0}" = 1 ]; then
    mkdir -p "$state"
    touch "$state/telemetry"
fi
[ -e "$state/telemetry" ] && files+=(-f "$root/docker/telemetry/compose.yml")
compose() { "${compose_cmd[@]}" -p "$project" "${files[@]}" --env-file "$env_file" "$@"; }

case "$1" in
    down)
        [ $# -eq 1 ] || usage
        if [ -e "$env_file" ]; then
            compose down -v --remove-orphans
            rm -f "$env_file" "$state/exports" "$state/telemetry"
        else
            echo "no compose cluster recorded in $state" >&2
        fi
        exit 0
        ;;
    stop | start | restart)
        [ $# -eq 2 ] || usage
        [ -e "$env_file" ] || { echo "no compose cluster recorded in $state" >&2; exit 1; }
        case "$2" in
            control-plane | data[1-3] | s3-[12]) ;;
            *) echo "unknown node \`$2\` (control-plane, data1..3, s3-1, s3-2)" >&2; exit 2 ;;
        esac
        compose "$1" "$2"
        exit 0
        ;;
    up) [ $# -eq 1 ] || usage ;;
    *) usage ;;
esac

mkdir -p "$state"
if [ ! -e "$env_file" ]; then
    port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    # Computed first, so that a failure stops the script before anything is written.
    secret=$(hex) token=$(hex) rpc_port=$(port) s3_port=$(port) s3_port_2=$(port)
    (umask 077 && cat >"$env_file") <<ENV
HANGAR_RPC_SECRET=$secret
HANGAR_ADMIN_TOKEN=$token
HANGAR_RPC_PORT=$rpc_port
HANGAR_S3_PORT=$s3_port
HANGAR_S3_PORT_2=$s3_port_2
HANGAR_IMAGE=${HANGAR_IMAGE:-hangar:latest}
ENV
fi
# The cluster's values, for this script and what it runs (build-image.sh tags HANGAR_IMAGE).
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a

"$root/scripts/build-image.sh"
compose up -d --quiet-pull >&2

# The image's own CLI, run inside the control plane's container: it reaches the control
# plane on loopback with the token from the container's environment.
cli() { compose exec -T control-plane /hangar -c /etc/hangar/hangar.toml "$@"; }

# The automatic layout gives the three data nodes their roles once all three heartbeat.
for attempt in $(seq 120); do
    shown=$(cli layout show 2>/dev/null || true)
    if grep -q 'Current layout: version [1-9]' <<<"$shown"; then break; fi
    [ "$attempt" = 120 ] && { compose logs --tail 30 >&2; echo "no layout after 60 s" >&2; exit 1; }
    sleep 0.5
done

if [ ! -s "$state/exports" ]; then
    # shellcheck source=scripts/demo-key.sh
    . "$root/scripts/demo-key.sh"
    create_demo_key
    # Credentials: readable by this user only.
    (umask 077 && cat >"$state/exports") <<EXPORTS
export S3_ENDPOINT=http://127.0.0.1:$HANGAR_S3_PORT
export S3_ENDPOINT_2=http://127.0.0.1:$HANGAR_S3_PORT_2
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export AWS_DEFAULT_REGION=us-east-1
export HANGAR_RPC_ADDR=127.0.0.1:$HANGAR_RPC_PORT
export HANGAR_ADMIN_TOKEN=$HANGAR_ADMIN_TOKEN
EXPORTS
fi
cat "$state/exports"
