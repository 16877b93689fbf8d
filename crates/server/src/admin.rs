//! The admin HTTP port: `/metrics` (Prometheus text format), `/livez` (the process serves) and
//! `/readyz` (this node is in a cluster with a known leader and has applied state).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::node::Node;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
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

async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let m = node.metrics();
    let member = m.membership_config.membership().get_node(&node.id).is_some();
    match (member, m.current_leader, m.last_applied) {
        (false, _, _) => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: this node is not a cluster member yet\n".to_string())
        }
        (_, None, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader is known\n".to_string()),
        (_, _, None) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: nothing applied yet\n".to_string()),
        (true, Some(leader), Some(applied)) => {
            (StatusCode::OK, format!("ready: leader {leader}, applied {}\n", applied.index))
        }
    }
}
