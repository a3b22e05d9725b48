//! Live HyperDHT interop on 127.0.0.1 against the pinned JS `hyperdht` (issue 4):
//!
//! 1. a Rust node joins a 32-node JS testnet: announces, lookups and mutable / immutable
//!    records cross between the languages, and JS stores records on the Rust node;
//! 2. a network of one `intercom dht-node` bootstrap node plus 20 Rust nodes serves a
//!    JS client (and the `intercom dht` CLI) for the same operations, and relays a JS
//!    client's connection handshake to a JS server;
//! 3. a mixed network of 16 JS and 16 Rust nodes answers 100 random announce/lookup
//!    pairs from both languages without a miss;
//! 4. a Rust node flooded with garbage and spoofed-id requests keeps answering.
//!
//! The tests take a lock so they run one at a time (each drives dozens of nodes on a
//! small machine). Every wait is bounded; child processes die with their handles.

mod dht_support;

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use dht_support::{
    free_port, local, node_list, run_cli, rust_lookup, rust_node, vm_rss_kib, CliNode, JsDht,
};
use intercom_crypto::{random_array, KeyPair};
use intercom_hyperdht::crypto::hash;
use intercom_hyperdht::{AnnounceOptions, HyperDht, MutableGetOptions, MutablePutOptions};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pk_hex(seed: &[u8; 32]) -> String {
    hex::encode(KeyPair::from_seed(seed).public_key)
}

/// Looks `topic` up until `pk` shows up; the DHT is eventually consistent, so a few
/// bounded retries are allowed. Returns the number of attempts it took.
async fn wait_found<F, Fut>(what: &str, pk: &str, mut lookup: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = HashSet<String>>,
{
    for attempt in 1..=5 {
        if lookup().await.contains(pk) {
            return attempt;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{what}: {pk} not found after 5 lookups");
}

async fn rust_announce(node: &HyperDht, topic: &[u8; 32], seed: &[u8; 32]) -> String {
    let kp = KeyPair::from_seed(seed);
    let res = node
        .announce(*topic, &kp, &[], AnnounceOptions::default())
        .await
        .expect("rust announce");
    assert!(res.committed > 0);
    hex::encode(kp.public_key)
}

/// Mutable and immutable records put from one language are read by the other.
async fn cross_records(js: &JsDht, rust: &HyperDht, label: &str) {
    // JS puts, Rust gets.
    let js_seed: [u8; 32] = random_array();
    let js_value = format!("js mutable {label}");
    let put = js
        .call(json!({ "op": "mutablePut", "seed": hex::encode(js_seed),
                      "value": hex::encode(&js_value), "seq": 7 }))
        .await;
    assert_eq!(put["publicKey"], pk_hex(&js_seed));
    let pk = KeyPair::from_seed(&js_seed).public_key;
    let got = rust
        .mutable_get(&pk, MutableGetOptions::default())
        .await
        .expect("rust mutable get")
        .expect("JS mutable value found by Rust");
    assert_eq!((got.seq, got.value), (7, js_value.into_bytes()));

    let js_imm = format!("js immutable {label} {}", hex::encode(random_array::<8>()));
    let put = js
        .call(json!({ "op": "immutablePut", "value": hex::encode(&js_imm) }))
        .await;
    let h = hash(js_imm.as_bytes());
    assert_eq!(put["hash"], hex::encode(h));
    let got = rust
        .immutable_get(h)
        .await
        .expect("rust immutable get")
        .expect("JS immutable value found by Rust");
    assert_eq!(got.value, js_imm.as_bytes());

    // Rust puts, JS gets.
    let rust_kp = KeyPair::from_seed(&random_array());
    let rust_value = format!("rust mutable {label}");
    rust.mutable_put(
        &rust_kp,
        rust_value.as_bytes(),
        MutablePutOptions { seq: 3 },
    )
    .await
    .expect("rust mutable put");
    let got = js
        .call(json!({ "op": "mutableGet", "publicKey": hex::encode(rust_kp.public_key) }))
        .await;
    assert_eq!(got["seq"], 3, "{got}");
    assert_eq!(got["value"], hex::encode(&rust_value));
    // A newer seq replaces it for both.
    rust.mutable_put(&rust_kp, b"newer", MutablePutOptions { seq: 4 })
        .await
        .expect("rust mutable put seq 4");
    let got = js
        .call(json!({ "op": "mutableGet", "publicKey": hex::encode(rust_kp.public_key), "seq": 4 }))
        .await;
    assert_eq!(got["value"], hex::encode("newer"), "{got}");

    let rust_imm = format!(
        "rust immutable {label} {}",
        hex::encode(random_array::<8>())
    );
    let put = rust
        .immutable_put(rust_imm.as_bytes())
        .await
        .expect("rust immutable put");
    let got = js
        .call(json!({ "op": "immutableGet", "hash": hex::encode(put.hash) }))
        .await;
    assert_eq!(got["value"], hex::encode(&rust_imm), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_node_joins_a_js_testnet() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let js = JsDht::spawn(&["testnet", "32"]).await;
    let bootstrap = js.bootstrap();
    let rust = rust_node(&bootstrap, true).await;
    eprintln!(
        "testnet of 32 JS nodes + persistent Rust node after {:?}",
        started.elapsed()
    );

    // A JS announce is found by a Rust lookup.
    let topic: [u8; 32] = random_array();
    let seed: [u8; 32] = random_array();
    let pk = js.announce(&topic, &seed).await;
    let tries = wait_found("rust lookup of a JS announce", &pk, || {
        rust_lookup(&rust, &topic)
    })
    .await;
    eprintln!("JS announce found by the Rust lookup after {tries} lookup(s)");

    // A Rust announce is found by a JS lookup.
    let topic: [u8; 32] = random_array();
    let seed: [u8; 32] = random_array();
    let pk = rust_announce(&rust, &topic, &seed).await;
    wait_found("JS lookup of a Rust announce", &pk, || js.lookup(&topic)).await;

    cross_records(&js, &rust, "js testnet").await;

    // JS nodes route through the Rust node and store records on it: it is one of the
    // 20 closest of 33 nodes for about 60% of topics.
    let mut stored = 0;
    for round in 0..3 {
        for _ in 0..10 {
            js.announce(&random_array(), &random_array()).await;
        }
        stored = rust.store_sizes().records;
        if stored > 0 {
            break;
        }
        eprintln!("round {round}: no record on the Rust node yet");
    }
    assert!(stored > 0, "no JS announce was stored on the Rust node");
    eprintln!(
        "records on the Rust node: {:?}; total {:?}",
        rust.store_sizes(),
        started.elapsed()
    );
    rust.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_network_serves_js_clients() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let boot = CliNode::spawn(&["--host", "127.0.0.1", "--port", "0"]).await;
    assert_eq!(boot.ready["persistent"], true, "{}", boot.ready);
    assert_ne!(boot.addr().port(), 0, "{}", boot.ready);
    let bootstrap = vec![boot.addr()];
    let mut nodes = Vec::new();
    for _ in 0..20 {
        nodes.push(rust_node(&bootstrap, true).await);
    }
    let rust_client = rust_node(&bootstrap, false).await;
    let js = JsDht::spawn(&["client", &node_list(&bootstrap)]).await;
    eprintln!("21 Rust nodes + clients after {:?}", started.elapsed());

    // JS announce -> JS, Rust and CLI lookups.
    let topic: [u8; 32] = random_array();
    let seed: [u8; 32] = random_array();
    let pk = js.announce(&topic, &seed).await;
    wait_found("JS lookup of a JS announce", &pk, || js.lookup(&topic)).await;
    wait_found("Rust lookup of a JS announce", &pk, || {
        rust_lookup(&rust_client, &topic)
    })
    .await;
    let boot_arg = node_list(&bootstrap);
    let topic_hex = hex::encode(topic);
    let (ok, lines, err) = run_cli(&[
        "lookup",
        "--topic",
        &topic_hex,
        "--dht-bootstrap",
        &boot_arg,
        "--timeout",
        "20",
    ])
    .await;
    assert!(ok, "intercom dht lookup failed: {err}");
    let done = lines.last().expect("done line");
    assert_eq!(done["type"], "done");
    assert!(
        done["peers"].as_array().unwrap().contains(&json!(pk)),
        "{done}"
    );

    // Rust announce -> JS lookup.
    let topic: [u8; 32] = random_array();
    let pk = rust_announce(&rust_client, &topic, &random_array()).await;
    wait_found("JS lookup of a Rust announce", &pk, || js.lookup(&topic)).await;

    // JS records read back by JS (served only by Rust nodes), and across languages.
    let seed: [u8; 32] = random_array();
    js.call(json!({ "op": "mutablePut", "seed": hex::encode(seed), "value": "0102", "seq": 1 }))
        .await;
    let got = js
        .call(json!({ "op": "mutableGet", "publicKey": pk_hex(&seed) }))
        .await;
    assert_eq!(
        (got["seq"].as_u64(), got["value"].as_str()),
        (Some(1), Some("0102"))
    );
    let put = js
        .call(json!({ "op": "immutablePut", "value": "cafe" }))
        .await;
    let got = js
        .call(json!({ "op": "immutableGet", "hash": put["hash"] }))
        .await;
    assert_eq!(got["value"], "cafe");
    cross_records(&js, &rust_client, "rust network").await;

    // The CLI's puts are readable by JS.
    let (ok, lines, err) = run_cli(&[
        "immutable-put",
        "--value",
        "from the cli",
        "--dht-bootstrap",
        &boot_arg,
    ])
    .await;
    assert!(ok, "{err}");
    let got = js
        .call(json!({ "op": "immutableGet", "hash": lines[0]["hash"] }))
        .await;
    assert_eq!(got["value"], hex::encode("from the cli"));
    let seed_hex = hex::encode(random_array::<32>());
    let (ok, lines, err) = run_cli(&[
        "mutable-put",
        "--seed",
        &seed_hex,
        "--value",
        "cli value",
        "--seq",
        "5",
        "--dht-bootstrap",
        &boot_arg,
    ])
    .await;
    assert!(ok, "{err}");
    let got = js
        .call(json!({ "op": "mutableGet", "publicKey": lines[0]["publicKey"] }))
        .await;
    assert_eq!(got["seq"], 5);
    assert_eq!(got["value"], hex::encode("cli value"));
    let (ok, lines, _) = run_cli(&[
        "mutable-get",
        "--public-key",
        lines[0]["publicKey"].as_str().unwrap(),
        "--dht-bootstrap",
        &boot_arg,
    ])
    .await;
    assert!(ok);
    assert_eq!(lines[0]["value"], "cli value");

    // Clear failures: bad input, nothing stored, nobody to talk to.
    let (ok, _, err) = run_cli(&["lookup", "--topic", "xyz", "--dht-bootstrap", &boot_arg]).await;
    assert!(!ok && err.contains("not valid hex"), "{err}");
    let (ok, _, err) = run_cli(&[
        "immutable-get",
        "--hash",
        &hex::encode([7u8; 32]),
        "--dht-bootstrap",
        &boot_arg,
    ])
    .await;
    assert!(!ok && err.contains("not found"), "{err}");
    let dead = local(free_port()).to_string();
    let (ok, _, err) = run_cli(&[
        "lookup",
        "--topic",
        &topic_hex,
        "--dht-bootstrap",
        &dead,
        "--timeout",
        "20",
    ])
    .await;
    assert!(!ok && err.contains("could not reach any DHT node"), "{err}");

    let stored: usize = nodes.iter().map(|n| n.store_sizes().records).sum();
    assert!(stored > 0, "the Rust nodes stored the announcements");

    // A JS server announces itself on the Rust nodes; they relay a JS client's handshake
    // (and holepunch) to it, and a Rust findPeer sees its record.
    let seed: [u8; 32] = random_array();
    let server = js
        .call(json!({ "op": "listen", "seed": hex::encode(seed) }))
        .await;
    let forwards: usize = nodes.iter().map(|n| n.store_sizes().forwards).sum();
    assert!(forwards > 0, "the server's forward is on the Rust nodes");
    let pk = KeyPair::from_seed(&seed).public_key;
    let mut q = rust_client.find_peer(&pk).await.expect("find_peer");
    let found = q.next().await.expect("the server's record");
    assert_eq!(found.peer.public_key, pk);
    drop(q);
    let conn = js
        .call(json!({ "op": "connect", "publicKey": server["publicKey"],
                      "message": "hello through rust" }))
        .await;
    assert_eq!(conn["echoed"], "hello through rust", "{conn}");
    eprintln!("total {:?}", started.elapsed());
    for n in nodes.iter().chain([&rust_client]) {
        n.destroy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_network_answers_random_announce_lookup_pairs() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let boot = HyperDht::bootstrapper(0, std::net::Ipv4Addr::LOCALHOST)
        .await
        .expect("rust bootstrapper");
    let port = boot.dht().local_addr().port();
    boot.dht()
        .persistent()
        .await
        .expect("bootstrapper persistent");
    let bootstrap: Vec<SocketAddrV4> = vec![local(port)];
    // 16 JS nodes (a testnet joined to the Rust bootstrap node) plus its JS client.
    let js = JsDht::spawn(&["testnet", "16", &node_list(&bootstrap)]).await;
    // 16 Rust nodes: the bootstrap node and 15 more.
    let mut rust_nodes = vec![boot];
    for _ in 0..15 {
        rust_nodes.push(rust_node(&bootstrap, true).await);
    }
    let rust_client = rust_node(&bootstrap, false).await;
    let table = rust_nodes[0].dht().nodes(None).await.unwrap();
    eprintln!(
        "16 JS + 16 Rust nodes after {:?}; the bootstrap node knows {} nodes",
        started.elapsed(),
        table.len()
    );
    assert!(table.len() >= 20, "the bootstrap node knows both languages");

    const PAIRS: usize = 100;
    const BATCH: usize = 10;
    let mut misses = Vec::new();
    let mut by_kind = [[0usize; 2]; 2];
    for batch in 0..PAIRS / BATCH {
        let mut tasks = Vec::new();
        for i in 0..BATCH {
            let topic: [u8; 32] = random_array();
            let seed: [u8; 32] = random_array();
            let [a, b] = random_array::<2>();
            let (js_announces, js_looks) = (a & 1 == 1, b & 1 == 1);
            by_kind[usize::from(js_announces)][usize::from(js_looks)] += 1;
            let (js, rust) = (&js, &rust_client);
            tasks.push(async move {
                let pk = if js_announces {
                    js.announce(&topic, &seed).await
                } else {
                    rust_announce(rust, &topic, &seed).await
                };
                let found = if js_looks {
                    js.lookup(&topic).await
                } else {
                    rust_lookup(rust, &topic).await
                };
                (
                    batch * BATCH + i,
                    js_announces,
                    js_looks,
                    found.contains(&pk),
                )
            });
        }
        for (n, ja, jl, ok) in join_all(tasks).await {
            if !ok {
                misses.push((n, ja, jl));
            }
        }
    }
    eprintln!(
        "pairs by (announcer, looker): rust/rust {} rust/js {} js/rust {} js/js {}; {:?}",
        by_kind[0][0],
        by_kind[0][1],
        by_kind[1][0],
        by_kind[1][1],
        started.elapsed()
    );
    assert!(
        misses.is_empty(),
        "lookups missed (pair, js announced, js looked): {misses:?}"
    );
    for n in rust_nodes.iter().chain([&rust_client]) {
        n.destroy().await;
    }
}

/// Polls a set of futures concurrently (no `futures` crate in the tree).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}

/// A dht-rpc request datagram (see the wire diagram of intercom-dht-rpc).
fn request_datagram(
    tid: u16,
    to: SocketAddrV4,
    id: Option<[u8; 32]>,
    token: Option<[u8; 32]>,
    command: u8,
    target: Option<[u8; 32]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let flags = u8::from(id.is_some())
        | (u8::from(token.is_some()) << 1)
        | (u8::from(target.is_some()) << 3)
        | (u8::from(value.is_some()) << 4);
    let mut b = vec![0x03, flags];
    b.extend_from_slice(&tid.to_le_bytes());
    b.extend_from_slice(&to.ip().octets());
    b.extend_from_slice(&to.port().to_le_bytes());
    for x in [id, token].into_iter().flatten() {
        b.extend_from_slice(&x);
    }
    b.push(command);
    if let Some(t) = target {
        b.extend_from_slice(&t);
    }
    if let Some(v) = value {
        assert!(v.len() < 0xfd);
        b.push(v.len() as u8);
        b.extend_from_slice(v);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_survives_garbage_and_spoofed_id_floods() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut target = CliNode::spawn(&["--host", "127.0.0.1", "--port", "0"]).await;
    let addr = target.addr();
    let mut helpers = Vec::new();
    for _ in 0..4 {
        helpers.push(rust_node(&[addr], true).await);
    }
    let rss_before = vm_rss_kib(target.pid()).unwrap_or(0);

    // 20 000 datagrams from 16 sockets: 10 000 garbage (half of them with a dht-rpc first
    // byte), 10 000 well-formed requests with random (spoofed) ids and tokens: PING,
    // FIND_NODE, DOWN_HINT and every HyperDHT command with junk values.
    const TOTAL: usize = 20_000;
    let mut socks = Vec::new();
    for _ in 0..16 {
        socks.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    for i in 0..TOTAL {
        let sock = &socks[i % socks.len()];
        let r: [u8; 64] = random_array();
        let bytes = if i % 2 == 0 {
            let len = usize::from(r[0]) % 64 + usize::from(r[1] & 1) * 600;
            let mut g: Vec<u8> = (0..len).map(|j| r[j % 64] ^ (j as u8)).collect();
            if i % 4 == 0 && !g.is_empty() {
                g[0] = if r[2] & 1 == 0 { 0x03 } else { 0x13 };
            }
            g
        } else {
            let command = r[3] % 12;
            let internal_ping = i % 10 == 1;
            let id: [u8; 32] = r[..32].try_into().unwrap();
            let token: Option<[u8; 32]> = (r[4] & 1 == 0).then(|| r[32..].try_into().unwrap());
            let value: Vec<u8> = r[40..40 + usize::from(r[5] % 24)].to_vec();
            let mut d = request_datagram(
                i as u16,
                addr,
                Some(id),
                token,
                if internal_ping { 0 } else { command },
                Some(r[16..48].try_into().unwrap()),
                Some(&value),
            );
            if internal_ping {
                d[1] |= 4; // internal flag
            }
            d
        };
        let _ = sock.send_to(&bytes, addr).await;
        if i % 1000 == 999 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Spoofed-but-valid ids: 64 sockets PING with their real id (they enter the routing
    // table) and never answer anything again.
    let mut silent = Vec::new();
    for tid in 0..64u16 {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let mut d = request_datagram(
            tid,
            addr,
            Some(intercom_dht_rpc::node_id(&me)),
            None,
            0,
            None,
            None,
        );
        d[1] |= 4;
        s.send_to(&d, addr).await.unwrap();
        silent.push(s);
    }
    eprintln!(
        "flood of {} datagrams sent after {:?}",
        TOTAL + 64,
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(target.is_running(), "the node died under the flood");
    // Still answers PING ...
    let pinger = rust_node(&[addr], false).await;
    let pong = pinger
        .dht()
        .ping(addr)
        .await
        .expect("PING answered after the flood");
    assert_eq!(pong.from.id, Some(intercom_dht_rpc::node_id(&addr)));
    // ... and serves announce and lookup (the silent nodes it learned make these walks
    // wait out their timeouts, as they would in JS).
    let topic: [u8; 32] = random_array();
    let pk = rust_announce(&pinger, &topic, &random_array()).await;
    let lookup_started = Instant::now();
    let mut q = helpers[0].lookup(topic).await.unwrap();
    let (mut from_target, mut found) = (false, false);
    while let Some(r) = q.next().await {
        from_target |= r.from.addr == addr;
        found |= r.peers.iter().any(|p| hex::encode(p.public_key) == pk);
    }
    assert!(found, "the announce made after the flood is found");
    assert!(from_target, "the flooded node answered the lookup");
    let rss_after = vm_rss_kib(target.pid()).unwrap_or(0);
    eprintln!(
        "after the flood: lookup {:?}, VmRSS {} -> {} KiB, total {:?}",
        lookup_started.elapsed(),
        rss_before,
        rss_after,
        started.elapsed()
    );
    assert!(
        rss_after < 256 * 1024,
        "memory stays bounded: {rss_after} KiB"
    );
    assert!(target.is_running());
    for n in helpers.iter().chain([&pinger]) {
        n.destroy().await;
    }
}
