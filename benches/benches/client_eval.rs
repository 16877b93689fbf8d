//! Local evaluation through the client library's public API: what a service pays per flag
//! check, including the lock-free snapshot load, the namespace and flag lookups, the clock
//! read and (for strings) copying the value out.
//!
//! The client is started from a disk cache holding the benchmark flags, with an endpoint that
//! refuses connections: the evaluation path is exactly the connected one (the data source does
//! not matter to it), and no cluster competes for the CPU. The flags are the ones of
//! `benches/benches/eval.rs` (static, three rules, fractional).
//!
//! - `single_thread/*`: one thread, criterion's median.
//! - `all_cores/*`: N threads (N = available parallelism) evaluate concurrently on one shared
//!   client; the figure is the wall time per evaluation in each thread while all N run, so
//!   throughput is N / figure.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use vexil_client::{Client, EvalContext};

const USERS: usize = 256;

fn flags() -> Vec<(&'static str, Value)> {
    vec![
        ("static", json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"})),
        (
            "three-rules",
            json!({"state": "ENABLED", "variants": {"beta": "b", "eu": "e", "adult": "a", "none": "n"}, "defaultVariant": "none",
            "targeting": {"if": [
                {"in": [{"var": "email"}, ["alice@example.com", "bob@example.com", "carol@example.com"]]}, "beta",
                {"==": [{"var": "country"}, "NL"]}, "eu",
                {">=": [{"var": "age"}, 21]}, "adult",
                null
            ]}}),
        ),
        (
            "fractional",
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                   "targeting": {"fractional": [["on", 50], ["off", 50]]}}),
        ),
    ]
}

/// A disk cache file holding the benchmark flags in namespace `bench`.
fn write_cache(path: &std::path::Path) {
    let records: Vec<Value> = flags()
        .into_iter()
        .map(|(key, spec)| {
            json!({"key": key, "spec": spec, "version": 1, "created_revision": 1, "mod_revision": 1,
                   "created_at_ms": 0, "updated_at_ms": 0, "updated_by": "bench"})
        })
        .collect();
    let file = json!({"format": vexil_client::disk_cache::FORMAT, "revision": 1, "written_at_ms": 0,
                      "namespaces": {"bench": {"flags": records}}});
    std::fs::write(path, serde_json::to_vec(&file).expect("json")).expect("write the cache");
}

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("user-{i:04}")).collect()
}

fn all_cores(c: &mut Criterion, client: &Client) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let users = Arc::new(users());
    let mut g = c.benchmark_group(format!("all_cores_{threads}_threads"));
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (name, key) in [("static", "static"), ("three_rules", "three-rules"), ("fractional", "fractional")] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Arc::new(Barrier::new(threads + 1));
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let client = client.clone();
                        let users = users.clone();
                        let start = start.clone();
                        std::thread::spawn(move || {
                            start.wait();
                            for i in 0..iters as usize {
                                let ctx = EvalContext::with_targeting_key(&users[(i + t) % USERS])
                                    .with("email", "dave@example.com")
                                    .with("country", "DE")
                                    .with("age", 37);
                                if key == "three-rules" {
                                    black_box(client.string_value(key, &ctx, "x"));
                                } else {
                                    black_box(client.bool_value(key, &ctx, false));
                                }
                            }
                        })
                    })
                    .collect();
                start.wait();
                let t0 = Instant::now();
                for h in handles {
                    h.join().expect("bench thread");
                }
                t0.elapsed()
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("flags.json");
    write_cache(&cache);
    let client = rt.block_on(async {
        Client::builder(["http://127.0.0.1:1"]).namespace("bench").disk_cache(&cache).start().expect("client")
    });
    assert!(client.status().ready, "the benchmark flags did not load");
    let users = users();
    let ctx_for = |u: &'static str| {
        EvalContext::with_targeting_key(u).with("email", "dave@example.com").with("country", "DE").with("age", 37)
    };
    assert_eq!(client.string_value("three-rules", &ctx_for("u"), "x"), "a", "the context must reach the third rule");

    let mut g = c.benchmark_group("single_thread");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let ctx = ctx_for("user-0001");
    g.bench_function("static/bool_value", |b| {
        b.iter(|| black_box(client.bool_value("static", black_box(&ctx), false)))
    });
    g.bench_function("three_rules/string_value", |b| {
        b.iter(|| black_box(client.string_value("three-rules", black_box(&ctx), "x")))
    });
    g.bench_function("three_rules/string_details", |b| {
        b.iter(|| black_box(client.string_details("three-rules", black_box(&ctx), "x")))
    });
    g.bench_function("three_rules/string_value+ctx", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            let ctx = EvalContext::with_targeting_key(&users[i % USERS])
                .with("email", "dave@example.com")
                .with("country", "DE")
                .with("age", 37);
            black_box(client.string_value("three-rules", &ctx, "x"))
        })
    });
    g.bench_function("fractional/bool_value", |b| {
        let ctxs: Vec<EvalContext<'_>> = users.iter().map(|u| EvalContext::with_targeting_key(u)).collect();
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(client.bool_value("fractional", &ctxs[i % USERS], false))
        })
    });
    g.finish();

    all_cores(c, &client);
    drop(client);
    drop(rt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
