//! The Vexil backend: `vexil.v1` over tonic, exactly as any gRPC client would call it. In a
//! secure cluster every call carries the admin token as `authorization: Bearer <secret>` over
//! mutual TLS (the nodes run `--tls-client-cert-auth true`, as etcd runs `--client-cert-auth`).

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::metadata::AsciiMetadataValue;
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
use super::security::{self, Login, Secure};
use super::workload::NAMESPACE;

pub struct Vexil;

/// One connection to a node, and the `authorization` value every call carries (secure mode).
#[derive(Clone)]
pub struct VexilConn {
    channel: Channel,
    bearer: Option<AsciiMetadataValue>,
}

impl VexilConn {
    /// `msg` as a request, with the bearer token when there is one.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(bearer) = &self.bearer {
            req.metadata_mut().insert("authorization", bearer.clone());
        }
        req
    }
}

/// Opens one connection to `endpoint` (`http://` or, with `secure`, `https://`).
pub async fn connect(endpoint: &str, secure: Option<&Secure>) -> anyhow::Result<VexilConn> {
    let bearer = match secure.map(|s| &s.login) {
        None => None,
        Some(Login::Bearer(token)) => Some(
            format!("Bearer {token}").parse().map_err(|_| anyhow::anyhow!("the admin token is not ASCII metadata"))?,
        ),
        Some(Login::EtcdUser { .. }) => anyhow::bail!("a Vexil cluster is logged into with a bearer token, not a user"),
    };
    Ok(VexilConn { channel: security::channel(endpoint, secure).await?, bearer })
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
pub async fn apply_namespace(conn: &VexilConn, ns: &str, document: String, request_id: String) -> anyhow::Result<u64> {
    let reply = FlagsClient::new(conn.channel.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .apply_namespace(conn.request(ApplyNamespaceRequest {
            namespace: ns.into(),
            document_json: document,
            options: Some(WriteOptions { request_id, reason: "load generator".into() }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(reply.header.map(|h| h.revision).unwrap_or(0))
}

/// The node's `Cluster.Status`.
pub async fn status(conn: &VexilConn) -> anyhow::Result<vexil_proto::v1::StatusResponse> {
    Ok(ClusterClient::new(conn.channel.clone()).status(conn.request(StatusRequest {})).await?.into_inner())
}

/// A linearizable read of one flag (the "is it serving?" probe).
pub async fn get_linearizable(conn: &VexilConn, ns: &str, key: &str) -> anyhow::Result<()> {
    FlagsClient::new(conn.channel.clone())
        .get_flag(conn.request(GetFlagRequest {
            namespace: ns.into(),
            key: key.into(),
            read: Some(ReadOptions { consistency: Consistency::Linearizable as i32, min_revision: 0 }),
        }))
        .await?;
    Ok(())
}

impl Backend for Vexil {
    type Conn = VexilConn;
    const NAME: &'static str = "vexil";
    const LEVELS: &'static [Level] = &[Level::Linearizable, Level::Lease, Level::Stale];

    async fn connect(endpoint: &str, secure: Option<&Secure>) -> anyhow::Result<VexilConn> {
        connect(endpoint, secure).await
    }

    async fn seed(conn: &VexilConn, keys: &[String], value: &str) -> anyhow::Result<()> {
        // One write creates them all (and 1,000 audit entries).
        apply_namespace(conn, NAMESPACE, document(keys, |_| value.to_string()), "loadgen-seed".into()).await?;
        Ok(())
    }

    async fn write(conn: &VexilConn, key: &str, value: String, request_id: String) -> anyhow::Result<u64> {
        let reply = FlagsClient::new(conn.channel.clone())
            .update_flag(conn.request(UpdateFlagRequest {
                namespace: NAMESPACE.into(),
                key: key.into(),
                spec_json: value,
                expected_version: None,
                options: Some(WriteOptions { request_id, reason: String::new() }),
                strict: false,
            }))
            .await?
            .into_inner();
        Ok(reply.header.map(|h| h.revision).unwrap_or(0))
    }

    async fn read(conn: &VexilConn, key: &str, level: Level) -> anyhow::Result<()> {
        FlagsClient::new(conn.channel.clone())
            .get_flag(conn.request(GetFlagRequest {
                namespace: NAMESPACE.into(),
                key: key.into(),
                read: Some(ReadOptions { consistency: consistency(level) as i32, min_revision: 0 }),
            }))
            .await?;
        Ok(())
    }

    async fn watch(
        conn: &VexilConn,
        ready: oneshot::Sender<()>,
        tx: mpsc::UnboundedSender<Receipt>,
    ) -> anyhow::Result<()> {
        // From the node's applied revision, so no history is replayed.
        let status = status(conn).await?;
        let mut stream = WatchClient::new(conn.channel.clone())
            .watch(conn.request(WatchRequest {
                namespaces: vec![NAMESPACE.into()],
                after_revision: status.applied_index,
                initial_snapshot: false,
            }))
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

    async fn status(conn: &VexilConn) -> anyhow::Result<NodeStatus> {
        let s = status(conn).await?;
        Ok(NodeStatus { self_id: s.node_id, leader_id: s.leader_id })
    }
}
