#!/usr/bin/env bash
# Builds the `vexil` container image from this checkout, without pulling anything:
#
#     deploy/build-image.sh [TAG]                 # default vexil:latest
#     deploy/build-image.sh --wan-delay [TAG]     # default vexil-wan:latest
#
# Compiles `vexil` and `vexilctl` in release (RocksDB from the cache scripts/rocksdb-env.sh
# keeps); with VEXIL_IMAGE_PROFILE=debug it takes the debug binaries instead, the ones the test
# suite has just built, so CI's container tests cost no second compile. Copies them with exactly
# the shared libraries they link (and the dynamic loader) into an otherwise empty root, and
# builds deploy/Dockerfile on it (`FROM scratch`).
#
# `--wan-delay` builds the test image of the three-region compose setup instead: the userspace
# delay proxy (tests/containers, `wan-delay`) that stands in for WAN links between regions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=vexil
if [ "${1:-}" = "--wan-delay" ]; then
    kind=wan-delay
    shift
fi
case $kind in
    vexil) tag=${1:-vexil:latest}; packages=(-p vexil-server --bin vexil -p vexil-cli --bin vexilctl); bins=(vexil vexilctl) ;;
    wan-delay) tag=${1:-vexil-wan:latest}; packages=(-p vexil-container-tests --bin wan-delay); bins=(wan-delay) ;;
esac
cd "$root"
"$root/scripts/setup.sh"
eval "$("$root/scripts/rocksdb-env.sh")"
profile=${VEXIL_IMAGE_PROFILE:-release}
case $profile in
    release) cargo build --release --locked "${packages[@]}" ;;
    debug) cargo build --locked "${packages[@]}" ;;
    *) echo "build-image: VEXIL_IMAGE_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
bin="${CARGO_TARGET_DIR:-$root/target}/$profile"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/data"
for b in "${bins[@]}"; do
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
case $kind in
    vexil) cp "$root/deploy/Dockerfile" "$ctx/Dockerfile" ;;
    wan-delay) printf 'FROM scratch\nCOPY rootfs/ /\nUSER 10001:10001\nENTRYPOINT ["/usr/local/bin/wan-delay"]\n' >"$ctx/Dockerfile" ;;
esac
docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built $tag from $profile binaries ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
