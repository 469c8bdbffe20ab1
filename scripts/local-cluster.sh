#!/usr/bin/env bash
# A local Hangar cluster on loopback: a control plane, three data nodes (zones a, b, c) and
# two S3 frontends, each with its config, data and log under DIR and its PID in DIR/*.pid.
#
#   scripts/local-cluster.sh up DIR     start it, apply a layout, create a key and bucket `demo`,
#                                       print `export` lines for the aws CLI and the hangar CLI
#   scripts/local-cluster.sh down DIR   stop exactly the processes `up` started
#   scripts/local-cluster.sh stop DIR NODE      stop one process (control-plane, data1..3, s3-1, s3-2)
#   scripts/local-cluster.sh restart DIR NODE   start it again (after stop, a crash or kill -9)
#
# `up` also writes DIR/prometheus/{control-plane,data-node,s3-frontend}.json: the processes'
# admin addresses as Prometheus file_sd targets (docker/telemetry/prometheus-local.yml).
#
# HANGAR_BIN picks the binary (default: target/release/hangar, built if missing).
# HANGAR_COLOCATE=1 has data nodes 1 and 2 serve S3 themselves (an [s3_api] section in their
# config) instead of starting s3-1 and s3-2: four processes, and each frontend reads the blocks
# its data node holds from its own disk. S3_ENDPOINT and S3_ENDPOINT_2 are theirs.
# HANGAR_RPC_DELAY_MS=N puts a hangar-delay-proxy (N ms each way) in front of every data node's
# RPC address (their rpc_public_addr), so every call to a data node crosses 2·N ms of latency
# (scripts/bench-round-trips.sh).
set -euo pipefail

usage() { echo "usage: $0 up|down DIR  or  $0 stop|restart DIR NODE" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
node=${3:-}

# Stops the process whose PID is in file $1 (SIGTERM, SIGKILL after 10 s); 0 if it ran.
# The PID counts only while its command line still names this cluster's directory (or, for
# a delay proxy, the address it listens on): after a crash the number may belong to another
# process.
stop_pid_file() {
    local f=$1 pid mark="$dir/"
    [ -e "$f" ] || return 1
    pid=$(cat "$f")
    [ -e "$f.mark" ] && mark=$(cat "$f.mark")
    rm -f "$f" "$f.mark"
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark" || return 1
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    return 0
}

down() {
    local stopped=0
    for f in "$dir"/*.pid; do
        [ -e "$f" ] || continue
        if stop_pid_file "$f"; then stopped=$((stopped + 1)); fi
    done
    echo "stopped $stopped processes" >&2
}

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${HANGAR_BIN:-$root/target/release/hangar}

start() { # service, config file, name
    local name=$1 conf=$2
    HANGAR_LOG=${HANGAR_LOG:-info} "$bin" "$name" --config "$conf" >>"$dir/$3.log" 2>&1 &
    echo $! >"$dir/$3.pid"
}

# The service a node name runs.
service_of() {
    case "$1" in
        control-plane) echo control-plane ;;
        data[0-9]*) echo data-node ;;
        s3-[0-9]*) echo s3-frontend ;;
        *) echo "unknown node \`$1\` (control-plane, data1..3, s3-1, s3-2)" >&2; exit 2 ;;
    esac
}

case "$cmd" in
    down)
        [ $# -eq 2 ] || usage
        [ -d "$dir" ] || { echo "no cluster in $dir" >&2; exit 0; }
        dir=$(cd "$dir" && pwd)
        down
        exit 0
        ;;
    stop | restart)
        [ $# -eq 3 ] || usage
        dir=$(cd "$dir" && pwd)
        service=$(service_of "$node")
        [ -e "$dir/$node.toml" ] || { echo "$dir has no node $node" >&2; exit 1; }
        if stop_pid_file "$dir/$node.pid"; then echo "stopped $node" >&2; fi
        if [ "$cmd" = restart ]; then
            start "$service" "$dir/$node.toml" "$node"
            echo "started $node (pid $(cat "$dir/$node.pid"))" >&2
        fi
        exit 0
        ;;
    up) [ $# -eq 2 ] || usage ;;
    *) usage ;;
esac

if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release -q -p hangar)
fi
proxy_bin=$(dirname "$bin")/hangar-delay-proxy
if [ -n "${HANGAR_RPC_DELAY_MS:-}" ] && [ ! -x "$proxy_bin" ]; then
    (cd "$root" && cargo build --release -q -p hangar-integration-tests --bin hangar-delay-proxy)
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if ls "$dir"/*.pid >/dev/null 2>&1; then
    echo "$dir already has a running cluster (run: $0 down $dir)" >&2
    exit 1
fi

s3_ports=()
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cp_rpc=127.0.0.1:$(port)

cat >"$dir/control-plane.toml" <<TOML
metadata_dir = "$dir/control-plane"
rpc_bind_addr = "$cp_rpc"
rpc_secret = "$secret"
replication_factor = 3
[admin]
api_bind_addr = "127.0.0.1:$(port)"
admin_token = "$token"
TOML
start control-plane "$dir/control-plane.toml" control-plane

for i in 1 2 3; do
    rpc=127.0.0.1:$(port)
    public=$rpc
    if [ -n "${HANGAR_RPC_DELAY_MS:-}" ]; then
        public=127.0.0.1:$(port)
        "$proxy_bin" --listen "$public" --to "$rpc" --delay-ms "$HANGAR_RPC_DELAY_MS" \
            >>"$dir/proxy$i.log" 2>&1 &
        echo $! >"$dir/proxy$i.pid"
        echo "--listen $public " >"$dir/proxy$i.pid.mark"
    fi
    s3_section=
    if [ -n "${HANGAR_COLOCATE:-}" ] && [ "$i" -le 2 ]; then
        p=$(port)
        s3_ports+=("$p")
        s3_section=$(printf '[s3_api]\napi_bind_addr = "127.0.0.1:%s"\ns3_region = "us-east-1"' "$p")
    fi
    cat >"$dir/data$i.toml" <<TOML
metadata_dir = "$dir/data$i/meta"
data_dir = "$dir/data$i/blocks"
rpc_bind_addr = "$rpc"
rpc_public_addr = "$public"
rpc_secret = "$secret"
bootstrap_peers = ["$cp_rpc"]
$s3_section
[admin]
api_bind_addr = "127.0.0.1:$(port)"
TOML
    start data-node "$dir/data$i.toml" "data$i"
done

for i in 1 2; do
    [ -n "${HANGAR_COLOCATE:-}" ] && break
    p=$(port)
    s3_ports+=("$p")
    cat >"$dir/s3-$i.toml" <<TOML
rpc_secret = "$secret"
bootstrap_peers = ["$cp_rpc"]
[s3_api]
api_bind_addr = "127.0.0.1:$p"
s3_region = "us-east-1"
[admin]
api_bind_addr = "127.0.0.1:$(port)"
TOML
    start s3-frontend "$dir/s3-$i.toml" "s3-$i"
done

# Prometheus file_sd targets, one file per role, from each process's [admin] api_bind_addr.
admin_addr() { sed -n '/^\[admin\]/,$ s/^api_bind_addr = "\(.*\)"$/\1/p' "$dir/$1.toml"; }
targets() { # file, nodes...
    local file=$1 sep="" node
    shift
    {
        printf '['
        for node in "$@"; do
            printf '%s{"targets": ["%s"], "labels": {"instance": "%s"}}' "$sep" "$(admin_addr "$node")" "$node"
            sep=", "
        done
        printf ']\n'
    } >"$file"
}
mkdir -p "$dir/prometheus"
targets "$dir/prometheus/control-plane.json" control-plane
targets "$dir/prometheus/data-node.json" data1 data2 data3
if [ -n "${HANGAR_COLOCATE:-}" ]; then
    # Their metrics are those of data1 and data2.
    echo '[]' >"$dir/prometheus/s3-frontend.json"
else
    targets "$dir/prometheus/s3-frontend.json" s3-1 s3-2
fi

export HANGAR_ADMIN_TOKEN=$token
cli() { "$bin" --rpc-addr "$cp_rpc" "$@"; }

# Data nodes write their id at start and announce themselves within a couple of seconds.
zones=(a b c)
for i in 1 2 3; do
    for _ in $(seq 100); do [ -s "$dir/data$i/meta/node_id" ] && break; sleep 0.1; done
    id=$(cat "$dir/data$i/meta/node_id")
    for attempt in $(seq 50); do
        cli layout assign "$id" --zone "${zones[$((i - 1))]}" --capacity 1T >/dev/null 2>&1 && break
        [ "$attempt" = 50 ] && { echo "data node $i did not join; see $dir/data$i.log" >&2; exit 1; }
        sleep 0.2
    done
done
cli layout apply --version 1 >/dev/null

# shellcheck source=scripts/demo-key.sh
. "$root/scripts/demo-key.sh"
create_demo_key

cat <<EXPORTS
export S3_ENDPOINT=http://127.0.0.1:${s3_ports[0]}
export S3_ENDPOINT_2=http://127.0.0.1:${s3_ports[1]}
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export AWS_DEFAULT_REGION=us-east-1
export HANGAR_RPC_ADDR=$cp_rpc
export HANGAR_ADMIN_TOKEN=$token
EXPORTS
