//! The public gRPC API `vexil.v1`: request validation, then the node's write path or read
//! barrier, then the reply. Handlers stay thin; all errors go through `crate::error`.

pub mod audit;
pub mod changes;
pub mod cluster;
pub mod evaluation;
pub mod flags;
pub mod health;
pub mod tokens;
pub mod watch;

use vexil_model::{FlagSpec, NamespaceDocument, limits};
use vexil_proto::v1::{Consistency, ReadHeader, ReadOptions, WriteHeader, WriteOptions};
use vexil_raft_store::{Command, Request};

use crate::auth::Principal;
use crate::error::ServerError;
use crate::limits::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX};
use crate::node::Node;

/// Builds the Raft request for a validated command; `who` is its audit actor.
pub(crate) fn request(
    node: &Node,
    who: &Principal,
    options: Option<WriteOptions>,
    command: Command,
) -> Result<Request, ServerError> {
    let options = options.unwrap_or_default();
    if options.request_id.len() > limits::REQUEST_ID_BYTES_MAX {
        return Err(ServerError::invalid(
            "options.request_id",
            format!("is longer than {} bytes", limits::REQUEST_ID_BYTES_MAX),
        ));
    }
    // The state machine applies an approved change under request id `change/<id>`; a client
    // must not be able to pass its own write off as one.
    if options.request_id.starts_with("change/") {
        return Err(ServerError::invalid("options.request_id", "must not start with \"change/\" (reserved)"));
    }
    if options.reason.len() > limits::REASON_BYTES_MAX {
        return Err(ServerError::invalid(
            "options.reason",
            format!("is longer than {} bytes", limits::REASON_BYTES_MAX),
        ));
    }
    Ok(Request {
        request_id: options.request_id,
        actor: who.name.clone(),
        reason: options.reason,
        time_ms: node.now_ms(),
        command,
    })
}

pub(crate) fn write_header(revision: u64, leader_id: u64) -> Option<WriteHeader> {
    Some(WriteHeader { revision, leader_id })
}

/// Runs the read barrier for `read` and returns a header filler: call it with the revision the
/// read observed.
pub(crate) async fn read_barrier(
    node: &std::sync::Arc<Node>,
    read: Option<ReadOptions>,
    default: Consistency,
) -> Result<impl Fn(u64) -> Option<ReadHeader>, ServerError> {
    let read = read.unwrap_or_default();
    let requested = Consistency::try_from(read.consistency)
        .map_err(|_| ServerError::invalid("read.consistency", format!("unknown level {}", read.consistency)))?;
    let used = node.read_barrier(requested, default, read.min_revision).await?;
    let node_id = node.id;
    Ok(move |revision| Some(ReadHeader { revision, node_id, consistency: used as i32 }))
}

pub(crate) fn page_size(limit: u32) -> usize {
    match limit as usize {
        0 => LIST_PAGE_DEFAULT,
        n => n.min(LIST_PAGE_MAX),
    }
}

pub(crate) fn check_namespace(ns: &str) -> Result<(), ServerError> {
    vexil_model::flag::validate_namespace(ns).map_err(|p| ServerError::invalid("namespace", p))
}

pub(crate) fn check_key(key: &str) -> Result<(), ServerError> {
    vexil_model::flag::validate_flag_key(key).map_err(|p| ServerError::invalid("key", p))
}

/// A namespace's applied state as a document (flags, `$evaluators`, metadata), and the revision
/// it reflects. A stored flag that no longer parses is skipped with a warning (it was validated
/// on write; this only happens across incompatible versions).
pub(crate) fn current_document(node: &Node, namespace: &str) -> Result<(u64, NamespaceDocument), ServerError> {
    current_namespace(node, namespace).map(|(revision, doc, _)| (revision, doc))
}

/// A namespace's document and settings as of the latest applied revision, and that revision.
pub(crate) fn current_namespace(
    node: &Node,
    namespace: &str,
) -> Result<(u64, NamespaceDocument, vexil_model::NamespaceSettings), ServerError> {
    let (revision, mut states) = node.reader.namespace_states(&[namespace.to_string()])?;
    let state =
        states.pop().ok_or_else(|| ServerError::Internal(format!("no state was read for namespace {namespace:?}")))?;
    let mut doc = NamespaceDocument::default();
    for (key, record) in state.flags {
        match FlagSpec::from_json(&key, &record.spec_json) {
            Ok(spec) => {
                doc.flags.insert(key, spec);
            }
            Err(e) => tracing::warn!(namespace, key, error = %e, "stored flag does not parse; skipped"),
        }
    }
    doc.evaluators = serde_json::from_str(&state.record.evaluators_json).unwrap_or_default();
    doc.metadata = serde_json::from_str(&state.record.metadata_json).unwrap_or_default();
    Ok((revision, doc, state.settings))
}
