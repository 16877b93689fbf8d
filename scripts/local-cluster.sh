#!/usr/bin/env bash
# Starts a working three-node Vexil cluster on loopback and keeps it running until Ctrl-C.
#
#     scripts/local-cluster.sh [DATA_DIR]      (default: ./.vexil-local)
#
# Node N listens for the API on 127.0.0.1:700N, for Raft on 127.0.0.1:710N and for HTTP
# (/metrics, /livez, /readyz) on 127.0.0.1:720N; its data and log are under DATA_DIR/node-N. The first start initialises the cluster; later starts reuse
# the data (the cluster is never initialised twice). Delete DATA_DIR for a fresh cluster.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(mkdir -p "${1:-$root/.vexil-local}" && cd "${1:-$root/.vexil-local}" && pwd)
cd "$root"

"$root/scripts/setup.sh"
eval "$("$root/scripts/rocksdb-env.sh")"
echo "building vexil (the first build compiles RocksDB once, ~15 minutes on 2 cores)..."
cargo build --locked -q -p vexil-server --bin vexil
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vexil"

members="1=127.0.0.1:7001/127.0.0.1:7101,2=127.0.0.1:7002/127.0.0.1:7102,3=127.0.0.1:7003/127.0.0.1:7103"
pids=()
stop() {
    echo
    echo "stopping the cluster (SIGTERM)..."
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT
# INT/TERM end the script (bash ignores INT in a background job otherwise); EXIT then stops
# the nodes.
trap 'exit 130' INT TERM

for n in 1 2 3; do
    mkdir -p "$data/node-$n"
    # Keep the previous run's log aside, so readiness below only sees this run.
    [ -f "$data/node-$n/node.log" ] && mv "$data/node-$n/node.log" "$data/node-$n/node.log.prev"
    "$bin" --node-id "$n" --data-dir "$data/node-$n" \
        --api-listen "127.0.0.1:700$n" --raft-listen "127.0.0.1:710$n" --admin-listen "127.0.0.1:720$n" \
        --cluster-bootstrap true --cluster-initial-members "$members" --insecure \
        >>"$data/node-$n/node.log" 2>&1 &
    pids+=($!)
done

for _ in $(seq 1 200); do
    if grep -qh "now the leader" "$data"/node-*/node.log 2>/dev/null; then
        leader=$(grep -lh "now the leader" "$data"/node-*/node.log | tail -n 1 | sed 's|.*/node-\([0-9]*\)/node.log|\1|')
        break
    fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a node exited; see $data/node-*/node.log" >&2; tail -n 20 "$data"/node-*/node.log >&2; exit 1; }
    done
    sleep 0.1
done
[ -n "${leader:-}" ] || { echo "no leader after 20 s; see $data/node-*/node.log" >&2; exit 1; }

cat <<MSG

Vexil cluster is up (leader: node $leader).
  API endpoints:  127.0.0.1:7001  127.0.0.1:7002  127.0.0.1:7003
  Raft ports:     127.0.0.1:7101  127.0.0.1:7102  127.0.0.1:7103
  Admin (HTTP):   http://127.0.0.1:7201/metrics  (and /livez, /readyz; 7202, 7203)
  Data and logs:  $data/node-{1,2,3}

Press Ctrl-C to stop it.
MSG
wait "${pids[@]}"
