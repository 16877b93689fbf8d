//! `grpc.health.v1.Health` on the API port: the standard health service that gRPC load
//! balancers and Kubernetes' `grpc` probe ask. SERVING means exactly what `/readyz` means
//! (`health.rs`: the node would serve a lease read now); NOT_SERVING otherwise.
//!
//! Every check is decided when it is asked, not read from a status pushed earlier. The service
//! name `""` (the whole node) and each `vexil.v1` service are known, all with the same answer:
//! the node serves every service or none. A Watch stream checks again every
//! [`HEALTH_WATCH_INTERVAL_MS`] and sends the status when it changes; when the node starts
//! leaving it sends NOT_SERVING and ends with UNAVAILABLE `ShuttingDown`, so the API can drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use vexil_proto::v1::{audit_server, cluster_server, evaluation_server, flags_server, watch_server};

use crate::error::{self, ServerError};
use crate::health;
use crate::limits::{HEALTH_WATCH_INTERVAL_MS, HEALTH_WATCH_STREAMS_MAX};
use crate::node::Node;

/// The service names a check may ask about: the whole node, and each public service.
const SERVICES: [&str; 6] = [
    "",
    flags_server::SERVICE_NAME,
    audit_server::SERVICE_NAME,
    cluster_server::SERVICE_NAME,
    evaluation_server::SERVICE_NAME,
    watch_server::SERVICE_NAME,
];

pub struct HealthApi {
    node: Arc<Node>,
    /// One permit per open Watch stream ([`HEALTH_WATCH_STREAMS_MAX`]).
    watch_slots: Arc<Semaphore>,
}

impl HealthApi {
    pub fn new(node: Arc<Node>) -> Self {
        HealthApi { node, watch_slots: Arc::new(Semaphore::new(HEALTH_WATCH_STREAMS_MAX)) }
    }
}

/// SERVING when the node is ready (see `health.rs`).
async fn serving_status(node: &Arc<Node>) -> ServingStatus {
    match health::readiness(node).await {
        Ok(_) => ServingStatus::Serving,
        Err(why) => {
            tracing::debug!(node_id = node.id, why, "health: not serving");
            ServingStatus::NotServing
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

type Sender = mpsc::Sender<Result<HealthCheckResponse, Status>>;

#[tonic::async_trait]
impl Health for HealthApi {
    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    #[tracing::instrument(skip_all, fields(node = self.node.id, service = req.get_ref().service))]
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&req.get_ref().service.as_str()) {
            return Err(error::health_unknown_service(&req.get_ref().service));
        }
        Ok(Response::new(response(serving_status(&self.node).await)))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, service = req.get_ref().service))]
    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        if self.node.leaving.has_begun() {
            return Err(ServerError::ShuttingDown.into());
        }
        let permit = self.watch_slots.clone().try_acquire_owned().map_err(|_| ServerError::WatchLimit)?;
        let known = SERVICES.contains(&req.get_ref().service.as_str());
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(watch(self.node.clone(), known, tx, permit));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One Watch stream: the status now, then each change, until the client goes away or the node
/// starts leaving. An unknown service is SERVICE_UNKNOWN for as long as the stream lasts (the
/// protocol keeps such a stream open).
async fn watch(node: Arc<Node>, known: bool, tx: Sender, _permit: OwnedSemaphorePermit) {
    let mut last = None;
    loop {
        let status = if known { serving_status(&node).await } else { ServingStatus::ServiceUnknown };
        if last != Some(status) {
            if tx.send(Ok(response(status))).await.is_err() {
                return;
            }
            last = Some(status);
        }
        tokio::select! {
            () = tx.closed() => return,
            () = node.leaving.begun() => break,
            () = tokio::time::sleep(Duration::from_millis(HEALTH_WATCH_INTERVAL_MS)) => {}
        }
    }
    if known && last != Some(ServingStatus::NotServing) {
        let _ = tx.send(Ok(response(ServingStatus::NotServing))).await;
    }
    let _ = tx.send(Err(ServerError::ShuttingDown.into())).await;
}
