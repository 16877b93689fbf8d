//! `apply` with `dry_run` reports the diff and changes nothing; `Cluster.Snapshot` builds a
//! snapshot covering everything applied.

mod common;

use vexil_proto::v1::{
    ApplyNamespaceRequest, Consistency, CreateFlagRequest, ListFlagsRequest, ReadOptions, SnapshotRequest,
};
use vexil_testkit::spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_the_diff_and_changes_nothing() {
    let cluster = common::start(3).await;
    let mut c = cluster.flags(2).await;
    for key in ["keep", "edit", "drop"] {
        c.create_flag(CreateFlagRequest {
            namespace: "ns".into(),
            key: key.into(),
            spec_json: spec("v1"),
            options: None,
            strict: false,
        })
        .await
        .expect("create");
    }
    let doc = format!(r#"{{"flags":{{"keep":{},"edit":{},"new":{}}}}}"#, spec("v1"), spec("v2"), spec("v1"));
    let req = |dry_run| ApplyNamespaceRequest {
        namespace: "ns".into(),
        document_json: doc.clone(),
        options: None,
        dry_run,
        strict: false,
    };
    let dry = c.apply_namespace(req(true)).await.expect("dry run").into_inner();
    assert!(dry.header.is_none(), "a dry run writes nothing");
    assert_eq!((dry.created, dry.updated, dry.deleted, dry.unchanged), (1, 1, 1, 1));
    let changes: Vec<_> = dry.diff.iter().map(|d| (d.key.as_str(), d.change.as_str())).collect();
    assert_eq!(changes, [("new", "added"), ("edit", "changed"), ("drop", "removed")]);
    let edit = &dry.diff[1];
    assert_eq!(edit.fields.len(), 1);
    assert_eq!(edit.fields[0].field, "metadata");
    assert!(edit.fields[0].before_json.contains("v1") && edit.fields[0].after_json.contains("v2"));

    let listed = |c: &mut vexil_proto::v1::flags_client::FlagsClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move {
            // Linearizable: a lease read on this follower may predate the apply just acknowledged.
            let read = Some(ReadOptions { consistency: Consistency::Linearizable as i32, min_revision: 0 });
            c.list_flags(ListFlagsRequest { namespace: "ns".into(), read, ..Default::default() })
                .await
                .expect("list")
                .into_inner()
                .flags
                .into_iter()
                .map(|f| f.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&mut c).await, ["drop", "edit", "keep"], "nothing changed");
    let real = c.apply_namespace(req(false)).await.expect("apply").into_inner();
    assert_eq!((real.created, real.updated, real.deleted, real.unchanged), (1, 1, 1, 1));
    assert_eq!(listed(&mut c).await, ["edit", "keep", "new"]);
    let again = c.apply_namespace(req(true)).await.expect("dry run").into_inner();
    assert!(again.diff.is_empty() && !again.settings_changed, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_rpc_covers_everything_applied() {
    let cluster = common::start(3).await;
    let mut c = cluster.flags(1).await;
    let mut last = 0;
    for i in 0..20 {
        let r = c
            .create_flag(CreateFlagRequest {
                namespace: "ns".into(),
                key: format!("f{i}"),
                spec_json: spec("v"),
                options: None,
                strict: false,
            })
            .await
            .expect("create");
        last = r.into_inner().header.expect("header").revision;
    }
    let snap = cluster.cluster(1).await.snapshot(SnapshotRequest {}).await.expect("snapshot").into_inner();
    assert!(snap.last_included_index >= last, "{} < {last}", snap.last_included_index);
    let files: Vec<_> = std::fs::read_dir(cluster.data_dir(1).join("snapshots"))
        .expect("snapshot dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .collect();
    assert_eq!(files.len(), 1, "exactly one complete snapshot file");
}
