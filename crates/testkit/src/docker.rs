//! A docker-compose project of Vexil containers, and the faults a test does to them: kill,
//! pause, cut off from the network, restart. Compose v1 (`docker-compose`) names containers
//! `<project>_<service>_1` and networks `<project>_<network>`.

use std::io;
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Compose {
    file: PathBuf,
    project: String,
}

impl Compose {
    pub fn new(file: impl Into<PathBuf>, project: impl Into<String>) -> Compose {
        Compose { file: file.into(), project: project.into() }
    }

    /// The container of `service`.
    pub fn container(&self, service: &str) -> String {
        format!("{}_{}_1", self.project, service)
    }

    /// The project's network `network` (as named in the compose file).
    pub fn network(&self, network: &str) -> String {
        format!("{}_{}", self.project, network)
    }

    /// `docker-compose -f FILE -p PROJECT ARGS...`; its standard output.
    pub fn compose(&self, args: &[&str]) -> io::Result<String> {
        let file = self.file.to_string_lossy().into_owned();
        let mut all = vec!["-f", file.as_str(), "-p", self.project.as_str()];
        all.extend_from_slice(args);
        run("docker-compose", &all)
    }

    /// `docker ARGS...`; its standard output.
    pub fn docker(&self, args: &[&str]) -> io::Result<String> {
        run("docker", args)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&self, service: &str) -> io::Result<()> {
        self.docker(&["kill", &self.container(service)]).map(drop)
    }

    /// Starts a stopped or killed container again, with its volume.
    pub fn start(&self, service: &str) -> io::Result<()> {
        self.docker(&["start", &self.container(service)]).map(drop)
    }

    /// Freezes every process of the container (cgroup freezer): a stalled node.
    pub fn pause(&self, service: &str) -> io::Result<()> {
        self.docker(&["pause", &self.container(service)]).map(drop)
    }

    pub fn unpause(&self, service: &str) -> io::Result<()> {
        self.docker(&["unpause", &self.container(service)]).map(drop)
    }

    /// Takes the container off `network`: it runs on, reaching nobody and reached by nobody.
    pub fn disconnect(&self, service: &str, network: &str) -> io::Result<()> {
        self.docker(&["network", "disconnect", &self.network(network), &self.container(service)]).map(drop)
    }

    /// Puts it back on `network` under its service name.
    pub fn connect(&self, service: &str, network: &str) -> io::Result<()> {
        let container = self.container(service);
        self.docker(&["network", "connect", "--alias", service, &self.network(network), &container]).map(drop)
    }

    /// SIGTERM (then SIGKILL after the compose file's grace period) and start, every service
    /// at once.
    pub fn restart_all(&self) -> io::Result<()> {
        self.compose(&["restart"]).map(drop)
    }

    /// The container's log (standard output and error).
    pub fn logs(&self, service: &str) -> io::Result<String> {
        let out = Command::new("docker").args(["logs", &self.container(service)]).output()?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
