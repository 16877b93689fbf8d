//! The simulated clients: workload clients issuing concurrent creates, compare-and-set
//! updates, deletes and reads at all three levels against random nodes; the operator client
//! changing membership; and the final client that reads every key on every member after the
//! heal and fetches every member's audit log.
//!
//! Every client talks to the real public gRPC API over simulated TCP and records each call in
//! the [`Recorder`] with invoke and return times in simulated time.

// Request messages are built with `..Default::default()` so that fields added to the public API
// later (with defaults meaning "as before") do not break the simulation.
#![allow(clippy::needless_update)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::{Code, Status};
use vexil_proto::v1 as pb;
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_raft_store::NodeId;

use crate::cluster::{CLIENT_TIMEOUT, api_addr};
use crate::history::{Level, OpKind, Recorder, Ret, Seen};
use crate::net::{self, ApiChannel};

/// The namespace every simulated flag lives in.
pub const NAMESPACE: &str = "sim";

/// State shared by the clients and the driver (all on one thread).
#[derive(Debug, Default)]
pub struct Control {
    /// Nodes the workload may send requests to (members that have been added).
    pub targets: RefCell<Vec<NodeId>>,
    /// Nodes removed from the cluster; the driver stops them for good.
    pub removed: RefCell<Vec<NodeId>>,
    /// What the operator client did, for reports.
    pub admin_log: RefCell<Vec<String>>,
    /// The final client's findings.
    pub finale: RefCell<Option<Finale>>,
    /// Errors a correct server never returns for the requests the clients send.
    pub unexpected: RefCell<Vec<String>>,
    /// What each watcher received, once it finished.
    pub watches: RefCell<Vec<crate::watchers::WatchLog>>,
    /// The admin token's secret every harness client sends, when the nodes check tokens.
    pub admin_secret: RefCell<Option<String>>,
    /// The change-control clients' calls ([`crate::changes`]).
    pub changes: RefCell<Vec<crate::changes::ChangeOp>>,
}

/// What the final client saw after the heal.
#[derive(Debug, Clone, Default)]
pub struct Finale {
    pub members: Vec<NodeId>,
    /// Every member's audit log up to `revision`, or why it could not be read.
    pub audit: BTreeMap<NodeId, Result<Vec<pb::AuditEntry>, String>>,
    pub revision: u64,
    /// (node, key) pairs no final read succeeded on: the node did not recover.
    pub unrecovered: Vec<(NodeId, String)>,
}

/// When and how the workload runs (simulated time since the start).
#[derive(Debug, Clone)]
pub struct WorkloadPlan {
    pub start: Duration,
    pub end: Duration,
    pub keys: usize,
}

pub fn key_name(i: usize) -> String {
    format!("flag-{i}")
}

/// A flag definition whose `description` carries the (unique) written value.
pub fn spec_json(value: &str) -> String {
    format!(
        r#"{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"on","description":"{value}"}}"#
    )
}

/// The written value a flag definition carries (its `description`; empty if none).
pub fn description(spec_json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(spec_json)
        .ok()
        .and_then(|v| v.get("description").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// Simulated time since the start.
pub(crate) fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

pub(crate) async fn sleep_until(t: Duration) {
    let now = sim_now();
    if t > now {
        tokio::time::sleep(t - now).await;
    }
}

/// Lazily made channels to the nodes' API ports, each call carrying one bearer token (or none).
pub(crate) struct Channels {
    secret: Option<String>,
    open: BTreeMap<NodeId, ApiChannel>,
}

impl Channels {
    /// Channels that send `secret` (`None`: no token, for nodes that check none).
    pub(crate) fn new(secret: Option<String>) -> Channels {
        Channels { secret, open: BTreeMap::new() }
    }

    /// Channels of the harness's own clients: they send the admin token when the nodes check
    /// tokens ([`Control::admin_secret`]).
    pub(crate) fn admin(control: &Control) -> Channels {
        Channels::new(control.admin_secret.borrow().clone())
    }

    pub(crate) fn get(&mut self, id: NodeId) -> ApiChannel {
        let secret = self.secret.as_deref();
        self.open
            .entry(id)
            .or_insert_with(|| {
                net::api_channel(&api_addr(id), Duration::from_millis(500), secret).expect("valid simulated address")
            })
            .clone()
    }
}

fn reason(status: &Status) -> String {
    vexil_server::error::error_info(status).map(|(r, _)| r).unwrap_or_default()
}

fn unknown(status: &Status) -> Ret {
    Ret::Unknown { reason: format!("{:?} {}", status.code(), reason(status)) }
}

/// Maps a write's reply to what the checkers know about it. Only errors decided by the state
/// machine are definite; anything else (unavailable, timeouts, internal) may have taken effect.
fn write_ret(
    control: &Control,
    result: Result<Result<pb::WriteFlagResponse, Status>, tokio::time::error::Elapsed>,
) -> Ret {
    match result {
        Err(_) => Ret::Unknown { reason: "client timeout".into() },
        Ok(Ok(resp)) => {
            Ret::Written { version: resp.version, revision: resp.header.map(|h| h.revision).unwrap_or_default() }
        }
        Ok(Err(status)) => match (status.code(), reason(&status).as_str()) {
            (Code::NotFound, _) => Ret::NotFound,
            (Code::AlreadyExists, _) => Ret::Exists,
            (Code::FailedPrecondition, "VERSION_MISMATCH") => {
                let current = vexil_server::error::error_info(&status)
                    .and_then(|(_, meta)| meta.get("current_version").and_then(|v| v.parse().ok()))
                    .unwrap_or(0);
                Ret::VersionMismatch { current }
            }
            (Code::InvalidArgument, _) | (Code::FailedPrecondition, _) => {
                control.unexpected.borrow_mut().push(format!("write refused: {status:?}"));
                unknown(&status)
            }
            _ => unknown(&status),
        },
    }
}

fn read_ret(result: Result<Result<pb::GetFlagResponse, Status>, tokio::time::error::Elapsed>) -> Ret {
    match result {
        Err(_) => Ret::Unknown { reason: "client timeout".into() },
        Ok(Ok(resp)) => {
            let header = resp.header.unwrap_or_default();
            let flag = resp.flag.map(|f| Seen {
                value: description(&f.spec_json),
                version: f.version,
                mod_revision: f.mod_revision,
            });
            Ret::Read { flag, revision: header.revision, served_by: header.node_id }
        }
        Ok(Err(status)) if status.code() == Code::NotFound => Ret::Read { flag: None, revision: 0, served_by: 0 },
        Ok(Err(status)) => unknown(&status),
    }
}

fn consistency(level: Level) -> pb::Consistency {
    match level {
        Level::Linearizable => pb::Consistency::Linearizable,
        Level::Lease => pb::Consistency::Lease,
        Level::Stale => pb::Consistency::Stale,
    }
}

/// Issues one read and records it.
async fn read(rec: &Recorder, client: &str, channels: &mut Channels, node: NodeId, key: &str, level: Level) -> Ret {
    let id = rec.invoke(client, node, key, "", OpKind::Read { level });
    let req = pb::GetFlagRequest {
        namespace: NAMESPACE.into(),
        key: key.into(),
        read: Some(pb::ReadOptions { consistency: consistency(level) as i32, min_revision: 0 }),
        ..Default::default()
    };
    let mut flags = FlagsClient::new(channels.get(node));
    let ret =
        read_ret(tokio::time::timeout(CLIENT_TIMEOUT, flags.get_flag(req)).await.map(|r| r.map(|r| r.into_inner())));
    rec.complete(id, ret.clone());
    ret
}

/// How many times a write whose outcome is unknown is sent again.
const WRITE_RETRIES: usize = 2;

/// Sends one write.
async fn send_write(
    flags: &mut FlagsClient<ApiChannel>,
    kind: &OpKind,
    key: &str,
    options: Option<pb::WriteOptions>,
) -> Result<Result<pb::WriteFlagResponse, Status>, tokio::time::error::Elapsed> {
    let (namespace, key) = (NAMESPACE.to_string(), key.to_string());
    let result = match kind {
        OpKind::Create { value } => {
            let req =
                pb::CreateFlagRequest { namespace, key, spec_json: spec_json(value), options, ..Default::default() };
            tokio::time::timeout(CLIENT_TIMEOUT, flags.create_flag(req)).await
        }
        OpKind::Update { value, expected } => {
            let req = pb::UpdateFlagRequest {
                namespace,
                key,
                spec_json: spec_json(value),
                expected_version: *expected,
                options,
                ..Default::default()
            };
            tokio::time::timeout(CLIENT_TIMEOUT, flags.update_flag(req)).await
        }
        OpKind::Delete { expected } => {
            let req =
                pb::DeleteFlagRequest { namespace, key, expected_version: *expected, options, ..Default::default() };
            tokio::time::timeout(CLIENT_TIMEOUT, flags.delete_flag(req)).await
        }
        OpKind::Read { .. } => unreachable!("reads are not writes"),
    };
    result.map(|r| r.map(|r| r.into_inner()))
}

/// One workload client: random ops against random nodes until `plan.end`.
pub async fn workload_client(
    name: String,
    seed: u64,
    plan: WorkloadPlan,
    rec: Recorder,
    control: Rc<Control>,
) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed);
    sleep_until(plan.start + Duration::from_millis(rng.random_range(0..50))).await;
    let mut channels = Channels::admin(&control);
    // The last version this client saw per key: what its compare-and-set expects.
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    while sim_now() < plan.end {
        let targets = control.targets.borrow().clone();
        let node = targets[rng.random_range(0..targets.len())];
        let key = key_name(rng.random_range(0..plan.keys));
        n += 1;
        let request_id = format!("{name}-{n}");
        let roll = rng.random_range(0..100);
        let options = Some(pb::WriteOptions { request_id: request_id.clone(), ..Default::default() });
        if roll < 50 {
            let level = match roll % 5 {
                0 | 1 => Level::Linearizable,
                2 | 3 => Level::Lease,
                _ => Level::Stale,
            };
            if let Ret::Read { flag, .. } = read(&rec, &name, &mut channels, node, &key, level).await {
                match flag {
                    Some(f) => versions.insert(key.clone(), f.version),
                    None => versions.remove(&key),
                };
            }
        } else {
            // Every written value is unique in the run: the request id.
            let value = request_id.clone();
            let kind = if roll < 65 {
                OpKind::Create { value: value.clone() }
            } else if roll < 90 {
                let expected = versions.get(&key).copied().or(Some(rng.random_range(1..3)));
                OpKind::Update { value: value.clone(), expected }
            } else {
                let expected = if rng.random_bool(0.5) { versions.get(&key).copied() } else { None };
                OpKind::Delete { expected }
            };
            let id = rec.invoke(&name, node, &key, &request_id, kind.clone());
            let mut target = node;
            let mut attempts = 1;
            let ret = loop {
                let mut flags = FlagsClient::new(channels.get(target));
                let ret = write_ret(&control, send_write(&mut flags, &kind, &key, options.clone()).await);
                if ret.is_definite() || attempts > WRITE_RETRIES || sim_now() >= plan.end {
                    break ret;
                }
                // The outcome is unknown: send the same request (same request id) again, to
                // another node, as a client library does. It must take effect at most once.
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
                let targets = control.targets.borrow().clone();
                target = targets[rng.random_range(0..targets.len())];
                rec.retried(id, target);
            };
            match &ret {
                Ret::Written { version: 0, .. } | Ret::NotFound => {
                    versions.remove(&key);
                }
                Ret::Written { version, .. } | Ret::VersionMismatch { current: version } => {
                    versions.insert(key.clone(), *version);
                }
                Ret::Exists => {}
                _ => {}
            }
            rec.complete(id, ret);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..25))).await;
    }
    Ok(())
}

/// A membership step of the operator client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminStep {
    AddLearner(NodeId),
    /// Replace the voter set (promotes learners in it).
    SetVoters(BTreeSet<NodeId>),
    Remove(NodeId),
}

/// Runs one admin call against the leader (following hints), retrying until `deadline`.
async fn admin_call(
    control: &Control,
    channels: &mut Channels,
    rng: &mut StdRng,
    step: &AdminStep,
    deadline: Duration,
) -> Result<NodeId, String> {
    let mut hint: Option<NodeId> = None;
    let mut last = String::new();
    while sim_now() < deadline {
        let node = match hint.take() {
            Some(n) => n,
            None => {
                let targets = control.targets.borrow().clone();
                targets[rng.random_range(0..targets.len())]
            }
        };
        let mut cluster = ClusterClient::new(channels.get(node));
        let result = match step {
            AdminStep::AddLearner(id) => {
                let member = pb::Member {
                    node_id: *id,
                    api_addr: api_addr(*id),
                    raft_addr: format!("n{id}:{}", crate::cluster::RAFT_PORT),
                };
                let req = pb::AddLearnerRequest { member: Some(member), blocking: false, ..Default::default() };
                tokio::time::timeout(CLIENT_TIMEOUT, cluster.add_learner(req)).await
            }
            AdminStep::SetVoters(voters) => {
                let req = pb::ChangeMembershipRequest {
                    voters: voters.iter().copied().collect(),
                    retain: false,
                    ..Default::default()
                };
                tokio::time::timeout(CLIENT_TIMEOUT, cluster.change_membership(req)).await
            }
            AdminStep::Remove(id) => {
                let req = pb::RemoveNodeRequest { node_id: *id, ..Default::default() };
                tokio::time::timeout(CLIENT_TIMEOUT, cluster.remove_node(req)).await
            }
        };
        match result {
            Ok(Ok(_)) => return Ok(node),
            Ok(Err(status)) => {
                last = format!("{:?} {}", status.code(), status.message());
                hint = vexil_server::error::error_info(&status)
                    .and_then(|(_, meta)| meta.get("leader_id").and_then(|v| v.parse().ok()))
                    .filter(|id| control.targets.borrow().contains(id));
            }
            Err(_) => last = "timeout".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// The operator: membership changes at planned times, while faults go on.
pub async fn admin_client(seed: u64, steps: Vec<(Duration, AdminStep)>, control: Rc<Control>) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut channels = Channels::admin(&control);
    for (at, step) in steps {
        sleep_until(at).await;
        let result = admin_call(&control, &mut channels, &mut rng, &step, at + Duration::from_secs(6)).await;
        let line = format!("t={}ms {step:?}: {result:?}", sim_now().as_millis());
        control.admin_log.borrow_mut().push(line);
        if result.is_ok() {
            match step {
                AdminStep::AddLearner(id) => control.targets.borrow_mut().push(id),
                AdminStep::Remove(id) => {
                    control.targets.borrow_mut().retain(|t| *t != id);
                    control.removed.borrow_mut().push(id);
                }
                AdminStep::SetVoters(_) => {}
            }
        }
    }
    Ok(())
}

/// After the heal: learn the membership, read every key linearizably on every member
/// (recorded in the history, so a lost acknowledged write shows up as a violation), then fetch
/// every member's audit log up to a common revision.
pub async fn final_client(start: Duration, keys: usize, rec: Recorder, control: Rc<Control>) -> turmoil::Result {
    sleep_until(start).await;
    let mut channels = Channels::admin(&control);
    let mut finale = Finale::default();
    // The membership, as the leader reports it.
    let deadline = start + Duration::from_secs(15);
    while sim_now() < deadline && finale.members.is_empty() {
        let targets = control.targets.borrow().clone();
        for node in targets {
            let mut cluster = ClusterClient::new(channels.get(node));
            let Ok(Ok(status)) = tokio::time::timeout(CLIENT_TIMEOUT, cluster.status(pb::StatusRequest {})).await
            else {
                continue;
            };
            let status = status.into_inner();
            if status.role == "leader" {
                finale.revision = status.applied_index;
                finale.members = status.voters.iter().chain(&status.learners).map(|m| m.node_id).collect();
                finale.members.sort_unstable();
                break;
            }
        }
        if finale.members.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if finale.members.is_empty() {
        finale.members = control.targets.borrow().clone();
        finale.unrecovered.push((0, "no leader after the heal".into()));
    }
    for &node in &finale.members {
        for k in 0..keys {
            let key = key_name(k);
            let mut ok = false;
            for _ in 0..10 {
                if let Ret::Read { revision, .. } =
                    read(&rec, "final", &mut channels, node, &key, Level::Linearizable).await
                {
                    finale.revision = finale.revision.max(revision);
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if !ok {
                finale.unrecovered.push((node, key));
            }
        }
    }
    // Every member must reach at least every acknowledged write (else it was lost).
    let acknowledged = rec
        .ops()
        .iter()
        .filter_map(|o| match o.ret {
            Some((_, Ret::Written { revision, .. })) => Some(revision),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let reviewed = control.changes.borrow().iter().filter_map(|c| c.acknowledged_revision()).max().unwrap_or(0);
    finale.revision = finale.revision.max(acknowledged).max(reviewed);
    for &node in &finale.members {
        let mut result = Err("not attempted".to_string());
        for _ in 0..5 {
            result = list_audit(&mut channels, node, finale.revision).await;
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        finale.audit.insert(node, result);
    }
    *control.finale.borrow_mut() = Some(finale);
    Ok(())
}

/// A node's whole audit log up to `revision` (served locally once it has applied it).
async fn list_audit(channels: &mut Channels, node: NodeId, revision: u64) -> Result<Vec<pb::AuditEntry>, String> {
    let mut audit = AuditClient::new(channels.get(node));
    let mut entries: Vec<pb::AuditEntry> = Vec::new();
    loop {
        let req = pb::ListAuditRequest {
            to_revision: revision.max(1),
            after_seq: entries.last().map(|e| e.seq).unwrap_or(0),
            limit: 500,
            read: Some(pb::ReadOptions { consistency: pb::Consistency::Stale as i32, min_revision: revision }),
            ..Default::default()
        };
        let page = match tokio::time::timeout(CLIENT_TIMEOUT, audit.list_audit(req)).await {
            Ok(Ok(resp)) => resp.into_inner().entries,
            Ok(Err(status)) => return Err(format!("{:?} {}", status.code(), status.message())),
            Err(_) => return Err("timeout".into()),
        };
        if page.is_empty() {
            return Ok(entries);
        }
        entries.extend(page);
    }
}
