//! The swarm's one task: carries out the [`Core`]'s actions (dials, aborts, destroys),
//! accepts server connections, watches connections close, runs the retry timer, and
//! answers the [`crate::Swarm`] handle's commands.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::{
    ConnectError, ConnectOptions, Connection, ConnectionHandle, HyperDht, ListenOptions, Server,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::core::{Action, ClientDecision, Core, ServerDecision};
use crate::discovery::{Found, JoinOptions, ListenRequest, Topic};
use crate::{SwarmConnection, SwarmStatus};

type Key = [u8; 32];

pub(crate) enum Command {
    Join {
        topic: Key,
        opts: JoinOptions,
        done: oneshot::Sender<watch::Receiver<bool>>,
    },
    Leave {
        topic: Key,
        done: oneshot::Sender<()>,
    },
    Refreshing(oneshot::Sender<Vec<watch::Receiver<bool>>>),
    Flush(oneshot::Sender<bool>),
    JoinPeer(Key),
    LeavePeer(Key),
    Status(oneshot::Sender<SwarmStatus>),
    Destroy(oneshot::Sender<()>),
}

pub(crate) struct Driver {
    pub core: Core,
    pub dht: HyperDht,
    pub key_pair: KeyPair,
    pub listen_opts: ListenOptions,
    pub connect_timeout: Duration,
    pub cmd: mpsc::Receiver<Command>,
    pub events: mpsc::Sender<SwarmConnection>,
    pub banned: Arc<Mutex<HashSet<Key>>>,
}

struct State {
    server: Option<Server>,
    relay_addresses: Vec<SocketAddrV4>,
    topics: HashMap<Key, Topic>,
    attempts: HashMap<u64, AbortHandle>,
    dials: JoinSet<(u64, Key, Result<Connection, ConnectError>)>,
    closes: JoinSet<(Key, u64)>,
    handles: HashMap<u64, ConnectionHandle>,
    next_id: u64,
    flushes: HashMap<u64, oneshot::Sender<bool>>,
    next_flush: u64,
    found_tx: mpsc::Sender<Found>,
    listen_tx: mpsc::Sender<ListenRequest>,
}

impl Driver {
    pub async fn run(mut self) {
        let (found_tx, mut found_rx) = mpsc::channel::<Found>(1024);
        let (listen_tx, mut listen_rx) = mpsc::channel::<ListenRequest>(16);
        let mut st = State {
            server: None,
            relay_addresses: Vec::new(),
            topics: HashMap::new(),
            attempts: HashMap::new(),
            dials: JoinSet::new(),
            closes: JoinSet::new(),
            handles: HashMap::new(),
            next_id: 1,
            flushes: HashMap::new(),
            next_flush: 1,
            found_tx,
            listen_tx,
        };
        loop {
            self.apply(&mut st);
            let deadline = self.core.poll_timeout();
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let accept = async {
                match st.server.as_mut() {
                    Some(s) => s.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.cmd.recv() => match cmd {
                    Some(Command::Destroy(done)) => {
                        self.destroy(&mut st).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(&mut st, cmd).await,
                    None => {
                        self.destroy(&mut st).await;
                        return;
                    }
                },
                Some(f) = found_rx.recv() => {
                    self.core.on_peer(f.peer.public_key, f.peer.relay_addresses, f.topic);
                }
                Some(req) = listen_rx.recv() => {
                    self.ensure_listening(&mut st).await;
                    let _ = req.send(st.relay_addresses.clone());
                }
                Some(conn) = accept => self.on_server_connection(&mut st, conn),
                Some(r) = st.dials.join_next() => {
                    if let Ok((attempt, key, result)) = r {
                        st.attempts.remove(&attempt);
                        self.on_dialled(&mut st, attempt, key, result);
                    }
                }
                Some(r) = st.closes.join_next() => {
                    if let Ok((key, id)) = r {
                        st.handles.remove(&id);
                        self.core.on_closed(&key, id, Instant::now());
                    }
                }
                _ = timer => self.core.handle_timeout(Instant::now()),
            }
        }
    }

    /// Carries out the core's actions.
    fn apply(&mut self, st: &mut State) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Connect {
                    attempt,
                    key,
                    relay_addresses,
                } => {
                    let dht = self.dht.clone();
                    let mut opts = ConnectOptions::new(self.key_pair.clone());
                    opts.relay_addresses = relay_addresses;
                    opts.timeout = self.connect_timeout;
                    let h = st
                        .dials
                        .spawn(async move { (attempt, key, dht.connect(key, opts).await) });
                    st.attempts.insert(attempt, h);
                }
                Action::Abort { attempt } => {
                    if let Some(h) = st.attempts.remove(&attempt) {
                        h.abort();
                    }
                }
                Action::Destroy { id } => {
                    if let Some(h) = st.handles.get(&id) {
                        h.destroy();
                    }
                }
                Action::Flushed(id, ok) => {
                    if let Some(tx) = st.flushes.remove(&id) {
                        let _ = tx.send(ok);
                    }
                }
                Action::Banned(key) => {
                    crate::lock(&self.banned).insert(key);
                }
                Action::Rediscover(topics) => {
                    for t in topics.iter().filter_map(|t| st.topics.get(t)) {
                        t.rediscover();
                    }
                }
            }
        }
    }

    fn watch_close(&self, st: &mut State, key: Key, handle: ConnectionHandle) -> u64 {
        let id = st.next_id;
        st.next_id += 1;
        st.handles.insert(id, handle.clone());
        st.closes.spawn(async move {
            let _ = handle.closed().await;
            (key, id)
        });
        id
    }

    fn emit(&self, key: Key, conn: Connection, client: bool) {
        let topics = self
            .core
            .peer(&key)
            .map(|p| p.topics.clone())
            .unwrap_or_default();
        let handle = conn.handle();
        let ev = SwarmConnection {
            connection: conn,
            public_key: key,
            client,
            topics,
        };
        if self.events.try_send(ev).is_err() {
            tracing::debug!("swarm connection dropped: nobody takes them");
            handle.destroy();
        }
    }

    fn on_dialled(
        &mut self,
        st: &mut State,
        attempt: u64,
        key: Key,
        result: Result<Connection, ConnectError>,
    ) {
        let now = Instant::now();
        match result {
            Ok(conn) => {
                let handle = conn.handle();
                let id = self.watch_close(st, key, handle.clone());
                match self
                    .core
                    .on_client_done(key, attempt, Some((id, handle.clone())), now)
                {
                    ClientDecision::Accept => self.emit(key, conn, true),
                    ClientDecision::Discard => handle.destroy(),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, peer = %short(&key), "dial failed");
                self.core.on_client_done(key, attempt, None, now);
            }
        }
    }

    fn on_server_connection(&mut self, st: &mut State, conn: Connection) {
        let key = conn.remote_public_key();
        let handle = conn.handle();
        let id = self.watch_close(st, key, handle.clone());
        match self
            .core
            .on_server_connection(key, id, Some(handle.clone()), Instant::now())
        {
            ServerDecision::Accept => self.emit(key, conn, false),
            ServerDecision::Reject => handle.destroy(),
        }
    }

    async fn ensure_listening(&mut self, st: &mut State) {
        if st.server.is_none() {
            match self
                .dht
                .listen(self.key_pair.clone(), self.listen_opts.clone())
                .await
            {
                Ok(s) => st.server = Some(s),
                Err(e) => tracing::warn!(error = %e, "swarm could not listen"),
            }
        }
        if let Some(s) = &st.server {
            st.relay_addresses = s.relay_addresses();
        }
    }

    async fn on_command(&mut self, st: &mut State, cmd: Command) {
        match cmd {
            Command::Join { topic, opts, done } => {
                self.core.add_topic(topic);
                let t = st.topics.entry(topic).or_insert_with(|| {
                    Topic::spawn(
                        self.dht.clone(),
                        self.key_pair.clone(),
                        topic,
                        opts,
                        st.found_tx.clone(),
                        st.listen_tx.clone(),
                    )
                });
                t.update(opts);
                let _ = done.send(t.refreshing());
            }
            Command::Leave { topic, done } => {
                self.core.remove_topic(&topic);
                if let Some(t) = st.topics.remove(&topic) {
                    // Unannouncing may take a while: do not hold up the swarm.
                    tokio::spawn(async move {
                        t.stop().await;
                        let _ = done.send(());
                    });
                } else {
                    let _ = done.send(());
                }
            }
            Command::Refreshing(tx) => {
                let _ = tx.send(st.topics.values().map(Topic::refreshing).collect());
            }
            Command::Flush(tx) => {
                let id = st.next_flush;
                st.next_flush += 1;
                if self.core.flush(id) {
                    let _ = tx.send(true);
                } else {
                    st.flushes.insert(id, tx);
                }
            }
            Command::JoinPeer(key) => self.core.join_peer(key),
            Command::LeavePeer(key) => self.core.leave_peer(&key),
            Command::Status(tx) => {
                let _ = tx.send(SwarmStatus {
                    connections: self.core.open_count(),
                    connecting: self.core.connecting(),
                    peers: self.core.peer_count(),
                    open_keys: self.core.open_keys(),
                    topics: st.topics.keys().copied().collect(),
                    listening: st.server.is_some(),
                    server_connections: self.core.server_connection_count(),
                    server_refused_over_limit: self.core.server_refused_over_limit(),
                });
            }
            Command::Destroy(_) => unreachable!("handled by run"),
        }
    }

    async fn destroy(&mut self, st: &mut State) {
        self.core.destroy();
        self.apply(st);
        for (_, t) in st.topics.drain() {
            t.stop().await;
        }
        if let Some(s) = st.server.take() {
            s.close().await;
        }
        for h in st.handles.values() {
            h.destroy();
        }
        st.dials.abort_all();
        self.dht.destroy().await;
    }
}

fn short(k: &Key) -> String {
    k[..4].iter().map(|b| format!("{b:02x}")).collect()
}
