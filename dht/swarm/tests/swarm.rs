//! Swarms on a small Rust network on 127.0.0.1: two peers on a topic connect once and
//! talk; a firewall refuses a peer before any data flows; leaving and destroying
//! unannounce.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::{HyperDht, HyperDhtConfig};
use intercom_swarm::{JoinOptions, Swarm, SwarmConfig};

fn local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

async fn network(size: usize) -> (Vec<HyperDht>, SocketAddrV4) {
    let boot = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .unwrap();
    let port = boot.dht().local_addr().port();
    let mut nodes = vec![boot];
    for _ in 1..size {
        let mut cfg = HyperDhtConfig::new(vec![local(port)]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        let n = HyperDht::bind(cfg).await.unwrap();
        n.dht().bootstrapped().await.unwrap();
        nodes.push(n);
    }
    for n in &nodes {
        n.dht().persistent().await.unwrap();
    }
    (nodes, local(port))
}

async fn swarm(boot: SocketAddrV4, seed: u8, cfg: impl FnOnce(&mut SwarmConfig)) -> Swarm {
    let mut dht = HyperDhtConfig::new(vec![boot]);
    dht.dht.host = Ipv4Addr::LOCALHOST;
    let mut c = SwarmConfig::new(KeyPair::from_seed(&[seed; 32]));
    cfg(&mut c);
    let s = Swarm::bind(dht, c).await.unwrap();
    s.dht().dht().bootstrapped().await.unwrap();
    s
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_meet_on_a_topic() {
    within(async {
        let (nodes, boot) = network(6).await;
        let topic = [0x42; 32];
        let mut a = swarm(boot, 1, |_| {}).await;
        let mut b = swarm(boot, 2, |_| {}).await;
        a.join(topic, JoinOptions::default()).await.unwrap();
        a.flush().await.unwrap();
        b.join(topic, JoinOptions::default()).await.unwrap();
        b.flush().await.unwrap();
        let (mut ca, mut cb) = tokio::join!(a.accept(), b.accept());
        let (ca, cb) = (ca.take().unwrap(), cb.take().unwrap());
        assert_eq!(ca.public_key, b.public_key());
        assert_eq!(cb.public_key, a.public_key());
        assert_ne!(ca.client, cb.client, "one side dialled");
        let (mut x, mut y) = (ca.connection, cb.connection);
        x.send(b"ping").await.unwrap();
        assert_eq!(y.recv().await.unwrap().unwrap(), b"ping");
        y.send(b"pong").await.unwrap();
        assert_eq!(x.recv().await.unwrap().unwrap(), b"pong");
        // Exactly one connection each, even after another round of discovery.
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.status().await.unwrap().connections, 1);
        assert_eq!(b.status().await.unwrap().connections, 1);

        // Leaving unannounces: a client-only lookup no longer finds us.
        a.leave(topic).await.unwrap();
        b.leave(topic).await.unwrap();
        let mut q = nodes[1].lookup(topic).await.unwrap();
        while let Some(r) = q.next().await {
            assert!(r.peers.is_empty(), "still announced: {:?}", r.peers.len());
        }
        a.destroy().await;
        b.destroy().await;
        for n in &nodes {
            n.destroy().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_refuses_before_data_flows() {
    within(async {
        let (nodes, boot) = network(6).await;
        let topic = [0x43; 32];
        let refused = KeyPair::from_seed(&[4; 32]).public_key;
        let mut a = swarm(boot, 3, |c| {
            c.firewall = Some(Arc::new(move |k: &[u8; 32]| *k != refused));
        })
        .await;
        let mut b = swarm(boot, 4, |c| c.connect_timeout = Duration::from_secs(5)).await;
        a.join(
            topic,
            JoinOptions {
                server: true,
                client: false,
            },
        )
        .await
        .unwrap();
        a.flush().await.unwrap();
        b.join(
            topic,
            JoinOptions {
                server: false,
                client: true,
            },
        )
        .await
        .unwrap();
        b.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), a.accept()).await;
        assert!(got.is_err(), "a connection from a refused key came through");
        assert!(tokio::time::timeout(Duration::from_millis(100), b.accept())
            .await
            .is_err());
        assert_eq!(a.status().await.unwrap().connections, 0);
        a.destroy().await;
        b.destroy().await;
        for n in &nodes {
            n.destroy().await;
        }
    })
    .await;
}
