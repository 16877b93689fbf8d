//! Connection security against a real TLS gRPC server (`vexil_testkit::HeaderRecorder`, with
//! certificates from `vexil-pki`), which records the `authorization` header of every request.
//! What it shows: the client speaks TLS
//! with the CA it is given (and mutual TLS with a client certificate), refuses a server of
//! another CA, and sends the token on unary calls and on the watch stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vexil_client::{AdminClient, Client, ConnectOptions, Error, TlsOptions};
use vexil_pki::{Ca, Issued};
use vexil_testkit::{HeaderRecorder, RecorderTls};

/// A token shaped like the cluster's secrets.
const TOKEN: &str = "vexil_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A recorder serving TLS with `id`, demanding client certificates of `client_ca` if given.
async fn tls_server(id: &Issued, client_ca: Option<&str>) -> HeaderRecorder {
    HeaderRecorder::start(Some(RecorderTls {
        cert_pem: id.cert_pem.clone(),
        key_pem: id.key_pem.clone(),
        client_ca_pem: client_ca.map(str::to_string),
    }))
    .await
}

async fn check(options: &ConnectOptions, endpoint: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = options.channel(endpoint, Duration::from_secs(5)).unwrap();
    let r = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
    Ok(r.into_inner().status())
}

fn bearer() -> Option<String> {
    Some(format!("Bearer {TOKEN}"))
}

/// Waits (up to 10 s) until the server has recorded more than `n` requests.
async fn wait_for_more_than(server: &HeaderRecorder, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.seen().len() <= n {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not reach the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_client_speaks_tls_with_its_ca_and_sends_the_token_on_calls_and_streams() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let server = tls_server(&ca.issue("node-1", &["127.0.0.1".into()]).unwrap(), None).await;
    let options = ConnectOptions::new().token(TOKEN).tls(TlsOptions::new(ca.cert_pem()));
    // A bare host:port: TLS makes it https://.
    let endpoint = server.addr().to_string();

    assert_eq!(check(&options, &endpoint).await.unwrap(), ServingStatus::Serving);
    assert_eq!(server.seen(), vec![bearer()]);

    // The admin client: the call reaches the server over TLS with the token (the server
    // implements no Vexil service, so the answer is UNIMPLEMENTED, not a transport error).
    let admin = AdminClient::new_with_options([endpoint.clone()], options.clone()).unwrap().with_attempts(1);
    let err = admin.cluster_status().await.unwrap_err();
    assert!(matches!(err, Error::Server { code: tonic::Code::Unimplemented, .. }), "{err:?}");
    assert_eq!(server.seen(), vec![bearer(), bearer()]);

    // The watching client: its watch stream carries the token too.
    let client =
        Client::builder([endpoint.clone()]).namespace("checkout").connect_options(options.clone()).start().unwrap();
    wait_for_more_than(&server, 2, "the watch stream").await;
    // The stream got through TLS to the server, which does not implement it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.status().last_error.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the watcher reported no error: {:?}", client.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.close().await;
    let seen = server.seen();
    assert!(seen.iter().all(|a| *a == bearer()), "{seen:?}");
    let status = client.status();
    assert!(status.last_error.as_deref().unwrap_or("").contains("Unimplemented"), "{status:?}");

    // The builder's own setters do the same.
    let client = Client::builder([endpoint])
        .namespace("checkout")
        .token(TOKEN)
        .tls(TlsOptions::new(ca.cert_pem()))
        .start()
        .unwrap();
    wait_for_more_than(&server, seen.len(), "the watch stream of a client built with token() and tls()").await;
    client.close().await;
    assert_eq!(server.seen().last().cloned().flatten(), bearer());
}

#[tokio::test]
async fn a_server_with_a_certificate_from_another_ca_is_refused() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let other = Ca::generate("someone else's CA").unwrap();
    let server = tls_server(&other.issue("node-1", &["127.0.0.1".into()]).unwrap(), None).await;
    let options = ConnectOptions::new().token(TOKEN).tls(TlsOptions::new(ca.cert_pem()));

    let status = check(&options, &server.addr().to_string()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let admin = AdminClient::new_with_options([server.addr().to_string()], options).unwrap().with_attempts(1);
    let err = admin.cluster_status().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    // Saying why, once (not "unavailable after 1 attempt(s): unavailable after 1 attempt(s)").
    assert_eq!(
        err.to_string(),
        "the cluster is unavailable after 1 attempt(s): invalid peer certificate: UnknownIssuer"
    );
    // Nothing, the token least of all, reached the impostor's service.
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    // The same server is fine for a client that trusts its CA: the refusal was the CA's.
    let trusting = ConnectOptions::new().tls(TlsOptions::new(other.cert_pem()));
    assert_eq!(check(&trusting, &server.addr().to_string()).await.unwrap(), ServingStatus::Serving);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let server = tls_server(&ca.issue("node-1", &["127.0.0.1".into()]).unwrap(), Some(ca.cert_pem())).await;
    let endpoint = server.addr().to_string();
    let me = ca.issue("vexilctl", &["vexilctl".into()]).unwrap();

    let with_cert = ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()).identity(&me.cert_pem, &me.key_pem));
    assert_eq!(check(&with_cert, &endpoint).await.unwrap(), ServingStatus::Serving);

    let without = ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()));
    assert!(
        check(&without, &endpoint).await.is_err(),
        "a server demanding client certificates must refuse one without"
    );
    let stranger = Ca::generate("other").unwrap().issue("x", &["x".into()]).unwrap();
    let foreign =
        ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()).identity(&stranger.cert_pem, &stranger.key_pem));
    assert!(check(&foreign, &endpoint).await.is_err(), "a client certificate from another CA must be refused");
    assert_eq!(server.seen(), vec![None], "only the client with a valid certificate got through");
}

#[tokio::test]
async fn the_domain_name_override_checks_the_certificate_for_that_name() {
    let ca = Ca::generate("vexil test CA").unwrap();
    // A certificate for a name, not for the address the client dials.
    let server = tls_server(&ca.issue("node-1", &["node-1.vexil.test".into()]).unwrap(), None).await;
    let endpoint = server.addr().to_string();
    let by_address = ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()));
    assert!(check(&by_address, &endpoint).await.is_err(), "127.0.0.1 is not in the certificate");
    let by_name = ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()).domain_name("node-1.vexil.test"));
    assert_eq!(check(&by_name, &endpoint).await.unwrap(), ServingStatus::Serving);
}

#[tokio::test]
async fn tls_options_with_an_http_endpoint_are_refused_before_any_connection() {
    let ca = Ca::generate("vexil test CA").unwrap();
    let options = ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()));
    let endpoint = "http://127.0.0.1:7001";
    let err = AdminClient::new_with_options(["127.0.0.1:7002", endpoint], options.clone()).unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains(endpoint) && m.contains("plaintext")), "{err:?}");
    let err = Client::builder([endpoint]).namespace("checkout").connect_options(options.clone()).start().unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains(endpoint)), "{err:?}");
    assert!(matches!(options.channel(endpoint, Duration::from_secs(1)), Err(Error::Config(_))));
    // And https:// without TLS options is not quietly plaintext either.
    let err = AdminClient::new(["https://127.0.0.1:7001"]).unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("https://127.0.0.1:7001")), "{err:?}");
}
