//! Subnet state as key → JSON value: the key namespaces (membership under `subnet/`, the contract's keys under `app/`), and the
//! state root.

use intercom_contracts::{MemoryState, StateRead, StateWrite, Value};
use intercom_crypto::Blake2b;

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

/// BLAKE2b-256 over the whole state in key order: for each entry, the key's length
/// (u32 LE), the key, the value's JSON length (u32 LE) and the JSON.
pub fn state_root(state: &MemoryState) -> [u8; 32] {
    let mut h = Blake2b::new(32, None);
    for (k, v) in &state.entries {
        let bytes = value_bytes(v);
        h.update(&(k.len() as u32).to_le_bytes())
            .update(k.as_bytes())
            .update(&(bytes.len() as u32).to_le_bytes())
            .update(&bytes);
    }
    let mut out = [0u8; 32];
    h.finalize_into(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_root_depends_on_every_key_and_value_but_not_on_insert_order() {
        let mut a = MemoryState::default();
        a.put("x", json!(1));
        a.put("y", json!("two"));
        let mut b = MemoryState::default();
        b.put("y", json!("two"));
        b.put("x", json!(1));
        assert_eq!(state_root(&a), state_root(&b));
        b.put("x", json!(2));
        assert_ne!(state_root(&a), state_root(&b));
        let mut c = MemoryState::default();
        c.put("xy", json!(1));
        let mut d = MemoryState::default();
        d.put("x", json!("y1"));
        assert_ne!(state_root(&c), state_root(&d));
    }

    #[test]
    fn the_contract_sees_only_its_own_keys() {
        let mut base = MemoryState::default();
        base.put("subnet/admin", json!("k"));
        let mut o = intercom_contracts::StagedState::new(&base);
        let mut app = AppState::new(&mut o);
        assert_eq!(app.get("admin"), None);
        app.put("admin", json!(1));
        assert_eq!(o.get("app/admin"), Some(json!(1)));
        assert_eq!(o.get("subnet/admin"), Some(json!("k")));
    }
}
