//! `vexilctl tls`: a private CA for a cluster and the certificates it issues, as PEM files
//! (made by `vexil-pki`, the workspace's one certificate maker). Offline: no cluster needed.
//!
//! `create-ca` writes `ca.pem` and `ca-key.pem`; `issue` reads them and writes `NAME.pem` and
//! `NAME-key.pem`, a certificate for both serving and dialing (a node uses one for its ports and
//! its peers; a client for mutual TLS). Private keys are created with mode 0600. Existing files
//! are never replaced without `--force`, and nothing is written unless every file can be.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use vexil_pki::Ca;

use crate::output;
use crate::{Failure, Output};

/// The CA's files in its directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make a CA: ca.pem (give it to nodes and clients: --cacert) and ca-key.pem (keep it safe).
    CreateCa(CreateCaArgs),
    /// Issue a certificate from a CA: NAME.pem and NAME-key.pem, for serving and for dialing.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct CreateCaArgs {
    /// Where to write ca.pem and ca-key.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "vexil CA")]
    pub name: String,
    /// Replace existing files (whatever the old CA issued stops verifying).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The directory holding ca.pem and ca-key.pem.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The certificate's common name and file name (e.g. node-1, vexilctl).
    #[arg(long)]
    pub name: String,
    /// A DNS name or IP address clients and peers dial it by; repeat for each.
    #[arg(long = "san", value_name = "NAME_OR_IP", required = true)]
    pub sans: Vec<String>,
    /// Where to write NAME.pem and NAME-key.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: &TlsCommand, out: Output) -> Result<String, Failure> {
    match cmd {
        TlsCommand::CreateCa(a) => create_ca(a, out),
        TlsCommand::Issue(a) => issue(a, out),
    }
}

fn create_ca(a: &CreateCaArgs, out: Output) -> Result<String, Failure> {
    let ca = Ca::generate(&a.name).map_err(|e| Failure::Usage(format!("--name: {e}")))?;
    let cert = a.out_dir.join(CA_CERT_FILE);
    let key = a.out_dir.join(CA_KEY_FILE);
    write_files(&a.out_dir, &[(&cert, ca.cert_pem(), false), (&key, ca.key_pem(), true)], a.force)?;
    Ok(match out {
        Output::Json => output::json(&json!({"cert": cert, "key": key, "name": a.name})),
        Output::Table => format!(
            "wrote CA {:?}:\n{}\n\nissue a node's certificate with `vexilctl tls issue --ca-dir {} --name node-1 --san <its address> --out-dir ...`",
            a.name,
            listing(&[
                (&cert, "the CA certificate: give it to every node and client (--cacert)"),
                (
                    &key,
                    "its private key (mode 0600): it can issue certificates the cluster trusts; keep it off the nodes"
                ),
            ]),
            a.out_dir.display()
        ),
    })
}

fn issue(a: &IssueArgs, out: Output) -> Result<String, Failure> {
    check_file_name(&a.name)?;
    let ca_cert = a.ca_dir.join(CA_CERT_FILE);
    let ca_key = a.ca_dir.join(CA_KEY_FILE);
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            Failure::Input(format!(
                "cannot read {}: {e}; --ca-dir must hold the {CA_CERT_FILE} and {CA_KEY_FILE} that `vexilctl tls create-ca` wrote",
                p.display()
            ))
        })
    };
    let ca = Ca::from_pem(&read(&ca_cert)?, &read(&ca_key)?)
        .map_err(|e| Failure::Input(format!("the CA in {}: {e}", a.ca_dir.display())))?;
    let issued = ca.issue(&a.name, &a.sans).map_err(|e| Failure::Usage(e.to_string()))?;
    let cert = a.out_dir.join(format!("{}.pem", a.name));
    let key = a.out_dir.join(format!("{}-key.pem", a.name));
    write_files(&a.out_dir, &[(&cert, &issued.cert_pem, false), (&key, &issued.key_pem, true)], a.force)?;
    Ok(match out {
        Output::Json => output::json(&json!({"cert": cert, "key": key, "name": a.name, "sans": a.sans})),
        Output::Table => format!(
            "wrote a certificate for {:?}, valid for {} (serving and dialing), issued by the CA in {}:\n{}",
            a.name,
            a.sans.join(", "),
            a.ca_dir.display(),
            listing(&[(&cert, "the certificate"), (&key, "its private key (mode 0600)")])
        ),
    })
}

/// The files written, one per line, indented, with what each is.
fn listing(files: &[(&Path, &str)]) -> String {
    let paths: Vec<String> = files.iter().map(|(p, _)| format!("  {}", p.display())).collect();
    let rows: Vec<(&str, String)> =
        paths.iter().zip(files).map(|(p, (_, what))| (p.as_str(), what.to_string())).collect();
    output::fields(&rows)
}

/// NAME becomes a file name: no path separators, no leading dot.
fn check_file_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "--name {name:?} names the files NAME.pem and NAME-key.pem: use letters, digits and - _ . @ (not starting with a dot)"
        )))
    }
}

/// Writes each `(path, text, secret)`, creating `dir`. Refuses (before writing anything) when a
/// file exists and `force` is not set. A secret file is created with mode 0600, and a replaced
/// one is removed first, so it never keeps an old file's wider mode.
fn write_files(dir: &Path, files: &[(&Path, &str, bool)], force: bool) -> Result<(), Failure> {
    if !force {
        let existing: Vec<String> =
            files.iter().filter(|(p, _, _)| p.exists()).map(|(p, _, _)| p.display().to_string()).collect();
        if !existing.is_empty() {
            return Err(Failure::Failed(format!(
                "{} already exist{}; nothing was written. Pass --force to replace (what the old files issued or identified stops working)",
                existing.join(" and "),
                if existing.len() == 1 { "s" } else { "" }
            )));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Failed(format!("cannot create the directory {}: {e}", dir.display())))?;
    for (path, text, secret) in files {
        let failed = |e: std::io::Error| Failure::Failed(format!("cannot write {}: {e}", path.display()));
        if force && path.exists() {
            std::fs::remove_file(path).map_err(failed)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if *secret { 0o600 } else { 0o644 });
        }
        let mut f = options.open(path).map_err(failed)?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain() {
        assert!(check_file_name("node-1").is_ok());
        assert!(check_file_name("ci@team.example").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert_eq!(check_file_name(bad).expect_err(bad).exit_code(), 2);
        }
    }
}
