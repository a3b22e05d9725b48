//! Live interop between an `intercom run` peer (driven through its SC-Bridge) and a JS
//! sidechannel peer built from the pinned npm modules (`tests/node/sidechannel-peer.js`:
//! hyperswarm + protomux + compact-encoding + sodium-native), over a loopback DHT.
//!
//! Both directions, on the entry channel `0000intercom` and on a welcomed channel
//! (`room`, owned by the intercom peer): the JS peer verifies our signatures, proofs of
//! work and welcome and reports its verdicts; our peer delivers the JS peer's signed,
//! PoW-stamped messages only because they verify (a tampered signature and a missing
//! proof of work from the same JS peer are dropped and reported).

mod sidechannel_support;
use sidechannel_support as support;

use std::time::Duration;

use intercom_sidechannel::create_welcome;
use serde_json::{json, Value};
use support::{is_drop, is_message, keypair, DhtNode, JsPeer, Peer, CONNECT, STEP};

const ENTRY: &str = "0000intercom";

fn js_message<'a>(channel: &'a str, text: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| {
        e["event"] == "message" && e["channel"] == channel && e["payload"]["message"] == text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_and_rust_exchange_signed_pow_messages() {
    tokio::time::timeout(Duration::from_secs(400), scenario())
        .await
        .expect("interop scenario within 400 s");
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let owner = keypair(1);
    let welcome = create_welcome(&owner, "room", "welcome to room", 1_700_000_000_000);
    let a_key = hex::encode(owner.public_key);
    let a = Peer::start(
        dir.path(),
        "a",
        1,
        &dht.addr,
        &[
            "--sidechannels",
            "room",
            "--sidechannel-owner",
            &format!("room:{a_key}"),
            "--sidechannel-welcome",
            &support::welcome_flag("room", &welcome),
        ],
    );
    let mut wa = a.ws().await;
    let mut js = JsPeer::start(&dht.addr, 9).await;
    js.dial(&[&a.pubkey]).await;

    // Entry channel, Rust → JS: signed by A, PoW at difficulty 12, verified by JS.
    let (n, _) = wa
        .send_until_peers(ENTRY, 1, |n| json!(format!("rust hello #{n}")))
        .await;
    let text = format!("rust hello #{n}");
    let (m, _) = js
        .wait("A's entry message", STEP, js_message(ENTRY, &text))
        .await;
    assert_eq!(m["payload"]["from"], a_key.as_str());
    assert_eq!(m["payload"]["origin"], a_key.as_str());
    assert_eq!(m["payload"]["type"], "sidechannel");
    assert_eq!(m["payload"]["ttl"], 3);
    assert_eq!(m["sigValid"], true, "JS verifies our signature: {m}");
    assert!(
        m["powBits"].as_u64().unwrap() >= 12,
        "JS checks our proof of work: {m}"
    );
    assert_eq!(m["payload"]["pow"]["difficulty"], 12);

    // Entry channel, JS → Rust: a signed message with PoW 12 is delivered.
    let r = js
        .cmd(json!({"op": "send", "channel": ENTRY, "message": "js hello", "pow": 12}))
        .await;
    assert_eq!(r["peers"], 1);
    let (e, _) = wa
        .wait_event("JS entry message", STEP, |e| {
            is_message(e, ENTRY) && e["message"] == "js hello"
        })
        .await;
    assert_eq!(e["from"], js.pubkey.as_str());
    assert_eq!(e["id"], r["id"]);
    // The same JS peer with a tampered signature, then without proof of work: dropped.
    js.cmd(
        json!({"op": "send", "channel": ENTRY, "message": "tampered", "pow": 12, "badSig": true}),
    )
    .await;
    let (_, before) = wa
        .wait_event("bad_signature drop", STEP, |e| {
            is_drop(e, ENTRY, "bad_signature")
        })
        .await;
    js.cmd(json!({"op": "send", "channel": ENTRY, "message": "lazy"}))
        .await;
    let (d, before2) = wa
        .wait_event("pow drop", STEP, |e| is_drop(e, ENTRY, "pow"))
        .await;
    assert_eq!(d["from"], js.pubkey.as_str());
    assert!(
        before.iter().chain(&before2).all(|e| !is_message(e, ENTRY)),
        "nothing invalid delivered: {before:?} {before2:?}"
    );

    // Welcomed channel: JS joins `room`; A (the owner) sends its welcome when the
    // channel opens, and JS verifies both the payload signature and the welcome.
    js.cmd(json!({"op": "join", "channel": "room"})).await;
    let (w, _) = js
        .wait("A's welcome on room", CONNECT, |e| {
            e["event"] == "message"
                && e["channel"] == "room"
                && e["payload"]["message"]["control"] == "welcome"
        })
        .await;
    assert_eq!(w["sigValid"], true, "{w}");
    assert_eq!(w["welcomeValid"], true, "{w}");
    assert_eq!(w["payload"]["message"]["welcome"], welcome);

    let (n, _) = wa
        .send_until_peers("room", 1, |n| json!({"text": "rust in room", "n": n}))
        .await;
    let (m, _) = js
        .wait("A's room message", STEP, |e| {
            e["event"] == "message" && e["channel"] == "room" && e["payload"]["message"]["n"] == n
        })
        .await;
    assert_eq!(m["sigValid"], true, "{m}");
    assert!(m["powBits"].as_u64().unwrap() >= 12, "{m}");
    assert_eq!(m["payload"]["channel"], "room");

    let r = js
        .send_until_peers(
            json!({"channel": "room", "message": {"text": "js in room"}, "pow": 12}),
            1,
        )
        .await;
    let (e, _) = wa
        .wait_event("JS room message", STEP, |e| {
            is_message(e, "room") && e["message"]["text"] == "js in room"
        })
        .await;
    assert_eq!(e["from"], js.pubkey.as_str());
    assert_eq!(e["id"], r["id"]);
    // A forged `from` (A's key, JS's signature) does not pass on the welcomed channel.
    js.cmd(json!({"op": "send", "channel": "room", "message": "forged", "pow": 12, "spoofFrom": a_key}))
        .await;
    let (_, before) = wa
        .wait_event("forged from dropped", STEP, |e| {
            is_drop(e, "room", "bad_signature")
        })
        .await;
    assert!(before.iter().all(|e| e["message"] != "forged"));

    let s = wa.stats().await;
    assert!(s["sidechannel"]["delivered"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["sidechannel"]["dropped"].as_u64().unwrap() >= 3, "{s}");
    drop(js);
    drop(a);
}
