//! A Wing–Gong linearizability search (with Lowe's memoisation) for one flag, modelled as a
//! single register with create, compare-and-set update, delete and read.
//!
//! Linearizability is local, so the caller checks each key on its own. The search looks for an
//! order of the operations that (a) respects real time — an op that returned before another was
//! invoked comes first — and (b) replays correctly on the model. Ops that never returned (a
//! write whose outcome is unknown) are *open*: they may be placed anywhere after their
//! invocation, or nowhere at all (they did not take effect). A configuration (set of placed ops,
//! model state) that failed once is never explored again, which keeps the search polynomial in
//! practice for the small concurrency of a simulation.
//!
//! Bounded-staleness (`lease`) reads are checked by the same search with their invocation moved
//! back by the lease bound: such a read must see a state that existed at some point no earlier
//! than `invoke - lease`.

use std::collections::{BTreeMap, HashSet};

/// The register: the flag's (value id, version), or absent.
pub type State = Option<(u32, u64)>;

/// One operation as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOp {
    Create { value: u32 },
    Update { value: u32, expected: Option<u64> },
    Delete { expected: Option<u64> },
    Read { seen: State },
}

/// What a write returned, or `Open` if we do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRet {
    /// Took effect; the flag's new version (0 after a delete).
    Ok {
        version: u64,
    },
    NotFound,
    Exists,
    Mismatch {
        current: u64,
    },
    /// Reads always carry their result in [`ModelOp::Read`].
    ReadDone,
    Open,
}

/// An operation placed in (simulated) time, in microseconds. `ret = None` means open.
#[derive(Debug, Clone)]
pub struct TimedOp {
    /// The caller's id for reports.
    pub id: usize,
    pub invoke: i64,
    pub ret: Option<i64>,
    pub op: ModelOp,
    pub result: ModelRet,
    /// An open op known (from elsewhere, e.g. the audit log) to have taken effect: it must be
    /// placed, at any time after its invocation.
    pub took_effect: bool,
}

/// Applies `op` with result `result` to `state`; `None` if that cannot happen.
pub fn step(state: State, op: ModelOp, result: ModelRet) -> Option<State> {
    let matches = |expected: Option<u64>, current: u64| expected.is_none_or(|e| e == current);
    match (op, result) {
        (ModelOp::Read { seen }, _) => (seen == state).then_some(state),
        (ModelOp::Create { value }, ModelRet::Ok { version: 1 } | ModelRet::Open) => {
            state.is_none().then_some(Some((value, 1)))
        }
        (ModelOp::Create { .. }, ModelRet::Exists) => state.is_some().then_some(state),
        (ModelOp::Update { value, expected }, ModelRet::Ok { .. } | ModelRet::Open) => match state {
            Some((_, cur)) if matches(expected, cur) => match result {
                ModelRet::Ok { version } if version != cur + 1 => None,
                _ => Some(Some((value, cur + 1))),
            },
            _ => None,
        },
        (ModelOp::Delete { expected }, ModelRet::Ok { version: 0 } | ModelRet::Open) => match state {
            Some((_, cur)) if matches(expected, cur) => Some(None),
            _ => None,
        },
        (ModelOp::Update { .. } | ModelOp::Delete { .. }, ModelRet::NotFound) => state.is_none().then_some(state),
        (ModelOp::Update { expected, .. } | ModelOp::Delete { expected }, ModelRet::Mismatch { current }) => {
            match state {
                Some((_, cur)) if cur == current && !matches(expected, cur) => Some(state),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Why a history is not linearizable: the longest prefix the search could place, and the ops
/// that could come next, none of which fits.
#[derive(Debug, Clone)]
pub struct Failure {
    pub placed: Vec<usize>,
    pub state: State,
    pub stuck: Vec<usize>,
}

/// The outcome of a search.
#[derive(Debug, Clone)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Failure),
    /// The search exceeded its budget of explored configurations.
    Inconclusive,
}

/// Explored configurations allowed per key before giving up.
pub const SEARCH_BUDGET: usize = 500_000;

/// Searches for a linearization of `ops`, starting from an absent flag.
pub fn check(ops: &[TimedOp]) -> Verdict {
    let mut ops: Vec<&TimedOp> = ops.iter().collect();
    ops.sort_by_key(|o| (o.invoke, o.id));
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let required: Vec<usize> = (0..n).filter(|&i| ops[i].ret.is_some() || ops[i].took_effect).collect();
    let is_set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;

    let mut visited: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, State, usize)> = vec![(vec![0; words], None, 0)];
    let mut best: Option<(usize, Vec<u64>, State)> = None;
    while let Some((bits, state, depth)) = stack.pop() {
        // The earliest return among required ops not yet placed: nothing invoked after it may
        // be placed before it.
        let mut pending = required.iter().filter(|&&i| !is_set(&bits, i)).peekable();
        if pending.peek().is_none() {
            return Verdict::Linearizable;
        }
        let min_ret = pending.filter_map(|&i| ops[i].ret).min().unwrap_or(i64::MAX);
        if best.as_ref().is_none_or(|(d, _, _)| depth > *d) {
            best = Some((depth, bits.clone(), state));
        }
        // Push in reverse so the earliest-invoked candidate is explored first.
        for i in (0..n).rev() {
            if is_set(&bits, i) || ops[i].invoke > min_ret {
                continue;
            }
            if let Some(next) = step(state, ops[i].op, ops[i].result) {
                let mut b = bits.clone();
                b[i / 64] |= 1 << (i % 64);
                if visited.insert((b.clone(), next)) {
                    if visited.len() > SEARCH_BUDGET {
                        return Verdict::Inconclusive;
                    }
                    stack.push((b, next, depth + 1));
                }
            }
        }
    }
    let (_, bits, state) = best.unwrap_or((0, vec![0; words], None));
    let placed = (0..n).filter(|&i| is_set(&bits, i)).map(|i| ops[i].id).collect();
    let min_ret = required.iter().filter(|&&i| !is_set(&bits, i)).filter_map(|&i| ops[i].ret).min().unwrap_or(i64::MAX);
    let stuck = (0..n).filter(|&i| !is_set(&bits, i) && ops[i].invoke <= min_ret).map(|i| ops[i].id).collect();
    Verdict::NotLinearizable(Failure { placed, state, stuck })
}

/// Gives every distinct written value of one key a small id.
#[derive(Debug, Default)]
pub struct ValueIds(BTreeMap<String, u32>);

impl ValueIds {
    pub fn id(&mut self, value: &str) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(value.to_string()).or_insert(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, invoke: i64, ret: Option<i64>, op: ModelOp, result: ModelRet) -> TimedOp {
        TimedOp { id, invoke, ret, op, result, took_effect: false }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, Some(30), ModelOp::Read { seen: Some((1, 1)) }, ModelRet::ReadDone),
            op(2, 40, Some(50), ModelOp::Update { value: 2, expected: Some(1) }, ModelRet::Ok { version: 2 }),
            op(3, 60, Some(70), ModelOp::Update { value: 3, expected: Some(1) }, ModelRet::Mismatch { current: 2 }),
            op(4, 80, Some(90), ModelOp::Delete { expected: None }, ModelRet::Ok { version: 0 }),
            op(5, 95, Some(99), ModelOp::Read { seen: None }, ModelRet::ReadDone),
        ];
        assert!(matches!(check(&h), Verdict::Linearizable));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_not() {
        let h = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, Some(30), ModelOp::Update { value: 2, expected: Some(1) }, ModelRet::Ok { version: 2 }),
            op(2, 40, Some(50), ModelOp::Read { seen: Some((1, 1)) }, ModelRet::ReadDone),
        ];
        match check(&h) {
            Verdict::NotLinearizable(f) => assert_eq!(f.stuck, vec![2]),
            v => panic!("expected a violation, got {v:?}"),
        }
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_either_order() {
        let h = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, Some(60), ModelOp::Update { value: 2, expected: Some(1) }, ModelRet::Ok { version: 2 }),
            op(2, 30, Some(50), ModelOp::Read { seen: Some((1, 1)) }, ModelRet::ReadDone),
            op(3, 31, Some(55), ModelOp::Read { seen: Some((2, 2)) }, ModelRet::ReadDone),
        ];
        assert!(matches!(check(&h), Verdict::Linearizable));
    }

    #[test]
    fn an_open_write_may_or_may_not_have_happened() {
        let took_effect = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, None, ModelOp::Update { value: 2, expected: Some(1) }, ModelRet::Open),
            op(2, 500, Some(510), ModelOp::Read { seen: Some((2, 2)) }, ModelRet::ReadDone),
        ];
        assert!(matches!(check(&took_effect), Verdict::Linearizable));
        let did_not = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, None, ModelOp::Update { value: 2, expected: Some(1) }, ModelRet::Open),
            op(2, 500, Some(510), ModelOp::Read { seen: Some((1, 1)) }, ModelRet::ReadDone),
        ];
        assert!(matches!(check(&did_not), Verdict::Linearizable));
        let flip_flop = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, None, ModelOp::Update { value: 2, expected: Some(1) }, ModelRet::Open),
            op(2, 500, Some(510), ModelOp::Read { seen: Some((2, 2)) }, ModelRet::ReadDone),
            op(3, 600, Some(610), ModelOp::Read { seen: Some((1, 1)) }, ModelRet::ReadDone),
        ];
        assert!(matches!(check(&flip_flop), Verdict::NotLinearizable(_)));
        let mut skipped = did_not.to_vec();
        skipped.push(op(4, 600, Some(610), ModelOp::Delete { expected: Some(1) }, ModelRet::Ok { version: 0 }));
        assert!(matches!(check(&skipped), Verdict::Linearizable));
        skipped[1].took_effect = true;
        assert!(
            matches!(check(&skipped), Verdict::NotLinearizable(_)),
            "a write known to have happened must be placed"
        );
    }

    #[test]
    fn a_lost_acknowledged_create_is_caught() {
        let h = [
            op(0, 0, Some(10), ModelOp::Create { value: 1 }, ModelRet::Ok { version: 1 }),
            op(1, 20, Some(30), ModelOp::Read { seen: None }, ModelRet::ReadDone),
        ];
        assert!(matches!(check(&h), Verdict::NotLinearizable(_)));
    }
}
