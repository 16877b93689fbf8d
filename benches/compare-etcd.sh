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
# --secure runs both clusters secure: TLS on every port with client certificates required from
# clients and peers (certificates from vexil-pki), and a token on every call (Vexil: the admin
# bearer token; etcd: auth enabled, the `bench` user's token). Results then go to
# <out>-secure unless --out is given. --etcdctl-check-perf LOAD then also runs etcd's own
# `etcdctl check perf --load LOAD` against an etcd cluster set up the same way (a cross-check
# of the load generator's etcd figures with etcd's own client; about 60 s more).
#
# Usage: benches/compare-etcd.sh [--duration SECONDS] [--clients 1,16,64,256]
#            [--failover-repeats N] [--secure] [--etcdctl-check-perf s|m|l|xl]
#            [--vexil-bin PATH] [--etcd-bin PATH] [--out DIR]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=6
clients=1,16,64,256
repeats=3
vexil_bin=
etcd_bin=$(command -v etcd || true)
out=
secure=()
check_perf=

while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --failover-repeats) repeats=$2; shift 2 ;;
        --vexil-bin) vexil_bin=$2; shift 2 ;;
        --etcd-bin) etcd_bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --secure) secure=(--secure); shift ;;
        --etcdctl-check-perf) check_perf=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "compare-etcd: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -z "$out" ]; then
    out=${CARGO_TARGET_DIR:-$root/target}/compare-etcd${secure:+-secure}
fi

if [ -z "$etcd_bin" ]; then
    echo "compare-etcd: installing etcd-server (Debian's etcd 3.4)" >&2
    apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
    etcd_bin=$(command -v etcd)
fi
etcdctl_bin=
if [ -n "$check_perf" ]; then
    etcdctl_bin=$(command -v etcdctl || true)
    if [ -z "$etcdctl_bin" ]; then
        echo "compare-etcd: installing etcd-client (Debian's etcdctl 3.4)" >&2
        apt-get update -qq && apt-get install -y -qq etcd-client >/dev/null
        etcdctl_bin=$(command -v etcdctl)
    fi
fi

cd "$root"
eval "$(scripts/rocksdb-env.sh)"
cargo build --release -q -p vexil-benches --bin loadgen
if [ -z "$vexil_bin" ]; then
    cargo build --release -q -p vexil-server --bin vexil
    vexil_bin=${CARGO_TARGET_DIR:-$root/target}/release/vexil
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/compare-etcd.XXXXXX")
hold=
cleanup() {
    # The load generator holding a cluster for etcdctl (it stops its members on SIGTERM).
    if [ -n "$hold" ]; then kill -TERM "$hold" 2>/dev/null && wait "$hold" 2>/dev/null || true; fi
    # Members a crashed or interrupted run left behind: each wrote its pid beside its data.
    for f in "$work"/*/*/pid "$work"/*/*/*/pid; do
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
common=(--duration "$duration" --clients "$clients" --failover-repeats "$repeats" --heartbeat-ms 100 "${secure[@]}")

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
     "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "vexil: $vexil_bin; etcd: $("$etcd_bin" --version | head -n 1)"
echo "duration ${duration}s per run (+1s warm-up), clients $clients, failover repeats $repeats"
if [ ${#secure[@]} -gt 0 ]; then
    echo "secure: TLS with client certificates (clients and peers), a token on every call (Vexil admin token; etcd auth, user bench)"
else
    echo "plaintext: no TLS, no tokens (Vexil --insecure)"
fi

"$loadgen" run --system vexil --bin "$vexil_bin" --work-dir "$work" --json "$out/vexil.json" "${common[@]}" \
    --election-timeout-min-ms 400 --election-timeout-max-ms 700 --read-lease-ms 200 > "$out/vexil.md"
"$loadgen" run --system etcd --bin "$etcd_bin" --work-dir "$work" --json "$out/etcd.json" "${common[@]}" \
    --election-timeout-min-ms 1000 --election-timeout-max-ms 2000 > "$out/etcd.md"

echo
"$loadgen" compare --vexil "$out/vexil.json" --etcd "$out/etcd.json" | tee "$out/comparison.md"

if [ -n "$check_perf" ]; then
    # The etcd cluster of the run above, set up again (secure: auth enabled, user bench) and
    # held while etcd's own client runs against it. Its keys go under bench/, which the bench
    # user may write.
    echo
    echo "etcdctl check perf --load $check_perf ($("$etcdctl_bin" version | head -n 1)):"
    env_file=$work/check.env
    "$loadgen" hold --system etcd --bin "$etcd_bin" --work-dir "$work/check" --heartbeat-ms 100 \
        --election-timeout-min-ms 1000 --election-timeout-max-ms 2000 "${secure[@]}" --env-file "$env_file" \
        2> "$out/etcd-hold.log" &
    hold=$!
    while [ ! -f "$env_file" ]; do
        if ! kill -0 "$hold" 2>/dev/null; then
            echo "compare-etcd: the etcd cluster for check perf did not start:" >&2
            cat "$out/etcd-hold.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    # check perf exits non-zero when etcd misses the load's target rate (FAIL): not an error here.
    status=0
    (set -a && . "$env_file" && set +a && exec "$etcdctl_bin" check perf --load "$check_perf" \
        --prefix bench/check-perf/) > "$out/etcdctl-check-perf.log" 2>&1 || status=$?
    kill -TERM "$hold"
    wait "$hold" || true
    hold=
    tr '\r' '\n' < "$out/etcdctl-check-perf.log" | grep -E 'PASS|FAIL|Throughput|Slowest|Stddev|rror' || true
    [ "$status" -eq 0 ] || echo "(exit status $status: a FAIL above is etcd missing the load's target; else see $out/etcdctl-check-perf.log)"
fi

echo
echo "raw results: $out/vexil.json $out/etcd.json (tables: $out/*.md)"
