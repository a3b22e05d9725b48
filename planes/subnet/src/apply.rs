//! Applying one ordered entry: membership rules checked against the state at its
//! position, then the contract for transactions, actions and features. Pure: reads and
//! writes only the state it is given, so every peer derives the same result.
//!
//! Membership state keys (all JSON):
//!
//! | key                      | value                                   |
//! |--------------------------|-----------------------------------------|
//! | `subnet/admin`           | admin address (hex); absent when none   |
//! | `subnet/admin_added`     | `true` once `add_admin` has run         |
//! | `subnet/writer/<key>`    | `{"indexer": bool, "since": position}`  |
//! | `subnet/indexers`        | sorted hex keys of indexers besides the bootstrap |
//! | `subnet/author/<key>`    | the address bound to writer log `<key>` |
//! | `subnet/auto_add_writers`| `true` when join requests are honoured  |
//! | `subnet/transactions`    | `true` once `enable_transactions` ran   |
//! | `subnet/quota`           | `{"keys": n, "bytes": n}`: every author's quota (default [`DEFAULT_QUOTA`]) |
//! | `subnet/quota/<address>` | the same for one author, overriding the default |
//! | `subnet/usage/<address>` | `{"keys": n, "bytes": n}` the author's operations hold |
//!
//! **Quotas.** Every contract operation (transaction, action, feature) is charged to its
//! author: each key it creates counts one key, and every key's bytes (key plus compact
//! JSON value) count as they grow or shrink. An operation that would take its author
//! above the quota in keys or in bytes, while adding to that measure, is rejected;
//! operations that free space always apply. Usage never goes below zero (an author may
//! delete keys another wrote). The admin changes quotas with `set_quota`.
//!
//! The bootstrap writer is always a writer and an indexer and cannot be removed.

use intercom_contracts::{validate, Context, Contract, Operation, StateRead, StateWrite, Value};
use serde_json::json;

use crate::entry::{bind_message, join_message, Body, Key, Membership};
use intercom_contracts::StagedState;

use crate::state::AppState;

/// The quota of an author with none of its own while the admin set no default.
pub const DEFAULT_QUOTA: Quota = Quota {
    keys: 100_000,
    bytes: 64 * 1024 * 1024,
};

/// How much contract state an author may hold, or holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Keys.
    pub keys: u64,
    /// Bytes: each key's length plus its compact JSON value's.
    pub bytes: u64,
}

impl Quota {
    fn from_json(v: &Value) -> Option<Quota> {
        Some(Quota {
            keys: v.get("keys")?.as_u64()?,
            bytes: v.get("bytes")?.as_u64()?,
        })
    }

    fn to_json(self) -> Value {
        json!({"keys": self.keys, "bytes": self.bytes})
    }
}

/// What applying an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The entry changed state (or was a valid no-op such as an ack).
    Applied,
    /// The entry is not allowed at its position (non-member, non-admin, ...); nothing changed.
    Ignored(String),
    /// The contract or a schema refused the operation; nothing changed.
    Rejected(String),
}

impl Outcome {
    /// `"applied"`, `"ignored"` or `"rejected"`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Ignored(_) => "ignored",
            Outcome::Rejected(_) => "rejected",
        }
    }

    /// The reason, when not applied.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Applied => None,
            Outcome::Ignored(r) | Outcome::Rejected(r) => Some(r),
        }
    }
}

/// Where an entry sits.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    /// The writer log that holds it.
    pub writer: &'a Key,
    /// Its position in that log.
    pub seq: u64,
    /// Its position in the subnet order.
    pub position: u64,
    /// Which body of the entry it is.
    pub index: u32,
}

/// The fixed inputs of applying: the subnet channel, its bootstrap writer, its contract.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// The subnet channel (bound into signatures).
    pub channel: &'a str,
    /// The bootstrap (sequencer, first indexer) writer key.
    pub bootstrap: &'a Key,
    /// The contract.
    pub contract: &'a dyn Contract,
}

/// Membership questions over any state.
pub struct Members<'a>(pub &'a dyn StateRead);

impl Members<'_> {
    /// The admin's address.
    pub fn admin(&self) -> Option<String> {
        self.0
            .get("subnet/admin")
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// True if `key` may write (bootstrap included).
    pub fn is_writer(&self, bootstrap: &Key, key: &Key) -> bool {
        key == bootstrap || self.0.get(&writer_key(key)).is_some()
    }

    /// True if `key` is an indexer (bootstrap included).
    pub fn is_indexer(&self, bootstrap: &Key, key: &Key) -> bool {
        key == bootstrap
            || self
                .0
                .get(&writer_key(key))
                .and_then(|v| v.get("indexer").and_then(Value::as_bool))
                .unwrap_or(false)
    }

    /// Every indexer, the bootstrap first.
    pub fn indexers(&self, bootstrap: &Key) -> Vec<Key> {
        let mut out = vec![*bootstrap];
        out.extend(self.indexer_list().iter().filter_map(|h| parse_key(h)));
        out
    }

    fn indexer_list(&self) -> Vec<String> {
        self.0
            .get("subnet/indexers")
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The address bound to writer log `key`.
    pub fn author_of(&self, key: &Key) -> Option<String> {
        self.0
            .get(&format!("subnet/author/{}", hex::encode(key)))
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// True once the admin enabled transactions.
    pub fn transactions_enabled(&self) -> bool {
        self.flag("subnet/transactions")
    }

    /// True when join requests are honoured.
    pub fn auto_add_writers(&self) -> bool {
        self.flag("subnet/auto_add_writers")
    }

    /// The quota of `author` (an address, hex).
    pub fn quota(&self, author: &str) -> Quota {
        self.0
            .get(&format!("subnet/quota/{author}"))
            .or_else(|| self.0.get("subnet/quota"))
            .and_then(|v| Quota::from_json(&v))
            .unwrap_or(DEFAULT_QUOTA)
    }

    /// The contract state `author`'s operations hold.
    pub fn usage(&self, author: &str) -> Quota {
        self.0
            .get(&format!("subnet/usage/{author}"))
            .and_then(|v| Quota::from_json(&v))
            .unwrap_or(Quota { keys: 0, bytes: 0 })
    }

    fn flag(&self, key: &str) -> bool {
        self.0.get(key).and_then(|v| v.as_bool()).unwrap_or(false)
    }
}

fn writer_key(key: &Key) -> String {
    format!("subnet/writer/{}", hex::encode(key))
}

/// Parses 64 hex characters.
pub fn parse_key(s: &str) -> Option<Key> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

/// Applies one body of an entry (written at `timestamp`) at `at` to `state` (a scratch
/// overlay the caller commits).
pub fn apply_body(
    rules: Rules<'_>,
    state: &mut StagedState<'_>,
    at: Placement<'_>,
    body: &Body,
    timestamp: u64,
) -> Outcome {
    let members = Members(state);
    if !members.is_writer(rules.bootstrap, at.writer) {
        return Outcome::Ignored("the writer is not a member of the subnet".into());
    }
    if let Body::Bind { author, signature } = body {
        if at.seq != 0 || at.index != 0 {
            return Outcome::Ignored("a log binds its author only in its first entry".into());
        }
        if !intercom_crypto::verify(signature, &bind_message(rules.channel, at.writer), author) {
            return Outcome::Ignored("the bind signature does not verify".into());
        }
        state.put(
            &format!("subnet/author/{}", hex::encode(at.writer)),
            json!(hex::encode(author)),
        );
        return Outcome::Applied;
    }
    if matches!(body, Body::Ack) {
        return Outcome::Applied;
    }
    let Some(author) = members.author_of(at.writer) else {
        return Outcome::Ignored("the writer log has no bound author".into());
    };
    let admin = members.admin();
    let is_admin = admin.as_deref() == Some(author.as_str());
    match body {
        Body::Membership(m) => membership(rules, state, at, &author, is_admin, m),
        Body::Transaction(op) | Body::Action(op) => {
            let op: Operation = match serde_json::from_value(op.clone()) {
                Ok(op) => op,
                Err(e) => return Outcome::Rejected(format!("not an operation: {e}")),
            };
            if matches!(body, Body::Transaction(_)) {
                if !members.transactions_enabled() {
                    return Outcome::Ignored("transactions are not enabled on this subnet".into());
                }
            } else if !rules.contract.actions().contains(&op.name.as_str()) {
                return Outcome::Ignored(format!(
                    "{} is not an action; send it as a transaction",
                    op.name
                ));
            }
            if let Err(e) = validate(rules.contract, &op) {
                return Outcome::Rejected(e.to_string());
            }
            let writer = hex::encode(at.writer);
            let ctx = context(at, timestamp, &author, &writer, admin.as_deref());
            run_contract(state, &author, |app| rules.contract.apply(&op, &ctx, app))
        }
        Body::Feature { name, data } => {
            if !is_admin {
                return Outcome::Ignored("features are accepted from the admin only".into());
            }
            if !rules.contract.features().contains(&name.as_str()) {
                return Outcome::Ignored(format!("the contract has no feature {name}"));
            }
            let writer = hex::encode(at.writer);
            let ctx = context(at, timestamp, &author, &writer, admin.as_deref());
            run_contract(state, &author, |app| {
                rules.contract.apply_feature(name, data, &ctx, app)
            })
        }
        Body::Bind { .. } | Body::Ack => Outcome::Applied,
    }
}

fn context<'a>(
    at: Placement<'_>,
    timestamp: u64,
    author: &'a str,
    writer: &'a str,
    admin: Option<&'a str>,
) -> Context<'a> {
    Context {
        author,
        writer,
        position: at.position,
        timestamp,
        admin,
    }
}

/// Runs a contract function on a scratch stage over `state`; keeps its writes when it
/// succeeds and they fit `author`'s quota.
fn run_contract(
    state: &mut StagedState<'_>,
    author: &str,
    f: impl FnOnce(&mut dyn StateWrite) -> Result<(), intercom_contracts::ContractError>,
) -> Outcome {
    let mut scratch = StagedState::new(state);
    let result = f(&mut AppState::new(&mut scratch));
    match result {
        Ok(()) => {
            let writes = scratch.into_writes();
            if let Err(reason) = charge(state, author, &writes) {
                return Outcome::Rejected(reason);
            }
            state.merge(writes);
            Outcome::Applied
        }
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

/// Charges `writes` (full state keys) to `author`'s usage in `state`, or says why they do
/// not fit its quota.
fn charge(
    state: &mut StagedState<'_>,
    author: &str,
    writes: &std::collections::BTreeMap<String, Option<Value>>,
) -> Result<(), String> {
    let size =
        |key: &str, value: &Value| (key.len() + crate::state::value_bytes(value).len()) as i128;
    let (mut keys, mut bytes) = (0i128, 0i128);
    for (key, new) in writes {
        let old = state.get(key);
        keys += i128::from(new.is_some()) - i128::from(old.is_some());
        bytes +=
            new.as_ref().map_or(0, |v| size(key, v)) - old.as_ref().map_or(0, |v| size(key, v));
    }
    if keys == 0 && bytes == 0 {
        return Ok(());
    }
    let members = Members(state);
    let usage = members.usage(author);
    let quota = members.quota(author);
    let after =
        |now: u64, delta: i128| (i128::from(now) + delta).clamp(0, i128::from(u64::MAX)) as u64;
    let next = Quota {
        keys: after(usage.keys, keys),
        bytes: after(usage.bytes, bytes),
    };
    if (keys > 0 && next.keys > quota.keys) || (bytes > 0 && next.bytes > quota.bytes) {
        return Err(format!(
            "state quota exceeded: author {author} would hold {} keys and {} bytes (quota: {} keys, {} bytes)",
            next.keys, next.bytes, quota.keys, quota.bytes
        ));
    }
    state.put(&format!("subnet/usage/{author}"), next.to_json());
    Ok(())
}

fn membership(
    rules: Rules<'_>,
    state: &mut StagedState<'_>,
    at: Placement<'_>,
    author: &str,
    is_admin: bool,
    m: &Membership,
) -> Outcome {
    let members = Members(state);
    if let Membership::AddAdmin(address) = m {
        if at.writer != rules.bootstrap {
            return Outcome::Ignored("add_admin runs on the bootstrap writer only".into());
        }
        if members.0.get("subnet/admin_added").is_some() {
            return Outcome::Ignored("the admin was already added".into());
        }
        state.put("subnet/admin", json!(hex::encode(address)));
        state.put("subnet/admin_added", json!(true));
        return Outcome::Applied;
    }
    if let Membership::JoinRequest {
        writer,
        author: joiner,
        signature,
    } = m
    {
        if !members.auto_add_writers() {
            return Outcome::Ignored("automatic writer joins are disabled".into());
        }
        if !intercom_crypto::verify(signature, &join_message(rules.channel, writer), joiner) {
            return Outcome::Ignored("the join request signature does not verify".into());
        }
        if !members.is_writer(rules.bootstrap, writer) {
            state.put(
                &writer_key(writer),
                json!({"indexer": false, "since": at.position}),
            );
        }
        return Outcome::Applied;
    }
    if !is_admin {
        return Outcome::Ignored(format!(
            "{} is for the admin only (author {author})",
            m.name()
        ));
    }
    match m {
        Membership::UpdateAdmin(address) => match address {
            Some(a) => state.put("subnet/admin", json!(hex::encode(a))),
            None => state.delete("subnet/admin"),
        },
        Membership::AddWriter(k) => {
            if !members.is_writer(rules.bootstrap, k) {
                state.put(
                    &writer_key(k),
                    json!({"indexer": false, "since": at.position}),
                );
            }
        }
        Membership::AddIndexer(k) => {
            if k != rules.bootstrap {
                let mut list = members.indexer_list();
                let h = hex::encode(k);
                if !list.contains(&h) {
                    list.push(h);
                    list.sort();
                }
                state.put(
                    &writer_key(k),
                    json!({"indexer": true, "since": at.position}),
                );
                state.put("subnet/indexers", json!(list));
            }
        }
        Membership::RemoveWriter(k) | Membership::RemoveIndexer(k) => {
            if k == rules.bootstrap {
                return Outcome::Ignored("the bootstrap writer cannot be removed".into());
            }
            let h = hex::encode(k);
            let list: Vec<String> = members
                .indexer_list()
                .into_iter()
                .filter(|x| *x != h)
                .collect();
            state.delete(&writer_key(k));
            state.put("subnet/indexers", json!(list));
        }
        Membership::SetAutoAddWriters(on) => state.put("subnet/auto_add_writers", json!(on)),
        Membership::SetQuota {
            author,
            keys,
            bytes,
        } => {
            let quota = Quota {
                keys: *keys,
                bytes: *bytes,
            }
            .to_json();
            match author {
                Some(a) => state.put(&format!("subnet/quota/{}", hex::encode(a)), quota),
                None => state.put("subnet/quota", quota),
            }
        }
        Membership::EnableTransactions => state.put("subnet/transactions", json!(true)),
        Membership::AddAdmin(_) | Membership::JoinRequest { .. } => {}
    }
    Outcome::Applied
}
