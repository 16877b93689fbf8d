//! The change feed (initial snapshot, live changes, exact resume on another node) and
//! server-side evaluation (typed, with flagd reasons), on a real three-node cluster.

mod common;

use std::time::Duration;

use tonic::Code;
use vexil_proto::v1::flag_evaluation::Value as PbValue;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::watch_response::Kind;
use vexil_proto::v1::{
    ApplyNamespaceRequest, CreateFlagRequest, DeleteFlagRequest, EvaluateAllRequest, EvaluateFlagRequest,
    UpdateFlagRequest, ValueType, WatchRequest, WatchResponse,
};
use vexil_server::error::error_info;
use vexil_testkit::{linearizable, spec};

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> Kind {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a watch message within 10 s")
            .expect("stream ok")
            .expect("stream open");
        match msg.kind.expect("kind") {
            Kind::Progress(_) => continue,
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_replays_follows_and_resumes_without_gaps() {
    let cluster = common::start(3).await;
    let mut c = cluster.flags(1).await;
    for key in ["a", "b"] {
        c.create_flag(CreateFlagRequest {
            namespace: "web".into(),
            key: key.into(),
            spec_json: spec(key),
            options: None,
            strict: false,
        })
        .await
        .expect("create");
    }
    c.create_flag(CreateFlagRequest {
        namespace: "other".into(),
        key: "x".into(),
        spec_json: spec("x"),
        options: None,
        strict: false,
    })
    .await
    .expect("create other");

    let ch =
        tonic::transport::Channel::from_shared(cluster.api_addr(2)).expect("uri").connect().await.expect("connect");
    let mut stream = WatchClient::new(ch)
        .watch(WatchRequest { namespaces: vec!["web".into()], after_revision: 0, initial_snapshot: true })
        .await
        .expect("watch")
        .into_inner();
    let Kind::Snapshot(snap) = next(&mut stream).await else { panic!("first message must be the snapshot") };
    assert_eq!(snap.namespaces.len(), 1);
    let keys: Vec<_> = snap.namespaces[0].flags.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);

    let upd = c
        .update_flag(UpdateFlagRequest {
            namespace: "web".into(),
            key: "a".into(),
            spec_json: spec("a2"),
            expected_version: Some(1),
            options: None,
            strict: false,
        })
        .await
        .expect("update")
        .into_inner();
    c.create_flag(CreateFlagRequest {
        namespace: "other".into(),
        key: "y".into(),
        spec_json: spec("y"),
        options: None,
        strict: false,
    })
    .await
    .expect("create in another namespace");
    let del = c
        .delete_flag(DeleteFlagRequest { namespace: "web".into(), key: "b".into(), ..Default::default() })
        .await
        .expect("delete")
        .into_inner();
    let doc = format!(r#"{{"flags":{{"a":{},"c":{},"d":{}}}}}"#, spec("a2"), spec("c"), spec("d"));
    let applied = c
        .apply_namespace(ApplyNamespaceRequest {
            namespace: "web".into(),
            document_json: doc,
            options: None,
            dry_run: false,
            strict: false,
        })
        .await
        .expect("apply")
        .into_inner();

    let Kind::Changes(b1) = next(&mut stream).await else { panic!("changes") };
    assert_eq!(b1.revision, upd.header.expect("h").revision);
    assert_eq!(b1.changes[0].action, "flag.update");
    let flag = b1.changes[0].flag.as_ref().expect("flag after update");
    assert_eq!((flag.version, flag.created_revision > 0), (2, true));
    assert!(flag.spec_json.contains("a2"));
    let Kind::Changes(b2) = next(&mut stream).await else { panic!("changes") };
    assert_eq!(b2.revision, del.header.expect("h").revision, "the other namespace's write is filtered out");
    assert_eq!((b2.changes[0].action.as_str(), b2.changes[0].flag.is_none()), ("flag.delete", true));
    let Kind::Changes(b3) = next(&mut stream).await else { panic!("changes") };
    let apply_revision = applied.header.expect("h").revision;
    assert_eq!(b3.revision, apply_revision);
    let created: Vec<_> = b3.changes.iter().map(|ch| (ch.action.as_str(), ch.key.as_str())).collect();
    assert_eq!(created, [("flag.create", "c"), ("flag.create", "d")], "one revision, one batch");

    // Resume on node 3 from the update's revision: exactly the delete and the apply follow.
    let ch3 =
        tonic::transport::Channel::from_shared(cluster.api_addr(3)).expect("uri").connect().await.expect("connect");
    let mut resumed = WatchClient::new(ch3)
        .watch(WatchRequest { namespaces: vec!["web".into()], after_revision: b1.revision, initial_snapshot: false })
        .await
        .expect("watch")
        .into_inner();
    let Kind::Changes(r1) = next(&mut resumed).await else { panic!("changes") };
    let Kind::Changes(r2) = next(&mut resumed).await else { panic!("changes") };
    assert_eq!((r1.revision, r2.revision), (b2.revision, b3.revision));
    assert_eq!(r2.changes.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_is_typed_and_follows_flagd_reasons() {
    let cluster = common::start(3).await;
    let mut c = cluster.flags(1).await;
    let rule = r##"{"state":"ENABLED","variants":{"red":"#f00","blue":"#00f"},"defaultVariant":"blue",
                   "targeting":{"if":[{"ends_with":[{"var":"email"},"@example.com"]},"red",null]}}"##;
    let created = c
        .create_flag(CreateFlagRequest {
            namespace: "ui".into(),
            key: "color".into(),
            spec_json: rule.into(),
            options: None,
            strict: false,
        })
        .await
        .expect("create")
        .into_inner();
    let min_revision = created.header.expect("h").revision;
    let ch =
        tonic::transport::Channel::from_shared(cluster.api_addr(3)).expect("uri").connect().await.expect("connect");
    let mut e = vexil_proto::v1::evaluation_client::EvaluationClient::new(ch);
    let eval = |ctx: &str, ty: ValueType| EvaluateFlagRequest {
        namespace: "ui".into(),
        key: "color".into(),
        context_json: ctx.into(),
        r#type: ty as i32,
        read: Some(vexil_proto::v1::ReadOptions { consistency: 0, min_revision }),
    };
    let hit =
        e.evaluate_flag(eval(r#"{"email":"ann@example.com"}"#, ValueType::String)).await.expect("eval").into_inner();
    let hit = hit.evaluation.expect("evaluation");
    assert_eq!((hit.reason.as_str(), hit.variant.as_str()), ("TARGETING_MATCH", "red"));
    assert_eq!(hit.value, Some(PbValue::StringValue("#f00".into())));
    let miss = e.evaluate_flag(eval(r#"{"email":"bob@other.org"}"#, ValueType::Unspecified)).await.expect("eval");
    let miss = miss.into_inner().evaluation.expect("evaluation");
    assert_eq!((miss.reason.as_str(), miss.variant.as_str()), ("DEFAULT", "blue"));
    let wrong =
        e.evaluate_flag(eval("{}", ValueType::Bool)).await.expect("eval").into_inner().evaluation.expect("evaluation");
    assert_eq!(
        (wrong.reason.as_str(), wrong.error_code.as_str(), wrong.value.is_none()),
        ("ERROR", "TYPE_MISMATCH", true)
    );
    let mut missing = eval("{}", ValueType::Bool);
    missing.key = "nope".into();
    let missing = e.evaluate_flag(missing).await.expect("eval").into_inner().evaluation.expect("evaluation");
    assert_eq!(missing.error_code, "FLAG_NOT_FOUND");
    let bad = e.evaluate_flag(eval("[1]", ValueType::Bool)).await.expect_err("context must be an object");
    assert_eq!(error_info(&bad).expect("info").1.get("field").map(String::as_str), Some("context_json"));
    let all = e
        .evaluate_all(EvaluateAllRequest { namespace: "ui".into(), context_json: "{}".into(), read: None })
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.evaluations.len(), 1);

    // Targeting flagd would load but not evaluate is refused in strict mode, naming the field;
    // otherwise written with a warning, and every evaluation of it is PARSE_ERROR, as in flagd.
    let broken = r#"{"state":"ENABLED","variants":{"a":true},"defaultVariant":"a","targeting":{"no_such_op":[1]}}"#;
    let write = |strict: bool| CreateFlagRequest {
        namespace: "ui".into(),
        key: "broken".into(),
        spec_json: broken.into(),
        options: None,
        strict,
    };
    let err = c.create_flag(write(true)).await.expect_err("unknown operator, strict");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_info(&err).expect("info").1.get("field").map(String::as_str), Some("targeting"));
    let written = c.create_flag(write(false)).await.expect("written with a warning").into_inner();
    assert!(
        written.warnings.len() == 1 && written.warnings[0].contains("unknown operator \"no_such_op\""),
        "{:?}",
        written.warnings
    );
    let r = e
        .evaluate_flag(EvaluateFlagRequest {
            namespace: "ui".into(),
            key: "broken".into(),
            read: linearizable(),
            ..Default::default()
        })
        .await
        .expect("evaluate")
        .into_inner()
        .evaluation
        .expect("evaluation");
    assert_eq!((r.reason.as_str(), r.error_code.as_str()), ("ERROR", "PARSE_ERROR"));
}

/// The `vexil_watch_streams` gauge of a node: its watch slots in use.
fn open_streams(cluster: &vexil_testkit::Cluster, id: u64) -> i64 {
    let (_, metrics) = cluster.admin_get(id, "/metrics");
    let line = metrics.lines().find(|l| l.starts_with("vexil_watch_streams ")).unwrap_or_else(|| panic!("{metrics}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_beyond_the_committed_revision_is_refused_at_once_and_holds_no_slot() {
    let cluster = common::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = if leader == 3 { 2 } else { 3 };
    let mut c = cluster.flags(leader).await;
    let create = |key: &str| CreateFlagRequest {
        namespace: "web".into(),
        key: key.into(),
        spec_json: spec(key),
        options: None,
        strict: false,
    };
    let revision = c.create_flag(create("a")).await.expect("create").into_inner().header.expect("header").revision;

    // Far beyond what the cluster has committed: refused by the leader and by a follower, at
    // once (one read-index round), naming the field; no slot is taken.
    for id in [leader, follower] {
        let ch = cluster.channel(id).await;
        let started = std::time::Instant::now();
        let request =
            WatchRequest { namespaces: vec![], after_revision: revision + 1_000_000, initial_snapshot: false };
        let refused = tokio::time::timeout(Duration::from_secs(5), WatchClient::new(ch).watch(request))
            .await
            .expect("an answer within 5 s, not a parked stream")
            .expect_err("a watch from a future revision is refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(error_info(&refused).expect("info").1.get("field").map(String::as_str), Some("after_revision"));
        assert!(refused.message().contains(&format!("({revision})")), "names the committed revision: {refused:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "refused after {:?}", started.elapsed());
        assert_eq!(open_streams(&cluster, id), 0, "node {id} holds no slot for a refused watch");
    }

    // A revision the follower may not have applied yet but the cluster has committed is served:
    // the follower is stalled while it commits, and asked for it as soon as it runs again.
    cluster.pause(follower);
    let ahead = c.create_flag(create("b")).await.expect("create").into_inner().header.expect("header").revision;
    cluster.resume(follower);
    let ch = cluster.channel(follower).await;
    let mut stream = WatchClient::new(ch)
        .watch(WatchRequest { namespaces: vec![], after_revision: ahead, initial_snapshot: false })
        .await
        .expect("a committed revision is served on a lagging node")
        .into_inner();
    assert_eq!(open_streams(&cluster, follower), 1);
    let next_revision = c.create_flag(create("c")).await.expect("create").into_inner().header.expect("header").revision;
    let Kind::Changes(batch) = next(&mut stream).await else { panic!("changes") };
    assert_eq!((batch.revision, batch.changes[0].key.as_str()), (next_revision, "c"));

    // The slot is given back when the client leaves.
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open_streams(&cluster, follower) != 0 {
        assert!(std::time::Instant::now() < deadline, "the slot was not given back within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
