//! Every bound the client library works within, in one place. Configuration may lower a
//! bound (shorter timeouts, fewer retries), never exceed it.

use std::time::Duration;

/// Endpoints a client accepts (a cluster is 3–5 voters plus a few learners per region).
pub const ENDPOINTS_MAX: usize = 64;

/// Longest bearer token accepted (a Vexil secret is `vexil_` and 64 hex digits; the bound keeps
/// a wrong file given as a token out of every request header).
pub const TOKEN_BYTES_MAX: usize = 1_024;

/// Namespaces one client keeps a live copy of.
pub const NAMESPACES_MAX: usize = 64;

/// Time to open a TCP + HTTP/2 connection to one node before trying the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Deadline of one unary admin call on one node (the server's own write timeout is shorter,
/// so a slow write comes back as `WRITE_OUTCOME_UNKNOWN` rather than a client-side timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of one logical admin call across the endpoints (the first try included). Every
/// attempt of a write carries the same `request_id`, so at most one of them applies.
pub const ADMIN_ATTEMPTS_MAX: u32 = 8;

/// Backoff between admin attempts: starts here, doubles per failure, capped below, with jitter.
pub const ADMIN_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const ADMIN_BACKOFF_MAX: Duration = Duration::from_millis(2_000);

/// Backoff between watch reconnections: the first retry after a stream that delivered data
/// waits about this long (on the next node); consecutive failures double it up to the cap.
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(25);
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// HTTP/2 keep-alive on the watch connection: a ping every interval, and a connection whose
/// ping is not answered within the timeout is declared dead (a partitioned node otherwise
/// keeps a silent stream open for as long as TCP does).
pub const WATCH_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
pub const WATCH_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest watch message accepted (a snapshot of every watched namespace).
pub const WATCH_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Change events buffered per subscriber; a subscriber that falls further behind gets
/// `RecvError::Lagged` and should re-read the state.
pub const CHANGE_EVENTS_CAPACITY: usize = 1_024;

/// Quiet period before the disk cache is written after a change (several changes close
/// together cost one write).
pub const DISK_CACHE_DEBOUNCE: Duration = Duration::from_millis(200);

/// Largest disk cache file the client will read.
pub const DISK_CACHE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Default wait in `ClientBuilder::connect` for the first state from the cluster before the
/// client is returned anyway (serving the disk cache or the callers' defaults).
pub const INIT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// How long the copy may go without the cluster confirming it current before the client calls
/// itself stale and moves to another node (`ClientBuilder::max_staleness`). Above the server's
/// `watch.unconfirmed_max_ms` default (3 s), so a node that can still speak says `stale`
/// first; this catches one that cannot (paused, or its network gone silent).
pub const MAX_STALENESS_DEFAULT: Duration = Duration::from_secs(5);
/// The shortest `max_staleness` accepted: a few of the server's shortest progress intervals.
pub const MAX_STALENESS_MIN: Duration = Duration::from_millis(100);

/// Page size for listing calls that fetch every page.
pub const LIST_PAGE_SIZE: u32 = 1_000;

const _: () = {
    assert!(ADMIN_BACKOFF_MIN.as_millis() <= ADMIN_BACKOFF_MAX.as_millis());
    assert!(WATCH_BACKOFF_MIN.as_millis() <= WATCH_BACKOFF_MAX.as_millis());
    assert!(ADMIN_ATTEMPTS_MAX >= 1);
    assert!(WATCH_KEEPALIVE_INTERVAL.as_millis() < WATCH_KEEPALIVE_TIMEOUT.as_millis());
};

/// How long a client whose region's nodes did not answer keeps using nodes of other regions
/// before it tries its region again (unary calls start there again; an out-of-region watch
/// stream ends and resumes in the region, from its revision).
pub const REGION_RETURN_INTERVAL: Duration = Duration::from_secs(30);
