//! A client whose node is cut off from the rest of the cluster knows it: the node stops
//! confirming the copy current (no `progress`, then `stale`), the client reports itself stale
//! within the bound while it keeps serving its last-known-good values, and once the cluster is
//! reachable again it sees the kill switch flipped meanwhile, through another node.

use std::time::{Duration, Instant};

use vexil_client::{Client, EvalContext, Reason, WriteOpts};
use vexil_testkit::{Cluster, bool_spec};

const PROGRESS_MS: u64 = 200;
const UNCONFIRMED_MAX_MS: u64 = 1_000;
const MAX_STALENESS: Duration = Duration::from_millis(1_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_cut_off_node_reports_stale_then_sees_the_kill_switch_elsewhere() -> anyhow::Result<()> {
    let cluster = Cluster::builder(3).watch_freshness_ms(PROGRESS_MS, UNCONFIRMED_MAX_MS).start().await;
    let admin = vexil_client::AdminClient::new(cluster.api_addrs())?;
    let created = admin.create_flag("app", "checkout", &bool_spec("on", "t"), WriteOpts::reason("t")).await?;
    let client = Client::builder(cluster.api_addrs()).namespace("app").max_staleness(MAX_STALENESS).connect().await?;
    assert!(client.wait_for_revision(created.revision, Duration::from_secs(5)).await);
    let ctx = EvalContext::new();
    assert!(client.bool_value("checkout", &ctx, false));
    // Healthy: confirmed about every progress interval, never stale.
    tokio::time::sleep(Duration::from_millis(3 * PROGRESS_MS)).await;
    let st = client.status();
    assert!(!st.is_stale() && st.since_last_update.is_some_and(|d| d < MAX_STALENESS), "{st:?}");

    // Cut the client's node off: the other two stop.
    let streaming = client.status().endpoint.expect("connected");
    let attached = cluster.node_at(&streaming).expect("a node of the cluster");
    let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != attached).collect();
    for id in &others {
        cluster.pause(*id);
    }
    let cut = Instant::now();
    let mut stale = client.stale_changes();
    assert!(!*stale.borrow());
    tokio::time::timeout(Duration::from_secs(10), stale.wait_for(|s| *s))
        .await
        .expect("the client reports itself stale")
        .expect("the client runs");
    let noticed = cut.elapsed();
    assert!(client.status().is_stale(), "{:?}", client.status());
    // Within the node's bound (it says stale) or the client's own, whichever is first.
    // (With room for a loaded machine.)
    let bound = Duration::from_millis(UNCONFIRMED_MAX_MS + 2 * PROGRESS_MS + 1_500)
        .min(MAX_STALENESS + Duration::from_millis(1_500));
    assert!(noticed <= bound, "stale after {noticed:?}; bound {bound:?}");
    assert!(client.bool_value("checkout", &ctx, false), "last-known-good while stale");

    // The cluster comes back and the kill switch is flipped: the client sees it.
    for id in &others {
        cluster.resume(*id);
    }
    let flipped = admin.set_flag_state("app", "checkout", false, None, WriteOpts::reason("kill")).await?;
    assert!(
        client.wait_for_revision(flipped.revision, Duration::from_secs(15)).await,
        "the kill switch arrives: {:?}",
        client.status()
    );
    let d = client.bool_details("checkout", &ctx, false);
    assert_eq!((d.value, d.reason), (false, Reason::Disabled), "the flag is off: the code default");
    tokio::time::timeout(Duration::from_secs(5), stale.wait_for(|s| !*s))
        .await
        .expect("fresh again")
        .expect("the client runs");
    assert!(!client.status().is_stale(), "{:?}", client.status());
    assert!(client.status().reconnects >= 1, "{:?}", client.status());
    Ok(())
}
