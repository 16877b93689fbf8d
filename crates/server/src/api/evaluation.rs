//! `vexil.v1.Evaluation`: server-side evaluation with the same engine the client embeds.
//!
//! Each namespace is compiled once per applied revision and kept in a bounded cache
//! ([`Evaluator`], shared with the OpenFeature protocols in `openfeature/`), so an evaluation
//! costs a context parse plus the compiled rule, not a recompilation. The result is
//! rendered by the one conversion in `vexil-proto` (`FlagEvaluation::from_resolution`), which
//! applies the requested type by the model's rule.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use vexil_model::eval::{CompiledNamespace, EvalContext};
use vexil_proto::v1::evaluation_server::Evaluation;
use vexil_proto::v1::{
    Consistency, EvaluateAllRequest, EvaluateAllResponse, EvaluateFlagRequest, EvaluateFlagResponse, FlagEvaluation,
    ValueType,
};

use super::{check_key, check_namespace, read_barrier};
use crate::auth::caller;
use crate::error::ServerError;
use crate::limits::{CONTEXT_BYTES_MAX, EVAL_CACHE_NAMESPACES_MAX};
use crate::node::Node;
use vexil_model::access::Need;

pub struct EvaluationApi {
    pub node: Arc<Node>,
    evaluator: Arc<Evaluator>,
}

/// Compiled namespaces at the latest applied revision, for every evaluating surface of a node.
pub struct Evaluator {
    node: Arc<Node>,
    cache: CompiledCache,
}

/// namespace → (revision it was compiled at, compiled flags), for the
/// [`EVAL_CACHE_NAMESPACES_MAX`] namespaces used last: a caller naming ever new namespaces
/// (each may be empty) costs a compilation each, never memory.
struct CompiledCache(Mutex<lru::LruCache<String, (u64, Arc<CompiledNamespace>)>>);

impl CompiledCache {
    fn new() -> Self {
        let cap = NonZeroUsize::new(EVAL_CACHE_NAMESPACES_MAX).expect("a positive bound");
        CompiledCache(Mutex::new(lru::LruCache::new(cap)))
    }

    fn get(&self, namespace: &str, revision: u64) -> Option<Arc<CompiledNamespace>> {
        let mut cache = self.0.lock().expect("evaluation cache lock poisoned");
        cache.get(namespace).filter(|(rev, _)| *rev == revision).map(|(_, ns)| ns.clone())
    }

    fn put(&self, namespace: &str, revision: u64, compiled: Arc<CompiledNamespace>) {
        self.0.lock().expect("evaluation cache lock poisoned").put(namespace.to_string(), (revision, compiled));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("evaluation cache lock poisoned").len()
    }
}

impl EvaluationApi {
    pub fn new(node: Arc<Node>, evaluator: Arc<Evaluator>) -> Self {
        EvaluationApi { node, evaluator }
    }
}

impl Evaluator {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(Evaluator { node, cache: CompiledCache::new() })
    }

    /// The namespace compiled at the latest applied revision (reused while nothing changed),
    /// and that revision.
    pub fn compiled(&self, namespace: &str) -> Result<(u64, Arc<CompiledNamespace>), ServerError> {
        let revision = self.node.reader.revision()?;
        if let Some(ns) = self.cache.get(namespace, revision) {
            return Ok((revision, ns));
        }
        let (states_revision, doc, settings) = super::current_namespace(&self.node, namespace)?;
        let compiled = Arc::new(CompiledNamespace::with_options(&doc, settings.compile_options()));
        self.cache.put(namespace, states_revision, compiled.clone());
        Ok((states_revision, compiled))
    }
}

fn parse_context(json: &str) -> Result<Map<String, Value>, ServerError> {
    if json.is_empty() {
        return Ok(Map::new());
    }
    if json.len() > CONTEXT_BYTES_MAX {
        return Err(ServerError::invalid(
            "context_json",
            format!("is {} bytes; the limit is {CONTEXT_BYTES_MAX}", json.len()),
        ));
    }
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ServerError::invalid("context_json", "must be a JSON object")),
        Err(e) => Err(ServerError::invalid("context_json", format!("malformed JSON: {e}"))),
    }
}

#[tonic::async_trait]
impl Evaluation for EvaluationApi {
    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace, key = %req.get_ref().key))]
    async fn evaluate_flag(&self, req: Request<EvaluateFlagRequest>) -> Result<Response<EvaluateFlagResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        check_key(&r.key)?;
        let ty = ValueType::try_from(r.r#type)
            .map_err(|_| ServerError::invalid("type", format!("unknown type {}", r.r#type)))?
            .requested();
        let context = parse_context(&r.context_json)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, ns) = self.evaluator.compiled(&r.namespace)?;
        let ctx = EvalContext::from_json(&context);
        let resolution = ns.evaluate(&r.key, &ctx, self.node.now_ms() / 1000);
        let evaluation = FlagEvaluation::from_resolution(&r.key, resolution, ty);
        Ok(Response::new(EvaluateFlagResponse { header: header(revision), evaluation: Some(evaluation) }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn evaluate_all(&self, req: Request<EvaluateAllRequest>) -> Result<Response<EvaluateAllResponse>, Status> {
        let who = caller(&self.node, &req).await?;
        let r = req.into_inner();
        who.check(Need::Read(&r.namespace))?;
        check_namespace(&r.namespace)?;
        let context = parse_context(&r.context_json)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, ns) = self.evaluator.compiled(&r.namespace)?;
        let ctx = EvalContext::from_json(&context);
        let now = self.node.now_ms() / 1000;
        let evaluations =
            ns.keys().map(|key| FlagEvaluation::from_resolution(key, ns.evaluate(key, &ctx, now), None)).collect();
        Ok(Response::new(EvaluateAllResponse { header: header(revision), evaluations }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_cache_keeps_at_most_its_bound_of_namespaces() {
        let cache = CompiledCache::new();
        let empty = Arc::new(CompiledNamespace::new(&vexil_model::NamespaceDocument::default()));
        for i in 0..EVAL_CACHE_NAMESPACES_MAX + 50 {
            cache.put(&format!("ns-{i}"), 7, empty.clone());
        }
        assert_eq!(cache.len(), EVAL_CACHE_NAMESPACES_MAX);
        assert!(cache.get("ns-0", 7).is_none(), "the least recently used went");
        let last = format!("ns-{}", EVAL_CACHE_NAMESPACES_MAX + 49);
        assert!(cache.get(&last, 7).is_some());
        assert!(cache.get(&last, 8).is_none(), "a newer revision compiles again");
    }
}
