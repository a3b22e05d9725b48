//! The subnet's async driver: one task that owns the [`Engine`], the writer logs and
//! their replication, and the peer's own writer log.
//!
//! ```text
//!  SubnetHandle ──commands──> service task ──append──> own writer log (one synced batch)
//!  connections ──attach────>  │  ▲ pokes: any log changed
//!                             │  └─────── SharedReplica per writer log, replicated on
//!                             │           every attached connection (hypercore/alpha)
//!                             ├──> Engine::push (new contiguous blocks) → step → state
//!                             └──> events (subnet_applied) · KV writes (state, position)
//! ```
//!
//! After every wake-up the task reads new contiguous blocks of every log into the engine,
//! applies what got confirmed (persisting state and the confirmed length in one write),
//! starts replicating logs it newly learned of, and appends what is queued: submitted
//! operations and, for indexers, acknowledgements (at most one per `ack_delay`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use intercom_contracts::{Contract, Value};
use intercom_crypto::KeyPair;
use intercom_log::{Log, Replica, ReplicaConfig, SharedReplica};
use intercom_protomux::Mux;
use intercom_stores::KvStore;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::apply::{Members, Outcome};
use crate::engine::{Engine, EngineConfig, Step};
use crate::entry::{bind_message, Body, Entry, Key};
use crate::state::{AppView, ProvedValue, StateStore};
use crate::SubnetError;

/// Submissions waiting for the writer task.
const COMMAND_QUEUE: usize = 4096;
/// Applied-entry events buffered for slow subscribers.
const EVENT_QUEUE: usize = 8192;
/// Remote opens of logs we do not know yet, held per connection.
const HELD_OPENS: usize = 64;
/// Most operations appended in one write.
const MAX_APPEND_BATCH: usize = crate::entry::MAX_BODIES as usize - 1;
/// The protomux protocol joiners send their signed join requests on (channel id: the
/// subnet's swarm topic). One message type, 0: `{writer, author, signature}` in hex.
pub const JOIN_PROTOCOL: &str = "intercom/subnet-join";
/// New operations of other logs the sequencer names in one entry (so in one batch).
const BATCH_OPERATIONS: usize = 4096;
/// Join requests the bootstrap keeps while automatic joins are off.
const MAX_JOIN_REQUESTS: usize = 1024;
/// First wait before reopening a log's replication that ended on a live connection.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between such reopenings.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A replication that stayed up this long resets its connection's backoff for the log.
const RETRY_RESET: Duration = Duration::from_secs(10);

/// How a peer takes part in a subnet.
#[derive(Clone)]
pub struct SubnetConfig {
    /// The subnet channel (`--subnet-channel`).
    pub channel: String,
    /// The bootstrap writer's key (`--subnet-bootstrap`, or our own writer key).
    pub bootstrap: Key,
    /// The contract.
    pub contract: Arc<dyn Contract>,
    /// The peer's identity: the author of what it writes.
    pub identity: KeyPair,
    /// Delay before an indexer acknowledges what it saw (acks are coalesced).
    pub ack_delay: Duration,
    /// Most writer logs followed.
    pub max_writers: usize,
    /// The admin's timer feature period (`--timer 1`), if on.
    pub timer: Option<Duration>,
    /// Test hook (`--subnet-firewall-file`): a file of peer keys (hex, one per line) whose
    /// connections replicate no logs while listed; re-read every 250 ms. Splits a subnet
    /// without touching its connections.
    pub firewall_file: Option<std::path::PathBuf>,
}

impl SubnetConfig {
    /// Defaults for `channel` sequenced by `bootstrap`.
    pub fn new(
        channel: &str,
        bootstrap: Key,
        contract: Arc<dyn Contract>,
        identity: KeyPair,
    ) -> Self {
        SubnetConfig {
            channel: channel.to_owned(),
            bootstrap,
            contract,
            identity,
            ack_delay: Duration::from_millis(5),
            max_writers: 256,
            timer: None,
            firewall_file: None,
        }
    }
}

/// One confirmed entry and what each of its operations did, as published to
/// subscribers (entries that only acknowledge are not published).
#[derive(Debug, Clone)]
pub struct AppliedEvent {
    /// The entry's position in the subnet order.
    pub position: u64,
    /// The writer log that holds it.
    pub writer: Key,
    /// Its position in that log.
    pub seq: u64,
    /// The author's address, when the log is bound.
    pub author: Option<String>,
    /// Its operations in order (index in the entry, type, outcome).
    pub ops: Vec<(u32, String, Outcome)>,
    /// The state root after the step that applied it.
    pub state_root: [u8; 32],
}

/// Where a submitted operation landed in our writer log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's position in our writer log.
    pub seq: u64,
    /// Which body of that entry it is (operations appended together share an entry).
    pub index: u32,
}

/// The outcome of a simulated operation.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// What applying would do.
    pub outcome: Outcome,
    /// The keys it would write (`None` deletes), contract keys without their prefix.
    pub writes: BTreeMap<String, Option<Value>>,
}

/// A snapshot of the subnet for `/stats`, the bridge and the banner.
#[derive(Debug, Clone)]
pub struct SubnetInfo {
    /// The channel.
    pub channel: String,
    /// The bootstrap writer.
    pub bootstrap: Key,
    /// Our writer log.
    pub writer: Key,
    /// Our identity (author address).
    pub address: Key,
    /// The admin's address.
    pub admin: Option<String>,
    /// Writers (bootstrap included), hex.
    pub writers: Vec<String>,
    /// Indexers (bootstrap included), hex.
    pub indexers: Vec<String>,
    /// True if we may write.
    pub is_writer: bool,
    /// True if we are an indexer.
    pub is_indexer: bool,
    /// Entries in the confirmed order.
    pub confirmed_length: u64,
    /// Entries in the tentative order after it.
    pub unconfirmed_length: u64,
    /// Entries held but waiting for what they depend on.
    pub waiting: u64,
    /// Operations read from the logs and held in memory until applied.
    pub held_operations: usize,
    /// Every followed log and its held length.
    pub logs: Vec<(String, u64)>,
    /// The confirmed state root.
    pub state_root: [u8; 32],
    /// Connections the logs replicate on.
    pub connections: usize,
    /// The distinct peers (keys, hex) those connections lead to.
    pub remotes: Vec<String>,
    /// True once the admin enabled transactions.
    pub transactions_enabled: bool,
    /// True when join requests are honoured.
    pub auto_add_writers: bool,
    /// The contract's name.
    pub contract: String,
    /// Our author's state quota.
    pub quota: crate::apply::Quota,
    /// What our author's operations hold.
    pub usage: crate::apply::Quota,
}

impl SubnetInfo {
    /// The JSON shape the CLI and the bridge print.
    pub fn to_json(&self) -> Value {
        json!({
            "channel": self.channel,
            "bootstrap": hex::encode(self.bootstrap),
            "writerKey": hex::encode(self.writer),
            "address": hex::encode(self.address),
            "admin": self.admin,
            "isWriter": self.is_writer,
            "isIndexer": self.is_indexer,
            "writers": self.writers,
            "indexers": self.indexers,
            "confirmedLength": self.confirmed_length,
            "unconfirmedLength": self.unconfirmed_length,
            "waiting": self.waiting,
            "heldOperations": self.held_operations,
            "logs": self.logs.iter().map(|(k, n)| json!({"key": k, "length": n})).collect::<Vec<_>>(),
            "stateRoot": hex::encode(self.state_root),
            "connections": self.connections,
            "remotes": self.remotes,
            "transactionsEnabled": self.transactions_enabled,
            "autoAddWriters": self.auto_add_writers,
            "contract": self.contract,
            "quota": {"keys": self.quota.keys, "bytes": self.quota.bytes},
            "usage": {"keys": self.usage.keys, "bytes": self.usage.bytes},
        })
    }
}

type Reply<T> = oneshot::Sender<Result<T, SubnetError>>;

enum Command {
    Submit(Body, Reply<Receipt>),
    Simulate(Body, Reply<Simulation>),
    Get(String, bool, Reply<(Option<Value>, [u8; 32])>),
    Prove(String, Reply<ProvedValue>),
    Read(String, Value, bool, Reply<Value>),
    Info(Reply<SubnetInfo>),
    Attach(Attachment),
    RemoteOpen(u64, String, Vec<u8>),
    JoinRequest(Key, Key, [u8; 64]),
    ReplicationEnded(u64, Key, u64, Duration),
    RetryReplication(u64, Key, u64),
    Shutdown(oneshot::Sender<()>),
}

/// A connection to replicate the subnet's logs on.
pub struct Attachment {
    /// The remote peer's key.
    pub remote_key: Key,
    /// The connection's mux.
    pub mux: Mux,
    /// True if we dialled.
    pub is_initiator: bool,
    /// The Noise handshake hash (hypercore capabilities are bound to it).
    pub handshake_hash: Vec<u8>,
    /// Remote opens of `hypercore/alpha` channels (with their discovery-key ids) that no
    /// local channel matched: the service opens the log (accepting) when it knows it.
    pub remote_opens: Option<mpsc::Receiver<(String, Vec<u8>)>>,
}

/// A cheap, cloneable handle on the running subnet service.
#[derive(Clone)]
pub struct SubnetHandle {
    cmds: mpsc::Sender<Command>,
    events: broadcast::Sender<AppliedEvent>,
    writer: Key,
    contract: Arc<dyn Contract>,
    counters: Arc<crate::counters::SubnetCounters>,
}

impl std::fmt::Debug for SubnetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubnetHandle")
            .field("writer", &hex::encode(self.writer))
            .finish_non_exhaustive()
    }
}

impl SubnetHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SubnetError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| SubnetError::Stopped)?;
        rx.await.map_err(|_| SubnetError::Stopped)?
    }

    /// Our writer log's key.
    pub fn writer_key(&self) -> Key {
        self.writer
    }

    /// The contract.
    pub fn contract(&self) -> &Arc<dyn Contract> {
        &self.contract
    }

    /// Operations applied and apply-step durations, readable at any time.
    pub fn counters(&self) -> &Arc<crate::counters::SubnetCounters> {
        &self.counters
    }

    /// Appends `body` to our writer log; resolves once it is durable.
    pub async fn submit(&self, body: Body) -> Result<Receipt, SubnetError> {
        self.call(|r| Command::Submit(body, r)).await
    }

    /// Runs `body` against a scratch copy of the tentative state; never appends.
    pub async fn simulate(&self, body: Body) -> Result<Simulation, SubnetError> {
        self.call(|r| Command::Simulate(body, r)).await
    }

    /// A contract key's value, from the confirmed or the tentative state, and the root of
    /// the state it was read from.
    pub async fn get(
        &self,
        key: &str,
        confirmed: bool,
    ) -> Result<(Option<Value>, [u8; 32]), SubnetError> {
        self.call(|r| Command::Get(key.to_owned(), confirmed, r))
            .await
    }

    /// A contract key's confirmed value with a Merkle proof against the confirmed root.
    pub async fn prove(&self, key: &str) -> Result<ProvedValue, SubnetError> {
        self.call(|r| Command::Prove(key.to_owned(), r)).await
    }

    /// Runs one of the contract's read functions.
    pub async fn read(
        &self,
        function: &str,
        args: Value,
        confirmed: bool,
    ) -> Result<Value, SubnetError> {
        self.call(|r| Command::Read(function.to_owned(), args, confirmed, r))
            .await
    }

    /// A snapshot of the subnet.
    pub async fn info(&self) -> Result<SubnetInfo, SubnetError> {
        self.call(Command::Info).await
    }

    /// Replicates the subnet's logs over a new connection.
    pub fn attach(&self, attachment: Attachment) {
        if self.cmds.try_send(Command::Attach(attachment)).is_err() {
            tracing::warn!("subnet service busy; connection not replicated");
        }
    }

    /// Every applied entry from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedEvent> {
        self.events.subscribe()
    }

    /// Stops the service (after finishing the append in progress).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// How writer logs are replicated: blocks no larger than an entry may be.
fn replica_config() -> ReplicaConfig {
    ReplicaConfig {
        max_block_bytes: crate::entry::MAX_ENTRY_BYTES,
        ..ReplicaConfig::default()
    }
}

/// Blocks read from one log per [`ingest`] call: bounds what a peer catching up on a
/// long history holds in memory before the engine applies it.
const INGEST_CHUNK: u64 = 4096;
/// Bytes of blocks read per [`ingest`] call, all logs together.
const INGEST_BYTES: usize = 8 << 20;
/// Operations held in read but unapplied entries above which, of the logs that are not
/// indexers', only what the sequencer's entries name is read: a peer that applies slower
/// than writers write keeps the backlog in the logs, not in memory.
const HELD_OPERATIONS: usize = 16_384;

/// Feeds new contiguous blocks of `logs` into `engine`, at most [`INGEST_CHUNK`] blocks
/// per log and [`INGEST_BYTES`] in all (and, with [`HELD_OPERATIONS`] held, only what
/// the sequencer's newest entry names); returns how many blocks, and whether any log has
/// contiguous blocks left unread.
fn ingest(engine: &mut Engine, logs: &HashMap<Key, SharedReplica>) -> (usize, bool) {
    let mut fed = 0;
    let mut bytes = 0usize;
    let mut left = false;
    // Indexers' logs are always read: their acknowledgements confirm the batches.
    let named: Option<HashMap<Key, u64>> = (engine.held_operations() >= HELD_OPERATIONS)
        .then(|| engine.linearizer().bootstrap_clock().into_iter().collect());
    let indexers = engine.members().indexers(&engine.config().bootstrap);
    for (key, replica) in logs {
        let from = engine.linearizer().pushed(key);
        let limit = match &named {
            Some(named) if !indexers.contains(key) => named.get(key).copied().unwrap_or(0),
            _ => u64::MAX,
        };
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let contiguous = replica.with(|r| {
            let log = r.log();
            let contiguous = log.contiguous_length();
            let end = contiguous.min(limit).min(from + INGEST_CHUNK);
            for i in from..end {
                if bytes >= INGEST_BYTES {
                    break;
                }
                match log.get(i) {
                    Ok(Some(block)) => {
                        bytes += block.len();
                        blocks.push(block);
                    }
                    _ => break,
                }
            }
            contiguous
        });
        left |= from + (blocks.len() as u64) < contiguous;
        for (i, block) in blocks.iter().enumerate() {
            if let Err(e) = engine.push(key, from + i as u64, block) {
                tracing::warn!(writer = %hex::encode(key), error = %e, "subnet entry not taken");
                break;
            }
            fed += 1;
        }
    }
    (fed, left)
}

/// Applies every log held in `kv` from scratch (no network): the `subnet rebuild`
/// command and its benchmark. Returns the engine with the rebuilt state, persisted.
pub fn rebuild(kv: Arc<dyn KvStore>, config: EngineConfig) -> Result<Engine, SubnetError> {
    rebuild_with_progress(kv, config, |_| {})
}

/// How far a [`rebuild_with_progress`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Entries applied in the confirmed order so far.
    pub confirmed: u64,
    /// Entries held over every log opened so far (grows as writers are found).
    pub held: u64,
}

/// [`rebuild`], calling `progress` after every engine step.
pub fn rebuild_with_progress(
    kv: Arc<dyn KvStore>,
    config: EngineConfig,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<Engine, SubnetError> {
    Engine::clear(kv.as_ref())?;
    let mut engine = Engine::open(config, kv.clone())?;
    let mut logs: HashMap<Key, SharedReplica> = HashMap::new();
    loop {
        let mut opened = false;
        for key in followed(&engine) {
            if logs.contains_key(&key) {
                continue;
            }
            let log = Log::open(kv.clone(), key)?;
            logs.insert(
                key,
                SharedReplica::new(Replica::new(log, ReplicaConfig::default())),
            );
            opened = true;
        }
        let (fed, _) = ingest(&mut engine, &logs);
        let step = engine.step()?;
        progress(RebuildProgress {
            confirmed: engine.linearizer().confirmed_len(),
            held: logs
                .values()
                .map(|r| r.with(|r| r.log().contiguous_length()))
                .sum(),
        });
        if fed == 0 && !opened && !step.more && step.applied.is_empty() {
            return Ok(engine);
        }
    }
}

/// Writer keys in the confirmed state (bootstrap excluded).
fn writers_of(state: &StateStore) -> Vec<Key> {
    const PREFIX: &str = "subnet/writer/";
    state
        .membership()
        .range(PREFIX.to_owned()..)
        .take_while(|(k, _)| k.starts_with(PREFIX))
        .filter_map(|(k, _)| crate::apply::parse_key(&k[PREFIX.len()..]))
        .collect()
}

/// The logs a peer reads: every writer in the confirmed state, and every log the entries
/// read so far depend on (see [`Service::update_follows`] for how far).
fn followed(engine: &Engine) -> Vec<Key> {
    let mut keys: Vec<Key> = engine
        .linearizer()
        .needed_lengths()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, _)| k)
        .collect();
    keys.push(engine.config().bootstrap);
    keys.extend(writers_of(engine.state()));
    keys.sort_unstable();
    keys.dedup();
    keys
}

struct Conn {
    remote: Key,
    /// Ends this connection's replications when set (firewall).
    stop: tokio::sync::watch::Sender<bool>,
    /// Bumped whenever the firewall cuts the connection off.
    generation: u64,
    mux: Mux,
    is_initiator: bool,
    hash: Vec<u8>,
    /// Logs with a replication running on this connection.
    active: HashSet<Key>,
    /// Discovery keys of the peer's opens we have not answered yet: logs we do not follow
    /// (yet), or whose replication was ending when the open came. Oldest first.
    held: Vec<Vec<u8>>,
    /// Per log: the wait before reopening a replication that ended while the connection
    /// stayed up (doubles up to [`RETRY_MAX`], reset by a replication that lasted).
    backoff: HashMap<Key, Duration>,
}

struct Pending {
    body: Body,
    reply: Option<Reply<Receipt>>,
}

struct Service {
    config: SubnetConfig,
    kv: Arc<dyn KvStore>,
    engine: Engine,
    own: SharedReplica,
    own_key: Key,
    logs: HashMap<Key, SharedReplica>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    cmds_tx: mpsc::Sender<Command>,
    poke_tx: mpsc::Sender<()>,
    events: broadcast::Sender<AppliedEvent>,
    pending: Vec<Pending>,
    /// Heads our log has declared so far.
    declared: HashMap<Key, u64>,
    ack_at: Option<Instant>,
    last_ack: Option<Instant>,
    /// Peers the firewall hook cuts off.
    blocked: HashSet<Key>,
    /// Verified join requests received (bootstrap only appends them, once auto-add is on).
    join_requests: HashMap<Key, (Key, [u8; 64])>,
    /// Join requests already appended.
    joins_appended: HashSet<Key>,
    /// The download limit set on each followed log.
    limits: HashMap<Key, Option<u64>>,
    /// Set once the engine failed (the store under it): nothing more is applied.
    failed: bool,
    counters: Arc<crate::counters::SubnetCounters>,
}

/// Starts the subnet service with our writer log `own` (opened writable on `kv`).
pub fn start(
    config: SubnetConfig,
    kv: Arc<dyn KvStore>,
    own: Log,
) -> Result<SubnetHandle, SubnetError> {
    let engine_config = EngineConfig {
        channel: config.channel.clone(),
        bootstrap: config.bootstrap,
        contract: config.contract.clone(),
        max_writers: config.max_writers,
    };
    let engine = Engine::open(engine_config.clone(), kv.clone())?;
    let own_key = *own.key();
    let own = SharedReplica::new(Replica::new(own, replica_config()));
    let (cmds_tx, cmds_rx) = mpsc::channel(COMMAND_QUEUE);
    let (poke_tx, poke_rx) = mpsc::channel(1);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let counters = Arc::new(crate::counters::SubnetCounters::default());
    let handle = SubnetHandle {
        cmds: cmds_tx.clone(),
        events: events.clone(),
        writer: own_key,
        contract: config.contract.clone(),
        counters: counters.clone(),
    };
    let mut service = Service {
        config,
        kv,
        engine,
        own: own.clone(),
        own_key,
        logs: HashMap::new(),
        conns: HashMap::new(),
        next_conn: 1,
        cmds_tx,
        poke_tx,
        events,
        pending: Vec::new(),
        declared: HashMap::new(),
        ack_at: None,
        last_ack: None,
        blocked: HashSet::new(),
        join_requests: HashMap::new(),
        joins_appended: HashSet::new(),
        limits: HashMap::new(),
        failed: false,
        counters,
    };
    service.follow(own_key, own);
    let bootstrap = service.config.bootstrap;
    service.ensure_log(bootstrap, None)?;
    service.update_follows();
    tokio::spawn(service.run(cmds_rx, poke_rx));
    Ok(handle)
}

impl Service {
    fn follow(&mut self, key: Key, replica: SharedReplica) {
        let mut changes = replica.subscribe();
        let poke = self.poke_tx.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if poke.is_closed() {
                    return;
                }
                let _ = poke.try_send(());
            }
        });
        self.logs.insert(key, replica.clone());
        for (&id, conn) in self.conns.iter_mut() {
            spawn_replication(&self.cmds_tx, id, conn, key, &replica);
        }
    }

    /// Follows `key`'s log (downloading up to `limit` blocks, all for `None`) unless it
    /// is followed already or the cap on followed logs is reached.
    fn ensure_log(&mut self, key: Key, limit: Option<u64>) -> Result<(), SubnetError> {
        if self.logs.contains_key(&key) || self.logs.len() >= self.config.max_writers {
            return Ok(());
        }
        let log = Log::open(self.kv.clone(), key)?;
        let replica = SharedReplica::new(Replica::new(log, replica_config()));
        replica.set_download_limit(limit);
        self.limits.insert(key, limit);
        self.follow(key, replica);
        Ok(())
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, mut pokes: mpsc::Receiver<()>) {
        let mut timer = self
            .config
            .timer
            .map(|p| tokio::time::interval_at(Instant::now() + p, p));
        let firewall_period = Duration::from_millis(250);
        let mut firewall = self
            .config
            .firewall_file
            .as_ref()
            .map(|_| tokio::time::interval(firewall_period));
        loop {
            let ack_at = self.ack_at;
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.work();
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => {
                        self.on_command(cmd);
                        // Take whatever else is queued before working (batches appends).
                        while let Ok(cmd) = cmds.try_recv() {
                            if let Command::Shutdown(done) = cmd {
                                self.work();
                                let _ = done.send(());
                                return;
                            }
                            self.on_command(cmd);
                            if self.pending.len() >= MAX_APPEND_BATCH {
                                break;
                            }
                        }
                    }
                    None => return,
                },
                Some(()) = pokes.recv() => {}
                _ = sleep_until(ack_at), if ack_at.is_some() => {
                    self.ack_at = None;
                    self.ack_due();
                }
                _ = tick(&mut timer), if timer.is_some() => self.timer_tick(),
                _ = tick(&mut firewall), if firewall.is_some() => self.firewall_tick(),
            }
            self.work();
        }
    }

    fn work(&mut self) {
        self.apply_new();
        self.admit_joiners();
        self.schedule_ack();
        if self.flush() {
            // Take our own entries in before the next command: a client that heard its
            // append acknowledged must find it in the (tentative) state.
            self.apply_new();
        }
    }

    /// Takes in new blocks of every log, applies what got confirmed (persisting it and
    /// publishing events) and follows newly known writer logs.
    fn apply_new(&mut self) {
        let (_, left) = ingest(&mut self.engine, &self.logs);
        let started = std::time::Instant::now();
        let step = match self.engine.step() {
            Ok(step) => step,
            Err(e) => {
                if !self.failed {
                    tracing::error!(error = %e, "the subnet stopped applying entries; restart the peer");
                    self.failed = true;
                }
                return;
            }
        };
        // Blocks left unread are read at once unless enough is held already (then applying
        // it, on the next log change or acknowledgement, makes room).
        let more = step.more || (left && self.engine.held_operations() < HELD_OPERATIONS);
        if !step.applied.is_empty() {
            self.counters.step(started.elapsed());
            for a in &step.applied {
                self.counters.applied(&a.kind, a.outcome.label());
            }
            self.publish_step(step);
        }
        self.update_follows();
        // A backlog (a restart, a peer catching up) is applied a bounded step at a time,
        // with commands and other wake-ups served in between.
        if more {
            let _ = self.poke_tx.try_send(());
        }
    }

    fn publish_step(&self, step: Step) {
        let root = self.engine.root();
        let mut current: Option<AppliedEvent> = None;
        for a in step.applied {
            if current.as_ref().is_some_and(|c| c.position != a.position) {
                self.publish(current.take());
            }
            let event = current.get_or_insert_with(|| AppliedEvent {
                position: a.position,
                writer: a.writer,
                seq: a.seq,
                author: a.author.clone(),
                ops: Vec::new(),
                state_root: root,
            });
            event.ops.push((a.index, a.kind, a.outcome));
        }
        self.publish(current);
    }

    /// Opens the logs to follow and sets how far each is downloaded: members (the
    /// bootstrap, our own log and every writer of the confirmed state) entirely; any
    /// other log only as far as the entries already read depend on it. So a removed
    /// writer is read up to what members named before its removal, and its later blocks
    /// are neither requested nor stored; keys that appear only in non-members' heads are
    /// never read.
    fn update_follows(&mut self) {
        let mut limits: HashMap<Key, Option<u64>> = self
            .engine
            .linearizer()
            .needed_lengths()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k, Some(n)))
            .collect();
        for key in self.logs.keys() {
            limits.entry(*key).or_insert(Some(0));
        }
        limits.insert(self.config.bootstrap, None);
        limits.insert(self.own_key, None);
        for key in writers_of(self.engine.state()) {
            limits.insert(key, None);
        }
        let mut keys: Vec<(Key, Option<u64>)> = limits.into_iter().collect();
        // Members first, so the cap on followed logs never crowds out a member.
        keys.sort_by_key(|(k, limit)| (limit.is_some(), *k));
        for (key, limit) in keys {
            if let Err(e) = self.ensure_log(key, limit) {
                tracing::warn!(error = %e, "opening a writer log failed");
                continue;
            }
            let Some(replica) = self.logs.get(&key) else {
                continue;
            };
            if self.limits.get(&key) != Some(&limit) {
                replica.set_download_limit(limit);
                self.limits.insert(key, limit);
            }
        }
    }

    /// The bootstrap appends the join requests it holds once automatic joins are on.
    fn admit_joiners(&mut self) {
        if self.own_key != self.config.bootstrap || self.join_requests.is_empty() {
            return;
        }
        let members = Members(self.engine.state());
        if !members.auto_add_writers() {
            return;
        }
        let bootstrap = self.config.bootstrap;
        let due: Vec<(Key, Key, [u8; 64])> = self
            .join_requests
            .iter()
            .filter(|(w, _)| !members.is_writer(&bootstrap, w) && !self.joins_appended.contains(*w))
            .map(|(w, (a, s))| (*w, *a, *s))
            .collect();
        for (writer, author, signature) in due {
            self.joins_appended.insert(writer);
            self.pending.push(Pending {
                body: Body::Membership(crate::entry::Membership::JoinRequest {
                    writer,
                    author,
                    signature,
                }),
                reply: None,
            });
        }
    }

    fn publish(&self, event: Option<AppliedEvent>) {
        if let Some(e) = event.filter(|e| e.ops.iter().any(|(_, kind, _)| kind != "ack")) {
            let _ = self.events.send(e);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(body, reply) => match self.precheck(&body) {
                Ok(()) => self.pending.push(Pending {
                    body,
                    reply: Some(reply),
                }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Simulate(body, reply) => {
                let (outcome, writes) = self.engine.simulate(
                    &self.own_key,
                    &self.config.identity.public_key,
                    &body,
                    now_ms(),
                );
                let writes = writes
                    .into_iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix(crate::state::APP_PREFIX)
                            .map(|k| (k.to_owned(), v))
                    })
                    .collect();
                let _ = reply.send(Ok(Simulation { outcome, writes }));
            }
            Command::Get(key, confirmed, reply) => {
                let full = format!("{}{key}", crate::state::APP_PREFIX);
                let _ = reply.send(self.engine.read(&full, confirmed));
            }
            Command::Prove(key, reply) => {
                let full = format!("{}{key}", crate::state::APP_PREFIX);
                let _ = reply.send(self.engine.prove(&full));
            }
            Command::Read(function, args, confirmed, reply) => {
                let result = if confirmed {
                    let view = AppView::new(self.engine.state());
                    self.config.contract.read(&function, &args, &view)
                } else {
                    let tentative = self.engine.tentative_state();
                    let view = AppView::new(&tentative);
                    self.config.contract.read(&function, &args, &view)
                };
                let _ = reply.send(result.map_err(SubnetError::Contract));
            }
            Command::Info(reply) => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::Attach(a) => self.attach(a),
            Command::RemoteOpen(conn, protocol, id) => {
                if protocol != JOIN_PROTOCOL {
                    self.on_remote_open(conn, id);
                }
            }
            Command::JoinRequest(writer, author, signature) => {
                let message = crate::entry::join_message(&self.config.channel, &writer);
                let valid = intercom_crypto::verify(&signature, &message, &author);
                if valid && self.join_requests.len() < MAX_JOIN_REQUESTS {
                    self.join_requests
                        .entry(writer)
                        .or_insert((author, signature));
                }
            }
            Command::ReplicationEnded(conn, key, generation, lasted) => {
                self.on_replication_ended(conn, key, generation, lasted)
            }
            Command::RetryReplication(conn_id, key, generation) => {
                let (Some(conn), Some(replica)) =
                    (self.conns.get_mut(&conn_id), self.logs.get(&key))
                else {
                    return;
                };
                if conn.generation == generation {
                    spawn_replication(&self.cmds_tx, conn_id, conn, key, replica);
                }
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Refuses early what could never apply from us, with a clear reason. The confirmed
    /// state answers the common case at no cost; only when it says no is the tentative
    /// state (which may already admit us) computed.
    fn precheck(&self, body: &Body) -> Result<(), SubnetError> {
        let bootstrap = &self.config.bootstrap;
        let allowed = |members: &Members<'_>| {
            if !members.is_writer(bootstrap, &self.own_key) {
                return Err(SubnetError::NotWriter(hex::encode(self.own_key)));
            }
            match body {
                Body::Transaction(_) if !members.transactions_enabled() => {
                    Err(SubnetError::TransactionsDisabled)
                }
                _ => Ok(()),
            }
        };
        if allowed(&Members(self.engine.state())).is_ok() {
            return Ok(());
        }
        allowed(&Members(&self.engine.tentative_state()))
    }

    fn info(&mut self) -> SubnetInfo {
        let bootstrap = self.config.bootstrap;
        let root = self.engine.root();
        let lin = self.engine.linearizer();
        let members = Members(self.engine.state());
        let address = hex::encode(self.config.identity.public_key);
        let mut writers = vec![hex::encode(bootstrap)];
        writers.extend(writers_of(self.engine.state()).iter().map(hex::encode));
        SubnetInfo {
            channel: self.config.channel.clone(),
            bootstrap,
            writer: self.own_key,
            address: self.config.identity.public_key,
            admin: members.admin(),
            writers,
            indexers: members
                .indexers(&bootstrap)
                .iter()
                .map(hex::encode)
                .collect(),
            is_writer: members.is_writer(&bootstrap, &self.own_key),
            is_indexer: members.is_indexer(&bootstrap, &self.own_key),
            confirmed_length: lin.confirmed_len(),
            unconfirmed_length: lin.unconfirmed_len(),
            waiting: lin.waiting(),
            held_operations: self.engine.held_operations(),
            logs: self
                .logs
                .iter()
                .map(|(k, r)| (hex::encode(k), r.with(|r| r.log().contiguous_length())))
                .collect(),
            state_root: root,
            connections: self.conns.values().filter(|c| !c.mux.is_closed()).count(),
            remotes: {
                let mut r: Vec<String> = self
                    .conns
                    .values()
                    .filter(|c| !c.mux.is_closed())
                    .map(|c| hex::encode(c.remote))
                    .collect();
                r.sort();
                r.dedup();
                r
            },
            transactions_enabled: members.transactions_enabled(),
            auto_add_writers: members.auto_add_writers(),
            contract: self.config.contract.name().to_owned(),
            quota: members.quota(&address),
            usage: members.usage(&address),
        }
    }

    /// Re-reads the firewall file; cuts off newly listed peers and resumes the others.
    fn firewall_tick(&mut self) {
        let Some(path) = &self.config.firewall_file else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let blocked: HashSet<Key> = text.lines().filter_map(crate::apply::parse_key).collect();
        if blocked == self.blocked {
            return;
        }
        self.blocked = blocked;
        for (&id, conn) in self.conns.iter_mut() {
            let now_blocked = self.blocked.contains(&conn.remote);
            if now_blocked && !*conn.stop.borrow() {
                conn.stop.send_replace(true);
                conn.active.clear();
                conn.generation += 1;
            } else if !now_blocked && *conn.stop.borrow() {
                conn.stop = tokio::sync::watch::channel(false).0;
                for (key, replica) in &self.logs {
                    spawn_replication(&self.cmds_tx, id, conn, *key, replica);
                }
            }
        }
    }

    fn attach(&mut self, a: Attachment) {
        self.conns.retain(|_, c| !c.mux.is_closed());
        let id = self.next_conn;
        self.next_conn += 1;
        let mut conn = Conn {
            remote: a.remote_key,
            stop: tokio::sync::watch::channel(self.blocked.contains(&a.remote_key)).0,
            generation: 0,
            mux: a.mux,
            is_initiator: a.is_initiator,
            hash: a.handshake_hash,
            active: HashSet::new(),
            held: Vec::new(),
            backoff: HashMap::new(),
        };
        for (key, replica) in &self.logs {
            spawn_replication(&self.cmds_tx, id, &mut conn, *key, replica);
        }
        self.spawn_join_channel(&conn);
        if let Some(mut opens) = a.remote_opens {
            let cmds = self.cmds_tx.clone();
            let mux = conn.mux.clone();
            tokio::spawn(async move {
                // Every log channel the peer opens is reported to us and held until we
                // answer it (JS corestore's `pair` on hypercore/alpha), however late we
                // learn of the log: a writer admitted minutes after it connected opens no
                // channel again, so its earlier open must still be there to accept.
                // Opens that came before this call are claimed by it.
                if mux
                    .pair(intercom_log::replicate::PROTOCOL, None)
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some((protocol, channel_id)) = opens.recv().await {
                    if cmds
                        .send(Command::RemoteOpen(id, protocol, channel_id))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        self.conns.insert(id, conn);
    }

    /// Opens the join channel on a connection: non-writers send their signed request on
    /// it; what arrives goes to the service (which only the bootstrap acts on).
    fn spawn_join_channel(&self, conn: &Conn) {
        let mux = conn.mux.clone();
        let cmds = self.cmds_tx.clone();
        let topic = subnet_topic(&self.config.channel);
        let request = (!Members(self.engine.state())
            .is_writer(&self.config.bootstrap, &self.own_key))
        .then(|| {
            let message = crate::entry::join_message(&self.config.channel, &self.own_key);
            json!({
                "writer": hex::encode(self.own_key),
                "author": hex::encode(self.config.identity.public_key),
                "signature": hex::encode(self.config.identity.sign(&message)),
            })
            .to_string()
        });
        tokio::spawn(async move {
            let options =
                intercom_protomux::ChannelOptions::new(JOIN_PROTOCOL).with_id(topic.to_vec());
            let Ok(mut channel) = mux.open_channel(options).await else {
                return;
            };
            let mut sent = false;
            while let Some(event) = channel.recv().await {
                match event {
                    intercom_protomux::ChannelEvent::Opened { .. } => {
                        if let (Some(r), false) = (&request, sent) {
                            sent = true;
                            let _ = channel.send(0, r.as_bytes()).await;
                        }
                    }
                    intercom_protomux::ChannelEvent::Message {
                        message_type: 0,
                        payload,
                    } => {
                        if let Some((w, a, sig)) = parse_join_request(&payload) {
                            if cmds.send(Command::JoinRequest(w, a, sig)).await.is_err() {
                                return;
                            }
                        }
                    }
                    intercom_protomux::ChannelEvent::Message { .. } => {}
                    intercom_protomux::ChannelEvent::Closed { .. } => return,
                }
            }
        });
    }

    /// The peer opened a log channel nothing local was waiting for: accept it when we
    /// follow that log (and no replication of it is running here), hold it otherwise.
    fn on_remote_open(&mut self, conn_id: u64, channel_id: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let known = self
            .logs
            .iter()
            .find(|(_, r)| r.with(|r| r.log().discovery_key().as_slice() == channel_id.as_slice()));
        if let Some((key, replica)) = known {
            if *conn.stop.borrow() {
                let mux = conn.mux.clone();
                tokio::spawn(async move {
                    let _ = mux
                        .reject(intercom_log::replicate::PROTOCOL, Some(&channel_id))
                        .await;
                });
                return;
            }
            if !conn.active.contains(key) {
                spawn_replication(&self.cmds_tx, conn_id, conn, *key, replica);
                return;
            }
            // Our replication of this log on this connection is ending (its channel
            // closed before the peer's new open reached it): answered when it has ended.
        }
        if conn.held.contains(&channel_id) {
            return;
        }
        conn.held.push(channel_id);
        if conn.held.len() > HELD_OPENS {
            let dropped = conn.held.remove(0);
            let mux = conn.mux.clone();
            tokio::spawn(async move {
                let _ = mux
                    .reject(intercom_log::replicate::PROTOCOL, Some(&dropped))
                    .await;
            });
        }
    }

    /// A log's replication on a connection ended. While the connection lives and we still
    /// follow the log, it is reopened: at once when the peer's open is waiting, otherwise
    /// after a backoff (the peer may have refused it for now, or a local error stopped it).
    fn on_replication_ended(&mut self, conn_id: u64, key: Key, generation: u64, lasted: Duration) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if conn.mux.is_closed() {
            self.conns.remove(&conn_id);
            return;
        }
        if conn.generation != generation {
            return;
        }
        conn.active.remove(&key);
        let Some(replica) = self.logs.get(&key) else {
            return;
        };
        if *conn.stop.borrow() {
            return;
        }
        let dk = replica.with(|r| *r.log().discovery_key());
        if conn.held.iter().any(|h| h.as_slice() == dk.as_slice()) {
            spawn_replication(&self.cmds_tx, conn_id, conn, key, replica);
            return;
        }
        let wait = match conn.backoff.get(&key) {
            Some(previous) if lasted < RETRY_RESET => (*previous * 2).min(RETRY_MAX),
            _ => RETRY_MIN,
        };
        conn.backoff.insert(key, wait);
        let cmds = self.cmds_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = cmds
                .send(Command::RetryReplication(conn_id, key, generation))
                .await;
        });
    }

    fn is_indexer(&self) -> bool {
        Members(self.engine.state()).is_indexer(&self.config.bootstrap, &self.own_key)
    }

    /// Whether we have seen something an acknowledgement should carry: for the
    /// sequencer, new non-ack entries of other members (so they get sequenced); for other
    /// indexers, new bootstrap entries (so their batches get confirmed). Acks never
    /// answer acks, so indexers do not ping-pong.
    fn ack_needed(&self) -> bool {
        if !self.is_indexer() {
            return false;
        }
        let bootstrap = self.config.bootstrap;
        let sequencer = self.own_key == bootstrap;
        self.new_heads().iter().any(|(k, _)| {
            if sequencer {
                self.engine.substantive(k) > self.declared.get(k).copied().unwrap_or(0)
            } else {
                *k == bootstrap
            }
        })
    }

    fn schedule_ack(&mut self) {
        if self.ack_at.is_some() || !self.pending.is_empty() || !self.ack_needed() {
            return;
        }
        let earliest = Instant::now() + self.config.ack_delay;
        let spaced = self
            .last_ack
            .map_or(earliest, |t| t + self.config.ack_delay);
        self.ack_at = Some(earliest.max(spaced));
    }

    fn ack_due(&mut self) {
        if self.pending.is_empty() && self.ack_needed() {
            self.pending.push(Pending {
                body: Body::Ack,
                reply: None,
            });
            self.last_ack = Some(Instant::now());
        }
    }

    fn timer_tick(&mut self) {
        let members = Members(self.engine.state());
        let me = hex::encode(self.config.identity.public_key);
        if members.admin().as_deref() == Some(me.as_str())
            && self.config.contract.features().contains(&"timer")
        {
            self.pending.push(Pending {
                body: Body::Feature {
                    name: "timer".into(),
                    data: json!({"key": "currentTime", "value": now_ms()}),
                },
                reply: None,
            });
        }
    }

    /// Appends everything queued in one synced write: as one entry (one block, one
    /// signature), or a few when more is queued than an entry may carry.
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let pending: Vec<Pending> = std::mem::take(&mut self.pending);
        let own_length = self.own.with(|r| r.log().length());
        let mut bodies: Vec<Body> = Vec::with_capacity(pending.len() + 1);
        if own_length == 0 {
            let message = bind_message(&self.config.channel, &self.own_key);
            bodies.push(Body::Bind {
                author: self.config.identity.public_key,
                signature: self.config.identity.sign(&message),
            });
        }
        bodies.extend(pending.iter().map(|p| p.body.clone()));
        let heads = self.new_heads();
        let packed = Entry::pack(now_ms(), &heads, &bodies);
        // Where each body lands: (entry offset, index in that entry).
        let places: Vec<(u64, u32)> = packed
            .iter()
            .enumerate()
            .flat_map(|(entry, (_, n))| (0..*n).map(move |i| (entry as u64, i as u32)))
            .collect();
        let blocks: Vec<Vec<u8>> = packed.into_iter().map(|(b, _)| b).collect();
        let first_op = places.len() - pending.len();
        match self.own.append(&blocks) {
            Ok(_) => {
                for (k, n) in heads {
                    self.declared.insert(k, n);
                }
                for (p, (offset, index)) in pending.into_iter().zip(&places[first_op..]) {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Ok(Receipt {
                            seq: own_length + offset,
                            index: *index,
                        }));
                    }
                }
                true
            }
            Err(e) => {
                let message = e.to_string();
                for p in pending {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(SubnetError::Append(message.clone())));
                    }
                }
                false
            }
        }
    }

    /// Lengths of member logs we have seen and not declared yet.
    ///
    /// The sequencer names at most about [`BATCH_OPERATIONS`] new operations per entry
    /// (at least one entry of one log, so it always progresses): each of its entries closes
    /// a batch of what it names, and every peer applies a batch in one step, so this bounds
    /// what a peer holds while applying. What it leaves out it names in its next entry.
    fn new_heads(&self) -> Vec<(Key, u64)> {
        let members = Members(self.engine.state());
        let bootstrap = self.config.bootstrap;
        let mut heads: Vec<(Key, u64)> = self
            .engine
            .linearizer()
            .ready_lengths()
            .into_iter()
            .filter(|(k, n)| {
                *k != self.own_key
                    && *n > self.declared.get(k).copied().unwrap_or(0)
                    && members.is_writer(&bootstrap, k)
            })
            .collect();
        if self.own_key != bootstrap {
            return heads;
        }
        let mut budget = BATCH_OPERATIONS;
        heads.retain_mut(|(key, ready)| {
            let from = self.declared.get(key).copied().unwrap_or(0);
            let mut end = from;
            for ops in self.engine.operations_in(key, from, *ready) {
                if ops > budget && end > from {
                    break;
                }
                budget = budget.saturating_sub(ops.max(1));
                end += 1;
                if budget == 0 {
                    break;
                }
            }
            *ready = end;
            end > from
        });
        heads
    }
}

fn spawn_replication(
    cmds: &mpsc::Sender<Command>,
    id: u64,
    conn: &mut Conn,
    key: Key,
    replica: &SharedReplica,
) {
    if conn.mux.is_closed() || *conn.stop.borrow() || !conn.active.insert(key) {
        return;
    }
    let mut stop = conn.stop.subscribe();
    let generation = conn.generation;
    let dk = replica.with(|r| *r.log().discovery_key());
    conn.held.retain(|h| h.as_slice() != dk.as_slice());
    let (replica, mux, hash, init) = (
        replica.clone(),
        conn.mux.clone(),
        conn.hash.clone(),
        conn.is_initiator,
    );
    let cmds = cmds.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let started = Instant::now();
        replica.replicate_until(mux, init, &hash, stopped).await;
        let _ = cmds
            .send(Command::ReplicationEnded(
                id,
                key,
                generation,
                started.elapsed(),
            ))
            .await;
    });
}

/// The subnet's swarm topic, also the join channel's id: the channel's bytes repeated
/// over 32 bytes (trac-peer's `b4a.alloc(32).fill(channel)`).
pub fn subnet_topic(channel: &str) -> [u8; 32] {
    let mut id = [0u8; 32];
    let bytes = channel.as_bytes();
    if !bytes.is_empty() {
        for (i, b) in id.iter_mut().enumerate() {
            *b = bytes[i % bytes.len()];
        }
    }
    id
}

/// A join request as a joiner sends it (at most 1 KB of JSON with three hex fields).
fn parse_join_request(payload: &[u8]) -> Option<(Key, Key, [u8; 64])> {
    if payload.len() > 1024 {
        return None;
    }
    let v: Value = serde_json::from_slice(payload).ok()?;
    let writer = crate::apply::parse_key(v["writer"].as_str()?)?;
    let author = crate::apply::parse_key(v["author"].as_str()?)?;
    let signature: [u8; 64] = hex::decode(v["signature"].as_str()?)
        .ok()?
        .try_into()
        .ok()?;
    Some((writer, author, signature))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
