//! The server suites' cluster: `vexil-testkit`'s test settings, plus the admin listener, a mix
//! of runtimes (even-numbered nodes single-threaded, odd ones work-stealing, so every cluster
//! test covers both), and the `vexil` binary this test build produced.

#![allow(dead_code)]

use vexil_testkit::{Cluster, ClusterBuilder, Listener, Runtime};

/// `n` voters with these settings, to add to before starting.
pub fn builder(n: u64) -> ClusterBuilder {
    Cluster::builder(n).bin(env!("CARGO_BIN_EXE_vexil")).listener(Listener::Admin).runtime(Runtime::Mixed)
}

/// Starts `n` voters that bootstrap one cluster, and waits for a leader.
pub async fn start(n: u64) -> Cluster {
    builder(n).start().await
}
