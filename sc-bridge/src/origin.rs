//! The `Origin` allow-list of the WebSocket upgrade (an addition: the JS bridge checks no origin).
//!
//! Browsers send an `Origin` header with every WebSocket upgrade and let any page open `ws://127.0.0.1:49222`; local
//! agents (Node, Python, Rust clients) send none. So:
//!
//! * no `Origin` header: a local agent, accepted (it still has to authenticate);
//! * an `Origin` listed with `--sc-bridge-origin` (compared after [`normalize_origin`]): accepted;
//! * the bridge's own origins, only when [`OriginPolicy::new`] is given the bridge's bound address (for a page the
//!   bridge itself would serve): accepted;
//! * anything else, including the opaque origin `null`: refused with HTTP 403 before the upgrade.

use std::net::SocketAddr;

/// Why an `Origin` could not be put on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidOrigin {
    /// Not of the form `scheme://host[:port]`.
    #[error("{0:?} is not an origin (expected scheme://host[:port], e.g. http://localhost:3000)")]
    Malformed(String),
    /// `null` is what sandboxed frames and `file://` pages send: every such page would match.
    #[error("the opaque origin \"null\" cannot be allowed (every sandboxed page and file:// page sends it)")]
    Null,
}

/// An origin in the form compared: trimmed, lower-case, without a trailing `/`; `None` unless it is
/// `scheme://host[:port]` (no path, query or user info).
pub fn normalize_origin(raw: &str) -> Option<String> {
    let s = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = s.split_once("://")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let rest_ok = !rest.is_empty()
        && !rest
            .chars()
            .any(|c| "/?#@ \\".contains(c) || c.is_ascii_control());
    (scheme_ok && rest_ok).then_some(s)
}

/// The origins a page served by the bridge itself at `addr` would send: `http://IP:PORT`, plus
/// `http://localhost:PORT` for a loopback address.
pub fn own_origins(addr: SocketAddr) -> Vec<String> {
    let mut out = vec![format!("http://{addr}")];
    if addr.ip().is_loopback() {
        out.push(format!("http://localhost:{}", addr.port()));
    }
    out
}

/// What the allow-list said about one upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginVerdict {
    /// No `Origin` header: a local agent.
    NoOrigin,
    /// The origin is allowed.
    Allowed,
    /// The origin is not allowed: the upgrade is refused.
    Refused,
}

/// The allowed browser origins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// The policy for the origins in `allowed` (`--sc-bridge-origin`), plus the bridge's own origins when
    /// `own_address` is the bridge's bound address (set it once the bridge serves a page of its own).
    pub fn new(
        allowed: &[String],
        own_address: Option<SocketAddr>,
    ) -> Result<OriginPolicy, InvalidOrigin> {
        let mut list = Vec::new();
        for raw in allowed {
            if raw.trim().eq_ignore_ascii_case("null") {
                return Err(InvalidOrigin::Null);
            }
            let origin =
                normalize_origin(raw).ok_or_else(|| InvalidOrigin::Malformed(raw.clone()))?;
            list.push(origin);
        }
        list.extend(own_address.map(own_origins).into_iter().flatten());
        list.sort();
        list.dedup();
        Ok(OriginPolicy { allowed: list })
    }

    /// The verdict for a request's `Origin` header (`None` when it has none).
    pub fn check(&self, origin: Option<&str>) -> OriginVerdict {
        let Some(origin) = origin else {
            return OriginVerdict::NoOrigin;
        };
        match normalize_origin(origin) {
            Some(o) if self.allowed.binary_search(&o).is_ok() => OriginVerdict::Allowed,
            _ => OriginVerdict::Refused,
        }
    }

    /// The allowed origins, normalized.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_validates() {
        assert_eq!(
            normalize_origin(" HTTP://LocalHost:3000/ ").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(
            normalize_origin("chrome-extension://abcdef").as_deref(),
            Some("chrome-extension://abcdef")
        );
        for bad in [
            "localhost:3000",
            "http://",
            "http://a/b",
            "http://u@h",
            "://h",
            "1http://h",
            "",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn verdicts() {
        let p = OriginPolicy::new(&["http://localhost:3000".into()], None).unwrap();
        assert_eq!(p.check(None), OriginVerdict::NoOrigin);
        assert_eq!(
            p.check(Some("http://LOCALHOST:3000")),
            OriginVerdict::Allowed
        );
        assert_eq!(p.check(Some("http://evil.example")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("null")), OriginVerdict::Refused);
        assert_eq!(p.check(Some("garbage")), OriginVerdict::Refused);
        let addr: SocketAddr = "127.0.0.1:49222".parse().unwrap();
        assert_eq!(
            p.check(Some("http://127.0.0.1:49222")),
            OriginVerdict::Refused
        );
        let own = OriginPolicy::new(&[], Some(addr)).unwrap();
        assert_eq!(
            own.check(Some("http://127.0.0.1:49222")),
            OriginVerdict::Allowed
        );
        assert_eq!(
            own.check(Some("http://localhost:49222")),
            OriginVerdict::Allowed
        );
        assert_eq!(
            own.check(Some("http://localhost:49223")),
            OriginVerdict::Refused
        );
        assert_eq!(
            OriginPolicy::new(&["null".into()], None),
            Err(InvalidOrigin::Null)
        );
        assert!(matches!(
            OriginPolicy::new(&["localhost".into()], None),
            Err(InvalidOrigin::Malformed(_))
        ));
    }
}
