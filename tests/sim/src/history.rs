//! The recorded history: every operation a simulated client issued, with its invoke and return
//! times in simulated time and what came back.
//!
//! Each op is recorded when it is invoked and completed when it returns, so an op that never
//! returns (its client was still waiting when the run ended) stays open. The digest is a
//! SHA-256 over a canonical text form of every op, so two runs of one seed can be compared with
//! one line.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// Microseconds of simulated time since the simulation started.
pub type Micros = u64;

/// A read's consistency level, as the client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Linearizable,
    Lease,
    Stale,
}

/// What a client asked for. Every written value is unique in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Create {
        value: String,
    },
    /// Compare-and-set when `expected` is given.
    Update {
        value: String,
        expected: Option<u64>,
    },
    Delete {
        expected: Option<u64>,
    },
    Read {
        level: Level,
    },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Read { .. })
    }

    /// The value this op writes, if any.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            OpKind::Create { value } | OpKind::Update { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A flag as a read saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub value: String,
    pub version: u64,
    pub mod_revision: u64,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// A write took effect: the flag's new version (0 after a delete) and the revision.
    Written {
        version: u64,
        revision: u64,
    },
    /// A read succeeded; `flag` is `None` when the flag did not exist (NOT_FOUND).
    Read {
        flag: Option<Seen>,
        revision: u64,
        served_by: u64,
    },
    /// Definite write failures decided by the state machine: nothing changed.
    NotFound,
    Exists,
    VersionMismatch {
        current: u64,
    },
    /// A write whose outcome is unknown (timeout, unavailable, lost connection): it may or may
    /// not have taken effect. A failed read is recorded this way too and ignored by the checkers.
    Unknown {
        reason: String,
    },
}

impl Ret {
    pub fn is_definite(&self) -> bool {
        !matches!(self, Ret::Unknown { .. })
    }
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub id: usize,
    pub client: String,
    /// The node the request was sent to.
    pub node: u64,
    pub key: String,
    pub request_id: String,
    pub kind: OpKind,
    pub invoke: Micros,
    /// The nodes the same request was sent to again, in order (a write whose outcome was
    /// unknown, retried with its request id): one op, from the first invocation to the last
    /// return.
    pub retries: Vec<u64>,
    /// `None` while (or if forever) the client is still waiting.
    pub ret: Option<(Micros, Ret)>,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} n{} {} {:?} inv={}us", self.id, self.client, self.node, self.key, self.kind, self.invoke)?;
        if !self.retries.is_empty() {
            write!(f, " retried on {:?}", self.retries)?;
        }
        match &self.ret {
            Some((t, r)) => write!(f, " ret={t}us {r:?}"),
            None => write!(f, " (open)"),
        }
    }
}

/// The shared recorder (all simulated hosts run on one thread).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ops: Rc<RefCell<Vec<Op>>>,
}

/// Simulated time now, in microseconds (0 outside a simulated host).
pub fn now_micros() -> Micros {
    turmoil::sim_elapsed().map(|d| d.as_micros() as Micros).unwrap_or(0)
}

impl Recorder {
    /// Records an invocation; returns its id for [`Recorder::complete`].
    pub fn invoke(&self, client: &str, node: u64, key: &str, request_id: &str, kind: OpKind) -> usize {
        let mut ops = self.ops.borrow_mut();
        let id = ops.len();
        ops.push(Op {
            id,
            client: client.into(),
            node,
            key: key.into(),
            request_id: request_id.into(),
            kind,
            invoke: now_micros(),
            retries: vec![],
            ret: None,
        });
        id
    }

    /// The request of op `id` was sent again, to `node`.
    pub fn retried(&self, id: usize, node: u64) {
        self.ops.borrow_mut()[id].retries.push(node);
    }

    pub fn complete(&self, id: usize, ret: Ret) {
        self.ops.borrow_mut()[id].ret = Some((now_micros(), ret));
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.borrow().clone()
    }
}

/// A short hex digest of the whole history (the first 16 hex digits of a SHA-256).
pub fn digest(ops: &[Op]) -> String {
    digest_lines(ops.iter().map(ToString::to_string))
}

/// [`digest`] of any recorded lines (ops, then other clients' calls).
pub fn digest_lines(lines: impl Iterator<Item = String>) -> String {
    let mut h = Sha256::new();
    for line in lines {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..8])
}

/// Counts of outcomes, for the summary a sweep prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub written: usize,
    pub refused: usize,
    pub unknown_writes: usize,
    pub reads_ok: [usize; 3],
    pub reads_failed: usize,
}

impl Tally {
    pub fn of(ops: &[Op]) -> Tally {
        let mut t = Tally::default();
        for op in ops {
            match (&op.kind, op.ret.as_ref().map(|(_, r)| r)) {
                (OpKind::Read { level }, Some(Ret::Read { .. })) => t.reads_ok[*level as usize] += 1,
                (OpKind::Read { .. }, _) => t.reads_failed += 1,
                (_, Some(Ret::Written { .. })) => t.written += 1,
                (_, Some(r)) if r.is_definite() => t.refused += 1,
                _ => t.unknown_writes += 1,
            }
        }
        t
    }

    pub fn add(&mut self, o: &Tally) {
        self.written += o.written;
        self.refused += o.refused;
        self.unknown_writes += o.unknown_writes;
        for i in 0..3 {
            self.reads_ok[i] += o.reads_ok[i];
        }
        self.reads_failed += o.reads_failed;
    }
}
