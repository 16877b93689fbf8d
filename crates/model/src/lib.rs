//! Vexil's pure data model, shared by the server, the client library and the CLI.
//!
//! Nothing here does IO or reads a clock: time is always an argument. That keeps evaluation a
//! pure function of (flag, namespace evaluators, context, time), so the server and every client
//! agree bit for bit.
//!
//! - [`access`]: tokens, roles and the permission each call needs.
//! - [`flag`]: the flag definition (flagd's flag object plus governance fields) and its
//!   validation.
//! - [`document`]: a whole namespace document (flagd's file format) and its validation.
//! - [`namespace`]: a namespace's own settings (bucketing, strictness).
//! - [`policy`]: a namespace's change control (approvals, stage gates, dependencies).
//! - [`record`]: the stored form of a flag (definition text plus bookkeeping).
//! - [`audit`]: the audit entry and its SHA-256 hash chain.
//! - [`eval`]: compiled evaluation, and the one result shape every surface renders.
//! - [`stale`]: the stale-flag report.
//! - [`limits`]: every bound on input.

pub mod access;
pub mod audit;
pub mod document;
pub mod eval;
pub mod flag;
pub mod limits;
pub mod namespace;
pub mod policy;
pub mod record;
pub mod stale;

pub use audit::{AuditAction, AuditEntry, ChainError, ChainVerifier};
pub use document::{DocumentDiff, FieldChange, NamespaceDocument};
pub use eval::{CompiledFlag, CompiledNamespace, EvalContext, Resolution};
pub use flag::{FlagSpec, FlagState, Lifecycle, ValidationError, VariantType};
pub use namespace::NamespaceSettings;
pub use policy::NamespacePolicy;
pub use record::FlagRecord;
