//! JS interop: vectors written by tests/node/sidechannel-golden.js (a plain-JS rendition of
//! the reference's algorithms) are reproduced and verified here, and vectors made here
//! are verified by the same script.

use std::path::PathBuf;
use std::process::Command;

use intercom_crypto::KeyPair;
use intercom_sidechannel::credentials::{self, InviteParams};
use intercom_sidechannel::payload::{self, Payload, PrepareParams};
use intercom_sidechannel::{args, js};
use serde_json::{json, Value};

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests")
}

fn golden() -> Value {
    let path = tests_dir().join("golden/sidechannel.json");
    let text = std::fs::read_to_string(&path)
        .expect("golden file (run node tests/node/sidechannel-golden.js)");
    serde_json::from_str(&text).unwrap()
}

fn kp(seed: u64) -> KeyPair {
    KeyPair::from_seed(&[seed as u8; 32])
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn keys_topics_and_helpers_match() {
    let g = golden();
    for k in g["keys"].as_array().unwrap() {
        assert_eq!(
            hex::encode(kp(k["seed"].as_u64().unwrap()).public_key),
            k["publicKey"]
        );
    }
    for t in g["topics"].as_array().unwrap() {
        assert_eq!(
            hex::encode(payload::topic(t["name"].as_str().unwrap())),
            t["topic"]
        );
    }
    for z in g["leadingZeros"].as_array().unwrap() {
        assert_eq!(
            u64::from(payload::leading_zero_bits(&unhex(&z["hex"]))),
            z["bits"].as_u64().unwrap()
        );
    }
    for k in g["keyHex"].as_array().unwrap() {
        let want = k["output"].as_str().map(str::to_owned);
        assert_eq!(js::normalize_key_hex(&k["input"]), want, "{}", k["input"]);
    }
}

#[test]
fn js_payloads_are_reproduced_and_verified() {
    let g = golden();
    for v in g["payloads"].as_array().unwrap() {
        let desc = v["desc"].as_str().unwrap();
        let keypair = kp(v["seed"].as_u64().unwrap());
        let difficulty = v["difficulty"].as_u64().unwrap() as u32;
        let ours = payload::prepare(
            &keypair,
            PrepareParams {
                channel: v["channel"].as_str().unwrap().into(),
                message: v["message"].clone(),
                ts: v["ts"].as_u64().unwrap(),
                ttl: v["ttl"].as_u64().unwrap() as u32,
                invite: Some(v["invite"].clone()).filter(|i| !i.is_null()),
                pow_difficulty: (difficulty > 0).then_some(difficulty),
                id_suffix: v["idSuffix"].as_str().unwrap().into(),
            },
        );
        assert_eq!(ours.to_json(), v["json"].as_str().unwrap(), "{desc}: JSON");
        assert_eq!(hex::encode(ours.encode()), v["wire"], "{desc}: wire");
        // Decode what JS sent and check it as a receiver would.
        let theirs = Payload::decode(&unhex(&v["wire"])).unwrap();
        assert_eq!(theirs, ours, "{desc}");
        assert_eq!(payload::sig_base(&theirs), v["sigBase"].as_str().unwrap());
        assert!(payload::verify(&theirs, &hex::encode(keypair.public_key)));
        if difficulty > 0 {
            assert!(payload::check_pow(&theirs, difficulty), "{desc}: pow");
        }
        assert_eq!(theirs.js_len(), v["json"].as_str().unwrap().len());
    }
    for r in g["relayed"].as_array().unwrap() {
        let p = Payload::from_value(r["payload"].clone()).unwrap();
        let relayed = p.relayed(r["ttl"].as_f64().unwrap(), r["relayedBy"].as_str().unwrap());
        assert_eq!(relayed.to_json(), r["json"].as_str().unwrap());
        assert_eq!(hex::encode(relayed.encode()), r["wire"]);
    }
}

#[test]
fn js_open_request_without_invite_passes_our_pow() {
    let g = golden();
    let q = &g["openChannelQuirk"];
    // JS receivers reject it (the sender hashed `invite: null`); we accept it.
    assert_eq!(q["jsReceiverPowOk"], json!(false));
    let p = Payload::decode(&unhex(&q["wire"])).unwrap();
    assert!(payload::check_pow(&p, 12));
}

#[test]
fn js_welcomes_and_invites_are_reproduced_and_verified() {
    let g = golden();
    let owner = g["owner"].as_str().unwrap();
    for w in g["welcomes"].as_array().unwrap() {
        let keypair = kp(w["seed"].as_u64().unwrap());
        let channel = w["channel"].as_str().unwrap();
        let ours = credentials::create_welcome(
            &keypair,
            channel,
            w["text"].as_str().unwrap(),
            w["issuedAt"].as_u64().unwrap(),
        );
        assert_eq!(ours, w["welcome"]);
        assert_eq!(credentials::to_base64(&ours), w["b64"]);
        credentials::verify_welcome(&w["welcome"], channel, Some(owner)).unwrap();
        let parsed = args::parse_welcome_arg(w["b64"].as_str().unwrap()).unwrap();
        assert_eq!(parsed, w["welcome"]);
        let prefixed = format!("b64:{}", w["b64"].as_str().unwrap());
        assert_eq!(args::parse_welcome_arg(&prefixed).unwrap(), w["welcome"]);
    }
    for i in g["invites"].as_array().unwrap() {
        let keypair = kp(i["seed"].as_u64().unwrap());
        let channel = i["channel"].as_str().unwrap();
        let invitee = i["invitee"].as_str().unwrap();
        let ours = credentials::create_invite_with(
            &keypair,
            InviteParams {
                channel: channel.into(),
                invitee: invitee.into(),
                inviter_address: None,
                issued_at: i["issuedAt"].as_u64().unwrap(),
                ttl_ms: i["ttlMs"].as_u64().unwrap(),
                nonce: i["nonce"].as_str().unwrap().into(),
                welcome: Some(i["welcome"].clone()).filter(|w| !w.is_null()),
            },
        )
        .unwrap();
        assert_eq!(ours, i["invite"]);
        assert_eq!(credentials::to_base64(&ours), i["b64"]);
        let issued = i["issuedAt"].as_u64().unwrap();
        let v =
            credentials::verify_invite(&i["invite"], channel, invitee, None, issued + 1).unwrap();
        assert_eq!(v.expires_at, (issued + i["ttlMs"].as_u64().unwrap()) as f64);
        assert_eq!(
            args::parse_invite_arg(i["b64"].as_str().unwrap()).unwrap(),
            i["invite"]
        );
    }
}

/// Runs the JS verifier over vectors made here; skipped with a message when the pinned
/// JS modules are not installed (`npm ci --prefix tests`).
#[test]
fn js_verifies_rust_made_vectors() {
    let dir = tests_dir();
    if !dir.join("node_modules/sodium-native").exists() {
        eprintln!("skipping: JS modules missing, run `npm ci --prefix tests`");
        return;
    }
    let owner = kp(11);
    let peer = kp(12);
    let owner_hex = hex::encode(owner.public_key);
    let peer_hex = hex::encode(peer.public_key);
    let now = 1_700_000_000_000u64;
    let welcome = credentials::create_welcome(&owner, "room", "hi \"there\" ü", now);
    let invite =
        credentials::create_invite(&owner, "vip", &peer_hex, 60_000, Some(welcome.clone()), now)
            .unwrap();
    let messages = [
        json!("plain"),
        json!({"b": [1, 2.5, null], "a": {"y": 1e21, "x": -0.0}, "7": "seven"}),
        json!({"control": "welcome", "welcome": welcome}),
        json!({"control": "auth", "invite": invite}),
        json!("ü🦀\u{2028}\u{1}"),
    ];
    let mut payloads = Vec::new();
    let mut expect = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let difficulty = [0, 12, 8, 4, 10][i];
        let p = payload::prepare(
            &peer,
            PrepareParams {
                channel: "room".into(),
                message: m.clone(),
                ts: now + i as u64,
                ttl: 3,
                invite: (i == 4).then(|| invite.clone()),
                pow_difficulty: (difficulty > 0).then_some(difficulty),
                id_suffix: format!("rust000{i}"),
            },
        );
        payloads.push(
            json!({"wire": hex::encode(p.encode()), "json": p.to_json(), "difficulty": difficulty}),
        );
        expect.push((p.js_len(), true));
        // The relayed copy still verifies.
        let r = p.relayed(2.0, &owner_hex);
        payloads.push(
            json!({"wire": hex::encode(r.encode()), "json": r.to_json(), "difficulty": difficulty}),
        );
        expect.push((r.js_len(), true));
    }
    // A forged payload must fail in JS too.
    let mut forged = payload::prepare(
        &peer,
        PrepareParams {
            channel: "room".into(),
            message: json!("x"),
            ts: now,
            ttl: 3,
            invite: None,
            pow_difficulty: None,
            id_suffix: "forged00".into(),
        },
    );
    forged.as_map_mut().insert("message".into(), json!("y"));
    payloads.push(
        json!({"wire": hex::encode(forged.encode()), "json": forged.to_json(), "difficulty": 0}),
    );
    expect.push((forged.js_len(), false));

    let input = json!({
        "payloads": payloads,
        "welcomes": [
            {"welcome": welcome, "channel": "room", "owner": owner_hex},
            {"welcome": welcome, "channel": "other", "owner": owner_hex},
        ],
        "invites": [
            {"invite": invite, "channel": "vip", "invitee": peer_hex, "now": now + 1},
            {"invite": invite, "channel": "vip", "invitee": peer_hex, "now": now + 60_000},
        ],
        "topics": [
            {"name": "0000intercom", "topic": hex::encode(payload::topic("0000intercom"))},
            {"name": "  spaced  ", "topic": hex::encode(payload::topic("spaced"))},
        ],
    });
    let file =
        std::env::temp_dir().join(format!("sidechannel-vectors-{}.json", std::process::id()));
    std::fs::write(&file, input.to_string()).unwrap();
    let out = Command::new("node")
        .arg(dir.join("node/sidechannel-golden.js"))
        .arg("verify")
        .arg(&file)
        .current_dir(&dir)
        .output()
        .expect("run node");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = report["payloads"].as_array().unwrap();
    assert_eq!(got.len(), expect.len());
    for (i, (r, (len, valid))) in got.iter().zip(&expect).enumerate() {
        assert_eq!(r["sameJson"], json!(true), "payload {i}: JSON differs");
        assert_eq!(r["reencoded"], json!(true), "payload {i}: wire differs");
        assert_eq!(
            r["bytes"].as_u64().unwrap() as usize,
            *len,
            "payload {i}: size"
        );
        assert_eq!(r["sig"], json!(*valid), "payload {i}: signature");
        if !r["pow"].is_null() {
            assert_eq!(r["pow"], json!(true), "payload {i}: pow");
        }
    }
    assert_eq!(report["welcomes"], json!([true, false]));
    assert_eq!(report["invites"], json!([true, false]));
    assert_eq!(report["topics"], json!([true, true]));
}
