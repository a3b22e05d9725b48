//! Subnet state as key → JSON value: the key namespaces (membership under `subnet/`, the
//! contract's keys under `app/`), and [`StateStore`], the confirmed state in the peer store
//! with its Merkle root.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use intercom_contracts::{StateRead, StateWrite, Value};
use intercom_stores::{Batch, KvStore, StoreError};

use crate::buckets::{self, KeyChange, RecordWrites, StoredLeaf};
use crate::merkle::{self, Hash, Leaf, Proof, Summary, TopTree};

/// Prefix of the contract's keys inside the subnet state.
pub const APP_PREFIX: &str = "app/";

/// The contract's view: its own keys, stored under [`APP_PREFIX`].
pub struct AppState<'a, S: ?Sized> {
    inner: &'a mut S,
}

impl<'a, S: StateWrite + ?Sized> AppState<'a, S> {
    /// Wraps the subnet state for the contract.
    pub fn new(inner: &'a mut S) -> Self {
        AppState { inner }
    }
}

impl<S: StateWrite + ?Sized> StateRead for AppState<'_, S> {
    fn get(&self, key: &str) -> Option<Value> {
        self.inner.get(&format!("{APP_PREFIX}{key}"))
    }
}

impl<S: StateWrite + ?Sized> StateWrite for AppState<'_, S> {
    fn put(&mut self, key: &str, value: Value) {
        self.inner.put(&format!("{APP_PREFIX}{key}"), value);
    }
    fn delete(&mut self, key: &str) {
        self.inner.delete(&format!("{APP_PREFIX}{key}"));
    }
}

/// Read-only view of the contract's keys.
pub struct AppView<'a> {
    inner: &'a dyn StateRead,
}

impl<'a> AppView<'a> {
    /// Wraps a read-only subnet state.
    pub fn new(inner: &'a dyn StateRead) -> Self {
        AppView { inner }
    }
}

impl StateRead for AppView<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        self.inner.get(&format!("{APP_PREFIX}{key}"))
    }
}

/// The bytes a value is stored and hashed as.
pub fn value_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// KV prefix of the state values (`subnet/v/<state key>` → compact JSON).
pub const VALUE_PREFIX: &str = "subnet/v/";
/// KV prefix of the state tree's buckets (`subnet/b/<bucket u32 BE>` → its keys, see
/// [`crate::buckets`]).
const BUCKET_PREFIX: &[u8] = b"subnet/b/";
/// KV prefix of the buckets' summaries (`subnet/h/<bucket u32 BE>` → count and hash).
const SUMMARY_PREFIX: &[u8] = b"subnet/h/";
/// Prefix of the membership namespace, which is kept in memory too.
const MEMBERSHIP: &str = "subnet/";
/// Buckets kept in memory between reads (about 1 KB each at a million keys); the cache
/// starts over when it is full.
const BUCKET_CACHE: usize = 4096;
/// Values kept in memory between reads (absences included); starts over when full.
const VALUE_CACHE: usize = 8192;

/// The confirmed subnet state, stored in the peer store under a sparse Merkle tree
/// ([`crate::merkle`]) whose root commits to the whole state: the tree's buckets (holding
/// the keys, and their values when small) and their summaries in the store, its upper
/// levels in memory; larger values and the membership namespace `subnet/` in records of
/// their own (`subnet/v/<key>`). The membership namespace, small and read by every entry,
/// is also held in memory. A commit writes the changed buckets, summaries and records in
/// one atomic batch with whatever the caller adds.
pub struct StateStore {
    kv: Arc<dyn KvStore>,
    membership: BTreeMap<String, Value>,
    top: TopTree,
    /// Recently read or written buckets: a read of a key first looks at its bucket, which
    /// answers "absent" for a key the tree does not hold, and a commit rewrites them.
    buckets: RefCell<HashMap<u32, Arc<Vec<StoredLeaf>>>>,
    /// Recently read or written values of keys the tree holds.
    values: RefCell<HashMap<String, Option<Value>>>,
    /// The first read failure since [`StateStore::take_error`]; reads that fail answer
    /// "absent", so whoever applied over them must not commit.
    error: RefCell<Option<StoreError>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("root", &hex::encode(self.root()))
            .finish_non_exhaustive()
    }
}

/// A value read with its proof against the root it was read under.
#[derive(Debug, Clone)]
pub struct ProvedValue {
    /// The value, if the key has one.
    pub value: Option<Value>,
    /// The stored bytes of the value (what the proof commits to).
    pub bytes: Option<Vec<u8>>,
    /// The proof.
    pub proof: Proof,
    /// The root.
    pub root: Hash,
}

impl StateStore {
    /// Opens the state kept in `kv`.
    pub fn open(kv: Arc<dyn KvStore>) -> Result<StateStore, StoreError> {
        let prefix = format!("{VALUE_PREFIX}{MEMBERSHIP}");
        let mut membership = BTreeMap::new();
        for (k, v) in kv.scan_prefix(prefix.as_bytes())? {
            let key = String::from_utf8_lossy(&k[VALUE_PREFIX.len()..]).into_owned();
            let value: Value = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                why: e.to_string(),
            })?;
            membership.insert(key, value);
        }
        let mut summaries = Vec::new();
        for (k, v) in kv.scan_prefix(SUMMARY_PREFIX)? {
            let bucket = k[SUMMARY_PREFIX.len()..]
                .try_into()
                .ok()
                .map(u32::from_be_bytes);
            match (bucket, Summary::decode(&v)) {
                (Some(b), Some(s)) => summaries.push((b, s)),
                _ => {
                    return Err(StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        why: "not a state tree summary".into(),
                    })
                }
            }
        }
        Ok(StateStore {
            kv,
            membership,
            top: TopTree::load(summaries),
            buckets: RefCell::new(HashMap::new()),
            values: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        })
    }

    /// Deletes the whole state from `batch`'s store (values and tree).
    pub fn clear(batch: &mut Batch<'_>) {
        batch.delete_prefix(VALUE_PREFIX.as_bytes());
        batch.delete_prefix(BUCKET_PREFIX);
        batch.delete_prefix(SUMMARY_PREFIX);
    }

    /// The root of the state.
    pub fn root(&self) -> Hash {
        self.top.root()
    }

    /// A bucket's keys (from the cache, or the store).
    fn bucket(&self, b: u32) -> Result<Arc<Vec<StoredLeaf>>, StoreError> {
        if let Some(leaves) = self.buckets.borrow().get(&b) {
            return Ok(leaves.clone());
        }
        let key = bucket_key(b);
        let leaves = Arc::new(match self.kv.get(&key)? {
            None => Vec::new(),
            Some(bytes) => buckets::decode(b, &bytes).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                why: "not a state tree bucket".into(),
            })?,
        });
        self.cache_bucket(b, leaves.clone());
        Ok(leaves)
    }

    /// The leaf of `key`, if the state holds it.
    fn leaf(&self, key: &str) -> Result<Option<StoredLeaf>, StoreError> {
        let path = merkle::key_path(key.as_bytes());
        let leaves = self.bucket(merkle::bucket_of(&path))?;
        Ok(leaves
            .binary_search_by(|l| l.path.cmp(&path))
            .ok()
            .map(|at| leaves[at].clone()))
    }

    fn cache_bucket(&self, b: u32, leaves: Arc<Vec<StoredLeaf>>) {
        let mut cache = self.buckets.borrow_mut();
        if cache.len() >= BUCKET_CACHE {
            cache.clear();
        }
        cache.insert(b, leaves);
    }

    fn cache_value(&self, key: &str, value: Option<Value>) {
        let mut cache = self.values.borrow_mut();
        if cache.len() >= VALUE_CACHE {
            cache.clear();
        }
        cache.insert(key.to_owned(), value);
    }

    /// The stored bytes of `key`'s value: inline in its leaf, or in its own record.
    fn value_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.leaf(key)? {
            None => Ok(None),
            Some(StoredLeaf {
                inline: Some(bytes),
                ..
            }) => Ok(Some(bytes.into_vec())),
            Some(_) => self.kv.get(format!("{VALUE_PREFIX}{key}").as_bytes()),
        }
    }

    /// A contract key's value, from the cache or the store.
    fn read_value(&self, key: &str) -> Result<Option<Value>, StoreError> {
        if let Some(v) = self.values.borrow().get(key) {
            return Ok(v.clone());
        }
        let value = match self.value_bytes(key)? {
            Some(bytes) => Some(parse(key, &bytes)?),
            None => None,
        };
        self.cache_value(key, value.clone());
        Ok(value)
    }

    /// The new keys and summary of every bucket `changes` touch, and what they ask of
    /// the value records.
    #[allow(clippy::type_complexity)]
    fn updated_buckets<'a>(
        &self,
        changes: &'a [Change<'a>],
    ) -> Result<
        (
            BTreeMap<u32, (Arc<Vec<StoredLeaf>>, Summary)>,
            RecordWrites<'a>,
        ),
        StoreError,
    > {
        let mut by_bucket: BTreeMap<u32, Vec<KeyChange<'a>>> = BTreeMap::new();
        for c in changes {
            by_bucket
                .entry(merkle::bucket_of(&c.path))
                .or_default()
                .push(KeyChange {
                    key: c.key,
                    path: c.path,
                    value: c.hash.zip(c.bytes.as_deref()),
                });
        }
        let mut records = RecordWrites::default();
        let mut out = BTreeMap::new();
        for (b, mut ch) in by_bucket {
            ch.sort_unstable_by_key(|c| c.path);
            let leaves = buckets::merge(&self.bucket(b)?, &ch, &mut records);
            let projected: Vec<Leaf> = leaves.iter().map(StoredLeaf::leaf).collect();
            let summary = merkle::subtree(merkle::BUCKET_DEPTH, &projected);
            out.insert(b, (Arc::new(leaves), summary));
        }
        Ok((out, records))
    }

    /// The first read failure since the last call, if any.
    pub fn take_error(&self) -> Option<StoreError> {
        self.error.borrow_mut().take()
    }

    fn failed(&self, e: StoreError) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            tracing::error!(error = %e, "reading the subnet state failed");
            *slot = Some(e);
        }
    }

    /// The membership namespace (`subnet/...` keys), in key order.
    pub fn membership(&self) -> &BTreeMap<String, Value> {
        &self.membership
    }

    /// The root the state would have with `writes` laid over it (nothing is stored).
    pub fn root_with(&self, writes: &BTreeMap<String, Option<Value>>) -> Result<Hash, StoreError> {
        let changes = tree_changes(writes);
        let (buckets, _) = self.updated_buckets(&changes)?;
        let summaries = buckets.into_iter().map(|(b, (_, s))| (b, s)).collect();
        Ok(self.top.root_with(&summaries))
    }

    /// Writes `writes` (`None` deletes) and the tree buckets they change, together with
    /// `extra`, in one atomic write; returns the new root. Nothing changes in memory if the
    /// write fails.
    pub fn commit(
        &mut self,
        writes: &BTreeMap<String, Option<Value>>,
        mut extra: Batch<'_>,
    ) -> Result<Hash, StoreError> {
        let changes = tree_changes(writes);
        let (buckets, records) = self.updated_buckets(&changes)?;
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        for (key, bytes) in records.put {
            extra.put(format!("{VALUE_PREFIX}{key}").as_bytes(), bytes);
        }
        for key in records.delete {
            extra.delete(format!("{VALUE_PREFIX}{key}").as_bytes());
        }
        let mut summaries = BTreeMap::new();
        let mut previous = BTreeMap::new();
        for (b, (leaves, summary)) in &buckets {
            if leaves.is_empty() {
                extra.delete(&bucket_key(*b));
                extra.delete(&summary_key(*b));
            } else {
                extra.put_owned(bucket_key(*b), buckets::encode(leaves));
                extra.put_owned(summary_key(*b), summary.encode().to_vec());
            }
            summaries.insert(*b, *summary);
            previous.insert(*b, self.top.bucket(*b));
        }
        self.top.set_buckets(&summaries);
        if let Err(e) = self.kv.write(extra, false) {
            self.top.set_buckets(&previous);
            return Err(e);
        }
        for (b, (leaves, _)) in buckets {
            self.cache_bucket(b, leaves);
        }
        for (key, value) in writes {
            if !key.starts_with(MEMBERSHIP) {
                self.cache_value(key, value.clone());
            }
        }
        for (key, value) in writes {
            if key.starts_with(MEMBERSHIP) {
                match value {
                    Some(v) => self.membership.insert(key.clone(), v.clone()),
                    None => self.membership.remove(key),
                };
            }
        }
        Ok(self.top.root())
    }

    /// `key`'s value with a proof against the current root.
    pub fn prove(&self, key: &str) -> Result<ProvedValue, StoreError> {
        let bytes = self.value_bytes(key)?;
        let value = match &bytes {
            Some(b) => Some(parse(key, b)?),
            None => None,
        };
        let proof = merkle::prove(&self.top, &merkle::key_path(key.as_bytes()), |b| {
            self.bucket(b)
                .map(|leaves| leaves.iter().map(StoredLeaf::leaf).collect())
        })?;
        Ok(ProvedValue {
            value,
            bytes,
            proof,
            root: self.root(),
        })
    }

    /// Every key and value, in key order (for tests and tools; reads the whole state).
    pub fn entries(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.kv.scan_prefix(BUCKET_PREFIX)? {
            let b = k[BUCKET_PREFIX.len()..]
                .try_into()
                .ok()
                .map(u32::from_be_bytes);
            let leaves =
                b.and_then(|b| buckets::decode(b, &v))
                    .ok_or_else(|| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        why: "not a state tree bucket".into(),
                    })?;
            for leaf in leaves {
                let bytes = match &leaf.inline {
                    Some(bytes) => Some(bytes.to_vec()),
                    None => self
                        .kv
                        .get(format!("{VALUE_PREFIX}{}", leaf.key).as_bytes())?,
                };
                if let Some(bytes) = bytes {
                    out.insert(leaf.key.to_string(), parse(&leaf.key, &bytes)?);
                }
            }
        }
        Ok(out)
    }
}

/// Parses a stored value.
fn parse(key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        why: e.to_string(),
    })
}

impl ProvedValue {
    /// The JSON a `/get --proof 1` answers with, for the contract key `key` (stored
    /// under `state_key`): the value, its exact stored JSON (what the proof commits to),
    /// the root and the proof. [`verify_proof_json`] checks it.
    pub fn to_json(&self, key: &str, state_key: &str) -> Value {
        serde_json::json!({
            "key": key,
            "stateKey": state_key,
            "value": self.value.clone().unwrap_or(Value::Null),
            "valueJson": self.bytes.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            "stateRoot": hex::encode(self.root),
            "proof": self.proof.to_json(),
        })
    }
}

/// What a checked proof shows.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedProof {
    /// The full state key.
    pub state_key: String,
    /// Its value, or `None` for a proven absence.
    pub value: Option<Value>,
    /// The root it was proven under.
    pub root: Hash,
}

/// Checks a proof in the JSON form of [`ProvedValue::to_json`]: the proof must lead from
/// the stated value (or absence) of `stateKey` to `stateRoot`, and `stateRoot` must equal
/// `expected_root` when one is given (the root a light client trusts).
pub fn verify_proof_json(v: &Value, expected_root: Option<&Hash>) -> Result<VerifiedProof, String> {
    let state_key = v
        .get("stateKey")
        .and_then(Value::as_str)
        .ok_or("the proof has no stateKey")?;
    let root: Hash = v
        .get("stateRoot")
        .and_then(Value::as_str)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or("the proof has no stateRoot of 64 hex characters")?;
    if let Some(expected) = expected_root {
        if *expected != root {
            return Err(format!(
                "the proof is for root {}, not the trusted root {}",
                hex::encode(root),
                hex::encode(expected)
            ));
        }
    }
    let proof = v
        .get("proof")
        .and_then(Proof::from_json)
        .ok_or("the proof's siblings and leaf are malformed")?;
    let stored = match v.get("valueJson") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("valueJson must be a string or null".into()),
    };
    let value = match stored {
        Some(s) => {
            let parsed: Value =
                serde_json::from_str(s).map_err(|e| format!("valueJson is not JSON: {e}"))?;
            if v.get("value").is_some_and(|shown| *shown != parsed) {
                return Err("value and valueJson differ".into());
            }
            Some(parsed)
        }
        None => None,
    };
    merkle::verify(
        &root,
        state_key.as_bytes(),
        stored.map(str::as_bytes),
        &proof,
    )
    .map_err(|e| e.to_string())?;
    Ok(VerifiedProof {
        state_key: state_key.to_owned(),
        value,
        root,
    })
}

/// One changed key: its tree path, its new value's hash and stored bytes (`None`
/// deletes).
struct Change<'a> {
    key: &'a str,
    path: Hash,
    hash: Option<Hash>,
    bytes: Option<Vec<u8>>,
}

fn tree_changes(writes: &BTreeMap<String, Option<Value>>) -> Vec<Change<'_>> {
    writes
        .iter()
        .map(|(k, v)| {
            let bytes = v.as_ref().map(value_bytes);
            Change {
                key: k,
                path: merkle::key_path(k.as_bytes()),
                hash: bytes.as_deref().map(merkle::value_hash),
                bytes,
            }
        })
        .collect()
}

fn bucket_key(b: u32) -> Vec<u8> {
    let mut key = BUCKET_PREFIX.to_vec();
    key.extend_from_slice(&b.to_be_bytes());
    key
}

fn summary_key(b: u32) -> Vec<u8> {
    let mut key = SUMMARY_PREFIX.to_vec();
    key.extend_from_slice(&b.to_be_bytes());
    key
}

impl StateRead for StateStore {
    fn get(&self, key: &str) -> Option<Value> {
        if key.starts_with(MEMBERSHIP) {
            return self.membership.get(key).cloned();
        }
        match self.read_value(key) {
            Ok(v) => v,
            Err(e) => {
                self.failed(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intercom_contracts::StagedState;
    use intercom_stores::MemoryStore;
    use serde_json::json;

    fn writes(pairs: &[(&str, Option<Value>)]) -> BTreeMap<String, Option<Value>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn the_root_depends_on_every_key_and_value_but_not_on_write_order() {
        let open = || StateStore::open(Arc::new(MemoryStore::default())).unwrap();
        let mut a = open();
        a.commit(&writes(&[("x", Some(json!(1)))]), Batch::default())
            .unwrap();
        a.commit(&writes(&[("y", Some(json!("two")))]), Batch::default())
            .unwrap();
        let mut b = open();
        b.commit(
            &writes(&[("y", Some(json!("two"))), ("x", Some(json!(1)))]),
            Batch::default(),
        )
        .unwrap();
        assert_eq!(a.root(), b.root());
        assert_ne!(a.root(), crate::merkle::EMPTY);
        b.commit(&writes(&[("x", Some(json!(2)))]), Batch::default())
            .unwrap();
        assert_ne!(a.root(), b.root());
        let mut c = open();
        c.commit(&writes(&[("xy", Some(json!(1)))]), Batch::default())
            .unwrap();
        let mut d = open();
        d.commit(&writes(&[("x", Some(json!("y1")))]), Batch::default())
            .unwrap();
        assert_ne!(c.root(), d.root());
        // Deleting every key gives the empty root back.
        a.commit(&writes(&[("x", None), ("y", None)]), Batch::default())
            .unwrap();
        assert_eq!(a.root(), crate::merkle::EMPTY);
        assert!(a.entries().unwrap().is_empty());
    }

    #[test]
    fn a_reopened_store_has_the_same_root_membership_and_values() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
        let mut s = StateStore::open(kv.clone()).unwrap();
        let w = writes(&[
            ("subnet/admin", Some(json!("ab"))),
            ("app/k", Some(json!({"b": 1, "a": [1, 2]}))),
        ]);
        let tentative = s.root_with(&w).unwrap();
        let root = s.commit(&w, Batch::default()).unwrap();
        assert_eq!(tentative, root);
        let again = StateStore::open(kv).unwrap();
        assert_eq!(again.root(), root);
        assert_eq!(again.get("subnet/admin"), Some(json!("ab")));
        assert_eq!(again.membership().len(), 1);
        assert_eq!(again.get("app/k"), Some(json!({"b": 1, "a": [1, 2]})));
        let proved = again.prove("app/k").unwrap();
        let v = proved.to_json("k", "app/k");
        let checked = verify_proof_json(&v, Some(&root)).unwrap();
        assert_eq!(checked.value, Some(json!({"b": 1, "a": [1, 2]})));
        let absent = again.prove("app/none").unwrap().to_json("none", "app/none");
        assert_eq!(verify_proof_json(&absent, None).unwrap().value, None);
        assert!(verify_proof_json(&absent, Some(&[7; 32])).is_err());
        let mut forged = v.clone();
        forged["valueJson"] = json!("{\"b\":2,\"a\":[1,2]}");
        forged["value"] = json!({"b": 2, "a": [1, 2]});
        assert!(verify_proof_json(&forged, None).is_err());
    }

    #[test]
    fn the_contract_sees_only_its_own_keys() {
        let mut base = StateStore::open(Arc::new(MemoryStore::default())).unwrap();
        base.commit(
            &writes(&[("subnet/admin", Some(json!("k")))]),
            Batch::default(),
        )
        .unwrap();
        let mut o = StagedState::new(&base);
        let mut app = AppState::new(&mut o);
        assert_eq!(app.get("admin"), None);
        app.put("admin", json!(1));
        assert_eq!(o.get("app/admin"), Some(json!(1)));
        assert_eq!(o.get("subnet/admin"), Some(json!("k")));
    }
}
