//! Typed access to a running [`Cluster`]: gRPC clients per node, a node's status, waiting for
//! the nodes to agree on a leader, a node's whole audit log, one GET on the admin listener; and
//! the request pieces several suites build (a flag definition, linearizable read options,
//! checking an audit hash chain).

use std::io;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::{AuditEntry, Consistency, ListAuditRequest, ReadOptions, StatusRequest, StatusResponse};

use crate::limits::{
    ADMIN_READ_TIMEOUT, AUDIT_PAGE_ENTRIES, CONNECT_RETRY_TIMEOUT, CONNECT_TIMEOUT, RETRY_POLL, STATUS_CONNECT_TIMEOUT,
    STATUS_REQUEST_TIMEOUT, STATUS_TIMEOUT,
};
use crate::{Cluster, Listener};

impl Cluster {
    /// An endpoint for node `id`'s API: TLS trusting the cluster CA in a secure cluster.
    pub fn endpoint(&self, id: u64) -> Endpoint {
        let endpoint = Channel::from_shared(self.api_addr(id)).unwrap();
        if !self.is_secure() {
            return endpoint;
        }
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.credentials().ca_pem()));
        endpoint.tls_config(tls).unwrap()
    }

    /// `msg` as a request carrying the admin token in a secure cluster (as is otherwise).
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if self.is_secure() {
            let header = format!("Bearer {}", self.credentials().admin_token());
            req.metadata_mut().insert("authorization", header.parse().unwrap());
        }
        req
    }

    /// A channel to node `id`'s API, retrying for up to 10 s while the node comes up.
    pub async fn channel(&self, id: u64) -> Channel {
        let deadline = Instant::now() + CONNECT_RETRY_TIMEOUT;
        loop {
            match self.endpoint(id).connect_timeout(CONNECT_TIMEOUT).connect().await {
                Ok(ch) => return ch,
                Err(e) if Instant::now() > deadline => panic!("node {id} is not reachable: {e}\n{}", self.log_tail(id)),
                Err(_) => tokio::time::sleep(RETRY_POLL).await,
            }
        }
    }

    pub async fn flags(&self, id: u64) -> FlagsClient<Channel> {
        FlagsClient::new(self.channel(id).await)
    }

    pub async fn audit(&self, id: u64) -> AuditClient<Channel> {
        AuditClient::new(self.channel(id).await)
    }

    pub async fn cluster(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id).await)
    }

    /// A node's status, or `None` if it does not answer within about a second.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let ch = self.endpoint(id).connect_timeout(STATUS_CONNECT_TIMEOUT).connect().await.ok()?;
        let mut c = ClusterClient::new(ch);
        let mut req = self.request(StatusRequest {});
        req.set_timeout(STATUS_REQUEST_TIMEOUT);
        tokio::time::timeout(STATUS_TIMEOUT, c.status(req)).await.ok()?.ok().map(|r| r.into_inner())
    }

    /// Waits until every running node agrees on one running leader; returns its id.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        self.wait_leader_among(&self.running(), within).await
    }

    /// Waits until nodes `ids` agree on one leader that is one of them; returns its id.
    pub async fn wait_leader_among(&self, ids: &[u64], within: Duration) -> u64 {
        self.try_wait_leader_among(ids, within).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Cluster::wait_leader_among`], failing with the nodes' log tails instead of panicking.
    pub async fn try_wait_leader_among(&self, ids: &[u64], within: Duration) -> io::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in ids {
                leaders.push(self.status(*id).await.map_or(0, |s| s.leader_id));
            }
            if let Some(&first) = leaders.first()
                && first != 0
                && leaders.iter().all(|l| *l == first)
                && ids.contains(&first)
            {
                return Ok(first);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = ids
                    .iter()
                    .filter(|id| self.process(**id).is_running())
                    .map(|id| format!("--- node {id} ---\n{}", self.log_tail(*id)))
                    .collect();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no agreed leader among {ids:?} within {within:?}: {leaders:?}\n{}", logs.join("\n")),
                ));
            }
            tokio::time::sleep(RETRY_POLL).await;
        }
    }

    /// Every audit entry a node holds, read locally once it has applied `min_revision`.
    pub async fn audit_log(&self, id: u64, min_revision: u64) -> Vec<AuditEntry> {
        let mut client = self.audit(id).await;
        let mut out = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = client
                .list_audit(self.request(ListAuditRequest {
                    after_seq,
                    limit: AUDIT_PAGE_ENTRIES,
                    read: Some(ReadOptions { consistency: Consistency::Stale as i32, min_revision }),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            out.extend(page.entries);
            if !page.more {
                return out;
            }
            after_seq = out.last().unwrap().seq;
        }
    }

    /// One HTTP GET on the node's admin listener ([`Listener::Admin`]): (status code, body).
    /// Over TLS with the admin token in a secure cluster.
    pub fn admin_get(&self, id: u64, path: &str) -> (u16, String) {
        let token = self.is_secure().then(|| self.credentials().admin_token().to_string());
        self.admin_get_as(id, path, token.as_deref())
    }

    /// [`Cluster::admin_get`] with this bearer token, or none.
    pub fn admin_get_as(&self, id: u64, path: &str, token: Option<&str>) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let reply = self.http(id, Listener::Admin, "GET", path, &headers, "");
        (reply.status, reply.body)
    }

    /// One HTTP/1.1 request to one of node `id`'s HTTP listeners (over TLS trusting the cluster
    /// CA in a secure cluster); `headers` as given (a POST without a `Content-Type` gets JSON's),
    /// no credentials added.
    pub fn http(
        &self,
        id: u64,
        listener: Listener,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl AsRef<[u8]>,
    ) -> HttpReply {
        use std::io::{Read, Write};
        let body = body.as_ref();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", self.port(id, listener))).unwrap();
        tcp.set_read_timeout(Some(ADMIN_READ_TIMEOUT)).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let typed = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if !typed && (!body.is_empty() || method == "POST") {
            head.push_str("Content-Type: application/json\r\n");
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let mut raw = Vec::new();
        if self.is_secure() {
            let mut s = rustls::StreamOwned::new(self.tls_client("127.0.0.1"), tcp);
            s.write_all(&request).unwrap();
            // The server may close without close_notify once it has answered.
            let _ = s.read_to_end(&mut raw);
        } else {
            let mut s = tcp;
            s.write_all(&request).unwrap();
            s.read_to_end(&mut raw).unwrap();
        }
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let bytes = raw.get(split + 4..).unwrap_or_default().to_vec();
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        HttpReply { status, headers, body: String::from_utf8_lossy(&bytes).into_owned(), bytes }
    }

    /// A rustls client connection to `server_name` that trusts only the cluster CA.
    pub fn tls_client(&self, server_name: &str) -> rustls::ClientConnection {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.credentials().ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap()
    }
}

/// What [`Cluster::http`] got back.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy), and as it came.
    pub body: String,
    pub bytes: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the reply when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A boolean flag definition whose default variant is `default` ("on" or "off") and whose
/// metadata carries `tag` (unique tags make every write distinguishable).
pub fn bool_spec(default: &str, tag: &str) -> String {
    serde_json::json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": default,
        "metadata": {"tag": tag}
    })
    .to_string()
}

/// [`bool_spec`] with default variant "on".
pub fn spec(tag: &str) -> String {
    bool_spec("on", tag)
}

/// Read options for read-your-writes: a default (lease) read on a follower may predate a write
/// that was just acknowledged, within the lease bound.
pub fn linearizable() -> Option<ReadOptions> {
    Some(ReadOptions { consistency: Consistency::Linearizable as i32, min_revision: 0 })
}

/// Checks a node's audit log against the hash chain, from genesis; returns how many entries
/// verified.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<u64, vexil_model::ChainError> {
    let mut v = vexil_model::ChainVerifier::new();
    for e in entries {
        let entry = vexil_model::AuditEntry::try_from(e).expect("a well-formed audit entry");
        v.push(&entry)?;
    }
    Ok(v.verified())
}
