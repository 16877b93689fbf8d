//! The OpenFeature port (`openfeature_listen`): a node as a drop-in flagd and OFREP server, so
//! services in any language point their existing OpenFeature providers at it unchanged.
//!
//! One HTTP port, HTTP/1.1 and HTTP/2 (with TLS when the node has it, offering both by ALPN):
//! - `flagd.evaluation.v1.Service` and `flagd.evaluation.v2.Service` over gRPC ([`flagd`]) and
//!   over the Connect protocol, for the Go provider ([`connect`]),
//! - `flagd.sync.v1.FlagSyncService` over gRPC, for in-process providers ([`sync`]),
//! - OFREP, `POST /ofrep/v1/evaluate/flags[/{key}]` ([`ofrep`]).
//!
//! A namespace is a flagd flag set. A request selects one with a flagd selector
//! (`flagSetId=<namespace>`, `source=<namespace>` or a bare name; the `Flagd-Selector` header);
//! without one it gets `openfeature.default_namespace`. Callers authenticate as on the API port
//! (`Authorization: Bearer`, or OFREP's `X-API-Key`); a provider that sends no token (flagd's
//! RPC providers have no way to) reads the namespaces open to anonymous read. Evaluation is the
//! node's one evaluator ([`Evaluator`]) under a lease read, as on the API port.

pub mod connect;
pub mod flagd;
pub mod ofrep;
pub mod sync;

use std::sync::Arc;

use vexil_model::access::Need;

use crate::api::evaluation::Evaluator;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Authenticator, Principal};
use crate::error::ServerError;
use crate::node::Node;

/// Everything the OpenFeature port serves: flagd's evaluation services (v1 and v2, over gRPC and
/// Connect) and sync service, behind the same authentication as the API port, and OFREP.
pub fn router(of: OpenFeature, authn: Authenticator) -> axum::Router {
    use vexil_proto::flagd::evaluation::{v1, v2};
    use vexil_proto::flagd::sync::v1::flag_sync_service_server::FlagSyncServiceServer;
    let v1 = v1::service_server::ServiceServer::new(flagd::V1(of.clone()));
    let v2 = v2::service_server::ServiceServer::new(flagd::V2(of.clone()));
    let sync = FlagSyncServiceServer::new(sync::Sync(of.clone()));
    let grpc = tonic::service::Routes::new(InterceptedService::new(v1, authn.clone()))
        .add_service(InterceptedService::new(v2, authn.clone()))
        .add_service(InterceptedService::new(sync, authn.clone()))
        .into_axum_router();
    let connect = connect::Connect { of: of.clone(), authn };
    grpc.merge(ofrep::router(of)).layer(axum::middleware::from_fn_with_state(connect, connect::middleware))
}

/// The header flagd's providers send a selector in (HTTP header names are case-insensitive).
pub const SELECTOR_HEADER: &str = "flagd-selector";

/// What every OpenFeature surface of a node shares.
#[derive(Clone)]
pub struct OpenFeature {
    pub node: Arc<Node>,
    pub evaluator: Arc<Evaluator>,
    /// The node's stream slots, shared with `Watch` (`limits::WATCH_STREAMS_MAX`).
    pub slots: Arc<tokio::sync::Semaphore>,
}

impl OpenFeature {
    /// The namespace `selector` names (`None` or empty: the configured default), checked.
    pub fn namespace(&self, selector: Option<&str>) -> Result<String, ServerError> {
        let namespace = match selector.map(str::trim).filter(|s| !s.is_empty()) {
            None => self.node.config.openfeature.default_namespace.clone(),
            Some(s) => parse_selector(s)?,
        };
        vexil_model::flag::validate_namespace(&namespace)
            .map_err(|p| ServerError::invalid("selector", format!("names namespace {namespace:?}, which {p}")))?;
        Ok(namespace)
    }

    /// Checks that `who` may read `namespace` and makes the read as current as
    /// `openfeature.consistency` asks (a lease read by default); returns the compiled namespace
    /// and the revision it reflects.
    pub async fn readable(
        &self,
        who: &Principal,
        namespace: &str,
    ) -> Result<(u64, Arc<vexil_model::eval::CompiledNamespace>), ServerError> {
        who.check(Need::Read(namespace))?;
        let level = self.node.config.openfeature.consistency.consistency();
        self.node.read_barrier(level, level, 0).await?;
        self.evaluator.compiled(namespace)
    }

    /// Unix seconds, for `$flagd.timestamp`.
    pub fn now_secs(&self) -> i64 {
        self.node.now_ms() / 1000
    }
}

/// The namespace of a flagd selector: `flagSetId=<ns>`, `source=<ns>` (flagd's other key; here
/// a source is a namespace too) or a bare name. Several `key=value` pairs are separated by commas;
/// `flagSetId` wins.
fn parse_selector(selector: &str) -> Result<String, ServerError> {
    if !selector.contains('=') {
        return Ok(selector.to_string());
    }
    let (mut flag_set, mut source) = (None, None);
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("flagSetId", v)) => flag_set = Some(v.trim()),
            Some(("source", v)) => source = Some(v.trim()),
            _ => {
                return Err(ServerError::invalid(
                    "selector",
                    format!("{part:?} is not `flagSetId=<namespace>` or `source=<namespace>`"),
                ));
            }
        }
    }
    flag_set
        .or(source)
        .map(str::to_string)
        .ok_or_else(|| ServerError::invalid("selector", "names no flag set (`flagSetId=<namespace>`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_names_a_namespace_by_flag_set_source_or_bare_name() {
        assert_eq!(parse_selector("checkout").expect("bare"), "checkout");
        assert_eq!(parse_selector("flagSetId=checkout").expect("flag set"), "checkout");
        assert_eq!(parse_selector("source=checkout").expect("source"), "checkout");
        assert_eq!(parse_selector("source=a, flagSetId=b").expect("both"), "b");
        let bad = parse_selector("team=x").expect_err("unknown key");
        assert!(bad.to_string().contains("selector"), "{bad}");
    }
}
