//! The SC-Bridge of a running `intercom run` against local attackers (issue 20, "done when" 1): an agent's
//! `auth_ok` while 1,000 unauthenticated connections are held open, a 15-byte token refused at startup, the
//! token kept out of `ps` when it comes from a file or the environment (and the warning when it does not),
//! browser origins refused and logged, and the restricted `--sc-bridge-cli`. Every peer listens on 127.0.0.1,
//! points its DHT at a dead loopback port, and is killed by PID at the end.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_intercom");
const TOKEN: &str = "68617264656e696e67c1f0a94e7d3b2c5a8e6f10";
const WAIT: Duration = Duration::from_secs(20);

/// Variables `intercom run` reads that could leak in from the host.
const ENV_VARS: &[&str] = &[
    "PEER_STORE_NAME",
    "PEER_STORES_DIRECTORY",
    "PEER_DHT_BOOTSTRAP",
    "DHT_BOOTSTRAP",
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

type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// A running `intercom run` with a bridge; killed on drop.
struct Peer {
    child: Child,
    bridge: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Peer {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Peer {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir);
        for v in ENV_VARS {
            cmd.env_remove(v);
        }
        cmd.args(["run", "--dht-bootstrap", "127.0.0.1:9", "--sc-bridge", "1"])
            .args(["--sc-bridge-port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut bridge = None;
        let deadline = Instant::now() + WAIT;
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                let err: Vec<String> = err_rx.try_iter().collect();
                panic!("peer did not start: {}", err.join("\n"));
            };
            if let Some(b) = line.strip_prefix("SC-Bridge: ws://") {
                bridge = Some(b.split_whitespace().next().unwrap().to_owned());
            }
            if line == "Sidechannel: ready" {
                break;
            }
        }
        // Keep draining stdout so the peer never blocks on it.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Peer {
            child,
            bridge: bridge.expect("banner shows the bridge address"),
            stderr: err_rx,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.bridge.parse().unwrap()
    }

    /// Its stderr so far (waiting briefly for lines still on their way).
    fn stderr(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// What `ps` and `/proc/PID/cmdline` show of this process.
    fn process_listing(&self) -> String {
        let pid = self.child.id().to_string();
        let ps = Command::new("ps")
            .args(["-ww", "-o", "args=", "-p", &pid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut cmdline = Vec::new();
        let _ = std::fs::File::open(format!("/proc/{pid}/cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline));
        format!(
            "{ps}\n{}",
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(addr: std::net::SocketAddr, origin: Option<&str>) -> Result<Ws, WsError> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    client_async(request, tcp).await.map(|(ws, _)| ws)
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("read error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn req(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::text(v.to_string())).await.unwrap();
    recv(ws).await
}

/// A real agent: connect, upgrade, `hello`, `auth`, `auth_ok`; the time it all took.
async fn agent(addr: std::net::SocketAddr) -> (Duration, Ws) {
    let started = Instant::now();
    let mut ws = connect(addr, None).await.expect("agent connects");
    assert_eq!(recv(&mut ws).await["type"], "hello");
    let r = req(&mut ws, json!({"type":"auth","token":TOKEN})).await;
    assert_eq!(r, json!({"type":"auth_ok"}));
    (started.elapsed(), ws)
}

#[test]
fn a_15_byte_token_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env, expect) in [
        (
            vec!["--sc-bridge-token", "0123456789abcde"],
            vec![],
            "15 bytes",
        ),
        (vec![], vec![("SC_BRIDGE_TOKEN", "secret")], "6 bytes"),
        (
            vec![],
            vec![("SC_BRIDGE_TOKEN", "0123456789abcdef")],
            "64 bits",
        ),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir.path());
        for v in ENV_VARS {
            cmd.env_remove(v);
        }
        let out = cmd
            .args(["run", "--dht-bootstrap", "127.0.0.1:9", "--sc-bridge", "1"])
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("token refused"), "{err}");
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(err.contains("openssl rand -hex 32"), "{err}");
        assert!(
            !dir.path().join("stores").exists(),
            "refused before the store opened"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_stays_out_of_ps_unless_passed_as_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bridge.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let file_arg = token_file.display().to_string();
    let by_file = Peer::start(
        dir.path(),
        &[
            "--peer-store-name",
            "byfile",
            "--sc-bridge-token-file",
            &file_arg,
        ],
        &[],
    );
    let by_env = Peer::start(
        dir.path(),
        &["--peer-store-name", "byenv"],
        &[("SC_BRIDGE_TOKEN", TOKEN)],
    );
    let by_env_file = Peer::start(
        dir.path(),
        &["--peer-store-name", "byenvfile"],
        &[("SC_BRIDGE_TOKEN_FILE", &file_arg)],
    );
    for peer in [&by_file, &by_env, &by_env_file] {
        let listing = peer.process_listing();
        assert!(
            listing.contains("intercom"),
            "ps shows the process: {listing}"
        );
        assert!(!listing.contains(TOKEN), "token in ps: {listing}");
        assert!(
            !peer.stderr().contains("--sc-bridge-token shows"),
            "no warning"
        );
        let (_, mut ws) = agent(peer.addr()).await;
        assert_eq!(req(&mut ws, json!({"type":"ping"})).await["type"], "pong");
    }
    // The compatibility flag works, shows in ps, and says so.
    let by_flag = Peer::start(
        dir.path(),
        &["--peer-store-name", "byflag", "--sc-bridge-token", TOKEN],
        &[],
    );
    assert!(by_flag.process_listing().contains(TOKEN));
    let err = by_flag.stderr();
    assert!(
        err.contains("--sc-bridge-token shows the token") && err.contains("--sc-bridge-token-file"),
        "{err}"
    );
    let _ = agent(by_flag.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_are_refused_and_logged_and_remote_cli_is_restricted() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        dir.path(),
        &[
            "--peer-store-name",
            "origins",
            "--sc-bridge-token-file",
            &{
                let f = dir.path().join("t");
                std::fs::write(&f, TOKEN).unwrap();
                f.display().to_string()
            },
            "--sc-bridge-origin",
            "http://localhost:3000,https://app.example",
            "--sc-bridge-cli",
            "1",
        ],
        &[],
    );
    let addr = peer.addr();
    for origin in ["http://evil.example", "null"] {
        match connect(addr, Some(origin)).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403, "{origin}"),
            other => panic!("{origin}: expected 403, got {:?}", other.map(|_| ())),
        }
    }
    let err = peer.stderr();
    assert!(
        err.contains("origin not on the allow-list") && err.contains("http://evil.example"),
        "the refusal is logged: {err}"
    );
    for origin in [
        Some("http://localhost:3000"),
        Some("https://app.example"),
        None,
    ] {
        let mut ws = connect(addr, origin).await.expect("allowed");
        assert_eq!(recv(&mut ws).await["type"], "hello");
    }

    // --sc-bridge-cli 1: public keys only, no /exit (no --sc-bridge-cli-exit), @file only under the store.
    let (_, mut ws) = agent(addr).await;
    let keys = req(&mut ws, json!({"type":"cli","command":"/get_keys"})).await;
    assert_eq!(keys["ok"], true, "{keys}");
    let keypair: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stores/origins/db/keypair.json")).unwrap(),
    )
    .unwrap();
    let secret = keypair["secretKey"]
        .as_str()
        .expect("secretKey in the key file");
    assert!(
        !keys.to_string().contains(secret),
        "secret key over the bridge"
    );
    assert!(keys
        .to_string()
        .contains(keypair["publicKey"].as_str().unwrap()));
    let exit = req(&mut ws, json!({"type":"cli","command":"/exit"})).await;
    assert_eq!(exit["ok"], false, "{exit}");
    let outside = dir.path().join("t").display().to_string();
    let r = req(
        &mut ws,
        json!({"type":"cli","command":format!("/sc_join --channel x --welcome @{outside}")}),
    )
    .await;
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("under the peer store"),
        "{r}"
    );
    let r = req(
        &mut ws,
        json!({"type":"cli","command":"/sc_join --channel x --welcome @db/keypair.json"}),
    )
    .await;
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("under the peer store"),
        "{r}"
    );
    // Still running after the refused /exit.
    assert_eq!(req(&mut ws, json!({"type":"ping"})).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_unauthenticated_connections_never_delay_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        dir.path(),
        &["--peer-store-name", "flooded"],
        &[("SC_BRIDGE_TOKEN", TOKEN)],
    );
    let addr = peer.addr();
    let (idle, _) = agent(addr).await;

    // 1,000 connections that never authenticate: raw TCP, half an upgrade request, or upgraded and silent.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let (stop, opened, closed) = (stop.clone(), opened.clone(), closed.clone());
        flood.spawn(async move {
            let Ok(mut tcp) = TcpStream::connect(addr).await else {
                return;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let held = async {
                match i % 4 {
                    0 => {
                        let mut buf = [0u8; 64];
                        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
                    }
                    1 => {
                        let _ = tcp
                            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                            .await;
                        let mut buf = [0u8; 64];
                        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
                    }
                    _ => {
                        if let Ok((mut ws, _)) = client_async(format!("ws://{addr}/"), tcp).await {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            };
            tokio::select! {
                _ = held => {}
                _ = async { while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await } } => {}
            }
        });
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let deadline = Instant::now() + WAIT;
    while opened.load(Ordering::Relaxed) < 1000 {
        assert!(Instant::now() < deadline, "the flood could not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the peer take them all from its accept queue: the count it closes settles.
    let mut last = u64::MAX;
    while closed.load(Ordering::Relaxed) != last {
        last = closed.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let still_open = 1000 - closed.load(Ordering::Relaxed);

    let mut took = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..20 {
        let (t, ws) = agent(addr).await;
        took.push(t);
        agents.push(ws);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    took.sort();
    eprintln!(
        "intercom run: auth_ok took {idle:?} idle; with 1,000 unauthenticated connections opened ({still_open} \
         still held by the peer's pending budget, the rest shed): p50 {:?} max {:?} over {} agents",
        took[took.len() / 2],
        took.last().unwrap(),
        took.len()
    );
    assert!(
        still_open >= 60,
        "the flood holds the pending budget: {still_open}"
    );
    assert!(
        *took.last().unwrap() < Duration::from_millis(100),
        "{took:?}"
    );
    for ws in &mut agents {
        assert_eq!(req(ws, json!({"type":"ping"})).await["type"], "pong");
    }
    let err = peer.stderr();
    assert!(
        err.contains("too many unauthenticated connections"),
        "the shedding is logged: {err}"
    );
}
