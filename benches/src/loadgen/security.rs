//! The secure mode (`loadgen run --secure`): both systems serve TLS on every port, demand a
//! client certificate of their cluster CA (mutual TLS, for clients and for peers alike) and a
//! token on every call, and the load generator's connections present both.
//!
//! - [`Secure`]: what a client of a secure cluster holds, whichever the system: the CA it
//!   trusts, its own certificate, and its [`Login`] (Vexil's bearer token, or the etcd user it
//!   exchanges for a token).
//! - [`EtcdPki`]: the certificates of a secure etcd cluster, made with `vexil-pki` (the one
//!   place certificates are made) and written where etcd's flags can name them. A Vexil
//!   cluster's come from `vexil-testkit` (`ClusterBuilder::secure`), through the same crate.
//! - [`channel`]: the one place the load generator opens a connection, TLS or not, so both
//!   backends connect exactly alike.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;
use rand::distr::Alphanumeric;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vexil_pki::Ca;

use super::limits::{CONNECT_TIMEOUT, PASSWORD_CHARS};

/// The names a certificate of a loopback cluster holds: what the members and the load
/// generator dial (etcd, built with Go 1.15 or later, ignores the common name).
pub const LOOPBACK_SANS: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate and its key, both as PEM text and as files (for `etcd`, `etcdctl`, `vexilctl`).
#[derive(Clone)]
pub struct KeyPairFiles {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl KeyPairFiles {
    /// Writes `cert_pem` and `key_pem` as `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (the
    /// key readable by its owner only).
    pub fn write(dir: &Path, name: &str, cert_pem: String, key_pem: String) -> anyhow::Result<KeyPairFiles> {
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, &cert_pem).with_context(|| format!("writing {}", cert_file.display()))?;
        std::fs::write(&key_file, &key_pem).with_context(|| format!("writing {}", key_file.display()))?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {} to its owner", key_file.display()))?;
        Ok(KeyPairFiles { cert_pem, key_pem, cert_file, key_file })
    }
}

/// How a client proves who it is on every call, besides its certificate.
#[derive(Clone)]
pub enum Login {
    /// Vexil: `authorization: Bearer <secret>` (the cluster's admin token).
    Bearer(String),
    /// etcd: a user whose name and password `Auth/Authenticate` exchanges for a token, sent
    /// as `token` metadata. `root_password` is the root user's, which enabling auth needs.
    EtcdUser { name: String, password: String, root_password: String },
}

/// What a client of a secure cluster holds.
#[derive(Clone)]
pub struct Secure {
    /// The cluster CA's certificate (PEM) and its file.
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// The client certificate the load generator presents.
    pub client: KeyPairFiles,
    pub login: Login,
}

impl fmt::Debug for Secure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key, the token or the passwords.
        let login = match &self.login {
            Login::Bearer(_) => "bearer token".to_string(),
            Login::EtcdUser { name, .. } => format!("etcd user {name:?}"),
        };
        f.debug_struct("Secure")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client.cert_file)
            .field("login", &login)
            .finish_non_exhaustive()
    }
}

/// A random password of [`PASSWORD_CHARS`] letters and digits.
pub fn password() -> String {
    rand::rng().sample_iter(Alphanumeric).take(PASSWORD_CHARS).map(char::from).collect()
}

/// Opens one HTTP/2 connection to `endpoint`: plaintext for `http://`, and for `https://`
/// TLS trusting the cluster CA and presenting the client certificate of `secure`. A TLS
/// endpoint without `secure`, or the reverse, is refused (tonic would silently speak
/// plaintext to an `http://` endpoint whatever its TLS configuration).
pub async fn channel(endpoint: &str, secure: Option<&Secure>) -> anyhow::Result<Channel> {
    let mut builder = Channel::from_shared(endpoint.to_string())
        .with_context(|| format!("endpoint {endpoint:?} is not a URI"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    match (endpoint.starts_with("https://"), secure) {
        (true, Some(s)) => {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&s.ca_pem))
                .identity(Identity::from_pem(&s.client.cert_pem, &s.client.key_pem));
            builder = builder.tls_config(tls).with_context(|| format!("TLS configuration for {endpoint}"))?;
        }
        (false, None) => {}
        (true, None) => anyhow::bail!("endpoint {endpoint}: https:// needs the cluster's credentials (--secure)"),
        (false, Some(_)) => {
            anyhow::bail!("endpoint {endpoint}: a secure cluster is reached over https://, not plaintext")
        }
    }
    builder.connect().await.with_context(|| format!("connecting to {endpoint}"))
}

/// The certificates of a secure etcd cluster, under one directory: the CA (`ca.pem`), one
/// certificate per member (`m<i>.pem`, for its client and its peer port), and the load
/// generator's client certificate (`loadgen.pem`).
pub struct EtcdPki {
    dir: PathBuf,
    ca: Ca,
}

impl EtcdPki {
    /// A new CA under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<EtcdPki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = Ca::generate("vexil bench etcd CA")?;
        std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
        Ok(EtcdPki { dir: dir.to_path_buf(), ca })
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `name` a certificate for [`LOOPBACK_SANS`] (both serverAuth and clientAuth, as
    /// `vexil-pki` always makes them: a member serves with it and dials its peers with it).
    pub fn issue(&self, name: &str) -> anyhow::Result<KeyPairFiles> {
        let sans: Vec<String> = LOOPBACK_SANS.iter().map(|s| s.to_string()).collect();
        let issued = self.ca.issue(name, &sans).with_context(|| format!("issuing a certificate for {name}"))?;
        KeyPairFiles::write(&self.dir, name, issued.cert_pem, issued.key_pem)
    }

    /// What the load generator holds: its certificate and the `bench` user.
    pub fn client(&self) -> anyhow::Result<Secure> {
        Ok(Secure {
            ca_pem: self.ca.cert_pem().to_string(),
            ca_file: self.ca_file(),
            client: self.issue("loadgen")?,
            login: Login::EtcdUser { name: "bench".into(), password: password(), root_password: password() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_secure_cluster_is_never_reached_in_plaintext_nor_the_reverse() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = EtcdPki::create(dir.path()).expect("CA");
        let secure = pki.client().expect("client certificate");
        // Port 1 on loopback: nothing listens, so only the refusals below can succeed early.
        let err = channel("http://127.0.0.1:1", Some(&secure)).await.expect_err("plaintext to a secure cluster");
        assert!(err.to_string().contains("https://"), "{err:#}");
        let err = channel("https://127.0.0.1:1", None).await.expect_err("TLS without credentials");
        assert!(err.to_string().contains("--secure"), "{err:#}");
    }

    #[test]
    fn etcd_certificates_are_written_with_keys_only_their_owner_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = EtcdPki::create(dir.path()).expect("CA");
        let member = pki.issue("m1").expect("member certificate");
        assert_eq!(std::fs::read_to_string(&member.cert_file).expect("cert file"), member.cert_pem);
        let mode = std::fs::metadata(&member.key_file).expect("key file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", member.key_file.display());
        assert!(pki.ca_file().exists());
    }
}
