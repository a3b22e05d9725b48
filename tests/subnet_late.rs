//! Writers admitted late, with users' timing (the subnet issue's done-when 1): `intercom
//! run` peers on a loopback DHT; writers admitted 1 s, 15 s and 120 s after they
//! connected (one through the `/add_writer` slash command over the bridge, the last after
//! its connection to the admin dropped and came back, the admin having been killed and
//! restarted), and an indexer admitted 25 s after it connected. Each one's transaction
//! must be confirmed on every peer within 2 s of its admission, checked on the reader's
//! log lengths, confirmed length and confirmed values, not on roots alone.

mod sidechannel_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidechannel_support::{DhtNode, Peer, Ws, BIN};

const CHANNEL_ARGS: [&str; 2] = ["--subnet-channel", "subnet-late"];
/// How soon after its admission a writer's entry must be confirmed everywhere.
const DEADLINE: Duration = Duration::from_secs(2);

async fn info(ws: &mut Ws) -> Value {
    let v = ws.req(json!({"type": "subnet"})).await;
    assert_eq!(v["type"], "subnet", "{v}");
    v
}

/// Waits (60 s at most) until `ws`'s peer has a subnet connection to each of `peers`.
async fn wait_connected(ws: &mut Ws, peers: &[&Peer]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = info(ws).await;
        let remotes = v["remotes"].as_array().cloned().unwrap_or_default();
        if peers.iter().all(|p| remotes.contains(&json!(p.pubkey))) {
            return;
        }
        assert!(Instant::now() < deadline, "peers never connected: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The length of `writer`'s log as `v` (a subnet info) reports it.
fn log_length(v: &Value, writer: &str) -> u64 {
    v["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["key"] == writer)
        .and_then(|l| l["length"].as_u64())
        .unwrap_or(0)
}

enum How {
    BridgeOp(&'static str),
    SlashCommand,
}

/// Admits `writer` through `admin` and checks that its transaction is confirmed on the
/// admin, the reader and `others` within [`DEADLINE`]. Returns how long that took.
async fn admit_and_check(
    admin: &mut Ws,
    reader: &mut Ws,
    others: &mut [&mut Ws],
    writer: &Peer,
    how: How,
    tag: &str,
) -> Duration {
    let before = info(reader).await["confirmedLength"].as_u64().unwrap();
    let reply = match how {
        How::BridgeOp(op) => {
            admin
                .req(json!({"type": "subnet_op", "op": op, "key": writer.writer}))
                .await
        }
        How::SlashCommand => admin
            .req(json!({"type": "cli", "command": format!("/add_writer --key {}", writer.writer)}))
            .await,
    };
    assert!(
        reply["type"] == "subnet_op_result" || reply["ok"] == true,
        "admission refused: {reply}"
    );
    let admitted = Instant::now();
    let mut ws = writer.ws().await;
    let tx = json!({"type": "tx", "command": {"op": "put", "key": tag, "value": tag}});
    loop {
        let v = ws.req(tx.clone()).await;
        if v["type"] == "tx_result" && v["appended"] == true {
            break;
        }
        assert_eq!(v["code"], "subnet_denied", "{v}");
        assert!(
            admitted.elapsed() < DEADLINE,
            "{tag}: the writer did not learn of its admission within {DEADLINE:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = format!("kv/{tag}");
    loop {
        let mut everywhere = true;
        for c in [&mut *admin, &mut *reader]
            .into_iter()
            .chain(others.iter_mut().map(|c| &mut **c))
        {
            let v = c.req(json!({"type": "get", "key": key})).await;
            everywhere &= v["value"] == json!(tag) && v["confirmed"] == true;
        }
        let r = info(reader).await;
        if everywhere
            && log_length(&r, &writer.writer) >= 1
            && r["confirmedLength"].as_u64().unwrap() > before
        {
            break;
        }
        assert!(
            admitted.elapsed() < DEADLINE,
            "{tag}: not confirmed everywhere {DEADLINE:?} after its admission; the reader \
             reports {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = admitted.elapsed();
    eprintln!("{tag}: confirmed on every peer {took:?} after its admission");
    took
}

/// Sleeps until `at`.
async fn until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_and_an_indexer_admitted_late_are_confirmed_everywhere_within_2s() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let start_admin = || {
        Peer::start(
            dir.path(),
            "admin",
            91,
            &dht.addr,
            &[&CHANNEL_ARGS[..], &["--sc-bridge-cli", "1"]].concat(),
        )
    };
    let admin = start_admin();
    let mut a = admin.ws().await;
    let r = a
        .req(json!({"type": "cli", "command": format!("/add_admin --address {}", admin.pubkey)}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = a
        .req(json!({"type": "subnet_op", "op": "enable_transactions"}))
        .await;
    assert_eq!(r["type"], "subnet_op_result", "{r}");
    let joiner = |name: &str, seed: u8| {
        Peer::start(
            dir.path(),
            name,
            seed,
            &dht.addr,
            &[&CHANNEL_ARGS[..], &["--subnet-bootstrap", &admin.writer]].concat(),
        )
    };
    let reader = joiner("reader", 92);
    let w1 = joiner("w1", 93);
    let w15 = joiner("w15", 94);
    let indexer = joiner("indexer", 95);
    let w120 = joiner("w120", 96);
    wait_connected(&mut a, &[&reader, &w1, &w15, &indexer, &w120]).await;
    let connected = Instant::now();
    let mut r = reader.ws().await;

    until(connected + Duration::from_secs(1)).await;
    admit_and_check(
        &mut a,
        &mut r,
        &mut [],
        &w1,
        How::BridgeOp("add_writer"),
        "w1",
    )
    .await;

    until(connected + Duration::from_secs(15)).await;
    let mut c1 = w1.ws().await;
    admit_and_check(
        &mut a,
        &mut r,
        &mut [&mut c1],
        &w15,
        How::SlashCommand,
        "w15",
    )
    .await;

    until(connected + Duration::from_secs(25)).await;
    let mut c15 = w15.ws().await;
    admit_and_check(
        &mut a,
        &mut r,
        &mut [&mut c1, &mut c15],
        &indexer,
        How::BridgeOp("add_indexer"),
        "indexer",
    )
    .await;
    let v = info(&mut r).await;
    assert_eq!(v["indexers"].as_array().map(Vec::len), Some(2), "{v}");

    // The admin is killed and restarted: every connection to it drops and comes back.
    until(connected + Duration::from_secs(40)).await;
    drop(a);
    drop(admin);
    let admin = start_admin();
    let mut a = admin.ws().await;
    wait_connected(&mut a, &[&reader, &w1, &w15, &indexer, &w120]).await;
    let v = info(&mut a).await;
    assert_eq!(
        v["admin"],
        json!(admin.pubkey),
        "the restarted admin kept its state: {v}"
    );

    until(connected + Duration::from_secs(120)).await;
    let mut ci = indexer.ws().await;
    admit_and_check(
        &mut a,
        &mut r,
        &mut [&mut c1, &mut c15, &mut ci],
        &w120,
        How::BridgeOp("add_writer"),
        "w120",
    )
    .await;
    // Every earlier admission's value is still confirmed on the reader.
    for tag in ["w1", "w15", "indexer", "w120"] {
        let v = r
            .req(json!({"type": "get", "key": format!("kv/{tag}")}))
            .await;
        assert_eq!(v["value"], json!(tag), "{v}");
    }

    // A light client: the reader's proof of a value (and of an absence), checked offline
    // against the root the admin reports.
    let trusted = info(&mut a).await["stateRoot"].as_str().unwrap().to_owned();
    let proved = r
        .req(json!({"type": "get", "key": "kv/w15", "proof": true}))
        .await;
    assert_eq!(proved["type"], "get_result", "{proved}");
    assert_eq!(proved["stateRoot"], json!(trusted), "{proved}");
    let absent = r
        .req(json!({"type": "get", "key": "kv/none", "proof": true}))
        .await;
    let verify = |proof: &Value, root: &str| {
        let mut child = std::process::Command::new(BIN)
            .args(["subnet", "verify-proof", "-", "--root", root])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn intercom subnet verify-proof");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), proof.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).expect("verify-proof prints JSON");
        (out.status.success(), v)
    };
    let (ok, v) = verify(&proved, &trusted);
    assert!(ok, "{v}");
    assert_eq!(v["value"], json!("w15"), "{v}");
    let (ok, v) = verify(&absent, &trusted);
    assert!(ok && v["present"] == false, "{v}");
    let mut forged = proved.clone();
    forged["valueJson"] = json!("\"w16\"");
    forged["value"] = json!("w16");
    let (ok, v) = verify(&forged, &trusted);
    assert!(!ok, "a forged value is refused: {v}");
    let (ok, v) = verify(&proved, &"0".repeat(64));
    assert!(!ok, "a proof for another root is refused: {v}");
}
