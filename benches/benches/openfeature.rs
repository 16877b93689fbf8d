//! Server-side evaluation through each protocol a node speaks, side by side on one node: the
//! `vexil.v1` `Evaluation.EvaluateFlag` RPC (API port), flagd's `ResolveString` v2 over gRPC and
//! OFREP's single-flag POST (OpenFeature port). The same flag (three targeting rules, the third
//! matching), the same context, the same client setup for each: `CONNECTIONS` connections with
//! `IN_FLIGHT` calls each, for `ROUND` per protocol, the protocols taking turns for `ROUNDS`
//! rounds so a noisy machine slows them alike. Reports calls per second and p50/p99 latency per
//! protocol, and each one's throughput as a ratio of `vexil.v1`'s.
//!
//! Run: `cargo bench -p vexil-benches --bench openfeature` (builds `vexil` in release first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prost_types::Struct;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use vexil_proto::flagd::evaluation::v2;
use vexil_proto::flagd_struct::to_struct;
use vexil_proto::v1::evaluation_client::EvaluationClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::{ApplyNamespaceRequest, EvaluateFlagRequest, ValueType};
use vexil_testkit::{Cluster, Listener};

const CONNECTIONS: usize = 4;
const IN_FLIGHT: usize = 4;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    VexilV1,
    FlagdV2,
    Ofrep,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::VexilV1 => "vexil.v1 EvaluateFlag (gRPC)",
            Protocol::FlagdV2 => "flagd.evaluation.v2 ResolveString (gRPC)",
            Protocol::Ofrep => "OFREP POST /ofrep/v1/evaluate/flags/{key} (HTTP/1.1)",
        }
    }
}

fn context() -> serde_json::Map<String, serde_json::Value> {
    let v = json!({"targetingKey": "user-42", "email": "a@example.org", "country": "NL", "age": 42});
    v.as_object().cloned().unwrap_or_default()
}

/// One OFREP connection: HTTP/1.1 keep-alive, one request at a time.
struct Ofrep {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl Ofrep {
    async fn connect(addr: &str) -> Ofrep {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let body = json!({ "context": context() }).to_string();
        let request = format!(
            "POST /ofrep/v1/evaluate/flags/rules HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Ofrep { reader: BufReader::new(tcp), request }
    }

    async fn call(&mut self) {
        self.reader.get_mut().write_all(&self.request).await.expect("send");
        let mut length = 0usize;
        let mut status = String::new();
        self.reader.read_line(&mut status).await.expect("status");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.expect("body");
    }
}

/// Where each protocol is served: the API port's URI, the OpenFeature port's URI and address.
struct Targets {
    api: String,
    openfeature: String,
    openfeature_addr: String,
}

/// Runs `protocol` for one round; returns (calls, latency histogram in µs).
async fn round(protocol: Protocol, t: &Targets) -> (u64, Histogram<u64>) {
    let deadline = Instant::now() + ROUND;
    let ctx_struct: Arc<Struct> = Arc::new(to_struct(&context()));
    let ctx_json = serde_json::Value::Object(context()).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        // The same setup for each protocol: a connection per slot (HTTP/2 for gRPC, with
        // IN_FLIGHT calls multiplexed; for OFREP, HTTP/1.1 answers one call at a time, so
        // IN_FLIGHT keep-alive connections carry the same number of calls in flight).
        let uri = if protocol == Protocol::VexilV1 { &t.api } else { &t.openfeature };
        let channel = Channel::from_shared(uri.clone()).expect("uri").connect().await.expect("channel");
        for _ in 0..IN_FLIGHT {
            let (channel, ctx_struct, ctx_json) = (channel.clone(), ctx_struct.clone(), ctx_json.clone());
            let addr = t.openfeature_addr.clone();
            tasks.spawn(async move {
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                let mut calls = 0u64;
                let mut ofrep = match protocol {
                    Protocol::Ofrep => Some(Ofrep::connect(&addr).await),
                    _ => None,
                };
                let mut v1 = EvaluationClient::new(channel.clone());
                let mut fd = v2::service_client::ServiceClient::new(channel);
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match protocol {
                        Protocol::VexilV1 => {
                            let req = EvaluateFlagRequest {
                                namespace: "default".into(),
                                key: "rules".into(),
                                context_json: ctx_json.clone(),
                                r#type: ValueType::String as i32,
                                read: None,
                            };
                            v1.evaluate_flag(req).await.expect("vexil.v1");
                        }
                        Protocol::FlagdV2 => {
                            let req = v2::ResolveStringRequest {
                                flag_key: "rules".into(),
                                context: Some((*ctx_struct).clone()),
                            };
                            fd.resolve_string(req).await.expect("flagd v2");
                        }
                        Protocol::Ofrep => ofrep.as_mut().expect("connection").call().await,
                    }
                    hist.record(start.elapsed().as_micros() as u64).expect("record");
                    calls += 1;
                }
                (calls, hist)
            });
        }
    }
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    while let Some(r) = tasks.join_next().await {
        let (calls, h) = r.expect("task");
        total += calls;
        hist.add(h).expect("merge");
    }
    (total, hist)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let cluster = Cluster::builder(1).listener(Listener::OpenFeature).start().await;
    let doc = json!({"flags": {"rules": {
        "state": "ENABLED", "variants": {"a": "A", "b": "B", "c": "C", "d": "D"}, "defaultVariant": "d",
        "targeting": {"if": [
            {"ends_with": [{"var": "email"}, "@corp.example"]}, "a",
            {"in": [{"var": "country"}, ["US", "CA"]]}, "b",
            {">=": [{"var": "age"}, 18]}, "c",
            null]}}}});
    FlagsClient::new(cluster.channel(1).await)
        .apply_namespace(ApplyNamespaceRequest {
            namespace: "default".into(),
            document_json: doc.to_string(),
            options: None,
            dry_run: false,
            strict: true,
        })
        .await
        .expect("apply");
    let of_addr = cluster.addr(1, Listener::OpenFeature);
    let targets =
        Targets { api: cluster.api_addr(1), openfeature: format!("http://{of_addr}"), openfeature_addr: of_addr };
    let protocols = [Protocol::VexilV1, Protocol::FlagdV2, Protocol::Ofrep];
    let mut results: Vec<(Protocol, u64, Histogram<u64>)> =
        protocols.iter().map(|p| (*p, 0, Histogram::new(3).expect("histogram"))).collect();
    for _ in 0..ROUNDS {
        for (p, calls, hist) in results.iter_mut() {
            let (c, h) = round(*p, &targets).await;
            *calls += c;
            hist.add(h).expect("merge");
        }
    }
    let seconds = (ROUND * ROUNDS as u32).as_secs_f64();
    let base = results[0].1 as f64 / seconds;
    println!("{CONNECTIONS} connections x {IN_FLIGHT} calls in flight, {ROUNDS} rounds of {ROUND:?} each, one node");
    println!("| protocol | calls/s | ratio to vexil.v1 | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (p, calls, hist) in &results {
        let rate = *calls as f64 / seconds;
        println!(
            "| {} | {:.0} | {:.2} | {} µs | {} µs |",
            p.name(),
            rate,
            rate / base,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99)
        );
    }
}
