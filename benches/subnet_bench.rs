//! Subnet benchmark (the subnet issue's done-when 6), release binaries on 127.0.0.1: a
//! four-node DHT, an admin (the bootstrap: sequencer and only indexer), three writers and
//! a reader, all `intercom run`.
//!
//! * throughput: transactions pipelined into the writers' bridges (1 writer, then 3
//!   writers at once) until the reader's `subnet_applied` events show every one applied;
//!   transactions per second from the first send to the last application on the reader;
//! * apply latency: per transaction, from its `tx` frame to the reader's `subnet_applied`
//!   event, p50 / p99, under that load and paced (one transaction every 5 ms);
//! * rebuild: 100,000 transactions in a bootstrap writer log (in-process, RocksDB in a
//!   temporary directory), re-applied from scratch as `intercom subnet rebuild` does;
//! * scale: the writers stop; puts of fresh keys from the admin alone (two processes, a core
//!   each); applied tx/s on the reader measured with
//!   the state at about 0, 100,000 and 1,000,000 keys, the peers' RSS at 1,000,000, and
//!   the time to get a proof of one key from the reader's bridge and check it.
//!
//!   cargo bench --bench subnet_bench
//!
//! `SUBNET_BENCH_SCALE=0` skips the scale runs, `SUBNET_BENCH_SCALE_POINTS=0,100000` picks
//! the state sizes, `SUBNET_BENCH_SCALE_ONLY=1` runs them alone (nothing written to the
//! docs), `SUBNET_BENCH_PROGRESS=1` prints every peer's lengths each second.
//!
//! Targets: at least 10,000 tx/s applied, p50 under 50 ms; at 1,000,000 keys at least 80%
//! of the small-state rate and 10,000 tx/s, RSS under 150 MB, a proof under 1 ms. The JS subnet (trac-peer's
//! Autobase) cannot run here (it needs the settlement network), so there is no
//! side-by-side JS figure. Results go to the subnet section of docs/benchmarks.md.

#[path = "support/docs.rs"]
mod docs;
#[allow(dead_code)]
#[path = "support/peers.rs"]
mod peers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use intercom_contracts::builtin::BuiltinContract;
use intercom_crypto::KeyPair;
use intercom_subnet::entry::bind_message;
use intercom_subnet::{Body, Entry, Membership};
use peers::{agent, bounded, next_json, peer, quantile, BenchPeer, Rx, Tx};
use serde_json::{json, Value};

const CHANNEL: &str = "bench-subnet";
const THROUGHPUT_TXS: usize = 30_000;
const PACED_TXS: usize = 1_000;
const SUSTAINED_TXS: usize = 24_000;
const REBUILD_OPS: u64 = 100_000;
/// Transactions per measured scale run (fresh keys, 3 writers).
const SCALE_TXS: usize = 30_000;
/// State sizes (keys) the scale runs are measured at.
const SCALE_POINTS: [usize; 3] = [0, 100_000, 1_000_000];

/// (writer key, writer-log entry, index in the entry) → when the reader saw it applied.
type Applied = HashMap<(String, u64, u64), Instant>;

async fn request(tx: &mut Tx, rx: &mut Rx, v: Value) -> Value {
    tx.send(Message::text(v.to_string())).await.unwrap();
    loop {
        let r = next_json(rx).await;
        if r.get("id") == v.get("id") {
            return r;
        }
    }
}

async fn subnet_info(tx: &mut Tx, rx: &mut Rx) -> Value {
    request(tx, rx, json!({"type": "subnet", "id": 1})).await
}

async fn wait_for(tx: &mut Tx, rx: &mut Rx, what: &str, done: impl Fn(&Value) -> bool) {
    bounded(what, async {
        loop {
            if done(&subnet_info(tx, rx).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Which keys a load's `put`s write.
#[derive(Clone, Copy)]
enum Keys {
    /// 512 keys per writer, overwritten.
    Reused,
    /// A fresh key per transaction, numbered from this offset.
    Fresh(usize),
}

/// Sends `n` transactions through one writer's bridge as fast as the bridge takes them,
/// or `pace.1` every `pace.0`; returns (send instant, (entry, index)) per transaction.
async fn load(
    bridge: String,
    tag: usize,
    n: usize,
    pace: Option<(Duration, usize)>,
    keys: Keys,
) -> Vec<(Instant, (u64, u64))> {
    let (mut tx, mut rx) = agent(&bridge).await;
    let replies = tokio::spawn(async move {
        let mut seqs = vec![None; n];
        for _ in 0..n {
            let r = next_json(&mut rx).await;
            assert_eq!(r["type"], "tx_result", "tx refused: {r}");
            let id = r["id"].as_u64().unwrap() as usize;
            seqs[id] = Some((r["seq"].as_u64().unwrap(), r["index"].as_u64().unwrap()));
        }
        seqs
    });
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let key = match keys {
            Keys::Reused => format!("w{tag}-{}", i % 512),
            Keys::Fresh(from) => format!("s{tag}-{}", from + i),
        };
        let frame =
            json!({"type": "tx", "id": i, "command": {"op": "put", "key": key, "value": i}});
        sent.push(Instant::now());
        tx.send(Message::text(frame.to_string())).await.unwrap();
        if let Some((every, burst)) = pace {
            if (i + 1) % burst == 0 {
                tokio::time::sleep(every).await;
            }
        }
    }
    let seqs = replies.await.unwrap();
    sent.into_iter()
        .zip(seqs)
        .map(|(t, s)| (t, s.expect("a reply per transaction")))
        .collect()
}

/// Reads the reader's `subnet_applied` events into `applied` until `want` transactions of
/// the given writers have been seen.
async fn collect(rx: &mut Rx, applied: &mut Applied, writers: &[String], want: usize) {
    let mut seen = 0;
    bounded("applications on the reader", async {
        while seen < want {
            let e = next_json(rx).await;
            if e["type"] == "subnet_lagged" {
                panic!("the reader's event stream lagged: {e}");
            }
            if e["type"] != "subnet_applied" {
                continue;
            }
            let writer = e["writer"].as_str().unwrap().to_owned();
            if !writers.contains(&writer) {
                continue;
            }
            let seq = e["seq"].as_u64().unwrap();
            for op in e["ops"].as_array().into_iter().flatten() {
                if op["op"] == "tx" {
                    assert_eq!(op["outcome"], "applied", "{e}");
                    let index = op["index"].as_u64().unwrap();
                    applied.insert((writer.clone(), seq, index), Instant::now());
                    seen += 1;
                }
            }
        }
    })
    .await
}

/// Prints, every second, each writer's view: its log lengths and confirmed length
/// (`SUBNET_BENCH_PROGRESS=1`, to see where a run queues up).
async fn progress(bridges: Vec<String>) {
    let mut agents = Vec::new();
    for b in &bridges {
        agents.push(agent(b).await);
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, (tx, rx)) in agents.iter_mut().enumerate() {
            let v = subnet_info(tx, rx).await;
            let logs: Vec<u64> = v["logs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| l["length"].as_u64().unwrap_or(0))
                .collect();
            eprintln!(
                "{:>5.1}s peer {i}: logs {logs:?} confirmed {} unconfirmed {} waiting {} held {}",
                started.elapsed().as_secs_f64(),
                v["confirmedLength"],
                v["unconfirmedLength"],
                v["waiting"],
                v["heldOperations"]
            );
        }
    }
}

struct Run {
    tps: f64,
    p50: f64,
    p99: f64,
}

/// One measured run: `per_writer` transactions from each of `writers` at once.
async fn run(
    writers: &[&BenchPeer],
    reader_rx: &mut Rx,
    per_writer: usize,
    pace: Option<(Duration, usize)>,
    key_kind: Keys,
) -> Run {
    let keys: Vec<String> = writers.iter().map(|w| w.writer.clone()).collect();
    let started = Instant::now();
    let loads: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(i, w)| tokio::spawn(load(w.bridge.clone(), i, per_writer, pace, key_kind)))
        .collect();
    let monitor = std::env::var("SUBNET_BENCH_PROGRESS").is_ok().then(|| {
        let mut bridges: Vec<String> = writers.iter().map(|w| w.bridge.clone()).collect();
        bridges.extend(std::env::var("SUBNET_BENCH_PROGRESS_EXTRA").ok());
        tokio::spawn(progress(bridges))
    });
    let mut applied = Applied::new();
    collect(reader_rx, &mut applied, &keys, per_writer * writers.len()).await;
    if let Some(m) = monitor {
        m.abort();
    }
    let last = applied.values().max().copied().unwrap_or(started);
    let mut lat = Vec::new();
    for (load, key) in loads.into_iter().zip(&keys) {
        for (sent, (seq, index)) in load.await.unwrap() {
            let at = applied
                .get(&(key.clone(), seq, index))
                .expect("every transaction applied");
            lat.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(f64::total_cmp);
    Run {
        tps: lat.len() as f64 / last.duration_since(started).as_secs_f64(),
        p50: quantile(&lat, 0.5),
        p99: quantile(&lat, 0.99),
    }
}

/// 100,000 transactions in a bootstrap log, `per_entry` to an entry, then a rebuild from
/// scratch: (seconds, entries in the order).
fn rebuild_time(dir: &std::path::Path, per_entry: usize) -> (f64, u64) {
    let kv: Arc<dyn intercom_stores::KvStore> = Arc::new(
        intercom_stores::RocksStore::open(
            &dir.join(format!("rebuild-{per_entry}")),
            intercom_stores::Durability::Process,
        )
        .expect("rocksdb"),
    );
    let identity = KeyPair::from_seed(&[7; 32]);
    let writer = KeyPair::from_seed(&[8; 32]);
    let mut log = intercom_log::Log::open_writer(kv.clone(), writer).unwrap();
    let log_key = *log.key();
    let setup = Entry {
        timestamp: 1,
        heads: vec![],
        bodies: vec![
            Body::Bind {
                author: identity.public_key,
                signature: identity.sign(&bind_message(CHANNEL, &log_key)),
            },
            Body::Membership(Membership::AddAdmin(identity.public_key)),
            Body::Membership(Membership::EnableTransactions),
        ],
    };
    log.append(&[setup.encode()]).unwrap();
    let ops: Vec<Body> = (0..REBUILD_OPS)
        .map(|n| {
            Body::Transaction(
                json!({"type": "put", "value": {"key": format!("k{}", n % 4096), "value": n}}),
            )
        })
        .collect();
    for chunk in ops.chunks(10_000) {
        let blocks: Vec<Vec<u8>> = chunk
            .chunks(per_entry)
            .map(|bodies| {
                Entry {
                    timestamp: 1,
                    heads: vec![],
                    bodies: bodies.to_vec(),
                }
                .encode()
            })
            .collect();
        log.append(&blocks).unwrap();
    }
    drop(log);
    let config = intercom_subnet::EngineConfig {
        channel: CHANNEL.into(),
        bootstrap: log_key,
        contract: Arc::new(BuiltinContract),
        max_writers: 16,
    };
    let started = Instant::now();
    let engine = intercom_subnet::service::rebuild(kv, config).unwrap();
    let secs = started.elapsed().as_secs_f64();
    (secs, engine.linearizer().confirmed_len())
}

struct Scale {
    /// (keys in the state when measured, the run).
    points: Vec<(usize, Run)>,
    /// (peer, MB) at the largest state.
    rss: Vec<(String, f64)>,
    proof_p50: f64,
    proof_p99: f64,
    check_p50: f64,
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The scale runs: the other writers stop, the admin (the bootstrap) raises the quota and
/// writes fresh keys alone, so the two remaining peers (admin and reader) have a core each
/// and the figures show what the state's size costs a reader rather than how five peers
/// share two cores.
async fn scale(
    admin: &BenchPeer,
    writers: &mut [BenchPeer],
    reader: &BenchPeer,
    (a_tx, a_rx): (&mut Tx, &mut Rx),
    (r_tx, r_rx): (&mut Tx, &mut Rx),
) -> Scale {
    let r = request(
        a_tx,
        a_rx,
        json!({"type": "subnet_op", "op": "set_quota", "keys": "10000000", "bytes": "10000000000", "id": 300}),
    )
    .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    for w in writers.iter_mut() {
        let _ = w.child.kill().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pids = vec![
        ("admin".to_owned(), admin.child.id().unwrap_or(0)),
        ("reader".to_owned(), reader.child.id().unwrap_or(0)),
    ];
    std::env::set_var("SUBNET_BENCH_PROGRESS_EXTRA", &reader.bridge);
    scale_runs(&[admin], r_tx, r_rx, &pids).await
}

/// Fills the state with fresh keys from every writer and measures a run at each of
/// [`SCALE_POINTS`]; then the peers' RSS and proofs at the largest state.
async fn scale_runs(
    writers: &[&BenchPeer],
    r_tx: &mut Tx,
    r_rx: &mut Rx,
    pids: &[(String, u32)],
) -> Scale {
    let per_writer = SCALE_TXS / writers.len();
    let mut written = 0usize; // fresh keys per writer so far
    let mut points = Vec::new();
    let sizes: Vec<usize> = std::env::var("SUBNET_BENCH_SCALE_POINTS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_else(|| SCALE_POINTS.to_vec());
    for target in sizes {
        // Fill (unmeasured) up to the target, in runs of 60,000 (a put writes two keys).
        let per_writer_target = target.div_ceil(2 * writers.len());
        while written < per_writer_target {
            let chunk = (per_writer_target - written).min(20_000);
            run(writers, r_rx, chunk, None, Keys::Fresh(written)).await;
            written += chunk;
            eprintln!("scale: {} keys", written * writers.len() * 2);
        }
        let measured = run(writers, r_rx, per_writer, None, Keys::Fresh(written)).await;
        written += per_writer;
        println!(
            "scale: {target} keys in the state: {:.0} tx/s applied, p50 {:.1} ms p99 {:.1} ms",
            measured.tps, measured.p50, measured.p99
        );
        points.push((target, measured));
    }
    let rss: Vec<(String, f64)> = pids
        .iter()
        .map(|(n, pid)| (n.clone(), rss_mb(*pid)))
        .collect();
    println!("scale: RSS {rss:?}");
    let mut produce = Vec::new();
    let mut check = Vec::new();
    for i in 0..200usize {
        let key = format!("kv/s{}-{}", i % writers.len(), (i * 7919) % written);
        let t = Instant::now();
        let v = request(
            r_tx,
            r_rx,
            json!({"type": "get", "key": key, "proof": true, "id": 10_000 + i}),
        )
        .await;
        produce.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        intercom_subnet::state::verify_proof_json(&v, None).expect("the proof checks");
        check.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(v["value"].is_number(), "{v}");
    }
    produce.sort_by(f64::total_cmp);
    check.sort_by(f64::total_cmp);
    println!(
        "scale: proof from the bridge p50 {:.3} ms p99 {:.3} ms, check p50 {:.3} ms",
        quantile(&produce, 0.5),
        quantile(&produce, 0.99),
        quantile(&check, 0.5)
    );
    Scale {
        points,
        rss,
        proof_p50: quantile(&produce, 0.5),
        proof_p99: quantile(&produce, 0.99),
        check_p50: quantile(&check, 0.5),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let stores = std::env::temp_dir().join(format!("intercom-subnet-bench-{}", std::process::id()));
    let (dht, bootstrap) = peers::dht().await;
    let subnet = ["--subnet-channel", CHANNEL];
    let admin = peer(&stores, "admin", &bootstrap, &subnet).await;
    let joiner = [
        "--subnet-channel",
        CHANNEL,
        "--subnet-bootstrap",
        &admin.writer,
    ];
    let mut writers = Vec::new();
    for i in 0..3 {
        writers.push(peer(&stores, &format!("w{i}"), &bootstrap, &joiner).await);
    }
    let reader = peer(&stores, "reader", &bootstrap, &joiner).await;

    let (mut a_tx, mut a_rx) = agent(&admin.bridge).await;
    let mut ops = vec![
        json!({"type": "subnet_op", "op": "add_admin", "address": admin.pubkey}),
        json!({"type": "subnet_op", "op": "enable_transactions"}),
    ];
    ops.extend(
        writers
            .iter()
            .map(|w| json!({"type": "subnet_op", "op": "add_writer", "key": w.writer})),
    );
    for (i, mut op) in ops.into_iter().enumerate() {
        op["id"] = json!(100 + i);
        let r = request(&mut a_tx, &mut a_rx, op).await;
        assert_eq!(r["type"], "subnet_op_result", "{r}");
    }
    for w in &writers {
        let (mut tx, mut rx) = agent(&w.bridge).await;
        wait_for(&mut tx, &mut rx, "writer admission", |v| {
            v["isWriter"] == true && v["transactionsEnabled"] == true
        })
        .await;
    }
    let (mut r_tx, mut r_rx) = agent(&reader.bridge).await;
    wait_for(&mut r_tx, &mut r_rx, "reader sync", |v| {
        v["writers"].as_array().map(Vec::len) == Some(4)
    })
    .await;
    let sub = request(
        &mut r_tx,
        &mut r_rx,
        json!({"type": "subscribe", "subnet": true, "id": 2}),
    )
    .await;
    assert_eq!(sub["subnet"], true, "{sub}");

    let all: Vec<&BenchPeer> = writers.iter().collect();
    if std::env::var("SUBNET_BENCH_SCALE_ONLY").is_ok() {
        // For working on the scale runs: those alone, nothing written to the docs.
        drop(all);
        scale(
            &admin,
            &mut writers,
            &reader,
            (&mut a_tx, &mut a_rx),
            (&mut r_tx, &mut r_rx),
        )
        .await;
        return;
    }
    let one = run(&all[..1], &mut r_rx, THROUGHPUT_TXS, None, Keys::Reused).await;
    println!(
        "1 writer: {:.0} tx/s applied on the reader, latency p50 {:.1} ms p99 {:.1} ms",
        one.tps, one.p50, one.p99
    );
    let three = run(&all, &mut r_rx, THROUGHPUT_TXS / 3, None, Keys::Reused).await;
    println!(
        "3 writers: {:.0} tx/s applied on the reader, latency p50 {:.1} ms p99 {:.1} ms",
        three.tps, three.p50, three.p99
    );
    let paced = run(
        &all[..1],
        &mut r_rx,
        PACED_TXS,
        Some((Duration::from_millis(5), 1)),
        Keys::Reused,
    )
    .await;
    println!(
        "paced (1 tx / 5 ms): latency p50 {:.1} ms p99 {:.1} ms",
        paced.p50, paced.p99
    );
    // Below capacity: 3 writers, each sending 8 transactions every 3 ms.
    let sustained = run(
        &all,
        &mut r_rx,
        SUSTAINED_TXS / 3,
        Some((Duration::from_millis(3), 8)),
        Keys::Reused,
    )
    .await;
    println!(
        "paced 8 txs / 3 ms per writer (3 writers): {:.0} tx/s, latency p50 {:.1} ms p99 {:.1} ms",
        sustained.tps, sustained.p50, sustained.p99
    );

    drop(all);
    let scale = if std::env::var("SUBNET_BENCH_SCALE").as_deref() == Ok("0") {
        None
    } else {
        Some(
            scale(
                &admin,
                &mut writers,
                &reader,
                (&mut a_tx, &mut a_rx),
                (&mut r_tx, &mut r_rx),
            )
            .await,
        )
    };

    for mut c in [admin.child, reader.child]
        .into_iter()
        .chain(writers.into_iter().map(|w| w.child))
        .chain(dht)
    {
        let _ = c.kill().await;
    }
    let mut rebuilds = Vec::new();
    for per_entry in [1, 1000] {
        let stores = stores.clone();
        let (secs, entries) = tokio::task::spawn_blocking(move || rebuild_time(&stores, per_entry))
            .await
            .unwrap();
        println!(
            "rebuild: {REBUILD_OPS} transactions in {entries} entries in {secs:.2} s ({:.0} ops/s)",
            REBUILD_OPS as f64 / secs
        );
        rebuilds.push((per_entry, entries, secs));
    }
    let _ = std::fs::remove_dir_all(&stores);

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let scale_text = match &scale {
        None => "Scale runs skipped (SUBNET_BENCH_SCALE=0).\n\n".to_owned(),
        Some(sc) => {
            let rows: String = sc
                .points
                .iter()
                .map(|(keys, r)| {
                    format!(
                        "| {keys} | {:.0} | {:.1} ms | {:.1} ms |\n",
                        r.tps, r.p50, r.p99
                    )
                })
                .collect();
            let first = sc.points.first().map_or(0.0, |(_, r)| r.tps);
            let last = sc.points.last().map_or(0.0, |(_, r)| r.tps);
            let rss: Vec<String> = sc
                .rss
                .iter()
                .map(|(n, mb)| format!("{n} {mb:.0} MB"))
                .collect();
            let max_rss = sc.rss.iter().map(|(_, mb)| *mb).fold(0.0, f64::max);
            format!(
                "Scale: the three writers stop; the admin (bootstrap) writes puts of fresh keys \
                 ({SCALE_TXS} per measured run; a put writes two keys, the value and its owner) \
                 and the reader applies them; applied tx/s on the reader with the state at about \
                 this many keys:\n\n\
                 | keys in the state | tx/s applied | p50 | p99 |\n|---|---|---|---|\n{rows}\n\
                 At {} keys: {:.0}% of the small-state rate; RSS {}. Proof of one key from the \
                 reader's bridge (round trip, {} keys): p50 {:.3} ms, p99 {:.3} ms; checking it: p50 \
                 {:.3} ms.\n\n\
                 Targets at 1,000,000 keys: at least 80% of the small-state rate and 10,000 tx/s \
                 ({}), every peer under 150 MB ({}), a proof produced and checked in under 1 ms ({}).\n\n",
                sc.points.last().map_or(0, |(k, _)| *k),
                100.0 * last / first.max(1.0),
                rss.join(", "),
                sc.points.last().map_or(0, |(k, _)| *k),
                sc.proof_p50,
                sc.proof_p99,
                sc.check_p50,
                verdict(last >= 0.8 * first && last >= 10_000.0),
                verdict(max_rss < 150.0),
                verdict(sc.proof_p50 + sc.check_p50 < 1.0),
            )
        }
    };
    docs::write_section(
        "subnet",
        &format!(
            "## Subnet: bridge to applied on a remote peer, rebuild (`cargo bench --bench subnet_bench`)\n\n\
             Release binaries on 127.0.0.1: a 4-node DHT, an admin (bootstrap: sequencer and only \
             indexer), writers and a reader (`intercom run`). Transactions (`put`, 512 keys per writer) \
             are pipelined into the writers' bridges; a transaction counts when the reader's \
             `subnet_applied` event for it arrives. Latency: from the `tx` frame to that event.\n\n\
             | run | tx/s applied | p50 | p99 |\n|---|---|---|---|\n\
             | 1 writer, {THROUGHPUT_TXS} txs | {:.0} | {:.1} ms | {:.1} ms |\n\
             | 3 writers, {THROUGHPUT_TXS} txs | {:.0} | {:.1} ms | {:.1} ms |\n\
             | 1 writer, paced 1 tx / 5 ms, {PACED_TXS} txs | — | {:.1} ms | {:.1} ms |\n\
             | 3 writers, paced 8 txs / 3 ms each, {SUSTAINED_TXS} txs | {:.0} | {:.1} ms | {:.1} ms |\n\n\
             The first two rows send everything at once: their latency is mostly waiting in \
             the queue behind the burst (throughput mode); the last two are below capacity.\n\n\
             Rebuild (`intercom subnet rebuild`, in process, RocksDB): {REBUILD_OPS} transactions \
             in one-operation entries: {:.2} s ({:.0} ops/s); in 1,000-operation entries (as busy \
             writers append them): {:.2} s ({:.0} ops/s).\n\n\
             Targets: at least 10,000 tx/s applied ({}), p50 under 50 ms below capacity ({}). No JS figure: the \
             JS subnet (trac-peer) needs the settlement network.\n\n{}",
            one.tps, one.p50, one.p99, three.tps, three.p50, three.p99, paced.p50, paced.p99,
            sustained.tps, sustained.p50, sustained.p99,
            rebuilds[0].2,
            REBUILD_OPS as f64 / rebuilds[0].2,
            rebuilds[1].2,
            REBUILD_OPS as f64 / rebuilds[1].2,
            verdict(one.tps >= 10_000.0 && three.tps >= 10_000.0),
            verdict(paced.p50 < 50.0 && sustained.p50 < 50.0),
            scale_text,
        ),
    );
}
