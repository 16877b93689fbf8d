//! The `vexil` node: configuration, the public gRPC API, the Raft transport and the node's
//! lifecycle. `main.rs` only parses configuration and calls [`run`].
//!
//! - [`config`]: the TOML file, `VEXIL_*` variables and flags.
//! - [`node`]: storage + Raft, the write path (with forwarding) and the read barrier.
//! - [`batcher`]: groups concurrent writes into one Raft entry.
//! - [`network`], [`raft_service`]: the Raft transport, client and server sides.
//! - [`api`]: the public `vexil.v1` services.
//! - [`error`]: the one mapping from server errors to gRPC statuses.

pub mod admin;
pub mod api;
pub mod batcher;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod node;
pub mod raft_service;
pub mod read_index;

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpIncoming};
use vexil_proto::v1::audit_server::AuditServer;
use vexil_proto::v1::cluster_server::ClusterServer;
use vexil_proto::v1::evaluation_server::EvaluationServer;
use vexil_proto::v1::flags_server::FlagsServer;
use vexil_proto::v1::watch_server::WatchServer;
use vexil_proto::vexil::raft::v1::raft_transport_server::RaftTransportServer;

pub use config::{Args, Config};
pub use error::NodeError;
pub use node::Node;

use crate::limits::{API_CONCURRENT_STREAMS_MAX, API_MESSAGE_BYTES_MAX, RAFT_MESSAGE_BYTES_MAX};

/// Runs a node until `shutdown` resolves, then stops accepting requests, lets in-flight ones
/// finish, and shuts Raft down (which closes the store).
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    let raft_listener = TcpListener::bind(config.raft_listen).await.map_err(|source| NodeError::Listen {
        key: "raft_listen",
        addr: config.raft_listen,
        source,
    })?;
    let api_listener = TcpListener::bind(config.api_listen).await.map_err(|source| NodeError::Listen {
        key: "api_listen",
        addr: config.api_listen,
        source,
    })?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| NodeError::Listen {
            key: "admin_listen",
            addr,
            source,
        })?),
        None => None,
    };
    let node = Node::start(config).await?;
    serve(node, api_listener, raft_listener, admin_listener, shutdown).await
}

/// Serves both ports of a started node on already-bound TCP listeners.
pub async fn serve(
    node: Arc<Node>,
    api_listener: TcpListener,
    raft_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    // TCP_NODELAY: tonic sets it only on sockets it accepts itself; without it every small
    // response waits ~40 ms for delayed ACKs (Nagle).
    let api = TcpIncoming::from(api_listener).with_nodelay(Some(true));
    let raft = TcpIncoming::from(raft_listener).with_nodelay(Some(true));
    serve_incoming(node, api, raft, admin_listener, shutdown).await
}

/// Serves a started node on any streams of accepted connections (the simulation passes
/// simulated ones).
pub async fn serve_incoming<A, R, IO, E>(
    node: Arc<Node>,
    api_incoming: A,
    raft_incoming: R,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError>
where
    A: Stream<Item = Result<IO, E>> + Send + 'static,
    R: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_rx_admin = stop_rx.clone();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let raft_service = RaftTransportServer::new(raft_service::RaftService { node: node.clone() })
        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
    let raft_server = Server::builder()
        .add_service(raft_service)
        .serve_with_incoming_shutdown(raft_incoming, stopped(stop_rx.clone()));

    let api_server = Server::builder()
        .max_concurrent_streams(API_CONCURRENT_STREAMS_MAX)
        .add_service(
            FlagsServer::new(api::flags::FlagsApi { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX),
        )
        .add_service(AuditServer::new(api::audit::AuditApi { node: node.clone() }))
        .add_service(ClusterServer::new(api::cluster::ClusterApi { node: node.clone() }))
        .add_service(EvaluationServer::new(api::evaluation::EvaluationApi::new(node.clone())))
        .add_service(WatchServer::new(api::watch::WatchApi {
            node: node.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(limits::WATCH_STREAMS_MAX)),
        }))
        .serve_with_incoming_shutdown(api_incoming, stopped(stop_rx));

    tracing::info!(
        node_id = node.id,
        api = %node.config.api_advertise,
        raft = %node.config.raft_advertise,
        data_dir = %node.config.data_dir.display(),
        "vexil node ready"
    );
    tokio::spawn(log_leader_changes(node.clone()));
    let admin_task = admin_listener.map(|listener| {
        let app = admin::router(node.clone());
        let stop = stopped(stop_rx_admin.clone());
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop).await })
    });
    let raft_task = tokio::spawn(raft_server);
    let api_task = tokio::spawn(api_server);
    shutdown.await;
    tracing::info!(node_id = node.id, "shutting down: no new requests; finishing in-flight ones");
    stop_tx.send_replace(true);
    let (raft_result, api_result) = tokio::join!(raft_task, api_task);
    if let Some(task) = admin_task {
        task.await?.map_err(NodeError::Admin)?;
    }
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    raft_result??;
    api_result??;
    tracing::info!(node_id = node.id, "stopped");
    Ok(())
}

/// Logs every change of leader this node observes (operators grep for it; so does the local
/// cluster script to know the cluster is up).
async fn log_leader_changes(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut last = None;
    loop {
        let (leader, term) = {
            let m = rx.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            match leader {
                Some(id) if id == node.id => tracing::info!(node_id = node.id, term, "this node is now the leader"),
                Some(id) => tracing::info!(node_id = node.id, leader = id, term, "leader elected"),
                None => tracing::info!(node_id = node.id, term, "no leader"),
            }
            last = leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
