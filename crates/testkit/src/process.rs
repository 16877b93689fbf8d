//! One supervised server process: the only place in the workspace that spawns, signals and
//! reaps the processes of a test or benchmark cluster (Vexil nodes through [`crate::Cluster`],
//! etcd members through the load generator).
//!
//! A [`Process`] owns a directory. Each start appends the process's stdout and stderr to
//! `<dir>/node.log` and writes its pid to `<dir>/pid` (the comparison script's cleanup trap
//! kills what a crashed run left behind from those files). The command line is kept, so a
//! stopped or killed process starts again exactly as before. Dropping a `Process` kills it.
//!
//! Everything here returns `io::Result` rather than panicking: the load generator is a binary
//! that reports errors; [`crate::Cluster`] turns them into test failures.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits::{EXIT_POLL, LOG_TAIL_LINES};

/// A server process that can be started, killed (-9), stopped (SIGTERM), paused (SIGSTOP),
/// resumed (SIGCONT) and started again.
#[derive(Debug)]
pub struct Process {
    /// For messages: "node 3", "etcd member 1".
    name: String,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<OsString>,
    env_remove: Vec<OsString>,
    child: Option<Child>,
}

impl Process {
    /// A process (not started yet) running `program`, with its log and pid file in `dir`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>, program: impl Into<PathBuf>) -> Process {
        Process {
            name: name.into(),
            dir: dir.into(),
            program: program.into(),
            args: Vec::new(),
            env_remove: Vec::new(),
            child: None,
        }
    }

    /// Appends arguments to the command line.
    pub fn args<I, S>(&mut self, args: I) -> &mut Process
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Keeps an environment variable of this process away from the child.
    pub fn env_remove(&mut self, name: impl Into<OsString>) -> &mut Process {
        self.env_remove.push(name.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding `node.log` and `pid`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (again, after a stop or kill: same command line, same directory).
    pub fn start(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other(format!("{} is still running", self.name)));
        }
        std::fs::create_dir_all(&self.dir)?;
        let log = OpenOptions::new().create(true).append(true).open(self.dir.join("node.log"))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for name in &self.env_remove {
            cmd.env_remove(name);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", self.program.display())))?;
        let pid = child.id();
        // Held before the pid file is written, so a failed write still kills it on drop.
        self.child = Some(child);
        std::fs::write(self.dir.join("pid"), pid.to_string())
    }

    /// `kill -9`, and reap it. Nothing to do if it is not running.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `within` for the exit, which must be clean (status 0). A
    /// process still running after `within` is killed and the stop fails. Nothing to do if it
    /// is not running.
    pub fn stop(&mut self, within: Duration) -> io::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if let Err(e) = signal(child.id(), "-TERM") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                return Err(io::Error::other(format!("{} exited with {status} after SIGTERM", self.name)));
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not stop within {within:?} of SIGTERM", self.name),
                ));
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// The exit status if the process has exited on its own (it is reaped then); `None` while
    /// it runs, or when it was never started.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits up to `within` for the process to exit on its own (no signal), reaps it and
    /// returns its status: for a process expected to stop by itself (a node that fails). Still
    /// running after `within`: killed, and an error.
    pub fn wait_exit(&mut self, within: Duration) -> io::Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other(format!("{} is not running", self.name)));
        };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not exit on its own within {within:?}", self.name),
                ));
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// SIGSTOP: the process keeps its sockets but does nothing (a stalled, lagging node).
    pub fn pause(&self) -> io::Result<()> {
        signal(self.running_pid()?, "-STOP")
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) -> io::Result<()> {
        signal(self.running_pid()?, "-CONT")
    }

    fn running_pid(&self) -> io::Result<u32> {
        self.pid().ok_or_else(|| io::Error::other(format!("{} is not running", self.name)))
    }

    /// Everything the process (all its starts) wrote.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// The last lines of [`Process::log`], for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal with kill(1) (the workspace forbids `unsafe`, so no libc call).
fn signal(pid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("kill {sig} {pid} failed: {status}"))) }
}
