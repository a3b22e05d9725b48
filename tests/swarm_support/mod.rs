//! Shared helpers of the swarm tests and benchmarks: the JS Hyperswarm peer of
//! tests/node/swarm-peer.js, Rust swarms on loopback, and the two-way exchange of a
//! large pseudo-random payload with SHA-256 checks.
//!
//! Everything binds 127.0.0.1 (the JS peer's DHT too, so the same-LAN shortcut only
//! ever sees loopback) and bootstraps from loopback addresses only. Child processes are
//! killed when their handles drop.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use intercom_crypto::KeyPair;
use intercom_hyperdht::{Connection, HyperDht, HyperDhtConfig};
use intercom_swarm::{Swarm, SwarmConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Longest wait for one step of a JS peer.
pub const STEP: Duration = Duration::from_secs(120);

/// The tests/ directory.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// `HOST:PORT,...`.
pub fn node_list(addrs: &[SocketAddrV4]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A JS Hyperswarm peer (tests/node/swarm-peer.js).
pub struct JsSwarm {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its ready line.
    pub ready: Value,
    name: String,
    /// Lines `until` read while looking for another key.
    skipped: Vec<Value>,
}

impl JsSwarm {
    /// Starts `node swarm-peer.js BOOT TOPIC MODE ROLE args...` with `env`, waits for
    /// the ready line.
    pub async fn spawn(
        boot: &[SocketAddrV4],
        topic: &[u8; 32],
        mode: &str,
        role: &[&str],
        env: &[(&str, String)],
    ) -> JsSwarm {
        Self::spawn_with(Command::new("node"), boot, topic, mode, role, env).await
    }

    /// Like [`JsSwarm::spawn`] with a prepared command (e.g. `ip netns exec NS node`).
    pub async fn spawn_with(
        mut cmd: Command,
        boot: &[SocketAddrV4],
        topic: &[u8; 32],
        mode: &str,
        role: &[&str],
        env: &[(&str, String)],
    ) -> JsSwarm {
        let dir = tests_dir();
        assert!(
            dir.join("node_modules").join("hyperswarm").exists(),
            "JS modules missing: run `npm ci --prefix tests` (the test command does this)"
        );
        let name = format!("swarm-peer.js {mode} {}", role.join(" "));
        cmd.arg(dir.join("node").join("swarm-peer.js"))
            .arg(node_list(boot))
            .arg(hex::encode(topic))
            .arg(mode)
            .args(role)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn node");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut p = JsSwarm {
            child,
            stdin,
            lines,
            ready: Value::Null,
            name,
            skipped: Vec::new(),
        };
        p.ready = p.until("ready").await;
        p
    }

    /// The next JSON line; panics on timeout, exit or an error report.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no output within {STEP:?}", self.name))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("{}: exited early", self.name));
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", self.name));
        if let Some(e) = v.get("error") {
            panic!("{}: {e}", self.name);
        }
        v
    }

    /// The first line with `key`: one read earlier and skipped by another `until`, or
    /// the next such line. Skipped lines are kept (a client's `connection` line can come
    /// before its `ready` line).
    pub async fn until(&mut self, key: &str) -> Value {
        if let Some(i) = self.skipped.iter().position(|v| v.get(key).is_some()) {
            return self.skipped.remove(i);
        }
        loop {
            let v = self.next().await;
            if v.get(key).is_some() {
                return v;
            }
            self.skipped.push(v);
        }
    }

    /// Its public key.
    pub fn public_key(&self) -> [u8; 32] {
        hex::decode(self.ready["publicKey"].as_str().expect("publicKey"))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    }

    /// Sends one command line.
    pub async fn say(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .expect("write to node");
        stdin.flush().await.expect("flush");
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory of the process in bytes.
    pub fn rss(&self) -> Option<u64> {
        vm_rss_bytes(self.child.id()?)
    }

    /// Closes stdin (the peer destroys its swarm and exits) and waits for the exit.
    pub async fn close(mut self) {
        self.stdin.take();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

/// VmRSS of a process in bytes.
pub fn vm_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time all threads of process `pid` have run so far (the kernel's scheduler
/// statistics, nanosecond resolution); None when the process is gone.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// A Rust swarm on a loopback node bootstrapping from `boot`, keyed by `seed`.
pub async fn rust_swarm(boot: &[SocketAddrV4], seed: [u8; 32]) -> Swarm {
    let mut dht = HyperDhtConfig::new(boot.to_vec());
    dht.dht.host = Ipv4Addr::LOCALHOST;
    let s = Swarm::bind(dht, SwarmConfig::new(KeyPair::from_seed(&seed)))
        .await
        .expect("bind swarm");
    tokio::time::timeout(Duration::from_secs(30), s.dht().dht().bootstrapped())
        .await
        .expect("bootstrapped in time")
        .expect("bootstrapped");
    s
}

/// A Rust-only network: a bootstrapper and `size - 1` persistent nodes on loopback.
pub async fn rust_network(size: usize) -> (Vec<HyperDht>, SocketAddrV4) {
    let first = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .expect("bootstrapper");
    let port = first.dht().local_addr().port();
    let boot = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut nodes = vec![first];
    for _ in 1..size {
        let mut cfg = HyperDhtConfig::new(vec![boot]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        let n = HyperDht::bind(cfg).await.expect("bind node");
        nodes.push(n);
    }
    for n in &nodes {
        tokio::time::timeout(Duration::from_secs(30), n.dht().persistent())
            .await
            .expect("persistent in time")
            .expect("persistent");
    }
    (nodes, boot)
}

/// What one side of an exchange saw.
#[derive(Debug, Clone)]
pub struct Exchanged {
    /// Bytes sent.
    pub sent: u64,
    /// SHA-256 of what was sent (hex).
    pub sent_sha256: String,
    /// Bytes received.
    pub received: u64,
    /// SHA-256 of what was received (hex).
    pub received_sha256: String,
    /// Wall time of the exchange.
    pub elapsed: Duration,
}

/// A fast repeatable byte stream (xorshift64*), keyed by `seed`.
pub struct Prng(u64);

impl Prng {
    /// Keyed by `seed` (any value).
    pub fn new(seed: u64) -> Prng {
        Prng(seed | 1)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Sends `bytes` pseudo-random bytes (64 KiB messages) and ends, while reading
/// everything the remote sends until it ends; hashes both directions.
pub async fn exchange(conn: Connection, bytes: u64, seed: u64) -> Exchanged {
    let start = Instant::now();
    let (mut reader, mut writer, _handle) = conn.split();
    let send = async move {
        let mut prng = Prng::new(seed);
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 65536];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            prng.fill(&mut buf[..n]);
            hash.update(&buf[..n]);
            writer.feed(&buf[..n]).await.expect("send");
            left -= n as u64;
        }
        writer.end().await.expect("end");
        (hex::encode(hash.finalize()), writer)
    };
    let recv = async move {
        let mut hash = Sha256::new();
        let mut n = 0u64;
        while let Some(m) = reader.recv().await.expect("receive") {
            n += m.len() as u64;
            hash.update(&m);
        }
        (n, hex::encode(hash.finalize()))
    };
    let ((sent_sha256, _writer), (received, received_sha256)) = tokio::join!(send, recv);
    Exchanged {
        sent: bytes,
        sent_sha256,
        received,
        received_sha256,
        elapsed: start.elapsed(),
    }
}
