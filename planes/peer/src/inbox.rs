//! The durable inbox: every sidechannel message the peer delivers is stored once in the peer
//! store, in one atomic write made before any bridge client sees the message, and stays
//! pending for each agent until that agent acknowledges it; it survives reconnects and
//! restarts. Agents read it through the bridge's `inbox_recv` / `inbox_ack` /
//! `inbox_status` (the JS Intercom has no inbox: its messages reach whoever is connected).
//!
//! Layout in the store (all keys under `inbox/`):
//!
//! ```text
//! inbox/m/<seq u64 BE>   received-at ms (u64 BE) | dedupe-key length (u16 BE) | dedupe key | message JSON
//! inbox/d/<dedupe key>   seq (u64 BE)         the message's channel and id: a relayed or replayed copy is stored once
//! inbox/a/<agent>        acknowledged seq (u64 BE)
//! inbox/next             the next seq (u64 BE)
//! ```
//!
//! Sequence numbers start at 1 and only grow. Retention (count, bytes, age) deletes the
//! oldest messages together with their dedupe keys in the same write that adds a new one;
//! an agent whose unacknowledged messages were deleted is told how many it missed, once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use intercom_sc_bridge::SidechannelMessage;
use intercom_sidechannel::SidechannelEvent;
use intercom_stores::{Batch, KvStore, StoreError};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::events::{EventSink, PeerEvent};
use crate::runtime::now_ms;

/// Default retention: messages kept at most.
pub const DEFAULT_MAX_MESSAGES: u64 = 100_000;
/// Default retention: bytes of stored messages kept at most.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default retention: age of the oldest message kept, ms (7 days).
pub const DEFAULT_MAX_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Most messages one `inbox_recv` returns.
pub use intercom_sc_bridge::MAX_INBOX_LIMIT as MAX_LIMIT;
/// Agents with a cursor at most (each costs one small record and a map entry).
pub const MAX_AGENTS: usize = 1024;
/// Records one `inbox_recv` looks at when a filter skips messages.
const MAX_SCAN: usize = 10_000;
/// Records read from the store at a time.
const SCAN_CHUNK: usize = 256;

const MESSAGE_PREFIX: &[u8] = b"inbox/m/";
const DEDUPE_PREFIX: &[u8] = b"inbox/d/";
const AGENT_PREFIX: &[u8] = b"inbox/a/";
/// The next sequence number (u64 BE), so numbers never restart after everything was pruned.
const NEXT_KEY: &[u8] = b"inbox/next";
/// Bytes before the dedupe key in a message record.
const HEADER: usize = 8 + 2;

/// What the inbox keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Messages kept at most.
    pub max_messages: u64,
    /// Bytes of stored records kept at most.
    pub max_bytes: u64,
    /// Messages older than this (ms since they were received) are deleted.
    pub max_age_ms: u64,
}

impl Default for InboxLimits {
    fn default() -> Self {
        InboxLimits {
            max_messages: DEFAULT_MAX_MESSAGES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age_ms: DEFAULT_MAX_AGE_MS,
        }
    }
}

/// Errors of the inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// An agent name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid agent name {0:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadAgent(String),
    /// A new agent would exceed [`MAX_AGENTS`].
    #[error("too many agents: at most {MAX_AGENTS} have cursors")]
    TooManyAgents,
    /// The store failed.
    #[error("inbox store: {0}")]
    Store(#[from] StoreError),
    /// A stored record does not decode.
    #[error("inbox record {0} is corrupt")]
    Corrupt(u64),
}

/// Whether `name` is a valid agent name: `[A-Za-z0-9._-]{1,64}` (the bridge's rule).
pub use intercom_sc_bridge::valid_agent_name as valid_agent;

/// What an `inbox_recv` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecvQuery {
    /// Most messages to return (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// Only messages of this channel.
    pub channel: Option<String>,
    /// Only messages whose author (`from`) is this key (hex, lowercase).
    pub from: Option<String>,
    /// Acknowledge every message up to this sequence number first.
    pub ack: Option<u64>,
}

/// One answer to an `inbox_recv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The messages, oldest first, each with its `seq` and `receivedAt`.
    pub messages: Vec<Value>,
    /// Messages deleted by retention before this agent acknowledged them (reported once).
    pub missed: u64,
    /// The agent's acknowledged sequence number.
    pub acked: u64,
    /// The last sequence number looked at: acknowledging up to it also acknowledges the
    /// messages a filter skipped.
    pub scanned_to: u64,
    /// Messages after `acked`, filtered or not.
    pub pending: u64,
}

impl Received {
    /// The bridge reply body.
    pub fn to_json(&self, agent: &str) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("agent".into(), agent.into());
        body.insert("messages".into(), Value::Array(self.messages.clone()));
        body.insert("missed".into(), self.missed.into());
        body.insert("acked".into(), self.acked.into());
        body.insert("scannedTo".into(), self.scanned_to.into());
        body.insert("pending".into(), self.pending.into());
        body
    }
}

#[derive(Debug, Default)]
struct State {
    /// The sequence number the next message gets.
    next_seq: u64,
    /// The oldest stored sequence number (`next_seq` when empty).
    oldest_seq: u64,
    /// When the oldest stored message was received (ms), when there is one.
    oldest_received_at: Option<u64>,
    count: u64,
    bytes: u64,
    /// Acknowledged sequence number per agent.
    agents: BTreeMap<String, u64>,
    stored: u64,
    duplicates: u64,
    pruned: u64,
    write_errors: u64,
}

/// The durable inbox of one peer. Cheap to share (`Arc`); every method takes `&self`.
pub struct Inbox {
    kv: Arc<dyn KvStore>,
    limits: InboxLimits,
    state: Mutex<State>,
    newest: watch::Sender<u64>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn seq_key(seq: u64) -> Vec<u8> {
    let mut key = MESSAGE_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(rest);
    key
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// A decoded message record.
struct Record<'a> {
    received_at: u64,
    dedupe_key: &'a [u8],
    json: &'a [u8],
}

fn decode_record(seq: u64, bytes: &[u8]) -> Result<Record<'_>, InboxError> {
    let corrupt = || InboxError::Corrupt(seq);
    let received_at = read_u64(bytes).ok_or_else(corrupt)?;
    let len = u16::from_be_bytes(
        bytes
            .get(8..HEADER)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let end = HEADER + usize::from(len);
    Ok(Record {
        received_at,
        dedupe_key: bytes.get(HEADER..end).ok_or_else(corrupt)?,
        json: bytes.get(end..).ok_or_else(corrupt)?,
    })
}

fn seq_of(key: &[u8]) -> Option<u64> {
    read_u64(key.get(MESSAGE_PREFIX.len()..)?)
}

impl Inbox {
    /// Opens the inbox kept in `kv` (counting what is stored, loading the agents' cursors).
    pub fn open(kv: Arc<dyn KvStore>, limits: InboxLimits) -> Result<Inbox, InboxError> {
        let mut state = State::default();
        let mut from = seq_key(0);
        let end = seq_key(u64::MAX);
        loop {
            let chunk = kv.scan_range(&from, &end, SCAN_CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            from = last.clone();
            from.push(0);
            for (key, value) in &chunk {
                let seq = seq_of(key).ok_or(InboxError::Corrupt(0))?;
                let record = decode_record(seq, value)?;
                if state.count == 0 {
                    state.oldest_seq = seq;
                    state.oldest_received_at = Some(record.received_at);
                }
                state.count += 1;
                state.bytes += value.len() as u64;
                state.next_seq = seq + 1;
            }
        }
        // Sequence numbers never restart, even when retention deleted every message.
        let saved_next = kv.get(NEXT_KEY)?.as_deref().and_then(read_u64);
        state.next_seq = state.next_seq.max(saved_next.unwrap_or(1)).max(1);
        for (key, value) in kv.scan_prefix(AGENT_PREFIX)? {
            let name = String::from_utf8_lossy(&key[AGENT_PREFIX.len()..]).into_owned();
            let acked = read_u64(&value).ok_or(InboxError::Corrupt(0))?;
            state.next_seq = state.next_seq.max(acked + 1);
            state.agents.insert(name, acked);
        }
        if state.count == 0 {
            state.oldest_seq = state.next_seq;
        }
        let (newest, _) = watch::channel(state.next_seq - 1);
        Ok(Inbox {
            kv,
            limits,
            state: Mutex::new(state),
            newest,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state happens after its store write succeeded, so a panic
        // elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest stored sequence number, changing as messages arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// Stores one message under its dedupe key; `Ok(None)` when that key is already stored.
    pub fn store(
        &self,
        dedupe_key: &str,
        message: &Value,
        now_ms: u64,
    ) -> Result<Option<u64>, InboxError> {
        let dedupe = prefixed(DEDUPE_PREFIX, dedupe_key.as_bytes());
        let mut state = self.lock();
        if self.kv.get(&dedupe)?.is_some() {
            state.duplicates += 1;
            return Ok(None);
        }
        let json = serde_json::to_vec(message).map_err(|_| InboxError::Corrupt(state.next_seq))?;
        // A dedupe key longer than a u16 is cut: the cut key still identifies the message.
        let key_bytes = &dedupe_key.as_bytes()[..dedupe_key.len().min(usize::from(u16::MAX))];
        let mut record = Vec::with_capacity(HEADER + key_bytes.len() + json.len());
        record.extend_from_slice(&now_ms.to_be_bytes());
        record.extend_from_slice(&(key_bytes.len() as u16).to_be_bytes());
        record.extend_from_slice(key_bytes);
        record.extend_from_slice(&json);
        let size = record.len() as u64;

        let seq = state.next_seq;
        let mut batch = Batch::default();
        let pruned = self.prune(&state, &mut batch, now_ms, 1, size)?;
        batch.put_owned(seq_key(seq), record);
        batch.put_owned(dedupe, seq.to_be_bytes().to_vec());
        batch.put(NEXT_KEY, &(seq + 1).to_be_bytes());
        self.kv.write(batch, true)?;

        pruned.apply(&mut state);
        if state.count == 0 {
            state.oldest_seq = seq;
            state.oldest_received_at = Some(now_ms);
        }
        state.count += 1;
        state.bytes += size;
        state.next_seq = seq + 1;
        state.stored += 1;
        drop(state);
        self.newest.send_replace(seq);
        Ok(Some(seq))
    }

    /// Plans deleting the oldest messages until `incoming` more messages of `incoming_bytes`
    /// fit and nothing left is older than the age limit; the deletes go into `batch`.
    fn prune(
        &self,
        state: &State,
        batch: &mut Batch<'_>,
        now_ms: u64,
        incoming: u64,
        incoming_bytes: u64,
    ) -> Result<Pruned, InboxError> {
        let limits = self.limits;
        let over = |p: &Pruned| {
            p.count + incoming > limits.max_messages
                || p.bytes + incoming_bytes > limits.max_bytes
                || p.oldest_received_at
                    .is_some_and(|t| now_ms.saturating_sub(t) > limits.max_age_ms)
        };
        let mut plan = Pruned {
            oldest_seq: state.oldest_seq,
            oldest_received_at: state.oldest_received_at,
            count: state.count,
            bytes: state.bytes,
            deleted: 0,
        };
        let end = seq_key(state.next_seq);
        // The oldest message's age is known except right after deleting one: read on then.
        while plan.count > 0 && (plan.oldest_received_at.is_none() || over(&plan)) {
            let chunk = self
                .kv
                .scan_range(&seq_key(plan.oldest_seq), &end, SCAN_CHUNK)?;
            if chunk.is_empty() {
                plan.count = 0;
                break;
            }
            for (key, value) in &chunk {
                let seq = seq_of(key).ok_or(InboxError::Corrupt(0))?;
                let record = decode_record(seq, value)?;
                plan.oldest_seq = seq;
                plan.oldest_received_at = Some(record.received_at);
                if !over(&plan) {
                    return Ok(plan);
                }
                batch.delete(key);
                batch.delete(&prefixed(DEDUPE_PREFIX, record.dedupe_key));
                plan.count = plan.count.saturating_sub(1);
                plan.bytes = plan.bytes.saturating_sub(value.len() as u64);
                plan.deleted += 1;
                plan.oldest_seq = seq + 1;
                plan.oldest_received_at = None;
                if plan.count == 0 {
                    break;
                }
            }
        }
        if plan.count == 0 {
            plan.oldest_seq = state.next_seq;
            plan.oldest_received_at = None;
            plan.bytes = 0;
        }
        Ok(plan)
    }

    /// Deletes what the age limit says has expired (also called by reads, so an idle
    /// inbox does not keep old messages until the next one arrives).
    fn expire(&self, state: &mut State, now_ms: u64) -> Result<(), InboxError> {
        let expired = state
            .oldest_received_at
            .is_some_and(|t| now_ms.saturating_sub(t) > self.limits.max_age_ms);
        if !expired {
            return Ok(());
        }
        let mut batch = Batch::default();
        let pruned = self.prune(state, &mut batch, now_ms, 0, 0)?;
        self.kv.write(batch, true)?;
        pruned.apply(state);
        Ok(())
    }

    fn cursor(&self, state: &mut State, agent: &str) -> Result<u64, InboxError> {
        if !valid_agent(agent) {
            return Err(InboxError::BadAgent(agent.to_owned()));
        }
        if let Some(acked) = state.agents.get(agent) {
            return Ok(*acked);
        }
        if state.agents.len() >= MAX_AGENTS {
            return Err(InboxError::TooManyAgents);
        }
        // A new agent starts with everything the inbox still holds pending.
        let acked = state.oldest_seq.saturating_sub(1);
        self.save_cursor(state, agent, acked)?;
        Ok(acked)
    }

    fn save_cursor(&self, state: &mut State, agent: &str, acked: u64) -> Result<(), InboxError> {
        let mut batch = Batch::default();
        batch.put_owned(
            prefixed(AGENT_PREFIX, agent.as_bytes()),
            acked.to_be_bytes().to_vec(),
        );
        self.kv.write(batch, true)?;
        state.agents.insert(agent.to_owned(), acked);
        Ok(())
    }

    /// Acknowledges every message up to `seq` for `agent` (never moves backwards, never
    /// past the newest message); returns the acknowledged sequence number.
    pub fn ack(&self, agent: &str, seq: u64) -> Result<u64, InboxError> {
        let mut state = self.lock();
        self.ack_locked(&mut state, agent, seq)
    }

    fn ack_locked(&self, state: &mut State, agent: &str, seq: u64) -> Result<u64, InboxError> {
        let acked = self.cursor(state, agent)?;
        let target = seq.min(state.next_seq - 1);
        if target > acked {
            self.save_cursor(state, agent, target)?;
            return Ok(target);
        }
        Ok(acked)
    }

    /// The messages pending for `agent` (after acknowledging `query.ack` when given).
    pub fn recv(
        &self,
        agent: &str,
        query: &RecvQuery,
        now_ms: u64,
    ) -> Result<Received, InboxError> {
        let (acked, next_seq, missed) = {
            let mut state = self.lock();
            self.expire(&mut state, now_ms)?;
            let mut acked = match query.ack {
                Some(seq) => self.ack_locked(&mut state, agent, seq)?,
                None => self.cursor(&mut state, agent)?,
            };
            let mut missed = 0;
            if acked + 1 < state.oldest_seq {
                missed = state.oldest_seq - 1 - acked;
                acked = state.oldest_seq - 1;
                self.save_cursor(&mut state, agent, acked)?;
            }
            (acked, state.next_seq, missed)
        };
        let limit = query.limit.clamp(1, MAX_LIMIT);
        let mut messages = Vec::new();
        let mut scanned_to = acked;
        let mut scanned = 0;
        let end = seq_key(next_seq);
        'scan: while scanned < MAX_SCAN && messages.len() < limit {
            let chunk = self
                .kv
                .scan_range(&seq_key(scanned_to + 1), &end, SCAN_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            for (key, value) in &chunk {
                let seq = seq_of(key).ok_or(InboxError::Corrupt(0))?;
                scanned_to = seq;
                scanned += 1;
                let record = decode_record(seq, value)?;
                let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(record.json)
                else {
                    return Err(InboxError::Corrupt(seq));
                };
                let field = |k: &str| message.get(k).and_then(Value::as_str);
                let keep = query
                    .channel
                    .as_deref()
                    .is_none_or(|c| field("channel") == Some(c))
                    && query
                        .from
                        .as_deref()
                        .is_none_or(|f| field("from").is_some_and(|m| m.eq_ignore_ascii_case(f)));
                if keep {
                    message.insert("seq".into(), seq.into());
                    message.insert("receivedAt".into(), record.received_at.into());
                    messages.push(Value::Object(message));
                    if messages.len() >= limit {
                        break 'scan;
                    }
                }
                if scanned >= MAX_SCAN {
                    break 'scan;
                }
            }
        }
        Ok(Received {
            messages,
            missed,
            acked,
            scanned_to,
            pending: (next_seq - 1).saturating_sub(acked),
        })
    }

    /// Counts, limits and the agents' positions (`agent`: only that one).
    pub fn status(
        &self,
        agent: Option<&str>,
        now_ms: u64,
    ) -> Result<Map<String, Value>, InboxError> {
        let mut state = self.lock();
        self.expire(&mut state, now_ms)?;
        if let Some(name) = agent {
            self.cursor(&mut state, name)?;
        }
        let newest = state.next_seq - 1;
        let agents: Vec<Value> = state
            .agents
            .iter()
            .filter(|(name, _)| agent.is_none_or(|a| a == name.as_str()))
            .map(|(name, acked)| {
                json!({
                    "agent": name,
                    "acked": acked,
                    "pending": newest.saturating_sub(*acked),
                    "behind": state.oldest_seq.saturating_sub(acked + 1),
                })
            })
            .collect();
        let body = json!({
            "enabled": true,
            "count": state.count,
            "bytes": state.bytes,
            "oldestSeq": (state.count > 0).then_some(state.oldest_seq),
            "newestSeq": newest,
            "limits": {
                "maxMessages": self.limits.max_messages,
                "maxBytes": self.limits.max_bytes,
                "maxAgeMs": self.limits.max_age_ms,
            },
            "stored": state.stored,
            "duplicates": state.duplicates,
            "pruned": state.pruned,
            "writeErrors": state.write_errors,
            "agents": agents,
        });
        Ok(match body {
            Value::Object(map) => map,
            _ => Map::new(),
        })
    }

    /// Stores a delivered sidechannel message (the sink's work); a failed write is logged
    /// and counted, and the message still reaches the live bridge clients.
    fn record_event(&self, event: &PeerEvent) {
        let PeerEvent::Sidechannel {
            event: SidechannelEvent::Message {
                channel, payload, ..
            },
            ..
        } = event
        else {
            return;
        };
        let now = now_ms();
        let value = payload.clone().into_value();
        let message = SidechannelMessage::from_payload(channel.clone(), &value, now);
        let Ok(message) = serde_json::to_value(&message) else {
            return;
        };
        let dedupe_key = format!("{channel}\n{}", payload.dedupe_key(channel));
        if let Err(e) = self.store(&dedupe_key, &message, now) {
            let mut state = self.lock();
            state.write_errors += 1;
            if state.write_errors.is_power_of_two() {
                tracing::error!(error = %e, count = state.write_errors, "inbox: a message could not be stored");
            }
        }
    }
}

/// The store-side effect of a prune, applied once its write succeeded.
struct Pruned {
    oldest_seq: u64,
    oldest_received_at: Option<u64>,
    count: u64,
    bytes: u64,
    deleted: u64,
}

impl Pruned {
    fn apply(self, state: &mut State) {
        state.oldest_seq = self.oldest_seq;
        state.oldest_received_at = self.oldest_received_at;
        state.count = self.count;
        state.bytes = self.bytes;
        state.pruned += self.deleted;
    }
}

/// The [`EventSink`] that stores delivered messages. Add it before the bridge's sink, so a
/// message is stored before any bridge client sees it.
#[derive(Debug, Clone)]
pub struct InboxSink(pub Arc<Inbox>);

impl EventSink for InboxSink {
    fn deliver(&mut self, event: &PeerEvent) {
        self.0.record_event(event);
    }
}

#[cfg(test)]
mod tests;
