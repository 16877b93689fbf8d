//! The credentials of a secure test cluster ([`crate::ClusterBuilder::secure`]): a cluster CA,
//! a certificate per node (valid for `127.0.0.1` and `localhost`, for serving and for dialing
//! peers), and the first admin token, which the nodes create from
//! `--auth-bootstrap-token-file`. Everything lives in the cluster's `pki/` directory.

use std::io;
use std::path::{Path, PathBuf};

use vexil_pki::Ca;

/// The names every test node's certificate holds.
const NODE_SANS: [&str; 2] = ["127.0.0.1", "localhost"];

/// A secure cluster's CA and admin token.
pub struct Credentials {
    dir: PathBuf,
    ca: Ca,
    admin_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Credentials {
    /// Creates a CA and an admin token under `dir`.
    pub(crate) fn create(dir: &Path) -> io::Result<Credentials> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca::generate("vexil test cluster CA").map_err(other)?;
        write(&dir.join("ca.pem"), ca.cert_pem())?;
        // The same format as a token the cluster makes: `vexil_` and 64 hex digits.
        let admin_token = format!("vexil_{}", hex64(dir));
        write(&dir.join("admin.token"), &admin_token)?;
        Ok(Credentials { dir: dir.to_path_buf(), ca, admin_token })
    }

    /// The flags that make node `id` secure: its certificate, the CA, and (`with_token_file`)
    /// the first admin token's file.
    pub(crate) fn node_flags(&self, id: u64, with_token_file: bool) -> io::Result<Vec<String>> {
        let cert = self.dir.join(format!("node-{id}.pem"));
        let key = self.dir.join(format!("node-{id}-key.pem"));
        if !cert.exists() {
            let sans: Vec<String> = NODE_SANS.iter().map(|s| s.to_string()).collect();
            let issued = self.ca.issue(&format!("node-{id}"), &sans).map_err(other)?;
            write(&cert, &issued.cert_pem)?;
            write(&key, &issued.key_pem)?;
        }
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut flags = vec![
            "--tls-cert-file".into(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-file".into(),
            path(self.dir.join("ca.pem")),
        ];
        if with_token_file {
            flags.extend(["--auth-bootstrap-token-file".into(), path(self.dir.join("admin.token"))]);
        }
        Ok(flags)
    }

    /// The cluster CA's certificate (PEM): what clients trust.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The path of the CA certificate file (for `vexilctl --cacert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The first admin token's secret.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A certificate and key (PEM) for `name` from the cluster CA.
    pub fn issue(&self, name: &str, sans: &[String]) -> (String, String) {
        let issued = self.ca.issue(name, sans).unwrap_or_else(|e| panic!("cannot issue a certificate: {e}"));
        (issued.cert_pem, issued.key_pem)
    }
}

/// 64 hex digits, different for every cluster (tests never share a token).
fn hex64(seed: &Path) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    let state = std::collections::hash_map::RandomState::new();
    for i in 0..4u64 {
        let mut h = state.build_hasher();
        h.write(seed.as_os_str().as_encoded_bytes());
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
