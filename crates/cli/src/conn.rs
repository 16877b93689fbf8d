//! Reaching the cluster: the client library's [`AdminClient`] for flag, audit and token calls
//! (it retries across endpoints with one request id per write), and raw generated clients for
//! the calls it does not offer: membership changes (which must reach the leader: a follower
//! answers `NOT_LEADER` with the leader's address, which is followed), per-node status, dry
//! runs, server-side evaluation, audit pages by seq and the change feed.
//!
//! Every channel, raw or not, comes from the client library ([`ConnectOptions::channel`]), so
//! the token and TLS apply to all of them the same way; addresses the cluster reports (members,
//! leader hints) are dialed with the scheme the options choose.
//!
//! What a failed call means, whether to try again and how long to wait are the client
//! library's to say ([`Error::from_status`], [`Error::is_retryable`], its jittered
//! [`backoff`]): the CLI keeps no retry policy of its own, only its budgets (how long it looks
//! for a leader, how many rounds a read makes) and where it looks.

use std::future::Future;
use std::time::{Duration, Instant};

use vexil_client::admin::backoff;
use vexil_client::{AdminClient, ConnectOptions, Consistency, Error, NodeChannel, ReadOpts};
use vexil_proto::v1 as pb;
use vexil_proto::v1::cluster_client::ClusterClient;

use crate::endpoints::Settings;
use crate::errors::{self, Subject};
use crate::{ConsistencyArg, Failure};

/// Time to open a connection to one node before giving up on it (the client library's, which
/// builds every channel).
pub const CONNECT_TIMEOUT: Duration = vexil_client::limits::CONNECT_TIMEOUT;
/// Deadline of one ordinary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a per-node status probe (`cluster status` shows a slow node as unreachable).
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How long a leader-bound call keeps looking for a leader (elections, forwarding hops).
pub const LEADER_SEARCH: Duration = Duration::from_secs(15);
/// Rounds over the endpoints a read makes while every node is unavailable (a node restarting,
/// an election), with a growing pause between rounds.
pub const ANY_ROUNDS: u32 = 3;
/// Bounds of the client library's backoff between retries here: an election takes a few
/// hundred milliseconds, so the first retries come soon, later ones no more than this apart.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(2_000);
/// Deadline of a membership change (joint consensus is two commits) or a snapshot build.
pub const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How `vexilctl` reaches the cluster. Cheap to clone (for concurrent probes).
#[derive(Debug, Clone)]
pub struct Conn {
    /// Endpoint URLs (`http(s)://host:port`, the scheme from the TLS settings), in the order
    /// given.
    pub endpoints: Vec<String>,
    pub admin: AdminClient,
    pub read: ReadOpts,
    /// The token and TLS every channel carries.
    pub options: ConnectOptions,
}

impl Conn {
    /// Reads the token and TLS files the settings name and checks the endpoints against them.
    pub fn new(settings: &Settings, consistency: Option<ConsistencyArg>) -> Result<Conn, Failure> {
        let options = settings.connect_options()?;
        // The client's region first: `vexilctl` asks endpoints in this order.
        let endpoints =
            options.endpoint_urls(&settings.endpoints).map_err(|e| errors::from_client(e, Subject::Cluster))?;
        let read = ReadOpts {
            consistency: match consistency {
                None => Consistency::Unspecified,
                Some(ConsistencyArg::Linearizable) => Consistency::Linearizable,
                Some(ConsistencyArg::Lease) => Consistency::Lease,
                Some(ConsistencyArg::Stale) => Consistency::Stale,
            },
            min_revision: 0,
        };
        let admin = AdminClient::new_with_options(endpoints.clone(), options.clone())
            .map_err(|e| errors::from_client(e, Subject::Cluster))?
            .with_read(read);
        Ok(Conn { endpoints, admin, read, options })
    }

    /// The URL to dial a node at: an address the cluster reports (`host:port`, a member's or
    /// a leader hint's) with the scheme this connection uses.
    pub fn node_url(&self, addr: &str) -> Result<String, Failure> {
        let addr = addr.trim();
        let bare = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        self.options.endpoint_url(bare).map_err(|e| errors::from_client(e, Subject::Cluster))
    }

    pub fn read_options(&self) -> pb::ReadOptions {
        pb::ReadOptions { consistency: self.read.consistency as i32, min_revision: self.read.min_revision }
    }

    /// A lazily connected channel to one node (an endpoint, or an address the cluster
    /// reported) with this connection's token and TLS, and a per-call deadline.
    pub fn channel(&self, url: &str, timeout: Duration) -> Result<NodeChannel, Failure> {
        let url = self.node_url(url)?;
        self.options.channel(&url, timeout).map_err(|e| errors::from_client(e, Subject::Cluster))
    }

    /// One node's own status, within [`STATUS_TIMEOUT`].
    pub async fn status_of(&self, url: &str) -> Result<pb::StatusResponse, tonic::Status> {
        let ch = self.channel(url, STATUS_TIMEOUT).map_err(|f| tonic::Status::invalid_argument(f.to_string()))?;
        let mut client = ClusterClient::new(ch);
        match tokio::time::timeout(STATUS_TIMEOUT + CONNECT_TIMEOUT, client.status(pb::StatusRequest {})).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded("the node did not answer in time")),
        }
    }

    /// The status of the first endpoint that answers, with its URL.
    pub async fn any_status(&self) -> Result<(String, pb::StatusResponse), Failure> {
        let mut last = String::new();
        for url in &self.endpoints {
            match self.status_of(url).await {
                Ok(s) => return Ok((url.clone(), s)),
                Err(e) => last = format!("{url}: {}", e.message()),
            }
        }
        Err(Failure::Failed(format!(
            "no endpoint answered ({last}); check that the nodes run and that --endpoints / VEXIL_ENDPOINTS point at their API ports"
        )))
    }

    /// The leader's status, asked of the leader itself (only it knows every member's lag).
    pub async fn leader_status(&self) -> Result<pb::StatusResponse, Failure> {
        let deadline = Instant::now() + LEADER_SEARCH;
        loop {
            let (_, s) = self.any_status().await?;
            if s.leader_id != 0 && !s.leader_api_addr.is_empty() {
                if s.leader_id == s.node_id {
                    return Ok(s);
                }
                if let Ok(l) = self.status_of(&s.leader_api_addr).await
                    && l.leader_id == l.node_id
                {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                return Err(Failure::Failed(format!(
                    "no leader within {}s; a majority of voters must run and reach each other (see `vexilctl cluster status`)",
                    LEADER_SEARCH.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `call` on the leader: found through any node's status, then followed through
    /// `NOT_LEADER` answers; retried while there is no leader or it is unreachable, for up to
    /// [`LEADER_SEARCH`]. Only for calls that are safe to repeat (membership changes that
    /// already hold are accepted again by openraft).
    pub async fn on_leader<T, F, Fut>(&self, timeout: Duration, subject: Subject<'_>, mut call: F) -> Result<T, Failure>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + LEADER_SEARCH;
        let mut target: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let url = match target.take() {
                Some(u) => u,
                None => match self.any_status().await {
                    Ok((_, s)) if !s.leader_api_addr.is_empty() => self.node_url(&s.leader_api_addr)?,
                    Ok((url, _)) => url,
                    Err(f) if Instant::now() >= deadline => return Err(f),
                    Err(_) => {
                        tokio::time::sleep(backoff(failures, RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX)).await;
                        failures += 1;
                        continue;
                    }
                },
            };
            match call(self.channel(&url, timeout)?).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => {
                    let err = Error::from_status(&status);
                    if !err.is_retryable() || Instant::now() >= deadline {
                        return Err(errors::from_client(err, subject));
                    }
                    target = Error::leader_hint(&status).map(|a| self.node_url(&a)).transpose()?;
                    if target.is_none() {
                        tokio::time::sleep(backoff(failures, RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX)).await;
                        failures += 1;
                    }
                }
            }
        }
    }

    /// Runs a read-only `call` on the endpoints in turn until one answers; an error that is not
    /// retryable (a refusal) is final.
    pub async fn on_any<T, F, Fut>(&self, timeout: Duration, subject: Subject<'_>, mut call: F) -> Result<T, Failure>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last: Option<Error> = None;
        for round in 0..ANY_ROUNDS {
            if round > 0 {
                tokio::time::sleep(backoff(round, RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX)).await;
            }
            for url in &self.endpoints {
                match call(self.channel(url, timeout)?).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) => {
                        let err = Error::from_status(&s);
                        if !err.is_retryable() {
                            return Err(errors::from_client(err, subject));
                        }
                        last = Some(err);
                    }
                }
            }
        }
        let err = last.unwrap_or(Error::Unavailable { reason: None, message: "no endpoint".into(), attempts: 1 });
        Err(errors::from_client(err, subject))
    }
}
