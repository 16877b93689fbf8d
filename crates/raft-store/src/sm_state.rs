//! The state machine's singletons (the last applied log id, the membership, the end of the
//! audit chain, the deduplication count): [`SmState`], loaded from and stored to the `Meta`
//! table.

use crate::error::StoreError;
use std::collections::BTreeMap;

use crate::schema::{AuditHead, META_ALARMS, META_APPLIED, META_AUDIT_HEAD, META_MEMBERSHIP, META_REQUESTS_SEQ, Table};
use crate::txn::{KvRead, Txn};
use crate::types::{Alarm, LogId, StoredMembership};

/// The state machine's view of itself between `apply` calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmState {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub audit_head: AuditHead,
    /// Deduplication records ever written: the next one is number `requests_seq`.
    pub requests_seq: u64,
    /// The standing alarms by node id: read on every write, so kept here. Written to `Meta`
    /// only by the commands that change them (not by [`SmState::store`]).
    pub alarms: BTreeMap<u64, Alarm>,
}

impl SmState {
    /// Loads only the last applied log id (what every read needs; the other singletons, the
    /// membership above all, cost a decode each).
    pub fn load_applied<R: KvRead + ?Sized>(view: &R) -> Result<Option<LogId>, StoreError> {
        Txn::new(view).get_decoded(Table::Meta, META_APPLIED)
    }

    /// Loads the singletons from a stored view.
    pub fn load<R: KvRead + ?Sized>(view: &R) -> Result<Self, StoreError> {
        let txn = Txn::new(view);
        Ok(SmState {
            applied: Self::load_applied(view)?,
            membership: txn.get_decoded(Table::Meta, META_MEMBERSHIP)?.unwrap_or_default(),
            audit_head: txn.get_decoded(Table::Meta, META_AUDIT_HEAD)?.unwrap_or_default(),
            requests_seq: txn.get_decoded(Table::Meta, META_REQUESTS_SEQ)?.unwrap_or(0),
            alarms: txn.get_decoded(Table::Meta, META_ALARMS)?.unwrap_or_default(),
        })
    }

    /// Writes the singletons into `txn` (at the end of every apply).
    pub(crate) fn store<R: KvRead + ?Sized>(&self, txn: &mut Txn<'_, R>) -> Result<(), StoreError> {
        match &self.applied {
            Some(applied) => txn.put_encoded(Table::Meta, META_APPLIED.to_vec(), applied)?,
            None => txn.delete(Table::Meta, META_APPLIED.to_vec()),
        }
        txn.put_encoded(Table::Meta, META_MEMBERSHIP.to_vec(), &self.membership)?;
        txn.put_encoded(Table::Meta, META_AUDIT_HEAD.to_vec(), &self.audit_head)?;
        txn.put_encoded(Table::Meta, META_REQUESTS_SEQ.to_vec(), &self.requests_seq)?;
        Ok(())
    }
}
