//! [`HyperDht`]: a running HyperDHT node (the `HyperDHT` class of `index.js`) on top of a
//! dht-rpc [`Dht`].
//!
//! Serving: one task takes the node's incoming user requests from a bounded queue and
//! answers them as `HyperDHT.onrequest` does: the record commands from the
//! [`RecordStore`] once the node is persistent (`UNKNOWN_COMMAND` before that, and for
//! unknown commands), PEER_HANDSHAKE / PEER_HOLEPUNCH through [`crate::router`] (a node
//! with no server of its own relays to announced peers or hands out closer nodes). The
//! same task runs the store's GC ticks on the wall clock.
//!
//! Client operations run a dht-rpc query and then, where JS uses a custom `commit`, send
//! the commit requests themselves, to each closest reply with the token that node handed
//! out (announce signatures are per node: they cover the node's id and token). Request
//! construction, reply mapping and the mutable "latest" choice are the pure functions of
//! [`crate::ops`].
//!
//! Connections: the node's UDP sockets are [`crate::socket::Sockets`], shared by dht-rpc
//! (run with [`Dht::with_external_io`]) and the UDX streams of connections, as in JS.
//! [`HyperDht::listen`] starts a [`Server`] (its handshakes and holepunch rounds arrive
//! as [`RouteAction::Server`] and are answered on a task of their own) and
//! [`HyperDht::connect`] connects to one.
//!
//! Differences from JS: PLUGIN requests are dropped (no plugin API yet);
//! [`HyperDhtConfig::new`] binds any free port rather than 49737; commits to closest nodes
//! that handed out no token count as failed without being sent (JS sends them and lets
//! them time out).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use intercom_crypto::KeyPair;
use intercom_dht_rpc::driver::Status;
use intercom_dht_rpc::SocketKind;
use intercom_dht_rpc::{
    Config, Dht, DhtError, Peer as NodeRef, QuerySpec, QueryStream, Reply, ReplyOptions,
    RequestHandle, RequestOptions, RequestSpec,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::connect::{ConnectError, ConnectOptions};
use crate::connection::Connection;
use crate::constants::mode::{FROM_CLIENT, FROM_RELAY, FROM_SECOND_RELAY, FROM_SERVER, REPLY};
use crate::constants::Command;
use crate::context::NodeCtx;
use crate::crypto::hash;
use crate::messages::{Handshake, Holepunch, Peer};
use crate::ops::{
    announce_request, immutable_put_request, map_find_peer, map_immutable, map_lookup, map_mutable,
    mutable_get_value, mutable_put_request, sign_mutable_put, unannounce_request, verify_immutable,
    wants_unannounce, FindPeerResult, ImmutableResult, LookupResult, MutableResult,
    MutableSelector, MutableStep,
};
use crate::router::{route_handshake, route_holepunch, RouteAction};
use crate::server::{ListenOptions, Server, ServerInner, ServerTable};
use crate::socket::{Sockets, SocketsConfig};
use crate::store::{Dispatch, Forward, RecordStore, Request, Response, StoreConfig, StoreSizes};
use intercom_encoding::{decode, encode};

/// Default bound of the incoming request queue.
pub const DEFAULT_REQUEST_QUEUE: usize = 1024;
/// Server handshake / holepunch requests handled at once; more are dropped.
const MAX_SERVER_TASKS: usize = 256;
/// Least time between two punches through random NATs (`randomPunchInterval`).
pub const RANDOM_PUNCH_INTERVAL: Duration = Duration::from_secs(20);
/// Longest sleep of the GC timer when no cache clock is running yet.
const IDLE_GC_CHECK: Duration = Duration::from_secs(60);

/// Errors of [`HyperDht`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HyperDhtError {
    /// The dht-rpc layer failed (bind, query or request error, node destroyed).
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// The query found no node to commit to (JS: "Too few nodes responded").
    #[error("too few nodes responded")]
    TooFewNodes,
    /// Every commit request failed.
    #[error("every commit request failed")]
    CommitFailed,
    /// Binding the sockets failed.
    #[error("socket: {0}")]
    Socket(#[from] intercom_udx::UdxError),
    /// A server of this node already listens on the key (`KEYPAIR_ALREADY_USED`).
    #[error("already listening on this key pair")]
    AlreadyListening,
}

/// Configuration of a [`HyperDht`].
#[derive(Debug, Clone)]
pub struct HyperDhtConfig {
    /// The dht-rpc node (bootstrap nodes, host, port, persistence, …). A missing
    /// `filter_node` gets the JS HyperDHT filter of stray testnet nodes.
    pub dht: Config,
    /// Record cache limits (`maxSize` / `maxAge`).
    pub store: StoreConfig,
    /// Bound of the queue of incoming requests waiting to be served (excess is dropped).
    pub request_queue: usize,
    /// UDX settings of the node's sockets (connections' streams).
    pub udx: intercom_udx::SocketConfig,
    /// Least time between two punches through random NATs.
    pub random_punch_interval: Duration,
    /// Limits on inbound connections and on the memory of their frames (see
    /// [`crate::limits`]).
    pub connection_limits: crate::limits::ConnectionLimits,
}

impl HyperDhtConfig {
    /// A node with the JS defaults that bootstraps from `bootstrap` (on any free port).
    pub fn new(bootstrap: Vec<SocketAddrV4>) -> Self {
        HyperDhtConfig {
            dht: Config {
                bootstrap,
                ..Config::default()
            },
            store: StoreConfig::default(),
            request_queue: DEFAULT_REQUEST_QUEUE,
            udx: intercom_udx::SocketConfig::default(),
            random_punch_interval: RANDOM_PUNCH_INTERVAL,
            connection_limits: crate::limits::ConnectionLimits::default(),
        }
    }

    /// `HyperDHT.bootstrapper(port, host)`: the first node of a network, persistent and
    /// unfirewalled on `host:port` (bound on `host`).
    pub fn bootstrapper(port: u16, host: Ipv4Addr) -> Self {
        HyperDhtConfig {
            dht: Config {
                host,
                ..Config::bootstrapper(port, host)
            },
            store: StoreConfig::default(),
            request_queue: DEFAULT_REQUEST_QUEUE,
            udx: intercom_udx::SocketConfig::default(),
            random_punch_interval: RANDOM_PUNCH_INTERVAL,
            connection_limits: crate::limits::ConnectionLimits::default(),
        }
    }
}

/// `filterNode` of `index.js`: testnet nodes that leaked into the public network.
pub fn js_filter_node(addr: &SocketAddrV4) -> bool {
    let ip = addr.ip().octets();
    let port = addr.port();
    !(port == 49738 && (ip == [134, 209, 28, 98] || ip == [167, 99, 142, 185]))
        && !(port == 9400 && ip == [35, 233, 47, 252])
        && ip != [150, 136, 142, 116]
}

/// A query whose replies are mapped (the JS query stream with a `map`).
pub struct MappedQuery<T> {
    stream: QueryStream,
    map: fn(&Reply) -> Option<T>,
}

impl<T> std::fmt::Debug for MappedQuery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedQuery")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<T> MappedQuery<T> {
    /// The next reply that maps to a value; `None` once the query ended.
    pub async fn next(&mut self) -> Option<T> {
        loop {
            let reply = self.stream.next().await?;
            if let Some(v) = (self.map)(&reply) {
                return Some(v);
            }
        }
    }

    /// Waits for the end of the query: the closest replies, nearest first
    /// (`query.closestReplies`).
    pub async fn finish(self) -> Result<Vec<Reply>, HyperDhtError> {
        Ok(self.stream.finish().await?)
    }
}

/// What `announce` did.
#[derive(Debug, Clone)]
pub struct AnnounceResult {
    /// The nodes the announcement was sent to (`query.closestNodes`).
    pub closest_nodes: Vec<NodeRef>,
    /// How many of them acknowledged.
    pub committed: usize,
    /// The lookup replies seen on the way (peers already announced under the topic).
    pub replies: Vec<LookupResult>,
}

/// Options of `announce`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnnounceOptions {
    /// Announce timestamp for topic ordering (ms; 0 = none).
    pub bump: u64,
    /// Unannounce from the nodes that have our record first (`opts.clear`).
    pub clear: bool,
}

/// What `unannounce` did.
#[derive(Debug, Clone)]
pub struct UnannounceResult {
    /// The closest nodes of the lookup.
    pub closest_nodes: Vec<NodeRef>,
    /// UNANNOUNCE requests that were answered.
    pub unannounced: usize,
}

/// What `immutable_put` did.
#[derive(Debug, Clone)]
pub struct ImmutablePutResult {
    /// `hash(value)`: the key to get it with.
    pub hash: [u8; 32],
    /// The nodes it was stored on.
    pub closest_nodes: Vec<NodeRef>,
}

/// What `mutable_put` did.
#[derive(Debug, Clone)]
pub struct MutablePutResult {
    /// The signer's key (its hash is the target).
    pub public_key: [u8; 32],
    /// The nodes it was stored on.
    pub closest_nodes: Vec<NodeRef>,
    /// Sequence number.
    pub seq: u64,
    /// Signature.
    pub signature: [u8; 64],
}

/// Options of `mutable_put`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MutablePutOptions {
    /// Sequence number (`opts.seq`, default 0).
    pub seq: u64,
}

/// Options of `mutable_get`.
#[derive(Debug, Clone, Copy)]
pub struct MutableGetOptions {
    /// Minimum seq (`opts.seq`, default 0).
    pub seq: u64,
    /// Keep looking for the highest seq (`opts.latest`, default true); otherwise the
    /// first valid value wins.
    pub latest: bool,
}

impl Default for MutableGetOptions {
    fn default() -> Self {
        MutableGetOptions {
            seq: 0,
            latest: true,
        }
    }
}

struct Inner {
    dht: Dht,
    store: Arc<Mutex<RecordStore>>,
    ctx: Arc<NodeCtx>,
    servers: Arc<ServerTable>,
}

/// A running HyperDHT node. Cheap to clone; it stops on [`HyperDht::destroy`] or when
/// every handle (and every handle of its [`Dht`]) is dropped.
#[derive(Clone)]
pub struct HyperDht {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HyperDht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperDht")
            .field("dht", &self.inner.dht)
            .finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds (`Date.now()`), the clock of the record store.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock(store: &Mutex<RecordStore>) -> MutexGuard<'_, RecordStore> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_servers(
    s: &ServerTable,
) -> MutexGuard<'_, std::collections::HashMap<[u8; 32], std::sync::Weak<ServerInner>>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closest_nodes(replies: &[Reply]) -> Vec<NodeRef> {
    replies.iter().map(|r| r.from).collect()
}

impl HyperDht {
    /// Binds and starts a node.
    pub async fn bind(mut config: HyperDhtConfig) -> Result<HyperDht, HyperDhtError> {
        if config.dht.filter_node.is_none() {
            config.dht.filter_node = Some(Arc::new(js_filter_node));
        }
        let sockets = Sockets::bind(SocketsConfig {
            host: config.dht.host,
            port: config.dht.port,
            any_port: config.dht.any_port,
            udx: config.udx.clone(),
        })?;
        let dht = Dht::with_external_io(
            config.dht,
            sockets.server().local_addr(),
            sockets.client().local_addr(),
            sockets.send_fn(),
        );
        sockets.start(dht.clone());
        let ctx = Arc::new(NodeCtx::new(
            dht.clone(),
            sockets,
            config.random_punch_interval,
            config.connection_limits,
        ));
        let store = Arc::new(Mutex::new(RecordStore::new(config.store)));
        let servers: Arc<ServerTable> = Arc::default();
        let requests = dht.incoming_requests(config.request_queue).await?;
        tokio::spawn(serve(
            requests,
            dht.watch_status(),
            store.clone(),
            servers.clone(),
        ));
        Ok(HyperDht {
            inner: Arc::new(Inner {
                dht,
                store,
                ctx,
                servers,
            }),
        })
    }

    /// `HyperDHT.bootstrapper(port, host)`.
    pub async fn bootstrapper(port: u16, host: Ipv4Addr) -> Result<HyperDht, HyperDhtError> {
        HyperDht::bind(HyperDhtConfig::bootstrapper(port, host)).await
    }

    /// The dht-rpc node underneath (addresses, status, `bootstrapped()`, `persistent()`).
    pub fn dht(&self) -> &Dht {
        &self.inner.dht
    }

    /// Our reachable address (`remoteAddress()`): when we are not firewalled and the
    /// sampled port is our server port.
    pub fn remote_address(&self) -> Option<SocketAddrV4> {
        self.inner.ctx.remote_address()
    }

    /// Counters of inbound connections (pending, open, refused by each limit) and of
    /// frames refused, for metrics.
    pub fn connection_stats(&self) -> crate::limits::ConnectionStats {
        self.inner.ctx.limiter.stats()
    }

    /// The connection limits in force.
    pub fn connection_limits(&self) -> crate::limits::ConnectionLimits {
        *self.inner.ctx.limiter.limits()
    }

    /// Counters of the dht-rpc request budget (requests admitted, dropped per source and
    /// globally), for metrics.
    pub fn request_budget_stats(&self) -> intercom_dht_rpc::BudgetStats {
        self.inner.dht.request_budget_stats()
    }

    /// Open holepunch sockets (the socket pool).
    pub fn pool_sockets(&self) -> usize {
        self.inner.ctx.sockets.pool_size()
    }

    /// `createServer().listen(keyPair)`: answers handshakes for `key_pair`'s public key
    /// and keeps it announced under `hash(publicKey)`. Resolves after the first
    /// announcement.
    pub async fn listen(
        &self,
        key_pair: KeyPair,
        opts: ListenOptions,
    ) -> Result<Server, HyperDhtError> {
        let target = hash(&key_pair.public_key);
        let record = encode(&Peer {
            public_key: key_pair.public_key,
            relay_addresses: Vec::new(),
        });
        let (mut server, inner) = Server::new(self.inner.ctx.clone(), key_pair, target, opts);
        {
            let mut servers = lock_servers(&self.inner.servers);
            servers.retain(|_, w| w.strong_count() > 0);
            if servers.contains_key(&target) {
                return Err(HyperDhtError::AlreadyListening);
            }
            servers.insert(target, Arc::downgrade(&inner));
        }
        lock(&self.inner.store).set_forward(
            target,
            Forward {
                relay: None,
                record,
                local: true,
            },
        );
        let (store, servers) = (
            Arc::downgrade(&self.inner.store),
            Arc::downgrade(&self.inner.servers),
        );
        server.set_on_close(Box::new(move || {
            if let Some(s) = servers.upgrade() {
                lock_servers(&s).remove(&target);
            }
            if let Some(s) = store.upgrade() {
                lock(&s).delete_forward(&target);
            }
        }));
        inner.start_announcing().await;
        Ok(server)
    }

    /// `connect(remotePublicKey)`: finds the server, runs the handshake through its
    /// relays, holepunches when needed and returns the opened connection.
    pub async fn connect(
        &self,
        remote_public_key: [u8; 32],
        opts: ConnectOptions,
    ) -> Result<Connection, ConnectError> {
        crate::connect::connect(self.inner.ctx.clone(), remote_public_key, opts).await
    }

    /// How many records this node stores for others.
    pub fn store_sizes(&self) -> StoreSizes {
        lock(&self.inner.store).sizes()
    }

    /// Stops the node and drops its records.
    pub async fn destroy(&self) {
        self.inner.dht.destroy().await;
        lock(&self.inner.store).clear();
    }

    async fn query<T>(
        &self,
        target: [u8; 32],
        command: Command,
        value: Option<Vec<u8>>,
        map: fn(&Reply) -> Option<T>,
    ) -> Result<MappedQuery<T>, HyperDhtError> {
        let stream = self
            .inner
            .dht
            .query(QuerySpec {
                target,
                command: command.id(),
                value,
                ..QuerySpec::default()
            })
            .await?;
        Ok(MappedQuery { stream, map })
    }

    /// `lookup(target)`: the peers announced under a topic, one item per node that has
    /// some.
    pub async fn lookup(
        &self,
        target: [u8; 32],
    ) -> Result<MappedQuery<LookupResult>, HyperDhtError> {
        self.query(target, Command::Lookup, None, map_lookup).await
    }

    /// `findPeer(publicKey)`: the record of a peer that announced itself under
    /// `hash(publicKey)` (a listening server).
    pub async fn find_peer(
        &self,
        public_key: &[u8; 32],
    ) -> Result<MappedQuery<FindPeerResult>, HyperDhtError> {
        self.query(hash(public_key), Command::FindPeer, None, map_find_peer)
            .await
    }

    /// `announce(target, keyPair, relayAddresses)`: a LOOKUP walk, then an ANNOUNCE signed
    /// for each closest node with its token.
    pub async fn announce(
        &self,
        target: [u8; 32],
        key_pair: &KeyPair,
        relay_addresses: &[SocketAddrV4],
        opts: AnnounceOptions,
    ) -> Result<AnnounceResult, HyperDhtError> {
        let (replies, closest) = if opts.clear {
            let (replies, closest, _) = self.lookup_and_unannounce(target, key_pair).await?;
            (replies, closest)
        } else {
            let mut q = self.lookup(target).await?;
            let mut replies = Vec::new();
            while let Some(r) = q.next().await {
                replies.push(r);
            }
            (replies, q.finish().await?)
        };
        let committed = self
            .commit(&closest, |r| {
                let (token, id) = (r.token?, r.from.id?);
                Some(announce_request(
                    &target,
                    &token,
                    &id,
                    key_pair,
                    relay_addresses,
                    opts.bump,
                ))
            })
            .await?;
        Ok(AnnounceResult {
            closest_nodes: closest_nodes(&closest),
            committed,
            replies,
        })
    }

    /// `unannounce(target, keyPair)`: a LOOKUP walk that sends a signed UNANNOUNCE to
    /// every node that holds our record; also drops it from this node's own store.
    pub async fn unannounce(
        &self,
        target: [u8; 32],
        key_pair: &KeyPair,
    ) -> Result<UnannounceResult, HyperDhtError> {
        let (_, closest, unannounced) = self.lookup_and_unannounce(target, key_pair).await?;
        Ok(UnannounceResult {
            closest_nodes: closest_nodes(&closest),
            unannounced,
        })
    }

    async fn lookup_and_unannounce(
        &self,
        target: [u8; 32],
        key_pair: &KeyPair,
    ) -> Result<(Vec<LookupResult>, Vec<Reply>, usize), HyperDhtError> {
        lock(&self.inner.store).unannounce(&target, &key_pair.public_key);
        let mut q = self.lookup(target).await?;
        let mut tasks = JoinSet::new();
        let mut replies = Vec::new();
        while let Some(r) = q.next().await {
            if wants_unannounce(&r, &key_pair.public_key) {
                if let (Some(token), Some(id)) = (r.token, r.from.id) {
                    let spec = unannounce_request(&target, &token, &id, key_pair);
                    tasks.spawn(send(self.inner.dht.clone(), r.from.addr, spec));
                }
            }
            replies.push(r);
        }
        let closest = q.finish().await;
        let mut unannounced = 0;
        while let Some(ok) = tasks.join_next().await {
            unannounced += usize::from(ok.unwrap_or(false));
        }
        let closest = closest?;
        if closest.is_empty() {
            return Err(HyperDhtError::TooFewNodes);
        }
        Ok((replies, closest, unannounced))
    }

    /// Sends one commit per closest reply (`make` returns `None` when a reply cannot be
    /// committed to); succeeds when at least one was answered (`_endAfterCommit`).
    async fn commit(
        &self,
        closest: &[Reply],
        make: impl Fn(&Reply) -> Option<RequestSpec>,
    ) -> Result<usize, HyperDhtError> {
        if closest.is_empty() {
            return Err(HyperDhtError::TooFewNodes);
        }
        let mut tasks = JoinSet::new();
        for r in closest {
            if let Some(spec) = make(r) {
                tasks.spawn(send(self.inner.dht.clone(), r.from.addr, spec));
            }
        }
        let mut ok = 0;
        while let Some(res) = tasks.join_next().await {
            ok += usize::from(res.unwrap_or(false));
        }
        if ok == 0 {
            return Err(HyperDhtError::CommitFailed);
        }
        Ok(ok)
    }

    /// `immutablePut(value)`: stores `value` under `hash(value)` on the closest nodes.
    pub async fn immutable_put(&self, value: &[u8]) -> Result<ImmutablePutResult, HyperDhtError> {
        let target = hash(value);
        let q = self
            .query(target, Command::ImmutableGet, None, map_immutable)
            .await?;
        let closest = q.finish().await?;
        self.commit(&closest, |r| {
            Some(immutable_put_request(&target, &r.token?, value))
        })
        .await?;
        Ok(ImmutablePutResult {
            hash: target,
            closest_nodes: closest_nodes(&closest),
        })
    }

    /// `immutableGet(hash)`: the first value whose hash matches, or `None`.
    pub async fn immutable_get(
        &self,
        target: [u8; 32],
    ) -> Result<Option<ImmutableResult>, HyperDhtError> {
        let mut q = self
            .query(target, Command::ImmutableGet, None, map_immutable)
            .await?;
        while let Some(node) = q.next().await {
            if verify_immutable(&target, &node.value) {
                return Ok(Some(node));
            }
        }
        q.finish().await?;
        Ok(None)
    }

    /// `mutablePut(keyPair, value, { seq })`: signs and stores a value under
    /// `hash(publicKey)` on the closest nodes.
    pub async fn mutable_put(
        &self,
        key_pair: &KeyPair,
        value: &[u8],
        opts: MutablePutOptions,
    ) -> Result<MutablePutResult, HyperDhtError> {
        let signed = sign_mutable_put(key_pair, value, opts.seq);
        let q = self
            .query(
                signed.target,
                Command::MutableGet,
                Some(mutable_get_value(0)),
                map_mutable,
            )
            .await?;
        let closest = q.finish().await?;
        self.commit(&closest, |r| Some(mutable_put_request(&signed, &r.token?)))
            .await?;
        Ok(MutablePutResult {
            public_key: signed.public_key,
            closest_nodes: closest_nodes(&closest),
            seq: signed.seq,
            signature: signed.signature,
        })
    }

    /// `mutableGet(publicKey, { seq, latest })`: a validly signed value with at least
    /// `seq`; the highest seq found when `latest`, else the first.
    pub async fn mutable_get(
        &self,
        public_key: &[u8; 32],
        opts: MutableGetOptions,
    ) -> Result<Option<MutableResult>, HyperDhtError> {
        let mut q = self
            .query(
                hash(public_key),
                Command::MutableGet,
                Some(mutable_get_value(opts.seq)),
                map_mutable,
            )
            .await?;
        let mut selector = MutableSelector::new(*public_key, opts.seq, opts.latest);
        while let Some(node) = q.next().await {
            if selector.offer(node) == MutableStep::Done {
                return Ok(selector.into_result());
            }
        }
        q.finish().await?;
        Ok(selector.into_result())
    }
}

async fn send(dht: Dht, to: SocketAddrV4, spec: RequestSpec) -> bool {
    dht.request(to, spec, RequestOptions::default())
        .await
        .is_ok()
}

/// The serving task: answers requests from the store and the router, runs the GC timer.
async fn serve(
    mut requests: mpsc::Receiver<RequestHandle>,
    status: watch::Receiver<Status>,
    store: Arc<Mutex<RecordStore>>,
    servers: Arc<ServerTable>,
) {
    let tasks = Arc::new(Semaphore::new(MAX_SERVER_TASKS));
    loop {
        let sleep = {
            let now = now_ms();
            lock(&store).next_gc_at().map_or(IDLE_GC_CHECK, |at| {
                Duration::from_millis(at.saturating_sub(now)).min(IDLE_GC_CHECK)
            })
        };
        tokio::select! {
            req = requests.recv() => match req {
                Some(handle) => on_request(&handle, &status, &store, &servers, &tasks).await,
                None => break,
            },
            _ = tokio::time::sleep(sleep) => lock(&store).gc(now_ms()),
        }
    }
}

/// `HyperDHT.onrequest`.
async fn on_request(
    handle: &RequestHandle,
    status: &watch::Receiver<Status>,
    store: &Mutex<RecordStore>,
    servers: &ServerTable,
    tasks: &Arc<Semaphore>,
) {
    let req = &handle.request;
    let now = now_ms();
    let id = status.borrow().id;
    let dispatch = lock(store).dispatch(
        now,
        id.as_ref(),
        req.command,
        &Request {
            target: req.target.as_ref(),
            token: req.token.as_ref(),
            value: req.value.as_deref(),
            from: req.from.addr,
        },
    );
    let sent = match dispatch {
        Dispatch::Handled(Response::Drop(_)) | Dispatch::Plugin(_) => Ok(()),
        Dispatch::Handled(Response::Reply {
            value,
            token,
            closer_nodes,
        }) => {
            let opts = ReplyOptions {
                token,
                closer_nodes,
                ..ReplyOptions::default()
            };
            handle.reply(value, opts).await
        }
        Dispatch::Handled(Response::Error {
            code,
            token,
            closer_nodes,
        }) => {
            let opts = ReplyOptions {
                token,
                closer_nodes,
                ..ReplyOptions::default()
            };
            handle.error(code, opts).await
        }
        Dispatch::Unhandled => {
            let opts = ReplyOptions {
                closer_nodes: req.target.is_some(),
                ..ReplyOptions::error()
            };
            handle
                .error(intercom_dht_rpc::errors::UNKNOWN_COMMAND, opts)
                .await
        }
        Dispatch::Router(command) => {
            let forward = req
                .target
                .as_ref()
                .and_then(|t| lock(store).forward(now, t).cloned());
            let route = if command == Command::PeerHandshake {
                route_handshake
            } else {
                route_holepunch
            };
            match route(req.from.addr, req.value.as_deref(), forward.as_ref()) {
                RouteAction::Drop => Ok(()),
                RouteAction::Server => {
                    let server = req
                        .target
                        .and_then(|t| lock_servers(servers).get(&t).and_then(|w| w.upgrade()));
                    match (server, tasks.clone().try_acquire_owned()) {
                        (Some(server), Ok(permit)) => {
                            let handle = handle.clone();
                            tokio::spawn(async move {
                                serve_server(server, handle, command).await;
                                drop(permit);
                            });
                        }
                        _ => tracing::debug!("server request dropped"),
                    }
                    Ok(())
                }
                RouteAction::Reply {
                    value,
                    to,
                    token,
                    closer_nodes,
                } => {
                    let opts = ReplyOptions {
                        token,
                        closer_nodes,
                        to,
                        socket: None,
                    };
                    handle.reply(value, opts).await
                }
                RouteAction::Relay { value, to } => handle.relay(Some(value), to, None).await,
            }
        }
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "hyperdht reply not sent");
    }
}

/// Answers a handshake or holepunch request for a local server (the server half of
/// `Router.onpeerhandshake` / `onpeerholepunch`).
async fn serve_server(server: Arc<ServerInner>, handle: RequestHandle, command: Command) {
    let req = &handle.request;
    let Some(value) = req.value.as_deref() else {
        return;
    };
    let opts = |socket: Option<SocketKind>| ReplyOptions {
        token: false,
        closer_nodes: false,
        to: None,
        socket,
    };
    let sent = if command == Command::PeerHandshake {
        let Ok(hs) = decode::<Handshake>(value) else {
            return;
        };
        let Some(reply) = server
            .on_handshake(hs.noise, hs.peer_address, req.from.addr, req.to, req.socket)
            .await
        else {
            return;
        };
        let msg = |mode| Handshake {
            mode,
            noise: reply.noise.clone(),
            peer_address: if mode == REPLY { None } else { hs.peer_address },
            relay_address: None,
        };
        match hs.mode {
            FROM_CLIENT => {
                handle
                    .reply(Some(encode(&msg(REPLY))), opts(reply.socket))
                    .await
            }
            FROM_RELAY => {
                handle
                    .relay(Some(encode(&msg(FROM_SERVER))), req.from.addr, reply.socket)
                    .await
            }
            FROM_SECOND_RELAY => match hs.relay_address {
                Some(to) => {
                    handle
                        .relay(Some(encode(&msg(FROM_SERVER))), to, reply.socket)
                        .await
                }
                None => Ok(()),
            },
            _ => Ok(()),
        }
    } else {
        let Ok(hp) = decode::<Holepunch>(value) else {
            return;
        };
        let Some(reply) = server
            .on_holepunch(
                hp.id,
                hp.peer_address,
                &hp.payload,
                req.from.addr,
                req.to,
                req.socket,
            )
            .await
        else {
            return;
        };
        let msg = Holepunch {
            mode: FROM_SERVER,
            id: 0,
            payload: reply.payload,
            peer_address: hp.peer_address,
        };
        handle
            .relay(Some(encode(&msg)), req.from.addr, reply.socket)
            .await
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "server reply not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matches_js() {
        let a = |ip: [u8; 4], port| SocketAddrV4::new(ip.into(), port);
        assert!(!js_filter_node(&a([134, 209, 28, 98], 49738)));
        assert!(js_filter_node(&a([134, 209, 28, 98], 49737)));
        assert!(!js_filter_node(&a([35, 233, 47, 252], 9400)));
        assert!(!js_filter_node(&a([150, 136, 142, 116], 1)));
        assert!(js_filter_node(&a([127, 0, 0, 1], 49738)));
    }

    fn local(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    async fn persistent_node(bootstrap: Vec<SocketAddrV4>) -> HyperDht {
        let mut cfg = HyperDhtConfig::new(bootstrap);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        let node = HyperDht::bind(cfg).await.unwrap();
        node.dht().bootstrapped().await.unwrap();
        node
    }

    /// A small loopback network of Rust nodes: every operation round-trips.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operations_round_trip_on_a_small_network() {
        let boot = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
            .await
            .unwrap();
        let port = boot.dht().local_addr().port();
        boot.dht().persistent().await.unwrap();
        let mut nodes = vec![boot.clone()];
        for _ in 0..6 {
            let n = persistent_node(vec![local(port)]).await;
            tokio::time::timeout(Duration::from_secs(10), n.dht().persistent())
                .await
                .unwrap()
                .unwrap();
            nodes.push(n);
        }
        let mut cfg = HyperDhtConfig::new(vec![local(port)]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(true);
        let client = HyperDht::bind(cfg).await.unwrap();
        client.dht().bootstrapped().await.unwrap();

        let topic = hash(b"topic");
        let kp = KeyPair::from_seed(&[1; 32]);
        let ann = client
            .announce(topic, &kp, &[local(9)], AnnounceOptions::default())
            .await
            .unwrap();
        assert_eq!(ann.committed, nodes.len());
        let mut q = nodes[3].lookup(topic).await.unwrap();
        let mut found = 0;
        while let Some(r) = q.next().await {
            assert_eq!(r.peers[0].public_key, kp.public_key);
            assert_eq!(r.peers[0].relay_addresses, vec![local(9)]);
            found += 1;
        }
        assert!(found >= nodes.len() - 1, "found on {found} nodes");
        let stored: usize = nodes.iter().map(|n| n.store_sizes().records).sum();
        assert_eq!(stored, nodes.len());

        let un = client.unannounce(topic, &kp).await.unwrap();
        assert!(un.unannounced >= nodes.len() - 1);
        let mut q = client.lookup(topic).await.unwrap();
        assert!(q.next().await.is_none(), "records were removed");

        // Announcing our own key makes us findable (a forward on each node).
        client
            .announce(hash(&kp.public_key), &kp, &[], AnnounceOptions::default())
            .await
            .unwrap();
        let mut q = client.find_peer(&kp.public_key).await.unwrap();
        assert_eq!(q.next().await.unwrap().peer.public_key, kp.public_key);
        drop(q);

        let put = client.immutable_put(b"immutable").await.unwrap();
        assert_eq!(put.hash, hash(b"immutable"));
        let got = nodes[2].immutable_get(put.hash).await.unwrap().unwrap();
        assert_eq!(got.value, b"immutable");
        assert!(client.immutable_get(hash(b"nope")).await.unwrap().is_none());

        let mkp = KeyPair::from_seed(&[2; 32]);
        client
            .mutable_put(&mkp, b"one", MutablePutOptions { seq: 1 })
            .await
            .unwrap();
        client
            .mutable_put(&mkp, b"two", MutablePutOptions { seq: 2 })
            .await
            .unwrap();
        let got = nodes[1]
            .mutable_get(&mkp.public_key, MutableGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.seq, got.value.as_slice()), (2, &b"two"[..]));
        let none = nodes[1]
            .mutable_get(
                &mkp.public_key,
                MutableGetOptions {
                    seq: 3,
                    latest: true,
                },
            )
            .await
            .unwrap();
        assert!(none.is_none());
        // A lower seq is refused by every node: nothing is committed... but the nodes
        // still answer (with SEQ_TOO_LOW), which counts as a commit reply as in JS.
        client
            .mutable_put(&mkp, b"zero", MutablePutOptions { seq: 0 })
            .await
            .unwrap();
        let got = client
            .mutable_get(&mkp.public_key, MutableGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, 2);
        for n in nodes.iter().chain([&client]) {
            n.destroy().await;
        }
    }
}
