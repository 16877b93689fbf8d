//! The client: configuration ([`ClientBuilder`]) and the handle applications hold
//! ([`Client`]), over the state evaluation and the background tasks share (`shared.rs`).
//!
//! Tasks: the watcher (`watcher.rs`) keeps the local copy current; the disk cache writer
//! (`disk_cache.rs`, when configured) persists it. Both stop when the last `Client` clone is
//! dropped, or on [`Client::close`], which also writes the disk cache one last time.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use vexil_model::eval::EvalContext;

use crate::admin::AdminClient;
use crate::error::Error;
use crate::eval::{EvaluationDetails, Namespace};
use crate::shared::Shared;
use crate::status::{ChangeEvent, Status, StatusState};
use crate::store::{DataSource, Snapshot};
use crate::transport::{ConnectOptions, TlsOptions};
use crate::{disk_cache, limits, watcher};

/// Configures and starts a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    namespaces: Vec<String>,
    disk_cache: Option<PathBuf>,
    init_timeout: Duration,
    max_staleness: Duration,
    connect: ConnectOptions,
}

impl ClientBuilder {
    /// A client of the cluster reachable at these nodes (`http://host:port` or `host:port`;
    /// any node will do, list several for failover).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespaces: Vec::new(),
            disk_cache: None,
            init_timeout: limits::INIT_TIMEOUT_DEFAULT,
            max_staleness: limits::MAX_STALENESS_DEFAULT,
            connect: ConnectOptions::default(),
        }
    }

    /// Adds a namespace to keep a live copy of. The first one added is the client's default
    /// namespace (what `client.bool_value(..)` reads); reach the others with
    /// [`Client::namespace`].
    pub fn namespace(mut self, namespace: impl Into<String>) -> ClientBuilder {
        let ns = namespace.into();
        if !self.namespaces.contains(&ns) {
            self.namespaces.push(ns);
        }
        self
    }

    /// Keeps the last good state in this file (written atomically after changes) and starts
    /// from it when the cluster cannot be reached.
    pub fn disk_cache(mut self, path: impl Into<PathBuf>) -> ClientBuilder {
        self.disk_cache = Some(path.into());
        self
    }

    /// How long [`ClientBuilder::connect`] waits for the cluster's state (default 5 s).
    pub fn init_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.init_timeout = timeout;
        self
    }

    /// Presents this bearer token (`vexil_...`, a reader token of the watched namespaces is
    /// enough) on the watch stream and every admin call.
    /// How long the local copy may go without the cluster confirming it current (the node
    /// sends a confirmation every `watch.progress_interval_ms`, 1 s by default) before the
    /// client reports itself stale ([`Status::is_stale`](crate::Status::is_stale)) and moves
    /// to another node, resuming from its revision. It keeps serving its last-known-good values
    /// meanwhile. Default 5 s; at least 100 ms.
    pub fn max_staleness(mut self, max: Duration) -> ClientBuilder {
        self.max_staleness = max;
        self
    }

    pub fn token(mut self, secret: impl Into<String>) -> ClientBuilder {
        self.connect = self.connect.token(secret);
        self
    }

    /// Speaks TLS to the nodes: `host:port` endpoints are dialed as `https://`, and an
    /// `http://` endpoint makes [`ClientBuilder::start`] fail with [`Error::Config`].
    pub fn tls(mut self, tls: TlsOptions) -> ClientBuilder {
        self.connect = self.connect.tls(tls);
        self
    }

    /// Token and TLS at once, e.g. the options an [`AdminClient`] was built with (replaces
    /// what [`ClientBuilder::token`] and [`ClientBuilder::tls`] set).
    pub fn connect_options(mut self, options: ConnectOptions) -> ClientBuilder {
        self.connect = options;
        self
    }

    fn check(&self) -> Result<(), Error> {
        if self.max_staleness < limits::MAX_STALENESS_MIN {
            return Err(Error::Config(format!(
                "max_staleness is {:?}; at least {:?}",
                self.max_staleness,
                limits::MAX_STALENESS_MIN
            )));
        }
        if self.namespaces.is_empty() {
            return Err(Error::Config("at least one namespace is required".into()));
        }
        if self.namespaces.len() > limits::NAMESPACES_MAX {
            return Err(Error::Config(format!(
                "{} namespaces given; the limit is {}",
                self.namespaces.len(),
                limits::NAMESPACES_MAX
            )));
        }
        if let Some(bad) = self.namespaces.iter().find(|n| vexil_model::flag::validate_namespace(n).is_err()) {
            return Err(Error::Config(format!("{bad:?} is not a valid namespace name")));
        }
        Ok(())
    }

    /// Starts the client and returns at once: it serves the disk cache (if configured and
    /// present) or the callers' defaults until the cluster's state arrives. Must be called
    /// inside a Tokio runtime (it spawns the watcher).
    pub fn start(self) -> Result<Client, Error> {
        self.check()?;
        let dialer = self.connect.dialer()?;
        let ordered = dialer.endpoints(&self.endpoints)?;
        let region = watcher::Home { local: ordered.local, return_after: ordered.return_after };
        let endpoints = dialer.watch_channels(&ordered);
        let admin = AdminClient::from_dialer(&self.endpoints, &dialer)?;
        let names: Arc<[Box<str>]> = self.namespaces.iter().map(|n| Box::from(n.as_str())).collect();
        let shared = Arc::new(Shared::new(names));
        shared.status.send_modify(|s| s.max_staleness = self.max_staleness);
        if let Some(path) = &self.disk_cache {
            disk_cache::load_into(&shared, path);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(path) = self.disk_cache {
            let written = shared.status.borrow().data_version;
            tasks.push(tokio::spawn(disk_cache::run_writer(shared.clone(), path, written, shutdown_rx.clone())));
        }
        tasks.push(tokio::spawn(watcher::run(shared.clone(), endpoints, region, shutdown_rx)));
        let default = Namespace { shared: shared.clone(), index: 0 };
        Ok(Client {
            inner: Arc::new(ClientInner {
                shared,
                default,
                admin,
                init_timeout: self.init_timeout,
                shutdown: shutdown_tx,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Starts the client and waits (up to the init timeout) for the cluster's state. Returns
    /// the client either way: check [`Client::status`] for what it is serving.
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.start()?;
        let timeout = client.inner.init_timeout;
        if !client.wait_synced(timeout).await {
            let st = client.status();
            tracing::warn!(
                ready = st.ready,
                error = st.last_error.as_deref().unwrap_or(""),
                "no state from the cluster within {timeout:?}; serving {}",
                if st.ready { "the disk cache" } else { "the callers' defaults" }
            );
        }
        Ok(client)
    }
}

struct ClientInner {
    shared: Arc<Shared>,
    default: Namespace,
    admin: AdminClient,
    init_timeout: Duration,
    /// Dropping it (with the last `Client`) stops the tasks.
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A live, local copy of some namespaces' flags, evaluated in-process, plus typed admin calls.
/// Cheap to clone (clones share everything).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("namespaces", &self.inner.shared.names).finish_non_exhaustive()
    }
}

impl Client {
    pub fn builder<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder::new(endpoints)
    }

    /// The default namespace (the first configured).
    pub fn default_namespace(&self) -> &Namespace {
        &self.inner.default
    }

    /// A handle on another watched namespace; `None` if this client does not watch it.
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        let index = self.inner.shared.names.iter().position(|n| &**n == name)?;
        Some(Namespace { shared: self.inner.shared.clone(), index })
    }

    #[inline]
    pub fn bool_value(&self, key: &str, ctx: &EvalContext<'_>, default: bool) -> bool {
        self.inner.default.bool_value(key, ctx, default)
    }

    #[inline]
    pub fn int_value(&self, key: &str, ctx: &EvalContext<'_>, default: i64) -> i64 {
        self.inner.default.int_value(key, ctx, default)
    }

    #[inline]
    pub fn float_value(&self, key: &str, ctx: &EvalContext<'_>, default: f64) -> f64 {
        self.inner.default.float_value(key, ctx, default)
    }

    pub fn string_value(&self, key: &str, ctx: &EvalContext<'_>, default: &str) -> String {
        self.inner.default.string_value(key, ctx, default)
    }

    pub fn object_value(&self, key: &str, ctx: &EvalContext<'_>, default: &Map<String, Value>) -> Map<String, Value> {
        self.inner.default.object_value(key, ctx, default)
    }

    pub fn bool_details(&self, key: &str, ctx: &EvalContext<'_>, default: bool) -> EvaluationDetails<bool> {
        self.inner.default.bool_details(key, ctx, default)
    }

    pub fn int_details(&self, key: &str, ctx: &EvalContext<'_>, default: i64) -> EvaluationDetails<i64> {
        self.inner.default.int_details(key, ctx, default)
    }

    pub fn float_details(&self, key: &str, ctx: &EvalContext<'_>, default: f64) -> EvaluationDetails<f64> {
        self.inner.default.float_details(key, ctx, default)
    }

    pub fn string_details(&self, key: &str, ctx: &EvalContext<'_>, default: &str) -> EvaluationDetails<String> {
        self.inner.default.string_details(key, ctx, default)
    }

    pub fn object_details(
        &self,
        key: &str,
        ctx: &EvalContext<'_>,
        default: &Map<String, Value>,
    ) -> EvaluationDetails<Map<String, Value>> {
        self.inner.default.object_details(key, ctx, default)
    }

    /// The current local copy (every watched namespace at one revision).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.shared.snapshot.load_full()
    }

    /// Readiness and staleness.
    pub fn status(&self) -> Status {
        self.inner.shared.status.borrow().to_status()
    }

    /// Whether the copy is stale ([`Status::is_stale`]), as a value that changes when it
    /// crosses: `wait_for(|stale| *stale)` wakes when the client has gone `max_staleness`
    /// without a confirmation (or lost its stream), `changed()` again when it is fresh.
    pub fn stale_changes(&self) -> watch::Receiver<bool> {
        self.inner.shared.stale.subscribe()
    }

    /// Change events from now on, one per applied update, in revision order.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.shared.events.subscribe()
    }

    /// The typed admin client for the same endpoints, token and TLS.
    pub fn admin(&self) -> &AdminClient {
        &self.inner.admin
    }

    async fn wait_status(&self, timeout: Duration, done: impl FnMut(&StatusState) -> bool) -> bool {
        let mut rx = self.inner.shared.status.subscribe();
        matches!(tokio::time::timeout(timeout, rx.wait_for(done)).await, Ok(Ok(_)))
    }

    /// Waits until there is flag data (cluster or disk cache); `false` on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.wait_status(timeout, |s| s.source.is_some()).await
    }

    /// Waits until the state comes from the cluster; `false` on timeout.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        self.wait_status(timeout, |s| s.source == Some(DataSource::Cluster)).await
    }

    /// Waits until the local copy reflects `revision` (e.g. a write's `WriteResult::revision`:
    /// read-your-writes); `false` on timeout.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> bool {
        self.wait_status(timeout, |s| s.source == Some(DataSource::Cluster) && s.revision >= revision).await
    }

    /// Stops the watcher, writes the disk cache one last time (if configured) and waits for
    /// both. Evaluations keep serving the last state afterwards.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(poisoned) => poisoned.into_inner().drain(..).collect(),
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}
