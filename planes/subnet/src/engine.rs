//! The subnet's sans-io core: entries from writer logs in, confirmed state changes and
//! applied-entry records out. It owns the [`Linearizer`] and the confirmed state (a
//! [`StateStore`] in the peer store); each [`Engine::step`] applies what got confirmed and
//! writes the new state, its tree, the confirmed length and the linearizer's checkpoint in
//! one atomic write, so a restarted engine continues exactly where the store left off.
//! What it holds in memory is bounded by what is not confirmed yet.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use intercom_contracts::{Contract, StateRead, Value};
use intercom_stores::{Batch, KvStore};

use crate::apply::{apply_body, Members, Outcome, Placement, Rules};
use crate::entry::{Body, Entry, Key};
use crate::linearizer::{EntryId, Linearizer, LinearizerError, WriterCheckpoint};
use crate::state::{ProvedValue, StateStore};
use crate::SubnetError;
use intercom_contracts::StagedState;

/// KV key of the confirmed length the persisted state reflects.
const CONFIRMED_KEY: &[u8] = b"subnet/confirmed";
/// KV key naming the subnet (and the format) the persisted state belongs to.
const IDENTITY_KEY: &[u8] = b"subnet/identity";
/// KV prefix of the linearizer checkpoint: one record per writer log.
const FRONTIER_PREFIX: &str = "subnet/lin/";
/// Everything the subnet persists lives under this prefix.
const SUBNET_PREFIX: &[u8] = b"subnet/";
/// Operations one [`Engine::step`] applies at most (it stops after the batch that
/// reaches it): bounds the memory and time of a step when a peer catches up on a backlog.
const STEP_OPERATIONS: usize = 4096;
/// Version of the persisted layout and of the ordering rule; a store written by another
/// version is rebuilt from the logs.
const FORMAT: u32 = 2;

/// What every peer of a subnet must agree on.
#[derive(Clone)]
pub struct EngineConfig {
    /// The subnet channel.
    pub channel: String,
    /// The bootstrap writer's key.
    pub bootstrap: Key,
    /// The contract every entry runs through.
    pub contract: Arc<dyn Contract>,
    /// Most writer logs tracked.
    pub max_writers: usize,
}

enum Slot {
    Held(Entry),
    Undecodable(String),
    Applied,
}

/// One writer's pushed entries that are not applied yet.
#[derive(Default)]
struct Slots {
    /// The log position of `queue[0]`.
    base: u64,
    queue: VecDeque<Slot>,
}

/// One confirmed entry and what applying it did.
#[derive(Debug, Clone)]
pub struct AppliedEntry {
    /// Its position in the subnet order.
    pub position: u64,
    /// The writer log that holds it.
    pub writer: Key,
    /// Its position in that log.
    pub seq: u64,
    /// Which body of that entry.
    pub index: u32,
    /// The entry type (`tx`, `add_writer`, `ack`, ...).
    pub kind: String,
    /// The author's address, when the log is bound.
    pub author: Option<String>,
    /// What applying did.
    pub outcome: Outcome,
}

/// What one [`Engine::step`] confirmed.
#[derive(Debug, Default)]
pub struct Step {
    /// Entries newly confirmed and applied, in order.
    pub applied: Vec<AppliedEntry>,
    /// The state changes it wrote (`None` deletes).
    pub writes: BTreeMap<String, Option<Value>>,
    /// True when it stopped at its operation budget with more confirmed: step again.
    pub more: bool,
}

/// The engine.
pub struct Engine {
    config: EngineConfig,
    kv: Arc<dyn KvStore>,
    linearizer: Linearizer,
    slots: Vec<Slots>,
    state: StateStore,
    /// Per writer: one past its newest entry that is not an ack.
    substantive: HashMap<Key, u64>,
    /// Operations in the held, unapplied entries.
    held_operations: usize,
    /// Set when the store failed under a step: nothing more is applied.
    failed: Option<String>,
}

impl Engine {
    /// Opens the engine over the state persisted in `kv` (an empty state, or one of
    /// another subnet or format, starts from scratch: the state is rebuilt from the logs).
    pub fn open(config: EngineConfig, kv: Arc<dyn KvStore>) -> Result<Engine, SubnetError> {
        let identity = identity(&config);
        if kv.get(IDENTITY_KEY)?.as_deref() != Some(identity.as_bytes()) {
            let mut batch = Batch::default();
            batch.delete_prefix(SUBNET_PREFIX);
            batch.put(IDENTITY_KEY, identity.as_bytes());
            kv.write(batch, true)?;
        }
        let confirmed = kv
            .get(CONFIRMED_KEY)?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let mut frontiers = Vec::new();
        for (k, v) in kv.scan_prefix(FRONTIER_PREFIX.as_bytes())? {
            let key = String::from_utf8_lossy(&k);
            frontiers.push(
                decode_frontier(&k[FRONTIER_PREFIX.len()..], &v)
                    .ok_or_else(|| SubnetError::Corrupt(format!("checkpoint record {key}")))?,
            );
        }
        let linearizer =
            Linearizer::restore(config.bootstrap, config.max_writers, confirmed, &frontiers)
                .map_err(|e| SubnetError::Corrupt(format!("checkpoint: {e}")))?;
        let state = StateStore::open(kv.clone())?;
        Ok(Engine {
            config,
            kv,
            linearizer,
            slots: Vec::new(),
            state,
            substantive: HashMap::new(),
            held_operations: 0,
            failed: None,
        })
    }

    /// Deletes everything the subnet persisted in `kv` (for a rebuild from the logs).
    pub fn clear(kv: &dyn KvStore) -> Result<(), SubnetError> {
        let mut batch = Batch::default();
        batch.delete_prefix(SUBNET_PREFIX);
        kv.write(batch, true)?;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Takes in block `seq` of `writer`'s log. Blocks that do not decode still take
    /// their place in the order (as entries with no heads) and are ignored when applied,
    /// the same way on every peer.
    pub fn push(&mut self, writer: &Key, seq: u64, bytes: &[u8]) -> Result<(), LinearizerError> {
        let (slot, heads) = match Entry::decode(bytes) {
            Ok(entry) if !entry.is_ack() => {
                self.substantive.insert(*writer, seq + 1);
                let heads = entry.heads.clone();
                (Slot::Held(entry), heads)
            }
            Ok(entry) => {
                let heads = entry.heads.clone();
                (Slot::Held(entry), heads)
            }
            Err(e) => (Slot::Undecodable(e.to_string()), Vec::new()),
        };
        self.linearizer.push(writer, seq, &heads)?;
        self.held_operations += slot_operations(&slot);
        let w = self.linearizer.index_of(writer).unwrap_or(0) as usize;
        if self.slots.len() <= w {
            self.slots.resize_with(w + 1, Slots::default);
        }
        let slots = &mut self.slots[w];
        if slots.queue.is_empty() {
            slots.base = seq;
        }
        slots.queue.push_back(slot);
        Ok(())
    }

    fn slot(&self, id: EntryId) -> Option<&Slot> {
        let slots = self.slots.get(id.writer as usize)?;
        let at = id.seq.checked_sub(slots.base)?;
        slots.queue.get(usize::try_from(at).ok()?)
    }

    /// Orders what arrived, applies the batches a majority of indexers confirmed (up to
    /// about [`STEP_OPERATIONS`] operations: [`Step::more`] says whether to step again)
    /// and persists the result. After a store failure it applies nothing more (the peer must
    /// restart, which resumes from the last write that succeeded).
    pub fn step(&mut self) -> Result<Step, SubnetError> {
        if let Some(why) = &self.failed {
            return Err(SubnetError::Corrupt(why.clone()));
        }
        self.linearizer.advance();
        let mut step = Step::default();
        let before = self.linearizer.confirmed_len();
        let rules = Rules {
            channel: &self.config.channel,
            bootstrap: &self.config.bootstrap,
            contract: self.config.contract.as_ref(),
        };
        let mut overlay = StagedState::new(&self.state);
        loop {
            let indexers = Members(&overlay).indexers(&self.config.bootstrap);
            if self.linearizer.confirmable(&indexers).is_none() {
                break;
            }
            if step.applied.len() >= STEP_OPERATIONS {
                step.more = true;
                break;
            }
            let Some((first, batch)) = self.linearizer.confirm() else {
                break;
            };
            for (i, id) in batch.entries.iter().enumerate() {
                let position = first + i as u64;
                let writer = *self.linearizer.key(id.writer);
                let slot = take_slot(&mut self.slots, *id);
                self.held_operations = self
                    .held_operations
                    .saturating_sub(slot.as_ref().map_or(0, slot_operations));
                let at = Placement {
                    writer: &writer,
                    seq: id.seq,
                    position,
                    index: 0,
                };
                let results = match &slot {
                    Some(Slot::Held(entry)) => apply_entry(rules, &mut overlay, at, entry),
                    Some(Slot::Undecodable(e)) => {
                        vec![("invalid".to_owned(), Outcome::Ignored(e.clone()))]
                    }
                    Some(Slot::Applied) | None => vec![(
                        "missing".to_owned(),
                        Outcome::Ignored("entry not held".into()),
                    )],
                };
                let author = Members(&overlay).author_of(&writer);
                for (index, (kind, outcome)) in results.into_iter().enumerate() {
                    step.applied.push(AppliedEntry {
                        position,
                        writer,
                        seq: id.seq,
                        index: index as u32,
                        kind,
                        author: author.clone(),
                        outcome,
                    });
                }
            }
        }
        let confirmed = self.linearizer.confirmed_len();
        if confirmed == before {
            return Ok(step);
        }
        let writes = overlay.into_writes();
        let mut extra = Batch::default();
        extra.put(CONFIRMED_KEY, &confirmed.to_be_bytes());
        for w in self.linearizer.take_changed() {
            if let Some(f) = self.linearizer.writer_checkpoint(w) {
                extra.put(&frontier_key(&f.key), &encode_frontier(&f));
            }
        }
        if let Err(e) = self.state.commit(&writes, extra) {
            let why = format!("the subnet state could not be written: {e}");
            self.failed = Some(why.clone());
            return Err(SubnetError::Corrupt(why));
        }
        self.linearizer.compact();
        step.writes = writes;
        Ok(step)
    }

    /// The writes the unconfirmed entries make on top of the confirmed state, in their
    /// tentative order.
    pub fn tentative_writes(&self) -> BTreeMap<String, Option<Value>> {
        let rules = Rules {
            channel: &self.config.channel,
            bootstrap: &self.config.bootstrap,
            contract: self.config.contract.as_ref(),
        };
        let mut overlay = StagedState::new(&self.state);
        let start = self.linearizer.confirmed_len();
        for (i, id) in self.linearizer.unconfirmed().into_iter().enumerate() {
            if let Some(Slot::Held(entry)) = self.slot(id) {
                let writer = *self.linearizer.key(id.writer);
                let at = Placement {
                    writer: &writer,
                    seq: id.seq,
                    position: start + i as u64,
                    index: 0,
                };
                apply_entry(rules, &mut overlay, at, entry);
            }
        }
        overlay.into_writes()
    }

    /// Runs `body` as if `author` appended it to `writer`'s log now, on top of the
    /// tentative state, and reports what it would do and write. Changes nothing.
    pub fn simulate(
        &self,
        writer: &Key,
        author: &Key,
        body: &Body,
        timestamp: u64,
    ) -> (Outcome, BTreeMap<String, Option<Value>>) {
        let mut base = self.tentative_state();
        if Members(&base).author_of(writer).is_none() {
            // A log that has not written yet would bind its author first.
            use intercom_contracts::StateWrite;
            base.put(
                &format!("subnet/author/{}", hex::encode(writer)),
                serde_json::json!(hex::encode(author)),
            );
        }
        let mut overlay = StagedState::new(&base);
        let position = self.linearizer.confirmed_len() + self.linearizer.unconfirmed_len();
        let seq = self.linearizer.pushed(writer);
        let rules = Rules {
            channel: &self.config.channel,
            bootstrap: &self.config.bootstrap,
            contract: self.config.contract.as_ref(),
        };
        let at = Placement {
            writer,
            seq,
            position,
            index: 0,
        };
        let outcome = apply_body(rules, &mut overlay, at, body, timestamp);
        (outcome, overlay.into_writes())
    }

    /// The confirmed state with the unconfirmed entries applied on top, in their
    /// tentative order.
    pub fn tentative_state(&self) -> StagedState<'_> {
        let mut state = StagedState::new(&self.state);
        state.merge(self.tentative_writes());
        state
    }

    /// The value under a full state key (`app/...` or `subnet/...`) and the root of the
    /// state it was read from: the confirmed state, or the tentative one.
    pub fn read(
        &self,
        key: &str,
        confirmed: bool,
    ) -> Result<(Option<Value>, [u8; 32]), SubnetError> {
        if confirmed {
            let value = self.state.get(key);
            if let Some(e) = self.state.take_error() {
                return Err(e.into());
            }
            return Ok((value, self.root()));
        }
        let writes = self.tentative_writes();
        let value = match writes.get(key) {
            Some(v) => v.clone(),
            None => self.state.get(key),
        };
        let root = self.state.root_with(&writes)?;
        if let Some(e) = self.state.take_error() {
            return Err(e.into());
        }
        Ok((value, root))
    }

    /// A full state key's confirmed value with its Merkle proof against the confirmed root.
    pub fn prove(&self, key: &str) -> Result<ProvedValue, SubnetError> {
        Ok(self.state.prove(key)?)
    }

    /// The confirmed state.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// The confirmed state's root.
    pub fn root(&self) -> [u8; 32] {
        self.state.root()
    }

    /// How much of `writer`'s log is ready up to and including its newest non-ack entry.
    pub fn substantive(&self, writer: &Key) -> u64 {
        let n = self.substantive.get(writer).copied().unwrap_or(0);
        n.min(self.linearizer.ready_length(writer))
    }

    /// The linearizer (lengths, keys, the tentative order).
    pub fn linearizer(&self) -> &Linearizer {
        &self.linearizer
    }

    /// Membership questions over the confirmed state.
    pub fn members(&self) -> Members<'_> {
        Members(&self.state)
    }

    /// Entries held in memory that are not applied yet (what confirmation bounds).
    pub fn held_entries(&self) -> usize {
        self.slots.iter().map(|s| s.queue.len()).sum()
    }

    /// How many operations each of `key`'s entries `from..to` holds (0 for entries not
    /// held any more: applied ones).
    pub fn operations_in(&self, key: &Key, from: u64, to: u64) -> Vec<usize> {
        let held = self
            .linearizer
            .index_of(key)
            .and_then(|w| self.slots.get(w as usize));
        (from..to)
            .map(|seq| {
                held.and_then(|s| {
                    let at = usize::try_from(seq.checked_sub(s.base)?).ok()?;
                    s.queue.get(at).map(slot_operations)
                })
                .unwrap_or(0)
            })
            .collect()
    }

    /// Operations in the entries held in memory and not applied yet.
    pub fn held_operations(&self) -> usize {
        self.held_operations
    }

    /// The store the engine persists to.
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }
}

/// How many operations a held slot stands for (an undecodable block counts one).
fn slot_operations(slot: &Slot) -> usize {
    match slot {
        Slot::Held(entry) => entry.bodies.len(),
        Slot::Undecodable(_) => 1,
        Slot::Applied => 0,
    }
}

/// Takes the slot of `id` for applying; applied slots at the front are dropped.
fn take_slot(slots: &mut [Slots], id: EntryId) -> Option<Slot> {
    let slots = slots.get_mut(id.writer as usize)?;
    let at = usize::try_from(id.seq.checked_sub(slots.base)?).ok()?;
    let slot = std::mem::replace(slots.queue.get_mut(at)?, Slot::Applied);
    while matches!(slots.queue.front(), Some(Slot::Applied)) {
        slots.queue.pop_front();
        slots.base += 1;
    }
    Some(slot)
}

fn identity(config: &EngineConfig) -> String {
    format!(
        "{} {} format {FORMAT}",
        hex::encode(config.bootstrap),
        config.channel
    )
}

fn frontier_key(key: &Key) -> Vec<u8> {
    format!("{FRONTIER_PREFIX}{}", hex::encode(key)).into_bytes()
}

/// A checkpoint record: confirmed count (u64 BE), then (key, length u64 BE) per clock
/// entry.
fn encode_frontier(f: &WriterCheckpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 40 * f.clock.len());
    out.extend_from_slice(&f.confirmed.to_be_bytes());
    for (key, length) in &f.clock {
        out.extend_from_slice(key);
        out.extend_from_slice(&length.to_be_bytes());
    }
    out
}

fn decode_frontier(hex_key: &[u8], bytes: &[u8]) -> Option<WriterCheckpoint> {
    let key: Key = hex::decode(hex_key).ok()?.try_into().ok()?;
    let (confirmed, mut rest) = bytes.split_first_chunk::<8>()?;
    let mut clock = Vec::new();
    while !rest.is_empty() {
        let (k, tail) = rest.split_first_chunk::<32>()?;
        let (n, tail) = tail.split_first_chunk::<8>()?;
        clock.push((*k, u64::from_be_bytes(*n)));
        rest = tail;
    }
    Some(WriterCheckpoint {
        key,
        confirmed: u64::from_be_bytes(*confirmed),
        clock,
    })
}

/// Applies every body of `entry` in order (placed at `at`); each body's type and outcome.
fn apply_entry(
    rules: Rules<'_>,
    state: &mut StagedState<'_>,
    at: Placement<'_>,
    entry: &Entry,
) -> Vec<(String, Outcome)> {
    entry
        .bodies
        .iter()
        .enumerate()
        .map(|(index, body)| {
            let at = Placement {
                index: index as u32,
                ..at
            };
            let outcome = apply_body(rules, state, at, body, entry.timestamp);
            (body.type_name().to_owned(), outcome)
        })
        .collect()
}

/// Feeds arbitrary bytes to an engine as blocks of three writer logs (the first is the
/// bootstrap) and applies whatever gets confirmed: must never panic (fuzz target body).
pub fn fuzz_engine(data: &[u8], contract: Arc<dyn Contract>) {
    let keys: [Key; 3] = [[1; 32], [2; 32], [3; 32]];
    let Ok(mut engine) = Engine::open(
        EngineConfig {
            channel: "fuzz".into(),
            bootstrap: keys[0],
            contract,
            max_writers: 8,
        },
        Arc::new(intercom_stores::MemoryStore::default()),
    ) else {
        return;
    };
    let mut rest = data;
    while rest.len() >= 2 {
        let writer = keys[(rest[0] % 3) as usize];
        let len = (rest[1] as usize).min(rest.len() - 2);
        let block = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let seq = engine.linearizer().pushed(&writer);
        let _ = engine.push(&writer, seq, block);
        let _ = engine.step();
    }
    let _ = engine.tentative_writes();
    let _ = engine.root();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Membership;
    use intercom_contracts::builtin::BuiltinContract;

    fn engine() -> Engine {
        Engine::open(
            EngineConfig {
                channel: "t".into(),
                bootstrap: [1; 32],
                contract: Arc::new(BuiltinContract),
                max_writers: 8,
            },
            Arc::new(intercom_stores::MemoryStore::default()),
        )
        .unwrap()
    }

    #[test]
    fn undecodable_blocks_keep_their_place_and_change_nothing() {
        let mut e = engine();
        e.push(&[1; 32], 0, b"\xff\x00junk").unwrap();
        let step = e.step().unwrap();
        assert_eq!(step.applied.len(), 1);
        assert_eq!(step.applied[0].kind, "invalid");
        assert!(matches!(step.applied[0].outcome, Outcome::Ignored(_)));
        assert!(e.state().entries().unwrap().is_empty());
    }

    #[test]
    fn entries_of_an_unbound_log_are_ignored() {
        let mut e = engine();
        let entry = Entry::single(1, vec![], Body::Membership(Membership::EnableTransactions));
        e.push(&[1; 32], 0, &entry.encode()).unwrap();
        let step = e.step().unwrap();
        assert!(matches!(&step.applied[0].outcome, Outcome::Ignored(r) if r.contains("bound")));
        assert!(e.state().entries().unwrap().is_empty());
    }

    #[test]
    fn only_the_contracts_actions_skip_the_transaction_gate() {
        let mut e = engine();
        let admin = intercom_crypto::KeyPair::from_seed(&[9; 32]);
        let bind = Body::Bind {
            author: admin.public_key,
            signature: admin.sign(&crate::entry::bind_message("t", &[1; 32])),
        };
        let op = |name: &str, value: serde_json::Value| serde_json::json!({"type": name, "value": value});
        let bodies = vec![
            Body::Membership(Membership::AddAdmin(admin.public_key)),
            Body::Action(op("set_chat_status", serde_json::json!({"enabled": true}))),
            Body::Action(op("post", serde_json::json!({"message": "hi"}))),
            Body::Transaction(op("put", serde_json::json!({"key": "k", "value": 1}))),
            Body::Action(op("put", serde_json::json!({"key": "k", "value": 1}))),
        ];
        e.push(&[1; 32], 0, &Entry::single(1, vec![], bind).encode())
            .unwrap();
        e.push(
            &[1; 32],
            1,
            &Entry {
                timestamp: 2,
                heads: vec![],
                bodies,
            }
            .encode(),
        )
        .unwrap();
        let step = e.step().unwrap();
        let outcomes: Vec<_> = step.applied.iter().skip(2).map(|a| &a.outcome).collect();
        assert_eq!(outcomes.len(), 4, "{:?}", step.applied);
        assert_eq!(outcomes[0], &Outcome::Applied);
        assert_eq!(outcomes[1], &Outcome::Applied);
        assert!(matches!(outcomes[2], Outcome::Ignored(r) if r.contains("not enabled")));
        assert!(matches!(outcomes[3], Outcome::Ignored(r) if r.contains("not an action")));
    }

    #[test]
    fn fuzz_body_survives_noise() {
        let mut x = 0x1234_5678_u64;
        for _ in 0..200 {
            let data: Vec<u8> = (0..512)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fuzz_engine(&data, Arc::new(BuiltinContract));
        }
    }
}
