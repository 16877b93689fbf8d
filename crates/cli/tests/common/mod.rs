//! Driving the `vexilctl` binary (`ctl`, `Out`, `ctl_command`, `temp_file`), and the CLI
//! suites' cluster: `vexil-testkit`'s, with longer write and Raft RPC timeouts (5000 / 1000 ms:
//! these tests run many `vexilctl` processes beside the nodes) and extra node flags.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use vexil_testkit::{Cluster, Listener};

/// Starts `n` voters that bootstrap one cluster (with `extra` node flags), and waits for a
/// leader. Nodes started later with `Cluster::start_outsider` get the same flags.
pub async fn start(n: u64, extra: &[&str]) -> Cluster {
    builder(n).flags(extra).start().await
}

/// The CLI suites' cluster builder, for clusters that need more (a listener, say).
pub fn builder(n: u64) -> vexil_testkit::ClusterBuilder {
    Cluster::builder(n).write_timeout_ms(5000).rpc_timeout_ms(1000)
}

/// What one `vexilctl` run printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "vexilctl failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts this exit code and returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        &self.stderr
    }
}

/// The `vexilctl` command, isolated from the user's environment and config files (run in an
/// empty directory, so no `./vexilctl.toml` is found).
pub fn ctl_command(args: &[&str]) -> tokio::process::Command {
    let cwd = std::env::temp_dir().join("vexilctl-test-cwd-without-config");
    std::fs::create_dir_all(&cwd).unwrap();
    ctl_command_in(&cwd, args)
}

/// The `vexilctl` command run in `cwd`, isolated from the user's environment and config files.
pub fn ctl_command_in(cwd: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexilctl"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("VEXIL_ENDPOINTS")
        .env_remove("VEXILCTL_CONFIG")
        .env_remove("VEXIL_TOKEN")
        .env_remove("VEXIL_CACERT")
        .env_remove("VEXIL_CERT")
        .env_remove("VEXIL_KEY")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", std::env::temp_dir().join("vexilctl-test-home-that-does-not-exist"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `vexilctl` to completion (bounded: 120 s).
pub async fn ctl(args: &[&str]) -> Out {
    run(ctl_command(args), args).await
}

/// `vexilctl cluster add-learner` of node `id` (started with `Cluster::start_outsider`) through
/// `endpoints`, waiting until it is within `within` entries of the leader; `extra` adds flags.
pub async fn add_learner(c: &Cluster, id: u64, within: u64, endpoints: &str, extra: &[&str]) -> Out {
    let (api, raft) = (c.addr(id, Listener::Api), c.addr(id, Listener::Raft));
    let (id, within) = (id.to_string(), within.to_string());
    let mut args = vec!["cluster", "add-learner", &id, "--api-addr", &api, "--raft-addr", &raft];
    args.extend(["--catch-up-within", &within, "--timeout-secs", "90", "--endpoints", endpoints]);
    args.extend(extra);
    ctl(&args).await
}

/// Runs a prepared `vexilctl` command to completion (bounded: 120 s).
pub async fn run(mut cmd: tokio::process::Command, args: &[&str]) -> Out {
    let run = cmd.output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("vexilctl {args:?} did not finish within 120s"))
        .expect("run vexilctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` to a file in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}
