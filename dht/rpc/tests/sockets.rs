//! Real UDP sockets on 127.0.0.1: ten tokio nodes (the first a bootstrapper) find each
//! other and answer a query; an adaptive node passes the quick firewall probe; raw
//! datagrams reach the foreign handler.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use intercom_dht_rpc::{node_id, Config, Dht, QuerySpec, ReplyOptions, RequestSpec};

const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

async fn timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out")
}

async fn testnet(size: usize) -> (Vec<Dht>, SocketAddrV4) {
    let first = Dht::bind(Config {
        host: HOST,
        ..Config::bootstrapper(0, HOST)
    })
    .await
    .expect("bind bootstrapper");
    let boot = first.local_addr();
    timeout(first.bootstrapped()).await.expect("bootstrapped");
    assert_eq!(first.local_addr(), boot);
    assert_eq!(first.id(), Some(node_id(&boot)));
    let mut nodes = vec![first];
    while nodes.len() < size {
        let n = Dht::bind(Config {
            host: HOST,
            bootstrap: vec![boot],
            ephemeral: Some(false),
            firewalled: false,
            ..Config::default()
        })
        .await
        .expect("bind node");
        timeout(n.bootstrapped()).await.expect("bootstrapped");
        nodes.push(n);
    }
    (nodes, boot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_find_each_other_and_answer_a_query() {
    let (nodes, boot) = testnet(10).await;
    for n in &nodes {
        let id = timeout(n.persistent()).await.expect("persistent");
        assert_eq!(id, node_id(&n.local_addr()));
        assert!(!n.is_firewalled() && !n.is_ephemeral());
    }

    // Every node answers command 42 with its port.
    for n in &nodes {
        let mut rx = n.incoming_requests(64).await.expect("request channel");
        let port = n.server_port();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if req.request.command == 42 {
                    let _ = req
                        .reply(Some(port.to_le_bytes().to_vec()), ReplyOptions::default())
                        .await;
                }
            }
        });
    }

    // Commands are handled in order: once this answers, every handler is registered.
    for n in &nodes {
        assert!(!n.nodes(None).await.expect("nodes").is_empty());
    }

    let querier = &nodes[4];
    let target = [0x42; 32];
    let mut q = querier
        .query(QuerySpec {
            target,
            command: 42,
            value: Some(b"who".to_vec()),
            ..QuerySpec::default()
        })
        .await
        .expect("query");
    let mut streamed = 0;
    while let Some(r) = timeout(q.next()).await {
        assert_eq!(r.error, 0);
        streamed += 1;
    }
    let replies = timeout(q.finish()).await.expect("query result");
    assert_eq!(replies.len(), 9, "all other nodes answered");
    assert!(streamed >= 9);
    let mut ports: Vec<u16> = replies
        .iter()
        .map(|r| {
            let v = r.value.clone().unwrap_or_default();
            u16::from_le_bytes([v[0], v[1]])
        })
        .collect();
    ports.sort_unstable();
    let mut want: Vec<u16> = nodes
        .iter()
        .filter(|n| n.local_addr() != querier.local_addr())
        .map(|n| n.server_port())
        .collect();
    want.sort_unstable();
    assert_eq!(ports, want);
    for r in &replies {
        assert_eq!(
            u16::from_le_bytes([r.value.as_ref().unwrap()[0], r.value.as_ref().unwrap()[1]]),
            r.from.addr.port()
        );
        assert!(r.token.is_some());
    }

    // An adaptive node with default options. Like JS dht-rpc, it only runs the NAT test
    // when the quick PING_NAT answer arrives before its bootstrap query ends; on a loaded
    // machine that race can be lost (the node then stays firewalled until its later
    // network check), so a fresh node gets up to three tries.
    let mut plain = None;
    for attempt in 1..=3 {
        let node = Dht::bind(Config {
            host: HOST,
            bootstrap: vec![boot],
            ..Config::default()
        })
        .await
        .expect("bind adaptive");
        timeout(node.bootstrapped()).await.expect("bootstrapped");
        if !node.is_firewalled() {
            plain = Some(node);
            break;
        }
        eprintln!("attempt {attempt}: the quick firewall probe lost the race with bootstrap");
        node.destroy().await;
    }
    let plain = plain.expect("loopback is reachable: the quick firewall probe passes");
    assert!(
        plain.is_ephemeral(),
        "but the node stays ephemeral until stable"
    );
    let pong = timeout(plain.ping(boot)).await.expect("ping");
    assert_eq!(pong.from.id, Some(node_id(&boot)));
    assert_eq!(
        pong.to,
        plain.local_addr(),
        "unfirewalled: requests leave from the server socket"
    );
    // Node 1 has a handler that ignores command 7: the requester times out.
    let ignored = timeout(plain.request(
        nodes[1].local_addr(),
        RequestSpec {
            command: 7,
            ..RequestSpec::default()
        },
        intercom_dht_rpc::RequestOptions {
            retries: 0,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(
        ignored,
        Err(intercom_dht_rpc::DhtError::Request(
            intercom_dht_rpc::RequestError::Timeout
        ))
    ));

    for n in nodes.iter().chain([&plain]) {
        n.destroy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_datagrams_and_raw_sends() {
    let a = Dht::bind(Config {
        host: HOST,
        ..Config::default()
    })
    .await
    .expect("bind a");
    let b = Dht::bind(Config {
        host: HOST,
        ..Config::default()
    })
    .await
    .expect("bind b");
    let mut rx = b.set_foreign_handler(8).await.expect("handler");
    a.send_raw(
        intercom_dht_rpc::SocketKind::Server,
        b.local_addr(),
        vec![0xff, 1, 2, 3],
    )
    .await
    .expect("send");
    let got = timeout(rx.recv()).await.expect("datagram");
    assert_eq!(got.bytes, vec![0xff, 1, 2, 3]);
    assert_eq!(got.from, a.local_addr());
    assert_eq!(got.socket, intercom_dht_rpc::SocketKind::Server);

    // No request handler: user commands are refused with UNKNOWN_COMMAND.
    let res = timeout(a.request(
        b.local_addr(),
        RequestSpec {
            command: 99,
            ..RequestSpec::default()
        },
        Default::default(),
    ))
    .await
    .expect("answered");
    assert_eq!(res.error, intercom_dht_rpc::errors::UNKNOWN_COMMAND);

    b.destroy().await;
    let err = a
        .request(
            b.local_addr(),
            RequestSpec {
                command: 1,
                internal: true,
                ..RequestSpec::default()
            },
            intercom_dht_rpc::RequestOptions {
                retries: 0,
                ..Default::default()
            },
        )
        .await;
    assert!(err.is_err(), "destroyed node does not answer");
    a.destroy().await;
    assert!(a.ping(b.local_addr()).await.is_err());
}
