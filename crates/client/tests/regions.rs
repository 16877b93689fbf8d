//! A client with a region streams from its region's node, moves to another region's when that
//! node dies, and comes back once it runs again, losing no change on either move.

use std::time::Duration;

use vexil_client::{Client, ConnectOptions, WriteOpts};
use vexil_testkit::{Cluster, bool_spec, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_prefers_its_region_falls_back_and_returns() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await;
    let admin = vexil_client::AdminClient::new(cluster.api_addrs())?;
    admin.create_flag("ns", "f", &bool_spec("on", "0"), WriteOpts::reason("start")).await?;
    // Node 2 is "our region"; 1 and 3 are elsewhere.
    let home = cluster.api_addr(2);
    let others = cluster.endpoints(&[1, 3]);
    let options = ConnectOptions::new().region("home", [home.clone()]).region_return_after(Duration::from_secs(2));
    let client = Client::builder(others.split(',').map(str::to_string))
        .namespace("ns")
        .connect_options(options)
        .connect()
        .await?;
    let addrs: Vec<(u64, String)> = (1..=3).map(|n| (n, cluster.api_addr(n))).collect();
    let on = |client: &Client| {
        let endpoint = client.status().endpoint?;
        addrs.iter().find(|(_, a)| endpoint.ends_with(a.as_str())).map(|(n, _)| *n)
    };
    assert_eq!(on(&client), Some(2), "the stream starts in the region: {:?}", client.status());

    cluster.kill(2);
    let w = admin.update_flag("ns", "f", &bool_spec("on", "1"), None, WriteOpts::reason("while away")).await?;
    assert!(client.wait_for_revision(w.revision, Duration::from_secs(15)).await, "{:?}", client.status());
    let away = on(&client);
    assert!(matches!(away, Some(1 | 3)), "with its region down it streams from another: {away:?}");

    cluster.restart(2);
    cluster.wait_leader(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(20), "the stream is back in its region", || on(&client) == Some(2)).await;
    let w = admin.update_flag("ns", "f", &bool_spec("on", "2"), None, WriteOpts::reason("back home")).await?;
    assert!(client.wait_for_revision(w.revision, Duration::from_secs(15)).await, "{:?}", client.status());
    assert_eq!(on(&client), Some(2));
    let d = client.bool_details("f", &vexil_client::EvalContext::new(), false);
    assert_eq!(d.flag_metadata["tag"], "2", "every change arrived");
    Ok(())
}
