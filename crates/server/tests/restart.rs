//! Stop all three nodes and start them again from their data directories: every flag and
//! audit entry is intact and the audit hash chain verifies end to end.

mod common;

use vexil_proto::v1::{
    Consistency, CreateFlagRequest, DeleteFlagRequest, ListFlagsRequest, ReadOptions, SetFlagStateRequest,
    UpdateFlagRequest,
};
use vexil_testkit::{spec, verify_chain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_keeps_flags_and_a_verifiable_audit_chain() {
    let mut cluster = common::start(3).await;
    let mut client = cluster.flags(1).await;
    let mut last = 0;
    for i in 0..30 {
        let key = format!("f-{i:02}");
        let r = client
            .create_flag(CreateFlagRequest {
                namespace: "ns".into(),
                key: key.clone(),
                spec_json: spec(&key),
                options: None,
                strict: false,
            })
            .await
            .expect("create");
        last = r.into_inner().header.expect("header").revision;
    }
    for i in 0..10 {
        let key = format!("f-{i:02}");
        let r = client
            .update_flag(UpdateFlagRequest {
                namespace: "ns".into(),
                key: key.clone(),
                spec_json: spec(&format!("{key}-v2")),
                expected_version: Some(1),
                options: None,
                strict: false,
            })
            .await
            .expect("update");
        last = r.into_inner().header.expect("header").revision;
    }
    let r = client
        .set_flag_state(SetFlagStateRequest {
            namespace: "ns".into(),
            key: "f-10".into(),
            enabled: false,
            ..Default::default()
        })
        .await
        .expect("disable");
    last = last.max(r.into_inner().header.expect("header").revision);
    let r = client
        .delete_flag(DeleteFlagRequest { namespace: "ns".into(), key: "f-29".into(), ..Default::default() })
        .await
        .expect("delete");
    last = last.max(r.into_inner().header.expect("header").revision);

    let list = |c: &mut vexil_proto::v1::flags_client::FlagsClient<tonic::transport::Channel>, min_revision| {
        let mut c = c.clone();
        async move {
            c.list_flags(ListFlagsRequest {
                namespace: "ns".into(),
                limit: 1000,
                read: Some(ReadOptions { consistency: Consistency::Stale as i32, min_revision }),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .flags
        }
    };
    let flags_before = list(&mut client, last).await;
    assert_eq!(flags_before.len(), 29);
    let audit_before = cluster.audit_log(1, last).await;
    // The bootstrap membership entry, then 30 creates, 10 updates, a disable and a delete.
    assert_eq!(audit_before[0].action, "membership.change");
    assert_eq!(audit_before.len(), 1 + 30 + 10 + 1 + 1);
    drop(client);

    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader(std::time::Duration::from_secs(30)).await;

    for id in 1..=3u64 {
        let mut c = cluster.flags(id).await;
        assert_eq!(list(&mut c, last).await, flags_before, "node {id} flags after restart");
        let audit = cluster.audit_log(id, last).await;
        assert_eq!(audit, audit_before, "node {id} audit after restart");
        assert_eq!(verify_chain(&audit).unwrap_or_else(|e| panic!("node {id}: {e}")), audit_before.len() as u64);
    }
}
