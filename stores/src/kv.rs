//! The key-value interface planes persist through, with a RocksDB implementation for the
//! binary and an in-memory one for tests.

use std::collections::BTreeMap;
#[cfg(feature = "rocksdb")]
use std::path::Path;
use std::sync::Mutex;

use crate::StoreError;

/// A set of writes applied atomically.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push((key.to_vec(), Some(value.to_vec())));
        self
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push((key.to_vec(), None));
        self
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Key-value pairs in key order, as a prefix scan returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Ordered key-value storage.
pub trait KvStore: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies `batch` atomically; with `sync` it is on stable storage when this returns.
    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
}

/// RocksDB-backed storage (one database per peer store).
#[cfg(feature = "rocksdb")]
pub struct RocksStore {
    db: rocksdb::DB,
}

#[cfg(feature = "rocksdb")]
impl RocksStore {
    /// Opens or creates the database at `path`. Fails if another process holds it.
    pub fn open(path: &Path) -> Result<RocksStore, StoreError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        // Small, mostly idle databases: keep the memory footprint low.
        opts.set_write_buffer_size(4 * 1024 * 1024);
        opts.set_max_write_buffer_number(2);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        let db = rocksdb::DB::open(&opts, path).map_err(|e| StoreError::Db(e.into_string()))?;
        Ok(RocksStore { db })
    }
}

#[cfg(feature = "rocksdb")]
impl KvStore for RocksStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get(key)
            .map_err(|e| StoreError::Db(e.into_string()))
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in &batch.ops {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| StoreError::Db(e.into_string()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            prefix,
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (k, v) = item.map_err(|e| StoreError::Db(e.into_string()))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// In-memory storage with the same semantics, for tests and simulations.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-written (each batch is
        // applied with plain inserts), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(key).cloned())
    }

    fn write(&self, batch: Batch, _sync: bool) -> Result<(), StoreError> {
        let mut map = self.map();
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .map()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    use super::*;

    fn exercise(store: &dyn KvStore) {
        let mut b = Batch::default();
        b.put(b"a/1", b"one")
            .put(b"a/2", b"two")
            .put(b"b/1", b"other");
        store.write(b, true).unwrap();
        assert_eq!(store.get(b"a/1").unwrap().as_deref(), Some(&b"one"[..]));
        let scan = store.scan_prefix(b"a/").unwrap();
        assert_eq!(scan.len(), 2);
        assert_eq!(scan[1].1, b"two");
        let mut b = Batch::default();
        b.delete(b"a/1");
        store.write(b, false).unwrap();
        assert_eq!(store.get(b"a/1").unwrap(), None);
        assert_eq!(store.scan_prefix(b"a/").unwrap().len(), 1);
    }

    #[test]
    fn memory_and_rocks_behave_alike() {
        exercise(&MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksStore::open(dir.path()).unwrap());
    }
}
