//! The Connect protocol (connectrpc.com) for flagd's evaluation services, which flagd serves
//! beside gRPC on one port and which the Go provider's RPC mode speaks (connect-go's default:
//! HTTP/1.1, binary protobuf).
//!
//! - Unary: `POST /flagd.evaluation.v2.Service/ResolveBoolean`, `Content-Type:
//!   application/proto`, the request message as the body; 200 with the response message, or
//!   the error as JSON `{"code": "not_found", "message": ...}` with the HTTP status Connect
//!   assigns to the code.
//! - Server streaming (`EventStream`): `Content-Type: application/connect+proto`, the request
//!   in one envelope (flags byte, 4-byte big-endian length, message); the response a stream of
//!   envelopes and a last one with flag `0x02` holding the end of the stream as JSON (`{}`, or
//!   `{"error": {...}}`).
//!
//! A request is answered by the same service implementations as over gRPC
//! ([`super::flagd::V1`], [`super::flagd::V2`]), after the same authentication (the API port's
//! `Authenticator`). JSON codecs (`application/json`) are not served: 415.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prost::Message;
use serde_json::json;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Code, Status};
use vexil_proto::flagd::evaluation::v1::service_server::Service as V1Service;
use vexil_proto::flagd::evaluation::v2::service_server::Service as V2Service;
use vexil_proto::flagd::evaluation::{v1, v2};

use super::OpenFeature;
use super::flagd::{V1, V2};
use crate::auth::Authenticator;
use crate::limits::CONNECT_BODY_BYTES_MAX;

/// A Connect error: a code and a message (this protocol's own answers are not gRPC statuses;
/// a service's status becomes one with [`from_status`]).
type ConnectError = (Code, String);

fn from_status(s: Status) -> ConnectError {
    (s.code(), s.message().to_string())
}

const PROTO: &str = "application/proto";
const STREAM_PROTO: &str = "application/connect+proto";
/// The end-of-stream flag of a Connect envelope.
const END_STREAM: u8 = 0x02;

/// What a Connect request needs besides the router: the services and the authentication.
#[derive(Clone)]
pub struct Connect {
    pub of: OpenFeature,
    pub authn: Authenticator,
}

/// Middleware on the OpenFeature router: a Connect request to a flagd evaluation method is
/// answered here; everything else (gRPC, OFREP) goes on.
pub async fn middleware(
    axum::extract::State(connect): axum::extract::State<Connect>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let flagd = path.starts_with("/flagd.evaluation.v1.Service/") || path.starts_with("/flagd.evaluation.v2.Service/");
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if !flagd || content_type.starts_with("application/grpc") {
        return next.run(req).await;
    }
    if content_type.contains("json") {
        let mut r = error_response(
            &(Code::Unimplemented, "this server speaks Connect with binary protobuf only".into()),
            false,
        );
        *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return r;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, CONNECT_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let method = parts.uri.path().to_string();
    let timeout = parts
        .headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    if content_type.starts_with(STREAM_PROTO) {
        return connect.stream(&method, &parts.headers, &body).await.unwrap_or_else(|r| r);
    }
    if !content_type.starts_with(PROTO) {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let call = connect.unary(&method, &parts.headers, body);
    let answer = match timeout {
        Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
            Err((Code::DeadlineExceeded, format!("no answer within Connect-Timeout-Ms ({} ms)", t.as_millis())))
        }),
        None => call.await,
    };
    match answer {
        Ok(bytes) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTO));
            r
        }
        Err(e) => error_response(&e, false),
    }
}

impl Connect {
    /// A tonic request carrying `msg`, the caller's headers as metadata, and the principal the
    /// API port's authentication finds for them.
    fn request<T>(&self, headers: &HeaderMap, msg: T) -> Result<tonic::Request<T>, ConnectError> {
        let mut meta = tonic::Request::new(());
        *meta.metadata_mut() = MetadataMap::from_headers(headers.clone());
        let authed = self.authn.clone().call(meta).map_err(from_status)?;
        let (metadata, extensions, ()) = authed.into_parts();
        Ok(tonic::Request::from_parts(metadata, extensions, msg))
    }

    async fn unary(&self, method: &str, headers: &HeaderMap, body: Bytes) -> Result<Vec<u8>, ConnectError> {
        macro_rules! call {
            ($svc:expr, $req:ty, $method:ident) => {{
                let msg = <$req>::decode(body)
                    .map_err(|e| (Code::InvalidArgument, format!("the request is not a valid message: {e}")))?;
                let req = self.request(headers, msg)?;
                $svc.$method(req).await.map(|r| r.into_inner().encode_to_vec()).map_err(from_status)
            }};
        }
        let (v1, v2) = (V1(self.of.clone()), V2(self.of.clone()));
        match method.rsplit_once('/') {
            Some(("/flagd.evaluation.v2.Service", m)) => match m {
                "ResolveBoolean" => call!(v2, v2::ResolveBooleanRequest, resolve_boolean),
                "ResolveString" => call!(v2, v2::ResolveStringRequest, resolve_string),
                "ResolveInt" => call!(v2, v2::ResolveIntRequest, resolve_int),
                "ResolveFloat" => call!(v2, v2::ResolveFloatRequest, resolve_float),
                "ResolveObject" => call!(v2, v2::ResolveObjectRequest, resolve_object),
                other => Err((Code::Unimplemented, format!("no unary method {other} in flagd.evaluation.v2"))),
            },
            Some(("/flagd.evaluation.v1.Service", m)) => match m {
                "ResolveAll" => call!(v1, v1::ResolveAllRequest, resolve_all),
                "ResolveBoolean" => call!(v1, v1::ResolveBooleanRequest, resolve_boolean),
                "ResolveString" => call!(v1, v1::ResolveStringRequest, resolve_string),
                "ResolveInt" => call!(v1, v1::ResolveIntRequest, resolve_int),
                "ResolveFloat" => call!(v1, v1::ResolveFloatRequest, resolve_float),
                "ResolveObject" => call!(v1, v1::ResolveObjectRequest, resolve_object),
                other => Err((Code::Unimplemented, format!("no unary method {other} in flagd.evaluation.v1"))),
            },
            _ => Err((Code::Unimplemented, format!("no method {method}"))),
        }
    }

    /// `EventStream` over Connect: the envelopes of the gRPC stream's messages, then the end.
    async fn stream(&self, method: &str, headers: &HeaderMap, body: &[u8]) -> Result<Response, Response> {
        let fail = |e: ConnectError| error_response(&e, true);
        // The request envelope: flags, length, an `EventStreamRequest` (empty).
        if body.len() < 5 {
            return Err(fail((Code::InvalidArgument, "a streaming request starts with a 5-byte envelope".into())));
        }
        // The same call on either version's service; only the message types differ.
        macro_rules! events {
            ($svc:expr, $req:expr) => {{
                let req = self.request(headers, $req).map_err(fail)?;
                let s = $svc.event_stream(req).await.map_err(|s| fail(from_status(s)))?.into_inner();
                s.map(|m| m.map(|m| m.encode_to_vec())).boxed()
            }};
        }
        let stream: futures::stream::BoxStream<'static, Result<Vec<u8>, Status>> = match method {
            "/flagd.evaluation.v2.Service/EventStream" => events!(V2(self.of.clone()), v2::EventStreamRequest {}),
            "/flagd.evaluation.v1.Service/EventStream" => events!(V1(self.of.clone()), v1::EventStreamRequest {}),
            other => return Err(fail((Code::Unimplemented, format!("no streaming method {other}")))),
        };
        // Each message in an envelope; the first error, or the end, closes the stream.
        let frames = futures::stream::unfold(Some(stream), |state| async move {
            let mut stream = state?;
            match stream.next().await {
                Some(Ok(msg)) => Some((Ok::<_, std::convert::Infallible>(envelope(0, &msg)), Some(stream))),
                Some(Err(status)) => {
                    Some((Ok(envelope(END_STREAM, end_of_stream(Some(&from_status(status))).as_bytes())), None))
                }
                None => Some((Ok(envelope(END_STREAM, end_of_stream(None).as_bytes())), None)),
            }
        });
        let mut r = Response::new(Body::from_stream(frames));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_PROTO));
        Ok(r)
    }
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Connect's name of a gRPC code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status Connect gives a code (unary errors).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_json((code, message): &ConnectError) -> serde_json::Value {
    json!({ "code": code_name(*code), "message": message })
}

fn end_of_stream(status: Option<&ConnectError>) -> String {
    match status {
        None => "{}".to_string(),
        Some(s) => json!({ "error": error_json(s) }).to_string(),
    }
}

/// An error before any message: unary as JSON with its HTTP status; a stream as a 200 whose
/// only envelope is the end of the stream with the error (Connect's streaming rule).
fn error_response(status: &ConnectError, streaming: bool) -> Response {
    if streaming {
        let mut r = Response::new(Body::from(envelope(END_STREAM, end_of_stream(Some(status)).as_bytes())));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_PROTO));
        r
    } else {
        let mut r = (http_status(status.0), error_json(status).to_string()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}
