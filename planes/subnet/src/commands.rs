//! The subnet's slash commands (`/tx`, `/get`, membership and chat commands), shared by
//! the terminal and the bridge's `cli` message. Each returns printable lines and a JSON
//! result, or an error message.

use std::collections::BTreeMap;

use intercom_contracts::{operation_from_cli, Contract, ContractError, Value};
use serde_json::json;

use crate::apply::parse_key;
use crate::entry::{Body, Membership};
use crate::service::{SubnetHandle, SubnetInfo};
use crate::SubnetError;

/// Membership commands and what they take.
pub const MEMBERSHIP_COMMANDS: &[&str] = &[
    "/add_admin",
    "/update_admin",
    "/add_indexer",
    "/add_writer",
    "/remove_writer",
    "/remove_indexer",
    "/set_auto_add_writers",
    "/enable_transactions",
    "/set_quota",
];

/// The flags the subnet and built-in chat commands take.
pub const FLAGS: &[&str] = &[
    "--address",
    "--key",
    "--enabled",
    "--command",
    "--sim",
    "--confirmed",
    "--unconfirmed",
    "--message",
    "--reply_to",
    "--nick",
    "--user",
    "--muted",
    "--mod",
    "--id",
    "--pin",
    "--pin_id",
    "--status",
    "--keys",
    "--bytes",
    "--proof",
];

/// Help lines for the subnet commands.
pub const HELP: &[&str] = &[
    "- Subnet Commands:",
    "- /add_admin --address \"<hex>\" | name the admin (bootstrap peer only, once).",
    "- /update_admin --address \"<hex>\" | transfer admin rights (no --address waives them).",
    "- /add_writer --key \"<writer-key>\" | admit a writer (admin only).",
    "- /add_indexer --key \"<writer-key>\" | admit an indexer (admin only).",
    "- /remove_writer --key \"<writer-key>\" | remove a writer or indexer (admin only).",
    "- /remove_indexer --key \"<writer-key>\" | alias of /remove_writer.",
    "- /set_auto_add_writers --enabled 0|1 | honour writers' join requests (admin only).",
    "- /enable_transactions | open the subnet to /tx (admin only).",
    "- /set_quota --keys N --bytes N [--address \"<hex>\"] | contract state each author (or one) may hold (admin only).",
    "- /tx --command \"<string|json>\" [--sim 1] | run a contract transaction (--sim 1: dry run, nothing appended).",
    "- /get --key \"<key>\" [--confirmed true|false] [--proof 1] | read a contract key (confirmed by default; --proof 1 adds a Merkle proof against the confirmed root).",
    "- /subnet | membership, lengths and the state root.",
    "- Chat Commands: /set_chat_status --enabled 0|1, /post --message \"...\", /set_nick --nick \"...\",",
    "  /mute_status --user <address> --muted 0|1, /set_mod --user <address> --mod 0|1, /delete_message --id <id>,",
    "  /pin_message --id <id> --pin 0|1, /unpin_message --pin_id <id>, /enable_whitelist --enabled 0|1,",
    "  /set_whitelist_status --user <address> --status 0|1",
];

/// True if `command` is a membership command or one of `contract`'s actions (what the
/// bridge's `subnet_op` runs).
pub fn is_op(command: &str, contract: &dyn Contract) -> bool {
    MEMBERSHIP_COMMANDS.contains(&command)
        || contract
            .actions()
            .contains(&command.trim_start_matches('/'))
}

/// True if `command` (with its slash) is handled here: the subnet commands, and every
/// operation `contract` declares (`/create_task --title x` runs the `create_task`
/// transaction, `/post --message hi` the `post` action).
pub fn handles(command: &str, contract: Option<&dyn Contract>) -> bool {
    let name = command.trim_start_matches('/');
    MEMBERSHIP_COMMANDS.contains(&command)
        || matches!(command, "/tx" | "/get" | "/subnet")
        || contract.is_some_and(|c| c.operations().iter().any(|op| op.name == name))
}

type Args = BTreeMap<String, Option<String>>;

fn arg(args: &Args, name: &str) -> Option<String> {
    args.get(name).cloned().flatten().filter(|s| !s.is_empty())
}

fn flag(args: &Args, name: &str) -> Result<bool, String> {
    match arg(args, name).as_deref() {
        Some("1" | "true") => Ok(true),
        Some("0" | "false") => Ok(false),
        Some(other) => Err(format!("--{name} must be 0 or 1, got {other:?}")),
        None => Err(format!("missing --{name} 0|1")),
    }
}

fn key_arg(args: &Args, name: &str, usage: &str) -> Result<[u8; 32], String> {
    let raw = arg(args, name).ok_or_else(|| format!("Usage: {usage}"))?;
    parse_key(&raw)
        .ok_or_else(|| format!("--{name} must be 64 hex characters (a 32-byte key), got {raw:?}"))
}

/// Runs one subnet command.
pub async fn run(
    handle: &SubnetHandle,
    command: &str,
    args: &Args,
) -> Result<(Vec<String>, Value), String> {
    let fail = |e: SubnetError| e.to_string();
    match command {
        "/subnet" => {
            let info = handle.info().await.map_err(fail)?;
            let v = info.to_json();
            Ok((summary(&info), v))
        }
        "/get" => {
            let key =
                arg(args, "key").ok_or("Usage: /get --key \"<key>\" [--confirmed true|false]")?;
            let confirmed = !matches!(arg(args, "confirmed").as_deref(), Some("false" | "0"))
                && !args.contains_key("unconfirmed");
            if matches!(arg(args, "proof").as_deref(), Some("1" | "true")) {
                if !confirmed {
                    return Err(
                        "--proof 1 proves confirmed values only; drop --confirmed false".into(),
                    );
                }
                let proved = handle.prove(&key).await.map_err(fail)?;
                let state_key = format!("{}{key}", crate::state::APP_PREFIX);
                let v = proved.to_json(&key, &state_key);
                return Ok((vec![v.to_string()], v));
            }
            let (value, root) = handle.get(&key, confirmed).await.map_err(fail)?;
            let v = value.unwrap_or(Value::Null);
            let root = hex::encode(root);
            Ok((
                vec![
                    v.to_string(),
                    format!(
                        "(state root {root}, {})",
                        if confirmed { "confirmed" } else { "tentative" }
                    ),
                ],
                json!({"key": key, "value": v, "confirmed": confirmed, "stateRoot": root}),
            ))
        }
        "/tx" => {
            let text =
                arg(args, "command").ok_or("Usage: /tx --command \"<string|json>\" [--sim 1]")?;
            let sim = matches!(arg(args, "sim").as_deref(), Some("1" | "true"));
            tx(handle, &text, sim).await.map_err(|e| e.to_string())
        }
        c if MEMBERSHIP_COMMANDS.contains(&c) => {
            let m = membership(c, args)?;
            let name = m.name();
            let receipt = handle.submit(Body::Membership(m)).await.map_err(fail)?;
            Ok((
                vec![format!(
                    "{name} appended (writer log entry {}); it applies once ordered",
                    receipt.seq
                )],
                json!({"appended": true, "op": name, "seq": receipt.seq, "index": receipt.index}),
            ))
        }
        c => {
            let name = c.trim_start_matches('/');
            let pairs: Vec<(String, String)> = args
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect();
            let op = operation_from_cli(handle.contract().as_ref(), name, &pairs)
                .map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&op).unwrap_or(Value::Null);
            // The contract's actions (chat) travel as actions; the rest as transactions.
            let body = if handle.contract().actions().contains(&name) {
                Body::Action(value)
            } else {
                Body::Transaction(value)
            };
            let receipt = handle.submit(body).await.map_err(fail)?;
            Ok((
                vec![format!(
                    "{name} appended (writer log entry {})",
                    receipt.seq
                )],
                json!({"appended": true, "op": name, "seq": receipt.seq, "index": receipt.index}),
            ))
        }
    }
}

/// `/tx --command`: a transaction, a simulation, or (for a read function's name) a read.
pub async fn tx(
    handle: &SubnetHandle,
    command: &str,
    sim: bool,
) -> Result<(Vec<String>, Value), SubnetError> {
    let contract = handle.contract().clone();
    let op = match contract.map_command(command) {
        Ok(op) => op,
        Err(ContractError::ReadFunction { name }) => {
            let v = handle.read(&name, Value::Null, true).await?;
            return Ok((
                vec![format!("{name}: {v}")],
                json!({"read": name, "result": v}),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let value = serde_json::to_value(&op).unwrap_or(Value::Null);
    if sim {
        let s = handle.simulate(Body::Transaction(value)).await?;
        let writes: serde_json::Map<String, Value> = s
            .writes
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
            .collect();
        let v = json!({
            "sim": true,
            "op": op.name,
            "outcome": s.outcome.label(),
            "reason": s.outcome.reason(),
            "writes": writes,
        });
        return Ok((vec![v.to_string()], v));
    }
    let receipt = handle.submit(Body::Transaction(value)).await?;
    Ok((
        vec![format!(
            "tx {} appended (writer log entry {})",
            op.name, receipt.seq
        )],
        json!({"appended": true, "op": op.name, "seq": receipt.seq, "index": receipt.index}),
    ))
}

fn membership(command: &str, args: &Args) -> Result<Membership, String> {
    Ok(match command {
        "/add_admin" => {
            Membership::AddAdmin(key_arg(args, "address", "/add_admin --address \"<hex>\"")?)
        }
        "/update_admin" => Membership::UpdateAdmin(match arg(args, "address") {
            Some(a) if a != "null" => {
                Some(parse_key(&a).ok_or("--address must be 64 hex characters")?)
            }
            _ => None,
        }),
        "/add_writer" => {
            Membership::AddWriter(key_arg(args, "key", "/add_writer --key \"<writer-key>\"")?)
        }
        "/add_indexer" => {
            Membership::AddIndexer(key_arg(args, "key", "/add_indexer --key \"<writer-key>\"")?)
        }
        "/remove_writer" => Membership::RemoveWriter(key_arg(
            args,
            "key",
            "/remove_writer --key \"<writer-key>\"",
        )?),
        "/remove_indexer" => Membership::RemoveIndexer(key_arg(
            args,
            "key",
            "/remove_indexer --key \"<writer-key>\"",
        )?),
        "/set_auto_add_writers" => Membership::SetAutoAddWriters(flag(args, "enabled")?),
        "/enable_transactions" => Membership::EnableTransactions,
        "/set_quota" => {
            let number = |name: &str| -> Result<u64, String> {
                let raw = arg(args, name)
                    .ok_or("Usage: /set_quota --keys N --bytes N [--address \"<hex>\"]")?;
                raw.parse()
                    .map_err(|_| format!("--{name} must be a whole number, got {raw:?}"))
            };
            Membership::SetQuota {
                author: match arg(args, "address") {
                    Some(a) => Some(parse_key(&a).ok_or("--address must be 64 hex characters")?),
                    None => None,
                },
                keys: number("keys")?,
                bytes: number("bytes")?,
            }
        }
        other => return Err(format!("not a membership command: {other}")),
    })
}

/// Human lines for `/subnet` and `/stats`.
pub fn summary(info: &SubnetInfo) -> Vec<String> {
    vec![
        format!("Subnet channel: {}", info.channel),
        format!("Subnet bootstrap: {}", hex::encode(info.bootstrap)),
        format!("Peer writer key (hex): {}", hex::encode(info.writer)),
        format!(
            "Subnet role: {}",
            if info.is_indexer {
                "indexer"
            } else if info.is_writer {
                "writer"
            } else {
                "reader"
            }
        ),
        format!("Subnet admin: {}", info.admin.as_deref().unwrap_or("none")),
        format!(
            "Subnet writers: {} (indexers: {})",
            info.writers.len(),
            info.indexers.len()
        ),
        format!(
            "Subnet order: {} confirmed, {} unconfirmed, {} waiting",
            info.confirmed_length, info.unconfirmed_length, info.waiting
        ),
        format!("Subnet state root: {}", hex::encode(info.state_root)),
    ]
}
