//! The sans-io dht-rpc node: `index.js` and `lib/io.js` of the JS module as a state
//! machine with an explicit clock.
//!
//! Feed it datagrams ([`DhtNode::handle_datagram`]) and timer expiries
//! ([`DhtNode::handle_timeout`]); drain what it wants sent ([`DhtNode::poll_transmit`]),
//! when it next wants to be woken ([`DhtNode::poll_timeout`]) and what happened
//! ([`DhtNode::poll_event`]). It owns no socket and never reads the system clock, so a
//! whole network of nodes can be stepped in virtual time.
//!
//! Per node there are two sockets, as in io.js: the *client* socket sends requests while
//! we are firewalled, the *server* socket once we know it is reachable; our id is only
//! put in messages sent from the server socket after we became persistent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use crate::commands::{DELAYED_PING, DOWN_HINT, FIND_NODE, PING, PING_NAT};
use crate::congestion::{CongestionWindow, DEFAULT_MAX_WINDOW};
use crate::errors::{INVALID_TOKEN, UNKNOWN_COMMAND};
use crate::health::{Health, NetworkHealth};
use crate::messages::{self, node_id, validate_id, NodeId, Request, Response};
use crate::nat::NatSampler;
use crate::query::{Candidate, Query, QueryAction, QueryEnv};
use crate::rng::Rng;
use crate::routing::{AddOutcome, RoutingTable};

/// Milliseconds between ticks.
pub const TICK_INTERVAL: u64 = 5000;
/// Milliseconds between congestion drains (and token secret rotation steps).
pub const DRAIN_INTERVAL: u64 = 750;
/// A tick this late means the machine slept.
pub const SLEEPING_INTERVAL: u64 = 3 * TICK_INTERVAL;
/// Ticks without trouble before an adaptive node tests whether it can be persistent.
pub const STABLE_TICKS: i64 = 240;
/// Ticks before re-testing the same network.
pub const MORE_STABLE_TICKS: i64 = 3 * STABLE_TICKS;
/// Ticks between background refreshes when idle.
pub const REFRESH_TICKS: i64 = 60;
/// A node heard from within this many ticks is recent.
pub const RECENT_NODE: u64 = 12;
/// A node known for this many ticks is old.
pub const OLD_NODE: u64 = 360;
/// Per-send timeout of a request.
pub const DEFAULT_TIMEOUT: u64 = 1000;
/// Default retries of a request (so up to four sends).
pub const DEFAULT_RETRIES: u32 = 3;
/// Default retries of a query visit.
pub const QUERY_RETRIES: u32 = 5;
/// Default query concurrency.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// Default bound on requests in flight (sent or queued).
pub const DEFAULT_MAX_INFLIGHT: usize = 8192;
/// Most concurrent queries.
pub const MAX_QUERIES: usize = 1024;
/// Most queued events (progress events are dropped beyond it, completions never).
pub const MAX_EVENTS: usize = 16384;
/// Most queued datagrams to send (more are dropped, like a full socket buffer).
pub const MAX_TRANSMITS: usize = 16384;
/// Most DELAYED_PING replies waiting for their time.
pub const MAX_DELAYED_PINGS: usize = 1024;
const MAX_CHECK_HOSTS: usize = 64;
const DOWN_HINT_CHECK_LIMIT: u32 = 10;

/// Which socket a datagram came in on or goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// The client socket (requests go out here while firewalled).
    Client,
    /// The server socket (the address persistent nodes are known by).
    Server,
    /// A socket owned by the layer above (HyperDHT's holepunch socket pool), by its tag.
    Other(u32),
}

/// A remote node: its address and, when it announced a valid one, its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// UDP address.
    pub addr: SocketAddrV4,
    /// Node id (only for persistent nodes whose id matches their address).
    pub id: Option<NodeId>,
}

/// A response to one of our requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Who answered.
    pub from: Peer,
    /// Our address as the responder saw it.
    pub to: SocketAddrV4,
    /// The socket the response arrived on.
    pub socket: SocketKind,
    /// Transaction id.
    pub tid: u16,
    /// Milliseconds since the request was created.
    pub rtt_ms: u64,
    /// Token to send back in a later request to this node.
    pub token: Option<[u8; 32]>,
    /// Nodes closer to the target.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code (0 = ok).
    pub error: u64,
    /// Payload.
    pub value: Option<Vec<u8>>,
}

/// A user-command request the layer above must answer with [`DhtNode::reply`] or
/// [`DhtNode::error_reply`] (or ignore, letting the requester time out). It carries
/// everything needed to answer, so the node keeps no state for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Transaction id to echo.
    pub tid: u16,
    /// Who asked.
    pub from: Peer,
    /// Our address as the requester saw it.
    pub to: SocketAddrV4,
    /// The socket it arrived on (and the reply leaves from).
    pub socket: SocketKind,
    /// A token we handed out (already checked: requests with a bad token are refused).
    pub token: Option<[u8; 32]>,
    /// Internal command flag.
    pub internal: bool,
    /// Command number.
    pub command: u64,
    /// Target key.
    pub target: Option<NodeId>,
    /// Payload.
    pub value: Option<Vec<u8>>,
}

/// What to send in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSpec {
    /// A token the receiver handed us.
    pub token: Option<[u8; 32]>,
    /// Internal dht-rpc command.
    pub internal: bool,
    /// Command number.
    pub command: u64,
    /// Target key.
    pub target: Option<NodeId>,
    /// Payload.
    pub value: Option<Vec<u8>>,
}

/// How to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Resends after a timeout (0 = send once).
    pub retries: u32,
    /// Socket override (default: client while firewalled, server otherwise).
    pub socket: Option<SocketKind>,
    /// Per-send timeout override in ms.
    pub timeout_ms: Option<u64>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            retries: DEFAULT_RETRIES,
            socket: None,
            timeout_ms: None,
        }
    }
}

/// What a query asks every node it visits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySpec {
    /// The key to walk towards.
    pub target: NodeId,
    /// Command sent to every visited node.
    pub command: u64,
    /// Payload sent to every visited node.
    pub value: Option<Vec<u8>>,
    /// Internal command flag.
    pub internal: bool,
    /// After the walk, send the command again with each closest node's token (the JS
    /// `commit: true`), as HyperDHT's announce and put need.
    pub commit: bool,
    /// Parallel requests (default: the node's concurrency).
    pub concurrency: Option<usize>,
    /// Retries per visit (default 5).
    pub retries: Option<u32>,
    /// Nodes to start from instead of the routing table (the JS `nodes` option).
    pub nodes: Vec<SocketAddrV4>,
    /// Visit only `nodes`, never nodes learned on the way (`onlyClosestNodes`).
    pub only_closest_nodes: bool,
}

/// Options of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyOptions {
    /// Include a token for the requester.
    pub token: bool,
    /// Include the nodes closest to the request's target.
    pub closer_nodes: bool,
    /// Send to this address instead of the requester (HyperDHT relaying).
    pub to: Option<SocketAddrV4>,
    /// Send from this socket instead of the one the request came in on.
    pub socket: Option<SocketKind>,
}

impl Default for ReplyOptions {
    /// The defaults of the JS `req.reply()`: token and closer nodes.
    fn default() -> Self {
        ReplyOptions {
            token: true,
            closer_nodes: true,
            to: None,
            socket: None,
        }
    }
}

impl ReplyOptions {
    /// The defaults of the JS `req.error()`: closer nodes, no token.
    pub fn error() -> Self {
        ReplyOptions {
            token: false,
            ..Self::default()
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Socket to send from.
    pub socket: SocketKind,
    /// Destination.
    pub to: SocketAddrV4,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// Identifies a request started with [`DhtNode::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a query started with [`DhtNode::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No response after all retries.
    #[error("request timed out")]
    Timeout,
    /// The node was destroyed (or the request cancelled).
    #[error("request destroyed")]
    Destroyed,
    /// Too many requests in flight.
    #[error("too many requests in flight")]
    Overloaded,
    /// A DELAYED_PING delay above the configured maximum.
    #[error("delay exceeds the maximum ping delay")]
    DelayTooLong,
}

/// Why a query failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Destroyed by the caller or because the node was destroyed.
    #[error("query destroyed")]
    Destroyed,
    /// A committing query found no node to commit to.
    #[error("too few nodes responded")]
    TooFewNodes,
    /// Every commit request failed (or no closest node handed out a token).
    #[error("all commits failed")]
    CommitFailed,
    /// Too many queries or requests in flight.
    #[error("too many queries or requests in flight")]
    Overloaded,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// A user command to answer.
    Request(IncomingRequest),
    /// A successful reply during a query (the JS query stream's data).
    QueryReply {
        /// The query.
        query: QueryId,
        /// The reply.
        reply: Reply,
    },
    /// A query ended; on success, the (at most k) closest replies, nearest first.
    QueryDone {
        /// The query.
        query: QueryId,
        /// Closest replies or the reason it failed.
        result: Result<Vec<Reply>, QueryError>,
    },
    /// A request ended. A response carrying an error code is still `Ok`.
    RequestDone {
        /// The request.
        request: RequestId,
        /// The response or the reason there is none.
        result: Result<Reply, RequestError>,
    },
    /// The bootstrap walk (and its NAT probing) finished.
    Bootstrapped,
    /// We became persistent: our id is now announced from the server socket.
    Persistent,
    /// We became ephemeral again (after a wake-up).
    Ephemeral,
    /// The clock jumped: the machine slept.
    Wakeup,
    /// Our guessed public address changed.
    NatUpdate {
        /// Public host, if samples agree.
        host: Option<Ipv4Addr>,
        /// Public port, 0 when unknown or randomised.
        port: u16,
    },
    /// Online/degraded state changed.
    NetworkUpdate(Health),
    /// A node entered the routing table.
    NodeAdded(Peer),
    /// A node left the routing table.
    NodeRemoved(Peer),
}

impl DhtEvent {
    fn is_completion(&self) -> bool {
        matches!(
            self,
            DhtEvent::QueryDone { .. }
                | DhtEvent::RequestDone { .. }
                | DhtEvent::Bootstrapped
                | DhtEvent::Persistent
                | DhtEvent::Ephemeral
        )
    }
}

/// A filter on nodes learned from the network (`filterNode`): false drops the node.
pub type NodeFilter = Arc<dyn Fn(&SocketAddrV4) -> bool + Send + Sync>;

/// Node configuration (the JS constructor options that apply).
#[derive(Clone)]
pub struct Config {
    /// Bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Nodes to put in the routing table at start (`opts.nodes`).
    pub nodes: Vec<SocketAddrV4>,
    /// Host the driver binds to.
    pub host: Ipv4Addr,
    /// Server socket port the driver binds to (0 = any).
    pub port: u16,
    /// When `port` is taken, fall back to any port (the JS `anyPort`).
    pub any_port: bool,
    /// `Some(false)` forces persistence, `Some(true)` stays ephemeral, `None` adapts.
    pub ephemeral: Option<bool>,
    /// With `ephemeral: None`, whether to adapt at all (the JS `adaptive`).
    pub adaptive: bool,
    /// Assume we are behind a firewall until proven otherwise.
    pub firewalled: bool,
    /// Probe the firewall with one PING_NAT during bootstrap.
    pub quick_firewall: bool,
    /// Our known public address (set by [`Config::bootstrapper`]).
    pub public_address: Option<SocketAddrV4>,
    /// Query concurrency.
    pub concurrency: usize,
    /// Congestion window size.
    pub max_window: u32,
    /// Longest DELAYED_PING delay we honour, ms.
    pub max_ping_delay_ms: u32,
    /// Send DOWN_HINTs about dead nodes.
    pub send_down_hints: bool,
    /// DOWN_HINTs per tick (`None` = unlimited).
    pub down_hints_rate_limit: Option<u32>,
    /// Seed of all randomness (tests); `None` = from the OS.
    pub seed: Option<[u8; 32]>,
    /// Node filter.
    pub filter_node: Option<NodeFilter>,
    /// Bound on requests in flight.
    pub max_inflight: usize,
    /// Requests served per source IP and in total (see [`crate::budget`]); applied by the
    /// driver before a datagram reaches the node.
    pub request_budget: crate::budget::BudgetConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bootstrap: Vec::new(),
            nodes: Vec::new(),
            host: Ipv4Addr::UNSPECIFIED,
            port: 0,
            any_port: true,
            ephemeral: None,
            adaptive: true,
            firewalled: true,
            quick_firewall: true,
            public_address: None,
            concurrency: DEFAULT_CONCURRENCY,
            max_window: DEFAULT_MAX_WINDOW,
            max_ping_delay_ms: 10_000,
            send_down_hints: true,
            down_hints_rate_limit: Some(50),
            seed: None,
            filter_node: None,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            request_budget: crate::budget::BudgetConfig::default(),
        }
    }
}

impl Config {
    /// `DHT.bootstrapper(port, host)`: a persistent, unfirewalled node on a fixed port that
    /// knows its public address and has no bootstrap nodes. Port 0 binds any free port
    /// and takes the bound one as the public port (what tests want: no bind races).
    pub fn bootstrapper(port: u16, host: Ipv4Addr) -> Self {
        Config {
            port,
            any_port: false,
            ephemeral: Some(false),
            firewalled: false,
            public_address: Some(SocketAddrV4::new(host, port)),
            ..Config::default()
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bootstrap", &self.bootstrap)
            .field("nodes", &self.nodes.len())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("ephemeral", &self.ephemeral)
            .field("adaptive", &self.adaptive)
            .field("firewalled", &self.firewalled)
            .field("public_address", &self.public_address)
            .field("concurrency", &self.concurrency)
            .field("max_window", &self.max_window)
            .field("filter_node", &self.filter_node.is_some())
            .finish_non_exhaustive()
    }
}

/// Request counters (the JS `stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests in flight.
    pub active: u64,
    /// Requests created.
    pub total: u64,
    /// Responses matched to requests.
    pub responses: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Resends.
    pub retries: u64,
    /// Queries running.
    pub queries_active: u64,
    /// Queries started.
    pub queries_total: u64,
    /// Sent / received per internal command (PING, PING_NAT, FIND_NODE, DOWN_HINT).
    pub commands: [(u64, u64); 4],
}

#[derive(Debug, Clone)]
struct NodeInfo {
    addr: SocketAddrV4,
    to: Option<SocketAddrV4>,
    sampled: u64,
    added: u64,
    pinged: u64,
    seen: u64,
    down_hints: u32,
    serial: u64,
    order: u64,
}

impl NodeInfo {
    fn new(addr: SocketAddrV4, to: Option<SocketAddrV4>) -> Self {
        NodeInfo {
            addr,
            to,
            sampled: 0,
            added: 0,
            pinged: 0,
            seen: 0,
            down_hints: 0,
            serial: 0,
            order: 0,
        }
    }
}

#[derive(Debug)]
enum Purpose {
    User(RequestId),
    Visit(QueryId),
    DownHint(QueryId),
    Commit(QueryId),
    Check {
        id: NodeId,
        serial: u64,
        last_seen: u64,
    },
    Reping {
        new_id: NodeId,
        new_info: Box<NodeInfo>,
        old_id: NodeId,
        old_serial: u64,
        last_seen: u64,
    },
    QuickNat,
    NatCheck,
}

#[derive(Debug)]
struct Inflight {
    tid: u16,
    to: Peer,
    socket: SocketKind,
    spec: RequestSpec,
    buffer: Option<Vec<u8>>,
    sent: u32,
    retries: u32,
    timeout_ms: Option<u64>,
    deadline: Option<u64>,
    created: u64,
    cycle_armed: bool,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryKind {
    User,
    Background { boot: bool },
}

#[derive(Debug)]
struct QueryState {
    q: Query,
    kind: QueryKind,
    spec: QuerySpec,
    retries: u32,
    bg_concurrency: usize,
    commit_pending: usize,
    commit_ok: usize,
}

#[derive(Debug, Default)]
struct Boot {
    round: u8,
    first: bool,
    test_nat: bool,
    done: bool,
}

#[derive(Debug)]
struct NetCheck {
    only_firewall: bool,
    from_boot: bool,
    snapshot: (Option<Ipv4Addr>, u16),
    sampler: NatSampler,
    outstanding: usize,
    node_count: usize,
    replies: Vec<(SocketAddrV4, SocketAddrV4)>,
    hosts: HashSet<Ipv4Addr>,
}

enum NetState {
    Done(bool),
    Pending,
}

/// The dht-rpc state machine.
pub struct DhtNode {
    cfg: Config,
    rng: Rng,
    now: u64,
    server_port: u16,
    table: RoutingTable<NodeInfo>,
    order: BTreeMap<u64, NodeId>,
    next_order: u64,
    next_serial: u64,
    nat: NatSampler,
    ephemeral: bool,
    firewalled: bool,
    adaptive: bool,
    force_persistent: bool,
    bootstrapped: bool,
    destroyed: bool,
    tick: u64,
    refresh_ticks: i64,
    stable_ticks: i64,
    last_tick_at: u64,
    next_tick_at: u64,
    next_drain_at: u64,
    last_host: Option<Option<Ipv4Addr>>,
    repinging: u32,
    checks: u32,
    none_persistent_samples: Vec<SocketAddrV4>,
    down_hints_sent: u32,
    secrets: Option<[[u8; 32]; 2]>,
    rotate_secrets: u32,
    congestion: CongestionWindow,
    health: NetworkHealth,
    health_state: Health,
    stats: Stats,
    next_tid: u16,
    next_key: u64,
    inflight: HashMap<u64, Inflight>,
    by_tid: HashMap<u16, u64>,
    timers: BTreeSet<(u64, u64)>,
    pending: VecDeque<u64>,
    queries: HashMap<QueryId, QueryState>,
    next_query: u64,
    boot: Boot,
    net_check: Option<NetCheck>,
    delayed: BTreeMap<(u64, u64), IncomingRequest>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DhtEvent>,
}

impl fmt::Debug for DhtNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhtNode")
            .field("table_id", &messages_hex(self.table.id()))
            .field("ephemeral", &self.ephemeral)
            .field("firewalled", &self.firewalled)
            .field("bootstrapped", &self.bootstrapped)
            .field("nodes", &self.table.len())
            .field("inflight", &self.inflight.len())
            .field("queries", &self.queries.len())
            .finish_non_exhaustive()
    }
}

fn messages_hex(id: &NodeId) -> String {
    id.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn random_offset(rng: &mut Rng, n: i64) -> i64 {
    n - (rng.unit() * 0.5 * n as f64) as i64
}

impl DhtNode {
    /// A node whose sockets are bound (`server_port` is the server socket's local port);
    /// it starts bootstrapping right away.
    pub fn new(cfg: Config, server_port: u16, now: u64) -> Self {
        let mut rng = cfg.seed.map_or_else(Rng::from_entropy, Rng::from_seed);
        let table_id = rng.bytes32();
        let next_tid = rng.below(65536) as u16;
        let tick = random_offset(&mut rng, 100) as u64;
        let refresh_ticks = random_offset(&mut rng, REFRESH_TICKS);
        let adaptive = cfg.ephemeral.is_none() && cfg.adaptive;
        let mut nat = NatSampler::new();
        if let Some(p) = cfg.public_address {
            nat.add(*p.ip(), p.port());
        }
        let mut node = DhtNode {
            rng,
            now,
            server_port,
            table: RoutingTable::new(table_id),
            order: BTreeMap::new(),
            next_order: 0,
            next_serial: 0,
            nat,
            ephemeral: true,
            firewalled: cfg.firewalled,
            adaptive,
            force_persistent: cfg.ephemeral == Some(false),
            bootstrapped: false,
            destroyed: false,
            tick,
            refresh_ticks,
            stable_ticks: if adaptive { STABLE_TICKS } else { 0 },
            last_tick_at: now,
            next_tick_at: now + TICK_INTERVAL,
            next_drain_at: now + DRAIN_INTERVAL,
            last_host: None,
            repinging: 0,
            checks: 0,
            none_persistent_samples: Vec::new(),
            down_hints_sent: 0,
            secrets: None,
            rotate_secrets: 10,
            congestion: CongestionWindow::new(cfg.max_window),
            health: NetworkHealth::default(),
            health_state: Health {
                online: true,
                degraded: false,
            },
            stats: Stats::default(),
            next_tid,
            next_key: 0,
            inflight: HashMap::new(),
            by_tid: HashMap::new(),
            timers: BTreeSet::new(),
            pending: VecDeque::new(),
            queries: HashMap::new(),
            next_query: 0,
            boot: Boot::default(),
            net_check: None,
            delayed: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cfg,
        };
        for addr in node.cfg.nodes.clone().iter().rev() {
            node.add_node(*addr);
        }
        node.start_bootstrap();
        node
    }

    // ---------------------------------------------------------------- accessors

    /// Our id when persistent (`None` while ephemeral, as the JS `dht.id`).
    pub fn id(&self) -> Option<NodeId> {
        (!self.ephemeral).then_some(*self.table.id())
    }

    /// The routing table's id (random until we learn our public address).
    pub fn table_id(&self) -> NodeId {
        *self.table.id()
    }

    /// Whether requests leave from the client socket.
    pub fn is_firewalled(&self) -> bool {
        self.firewalled
    }

    /// Whether we keep our id to ourselves.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Whether the bootstrap walk finished.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Whether [`DhtNode::destroy`] was called.
    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    /// Our public host as sampled from the network.
    pub fn host(&self) -> Option<Ipv4Addr> {
        self.nat.host()
    }

    /// Our public port as sampled (0 = unknown or randomised).
    pub fn port(&self) -> u16 {
        self.nat.port()
    }

    /// Whether the NAT gives us a random port per destination.
    pub fn is_randomized(&self) -> bool {
        self.nat.host().is_some() && self.nat.port() == 0
    }

    /// The server socket's local port.
    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    /// Our reachable public address (`remoteAddress()`): only when unfirewalled and the
    /// sampled port is our server port.
    pub fn remote_address(&self) -> Option<SocketAddrV4> {
        let host = self.nat.host()?;
        let port = self.nat.port();
        (port != 0 && !self.firewalled && port == self.server_port)
            .then(|| SocketAddrV4::new(host, port))
    }

    /// The socket requests leave from now.
    pub fn default_socket(&self) -> SocketKind {
        if self.firewalled {
            SocketKind::Client
        } else {
            SocketKind::Server
        }
    }

    /// Nodes in the routing table, most recently heard from first (`toArray`).
    pub fn nodes(&self, limit: Option<usize>) -> Vec<SocketAddrV4> {
        self.order
            .values()
            .rev()
            .filter_map(|id| self.table.get(id).map(|n| n.addr))
            .take(limit.unwrap_or(usize::MAX))
            .collect()
    }

    /// Number of nodes in the routing table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Up to `k` nodes of the table close to `target`, in the order replies carry them.
    pub fn closest_nodes(&self, target: &NodeId, k: usize) -> Vec<Peer> {
        self.table
            .closest(target, k)
            .into_iter()
            .map(|(id, n)| Peer {
                addr: n.addr,
                id: Some(*id),
            })
            .collect()
    }

    /// Online/degraded state.
    pub fn health(&self) -> Health {
        self.health_state
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Requests in flight (sent or waiting for the congestion window).
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    // ---------------------------------------------------------------- sans-io interface

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// When [`DhtNode::handle_timeout`] should next be called (ms, same clock as `now`).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.destroyed {
            return None;
        }
        let mut t = self.next_tick_at.min(self.next_drain_at);
        if let Some(&(d, _)) = self.timers.first() {
            t = t.min(d);
        }
        if let Some(&(d, _)) = self.delayed.keys().next() {
            t = t.min(d);
        }
        Some(t)
    }

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.destroyed {
            return;
        }
        while let Some(&(deadline, key)) = self.timers.first() {
            if deadline > self.now {
                break;
            }
            self.timers.remove(&(deadline, key));
            self.on_request_cycle(key);
        }
        while let Some((&(due, seq), _)) = self.delayed.iter().next() {
            if due > self.now {
                break;
            }
            if let Some(req) = self.delayed.remove(&(due, seq)) {
                self.send_reply(&req, 0, None, false, false, req.from.addr, req.socket);
            }
        }
        if self.now >= self.next_drain_at {
            self.next_drain_at = self.now + DRAIN_INTERVAL;
            self.drain();
        }
        if self.now >= self.next_tick_at {
            self.next_tick_at = self.now + TICK_INTERVAL;
            self.on_tick();
        }
    }

    /// Processes one datagram received on `socket` from `from`. Anything that is not a
    /// well-formed dht-rpc message is ignored.
    pub fn handle_datagram(
        &mut self,
        now: u64,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: &[u8],
    ) {
        self.now = self.now.max(now);
        if self.destroyed || bytes.len() < 2 || from.port() == 0 {
            return;
        }
        if socket == SocketKind::Server {
            if let Some(check) = &mut self.net_check {
                if check.hosts.len() < MAX_CHECK_HOSTS {
                    check.hosts.insert(*from.ip());
                }
            }
        }
        let external = socket != self.default_socket();
        match bytes[0] {
            messages::REQUEST_ID => {
                let Ok(m) = Request::decode(bytes) else {
                    return;
                };
                self.on_request_message(socket, from, m, external);
            }
            messages::RESPONSE_ID => {
                let Ok(m) = Response::decode(bytes) else {
                    return;
                };
                self.on_response_message(socket, from, m, external);
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- user API

    /// Sends a request with default options (3 retries).
    pub fn request(
        &mut self,
        now: u64,
        to: SocketAddrV4,
        spec: RequestSpec,
        retries: u32,
    ) -> RequestId {
        self.request_with(
            now,
            to,
            spec,
            RequestOptions {
                retries,
                ..RequestOptions::default()
            },
        )
    }

    /// Sends a request; its outcome arrives as [`DhtEvent::RequestDone`].
    pub fn request_with(
        &mut self,
        now: u64,
        to: SocketAddrV4,
        spec: RequestSpec,
        opts: RequestOptions,
    ) -> RequestId {
        self.now = self.now.max(now);
        let id = RequestId(self.next_key);
        let peer = Peer { addr: to, id: None };
        let key = self.create_request(peer, spec, opts, Purpose::User(id));
        if key.is_none() {
            let err = if self.destroyed {
                RequestError::Destroyed
            } else {
                RequestError::Overloaded
            };
            self.next_key += 1;
            self.emit(DhtEvent::RequestDone {
                request: id,
                result: Err(err),
            });
        }
        id
    }

    /// PING a node (internal command 0).
    pub fn ping(&mut self, now: u64, to: SocketAddrV4) -> RequestId {
        let spec = RequestSpec {
            internal: true,
            command: PING,
            ..RequestSpec::default()
        };
        self.request(now, to, spec, DEFAULT_RETRIES)
    }

    /// DELAYED_PING: asks `to` to answer after `delay_ms` (the per-send timeout becomes
    /// `delay_ms + 1000`).
    pub fn delayed_ping(&mut self, now: u64, to: SocketAddrV4, delay_ms: u32) -> RequestId {
        if delay_ms > self.cfg.max_ping_delay_ms {
            let id = RequestId(self.next_key);
            self.next_key += 1;
            self.emit(DhtEvent::RequestDone {
                request: id,
                result: Err(RequestError::DelayTooLong),
            });
            return id;
        }
        let spec = RequestSpec {
            internal: true,
            command: DELAYED_PING,
            value: Some(delay_ms.to_le_bytes().to_vec()),
            ..RequestSpec::default()
        };
        let opts = RequestOptions {
            timeout_ms: Some(u64::from(delay_ms) + 1000),
            ..RequestOptions::default()
        };
        self.request_with(now, to, spec, opts)
    }

    /// Starts an iterative query; replies arrive as [`DhtEvent::QueryReply`] and the end as
    /// [`DhtEvent::QueryDone`].
    pub fn query(&mut self, now: u64, spec: QuerySpec) -> QueryId {
        self.now = self.now.max(now);
        self.refresh_ticks = REFRESH_TICKS;
        let concurrency = spec.concurrency.unwrap_or(self.cfg.concurrency);
        self.start_query(spec, concurrency, QueryKind::User)
    }

    /// FIND_NODE walk towards `target`.
    pub fn find_node(&mut self, now: u64, target: NodeId) -> QueryId {
        let spec = QuerySpec {
            target,
            command: FIND_NODE,
            internal: true,
            ..QuerySpec::default()
        };
        self.query(now, spec)
    }

    /// Stops a query; it ends with [`QueryError::Destroyed`].
    pub fn destroy_query(&mut self, query: QueryId) {
        if self.queries.contains_key(&query) {
            self.finish_query(query, Err(QueryError::Destroyed));
        }
    }

    /// Answers a request (value, optional token and closer nodes).
    pub fn reply(&mut self, req: &IncomingRequest, value: Option<Vec<u8>>, opts: ReplyOptions) {
        let to = opts.to.unwrap_or(req.from.addr);
        let socket = opts.socket.unwrap_or(req.socket);
        self.send_reply(req, 0, value, opts.token, opts.closer_nodes, to, socket);
    }

    /// Answers a request with an error code (see [`crate::errors`]).
    pub fn error_reply(&mut self, req: &IncomingRequest, code: u64, opts: ReplyOptions) {
        let to = opts.to.unwrap_or(req.from.addr);
        let socket = opts.socket.unwrap_or(req.socket);
        self.send_reply(req, code, None, opts.token, opts.closer_nodes, to, socket);
    }

    /// Forwards a request to another node with the same tid, command and target (the JS
    /// `req.relay`, used by HyperDHT to route handshakes).
    pub fn relay(
        &mut self,
        req: &IncomingRequest,
        value: Option<Vec<u8>>,
        to: SocketAddrV4,
        socket: Option<SocketKind>,
    ) {
        if self.destroyed {
            return;
        }
        let socket = socket.unwrap_or(req.socket);
        let msg = Request {
            tid: req.tid,
            to,
            id: self.announced_id(socket),
            token: None,
            internal: req.internal,
            command: req.command,
            target: req.target,
            value,
        };
        self.transmit(socket, to, msg.encode());
    }

    /// Adds a node to the routing table (`addNode`).
    pub fn add_node(&mut self, addr: SocketAddrV4) {
        self.insert_node(node_id(&addr), NodeInfo::new(addr, None));
    }

    /// Starts a background refresh walk towards a random known node.
    pub fn refresh(&mut self) {
        if self.destroyed {
            return;
        }
        let target = match self.table.len() {
            0 => *self.table.id(),
            n => {
                let i = self.rng.below(n as u64) as usize;
                self.table.nth(i).map_or(*self.table.id(), |(id, _)| *id)
            }
        };
        self.background_query(target, false);
    }

    /// Fails every request and query and stops; nothing is sent afterwards.
    pub fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        let mut keys: Vec<u64> = self.inflight.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(req) = self.take_request(key) {
                self.congestion.recv();
                if let Purpose::User(id) = req.purpose {
                    self.emit(DhtEvent::RequestDone {
                        request: id,
                        result: Err(RequestError::Destroyed),
                    });
                }
            }
        }
        let mut qids: Vec<QueryId> = self.queries.keys().copied().collect();
        qids.sort_unstable();
        for q in qids {
            self.finish_query(q, Err(QueryError::Destroyed));
        }
        self.pending.clear();
        self.delayed.clear();
        self.transmits.clear();
        self.net_check = None;
    }

    // ---------------------------------------------------------------- internals: output

    fn emit(&mut self, ev: DhtEvent) {
        if self.events.len() >= MAX_EVENTS && !ev.is_completion() {
            return;
        }
        self.events.push_back(ev);
    }

    fn transmit(&mut self, socket: SocketKind, to: SocketAddrV4, bytes: Vec<u8>) {
        if self.transmits.len() < MAX_TRANSMITS {
            self.transmits.push_back(Transmit { socket, to, bytes });
        }
    }

    fn announced_id(&self, socket: SocketKind) -> Option<NodeId> {
        (!self.ephemeral && socket == SocketKind::Server).then_some(*self.table.id())
    }

    fn token(&mut self, host: &Ipv4Addr, i: usize) -> [u8; 32] {
        if self.secrets.is_none() {
            self.secrets = Some([self.rng.bytes32(), self.rng.bytes32()]);
        }
        let secret = self.secrets.map_or([0; 32], |s| s[i]);
        intercom_crypto::blake2b_256(&[host.to_string().as_bytes()], Some(&secret))
    }

    #[allow(clippy::too_many_arguments)]
    fn send_reply(
        &mut self,
        req: &IncomingRequest,
        error: u64,
        value: Option<Vec<u8>>,
        token: bool,
        closer: bool,
        to: SocketAddrV4,
        socket: SocketKind,
    ) {
        if self.destroyed {
            return;
        }
        let closer_nodes = match (&req.target, closer) {
            (Some(t), true) => self
                .table
                .closest(t, self.table.k())
                .into_iter()
                .map(|(_, n)| n.addr)
                .collect(),
            _ => Vec::new(),
        };
        let token = token.then(|| self.token(to.ip(), 1));
        let res = Response {
            tid: req.tid,
            to,
            id: self.announced_id(socket),
            token,
            closer_nodes,
            error,
            value,
        };
        self.transmit(socket, to, res.encode());
    }

    // ---------------------------------------------------------------- internals: requests

    fn create_request(
        &mut self,
        to: Peer,
        spec: RequestSpec,
        opts: RequestOptions,
        purpose: Purpose,
    ) -> Option<u64> {
        if self.destroyed || self.inflight.len() >= self.cfg.max_inflight {
            return None;
        }
        let mut tid = self.next_tid;
        while self.by_tid.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        let key = self.next_key;
        self.next_key += 1;
        if spec.internal && spec.command < 4 {
            self.stats.commands[spec.command as usize].0 += 1;
        }
        self.stats.active += 1;
        self.stats.total += 1;
        let socket = opts.socket.unwrap_or(self.default_socket());
        let cycle_armed = matches!(purpose, Purpose::Visit(_));
        self.inflight.insert(
            key,
            Inflight {
                tid,
                to,
                socket,
                spec,
                buffer: None,
                sent: 0,
                retries: opts.retries,
                timeout_ms: opts.timeout_ms,
                deadline: None,
                created: self.now,
                cycle_armed,
                purpose,
            },
        );
        self.by_tid.insert(tid, key);
        self.send(key, false);
        Some(key)
    }

    fn send(&mut self, key: u64, force: bool) {
        let id = self
            .inflight
            .get(&key)
            .and_then(|r| self.announced_id(r.socket));
        let Some(req) = self.inflight.get_mut(&key) else {
            return;
        };
        if req.buffer.is_none() {
            let msg = Request {
                tid: req.tid,
                to: req.to.addr,
                id,
                token: req.spec.token,
                internal: req.spec.internal,
                command: req.spec.command,
                target: req.spec.target,
                value: req.spec.value.clone(),
            };
            req.buffer = Some(msg.encode());
        }
        if !force && self.congestion.is_full() {
            self.pending.push_back(key);
            return;
        }
        self.send_now(key);
    }

    fn send_now(&mut self, key: u64) {
        let now = self.now;
        let Some(req) = self.inflight.get_mut(&key) else {
            return;
        };
        req.sent += 1;
        let deadline = now + req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT);
        if let Some(old) = req.deadline.replace(deadline) {
            self.timers.remove(&(old, key));
        }
        let (socket, to, bytes) = (
            req.socket,
            req.to.addr,
            req.buffer.clone().unwrap_or_default(),
        );
        self.timers.insert((deadline, key));
        self.congestion.send();
        self.transmit(socket, to, bytes);
    }

    fn take_request(&mut self, key: u64) -> Option<Inflight> {
        let req = self.inflight.remove(&key)?;
        if self.by_tid.get(&req.tid) == Some(&key) {
            self.by_tid.remove(&req.tid);
        }
        if let Some(d) = req.deadline {
            self.timers.remove(&(d, key));
        }
        self.stats.active = self.stats.active.saturating_sub(1);
        Some(req)
    }

    fn drain(&mut self) {
        if let Some(s) = &mut self.secrets {
            self.rotate_secrets -= 1;
            if self.rotate_secrets == 0 {
                self.rotate_secrets = 10;
                let old = s[0];
                s[0] = s[1];
                s[1] = intercom_crypto::blake2b_256(&[&old], None);
            }
        }
        self.congestion.drain();
        while !self.congestion.is_full() {
            let Some(key) = self.pending.pop_front() else {
                return;
            };
            self.send_now(key);
        }
    }

    fn on_request_cycle(&mut self, key: u64) {
        let Some(req) = self.inflight.get_mut(&key) else {
            return;
        };
        req.deadline = None;
        if std::mem::take(&mut req.cycle_armed) {
            if let Purpose::Visit(qid) = req.purpose {
                self.drive_query(qid, |q, env| q.on_cycle(env));
            }
        }
        let Some(req) = self.inflight.get(&key) else {
            return;
        };
        if req.sent > req.retries {
            let Some(req) = self.take_request(key) else {
                return;
            };
            self.congestion.recv();
            self.stats.timeouts += 1;
            let to_id = req.to.id;
            self.on_request_error(req, RequestError::Timeout);
            if let Some(id) = to_id {
                self.remove_node(&id, None);
            }
        } else {
            self.stats.retries += 1;
            self.send(key, false);
        }
    }

    fn on_response_message(
        &mut self,
        socket: SocketKind,
        from: SocketAddrV4,
        m: Response,
        external: bool,
    ) {
        let Some(&key) = self.by_tid.get(&m.tid) else {
            return;
        };
        let Some(req) = self.take_request(key) else {
            return;
        };
        self.congestion.recv();
        if req.spec.internal && req.spec.command < 4 {
            self.stats.commands[req.spec.command as usize].1 += 1;
        }
        self.stats.responses += 1;
        let reply = Reply {
            from: Peer {
                addr: from,
                id: validate_id(m.id, &from),
            },
            to: m.to,
            socket,
            tid: m.tid,
            rtt_ms: self.now.saturating_sub(req.created),
            token: m.token,
            closer_nodes: m.closer_nodes,
            error: m.error,
            value: m.value,
        };
        self.add_node_from_network(!external, reply.from, reply.to);
        self.on_request_response(req, reply);
    }

    fn on_request_response(&mut self, req: Inflight, reply: Reply) {
        match req.purpose {
            Purpose::User(id) => self.emit(DhtEvent::RequestDone {
                request: id,
                result: Ok(reply),
            }),
            Purpose::Visit(qid) => {
                let (visited, cycled) = (req.to.addr, !req.cycle_armed);
                self.drive_query(qid, |q, env| q.on_reply(visited, reply, cycled, env));
            }
            Purpose::DownHint(_) => {}
            Purpose::Commit(qid) => self.on_commit_done(qid, true),
            Purpose::Check {
                id,
                serial,
                last_seen,
            } => {
                self.checks = self.checks.saturating_sub(1);
                if self.table.get(&id).is_some_and(|n| n.seen <= last_seen) {
                    self.remove_node(&id, Some(serial));
                }
            }
            Purpose::Reping {
                new_id,
                new_info,
                old_id,
                old_serial,
                last_seen,
            } => {
                let alive = self
                    .table
                    .get(&old_id)
                    .is_some_and(|n| n.serial == old_serial && n.seen > last_seen);
                if alive {
                    self.repinging = self.repinging.saturating_sub(1);
                } else {
                    self.swap_node(new_id, *new_info, old_id, old_serial);
                }
            }
            Purpose::QuickNat => self.boot.test_nat = true,
            Purpose::NatCheck => {
                if let Some(check) = &mut self.net_check {
                    check.replies.push((reply.from.addr, reply.to));
                }
                self.net_check_step();
            }
        }
    }

    fn on_request_error(&mut self, req: Inflight, err: RequestError) {
        match req.purpose {
            Purpose::User(id) => self.emit(DhtEvent::RequestDone {
                request: id,
                result: Err(err),
            }),
            Purpose::Visit(qid) => {
                let (addr, cycled) = (req.to.addr, !req.cycle_armed);
                let timeout = err == RequestError::Timeout;
                self.drive_query(qid, |q, env| q.on_error(addr, timeout, cycled, env));
            }
            Purpose::DownHint(_) | Purpose::QuickNat => {}
            Purpose::Commit(qid) => self.on_commit_done(qid, false),
            Purpose::Check { id, serial, .. } => {
                self.checks = self.checks.saturating_sub(1);
                self.remove_node(&id, Some(serial));
            }
            Purpose::Reping {
                new_id,
                new_info,
                old_id,
                old_serial,
                ..
            } => self.swap_node(new_id, *new_info, old_id, old_serial),
            Purpose::NatCheck => self.net_check_step(),
        }
    }

    // ---------------------------------------------------------------- internals: serving

    fn on_request_message(
        &mut self,
        socket: SocketKind,
        from: SocketAddrV4,
        m: Request,
        external: bool,
    ) {
        let mut req = IncomingRequest {
            tid: m.tid,
            from: Peer {
                addr: from,
                id: validate_id(m.id, &from),
            },
            to: m.to,
            socket,
            token: m.token,
            internal: m.internal,
            command: m.command,
            target: m.target,
            value: m.value,
        };
        if let Some(token) = req.token {
            if token != self.token(from.ip(), 1) && token != self.token(from.ip(), 0) {
                self.send_reply(&req, INVALID_TOKEN, None, true, true, from, socket);
                return;
            }
        }
        if req.from.id.is_some() {
            self.add_node_from_network(!external, req.from, req.to);
        }
        if !req.internal {
            self.emit(DhtEvent::Request(req));
            return;
        }
        let value_len = req.value.as_ref().map_or(0, Vec::len);
        match req.command {
            PING => self.send_reply(&req, 0, None, false, false, from, socket),
            DELAYED_PING => {
                let Some(v) = req.value.as_deref().filter(|v| v.len() >= 4) else {
                    return;
                };
                let delay = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                if delay > self.cfg.max_ping_delay_ms || self.delayed.len() >= MAX_DELAYED_PINGS {
                    return;
                }
                let seq = self.next_key;
                self.next_key += 1;
                self.delayed.insert((self.now + u64::from(delay), seq), req);
            }
            PING_NAT => {
                let Some(v) = req.value.as_deref().filter(|v| v.len() >= 2) else {
                    return;
                };
                let port = u16::from_le_bytes([v[0], v[1]]);
                if port == 0 {
                    return;
                }
                let to = SocketAddrV4::new(*from.ip(), port);
                req.from.addr = to;
                self.send_reply(&req, 0, None, false, false, to, socket);
            }
            FIND_NODE => {
                if req.target.is_some() {
                    self.send_reply(&req, 0, None, false, true, from, socket);
                }
            }
            DOWN_HINT => {
                if value_len < 6 {
                    return;
                }
                if self.checks < DOWN_HINT_CHECK_LIMIT {
                    let v = req.value.as_deref().unwrap_or_default();
                    let id = intercom_crypto::blake2b_256(&[&v[..6]], None);
                    let tick = self.tick;
                    let suspect = match self.table.get_mut(&id) {
                        Some(n) if n.pinged < tick || n.down_hints == 0 => {
                            n.down_hints += 1;
                            true
                        }
                        _ => false,
                    };
                    if suspect {
                        self.check_node(id);
                    }
                }
                self.send_reply(&req, 0, None, false, false, from, socket);
            }
            _ => {
                let closer = req.target.is_some();
                self.send_reply(&req, UNKNOWN_COMMAND, None, false, closer, from, socket);
            }
        }
    }

    // ---------------------------------------------------------------- internals: table

    fn filter_allows(&self, addr: &SocketAddrV4) -> bool {
        self.cfg.filter_node.as_ref().is_none_or(|f| f(addr))
    }

    fn nat_add(&mut self, addr: SocketAddrV4) {
        let prev = (self.nat.host(), self.nat.port());
        self.nat.add(*addr.ip(), addr.port());
        let next = (self.nat.host(), self.nat.port());
        if prev != next {
            self.emit(DhtEvent::NatUpdate {
                host: next.0,
                port: next.1,
            });
        }
    }

    fn sample_bootstrap_maybe(&mut self, from: SocketAddrV4, to: SocketAddrV4) {
        if self.none_persistent_samples.len() >= self.cfg.bootstrap.len().max(1)
            || self.none_persistent_samples.contains(&from)
        {
            return;
        }
        self.none_persistent_samples.push(from);
        self.nat_add(to);
    }

    fn touch_order(&mut self, id: &NodeId) {
        let order = self.next_order;
        if let Some(n) = self.table.get_mut(id) {
            self.order.remove(&n.order);
            n.order = order;
            self.order.insert(order, *id);
            self.next_order += 1;
        }
    }

    fn add_node_from_network(&mut self, sample: bool, from: Peer, to: SocketAddrV4) {
        if !self.filter_allows(&from.addr) {
            return;
        }
        let Some(id) = from.id else {
            self.sample_bootstrap_maybe(from.addr, to);
            return;
        };
        let tick = self.tick;
        if let Some(old) = self.table.get_mut(&id) {
            let mut sampled = None;
            if sample && (old.sampled == 0 || tick.saturating_sub(old.sampled) >= OLD_NODE) {
                old.to = Some(to);
                old.sampled = tick;
                sampled = Some(to);
            }
            old.pinged = tick;
            old.seen = tick;
            self.touch_order(&id);
            if let Some(to) = sampled {
                self.nat_add(to);
            }
            return;
        }
        self.insert_node(id, NodeInfo::new(from.addr, Some(to)));
    }

    fn insert_node(&mut self, id: NodeId, mut info: NodeInfo) {
        if &id == self.table.id() || self.destroyed {
            return;
        }
        let tick = self.tick;
        info.added = tick;
        info.pinged = tick;
        info.seen = tick;
        info.serial = self.next_serial;
        self.next_serial += 1;
        info.order = self.next_order;
        self.next_order += 1;
        let old_order = self.table.get(&id).map(|n| n.order);
        let to = info.to;
        let sampled = info.sampled;
        let addr = info.addr;
        let order = info.order;
        match self.table.add(id, info.clone()) {
            AddOutcome::RowFull(row) => self.on_full_row(id, info, row),
            outcome => {
                if let Some(o) = old_order {
                    self.order.remove(&o);
                }
                self.order.insert(order, id);
                if let (Some(to), 0) = (to, sampled) {
                    if let Some(n) = self.table.get_mut(&id) {
                        n.sampled = tick;
                    }
                    self.nat_add(to);
                }
                if outcome == AddOutcome::Inserted {
                    self.emit(DhtEvent::NodeAdded(Peer { addr, id: Some(id) }));
                }
            }
        }
    }

    fn remove_node(&mut self, id: &NodeId, serial: Option<u64>) {
        let Some(n) = self.table.get(id) else { return };
        if serial.is_some_and(|s| s != n.serial) {
            return;
        }
        if let Some(n) = self.table.remove(id) {
            self.order.remove(&n.order);
            self.emit(DhtEvent::NodeRemoved(Peer {
                addr: n.addr,
                id: Some(*id),
            }));
        }
    }

    fn on_full_row(&mut self, new_id: NodeId, new_info: NodeInfo, row: usize) {
        if !self.bootstrapped || self.repinging >= 3 {
            return;
        }
        let tick = self.tick;
        let mut oldest: Option<(&NodeId, &NodeInfo)> = None;
        for (id, n) in self.table.row(row) {
            if n.pinged == tick {
                continue;
            }
            let older = match oldest {
                None => true,
                Some((_, o)) => o.pinged > n.pinged || (o.pinged == n.pinged && o.added > n.added),
            };
            if older {
                oldest = Some((id, n));
            }
        }
        let Some((&old_id, old)) = oldest else { return };
        if tick - old.pinged.min(tick) < RECENT_NODE && tick.saturating_sub(old.added) > OLD_NODE {
            return;
        }
        let (old_addr, old_serial, last_seen) = (old.addr, old.serial, old.seen);
        if let Some(n) = self.table.get_mut(&old_id) {
            n.pinged = tick;
        }
        self.repinging += 1;
        let spec = RequestSpec {
            internal: true,
            command: PING,
            ..RequestSpec::default()
        };
        let purpose = Purpose::Reping {
            new_id,
            new_info: Box::new(new_info),
            old_id,
            old_serial,
            last_seen,
        };
        let to = Peer {
            addr: old_addr,
            id: None,
        };
        if self
            .create_request(to, spec, RequestOptions::default(), purpose)
            .is_none()
        {
            self.repinging -= 1;
        }
    }

    fn swap_node(&mut self, new_id: NodeId, new_info: NodeInfo, old_id: NodeId, old_serial: u64) {
        self.repinging = self.repinging.saturating_sub(1);
        self.remove_node(&old_id, Some(old_serial));
        self.insert_node(new_id, new_info);
    }

    fn check_node(&mut self, id: NodeId) {
        let tick = self.tick;
        let Some(n) = self.table.get_mut(&id) else {
            return;
        };
        n.pinged = tick;
        let (addr, serial, last_seen) = (n.addr, n.serial, n.seen);
        self.checks += 1;
        let spec = RequestSpec {
            internal: true,
            command: PING,
            ..RequestSpec::default()
        };
        let purpose = Purpose::Check {
            id,
            serial,
            last_seen,
        };
        if self
            .create_request(
                Peer { addr, id: None },
                spec,
                RequestOptions::default(),
                purpose,
            )
            .is_none()
        {
            self.checks -= 1;
        }
    }

    fn ping_some(&mut self) {
        let mut cnt = if self.inflight.len() > 2 { 3 } else { 5 };
        let Some(oldest) = self.order.values().next().and_then(|id| self.table.get(id)) else {
            self.refresh();
            return;
        };
        if self.tick.saturating_sub(oldest.pinged) < RECENT_NODE {
            cnt = 2;
        }
        let tick = self.tick;
        let mut ids = Vec::with_capacity(cnt);
        for id in self.order.values().take(cnt) {
            match self.table.get(id) {
                Some(n) if n.pinged != tick => ids.push(*id),
                _ => break,
            }
        }
        for id in ids {
            self.check_node(id);
        }
    }

    // ---------------------------------------------------------------- internals: ticks

    fn on_tick(&mut self) {
        if self.now.saturating_sub(self.last_tick_at) > SLEEPING_INTERVAL {
            self.on_wakeup();
        } else {
            self.tick += 1;
        }
        self.last_tick_at = self.now;
        if !self.bootstrapped {
            return;
        }
        if self.adaptive && self.ephemeral {
            self.stable_ticks -= 1;
            if self.stable_ticks <= 0 {
                if self.last_host == Some(self.nat.host()) {
                    self.stable_ticks = MORE_STABLE_TICKS;
                } else {
                    self.update_network_state(false, false);
                }
            }
        }
        if self.tick & 7 == 0 {
            self.ping_some();
        }
        let sparse = self.tick & 63 == 0 && self.order.len() < self.table.k();
        if sparse || {
            self.refresh_ticks -= 1;
            self.refresh_ticks <= 0
        } {
            self.refresh();
        }
        self.down_hints_sent = 0;
        let h = self
            .health
            .update(self.stats.responses, self.stats.timeouts);
        self.set_health(h);
    }

    fn set_health(&mut self, h: Health) {
        if h != self.health_state {
            self.health_state = h;
            self.emit(DhtEvent::NetworkUpdate(h));
        }
    }

    fn on_wakeup(&mut self) {
        self.tick += 2 * OLD_NODE;
        // `tick += 8 - (tick & 7) - 2`: the next multiple of 8 is two ticks away, so the
        // oldest nodes get pinged soon (may step back one when tick & 7 == 7, as in JS).
        self.tick = self.tick + 6 - (self.tick & 7);
        self.stable_ticks = MORE_STABLE_TICKS;
        self.refresh_ticks = 1;
        self.last_host = None;
        self.health.reset();
        self.set_health(self.health.state());
        if self.adaptive && !self.ephemeral {
            self.ephemeral = true;
            self.emit(DhtEvent::Ephemeral);
        }
        self.emit(DhtEvent::Wakeup);
    }

    // ---------------------------------------------------------------- internals: queries

    fn background_query(&mut self, target: NodeId, boot: bool) -> QueryId {
        self.refresh_ticks = REFRESH_TICKS;
        let spec = QuerySpec {
            target,
            command: FIND_NODE,
            internal: true,
            ..QuerySpec::default()
        };
        let bg = self.background_concurrency();
        self.start_query(spec, bg, QueryKind::Background { boot })
    }

    fn background_concurrency(&self) -> usize {
        self.cfg.concurrency.min((self.cfg.concurrency / 8).max(2))
    }

    fn start_query(&mut self, spec: QuerySpec, concurrency: usize, kind: QueryKind) -> QueryId {
        let qid = QueryId(self.next_query);
        self.next_query += 1;
        if self.destroyed || self.queries.len() >= MAX_QUERIES {
            let err = if self.destroyed {
                QueryError::Destroyed
            } else {
                QueryError::Overloaded
            };
            if kind == QueryKind::User {
                self.emit(DhtEvent::QueryDone {
                    query: qid,
                    result: Err(err),
                });
            } else if kind == (QueryKind::Background { boot: true }) {
                self.boot_query_done();
            }
            return qid;
        }
        self.stats.queries_active += 1;
        self.stats.queries_total += 1;
        let retries = spec
            .retries
            .unwrap_or(if spec.internal && spec.command == DOWN_HINT {
                3
            } else {
                QUERY_RETRIES
            });
        let q = Query::new(
            spec.target,
            self.table.k(),
            concurrency,
            &spec.nodes,
            spec.only_closest_nodes,
        );
        self.queries.insert(
            qid,
            QueryState {
                q,
                kind,
                spec,
                retries,
                bg_concurrency: self.background_concurrency(),
                commit_pending: 0,
                commit_ok: 0,
            },
        );
        self.drive_query(qid, |q, env| {
            q.open(env);
            q.read_more(env);
        });
        qid
    }

    fn drive_query(&mut self, qid: QueryId, f: impl FnOnce(&mut Query, &mut QueryEnv<'_>)) {
        let Some(state) = self.queries.get_mut(&qid) else {
            return;
        };
        let table = &self.table;
        let filter = &self.cfg.filter_node;
        let closest = |t: &NodeId, k: usize| -> Vec<Candidate> {
            table
                .closest(t, k)
                .into_iter()
                .map(|(id, n)| Candidate {
                    addr: n.addr,
                    id: *id,
                })
                .collect()
        };
        let allow = |a: &SocketAddrV4| filter.as_ref().is_none_or(|f| f(a));
        let data_concurrency = match state.kind {
            QueryKind::Background { .. } => Some(if self.inflight.len() < 3 {
                self.cfg.concurrency
            } else {
                state.bg_concurrency
            }),
            QueryKind::User => None,
        };
        let mut env = QueryEnv {
            own_id: table.id(),
            table_closest: &closest,
            bootstrap: &self.cfg.bootstrap,
            filter: &allow,
            data_concurrency,
            actions: Vec::new(),
        };
        f(&mut state.q, &mut env);
        let actions = env.actions;
        self.run_query_actions(qid, actions);
    }

    fn run_query_actions(&mut self, qid: QueryId, actions: Vec<QueryAction>) {
        for action in actions {
            let Some(state) = self.queries.get(&qid) else {
                return;
            };
            let kind = state.kind;
            match action {
                QueryAction::Visit(c) => {
                    let spec = RequestSpec {
                        token: None,
                        internal: state.spec.internal,
                        command: state.spec.command,
                        target: Some(state.spec.target),
                        value: state.spec.value.clone(),
                    };
                    let opts = RequestOptions {
                        retries: state.retries,
                        ..RequestOptions::default()
                    };
                    let to = Peer {
                        addr: c.addr,
                        id: Some(c.id),
                    };
                    if self
                        .create_request(to, spec, opts, Purpose::Visit(qid))
                        .is_none()
                    {
                        let err = if self.destroyed {
                            QueryError::Destroyed
                        } else {
                            QueryError::Overloaded
                        };
                        self.finish_query(qid, Err(err));
                        return;
                    }
                }
                QueryAction::DownHint { to, down } => self.send_down_hint(qid, to, down),
                QueryAction::Data(reply) => match kind {
                    QueryKind::User => self.emit(DhtEvent::QueryReply { query: qid, reply }),
                    QueryKind::Background { boot } => {
                        if boot && std::mem::take(&mut self.boot.first) {
                            let spec = RequestSpec {
                                internal: true,
                                command: PING_NAT,
                                value: Some(self.server_port.to_le_bytes().to_vec()),
                                ..RequestSpec::default()
                            };
                            self.create_request(
                                reply.from,
                                spec,
                                RequestOptions::default(),
                                Purpose::QuickNat,
                            );
                        }
                    }
                },
                QueryAction::Flush => self.flush_query(qid),
            }
        }
    }

    fn send_down_hint(&mut self, qid: QueryId, to: Peer, down: SocketAddrV4) {
        if let Some(limit) = self.cfg.down_hints_rate_limit {
            if self.down_hints_sent >= limit {
                return;
            }
        }
        self.down_hints_sent += 1;
        if !self.cfg.send_down_hints {
            return;
        }
        let spec = RequestSpec {
            internal: true,
            command: DOWN_HINT,
            value: Some(messages::encode_ipv4(&down).to_vec()),
            ..RequestSpec::default()
        };
        self.create_request(to, spec, RequestOptions::default(), Purpose::DownHint(qid));
    }

    fn flush_query(&mut self, qid: QueryId) {
        let Some(state) = self.queries.get(&qid) else {
            return;
        };
        if !state.spec.commit {
            let closest = state.q.closest.clone();
            self.finish_query(qid, Ok(closest));
            return;
        }
        if state.q.closest.is_empty() {
            self.finish_query(qid, Err(QueryError::TooFewNodes));
            return;
        }
        let spec = state.spec.clone();
        let targets: Vec<(SocketAddrV4, Option<[u8; 32]>)> = state
            .q
            .closest
            .iter()
            .map(|r| (r.from.addr, r.token))
            .collect();
        let mut pending = 0;
        for (addr, token) in targets {
            let Some(token) = token else { continue };
            let req = RequestSpec {
                token: Some(token),
                internal: false,
                command: spec.command,
                target: Some(spec.target),
                value: spec.value.clone(),
            };
            let to = Peer { addr, id: None };
            if self
                .create_request(to, req, RequestOptions::default(), Purpose::Commit(qid))
                .is_some()
            {
                pending += 1;
            }
        }
        if let Some(state) = self.queries.get_mut(&qid) {
            state.commit_pending = pending;
        }
        if pending == 0 {
            self.finish_query(qid, Err(QueryError::CommitFailed));
        }
    }

    fn on_commit_done(&mut self, qid: QueryId, ok: bool) {
        let Some(state) = self.queries.get_mut(&qid) else {
            return;
        };
        state.commit_pending = state.commit_pending.saturating_sub(1);
        if ok {
            state.commit_ok += 1;
        }
        if state.commit_pending > 0 {
            return;
        }
        let result = if state.commit_ok > 0 {
            Ok(state.q.closest.clone())
        } else {
            Err(QueryError::CommitFailed)
        };
        self.finish_query(qid, result);
    }

    fn finish_query(&mut self, qid: QueryId, result: Result<Vec<Reply>, QueryError>) {
        let Some(state) = self.queries.remove(&qid) else {
            return;
        };
        self.stats.queries_active = self.stats.queries_active.saturating_sub(1);
        // Destroying the query's session cancels its visits and DOWN_HINTs still in flight.
        let mut keys: Vec<u64> = self
            .inflight
            .iter()
            .filter(
                |(_, r)| matches!(r.purpose, Purpose::Visit(q) | Purpose::DownHint(q) if q == qid),
            )
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        for key in keys {
            self.congestion.recv();
            if self.take_request(key).is_some() {
                self.congestion.recv();
            }
        }
        match state.kind {
            QueryKind::User => self.emit(DhtEvent::QueryDone { query: qid, result }),
            QueryKind::Background { boot: true } => self.boot_query_done(),
            QueryKind::Background { boot: false } => {}
        }
    }

    // ---------------------------------------------------------------- internals: bootstrap

    fn start_bootstrap(&mut self) {
        self.boot.first = self.firewalled && self.cfg.quick_firewall && !self.force_persistent;
        let target = *self.table.id();
        self.background_query(target, true);
    }

    fn boot_query_done(&mut self) {
        if self.boot.done || self.destroyed {
            return;
        }
        if self.bootstrapped || (!self.boot.test_nat && !self.force_persistent) {
            self.boot_finish();
            return;
        }
        match self.update_network_state(!self.force_persistent, true) {
            NetState::Done(ok) => self.boot_after_update(ok),
            NetState::Pending => {}
        }
    }

    fn boot_after_update(&mut self, ok: bool) {
        if !ok || self.boot.round >= 1 {
            self.boot_finish();
            return;
        }
        self.boot.round += 1;
        let target = *self.table.id();
        self.background_query(target, true);
    }

    fn boot_finish(&mut self) {
        self.boot.done = true;
        if !self.bootstrapped {
            self.bootstrapped = true;
            self.emit(DhtEvent::Bootstrapped);
        }
    }

    // ---------------------------------------------------------------- internals: NAT

    fn update_network_state(&mut self, only_firewall: bool, from_boot: bool) -> NetState {
        if !self.ephemeral || (only_firewall && !self.firewalled) || self.net_check.is_some() {
            return NetState::Done(false);
        }
        let snapshot = (self.nat.host(), self.nat.port());
        if !only_firewall {
            self.stable_ticks = MORE_STABLE_TICKS;
            self.last_host = Some(snapshot.0);
        }
        if snapshot.0.is_none() || snapshot.1 == 0 {
            return NetState::Done(false);
        }
        if !self.firewalled {
            return NetState::Done(self.finish_network_state(only_firewall, snapshot, None));
        }

        // _checkIfFirewalled: ask up to 5 recent nodes (plus bootstrap nodes) to PING_NAT us
        // on our server socket.
        let mut nodes: Vec<Peer> = self
            .order
            .values()
            .rev()
            .filter_map(|id| {
                self.table.get(id).map(|n| Peer {
                    addr: n.addr,
                    id: Some(*id),
                })
            })
            .take(5)
            .collect();
        if nodes.len() < 5 {
            nodes.extend(self.cfg.bootstrap.iter().map(|a| Peer {
                addr: *a,
                id: Some(node_id(a)),
            }));
        }
        if nodes.is_empty() {
            return NetState::Done(false);
        }
        self.net_check = Some(NetCheck {
            only_firewall,
            from_boot,
            snapshot,
            sampler: NatSampler::new(),
            outstanding: nodes.len() + 1,
            node_count: nodes.len(),
            replies: Vec::new(),
            hosts: HashSet::new(),
        });
        let value = self.server_port.to_le_bytes().to_vec();
        for peer in nodes {
            let spec = RequestSpec {
                internal: true,
                command: PING_NAT,
                value: Some(value.clone()),
                ..RequestSpec::default()
            };
            if self
                .create_request(peer, spec, RequestOptions::default(), Purpose::NatCheck)
                .is_none()
            {
                self.net_check_step();
            }
        }
        // The extra count taken above keeps the check open until every request was
        // created; from here on the check's completion drives the continuation.
        self.net_check_step();
        NetState::Pending
    }

    fn net_check_step(&mut self) {
        let Some(check) = &mut self.net_check else {
            return;
        };
        check.outstanding = check.outstanding.saturating_sub(1);
        if check.outstanding > 0 {
            return;
        }
        let Some(mut check) = self.net_check.take() else {
            return;
        };
        let mut count = 0;
        for (from, to) in &check.replies {
            if check.hosts.contains(from.ip()) {
                count += 1;
                check.sampler.add(*to.ip(), to.port());
            }
        }
        let needed = if check.node_count >= 5 { 3 } else { 1 };
        let firewalled = count < needed
            || check.sampler.host().is_none()
            || self.nat.host() != check.sampler.host()
            || check.sampler.port() == 0
            || check.sampler.port() != self.server_port;
        let ok = !firewalled
            && self.finish_network_state(check.only_firewall, check.snapshot, Some(check.sampler));
        if check.from_boot {
            self.boot_after_update(ok);
        }
    }

    /// The tail of `_updateNetworkState` once the firewall question is settled (open).
    fn finish_network_state(
        &mut self,
        only_firewall: bool,
        snapshot: (Option<Ipv4Addr>, u16),
        sampler: Option<NatSampler>,
    ) -> bool {
        self.firewalled = false;
        if !self.ephemeral || snapshot != (self.nat.host(), self.nat.port()) {
            return false;
        }
        let (host, port) = match &sampler {
            Some(s) => (s.host(), s.port()),
            None => (self.nat.host(), self.nat.port()),
        };
        let Some(host) = host.filter(|h| Some(*h) == snapshot.0) else {
            return false;
        };
        if port == 0 {
            return false;
        }
        let id = node_id(&SocketAddrV4::new(host, port));
        if !only_firewall {
            self.ephemeral = false;
        }
        if let Some(s) = sampler {
            let prev = (self.nat.host(), self.nat.port());
            self.none_persistent_samples.clear();
            self.nat = s;
            let next = (self.nat.host(), self.nat.port());
            if prev != next {
                self.emit(DhtEvent::NatUpdate {
                    host: next.0,
                    port: next.1,
                });
            }
        }
        if &id != self.table.id() {
            self.rekey(id);
            if self.bootstrapped {
                self.refresh();
            }
        }
        if !self.ephemeral {
            self.emit(DhtEvent::Persistent);
        }
        true
    }

    fn rekey(&mut self, id: NodeId) {
        let old = std::mem::replace(&mut self.table, RoutingTable::new(id));
        for (nid, info) in old.into_vec() {
            let order = info.order;
            if nid == id || !self.table.add(nid, info).added() {
                self.order.remove(&order);
            }
        }
    }
}

#[cfg(test)]
mod tests;
