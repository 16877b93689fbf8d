//! `compose-faults`: faults against a running three-node compose cluster while clients write and
//! read, then the checks that matter (run by `scripts/container-faults.sh`, which builds the
//! image and starts the cluster first).
//!
//! Clients: writers bump one counter flag each (`counter-W`, value in its `v` variant), every
//! write with its own request id and retried with it until acknowledged, so a write applies at
//! most once and a counter never goes back. Readers read a counter from one node at a time, at
//! each read level, and check what they got against what had been acknowledged:
//! - `linearizable`: at least the last value acknowledged before the read started;
//! - `lease`: at least the last value acknowledged a read lease (plus slack) before it started;
//! - `stale` with `min_revision` set to the revision of that last acknowledgement
//!   (read-your-writes): at least that value.
//!
//! Faults, in order (`docker kill` the leader, then start it; `docker pause` a follower, then
//! unpause; `docker network disconnect` a follower, then reconnect; restart all three). Then:
//! every acknowledged write is in every node's audit log exactly once, every node's counters
//! are at least the last acknowledged values, every node's audit chain verifies and the chains
//! end at the same head. Prints what it did and what it counted; exits 1 on any violation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use vexil_client::admin::{AdminClient, AuditFilter, Consistency, ReadOpts, WriteOpts};
use vexil_client::{ConnectOptions, TlsOptions};
use vexil_testkit::{Compose, verify_chain};

const NAMESPACE: &str = "faults";
const WRITERS: usize = 2;
/// Slack on the lease bound: the nodes and this program share one clock (one host), but a
/// reply takes time to reach us after the node read its state.
const LEASE_SLACK: Duration = Duration::from_millis(100);
/// One read's bound: a paused node holds the connection open and answers nothing.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long writers may take to get their last write acknowledged after the faults.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long to wait for a leader after a fault.
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    compose_file: String,
    project: String,
    network: String,
    services: Vec<String>,
    endpoints: Vec<String>,
    ca_file: String,
    token_file: String,
    lease: Duration,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut map = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            let key = k.strip_prefix("--").ok_or_else(|| anyhow!("unexpected argument {k:?}"))?.to_string();
            let value = it.next().ok_or_else(|| anyhow!("--{key} needs a value"))?;
            map.insert(key, value);
        }
        let mut take = |k: &str| map.remove(k).ok_or_else(|| anyhow!("--{k} is required"));
        let list = |v: String| v.split(',').map(str::to_string).collect::<Vec<_>>();
        let args = Args {
            compose_file: take("compose-file")?,
            project: take("project")?,
            network: take("network")?,
            services: list(take("services")?),
            endpoints: list(take("endpoints")?),
            ca_file: take("ca-file")?,
            token_file: take("token-file")?,
            lease: Duration::from_millis(take("lease-ms")?.parse().context("--lease-ms")?),
        };
        if let Some(k) = map.keys().next() {
            bail!("unknown option --{k}");
        }
        if args.services.len() != args.endpoints.len() {
            bail!("--services and --endpoints must list the same nodes in the same order");
        }
        Ok(args)
    }
}

/// What every part of the run shares.
struct World {
    args: Args,
    compose: Compose,
    options: ConnectOptions,
    started: Instant,
    /// Per writer: every acknowledged (when, value, revision), in order.
    acked: Vec<Mutex<Vec<(Instant, u64, u64)>>>,
    stop: AtomicBool,
    counts: Counts,
    violations: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Counts {
    writes_acked: AtomicU64,
    write_retries: AtomicU64,
    reads: [AtomicU64; 3],
    reads_refused: [AtomicU64; 3],
}

const LEVELS: [(Consistency, &str); 3] = [
    (Consistency::Linearizable, "linearizable"),
    (Consistency::Lease, "lease"),
    (Consistency::Stale, "stale+min_revision"),
];

impl World {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn client(&self, endpoints: &[String]) -> Result<AdminClient> {
        Ok(AdminClient::new_with_options(endpoints.iter().cloned(), self.options.clone())?)
    }

    fn node_client(&self, i: usize) -> Result<AdminClient> {
        Ok(self.client(std::slice::from_ref(&self.args.endpoints[i]))?.with_attempts(1))
    }

    fn violation(&self, what: String) {
        self.say(format!("VIOLATION: {what}"));
        self.violations.lock().expect("violations").push(what);
    }

    /// The last value of writer `w` acknowledged at or before `at`, with its revision.
    fn acked_by(&self, w: usize, at: Instant) -> (u64, u64) {
        let acked = self.acked[w].lock().expect("acked");
        acked.iter().rev().find(|(t, _, _)| *t <= at).map_or((0, 0), |(_, v, r)| (*v, *r))
    }

    /// The node index (0-based) every answering node names as leader, once they agree and it
    /// answers itself (nodes that have not yet noticed a killed leader still name it).
    async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let mut named = BTreeSet::new();
            let mut answering = BTreeSet::new();
            for i in 0..self.args.endpoints.len() {
                if let Ok(Ok(s)) = tokio::time::timeout(READ_TIMEOUT, self.node_client(i)?.cluster_status()).await {
                    named.insert(s.leader_id);
                    answering.insert(s.node_id);
                }
            }
            if let (1, Some(&id)) = (named.len(), named.first())
                && answering.contains(&id)
            {
                return Ok(usize::try_from(id - 1)?);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {LEADER_TIMEOUT:?} (named {named:?} by nodes {answering:?})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A counter's definition: the testkit's flag with the value as its metadata tag.
fn spec(v: u64) -> String {
    vexil_testkit::spec(&v.to_string())
}

fn value_of(spec_json: &str) -> Result<u64> {
    let spec: serde_json::Value = serde_json::from_str(spec_json)?;
    let tag = spec["metadata"]["tag"].as_str().ok_or_else(|| anyhow!("no counter in {spec_json}"))?;
    Ok(tag.parse()?)
}

async fn writer(world: Arc<World>, w: usize) -> Result<()> {
    let client = world.client(&world.args.endpoints)?;
    let key = format!("counter-{w}");
    let mut v = 0;
    while !world.stop.load(Ordering::Relaxed) {
        v += 1;
        let opts = WriteOpts::reason("fault test").with_request_id(format!("{}-w{w}-{v}", world.args.project));
        let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            match client.update_flag(NAMESPACE, &key, &spec(v), None, opts.clone()).await {
                Ok(r) => {
                    world.acked[w].lock().expect("acked").push((Instant::now(), v, r.revision));
                    world.counts.writes_acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    // The outcome is unknown: only the same request id may be sent again.
                    world.counts.write_retries.fetch_add(1, Ordering::Relaxed);
                    if world.stop.load(Ordering::Relaxed) && Instant::now() > drain_deadline {
                        bail!("writer {w}: write {v} never acknowledged: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("writer {w}: write {v} refused: {e}"),
            }
        }
    }
    Ok(())
}

async fn reader(world: Arc<World>, level: usize) -> Result<()> {
    let (consistency, name) = LEVELS[level];
    let nodes = world.args.endpoints.len();
    let mut turn = 0usize;
    while !world.stop.load(Ordering::Relaxed) {
        let (node, w) = (turn % nodes, turn % WRITERS);
        turn += 1;
        let start = Instant::now();
        let bound_at = match consistency {
            Consistency::Lease => start.checked_sub(world.args.lease + LEASE_SLACK).unwrap_or(world.started),
            _ => start,
        };
        let (floor, revision) = world.acked_by(w, bound_at);
        let min_revision = if consistency == Consistency::Stale { revision } else { 0 };
        let client = world.node_client(node)?.with_read(ReadOpts { consistency, min_revision });
        let got = tokio::time::timeout(READ_TIMEOUT, client.get_flag(NAMESPACE, &format!("counter-{w}"))).await;
        world.counts.reads[level].fetch_add(1, Ordering::Relaxed);
        match got {
            Ok(Ok(r)) => {
                let v = value_of(&r.value.spec_json)?;
                if v < floor {
                    world.violation(format!(
                        "{name} read of counter-{w} on {} returned {v}, but {floor} was acknowledged before it \
                         allows (revision {revision})",
                        world.args.services[node]
                    ));
                }
            }
            // Refusing is always allowed: a node cut off, paused, without a lease or a leader.
            Ok(Err(_)) | Err(_) => {
                world.counts.reads_refused[level].fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// The faults, each followed by time for the cluster to notice and recover.
async fn nemesis(world: &World) -> Result<()> {
    let c = &world.compose;
    let svc = |i: usize| world.args.services[i].as_str();
    let follower = |leader: usize, nth: usize| (0..world.args.services.len()).filter(|i| *i != leader).nth(nth);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let leader = world.leader().await?;
    world.say(format!("docker kill {} (the leader, node {})", svc(leader), leader + 1));
    c.kill(svc(leader))?;
    let next = world.leader().await?;
    world.say(format!("node {} leads; docker start {} after 5 s", next + 1, svc(leader)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.start(svc(leader))?;
    tokio::time::sleep(Duration::from_secs(8)).await;

    let leader = world.leader().await?;
    let paused = follower(leader, 0).context("a follower")?;
    world.say(format!("docker pause {} (a follower) for 8 s", svc(paused)));
    c.pause(svc(paused))?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.unpause(svc(paused))?;
    world.say(format!("docker unpause {}", svc(paused)));
    tokio::time::sleep(Duration::from_secs(6)).await;

    let leader = world.leader().await?;
    let cut = follower(leader, 1).context("a second follower")?;
    world.say(format!("docker network disconnect {} (a follower) for 8 s", svc(cut)));
    c.disconnect(svc(cut), &world.args.network)?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.connect(svc(cut), &world.args.network)?;
    world.say(format!("docker network connect {}", svc(cut)));
    tokio::time::sleep(Duration::from_secs(8)).await;

    world.say("docker-compose restart (all three nodes)");
    c.restart_all()?;
    let leader = world.leader().await?;
    world.say(format!("node {} leads after the restart", leader + 1));
    tokio::time::sleep(Duration::from_secs(8)).await;
    Ok(())
}

/// Every node: each acknowledged write once in its audit log, counters at least the last
/// acknowledged values, a chain that verifies, and the same head as the others.
async fn verify(world: &World) -> Result<()> {
    let mut logs = Vec::new();
    let last: Vec<(u64, u64)> = (0..WRITERS).map(|w| world.acked_by(w, Instant::now())).collect();
    let through = last.iter().map(|(_, r)| *r).max().unwrap_or(0);
    for (i, service) in world.args.services.iter().enumerate() {
        let client = world
            .node_client(i)?
            .with_attempts(10)
            .with_read(ReadOpts { consistency: Consistency::Stale, min_revision: through });
        for (w, (v, _)) in last.iter().enumerate() {
            let got = value_of(&client.get_flag(NAMESPACE, &format!("counter-{w}")).await?.value.spec_json)?;
            if got < *v {
                world.violation(format!("{service}: counter-{w} is {got}, but {v} was acknowledged"));
            }
        }
        let log = client.list_audit(&AuditFilter::default()).await?.value;
        verify_chain(&log).map_err(|e| anyhow!("{service}: the audit chain does not verify: {e:?}"))?;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for e in log.iter().filter(|e| e.namespace == NAMESPACE) {
            *seen.entry(e.request_id.as_str()).or_default() += 1;
        }
        for (w, acked) in world.acked.iter().enumerate() {
            for (_, v, _) in acked.lock().expect("acked").iter() {
                let id = format!("{}-w{w}-{v}", world.args.project);
                match seen.get(id.as_str()) {
                    Some(1) => {}
                    Some(n) => world.violation(format!("{service}: acknowledged write {id} applied {n} times")),
                    None => world.violation(format!("{service}: acknowledged write {id} is missing")),
                }
            }
        }
        world.say(format!(
            "{service}: {} audit entries, chain verified, every acknowledged write present once",
            log.len()
        ));
        logs.push(log);
    }
    // Nodes may differ in how far they applied since (the verify itself reads only); compare
    // the chains at the shortest one's end.
    let shortest = logs.iter().map(Vec::len).min().unwrap_or(0);
    let at_shortest: BTreeSet<_> =
        logs.iter().filter_map(|log| log.get(shortest.saturating_sub(1))).map(|e| e.hash.clone()).collect();
    if at_shortest.len() > 1 {
        world.violation(format!("the audit chains differ at entry {shortest}: {at_shortest:?}"));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let ca = std::fs::read_to_string(&args.ca_file).with_context(|| format!("reading {}", args.ca_file))?;
    let token = std::fs::read_to_string(&args.token_file).with_context(|| format!("reading {}", args.token_file))?;
    let options = ConnectOptions::default().token(token.trim()).tls(TlsOptions::new(ca));
    let world = Arc::new(World {
        compose: Compose::new(&args.compose_file, &args.project),
        args,
        options,
        started: Instant::now(),
        acked: (0..WRITERS).map(|_| Mutex::new(Vec::new())).collect(),
        stop: AtomicBool::new(false),
        counts: Counts::default(),
        violations: Mutex::new(Vec::new()),
    });
    let leader = world.leader().await?;
    world.say(format!("cluster up, node {} leads; {WRITERS} writers and one reader per level start", leader + 1));
    let admin = world.client(&world.args.endpoints)?;
    for w in 0..WRITERS {
        admin.create_flag(NAMESPACE, &format!("counter-{w}"), &spec(0), WriteOpts::reason("fault test")).await?;
    }
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(world.clone(), w))).collect();
    let readers: Vec<_> = (0..LEVELS.len()).map(|l| tokio::spawn(reader(world.clone(), l))).collect();

    let faults = nemesis(&world).await;
    world.stop.store(true, Ordering::Relaxed);
    world.say("faults done; clients stop (writers finish their write in flight)");
    for task in writers.into_iter().chain(readers) {
        task.await??;
    }
    faults?;
    world.leader().await?;
    verify(&world).await?;

    let c = &world.counts;
    world.say(format!(
        "writes: {} acknowledged, {} sent again with their request id after the client's retries ran out",
        c.writes_acked.load(Ordering::Relaxed),
        c.write_retries.load(Ordering::Relaxed)
    ));
    for (l, (_, name)) in LEVELS.iter().enumerate() {
        world.say(format!(
            "{name} reads: {} ({} refused or timed out, allowed)",
            c.reads[l].load(Ordering::Relaxed),
            c.reads_refused[l].load(Ordering::Relaxed)
        ));
    }
    let violations = world.violations.lock().expect("violations").clone();
    if violations.is_empty() {
        world.say("no violations");
        Ok(())
    } else {
        bail!("{} violations:\n{}", violations.len(), violations.join("\n"))
    }
}
