//! An OpenFeature provider for the Rust `open-feature` SDK (feature `openfeature`).
//!
//! ```no_run
//! # async fn example(client: vexil_client::Client) {
//! use open_feature::OpenFeature;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(vexil_client::openfeature::VexilProvider::new(client)).await;
//! let of = api.create_client();
//! let on = of.get_bool_value("new-checkout", None, None).await.unwrap_or(false);
//! # }
//! ```
//!
//! Mapping: reasons and error codes are OpenFeature's own (flagd's). The SDK does not hand the
//! caller's default to a provider, so where flagd serves "the caller's default" (a disabled
//! flag, no default variant) this provider returns an error (`GENERAL` with the reason in the
//! message), and the SDK's `get_*_value(..).unwrap_or(default)` yields the caller's default.
//! The provider's status is `NotReady` without data, `STALE` while serving last-known-good
//! values with the stream down, `Ready` otherwise.
//!
//! Context: the targeting key and the custom fields become the evaluation context (a
//! date-time becomes Unix seconds; a struct field is used when it holds a `serde_json::Value`).

use std::collections::HashMap;

use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, FlagMetadataValue, StructValue,
};
use serde_json::{Map, Value};
use vexil_model::eval::{EvalContext, Reason, TARGETING_KEY};

use crate::client::Client;
use crate::eval::{ErrorCode, EvaluationDetails, Namespace};

/// The provider: evaluates locally against a [`Client`]'s live copy.
pub struct VexilProvider {
    client: Client,
    namespace: Namespace,
    metadata: ProviderMetadata,
}

impl VexilProvider {
    /// A provider over the client's default namespace.
    pub fn new(client: Client) -> VexilProvider {
        let namespace = client.default_namespace().clone();
        VexilProvider { client, namespace, metadata: ProviderMetadata::new("vexil") }
    }

    /// A provider over another watched namespace; `None` if the client does not watch it.
    pub fn for_namespace(client: Client, namespace: &str) -> Option<VexilProvider> {
        let namespace = client.namespace(namespace)?;
        Some(VexilProvider { client, namespace, metadata: ProviderMetadata::new("vexil") })
    }

    fn resolve<T, U>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        eval: impl FnOnce(&Namespace, &EvalContext<'_>) -> EvaluationDetails<T>,
        convert: impl FnOnce(T) -> Option<U>,
    ) -> EvaluationResult<ResolutionDetails<U>> {
        let json = context_json(ctx);
        let d = eval(&self.namespace, &EvalContext::from_json(&json));
        if let Some(code) = d.error_code {
            return Err(EvaluationError { code: error_code(code), message: d.error_message });
        }
        if d.variant.is_none() {
            let why = match d.reason {
                Reason::Disabled => "the flag is disabled",
                _ => "the flag has no default variant",
            };
            return Err(EvaluationError {
                code: EvaluationErrorCode::General(reason_name(d.reason).into()),
                message: Some(format!("{why}: the caller's default applies")),
            });
        }
        let value = convert(d.value).ok_or_else(|| EvaluationError {
            code: EvaluationErrorCode::TypeMismatch,
            message: Some(format!("flag {key:?} has a value OpenFeature cannot represent")),
        })?;
        Ok(ResolutionDetails {
            value,
            variant: d.variant,
            reason: Some(reason(d.reason)),
            flag_metadata: Some(flag_metadata(&d.flag_metadata)),
        })
    }
}

fn reason(r: Reason) -> EvaluationReason {
    match r {
        Reason::Static => EvaluationReason::Static,
        Reason::TargetingMatch => EvaluationReason::TargetingMatch,
        Reason::Default => EvaluationReason::Default,
        Reason::Disabled => EvaluationReason::Disabled,
        Reason::Error => EvaluationReason::Error,
    }
}

fn reason_name(r: Reason) -> &'static str {
    r.as_str()
}

fn error_code(c: ErrorCode) -> EvaluationErrorCode {
    match c {
        ErrorCode::ProviderNotReady => EvaluationErrorCode::ProviderNotReady,
        ErrorCode::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorCode::TypeMismatch => EvaluationErrorCode::TypeMismatch,
        ErrorCode::ParseError => EvaluationErrorCode::ParseError,
        ErrorCode::General => EvaluationErrorCode::General("GENERAL".into()),
    }
}

/// The OpenFeature context as the JSON object the evaluator reads.
fn context_json(ctx: &EvaluationContext) -> Map<String, Value> {
    let mut m = Map::with_capacity(ctx.custom_fields.len() + 1);
    for (k, v) in &ctx.custom_fields {
        let v = match v {
            EvaluationContextFieldValue::Bool(b) => Value::Bool(*b),
            EvaluationContextFieldValue::Int(i) => Value::from(*i),
            EvaluationContextFieldValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            EvaluationContextFieldValue::String(s) => Value::String(s.clone()),
            EvaluationContextFieldValue::DateTime(t) => Value::from(t.unix_timestamp()),
            EvaluationContextFieldValue::Struct(any) => match any.downcast_ref::<Value>() {
                Some(v) => v.clone(),
                None => continue,
            },
        };
        m.insert(k.clone(), v);
    }
    if let Some(tk) = &ctx.targeting_key {
        m.insert(TARGETING_KEY.into(), Value::String(tk.clone()));
    }
    m
}

fn to_of_value(v: &Value) -> Option<open_feature::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => open_feature::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => open_feature::Value::Int(i),
            None => open_feature::Value::Float(n.as_f64()?),
        },
        Value::String(s) => open_feature::Value::String(s.clone()),
        Value::Array(a) => open_feature::Value::Array(a.iter().filter_map(to_of_value).collect()),
        Value::Object(o) => open_feature::Value::Struct(to_struct(o)),
    })
}

fn to_struct(o: &Map<String, Value>) -> StructValue {
    let fields: HashMap<String, open_feature::Value> =
        o.iter().filter_map(|(k, v)| to_of_value(v).map(|v| (k.clone(), v))).collect();
    StructValue { fields }
}

fn flag_metadata(m: &Map<String, Value>) -> FlagMetadata {
    let mut out = FlagMetadata::default();
    for (k, v) in m {
        let v = match v {
            Value::Bool(b) => FlagMetadataValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => FlagMetadataValue::Int(i),
                None => FlagMetadataValue::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => FlagMetadataValue::String(s.clone()),
            _ => continue,
        };
        out.add_value(k.clone(), v);
    }
    out
}

#[open_feature::async_trait]
impl FeatureProvider for VexilProvider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        // The client was started before the provider; give it the usual time to sync.
        self.client.wait_synced(crate::limits::INIT_TIMEOUT_DEFAULT).await;
    }

    fn status(&self) -> ProviderStatus {
        let st = self.client.status();
        if !st.ready {
            ProviderStatus::NotReady
        } else if st.is_stale() {
            ProviderStatus::STALE
        } else {
            ProviderStatus::Ready
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(flag_key, ctx, |ns, c| ns.bool_details(flag_key, c, false), Some)
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(flag_key, ctx, |ns, c| ns.int_details(flag_key, c, 0), Some)
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(flag_key, ctx, |ns, c| ns.float_details(flag_key, c, 0.0), Some)
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(flag_key, ctx, |ns, c| ns.string_details(flag_key, c, ""), Some)
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(flag_key, ctx, |ns, c| ns.object_details(flag_key, c, &Map::new()), |m| Some(to_struct(&m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contexts_and_values_convert() {
        let ctx = EvaluationContext::default()
            .with_targeting_key("u1")
            .with_custom_field("age", 30)
            .with_custom_field("plan", "gold")
            .with_custom_field("extra", EvaluationContextFieldValue::new_struct(json!({"tier": 2})));
        let m = context_json(&ctx);
        assert_eq!(Value::Object(m), json!({"targetingKey": "u1", "age": 30, "plan": "gold", "extra": {"tier": 2}}));

        let s = to_struct(json!({"a": 1, "b": [true, "x"], "c": {"d": 1.5}, "n": null}).as_object().unwrap());
        assert_eq!(s.fields["a"], open_feature::Value::Int(1));
        assert_eq!(s.fields["c"].as_struct().unwrap().fields["d"], open_feature::Value::Float(1.5));
        assert!(!s.fields.contains_key("n"));
    }
}
