//! The slash-command dispatcher shared by the human TTY and the bridge's `cli` message, and
//! the console printer of received messages.
//!
//! Commands and flags follow the reference (`contract/protocol.js` and trac-peer's
//! terminal): `/sc_join`, `/sc_open`, `/sc_send`, `/sc_invite`, `/sc_welcome`, `/sc_stats`,
//! `/stats`, `/get_keys`, `/help`, `/exit` (and the sample `/print`). Arguments are parsed
//! like trac-peer's `parseArgs`: shell-like tokens (double quotes with backslash escapes,
//! single quotes), then `--key value` pairs. The subnet's commands (`/tx`, `/get`,
//! `/add_writer`, `/post`, ... see [`intercom_subnet::commands`]) go to the subnet plane;
//! the settlement commands ([`NOT_YET_AVAILABLE`]: `/deploy_subnet`, `/msb`) are
//! recognised and answered "not yet available".
//!
//! Differences from the reference: a failed command returns `ok: false` with the message
//! in `error` (the reference prints it and returns normally); the exact command word must
//! match (`/sc_joinx` is unknown, where the reference matched prefixes); an unterminated
//! quote is taken literally instead of failing the command; a successful `/sc_send` says
//! how many peers it reached.
//!
//! Over the SC-Bridge (`--sc-bridge-cli 1`, a [`Dispatcher::for_bridge`] dispatcher) three commands are
//! restricted, where the JS bridge runs them as at the terminal: `/get_keys` shows the public key only (never the
//! secret key), `/exit` is refused unless [`BridgeCliPolicy::allow_exit`] (`--sc-bridge-cli-exit 1`), and `@file`
//! arguments read only regular files under [`BridgeCliPolicy::file_root`] (the peer's store directory; relative
//! paths are taken from it, its `db/` subdirectory is never read) of at most [`BridgeCliPolicy::max_file_bytes`]
//! ([`BRIDGE_MAX_FILE_BYTES`], 64 KiB). The terminal keeps the reference's behaviour.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use intercom_crypto::KeyPair;
use intercom_sc_bridge::CliResult;
use intercom_sidechannel::args::{self, ArgError};
use intercom_sidechannel::{CredentialError, JoinError, SendError, SidechannelEvent};
use intercom_subnet::commands as subnet_commands;
use intercom_subnet::SubnetHandle;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::events::{EventSink, PeerEvent};
use crate::runtime::{PeerError, PeerHandle};

/// Every `--flag` the slash commands read (including the aliases), for documentation checks.
pub const COMMAND_FLAGS: &[&str] = &[
    "--channel",
    "--ch",
    "--name",
    "--via",
    "--channel_via",
    "--invite",
    "--invite_b64",
    "--invitebase64",
    "--welcome",
    "--welcome_b64",
    "--welcomebase64",
    "--message",
    "--msg",
    "--pubkey",
    "--invitee",
    "--peer",
    "--key",
    "--ttl",
    "--ttl_sec",
    "--ttl_s",
    "--text",
];

/// Commands of planes that do not exist yet: recognised, answered "not yet available".
pub const NOT_YET_AVAILABLE: &[&str] = &["/deploy_subnet", "/msb"];

/// The help text of `/help`.
pub const HELP: &[&str] = &[
    "Available commands:",
    " ",
    "- Sidechannel Commands:",
    "- /sc_join --channel \"<name>\" [--invite <json|b64|@file>] [--welcome <json|b64|@file>] | join or create a sidechannel.",
    "- /sc_open --channel \"<name>\" [--via \"<channel>\"] [--invite <json|b64|@file>] [--welcome <json|b64|@file>] | request others to open a sidechannel.",
    "- /sc_send --channel \"<name>\" --message \"<text>\" [--invite <json|b64|@file>] [--welcome <json|b64|@file>] | send message over sidechannel.",
    "- /sc_invite --channel \"<name>\" --pubkey \"<peer-pubkey-hex>\" [--ttl <sec>] [--welcome <json|b64|@file>] | create a signed invite.",
    "- /sc_welcome --channel \"<name>\" --text \"<message>\" | create a signed welcome.",
    "- /sc_stats | show sidechannel channels + connection count.",
    " ",
    "- System Commands:",
    "- /stats | show node status and keys.",
    "- /get_keys | prints your public and private keys. Be careful and never share your private key!",
    "- /exit | Exit the program",
    "- /help | This help text",
    " ",
    "- Not yet available in this implementation (settlement): /deploy_subnet /msb",
];

/// What the dispatcher knows besides the runtime.
pub struct CliContext {
    /// The peer's key pair (for `/get_keys`).
    pub keypair: KeyPair,
    /// Static lines `/stats` prints after the live ones (store path, bridge address...).
    pub status_lines: Vec<String>,
    /// Called by `/exit`.
    pub on_exit: Option<Box<dyn Fn() + Send + Sync>>,
    /// The subnet plane (`/tx`, `/get`, membership and chat commands).
    pub subnet: Option<SubnetHandle>,
}

/// Largest `@file` the bridge's `cli` command reads by default: invites and welcomes are a few hundred bytes.
pub const BRIDGE_MAX_FILE_BYTES: u64 = 64 * 1024;

/// What remote clients of the SC-Bridge's `cli` command may do that the terminal always may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeCliPolicy {
    /// Whether `/exit` stops the peer (`--sc-bridge-cli-exit 1`); refused when false.
    pub allow_exit: bool,
    /// `@file` arguments read only regular files under this directory (the peer's store), never under its `db/`;
    /// `None` refuses every `@file`.
    pub file_root: Option<PathBuf>,
    /// Largest `@file` read, in bytes.
    pub max_file_bytes: u64,
}

impl Default for BridgeCliPolicy {
    /// The safest policy: no `/exit`, no `@file`.
    fn default() -> Self {
        BridgeCliPolicy {
            allow_exit: false,
            file_root: None,
            max_file_bytes: BRIDGE_MAX_FILE_BYTES,
        }
    }
}

/// Runs slash-command lines against a [`PeerHandle`]. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    handle: PeerHandle,
    ctx: Arc<CliContext>,
    /// `Some` when the lines come from SC-Bridge clients.
    remote: Option<Arc<BridgeCliPolicy>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// A failed command: the message printed and returned as `error`.
struct Fail(String);

impl<S: Into<String>> From<S> for Fail {
    fn from(s: S) -> Self {
        Fail(s.into())
    }
}

type Args = BTreeMap<String, Option<String>>;

impl Dispatcher {
    /// A dispatcher for `handle`.
    pub fn new(handle: PeerHandle, ctx: CliContext) -> Self {
        Dispatcher {
            handle,
            ctx: Arc::new(ctx),
            remote: None,
        }
    }

    /// The same dispatcher for lines from SC-Bridge clients, restricted by `policy` (see the module docs).
    pub fn for_bridge(&self, policy: BridgeCliPolicy) -> Dispatcher {
        Dispatcher {
            remote: Some(Arc::new(policy)),
            ..self.clone()
        }
    }

    /// The bridge policy, when this dispatcher serves SC-Bridge clients.
    pub fn bridge_policy(&self) -> Option<&BridgeCliPolicy> {
        self.remote.as_deref()
    }

    /// Runs one command line; its output lines, whether it succeeded, and its result value.
    pub async fn run(&self, line: &str) -> CliResult {
        let mut out = Vec::new();
        match self.exec(line.trim(), &mut out).await {
            Ok(result) => CliResult {
                ok: true,
                output: out,
                error: None,
                result,
            },
            Err(Fail(e)) => {
                out.push(e.clone());
                CliResult {
                    ok: false,
                    output: out,
                    error: Some(e),
                    result: Value::Null,
                }
            }
        }
    }

    async fn exec(&self, line: &str, out: &mut Vec<String>) -> Result<Value, Fail> {
        let command = line.split_whitespace().next().unwrap_or("");
        let args = parse_args(line);
        match command {
            "" => Ok(Value::Null),
            "/help" => {
                out.extend(HELP.iter().map(|s| s.to_string()));
                if self.ctx.subnet.is_some() {
                    out.push(" ".into());
                    out.extend(subnet_commands::HELP.iter().map(|s| s.to_string()));
                }
                Ok(Value::Null)
            }
            "/exit" if self.remote.as_ref().is_some_and(|p| !p.allow_exit) => Err(
                "/exit is disabled over the SC-Bridge (start the peer with --sc-bridge-cli-exit 1 to allow it)."
                    .into(),
            ),
            "/exit" => {
                out.push("Exiting...".into());
                if let Some(f) = &self.ctx.on_exit {
                    f();
                }
                Ok(Value::Null)
            }
            "/stats" => self.stats(out).await,
            "/get_keys" => {
                out.push(
                    "Address:  (not yet available: Trac addresses come with the settlement plane)"
                        .into(),
                );
                out.push(format!(
                    "Public Key:  {}",
                    hex::encode(self.ctx.keypair.public_key)
                ));
                if self.remote.is_some() {
                    out.push(
                        "Secret Key:  (never shown over the SC-Bridge; run /get_keys at the peer's terminal)"
                            .into(),
                    );
                    return Ok(json!({ "publicKey": hex::encode(self.ctx.keypair.public_key) }));
                }
                out.push(format!(
                    "Secret Key:  {}",
                    hex::encode(self.ctx.keypair.secret_key)
                ));
                Ok(Value::Null)
            }
            "/print" => {
                if let Some(Some(text)) = args.get("text") {
                    out.push(text.clone());
                }
                Ok(Value::Null)
            }
            "/sc_join" => self.sc_join(&args, out).await,
            "/sc_send" => self.sc_send(&args, out).await,
            "/sc_open" => self.sc_open(&args, out).await,
            "/sc_invite" => self.sc_invite(&args, out).await,
            "/sc_welcome" => self.sc_welcome(&args, out).await,
            "/sc_stats" => {
                let s = self.handle.stats().await.map_err(stopped)?;
                let v = json!({
                    "channels": s.sidechannel.channels,
                    "connectionCount": s.connections,
                });
                out.push(v.to_string());
                Ok(v)
            }
            c if subnet_commands::handles(
                c,
                self.ctx.subnet.as_ref().map(|s| s.contract().as_ref()),
            ) =>
            {
                let Some(subnet) = &self.ctx.subnet else {
                    return Err(format!("{c}: this peer runs no subnet plane").into());
                };
                let (lines, value) = subnet_commands::run(subnet, c, &args).await?;
                out.extend(lines);
                Ok(value)
            }
            c if NOT_YET_AVAILABLE.contains(&c) => Err(format!(
                "{c} is not yet available: there is no settlement (MSB) plane yet."
            )
            .into()),
            c => Err(format!("Unknown command: {c}. Type /help for the list.").into()),
        }
    }

    async fn stats(&self, out: &mut Vec<String>) -> Result<Value, Fail> {
        let s = self.handle.stats().await.map_err(stopped)?;
        out.push("--- Stats ---".into());
        out.push(format!(
            "Peer pubkey (hex): {}",
            self.handle.public_key_hex()
        ));
        let subnet = match &self.ctx.subnet {
            Some(h) => Some(h.info().await.map_err(|e| Fail(e.to_string()))?),
            None => None,
        };
        match &subnet {
            Some(info) => out.extend(subnet_commands::summary(info)),
            None => out.push("Subnet: off".into()),
        }
        out.push(format!(
            "Peer networking: {}",
            if s.networked {
                "on"
            } else {
                "not yet available (no swarm)"
            }
        ));
        out.push(format!("swarm.connections.size: {}", s.connections));
        out.push(format!(
            "Sidechannels: {}",
            s.sidechannel.channels.join(", ")
        ));
        out.push(format!(
            "Sidechannel messages: {} delivered, {} dropped, {} relayed, {} sent",
            s.sidechannel.delivered,
            s.sidechannel.dropped,
            s.sidechannel.relayed,
            s.sidechannel.sent
        ));
        out.extend(self.ctx.status_lines.iter().cloned());
        let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
        if let (Some(info), Value::Object(m)) = (&subnet, &mut v) {
            m.insert("subnet".into(), info.to_json());
        }
        Ok(v)
    }

    async fn sc_join(&self, args: &Args, out: &mut Vec<String>) -> Result<Value, Fail> {
        let Some(name) = arg(args, &["channel", "ch", "name"]) else {
            return Err("Usage: /sc_join --channel \"<name>\" [--invite <json|b64|@file>] [--welcome <json|b64|@file>]".into());
        };
        let invite = self.credential(args, &["invite", "invite_b64", "invitebase64"], "invite")?;
        let welcome = self.credential(
            args,
            &["welcome", "welcome_b64", "welcomebase64"],
            "welcome",
        )?;
        match self.handle.join(&name, invite, welcome).await {
            Ok(_) => {
                out.push(format!("Joined sidechannel: {name}"));
                Ok(json!({ "channel": name.trim() }))
            }
            Err(PeerError::Accept(_) | PeerError::Join(JoinError::InviteRequired(_))) => {
                Err("Join denied (invite required or invalid).".into())
            }
            Err(e) => Err(format!("Join failed: {e}").into()),
        }
    }

    async fn sc_send(&self, args: &Args, out: &mut Vec<String>) -> Result<Value, Fail> {
        let (Some(name), Some(message)) = (
            arg(args, &["channel", "ch", "name"]),
            arg(args, &["message", "msg"]),
        ) else {
            return Err("Usage: /sc_send --channel \"<name>\" --message \"<text>\" [--invite <json|b64|@file>] [--welcome <json|b64|@file>]".into());
        };
        let invite = self.credential(args, &["invite", "invite_b64", "invitebase64"], "invite")?;
        let welcome = self.credential(
            args,
            &["welcome", "welcome_b64", "welcomebase64"],
            "welcome",
        )?;
        match self
            .handle
            .send(&name, Value::String(message), invite, welcome)
            .await
        {
            Ok(o) => {
                if o.peers == 0 {
                    out.push(format!(
                        "Sent on {}: no peer received it (no connected peer has the channel open).",
                        name.trim()
                    ));
                } else {
                    out.push(format!("Sent to {} peer(s) on {}.", o.peers, name.trim()));
                }
                Ok(serde_json::to_value(&o).unwrap_or(Value::Null))
            }
            Err(PeerError::Accept(_) | PeerError::Join(_)) => {
                Err("Send denied (invite required or invalid).".into())
            }
            Err(PeerError::Send(
                SendError::OwnerOnly | SendError::Invite(_) | SendError::NotJoined(_),
            )) => Err("Send denied (owner-only or invite required).".into()),
            Err(e) => Err(format!("Send failed: {e}").into()),
        }
    }

    async fn sc_open(&self, args: &Args, out: &mut Vec<String>) -> Result<Value, Fail> {
        let Some(name) = arg(args, &["channel", "ch", "name"]) else {
            return Err("Usage: /sc_open --channel \"<name>\" [--via \"<channel>\"] [--invite <json|b64|@file>] [--welcome <json|b64|@file>]".into());
        };
        let via = arg(args, &["via", "channel_via"]);
        let invite = self.credential(args, &["invite", "invite_b64", "invitebase64"], "invite")?;
        let welcome = self.credential(
            args,
            &["welcome", "welcome_b64", "welcomebase64"],
            "welcome",
        )?;
        match self
            .handle
            .request_open(&name, via.as_deref(), invite, welcome)
            .await
        {
            Ok(o) => {
                out.push(format!("Requested channel: {name}"));
                if o.peers == 0 {
                    out.push("(no connected peer received the request)".into());
                }
                Ok(serde_json::to_value(&o).unwrap_or(Value::Null))
            }
            Err(e) => Err(format!(
                "Open request denied (invalid input or missing invite/welcome): {e}"
            )
            .into()),
        }
    }

    async fn sc_invite(&self, args: &Args, out: &mut Vec<String>) -> Result<Value, Fail> {
        let (Some(channel), Some(invitee)) = (
            arg(args, &["channel", "ch", "name"]),
            arg(args, &["pubkey", "invitee", "peer", "key"]),
        ) else {
            return Err("Usage: /sc_invite --channel \"<name>\" --pubkey \"<peer-pubkey-hex>\" [--ttl <sec>] [--welcome <json|b64|@file>]".into());
        };
        const TTL_REQUIRED: &str =
            "Invite TTL is required. Pass --ttl <sec> or set --sidechannel-invite-ttl.";
        let ttl_ms = match arg(args, &["ttl", "ttl_sec", "ttl_s"]) {
            None => None,
            Some(raw) => match js_parse_int(&raw) {
                Some(sec) if sec > 0 => Some((sec as u64).saturating_mul(1000)),
                _ => return Err(TTL_REQUIRED.into()),
            },
        };
        let welcome = self.credential(
            args,
            &["welcome", "welcome_b64", "welcomebase64"],
            "welcome",
        )?;
        let invitee = invitee.trim().to_lowercase();
        match self
            .handle
            .create_invite(&channel, &invitee, ttl_ms, welcome)
            .await
        {
            Ok(invite) => {
                let text = invite.to_string();
                out.push(text.clone());
                out.push(format!(
                    "invite_b64: {}",
                    intercom_encoding::base64::encode(text.as_bytes())
                ));
                Ok(invite)
            }
            Err(PeerError::Credential(CredentialError::InvalidTtl)) => Err(TTL_REQUIRED.into()),
            Err(e) => Err(format!("Failed to create invite: {e}").into()),
        }
    }

    async fn sc_welcome(&self, args: &Args, out: &mut Vec<String>) -> Result<Value, Fail> {
        let (Some(channel), Some(text)) = (
            arg(args, &["channel", "ch", "name"]),
            arg(args, &["text", "message", "msg"]),
        ) else {
            return Err("Usage: /sc_welcome --channel \"<name>\" --text \"<message>\"".into());
        };
        let welcome = self
            .handle
            .create_welcome(&channel, &text)
            .await
            .map_err(stopped)?;
        let json = welcome.to_string();
        out.push(json.clone());
        out.push(format!(
            "welcome_b64: {}",
            intercom_encoding::base64::encode(json.as_bytes())
        ));
        Ok(welcome)
    }
}

fn stopped(e: PeerError) -> Fail {
    Fail(format!("Sidechannel not initialized ({e})."))
}

/// The first of `keys` with a non-empty value (the reference's `args.a || args.b`).
fn arg(args: &Args, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| args.get(*k).cloned().flatten().filter(|v| !v.is_empty()))
}

impl Dispatcher {
    /// An invite or welcome argument: JSON, base64, `b64:` or `@file` (over the bridge, within its policy).
    fn credential(&self, args: &Args, keys: &[&str], what: &str) -> Result<Option<Value>, Fail> {
        let Some(raw) = arg(args, keys) else {
            return Ok(None);
        };
        let Some(policy) = &self.remote else {
            return load_credential(&raw)
                .map(Some)
                .map_err(|_| Fail(format!("Invalid {what}. Pass JSON, base64, or @file.")));
        };
        match load_credential_within(&raw, policy) {
            Ok(v) => Ok(Some(v)),
            Err(FileError::Arg(_)) => Err(Fail(format!(
                "Invalid {what}. Pass JSON, base64, or @file."
            ))),
            Err(e) => Err(Fail(format!("Invalid {what}: {e}."))),
        }
    }
}

/// Why an `@file` argument from an SC-Bridge client was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The argument (or the file's text) is not JSON, base64 JSON or `@file`.
    #[error("{0}")]
    Arg(#[from] ArgError),
    /// `@file` is refused over the bridge (no file root configured).
    #[error("@file arguments are refused over the SC-Bridge")]
    NoFiles,
    /// The path is outside the file root, inside its `db/`, or does not exist.
    #[error("@file over the SC-Bridge reads only files under the peer store {0} (not its db/)")]
    Outside(String),
    /// Not a regular file.
    #[error("@file: not a regular file")]
    NotAFile,
    /// Larger than the cap.
    #[error("@file: larger than {0} bytes")]
    TooLarge(u64),
    /// Reading failed.
    #[error("@file: cannot read it ({0})")]
    Io(std::io::ErrorKind),
}

/// Parses a credential argument for an SC-Bridge client: as [`load_credential`], but an `@file` is read only if
/// it resolves (symbolic links and `..` followed; relative paths taken from the root) to a regular file under
/// `policy.file_root`, outside its `db/` directory, of at most `policy.max_file_bytes` bytes.
pub fn load_credential_within(raw: &str, policy: &BridgeCliPolicy) -> Result<Value, FileError> {
    let path = match args::parse_invite_arg(raw) {
        Err(ArgError::FileReference(path)) => path,
        other => return other.map_err(FileError::Arg),
    };
    let root = policy.file_root.as_deref().ok_or(FileError::NoFiles)?;
    let text = read_confined(root, Path::new(&path), policy.max_file_bytes)?;
    args::parse_arg_file_text(&text).map_err(FileError::Arg)
}

/// Reads `path` (relative to `root` unless absolute) if it is a regular file of at most `cap` bytes under `root`
/// and not under `root/db`.
fn read_confined(root: &Path, path: &Path, cap: u64) -> Result<String, FileError> {
    let outside = || FileError::Outside(root.display().to_string());
    let root = root.canonicalize().map_err(|_| outside())?;
    let resolved = root.join(path).canonicalize().map_err(|_| outside())?;
    if !resolved.starts_with(&root) || resolved.starts_with(root.join("db")) {
        return Err(outside());
    }
    let file = std::fs::File::open(&resolved).map_err(|e| FileError::Io(e.kind()))?;
    let meta = file.metadata().map_err(|e| FileError::Io(e.kind()))?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge(cap));
    }
    // The file may grow after the check: read one byte past the cap at most.
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Io(e.kind()))?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge(cap));
    }
    String::from_utf8(bytes).map_err(|_| FileError::Arg(ArgError::Invalid))
}

/// Parses a credential argument, reading `@file` references relative to the working
/// directory (as the reference does).
pub fn load_credential(raw: &str) -> Result<Value, ArgError> {
    match args::parse_invite_arg(raw) {
        Err(ArgError::FileReference(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|_| ArgError::Invalid)?;
            args::parse_arg_file_text(&text)
        }
        other => other,
    }
}

/// JS `Number.parseInt(s, 10)`: leading blanks, an optional sign, then digits.
fn js_parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let n: i64 = digits[..end].parse().ok()?;
    Some(if neg { -n } else { n })
}

/// trac-peer's `Protocol.parseArgs`: shell-like tokens, the command word dropped, then
/// `--key value` pairs (a key without a value maps to `None`).
pub fn parse_args(line: &str) -> BTreeMap<String, Option<String>> {
    let tokens = tokenize(line);
    let mut out = BTreeMap::new();
    let rest = tokens.get(1..).unwrap_or(&[]);
    for pair in rest.chunks(2) {
        let key = pair[0].strip_prefix("--").unwrap_or(&pair[0]).to_owned();
        out.insert(key, pair.get(1).cloned());
    }
    out
}

/// Splits a command line into tokens: `"..."` (with `\x` escapes), `'...'` and `\x` are
/// unquoted; quoting joins with adjacent text (`a"b c"` is one token). An unterminated
/// quote is taken literally.
pub fn tokenize(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut tok = String::new();
        while i < chars.len() && !chars[i].is_whitespace() {
            match chars[i] {
                '"' => match closing(&chars, i + 1, '"', true) {
                    Some(end) => {
                        let mut j = i + 1;
                        while j < end {
                            if chars[j] == '\\' && j + 1 < end {
                                j += 1;
                            }
                            tok.push(chars[j]);
                            j += 1;
                        }
                        i = end + 1;
                    }
                    None => {
                        tok.push('"');
                        i += 1;
                    }
                },
                '\'' => match closing(&chars, i + 1, '\'', false) {
                    Some(end) => {
                        tok.extend(&chars[i + 1..end]);
                        i = end + 1;
                    }
                    None => {
                        tok.push('\'');
                        i += 1;
                    }
                },
                '\\' if i + 1 < chars.len() => {
                    tok.push(chars[i + 1]);
                    i += 2;
                }
                c => {
                    tok.push(c);
                    i += 1;
                }
            }
        }
        tokens.push(tok);
    }
    tokens
}

/// Index of the quote closing a quoted part starting at `from`.
fn closing(chars: &[char], from: usize, quote: char, escapes: bool) -> Option<usize> {
    let mut j = from;
    while j < chars.len() {
        if escapes && chars[j] == '\\' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return Some(j);
        }
        j += 1;
    }
    None
}

/// Prints what a human at the terminal should see, through a bounded queue to a printer
/// task (the runtime task never waits on stdout): received messages in the reference's
/// `[sidechannel:<name>] <from>: <message>` form (unless quiet), channel requests and
/// auto-joins, and with `debug` every drop and connection change.
#[derive(Debug, Clone)]
pub struct ConsoleSink {
    tx: mpsc::Sender<String>,
    messages: bool,
    debug: bool,
}

impl ConsoleSink {
    /// A sink and the receiving end of its line queue (`capacity` lines; more are dropped).
    pub fn new(
        capacity: usize,
        messages: bool,
        debug: bool,
    ) -> (ConsoleSink, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            ConsoleSink {
                tx,
                messages,
                debug,
            },
            rx,
        )
    }

    /// A sink whose lines a spawned task writes to stdout.
    pub fn stdout(messages: bool, debug: bool) -> ConsoleSink {
        let (sink, mut rx) = ConsoleSink::new(1024, messages, debug);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stdout = tokio::io::stdout();
            while let Some(line) = rx.recv().await {
                if stdout
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                let _ = stdout.flush().await;
            }
        });
        sink
    }

    fn line(&self, s: String) {
        let _ = self.tx.try_send(s);
    }
}

/// The text a message prints as: strings raw, anything else as JSON.
fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

impl EventSink for ConsoleSink {
    fn deliver(&mut self, event: &PeerEvent) {
        match event {
            PeerEvent::Sidechannel { event, peer } => match event {
                SidechannelEvent::Message {
                    channel,
                    payload,
                    from,
                    ..
                } if self.messages => {
                    let from = from.clone().unwrap_or_else(|| "unknown".into());
                    let msg = payload.message().map(display).unwrap_or_default();
                    self.line(format!("[sidechannel:{channel}] {from}: {msg}"));
                }
                SidechannelEvent::OpenRequested { channel, .. } => {
                    self.line(format!("[sidechannel] channel request received: {channel}"));
                }
                SidechannelEvent::AutoJoin { channel } => {
                    self.line(format!("[sidechannel] auto-joined channel: {channel}"));
                }
                SidechannelEvent::Dropped {
                    channel, reason, ..
                } if self.debug => {
                    let peer = peer.as_deref().unwrap_or("unknown");
                    self.line(format!(
                        "[sidechannel:{channel}] drop ({reason}) from {peer}"
                    ));
                }
                SidechannelEvent::PeerAuthorized { channel, peer, .. } if self.debug => {
                    self.line(format!("[sidechannel:{channel}] authorized {peer}"));
                }
                SidechannelEvent::Welcomed { channel } if self.debug => {
                    self.line(format!("[sidechannel:{channel}] welcome verified"));
                }
                _ => {}
            },
            PeerEvent::Connected { peer, label, .. } if self.debug => {
                self.line(format!("[peer] connected {peer} ({label})"));
            }
            PeerEvent::Disconnected { peer, .. } if self.debug => {
                self.line(format!("[peer] disconnected {peer}"));
            }
            PeerEvent::SendDropped {
                channel, reason, ..
            } if self.debug => {
                self.line(format!("[sidechannel:{channel}] frame dropped ({reason})"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_like_trac_peer() {
        assert_eq!(
            tokenize(r#"/sc_send --channel "a b" --message 'x "y"' z\ w"#),
            vec![
                "/sc_send",
                "--channel",
                "a b",
                "--message",
                "x \"y\"",
                "z w"
            ]
        );
        assert_eq!(tokenize(r#"a"b c"d"#), vec!["ab cd"]);
        assert_eq!(tokenize(r#""es\"c""#), vec!["es\"c"]);
        assert_eq!(tokenize(r#"open "quote"#), vec!["open", "\"quote"]);
        assert!(tokenize("   ").is_empty());
    }

    #[test]
    fn args_are_pairs() {
        let a = parse_args(r#"/sc_send --channel room --message "hello world" --flag"#);
        assert_eq!(a["channel"].as_deref(), Some("room"));
        assert_eq!(a["message"].as_deref(), Some("hello world"));
        assert_eq!(a["flag"], None);
        // Pairs, as the reference: an extra word shifts everything after it.
        let a = parse_args("/sc_send --channel a b --message m");
        assert_eq!(a["channel"].as_deref(), Some("a"));
        assert_eq!(a["b"].as_deref(), Some("--message"));
        assert_eq!(arg(&a, &["message", "msg"]), None);
    }

    #[test]
    fn parse_int_like_js() {
        assert_eq!(js_parse_int(" 42abc"), Some(42));
        assert_eq!(js_parse_int("-7"), Some(-7));
        assert_eq!(js_parse_int("abc"), None);
        assert_eq!(js_parse_int(""), None);
    }
}
