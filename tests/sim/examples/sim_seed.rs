//! Runs one scenario with one seed and prints everything: the seed line, outcome counts, the
//! fault schedule, the operator's log and every violation.
//!
//! `cargo run -p vexil-sim --example sim_seed -- <scenario> <seed> [--history] [--watch]`

use std::collections::BTreeMap;

use vexil_sim::history::Ret;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("partitions");
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let Some(scenario) = vexil_sim::scenarios::by_name(name) else {
        eprintln!(
            "unknown scenario {name}: partitions, crashes, membership, membership_under_partition, snapshot_catchup, \
             freshness, determinism, change_control"
        );
        std::process::exit(2);
    };
    let r = vexil_sim::run(&scenario, seed);
    println!("{}\n{:?}", r.line, r.tally);
    for (t, a) in &r.schedule {
        println!("  fault {:>6} ms {a:?}", t.as_millis());
    }
    println!("  learner snapshots installed: {:?}", r.snapshot_installed);
    for line in &r.admin_log {
        println!("  operator {line}");
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for op in &r.history {
        if let Some((_, Ret::Unknown { reason })) = &op.ret {
            let what = if op.kind.is_write() { "write" } else { "read" };
            *reasons.entry(format!("{what} {reason}")).or_default() += 1;
        }
    }
    for (reason, n) in reasons {
        println!("  {n:5} {reason}");
    }
    for w in &r.watches {
        let switches =
            w.events.iter().filter(|(_, e)| matches!(e, vexil_sim::watchers::WatchEvent::Opened { .. })).count();
        println!("  watcher {}: {} events, {switches} streams", w.name, w.events.len());
        if args.iter().any(|a| a == "--watch") {
            for (t, e) in &w.events {
                println!("    {:>8}us {e:?}", t);
            }
        }
    }
    if args.iter().any(|a| a == "--history") {
        for op in &r.history {
            println!("{op}");
        }
        for call in &r.changes {
            println!("{call}");
        }
    }
    if let Some((from, to)) = args
        .iter()
        .position(|a| a == "--audit")
        .and_then(|i| Some((args.get(i + 1)?.parse::<u64>().ok()?, args.get(i + 2)?.parse::<u64>().ok()?)))
    {
        for (node, log) in r.finale.iter().flat_map(|f| f.audit.iter()) {
            match log {
                Ok(l) => println!("n{node} audit: {} entries", l.len()),
                Err(e) => println!("n{node} audit error: {e}"),
            }
            for e in log.iter().flatten().filter(|e| e.revision >= from && e.revision <= to) {
                println!(
                    "n{node} audit rev={} seq={} {} {} {} v={}",
                    e.revision, e.seq, e.action, e.key, e.request_id, e.version
                );
            }
        }
    }
    for v in &r.violations {
        println!("[{}] {}", v.checker, v.detail);
    }
    println!("inconclusive searches: {}; reproduce: {}", r.inconclusive, r.reproduce());
}
