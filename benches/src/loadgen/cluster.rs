//! The load generator's clusters: Vexil nodes or etcd members on loopback, which a scenario can
//! kill (-9) and restart by index (0-based; Vexil node `i + 1`).
//!
//! The processes are `vexil-testkit`'s: a Vexil cluster is a [`vexil_testkit::Cluster`] with the
//! benchmark's timings ([`vexil`]), an etcd member a [`vexil_testkit::Process`] running the
//! command line built here. So this file only says how to run etcd. Every member has its own
//! directory under the work directory, holding `node.log`, `pid` (for the comparison script's
//! cleanup trap) and `data/`. The load generator starts the clusters itself (rather than the
//! script) because the failover scenario must kill the leader it finds and start it again
//! between repetitions. Dropping a [`Cluster`] kills every member it started; the caller owns
//! (and removes) the work directory.
//!
//! With [`ClusterSpec::secure`] both systems serve TLS on every port, demand a client
//! certificate of their cluster CA from clients and from peers, and check a token on every
//! call: Vexil through `ClusterBuilder::secure()` plus `--tls-client-cert-auth true`; etcd with
//! certificates from [`EtcdPki`], `https://` URLs, `--client-cert-auth` and
//! `--peer-client-cert-auth` (its auth is enabled once the cluster runs, by the etcd backend's
//! `prepare`). [`Cluster::security`] is what the load generator's clients then need.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vexil_testkit::{ClusterBuilder, Process, free_port};

use super::security::{EtcdPki, KeyPairFiles, LOOPBACK_SANS, Login, Secure};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Vexil,
    Etcd,
}

/// How to start a cluster. Both systems get the same heartbeat and election timeout; both
/// fsync their logs before acknowledging (etcd always; Vexil syncs its WAL per append batch).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub system: System,
    pub bin: PathBuf,
    pub nodes: usize,
    pub heartbeat_ms: u64,
    /// etcd takes one election timeout and randomises it in [t, 2t); Vexil takes the range.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Vexil's read lease (below the minimum election timeout).
    pub read_lease_ms: u64,
    /// TLS with client certificates on every port, and tokens (see the module comment).
    pub secure: bool,
}

/// The Vexil nodes of `spec` under `root`: the benchmark's timings, the server's default write
/// and Raft RPC timeouts, `--log warn`.
/// Secure: the harness's certificates and admin token, and API clients must present a
/// certificate too (as etcd's `--client-cert-auth` demands).
pub fn vexil(spec: &ClusterSpec, root: &Path) -> ClusterBuilder {
    let builder = vexil_testkit::Cluster::builder(spec.nodes as u64)
        .bin(&spec.bin)
        .dir(root)
        .heartbeat_ms(spec.heartbeat_ms)
        .election_timeout_ms(spec.election_min_ms, spec.election_max_ms)
        .read_lease_ms(spec.read_lease_ms)
        .write_timeout_ms(None)
        .rpc_timeout_ms(None)
        .log("warn");
    // No per-principal rate limit: every load client shares one token, and etcd has no such
    // limit to compare with.
    if spec.secure {
        builder.secure().flags(&["--tls-client-cert-auth", "true", "--auth-principal-requests-per-second", "0"])
    } else {
        builder
    }
}

/// What the load generator needs to call a secure Vexil cluster: the cluster CA, a client
/// certificate from it (written beside the CA), the admin token.
fn vexil_client(cluster: &vexil_testkit::Cluster) -> anyhow::Result<Secure> {
    let credentials = cluster.credentials();
    let ca_file = credentials.ca_file();
    let dir = ca_file.parent().ok_or_else(|| anyhow::anyhow!("the CA file {} has no directory", ca_file.display()))?;
    let sans: Vec<String> = LOOPBACK_SANS.iter().map(|s| s.to_string()).collect();
    let (cert_pem, key_pem) = credentials.issue("loadgen", &sans);
    Ok(Secure {
        ca_pem: credentials.ca_pem().to_string(),
        ca_file: ca_file.clone(),
        client: KeyPairFiles::write(dir, "loadgen", cert_pem, key_pem)?,
        login: Login::Bearer(credentials.admin_token().to_string()),
    })
}

struct EtcdMember {
    client_port: u16,
    process: Process,
}

enum Members {
    // Boxed: a cluster is a few hundred bytes, an etcd member list a pointer.
    Vexil(Box<vexil_testkit::Cluster>),
    Etcd(Vec<EtcdMember>),
}

pub struct Cluster {
    members: Members,
    security: Option<Secure>,
}

impl Cluster {
    /// Starts `spec.nodes` members with data under `root` (which must be empty or absent).
    pub fn start(spec: ClusterSpec, root: &Path) -> anyhow::Result<Cluster> {
        let (members, security) = match spec.system {
            System::Vexil => {
                let cluster = vexil(&spec, root).spawn().with_context(|| format!("starting {}", spec.bin.display()))?;
                let security = if spec.secure { Some(vexil_client(&cluster)?) } else { None };
                (Members::Vexil(Box::new(cluster)), security)
            }
            System::Etcd => {
                let pki = if spec.secure { Some(EtcdPki::create(&root.join("pki"))?) } else { None };
                let members = start_etcd(&spec, root, pki.as_ref())?;
                let security = pki.as_ref().map(EtcdPki::client).transpose()?;
                (Members::Etcd(members), security)
            }
        };
        Ok(Cluster { members, security })
    }

    /// What a client needs to reach a secure cluster (None: plaintext, no tokens).
    pub fn security(&self) -> Option<&Secure> {
        self.security.as_ref()
    }

    pub fn len(&self) -> usize {
        match &self.members {
            Members::Vexil(c) => c.ids().len(),
            Members::Etcd(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn endpoint(&self, i: usize) -> String {
        match &self.members {
            Members::Vexil(c) => c.api_addr(i as u64 + 1),
            Members::Etcd(m) => format!("{}://127.0.0.1:{}", scheme(self.security.is_some()), m[i].client_port),
        }
    }

    fn process(&self, i: usize) -> &Process {
        match &self.members {
            Members::Vexil(c) => c.process(i as u64 + 1),
            Members::Etcd(m) => &m[i].process,
        }
    }

    fn process_mut(&mut self, i: usize) -> &mut Process {
        match &mut self.members {
            Members::Vexil(c) => c.process_mut(i as u64 + 1),
            Members::Etcd(m) => &mut m[i].process,
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.process(i).pid()
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        Ok(self.process_mut(i).kill()?)
    }

    /// Starts a killed member again with its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        Ok(self.process_mut(i).start()?)
    }

    /// The last lines of a member's log, for error messages.
    pub fn log_tail(&self, i: usize) -> String {
        self.process(i).log_tail()
    }
}

fn scheme(secure: bool) -> &'static str {
    if secure { "https" } else { "http" }
}

/// Starts `spec.nodes` etcd members named `m1`, `m2`, ... under `root/etcd-<n>`; with `pki`,
/// TLS with client certificates on the client and the peer URLs.
fn start_etcd(spec: &ClusterSpec, root: &Path, pki: Option<&EtcdPki>) -> anyhow::Result<Vec<EtcdMember>> {
    let scheme = scheme(pki.is_some());
    let ports: Vec<(u16, u16)> = (0..spec.nodes).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(j, (_, peer))| format!("m{}={scheme}://127.0.0.1:{peer}", j + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
        let name = format!("m{}", i + 1);
        let dir = root.join(format!("etcd-{}", i + 1));
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("{scheme}://127.0.0.1:{peer_port}");
        let mut process = Process::new(format!("etcd member {}", i + 1), &dir, &spec.bin);
        process
            .args(["--name".to_string(), name.clone()])
            .args(["--data-dir".into(), dir.join("data").into_os_string()])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vexil-bench"])
            .args(["--heartbeat-interval".into(), spec.heartbeat_ms.to_string()])
            .args(["--election-timeout".into(), spec.election_min_ms.to_string()])
            .args(["--logger", "zap", "--log-level", "warn"]);
        if let Some(pki) = pki {
            // One certificate per member for both ports: vexil-pki gives it serverAuth and
            // clientAuth, and SANs for 127.0.0.1 and localhost.
            let cert = pki.issue(&name)?;
            let ca = pki.ca_file();
            process
                .args(["--cert-file".into(), cert.cert_file.clone().into_os_string()])
                .args(["--key-file".into(), cert.key_file.clone().into_os_string()])
                .args(["--trusted-ca-file".into(), ca.clone().into_os_string()])
                .args(["--client-cert-auth"])
                .args(["--peer-cert-file".into(), cert.cert_file.into_os_string()])
                .args(["--peer-key-file".into(), cert.key_file.into_os_string()])
                .args(["--peer-trusted-ca-file".into(), ca.into_os_string()])
                .args(["--peer-client-cert-auth"]);
        }
        process.start()?;
        members.push(EtcdMember { client_port, process });
    }
    Ok(members)
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Vexil => "vexil",
            System::Etcd => "etcd",
        }
    }
}
