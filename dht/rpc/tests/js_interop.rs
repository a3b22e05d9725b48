//! A quick live check against the pinned JS `dht-rpc` (needs node and `npm ci --prefix
//! tests`, which the test command runs). A JS testnet on 127.0.0.1 bootstraps our node,
//! we query it, and the JS nodes must have taken us into their routing tables and reach
//! us with requests of their own.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use intercom_dht_rpc::{node_id, Config, Dht, QuerySpec, ReplyOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SCRIPT: &str = r#"
const DHT = require('dht-rpc')
const readline = require('readline')
const port = Number(process.argv[process.argv.length - 1])
const join = process.argv[process.argv.length - 2] === 'join'
;(async () => {
  const nodes = []
  if (!join) {
    nodes.push(DHT.bootstrapper(port, '127.0.0.1', { host: '127.0.0.1' }))
    await nodes[0].fullyBootstrapped()
  }
  for (let i = 0; i < 4; i++) {
    const n = new DHT({ ephemeral: false, firewalled: false, bootstrap: [{ host: '127.0.0.1', port }], host: '127.0.0.1' })
    await n.fullyBootstrapped()
    nodes.push(n)
  }
  let commits = 0
  for (const n of nodes) n.on('request', (req) => {
    if (req.command === 42) return req.reply(Buffer.from('js'))
    if (req.command === 43) { if (req.token) commits++; return req.reply(null) }
    return false
  })
  console.log(JSON.stringify({ ready: true, persistent: nodes.map(n => !!n.id) }))
  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    const rustPort = Number(line)
    const rid = require('dht-rpc/lib/peer').id('127.0.0.1', rustPort)
    for (const n of nodes) { await n.findNode(rid).finished() }
    const known = nodes.map(n => n.toArray().some(x => x.port === rustPort))
    let answer = null
    try {
      const res = await nodes[1].request({ command: 42, target: rid, value: Buffer.from('hi') }, { host: '127.0.0.1', port: rustPort })
      answer = res.value && res.value.toString()
    } catch (e) { answer = 'error ' + e.message }
    const pong = await nodes[2].ping({ host: '127.0.0.1', port: rustPort }).then(r => !!r.from.id, () => false)
    const q = nodes[3].query({ target: rid, command: 42, value: null })
    const froms = []
    for await (const d of q) froms.push(d.from.port)
    console.log(JSON.stringify({ known, answer, pong, queryHitRust: froms.includes(rustPort), commits }))
    for (const n of nodes) await n.destroy()
    process.exit(0)
  }
})()
"#;

fn spawn_js(mode: &str, port: u16) -> tokio::process::Child {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests");
    tokio::process::Command::new("node")
        .arg("-e")
        .arg(SCRIPT)
        .arg(mode)
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_testnet_accepts_our_node() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = spawn_js("testnet", port);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.contains("\"ready\":true"), "{ready}");

    let boot = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let dht = Dht::bind(Config {
        host: Ipv4Addr::LOCALHOST,
        bootstrap: vec![boot],
        ephemeral: Some(false),
        firewalled: false,
        ..Config::default()
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), dht.bootstrapped())
        .await
        .unwrap()
        .unwrap();
    let id = tokio::time::timeout(Duration::from_secs(30), dht.persistent())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, node_id(&dht.local_addr()));

    let mut rx = dht.incoming_requests(16).await.unwrap();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let _ = req
                .reply(Some(b"rs".to_vec()), ReplyOptions::default())
                .await;
        }
    });

    let q = dht
        .query(QuerySpec {
            target: [1; 32],
            command: 42,
            ..QuerySpec::default()
        })
        .await
        .unwrap();
    let replies = q.finish().await.unwrap();
    assert_eq!(replies.len(), 5, "all JS nodes answered");
    assert!(replies
        .iter()
        .all(|r| r.value.as_deref() == Some(&b"js"[..]) && r.from.id.is_some()));

    let q = dht
        .query(QuerySpec {
            target: [2; 32],
            command: 43,
            commit: true,
            ..QuerySpec::default()
        })
        .await
        .unwrap();
    assert_eq!(q.finish().await.unwrap().len(), 5);

    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", dht.server_port()).as_bytes())
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!("js says: {result}");
    assert!(!result.contains("false"), "{result}");
    assert!(result.contains("\"answer\":\"rs\""), "{result}");
    assert!(result.contains("\"commits\":5"), "{result}");
    dht.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_nodes_bootstrap_from_our_bootstrapper() {
    let boot = Dht::bind(Config {
        host: Ipv4Addr::LOCALHOST,
        ..Config::bootstrapper(0, Ipv4Addr::LOCALHOST)
    })
    .await
    .unwrap();
    let port = boot.local_addr().port();
    boot.bootstrapped().await.unwrap();
    let mut child = spawn_js("join", port);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!("js says: {ready}");
    assert_eq!(
        ready,
        r#"{"ready":true,"persistent":[true,true,true,true]}"#
    );
    let known = boot.nodes(None).await.unwrap();
    assert_eq!(known.len(), 4, "the JS nodes are in our table");
    let q = boot
        .query(QuerySpec {
            target: [3; 32],
            command: 42,
            ..QuerySpec::default()
        })
        .await
        .unwrap();
    assert_eq!(q.finish().await.unwrap().len(), 4);
    boot.destroy().await;
}
