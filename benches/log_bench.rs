//! Subnet log benchmark: append and replication throughput of our logs next to JS
//! hypercore 11 + corestore, in one run, on 127.0.0.1.
//!
//!   cargo bench --bench log_bench                   (`-- --entries N` for replication)
//!
//! Append: a fresh log in a temporary directory, 5,000 single appends (each awaited),
//! then 5,000 in batches of 1,000; 100-byte and 4 KB entries; three trials, Rust and JS
//! alternating, and the median of each. Rust: `intercom_log::Log` on
//! the peer store's RocksDB with the default durability (an acknowledged append survives a
//! crash of the process, as JS hypercore's do), and again with every append fsynced
//! (`--peer-store-sync`, no JS counterpart); JS: tests/node/hypercore-append-bench.js.
//! Replication: one writer serves a log of 4 KB entries on a four-node loopback DHT and
//! one, then three readers join its discovery key and download and verify all of it:
//! `intercom log serve` / `intercom log replicate` processes for Rust,
//! tests/node/hypercore-peer.js for JS. A reader's time runs from its swarm join to its
//! last verified block (both sides count discovery and connection setup); with three
//! readers the slowest one counts and the throughput is the total delivered.
//! Figures are printed and written to the log section of docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/docs.rs"]
mod docs;
#[path = "../tests/sidechannel_support/mod.rs"]
mod sidechannel_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::NodePeer;
use intercom_crypto::KeyPair;
use intercom_log::Log;
use intercom_stores::{Durability, RocksStore};
use sidechannel_support::{DhtNode, BIN};

const APPENDS: usize = 5_000;
const ENTRY: usize = 4096;

/// Append measurements per entry size and kind; the tables show their medians.
const APPEND_TRIALS: usize = 3;

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Entries per second of `count` single appends, then of `count` in batches of 1,000.
fn rust_append(size: usize, count: usize, durability: Durability) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(RocksStore::open(dir.path(), durability).unwrap());
    let mut log = Log::open_writer(kv, KeyPair::from_seed(&[5; 32])).unwrap();
    let value = vec![0x61u8; size];
    let t = Instant::now();
    for _ in 0..count {
        log.append(&[&value]).unwrap();
    }
    let single = count as f64 / t.elapsed().as_secs_f64();
    let batch = vec![value.as_slice(); 1000];
    let t = Instant::now();
    for _ in 0..count.div_ceil(1000) {
        log.append(&batch).unwrap();
    }
    let batched = count as f64 / t.elapsed().as_secs_f64();
    (single, batched)
}

async fn js_append(size: usize, count: usize) -> (f64, f64) {
    let mut js = NodePeer::spawn(
        "hypercore-append-bench.js",
        &[&count.to_string(), &size.to_string()],
    );
    let v = js.next().await;
    (
        v["single"].as_f64().unwrap(),
        v["batched"].as_f64().unwrap(),
    )
}

fn intercom(dir: &Path, args: &[&str], interactive: bool) -> NodePeer {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("PEER_STORES_DIRECTORY");
    NodePeer::from_command(cmd, format!("intercom {}", args.join(" ")), interactive)
}

struct Replication {
    /// Seconds until the slowest reader was done.
    seconds: f64,
    bytes: f64,
    entries: f64,
}

/// Starts `readers` readers at once and waits for all; `spawn` starts one, returning
/// the peer whose "replicated" line carries `ms` and `length`.
async fn run_readers(
    readers: usize,
    mut spawn: impl FnMut() -> NodePeer,
    entries: usize,
) -> Replication {
    let mut peers: Vec<NodePeer> = (0..readers).map(|_| spawn()).collect();
    let mut slowest: f64 = 0.0;
    for p in &mut peers {
        let done = p.until(|v| v["event"] == "replicated").await;
        assert_eq!(done["length"], entries as u64, "{done}");
        slowest = slowest.max(done["ms"].as_f64().unwrap() / 1000.0);
    }
    Replication {
        seconds: slowest,
        bytes: (readers * entries * ENTRY) as f64,
        entries: (readers * entries) as f64,
    }
}

async fn rust_replication(dir: &Path, boot: &str, entries: usize) -> (Replication, Replication) {
    let store = "bench-writer";
    let line = "a".repeat(ENTRY - 1) + "\n";
    let input = line.repeat(entries);
    let mut child = std::process::Command::new(BIN)
        .args(["log", "append", "--store", store, "--name", "log", "-"])
        .current_dir(dir)
        .env_remove("PEER_STORES_DIRECTORY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from a thread: the acknowledgements on stdout must be drained meanwhile.
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    assert!(child.wait_with_output().unwrap().status.success());
    feeder.join().unwrap();
    let mut serve = intercom(
        dir,
        &[
            "log",
            "serve",
            "--store",
            store,
            "--name",
            "log",
            "--dht-bootstrap",
            boot,
        ],
        false,
    );
    let serving = serve.until(|v| v["event"] == "serving").await;
    let key = serving["key"].as_str().unwrap().to_string();
    let spawn = || {
        intercom(
            dir,
            &["log", "replicate", "--key", &key, "--dht-bootstrap", boot],
            false,
        )
    };
    let one = run_readers(1, spawn, entries).await;
    let three = run_readers(3, spawn, entries).await;
    serve.kill().await;
    (one, three)
}

async fn js_replication(boot: &str, entries: usize) -> (Replication, Replication) {
    let mut serve = NodePeer::spawn_interactive(
        "hypercore-peer.js",
        &[boot, "serve", &entries.to_string(), &ENTRY.to_string()],
    );
    let serving = serve.until(|v| v["event"] == "serving").await;
    let key = serving["key"].as_str().unwrap().to_string();
    let spawn = || NodePeer::spawn_interactive("hypercore-peer.js", &[boot, "replicate", &key]);
    let one = run_readers(1, spawn, entries).await;
    let three = run_readers(3, spawn, entries).await;
    (one, three)
}

fn mbps(r: &Replication) -> f64 {
    r.bytes / r.seconds / 1e6
}

fn eps(r: &Replication) -> f64 {
    r.entries / r.seconds
}

#[tokio::main]
async fn main() {
    let entries: usize = arg("--entries").map_or(10_000, |s| s.parse().expect("--entries N"));
    let mut rows = Vec::new();
    let mut synced_rows = Vec::new();
    let mut ratios = Vec::new();

    for size in [100usize, 4096] {
        // Trials alternate between the stacks, so a slow moment of the machine falls on
        // both alike; each figure is the median of its trials.
        let mut trials: [Vec<f64>; 6] = Default::default();
        for _ in 0..APPEND_TRIALS {
            let (rs, rb) = rust_append(size, APPENDS, Durability::Process);
            let (ss, sb) = rust_append(size, APPENDS, Durability::PowerLoss);
            let (js, jb) = js_append(size, APPENDS).await;
            for (t, v) in trials.iter_mut().zip([rs, rb, ss, sb, js, jb]) {
                t.push(v);
            }
        }
        let [rs, rb, ss, sb, js, jb] = trials.each_ref().map(|t| median(t));
        println!(
            "append {size} B trials, batched: Rust {:.0?} JS {:.0?}",
            trials[1], trials[5]
        );
        println!("append {size} B, every append fsynced: single {ss:.0}/s, batched {sb:.0}/s");
        synced_rows.push(format!(
            "| {size} B entries | {ss:.0} entries/s ({:.1}x JS) | {sb:.0} entries/s ({:.1}x JS) |",
            ss / js,
            sb / jb
        ));
        println!("append {size} B: single Rust {rs:.0}/s JS {js:.0}/s ({:.1}x); batched Rust {rb:.0}/s JS {jb:.0}/s ({:.1}x)", rs / js, rb / jb);
        rows.push(format!(
            "| append, {size} B entries, one at a time | {js:.0} entries/s | {rs:.0} entries/s | {:.1}x |",
            rs / js
        ));
        rows.push(format!(
            "| append, {size} B entries, batches of 1,000 | {jb:.0} entries/s | {rb:.0} entries/s | {:.1}x |",
            rb / jb
        ));
        ratios.push(rs / js);
        ratios.push(rb / jb);
    }

    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let (js_one, js_three) = js_replication(&dht.addr, entries).await;
    let (rust_one, rust_three) = rust_replication(dir.path(), &dht.addr, entries).await;
    for (label, js, rust) in [
        ("one reader", &js_one, &rust_one),
        ("three readers", &js_three, &rust_three),
    ] {
        println!(
            "replication to {label}: JS {:.1} MB/s ({:.0} entries/s, {:.2} s), Rust {:.1} MB/s ({:.0} entries/s, {:.2} s), {:.1}x",
            mbps(js), eps(js), js.seconds, mbps(rust), eps(rust), rust.seconds, mbps(rust) / mbps(js)
        );
        rows.push(format!(
            "| replication to {label} | {:.1} MB/s, {:.0} entries/s ({:.2} s) | {:.1} MB/s, {:.0} entries/s ({:.2} s) | {:.1}x |",
            mbps(js), eps(js), js.seconds, mbps(rust), eps(rust), rust.seconds, mbps(rust) / mbps(js)
        ));
        ratios.push(mbps(rust) / mbps(js));
    }

    let met = ratios.iter().all(|r| *r >= 3.0);
    let section = format!(
        "## Subnet logs: append and replication (issue 8)\n\n\
         ```sh\ncargo bench --bench log_bench          # {entries} entries of 4 KB for replication\n```\n\n\
         Append: a fresh log, {APPENDS} appends of each kind; the median of {APPEND_TRIALS} trials, Rust and\n\
         JS alternating. Both sides acknowledge an append\n\
         once it would survive a crash of the process (JS hypercore: rocksdb-native without\n\
         sync; ours: blocks of 1 KiB and more in the store's blob file, the rest in RocksDB's\n\
         write-ahead log, both synced to disk every 100 ms in the background).\n\
         Replication: `intercom log serve` /\n\
         `intercom log replicate` processes vs tests/node/hypercore-peer.js (hypercore\n\
         11.37.1, corestore 7.12.5, hyperswarm 4.17.2) on a four-node loopback DHT; time from\n\
         the reader's swarm join to its last verified block, the slowest of three readers.\n\
         Machine: 2 shared cores.\n\n\
         | measure | JS | Rust | Rust/JS |\n| --- | --- | --- | --- |\n{}\n\n\
         Target: Rust at least 3x JS on each: {} in this run.\n\n\
         With `--peer-store-sync` every acknowledged append is fsynced first (survives a power\n\
         cut; JS hypercore has no such mode):\n\n\
         | append, fsynced | one at a time | batches of 1,000 |\n| --- | --- | --- |\n{}\n\n",
        rows.join("\n"),
        if met { "met" } else { "NOT met" },
        synced_rows.join("\n")
    );
    docs::write_section("log_bench", &section);
}
