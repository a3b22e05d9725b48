//! Hyperswarm benchmark on 127.0.0.1: JS⇄JS, Rust⇄Rust and Rust⇄JS peers on one topic
//! of a 32-node JS testnet, in one run:
//!
//! * join → first connection: time from `join()` on the client (the server joined
//!   before) until its swarm hands out the connection;
//! * throughput: 256 MB one way over one connection (`SWARM_BENCH_MB`), measured by the
//!   receiver from its first byte to its last;
//! * latency: 1,000 round trips of a 64-byte message, p50 / p99;
//! * idle memory: VmRSS of one peer process holding one idle connection (JS:
//!   `tests/node/swarm-peer.js`; Rust: `intercom swarm pipe --echo`).
//!
//!   cargo bench --bench swarm_bench
//!
//! The figures are printed and written to the swarm section of docs/benchmarks.md
//! (other sections are kept). Targets: Rust⇄Rust throughput at least twice JS⇄JS, and
//! Rust⇄Rust p50 latency at most half of JS⇄JS.

#[path = "../tests/dht_support/mod.rs"]
mod dht_support;
#[path = "support/docs.rs"]
mod docs;
#[path = "../tests/swarm_support/mod.rs"]
mod swarm_support;

use std::net::SocketAddrV4;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dht_support::JsDht;
use intercom_hyperdht::Connection;
use intercom_swarm::{JoinOptions, Swarm};
use serde_json::json;
use swarm_support::{node_list, rust_swarm, vm_rss_bytes, JsSwarm};
use tokio::io::{AsyncBufReadExt, BufReader};

const PINGS: usize = 1000;
const PING_SIZE: usize = 64;
const LIMIT: Duration = Duration::from_secs(300);

fn megabytes() -> u64 {
    std::env::var("SWARM_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}

/// One side of a benchmark pair (two exist per run: variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Side {
    Js(JsSwarm),
    Rust(Option<Connection>),
}

impl Side {
    async fn sink(&mut self, bytes: u64) -> f64 {
        match self {
            Side::Js(js) => {
                js.say(json!({ "op": "expect", "bytes": bytes })).await;
                js.until("op").await;
                let v = js.until("ms").await;
                v["ms"].as_f64().expect("ms")
            }
            Side::Rust(c) => {
                let conn = c.as_mut().expect("connection");
                let mut got = 0u64;
                let mut first = None;
                while got < bytes {
                    let m = conn.recv().await.expect("recv").expect("data");
                    first.get_or_insert_with(Instant::now);
                    got += m.len() as u64;
                }
                first.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0)
            }
        }
    }

    async fn send(&mut self, bytes: u64) {
        match self {
            Side::Js(js) => js.say(json!({ "op": "send", "bytes": bytes })).await,
            Side::Rust(c) => {
                let conn = c.as_mut().expect("connection");
                let buf = vec![7u8; 65536];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    conn.send(&buf[..n]).await.expect("send");
                    left -= n as u64;
                }
            }
        }
    }

    /// Starts echoing (Rust: on a task, giving the connection away).
    async fn pong(&mut self) {
        match self {
            Side::Js(js) => {
                js.say(json!({ "op": "pong" })).await;
                js.until("op").await;
            }
            Side::Rust(c) => {
                let mut conn = c.take().expect("connection");
                tokio::spawn(async move {
                    while let Ok(Some(m)) = conn.recv().await {
                        if conn.send(&m).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }

    async fn ping(&mut self) -> Vec<f64> {
        match self {
            Side::Js(js) => {
                js.say(json!({ "op": "pingpong", "count": PINGS, "size": PING_SIZE }))
                    .await;
                let v = js.until("latencies").await;
                v["latencies"]
                    .as_array()
                    .expect("latencies")
                    .iter()
                    .map(|x| x.as_f64().expect("ms"))
                    .collect()
            }
            Side::Rust(c) => {
                let conn = c.as_mut().expect("connection");
                let msg = [1u8; PING_SIZE];
                let mut lat = Vec::with_capacity(PINGS);
                for _ in 0..PINGS {
                    let t = Instant::now();
                    conn.send(&msg).await.expect("ping");
                    let mut have = 0;
                    while have < PING_SIZE {
                        have += conn.recv().await.expect("pong").expect("data").len();
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            }
        }
    }
}

/// Set in the environment of a child that runs one Rust peer ([`peer_process`]).
const PEER_PROCESS: &str = "SWARM_BENCH_PEER_PROCESS";

/// This bench binary as a Rust peer process.
fn peer_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("bench exe"));
    cmd.env(PEER_PROCESS, "1");
    cmd
}

/// A Rust swarm peer speaking `tests/node/swarm-peer.js`'s bench protocol (arguments
/// `SCRIPT BOOTSTRAP TOPIC MODE bench`, JSON commands on stdin, JSON lines on stdout), so
/// the Rust ⇄ Rust pair runs in two processes like the JS ⇄ JS pair.
async fn peer_process() {
    use tokio::io::AsyncBufReadExt;
    let args: Vec<String> = std::env::args().collect();
    let boot: Vec<SocketAddrV4> = args[2]
        .split(',')
        .map(|a| a.parse().expect("bootstrap node"))
        .collect();
    let topic: [u8; 32] = hex::decode(&args[3])
        .expect("topic hex")
        .try_into()
        .expect("32-byte topic");
    let (server, client) = (args[4] != "client", args[4] != "server");
    let mut swarm = rust_swarm(&boot, intercom_crypto::random_array()).await;
    let joined = Instant::now();
    swarm
        .join(topic, JoinOptions { server, client })
        .await
        .expect("join");
    swarm.flush().await.expect("flush");
    let out = |v: serde_json::Value| println!("{v}");
    out(json!({ "ready": true, "publicKey": hex::encode(swarm.public_key()) }));
    let c = swarm.accept().await.expect("connection");
    out(json!({
        "connection": hex::encode(c.public_key),
        "client": c.client,
        "ms": joined.elapsed().as_secs_f64() * 1000.0,
    }));
    let mut conn = c.connection;
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let (mut expect, mut got, mut first, mut pong) = (0u64, 0u64, None, false);
    out(json!({ "op": "benchReady" }));
    loop {
        tokio::select! {
            line = commands.next_line() => {
                let Ok(Some(line)) = line else { break };
                let cmd: serde_json::Value = serde_json::from_str(&line).expect("command");
                match cmd["op"].as_str() {
                    Some("expect") => {
                        expect = cmd["bytes"].as_u64().expect("bytes");
                        out(json!({ "op": "expect" }));
                    }
                    Some("pong") => {
                        pong = true;
                        out(json!({ "op": "pong" }));
                    }
                    Some("send") => {
                        let buf = vec![7u8; 65536];
                        let mut left = cmd["bytes"].as_u64().expect("bytes");
                        while left > 0 {
                            let n = left.min(buf.len() as u64) as usize;
                            conn.send(&buf[..n]).await.expect("send");
                            left -= n as u64;
                        }
                        out(json!({ "op": "sent" }));
                    }
                    Some("pingpong") => {
                        let count = cmd["count"].as_u64().expect("count") as usize;
                        let msg = vec![1u8; cmd["size"].as_u64().expect("size") as usize];
                        let mut latencies = Vec::with_capacity(count);
                        for _ in 0..count {
                            let t = Instant::now();
                            conn.send(&msg).await.expect("ping");
                            let mut have = 0;
                            while have < msg.len() {
                                have += conn.recv().await.expect("pong").expect("data").len();
                            }
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        out(json!({ "op": "pingpong", "latencies": latencies }));
                    }
                    other => panic!("peer process: unsupported command {other:?}"),
                }
            }
            m = conn.recv() => {
                let Ok(Some(m)) = m else { break };
                if pong {
                    if conn.send(&m).await.is_err() {
                        break;
                    }
                    continue;
                }
                let t = *first.get_or_insert_with(Instant::now);
                got += m.len() as u64;
                if expect > 0 && got >= expect {
                    out(json!({
                        "op": "received",
                        "bytes": got,
                        "ms": t.elapsed().as_secs_f64() * 1000.0,
                    }));
                    (expect, got, first) = (0, 0, None);
                }
            }
        }
    }
    swarm.destroy().await;
}

struct Row {
    name: &'static str,
    connect_ms: f64,
    mb_per_s: f64,
    p50: f64,
    p99: f64,
    /// Ping-pong again with both processes pinned, per [`PLACEMENTS`]: (p50, p99).
    pinned: Vec<(f64, f64)>,
}

/// Where the two processes of a pair run for the pinned ping-pongs: (name, server CPU,
/// client CPU). Unpinned, the scheduler decides, and on this VM a round trip between two
/// cores costs about 15x one on a single core even for bare UDP, so the unpinned figures
/// swing with placement.
const PLACEMENTS: [(&str, usize, usize); 2] = [("one core", 0, 0), ("two cores", 1, 0)];

/// Pins every thread of `pid` to `cpu` (`taskset`); false when that is not possible.
fn pin(pid: u32, cpu: usize) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Set in the environment of a child that runs one side of the bare UDP ping-pong
/// ([`udp_process`]): `echo`, or `client:PORT`.
const UDP_PROCESS: &str = "SWARM_BENCH_UDP";

/// Bare UDP ping-pong of [`PING_SIZE`]-byte datagrams with blocking sockets: the floor
/// under any stack's round trip for a placement. The echo side prints its port; the
/// client prints `{"p50":..,"p99":..}` in ms.
fn udp_process(role: &str) {
    let mut buf = [0u8; 2048];
    if role == "echo" {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        println!("{}", socket.local_addr().expect("addr").port());
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
        return;
    }
    let port = role.strip_prefix("client:").expect("client:PORT");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .connect(format!("127.0.0.1:{port}"))
        .expect("connect");
    let msg = [1u8; PING_SIZE];
    let mut lat = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        socket.send(&msg).expect("send");
        socket.recv(&mut buf).expect("recv");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({ "p50": quantile(&lat, 0.5), "p99": quantile(&lat, 0.99) })
    );
}

/// The latency verdict: judged on the pinned placements when they ran (unpinned figures
/// swing with where the scheduler puts the processes), naming any placement that misses
/// the target where bare UDP alone is slower than half of JS.
fn latency_verdict(
    unpinned: f64,
    pinned: &[f64],
    floor: &[(f64, f64)],
    js: &[(f64, f64)],
) -> String {
    if pinned.len() != PLACEMENTS.len() {
        let met = if unpinned <= 0.5 { "met" } else { "not met" };
        return format!("{unpinned:.2}× unpinned, {met}");
    }
    let parts: Vec<String> = PLACEMENTS
        .iter()
        .enumerate()
        .map(|(i, (place, ..))| {
            let met = if pinned[i] <= 0.5 { "met" } else { "not met" };
            let below_floor = if pinned[i] > 0.5 && floor[i].0 > js[i].0 / 2.0 {
                format!(
                    "; bare UDP alone takes {:.3} ms, more than half of JS's {:.3} ms",
                    floor[i].0, js[i].0
                )
            } else {
                String::new()
            };
            format!("{place}: {:.2}×, {met}{below_floor}", pinned[i])
        })
        .collect();
    format!("pinned {}; unpinned {unpinned:.2}×", parts.join("; "))
}

/// The bare UDP round trip (p50, p99) per [`PLACEMENTS`], each side a pinned process.
async fn udp_floor() -> Vec<(f64, f64)> {
    let exe = std::env::current_exe().expect("bench exe");
    let mut out = Vec::new();
    for (_, server_cpu, client_cpu) in PLACEMENTS {
        let start = |cpu: usize, role: String| {
            tokio::process::Command::new("taskset")
                .args(["-c", &cpu.to_string()])
                .arg(&exe)
                .env(UDP_PROCESS, role)
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn taskset")
        };
        let mut echo = start(server_cpu, "echo".into());
        let mut lines = BufReader::new(echo.stdout.take().expect("stdout")).lines();
        let port = lines.next_line().await.ok().flatten().expect("echo port");
        let mut client = start(client_cpu, format!("client:{port}"));
        let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
        let line = bounded("udp ping-pong", lines.next_line()).await;
        let v: serde_json::Value =
            serde_json::from_str(&line.ok().flatten().expect("udp result")).expect("json");
        out.push((
            v["p50"].as_f64().expect("p50"),
            v["p99"].as_f64().expect("p99"),
        ));
        let _ = echo.kill().await;
    }
    out
}

async fn rust_side(swarm: &mut Swarm) -> Connection {
    bounded("rust connection", swarm.accept())
        .await
        .expect("connection")
        .connection
}

/// A benchmark pair: `server_js` / `client_js` choose the implementations.
///
/// `server_process`: both Rust sides run in child processes of their own, as each JS peer
/// does.
async fn pair(
    name: &'static str,
    boot: &[SocketAddrV4],
    server_js: bool,
    client_js: bool,
    server_process: bool,
) -> Row {
    let topic: [u8; 32] = intercom_crypto::random_array();
    let bytes = megabytes() * 1_000_000;
    // The server joins first.
    let mut rust_server = None;
    let mut js_server = None;
    if server_js {
        js_server = Some(JsSwarm::spawn(boot, &topic, "server", &["bench"], &[]).await);
    } else if server_process {
        js_server = Some(
            JsSwarm::spawn_with(peer_command(), boot, &topic, "server", &["bench"], &[]).await,
        );
    } else {
        let s = rust_swarm(boot, intercom_crypto::random_array()).await;
        s.join(
            topic,
            JoinOptions {
                server: true,
                client: false,
            },
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        rust_server = Some(s);
    }
    // Then the client; join → connection.
    let mut rust_client = None;
    let (connect_ms, mut client) = if client_js || server_process {
        let mut js = if client_js {
            JsSwarm::spawn(boot, &topic, "client", &["bench"], &[]).await
        } else {
            JsSwarm::spawn_with(peer_command(), boot, &topic, "client", &["bench"], &[]).await
        };
        let v = js.until("connection").await;
        let ms = v["ms"].as_f64().expect("ms");
        js.until("op").await; // benchReady
        (ms, Side::Js(js))
    } else {
        let mut s = rust_swarm(boot, intercom_crypto::random_array()).await;
        let t = Instant::now();
        s.join(
            topic,
            JoinOptions {
                server: false,
                client: true,
            },
        )
        .await
        .unwrap();
        let conn = rust_side(&mut s).await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        rust_client = Some(s);
        (ms, Side::Rust(Some(conn)))
    };
    let mut server = match (js_server, rust_server.as_mut()) {
        (Some(mut js), _) => {
            js.until("connection").await;
            js.until("op").await; // benchReady
            Side::Js(js)
        }
        (None, Some(s)) => Side::Rust(Some(rust_side(s).await)),
        _ => unreachable!(),
    };
    // Throughput, client -> server.
    let (ms, ()) = bounded("throughput", async {
        tokio::join!(server.sink(bytes), client.send(bytes))
    })
    .await;
    let mb_per_s = bytes as f64 / 1e6 / (ms / 1000.0);
    // Latency: where the scheduler puts the processes, then pinned when both are child
    // processes.
    server.pong().await;
    let mut lat = bounded("ping-pong", client.ping()).await;
    lat.sort_by(f64::total_cmp);
    let mut pinned = Vec::new();
    let pids = match (&server, &client) {
        (Side::Js(s), Side::Js(c)) => s.pid().zip(c.pid()),
        _ => None,
    };
    for (place, server_cpu, client_cpu) in PLACEMENTS {
        let Some((sp, cp)) = pids.filter(|(sp, cp)| pin(*sp, server_cpu) && pin(*cp, client_cpu))
        else {
            break;
        };
        let mut l = bounded("pinned ping-pong", client.ping()).await;
        l.sort_by(f64::total_cmp);
        let (p50, p99) = (quantile(&l, 0.5), quantile(&l, 0.99));
        println!("{name}, {place} (pids {sp}, {cp}): ping p50 {p50:.3} ms p99 {p99:.3} ms");
        pinned.push((p50, p99));
    }
    let row = Row {
        name,
        connect_ms,
        mb_per_s,
        p50: quantile(&lat, 0.5),
        p99: quantile(&lat, 0.99),
        pinned,
    };
    println!(
        "{name}: connect {:.0} ms, {:.1} MB/s, ping p50 {:.3} ms p99 {:.3} ms",
        row.connect_ms, row.mb_per_s, row.p50, row.p99
    );
    for side in [server, client] {
        if let Side::Js(js) = side {
            js.close().await;
        }
    }
    for s in [rust_server, rust_client].into_iter().flatten() {
        s.destroy().await;
    }
    row
}

/// VmRSS of two idle JS peers and of two idle `intercom swarm pipe --echo` peers, each
/// holding one connection (per-peer figures).
async fn idle_rss(boot: &[SocketAddrV4]) -> (f64, f64) {
    let topic: [u8; 32] = intercom_crypto::random_array();
    let mut a = JsSwarm::spawn(boot, &topic, "server", &["echo"], &[]).await;
    let mut b = JsSwarm::spawn(boot, &topic, "client", &["echo"], &[]).await;
    a.until("connection").await;
    b.until("connection").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let js = (a.rss().unwrap_or(0) + b.rss().unwrap_or(0)) as f64 / 2.0;
    a.close().await;
    b.close().await;

    let topic: [u8; 32] = intercom_crypto::random_array();
    let spawn = |role: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_intercom"))
            .args(["swarm", "pipe", role, "--echo", "--timeout", "60"])
            .args(["--topic", &hex::encode(topic)])
            .args(["--dht-bootstrap", &node_list(boot)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn intercom swarm pipe")
    };
    let mut s = spawn("--server");
    let mut s_err = BufReader::new(s.stderr.take().unwrap()).lines();
    while let Ok(Some(l)) = s_err.next_line().await {
        if l.starts_with("joined") {
            break;
        }
    }
    let mut c = spawn("--client");
    let mut c_err = BufReader::new(c.stderr.take().unwrap()).lines();
    for lines in [&mut s_err, &mut c_err] {
        bounded("pipe connection", async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.starts_with("connected") {
                    break;
                }
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rust = (vm_rss_bytes(s.id().unwrap()).unwrap_or(0)
        + vm_rss_bytes(c.id().unwrap()).unwrap_or(0)) as f64
        / 2.0;
    (js / 1048576.0, rust / 1048576.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // A peer process is one thread, like a node process; the bench itself uses two.
    let peer = std::env::var_os(PEER_PROCESS).is_some();
    let runtime = if peer {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    if let Some(role) = std::env::var_os(UDP_PROCESS) {
        udp_process(&role.to_string_lossy());
    } else if peer {
        runtime.block_on(peer_process());
    } else {
        runtime.block_on(bench());
    }
}

async fn bench() {
    let testnet = JsDht::spawn(&["testnet", "32"]).await;
    let boot = testnet.bootstrap();
    let rows = vec![
        pair("JS ⇄ JS", &boot, true, true, false).await,
        pair("Rust ⇄ Rust", &boot, false, false, true).await,
        pair("Rust ⇄ Rust, one process", &boot, false, false, false).await,
        pair("JS client → Rust server", &boot, false, true, false).await,
        pair("Rust client → JS server", &boot, true, false, false).await,
    ];
    let (js_rss, rust_rss) = idle_rss(&boot).await;
    println!("idle peer VmRSS: JS {js_rss:.1} MiB, Rust {rust_rss:.1} MiB");
    let floor = udp_floor().await;

    let (js, rr) = (&rows[0], &rows[1]);
    let tput = rr.mb_per_s / js.mb_per_s;
    let lat = rr.p50 / js.p50;
    let mut s = String::new();
    s.push_str("## Swarm: connect time, throughput, latency and idle memory\n\n");
    s.push_str(
        "```sh\ncargo bench --bench swarm_bench          # SWARM_BENCH_MB=256 by default\n```\n\n",
    );
    s.push_str(&format!(
        "Peers on one topic of a 32-node JS testnet (`createTestnet(32)` of hyperdht 6.34.0) on\n\
         127.0.0.1; JS peers are `hyperswarm` 4.17.2 processes (`tests/node/swarm-peer.js`),\n\
         Rust peers are `intercom-swarm` swarms: the Rust ⇄ Rust pair runs as two child\n\
         processes on one-thread runtimes (like the two node processes of JS ⇄ JS), the\n\
         mixed pairs' Rust side in the bench process, and the \"one process\" row has both\n\
         Rust sides in the bench process (two runtime threads). Connect = from the\n\
         client's `join()` to its connection (the server joined before); throughput = {} MB\n\
         one way, client to server, timed by the receiver from its first byte to its last;\n\
         latency = {PINGS} round trips of a {PING_SIZE}-byte message. Machine: 2 cores (shared).\n\n",
        megabytes()
    ));
    s.push_str("| pair | connect (ms) | throughput (MB/s) | RTT p50 (ms) | RTT p99 (ms) |\n|---|---|---|---|---|\n");
    for r in &rows {
        s.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.3} | {:.3} |\n",
            r.name, r.connect_ms, r.mb_per_s, r.p50, r.p99
        ));
    }
    s.push_str(&format!(
        "\n| idle peer, one connection | VmRSS |\n|---|---|\n| JS (node + hyperswarm) | {js_rss:.1} MiB |\n| Rust (`intercom swarm pipe`) | {rust_rss:.1} MiB |\n\n"
    ));
    let pinned_ratios: Vec<f64> = js
        .pinned
        .iter()
        .zip(&rr.pinned)
        .map(|(j, r)| r.0 / j.0)
        .collect();
    if pinned_ratios.len() == PLACEMENTS.len() {
        s.push_str(
            "Ping-pong again with both processes of a pair pinned (`taskset`), RTT p50 / p99 in ms;\n\
             the first row is bare UDP between two pinned processes (blocking sockets), the floor\n\
             under any stack:\n\n| pinned | one core | two cores |\n|---|---|---|\n",
        );
        let cell = |v: &[(f64, f64)], i: usize| format!("{:.3} / {:.3}", v[i].0, v[i].1);
        for (label, v) in [
            ("bare UDP", &floor),
            ("JS ⇄ JS", &js.pinned),
            ("Rust ⇄ Rust", &rr.pinned),
        ] {
            s.push_str(&format!("| {label} | {} | {} |\n", cell(v, 0), cell(v, 1)));
        }
        s.push_str(&format!(
            "\nRust ⇄ Rust p50 / JS ⇄ JS p50 pinned: {:.2}× on one core, {:.2}× on two cores.\n\n",
            pinned_ratios[0], pinned_ratios[1]
        ));
    }
    s.push_str(&format!(
        "Targets: Rust ⇄ Rust throughput at least 2× JS ⇄ JS ({:.1}×, {}), Rust ⇄ Rust p50\n\
         latency at most half of JS ⇄ JS ({}).\n\n",
        tput,
        if tput >= 2.0 { "met" } else { "not met" },
        latency_verdict(lat, &pinned_ratios, &floor, &js.pinned),
    ));
    println!("{s}");
    docs::write_section("swarm_bench", &s);
    drop(testnet);
}
