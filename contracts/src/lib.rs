//! The contract runtime API of the Intercom subnet plane.
//!
//! Every peer of a subnet applies the same totally ordered operations through the same
//! [`Contract`] and must end with byte-identical state. So a contract sees only
//! deterministic inputs: the [`Operation`], its [`Context`] (author, writer, position,
//! the author's own timestamp, the admin at that position) and its own keys through
//! [`StateRead`]/[`StateWrite`]. It gets no clock, no randomness and no I/O; outside data
//! (such as the time) comes in as feature entries from allowed peers
//! ([`Contract::apply_feature`]).
//!
//! Operations are declared with strict schemas ([`schema`]); [`validate`] checks an
//! operation against them and [`operation_from_cli`] builds one from command-line flags.
//! [`BuiltinContract`] is the sample contract (Intercom's sample operations, owner-checked
//! key/value data and trac-peer's chat); app builders implement [`Contract`] for their own
//! type (see `examples/task-board`).
//!
//! Never panics on any input: malformed operations, feature entries and state values are
//! errors.

pub mod builtin;
pub mod error;
pub mod schema;

use std::collections::BTreeMap;

/// The JSON library contracts are written against (re-exported so app crates need no
/// separate dependency, and use the same features: `preserve_order`, `float_roundtrip`).
pub use serde_json;
pub use serde_json::Value;

pub use crate::builtin::BuiltinContract;
pub use crate::error::ContractError;
pub use crate::schema::{Args, Field, FieldKind, OpSchema, MAX_SAFE_INTEGER};

use crate::error::clip;

/// Largest operation, as compact JSON `{"type": ..., "value": ...}`, that [`validate`]
/// accepts.
pub const MAX_OPERATION_BYTES: usize = 4096;

/// Read access to the contract's own keys (the runtime namespaces them).
pub trait StateRead {
    /// The value stored under `key`, if any.
    fn get(&self, key: &str) -> Option<Value>;
}

/// Write access during apply; writes of an apply that returns Err are discarded by the
/// runtime.
pub trait StateWrite: StateRead {
    /// Stores `value` under `key`.
    fn put(&mut self, key: &str, value: Value);
    /// Removes `key` (no-op when absent).
    fn delete(&mut self, key: &str);
}

/// A simple in-memory [`StateWrite`] for tests and simulations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryState {
    /// Every stored key and value, in key order.
    pub entries: BTreeMap<String, Value>,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies writes collected by a [`StagedState`] (`None` deletes).
    pub fn commit(&mut self, writes: BTreeMap<String, Option<Value>>) {
        for (key, value) in writes {
            match value {
                Some(v) => self.entries.insert(key, v),
                None => self.entries.remove(&key),
            };
        }
    }
}

impl StateRead for MemoryState {
    fn get(&self, key: &str) -> Option<Value> {
        self.entries.get(key).cloned()
    }
}

impl StateWrite for MemoryState {
    fn put(&mut self, key: &str, value: Value) {
        self.entries.insert(key.to_string(), value);
    }

    fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// Writes buffered over a read-only base: reads see the buffered writes first. A runtime
/// applies an operation on a `StagedState` and commits [`StagedState::into_writes`] only
/// when apply returns `Ok`.
pub struct StagedState<'a> {
    base: &'a dyn StateRead,
    writes: BTreeMap<String, Option<Value>>,
}

impl<'a> StagedState<'a> {
    /// No writes yet over `base`.
    pub fn new(base: &'a dyn StateRead) -> Self {
        StagedState {
            base,
            writes: BTreeMap::new(),
        }
    }

    /// The buffered writes (`None` deletes), in key order.
    pub fn writes(&self) -> &BTreeMap<String, Option<Value>> {
        &self.writes
    }

    /// Takes the buffered writes (`None` deletes), in key order.
    pub fn into_writes(self) -> BTreeMap<String, Option<Value>> {
        self.writes
    }

    /// Lays `writes` (taken from a stage over this one) on top of these.
    pub fn merge(&mut self, writes: BTreeMap<String, Option<Value>>) {
        self.writes.extend(writes);
    }
}

impl StateRead for StagedState<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        match self.writes.get(key) {
            Some(staged) => staged.clone(),
            None => self.base.get(key),
        }
    }
}

impl StateWrite for StagedState<'_> {
    fn put(&mut self, key: &str, value: Value) {
        self.writes.insert(key.to_string(), Some(value));
    }

    fn delete(&mut self, key: &str) {
        self.writes.insert(key.to_string(), None);
    }
}

/// Deterministic context of one applied operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    /// Lowercase hex ed25519 public key (the peer "address") that signed the op.
    pub author: &'a str,
    /// Lowercase hex key of the writer log that carried it.
    pub writer: &'a str,
    /// Position in the subnet's total order.
    pub position: u64,
    /// Milliseconds since the epoch as written by the author (not a clock read).
    pub timestamp: u64,
    /// The subnet admin's address at this position, if any.
    pub admin: Option<&'a str>,
}

impl Context<'_> {
    /// Whether the author is the subnet admin.
    pub fn author_is_admin(&self) -> bool {
        self.admin
            .is_some_and(|admin| admin.eq_ignore_ascii_case(self.author))
    }
}

/// An operation: what trac-peer calls a tx `{type, value}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    /// The operation name (the schema's name).
    #[serde(rename = "type")]
    pub name: String,
    /// Its fields: a JSON object, or `null` for operations without fields.
    pub value: Value,
}

impl Operation {
    /// An operation named `name` with `value`.
    pub fn new(name: impl Into<String>, value: Value) -> Self {
        Operation {
            name: name.into(),
            value,
        }
    }
}

/// A contract: declared operations, their deterministic application, feature entries and
/// read functions.
pub trait Contract: Send + Sync + 'static {
    /// Short name, shown in /stats and the bridge.
    fn name(&self) -> &str;

    /// Declared operations with strict schemas (used by [`validate`] and by the CLI
    /// coercion).
    fn operations(&self) -> &[OpSchema];

    /// Declared read functions with the schemas of their arguments (for help texts, the
    /// bridge, and [`read_schema`]).
    fn reads(&self) -> &[OpSchema] {
        &[]
    }

    /// Names of features (oracles) this contract accepts, e.g. `["timer"]`.
    fn features(&self) -> &[&'static str] {
        &[]
    }

    /// Operations that travel as actions: any member may append them without the
    /// transaction gate (`enable_transactions`), as trac-peer's chat operations do. Each
    /// must be one of [`Contract::operations`]; everything else is a transaction.
    fn actions(&self) -> &[&'static str] {
        &[]
    }

    /// Protocol layer: maps `/tx --command "<string or JSON>"` to an operation (the JSON
    /// form is `{"op": "<name>", ...fields}` or `{"type": "<name>", "value": {...}}`; plain
    /// strings are per-contract shortcuts). Unknown commands are an error.
    fn map_command(&self, command: &str) -> Result<Operation, ContractError>;

    /// Applies a validated operation. May read and write state. Returning Err rejects the
    /// op (the runtime discards its writes).
    fn apply(
        &self,
        op: &Operation,
        ctx: &Context<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError>;

    /// Applies a feature entry (already checked by the runtime to come from an allowed
    /// peer).
    fn apply_feature(
        &self,
        feature: &str,
        entry: &Value,
        ctx: &Context<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError>;

    /// Read-only functions, e.g. "read_chat_last", "read_key" (args is a JSON object or
    /// null).
    fn read(
        &self,
        function: &str,
        args: &Value,
        state: &dyn StateRead,
    ) -> Result<Value, ContractError>;
}

/// The schema of operation `name`. A read function's name gives
/// [`ContractError::ReadFunction`], any other unknown name
/// [`ContractError::UnknownOperation`].
pub fn operation_schema<'c>(
    contract: &'c dyn Contract,
    name: &str,
) -> Result<&'c OpSchema, ContractError> {
    if let Some(schema) = contract.operations().iter().find(|s| s.name == name) {
        return Ok(schema);
    }
    if contract.reads().iter().any(|s| s.name == name) {
        return Err(ContractError::ReadFunction {
            name: name.to_string(),
        });
    }
    Err(ContractError::UnknownOperation {
        name: clip(name),
        known: schema::names(contract.operations()),
    })
}

/// Full strict check of an op against the contract's schemas: unknown op name, unknown
/// fields, missing required fields, wrong types, oversize strings/values all rejected with
/// a clear error.
pub fn validate(contract: &dyn Contract, op: &Operation) -> Result<(), ContractError> {
    let schema = operation_schema(contract, &op.name)?;
    let size = schema::json_size(op);
    if size > MAX_OPERATION_BYTES {
        return Err(ContractError::OperationTooLarge {
            op: schema.name.to_string(),
            size,
            max: MAX_OPERATION_BYTES,
        });
    }
    schema::validate_value(schema, &op.value)
}

/// [`validate`], then the operation in canonical form (keys lowercase, booleans as JSON
/// bools, `null` optional fields dropped, fields in schema order). Peers that submit the
/// canonical form sign and store the same bytes for the same intent.
pub fn normalize(contract: &dyn Contract, op: &Operation) -> Result<Operation, ContractError> {
    validate(contract, op)?;
    let schema = operation_schema(contract, &op.name)?;
    Ok(Operation::new(
        op.name.clone(),
        schema::normalize_value(schema, &op.value),
    ))
}

/// Turns CLI flags (`/post --message "hi"` => name "post", args [("message","hi")]) into
/// an Operation using the schema's types (strings "0"/"1"/"true"/"false" for flags/bools,
/// decimal strings for integers), then validates it.
pub fn operation_from_cli(
    contract: &dyn Contract,
    name: &str,
    args: &[(String, String)],
) -> Result<Operation, ContractError> {
    let schema = operation_schema(contract, name)?;
    let op = Operation::new(schema.name, schema::value_from_cli(schema, args)?);
    validate(contract, &op)?;
    Ok(op)
}

/// Turns a JSON command into a validated operation in canonical form. Accepted forms:
/// `{"op": "<name>", ...fields}` and `{"type": "<name>", "value": {...}}` (a missing
/// `value` is `null`). Contracts use this for the JSON side of
/// [`Contract::map_command`].
pub fn operation_from_json(
    contract: &dyn Contract,
    json: &Value,
) -> Result<Operation, ContractError> {
    let hint = || {
        format!(
            "a JSON command is {{\"op\": \"<name>\", ...fields}} or \
             {{\"type\": \"<name>\", \"value\": {{...}}}}; operations: {}",
            schema::names(contract.operations())
        )
    };
    let unknown = |why: &str| ContractError::UnknownCommand {
        command: clip(&json.to_string()),
        hint: format!("{why}; {}", hint()),
    };
    let Value::Object(object) = json else {
        return Err(unknown("not a JSON object"));
    };
    let op = if let Some(name) = object.get("op") {
        let name = name
            .as_str()
            .ok_or_else(|| unknown("\"op\" must be a string"))?;
        let mut fields = object.clone();
        fields.remove("op");
        let schema = operation_schema(contract, name)?;
        let value = if fields.is_empty() && schema.fields.is_empty() {
            Value::Null
        } else {
            Value::Object(fields)
        };
        Operation::new(name, value)
    } else if let Some(name) = object.get("type") {
        let name = name
            .as_str()
            .ok_or_else(|| unknown("\"type\" must be a string"))?;
        if let Some(extra) = object.keys().find(|k| *k != "type" && *k != "value") {
            return Err(unknown(&format!(
                "unexpected key {:?} next to \"type\" (fields go inside \"value\")",
                clip(extra)
            )));
        }
        Operation::new(name, object.get("value").cloned().unwrap_or(Value::Null))
    } else {
        return Err(unknown("no \"op\" or \"type\" key"));
    };
    normalize(contract, &op)
}

/// The schema of read function `function`, after checking `args` against it (`null`
/// stands for no arguments).
pub fn read_schema<'c>(
    contract: &'c dyn Contract,
    function: &str,
    args: &Value,
) -> Result<&'c OpSchema, ContractError> {
    let schema = contract
        .reads()
        .iter()
        .find(|s| s.name == function)
        .ok_or_else(|| ContractError::UnknownReadFunction {
            name: clip(function),
            known: schema::names(contract.reads()),
        })?;
    let empty = Value::Object(Default::default());
    let args = if args.is_null() { &empty } else { args };
    schema::validate_value(schema, args)?;
    Ok(schema)
}

/// A short JSON description of a contract (name, operations, reads, features) for `/stats`
/// and the bridge.
pub fn describe(contract: &dyn Contract) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), contract.name().into());
    m.insert(
        "operations".into(),
        contract
            .operations()
            .iter()
            .map(OpSchema::describe)
            .collect(),
    );
    m.insert(
        "reads".into(),
        contract.reads().iter().map(OpSchema::describe).collect(),
    );
    m.insert(
        "features".into(),
        contract
            .features()
            .iter()
            .map(|f| Value::from(*f))
            .collect(),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn contract() -> BuiltinContract {
        BuiltinContract
    }

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operation_serializes_as_trac_tx() {
        let op = Operation::new("post", json!({"message": "hi"}));
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(text, r#"{"type":"post","value":{"message":"hi"}}"#);
        assert_eq!(serde_json::from_str::<Operation>(&text).unwrap(), op);
    }

    #[test]
    fn validate_gives_specific_errors() {
        let c = contract();
        let cases = [
            (
                json!({"message": "hi", "bogus": 1}),
                "unknown_field",
                "`bogus`",
            ),
            (json!({}), "missing_field", "`message`"),
            (json!({"message": 7}), "wrong_type", "`message`"),
            (
                json!({"message": "x".repeat(1025)}),
                "string_length",
                "`message`",
            ),
            (
                json!({"message": "hi", "reply_to": -1}),
                "out_of_range",
                "`reply_to`",
            ),
        ];
        for (value, code, needle) in cases {
            let err = validate(&c, &Operation::new("post", value)).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(err.to_string().contains(needle), "{err}");
            assert!(err.to_string().contains("`post`"), "{err}");
        }
        let err = validate(
            &c,
            &Operation::new("put", json!({"key": "k", "value": "v".repeat(2000)})),
        )
        .unwrap_err();
        assert_eq!(err.code(), "field_too_large");
        assert!(err.to_string().contains("`value`"), "{err}");
    }

    #[test]
    fn validate_rejects_unknown_and_oversize_operations() {
        let c = contract();
        let err = validate(&c, &Operation::new("nope", Value::Null)).unwrap_err();
        assert_eq!(err.code(), "unknown_operation");
        assert!(err.to_string().contains("`nope`"), "{err}");
        assert!(err.to_string().contains("post"), "lists known ops: {err}");

        let err = validate(&c, &Operation::new("read_timer", Value::Null)).unwrap_err();
        assert_eq!(err.code(), "read_function");

        // 1024 four-byte characters: within the field's character limit, over the op cap.
        let op = Operation::new("post", json!({"message": "😀".repeat(1024)}));
        let err = validate(&c, &op).unwrap_err();
        assert!(
            matches!(err, ContractError::OperationTooLarge { max: MAX_OPERATION_BYTES, size, .. } if size > 4096),
            "{err}"
        );
    }

    #[test]
    fn cli_coercion_uses_schema_types() {
        let c = contract();
        let op =
            operation_from_cli(&c, "post", &args(&[("message", "hi"), ("reply_to", "3")])).unwrap();
        assert_eq!(
            op,
            Operation::new("post", json!({"message": "hi", "reply_to": 3}))
        );

        let op = operation_from_cli(&c, "set_chat_status", &args(&[("enabled", "1")])).unwrap();
        assert_eq!(op.value, json!({"enabled": true}));
        let op = operation_from_cli(&c, "set_chat_status", &args(&[("enabled", "false")])).unwrap();
        assert_eq!(op.value, json!({"enabled": false}));

        let upper = KEY_A.to_ascii_uppercase();
        let op =
            operation_from_cli(&c, "set_mod", &args(&[("user", &upper), ("mod", "true")])).unwrap();
        assert_eq!(op.value, json!({"user": KEY_A, "mod": true}));

        let op = operation_from_cli(&c, "store_something", &[]).unwrap();
        assert_eq!(op.value, Value::Null);

        let op = operation_from_cli(&c, "put", &args(&[("key", "k"), ("value", "[1,2]")])).unwrap();
        assert_eq!(op.value, json!({"key": "k", "value": [1, 2]}));

        let err = operation_from_cli(&c, "post", &args(&[("message", "hi"), ("reply_to", "x")]))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_argument");
        assert!(err.to_string().contains("--reply_to"), "{err}");
        let err = operation_from_cli(&c, "post", &[]).unwrap_err();
        assert_eq!(err.code(), "missing_field");
        let err =
            operation_from_cli(&c, "set_mod", &args(&[("user", "bob"), ("mod", "1")])).unwrap_err();
        assert_eq!(err.code(), "wrong_type");
        let err = operation_from_cli(&c, "nope", &[]).unwrap_err();
        assert_eq!(err.code(), "unknown_operation");
    }

    #[test]
    fn json_commands_in_both_forms() {
        let c = contract();
        let a = operation_from_json(&c, &json!({"op": "post", "message": "hi"})).unwrap();
        let b =
            operation_from_json(&c, &json!({"type": "post", "value": {"message": "hi"}})).unwrap();
        assert_eq!(a, b);
        let op = operation_from_json(&c, &json!({"op": "store_something"})).unwrap();
        assert_eq!(op.value, Value::Null);
        let op = operation_from_json(
            &c,
            &json!({"type": "set_mod", "value": {"mod": 1, "user": KEY_A.to_ascii_uppercase()}}),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&op.value).unwrap(),
            format!(r#"{{"user":"{KEY_A}","mod":true}}"#)
        );

        for (bad, needle) in [
            (json!([1]), "not a JSON object"),
            (json!({"message": "x"}), "no \"op\" or \"type\""),
            (json!({"op": 5}), "\"op\" must be a string"),
            (json!({"type": "post", "message": "x"}), "unexpected key"),
        ] {
            let err = operation_from_json(&c, &bad).unwrap_err();
            assert_eq!(err.code(), "unknown_command");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = operation_from_json(&c, &json!({"op": "read_key", "key": "x"})).unwrap_err();
        assert_eq!(err.code(), "read_function");
    }

    #[test]
    fn staged_state_buffers_writes() {
        let mut base = MemoryState::new();
        base.put("a", json!(1));
        base.put("b", json!(2));
        let mut staged = StagedState::new(&base);
        staged.put("a", json!(10));
        staged.delete("b");
        staged.put("c", json!(3));
        assert_eq!(staged.get("a"), Some(json!(10)));
        assert_eq!(staged.get("b"), None);
        assert_eq!(staged.get("c"), Some(json!(3)));
        let writes = staged.into_writes();
        assert_eq!(base.get("a"), Some(json!(1)), "base untouched");
        base.commit(writes);
        assert_eq!(base.entries.len(), 2);
        assert_eq!(base.get("a"), Some(json!(10)));
        assert_eq!(base.get("b"), None);
    }

    #[test]
    fn read_schema_checks_arguments() {
        let c = contract();
        read_schema(&c, "read_timer", &Value::Null).unwrap();
        read_schema(&c, "read_messages", &Value::Null).unwrap();
        let err = read_schema(&c, "read_key", &Value::Null).unwrap_err();
        assert_eq!(err.code(), "missing_field");
        let err = read_schema(&c, "nope", &Value::Null).unwrap_err();
        assert_eq!(err.code(), "unknown_read_function");
    }

    #[test]
    fn describes_the_contract() {
        let d = describe(&contract());
        assert_eq!(d["name"], "intercom-sample");
        assert_eq!(d["features"], json!(["timer"]));
        assert!(d["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "post"));
        assert!(d["reads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "read_snapshot"));
    }

    #[test]
    fn context_admin_check() {
        let ctx = Context {
            author: KEY_A,
            writer: KEY_A,
            position: 0,
            timestamp: 0,
            admin: None,
        };
        assert!(!ctx.author_is_admin());
        assert!(Context {
            admin: Some(KEY_A),
            ..ctx
        }
        .author_is_admin());
    }
}
