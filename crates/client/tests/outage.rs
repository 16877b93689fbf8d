//! Last-known-good: with every node down, evaluations keep serving the last state and report
//! staleness; a process started during the outage serves its disk cache; a process with
//! nothing serves the caller's defaults and says it is not ready; and all recover when the
//! cluster returns.

use std::time::Duration;

use serde_json::json;
use vexil_client::{Client, DataSource, ErrorCode, EvalContext, Reason, WriteOpts};
use vexil_testkit::{Cluster, bool_spec, eventually};

fn tiers() -> String {
    json!({"state": "ENABLED", "variants": {"gold": "G", "basic": "B"}, "defaultVariant": "basic",
           "targeting": {"if": [{"==": [{"var": "plan"}, "gold"]}, "gold", null]}})
    .to_string()
}

fn cached_revision(path: &std::path::Path) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["revision"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_serves_last_known_good_then_the_disk_cache_then_defaults() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("flags.json");
    let admin = vexil_client::AdminClient::new(cluster.api_addrs())?;
    admin.create_flag("app", "dark-mode", &bool_spec("on", "t"), WriteOpts::reason("t")).await?;
    let w = admin.create_flag("app", "tier", &tiers(), WriteOpts::reason("t")).await?;

    let a = Client::builder(cluster.api_addrs()).namespace("app").disk_cache(&cache).connect().await?;
    assert!(a.wait_for_revision(w.revision, Duration::from_secs(5)).await);
    let gold = EvalContext::with_targeting_key("u1").with("plan", "gold");
    eventually(Duration::from_secs(5), "the disk cache holds the latest write", || {
        cached_revision(&cache) >= w.revision
    })
    .await;

    // Every node down.
    cluster.kill_all();
    eventually(Duration::from_secs(10), "the client notices the outage", || !a.status().connected).await;
    let before = a.status().since_last_update.expect("confirmed before the outage");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.status();
    assert!(st.ready && st.is_stale(), "{st:?}");
    assert!(st.revision >= w.revision);
    assert!(st.since_last_update.unwrap() >= before + Duration::from_millis(300), "staleness grows: {st:?}");
    assert!(st.last_error.is_some(), "{st:?}");
    assert!(a.bool_value("dark-mode", &gold, false), "last-known-good value");
    let d = a.string_details("tier", &gold, "default");
    assert_eq!((d.value.as_str(), d.reason, d.error_code), ("G", Reason::TargetingMatch, None));
    a.close().await;
    drop(a);

    // A process restarted during the outage starts from its disk cache.
    let b = Client::builder(cluster.api_addrs())
        .namespace("app")
        .disk_cache(&cache)
        .init_timeout(Duration::from_millis(500))
        .connect()
        .await?;
    let st = b.status();
    assert!(st.ready && !st.connected && st.source == Some(DataSource::DiskCache), "{st:?}");
    assert!(st.revision >= w.revision, "{st:?}");
    assert!(b.bool_value("dark-mode", &gold, false));
    assert_eq!(b.string_value("tier", &gold, "default"), "G");

    // With nothing at all: the caller's defaults, not ready.
    let c = Client::builder(cluster.api_addrs())
        .namespace("app")
        .init_timeout(Duration::from_millis(300))
        .connect()
        .await?;
    assert!(!c.status().ready);
    assert!(!c.bool_value("dark-mode", &gold, false));
    let d = c.string_details("tier", &gold, "default");
    assert_eq!((d.value.as_str(), d.error_code), ("default", Some(ErrorCode::ProviderNotReady)));

    // The cluster returns: both catch up (and a write made now reaches them).
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_leader(Duration::from_secs(30)).await;
    let w = admin.set_flag_state("app", "dark-mode", false, None, WriteOpts::reason("after the outage")).await?;
    for (name, client) in [("b", &b), ("c", &c)] {
        assert!(client.wait_for_revision(w.revision, Duration::from_secs(20)).await, "{name}: {:?}", client.status());
        assert_eq!(client.status().source, Some(DataSource::Cluster));
        assert!(client.bool_value("dark-mode", &gold, true), "{name}: disabled serves the caller's default");
    }
    Ok(())
}
