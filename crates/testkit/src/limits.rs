//! Every bound the harness waits with, in one place.

use std::time::Duration;

/// How long a freshly started cluster may take to agree on a leader ([`crate::Cluster::start`]).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM ([`crate::Cluster::stop`]); after that it is
/// killed and the stop fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`crate::Cluster::channel`] keeps retrying to connect to a node.
pub const CONNECT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// One connection attempt of [`crate::Cluster::channel`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// [`crate::Cluster::status`]: connecting, the request's own deadline, and the whole call.
pub const STATUS_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
pub const STATUS_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(800);
/// How long [`crate::Cluster::admin_get`] waits for the admin listener's answer.
pub const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Audit entries per page when [`crate::Cluster::audit_log`] reads a whole log.
pub const AUDIT_PAGE_ENTRIES: u32 = 1000;
/// Lines of a node's log quoted in failure messages.
pub const LOG_TAIL_LINES: usize = 30;
/// Polling intervals: connecting and leader agreement, [`crate::eventually`] (cheap in-process
/// checks), [`crate::eventually_async`] (checks that often run a process or an RPC), a stopping
/// process.
pub const RETRY_POLL: Duration = Duration::from_millis(50);
pub const EVENTUALLY_POLL: Duration = Duration::from_millis(10);
pub const EVENTUALLY_ASYNC_POLL: Duration = Duration::from_millis(100);
pub const EXIT_POLL: Duration = Duration::from_millis(10);
