//! Inbound connection limits and the frame memory budget on a small Rust network on
//! loopback: clients on 127.0.0.2-5 open more connections than the server allows, in
//! total and per IP, then send bare length prefixes (oversize and in-budget). The
//! server's counters must show every refusal and never more open than allowed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::{
    ConnectOptions, Connection, ConnectionLimits, HyperDht, HyperDhtConfig, ListenOptions,
};
use tokio::io::AsyncWriteExt;

async fn node(host: Ipv4Addr, bootstrap: &[SocketAddrV4], limits: ConnectionLimits) -> HyperDht {
    let mut cfg = HyperDhtConfig::new(bootstrap.to_vec());
    cfg.dht.host = host;
    cfg.dht.ephemeral = Some(true);
    cfg.connection_limits = limits;
    let n = HyperDht::bind(cfg).await.unwrap();
    n.dht().bootstrapped().await.unwrap();
    n
}

async fn network() -> (Vec<HyperDht>, SocketAddrV4) {
    let boot = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .unwrap();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, boot.dht().local_addr().port());
    let mut nodes = vec![boot];
    for _ in 0..3 {
        let mut cfg = HyperDhtConfig::new(vec![addr]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        let n = HyperDht::bind(cfg).await.unwrap();
        n.dht().persistent().await.unwrap();
        nodes.push(n);
    }
    (nodes, addr)
}

const MAX_OPEN: usize = 10;
const MAX_OPEN_PER_IP: usize = 4;
const MAX_FRAME: usize = 2 << 20;
const STEP: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_limits_and_frame_budget_hold() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("timed out");
}

async fn run() {
    let (_nodes, boot) = network().await;
    let limits = ConnectionLimits {
        max_pending: 64,
        max_pending_per_ip: 8,
        max_connections: MAX_OPEN,
        max_connections_per_ip: MAX_OPEN_PER_IP,
        max_frame_bytes: MAX_FRAME,
        frame_memory_bytes: 4 * STEP,
    };
    let server_node = node(Ipv4Addr::LOCALHOST, &[boot], limits).await;
    let skp = KeyPair::from_seed(&[1; 32]);
    let mut server = server_node
        .listen(skp.clone(), ListenOptions::default())
        .await
        .unwrap();
    // The server reads every connection it gets, as protomux would.
    tokio::spawn(async move {
        while let Some(mut conn) = server.accept().await {
            tokio::spawn(async move { while let Ok(Some(_)) = conn.recv().await {} });
        }
    });

    // 4 source IPs x 6 attempts: at most 4 per IP and 10 in total may open.
    let mut clients = Vec::new();
    for i in 2..=5u8 {
        clients.push(
            node(
                Ipv4Addr::new(127, 0, 0, i),
                &[boot],
                ConnectionLimits::default(),
            )
            .await,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        for k in 0..6u8 {
            let client = client.clone();
            let kp = KeyPair::from_seed(&[10 + c as u8 * 10 + k; 32]);
            let target = skp.public_key;
            tasks.spawn(async move {
                let mut opts = ConnectOptions::new(kp);
                opts.timeout = Duration::from_secs(8);
                client.connect(target, opts).await.ok()
            });
            // Spread the attempts so per-IP counting is not all decided by one race.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let mut conns: Vec<Connection> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(c) = r.unwrap() {
            conns.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Connections the server refused after opening were destroyed: keep the live ones.
    conns.retain(|c| !c.handle().is_closed());
    let s = server_node.connection_stats();
    eprintln!(
        "after 24 attempts: {s:?}, {} live on the client side",
        conns.len()
    );
    assert!(s.open as usize <= MAX_OPEN, "{s:?}");
    assert_eq!(s.open, s.connections_accepted_total, "{s:?}");
    assert!(s.connections_accepted_total >= 8, "{s:?}");
    assert!(
        s.connections_refused_total >= 24 - s.connections_accepted_total,
        "every attempt that did not open was refused: {s:?}"
    );
    assert!(s.connections_refused_per_ip > 0 || s.connections_refused_open > 0);

    // Bare length prefixes: one above max_frame (refused, connection closed), then
    // in-budget ones that never send a body: each costs one step of the frame budget,
    // and the budget (4 steps) closes the connections beyond it.
    let mut writers = Vec::new();
    for conn in conns {
        let (_r, w, h) = conn.split();
        writers.push((w, h));
    }
    assert!(writers.len() >= 6, "{} live connections", writers.len());
    let (w, _) = &mut writers[0];
    w.transport_mut()
        .write_all(&[0xff, 0xff, 0xff])
        .await
        .unwrap();
    w.transport_mut().flush().await.unwrap();
    let body = (MAX_FRAME as u32).to_le_bytes();
    for (w, _) in writers[1..].iter_mut() {
        // Our header frame was sent by the handshake; this prefix starts a message.
        w.transport_mut().write_all(&body[..3]).await.unwrap();
        w.transport_mut().flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = server_node.connection_stats();
    eprintln!("after bare prefixes: {s:?}");
    assert_eq!(s.frames_refused_oversize, 1, "{s:?}");
    assert!(s.frame_bytes_in_use <= (4 * STEP) as u64, "{s:?}");
    assert_eq!(s.frame_bytes_in_use, (4 * STEP) as u64, "{s:?}");
    assert_eq!(
        s.frames_refused_budget,
        (writers.len() - 1 - 4) as u64,
        "{s:?}"
    );
    drop(writers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = server_node.connection_stats();
    assert_eq!(s.frame_bytes_in_use, 0, "{s:?}");
}
