//! The Vexil backend: `vexil.v1` over tonic, exactly as any gRPC client would call it.

use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::watch_response::Kind;
use vexil_proto::v1::{
    ApplyNamespaceRequest, Consistency, GetFlagRequest, ReadOptions, StatusRequest, UpdateFlagRequest, WatchRequest,
    WriteOptions,
};

use super::backend::{Backend, Level, NodeStatus, Receipt};
use super::limits::CONNECT_TIMEOUT;
use super::workload::NAMESPACE;

pub struct Vexil;

/// Opens one HTTP/2 connection to `endpoint` (`http://host:port`).
pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

fn consistency(level: Level) -> Consistency {
    match level {
        Level::Linearizable => Consistency::Linearizable,
        Level::Lease => Consistency::Lease,
        Level::Stale | Level::Serializable => Consistency::Stale,
    }
}

/// A namespace document holding `keys`, each defined as `flags[key]`.
pub fn document(keys: &[String], flag: impl Fn(usize) -> String) -> String {
    let mut doc = String::from(r#"{"flags":{"#);
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!("{key:?}:{}", flag(i)));
    }
    doc.push_str("}}");
    doc
}

/// Makes namespace `ns` hold exactly `document`; returns the revision.
pub async fn apply_namespace(conn: &Channel, ns: &str, document: String, request_id: String) -> anyhow::Result<u64> {
    let reply = FlagsClient::new(conn.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .apply_namespace(ApplyNamespaceRequest {
            namespace: ns.into(),
            document_json: document,
            options: Some(WriteOptions { request_id, reason: "load generator".into() }),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(reply.header.map(|h| h.revision).unwrap_or(0))
}

/// A linearizable read of one flag (the "is it serving?" probe).
pub async fn get_linearizable(conn: &Channel, ns: &str, key: &str) -> anyhow::Result<()> {
    FlagsClient::new(conn.clone())
        .get_flag(GetFlagRequest {
            namespace: ns.into(),
            key: key.into(),
            read: Some(ReadOptions { consistency: Consistency::Linearizable as i32, min_revision: 0 }),
        })
        .await?;
    Ok(())
}

impl Backend for Vexil {
    type Conn = Channel;
    const NAME: &'static str = "vexil";
    const LEVELS: &'static [Level] = &[Level::Linearizable, Level::Lease, Level::Stale];

    async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
        channel(endpoint).await
    }

    async fn seed(conn: &Channel, keys: &[String], value: &str) -> anyhow::Result<()> {
        // One write creates them all (and 1,000 audit entries).
        apply_namespace(conn, NAMESPACE, document(keys, |_| value.to_string()), "loadgen-seed".into()).await?;
        Ok(())
    }

    async fn write(conn: &Channel, key: &str, value: String, request_id: String) -> anyhow::Result<u64> {
        let reply = FlagsClient::new(conn.clone())
            .update_flag(UpdateFlagRequest {
                namespace: NAMESPACE.into(),
                key: key.into(),
                spec_json: value,
                expected_version: None,
                options: Some(WriteOptions { request_id, reason: String::new() }),
            })
            .await?
            .into_inner();
        Ok(reply.header.map(|h| h.revision).unwrap_or(0))
    }

    async fn read(conn: &Channel, key: &str, level: Level) -> anyhow::Result<()> {
        FlagsClient::new(conn.clone())
            .get_flag(GetFlagRequest {
                namespace: NAMESPACE.into(),
                key: key.into(),
                read: Some(ReadOptions { consistency: consistency(level) as i32, min_revision: 0 }),
            })
            .await?;
        Ok(())
    }

    async fn watch(
        conn: &Channel,
        ready: oneshot::Sender<()>,
        tx: mpsc::UnboundedSender<Receipt>,
    ) -> anyhow::Result<()> {
        // From the node's applied revision, so no history is replayed.
        let status = ClusterClient::new(conn.clone()).status(StatusRequest {}).await?.into_inner();
        let mut stream = WatchClient::new(conn.clone())
            .watch(WatchRequest {
                namespaces: vec![NAMESPACE.into()],
                after_revision: status.applied_index,
                initial_snapshot: false,
            })
            .await?
            .into_inner();
        let _ = ready.send(());
        while let Some(msg) = stream.next().await {
            let now = Instant::now();
            if let Some(Kind::Changes(batch)) = msg?.kind
                && tx.send((batch.revision, now)).is_err()
            {
                break;
            }
        }
        Ok(())
    }

    async fn status(conn: &Channel) -> anyhow::Result<NodeStatus> {
        let s = ClusterClient::new(conn.clone()).status(StatusRequest {}).await?.into_inner();
        Ok(NodeStatus { self_id: s.node_id, leader_id: s.leader_id })
    }
}
