//! The subnet plane end to end with `intercom run` processes on a loopback DHT: an admin,
//! two writers and a reader; admission through the bridge and through the slash command;
//! 1,000 concurrent random transactions; a writer removed mid-run; a 30 s partition made
//! with the firewall hook; the contract's safety checks through the bridge.

mod sidechannel_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// Waits until every client reports the same confirmed length (at least `min_confirmed`)
/// and state root, twice in a row, and returns the root and confirmed length. Tentative
/// lengths are not compared: a removed writer's entries after its removal are
/// downloaded by the peers that had not yet applied the removal and by no other (the
/// follow rules), so they stay unconfirmed on some peers and absent on others for good.
async fn converge(clients: &mut [&mut Ws], min_confirmed: u64) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut previous = None;
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
        // The last acknowledgements of indexers other than the bootstrap stay unconfirmed
        // (acks never answer acks), so "settled" is: same root and lengths everywhere,
        // twice in a row.
        let settled = |s: &(String, u64, u64)| (s.0.clone(), s.1);
        let same =
            seen.iter().all(|s| settled(s) == settled(&seen[0])) && seen[0].1 >= min_confirmed;
        if same && previous.as_ref() == Some(&settled(&seen[0])) {
            return settled(&seen[0]);
        }
        previous = same.then(|| settled(&seen[0]));
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
    // The firewall hook: one file per peer, listing the peers it must not replicate with.
    let firewall = dir.path().join("firewall");
    std::fs::create_dir_all(&firewall).unwrap();
    let fw = |name: &str| {
        let path = firewall.join(format!("{name}.txt"));
        std::fs::write(&path, "").unwrap();
        path.to_str().unwrap().to_owned()
    };
    let admin_fw = fw("admin");
    let admin_args = ["--sc-bridge-cli", "1", "--subnet-firewall-file", &admin_fw];
    let admin = Peer::start(
        dir.path(),
        "admin",
        81,
        &dht.addr,
        &[&CHANNEL_ARGS[..], &admin_args].concat(),
    );
    let joiner = |name: &str, seed: u8| {
        let file = fw(name);
        let args = [
            "--subnet-bootstrap",
            &admin.writer,
            "--subnet-firewall-file",
            &file,
        ];
        Peer::start(
            dir.path(),
            name,
            seed,
            &dht.addr,
            &[&CHANNEL_ARGS[..], &args].concat(),
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
    // One record per applied operation: {position, writer, op, outcome}.
    let events = || -> Vec<Value> {
        let entries = seen.lock().unwrap().clone();
        entries
            .iter()
            .filter(|e| e["type"] == "subnet_applied")
            .flat_map(|e| {
                e["ops"].as_array().cloned().unwrap_or_default().into_iter().map(|op| {
                    json!({"position": e["position"], "writer": e["writer"], "op": op["op"], "outcome": op["outcome"]})
                })
            })
            .collect()
    };

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
    let (root, length) = converge(&mut [&mut a, &mut w0[0], &mut w1[0], &mut r], 0).await;
    eprintln!(
        "1,000 txs applied everywhere in {:?}: root {root}, length {length}",
        started.elapsed()
    );
    assert!(length > 0, "entries were confirmed");

    // Every transaction was applied (or rejected by the contract) once, on the reader.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let applied: Vec<Value> = events().into_iter().filter(|e| e["op"] == "tx").collect();
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
    // At least the removal is confirmed.
    let (_, after_removal) =
        converge(&mut [&mut a, &mut w0[0], &mut w1[0], &mut r], length + 1).await;
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
    // w1's add_writer is confirmed everywhere (and ignored).
    converge(
        &mut [&mut a, &mut w0[0], &mut w1[0], &mut r],
        after_removal + 1,
    )
    .await;
    assert_eq!(
        info(&mut r).await["isWriter"],
        false,
        "a non-admin's add_writer is ignored"
    );
    drain.abort();
    drop(s);
}

/// Confirmed roots seen so far by confirmed length: one root per length, ever.
#[derive(Default)]
struct RootLog(std::collections::BTreeMap<u64, String>);

impl RootLog {
    fn record(&mut self, who: &str, v: &Value) {
        let len = v["confirmedLength"].as_u64().unwrap();
        let root = v["stateRoot"].as_str().unwrap().to_owned();
        if let Some(prev) = self.0.insert(len, root.clone()) {
            assert_eq!(
                prev, root,
                "{who}: the confirmed state at position {len} changed"
            );
        }
    }
}

/// Writes a `put` every 40 ms until `done`; returns how many it wrote.
fn spawn_writer(mut ws: Ws, tag: usize, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !done.load(Ordering::Relaxed) {
            let command =
                json!({"op": "put", "key": format!("p{tag}-{}", n % 7), "value": {"n": n}});
            let v = ws.req(json!({"type": "tx", "command": command})).await;
            assert_eq!(v["type"], "tx_result", "{v}");
            n += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        n
    })
}

/// Polls every client, recording confirmed roots, for `d`.
async fn watch_roots(clients: &mut [(&str, Ws)], roots: &mut RootLog, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for (name, ws) in clients.iter_mut() {
            let v = info(ws).await;
            roots.record(name, &v);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_30s_partition_heals_to_one_state_and_confirmed_positions_never_change() {
    let (s, mut a) = start().await;
    // Three indexers (admin, w1, w2): a majority stays with the admin's half.
    for w in &s.writers {
        let r = a
            .req(json!({"type": "subnet_op", "op": "add_indexer", "key": w.writer}))
            .await;
        assert_eq!(r["type"], "subnet_op_result", "{r}");
    }
    for w in &s.writers {
        let mut c = w.ws().await;
        wait_info(&mut c, "indexer admission", |v| v["isIndexer"] == true).await;
    }
    let split = |on: bool| {
        // Half A: admin + w1; half B: w2 + reader. Each peer's file lists the other half.
        let half_a = format!("{}\n{}\n", s.admin.pubkey, s.writers[0].pubkey);
        let half_b = format!("{}\n{}\n", s.writers[1].pubkey, s.reader.pubkey);
        let (for_a, for_b) = if on {
            (half_b, half_a)
        } else {
            (String::new(), String::new())
        };
        for (name, text) in [
            ("admin", &for_a),
            ("w1", &for_a),
            ("w2", &for_b),
            ("reader", &for_b),
        ] {
            std::fs::write(s.firewall.join(format!("{name}.txt")), text).unwrap();
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = {
        let mut v = Vec::new();
        for (i, w) in s.writers.iter().enumerate() {
            v.push(spawn_writer(w.ws().await, i, done.clone()));
        }
        v
    };
    let mut clients = vec![
        ("admin", a),
        ("w1", s.writers[0].ws().await),
        ("w2", s.writers[1].ws().await),
        ("reader", s.reader.ws().await),
    ];
    // A full mesh first, so each half stays connected inside after the split.
    let everyone = [
        s.admin.pubkey.clone(),
        s.writers[0].pubkey.clone(),
        s.writers[1].pubkey.clone(),
        s.reader.pubkey.clone(),
    ];
    for (name, ws) in clients.iter_mut() {
        let me = info(ws).await["address"].as_str().unwrap().to_owned();
        wait_info(ws, &format!("{name} connected to all three others"), |v| {
            let remotes = v["remotes"].as_array().cloned().unwrap_or_default();
            everyone
                .iter()
                .filter(|k| **k != me)
                .all(|k| remotes.contains(&json!(k)))
        })
        .await;
    }
    let mut roots = RootLog::default();
    watch_roots(&mut clients, &mut roots, Duration::from_secs(2)).await;
    split(true);
    watch_roots(&mut clients, &mut roots, Duration::from_secs(5)).await;
    let before = info(&mut clients[3].1).await["confirmedLength"]
        .as_u64()
        .unwrap();
    watch_roots(&mut clients, &mut roots, Duration::from_secs(25)).await;
    // Half B kept writing but could not confirm: its confirmed length stood still (once
    // what was in flight at the split had landed) while its unconfirmed entries grew.
    let b = info(&mut clients[3].1).await;
    assert!(
        b["unconfirmedLength"].as_u64().unwrap() > 100,
        "half B wrote tentatively: {b}"
    );
    assert_eq!(
        b["confirmedLength"].as_u64().unwrap(),
        before,
        "half B cannot confirm without the sequencer: {b}"
    );
    split(false);
    watch_roots(&mut clients, &mut roots, Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(
        written > 100,
        "both halves wrote during the run ({written} txs)"
    );
    let mut refs: Vec<&mut Ws> = clients.iter_mut().map(|(_, ws)| ws).collect();
    let (root, length) = converge(&mut refs, 0).await;
    for (name, ws) in clients.iter_mut() {
        roots.record(name, &info(ws).await);
    }
    eprintln!(
        "healed: {written} txs, {length} entries, root {root}, {} confirmed roots checked",
        roots.0.len()
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_operations_are_refused_clearly_and_simulations_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let admin = Peer::start(dir.path(), "solo", 85, &dht.addr, &CHANNEL_ARGS);
    let mut a = admin.ws().await;
    let ok = |v: &Value| v["type"] == "subnet_op_result";
    let r = a
        .req(json!({"type": "subnet_op", "op": "add_admin", "address": admin.pubkey}))
        .await;
    assert!(ok(&r), "{r}");
    let r = a
        .req(json!({"type": "subnet_op", "op": "enable_transactions"}))
        .await;
    assert!(ok(&r), "{r}");
    let r = a
        .req(json!({"type": "tx", "command": {"op": "put", "key": "a", "value": 1}}))
        .await;
    assert_eq!(r["appended"], true, "{r}");
    let settled = |v: &Value| v["unconfirmedLength"] == 0 && v["waiting"] == 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.req(json!({"type": "get", "key": "kv/a"})).await["value"] != json!(1) {
        assert!(Instant::now() < deadline, "the first put was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = wait_info(&mut a, "the first put", settled).await["stateRoot"].clone();
    assert_eq!(
        a.req(json!({"type": "get", "key": "kv/a"})).await["value"],
        json!(1)
    );

    // Each refused with invalid_operation and a message naming what is wrong.
    let big = "x".repeat(5000);
    let cases = [
        (json!({"op": "no_such_op"}), "no_such_op"),
        (
            json!({"op": "do_something", "some_key": "x", "extra": 1}),
            "extra",
        ),
        (json!({"op": "do_something", "some_key": 5}), "some_key"),
        (json!({"op": "do_something"}), "some_key"),
        (json!({"op": "put", "key": "b", "value": big}), "4096"),
        (json!("{not json"), "not json"),
        (json!("read_chat_last"), "read"),
    ];
    for (command, mentions) in cases {
        let r = a.req(json!({"type": "tx", "command": command})).await;
        if r["type"] == "tx_result" {
            // A read function's name runs the read instead (as the reference's /tx does).
            assert!(r.get("read").is_some(), "{r}");
            continue;
        }
        assert_eq!(r["code"], "invalid_operation", "{r}");
        let text = r["error"].as_str().unwrap();
        assert!(
            text.contains(mentions),
            "{command}: {text:?} should mention {mentions:?}"
        );
    }
    let r = a.req(json!({"type": "get"})).await;
    assert_eq!(r["code"], "missing_field", "{r}");
    let r = a.req(json!({"type": "subnet_op", "op": "tx"})).await;
    assert_eq!(r["code"], "invalid_operation", "{r}");

    // A simulation reports what it would write and writes nothing.
    let r = a
        .req(json!({"type": "tx", "sim": 1, "command": {"op": "put", "key": "s", "value": 2}}))
        .await;
    assert_eq!(r["sim"], true, "{r}");
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(r["writes"]["kv/s"], json!(2), "{r}");
    let r = a
        .req(json!({"type": "tx", "sim": true, "command": {"op": "put", "key": "a", "value": 9}}))
        .await;
    assert_eq!(r["outcome"], "applied", "the owner may overwrite: {r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = wait_info(&mut a, "quiet", settled).await["stateRoot"].clone();
    assert_eq!(
        before, after,
        "refused and simulated operations changed the state"
    );
    for confirmed in [true, false] {
        let r = a
            .req(json!({"type": "get", "key": "kv/s", "confirmed": confirmed}))
            .await;
        assert_eq!(r["value"], Value::Null, "{r}");
    }
    assert_eq!(
        a.req(json!({"type": "get", "key": "kv/a"})).await["value"],
        json!(1)
    );

    // The state is a function of the logs: stop the peer, throw its state away and
    // rebuild it from the writer log alone; the root comes back the same.
    drop(a);
    drop(admin);
    let out = std::process::Command::new(sidechannel_support::BIN)
        .current_dir(dir.path())
        .args(["subnet", "rebuild", "--peer-store-name", "solo"])
        .args(CHANNEL_ARGS)
        .output()
        .expect("run intercom subnet rebuild");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(rebuilt["stateRoot"], after, "{rebuilt}");
    assert_eq!(rebuilt["unconfirmedLength"], 0, "{rebuilt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_are_admitted_automatically_once_the_admin_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let admin = Peer::start(dir.path(), "open-admin", 86, &dht.addr, &CHANNEL_ARGS);
    let args = [&CHANNEL_ARGS[..], &["--subnet-bootstrap", &admin.writer]].concat();
    let joiner = Peer::start(dir.path(), "open-joiner", 87, &dht.addr, &args);
    let mut a = admin.ws().await;
    let r = a
        .req(json!({"type": "subnet_op", "op": "add_admin", "address": admin.pubkey}))
        .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    let mut j = joiner.ws().await;
    // Connected and synced, but not admitted while automatic joins are off.
    wait_info(&mut j, "the admin's entries", |v| {
        v["admin"] == json!(admin.pubkey)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(info(&mut j).await["isWriter"], false);
    let r = a
        .req(json!({"type": "subnet_op", "op": "set_auto_add_writers", "enabled": "1"}))
        .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    // The joiner's signed request (sent when it connected) is appended by the bootstrap.
    wait_info(&mut j, "automatic admission", |v| v["isWriter"] == true).await;
    let v = wait_info(&mut a, "the joiner among the writers", |v| {
        v["writers"]
            .as_array()
            .is_some_and(|w| w.contains(&json!(joiner.writer)))
    })
    .await;
    assert_eq!(v["autoAddWriters"], true);
}
