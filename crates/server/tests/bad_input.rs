//! Bad input gets INVALID_ARGUMENT naming the field and the problem, and nothing is written.

mod common;

use tonic::Code;
use vexil_proto::v1::{ApplyNamespaceRequest, CreateFlagRequest, GetFlagRequest, UpdateFlagRequest};
use vexil_server::error::{ErrorReason, error_info};
use vexil_testkit::{linearizable, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_definitions_are_rejected_with_the_field_and_nothing_is_written() {
    let cluster = common::start(3).await;
    let mut c = cluster.flags(2).await;
    let huge = "x".repeat(vexil_model::limits::FLAG_BYTES_MAX + 10);
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("invalid key", "bad key!", spec("k"), "key"),
        ("reserved key", "$flagd", spec("k"), "key"),
        ("bad namespace", "ok", spec("k"), "namespace"),
        (
            "mixed-type variants",
            "mixed",
            r#"{"state":"ENABLED","variants":{"a":true,"b":"yes"},"defaultVariant":"a"}"#.into(),
            "variants.b",
        ),
        (
            "defaultVariant names no variant",
            "dv",
            r#"{"state":"ENABLED","variants":{"a":true},"defaultVariant":"c"}"#.into(),
            "defaultVariant",
        ),
        ("oversized definition", "big", format!(r#"{{"state":"ENABLED","variants":{{"a":"{huge}"}}}}"#), "flag"),
        ("malformed JSON", "broken", r#"{"state":"ENABLED","variants":"#.into(), "flag"),
        ("missing state", "nostate", r#"{"variants":{"a":1}}"#.into(), "state"),
    ];
    for (what, key, spec_json, field) in cases {
        let namespace = if what == "bad namespace" { "Bad NS" } else { "ns" };
        let err = c
            .create_flag(CreateFlagRequest {
                namespace: namespace.into(),
                key: key.into(),
                spec_json,
                options: None,
                strict: false,
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        let (why, meta) = error_info(&err).unwrap_or_else(|| panic!("{what}: no error info"));
        assert_eq!(why, ErrorReason::InvalidField.as_str());
        assert_eq!(meta.get("field").map(String::as_str), Some(field), "{what}: {}", err.message());
        assert!(err.message().contains(field), "{what}: message should name the field: {}", err.message());
    }

    // An update with a bad definition leaves the flag as it was.
    c.create_flag(CreateFlagRequest {
        namespace: "ns".into(),
        key: "good".into(),
        spec_json: spec("v1"),
        options: None,
        strict: false,
    })
    .await
    .expect("create");
    let err = c
        .update_flag(UpdateFlagRequest {
            namespace: "ns".into(),
            key: "good".into(),
            spec_json: r#"{"state":"ENABLED","variants":{"a":1},"defaultVariant":"b"}"#.into(),
            ..Default::default()
        })
        .await
        .expect_err("bad update");
    assert_eq!(err.code(), Code::InvalidArgument);

    // A document with one bad flag applies nothing at all.
    let doc = r#"{"flags":{"new-one":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a"},
                             "bad":{"state":"ENABLED","variants":{"a":1,"b":"s"}}}}"#;
    let err = c
        .apply_namespace(ApplyNamespaceRequest {
            namespace: "ns".into(),
            document_json: doc.into(),
            options: None,
            dry_run: false,
            strict: false,
        })
        .await
        .expect_err("bad document");
    assert_eq!(error_info(&err).expect("info").1.get("field").map(String::as_str), Some("flags.bad.variants.b"));
    let missing = c
        .get_flag(GetFlagRequest { namespace: "ns".into(), key: "new-one".into(), read: None })
        .await
        .expect_err("not applied");
    assert_eq!(missing.code(), Code::NotFound);

    let good = c
        .get_flag(GetFlagRequest { namespace: "ns".into(), key: "good".into(), read: linearizable() })
        .await
        .expect("get");
    assert_eq!(good.into_inner().flag.expect("flag").version, 1);
    let log = cluster.audit_log(1, 0).await;
    let flag_entries: Vec<_> = log.iter().filter(|e| e.action.starts_with("flag.")).collect();
    assert_eq!(flag_entries.len(), 1, "only the one valid create is audited: {log:?}");
}

/// A page of flags ends before it grows past `LIST_RESPONSE_BYTES_MAX`, and says where to go on:
/// paging still returns every flag once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_flags_stops_at_the_response_bound_and_paging_returns_them_all() {
    use vexil_proto::v1::{ListAuditRequest, ListFlagsRequest};
    use vexil_server::limits::LIST_RESPONSE_BYTES_MAX;
    let cluster = common::start(1).await;
    let mut c = cluster.flags(1).await;
    // Each ~180 KiB (12 variants of 15 KB, under the 16 KiB a variant may hold): about 23 fill
    // one page's bound; write a few more.
    let value = "v".repeat(15_000);
    let variants: Vec<String> = (0..12).map(|v| format!(r#""v{v}":"{value}""#)).collect();
    let spec_json = format!(r#"{{"state":"ENABLED","variants":{{{}}},"defaultVariant":"v0"}}"#, variants.join(","));
    let count = LIST_RESPONSE_BYTES_MAX / spec_json.len() + 5;
    for i in 0..count {
        let spec_json = spec_json.clone();
        c.create_flag(CreateFlagRequest {
            namespace: "big".into(),
            key: format!("f{i:03}"),
            spec_json,
            options: None,
            strict: false,
        })
        .await
        .expect("create");
    }
    let mut seen = Vec::new();
    let mut after_key = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_flags(ListFlagsRequest { namespace: "big".into(), after_key, limit: 1000, read: linearizable() })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        let bytes: usize = page.flags.iter().map(|f| f.spec_json.len()).sum();
        assert!(bytes <= LIST_RESPONSE_BYTES_MAX, "page {pages} holds {bytes} bytes");
        assert!(!page.flags.is_empty());
        seen.extend(page.flags.iter().map(|f| f.key.clone()));
        if page.next_after_key.is_empty() {
            break;
        }
        after_key = page.next_after_key;
    }
    assert!(pages >= 2, "the first page stopped at the bound");
    let want: Vec<String> = (0..count).map(|i| format!("f{i:03}")).collect();
    assert_eq!(seen, want, "every flag once, in order");

    // Their audit entries (each carries the whole flag) page the same way: `more` says go on.
    let mut audit = cluster.audit(1).await;
    let (mut seen, mut after_seq, mut pages) = (Vec::new(), 0, 0);
    loop {
        let page = audit
            .list_audit(ListAuditRequest {
                namespace: "big".into(),
                after_seq,
                limit: 1000,
                read: linearizable(),
                ..Default::default()
            })
            .await
            .expect("audit page")
            .into_inner();
        pages += 1;
        let bytes: usize = page.entries.iter().map(|e| e.after.as_ref().map_or(0, String::len)).sum();
        assert!(bytes <= LIST_RESPONSE_BYTES_MAX, "audit page {pages} holds {bytes} bytes");
        seen.extend(page.entries.iter().map(|e| e.key.clone()));
        match page.entries.last() {
            Some(e) if page.more => after_seq = e.seq,
            _ => break,
        }
    }
    assert!(pages >= 2, "the first audit page stopped at the bound");
    assert_eq!(seen, want, "every creation once, in order");

    // A watch's initial snapshot of the namespace comes in parts of bounded size, all of one
    // revision, `more` on every part but the last; joined, they hold every flag once.
    use prost::Message;
    use vexil_proto::v1::WatchRequest;
    use vexil_proto::v1::watch_response::Kind;
    use vexil_server::limits::WATCH_SNAPSHOT_PART_BYTES;
    let mut stream = vexil_proto::v1::watch_client::WatchClient::new(cluster.channel(1).await)
        .watch(WatchRequest { namespaces: vec!["big".into()], after_revision: 0, initial_snapshot: true })
        .await
        .expect("watch")
        .into_inner();
    let mut joined: Option<vexil_proto::v1::WatchSnapshot> = None;
    let mut parts = 0;
    loop {
        let msg = stream.message().await.expect("a message").expect("the stream stays open");
        let Some(Kind::Snapshot(part)) = msg.kind else { panic!("a snapshot part, got {msg:?}") };
        parts += 1;
        assert!(
            part.encoded_len() <= WATCH_SNAPSHOT_PART_BYTES + 64 * 1024,
            "part {parts}: {} bytes",
            part.encoded_len()
        );
        match joined.as_mut() {
            Some(j) => {
                assert_eq!(j.revision, part.revision, "every part is of one revision");
                j.absorb(part);
            }
            None => joined = Some(part),
        }
        if !joined.as_ref().expect("joined").more {
            break;
        }
    }
    let joined = joined.expect("a snapshot");
    assert!(parts >= 4, "about 5 MB in parts of 1 MiB: {parts} parts");
    assert_eq!(joined.namespaces.len(), 1);
    let keys: Vec<String> = joined.namespaces[0].flags.iter().map(|f| f.key.clone()).collect();
    assert_eq!(keys, want, "every flag once, in order");
}

/// Namespaces are listed a page at a time (no listing reads them all), in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_listed_in_bounded_pages() {
    use vexil_proto::v1::ListNamespacesRequest;
    let cluster = common::start(1).await;
    let mut c = cluster.flags(1).await;
    let want: Vec<String> = (0..25).map(|i| format!("ns-{i:02}")).collect();
    for ns in &want {
        c.create_flag(CreateFlagRequest {
            namespace: ns.clone(),
            key: "k".into(),
            spec_json: spec("k"),
            options: None,
            strict: false,
        })
        .await
        .expect("create");
    }
    let (mut seen, mut after, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = c
            .list_namespaces(ListNamespacesRequest { read: linearizable(), after, limit: 10 })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.namespaces.len() <= 10, "{page:?}");
        seen.extend(page.namespaces);
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(seen, want);
    assert_eq!(pages, 3);
}

/// One connection carries at most `API_CONCURRENT_STREAMS_MAX` calls at once (HTTP/2's
/// SETTINGS_MAX_CONCURRENT_STREAMS): one more is not served beside them, it waits until one of
/// them ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_at_most_the_stream_limit_at_once() {
    use std::time::Duration;
    use vexil_proto::v1::WatchRequest;
    use vexil_proto::v1::watch_client::WatchClient;
    use vexil_server::limits::API_CONCURRENT_STREAMS_MAX;
    let cluster = common::start(1).await;
    let channel = cluster.channel(1).await;
    let req = || WatchRequest { namespaces: vec!["quiet".into()], after_revision: 0, initial_snapshot: false };
    let mut open = Vec::new();
    for _ in 0..API_CONCURRENT_STREAMS_MAX {
        open.push(WatchClient::new(channel.clone()).watch(req()).await.expect("a stream within the limit"));
    }
    let mut extra = WatchClient::new(channel.clone());
    let waiting = tokio::time::timeout(Duration::from_millis(1_500), extra.watch(req())).await;
    assert!(waiting.is_err(), "call {} was served beside the others", API_CONCURRENT_STREAMS_MAX + 1);
    drop(open.pop());
    tokio::time::timeout(Duration::from_secs(10), extra.watch(req()))
        .await
        .expect("served once a stream ended")
        .expect("a stream");
}
