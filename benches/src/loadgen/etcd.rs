//! The etcd backend: etcd's v3 gRPC API (messages in [`super::etcd_proto`]) over the same tonic
//! stack as the Vexil backend.

use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::backend::{Backend, Level, NodeStatus, Receipt};
use super::etcd_proto::{
    PUT, PutRequest, PutResponse, RANGE, RangeRequest, RangeResponse, STATUS, StatusRequest, StatusResponse, WATCH,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use super::vexil::channel;
use super::workload::NAMESPACE;

pub struct Etcd;

/// The etcd key of a benchmark key: `bench/<key>`.
fn etcd_key(key: &str) -> Vec<u8> {
    format!("{NAMESPACE}/{key}").into_bytes()
}

async fn unary<Req, Resp>(conn: &Channel, path: &'static str, req: Req) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = Grpc::new(conn.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unknown(format!("the channel is not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec).await.map(|r| r.into_inner())
}

impl Backend for Etcd {
    type Conn = Channel;
    const NAME: &'static str = "etcd";
    const LEVELS: &'static [Level] = &[Level::Linearizable, Level::Serializable];

    async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
        channel(endpoint).await
    }

    async fn seed(conn: &Channel, keys: &[String], value: &str) -> anyhow::Result<()> {
        for key in keys {
            let req = PutRequest { key: etcd_key(key), value: value.as_bytes().to_vec() };
            unary::<_, PutResponse>(conn, PUT, req).await.with_context(|| format!("seeding {key}"))?;
        }
        Ok(())
    }

    async fn write(conn: &Channel, key: &str, value: String, _request_id: String) -> anyhow::Result<u64> {
        let req = PutRequest { key: etcd_key(key), value: value.into_bytes() };
        let reply: PutResponse = unary(conn, PUT, req).await?;
        Ok(reply.header.map(|h| h.revision.max(0) as u64).unwrap_or(0))
    }

    async fn read(conn: &Channel, key: &str, level: Level) -> anyhow::Result<()> {
        let req =
            RangeRequest { key: etcd_key(key), range_end: Vec::new(), serializable: level != Level::Linearizable };
        let _: RangeResponse = unary(conn, RANGE, req).await?;
        Ok(())
    }

    async fn watch(
        conn: &Channel,
        ready: oneshot::Sender<()>,
        tx: mpsc::UnboundedSender<Receipt>,
    ) -> anyhow::Result<()> {
        let mut range_end = format!("{NAMESPACE}/").into_bytes();
        if let Some(last) = range_end.last_mut() {
            *last += 1; // the prefix's end: "bench0"
        }
        let create = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: format!("{NAMESPACE}/").into_bytes(),
                range_end,
                start_revision: 0,
            }),
        };
        // The request stream must stay open: etcd ends the watch when the client half-closes.
        let requests = tokio_stream::once(create).chain(tokio_stream::pending());
        let mut grpc = Grpc::new(conn.clone());
        grpc.ready().await.map_err(|e| anyhow::anyhow!("the channel is not ready: {e}"))?;
        let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
        let mut stream =
            grpc.streaming(tonic::Request::new(requests), PathAndQuery::from_static(WATCH), codec).await?.into_inner();
        let mut ready = Some(ready);
        while let Some(msg) = stream.next().await {
            let now = Instant::now();
            let msg = msg?;
            if msg.canceled {
                anyhow::bail!("etcd cancelled the watch: {}", msg.cancel_reason);
            }
            if msg.created
                && let Some(r) = ready.take()
            {
                let _ = r.send(());
            }
            if let Some(rev) = msg.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max()
                && tx.send((rev.max(0) as u64, now)).is_err()
            {
                break;
            }
        }
        Ok(())
    }

    async fn status(conn: &Channel) -> anyhow::Result<NodeStatus> {
        let s: StatusResponse = unary(conn, STATUS, StatusRequest {}).await?;
        let self_id = s.header.map(|h| h.member_id).unwrap_or(0);
        Ok(NodeStatus { self_id, leader_id: s.leader })
    }
}
