//! DHT benchmark on 127.0.0.1: lookup latency of a JS client and a Rust client against the
//! same 32-node JS testnet (tests/node/dht-peer.js), side by side, and the resident memory
//! of an idle Rust node (`intercom dht-node`) next to an idle JS HyperDHT node, both
//! members of that network.
//!
//!   cargo bench --bench dht_lookup                 (200 lookups each; `-- --lookups N`)
//!
//! Each client runs in its own process (the JS client apart from the testnet's process)
//! and looks up the same 20 announced topics in turn; a lookup's latency is the time
//! until its query has ended. The figures are printed and written to the DHT section of
//! docs/benchmarks.md (other sections are kept).

#[path = "../tests/dht_support/mod.rs"]
mod dht_support;

use std::time::{Duration, Instant};

use dht_support::{node_list, rust_lookup, rust_node, vm_rss_kib, CliNode, JsDht};
use intercom_crypto::random_array;
use serde_json::json;

const TOPICS: usize = 20;
const WARMUP: usize = 20;
const START: &str = "<!-- dht_lookup:start -->";
const END: &str = "<!-- dht_lookup:end -->";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The q-quantile (nearest rank) of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
    found: usize,
    n: usize,
}

fn summarize(mut ms: Vec<f64>, found: usize) -> Latency {
    ms.sort_by(f64::total_cmp);
    Latency {
        p50: quantile(&ms, 0.50),
        p99: quantile(&ms, 0.99),
        mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        found,
        n: ms.len(),
    }
}

async fn rust_lookups(
    node: &intercom_hyperdht::HyperDht,
    topics: &[[u8; 32]],
    n: usize,
) -> (Vec<f64>, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut found = 0;
    for i in 0..n {
        let t = Instant::now();
        let keys = rust_lookup(node, &topics[i % topics.len()]).await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        found += usize::from(!keys.is_empty());
    }
    (ms, found)
}

async fn js_lookups(js: &JsDht, topics: &[String], n: usize) -> (Vec<f64>, usize) {
    let v = js
        .call(json!({ "op": "lookupTimed", "topics": topics, "count": n }))
        .await;
    let ms = v["latencies"]
        .as_array()
        .expect("latencies")
        .iter()
        .map(|x| x.as_f64().expect("ms"))
        .collect();
    (ms, v["found"].as_u64().unwrap_or(0) as usize)
}

fn write_docs(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let block = format!("{START}\n{section}{END}\n");
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{block}{}",
            &old[..a],
            &old[b + END.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n\n{block}", old.trim_end()),
    };
    if let Err(e) = std::fs::write(&path, new) {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        println!("wrote the DHT section of {}", path.display());
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lookups: usize = arg("--lookups").and_then(|s| s.parse().ok()).unwrap_or(200);
    let started = Instant::now();

    // The network: 32 JS nodes, plus the two idle nodes whose memory we measure.
    let testnet = JsDht::spawn(&["testnet", "32"]).await;
    let bootstrap = testnet.bootstrap();
    let boot = node_list(&bootstrap);
    let rust_idle = CliNode::spawn(&["--host", "127.0.0.1", "--bootstrap", &boot]).await;
    let js_idle = JsDht::spawn(&["node", &boot]).await;
    assert_eq!(rust_idle.ready["persistent"], true, "{}", rust_idle.ready);

    // 20 topics, each announced by a JS peer.
    let topics: Vec<[u8; 32]> = (0..TOPICS).map(|_| random_array()).collect();
    for t in &topics {
        testnet.announce(t, &random_array()).await;
    }
    let topic_hex: Vec<String> = topics.iter().map(hex::encode).collect();

    // The two clients, each in its own process.
    let js_client = JsDht::spawn(&["client", &boot]).await;
    let rust_client = rust_node(&bootstrap, false).await;

    js_lookups(&js_client, &topic_hex, WARMUP).await;
    rust_lookups(&rust_client, &topics, WARMUP).await;
    let (js_ms, js_found) = js_lookups(&js_client, &topic_hex, lookups).await;
    let (rs_ms, rs_found) = rust_lookups(&rust_client, &topics, lookups).await;
    let js = summarize(js_ms, js_found);
    let rs = summarize(rs_ms, rs_found);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rust_kib = vm_rss_kib(rust_idle.pid()).unwrap_or(0);
    let js_kib = vm_rss_kib(js_idle.pid()).unwrap_or(0);

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!("dht_lookup: 32-node JS testnet on 127.0.0.1, {TOPICS} announced topics, {lookups} lookups per client");
    println!("client  p50 ms   p99 ms   mean ms  found");
    for (name, l) in [("JS", &js), ("Rust", &rs)] {
        println!(
            "{name:<6} {:>7.2} {:>8.2} {:>9.2}  {}/{}",
            l.p50, l.p99, l.mean, l.found, l.n
        );
    }
    println!(
        "p50 ratio JS/Rust {:.2}, p99 ratio {:.2}",
        js.p50 / rs.p50,
        js.p99 / rs.p99
    );
    println!(
        "idle node VmRSS: Rust {:.1} MiB, JS {:.1} MiB (Rust = 1/{:.1} of JS)",
        rust_kib as f64 / 1024.0,
        js_kib as f64 / 1024.0,
        js_kib as f64 / rust_kib.max(1) as f64
    );
    let lookups_ok = rs.p50 <= js.p50 && rs.p99 <= js.p99;
    let memory_ok = rust_kib * 5 <= js_kib;
    println!(
        "targets: Rust lookups no slower than JS: {}; Rust memory <= 1/5 of JS: {}",
        if lookups_ok { "met" } else { "NOT met" },
        if memory_ok { "met" } else { "NOT met" }
    );

    let section = format!(
        "## DHT: lookup latency and idle node memory\n\n\
         ```sh\ncargo bench --bench dht_lookup            # {lookups} lookups per client\n```\n\n\
         A 32-node JS testnet (`createTestnet(32)` of hyperdht 6.34.0) on 127.0.0.1 with {TOPICS}\n\
         topics announced by JS peers. A JS client (own node process) and a Rust client\n\
         (`intercom-hyperdht`, in the bench process) each run {WARMUP} warm-up lookups, then\n\
         {lookups} sequential lookups cycling through the topics; latency = until the query ended.\n\
         Memory is VmRSS of an idle `intercom dht-node` and of an idle JS HyperDHT node\n\
         (one `new HyperDHT()` per node process), both persistent members of the network,\n\
         measured after the lookups. Machine: {cpu}, {cores} cores (shared).\n\n\
         | client | p50 (ms) | p99 (ms) | mean (ms) | lookups that found peers |\n\
         |---|---|---|---|---|\n\
         | JS (hyperdht) | {:.2} | {:.2} | {:.2} | {}/{} |\n\
         | Rust (intercom) | {:.2} | {:.2} | {:.2} | {}/{} |\n\n\
         | idle node | VmRSS |\n\
         |---|---|\n\
         | JS (node + hyperdht) | {:.1} MiB |\n\
         | Rust (`intercom dht-node`) | {:.1} MiB (1/{:.1} of JS) |\n\n\
         Targets: Rust lookups no slower than JS ({}), Rust node memory at most one fifth of\n\
         JS ({}).\n\n",
        js.p50, js.p99, js.mean, js.found, js.n,
        rs.p50, rs.p99, rs.mean, rs.found, rs.n,
        js_kib as f64 / 1024.0,
        rust_kib as f64 / 1024.0,
        js_kib as f64 / rust_kib.max(1) as f64,
        if lookups_ok { "met" } else { "not met" },
        if memory_ok { "met" } else { "not met" },
    );
    write_docs(&section);
    println!("total {:?}", started.elapsed());
    rust_client.destroy().await;
}
