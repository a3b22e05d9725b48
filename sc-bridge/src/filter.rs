//! Word filters for `sidechannel_message` events (the reference's `parseFilter` / `matchesFilter` /
//! `filterChannels`).
//!
//! Syntax: `alpha+beta|gamma` means **(alpha AND beta) OR gamma**.
//!
//! ```text
//!   filter := group ( '|' group )*
//!   group  := word ( sep+ word )*        sep := '+' | ',' | whitespace
//! ```
//!
//! Words are lower-cased; a message matches when, for at least one group, every word is a (case-insensitive)
//! substring of the message text. An empty filter (no non-empty group) matches everything. The message text is the
//! message itself when it is a JSON string, otherwise its compact JSON encoding (the reference's `normalizeText`).
//!
//! [`FilterScope`] is the reference's `filterChannels`: when set, filters only apply to the listed channels and
//! messages on every other channel pass through unfiltered.

use std::collections::HashSet;

/// A parsed filter: OR over groups, AND over the words of a group. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    groups: Vec<Vec<String>>,
}

impl Filter {
    /// Parses the reference syntax; never fails (garbage simply yields words that rarely match).
    pub fn parse(raw: &str) -> Filter {
        let groups = raw
            .split('|')
            .map(|group| {
                group
                    .trim()
                    .split(|c: char| c == '+' || c == ',' || c.is_whitespace())
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.is_empty())
            .collect();
        Filter { groups }
    }

    /// The empty filter, which matches everything.
    pub fn empty() -> Filter {
        Filter::default()
    }

    /// True when the filter has no group (matches everything).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The parsed groups (lower-cased words).
    pub fn groups(&self) -> &[Vec<String>] {
        &self.groups
    }

    /// Does `text` match? Lower-cases `text` first.
    pub fn matches(&self, text: &str) -> bool {
        if self.groups.is_empty() {
            return true;
        }
        self.matches_lowercase(&text.to_lowercase())
    }

    /// Like [`Filter::matches`] for a haystack that is already lower-cased (computed once per event).
    pub fn matches_lowercase(&self, haystack: &str) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|group| group.iter().all(|word| haystack.contains(word.as_str())))
    }
}

/// Which channels filters apply to (the reference's `filterChannels`, set by `--sc-bridge-filter-channel`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FilterScope {
    /// Filters apply to every channel (the default).
    #[default]
    AllChannels,
    /// Filters apply only to these channels; others always pass. An empty set means filters apply nowhere (as in
    /// the reference, where an empty `filterChannels` array disables filtering).
    Only(HashSet<String>),
}

impl FilterScope {
    /// Builds the scope from the config's optional channel list.
    pub fn from_channels(channels: Option<&[String]>) -> FilterScope {
        match channels {
            None => FilterScope::AllChannels,
            Some(list) => FilterScope::Only(list.iter().cloned().collect()),
        }
    }

    /// Does the client's filter apply to messages on `channel`?
    pub fn applies(&self, channel: &str) -> bool {
        match self {
            FilterScope::AllChannels => true,
            FilterScope::Only(set) => set.contains(channel),
        }
    }
}

/// Parses the `--sc-bridge-filter-channel "chan1,chan2"` flag the way the reference's `index.js` does: `None` for an
/// empty flag, otherwise the comma-separated, trimmed, non-empty names.
pub fn parse_filter_channels(raw: &str) -> Option<Vec<String>> {
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(raw: &str) -> Vec<Vec<String>> {
        Filter::parse(raw).groups
    }

    #[test]
    fn parse_reference_syntax() {
        assert_eq!(
            groups("alpha+beta|gamma"),
            vec![vec!["alpha", "beta"], vec!["gamma"]]
        );
        assert_eq!(
            groups("  A, b  c+D | | E "),
            vec![vec!["a", "b", "c", "d"], vec!["e"]]
        );
        assert_eq!(groups(""), Vec::<Vec<String>>::new());
        assert_eq!(groups("|||+,, "), Vec::<Vec<String>>::new());
        assert_eq!(groups("x\ty\nz"), vec![vec!["x", "y", "z"]]);
        assert_eq!(groups("ÄPFEL"), vec![vec!["äpfel"]]);
    }

    #[test]
    fn matching() {
        let f = Filter::parse("alpha+beta|gamma");
        assert!(f.matches("ALPHA then Beta"));
        assert!(f.matches("betalphabet")); // substring semantics, like the reference
        assert!(f.matches("just gamma"));
        assert!(!f.matches("alpha only"));
        assert!(!f.matches(""));
        assert!(Filter::empty().matches("anything"));
        assert!(Filter::parse("  ").matches("anything"));
        let f = Filter::parse("trade,btc");
        assert!(f.matches(r#"{"kind":"TRADE","pair":"BTC/USD"}"#));
        assert!(!f.matches(r#"{"kind":"TRADE","pair":"ETH/USD"}"#));
    }

    #[test]
    fn scope() {
        assert!(FilterScope::AllChannels.applies("x"));
        let only = FilterScope::from_channels(Some(&["a".to_string()]));
        assert!(only.applies("a"));
        assert!(!only.applies("b"));
        assert!(!FilterScope::from_channels(Some(&[])).applies("a"));
        assert_eq!(FilterScope::from_channels(None), FilterScope::AllChannels);
    }

    #[test]
    fn filter_channel_flag() {
        assert_eq!(parse_filter_channels(""), None);
        assert_eq!(
            parse_filter_channels(" a , ,b,"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_filter_channels(" , "), Some(vec![]));
    }
}
