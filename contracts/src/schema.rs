//! Strict operation schemas: how a contract declares its operations (and read functions),
//! how an operation's value is checked against its schema, how a checked value is put in
//! canonical form, how command-line flags become typed values, and typed accessors that
//! contract code uses to read fields.
//!
//! Validation is strict: the value must be a JSON object holding only declared fields,
//! every required field present, every field of its declared type and size. An operation
//! without fields takes `null` (or `{}`). An explicit `null` field counts as
//! absent.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{clip, ContractError};

/// Largest integer JavaScript peers represent exactly (`Number.MAX_SAFE_INTEGER`); ids and
/// counters stay within it so JSON state reads the same in both implementations.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// One declared operation (or read function) and its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSchema {
    /// The name, as in `{"type": name}` and `/tx --command '{"op": name}'`.
    pub name: &'static str,
    /// The fields its value may hold, in canonical order.
    pub fields: &'static [Field],
    /// One line for help texts and the bridge.
    pub description: &'static str,
}

/// One field of an operation's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field's key in the value object.
    pub name: &'static str,
    /// Its type and bounds.
    pub kind: FieldKind,
    /// Whether the field must be present (and not `null`).
    pub required: bool,
}

/// The type and bounds of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldKind {
    /// A string of `min..=max` characters (Unicode scalar values).
    Str {
        /// Fewest characters.
        min: usize,
        /// Most characters.
        max: usize,
    },
    /// An integer in `min..=max` (JSON numbers with a fraction are refused, even `1.0`).
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// A boolean: JSON `true`/`false` or the numbers `0`/`1` (canonical form: a JSON bool).
    Bool,
    /// A 32-byte key as 64 hex characters of either case (canonical form: lowercase).
    Key,
    /// Any JSON value except `null`, at most `max_bytes` bytes as compact JSON.
    Any {
        /// Largest JSON size in bytes.
        max_bytes: usize,
    },
}

impl Field {
    /// A required field.
    pub const fn required(name: &'static str, kind: FieldKind) -> Self {
        Field {
            name,
            kind,
            required: true,
        }
    }

    /// An optional field.
    pub const fn optional(name: &'static str, kind: FieldKind) -> Self {
        Field {
            name,
            kind,
            required: false,
        }
    }
}

impl FieldKind {
    /// What a value of this kind looks like, for error messages.
    pub fn expected(&self) -> String {
        match *self {
            FieldKind::Str { min, max } => format!("a string of {min} to {max} characters"),
            FieldKind::Int { min, max } => format!("an integer from {min} to {max}"),
            FieldKind::Bool => "a boolean (true/false or 0/1)".to_string(),
            FieldKind::Key => "a 64-character hex key".to_string(),
            FieldKind::Any { max_bytes } => {
                format!("any JSON value except null, at most {max_bytes} bytes")
            }
        }
    }

    /// The kind's short name in schema descriptions.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldKind::Str { .. } => "string",
            FieldKind::Int { .. } => "integer",
            FieldKind::Bool => "boolean",
            FieldKind::Key => "key",
            FieldKind::Any { .. } => "any",
        }
    }
}

impl OpSchema {
    /// The declared field with this name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The declared field names, comma-separated (`(none)` when there are none).
    pub fn field_names(&self) -> String {
        if self.fields.is_empty() {
            "(none)".to_string()
        } else {
            self.fields
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The schema as JSON, for `/stats`, help texts and the bridge:
    /// `{"name", "description", "fields": [{"name", "type", "required", ...bounds}]}`.
    pub fn describe(&self) -> Value {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|f| {
                let mut m = Map::new();
                m.insert("name".into(), f.name.into());
                m.insert("type".into(), f.kind.type_name().into());
                m.insert("required".into(), f.required.into());
                match f.kind {
                    FieldKind::Str { min, max } => {
                        m.insert("min_chars".into(), min.into());
                        m.insert("max_chars".into(), max.into());
                    }
                    FieldKind::Int { min, max } => {
                        m.insert("min".into(), min.into());
                        m.insert("max".into(), max.into());
                    }
                    FieldKind::Any { max_bytes } => {
                        m.insert("max_bytes".into(), max_bytes.into());
                    }
                    FieldKind::Bool | FieldKind::Key => {}
                }
                Value::Object(m)
            })
            .collect();
        let mut m = Map::new();
        m.insert("name".into(), self.name.into());
        m.insert("description".into(), self.description.into());
        m.insert("fields".into(), Value::Array(fields));
        Value::Object(m)
    }
}

/// Names of the given schemas, comma-separated (`(none)` when empty).
pub fn names(schemas: &[OpSchema]) -> String {
    if schemas.is_empty() {
        "(none)".to_string()
    } else {
        schemas
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The size of `value` as compact JSON, in bytes, computed without allocating it.
pub fn json_size<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // Unserializable values (never the case for `Value`) count as infinitely large.
        Err(_) => usize::MAX,
    }
}

/// Whether `text` is 64 hex characters (either case).
pub fn is_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A short description of a JSON value's type, for error messages.
pub(crate) fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {}", clip(&n.to_string())),
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(o) => format!("an object with {} fields", o.len()),
    }
}

/// Checks a value (operation value or read arguments) against `schema`.
pub fn validate_value(schema: &OpSchema, value: &Value) -> Result<(), ContractError> {
    let op = schema.name;
    let object = match value {
        Value::Object(object) => object,
        Value::Null if schema.fields.is_empty() => return Ok(()),
        other => {
            let expected = if schema.fields.is_empty() {
                "null or an empty object (this operation takes no fields)".to_string()
            } else {
                format!("a JSON object with fields: {}", schema.field_names())
            };
            return Err(ContractError::InvalidValue {
                op: op.to_string(),
                expected,
                got: describe_json(other),
            });
        }
    };
    if let Some(unknown) = object.keys().find(|k| schema.field(k).is_none()) {
        return Err(ContractError::UnknownField {
            op: op.to_string(),
            field: clip(unknown),
            allowed: schema.field_names(),
        });
    }
    for field in schema.fields {
        match object.get(field.name) {
            None | Some(Value::Null) if !field.required => {}
            None | Some(Value::Null) => {
                return Err(ContractError::MissingField {
                    op: op.to_string(),
                    field: field.name.to_string(),
                    expected: field.kind.expected(),
                })
            }
            Some(v) => check_field(op, field, v)?,
        }
    }
    Ok(())
}

/// Checks one present field value against its declaration.
fn check_field(op: &str, field: &Field, value: &Value) -> Result<(), ContractError> {
    let wrong = |got: String| ContractError::WrongType {
        op: op.to_string(),
        field: field.name.to_string(),
        expected: field.kind.expected(),
        got,
    };
    match field.kind {
        FieldKind::Str { min, max } => {
            let text = value.as_str().ok_or_else(|| wrong(describe_json(value)))?;
            let len = text.chars().count();
            if len < min || len > max {
                return Err(ContractError::StringLength {
                    op: op.to_string(),
                    field: field.name.to_string(),
                    min,
                    max,
                    len,
                });
            }
        }
        FieldKind::Int { min, max } => {
            let Value::Number(n) = value else {
                return Err(wrong(describe_json(value)));
            };
            let in_range = match n.as_i64() {
                Some(i) => (min..=max).contains(&i),
                // Beyond i64 (a big u64): out of any range we declare.
                None if n.is_u64() => false,
                None => return Err(wrong(format!("the non-integer number {n}"))),
            };
            if !in_range {
                return Err(ContractError::OutOfRange {
                    op: op.to_string(),
                    field: field.name.to_string(),
                    min,
                    max,
                    value: n.to_string(),
                });
            }
        }
        FieldKind::Bool => match value {
            Value::Bool(_) => {}
            Value::Number(n) if matches!(n.as_u64(), Some(0 | 1)) => {}
            other => return Err(wrong(describe_json(other))),
        },
        FieldKind::Key => {
            let text = value.as_str().ok_or_else(|| wrong(describe_json(value)))?;
            if !is_key(text) {
                let got = if text.len() != 64 {
                    format!("a string of {} characters", text.chars().count())
                } else {
                    "a string with non-hex characters".to_string()
                };
                return Err(wrong(got));
            }
        }
        FieldKind::Any { max_bytes } => {
            let size = json_size(value);
            if size > max_bytes {
                return Err(ContractError::FieldTooLarge {
                    op: op.to_string(),
                    field: field.name.to_string(),
                    size,
                    max: max_bytes,
                });
            }
        }
    }
    Ok(())
}

/// The canonical form of a value that passed [`validate_value`]: keys lowercase, booleans
/// as JSON bools, `null` optional fields dropped, fields in schema order, and `null` for
/// operations without fields. Values that did not validate are returned unchanged.
pub fn normalize_value(schema: &OpSchema, value: &Value) -> Value {
    if validate_value(schema, value).is_err() {
        return value.clone();
    }
    let Value::Object(object) = value else {
        return Value::Null;
    };
    if schema.fields.is_empty() {
        return Value::Null;
    }
    let mut out = Map::new();
    for field in schema.fields {
        let Some(v) = object.get(field.name) else {
            continue;
        };
        let canonical = match (field.kind, v) {
            (_, Value::Null) => continue,
            (FieldKind::Key, Value::String(s)) => Value::String(s.to_ascii_lowercase()),
            (FieldKind::Bool, Value::Number(n)) => Value::Bool(n.as_u64() == Some(1)),
            _ => v.clone(),
        };
        out.insert(field.name.to_string(), canonical);
    }
    Value::Object(out)
}

/// Builds a value for `schema` from command-line flags (`--message "hi"` is
/// `("message", "hi")`; leading dashes are ignored and `-` in names reads as `_`).
///
/// Text becomes the field's type: strings as given; integers from decimal text; booleans
/// from `0`/`1`/`true`/`false`; keys lowercased; free-form (`Any`) fields parsed as JSON
/// when they are valid JSON, else kept as a string. The result is in canonical form but
/// not yet validated.
pub fn value_from_cli(
    schema: &OpSchema,
    args: &[(String, String)],
) -> Result<Value, ContractError> {
    let op = schema.name;
    let mut given: Vec<(&Field, Value)> = Vec::with_capacity(args.len());
    for (raw_name, text) in args {
        let name = raw_name.trim_start_matches('-').replace('-', "_");
        let field = schema
            .field(&name)
            .ok_or_else(|| ContractError::UnknownField {
                op: op.to_string(),
                field: clip(&name),
                allowed: schema.field_names(),
            })?;
        let invalid = |reason: String| ContractError::InvalidArgument {
            op: op.to_string(),
            field: field.name.to_string(),
            reason,
        };
        if given.iter().any(|(f, _)| f.name == field.name) {
            return Err(invalid("was given more than once".to_string()));
        }
        let value = match field.kind {
            FieldKind::Str { .. } => Value::String(text.clone()),
            FieldKind::Int { .. } => match text.trim().parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => {
                    return Err(invalid(format!(
                        "must be a decimal integer, got {:?}",
                        clip(text)
                    )))
                }
            },
            FieldKind::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" => Value::Bool(true),
                "0" | "false" => Value::Bool(false),
                _ => {
                    return Err(invalid(format!(
                        "must be 0, 1, true or false, got {:?}",
                        clip(text)
                    )))
                }
            },
            FieldKind::Key => Value::String(text.trim().to_ascii_lowercase()),
            FieldKind::Any { .. } => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
        };
        given.push((field, value));
    }
    if schema.fields.is_empty() {
        return Ok(Value::Null);
    }
    let mut out = Map::new();
    for field in schema.fields {
        if let Some((_, v)) = given.iter().find(|(f, _)| f.name == field.name) {
            out.insert(field.name.to_string(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// Typed access to the fields of a validated value, for contract code. Absent and `null`
/// fields read as missing; a wrong type is an error, never a panic.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    op: &'a str,
    value: &'a Value,
}

impl<'a> Args<'a> {
    /// Wraps `value`, the value of operation (or read function) `op`.
    pub fn new(op: &'a str, value: &'a Value) -> Self {
        Args { op, value }
    }

    /// The field, if present and not `null`.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        match self.value.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn missing(&self, name: &str, expected: &str) -> ContractError {
        ContractError::MissingField {
            op: self.op.to_string(),
            field: name.to_string(),
            expected: expected.to_string(),
        }
    }

    fn wrong(&self, name: &str, expected: &str, got: &Value) -> ContractError {
        ContractError::WrongType {
            op: self.op.to_string(),
            field: name.to_string(),
            expected: expected.to_string(),
            got: describe_json(got),
        }
    }

    /// An optional string field.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    /// A required string field.
    pub fn str(&self, name: &str) -> Result<&'a str, ContractError> {
        self.opt_str(name)?
            .ok_or_else(|| self.missing(name, "a string"))
    }

    /// An optional integer field.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(i) => Ok(Some(i)),
                None => Err(self.wrong(name, "an integer", v)),
            },
        }
    }

    /// A required integer field.
    pub fn int(&self, name: &str) -> Result<i64, ContractError> {
        self.opt_int(name)?
            .ok_or_else(|| self.missing(name, "an integer"))
    }

    /// A required non-negative integer field (ids, counts).
    pub fn uint(&self, name: &str) -> Result<u64, ContractError> {
        let i = self.int(name)?;
        u64::try_from(i).map_err(|_| ContractError::OutOfRange {
            op: self.op.to_string(),
            field: name.to_string(),
            min: 0,
            max: i64::MAX,
            value: i.to_string(),
        })
    }

    /// An optional boolean field (`true`/`false` or `0`/`1`).
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
            Some(other) => Err(self.wrong(name, "a boolean (true/false or 0/1)", other)),
        }
    }

    /// A required boolean field.
    pub fn bool(&self, name: &str) -> Result<bool, ContractError> {
        self.opt_bool(name)?
            .ok_or_else(|| self.missing(name, "a boolean"))
    }

    /// An optional key field, lowercased.
    pub fn opt_key(&self, name: &str) -> Result<Option<String>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if is_key(s) => Ok(Some(s.to_ascii_lowercase())),
            Some(other) => Err(self.wrong(name, "a 64-character hex key", other)),
        }
    }

    /// A required key field, lowercased.
    pub fn key(&self, name: &str) -> Result<String, ContractError> {
        self.opt_key(name)?
            .ok_or_else(|| self.missing(name, "a 64-character hex key"))
    }

    /// A required free-form field.
    pub fn any(&self, name: &str) -> Result<&'a Value, ContractError> {
        self.get(name)
            .ok_or_else(|| self.missing(name, "any JSON value except null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIELDS: &[Field] = &[
        Field::required("text", FieldKind::Str { min: 1, max: 5 }),
        Field::optional("n", FieldKind::Int { min: -3, max: 10 }),
        Field::optional("flag", FieldKind::Bool),
        Field::optional("user", FieldKind::Key),
        Field::optional("blob", FieldKind::Any { max_bytes: 16 }),
    ];
    const SCHEMA: OpSchema = OpSchema {
        name: "demo",
        fields: FIELDS,
        description: "a demo",
    };
    const EMPTY: OpSchema = OpSchema {
        name: "bare",
        fields: &[],
        description: "no fields",
    };
    const KEY_UPPER: &str = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";

    #[test]
    fn accepts_well_formed_values() {
        validate_value(&SCHEMA, &json!({"text": "hi"})).unwrap();
        validate_value(
            &SCHEMA,
            &json!({"text": "héllo", "n": -3, "flag": 1, "user": KEY_UPPER, "blob": [1, 2]}),
        )
        .unwrap();
        validate_value(&SCHEMA, &json!({"text": "x", "n": null, "flag": false})).unwrap();
        validate_value(&EMPTY, &Value::Null).unwrap();
        validate_value(&EMPTY, &json!({})).unwrap();
    }

    #[test]
    fn rejects_wrong_shapes() {
        let err = validate_value(&SCHEMA, &json!("text")).unwrap_err();
        assert!(matches!(err, ContractError::InvalidValue { .. }), "{err}");
        assert!(
            err.to_string().contains("text, n, flag, user, blob"),
            "{err}"
        );
        let err = validate_value(&SCHEMA, &Value::Null).unwrap_err();
        assert!(matches!(err, ContractError::InvalidValue { .. }), "{err}");
        let err = validate_value(&EMPTY, &json!({"x": 1})).unwrap_err();
        assert!(matches!(err, ContractError::UnknownField { ref field, .. } if field == "x"));
        let err = validate_value(&EMPTY, &json!([1])).unwrap_err();
        assert!(err.to_string().contains("takes no fields"), "{err}");
    }

    #[test]
    fn names_the_offending_field() {
        let err = validate_value(&SCHEMA, &json!({"text": "a", "extra": 1})).unwrap_err();
        assert_eq!(err.code(), "unknown_field");
        assert!(err.to_string().contains("`extra`"), "{err}");

        let err = validate_value(&SCHEMA, &json!({"n": 1})).unwrap_err();
        assert_eq!(err.code(), "missing_field");
        assert!(err.to_string().contains("`text`"), "{err}");

        let err = validate_value(&SCHEMA, &json!({"text": null})).unwrap_err();
        assert_eq!(err.code(), "missing_field", "null counts as absent");

        let err = validate_value(&SCHEMA, &json!({"text": 5})).unwrap_err();
        assert_eq!(err.code(), "wrong_type");
        assert!(err.to_string().contains("`text`"), "{err}");

        let err = validate_value(&SCHEMA, &json!({"text": "toolong"})).unwrap_err();
        assert_eq!(
            err,
            ContractError::StringLength {
                op: "demo".into(),
                field: "text".into(),
                min: 1,
                max: 5,
                len: 7
            }
        );
        let err = validate_value(&SCHEMA, &json!({"text": ""})).unwrap_err();
        assert_eq!(err.code(), "string_length");
    }

    #[test]
    fn integers_are_strict() {
        for (n, code) in [
            (json!(11), "out_of_range"),
            (json!(-4), "out_of_range"),
            (json!(u64::MAX), "out_of_range"),
            (json!(1.0), "wrong_type"),
            (json!(1.5), "wrong_type"),
            (json!("3"), "wrong_type"),
            (json!(true), "wrong_type"),
        ] {
            let err = validate_value(&SCHEMA, &json!({"text": "a", "n": n})).unwrap_err();
            assert_eq!(err.code(), code, "{n}: {err}");
            assert!(err.to_string().contains("`n`"), "{err}");
        }
    }

    #[test]
    fn booleans_keys_and_any() {
        for bad in [json!(2), json!("true"), json!(-1), json!(0.0)] {
            let err = validate_value(&SCHEMA, &json!({"text": "a", "flag": bad})).unwrap_err();
            assert_eq!(err.code(), "wrong_type", "{err}");
        }
        for bad in [
            json!("abc"),
            json!(KEY_UPPER.replace('A', "g")),
            json!(format!("{KEY_UPPER}00")),
            json!(1),
        ] {
            let err = validate_value(&SCHEMA, &json!({"text": "a", "user": bad})).unwrap_err();
            assert_eq!(err.code(), "wrong_type", "{err}");
            assert!(err.to_string().contains("hex key"), "{err}");
        }
        let err =
            validate_value(&SCHEMA, &json!({"text": "a", "blob": "0123456789abcdef"})).unwrap_err();
        assert_eq!(
            err,
            ContractError::FieldTooLarge {
                op: "demo".into(),
                field: "blob".into(),
                size: 18,
                max: 16
            }
        );
    }

    #[test]
    fn normalizes_to_canonical_form() {
        let v = json!({"blob": {"a": 1}, "user": KEY_UPPER, "flag": 1, "n": null, "text": "x"});
        let n = normalize_value(&SCHEMA, &v);
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            format!(
                r#"{{"text":"x","flag":true,"user":"{}","blob":{{"a":1}}}}"#,
                KEY_UPPER.to_ascii_lowercase()
            )
        );
        assert_eq!(normalize_value(&EMPTY, &json!({})), Value::Null);
        let invalid = json!({"nope": 1});
        assert_eq!(normalize_value(&SCHEMA, &invalid), invalid);
    }

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cli_flags_become_typed_values() {
        let v = value_from_cli(
            &SCHEMA,
            &args(&[
                ("--blob", r#"{"x":[1]}"#),
                ("flag", "TRUE"),
                ("n", " -2 "),
                ("user", KEY_UPPER),
                ("text", "hi"),
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"text": "hi", "n": -2, "flag": true, "user": KEY_UPPER.to_ascii_lowercase(), "blob": {"x": [1]}})
        );
        let v = value_from_cli(&SCHEMA, &args(&[("text", "a"), ("blob", "not json")])).unwrap();
        assert_eq!(v["blob"], json!("not json"));
        let v = value_from_cli(&SCHEMA, &args(&[("text", "a"), ("flag", "0")])).unwrap();
        assert_eq!(v["flag"], json!(false));
        assert_eq!(value_from_cli(&EMPTY, &[]).unwrap(), Value::Null);
    }

    #[test]
    fn cli_errors_name_the_flag() {
        let err = value_from_cli(&SCHEMA, &args(&[("n", "1.5")])).unwrap_err();
        assert_eq!(err.code(), "invalid_argument");
        assert!(
            err.to_string().contains("--n must be a decimal integer"),
            "{err}"
        );
        let err = value_from_cli(&SCHEMA, &args(&[("flag", "yes")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("--flag must be 0, 1, true or false"),
            "{err}"
        );
        let err = value_from_cli(&SCHEMA, &args(&[("bogus", "1")])).unwrap_err();
        assert!(matches!(err, ContractError::UnknownField { ref field, .. } if field == "bogus"));
        let err = value_from_cli(&SCHEMA, &args(&[("text", "a"), ("text", "b")])).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn typed_accessors() {
        let v = json!({"s": "x", "i": 4, "b": 0, "k": KEY_UPPER, "neg": -1, "nul": null});
        let a = Args::new("op", &v);
        assert_eq!(a.str("s").unwrap(), "x");
        assert_eq!(a.int("i").unwrap(), 4);
        assert_eq!(a.uint("i").unwrap(), 4);
        assert!(!a.bool("b").unwrap());
        assert_eq!(a.key("k").unwrap(), KEY_UPPER.to_ascii_lowercase());
        assert_eq!(a.opt_int("nul").unwrap(), None);
        assert_eq!(a.str("nul").unwrap_err().code(), "missing_field");
        assert_eq!(a.int("s").unwrap_err().code(), "wrong_type");
        assert_eq!(a.uint("neg").unwrap_err().code(), "out_of_range");
        assert_eq!(a.key("s").unwrap_err().code(), "wrong_type");
        assert_eq!(a.any("zzz").unwrap_err().code(), "missing_field");
        // Non-object values have no fields, and never panic.
        let s = json!("str");
        assert_eq!(
            Args::new("op", &s).str("s").unwrap_err().code(),
            "missing_field"
        );
    }

    #[test]
    fn describes_schemas_as_json() {
        let d = SCHEMA.describe();
        assert_eq!(d["name"], "demo");
        assert_eq!(
            d["fields"][0],
            json!({"name": "text", "type": "string", "required": true, "min_chars": 1, "max_chars": 5})
        );
        assert_eq!(
            d["fields"][3],
            json!({"name": "user", "type": "key", "required": false})
        );
        assert_eq!(json_size(&json!({"a": "é"})), 10);
    }
}
