//! The watcher's protocol against a scripted in-process Watch server (cases a healthy cluster
//! does not produce on demand): a stream that ends is resumed from the last applied revision
//! without a snapshot; a batch that repeats an applied revision is refused and the stream
//! resumed; `REVISION_COMPACTED` makes the client resync with a snapshot.
// The scripted server is test code outside `#[test]` functions: a poisoned lock is a failure.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status};
use vexil_client::proto::watch_response::Kind;
use vexil_client::proto::watch_server::{Watch, WatchServer};
use vexil_client::proto::{Change, ChangeBatch, Flag, NamespaceState, WatchRequest, WatchResponse, WatchSnapshot};
use vexil_client::{Client, EvalContext, UpdateKind};
use vexil_testkit::eventually;

enum Step {
    /// Send these messages; keep the stream open afterwards or end it.
    Send(Vec<Kind>, bool),
    Fail(Status),
}

type Responder = mpsc::Sender<Result<WatchResponse, Status>>;

#[derive(Clone, Default)]
struct Scripted {
    requests: Arc<Mutex<Vec<(u64, bool)>>>,
    steps: Arc<Mutex<VecDeque<Step>>>,
    open: Arc<Mutex<Vec<Responder>>>,
    /// The first call waits for it (so the test subscribes to events before any arrive).
    gate: Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl Watch for Scripted {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let first = {
            let mut requests = self.requests.lock().unwrap();
            requests.push((r.after_revision, r.initial_snapshot));
            requests.len() == 1
        };
        if first {
            self.gate.notified().await;
        }
        let step = self.steps.lock().unwrap().pop_front();
        let (tx, rx) = mpsc::channel(16);
        match step {
            Some(Step::Fail(status)) => return Err(status),
            Some(Step::Send(kinds, keep_open)) => {
                for k in kinds {
                    tx.try_send(Ok(WatchResponse { kind: Some(k) })).unwrap();
                }
                if keep_open {
                    self.open.lock().unwrap().push(tx);
                }
            }
            // Out of script: a stream that stays silent.
            None => self.open.lock().unwrap().push(tx),
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn flag(key: &str, default: &str, version: u64, revision: u64) -> Flag {
    Flag {
        namespace: "n".into(),
        key: key.into(),
        spec_json: json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default})
            .to_string(),
        version,
        created_revision: revision,
        mod_revision: revision,
        ..Default::default()
    }
}

fn snapshot(revision: u64, flags: Vec<Flag>) -> Kind {
    snapshot_part(revision, flags, false)
}

/// One part of a snapshot; `more`: parts follow.
fn snapshot_part(revision: u64, flags: Vec<Flag>, more: bool) -> Kind {
    Kind::Snapshot(WatchSnapshot {
        revision,
        namespaces: vec![NamespaceState {
            namespace: "n".into(),
            flags,
            evaluators_json: "{}".into(),
            metadata_json: "{}".into(),
            settings: None,
        }],
        more,
    })
}

fn upsert(f: Flag) -> Kind {
    let revision = f.mod_revision;
    Kind::Changes(ChangeBatch {
        revision,
        changes: vec![Change {
            revision,
            action: "flag.update".into(),
            namespace: "n".into(),
            key: f.key.clone(),
            flag: Some(f),
            ..Default::default()
        }],
    })
}

fn compacted() -> Status {
    let details = tonic_types::ErrorDetails::with_error_info(
        "REVISION_COMPACTED",
        "vexil",
        std::collections::HashMap::<String, String>::new(),
    );
    use tonic_types::StatusExt;
    Status::with_error_details(Code::OutOfRange, "changes after revision 6 are compacted", details)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_refuse_duplicates_and_resync_after_compaction() -> anyhow::Result<()> {
    let server = Scripted::default();
    server.steps.lock().unwrap().extend([
        // 1. The first stream: a snapshot at 5, one change at 6, then the stream ends.
        Step::Send(vec![snapshot(5, vec![flag("f", "on", 1, 5)]), upsert(flag("f", "off", 2, 6))], false),
        // 2. Resumed from 6: the node repeats revision 6 (a bug): refused, stream dropped.
        Step::Send(vec![upsert(flag("f", "on", 2, 6))], true),
        // 3. Resumed from 6 again: compacted.
        Step::Fail(compacted()),
        // 4. Resync: a snapshot at 9 in two parts (namespace `n` spans both), then a change at
        //    10; the stream stays open.
        Step::Send(
            vec![
                snapshot_part(9, vec![flag("f", "on", 3, 8)], true),
                snapshot_part(9, vec![flag("h", "on", 1, 9)], false),
                upsert(flag("g", "on", 1, 10)),
            ],
            true,
        ),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WatchServer::new(server.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let client = Client::builder([format!("http://{addr}")]).namespace("n").start()?;
    let mut events = client.subscribe();
    server.gate.notify_one();
    assert!(client.wait_for_revision(10, Duration::from_secs(10)).await, "{:?}", client.status());

    let ctx = EvalContext::new();
    assert!(client.bool_value("f", &ctx, false), "the resync snapshot replaced the state");
    assert!(client.bool_value("h", &ctx, false), "both parts of the snapshot are in the state");
    assert!(client.bool_value("g", &ctx, false));
    assert_eq!(
        *server.requests.lock().unwrap(),
        [(0, true), (6, false), (6, false), (0, true)],
        "requests: (after_revision, initial_snapshot)"
    );
    let mut seen = Vec::new();
    eventually(Duration::from_secs(2), "all events", || {
        while let Ok(e) = events.try_recv() {
            seen.push((e.revision, e.kind));
        }
        seen.len() >= 4
    })
    .await;
    assert_eq!(
        seen,
        [(5, UpdateKind::Snapshot), (6, UpdateKind::Changes), (9, UpdateKind::Snapshot), (10, UpdateKind::Changes)],
        "the repeated revision 6 was never applied, and the snapshot in two parts applied once"
    );
    assert!(client.status().connected);
    Ok(())
}
