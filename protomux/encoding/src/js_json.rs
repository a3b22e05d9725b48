//! JSON text exactly as JavaScript's `JSON.stringify` writes it.
//!
//! Signatures and proofs of work in the sidechannel plane, and every `c.json` field, hash
//! or compare the JSON text a JS peer produced, so our text must match theirs byte for
//! byte. Three things differ from `serde_json::to_string`:
//! - numbers follow ECMAScript `Number::toString` (`5` not `5.0`, `1e+21`, `1.5e-7`);
//! - object keys that are array indices (`"0"`, `"17"`) come first in ascending order,
//!   the other keys keep insertion order, as JS engines order object properties;
//! - `-0` prints as `0`, and non-finite numbers as `null`.

use serde_json::{Map, Number, Value};

/// `JSON.stringify(value)`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, KeyOrder::Js);
    out
}

/// `JSON.stringify` of `value` with every object's keys sorted by UTF-16 code units, the
/// usual "stable stringify" used for signing (`Object.keys(o).sort()`).
pub fn to_sorted_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, KeyOrder::Sorted);
    out
}

/// Appends [`to_sorted_string`]'s text of `value` to `out`.
pub fn write_sorted(out: &mut String, value: &Value) {
    write_value(out, value, KeyOrder::Sorted);
}

#[derive(Clone, Copy)]
enum KeyOrder {
    /// Array-index keys ascending, then insertion order (a JS object's own order).
    Js,
    /// All keys sorted by UTF-16 code units.
    Sorted,
}

fn write_value(out: &mut String, value: &Value, order: KeyOrder) {
    match value {
        // The common case needs no reordering, and no list of entries.
        Value::Object(map) if matches!(order, KeyOrder::Js) && !has_index_key(map) => {
            write_object(out, map.iter(), order)
        }
        Value::Object(map) => {
            let entries = match order {
                KeyOrder::Js => js_key_order(map),
                KeyOrder::Sorted => {
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                    entries
                }
            };
            write_object(out, entries.into_iter(), order)
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v, order);
            }
            out.push(']');
        }
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
    }
}

fn write_object<'a>(
    out: &mut String,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    order: KeyOrder,
) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_value(out, v, order);
    }
    out.push('}');
}

/// Keys in the order a JS engine enumerates them: array indices ascending, then the rest
/// in insertion order.
fn js_key_order(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut indices: Vec<(u32, &String, &Value)> = Vec::new();
    let mut others: Vec<(&String, &Value)> = Vec::new();
    for (k, v) in map {
        match array_index(k) {
            Some(i) => indices.push((i, k, v)),
            None => others.push((k, v)),
        }
    }
    if indices.is_empty() {
        return others;
    }
    indices.sort_by_key(|(i, _, _)| *i);
    indices
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .chain(others)
        .collect()
}

fn has_index_key(map: &Map<String, Value>) -> bool {
    map.keys().any(|k| array_index(k).is_some())
}

/// A canonical decimal integer below 2^32 - 1 (an ECMAScript array index).
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    (n < u64::from(u32::MAX)).then_some(n as u32)
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    // Runs of characters that need no escape are copied whole. Every byte of a multi-byte
    // UTF-8 character is 0x80 or above, so a byte-wise search never splits one.
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        match short {
            Some(escape) => out.push_str(escape),
            None => out.push_str(&format!("\\u{b:04x}")),
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Largest integer a JS number holds exactly.
const MAX_SAFE: u64 = (1 << 53) - 1;

fn write_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE {
            out.push_str(&u.to_string());
            return;
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE {
            out.push_str(&i.to_string());
            return;
        }
    }
    match n.as_f64() {
        Some(f) => out.push_str(&number_to_string(f)),
        None => out.push_str("null"),
    }
}

/// ECMAScript `Number::toString(x)` for finite `x`; `null` otherwise (as JSON.stringify).
pub fn number_to_string(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Rust's `{:e}` prints the shortest digits that round-trip, as ECMAScript requires.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let esign = if e < 0 { '-' } else { '+' };
        if k == 1 {
            format!("{digits}e{esign}{}", e.abs())
        } else {
            format!("{}.{}e{esign}{}", &digits[..1], &digits[1..], e.abs())
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped_as_json_stringify_escapes_them() {
        // serde_json escapes strings exactly as JSON.stringify does for valid UTF-8.
        let mut all_ascii: String = (0u8..0x80).map(char::from).collect();
        all_ascii.push_str("é€𝄞\u{2028}\u{7f}");
        for text in [
            all_ascii.as_str(),
            "",
            "plain",
            "\"",
            "a\\b",
            "\u{1f}x\u{0}",
        ] {
            let mut out = String::new();
            write_string(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_javascript_does() {
        let cases = [
            (5.0, "5"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123.456, "123.456"),
            (-2.5e300, "-2.5e+300"),
            (5e-324, "5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(number_to_string(x), want, "{x}");
        }
    }

    #[test]
    fn index_keys_come_first() {
        let v: Value = serde_json::from_str(r#"{"b":1,"2":2,"a":3,"1":4,"01":5}"#).unwrap();
        assert_eq!(to_string(&v), r#"{"1":4,"2":2,"b":1,"a":3,"01":5}"#);
    }

    #[test]
    fn sorted_keys_and_escapes() {
        let v = json!({"z": "a\u{1}\n\"", "a": [1.0, null, true]});
        assert_eq!(
            to_sorted_string(&v),
            r#"{"a":[1,null,true],"z":"a\u0001\n\""}"#
        );
    }
}
