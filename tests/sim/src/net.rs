//! The network adapter: the real tonic servers and channels over turmoil's simulated TCP.
//!
//! Servers take a stream of accepted connections ([`incoming`]); each connection is wrapped in
//! [`SimConn`] so tonic can ask it for connection info. Clients (peer nodes and workload
//! clients alike) get channels from [`channel`], whose connector dials a simulated
//! `TcpStream`. Turmoil never retransmits a dropped segment, so a connection that lost one is
//! wedged for good: HTTP/2 keep-alive pings with a short timeout tear such connections down, and
//! the channel dials a fresh one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};
use vexil_server::network::ChannelFactory;

/// How often an idle connection is probed, and how long a probe may go unanswered before the
/// connection is dropped (a dropped segment wedges a simulated connection forever).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(250);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_millis(500);

/// An accepted simulated connection that tonic can serve.
#[derive(Debug)]
pub struct SimConn(turmoil::net::TcpStream);

/// What tonic learns about a simulated connection.
#[derive(Debug, Clone)]
pub struct SimConnInfo {
    pub remote: Option<SocketAddr>,
}

impl Connected for SimConn {
    type ConnectInfo = SimConnInfo;

    fn connect_info(&self) -> SimConnInfo {
        SimConnInfo { remote: self.0.peer_addr().ok() }
    }
}

impl AsyncRead for SimConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted on `listener`, as the stream `serve_incoming` takes.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = std::io::Result<SimConn>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| SimConn(stream));
        Some((accepted, listener))
    })
}

/// A lazily connecting channel to `addr` (`host:port`, resolved by turmoil's DNS).
pub fn channel(addr: &str, connect_timeout: Duration) -> Result<Channel, String> {
    let target = addr.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move {
            let stream = turmoil::net::TcpStream::connect(target.as_str()).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// A channel to a node's API that sends a bearer token with every call (when the nodes check
/// tokens, see [`crate::cluster::NodeSetup::tokens`]).
pub type ApiChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <secret>` to every call, or nothing without a secret.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    pub fn new(secret: Option<&str>) -> Bearer {
        Bearer(secret.map(|s| format!("Bearer {s}").parse().expect("a token secret is ASCII")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// [`channel`] to a node's API, sending `secret` as the bearer token.
pub fn api_channel(addr: &str, connect_timeout: Duration, secret: Option<&str>) -> Result<ApiChannel, String> {
    Ok(InterceptedService::new(channel(addr, connect_timeout)?, Bearer::new(secret)))
}

/// The nodes' [`ChannelFactory`]: simulated connections to peers.
pub fn channel_factory() -> ChannelFactory {
    std::sync::Arc::new(channel)
}
