//! Flag evaluation throughput: Vexil's evaluator side by side with other Rust evaluators from
//! crates.io, on the same three flags, in one run.
//!
//! Cases (all boolean-ish flags, one warm thread):
//! - `static`: no targeting, serves the default variant.
//! - `three_rules`: an `if` with three rules (`in` a list, `==`, `>=`); the context matches only
//!   the third, so all three are evaluated.
//! - `fractional`: a 50/50 rollout on the targeting key, over 256 different users.
//!
//! Engines:
//! - `vexil`: `CompiledFlag::evaluate` with a prebuilt borrowed `EvalContext`; also
//!   `vexil+ctx`, which builds the context on every call (what a service does per request).
//! - `datalogic-rs 5.4.0` (feature `flagd`): the rule compiled once, data pre-parsed once into
//!   `ParsedData` (including `$flagd`, which flagd would inject per call: this favours it),
//!   evaluated in a reused `Session` whose arena is reset each call, and the result mapped to a
//!   variant as a flagd resolver must. For `static` it evaluates the rule `"on"`.
//! - `unleash-yggdrasil 0.21.7`: the equivalent Unleash toggle (`default` strategy; three
//!   strategies with one constraint each; `flexibleRollout` 50 % on `userId`), `is_enabled`
//!   with a prebuilt `Context`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use datalogic_rs::{Engine, Logic, ParsedData};
use serde_json::{Value, json};
use unleash_yggdrasil::{ClientFeatures, Context, EngineState, UpdateMessage};
use vexil_model::NamespaceDocument;
use vexil_model::eval::{CompiledFlag, CompiledNamespace, EvalContext};

const NOW: i64 = 1_800_000_000;
const USERS: usize = 256;

fn three_rules() -> Value {
    json!({"if": [
        {"in": [{"var": "email"}, ["alice@example.com", "bob@example.com", "carol@example.com"]]}, "beta",
        {"==": [{"var": "country"}, "NL"]}, "eu",
        {">=": [{"var": "age"}, 21]}, "adult",
        null
    ]})
}

fn fractional() -> Value {
    json!({"fractional": [["on", 50], ["off", 50]]})
}

fn document() -> NamespaceDocument {
    let v = json!({"flags": {
        "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "three-rules": {"state": "ENABLED", "variants": {"beta": "b", "eu": "e", "adult": "a", "none": "n"}, "defaultVariant": "none",
                        "targeting": three_rules()},
        "fractional": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": fractional()}
    }});
    NamespaceDocument::from_value(&v).expect("benchmark document is valid")
}

fn user(i: usize) -> String {
    format!("user-{i:04}")
}

/// A flagd-style resolver on top of datalogic-rs: compiled rule plus variant lookup.
struct DatalogicFlag {
    logic: Logic,
    variants: Vec<(String, Value)>,
    default: usize,
}

impl DatalogicFlag {
    fn new(engine: &Engine, rule: &Value, variants: &[(&str, Value)], default: &str) -> Self {
        let logic = engine.compile(rule).expect("datalogic compiles the rule");
        let variants: Vec<(String, Value)> = variants.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
        let default = variants.iter().position(|(k, _)| k == default).expect("default variant exists");
        DatalogicFlag { logic, variants, default }
    }

    fn resolve<'f>(&'f self, session: &mut datalogic_rs::Session<'_>, data: &ParsedData) -> Option<&'f Value> {
        let found = {
            let result = session.eval_borrowed(&self.logic, data).expect("datalogic evaluates");
            if result.is_null() {
                Some(self.default)
            } else if let Some(name) = result.as_str() {
                self.variants.iter().position(|(k, _)| k == name)
            } else {
                result
                    .as_bool()
                    .and_then(|b| self.variants.iter().position(|(k, _)| k == if b { "true" } else { "false" }))
            }
        };
        session.reset();
        found.map(|i| &self.variants[i].1)
    }
}

fn datalogic_data(flag_key: &str, targeting_key: &str) -> ParsedData {
    let v = json!({"targetingKey": targeting_key, "email": "dave@example.com", "country": "US", "age": 30,
                   "$flagd": {"flagKey": flag_key, "timestamp": NOW}});
    ParsedData::from_json(&v.to_string()).expect("datalogic parses the data")
}

fn unleash_engine() -> EngineState {
    let features: ClientFeatures = serde_json::from_value(json!({
        "version": 2,
        "features": [
            {"name": "static", "enabled": true, "strategies": [{"name": "default", "parameters": {}}]},
            {"name": "three-rules", "enabled": true, "strategies": [
                {"name": "default", "parameters": {}, "constraints": [
                    {"contextName": "email", "operator": "IN", "values": ["alice@example.com", "bob@example.com", "carol@example.com"]}]},
                {"name": "default", "parameters": {}, "constraints": [{"contextName": "country", "operator": "IN", "values": ["NL"]}]},
                {"name": "default", "parameters": {}, "constraints": [{"contextName": "age", "operator": "NUM_GTE", "value": "21"}]}
            ]},
            {"name": "fractional", "enabled": true, "strategies": [
                {"name": "flexibleRollout", "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "fractional"}}]}
        ]
    }))
    .expect("valid Unleash features");
    let engine = EngineState::default();
    engine.take_state(UpdateMessage::FullResponse(features));
    engine
}

fn unleash_context(user_id: &str) -> Context {
    let props: HashMap<String, String> = [("email", "dave@example.com"), ("country", "US"), ("age", "30")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Context { user_id: Some(user_id.to_string()), properties: Some(props), ..Context::default() }
}

fn bench(c: &mut Criterion) {
    let ns = CompiledNamespace::compile(&document()).expect("benchmark flags compile");
    let engine = Engine::builder().build();
    let mut session = engine.session();
    let unleash = unleash_engine();
    let users: Vec<String> = (0..USERS).map(user).collect();

    // Sanity: every engine gives the expected answer before it is timed.
    let sample =
        EvalContext::with_targeting_key("u").with("email", "dave@example.com").with("country", "US").with("age", 30);
    assert_eq!(ns.evaluate("three-rules", &sample, NOW).variant, Some("adult"));
    assert!(unleash.is_enabled("three-rules", &unleash_context("u"), &None));

    // (group, flag key, datalogic rule, variants, default variant)
    type Case = (&'static str, &'static str, Value, Vec<(&'static str, Value)>, &'static str);
    let cases: [Case; 3] = [
        ("static", "static", json!("on"), vec![("on", json!(true)), ("off", json!(false))], "on"),
        (
            "three_rules",
            "three-rules",
            three_rules(),
            vec![("beta", json!("b")), ("eu", json!("e")), ("adult", json!("a")), ("none", json!("n"))],
            "none",
        ),
        ("fractional", "fractional", fractional(), vec![("on", json!(true)), ("off", json!(false))], "off"),
    ];

    for (group_name, key, rule, variants, default) in cases {
        let flag: &CompiledFlag = ns.get(key).expect("flag exists");
        let dl = DatalogicFlag::new(&engine, &rule, &variants, default);
        let rotate = group_name == "fractional";
        let n = if rotate { USERS } else { 1 };
        let vexil_contexts: Vec<EvalContext<'_>> = users[..n]
            .iter()
            .map(|u| {
                EvalContext::with_targeting_key(u)
                    .with("email", "dave@example.com")
                    .with("country", "US")
                    .with("age", 30)
            })
            .collect();
        let dl_data: Vec<ParsedData> = users[..n].iter().map(|u| datalogic_data(key, u)).collect();
        let un_contexts: Vec<Context> = users[..n].iter().map(|u| unleash_context(u)).collect();
        let expected = dl.resolve(&mut session, &dl_data[0]).cloned();
        assert_eq!(
            flag.evaluate(&vexil_contexts[0], NOW).value.cloned(),
            expected,
            "{group_name}: vexil and datalogic disagree"
        );

        let mut g = c.benchmark_group(group_name);
        let mut i = 0usize;
        g.bench_function("vexil", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(flag.evaluate(black_box(&vexil_contexts[i]), NOW).value)
            })
        });
        g.bench_function("vexil+ctx", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let ctx = EvalContext::with_targeting_key(black_box(&users[i]))
                    .with("email", "dave@example.com")
                    .with("country", "US")
                    .with("age", 30);
                black_box(flag.evaluate(&ctx, NOW).value)
            })
        });
        g.bench_function("datalogic-rs 5.4.0", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(dl.resolve(&mut session, black_box(&dl_data[i])))
            })
        });
        g.bench_function("unleash-yggdrasil 0.21.7", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(unleash.is_enabled(key, black_box(&un_contexts[i]), &None))
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
