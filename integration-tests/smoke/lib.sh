# Shared by the smoke scripts: a temp dir, check helpers that count and report, and a
# real `hangar server` on free ports, stopped by PID. Source it with SMOKE_NAME set.
#
# Binary: $HANGAR_BIN, or <workspace>/target/debug/hangar.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HANGAR_BIN="${HANGAR_BIN:-$ROOT/target/debug/hangar}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hangar-$SMOKE_NAME.XXXXXX")"
PASS=0
FAIL=0
SERVER_PID=""

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

die() {
    echo "$SMOKE_NAME: $*" >&2
    [ -f "$WORK/server.log" ] && tail -n 40 "$WORK/server.log" >&2
    echo "$PASS passed, $((FAIL + 1)) failed"
    exit 1
}

# check DESCRIPTION COMMAND...: runs the command, counts and reports the result.
check() {
    local desc="$1"
    shift
    if "$@" >"$WORK/check.out" 2>"$WORK/check.err"; then
        PASS=$((PASS + 1))
        echo "ok   - $desc"
    else
        FAIL=$((FAIL + 1))
        echo "FAIL - $desc"
        cat "$WORK/check.out" "$WORK/check.err" | tail -n 20 | sed 's/^/     | /'
    fi
}

# check_eq DESCRIPTION EXPECTED COMMAND...: the command must succeed and its stdout
# must equal EXPECTED.
check_eq() {
    local desc="$1" expected="$2"
    shift 2
    local actual status=0
    actual="$("$@" 2>"$WORK/check.err")" || status=$?
    if [ "$status" -eq 0 ] && [ "$actual" = "$expected" ]; then
        PASS=$((PASS + 1))
        echo "ok   - $desc"
    else
        FAIL=$((FAIL + 1))
        echo "FAIL - $desc"
        echo "     | expected: $expected"
        echo "     | actual:   $actual (exit code $status)"
        tail -n 10 "$WORK/check.err" | sed 's/^/     | /'
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# require_tool COMMAND HOW-TO-INSTALL
require_tool() {
    command -v "$1" >/dev/null || die "$1 not installed ($2)"
}

# Starts the server; sets SERVER_PID, S3_ENDPOINT, ACCESS_KEY, SECRET_KEY, REGION and
# ADMIN_PORT from what it printed (`export VAR=value` lines).
start_server() {
    [ -x "$HANGAR_BIN" ] || die "hangar binary not found at $HANGAR_BIN (build it or set HANGAR_BIN)"
    S3_PORT="$(free_port)"
    RPC_PORT="$(free_port)"
    ADMIN_PORT="$(free_port)"
    DATA="$WORK/data"
    mkdir -p "$DATA"
    # Keep a developer's HANGAR_* settings away from the server.
    for var in $(env | sed -n 's/^\(HANGAR_[A-Z_]*\)=.*/\1/p'); do
        [ "$var" = HANGAR_BIN ] || unset "$var"
    done
    "$HANGAR_BIN" server --data-dir "$DATA" \
        --s3-addr "127.0.0.1:$S3_PORT" --rpc-addr "127.0.0.1:$RPC_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
        >"$WORK/server.out" 2>"$WORK/server.log" </dev/null &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        grep -q '^export S3_ENDPOINT=' "$WORK/server.out" && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during startup"
        sleep 0.1
    done
    grep -q '^export S3_ENDPOINT=' "$WORK/server.out" || die "server did not print S3_ENDPOINT within 60 s"
    local key value
    while IFS='=' read -r key value; do
        case "${key#export }" in
        AWS_ACCESS_KEY_ID) ACCESS_KEY="$value" ;;
        AWS_SECRET_ACCESS_KEY) SECRET_KEY="$value" ;;
        AWS_DEFAULT_REGION) REGION="$value" ;;
        S3_ENDPOINT) S3_ENDPOINT="$value" ;;
        esac
    done <"$WORK/server.out"
    [ "$S3_ENDPOINT" = "http://127.0.0.1:$S3_PORT" ] || die "unexpected S3_ENDPOINT $S3_ENDPOINT"
    echo "# hangar server pid $SERVER_PID at $S3_ENDPOINT"
}

stop_server() {
    kill -TERM "$SERVER_PID" || return 1
    local rc=0
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=""
    echo "exit code $rc"
    [ "$rc" -eq 0 ]
}

# Stops the server (a check of its own: SIGTERM must exit 0), prints the summary and
# returns non-zero if anything failed.
finish() {
    check "SIGTERM stops the server with exit code 0" stop_server
    if [ "$FAIL" -gt 0 ]; then
        echo "# server log tail:"
        tail -n 30 "$WORK/server.log" | sed 's/^/# /'
    fi
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
