//! The server suites' cluster: `vexil-testkit`'s test settings, plus the admin listener, a mix
//! of runtimes (even-numbered nodes single-threaded, odd ones work-stealing, so every cluster
//! test covers both), and the `vexil` binary this test build produced.

use vexil_testkit::{Cluster, Listener, Runtime};

/// Starts `n` voters that bootstrap one cluster, and waits for a leader.
pub async fn start(n: u64) -> Cluster {
    Cluster::builder(n).bin(env!("CARGO_BIN_EXE_vexil")).listener(Listener::Admin).runtime(Runtime::Mixed).start().await
}
