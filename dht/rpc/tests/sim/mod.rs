//! A deterministic in-memory network of sans-io [`DhtNode`]s stepped in virtual time,
//! with per-link latency, per-node packet loss and a simple firewall model (a socket of
//! an unreachable node only accepts datagrams from addresses it has sent to).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use intercom_dht_rpc::rng::Rng;
use intercom_dht_rpc::{
    Config, DhtEvent, DhtNode, IncomingRequest, QueryId, ReplyOptions, RequestId, SocketKind,
};

pub const CLIENT_PORT: u16 = 20000;
pub const SERVER_PORT: u16 = 49737;

pub struct SimNode {
    pub node: DhtNode,
    pub ip: Ipv4Addr,
    /// Whether unsolicited datagrams reach this node.
    pub reachable: bool,
    /// Share of incoming datagrams dropped, 0..=100.
    pub loss_percent: u64,
    contacted: HashSet<(SocketKind, SocketAddrV4)>,
    pub events: Vec<DhtEvent>,
    /// User requests received (command, had a token).
    pub requests: Vec<(u64, bool)>,
    /// Answer user requests (with the node's index as value).
    pub answer: bool,
    pub alive: bool,
}

impl SimNode {
    pub fn client(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, CLIENT_PORT)
    }
    pub fn server(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, SERVER_PORT)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    from: SocketAddrV4,
    to: SocketAddrV4,
    bytes: Vec<u8>,
}

pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Packet)>>,
    addrs: HashMap<SocketAddrV4, (usize, SocketKind)>,
    rng: Rng,
    pub delivered: u64,
    pub dropped: u64,
}

impl Sim {
    /// A network whose randomness comes from `seed` (offset by the `SIM_SEED_OFFSET`
    /// environment variable, to try other runs by hand).
    pub fn new(seed: u8) -> Self {
        let offset: u8 = std::env::var("SIM_SEED_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let seed = seed.wrapping_add(offset);
        Sim {
            nodes: Vec::new(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            addrs: HashMap::new(),
            rng: Rng::from_seed([seed; 32]),
            delivered: 0,
            dropped: 0,
        }
    }

    pub fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)
    }

    /// Adds a node at the next IP; `cfg.seed` is filled in deterministically.
    pub fn add(&mut self, mut cfg: Config, reachable: bool, loss_percent: u64) -> usize {
        let i = self.nodes.len();
        let ip = Self::ip(i);
        cfg.seed = Some(self.rng.bytes32());
        let node = DhtNode::new(cfg, SERVER_PORT, self.now);
        self.addrs
            .insert(SocketAddrV4::new(ip, CLIENT_PORT), (i, SocketKind::Client));
        self.addrs
            .insert(SocketAddrV4::new(ip, SERVER_PORT), (i, SocketKind::Server));
        self.nodes.push(SimNode {
            node,
            ip,
            reachable,
            loss_percent,
            contacted: HashSet::new(),
            events: Vec::new(),
            requests: Vec::new(),
            answer: true,
            alive: true,
        });
        self.pump(i);
        i
    }

    /// Moves a node's transmits into the network and handles its events.
    pub fn pump(&mut self, i: usize) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.nodes[i].node.poll_transmit() {
                progressed = true;
                let n = &mut self.nodes[i];
                n.contacted.insert((t.socket, t.to));
                let port = match t.socket {
                    SocketKind::Server => SERVER_PORT,
                    _ => CLIENT_PORT,
                };
                let from = SocketAddrV4::new(n.ip, port);
                let latency = 5 + self.rng.below(40);
                self.seq += 1;
                let p = Packet {
                    from,
                    to: t.to,
                    bytes: t.bytes,
                };
                self.queue.push(Reverse((self.now + latency, self.seq, p)));
            }
            while let Some(ev) = self.nodes[i].node.poll_event() {
                progressed = true;
                if let DhtEvent::Request(req) = &ev {
                    self.on_user_request(i, req.clone());
                }
                self.nodes[i].events.push(ev);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_user_request(&mut self, i: usize, req: IncomingRequest) {
        let n = &mut self.nodes[i];
        n.requests.push((req.command, req.token.is_some()));
        if n.answer {
            let value = (i as u32).to_le_bytes().to_vec();
            n.node.reply(&req, Some(value), ReplyOptions::default());
        }
    }

    fn deliver(&mut self, p: Packet) {
        let Some(&(i, socket)) = self.addrs.get(&p.to) else {
            self.dropped += 1;
            return;
        };
        let loss = self.nodes[i].loss_percent;
        let lost = loss > 0 && self.rng.below(100) < loss;
        let n = &self.nodes[i];
        let blocked = !n.reachable && !n.contacted.contains(&(socket, p.from));
        if lost || blocked || !n.alive {
            self.dropped += 1;
            return;
        }
        self.delivered += 1;
        let now = self.now;
        self.nodes[i]
            .node
            .handle_datagram(now, socket, p.from, &p.bytes);
        self.pump(i);
    }

    /// Runs the network until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let next_packet = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let mut next_timer: Option<(u64, usize)> = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if !n.alive {
                    continue;
                }
                if let Some(t) = n.node.poll_timeout() {
                    if next_timer.is_none_or(|(b, _)| t < b) {
                        next_timer = Some((t, i));
                    }
                }
            }
            let t_packet = next_packet.unwrap_or(u64::MAX);
            let t_timer = next_timer.map_or(u64::MAX, |(t, _)| t);
            let t = t_packet.min(t_timer);
            if t > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(t);
            if t_packet <= t_timer {
                if let Some(Reverse((_, _, p))) = self.queue.pop() {
                    self.deliver(p);
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                self.nodes[i].node.handle_timeout(now);
                self.pump(i);
            }
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// Runs until `f` holds (checked every 100 ms of virtual time) or `limit` ms passed.
    pub fn run_while(&mut self, limit: u64, mut f: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if !f(self) {
                return true;
            }
            self.run_for(100);
        }
        !f(self)
    }

    pub fn query_done(&self, i: usize, q: QueryId) -> Option<&DhtEvent> {
        self.nodes[i]
            .events
            .iter()
            .find(|e| matches!(e, DhtEvent::QueryDone { query, .. } if *query == q))
    }

    pub fn request_done(&self, i: usize, r: RequestId) -> Option<&DhtEvent> {
        self.nodes[i]
            .events
            .iter()
            .find(|e| matches!(e, DhtEvent::RequestDone { request, .. } if *request == r))
    }
}
