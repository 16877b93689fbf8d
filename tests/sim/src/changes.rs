//! Change-control clients: a namespace ([`GOVERNED`]) whose policy holds every flag write for
//! two approvals; proposers whose writes open change requests, and reviewers who approve the
//! open requests — all at once, on random nodes, while the nemesis works.
//!
//! Every one of them is a principal of its own: the nodes of a change-control scenario check
//! bearer tokens ([`crate::cluster::NodeSetup::tokens`]); the setup client creates the policy
//! and an editor token per proposer and reviewer with the admin token. So the author rule is
//! the real one (an author may not approve its own request; proposers sometimes try), and
//! "two approvals" means two reviewers.
//!
//! Conflicts are the point: proposers write the same few flags, each write opening a request
//! based on the flag's current revision, and reviewers approve every open request, stale or not.
//! Once one request on a flag applies, the others on it are stale and must never apply
//! ([`crate::check::change_control`]). A call whose outcome is unknown (timeout, unavailable)
//! is sent again with the same request id to another node, as a client library does: the write
//! path deduplicates it.

// Request messages are built with `..Default::default()`, as in `workload`.
#![allow(clippy::needless_update)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tonic::{Code, Status};
use vexil_proto::v1 as pb;
use vexil_proto::v1::changes_client::ChangesClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::tokens_client::TokensClient;
use vexil_raft_store::NodeId;

use crate::cluster::CLIENT_TIMEOUT;
use crate::history::{Micros, now_micros};
use crate::workload::{Channels, Control, key_name, sim_now, sleep_until, spec_json};

/// The namespace under change control.
pub const GOVERNED: &str = "governed";

/// Its policy: every flag write needs two approvals, by editors other than its author. No stage
/// gates or dependency rules, so the only refusals are change control's own.
pub const POLICY: &str =
    r#"{"approval": {"covers": "namespace", "approvals": 2}, "lifecycle": {"active": []}, "dependencies": false}"#;

/// The change-control clients of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeControl {
    pub proposers: usize,
    pub reviewers: usize,
    /// Flags they all write (few, so requests conflict).
    pub keys: usize,
}

/// The write a proposer sends (the value is unique in the run: its request id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Create {
        value: String,
    },
    /// Without an expected version: only the request's base decides whether it may apply.
    Update {
        value: String,
    },
    Delete,
}

/// What a change-control client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeCall {
    /// A flag write in [`GOVERNED`]: it must open a request, not apply.
    Propose { key: String, write: Write },
    /// Approve request `change`.
    Approve { change: u64 },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRet {
    /// The write opened request `change`, at `revision`.
    Opened { change: u64, revision: u64 },
    /// The write applied without a request (never right under [`POLICY`]).
    Applied { revision: u64 },
    /// The approval was recorded at `revision`; `status` is the request's after it (`applied`
    /// when it completed the request).
    Reviewed { status: String, approvals: u32, revision: u64 },
    /// Refused by the state machine (`reason`, and `rule` for RULE_VIOLATED): nothing changed.
    Refused { reason: String, rule: String },
    /// Timeout, unavailable, lost connection: it may or may not have taken effect.
    Unknown { reason: String },
}

/// One call of a change-control client (retries with the same request id included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOp {
    pub client: String,
    /// The token it called with: the audit actor of what it did.
    pub principal: String,
    pub request_id: String,
    pub call: ChangeCall,
    /// The nodes it was sent to, in order (more than one: sent again with its request id).
    pub nodes: Vec<NodeId>,
    pub invoke: Micros,
    /// `None` while (or if forever) the client is still waiting.
    pub ret: Option<(Micros, ChangeRet)>,
}

impl ChangeOp {
    /// The revision the cluster acknowledged this call at, if it did.
    pub fn acknowledged_revision(&self) -> Option<u64> {
        match &self.ret {
            Some((_, ChangeRet::Opened { revision, .. } | ChangeRet::Applied { revision })) => Some(*revision),
            Some((_, ChangeRet::Reviewed { revision, .. })) => Some(*revision),
            _ => None,
        }
    }
}

impl fmt::Display for ChangeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} as {} {:?} on {:?} inv={}us",
            self.request_id, self.client, self.principal, self.call, self.nodes, self.invoke
        )?;
        match &self.ret {
            Some((t, r)) => write!(f, " ret={t}us {r:?}"),
            None => write!(f, " (open)"),
        }
    }
}

/// What the setup client hands the others.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once the policy is acknowledged: no write may be sent before it.
    pub policy_set: Cell<bool>,
    /// Per client: its token's name (the audit actor) and secret.
    pub tokens: RefCell<BTreeMap<String, (String, String)>>,
}

/// When the change-control clients run, and with what.
#[derive(Debug, Clone)]
pub struct ChangePlan {
    pub start: Duration,
    pub end: Duration,
    pub control: ChangeControl,
}

/// The clients of a plan: (client name, token name), proposers first.
pub fn principals(c: &ChangeControl) -> Vec<(String, String)> {
    let proposers = (1..=c.proposers).map(|i| (format!("p{i}"), format!("author-{i}")));
    proposers.chain((1..=c.reviewers).map(|i| (format!("r{i}"), format!("reviewer-{i}")))).collect()
}

/// Errors decided by the state machine: the call definitely changed nothing.
const DEFINITE: &[&str] = &[
    "FLAG_NOT_FOUND",
    "FLAG_EXISTS",
    "VERSION_MISMATCH",
    "REQUEST_ID_REUSED",
    "LIMIT_REACHED",
    "RULE_VIOLATED",
    "CHANGE_NOT_FOUND",
    "INVALID_FIELD",
];

fn classify(status: &Status) -> ChangeRet {
    let (reason, meta) = vexil_server::error::error_info(status).unwrap_or_default();
    if DEFINITE.contains(&reason.as_str()) {
        let rule = meta.get("rule").cloned().unwrap_or_default();
        return ChangeRet::Refused { reason, rule };
    }
    ChangeRet::Unknown { reason: format!("{:?} {reason}", status.code()) }
}

fn pick(rng: &mut StdRng, control: &Control) -> NodeId {
    let targets = control.targets.borrow().clone();
    targets[rng.random_range(0..targets.len())]
}

/// How many times a call whose outcome is unknown is sent again (same request id).
const RETRIES: usize = 3;

/// One client's recording of its calls.
struct Calls<'a> {
    client: &'a str,
    principal: &'a str,
    control: &'a Control,
}

impl Calls<'_> {
    fn invoke(&self, request_id: &str, call: ChangeCall, node: NodeId) -> usize {
        let mut log = self.control.changes.borrow_mut();
        log.push(ChangeOp {
            client: self.client.into(),
            principal: self.principal.into(),
            request_id: request_id.into(),
            call,
            nodes: vec![node],
            invoke: now_micros(),
            ret: None,
        });
        log.len() - 1
    }

    fn retried(&self, id: usize, node: NodeId) {
        self.control.changes.borrow_mut()[id].nodes.push(node);
    }

    fn complete(&self, id: usize, ret: ChangeRet) {
        self.control.changes.borrow_mut()[id].ret = Some((now_micros(), ret));
    }

    fn unexpected(&self, what: String) {
        self.control.unexpected.borrow_mut().push(format!("{} ({}): {what}", self.client, self.principal));
    }

    /// Sends `send` to `node`, and again with the same request id to other nodes while its
    /// outcome is unknown (at most [`RETRIES`] more times, and not after `end`).
    async fn call<F, Fut>(
        &self,
        rng: &mut StdRng,
        request_id: &str,
        call: ChangeCall,
        node: NodeId,
        end: Duration,
        mut send: F,
    ) -> ChangeRet
    where
        F: FnMut(NodeId) -> Fut,
        Fut: std::future::Future<Output = ChangeRet>,
    {
        let id = self.invoke(request_id, call, node);
        let mut target = node;
        let mut attempts = 0;
        let ret = loop {
            let ret = send(target).await;
            attempts += 1;
            if !matches!(ret, ChangeRet::Unknown { .. }) || attempts > RETRIES || sim_now() >= end {
                break ret;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            target = pick(rng, self.control);
            self.retried(id, target);
        };
        self.complete(id, ret.clone());
        ret
    }

    /// Approves `change` (with retries), checking the answer is one a correct cluster gives.
    async fn approve(
        &self,
        rng: &mut StdRng,
        channels: &mut Channels,
        request_id: &str,
        change: u64,
        end: Duration,
    ) -> ChangeRet {
        let node = pick(rng, self.control);
        let ret = self
            .call(rng, request_id, ChangeCall::Approve { change }, node, end, |target| {
                let mut client = ChangesClient::new(channels.get(target));
                let req = pb::ReviewChangeRequest {
                    namespace: GOVERNED.into(),
                    id: change,
                    verdict: pb::Verdict::Approve as i32,
                    options: Some(pb::WriteOptions { request_id: request_id.into(), ..Default::default() }),
                    ..Default::default()
                };
                async move {
                    match tokio::time::timeout(CLIENT_TIMEOUT, client.review_change(req)).await {
                        Err(_) => ChangeRet::Unknown { reason: "client timeout".into() },
                        Ok(Ok(resp)) => {
                            let resp = resp.into_inner();
                            ChangeRet::Reviewed {
                                status: resp.status,
                                approvals: resp.approvals,
                                revision: resp.header.map(|h| h.revision).unwrap_or_default(),
                            }
                        }
                        Ok(Err(status)) => classify(&status),
                    }
                }
            })
            .await;
        // A correct cluster refuses an approval only by change control's rules: the request is
        // stale, closed, already approved by this reviewer, or this is its author.
        const RULES: &[&str] = &["change.stale", "change.closed", "approval.duplicate", "approval.author"];
        if let ChangeRet::Refused { reason, rule } = &ret
            && !(reason == "RULE_VIOLATED" && RULES.contains(&rule.as_str()))
        {
            self.unexpected(format!("approving change {change} ({request_id}) was refused: {reason} {rule}"));
        }
        ret
    }
}

async fn wait_for_token(name: &str, shared: &Shared, end: Duration) -> Option<(String, String)> {
    loop {
        if shared.policy_set.get()
            && let Some(token) = shared.tokens.borrow().get(name)
        {
            return Some(token.clone());
        }
        if sim_now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets the policy of [`GOVERNED`], then creates an editor token of that namespace for each
/// proposer and reviewer, with the admin token; retries each until it is acknowledged.
pub async fn setup_client(seed: u64, plan: ChangePlan, shared: Rc<Shared>, control: Rc<Control>) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed);
    sleep_until(plan.start).await;
    let mut channels = Channels::admin(&control);
    let retry = Duration::from_millis(100);
    while sim_now() < plan.end && !shared.policy_set.get() {
        let mut changes = ChangesClient::new(channels.get(pick(&mut rng, &control)));
        let req = pb::SetNamespacePolicyRequest {
            namespace: GOVERNED.into(),
            policy_json: POLICY.into(),
            // The same request id on every attempt: a retry of one that took effect is answered
            // from the first (setting the same policy again would change nothing anyway).
            options: Some(pb::WriteOptions { request_id: "setup-policy".into(), ..Default::default() }),
            ..Default::default()
        };
        match tokio::time::timeout(CLIENT_TIMEOUT, changes.set_namespace_policy(req)).await {
            Ok(Ok(_)) => shared.policy_set.set(true),
            Ok(Err(status)) if status.code() == Code::InvalidArgument => {
                control.unexpected.borrow_mut().push(format!("the policy was refused: {status:?}"));
                return Ok(());
            }
            // Unavailable, or the admin token is not created yet (UNAUTHENTICATED).
            _ => tokio::time::sleep(retry).await,
        }
    }
    for (client, token) in principals(&plan.control) {
        // A token's secret is made by the node that takes the call, so a retry cannot be
        // deduplicated into the first one's secret: an attempt whose outcome is unknown (or
        // whose name turns out taken) is followed by one under a new name.
        let mut attempt = 1;
        while sim_now() < plan.end {
            let name = if attempt == 1 { token.clone() } else { format!("{token}.{attempt}") };
            let mut tokens = TokensClient::new(channels.get(pick(&mut rng, &control)));
            let req = pb::CreateTokenRequest {
                name: name.clone(),
                role: pb::Role::Editor as i32,
                namespaces: vec![GOVERNED.into()],
                expires_ms: 0,
                ..Default::default()
            };
            match tokio::time::timeout(CLIENT_TIMEOUT, tokens.create_token(req)).await {
                Ok(Ok(resp)) => {
                    shared.tokens.borrow_mut().insert(client.clone(), (name, resp.into_inner().secret));
                    break;
                }
                Ok(Err(status)) if status.code() == Code::InvalidArgument => {
                    control.unexpected.borrow_mut().push(format!("token {name} was refused: {status:?}"));
                    return Ok(());
                }
                Ok(Err(status)) if status.code() == Code::Unavailable => {}
                _ => attempt += 1,
            }
            tokio::time::sleep(retry).await;
        }
    }
    Ok(())
}

/// A proposer: reads a flag of [`GOVERNED`] and writes it (a create when it is absent, else
/// mostly an update, sometimes a delete), which opens a request; sometimes tries to approve its
/// own request, which must be refused.
pub async fn proposer(
    name: String,
    seed: u64,
    plan: ChangePlan,
    shared: Rc<Shared>,
    control: Rc<Control>,
) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed);
    sleep_until(plan.start).await;
    let Some((principal, secret)) = wait_for_token(&name, &shared, plan.end).await else { return Ok(()) };
    let mut channels = Channels::new(Some(secret));
    let calls = Calls { client: &name, principal: &principal, control: &control };
    let mut n = 0u64;
    while sim_now() < plan.end {
        let key = key_name(rng.random_range(0..plan.control.keys));
        let mut flags = FlagsClient::new(channels.get(pick(&mut rng, &control)));
        let read = pb::GetFlagRequest {
            namespace: GOVERNED.into(),
            key: key.clone(),
            read: Some(pb::ReadOptions { consistency: pb::Consistency::Lease as i32, min_revision: 0 }),
            ..Default::default()
        };
        let exists = match tokio::time::timeout(CLIENT_TIMEOUT, flags.get_flag(read)).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(status)) if status.code() == Code::NotFound => Some(false),
            _ => None,
        };
        let Some(exists) = exists else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
            continue;
        };
        n += 1;
        let request_id = format!("{name}-{n}");
        let write = match (exists, rng.random_range(0..100)) {
            (false, _) => Write::Create { value: request_id.clone() },
            (true, 0..10) => Write::Delete,
            (true, _) => Write::Update { value: request_id.clone() },
        };
        let call = ChangeCall::Propose { key: key.clone(), write: write.clone() };
        let node = pick(&mut rng, &control);
        let ret = calls
            .call(&mut rng, &request_id, call, node, plan.end, |target| {
                let mut flags = FlagsClient::new(channels.get(target));
                let options = Some(pb::WriteOptions { request_id: request_id.clone(), ..Default::default() });
                let (namespace, key) = (GOVERNED.to_string(), key.clone());
                let write = write.clone();
                async move {
                    let sent = match write {
                        Write::Create { value } => {
                            let spec_json = spec_json(&value);
                            let req =
                                pb::CreateFlagRequest { namespace, key, spec_json, options, ..Default::default() };
                            tokio::time::timeout(CLIENT_TIMEOUT, flags.create_flag(req)).await
                        }
                        Write::Update { value } => {
                            let spec_json = spec_json(&value);
                            let req =
                                pb::UpdateFlagRequest { namespace, key, spec_json, options, ..Default::default() };
                            tokio::time::timeout(CLIENT_TIMEOUT, flags.update_flag(req)).await
                        }
                        Write::Delete => {
                            let req = pb::DeleteFlagRequest { namespace, key, options, ..Default::default() };
                            tokio::time::timeout(CLIENT_TIMEOUT, flags.delete_flag(req)).await
                        }
                    };
                    match sent {
                        Err(_) => ChangeRet::Unknown { reason: "client timeout".into() },
                        Ok(Ok(resp)) => {
                            let resp = resp.into_inner();
                            let revision = resp.header.map(|h| h.revision).unwrap_or_default();
                            match resp.change_id {
                                0 => ChangeRet::Applied { revision },
                                change => ChangeRet::Opened { change, revision },
                            }
                        }
                        Ok(Err(status)) => classify(&status),
                    }
                }
            })
            .await;
        match &ret {
            // The flag was created or deleted since the read: the write is refused as it would be
            // without a policy. Or the namespace holds as many open requests as it may.
            ChangeRet::Refused { reason, .. }
                if matches!(reason.as_str(), "FLAG_NOT_FOUND" | "FLAG_EXISTS" | "LIMIT_REACHED") => {}
            ChangeRet::Refused { reason, rule } => {
                calls.unexpected(format!("proposal {request_id} was refused: {reason} {rule}"))
            }
            ChangeRet::Opened { change, .. } if rng.random_bool(0.2) => {
                n += 1;
                let own = format!("{name}-{n}");
                let _ = calls.approve(&mut rng, &mut channels, &own, *change, plan.end).await;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    }
    Ok(())
}

/// A reviewer: lists the open requests on a random node and approves up to two it has not
/// reviewed yet (stale ones included: refusing them is the cluster's job); now and then
/// approves one it already approved, under a new request id.
pub async fn reviewer(
    name: String,
    seed: u64,
    plan: ChangePlan,
    shared: Rc<Shared>,
    control: Rc<Control>,
) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed);
    sleep_until(plan.start).await;
    let Some((principal, secret)) = wait_for_token(&name, &shared, plan.end).await else { return Ok(()) };
    let mut channels = Channels::new(Some(secret));
    let calls = Calls { client: &name, principal: &principal, control: &control };
    // Requests this reviewer has a definite answer for.
    let mut reviewed: BTreeSet<u64> = BTreeSet::new();
    let mut n = 0u64;
    while sim_now() < plan.end {
        let mut changes = ChangesClient::new(channels.get(pick(&mut rng, &control)));
        let list = pb::ListChangesRequest {
            namespace: GOVERNED.into(),
            all: false,
            read: Some(pb::ReadOptions { consistency: pb::Consistency::Lease as i32, min_revision: 0 }),
            ..Default::default()
        };
        let open: Vec<u64> = match tokio::time::timeout(CLIENT_TIMEOUT, changes.list_changes(list)).await {
            Ok(Ok(resp)) => resp.into_inner().changes.iter().map(|c| c.id).collect(),
            _ => vec![],
        };
        let mut todo: Vec<u64> = open.iter().copied().filter(|id| !reviewed.contains(id)).collect();
        todo.shuffle(&mut rng);
        todo.truncate(2);
        if rng.random_bool(0.1)
            && let Some(again) = reviewed.iter().nth(rng.random_range(0..reviewed.len().max(1)))
        {
            todo.push(*again);
        }
        for change in todo {
            n += 1;
            let request_id = format!("{name}-{n}");
            let ret = calls.approve(&mut rng, &mut channels, &request_id, change, plan.end).await;
            if !matches!(ret, ChangeRet::Unknown { .. }) {
                reviewed.insert(change);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
    Ok(())
}
