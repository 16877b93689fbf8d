//! `vexilctl cluster`: status of every member, initialisation, membership changes and
//! snapshots.
//!
//! Membership changes go to the leader (followed through `NOT_LEADER` answers). Before a
//! change that removes voting power (`demote`, `remove`) the tool asks every remaining voter
//! for its status and refuses, unless `--force`, when fewer than a majority of the voters left
//! would be reachable and following a leader: such a cluster could not commit anything,
//! including the change that would repair it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use vexil_proto::v1 as pb;
use vexil_proto::v1::cluster_client::ClusterClient;

use crate::conn::{Conn, LONG_CALL_TIMEOUT};
use crate::errors::{self, Subject};
use crate::output;
use crate::{Ctx, Failure, Output};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every member's id, address, role, term, applied index, lag behind the leader, and the
    /// leader it follows.
    Status,
    /// Initialise a new cluster with these voters (only once; a node with state refuses).
    Init(InitArgs),
    /// Add a non-voting member and show its progress until it has caught up with the leader.
    AddLearner(AddLearnerArgs),
    /// Turn learners into voters (joint consensus).
    Promote(PromoteArgs),
    /// Turn voters into learners (joint consensus); refuses to leave no quorum unless --force.
    Demote(DemoteArgs),
    /// Remove a member entirely; refuses to leave no quorum or to remove the last voter.
    Remove(RemoveArgs),
    /// Build a snapshot on one node now (compacts its log).
    Snapshot(SnapshotArgs),
    /// The NOSPACE alarms: list them, or clear them once room was made.
    #[command(subcommand)]
    Alarm(AlarmCommand),
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// The standing alarms: which node ran short of space, and how.
    List,
    /// Clear every alarm (after deleting flags, raising storage.quota_bytes or the disk): writes
    /// that grow the cluster are accepted again. A node still short raises its alarm again.
    Clear {
        /// Why: recorded in the audit log with who asked.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A voter as `ID=API_ADDR/RAFT_ADDR`, e.g. `1=10.0.0.1:7001/10.0.0.1:7101`; repeat for each.
    #[arg(long = "member", value_name = "ID=API/RAFT", required = true)]
    pub members: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddLearnerArgs {
    /// The new member's node id (unique, never reused).
    pub id: u64,
    /// Its public API address (`host:port`).
    #[arg(long)]
    pub api_addr: String,
    /// Its Raft address (`host:port`).
    #[arg(long)]
    pub raft_addr: String,
    /// Caught up means within this many log entries of the leader.
    #[arg(long, default_value_t = 100, value_name = "ENTRIES")]
    pub catch_up_within: u64,
    /// Give up waiting (the learner stays and keeps catching up) after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout_secs: u64,
    /// Return as soon as the learner is added, without waiting for it to catch up.
    #[arg(long)]
    pub no_wait: bool,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Learner ids to make voters.
    #[arg(required = true)]
    pub ids: Vec<u64>,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct DemoteArgs {
    /// Voter ids to make learners.
    #[arg(required = true)]
    pub ids: Vec<u64>,
    /// Do it even if the remaining voters could not form a quorum.
    #[arg(long)]
    pub force: bool,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The member to remove.
    pub id: u64,
    /// Do it even if the remaining voters could not form a quorum.
    #[arg(long)]
    pub force: bool,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The node to snapshot (default: the first endpoint that answers).
    #[arg(long, value_name = "ID")]
    pub node: Option<u64>,
}

pub async fn run(cmd: &ClusterCommand, ctx: &Ctx) -> Result<String, Failure> {
    match cmd {
        ClusterCommand::Status => status(ctx).await,
        ClusterCommand::Init(a) => init(a, ctx).await,
        ClusterCommand::AddLearner(a) => add_learner(a, ctx).await,
        ClusterCommand::Promote(a) => promote(a, ctx).await,
        ClusterCommand::Demote(a) => demote(a, ctx).await,
        ClusterCommand::Remove(a) => remove(a, ctx).await,
        ClusterCommand::Snapshot(a) => snapshot(a, ctx).await,
        ClusterCommand::Alarm(a) => alarm(a, ctx).await,
    }
}

fn alarm_json(a: &pb::Alarm) -> Value {
    json!({"node_id": a.node_id, "alarm": a.alarm, "reason": a.reason, "revision": a.revision, "time_ms": a.time_ms})
}

fn alarm_lines(alarms: &[pb::Alarm]) -> String {
    alarms
        .iter()
        .map(|a| format!("node {}: {} since revision {}: {}", a.node_id, a.alarm, a.revision, a.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn alarm(cmd: &AlarmCommand, ctx: &Ctx) -> Result<String, Failure> {
    let admin = &ctx.conn.admin;
    match cmd {
        AlarmCommand::List => {
            let r = admin.alarms().await.map_err(|e| errors::from_client(e, Subject::Cluster))?;
            Ok(match ctx.output {
                Output::Json => output::json(&json!({
                    "revision": r.header.revision,
                    "alarms": r.value.iter().map(alarm_json).collect::<Vec<_>>(),
                })),
                Output::Table if r.value.is_empty() => "no alarms".into(),
                Output::Table => alarm_lines(&r.value),
            })
        }
        AlarmCommand::Clear { reason } => {
            let cleared = admin
                .clear_alarms(vexil_client::WriteOpts::reason(reason))
                .await
                .map_err(|e| errors::from_client(e, Subject::Cluster))?;
            Ok(match ctx.output {
                Output::Json => output::json(&json!({"cleared": cleared.iter().map(alarm_json).collect::<Vec<_>>()})),
                Output::Table if cleared.is_empty() => "no alarms were standing".into(),
                Output::Table => format!(
                    "cleared {} alarm(s); writes are accepted again (a node still short of space raises its alarm again within a check interval):\n{}",
                    cleared.len(),
                    alarm_lines(&cleared)
                ),
            })
        }
    }
}

/// One member as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub id: u64,
    pub api_addr: String,
    pub raft_addr: String,
    pub voter: bool,
    /// The member's own status, or why it could not be had.
    pub status: Result<pb::StatusResponse, String>,
    /// Entries behind the leader's last log index (from the leader's replication state).
    pub lag: Option<u64>,
}

fn members_of(s: &pb::StatusResponse) -> Vec<(pb::Member, bool)> {
    let mut all: Vec<(pb::Member, bool)> = s.voters.iter().map(|m| (m.clone(), true)).collect();
    all.extend(s.learners.iter().map(|m| (m.clone(), false)));
    all.sort_by_key(|(m, _)| m.node_id);
    all
}

/// Asks every member for its own status, concurrently.
async fn probe(conn: &Conn, members: &[(pb::Member, bool)]) -> BTreeMap<u64, Result<pb::StatusResponse, String>> {
    let mut set = tokio::task::JoinSet::new();
    for (m, _) in members {
        let (id, addr, conn) = (m.node_id, m.api_addr.clone(), conn.clone());
        set.spawn(async move { (id, conn.status_of(&addr).await.map_err(|e| e.message().to_string())) });
    }
    let mut out = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((id, s)) = r {
            out.insert(id, s);
        }
    }
    out
}

/// Every member's row, from the membership the first answering endpoint knows.
pub async fn gather(conn: &Conn) -> Result<Vec<MemberRow>, Failure> {
    let (url, first) = conn.any_status().await?;
    let members = members_of(&first);
    if members.is_empty() {
        return Err(Failure::Failed(format!(
            "node {} at {url} is not part of an initialised cluster; initialise one with `vexilctl cluster init --member ID=API/RAFT ...`",
            first.node_id
        )));
    }
    let statuses = probe(conn, &members).await;
    let leader_lag = statuses.values().filter_map(|s| s.as_ref().ok()).find(|s| s.role == "leader").map(|s| &s.lag);
    Ok(members
        .into_iter()
        .map(|(m, voter)| {
            let status = statuses.get(&m.node_id).cloned().unwrap_or_else(|| Err("not asked".into()));
            let is_leader = status.as_ref().is_ok_and(|s| s.role == "leader");
            let lag = if is_leader { Some(0) } else { leader_lag.and_then(|l| l.get(&m.node_id).copied()) };
            MemberRow { id: m.node_id, api_addr: m.api_addr, raft_addr: m.raft_addr, voter, status, lag }
        })
        .collect())
}

/// The human `cluster status` table.
pub fn render_status(rows: &[MemberRow]) -> String {
    let dash = || "-".to_string();
    let body = rows.iter().map(|r| {
        let kind = if r.voter { "voter" } else { "learner" };
        match &r.status {
            Ok(s) => vec![
                r.id.to_string(),
                r.api_addr.clone(),
                kind.to_string(),
                s.role.clone(),
                s.term.to_string(),
                s.applied_index.to_string(),
                r.lag.map_or_else(dash, |l| l.to_string()),
                if s.leader_id == 0 { dash() } else { s.leader_id.to_string() },
            ],
            Err(_) => vec![
                r.id.to_string(),
                r.api_addr.clone(),
                kind.to_string(),
                "unreachable".to_string(),
                dash(),
                dash(),
                r.lag.map_or_else(dash, |l| l.to_string()),
                dash(),
            ],
        }
    });
    let mut text = output::table(&["ID", "ADDRESS", "MEMBER", "ROLE", "TERM", "APPLIED", "LAG", "LEADER"], body);
    let leader = rows.iter().find(|r| r.status.as_ref().is_ok_and(|s| s.role == "leader"));
    match leader {
        Some(r) => {
            let s = r.status.as_ref().ok();
            let (seq, head) = s.map_or((0, String::new()), |s| (s.audit_seq, s.audit_head_hash.clone()));
            text.push_str(&format!(
                "\n\nleader: node {} at {}; cluster {}; audit log: {} entries, head {}",
                r.id,
                r.api_addr,
                s.map_or("", |s| s.cluster_id.as_str()),
                seq,
                output::short(&head, 16)
            ));
        }
        None => text.push_str("\n\nno leader: a majority of voters must run and reach each other"),
    }
    let mut clusters: Vec<&str> =
        rows.iter().filter_map(|r| r.status.as_ref().ok()).map(|s| s.cluster_id.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    if clusters.len() > 1 {
        text.push_str(&format!(
            "\nmembers disagree on the cluster id ({}): a node of another cluster answers at a member's address",
            clusters.join(", ")
        ));
    }
    let down: Vec<String> = rows.iter().filter(|r| r.status.is_err()).map(|r| r.id.to_string()).collect();
    if !down.is_empty() {
        text.push_str(&format!(
            "\nunreachable: node {} (check that it runs and its address is right)",
            down.join(", ")
        ));
    }
    text
}

fn status_json(rows: &[MemberRow]) -> Value {
    let leader = rows.iter().find(|r| r.status.as_ref().is_ok_and(|s| s.role == "leader")).map(|r| r.id);
    let members: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "id": r.id, "api_addr": r.api_addr, "raft_addr": r.raft_addr, "voter": r.voter, "lag": r.lag,
                "reachable": r.status.is_ok(),
            });
            match &r.status {
                Ok(s) => {
                    v["role"] = json!(s.role);
                    v["term"] = json!(s.term);
                    v["leader_id"] = json!(s.leader_id);
                    v["last_log_index"] = json!(s.last_log_index);
                    v["applied_index"] = json!(s.applied_index);
                    v["audit_seq"] = json!(s.audit_seq);
                    v["audit_head_hash"] = json!(s.audit_head_hash);
                    v["cluster_id"] = json!(s.cluster_id);
                }
                Err(e) => {
                    v["role"] = json!("unreachable");
                    v["error"] = json!(e);
                }
            }
            v
        })
        .collect();
    json!({"leader_id": leader, "members": members})
}

async fn status(ctx: &Ctx) -> Result<String, Failure> {
    let rows = gather(&ctx.conn).await?;
    Ok(match ctx.output {
        Output::Json => output::json(&status_json(&rows)),
        Output::Table => render_status(&rows),
    })
}

/// Parses `ID=API_ADDR/RAFT_ADDR`.
pub fn parse_member(s: &str) -> Result<pb::Member, Failure> {
    let bad = || Failure::Usage(format!("--member {s:?} must look like 1=10.0.0.1:7001/10.0.0.1:7101 (ID=API/RAFT)"));
    let (id, addrs) = s.split_once('=').ok_or_else(bad)?;
    let (api, raft) = addrs.split_once('/').ok_or_else(bad)?;
    let node_id: u64 = id.trim().parse().map_err(|_| bad())?;
    if node_id == 0 || api.trim().is_empty() || raft.trim().is_empty() {
        return Err(bad());
    }
    Ok(pb::Member { node_id, api_addr: api.trim().into(), raft_addr: raft.trim().into() })
}

async fn init(a: &InitArgs, ctx: &Ctx) -> Result<String, Failure> {
    let members = a.members.iter().map(|m| parse_member(m)).collect::<Result<Vec<_>, _>>()?;
    let ids: BTreeSet<u64> = members.iter().map(|m| m.node_id).collect();
    if ids.len() != members.len() {
        return Err(Failure::Usage("a node id is listed twice in --member".into()));
    }
    // Init goes to one of the members; the endpoints (or else the members' own addresses)
    // say where to find one.
    let mut candidates: Vec<String> = ctx.conn.endpoints.clone();
    for m in &members {
        candidates.push(ctx.conn.node_url(&m.api_addr)?);
    }
    let mut target = None;
    for url in &candidates {
        if let Ok(s) = ctx.conn.status_of(url).await
            && ids.contains(&s.node_id)
        {
            target = Some(url.clone());
            break;
        }
    }
    let Some(url) = target else {
        return Err(Failure::Failed(
            "no reachable endpoint is one of the listed members; start the nodes and point --endpoints at one of them"
                .into(),
        ));
    };
    let req = pb::InitRequest { members: members.clone() };
    let resp = ClusterClient::new(ctx.conn.channel(&url, LONG_CALL_TIMEOUT)?)
        .init(req)
        .await
        .map_err(|s| errors::from_status(&s, Subject::Cluster))?
        .into_inner();
    let leader = ctx.conn.leader_status().await.map(|s| s.node_id).ok();
    Ok(render_init(ctx.output, &ids, leader, &resp.admin_token))
}

/// What `cluster init` prints: the voters and leader, and the first admin token when the
/// cluster made one (its secret exists nowhere else, so this is the one chance to keep it).
pub fn render_init(out: Output, ids: &BTreeSet<u64>, leader: Option<u64>, admin_token: &str) -> String {
    match out {
        Output::Json => {
            let mut v = json!({"initialized": true, "voters": ids, "leader_id": leader});
            if !admin_token.is_empty() {
                v["admin_token"] = json!(admin_token);
            }
            output::json(&v)
        }
        Output::Table => {
            let mut text = format!(
                "initialised a cluster of {} voter(s) ({}); leader: {}",
                ids.len(),
                ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                leader.map_or("not elected yet".to_string(), |l| format!("node {l}"))
            );
            if !admin_token.is_empty() {
                text.push_str("\n\n");
                text.push_str(&crate::token::render_secret("the first admin token", admin_token));
            }
            text
        }
    }
}

/// The audit reason and one request id for every attempt of a membership change: the cluster
/// records who asked, and a retried request is recognised as the same one.
fn write_options(reason: &str) -> pb::WriteOptions {
    pb::WriteOptions { request_id: vexil_client::admin::new_request_id(), reason: reason.to_string() }
}

/// The membership after a change, as a small table (or JSON).
fn membership_result(ctx: &Ctx, what: &str, r: &pb::MembershipResponse) -> String {
    let revision = r.header.map_or(0, |h| h.revision);
    match ctx.output {
        Output::Json => output::json(&json!({
            "revision": revision,
            "voters": r.voters.iter().map(|m| json!({"id": m.node_id, "api_addr": m.api_addr, "raft_addr": m.raft_addr})).collect::<Vec<_>>(),
            "learners": r.learners.iter().map(|m| json!({"id": m.node_id, "api_addr": m.api_addr, "raft_addr": m.raft_addr})).collect::<Vec<_>>(),
        })),
        Output::Table => {
            let mut rows: Vec<(u64, Vec<String>)> = r
                .voters
                .iter()
                .map(|m| (m.node_id, vec![m.node_id.to_string(), m.api_addr.clone(), "voter".into()]))
                .chain(
                    r.learners
                        .iter()
                        .map(|m| (m.node_id, vec![m.node_id.to_string(), m.api_addr.clone(), "learner".into()])),
                )
                .collect();
            rows.sort_by_key(|(id, _)| *id);
            let (head, note) = what.split_once("; ").map_or((what, String::new()), |(h, n)| (h, format!("; {n}")));
            format!(
                "{head} at revision {revision}{note}\n\n{}",
                output::table(&["ID", "ADDRESS", "MEMBER"], rows.into_iter().map(|(_, r)| r))
            )
        }
    }
}

async fn add_learner(a: &AddLearnerArgs, ctx: &Ctx) -> Result<String, Failure> {
    if a.id == 0 {
        return Err(Failure::Usage("node ids start at 1".into()));
    }
    let before = ctx.conn.leader_status().await?;
    if before.voters.iter().any(|m| m.node_id == a.id) {
        return Err(Failure::Failed(format!(
            "node {} is already a voter; nothing to do (see `vexilctl cluster status`)",
            a.id
        )));
    }
    let member = pb::Member { node_id: a.id, api_addr: a.api_addr.clone(), raft_addr: a.raft_addr.clone() };
    let req = pb::AddLearnerRequest { member: Some(member), blocking: false, options: Some(write_options(&a.reason)) };
    let resp = ctx
        .conn
        .on_leader(LONG_CALL_TIMEOUT, Subject::Cluster, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).add_learner(req).await }
        })
        .await?;
    if a.no_wait {
        return Ok(membership_result(ctx, &format!("added node {} as a learner", a.id), &resp));
    }
    let caught_up = wait_caught_up(&ctx.conn, a.id, a.catch_up_within, Duration::from_secs(a.timeout_secs)).await?;
    let what = format!("added node {} as a learner; caught up ({} entries behind the leader)", a.id, caught_up);
    Ok(membership_result(ctx, &what, &resp))
}

/// Polls the leader until learner `id` is within `within` entries of its last log index,
/// showing a progress bar on a terminal (plain progress lines on stderr otherwise). Returns the
/// final lag.
async fn wait_caught_up(conn: &Conn, id: u64, within: u64, timeout: Duration) -> Result<u64, Failure> {
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(1);
    if tty {
        bar.set_style(
            ProgressStyle::with_template("{spinner} node {prefix} catching up [{bar:40}] {pos}/{len} entries ({msg})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let start = Instant::now();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let result = loop {
        let s = match conn.leader_status().await {
            Ok(s) => s,
            Err(f) if start.elapsed() >= timeout => break Err(f),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let total = s.last_log_index.max(1);
        let lag = s.lag.get(&id).copied().unwrap_or(total);
        let done = total.saturating_sub(lag);
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(format!("lag {lag}"));
        if !tty && (last_line.elapsed() >= Duration::from_secs(1) || lag <= within) {
            eprintln!("node {id}: {done}/{total} entries replicated (lag {lag})");
            last_line = Instant::now();
        }
        if lag <= within && s.lag.contains_key(&id) {
            break Ok(lag);
        }
        if start.elapsed() >= timeout {
            break Err(Failure::Failed(format!(
                "node {id} is still {lag} entries behind the leader after {}s; it stays a learner and keeps catching up: follow it with `vexilctl cluster status`",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    result
}

async fn promote(a: &PromoteArgs, ctx: &Ctx) -> Result<String, Failure> {
    let s = ctx.conn.leader_status().await?;
    let learners: BTreeSet<u64> = s.learners.iter().map(|m| m.node_id).collect();
    let mut voters: BTreeSet<u64> = s.voters.iter().map(|m| m.node_id).collect();
    for id in &a.ids {
        if voters.contains(id) {
            continue;
        }
        if !learners.contains(id) {
            return Err(Failure::Failed(format!(
                "node {id} is not a learner; add it first with `vexilctl cluster add-learner {id} --api-addr HOST:PORT --raft-addr HOST:PORT`"
            )));
        }
        voters.insert(*id);
    }
    let ids = a.ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let resp = change_voters(ctx, voters, true, &a.reason).await?;
    Ok(membership_result(ctx, &format!("promoted node {ids} to voter"), &resp))
}

async fn demote(a: &DemoteArgs, ctx: &Ctx) -> Result<String, Failure> {
    let s = ctx.conn.leader_status().await?;
    let current: BTreeSet<u64> = s.voters.iter().map(|m| m.node_id).collect();
    for id in &a.ids {
        if !current.contains(id) {
            return Err(Failure::Failed(format!("node {id} is not a voter (see `vexilctl cluster status`)")));
        }
    }
    let next: BTreeSet<u64> = current.iter().copied().filter(|id| !a.ids.contains(id)).collect();
    check_quorum(&ctx.conn, &s, &next, a.force).await?;
    let ids = a.ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let resp = change_voters(ctx, next, true, &a.reason).await?;
    Ok(membership_result(ctx, &format!("demoted node {ids} to learner"), &resp))
}

async fn change_voters(
    ctx: &Ctx,
    voters: BTreeSet<u64>,
    retain: bool,
    reason: &str,
) -> Result<pb::MembershipResponse, Failure> {
    let req = pb::ChangeMembershipRequest {
        voters: voters.into_iter().collect(),
        retain,
        options: Some(write_options(reason)),
    };
    ctx.conn
        .on_leader(LONG_CALL_TIMEOUT, Subject::Cluster, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).change_membership(req).await }
        })
        .await
}

async fn remove(a: &RemoveArgs, ctx: &Ctx) -> Result<String, Failure> {
    let s = ctx.conn.leader_status().await?;
    let current: BTreeSet<u64> = s.voters.iter().map(|m| m.node_id).collect();
    let is_learner = s.learners.iter().any(|m| m.node_id == a.id);
    if !current.contains(&a.id) && !is_learner {
        return Err(Failure::Failed(format!("node {} is not a member (see `vexilctl cluster status`)", a.id)));
    }
    if current.contains(&a.id) {
        let next: BTreeSet<u64> = current.iter().copied().filter(|id| *id != a.id).collect();
        check_quorum(&ctx.conn, &s, &next, a.force).await?;
    }
    let req = pb::RemoveNodeRequest { node_id: a.id, options: Some(write_options(&a.reason)) };
    let resp = ctx
        .conn
        .on_leader(LONG_CALL_TIMEOUT, Subject::Cluster, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).remove_node(req).await }
        })
        .await?;
    let note = if a.id == s.node_id { "; it was the leader, so the remaining voters elect a new one" } else { "" };
    Ok(membership_result(ctx, &format!("removed node {}{note}", a.id), &resp))
}

/// Refuses a change whose voter set `next` would have no reachable majority (or no voter).
async fn check_quorum(
    conn: &Conn,
    leader: &pb::StatusResponse,
    next: &BTreeSet<u64>,
    force: bool,
) -> Result<(), Failure> {
    if next.is_empty() {
        return Err(Failure::Failed(
            "refusing to remove the last voter: the cluster would have no voters and could never commit again; add and promote another member first".into(),
        ));
    }
    let members = members_of(leader);
    let remaining: Vec<(pb::Member, bool)> = members.into_iter().filter(|(m, _)| next.contains(&m.node_id)).collect();
    let statuses = probe(conn, &remaining).await;
    let healthy: Vec<u64> = remaining
        .iter()
        .map(|(m, _)| m.node_id)
        .filter(|id| statuses.get(id).is_some_and(|s| s.as_ref().is_ok_and(|s| s.leader_id != 0)))
        .collect();
    let majority = next.len() / 2 + 1;
    if healthy.len() >= majority || force {
        return Ok(());
    }
    let down: Vec<String> = next.iter().filter(|id| !healthy.contains(id)).map(|id| format!("node {id}")).collect();
    Err(Failure::Failed(format!(
        "refusing: the voters left would be {}, and only {} of them are reachable and following a leader ({} down); a quorum needs {majority}, so the cluster could not commit anything. Bring {} back first, or pass --force to do it anyway",
        next.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        healthy.len(),
        down.join(", "),
        down.join(", ")
    )))
}

async fn snapshot(a: &SnapshotArgs, ctx: &Ctx) -> Result<String, Failure> {
    let (url, s) = ctx.conn.any_status().await?;
    let (node, url) = match a.node {
        None => (s.node_id, url),
        Some(id) => {
            let m = members_of(&s)
                .into_iter()
                .find(|(m, _)| m.node_id == id)
                .ok_or_else(|| Failure::Failed(format!("node {id} is not a member (see `vexilctl cluster status`)")))?;
            (id, ctx.conn.node_url(&m.0.api_addr)?)
        }
    };
    let spinner = if std::io::stderr().is_terminal() {
        let sp = ProgressBar::new_spinner();
        sp.set_message(format!("node {node} is building a snapshot"));
        sp.enable_steady_tick(Duration::from_millis(120));
        Some(sp)
    } else {
        None
    };
    let r = ClusterClient::new(ctx.conn.channel(&url, LONG_CALL_TIMEOUT)?).snapshot(pb::SnapshotRequest {}).await;
    if let Some(sp) = spinner {
        sp.finish_and_clear();
    }
    let r = r.map_err(|s| errors::from_status(&s, Subject::Cluster))?.into_inner();
    Ok(match ctx.output {
        Output::Json => output::json(&json!({"node_id": node, "last_included_index": r.last_included_index})),
        Output::Table => format!(
            "node {node} built a snapshot covering revision {}; its log up to there can now be purged",
            r.last_included_index
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u64, role: &str, term: u64, applied: u64, leader: u64) -> pb::StatusResponse {
        pb::StatusResponse {
            node_id: id,
            role: role.into(),
            term,
            leader_id: leader,
            leader_api_addr: format!("127.0.0.1:700{leader}"),
            last_log_index: applied,
            applied_index: applied,
            audit_seq: 42,
            audit_head_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            cluster_id: "5d1c0f3b8e2a4c6d9f7a1b3c5e7d9f11".into(),
            ..Default::default()
        }
    }

    fn row(id: u64, voter: bool, status: Result<pb::StatusResponse, String>, lag: Option<u64>) -> MemberRow {
        MemberRow {
            id,
            api_addr: format!("127.0.0.1:700{id}"),
            raft_addr: format!("127.0.0.1:710{id}"),
            voter,
            status,
            lag,
        }
    }

    #[test]
    fn status_table() {
        let rows = vec![
            row(1, true, Ok(st(1, "leader", 3, 1207, 1)), Some(0)),
            row(2, true, Ok(st(2, "follower", 3, 1207, 1)), Some(0)),
            row(3, true, Err("connection refused".into()), Some(311)),
            row(4, false, Ok(st(4, "learner", 3, 880, 1)), Some(327)),
        ];
        insta::assert_snapshot!(render_status(&rows));
    }

    #[test]
    fn status_table_without_leader() {
        let rows = vec![row(1, true, Ok(st(1, "candidate", 7, 10, 0)), None), row(2, true, Err("down".into()), None)];
        insta::assert_snapshot!(render_status(&rows));
    }

    #[test]
    fn init_shows_the_first_admin_token_once_when_there_is_one() {
        let ids: BTreeSet<u64> = [1, 2, 3].into();
        let secret = "vexil_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let text = render_init(Output::Table, &ids, Some(1), secret);
        assert!(text.starts_with("initialised a cluster of 3 voter(s) (1, 2, 3); leader: node 1"), "{text}");
        assert_eq!(text.matches(secret).count(), 1, "{text}");
        assert!(text.contains("the first admin token (shown only this once"), "{text}");
        let v: Value = serde_json::from_str(&render_init(Output::Json, &ids, None, secret)).expect("JSON");
        assert_eq!(v["admin_token"], secret);
        // A cluster without tokens (or whose first admin token came from configuration).
        let text = render_init(Output::Table, &ids, Some(1), "");
        assert!(!text.contains("token"), "{text}");
        let v: Value = serde_json::from_str(&render_init(Output::Json, &ids, Some(1), "")).expect("JSON");
        assert!(v.get("admin_token").is_none());
    }

    #[test]
    fn members_parse() {
        let m = parse_member("2=10.0.0.2:7001/10.0.0.2:7101").expect("valid");
        assert_eq!((m.node_id, m.api_addr.as_str(), m.raft_addr.as_str()), (2, "10.0.0.2:7001", "10.0.0.2:7101"));
        for bad in ["x=a/b", "2=a", "0=a/b", "2=/b"] {
            assert_eq!(parse_member(bad).expect_err(bad).exit_code(), 2);
        }
    }
}
