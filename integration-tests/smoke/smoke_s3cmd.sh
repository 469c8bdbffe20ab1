#!/usr/bin/env bash
# Smoke test: drive a real `hangar server` with s3cmd. Starts its own server on
# free ports in a temp dir, configures s3cmd only through a .s3cfg written there
# (path-style, plain http, SigV4), stops the server with SIGTERM, and ends with
# "N passed, M failed".
#
# Binary: $HANGAR_BIN, or <workspace>/target/debug/hangar.
set -uo pipefail

SMOKE_NAME=smoke_s3cmd
. "$(dirname "$0")/lib.sh"
require_tool s3cmd "apt-get install s3cmd"
start_server

# An isolated s3cmd: nothing from the environment (it falls back to AWS_* variables
# and ~/.s3cfg), everything from this file. A host_bucket without %(bucket)s means
# path-style requests.
for var in $(env | sed -n 's/^\(AWS_[A-Z0-9_]*\)=.*/\1/p'); do
    unset "$var"
done
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
HOSTPORT="${S3_ENDPOINT#http://}"
cat >"$WORK/s3cfg" <<EOF
[default]
access_key = $ACCESS_KEY
secret_key = $SECRET_KEY
host_base = $HOSTPORT
host_bucket = $HOSTPORT
bucket_location = $REGION
use_https = False
signature_v2 = False
EOF
sed "s/^secret_key = .*/secret_key = wrong-secret/" "$WORK/s3cfg" >"$WORK/s3cfg-wrong"

# Exported for the checks that run a pipeline in `bash -c`.
s3c() { s3cmd -c "$WORK/s3cfg" "$@"; }
export WORK
export -f s3c

# The MD5 of a file, and the value of a field of `s3cmd info` (one per line).
md5_of() { md5sum <"$1" | cut -d' ' -f1; }
info_fields() {
    local uri="$1" field
    shift
    s3c info "$uri" >"$WORK/info.out" || return 1
    for field in "$@"; do
        sed -n "s/^ *$field: *//p" "$WORK/info.out"
    done
}

B=smoke-s3cmd
F="$WORK/files"
mkdir -p "$F"
echo "hello from the hangar s3cmd smoke test" >"$F/small.txt"
head -c $((12 * 1024 * 1024 + 5)) /dev/urandom >"$F/big.bin"
SMALL_SIZE="$(stat -c %s "$F/small.txt")"
BIG_SIZE="$(stat -c %s "$F/big.bin")"
# A tree with nesting, an empty file and a name that needs escaping.
T="$WORK/tree"
mkdir -p "$T/a/b" "$T/c"
head -c 1000 /dev/urandom >"$T/a/one.bin"
head -c 2000 /dev/urandom >"$T/a/two.bin"
head -c 70000 /dev/urandom >"$T/a/b/three.bin"
echo "spaces and more" >"$T/c/sp ace & ü+%.txt"
: >"$T/empty"

# ---- buckets and single files -----------------------------------------------------
check "mb" s3c mb "s3://$B"
check "ls lists the bucket" bash -c "s3c ls | grep -q ' s3://$B\$'"
check_eq "info on the bucket shows the region" "$REGION" info_fields "s3://$B" Location
check "put uploads a small file" s3c put "$F/small.txt" "s3://$B/small.txt"
# 12 MiB in 5 MiB chunks: a multipart upload of 3 parts.
check "put uploads 12 MiB as a multipart upload" bash -c \
    "s3c put --multipart-chunk-size-mb=5 '$F/big.bin' 's3://$B/big.bin' --debug >'$WORK/big.log' 2>&1 &&
    grep -q 'MultiPart: Upload finished: 3 parts' '$WORK/big.log'"
check_eq "ls lists both objects with their sizes" \
    "$(printf '%s s3://%s/big.bin\n%s s3://%s/small.txt' "$BIG_SIZE" "$B" "$SMALL_SIZE" "$B")" \
    bash -o pipefail -c "s3c ls 's3://$B' | awk '{print \$3, \$4}'"
check_eq "ls --list-md5 shows the MD5s" "$(printf '%s\n%s' "$(md5_of "$F/big.bin")" "$(md5_of "$F/small.txt")")" \
    bash -o pipefail -c "s3c ls --list-md5 's3://$B' | awk '{print \$4}'"
check "get downloads the small file" s3c get "s3://$B/small.txt" "$WORK/small.out"
check "small round-trips" cmp "$F/small.txt" "$WORK/small.out"
check "get downloads 12 MiB" s3c get "s3://$B/big.bin" "$WORK/big.out"
check "12 MiB round-trips" cmp "$F/big.bin" "$WORK/big.out"
check "get of a missing key fails" bash -c \
    "! s3c get 's3://$B/missing' '$WORK/missing.out' 2>'$WORK/missing.err' && grep -q 'does not exist' '$WORK/missing.err'"

# ---- metadata ------------------------------------------------------------------------
check "put with a content type and user metadata" s3c put --mime-type=text/x-smoke \
    --add-header=x-amz-meta-color:blue "$F/small.txt" "s3://$B/meta.txt"
check_eq "info shows size, MD5, content type and metadata" \
    "$(printf '%s\n%s\ntext/x-smoke\nblue' "$SMALL_SIZE" "$(md5_of "$F/small.txt")")" \
    info_fields "s3://$B/meta.txt" "File size" "MD5 sum" "MIME type" x-amz-meta-color
check "modify adds metadata" s3c modify --add-header=x-amz-meta-shape:round "s3://$B/meta.txt"
check_eq "info shows the old and the new metadata" "$(printf 'text/x-smoke\nblue\nround')" \
    info_fields "s3://$B/meta.txt" "MIME type" x-amz-meta-color x-amz-meta-shape
check "cp copies on the server" s3c cp "s3://$B/meta.txt" "s3://$B/copy.txt"
check_eq "the copy keeps content type and metadata" "$(printf 'text/x-smoke\nblue\nround')" \
    info_fields "s3://$B/copy.txt" "MIME type" x-amz-meta-color x-amz-meta-shape
check "mv renames" s3c mv "s3://$B/copy.txt" "s3://$B/moved.txt"
check_eq "ls shows the new name and not the old one" "big.bin meta.txt moved.txt small.txt" \
    bash -o pipefail -c "s3c ls 's3://$B' | sed 's|.*s3://$B/||' | xargs"

# ---- directory trees ------------------------------------------------------------------
check "sync uploads a tree" s3c sync "$T/" "s3://$B/tree/"
check_eq "ls -r lists the tree" \
    "$(printf "s3://$B/tree/%s\n" a/b/three.bin a/one.bin a/two.bin 'c/sp ace & ü+%.txt' empty)" \
    bash -o pipefail -c "s3c ls -r 's3://$B/tree/' | sed 's|^.* s3://|s3://|' | LC_ALL=C sort"
# Nothing changed: sizes and MD5s (ETags) match, so a second sync has nothing to upload.
check "a second sync has nothing to do" bash -c \
    "s3c sync --dry-run '$T/' 's3://$B/tree/' >'$WORK/dry.out' && ! grep -E '^(upload|delete):' '$WORK/dry.out'"
check "sync downloads the tree" s3c sync "s3://$B/tree/" "$WORK/tree.out/"
check "the downloaded tree equals the local one" diff -r "$T" "$WORK/tree.out"
rm "$T/a/two.bin"
echo "new file" >"$T/c/new.txt"
head -c 1000 /dev/urandom >"$T/a/one.bin"
check "sync --delete-removed mirrors changes and deletions" s3c sync --delete-removed "$T/" "s3://$B/tree/"
check "the remote tree equals the local one again" bash -c \
    "s3c sync 's3://$B/tree/' '$WORK/tree2.out/' && diff -r '$T' '$WORK/tree2.out'"
# small.txt, meta.txt, moved.txt, big.bin, and the tree: 1000 + 70000 + 16 + 9 + 0 bytes.
check_eq "du counts the bucket" "$((BIG_SIZE + 3 * SMALL_SIZE + 71025)) 9" \
    bash -o pipefail -c "s3c du 's3://$B' | awk '{print \$1, \$2}'"

# ---- deleting -----------------------------------------------------------------------------
check "del deletes an object" s3c del "s3://$B/small.txt"
check "the deleted object is gone" bash -c "s3c ls 's3://$B/' >'$WORK/ls.out' && ! grep -q small.txt '$WORK/ls.out'"
check "rb refuses a non-empty bucket" bash -c \
    "! s3c rb 's3://$B' 2>'$WORK/rb.err' && grep -q BucketNotEmpty '$WORK/rb.err'"
check "del --recursive empties the bucket" s3c del --recursive --force "s3://$B"
check_eq "the bucket is empty" "" s3c ls -r "s3://$B"
check "rb" s3c rb "s3://$B"
check "the bucket is gone" bash -c "s3c ls >'$WORK/ls.out' && ! grep -q ' s3://$B\$' '$WORK/ls.out'"

# ---- credentials ------------------------------------------------------------------------
check "a wrong secret is refused" bash -c \
    "! s3cmd -c '$WORK/s3cfg-wrong' ls 2>'$WORK/bad.err' && grep -q SignatureDoesNotMatch '$WORK/bad.err'"
check "a wrong secret cannot make a bucket" bash -c \
    "! s3cmd -c '$WORK/s3cfg-wrong' mb s3://smoke-intruder 2>/dev/null &&
    s3c ls >'$WORK/ls.out' && ! grep -q smoke-intruder '$WORK/ls.out'"

# ---- clean shutdown --------------------------------------------------------------------------
finish
