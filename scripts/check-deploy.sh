#!/usr/bin/env bash
# Checks the deployment files offline (run by scripts/test.sh):
# - deploy/systemd/vexil.service: `systemd-analyze verify` must print nothing (any warning
#   fails), and `systemd-analyze security` must rate its exposure below 2.0. The unit's
#   ExecStart binary is swapped for /bin/true for the check (verify wants an executable there;
#   a build machine has none installed at /usr/local/bin).
# - deploy/kubernetes/*.yaml: valid against the Kubernetes 1.37 schemas, strictly (no unknown
#   fields), with `kubernetes-validate` (PyPI, pinned, bundles the schemas; installed once per
#   machine in ~/.cache/vexil/python). The server's config tests load the ConfigMap's vexil.toml.
# - deploy/compose/*.yml: `docker-compose config -q` prints nothing (schema, interpolation).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unit="$work/vexil.service"
sed 's#/usr/local/bin/vexil#/bin/true#' "$root/deploy/systemd/vexil.service" >"$unit"
verify=$(systemd-analyze verify "$unit" 2>&1) || true
if [ -n "$verify" ]; then
    echo "check-deploy: systemd-analyze verify deploy/systemd/vexil.service:" >&2
    echo "$verify" >&2
    exit 1
fi
exposure=$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$exposure" ] || ! awk -v e="$exposure" 'BEGIN { exit !(e < 2.0) }'; then
    echo "check-deploy: deploy/systemd/vexil.service exposure is ${exposure:-unknown}; it must stay below 2.0" >&2
    systemd-analyze security --offline=true "$unit" >&2 || true
    exit 1
fi
echo "check-deploy: vexil.service verifies cleanly; exposure $exposure"

validator_version=1.37.0
venv="$HOME/.cache/vexil/python/kubernetes-validate-$validator_version"
if [ ! -f "$venv/installed" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "kubernetes-validate==$validator_version"
    touch "$venv/installed"
fi
"$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version 1.37.0 "$root"/deploy/kubernetes/*.yaml
echo "check-deploy: deploy/kubernetes validates against Kubernetes 1.37"

# The compose files: docker-compose's own schema and interpolation, failing on any warning.
for f in "$root"/deploy/compose/*.yml; do
    out=$(docker-compose -f "$f" config -q 2>&1) || { echo "check-deploy: $f: $out" >&2; exit 1; }
    if [ -n "$out" ]; then
        echo "check-deploy: $f: $out" >&2
        exit 1
    fi
done
echo "check-deploy: deploy/compose files are valid"
