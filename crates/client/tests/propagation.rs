//! A write reaches every connected client by push, and a client reads its own writes.

use std::time::{Duration, Instant};

use vexil_client::{Client, DataSource, EvalContext, Reason, WriteOpts};
use vexil_testkit::{Cluster, bool_spec, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_seen_by_100_connected_clients() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await;
    let admin = vexil_client::AdminClient::new(cluster.api_addrs())?;
    admin.create_flag("shop", "new-checkout", &bool_spec("off", "v1"), WriteOpts::reason("test")).await?;

    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(Client::builder(cluster.api_addrs()).namespace("shop").start()?);
    }
    let ctx = EvalContext::with_targeting_key("user-1");
    eventually(Duration::from_secs(20), "100 clients synced with the flag off", || {
        clients
            .iter()
            .all(|c| c.status().source == Some(DataSource::Cluster) && !c.bool_value("new-checkout", &ctx, true))
    })
    .await;
    // The clients spread over the nodes (each picks a random first endpoint).
    let nodes: std::collections::BTreeSet<_> = clients.iter().filter_map(|c| c.status().endpoint).collect();
    assert!(nodes.len() >= 2, "100 clients all stream from one node: {nodes:?}");

    let w = admin
        .update_flag("shop", "new-checkout", &bool_spec("on", "v2"), Some(1), WriteOpts::reason("roll out"))
        .await?;
    let acked = Instant::now();
    eventually(Duration::from_secs(10), "every client sees the write", || {
        clients.iter().all(|c| c.bool_value("new-checkout", &ctx, false))
    })
    .await;
    let elapsed = acked.elapsed();
    for c in &clients {
        let d = c.bool_details("new-checkout", &ctx, false);
        assert_eq!((d.value, d.variant.as_deref(), d.reason), (true, Some("on"), Reason::Static));
        assert!(d.revision >= w.revision, "evaluated at {} before the write {}", d.revision, w.revision);
        assert_eq!(d.flag_metadata["tag"], "v2");
    }
    eprintln!("write {} reached 100 clients {elapsed:?} after its acknowledgement", w.revision);

    // Read-your-writes through `wait_for_revision`.
    let w = admin.set_flag_state("shop", "new-checkout", false, Some(2), WriteOpts::reason("kill switch")).await?;
    assert!(clients[7].wait_for_revision(w.revision, Duration::from_secs(5)).await);
    let d = clients[7].bool_details("new-checkout", &ctx, true);
    assert_eq!((d.value, d.reason), (true, Reason::Disabled), "a disabled flag serves the caller's default");
    Ok(())
}
