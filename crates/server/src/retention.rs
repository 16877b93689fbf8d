//! Audit retention: removing the oldest audit entries behind a checkpoint.
//!
//! The audit log grows by one entry per change (about 1 GB per million changes per node, all
//! of it in every snapshot). A cut is one replicated command, [`Command::CompactAudit`]: every
//! replica range-deletes the entries up to the cut, records the cut's seq, revision and hash
//! as the checkpoint, and appends an `audit.checkpoint` entry naming it, so `vexilctl audit
//! verify` verifies the rest from the checkpoint and a snapshot (and so a learner catching up)
//! carries only what remains.
//!
//! Two ways in, both through [`compact_through`]:
//! - the policy (`[audit]` in the configuration, off by default), checked by the leader every
//!   `audit.retention_check_interval_ms` ([`policy`]);
//! - an operator, after exporting the entries (`vexilctl audit compact --through-seq N`).
//!
//! The policy's clock is the leader's (it compares entry times to its own now); the command
//! names an explicit seq, so applying it needs no clock and every replica cuts at the same entry.

use std::sync::Arc;
use std::time::Duration;

use vexil_model::AuditEntry;
use vexil_model::audit::Checkpoint;
use vexil_proto::v1::Consistency;
use vexil_raft_store::{AuditQuery, Command, Request, Response};

use crate::config::AuditConfig;
use crate::error::ServerError;
use crate::node::Node;

/// Entries the age rule reads per check at most (in pages of [`AGE_SCAN_PAGE`]); a log further
/// behind is cut in several steps, one per check.
const AGE_SCAN_ENTRIES_MAX: usize = 100_000;
const AGE_SCAN_PAGE: usize = 1_000;
const DAY_MS: i64 = 86_400_000;

/// Proposes the cut at `through_seq` (the entry's revision looked up after a linearizable read
/// barrier), as the request `make` builds around the command.
pub async fn compact_through(
    node: &Arc<Node>,
    through_seq: u64,
    make: impl FnOnce(Command) -> Result<Request, ServerError>,
) -> Result<(Response, u64), ServerError> {
    node.read_barrier(Consistency::Linearizable, Consistency::Linearizable, 0).await?;
    let query = AuditQuery { after_seq: through_seq.saturating_sub(1), limit: 1, ..Default::default() };
    let page = node.reader.list_audit(&query)?;
    // An entry already removed (or never written) has no revision here: the state machine then
    // answers the no-op, or refuses a seq past the head, naming the field.
    let through_revision = page.entries.first().filter(|e| e.seq == through_seq).map_or(0, |e| e.revision);
    node.write(make(Command::CompactAudit { through_seq, through_revision })?).await
}

/// The cut the policy asks for now: the last seq to remove, if any beyond the checkpoint.
/// `entries_after` reads a page of entries after a seq (the local log).
pub fn policy_cut(
    policy: &AuditConfig,
    head_seq: u64,
    checkpoint: Option<Checkpoint>,
    now_ms: i64,
    mut entries_after: impl FnMut(u64, usize) -> Result<Vec<AuditEntry>, ServerError>,
) -> Result<Option<u64>, ServerError> {
    let kept_from = checkpoint.map_or(0, |c| c.seq);
    let mut cut = kept_from;
    if policy.retain_entries > 0 {
        // A tenth of slack, so the log is not cut (and a checkpoint entry appended) at every
        // check for every new entry.
        let slack = (policy.retain_entries / 10).max(1);
        if head_seq.saturating_sub(kept_from) > policy.retain_entries.saturating_add(slack) {
            cut = cut.max(head_seq.saturating_sub(policy.retain_entries));
        }
    }
    if policy.retain_days > 0 {
        let days = i64::try_from(policy.retain_days).unwrap_or(i64::MAX);
        let before_ms = now_ms.saturating_sub(days.saturating_mul(DAY_MS));
        let (mut after, mut read) = (cut, 0);
        'scan: while read < AGE_SCAN_ENTRIES_MAX {
            let page = entries_after(after, AGE_SCAN_PAGE)?;
            for e in &page {
                if e.time_ms >= before_ms {
                    break 'scan;
                }
                cut = cut.max(e.seq);
            }
            match page.last() {
                Some(e) if page.len() == AGE_SCAN_PAGE => after = e.seq,
                _ => break,
            }
            read += page.len();
        }
    }
    Ok((cut > kept_from).then_some(cut))
}

/// The leader's retention loop: every `audit.retention_check_interval_ms`, while this node
/// leads and a limit is set, cuts the log as [`policy_cut`] says. Ends when the node leaves.
pub async fn policy(node: Arc<Node>) {
    let policy = node.config.audit.clone();
    if policy.retain_entries == 0 && policy.retain_days == 0 {
        return;
    }
    let every = Duration::from_millis(policy.retention_check_interval_ms);
    let mut cuts = 0u64;
    loop {
        tokio::select! {
            () = node.leaving.begun() => return,
            () = tokio::time::sleep(every) => {}
        }
        if node.metrics().current_leader != Some(node.id) {
            continue;
        }
        let due = node.reader.audit_head().map_err(ServerError::from).and_then(|head| {
            let checkpoint = node.reader.audit_checkpoint()?;
            policy_cut(&policy, head.seq, checkpoint, node.now_ms(), |after_seq, limit| {
                let q = AuditQuery { after_seq, limit, ..Default::default() };
                Ok(node.reader.list_audit(&q)?.entries)
            })
        });
        let through_seq = match due {
            Ok(Some(seq)) => seq,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "audit retention could not read the log; trying again at the next check");
                continue;
            }
        };
        cuts += 1;
        let make = |command| {
            Ok(Request {
                request_id: format!("retention-{}-{}-{cuts}", node.id, node.now_ms()),
                actor: "retention".into(),
                reason: format!(
                    "audit.retain_entries = {}, audit.retain_days = {}",
                    policy.retain_entries, policy.retain_days
                ),
                time_ms: node.now_ms(),
                command,
            })
        };
        match compact_through(&node, through_seq, make).await.map(|(r, _)| r.outcome) {
            Ok(Ok(outcome)) => tracing::info!(through_seq, ?outcome, "audit retention removed old entries"),
            Ok(Err(e)) => tracing::warn!(through_seq, error = %e, "audit retention cut refused"),
            Err(e) => {
                tracing::warn!(through_seq, error = %e, "audit retention cut failed; trying again at the next check")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vexil_model::AuditAction;

    use super::*;

    fn log(times: &[i64]) -> Vec<AuditEntry> {
        times
            .iter()
            .zip(1..)
            .map(|(&time_ms, seq)| AuditEntry {
                seq,
                revision: seq,
                time_ms,
                version: 0,
                actor: String::new(),
                action: AuditAction::FlagCreate,
                namespace: String::new(),
                key: String::new(),
                before: None,
                after: None,
                reason: String::new(),
                request_id: String::new(),
                prev_hash: [0; 32],
                hash: [0; 32],
            })
            .collect()
    }

    fn cut(policy: (u64, u64), entries: &[AuditEntry], checkpoint: u64, now_ms: i64) -> Option<u64> {
        let policy = AuditConfig { retain_entries: policy.0, retain_days: policy.1, retention_check_interval_ms: 1 };
        let cp = (checkpoint > 0).then_some(Checkpoint { seq: checkpoint, revision: checkpoint, hash: [0; 32] });
        let head = entries.last().map_or(0, |e| e.seq);
        policy_cut(&policy, head, cp, now_ms, |after, limit| {
            Ok(entries.iter().filter(|e| e.seq > after).take(limit).cloned().collect())
        })
        .expect("cut")
    }

    #[test]
    fn by_count_the_log_is_cut_once_it_holds_a_tenth_more_than_it_keeps() {
        let entries = log(&[0; 120]);
        assert_eq!(cut((0, 0), &entries, 0, 0), None, "off");
        assert_eq!(cut((100, 0), &entries, 0, 0), Some(20));
        assert_eq!(cut((110, 0), &entries, 0, 0), None, "within the slack of 11");
        assert_eq!(cut((100, 0), &entries, 15, 0), None, "105 kept: within the slack");
        assert_eq!(cut((100, 0), &entries, 20, 0), None, "already cut there");
    }

    #[test]
    fn by_age_every_entry_older_than_the_limit_goes_and_the_first_newer_one_stops_the_scan() {
        let day = DAY_MS;
        // Entries 1..=2500 ten days old, then one a day ago, then one from an older clock.
        let mut times = vec![0; 2_500];
        times.extend([9 * day, 0]);
        let entries = log(&times);
        let now = 10 * day;
        assert_eq!(cut((0, 5), &entries, 0, now), Some(2_500), "the scan stops at the first newer entry");
        assert_eq!(cut((0, 5), &entries, 2_500, now), None);
        assert_eq!(cut((0, 20), &entries, 0, now), None);
        // Both limits: whichever removes more.
        assert_eq!(cut((2, 20), &entries, 0, now), Some(2_500));
        assert_eq!(cut((2, 5), &entries, 0, now), Some(2_500));
    }
}
