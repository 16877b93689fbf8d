//! The latest committed flag records apply has used, in memory.
//!
//! Every flag write reads the flag's current record first (its version, created revision and
//! old definition for the audit diff). In RocksDB that read is a search of the `sm_flags`
//! memtable, which holds every version written since the last flush (~80,000 under sustained
//! writes): measured, those searches were ~10 % of all server CPU at 64 writing clients
//! (`benches/README.md`). Flags are few and hot, so a bounded cache of the committed records
//! answers nearly all of them.
//!
//! Rules that keep the cache equal to the table:
//! - Only the state machine's apply path reads through it ([`CachedView`]), and only
//!   [`RecordCache::committed`] changes it, after the RocksDB write of the same keys succeeded.
//! - Absent keys are cached as absent (a create reads first, too).
//! - Anything that writes the table another way (a snapshot install) calls
//!   [`RecordCache::clear`]; a committed range deletion over the table clears it as well.
//! - Least recently used records are dropped beyond [`FLAG_CACHE_BYTES_MAX`].

use std::sync::Mutex;

use lru::LruCache;

use crate::error::StoreError;
use crate::limits::FLAG_CACHE_BYTES_MAX;
use crate::schema::Table;
use crate::txn::{KvPairs, KvRead, Writes};

/// What an entry costs beyond its key and value (the map's node and the two `Vec` headers).
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// The cached table.
const CACHED: Table = Table::Flags;

/// A byte-bounded LRU map from `sm_flags` keys to their committed value (`None`: absent).
pub struct RecordCache {
    inner: Mutex<Inner>,
}

struct Inner {
    map: LruCache<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    budget: usize,
}

fn cost(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value_len(value) + ENTRY_OVERHEAD_BYTES
}

fn value_len(value: &Option<Vec<u8>>) -> usize {
    value.as_ref().map_or(0, Vec::len)
}

impl Inner {
    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let added = cost(&key, &value);
        // The key moves into the map; an old value it replaces had the same key.
        let key_len = key.len();
        if let Some(old) = self.map.put(key, value) {
            self.bytes -= key_len + value_len(&old) + ENTRY_OVERHEAD_BYTES;
        }
        self.bytes += added;
        while self.bytes > self.budget {
            match self.map.pop_lru() {
                Some((k, v)) => self.bytes -= cost(&k, &v),
                None => break,
            }
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

impl Default for RecordCache {
    fn default() -> Self {
        Self::with_budget(FLAG_CACHE_BYTES_MAX)
    }
}

impl RecordCache {
    /// A cache that holds at most `budget` bytes of keys, values and bookkeeping.
    pub fn with_budget(budget: usize) -> Self {
        RecordCache { inner: Mutex::new(Inner { map: LruCache::unbounded(), bytes: 0, budget }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("record cache lock poisoned")
    }

    fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.lock().map.get(key).cloned()
    }

    fn fill(&self, key: &[u8], value: &Option<Vec<u8>>) {
        self.lock().put(key.to_vec(), value.clone());
    }

    /// Records what a successful commit of `writes` wrote to the cached table (taking the
    /// written values, which the commit no longer needs).
    pub fn committed(&self, writes: Writes) {
        let mut inner = self.lock();
        if writes.deleted_ranges.iter().any(|r| r.table == CACHED) {
            inner.clear();
        }
        for ((table, key), value) in writes.keys {
            if table == CACHED {
                inner.put(key, value);
            }
        }
    }

    /// Forgets everything: the table was written some other way.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Bytes held, by the same measure as the budget.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// A view that answers `sm_flags` point reads from the cache, filling it on a miss, and
/// everything else from the underlying view. Only for the apply path, whose view is the latest
/// committed state (no RocksDB snapshot).
pub struct CachedView<'a, R: KvRead> {
    pub view: R,
    pub cache: &'a RecordCache,
}

impl<R: KvRead> KvRead for CachedView<'_, R> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if table != CACHED {
            return self.view.get(table, key);
        }
        if let Some(hit) = self.cache.get(key) {
            return Ok(hit);
        }
        let value = self.view.get(table, key)?;
        self.cache.fill(key, &value);
        Ok(value)
    }

    fn scan(&self, table: Table, prefix: &[u8], start: &[u8], limit: usize) -> Result<KvPairs, StoreError> {
        self.view.scan(table, prefix, start, limit)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::txn::KeyRange;

    /// A view that counts its reads and answers from a map.
    struct Counting {
        data: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
        reads: Cell<usize>,
    }

    impl KvRead for &Counting {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.reads.set(self.reads.get() + 1);
            Ok(self.data.get(&(table, key.to_vec())).cloned())
        }
        fn scan(&self, _: Table, _: &[u8], _: &[u8], _: usize) -> Result<KvPairs, StoreError> {
            Ok(Vec::new())
        }
    }

    fn counting(pairs: &[(Table, &[u8], &[u8])]) -> Counting {
        let data = pairs.iter().map(|(t, k, v)| ((*t, k.to_vec()), v.to_vec())).collect();
        Counting { data, reads: Cell::new(0) }
    }

    /// A table, a key and the value written (`None`: deleted).
    type Written<'a> = (Table, &'a [u8], Option<&'a [u8]>);

    fn writes(keys: &[Written<'_>], deleted_ranges: Vec<KeyRange>) -> Writes {
        Writes {
            deleted_ranges,
            keys: keys.iter().map(|(t, k, v)| ((*t, k.to_vec()), v.map(<[u8]>::to_vec))).collect(),
        }
    }

    #[test]
    fn a_flag_read_twice_is_read_from_the_store_once_including_an_absent_one() {
        let store = counting(&[(Table::Flags, b"a", b"1")]);
        let cache = RecordCache::default();
        let view = CachedView { view: &store, cache: &cache };
        assert_eq!(view.get(Table::Flags, b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(view.get(Table::Flags, b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(view.get(Table::Flags, b"missing").expect("get"), None);
        assert_eq!(view.get(Table::Flags, b"missing").expect("get"), None);
        assert_eq!(store.reads.get(), 2);
    }

    #[test]
    fn other_tables_are_never_cached() {
        let store = counting(&[(Table::Namespaces, b"a", b"1")]);
        let cache = RecordCache::default();
        let view = CachedView { view: &store, cache: &cache };
        view.get(Table::Namespaces, b"a").expect("get");
        view.get(Table::Namespaces, b"a").expect("get");
        assert_eq!(store.reads.get(), 2);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn a_commit_replaces_cached_values_and_deletions_cache_absence() {
        let store = counting(&[(Table::Flags, b"a", b"old"), (Table::Flags, b"b", b"old")]);
        let cache = RecordCache::default();
        let view = CachedView { view: &store, cache: &cache };
        view.get(Table::Flags, b"a").expect("get");
        view.get(Table::Flags, b"b").expect("get");
        cache.committed(writes(
            &[(Table::Flags, b"a", Some(b"new")), (Table::Flags, b"b", None), (Table::Audit, b"b", Some(b"x"))],
            Vec::new(),
        ));
        assert_eq!(view.get(Table::Flags, b"a").expect("get"), Some(b"new".to_vec()));
        assert_eq!(view.get(Table::Flags, b"b").expect("get"), None);
        assert_eq!(store.reads.get(), 2, "both answered from the cache after the commit");
    }

    #[test]
    fn a_range_deletion_over_flags_or_a_clear_forgets_everything() {
        let store = counting(&[(Table::Flags, b"a", b"1")]);
        let cache = RecordCache::default();
        let view = CachedView { view: &store, cache: &cache };
        view.get(Table::Flags, b"a").expect("get");
        let other_table = KeyRange { table: Table::Requests, from: b"a".to_vec(), to: b"z".to_vec() };
        cache.committed(writes(&[], vec![other_table]));
        view.get(Table::Flags, b"a").expect("get");
        assert_eq!(store.reads.get(), 1, "a range deletion elsewhere keeps the cache");
        let flags = KeyRange { table: Table::Flags, from: b"a".to_vec(), to: b"b".to_vec() };
        cache.committed(writes(&[], vec![flags]));
        view.get(Table::Flags, b"a").expect("get");
        assert_eq!(store.reads.get(), 2);
        cache.clear();
        assert_eq!(cache.bytes(), 0);
        view.get(Table::Flags, b"a").expect("get");
        assert_eq!(store.reads.get(), 3);
    }

    #[test]
    fn the_least_recently_used_records_go_first_beyond_the_budget() {
        let store = counting(&[(Table::Flags, b"a", b"1"), (Table::Flags, b"b", b"2"), (Table::Flags, b"c", b"3")]);
        let one_entry = cost(b"a", &Some(b"1".to_vec()));
        let cache = RecordCache::with_budget(2 * one_entry);
        let view = CachedView { view: &store, cache: &cache };
        view.get(Table::Flags, b"a").expect("get");
        view.get(Table::Flags, b"b").expect("get");
        view.get(Table::Flags, b"a").expect("get"); // `a` is now the most recent
        view.get(Table::Flags, b"c").expect("get"); // evicts `b`
        assert_eq!(store.reads.get(), 3);
        assert_eq!(cache.bytes(), 2 * one_entry);
        view.get(Table::Flags, b"a").expect("get");
        assert_eq!(store.reads.get(), 3, "`a` stayed");
        view.get(Table::Flags, b"b").expect("get");
        assert_eq!(store.reads.get(), 4, "`b` was dropped");
    }
}
