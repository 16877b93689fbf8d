//! OFREP, the OpenFeature Remote Evaluation Protocol (open-feature/protocol, 0.3.0):
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}` → 200 `{key, reason, variant, value?, metadata}`
//!   (no `value`: the caller's code default applies, for a disabled flag or one without a
//!   default variant); 404 `FLAG_NOT_FOUND`, 400 `PARSE_ERROR` / `INVALID_CONTEXT` / `GENERAL`,
//!   each `{key, errorCode, errorDetails, metadata}`.
//! - `POST /ofrep/v1/evaluate/flags` → 200 `{flags: [...]}`, each item a success or a failure as
//!   above, with an `ETag` (a hash of the body); `If-None-Match` with it → 304, no body.
//! - 401, 403, 429 (with `Retry-After` in whole seconds), 503 (the node cannot serve a lease
//!   read now: ask another), each `{errorDetails}`.
//!
//! The body is `{"context": {...}}`; an empty body, or one without `context` (or with a null
//! one), is an empty context, as flagd takes it; a `context` that is not an object is 400
//! INVALID_CONTEXT, as OFREP's OpenAPI document says. `variant` is always sent (`""` when there is none): some
//! providers read it unconditionally.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vexil_model::eval::{CompiledNamespace, ErrorCode, EvalContext, Resolution};

use super::{OpenFeature, SELECTOR_HEADER};
use crate::auth::http_caller;
use crate::error::ServerError;
use crate::limits::OFREP_BODY_BYTES_MAX;

pub fn router(of: OpenFeature) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(single))
        .route("/ofrep/v1/evaluate/flags", post(bulk))
        .route("/ofrep/v1/evaluate/flags/", post(bulk))
        .layer(DefaultBodyLimit::max(OFREP_BODY_BYTES_MAX))
        .with_state(of)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A request that failed before any flag was evaluated: authentication, the selector, the
/// node's read lease. `key` for the single-flag endpoint.
fn refused(e: &ServerError, key: Option<&str>) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match (status, key) {
        (StatusCode::BAD_REQUEST, Some(key)) => {
            json!({"key": key, "errorCode": "GENERAL", "errorDetails": e.to_string(), "metadata": {}})
        }
        (StatusCode::BAD_REQUEST, None) => json!({"errorCode": "GENERAL", "errorDetails": e.to_string()}),
        _ => json!({"errorDetails": e.to_string()}),
    };
    let mut r = json_response(status, &body);
    if let Some(secs) = e.retry_after_secs()
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The context of a request body; `Err` is the 400 body's `errorDetails`.
fn context(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => match m.remove("context") {
            Some(Value::Object(ctx)) => Ok(ctx),
            None | Some(Value::Null) => Ok(Map::new()),
            // OFREP's OpenAPI document: a context that is not an object is 400 INVALID_CONTEXT.
            Some(other) => {
                Err(format!("`context` must be a JSON object, got {}", vexil_model::flag::type_name(&other)))
            }
        },
        Ok(_) => Err("the request body must be a JSON object `{\"context\": {...}}`".into()),
        Err(e) => Err(format!("the request body is not valid JSON: {e}")),
    }
}

/// One flag's result: the success body, or the failure body with its status.
fn rendered(key: &str, r: Resolution<'_>) -> (StatusCode, Value) {
    let metadata = Value::Object(r.metadata.clone());
    if let Some(code) = r.error_code {
        let status = if code == ErrorCode::FlagNotFound { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
        let error_code = match code {
            ErrorCode::FlagNotFound | ErrorCode::ParseError | ErrorCode::TypeMismatch => code.as_str(),
            ErrorCode::General | ErrorCode::ProviderNotReady => "GENERAL",
        };
        let details = r.error_message.unwrap_or_else(|| code.as_str().to_string());
        return (status, json!({"key": key, "errorCode": error_code, "errorDetails": details, "metadata": metadata}));
    }
    let mut body =
        json!({"key": key, "reason": r.reason.as_str(), "variant": r.variant.unwrap_or(""), "metadata": metadata});
    if let Some(v) = r.value {
        body["value"] = v.clone();
    }
    (StatusCode::OK, body)
}

/// What both endpoints do first: authenticate, read the context, select and read the namespace
/// (a lease read). `Err` is the answer (`key` for the single-flag endpoint's error bodies).
async fn prepare(
    of: &OpenFeature,
    headers: &HeaderMap,
    body: &[u8],
    key: Option<&str>,
) -> Result<(Map<String, Value>, Arc<CompiledNamespace>), Response> {
    let who = http_caller(&of.node, headers).await.map_err(|e| refused(&e, key))?;
    let ctx = context(body).map_err(|details| {
        let mut body = json!({"errorCode": "INVALID_CONTEXT", "errorDetails": details});
        if let Some(key) = key {
            body["key"] = json!(key);
            body["metadata"] = json!({});
        }
        json_response(StatusCode::BAD_REQUEST, &body)
    })?;
    let selector = headers.get(SELECTOR_HEADER).and_then(|v| v.to_str().ok());
    let namespace = of.namespace(selector).map_err(|e| refused(&e, key))?;
    let (_, ns) = of.readable(&who, &namespace).await.map_err(|e| refused(&e, key))?;
    Ok((ctx, ns))
}

async fn single(State(of): State<OpenFeature>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, ns) = match prepare(&of, &headers, &body, Some(&key)).await {
        Ok(prepared) => prepared,
        Err(answer) => return answer,
    };
    let (status, body) = rendered(&key, ns.evaluate(&key, &EvalContext::from_json(&ctx), of.now_secs()));
    json_response(status, &body)
}

async fn bulk(State(of): State<OpenFeature>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, ns) = match prepare(&of, &headers, &body, None).await {
        Ok(prepared) => prepared,
        Err(answer) => return answer,
    };
    let ctx = EvalContext::from_json(&ctx);
    let now = of.now_secs();
    let mut keys: Vec<&str> = ns.keys().collect();
    keys.sort_unstable();
    let flags: Vec<Value> = keys.into_iter().map(|key| rendered(key, ns.evaluate(key, &ctx, now)).1).collect();
    let body = json!({ "flags": flags }).to_string();
    // The ETag names exactly this body: the same flags and context give the same one.
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(body.as_bytes())[..16]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_a_context_an_empty_one_or_a_clear_refusal() {
        assert_eq!(context(b"").expect("empty"), Map::new());
        assert_eq!(context(b"{}").expect("no context"), Map::new());
        assert_eq!(context(br#"{"context": null}"#).expect("null"), Map::new());
        assert!(
            context(br#"{"context": 5}"#)
                .expect_err("not an object")
                .contains("`context` must be a JSON object, got a number")
        );
        let ctx = context(br#"{"context": {"targetingKey": "u1", "plan": "pro"}}"#).expect("context");
        assert_eq!(ctx.get("plan"), Some(&json!("pro")));
        assert!(context(b"{oops").expect_err("bad JSON").contains("not valid JSON"));
        assert!(context(b"[1]").expect_err("not an object").contains("JSON object"));
    }
}
