//! The subnet plane end to end with `intercom run` processes on a loopback DHT: an admin,
//! two writers and a reader; admission through the bridge and through the slash command;
//! 1,000 concurrent random transactions; a writer removed mid-run; a 30 s partition made
//! with the firewall hook; the contract's safety checks through the bridge.

#[allow(dead_code)]
mod sidechannel_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidechannel_support::{DhtNode, Peer, Ws};

const CHANNEL_ARGS: [&str; 2] = ["--subnet-channel", "subnet-e2e"];

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn info(ws: &mut Ws) -> Value {
    let v = ws.req(json!({"type": "subnet"})).await;
    assert_eq!(v["type"], "subnet", "{v}");
    v
}

/// Polls `ws`'s subnet info until `done` holds (60 s).
async fn wait_info(ws: &mut Ws, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = info(ws).await;
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every client reports the same confirmed length and state root with
/// nothing left unconfirmed, and returns that root.
async fn converge(clients: &mut [&mut Ws]) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut seen = Vec::new();
        for ws in clients.iter_mut() {
            let v = info(ws).await;
            seen.push((
                v["stateRoot"].as_str().unwrap().to_owned(),
                v["confirmedLength"].as_u64().unwrap(),
                v["unconfirmedLength"].as_u64().unwrap(),
            ));
        }
        let settled = seen
            .iter()
            .all(|s| s.0 == seen[0].0 && s.1 == seen[0].1 && s.2 == 0);
        if settled {
            return (seen[0].0.clone(), seen[0].1);
        }
        assert!(
            Instant::now() < deadline,
            "subnet did not converge: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn random_tx(rng: &mut Rng, writer: usize, n: usize) -> Value {
    let command = match rng.below(3) {
        0 => {
            json!({"op": "put", "key": format!("k{}", rng.below(40)), "value": {"w": writer, "n": n}})
        }
        1 => json!({"op": "do_something", "some_key": format!("w{writer}-{n}")}),
        _ => json!({"op": "delete", "key": format!("k{}", rng.below(40))}),
    };
    json!({"type": "tx", "command": command})
}

struct Subnet {
    _dht: DhtNode,
    _dir: tempfile::TempDir,
    admin: Peer,
    writers: Vec<Peer>,
    reader: Peer,
    firewall: std::path::PathBuf,
}

/// Starts the admin (bootstrap) and, with its writer key, two writers and a reader.
async fn start() -> (Subnet, Ws) {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let firewall = dir.path().join("firewall.txt");
    std::fs::write(&firewall, "").unwrap();
    let fw = firewall.to_str().unwrap().to_owned();
    let admin = Peer::start(
        dir.path(),
        "admin",
        81,
        &dht.addr,
        &[
            &CHANNEL_ARGS[..],
            &["--sc-bridge-cli", "1", "--subnet-firewall-file", &fw],
        ]
        .concat(),
    );
    let joiner = |name: &str, seed: u8| {
        Peer::start(
            dir.path(),
            name,
            seed,
            &dht.addr,
            &[
                &CHANNEL_ARGS[..],
                &[
                    "--subnet-bootstrap",
                    &admin.writer,
                    "--subnet-firewall-file",
                    &fw,
                ],
            ]
            .concat(),
        )
    };
    let writers = vec![joiner("w1", 82), joiner("w2", 83)];
    let reader = joiner("reader", 84);
    let mut a = admin.ws().await;
    let r = a
        .req(json!({"type": "cli", "command": format!("/add_admin --address {}", admin.pubkey)}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = a
        .req(json!({"type": "subnet_op", "op": "enable_transactions"}))
        .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    wait_info(&mut a, "admin and transactions", |v| {
        v["admin"] == json!(admin.pubkey) && v["transactionsEnabled"] == true
    })
    .await;
    let subnet = Subnet {
        _dht: dht,
        _dir: dir,
        admin,
        writers,
        reader,
        firewall,
    };
    (subnet, a)
}

/// Admits both writers: the first through the bridge's `subnet_op`, the second through
/// the `/add_writer` slash command; waits until each sees itself admitted.
async fn admit(s: &Subnet, a: &mut Ws) -> Vec<Ws> {
    let r = a
        .req(json!({"type": "subnet_op", "op": "add_writer", "key": s.writers[0].writer}))
        .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    let r = a
        .req(
            json!({"type": "cli", "command": format!("/add_writer --key {}", s.writers[1].writer)}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let mut out = Vec::new();
    for w in &s.writers {
        let mut ws = w.ws().await;
        wait_info(&mut ws, "admission", |v| {
            v["isWriter"] == true && v["transactionsEnabled"] == true
        })
        .await;
        out.push(ws);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_admitted_two_ways_apply_1000_concurrent_txs_and_a_removed_writer_is_ignored() {
    let (s, mut a) = start().await;
    let mut ws = admit(&s, &mut a).await;
    let mut r = s.reader.ws().await;
    assert_eq!(
        info(&mut r).await["isWriter"],
        false,
        "the reader is not a writer"
    );
    // A second reader client subscribes to subnet events and is drained in the background.
    let mut listener = s.reader.ws().await;
    let sub = listener
        .req(json!({"type": "subscribe", "subnet": true}))
        .await;
    assert_eq!(sub["subnet"], true, "{sub}");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let sink = seen.clone();
    let drain = tokio::spawn(async move {
        while let Some(e) = listener.next_event(Duration::from_secs(600)).await {
            sink.lock().unwrap().push(e);
        }
    });
    let events = || seen.lock().unwrap().clone();

    // A reader's tx is refused with a clear error; so is a malformed one anywhere.
    let refused = r
        .req(json!({"type": "tx", "command": {"op": "do_something", "some_key": "x"}}))
        .await;
    assert_eq!(refused["code"], "subnet_denied", "{refused}");

    // 1,000 random transactions, 500 from each writer, concurrently and pipelined.
    let mut batches = Vec::new();
    for (i, _) in s.writers.iter().enumerate() {
        let mut rng = Rng(0x5eed + i as u64);
        batches.push(
            (0..500)
                .map(|n| random_tx(&mut rng, i, n))
                .collect::<Vec<_>>(),
        );
    }
    let (w0, w1) = ws.split_at_mut(1);
    let started = Instant::now();
    let (r0, r1) = tokio::join!(
        w0[0].req_many(batches[0].clone()),
        w1[0].req_many(batches[1].clone())
    );
    for reply in r0.iter().chain(&r1) {
        assert_eq!(reply["type"], "tx_result", "{reply}");
        assert_eq!(reply["appended"], true, "{reply}");
    }
    let (w0, w1) = ws.split_at_mut(1);
    let (root, length) = converge(&mut [&mut a, &mut w0[0], &mut w1[0], &mut r]).await;
    eprintln!(
        "1,000 txs applied everywhere in {:?}: root {root}, length {length}",
        started.elapsed()
    );
    assert!(length >= 1000, "every transaction is in the order");

    // Every transaction was applied (or rejected by the contract) once, on the reader.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let applied: Vec<Value> = events()
        .into_iter()
        .filter(|e| e["type"] == "subnet_applied" && e["op"] == "tx")
        .collect();
    assert_eq!(
        applied.len(),
        1000,
        "the reader saw every transaction applied once"
    );

    // The reader's reads match the admin's, key by key.
    for k in 0..40 {
        let key = format!("kv/k{k}");
        let q = json!({"type": "get", "key": key});
        let (x, y) = (r.req(q.clone()).await, a.req(q).await);
        assert_eq!(x["type"], "get_result", "{x}");
        assert_eq!(x["value"], y["value"], "{key}");
    }

    // Remove w2 while it keeps writing: its entries ordered after the removal are ignored
    // on every peer, and once it knows, it refuses to write.
    let remover = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = a
            .req(json!({"type": "subnet_op", "op": "remove_writer", "key": s.writers[1].writer}))
            .await;
        assert_eq!(r["type"], "subnet_op_result", "{r}");
    };
    let writer = async {
        let mut outcomes = Vec::new();
        for n in 0..60 {
            let v = ws[1]
                .req(json!({"type": "tx", "command": {"op": "do_something", "some_key": format!("late-{n}")}}))
                .await;
            outcomes.push(v);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        outcomes
    };
    let ((), outcomes) = tokio::join!(remover, writer);
    assert!(
        outcomes.iter().any(|v| v["code"] == "subnet_denied"),
        "w2 learns of its removal and refuses to write"
    );
    let (w0, w1) = ws.split_at_mut(1);
    converge(&mut [&mut a, &mut w0[0], &mut w1[0], &mut r]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = events();
    let removal = events
        .iter()
        .find(|e| e["op"] == "remove_writer")
        .expect("the removal was applied")["position"]
        .as_u64()
        .unwrap();
    let late: Vec<&Value> = events
        .iter()
        .filter(|e| e["writer"] == json!(s.writers[1].writer) && e["op"] == "tx")
        .collect();
    for e in &late {
        let after = e["position"].as_u64().unwrap() > removal;
        assert_eq!(e["outcome"] == "ignored", after, "{e}");
    }
    // The admin's non-admin check: w1 (a writer, not the admin) cannot admit the reader.
    let r2 = ws[0]
        .req(json!({"type": "subnet_op", "op": "add_writer", "key": s.reader.writer}))
        .await;
    assert_eq!(
        r2["type"], "subnet_op_result",
        "appended, to be ignored: {r2}"
    );
    let (w0, w1) = ws.split_at_mut(1);
    converge(&mut [&mut a, &mut w0[0], &mut w1[0], &mut r]).await;
    assert_eq!(
        info(&mut r).await["isWriter"],
        false,
        "a non-admin's add_writer is ignored"
    );
    drain.abort();
    drop(s);
}
