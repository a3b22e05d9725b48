//! An exact port of the JS `nat-sampler` module: guesses our public host and port from
//! the addresses remote nodes report seeing us at.
//!
//! The JS code keeps a ring of 32 references to sample objects (one `host:port` and one
//! `host:0` per `add`), where the same object may sit in the ring several times and its
//! `hits` counts those occurrences. Here the objects live in a small arena addressed by
//! index, compacted when it grows, so behaviour (including the quirk that the best
//! candidates `_a`/`_b` may outlive their ring slots) is identical.

use std::net::Ipv4Addr;

const RING: usize = 32;

#[derive(Debug, Clone)]
struct Sample {
    host: Ipv4Addr,
    port: u16,
    hits: i64,
}

/// Votes on our public address.
#[derive(Debug, Clone, Default)]
pub struct NatSampler {
    host: Option<Ipv4Addr>,
    port: u16,
    size: usize,
    arena: Vec<Sample>,
    a: Option<usize>,
    b: Option<usize>,
    threshold: i64,
    top: usize,
    samples: Vec<usize>,
}

impl NatSampler {
    /// An empty sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// The agreed host, if enough samples agree.
    pub fn host(&self) -> Option<Ipv4Addr> {
        self.host
    }

    /// The agreed port, 0 when samples agree on the host only (port randomising NAT).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Number of samples counted towards the threshold (at most 16).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Adds a sample; returns how many recent samples agree on this exact address.
    pub fn add(&mut self, host: Ipv4Addr, port: u16) -> i64 {
        let a = self.bump(host, port, 2);
        let b = self.bump(host, 0, 1);

        if self.samples.len() < RING {
            self.size += 1;
            let s = self.size as i64;
            self.threshold = s - if s < 4 {
                0
            } else if s < 8 {
                1
            } else if s < 12 {
                2
            } else {
                3
            };
            self.samples.push(a);
            self.samples.push(b);
            self.top += 2;
        } else {
            if self.top == RING {
                self.top = 0;
            }
            let oa = std::mem::replace(&mut self.samples[self.top], a);
            self.top += 1;
            self.arena[oa].hits -= 1;
            let ob = std::mem::replace(&mut self.samples[self.top], b);
            self.top += 1;
            self.arena[ob].hits -= 1;
        }

        if self
            .a
            .is_none_or(|x| self.arena[x].hits < self.arena[a].hits)
        {
            self.a = Some(a);
        }
        if self
            .b
            .is_none_or(|x| self.arena[x].hits < self.arena[b].hits)
        {
            self.b = Some(b);
        }

        let best_a = &self.arena[self.a.unwrap_or(a)];
        let best_b = &self.arena[self.b.unwrap_or(b)];
        if best_a.hits >= self.threshold {
            self.host = Some(best_a.host);
            self.port = best_a.port;
        } else if best_b.hits >= self.threshold {
            self.host = Some(best_b.host);
            self.port = 0;
        } else {
            self.host = None;
            self.port = 0;
        }

        let hits = self.arena[a].hits;
        self.compact();
        hits
    }

    fn bump(&mut self, host: Ipv4Addr, port: u16, inc: usize) -> usize {
        for i in 0..4 {
            let j = (self.top as i64 - inc as i64 - 2 * i) as usize & (RING - 1);
            let Some(&s) = self.samples.get(j) else { break };
            let sample = &mut self.arena[s];
            if sample.port == port && sample.host == host {
                sample.hits += 1;
                return s;
            }
        }
        self.arena.push(Sample {
            host,
            port,
            hits: 1,
        });
        self.arena.len() - 1
    }

    /// Drops arena entries nothing refers to any more.
    fn compact(&mut self) {
        if self.arena.len() <= 4 * RING {
            return;
        }
        let mut map = vec![usize::MAX; self.arena.len()];
        let mut arena = Vec::with_capacity(RING + 2);
        let refs = self
            .samples
            .iter_mut()
            .chain(self.a.iter_mut())
            .chain(self.b.iter_mut());
        for r in refs {
            if map[*r] == usize::MAX {
                map[*r] = arena.len();
                arena.push(self.arena[*r].clone());
            }
            *r = map[*r];
        }
        self.arena = arena;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn single_sample_is_trusted() {
        let mut n = NatSampler::new();
        assert_eq!(n.add(ip("1.1.1.1"), 1000), 1);
        assert_eq!((n.host(), n.port()), (Some(ip("1.1.1.1")), 1000));
    }

    #[test]
    fn consistent_and_random_ports() {
        // From nat-sampler's README/tests: same host, different ports -> port 0.
        let mut n = NatSampler::new();
        n.add(ip("1.1.1.1"), 1000);
        n.add(ip("1.1.1.1"), 1001);
        assert_eq!((n.host(), n.port()), (Some(ip("1.1.1.1")), 0));
        n.add(ip("1.1.1.1"), 1002);
        assert_eq!((n.host(), n.port()), (Some(ip("1.1.1.1")), 0));

        let mut n = NatSampler::new();
        n.add(ip("1.1.1.1"), 1000);
        n.add(ip("1.1.1.1"), 1000);
        n.add(ip("1.1.1.1"), 1000);
        assert_eq!((n.host(), n.port()), (Some(ip("1.1.1.1")), 1000));
        // A single outlier among 4 samples is tolerated (threshold 3 at size 4).
        n.add(ip("2.2.2.2"), 1000);
        assert_eq!((n.host(), n.port()), (Some(ip("1.1.1.1")), 1000));
    }

    #[test]
    fn disagreeing_hosts_give_nothing() {
        let mut n = NatSampler::new();
        n.add(ip("1.1.1.1"), 1000);
        n.add(ip("2.2.2.2"), 1000);
        assert_eq!((n.host(), n.port()), (None, 0));
    }

    #[test]
    fn ring_wraps_and_changes_mind() {
        let mut n = NatSampler::new();
        for _ in 0..40 {
            n.add(ip("1.1.1.1"), 1000);
        }
        assert_eq!(n.size(), 16);
        assert_eq!((n.host(), n.port()), (Some(ip("1.1.1.1")), 1000));
        for _ in 0..200 {
            n.add(ip("3.3.3.3"), 7);
        }
        assert_eq!((n.host(), n.port()), (Some(ip("3.3.3.3")), 7));
        assert!(n.arena.len() <= 4 * RING + 2);
    }

    #[test]
    fn matches_js_trace() {
        // testdata/nat_trace.txt was written by nat-sampler 1.0.1 in node:
        //   x = (x * 48271) % 2147483647; r = x % 100
        //   host = r < 70 ? 1.1.1.1 : r < 85 ? 2.2.2.2 : 3.3.3.3
        //   port = (x >> 8) % 10 < 7 ? 1000 : 1000 + (x >> 12) % 3
        //   print `${s.add(host, port)}/${first octet of s.host or -}/${s.port}`
        let expected = include_str!("../testdata/nat_trace.txt");
        let mut n = NatSampler::new();
        let mut x: u64 = 12345;
        let mut got = Vec::new();
        for _ in 0..400 {
            x = (x * 48271) % 2_147_483_647;
            let r = x % 100;
            let host = if r < 70 {
                ip("1.1.1.1")
            } else if r < 85 {
                ip("2.2.2.2")
            } else {
                ip("3.3.3.3")
            };
            let port = if (x >> 8) % 10 < 7 {
                1000
            } else {
                1000 + ((x >> 12) % 3) as u16
            };
            let hits = n.add(host, port);
            let h = n
                .host()
                .map_or("-".to_string(), |h| h.octets()[0].to_string());
            got.push(format!("{hits}/{h}/{}", n.port()));
        }
        assert_eq!(got.join(" "), expected.trim());
    }
}
