//! The admin HTTP port: `/metrics` (Prometheus text format), `/livez` (503 once the Raft core
//! has stopped: restart the node) and `/readyz` (503 unless the node would serve a lease read
//! now: route requests elsewhere). The rules are in `health.rs`.
//!
//! Served over TLS when the node has TLS (`tls::HttpsListener`). `/metrics` needs a bearer
//! token of any role (Prometheus sends one with `authorization` in its scrape config); the
//! probes answer anyone, as a kubelet or load balancer must be able to ask without a token, and
//! they tell nothing but the node's health.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use vexil_model::access::Need;

use crate::auth;
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

async fn metrics(State(node): State<Arc<Node>>, headers: HeaderMap) -> impl IntoResponse {
    let allowed = auth::authenticate_header(&node, headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        .and_then(|who| who.check(Need::AnyRole));
    if let Err(e) = allowed {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, format!("{e}\n")).into_response();
        if let Some(secs) = e.retry_after_secs()
            && let Ok(value) = header::HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
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
