//! `vexil.v1.Evaluation`: server-side evaluation with the same engine the client embeds.
//!
//! Each namespace is compiled once per applied revision and kept in a small cache, so an
//! evaluation costs a context parse plus the compiled rule, not a recompilation. The result is
//! rendered by the one conversion in `vexil-proto` (`FlagEvaluation::from_resolution`), which
//! applies the requested type by the model's rule.

use std::collections::HashMap;
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
use crate::error::ServerError;
use crate::limits::CONTEXT_BYTES_MAX;
use crate::node::Node;

pub struct EvaluationApi {
    pub node: Arc<Node>,
    /// namespace → (revision it was compiled at, compiled flags).
    cache: Mutex<HashMap<String, (u64, Arc<CompiledNamespace>)>>,
}

impl EvaluationApi {
    pub fn new(node: Arc<Node>) -> Self {
        EvaluationApi { node, cache: Mutex::new(HashMap::new()) }
    }

    /// The namespace compiled at the latest applied revision (reused while nothing changed).
    fn compiled(&self, namespace: &str) -> Result<(u64, Arc<CompiledNamespace>), ServerError> {
        let revision = self.node.reader.revision()?;
        if let Some((rev, ns)) = self.cache.lock().expect("evaluation cache lock poisoned").get(namespace)
            && *rev == revision
        {
            return Ok((*rev, ns.clone()));
        }
        let (states_revision, doc) = super::current_document(&self.node, namespace)?;
        let compiled = Arc::new(CompiledNamespace::new(&doc));
        self.cache
            .lock()
            .expect("evaluation cache lock poisoned")
            .insert(namespace.to_string(), (states_revision, compiled.clone()));
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
        let r = req.into_inner();
        check_namespace(&r.namespace)?;
        check_key(&r.key)?;
        let ty = ValueType::try_from(r.r#type)
            .map_err(|_| ServerError::invalid("type", format!("unknown type {}", r.r#type)))?
            .requested();
        let context = parse_context(&r.context_json)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, ns) = self.compiled(&r.namespace)?;
        let ctx = EvalContext::from_json(&context);
        let resolution = ns.evaluate(&r.key, &ctx, self.node.now_ms() / 1000);
        let evaluation = FlagEvaluation::from_resolution(&r.key, resolution, ty);
        Ok(Response::new(EvaluateFlagResponse { header: header(revision), evaluation: Some(evaluation) }))
    }

    #[tracing::instrument(skip_all, fields(node = self.node.id, ns = %req.get_ref().namespace))]
    async fn evaluate_all(&self, req: Request<EvaluateAllRequest>) -> Result<Response<EvaluateAllResponse>, Status> {
        let r = req.into_inner();
        check_namespace(&r.namespace)?;
        let context = parse_context(&r.context_json)?;
        let header = read_barrier(&self.node, r.read, Consistency::Lease).await?;
        let (revision, ns) = self.compiled(&r.namespace)?;
        let ctx = EvalContext::from_json(&context);
        let now = self.node.now_ms() / 1000;
        let evaluations =
            ns.keys().map(|key| FlagEvaluation::from_resolution(key, ns.evaluate(key, &ctx, now), None)).collect();
        Ok(Response::new(EvaluateAllResponse { header: header(revision), evaluations }))
    }
}
