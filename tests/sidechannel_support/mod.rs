//! Shared helpers of the sidechannel integration tests (a module of
//! `sidechannel_policy.rs` and `sidechannel_interop.rs`): a loopback DHT (`intercom dht-node`s), `intercom run`
//! peers with SC-Bridges and known identities, a bridge client that keeps events apart
//! from replies, and the JS sidechannel peer of `tests/node/sidechannel-peer.js`.
//!
//! Everything binds 127.0.0.1 and bootstraps from the loopback node only. Every child
//! process is killed (by its own handle) when its owner drops.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tokio::client_async;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use intercom_crypto::KeyPair;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The peer binary under test: `intercom`, or the task-board app (whose tests reuse this
/// module; it takes the same flags).
pub const BIN: &str = match (
    option_env!("CARGO_BIN_EXE_intercom"),
    option_env!("CARGO_BIN_EXE_intercom-task-board"),
) {
    (Some(bin), _) | (None, Some(bin)) => bin,
    (None, None) => panic!("no peer binary to test"),
};
pub const TOKEN: &str = "sidechannel-test-token";
/// One step (a process start, a reply, an awaited event).
pub const STEP: Duration = Duration::from_secs(60);
/// Discovery over the loopback DHT plus the channel opens, on a loaded machine.
pub const CONNECT: Duration = Duration::from_secs(120);

/// Environment variables `intercom run` reads; cleared so the host cannot leak in.
const ENV_VARS: &[&str] = &[
    "PEER_STORE_NAME",
    "PEER_STORES_DIRECTORY",
    "PEER_DHT_BOOTSTRAP",
    "DHT_BOOTSTRAP",
    "SIDECHANNELS",
    "SIDECHANNEL_MAX_BYTES",
    "SIDECHANNEL_RATE_BYTES",
    "SIDECHANNEL_RATE_BURST",
    "SIDECHANNEL_MAX_STRIKES",
    "SIDECHANNEL_AUTO_JOIN",
    "SIDECHANNEL_QUIET",
    "SIDECHANNEL_DEBUG",
    "SIDECHANNEL_POW",
    "SIDECHANNEL_POW_DIFFICULTY",
    "SIDECHANNEL_POW_ENTRY",
    "SIDECHANNEL_POW_CHANNELS",
    "SIDECHANNEL_INVITE_REQUIRED",
    "SIDECHANNEL_INVITE_CHANNELS",
    "SIDECHANNEL_INVITE_PREFIXES",
    "SIDECHANNEL_INVITER_KEYS",
    "SIDECHANNEL_WELCOME_REQUIRED",
    "SIDECHANNEL_OWNER",
    "SIDECHANNEL_OWNER_WRITE_ONLY",
    "SIDECHANNEL_OWNER_WRITE_CHANNELS",
    "SIDECHANNEL_WELCOME",
    "SC_BRIDGE",
    "SC_BRIDGE_HOST",
    "SC_BRIDGE_PORT",
    "SC_BRIDGE_TOKEN",
    "SC_BRIDGE_CLI",
    "RUST_LOG",
];

/// The key pair of test identity `seed`.
pub fn keypair(seed: u8) -> KeyPair {
    KeyPair::from_seed(&[seed; 32])
}

/// Hex public key of test identity `seed`.
pub fn key_hex(seed: u8) -> String {
    hex::encode(keypair(seed).public_key)
}

/// A welcome as a `--sidechannel-welcome` value (`CHAN:b64:...`).
pub fn welcome_flag(channel: &str, welcome: &Value) -> String {
    use base64_free::encode;
    format!("{channel}:b64:{}", encode(welcome.to_string().as_bytes()))
}

/// Tiny standard base64 (no extra dev-dependency).
mod base64_free {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(b: &[u8]) -> String {
        let mut s = String::new();
        for ch in b.chunks(3) {
            let n = (u32::from(ch[0]) << 16)
                | (u32::from(*ch.get(1).unwrap_or(&0)) << 8)
                | u32::from(*ch.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= ch.len() {
                    s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}

/// A loopback DHT of `intercom dht-node`s on 127.0.0.1: a bootstrap node and three more
/// (with one node alone peers cannot learn that they are reachable and every connection
/// would have to holepunch). Killed on drop.
pub struct DhtNode {
    children: Vec<Child>,
    /// The bootstrap node's `HOST:PORT`.
    pub addr: String,
}

/// Starts `intercom dht-node --host 127.0.0.1 ARGS` and returns it with its ready line.
fn dht_node(dir: &Path, args: &[&str]) -> (Child, Value) {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["dht-node", "--host", "127.0.0.1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn intercom dht-node");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let ready: Value = serde_json::from_str(&first).expect("dht-node ready line is JSON");
    (child, ready)
}

impl DhtNode {
    pub fn start(dir: &Path) -> DhtNode {
        let (boot, ready) = dht_node(dir, &["--port", "0"]);
        let addr = format!("127.0.0.1:{}", ready["port"]);
        let mut children = vec![boot];
        for _ in 0..3 {
            children.push(dht_node(dir, &["--bootstrap", &addr]).0);
        }
        DhtNode { children, addr }
    }
}

impl Drop for DhtNode {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `intercom run` with its SC-Bridge on an ephemeral loopback port.
pub struct Peer {
    child: Child,
    pub pubkey: String,
    pub bridge: String,
    /// The peer's subnet writer key (hex).
    pub writer: String,
}

impl Peer {
    /// Starts `intercom run` in `dir` with store `name`, identity `seed` (written into the
    /// store first), the loopback bootstrap `boot` and `args`.
    pub fn start(dir: &Path, name: &str, seed: u8, boot: &str, args: &[&str]) -> Peer {
        let db = dir.join("stores").join(name).join("db");
        std::fs::create_dir_all(&db).unwrap();
        let kp = keypair(seed);
        std::fs::write(
            db.join("keypair.json"),
            json!({"publicKey": hex::encode(kp.public_key), "secretKey": hex::encode(kp.secret_key)})
                .to_string(),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir);
        for v in ENV_VARS {
            cmd.env_remove(v);
        }
        cmd.args(["run", "--peer-store-name", name, "--dht-bootstrap", boot])
            .args(["--sc-bridge", "1", "--sc-bridge-token", TOKEN])
            .args(["--sc-bridge-port", "0", "--sidechannel-quiet", "1"])
            .args(args);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the child never blocks on a full pipe.
                    continue;
                }
            }
        });
        let (mut pubkey, mut bridge, mut writer) = (None, None, None);
        let deadline = Instant::now() + STEP;
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "peer {name} did not start: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            };
            if let Some(k) = line.strip_prefix("Peer pubkey (hex): ") {
                pubkey = Some(k.trim().to_owned());
            }
            if let Some(w) = line.strip_prefix("Peer writer key (hex): ") {
                writer = Some(w.trim().to_owned());
            }
            if let Some(b) = line.strip_prefix("SC-Bridge: ws://") {
                bridge = Some(b.split_whitespace().next().unwrap().to_owned());
            }
            if line == "Sidechannel: ready" {
                break;
            }
        }
        let pubkey = pubkey.expect("banner shows the public key");
        assert_eq!(pubkey, key_hex(seed), "the pre-written identity is used");
        Peer {
            child,
            pubkey,
            bridge: bridge.expect("banner shows the bridge address"),
            writer: writer.expect("banner shows the writer key"),
        }
    }

    /// An authenticated bridge client.
    pub async fn ws(&self) -> Ws {
        Ws::connect(&self.bridge).await
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SC-Bridge client: replies (matched by `id`) are kept apart from events.
pub struct Ws {
    ws: WebSocketStream<async_tungstenite::tokio::TokioAdapter<TcpStream>>,
    events: VecDeque<Value>,
    next_id: u64,
}

impl Ws {
    pub async fn connect(addr: &str) -> Ws {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, _) = client_async(format!("ws://{addr}/"), tcp).await.unwrap();
        let mut ws = Ws {
            ws,
            events: VecDeque::new(),
            next_id: 1000,
        };
        let hello = ws.frame(STEP).await.expect("hello");
        assert_eq!(hello["type"], "hello");
        let ok = ws.req(json!({"type": "auth", "token": TOKEN})).await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        ws
    }

    async fn frame(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            let msg = msg.expect("bridge connection ended").expect("read error");
            if let Message::Text(t) = msg {
                return Some(serde_json::from_str(t.as_str()).unwrap());
            }
        }
    }

    /// Sends a request and returns its reply (the `auth` reply carries no id).
    pub async fn req(&mut self, mut v: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let auth = v["type"] == "auth";
        if !auth {
            v["id"] = json!(id);
        }
        self.ws.send(Message::text(v.to_string())).await.unwrap();
        loop {
            let f = self
                .frame(STEP)
                .await
                .unwrap_or_else(|| panic!("no reply to {v}"));
            let is_reply = if auth {
                f["type"] == "auth_ok" || f["type"] == "error"
            } else {
                f["id"] == json!(id)
            };
            if is_reply {
                return f;
            }
            self.events.push_back(f);
        }
    }

    /// Sends every request at once (the bridge pipelines them) and returns the replies in
    /// request order.
    pub async fn req_many(&mut self, reqs: Vec<Value>) -> Vec<Value> {
        let first = self.next_id + 1;
        for mut v in reqs.iter().cloned() {
            self.next_id += 1;
            v["id"] = json!(self.next_id);
            self.ws.send(Message::text(v.to_string())).await.unwrap();
        }
        let mut replies: Vec<Option<Value>> = vec![None; reqs.len()];
        let mut missing = reqs.len();
        while missing > 0 {
            let f = self
                .frame(STEP)
                .await
                .expect("a reply to every pipelined request");
            match f["id"].as_u64() {
                Some(id) if id >= first && ((id - first) as usize) < replies.len() => {
                    let slot = &mut replies[(id - first) as usize];
                    if slot.is_none() {
                        missing -= 1;
                    }
                    *slot = Some(f);
                }
                _ => self.events.push_back(f),
            }
        }
        replies.into_iter().map(Option::unwrap).collect()
    }

    /// `send` on `channel`; the reply.
    pub async fn send(&mut self, channel: &str, message: Value) -> Value {
        self.req(json!({"type": "send", "channel": channel, "message": message}))
            .await
    }

    /// `join` on `channel` (with optional invite and welcome); the reply.
    pub async fn join(
        &mut self,
        channel: &str,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Value {
        let mut r = json!({"type": "join", "channel": channel});
        if let Some(i) = invite {
            r["invite"] = i;
        }
        if let Some(w) = welcome {
            r["welcome"] = w;
        }
        self.req(r).await
    }

    /// The next event within `limit`, if any.
    pub async fn next_event(&mut self, limit: Duration) -> Option<Value> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.frame(limit).await
    }

    /// Waits (up to `limit`) for an event matching `pred`; the events before it are
    /// returned too.
    pub async fn wait_event(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = self.next_event(left).await else {
                panic!("timed out waiting for {what}; saw {before:?}");
            };
            if pred(&e) {
                return (e, before);
            }
            before.push(e);
        }
    }

    /// Every event within `d`.
    pub async fn events_within(&mut self, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(e) = self
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(e);
        }
        out
    }

    /// Sends `message(n)` on `channel` every 300 ms until a send reaches `peers` peers.
    pub async fn send_until_peers(
        &mut self,
        channel: &str,
        peers: u64,
        message: impl Fn(u32) -> Value,
    ) -> (u32, Value) {
        let deadline = Instant::now() + CONNECT;
        let mut n = 0;
        loop {
            n += 1;
            let r = self.send(channel, message(n)).await;
            assert_eq!(r["type"], "sent", "{r}");
            if r["peers"].as_u64().unwrap_or(0) >= peers {
                return (n, r);
            }
            assert!(
                Instant::now() < deadline,
                "never reached {peers} peers on {channel}: {r}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until `stats` shows at least `n` connections (the Rust peers find each
    /// other before a JS peer dials in: see [`JsPeer::dial`]).
    pub async fn wait_connections(&mut self, n: u64) {
        let deadline = Instant::now() + CONNECT;
        loop {
            let s = self.stats().await;
            if s["connectionCount"].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(Instant::now() < deadline, "never {n} connections: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes sure this peer and `other` are connected. A swarm looks a topic up once
    /// when it joins (and then every 10 minutes, as Hyperswarm): two peers joining at
    /// the same moment can both look up before the other announced, and then never
    /// meet within a test. So both join a rendezvous channel, `other` a few seconds
    /// later, and re-joins (a fresh lookup) until the connection shows up.
    pub async fn rendezvous(&mut self, other: &mut Ws) {
        let deadline = Instant::now() + CONNECT;
        let r = self.join("rendezvous", None, None).await;
        assert_eq!(r["type"], "joined", "{r}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        loop {
            let r = other.join("rendezvous", None, None).await;
            assert_eq!(r["type"], "joined", "{r}");
            let retry = Instant::now() + Duration::from_secs(15);
            while Instant::now() < retry {
                let s = self.stats().await;
                if s["connectionCount"].as_u64().unwrap_or(0) >= 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(Instant::now() < deadline, "the two peers never connected");
            other
                .req(json!({"type": "leave", "channel": "rendezvous"}))
                .await;
        }
    }

    /// The `stats` reply.
    pub async fn stats(&mut self) -> Value {
        self.req(json!({"type": "stats"})).await
    }
}

/// Is `e` a delivered `sidechannel_message` on `channel` whose message is not a control?
pub fn is_message(e: &Value, channel: &str) -> bool {
    e["type"] == "sidechannel_message"
        && e["channel"] == channel
        && e["message"].get("control").is_none()
}

/// Is `e` a `sidechannel_drop` on `channel` with `reason`?
pub fn is_drop(e: &Value, channel: &str, reason: &str) -> bool {
    e["type"] == "sidechannel_drop" && e["channel"] == channel && e["reason"] == reason
}

/// The JS peer of tests/node/sidechannel-peer.js; killed on drop.
pub struct JsPeer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    events: VecDeque<Value>,
    pub pubkey: String,
}

pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

impl JsPeer {
    /// Starts the JS peer with identity `seed` on the loopback bootstrap `boot`.
    pub async fn start(boot: &str, seed: u8) -> JsPeer {
        let dir = tests_dir();
        assert!(
            dir.join("node_modules/hyperswarm").exists(),
            "JS modules missing: run `npm ci --prefix tests`"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("node/sidechannel-peer.js"))
            .arg(boot)
            .env("SC_SEED", hex::encode([seed; 32]))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut p = JsPeer {
            child,
            stdin,
            lines,
            events: VecDeque::new(),
            pubkey: String::new(),
        };
        let (ready, _) = p.wait("ready", STEP, |e| e["event"] == "ready").await;
        p.pubkey = ready["publicKey"].as_str().unwrap().to_owned();
        assert_eq!(
            p.pubkey,
            key_hex(seed),
            "HyperDHT.keyPair(seed) = our KeyPair"
        );
        p
    }

    async fn line(&mut self, limit: Duration) -> Option<Value> {
        let l = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .ok()?
            .expect("read JS peer")
            .expect("JS peer exited");
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|_| panic!("JS line: {l}"));
        assert_ne!(v["event"], "fatal", "JS peer failed: {v}");
        Some(v)
    }

    /// Sends a command and returns its reply.
    pub async fn cmd(&mut self, v: Value) -> Value {
        let op = v["op"].clone();
        self.stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        loop {
            let e = self
                .line(STEP)
                .await
                .unwrap_or_else(|| panic!("no reply to {v}"));
            if e["event"] == "reply" && e["op"] == op {
                assert!(e.get("error").is_none(), "{v}: {e}");
                return e;
            }
            self.events.push_back(e);
        }
    }

    /// Also connects to `peers` directly (`swarm.joinPeer`). With two or more Rust peers
    /// on one topic of a one-node loopback DHT, the JS swarm's topic discovery alone
    /// often finds only one of them within minutes; dialling by key is reliable.
    pub async fn dial(&mut self, peers: &[&str]) {
        for p in peers {
            self.cmd(json!({"op": "dial", "peer": p})).await;
        }
    }

    /// Waits for an event matching `pred`; returns it and the events before it.
    pub async fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let e = match self.events.pop_front() {
                Some(e) => e,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.line(left).await {
                        Some(e) => e,
                        None => panic!("JS peer: timed out waiting for {what}; saw {before:?}"),
                    }
                }
            };
            if pred(&e) {
                return (e, before);
            }
            before.push(e);
        }
    }

    /// Waits until the protomux channel `channel` is open with every peer of `peers`
    /// (in any order); other events stay queued.
    pub async fn wait_open(&mut self, channel: &str, peers: &[&str]) {
        let deadline = Instant::now() + CONNECT;
        let mut missing: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let mut kept = VecDeque::new();
        let mut queued: VecDeque<Value> = self.events.drain(..).collect();
        while !missing.is_empty() {
            let e = match queued.pop_front() {
                Some(e) => e,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.line(left).await.unwrap_or_else(|| {
                        let seen: Vec<String> = kept
                            .iter()
                            .filter(|e: &&Value| e["event"] != "message")
                            .map(|e| e.to_string())
                            .collect();
                        panic!("JS peer: {channel} never open with {missing:?}; saw {seen:?}")
                    })
                }
            };
            if e["event"] == "open" && e["channel"] == channel {
                missing.retain(|p| e["peer"] != p.as_str());
            }
            kept.push_back(e);
        }
        kept.extend(queued);
        self.events = kept;
    }

    /// Every event within `d`.
    pub async fn events_within(&mut self, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        let mut out: Vec<Value> = self.events.drain(..).collect();
        while let Some(e) = self
            .line(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(e);
        }
        out
    }

    /// Sends until the reply reports at least `peers` recipients.
    pub async fn send_until_peers(&mut self, mut v: Value, peers: u64) -> Value {
        let deadline = Instant::now() + CONNECT;
        v["op"] = json!("send");
        loop {
            let r = self.cmd(v.clone()).await;
            if r["peers"].as_u64().unwrap_or(0) >= peers {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "JS peer never reached {peers} peers: {v}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
