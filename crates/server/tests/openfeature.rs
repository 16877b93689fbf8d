//! The OpenFeature port on a real three-node cluster, spoken to as flagd's and OFREP's clients
//! speak: flagd evaluation v2 and v1 over gRPC (typed results, flagd's reasons and statuses,
//! selectors, `EventStream`), OFREP's single and bulk endpoints (shapes, errors, `ETag`/304),
//! and on a secure cluster the same tokens as the API port (`Authorization`, `X-API-Key`, anonymous
//! read of an open namespace); and OpenFeature's own Python providers (flagd RPC, OFREP) against it,
//! unchanged (`openfeature_providers.py`, installed from PyPI into a cached virtual environment).

// Helpers outside `#[test]` functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use prost_types::Struct;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::flagd_struct::{from_struct, to_struct};
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::{ApplyNamespaceRequest, CreateFlagRequest, SetFlagStateRequest, UpdateFlagRequest};
use vexil_testkit::{Cluster, Listener};

async fn cluster(secure: bool) -> Cluster {
    let mut b = common::builder(3).listener(Listener::OpenFeature);
    if secure {
        b = b.secure();
    }
    let c = b.start().await;
    for (namespace, doc) in [
        ("default", vexil_testkit::PROVIDER_FLAGS),
        (
            "shop",
            r#"{"flags": {"banner": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}"#,
        ),
    ] {
        FlagsClient::new(c.channel(1).await)
            .apply_namespace(c.request(ApplyNamespaceRequest {
                namespace: namespace.into(),
                document_json: doc.into(),
                ..Default::default()
            }))
            .await
            .expect("apply");
    }
    c
}

/// A channel to node `id`'s OpenFeature port (plaintext HTTP/2).
async fn channel(c: &Cluster, id: u64) -> Channel {
    Channel::from_shared(format!("http://{}", c.addr(id, Listener::OpenFeature))).unwrap().connect().await.unwrap()
}

fn context(v: Value) -> Option<Struct> {
    let Value::Object(m) = v else { panic!("a context is an object") };
    Some(to_struct(&m))
}

async fn next(events: &mut tonic::Streaming<v2::EventStreamResponse>) -> v2::EventStreamResponse {
    tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("an event").unwrap().unwrap()
}

fn with_selector<T>(msg: T, selector: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("flagd-selector", selector.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_evaluation_v2_and_v1_answer_as_flagd_does() {
    let c = cluster(false).await;
    let mut v2c = v2::service_client::ServiceClient::new(channel(&c, 2).await);

    // Typed results, flagd's reasons, flag metadata over flag-set metadata.
    let pro = v2c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "banner".into(),
            context: context(json!({"plan": "pro"})),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((pro.value, pro.reason.as_str(), pro.variant.as_deref()), (Some(true), "TARGETING_MATCH", Some("on")));
    assert_eq!(Value::Object(from_struct(&pro.metadata.unwrap())), json!({"owner": "growth", "team": "web"}));
    let free = v2c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "banner".into(),
            context: context(json!({"plan": "free"})),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((free.value, free.reason.as_str()), (Some(false), "DEFAULT"));
    let color = v2c.resolve_string(v2::ResolveStringRequest { flag_key: "color".into(), context: None }).await.unwrap();
    assert_eq!((color.get_ref().value.as_deref(), color.get_ref().reason.as_str()), (Some("#f00"), "STATIC"));
    let limit = v2c.resolve_int(v2::ResolveIntRequest { flag_key: "limit".into(), context: None }).await.unwrap();
    assert_eq!(limit.get_ref().value, Some(5));
    // An integer flag read as a float is fine; a float flag read as an integer is not.
    let as_float =
        v2c.resolve_float(v2::ResolveFloatRequest { flag_key: "limit".into(), context: None }).await.unwrap();
    assert_eq!(as_float.get_ref().value, Some(5.0));
    let ratio = v2c.resolve_int(v2::ResolveIntRequest { flag_key: "ratio".into(), context: None }).await.unwrap_err();
    assert_eq!(ratio.code(), Code::InvalidArgument, "TYPE_MISMATCH: {ratio:?}");
    let cfg = v2c.resolve_object(v2::ResolveObjectRequest { flag_key: "cfg".into(), context: None }).await.unwrap();
    assert_eq!(Value::Object(from_struct(cfg.get_ref().value.as_ref().unwrap())), json!({"depth": 2}));

    // No value: disabled, or no default variant; the caller's default applies.
    let off = v2c.resolve_boolean(v2::ResolveBooleanRequest { flag_key: "off".into(), context: None }).await.unwrap();
    assert_eq!(
        (off.get_ref().value, off.get_ref().reason.as_str(), off.get_ref().variant.clone()),
        (None, "DISABLED", None)
    );
    let nodef = v2c.resolve_boolean(v2::ResolveBooleanRequest { flag_key: "nodefault".into(), context: None }).await;
    assert_eq!(nodef.as_ref().map(|r| (r.get_ref().value, r.get_ref().reason.as_str())).ok(), Some((None, "DEFAULT")));
    // Errors are flagd's statuses.
    let missing = v2c.resolve_boolean(v2::ResolveBooleanRequest { flag_key: "nope".into(), context: None }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let mistyped = v2c.resolve_boolean(v2::ResolveBooleanRequest { flag_key: "color".into(), context: None }).await;
    assert_eq!(mistyped.unwrap_err().code(), Code::InvalidArgument);
    // An oversized context is refused naming it, not evaluated.
    let huge = context(json!({"blob": "x".repeat(70 * 1024)}));
    let big =
        v2c.resolve_boolean(v2::ResolveBooleanRequest { flag_key: "banner".into(), context: huge }).await.unwrap_err();
    assert_eq!(big.code(), Code::InvalidArgument);
    assert!(big.message().contains("`context`"), "{big:?}");

    // A selector picks the namespace; a bad one is refused naming it.
    let shop = v2c
        .resolve_boolean(with_selector(
            v2::ResolveBooleanRequest { flag_key: "banner".into(), context: None },
            "flagSetId=shop",
        ))
        .await
        .unwrap();
    assert_eq!((shop.get_ref().value, shop.get_ref().reason.as_str()), (Some(true), "STATIC"));
    let bad = v2c
        .resolve_boolean(with_selector(
            v2::ResolveBooleanRequest { flag_key: "banner".into(), context: None },
            "team=x",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("selector"), "{bad:?}");

    // v1: a disabled flag is its zero value with an empty variant; no default variant is
    // NOT_FOUND; ResolveAll holds every flag with a value, or disabled.
    let mut v1c = v1::service_client::ServiceClient::new(channel(&c, 3).await);
    let off1 = v1c.resolve_boolean(v1::ResolveBooleanRequest { flag_key: "off".into(), context: None }).await.unwrap();
    assert_eq!(
        (off1.get_ref().value, off1.get_ref().reason.as_str(), off1.get_ref().variant.as_str()),
        (false, "DISABLED", "")
    );
    let nodef1 = v1c.resolve_boolean(v1::ResolveBooleanRequest { flag_key: "nodefault".into(), context: None }).await;
    assert_eq!(nodef1.unwrap_err().code(), Code::NotFound);
    let all =
        v1c.resolve_all(v1::ResolveAllRequest { context: context(json!({"plan": "pro"})) }).await.unwrap().into_inner();
    let mut keys: Vec<&str> = all.flags.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["banner", "cfg", "color", "limit", "off", "ratio"]);
    assert_eq!(all.flags["banner"].value, Some(v1::any_flag::Value::BoolValue(true)));
    assert_eq!(all.flags["limit"].value, Some(v1::any_flag::Value::DoubleValue(5.0)));
    assert_eq!(Value::Object(from_struct(all.metadata.as_ref().unwrap())), json!({"team": "web"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_is_ready_first_and_names_every_changed_flag() {
    let c = cluster(false).await;
    let mut v2c = v2::service_client::ServiceClient::new(channel(&c, 2).await);
    let mut events = v2c.event_stream(v2::EventStreamRequest {}).await.unwrap().into_inner();
    assert_eq!(next(&mut events).await.r#type, "provider_ready");

    let mut flags = FlagsClient::new(c.channel(1).await);
    let blue = json!({"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "blue"});
    flags
        .update_flag(UpdateFlagRequest {
            namespace: "default".into(),
            key: "color".into(),
            spec_json: blue.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A change in another namespace is not this stream's (a key only that namespace has).
    flags
        .create_flag(CreateFlagRequest {
            namespace: "shop".into(),
            key: "shop-only".into(),
            spec_json: json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}).to_string(),
            options: None,
            strict: false,
        })
        .await
        .unwrap();
    flags
        .set_flag_state(SetFlagStateRequest {
            namespace: "default".into(),
            key: "banner".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut named = serde_json::Map::new();
    while named.len() < 2 {
        let e = next(&mut events).await;
        if e.r#type == "keep_alive" {
            continue;
        }
        assert_eq!(e.r#type, "configuration_change");
        let data = from_struct(&e.data.unwrap());
        named.extend(data["flags"].as_object().unwrap().clone());
    }
    assert_eq!(Value::Object(named), json!({"color": {"type": "update"}, "banner": {"type": "update"}}));
    // The change is there to read.
    let color = v2c.resolve_string(v2::ResolveStringRequest { flag_key: "color".into(), context: None }).await.unwrap();
    assert_eq!(color.get_ref().value.as_deref(), Some("#00f"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_sync_sends_strict_documents_on_connect_and_after_every_change() {
    use vexil_proto::flagd::sync::v1 as sync;
    let c = cluster(false).await;
    let mut client = sync::flag_sync_service_client::FlagSyncServiceClient::new(channel(&c, 3).await);
    // Deprecated in the protocol, still called by providers on every connect.
    #[allow(deprecated)]
    let meta = client.get_metadata(sync::GetMetadataRequest {}).await.unwrap().into_inner();
    assert!(meta.metadata.is_some(), "metadata is always set: Python's provider never gets ready without it");
    // The deprecated body field selects too (flagd itself and the Rust provider send only it).
    #[allow(deprecated)]
    let shop = client
        .fetch_all_flags(sync::FetchAllFlagsRequest { provider_id: String::new(), selector: "flagSetId=shop".into() })
        .await
        .unwrap()
        .into_inner();
    let shop: Value = serde_json::from_str(&shop.flag_configuration).unwrap();
    assert_eq!(shop["flags"].as_object().map(|f| f.len()), Some(1));

    let mut stream = client.sync_flags(sync::SyncFlagsRequest::default()).await.unwrap().into_inner();
    let mut next_doc = async || -> Value {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("a document");
        serde_json::from_str(&msg.unwrap().unwrap().flag_configuration).unwrap()
    };
    let first = next_doc().await;
    assert_eq!(first["metadata"], json!({"team": "web"}));
    let flags = first["flags"].as_object().unwrap();
    assert_eq!(flags.len(), 7);
    let strict = ["state", "variants", "defaultVariant", "targeting", "metadata"];
    for (key, flag) in flags {
        assert!(flag.as_object().unwrap().keys().all(|k| strict.contains(&k.as_str())), "{key}: {flag}");
    }

    // A change elsewhere sends nothing; this namespace's next change sends the whole document,
    // Vexil's governance fields left out.
    let mut writes = FlagsClient::new(c.channel(1).await);
    writes
        .set_flag_state(SetFlagStateRequest {
            namespace: "shop".into(),
            key: "banner".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let blue = json!({"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "blue",
                      "owner": "web-team", "lifecycle": "active", "description": "the banner colour"});
    writes
        .update_flag(UpdateFlagRequest {
            namespace: "default".into(),
            key: "color".into(),
            spec_json: blue.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let second = next_doc().await;
    assert_eq!(
        second["flags"]["color"],
        json!({"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "blue", "targeting": {}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_cluster_ends_its_flagd_streams() {
    use vexil_proto::flagd::sync::v1 as sync;
    // Short freshness bounds: a progress check every 100 ms, cut off after 600 ms unconfirmed.
    let c = common::builder(3).listener(Listener::OpenFeature).watch_freshness_ms(100, 600).start().await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut events = v2::service_client::ServiceClient::new(channel(&c, follower).await)
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut events).await.r#type, "provider_ready");
    let mut docs = sync::flag_sync_service_client::FlagSyncServiceClient::new(channel(&c, follower).await)
        .sync_flags(sync::SyncFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), docs.message()).await.unwrap().unwrap().expect("the first document");

    let others: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    for id in &others {
        c.pause(*id);
    }
    let cut = std::time::Instant::now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("the stream ends") {
            Ok(Some(e)) => assert_eq!(e.r#type, "keep_alive", "nothing else while cut off"),
            Ok(None) => panic!("ended without saying why"),
            Err(status) => break status,
        }
    };
    let synced = tokio::time::timeout(Duration::from_secs(10), docs.message()).await.expect("the sync stream ends");
    let elapsed = cut.elapsed();
    for id in &others {
        c.resume(*id);
    }
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("could not confirm it is current"), "{ended:?}");
    assert_eq!(synced.expect_err("ended with an error").code(), Code::Unavailable);
    assert!(elapsed < Duration::from_secs(5), "ended {elapsed:?} after the cut");
}

/// The first envelope of a Connect server stream, read off a raw HTTP/1.1 connection (the
/// response is chunked and stays open).
fn first_connect_envelope(addr: &str, path: &str) -> (String, u8, Vec<u8>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = [0u8, 0, 0, 0, 0]; // one envelope holding the empty EventStreamRequest
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/connect+proto\r\nConnect-Protocol-Version: 1\r\nContent-Length: {}\r\n\r\n",
        request.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(&request).unwrap();
    let mut reader = BufReader::new(tcp);
    let mut status_and_headers = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        status_and_headers.push_str(&line);
    }
    let mut body = Vec::new();
    while body.len() < 5 || body.len() < 5 + u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..n]);
    }
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    (status_and_headers, body[0], body[5..5 + len].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_evaluation_over_the_connect_protocol_as_the_go_provider_speaks_it() {
    use prost::Message;
    let c = cluster(false).await;
    let connect = |path: &str, body: Vec<u8>, content_type: &str| {
        c.http(
            2,
            Listener::OpenFeature,
            "POST",
            path,
            &[("Content-Type", content_type), ("Connect-Protocol-Version", "1")],
            body,
        )
    };
    let req = v2::ResolveBooleanRequest { flag_key: "banner".into(), context: context(json!({"plan": "pro"})) };
    let ok = connect("/flagd.evaluation.v2.Service/ResolveBoolean", req.encode_to_vec(), "application/proto");
    assert_eq!((ok.status, ok.header("content-type")), (200, Some("application/proto")), "{ok:?}");
    let got = v2::ResolveBooleanResponse::decode(ok.bytes.as_slice()).unwrap();
    assert_eq!((got.value, got.reason.as_str(), got.variant.as_deref()), (Some(true), "TARGETING_MATCH", Some("on")));
    // Errors are Connect's JSON with the code's HTTP status.
    let missing = v2::ResolveBooleanRequest { flag_key: "nope".into(), context: None };
    let err = connect("/flagd.evaluation.v2.Service/ResolveBoolean", missing.encode_to_vec(), "application/proto");
    assert_eq!((err.status, err.json()["code"].clone()), (404, json!("not_found")), "{err:?}");
    let all = connect(
        "/flagd.evaluation.v1.Service/ResolveAll",
        v1::ResolveAllRequest::default().encode_to_vec(),
        "application/proto",
    );
    assert_eq!(v1::ResolveAllResponse::decode(all.bytes.as_slice()).unwrap().flags.len(), 6);
    let json_codec = connect("/flagd.evaluation.v2.Service/ResolveBoolean", b"{}".to_vec(), "application/json");
    assert_eq!(json_codec.status, 415);
    // The event stream: enveloped, provider_ready first.
    let (head, flags, payload) =
        first_connect_envelope(&c.addr(2, Listener::OpenFeature), "/flagd.evaluation.v2.Service/EventStream");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("application/connect+proto"),
        "{head}"
    );
    assert_eq!(flags, 0, "a message, not the end of the stream");
    assert_eq!(v2::EventStreamResponse::decode(payload.as_slice()).unwrap().r#type, "provider_ready");
    // gRPC on the same paths still works.
    let mut grpc = v2::service_client::ServiceClient::new(channel(&c, 2).await);
    let r = grpc.resolve_boolean(v2::ResolveBooleanRequest { flag_key: "banner".into(), context: None }).await.unwrap();
    assert_eq!(r.get_ref().reason, "DEFAULT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_single_and_bulk_evaluation_with_its_shapes_errors_and_etag() {
    let c = cluster(false).await;
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        c.http(2, Listener::OpenFeature, "POST", path, headers, body)
    };

    let pro = post("/ofrep/v1/evaluate/flags/banner", &[], r#"{"context": {"targetingKey": "u1", "plan": "pro"}}"#);
    assert_eq!(pro.status, 200, "{pro:?}");
    assert_eq!(
        pro.json(),
        json!({"key": "banner", "value": true, "reason": "TARGETING_MATCH", "variant": "on", "metadata": {"owner": "growth", "team": "web"}})
    );
    // No value for the caller's default, but always a variant; an empty body is an empty context.
    let off = post("/ofrep/v1/evaluate/flags/off", &[], "");
    assert_eq!(
        (off.status, off.json()),
        (200, json!({"key": "off", "reason": "DISABLED", "variant": "", "metadata": {"team": "web"}}))
    );
    let ratio = post("/ofrep/v1/evaluate/flags/ratio", &[], "{}");
    assert_eq!(ratio.json()["value"], json!(0.5));
    assert!(ratio.body.contains("0.5"));
    let missing = post("/ofrep/v1/evaluate/flags/nope", &[], "{}");
    assert_eq!(missing.status, 404);
    assert_eq!(
        (missing.json()["key"].clone(), missing.json()["errorCode"].clone()),
        (json!("nope"), json!("FLAG_NOT_FOUND"))
    );
    assert!(missing.json()["errorDetails"].is_string());
    let garbled = post("/ofrep/v1/evaluate/flags/banner", &[], "{oops");
    assert_eq!((garbled.status, garbled.json()["errorCode"].clone()), (400, json!("INVALID_CONTEXT")));
    let not_object = post("/ofrep/v1/evaluate/flags/banner", &[], r#"{"context": 5}"#);
    assert_eq!((not_object.status, not_object.json()["errorCode"].clone()), (400, json!("INVALID_CONTEXT")));
    assert!(not_object.json()["errorDetails"].as_str().unwrap().contains("`context`"), "{not_object:?}");
    let oversized = format!(r#"{{"context": {{"blob": "{}"}}}}"#, "x".repeat(70 * 1024));
    assert_eq!(post("/ofrep/v1/evaluate/flags/banner", &[], &oversized).status, 413);
    let unknown_ns = post("/ofrep/v1/evaluate/flags/banner", &[("Flagd-Selector", "flagSetId=Not_A_Namespace")], "{}");
    assert_eq!(unknown_ns.status, 400, "{unknown_ns:?}");
    assert!(unknown_ns.json()["errorDetails"].as_str().unwrap().contains("selector"), "{unknown_ns:?}");
    let shop = post("/ofrep/v1/evaluate/flags/banner", &[("Flagd-Selector", "flagSetId=shop")], "{}");
    assert_eq!(shop.json()["reason"], "STATIC");

    let bulk = post("/ofrep/v1/evaluate/flags", &[], r#"{"context": {"plan": "pro"}}"#);
    assert_eq!(bulk.status, 200, "{bulk:?}");
    let items = bulk.json()["flags"].as_array().unwrap().clone();
    assert_eq!(items.len(), 7);
    assert!(items.iter().any(|f| f == &json!({"key": "nodefault", "reason": "DEFAULT", "variant": "", "metadata": {"team": "web"}})));
    let etag = bulk.header("etag").expect("an ETag").to_string();
    let again = post("/ofrep/v1/evaluate/flags", &[("If-None-Match", &etag)], r#"{"context": {"plan": "pro"}}"#);
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    let other = post("/ofrep/v1/evaluate/flags", &[("If-None-Match", &etag)], r#"{"context": {"plan": "free"}}"#);
    assert_eq!(other.status, 200, "another context, other results");
    assert_ne!(other.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openfeature_port_takes_the_api_ports_tokens_and_anonymous_read() {
    let c = cluster(true).await;
    let post = |headers: &[(&str, &str)]| {
        c.http(1, Listener::OpenFeature, "POST", "/ofrep/v1/evaluate/flags/color", headers, "{}")
    };
    assert_eq!(post(&[]).status, 401, "no token, namespace not open");
    assert_eq!(post(&[("Authorization", "Bearer vexil_wrong")]).status, 401);
    let admin = c.credentials().admin_token().to_string();
    assert_eq!(post(&[("X-API-Key", &admin)]).json()["value"], "#f00");
    assert_eq!(post(&[("Authorization", &format!("Bearer {admin}"))]).json()["value"], "#f00");

    // Opened to anonymous read, a provider without a token reads it.
    vexil_proto::v1::tokens_client::TokensClient::new(c.channel(1).await)
        .set_anonymous_read(c.request(vexil_proto::v1::SetAnonymousReadRequest {
            namespace: "default".into(),
            enabled: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    vexil_testkit::eventually(Duration::from_secs(5), "node 1 applied the setting", || post(&[]).status == 200).await;
    assert_eq!(post(&[]).json()["value"], "#f00");
}

/// The pinned OpenFeature Python packages the provider test installs (from PyPI, once per
/// machine: `vexil_testkit::python_with`).
const PYTHON_PACKAGES: [&str; 4] = [
    "openfeature-sdk==0.10.0",
    "openfeature-provider-flagd==0.6.1",
    "openfeature-flagd-core==2.0.0",
    "openfeature-provider-ofrep==0.3.0",
];

/// Runs `openfeature_providers.py` in `mode` against node 2 and checks what the provider got;
/// between its two halves, makes `color` blue.
async fn drive_provider(c: &Cluster, python: &std::path::Path, mode: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openfeature_providers.py");
    let port = c.port(2, Listener::OpenFeature).to_string();
    let mut child = vexil_testkit::python_script(python, script, &[mode, "127.0.0.1", &port]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let line = line.unwrap_or_else(|_| panic!("{mode}: no output within 30 s")).unwrap();
        serde_json::from_str(&line.unwrap_or_else(|| panic!("{mode}: the script ended early"))).unwrap()
    };
    assert_eq!(next().await["step"], "ready", "{mode}");
    let eval = next().await;
    let results = eval["results"].as_array().unwrap();
    let got: Vec<(Value, Value, Value)> =
        results.iter().map(|r| (r["value"].clone(), r["reason"].clone(), r["error"].clone())).collect();
    let want = [
        (json!(true), json!("TARGETING_MATCH"), Value::Null),
        (json!(false), json!("DEFAULT"), Value::Null),
        (json!("#f00"), json!("STATIC"), Value::Null),
        (json!(5), json!("STATIC"), Value::Null),
        (json!(0.5), json!("STATIC"), Value::Null),
        // A protobuf Struct holds numbers as doubles (as flagd's does); JSON documents keep them.
        (if mode == "rpc" { json!({"depth": 2.0}) } else { json!({"depth": 2}) }, json!("STATIC"), Value::Null),
        (json!(false), json!("DISABLED"), Value::Null),
        (json!(false), json!("DEFAULT"), Value::Null),
        (json!(false), json!("ERROR"), json!("FLAG_NOT_FOUND")),
        (json!(false), json!("ERROR"), json!("TYPE_MISMATCH")),
    ];
    assert_eq!(got.len(), want.len(), "{mode}: {results:?}");
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(g, w, "{mode}: {}", results[i]);
    }
    assert_eq!(results[0]["variant"], "on", "{mode}");
    assert_eq!(next().await["step"], "await-change", "{mode}");
    let blue = json!({"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "blue"});
    FlagsClient::new(c.channel(1).await)
        .update_flag(UpdateFlagRequest {
            namespace: "default".into(),
            key: "color".into(),
            spec_json: blue.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"changed\n").await.unwrap();
    let after = next().await;
    assert_eq!(after["result"]["value"], "#00f", "{mode}: the provider saw the change: {after}");
    assert!(child.wait().await.unwrap().success(), "{mode}: the script failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeatures_own_python_providers_work_unchanged() {
    let python =
        vexil_testkit::python_with("openfeature-sdk-0.10.0-flagd-0.6.1-core-2.0.0-ofrep-0.3.0", &PYTHON_PACKAGES);
    for mode in ["rpc", "in-process", "ofrep"] {
        let c = cluster(false).await;
        drive_provider(&c, &python, mode).await;
    }
}
