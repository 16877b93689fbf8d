#!/usr/bin/env bash
# Runs every check a change must pass: formatting, lints, and the whole test suite (unit tests,
# openraft's storage suite against RocksDB, and integration tests that start real three-node
# clusters of `vexil` processes on loopback).
#
#     scripts/test.sh
#
# The first run on a machine compiles RocksDB once (~15 minutes on 2 cores, cached in
# ~/.cache/vexil); later runs take a few minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
eval "$("$root/scripts/rocksdb-env.sh")"

# Property tests draw from a fixed seed so that a run is reproducible and CI cannot flake on a
# lucky draw; set PROPTEST_RNG_SEED to another number to explore further.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-1}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path tests/openfeature-rust/Cargo.toml -- --check
echo "== deployment files"
"$root/scripts/check-deploy.sh"
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== container faults (docker-compose)"
"$root/scripts/container-faults.sh"
