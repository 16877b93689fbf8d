//! The `vexil` node: configuration, the public gRPC API, the Raft transport and the node's
//! lifecycle. `main.rs` only parses configuration and calls [`run`].
//!
//! - [`config`]: the TOML file, `VEXIL_*` variables and flags.
//! - [`node`]: storage + Raft, the write path (with forwarding) and the read barrier.
//! - [`batcher`]: groups concurrent writes into one Raft entry.
//! - [`network`], [`raft_service`]: the Raft transport, client and server sides.
//! - [`api`]: the public `vexil.v1` services, and `grpc.health.v1`.
//! - [`error`]: the one mapping from server errors to gRPC statuses, and the exit codes.
//! - [`health`]: liveness and readiness, for `/livez`, `/readyz` and `grpc.health.v1`.
//! - [`auth`]: bearer tokens and the role each call needs; [`tls`]: TLS on every port.
//! - [`openfeature`]: the OpenFeature port (flagd's evaluation protocol, OFREP).

pub mod admin;
pub mod api;
pub mod auth;
pub mod batcher;
pub mod config;
pub mod error;
pub mod health;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod node;
pub mod openfeature;
pub mod raft_service;
pub mod read_index;
pub mod retention;
pub mod shutdown;
pub mod space;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic_health::pb::health_server::HealthServer;
use vexil_proto::v1::audit_server::AuditServer;
use vexil_proto::v1::changes_server::ChangesServer;
use vexil_proto::v1::cluster_server::ClusterServer;
use vexil_proto::v1::evaluation_server::EvaluationServer;
use vexil_proto::v1::flags_server::FlagsServer;
use vexil_proto::v1::tokens_server::TokensServer;
use vexil_proto::v1::watch_server::WatchServer;
use vexil_proto::vexil::raft::v1::raft_transport_server::RaftTransportServer;

pub use config::{Args, Config};
pub use error::NodeError;
pub use node::Node;

use crate::limits::{
    API_CONCURRENT_STREAMS_MAX, API_MESSAGE_BYTES_MAX, FAIL_STOP_DRAIN_MS_MAX, RAFT_MESSAGE_BYTES_MAX,
    SHUTDOWN_API_DRAIN_MS_MAX, SHUTDOWN_RAFT_DRAIN_MS_MAX,
};

/// Runs a node until `shutdown` resolves, then leaves in the order written on
/// [`serve_incoming`]: API closed, out of elections, watch streams ended, API drained, Raft
/// shut down, Raft listener closed, store closed.
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
    let bind = |key: &'static str, addr: Option<std::net::SocketAddr>| async move {
        match addr {
            Some(addr) => {
                TcpListener::bind(addr).await.map(Some).map_err(|source| NodeError::Listen { key, addr, source })
            }
            None => Ok(None),
        }
    };
    let http = HttpListeners {
        admin: bind("admin_listen", config.admin_listen).await?,
        openfeature: {
            let mut listeners = Vec::new();
            for &addr in &config.openfeature_listen {
                listeners.extend(bind("openfeature_listen", Some(addr)).await?);
            }
            listeners
        },
    };
    let node = Node::start(config).await?;
    serve(node, api_listener, raft_listener, http, shutdown).await
}

/// The optional HTTP ports of a node, already bound.
#[derive(Debug, Default)]
pub struct HttpListeners {
    /// `/metrics`, `/livez`, `/readyz` (`admin.rs`).
    pub admin: Option<TcpListener>,
    /// flagd's protocols and OFREP (`openfeature/`), each listener serving all of them.
    pub openfeature: Vec<TcpListener>,
}

/// Serves the ports of a started node on already-bound TCP listeners.
pub async fn serve(
    node: Arc<Node>,
    api_listener: TcpListener,
    raft_listener: TcpListener,
    http: HttpListeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    // TCP_NODELAY: tonic sets it only on sockets it accepts itself; without it every small
    // response waits ~40 ms for delayed ACKs (Nagle).
    let api = TcpIncoming::from(api_listener).with_nodelay(Some(true));
    let raft = TcpIncoming::from(raft_listener).with_nodelay(Some(true));
    // On a real disk only (the simulation's nodes have none): ends when the node leaves.
    tokio::spawn(space::monitor(node.clone()));
    serve_incoming(node, api, raft, http, shutdown).await
}

/// Serves a started node on any streams of accepted connections (the simulation passes
/// simulated ones) until `shutdown` resolves, then takes the node out of the cluster. Returns
/// `Ok` after a requested shutdown, and an error when the node stopped because its Raft core
/// did (see "Fail-stop" below).
///
/// # Leaving, in this order
///
/// A rolling restart must cost no availability, so a leaving node steps out of Raft while its
/// Raft port still listens: a node that only stopped listening would keep its Raft core
/// running deaf, campaign (it hears no heartbeats) and, able to send but not to receive, win
/// elections that leave the cluster without a working leader.
///
/// 1. **Stop accepting API requests**: the API and admin listeners close; open HTTP/2
///    connections are told to go away.
/// 2. **Leave elections, end watch streams** ([`Node::begin_leaving`]): from here on the node
///    never campaigns (openraft's election timer is disabled) and never asks for or counts a
///    vote (the Raft network refuses), so no election already under way can be won either;
///    every watch stream ends with UNAVAILABLE `ShuttingDown` and its client resumes on another
///    node from its last revision. A leader goes on leading; a follower goes on following.
/// 3. **Drain the API**: requests in flight finish (writes commit: Raft runs and listens), for
///    at most [`SHUTDOWN_API_DRAIN_MS_MAX`]; what remains then is cut off.
/// 4. **Shut Raft down**: the core stops. A leader steps down here: openraft 0.9 cannot hand
///    leadership over (no transfer), so the others elect a new leader once its lease and an
///    election timeout have passed (`election_timeout_max_ms` + a random election timeout).
///    Writes in flight on the Raft port fail as `ShuttingDown` (retried with their
///    `request_id`).
/// 5. **Close the Raft listener**: until it closes, Raft calls are answered UNAVAILABLE, so
///    peers count this node as unreachable, not as a voter. Connections are closed gracefully
///    for at most [`SHUTDOWN_RAFT_DRAIN_MS_MAX`]: a peer that does not answer (paused,
///    partitioned) would otherwise hold the graceful HTTP/2 close open forever.
/// 6. **Close the store**: RocksDB closes with the last handle on it. openraft's core drops
///    the log store as it stops, its state-machine worker the state machine once its queued
///    commands are done, and the node (with its reader) is dropped here. Nothing depends on
///    it: every acknowledged write was synced to the WAL before it was acknowledged.
///
/// # Fail-stop
///
/// openraft stops its core on a fatal error: a storage error (a failed write, fsync or read of
/// the log, the vote or the state machine, which our storage reports and never retries) or a
/// panic. A node whose core has stopped can neither vote, replicate nor commit, yet its ports
/// would still answer. So when the core stops without being asked to, the node stops too: it
/// logs why, leaves in the order above (the API drain bounded by [`FAIL_STOP_DRAIN_MS_MAX`]:
/// nothing can commit any more) and returns [`NodeError::RaftStopped`], which the `vexil`
/// binary turns into a distinct exit code (`error::exit_code`) so that its supervisor restarts
/// it, and the restart recovers from what is on disk. A storage error met while leaving is
/// reported the same way, after the sequence.
pub async fn serve_incoming<A, R, IO, E>(
    node: Arc<Node>,
    api_incoming: A,
    raft_incoming: R,
    http: HttpListeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError>
where
    A: Stream<Item = Result<IO, E>> + Send + 'static,
    R: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    // Two stop signals: the API (and admin) listeners close first, the Raft listener last.
    let (stop_api_tx, stop_api_rx) = tokio::sync::watch::channel(false);
    let (stop_raft_tx, stop_raft_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let raft_service = RaftTransportServer::new(raft_service::RaftService { node: node.clone() })
        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
    let (mut raft_builder, mut api_builder) = (Server::builder(), Server::builder());
    if let Some(tls) = &node.tls {
        raft_builder = raft_builder.tls_config(tls.raft_server())?;
        api_builder = api_builder.tls_config(tls.api_server())?;
    }
    let raft_server =
        raft_builder.add_service(raft_service).serve_with_incoming_shutdown(raft_incoming, stopped(stop_raft_rx));

    // Every vexil.v1 service authenticates its callers first (`auth.rs`); health probes are
    // open to anyone.
    let authn = auth::Authenticator { node: node.clone() };
    let evaluator = api::evaluation::Evaluator::new(node.clone());
    // Every stream a node serves (Watch, flagd's EventStream and SyncFlags) takes one.
    let stream_slots = Arc::new(tokio::sync::Semaphore::new(limits::WATCH_STREAMS_MAX));
    let api_server = api_builder
        .max_concurrent_streams(API_CONCURRENT_STREAMS_MAX)
        .add_service(InterceptedService::new(
            FlagsServer::new(api::flags::FlagsApi { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX),
            authn.clone(),
        ))
        .add_service(InterceptedService::new(
            AuditServer::new(api::audit::AuditApi { node: node.clone() }),
            authn.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(api::cluster::ClusterApi { node: node.clone() }),
            authn.clone(),
        ))
        .add_service(InterceptedService::new(
            EvaluationServer::new(api::evaluation::EvaluationApi::new(node.clone(), evaluator.clone())),
            authn.clone(),
        ))
        .add_service(InterceptedService::new(
            WatchServer::new(api::watch::WatchApi { node: node.clone(), slots: stream_slots.clone() }),
            authn.clone(),
        ))
        .add_service(InterceptedService::new(
            TokensServer::new(api::tokens::TokensApi { node: node.clone() }),
            authn.clone(),
        ))
        .add_service(InterceptedService::new(
            ChangesServer::new(api::changes::ChangesApi { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX),
            authn.clone(),
        ))
        .add_service(HealthServer::new(api::health::HealthApi::new(node.clone())))
        .serve_with_incoming_shutdown(api_incoming, stopped(stop_api_rx.clone()));

    tracing::info!(
        node_id = node.id,
        api = %node.config.api_advertise,
        raft = %node.config.raft_advertise,
        data_dir = %node.config.data_dir.display(),
        "vexil node ready"
    );
    let leader_log = tokio::spawn(log_leader_changes(node.clone()));
    // Ends when the node leaves; does nothing unless `[audit]` sets a limit.
    tokio::spawn(retention::policy(node.clone()));
    if node.config.insecure {
        tracing::warn!(
            node_id = node.id,
            "running --insecure: tokens are not checked and every caller is the admin \"anonymous\"; for development only"
        );
    }
    let bootstrap_token = match (&node.config.auth.bootstrap_token_file, node.config.tokens_enabled()) {
        (Some(path), true) => {
            Some(tokio::spawn(auth::bootstrap_admin_token(node.clone(), auth::read_bootstrap_secret(path)?)))
        }
        _ => None,
    };
    let admin_task = match http.admin {
        None => None,
        Some(listener) => {
            Some(serve_http(&node, listener, admin::router(node.clone()), "admin", &[], false, &stop_api_rx).await?)
        }
    };
    let of = openfeature::OpenFeature { node: node.clone(), evaluator: evaluator.clone(), slots: stream_slots.clone() };
    let openfeature_app = openfeature::router(of, authn.clone());
    let mut openfeature_tasks = Vec::new();
    for listener in http.openfeature {
        let app = openfeature_app.clone();
        openfeature_tasks
            .push(serve_http(&node, listener, app, "openfeature", &[b"h2", b"http/1.1"], true, &stop_api_rx).await?);
    }
    let mut raft_task = tokio::spawn(raft_server);
    let mut api_task = tokio::spawn(api_server);
    let (core_stop, identity_failure) = tokio::select! {
        () = shutdown => (None, None),
        stop = node.raft_stops() => (Some(stop), None),
        why = node.identity.failed() => (None, Some(why)),
    };

    // 1. No new API requests.
    let api_drain_ms = match (&core_stop, &identity_failure) {
        (Some(stop), _) => {
            tracing::error!(node_id = node.id, error = %stop, "the Raft core stopped on its own; stopping this node");
            FAIL_STOP_DRAIN_MS_MAX
        }
        (None, Some(_)) => {
            tracing::error!(node_id = node.id, "this node cannot take part in its cluster; stopping");
            FAIL_STOP_DRAIN_MS_MAX
        }
        (None, None) => {
            tracing::info!(node_id = node.id, role = node.role(), "shutting down: no new requests; leaving elections");
            SHUTDOWN_API_DRAIN_MS_MAX
        }
    };
    stop_api_tx.send_replace(true);
    // 2. No campaigning, no votes asked; watch streams end.
    node.begin_leaving();
    // 3. Drain the API and the admin port, within one bound.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(api_drain_ms);
    let api_result = drain(&mut api_task, deadline, node.id, "API", api_drain_ms).await;
    let admin_result = match admin_task {
        Some(mut task) => drain(&mut task, deadline, node.id, "admin", api_drain_ms).await,
        None => Ok(Ok(())),
    };
    let mut openfeature_results = Vec::new();
    for mut task in openfeature_tasks {
        openfeature_results.push(drain(&mut task, deadline, node.id, "OpenFeature", api_drain_ms).await);
    }
    // 4. Raft stops: a leader steps down; nobody can count on this node any more.
    tracing::info!(node_id = node.id, "API drained; shutting Raft down");
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    // 5. The Raft listener closes (calls in flight finish, answered `ShuttingDown`).
    tracing::info!(node_id = node.id, "Raft stopped; closing the Raft listener");
    stop_raft_tx.send_replace(true);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_RAFT_DRAIN_MS_MAX);
    let raft_result = drain(&mut raft_task, deadline, node.id, "Raft", SHUTDOWN_RAFT_DRAIN_MS_MAX).await;
    // 6. The store closes with the last handle on it.
    let node_id = node.id;
    // The core stopped on its own (however it says it stopped: `Stopped` before step 4 is a
    // bug), or failed while the node was leaving rather than stopping as asked in step 4.
    let core_failure = match core_stop {
        Some(stop) => Some(stop),
        None => node.raft_stopped().filter(|stop| !matches!(stop, openraft::error::Fatal::Stopped)),
    };
    leader_log.abort();
    let _ = leader_log.await;
    if let Some(task) = bootstrap_token {
        task.abort();
        let _ = task.await;
    }
    drop(node);
    if let Some(stop) = core_failure {
        return Err(NodeError::RaftStopped(stop));
    }
    if let Some(why) = identity_failure {
        return Err(NodeError::DataLost(why));
    }
    raft_result??;
    api_result??;
    admin_result?.map_err(|source| NodeError::Http { port: "admin", source })?;
    for result in openfeature_results {
        result?.map_err(|source| NodeError::Http { port: "openfeature", source })?;
    }
    tracing::info!(node_id, "stopped");
    Ok(())
}

/// Serves `app` on an HTTP port (HTTP/1.1 and HTTP/2; TLS offering `alpn` when the node has
/// TLS; with `like_api`, requiring client certificates when the API port does) until the API
/// stops.
async fn serve_http(
    node: &Node,
    listener: TcpListener,
    app: axum::Router,
    port: &'static str,
    alpn: &[&[u8]],
    like_api: bool,
    stop_api: &tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, NodeError> {
    let mut stop = stop_api.clone();
    let stop = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Ok(match &node.tls {
        Some(tls) => {
            let listener = tls::HttpsListener::new(listener, tls.https_acceptor(alpn, like_api)?, port)
                .map_err(|source| NodeError::Http { port, source })?;
            tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop).await })
        }
        None => tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop).await }),
    })
}

/// Waits for a server task that was told to stop gracefully until `deadline`, then cuts off
/// what it still serves (aborting it) and reports it as done.
async fn drain<E>(
    task: &mut tokio::task::JoinHandle<Result<(), E>>,
    deadline: tokio::time::Instant,
    node_id: u64,
    what: &str,
    drain_ms: u64,
) -> Result<Result<(), E>, tokio::task::JoinError> {
    match tokio::time::timeout_at(deadline, &mut *task).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(node_id, drain_ms, "{what} requests still open after the drain bound; cutting them off");
            task.abort();
            Ok(Ok(()))
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::error::Fatal;
    use vexil_raft_store::mem::{Faults, MemDisk};
    use vexil_raft_store::{Command, Request};

    use super::*;
    use crate::error::exit_code;
    use crate::node::{Environment, InjectedFaults, system_clock};

    fn no_connections() -> impl Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
        futures::stream::pending()
    }

    #[tokio::test]
    async fn a_node_whose_disk_fails_a_sync_is_not_live_and_stops_with_the_storage_exit_code() {
        let disk = MemDisk::new(Faults::default());
        let (log_store, state_machine, reader) = disk.open().expect("open the disk");
        let mut config = Config { node_id: 1, insecure: true, ..Config::default() };
        config.cluster.bootstrap = true;
        config.cluster.initial_members = vec!["1=127.0.0.1:1/127.0.0.1:2".into()];
        config.raft.read_lease_ms = 100;
        let env = Environment {
            log_store,
            state_machine,
            reader,
            channels: network::tcp_channels(None),
            tls: None,
            clock: system_clock(),
            faults: InjectedFaults::default(),
        };
        let node = Node::start_with(config, env).await.expect("start");
        let serving = tokio::spawn(serve_incoming(
            node.clone(),
            no_connections(),
            no_connections(),
            HttpListeners::default(),
            std::future::pending(),
        ));
        node.raft.wait(Some(Duration::from_secs(10))).current_leader(1, "a single node leads").await.expect("leader");
        health::readiness(&node).await.expect("ready while the disk works");
        assert!(health::why_not_live(&node).is_none(), "live while the disk works");

        disk.fail_syncs();
        let create = Command::CreateFlag {
            namespace: "ns".into(),
            key: "k".into(),
            spec_json: r#"{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}"#.into(),
        };
        let request = Request {
            request_id: String::new(),
            actor: "test".into(),
            reason: String::new(),
            time_ms: 0,
            command: create,
        };
        let refused = node.write(request).await.expect_err("a write whose sync failed is never acknowledged");
        // Retryable elsewhere: the write may still commit on the followers.
        assert!(matches!(refused, error::ServerError::ShuttingDown), "{refused:?}");
        // By the time the write is answered, the core has stopped and says why.
        let stop = health::why_not_live(&node).expect("not live once the core stopped");
        assert!(matches!(stop, Fatal::StorageError(_)), "{stop:?}");
        assert!(health::readiness(&node).await.is_err(), "not ready either");

        let ended = tokio::time::timeout(Duration::from_secs(5), serving).await.expect("the node stops on its own");
        let err = ended.expect("serving task").expect_err("a node whose core stopped ends in an error");
        assert!(matches!(err, NodeError::RaftStopped(Fatal::StorageError(_))), "{err:?}");
        assert_eq!(err.exit_code(), exit_code::STORAGE);
        let message = err.to_string();
        assert!(message.starts_with("storage failure, node stopped") && message.contains("fsync failed"), "{message}");
    }
}
