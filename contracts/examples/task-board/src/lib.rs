//! A task board: an example of an app contract built on `intercom-contracts`.
//!
//! Peers of a subnet post tasks with an optional reward, claim other peers' open tasks,
//! and complete the ones they claimed; creators may cancel their tasks until they are
//! completed. Every peer applies the same ordered operations and so holds the same board.
//!
//! Implementing a contract takes four things: schemas for the operations (and reads),
//! `apply` (check everything, then write), `map_command` for `/tx --command`, and `read`.
//! Validation, CLI coercion (`/create_task --title "..." --reward 5`) and JSON command
//! parsing come from `intercom-contracts`.
//!
//! # Operations
//!
//! | operation        | fields                                   | who |
//! |------------------|------------------------------------------|-----|
//! | `create_task`    | `title` (1–200 chars), `reward` (0–1 000 000, optional) | anyone |
//! | `claim_task`     | `id`                                     | anyone but the creator, open tasks only |
//! | `complete_task`  | `id`, `result` (1–1000 chars)            | the claimer, claimed tasks only |
//! | `cancel_task`    | `id`                                     | the creator, before completion |
//!
//! Reads: `task {id}`, `open_tasks {limit?, from?}`, `stats`. Command shortcuts:
//! `create <title>`, `claim <id>`, `complete <id> <result>`, `cancel <id>` (and `list`,
//! `stats`, `task <id>` name the reads).
//!
//! # State keys
//!
//! | key          | value |
//! |--------------|-------|
//! | `task_count` | number of tasks = the next task id |
//! | `task/<id>`  | `{id, title, reward, creator, status, claimer, result, created_at, updated_at}` |
//! | `stats`      | `{created, open, claimed, completed, cancelled, rewards_paid}` |
//!
//! `status` is `open`, `claimed`, `completed` or `cancelled`; `created_at`/`updated_at`
//! are the authors' timestamps (ms); `rewards_paid` sums the rewards of completed tasks.

use intercom_contracts::error::clip;
use intercom_contracts::schema::{Args, Field, FieldKind, OpSchema, MAX_SAFE_INTEGER};
use intercom_contracts::serde_json::{json, Map};
use intercom_contracts::{
    operation_from_cli, operation_from_json, read_schema, validate, Context, Contract,
    ContractError, Operation, StateRead, StateWrite, Value,
};

/// A task id.
const ID: FieldKind = FieldKind::Int {
    min: 0,
    max: MAX_SAFE_INTEGER,
};
/// Largest reward.
pub const MAX_REWARD: i64 = 1_000_000;
/// Most tasks one `open_tasks` returns.
pub const MAX_LIST: i64 = 100;
/// Tasks `open_tasks` returns without a `limit`.
pub const DEFAULT_LIST: i64 = 20;
/// Most task ids one `open_tasks` call looks at (it continues from `next`).
pub const MAX_SCAN: u64 = 1000;

const OPERATIONS: &[OpSchema] = &[
    OpSchema {
        name: "create_task",
        fields: &[
            Field::required("title", FieldKind::Str { min: 1, max: 200 }),
            Field::optional(
                "reward",
                FieldKind::Int {
                    min: 0,
                    max: MAX_REWARD,
                },
            ),
        ],
        description: "Posts a new open task with an optional reward.",
    },
    OpSchema {
        name: "claim_task",
        fields: &[Field::required("id", ID)],
        description: "Claims an open task created by someone else.",
    },
    OpSchema {
        name: "complete_task",
        fields: &[
            Field::required("id", ID),
            Field::required("result", FieldKind::Str { min: 1, max: 1000 }),
        ],
        description: "Completes a task you claimed, with its result.",
    },
    OpSchema {
        name: "cancel_task",
        fields: &[Field::required("id", ID)],
        description: "Cancels a task you created that is not completed yet.",
    },
];

const READS: &[OpSchema] = &[
    OpSchema {
        name: "task",
        fields: &[Field::required("id", ID)],
        description: "One task, or null.",
    },
    OpSchema {
        name: "open_tasks",
        fields: &[
            Field::optional(
                "limit",
                FieldKind::Int {
                    min: 1,
                    max: MAX_LIST,
                },
            ),
            Field::optional("from", ID),
        ],
        description:
            "{tasks, next}: open tasks from id `from` (continue with `next` while it is not null).",
    },
    OpSchema {
        name: "stats",
        fields: &[],
        description: "Task counts by status and the rewards paid.",
    },
];

const STAT_FIELDS: [&str; 6] = [
    "created",
    "open",
    "claimed",
    "completed",
    "cancelled",
    "rewards_paid",
];

/// The task board contract (`task-board`). Stateless: everything lives in the state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TaskBoard;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    Claimed,
    Completed,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Claimed => "claimed",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Status::Open),
            "claimed" => Some(Status::Claimed),
            "completed" => Some(Status::Completed),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// A stored task, read back with the fields the rules need.
struct Task {
    key: String,
    record: Map<String, Value>,
    status: Status,
    creator: String,
    claimer: Option<String>,
    reward: u64,
}

impl Task {
    fn load<S: StateRead + ?Sized>(state: &S, op: &str, id: u64) -> Result<Self, ContractError> {
        let key = format!("task/{id}");
        let record = match state.get(&key) {
            None => return Err(ContractError::not_found(op, format!("task {id}"))),
            Some(Value::Object(record)) => record,
            Some(_) => return Err(ContractError::corrupt(&key, "expected a task object")),
        };
        let text = |field: &str| {
            record
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let status = text("status")
            .as_deref()
            .and_then(Status::parse)
            .ok_or_else(|| ContractError::corrupt(&key, "task has no valid status"))?;
        let creator =
            text("creator").ok_or_else(|| ContractError::corrupt(&key, "task has no creator"))?;
        let claimer = text("claimer");
        let reward = record.get("reward").and_then(Value::as_u64).unwrap_or(0);
        Ok(Task {
            key,
            record,
            status,
            creator,
            claimer,
            reward,
        })
    }

    /// Sets the status (and `updated_at`) and stores the task.
    fn store(
        mut self,
        status: Status,
        timestamp: u64,
        extra: &[(&str, Value)],
        state: &mut dyn StateWrite,
    ) {
        self.record.insert("status".into(), json!(status.as_str()));
        for (field, value) in extra {
            self.record.insert((*field).to_string(), value.clone());
        }
        self.record.insert("updated_at".into(), json!(timestamp));
        state.put(&self.key, Value::Object(self.record));
    }
}

/// The `stats` record, all counters present.
fn load_stats<S: StateRead + ?Sized>(state: &S) -> Result<Map<String, Value>, ContractError> {
    let mut stats = match state.get("stats") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ContractError::corrupt("stats", "expected an object")),
    };
    for field in STAT_FIELDS {
        match stats.get(field) {
            None => {
                stats.insert(field.into(), json!(0));
            }
            Some(v) if v.is_u64() => {}
            Some(_) => {
                return Err(ContractError::corrupt(
                    "stats",
                    format!("`{field}` is not a non-negative integer"),
                ))
            }
        }
    }
    Ok(stats)
}

/// Adds `delta` to (or, negative, subtracts from) stats counter `field`.
fn bump(
    op: &str,
    stats: &mut Map<String, Value>,
    field: &str,
    delta: i64,
) -> Result<(), ContractError> {
    let now = stats.get(field).and_then(Value::as_u64).unwrap_or(0);
    let next = if delta >= 0 {
        now.checked_add(delta as u64)
            .filter(|n| *n <= MAX_SAFE_INTEGER as u64)
            .ok_or_else(|| {
                ContractError::rejected(op, format!("the `{field}` counter is exhausted"))
            })?
    } else {
        now.saturating_sub(delta.unsigned_abs())
    };
    stats.insert(field.to_string(), json!(next));
    Ok(())
}

fn task_count<S: StateRead + ?Sized>(state: &S) -> Result<u64, ContractError> {
    match state.get("task_count") {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| ContractError::corrupt("task_count", "expected a non-negative integer")),
    }
}

/// Text that is only whitespace is refused even when its length fits.
fn not_blank<'a>(op: &str, field: &str, text: &'a str) -> Result<&'a str, ContractError> {
    if text.trim().is_empty() {
        Err(ContractError::rejected(
            op,
            format!("`{field}` must not be blank"),
        ))
    } else {
        Ok(text)
    }
}

impl TaskBoard {
    fn create_task(
        &self,
        op: &str,
        args: Args<'_>,
        ctx: &Context<'_>,
        author: &str,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let title = not_blank(op, "title", args.str("title")?)?;
        let reward = args.opt_int("reward")?.unwrap_or(0).max(0);
        let id = task_count(state)?;
        let next = id
            .checked_add(1)
            .filter(|n| *n <= MAX_SAFE_INTEGER as u64)
            .ok_or_else(|| ContractError::rejected(op, "the task counter is exhausted"))?;
        let mut stats = load_stats(state)?;
        bump(op, &mut stats, "created", 1)?;
        bump(op, &mut stats, "open", 1)?;
        state.put(
            &format!("task/{id}"),
            json!({
                "id": id,
                "title": title,
                "reward": reward,
                "creator": author,
                "status": Status::Open.as_str(),
                "claimer": null,
                "result": null,
                "created_at": ctx.timestamp,
                "updated_at": ctx.timestamp,
            }),
        );
        state.put("task_count", json!(next));
        state.put("stats", Value::Object(stats));
        Ok(())
    }

    fn claim_task(
        &self,
        op: &str,
        args: Args<'_>,
        ctx: &Context<'_>,
        author: &str,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let id = args.uint("id")?;
        let task = Task::load(state, op, id)?;
        if task.status != Status::Open {
            return Err(ContractError::rejected(
                op,
                format!(
                    "task {id} is {}; only open tasks can be claimed",
                    task.status.as_str()
                ),
            ));
        }
        if task.creator == author {
            return Err(ContractError::denied(op, "you cannot claim your own task"));
        }
        let mut stats = load_stats(state)?;
        bump(op, &mut stats, "open", -1)?;
        bump(op, &mut stats, "claimed", 1)?;
        task.store(
            Status::Claimed,
            ctx.timestamp,
            &[("claimer", json!(author))],
            state,
        );
        state.put("stats", Value::Object(stats));
        Ok(())
    }

    fn complete_task(
        &self,
        op: &str,
        args: Args<'_>,
        ctx: &Context<'_>,
        author: &str,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let id = args.uint("id")?;
        let result = not_blank(op, "result", args.str("result")?)?;
        let task = Task::load(state, op, id)?;
        if task.status != Status::Claimed {
            return Err(ContractError::rejected(
                op,
                format!(
                    "task {id} is {}; only claimed tasks can be completed",
                    task.status.as_str()
                ),
            ));
        }
        if task.claimer.as_deref() != Some(author) {
            return Err(ContractError::denied(
                op,
                format!("only the peer that claimed task {id} may complete it"),
            ));
        }
        let mut stats = load_stats(state)?;
        bump(op, &mut stats, "claimed", -1)?;
        bump(op, &mut stats, "completed", 1)?;
        bump(
            op,
            &mut stats,
            "rewards_paid",
            task.reward.min(MAX_REWARD as u64) as i64,
        )?;
        task.store(
            Status::Completed,
            ctx.timestamp,
            &[("result", json!(result))],
            state,
        );
        state.put("stats", Value::Object(stats));
        Ok(())
    }

    fn cancel_task(
        &self,
        op: &str,
        args: Args<'_>,
        ctx: &Context<'_>,
        author: &str,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let id = args.uint("id")?;
        let task = Task::load(state, op, id)?;
        if task.creator != author {
            return Err(ContractError::denied(
                op,
                format!("only the creator of task {id} may cancel it"),
            ));
        }
        let was = task.status;
        if !matches!(was, Status::Open | Status::Claimed) {
            return Err(ContractError::rejected(
                op,
                format!("task {id} is already {}", was.as_str()),
            ));
        }
        let mut stats = load_stats(state)?;
        bump(op, &mut stats, was.as_str(), -1)?;
        bump(op, &mut stats, "cancelled", 1)?;
        task.store(Status::Cancelled, ctx.timestamp, &[], state);
        state.put("stats", Value::Object(stats));
        Ok(())
    }

    fn open_tasks(&self, args: Args<'_>, state: &dyn StateRead) -> Result<Value, ContractError> {
        let limit = args
            .opt_int("limit")?
            .unwrap_or(DEFAULT_LIST)
            .clamp(1, MAX_LIST) as usize;
        let from = args.opt_int("from")?.unwrap_or(0).max(0) as u64;
        let count = task_count(state)?;
        let scan_end = from.saturating_add(MAX_SCAN).min(count);
        let mut tasks = Vec::new();
        let mut id = from;
        while id < scan_end && tasks.len() < limit {
            if let Some(task) = state.get(&format!("task/{id}")) {
                if task.get("status").and_then(Value::as_str) == Some("open") {
                    tasks.push(task);
                }
            }
            id += 1;
        }
        let next = if id < count { json!(id) } else { Value::Null };
        Ok(json!({"tasks": tasks, "next": next}))
    }
}

/// Help for commands the board cannot map.
fn command_hint() -> String {
    "use `create <title>`, `claim <id>`, `complete <id> <result>`, `cancel <id>`, or JSON \
     like {\"op\": \"create_task\", \"title\": \"...\", \"reward\": 10}; reads: `list`, \
     `stats`, `task <id>`"
        .to_string()
}

impl Contract for TaskBoard {
    fn name(&self) -> &str {
        "task-board"
    }

    fn operations(&self) -> &[OpSchema] {
        OPERATIONS
    }

    fn reads(&self) -> &[OpSchema] {
        READS
    }

    fn map_command(&self, command: &str) -> Result<Operation, ContractError> {
        let command = command.trim();
        if command.starts_with('{') {
            let json: Value = intercom_contracts::serde_json::from_str(command).map_err(|e| {
                ContractError::UnknownCommand {
                    command: clip(command),
                    hint: format!("not valid JSON ({e}); {}", command_hint()),
                }
            })?;
            return operation_from_json(self, &json);
        }
        let (verb, rest) = match command.split_once(char::is_whitespace) {
            Some((verb, rest)) => (verb, rest.trim()),
            None => (command, ""),
        };
        let arg = |name: &str, value: &str| (name.to_string(), value.to_string());
        match verb {
            "list" | "open" => Err(ContractError::ReadFunction {
                name: "open_tasks".into(),
            }),
            "stats" => Err(ContractError::ReadFunction {
                name: "stats".into(),
            }),
            "task" | "show" => Err(ContractError::ReadFunction {
                name: "task".into(),
            }),
            "create" if !rest.is_empty() => {
                operation_from_cli(self, "create_task", &[arg("title", rest)])
            }
            "claim" if !rest.is_empty() => {
                operation_from_cli(self, "claim_task", &[arg("id", rest)])
            }
            "cancel" if !rest.is_empty() => {
                operation_from_cli(self, "cancel_task", &[arg("id", rest)])
            }
            "complete" if !rest.is_empty() => {
                let (id, result) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                operation_from_cli(
                    self,
                    "complete_task",
                    &[arg("id", id), arg("result", result.trim())],
                )
            }
            _ => Err(ContractError::UnknownCommand {
                command: clip(command),
                hint: command_hint(),
            }),
        }
    }

    fn apply(
        &self,
        op: &Operation,
        ctx: &Context<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        validate(self, op)?;
        let author = ctx.author.to_ascii_lowercase();
        let name = op.name.as_str();
        let args = Args::new(name, &op.value);
        match name {
            "create_task" => self.create_task(name, args, ctx, &author, state),
            "claim_task" => self.claim_task(name, args, ctx, &author, state),
            "complete_task" => self.complete_task(name, args, ctx, &author, state),
            "cancel_task" => self.cancel_task(name, args, ctx, &author, state),
            // `validate` admits only declared names; kept total for safety.
            other => Err(ContractError::UnknownOperation {
                name: clip(other),
                known: intercom_contracts::schema::names(OPERATIONS),
            }),
        }
    }

    fn apply_feature(
        &self,
        feature: &str,
        _entry: &Value,
        _ctx: &Context<'_>,
        _state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        Err(ContractError::UnknownFeature {
            feature: clip(feature),
            accepted: "(none)".into(),
        })
    }

    fn read(
        &self,
        function: &str,
        args: &Value,
        state: &dyn StateRead,
    ) -> Result<Value, ContractError> {
        let schema = read_schema(self, function, args)?;
        let args = Args::new(schema.name, args);
        match schema.name {
            "task" => Ok(state
                .get(&format!("task/{}", args.uint("id")?))
                .unwrap_or(Value::Null)),
            "open_tasks" => self.open_tasks(args, state),
            "stats" => {
                let mut stats = load_stats(state)?;
                stats.insert("tasks".into(), json!(task_count(state)?));
                Ok(Value::Object(stats))
            }
            other => Err(ContractError::UnknownReadFunction {
                name: other.to_string(),
                known: intercom_contracts::schema::names(READS),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intercom_contracts::{describe, MemoryState};

    const ALICE: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const BOB: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    const CAROL: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

    fn ctx(author: &str, timestamp: u64) -> Context<'_> {
        Context {
            author,
            writer: author,
            position: timestamp,
            timestamp,
            admin: None,
        }
    }

    /// Applies; on rejection asserts the state is unchanged.
    fn apply(
        state: &mut MemoryState,
        author: &str,
        name: &str,
        value: Value,
    ) -> Result<(), ContractError> {
        let before = state.clone();
        let result = TaskBoard.apply(&Operation::new(name, value), &ctx(author, 100), state);
        if result.is_err() {
            assert_eq!(*state, before, "rejected `{name}` changed the state");
        }
        result
    }

    #[track_caller]
    fn ok(state: &mut MemoryState, author: &str, name: &str, value: Value) {
        if let Err(e) = apply(state, author, name, value) {
            panic!("`{name}` failed: {e}");
        }
    }

    #[track_caller]
    fn fails(state: &mut MemoryState, author: &str, name: &str, value: Value) -> ContractError {
        apply(state, author, name, value).expect_err("accepted")
    }

    fn read(state: &MemoryState, function: &str, args: Value) -> Value {
        TaskBoard.read(function, &args, state).unwrap()
    }

    #[test]
    fn full_task_flow() {
        let mut s = MemoryState::new();
        ok(
            &mut s,
            ALICE,
            "create_task",
            json!({"title": "Write docs", "reward": 50}),
        );
        ok(&mut s, ALICE, "create_task", json!({"title": "Fix bug"}));
        assert_eq!(s.get("task_count"), Some(json!(2)));
        assert_eq!(
            read(&s, "task", json!({"id": 0})),
            json!({"id": 0, "title": "Write docs", "reward": 50, "creator": ALICE,
                   "status": "open", "claimer": null, "result": null,
                   "created_at": 100, "updated_at": 100})
        );
        assert_eq!(read(&s, "task", json!({"id": 1}))["reward"], json!(0));

        ok(&mut s, BOB, "claim_task", json!({"id": 0}));
        let t = read(&s, "task", json!({"id": 0}));
        assert_eq!(
            (t["status"].clone(), t["claimer"].clone()),
            (json!("claimed"), json!(BOB))
        );

        ok(
            &mut s,
            BOB,
            "complete_task",
            json!({"id": 0, "result": "docs at /docs"}),
        );
        let t = read(&s, "task", json!({"id": 0}));
        assert_eq!(t["status"], json!("completed"));
        assert_eq!(t["result"], json!("docs at /docs"));

        ok(&mut s, ALICE, "cancel_task", json!({"id": 1}));
        assert_eq!(
            read(&s, "stats", Value::Null),
            json!({"created": 2, "open": 0, "claimed": 0, "completed": 1, "cancelled": 1,
                   "rewards_paid": 50, "tasks": 2})
        );
    }

    #[test]
    fn claim_rules() {
        let mut s = MemoryState::new();
        ok(&mut s, ALICE, "create_task", json!({"title": "t"}));
        let e = fails(&mut s, ALICE, "claim_task", json!({"id": 0}));
        assert_eq!(e.code(), "permission_denied");
        assert!(e.to_string().contains("your own task"), "{e}");
        let e = fails(&mut s, BOB, "claim_task", json!({"id": 1}));
        assert_eq!(e.code(), "not_found");
        assert!(e.to_string().contains("task 1"), "{e}");
        ok(&mut s, BOB, "claim_task", json!({"id": 0}));
        let e = fails(&mut s, CAROL, "claim_task", json!({"id": 0}));
        assert_eq!(e.code(), "rejected");
        assert!(e.to_string().contains("is claimed"), "{e}");
    }

    #[test]
    fn complete_rules() {
        let mut s = MemoryState::new();
        ok(
            &mut s,
            ALICE,
            "create_task",
            json!({"title": "t", "reward": 7}),
        );
        let e = fails(
            &mut s,
            BOB,
            "complete_task",
            json!({"id": 0, "result": "r"}),
        );
        assert!(e.to_string().contains("only claimed tasks"), "{e}");
        ok(&mut s, BOB, "claim_task", json!({"id": 0}));
        let e = fails(
            &mut s,
            CAROL,
            "complete_task",
            json!({"id": 0, "result": "r"}),
        );
        assert_eq!(e.code(), "permission_denied");
        let e = fails(
            &mut s,
            ALICE,
            "complete_task",
            json!({"id": 0, "result": "r"}),
        );
        assert_eq!(
            e.code(),
            "permission_denied",
            "the creator is not the claimer"
        );
        let e = fails(
            &mut s,
            BOB,
            "complete_task",
            json!({"id": 0, "result": "   "}),
        );
        assert!(e.to_string().contains("must not be blank"), "{e}");
        ok(
            &mut s,
            BOB,
            "complete_task",
            json!({"id": 0, "result": "done"}),
        );
        let e = fails(
            &mut s,
            BOB,
            "complete_task",
            json!({"id": 0, "result": "again"}),
        );
        assert_eq!(e.code(), "rejected");
        assert_eq!(read(&s, "stats", Value::Null)["rewards_paid"], json!(7));
    }

    #[test]
    fn cancel_rules() {
        let mut s = MemoryState::new();
        ok(&mut s, ALICE, "create_task", json!({"title": "a"}));
        ok(&mut s, ALICE, "create_task", json!({"title": "b"}));
        let e = fails(&mut s, BOB, "cancel_task", json!({"id": 0}));
        assert_eq!(e.code(), "permission_denied");
        ok(&mut s, BOB, "claim_task", json!({"id": 0}));
        ok(&mut s, ALICE, "cancel_task", json!({"id": 0}));
        let e = fails(
            &mut s,
            BOB,
            "complete_task",
            json!({"id": 0, "result": "late"}),
        );
        assert!(e.to_string().contains("is cancelled"), "{e}");
        let e = fails(&mut s, ALICE, "cancel_task", json!({"id": 0}));
        assert!(e.to_string().contains("already cancelled"), "{e}");
        let e = fails(&mut s, CAROL, "claim_task", json!({"id": 0}));
        assert_eq!(e.code(), "rejected");

        ok(&mut s, CAROL, "claim_task", json!({"id": 1}));
        ok(
            &mut s,
            CAROL,
            "complete_task",
            json!({"id": 1, "result": "ok"}),
        );
        let e = fails(&mut s, ALICE, "cancel_task", json!({"id": 1}));
        assert!(e.to_string().contains("already completed"), "{e}");
        let stats = read(&s, "stats", Value::Null);
        assert_eq!(
            (stats["claimed"].clone(), stats["cancelled"].clone()),
            (json!(0), json!(1))
        );
    }

    #[test]
    fn strict_schemas() {
        let mut s = MemoryState::new();
        for (name, value, code, needle) in [
            (
                "create_task",
                json!({"title": "x".repeat(201)}),
                "string_length",
                "`title`",
            ),
            (
                "create_task",
                json!({"title": "x", "reward": 1_000_001}),
                "out_of_range",
                "`reward`",
            ),
            (
                "create_task",
                json!({"title": "x", "reward": -1}),
                "out_of_range",
                "`reward`",
            ),
            (
                "create_task",
                json!({"title": "x", "prize": 1}),
                "unknown_field",
                "`prize`",
            ),
            (
                "create_task",
                json!({"reward": 1}),
                "missing_field",
                "`title`",
            ),
            ("create_task", json!({"title": 3}), "wrong_type", "`title`"),
            ("create_task", json!({"title": " "}), "rejected", "`title`"),
            ("claim_task", json!({"id": "0"}), "wrong_type", "`id`"),
            (
                "complete_task",
                json!({"id": 0, "result": ""}),
                "string_length",
                "`result`",
            ),
            ("cancel_task", json!({}), "missing_field", "`id`"),
            (
                "delete_task",
                json!({"id": 0}),
                "unknown_operation",
                "`delete_task`",
            ),
            ("stats", Value::Null, "read_function", "`stats`"),
        ] {
            let e = fails(&mut s, ALICE, name, value);
            assert_eq!(e.code(), code, "{name}: {e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert!(s.entries.is_empty());
    }

    #[test]
    fn open_tasks_pages_through_the_board() {
        let mut s = MemoryState::new();
        for i in 0..30 {
            ok(
                &mut s,
                ALICE,
                "create_task",
                json!({"title": format!("task {i}")}),
            );
        }
        for id in [0, 2, 4] {
            ok(&mut s, BOB, "claim_task", json!({"id": id}));
        }
        ok(&mut s, ALICE, "cancel_task", json!({"id": 1}));

        let page = read(&s, "open_tasks", json!({"limit": 3}));
        let ids: Vec<_> = page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect();
        assert_eq!(ids, [json!(3), json!(5), json!(6)]);
        assert_eq!(page["next"], json!(7));

        let page = read(&s, "open_tasks", json!({"from": 7, "limit": 100}));
        assert_eq!(page["tasks"].as_array().unwrap().len(), 23);
        assert_eq!(page["next"], Value::Null);

        let page = read(&s, "open_tasks", Value::Null);
        assert_eq!(
            page["tasks"].as_array().unwrap().len(),
            DEFAULT_LIST as usize
        );

        let e = TaskBoard
            .read("open_tasks", &json!({"limit": 0}), &s)
            .unwrap_err();
        assert_eq!(e.code(), "out_of_range");
        assert_eq!(read(&s, "task", json!({"id": 99})), Value::Null);
        let e = TaskBoard.read("tasks", &Value::Null, &s).unwrap_err();
        assert_eq!(e.code(), "unknown_read_function");
    }

    #[test]
    fn open_tasks_scan_is_bounded() {
        let mut s = MemoryState::new();
        s.put("task_count", json!(MAX_SCAN * 3));
        let page = read(&s, "open_tasks", Value::Null);
        assert_eq!(page["tasks"], json!([]));
        assert_eq!(page["next"], json!(MAX_SCAN));
        s.put(
            &format!("task/{}", MAX_SCAN + 5),
            json!({"id": MAX_SCAN + 5, "status": "open"}),
        );
        let page = read(&s, "open_tasks", json!({"from": MAX_SCAN}));
        assert_eq!(page["tasks"][0]["id"], json!(MAX_SCAN + 5));
    }

    #[test]
    fn command_shortcuts_and_json() {
        let b = TaskBoard;
        assert_eq!(
            b.map_command("create Write the README").unwrap(),
            Operation::new("create_task", json!({"title": "Write the README"}))
        );
        assert_eq!(
            b.map_command("claim 3").unwrap(),
            Operation::new("claim_task", json!({"id": 3}))
        );
        assert_eq!(
            b.map_command("complete 3 merged in #12").unwrap(),
            Operation::new("complete_task", json!({"id": 3, "result": "merged in #12"}))
        );
        assert_eq!(
            b.map_command(" cancel 3 ").unwrap(),
            Operation::new("cancel_task", json!({"id": 3}))
        );
        assert_eq!(
            b.map_command(r#"{"op": "create_task", "title": "t", "reward": 10}"#)
                .unwrap(),
            Operation::new("create_task", json!({"title": "t", "reward": 10}))
        );
        assert_eq!(
            b.map_command(r#"{"type": "claim_task", "value": {"id": 1}}"#)
                .unwrap(),
            Operation::new("claim_task", json!({"id": 1}))
        );
        for (read, name) in [
            ("list", "open_tasks"),
            ("stats", "stats"),
            ("task 3", "task"),
        ] {
            assert_eq!(
                b.map_command(read).unwrap_err(),
                ContractError::ReadFunction { name: name.into() }
            );
        }
        let e = b.map_command("claim three").unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.to_string().contains("--id"), "{e}");
        let e = b.map_command("complete 3").unwrap_err();
        assert_eq!(e.code(), "string_length");
        for bad in ["claim", "create", "dance", "", "{oops"] {
            assert_eq!(
                b.map_command(bad).unwrap_err().code(),
                "unknown_command",
                "{bad}"
            );
        }
    }

    #[test]
    fn cli_coercion_and_description() {
        let b = TaskBoard;
        let op = operation_from_cli(
            &b,
            "create_task",
            &[("title".into(), "t".into()), ("reward".into(), "25".into())],
        )
        .unwrap();
        assert_eq!(op.value, json!({"title": "t", "reward": 25}));
        let d = describe(&b);
        assert_eq!(d["name"], "task-board");
        assert_eq!(d["operations"].as_array().unwrap().len(), 4);
        assert_eq!(d["features"], json!([]));
        let mut s = MemoryState::new();
        let e = b
            .apply_feature(
                "timer",
                &json!({"key": "currentTime", "value": 1}),
                &ctx(ALICE, 0),
                &mut s,
            )
            .unwrap_err();
        assert_eq!(e.code(), "unknown_feature");
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let mut s = MemoryState::new();
        s.put("task/0", json!({"status": "weird", "creator": ALICE}));
        s.put("task_count", json!(1));
        assert_eq!(
            fails(&mut s, BOB, "claim_task", json!({"id": 0})).code(),
            "corrupt_state"
        );
        s.put("task/0", json!([]));
        assert_eq!(
            fails(&mut s, BOB, "claim_task", json!({"id": 0})).code(),
            "corrupt_state"
        );
        s.put("stats", json!({"open": "x"}));
        assert_eq!(
            fails(&mut s, BOB, "create_task", json!({"title": "t"})).code(),
            "corrupt_state"
        );
        s.put("task_count", json!(-1));
        assert_eq!(
            fails(&mut s, BOB, "create_task", json!({"title": "t"})).code(),
            "corrupt_state"
        );
    }

    /// xorshift64*, for the randomized determinism check.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn random_operations_are_deterministic_and_rejections_write_nothing() {
        let authors = [ALICE, BOB, CAROL];
        let run = |seed: u64| {
            let mut rng = Rng(seed);
            let mut state = MemoryState::new();
            let mut outcomes = Vec::new();
            for step in 0..2000u64 {
                let author = authors[rng.below(3) as usize];
                // Mostly recent tasks, where claims and completions can succeed.
                let count = state
                    .get("task_count")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let id = json!(count.saturating_sub(1 + rng.below(6)));
                let op = match rng.below(5) {
                    0 => Operation::new(
                        "create_task",
                        json!({"title": (["a", "", " ", "b"][rng.below(4) as usize]), "reward": rng.below(3) * 600_000}),
                    ),
                    1 => Operation::new("claim_task", json!({"id": id})),
                    2 => Operation::new(
                        "complete_task",
                        json!({"id": id, "result": (["done", ""][rng.below(2) as usize])}),
                    ),
                    3 => Operation::new("cancel_task", json!({"id": id})),
                    _ => Operation::new("claim_task", json!({"id": "x"})),
                };
                let before = state.clone();
                let result = TaskBoard.apply(&op, &ctx(author, step), &mut state);
                if result.is_err() {
                    assert_eq!(state, before, "step {step}: {result:?}");
                }
                outcomes.push(result.is_ok());
            }
            (state, outcomes)
        };
        let (a, oa) = run(99);
        let (b, ob) = run(99);
        assert_eq!(a, b);
        assert_eq!(oa, ob);
        let accepted = oa.iter().filter(|ok| **ok).count();
        assert!(accepted > 200 && accepted < 1800, "{accepted} accepted");

        // The stats agree with the tasks themselves.
        let stats = read(&a, "stats", Value::Null);
        let count = a.get("task_count").and_then(|v| v.as_u64()).unwrap();
        let mut by_status = std::collections::BTreeMap::<String, u64>::new();
        for id in 0..count {
            let t = read(&a, "task", json!({"id": id}));
            *by_status
                .entry(t["status"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for status in ["open", "claimed", "completed", "cancelled"] {
            assert_eq!(
                stats[status].as_u64().unwrap(),
                by_status.get(status).copied().unwrap_or(0),
                "{status}"
            );
        }
        assert_eq!(stats["created"], json!(count));
        for status in ["completed", "cancelled"] {
            assert!(
                by_status.get(status).copied().unwrap_or(0) > 0,
                "no {status} tasks"
            );
        }
    }
}
