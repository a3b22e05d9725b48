//! The durable inbox through `intercom run`'s bridge, as an agent uses it: messages from
//! another peer wait in B's inbox until each agent acknowledges them, a waiting
//! `inbox_recv` wakes when one arrives and returns at its timeout when none does, and
//! B's process killed (SIGKILL) between delivery and acknowledgement gives the
//! unacknowledged messages again, and only those, after a restart; a second agent on the
//! same peer gets every message. Bad fields get `invalid_field` errors.

mod sidechannel_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidechannel_support::{DhtNode, Peer, Ws};

const ENTRY: &str = "0000intercom";

async fn recv(ws: &mut Ws, agent: &str, wait_ms: u64, extra: Value) -> Value {
    let mut req = json!({"type": "inbox_recv", "agent": agent, "wait_ms": wait_ms, "limit": 100});
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            req[k] = v;
        }
    }
    let r = ws.req(req).await;
    assert_eq!(r["type"], "inbox", "{r}");
    r
}

/// The `n` of every test message in an `inbox` reply (probes and others are skipped).
fn numbers(reply: &Value) -> Vec<u64> {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["message"]["n"].as_u64())
        .collect()
}

/// Reads `agent`'s inbox (without acknowledging) until it holds test messages `want`.
async fn until_numbers(ws: &mut Ws, agent: &str, want: &[u64]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = recv(ws, agent, 2_000, json!({})).await;
        if numbers(&r) == want {
            return r;
        }
        assert!(Instant::now() < deadline, "{agent} never had {want:?}: {r}");
    }
}

fn seq_of(reply: &Value, n: u64) -> u64 {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message"]["n"] == n)
        .and_then(|m| m["seq"].as_u64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_keeps_messages_until_acknowledged_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let a = Peer::start(dir.path(), "a", 111, &dht.addr, &[]);
    let b = Peer::start(dir.path(), "b", 112, &dht.addr, &[]);
    let mut wa = a.ws().await;
    let mut wb = b.ws().await;
    wa.rendezvous(&mut wb).await;
    wa.send_until_peers(ENTRY, 1, |p| json!({"probe": p})).await;

    // Two agents start, and acknowledge whatever the connection probes left.
    for agent in ["alice", "bob"] {
        let s = wb
            .req(json!({"type": "inbox_status", "agent": agent}))
            .await;
        assert_eq!(s["type"], "inbox_status", "{s}");
        let newest = s["newestSeq"].as_u64().unwrap();
        let r = wb
            .req(json!({"type": "inbox_ack", "agent": agent, "seq": newest}))
            .await;
        assert_eq!(r["type"], "inbox_acked", "{r}");
        assert_eq!(r["acked"], newest);
    }

    // Nothing pending: the wait ends at its timeout, not much later.
    let started = Instant::now();
    let r = recv(&mut wb, "alice", 1_000, json!({})).await;
    let waited = started.elapsed();
    assert!(r["messages"].as_array().unwrap().is_empty(), "{r}");
    assert!(
        waited >= Duration::from_millis(1_000) && waited < Duration::from_millis(1_200),
        "an empty 1 s wait took {waited:?}"
    );

    // A waiting reader wakes when a message arrives.
    let mut waiter = b.ws().await;
    let wait = tokio::spawn(async move {
        let r = recv(&mut waiter, "alice", 20_000, json!({})).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = wa.send(ENTRY, json!({"n": 1})).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let sent_at = Instant::now();
    let (r, woke_at) = wait.await.unwrap();
    assert_eq!(numbers(&r), [1], "{r}");
    let latency = woke_at.saturating_duration_since(sent_at);
    assert!(
        latency < Duration::from_secs(1),
        "woke {latency:?} after the send"
    );
    let first = &r["messages"][0];
    assert_eq!(first["channel"], ENTRY);
    assert_eq!(first["from"], a.pubkey);
    assert!(first["seq"].as_u64().is_some() && first["receivedAt"].as_u64().is_some());

    for n in 2..=5 {
        let sent = wa.send(ENTRY, json!({"n": n})).await;
        assert_eq!(sent["type"], "sent", "{sent}");
    }
    // Not acknowledged: message 1 comes again, with the rest.
    let all = until_numbers(&mut wb, "alice", &[1, 2, 3, 4, 5]).await;
    let r = wb
        .req(json!({"type": "inbox_ack", "agent": "alice", "seq": seq_of(&all, 3)}))
        .await;
    assert_eq!(r["acked"], seq_of(&all, 3), "{r}");

    // B is killed between delivery and acknowledgement, and restarted on its store.
    drop(wb);
    drop(b);
    let b = Peer::start(dir.path(), "b", 112, &dht.addr, &[]);
    let mut wb = b.ws().await;
    let r = recv(&mut wb, "alice", 0, json!({})).await;
    assert_eq!(
        numbers(&r),
        [4, 5],
        "only the unacknowledged come again: {r}"
    );
    let r = recv(&mut wb, "bob", 0, json!({})).await;
    assert_eq!(
        numbers(&r),
        [1, 2, 3, 4, 5],
        "the other agent gets every one: {r}"
    );
    // Acknowledging with the read: nothing left.
    let r = recv(&mut wb, "alice", 0, json!({"ack": seq_of(&all, 5)})).await;
    assert!(numbers(&r).is_empty(), "{r}");
    assert_eq!(r["pending"], 0, "{r}");
    let s = wb.req(json!({"type": "inbox_status"})).await;
    let agents: Vec<&str> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["alice", "bob"], "{s}");

    // Bad fields: an error naming the field, and the connection keeps serving.
    for (bad, field) in [
        (json!({"type": "inbox_recv", "agent": "no spaces"}), "agent"),
        (json!({"type": "inbox_recv"}), "agent"),
        (
            json!({"type": "inbox_recv", "agent": "a", "wait_ms": 300_001}),
            "wait_ms",
        ),
        (
            json!({"type": "inbox_recv", "agent": "a", "wait_ms": "5"}),
            "wait_ms",
        ),
        (
            json!({"type": "inbox_recv", "agent": "a", "limit": 0}),
            "limit",
        ),
        (
            json!({"type": "inbox_recv", "agent": "a", "channel": 5}),
            "channel",
        ),
        (json!({"type": "inbox_ack", "agent": "a"}), "seq"),
        (json!({"type": "inbox_ack", "agent": "a", "seq": -1}), "seq"),
    ] {
        let r = wb.req(bad.clone()).await;
        assert_eq!(r["type"], "error", "{bad} -> {r}");
        assert_eq!(r["code"], "invalid_field", "{bad} -> {r}");
        assert!(r["error"].as_str().unwrap().contains(field), "{bad} -> {r}");
    }
    assert_eq!(wb.req(json!({"type": "ping"})).await["type"], "pong");
}
