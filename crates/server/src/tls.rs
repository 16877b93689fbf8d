//! TLS for every port, from the `[tls]` files: one place that reads the PEM files, checks them
//! at start (a bad file is a configuration error naming its key), and hands out the server and
//! client configurations of the API, Raft, admin and OpenFeature ports.
//!
//! - API port: the node's certificate; client certificates of the cluster CA only when
//!   `tls.client_cert_auth` (tokens decide what a caller may do either way).
//! - Raft port: mutual TLS. A peer must present a certificate the cluster CA signed, and, when
//!   `tls.peer_allowed_names` is set, one valid for one of those names ([`PeerNames`]). A node
//!   dials its peers over `https://` with its own certificate: a node configured with TLS never
//!   speaks plaintext Raft.
//! - Admin and OpenFeature ports (HTTP): the node's certificate ([`HttpsListener`]); the
//!   OpenFeature port offers `h2` and `http/1.1` (gRPC providers and OFREP's HTTP/1.1 clients).
//!
//! The crypto provider is `ring` (rustls panics if both `ring` and `aws-lc-rs` are linked;
//! `crates/testkit/tests/architecture.rs` keeps aws-lc-rs out).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ConfigError, TlsConfig};
use crate::limits::TLS_HANDSHAKE_MS_MAX;

/// The node's TLS material, read and checked once at start.
#[derive(Clone)]
pub struct Material {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_cert_auth: bool,
    peer_names: PeerNames,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Material").field("certs", &self.certs.len()).finish_non_exhaustive()
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError { key: key.into(), problem: format!("cannot read {}: {e}", path.display()) })
}

fn certificates(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| ConfigError {
        key: key.into(),
        problem: format!("{} is not a PEM certificate file: {e}", path.display()),
    })?;
    if certs.is_empty() {
        return Err(ConfigError { key: key.into(), problem: format!("{} holds no certificate", path.display()) });
    }
    Ok(certs)
}

impl Material {
    /// Reads and checks the files of `[tls]`; `None` when TLS is not configured.
    pub fn load(cfg: &TlsConfig) -> Result<Option<Material>, ConfigError> {
        let (Some(cert_file), Some(key_file), Some(ca_file)) = (&cfg.cert_file, &cfg.key_file, &cfg.ca_file) else {
            return Ok(None);
        };
        let cert_pem = read("tls.cert_file", cert_file)?;
        let key_pem = read("tls.key_file", key_file)?;
        let ca_pem = read("tls.ca_file", ca_file)?;
        let certs = certificates("tls.cert_file", cert_file, &cert_pem)?;
        certificates("tls.ca_file", ca_file, &ca_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ConfigError {
            key: "tls.key_file".into(),
            problem: format!("{} is not a PEM private key: {e}", key_file.display()),
        })?;
        let peer_names = PeerNames::parse(&cfg.peer_allowed_names)?;
        let material = Material {
            cert_pem,
            key_pem,
            ca_pem,
            certs,
            key: Arc::new(key),
            client_cert_auth: cfg.client_cert_auth,
            peer_names,
        };
        // Builds an HTTP port's configuration now, so a key that does not match its
        // certificate stops the node at start, naming the key.
        material.https_acceptor(&[], true)?;
        Ok(Some(material))
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    fn ca(&self) -> Certificate {
        Certificate::from_pem(&self.ca_pem)
    }

    /// The API port: the node's certificate, and client certificates of the CA when required.
    pub fn api_server(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity());
        if self.client_cert_auth { config.client_ca_root(self.ca()) } else { config }
    }

    /// The Raft port: mutual TLS, a client certificate of the cluster CA required.
    pub fn raft_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity()).client_ca_root(self.ca())
    }

    /// Dialing a peer's Raft port: trust only the cluster CA, present this node's certificate.
    pub fn raft_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca()).identity(self.identity())
    }

    /// The names a Raft peer's certificate must hold.
    pub fn peer_names(&self) -> &PeerNames {
        &self.peer_names
    }

    /// The TLS acceptor of an HTTP port (admin, OpenFeature): the node's certificate, offering
    /// the application protocols `alpn` (`h2`, `http/1.1`) to clients that ask. With
    /// `like_api`, a client certificate of the cluster CA is required when the API port
    /// requires one (`tls.client_cert_auth`): the OpenFeature port is a way into the same data.
    pub fn https_acceptor(&self, alpn: &[&[u8]], like_api: bool) -> Result<TlsAcceptor, ConfigError> {
        let builder = rustls::ServerConfig::builder();
        let builder = if like_api && self.client_cert_auth {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&self.ca_pem).flatten() {
                roots.add(cert).map_err(|e| ConfigError {
                    key: "tls.ca_file".into(),
                    problem: format!("holds a certificate rustls cannot use as a root: {e}"),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().map_err(|e| {
                ConfigError { key: "tls.ca_file".into(), problem: format!("cannot verify clients with it: {e}") }
            })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(self.certs.clone(), self.key.clone_key()).map_err(|e| {
            ConfigError { key: "tls.key_file".into(), problem: format!("does not go with tls.cert_file: {e}") }
        })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// `tls.peer_allowed_names`: the names (DNS or IP SANs) of which a Raft peer's certificate must
/// hold one. Empty allows any certificate of the cluster CA.
#[derive(Debug, Clone, Default)]
pub struct PeerNames(Vec<ServerName<'static>>);

impl PeerNames {
    fn parse(names: &[String]) -> Result<PeerNames, ConfigError> {
        names
            .iter()
            .map(|n| {
                ServerName::try_from(n.trim().to_string()).map_err(|e| ConfigError {
                    key: "tls.peer_allowed_names".into(),
                    problem: format!("{n:?} is neither a DNS name nor an IP address: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(PeerNames)
    }

    /// Whether the peer whose certificate chain is `chain` (leaf first, already verified
    /// against the cluster CA by the handshake) may speak Raft to this node.
    pub fn allows(&self, chain: Option<&[CertificateDer<'static>]>) -> Result<(), String> {
        let Some(leaf) = chain.and_then(|c| c.first()) else {
            return Err("the peer presented no certificate".into());
        };
        if self.0.is_empty() {
            return Ok(());
        }
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("unreadable peer certificate: {e}"))?;
        if self.0.iter().any(|name| cert.verify_is_valid_for_subject_name(name).is_ok()) {
            Ok(())
        } else {
            Err("the peer's certificate names none of tls.peer_allowed_names".into())
        }
    }
}

/// An HTTP port over TLS (admin, OpenFeature), for `axum::serve`: accepts TCP connections and
/// runs each handshake in its own task (bounded by [`TLS_HANDSHAKE_MS_MAX`]), so a client that
/// never finishes its handshake holds up no one else, not even a liveness probe.
pub struct HttpsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl HttpsListener {
    /// `port` names it in logs.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor, port: &'static str) -> io::Result<HttpsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, port, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_millis(TLS_HANDSHAKE_MS_MAX), acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, port, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, port, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(HttpsListener { local, ready, accepting })
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
