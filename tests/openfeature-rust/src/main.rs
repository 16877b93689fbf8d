//! Drives OpenFeature's Rust SDK with the `open-feature-flagd` provider against a Vexil node.
//!
//!     vexil-openfeature-rust rpc|in-process|rest HOST PORT
//!
//! Prints one JSON object per line, `{"step": ...}`: `ready`, `eval` (every flag type,
//! targeting, a disabled flag, one without a default variant, a missing and a mistyped flag),
//! `rollout` (the variant of a 50/50 `fractional` flag for 200 users), then `await-change`,
//! after which it reads one line from stdin: `done` ends it; `changed` (the test made `color`
//! blue meanwhile, and may have killed the node the provider was talking to) waits up to 30 s
//! for the provider to answer `#00f` and prints `after-change`.

use std::time::{Duration, Instant};

use open_feature::{EvaluationContext, EvaluationResult, OpenFeature, StructValue, Value};
use open_feature_flagd::{FlagdOptions, FlagdProvider, ResolverType};
use serde_json::{Map, Value as Json, json};
use tokio::io::AsyncBufReadExt;

fn say(line: Json) {
    println!("{line}");
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::String(s) => json!(s),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Struct(s) => struct_json(s),
    }
}

fn struct_json(s: &StructValue) -> Json {
    Json::Object(s.fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<Map<_, _>>())
}

/// One evaluation as the test compares it: value, variant, reason, error code.
fn report<T>(key: &str, got: EvaluationResult<open_feature::EvaluationDetails<T>>, value: impl Fn(&T) -> Json) -> Json {
    match got {
        Ok(d) => json!({
            "key": key,
            "value": value(&d.value),
            "variant": d.variant,
            "reason": d.reason.map(|r| r.to_string()),
            "error": Json::Null,
        }),
        Err(e) => {
            json!({"key": key, "value": Json::Null, "variant": Json::Null, "reason": "ERROR", "error": e.code.to_string()})
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, host, port] = &args[..] else {
        panic!("usage: vexil-openfeature-rust rpc|in-process|rest HOST PORT");
    };
    let resolver_type = match mode.as_str() {
        "rpc" => ResolverType::Rpc,
        "in-process" => ResolverType::InProcess,
        "rest" => ResolverType::Rest,
        other => panic!("unknown mode {other}"),
    };
    let options = FlagdOptions {
        host: host.clone(),
        port: port.parse().expect("PORT is a number"),
        resolver_type,
        deadline_ms: 3000,
        // The provider's own default for in-process; RPC's STATIC cache would hide the change
        // until its TTL (this provider does not read flagd's EventStream).
        cache_settings: None,
        ..FlagdOptions::default()
    };
    let started = Instant::now();
    let provider = FlagdProvider::new(options).await.expect("the provider connects");
    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(provider).await;
    let client = api.create_client();
    drop(api);
    say(json!({"step": "ready", "seconds": started.elapsed().as_secs_f64()}));

    let user = |key: &str| EvaluationContext::default().with_targeting_key(key);
    let pro = user("user-1").with_custom_field("plan", "pro");
    let free = user("user-2").with_custom_field("plan", "free");
    let one = user("user-1");
    let results = vec![
        report("banner", client.get_bool_details("banner", Some(&pro), None).await, |v| json!(v)),
        report("banner", client.get_bool_details("banner", Some(&free), None).await, |v| json!(v)),
        report("color", client.get_string_details("color", Some(&one), None).await, |v| json!(v)),
        report("limit", client.get_int_details("limit", Some(&one), None).await, |v| json!(v)),
        report("ratio", client.get_float_details("ratio", Some(&one), None).await, |v| json!(v)),
        report("cfg", client.get_struct_details::<StructValue>("cfg", Some(&one), None).await, struct_json),
        report("off", client.get_bool_details("off", Some(&one), None).await, |v| json!(v)),
        report("nodefault", client.get_bool_details("nodefault", Some(&one), None).await, |v| json!(v)),
        report("missing", client.get_bool_details("missing", Some(&one), None).await, |v| json!(v)),
        report("color", client.get_bool_details("color", Some(&one), None).await, |v| json!(v)),
    ];
    say(json!({"step": "eval", "results": results}));

    let mut rollout = Vec::new();
    for i in 0..200 {
        let d = client.get_string_details("rollout", Some(&user(&format!("user-{i}"))), None).await;
        rollout.push(d.map(|d| json!(d.value)).unwrap_or_else(|e| json!(e.code.to_string())));
    }
    say(json!({"step": "rollout", "variants": rollout}));

    say(json!({"step": "await-change"}));
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut line).await.expect("stdin");
    if line.trim() != "changed" {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let color = || async { report("color", client.get_string_details("color", Some(&one), None).await, |v| json!(v)) };
    let mut seen = color().await;
    while seen["value"] != "#00f" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = color().await;
    }
    say(json!({"step": "after-change", "result": seen, "seconds": started.elapsed().as_secs_f64()}));
}
