#!/usr/bin/env bash
# Builds the container image `hangar:<version>` (also tagged `hangar:latest`) from the
# release binary, with no image registry: docker/Dockerfile starts from scratch and this
# script puts in its context the (stripped) binary, the shared libraries `ldd` names for
# it, the build machine's CA bundle and a passwd entry for uid 10001.
#
#   scripts/build-image.sh            build target/release/hangar first if needed
#   HANGAR_BIN=PATH scripts/build-image.sh    use that binary as it is
#   HANGAR_IMAGE=name:tag ...         an extra tag
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${HANGAR_BIN:-}" ]; then
    (cd "$root" && cargo build --release -q -p hangar)
    bin=$root/target/release/hangar
else
    bin=$HANGAR_BIN
fi
[ -x "$bin" ] || { echo "no hangar binary at $bin" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)

# Whatever the caller's umask, everything in the image is readable (and the binary and
# libraries executable) by the user it runs as.
umask 022
ctx=$(mktemp -d)
chmod 755 "$ctx"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/state/meta" "$ctx/state/data"

# Line tables are for profiling on the build machine; the image does without them.
strip -o "$ctx/rootfs/hangar" "$bin"

# Every library the dynamic loader will look for, at the path it looks in, and the
# loader itself. A library ldd cannot find is a broken build, not a smaller image.
if ldd "$bin" | grep -q 'not found'; then
    ldd "$bin" >&2
    echo "ldd cannot find a library of $bin" >&2
    exit 1
fi
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    cp -L --parents "$lib" "$ctx/rootfs/"
done

cat >"$ctx/rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/:/nonexistent
hangar:x:10001:10001:hangar:/var/lib/hangar:/nonexistent
PASSWD
cat >"$ctx/rootfs/etc/group" <<GROUP
root:x:0:
hangar:x:10001:
GROUP
# For https:// Consul addresses and other TLS peers without a CA of their own.
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -r "$bundle" ]; then cp -L "$bundle" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"; break; fi
done

tags=(-t "hangar:$version" -t hangar:latest)
[ -n "${HANGAR_IMAGE:-}" ] && tags+=(-t "$HANGAR_IMAGE")
# The classic builder: this engine may have no BuildKit, and the context is plain files.
if ! out=$(DOCKER_BUILDKIT=0 docker build -q "${tags[@]}" -f "$root/docker/Dockerfile" "$ctx" 2>&1); then
    echo "$out" >&2
    exit 1
fi
size=$(docker image inspect --format '{{.Size}}' "hangar:$version")
echo "built hangar:$version ($((size / 1024 / 1024)) MiB)" >&2
