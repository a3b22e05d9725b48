//! The JavaScript coercions the reference applies to peer-supplied JSON.
//!
//! Signatures and proofs of work are computed over values *after* the reference has
//! normalised them with `String(x)`, `Number(x)`, `x.trim().toLowerCase()`, Node's lenient
//! hex and base64 decoders and so on. A peer that coerces differently signs or hashes
//! different text, so each coercion is reproduced here exactly for every JSON value.

use intercom_encoding::js_json;
use serde_json::Value;

/// `String.prototype.trim`: strips ECMAScript WhiteSpace and LineTerminator code points
/// (which include U+FEFF but, unlike Rust's `trim`, not U+0085).
pub fn trim(s: &str) -> &str {
    s.trim_matches(is_js_whitespace)
}

fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// JS truthiness of a JSON value (`null`, `false`, `0`, `""` are falsy).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `v && typeof v === 'object'`: an object or an array.
pub fn is_object(v: &Value) -> bool {
    matches!(v, Value::Object(_) | Value::Array(_))
}

/// `obj?.[key]` for a JSON value: the property when `v` is an object.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key),
        _ => None,
    }
}

/// `a || b`: the first truthy candidate.
pub fn first_truthy<'a>(candidates: &[Option<&'a Value>]) -> Option<&'a Value> {
    candidates.iter().flatten().copied().find(|v| truthy(v))
}

/// `String(v)`.
pub fn to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_) => js_json::to_string(v),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => to_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// `Number(v)`; `NaN` where JS gives `NaN`.
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => string_to_number(s),
        Value::Array(_) => string_to_number(&to_string(v)),
        Value::Object(_) => f64::NAN,
    }
}

/// `Number.isFinite(v) ? Number(v) : fallback`: only genuine numbers count.
pub fn finite_number_or(v: Option<&Value>, fallback: f64) -> f64 {
    match v {
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()).unwrap_or(fallback),
        _ => fallback,
    }
}

/// ECMAScript StringToNumber.
fn string_to_number(s: &str) -> f64 {
    let t = trim(s);
    if t.is_empty() {
        return 0.0;
    }
    let radix = match t.get(..2) {
        Some("0x") | Some("0X") => Some(16),
        Some("0o") | Some("0O") => Some(8),
        Some("0b") | Some("0B") => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        let digits = &t[2..];
        if digits.is_empty() {
            return f64::NAN;
        }
        let mut acc = 0f64;
        for c in digits.chars() {
            match c.to_digit(radix) {
                Some(d) => acc = acc * f64::from(radix) + f64::from(d),
                None => return f64::NAN,
            }
        }
        return acc;
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    // StrDecimalLiteral: digits, one '.', an exponent; Rust's parser would also take
    // "inf", "nan" and "infinity", which JS does not.
    if !unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        || !unsigned
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// `ToUint8(Number(v))`, as `Buffer.from(array)` stores each element.
fn to_uint8(v: &Value) -> u8 {
    let f = to_number(v);
    if !f.is_finite() {
        return 0;
    }
    f.trunc().rem_euclid(256.0) as u8
}

/// The reference's `normalizeKeyHex`: `null` for falsy values, trimmed lower-case text for
/// strings, hex for `{type:'Buffer', data:[...]}` (what `JSON.stringify(Buffer)` yields),
/// and `String(v)` trimmed and lower-cased for anything else.
pub fn normalize_key_hex(v: &Value) -> Option<String> {
    if !truthy(v) {
        return None;
    }
    match v {
        Value::String(s) => Some(trim(s).to_lowercase()),
        Value::Object(m)
            if m.get("type").and_then(Value::as_str) == Some("Buffer")
                && m.get("data").is_some_and(Value::is_array) =>
        {
            let data = m.get("data").and_then(Value::as_array)?;
            Some(hex::encode(data.iter().map(to_uint8).collect::<Vec<u8>>()))
        }
        other => Some(trim(&to_string(other)).to_lowercase()),
    }
}

/// `normalizeKeyHex(v) || ''` for an optional property.
pub fn key_or_empty(v: Option<&Value>) -> String {
    v.and_then(normalize_key_hex).unwrap_or_default()
}

/// The reference's `normalizeChannel`: `String(v || '').trim()`.
pub fn normalize_channel(v: Option<&Value>) -> String {
    match v {
        Some(v) if truthy(v) => trim(&to_string(v)).to_owned(),
        _ => String::new(),
    }
}

/// `Buffer.from(s, 'hex')` in Node: decodes pairs until the first invalid one and drops
/// a trailing odd nibble.
pub fn node_hex_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        match (hex_val(pair[0]), hex_val(pair[1])) {
            (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
            _ => break,
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The reference's `stableStringify` for JSON-parsed values: `JSON.stringify` with every
/// object's keys sorted.
pub fn stable_stringify(v: &Value) -> String {
    js_json::to_sorted_string(v)
}

/// A JS number as a JSON value (integers stay integers so they print without a fraction).
pub fn number_value(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
        if f == 0.0 {
            return Value::from(0u64);
        }
        return Value::from(f as i64);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trim_matches_js() {
        assert_eq!(trim("\u{feff} a b\u{2028}\u{a0}"), "a b");
        assert_eq!(trim("\u{85}x"), "\u{85}x");
    }

    #[test]
    fn string_and_number_coercions() {
        assert_eq!(to_string(&json!([1, null, "a", [2, 3]])), "1,,a,2,3");
        assert_eq!(to_string(&json!({"a": 1})), "[object Object]");
        assert_eq!(to_string(&json!(1e21)), "1e+21");
        assert_eq!(to_number(&json!(" 12 ")), 12.0);
        assert_eq!(to_number(&json!("0x1f")), 31.0);
        assert_eq!(to_number(&json!("")), 0.0);
        assert_eq!(to_number(&json!(null)), 0.0);
        assert_eq!(to_number(&json!([7])), 7.0);
        assert_eq!(to_number(&json!("-Infinity")), f64::NEG_INFINITY);
        assert!(to_number(&json!("inf")).is_nan());
        assert!(to_number(&json!("1e")).is_nan());
        assert!(to_number(&json!({})).is_nan());
        assert_eq!(finite_number_or(Some(&json!("2")), 1.0), 1.0);
        assert_eq!(finite_number_or(Some(&json!(2)), 1.0), 2.0);
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(normalize_key_hex(&json!(" ABcd ")), Some("abcd".into()));
        assert_eq!(normalize_key_hex(&json!("")), None);
        assert_eq!(normalize_key_hex(&json!(0)), None);
        assert_eq!(
            normalize_key_hex(&json!({"type": "Buffer", "data": [1, 255, 256, -1, "2"]})),
            Some("01ff00ff02".into())
        );
        assert_eq!(normalize_key_hex(&json!(12)), Some("12".into()));
        assert_eq!(
            normalize_key_hex(&json!({"a": 1})),
            Some("[object object]".into())
        );
    }

    #[test]
    fn node_decoders() {
        assert_eq!(node_hex_decode("abzzcd"), vec![0xab]);
        assert_eq!(node_hex_decode("ABc"), vec![0xab]);
    }
}
