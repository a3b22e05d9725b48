//! Holepunching across simulated NATs (issue 5, done-when 2), in network namespaces the
//! test creates and removes:
//!
//! ```text
//!   h1 192.168.1.2 ── r1 (masquerade) 10.99.1.2 ──┐
//!                                                  inet: DHT nodes on 10.99.0.1
//!   h2 192.168.2.2 ── r2 (masquerade) 10.99.2.2 ──┘
//! ```
//!
//! Linux masquerade keeps the source port (a consistent NAT); each router also drops
//! unsolicited inbound packets in its input hook, like a home router's firewall, so only
//! replies to flows the inside host opened get in and neither peer can reach the other
//! until both punch. The inet namespace forwards between the routers (the path the
//! punches take).
//!
//! The drop rule matters beyond realism: without it, a punch that reaches the other
//! router before that side punched back (e.g. the client's low-TTL "open session" ping,
//! which dies after 5 hops on the internet but arrives here after 3) is delivered
//! locally, finds no socket and leaves a conntrack entry for (peer -> router:port).
//! The inside host's own punch to that peer then collides with it and masquerade
//! picks another source port: the NAT turns port-dependent for exactly that peer and
//! both sides keep punching ports the other never sends from (the JS stack fails the
//! same way).
//!
//! Case 1: `intercom swarm pipe --server --echo` in h1, `intercom swarm pipe --client`
//! in h2. Case 2: a JS hyperswarm echo peer in h1, the Rust pipe client in h2. Both
//! move 2 MB through the punched connection and check SHA-256.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); skips with a message otherwise.
//! Nothing leaves the namespaces: they have no route to the host's interfaces.

mod swarm_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use swarm_support::{JsSwarm, Prng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DHT_HOST: &str = "10.99.0.1";
const DHT_PORT: u16 = 49737;
const DHT_NODES: usize = 8;
const PAYLOAD: usize = 2_000_000;
const LIMIT: Duration = Duration::from_secs(240);

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for tool in ["ip", "nft"] {
        if !have(tool) {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 nftables)"
            ));
        }
    }
    // Root inside a container may still lack CAP_NET_ADMIN.
    let probe = format!("icprobe{}", std::process::id());
    if let Err(e) = sh(&format!("ip netns add {probe}")) {
        return Some(format!("cannot create network namespaces: {e}"));
    }
    let _ = sh(&format!("ip netns del {probe}"));
    None
}

fn sh(cmd: &str) -> Result<(), String> {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one test run; removed on drop.
struct Net {
    p: String,
}

impl Net {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.p)
    }

    fn create(prefix: &str) -> Result<Net, String> {
        let net = Net {
            p: prefix.to_string(),
        };
        net.cleanup();
        let p = prefix;
        let mut script = vec![];
        for n in ["inet", "r1", "h1", "r2", "h2"] {
            script.push(format!("ip netns add {p}{n}"));
            script.push(format!("ip -n {p}{n} link set lo up"));
        }
        script.push(format!("ip -n {p}inet addr add {DHT_HOST}/32 dev lo"));
        // A new namespace starts with forwarding off: without this the hosts reach the
        // DHT nodes (inet's own address) but never each other.
        script.push(format!(
            "ip netns exec {p}inet sysctl -qw net.ipv4.ip_forward=1"
        ));
        for i in ["1", "2"] {
            script.extend([
                // inet <-> router i
                format!("ip link add {p}i{i} netns {p}inet type veth peer name {p}u{i} netns {p}r{i}"),
                format!("ip -n {p}inet addr add 10.99.{i}.1/24 dev {p}i{i}"),
                format!("ip -n {p}inet link set {p}i{i} up"),
                format!("ip -n {p}r{i} addr add 10.99.{i}.2/24 dev {p}u{i}"),
                format!("ip -n {p}r{i} link set {p}u{i} up"),
                format!("ip -n {p}r{i} route add default via 10.99.{i}.1"),
                // router i <-> host i
                format!("ip link add {p}l{i} netns {p}r{i} type veth peer name {p}e{i} netns {p}h{i}"),
                format!("ip -n {p}r{i} addr add 192.168.{i}.1/24 dev {p}l{i}"),
                format!("ip -n {p}r{i} link set {p}l{i} up"),
                format!("ip -n {p}h{i} addr add 192.168.{i}.2/24 dev {p}e{i}"),
                format!("ip -n {p}h{i} link set {p}e{i} up"),
                format!("ip -n {p}h{i} route add default via 192.168.{i}.1"),
                format!("ip netns exec {p}r{i} sysctl -qw net.ipv4.ip_forward=1"),
                // Masquerade outbound; drop unsolicited inbound before conntrack confirms
                // an entry for it (see the header).
                format!(
                    "printf 'table ip nat {{\\n chain post {{\\n  type nat hook postrouting priority 100;\\n  oifname \"{p}u{i}\" masquerade\\n }}\\n chain input {{\\n  type filter hook input priority 0;\\n  iifname \"{p}u{i}\" ct state new drop\\n }}\\n}}\\n' | ip netns exec {p}r{i} nft -f -"
                ),
            ]);
        }
        for cmd in script {
            sh(&cmd)?;
        }
        Ok(net)
    }

    fn cleanup(&self) {
        for n in ["inet", "r1", "h1", "r2", "h2"] {
            let _ = sh(&format!("ip netns pids {0}{n} 2>/dev/null | xargs -r kill -9; ip netns del {0}{n} 2>/dev/null", self.p));
        }
    }

    fn exec(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns)]).arg(program);
        c.kill_on_drop(true);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The DHT in the inet namespace: a bootstrap node and more persistent nodes.
async fn start_dht(net: &Net) -> Vec<Child> {
    let bin = env!("CARGO_BIN_EXE_intercom");
    let mut nodes = Vec::new();
    for i in 0..DHT_NODES {
        let mut c = net.exec("inet", bin);
        c.args(["dht-node", "--host", DHT_HOST]);
        if i == 0 {
            c.args(["--port", &DHT_PORT.to_string()]);
        } else {
            c.args(["--bootstrap", &format!("{DHT_HOST}:{DHT_PORT}")]);
        }
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dht-node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("dht-node ready in time")
            .unwrap()
            .expect("dht-node ready line");
        assert!(ready.contains("ready"), "{ready}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        nodes.push(child);
    }
    nodes
}

fn pipe_args(topic: &[u8; 32], role: &str, host: &str) -> Vec<String> {
    vec![
        "swarm".into(),
        "pipe".into(),
        role.into(),
        "--topic".into(),
        hex::encode(topic),
        "--dht-bootstrap".into(),
        format!("{DHT_HOST}:{DHT_PORT}"),
        "--host".into(),
        host.into(),
        "--timeout".into(),
        "90".into(),
    ]
}

/// Runs the pipe client in h2 with a payload; returns (stdout sha, stderr).
async fn pipe_client(net: &Net, topic: &[u8; 32]) -> (bool, String, String, Duration) {
    let mut input = vec![0u8; PAYLOAD];
    Prng::new(5).fill(&mut input);
    let expected = hex::encode(Sha256::digest(&input));
    let mut child = net
        .exec("h2", env!("CARGO_BIN_EXE_intercom"))
        .args(pipe_args(topic, "--client", "192.168.2.2"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipe client");
    let start = Instant::now();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let feed = async move {
        let _ = stdin.write_all(&input).await;
    };
    let read = async move {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out).await;
        out
    };
    let ((), out) = tokio::join!(feed, read);
    let ok = child.wait().await.is_ok_and(|s| s.success());
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log).await;
    let got = hex::encode(Sha256::digest(&out));
    (
        ok && got == expected && out.len() == PAYLOAD,
        got,
        log,
        start.elapsed(),
    )
}

async fn run_case(prefix: &str, js_server: bool) {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED swarm_nat: {why}");
        return;
    }
    let net = Net::create(prefix).unwrap_or_else(|e| panic!("namespace setup failed: {e}"));
    let _dht = start_dht(&net).await;
    let topic: [u8; 32] = intercom_crypto::random_array();
    let mut server_pipe = None;
    let mut js = None;
    if js_server {
        let mut cmd = net.exec("h1", "node");
        cmd.kill_on_drop(true);
        let boot = [format!("{DHT_HOST}:{DHT_PORT}").parse().unwrap()];
        js = Some(
            JsSwarm::spawn_with(
                cmd,
                &boot,
                &topic,
                "server",
                &["echo"],
                &[("SWARM_HOST", "192.168.1.2".to_string())],
            )
            .await,
        );
    } else {
        let mut child = net
            .exec("h1", env!("CARGO_BIN_EXE_intercom"))
            .args(pipe_args(&topic, "--server", "192.168.1.2"))
            .arg("--echo")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pipe server");
        // Wait until it announced.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("server joined in time")
            .unwrap()
            .unwrap_or_default();
        assert!(line.starts_with("joined"), "{line}");
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("h1 pipe: {l}");
            }
        });
        server_pipe = Some(child);
    }
    let (ok, _sha, log, took) = pipe_client(&net, &topic).await;
    eprintln!("h2 pipe ({took:?}):\n{log}");
    assert!(
        ok,
        "the payload did not come back intact through the NATs: {log}"
    );
    // The connection went through the NATs' public addresses: no direct route exists.
    if let Some(js) = js {
        js.close().await;
    }
    drop(server_pipe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_peers_holepunch_through_two_nats() {
    let _g = SERIAL.lock().await;
    tokio::time::timeout(LIMIT, run_case("i5a", false))
        .await
        .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_peer_behind_a_nat_holepunches_with_rust() {
    let _g = SERIAL.lock().await;
    tokio::time::timeout(LIMIT, run_case("i5b", true))
        .await
        .expect("within the time limit");
}
