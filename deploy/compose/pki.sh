#!/usr/bin/env bash
# Makes the compose clusters' credentials once, under deploy/compose/secrets/pki/, with the
# image's own `vexilctl`: a CA, one node certificate for every node name the compose files use
# (vexil-0 .. vexil-4, localhost, 127.0.0.1) and the first admin token. A node certificate made
# for other names (by an older version of this script) is issued again from the same CA.
# Sourced by up.sh and up-regions.sh with $image and $secrets set; node_security (below) prints
# the [tls] and [auth] sections of their node configuration.
names="vexil-0 vexil-1 vexil-2 vexil-3 vexil-4 localhost 127.0.0.1"
ctl() { docker run --rm -u "$(id -u):$(id -g)" -v "$secrets/pki:/pki" --entrypoint /usr/local/bin/vexilctl "$image" "$@" >/dev/null; }
if [ ! -f "$secrets/pki/admin.token" ]; then
    mkdir -p "$secrets/pki"
    ctl tls create-ca --out-dir /pki --force
    (umask 077 && printf 'vexil_%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$secrets/pki/admin.token")
fi
if [ "$(cat "$secrets/pki/node.names" 2>/dev/null)" != "$names" ]; then
    sans=()
    for n in $names; do sans+=(--san "$n"); done
    ctl tls issue --ca-dir /pki --name node "${sans[@]}" --out-dir /pki --force
    printf '%s\n' "$names" >"$secrets/pki/node.names"
fi
# The nodes run as user 10001: they read the certificates and the token; the CA key stays
# unreadable to them.
chmod 0644 "$secrets/pki/"*.pem "$secrets/pki/admin.token"
chmod 0600 "$secrets/pki/ca-key.pem"
chmod 0755 "$secrets/pki"

# The [tls] and [auth] sections of a compose node's vexil.toml (the files above, as mounted at
# /etc/vexil/tls).
node_security() {
    cat <<'TOML'

[tls]
cert_file = "/etc/vexil/tls/node.pem"
key_file = "/etc/vexil/tls/node-key.pem"
ca_file = "/etc/vexil/tls/ca.pem"

[auth]
bootstrap_token_file = "/etc/vexil/tls/admin.token"
TOML
}
