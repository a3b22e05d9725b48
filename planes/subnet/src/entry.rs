//! Subnet entries: what one block of a writer log holds, and its byte codec (pure,
//! never panics on peer input).
//!
//! ```text
//! entry   = version(=1) · timestamp(uint, ms) · heads · count(uint) · body*
//! heads   = count(uint) · { writer key(32) · length(uint) }*     (what the author had
//!           seen of other writers' logs since its previous entry; lengths only grow)
//! body    = tag(uint8) · fields
//!   0 bind         author(32) · signature(64)   identity of the peer that writes this log
//!   1 ack          —                            an indexer acknowledging what it has seen
//!   2 membership   kind(uint8) · fields          see [`Membership`] (9 set_quota:
//!                  has_author(uint8) · [author(32)] · keys(uint) · bytes(uint))
//!   3 transaction  json (operation)             gated by enable_transactions
//!   4 action       json (operation)             chat-style contract ops, never gated
//!   5 feature      name(string) · json           outside data from an allowed peer
//! ```
//!
//! One entry carries every operation its author appended at once (a writer batches what
//! its agents submitted while the previous append was being written): the entry is the
//! unit of ordering, its bodies apply one after the other at the entry's position.
//!
//! The log's own Merkle-tree signature (made with the writer key) signs every entry; the
//! `bind` entry at position 0 binds the writer key to the author's peer key, signed by
//! the author, so every later entry of the log is attributable to that author.

use intercom_encoding::{DecodeError, Reader, Writer};
use serde_json::Value;

/// The only entry version this code writes and reads.
pub const ENTRY_VERSION: u64 = 1;
/// Most heads one entry may carry (a subnet has far fewer writers).
pub const MAX_HEADS: u64 = 1024;
/// Most bodies one entry may carry.
pub const MAX_BODIES: u64 = 1024;
/// Largest JSON payload (operation or feature data) one body may carry.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024;
/// Longest feature name.
pub const MAX_FEATURE_NAME: usize = 64;
/// Size a writer keeps its entries under: it starts a new entry (block) before one
/// would grow past this with another body.
pub const TARGET_ENTRY_BYTES: usize = 1024 * 1024;
/// Largest log block a subnet peer downloads or stores (a block above it is refused by
/// replication, so a log holding one stops there on every peer alike). Writers stay
/// under [`TARGET_ENTRY_BYTES`] plus one body and a full set of heads.
pub const MAX_ENTRY_BYTES: usize = 2 * 1024 * 1024;

/// A writer's or author's 32-byte public key.
pub type Key = [u8; 32];

/// One decoded subnet entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Author's wall-clock time when writing, ms since the epoch (the op's own timestamp).
    pub timestamp: u64,
    /// Lengths of other writers' logs the author had seen, newly since its previous entry.
    pub heads: Vec<(Key, u64)>,
    /// What the entry does, in order (at least one).
    pub bodies: Vec<Body>,
}

/// The payload of an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Binds the log to its author's peer key.
    Bind {
        /// The author's ed25519 public key (its peer address).
        author: Key,
        /// `sign(author, bind_message(channel, writer))`.
        signature: [u8; 64],
    },
    /// An indexer acknowledging the heads it carries.
    Ack,
    /// A membership operation.
    Membership(Membership),
    /// A contract transaction (`/tx`), applied only once transactions are enabled.
    Transaction(Value),
    /// A contract action (chat and the like), never gated.
    Action(Value),
    /// A feature (oracle) entry.
    Feature {
        /// The feature's name, e.g. `timer`.
        name: String,
        /// The feature's data.
        data: Value,
    },
}

/// Membership operations, checked against the membership state at their position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Names the admin (bootstrap writer only, once).
    AddAdmin(Key),
    /// Transfers admin rights, or waives them with `None`.
    UpdateAdmin(Option<Key>),
    /// Admits a writer log.
    AddWriter(Key),
    /// Removes a writer (and indexer) log.
    RemoveWriter(Key),
    /// Admits an indexer log (also a writer).
    AddIndexer(Key),
    /// Removes an indexer; as in the reference (an alias of remove_writer) the log stops
    /// being a writer too.
    RemoveIndexer(Key),
    /// Lets writers join by request.
    SetAutoAddWriters(bool),
    /// Opens the subnet to contract transactions.
    EnableTransactions,
    /// Sets the state quota of one author (`Some`) or the default of every author
    /// without its own (`None`): how many keys and bytes (key plus JSON value) of contract
    /// state its operations may hold.
    SetQuota {
        /// The author's address, or `None` for the default.
        author: Option<Key>,
        /// Most keys.
        keys: u64,
        /// Most bytes.
        bytes: u64,
    },
    /// A writer's own signed join request, appended on its behalf.
    JoinRequest {
        /// The joining writer log's key.
        writer: Key,
        /// The joiner's peer key.
        author: Key,
        /// `sign(author, join_message(channel, writer))`.
        signature: [u8; 64],
    },
}

impl Membership {
    /// The op name as the CLI and the bridge spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Membership::AddAdmin(_) => "add_admin",
            Membership::UpdateAdmin(_) => "update_admin",
            Membership::AddWriter(_) => "add_writer",
            Membership::RemoveWriter(_) => "remove_writer",
            Membership::AddIndexer(_) => "add_indexer",
            Membership::RemoveIndexer(_) => "remove_indexer",
            Membership::SetAutoAddWriters(_) => "set_auto_add_writers",
            Membership::EnableTransactions => "enable_transactions",
            Membership::JoinRequest { .. } => "join_request",
            Membership::SetQuota { .. } => "set_quota",
        }
    }
}

impl Body {
    /// A short type name for events and logs.
    pub fn type_name(&self) -> &str {
        match self {
            Body::Bind { .. } => "bind",
            Body::Ack => "ack",
            Body::Membership(m) => m.name(),
            Body::Transaction(_) => "tx",
            Body::Action(_) => "action",
            Body::Feature { .. } => "feature",
        }
    }
}

/// Why bytes are not a subnet entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The bytes end early or hold a malformed field.
    #[error("malformed subnet entry: {0}")]
    Decode(#[from] DecodeError),
    /// An entry version this code does not know.
    #[error("unknown subnet entry version {0}")]
    Version(u64),
    /// An unknown body or membership tag.
    #[error("unknown subnet entry tag {0}")]
    Tag(u8),
    /// No bodies, or more than [`MAX_BODIES`].
    #[error("subnet entry carries {0} bodies (1 to {MAX_BODIES})")]
    BodyCount(u64),
    /// Too many heads.
    #[error("subnet entry carries {0} heads (at most {MAX_HEADS})")]
    TooManyHeads(u64),
    /// A JSON payload or feature name over its cap, or JSON that does not parse.
    #[error("subnet entry payload: {0}")]
    Payload(String),
    /// Bytes after the entry.
    #[error("{0} trailing bytes after the subnet entry")]
    Trailing(usize),
}

/// The bytes an author signs to bind a writer log to itself on a channel.
pub fn bind_message(channel: &str, writer: &Key) -> Vec<u8> {
    signed_message(b"intercom/subnet/bind", channel, writer)
}

/// The bytes a joiner signs to ask to be admitted as a writer.
pub fn join_message(channel: &str, writer: &Key) -> Vec<u8> {
    signed_message(b"intercom/subnet/join", channel, writer)
}

fn signed_message(domain: &[u8], channel: &str, writer: &Key) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 1 + channel.len() + 33);
    m.extend_from_slice(domain);
    m.push(0);
    m.extend_from_slice(&(channel.len() as u32).to_le_bytes());
    m.extend_from_slice(channel.as_bytes());
    m.extend_from_slice(writer);
    m
}

impl Entry {
    /// The entry's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(ENTRY_VERSION).uint(self.timestamp);
        w.uint(self.heads.len() as u64);
        for (key, length) in &self.heads {
            w.fixed(key).uint(*length);
        }
        w.uint(self.bodies.len() as u64);
        for body in &self.bodies {
            encode_body(&mut w, body);
        }
        w.into_vec()
    }

    /// Packs `bodies` into as few entries as the caps allow: at most [`MAX_BODIES`] each,
    /// and a new entry started once one reaches [`TARGET_ENTRY_BYTES`]. The first entry
    /// carries `heads`. Returns each entry's bytes and how many bodies it holds.
    pub fn pack(timestamp: u64, heads: &[(Key, u64)], bodies: &[Body]) -> Vec<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut group = Writer::new();
        let mut count = 0usize;
        let close = |out: &mut Vec<(Vec<u8>, usize)>, group: &Writer, count: usize| {
            let heads: &[(Key, u64)] = if out.is_empty() { heads } else { &[] };
            let mut w = Writer::new();
            w.uint(ENTRY_VERSION).uint(timestamp);
            w.uint(heads.len() as u64);
            for (key, length) in heads {
                w.fixed(key).uint(*length);
            }
            w.uint(count as u64).raw(group.as_slice());
            out.push((w.into_vec(), count));
        };
        for body in bodies {
            encode_body(&mut group, body);
            count += 1;
            if count as u64 >= MAX_BODIES || group.len() >= TARGET_ENTRY_BYTES {
                close(&mut out, &group, count);
                group = Writer::new();
                count = 0;
            }
        }
        if count > 0 {
            close(&mut out, &group, count);
        }
        out
    }

    /// An entry of one body.
    pub fn single(timestamp: u64, heads: Vec<(Key, u64)>, body: Body) -> Entry {
        Entry {
            timestamp,
            heads,
            bodies: vec![body],
        }
    }

    /// True if every body is an acknowledgement.
    pub fn is_ack(&self) -> bool {
        self.bodies.iter().all(|b| matches!(b, Body::Ack))
    }
}

fn encode_body(w: &mut Writer, body: &Body) {
    match body {
        Body::Bind { author, signature } => {
            w.uint8(0).fixed(author).fixed(signature);
        }
        Body::Ack => {
            w.uint8(1);
        }
        Body::Membership(m) => {
            w.uint8(2);
            encode_membership(w, m);
        }
        Body::Transaction(v) => {
            w.uint8(3);
            put_json(w, v);
        }
        Body::Action(v) => {
            w.uint8(4);
            put_json(w, v);
        }
        Body::Feature { name, data } => {
            w.uint8(5);
            put_bytes(w, name.as_bytes());
            put_json(w, data);
        }
    }
}

impl Entry {
    /// Decodes an entry that must span all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let mut r = Reader::new(bytes);
        let version = r.uint()?;
        if version != ENTRY_VERSION {
            return Err(EntryError::Version(version));
        }
        let timestamp = r.uint()?;
        let count = r.uint()?;
        if count > MAX_HEADS {
            return Err(EntryError::TooManyHeads(count));
        }
        let mut heads = Vec::with_capacity(count as usize);
        for _ in 0..count {
            heads.push((r.fixed32()?, r.uint()?));
        }
        let count = r.uint()?;
        if count == 0 || count > MAX_BODIES {
            return Err(EntryError::BodyCount(count));
        }
        let mut bodies = Vec::with_capacity(count as usize);
        for _ in 0..count {
            bodies.push(decode_body(&mut r)?);
        }
        if r.remaining() > 0 {
            return Err(EntryError::Trailing(r.remaining()));
        }
        Ok(Entry {
            timestamp,
            heads,
            bodies,
        })
    }
}

fn decode_body(r: &mut Reader<'_>) -> Result<Body, EntryError> {
    Ok(match r.uint8()? {
        0 => Body::Bind {
            author: r.fixed32()?,
            signature: r.fixed64()?,
        },
        1 => Body::Ack,
        2 => Body::Membership(decode_membership(r)?),
        3 => Body::Transaction(take_json(r)?),
        4 => Body::Action(take_json(r)?),
        5 => {
            let name = take_bytes(r, MAX_FEATURE_NAME)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| EntryError::Payload("feature name is not utf-8".into()))?;
            Body::Feature {
                name,
                data: take_json(r)?,
            }
        }
        tag => return Err(EntryError::Tag(tag)),
    })
}

fn encode_membership(w: &mut Writer, m: &Membership) {
    match m {
        Membership::AddAdmin(k) => {
            w.uint8(0).fixed(k);
        }
        Membership::UpdateAdmin(k) => {
            w.uint8(1);
            match k {
                Some(k) => w.uint8(1).fixed(k),
                None => w.uint8(0),
            };
        }
        Membership::AddWriter(k) => {
            w.uint8(2).fixed(k);
        }
        Membership::RemoveWriter(k) => {
            w.uint8(3).fixed(k);
        }
        Membership::AddIndexer(k) => {
            w.uint8(4).fixed(k);
        }
        Membership::RemoveIndexer(k) => {
            w.uint8(5).fixed(k);
        }
        Membership::SetAutoAddWriters(on) => {
            w.uint8(6).uint8(u8::from(*on));
        }
        Membership::EnableTransactions => {
            w.uint8(7);
        }
        Membership::JoinRequest {
            writer,
            author,
            signature,
        } => {
            w.uint8(8).fixed(writer).fixed(author).fixed(signature);
        }
        Membership::SetQuota {
            author,
            keys,
            bytes,
        } => {
            w.uint8(9);
            match author {
                Some(a) => w.uint8(1).fixed(a),
                None => w.uint8(0),
            };
            w.uint(*keys).uint(*bytes);
        }
    }
}

fn decode_membership(r: &mut Reader<'_>) -> Result<Membership, EntryError> {
    Ok(match r.uint8()? {
        0 => Membership::AddAdmin(r.fixed32()?),
        1 => Membership::UpdateAdmin(match r.uint8()? {
            0 => None,
            1 => Some(r.fixed32()?),
            tag => return Err(EntryError::Tag(tag)),
        }),
        2 => Membership::AddWriter(r.fixed32()?),
        3 => Membership::RemoveWriter(r.fixed32()?),
        4 => Membership::AddIndexer(r.fixed32()?),
        5 => Membership::RemoveIndexer(r.fixed32()?),
        6 => Membership::SetAutoAddWriters(match r.uint8()? {
            0 => false,
            1 => true,
            tag => return Err(EntryError::Tag(tag)),
        }),
        7 => Membership::EnableTransactions,
        8 => Membership::JoinRequest {
            writer: r.fixed32()?,
            author: r.fixed32()?,
            signature: r.fixed64()?,
        },
        9 => Membership::SetQuota {
            author: match r.uint8()? {
                0 => None,
                1 => Some(r.fixed32()?),
                tag => return Err(EntryError::Tag(tag)),
            },
            keys: r.uint()?,
            bytes: r.uint()?,
        },
        tag => return Err(EntryError::Tag(tag)),
    })
}

fn put_bytes(w: &mut Writer, bytes: &[u8]) {
    w.uint(bytes.len() as u64).raw(bytes);
}

fn take_bytes<'a>(r: &mut Reader<'a>, max: usize) -> Result<&'a [u8], EntryError> {
    let len = r.uint()?;
    if len > max as u64 {
        return Err(EntryError::Payload(format!(
            "{len} bytes, at most {max} allowed"
        )));
    }
    Ok(r.take(len as usize)?)
}

fn put_json(w: &mut Writer, v: &Value) {
    // Serializing a Value cannot fail.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    put_bytes(w, &bytes);
}

fn take_json(r: &mut Reader<'_>) -> Result<Value, EntryError> {
    let bytes = take_bytes(r, MAX_PAYLOAD_BYTES)?;
    serde_json::from_slice(bytes).map_err(|e| EntryError::Payload(format!("invalid json: {e}")))
}

/// Decodes arbitrary bytes as an entry and re-encodes what decodes (fuzz target body).
pub fn fuzz_entry(data: &[u8]) {
    if let Ok(entry) = Entry::decode(data) {
        let again = Entry::decode(&entry.encode()).expect("re-encoded entry decodes");
        assert_eq!(again, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn samples() -> Vec<Entry> {
        let k = [7u8; 32];
        let bodies = vec![
            Body::Bind {
                author: k,
                signature: [9; 64],
            },
            Body::Ack,
            Body::Membership(Membership::AddAdmin(k)),
            Body::Membership(Membership::UpdateAdmin(None)),
            Body::Membership(Membership::UpdateAdmin(Some(k))),
            Body::Membership(Membership::AddWriter(k)),
            Body::Membership(Membership::RemoveWriter(k)),
            Body::Membership(Membership::AddIndexer(k)),
            Body::Membership(Membership::RemoveIndexer(k)),
            Body::Membership(Membership::SetAutoAddWriters(true)),
            Body::Membership(Membership::EnableTransactions),
            Body::Membership(Membership::SetQuota {
                author: None,
                keys: 10,
                bytes: 1 << 40,
            }),
            Body::Membership(Membership::SetQuota {
                author: Some(k),
                keys: 0,
                bytes: 5,
            }),
            Body::Membership(Membership::JoinRequest {
                writer: k,
                author: [1; 32],
                signature: [2; 64],
            }),
            Body::Transaction(json!({"type": "post", "value": {"message": "hi"}})),
            Body::Action(json!(null)),
            Body::Feature {
                name: "timer".into(),
                data: json!({"key": "currentTime", "value": 5}),
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Entry {
                timestamp: 1_700_000_000_000 + i as u64,
                heads: (0..i % 3)
                    .map(|j| ([j as u8; 32], j as u64 * 300))
                    .collect(),
                bodies: vec![body; 1 + i % 3],
            })
            .collect()
    }

    #[test]
    fn packing_splits_by_count_and_size_and_round_trips() {
        let k = [3u8; 32];
        let big = Body::Transaction(json!({"type": "put", "value": {"v": "x".repeat(6000)}}));
        let bodies: Vec<Body> = (0..400)
            .map(|_| big.clone())
            .chain((0..2000).map(|_| Body::Ack))
            .collect();
        let packed = Entry::pack(9, &[(k, 4)], &bodies);
        assert_eq!(packed.iter().map(|(_, n)| n).sum::<usize>(), bodies.len());
        let mut at = 0;
        for (i, (bytes, n)) in packed.iter().enumerate() {
            assert!(
                bytes.len() <= TARGET_ENTRY_BYTES + MAX_PAYLOAD_BYTES + 64,
                "entry {i}: {}",
                bytes.len()
            );
            assert!(*n as u64 <= MAX_BODIES);
            let e = Entry::decode(bytes).unwrap();
            assert_eq!(e.heads, if i == 0 { vec![(k, 4)] } else { vec![] });
            assert_eq!(e.bodies, bodies[at..at + n]);
            at += n;
        }
        assert!(packed.len() >= 4, "400 bodies of 6 KB need several entries");
    }

    #[test]
    fn every_body_round_trips() {
        for e in samples() {
            assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn every_truncation_is_an_error_and_never_panics() {
        for e in samples() {
            let bytes = e.encode();
            for n in 0..bytes.len() {
                assert!(
                    Entry::decode(&bytes[..n]).is_err(),
                    "{:?} cut at {n}",
                    e.bodies
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                Entry::decode(&longer),
                Err(EntryError::Trailing(1))
            ));
        }
    }

    #[test]
    fn caps_are_enforced_before_allocating() {
        let mut w = Writer::new();
        w.uint(1).uint(0).uint(MAX_HEADS + 1);
        assert!(matches!(
            Entry::decode(w.as_slice()),
            Err(EntryError::TooManyHeads(_))
        ));
        let mut w = Writer::new();
        w.uint(1)
            .uint(0)
            .uint(0)
            .uint(1)
            .uint8(3)
            .uint(MAX_PAYLOAD_BYTES as u64 + 1);
        assert!(matches!(
            Entry::decode(w.as_slice()),
            Err(EntryError::Payload(_))
        ));
        let mut w = Writer::new();
        w.uint(1).uint(0).uint(0).uint(0);
        assert!(matches!(
            Entry::decode(w.as_slice()),
            Err(EntryError::BodyCount(0))
        ));
        let mut w = Writer::new();
        w.uint(2);
        assert!(matches!(
            Entry::decode(w.as_slice()),
            Err(EntryError::Version(2))
        ));
    }

    #[test]
    fn signed_messages_separate_domains_and_channels() {
        let k = [3u8; 32];
        assert_ne!(bind_message("a", &k), join_message("a", &k));
        assert_ne!(bind_message("a", &k), bind_message("b", &k));
        assert_ne!(bind_message("ab", &k), bind_message("a", &k));
    }
}
