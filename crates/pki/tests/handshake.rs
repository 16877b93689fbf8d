//! Issued certificates in real TLS handshakes, as a node uses them: rustls (what tonic runs on)
//! on both ends of a loopback TCP connection, configured from nothing but the PEM text this
//! crate produces. A certificate verifies for its SANs against its CA, serves and dials with
//! the same certificate (both extended key usages), and anything from another CA is refused
//! by either end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use vexil_pki::{Ca, Issued};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().expect("certificates")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("private key")
}

fn roots(ca_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).expect("CA certificate");
    }
    Arc::new(roots)
}

/// A server presenting `id`; with `client_ca`, it demands a client certificate from that CA.
fn server_config(id: &Issued, client_ca: Option<&str>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca), provider()).build().unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(certs(&id.cert_pem), key(&id.key_pem)).unwrap())
}

/// A client trusting `ca`, presenting `id` if given.
fn client_config(ca: &str, id: Option<&Issued>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    Arc::new(match id {
        Some(id) => builder.with_client_auth_cert(certs(&id.cert_pem), key(&id.key_pem)).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// One connection: the server greets after its handshake, the client reads the greeting.
/// Returns what each end saw (in TLS 1.3 a client learns that its certificate was refused
/// only when it next reads, hence the greeting).
async fn connect(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (Result<(), String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });
    let name = ServerName::try_from(name.to_string()).unwrap();
    let dialed = async {
        let tcp = TcpStream::connect(addr).await.context("tcp")?;
        let mut tls = TlsConnector::from(client).connect(name, tcp).await.context("handshake")?;
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.context("read")?;
        anyhow::ensure!(got == b"hello", "greeting {got:?}");
        Ok::<(), anyhow::Error>(())
    }
    .await
    .map_err(|e| format!("{e:#}"));
    let served = served.await.expect("server task");
    (dialed, served)
}

#[tokio::test]
async fn one_node_certificate_serves_and_dials_for_each_of_its_names() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let node = ca.issue("node-1", &["localhost".into(), "127.0.0.1".into(), "node-1.vexil.test".into()]).unwrap();
    for name in ["localhost", "127.0.0.1", "node-1.vexil.test"] {
        // Mutual TLS with the node's one certificate on both ends: as a node dials a peer.
        let (client, server) =
            connect(server_config(&node, Some(ca.cert_pem())), client_config(ca.cert_pem(), Some(&node)), name).await;
        assert_eq!(client, Ok(()), "dialing {name}");
        assert_eq!(server, Ok(()), "serving {name}");
    }
}

#[tokio::test]
async fn a_name_the_certificate_does_not_carry_is_refused() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let node = ca.issue("node-1", &["127.0.0.1".into()]).unwrap();
    let (client, _) = connect(server_config(&node, None), client_config(ca.cert_pem(), None), "localhost").await;
    let err = client.expect_err("localhost is not in the SANs");
    assert!(err.contains("not valid for name \"localhost\""), "{err}");
    let (client, _) = connect(server_config(&node, None), client_config(ca.cert_pem(), None), "127.0.0.2").await;
    assert!(client.is_err(), "127.0.0.2 is not in the SANs");
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_by_either_end() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let other = Ca::generate("someone else's CA").unwrap();
    let node = ca.issue("node-1", &["127.0.0.1".into()]).unwrap();
    let impostor = other.issue("node-1", &["127.0.0.1".into()]).unwrap();

    // A client that trusts our CA refuses a server whose certificate another CA issued.
    let (client, _) = connect(server_config(&impostor, None), client_config(ca.cert_pem(), None), "127.0.0.1").await;
    let err = client.expect_err("server from another CA");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // A server that demands certificates from our CA refuses a client from another.
    let (client, server) =
        connect(server_config(&node, Some(ca.cert_pem())), client_config(ca.cert_pem(), Some(&impostor)), "127.0.0.1")
            .await;
    assert!(server.expect_err("client from another CA").contains("UnknownIssuer"));
    assert!(client.is_err(), "the refused client must not read the greeting");

    // And one without a certificate at all.
    let (_, server) =
        connect(server_config(&node, Some(ca.cert_pem())), client_config(ca.cert_pem(), None), "127.0.0.1").await;
    assert!(server.is_err(), "a client without a certificate is refused");
}

#[tokio::test]
async fn a_ca_read_back_from_its_files_issues_certificates_its_clients_trust() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let (cert_pem, key_pem) = (ca.cert_pem().to_string(), ca.key_pem().to_string());
    drop(ca);
    let again = Ca::from_pem(&cert_pem, &key_pem).unwrap();
    let node = again.issue("node-2", &["127.0.0.1".into()]).unwrap();
    let client_id = again.issue("vexilctl", &["vexilctl".into()]).unwrap();
    let (client, server) =
        connect(server_config(&node, Some(&cert_pem)), client_config(&cert_pem, Some(&client_id)), "127.0.0.1").await;
    assert_eq!((client, server), (Ok(()), Ok(())));
}
