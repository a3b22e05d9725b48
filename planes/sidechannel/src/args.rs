//! Parsing of welcome and invite arguments and of the sidechannel flag lists, in every
//! form the reference accepts (`index.js` `parseWelcomeValue`, `contract/protocol.js`
//! `parseInviteArg` / `parseWelcomeArg`, SC-Bridge `parseJsonOrBase64`).
//!
//! ```text
//! @<path>          file reference: the caller reads the file, then `parse_arg_file_text`
//! b64:<base64>     base64 of the JSON text (prefix optional)
//! {...}            JSON text
//! <base64>         base64 of the JSON text (Node's lenient decoder)
//! ```
//!
//! No I/O happens here: the `@file` form is returned as [`ArgError::FileReference`] so the
//! binary resolves the path with its own working directory and error reporting.

use serde_json::Value;

use crate::js;

/// Why an argument is not a welcome or invite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// The argument is empty after trimming.
    #[error("empty argument")]
    Empty,
    /// `@path`: read the file and pass its text to [`parse_arg_file_text`].
    #[error("file reference {0:?} must be read by the caller")]
    FileReference(String),
    /// Neither JSON text nor base64 of JSON text.
    #[error("not JSON, base64 JSON or @file")]
    Invalid,
    /// Valid JSON, but not an object.
    #[error("credential JSON is not an object")]
    NotAnObject,
}

/// Parses a welcome argument (`--welcome`, `--sidechannel-welcome` values).
pub fn parse_welcome_arg(raw: &str) -> Result<Value, ArgError> {
    parse_credential_arg(raw)
}

/// Parses an invite argument (`--invite`).
pub fn parse_invite_arg(raw: &str) -> Result<Value, ArgError> {
    parse_credential_arg(raw)
}

fn parse_credential_arg(raw: &str) -> Result<Value, ArgError> {
    let text = js::trim(raw);
    if text.is_empty() {
        return Err(ArgError::Empty);
    }
    if let Some(path) = text.strip_prefix('@') {
        return Err(ArgError::FileReference(path.to_owned()));
    }
    parse_text_form(text)
}

/// Parses the text of a file named by an `@path` argument.
pub fn parse_arg_file_text(contents: &str) -> Result<Value, ArgError> {
    let text = js::trim(contents);
    if text.is_empty() {
        return Err(ArgError::Empty);
    }
    parse_text_form(text)
}

fn parse_text_form(text: &str) -> Result<Value, ArgError> {
    let text = text.strip_prefix("b64:").unwrap_or(text);
    let value = if text.starts_with('{') {
        serde_json::from_str::<Value>(text).map_err(|_| ArgError::Invalid)?
    } else {
        decode_base64_json(text)?
    };
    if value.is_object() {
        Ok(value)
    } else {
        Err(ArgError::NotAnObject)
    }
}

fn decode_base64_json(text: &str) -> Result<Value, ArgError> {
    let bytes = intercom_encoding::base64::decode_lenient(text);
    let decoded = String::from_utf8_lossy(&bytes);
    serde_json::from_str::<Value>(&decoded).map_err(|_| ArgError::Invalid)
}

/// SC-Bridge's `parseJsonOrBase64`: an object passes through, a string is JSON text or
/// base64 JSON (no `b64:` prefix, no `@file`).
pub fn parse_json_or_base64(value: &Value) -> Result<Value, ArgError> {
    match value {
        Value::Object(_) => Ok(value.clone()),
        Value::String(s) => {
            let t = js::trim(s);
            if t.is_empty() {
                return Err(ArgError::Empty);
            }
            let v = if t.starts_with('{') {
                serde_json::from_str::<Value>(t).map_err(|_| ArgError::Invalid)?
            } else {
                decode_base64_json(t)?
            };
            if v.is_object() {
                Ok(v)
            } else {
                Err(ArgError::NotAnObject)
            }
        }
        v if !js::truthy(v) => Err(ArgError::Empty),
        _ => Err(ArgError::Invalid),
    }
}

/// `parseBool`: `1`, `true`, `yes`, `on` (any case) are true, any other non-empty text is
/// false, empty or absent text gives `fallback`.
pub fn parse_bool(raw: Option<&str>, fallback: bool) -> bool {
    match raw {
        None | Some("") => fallback,
        Some(s) => matches!(
            js::trim(s).to_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
    }
}

/// `parseCsvList`: comma-separated, trimmed, empty items dropped.
pub fn parse_csv_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|s| js::trim(s).to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `parseKeyValueList`: `k:v,k2=v2` pairs split at the first `:` (or, when there is none,
/// the first `=`); entries without a key or value are dropped.
pub fn parse_key_value_list(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .map(js::trim)
        .filter(|e| !e.is_empty())
        .filter_map(|entry| {
            let at = entry.find(':').or_else(|| entry.find('='))?;
            if at == 0 {
                return None;
            }
            let key = js::trim(&entry[..at]);
            let value = js::trim(&entry[at + 1..]);
            (!key.is_empty() && !value.is_empty()).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_form() {
        let v = json!({"payload": {"channel": "x"}, "sig": "ab"});
        let text = v.to_string();
        let b64 = intercom_encoding::base64::encode(text.as_bytes());
        assert_eq!(parse_welcome_arg(&text).unwrap(), v);
        assert_eq!(parse_welcome_arg(&format!("  {b64}\n")).unwrap(), v);
        assert_eq!(parse_invite_arg(&format!("b64:{b64}")).unwrap(), v);
        assert_eq!(parse_invite_arg(&format!("b64:{text}")).unwrap(), v);
        assert_eq!(
            parse_invite_arg("@./w.b64"),
            Err(ArgError::FileReference("./w.b64".into()))
        );
        assert_eq!(parse_arg_file_text(&format!("{b64}\n")).unwrap(), v);
        assert_eq!(parse_welcome_arg("  "), Err(ArgError::Empty));
        assert_eq!(parse_welcome_arg("{bad"), Err(ArgError::Invalid));
        assert_eq!(parse_welcome_arg("!!!"), Err(ArgError::Invalid));
        assert_eq!(
            parse_welcome_arg(&intercom_encoding::base64::encode(b"5")),
            Err(ArgError::NotAnObject)
        );
        assert_eq!(parse_json_or_base64(&v).unwrap(), v);
        assert_eq!(parse_json_or_base64(&json!(b64)).unwrap(), v);
        assert_eq!(parse_json_or_base64(&json!(null)), Err(ArgError::Empty));
        assert_eq!(parse_json_or_base64(&json!(5)), Err(ArgError::Invalid));
    }

    #[test]
    fn flag_lists() {
        assert!(parse_bool(Some("YES"), false));
        assert!(!parse_bool(Some("0"), true));
        assert!(parse_bool(None, true));
        assert_eq!(parse_csv_list(" a, ,b "), vec!["a", "b"]);
        assert_eq!(
            parse_key_value_list("a:1, b=2 ,:x,c:,d:e:f"),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
                ("d".to_owned(), "e:f".to_owned())
            ]
        );
    }
}
