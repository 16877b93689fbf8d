//! Bounds of the server, each a named constant. Input bounds on flags live in
//! `vexil_model::limits`.

/// Items per page of a list when the request does not say.
pub const LIST_PAGE_DEFAULT: usize = 100;
/// Most items per page of a list.
pub const LIST_PAGE_MAX: usize = 1_000;
/// Bytes of flag definitions in one page of `ListFlags`, or of stored audit entries in one page
/// of `ListAudit`: a page ends early (with `next_after_key` or `more` set) rather than grow past
/// it. 3 MiB keeps the encoded response, with its per-item framing, under the 4 MiB that gRPC
/// clients decode by default.
pub const LIST_RESPONSE_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Largest gRPC message accepted on the public port (a whole namespace document plus framing).
pub const API_MESSAGE_BYTES_MAX: usize = vexil_model::limits::DOCUMENT_BYTES_MAX + 1024 * 1024;
/// Largest gRPC message on the Raft port (a batch of entries or a snapshot chunk).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Concurrent HTTP/2 streams per connection on the public port.
pub const API_CONCURRENT_STREAMS_MAX: u32 = 1_024;
/// Open watch streams per node.
pub const WATCH_STREAMS_MAX: usize = 10_000;
/// Namespaces one watch may name.
pub const WATCH_NAMESPACES_MAX: usize = 256;
/// Audit entries read per catch-up step of a watch (a revision larger than this is still
/// delivered whole).
pub const WATCH_BATCH_ENTRIES_MAX: usize = 1_024;
/// Messages buffered per watch stream before the stream waits for its client.
pub const WATCH_BUFFER_MESSAGES: usize = 64;
/// Encoded bytes of messages one watch stream may have waiting for its client (one larger
/// message waits alone): what a stalled client costs the node.
pub const WATCH_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Stored bytes of flags in one part of a watch's initial snapshot (a part holds at least one
/// flag): a snapshot of any size reaches the client in messages of about this size.
pub const WATCH_SNAPSHOT_PART_BYTES: usize = 1024 * 1024;
/// How long a leaving node waits for its API to drain (in-flight requests to finish, watch
/// streams to deliver their `ShuttingDown` end) before it cuts the rest off and shuts Raft
/// down. Every handler is bounded by the write timeout; this is the backstop for what is not,
/// such as a watcher that stopped reading and so never receives its stream's end. Raft runs and
/// listens meanwhile (but never campaigns), so the wait costs the cluster nothing.
pub const SHUTDOWN_API_DRAIN_MS_MAX: u64 = 10_000;
/// How long a leaving node, its Raft core stopped, waits for its Raft listener's connections to
/// close gracefully. Every call on it is answered at once by then (`ShuttingDown`); what is
/// left is a peer that does not answer HTTP/2 (paused or partitioned), which would hold the
/// graceful close open forever.
pub const SHUTDOWN_RAFT_DRAIN_MS_MAX: u64 = 1_000;
/// How long a node whose Raft core stopped on its own (fail-stop, `lib.rs`) waits for its API
/// to drain before it exits. Nothing can commit any more, so most requests fail at once; this
/// bounds the rest (a `lease` read waiting for an apply that will not come).
pub const FAIL_STOP_DRAIN_MS_MAX: u64 = 1_000;
/// How long a readiness check (`/readyz`, a gRPC health check) may take: to join a read-index
/// round when the lease has expired, and for the applied state to reach the index. Below the
/// 1 s Kubernetes gives a probe by default.
pub const READY_CHECK_MS_MAX: u64 = 500;
/// How often a `grpc.health.v1` Watch stream checks readiness again (and sends what changed).
pub const HEALTH_WATCH_INTERVAL_MS: u64 = 1_000;
/// Open `grpc.health.v1` Watch streams per node (each checks readiness once per interval).
pub const HEALTH_WATCH_STREAMS_MAX: usize = 1_000;
/// Largest evaluation context, as JSON.
pub const CONTEXT_BYTES_MAX: usize = 64 * 1024;
/// Client requests in one Raft entry (see `batcher.rs`).
pub const WRITE_BATCH_REQUESTS_MAX: usize = 256;
/// Approximate bytes of the requests in one Raft entry. With openraft's default of 300 entries
/// per AppendEntries this keeps a replication message well below [`RAFT_MESSAGE_BYTES_MAX`]; a
/// single larger request (a namespace document) still goes alone.
pub const WRITE_BATCH_BYTES_MAX: usize = 512 * 1024;
/// Entries of batched writes being proposed at once. While they are all in flight, new writes
/// queue and go together into the next entry.
pub const WRITE_BATCHES_IN_FLIGHT: usize = 2;
/// Writes waiting for a batch on one node before callers wait to enqueue.
pub const WRITE_QUEUE_MAX: usize = 4_096;
/// How long a TLS handshake on the admin port may take before the connection is dropped.
pub const TLS_HANDSHAKE_MS_MAX: u64 = 10_000;
/// How often an open watch stream checks that its token has not expired (a revoked token ends
/// its streams at once, when the revocation applies).
pub const STREAM_TOKEN_CHECK_INTERVAL_MS: u64 = 1_000;
/// Namespaces whose compiled flags the evaluation API keeps (least recently used go first).
pub const EVAL_CACHE_NAMESPACES_MAX: usize = 256;
/// A flagd `EventStream` idle this long gets a `keep_alive` (flagd's providers read a silent
/// stream as a broken one only after much longer).
pub const FLAGD_KEEP_ALIVE_MS: u64 = 20_000;
/// Events queued for one flagd `EventStream` before its sender waits for the client.
pub const FLAGD_EVENTS_BUFFER: usize = 16;
/// Largest OFREP request body (a context, as on the API port).
pub const OFREP_BODY_BYTES_MAX: usize = CONTEXT_BYTES_MAX;
/// Largest Connect request body (one flagd request message and its context).
pub const CONNECT_BODY_BYTES_MAX: usize = CONTEXT_BYTES_MAX + 4 * 1024;
