#!/usr/bin/env bash
# Hangar beside Garage on this machine: the same client (hangar-load --unsigned-payload, so
# every body is a plain Content-Length body marked UNSIGNED-PAYLOAD, which both take), the same
# workloads, in alternating rounds (ROUNDS, default 3; who goes first flips every round); the
# median of the rounds is printed.
#
#   single   `hangar server` beside one Garage node (replication 1)
#   cluster  HANGAR_COLOCATE=1 scripts/local-cluster.sh (a control plane and 3 data nodes,
#            replication 3, two of which serve S3 as well, as every Garage node does) beside
#            three Garage nodes (replication 3); requests alternate between two S3 endpoints
#            of each (Hangar's two data nodes that serve S3, two of the Garage nodes)
#   cluster-split  the same with two separate S3 frontend processes (`hangar s3-frontend`)
#            in front of the 3 data nodes; not part of `both`
#
# Garage is set to fsync as Hangar always does (metadata_fsync = true, data_fsync = true) and
# not to compress. Also measured, in the same run: the disk's fsynced write bandwidth and
# blake2b-256/CRC-64/MD5 per core (hangar-limits), and each side's memory, summed over its
# processes: idle (after start, before any request; resident set and proportional set, which
# counts pages shared by several processes once) and peak (VmHWM at the end).
#
# Needs `garage` on PATH (`cargo install garage --locked`; it is not a project dependency).
# Usage: scripts/bench-vs-garage.sh [single|cluster|cluster-split|both]  (default both; ROUNDS=N)
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-both}
case $WHAT in single | cluster | cluster-split | both) ;; *) echo "usage: $0 [single|cluster|cluster-split|both]" >&2; exit 2 ;; esac
ROUNDS=${ROUNDS:-3}
command -v garage >/dev/null || { echo "garage not found: cargo install garage --locked" >&2; exit 1; }
cargo build --release -q -p hangar -p hangar-integration-tests \
    --bin hangar --bin hangar-load --bin hangar-limits
BIN=$PWD/target/release
DIR=$(mktemp -d)
LOGS=${TMPDIR:-/tmp}/bench-vs-garage-logs
trap 'rm -rf "$DIR"' EXIT
port() { ports 1; }
# $1 distinct free ports (all bound at once while they are picked).
ports() {
    python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# The workloads: a row name, then hangar-load's arguments (each runs PUT then GET). Every
# object has bytes of its own (--unique), new in every round (--seed), so nothing is
# deduplicated.
WORKLOADS=(
    "4 KiB, 1 at a time|--size 4KiB --count 200 --concurrency 1 --prefix s1/"
    "4 KiB, 32 at once|--size 4KiB --count 1000 --concurrency 32 --prefix s32/"
    "1 MiB, 8 at once|--size 1MiB --count 200 --concurrency 8 --prefix m/"
    "64 MiB, 2 at once|--size 64MiB --count 6 --concurrency 2 --prefix l/"
    "1 GiB, multipart (64 MiB parts, one after another)|--size 1GiB --count 1 --multipart-part-size 64MiB --prefix mp/"
)

FRESH=" (fresh connections)"

# Memory in KiB summed over PIDs: $1 is VmRSS or VmHWM (from status) or Pss (from
# smaps_rollup: each page shared by N processes counts 1/N, so the pages of a binary that
# several processes run count once, as the machine holds them once), then the PIDs.
memory() {
    local field=$1 total=0 p v file
    shift
    for p in "$@"; do
        file=/proc/$p/status
        [ "$field" = Pss ] && file=/proc/$p/smaps_rollup
        v=$(awk -v f="$field:" '$1 == f {print $2}' "$file" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# hangar-load against side $2 (its env file), recording lines in results.tsv:
# config side round row ops/s MiB/s p50 p99 (a failed run records "failed").
load() { # config side round row-prefix args...
    local config=$1 side=$2 round=$3 row=$4 out
    shift 4
    out=$( (set -a; . "$DIR/$side.env"; set +a
        "$BIN/hangar-load" --endpoint "$ENDPOINTS" --bucket bench --unsigned-payload --unique \
            --seed $((round + 1)) "$@" 2>&1) || true)
    echo "$out" | grep -E '^(PUT|GET|LIST):' | while read -r line; do
        local op=${line%%:*} errors ops mib p50 p99
        errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$line")
        ops=$(sed -n 's/.* ops\/s=\([0-9.]*\).*/\1/p' <<<"$line")
        mib=$(sed -n 's/.* MiB\/s=\([0-9.]*\).*/\1/p' <<<"$line")
        p50=$(sed -n 's/.* p50=\([0-9.]*\)ms.*/\1/p' <<<"$line")
        p99=$(sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p' <<<"$line")
        [ "$errors" = 0 ] || ops=failed
        printf '%s\t%s\t%s\t%s %s\t%s\t%s\t%s\t%s\n' "$config" "$side" "$round" "$op" "$row" "$ops" "$mib" "$p50" "$p99" \
            >>"$DIR/results.tsv"
    done
    if ! grep -qE '^(PUT|GET|LIST):' <<<"$out"; then
        printf '%s\t%s\t%s\t%s\tfailed\t\t\t\n' "$config" "$side" "$round" "$row" >>"$DIR/results.tsv"
        echo "hangar-load failed on $side ($row): $(tail -3 <<<"$out")" >&2
    fi
}

# Hangar: `hangar server` (single) or the local cluster; writes hangar.env and hangar.pids.
hangar_up() {
    if [ "$1" = single ]; then
        local s3=127.0.0.1:$(port)
        HANGAR_LOG=warn "$BIN/hangar" server --data-dir "$DIR/hs" --s3-addr "$s3" --rpc-addr 127.0.0.1:$(port) \
            --admin-addr 127.0.0.1:$(port) >"$DIR/hs.out" 2>"$DIR/hs.err" &
        local pid=$!
        for _ in $(seq 100); do grep -q S3_ENDPOINT "$DIR/hs.out" 2>/dev/null && break; sleep 0.1; done
        grep -q S3_ENDPOINT "$DIR/hs.out" || { echo "hangar server did not start: $(cat "$DIR/hs.err")" >&2; exit 1; }
        sed 's/^export //' "$DIR/hs.out" >"$DIR/hangar.env"
        echo "ENDPOINTS=http://$s3" >>"$DIR/hangar.env"
        echo "$pid" >"$DIR/hangar.pids"
    else
        local colocate=1
        [ "$1" = cluster-split ] && colocate=
        HANGAR_COLOCATE=$colocate HANGAR_BIN=$BIN/hangar HANGAR_LOG=warn scripts/local-cluster.sh up "$DIR/hc" |
            sed 's/^export //' >"$DIR/hangar.env"
        # shellcheck disable=SC1091
        (. "$DIR/hangar.env" && echo "ENDPOINTS=$S3_ENDPOINT,$S3_ENDPOINT_2") >>"$DIR/hangar.env"
        cat "$DIR"/hc/*.pid >"$DIR/hangar.pids"
    fi
}

hangar_down() {
    if [ "$1" = single ]; then
        kill "$(cat "$DIR/hangar.pids")" 2>/dev/null || true
    else
        scripts/local-cluster.sh down "$DIR/hc" >/dev/null 2>&1 || true
        rm -rf "$DIR/hc" # a later configuration starts its own cluster
    fi
}

# Garage: $1 nodes with replication $1; writes garage.env and garage.pids.
garage_up() {
    local n=$1 i secret ids=() s3s=() free
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    read -r -a free <<<"$(ports $((2 * n)))"
    : >"$DIR/garage.pids"
    rm -rf "$DIR"/g[0-9]* # an earlier configuration's nodes (their layout would not start)
    for i in $(seq "$n"); do
        local rpc=127.0.0.1:${free[$((2 * i - 2))]} s3=127.0.0.1:${free[$((2 * i - 1))]}
        s3s+=("http://$s3")
        cat >"$DIR/g$i.toml" <<TOML
metadata_dir = "$DIR/g$i/meta"
data_dir = "$DIR/g$i/data"
db_engine = "lmdb"
replication_factor = $n
metadata_fsync = true
data_fsync = true
compression_level = "none"
rpc_bind_addr = "$rpc"
rpc_public_addr = "$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "$s3"
root_domain = ".s3.garage"
TOML
        RUST_LOG=warn garage -c "$DIR/g$i.toml" server >"$DIR/g$i.log" 2>&1 &
        echo $! >>"$DIR/garage.pids"
    done
    local G="garage -c $DIR/g1.toml" attempt
    for i in $(seq "$n"); do
        for attempt in $(seq 100); do
            garage -c "$DIR/g$i.toml" status >/dev/null 2>&1 && break
            [ "$attempt" = 100 ] && { echo "garage node $i did not start: $(tail -5 "$DIR/g$i.log")" >&2; return 1; }
            sleep 0.2
        done
        ids+=("$(garage -c "$DIR/g$i.toml" node id -q)")
    done
    for i in $(seq 2 "$n"); do
        for attempt in $(seq 20); do
            $G node connect "${ids[$((i - 1))]}" >/dev/null 2>&1 && break
            [ "$attempt" = 20 ] && { echo "garage node 1 cannot reach node $i: $(tail -5 "$DIR/g$i.log")" >&2; return 1; }
            sleep 0.5
        done
    done
    for i in $(seq "$n"); do
        for attempt in $(seq 50); do
            $G layout assign -z "dc$i" -c 100G "${ids[$((i - 1))]%@*}" >/dev/null 2>&1 && break
            [ "$attempt" = 50 ] && { echo "garage node $i did not join: see $DIR/g$i.log" >&2; exit 1; }
            sleep 0.2
        done
    done
    $G layout apply --version 1 >/dev/null
    local keyout
    keyout=$($G key create bench-key)
    {
        echo "AWS_ACCESS_KEY_ID=$(awk '/Key ID:/ {print $3}' <<<"$keyout")"
        echo "AWS_SECRET_ACCESS_KEY=$(awk '/Secret key:/ {print $3}' <<<"$keyout")"
        echo "AWS_DEFAULT_REGION=us-east-1"
        if [ "$n" = 1 ]; then echo "ENDPOINTS=${s3s[0]}"; else echo "ENDPOINTS=${s3s[0]},${s3s[1]}"; fi
    } >"$DIR/garage.env"
    $G bucket create bench >/dev/null
    $G bucket allow --read --write --owner bench --key bench-key >/dev/null
}

garage_down() {
    local p
    [ -f "$DIR/garage.pids" ] || return 0
    for p in $(cat "$DIR/garage.pids"); do kill "$p" 2>/dev/null || true; done
    for p in $(cat "$DIR/garage.pids"); do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
}

# One configuration, in a subshell: a failure ends it (its processes stopped, their logs kept
# in $LOGS) and the other configuration still runs and is reported.
run_config() ( # single|cluster|cluster-split
    set -e
    local config=$1 side round w first second
    local n=3
    [ "$config" = single ] && n=1
    trap 'st=$?; if [ $st != 0 ]; then rm -rf "$LOGS"; mkdir -p "$LOGS"; cp "$DIR"/*.log "$DIR"/*.err "$DIR"/hc/*.log "$LOGS"/ 2>/dev/null; echo "the $config comparison failed; logs in $LOGS" >&2; fi; hangar_down "$config"; garage_down' EXIT
    echo "== $config: starting both sides" >&2
    hangar_up "$config"
    garage_up "$n"
    sleep 2
    for side in hangar garage; do
        # shellcheck disable=SC2046
        echo -e "$config\t$side\tidle\t$(memory VmRSS $(cat "$DIR/$side.pids"))" >>"$DIR/memory.tsv"
        # shellcheck disable=SC2046
        echo -e "$config\t$side\tidle-pss\t$(memory Pss $(cat "$DIR/$side.pids"))" >>"$DIR/memory.tsv"
    done
    # 10 000 keys to list (not timed), then the rounds.
    for side in hangar garage; do
        load "$config" "$side" 0 "setup" --size 0 --count 10000 --concurrency 64 --op put --prefix list/ >/dev/null
    done
    for round in $(seq "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then first=hangar second=garage; else first=garage second=hangar; fi
        echo "== $config: round $round of $ROUNDS ($first first)" >&2
        for w in "${WORKLOADS[@]}"; do
            for side in $first $second; do
                # shellcheck disable=SC2086
                load "$config" "$side" "$round" "${w%%|*}" --op both ${w#*|}
                # Small objects also on a new connection per request; each side's better
                # figure counts (a server may answer kept-alive connections slowly).
                case $w in 4\ KiB*)
                    # shellcheck disable=SC2086
                    load "$config" "$side" "$round" "${w%%|*}$FRESH" --op both --fresh-connections ${w#*|} ;;
                esac
            done
        done
        for side in $first $second; do
            load "$config" "$side" "$round" "10 000 keys, 1 at a time" --size 0 --count 3 --concurrency 1 \
                --op list --prefix list/
        done
    done
    for side in hangar garage; do
        # shellcheck disable=SC2046
        echo -e "$config\t$side\tpeak\t$(memory VmHWM $(cat "$DIR/$side.pids"))" >>"$DIR/memory.tsv"
    done
    hangar_down "$config"
    garage_down
    : >"$DIR/garage.pids" >"$DIR/hangar.pids"
)

START=$(date +%s)
"$BIN/hangar-limits" --dir "$DIR" >"$DIR/limits.txt"
CONFIGS=$WHAT
[ "$WHAT" = both ] && CONFIGS="single cluster"
for config in $CONFIGS; do
    set +e
    run_config "$config"
    set -e
done
[ -s "$DIR/results.tsv" ] || { echo "no configuration ran" >&2; exit 1; }

echo "# Hangar beside $(garage --version 2>/dev/null | head -1), $(date -u +%Y-%m-%d), $ROUNDS rounds, medians"
echo
echo "Limits of this machine (hangar-limits):"
sed 's/^/- /' "$DIR/limits.txt"
echo
python3 - "$DIR/results.tsv" "$DIR/memory.tsv" "$DIR/limits.txt" <<'PY'
import statistics, sys
from collections import defaultdict

results, memory, limits = sys.argv[1:4]
lim = {}
for line in open(limits):
    name, value = line.split(":", 1)
    lim[name] = float(value.split()[0])
cores = lim.get("cores", 1)

runs = defaultdict(list)  # (config, row, side) -> [(ops, mib, p50, p99)]
order = []
for line in open(results):
    config, side, rnd, row, ops, mib, p50, p99 = (line.rstrip("\n").split("\t") + [""] * 8)[:8]
    if rnd == "0":
        continue
    if (config, row) not in order:
        order.append((config, row))
    runs[(config, row, side)].append(None if ops == "failed" else tuple(map(float, (ops, mib, p50, p99))))

FRESH = " (fresh connections)"

def med(values, i):
    ok = [v[i] for v in values if v is not None]
    return statistics.median(ok) if ok else None

def fmt(v, unit):
    return "failed" if v is None else f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"

for config in dict.fromkeys(c for c, _ in order):
    replicas = 1 if config == "single" else 3
    print(f"## {config}: " + {
        "single": "hangar server beside one Garage node",
        "cluster": "3 data nodes, 2 of them serving S3, beside 3 Garage nodes, replication 3",
        "cluster-split": "3 data nodes + 2 separate frontends beside 3 Garage nodes, replication 3",
    }[config])
    print()
    print("| workload | Hangar | Garage | Hangar / Garage | p50 Hangar / Garage | p99 Hangar / Garage | goal |")
    print("|---|---|---|---|---|---|---|")
    for c, row in order:
        if c != config or row.endswith(FRESH):
            continue
        small = "4 KiB" in row or row.startswith("LIST")
        # Small objects and listings in requests per second, large ones in MiB/s.
        i, unit = (0, "/s") if small else (1, "MiB/s")

        def better(side):
            # Kept-alive connections, or one per request where that was measured and faster.
            kept, fresh = runs[(config, row, side)], runs.get((config, row + FRESH, side), [])
            if fresh and (med(fresh, i) or 0) > (med(kept, i) or 0):
                return fresh, " ¹"
            return kept, ""

        (h, hmark), (g, gmark) = better("hangar"), better("garage")
        hv, gv = med(h, i), med(g, i)
        ratio = hv / gv if hv and gv else None
        want = 1.5 if small else 1.2
        p99h, p99g = med(h, 3), med(g, 3)
        goal = "n/a" if ratio is None else ("met" if ratio >= want and p99h <= p99g else "not met")
        failed = sum(v is None for v in h + g)
        note = f" ({failed} failed runs)" if failed else ""
        print(f"| {row}{note} | {fmt(hv, unit)}{hmark} | {fmt(gv, unit)}{gmark} | "
              f"{'-' if ratio is None else f'{ratio:.2f}×'} | "
              f"{fmt(med(h, 2), 'ms')} / {fmt(med(g, 2), 'ms')} | {fmt(p99h, 'ms')} / {fmt(p99g, 'ms')} | "
              f"{goal} (≥ {want}×, p99 ≤) |")
    print()
    print("¹ a new connection per request (`--fresh-connections`) was faster for that side than kept-alive "
          "connections; small objects are measured both ways and each side's better figure counts.")
    print()
    # Large rows against what the machine allows: a PUT writes every byte `replicas` times to
    # the one disk here and fsyncs it; a GET checks every byte once — Garage with blake2b,
    # Hangar with a CRC-64 many times faster — so the GET limit is blake2b's, Garage's
    # bound, and Hangar's GET rows may pass it.
    put_limit = lim["fsync-write-1MiB"] / replicas
    get_limit = lim["blake2b-256-per-core"] * cores
    print(f"Large rows as a fraction of the limit (PUT: fsynced disk bandwidth / {replicas} = "
          f"{put_limit:.0f} MiB/s; GET: blake2b-256 × {cores:.0f} cores = {get_limit:.0f} MiB/s):")
    print()
    for c, row in order:
        if c != config or "4 KiB" in row or row.startswith("LIST"):
            continue
        limit = put_limit if row.startswith("PUT") else get_limit
        hv, gv = med(runs[(config, row, "hangar")], 1), med(runs[(config, row, "garage")], 1)
        frac = lambda v: "failed" if v is None else f"{100 * v / limit:.0f}%"
        print(f"- {row}: Hangar {frac(hv)}, Garage {frac(gv)}")
    print()
mem = {}
for line in open(memory):
    config, side, when, kib = line.split()
    mem[(config, side, when)] = int(kib) / 1024
print("| memory (MiB, all processes of a side) | Hangar idle RSS | Garage idle RSS | Hangar idle PSS | "
      "Garage idle PSS | Hangar peak RSS | Garage peak RSS | goal (idle ≤) |")
print("|---|---|---|---|---|---|---|---|")
for config in dict.fromkeys(k[0] for k in mem):
    v = lambda s, w: mem.get((config, s, w), 0)
    rss, pss = (v("hangar", w) <= v("garage", w) for w in ("idle", "idle-pss"))
    goal = "met" if rss and pss else "met by PSS, not by RSS" if pss else "met by RSS, not by PSS" if rss else "not met"
    print(f"| {config} | {v('hangar', 'idle'):.0f} | {v('garage', 'idle'):.0f} | "
          f"{v('hangar', 'idle-pss'):.0f} | {v('garage', 'idle-pss'):.0f} | "
          f"{v('hangar', 'peak'):.0f} | {v('garage', 'peak'):.0f} | {goal} |")
PY
echo
echo "Took $(($(date +%s) - START)) s (build aside)."
