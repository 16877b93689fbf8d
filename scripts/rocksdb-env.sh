#!/usr/bin/env bash
# Prints the environment that links every build against one prebuilt, optimised RocksDB.
#
# Compiling RocksDB from source takes ~16 minutes on two cores, and cargo would do it again for
# every profile (dev, test, release) and every change of RUSTFLAGS. Instead we compile it once per
# `librocksdb-sys` version (read from Cargo.lock) into a cache outside the work tree, and point
# librocksdb-sys at the archive (ROCKSDB_LIB_DIR + ROCKSDB_STATIC). Usage:
#
#     eval "$(scripts/rocksdb-env.sh)"
#
# The cache lives in ${VEXIL_CACHE_DIR:-$HOME/.cache/vexil}; delete it to force a rebuild.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '$0 == "name = \"librocksdb-sys\"" { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
[ -n "$version" ] || { echo "rocksdb-env: librocksdb-sys not found in Cargo.lock" >&2; exit 1; }
cache=${VEXIL_CACHE_DIR:-$HOME/.cache/vexil}/librocksdb-$version
if [ ! -f "$cache/librocksdb.a" ]; then
    echo "rocksdb-env: building RocksDB $version once into $cache (about 16 minutes on 2 cores)" >&2
    # Building our storage crate compiles librocksdb-sys with exactly the workspace's features.
    build="$cache.build"
    # Our own crates failing to compile must not cost another RocksDB build: keep the archive
    # whenever librocksdb-sys itself finished.
    status=0
    (cd "$root" && env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC CARGO_TARGET_DIR="$build" \
        cargo build --release --locked -p vexil-raft-store >&2) || status=$?
    archive=$(ls -t "$build"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
    if [ -z "$archive" ]; then
        echo "rocksdb-env: RocksDB did not build (cargo exit $status); see the output above" >&2
        exit 1
    fi
    rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
    cp "$archive" "$cache.tmp/librocksdb.a"
    # Rename last, so an interrupted build never leaves a cache that looks complete.
    mv "$cache.tmp" "$cache"
    rm -rf "$build"
fi
echo "export ROCKSDB_LIB_DIR='$cache' ROCKSDB_STATIC=1"
