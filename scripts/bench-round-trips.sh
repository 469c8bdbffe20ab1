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
#
# A round trip through a proxy takes somewhat more than 2 x DELAY_MS (the proxy's timer fires
# on the next millisecond, and it runs on the same two cores). So the script measures it: the
# median of 200 one-byte TCP exchanges with an echo server through a hangar-delay-proxy,
# minus the same exchanges without it. The round trips column divides by that figure; the
# nominal 2 x DELAY_MS is printed beside it.
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

# The median time of 200 one-byte exchanges with an echo server, in ms: directly ($1 = 0)
# or through a hangar-delay-proxy adding $1 ms each way.
exchange_ms() {
    python3 - "$1" target/release/hangar-delay-proxy <<'PY'
import socket, statistics, subprocess, sys, threading, time
delay, proxy = int(sys.argv[1]), sys.argv[2]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
def echo():
    c, _ = srv.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
threading.Thread(target=echo, daemon=True).start()
port, proc = srv.getsockname()[1], None
if delay:
    port = free_port()
    proc = subprocess.Popen([proxy, "--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{srv.getsockname()[1]}",
                             "--delay-ms", str(delay)])
for _ in range(100):
    try:
        c = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.05)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(200):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1); times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.2f}")
if proc:
    proc.kill()
PY
}
RTT=$(python3 -c "print(f'{$(exchange_ms "$DELAY") - $(exchange_ms 0):.2f}')")

for topology in split colocated; do
    run 0 "$topology"
    run "$DELAY" "$topology"
done
echo "One round trip through a proxy ($DELAY ms each way): $RTT ms measured (a one-byte TCP exchange, median of 200), $((2 * DELAY)) ms nominal."
echo
echo "| request (one at a time, frontend 1) | separate frontends: p50 without / with ${DELAY} ms each way | round trips | frontends in data nodes: p50 without / with | round trips |"
echo "|---|---|---|---|---|"
paste -d'|' "$OUT/split-0.txt" "$OUT/split-$DELAY.txt" "$OUT/colocated-0.txt" "$OUT/colocated-$DELAY.txt" |
    awk -F'|' -v rtt="$RTT" '{ printf "| %s | %.1f / %.1f ms | %.1f | %.1f / %.1f ms | %.1f |\n",
        $1, $2, $4, ($4 - $2) / rtt, $6, $8, ($8 - $6) / rtt }'
