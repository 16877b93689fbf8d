//! Real clients from other projects, for end-to-end tests, each made once per machine under
//! `~/.cache/vexil/` and reused:
//! - [`python_with`]: a Python virtual environment with pinned packages from PyPI (a marker file
//!   says the install finished; without it the environment is made again). `scripts/setup.sh`
//!   installs `python3` with `venv` where it is missing.
//! - [`rust_provider`]: OpenFeature's Rust SDK with the `open-feature-flagd` provider, built from
//!   `tests/openfeature-rust` (its own workspace and lock file: its TLS stack is rustls on
//!   aws-lc-rs, which must not meet this workspace's ring) into its own target directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// The flag set the provider end-to-end tests give OpenFeature's providers (namespace
/// `default`): every value type, targeting, a disabled flag, one without a default variant, and
/// flag-set metadata.
pub const PROVIDER_FLAGS: &str = r##"{"flags": {
    "banner": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
               "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}, "metadata": {"owner": "growth"}},
    "color": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "red"},
    "limit": {"state": "ENABLED", "variants": {"low": 5, "high": 50}, "defaultVariant": "low"},
    "ratio": {"state": "ENABLED", "variants": {"half": 0.5}, "defaultVariant": "half"},
    "cfg": {"state": "ENABLED", "variants": {"a": {"depth": 2}}, "defaultVariant": "a"},
    "off": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "nodefault": {"state": "ENABLED", "variants": {"on": true, "off": false}}
  }, "metadata": {"team": "web"}}"##;

/// A Python interpreter with `packages` (pip requirement strings, pinned) installed; `name`
/// names its environment (change it with the pins).
pub fn python_with(name: &str, packages: &[&str]) -> PathBuf {
    let venv = cache_dir().join("python").join(name);
    let (python, done) = (venv.join("bin/python"), venv.join("installed"));
    if done.exists() {
        return python;
    }
    let run = |cmd: &mut std::process::Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (scripts/setup.sh installs python3 and venv)"));
        assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let _ = std::fs::remove_dir_all(&venv);
    run(std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv), "python3 -m venv");
    run(std::process::Command::new(venv.join("bin/pip")).args(["install", "--quiet"]).args(packages), "pip install");
    std::fs::write(&done, packages.join("\n")).expect("write the marker");
    python
}

/// `python script args...` with stdin and stdout piped, killed when dropped.
pub fn python_script(python: &Path, script: &str, args: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script);
    piped(cmd, args)
}

/// The `vexil-openfeature-rust` driver (`tests/openfeature-rust/src/main.rs` says what it does),
/// built on first use: `cargo build --locked` into `~/.cache/vexil/openfeature-rust-target`, a
/// no-op of well under a second once it is current.
pub fn rust_provider() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = crate::workspace_root().join("tests/openfeature-rust/Cargo.toml");
        let target = cache_dir().join("openfeature-rust-target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["build", "--quiet", "--locked", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            // Flags and targets set for Vexil's workspace (its `.cargo/config.toml`, which cargo
            // finds from here too, and the caller's environment) are not this build's.
            .env("CARGO_BUILD_RUSTFLAGS", "")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {}: {e}", manifest.display()));
        assert!(
            out.status.success(),
            "building {} failed:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug/vexil-openfeature-rust")
    })
    .clone()
}

/// The Rust provider driver with `args`, stdin and stdout piped, killed when dropped.
pub fn rust_provider_run(args: &[&str]) -> tokio::process::Child {
    piped(tokio::process::Command::new(rust_provider()), args)
}

fn piped(mut cmd: tokio::process::Command, args: &[&str]) -> tokio::process::Child {
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{:?} does not start: {e}", cmd.as_std().get_program()))
}

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/vexil")
}
