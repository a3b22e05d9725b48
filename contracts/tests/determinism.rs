//! Seeded property-style test of the built-in contract: thousands of random operations
//! and feature entries (valid and invalid) from a few authors, applied to two states (one
//! directly, one through a `StagedState` committed only on success, as a runtime does).
//! Both must stay identical, and a rejected operation must not write at all.

use intercom_contracts::{
    BuiltinContract, Context, Contract, MemoryState, Operation, StagedState, StateRead, StateWrite,
    Value,
};
use serde_json::json;

const ADMIN: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const CAROL: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";
const ALICE: &str = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
const BOB: &str = "d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3";
const AUTHORS: [&str; 4] = [ADMIN, CAROL, ALICE, BOB];

/// xorshift64* (Vigna): tiny, seedable, good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Counts writes, so a rejected apply can be checked to have written nothing.
struct Recording<'a> {
    inner: &'a mut MemoryState,
    writes: usize,
}

impl StateRead for Recording<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        self.inner.get(key)
    }
}

impl StateWrite for Recording<'_> {
    fn put(&mut self, key: &str, value: Value) {
        self.writes += 1;
        self.inner.put(key, value);
    }

    fn delete(&mut self, key: &str) {
        self.writes += 1;
        self.inner.delete(key);
    }
}

fn user(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => json!(rng.pick(&AUTHORS).to_ascii_uppercase()),
        1 => json!("not-a-key"),
        2 => json!(17),
        _ => json!(rng.pick(&AUTHORS)),
    }
}

fn id(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => json!(-1),
        1 => json!("1"),
        2 => json!(1.5),
        3 => json!(u64::MAX),
        _ => json!(rng.below(10)),
    }
}

fn boolean(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => json!(2),
        1 => json!("true"),
        2 => json!(0),
        3 => json!(1),
        n => json!(n % 2 == 0),
    }
}

fn text(rng: &mut Rng, max: usize) -> Value {
    match rng.below(16) {
        0 => json!(""),
        1 => json!("x".repeat(max + 1)),
        2 => json!(5),
        3 => json!(null),
        _ => json!(*rng.pick(&["hi", "gm", "al", "bo", "key", "ünï", "k/2", "Al"])),
    }
}

fn any(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => json!("z".repeat(1100)),
        1 => json!({"nested": [1, {"deep": true}], "n": rng.below(100)}),
        2 => json!([rng.below(3), "two"]),
        _ => json!(rng.below(1000)),
    }
}

/// Every operation the contract declares: the generator must reach each one.
fn names() -> Vec<&'static str> {
    BuiltinContract
        .operations()
        .iter()
        .map(|op| op.name)
        .collect()
}

fn random_op(rng: &mut Rng) -> Operation {
    let name = if rng.chance(3) {
        *rng.pick(&["bogus", "read_timer", "", "post "])
    } else if rng.chance(25) {
        "post"
    } else {
        *rng.pick(&names())
    };
    let mut value = match name {
        "submit_something" => json!({"some_key": text(rng, 128)}),
        "put" => json!({"key": text(rng, 256), "value": any(rng)}),
        "delete" => json!({"key": text(rng, 256)}),
        "set_chat_status" | "enable_whitelist" => json!({"enabled": boolean(rng)}),
        "post" => {
            if rng.chance(30) {
                json!({"message": text(rng, 1024), "reply_to": id(rng)})
            } else {
                json!({"message": text(rng, 1024)})
            }
        }
        "set_nick" => {
            if rng.chance(30) {
                json!({"nick": text(rng, 32), "user": user(rng)})
            } else {
                json!({"nick": text(rng, 32)})
            }
        }
        "mute_status" => json!({"user": user(rng), "muted": boolean(rng)}),
        "set_mod" => json!({"user": user(rng), "mod": boolean(rng)}),
        "delete_message" => json!({"id": id(rng)}),
        "pin_message" => json!({"id": id(rng), "pin": boolean(rng)}),
        "unpin_message" => json!({"pin_id": id(rng)}),
        "set_whitelist_status" => json!({"user": user(rng), "status": boolean(rng)}),
        _ => Value::Null,
    };
    match rng.below(40) {
        0 => value = json!([value]),
        1 => value = Value::Null,
        2 => {
            if let Value::Object(m) = &mut value {
                m.insert("extra".into(), json!(1));
            }
        }
        3 => {
            if let Value::Object(m) = &mut value {
                let first = m.keys().next().cloned();
                if let Some(k) = first {
                    m.remove(&k);
                }
            }
        }
        _ => {}
    }
    Operation::new(name, value)
}

fn random_feature(rng: &mut Rng) -> (&'static str, Value) {
    let name = if rng.chance(90) { "timer" } else { "clock" };
    let entry = match rng.below(10) {
        0 => json!({"key": "other", "value": 1}),
        1 => json!({"key": "currentTime", "value": -5}),
        2 => json!({"key": "currentTime"}),
        3 => json!("currentTime"),
        _ => json!({"key": "currentTime", "value": 1_700_000_000_000u64 + rng.below(1_000_000)}),
    };
    (name, entry)
}

fn run(seed: u64, steps: usize) {
    let contract = BuiltinContract;
    let mut rng = Rng::new(seed);
    let mut direct = MemoryState::new();
    let mut staged = MemoryState::new();
    let mut accepted = std::collections::BTreeMap::<String, usize>::new();
    let mut rejected = 0usize;

    // Start with the chat on and a moderator, so chat ops get past the basics often.
    for (author, name, value) in [
        (ADMIN, "set_chat_status", json!({"enabled": true})),
        (ADMIN, "set_mod", json!({"user": CAROL, "mod": true})),
    ] {
        let ctx = Context {
            author,
            writer: author,
            position: 0,
            timestamp: 0,
            admin: Some(ADMIN),
        };
        let op = Operation::new(name, value);
        contract.apply(&op, &ctx, &mut direct).unwrap();
        contract.apply(&op, &ctx, &mut staged).unwrap();
    }

    for step in 0..steps {
        let author = *rng.pick(&AUTHORS);
        let ctx = Context {
            author,
            writer: author,
            position: step as u64 + 2,
            timestamp: 1_700_000_000_000 + step as u64 * 977,
            admin: if rng.chance(5) { None } else { Some(ADMIN) },
        };
        let is_feature = rng.chance(8);
        let (label, feature) = if is_feature {
            let (name, entry) = random_feature(&mut rng);
            (format!("feature {name}"), Some((name, entry)))
        } else {
            (String::new(), None)
        };
        let op = random_op(&mut rng);

        let mut recording = Recording {
            inner: &mut direct,
            writes: 0,
        };
        let mut overlay = StagedState::new(&staged);
        let (result_direct, result_staged, label) = match &feature {
            Some((name, entry)) => (
                contract.apply_feature(name, entry, &ctx, &mut recording),
                contract.apply_feature(name, entry, &ctx, &mut overlay),
                label,
            ),
            None => (
                contract.apply(&op, &ctx, &mut recording),
                contract.apply(&op, &ctx, &mut overlay),
                op.name.clone(),
            ),
        };
        let writes = recording.writes;
        let staged_writes = overlay.into_writes();
        assert_eq!(result_direct, result_staged, "seed {seed} step {step}");
        match &result_direct {
            Ok(()) => {
                staged.commit(staged_writes);
                *accepted.entry(label).or_default() += 1;
            }
            Err(e) => {
                assert_eq!(
                    writes, 0,
                    "seed {seed} step {step}: rejected {label} wrote ({e})"
                );
                assert!(!e.to_string().is_empty());
                rejected += 1;
            }
        }
        if step % 64 == 0 {
            assert_eq!(direct, staged, "seed {seed} step {step}");
        }
    }
    assert_eq!(direct, staged, "seed {seed}");
    assert_eq!(
        serde_json::to_string(&direct.entries).unwrap(),
        serde_json::to_string(&staged.entries).unwrap()
    );

    // The generator must reach every operation's accepting path, and reject plenty.
    for name in names() {
        assert!(
            accepted.get(name).copied().unwrap_or(0) > 0,
            "seed {seed}: `{name}` never accepted: {accepted:?}"
        );
    }
    assert!(accepted.contains_key("feature timer"));
    let total_accepted: usize = accepted.values().sum();
    assert!(
        rejected > steps / 5 && total_accepted > steps / 5,
        "{rejected} rejected, {accepted:?}"
    );
}

#[test]
fn random_operations_keep_states_identical() {
    for seed in [1, 0x5eed, 0xdead_beef_cafe] {
        run(seed, 4000);
    }
}

#[test]
fn same_seed_same_final_state() {
    let final_state = |seed: u64| {
        let contract = BuiltinContract;
        let mut rng = Rng::new(seed);
        let mut state = MemoryState::new();
        for step in 0..1500u64 {
            let author = *rng.pick(&AUTHORS);
            let ctx = Context {
                author,
                writer: author,
                position: step,
                timestamp: step,
                admin: Some(ADMIN),
            };
            let op = random_op(&mut rng);
            let _ = contract.apply(&op, &ctx, &mut state);
        }
        state
    };
    assert_eq!(final_state(42), final_state(42));
    assert_ne!(final_state(42), final_state(43));
}

#[test]
fn random_commands_and_reads_never_panic() {
    let contract = BuiltinContract;
    let mut rng = Rng::new(7);
    let alphabet: Vec<char> = "{}[]\":,opvaluetype 0123456789-.nul\\é😀".chars().collect();
    let mut state = MemoryState::new();
    state.put("msgl", json!(3));
    state.put("msg/1", json!("garbage"));
    for _ in 0..3000 {
        let len = rng.below(40) as usize;
        let command: String = (0..len).map(|_| *rng.pick(&alphabet)).collect();
        if let Ok(op) = contract.map_command(&command) {
            intercom_contracts::validate(&contract, &op).unwrap();
        }
        let function = *rng.pick(&[
            "read_key",
            "read_chat_last",
            "read_timer",
            "read_snapshot",
            "read_message",
            "read_messages",
            "read_nick",
            "nope",
        ]);
        let args = match rng.below(6) {
            0 => Value::Null,
            1 => json!({"key": text(&mut rng, 256)}),
            2 => json!({"id": id(&mut rng)}),
            3 => json!({"from": id(&mut rng), "limit": id(&mut rng)}),
            4 => json!({"user": user(&mut rng)}),
            _ => serde_json::from_str(&command).unwrap_or(Value::Null),
        };
        let _ = contract.read(function, &args, &state);
    }
}
