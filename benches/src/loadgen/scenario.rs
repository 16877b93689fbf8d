//! The scenarios, each bounded by its duration: writes, reads per level on the leader and on a
//! follower, watch propagation, and failover after `kill -9` of the leader. Generic over the
//! [`Backend`], so both systems run exactly the same loops.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, Level, NodeStatus};
use super::cluster::Cluster;
use super::limits::{
    CLUSTER_READY_TIMEOUT, CONNECTIONS_PER_NODE, ERROR_BACKOFF, FAILOVER_REQUEST_TIMEOUT, FAILOVER_SETTLE,
    FAILOVER_WAIT_MAX, FAILOVER_WRITERS, REQUEST_TIMEOUT, WATCH_DRAIN, WATCH_WRITE_INTERVAL,
};
use super::report::{Row, histogram};
use super::workload::{Rng, flag_json, keys};

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Write,
    Read,
    Watch,
    Failover,
}

/// How long and how wide each scenario runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub warmup: Duration,
    pub clients: Vec<usize>,
    pub scenarios: Vec<Scenario>,
    pub failover_repeats: usize,
}

type OpFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
/// One client's operation number `seq`, given the client's index and random generator.
type Op = Arc<dyn Fn(usize, u64, &mut Rng) -> OpFuture + Send + Sync>;

/// What one load run measured: latencies of the operations started after the warm-up, the
/// errors among them, the measured seconds, the first error seen and the servers' CPU time
/// over the measured window.
struct Load {
    latencies: Histogram<u64>,
    errors: u64,
    seconds: f64,
    first_error: Option<String>,
    server_cpu: Option<Duration>,
}

/// User + system CPU time of process `pid`, all threads, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // state is field 3, utime 14 and stime 15, in clock ticks of USER_HZ, which Linux fixes at
    // 100 for user space.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A running cluster of one system, with connections to each of its nodes.
pub struct Bench<B: Backend> {
    cluster: Cluster,
    pools: Vec<Vec<B::Conn>>,
    keys: Arc<Vec<String>>,
}

fn nonce() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn progress(row: &Row) {
    eprintln!(
        "  {:<8} {:<9} {:<13} {:<9} clients={:<4} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  errors {}",
        row.system,
        row.scenario,
        row.level.as_deref().unwrap_or("-"),
        row.target.as_deref().unwrap_or("-"),
        row.clients,
        row.ops_per_s,
        row.p50_ms,
        row.p99_ms,
        row.p999_ms,
        row.errors
    );
}

impl<B: Backend> Bench<B> {
    /// Connects to every node of a started cluster, waits for a leader and seeds the keys.
    pub async fn open(cluster: Cluster) -> anyhow::Result<Bench<B>> {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        let mut pools = Vec::new();
        for i in 0..cluster.len() {
            let mut pool = Vec::new();
            while pool.len() < CONNECTIONS_PER_NODE {
                match B::connect(&cluster.endpoint(i), cluster.security()).await {
                    Ok(conn) => pool.push(conn),
                    Err(e) if Instant::now() > deadline => {
                        anyhow::bail!("{} node {} is not reachable: {e:#}\n{}", B::NAME, i + 1, cluster.log_tail(i))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            pools.push(pool);
        }
        let bench = Bench { cluster, pools, keys: Arc::new(keys()) };
        let leader = bench.wait_leader(None).await?;
        let all: Vec<B::Conn> = bench.pools.iter().flatten().cloned().collect();
        B::prepare(&bench.pools[leader][0], &all).await?;
        B::seed(&bench.pools[leader][0], &bench.keys, &flag_json(0)).await?;
        Ok(bench)
    }

    /// The cluster under test.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    async fn statuses(&self, skip: Option<usize>) -> Vec<Option<NodeStatus>> {
        let mut out = Vec::new();
        for (i, pool) in self.pools.iter().enumerate() {
            if Some(i) == skip {
                out.push(None);
                continue;
            }
            let status = tokio::time::timeout(Duration::from_secs(1), B::status(&pool[0])).await;
            out.push(status.ok().and_then(Result::ok));
        }
        out
    }

    /// Waits until every running node (all but `skip`) names the same leader; returns its index.
    pub async fn wait_leader(&self, skip: Option<usize>) -> anyhow::Result<usize> {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            let statuses = self.statuses(skip).await;
            let running: Vec<&NodeStatus> =
                statuses.iter().enumerate().filter(|(i, _)| Some(*i) != skip).filter_map(|(_, s)| s.as_ref()).collect();
            let expected = self.pools.len() - usize::from(skip.is_some());
            if running.len() == expected
                && let Some(first) = running.first()
                && first.leader_id != 0
                && running.iter().all(|s| s.leader_id == first.leader_id)
                && let Some(index) = statuses.iter().position(|s| s.is_some_and(|s| s.self_id == first.leader_id))
            {
                return Ok(index);
            }
            if Instant::now() > deadline {
                anyhow::bail!("{}: no agreed leader within {CLUSTER_READY_TIMEOUT:?}: {statuses:?}", B::NAME);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `op` from `clients` concurrent clients for the warm-up plus the duration.
    async fn load(&self, settings: &Settings, clients: usize, op: Op) -> Load {
        let measure_from = Instant::now() + settings.warmup;
        let end = measure_from + settings.duration;
        let seed = nonce();
        let mut tasks = Vec::new();
        for client in 0..clients {
            let op = op.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed.wrapping_add(client as u64));
                let mut h = histogram();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut seq = 0u64;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(REQUEST_TIMEOUT, op(client, seq, &mut rng)).await;
                    let failed = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(format!("{e:#}")),
                        Err(_) => Some(format!("timed out after {REQUEST_TIMEOUT:?}")),
                    };
                    if t0 >= measure_from {
                        match &failed {
                            None => h.saturating_record(t0.elapsed().as_micros() as u64),
                            Some(_) => errors += 1,
                        }
                    }
                    if let Some(e) = failed {
                        first_error.get_or_insert(e);
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                    seq += 1;
                }
                (h, errors, first_error)
            }));
        }
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu_from = self.server_cpu();
        let mut all = histogram();
        let mut errors = 0;
        let mut first_error = None;
        for task in tasks {
            if let Ok((h, e, fe)) = task.await {
                let _ = all.add(&h);
                errors += e;
                if first_error.is_none() {
                    first_error = fe;
                }
            }
        }
        let seconds = Instant::now().saturating_duration_since(measure_from).as_secs_f64();
        let server_cpu = cpu_from.zip(self.server_cpu()).map(|(from, to)| to.saturating_sub(from));
        Load { latencies: all, errors, seconds, first_error, server_cpu }
    }

    /// CPU time used so far by all the cluster's server processes together, or None when one
    /// cannot be read (it was killed, or this is not Linux).
    fn server_cpu(&self) -> Option<Duration> {
        let mut total = Duration::ZERO;
        for i in 0..self.cluster.len() {
            total += process_cpu(self.cluster.pid(i)?)?;
        }
        Some(total)
    }

    fn row(&self, scenario: &str, clients: usize, outcome: Load) -> Row {
        let Load { latencies: h, errors, seconds, first_error, server_cpu } = outcome;
        let mut row = Row::from_histogram(B::NAME, scenario, &h, errors, seconds);
        row.clients = clients;
        if let Some(cpu) = server_cpu
            && !h.is_empty()
        {
            row.server_cpu_us_per_op = Some(cpu.as_secs_f64() * 1e6 / h.len() as f64);
        }
        if let Some(e) = first_error {
            row.note = format!("first error: {e}");
            eprintln!("    {}", row.note);
        }
        row
    }

    fn write_op(&self, node: usize) -> Op {
        let pool = self.pools[node].clone();
        let keys = self.keys.clone();
        let run = nonce();
        Arc::new(move |client, seq, rng| {
            let conn = pool[client % pool.len()].clone();
            let key = keys[rng.below(keys.len())].clone();
            let value = flag_json(client as u64 * 10_000_000 + seq);
            let request_id = format!("lg-{run:x}-{client}-{seq}");
            Box::pin(async move { B::write(&conn, &key, value, request_id).await.map(|_| ()) })
        })
    }

    fn read_op(&self, node: usize, level: Level) -> Op {
        let pool = self.pools[node].clone();
        let keys = self.keys.clone();
        Arc::new(move |client, _seq, rng| {
            let conn = pool[client % pool.len()].clone();
            let key = keys[rng.below(keys.len())].clone();
            Box::pin(async move { B::read(&conn, &key, level).await })
        })
    }

    /// Runs the selected scenarios; returns one row per run.
    pub async fn run(&mut self, settings: &Settings) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        if settings.scenarios.contains(&Scenario::Write) {
            for &clients in &settings.clients {
                let leader = self.wait_leader(None).await?;
                let outcome = self.load(settings, clients, self.write_op(leader)).await;
                let mut row = self.row("write", clients, outcome);
                row.target = Some("leader".into());
                progress(&row);
                rows.push(row);
            }
        }
        if settings.scenarios.contains(&Scenario::Read) {
            let leader = self.wait_leader(None).await?;
            let follower = (leader + 1) % self.pools.len();
            for &level in B::LEVELS {
                for (target, node) in [("leader", leader), ("follower", follower)] {
                    for &clients in &settings.clients {
                        let outcome = self.load(settings, clients, self.read_op(node, level)).await;
                        let mut row = self.row("read", clients, outcome);
                        row.level = Some(level.name().into());
                        row.target = Some(target.into());
                        progress(&row);
                        rows.push(row);
                    }
                }
            }
        }
        if settings.scenarios.contains(&Scenario::Watch) {
            for row in self.watch(settings).await? {
                progress(&row);
                rows.push(row);
            }
        }
        if settings.scenarios.contains(&Scenario::Failover) && settings.failover_repeats > 0 {
            let row = self.failover(settings).await?;
            progress(&row);
            rows.push(row);
        }
        Ok(rows)
    }

    /// One writer on the leader, one write every `WATCH_WRITE_INTERVAL`; a watcher on the
    /// leader and one on a follower. Latency: from the write's acknowledgement (the writer
    /// receiving the reply) to the watcher receiving the event, both on this process's
    /// monotonic clock. An event that arrives before the acknowledgement counts as 0.
    async fn watch(&self, settings: &Settings) -> anyhow::Result<Vec<Row>> {
        let leader = self.wait_leader(None).await?;
        let follower = (leader + 1) % self.pools.len();
        let mut watchers = Vec::new();
        for (target, node) in [("leader", leader), ("follower", follower)] {
            let conn = self.pools[node][CONNECTIONS_PER_NODE - 1].clone();
            let (ready_tx, ready_rx) = oneshot::channel();
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move { B::watch(&conn, ready_tx, tx).await });
            tokio::time::timeout(Duration::from_secs(10), ready_rx)
                .await
                .map_err(|_| anyhow::anyhow!("the watch on the {target} did not start"))?
                .map_err(|_| anyhow::anyhow!("the watch on the {target} failed to start"))?;
            watchers.push((target, task, rx));
        }

        let conn = self.pools[leader][0].clone();
        let measure_from = Instant::now() + settings.warmup;
        let end = measure_from + settings.duration;
        let run = nonce();
        let mut acks: Vec<(u64, Instant)> = Vec::new();
        let mut write_errors = 0u64;
        let mut seq = 0u64;
        let mut rng = Rng::new(run);
        while Instant::now() < end {
            let t0 = Instant::now();
            let key = &self.keys[rng.below(self.keys.len())];
            let request_id = format!("lg-watch-{run:x}-{seq}");
            match tokio::time::timeout(REQUEST_TIMEOUT, B::write(&conn, key, flag_json(seq), request_id)).await {
                Ok(Ok(revision)) if t0 >= measure_from => acks.push((revision, Instant::now())),
                Ok(Ok(_)) => {}
                _ => write_errors += 1,
            }
            seq += 1;
            tokio::time::sleep(WATCH_WRITE_INTERVAL).await;
        }
        let seconds = Instant::now().saturating_duration_since(measure_from).as_secs_f64();
        tokio::time::sleep(WATCH_DRAIN).await;

        let mut rows = Vec::new();
        for (target, task, mut rx) in watchers {
            task.abort();
            let mut received: HashMap<u64, Instant> = HashMap::new();
            while let Ok((revision, at)) = rx.try_recv() {
                received.entry(revision).or_insert(at);
            }
            let mut h = histogram();
            let (mut missing, mut early) = (0u64, 0u64);
            for (revision, acked) in &acks {
                match received.get(revision) {
                    Some(at) if at < acked => {
                        early += 1;
                        h.saturating_record(0);
                    }
                    Some(at) => h.saturating_record(at.duration_since(*acked).as_micros() as u64),
                    None => missing += 1,
                }
            }
            let mut row = Row::from_histogram(B::NAME, "watch", &h, missing + write_errors, seconds);
            row.clients = 1;
            row.target = Some(target.into());
            row.note = format!(
                "{} writes, {early} events received before the writer's acknowledgement, {missing} missing",
                acks.len()
            );
            rows.push(row);
        }
        Ok(rows)
    }

    /// `kill -9` of the leader while `FAILOVER_WRITERS` writers send writes to a follower;
    /// the time from the kill to the first acknowledged write that was sent after the kill.
    /// Repeated, restarting the killed member (and letting the cluster settle) in between.
    async fn failover(&mut self, settings: &Settings) -> anyhow::Result<Row> {
        let mut samples_ms = Vec::new();
        let mut failures = 0u64;
        for rep in 0..settings.failover_repeats {
            let leader = self.wait_leader(None).await?;
            let target = (leader + 1) % self.pools.len();
            let pool = self.pools[target].clone();
            let killed_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
            let first_ack: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
            let stop = Arc::new(AtomicBool::new(false));
            let keys = self.keys.clone();
            let run = nonce();
            let mut writers = Vec::new();
            for w in 0..FAILOVER_WRITERS {
                let conn = pool[w % pool.len()].clone();
                let (killed_at, first_ack, stop, keys) =
                    (killed_at.clone(), first_ack.clone(), stop.clone(), keys.clone());
                writers.push(tokio::spawn(async move {
                    let mut rng = Rng::new(run.wrapping_add(w as u64));
                    let hard_stop = Instant::now() + FAILOVER_WAIT_MAX + Duration::from_secs(5);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Acquire) && Instant::now() < hard_stop {
                        let t0 = Instant::now();
                        let key = keys[rng.below(keys.len())].clone();
                        let request_id = format!("lg-fo-{run:x}-{w}-{seq}");
                        let write = B::write(&conn, &key, flag_json(seq), request_id);
                        seq += 1;
                        match tokio::time::timeout(FAILOVER_REQUEST_TIMEOUT, write).await {
                            Ok(Ok(_)) => {
                                let acked = Instant::now();
                                if killed_at.get().is_some_and(|k| t0 >= *k) {
                                    let mut first = first_ack.lock().expect("first-ack lock poisoned");
                                    if first.is_none_or(|f| acked < f) {
                                        *first = Some(acked);
                                    }
                                }
                            }
                            _ => tokio::time::sleep(ERROR_BACKOFF).await,
                        }
                    }
                }));
            }
            // Let the writers reach a steady state before the kill.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let kill_instant = Instant::now();
            let _ = killed_at.set(kill_instant);
            self.cluster.kill(leader)?;
            let deadline = kill_instant + FAILOVER_WAIT_MAX;
            let acked = loop {
                if let Some(at) = *first_ack.lock().expect("first-ack lock poisoned") {
                    break Some(at);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            stop.store(true, Ordering::Release);
            for w in writers {
                let _ = w.await;
            }
            match acked {
                Some(at) => {
                    let ms = at.duration_since(kill_instant).as_secs_f64() * 1000.0;
                    eprintln!(
                        "    failover {}: leader {} killed, next write acknowledged after {ms:.0} ms",
                        rep + 1,
                        leader + 1
                    );
                    samples_ms.push(ms);
                }
                None => {
                    eprintln!("    failover {}: no write acknowledged within {FAILOVER_WAIT_MAX:?}", rep + 1);
                    failures += 1;
                }
            }
            self.cluster.restart(leader)?;
            self.wait_leader(None).await?;
            tokio::time::sleep(FAILOVER_SETTLE).await;
        }
        let mut sorted = samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.is_empty() {
            0.0
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        let mut h = histogram();
        for s in &samples_ms {
            h.saturating_record((s * 1000.0) as u64);
        }
        let mut row = Row::from_histogram(B::NAME, "failover", &h, failures, 0.0);
        row.clients = FAILOVER_WRITERS;
        row.p50_ms = median;
        row.max_ms = sorted.last().copied().unwrap_or(0.0);
        row.note =
            format!("median of {} kills; min {:.0} ms", samples_ms.len(), sorted.first().copied().unwrap_or(0.0));
        row.samples_ms = samples_ms;
        Ok(row)
    }
}
