//! Killing the node a client streams from: the client resumes on another node from its last
//! applied revision and applies exactly the acknowledged writes, in order, each once.

use std::time::Duration;

use vexil_client::{Client, EvalContext, UpdateKind, WriteOpts};
use vexil_testkit::{Cluster, bool_spec, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_streaming_node_resumes_elsewhere_with_the_exact_revisions() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await;
    let admin = vexil_client::AdminClient::new(cluster.api_addrs())?;
    let created = admin.create_flag("ns", "counter", &bool_spec("on", "0"), WriteOpts::reason("start")).await?;
    let client = Client::builder(cluster.api_addrs()).namespace("ns").connect().await?;
    assert!(client.status().connected);
    // The node the client bootstrapped from may not have applied the create yet (its snapshot
    // is a lease read); then the create arrives as a change. Count events from after it.
    assert!(client.wait_for_revision(created.revision, Duration::from_secs(5)).await);
    let mut events = client.subscribe();

    let mut acked = Vec::new();
    let mut version = 1;
    let write = |version: u64, tag: String| {
        let admin = admin.clone();
        async move {
            admin.update_flag("ns", "counter", &bool_spec("on", &tag), Some(version), WriteOpts::reason("w")).await
        }
    };
    for i in 0..10 {
        let w = write(version, format!("a{i}")).await?;
        version = w.version;
        acked.push(w.revision);
    }
    assert!(client.wait_for_revision(*acked.last().unwrap(), Duration::from_secs(5)).await);

    let streaming = client.status().endpoint.expect("connected to a node");
    let victim = cluster.node_at(&streaming).expect("one of the cluster's nodes");
    cluster.kill(victim);

    // Keep writing while the client fails over (the victim may have been the leader: the
    // admin client retries on the other nodes with the same request id).
    for i in 0..20 {
        let w = write(version, format!("b{i}")).await?;
        version = w.version;
        acked.push(w.revision);
    }
    let last = *acked.last().unwrap();
    assert!(client.wait_for_revision(last, Duration::from_secs(15)).await, "status: {:?}", client.status());
    let status = client.status();
    let now_streaming = status.endpoint.clone().expect("connected again");
    assert_ne!(now_streaming, streaming, "the client must have moved off the killed node");
    assert!(status.reconnects >= 1, "{status:?}");

    let mut applied = Vec::new();
    eventually(Duration::from_secs(5), "every change event received", || {
        while let Ok(e) = events.try_recv() {
            assert_eq!(e.kind, UpdateKind::Changes, "no resync may happen on failover: {e:?}");
            applied.push(e.revision);
        }
        applied.last() == Some(&last)
    })
    .await;
    assert_eq!(applied, acked, "the client applied exactly the acknowledged revisions, in order, once each");
    let d = client.bool_details("counter", &EvalContext::new(), false);
    assert_eq!(d.flag_metadata["tag"], "b19");
    Ok(())
}
