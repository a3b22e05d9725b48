//! Relaying over real Hyperswarm connections on loopback: six runtimes in a line
//! `P0 - P1 - P2 - P3 - P4 - P5` where each swarm's firewall admits only its neighbours,
//! all on the entry channel.
//!
//! TTL semantics (the reference's `_relay`): a message leaves its author with `ttl = 3`;
//! a receiver delivers it whatever its TTL and relays a copy with `ttl - 1` only while
//! `ttl > 0`. So hop 1 receives TTL 3, hop 2 TTL 2, hop 3 TTL 1 and hop 4 TTL 0 (and
//! does not relay): with the default TTL a message reaches four hops. In the line, a
//! message from P0 reaches P4 (the fifth peer) exactly once and never P5, though P5 is
//! connected to P4 with the channel open; the same holds from P5 back to P1 / P0.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::{HyperDht, HyperDhtConfig};
use intercom_peer::{
    Connection, ConnectionSink, PeerConfig, PeerEvent, PeerHandle, PeerRuntime, TopicCommand,
    TopicQueue,
};
use intercom_protomux::{Mux, MuxConfig};
use intercom_sidechannel::{SidechannelConfig, SidechannelEvent};
use intercom_swarm::{JoinOptions, Swarm, SwarmConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const LINE: usize = 6;
const ENTRY: &str = "0000intercom";
const CONNECT: Duration = Duration::from_secs(120);

fn kp(i: usize) -> KeyPair {
    KeyPair::from_seed(&[i as u8 + 1; 32])
}

/// A loopback DHT: a bootstrapper and three persistent nodes.
async fn network() -> (Vec<HyperDht>, SocketAddrV4) {
    let first = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .expect("bootstrapper");
    let boot = SocketAddrV4::new(Ipv4Addr::LOCALHOST, first.dht().local_addr().port());
    let mut nodes = vec![first];
    for _ in 0..3 {
        let mut cfg = HyperDhtConfig::new(vec![boot]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        nodes.push(HyperDht::bind(cfg).await.expect("bind node"));
    }
    for n in &nodes {
        timeout(Duration::from_secs(30), n.dht().persistent())
            .await
            .expect("persistent in time")
            .expect("persistent");
    }
    (nodes, boot)
}

/// What `intercom run`'s network adapter does: topics to the swarm, connections to the
/// runtime.
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
                Some(TopicCommand::Leave { topic, .. }) => {
                    let _ = swarm.leave(topic).await;
                }
                None => break,
            },
            conn = swarm.accept() => {
                let Some(c) = conn else { break };
                let (reader, writer, _handle) = c.connection.split();
                let (mux, events) = Mux::new(reader, writer, MuxConfig {
                    keepalive: Some(Duration::from_secs(5)),
                    ..MuxConfig::default()
                });
                let connection = Connection { remote_public_key: c.public_key, mux, events, label: "swarm".into(), remote_opens: None };
                if let Err(refused) = connector.try_add(connection) {
                    refused.mux.destroy();
                }
            }
        }
    }
    swarm.destroy().await;
}

struct Node {
    h: PeerHandle,
    events: mpsc::Receiver<PeerEvent>,
    _task: JoinHandle<()>,
}

/// Peer `i` of the line: its firewall admits only peers `i - 1` and `i + 1`.
async fn node(i: usize, boot: SocketAddrV4) -> Node {
    let keypair = kp(i);
    let neighbours: Vec<[u8; 32]> = [i.checked_sub(1), Some(i + 1).filter(|&j| j < LINE)]
        .into_iter()
        .flatten()
        .map(|j| kp(j).public_key)
        .collect();
    let mut dht = HyperDhtConfig::new(vec![boot]);
    dht.dht.host = Ipv4Addr::LOCALHOST;
    let config = SwarmConfig {
        firewall: Some(Arc::new(move |key: &[u8; 32]| neighbours.contains(key))),
        ..SwarmConfig::new(keypair.clone())
    };
    let swarm = Swarm::bind(dht, config).await.expect("bind swarm");
    timeout(Duration::from_secs(30), swarm.dht().dht().bootstrapped())
        .await
        .expect("bootstrapped in time")
        .expect("bootstrapped");
    let (queue, topics) = TopicQueue::new(64, true);
    let cfg = PeerConfig {
        sidechannel: SidechannelConfig::default(),
        ..PeerConfig::default()
    };
    let (h, _runtime) = PeerRuntime::spawn(cfg, keypair, queue).expect("runtime");
    let (tx, events) = mpsc::channel(4096);
    h.add_sink(tx).await.unwrap();
    let task = tokio::spawn(adapter(swarm, topics, h.connector()));
    Node {
        h,
        events,
        _task: task,
    }
}

/// Every delivered (non-control) message within `d`: (text, ttl, relayedBy).
async fn delivered_within(n: &mut Node, d: Duration) -> Vec<(Value, f64, Value)> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(Some(ev)) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        n.events.recv(),
    )
    .await
    {
        if let PeerEvent::Sidechannel {
            event: SidechannelEvent::Message {
                channel, payload, ..
            },
            ..
        } = ev
        {
            assert_eq!(channel, ENTRY);
            out.push((
                payload.message().cloned().unwrap_or(Value::Null),
                payload.ttl(),
                payload.get("relayedBy").cloned().unwrap_or(Value::Null),
            ));
        }
    }
    out
}

/// Waits until every peer has exactly its neighbours connected with the entry channel
/// open.
async fn wait_line(nodes: &[Node]) {
    let deadline = Instant::now() + CONNECT;
    loop {
        let mut ok = true;
        let mut seen = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let want = if i == 0 || i == LINE - 1 { 1 } else { 2 };
            let s = n.h.stats().await.unwrap();
            seen.push((s.connections, s.open_channels));
            assert!(
                s.connections <= want,
                "peer {i} has a non-neighbour connection"
            );
            ok &= s.connections == want && s.open_channels == want;
        }
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "line not formed: {seen:?} (connections, open channels)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_of_six_relays_within_ttl_exactly_once() {
    timeout(Duration::from_secs(300), scenario())
        .await
        .expect("relay scenario within 300 s");
}

async fn scenario() {
    let (_dht, boot) = network().await;
    let mut nodes = Vec::new();
    for i in 0..LINE {
        nodes.push(node(i, boot).await);
    }
    wait_line(&nodes).await;
    let key = |i: usize| hex::encode(kp(i).public_key);

    for (from, dir) in [(0usize, 1isize), (LINE - 1, -1)] {
        let text = json!({"from": from, "text": "down the line"});
        let hop_peer = |hop: usize| (from as isize + dir * hop as isize) as usize;
        let relayed_before = nodes[hop_peer(4)]
            .h
            .stats()
            .await
            .unwrap()
            .sidechannel
            .relayed;
        let out = nodes[from]
            .h
            .send(ENTRY, text.clone(), None, None)
            .await
            .unwrap();
        assert_eq!(out.peers, 1, "only the neighbour is connected");
        // Hops 1..=4 deliver exactly once, with TTL 3 - (hop - 1), relayed by the
        // previous peer; the last hop (TTL 0) does not relay, so hop 5 sees nothing.
        let (near, far) = (hop_peer(4), hop_peer(5));
        // Wait for the fourth hop first, then give stray copies time to show up.
        let got4 = {
            let n = &mut nodes[near];
            let first = delivered_until(n, &text).await;
            let mut more = delivered_within(n, Duration::from_secs(2)).await;
            more.insert(0, first);
            more
        };
        assert_eq!(
            got4,
            vec![(text.clone(), 0.0, json!(key(hop_peer(3))))],
            "hop 4 delivers exactly once with TTL 0"
        );
        for hop in 1..=3 {
            let got = delivered_within(&mut nodes[hop_peer(hop)], Duration::from_millis(200)).await;
            let want_relayer = if hop == 1 {
                Value::Null
            } else {
                json!(key(hop_peer(hop - 1)))
            };
            assert_eq!(
                got,
                vec![(text.clone(), 3.0 - (hop as f64 - 1.0), want_relayer)],
                "hop {hop} delivers exactly once"
            );
        }
        assert!(
            delivered_within(&mut nodes[far], Duration::from_millis(200))
                .await
                .is_empty(),
            "hop 5 is beyond the TTL"
        );
        let s = nodes[near].h.stats().await.unwrap();
        assert_eq!(
            s.sidechannel.relayed, relayed_before,
            "a TTL-0 message is not relayed"
        );
        assert_eq!(
            s.open_channels, 2,
            "hop 5 was connected with the channel open"
        );
        let s = nodes[from].h.stats().await.unwrap();
        assert_eq!(
            s.sidechannel.delivered, 0,
            "the author never delivers its own"
        );
        for (i, n) in nodes.iter().enumerate() {
            let s = n.h.stats().await.unwrap();
            let hop = (i as isize - from as isize) * dir;
            let want = u64::from((1..=4).contains(&hop));
            let first_round = dir == 1;
            // Round one (from P0) reaches P1..P4; round two (from P5) P4..P1 on top.
            let expect = if first_round {
                want
            } else {
                want + u64::from((1..=4).contains(&(i as isize)))
            };
            assert_eq!(s.sidechannel.delivered, expect, "peer {i} delivered count");
        }
    }
    for n in &nodes {
        n.h.shutdown().await;
    }
}

/// The first delivered message, which must be `text`.
async fn delivered_until(n: &mut Node, text: &Value) -> (Value, f64, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ev = timeout(deadline - Instant::now(), n.events.recv())
            .await
            .expect("message within 60 s")
            .expect("events");
        if let PeerEvent::Sidechannel {
            event: SidechannelEvent::Message { payload, .. },
            ..
        } = ev
        {
            let m = payload.message().cloned().unwrap_or(Value::Null);
            assert_eq!(&m, text);
            return (
                m,
                payload.ttl(),
                payload.get("relayedBy").cloned().unwrap_or(Value::Null),
            );
        }
    }
}
