//! `vexilctl` ends quietly when whoever reads its stdout has gone (`vexilctl export | head`):
//! exit 0 and nothing on stderr, instead of Rust's "failed printing to stdout: Broken pipe"
//! panic. The reading end of the pipe is closed before the process starts, so its first write
//! fails with a broken pipe every time (no race with a reader closing mid-output). Every
//! command prints through the same function, so an offline one (`eval`) stands for all.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn with_stdout_closed(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_vexilctl"))
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vexilctl")
        .wait_with_output()
        .expect("vexilctl exits")
}

fn assert_quiet(args: &[&str]) {
    let out = with_stdout_closed(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{args:?}: stderr should be empty, got {stderr:?}");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {:?}", out.status);
}

#[test]
fn a_closed_stdout_ends_vexilctl_quietly() {
    let mut flags = tempfile::NamedTempFile::new().expect("temp file");
    flags
        .write_all(br#"{"flags": {"f7": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}"#)
        .expect("write flags");
    let path = flags.path().to_str().expect("utf-8 path");

    // A command's result, as a table and as JSON.
    assert_quiet(&["eval", "--file", path, "--flag", "f7"]);
    assert_quiet(&["eval", "--file", path, "--flag", "f7", "--output", "json"]);
    // clap's own output (help, version).
    assert_quiet(&["--help"]);
    assert_quiet(&["flag", "--help"]);
    assert_quiet(&["--version"]);
}

#[test]
fn a_failure_still_speaks_on_stderr_when_stdout_is_closed() {
    let out = with_stdout_closed(&["eval", "--file", "/nonexistent/flags.json", "--flag", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/flags.json") && !stderr.contains("panicked"), "{stderr}");
}
