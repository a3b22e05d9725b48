//! Shared helpers of the DHT interop tests (tests/dht_interop.rs) and the DHT lookup
//! benchmark (benches/dht_lookup.rs): the JS peer of tests/node/dht-peer.js driven over
//! stdin/stdout, Rust HyperDHT nodes on loopback, and `intercom dht-node` processes.
//!
//! Everything binds 127.0.0.1 and bootstraps from loopback addresses only. Child
//! processes are killed when their handle is dropped.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use intercom_hyperdht::{HyperDht, HyperDhtConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// Longest wait for a JS peer to start (a 32-node testnet takes a few seconds).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one operation.
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// The tests/ directory (package.json, node_modules, node scripts).
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// A UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `HOST:PORT,...` of a list of addresses.
pub fn node_list(addrs: &[SocketAddrV4]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A JS HyperDHT peer (tests/node/dht-peer.js): a testnet and/or a client, answering
/// JSON commands concurrently.
pub struct JsDht {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next_id: AtomicU64,
    /// The ready line.
    pub ready: Value,
    /// Name for messages.
    pub name: String,
}

impl JsDht {
    /// Starts `node tests/node/dht-peer.js args...` and waits for its ready line.
    pub async fn spawn(args: &[&str]) -> JsDht {
        let dir = tests_dir();
        assert!(
            dir.join("node_modules").join("hyperdht").exists(),
            "JS modules missing: run `npm ci --prefix tests` (the test command does this)"
        );
        let name = format!("dht-peer.js {}", args.join(" "));
        let mut child = Command::new("node")
            .arg(dir.join("node").join("dht-peer.js"))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{name}: not ready within {START_TIMEOUT:?}"))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("{name}: exited before it was ready"));
        let ready: Value =
            serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{name}: {ready:?}: {e}"));
        assert_eq!(ready["ready"], true, "{name}: {ready}");
        let pending: Pending = Arc::default();
        let map = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("dht-peer.js: unparsable line {line:?}");
                    continue;
                };
                let id = v["id"].as_u64();
                let tx = id.and_then(|id| map.lock().unwrap().remove(&id));
                match tx {
                    Some(tx) => {
                        let _ = tx.send(v);
                    }
                    None => eprintln!("dht-peer.js: unexpected line {line}"),
                }
            }
        });
        JsDht {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            ready,
            name,
        }
    }

    /// The testnet's bootstrap addresses.
    pub fn bootstrap(&self) -> Vec<SocketAddrV4> {
        self.ready["bootstrap"]
            .as_array()
            .expect("bootstrap")
            .iter()
            .map(|b| {
                assert_eq!(b["host"], "127.0.0.1");
                local(b["port"].as_u64().expect("port") as u16)
            })
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Runs one command (`{"op": ...}`); panics on failure or timeout.
    pub async fn call(&self, mut cmd: Value) -> Value {
        let v = self.try_call(&mut cmd).await;
        if let Some(fail) = v.get("fail") {
            panic!("{}: {cmd} failed: {fail}", self.name);
        }
        v
    }

    /// Runs one command; a failure comes back as `{"fail": ...}`.
    pub async fn try_call(&self, cmd: &mut Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        {
            let mut stdin = self.stdin.lock().await;
            stdin
                .write_all(format!("{cmd}\n").as_bytes())
                .await
                .expect("write to dht-peer.js");
            stdin.flush().await.expect("flush");
        }
        tokio::time::timeout(OP_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("{}: no answer to {cmd} within {OP_TIMEOUT:?}", self.name))
            .unwrap_or_else(|_| panic!("{}: exited while running {cmd}", self.name))
    }

    /// The public keys a JS lookup of `topic` finds.
    pub async fn lookup(&self, topic: &[u8; 32]) -> HashSet<String> {
        let v = self
            .call(json!({ "op": "lookup", "topic": hex::encode(topic) }))
            .await;
        v["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .map(|p| p.as_str().expect("hex").to_string())
            .collect()
    }

    /// A JS announce of `seed`'s key pair under `topic`; returns the public key (hex).
    pub async fn announce(&self, topic: &[u8; 32], seed: &[u8; 32]) -> String {
        let v = self
            .call(
                json!({ "op": "announce", "topic": hex::encode(topic), "seed": hex::encode(seed) }),
            )
            .await;
        v["publicKey"].as_str().expect("publicKey").to_string()
    }
}

/// Binds a Rust HyperDHT node on loopback; `persistent` nodes serve records (like the
/// JS testnet's nodes: forced persistent, not firewalled), others are ephemeral clients.
pub async fn rust_node(bootstrap: &[SocketAddrV4], persistent: bool) -> HyperDht {
    let mut cfg = HyperDhtConfig::new(bootstrap.to_vec());
    cfg.dht.host = Ipv4Addr::LOCALHOST;
    if persistent {
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
    } else {
        cfg.dht.ephemeral = Some(true);
    }
    let node = HyperDht::bind(cfg).await.expect("bind rust node");
    tokio::time::timeout(Duration::from_secs(30), node.dht().bootstrapped())
        .await
        .expect("bootstrap within 30 s")
        .expect("bootstrapped");
    if persistent {
        tokio::time::timeout(Duration::from_secs(30), node.dht().persistent())
            .await
            .expect("persistent within 30 s")
            .expect("persistent");
    }
    node
}

/// The public keys (hex) a Rust lookup of `topic` finds.
pub async fn rust_lookup(node: &HyperDht, topic: &[u8; 32]) -> HashSet<String> {
    tokio::time::timeout(OP_TIMEOUT, async {
        let mut q = node.lookup(*topic).await.expect("lookup");
        let mut keys = HashSet::new();
        while let Some(r) = q.next().await {
            keys.extend(r.peers.iter().map(|p| hex::encode(p.public_key)));
        }
        q.finish().await.expect("lookup finished");
        keys
    })
    .await
    .expect("lookup within the timeout")
}

/// The path of the `intercom` binary built with this test or bench.
pub fn intercom_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_intercom"))
}

/// A running `intercom dht-node`.
pub struct CliNode {
    child: Child,
    /// Its ready line.
    pub ready: Value,
}

impl CliNode {
    /// Starts `intercom dht-node args...` and waits for the ready line.
    pub async fn spawn(args: &[&str]) -> CliNode {
        let mut child = Command::new(intercom_bin())
            .arg("dht-node")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn intercom dht-node");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("dht-node ready within 60 s")
            .expect("read")
            .expect("dht-node exited before it was ready");
        let ready: Value = serde_json::from_str(&line).expect("json ready line");
        assert_eq!(ready["event"], "ready", "{ready}");
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        CliNode { child, ready }
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddrV4 {
        local(self.ready["port"].as_u64().expect("port") as u16)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Runs `intercom dht args...` to completion: (success, stdout JSON lines, stderr).
pub async fn run_cli(args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = tokio::time::timeout(
        OP_TIMEOUT,
        Command::new(intercom_bin())
            .arg("dht")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("intercom dht within the timeout")
    .expect("run intercom dht");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
