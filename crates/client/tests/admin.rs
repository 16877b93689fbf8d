//! The typed admin client against a real cluster: typed errors, idempotent retries, reads,
//! audit, and failover past a dead endpoint.

use serde_json::json;
use vexil_client::{AdminClient, AuditFilter, Error, WriteOpts};
use vexil_testkit::{Cluster, bool_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_are_typed_idempotent_and_fail_over() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await;
    // The first endpoint is dead: every call must still succeed through the others.
    let mut endpoints = vec!["http://127.0.0.1:1".to_string()];
    endpoints.extend(cluster.api_addrs());
    let admin = AdminClient::new(endpoints)?;

    let w1 = admin.create_flag("pay", "a", &bool_spec("on", "1"), WriteOpts::reason("create")).await?;
    assert_eq!(w1.version, 1);
    assert!(w1.revision > 0);

    // Typed refusals.
    let e = admin.create_flag("pay", "a", &bool_spec("on", "x"), WriteOpts::default()).await.unwrap_err();
    assert_eq!(e, Error::AlreadyExists { current: Some(1) });
    let e = admin.update_flag("pay", "a", &bool_spec("off", "x"), Some(7), WriteOpts::default()).await.unwrap_err();
    assert_eq!(e, Error::VersionMismatch { current: 1, expected: Some(7) });
    let bad = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"}).to_string();
    match admin.create_flag("pay", "b", &bad, WriteOpts::default()).await.unwrap_err() {
        Error::Invalid { field, .. } => assert!(field.contains("defaultVariant"), "{field}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let e = admin.get_flag("pay", "missing").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");

    // A write retried with the same request id applies once and returns the first result.
    let opts = WriteOpts::reason("retry me").with_request_id("req-42");
    let first = admin.update_flag("pay", "a", &bool_spec("off", "2"), Some(1), opts.clone()).await?;
    let again = admin.update_flag("pay", "a", &bool_spec("off", "2"), Some(1), opts).await?;
    assert_eq!(first, again, "the retry must return the first outcome, not apply again");
    let flag = admin.get_flag("pay", "a").await?;
    assert_eq!(flag.value.version, 2);
    assert!(flag.header.revision >= first.revision);

    // Lists, apply, audit, status.
    let doc = json!({"flags": {"x": serde_json::from_str::<serde_json::Value>(&bool_spec("on", "doc"))?}}).to_string();
    let applied = admin.apply_namespace("docs", &doc, WriteOpts::reason("apply")).await?;
    assert_eq!((applied.created, applied.deleted), (1, 0));
    let flags = admin.list_flags("pay").await?;
    assert_eq!(flags.value.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["a"]);
    let namespaces = admin.list_namespaces().await?.value;
    assert!(namespaces.contains(&"pay".to_string()) && namespaces.contains(&"docs".to_string()), "{namespaces:?}");
    let audit = admin.list_audit(&AuditFilter { namespace: "pay".into(), ..Default::default() }).await?;
    let actions: Vec<&str> = audit.value.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["flag.create", "flag.update"], "one audit entry per applied write");
    assert_eq!(audit.value[1].request_id, "req-42");
    let status = admin.cluster_status().await?;
    assert_eq!(status.voters.len(), 3);
    assert!(status.leader_id != 0);

    let w = admin.delete_flag("pay", "a", Some(2), WriteOpts::reason("cleanup")).await?;
    assert_eq!(w.version, 0);
    Ok(())
}
