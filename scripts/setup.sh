#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test Vexil: libclang (bindgen needs it for
# RocksDB's bindings), a C++ compiler, the filesystem tools one test uses, and Python with venv
# and protoc for the OpenFeature provider tests. Needs root or sudo for apt-get; does nothing when all is there.
set -euo pipefail
missing=()
# libclang itself (libclang.so / libclang-NN.so.N), not libclang-cpp, which some images carry alone.
ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/*-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
# The storage-failure test builds a failing disk (tmpfs + loop device + ext4): mkfs.ext4,
# e2fsck and losetup.
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
# The OpenFeature provider test runs OpenFeature's Python providers in a virtual environment.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# ... and OpenFeature's Rust provider (tests/openfeature-rust), whose build script runs protoc.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# scripts/check-deploy.sh checks the systemd unit with systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is not installed; install Rust 1.95 (rustup) first" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >&2
fi
