//! The append-only file beside a [`RocksStore`](crate::RocksStore)'s database that holds
//! its large write-once values (log blocks of [`BLOB_FILE_MIN`] bytes and more).
//!
//! Putting a 4 KB block into RocksDB copies it into the write-ahead log, the memtable and,
//! at every flush, a blob or table file; here it is written once, and RocksDB keeps a
//! 13-byte reference to it in the same atomic batch as the rest of the write:
//!
//! ```text
//!   value < BLOB_FILE_MIN    0x00 value                       (inline, in RocksDB)
//!   value >= BLOB_FILE_MIN   0x01 offset u64 LE, length u32 LE (bytes in this file)
//! ```
//!
//! Crash safety rests on ordering. The bytes reach the kernel (and, for
//! [`Durability::PowerLoss`](crate::Durability::PowerLoss), the disk) before the batch
//! that references them is written, so a reference never points at bytes a crash could
//! lose; bytes whose batch never made it are unreferenced garbage at the end of the file.
//! The background syncer of `Durability::Process` syncs this file before the write-ahead
//! log while holding the writer lock, so a synced log never references unsynced bytes.
//! Blocks are never rewritten or deleted, so the file only grows; disk space is reserved
//! ahead of it in [`PREALLOCATE`] steps.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::StoreError;

/// Values of at least this many bytes go to the blob file; smaller ones stay inline.
pub const BLOB_FILE_MIN: usize = 1024;
/// The file's name inside the database directory (RocksDB ignores files it does not own).
const FILE_NAME: &str = "intercom-blobs";

/// Disk space reserved past the end of the file at a time (as RocksDB does for its
/// write-ahead log): appends into reserved space do not wait for the block allocation of
/// a concurrent sync of the same file (ext4 serialises both on the inode's block map),
/// which halved the throughput of batched appends right after a run of single ones.
const PREALLOCATE: u64 = 8 << 20;
/// Unsynced bytes the syncer leaves for its sync under the writer lock.
const UNLOCKED_SYNC_SLACK: u64 = 256 * 1024;
/// Syncs without the lock per background sync, at most.
const UNLOCKED_SYNC_ROUNDS: usize = 3;

const TAG_INLINE: u8 = 0;
const TAG_FILE: u8 = 1;
const REFERENCE_LEN: usize = 13;

/// Where a value lives in the blob file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobRef {
    offset: u64,
    len: u32,
}

/// The stored form of a small value.
pub(crate) fn encode_inline(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.len());
    out.push(TAG_INLINE);
    out.extend_from_slice(value);
    out
}

impl BlobRef {
    /// The stored form of a reference.
    pub(crate) fn encode(self) -> [u8; REFERENCE_LEN] {
        let mut out = [0u8; REFERENCE_LEN];
        out[0] = TAG_FILE;
        out[1..9].copy_from_slice(&self.offset.to_le_bytes());
        out[9..].copy_from_slice(&self.len.to_le_bytes());
        out
    }
}

/// What a stored blob record says.
pub(crate) enum Stored {
    Inline(Vec<u8>),
    File(BlobRef),
}

/// Decodes a stored blob record; `why` for a record that is neither form.
pub(crate) fn decode(mut stored: Vec<u8>) -> Result<Stored, String> {
    match stored.first() {
        Some(&TAG_INLINE) => {
            stored.remove(0);
            Ok(Stored::Inline(stored))
        }
        Some(&TAG_FILE) if stored.len() == REFERENCE_LEN => {
            let mut offset = [0u8; 8];
            offset.copy_from_slice(&stored[1..9]);
            let mut len = [0u8; 4];
            len.copy_from_slice(&stored[9..]);
            Ok(Stored::File(BlobRef {
                offset: u64::from_le_bytes(offset),
                len: u32::from_le_bytes(len),
            }))
        }
        Some(tag) => Err(format!(
            "not a blob record (tag {tag}, {} bytes)",
            stored.len()
        )),
        None => Err("empty blob record".into()),
    }
}

/// The blob file of one store.
pub(crate) struct BlobFile {
    path: PathBuf,
    /// Positioned reads and the syncer's first syncs, so neither waits for the writer.
    reader: File,
    writer: Mutex<Appender>,
}

/// The writing end: whoever holds it may append, and sync before referencing.
pub(crate) struct Appender {
    file: File,
    path: PathBuf,
    len: u64,
    synced: u64,
    /// The end of the disk space reserved so far; `None` once the filesystem said it
    /// cannot reserve.
    reserved: Option<u64>,
}

impl BlobFile {
    /// Opens (or creates) the blob file in the database directory `dir`.
    pub(crate) fn open(dir: &Path) -> Result<BlobFile, StoreError> {
        let path = dir.join(FILE_NAME);
        let io_error = |action, source| StoreError::Io {
            action,
            path: path.clone(),
            source,
        };
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_error("opening the blob file", e))?;
        if created {
            // The new file's directory entry must survive a power cut as well.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("syncing the directory of the blob file", e))?;
        }
        // Bytes a crashed process left unsynced may be referenced by write-ahead log
        // records that RocksDB's recovery makes durable: sync them before anything else.
        file.sync_data()
            .map_err(|e| io_error("syncing the blob file", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("reading the size of the blob file", e))?
            .len();
        let reader = file
            .try_clone()
            .map_err(|e| io_error("opening the blob file for reading", e))?;
        Ok(BlobFile {
            writer: Mutex::new(Appender {
                file,
                path: path.clone(),
                len,
                synced: len,
                reserved: Some(len),
            }),
            path,
            reader,
        })
    }

    /// The writer; held from appending until the referencing batch is written.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Appender> {
        // Every field of the appender is consistent between calls, so a poisoned lock
        // (a panic elsewhere while holding it) is still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Syncs the file without stopping appends, again while appends made during the
    /// last sync exceed [`UNLOCKED_SYNC_SLACK`] (at most [`UNLOCKED_SYNC_ROUNDS`] times),
    /// so that the sync under the lock ([`Appender::sync`]) has little left to do.
    pub(crate) fn sync_most(&self) -> Result<(), StoreError> {
        for _ in 0..UNLOCKED_SYNC_ROUNDS {
            let before = self.lock().len;
            self.reader.sync_data().map_err(|source| StoreError::Io {
                action: "syncing",
                path: self.path.clone(),
                source,
            })?;
            let mut appender = self.lock();
            appender.synced = appender.synced.max(before);
            if appender.len - before <= UNLOCKED_SYNC_SLACK {
                break;
            }
        }
        Ok(())
    }

    /// Reads the value `blob` points at.
    pub(crate) fn read(&self, blob: BlobRef) -> Result<Vec<u8>, StoreError> {
        let mut value = vec![0u8; blob.len as usize];
        self.reader
            .read_exact_at(&mut value, blob.offset)
            .map_err(|source| StoreError::Io {
                action: if source.kind() == io::ErrorKind::UnexpectedEof {
                    "reading a blob past the end (the file is shorter than its references) of"
                } else {
                    "reading a blob from"
                },
                path: self.path.clone(),
                source,
            })?;
        Ok(value)
    }
}

impl Appender {
    /// Appends `values` in one go and returns where each one went.
    pub(crate) fn append(&mut self, values: &[&[u8]]) -> Result<Vec<BlobRef>, StoreError> {
        let mut refs = Vec::with_capacity(values.len());
        let mut offset = self.len;
        for value in values {
            let len = u32::try_from(value.len()).map_err(|_| StoreError::Io {
                action: "storing a value of 4 GiB or more in",
                path: self.path.clone(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            })?;
            refs.push(BlobRef { offset, len });
            offset += u64::from(len);
        }
        self.reserve(offset);
        let mut slices: Vec<IoSlice<'_>> = values.iter().map(|v| IoSlice::new(v)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.file.write_vectored(rest) {
                Ok(0) => {
                    return Err(
                        self.error("appending to", io::Error::from(io::ErrorKind::WriteZero))
                    )
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Part of the values may be in the file: keep counting from its real
                    // end so later references stay right.
                    if let Ok(meta) = self.file.metadata() {
                        self.len = meta.len();
                    }
                    return Err(self.error("appending to", e));
                }
            }
        }
        self.len = offset;
        Ok(refs)
    }

    /// Reserves disk space up to at least `end` (and [`PREALLOCATE`] past the current end)
    /// without changing the file's size. Only an optimisation: a filesystem that cannot
    /// reserve is not asked again.
    fn reserve(&mut self, end: u64) {
        let Some(reserved) = self.reserved else {
            return;
        };
        if end <= reserved {
            return;
        }
        let size = (end - self.len).max(PREALLOCATE);
        let (Ok(offset), Ok(length)) = (i64::try_from(self.len), i64::try_from(size)) else {
            return;
        };
        // SAFETY: fallocate only reads its integer arguments; the descriptor is open for
        // writing and owned by `self.file` for the whole call.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                offset,
                length,
            )
        };
        if rc == 0 {
            self.reserved = Some(self.len + size);
        } else {
            let e = io::Error::last_os_error();
            tracing::debug!(path = %self.path.display(), error = %e, "cannot reserve space for the blob file");
            self.reserved = None;
        }
    }

    /// Syncs whatever was appended since the last sync.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if self.synced == self.len {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| self.error("syncing", e))?;
        self.synced = self.len;
        Ok(())
    }

    fn error(&self, action: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_strangers_are_refused() {
        match decode(encode_inline(b"small")).unwrap() {
            Stored::Inline(v) => assert_eq!(v, b"small"),
            Stored::File(_) => panic!("inline record read as a reference"),
        }
        let blob = BlobRef {
            offset: 1 << 40,
            len: 4096,
        };
        match decode(blob.encode().to_vec()).unwrap() {
            Stored::File(r) => assert_eq!(r, blob),
            Stored::Inline(_) => panic!("reference read as inline"),
        }
        assert!(decode(Vec::new()).is_err());
        assert!(decode(vec![TAG_FILE, 1, 2]).is_err());
        assert!(decode(vec![7; 20]).is_err());
    }

    #[test]
    fn appended_values_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; 1024 + (i as usize % 7) * 333])
            .collect();
        let slices: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let refs = {
            let file = BlobFile::open(dir.path()).unwrap();
            let mut appender = file.lock();
            let mut refs = appender.append(&slices[..1500]).unwrap();
            refs.extend(appender.append(&slices[1500..]).unwrap());
            appender.sync().unwrap();
            refs
        };
        // Reserved space is not part of the file: reopening appends right after the data.
        let total: usize = values.iter().map(Vec::len).sum();
        let size = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert_eq!(size, total as u64);
        let file = BlobFile::open(dir.path()).unwrap();
        assert_eq!(file.lock().len, size);
        for (value, blob) in values.iter().zip(&refs) {
            assert_eq!(&file.read(*blob).unwrap(), value);
        }
        let past_end = BlobRef {
            offset: refs[2999].offset,
            len: refs[2999].len + 1,
        };
        let err = file.read(past_end).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
    }
}
