#!/usr/bin/env bash
# The three-region benchmark: builds the release images, starts deploy/compose/regions.yml
# (voters in us, learners in eu and ap, 80 and 140 ms round trips to us), runs
# `regions` (benches/src/bin/regions.rs) from this host as a client in each region, and removes
# the setup with its volumes afterwards. Prints markdown tables (benches/README.md keeps them).
#
#     benches/regions.sh [--samples N]       # default 300 reads per row
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$("$root/scripts/rocksdb-env.sh")"
export VEXIL_IMAGE=vexil:bench VEXIL_WAN_IMAGE=vexil-wan:bench VEXIL_COMPOSE_PROJECT=vexil-regions-bench
file="$root/deploy/compose/regions.yml"
secrets="$root/deploy/compose/secrets"
down() { docker-compose -f "$file" -p "$VEXIL_COMPOSE_PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true; }

"$root/deploy/build-image.sh" "$VEXIL_IMAGE"
"$root/deploy/build-image.sh" --wan-delay "$VEXIL_WAN_IMAGE"
cargo build --release --locked -q -p vexil-benches --bin regions
down
trap down EXIT
"$root/deploy/compose/up-regions.sh" >/dev/null
"${CARGO_TARGET_DIR:-$root/target}/release/regions" \
    --compose-file "$file" --project "$VEXIL_COMPOSE_PROJECT" \
    --ca-file "$secrets/pki/ca.pem" --token-file "$secrets/pki/admin.token" "$@"
