//! The tokio driver: binds the client and server UDP sockets, runs one task that feeds
//! datagrams and timer expiries into a [`DhtNode`] and sends what it asks, and hands out
//! a cloneable async [`Dht`] handle. No protocol logic lives here.
//!
//! Datagrams whose first byte is neither 0x03 nor 0x13 are not dht-rpc; they go to the
//! foreign handler (the UDX stream layer multiplexes its packets over the same sockets)
//! and [`Dht::send_raw`] sends arbitrary bytes from either socket.
//!
//! [`Dht::with_external_io`] starts the same driver without sockets of its own, the way
//! JS dht-rpc runs on udx-native sockets: the layer above owns the UDP sockets (HyperDHT
//! puts UDX streams and the DHT on one socket), feeds received dht-rpc datagrams in with
//! [`Dht::inject_datagram`] and sends what the node asks through a [`SendFn`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::budget::{BudgetStats, RequestBudget, Verdict};
use crate::health::Health;
use crate::messages::{is_dht_message, NodeId, REQUEST_ID};
use crate::node::{
    Config, DhtEvent, DhtNode, IncomingRequest, QueryError, QueryId, QuerySpec, Reply,
    ReplyOptions, RequestError, RequestId, RequestOptions, RequestSpec, SocketKind, Transmit,
};

const COMMAND_QUEUE: usize = 1024;
const QUERY_REPLY_QUEUE: usize = 256;
const MAX_DATAGRAM: usize = 65536;
/// Least time between two warnings about requests dropped by the budget.
const BUDGET_LOG_INTERVAL_MS: u64 = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The request budget, charged before a datagram reaches the node: by the driver for its
/// own sockets and by [`Dht::inject_datagram`] for sockets the layer above owns, so a
/// flood is dropped before it can fill any queue the node shares with other sources.
struct SharedBudget {
    budget: Mutex<RequestBudget>,
    start: Instant,
    /// When we last warned, and the drop count then.
    logged: Mutex<(u64, u64)>,
}

impl SharedBudget {
    fn new(config: crate::budget::BudgetConfig, start: Instant) -> SharedBudget {
        SharedBudget {
            budget: Mutex::new(RequestBudget::new(config, 0)),
            start,
            logged: Mutex::new((0, 0)),
        }
    }

    /// False when `bytes` is a request its source (or everyone) has no budget for.
    fn admit(&self, from: SocketAddrV4, bytes: &[u8]) -> bool {
        if bytes.first() != Some(&REQUEST_ID) {
            return true;
        }
        let now = self.start.elapsed().as_millis() as u64;
        let (verdict, stats) = {
            let mut b = lock(&self.budget);
            let v = b.check(now, *from.ip());
            (v, (v != Verdict::Admit).then(|| b.stats()))
        };
        let Some(stats) = stats else { return true };
        let mut logged = lock(&self.logged);
        if logged.0 == 0 || now.saturating_sub(logged.0) >= BUDGET_LOG_INTERVAL_MS {
            let dropped = stats.requests_dropped_per_source + stats.requests_dropped_global;
            tracing::warn!(
                source = %from.ip(),
                reason = if verdict == Verdict::SourceOverBudget { "source over budget" } else { "global budget spent" },
                dropped_since_last_warning = dropped - logged.1,
                dropped_per_source_total = stats.requests_dropped_per_source,
                dropped_global_total = stats.requests_dropped_global,
                "dht requests dropped by the request budget"
            );
            *logged = (now.max(1), dropped);
        }
        false
    }

    fn stats(&self) -> BudgetStats {
        lock(&self.budget).stats()
    }
}

/// Errors of the async API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// Binding a socket failed.
    #[error("bind failed: {0}")]
    Bind(#[from] std::io::Error),
    /// The request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The query failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The node was destroyed (its task is gone).
    #[error("dht destroyed")]
    Destroyed,
}

/// A datagram that is not dht-rpc, received on one of our sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignDatagram {
    /// The socket it arrived on.
    pub socket: SocketKind,
    /// Sender.
    pub from: SocketAddrV4,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// A snapshot of the node's state, updated after every step of the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Our id when persistent.
    pub id: Option<NodeId>,
    /// The routing table id.
    pub table_id: NodeId,
    /// Requests leave from the client socket.
    pub firewalled: bool,
    /// We do not announce our id.
    pub ephemeral: bool,
    /// The bootstrap walk finished.
    pub bootstrapped: bool,
    /// The node was destroyed.
    pub destroyed: bool,
    /// Sampled public host.
    pub host: Option<Ipv4Addr>,
    /// Sampled public port.
    pub port: u16,
    /// Nodes in the routing table.
    pub table_len: usize,
    /// Network health.
    pub health: Health,
}

impl Status {
    fn of(node: &DhtNode) -> Self {
        Status {
            id: node.id(),
            table_id: node.table_id(),
            firewalled: node.is_firewalled(),
            ephemeral: node.is_ephemeral(),
            bootstrapped: node.is_bootstrapped(),
            destroyed: node.is_destroyed(),
            host: node.host(),
            port: node.port(),
            table_len: node.table_len(),
            health: node.health(),
        }
    }
}

enum Command {
    Request {
        to: SocketAddrV4,
        spec: RequestSpec,
        opts: RequestOptions,
        done: oneshot::Sender<Result<Reply, RequestError>>,
    },
    Query {
        handle: u64,
        spec: QuerySpec,
        replies: mpsc::Sender<Reply>,
        done: oneshot::Sender<Result<Vec<Reply>, QueryError>>,
    },
    DestroyQuery(u64),
    Reply {
        req: Box<IncomingRequest>,
        code: u64,
        value: Option<Vec<u8>>,
        opts: ReplyOptions,
    },
    Relay {
        req: Box<IncomingRequest>,
        value: Option<Vec<u8>>,
        to: SocketAddrV4,
        socket: Option<SocketKind>,
    },
    AddNode(SocketAddrV4),
    Refresh,
    Nodes(Option<usize>, oneshot::Sender<Vec<SocketAddrV4>>),
    SetRequestSink(mpsc::Sender<IncomingRequest>),
    SetForeignSink(mpsc::Sender<ForeignDatagram>, oneshot::Sender<()>),
    SetOtherSocketSink(mpsc::Sender<Transmit>, oneshot::Sender<()>),
    SendRaw(Transmit),
    Inject(SocketKind, SocketAddrV4, Vec<u8>),
    Destroy(oneshot::Sender<()>),
}

/// How a driver without sockets of its own ([`Dht::with_external_io`]) sends a datagram.
/// Called on the driver task: it must not block (UDP semantics: drop when it cannot send).
pub type SendFn = Arc<dyn Fn(&Transmit) + Send + Sync>;

/// The sockets the driver reads and writes.
enum Sockets {
    /// Bound by [`Dht::bind`].
    Owned {
        client: UdpSocket,
        server: UdpSocket,
    },
    /// Owned by the layer above ([`Dht::with_external_io`]).
    External(SendFn),
}

struct Inner {
    cmd: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    client_addr: SocketAddrV4,
    server_addr: SocketAddrV4,
    next_handle: AtomicU64,
    budget: Arc<SharedBudget>,
}

/// A running dht-rpc node. Cheap to clone; the node stops when [`Dht::destroy`] is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct Dht {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dht")
            .field("client", &self.inner.client_addr)
            .field("server", &self.inner.server_addr)
            .finish_non_exhaustive()
    }
}

/// An incoming user request with the means to answer it.
#[derive(Debug, Clone)]
pub struct RequestHandle {
    /// The request.
    pub request: IncomingRequest,
    dht: Dht,
}

impl RequestHandle {
    /// Answers with a value (`ReplyOptions::default()` = token and closer nodes).
    pub async fn reply(&self, value: Option<Vec<u8>>, opts: ReplyOptions) -> Result<(), DhtError> {
        self.dht
            .send(Command::Reply {
                req: Box::new(self.request.clone()),
                code: 0,
                value,
                opts,
            })
            .await
    }

    /// Answers with an error code (`ReplyOptions::error()` for the JS defaults).
    pub async fn error(&self, code: u64, opts: ReplyOptions) -> Result<(), DhtError> {
        self.dht
            .send(Command::Reply {
                req: Box::new(self.request.clone()),
                code,
                value: None,
                opts,
            })
            .await
    }

    /// Forwards the request to another node (HyperDHT routing).
    pub async fn relay(
        &self,
        value: Option<Vec<u8>>,
        to: SocketAddrV4,
        socket: Option<SocketKind>,
    ) -> Result<(), DhtError> {
        self.dht
            .send(Command::Relay {
                req: Box::new(self.request.clone()),
                value,
                to,
                socket,
            })
            .await
    }
}

/// A running query: replies as they come, then the closest replies.
pub struct QueryStream {
    handle: u64,
    dht: Dht,
    replies: mpsc::Receiver<Reply>,
    done: Option<oneshot::Receiver<Result<Vec<Reply>, QueryError>>>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl QueryStream {
    /// The next successful reply; `None` once the query ended. Replies the caller does
    /// not read fast enough are dropped (the final result still has the closest ones).
    pub async fn next(&mut self) -> Option<Reply> {
        self.replies.recv().await
    }

    /// Waits for the end of the query: its (at most k) closest replies, nearest first.
    pub async fn finish(mut self) -> Result<Vec<Reply>, DhtError> {
        let done = self.done.take().ok_or(DhtError::Destroyed)?;
        match done.await {
            Ok(r) => r.map_err(DhtError::Query),
            Err(_) => Err(DhtError::Destroyed),
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        if self.done.is_some() {
            let _ = self
                .dht
                .inner
                .cmd
                .try_send(Command::DestroyQuery(self.handle));
        }
    }
}

async fn bind_server(cfg: &Config) -> std::io::Result<UdpSocket> {
    if cfg.port != 0 {
        let last = cfg.port.saturating_add(4);
        let mut err = None;
        for port in cfg.port..=last {
            match UdpSocket::bind(SocketAddrV4::new(cfg.host, port)).await {
                Ok(s) => return Ok(s),
                Err(e) if !cfg.any_port => return Err(e),
                Err(e) => err = Some(e),
            }
        }
        if !cfg.any_port {
            return Err(err.unwrap_or_else(|| std::io::Error::other("no port")));
        }
    }
    UdpSocket::bind(SocketAddrV4::new(cfg.host, 0)).await
}

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

impl Dht {
    /// Binds the sockets on `config.host` and starts the node (it bootstraps at once).
    pub async fn bind(config: Config) -> Result<Dht, DhtError> {
        let server = bind_server(&config).await?;
        let client = UdpSocket::bind(SocketAddrV4::new(config.host, 0)).await?;
        let server_addr =
            v4(server.local_addr()?).ok_or_else(|| std::io::Error::other("not ipv4"))?;
        let client_addr =
            v4(client.local_addr()?).ok_or_else(|| std::io::Error::other("not ipv4"))?;
        Ok(Self::start(
            config,
            Sockets::Owned { client, server },
            server_addr,
            client_addr,
        ))
    }

    /// Starts a node whose sockets someone else owns: `server_addr` and `client_addr` are
    /// their local addresses, datagrams received on them come in through
    /// [`Dht::inject_datagram`] (as [`SocketKind::Server`] / [`SocketKind::Client`]), and
    /// everything the node sends, from any [`SocketKind`], goes to `send`.
    pub fn with_external_io(
        config: Config,
        server_addr: SocketAddrV4,
        client_addr: SocketAddrV4,
        send: SendFn,
    ) -> Dht {
        Self::start(config, Sockets::External(send), server_addr, client_addr)
    }

    fn start(
        mut config: Config,
        sockets: Sockets,
        server_addr: SocketAddrV4,
        client_addr: SocketAddrV4,
    ) -> Dht {
        // A bootstrapper asked for port 0 learns its port only now; its public address
        // (and so its node id) must carry the port it really got.
        if let Some(public) = config.public_address.as_mut() {
            if public.port() == 0 {
                public.set_port(server_addr.port());
            }
        }
        let start = Instant::now();
        let budget = Arc::new(SharedBudget::new(config.request_budget, start));
        let node = DhtNode::new(config, server_addr.port(), 0);
        let (status_tx, status_rx) = watch::channel(Status::of(&node));
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let driver = Driver {
            node,
            start,
            sockets,
            cmd: cmd_rx,
            status: status_tx,
            requests: HashMap::new(),
            queries: HashMap::new(),
            query_handles: HashMap::new(),
            request_sink: None,
            foreign_sink: None,
            other_sink: None,
            destroy_waiters: Vec::new(),
            raw_queue: Vec::new(),
            budget: budget.clone(),
        };
        tokio::spawn(driver.run());
        Dht {
            inner: Arc::new(Inner {
                cmd: cmd_tx,
                status: status_rx,
                client_addr,
                server_addr,
                next_handle: AtomicU64::new(0),
                budget,
            }),
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), DhtError> {
        self.inner
            .cmd
            .send(cmd)
            .await
            .map_err(|_| DhtError::Destroyed)
    }

    /// Sends a request and waits for its response (a response carrying an error code is
    /// still `Ok`; check `reply.error`).
    pub async fn request(
        &self,
        to: SocketAddrV4,
        spec: RequestSpec,
        opts: RequestOptions,
    ) -> Result<Reply, DhtError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::Request {
            to,
            spec,
            opts,
            done,
        })
        .await?;
        rx.await
            .map_err(|_| DhtError::Destroyed)?
            .map_err(DhtError::Request)
    }

    /// PINGs a node.
    pub async fn ping(&self, to: SocketAddrV4) -> Result<Reply, DhtError> {
        let spec = RequestSpec {
            internal: true,
            command: crate::commands::PING,
            ..RequestSpec::default()
        };
        self.request(to, spec, RequestOptions::default()).await
    }

    /// Starts a query.
    pub async fn query(&self, spec: QuerySpec) -> Result<QueryStream, DhtError> {
        let handle = self.inner.next_handle.fetch_add(1, Ordering::Relaxed);
        let (replies_tx, replies) = mpsc::channel(QUERY_REPLY_QUEUE);
        let (done_tx, done) = oneshot::channel();
        self.send(Command::Query {
            handle,
            spec,
            replies: replies_tx,
            done: done_tx,
        })
        .await?;
        Ok(QueryStream {
            handle,
            dht: self.clone(),
            replies,
            done: Some(done),
        })
    }

    /// A FIND_NODE walk towards `target`.
    pub async fn find_node(&self, target: NodeId) -> Result<QueryStream, DhtError> {
        self.query(QuerySpec {
            target,
            command: crate::commands::FIND_NODE,
            internal: true,
            ..QuerySpec::default()
        })
        .await
    }

    /// Waits until the bootstrap walk finished.
    pub async fn bootstrapped(&self) -> Result<(), DhtError> {
        let mut rx = self.inner.status.clone();
        rx.wait_for(|s| s.bootstrapped || s.destroyed)
            .await
            .map_err(|_| DhtError::Destroyed)?;
        if rx.borrow().bootstrapped {
            Ok(())
        } else {
            Err(DhtError::Destroyed)
        }
    }

    /// Waits until the node is persistent (announces its id).
    pub async fn persistent(&self) -> Result<NodeId, DhtError> {
        let mut rx = self.inner.status.clone();
        let s = rx
            .wait_for(|s| s.id.is_some() || s.destroyed)
            .await
            .map_err(|_| DhtError::Destroyed)?;
        s.id.ok_or(DhtError::Destroyed)
    }

    /// The current state.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.status.clone()
    }

    /// Our id when persistent.
    pub fn id(&self) -> Option<NodeId> {
        self.inner.status.borrow().id
    }

    /// Whether requests leave from the client socket.
    pub fn is_firewalled(&self) -> bool {
        self.inner.status.borrow().firewalled
    }

    /// Whether we keep our id to ourselves.
    pub fn is_ephemeral(&self) -> bool {
        self.inner.status.borrow().ephemeral
    }

    /// The server socket's local address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.inner.server_addr
    }

    /// The client socket's local address.
    pub fn client_addr(&self) -> SocketAddrV4 {
        self.inner.client_addr
    }

    /// The server socket's port.
    pub fn server_port(&self) -> u16 {
        self.inner.server_addr.port()
    }

    /// Routes incoming user requests to a new bounded channel (replacing any earlier
    /// one). Without a live receiver requests are refused with UNKNOWN_COMMAND, like a JS
    /// node without a request handler; when the channel is full they are dropped.
    pub async fn incoming_requests(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<RequestHandle>, DhtError> {
        let (tx, mut raw_rx) = mpsc::channel::<IncomingRequest>(capacity.max(1));
        let (out_tx, out_rx) = mpsc::channel(capacity.max(1));
        self.send(Command::SetRequestSink(tx)).await?;
        // Wrap each request with a handle to answer it; a weak link so an idle receiver
        // does not keep the node alive.
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(request) = raw_rx.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                let handle = RequestHandle {
                    request,
                    dht: Dht { inner },
                };
                if out_tx.send(handle).await.is_err() {
                    break;
                }
            }
        });
        Ok(out_rx)
    }

    /// Routes datagrams that are not dht-rpc to a new bounded channel (replacing any
    /// earlier one); without it they are dropped, as they are when it is full.
    pub async fn set_foreign_handler(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<ForeignDatagram>, DhtError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (done, installed) = oneshot::channel();
        self.send(Command::SetForeignSink(tx, done)).await?;
        // Installed before we return, so a datagram sent after this call cannot overtake
        // the handler in the driver's queue.
        installed.await.map_err(|_| DhtError::Destroyed)?;
        Ok(rx)
    }

    /// Routes datagrams the node wants sent from [`SocketKind::Other`] sockets (owned by
    /// the layer above) to a new bounded channel.
    pub async fn set_other_socket_sink(
        &self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Transmit>, DhtError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (done, installed) = oneshot::channel();
        self.send(Command::SetOtherSocketSink(tx, done)).await?;
        installed.await.map_err(|_| DhtError::Destroyed)?;
        Ok(rx)
    }

    /// Feeds a datagram received on a socket the layer above owns into the node. A
    /// request over the request budget ([`Config::request_budget`]) is dropped here.
    pub async fn inject_datagram(
        &self,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: Vec<u8>,
    ) -> Result<(), DhtError> {
        if !self.inner.budget.admit(from, &bytes) {
            return Ok(());
        }
        self.send(Command::Inject(socket, from, bytes)).await
    }

    /// The request budget's counters: requests admitted and dropped (per source, global).
    pub fn request_budget_stats(&self) -> BudgetStats {
        self.inner.budget.stats()
    }

    /// Sends raw bytes from one of our sockets (UDX packets, holepunch probes).
    pub async fn send_raw(
        &self,
        socket: SocketKind,
        to: SocketAddrV4,
        bytes: Vec<u8>,
    ) -> Result<(), DhtError> {
        self.send(Command::SendRaw(Transmit { socket, to, bytes }))
            .await
    }

    /// Adds a node to the routing table.
    pub async fn add_node(&self, addr: SocketAddrV4) -> Result<(), DhtError> {
        self.send(Command::AddNode(addr)).await
    }

    /// Starts a background refresh.
    pub async fn refresh(&self) -> Result<(), DhtError> {
        self.send(Command::Refresh).await
    }

    /// Routing table nodes, most recently heard from first.
    pub async fn nodes(&self, limit: Option<usize>) -> Result<Vec<SocketAddrV4>, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Nodes(limit, tx)).await?;
        rx.await.map_err(|_| DhtError::Destroyed)
    }

    /// Stops the node: pending requests and queries fail, the sockets close.
    pub async fn destroy(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Destroy(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Driver {
    node: DhtNode,
    start: Instant,
    sockets: Sockets,
    cmd: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    requests: HashMap<RequestId, oneshot::Sender<Result<Reply, RequestError>>>,
    queries: HashMap<QueryId, QueryChannels>,
    query_handles: HashMap<u64, QueryId>,
    request_sink: Option<mpsc::Sender<IncomingRequest>>,
    foreign_sink: Option<mpsc::Sender<ForeignDatagram>>,
    other_sink: Option<mpsc::Sender<Transmit>>,
    destroy_waiters: Vec<oneshot::Sender<()>>,
    raw_queue: Vec<Transmit>,
    budget: Arc<SharedBudget>,
}

/// Receives from `socket`, or never when there is none.
async fn recv_from(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

struct QueryChannels {
    handle: u64,
    replies: mpsc::Sender<Reply>,
    done: oneshot::Sender<Result<Vec<Reply>, QueryError>>,
}

impl Driver {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(mut self) {
        let mut client_buf = vec![0u8; MAX_DATAGRAM];
        let mut server_buf = vec![0u8; MAX_DATAGRAM];
        loop {
            self.flush().await;
            if self.node.is_destroyed() {
                break;
            }
            let deadline = self.node.poll_timeout().map_or_else(
                || self.start + Duration::from_secs(3600),
                |t| self.start + Duration::from_millis(t),
            );
            let (client, server) = match &self.sockets {
                Sockets::Owned { client, server } => (Some(client), Some(server)),
                Sockets::External(_) => (None, None),
            };
            tokio::select! {
                r = recv_from(client, &mut client_buf) => {
                    if let Ok((n, from)) = r {
                        self.on_datagram(SocketKind::Client, from, &client_buf[..n]);
                    }
                }
                r = recv_from(server, &mut server_buf) => {
                    if let Ok((n, from)) = r {
                        self.on_datagram(SocketKind::Server, from, &server_buf[..n]);
                    }
                }
                cmd = self.cmd.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.node.destroy(),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
            }
        }
        self.flush().await;
        for w in self.destroy_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn on_datagram(&mut self, socket: SocketKind, from: SocketAddr, bytes: &[u8]) {
        let Some(from) = v4(from) else { return };
        if is_dht_message(bytes) {
            if !self.budget.admit(from, bytes) {
                return;
            }
            let now = self.now();
            self.node.handle_datagram(now, socket, from, bytes);
        } else if let Some(sink) = &self.foreign_sink {
            let _ = sink.try_send(ForeignDatagram {
                socket,
                from,
                bytes: bytes.to_vec(),
            });
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Request {
                to,
                spec,
                opts,
                done,
            } => {
                let id = self.node.request_with(now, to, spec, opts);
                self.requests.insert(id, done);
            }
            Command::Query {
                handle,
                spec,
                replies,
                done,
            } => {
                let id = self.node.query(now, spec);
                self.query_handles.insert(handle, id);
                self.queries.insert(
                    id,
                    QueryChannels {
                        handle,
                        replies,
                        done,
                    },
                );
            }
            Command::DestroyQuery(handle) => {
                if let Some(id) = self.query_handles.get(&handle).copied() {
                    self.node.destroy_query(id);
                }
            }
            Command::Reply {
                req,
                code,
                value,
                opts,
            } => {
                if code == 0 {
                    self.node.reply(&req, value, opts);
                } else {
                    self.node.error_reply(&req, code, opts);
                }
            }
            Command::Relay {
                req,
                value,
                to,
                socket,
            } => self.node.relay(&req, value, to, socket),
            Command::AddNode(addr) => self.node.add_node(addr),
            Command::Refresh => self.node.refresh(),
            Command::Nodes(limit, tx) => {
                let _ = tx.send(self.node.nodes(limit));
            }
            Command::SetRequestSink(tx) => self.request_sink = Some(tx),
            Command::SetForeignSink(tx, done) => {
                self.foreign_sink = Some(tx);
                let _ = done.send(());
            }
            Command::SetOtherSocketSink(tx, done) => {
                self.other_sink = Some(tx);
                let _ = done.send(());
            }
            Command::SendRaw(t) => self.node_raw(t),
            Command::Inject(socket, from, bytes) => {
                self.node.handle_datagram(now, socket, from, &bytes)
            }
            Command::Destroy(tx) => {
                self.destroy_waiters.push(tx);
                self.node.destroy();
            }
        }
    }

    fn node_raw(&mut self, t: Transmit) {
        // Raw sends bypass the node; they go out with the next flush (one per command).
        self.raw_queue.push(t);
    }

    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.node.poll_transmit() {
                progressed = true;
                self.send_datagram(t).await;
            }
            for t in std::mem::take(&mut self.raw_queue) {
                progressed = true;
                self.send_datagram(t).await;
            }
            while let Some(ev) = self.node.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            if !progressed {
                break;
            }
        }
        let status = Status::of(&self.node);
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    async fn send_datagram(&mut self, t: Transmit) {
        let (client, server) = match &self.sockets {
            Sockets::Owned { client, server } => (client, server),
            Sockets::External(send) => {
                send(&t);
                return;
            }
        };
        let socket = match t.socket {
            SocketKind::Client => client,
            SocketKind::Server => server,
            SocketKind::Other(_) => {
                if let Some(sink) = &self.other_sink {
                    let _ = sink.try_send(t);
                }
                return;
            }
        };
        if let Err(e) = socket.send_to(&t.bytes, SocketAddr::V4(t.to)).await {
            tracing::trace!(to = %t.to, error = %e, "udp send failed");
        }
    }

    fn on_event(&mut self, ev: DhtEvent) {
        match ev {
            DhtEvent::Request(req) => {
                let refused = match &self.request_sink {
                    Some(sink) => match sink.try_send(req) {
                        Ok(()) => None,
                        Err(mpsc::error::TrySendError::Full(_)) => None,
                        Err(mpsc::error::TrySendError::Closed(req)) => Some(req),
                    },
                    None => Some(req),
                };
                if let Some(req) = refused {
                    let closer = req.target.is_some();
                    let opts = ReplyOptions {
                        closer_nodes: closer,
                        ..ReplyOptions::error()
                    };
                    self.node
                        .error_reply(&req, crate::errors::UNKNOWN_COMMAND, opts);
                }
            }
            DhtEvent::RequestDone { request, result } => {
                if let Some(tx) = self.requests.remove(&request) {
                    let _ = tx.send(result);
                }
            }
            DhtEvent::QueryReply { query, reply } => {
                if let Some(q) = self.queries.get(&query) {
                    let _ = q.replies.try_send(reply);
                }
            }
            DhtEvent::QueryDone { query, result } => {
                if let Some(q) = self.queries.remove(&query) {
                    self.query_handles.remove(&q.handle);
                    let _ = q.done.send(result);
                }
            }
            other => tracing::debug!(event = ?other, "dht event"),
        }
    }
}
