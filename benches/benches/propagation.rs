//! Propagation latency: from a write's acknowledgement to its arrival in 100 connected
//! clients, against a real three-node cluster of release `vexil` processes on loopback.
//!
//! Each client runs in this process (one Tokio runtime) and records, per revision, the instant
//! its local copy changed (the change event, sent right after the new snapshot is published,
//! so evaluation already sees it). A writer updates one flag `WRITES` times, one at a time,
//! waiting for all 100 arrivals before the next write. Latency = arrival − acknowledgement; an
//! arrival can precede the acknowledgement (the push can beat the write's own reply), and
//! those count as 0 and are reported.
//!
//! Run: `cargo bench -p vexil-benches --bench propagation` (builds `vexil` in release first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vexil_client::{AdminClient, Client, UpdateKind, WriteOpts};
use vexil_testkit::{Cluster, bool_spec};

const CLIENTS: usize = 100;
const WRITES: usize = 200;

type Arrivals = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let cluster = Cluster::start(3).await;
    let admin = AdminClient::new(cluster.api_addrs()).expect("admin");
    let mut version = admin
        .create_flag("prop", "f", &bool_spec("on", "0"), WriteOpts::reason("bench"))
        .await
        .expect("create")
        .version;

    let arrivals: Arrivals = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = Client::builder(cluster.api_addrs()).namespace("prop").start().expect("client");
        let mut events = client.subscribe();
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                if e.kind == UpdateKind::Changes {
                    let at = Instant::now();
                    arrivals.lock().expect("arrivals").entry(e.revision).or_default().push(at);
                }
            }
        });
        clients.push(client);
    }
    for c in &clients {
        assert!(c.wait_synced(Duration::from_secs(20)).await, "a client did not sync: {:?}", c.status());
    }

    let mut latencies = Vec::with_capacity(WRITES * CLIENTS);
    let mut early = 0usize;
    let mut spread = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let w = admin
            .update_flag("prop", "f", &bool_spec("on", &format!("{i}")), Some(version), WriteOpts::reason("bench"))
            .await
            .expect("write");
        let acked = Instant::now();
        version = w.version;
        let deadline = acked + Duration::from_secs(10);
        loop {
            let done = arrivals.lock().expect("arrivals").get(&w.revision).map_or(0, Vec::len) == CLIENTS;
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "write {} did not reach every client within 10 s", w.revision);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let times = arrivals.lock().expect("arrivals").remove(&w.revision).expect("arrivals of the write");
        let last = times.iter().max().copied().unwrap_or(acked);
        spread.push(last.saturating_duration_since(acked));
        for t in times {
            if t < acked {
                early += 1;
            }
            latencies.push(t.saturating_duration_since(acked));
        }
        // Writes a few milliseconds apart, as a burst of human-made changes would not be.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    spread.sort();
    let nodes: std::collections::BTreeMap<String, usize> =
        clients.iter().filter_map(|c| c.status().endpoint).fold(Default::default(), |mut m, e| {
            *m.entry(e).or_default() += 1;
            m
        });
    println!(
        "propagation: {WRITES} writes x {CLIENTS} clients = {} arrivals; clients per node {nodes:?}",
        latencies.len()
    );
    println!(
        "  per arrival (ack -> client): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  ({} arrived before the ack)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        early
    );
    println!(
        "  per write (ack -> last of 100 clients): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&spread, 0.50),
        percentile(&spread, 0.99),
        spread[spread.len() - 1]
    );
    drop(clients);
    drop(cluster);
}
