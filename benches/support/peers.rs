//! What the process-level benchmarks share: `intercom` processes (release binary) on
//! 127.0.0.1 with their stdout banners, a four-node loopback DHT, and SC-Bridge agents.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The bridge token every benchmark peer uses.
pub const TOKEN: &str = "62656e6368a1f04c9e7b3d2856c0e4f9a1b2c3d4";
/// How long any one setup or run step may take.
pub const LIMIT: Duration = Duration::from_secs(120);

/// The sending half of an agent's bridge connection.
pub type Tx = WebSocketSender<TokioAdapter<TcpStream>>;
/// The receiving half of an agent's bridge connection.
pub type Rx = WebSocketReceiver<TokioAdapter<TcpStream>>;

/// Runs `f`, panicking if it takes longer than [`LIMIT`].
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}

/// Starts `intercom ARGS` and returns it with the stdout lines read up to `until`.
pub async fn spawn(args: &[&str], until: impl Fn(&str) -> bool) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_intercom"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start intercom");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    bounded("process start", async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let done = until(&line);
            seen.push(line);
            if done {
                break;
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, seen)
}

/// A bootstrap DHT node and three more (with one node alone peers cannot learn that they
/// are reachable and every connection would have to holepunch): the processes and the
/// bootstrap's `HOST:PORT`.
pub async fn dht() -> (Vec<Child>, String) {
    let (boot, lines) = spawn(&["dht-node", "--host", "127.0.0.1", "--port", "0"], |_| {
        true
    })
    .await;
    let ready: Value = serde_json::from_str(&lines[0]).expect("dht-node ready line");
    let bootstrap = format!("127.0.0.1:{}", ready["port"]);
    let mut nodes = vec![boot];
    for _ in 0..3 {
        let args = ["dht-node", "--host", "127.0.0.1", "--bootstrap", &bootstrap];
        nodes.push(spawn(&args, |_| true).await.0);
    }
    (nodes, bootstrap)
}

/// A running `intercom run` and what its banner said.
pub struct BenchPeer {
    /// The process (killed on drop).
    pub child: Child,
    /// The bridge's `HOST:PORT`.
    pub bridge: String,
    /// The peer's public key (hex).
    pub pubkey: String,
    /// The peer's writer key (hex).
    pub writer: String,
}

/// Starts a peer with its bridge on an ephemeral port, rate limiting and proof of work
/// off, and `extra` flags.
pub async fn peer(stores: &Path, name: &str, bootstrap: &str, extra: &[&str]) -> BenchPeer {
    let stores = stores.to_string_lossy();
    let mut args = vec![
        "run",
        "--peer-stores-directory",
        &stores,
        "--peer-store-name",
        name,
        "--dht-bootstrap",
        bootstrap,
        "--sc-bridge",
        "1",
        "--sc-bridge-token",
        TOKEN,
        "--sc-bridge-port",
        "0",
        "--sidechannel-rate-bytes",
        "0",
        "--sidechannel-pow",
        "0",
    ];
    args.extend_from_slice(extra);
    let (child, lines) = spawn(&args, |l| l == "Sidechannel: ready").await;
    let banner = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|b| b.split_whitespace().next())
            .unwrap_or_else(|| panic!("banner shows {prefix}"))
            .to_owned()
    };
    BenchPeer {
        bridge: banner("SC-Bridge: ws://"),
        pubkey: banner("Peer pubkey (hex): "),
        writer: banner("Peer writer key (hex): "),
        child,
    }
}

/// The next JSON frame.
pub async fn next_json(rx: &mut Rx) -> Value {
    loop {
        match rx.next().await.expect("bridge open").expect("bridge frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            _ => continue,
        }
    }
}

/// An authenticated bridge connection, split.
pub async fn agent(addr: &str) -> (Tx, Rx) {
    let tcp = TcpStream::connect(addr).await.expect("connect bridge");
    let (ws, _) = client_async(format!("ws://{addr}/"), tcp)
        .await
        .expect("websocket");
    let (mut tx, mut rx) = ws.split();
    assert_eq!(next_json(&mut rx).await["type"], "hello");
    tx.send(Message::text(
        json!({"type": "auth", "token": TOKEN}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "auth_ok");
    (tx, rx)
}

/// The `q` quantile of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A `send` of `text` on `0000intercom`.
pub fn send_frame(text: &str) -> Message {
    Message::text(json!({"type": "send", "channel": "0000intercom", "message": text}).to_string())
}

/// The text of the next `sidechannel_message` an agent receives.
pub async fn next_message(rx: &mut Rx) -> String {
    loop {
        let v = next_json(rx).await;
        if v["type"] == "sidechannel_message" {
            return v["message"].as_str().unwrap_or_default().to_owned();
        }
    }
}

/// Sends warm-up messages from A's agent until one reaches a peer, then drains A's
/// replies in the background.
pub async fn until_connected(a_tx: &mut Tx, mut a_rx: Rx) {
    bounded("first connection", async {
        loop {
            a_tx.send(send_frame("warm-up")).await.unwrap();
            let r = next_json(&mut a_rx).await;
            if r["type"] == "sent" && r["peers"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    tokio::spawn(async move { while a_rx.next().await.is_some() {} });
}

/// Sends `n` messages back to back to A's bridge and waits until B's agent has each
/// (duplicates are counted, not waited for): messages/s from the first send to the last
/// arrival, the duplicates, and A's sender back.
pub async fn burst(a_tx: Tx, b_rx: &mut Rx, n: usize) -> (f64, usize, Tx) {
    let started = std::time::Instant::now();
    let sender = tokio::spawn(async move {
        let mut a_tx = a_tx;
        for i in 0..n {
            a_tx.send(send_frame(&format!("burst-{i}"))).await.unwrap();
        }
        a_tx
    });
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    bounded("burst", async {
        while seen.len() < n {
            let text = next_message(b_rx).await;
            if text.starts_with("burst-") && !seen.insert(text) {
                duplicates += 1;
            }
        }
    })
    .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    (rate, duplicates, sender.await.unwrap())
}
