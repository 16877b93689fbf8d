//! Change control under partitions and crashes: in a namespace whose policy holds every flag
//! write for two approvals, proposers (each with a token of its own) write the same two flags
//! at once, so each write opens a request and most requests go stale as others apply; reviewers
//! on random nodes approve every open request, and send a call whose outcome is unknown again
//! with its request id. Checked from the audit log after the heal (`check::change_control`): a
//! request applies at most once, only in the approval that completes it, never when stale, and
//! only with two approvals by reviewers other than its author; every client was told the truth.

use vexil_sim::changes::{ChangeCall, ChangeRet};
use vexil_sim::{assert_clean, run_seeds, scenarios};

#[test]
fn change_requests_apply_once_with_their_approvals_and_never_when_stale() {
    let reports = run_seeds(&scenarios::change_control(), 8);
    let (mut opened, mut applied, mut stale, mut duplicate, mut author, mut retried) = (0, 0, 0, 0, 0, 0);
    for call in reports.iter().flat_map(|r| &r.changes) {
        retried += usize::from(call.nodes.len() > 1);
        match (&call.call, call.ret.as_ref().map(|(_, r)| r)) {
            (ChangeCall::Propose { .. }, Some(ChangeRet::Opened { .. })) => opened += 1,
            (ChangeCall::Approve { .. }, Some(ChangeRet::Reviewed { status, .. })) if status == "applied" => {
                applied += 1
            }
            (_, Some(ChangeRet::Refused { rule, .. })) => match rule.as_str() {
                "change.stale" => stale += 1,
                "approval.duplicate" => duplicate += 1,
                "approval.author" => author += 1,
                _ => {}
            },
            _ => {}
        }
    }
    println!(
        "change requests: {opened} opened, {applied} applied; approvals refused: {stale} stale, {duplicate} \
         duplicate, {author} by the author; {retried} calls sent again with their request id"
    );
    assert_clean(&reports);
    assert!(
        applied > 0 && stale > 0 && author > 0,
        "the workload must apply requests, approve stale ones and have authors try to approve their own"
    );
}
