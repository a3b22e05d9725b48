//! Sidechannel benchmark: two peer runtimes (`intercom-peer`, the runtime `intercom run`
//! uses) connected by a real Hyperswarm connection over a loopback DHT (UDX + Noise
//! secret-stream + protomux), on the entry channel, rate limiting off:
//!
//! * throughput: messages/s delivered by B for `SC_BENCH_COUNT` messages (default
//!   20,000 of 100 bytes, 5,000 of 10 KB) sent by A through `PeerHandle::send` with at
//!   most 128 in flight, proof of work off;
//! * latency: 1,000 one-at-a-time messages, from A's `send` call to B's delivery event
//!   (one process, one clock), p50 / p99, proof of work off;
//! * proof of work: the CPU cost of `payload::prepare` (stamp + sign) at difficulty 12 vs
//!   0, ms per message, over 500 messages; and the end-to-end latency with PoW 12 on.
//!
//! "100-byte" and "10 KB" are the sizes of the application message (a JSON string);
//! the JSON payload on the wire adds ~330 bytes (ids, keys, signature).
//!
//!   cargo bench --bench sidechannel_bench
//!
//! Figures are printed; docs/benchmarks.md records them by hand.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use intercom_crypto::KeyPair;
use intercom_hyperdht::{HyperDht, HyperDhtConfig};
use intercom_peer::{
    Connection, ConnectionSink, PeerConfig, PeerEvent, PeerHandle, PeerRuntime, TopicCommand,
    TopicQueue,
};
use intercom_protomux::{Mux, MuxConfig};
use intercom_sidechannel::payload::{prepare, PrepareParams};
use intercom_sidechannel::{SidechannelConfig, SidechannelEvent};
use intercom_swarm::{JoinOptions, Swarm, SwarmConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const ENTRY: &str = "0000intercom";
const LIMIT: Duration = Duration::from_secs(300);
const WINDOW: usize = 128;
const PINGS: usize = 1000;
const POW_SAMPLES: usize = 500;

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn adapter(
    mut swarm: Swarm,
    mut topics: mpsc::Receiver<TopicCommand>,
    connector: ConnectionSink,
) {
    loop {
        tokio::select! {
            cmd = topics.recv() => match cmd {
                Some(TopicCommand::Join { topic, .. }) => {
                    swarm.join(topic, JoinOptions { server: true, client: true }).await.expect("join");
                }
                Some(TopicCommand::Leave { topic, .. }) => { let _ = swarm.leave(topic).await; }
                None => break,
            },
            conn = swarm.accept() => {
                let Some(c) = conn else { break };
                let (reader, writer, _h) = c.connection.split();
                let (mux, events) = Mux::new(reader, writer, MuxConfig {
                    keepalive: Some(Duration::from_secs(5)),
                    ..MuxConfig::default()
                });
                let conn = Connection { remote_public_key: c.public_key, mux, events, label: "swarm".into(), remote_opens: None };
                if let Err(refused) = connector.try_add(conn) { refused.mux.destroy(); }
            }
        }
    }
    swarm.destroy().await;
}

async fn peer(seed: u8, boot: SocketAddrV4, pow: bool, tx: mpsc::Sender<PeerEvent>) -> PeerHandle {
    let keypair = KeyPair::from_seed(&[seed; 32]);
    let mut dht = HyperDhtConfig::new(vec![boot]);
    dht.dht.host = Ipv4Addr::LOCALHOST;
    let swarm = Swarm::bind(dht, SwarmConfig::new(keypair.clone()))
        .await
        .expect("bind swarm");
    bounded("bootstrap", swarm.dht().dht().bootstrapped())
        .await
        .expect("bootstrapped");
    let (queue, topics) = TopicQueue::new(64, true);
    let cfg = PeerConfig {
        sidechannel: SidechannelConfig {
            rate_bytes_per_second: 0,
            pow_enabled: pow,
            max_seen: 100_000,
            ..SidechannelConfig::default()
        },
        ..PeerConfig::default()
    };
    let (h, _task) = PeerRuntime::spawn(cfg, keypair, queue).expect("runtime");
    h.add_sink(tx).await.unwrap();
    tokio::spawn(adapter(swarm, topics, h.connector()));
    h
}

/// The sequence number of a delivered bench message.
fn seq_of(ev: &PeerEvent) -> Option<u64> {
    if let PeerEvent::Sidechannel {
        event: SidechannelEvent::Message { payload, .. },
        ..
    } = ev
    {
        return payload.message()?.get("n")?.as_u64();
    }
    None
}

fn message(n: u64, size: usize) -> Value {
    json!({"n": n, "body": "x".repeat(size)})
}

struct Pair {
    a: PeerHandle,
    /// Keeps B's runtime alive (it stops when its last handle drops).
    _b: PeerHandle,
    b_events: mpsc::Receiver<PeerEvent>,
    _dht: Vec<HyperDht>,
    next: u64,
}

async fn pair(pow: bool, seeds: (u8, u8)) -> Pair {
    let first = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .expect("bootstrapper");
    let boot = SocketAddrV4::new(Ipv4Addr::LOCALHOST, first.dht().local_addr().port());
    let mut nodes = vec![first];
    for _ in 0..2 {
        let mut cfg = HyperDhtConfig::new(vec![boot]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        nodes.push(HyperDht::bind(cfg).await.expect("node"));
    }
    for n in &nodes {
        bounded("persistent", n.dht().persistent())
            .await
            .expect("persistent");
    }
    let (a_tx, _a_rx) = mpsc::channel(16);
    let (b_tx, b_events) = mpsc::channel(16_384);
    let a = peer(seeds.0, boot, pow, a_tx).await;
    let b = peer(seeds.1, boot, pow, b_tx).await;
    bounded("connection and channel open", async {
        loop {
            if a.stats().await.unwrap().open_channels >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    Pair {
        a,
        _b: b,
        b_events,
        _dht: nodes,
        next: 0,
    }
}

impl Pair {
    /// Waits until the connection is settled (a duplicate connection from the two
    /// peers dialling each other may replace the first): a probe must reach B.
    async fn settle(&mut self) {
        bounded("a settled connection", async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r = self
                    .a
                    .send(ENTRY, json!({"probe": true}), None, None)
                    .await
                    .unwrap();
                if r.peers != 1 {
                    continue;
                }
                let got = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        if let Some(PeerEvent::Sidechannel {
                            event: SidechannelEvent::Message { payload, .. },
                            ..
                        }) = self.b_events.recv().await
                        {
                            if payload.message().and_then(|m| m.get("probe")).is_some() {
                                return;
                            }
                        }
                    }
                })
                .await;
                if got.is_ok() {
                    return;
                }
            }
        })
        .await
    }

    /// Waits for the delivery of `seq` at B, ignoring other events.
    async fn delivered(&mut self, seq: u64) {
        loop {
            let ev = self.b_events.recv().await.expect("events");
            if seq_of(&ev) == Some(seq) {
                return;
            }
        }
    }

    /// `count` messages of `size` bytes with at most WINDOW in flight: messages/s.
    async fn throughput(&mut self, count: u64, size: usize) -> f64 {
        let start = self.next;
        let end = start + count;
        let t = Instant::now();
        let mut received = start;
        let mut sent = start;
        while received < end {
            while sent < end && (sent - received) < WINDOW as u64 {
                let r = self
                    .a
                    .send(ENTRY, message(sent, size), None, None)
                    .await
                    .unwrap();
                assert_eq!(r.peers, 1);
                sent += 1;
            }
            let ev = self.b_events.recv().await.expect("events");
            if let Some(n) = seq_of(&ev) {
                assert_eq!(n, received, "in order, none lost");
                received += 1;
            }
        }
        self.next = end;
        count as f64 / t.elapsed().as_secs_f64()
    }

    /// One-at-a-time latencies (ms): (p50, p99).
    async fn latency(&mut self, size: usize) -> (f64, f64) {
        let mut ms = Vec::with_capacity(PINGS);
        for _ in 0..PINGS {
            let seq = self.next;
            self.next += 1;
            let t = Instant::now();
            self.a
                .send(ENTRY, message(seq, size), None, None)
                .await
                .unwrap();
            self.delivered(seq).await;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        (quantile(&ms, 0.5), quantile(&ms, 0.99))
    }
}

fn pow_cost(difficulty: u32) -> f64 {
    let kp = KeyPair::from_seed(&[7; 32]);
    let t = Instant::now();
    for i in 0..POW_SAMPLES {
        let p = prepare(
            &kp,
            PrepareParams {
                channel: ENTRY.into(),
                message: message(i as u64, 100),
                ts: 1_700_000_000_000 + i as u64,
                ttl: 3,
                invite: None,
                pow_difficulty: Some(difficulty),
                id_suffix: format!("{i:08}"),
            },
        );
        std::hint::black_box(p);
    }
    t.elapsed().as_secs_f64() * 1e3 / POW_SAMPLES as f64
}

fn count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let small = count("SC_BENCH_COUNT", 20_000);
        let large = (small / 4).max(1);
        let mut p = pair(false, (1, 2)).await;
        p.settle().await;
        // Warm-up.
        p.throughput(500, 100).await;
        let tput_100 = p.throughput(small, 100).await;
        let tput_10k = p.throughput(large, 10_000).await;
        let (p50_100, p99_100) = p.latency(100).await;
        let (p50_10k, p99_10k) = p.latency(10_000).await;
        println!("two runtimes over a loopback Hyperswarm connection, rate limiting off, PoW off");
        println!("  100 B  messages/s: {tput_100:>9.0}  ({small} messages)");
        println!("  10 KB  messages/s: {tput_10k:>9.0}  ({large} messages)");
        println!("  100 B  latency p50 {p50_100:.3} ms  p99 {p99_100:.3} ms  ({PINGS} one at a time)");
        println!("  10 KB  latency p50 {p50_10k:.3} ms  p99 {p99_10k:.3} ms  ({PINGS} one at a time)");
        drop(p);

        let pow0 = pow_cost(0);
        let pow12 = pow_cost(12);
        println!("proof of work (payload::prepare: stamp + sign, 100-byte message, {POW_SAMPLES} messages)");
        println!("  difficulty 0 : {pow0:.3} ms/message (signature only)");
        println!("  difficulty 12: {pow12:.3} ms/message ({:.3} ms of PoW)", pow12 - pow0);

        let mut q = pair(true, (3, 4)).await;
        q.settle().await;
        q.throughput(200, 100).await;
        let (p50, p99) = q.latency(100).await;
        println!("  end to end with PoW 12 (100 B): latency p50 {p50:.3} ms  p99 {p99:.3} ms");
    });
}
