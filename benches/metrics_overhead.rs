//! What the metrics endpoint costs (issue 21): the SC-Bridge burst of `bridge_bench` (two
//! `intercom run` peers, release build, a four-node loopback DHT, rate limiting and proof
//! of work off; 10,000 messages sent back to back to A's bridge, messages/s until the last
//! reaches B's agent) with and without `--metrics-port` on both peers, alternating, three
//! rounds each. With metrics on, both peers are scraped every 100 ms during the burst
//! (150 times the rate of a 15 s Prometheus scrape interval). Also: the idle RSS of B with
//! metrics on and off, and how long a scrape takes.
//!
//!   cargo bench --bench metrics_overhead
//!
//! Target: the burst rate with metrics on within 2% of the rate without; idle RSS under
//! 30 MB. Results go to the metrics section of docs/benchmarks.md.

#[path = "support/docs.rs"]
mod docs;
#[allow(dead_code)]
#[path = "support/peers.rs"]
mod peers;
#[path = "../tests/swarm_support/mod.rs"]
mod swarm_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use peers::{agent, next_json, peer, send_frame};
use swarm_support::vm_rss_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BURST: usize = 10_000;
/// Rounds of each mode (`METRICS_BENCH_ROUNDS` overrides).
const ROUNDS: usize = 5;
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `GET /metrics`: the body's length.
async fn scrape(port: u16) -> usize {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200 OK"));
    out.len()
}

struct Run {
    rate: f64,
    scrapes: u64,
    idle_rss_mib: f64,
    scrape_ms: f64,
}

/// One burst; `None` when the two peers did not find each other within 30 s (two swarms
/// that look the topic up at the same moment can miss each other until the next lookup).
async fn run(stores: &std::path::Path, bootstrap: &str, tag: &str, metrics: bool) -> Option<Run> {
    let (pa, pb) = (free_port().to_string(), free_port().to_string());
    let extra = |p: &str| -> Vec<String> {
        if metrics {
            vec!["--metrics-port".into(), p.to_owned()]
        } else {
            Vec::new()
        }
    };
    let (ea, eb) = (extra(&pa), extra(&pb));
    let ea: Vec<&str> = ea.iter().map(String::as_str).collect();
    let eb: Vec<&str> = eb.iter().map(String::as_str).collect();
    let a = peer(stores, &format!("a-{tag}"), bootstrap, &ea).await;
    let b = peer(stores, &format!("b-{tag}"), bootstrap, &eb).await;
    let (mut a_tx, mut a_rx) = agent(&a.bridge).await;
    let (_b_tx, mut b_rx) = agent(&b.bridge).await;
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
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
    if connected.is_err() {
        let mut children = [a.child, b.child];
        for c in &mut children {
            let _ = c.kill().await;
        }
        return None;
    }
    tokio::spawn(async move { while a_rx.next().await.is_some() {} });
    // Let the warm-up copies arrive before the burst.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = metrics.then(|| {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        let ports: Vec<u16> = [&pa, &pb].iter().map(|p| p.parse().unwrap()).collect();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for p in &ports {
                    scrape(*p).await;
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(SCRAPE_EVERY).await;
            }
        })
    });
    let (rate, _, _a_tx) = peers::burst(a_tx, &mut b_rx, BURST).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = scraper {
        let _ = s.await;
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss_mib = b.child.id().and_then(vm_rss_bytes).unwrap_or(0) as f64 / 1_048_576.0;
    let mut scrape_ms = 0.0;
    if metrics {
        let port: u16 = pb.parse().unwrap();
        let t = Instant::now();
        for _ in 0..20 {
            scrape(port).await;
        }
        scrape_ms = t.elapsed().as_secs_f64() * 1e3 / 20.0;
    }
    let mut children = [a.child, b.child];
    for c in &mut children {
        let _ = c.kill().await;
    }
    Some(Run {
        rate,
        scrapes: scrapes.load(Ordering::Relaxed),
        idle_rss_mib,
        scrape_ms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let stores_dir = tempfile::Builder::new()
        .prefix("intercom-metrics-bench-")
        .tempdir()
        .expect("temporary stores directory");
    let stores = stores_dir.path().to_path_buf();
    let (dht, bootstrap) = peers::dht().await;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let rounds: usize = std::env::var("METRICS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        for metrics in [false, true] {
            let mut attempt = 0;
            let r = loop {
                let tag = format!("{round}-{}-{attempt}", if metrics { "on" } else { "off" });
                match run(&stores, &bootstrap, &tag, metrics).await {
                    Some(r) => break r,
                    None if attempt < 3 => {
                        println!("round {round}: the peers did not meet; again with new ones");
                        attempt += 1;
                    }
                    None => panic!("round {round}: the peers never met"),
                }
            };
            println!(
                "round {round}, metrics {}: {:.0} msg/s, {} scrapes, idle RSS of B {:.1} MiB{}",
                if metrics { "on" } else { "off" },
                r.rate,
                r.scrapes,
                r.idle_rss_mib,
                if metrics {
                    format!(", {:.2} ms per scrape", r.scrape_ms)
                } else {
                    String::new()
                }
            );
            if metrics {
                on.push(r);
            } else {
                off.push(r);
            }
        }
    }
    let rate_off = median(off.iter().map(|r| r.rate).collect());
    let rate_on = median(on.iter().map(|r| r.rate).collect());
    let cost = (rate_off - rate_on) / rate_off * 100.0;
    let rss_off = median(off.iter().map(|r| r.idle_rss_mib).collect());
    let rss_on = median(on.iter().map(|r| r.idle_rss_mib).collect());
    let scrape_ms = median(on.iter().map(|r| r.scrape_ms).collect());
    let spread = |v: &[Run]| {
        let max = v.iter().map(|r| r.rate).fold(f64::MIN, f64::max);
        let min = v.iter().map(|r| r.rate).fold(f64::MAX, f64::min);
        (max / min - 1.0) * 100.0
    };
    let (spread_off, spread_on) = (spread(&off), spread(&on));
    let runs = |v: &[Run]| {
        v.iter()
            .map(|r| format!("{:.0}", r.rate))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let section = format!(
        "## Metrics endpoint overhead (issue 21)\n\n\
         `cargo bench --bench metrics_overhead`: the bridge burst of `bridge_bench` ({BURST} messages\n\
         from A's bridge to B's agent, release build, 127.0.0.1) with and without `--metrics-port` on\n\
         both peers, alternating, {rounds} rounds each; with metrics on, both peers are scraped every\n\
         {} ms during the burst. The status page does not exist yet, so it is not part of the run.\n\n\
         | measure | metrics off | metrics on |\n| --- | --- | --- |\n\
         | burst, median msg/s | {rate_off:.0} ({}) | {rate_on:.0} ({}) |\n\
         | idle RSS of B, median | {rss_off:.1} MiB | {rss_on:.1} MiB |\n\
         | one scrape of B (after the burst) | | {scrape_ms:.2} ms |\n\n\
         Difference of the medians: {cost:.1}% of the burst rate (target < 2%: {}); spread of the\n\
         runs: off {spread_off:.0}%, on {spread_on:.0}% (max/min - 1) on 2 cores shared with other\n\
         builds, so a difference smaller than the spread is not resolved by this run. Idle RSS\n\
         with metrics on < 30 MB: {} (the peer without metrics is over it too).\n\n",
        SCRAPE_EVERY.as_millis(),
        runs(&off),
        runs(&on),
        if cost < 2.0 { "met" } else { "NOT met" },
        if rss_on * 1.048576 < 30.0 { "met" } else { "NOT met" },
    );
    println!("{section}");
    docs::write_section("metrics_overhead", &section);
    for mut c in dht {
        let _ = c.kill().await;
    }
}
