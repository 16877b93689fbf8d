#!/usr/bin/env bash
# The container-level fault test: the one-region compose cluster (deploy/compose) in Docker,
# faulted while clients write and read (tests/containers: docker kill the leader, pause a
# follower, cut one off the network and back, restart all three), then checked: every
# acknowledged write on every node once, audit chains verified and equal, no read older than its
# level allows.
#
#     scripts/container-faults.sh
#
# The image is built from the debug binaries the test suite has just built (no second compile),
# as project `vexil-faults`, removed with its volumes afterwards whatever happened. Needs the
# Docker engine and docker-compose, and host ports 7001-7003, 8013, 8015 and 8016 free.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$("$root/scripts/rocksdb-env.sh")"
export VEXIL_IMAGE=vexil:faults VEXIL_COMPOSE_PROJECT=vexil-faults
file="$root/deploy/compose/docker-compose.yml"
secrets="$root/deploy/compose/secrets"
compose() { docker-compose -f "$file" -p "$VEXIL_COMPOSE_PROJECT" "$@"; }
down() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }

VEXIL_IMAGE_PROFILE=debug "$root/deploy/build-image.sh" "$VEXIL_IMAGE"
down
trap down EXIT
"$root/deploy/compose/up.sh" >/dev/null
cargo build --locked -q -p vexil-container-tests --bin compose-faults
status=0
"${CARGO_TARGET_DIR:-$root/target}/debug/compose-faults" \
    --compose-file "$file" --project "$VEXIL_COMPOSE_PROJECT" --network vexil \
    --services vexil-0,vexil-1,vexil-2 \
    --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
    --ca-file "$secrets/pki/ca.pem" --token-file "$secrets/pki/admin.token" \
    --lease-ms 200 || status=$?
if [ "$status" -ne 0 ]; then
    for s in vexil-0 vexil-1 vexil-2; do
        echo "--- $s (last 40 lines)"
        docker logs --tail 40 "${VEXIL_COMPOSE_PROJECT}_${s}_1" 2>&1 || true
    done
fi
exit "$status"
