//! The key-value interface planes persist through, with a RocksDB implementation for the
//! binary and an in-memory one for tests.

use std::collections::BTreeMap;
#[cfg(feature = "rocksdb")]
use std::path::Path;
use std::sync::Mutex;

#[cfg(feature = "rocksdb")]
use crate::blobs::{self, BlobFile, Stored, BLOB_FILE_MIN};
use crate::StoreError;

/// A set of writes applied atomically. Blob values are borrowed (`'a`): a log block is
/// not copied until the store writes it.
#[derive(Debug, Default, Clone)]
pub struct Batch<'a> {
    ops: Vec<Op<'a>>,
}

#[derive(Debug, Clone)]
enum Op<'a> {
    Put(Vec<u8>, Vec<u8>),
    PutBlob(Vec<u8>, &'a [u8]),
    Delete(Vec<u8>),
    DeletePrefix(Vec<u8>),
}

impl<'a> Batch<'a> {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(Op::Put(key.to_vec(), value.to_vec()));
        self
    }

    /// Sets `key` to `value`, taking both without copying them.
    pub fn put_owned(&mut self, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put(key, value));
        self
    }

    /// Sets `key` to a value written once and never changed (a log block): the store
    /// may keep it outside its index. Read it back with [`KvStore::get_blob`] only.
    pub fn put_blob(&mut self, key: &[u8], value: &'a [u8]) -> &mut Self {
        self.ops.push(Op::PutBlob(key.to_vec(), value));
        self
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(Op::Delete(key.to_vec()));
        self
    }

    /// Removes every key that starts with `prefix` (one range tombstone in RocksDB, so
    /// clearing a large namespace costs no scan). Applied in order with the other writes.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> &mut Self {
        self.ops.push(Op::DeletePrefix(prefix.to_vec()));
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
    /// The value [`Batch::put_blob`] stored under `key`.
    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies `batch` atomically. A `durable` write is one the caller acknowledges to
    /// others: when this returns it survives a crash of the process, and a power cut as far
    /// as the store's [`Durability`] promises.
    fn write(&self, batch: Batch<'_>, durable: bool) -> Result<(), StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// At most `limit` entries with `start <= key < end`, in key order.
    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError>;
}

/// What an acknowledged (durable) write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A crash of the process: the write-ahead log is handed to the kernel before the write
    /// returns. A background thread syncs the log to disk every [`WAL_SYNC_INTERVAL`] while
    /// writes arrive (and on close), so a power cut or kernel crash loses at most that much,
    /// always a consistent prefix. JS hypercore 11 acknowledges appends the same way, without
    /// the periodic sync.
    #[default]
    Process,
    /// A power cut too: every durable write is fsynced before it returns (about 0.2 ms per
    /// write on the reference machine; concurrent writers do not share syncs).
    PowerLoss,
}

impl Durability {
    /// The durability a `--peer-store-sync` style flag asks for.
    pub fn from_sync_flag(sync_every_write: bool) -> Durability {
        if sync_every_write {
            Durability::PowerLoss
        } else {
            Durability::Process
        }
    }
}

/// How often [`Durability::Process`] syncs the write-ahead log while writes arrive.
pub const WAL_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// RocksDB-backed storage (one database per peer store).
#[cfg(feature = "rocksdb")]
pub struct RocksStore {
    // Declared first so it drops first: its thread's last sync and its handle on the
    // database end before the store's own handle (and the lock with it) goes.
    wal_syncer: Option<WalSyncer>,
    db: std::sync::Arc<rocksdb::DB>,
    blobs: std::sync::Arc<BlobFile>,
    durability: Durability,
}

/// The background thread of [`Durability::Process`]: syncs the write-ahead log when durable
/// writes arrived since the last sync, and once more when the store closes.
#[cfg(feature = "rocksdb")]
struct WalSyncer {
    unsynced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "rocksdb")]
impl WalSyncer {
    fn start(
        db: std::sync::Arc<rocksdb::DB>,
        blobs: std::sync::Arc<BlobFile>,
    ) -> Result<WalSyncer, StoreError> {
        use std::sync::atomic::Ordering;
        use std::sync::mpsc::RecvTimeoutError;
        let unsynced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let flag = unsynced.clone();
        let thread = std::thread::Builder::new()
            .name("store-wal-sync".into())
            .spawn(move || loop {
                let closing = !matches!(
                    stopped.recv_timeout(WAL_SYNC_INTERVAL),
                    Err(RecvTimeoutError::Timeout)
                );
                if flag.swap(false, Ordering::AcqRel) {
                    // The blob file first, and no appends until the log is synced too: a
                    // synced log never references unsynced blob bytes. Nearly all blob
                    // bytes are synced before taking the lock, so appends wait only for
                    // the last few and for the log.
                    if let Err(e) = blobs.sync_most() {
                        tracing::warn!(error = %e, "syncing the store's blob file");
                    }
                    let mut appender = blobs.lock();
                    if let Err(e) = appender.sync() {
                        tracing::warn!(error = %e, "syncing the store's blob file");
                    } else if let Err(e) = db.flush_wal(true) {
                        tracing::warn!(error = %e, "syncing the store's write-ahead log");
                    }
                    drop(appender);
                }
                if closing {
                    return;
                }
            })
            .map_err(|e| StoreError::Db(format!("starting the write-ahead log syncer: {e}")))?;
        Ok(WalSyncer {
            unsynced,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

#[cfg(feature = "rocksdb")]
impl Drop for WalSyncer {
    fn drop(&mut self) {
        // Closing the channel wakes the thread for its last sync; joining it releases its
        // handle on the database before the store drops its own (and the lock with it).
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(feature = "rocksdb")]
impl RocksStore {
    /// Opens or creates the database at `path`. Fails if another process holds it.
    pub fn open(path: &Path, durability: Durability) -> Result<RocksStore, StoreError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        // Small, mostly idle databases: keep the memory footprint low.
        opts.set_write_buffer_size(4 * 1024 * 1024);
        opts.set_max_write_buffer_number(2);
        // Every table file stays open: reopening one reads its index and filter blocks
        // again, which dominated a subnet applying into a large state.
        opts.set_max_open_files(-1);
        opts.set_keep_log_file_num(2);
        // Log blocks of 1 KiB and more bypass RocksDB (`Batch::put_blob`, blobs.rs). Other
        // values of 1 KiB and more (large subnet state values) go to RocksDB's blob files
        // when the memtable is flushed, so compactions move only keys and small values;
        // overwritten ones are reclaimed by compaction (blob GC).
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(1024);
        opts.set_enable_blob_gc(true);
        // Bloom filters: a lookup of a key that does not exist (a subnet writing fresh
        // keys, its state tree's new nodes) is answered without reading table blocks.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        // The blob file first: it syncs what a crashed process left unsynced before
        // RocksDB's recovery can make references to those bytes durable.
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            action: "creating the database directory",
            path: path.to_path_buf(),
            source,
        })?;
        let blobs = std::sync::Arc::new(BlobFile::open(path)?);
        let db = rocksdb::DB::open(&opts, path).map_err(|e| StoreError::Db(e.into_string()))?;
        let db = std::sync::Arc::new(db);
        let wal_syncer = match durability {
            Durability::Process => Some(WalSyncer::start(db.clone(), blobs.clone())?),
            Durability::PowerLoss => None,
        };
        Ok(RocksStore {
            wal_syncer,
            db,
            blobs,
            durability,
        })
    }
}

#[cfg(feature = "rocksdb")]
impl KvStore for RocksStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get(key)
            .map_err(|e| StoreError::Db(e.into_string()))
    }

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(stored) = self.get(key)? else {
            return Ok(None);
        };
        match blobs::decode(stored) {
            Ok(Stored::Inline(value)) => Ok(Some(value)),
            Ok(Stored::File(blob)) => self.blobs.read(blob).map(Some),
            Err(why) => Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                why,
            }),
        }
    }

    fn write(&self, batch: Batch<'_>, durable: bool) -> Result<(), StoreError> {
        let power_loss = durable && self.durability == Durability::PowerLoss;
        let large: Vec<&[u8]> = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::PutBlob(_, v) if v.len() >= BLOB_FILE_MIN => Some(*v),
                _ => None,
            })
            .collect();
        // Held until the batch is written, so the syncer cannot sync the write-ahead log
        // between our append and our references.
        let mut appender = (!large.is_empty()).then(|| self.blobs.lock());
        let mut refs = Vec::new().into_iter();
        if let Some(appender) = appender.as_mut() {
            refs = appender.append(&large)?.into_iter();
            if power_loss {
                appender.sync()?;
            }
        }
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put(k, v) => wb.put(k, v),
                Op::PutBlob(k, v) if v.len() >= BLOB_FILE_MIN => match refs.next() {
                    Some(blob) => wb.put(k, blob.encode()),
                    None => return Err(StoreError::Db("blob references ran out".into())),
                },
                Op::PutBlob(k, v) => wb.put(k, blobs::encode_inline(v)),
                Op::Delete(k) => wb.delete(k),
                Op::DeletePrefix(p) => {
                    let end = prefix_end(p).unwrap_or_else(|| vec![0xff; p.len() + 64]);
                    wb.delete_range(p.as_slice(), end.as_slice())
                }
            }
        }
        // Either way the write-ahead log reaches the kernel before write_opt returns (RocksDB
        // writes it unbuffered unless manual_wal_flush is set, which it is not).
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(power_loss);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| StoreError::Db(e.into_string()))?;
        drop(appender);
        if durable {
            if let Some(syncer) = &self.wal_syncer {
                syncer
                    .unsynced
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
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

    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            start,
            rocksdb::Direction::Forward,
        ));
        for item in iter.take(limit) {
            let (k, v) = item.map_err(|e| StoreError::Db(e.into_string()))?;
            if &*k >= end {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// The first key past every key that starts with `prefix` (`None` when the prefix is all
/// 0xff bytes: nothing sorts after it but longer 0xff runs).
#[cfg(feature = "rocksdb")]
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
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

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(key)
    }

    fn write(&self, batch: Batch<'_>, _durable: bool) -> Result<(), StoreError> {
        let mut map = self.map();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => map.insert(k, v),
                Op::PutBlob(k, v) => map.insert(k, v.to_vec()),
                Op::Delete(k) => map.remove(&k),
                Op::DeletePrefix(p) => {
                    map.retain(|k, _| !k.starts_with(&p));
                    None
                }
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

    fn scan_range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Entries, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .map()
            .range(start.to_vec()..end.to_vec())
            .take(limit)
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
        let mut b = Batch::default();
        b.put(b"p/1", b"1").put(b"p/2", b"2").put(b"q", b"3");
        store.write(b, false).unwrap();
        let mut b = Batch::default();
        b.delete_prefix(b"p/").put(b"p/3", b"after");
        store.write(b, false).unwrap();
        assert_eq!(
            store.scan_prefix(b"p/").unwrap(),
            vec![(b"p/3".to_vec(), b"after".to_vec())]
        );
        assert_eq!(store.get(b"q").unwrap().as_deref(), Some(&b"3"[..]));

        // Ranges: half-open, in key order, cut at the limit.
        let mut b = Batch::default();
        for i in 0..5u8 {
            b.put(&[b'r', i], &[i]);
        }
        store.write(b, false).unwrap();
        let keys = |e: Entries| e.into_iter().map(|(k, _)| k[1]).collect::<Vec<_>>();
        assert_eq!(
            keys(store.scan_range(b"r\x01", b"r\x04", 10).unwrap()),
            [1, 2, 3]
        );
        assert_eq!(keys(store.scan_range(b"r", b"s", 2).unwrap()), [0, 1]);
        assert!(store.scan_range(b"r\x04", b"r\x01", 10).unwrap().is_empty());

        // Blobs small and large, in batches with ordinary writes, read back in any order.
        let small = vec![3u8; 100];
        let large: Vec<Vec<u8>> = (0..4u8)
            .map(|i| vec![i; 1024 + 4096 * i as usize])
            .collect();
        let mut b = Batch::default();
        b.put_blob(b"blob/s", &small).put(b"c/1", b"x");
        for (i, v) in large.iter().enumerate() {
            b.put_blob(format!("blob/{i}").as_bytes(), v);
        }
        store.write(b, true).unwrap();
        for (i, v) in large.iter().enumerate().rev() {
            let got = store.get_blob(format!("blob/{i}").as_bytes()).unwrap();
            assert_eq!(got.as_ref(), Some(v));
        }
        assert_eq!(store.get_blob(b"blob/s").unwrap(), Some(small));
        assert_eq!(store.get_blob(b"blob/none").unwrap(), None);
        assert_eq!(store.get(b"c/1").unwrap().as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn memory_and_rocks_behave_alike() {
        exercise(&MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksStore::open(dir.path(), Durability::Process).unwrap());
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksStore::open(dir.path(), Durability::PowerLoss).unwrap());
    }

    #[test]
    fn closing_a_store_releases_it_and_keeps_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3u8 {
            let store = RocksStore::open(dir.path(), Durability::Process).unwrap();
            if round > 0 {
                assert_eq!(store.get(&[round - 1]).unwrap(), Some(vec![round - 1]));
            }
            let blob = [round; 5000];
            let mut b = Batch::default();
            b.put(&[round], &[round]).put_blob(&[b'b', round], &blob);
            store.write(b, true).unwrap();
            // Let the syncer run once with something to sync, then close mid-interval.
            std::thread::sleep(WAL_SYNC_INTERVAL + WAL_SYNC_INTERVAL / 2);
            let mut b = Batch::default();
            b.put(b"last", &[round]);
            store.write(b, true).unwrap();
        }
        let store = RocksStore::open(dir.path(), Durability::Process).unwrap();
        assert_eq!(store.get(b"last").unwrap(), Some(vec![2]));
        for round in 0..3u8 {
            assert_eq!(
                store.get_blob(&[b'b', round]).unwrap(),
                Some(vec![round; 5000])
            );
        }
    }
}
