//! `regions`: measures the three-region compose setup (deploy/compose/regions.yml, started by
//! `benches/regions.sh`) from this host, standing in for a client in each region: a client in
//! `eu` dials its learner directly and the voters through the eu WAN proxy, as a process in that
//! region would.
//!
//! Reports, per region: read latency from the local learner (`stale`, `lease`, `linearizable`)
//! against reads from the leader across the WAN; write latency (through the region-aware client,
//! which sends to the local learner, which forwards to the leader); propagation from a write in
//! `us` to a live client in every region; and what happens when the voters' region is cut off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use vexil_client::admin::{AdminClient, Consistency, ReadOpts, WriteOpts};
use vexil_client::{Client, ConnectOptions, TlsOptions};
use vexil_testkit::{Compose, spec};

const NAMESPACE: &str = "bench";

/// Where each region's client reaches the nodes (regions.yml's fixed addresses).
struct Region {
    name: &'static str,
    /// Its own nodes, dialed directly.
    local: Vec<String>,
    /// The voters (node ids 1-3), as this region reaches them: directly in `us`, through the
    /// region's WAN proxy elsewhere.
    voters: [String; 3],
}

fn regions() -> Vec<Region> {
    let voters = |ip: &str| [1, 2, 3].map(|n| format!("{ip}:700{n}"));
    vec![
        Region {
            name: "us",
            local: vec!["10.213.1.10:7001".into(), "10.213.1.11:7002".into(), "10.213.1.12:7003".into()],
            voters: ["10.213.1.10:7001".into(), "10.213.1.11:7002".into(), "10.213.1.12:7003".into()],
        },
        Region { name: "eu", local: vec!["10.213.2.10:7004".into()], voters: voters("10.213.2.20") },
        Region { name: "ap", local: vec!["10.213.3.10:7005".into()], voters: voters("10.213.3.30") },
    ]
}

struct Bench {
    options: ConnectOptions,
    samples: usize,
}

impl Bench {
    fn admin(&self, endpoints: &[String]) -> Result<AdminClient> {
        Ok(AdminClient::new_with_options(endpoints.iter().cloned(), self.options.clone())?)
    }

    /// A region-aware admin client: the region's nodes first, the voters as the fallback.
    fn regional(&self, r: &Region) -> Result<AdminClient> {
        let options = self.options.clone().region(r.name, r.local.clone());
        Ok(AdminClient::new_with_options(r.voters.iter().cloned(), options)?)
    }

    async fn leader(&self) -> Result<u64> {
        let s = self.admin(&regions()[0].voters)?.cluster_status().await?;
        if s.leader_id == 0 {
            bail!("no leader");
        }
        Ok(s.leader_id)
    }

    /// `samples` reads of one flag through `client`, after warming its connection up.
    async fn reads(&self, client: &AdminClient) -> Result<Histogram<u64>> {
        let mut h = Histogram::<u64>::new(3)?;
        client.get_flag(NAMESPACE, "f").await?;
        for _ in 0..self.samples {
            let t = Instant::now();
            client.get_flag(NAMESPACE, "f").await?;
            h.record(t.elapsed().as_micros() as u64)?;
        }
        Ok(h)
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(what: &str, h: &Histogram<u64>) {
    println!("| {what} | {:.1} | {:.1} | {} |", ms(h, 0.5), ms(h, 0.99), h.len());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        args.insert(k.trim_start_matches("--").to_string(), v);
    }
    let get = |k: &str| args.get(k).cloned().with_context(|| format!("--{k} is required"));
    let ca = std::fs::read_to_string(get("ca-file")?)?;
    let token = std::fs::read_to_string(get("token-file")?)?;
    let compose = Compose::new(get("compose-file")?, get("project")?);
    let samples: usize = args.get("samples").map_or(Ok(300), |s| s.parse())?;
    // One certificate carries every node name and `localhost`; clients here dial addresses.
    let tls = TlsOptions::new(ca).domain_name("localhost");
    let b = Bench { options: ConnectOptions::new().token(token.trim()).tls(tls), samples };
    let regions = regions();

    let leader = b.leader().await?;
    println!("leader: node {leader} (us); {samples} samples per row; latencies in ms\n");
    let admin = b.admin(&regions[0].voters)?;
    if admin.get_flag(NAMESPACE, "f").await.is_err() {
        admin.create_flag(NAMESPACE, "f", &spec("0"), WriteOpts::reason("bench")).await?;
    }
    let leader_via = |r: &Region| r.voters[usize::try_from(leader - 1).unwrap_or(0)].clone();

    println!("| read | p50 | p99 | n |\n|---|---:|---:|---:|");
    for r in &regions {
        for (level, name) in
            [(Consistency::Stale, "stale"), (Consistency::Lease, "lease"), (Consistency::Linearizable, "linearizable")]
        {
            let read = ReadOpts { consistency: level, min_revision: 0 };
            let local = b.admin(&r.local[..1])?.with_read(read);
            row(
                &format!(
                    "{} client, {name}, from {}",
                    r.name,
                    if r.name == "us" { "a local voter" } else { "its learner" }
                ),
                &b.reads(&local).await?,
            );
            if r.name != "us" {
                let remote = b.admin(&[leader_via(r)])?.with_read(read);
                row(&format!("{} client, {name}, from the leader (us)", r.name), &b.reads(&remote).await?);
            }
        }
    }

    println!("\n| write (region-aware client: local node first) | p50 | p99 | n |\n|---|---:|---:|---:|");
    for r in &regions {
        let client = b.regional(r)?;
        let mut h = Histogram::<u64>::new(3)?;
        for i in 0..b.samples / 3 {
            let t = Instant::now();
            client.update_flag(NAMESPACE, "f", &spec(&i.to_string()), None, WriteOpts::reason("bench")).await?;
            h.record(t.elapsed().as_micros() as u64)?;
        }
        row(&format!("{} client", r.name), &h);
    }

    // Propagation: a live client per region (region-aware: its learner's watch stream).
    let mut clients = Vec::new();
    for r in &regions {
        let options = b.options.clone().region(r.name, r.local.clone());
        let client = Client::builder(r.voters.iter().cloned())
            .namespace(NAMESPACE)
            .connect_options(options)
            .init_timeout(Duration::from_secs(30))
            .start()?;
        if !client.wait_ready(Duration::from_secs(30)).await {
            bail!("the {} client got no data within 30 s", r.name);
        }
        clients.push((r.name, client));
    }
    // Each client's change events as they arrive: (when, revision).
    let mut arrivals = Vec::new();
    for (name, client) in &clients {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, u64)>::new()));
        let (mut events, log) = (client.subscribe(), seen.clone());
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => log.lock().expect("arrivals").push((Instant::now(), e.revision)),
                    // A missed event: a later one carries a higher revision, which counts.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        arrivals.push((*name, seen));
    }
    let writer = b.admin(&[regions[0].voters[usize::try_from(leader - 1)?].clone()])?;
    let mut writes = Vec::new();
    for i in 0..b.samples / 3 {
        let t = Instant::now();
        let w = writer
            .update_flag(NAMESPACE, "f", &spec(&(1_000_000 + i).to_string()), None, WriteOpts::reason("bench"))
            .await?;
        writes.push((t, w.revision));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "\n| propagation: write start in us → the region's live client has it | p50 | p99 | n |\n|---|---:|---:|---:|"
    );
    for (name, seen) in arrivals {
        let seen = seen.lock().expect("arrivals").clone();
        let mut h = Histogram::<u64>::new(3)?;
        for (t0, rev) in &writes {
            if let Some((t, _)) = seen.iter().find(|(_, r)| r >= rev) {
                h.record(t.duration_since(*t0).as_micros() as u64)?;
            }
        }
        row(&format!("{name} client"), &h);
    }
    drop(clients);

    // The voters' region cut off from the others: nobody outside it can vote.
    println!("\ncutting us off from eu and ap (the WAN proxies leave the us network) for 15 s");
    for wan in ["wan-eu", "wan-ap"] {
        compose.disconnect(wan, "us")?;
    }
    let eu = &regions[1];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stale =
        b.admin(&eu.local)?.with_attempts(1).with_read(ReadOpts { consistency: Consistency::Stale, min_revision: 0 });
    let lease =
        b.admin(&eu.local)?.with_attempts(1).with_read(ReadOpts { consistency: Consistency::Lease, min_revision: 0 });
    let (mut stale_ok, mut lease_ok, mut tries) = (0, 0, 0);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        tries += 1;
        stale_ok += u32::from(stale.get_flag(NAMESPACE, "f").await.is_ok());
        lease_ok += u32::from(
            tokio::time::timeout(Duration::from_secs(1), lease.get_flag(NAMESPACE, "f")).await.is_ok_and(|r| r.is_ok()),
        );
    }
    let write = tokio::time::timeout(
        Duration::from_secs(5),
        b.regional(eu)?.with_attempts(1).update_flag(NAMESPACE, "f", &spec("7"), None, WriteOpts::reason("bench")),
    )
    .await;
    println!(
        "eu learner during the cut: {stale_ok}/{tries} stale reads served, {lease_ok}/{tries} lease reads served; a write from eu: {}",
        match write {
            Ok(Ok(_)) => "applied".to_string(),
            Ok(Err(e)) => format!("refused ({e})"),
            Err(_) => "no answer within 5 s".to_string(),
        }
    );
    let (new_leader, us_status) = (b.leader().await, "the voters in us still elect among themselves");
    println!(
        "leader during the cut: {:?} ({us_status}; no node outside us can become leader: learners do not vote)",
        new_leader.ok()
    );
    for wan in ["wan-eu", "wan-ap"] {
        compose.docker(&[
            "network",
            "connect",
            "--ip",
            if wan == "wan-eu" { "10.213.1.20" } else { "10.213.1.30" },
            "--alias",
            if wan == "wan-eu" { "vexil-3" } else { "vexil-4" },
            &compose.network("us"),
            &compose.container(wan),
        ])?;
    }
    let healed = Instant::now();
    let eu_writer = b.regional(eu)?;
    loop {
        if eu_writer.update_flag(NAMESPACE, "f", &spec("8"), None, WriteOpts::reason("bench")).await.is_ok() {
            break;
        }
        if healed.elapsed() > Duration::from_secs(60) {
            bail!("writes from eu did not resume within 60 s of the link healing");
        }
    }
    println!("link healed: writes from eu resumed after {:.1} s", healed.elapsed().as_secs_f64());
    Ok(())
}
