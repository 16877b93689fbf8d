//! Every bound on user input, in one place.
//!
//! Each limit is a named constant so that the server, the client and the CLI agree on what is
//! accepted, and so that a reviewer can see every bound at once. Configuration may lower a
//! limit, never raise it.

/// Longest flag key, in bytes of UTF-8.
pub const FLAG_KEY_BYTES_MAX: usize = 256;
/// Longest namespace name, in bytes (namespaces are ASCII; see [`crate::flag::validate_namespace`]).
pub const NAMESPACE_BYTES_MAX: usize = 63;
/// Most variants one flag may declare.
pub const VARIANTS_MAX: usize = 64;
/// Longest variant name, in bytes.
pub const VARIANT_NAME_BYTES_MAX: usize = 128;
/// Largest single variant value, as compact JSON.
pub const VARIANT_VALUE_BYTES_MAX: usize = 16 * 1024;
/// Largest targeting rule, as compact JSON.
pub const TARGETING_BYTES_MAX: usize = 64 * 1024;
/// Deepest nesting of arrays and objects in a targeting rule or an evaluator.
pub const JSON_LOGIC_DEPTH_MAX: usize = 32;
/// Largest whole flag definition (flagd fields plus governance fields), as compact JSON.
pub const FLAG_BYTES_MAX: usize = 256 * 1024;
/// Most entries in a flag's or a namespace's `metadata`.
pub const METADATA_ENTRIES_MAX: usize = 64;
/// Longest metadata key or string value, in bytes.
pub const METADATA_STRING_BYTES_MAX: usize = 1024;
/// Longest `description`, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 4 * 1024;
/// Longest `owner`, in bytes.
pub const OWNER_BYTES_MAX: usize = 256;
/// Most tags on one flag.
pub const TAGS_MAX: usize = 32;
/// Longest tag, in bytes.
pub const TAG_BYTES_MAX: usize = 64;
/// Most entries in `depends_on`.
pub const DEPENDS_ON_MAX: usize = 32;
/// Most flags in one namespace document (one `apply`).
pub const DOCUMENT_FLAGS_MAX: usize = 10_000;
/// Most `$evaluators` in one namespace document.
pub const EVALUATORS_MAX: usize = 256;
/// Largest whole namespace document, in bytes of JSON as received.
pub const DOCUMENT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest audit `reason`, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// Longest `request_id`, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// Longest token name, in bytes (it is the audit actor).
pub const TOKEN_NAME_BYTES_MAX: usize = 64;
/// Most namespaces one editor or reader token may name.
pub const TOKEN_NAMESPACES_MAX: usize = 256;
/// Most tokens a cluster holds (each authentication is one point lookup; creating one scans).
pub const TOKENS_MAX: usize = 1_000;

const _: () = assert!(FLAG_BYTES_MAX >= TARGETING_BYTES_MAX + VARIANT_VALUE_BYTES_MAX);
const _: () = assert!(DOCUMENT_BYTES_MAX >= FLAG_BYTES_MAX);
/// Namespaces that callers without a token may read (`SetAnonymousRead`).
pub const ANONYMOUS_READ_NAMESPACES_MAX: usize = 256;
