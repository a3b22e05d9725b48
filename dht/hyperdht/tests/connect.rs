//! Rust server and client on a small Rust network on 127.0.0.1: connect by key, echo,
//! firewall rejection, unknown keys.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::{ConnectError, ConnectOptions, HyperDht, HyperDhtConfig, ListenOptions};

fn local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

async fn node(bootstrap: &[SocketAddrV4], persistent: bool) -> HyperDht {
    let mut cfg = HyperDhtConfig::new(bootstrap.to_vec());
    cfg.dht.host = Ipv4Addr::LOCALHOST;
    if persistent {
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
    } else {
        cfg.dht.ephemeral = Some(true);
    }
    let n = HyperDht::bind(cfg).await.unwrap();
    n.dht().bootstrapped().await.unwrap();
    n
}

async fn network(size: usize) -> (Vec<HyperDht>, SocketAddrV4) {
    let boot = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .unwrap();
    let port = boot.dht().local_addr().port();
    let mut nodes = vec![boot];
    for _ in 1..size {
        nodes.push(node(&[local(port)], true).await);
    }
    for n in &nodes {
        n.dht().persistent().await.unwrap();
    }
    (nodes, local(port))
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_connects_to_rust_server() {
    within(async {
        let (nodes, boot) = network(8).await;
        let server_node = node(&[boot], false).await;
        let client_node = node(&[boot], false).await;
        let skp = KeyPair::from_seed(&[1; 32]);
        let ckp = KeyPair::from_seed(&[2; 32]);
        let mut server = server_node
            .listen(skp.clone(), ListenOptions::default())
            .await
            .unwrap();
        let echo = tokio::spawn(async move {
            let mut conn = server.accept().await.unwrap();
            assert_eq!(
                conn.remote_public_key(),
                KeyPair::from_seed(&[2; 32]).public_key
            );
            assert!(!conn.is_initiator());
            while let Some(m) = conn.recv().await.unwrap() {
                conn.send(&m).await.unwrap();
            }
            conn.end().await.unwrap();
            server
        });
        let mut conn = client_node
            .connect(skp.public_key, ConnectOptions::new(ckp.clone()))
            .await
            .unwrap();
        assert!(conn.is_initiator());
        assert_eq!(conn.remote_public_key(), skp.public_key);
        for i in 0..10u8 {
            let msg = vec![i; 1000 * usize::from(i) + 1];
            conn.send(&msg).await.unwrap();
            assert_eq!(conn.recv().await.unwrap().unwrap(), msg);
        }
        conn.end().await.unwrap();
        assert!(conn.recv().await.unwrap().is_none());
        let server = echo.await.unwrap();
        server.close().await;

        // Rejected by the server's firewall: the handshake is never answered.
        let picky = ListenOptions {
            firewall: Some(Arc::new(|_: &[u8; 32], _: &_, _| false)),
            ..ListenOptions::default()
        };
        let rkp = KeyPair::from_seed(&[3; 32]);
        let _guarded = server_node.listen(rkp.clone(), picky).await.unwrap();
        let mut opts = ConnectOptions::new(ckp.clone());
        opts.timeout = Duration::from_secs(20);
        let err = client_node.connect(rkp.public_key, opts).await.unwrap_err();
        assert!(
            matches!(err, ConnectError::ConnectionFailed),
            "rejected: {err:?}"
        );

        // Nobody listens on this key.
        let err = client_node
            .connect(
                KeyPair::from_seed(&[4; 32]).public_key,
                ConnectOptions::new(ckp),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectError::PeerNotFound),
            "unknown: {err:?}"
        );
        for n in nodes.iter().chain([&server_node, &client_node]) {
            n.destroy().await;
        }
    })
    .await;
}

/// A node that never learns it is reachable: every connection to or from it has to
/// holepunch (on loopback every "NAT" is consistent).
async fn firewalled_node(bootstrap: &[SocketAddrV4]) -> HyperDht {
    let mut cfg = HyperDhtConfig::new(bootstrap.to_vec());
    cfg.dht.host = Ipv4Addr::LOCALHOST;
    cfg.dht.ephemeral = Some(true);
    cfg.dht.firewalled = true;
    cfg.dht.quick_firewall = false;
    let n = HyperDht::bind(cfg).await.unwrap();
    n.dht().bootstrapped().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewalled_peers_holepunch_on_loopback() {
    within(async {
        let (nodes, boot) = network(8).await;
        let server_node = firewalled_node(&[boot]).await;
        let client_node = firewalled_node(&[boot]).await;
        assert!(server_node.remote_address().is_none());
        let skp = KeyPair::from_seed(&[5; 32]);
        let mut server = server_node
            .listen(skp.clone(), ListenOptions::default())
            .await
            .unwrap();
        let echo = tokio::spawn(async move {
            let mut conn = server.accept().await.unwrap();
            while let Some(m) = conn.recv().await.unwrap() {
                conn.send(&m).await.unwrap();
            }
            conn.end().await.unwrap();
            (server, conn.info().local_addr)
        });
        let started = std::time::Instant::now();
        let mut conn = client_node
            .connect(
                skp.public_key,
                ConnectOptions::new(KeyPair::from_seed(&[6; 32])),
            )
            .await
            .unwrap();
        eprintln!("holepunched in {:?}", started.elapsed());
        // The connection settled on holepunch sockets, not on the DHT sockets.
        let local = conn.info().local_addr;
        assert_ne!(local, client_node.dht().local_addr());
        assert_ne!(local, client_node.dht().client_addr());
        conn.send(b"through the hole").await.unwrap();
        assert_eq!(conn.recv().await.unwrap().unwrap(), b"through the hole");
        conn.end().await.unwrap();
        assert!(conn.recv().await.unwrap().is_none());
        let (server, server_local) = echo.await.unwrap();
        assert_ne!(server_local, server_node.dht().local_addr());
        server.close().await;
        for n in nodes.iter().chain([&server_node, &client_node]) {
            n.destroy().await;
        }
    })
    .await;
}
