//! The subnet's sans-io core: entries from writer logs in, confirmed state changes and
//! applied-entry records out. It owns the [`Linearizer`] and the confirmed state; the
//! async service feeds it log blocks and persists what [`Engine::step`] returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use intercom_contracts::{Contract, MemoryState, StateRead, Value};

use crate::apply::{apply_body, Members, Outcome, Placement, Rules};
use crate::entry::{Body, Entry, Key};
use crate::linearizer::{EntryId, Linearizer, LinearizerError};
use intercom_contracts::StagedState;

use crate::state::state_root;

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
    /// The state changes to persist (`None` deletes).
    pub writes: BTreeMap<String, Option<Value>>,
}

/// The engine.
pub struct Engine {
    config: EngineConfig,
    linearizer: Linearizer,
    slots: Vec<Vec<Slot>>,
    state: MemoryState,
    /// Confirmed positions already reflected in `state` when the engine was built.
    restored: u64,
    root: Option<[u8; 32]>,
    /// Per writer: one past its newest entry that is not an ack.
    substantive: HashMap<Key, u64>,
}

impl Engine {
    /// An engine over `state`, which already holds the first `confirmed` positions
    /// (0 and an empty state to build from scratch).
    pub fn new(config: EngineConfig, state: MemoryState, confirmed: u64) -> Engine {
        Engine {
            linearizer: Linearizer::new(config.bootstrap, config.max_writers),
            config,
            slots: Vec::new(),
            state,
            restored: confirmed,
            root: None,
            substantive: HashMap::new(),
        }
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
        let w = self.linearizer.index_of(writer).unwrap_or(0) as usize;
        if self.slots.len() <= w {
            self.slots.resize_with(w + 1, Vec::new);
        }
        self.slots[w].push(slot);
        Ok(())
    }

    /// Orders what arrived and applies every batch a majority of indexers confirmed.
    pub fn step(&mut self) -> Step {
        self.linearizer.advance();
        let mut step = Step::default();
        loop {
            if self.linearizer.confirmed_len() < self.restored {
                // Already in the restored state: re-confirm without applying.
                let Some((_, batch)) = self.linearizer.confirm() else {
                    break;
                };
                for id in batch.entries {
                    self.set_slot(id, Slot::Applied);
                }
                continue;
            }
            let indexers = Members(&self.state).indexers(&self.config.bootstrap);
            if self.linearizer.confirmable(&indexers).is_none() {
                break;
            }
            let Some((first, batch)) = self.linearizer.confirm() else {
                break;
            };
            let rules = Rules {
                channel: &self.config.channel,
                bootstrap: &self.config.bootstrap,
                contract: self.config.contract.as_ref(),
            };
            let mut overlay = StagedState::new(&self.state);
            for (i, id) in batch.entries.iter().enumerate() {
                let position = first + i as u64;
                let writer = *self.linearizer.key(id.writer);
                let slot = std::mem::replace(
                    &mut self.slots[id.writer as usize][id.seq as usize],
                    Slot::Applied,
                );
                let at = Placement {
                    writer: &writer,
                    seq: id.seq,
                    position,
                    index: 0,
                };
                let results = match &slot {
                    Slot::Held(entry) => apply_entry(rules, &mut overlay, at, entry),
                    Slot::Undecodable(e) => {
                        vec![("invalid".to_owned(), Outcome::Ignored(e.clone()))]
                    }
                    Slot::Applied => vec![(
                        "applied".to_owned(),
                        Outcome::Ignored("applied twice".into()),
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
            let writes = overlay.into_writes();
            if !writes.is_empty() {
                self.root = None;
            }
            step.writes.extend(writes.clone());
            self.state.commit(writes);
        }
        step
    }

    fn set_slot(&mut self, id: EntryId, slot: Slot) {
        if let Some(s) = self
            .slots
            .get_mut(id.writer as usize)
            .and_then(|v| v.get_mut(id.seq as usize))
        {
            *s = slot;
        }
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
            if let Some(Slot::Held(entry)) = self.slots[id.writer as usize].get(id.seq as usize) {
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
    pub fn read(&mut self, key: &str, confirmed: bool) -> (Option<Value>, [u8; 32]) {
        if confirmed {
            return (self.state.get(key), self.root());
        }
        let writes = self.tentative_writes();
        let value = match writes.get(key) {
            Some(v) => v.clone(),
            None => self.state.get(key),
        };
        let mut state = self.state.clone();
        state.commit(writes);
        (value, state_root(&state))
    }

    /// The confirmed state.
    pub fn state(&self) -> &MemoryState {
        &self.state
    }

    /// The confirmed state's root.
    pub fn root(&mut self) -> [u8; 32] {
        *self.root.get_or_insert_with(|| state_root(&self.state))
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
    let mut engine = Engine::new(
        EngineConfig {
            channel: "fuzz".into(),
            bootstrap: keys[0],
            contract,
            max_writers: 8,
        },
        MemoryState::default(),
        0,
    );
    let mut rest = data;
    while rest.len() >= 2 {
        let writer = keys[(rest[0] % 3) as usize];
        let len = (rest[1] as usize).min(rest.len() - 2);
        let block = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let seq = engine.linearizer().pushed(&writer);
        let _ = engine.push(&writer, seq, block);
        engine.step();
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
        Engine::new(
            EngineConfig {
                channel: "t".into(),
                bootstrap: [1; 32],
                contract: Arc::new(BuiltinContract),
                max_writers: 8,
            },
            MemoryState::default(),
            0,
        )
    }

    #[test]
    fn undecodable_blocks_keep_their_place_and_change_nothing() {
        let mut e = engine();
        e.push(&[1; 32], 0, b"\xff\x00junk").unwrap();
        let step = e.step();
        assert_eq!(step.applied.len(), 1);
        assert_eq!(step.applied[0].kind, "invalid");
        assert!(matches!(step.applied[0].outcome, Outcome::Ignored(_)));
        assert!(e.state().entries.is_empty());
    }

    #[test]
    fn entries_of_an_unbound_log_are_ignored() {
        let mut e = engine();
        let entry = Entry::single(1, vec![], Body::Membership(Membership::EnableTransactions));
        e.push(&[1; 32], 0, &entry.encode()).unwrap();
        let step = e.step();
        assert!(matches!(&step.applied[0].outcome, Outcome::Ignored(r) if r.contains("bound")));
        assert!(e.state().entries.is_empty());
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
        let step = e.step();
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
