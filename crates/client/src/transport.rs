//! Endpoints, channels, connection security and backoff, shared by the admin client, the
//! watcher and `vexilctl`.
//!
//! A client is given a list of node addresses (any node serves reads and watches, and accepts
//! writes, forwarding them to the leader). Channels are opened lazily, one per endpoint, and
//! reused; a failed call moves to the next endpoint in the list.
//!
//! Security ([`ConnectOptions`]) is applied here and nowhere else: every channel this crate
//! (or `vexilctl`, through [`ConnectOptions::channel`]) opens is a [`NodeChannel`], which
//! sends the bearer token on every call, unary and streaming, and speaks TLS when TLS is
//! configured. tonic uses TLS only for `https://` URIs and silently stays plaintext for
//! `http://`, so the scheme is decided here: a bare `host:port` becomes `https://` with TLS and
//! `http://` without, and a scheme that contradicts the options is a configuration error,
//! never a quiet downgrade.
//!
//! Architecture invariant: no channel to a node is built outside this module.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::Error;
use crate::limits;

/// How a client reaches the nodes: the bearer token it presents and the TLS it speaks. The
/// default is a plaintext connection without a token (a cluster run without security).
///
/// ```
/// use vexil_client::{AdminClient, ConnectOptions, TlsOptions};
/// # fn example(ca_pem: String, token: String) -> Result<(), vexil_client::Error> {
/// # let _rt = tokio::runtime::Runtime::new().expect("runtime"); let _g = _rt.enter();
/// let options = ConnectOptions::new().token(token).tls(TlsOptions::new(ca_pem));
/// // `host:port` endpoints become https:// because TLS is configured.
/// let admin = AdminClient::new_with_options(["10.0.0.1:7001", "10.0.0.2:7001"], options)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ConnectOptions {
    token: Option<String>,
    tls: Option<TlsOptions>,
    region: Option<Region>,
    region_return: Option<Duration>,
}

/// The client's own region: its name (for logs) and the endpoints of the nodes in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    name: String,
    endpoints: Vec<String>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "[secret]"))
            .field("tls", &self.tls)
            .field("region", &self.region)
            .field("region_return", &self.region_return)
            .finish()
    }
}

/// TLS to the nodes: the CA certificate to trust, and for mutual TLS the client's own
/// certificate and key. All PEM text (as `vexilctl tls` writes it).
#[derive(Clone)]
pub struct TlsOptions {
    ca_cert_pem: String,
    identity: Option<(String, String)>,
    domain_name: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("client_certificate", &self.identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish_non_exhaustive()
    }
}

impl TlsOptions {
    /// Trust nodes whose certificates this CA issued (`ca.pem`; several certificates may be
    /// concatenated, e.g. during a CA rotation). No system roots are trusted.
    pub fn new(ca_cert_pem: impl Into<String>) -> TlsOptions {
        TlsOptions { ca_cert_pem: ca_cert_pem.into(), identity: None, domain_name: None }
    }

    /// Mutual TLS: present this certificate (PEM, optionally followed by intermediates) and
    /// its private key (PEM) to nodes that demand client certificates.
    pub fn identity(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> TlsOptions {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Check the nodes' certificates for this name instead of the host of each endpoint (for
    /// nodes dialed by an address their certificates do not carry).
    pub fn domain_name(mut self, name: impl Into<String>) -> TlsOptions {
        self.domain_name = Some(name.into());
        self
    }

    /// tonic's configuration, after checking each PEM input (tonic would skip what it cannot
    /// parse and fail only at the handshake, or never say why).
    fn to_tonic(&self) -> Result<ClientTlsConfig, Error> {
        let certs = |pem: &str, what: &str| -> Result<usize, Error> {
            let n = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Config(format!("{what} is not valid PEM: {e}")))?
                .len();
            if n == 0 {
                return Err(Error::Config(format!("{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
            }
            Ok(n)
        };
        certs(&self.ca_cert_pem, "the TLS CA certificate")?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_cert_pem));
        if let Some((cert, key)) = &self.identity {
            certs(cert, "the TLS client certificate")?;
            PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
                Error::Config(format!("the TLS client key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
            })?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            if name.trim().is_empty() {
                return Err(Error::Config("the TLS domain name is empty".into()));
            }
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

impl ConnectOptions {
    /// No token, no TLS.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Send this bearer token (`vexil_...`) on every call, as `authorization: Bearer <token>`.
    pub fn token(mut self, secret: impl Into<String>) -> ConnectOptions {
        self.token = Some(secret.into());
        self
    }

    /// Speak TLS to the nodes.
    pub fn tls(mut self, tls: TlsOptions) -> ConnectOptions {
        self.tls = Some(tls);
        self
    }

    /// Prefer the nodes of this client's region: `name` (for logs) and their endpoints (which
    /// are added to the endpoint list if it lacks them). Calls and the watch stream go to them
    /// first and fall back to the other endpoints only when none of them answers; what fell
    /// back returns to the region after [`limits::REGION_RETURN_INTERVAL`]
    /// ([`Self::region_return_after`]) (a call) or ends its out-of-region stream then and
    /// resumes in the region (the watch stream).
    pub fn region<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        endpoints: impl IntoIterator<Item = S>,
    ) -> ConnectOptions {
        self.region = Some(Region { name: name.into(), endpoints: endpoints.into_iter().map(Into::into).collect() });
        self
    }

    /// How long calls and the watch stream stay outside the client's region before they try
    /// it again (default [`limits::REGION_RETURN_INTERVAL`]; at least 1 s).
    pub fn region_return_after(mut self, after: Duration) -> ConnectOptions {
        self.region_return = Some(after);
        self
    }

    /// Whether TLS is configured (endpoints are then `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The URL a client dials for `endpoint`: `host:port` gets `https://` with TLS and
    /// `http://` without; a URL is kept if its scheme agrees with the options. An `http://`
    /// endpoint with TLS configured is an error naming it (tonic would connect in plaintext).
    pub fn endpoint_url(&self, endpoint: &str) -> Result<String, Error> {
        endpoint_url(endpoint, self.is_tls())
    }

    /// The URLs of `endpoints` in the order calls try them: the client's region first
    /// ([`Self::region`]), each once. For callers that walk the nodes themselves (`vexilctl`).
    pub fn endpoint_urls(&self, endpoints: &[String]) -> Result<Vec<String>, Error> {
        Ok(self.dialer()?.endpoints(endpoints)?.endpoints.into_iter().map(|(url, _)| url).collect())
    }

    /// A lazily connected channel to one node with these credentials and TLS, and a deadline
    /// on every call: for callers that pick the node themselves (`vexilctl` asks each member
    /// for its status, sends membership changes to the leader). Must be called inside a Tokio
    /// runtime.
    pub fn channel(&self, endpoint: &str, timeout: Duration) -> Result<NodeChannel, Error> {
        let dialer = self.dialer()?;
        let (_, e) = dialer.endpoint(endpoint)?;
        Ok(dialer.wrap(e.connect_timeout(limits::CONNECT_TIMEOUT).timeout(timeout).tcp_nodelay(true).connect_lazy()))
    }

    /// Checks the options and prepares what every channel is built from.
    pub(crate) fn dialer(&self) -> Result<Dialer, Error> {
        let credentials = match &self.token {
            None => Credentials { authorization: None },
            Some(secret) => Credentials { authorization: Some(authorization(secret)?) },
        };
        let tls = self.tls.as_ref().map(TlsOptions::to_tonic).transpose()?;
        let region = match &self.region {
            None => None,
            Some(r) if r.name.trim().is_empty() => return Err(Error::Config("the region name is empty".into())),
            Some(r) if r.endpoints.iter().all(|e| e.trim().is_empty()) => {
                return Err(Error::Config(format!("region {:?} lists no endpoints", r.name)));
            }
            Some(r) => Some(r.clone()),
        };
        let region_return = match self.region_return {
            Some(d) if d < Duration::from_secs(1) => {
                return Err(Error::Config(format!("the region return interval {d:?} is below 1 s")));
            }
            Some(d) => d,
            None => limits::REGION_RETURN_INTERVAL,
        };
        Ok(Dialer { tls, credentials, region, region_return })
    }
}

/// The `authorization` metadata value for a token, marked sensitive (HTTP/2 header compression
/// never indexes it). The error never quotes the secret.
fn authorization(secret: &str) -> Result<AsciiMetadataValue, Error> {
    if secret.is_empty() {
        return Err(Error::Config("the token is empty".into()));
    }
    if secret.len() > limits::TOKEN_BYTES_MAX {
        return Err(Error::Config(format!(
            "the token is {} bytes long; the limit is {}",
            secret.len(),
            limits::TOKEN_BYTES_MAX
        )));
    }
    if let Some(i) = secret.find(|c: char| !c.is_ascii_graphic()) {
        return Err(Error::Config(format!(
            "the token contains a space, a control or a non-ASCII character at byte {i}; a token is one word such as vexil_0123…"
        )));
    }
    let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {secret}"))
        .map_err(|_| Error::Config("the token cannot be sent in a header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The interceptor of every [`NodeChannel`]: adds `authorization: Bearer <token>` to each
/// request (unary calls and streams alike) when a token is configured.
#[derive(Clone)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("token", &self.authorization.as_ref().map(|_| "[secret]")).finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to one node that carries the client's credentials: build any generated client
/// on it (`FlagsClient::new(channel)`).
pub type NodeChannel = InterceptedService<Channel, Credentials>;

/// Checked connection options: what every channel is built from.
#[derive(Clone)]
pub(crate) struct Dialer {
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
    region: Option<Region>,
    region_return: Duration,
}

/// The endpoints in the order a client tries them: the `local` first ones are in its region,
/// and what left it returns after `return_after`.
#[derive(Debug)]
pub(crate) struct Ordered {
    pub(crate) endpoints: Vec<(String, Endpoint)>,
    pub(crate) local: usize,
    pub(crate) return_after: Duration,
}

impl Dialer {
    /// The endpoint for one node address, with TLS when configured.
    fn endpoint(&self, raw: &str) -> Result<(String, Endpoint), Error> {
        let url = endpoint_url(raw, self.tls.is_some())?;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Config(format!("endpoint {raw:?} is not a valid URL: {e}")))?;
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::Config(format!("endpoint {raw:?}: cannot set up TLS: {e}")))?,
            None => endpoint,
        };
        Ok((url, endpoint))
    }

    fn wrap(&self, channel: Channel) -> NodeChannel {
        InterceptedService::new(channel, self.credentials.clone())
    }

    /// Parses and checks the endpoint list, and puts the client's region first.
    pub(crate) fn endpoints(&self, urls: &[String]) -> Result<Ordered, Error> {
        if urls.is_empty() && self.region.is_none() {
            return Err(Error::Config("at least one endpoint is required".into()));
        }
        let mut local = Vec::new();
        if let Some(region) = &self.region {
            for raw in region.endpoints.iter().filter(|e| !e.trim().is_empty()) {
                let (url, e) = self.endpoint(raw)?;
                if !local.iter().any(|(u, _): &(String, Endpoint)| *u == url) {
                    local.push((url, e));
                }
            }
        }
        let mut all = local;
        let local = all.len();
        for raw in urls {
            let (url, e) = self.endpoint(raw)?;
            if !all.iter().any(|(u, _)| *u == url) {
                all.push((url, e));
            }
        }
        if all.len() > limits::ENDPOINTS_MAX {
            return Err(Error::Config(format!(
                "{} endpoints given; the limit is {}",
                all.len(),
                limits::ENDPOINTS_MAX
            )));
        }
        if let Some(region) = &self.region {
            tracing::debug!(region = %region.name, in_region = local, endpoints = all.len(), "preferring the client's region");
        }
        Ok(Ordered { endpoints: all, local, return_after: self.region_return })
    }

    /// Channels for the watch stream: no per-call deadline (the stream lives for hours), but
    /// HTTP/2 keep-alive, so a node that vanishes without closing the connection is noticed.
    pub(crate) fn watch_channels(&self, ordered: &Ordered) -> Vec<(String, NodeChannel)> {
        ordered
            .endpoints
            .iter()
            .map(|(url, e)| {
                let channel = e
                    .clone()
                    .connect_timeout(limits::CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(limits::WATCH_KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(limits::WATCH_KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                (url.clone(), self.wrap(channel))
            })
            .collect()
    }
}

/// `host:port` → `http(s)://host:port` by whether TLS is on; a URL must agree with it.
fn endpoint_url(raw: &str, tls: bool) -> Result<String, Error> {
    let url = raw.trim().trim_end_matches('/');
    match url.split_once("://") {
        None => Ok(format!("{}://{url}", if tls { "https" } else { "http" })),
        Some(("https", _)) if tls => Ok(url.to_string()),
        Some(("http", _)) if !tls => Ok(url.to_string()),
        Some(("http", _)) => Err(Error::Config(format!(
            "endpoint {raw:?} is http:// but TLS is configured; it would connect in plaintext: use https:// or plain host:port"
        ))),
        Some(("https", _)) => Err(Error::Config(format!(
            "endpoint {raw:?} is https:// but no TLS is configured: give the CA certificate to trust (TlsOptions, vexilctl --cacert)"
        ))),
        Some((scheme, _)) => Err(Error::Config(format!(
            "endpoint {raw:?} has the scheme {scheme:?}; use host:port, http:// or https://"
        ))),
    }
}

/// `host:port` of a URL or an address, for comparing a leader hint with the endpoints.
fn authority(url: &str) -> &str {
    let url = url.trim().trim_end_matches('/');
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

/// The configured node addresses, each with a lazily connected channel.
#[derive(Debug)]
pub(crate) struct Endpoints {
    nodes: Vec<Node>,
    /// Where the next call starts (the last endpoint that answered).
    preferred: AtomicUsize,
    /// The first `local` nodes are in the client's region (0: no region).
    local: usize,
    /// Since when calls start outside the region (an out-of-region node answered while the
    /// region's did not); they return after `return_after`.
    strayed: std::sync::Mutex<Option<std::time::Instant>>,
    return_after: Duration,
}

#[derive(Debug)]
struct Node {
    url: String,
    channel: NodeChannel,
}

impl Endpoints {
    /// Channels for unary calls: a connect timeout and a per-call deadline.
    pub(crate) fn for_unary(urls: &[String], dialer: &Dialer) -> Result<Endpoints, Error> {
        let ordered = dialer.endpoints(urls)?;
        let (local, return_after) = (ordered.local, ordered.return_after);
        let nodes = ordered
            .endpoints
            .into_iter()
            .map(|(url, e)| Node {
                url,
                channel: dialer.wrap(
                    e.connect_timeout(limits::CONNECT_TIMEOUT)
                        .timeout(limits::REQUEST_TIMEOUT)
                        .tcp_nodelay(true)
                        .connect_lazy(),
                ),
            })
            .collect();
        Ok(Endpoints {
            nodes,
            preferred: AtomicUsize::new(0),
            local,
            strayed: std::sync::Mutex::new(None),
            return_after,
        })
    }

    /// The `attempt`-th endpoint to try for a call (round robin from the preferred one; a call
    /// that starts outside the region for long enough starts in it again).
    pub(crate) fn pick(&self, attempt: u32) -> (usize, &str, NodeChannel) {
        // Only a client with a region ever strays (no lock on every call otherwise).
        if attempt == 0 && self.local > 0 {
            let mut strayed = self.strayed.lock().expect("strayed lock poisoned");
            if strayed.is_some_and(|since| since.elapsed() >= self.return_after) {
                *strayed = None;
                self.preferred.store(0, Ordering::Relaxed);
            }
        }
        let i = (self.preferred.load(Ordering::Relaxed) + attempt as usize) % self.nodes.len();
        let n = &self.nodes[i];
        (i, &n.url, n.channel.clone())
    }

    /// Remembers an endpoint that answered, so the next call starts there.
    pub(crate) fn prefer(&self, i: usize) {
        let i = i % self.nodes.len();
        self.preferred.store(i, Ordering::Relaxed);
        if self.local == 0 {
            return;
        }
        let mut strayed = self.strayed.lock().expect("strayed lock poisoned");
        if i < self.local {
            *strayed = None;
        } else if strayed.is_none() {
            *strayed = Some(std::time::Instant::now());
        }
    }

    /// The index of the endpoint with this address, if it is one of ours (for leader hints,
    /// which name a `host:port` whatever the scheme).
    pub(crate) fn index_of(&self, addr: &str) -> Option<usize> {
        let addr = authority(addr);
        self.nodes.iter().position(|n| authority(&n.url) == addr)
    }
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

    fn plain() -> Dialer {
        ConnectOptions::new().dialer().expect("plain options")
    }

    fn ca_pem() -> String {
        vexil_pki::Ca::generate("test CA").expect("CA").cert_pem().to_string()
    }

    #[test]
    fn endpoints_are_validated_and_normalised() {
        assert!(matches!(plain().endpoints(&[]), Err(Error::Config(_))));
        assert!(matches!(plain().endpoints(&["http://[::1".to_string()]), Err(Error::Config(_))));
        let too_many: Vec<String> = (0..=limits::ENDPOINTS_MAX).map(|i| format!("n{i}:1")).collect();
        assert!(matches!(plain().endpoints(&too_many), Err(Error::Config(_))));
        let e = plain().endpoints(&["127.0.0.1:7000".to_string(), "http://node-2:7000/".to_string()]).unwrap();
        assert_eq!(e.endpoints[0].0, "http://127.0.0.1:7000");
        assert_eq!(e.endpoints[1].0, "http://node-2:7000");
        assert_eq!(e.local, 0);
    }

    fn urls(o: &Ordered) -> Vec<&str> {
        o.endpoints.iter().map(|(u, _)| u.as_str()).collect()
    }

    #[test]
    fn the_clients_region_comes_first_and_is_checked() {
        let all: Vec<String> = ["us-1:7001", "us-2:7001", "eu-1:7001"].map(String::from).to_vec();
        let eu = ConnectOptions::new().region("eu", ["eu-1:7001", "eu-2:7001"]).dialer().unwrap();
        let o = eu.endpoints(&all).unwrap();
        // In-region endpoints first (added when the list lacks them), each once.
        assert_eq!(urls(&o), ["http://eu-1:7001", "http://eu-2:7001", "http://us-1:7001", "http://us-2:7001"]);
        assert_eq!(o.local, 2);
        // A region alone is enough endpoints.
        assert_eq!(eu.endpoints(&[]).unwrap().local, 2);

        let err = |o: ConnectOptions| o.dialer().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(ConnectOptions::new().region(" ", ["a:1"])).contains("region name is empty"));
        assert!(err(ConnectOptions::new().region("eu", [""])).contains("region \"eu\" lists no endpoints"));
    }

    #[tokio::test]
    async fn calls_that_left_the_region_return_to_it() {
        let all: Vec<String> = ["us-1:7001", "us-2:7001"].map(String::from).to_vec();
        let dialer = ConnectOptions::new().region("eu", ["eu-1:7001"]).dialer().unwrap();
        let e = Endpoints::for_unary(&all, &dialer).unwrap();
        assert_eq!(e.pick(0).1, "http://eu-1:7001", "a call starts in the region");
        assert_eq!(e.pick(1).1, "http://us-1:7001", "and falls back out of it");
        e.prefer(1);
        assert_eq!(e.pick(0).1, "http://us-1:7001", "the node that answered is tried first");
        // Once the return interval has passed, calls start in the region again.
        *e.strayed.lock().unwrap() = Some(std::time::Instant::now() - limits::REGION_RETURN_INTERVAL);
        assert_eq!(e.pick(0).1, "http://eu-1:7001");
        assert!(e.strayed.lock().unwrap().is_none());
        e.prefer(0);
        assert!(e.strayed.lock().unwrap().is_none(), "an in-region answer is home");
    }

    #[test]
    fn the_scheme_follows_the_tls_options_and_never_contradicts_them() {
        assert_eq!(endpoint_url("10.0.0.1:7001", true).unwrap(), "https://10.0.0.1:7001");
        assert_eq!(endpoint_url(" https://n:1/ ", true).unwrap(), "https://n:1");
        assert_eq!(endpoint_url("10.0.0.1:7001", false).unwrap(), "http://10.0.0.1:7001");
        // Plaintext where TLS was asked for: refused, naming the endpoint.
        let Err(Error::Config(m)) = endpoint_url("http://10.0.0.1:7001", true) else { panic!("http with TLS") };
        assert!(m.contains("\"http://10.0.0.1:7001\"") && m.contains("plaintext"), "{m}");
        let Err(Error::Config(m)) = endpoint_url("https://n:1", false) else { panic!("https without TLS") };
        assert!(m.contains("\"https://n:1\"") && m.contains("CA certificate"), "{m}");
        assert!(matches!(endpoint_url("unix:///tmp/s", false), Err(Error::Config(_))));

        let tls = ConnectOptions::new().tls(TlsOptions::new(ca_pem()));
        let d = tls.dialer().unwrap();
        let e = d.endpoints(&["127.0.0.1:7000".to_string(), "https://node-2:7000".to_string()]).unwrap();
        assert_eq!(urls(&e), ["https://127.0.0.1:7000", "https://node-2:7000"]);
        let err = d.endpoints(&["127.0.0.1:7000".to_string(), "http://node-2:7000".to_string()]).unwrap_err();
        assert!(err.to_string().contains("http://node-2:7000"), "{err}");
    }

    #[test]
    fn bad_pem_and_tokens_are_configuration_errors() {
        let err = |o: ConnectOptions| match o.dialer() {
            Err(Error::Config(m)) => m,
            Ok(_) => panic!("accepted {o:?}"),
            Err(e) => panic!("{e:?}"),
        };
        let m = err(ConnectOptions::new().tls(TlsOptions::new("not a certificate")));
        assert!(m.contains("CA certificate holds no PEM certificate"), "{m}");
        let ca = vexil_pki::Ca::generate("test CA").unwrap();
        let id = ca.issue("client", &["client".into()]).unwrap();
        let m = err(ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()).identity(&id.cert_pem, "nope")));
        assert!(m.contains("client key"), "{m}");
        let m = err(ConnectOptions::new().tls(TlsOptions::new(ca.cert_pem()).identity(&id.key_pem, &id.key_pem)));
        assert!(m.contains("client certificate"), "{m}");
        assert!(
            ConnectOptions::new()
                .tls(TlsOptions::new(ca.cert_pem()).identity(&id.cert_pem, &id.key_pem))
                .dialer()
                .is_ok()
        );

        let m = err(ConnectOptions::new().token(""));
        assert!(m.contains("empty"), "{m}");
        let secret = "vexil_abc def";
        let m = err(ConnectOptions::new().token(secret));
        assert!(m.contains("space") && !m.contains(secret), "the message must not quote the token: {m}");
        assert!(err(ConnectOptions::new().token("x".repeat(limits::TOKEN_BYTES_MAX + 1))).contains("limit"));
        let opts = ConnectOptions::new().token("vexil_0123");
        assert!(!format!("{opts:?}").contains("vexil_0123"));
        assert!(!format!("{:?}", opts.dialer().unwrap().credentials).contains("vexil_0123"));
    }

    #[test]
    fn the_interceptor_adds_the_bearer_token_when_there_is_one() {
        let mut with = ConnectOptions::new().token("vexil_00ff").dialer().unwrap().credentials;
        let req = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer vexil_00ff");
        let mut without = plain().credentials;
        assert!(without.call(tonic::Request::new(())).unwrap().metadata().get("authorization").is_none());
    }

    #[test]
    fn leader_hints_match_endpoints_whatever_their_scheme() {
        let tls = ConnectOptions::new().tls(TlsOptions::new(ca_pem())).dialer().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let e = Endpoints::for_unary(&["10.0.0.1:7001".into(), "10.0.0.2:7001".into()], &tls).unwrap();
        assert_eq!(e.index_of("10.0.0.2:7001"), Some(1));
        assert_eq!(e.index_of("https://10.0.0.2:7001/"), Some(1));
        assert_eq!(e.index_of("10.0.0.3:7001"), None);
    }
}
