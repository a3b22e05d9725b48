//! Subnet state as key → JSON value: the key namespaces (membership under `subnet/`, the
//! contract's keys under `app/`), and [`StateStore`], the confirmed state in the peer store
//! with its Merkle root.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use intercom_contracts::{StateRead, StateWrite, Value};
use intercom_stores::{Batch, KvStore, StoreError};

use crate::merkle::{self, Hash, Location, MerkleError, Node, NodeSource, Proof, EMPTY};

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
/// KV prefix of the state tree's nodes (`subnet/m/<location>` → node).
const NODE_PREFIX: &[u8] = b"subnet/m/";
/// Prefix of the membership namespace, which is kept in memory too.
const MEMBERSHIP: &str = "subnet/";
/// Tree nodes down to this depth are cached in memory (at most 2^(d+1) of them).
const CACHED_DEPTH: u16 = 14;

/// The confirmed subnet state, stored in the peer store: values under [`VALUE_PREFIX`]
/// and a sparse Merkle tree over them ([`crate::merkle`]) whose root commits to the whole
/// state. Reads go to the store (the membership namespace `subnet/`, small and read by
/// every entry, and the tree's upper levels are also held in memory); a commit writes the
/// changed values and tree nodes in one atomic batch with whatever the caller adds.
pub struct StateStore {
    kv: Arc<dyn KvStore>,
    membership: BTreeMap<String, Value>,
    nodes: RefCell<HashMap<Location, Option<Node>>>,
    root: Hash,
    /// The first read failure since [`StateStore::take_error`]; reads that fail answer
    /// "absent", so whoever applied over them must not commit.
    error: RefCell<Option<StoreError>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("root", &hex::encode(self.root))
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
        let mut store = StateStore {
            kv,
            membership,
            nodes: RefCell::new(HashMap::new()),
            root: EMPTY,
            error: RefCell::new(None),
        };
        store.root = merkle::root(&store).map_err(tree_error)?;
        Ok(store)
    }

    /// Deletes the whole state from `batch`'s store (values and tree).
    pub fn clear(batch: &mut Batch<'_>) {
        batch.delete_prefix(VALUE_PREFIX.as_bytes());
        batch.delete_prefix(NODE_PREFIX);
    }

    /// The root of the state.
    pub fn root(&self) -> Hash {
        self.root
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
        let changes = path_hashes(&tree_changes(writes));
        let (root, _) = merkle::update(self, &changes).map_err(tree_error)?;
        Ok(root)
    }

    /// Writes `writes` (`None` deletes) and the tree nodes they change, together with
    /// `extra`, in one atomic write; returns the new root. Nothing changes in memory if the
    /// write fails.
    pub fn commit(
        &mut self,
        writes: &BTreeMap<String, Option<Value>>,
        mut extra: Batch<'_>,
    ) -> Result<Hash, StoreError> {
        let changes = tree_changes(writes);
        let (root, nodes) = merkle::update(self, &path_hashes(&changes)).map_err(tree_error)?;
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        for change in &changes {
            let stored = format!("{VALUE_PREFIX}{}", change.key);
            match &change.bytes {
                Some(b) => extra.put(stored.as_bytes(), b),
                None => extra.delete(stored.as_bytes()),
            };
        }
        for (at, node) in &nodes {
            let key = node_key(at);
            match node {
                Some(n) => extra.put(&key, &n.encode()),
                None => extra.delete(&key),
            };
        }
        self.kv.write(extra, false)?;
        let mut cache = self.nodes.borrow_mut();
        for (at, node) in nodes {
            if at.depth <= CACHED_DEPTH {
                cache.insert(at, node);
            }
        }
        drop(cache);
        for (key, value) in writes {
            if key.starts_with(MEMBERSHIP) {
                match value {
                    Some(v) => self.membership.insert(key.clone(), v.clone()),
                    None => self.membership.remove(key),
                };
            }
        }
        self.root = root;
        Ok(root)
    }

    /// `key`'s value with a proof against the current root.
    pub fn prove(&self, key: &str) -> Result<ProvedValue, StoreError> {
        let bytes = self.kv.get(format!("{VALUE_PREFIX}{key}").as_bytes())?;
        let value = match &bytes {
            Some(b) => Some(serde_json::from_slice(b).map_err(|e| StoreError::Corrupt {
                key: key.to_owned(),
                why: e.to_string(),
            })?),
            None => None,
        };
        let proof = merkle::prove(self, &merkle::key_path(key.as_bytes())).map_err(tree_error)?;
        Ok(ProvedValue {
            value,
            bytes,
            proof,
            root: self.root,
        })
    }

    /// Every key and value, in key order (for tests and tools; reads the whole state).
    pub fn entries(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.kv.scan_prefix(VALUE_PREFIX.as_bytes())? {
            let key = String::from_utf8_lossy(&k[VALUE_PREFIX.len()..]).into_owned();
            let value = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                why: e.to_string(),
            })?;
            out.insert(key, value);
        }
        Ok(out)
    }
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

fn path_hashes(changes: &[Change<'_>]) -> BTreeMap<Hash, Option<Hash>> {
    changes.iter().map(|c| (c.path, c.hash)).collect()
}

fn node_key(at: &Location) -> Vec<u8> {
    let mut key = NODE_PREFIX.to_vec();
    key.extend_from_slice(&at.encode());
    key
}

fn tree_error(e: MerkleError) -> StoreError {
    StoreError::Corrupt {
        key: "subnet state tree".into(),
        why: e.to_string(),
    }
}

impl NodeSource for StateStore {
    fn node(&self, at: &Location) -> Result<Option<Node>, MerkleError> {
        if at.depth <= CACHED_DEPTH {
            if let Some(n) = self.nodes.borrow().get(at) {
                return Ok(*n);
            }
        }
        let node = match self.kv.get(&node_key(at)) {
            Ok(Some(bytes)) => Some(Node::decode(&bytes, at.depth)?),
            Ok(None) => None,
            Err(e) => return Err(MerkleError::Store(e.to_string())),
        };
        if at.depth <= CACHED_DEPTH {
            self.nodes.borrow_mut().insert(*at, node);
        }
        Ok(node)
    }
}

impl StateRead for StateStore {
    fn get(&self, key: &str) -> Option<Value> {
        if key.starts_with(MEMBERSHIP) {
            return self.membership.get(key).cloned();
        }
        match self.kv.get(format!("{VALUE_PREFIX}{key}").as_bytes()) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.failed(StoreError::Corrupt {
                        key: key.to_owned(),
                        why: e.to_string(),
                    });
                    None
                }
            },
            Ok(None) => None,
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
        assert_ne!(a.root(), EMPTY);
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
        assert_eq!(a.root(), EMPTY);
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
