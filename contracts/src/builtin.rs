//! The built-in contract, `intercom-sample`: what every peer runs unless an app supplies
//! its own. It has the operations of Intercom's sample contract (`store_something`,
//! `submit_something`, the timer feature, `chat_last`), owner-checked key/value app data,
//! and trac-peer's chat with its moderation (chat on/off, mods, mutes, whitelist, nicks,
//! deletions, pins), using trac-peer's state key names.
//!
//! # State keys
//!
//! | key                    | value                                  | written by |
//! |------------------------|----------------------------------------|------------|
//! | `something`            | `"there is something"`                 | `store_something` (first time only) |
//! | `submitted_by/<addr>`  | the submitted `some_key` string         | `submit_something` |
//! | `kv/<key>`             | any JSON value (≤ 1024 bytes)           | `put`, `delete` |
//! | `kvo/<key>`            | owner address of `kv/<key>`             | `put` (first write), `delete` |
//! | `currentTime`          | integer ms since the epoch              | `timer` feature |
//! | `chat_status`          | `"on"` or `"off"` (absent: off)         | `set_chat_status` |
//! | `msgl`                 | number of messages = next message id    | `post` |
//! | `msg/<id>`             | message record (below)                  | `post`, `delete_message`, `pin_message`, `unpin_message` |
//! | `umsgl/<addr>`         | number of messages by `addr`            | `post` |
//! | `umsg/<addr>/<n>`      | `"msg/<id>"` of `addr`'s n-th message   | `post` |
//! | `chat_last`            | `{msg, address, at}` of the last post   | `post` |
//! | `nick/<addr>`          | the nick of `addr`                      | `set_nick` |
//! | `kcin/<nick>`          | the address holding `nick`              | `set_nick` |
//! | `mod/<addr>`           | `true`/`false`: moderator               | `set_mod` |
//! | `mtd/<addr>`           | `true`/`false`: muted                   | `mute_status` |
//! | `wlst`                 | `true`/`false`: whitelist enforced      | `enable_whitelist` |
//! | `wl/<addr>`            | `true`/`false`: whitelisted             | `set_whitelist_status` |
//! | `delml`                | number of deletions                     | `delete_message` |
//! | `delm/<n>`             | id of the n-th deleted message          | `delete_message` |
//! | `pnl`                  | number of pin ids handed out            | `pin_message` |
//! | `pni/<pin_id>`         | `{msg: <id>, pinned: bool}`             | `pin_message`, `unpin_message` |
//!
//! `<addr>` is a lowercase hex peer address; ids and counters are JSON integers. A message
//! record is `{id, msg, address, at, timestamp, reply_to, deleted, deleted_by, pinned,
//! pin_id}`: `at` is the timer's `currentTime` when applied (or `null`), `timestamp` the
//! author's own; a deleted message has `msg: null`, `deleted: true` and `deleted_by`.
//!
//! # Permissions
//!
//! The admin is `Context::admin`; moderators are `mod/<addr> = true`.
//! - `set_chat_status`, `set_mod`, `enable_whitelist`, `set_whitelist_status`: admin only.
//! - `post`: chat on; the author neither muted nor, when the whitelist is enforced,
//!   missing from it (the admin is exempt from both).
//! - `set_nick`: chat on; your own nick, or (with `user`) another user's: the admin for
//!   anyone, a moderator for users who are neither admin nor moderator. Nicks are unique.
//! - `mute_status`: the admin for anyone; a moderator for users who are neither admin nor
//!   moderator.
//! - `delete_message`: the admin any message; a moderator any message not the admin's; a
//!   user their own.
//! - `pin_message`, `unpin_message`: admin or moderator.
//! - `put`, `delete` (app data): anyone may create a key and becomes its owner; only the
//!   owner or the admin may overwrite or delete it (an admin overwrite keeps the owner).
//! - `store_something`, `submit_something`: anyone.
//!
//! Every operation checks everything before its first write, so a rejected operation
//! leaves the state untouched even without the runtime discarding writes.

use serde_json::{json, Map, Value};

use crate::error::{clip, ContractError};
use crate::schema::{Args, Field, FieldKind, OpSchema, MAX_SAFE_INTEGER};
use crate::{
    operation_from_json, read_schema, validate, Context, Contract, Operation, StateRead, StateWrite,
};

/// A message, pin or task id.
const ID: FieldKind = FieldKind::Int {
    min: 0,
    max: MAX_SAFE_INTEGER,
};
/// An app data key.
const KV_KEY: FieldKind = FieldKind::Str { min: 1, max: 256 };
/// Most messages one `read_messages` returns.
pub const MAX_READ_MESSAGES: i64 = 100;
/// Messages `read_messages` returns without a `limit`.
pub const DEFAULT_READ_MESSAGES: i64 = 20;
/// Accepted features.
const FEATURES: &[&str] = &["timer"];

/// The chat operations: actions, outside the transaction gate (as in trac-peer).
const ACTIONS: &[&str] = &[
    "set_chat_status",
    "post",
    "set_nick",
    "mute_status",
    "set_mod",
    "delete_message",
    "pin_message",
    "unpin_message",
    "enable_whitelist",
    "set_whitelist_status",
];

const OPERATIONS: &[OpSchema] = &[
    OpSchema {
        name: "store_something",
        fields: &[],
        description: "Stores \"there is something\" under `something`, once.",
    },
    OpSchema {
        name: "submit_something",
        fields: &[Field::required(
            "some_key",
            FieldKind::Str { min: 1, max: 128 },
        )],
        description: "Records some_key under submitted_by/<your address>.",
    },
    OpSchema {
        name: "put",
        fields: &[
            Field::required("key", KV_KEY),
            Field::required("value", FieldKind::Any { max_bytes: 1024 }),
        ],
        description: "Stores app data under kv/<key>; the first writer owns the key.",
    },
    OpSchema {
        name: "delete",
        fields: &[Field::required("key", KV_KEY)],
        description: "Deletes app data kv/<key> (owner or admin).",
    },
    OpSchema {
        name: "set_chat_status",
        fields: &[Field::required("enabled", FieldKind::Bool)],
        description: "Turns the chat on or off (admin).",
    },
    OpSchema {
        name: "post",
        fields: &[
            Field::required("message", FieldKind::Str { min: 1, max: 1024 }),
            Field::optional("reply_to", ID),
        ],
        description: "Posts a chat message, optionally replying to a message id.",
    },
    OpSchema {
        name: "set_nick",
        fields: &[
            Field::required("nick", FieldKind::Str { min: 1, max: 32 }),
            Field::optional("user", FieldKind::Key),
        ],
        description: "Sets your unique nick (or, as admin/mod, another user's).",
    },
    OpSchema {
        name: "mute_status",
        fields: &[
            Field::required("user", FieldKind::Key),
            Field::required("muted", FieldKind::Bool),
        ],
        description: "Mutes or unmutes a user (admin, or mod for regular users).",
    },
    OpSchema {
        name: "set_mod",
        fields: &[
            Field::required("user", FieldKind::Key),
            Field::required("mod", FieldKind::Bool),
        ],
        description: "Grants or revokes moderator rights (admin).",
    },
    OpSchema {
        name: "delete_message",
        fields: &[Field::required("id", ID)],
        description: "Deletes a message (its author, a mod, or the admin).",
    },
    OpSchema {
        name: "pin_message",
        fields: &[
            Field::required("id", ID),
            Field::required("pin", FieldKind::Bool),
        ],
        description: "Pins or unpins a message by message id (admin or mod).",
    },
    OpSchema {
        name: "unpin_message",
        fields: &[Field::required("pin_id", ID)],
        description: "Unpins by pin id (admin or mod).",
    },
    OpSchema {
        name: "enable_whitelist",
        fields: &[Field::required("enabled", FieldKind::Bool)],
        description: "Restricts posting to whitelisted users, or lifts it (admin).",
    },
    OpSchema {
        name: "set_whitelist_status",
        fields: &[
            Field::required("user", FieldKind::Key),
            Field::required("status", FieldKind::Bool),
        ],
        description: "Adds a user to or removes them from the whitelist (admin).",
    },
];

const READS: &[OpSchema] = &[
    OpSchema {
        name: "read_key",
        fields: &[Field::required("key", KV_KEY)],
        description: "Any state key of this contract, e.g. kv/<key> or msg/0 (null if absent).",
    },
    OpSchema {
        name: "read_chat_last",
        fields: &[],
        description: "The last chat message seen by the contract: {msg, address, at}.",
    },
    OpSchema {
        name: "read_timer",
        fields: &[],
        description: "The timer feature's currentTime (ms), or null.",
    },
    OpSchema {
        name: "read_snapshot",
        fields: &[],
        description: "{something, currentTime, msgl, msg0, msg1}.",
    },
    OpSchema {
        name: "read_message",
        fields: &[Field::required("id", ID)],
        description: "One message record, or null.",
    },
    OpSchema {
        name: "read_messages",
        fields: &[
            Field::optional("from", ID),
            Field::optional(
                "limit",
                FieldKind::Int {
                    min: 1,
                    max: MAX_READ_MESSAGES,
                },
            ),
        ],
        description:
            "{messages, total}: up to limit (default 20, max 100) messages from id `from`.",
    },
    OpSchema {
        name: "read_nick",
        fields: &[Field::required("user", FieldKind::Key)],
        description: "A user's nick, or null.",
    },
];

/// The built-in contract (`intercom-sample`). Stateless: everything lives in the state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinContract;

/// What one apply needs besides the value: the op name and the normalized roles.
struct Cx<'a> {
    op: &'a str,
    author: String,
    admin: Option<String>,
    timestamp: u64,
}

impl Cx<'_> {
    fn is_admin(&self) -> bool {
        self.admin.as_deref() == Some(self.author.as_str())
    }

    fn is_admin_addr(&self, addr: &str) -> bool {
        self.admin.as_deref() == Some(addr)
    }

    fn require_admin(&self, what: &str) -> Result<(), ContractError> {
        match &self.admin {
            None => Err(ContractError::denied(
                self.op,
                format!("only the admin may {what}, and this subnet has no admin"),
            )),
            Some(_) if self.is_admin() => Ok(()),
            Some(_) => Err(ContractError::denied(
                self.op,
                format!("only the admin may {what}"),
            )),
        }
    }

    fn require_admin_or_mod<S: StateRead + ?Sized>(
        &self,
        state: &S,
        what: &str,
    ) -> Result<(), ContractError> {
        if self.is_admin() || is_mod(state, &self.author) {
            Ok(())
        } else {
            Err(ContractError::denied(
                self.op,
                format!("only the admin or a moderator may {what}"),
            ))
        }
    }
}

fn flag<S: StateRead + ?Sized>(state: &S, key: &str) -> bool {
    matches!(state.get(key), Some(Value::Bool(true)))
}

fn is_mod<S: StateRead + ?Sized>(state: &S, addr: &str) -> bool {
    flag(state, &format!("mod/{addr}"))
}

fn chat_on<S: StateRead + ?Sized>(state: &S) -> bool {
    matches!(state.get("chat_status"), Some(Value::String(s)) if s == "on")
}

/// A counter key's value (0 when absent).
fn counter<S: StateRead + ?Sized>(state: &S, key: &str) -> Result<u64, ContractError> {
    match state.get(key) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| ContractError::corrupt(key, "expected a non-negative integer")),
    }
}

/// `n + 1`, kept within JavaScript's safe integers.
fn incremented(op: &str, n: u64) -> Result<u64, ContractError> {
    n.checked_add(1)
        .filter(|next| *next <= MAX_SAFE_INTEGER as u64)
        .ok_or_else(|| ContractError::rejected(op, "a counter is exhausted"))
}

/// An object stored under `key`, if any.
fn object<S: StateRead + ?Sized>(
    state: &S,
    key: &str,
) -> Result<Option<Map<String, Value>>, ContractError> {
    match state.get(key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ContractError::corrupt(key, "expected an object")),
    }
}

/// The message record with `id`, or NotFound.
fn message<S: StateRead + ?Sized>(
    state: &S,
    op: &str,
    id: u64,
) -> Result<Map<String, Value>, ContractError> {
    object(state, &format!("msg/{id}"))?
        .ok_or_else(|| ContractError::not_found(op, format!("message {id}")))
}

fn message_author(record: &Map<String, Value>, id: u64) -> Result<String, ContractError> {
    record
        .get("address")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ContractError::corrupt(&format!("msg/{id}"), "message has no address"))
}

impl BuiltinContract {
    fn store_something(&self, state: &mut dyn StateWrite) -> Result<(), ContractError> {
        if state.get("something").is_none() {
            state.put("something", json!("there is something"));
        }
        Ok(())
    }

    fn submit_something(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let some_key = args.str("some_key")?;
        state.put(&format!("submitted_by/{}", cx.author), json!(some_key));
        Ok(())
    }

    /// The owner of app data key `key`, checked against the author.
    fn kv_owner_check(
        &self,
        cx: &Cx<'_>,
        key: &str,
        state: &dyn StateWrite,
    ) -> Result<Option<String>, ContractError> {
        let owner_key = format!("kvo/{key}");
        let owner = match state.get(&owner_key) {
            None => None,
            Some(Value::String(owner)) => Some(owner),
            Some(_) => return Err(ContractError::corrupt(&owner_key, "expected an address")),
        };
        if let Some(owner) = &owner {
            if *owner != cx.author && !cx.is_admin() {
                return Err(ContractError::denied(
                    cx.op,
                    format!(
                        "key {:?} belongs to {owner}; only its owner or the admin may change it",
                        clip(key)
                    ),
                ));
            }
        }
        Ok(owner)
    }

    fn put(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let key = args.str("key")?;
        let value = args.any("value")?.clone();
        let owner = self.kv_owner_check(cx, key, state)?;
        state.put(&format!("kv/{key}"), value);
        if owner.is_none() {
            state.put(&format!("kvo/{key}"), json!(cx.author));
        }
        Ok(())
    }

    fn delete(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let key = args.str("key")?;
        if state.get(&format!("kv/{key}")).is_none() {
            return Err(ContractError::not_found(
                cx.op,
                format!("key {:?}", clip(key)),
            ));
        }
        self.kv_owner_check(cx, key, state)?;
        state.delete(&format!("kv/{key}"));
        state.delete(&format!("kvo/{key}"));
        Ok(())
    }

    fn set_chat_status(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let enabled = args.bool("enabled")?;
        cx.require_admin("turn the chat on or off")?;
        state.put("chat_status", json!(if enabled { "on" } else { "off" }));
        Ok(())
    }

    fn post(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let text = args.str("message")?;
        // Validated: 0 <= reply_to <= MAX_SAFE_INTEGER.
        let reply_to = args.opt_int("reply_to")?.map(|r| r.max(0) as u64);
        if !chat_on(state) {
            return Err(ContractError::rejected(
                cx.op,
                "the chat is off (the admin turns it on with set_chat_status)",
            ));
        }
        if !cx.is_admin() {
            if flag(state, &format!("mtd/{}", cx.author)) {
                return Err(ContractError::denied(cx.op, "you are muted in this chat"));
            }
            if flag(state, "wlst") && !flag(state, &format!("wl/{}", cx.author)) {
                return Err(ContractError::denied(
                    cx.op,
                    "the chat is whitelist-only and you are not on the whitelist",
                ));
            }
        }
        let id = counter(state, "msgl")?;
        if let Some(r) = reply_to {
            if r >= id {
                return Err(ContractError::not_found(
                    cx.op,
                    format!("message {r} (reply_to)"),
                ));
            }
        }
        let user_count_key = format!("umsgl/{}", cx.author);
        let user_count = counter(state, &user_count_key)?;
        let next_id = incremented(cx.op, id)?;
        let next_user_count = incremented(cx.op, user_count)?;
        let at = state.get("currentTime").unwrap_or(Value::Null);
        let record = json!({
            "id": id,
            "msg": text,
            "address": cx.author,
            "at": at,
            "timestamp": cx.timestamp,
            "reply_to": reply_to,
            "deleted": false,
            "deleted_by": null,
            "pinned": false,
            "pin_id": null,
        });
        state.put(&format!("msg/{id}"), record);
        state.put(
            &format!("umsg/{}/{user_count}", cx.author),
            json!(format!("msg/{id}")),
        );
        state.put("msgl", json!(next_id));
        state.put(&user_count_key, json!(next_user_count));
        state.put(
            "chat_last",
            json!({"msg": text, "address": cx.author, "at": at}),
        );
        Ok(())
    }

    fn set_nick(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let nick = args.str("nick")?;
        let target = args.opt_key("user")?.unwrap_or_else(|| cx.author.clone());
        if !chat_on(state) {
            return Err(ContractError::rejected(
                cx.op,
                "the chat is off (nicks can be set while it is on)",
            ));
        }
        if target != cx.author && !cx.is_admin() {
            if !is_mod(state, &cx.author) {
                return Err(ContractError::denied(
                    cx.op,
                    "only the admin or a moderator may set another user's nick",
                ));
            }
            if cx.is_admin_addr(&target) || is_mod(state, &target) {
                return Err(ContractError::denied(
                    cx.op,
                    "moderators cannot set the nick of the admin or another moderator",
                ));
            }
        }
        let taken_key = format!("kcin/{nick}");
        match state.get(&taken_key) {
            None => {}
            Some(Value::String(holder)) if holder == target => return Ok(()),
            Some(Value::String(_)) => {
                return Err(ContractError::rejected(
                    cx.op,
                    format!("the nick {:?} is already taken", clip(nick)),
                ))
            }
            Some(_) => return Err(ContractError::corrupt(&taken_key, "expected an address")),
        }
        let nick_key = format!("nick/{target}");
        let old = match state.get(&nick_key) {
            None => None,
            Some(Value::String(old)) => Some(old),
            Some(_) => return Err(ContractError::corrupt(&nick_key, "expected a nick")),
        };
        if let Some(old) = old {
            state.delete(&format!("kcin/{old}"));
        }
        state.put(&nick_key, json!(nick));
        state.put(&taken_key, json!(target));
        Ok(())
    }

    fn mute_status(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let user = args.key("user")?;
        let muted = args.bool("muted")?;
        if !cx.is_admin() {
            if !is_mod(state, &cx.author) {
                return Err(ContractError::denied(
                    cx.op,
                    "only the admin or a moderator may mute or unmute users",
                ));
            }
            if cx.is_admin_addr(&user) {
                return Err(ContractError::denied(
                    cx.op,
                    "moderators cannot mute the admin",
                ));
            }
            if is_mod(state, &user) {
                return Err(ContractError::denied(
                    cx.op,
                    "moderators cannot mute moderators",
                ));
            }
        }
        state.put(&format!("mtd/{user}"), json!(muted));
        Ok(())
    }

    fn set_mod(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let user = args.key("user")?;
        let is_mod = args.bool("mod")?;
        cx.require_admin("grant or revoke moderator rights")?;
        state.put(&format!("mod/{user}"), json!(is_mod));
        Ok(())
    }

    fn delete_message(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let id = args.uint("id")?;
        let mut record = message(state, cx.op, id)?;
        if record.get("deleted") == Some(&Value::Bool(true)) {
            return Err(ContractError::rejected(
                cx.op,
                format!("message {id} is already deleted"),
            ));
        }
        let owner = message_author(&record, id)?;
        if !cx.is_admin() {
            if is_mod(state, &cx.author) {
                if cx.is_admin_addr(&owner) {
                    return Err(ContractError::denied(
                        cx.op,
                        "moderators cannot delete the admin's messages",
                    ));
                }
            } else if owner != cx.author {
                return Err(ContractError::denied(
                    cx.op,
                    "only the message's author, a moderator or the admin may delete it",
                ));
            }
        }
        let deletions = counter(state, "delml")?;
        let next = incremented(cx.op, deletions)?;
        record.insert("msg".into(), Value::Null);
        record.insert("deleted".into(), Value::Bool(true));
        record.insert("deleted_by".into(), json!(cx.author));
        state.put(&format!("msg/{id}"), Value::Object(record));
        state.put(&format!("delm/{deletions}"), json!(id));
        state.put("delml", json!(next));
        Ok(())
    }

    fn pin_message(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let id = args.uint("id")?;
        let pin = args.bool("pin")?;
        cx.require_admin_or_mod(state, "pin or unpin messages")?;
        let mut record = message(state, cx.op, id)?;
        let pin_id = match record.get("pin_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ContractError::corrupt(&format!("msg/{id}"), "pin_id is not an integer")
            })?),
        };
        match (pin_id, pin) {
            (Some(pin_id), _) => {
                state.put(&format!("pni/{pin_id}"), json!({"msg": id, "pinned": pin}));
            }
            (None, true) => {
                let pin_id = counter(state, "pnl")?;
                let next = incremented(cx.op, pin_id)?;
                record.insert("pin_id".into(), json!(pin_id));
                state.put(&format!("pni/{pin_id}"), json!({"msg": id, "pinned": true}));
                state.put("pnl", json!(next));
            }
            // Never pinned and not pinning: no pin id to hand out.
            (None, false) => {}
        }
        record.insert("pinned".into(), json!(pin));
        state.put(&format!("msg/{id}"), Value::Object(record));
        Ok(())
    }

    fn unpin_message(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let pin_id = args.uint("pin_id")?;
        cx.require_admin_or_mod(state, "pin or unpin messages")?;
        let pin_key = format!("pni/{pin_id}");
        let pin = object(state, &pin_key)?
            .ok_or_else(|| ContractError::not_found(cx.op, format!("pin {pin_id}")))?;
        let id = pin
            .get("msg")
            .and_then(Value::as_u64)
            .ok_or_else(|| ContractError::corrupt(&pin_key, "pin has no message id"))?;
        let record = object(state, &format!("msg/{id}"))?;
        if let Some(mut record) = record {
            record.insert("pinned".into(), Value::Bool(false));
            record.insert("pin_id".into(), Value::Null);
            state.put(&format!("msg/{id}"), Value::Object(record));
        }
        state.put(&pin_key, json!({"msg": id, "pinned": false}));
        Ok(())
    }

    fn enable_whitelist(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let enabled = args.bool("enabled")?;
        cx.require_admin("turn the whitelist on or off")?;
        state.put("wlst", json!(enabled));
        Ok(())
    }

    fn set_whitelist_status(
        &self,
        cx: &Cx<'_>,
        args: Args<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        let user = args.key("user")?;
        let status = args.bool("status")?;
        cx.require_admin("change the whitelist")?;
        state.put(&format!("wl/{user}"), json!(status));
        Ok(())
    }

    fn read_messages(&self, args: Args<'_>, state: &dyn StateRead) -> Result<Value, ContractError> {
        let from = args.opt_int("from")?.unwrap_or(0).max(0) as u64;
        let limit = args
            .opt_int("limit")?
            .unwrap_or(DEFAULT_READ_MESSAGES)
            .clamp(1, MAX_READ_MESSAGES) as u64;
        let total = counter(state, "msgl")?;
        let end = from.saturating_add(limit).min(total);
        let messages: Vec<Value> = (from..end)
            .filter_map(|id| state.get(&format!("msg/{id}")))
            .collect();
        Ok(json!({"messages": messages, "total": total}))
    }
}

/// The JSON help for commands this contract cannot map.
fn command_hint() -> String {
    format!(
        "use \"something\", JSON like {{\"op\": \"post\", \"message\": \"hi\"}} or \
         {{\"type\": \"post\", \"value\": {{\"message\": \"hi\"}}}}, or \
         {{\"op\": \"do_something\", \"some_key\": \"...\"}}; operations: {}",
        crate::schema::names(OPERATIONS)
    )
}

impl Contract for BuiltinContract {
    fn name(&self) -> &str {
        "intercom-sample"
    }

    fn operations(&self) -> &[OpSchema] {
        OPERATIONS
    }

    fn reads(&self) -> &[OpSchema] {
        READS
    }

    fn features(&self) -> &[&'static str] {
        FEATURES
    }

    fn actions(&self) -> &[&'static str] {
        ACTIONS
    }

    fn map_command(&self, command: &str) -> Result<Operation, ContractError> {
        let command = command.trim();
        if command.starts_with('{') || command.starts_with('[') {
            let json: Value =
                serde_json::from_str(command).map_err(|e| ContractError::UnknownCommand {
                    command: clip(command),
                    hint: format!("not valid JSON ({e}); {}", command_hint()),
                })?;
            // The sample protocol's form: {"op": "do_something", "some_key": ...}.
            if json.get("op").and_then(Value::as_str) == Some("do_something") {
                let mut fields = json.as_object().cloned().unwrap_or_default();
                fields.remove("op");
                fields.insert("op".into(), json!("submit_something"));
                return operation_from_json(self, &Value::Object(fields));
            }
            return operation_from_json(self, &json);
        }
        if command == "something" {
            return Ok(Operation::new("store_something", Value::Null));
        }
        if READS.iter().any(|r| r.name == command) {
            return Err(ContractError::ReadFunction {
                name: command.to_string(),
            });
        }
        if let Some(schema) = OPERATIONS
            .iter()
            .find(|s| s.name == command && s.fields.is_empty())
        {
            return Ok(Operation::new(schema.name, Value::Null));
        }
        Err(ContractError::UnknownCommand {
            command: clip(command),
            hint: command_hint(),
        })
    }

    fn apply(
        &self,
        op: &Operation,
        ctx: &Context<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        validate(self, op)?;
        let cx = Cx {
            op: &op.name,
            author: ctx.author.to_ascii_lowercase(),
            admin: ctx.admin.map(str::to_ascii_lowercase),
            timestamp: ctx.timestamp,
        };
        let args = Args::new(&op.name, &op.value);
        match op.name.as_str() {
            "store_something" => self.store_something(state),
            "submit_something" => self.submit_something(&cx, args, state),
            "put" => self.put(&cx, args, state),
            "delete" => self.delete(&cx, args, state),
            "set_chat_status" => self.set_chat_status(&cx, args, state),
            "post" => self.post(&cx, args, state),
            "set_nick" => self.set_nick(&cx, args, state),
            "mute_status" => self.mute_status(&cx, args, state),
            "set_mod" => self.set_mod(&cx, args, state),
            "delete_message" => self.delete_message(&cx, args, state),
            "pin_message" => self.pin_message(&cx, args, state),
            "unpin_message" => self.unpin_message(&cx, args, state),
            "enable_whitelist" => self.enable_whitelist(&cx, args, state),
            "set_whitelist_status" => self.set_whitelist_status(&cx, args, state),
            // `validate` admits only declared names; kept total for safety.
            other => Err(ContractError::UnknownOperation {
                name: clip(other),
                known: crate::schema::names(OPERATIONS),
            }),
        }
    }

    fn apply_feature(
        &self,
        feature: &str,
        entry: &Value,
        _ctx: &Context<'_>,
        state: &mut dyn StateWrite,
    ) -> Result<(), ContractError> {
        if feature != "timer" {
            return Err(ContractError::UnknownFeature {
                feature: clip(feature),
                accepted: FEATURES.join(", "),
            });
        }
        let invalid = |reason: String| ContractError::InvalidFeatureEntry {
            feature: feature.to_string(),
            reason,
        };
        let Value::Object(fields) = entry else {
            return Err(invalid(format!(
                "expected {{\"key\": \"currentTime\", \"value\": <ms>}}, got {}",
                crate::schema::describe_json(entry)
            )));
        };
        if let Some(extra) = fields.keys().find(|k| *k != "key" && *k != "value") {
            return Err(invalid(format!(
                "unexpected field {:?} (only \"key\" and \"value\")",
                clip(extra)
            )));
        }
        match fields.get("key") {
            Some(Value::String(k)) if k == "currentTime" => {}
            Some(Value::String(k)) => {
                return Err(invalid(format!(
                    "unknown key {:?} (the timer only sets \"currentTime\")",
                    clip(k)
                )))
            }
            _ => return Err(invalid("\"key\" must be the string \"currentTime\"".into())),
        }
        let ms = fields
            .get("value")
            .and_then(Value::as_u64)
            .filter(|ms| *ms <= MAX_SAFE_INTEGER as u64)
            .ok_or_else(|| {
                invalid("\"value\" must be a non-negative integer (ms since the epoch)".into())
            })?;
        state.put("currentTime", json!(ms));
        Ok(())
    }

    fn read(
        &self,
        function: &str,
        args: &Value,
        state: &dyn StateRead,
    ) -> Result<Value, ContractError> {
        let schema = read_schema(self, function, args)?;
        let args = Args::new(schema.name, args);
        let get = |key: &str| state.get(key).unwrap_or(Value::Null);
        match schema.name {
            "read_key" => Ok(get(args.str("key")?)),
            "read_chat_last" => Ok(get("chat_last")),
            "read_timer" => Ok(get("currentTime")),
            "read_snapshot" => Ok(json!({
                "something": get("something"),
                "currentTime": get("currentTime"),
                "msgl": counter(state, "msgl")?,
                "msg0": get("msg/0"),
                "msg1": get("msg/1"),
            })),
            "read_message" => Ok(get(&format!("msg/{}", args.uint("id")?))),
            "read_messages" => self.read_messages(args, state),
            "read_nick" => Ok(get(&format!("nick/{}", args.key("user")?))),
            other => Err(ContractError::UnknownReadFunction {
                name: clip(other),
                known: crate::schema::names(READS),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
