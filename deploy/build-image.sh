#!/usr/bin/env bash
# Builds the `vexil` container image from this checkout, without pulling anything:
#
#     deploy/build-image.sh [TAG]        # default vexil:latest
#
# Compiles `vexil` and `vexilctl` in release (RocksDB from the cache scripts/rocksdb-env.sh
# keeps), copies them with exactly the shared libraries they link (and the dynamic loader) into
# an otherwise empty root, and builds deploy/Dockerfile on it (`FROM scratch`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-vexil:latest}
cd "$root"
"$root/scripts/setup.sh"
eval "$("$root/scripts/rocksdb-env.sh")"
cargo build --release --locked -p vexil-server --bin vexil -p vexil-cli --bin vexilctl
bin="${CARGO_TARGET_DIR:-$root/target}/release"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/data"
for b in vexil vexilctl; do
    cp "$bin/$b" "$ctx/rootfs/usr/local/bin/$b"
    strip "$ctx/rootfs/usr/local/bin/$b"
    # Every library it links, at the path it links it from, and the loader.
    ldd "$bin/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
        cp --parents -L "$lib" "$ctx/rootfs/"
    done
done
# Name resolution (nsswitch.conf below) loads these at run time; ldd does not list them.
for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libresolv.so.2; do
    [ -e "$lib" ] && cp --parents -L "$lib" "$ctx/rootfs/"
done
printf 'root:x:0:0:root:/:/nonexistent\nvexil:x:10001:10001:vexil:/var/lib/vexil:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nvexil:x:10001:\n' >"$ctx/rootfs/etc/group"
printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"
docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
