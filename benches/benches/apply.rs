//! The storage write path, below Raft and the network: applying committed entries to the
//! RocksDB state machine, and appending entries to the RocksDB log with the WAL sync.
//!
//! - `apply/N`: `StateMachineStore` through openraft's `RaftStateMachine::apply`, N entries per
//!   call; each entry is an `UpdateFlag` of a ~300-byte definition (over 1,000 flags) with a
//!   request id, so one entry = one flag change + one hash-chained audit entry + one
//!   deduplication record, committed as one RocksDB write batch (WAL on, not synced), exactly
//!   as a node applies. Measured after two generations of deduplication records, so the table
//!   is as full as it gets and one generation was already dropped by a range deletion.
//!   `apply_without_request_id/N`: the same without request ids.
//! - `append/N` and `append_unsynced/N`: what `LogStore::append` does for a batch of N entries
//!   (bincode-encode each entry, one write batch into the `raft_log` column family, then
//!   `flush_wal(true)`, the sync that must finish before openraft may count the entries),
//!   called directly: openraft 0.9's `LogFlushed` callback cannot be built outside openraft, so
//!   `LogStore::append` itself cannot be called here. `append_unsynced` omits the sync, to show
//!   what the sync costs.
//!
//! Run: `cargo bench -p vexil-benches --bench apply`. Figures in `benches/README.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openraft::EntryPayload;
use openraft::storage::RaftStateMachine;
use rocksdb::WriteBatch;
use vexil_benches::loadgen::vexil::document;
use vexil_benches::loadgen::workload::{flag_json, keys};
use vexil_raft_store::db::{CF_RAFT_LOG, cf};
use vexil_raft_store::types::Entry;
use vexil_raft_store::{Command, Request, codec};

const BATCHES: [u64; 2] = [1, 64];

fn entry(index: u64, command: Command, with_id: bool) -> Entry {
    Entry {
        log_id: openraft::testing::log_id(1, 1, index),
        payload: EntryPayload::Normal(Request {
            request_id: if with_id { format!("bench-{index}") } else { String::new() },
            actor: "bench".into(),
            reason: String::new(),
            time_ms: 1_700_000_000_000 + index as i64,
            command,
        }),
    }
}

fn update(index: u64, keys: &[String], with_id: bool) -> Entry {
    let key = keys[(index as usize * 7919) % keys.len()].clone();
    entry(
        index,
        Command::UpdateFlag { namespace: "bench".into(), key, spec_json: flag_json(index), expected_version: None },
        with_id,
    )
}

fn bench_apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let keys = keys();
    let (_log, mut sm) = rt.block_on(async { vexil_raft_store::open(dir.path()) }).expect("the store opens");
    let seed = entry(
        1,
        Command::ApplyNamespace { namespace: "bench".into(), document_json: document(&keys, |_| flag_json(0)) },
        false,
    );
    rt.block_on(sm.apply(vec![seed])).expect("the seed applies");
    let mut next = 2u64;

    // Without request ids first: no deduplication record. Then with request ids, after two
    // generations of them (DEDUP_GENERATION_REQUESTS each), as on any node that has taken that
    // many writes: two generations stored, the first dropped, every lookup reads two.
    for (name, with_id) in [("apply_without_request_id", false), ("apply", true)] {
        if with_id {
            let full = next + 2 * vexil_raft_store::limits::DEDUP_GENERATION_REQUESTS;
            while next <= full {
                let entries: Vec<Entry> = (next..next + 1000).map(|i| update(i, &keys, true)).collect();
                next += 1000;
                rt.block_on(sm.apply(entries)).expect("the prefill applies");
            }
        }
        let mut group = c.benchmark_group(name);
        group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
        for batch in BATCHES {
            group.throughput(Throughput::Elements(batch));
            group.bench_function(format!("{batch}"), |b| {
                b.iter_batched(
                    || {
                        let entries: Vec<Entry> = (next..next + batch).map(|i| update(i, &keys, with_id)).collect();
                        next += batch;
                        entries
                    },
                    |entries| black_box(rt.block_on(sm.apply(entries)).expect("apply succeeds")),
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = vexil_raft_store::db::open(&dir.path().join("db")).expect("the database opens");
    let keys = keys();
    let mut next = 1u64;

    let mut group = c.benchmark_group("log");
    group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for sync in [true, false] {
        let name = if sync { "append" } else { "append_unsynced" };
        for batch in BATCHES {
            group.throughput(Throughput::Elements(batch));
            group.bench_function(format!("{name}/{batch}"), |b| {
                b.iter_batched(
                    || {
                        let entries: Vec<Entry> = (next..next + batch).map(|i| update(i, &keys, true)).collect();
                        next += batch;
                        entries
                    },
                    |entries| {
                        let mut wb = WriteBatch::default();
                        for e in &entries {
                            let bytes = codec::encode(e).expect("entries encode");
                            wb.put_cf(cf(&db, CF_RAFT_LOG), codec::u64_key(e.log_id.index), bytes);
                        }
                        db.write(wb).expect("the write succeeds");
                        if sync {
                            db.flush_wal(true).expect("the WAL syncs");
                        }
                    },
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_apply, bench_append);
criterion_main!(benches);
