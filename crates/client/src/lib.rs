//! The Rust client library for Vexil: what services embed.
//!
//! A [`Client`] keeps a live local copy of the namespaces it is asked for and evaluates flags
//! in-process, so evaluation never leaves the process:
//!
//! - **Bootstrap and push**: it opens a watch stream to any node, receives the full state of its
//!   namespaces, then every change within milliseconds of its commit (`watcher.rs`).
//! - **Failover**: a broken stream resumes on another node from the last applied revision, with
//!   backoff and jitter; no change is missed or applied twice.
//! - **Local, lock-free, typed evaluation**: `bool_value`, `string_value`, `int_value`,
//!   `float_value`, `object_value` and `*_details` (variant, reason, error) read an immutable
//!   snapshot through an `ArcSwap`; they never block on the network (`eval.rs`).
//! - **Last-known-good**: with the cluster unreachable the last state keeps serving; the
//!   [`Status`] says how stale it is; an optional disk cache (`disk_cache.rs`) lets a restarted
//!   process start with its flags; with nothing at all the caller's default is served and the
//!   client reports not ready.
//! - **Admin calls** ([`AdminClient`]): typed writes with retries that reuse one `request_id`,
//!   reads, audit, cluster status, bearer tokens.
//! - **Security** ([`ConnectOptions`]): a bearer token sent on every call and stream, and TLS
//!   (a CA to trust, optionally a client certificate for mutual TLS), applied to every channel
//!   in one place (`transport.rs`): `ClientBuilder::token`/`tls`,
//!   `AdminClient::new_with_options`.
//! - **OpenFeature** (feature `openfeature`): a provider for the `open-feature` SDK.
//!
//! ```no_run
//! use std::time::Duration;
//! use vexil_client::{Client, EvalContext, WriteOpts};
//!
//! # async fn example() -> Result<(), vexil_client::Error> {
//! let client = Client::builder(["http://10.0.0.1:7000", "http://10.0.0.2:7000", "http://10.0.0.3:7000"])
//!     .namespace("checkout")
//!     .disk_cache("/var/cache/my-service/flags.json")
//!     .init_timeout(Duration::from_secs(2))
//!     .connect()
//!     .await?;
//!
//! // The hot path: no network, no lock.
//! let ctx = EvalContext::with_targeting_key("user-42").with("country", "NL");
//! if client.bool_value("new-checkout", &ctx, false) {
//!     // ...
//! }
//! let details = client.string_details("banner", &ctx, "default");
//! println!("{} ({:?}, {:?})", details.value, details.variant, details.reason);
//!
//! // Admin: a kill switch, retried safely across nodes.
//! let w = client.admin().set_flag_state("checkout", "new-checkout", false, None, WriteOpts::reason("incident 123")).await?;
//! client.wait_for_revision(w.revision, Duration::from_secs(1)).await;
//! assert!(!client.bool_value("new-checkout", &ctx, true));
//! # Ok(()) }
//! ```

pub mod admin;
mod client;
pub mod disk_cache;
pub mod error;
pub mod eval;
pub mod limits;
#[cfg(feature = "openfeature")]
pub mod openfeature;
mod shared;
pub mod status;
pub mod store;
mod transport;
mod watcher;

pub use admin::{
    AdminClient, ApplyResult, AuditFilter, Consistency, CreatedToken, ReadOpts, ReadResult, Role, WriteOpts,
    WriteResult,
};
pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use eval::{ErrorCode, EvaluationDetails, Namespace};
pub use status::{ChangeEvent, Status, UpdateKind};
pub use store::{DataSource, FlagChange, NamespaceState, Snapshot};
pub use transport::{ConnectOptions, Credentials, NodeChannel, TlsOptions};
pub use vexil_model::FlagRecord;
pub use vexil_model::eval::{Attr, EvalContext, Reason};
/// The generated protobuf types the admin calls return (`Flag`, `AuditEntry`, ...).
pub use vexil_proto::v1 as proto;
