//! What the agent adapters cost and how fast they answer (issue 19), on 127.0.0.1 with
//! release binaries: a four-node HyperDHT and two `intercom run` peers (rate limiting and
//! proof of work off), an agent on A sending on `0000intercom`.
//!
//! * burst with the inbox on and off: `bridge_bench`'s burst (10,000 messages sent back to
//!   back to A's bridge, messages/s until the last reaches B's bridge client), with B's
//!   durable inbox on (the default) and off (`--inbox 0`), alternating, three rounds each;
//! * arrival to `wait_for_messages`: B's agent holds a waiting `inbox_recv` (what the MCP
//!   tool does), A sends one message at a time; from A's `send` frame to B's `inbox`
//!   reply, p50 / p99 over 500 messages;
//! * one-shot `intercom recv` of a pending message, as a whole process (start, connect,
//!   authenticate, read, print, acknowledge, exit), p50 / p99 over 50 runs.
//!
//!   cargo bench --bench agent_bench
//!
//! Targets: the burst with the inbox at least 20,000 messages/s and within 25% of the
//! burst without; arrival to wait result p50 at most 1 ms; one-shot recv p50 at most
//! 20 ms. Results go to the agent section of docs/benchmarks.md.

#[path = "support/docs.rs"]
mod docs;
#[allow(dead_code)]
#[path = "support/peers.rs"]
mod peers;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use peers::{agent, bounded, next_json, peer, quantile, send_frame, until_connected, Rx, Tx};
use serde_json::{json, Value};

const BURST: usize = 10_000;
const ROUNDS: usize = 3;
const WAITS: usize = 500;
const ONE_SHOTS: usize = 50;

/// One burst on a fresh pair of peers (B with `b_args`): messages/s.
async fn burst(stores: &std::path::Path, bootstrap: &str, round: usize, b_args: &[&str]) -> f64 {
    let a = peer(stores, &format!("a{round}"), bootstrap, &[]).await;
    let b = peer(stores, &format!("b{round}"), bootstrap, b_args).await;
    let (mut a_tx, a_rx) = agent(&a.bridge).await;
    let (_b_tx, mut b_rx) = agent(&b.bridge).await;
    until_connected(&mut a_tx, a_rx).await;
    peers::burst(a_tx, &mut b_rx, BURST).await.0
}

async fn request(tx: &mut Tx, rx: &mut Rx, id: u64, mut req: Value) -> Value {
    req["id"] = json!(id);
    tx.send(Message::text(req.to_string())).await.unwrap();
    loop {
        let v = next_json(rx).await;
        if v["id"] == id {
            return v;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let stores_dir = tempfile::Builder::new()
        .prefix("intercom-agent-bench-")
        .tempdir()
        .expect("temporary stores directory");
    let stores = stores_dir.path().to_path_buf();
    let (_dht, bootstrap) = peers::dht().await;

    let (mut with_inbox, mut without) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        with_inbox.push(burst(&stores, &bootstrap, round * 2, &[]).await);
        without.push(burst(&stores, &bootstrap, round * 2 + 1, &["--inbox", "0"]).await);
        println!(
            "round {round}: inbox on {:.0} msg/s, off {:.0} msg/s",
            with_inbox[round], without[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (median(&mut with_inbox), median(&mut without));

    // Arrival to a waiting inbox_recv.
    let a = peer(&stores, "wa", &bootstrap, &[]).await;
    let b = peer(&stores, "wb", &bootstrap, &[]).await;
    let (mut a_tx, a_rx) = agent(&a.bridge).await;
    let (mut b_tx, mut b_rx) = agent(&b.bridge).await;
    until_connected(&mut a_tx, a_rx).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut id = 0u64;
    id += 1;
    let s = request(&mut b_tx, &mut b_rx, id, json!({"type": "inbox_status"})).await;
    let mut acked = s["newestSeq"].as_u64().unwrap_or(0);
    let mut waits = Vec::with_capacity(WAITS);
    bounded("waits", async {
        for i in 0..WAITS {
            id += 1;
            let req = json!({"type": "inbox_recv", "agent": "bench", "wait_ms": 10_000,
                             "ack": acked, "limit": 10});
            let mut req = req;
            req["id"] = json!(id);
            b_tx.send(Message::text(req.to_string())).await.unwrap();
            // Give the wait time to start before the message leaves A.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let text = format!("wait-{i}");
            let t = Instant::now();
            a_tx.send(send_frame(&text)).await.unwrap();
            let reply = loop {
                let v = next_json(&mut b_rx).await;
                if v["id"] == id {
                    break v;
                }
            };
            let elapsed = t.elapsed();
            let messages = reply["messages"].as_array().cloned().unwrap_or_default();
            if let Some(last) = messages.last() {
                acked = last["seq"].as_u64().unwrap_or(acked);
            }
            if messages.iter().any(|m| m["message"] == text.as_str()) {
                waits.push(ms(elapsed));
            }
        }
    })
    .await;
    waits.sort_by(f64::total_cmp);

    // One-shot recv of a pending message, as a process.
    let token_file = stores.join("token");
    std::fs::write(&token_file, peers::TOKEN).unwrap();
    let mut shots = Vec::with_capacity(ONE_SHOTS);
    for i in 0..ONE_SHOTS {
        a_tx.send(send_frame(&format!("shot-{i}"))).await.unwrap();
        // Until the message is pending for the one-shot agent.
        loop {
            id += 1;
            let s = request(
                &mut b_tx,
                &mut b_rx,
                id,
                json!({"type": "inbox_status", "agent": "shell"}),
            )
            .await;
            if s["agents"][0]["pending"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t = Instant::now();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_intercom"))
            .args(["recv", "--agent", "shell", "--sc-bridge-url"])
            .arg(format!("ws://{}", b.bridge))
            .arg("--sc-bridge-token-file")
            .arg(&token_file)
            .output()
            .await
            .unwrap();
        shots.push(ms(t.elapsed()));
        assert!(out.status.success(), "recv failed: {out:?}");
    }
    shots.sort_by(f64::total_cmp);

    let ratio = on / off;
    let body = format!(
        "`cargo bench --bench agent_bench` on 127.0.0.1: release binaries, a four-node HyperDHT,\n\
two `intercom run` peers with rate limiting and proof of work off.\n\n\
| measure | result | target |\n|---|---|---|\n\
| bridge burst ({BURST} messages), B's inbox on (median of {ROUNDS}) | {on:.0} msg/s | >= 20,000 |\n\
| same burst, `--inbox 0` (median of {ROUNDS}) | {off:.0} msg/s | |\n\
| inbox on / off | {:.0}% | >= 75% |\n\
| arrival to a waiting `inbox_recv` reply (from A's `send`), p50 / p99 over {} | {:.2} / {:.2} ms | p50 <= 1 ms |\n\
| one-shot `intercom recv` of a pending message, whole process, p50 / p99 over {ONE_SHOTS} | {:.1} / {:.1} ms | p50 <= 20 ms |\n\n\
Rounds (on / off msg/s): {}.\n",
        ratio * 100.0,
        waits.len(),
        quantile(&waits, 0.5),
        quantile(&waits, 0.99),
        quantile(&shots, 0.5),
        quantile(&shots, 0.99),
        with_inbox
            .iter()
            .zip(&without)
            .map(|(a, b)| format!("{a:.0} / {b:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    println!("{body}");
    docs::write_section("agent_bench", &body);
}
