//! NAT sampling of one holepunch socket (`lib/nat.js`), as a pure state machine.
//!
//! A puncher pings a few DHT nodes from its socket; each reply says which address the
//! node saw us at ([`Nat::add`]). Whether those addresses agree decides the firewall
//! type we report in holepunch payloads:
//!
//! | samples (most common address first)                         | firewall     |
//! |--------------------------------------------------------------|--------------|
//! | the DHT node is not firewalled                               | OPEN         |
//! | fewer than 3 samples                                         | UNKNOWN      |
//! | one address seen ≥ 3 times                                   | CONSISTENT   |
//! | every address seen once                                      | RANDOM       |
//! | 2 hits, one host, > 3 samples                                | RANDOM       |
//! | 2 hits on two addresses of different hosts                   | CONSISTENT   |
//! | otherwise, once more than 4 samples                          | RANDOM       |
//!
//! The reported addresses are the addresses seen at least twice (or the first two) for a
//! consistent NAT, and the host alone (port 0) for a random one. Sampling is *resolved*
//! (JS `analyzing`) as soon as the NAT looks consistent or open, or after the minimum
//! number of samples; [`Nat::pick_nodes`] chooses whom to ping, as `autoSample` does.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::constants::firewall::{CONSISTENT, OPEN, RANDOM, UNKNOWN};

/// Samples wanted before a non-consistent verdict (`_minSamples`).
pub const MIN_SAMPLES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    host: Ipv4Addr,
    port: u16,
    hits: u32,
}

fn add_sample(samples: &mut Vec<Sample>, host: Ipv4Addr, port: u16) {
    if let Some(mut i) = samples
        .iter()
        .position(|s| s.host == host && s.port == port)
    {
        samples[i].hits += 1;
        // Keep the list sorted by hits, most first (stable for ties).
        while i > 0 && samples[i - 1].hits < samples[i].hits {
            samples.swap(i - 1, i);
            i -= 1;
        }
        return;
    }
    samples.push(Sample {
        host,
        port,
        hits: 1,
    });
}

/// The NAT sampler of one socket.
#[derive(Debug, Clone)]
pub struct Nat {
    samples_host: Vec<Sample>,
    samples_full: Vec<Sample>,
    visited: HashMap<SocketAddrV4, u8>,
    min_samples: usize,
    sampled: usize,
    frozen: bool,
    resolved: bool,
    /// Whether the DHT node is firewalled (then OPEN is never concluded).
    pub dht_firewalled: bool,
    /// The current verdict ([`crate::constants::firewall`]).
    pub firewall: u64,
    /// The addresses we report, `None` while unknown (and for OPEN, as in JS).
    pub addresses: Option<Vec<SocketAddrV4>>,
}

impl Nat {
    /// A sampler for a socket of a node that is (not) `dht_firewalled`.
    pub fn new(dht_firewalled: bool) -> Nat {
        Nat {
            samples_host: Vec::new(),
            samples_full: Vec::new(),
            visited: HashMap::new(),
            min_samples: MIN_SAMPLES,
            sampled: 0,
            frozen: false,
            resolved: false,
            dht_firewalled,
            firewall: if dht_firewalled { UNKNOWN } else { OPEN },
            addresses: None,
        }
    }

    /// Samples taken.
    pub fn sampled(&self) -> usize {
        self.sampled
    }

    /// True once analysis has concluded (or gave up).
    pub fn is_resolved(&self) -> bool {
        self.resolved
    }

    /// Marks the analysis as concluded (all pings answered or failed).
    pub fn resolve(&mut self) {
        self.resolved = true;
    }

    /// Whether another round of pings is wanted after `pending` answered.
    pub fn wants_more(&self) -> bool {
        !self.resolved && self.sampled < self.min_samples
    }

    /// `autoSample`: which of `nodes` (most recently seen first) to ping now so that
    /// samples plus `pending` pings reach the minimum. Nodes are pinged at most once;
    /// with 8 or more nodes the first 5 are skipped.
    pub fn pick_nodes(&mut self, nodes: &[SocketAddrV4], pending: usize) -> Vec<SocketAddrV4> {
        let mut skip = if nodes.len() >= 8 { 5 } else { 0 };
        let mut out = Vec::new();
        for &node in nodes {
            if self.sampled + pending + out.len() >= self.min_samples {
                break;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if self.visited.contains_key(&node) {
                continue;
            }
            self.visited.insert(node, 1);
            out.push(node);
        }
        out
    }

    /// Stops sampling (`destroy`).
    pub fn destroy(&mut self) {
        self.min_samples = 0;
        self.resolved = true;
    }

    /// Stops updating the verdict (it is being told to the remote).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Resumes updating.
    pub fn unfreeze(&mut self) {
        self.frozen = false;
        self.update_firewall();
        self.update_addresses();
    }

    /// Recomputes the verdict.
    pub fn update(&mut self) {
        if self.dht_firewalled && self.firewall == OPEN {
            self.firewall = UNKNOWN;
        }
        self.update_firewall();
        self.update_addresses();
    }

    fn update_firewall(&mut self) {
        if !self.dht_firewalled {
            self.firewall = OPEN;
            return;
        }
        if self.sampled < 3 {
            return;
        }
        let max = self.samples_full.first().map_or(0, |s| s.hits);
        if max >= 3 {
            self.firewall = CONSISTENT;
        } else if max == 1 || (self.samples_host.len() == 1 && self.sampled > 3) {
            // Every sample differs, or (max = 2) one host with two bad samples: random.
            self.firewall = RANDOM;
        } else if self.samples_host.len() > 1
            && self.samples_full.get(1).is_some_and(|s| s.hits > 1)
        {
            self.firewall = CONSISTENT;
        } else if self.sampled > 4 {
            self.firewall = RANDOM;
        }
    }

    fn update_addresses(&mut self) {
        match self.firewall {
            UNKNOWN => self.addresses = None,
            RANDOM => {
                self.addresses = self
                    .samples_host
                    .first()
                    .map(|s| vec![SocketAddrV4::new(s.host, 0)]);
            }
            CONSISTENT => {
                let mut out = Vec::new();
                for s in &self.samples_full {
                    if s.hits >= 2 || out.len() < 2 {
                        out.push(SocketAddrV4::new(s.host, s.port));
                    }
                }
                self.addresses = Some(out);
            }
            _ => {}
        }
    }

    /// A node at `from` saw us at `addr`.
    pub fn add(&mut self, addr: SocketAddrV4, from: SocketAddrV4) {
        if self.visited.get(&from) == Some(&2) {
            return;
        }
        self.visited.insert(from, 2);
        add_sample(&mut self.samples_host, *addr.ip(), 0);
        add_sample(&mut self.samples_full, *addr.ip(), addr.port());
        self.sampled += 1;
        if (self.sampled >= 3 || !self.dht_firewalled) && !self.frozen {
            self.update();
        }
        if self.firewall == CONSISTENT || self.firewall == OPEN || self.sampled >= self.min_samples
        {
            self.resolved = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(host: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, host), port)
    }

    #[test]
    fn consistent_after_three_equal_samples() {
        let mut n = Nat::new(true);
        n.add(a(1, 1000), a(10, 1));
        n.add(a(1, 1000), a(11, 1));
        assert_eq!(n.firewall, UNKNOWN);
        assert!(!n.is_resolved());
        n.add(a(1, 1000), a(12, 1));
        assert_eq!(n.firewall, CONSISTENT);
        assert_eq!(n.addresses, Some(vec![a(1, 1000)]));
        assert!(n.is_resolved());
        // The same node counts once.
        n.add(a(1, 2000), a(12, 1));
        assert_eq!(n.sampled(), 3);
    }

    #[test]
    fn random_when_every_port_differs() {
        let mut n = Nat::new(true);
        for i in 0..3 {
            n.add(a(1, 1000 + i), a(10 + i as u8, 1));
        }
        assert_eq!(n.firewall, RANDOM);
        assert_eq!(n.addresses, Some(vec![a(1, 0)]));
        assert!(!n.is_resolved(), "wants 4 samples before a random verdict");
        n.add(a(1, 2000), a(20, 1));
        assert!(n.is_resolved());
    }

    #[test]
    fn two_hits_on_one_host_is_random_after_four() {
        let mut n = Nat::new(true);
        n.add(a(1, 1000), a(10, 1));
        n.add(a(1, 1000), a(11, 1));
        n.add(a(1, 1001), a(12, 1));
        assert_eq!(n.firewall, UNKNOWN);
        n.add(a(1, 1002), a(13, 1));
        assert_eq!(n.firewall, RANDOM);
    }

    #[test]
    fn two_hosts_with_double_hits_is_consistent() {
        let mut n = Nat::new(true);
        n.add(a(1, 1000), a(10, 1));
        n.add(a(2, 1000), a(11, 1));
        n.add(a(1, 1000), a(12, 1));
        n.add(a(2, 1000), a(13, 1));
        assert_eq!(n.firewall, CONSISTENT);
        assert_eq!(n.addresses, Some(vec![a(1, 1000), a(2, 1000)]));
    }

    #[test]
    fn open_node_and_freeze() {
        let mut n = Nat::new(false);
        assert_eq!(n.firewall, OPEN);
        n.add(a(1, 1000), a(10, 1));
        assert!(n.is_resolved());
        assert_eq!(n.addresses, None);
        let mut n = Nat::new(true);
        n.freeze();
        for i in 0..3 {
            n.add(a(1, 1000), a(10 + i, 1));
        }
        assert_eq!(n.firewall, UNKNOWN);
        n.unfreeze();
        assert_eq!(n.firewall, CONSISTENT);
    }

    #[test]
    fn picks_nodes_like_auto_sample() {
        let nodes: Vec<_> = (0..10).map(|i| a(50 + i, 1)).collect();
        let mut n = Nat::new(true);
        let first = n.pick_nodes(&nodes, 0);
        assert_eq!(first, nodes[5..9].to_vec());
        // Already visited ones are not picked again.
        let again = n.pick_nodes(&nodes, 0);
        assert_eq!(again, vec![nodes[9]]);
        let few: Vec<_> = (0..3).map(|i| a(80 + i, 1)).collect();
        let mut n = Nat::new(true);
        assert_eq!(n.pick_nodes(&few, 0), few);
        assert!(n.pick_nodes(&few, 0).is_empty());
    }
}
