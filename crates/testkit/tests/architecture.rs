//! The architecture invariants of `ARCHITECTURE.md` that a machine can check: which crate may
//! depend on what, and which code may do what. Each test names the invariant it holds; a
//! failure says what broke it.
//!
//! Dependency rules read `cargo tree` (normal edges only: what ships, not what tests use), so
//! they hold transitively. Code rules read the source as text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use vexil_testkit::workspace_root;

/// The packages `package` pulls in when built for use (no dev or build dependencies).
fn shipped_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "-p", package])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -p {package} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

#[track_caller]
fn assert_free_of(package: &str, forbidden: &[&str], why: &str) {
    let deps = shipped_dependencies(package);
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "{package} depends on {found:?}: {why}");
}

#[test]
fn the_model_is_pure() {
    assert_free_of(
        "vexil-model",
        &["tokio", "tonic", "prost", "rocksdb", "librocksdb-sys", "openraft"],
        "the flag model and evaluator do no IO and are shared by server, client and CLI",
    );
}

#[test]
fn the_store_knows_no_networking() {
    assert_free_of(
        "vexil-raft-store",
        &["tonic", "prost", "hyper", "axum"],
        "raft-store knows nothing of gRPC or HTTP",
    );
}

#[test]
fn the_client_and_the_cli_build_without_rocksdb() {
    for package in ["vexil-client", "vexil-cli", "vexil-proto", "vexil-pki"] {
        assert_free_of(package, &["rocksdb", "librocksdb-sys"], "services and operators must not need a C++ build");
    }
}

#[test]
fn one_tls_provider_at_most() {
    // rustls panics at its first handshake when both providers are in the build.
    for package in ["vexil-server", "vexil-client", "vexil-cli", "vexil-pki", "vexil-testkit"] {
        assert_free_of(package, &["aws-lc-rs", "aws-lc-sys"], "rustls must use ring alone");
    }
}

/// `[dependencies]` of a manifest, by name (dev and build sections excluded).
fn direct_dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_normal = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_normal = line == "[dependencies]";
        } else if in_normal && let Some((name, _)) = line.split_once(['=', '.']) {
            out.push(name.trim().to_string());
        }
    }
    out
}

#[test]
fn anyhow_stays_in_binaries_and_tests() {
    // Libraries return typed errors (a thiserror enum per layer); the load generator is a
    // binary and the simulation a test crate.
    for krate in ["model", "proto", "raft-store", "server", "client", "cli"] {
        let manifest = workspace_root().join("crates").join(krate).join("Cargo.toml");
        let deps = direct_dependencies(&manifest);
        assert!(!deps.iter().any(|d| d == "anyhow"), "crates/{krate} depends on anyhow outside tests");
    }
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn statuses_are_built_in_error_rs_only() {
    let src = workspace_root().join("crates/server/src");
    let builders = [
        "Status::new(",
        "Status::with_",
        "Status::invalid_argument(",
        "Status::unavailable(",
        "Status::internal(",
        "Status::unauthenticated(",
        "Status::permission_denied(",
        "Status::not_found(",
        "Status::resource_exhausted(",
        "Status::failed_precondition(",
        "Status::unknown(",
        "Status::aborted(",
        "Status::deadline_exceeded(",
        "Status::already_exists(",
        "Status::cancelled(",
        "Status::unimplemented(",
    ];
    for file in rust_files(&src) {
        if file.ends_with("error.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let hit = builders.iter().find(|b| line.contains(**b));
            assert!(hit.is_none(), "{}:{}: builds a Status outside error.rs: {}", file.display(), n + 1, line.trim());
        }
    }
}

#[test]
fn only_the_testkit_starts_nodes() {
    // One harness: tests and benchmarks get `vexil` processes from vexil-testkit only (they may
    // name the binary, as the server's tests do with CARGO_BIN_EXE_vexil, but not spawn it).
    // Running the `vexilctl` tool is not starting a node.
    let root = workspace_root();
    let mut dirs: Vec<_> =
        ["server", "cli", "client"].iter().map(|c| root.join("crates").join(c).join("tests")).collect();
    dirs.push(root.join("benches"));
    for file in dirs.iter().flat_map(|d| rust_files(d)) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let spawns_node = line.contains("Command::new") && !line.contains("vexilctl");
            // A port picked here and handed to a process can be taken before the process binds
            // it; testkit's `free_port` picks them below the ephemeral range.
            let picks_ports = line.contains("fn free_port");
            assert!(
                !spawns_node && !picks_ports,
                "{}:{}: start nodes and pick ports through vexil-testkit: {}",
                file.display(),
                n + 1,
                line.trim()
            );
        }
    }
}
