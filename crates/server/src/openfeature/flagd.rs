//! flagd's evaluation protocol, `flagd.evaluation.v1.Service` and `flagd.evaluation.v2.Service`
//! (the `.proto` files of open-feature/flagd-schemas, compiled in `vexil-proto`), over gRPC.
//!
//! The two versions differ only in what an answer without a value looks like: v2 leaves
//! `value` and `variant` out (a disabled flag, one without a default variant), as OFREP does;
//! v1 sends a disabled flag's zero value with an empty variant, and answers a flag without a
//! default variant NOT_FOUND, as flagd does. Errors are flagd's statuses ([`flagd_status`]).
//!
//! `EventStream` sends `provider_ready` first on every stream, then `configuration_change`
//! naming each flag of the selected namespace that a committed change wrote, updated or deleted
//! (every flag when the namespace's `$evaluators` changed), and `keep_alive` on an idle stream.
//! Providers in RPC mode cache STATIC answers per flag until such an event names the flag; a
//! result is STATIC only when the flag has no targeting, so it never depends on the context.

use std::collections::BTreeMap;
use std::convert::identity;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use prost_types::Struct;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vexil_model::AuditAction;
use vexil_model::eval::{ErrorCode, EvalContext, Reason, TypedValue, ValueType};
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::flagd_struct::{from_struct, to_struct};
use vexil_raft_store::Changes;

use super::{OpenFeature, SELECTOR_HEADER};
use crate::api::watch::{Currency, WatchSlot};
use crate::auth::{Principal, caller, still_valid};
use crate::error::{ServerError, flagd_status};
use crate::limits::{CONTEXT_BYTES_MAX, FLAGD_EVENTS_BUFFER, FLAGD_KEEP_ALIVE_MS, WATCH_BATCH_ENTRIES_MAX};

/// An evaluation as flagd's messages carry it: value (absent for the caller's default),
/// reason, variant, metadata.
struct Resolved {
    value: Option<Scalar>,
    reason: &'static str,
    variant: Option<String>,
    metadata: Struct,
}

/// A value of one of flagd's types.
enum Scalar {
    Bool(bool),
    String(String),
    Int(i64),
    Float(f64),
    Object(Struct),
}

impl Scalar {
    fn of(v: TypedValue<'_>) -> Option<Scalar> {
        Some(match v {
            TypedValue::Bool(b) => Scalar::Bool(b),
            TypedValue::String(s) => Scalar::String(s.to_string()),
            TypedValue::Int(i) => Scalar::Int(i),
            TypedValue::Float(f) => Scalar::Float(f),
            TypedValue::Object(Value::Object(m)) => Scalar::Object(to_struct(m)),
            // flagd's objects are JSON objects; an array variant has no Struct form.
            TypedValue::Object(_) => return None,
        })
    }
}

/// One of the ten typed resolve requests (`ResolveBoolean` ... `ResolveObject`, v1 and v2): the
/// flag and context it names, the type it asks for, and its answer built from a resolution.
trait Typed {
    type Answer;
    const TYPE: ValueType;
    /// v1's rules ([`OpenFeature::resolve_v1`]) rather than v2's.
    const V1: bool;
    fn flag(&self) -> (&str, Option<&Struct>);
    fn answer(out: Resolved) -> Self::Answer;
}

/// [`Typed`] for each request: `$value` turns the resolved value of its type (`None` for the
/// caller's default) into the answer's field; v2 sends no variant as absent, v1 as "".
macro_rules! typed {
    ($ver:ident, $v1:literal, $req:ident -> $resp:ident: $ty:ident, $value:path, $variant:path) => {
        impl Typed for $ver::$req {
            type Answer = $ver::$resp;
            const TYPE: ValueType = ValueType::$ty;
            const V1: bool = $v1;
            fn flag(&self) -> (&str, Option<&Struct>) {
                (&self.flag_key, self.context.as_ref())
            }
            fn answer(out: Resolved) -> $ver::$resp {
                let value = match out.value {
                    Some(Scalar::$ty(v)) => Some(v),
                    _ => None,
                };
                $ver::$resp {
                    value: $value(value),
                    reason: out.reason.into(),
                    variant: $variant(out.variant),
                    metadata: Some(out.metadata),
                }
            }
        }
    };
}

// v2 leaves out what is not there; v1 sends its type's zero value (an object answer always set).
typed!(v2, false, ResolveBooleanRequest -> ResolveBooleanResponse: Bool, identity, identity);
typed!(v2, false, ResolveStringRequest -> ResolveStringResponse: String, identity, identity);
typed!(v2, false, ResolveIntRequest -> ResolveIntResponse: Int, identity, identity);
typed!(v2, false, ResolveFloatRequest -> ResolveFloatResponse: Float, identity, identity);
typed!(v2, false, ResolveObjectRequest -> ResolveObjectResponse: Object, identity, identity);
typed!(v1, true, ResolveBooleanRequest -> ResolveBooleanResponse: Bool, Option::unwrap_or_default, Option::unwrap_or_default);
typed!(v1, true, ResolveStringRequest -> ResolveStringResponse: String, Option::unwrap_or_default, Option::unwrap_or_default);
typed!(v1, true, ResolveIntRequest -> ResolveIntResponse: Int, Option::unwrap_or_default, Option::unwrap_or_default);
typed!(v1, true, ResolveFloatRequest -> ResolveFloatResponse: Float, Option::unwrap_or_default, Option::unwrap_or_default);
typed!(v1, true, ResolveObjectRequest -> ResolveObjectResponse: Object, object_or_empty, Option::unwrap_or_default);

fn object_or_empty(value: Option<Struct>) -> Option<Struct> {
    Some(value.unwrap_or_default())
}

/// A request's evaluation context as JSON, within the API port's bound on contexts.
fn checked_context(context: Option<&Struct>) -> Result<Map<String, Value>, ServerError> {
    let Some(context) = context else { return Ok(Map::new()) };
    let bytes = prost::Message::encoded_len(context);
    if bytes > CONTEXT_BYTES_MAX {
        return Err(ServerError::invalid("context", format!("is {bytes} bytes; the limit is {CONTEXT_BYTES_MAX}")));
    }
    Ok(from_struct(context))
}

pub(super) fn selector<T>(req: &Request<T>) -> Option<String> {
    req.metadata().get(SELECTOR_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl OpenFeature {
    /// Evaluates `key` as `ty` (`None`: as the type it has) for the caller of `req`; `Err` is
    /// the status flagd would answer (v2 rules: no value is a result).
    async fn resolve<T>(
        &self,
        req: &Request<T>,
        key: &str,
        context: Option<&Struct>,
        ty: Option<ValueType>,
    ) -> Result<Resolved, Status> {
        let who = caller(&self.node, req).await?;
        let namespace = self.namespace(selector(req).as_deref())?;
        let (_, ns) = self.readable(&who, &namespace).await?;
        let context = checked_context(context)?;
        let ctx = EvalContext::from_json(&context);
        let r = ns.evaluate(key, &ctx, self.now_secs()).with_type(key, ty);
        if let Some(code) = r.error_code {
            return Err(flagd_status(code, r.error_message.unwrap_or_else(|| code.as_str().to_string())));
        }
        let value = match r.typed_value(ty) {
            None => None,
            Some(v) => Some(Scalar::of(v).ok_or_else(|| {
                flagd_status(ErrorCode::TypeMismatch, format!("flag {key:?} has a value that is not a JSON object"))
            })?),
        };
        Ok(Resolved {
            value,
            reason: r.reason.as_str(),
            variant: r.variant.map(str::to_string),
            metadata: to_struct(r.metadata),
        })
    }

    /// [`OpenFeature::resolve`] by v1's rules: a flag without a default variant (no value, reason
    /// DEFAULT) is NOT_FOUND.
    async fn resolve_v1<T>(
        &self,
        req: &Request<T>,
        key: &str,
        context: Option<&Struct>,
        ty: ValueType,
    ) -> Result<Resolved, Status> {
        let r = self.resolve(req, key, context, Some(ty)).await?;
        if r.value.is_none() && r.reason == Reason::Default.as_str() {
            let message = format!("flag {key:?} has no default variant: the caller's default applies");
            return Err(flagd_status(ErrorCode::FlagNotFound, message));
        }
        Ok(r)
    }

    /// A typed resolve of either version, answered in its own message.
    async fn typed<T: Typed>(&self, req: Request<T>) -> Result<Response<T::Answer>, Status> {
        let (key, context) = req.get_ref().flag();
        let out = if T::V1 {
            self.resolve_v1(&req, key, context, T::TYPE).await?
        } else {
            self.resolve(&req, key, context, Some(T::TYPE)).await?
        };
        Ok(Response::new(T::answer(out)))
    }

    /// The stream of a provider's `EventStream` call: `mk(type, data)` builds a message of the
    /// protocol version asked for.
    async fn event_stream<T, M>(
        &self,
        req: &Request<T>,
        mk: M,
    ) -> Result<ReceiverStream<Result<M::Out, Status>>, Status>
    where
        M: EventMaker,
    {
        let who = caller(&self.node, req).await?;
        let namespace = self.namespace(selector(req).as_deref())?;
        self.readable(&who, &namespace).await?;
        let slot = WatchSlot::take(&self.slots, &self.node)?;
        let (tx, rx) = mpsc::channel(FLAGD_EVENTS_BUFFER);
        let of = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(status) = of.follow(&who, &namespace, &tx, &mk).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Sends `provider_ready`, then an event per committed change of `namespace` and a
    /// `keep_alive` on an idle stream, until the client goes or the node leaves.
    async fn follow<M: EventMaker>(
        &self,
        who: &Principal,
        namespace: &str,
        tx: &mpsc::Sender<Result<M::Out, Status>>,
        mk: &M,
    ) -> Result<(), Status> {
        let mut applied = self.node.reader.applied_revision();
        let mut cursor = *applied.borrow_and_update();
        if tx.send(Ok(mk.make("provider_ready", None))).await.is_err() {
            return Ok(());
        }
        let keep_alive = Duration::from_millis(FLAGD_KEEP_ALIVE_MS);
        let mut last_sent = Instant::now();
        let mut currency = Currency::new(&self.node);
        let namespaces = [namespace.to_string()];
        loop {
            if !self.wake(tx, &mut applied, &mut currency).await? {
                return Ok(());
            }
            still_valid(&self.node, who, &namespaces)?;
            // Retention removed changes this stream had not sent: it cannot say which flags
            // changed (deleted ones above all), so it ends and the provider starts over.
            let changed = match self.changed_flags(namespace, &mut cursor)? {
                NamespaceChanges::Changed { flags, .. } => flags,
                NamespaceChanges::Compacted { revision } => {
                    return Err(ServerError::Compacted { after_revision: cursor, compacted_revision: revision }.into());
                }
            };
            let event = if !changed.is_empty() {
                mk.make("configuration_change", Some(json!({ "flags": changed })))
            } else if last_sent.elapsed() >= keep_alive {
                mk.make("keep_alive", None)
            } else {
                continue;
            };
            if tx.send(Ok(event)).await.is_err() {
                return Ok(());
            }
            last_sent = Instant::now();
        }
    }

    /// Waits until the applied revision moves or a freshness check is due and passes; `false`
    /// when the client has gone. A node cut off from the cluster ends the stream, so the provider
    /// reconnects to a node that is current instead of trusting what nothing will update.
    pub(super) async fn wake<T>(
        &self,
        tx: &mpsc::Sender<T>,
        applied: &mut tokio::sync::watch::Receiver<u64>,
        currency: &mut Currency,
    ) -> Result<bool, Status> {
        tokio::select! {
            () = self.node.leaving.begun() => Err(ServerError::ShuttingDown.into()),
            () = tx.closed() => Ok(false),
            changed = applied.changed() => match changed {
                Ok(()) => Ok(true),
                Err(_) => Err(ServerError::ShuttingDown.into()),
            },
            () = tokio::time::sleep_until(currency.next_check()) => {
                match currency.check(&self.node, applied).await {
                    Ok(_) => Ok(true),
                    Err(lost) => Err(lost.into_error("reconnect to another node").into()),
                }
            }
        }
    }

    /// The flags of `namespace` that changes after `cursor` touched, as flagd names them
    /// (`{"<key>": {"type": "write" | "update" | "delete"}}`), and whether anything of the
    /// namespace changed (its settings too), up to what this node has applied; moves `cursor`
    /// there.
    pub(super) fn changed_flags(&self, namespace: &str, cursor: &mut u64) -> Result<NamespaceChanges, ServerError> {
        let mut out = Map::new();
        let mut every_flag = false;
        let mut touched = false;
        let target = *self.node.reader.applied_revision().borrow();
        // Pages end on whole revisions, so one may stop short of `target`: go on until there.
        while *cursor < target {
            let (entries, seen) = match self.node.reader.changes_after(*cursor, WATCH_BATCH_ENTRIES_MAX)? {
                Changes::Page(entries, seen) => (entries, seen),
                Changes::Compacted(cp) => {
                    // The caller starts over from the current state.
                    *cursor = target;
                    return Ok(NamespaceChanges::Compacted { revision: cp.revision });
                }
            };
            for e in entries.iter().filter(|e| e.namespace == namespace) {
                // Only what changes evaluation counts: a policy, change request or approval
                // entry of the namespace must not make providers reload it.
                let kind = match e.action {
                    AuditAction::FlagCreate => "write",
                    AuditAction::FlagUpdate | AuditAction::FlagSetState => "update",
                    AuditAction::FlagDelete => "delete",
                    AuditAction::NamespaceUpdate | AuditAction::NamespaceSettings => {
                        (touched, every_flag) = (true, true);
                        continue;
                    }
                    _ => continue,
                };
                touched = true;
                out.insert(e.key.clone(), json!({ "type": kind }));
            }
            if seen <= *cursor {
                return Err(ServerError::Internal(format!(
                    "the change feed stopped at revision {cursor} below the applied revision {target}"
                )));
            }
            *cursor = seen;
        }
        if every_flag {
            let (_, ns) = self.evaluator.compiled(namespace)?;
            for key in ns.keys() {
                out.entry(key.to_string()).or_insert_with(|| json!({ "type": "update" }));
            }
        }
        Ok(NamespaceChanges::Changed { flags: out, touched })
    }
}

/// What changed in a namespace since a stream's cursor.
pub(super) enum NamespaceChanges {
    /// The flags changed (flagd's `configuration_change` data), and whether anything of the
    /// namespace changed (its settings too).
    Changed { flags: Map<String, Value>, touched: bool },
    /// Retention removed changes after the cursor, up to this revision.
    Compacted { revision: u64 },
}

/// Builds an `EventStreamResponse` of one protocol version.
trait EventMaker: Send + Sync + 'static {
    type Out: Send + 'static;
    fn make(&self, kind: &str, data: Option<Value>) -> Self::Out;
}

fn event_data(data: Option<Value>) -> Option<Struct> {
    Some(match data {
        Some(Value::Object(m)) => to_struct(&m),
        _ => Struct::default(),
    })
}

struct V1Events;
impl EventMaker for V1Events {
    type Out = v1::EventStreamResponse;
    fn make(&self, kind: &str, data: Option<Value>) -> v1::EventStreamResponse {
        v1::EventStreamResponse { r#type: kind.to_string(), data: event_data(data) }
    }
}

struct V2Events;
impl EventMaker for V2Events {
    type Out = v2::EventStreamResponse;
    fn make(&self, kind: &str, data: Option<Value>) -> v2::EventStreamResponse {
        v2::EventStreamResponse { r#type: kind.to_string(), data: event_data(data) }
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `flagd.evaluation.v2.Service`.
pub struct V2(pub OpenFeature);

#[tonic::async_trait]
impl v2::service_server::Service for V2 {
    async fn resolve_boolean(
        &self,
        req: Request<v2::ResolveBooleanRequest>,
    ) -> Result<Response<v2::ResolveBooleanResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_string(
        &self,
        req: Request<v2::ResolveStringRequest>,
    ) -> Result<Response<v2::ResolveStringResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_float(
        &self,
        req: Request<v2::ResolveFloatRequest>,
    ) -> Result<Response<v2::ResolveFloatResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_int(
        &self,
        req: Request<v2::ResolveIntRequest>,
    ) -> Result<Response<v2::ResolveIntResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_object(
        &self,
        req: Request<v2::ResolveObjectRequest>,
    ) -> Result<Response<v2::ResolveObjectResponse>, Status> {
        self.0.typed(req).await
    }

    type EventStreamStream = EventStream<v2::EventStreamResponse>;

    async fn event_stream(
        &self,
        req: Request<v2::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let stream = self.0.event_stream(&req, V2Events).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `flagd.evaluation.v1.Service`.
pub struct V1(pub OpenFeature);

#[tonic::async_trait]
impl v1::service_server::Service for V1 {
    async fn resolve_all(
        &self,
        req: Request<v1::ResolveAllRequest>,
    ) -> Result<Response<v1::ResolveAllResponse>, Status> {
        let who = caller(&self.0.node, &req).await?;
        let namespace = self.0.namespace(selector(&req).as_deref())?;
        let (_, ns) = self.0.readable(&who, &namespace).await?;
        let context = checked_context(req.get_ref().context.as_ref())?;
        let ctx = EvalContext::from_json(&context);
        let now = self.0.now_secs();
        let mut flags = BTreeMap::new();
        for key in ns.keys() {
            let r = ns.evaluate(key, &ctx, now);
            // flagd leaves out what errs, and what has no value but is not disabled.
            if r.is_error() || (r.value.is_none() && r.reason != Reason::Disabled) {
                continue;
            }
            let value = r.typed_value(None).and_then(Scalar::of).map(|v| match v {
                Scalar::Bool(b) => v1::any_flag::Value::BoolValue(b),
                Scalar::String(s) => v1::any_flag::Value::StringValue(s),
                Scalar::Int(i) => v1::any_flag::Value::DoubleValue(i as f64),
                Scalar::Float(f) => v1::any_flag::Value::DoubleValue(f),
                Scalar::Object(o) => v1::any_flag::Value::ObjectValue(o),
            });
            let flag = v1::AnyFlag {
                reason: r.reason.as_str().into(),
                variant: r.variant.unwrap_or_default().into(),
                value,
                metadata: Some(to_struct(r.metadata)),
            };
            flags.insert(key.to_string(), flag);
        }
        let metadata = Some(to_struct(ns.flag_set_metadata()));
        Ok(Response::new(v1::ResolveAllResponse { flags: flags.into_iter().collect(), metadata }))
    }

    async fn resolve_boolean(
        &self,
        req: Request<v1::ResolveBooleanRequest>,
    ) -> Result<Response<v1::ResolveBooleanResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_string(
        &self,
        req: Request<v1::ResolveStringRequest>,
    ) -> Result<Response<v1::ResolveStringResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_float(
        &self,
        req: Request<v1::ResolveFloatRequest>,
    ) -> Result<Response<v1::ResolveFloatResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_int(
        &self,
        req: Request<v1::ResolveIntRequest>,
    ) -> Result<Response<v1::ResolveIntResponse>, Status> {
        self.0.typed(req).await
    }

    async fn resolve_object(
        &self,
        req: Request<v1::ResolveObjectRequest>,
    ) -> Result<Response<v1::ResolveObjectResponse>, Status> {
        self.0.typed(req).await
    }

    type EventStreamStream = EventStream<v1::EventStreamResponse>;

    async fn event_stream(
        &self,
        req: Request<v1::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let stream = self.0.event_stream(&req, V1Events).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}
