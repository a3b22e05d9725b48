//! `intercom run` end to end: flags and environment (through `--print-config`), SKILL.md's
//! flags against `--help`, the persistent identity and the store lock (two processes), the
//! SC-Bridge of a running peer (auth, join, send with no peers, stats, info, cli, bad input)
//! and peers talking through their bridges over a loopback DHT.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tokio::client_async;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;

mod sidechannel_support;
use sidechannel_support::DhtNode;

const BIN: &str = env!("CARGO_BIN_EXE_intercom");
const TOKEN: &str = "72756e2d636c69a4f09e3b7c1d5e8f20b6a4c9d1";
const WAIT: Duration = Duration::from_secs(20);

/// Environment variables `intercom run` reads; cleared so the host cannot leak into tests.
const ENV_VARS: &[&str] = &[
    "PEER_STORE_NAME",
    "PEER_STORES_DIRECTORY",
    "PEER_DHT_BOOTSTRAP",
    "DHT_BOOTSTRAP",
    "SUBNET_CHANNEL",
    "SUBNET_BOOTSTRAP",
    "MSB_STORE_NAME",
    "MSB_STORES_DIRECTORY",
    "MSB_DHT_BOOTSTRAP",
    "INTERCOM_TIMER",
    "SIDECHANNELS",
    "SIDECHANNEL_MAX_BYTES",
    "SIDECHANNEL_RATE_BYTES",
    "SIDECHANNEL_AUTO_JOIN",
    "SIDECHANNEL_QUIET",
    "SIDECHANNEL_DEBUG",
    "SC_BRIDGE",
    "SC_BRIDGE_HOST",
    "SC_BRIDGE_PORT",
    "SC_BRIDGE_TOKEN",
    "SC_BRIDGE_TOKEN_FILE",
    "SC_BRIDGE_CLI",
    "SC_BRIDGE_CLI_EXIT",
    "SC_BRIDGE_ORIGIN",
    "RUST_LOG",
];

fn intercom(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for v in ENV_VARS {
        c.env_remove(v);
    }
    c
}

fn print_config(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut c = intercom(dir);
    c.arg("run").args(args).arg("--print-config");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run intercom");
    assert!(
        out.status.success(),
        "intercom run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--print-config prints JSON")
}

#[test]
fn environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let c = print_config(dir.path(), &[], &[]);
    assert_eq!(c["peerStoreName"], "peer");
    assert_eq!(c["peerStore"], "stores/peer");
    assert_eq!(c["subnetChannel"], "trac-peer-subnet");
    assert_eq!(c["sidechannel"]["maxMessageBytes"], 1_000_000);
    assert_eq!(c["sidechannel"]["powDifficulty"], 12);
    assert_eq!(c["sidechannel"]["inviteTtlMs"], 604_800_000u64);
    assert_eq!(c["scBridge"], Value::Null);

    let env = [
        ("PEER_STORE_NAME", "envpeer"),
        ("SIDECHANNELS", "x, y"),
        ("SIDECHANNEL_MAX_BYTES", "5000"),
        ("SIDECHANNEL_AUTO_JOIN", "yes"),
        ("DHT_BOOTSTRAP", "127.0.0.1:49737"),
        ("SC_BRIDGE", "1"),
        (
            "SC_BRIDGE_TOKEN",
            "656e76746f6b656e0a9f3c7e1b2d4f6a8c0e2b4d",
        ),
        ("SC_BRIDGE_PORT", "5555"),
        ("SUBNET_CHANNEL", "app-v1"),
    ];
    let c = print_config(dir.path(), &[], &env);
    assert_eq!(c["peerStoreName"], "envpeer");
    assert_eq!(c["sidechannel"]["extras"], json!(["x", "y"]));
    assert_eq!(c["sidechannel"]["maxMessageBytes"], 5000);
    assert_eq!(c["sidechannel"]["autoJoin"], true);
    assert_eq!(c["peerDhtBootstrap"], json!(["127.0.0.1:49737"]));
    assert_eq!(c["scBridge"]["port"], 5555);
    assert_eq!(
        c["scBridge"]["token"], "(set)",
        "the token is never printed"
    );
    assert_eq!(c["subnetChannel"], "app-v1");

    // Flags win over the environment; aliases work.
    let c = print_config(
        dir.path(),
        &[
            "--peer-store-name",
            "flagpeer",
            "--sidechannel-max-bytes=7",
            "--sidechannel",
            "z",
            "--peer-dht-bootstrap",
            "127.0.0.1:1",
            "--stores-dir",
            "elsewhere",
        ],
        &env,
    );
    assert_eq!(c["peerStoreName"], "flagpeer");
    assert_eq!(c["peerStore"], "elsewhere/flagpeer");
    assert_eq!(c["sidechannel"]["maxMessageBytes"], 7);
    assert_eq!(c["sidechannel"]["extras"], json!(["z"]));
    assert_eq!(c["peerDhtBootstrap"], json!(["127.0.0.1:1"]));
}

#[test]
fn bridge_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = intercom(dir.path())
        .args(["run", "--sc-bridge", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires --sc-bridge-token"), "{err}");
    assert!(!dir.path().join("stores").exists(), "nothing opened");
}

#[test]
fn every_skill_md_flag_is_accepted() {
    let skill = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SKILL.md"))
        .expect("SKILL.md at the repository root");
    let help = intercom(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let mut help = String::from_utf8(help.stdout).unwrap();
    // The writer-log, subnet and agent-adapter sections name flags of those tools: they
    // count too.
    for tool in [
        &["log", "append"][..],
        &["log", "get"],
        &["log", "info"],
        &["log", "serve"],
        &["log", "replicate"],
        &["subnet", "rebuild"],
        &["subnet", "verify-proof"],
        &["send"],
        &["recv"],
        &["inbox", "status"],
        &["mcp"],
    ] {
        let out = intercom(Path::new(env!("CARGO_MANIFEST_DIR")))
            .args(tool)
            .arg("--help")
            .output()
            .unwrap();
        help.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let mut flags: Vec<String> = Vec::new();
    let bytes = skill.as_bytes();
    let mut i = 0;
    while let Some(pos) = skill[i..].find("--") {
        let start = i + pos;
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || b"-_".contains(&bytes[end]))
        {
            end += 1;
        }
        let prev = start.checked_sub(1).map(|p| bytes[p]);
        let flag = &skill[start..end];
        let letter = bytes.get(start + 2).is_some_and(|c| c.is_ascii_lowercase());
        if letter && !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == b'-') {
            flags.push(flag.to_owned());
        }
        i = end.max(start + 2);
    }
    flags.sort();
    flags.dedup();
    assert!(flags.len() > 40, "found only {flags:?}");
    // Not `intercom run` flags: slash-command arguments, cargo's, and `intercom dht-node`'s
    // (the local test network recipe).
    let other: Vec<&str> = intercom_peer::cli::COMMAND_FLAGS
        .iter()
        .chain(intercom_subnet::commands::FLAGS)
        .copied()
        // Fields of contract operations used as commands in SKILL.md's examples.
        .chain(["--value", "--title"])
        .chain(["--release", "--workspace", "--bin", "--help"])
        .chain(["--host", "--port", "--bootstrap"])
        .collect();
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !other.contains(&f.as_str()))
        .filter(|f| {
            !help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
                .any(|w| {
                    w == f.as_str()
                        || w.starts_with(&format!("{f}="))
                        || w.starts_with(&format!("{f} "))
                })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "SKILL.md names flags that `intercom run --help` (and the log, subnet, send, recv, inbox and mcp tools) lacks: {missing:?}"
    );
}

/// A running `intercom run` process.
struct Peer {
    child: Child,
    pubkey: String,
    bridge: Option<String>,
}

impl Peer {
    /// Starts `intercom run ARGS`; without a `--dht-bootstrap` in ARGS the peer's DHT
    /// points at a dead loopback port, so nothing leaves 127.0.0.1.
    fn start(dir: &Path, args: &[&str]) -> Peer {
        let mut cmd = intercom(dir);
        cmd.arg("run").args(args);
        if !args.contains(&"--dht-bootstrap") {
            cmd.args(["--dht-bootstrap", "127.0.0.1:9"]);
        }
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
                    break;
                }
            }
        });
        let (mut pubkey, mut bridge) = (None, None);
        let deadline = Instant::now() + WAIT;
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "peer did not start: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            };
            if let Some(k) = line.strip_prefix("Peer pubkey (hex): ") {
                pubkey = Some(k.trim().to_owned());
            }
            if let Some(b) = line.strip_prefix("SC-Bridge: ws://") {
                bridge = Some(b.split_whitespace().next().unwrap().to_owned());
            }
            if line == "Sidechannel: ready" {
                break;
            }
        }
        Peer {
            child,
            pubkey: pubkey.expect("banner shows the public key"),
            bridge,
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("peer did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn identity_persists_and_store_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let first = Peer::start(dir.path(), &["--peer-store-name", "alice"]);
    assert_eq!(first.pubkey.len(), 64);

    // A second process on the same store fails fast.
    let t = Instant::now();
    let out = intercom(dir.path())
        .args([
            "run",
            "--peer-store-name",
            "alice",
            "--dht-bootstrap",
            "127.0.0.1:9",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));

    let key = first.pubkey.clone();
    assert!(first.stop().success());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("stores/alice/db/keypair.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    // A restart reuses the identity; another store name gets another one.
    let again = Peer::start(dir.path(), &["alice"]);
    assert_eq!(again.pubkey, key);
    let bob = Peer::start(dir.path(), &["--peer-store-name", "bob"]);
    assert_ne!(bob.pubkey, key);
    assert!(again.stop().success());
    assert!(bob.stop().success());
}

/// A bridge client; `.1` keeps the events [`Ws::call`] skipped while waiting for a reply.
struct Ws(
    WebSocketStream<async_tungstenite::tokio::TokioAdapter<TcpStream>>,
    Vec<Value>,
);

impl Ws {
    async fn connect(addr: &str) -> Ws {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, _) = client_async(format!("ws://{addr}/"), tcp).await.unwrap();
        Ws(ws, Vec::new())
    }

    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read error");
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    }

    async fn req(&mut self, v: Value) -> Value {
        self.0.send(Message::text(v.to_string())).await.unwrap();
        self.recv().await
    }

    /// Sends `v` with a fresh `id` and returns the reply carrying it; other frames are kept
    /// in `.1`.
    async fn call(&mut self, mut v: Value) -> Value {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        v["id"] = json!(id);
        self.0.send(Message::text(v.to_string())).await.unwrap();
        loop {
            let r = self.recv().await;
            if r["id"] == id {
                return r;
            }
            self.1.push(r);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        dir.path(),
        &[
            "--peer-store-name",
            "agent",
            "--sc-bridge",
            "1",
            "--sc-bridge-token",
            TOKEN,
            "--sc-bridge-port",
            "0",
            "--sc-bridge-cli",
            "1",
            "--sidechannels",
            "extra",
        ],
    );
    let addr = peer
        .bridge
        .clone()
        .expect("banner shows the bridge address");
    let mut ws = Ws::connect(&addr).await;

    let hello = ws.recv().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["peer"], peer.pubkey.as_str());
    assert_eq!(hello["entryChannel"], "0000intercom");
    assert_eq!(hello["requiresAuth"], true);

    let e = ws.req(json!({"id": 1, "type": "stats"})).await;
    assert_eq!(
        (e["id"].clone(), e["type"].clone(), e["error"].clone()),
        (json!(1), json!("error"), json!("Unauthorized."))
    );
    let e = ws.req(json!({"type": "auth", "token": "wrong"})).await;
    assert_eq!(e["code"], "unauthorized");
    assert_eq!(
        ws.req(json!({"type": "auth", "token": TOKEN})).await,
        json!({"type": "auth_ok"})
    );

    let r = ws
        .req(json!({"id": 2, "type": "join", "channel": "room"}))
        .await;
    assert_eq!(r, json!({"id": 2, "type": "joined", "channel": "room"}));
    let r = ws
        .req(json!({"id": 3, "type": "send", "channel": "0000intercom", "message": "hello"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 3, "type": "sent", "channel": "0000intercom", "peers": 0, "warning": "no_peers"})
    );

    let s = ws.req(json!({"id": 4, "type": "stats"})).await;
    assert_eq!(s["type"], "stats");
    assert_eq!(s["channels"], json!(["0000intercom", "extra", "room"]));
    assert_eq!(s["connectionCount"], 0);
    assert_eq!(s["sidechannelStarted"], true);
    assert_eq!(s["networked"], true);

    let i = ws.req(json!({"id": 5, "type": "info"})).await;
    assert_eq!(i["type"], "info");
    assert_eq!(i["info"]["peerPubkey"], peer.pubkey.as_str());
    let writer_key = i["info"]["peerWriterKey"].as_str().expect("writer key");
    assert_eq!(writer_key.len(), 64, "the writer log's key, hex");
    assert_eq!(i["info"]["sidechannelEntry"], "0000intercom");
    assert_eq!(i["info"]["sidechannelExtras"], json!(["extra"]));
    assert_eq!(i["info"]["peerStore"], "stores/agent");

    let r = ws
        .req(json!({"id": 6, "type": "leave", "channel": "room"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 6, "type": "left", "channel": "room", "ok": true})
    );
    let r = ws
        .req(json!({"type": "leave", "channel": "0000intercom"}))
        .await;
    assert_eq!(r["ok"], false);
    let r = ws.req(json!({"type": "open", "channel": "newroom"})).await;
    assert_eq!(r["type"], "error", "no welcome for newroom: {r}");
    assert_eq!(r["code"], "open_denied");

    // CLI mirroring: the slash-command dispatcher.
    let r = ws.req(json!({"type": "cli", "command": "/sc_stats"})).await;
    assert_eq!(r["type"], "cli_result");
    assert_eq!(r["ok"], true);
    assert_eq!(r["result"]["connectionCount"], 0);
    let r = ws
        .req(json!({"type": "cli", "command": "/sc_welcome --channel mine --text \"hi all\""}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["output"][1]
        .as_str()
        .unwrap()
        .starts_with("welcome_b64: "));
    assert_eq!(r["result"]["payload"]["ownerPubKey"], peer.pubkey.as_str());
    let r = ws.req(json!({"type": "cli", "command": "/msb"})).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("not yet available"));
    let r = ws
        .req(json!({"type": "cli", "command": "/tx --command no_such_thing"}))
        .await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap().contains("no_such_thing"),
        "{r}"
    );

    // Malformed input gets an error and the connection stays usable.
    ws.0.send(Message::text("{not json")).await.unwrap();
    assert_eq!(ws.recv().await["code"], "invalid_json");
    let p = ws.req(json!({"id": 7, "type": "ping"})).await;
    assert_eq!(p["type"], "pong");

    assert!(peer.stop().success());
}

/// The offline scenario: a loopback DHT bootstrap node, two peers with bridges;
/// one sends over its bridge, the other's bridge delivers the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_over_a_loopback_dht() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let node = dht.addr.clone();
    let start = |name: &str| {
        Peer::start(
            dir.path(),
            &[
                "--peer-store-name",
                name,
                "--dht-bootstrap",
                &node,
                "--sc-bridge",
                "1",
                "--sc-bridge-token",
                TOKEN,
                "--sc-bridge-port",
                "0",
            ],
        )
    };
    let a = start("a");
    let b = start("b");
    let mut wa = Ws::connect(a.bridge.as_deref().unwrap()).await;
    let mut wb = Ws::connect(b.bridge.as_deref().unwrap()).await;
    for ws in [&mut wa, &mut wb] {
        assert_eq!(ws.recv().await["type"], "hello");
        assert_eq!(
            ws.req(json!({"type": "auth", "token": TOKEN})).await["type"],
            "auth_ok"
        );
    }
    // Discovery, the connection and the channel open take a few seconds.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    let text = loop {
        n += 1;
        let text = format!("hello over the DHT #{n}");
        let r = wa
            .req(json!({"type": "send", "channel": "0000intercom", "message": text}))
            .await;
        assert_eq!(r["type"], "sent", "{r}");
        if r["peers"].as_u64().unwrap_or(0) >= 1 {
            break text;
        }
        assert!(Instant::now() < deadline, "the peers never connected");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    loop {
        let ev = wb.recv().await;
        if ev["type"] == "sidechannel_message" && ev["message"] == text.as_str() {
            assert_eq!(ev["channel"], "0000intercom");
            assert_eq!(ev["from"], a.pubkey.as_str());
            break;
        }
    }
    let s = wb.req(json!({"type": "stats"})).await;
    assert!(s["connectionCount"].as_u64().unwrap() >= 1, "{s}");
    assert!(a.stop().success());
    assert!(b.stop().success());
    drop(dht);
}

/// An authenticated bridge client of `peer`.
async fn authed(peer: &Peer) -> Ws {
    let mut ws = Ws::connect(peer.bridge.as_deref().expect("bridge address")).await;
    assert_eq!(ws.recv().await["type"], "hello");
    assert_eq!(
        ws.req(json!({"type": "auth", "token": TOKEN})).await["type"],
        "auth_ok"
    );
    ws
}

/// A test message received on "room": (text, sender).
fn hello_on_room(v: &Value) -> Option<(String, String)> {
    let m = v["message"].as_str()?;
    (v["type"] == "sidechannel_message" && v["channel"] == "room" && m.starts_with("hello from "))
        .then(|| {
            (
                m.to_owned(),
                v["from"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// Issue 7, done-when 1: three peers with bridges on a welcomed channel over a loopback
/// DHT; every message sent on one bridge arrives exactly once on each of the other two
/// (three peers in a full mesh with relay on: a relayed copy must be deduplicated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_on_a_welcomed_channel_deliver_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let bridge_args = [
        "--dht-bootstrap",
        dht.addr.as_str(),
        "--sc-bridge",
        "1",
        "--sc-bridge-token",
        TOKEN,
        "--sc-bridge-port",
        "0",
    ];

    // The owner signs a welcome for "room" with its persistent identity, then restarts
    // with the channel's flags like everyone else.
    let owner = Peer::start(
        dir.path(),
        &[
            &["--peer-store-name", "owner", "--sc-bridge-cli", "1"][..],
            &bridge_args,
        ]
        .concat(),
    );
    let owner_key = owner.pubkey.clone();
    let mut ws = authed(&owner).await;
    let r = ws
        .req(json!({"type": "cli", "command": "/sc_welcome --channel room --text \"welcome to room\""}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let welcome = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| l.as_str()?.strip_prefix("welcome_b64: "))
        .expect("welcome_b64 line")
        .to_owned();
    drop(ws);
    assert!(owner.stop().success());

    let owner_flag = format!("room:{owner_key}");
    let welcome_flag = format!("room:{welcome}");
    let channel_args = [
        "--sidechannels",
        "room",
        "--sidechannel-owner",
        owner_flag.as_str(),
        "--sidechannel-welcome",
        welcome_flag.as_str(),
    ];
    let names = ["owner", "bob", "carol"];
    let peers: Vec<Peer> = names
        .iter()
        .map(|n| {
            Peer::start(
                dir.path(),
                &[&["--peer-store-name", n][..], &bridge_args, &channel_args].concat(),
            )
        })
        .collect();
    assert_eq!(peers[0].pubkey, owner_key, "same store, same identity");
    let mut clients = Vec::new();
    for p in &peers {
        clients.push(authed(p).await);
    }

    // Wait until every peer reaches both others on "room".
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, ws) in clients.iter_mut().enumerate() {
        loop {
            let s = ws.call(json!({"type": "stats"})).await;
            if s["connectionCount"].as_u64() == Some(2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never had 2 connections: {s}",
                names[i]
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Probe until each sender's `sent` reports both peers on the channel; the probes are
    // ignored by the receivers below.
    for (i, ws) in clients.iter_mut().enumerate() {
        loop {
            let r = ws
                .call(json!({"type": "send", "channel": "room", "message": "probe"}))
                .await;
            assert_eq!(r["type"], "sent", "{r}");
            if r["peers"].as_u64() == Some(2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never reached 2 peers on room: {r}",
                names[i]
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    for (i, ws) in clients.iter_mut().enumerate() {
        let text = format!("hello from {}", names[i]);
        let r = ws
            .call(json!({"type": "send", "channel": "room", "message": text}))
            .await;
        assert_eq!(r["peers"], 2, "{r}");
    }
    // Collect everything for a while after the last expected message (duplicates would
    // arrive within milliseconds on loopback).
    for (i, ws) in clients.iter_mut().enumerate() {
        let mut got: Vec<(String, String)> = Vec::new();
        got.extend(std::mem::take(&mut ws.1).iter().filter_map(hello_on_room));
        let expected = 2;
        let quiet_until = |n: usize| {
            if n >= expected {
                Duration::from_millis(1500)
            } else {
                WAIT
            }
        };
        loop {
            let wait = quiet_until(got.len());
            let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(wait, ws.0.next()).await
            else {
                break;
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            got.extend(hello_on_room(&v));
        }
        got.sort();
        let mut want: Vec<(String, String)> = (0..3)
            .filter(|&j| j != i)
            .map(|j| (format!("hello from {}", names[j]), peers[j].pubkey.clone()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{} received each message exactly once", names[i]);
    }

    for (i, ws) in clients.iter_mut().enumerate() {
        let s = ws.call(json!({"type": "stats"})).await;
        assert_eq!(s["connectionCount"], 2, "{}: {s}", names[i]);
        let info = ws.call(json!({"type": "info"})).await;
        assert_eq!(info["info"]["peerPubkey"], peers[i].pubkey.as_str());
    }
    for p in peers {
        assert!(p.stop().success());
    }
    drop(dht);
}

/// Issue 7, done-when 2: bad input against a running peer's bridge. Each gets its
/// documented answer, and a client authenticated before the abuse keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_bridge_survives_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        dir.path(),
        &[
            "--peer-store-name",
            "victim",
            "--sc-bridge",
            "1",
            "--sc-bridge-token",
            TOKEN,
            "--sc-bridge-port",
            "0",
        ],
    );
    let addr = peer.bridge.clone().unwrap();
    let mut good = authed(&peer).await;

    let mut bad = Ws::connect(&addr).await;
    assert_eq!(bad.recv().await["type"], "hello");
    let e = bad
        .req(json!({"id": 1, "type": "send", "channel": "0000intercom", "message": "x"}))
        .await;
    assert_eq!(
        (e["type"].clone(), e["id"].clone()),
        (json!("error"), json!(1)),
        "{e}"
    );
    assert_eq!(e["error"], "Unauthorized.");
    let e = bad
        .req(json!({"type": "auth", "token": "not the token"}))
        .await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert_eq!(
        bad.req(json!({"type": "auth", "token": TOKEN})).await["type"],
        "auth_ok"
    );
    bad.0.send(Message::text("{\"type\": ")).await.unwrap();
    assert_eq!(bad.recv().await["code"], "invalid_json");
    let e = bad.req(json!({"id": 2, "type": "teleport"})).await;
    assert_eq!(
        (e["type"].clone(), e["id"].clone()),
        (json!("error"), json!(2)),
        "{e}"
    );
    let e = bad
        .req(json!({"id": 3, "type": "send", "channel": "0000intercom"}))
        .await;
    assert_eq!(e["code"], "missing_field", "{e}");
    // A frame over the cap (1 MiB + 64 KiB): an error, then the connection is closed.
    let huge = format!(
        "{{\"type\":\"send\",\"channel\":\"0000intercom\",\"message\":\"{}\"}}",
        "x".repeat(1_200_000)
    );
    let _ = bad.0.send(Message::text(huge)).await;
    let mut closed = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match tokio::time::timeout(WAIT, bad.0.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["code"], "frame_too_large", "{v}");
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) => break,
        }
    }
    assert!(closed, "an oversized frame closes the connection");

    // 1,000 rapid connections opened and dropped: half at the TCP level, half right
    // after the WebSocket handshake.
    let started = Instant::now();
    for i in 0..1000 {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            drop(tcp);
        } else if let Ok((ws, _)) = client_async(format!("ws://{addr}/"), tcp).await {
            drop(ws);
        }
    }
    eprintln!(
        "1,000 connections opened and dropped in {:?}",
        started.elapsed()
    );

    // The client authenticated before all this is still served, and so is a new one.
    let p = good.req(json!({"id": 9, "type": "ping"})).await;
    assert_eq!(p["type"], "pong", "{p}");
    let s = good.req(json!({"type": "stats"})).await;
    assert_eq!(s["type"], "stats", "{s}");
    // Dropped connections are reaped as their sockets close; a new client may have to
    // retry for a moment while the bridge is at its client cap.
    let reaped = Instant::now();
    let mut fresh = loop {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        if let Ok((ws, _)) = client_async(format!("ws://{addr}/"), tcp).await {
            break Ws(ws, Vec::new());
        }
        assert!(
            reaped.elapsed() < WAIT,
            "the bridge never accepted a new client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "a new client was accepted {:?} after the flood",
        reaped.elapsed()
    );
    assert_eq!(fresh.recv().await["type"], "hello");
    assert_eq!(
        fresh.req(json!({"type": "auth", "token": TOKEN})).await["type"],
        "auth_ok"
    );
    assert_eq!(fresh.req(json!({"type": "ping"})).await["type"], "pong");
    assert!(peer.stop().success());
}
