//! SIGTERM of a node with watch streams attached, as in a rolling restart: the node exits within
//! seconds, every stream it served ends with UNAVAILABLE / SHUTTING_DOWN (so a client resumes on
//! another node from its last revision), and writes through the other nodes keep succeeding.
//! A stopping follower never campaigns (no write fails, the term does not move), not even when
//! it loses its leader while it drains; a stopping leader steps out at once, and the others
//! elect a new leader within the re-election gap.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::watch_response::Kind;
use vexil_proto::v1::{Consistency, CreateFlagRequest, GetFlagRequest, ReadOptions, WatchRequest, WriteOptions};
use vexil_server::error::{ErrorReason, error_info};
use vexil_testkit::{Cluster, Runtime, spec};

/// Watch streams attached to the node that is stopped.
const WATCHERS: usize = 3;
/// SIGTERM to exit, with the watchers attached.
const EXIT_BOUND: Duration = Duration::from_secs(5);
/// When the leader is stopped: from its exit until writes through the others succeed again
/// (test election timeouts are 300-600 ms; a follower waits out the old leader's lease first).
const REELECTION_BOUND: Duration = Duration::from_secs(3);
/// How long writes continue after the exit: well past an election timeout, which is when the
/// leaving node used to campaign.
const WRITES_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The write timeout of the cluster whose follower drains a held read: the read is answered
/// (READ_TIMEOUT) this long after it arrived, well after the election timers have fired.
const HELD_READ_MS: u64 = 2_000;

/// Opens `WATCHERS` streams on node `id` (one connection each), waits for each one's snapshot,
/// then follows each to its end in a task that returns how the stream ended.
async fn attach_watchers(cluster: &Cluster, id: u64) -> Vec<JoinHandle<Result<(), tonic::Status>>> {
    let mut tasks = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = WatchClient::new(cluster.channel(id).await)
            .watch(WatchRequest { namespaces: vec![], after_revision: 0, initial_snapshot: true })
            .await
            .expect("watch")
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a snapshot within 10 s")
            .expect("stream ok")
            .expect("stream open");
        assert!(matches!(first.kind, Some(Kind::Snapshot(_))), "the first message is the snapshot");
        tasks.push(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(status),
                }
            }
        }));
    }
    tasks
}

/// One write attempt: when its answer came and what it was (`None`: acknowledged).
type Attempts = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// Writes one flag after another through `addrs` (round robin), retrying a failed write with
/// the same request id on the next node, as a client does; records every attempt.
async fn writer(addrs: Vec<String>, attempts: Attempts, stop: Arc<AtomicBool>) {
    let mut clients: Vec<FlagsClient<Channel>> = addrs
        .iter()
        .map(|a| {
            let ch = Channel::from_shared(a.clone())
                .expect("uri")
                .connect_timeout(Duration::from_millis(200))
                .timeout(Duration::from_secs(4))
                .connect_lazy();
            FlagsClient::new(ch)
        })
        .collect();
    let mut next = 0usize;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w-{i:05}");
        loop {
            let n = clients.len();
            let req = CreateFlagRequest {
                namespace: "load".into(),
                key: key.clone(),
                spec_json: spec(&key),
                options: Some(WriteOptions { request_id: key.clone(), reason: "shutdown test".into() }),
                strict: false,
            };
            let result = clients[next % n].create_flag(req).await;
            let answered = Instant::now();
            next += 1;
            match result {
                Ok(_) => {
                    attempts.lock().expect("attempts lock").push((answered, None));
                    break;
                }
                Err(status) => {
                    let error = format!("{:?}: {}", status.code(), status.message());
                    attempts.lock().expect("attempts lock").push((answered, Some(error)));
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        i += 1;
    }
}

/// How a SIGTERM with watchers attached went.
struct Outcome {
    /// From SIGTERM to the process's exit.
    exit_took: Duration,
    /// When the process had exited.
    exited_at: Instant,
    /// When SIGTERM was sent.
    sigterm_at: Instant,
    attempts: Vec<(Instant, Option<String>)>,
}

/// Attaches watchers to `leaving`, writes through `others`, stops `leaving` with SIGTERM, keeps
/// writing for a while, and checks what every test here needs: a prompt exit and every stream
/// ended with UNAVAILABLE / SHUTTING_DOWN.
async fn sigterm_with_watchers(cluster: &mut Cluster, leaving: u64, others: &[u64]) -> Outcome {
    let watchers = attach_watchers(cluster, leaving).await;
    let attempts: Attempts = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = others.iter().map(|id| cluster.api_addr(*id)).collect();
    let task = tokio::spawn(writer(addrs, attempts.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        attempts.lock().expect("attempts lock").iter().any(|(_, e)| e.is_none()),
        "no write succeeded before the stop"
    );

    let sigterm_at = Instant::now();
    // `Cluster::stop` waits for the exit (blocking), failing after 10 s.
    tokio::task::block_in_place(|| cluster.stop(leaving));
    let exited_at = Instant::now();
    let exit_took = exited_at - sigterm_at;
    println!("node {leaving} exited {exit_took:?} after SIGTERM with {WATCHERS} watchers attached");
    assert!(exit_took < EXIT_BOUND, "node {leaving} took {exit_took:?} to exit after SIGTERM");

    for (i, w) in watchers.into_iter().enumerate() {
        let end = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .unwrap_or_else(|_| panic!("watcher {i} still open after the node exited"))
            .expect("watcher task");
        let status = end.expect_err("a watch stream ends with a status, not silently");
        assert_eq!(status.code(), Code::Unavailable, "watcher {i}: {status:?}");
        let (reason, _) = error_info(&status).unwrap_or_else(|| panic!("watcher {i}: no error info: {status:?}"));
        assert_eq!(reason, ErrorReason::ShuttingDown.as_str(), "watcher {i}: {status:?}");
    }

    tokio::time::sleep(WRITES_AFTER_EXIT).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("writer");
    let attempts = attempts.lock().expect("attempts lock").clone();
    Outcome { exit_took, exited_at, sigterm_at, attempts }
}

/// The lines node `id` logged after it began shutting down must not say it became leader.
fn assert_no_leadership_after_sigterm(cluster: &Cluster, id: u64) {
    let log = cluster.log(id);
    let after = log
        .split_once("shutting down")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("node {id} never logged that it was shutting down:\n{}", cluster.log_tail(id)));
    assert!(!after.contains("this node is now the leader"), "node {id} became leader while shutting down:\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_follower_with_watchers_exits_promptly_and_costs_no_write() {
    let mut cluster = common::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let leaving = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != leaving).collect();
    let term_before = cluster.status(leader).await.expect("leader status").term;

    let out = sigterm_with_watchers(&mut cluster, leaving, &others).await;

    let failed: Vec<_> = out.attempts.iter().filter(|(_, e)| e.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} writes through nodes {others:?} failed while follower {leaving} stopped, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        out.attempts.iter().any(|(t, e)| *t > out.exited_at && e.is_none()),
        "no write succeeded after node {leaving} exited"
    );
    for id in &others {
        let s = cluster.status(*id).await.unwrap_or_else(|| panic!("node {id} answers its status"));
        assert_eq!(
            (s.leader_id, s.term),
            (leader, term_before),
            "node {id}: the leader or term moved while follower {leaving} stopped"
        );
    }
    assert_no_leadership_after_sigterm(&cluster, leaving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_with_watchers_exits_promptly_and_writes_resume_on_the_others() {
    let mut cluster = common::start(3).await;
    let leaving = cluster.wait_leader(Duration::from_secs(30)).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leaving).collect();
    let term_before = cluster.status(leaving).await.expect("leader status").term;

    let out = sigterm_with_watchers(&mut cluster, leaving, &others).await;

    let new_leader = cluster.wait_leader_among(&others, Duration::from_secs(10)).await;
    let term_after = cluster.status(new_leader).await.expect("new leader status").term;
    assert!(term_after > term_before, "a new leader ({new_leader}) in a new term: {term_before} -> {term_after}");

    let failed: Vec<_> = out.attempts.iter().filter(|(_, e)| e.is_some()).collect();
    if let Some((first, _)) = failed.first() {
        assert!(*first > out.sigterm_at, "a write failed before the SIGTERM: {:?}", failed.first());
    }
    let resumed_by = out.exited_at + REELECTION_BOUND;
    let late: Vec<_> = failed.iter().filter(|(t, _)| *t > resumed_by).collect();
    assert!(
        late.is_empty(),
        "{} writes failed more than {REELECTION_BOUND:?} after the leader exited, the last: {:?}",
        late.len(),
        late.last()
    );
    let last_failure = failed.last().map(|(t, _)| *t).unwrap_or(out.sigterm_at);
    assert!(
        out.attempts.iter().any(|(t, e)| *t > last_failure && e.is_none()),
        "writes did not succeed again after the leader stopped"
    );
    println!(
        "leader {leaving} exited after {:?}; {} failed write attempts, the last {:?} after SIGTERM; new leader {new_leader}",
        out.exit_took,
        failed.len(),
        last_failure - out.sigterm_at
    );
    assert_no_leadership_after_sigterm(&cluster, leaving);
}

/// A follower that loses its leader while it drains (a read held open keeps its API draining
/// for [`HELD_READ_MS`]; the leader is paused) must not run for leader: before the fix it
/// campaigned as soon as its election timer fired, and won whenever it fired before the third
/// node's (5 runs of 6 with the election switch and the vote refusal taken out). Now only the
/// third node can be elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_follower_that_loses_its_leader_does_not_run_for_leader() {
    // Writes and held reads time out after 2 s: long enough for election timers to fire.
    let mut cluster = Cluster::builder(3)
        .bin(env!("CARGO_BIN_EXE_vexil"))
        .runtime(Runtime::Mixed)
        .write_timeout_ms(HELD_READ_MS)
        .start()
        .await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let leaving = (1..=3).find(|id| *id != leader).expect("a follower");
    let applied = cluster.status(leaving).await.expect("status").applied_index;

    // A stale read of a revision that never comes waits the write timeout on the node.
    let mut flags = cluster.flags(leaving).await;
    let held = tokio::spawn(async move {
        let read = Some(ReadOptions { consistency: Consistency::Stale as i32, min_revision: applied + 1_000_000 });
        flags.get_flag(GetFlagRequest { namespace: "ns".into(), key: "k".into(), read }).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the read is held open");

    cluster.pause(leader);
    let sigterm_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop(leaving));
    let exit_took = sigterm_at.elapsed();
    cluster.resume(leader);
    println!("node {leaving} exited {exit_took:?} after SIGTERM, draining a held read with its leader paused");
    assert!(exit_took < EXIT_BOUND, "node {leaving} took {exit_took:?} to exit after SIGTERM");

    // The held read was answered (drained), not cut off.
    let status = held.await.expect("reader task").expect_err("nothing at that revision");
    let (reason, _) = error_info(&status).unwrap_or_else(|| panic!("no error info: {status:?}"));
    assert_eq!(reason, ErrorReason::ReadTimeout.as_str(), "{status:?}");
    assert_no_leadership_after_sigterm(&cluster, leaving);
}
