//! [`HeaderRecorder`]: a real tonic gRPC server on loopback (TLS when given a certificate,
//! mutual TLS when also given a client CA) serving only the standard health service, behind a
//! layer that records each request's `authorization` header, whatever the method. Calls to
//! methods it does not implement are recorded, then answered UNIMPLEMENTED: enough to show,
//! without a cluster, that a client connected with the right certificates and sent the right
//! token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// The recorder's TLS: its certificate and key (PEM), and the CA whose client certificates it
/// demands (mutual TLS), if any.
#[derive(Debug, Clone)]
pub struct RecorderTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

/// A recording gRPC server; stops when dropped.
#[derive(Debug)]
pub struct HeaderRecorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    _stop: oneshot::Sender<()>,
}

impl HeaderRecorder {
    /// Starts serving on `127.0.0.1`, on a port the kernel picks: the listener is bound here
    /// and held, so unlike a port handed to a node process to bind later ([`free_port`](crate::free_port)),
    /// nothing can take it in between.
    pub async fn start(tls: Option<RecorderTls>) -> HeaderRecorder {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let record = move |req: tonic::Request<()>| {
            let auth = req.metadata().get("authorization").map(|v| v.to_str().unwrap().to_string());
            recorder.lock().unwrap().push(auth);
            Ok(req)
        };
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            let mut config = ServerTlsConfig::new().identity(Identity::from_pem(tls.cert_pem, tls.key_pem));
            if let Some(ca) = tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(config).unwrap();
        }
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = builder
            .layer(tonic::service::InterceptorLayer::new(record))
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(server);
        HeaderRecorder { addr, seen, _stop: stop }
    }

    /// The `authorization` header of every request so far (`None` when absent), in order.
    pub fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
