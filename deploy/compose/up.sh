#!/usr/bin/env bash
# Starts the one-region compose cluster (deploy/compose/docker-compose.yml), secure:
#
#     deploy/compose/up.sh
#
# Once: builds the image if it is missing (deploy/build-image.sh), makes a CA, a node
# certificate and the first admin token under deploy/compose/secrets/ with the image's own
# `vexilctl` (pki.sh), and the node and vexilctl configuration. Then starts the three nodes and
# waits until a leader answers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=${VEXIL_IMAGE:-vexil:latest}
export VEXIL_IMAGE=$image
project=${VEXIL_COMPOSE_PROJECT:-vexil}
docker image inspect "$image" >/dev/null 2>&1 || "$root/deploy/build-image.sh" "$image"

secrets="$here/secrets"
. "$here/pki.sh"
cat >"$secrets/vexil.toml" <<'TOML'
# Written by deploy/compose/up.sh.
node_id = 0
data_dir = "/var/lib/vexil"
api_listen = "0.0.0.0:7001"
raft_listen = "0.0.0.0:7101"
admin_listen = "0.0.0.0:7201"
openfeature_listen = ["0.0.0.0:8013", "0.0.0.0:8015", "0.0.0.0:8016"]

[cluster]
bootstrap = true
# vexil-0 .. vexil-2 (node ids 1-3), at this node's ports.
peer_pattern = "vexil-{ordinal}"
initial_voters = 3
TOML
node_security >>"$secrets/vexil.toml"
cat >"$secrets/vexilctl.toml" <<'TOML'
# vexilctl inside a node's container (written by deploy/compose/up.sh).
endpoints = ["vexil-0:7001", "vexil-1:7001", "vexil-2:7001"]
cacert = "/etc/vexil/tls/ca.pem"
token_file = "/etc/vexil/tls/admin.token"
TOML
cat >"$secrets/vexilctl-host.toml" <<TOML
# vexilctl on this host: VEXILCTL_CONFIG=$secrets/vexilctl-host.toml vexilctl cluster status
endpoints = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
cacert = "$secrets/pki/ca.pem"
token_file = "$secrets/pki/admin.token"
TOML
chmod 0644 "$secrets/vexil.toml" "$secrets/vexilctl.toml"

docker-compose -f "$here/docker-compose.yml" -p "$project" up -d
for _ in $(seq 1 60); do
    if docker-compose -f "$here/docker-compose.yml" -p "$project" exec -T vexil-0 /usr/local/bin/vexilctl cluster status >/dev/null 2>&1; then
        docker-compose -f "$here/docker-compose.yml" -p "$project" exec -T vexil-0 /usr/local/bin/vexilctl cluster status
        cat <<TEXT

Vexil is up in docker-compose (project "$project"): API on 127.0.0.1:7001-7003, flagd RPC 8013,
sync 8015, OFREP 8016 on node 1, TLS with $secrets/pki/ca.pem, admin token in
$secrets/pki/admin.token. From this host:

  VEXILCTL_CONFIG=$secrets/vexilctl-host.toml vexilctl cluster status

Stop: docker-compose -f $here/docker-compose.yml -p $project down   (-v also deletes the data)
TEXT
        exit 0
    fi
    sleep 2
done
echo "up.sh: no leader answered within 120 s; docker-compose -p $project logs shows why" >&2
exit 1
