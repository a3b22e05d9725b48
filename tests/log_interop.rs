//! Subnet logs against JS hypercore 11.37.1 + corestore over Hyperswarm, on a loopback
//! DHT of `intercom dht-node`s: a JS peer downloads and verifies a 10,000-entry Rust log
//! and a Rust peer a JS one, live appends cross within a second both ways, and a third
//! peer downloads from a Rust and a JS source at once, dropping the one that serves a
//! tampered block (its store was damaged on disk) and fetching that block from the other.

use std::path::Path;
use std::time::{Duration, Instant};

use intercom_stores::{Batch, Durability, KvStore, RocksStore};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::process::Command;

mod common;
mod sidechannel_support;

use common::NodePeer;
use sidechannel_support::{DhtNode, BIN};

const ENTRIES: usize = 10_000;

/// Entry `i` of the Rust test log (written with `intercom log append -`).
fn rust_entry(i: usize) -> String {
    format!("rust-entry-{i}-{}", "r".repeat(i % 13))
}

/// Entry `i` of a JS log of `size`-byte entries (tests/node/hypercore-peer.js `entry`).
fn js_entry(i: usize, size: usize) -> String {
    let head = format!("js-{i}:");
    let width = size.max(head.len());
    format!("{head:.<width$}")
}

fn sha256_of<I: IntoIterator<Item = String>>(entries: I) -> String {
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.as_bytes());
    }
    hex::encode(h.finalize())
}

fn intercom(dir: &Path, args: &[&str], interactive: bool) -> NodePeer {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("PEER_STORES_DIRECTORY");
    NodePeer::from_command(cmd, format!("intercom {}", args.join(" ")), interactive)
}

/// Creates log "log" in store `store` with the test entries.
async fn rust_log(dir: &Path, store: &str) -> Value {
    let input: String = (0..ENTRIES).map(|i| rust_entry(i) + "\n").collect();
    let mut child = std::process::Command::new(BIN)
        .args(["log", "append", "--store", store, "--name", "log", "-"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn intercom log append");
    // Feed stdin from a thread: the acknowledgements on stdout must be drained meanwhile.
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "log append failed");
    let last = String::from_utf8(out.stdout).unwrap();
    let last = last.lines().last().expect("append prints JSON lines");
    let v: Value = serde_json::from_str(last).expect("append prints JSON");
    assert_eq!(v["length"], ENTRIES as u64);
    v
}

/// `intercom log serve` of the "writer" store's log "log", once it reports serving.
async fn serve_writer(dir: &Path, boot: &str) -> NodePeer {
    let args = [
        "log",
        "serve",
        "--store",
        "writer",
        "--name",
        "log",
        "--dht-bootstrap",
        boot,
    ];
    let mut serve = intercom(dir, &args, false);
    serve.until(|v| v["event"] == "serving").await;
    serve
}

async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_downloads_a_rust_log_and_follows_live_appends() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let info = rust_log(dir.path(), "writer").await;
    let key = info["key"].as_str().unwrap().to_string();

    let mut serve = intercom(
        dir.path(),
        &[
            "log",
            "serve",
            "--store",
            "writer",
            "--name",
            "log",
            "--dht-bootstrap",
            &dht.addr,
            "--append-stdin",
        ],
        true,
    );
    let serving = serve.until(|v| v["event"] == "serving").await;
    assert_eq!(serving["key"], key.as_str());
    assert_eq!(serving["length"], ENTRIES as u64);

    let mut js = NodePeer::spawn_interactive("hypercore-peer.js", &[&dht.addr, "replicate", &key]);
    let done = js.until(|v| v["event"] == "replicated").await;
    assert_eq!(done["length"], ENTRIES as u64);
    assert_eq!(done["sha256"], sha256_of((0..ENTRIES).map(rust_entry)));
    eprintln!("JS downloaded {ENTRIES} Rust entries in {} ms", done["ms"]);

    for n in 1..=3u64 {
        let sent = Instant::now();
        serve.send_line(&format!("live-{n}")).await;
        serve.until(|v| v["event"] == "appended").await;
        let seen = within(
            "JS sees the live append",
            Duration::from_secs(1),
            js.until(|v| v["event"] == "length"),
        )
        .await;
        assert_eq!(seen["length"], ENTRIES as u64 + n);
        eprintln!("live append {n} reached JS in {:?}", sent.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_downloads_a_js_log_and_follows_live_appends() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let mut js = NodePeer::spawn_interactive(
        "hypercore-peer.js",
        &[&dht.addr, "serve", &ENTRIES.to_string(), "24"],
    );
    let serving = js.until(|v| v["event"] == "serving").await;
    let key = serving["key"].as_str().unwrap().to_string();

    let started = Instant::now();
    let mut rust = intercom(
        dir.path(),
        &[
            "log",
            "replicate",
            "--key",
            &key,
            "--store",
            "reader",
            "--dht-bootstrap",
            &dht.addr,
            "--follow",
        ],
        true,
    );
    let done = rust.until(|v| v["event"] == "replicated").await;
    assert_eq!(done["length"], ENTRIES as u64);
    assert_eq!(done["discoveryKey"], serving["discoveryKey"]);
    assert_eq!(
        done["sha256"],
        sha256_of((0..ENTRIES).map(|i| js_entry(i, 24)))
    );
    eprintln!(
        "Rust downloaded {ENTRIES} JS entries in {:?}",
        started.elapsed()
    );

    for n in 1..=3u64 {
        let sent = Instant::now();
        js.send_line(&format!("append live-{n}")).await;
        js.until(|v| v["event"] == "appended").await;
        let seen = within(
            "Rust sees the live append",
            Duration::from_secs(1),
            rust.until(|v| v["event"] == "length"),
        )
        .await;
        assert_eq!(seen["length"], ENTRIES as u64 + n);
        eprintln!("live append {n} reached Rust in {:?}", sent.elapsed());
    }
    rust.close_stdin();
    assert!(
        rust.wait().await,
        "replicate --follow exits 0 when stdin ends"
    );

    // What was downloaded is in the store, verified, and readable offline.
    let out = std::process::Command::new(BIN)
        .args(["log", "info", "--store", "reader", "--key", &key])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).expect("info JSON");
    assert_eq!(info["length"], ENTRIES as u64 + 3);
    assert_eq!(info["contiguousLength"], ENTRIES as u64 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_and_a_tampered_block() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let info = rust_log(dir.path(), "writer").await;
    let key = info["key"].as_str().unwrap().to_string();

    // A JS peer takes a full copy from the Rust writer.
    let serve = serve_writer(dir.path(), &dht.addr).await;
    let mut js = NodePeer::spawn_interactive("hypercore-peer.js", &[&dht.addr, "replicate", &key]);
    js.until(|v| v["event"] == "replicated").await;
    serve.kill().await;

    // Damage every hundredth block of the Rust writer's store on disk (so whichever
    // blocks the reader asks it for, some are bad), then serve it again.
    {
        let dk: [u8; 32] = hex::decode(info_field(dir.path(), "writer", "discoveryKey"))
            .unwrap()
            .try_into()
            .expect("32-byte discovery key");
        let kv = RocksStore::open(
            &dir.path().join("stores/writer/db/state"),
            Durability::Process,
        )
        .unwrap();
        let damaged: Vec<(Vec<u8>, Vec<u8>)> = (50..ENTRIES as u64)
            .step_by(100)
            .map(|block| {
                let k = intercom_log::block_key(&dk, block);
                let mut value = kv.get_blob(&k).unwrap().expect("block stored");
                value[0] ^= 0x20;
                (k, value)
            })
            .collect();
        let mut batch = Batch::default();
        for (k, value) in &damaged {
            batch.put_blob(k, value);
        }
        kv.write(batch, true).unwrap();
    }
    let _serve = serve_writer(dir.path(), &dht.addr).await;

    // A third peer downloads from both; every block verifies, the damaged ones come
    // from the JS peer, and the Rust source is dropped for serving a bad block.
    let mut reader = intercom(
        dir.path(),
        &[
            "log",
            "replicate",
            "--key",
            &key,
            "--dht-bootstrap",
            &dht.addr,
            "--min-peers",
            "2",
        ],
        false,
    );
    let done = reader.until(|v| v["event"] == "replicated").await;
    assert_eq!(done["length"], ENTRIES as u64);
    assert_eq!(done["sha256"], sha256_of((0..ENTRIES).map(rust_entry)));
    assert!(
        done["sources"].as_u64().unwrap() >= 2,
        "downloaded from both peers: {done}"
    );
    assert!(
        done["badPeers"].as_u64().unwrap() >= 1,
        "the tampering peer was dropped: {done}"
    );
    drop(js);
}

fn info_field(dir: &Path, store: &str, field: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["log", "info", "--store", store, "--name", "log"])
        .current_dir(dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("info JSON");
    v[field].as_str().unwrap().to_string()
}
