#!/usr/bin/env bash
# Starts Vexil across three regions with WAN latency between them (deploy/compose/regions.yml):
# three voters in `us`, a learner in `eu` and one in `ap`, secure.
#
#     deploy/compose/up-regions.sh
#
# Builds the images if they are missing (deploy/build-image.sh: the node image and the delay
# proxy's), makes the credentials (pki.sh) and the configuration under deploy/compose/secrets/,
# starts everything, waits for a leader and adds the two learners (each joins the cluster, then
# catches up across its WAN link). Region networks: us 10.213.1.0/24, eu 10.213.2.0/24,
# ap 10.213.3.0/24; from this host every address is reachable directly (no delay), and a
# client "in eu" dials its learner at 10.213.2.10:7004 and the voters through the eu proxy at
# 10.213.2.20:7001-7003 (benches/regions.sh does exactly that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=${VEXIL_IMAGE:-vexil:latest}
wan_image=${VEXIL_WAN_IMAGE:-vexil-wan:latest}
export VEXIL_IMAGE=$image VEXIL_WAN_IMAGE=$wan_image
project=${VEXIL_COMPOSE_PROJECT:-vexil-regions}
file="$here/regions.yml"
docker image inspect "$image" >/dev/null 2>&1 || "$root/deploy/build-image.sh" "$image"
docker image inspect "$wan_image" >/dev/null 2>&1 || "$root/deploy/build-image.sh" --wan-delay "$wan_image"

secrets="$here/secrets"
. "$here/pki.sh"
cat >"$secrets/regions-vexil.toml" <<'TOML'
# Written by deploy/compose/up-regions.sh. Listen and advertise addresses, and bootstrap for
# the learners, come from each service's environment.
node_id = 0
data_dir = "/var/lib/vexil"
admin_listen = "0.0.0.0:7201"
openfeature_listen = ["0.0.0.0:8013", "0.0.0.0:8015", "0.0.0.0:8016"]

[cluster]
bootstrap = true
initial_members = ["1=vexil-0:7001/vexil-0:7101", "2=vexil-1:7002/vexil-1:7102", "3=vexil-2:7003/vexil-2:7103"]

# openraft gives every AppendEntries one heartbeat interval to answer, learners' included: it
# must exceed the round trip to the farthest node (140 ms to ap), or replication there times
# out and resends. Elections scale with it (about 4-7 heartbeats, as by default).
[raft]
heartbeat_interval_ms = 300
election_timeout_min_ms = 1200
election_timeout_max_ms = 2100
TOML
node_security >>"$secrets/regions-vexil.toml"
cat >"$secrets/regions-vexilctl.toml" <<'TOML'
# vexilctl inside a node's container (written by deploy/compose/up-regions.sh).
cacert = "/etc/vexil/tls/ca.pem"
token_file = "/etc/vexil/tls/admin.token"

[regions]
us = ["vexil-0:7001", "vexil-1:7002", "vexil-2:7003"]
eu = ["vexil-3:7004"]
ap = ["vexil-4:7005"]
TOML
chmod 0644 "$secrets/regions-vexil.toml" "$secrets/regions-vexilctl.toml"

compose() { docker-compose -f "$file" -p "$project" "$@"; }
ctl() { compose exec -T vexil-0 /usr/local/bin/vexilctl --region us "$@"; }
compose up -d
for _ in $(seq 1 60); do
    ctl cluster status >/dev/null 2>&1 && break
    sleep 2
done
for n in 3 4; do
    id=$((n + 1))
    if ! ctl --output json cluster status | grep -Eq "\"id\": ?$id[,}]"; then
        ctl cluster add-learner "$id" --api-addr "vexil-$n:700$id" --raft-addr "vexil-$n:710$id" --reason "region learner"
    fi
done
ctl cluster status
cat <<TEXT

Vexil runs in three regions (docker-compose project "$project"): voters in us, learners in eu
(vexil-3) and ap (vexil-4), WAN delay through wan-eu and wan-ap. From a node:

  docker-compose -f $file -p $project exec vexil-3 /usr/local/bin/vexilctl --region eu flag list NS

Stop: docker-compose -f $file -p $project down -v
TEXT
