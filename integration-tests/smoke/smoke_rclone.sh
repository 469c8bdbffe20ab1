#!/usr/bin/env bash
# Smoke test: drive a real `hangar server` with rclone's S3 backend
# (provider = Other). Starts its own server on free ports in a temp dir,
# configures rclone only through a config file and flags written there, stops
# the server with SIGTERM, and ends with "N passed, M failed".
#
# Binary: $HANGAR_BIN, or <workspace>/target/debug/hangar.
set -uo pipefail

SMOKE_NAME=smoke_rclone
. "$(dirname "$0")/lib.sh"
require_tool rclone "apt-get install rclone"
start_server

# An isolated rclone: nothing from the environment, everything from this file.
# rclone refuses a CA bundle (AWS_CA_BUNDLE) on a plain-http endpoint.
for var in $(env | sed -n 's/^\(\(RCLONE\|AWS\)_[A-Z0-9_]*\)=.*/\1/p'); do
    unset "$var"
done
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
export TZ=UTC
cat >"$WORK/rclone.conf" <<EOF
[hangar]
type = s3
provider = Other
env_auth = false
access_key_id = $ACCESS_KEY
secret_access_key = $SECRET_KEY
region = $REGION
endpoint = $S3_ENDPOINT
force_path_style = true
EOF

# No retries, so every check sees what the server answered first. Exported for the
# checks that run a pipeline in `bash -c`.
rcl() { rclone --config "$WORK/rclone.conf" --retries 1 --low-level-retries 1 "$@"; }
export WORK
export -f rcl

B=smoke-rclone
F="$WORK/files"
mkdir -p "$F"
echo "hello from the hangar rclone smoke test" >"$F/small.txt"
head -c $((20 * 1024 * 1024 + 7)) /dev/urandom >"$F/big.bin"
# A tree with nesting, an empty file and a name that needs escaping.
T="$WORK/tree"
mkdir -p "$T/a/b" "$T/c"
head -c 1000 /dev/urandom >"$T/a/one.bin"
head -c 2000 /dev/urandom >"$T/a/two.bin"
head -c 70000 /dev/urandom >"$T/a/b/three.bin"
echo "spaces and more" >"$T/c/sp ace & ü+%.txt"
: >"$T/empty"

# ---- buckets and single files -----------------------------------------------------
check "mkdir makes the bucket" rcl mkdir "hangar:$B"
check "lsd lists the bucket" bash -c "rcl lsd hangar: | grep -q ' $B\$'"
check "copyto uploads a small file" rcl copyto "$F/small.txt" "hangar:$B/small.txt"
check "cat returns the small file" bash -c \
    "rcl cat 'hangar:$B/small.txt' | cmp - '$F/small.txt'"

# 20 MiB with a 5 MiB cutoff and chunk size: a multipart upload of 5 parts.
upload_big() {
    rcl copyto "$F/big.bin" "hangar:$B/big.bin" --s3-upload-cutoff 5M --s3-chunk-size 5M \
        -vv --dump headers --log-file "$WORK/big.log" || return 1
    grep -q "POST /$B/big.bin?uploads" "$WORK/big.log" || { echo "no CreateMultipartUpload"; return 1; }
    local parts
    parts="$(grep -c "PUT /$B/big.bin?partNumber=" "$WORK/big.log")"
    echo "parts: $parts"
    [ "$parts" -eq 5 ]
}
check "copyto uploads 20 MiB as a multipart upload" upload_big
check_eq "lsf lists both objects with their sizes" \
    "$(printf 'big.bin;%s\nsmall.txt;%s' "$(stat -c %s "$F/big.bin")" "$(stat -c %s "$F/small.txt")")" \
    rcl lsf --format ps "hangar:$B"
check_eq "md5sum of the objects matches the local files" \
    "$(cd "$F" && md5sum big.bin small.txt)" \
    bash -o pipefail -c "rcl md5sum 'hangar:$B' | sort -k2"
check "copyto downloads 20 MiB" rcl copyto "hangar:$B/big.bin" "$WORK/big.out"
check "20 MiB round-trips" cmp "$F/big.bin" "$WORK/big.out"
check "cat --offset --count reads a range" bash -c \
    "rcl cat 'hangar:$B/big.bin' --offset 5242000 --count 2000 |
    cmp - <(tail -c +5242001 '$F/big.bin' | head -c 2000)"
check "rcat streams 20 MiB of unknown size (multipart)" bash -c \
    "rcl rcat 'hangar:$B/streamed.bin' --s3-chunk-size 5M \
        --streaming-upload-cutoff 1M <'$F/big.bin' &&
    rcl cat 'hangar:$B/streamed.bin' | cmp - '$F/big.bin'"

# rclone keeps the modification time in the object's metadata (X-Amz-Meta-Mtime).
touch -d '2021-03-04 05:06:07' "$F/small.txt"
check "copyto uploads a file with an old modification time" rcl copyto "$F/small.txt" "hangar:$B/dated.txt"
check_eq "the modification time survives in metadata" "2021-03-04 05:06:07;dated.txt" \
    rcl lsf --format tp "hangar:$B/dated.txt"
check "server-side copy" bash -c "rcl copyto 'hangar:$B/big.bin' \
    'hangar:$B/copy/big.bin' -v 2>&1 | grep -q 'server-side copy'"
check_eq "the copy has the same MD5" "$(md5sum <"$F/big.bin" | cut -d' ' -f1)" \
    bash -o pipefail -c "rcl md5sum 'hangar:$B/copy/big.bin' | cut -d' ' -f1"
check "moveto renames" rcl moveto "hangar:$B/dated.txt" "hangar:$B/moved.txt"
check_eq "the old name is gone, the new one keeps the time" "2021-03-04 05:06:07;moved.txt" \
    bash -o pipefail -c "rcl lsf --format tp 'hangar:$B' | grep 'dated.txt\|moved.txt'"

# ---- directory trees ------------------------------------------------------------------
check "sync uploads a tree" rcl sync "$T" "hangar:$B/tree"
check_eq "lsf -R lists the tree" "$(printf 'a/\na/b/\na/b/three.bin\na/one.bin\na/two.bin\nc/\nc/sp ace & ü+%%.txt\nempty')" \
    bash -o pipefail -c "rcl lsf -R 'hangar:$B/tree' | LC_ALL=C sort"
check "check finds no differences" rcl check "$T" "hangar:$B/tree"
check "check --download finds no differences" rcl check --download "$T" "hangar:$B/tree"
# Same size, other bytes: only the hash (the ETag) can tell.
check "check notices changed content of the same size" bash -c \
    "head -c 1000 /dev/urandom >'$WORK/other.bin' &&
    rcl copyto '$WORK/other.bin' 'hangar:$B/tree/a/one.bin' &&
    ! rcl check '$T' 'hangar:$B/tree' 2>'$WORK/diff.err' &&
    grep -q '1 differences found' '$WORK/diff.err'"
rm "$T/a/two.bin"
echo "new file" >"$T/c/new.txt"
check "sync mirrors changes and deletions" rcl sync "$T" "hangar:$B/tree"
check "check finds no differences after the second sync" rcl check "$T" "hangar:$B/tree"
check_eq "lsf -R shows the deletion and the new file" \
    "$(printf 'a/b/three.bin\na/one.bin\nc/new.txt\nc/sp ace & ü+%%.txt\nempty')" \
    bash -o pipefail -c "rcl lsf -R --files-only 'hangar:$B/tree' | LC_ALL=C sort"
check "copy downloads the tree" rcl copy "hangar:$B/tree" "$WORK/tree.out"
check "the downloaded tree equals the local one" diff -r "$T" "$WORK/tree.out"

# ---- deleting -----------------------------------------------------------------------------
check "delete with a filter" rcl delete "hangar:$B/tree" --include '*.txt'
check_eq "only the filtered files were deleted" "$(printf 'a/b/three.bin\na/one.bin\nempty')" \
    bash -o pipefail -c "rcl lsf -R --files-only 'hangar:$B/tree' | LC_ALL=C sort"
check "deletefile" rcl deletefile "hangar:$B/small.txt"
check_eq "the deleted file is gone" "$(printf 'big.bin\ncopy/\nmoved.txt\nstreamed.bin\ntree/')" \
    rcl lsf "hangar:$B"
check "rmdir refuses a non-empty bucket" bash -c \
    "! rcl rmdir 'hangar:$B' 2>'$WORK/rmdir.err' &&
    grep -q BucketNotEmpty '$WORK/rmdir.err'"
check "purge removes the bucket and everything in it" rcl purge "hangar:$B"
check "the bucket is gone" bash -c "rcl lsd hangar: >'$WORK/lsd.out' && ! grep -q ' $B\$' '$WORK/lsd.out'"

# ---- credentials ------------------------------------------------------------------------
check "a wrong secret is refused" bash -c \
    "! rcl lsd hangar: \
        --s3-secret-access-key wrong-secret 2>'$WORK/bad.err' && grep -q SignatureDoesNotMatch '$WORK/bad.err'"
check "a wrong secret cannot make a bucket" bash -c \
    "! rcl mkdir hangar:smoke-intruder \
        --s3-secret-access-key wrong-secret 2>/dev/null &&
    rcl lsd hangar: >'$WORK/lsd.out' && ! grep -q smoke-intruder '$WORK/lsd.out'"
check "an unknown access key is refused" bash -c \
    "! rcl lsd hangar: \
        --s3-access-key-id GKunknown 2>'$WORK/bad.err' && grep -q InvalidAccessKeyId '$WORK/bad.err'"

# ---- clean shutdown --------------------------------------------------------------------------
finish
