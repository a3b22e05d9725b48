//! Typed values of the command-line flags, shared by every subcommand: clap parses each flag
//! into one of these once, so a bad value is refused with the flag's name before anything
//! runs, and the code behind the flags never re-parses strings.
//!
//! The spellings follow the JS Intercom (`index.js`): booleans are `0|1|true|false|yes|no|
//! on|off` in any case, lists are comma-separated with blanks trimmed and empty items
//! dropped (`parseCsvList`), pairs are `KEY:VALUE` or `KEY=VALUE` (`parseKeyValueList`).
//! Where the reference silently falls back to a default on a value it cannot read, these
//! parsers refuse it (documented in SKILL.md, "Differences").

use std::fmt;
use std::str::FromStr;

use intercom_sidechannel::args::{parse_csv_list, parse_key_value_list};

/// What a boolean flag accepts, for `value_name`.
pub const BOOL: &str = "0|1";

/// A boolean flag's value: `1|true|yes|on` or `0|false|no|off`, any case, blanks trimmed.
pub fn flag_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "expected one of 0|1|true|false|yes|no|on|off, got {raw:?}"
        )),
    }
}

/// A comma-separated list: items trimmed, empty ones dropped (`a, b,,c` is `[a, b, c]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvList(pub Vec<String>);

impl FromStr for CsvList {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(CsvList(parse_csv_list(raw)))
    }
}

impl fmt::Display for CsvList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `KEY:VALUE[,KEY2=VALUE2...]` pairs; entries without a key or a value are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairList(pub Vec<(String, String)>);

impl FromStr for PairList {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(PairList(parse_key_value_list(raw)))
    }
}

/// DHT nodes as `HOST:PORT[,HOST:PORT...]` (a host may be `IP@NAME` as in the JS lists);
/// each entry is checked for a port here and resolved when the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList(pub Vec<String>);

impl FromStr for NodeList {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let nodes = parse_csv_list(raw);
        if nodes.is_empty() {
            return Err("expected HOST:PORT[,HOST:PORT...], got an empty list".into());
        }
        for node in &nodes {
            let port = node.rsplit_once(':').map(|(_, p)| p);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(format!("node {node:?} is not HOST:PORT"));
            }
        }
        Ok(NodeList(nodes))
    }
}

impl fmt::Display for NodeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// 32 bytes written as 64 hex characters (keys, topics, seeds, hashes, state roots).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex32(pub [u8; 32]);

impl FromStr for Hex32 {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(raw.trim()).map_err(|_| format!("not valid hex: {raw:?}"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Hex32)
            .map_err(|_| {
                format!(
                    "expected 32 bytes (64 hex characters), got {} bytes",
                    bytes.len()
                )
            })
    }
}

impl fmt::Display for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Seeds are secrets: a debug print of the parsed flags shows only that one was given.
impl fmt::Debug for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hex32(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_take_the_reference_spellings_and_refuse_others() {
        for t in ["1", "true", " YES ", "On"] {
            assert_eq!(flag_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "false", "No", "OFF"] {
            assert_eq!(flag_bool(f), Ok(false), "{f}");
        }
        assert!(flag_bool("maybe").unwrap_err().contains("maybe"));
        assert!(flag_bool("").is_err());
    }

    #[test]
    fn lists_pairs_nodes_and_keys() {
        assert_eq!("a, b,,c".parse::<CsvList>().unwrap().0, ["a", "b", "c"]);
        assert_eq!(
            "a:AB, b=cd,:x,y:".parse::<PairList>().unwrap().0,
            [("a".into(), "AB".into()), ("b".into(), "cd".into())]
        );
        let nodes: NodeList = "127.0.0.1:1, 1.2.3.4@n.example:49737".parse().unwrap();
        assert_eq!(nodes.to_string(), "127.0.0.1:1,1.2.3.4@n.example:49737");
        assert!("nohostport".parse::<NodeList>().is_err());
        assert!("h:70000".parse::<NodeList>().is_err());
        assert!(" , ".parse::<NodeList>().is_err());
        let key: Hex32 = "AB".repeat(32).parse().unwrap();
        assert_eq!(key.0, [0xab; 32]);
        assert_eq!(key.to_string(), "ab".repeat(32));
        assert_eq!(format!("{key:?}"), "Hex32(..)");
        assert!("abcd".parse::<Hex32>().unwrap_err().contains("2 bytes"));
        assert!("xyz".parse::<Hex32>().unwrap_err().contains("hex"));
    }
}
