//! `hypercore/alpha` replication of one log with any number of peers, sans-io.
//!
//! A [`Replica`] owns a [`Log`] and the protocol state of every peer channel open for it.
//! The async layer feeds it what channels receive ([`Replica::on_open`],
//! [`Replica::on_message`], [`Replica::remove_peer`]) and sends the messages it returns,
//! each addressed to one peer. Behaviour follows JS hypercore 11's replicator where a JS
//! peer depends on it:
//! - on open, each side checks the other's capability, then sends `sync` (its length and
//!   the length it knows of the peer) and `range` for the blocks it holds;
//! - a peer longer than us is asked for an `upgrade` from our length (with the manifest
//!   when we lack it); any length change is announced to every peer with `sync`;
//! - blocks are requested from peers that announced them (`range`/`bitfield`, after our
//!   `want`), at most `max_inflight` per peer, each block from one peer at a time, so a
//!   log downloads from several sources at once;
//! - requests are answered at once from the log (`data`, or `noData` with JS's reasons).
//!
//! Peers are at different lengths whenever the writer appends, and a replica that has not
//! downloaded every block holds only part of the tree (the signed roots, the nodes of its
//! blocks and of the upgrades it verified). So `sync` tells each peer whether we can prove
//! an upgrade from its length (`canUpgrade`, as JS), a request that needs nodes we lack is
//! answered "not available" (never an error that ends the session), and a block is only
//! asked of a shorter peer when the root its proof climbs to lies within that peer's
//! length.
//!
//! Two bounds on what we download: blocks larger than [`ReplicaConfig::max_block_bytes`]
//! are never stored (nor anything after them), and [`Replica::set_download_limit`] stops
//! the download at a given length while the signed length is still followed.
//!
//! A peer whose data does not verify is reported as [`PeerError::BadData`]: the caller
//! drops it, and the blocks it owed are requested again from the others. Seeks (byte
//! offsets), pushes and reorgs (fork changes of a log we already hold) are not supported:
//! seeks get `noData`, pushes are ignored, reorgs are refused as bad data.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::tree::{IndexedProof, Proof, ProofRequest, UpgradeProof};
use crate::wire::{
    Cancel, Data, DataBlock, DataHash, DataUpgrade, Handshake, Message, NoData, Range, Request,
    RequestBlock, RequestUpgrade, Synchronize, Want,
};
use crate::{caps, flat, Log, LogError};

/// The protomux protocol name.
pub const PROTOCOL: &str = "hypercore/alpha";
/// `noData` reason: we do not have it.
pub const NOT_AVAILABLE: u64 = 1;
/// `noData` reason: the request does not fit the log.
pub const INVALID_REQUEST: u64 = 2;
/// Invalid requests a peer may send before it is dropped (as JS).
const MAX_INVALID_REQUESTS: u32 = 64;
/// Blocks per `want` message (JS's compat batch size).
const WANT_BATCH: u64 = 2_097_152;
/// `want` batches sent to one peer ahead of its announced length (JS accepts 4).
const MAX_WANT_BATCHES: u64 = 4;
/// Held runs announced with `range` in one go.
const MAX_ANNOUNCED_RANGES: usize = 64;
/// Blocks one `range` or `bitfield` message may mark in a peer's bitfield; and the pages
/// (32,768 blocks, 4 KiB each) a peer's bitfield may grow to. Beyond, a peer's claims are
/// ignored (we then just do not ask it for those blocks): announcements cost a peer a
/// few bytes, and must not cost us unbounded memory or time.
const MAX_REMOTE_RANGE: u64 = 1 << 22;
const MAX_REMOTE_PAGES: usize = 1024;

/// Identifies one peer channel within a replica.
pub type PeerId = u64;

/// Messages to send, each to one peer.
pub type Outgoing = Vec<(PeerId, Message)>;

/// Settings of a [`Replica`].
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Block requests in flight per peer.
    pub max_inflight: usize,
    /// Download every block (otherwise only the signed length is followed).
    pub download: bool,
    /// Request no blocks until this many peers are open and synced (then go on with
    /// whoever is there), so a download spreads over several sources from the start.
    pub min_peers: usize,
    /// A request unanswered this long is given up and asked of another peer; the silent
    /// peer gets no requests for as long again. Enforced by [`Replica::tick`].
    pub request_timeout: Duration,
    /// The largest block appended to or stored in the log, in bytes (set on the log by
    /// [`Replica::new`]; see [`crate::DEFAULT_MAX_BLOCK_BYTES`] for the default). A
    /// peer's block above it is not stored: when it verifies, the writer did write it,
    /// so the peer is kept (it broke no rule; dropping it would also cut its other logs
    /// off) and the log is downloaded no further (from then on, no block after it is
    /// requested, and answers already on their way are not stored: the contiguous length
    /// stops before it on every peer with the same cap alike); when it does not verify,
    /// the peer is dropped as for any bad data ([`PeerError::BadData`]).
    pub max_block_bytes: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_inflight: 64,
            download: true,
            min_peers: 1,
            request_timeout: Duration::from_secs(10),
            max_block_bytes: crate::DEFAULT_MAX_BLOCK_BYTES,
        }
    }
}

/// Why a peer must be dropped, or the replica cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer broke the protocol (bad capability, undecodable message, too many invalid
    /// requests).
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    /// The peer sent data that does not verify; nothing of it was stored.
    #[error("peer sent invalid data: {0}")]
    BadData(LogError),
    /// Our own storage failed.
    #[error("local log failure: {0}")]
    Local(LogError),
}

/// What we know of a peer's copy of the log.
#[derive(Debug, Default)]
struct Remote {
    synced: bool,
    fork: u64,
    length: u64,
    /// The length the peer says it knows of ours.
    length_acked: u64,
    can_upgrade: bool,
    has_manifest: bool,
    contiguous: u64,
    have: Bitfield,
}

impl Remote {
    fn has(&self, block: u64) -> bool {
        block < self.contiguous || self.have.get(block)
    }

    /// Marks `length` blocks from `start` as held or not, within the bounds above.
    fn mark(&mut self, start: u64, length: u64, held: bool) {
        let length = length.min(MAX_REMOTE_RANGE);
        if held && self.have.page_count() >= MAX_REMOTE_PAGES {
            return;
        }
        self.have.set_range(start, length, held);
    }

    /// The peer turned out not to hold `block` (it answered without it).
    fn lacks(&mut self, block: u64) {
        if block < self.contiguous {
            let old = self.contiguous;
            self.contiguous = block;
            self.mark(block + 1, old - block - 1, true);
        }
        self.have.set(block, false);
    }
}

/// Counters of a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Blocks downloaded and verified.
    pub blocks_downloaded: u64,
    /// Peer channels that delivered at least one verified block.
    pub sources: u64,
    /// Peer channels dropped for data that did not verify.
    pub bad_peers: u64,
    /// Requests given up after `request_timeout`.
    pub request_timeouts: u64,
    /// Blocks peers sent that verified but were above `max_block_bytes`, not stored.
    pub blocks_refused: u64,
}

/// One request we sent and wait an answer for.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    block: Option<u64>,
    upgrade: bool,
    /// When it was sent, as the replica's clock knew it (`None` until the first tick).
    sent: Option<Instant>,
}

#[derive(Debug)]
struct Peer {
    expected_capability: [u8; 32],
    opened: bool,
    remote: Remote,
    inflight: HashMap<u64, Inflight>,
    invalid_requests: u32,
    blocks_delivered: u64,
    wanted_batches: u64,
    /// Our length when we last sent `sync`.
    synced_length: Option<u64>,
    /// No requests go to this peer before then (it let one time out).
    stalled_until: Option<Instant>,
}

/// A log and the replication state of its peers.
#[derive(Debug)]
pub struct Replica {
    log: Log,
    config: ReplicaConfig,
    peers: BTreeMap<PeerId, Peer>,
    next_peer: PeerId,
    next_request: u64,
    /// Blocks requested, and from whom.
    block_inflight: HashMap<u64, PeerId>,
    /// The peer an upgrade was requested from.
    upgrade_inflight: Option<PeerId>,
    /// Block requests have started (the `min_peers` gate is passed).
    downloading: bool,
    stats: ReplicaStats,
    /// The time of the last [`Replica::tick`].
    clock: Option<Instant>,
    /// Blocks at or beyond this index are not downloaded ([`Replica::set_download_limit`]).
    download_limit: Option<u64>,
    /// The first block known (verified) to be above `max_block_bytes`: downloads stop
    /// before it.
    oversized: Option<u64>,
}

impl Peer {
    fn is_stalled(&self, now: Option<Instant>) -> bool {
        matches!((self.stalled_until, now), (Some(until), Some(now)) if now < until)
    }
}

impl Replica {
    /// Replicates `log`, whose block cap becomes `config.max_block_bytes`.
    pub fn new(mut log: Log, config: ReplicaConfig) -> Replica {
        log.set_max_block_bytes(config.max_block_bytes);
        Replica {
            log,
            config,
            peers: BTreeMap::new(),
            next_peer: 1,
            next_request: 1,
            block_inflight: HashMap::new(),
            upgrade_inflight: None,
            downloading: false,
            stats: ReplicaStats::default(),
            clock: None,
            download_limit: None,
            oversized: None,
        }
    }

    /// Downloads blocks below `limit` only (every block for `None`), from now on and on
    /// every open channel. Blocks at or beyond it are not requested, and answers to
    /// requests made before are not stored (those requests are cancelled). The signed
    /// length is still followed (upgrades are a few nodes and a signature, and tell how
    /// long the log is), and blocks stored already stay. Raising or clearing the limit
    /// resumes the download at once: the returned messages carry the new requests (and
    /// the cancellations when it is lowered).
    pub fn set_download_limit(&mut self, limit: Option<u64>) -> Outgoing {
        self.download_limit = limit;
        let mut out = Vec::new();
        self.cancel_beyond_end(&mut out);
        for peer in self.opened_peers() {
            self.want_batches(peer, &mut out);
        }
        self.schedule(&mut out);
        out
    }

    /// The download limit ([`Replica::set_download_limit`]).
    pub fn download_limit(&self) -> Option<u64> {
        self.download_limit
    }

    /// Gives up (and cancels with the peers) the block requests at or beyond
    /// [`Replica::download_end`], whose answers would not be stored.
    fn cancel_beyond_end(&mut self, out: &mut Outgoing) {
        let end = self.download_end();
        let cancelled: Vec<(PeerId, u64)> = self
            .peers
            .iter()
            .flat_map(|(&peer, p)| {
                p.inflight
                    .iter()
                    .filter(|(_, req)| req.block.is_some_and(|b| b >= end))
                    .map(move |(&id, _)| (peer, id))
            })
            .collect();
        for (peer, id) in cancelled {
            if let Ok(Some(_)) = self.take_inflight(peer, id) {
                out.push((peer, Message::Cancel(Cancel { request: id })));
            }
        }
    }

    /// Blocks are downloaded below this index only: the download limit, and the first
    /// block found to be above the block cap.
    fn download_end(&self) -> u64 {
        let limit = self.download_limit.unwrap_or(u64::MAX);
        limit.min(self.oversized.unwrap_or(u64::MAX))
    }

    /// Counters.
    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Number of peers whose channel is open.
    pub fn open_peers(&self) -> usize {
        self.peers.values().filter(|p| p.opened).count()
    }

    /// True when a peer holding the log (one that has its manifest or blocks) has told
    /// us its length, we have every block of the signed length, and no peer announced a
    /// longer one. Peers that are themselves still empty do not count as sources. Never
    /// while a download limit, or a block above the block cap, stops the download short
    /// of the length.
    pub fn is_complete(&self) -> bool {
        let sources = self
            .peers
            .values()
            .filter(|p| p.remote.synced && (p.remote.has_manifest || p.remote.length > 0));
        let Some(longest) = sources.map(|p| p.remote.length).max() else {
            return false;
        };
        self.log.length() >= longest && self.log.contiguous_length() == self.log.length()
    }

    /// Registers a channel on a connection where we are (or not) the initiator, with
    /// that connection's Noise handshake hash. Returns its id and the handshake to open
    /// the channel with.
    pub fn add_peer(&mut self, is_initiator: bool, handshake_hash: &[u8]) -> (PeerId, Handshake) {
        let id = self.next_peer;
        self.next_peer += 1;
        let key = self.log.key();
        self.peers.insert(
            id,
            Peer {
                expected_capability: caps::replication_capability(
                    !is_initiator,
                    key,
                    handshake_hash,
                ),
                opened: false,
                remote: Remote::default(),
                inflight: HashMap::new(),
                invalid_requests: 0,
                blocks_delivered: 0,
                wanted_batches: 0,
                synced_length: None,
                stalled_until: None,
            },
        );
        let handshake = Handshake {
            seeks: false,
            capability: caps::replication_capability(is_initiator, key, handshake_hash),
        };
        (id, handshake)
    }

    /// Forgets a peer whose channel closed; what it owed is asked of the others.
    pub fn remove_peer(&mut self, peer: PeerId) -> Outgoing {
        if self.peers.remove(&peer).is_none() {
            return Vec::new();
        }
        self.block_inflight.retain(|_, p| *p != peer);
        if self.upgrade_inflight == Some(peer) {
            self.upgrade_inflight = None;
        }
        let mut out = Vec::new();
        self.schedule(&mut out);
        out
    }

    /// The peer opened its side of the channel with `handshake`.
    pub fn on_open(&mut self, peer: PeerId, handshake: &Handshake) -> Result<Outgoing, PeerError> {
        let p = self.peer_mut(peer)?;
        if handshake.capability != p.expected_capability {
            return Err(PeerError::Protocol(
                "remote sent an invalid replication capability".into(),
            ));
        }
        if p.opened {
            return Ok(Vec::new());
        }
        p.opened = true;
        let mut out = Vec::new();
        self.send_sync(peer, &mut out);
        for (start, length) in self.log.held_ranges(MAX_ANNOUNCED_RANGES) {
            out.push((peer, held_range(start, length)));
        }
        Ok(out)
    }

    /// Handles one message from `peer`.
    pub fn on_message(&mut self, peer: PeerId, message: Message) -> Result<Outgoing, PeerError> {
        if !self.peer_mut(peer)?.opened {
            // JS only processes messages once the channel is open on both sides.
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        match message {
            Message::Sync(s) => self.on_sync(peer, s, &mut out)?,
            Message::Request(r) => self.on_request(peer, r, &mut out)?,
            Message::Data(d) => self.on_data(peer, d, &mut out)?,
            Message::NoData(n) => self.on_no_data(peer, n, &mut out)?,
            Message::Want(w) => self.on_want(peer, w, &mut out),
            Message::Range(r) => {
                let remote = &mut self.peer_mut(peer)?.remote;
                apply_range(remote, &r);
                self.schedule(&mut out);
            }
            Message::Bitfield(b) => {
                let remote = &mut self.peer_mut(peer)?.remote;
                let bits = 32 * b.bitfield.len() as u64;
                if b.start.saturating_add(bits) > flat::MAX_LENGTH || bits > MAX_REMOTE_RANGE {
                    return Err(PeerError::Protocol("bitfield out of range".into()));
                }
                if remote.have.page_count() < MAX_REMOTE_PAGES {
                    remote.have.insert_words(b.start, &b.bitfield);
                }
                self.schedule(&mut out);
            }
            // We answer requests at once, so there is nothing left to cancel; unwants,
            // extensions and reorg hints carry nothing we act on.
            Message::Cancel(_) | Message::Unwant(_) | Message::Extension(_) => {}
        }
        Ok(out)
    }

    /// Appends to our own log and tells every peer. Durable when this returns.
    pub fn append<E: AsRef<[u8]> + Sync>(
        &mut self,
        entries: &[E],
    ) -> Result<(u64, Outgoing), LogError> {
        let start = self.log.length();
        let length = self.log.append(entries)?;
        let mut out = Vec::new();
        let peers: Vec<PeerId> = self.opened_peers();
        for peer in peers {
            self.send_sync(peer, &mut out);
            out.push((peer, held_range(start, length - start)));
        }
        Ok((length, out))
    }

    fn opened_peers(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.opened)
            .map(|(id, _)| *id)
            .collect()
    }

    fn peer_mut(&mut self, peer: PeerId) -> Result<&mut Peer, PeerError> {
        self.peers
            .get_mut(&peer)
            .ok_or_else(|| PeerError::Protocol(format!("unknown peer {peer}")))
    }

    fn send_sync(&mut self, peer: PeerId, out: &mut Outgoing) {
        let length = self.log.length();
        let fork = self.log.fork();
        let has_manifest = self.log.has_manifest();
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let remote_length = if p.remote.fork == fork {
            p.remote.length
        } else {
            0
        };
        // A partial copy may lack the nodes to upgrade this peer from its length (as JS,
        // which then says so too); a peer as long as we are has nothing to ask.
        let can_upgrade = remote_length >= length || self.log.can_prove_upgrade(remote_length);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.synced_length = Some(length);
        out.push((
            peer,
            Message::Sync(Synchronize {
                fork,
                length,
                remote_length,
                can_upgrade,
                uploading: true,
                downloading: true,
                has_manifest,
                allow_push: false,
            }),
        ));
    }

    fn on_sync(
        &mut self,
        peer: PeerId,
        s: Synchronize,
        out: &mut Outgoing,
    ) -> Result<(), PeerError> {
        if s.length > flat::MAX_LENGTH {
            return Err(PeerError::Protocol(format!(
                "sync length {} is out of range",
                s.length
            )));
        }
        let our_length = self.log.length();
        let our_fork = self.log.fork();
        let p = self.peer_mut(peer)?;
        let changed = !p.remote.synced || p.remote.length != s.length || p.remote.fork != s.fork;
        p.remote.synced = true;
        p.remote.fork = s.fork;
        p.remote.length = s.length;
        p.remote.length_acked = if s.fork == our_fork {
            s.remote_length
        } else {
            0
        };
        p.remote.can_upgrade = s.can_upgrade;
        p.remote.has_manifest = s.has_manifest;
        // Acknowledge a new length of theirs (JS only asks us for upgrades when we have
        // acknowledged its length), and tell a shorter peer our length again.
        let stale_view = p.remote.length_acked != our_length;
        if changed || (stale_view && s.fork == our_fork && our_length > s.length) {
            self.send_sync(peer, out);
        }
        self.want_batches(peer, out);
        self.schedule(out);
        Ok(())
    }

    fn want_batches(&mut self, peer: PeerId, out: &mut Outgoing) {
        if !self.config.download {
            return;
        }
        let limit = self.download_end();
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let wanted = p.remote.length.min(limit);
        let needed = wanted.div_ceil(WANT_BATCH).min(MAX_WANT_BATCHES);
        while p.wanted_batches < needed {
            out.push((
                peer,
                Message::Want(Want {
                    start: p.wanted_batches * WANT_BATCH,
                    length: WANT_BATCH,
                    any: false,
                }),
            ));
            p.wanted_batches += 1;
        }
    }

    fn on_want(&mut self, peer: PeerId, w: Want, out: &mut Outgoing) {
        let end = w.start.saturating_add(w.length);
        for (start, length) in self.log.held_ranges(MAX_ANNOUNCED_RANGES) {
            if start < end && start + length > w.start {
                out.push((peer, held_range(start, length)));
                if w.any {
                    break;
                }
            }
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        r: Request,
        out: &mut Outgoing,
    ) -> Result<(), PeerError> {
        let no_data = |reason| {
            Message::NoData(NoData {
                request: r.id,
                reason,
            })
        };
        let log = &self.log;
        // What we cannot prove is "not available" (with the manifest when it was asked
        // for), never an error of ours or of the peer's.
        let not_available = || match (r.manifest, log.manifest()) {
            (true, Some(manifest)) => Message::Data(Data {
                request: r.id,
                fork: log.fork(),
                manifest: Some(manifest),
                ..Data::default()
            }),
            _ => no_data(NOT_AVAILABLE),
        };
        let unavailable = r.fork != log.fork()
            || r.seek.is_some()
            || r.block.as_ref().is_some_and(|b| !log.has(b.index));
        if unavailable {
            out.push((peer, not_available()));
            return Ok(());
        }
        let req = ProofRequest {
            block: r.block.as_ref().map(|b| (b.index, b.nodes)),
            hash: r.hash.as_ref().map(|h| (h.index, h.nodes)),
            upgrade: r.upgrade.as_ref().map(|u| (u.start, u.length)),
        };
        let proof = match log.proof(&req) {
            Ok(p) => p,
            Err(LogError::NotHeld(node)) => {
                // A partial copy asked for what it skipped over (peers at different
                // lengths while the writer appends): the peer asks someone else.
                tracing::debug!(peer, node, "hypercore request needs a node we do not hold");
                out.push((peer, not_available()));
                return Ok(());
            }
            Err(LogError::InvalidRequest(why)) => {
                tracing::debug!(peer, why, "invalid hypercore request");
                out.push((peer, no_data(INVALID_REQUEST)));
                let p = self.peer_mut(peer)?;
                p.invalid_requests += 1;
                if p.invalid_requests >= MAX_INVALID_REQUESTS {
                    return Err(PeerError::Protocol(format!(
                        "{MAX_INVALID_REQUESTS} invalid requests"
                    )));
                }
                return Ok(());
            }
            Err(e) => return Err(PeerError::Local(e)),
        };
        let value = match &proof.block {
            Some(b) => Some(
                log.get(b.index)
                    .map_err(PeerError::Local)?
                    .ok_or(PeerError::Local(LogError::MissingNode(2 * b.index)))?,
            ),
            None => None,
        };
        let manifest = if r.manifest { log.manifest() } else { None };
        out.push((
            peer,
            Message::Data(proof_to_data(r.id, proof, value, manifest)),
        ));
        Ok(())
    }

    /// Advances the replica's clock to `now`: requests unanswered for `request_timeout`
    /// are given up (an answer arriving later is ignored), their peer gets no requests
    /// for as long again, and what they asked for is asked of others.
    pub fn tick(&mut self, now: Instant) -> Outgoing {
        self.clock = Some(now);
        let timeout = self.config.request_timeout;
        let mut expired: Vec<(PeerId, u64)> = Vec::new();
        for (&peer, p) in self.peers.iter_mut() {
            for (&id, req) in p.inflight.iter_mut() {
                match req.sent {
                    // Sent before the clock started: its time starts now.
                    None => req.sent = Some(now),
                    Some(sent) if now.saturating_duration_since(sent) >= timeout => {
                        expired.push((peer, id));
                    }
                    Some(_) => {}
                }
            }
        }
        for (peer, id) in expired {
            if let Ok(Some(_)) = self.take_inflight(peer, id) {
                self.stats.request_timeouts += 1;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.stalled_until = Some(now + timeout);
                }
            }
        }
        let mut out = Outgoing::new();
        self.schedule(&mut out);
        out
    }

    /// Removes our request `id` to `peer` from the books (it was answered).
    fn take_inflight(&mut self, peer: PeerId, id: u64) -> Result<Option<Inflight>, PeerError> {
        let Some(req) = self.peer_mut(peer)?.inflight.remove(&id) else {
            return Ok(None);
        };
        if let Some(b) = req.block {
            self.block_inflight.remove(&b);
        }
        if req.upgrade {
            self.upgrade_inflight = None;
        }
        Ok(Some(req))
    }

    fn on_data(&mut self, peer: PeerId, d: Data, out: &mut Outgoing) -> Result<(), PeerError> {
        let Some(req) = self.take_inflight(peer, d.request)? else {
            // Unsolicited (a push, or an answer to a request we gave up): not accepted.
            return Ok(());
        };
        if let Some(m) = &d.manifest {
            if !self.log.has_manifest() {
                self.log.set_manifest(m).map_err(classify)?;
            }
        }
        if req.block.is_some_and(|b| b >= self.download_end()) {
            // Asked for before the download limit came down to it, or before a block
            // above the cap was found before it (such requests are cancelled, but the
            // answer may have crossed the cancellation): not stored.
            self.schedule(out);
            return Ok(());
        }
        let matches = match (req.block, &d.block) {
            (Some(want), Some(got)) => want == got.index,
            (Some(_), None) => false,
            (None, Some(_)) => false,
            (None, None) => true,
        };
        if matches && (d.block.is_some() || d.upgrade.is_some() || d.hash.is_some()) {
            let (proof, value) = data_to_proof(d);
            let applied = match self.log.apply(&proof, value.as_deref()) {
                Ok(a) => a,
                Err(LogError::BlockTooLarge { block, size, max }) => {
                    // It verified: the writer wrote it, and the peer broke no rule. The
                    // log is downloaded no further (see `ReplicaConfig::max_block_bytes`).
                    tracing::info!(
                        block,
                        size,
                        max,
                        "log block above the block cap: not stored, the download stops there"
                    );
                    self.stats.blocks_refused += 1;
                    self.oversized = Some(self.oversized.map_or(block, |o| o.min(block)));
                    self.cancel_beyond_end(out);
                    self.schedule(out);
                    return Ok(());
                }
                Err(e) => {
                    let e = classify(e);
                    if matches!(e, PeerError::BadData(_)) {
                        self.stats.bad_peers += 1;
                    }
                    return Err(e);
                }
            };
            if applied.upgraded {
                for other in self.opened_peers() {
                    self.send_sync(other, out);
                }
            }
            if let Some(block) = applied.new_block {
                self.stats.blocks_downloaded += 1;
                let p = self.peer_mut(peer)?;
                p.blocks_delivered += 1;
                if p.blocks_delivered == 1 {
                    self.stats.sources += 1;
                }
                for (id, other) in &self.peers {
                    if other.opened && other.remote.synced && !other.remote.has(block) {
                        out.push((*id, held_range(block, 1)));
                    }
                }
            }
        } else if let Some(b) = req.block {
            // Answered without the block: treat as not available there.
            self.peer_mut(peer)?.remote.lacks(b);
        }
        self.schedule(out);
        Ok(())
    }

    fn on_no_data(&mut self, peer: PeerId, n: NoData, out: &mut Outgoing) -> Result<(), PeerError> {
        let Some(req) = self.take_inflight(peer, n.request)? else {
            return Ok(());
        };
        let remote = &mut self.peer_mut(peer)?.remote;
        if let Some(b) = req.block {
            // The peer announced the block but does not have it (any more).
            remote.lacks(b);
        }
        if req.upgrade {
            remote.can_upgrade = false;
        }
        self.schedule(out);
        Ok(())
    }

    /// Sends the requests that can be sent now: an upgrade from the longest suitable
    /// peer, then missing blocks from peers that hold them.
    fn schedule(&mut self, out: &mut Outgoing) {
        let length = self.log.length();
        let fork = self.log.fork();
        if self.upgrade_inflight.is_none() {
            let best = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.opened
                        && !p.is_stalled(self.clock)
                        && p.remote.synced
                        && p.remote.can_upgrade
                        && p.remote.length > length
                        && (p.remote.fork == fork || length == 0)
                })
                .max_by_key(|(_, p)| p.remote.length)
                .map(|(id, _)| *id);
            if let Some(peer) = best {
                let needs_manifest = !self.log.has_manifest();
                let id = self.next_request_id();
                let p = self.peers.get_mut(&peer).expect("peer chosen above");
                p.inflight.insert(
                    id,
                    Inflight {
                        block: None,
                        upgrade: true,
                        sent: self.clock,
                    },
                );
                self.upgrade_inflight = Some(peer);
                out.push((
                    peer,
                    Message::Request(Request {
                        id,
                        fork: p.remote.fork,
                        upgrade: Some(RequestUpgrade {
                            start: length,
                            length: p.remote.length - length,
                        }),
                        manifest: needs_manifest,
                        ..Request::default()
                    }),
                ));
            }
        }
        if !self.config.download || !self.log.has_manifest() {
            return;
        }
        if !self.downloading {
            let ready = self
                .peers
                .values()
                .filter(|p| p.opened && p.remote.synced)
                .count();
            if ready < self.config.min_peers {
                return;
            }
            self.downloading = true;
        }
        let peers: Vec<PeerId> = self.opened_peers();
        for peer in peers {
            let mut cursor = self.log.contiguous_length();
            let end = self
                .provable_end(self.peers[&peer].remote.length)
                .min(self.download_end());
            loop {
                let p = &self.peers[&peer];
                if p.inflight.len() >= self.config.max_inflight
                    || p.remote.fork != fork
                    || p.is_stalled(self.clock)
                {
                    break;
                }
                let Some(block) = self.next_wanted(peer, cursor, end) else {
                    break;
                };
                cursor = block + 1;
                let id = self.next_request_id();
                let p = self.peers.get_mut(&peer).expect("peer listed above");
                p.inflight.insert(
                    id,
                    Inflight {
                        block: Some(block),
                        upgrade: false,
                        sent: self.clock,
                    },
                );
                self.block_inflight.insert(block, peer);
                out.push((
                    peer,
                    Message::Request(Request {
                        id,
                        fork,
                        block: Some(RequestBlock {
                            index: block,
                            nodes: nodes_to_root(block, length),
                        }),
                        ..Request::default()
                    }),
                ));
            }
        }
    }

    /// The blocks a peer that is `remote_length` long can prove to us: the proof of a
    /// block climbs to the root above it in our tree (see [`nodes_to_root`]), which a
    /// shorter peer can only reach when that whole root lies within its length (it
    /// would refuse the request as invalid otherwise). So: every block for a peer as
    /// long as we are, and the blocks under our leading roots that end within its length
    /// for a shorter one (peers at different lengths while the writer appends).
    fn provable_end(&self, remote_length: u64) -> u64 {
        let head = self.log.head();
        if remote_length >= head.length {
            return head.length;
        }
        let mut end = 0;
        for root in &head.roots {
            let next = end + flat::count_leaves(root.index);
            if next > remote_length {
                break;
            }
            end = next;
        }
        end
    }

    /// The next block at or after `from` (below `end`) that we lack, `peer` holds and
    /// nobody is fetching.
    fn next_wanted(&self, peer: PeerId, mut from: u64, end: u64) -> Option<u64> {
        let remote = &self.peers[&peer].remote;
        loop {
            let block = self.log.first_missing(from, end)?;
            if remote.has(block) && !self.block_inflight.contains_key(&block) {
                return Some(block);
            }
            from = block + 1;
            if !remote.has(block) && block >= remote.contiguous {
                // Skip ahead to the next block the peer announced.
                from = remote.have.find(from, end, true)?;
            }
        }
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_request;
        // Ids stay small and never 0 (0 marks unsolicited data in JS).
        self.next_request = if id >= u32::MAX as u64 { 1 } else { id + 1 };
        id
    }
}

/// The `range` message announcing that we hold `length` blocks from `start`.
fn held_range(start: u64, length: u64) -> Message {
    Message::Range(Range {
        drop: false,
        start,
        length,
    })
}

fn apply_range(remote: &mut Remote, r: &Range) {
    let end = r.start.saturating_add(r.length).min(flat::MAX_LENGTH);
    if r.drop {
        if r.start < remote.contiguous {
            let old = remote.contiguous;
            remote.contiguous = r.start;
            if end < old {
                remote.mark(end, old - end, true);
            }
        }
        remote.mark(r.start, end.saturating_sub(r.start), false);
    } else if r.start <= remote.contiguous {
        remote.contiguous = remote.contiguous.max(end);
    } else {
        remote.mark(r.start, end - r.start, true);
    }
}

/// Tree levels a block proof must climb to reach the full root above it in a tree of
/// `length` blocks (we always hold every root).
fn nodes_to_root(block: u64, length: u64) -> u64 {
    let head = 2 * length;
    let mut ite = flat::Iterator::new(2 * block);
    let mut count = 0;
    loop {
        let mut parent = ite;
        parent.parent();
        if parent.contains(head) || flat::right_span(parent.index) >= head {
            return count;
        }
        ite = parent;
        count += 1;
    }
}

fn classify(e: LogError) -> PeerError {
    match e {
        LogError::Store(_)
        | LogError::Corrupt { .. }
        | LogError::MissingNode(_)
        | LogError::NotHeld(_) => PeerError::Local(e),
        other => PeerError::BadData(other),
    }
}

fn proof_to_data(
    request: u64,
    proof: Proof,
    value: Option<Vec<u8>>,
    manifest: Option<crate::wire::Manifest>,
) -> Data {
    Data {
        request,
        fork: proof.fork,
        block: proof.block.map(|b| DataBlock {
            index: b.index,
            value: value.unwrap_or_default(),
            nodes: b.nodes,
        }),
        hash: proof.hash.map(|h| DataHash {
            index: h.index,
            nodes: h.nodes,
        }),
        seek: None,
        upgrade: proof.upgrade.map(|u| DataUpgrade {
            start: u.start,
            length: u.length,
            nodes: u.nodes,
            additional_nodes: u.additional_nodes,
            signature: Some(u.signature),
        }),
        manifest,
    }
}

fn data_to_proof(d: Data) -> (Proof, Option<Vec<u8>>) {
    let mut value = None;
    let proof = Proof {
        fork: d.fork,
        block: d.block.map(|b| {
            value = Some(b.value);
            IndexedProof {
                index: b.index,
                nodes: b.nodes,
            }
        }),
        hash: d.hash.map(|h| IndexedProof {
            index: h.index,
            nodes: h.nodes,
        }),
        upgrade: d.upgrade.map(|u| UpgradeProof {
            start: u.start,
            length: u.length,
            nodes: u.nodes,
            additional_nodes: u.additional_nodes,
            signature: u.signature.unwrap_or_default(),
        }),
    };
    (proof, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_announcements_cost_bounded_memory() {
        let mut remote = Remote::default();
        let everything = Range {
            drop: false,
            start: 0,
            length: u64::MAX,
        };
        apply_range(&mut remote, &everything);
        assert_eq!(remote.contiguous, flat::MAX_LENGTH);
        // "I lack block 5" must not spell out 2^52 bits.
        remote.lacks(5);
        assert_eq!(remote.contiguous, 5);
        assert!(remote.has(6) && !remote.has(5));
        for start in (0..10u64).map(|i| (i + 1) << 30) {
            apply_range(
                &mut remote,
                &Range {
                    drop: false,
                    start,
                    length: 1 << 40,
                },
            );
        }
        assert!(remote.have.page_count() <= MAX_REMOTE_PAGES + 128);
    }

    #[test]
    fn nodes_to_root_reaches_the_full_root() {
        // length 4: one root (3); block 0 climbs 0 -> 1 -> 3: two levels.
        assert_eq!(nodes_to_root(0, 4), 2);
        // length 5: roots 3 and 8; block 4 is a root itself.
        assert_eq!(nodes_to_root(4, 5), 0);
        // length 6: roots 3 and 9; block 5 climbs to 9.
        assert_eq!(nodes_to_root(5, 6), 1);
        for length in 1..100u64 {
            let roots = flat::full_roots(2 * length);
            for block in 0..length {
                let mut ite = flat::Iterator::new(2 * block);
                for _ in 0..nodes_to_root(block, length) {
                    ite.parent();
                }
                assert!(roots.contains(&ite.index), "block {block} of {length}");
            }
        }
    }
}
