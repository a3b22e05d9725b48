//! A deterministic in-memory network of `Sidechannel` planes: links are protomux
//! connections, channels open when both ends want them (as protomux pairing does), and
//! sends are delivered in FIFO order under a virtual clock.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use intercom_crypto::KeyPair;
use intercom_sidechannel::{
    ConnId, DropReason, Output, Payload, Sidechannel, SidechannelConfig, SidechannelEvent,
};

pub fn kp(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

pub fn key_hex(k: &KeyPair) -> String {
    hex::encode(k.public_key)
}

pub struct Net {
    pub now: u64,
    pub peers: Vec<Sidechannel>,
    pub keys: Vec<KeyPair>,
    wants: BTreeSet<(usize, usize, String)>,
    open: BTreeSet<(usize, usize, String)>,
    queue: VecDeque<(usize, usize, String, Arc<[u8]>)>,
    pub events: Vec<Vec<SidechannelEvent>>,
    /// Payload bytes received, per peer and channel (`auth` handshakes excluded).
    pub received: Vec<BTreeMap<String, usize>>,
    /// `auth` handshake payloads received, per peer and channel.
    pub handshakes: Vec<BTreeMap<String, Vec<Payload>>>,
}

impl Net {
    pub fn new() -> Net {
        Net {
            now: 1_700_000_000_000,
            peers: Vec::new(),
            keys: Vec::new(),
            wants: BTreeSet::new(),
            open: BTreeSet::new(),
            queue: VecDeque::new(),
            events: Vec::new(),
            received: Vec::new(),
            handshakes: Vec::new(),
        }
    }

    /// Adds a peer with key seed `seed`; returns its index.
    pub fn add(&mut self, seed: u8, cfg: SidechannelConfig) -> usize {
        let keypair = kp(seed);
        let mut plane = Sidechannel::new(cfg, keypair.clone()).expect("config");
        plane.seed_ids(u64::from(seed));
        self.peers.push(plane);
        self.keys.push(keypair);
        self.events.push(Vec::new());
        self.received.push(BTreeMap::new());
        self.handshakes.push(BTreeMap::new());
        let i = self.peers.len() - 1;
        self.pump();
        i
    }

    pub fn key(&self, i: usize) -> String {
        key_hex(&self.keys[i])
    }

    pub fn connect(&mut self, a: usize, b: usize) {
        let (ka, kb) = (self.keys[a].public_key, self.keys[b].public_key);
        self.peers[a].on_connection(ConnId(b as u64), kb).unwrap();
        self.peers[b].on_connection(ConnId(a as u64), ka).unwrap();
        self.pump();
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.peers[a].on_disconnect(ConnId(b as u64));
        self.peers[b].on_disconnect(ConnId(a as u64));
        for (x, y) in [(a, b), (b, a)] {
            self.wants.retain(|(p, q, _)| !(*p == x && *q == y));
            self.open.retain(|(p, q, _)| !(*p == x && *q == y));
        }
        self.queue
            .retain(|(f, t, _, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
        self.pump();
    }

    pub fn line(&mut self, peers: &[usize]) {
        for w in peers.windows(2) {
            self.connect(w[0], w[1]);
        }
    }

    /// Runs until no output and no message is pending.
    pub fn pump(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.peers.len() {
                while let Some(o) = self.peers[i].poll_output() {
                    progress = true;
                    self.handle(i, o);
                }
            }
            if let Some((from, to, channel, bytes)) = self.queue.pop_front() {
                progress = true;
                match Payload::decode(&bytes) {
                    Ok(p) if p.control() == Some("auth") => self.handshakes[to]
                        .entry(channel.clone())
                        .or_default()
                        .push(p),
                    _ => *self.received[to].entry(channel.clone()).or_default() += bytes.len(),
                }
                let now = self.now;
                self.peers[to].on_message(now, ConnId(from as u64), &channel, &bytes);
            }
            if !progress {
                break;
            }
        }
    }

    fn handle(&mut self, i: usize, o: Output) {
        match o {
            Output::OpenChannel {
                conn,
                channel,
                protocol,
            } => {
                assert_eq!(protocol, format!("sidechannel/{channel}"));
                let j = conn.0 as usize;
                self.wants.insert((i, j, channel.clone()));
                if self.wants.contains(&(j, i, channel.clone()))
                    && self.open.insert((i, j, channel.clone()))
                {
                    self.open.insert((j, i, channel.clone()));
                    let now = self.now;
                    self.peers[i].on_channel_open(now, ConnId(j as u64), &channel);
                    self.peers[j].on_channel_open(now, ConnId(i as u64), &channel);
                }
            }
            Output::CloseChannel { conn, channel } => {
                let j = conn.0 as usize;
                self.wants.remove(&(i, j, channel.clone()));
                if self.open.remove(&(i, j, channel.clone())) {
                    self.open.remove(&(j, i, channel.clone()));
                    self.peers[j].on_channel_closed(ConnId(i as u64), &channel);
                }
            }
            Output::Send {
                conn,
                channel,
                bytes,
            } => {
                let j = conn.0 as usize;
                assert!(
                    self.open.contains(&(i, j, channel.clone())),
                    "peer {i} sent on {channel} to {j} before the channel opened"
                );
                self.queue.push_back((i, j, channel, bytes));
            }
            Output::Event(e) => self.events[i].push(e),
        }
    }

    /// Delivers raw bytes to `to` as if `from` had sent them on `channel`.
    pub fn inject(&mut self, from: usize, to: usize, channel: &str, bytes: &[u8]) {
        let now = self.now;
        self.peers[to].on_message(now, ConnId(from as u64), channel, bytes);
        self.pump();
    }

    /// Messages delivered to `i` on `channel` (control messages included).
    pub fn delivered(&self, i: usize, channel: &str) -> Vec<Payload> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                SidechannelEvent::Message {
                    channel: c,
                    payload,
                    ..
                } if c == channel => Some(payload.clone()),
                _ => None,
            })
            .collect()
    }

    /// Application messages (no control) delivered to `i` on `channel`, as their `message`.
    pub fn texts(&self, i: usize, channel: &str) -> Vec<serde_json::Value> {
        self.delivered(i, channel)
            .into_iter()
            .filter(|p| p.control().is_none())
            .filter_map(|p| p.message().cloned())
            .collect()
    }

    pub fn drops(&self, i: usize) -> Vec<DropReason> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                SidechannelEvent::Dropped { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn drop_codes(&self, i: usize) -> Vec<&'static str> {
        self.drops(i).iter().map(DropReason::code).collect()
    }

    pub fn clear_events(&mut self) {
        for e in &mut self.events {
            e.clear();
        }
    }
}
