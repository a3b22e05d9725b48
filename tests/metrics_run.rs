//! Operator surfaces of `intercom run` on a loopback DHT: `--metrics-port` scraped after a
//! known exchange (N sidechannel messages, M of them dropped by the receiver's rate limit,
//! K subnet transactions) shows exactly those counts, parsed by a Prometheus text-format
//! parser; `--log-format json` writes one JSON object per stderr line, carrying the plane
//! and the peer; the bridge token appears in no log line, no stdout line and no metric.

mod sidechannel_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidechannel_support::{is_drop, is_message, DhtNode, Peer, Ws, BIN, STEP, TOKEN};

type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// A free loopback port (bound, then released for the peer to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` (or `path`) with a plain HTTP/1.1 request: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn scrape(port: u16) -> (String, Samples) {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads the exposition");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        if let prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) = s.value
        {
            out.insert((s.metric, labels), v);
        }
    }
    (body, out)
}

fn sample(m: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    m.get(&(name.to_owned(), l)).copied()
}

/// Polls `port`'s metrics until `name{labels}` equals `want` (60 s).
fn wait_sample(port: u16, name: &str, labels: &[(&str, &str)], want: f64) -> Samples {
    let deadline = Instant::now() + STEP;
    loop {
        let (_, m) = scrape(port);
        let got = sample(&m, name, labels);
        if got == Some(want) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {got:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

const ROOM: &str = "metrics-room";
const SUBNET: [&str; 2] = ["--subnet-channel", "metrics-e2e"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scraped_counts_match_a_known_exchange() {
    const N: usize = 20;
    const K: usize = 7;
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let (pa, pb) = (free_port(), free_port());
    let (pa_s, pb_s) = (pa.to_string(), pb.to_string());
    let a = Peer::start(
        dir.path(),
        "a",
        91,
        &dht.addr,
        &[
            &SUBNET[..],
            &[
                "--metrics-port",
                &pa_s,
                "--sc-bridge-cli",
                "1",
                "--sidechannel-welcome-required",
                "0",
            ],
        ]
        .concat(),
    );
    // B admits about two 1 KB messages from a connection, then drops for rate (1 B/s
    // refill, 3,000-byte burst) without ever blocking (strikes out of reach).
    let b = Peer::start(
        dir.path(),
        "b",
        92,
        &dht.addr,
        &[
            &SUBNET[..],
            &[
                "--subnet-bootstrap",
                &a.writer,
                "--metrics-port",
                &pb_s,
                "--sidechannel-welcome-required",
                "0",
                "--sidechannel-rate-bytes",
                "1",
                "--sidechannel-rate-burst",
                "3000",
                "--sidechannel-max-strikes",
                "1000000",
            ],
        ]
        .concat(),
    );
    let (mut wa, mut wb) = (a.ws().await, b.ws().await);
    wa.rendezvous(&mut wb).await;
    for w in [&mut wa, &mut wb] {
        let r = w.join(ROOM, None, None).await;
        assert_eq!(r["type"], "joined", "{r}");
    }
    // The room's channel is open once a send reaches B; those sends are small.
    let (tries, _) = wa
        .send_until_peers(ROOM, 1, |n| json!(format!("hi {n}")))
        .await;
    wb.wait_event("the hello", STEP, |e| is_message(e, ROOM))
        .await;
    let _ = tries;

    // N messages of ~1 KB as fast as the bridge takes them.
    for i in 0..N {
        let r = wa
            .send(ROOM, json!(format!("m{i} {}", "x".repeat(1000))))
            .await;
        assert_eq!(r["type"], "sent", "{r}");
        assert_eq!(r["peers"], 1, "{r}");
    }
    // Ground truth: B's bridge events for the N messages.
    let (mut delivered, mut dropped) = (0, 0);
    let deadline = Instant::now() + STEP;
    while delivered + dropped < N {
        let e = wb
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("B reports every message");
        if is_message(&e, ROOM) {
            delivered += 1;
        } else if is_drop(&e, ROOM, "rate_limited") {
            dropped += 1;
        }
    }
    assert!(dropped > 0 && delivered > 0, "{delivered} / {dropped}");

    // K subnet transactions through A's bridge (A is the bootstrap and the admin).
    let r = wa
        .req(json!({"type": "cli", "command": format!("/add_admin --address {}", a.pubkey)}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = wa
        .req(json!({"type": "subnet_op", "op": "enable_transactions"}))
        .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    let deadline = Instant::now() + STEP;
    loop {
        let v = wa.req(json!({"type": "subnet"})).await;
        if v["transactionsEnabled"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "transactions never enabled: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..K {
        let r = wa
            .req(
                json!({"type": "tx", "command": {"op": "put", "key": format!("k{i}"), "value": i}}),
            )
            .await;
        assert_ne!(r["type"], "error", "{r}");
    }

    let room = [("channel", ROOM)];
    let tx = [("type", "tx"), ("outcome", "applied")];
    let ma = wait_sample(pa, "intercom_subnet_ops_applied_total", &tx, K as f64);
    let mb = wait_sample(pb, "intercom_subnet_ops_applied_total", &tx, K as f64);
    // The hello that reached B, then the N.
    assert_eq!(
        sample(&ma, "intercom_sidechannel_messages_sent_total", &room),
        Some((N + 1) as f64)
    );
    assert_eq!(
        sample(&mb, "intercom_sidechannel_messages_received_total", &room),
        Some((delivered + 1) as f64)
    );
    assert_eq!(
        sample(&mb, "intercom_sidechannel_messages_dropped_total", &room),
        Some(dropped as f64)
    );
    assert_eq!(
        sample(
            &mb,
            "intercom_sidechannel_drops_total",
            &[("reason", "rate_limited")]
        ),
        Some(dropped as f64)
    );
    assert_eq!(
        sample(
            &ma,
            "intercom_bridge_commands_total",
            &[("type", "tx"), ("result", "ok")]
        ),
        Some(K as f64)
    );
    assert!(sample(&ma, "intercom_subnet_local_log_length", &[]).unwrap() >= K as f64);
    assert!(sample(&mb, "intercom_connections", &[]).unwrap() >= 1.0);
    assert_eq!(sample(&ma, "intercom_bridge_clients", &[]), Some(1.0));
    assert!(sample(&ma, "intercom_dht_routing_table_nodes", &[]).unwrap() >= 1.0);
    let rss = sample(&mb, "process_resident_memory_bytes", &[]).unwrap();
    assert!(rss > 0.0);
    let (body, _) = scrape(pa);
    assert!(!body.contains(TOKEN), "the token is not in the metrics");
    assert!(http_get(pa, "/").0.starts_with("HTTP/1.1 404"));
    eprintln!(
        "N={N}: B delivered {delivered}, dropped {dropped} for rate; K={K} transactions \
         applied on both; B's RSS {:.1} MB",
        rss / 1e6
    );
}

#[test]
fn json_logs_are_one_object_per_line_and_never_show_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let err_path = dir.path().join("a.err");
    let out_path = dir.path().join("a.out");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("SC_BRIDGE_TOKEN")
        .args(["--log-format", "json", "--log-level", "debug"])
        .args([
            "run",
            "--peer-store-name",
            "logs",
            "--dht-bootstrap",
            &dht.addr,
        ])
        .args([
            "--sc-bridge",
            "1",
            "--sc-bridge-token",
            TOKEN,
            "--sc-bridge-port",
            "0",
        ])
        .args(["--sidechannel-debug", "1", "--sc-bridge-debug", "1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for the banner, then authenticate once right and once wrong.
    let deadline = Instant::now() + STEP;
    let bridge = loop {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(line) = out.lines().find(|l| l.starts_with("SC-Bridge: ws://")) {
            if out.contains("Sidechannel: ready") {
                break line["SC-Bridge: ws://".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no banner: {out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ws = Ws::connect(&bridge).await;
        let r = ws.join("logs-room", None, None).await;
        assert_eq!(r["type"], "joined", "{r}");
        let _ = ws.send("logs-room", json!("hello")).await;
        let _ = ws.stats().await;
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(child.id(), pid);
    let _ = child.kill();
    let _ = child.wait();

    let err = std::fs::read_to_string(&err_path).unwrap();
    let out = std::fs::read_to_string(&out_path).unwrap();
    let mut planes = std::collections::BTreeSet::new();
    let mut lines = 0;
    for line in BufReader::new(err.as_bytes()).lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line:?}"));
        for field in ["ts", "level", "plane", "target", "msg"] {
            assert!(v.get(field).is_some(), "no {field}: {line}");
        }
        planes.insert(v["plane"].as_str().unwrap().to_owned());
        lines += 1;
    }
    assert!(lines > 0, "debug logging wrote nothing");
    let with_peer = err.lines().filter(|l| l.contains("\"peer\":\"")).count();
    assert!(with_peer > 0, "no line carries the peer key prefix");
    assert!(planes.contains("sidechannel"), "planes seen: {planes:?}");
    assert!(!err.contains(TOKEN), "the token is in the logs");
    assert!(!out.contains(TOKEN), "the token is on stdout");
    eprintln!("{lines} json lines, planes {planes:?}, {with_peer} with the peer prefix");
}
