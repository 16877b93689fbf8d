#!/usr/bin/env bash
# Starts a working three-node Vexil cluster on loopback and keeps it running until Ctrl-C.
#
#     scripts/local-cluster.sh [DATA_DIR]      (default: ./.vexil-local)
#
# Node N listens for the API on 127.0.0.1:700N, for Raft on 127.0.0.1:710N, for HTTPS
# (/metrics, /livez, /readyz) on 127.0.0.1:720N and for OpenFeature providers (flagd RPC, OFREP)
# on 127.0.0.1:801N; its data and log are under DATA_DIR/node-N.
# The cluster runs secure, as in production: the first start makes a CA, a certificate per node
# and the first admin token under DATA_DIR/pki (with `vexilctl tls`, no openssl needed), and a
# DATA_DIR/vexilctl.toml that points vexilctl at the cluster with them. The first start
# initialises the cluster; later starts reuse the data and credentials (the cluster is never
# initialised twice). Delete DATA_DIR for a fresh cluster.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(mkdir -p "${1:-$root/.vexil-local}" && cd "${1:-$root/.vexil-local}" && pwd)
cd "$root"

"$root/scripts/setup.sh"
eval "$("$root/scripts/rocksdb-env.sh")"
echo "building vexil and vexilctl (the first build compiles RocksDB once, ~15 minutes on 2 cores)..."
cargo build --locked -q -p vexil-server --bin vexil -p vexil-cli --bin vexilctl
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vexil"
ctl="${CARGO_TARGET_DIR:-$root/target}/debug/vexilctl"

# Credentials, once: the cluster CA, one certificate per node (for 127.0.0.1 and localhost,
# used to serve and to dial the other nodes), and the first admin token, which the first leader
# creates from the file.
pki="$data/pki"
if [ ! -f "$pki/admin.token" ]; then
    mkdir -p "$pki"
    "$ctl" tls create-ca --out-dir "$pki" --force >/dev/null
    for n in 1 2 3; do
        "$ctl" tls issue --ca-dir "$pki" --name "node-$n" --san 127.0.0.1 --san localhost --out-dir "$pki" --force >/dev/null
    done
    (umask 077 && printf 'vexil_%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$pki/admin.token")
fi
cat >"$data/vexilctl.toml" <<TOML
# vexilctl settings for the local cluster (scripts/local-cluster.sh writes this file).
endpoints = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
cacert = "$pki/ca.pem"
token_file = "$pki/admin.token"
TOML

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
        --openfeature-listen "127.0.0.1:801$n" \
        --cluster-bootstrap true --cluster-initial-members "$members" \
        --tls-cert-file "$pki/node-$n.pem" --tls-key-file "$pki/node-$n-key.pem" --tls-ca-file "$pki/ca.pem" \
        --auth-bootstrap-token-file "$pki/admin.token" \
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

Vexil cluster is up (leader: node $leader), with TLS on every port and tokens.
  API endpoints:  https://127.0.0.1:7001  https://127.0.0.1:7002  https://127.0.0.1:7003
  Raft ports:     127.0.0.1:7101  127.0.0.1:7102  127.0.0.1:7103 (mutual TLS)
  Admin (HTTPS):  https://127.0.0.1:7201/livez  (and /readyz; /metrics needs a token; 7202, 7203)
  OpenFeature:    127.0.0.1:8011  8012  8013 (flagd RPC over gRPC and OFREP, TLS with the CA below)
  CA certificate: $pki/ca.pem
  Admin token:    $pki/admin.token  (keep it secret)
  Data and logs:  $data/node-{1,2,3}

Point vexilctl at it (endpoints, CA and token come from the file):
  export VEXILCTL_CONFIG=$data/vexilctl.toml
  vexilctl cluster status

Press Ctrl-C to stop it.
MSG
wait "${pids[@]}"
