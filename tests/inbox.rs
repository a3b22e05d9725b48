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

/// Registers `agents` and acknowledges everything for them until no message came for a
/// second (connection probes may still be on their way).
async fn settle(ws: &mut Ws, agents: &[&str]) {
    let mut newest = u64::MAX;
    loop {
        let s = ws.req(json!({"type": "inbox_status"})).await;
        assert_eq!(s["type"], "inbox_status", "{s}");
        let now = s["newestSeq"].as_u64().unwrap();
        if now == newest {
            return;
        }
        newest = now;
        for agent in agents {
            let r = ws
                .req(json!({"type": "inbox_ack", "agent": agent, "seq": newest}))
                .await;
            assert_eq!(r["type"], "inbox_acked", "{r}");
            assert_eq!(r["acked"], newest, "{r}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
    settle(&mut wb, &["alice", "bob"]).await;

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

/// Runs `intercom <args>` against `bridge` with the token in the environment; returns
/// the exit code, stdout lines and how long it took.
fn one_shot(bridge: &str, args: &[&str]) -> (i32, Vec<Value>, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new(sidechannel_support::BIN)
        .args(args)
        .args(["--sc-bridge-url", &format!("ws://{bridge}")])
        .env("SC_BRIDGE_TOKEN", sidechannel_support::TOKEN)
        .env_remove("SC_BRIDGE_TOKEN_FILE")
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shot_send_and_recv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let a = Peer::start(dir.path(), "a", 121, &dht.addr, &[]);
    let b = Peer::start(dir.path(), "b", 122, &dht.addr, &[]);
    let mut wa = a.ws().await;
    let mut wb = b.ws().await;
    wa.rendezvous(&mut wb).await;
    wa.send_until_peers(ENTRY, 1, |p| json!({"probe": p})).await;
    // The shell agent starts after the probes.
    settle(&mut wb, &["sh"]).await;

    let (code, _, took) = one_shot(&b.bridge, &["recv", "--agent", "sh", "--wait", "1"]);
    assert_eq!(code, 3, "nothing pending: exit 3");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "took {took:?}"
    );

    let (code, lines, _) = one_shot(&a.bridge, &["send", "--json", r#"{"n":7}"#]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0]["type"], "sent", "{lines:?}");
    let (code, lines, _) = one_shot(&a.bridge, &["send", "plain text"]);
    assert_eq!((code, lines[0]["type"].as_str()), (0, Some("sent")));

    let (code, lines, _) = one_shot(&b.bridge, &["recv", "--agent", "sh", "--wait", "10"]);
    assert_eq!(code, 0);
    let mut got: Vec<Value> = lines.iter().map(|m| m["message"].clone()).collect();
    if got.len() < 2 {
        // The second message may land after the first recv returned.
        let (_, more, _) = one_shot(&b.bridge, &["recv", "--agent", "sh", "--wait", "10"]);
        got.extend(more.iter().map(|m| m["message"].clone()));
    }
    assert_eq!(got, [json!({"n": 7}), json!("plain text")]);
    // Printed means acknowledged: nothing again (and --no-ack leaves messages pending).
    let (code, _, _) = one_shot(&b.bridge, &["recv", "--agent", "sh"]);
    assert_eq!(code, 3);
    let (code, lines, _) = one_shot(&b.bridge, &["inbox", "status", "--agent", "sh"]);
    assert_eq!(code, 0);
    assert_eq!(lines[0]["agents"][0]["pending"], 0, "{lines:?}");

    // Bridge and usage errors: 1 and 2.
    let out = std::process::Command::new(sidechannel_support::BIN)
        .args(["recv", "--sc-bridge-url", &format!("ws://{}", b.bridge)])
        .env(
            "SC_BRIDGE_TOKEN",
            "a-wrong-token-that-is-long-enough-0123456789",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    let (code, _, _) = one_shot("127.0.0.1:1", &["recv"]);
    assert_eq!(code, 1);
    let (code, _, _) = one_shot(&b.bridge, &["recv", "--limit", "0"]);
    assert_eq!(code, 2);
}
