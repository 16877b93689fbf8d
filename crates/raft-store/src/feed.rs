//! What the state machine tells readers after each apply: the applied revision, and the audit
//! entries of the last revisions, kept in memory.
//!
//! The change feed (`Watch`) follows a node's applied revision. Reading each new revision's
//! audit entries back from RocksDB costs every open stream an iterator per revision, and it was
//! the slowest step between a leader applying a write and a watcher receiving it. The state
//! machine already holds those entries when it applies them, so it publishes them here, and
//! [`AppliedFeed::changes_after`] answers from memory while the requested revision is recent;
//! a stream that fell further behind reads the audit table as before.
//!
//! Ordering: the state machine commits a batch, THEN publishes its entries, THEN announces the
//! new applied revision. So a reader woken by the announcement finds the entries here, and
//! every entry here is committed locally.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use vexil_model::AuditEntry;

use crate::limits::RECENT_AUDIT_ENTRIES_MAX;

/// Shared by a state machine (which publishes) and its readers.
pub struct AppliedFeed {
    applied: watch::Sender<u64>,
    recent: Mutex<Recent>,
    /// Whether a NOSPACE alarm stands in the applied state: lets the write path skip reading
    /// the alarms while none does (set by the state machine with every state it publishes).
    alarms_standing: AtomicBool,
}

/// Every audit entry with `floor < revision <= through`, oldest first.
struct Recent {
    entries: VecDeque<AuditEntry>,
    floor: u64,
    through: u64,
}

impl AppliedFeed {
    /// A feed for a state machine that has applied up to `applied`; nothing is held yet.
    pub fn new(applied: u64) -> Self {
        let (tx, _) = watch::channel(applied);
        Self {
            applied: tx,
            recent: Mutex::new(Recent { entries: VecDeque::new(), floor: applied, through: applied }),
            alarms_standing: AtomicBool::new(false),
        }
    }

    /// Records whether the applied state holds an alarm.
    pub fn set_alarms_standing(&self, standing: bool) {
        self.alarms_standing.store(standing, Ordering::Release);
    }

    /// Whether the applied state held an alarm when last published.
    pub fn alarms_standing(&self) -> bool {
        self.alarms_standing.load(Ordering::Acquire)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("applied feed lock poisoned")
    }

    /// A receiver of the last applied revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Records that everything up to `applied` is committed, with `entries` the audit entries
    /// of the revisions after the previous call (in order), then announces `applied`.
    pub fn publish(&self, applied: u64, entries: Vec<AuditEntry>) {
        {
            let mut r = self.recent();
            if applied < r.through {
                // Applied state never moves back while the process runs; a caller that says
                // so has replaced the state: start over.
                *r = Recent { entries: VecDeque::new(), floor: applied, through: applied };
            }
            // A retention cut among them: nothing at or before its revision is served any more
            // (the table path answers those readers `Changes::Compacted`), as on a node that
            // restarted since.
            let cut = entries.iter().filter_map(vexil_model::audit::Checkpoint::from_entry).map(|c| c.revision).max();
            r.entries.extend(entries);
            r.through = applied;
            if let Some(cut) = cut
                && cut > r.floor
            {
                r.floor = cut;
                while r.entries.front().is_some_and(|e| e.revision <= cut) {
                    r.entries.pop_front();
                }
            }
            // Drop the oldest revisions whole: a revision is delivered all or nothing.
            while r.entries.len() > RECENT_AUDIT_ENTRIES_MAX {
                let Some(oldest) = r.entries.pop_front() else { break };
                r.floor = oldest.revision;
                while r.entries.front().is_some_and(|e| e.revision == oldest.revision) {
                    r.entries.pop_front();
                }
            }
        }
        self.applied.send_replace(applied);
    }

    /// After a snapshot install replaced the state: nothing before `applied` is held.
    pub fn reset(&self, applied: u64) {
        *self.recent() = Recent { entries: VecDeque::new(), floor: applied, through: applied };
        self.applied.send_replace(applied);
    }

    /// The audit entries with revision > `after`, whole revisions, about `max_entries` at most
    /// (one larger revision is delivered whole), and the revision up to which the caller has
    /// then seen everything. `None` when `after` is older than what is held.
    pub fn changes_after(&self, after: u64, max_entries: usize) -> Option<(Vec<AuditEntry>, u64)> {
        let r = self.recent();
        if after < r.floor {
            return None;
        }
        let start = r.entries.partition_point(|e| e.revision <= after);
        let mut page: Vec<AuditEntry> = r.entries.range(start..).take(max_entries.saturating_add(1)).cloned().collect();
        Some(match trim_to_whole_revisions(&mut page, max_entries) {
            PageEnd::Complete => (page, r.through.max(after)),
            PageEnd::Through(revision) => (page, revision),
            PageEnd::Whole(revision) => {
                (r.entries.range(start..).take_while(|e| e.revision == revision).cloned().collect(), revision)
            }
        })
    }
}

/// How a page of the change feed ends. A revision's entries come from one atomic batch, so a
/// page holds whole revisions only.
pub(crate) enum PageEnd {
    /// The page holds everything after the cursor.
    Complete,
    /// The page was cut after this revision; everything up to it is in the page.
    Through(u64),
    /// This one revision is larger than a page: the caller delivers it whole, alone.
    Whole(u64),
}

/// Cuts `page` (the first `max_entries + 1` entries after a cursor, in order) back to whole
/// revisions. Shared by the in-memory feed and the audit-table scan.
pub(crate) fn trim_to_whole_revisions(page: &mut Vec<AuditEntry>, max_entries: usize) -> PageEnd {
    if page.len() <= max_entries {
        return PageEnd::Complete;
    }
    let last = page.last().map_or(0, |e| e.revision);
    page.retain(|e| e.revision != last);
    if page.is_empty() { PageEnd::Whole(last) } else { PageEnd::Through(last - 1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_model::AuditAction;

    fn entry(revision: u64, seq: u64) -> AuditEntry {
        AuditEntry {
            seq,
            revision,
            time_ms: 0,
            version: 1,
            actor: String::new(),
            action: AuditAction::FlagCreate,
            namespace: "ns".into(),
            key: format!("k{seq}"),
            before: None,
            after: None,
            reason: String::new(),
            request_id: String::new(),
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    fn revisions(v: &[AuditEntry]) -> Vec<(u64, u64)> {
        v.iter().map(|e| (e.revision, e.seq)).collect()
    }

    #[test]
    fn serves_whole_revisions_after_a_cursor_and_says_how_far_it_got() {
        let feed = AppliedFeed::new(10);
        let mut rx = feed.subscribe();
        feed.publish(11, vec![entry(11, 1), entry(11, 2)]);
        // Revision 12 wrote no audit entry (a blank entry); 13 wrote three.
        feed.publish(13, vec![entry(13, 3), entry(13, 4), entry(13, 5)]);
        assert_eq!(*rx.borrow_and_update(), 13);

        let (got, seen) = feed.changes_after(10, 100).expect("held");
        assert_eq!((revisions(&got), seen), (vec![(11, 1), (11, 2), (13, 3), (13, 4), (13, 5)], 13));
        let (got, seen) = feed.changes_after(11, 100).expect("held");
        assert_eq!((revisions(&got).len(), seen), (3, 13));
        assert_eq!(feed.changes_after(13, 100).map(|(v, s)| (v.len(), s)), Some((0, 13)));
        assert!(feed.changes_after(9, 100).is_none(), "older than what is held");

        // A page ends on a whole revision...
        let (got, seen) = feed.changes_after(10, 3).expect("held");
        assert_eq!((revisions(&got), seen), (vec![(11, 1), (11, 2)], 12));
        // ...and one revision larger than a page comes whole.
        let (got, seen) = feed.changes_after(11, 2).expect("held");
        assert_eq!((revisions(&got).len(), seen), (3, 13));
    }

    #[test]
    fn forgets_the_oldest_revisions_whole_and_then_refuses_them() {
        let feed = AppliedFeed::new(0);
        let per = 4;
        let revisions_held = RECENT_AUDIT_ENTRIES_MAX / per;
        let mut seq = 0;
        for rev in 1..=(revisions_held as u64 + 2) {
            let batch = (0..per)
                .map(|_| {
                    seq += 1;
                    entry(rev, seq)
                })
                .collect();
            feed.publish(rev, batch);
        }
        // Revisions 1 and 2 were dropped to stay within the bound (and not half of one).
        assert!(feed.changes_after(1, usize::MAX).is_none());
        let (got, _) = feed.changes_after(2, usize::MAX).expect("held from revision 3");
        assert_eq!(got.first().map(|e| (e.revision, e.seq)), Some((3, 9)));
        assert_eq!(got.len(), revisions_held * per);
    }

    #[test]
    fn a_retention_cut_stops_serving_what_it_removed() {
        let feed = AppliedFeed::new(0);
        feed.publish(3, vec![entry(1, 1), entry(2, 2), entry(2, 3), entry(3, 4)]);
        let cp = vexil_model::audit::Checkpoint { seq: 2, revision: 2, hash: [0; 32] };
        let marker = AuditEntry { action: AuditAction::AuditCheckpoint, after: Some(cp.to_json(2)), ..entry(4, 5) };
        feed.publish(4, vec![marker]);
        assert!(feed.changes_after(1, 10).is_none(), "revision 2 was cut: the table path says so");
        let (got, seen) = feed.changes_after(2, 10).expect("after the cut's revision");
        assert_eq!((revisions(&got), seen), (vec![(3, 4), (4, 5)], 4));
    }

    #[test]
    fn a_reset_drops_everything_before_the_new_state() {
        let feed = AppliedFeed::new(0);
        feed.publish(5, vec![entry(5, 1)]);
        feed.reset(100);
        assert!(feed.changes_after(5, 10).is_none());
        assert_eq!(feed.changes_after(100, 10).map(|(v, s)| (v.len(), s)), Some((0, 100)));
        assert_eq!(*feed.subscribe().borrow(), 100);
    }
}
