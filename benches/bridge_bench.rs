//! SC-Bridge to SC-Bridge benchmark (issue 7) on 127.0.0.1: a four-node HyperDHT and
//! two `intercom run` peers (release binary) with rate limiting and proof of work off; an
//! agent on peer A sends on `0000intercom`, an agent on peer B receives.
//!
//! * latency: 1,000 sequential messages, each sent once the previous one arrived,
//!   p50 / p99 from A's `send` frame to B's `sidechannel_message`;
//! * burst: 10,000 messages sent back to back (without waiting for replies) to A's bridge, messages/s from the first
//!   send to the last arrival at B (every one must arrive, exactly once);
//! * idle memory: VmRSS of peer B with one connection and its bridge client, after 3 s;
//! * CPU time of both peers per message in the latency run, and per second when idle
//!   (what UDX busy polling costs shows here).
//!
//!   cargo bench --bench bridge_bench
//!
//! Targets: p50 under 2 ms, at least 20,000 messages/s, idle memory under 30 MB. The JS
//! Intercom cannot run here (it needs trac-peer and the settlement network), so there is
//! no side-by-side JS figure. Results go to the bridge section of docs/benchmarks.md.

#[path = "support/docs.rs"]
mod docs;
#[allow(dead_code)]
#[path = "support/peers.rs"]
mod peers;
#[path = "../tests/swarm_support/mod.rs"]
mod swarm_support;

use swarm_support::{process_cpu_time, vm_rss_bytes};

use std::time::{Duration, Instant};

use peers::{agent, bounded, next_message, peer, quantile, send_frame};

const LATENCY_MESSAGES: usize = 1000;
const BURST_MESSAGES: usize = 10_000;

/// Burst size (`BRIDGE_BENCH_BURST` overrides it, e.g. to profile a longer burst).
fn burst_messages() -> usize {
    std::env::var("BRIDGE_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BURST_MESSAGES)
}
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Removed when dropped, also when a step panics.
    let stores_dir = tempfile::Builder::new()
        .prefix("intercom-bridge-bench-")
        .tempdir()
        .expect("temporary stores directory");
    let stores = stores_dir.path().to_path_buf();
    let (dht, bootstrap) = peers::dht().await;
    let a = peer(&stores, "a", &bootstrap, &[]).await;
    let b = peer(&stores, "b", &bootstrap, &[]).await;
    let (bridge_a, bridge_b) = (a.bridge.clone(), b.bridge.clone());
    let (mut a_tx, a_rx) = agent(&bridge_a).await;
    let (_b_tx, mut b_rx) = agent(&bridge_b).await;

    // Wait for the connection: A's `sent` reports a peer; A's replies are drained from
    // here on, and B's warm-up copies are skipped below.
    peers::until_connected(&mut a_tx, a_rx).await;

    let peer_pids = [a.child.id(), b.child.id()];
    let peers_cpu = || -> Duration {
        peer_pids
            .iter()
            .flatten()
            .filter_map(|pid| process_cpu_time(*pid))
            .sum()
    };
    let mut lat = Vec::with_capacity(LATENCY_MESSAGES);
    let cpu_before = peers_cpu();
    bounded("latency run", async {
        for i in 0..LATENCY_MESSAGES {
            let text = format!("lat-{i}");
            let t = Instant::now();
            a_tx.send(send_frame(&text)).await.unwrap();
            while next_message(&mut b_rx).await != text {}
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    })
    .await;
    let latency_cpu_us = (peers_cpu() - cpu_before).as_secs_f64() * 1e6 / LATENCY_MESSAGES as f64;
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));

    let burst = burst_messages();
    println!(
        "burst of {burst} starts (peer pids: a {:?}, b {:?})",
        a.child.id(),
        b.child.id()
    );
    let (rate, duplicates, _a_tx) = peers::burst(a_tx, &mut b_rx, burst).await;
    let burst_secs = burst as f64 / rate;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = peers_cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu_ms = (peers_cpu() - cpu_before).as_secs_f64() * 1e3 / 2.0;
    let idle = b.child.id().and_then(vm_rss_bytes).unwrap_or(0) as f64 / 1_048_576.0;

    let ok = |b: bool| if b { "met" } else { "NOT met" };
    let section = format!(
        "## SC-Bridge to SC-Bridge through the sidechannel (issue 7)\n\n\
         `cargo bench --bench bridge_bench` on 127.0.0.1: a four-node HyperDHT and two\n\
         `intercom run` peers (release build), rate limiting and proof of work off; one agent\n\
         per bridge. No JS figure: the JS Intercom needs trac-peer and a settlement network.\n\n\
         | measure | result | target |\n| --- | --- | --- |\n\
         | latency, {LATENCY_MESSAGES} sequential messages | p50 {p50:.3} ms, p99 {p99:.3} ms | p50 < 2 ms: {} |\n\
         | burst of {burst} messages | {rate:.0} msg/s ({burst_secs:.2} s, {duplicates} duplicates) | >= 20,000 msg/s: {} |\n\
         | idle peer resident memory | {idle:.1} MiB | < 30 MB: {} |\n\n\
         CPU of both peers together: {latency_cpu_us:.0} us per message in the latency run;\n\
         {idle_cpu_ms:.1} ms per second when idle (one connection, DHT upkeep).\n\n",
        ok(p50 < 2.0),
        ok(rate >= 20_000.0),
        ok(idle * 1.048576 < 30.0),
    );
    println!("{section}");
    docs::write_section("bridge_bench", &section);
    for mut c in [a.child, b.child].into_iter().chain(dht) {
        let _ = c.kill().await;
    }
}
