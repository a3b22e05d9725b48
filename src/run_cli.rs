//! `intercom run`: one long-running peer with a persistent identity, its sidechannels, the
//! SC-Bridge and the human TTY, configured with the JS Intercom's flags (`index.js`):
//! same names, aliases, defaults and environment variables.
//!
//! The subnet plane runs with `--subnet-channel` / `--subnet-bootstrap` (without a
//! bootstrap key the peer bootstraps a new subnet with its own writer log) and the
//! contract the binary was built with; `--timer 1` makes the admin feed the sample timer.
//! Flags of the settlement (MSB) plane, which does not exist yet, are accepted, validated
//! where the reference validates them, and reported at startup as "not yet available". Peer networking is a Hyperswarm (`dht/swarm`) on the peer's
//! identity, wired in by [`crate::peer_net`].
//!
//! Every flag is typed: clap parses it with the value parsers of [`crate::cli_values`], and
//! [`RunArgs::settings`] only combines values. Deviations from the reference's parsing: an
//! invalid number, port, boolean word, node list, key or `--sidechannel-welcome` entry is an
//! error (the reference falls back to the default, reads false, or drops the entry), and
//! `--peer-stores-directory` also answers to `--stores-dir`.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use intercom_peer::cli::{
    BridgeCliPolicy, CliContext, ConsoleSink, Dispatcher, BRIDGE_MAX_FILE_BYTES, HELP,
};
use intercom_peer::inbox::{Inbox, InboxLimits, InboxSink};
use intercom_peer::{BridgeSink, PeerBackend, PeerConfig, PeerRuntime};
use intercom_sc_bridge::{check_token, Bridge, BridgeConfig, DEFAULT_PORT, TOKEN_SUGGESTION};
use intercom_sidechannel::args::{parse_arg_file_text, parse_welcome_arg, ArgError};
use intercom_sidechannel::{SidechannelConfig, ENTRY_CHANNEL};
use intercom_stores::{Decisions, Durability, PeerStore};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::cli_values::{flag_bool, CsvList, Hex32, NodeList, PairList, BOOL};
use crate::peer_net;
/// Name of the peer's writer log in its store (corestore-style naming).
const WRITER_LOG_NAME: &str = "writer";

/// Options of `intercom run`. Every value flag accepts `--flag value` and `--flag=value`;
/// boolean flags take `0|1|true|false|yes|no|on|off`, and alone mean `1`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    next_help_heading = "Peer and stores",
    after_long_help = "Flags of planes that do not exist yet (settlement/MSB) are \
accepted and reported at startup as not yet available. Environment variables apply when the flag is absent."
)]
pub struct RunArgs {
    /// Peer store label, as the reference's first positional argument (`--peer-store-name` wins).
    #[arg(value_name = "STORE")]
    pub store_label: Option<String>,

    /// Local peer state label: the identity and state live in <stores>/<name>/ [default: peer]
    #[arg(long, value_name = "NAME", env = "PEER_STORE_NAME")]
    pub peer_store_name: Option<String>,

    /// Directory holding the peer stores.
    #[arg(
        long,
        visible_alias = "stores-dir",
        value_name = "DIR",
        env = "PEER_STORES_DIRECTORY",
        default_value = "stores"
    )]
    pub peer_stores_directory: PathBuf,

    /// Sync every acknowledged store write (log appends, subnet state) to disk before
    /// acknowledging it: survives a power cut, at ~0.2 ms per write. Off: acknowledged writes
    /// survive a crash of the process and reach the disk within 100 ms [default: 0]
    #[arg(long, value_name = BOOL, env = "PEER_STORE_SYNC", num_args = 0..=1, default_missing_value = "1", value_parser = flag_bool)]
    pub peer_store_sync: Option<bool>,

    /// HyperDHT bootstrap nodes of the peer's swarm, HOST:PORT[,HOST:PORT...] (env also
    /// DHT_BOOTSTRAP) [default: the public HyperDHT bootstrap nodes]
    #[arg(
        long = "dht-bootstrap",
        visible_alias = "peer-dht-bootstrap",
        value_name = "NODES",
        env = "PEER_DHT_BOOTSTRAP"
    )]
    pub dht_bootstrap: Option<NodeList>,

    /// Most open connections other peers made to us (not in the JS peer) [default: 1024]
    #[arg(long, value_name = "N", env = "INTERCOM_MAX_CONNECTIONS", help_heading = "Peer limits", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Most open connections from one remote IP [default: 64]
    #[arg(long, value_name = "N", env = "INTERCOM_MAX_CONNECTIONS_PER_IP", help_heading = "Peer limits", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_ip: Option<u64>,

    /// Most inbound connection handshakes in progress [default: 512]
    #[arg(long, value_name = "N", env = "INTERCOM_MAX_PENDING_CONNECTIONS", help_heading = "Peer limits", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_connections: Option<u64>,

    /// DHT requests per second served to one source IP, burst twice that; 0 = unlimited [default: 1000]
    #[arg(
        long,
        value_name = "N",
        env = "INTERCOM_DHT_REQUEST_RATE",
        help_heading = "Peer limits"
    )]
    pub dht_request_rate: Option<u32>,

    /// Print the resolved configuration as JSON and exit (nothing is opened or bound).
    #[arg(long)]
    pub print_config: bool,

    // ----- the durable inbox
    /// Keep every delivered sidechannel message in the peer store until each agent
    /// acknowledges it (bridge inbox_recv / inbox_ack / inbox_status) [default: 1]
    #[arg(long, value_name = BOOL, env = "INTERCOM_INBOX", num_args = 0..=1, default_missing_value = "1", help_heading = "Inbox", value_parser = flag_bool)]
    pub inbox: Option<bool>,

    /// Inbox retention: messages kept at most; the oldest go first [default: 100000]
    #[arg(long, value_name = "N", env = "INTERCOM_INBOX_MAX_MESSAGES", help_heading = "Inbox", value_parser = clap::value_parser!(u64).range(1..))]
    pub inbox_max_messages: Option<u64>,

    /// Inbox retention: bytes of stored messages kept at most [default: 67108864]
    #[arg(long, value_name = "BYTES", env = "INTERCOM_INBOX_MAX_BYTES", help_heading = "Inbox", value_parser = clap::value_parser!(u64).range(1024..))]
    pub inbox_max_bytes: Option<u64>,

    /// Inbox retention: messages older than this many seconds are deleted [default: 604800]
    #[arg(long, value_name = "SEC", env = "INTERCOM_INBOX_MAX_AGE", help_heading = "Inbox", value_parser = clap::value_parser!(u64).range(1..))]
    pub inbox_max_age: Option<u64>,

    // ----- subnet and settlement planes
    /// Subnet/app identity [default: trac-peer-subnet]
    #[arg(long, value_name = "NAME", env = "SUBNET_CHANNEL")]
    pub subnet_channel: Option<String>,

    /// Admin peer's writer key (64 hex) for joiners; without it this peer bootstraps the subnet.
    #[arg(long, value_name = "HEX", env = "SUBNET_BOOTSTRAP")]
    pub subnet_bootstrap: Option<Hex32>,

    /// Local MSB (settlement) state label (not yet available) [default: <peer-store-name>-msb]
    #[arg(
        long,
        value_name = "NAME",
        env = "MSB_STORE_NAME",
        help_heading = "Not yet available (accepted and reported)"
    )]
    pub msb_store_name: Option<String>,

    /// Directory of MSB stores (not yet available) [default: stores]
    #[arg(
        long,
        value_name = "DIR",
        env = "MSB_STORES_DIRECTORY",
        help_heading = "Not yet available (accepted and reported)"
    )]
    pub msb_stores_directory: Option<PathBuf>,

    /// HyperDHT bootstrap nodes of the MSB network (not yet available).
    #[arg(
        long,
        value_name = "NODES",
        env = "MSB_DHT_BOOTSTRAP",
        help_heading = "Not yet available (accepted and reported)"
    )]
    pub msb_dht_bootstrap: Option<NodeList>,

    /// Test hook: a file of peer keys (hex, one per line) whose connections replicate no
    /// subnet logs while listed (re-read every 250 ms); splits a subnet for partition tests.
    #[arg(long, value_name = "PATH", hide = true)]
    pub subnet_firewall_file: Option<PathBuf>,

    /// Sample timer feature: the admin appends the current time every 60 s [default: 0]
    #[arg(long, value_name = BOOL, env = "INTERCOM_TIMER", num_args = 0..=1, default_missing_value = "1", value_parser = flag_bool)]
    pub timer: Option<bool>,

    // ----- sidechannels
    /// Extra sidechannels to join at startup, comma-separated (the entry channel 0000intercom is always joined).
    #[arg(
        long,
        visible_alias = "sidechannel",
        value_name = "A,B,C",
        env = "SIDECHANNELS",
        help_heading = "Sidechannels"
    )]
    pub sidechannels: Option<CsvList>,

    /// Verbose sidechannel logs (drops, authorisations, connections) [default: 0]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_DEBUG", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_debug: Option<bool>,

    /// Do not print received sidechannel messages to stdout (still relays; SC-Bridge clients still get them) [default: 0]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_QUIET", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_quiet: Option<bool>,

    /// Payload size guard in bytes (JSON-encoded payload) [default: 1000000]
    #[arg(
        long,
        value_name = "N",
        env = "SIDECHANNEL_MAX_BYTES",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_max_bytes: Option<u64>,

    /// Inbound per-connection rate budget, bytes/second; 0 disables rate limiting [default: 64000]
    #[arg(
        long,
        value_name = "N",
        env = "SIDECHANNEL_RATE_BYTES",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_rate_bytes: Option<u64>,

    /// Inbound token-bucket burst allowance, bytes [default: 256000]
    #[arg(
        long,
        value_name = "N",
        env = "SIDECHANNEL_RATE_BURST",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_rate_burst: Option<u64>,

    /// Over-limit strikes within 5 s before a peer is blocked for 30 s [default: 3]
    #[arg(
        long,
        value_name = "N",
        env = "SIDECHANNEL_MAX_STRIKES",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_max_strikes: Option<u32>,

    /// Freshness window: messages stamped longer ago are dropped as stale (the JS peer has no such check; peer clocks must agree), seconds [default: 120]
    #[arg(long, value_name = "SEC", env = "SIDECHANNEL_MAX_AGE", help_heading = "Sidechannels", value_parser = clap::value_parser!(u64).range(1..))]
    pub sidechannel_max_age: Option<u64>,

    /// Accept /sc_open (open_channel) requests from peers [default: 1]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_ALLOW_REMOTE_OPEN", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_allow_remote_open: Option<bool>,

    /// Join requested channels automatically [default: 0]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_AUTO_JOIN", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_auto_join: Option<bool>,

    /// Hashcash-style proof of work on sidechannel messages [default: 1]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_POW", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_pow: Option<bool>,

    /// Required leading zero bits of the proof of work (at most 32) [default: 12]
    #[arg(
        long,
        value_name = "BITS",
        env = "SIDECHANNEL_POW_DIFFICULTY",
        help_heading = "Sidechannels", value_parser = clap::value_parser!(u32).range(0..=32))]
    pub sidechannel_pow_difficulty: Option<u32>,

    /// Require proof of work on the entry channel only [default: 0]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_POW_ENTRY", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_pow_entry: Option<bool>,

    /// Require proof of work only on these channels (overrides --sidechannel-pow-entry).
    #[arg(
        long,
        value_name = "A,B",
        env = "SIDECHANNEL_POW_CHANNELS",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_pow_channels: Option<CsvList>,

    /// Require signed invites on protected channels (all non-entry channels unless
    /// --sidechannel-invite-channels/--sidechannel-invite-prefixes narrow it) [default: 0]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_INVITE_REQUIRED", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_invite_required: Option<bool>,

    /// Require invites only on these exact channels.
    #[arg(
        long,
        value_name = "A,B",
        env = "SIDECHANNEL_INVITE_CHANNELS",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_invite_channels: Option<CsvList>,

    /// Require invites on channels starting with one of these prefixes.
    #[arg(
        long,
        value_name = "P1,P2",
        env = "SIDECHANNEL_INVITE_PREFIXES",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_invite_prefixes: Option<CsvList>,

    /// Trusted inviter peer public keys (hex) [default: this peer's key when invites are required]
    #[arg(
        long,
        value_name = "KEY1,KEY2",
        env = "SIDECHANNEL_INVITER_KEYS",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_inviter_keys: Option<CsvList>,

    /// Default lifetime of invites created with /sc_invite, seconds [default: 604800]
    #[arg(
        long,
        value_name = "SEC",
        env = "SIDECHANNEL_INVITE_TTL",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_invite_ttl: Option<u64>,

    /// Require an owner-signed welcome on every channel but the entry [default: 1]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_WELCOME_REQUIRED", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_welcome_required: Option<bool>,

    /// Channel owners: CHAN:PUBKEY[,CHAN2:PUBKEY] (hex peer keys; they sign the welcomes).
    #[arg(
        long,
        value_name = "CHAN:KEY,...",
        env = "SIDECHANNEL_OWNER",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_owner: Option<PairList>,

    /// Only channel owners may send, on every channel but the entry [default: 0]
    #[arg(long, value_name = BOOL, env = "SIDECHANNEL_OWNER_WRITE_ONLY", num_args = 0..=1, default_missing_value = "1", help_heading = "Sidechannels", value_parser = flag_bool)]
    pub sidechannel_owner_write_only: Option<bool>,

    /// Only channel owners may send on these channels.
    #[arg(
        long,
        value_name = "A,B",
        env = "SIDECHANNEL_OWNER_WRITE_CHANNELS",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_owner_write_channels: Option<CsvList>,

    /// Pre-signed welcomes: CHAN:WELCOME[,CHAN2:WELCOME] where WELCOME is welcome_b64,
    /// b64:..., JSON, or @file (a file holding any of those).
    #[arg(
        long,
        value_name = "CHAN:WELCOME,...",
        env = "SIDECHANNEL_WELCOME",
        help_heading = "Sidechannels"
    )]
    pub sidechannel_welcome: Option<PairList>,

    // ----- SC-Bridge
    /// Serve the SC-Bridge WebSocket API (requires --sc-bridge-token) [default: 0]
    #[arg(long, value_name = BOOL, env = "SC_BRIDGE", num_args = 0..=1, default_missing_value = "1", help_heading = "SC-Bridge", value_parser = flag_bool)]
    pub sc_bridge: Option<bool>,

    /// Bridge bind host [default: 127.0.0.1]
    #[arg(
        long,
        value_name = "HOST",
        env = "SC_BRIDGE_HOST",
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_host: Option<String>,

    /// Bridge bind port (0 picks a free one) [default: 49222]
    #[arg(
        long,
        value_name = "PORT",
        env = "SC_BRIDGE_PORT",
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_port: Option<u16>,

    /// Auth token (clients send {"type":"auth","token":"..."} first), kept for compatibility: a flag shows it in
    /// `ps`, so prefer --sc-bridge-token-file or the SC_BRIDGE_TOKEN variable. At least 16 random bytes.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SC_BRIDGE_TOKEN",
        hide_env_values = true,
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_token: Option<String>,

    /// File holding the auth token (the documented way; surrounding whitespace ignored). Create one with
    /// `openssl rand -hex 32 > token && chmod 600 token`. Treat it like an admin password.
    #[arg(
        long,
        value_name = "PATH",
        env = "SC_BRIDGE_TOKEN_FILE",
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_token_file: Option<PathBuf>,

    /// Mirror TTY slash commands over WebSocket ({"type":"cli"}): remote terminal control, keep off for agents [default: 0]
    #[arg(long, value_name = BOOL, env = "SC_BRIDGE_CLI", num_args = 0..=1, default_missing_value = "1", help_heading = "SC-Bridge", value_parser = flag_bool)]
    pub sc_bridge_cli: Option<bool>,

    /// Let SC-Bridge clients stop the peer with /exit (with --sc-bridge-cli 1) [default: 0]
    #[arg(long, value_name = BOOL, env = "SC_BRIDGE_CLI_EXIT", num_args = 0..=1, default_missing_value = "1", help_heading = "SC-Bridge", value_parser = flag_bool)]
    pub sc_bridge_cli_exit: Option<bool>,

    /// Browser origins allowed to connect, as scheme://host[:port]. Connections without an Origin header (local
    /// agents) are always accepted; any other origin is refused and logged.
    #[arg(
        long,
        value_name = "ORIGIN,...",
        env = "SC_BRIDGE_ORIGIN",
        value_delimiter = ',',
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_origin: Vec<String>,

    /// Default word filter for clients: alpha+beta|gamma = (alpha AND beta) OR gamma.
    #[arg(
        long,
        value_name = "EXPR",
        env = "SC_BRIDGE_FILTER",
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_filter: Option<String>,

    /// Apply filters only to these channels (others pass through).
    #[arg(
        long,
        value_name = "A,B",
        env = "SC_BRIDGE_FILTER_CHANNEL",
        help_heading = "SC-Bridge"
    )]
    pub sc_bridge_filter_channel: Option<CsvList>,

    /// Verbose SC-Bridge logs [default: 0]
    #[arg(long, value_name = BOOL, env = "SC_BRIDGE_DEBUG", num_args = 0..=1, default_missing_value = "1", help_heading = "SC-Bridge", value_parser = flag_bool)]
    pub sc_bridge_debug: Option<bool>,

    // ----- operator surfaces
    #[command(flatten)]
    pub metrics: crate::metrics_cli::MetricsArgs,
}

impl RunArgs {
    /// The connection and request limits of the peer's network (docs/hardening.md).
    pub fn net_limits(&self) -> peer_net::NetLimits {
        peer_net::NetLimits::from_flags(
            self.max_connections,
            self.max_connections_per_ip,
            self.max_pending_connections,
            self.dht_request_rate,
        )
    }
}

/// The bridge part of [`Settings`].
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    pub host: String,
    pub port: u16,
    pub token: String,
    pub cli: bool,
    /// `/exit` allowed over the bridge's `cli` command.
    pub cli_exit: bool,
    /// Allowed browser origins.
    pub origins: Vec<String>,
    pub filter: String,
    pub filter_channels: Option<Vec<String>>,
    pub debug: bool,
}

/// Everything `intercom run` resolved from its flags, environment and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store_name: String,
    pub stores_dir: PathBuf,
    pub store_durability: Durability,
    pub dht_bootstrap: Option<Vec<String>>,
    pub sidechannel: SidechannelConfig,
    /// Flags given now for the persisted first-run decisions.
    pub decisions: Decisions,
    pub quiet: bool,
    pub debug: bool,
    pub bridge: Option<BridgeSettings>,
    pub subnet_channel: String,
    /// The subnet's bootstrap writer (`None`: our own writer log bootstraps it).
    pub subnet_bootstrap: Option<[u8; 32]>,
    /// The admin feeds the sample timer feature.
    pub timer: bool,
    /// The durable inbox's retention, `None` when it is off (`--inbox 0`).
    pub inbox: Option<InboxLimits>,
    /// (flag, value, why) for every flag of a plane that does not exist yet.
    pub unavailable: Vec<(&'static str, String, &'static str)>,
}

/// A free-text flag's value, an empty one counting as absent (as in the reference).
fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

/// A list flag's items as a set (`None` when the flag is absent).
fn set(v: &Option<CsvList>) -> Option<BTreeSet<String>> {
    v.as_ref().map(|l| l.0.iter().cloned().collect())
}

/// A `--sidechannel-welcome` value: welcome_b64, `b64:`, JSON or `@file`.
fn welcome_value(raw: &str) -> anyhow::Result<Value> {
    match parse_welcome_arg(raw) {
        Ok(v) => Ok(v),
        Err(ArgError::FileReference(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("--sidechannel-welcome: cannot read {path:?}"))?;
            parse_arg_file_text(&text)
                .map_err(|e| anyhow::anyhow!("--sidechannel-welcome: {path:?}: {e}"))
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

impl RunArgs {
    /// Resolves the flags (no I/O besides `@file` welcomes).
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let store_name = nonempty(&self.peer_store_name)
            .or(nonempty(&self.store_label))
            .unwrap_or("peer")
            .to_owned();

        let dht_bootstrap = match &self.dht_bootstrap {
            Some(nodes) => Some(nodes.0.clone()),
            None => match std::env::var("DHT_BOOTSTRAP") {
                Ok(raw) if !raw.trim().is_empty() => Some(
                    raw.parse::<NodeList>()
                        .map_err(|e| anyhow::anyhow!("DHT_BOOTSTRAP: {e}"))?
                        .0,
                ),
                _ => None,
            },
        };

        let defaults = SidechannelConfig::default();
        let mut sc = SidechannelConfig {
            channels: self
                .sidechannels
                .iter()
                .flat_map(|l| l.0.iter())
                .filter(|c| *c != ENTRY_CHANNEL)
                .cloned()
                .collect(),
            allow_remote_open: self.sidechannel_allow_remote_open.unwrap_or(true),
            auto_join_on_open: self.sidechannel_auto_join.unwrap_or(false),
            pow_enabled: self.sidechannel_pow.unwrap_or(true),
            pow_difficulty: self
                .sidechannel_pow_difficulty
                .unwrap_or(defaults.pow_difficulty),
            pow_require_entry: self.sidechannel_pow_entry.unwrap_or(false),
            pow_required_channels: set(&self.sidechannel_pow_channels),
            max_message_bytes: match self.sidechannel_max_bytes {
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => defaults.max_message_bytes,
            },
            rate_bytes_per_second: self
                .sidechannel_rate_bytes
                .unwrap_or(defaults.rate_bytes_per_second),
            rate_burst_bytes: self
                .sidechannel_rate_burst
                .unwrap_or(defaults.rate_burst_bytes),
            max_strikes: self.sidechannel_max_strikes.unwrap_or(defaults.max_strikes),
            max_message_age_ms: match self.sidechannel_max_age {
                Some(sec) => sec.saturating_mul(1000),
                None => defaults.max_message_age_ms,
            },
            invite_required: self.sidechannel_invite_required.unwrap_or(false),
            invite_required_channels: set(&self.sidechannel_invite_channels),
            invite_required_prefixes: self.sidechannel_invite_prefixes.clone().map(|l| l.0),
            inviter_keys: self
                .sidechannel_inviter_keys
                .clone()
                .map(|l| l.0)
                .unwrap_or_default(),
            invite_ttl_ms: match self.sidechannel_invite_ttl {
                Some(sec) => sec.saturating_mul(1000),
                None => defaults.invite_ttl_ms,
            },
            welcome_required: self.sidechannel_welcome_required.unwrap_or(true),
            owner_write_only: self.sidechannel_owner_write_only.unwrap_or(false),
            owner_write_channels: set(&self.sidechannel_owner_write_channels),
            ..defaults
        };
        for (channel, key) in self.sidechannel_owner.iter().flat_map(|l| l.0.iter()) {
            sc.owner_keys.insert(channel.clone(), key.to_lowercase());
        }
        for (channel, value) in self.sidechannel_welcome.iter().flat_map(|l| l.0.iter()) {
            let welcome = welcome_value(value)
                .with_context(|| format!("--sidechannel-welcome: channel {channel:?}"))?;
            sc.welcome_by_channel.insert(channel.clone(), welcome);
        }

        let decisions = Decisions {
            allow_remote_open: self.sidechannel_allow_remote_open,
            auto_join: self.sidechannel_auto_join,
            rate_bytes: self.sidechannel_rate_bytes,
            rate_burst: self.sidechannel_rate_burst,
            max_strikes: self.sidechannel_max_strikes,
            max_bytes: self.sidechannel_max_bytes,
            timer: self.timer,
            ..Decisions::default()
        };

        let bridge = if self.sc_bridge.unwrap_or(false) {
            let token = bridge_token(
                self.sc_bridge_token_file.as_deref(),
                nonempty(&self.sc_bridge_token),
            )?;
            let origins: Vec<String> = self
                .sc_bridge_origin
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            intercom_sc_bridge::OriginPolicy::new(&origins, None)
                .map_err(|e| anyhow::anyhow!("--sc-bridge-origin: {e}"))?;
            Some(BridgeSettings {
                host: nonempty(&self.sc_bridge_host)
                    .unwrap_or("127.0.0.1")
                    .to_owned(),
                port: self.sc_bridge_port.unwrap_or(DEFAULT_PORT),
                token,
                cli: self.sc_bridge_cli.unwrap_or(false),
                cli_exit: self.sc_bridge_cli_exit.unwrap_or(false),
                origins,
                filter: self.sc_bridge_filter.clone().unwrap_or_default(),
                filter_channels: self.sc_bridge_filter_channel.clone().map(|l| l.0),
                debug: self.sc_bridge_debug.unwrap_or(false),
            })
        } else {
            None
        };

        let mut unavailable = Vec::new();
        const MSB: &str = "no settlement (MSB) plane yet";
        if let Some(v) = nonempty(&self.msb_store_name) {
            unavailable.push(("--msb-store-name", v.to_owned(), MSB));
        }
        if let Some(v) = &self.msb_stores_directory {
            unavailable.push(("--msb-stores-directory", v.display().to_string(), MSB));
        }
        if let Some(v) = &self.msb_dht_bootstrap {
            unavailable.push(("--msb-dht-bootstrap", v.to_string(), MSB));
        }

        Ok(Settings {
            store_name,
            stores_dir: self.peer_stores_directory.clone(),
            store_durability: Durability::from_sync_flag(self.peer_store_sync.unwrap_or(false)),
            dht_bootstrap,
            sidechannel: sc,
            decisions,
            quiet: self.sidechannel_quiet.unwrap_or(false),
            debug: self.sidechannel_debug.unwrap_or(false),
            bridge,
            subnet_channel: nonempty(&self.subnet_channel)
                .unwrap_or("trac-peer-subnet")
                .to_owned(),
            subnet_bootstrap: self.subnet_bootstrap.map(|k| k.0),
            timer: false,
            inbox: self.inbox.unwrap_or(true).then(|| {
                let defaults = InboxLimits::default();
                InboxLimits {
                    max_messages: self.inbox_max_messages.unwrap_or(defaults.max_messages),
                    max_bytes: self.inbox_max_bytes.unwrap_or(defaults.max_bytes),
                    max_age_ms: self
                        .inbox_max_age
                        .map_or(defaults.max_age_ms, |s| s.saturating_mul(1000)),
                }
            }),
            unavailable,
        })
    }
}

impl Settings {
    /// Fills the sidechannel options no flag set from the persisted decisions.
    fn apply_decisions(&mut self, d: &Decisions) {
        let sc = &mut self.sidechannel;
        if let Some(v) = d.allow_remote_open {
            sc.allow_remote_open = v;
        }
        if let Some(v) = d.auto_join {
            sc.auto_join_on_open = v;
        }
        if let Some(v) = d.rate_bytes {
            sc.rate_bytes_per_second = v;
        }
        if let Some(v) = d.rate_burst {
            sc.rate_burst_bytes = v;
        }
        if let Some(v) = d.max_strikes {
            sc.max_strikes = v;
        }
        if let Some(v) = d.max_bytes {
            sc.max_message_bytes = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = d.relay {
            sc.relay_enabled = v;
        }
        if let Some(v) = d.relay_ttl {
            sc.relay_ttl = v;
        }
        if let Some(v) = d.timer {
            self.timer = v;
        }
    }

    /// The resolved configuration as JSON (`--print-config`); the token is not shown.
    pub fn to_json(&self) -> Value {
        let sc = &self.sidechannel;
        json!({
            "peerStoreName": self.store_name,
            "peerStore": self.stores_dir.join(&self.store_name),
            "peerStoreSync": self.store_durability == Durability::PowerLoss,
            "peerDhtBootstrap": self.dht_bootstrap,
            "subnetChannel": self.subnet_channel,
            "subnetBootstrap": self.subnet_bootstrap.map(hex::encode),
            "timer": self.timer,
            "inbox": self.inbox.map(|l| json!({
                "maxMessages": l.max_messages,
                "maxBytes": l.max_bytes,
                "maxAgeMs": l.max_age_ms,
            })),
            "sidechannel": {
                "entry": sc.entry_channel,
                "extras": sc.channels,
                "quiet": self.quiet,
                "debug": self.debug,
                "maxMessageBytes": sc.max_message_bytes,
                "allowRemoteOpen": sc.allow_remote_open,
                "autoJoin": sc.auto_join_on_open,
                "pow": sc.pow_enabled,
                "powDifficulty": sc.pow_difficulty,
                "powEntry": sc.pow_require_entry,
                "powChannels": sc.pow_required_channels,
                "rateBytes": sc.rate_bytes_per_second,
                "rateBurst": sc.rate_burst_bytes,
                "maxStrikes": sc.max_strikes,
                "maxAgeMs": sc.max_message_age_ms,
                "inviteRequired": sc.invite_required,
                "inviteChannels": sc.invite_required_channels,
                "invitePrefixes": sc.invite_required_prefixes,
                "inviterKeys": sc.inviter_keys,
                "inviteTtlMs": sc.invite_ttl_ms,
                "welcomeRequired": sc.welcome_required,
                "owners": sc.owner_keys,
                "ownerWriteOnly": sc.owner_write_only,
                "ownerWriteChannels": sc.owner_write_channels,
                "welcomes": sc.welcome_by_channel,
            },
            "scBridge": self.bridge.as_ref().map(|b| json!({
                "host": b.host,
                "port": b.port,
                "token": "(set)",
                "cli": b.cli,
                "cliExit": b.cli_exit,
                "origins": b.origins,
                "filter": b.filter,
                "filterChannels": b.filter_channels,
                "debug": b.debug,
            })),
            "notYetAvailable": self.unavailable.iter().map(|(f, v, why)| json!({
                "flag": f, "value": v, "why": why,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The bridge token from `--sc-bridge-token-file` or else `--sc-bridge-token` / `SC_BRIDGE_TOKEN`, checked
/// against the strength rule of [`check_token`].
fn bridge_token(file: Option<&std::path::Path>, given: Option<&str>) -> anyhow::Result<String> {
    let token = match (file, given) {
        (Some(_), Some(_)) => bail!(
            "--sc-bridge-token-file and --sc-bridge-token (or SC_BRIDGE_TOKEN) are both set; use one."
        ),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("--sc-bridge-token-file: cannot read {}", path.display())
            })?;
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    crate::logging::warning(&format!(
                        "the SC-Bridge token file {} is readable by other users (chmod 600 it).",
                        path.display()
                    ));
                }
            }
            text.trim().to_owned()
        }
        (None, Some(token)) => token.to_owned(),
        (None, None) => bail!(
            "SC-Bridge requires --sc-bridge-token-file PATH (or SC_BRIDGE_TOKEN, or --sc-bridge-token) (auth is \
             mandatory): {TOKEN_SUGGESTION}."
        ),
    };
    check_token(&token).map_err(|e| {
        anyhow::anyhow!(
            "SC-Bridge token refused: {e}. Use at least 16 random bytes: {TOKEN_SUGGESTION}."
        )
    })?;
    Ok(token)
}

/// Whether this process was given the bridge token as a flag (visible in `ps`).
fn token_on_command_line() -> bool {
    std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--sc-bridge-token" || a.starts_with("--sc-bridge-token=")
    })
}

fn init_logging(s: &Settings) {
    let mut filter = String::from("warn");
    if s.debug {
        filter.push_str(",intercom_sidechannel=debug,intercom_peer=debug");
    }
    if s.bridge.as_ref().is_some_and(|b| b.debug) {
        filter.push_str(",intercom_sc_bridge=debug");
    }
    // --log-level, else RUST_LOG, else this filter; --log-format picks text or json.
    crate::logging::init(&filter);
}

/// The key pair of the peer's writer log (corestore name "writer" under the store's
/// primary key).
pub fn writer_keypair(
    kv: &dyn intercom_stores::KvStore,
) -> anyhow::Result<intercom_crypto::KeyPair> {
    let primary = intercom_log::names::primary_key(kv)?;
    Ok(intercom_log::names::keypair_for_name(
        &primary,
        &intercom_log::names::DEFAULT_NAMESPACE,
        WRITER_LOG_NAME,
    ))
}

/// How often the admin's sample timer appends the time (`--timer 1`).
const TIMER_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the peer until SIGINT/SIGTERM/SIGHUP or `/exit`.
pub async fn run(
    args: RunArgs,
    contract: Arc<dyn intercom_contracts::Contract>,
) -> anyhow::Result<()> {
    let mut settings = args.settings()?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&settings.to_json())?);
        return Ok(());
    }
    init_logging(&settings);
    if settings.bridge.is_some() && token_on_command_line() {
        crate::logging::warning(
            "--sc-bridge-token shows the token to every user in `ps` and /proc/PID/cmdline; pass it with \
             --sc-bridge-token-file PATH or the SC_BRIDGE_TOKEN environment variable instead.",
        );
    }

    // The store comes first: a second process on the same store stops here.
    let store = PeerStore::open(
        &settings.stores_dir,
        &settings.store_name,
        settings.store_durability,
    )?;
    let decisions = store
        .settle_decisions(settings.decisions.clone())
        .context("saving the first-run decisions")?;
    settings.apply_decisions(&decisions);
    let keypair = store.keypair().clone();
    let pubkey = hex::encode(keypair.public_key);
    crate::logging::set_peer(&keypair.public_key);
    let store_path = settings.stores_dir.join(&settings.store_name);

    for (flag, value, why) in &settings.unavailable {
        crate::logging::note(&format!(
            "{flag} {value:?} accepted but not yet available ({why}); it has no effect."
        ));
    }

    // Peer networking: a Hyperswarm on the peer's identity behind the runtime's seam
    // (see intercom_peer's crate docs, "The network seam").
    // The peer's writer log (its subnet log), created on first run and stable afterwards.
    let writer_log = {
        let kv: Arc<dyn intercom_stores::KvStore> = store.shared_kv();
        let kp = writer_keypair(kv.as_ref())?;
        intercom_log::Log::open_writer(kv, kp).context("opening the peer's writer log")?
    };
    let writer_key = hex::encode(writer_log.key());
    let bootstrap = settings.subnet_bootstrap.unwrap_or(*writer_log.key());
    let mut subnet_config = intercom_subnet::SubnetConfig::new(
        &settings.subnet_channel,
        bootstrap,
        contract,
        keypair.clone(),
    );
    subnet_config.timer = settings.timer.then_some(TIMER_PERIOD);
    subnet_config.firewall_file = args.subnet_firewall_file.clone();
    let subnet = intercom_subnet::start(subnet_config, store.shared_kv(), writer_log)
        .context("starting the subnet plane")?;
    let (discovery, net) = peer_net::bind(
        settings.dht_bootstrap.as_deref(),
        keypair.clone(),
        args.net_limits(),
    )
    .await?;
    let net = net.with_subnet(peer_net::Subnet {
        topic: intercom_subnet::subnet_topic(&settings.subnet_channel),
        handle: subnet.clone(),
    });
    let dht_nodes = net.bootstrap.clone();
    let dht_node = net.dht();
    let observer = crate::metrics_cli::PeerObserver::new(&keypair.public_key);
    let config = PeerConfig {
        sidechannel: settings.sidechannel.clone(),
        ..PeerConfig::default()
    };
    let (handle, runtime_task) = PeerRuntime::spawn(config, keypair.clone(), discovery)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let net_task = net.start(handle.connector());
    // The inbox's sink comes first: a message is stored before any bridge client sees it.
    let inbox = match settings.inbox {
        Some(limits) => {
            let inbox =
                Arc::new(Inbox::open(store.shared_kv(), limits).context("opening the inbox")?);
            handle.add_sink(InboxSink(inbox.clone())).await?;
            Some(inbox)
        }
        None => None,
    };
    let bridge_enabled = settings.bridge.is_some();
    handle
        .add_sink(ConsoleSink::stdout(
            !settings.quiet && !bridge_enabled,
            settings.debug,
        ))
        .await?;

    let extras = settings.sidechannel.channels.clone();
    let info = json!({
        "msbBootstrap": null,
        "msbChannel": null,
        "msbStore": null,
        "msbDhtBootstrap": null,
        "peerStore": store_path.display().to_string(),
        "peerDhtBootstrap": settings.dht_bootstrap,
        "subnetBootstrap": hex::encode(bootstrap),
        "subnetChannel": settings.subnet_channel,
        "peerPubkey": pubkey,
        "peerTracAddress": null,
        "peerWriterKey": writer_key,
        "sidechannelEntry": ENTRY_CHANNEL,
        "sidechannelExtras": extras,
        "peerNetworking": true,
        "contract": subnet.contract().name(),
        "notYetAvailable": ["settlement (MSB)", "trac address"],
    });

    let (exit_tx, mut exit_rx) = watch::channel(false);
    let exit_tx = Arc::new(exit_tx);
    let status_lines = vec![
        format!("Peer store: {}", store_path.display()),
        format!("Peer writer key: {writer_key}"),
    ];
    let on_exit = {
        let tx = exit_tx.clone();
        Box::new(move || {
            let _ = tx.send(true);
        }) as Box<dyn Fn() + Send + Sync>
    };
    let dispatcher = Dispatcher::new(
        handle.clone(),
        CliContext {
            keypair,
            status_lines,
            on_exit: Some(on_exit),
            subnet: Some(subnet.clone()),
        },
    );

    let bridge = match &settings.bridge {
        None => None,
        Some(b) => {
            let mut backend =
                PeerBackend::new(handle.clone(), Some(info.clone())).with_subnet(subnet.clone());
            if let Some(inbox) = &inbox {
                backend = backend.with_inbox(inbox.clone());
            }
            if b.cli {
                // Remote clients: public keys only, /exit only if allowed, @file only under the store.
                backend = backend.with_cli(dispatcher.for_bridge(BridgeCliPolicy {
                    allow_exit: b.cli_exit,
                    file_root: Some(store_path.clone()),
                    max_file_bytes: BRIDGE_MAX_FILE_BYTES,
                }));
            }
            let cfg = BridgeConfig {
                host: b.host.clone(),
                port: b.port,
                token: Some(b.token.clone()),
                require_auth: true,
                cli_enabled: b.cli,
                filter: b.filter.clone(),
                filter_channels: b.filter_channels.clone(),
                allowed_origins: b.origins.clone(),
                info: Some(info.clone()),
                ..BridgeConfig::default()
            };
            let bridge = match Bridge::bind(cfg, observer.backend(backend)).await {
                Ok(bridge) => bridge,
                Err(e) => {
                    handle.shutdown().await;
                    net_task.stop().await;
                    bail!("SC-Bridge failed to start: {e}");
                }
            };
            handle.add_sink(BridgeSink(bridge.publisher())).await?;
            intercom_peer::publish_subnet_events(&subnet, bridge.publisher());
            observer.bridge(bridge.publisher());
            Some(bridge)
        }
    };

    let metrics = observer
        .serve(&args.metrics, &handle, &subnet, dht_node)
        .await?;

    // ----- banner
    let line = "=".repeat(64);
    println!();
    println!("==================== INTERCOM ====================");
    println!("MSB network bootstrap: not yet available (no settlement plane)");
    println!("Peer store: {}", store_path.display());
    if store.is_new() {
        println!("Peer identity: created on first run (kept in the store; never printed unless you run /get_keys)");
    }
    println!("Peer DHT bootstrap nodes: {}", dht_nodes.join(", "));
    let subnet_info = subnet.info().await?;
    println!("Peer subnet bootstrap: {}", hex::encode(bootstrap));
    println!("Peer subnet channel: {}", settings.subnet_channel);
    println!(
        "Subnet contract: {} | role: {} | state root: {}",
        subnet.contract().name(),
        if subnet_info.is_indexer {
            "indexer"
        } else if subnet_info.is_writer {
            "writer"
        } else {
            "reader"
        },
        hex::encode(subnet_info.state_root)
    );
    println!("Peer pubkey (hex): {pubkey}");
    println!("Peer trac address (bech32m): not yet available (no settlement plane)");
    println!("Peer writer key (hex): {writer_key}");
    println!("Sidechannel entry: {ENTRY_CHANNEL}");
    if !settings.sidechannel.channels.is_empty() {
        println!(
            "Sidechannel extras: {}",
            settings.sidechannel.channels.join(", ")
        );
    }
    match (&bridge, &settings.bridge) {
        (Some(br), Some(b)) => println!(
            "SC-Bridge: ws://{}{}",
            br.local_addr(),
            if b.cli { " (CLI mirroring on)" } else { "" }
        ),
        _ => println!("SC-Bridge: off (enable with --sc-bridge 1 --sc-bridge-token-file <path>)"),
    }
    if let Some(m) = &metrics {
        println!("Metrics: http://{}/metrics", m.local_addr());
    }
    println!(
        "Decisions (kept in the store, flags override): {}",
        decisions_summary(&decisions)
    );
    println!("{line}");
    println!();
    println!("Sidechannel: ready");

    // ----- human TTY
    if std::io::stdin().is_terminal() {
        println!("Node started. {}", HELP[0]);
        for l in &HELP[1..] {
            println!("{l}");
        }
        let mut lines = stdin_lines();
        let d = dispatcher.clone();
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                if line.trim().is_empty() {
                    continue;
                }
                let r = d.run(&line).await;
                for l in &r.output {
                    println!("{l}");
                }
            }
        });
    } else if !bridge_enabled {
        crate::logging::note(
            "stdin is not a terminal: slash commands are off (use the SC-Bridge).",
        );
    }

    wait_for_exit(&mut exit_rx).await;
    println!("Exiting...");
    if let Some(bridge) = bridge {
        bridge.shutdown().await;
    }
    handle.shutdown().await;
    let _ = runtime_task.await;
    net_task.stop().await;
    subnet.shutdown().await;
    drop(store);
    Ok(())
}

fn decisions_summary(d: &Decisions) -> String {
    let v = serde_json::to_value(d).unwrap_or(Value::Null);
    let set: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if set.is_empty() {
        "none yet (defaults apply)".into()
    } else {
        set.join(", ")
    }
}

/// Reads stdin lines on a plain thread (a tokio stdin read would keep the runtime from
/// shutting down while it waits for a line).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn wait_for_exit(exit: &mut watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hup = signal(SignalKind::hangup()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            _ = exit.wait_for(|v| *v) => {}
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = exit.wait_for(|v| *v) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn try_parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        T::try_parse_from(std::iter::once("intercom").chain(args.iter().copied())).map(|t| t.run)
    }

    fn parse(args: &[&str]) -> RunArgs {
        try_parse(args).unwrap()
    }

    /// The flag's name and the bad value are in clap's refusal.
    fn refused(args: &[&str], flag: &str) {
        let e = try_parse(args).unwrap_err().to_string();
        assert!(e.contains(flag), "{args:?}: {e}");
    }

    #[test]
    fn sidechannel_max_age_sets_the_freshness_window() {
        let s = parse(&[]).settings().unwrap();
        assert_eq!(s.sidechannel.max_message_age_ms, 120_000);
        let s = parse(&["--sidechannel-max-age", "300"]).settings().unwrap();
        assert_eq!(s.sidechannel.max_message_age_ms, 300_000);
        assert_eq!(s.to_json()["sidechannel"]["maxAgeMs"], 300_000);
        refused(&["--sidechannel-max-age", "0"], "--sidechannel-max-age");
        refused(&["--sidechannel-max-age", "2m"], "--sidechannel-max-age");
    }

    #[test]
    fn defaults_match_the_reference() {
        let s = parse(&[]).settings().unwrap();
        assert_eq!(s.store_name, "peer");
        assert_eq!(s.stores_dir, PathBuf::from("stores"));
        assert_eq!(s.subnet_channel, "trac-peer-subnet");
        let sc = &s.sidechannel;
        assert!(sc.channels.is_empty());
        assert_eq!(sc.max_message_bytes, 1_000_000);
        assert!(sc.allow_remote_open && !sc.auto_join_on_open);
        assert!(sc.pow_enabled && !sc.pow_require_entry);
        assert_eq!(sc.pow_difficulty, 12);
        assert_eq!(
            (
                sc.rate_bytes_per_second,
                sc.rate_burst_bytes,
                sc.max_strikes
            ),
            (64_000, 256_000, 3)
        );
        assert!(!sc.invite_required && sc.welcome_required && !sc.owner_write_only);
        assert_eq!(sc.invite_ttl_ms, 604_800_000);
        assert!(s.bridge.is_none() && !s.quiet && !s.debug);
        assert!(s.unavailable.is_empty());
        assert!(s.dht_bootstrap.is_none());
    }

    #[test]
    fn aliases_and_forms() {
        let s = parse(&[
            "mystore",
            "--sidechannel",
            "a, b,0000intercom",
            "--peer-dht-bootstrap=127.0.0.1:49737,localhost:1",
            "--stores-dir",
            "/tmp/x",
            "--sc-bridge",
            "--sc-bridge-token",
            "3f9c0b7e21d84a6f5c0e9b1a7d2f4e68",
            "--sc-bridge-port=0",
            "--sidechannel-auto-join",
            "--sidechannel-pow",
            "off",
            "--sidechannel-owner",
            "a:ABCD, b=ef",
            "--sidechannel-invite-ttl",
            "60",
        ])
        .settings()
        .unwrap();
        assert_eq!(s.store_name, "mystore");
        assert_eq!(s.stores_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.sidechannel.channels, vec!["a", "b"]);
        assert_eq!(
            s.dht_bootstrap.as_deref(),
            Some(&["127.0.0.1:49737".to_owned(), "localhost:1".to_owned()][..])
        );
        let b = s.bridge.unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.token.as_str(), b.cli),
            ("127.0.0.1", 0, "3f9c0b7e21d84a6f5c0e9b1a7d2f4e68", false)
        );
        assert!(s.sidechannel.auto_join_on_open);
        assert!(!s.sidechannel.pow_enabled);
        assert_eq!(s.sidechannel.owner_keys["a"], "abcd");
        assert_eq!(s.sidechannel.owner_keys["b"], "ef");
        assert_eq!(s.sidechannel.invite_ttl_ms, 60_000);
        assert_eq!(s.decisions.auto_join, Some(true));
        assert_eq!(s.decisions.allow_remote_open, None);
        // --peer-store-name wins over the positional label.
        let s = parse(&["label", "--peer-store-name", "named"])
            .settings()
            .unwrap();
        assert_eq!(s.store_name, "named");
    }

    #[test]
    fn welcome_file_and_errors() {
        let kp = intercom_crypto::KeyPair::from_seed(&[7; 32]);
        let w = intercom_sidechannel::create_welcome(&kp, "room", "hi", 5);
        let b64 = intercom_encoding::base64::encode(w.to_string().as_bytes());
        let dir = std::env::temp_dir().join(format!("intercom-run-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("room.b64");
        std::fs::write(&file, format!("{b64}\n")).unwrap();
        let arg = format!("room:@{},other:{b64}", file.display());
        let s = parse(&["--sidechannel-welcome", &arg]).settings().unwrap();
        assert_eq!(s.sidechannel.welcome_by_channel["room"], w);
        assert_eq!(s.sidechannel.welcome_by_channel["other"], w);
        std::fs::remove_dir_all(&dir).unwrap();

        let bad = parse(&["--sidechannel-welcome", "room:@/nonexistent/w.b64"]).settings();
        assert!(bad.is_err());
        let e = parse(&["--sc-bridge", "1"]).settings().unwrap_err();
        assert!(e.to_string().contains("--sc-bridge-token"), "{e}");
        let e = parse(&["--sc-bridge", "--sc-bridge-token", "0123456789abcde"])
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("15 bytes"), "{e}");
        assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
        let e = parse(&[
            "--sc-bridge",
            "--sc-bridge-token",
            "3f9c0b7e21d84a6f5c0e9b1a7d2f4e68",
            "--sc-bridge-origin",
            "localhost:3000",
        ])
        .settings()
        .unwrap_err();
        assert!(e.to_string().contains("--sc-bridge-origin"), "{e}");
        refused(
            &["--sidechannel-max-bytes", "12k"],
            "--sidechannel-max-bytes",
        );
        refused(&["--subnet-bootstrap", "abc"], "--subnet-bootstrap");
        refused(&["--dht-bootstrap", "nohostport"], "--dht-bootstrap");
        refused(&["--sc-bridge-port", "70000"], "--sc-bridge-port");
        refused(&["--sidechannel-pow", "maybe"], "--sidechannel-pow");
        refused(
            &["--sidechannel-pow-difficulty", "33"],
            "--sidechannel-pow-difficulty",
        );
        let s = parse(&[
            "--subnet-bootstrap",
            &"A".repeat(64),
            "--timer",
            "--msb-store-name",
            "m",
        ])
        .settings()
        .unwrap();
        let flags: Vec<_> = s.unavailable.iter().map(|u| u.0).collect();
        assert_eq!(flags, ["--msb-store-name"]);
        assert_eq!(s.subnet_bootstrap, Some([0xaa; 32]));
    }
}
