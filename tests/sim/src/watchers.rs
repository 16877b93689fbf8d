//! Watching clients: each follows the change feed of the `sim` namespace through the real
//! `Watch` API, starting on a node of its own (which the nemesis may isolate, crash or stop),
//! and keeps its freshness the way the client library does (`vexil-client`'s watcher, whose
//! rules this follows; the library itself runs on real sockets and clocks, not simulated ones):
//!
//! - only a `Progress` confirms the copy; the copy is stale once `MAX_STALENESS` has passed
//!   since the last one;
//! - a stream that ends (or says `Stale`) is resumed on the next node from the last revision;
//! - a stream that is both unconfirmed and silent for `MAX_STALENESS` is left for the next node.
//!
//! Everything a watcher receives is recorded with its simulated arrival time, for the feed and
//! delivery-bound checkers ([`crate::check::feed`]).

use std::rc::Rc;
use std::time::Duration;

use tonic::Streaming;
use vexil_proto::v1 as pb;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::watch_response::Kind;
use vexil_raft_store::NodeId;

use crate::cluster::{CLIENT_TIMEOUT, api_addr};
use crate::history::{Micros, now_micros};
use crate::net;
use crate::workload::{Control, NAMESPACE, description, sim_now, sleep_until};

/// A watcher's `max_staleness`: five progress intervals, as the library's default is to the
/// server's.
pub const MAX_STALENESS: Duration = Duration::from_millis(1_000);

/// One delivered change of a flag: its key and written value (`None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub key: String,
    pub value: Option<String>,
}

/// What a watcher received or did, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A stream was opened on `node` after revision `after`.
    Opened {
        node: NodeId,
        after: u64,
    },
    Changes {
        revision: u64,
        changes: Vec<Delivered>,
    },
    Progress {
        revision: u64,
    },
    Stale {
        revision: u64,
    },
    /// The stream ended (error, end of stream, or left as silent and unconfirmed).
    Ended {
        node: NodeId,
        why: String,
    },
}

/// One watcher's whole record.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    pub name: String,
    pub events: Vec<(Micros, WatchEvent)>,
    /// When the watcher stopped watching (the end of the run).
    pub end: Micros,
}

fn delivered(change: &pb::Change) -> Delivered {
    Delivered { key: change.key.clone(), value: change.flag.as_ref().map(|f| description(&f.spec_json)) }
}

async fn open(node: NodeId, after: u64, secret: Option<&str>) -> Result<Streaming<pb::WatchResponse>, String> {
    let channel = net::api_channel(&api_addr(node), Duration::from_millis(500), secret)?;
    let req = pb::WatchRequest { namespaces: vec![NAMESPACE.into()], after_revision: after, initial_snapshot: false };
    match tokio::time::timeout(CLIENT_TIMEOUT, WatchClient::new(channel).watch(req)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(format!("{:?} {}", status.code(), status.message())),
        Err(_) => Err("open timed out".into()),
    }
}

/// Watches from `start` until `end`, beginning on `first`.
pub async fn watcher(
    name: String,
    first: NodeId,
    start: Duration,
    end: Duration,
    control: Rc<Control>,
) -> turmoil::Result {
    sleep_until(start).await;
    let mut log = WatchLog { name: name.clone(), ..WatchLog::default() };
    let record = |log: &mut WatchLog, e: WatchEvent| log.events.push((now_micros(), e));
    let mut node = first;
    let mut cursor = 0u64;
    let mut confirmed_at: Option<Duration> = None;
    while sim_now() < end {
        record(&mut log, WatchEvent::Opened { node, after: cursor });
        let secret = control.admin_secret.borrow().clone();
        let why = match open(node, cursor, secret.as_deref()).await {
            Err(e) => e,
            Ok(mut stream) => {
                let mut last_message = sim_now();
                loop {
                    let now = sim_now();
                    if now >= end {
                        break "the run ended".to_string();
                    }
                    let unconfirmed = confirmed_at.is_none_or(|c| now - c >= MAX_STALENESS);
                    if unconfirmed && now - last_message >= MAX_STALENESS {
                        break "unconfirmed and silent: left".to_string();
                    }
                    let wait = (last_message + MAX_STALENESS).saturating_sub(now).max(Duration::from_millis(10));
                    let message = match tokio::time::timeout(wait.min(end - now), stream.message()).await {
                        Err(_) => continue,
                        Ok(Ok(Some(m))) => m,
                        Ok(Ok(None)) => break "the stream ended".to_string(),
                        Ok(Err(status)) => break format!("{:?} {}", status.code(), status.message()),
                    };
                    last_message = sim_now();
                    match message.kind {
                        Some(Kind::Changes(batch)) => {
                            cursor = cursor.max(batch.revision);
                            let changes = batch.changes.iter().map(delivered).collect();
                            record(&mut log, WatchEvent::Changes { revision: batch.revision, changes });
                        }
                        Some(Kind::Progress(p)) => {
                            cursor = cursor.max(p.revision);
                            confirmed_at = Some(sim_now());
                            record(&mut log, WatchEvent::Progress { revision: p.revision });
                        }
                        Some(Kind::Stale(s)) => record(&mut log, WatchEvent::Stale { revision: s.revision }),
                        Some(Kind::Snapshot(_)) | None => {}
                    }
                }
            }
        };
        record(&mut log, WatchEvent::Ended { node, why });
        if sim_now() >= end {
            break;
        }
        // The next member, as the library moves through its endpoint list.
        let targets = control.targets.borrow().clone();
        let at = targets.iter().position(|t| *t == node).map_or(0, |i| i + 1);
        node = targets[at % targets.len()];
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log.end = now_micros();
    control.watches.borrow_mut().push(log);
    Ok(())
}
