//! Hyperswarm interop on 127.0.0.1 (issue 5, done-when 1): on a 32-node JS testnet a JS
//! `hyperswarm` server and a Rust swarm client meet on a topic and exchange 50 MB in
//! both directions with matching SHA-256, then the same with the roles swapped; two
//! Rust swarms do the same on a Rust-only network; and `intercom swarm pipe` sends a
//! 50 MB file through a plain JS hyperswarm echo peer and gets it back intact.
//!
//! The tests take a lock so they run one at a time (large transfers on a small
//! machine). Every wait is bounded; child processes die with their handles.
//! `SWARM_TEST_MB` overrides the payload size (default 50).

mod dht_support;
mod swarm_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use dht_support::JsDht;
use intercom_swarm::JoinOptions;
use sha2::{Digest, Sha256};
use swarm_support::{exchange, node_list, rust_network, rust_swarm, JsSwarm, Prng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The whole of one test.
const LIMIT: Duration = Duration::from_secs(300);

fn payload() -> u64 {
    std::env::var("SWARM_TEST_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        * 1_000_000
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}

fn check(js: &serde_json::Value, rust: &swarm_support::Exchanged, bytes: u64) {
    assert_eq!(
        js["received"].as_u64(),
        Some(bytes),
        "JS received all: {js}"
    );
    assert_eq!(rust.received, bytes, "Rust received all");
    assert_eq!(
        js["sentSha256"].as_str(),
        Some(rust.received_sha256.as_str())
    );
    assert_eq!(
        js["receivedSha256"].as_str(),
        Some(rust.sent_sha256.as_str())
    );
}

async fn js_rust(rust_is_server: bool) {
    let bytes = payload();
    let testnet = JsDht::spawn(&["testnet", "32"]).await;
    let boot = testnet.bootstrap();
    let topic: [u8; 32] = intercom_crypto::random_array();
    let (js_mode, rust_opts) = if rust_is_server {
        (
            "client",
            JoinOptions {
                server: true,
                client: false,
            },
        )
    } else {
        (
            "server",
            JoinOptions {
                server: false,
                client: true,
            },
        )
    };
    let mut rust = rust_swarm(&boot, intercom_crypto::random_array()).await;
    if rust_is_server {
        rust.join(topic, rust_opts).await.unwrap();
        rust.flush().await.unwrap();
    }
    let mut js = JsSwarm::spawn(
        &boot,
        &topic,
        js_mode,
        &["exchange", &bytes.to_string(), "0a0b"],
        &[],
    )
    .await;
    if !rust_is_server {
        rust.join(topic, rust_opts).await.unwrap();
    }
    let conn = bounded("rust connection", rust.accept())
        .await
        .expect("connection");
    assert_eq!(conn.public_key, js.public_key(), "connected to the JS peer");
    assert_eq!(conn.client, !rust_is_server);
    let start = Instant::now();
    let (mine, theirs) = bounded("exchange", async {
        tokio::join!(exchange(conn.connection, bytes, 7), js.until("done"))
    })
    .await;
    eprintln!(
        "js {} <-> rust {}: {} MB each way in {:?}",
        js_mode,
        if rust_is_server { "server" } else { "client" },
        bytes / 1_000_000,
        start.elapsed()
    );
    check(&theirs, &mine, bytes);
    js.close().await;
    rust.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_server_rust_client_exchange_50mb() {
    let _g = SERIAL.lock().await;
    bounded("test", js_rust(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_server_js_client_exchange_50mb() {
    let _g = SERIAL.lock().await;
    bounded("test", js_rust(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_swarms_exchange_50mb_on_a_rust_network() {
    let _g = SERIAL.lock().await;
    bounded("test", async {
        let bytes = payload();
        let (nodes, boot) = rust_network(10).await;
        let topic: [u8; 32] = intercom_crypto::random_array();
        let mut a = rust_swarm(&[boot], [0xa1; 32]).await;
        let mut b = rust_swarm(&[boot], [0xb2; 32]).await;
        a.join(topic, JoinOptions::default()).await.unwrap();
        a.flush().await.unwrap();
        b.join(topic, JoinOptions::default()).await.unwrap();
        let (ca, cb) = tokio::join!(a.accept(), b.accept());
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        assert_eq!(ca.public_key, b.public_key());
        assert_eq!(cb.public_key, a.public_key());
        let start = Instant::now();
        let (x, y) = tokio::join!(
            exchange(ca.connection, bytes, 1),
            exchange(cb.connection, bytes, 2)
        );
        eprintln!(
            "rust <-> rust: {} MB each way in {:?}",
            bytes / 1_000_000,
            start.elapsed()
        );
        assert_eq!((x.received, y.received), (bytes, bytes));
        assert_eq!(x.sent_sha256, y.received_sha256);
        assert_eq!(y.sent_sha256, x.received_sha256);
        a.destroy().await;
        b.destroy().await;
        for n in &nodes {
            n.destroy().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_tool_through_a_js_echo_peer() {
    let _g = SERIAL.lock().await;
    bounded("test", async {
        let bytes = payload() as usize;
        let testnet = JsDht::spawn(&["testnet", "32"]).await;
        let boot = testnet.bootstrap();
        let topic: [u8; 32] = intercom_crypto::random_array();
        let echo = JsSwarm::spawn(&boot, &topic, "server", &["echo"], &[]).await;
        let mut input = vec![0u8; bytes];
        Prng::new(99).fill(&mut input);
        let expected = hex::encode(Sha256::digest(&input));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_intercom"))
            .args(["swarm", "pipe", "--client", "--timeout", "60"])
            .args(["--topic", &hex::encode(topic)])
            .args(["--dht-bootstrap", &node_list(&boot)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn intercom swarm pipe");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let start = Instant::now();
        let feed = async move {
            stdin.write_all(&input).await.expect("write stdin");
            drop(stdin); // EOF: the pipe half-closes
        };
        let read = async move {
            let mut hash = Sha256::new();
            let mut n = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let k = stdout.read(&mut buf).await.expect("read stdout");
                if k == 0 {
                    break;
                }
                n += k;
                hash.update(&buf[..k]);
            }
            (n, hex::encode(hash.finalize()))
        };
        let ((), (n, got)) = tokio::join!(feed, read);
        let status = child.wait().await.expect("wait");
        let mut log = String::new();
        stderr.read_to_string(&mut log).await.unwrap();
        eprintln!(
            "pipe: {} MB round trip in {:?}",
            bytes / 1_000_000,
            start.elapsed()
        );
        assert!(status.success(), "pipe failed: {log}");
        assert!(
            log.contains(&format!("connected to {}", hex::encode(echo.public_key()))),
            "stderr names the remote key: {log}"
        );
        assert_eq!(n, bytes);
        assert_eq!(got, expected);
        echo.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_tool_fails_clearly_without_a_peer() {
    let _g = SERIAL.lock().await;
    bounded("test", async {
        let (nodes, boot) = rust_network(4).await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_intercom"))
            .args(["swarm", "pipe", "--client", "--timeout", "3"])
            .args(["--topic", &hex::encode([0x77u8; 32])])
            .args(["--dht-bootstrap", &boot.to_string()])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run pipe");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("no connection within 3 s"), "{err}");
        for n in &nodes {
            n.destroy().await;
        }
    })
    .await;
}
