#!/usr/bin/env bash
# Smoke test: drive a real `hangar server` with the aws CLI (and curl for the
# admin port and presigned URLs). Starts its own server on free ports in a temp
# dir, stops it with SIGTERM, and ends with "N passed, M failed".
#
# Binary: $HANGAR_BIN, or <workspace>/target/debug/hangar.
set -uo pipefail

SMOKE_NAME=smoke
. "$(dirname "$0")/lib.sh"
require_tool aws "pip install awscli"
start_server
export AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" AWS_DEFAULT_REGION="$REGION" S3_ENDPOINT

# An isolated aws CLI configuration: path-style, SigV4, no retries.
export AWS_CONFIG_FILE="$WORK/aws-config"
export AWS_SHARED_CREDENTIALS_FILE="$WORK/aws-credentials"
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
cat >"$AWS_CONFIG_FILE" <<'EOF'
[default]
max_attempts = 1
s3 =
    addressing_style = path
    signature_version = s3v4
EOF

s3() { aws --endpoint-url "$S3_ENDPOINT" s3 "$@"; }
s3api() { aws --endpoint-url "$S3_ENDPOINT" s3api "$@"; }
hangar_cli() { "$HANGAR_BIN" --rpc-addr "127.0.0.1:$RPC_PORT" --data-dir "$DATA" "$@"; }

B=smoke-bucket
F="$WORK/files"
mkdir -p "$F"
echo "hello from the hangar smoke test" >"$F/small.txt"
head -c 300000 /dev/urandom >"$F/medium.bin"
head -c $((12 * 1024 * 1024 + 123)) /dev/urandom >"$F/big.bin"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$F/part1.bin"
head -c 4321 /dev/urandom >"$F/part2.bin"

# ---- admin port ---------------------------------------------------------------
check "GET /health is ok" bash -c "[ \"\$(curl -sf http://127.0.0.1:$ADMIN_PORT/health)\" = ok ]"
check "GET /metrics has hangar_ metrics" bash -c "curl -sf http://127.0.0.1:$ADMIN_PORT/metrics | grep -q '^hangar_'"

# ---- high-level s3 commands -----------------------------------------------------
check "s3 mb" s3 mb "s3://$B"
check "s3 ls shows the bucket" bash -c "aws --endpoint-url '$S3_ENDPOINT' s3 ls | grep -q ' $B\$'"
check "s3 cp upload small" s3 cp "$F/small.txt" "s3://$B/small.txt"
check "s3 cp upload medium" s3 cp "$F/medium.bin" "s3://$B/dir/medium.bin"
check "s3 cp upload 12 MiB (multipart)" s3 cp "$F/big.bin" "s3://$B/big.bin"
check "s3 cp download small" s3 cp "s3://$B/small.txt" "$WORK/small.out"
check "small round-trips" cmp "$F/small.txt" "$WORK/small.out"
check "s3 cp download 12 MiB" s3 cp "s3://$B/big.bin" "$WORK/big.out"
check "12 MiB round-trips" cmp "$F/big.bin" "$WORK/big.out"
check "s3 ls lists objects" bash -c "aws --endpoint-url '$S3_ENDPOINT' s3 ls s3://$B/ >'$WORK/ls.out' &&
    grep -q 'small.txt' '$WORK/ls.out' && grep -q 'big.bin' '$WORK/ls.out' && grep -q 'PRE dir/' '$WORK/ls.out'"
check "s3 ls --recursive lists nested keys" bash -c \
    "aws --endpoint-url '$S3_ENDPOINT' s3 ls --recursive s3://$B/ | grep -q 'dir/medium.bin'"
check "s3 rb refuses a non-empty bucket" bash -c \
    "! aws --endpoint-url '$S3_ENDPOINT' s3 rb s3://$B 2>'$WORK/rb.err' && grep -q BucketNotEmpty '$WORK/rb.err'"
check "presigned GET URL works with curl" bash -c \
    "url=\$(aws --endpoint-url '$S3_ENDPOINT' s3 presign s3://$B/small.txt --expires-in 300) &&
    curl -sf \"\$url\" | cmp - '$F/small.txt'"

# ---- s3api ------------------------------------------------------------------------
check "put-object with metadata" s3api put-object --bucket "$B" --key meta.txt --body "$F/small.txt" \
    --content-type text/plain --metadata color=blue,shape=round
check_eq "put-object ETag is the MD5" "\"$(md5sum "$F/small.txt" | cut -d' ' -f1)\"" \
    s3api head-object --bucket "$B" --key meta.txt --query ETag --output text
check_eq "head-object shows Content-Type, metadata and length" \
    "$(printf 'text/plain\tblue\t%s' "$(stat -c %s "$F/small.txt")")" \
    s3api head-object --bucket "$B" --key meta.txt --query '[ContentType, Metadata.color, ContentLength]' --output text
check "get-object round-trips" bash -c "aws --endpoint-url '$S3_ENDPOINT' s3api get-object --bucket $B \
    --key meta.txt '$WORK/meta.out' >/dev/null && cmp '$F/small.txt' '$WORK/meta.out'"
check "get-object with a range" bash -c "aws --endpoint-url '$S3_ENDPOINT' s3api get-object --bucket $B \
    --key dir/medium.bin --range bytes=100-199 '$WORK/range.out' >/dev/null &&
    cmp '$WORK/range.out' <(tail -c +101 '$F/medium.bin' | head -c 100)"
check "get-object of a missing key is NoSuchKey" bash -c "! aws --endpoint-url '$S3_ENDPOINT' s3api get-object \
    --bucket $B --key missing '$WORK/missing.out' 2>'$WORK/missing.err' && grep -q NoSuchKey '$WORK/missing.err'"
for key in dir/a dir/b dir/sub/c; do
    s3api put-object --bucket "$B" --key "$key" --body "$F/small.txt" >/dev/null 2>&1
done
check_eq "list-objects-v2 with prefix and delimiter" "$(printf 'dir/a,dir/b,dir/medium.bin\tdir/sub/')" \
    s3api list-objects-v2 --bucket "$B" --prefix dir/ --delimiter / --no-paginate \
    --query '[join(`,`, Contents[].Key), join(`,`, CommonPrefixes[].Prefix)]' --output text
# The CLI follows continuation tokens itself; JSON output merges the pages.
check_eq "list-objects-v2 pagination (page size 2)" 7 \
    s3api list-objects-v2 --bucket "$B" --page-size 2 --query 'length(Contents)' --output json
check "copy-object" s3api copy-object --bucket "$B" --key copy.txt --copy-source "$B/meta.txt"
check_eq "copied object keeps metadata" round \
    s3api head-object --bucket "$B" --key copy.txt --query Metadata.shape --output text
check "delete-objects" s3api delete-objects --bucket "$B" \
    --delete '{"Objects":[{"Key":"dir/a"},{"Key":"dir/b"},{"Key":"dir/sub/c"}]}'
check_eq "deleted objects are gone" 1 \
    s3api list-objects-v2 --bucket "$B" --prefix dir/ --no-paginate --query KeyCount --output text

# ---- multipart by hand -----------------------------------------------------------------
mpu_round_trip() {
    local id e1 e2
    id="$(s3api create-multipart-upload --bucket "$B" --key mpu.bin --query UploadId --output text)" || return 1
    e1="$(s3api upload-part --bucket "$B" --key mpu.bin --upload-id "$id" --part-number 1 \
        --body "$F/part1.bin" --query ETag --output text)" || return 1
    e2="$(s3api upload-part --bucket "$B" --key mpu.bin --upload-id "$id" --part-number 2 \
        --body "$F/part2.bin" --query ETag --output text)" || return 1
    s3api list-parts --bucket "$B" --key mpu.bin --upload-id "$id" --query 'length(Parts)' --output text | grep -qx 2 ||
        return 1
    local etag
    etag="$(s3api complete-multipart-upload --bucket "$B" --key mpu.bin --upload-id "$id" \
        --multipart-upload "{\"Parts\":[{\"PartNumber\":1,\"ETag\":$e1},{\"PartNumber\":2,\"ETag\":$e2}]}" \
        --query ETag --output text)" || return 1
    echo "ETag $etag"
    [[ "$etag" == *-2\" ]] || return 1
    s3api get-object --bucket "$B" --key mpu.bin "$WORK/mpu.out" >/dev/null || return 1
    cmp "$WORK/mpu.out" <(cat "$F/part1.bin" "$F/part2.bin")
}
check "multipart upload with s3api" mpu_round_trip

mpu_abort() {
    local id
    id="$(s3api create-multipart-upload --bucket "$B" --key aborted.bin --query UploadId --output text)" || return 1
    s3api list-multipart-uploads --bucket "$B" --query 'Uploads[].Key' --output text | grep -q aborted.bin || return 1
    s3api abort-multipart-upload --bucket "$B" --key aborted.bin --upload-id "$id" || return 1
    ! s3api list-multipart-uploads --bucket "$B" --query 'Uploads[].Key' --output text | grep -q aborted.bin
}
check "abort multipart upload" mpu_abort

# ---- server-side encryption with a customer key (SSE-C) -------------------------------------
head -c 32 /dev/urandom >"$WORK/ssec.key"
check "s3 cp upload with --sse-c" s3 cp "$F/medium.bin" "s3://$B/secret.bin" --sse-c AES256 \
    --sse-c-key "fileb://$WORK/ssec.key"
check "an SSE-C object cannot be read without its key" bash -c "! aws --endpoint-url '$S3_ENDPOINT' s3 cp \
    's3://$B/secret.bin' '$WORK/nokey.out' 2>'$WORK/nokey.err' && grep -q '400' '$WORK/nokey.err'"
check "s3 cp download with --sse-c round-trips" bash -c "aws --endpoint-url '$S3_ENDPOINT' s3 cp \
    's3://$B/secret.bin' '$WORK/secret.out' --sse-c AES256 --sse-c-key 'fileb://$WORK/ssec.key' >/dev/null &&
    cmp '$F/medium.bin' '$WORK/secret.out'"
check_eq "head-object with the key shows the algorithm" AES256 \
    s3api head-object --bucket "$B" --key secret.bin --sse-customer-algorithm AES256 \
    --sse-customer-key "fileb://$WORK/ssec.key" --query SSECustomerAlgorithm --output text

# ---- admin CLI -----------------------------------------------------------------------------
check "hangar status" hangar_cli status
key_with_rights() {
    local out id secret
    out="$(hangar_cli key create smoke-user)" || return 1
    id="$(sed -n 's/^Key ID: *//p' <<<"$out")"
    secret="$(sed -n 's/^Secret key: *//p' <<<"$out")"
    [ -n "$id" ] && [ -n "$secret" ] || return 1
    # No rights yet: the bucket is invisible and reads are denied.
    local listing
    listing="$(AWS_ACCESS_KEY_ID=$id AWS_SECRET_ACCESS_KEY=$secret s3 ls)" || return 1
    [ -z "$listing" ] || return 1
    ! AWS_ACCESS_KEY_ID=$id AWS_SECRET_ACCESS_KEY=$secret s3api head-object --bucket "$B" --key small.txt || return 1
    hangar_cli bucket allow --read "$B" --key smoke-user || return 1
    AWS_ACCESS_KEY_ID=$id AWS_SECRET_ACCESS_KEY=$secret s3 cp "s3://$B/small.txt" "$WORK/user.out" &&
        cmp "$F/small.txt" "$WORK/user.out"
}
check "new key is denied, then allowed" key_with_rights

# ---- cleanup via the CLI ---------------------------------------------------------------------
check "s3 rm --recursive" s3 rm --recursive "s3://$B"
check "s3 rb" s3 rb "s3://$B"
check "bucket is gone" bash -c "! aws --endpoint-url '$S3_ENDPOINT' s3 ls | grep -q ' $B\$'"

# ---- clean shutdown --------------------------------------------------------------------------
finish
