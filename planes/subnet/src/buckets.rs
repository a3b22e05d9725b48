//! How the state tree's buckets are stored: one record per bucket holding, for each key
//! in it, the leaf (path and value hash) and the key itself, with its value inline when
//! the value is small. Pure codec and merge; [`crate::state`] reads and writes the records.
//!
//! ```text
//! bucket = leaf*                      in strictly increasing path order
//! leaf   = path(32) · value hash(32) · key length(u16 BE) · key
//!          · 0                         the value is in its own record (subnet/v/<key>)
//!          | 1 · length(u32 BE) · value (compact JSON)
//! ```
//!
//! A bucket is read with one lookup and rewritten whole (a few keys: about four at a
//! million keys); small values inline make a write of a key one record instead of a value
//! record plus a bucket record, and a read of any key in a bucket already read (for the
//! tree, or for an absence) costs nothing more. (One record per key, read back with a
//! prefix scan per bucket, measured half as fast: a scan costs several lookups.)

use crate::merkle::{bucket_of, Hash, Leaf};

/// Values up to this many bytes are kept in their bucket; larger ones in their own record.
pub const INLINE_MAX: usize = 512;

/// One key of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLeaf {
    /// `BLAKE2b-256(key)`.
    pub path: Hash,
    /// `BLAKE2b-256(value bytes)`.
    pub value_hash: Hash,
    /// The state key.
    pub key: Box<str>,
    /// The value's bytes when kept inline.
    pub inline: Option<Box<[u8]>>,
}

impl StoredLeaf {
    /// What the tree commits to.
    pub fn leaf(&self) -> Leaf {
        (self.path, self.value_hash)
    }
}

/// A change to one key: its path, and its new value's hash and bytes (`None` deletes).
#[derive(Debug, Clone)]
pub struct KeyChange<'a> {
    /// The state key.
    pub key: &'a str,
    /// Its path.
    pub path: Hash,
    /// The new value's hash and bytes, or `None` to delete.
    pub value: Option<(Hash, &'a [u8])>,
}

/// What merging changes into a bucket asks of the value records.
#[derive(Debug, Default)]
pub struct RecordWrites<'a> {
    /// Keys whose value now lives in its own record: (key, bytes).
    pub put: Vec<(&'a str, &'a [u8])>,
    /// Keys whose own record goes away (deleted, or now inline).
    pub delete: Vec<String>,
}

/// Whether a key's value of `len` bytes is kept inline. Membership keys (`subnet/...`)
/// always have their own record: the peer loads them all on start.
pub fn inlined(key: &str, len: usize) -> bool {
    !key.starts_with("subnet/") && len <= INLINE_MAX
}

/// Merges `changes` (sorted by path, distinct, all in this bucket) into `leaves`.
pub fn merge<'a>(
    leaves: &[StoredLeaf],
    changes: &[KeyChange<'a>],
    records: &mut RecordWrites<'a>,
) -> Vec<StoredLeaf> {
    let mut out = Vec::with_capacity(leaves.len() + changes.len());
    let mut old = leaves.iter().peekable();
    for change in changes {
        while let Some(l) = old.next_if(|l| l.path < change.path) {
            out.push(l.clone());
        }
        let previous = old.next_if(|l| l.path == change.path);
        let was_external = previous.is_some_and(|l| l.inline.is_none());
        match change.value {
            Some((value_hash, bytes)) => {
                let inline = inlined(change.key, bytes.len());
                if inline {
                    if was_external {
                        records.delete.push(change.key.to_owned());
                    }
                } else {
                    records.put.push((change.key, bytes));
                }
                out.push(StoredLeaf {
                    path: change.path,
                    value_hash,
                    key: change.key.into(),
                    inline: inline.then(|| bytes.into()),
                });
            }
            None => {
                if was_external {
                    records.delete.push(change.key.to_owned());
                }
            }
        }
    }
    out.extend(old.cloned());
    out
}

/// A bucket's stored form.
pub fn encode(leaves: &[StoredLeaf]) -> Vec<u8> {
    let size: usize = leaves
        .iter()
        .map(|l| 67 + l.key.len() + l.inline.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    let mut out = Vec::with_capacity(size);
    for l in leaves {
        out.extend_from_slice(&l.path);
        out.extend_from_slice(&l.value_hash);
        out.extend_from_slice(&(l.key.len() as u16).to_be_bytes());
        out.extend_from_slice(l.key.as_bytes());
        match &l.inline {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// Parses [`encode`]'s output; `None` unless it is whole leaves of bucket `bucket` in
/// strictly increasing path order.
pub fn decode(bucket: u32, mut bytes: &[u8]) -> Option<Vec<StoredLeaf>> {
    let mut out: Vec<StoredLeaf> = Vec::new();
    while !bytes.is_empty() {
        let (path, rest) = bytes.split_first_chunk::<32>()?;
        let (value_hash, rest) = rest.split_first_chunk::<32>()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let (key, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
        let key = std::str::from_utf8(key).ok()?;
        let (&flag, rest) = rest.split_first()?;
        let (inline, rest) = match flag {
            0 => (None, rest),
            1 => {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let (value, rest) = rest.split_at_checked(u32::from_be_bytes(*len) as usize)?;
                (Some(value.into()), rest)
            }
            _ => return None,
        };
        if bucket_of(path) != bucket || out.last().is_some_and(|l| l.path >= *path) {
            return None;
        }
        out.push(StoredLeaf {
            path: *path,
            value_hash: *value_hash,
            key: key.into(),
            inline,
        });
        bytes = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{key_path, value_hash};

    fn change<'a>(key: &'a str, value: Option<&'a [u8]>) -> KeyChange<'a> {
        KeyChange {
            key,
            path: key_path(key.as_bytes()),
            value: value.map(|v| (value_hash(v), v)),
        }
    }

    #[test]
    fn small_values_live_inline_and_large_ones_in_their_own_record() {
        let big = vec![b'x'; INLINE_MAX + 1];
        let mut changes = [
            change("app/small", Some(b"1")),
            change("app/big", Some(&big)),
            change("subnet/admin", Some(b"\"k\"")),
        ];
        changes.sort_by_key(|c| c.path);
        let mut records = RecordWrites::default();
        let leaves = merge(&[], &changes, &mut records);
        let mut put: Vec<&str> = records.put.iter().map(|(k, _)| *k).collect();
        put.sort();
        assert_eq!(put, ["app/big", "subnet/admin"]);
        assert!(leaves
            .iter()
            .any(|l| &*l.key == "app/small" && l.inline.as_deref() == Some(&b"1"[..])));
        // The big value shrinks (inline now: its record goes), the small one is deleted.
        let mut changes = [change("app/big", Some(b"2")), change("app/small", None)];
        changes.sort_by_key(|c| c.path);
        let mut records = RecordWrites::default();
        let after = merge(&leaves, &changes, &mut records);
        assert_eq!(records.delete, ["app/big"]);
        assert!(records.put.is_empty());
        assert_eq!(after.len(), 2);
        assert!(!after.iter().any(|l| &*l.key == "app/small"));
    }

    #[test]
    fn buckets_round_trip_and_bad_bytes_are_refused() {
        // Three keys that land in one bucket (found among a few thousand).
        let mut by_bucket = std::collections::HashMap::<u32, Vec<String>>::new();
        let keys = (0..20_000)
            .map(|n| format!("app/k{n}"))
            .find_map(|k| {
                let found = by_bucket
                    .entry(bucket_of(&key_path(k.as_bytes())))
                    .or_default();
                found.push(k);
                (found.len() == 3).then(|| found.clone())
            })
            .expect("a bucket with three keys");
        let b = bucket_of(&key_path(keys[0].as_bytes()));
        let big = [b'y'; 600];
        let mut changes: Vec<KeyChange<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| change(k, Some(if i == 1 { &big[..] } else { b"{\"a\":1}" })))
            .collect();
        changes.sort_by_key(|c| c.path);
        let leaves = merge(&[], &changes, &mut RecordWrites::default());
        assert_eq!(leaves.iter().filter(|l| l.inline.is_none()).count(), 1);
        let bytes = encode(&leaves);
        assert_eq!(decode(b, &bytes), Some(leaves.clone()));
        assert_eq!(decode(b ^ 1, &bytes), None, "another bucket's leaves");
        let whole: Vec<usize> = leaves
            .iter()
            .scan(0, |n, l| {
                *n += encode(std::slice::from_ref(l)).len();
                Some(*n)
            })
            .collect();
        for cut in 1..bytes.len() {
            assert_eq!(
                decode(b, &bytes[..cut]).is_some(),
                whole.contains(&cut),
                "cut at {cut}"
            );
        }
        let mut reversed = leaves.clone();
        reversed.reverse();
        assert_eq!(decode(b, &encode(&reversed)), None);
    }
}
