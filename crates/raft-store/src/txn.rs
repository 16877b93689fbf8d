//! The buffered transaction of one `apply` call: [`Txn`] reads through its own writes to a
//! read-only view of the stored tables ([`KvRead`]) and collects them as one [`Writes`], which
//! the caller commits atomically (a RocksDB write batch, or a map update in the simulation's
//! in-memory store).

use std::collections::BTreeMap;

use serde::Serialize;
use vexil_model::AuditEntry;

use crate::codec;
use crate::error::StoreError;
use crate::schema::Table;

/// Key-value pairs in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A read-only, consistent view of the stored tables.
pub trait KvRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries with keys `>= start` that start with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError>;
}

/// The keys `from..to` of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub table: Table,
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

impl KeyRange {
    fn contains(&self, table: Table, key: &[u8]) -> bool {
        table == self.table && self.from.as_slice() <= key && key < self.to.as_slice()
    }

    /// Removes this range's keys from an ordered map keyed like the tables, visiting only them.
    fn remove_from<V>(&self, map: &mut BTreeMap<(Table, Vec<u8>), V>) {
        if self.from >= self.to {
            return;
        }
        let doomed: Vec<(Table, Vec<u8>)> =
            map.range((self.table, self.from.clone())..(self.table, self.to.clone())).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            map.remove(&k);
        }
    }
}

/// One atomic write: first `deleted_ranges`, then `keys` (`None` deletes one key).
#[derive(Debug, Default)]
pub struct Writes {
    pub deleted_ranges: Vec<KeyRange>,
    pub keys: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl Writes {
    /// Commits these writes to an ordered in-memory table set (the simulation's store).
    pub fn apply_to(self, tables: &mut BTreeMap<(Table, Vec<u8>), Vec<u8>>) {
        for range in &self.deleted_ranges {
            range.remove_from(tables);
        }
        for (k, v) in self.keys {
            match v {
                Some(v) => tables.insert(k, v),
                None => tables.remove(&k),
            };
        }
    }

    fn range_deleted(&self, table: Table, key: &[u8]) -> bool {
        self.deleted_ranges.iter().any(|range| range.contains(table, key))
    }
}

/// Buffered reads and writes over a [`KvRead`] view.
pub struct Txn<'a, R: KvRead + ?Sized> {
    base: &'a R,
    writes: Writes,
    /// The audit entries written, in order (published to readers after the commit).
    audit: Vec<AuditEntry>,
    /// While a [`Savepoint`] is open: each buffered key's value before a write replaced it
    /// (`None`: it was not buffered), newest last, to undo writes back to the savepoint.
    undo: Vec<UndoEntry>,
    open_savepoints: usize,
}

/// A buffered key and what it held before a write under a savepoint (`None`: not buffered).
type UndoEntry = ((Table, Vec<u8>), Option<Option<Vec<u8>>>);

/// A point in a [`Txn`] to roll back to: the change-control rules judge a write by the state
/// it produces, and a refused write must leave nothing behind.
#[derive(Debug)]
#[must_use = "a savepoint is rolled back or released"]
pub struct Savepoint {
    undo: usize,
    ranges: usize,
    audit: usize,
}

impl<'a, R: KvRead + ?Sized> Txn<'a, R> {
    pub fn new(base: &'a R) -> Self {
        Self { base, writes: Writes::default(), audit: Vec::new(), undo: Vec::new(), open_savepoints: 0 }
    }

    /// Starts recording what the writes from here on replace.
    pub fn savepoint(&mut self) -> Savepoint {
        self.open_savepoints += 1;
        Savepoint { undo: self.undo.len(), ranges: self.writes.deleted_ranges.len(), audit: self.audit.len() }
    }

    /// Keeps the writes since the savepoint (an enclosing one may still undo them).
    pub fn release(&mut self, _: Savepoint) {
        self.open_savepoints -= 1;
        if self.open_savepoints == 0 {
            self.undo.clear();
        }
    }

    /// Undoes every write since `sp`, audit entries included.
    pub fn rollback(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.undo {
            let (key, before) = self.undo.pop().expect("undo entries above the savepoint");
            match before {
                Some(v) => self.writes.keys.insert(key, v),
                None => self.writes.keys.remove(&key),
            };
        }
        self.writes.deleted_ranges.truncate(sp.ranges);
        self.audit.truncate(sp.audit);
        self.open_savepoints -= 1;
        if self.open_savepoints == 0 {
            self.undo.clear();
        }
    }

    /// The audit entries written since `sp`, in order.
    pub fn audit_since(&self, sp: &Savepoint) -> &[AuditEntry] {
        &self.audit[sp.audit..]
    }

    fn remember(&mut self, table: Table, key: &[u8]) {
        if self.open_savepoints > 0 {
            let k = (table, key.to_vec());
            let before = self.writes.keys.get(&k).cloned();
            self.undo.push((k, before));
        }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.keys.get(&(table, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None if self.writes.range_deleted(table, key) => Ok(None),
            None => self.base.get(table, key),
        }
    }

    pub fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(table, key)?
            .map(|bytes| codec::decode(&bytes).map_err(|source| StoreError::Corrupt { table, source }))
            .transpose()
    }

    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.remember(table, &key);
        self.writes.keys.insert((table, key), Some(value));
    }

    pub fn put_encoded<T: Serialize>(&mut self, table: Table, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let bytes = codec::encode(value).map_err(|source| StoreError::Corrupt { table, source })?;
        self.put(table, key, bytes);
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.remember(table, &key);
        self.writes.keys.insert((table, key), None);
    }

    /// Deletes every key in `from..to`: those stored, and those written earlier in this txn.
    /// Keys written after this call are kept.
    pub fn delete_range(&mut self, table: Table, from: Vec<u8>, to: Vec<u8>) {
        let range = KeyRange { table, from, to };
        if self.open_savepoints > 0 && range.from < range.to {
            let doomed: Vec<_> = self
                .writes
                .keys
                .range((table, range.from.clone())..(table, range.to.clone()))
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            self.undo.extend(doomed);
        }
        range.remove_from(&mut self.writes.keys);
        self.writes.deleted_ranges.push(range);
    }

    /// Every entry under `prefix`, merging buffered writes over the stored view.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .scan(table, prefix, prefix, usize::MAX)?
            .into_iter()
            .filter(|(k, _)| !self.writes.range_deleted(table, k))
            .collect();
        let lo = (table, prefix.to_vec());
        for ((t, k), v) in self.writes.keys.range(lo..) {
            if *t != table || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// Writes an audit entry and remembers it.
    pub(crate) fn put_audit(&mut self, entry: AuditEntry) -> Result<(), StoreError> {
        self.put_encoded(Table::Audit, codec::audit_key(entry.revision, entry.seq).to_vec(), &entry)?;
        self.audit.push(entry);
        Ok(())
    }

    /// The writes to commit atomically, and the audit entries among them in order.
    pub fn into_parts(self) -> (Writes, Vec<AuditEntry>) {
        (self.writes, self.audit)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory table set for testing the logic without RocksDB.
    #[derive(Default)]
    pub struct MemKv(pub RefCell<BTreeMap<TableKey, Vec<u8>>>);

    type TableKey = (Table, Vec<u8>);

    impl KvRead for MemKv {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.borrow().get(&(table, key.to_vec())).cloned())
        }
        fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
            Ok(self
                .0
                .borrow()
                .range((table, start.to_vec())..)
                .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
                .take(limit)
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect())
        }
    }

    impl MemKv {
        pub fn commit(&self, writes: Writes) {
            writes.apply_to(&mut self.0.borrow_mut());
        }
    }

    #[test]
    fn a_range_deletion_hides_stored_and_earlier_keys_but_not_later_ones() {
        let kv = MemKv::default();
        kv.0.borrow_mut().insert((Table::Requests, b"k1".to_vec()), b"stored".to_vec());
        kv.0.borrow_mut().insert((Table::Requests, b"k5".to_vec()), b"stored".to_vec());
        let mut txn = Txn::new(&kv);
        txn.put(Table::Requests, b"k2".to_vec(), b"before".to_vec());
        txn.put(Table::Flags, b"k2".to_vec(), b"other table".to_vec());
        txn.delete_range(Table::Requests, b"k0".to_vec(), b"k5".to_vec());
        txn.put(Table::Requests, b"k3".to_vec(), b"after".to_vec());
        assert_eq!(txn.get(Table::Requests, b"k1").expect("get"), None);
        assert_eq!(txn.get(Table::Requests, b"k2").expect("get"), None);
        assert_eq!(txn.get(Table::Requests, b"k3").expect("get"), Some(b"after".to_vec()));
        assert_eq!(txn.get(Table::Requests, b"k5").expect("get"), Some(b"stored".to_vec()), "`to` is exclusive");
        assert_eq!(txn.get(Table::Flags, b"k2").expect("get"), Some(b"other table".to_vec()));
        let seen: Vec<_> = txn.scan_prefix(Table::Requests, b"k").expect("scan").into_keys().collect();
        assert_eq!(seen, vec![b"k3".to_vec(), b"k5".to_vec()]);
        let (writes, _) = txn.into_parts();
        kv.commit(writes);
        let left: Vec<_> = kv.0.borrow().keys().cloned().collect();
        assert_eq!(
            left,
            vec![(Table::Flags, b"k2".to_vec()), (Table::Requests, b"k3".to_vec()), (Table::Requests, b"k5".to_vec())]
        );
    }
}
