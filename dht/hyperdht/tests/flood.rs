//! Issue 20, done-when 3: a UDP flood of FIND_NODE requests from one source
//! (127.0.0.2) at 50,000 packets/s for 5 s against a HyperDHT node leaves a lookup by
//! another client (127.0.0.1) within 2x its idle latency, and the flooder gets at most
//! its per-source budget of replies (1,000/s after a burst of 2,000 by default).
//!
//! Slow (about 20 s); run alone with `cargo test -p intercom-hyperdht --test flood`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intercom_dht_rpc::budget::{DEFAULT_PER_SOURCE_BURST, DEFAULT_PER_SOURCE_RATE};
use intercom_dht_rpc::commands::FIND_NODE;
use intercom_dht_rpc::messages::Request;
use intercom_hyperdht::{HyperDht, HyperDhtConfig};

const RATE: u64 = 50_000;
const FLOOD: Duration = Duration::from_secs(5);

async fn network() -> (Vec<HyperDht>, SocketAddrV4) {
    let boot = HyperDht::bootstrapper(0, Ipv4Addr::LOCALHOST)
        .await
        .unwrap();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, boot.dht().local_addr().port());
    let mut nodes = vec![boot];
    for _ in 0..3 {
        let mut cfg = HyperDhtConfig::new(vec![addr]);
        cfg.dht.host = Ipv4Addr::LOCALHOST;
        cfg.dht.ephemeral = Some(false);
        cfg.dht.firewalled = false;
        let n = HyperDht::bind(cfg).await.unwrap();
        n.dht().persistent().await.unwrap();
        nodes.push(n);
    }
    (nodes, addr)
}

async fn lookup_ms(client: &HyperDht, n: u8) -> f64 {
    let started = Instant::now();
    let q = client.lookup([n; 32]).await.unwrap();
    let replies = q.finish().await.unwrap();
    assert!(!replies.is_empty());
    started.elapsed().as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Flood {
    sent: u64,
    replies: u64,
    elapsed: Duration,
    /// Replies per whole second of the flood.
    per_second: Vec<u64>,
}

/// Sends FIND_NODE requests from 127.0.0.2 to `to` at `RATE` for `FLOOD`, counting the
/// replies that come back (bounded in count and time).
fn flood(to: SocketAddrV4) -> Flood {
    let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).expect("bind 127.0.0.2");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let receiver = socket.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let buckets: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
    let counter = {
        let (stop, buckets) = (stop.clone(), buckets.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if receiver.recv_from(&mut buf).is_ok() {
                    let s = (started.elapsed().as_secs() as usize).min(15);
                    buckets[s].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut sent = 0u64;
    let mut tid = 0u16;
    while started.elapsed() < FLOOD {
        // Keep pace: as many as should have gone by now.
        let due = (started.elapsed().as_secs_f64() * RATE as f64) as u64;
        while sent < due {
            tid = tid.wrapping_add(1);
            let mut target = [0u8; 32];
            target[..8].copy_from_slice(&sent.to_le_bytes());
            let req = Request {
                tid,
                to,
                id: None,
                token: None,
                internal: true,
                command: FIND_NODE,
                target: Some(target),
                value: None,
            };
            let _ = socket.send_to(&req.encode(), to);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = started.elapsed();
    // Replies still in flight.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    let per_second: Vec<u64> = buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
    Flood {
        sent,
        replies: per_second.iter().sum(),
        elapsed,
        per_second,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_degrades_only_that_source() {
    tokio::time::timeout(Duration::from_secs(110), run())
        .await
        .expect("timed out");
}

async fn run() {
    let (nodes, boot) = network().await;
    let mut cfg = HyperDhtConfig::new(vec![boot]);
    cfg.dht.host = Ipv4Addr::LOCALHOST;
    cfg.dht.ephemeral = Some(true);
    let client = HyperDht::bind(cfg).await.unwrap();
    client.dht().bootstrapped().await.unwrap();

    for n in 0..5 {
        lookup_ms(&client, n).await; // warm up
    }
    let mut idle = Vec::new();
    for n in 0..30 {
        idle.push(lookup_ms(&client, n).await);
    }

    let flooder = std::thread::spawn(move || flood(boot));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut busy = Vec::new();
    let until = Instant::now() + FLOOD - Duration::from_millis(1000);
    let mut n = 100u8;
    while Instant::now() < until {
        busy.push(lookup_ms(&client, n).await);
        n = n.wrapping_add(1);
    }
    let f = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    let budget = nodes[0].request_budget_stats();

    let (idle_med, busy_med) = (median(&mut idle), median(&mut busy));
    let (idle_max, busy_max) = (idle[idle.len() - 1], busy[busy.len() - 1]);
    let pps = f.sent as f64 / f.elapsed.as_secs_f64();
    eprintln!(
        "flood: {} requests in {:.2} s ({pps:.0}/s) from 127.0.0.2; {} replies ({:?} per second)",
        f.sent,
        f.elapsed.as_secs_f64(),
        f.replies,
        &f.per_second[..6]
    );
    eprintln!(
        "lookup by 127.0.0.1: idle median {idle_med:.2} ms (max {idle_max:.2}, n={}), \
         under flood median {busy_med:.2} ms (max {busy_max:.2}, n={})",
        idle.len(),
        busy.len()
    );
    eprintln!("target node budget: {budget:?}");

    assert!(
        pps > 0.8 * RATE as f64,
        "the flooder reached only {pps:.0} packets/s"
    );
    assert!(
        busy.len() >= 5,
        "only {} lookups under the flood",
        busy.len()
    );
    // 2x the idle median, with 1 ms of slack for timer granularity on loopback.
    assert!(
        busy_med <= 2.0 * idle_med + 1.0,
        "lookup median {busy_med:.2} ms under flood vs {idle_med:.2} ms idle"
    );
    let allowed = u64::from(DEFAULT_PER_SOURCE_BURST)
        + u64::from(DEFAULT_PER_SOURCE_RATE) * (f.elapsed.as_secs() + 1);
    assert!(
        f.replies <= allowed,
        "{} replies to the flooder, budget {allowed}",
        f.replies
    );
    assert!(
        budget.requests_dropped_per_source > f.sent / 2,
        "{budget:?}"
    );
    for n in nodes {
        n.destroy().await;
    }
    client.destroy().await;
}
