#!/usr/bin/env bash
# Vexil beside etcd 3.4 on this machine: starts a three-node Vexil cluster, runs the load
# generator's scenarios against it, stops it, does the same with a three-node etcd cluster, and
# prints one table with the Vexil/etcd ratio per row. Raw JSON goes to --out.
#
# The clusters run one at a time, so they never compete for the cores. Both are on loopback
# with the same heartbeat (100 ms), each with its own default election timeout, chosen for the
# same time of leader silence before an election: etcd --election-timeout 1000, which it
# randomises in [1000, 2000) ms; Vexil 400-700 ms, which openraft 0.9 turns into a first
# election 1100-1400 ms after the last heartbeat (it adds a leader lease of the maximum; see
# benches/README.md). Both fsync their logs before acknowledging (etcd always; Vexil syncs its
# WAL per appended batch of entries). The load generator
# starts, kills (-9) and restarts the members itself (see benches/src/loadgen/cluster.rs).
#
# Usage: benches/compare-etcd.sh [--duration SECONDS] [--clients 1,16,64,256]
#            [--failover-repeats N] [--vexil-bin PATH] [--etcd-bin PATH] [--out DIR]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=6
clients=1,16,64,256
repeats=3
vexil_bin=
etcd_bin=$(command -v etcd || true)
out=${CARGO_TARGET_DIR:-$root/target}/compare-etcd

while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --failover-repeats) repeats=$2; shift 2 ;;
        --vexil-bin) vexil_bin=$2; shift 2 ;;
        --etcd-bin) etcd_bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "compare-etcd: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -z "$etcd_bin" ]; then
    echo "compare-etcd: installing etcd-server (Debian's etcd 3.4)" >&2
    apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
    etcd_bin=$(command -v etcd)
fi

cd "$root"
eval "$(scripts/rocksdb-env.sh)"
cargo build --release -q -p vexil-benches --bin loadgen
if [ -z "$vexil_bin" ]; then
    cargo build --release -q -p vexil-server --bin vexil
    vexil_bin=${CARGO_TARGET_DIR:-$root/target}/release/vexil
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/compare-etcd.XXXXXX")
cleanup() {
    # Members a crashed or interrupted run left behind: each wrote its pid beside its data.
    for f in "$work"/*/*/pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if grep -qs "$work" "/proc/$pid/cmdline"; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$out"
loadgen=${CARGO_TARGET_DIR:-$root/target}/release/loadgen
common=(--duration "$duration" --clients "$clients" --failover-repeats "$repeats" --heartbeat-ms 100)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
     "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "vexil: $vexil_bin; etcd: $("$etcd_bin" --version | head -n 1)"
echo "duration ${duration}s per run (+1s warm-up), clients $clients, failover repeats $repeats"

"$loadgen" run --system vexil --bin "$vexil_bin" --work-dir "$work" --json "$out/vexil.json" "${common[@]}" \
    --election-timeout-min-ms 400 --election-timeout-max-ms 700 --read-lease-ms 200 > "$out/vexil.md"
"$loadgen" run --system etcd --bin "$etcd_bin" --work-dir "$work" --json "$out/etcd.json" "${common[@]}" \
    --election-timeout-min-ms 1000 --election-timeout-max-ms 2000 > "$out/etcd.md"

echo
"$loadgen" compare --vexil "$out/vexil.json" --etcd "$out/etcd.json" | tee "$out/comparison.md"
echo
echo "raw results: $out/vexil.json $out/etcd.json (tables: $out/*.md)"
