//! The admin HTTP port: `/metrics` (Prometheus text format), `/livez` (503 once the Raft core
//! has stopped: restart the node) and `/readyz` (503 unless the node would serve a lease read
//! now: route requests elsewhere). The rules are in `health.rs`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health;
use crate::node::Node;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(node)
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let m = node.metrics();
    let gauges = &node.metrics;
    gauges.raft_term.set(m.current_term as i64);
    gauges.raft_is_leader.set(i64::from(m.current_leader == Some(node.id)));
    gauges.raft_last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
    gauges.raft_applied_index.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &node.metrics.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}

async fn livez(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match health::why_not_live(&node) {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(stop) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: the Raft core has stopped ({stop}); the node is exiting\n"),
        ),
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match health::readiness(&node).await {
        Ok(r) => (
            StatusCode::OK,
            format!("ready: leader {}, applied {}, read lease at {}\n", r.leader, r.applied, r.lease_index),
        ),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
