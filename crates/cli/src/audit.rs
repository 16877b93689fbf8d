//! `vexilctl audit`: list the hash-chained audit log, tail it (and follow new changes), and
//! verify the chain by recomputing every hash with the same code the cluster seals it with
//! (`vexil_model::audit`), reporting the first bad entry.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use vexil_client::AuditFilter;
use vexil_model::audit::{AuditEntry, ChainVerifier, Checkpoint, Hash};
use vexil_proto::v1 as pb;
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::watch_client::WatchClient;

use crate::conn::CALL_TIMEOUT;
use crate::errors::{self, Subject};
use crate::output;
use crate::{Ctx, Failure, Output};

/// Entries fetched per page (the server's maximum page).
pub const PAGE_ENTRIES: u32 = 1_000;
/// `tail --follow` also polls this often, so changes the flag feed does not carry (membership)
/// appear too.
pub const FOLLOW_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries (oldest first), optionally filtered.
    List(ListArgs),
    /// The last entries; with --follow, keep printing new ones as they are committed.
    Tail(TailArgs),
    /// Recompute the hash chain and report the first entry that does not verify (from the
    /// checkpoint, when retention removed the oldest entries).
    Verify,
    /// Remove the entries up to --through-seq on every node, behind a checkpoint that keeps the
    /// rest verifiable. Export them first (`audit list --output json`): they are gone afterwards.
    Compact(CompactArgs),
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The last entry to remove (the seq of the last entry you exported).
    #[arg(long, value_name = "SEQ")]
    pub through_seq: u64,
    /// Recorded in the audit.checkpoint entry.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only this flag (needs --namespace).
    #[arg(long, requires = "namespace")]
    pub key: Option<String>,
    #[arg(long, default_value_t = 0, value_name = "REVISION")]
    pub from_revision: u64,
    /// 0: no upper bound.
    #[arg(long, default_value_t = 0, value_name = "REVISION")]
    pub to_revision: u64,
    /// At most this many entries (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the latest entries to show first.
    #[arg(long, short = 'l', default_value_t = 10)]
    pub lines: u64,
    /// Keep running and print every new entry as it is committed (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

pub async fn run(cmd: &AuditCommand, ctx: &Ctx) -> Result<String, Failure> {
    match cmd {
        AuditCommand::List(a) => list(a, ctx).await,
        AuditCommand::Tail(a) => tail(a, ctx).await,
        AuditCommand::Verify => verify(ctx).await,
        AuditCommand::Compact(a) => compact(a, ctx).await,
    }
}

pub fn entry_json(e: &pb::AuditEntry) -> Value {
    json!({
        "seq": e.seq, "revision": e.revision, "time_ms": e.time_ms, "version": e.version, "actor": e.actor,
        "action": e.action, "namespace": e.namespace, "key": e.key,
        "before": e.before.as_deref().map(output::parse_json), "after": e.after.as_deref().map(output::parse_json),
        "reason": e.reason, "request_id": e.request_id,
        "prev_hash": hex::encode(&e.prev_hash), "hash": hex::encode(&e.hash),
    })
}

fn subject_of(e: &pb::AuditEntry) -> String {
    match (e.namespace.is_empty(), e.key.is_empty()) {
        (true, _) => "-".into(),
        (false, true) => e.namespace.clone(),
        (false, false) => format!("{}/{}", e.namespace, e.key),
    }
}

pub fn render_list(entries: &[pb::AuditEntry]) -> String {
    output::table(
        &["SEQ", "REVISION", "TIME", "ACTOR", "ACTION", "FLAG", "VERSION", "REASON"],
        entries.iter().map(|e| {
            vec![
                e.seq.to_string(),
                e.revision.to_string(),
                output::time_ms(e.time_ms),
                output::or_dash(&e.actor),
                e.action.clone(),
                subject_of(e),
                e.version.to_string(),
                output::or_dash(&output::short(&e.reason, 50)),
            ]
        }),
    )
}

/// One entry on one line (for `tail`, whose lines arrive over time and cannot share a table).
pub fn render_line(e: &pb::AuditEntry) -> String {
    let reason = if e.reason.is_empty() { String::new() } else { format!("  {:?}", e.reason) };
    format!(
        "{:>6}  rev {:<6}  {:<20}  {}  {}  {}  v{}{reason}",
        e.seq,
        e.revision,
        output::time_ms(e.time_ms),
        output::or_dash(&e.actor),
        e.action,
        subject_of(e),
        e.version
    )
}

async fn list(a: &ListArgs, ctx: &Ctx) -> Result<String, Failure> {
    let filter = AuditFilter {
        from_revision: a.from_revision,
        to_revision: a.to_revision,
        namespace: a.namespace.clone().unwrap_or_default(),
        key: a.key.clone().unwrap_or_default(),
        limit: a.limit,
    };
    let r = ctx.conn.admin.list_audit(&filter).await.map_err(|e| errors::from_client(e, Subject::Audit))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({
            "revision": r.header.revision, "entries": r.value.iter().map(entry_json).collect::<Vec<_>>(),
        })),
        Output::Table if r.value.is_empty() => "no audit entries match".into(),
        Output::Table => render_list(&r.value),
    })
}

/// One page of entries with seq > `after_seq`, from the first endpoint that answers.
struct Page {
    entries: Vec<pb::AuditEntry>,
    /// More may follow: the page stopped at `limit` or at the server's byte budget.
    more: bool,
    /// Where retention last cut the log.
    checkpoint: Option<Checkpoint>,
}

async fn page(ctx: &Ctx, after_seq: u64, limit: u32) -> Result<Page, Failure> {
    let req = pb::ListAuditRequest { after_seq, limit, read: Some(ctx.conn.read_options()), ..Default::default() };
    let r = ctx
        .conn
        .on_any(CALL_TIMEOUT, Subject::Audit, |ch| {
            let req = req.clone();
            async move { AuditClient::new(ch).list_audit(req).await }
        })
        .await?;
    let checkpoint = r.checkpoint.as_ref().map(Checkpoint::try_from).transpose().map_err(Failure::Failed)?;
    Ok(Page { entries: r.entries, more: r.more, checkpoint })
}

/// Prints entries as they come (one line each); fails with [`Failure::OutputClosed`] once
/// the reader has gone, which ends `tail --follow`.
fn print_entries(ctx: &Ctx, entries: &[pb::AuditEntry]) -> Result<(), Failure> {
    if entries.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = entries
        .iter()
        .map(|e| match ctx.output {
            Output::Json => entry_json(e).to_string(),
            Output::Table => render_line(e),
        })
        .collect();
    output::print_line(&lines.join("\n"))
}

async fn tail(a: &TailArgs, ctx: &Ctx) -> Result<String, Failure> {
    let (_, status) = ctx.conn.any_status().await?;
    let mut after = status.audit_seq.saturating_sub(a.lines);
    let mut last_revision = 0;
    loop {
        let Page { entries, more, .. } = page(ctx, after, PAGE_ENTRIES).await?;
        if let Some(e) = entries.last() {
            after = e.seq;
            last_revision = e.revision;
        }
        print_entries(ctx, &entries)?;
        if !more {
            break;
        }
    }
    if !a.follow {
        return Ok(String::new());
    }
    // Follow: the change feed wakes us as soon as a flag change commits; the poll catches the
    // rest (membership changes) and covers reconnections.
    let mut endpoint = 0usize;
    loop {
        let url = &ctx.conn.endpoints[endpoint % ctx.conn.endpoints.len()];
        let req = pb::WatchRequest { namespaces: vec![], after_revision: last_revision, initial_snapshot: false };
        let stream = async {
            let ch = ctx.conn.channel(url, Duration::from_secs(24 * 3600))?;
            WatchClient::new(ch)
                .watch(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| errors::from_status(&s, Subject::Audit))
        }
        .await;
        let mut stream = match stream {
            Ok(s) => Some(s),
            Err(_) => {
                endpoint += 1;
                None
            }
        };
        loop {
            let woke = match stream.as_mut() {
                Some(s) => tokio::select! {
                    m = s.next() => matches!(m, Some(Ok(_))),
                    () = tokio::time::sleep(FOLLOW_POLL) => true,
                },
                None => {
                    tokio::time::sleep(FOLLOW_POLL).await;
                    false
                }
            };
            if let Ok(Page { entries, .. }) = page(ctx, after, PAGE_ENTRIES).await {
                if let Some(e) = entries.last() {
                    after = e.seq;
                    last_revision = e.revision;
                }
                print_entries(ctx, &entries)?;
            }
            if !woke {
                // The stream ended or never opened: reconnect (to the next endpoint).
                endpoint += 1;
                break;
            }
        }
    }
}

/// The model's entry from the wire form; `Err` says why it cannot even be decoded.
pub fn from_proto(e: &pb::AuditEntry) -> Result<AuditEntry, String> {
    AuditEntry::try_from(e)
}

/// The outcome of verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `entries` verified, from the checkpoint `from` (genesis when `None`) to `last_seq`.
    Intact {
        entries: u64,
        last_seq: u64,
        last_revision: u64,
        head: Hash,
        from: Option<Checkpoint>,
    },
    Broken {
        seq: u64,
        revision: u64,
        problem: String,
        verified: u64,
    },
}

/// Verifying again from the start after the log was cut under us: this many times at most.
const VERIFY_ATTEMPTS: usize = 3;

/// Feeds entries (in seq order) to the verifier; stops at the first bad one.
pub fn verify_entries(v: &mut ChainVerifier, last_revision: &mut u64, entries: &[pb::AuditEntry]) -> Option<Verdict> {
    for e in entries {
        let checked = from_proto(e).and_then(|m| v.push(&m).map_err(|c| c.problem));
        if let Err(problem) = checked {
            return Some(Verdict::Broken { seq: e.seq, revision: e.revision, problem, verified: v.verified() });
        }
        *last_revision = e.revision;
    }
    None
}

/// Verifies the whole log once, from its checkpoint; `None` when retention cut the log while
/// we read it (start again).
async fn verify_once(ctx: &Ctx) -> Result<Option<Verdict>, Failure> {
    let first = page(ctx, 0, PAGE_ENTRIES).await?;
    let from = first.checkpoint;
    let mut v = from.map_or_else(ChainVerifier::new, ChainVerifier::from_checkpoint);
    let mut last_revision = from.map_or(0, |cp| cp.revision);
    let mut next = Some(first);
    loop {
        let Page { entries, more, checkpoint } = match next.take() {
            Some(p) => p,
            None => page(ctx, v.last_seq(), PAGE_ENTRIES).await?,
        };
        if checkpoint != from {
            return Ok(None);
        }
        if let Some(bad) = verify_entries(&mut v, &mut last_revision, &entries) {
            return Ok(Some(bad));
        }
        if !more || entries.is_empty() {
            break;
        }
    }
    Ok(Some(match v.finish() {
        Ok(()) => {
            Verdict::Intact { entries: v.verified(), last_seq: v.last_seq(), last_revision, head: v.head_hash(), from }
        }
        Err(e) => Verdict::Broken { seq: e.seq, revision: e.revision, problem: e.problem, verified: v.verified() },
    }))
}

async fn verify(ctx: &Ctx) -> Result<String, Failure> {
    let mut verdict = None;
    for _ in 0..VERIFY_ATTEMPTS {
        verdict = verify_once(ctx).await?;
        if verdict.is_some() {
            break;
        }
    }
    let Some(verdict) = verdict else {
        return Err(Failure::Failed(format!(
            "audit retention cut the log {VERIFY_ATTEMPTS} times while it was being verified; try again"
        )));
    };
    match verdict {
        Verdict::Intact { entries, last_seq, last_revision, head, from } => Ok(match ctx.output {
            Output::Json => output::json(&json!({
                "ok": true, "entries": entries, "first_seq": from.map_or(1, |cp| cp.seq + 1), "last_seq": last_seq,
                "last_revision": last_revision, "head_hash": hex::encode(head),
                "checkpoint": from.map(|cp| json!({"seq": cp.seq, "revision": cp.revision, "hash": hex::encode(cp.hash)})),
            })),
            Output::Table => {
                let start = match from {
                    None => "seq 1".to_string(),
                    Some(cp) => format!(
                        "seq {} after the checkpoint at seq {} (revision {}, hash {}; earlier entries were removed by retention)",
                        cp.seq + 1,
                        cp.seq,
                        cp.revision,
                        hex::encode(cp.hash)
                    ),
                };
                format!(
                    "audit chain intact: {entries} entries (from {start} to seq {last_seq}, up to revision {last_revision}), head hash {}",
                    hex::encode(head)
                )
            }
        }),
        Verdict::Broken { seq, revision, problem, verified } => {
            if ctx.output == Output::Json {
                output::print_line(&output::json(&json!({
                    "ok": false, "first_bad_seq": seq, "revision": revision, "problem": problem, "verified": verified,
                })))?;
            }
            Err(Failure::Failed(format!(
                "audit chain broken at seq {seq} (revision {revision}): {problem}; the {verified} entries before it verify. \
                 This copy of the audit log was altered or damaged: verify every node's own copy \
                 (`vexilctl audit verify --endpoints NODE --consistency stale`) and rebuild the bad one from a healthy member"
            )))
        }
    }
}

async fn compact(a: &CompactArgs, ctx: &Ctx) -> Result<String, Failure> {
    let opts = vexil_client::WriteOpts::reason(a.reason.clone());
    let (cp, removed) =
        ctx.conn.admin.compact_audit(a.through_seq, opts).await.map_err(|e| errors::from_client(e, Subject::Audit))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({
            "removed": removed, "checkpoint": {"seq": cp.seq, "revision": cp.revision, "hash": hex::encode(&cp.hash)},
        })),
        Output::Table if removed == 0 => {
            format!("nothing removed: the log already starts after seq {} (the checkpoint)", cp.seq)
        }
        Output::Table => format!(
            "removed {removed} audit entries through seq {} (revision {}); the log now verifies from this checkpoint, hash {}",
            cp.seq,
            cp.revision,
            hex::encode(&cp.hash)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_model::audit::AuditAction;

    fn chain(n: u64) -> Vec<pb::AuditEntry> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let e = AuditEntry {
                    seq,
                    revision: seq + 3,
                    time_ms: 1_700_000_000_000,
                    version: 1,
                    actor: "anonymous".into(),
                    action: AuditAction::FlagCreate,
                    namespace: "shop".into(),
                    key: format!("f{seq}"),
                    before: None,
                    after: Some("{}".into()),
                    reason: String::new(),
                    request_id: format!("r{seq}"),
                    prev_hash: prev,
                    hash: [0; 32],
                }
                .seal();
                prev = e.hash;
                pb::AuditEntry::from(e)
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_an_edit_is_found_at_its_seq() {
        let entries = chain(5);
        let (mut v, mut rev) = (ChainVerifier::new(), 0);
        assert_eq!(verify_entries(&mut v, &mut rev, &entries), None);
        assert_eq!((v.verified(), rev), (5, 8));

        let mut edited = chain(5);
        edited[2].reason = "edited".into();
        let (mut v, mut rev) = (ChainVerifier::new(), 0);
        match verify_entries(&mut v, &mut rev, &edited) {
            Some(Verdict::Broken { seq: 3, verified: 2, .. }) => {}
            other => panic!("expected seq 3 to be reported, got {other:?}"),
        }
        let mut garbled = chain(2);
        garbled[1].action = "flag.explode".into();
        let (mut v, mut rev) = (ChainVerifier::new(), 0);
        assert!(matches!(verify_entries(&mut v, &mut rev, &garbled), Some(Verdict::Broken { seq: 2, .. })));
    }
}
