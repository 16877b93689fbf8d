//! OpenFeature's own Rust provider (`open-feature` 0.3 with `open-feature-flagd` 0.3, unchanged,
//! built from `tests/openfeature-rust`) against a real three-node cluster, in its three modes:
//! RPC (flagd evaluation v1), in-process (flagd sync, evaluating locally) and REST (OFREP).
//! Every value type, targeting, a disabled flag, one without a default variant, a missing and a
//! mistyped flag; a 50/50 `fractional` rollout on which the server and the provider's own
//! bucketing agree once the namespace says which bucketing its providers use; a change made with
//! `vexilctl` reaching the in-process provider, also when the node it streamed from was the
//! leader and was killed (it reconnects through a balancer to another node).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ctl;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use vexil_testkit::{Balancer, Cluster, Listener, PROVIDER_FLAGS};

const ROLLOUT: &str = r#"{"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
    "targeting": {"fractional": [["a", 50], ["b", 50]]}}"#;
const BLUE: &str = r##"{"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "blue"}"##;

/// Three voters with the OpenFeature port, the providers' flag set in `default` and the rollout.
///
/// Without `nodefault`: this provider's in-process mode (0.3.0) requires a `defaultVariant` on
/// every flag, and refuses the whole flag set (a serde error, the provider never ready) when one
/// has none, though flagd's schema allows it and flagd's other providers evaluate such a flag
/// to the code default.
async fn cluster() -> (Cluster, String) {
    let c = common::builder(3).listener(Listener::OpenFeature).start().await;
    let ep = c.endpoints(&[1, 2, 3]);
    let (_dir, file) = common::temp_file("flags.json", PROVIDER_FLAGS);
    ctl(&["apply", "-f", &file, "-n", "default", "--endpoints", &ep]).await.ok();
    ctl(&["flag", "delete", "default", "nodefault", "--endpoints", &ep]).await.ok();
    ctl(&["flag", "create", "default", "rollout", "--spec", ROLLOUT, "--endpoints", &ep]).await.ok();
    (c, ep)
}

/// One run of the driver, read line by line.
struct Driver {
    mode: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Driver {
    fn start(mode: &str, port: u16) -> Driver {
        let mut child = vexil_testkit::rust_provider_run(&[mode, "127.0.0.1", &port.to_string()]);
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver { mode: mode.into(), child, lines }
    }

    /// The next step, which must be `step`.
    async fn expect(&mut self, step: &str) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line()).await;
        let line = line.unwrap_or_else(|_| panic!("{}: no {step} within 60 s", self.mode)).unwrap();
        let line = line.unwrap_or_else(|| panic!("{}: the driver ended before {step}", self.mode));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["step"], step, "{}: {v}", self.mode);
        v
    }

    async fn say(&mut self, line: &str) {
        self.child.stdin.as_mut().unwrap().write_all(format!("{line}\n").as_bytes()).await.unwrap();
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(status.expect("the driver ends").unwrap().success(), "{}: the driver failed", self.mode);
    }

    /// Ready, then every evaluation as flagd gives it; returns the rollout's variants.
    async fn evaluations(&mut self) -> Vec<Value> {
        self.expect("ready").await;
        let eval = self.expect("eval").await;
        let got: Vec<(Value, Value, Value, Value)> = eval["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["value"].clone(), r["variant"].clone(), r["reason"].clone(), r["error"].clone()))
            .collect();
        // What this provider reports in each mode. The node answers as flagd does; where the
        // provider reports something else, it does so against flagd too:
        // - RPC (v1): a protobuf Struct carries numbers as doubles; "no variant" is v1's empty
        //   string; flagd's INVALID_ARGUMENT for a type mismatch reads as INVALID_CONTEXT here
        //   (this provider expects FAILED_PRECONDITION).
        // - in-process: a disabled flag is FLAG_NOT_FOUND (flagd's answer before its DISABLED
        //   reason).
        // - REST (OFREP): every answer's reason is STATIC (the provider drops the server's); an
        //   answer without a value (disabled) or of another type is PARSE_ERROR.
        let ok = |v: Value, variant: &str, reason: &str| (v, json!(variant), json!(reason), Value::Null);
        let error = |code: &str| (Value::Null, Value::Null, json!("ERROR"), json!(code));
        let want = match self.mode.as_str() {
            "rpc" => vec![
                ok(json!(true), "on", "TARGETING_MATCH"),
                ok(json!(false), "off", "DEFAULT"),
                ok(json!("#f00"), "red", "STATIC"),
                ok(json!(5), "low", "STATIC"),
                ok(json!(0.5), "half", "STATIC"),
                ok(json!({"depth": 2.0}), "a", "STATIC"),
                ok(json!(false), "", "DISABLED"),
                error("FLAG_NOT_FOUND"),
                error("FLAG_NOT_FOUND"),
                error("INVALID_CONTEXT"),
            ],
            "in-process" => vec![
                ok(json!(true), "on", "TARGETING_MATCH"),
                ok(json!(false), "off", "DEFAULT"),
                ok(json!("#f00"), "red", "STATIC"),
                ok(json!(5), "low", "STATIC"),
                ok(json!(0.5), "half", "STATIC"),
                ok(json!({"depth": 2}), "a", "STATIC"),
                error("FLAG_NOT_FOUND"),
                error("FLAG_NOT_FOUND"),
                error("FLAG_NOT_FOUND"),
                error("TYPE_MISMATCH"),
            ],
            _ => vec![
                ok(json!(true), "on", "STATIC"),
                ok(json!(false), "off", "STATIC"),
                ok(json!("#f00"), "red", "STATIC"),
                ok(json!(5), "low", "STATIC"),
                ok(json!(0.5), "half", "STATIC"),
                ok(json!({"depth": 2}), "a", "STATIC"),
                error("PARSE_ERROR"),
                error("FLAG_NOT_FOUND"),
                error("FLAG_NOT_FOUND"),
                error("PARSE_ERROR"),
            ],
        };
        assert_eq!(got.len(), want.len(), "{}: {eval}", self.mode);
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert_eq!(g, w, "{}: result {i}: {}", self.mode, eval["results"][i]);
        }
        self.expect("rollout").await["variants"].as_array().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeatures_rust_provider_works_unchanged_in_rpc_in_process_and_rest_modes() {
    // Built first (minutes on a new machine), so the cluster's timing is not affected.
    tokio::task::spawn_blocking(vexil_testkit::rust_provider).await.unwrap();
    let (c, ep) = cluster().await;
    let port = c.port(2, Listener::OpenFeature);

    // The provider's in-process bucketing is flagd's v3; the server's default is v2.
    let mut driver = Driver::start("in-process", port);
    let v3_local = driver.evaluations().await;
    driver.say("done").await;
    driver.finish().await;
    let mut driver = Driver::start("rpc", port);
    let v2_server = driver.evaluations().await;
    driver.say("done").await;
    driver.finish().await;
    let differ = v3_local.iter().zip(&v2_server).filter(|(a, b)| a != b).count();
    assert!(differ > 0, "v2 and v3 put all 200 users in the same bucket: the test shows nothing");

    // Once the namespace says its providers bucket with v3, every mode agrees, user by user.
    let set = ctl(&["namespace", "settings", "default", "--fractional", "cbor-murmur3", "--endpoints", &ep]).await;
    assert!(set.ok().contains("cbor-murmur3"), "{}", set.stdout);
    let mut rollouts = Vec::new();
    for mode in ["rpc", "rest", "in-process"] {
        let mut driver = Driver::start(mode, port);
        rollouts.push((mode, driver.evaluations().await));
        if mode == "in-process" {
            // A change made with vexilctl reaches the provider's local copy.
            ctl(&["flag", "update", "default", "color", "--spec", BLUE, "--endpoints", &ep]).await.ok();
            driver.expect("await-change").await;
            driver.say("changed").await;
            let after = driver.expect("after-change").await;
            assert_eq!(after["result"]["value"], "#00f", "{after}");
        } else {
            driver.expect("await-change").await;
            driver.say("done").await;
        }
        driver.finish().await;
    }
    let (_, first) = &rollouts[0];
    for (mode, variants) in &rollouts {
        assert_eq!(variants, first, "{mode} buckets differently from rpc");
    }
    assert_eq!(first, &v3_local, "the server now buckets as the provider does locally");
    let b = first.iter().filter(|v| *v == "b").count();
    assert!((70..=130).contains(&b), "a 50/50 split put {b} of 200 users in b: {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_provider_recovers_through_another_node_when_the_leader_dies() {
    tokio::task::spawn_blocking(vexil_testkit::rust_provider).await.unwrap();
    let (mut c, _) = cluster().await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut order = vec![leader];
    order.extend(c.ids().into_iter().filter(|&id| id != leader));
    // One address in front of the three, leader first: the provider's stream goes to the leader.
    let balancer = Balancer::start(order.iter().map(|&id| c.addr(id, Listener::OpenFeature)).collect()).await;
    let mut driver = Driver::start("in-process", balancer.port());
    driver.evaluations().await;
    driver.expect("await-change").await;

    c.kill(leader);
    let survivors: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    c.wait_leader_among(&survivors, Duration::from_secs(15)).await;
    let ep = c.endpoints(&survivors);
    ctl(&["flag", "update", "default", "color", "--spec", BLUE, "--endpoints", &ep]).await.ok();
    driver.say("changed").await;
    let after = driver.expect("after-change").await;
    assert_eq!(after["result"]["value"], "#00f", "the provider reconnected and saw the change: {after}");
    driver.finish().await;
}
