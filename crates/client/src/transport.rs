//! Endpoints, channels and backoff, shared by the admin client and the watcher.
//!
//! A client is given a list of node addresses (any node serves reads and watches, and accepts
//! writes, forwarding them to the leader). Channels are opened lazily, one per endpoint, and
//! reused; a failed call moves to the next endpoint in the list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use crate::limits;

/// The configured node addresses, each with a lazily connected channel.
#[derive(Debug)]
pub(crate) struct Endpoints {
    nodes: Vec<Node>,
    /// Where the next call starts (the last endpoint that answered).
    preferred: AtomicUsize,
}

#[derive(Debug)]
struct Node {
    url: String,
    channel: Channel,
}

/// Normalises `host:port` to `http://host:port`.
fn normalise(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") { url.to_string() } else { format!("http://{url}") }
}

/// Parses and checks the endpoint list.
pub(crate) fn parse_endpoints(urls: &[String]) -> Result<Vec<(String, Endpoint)>, Error> {
    if urls.is_empty() {
        return Err(Error::Config("at least one endpoint is required".into()));
    }
    if urls.len() > limits::ENDPOINTS_MAX {
        return Err(Error::Config(format!("{} endpoints given; the limit is {}", urls.len(), limits::ENDPOINTS_MAX)));
    }
    urls.iter()
        .map(|u| {
            let url = normalise(u);
            Endpoint::from_shared(url.clone())
                .map(|e| (url.clone(), e))
                .map_err(|e| Error::Config(format!("endpoint {u:?} is not a valid URL: {e}")))
        })
        .collect()
}

impl Endpoints {
    /// Channels for unary calls: a connect timeout and a per-call deadline.
    pub(crate) fn for_unary(urls: &[String]) -> Result<Endpoints, Error> {
        let nodes = parse_endpoints(urls)?
            .into_iter()
            .map(|(url, e)| Node {
                url,
                channel: e
                    .connect_timeout(limits::CONNECT_TIMEOUT)
                    .timeout(limits::REQUEST_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy(),
            })
            .collect();
        Ok(Endpoints { nodes, preferred: AtomicUsize::new(0) })
    }

    /// The `attempt`-th endpoint to try for a call (round robin from the preferred one).
    pub(crate) fn pick(&self, attempt: u32) -> (usize, &str, Channel) {
        let i = (self.preferred.load(Ordering::Relaxed) + attempt as usize) % self.nodes.len();
        let n = &self.nodes[i];
        (i, &n.url, n.channel.clone())
    }

    /// Remembers an endpoint that answered, so the next call starts there.
    pub(crate) fn prefer(&self, i: usize) {
        self.preferred.store(i % self.nodes.len(), Ordering::Relaxed);
    }

    /// The index of the endpoint with this address, if it is one of ours (for leader hints).
    pub(crate) fn index_of(&self, addr: &str) -> Option<usize> {
        let addr = normalise(addr);
        self.nodes.iter().position(|n| n.url == addr)
    }
}

/// A channel for the watch stream: no per-call deadline (the stream lives for hours), but
/// HTTP/2 keep-alive, so a node that vanishes without closing the connection is noticed.
pub(crate) fn watch_channel(endpoint: &Endpoint) -> Channel {
    endpoint
        .clone()
        .connect_timeout(limits::CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(limits::WATCH_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(limits::WATCH_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy()
}

/// Exponential backoff with jitter: `min · 2^failures`, capped at `max`, then a uniformly random
/// point in its upper half (so many clients cut off by one failure do not return in lockstep,
/// yet none retries much sooner than planned). The one backoff of the admin calls, the watcher
/// and `vexilctl` (re-exported as `vexil_client::admin::backoff`); each picks its bounds.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1u32 << failures.min(20)).min(max);
    let half = base / 2;
    let jitter_ns = rand::rng().random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
    half + Duration::from_nanos(jitter_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(1_000);
        for failures in 0..30 {
            let expected = (min * 2u32.pow(failures.min(20))).min(max);
            for _ in 0..50 {
                let d = backoff(failures, min, max);
                assert!(d >= expected / 2 && d <= expected, "failures={failures}: {d:?} vs {expected:?}");
            }
        }
        let samples: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(6, min, max)).collect();
        assert!(samples.len() > 10, "backoff is not jittered: {samples:?}");
    }

    #[test]
    fn endpoints_are_validated_and_normalised() {
        assert!(matches!(parse_endpoints(&[]), Err(Error::Config(_))));
        assert!(matches!(parse_endpoints(&["http://[::1".to_string()]), Err(Error::Config(_))));
        let e = parse_endpoints(&["127.0.0.1:7000".to_string(), "http://node-2:7000".to_string()]).unwrap();
        assert_eq!(e[0].0, "http://127.0.0.1:7000");
        assert_eq!(e[1].0, "http://node-2:7000");
    }
}
