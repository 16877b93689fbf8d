//! Other ecosystems' real clients, for end-to-end tests: a Python virtual environment with
//! pinned packages from PyPI, made once per machine under `~/.cache/vexil/python/` and reused
//! (a marker file says the install finished; without it the environment is made again).
//! `scripts/setup.sh` installs `python3` with `venv` where it is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A Python interpreter with `packages` (pip requirement strings, pinned) installed; `name`
/// names its environment (change it with the pins).
pub fn python_with(name: &str, packages: &[&str]) -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let venv = Path::new(&home).join(".cache/vexil/python").join(name);
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
    tokio::process::Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs")
}
