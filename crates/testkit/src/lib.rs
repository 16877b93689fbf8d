//! The one harness for every test and benchmark that runs real server processes: a cluster of
//! `vexil` processes on loopback ports, each with its own directory, that a test can kill (-9),
//! stop (SIGTERM), pause and restart, with typed gRPC access to each node.
//!
//! - [`Process`] (`process.rs`): one supervised process (log, pid file, signals, restart,
//!   kill-on-drop). The only code that spawns or signals a cluster's processes; the load
//!   generator's etcd members use it too.
//! - [`ClusterBuilder`] and [`Cluster`] (`cluster.rs`): every setting a suite can choose
//!   (voters, timeouts, lease, runtime, listeners, extra flags, log filter, binary, directory),
//!   nodes started outside the membership, and node handling by id.
//! - [`Listener`] (`listener.rs`): each socket a node opens, declared once (flag and port).
//! - [`Credentials`] (`security.rs`): a secure cluster's CA, node certificates and first admin
//!   token ([`ClusterBuilder::secure`]).
//! - [`HeaderRecorder`] (`recorder.rs`): a TLS gRPC server that records the `authorization`
//!   header of every call, for client-side tests without a cluster.
//! - [`ThinDisk`] (`disk.rs`): a disk that really fails (EIO at fsync) under a node's data
//!   directory, and its recovery onto a working disk; [`SmallDisk`], a tmpfs of a given size
//!   there, that fills for real and can grow. Both need root.
//! - `grpc.rs`: clients, status, leader agreement, audit log, HTTP requests to a node's HTTP
//!   ports ([`Cluster::http`]), and request pieces ([`spec`], [`bool_spec`], [`linearizable`],
//!   [`verify_chain`]).
//! - `foreign.rs`: other projects' real clients, built or installed once per machine:
//!   [`python_with`] (a Python virtual environment with pinned packages, run by
//!   [`python_script`]) and [`rust_provider`] (OpenFeature's Rust provider driver).
//! - [`Compose`] (`docker.rs`): a docker-compose project of Vexil containers and the faults a
//!   container-level test does to them (kill, pause, network disconnect, restart).
//! - [`Balancer`] (`balancer.rs`): one address in front of several nodes, as a load balancer or a
//!   Kubernetes Service gives a client that knows one host.
//! - [`eventually`] and [`eventually_async`]: polling a condition with a bound.
//! - Bounds are in `limits.rs`; ports come from [`free_port`].
//!
//! Errors: [`Cluster`]'s methods panic (in a test that is the failure report). What the load
//! generator, a binary that reports errors, calls returns `io::Result` instead: [`Process`],
//! [`ClusterBuilder::spawn`] and [`Cluster::try_wait_leader_among`].
//!
//! Finding the binary: cargo only tells a crate where its *own* binaries are
//! (`CARGO_BIN_EXE_*`), and `vexil` belongs to `vexil-server`. [`vexil_binary`] therefore
//! runs `cargo build -p vexil-server --bin vexil` (same profile as the caller: debug for tests,
//! release for benches) once per process, which is a no-op taking well under a second when the
//! binary is current, and uses `<target>/<profile>/vexil` (`CARGO_TARGET_DIR` or the workspace's
//! `target/`). `VEXIL_BIN=/path/to/vexil` skips all that; so does [`ClusterBuilder::bin`] (the
//! server's own tests pass `CARGO_BIN_EXE_vexil`, the load generator its `--bin`). The build
//! inherits the caller's environment, so run tests with the prebuilt RocksDB environment
//! (`eval "$(scripts/rocksdb-env.sh)"`) as every cargo command in this workspace is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod balancer;
mod cluster;
mod disk;
mod docker;
mod foreign;
mod grpc;
pub mod limits;
mod listener;
mod process;
mod recorder;
mod security;

pub use balancer::Balancer;
pub use cluster::{Cluster, ClusterBuilder, READ_LEASE_MS, Runtime};
pub use disk::{SmallDisk, ThinDisk};
pub use docker::Compose;
pub use foreign::{PROVIDER_FLAGS, python_script, python_with, rust_provider, rust_provider_run};
pub use grpc::{HttpReply, bool_spec, linearizable, spec, verify_chain};
pub use listener::Listener;
pub use process::Process;
pub use recorder::{HeaderRecorder, RecorderTls};
pub use security::Credentials;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

/// The path of a `vexil` binary built from this workspace (see the module docs).
pub fn vexil_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VEXIL_BIN") {
            return PathBuf::from(p);
        }
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let (profile, flag) = if cfg!(debug_assertions) { ("debug", None) } else { ("release", Some("--release")) };
        let bin = target.join(profile).join("vexil");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "vexil-server", "--bin", "vexil"])
            .args(flag)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) if bin.exists() => eprintln!(
                "vexil-testkit: `cargo build -p vexil-server` failed; using the existing {}:\n{}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(o) => panic!("cannot build the vexil binary:\n{}", String::from_utf8_lossy(&o.stderr)),
            Err(e) if bin.exists() => eprintln!("vexil-testkit: cannot run cargo ({e}); using {}", bin.display()),
            Err(e) => panic!("cannot run cargo to build the vexil binary: {e}"),
        }
        assert!(bin.exists(), "{} does not exist after building it", bin.display());
        bin
    })
    .clone()
}

/// A loopback TCP port that is free now and that no other caller in this process gets.
///
/// The ports come from below the kernel's ephemeral range (32768-60999 by default on Linux).
/// A port the kernel picked for `bind(0)` and that was then released goes back into that range,
/// where any outgoing connection (a gRPC client of another test) can take it before the node
/// meant to listen on it starts: seen as "Address already in use" on a node's admin port. Each
/// process starts at an offset derived from its pid, so test binaries running at the same time
/// rarely meet, and every port is checked by binding it before it is handed out.
pub fn free_port() -> u16 {
    const LOW: u64 = 10_000;
    const SPAN: u64 = 22_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let offset = u64::from(std::process::id()).wrapping_mul(7_919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "every loopback port in {LOW}..{} was tried", LOW + SPAN);
        let port = u16::try_from(LOW + (offset + n) % SPAN).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `done` every 10 ms until it holds; panics with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(limits::EVENTUALLY_POLL).await;
    }
}

/// [`eventually`] for a check that is itself async (an RPC, a `vexilctl` run): polls every
/// 100 ms.
pub async fn eventually_async<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(limits::EVENTUALLY_ASYNC_POLL).await;
    }
}
