//! Golden vectors written by the pinned JS hyperdht 6.34.0 (tests/node/gen-golden-hyperdht.js):
//! every message codec, signables and signatures, encrypted holepunch payloads, and
//! request sequences replayed through `lib/persistent.js`, which the Rust store must answer
//! the same way.

use std::collections::HashSet;
use std::net::{SocketAddrV4, SocketAddrV6};

use intercom_crypto::KeyPair;
use intercom_encoding::{decode, encode, DecodeError};
use intercom_hyperdht::constants::{error_code, firewall, Command, NS};
use intercom_hyperdht::crypto::{
    announce_signable, holepunch_secret, immutable_target, mutable_signable, public_key_target,
    sign_announce, sign_mutable, sign_unannounce, unannounce_signable, verify_announce,
    verify_mutable, verify_unannounce, SecurePayload,
};
use intercom_hyperdht::messages::*;
use intercom_hyperdht::store::{
    CacheLimits, Dispatch, RecordStore, Request, Response, StoreConfig,
};
use serde_json::{json, Value};

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/hyperdht-messages.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    bytes(v).try_into().expect("length")
}

fn opt_arr<const N: usize>(v: &Value) -> Option<[u8; N]> {
    (!v.is_null()).then(|| arr(v))
}

fn h(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn a4(a: &SocketAddrV4) -> Value {
    Value::String(a.to_string())
}

/// `[groups]:port` with every group in lowercase hex without leading zeros, as the JS
/// ipv6 decoder writes hosts.
fn a6(a: &SocketAddrV6) -> Value {
    let groups: Vec<String> = a.ip().segments().iter().map(|g| format!("{g:x}")).collect();
    Value::String(format!("[{}]:{}", groups.join(":"), a.port()))
}

fn a4s(list: &[SocketAddrV4]) -> Value {
    list.iter().map(a4).collect()
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> Value) -> Value {
    v.as_ref().map_or(Value::Null, f)
}

fn parse_addr(v: &Value) -> SocketAddrV4 {
    v.as_str().expect("address").parse().expect("ipv4 address")
}

fn peer_json(p: &Peer) -> Value {
    json!({ "publicKey": h(&p.public_key), "relayAddresses": a4s(&p.relay_addresses) })
}

fn peer_from_json(v: &Value) -> Peer {
    Peer {
        public_key: arr(&v["publicKey"]),
        relay_addresses: v["relayAddresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(parse_addr)
            .collect(),
    }
}

fn holepunch_payload_json(p: &HolepunchPayload) -> Value {
    json!({
        "error": p.error,
        "firewall": p.firewall,
        "round": p.round,
        "connected": p.connected,
        "punching": p.punching,
        "addresses": opt(&p.addresses, |a| a4s(a)),
        "remoteAddress": opt(&p.remote_address, a4),
        "token": opt(&p.token, |t| h(t)),
        "remoteToken": opt(&p.remote_token, |t| h(t)),
    })
}

fn noise_payload_json(p: &NoisePayload) -> Value {
    json!({
        "version": p.version,
        "error": p.error,
        "firewall": p.firewall,
        "holepunch": opt(&p.holepunch, |hp| json!({
            "id": hp.id,
            "relays": hp.relays.iter().map(|r| json!({
                "relayAddress": a4(&r.relay_address),
                "peerAddress": a4(&r.peer_address),
            })).collect::<Vec<_>>(),
        })),
        "addresses4": a4s(&p.addresses4),
        "addresses6": p.addresses6.iter().map(a6).collect::<Vec<_>>(),
        "udx": opt(&p.udx, |u| json!({
            "version": u.version,
            "reusableSocket": u.reusable_socket,
            "id": u.id,
            "seq": u.seq,
        })),
        "secretStream": opt(&p.secret_stream, |s| json!({ "version": s.version })),
        "relayThrough": opt(&p.relay_through, |r| json!({
            "version": r.version,
            "publicKey": h(&r.public_key),
            "token": h(&r.token),
        })),
        "relayAddresses": opt(&p.relay_addresses, |a| a4s(a)),
    })
}

/// Decodes `data` as the JS message `ty`; returns the JS-shaped JSON and the re-encoding.
fn decode_as(ty: &str, data: &[u8]) -> Result<(Value, Vec<u8>), DecodeError> {
    Ok(match ty {
        "peer" => {
            let v: Peer = decode(data)?;
            (peer_json(&v), encode(&v))
        }
        "peers" => {
            let v: Peers = decode(data)?;
            (v.0.iter().map(peer_json).collect(), encode(&v))
        }
        "lookupRawReply" => {
            let v: LookupReply = decode(data)?;
            let records: Vec<Vec<u8>> = v.peers.iter().map(encode).collect();
            let raw = encode(&LookupRawReply {
                peers: records.iter().map(Vec::as_slice).collect(),
                bump: v.bump,
            });
            assert_eq!(raw, encode(&v), "raw and typed lookup replies differ");
            (
                json!({ "peers": v.peers.iter().map(peer_json).collect::<Vec<_>>(), "bump": v.bump }),
                raw,
            )
        }
        "announce" => {
            let v: Announce = decode(data)?;
            (
                json!({
                    "peer": opt(&v.peer, peer_json),
                    "refresh": opt(&v.refresh, |r| h(r)),
                    "signature": opt(&v.signature, |s| h(s)),
                    "bump": v.bump,
                }),
                encode(&v),
            )
        }
        "handshake" => {
            let v: Handshake = decode(data)?;
            (
                json!({
                    "mode": v.mode,
                    "noise": h(&v.noise),
                    "peerAddress": opt(&v.peer_address, a4),
                    "relayAddress": opt(&v.relay_address, a4),
                }),
                encode(&v),
            )
        }
        "noisePayload" => {
            let v: NoisePayload = decode(data)?;
            (noise_payload_json(&v), encode(&v))
        }
        "holepunch" => {
            let v: Holepunch = decode(data)?;
            (
                json!({
                    "mode": v.mode,
                    "id": v.id,
                    "payload": h(&v.payload),
                    "peerAddress": opt(&v.peer_address, a4),
                }),
                encode(&v),
            )
        }
        "holepunchPayload" => {
            let v: HolepunchPayload = decode(data)?;
            (holepunch_payload_json(&v), encode(&v))
        }
        "mutableSignable" => {
            let v: MutableSignable = decode(data)?;
            (json!({ "seq": v.seq, "value": h(&v.value) }), encode(&v))
        }
        "mutablePutRequest" => {
            let v: MutablePutRequest = decode(data)?;
            (
                json!({
                    "publicKey": h(&v.public_key),
                    "seq": v.seq,
                    "value": h(&v.value),
                    "signature": h(&v.signature),
                }),
                encode(&v),
            )
        }
        "mutableGetResponse" => {
            let v: MutableGetResponse = decode(data)?;
            (
                json!({ "seq": v.seq, "value": h(&v.value), "signature": h(&v.signature) }),
                encode(&v),
            )
        }
        "pluginRequest" => {
            let v: PluginRequest = decode(data)?;
            (
                json!({
                    "plugin": v.plugin,
                    "version": v.version,
                    "command": v.command,
                    "value": opt(&v.value, |b| h(b)),
                }),
                encode(&v),
            )
        }
        other => panic!("unknown message type {other}"),
    })
}

#[test]
fn messages_match_js_byte_for_byte() {
    let g = golden();
    assert_eq!(g["hyperdht"], "6.34.0");
    let messages = g["messages"].as_array().unwrap();
    let types: HashSet<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 12, "every messages.js codec is covered");
    for m in messages {
        let ty = m["type"].as_str().unwrap();
        let encoded = bytes(&m["encoded"]);
        let (json, reencoded) =
            decode_as(ty, &encoded).unwrap_or_else(|e| panic!("{ty} {}: {e}", m["encoded"]));
        assert_eq!(json, m["decoded"], "{ty} {}", m["encoded"]);
        assert_eq!(h(&reencoded), m["reencoded"], "{ty} {}", m["encoded"]);
        intercom_hyperdht::fuzz_decode_all(&encoded);
    }
}

#[test]
fn prefixes_decode_or_fail_like_js() {
    let g = golden();
    let mut decoded = 0;
    let messages = g["messages"].as_array().unwrap();
    for p in g["prefixes"].as_array().unwrap() {
        let m = &messages[p["message"].as_u64().unwrap() as usize];
        let ty = m["type"].as_str().unwrap();
        let n = p["length"].as_u64().unwrap() as usize;
        let data = &bytes(&m["encoded"])[..n];
        match (decode_as(ty, data), p.get("decoded")) {
            (Ok((json, _)), Some(js)) => {
                assert_eq!(&json, js, "{ty} {}", hex::encode(data));
                decoded += 1;
            }
            (Err(_), None) => {}
            (r, js) => panic!("{ty} {}: rust {r:?}, js {js:?}", hex::encode(data)),
        }
        intercom_hyperdht::fuzz_decode_all(data);
    }
    assert!(decoded > 0);
    for inv in g["invalid"].as_array().unwrap() {
        let ty = inv["type"].as_str().unwrap();
        assert!(
            decode_as(ty, &bytes(&inv["hex"])).is_err(),
            "{ty} {}",
            inv["hex"]
        );
    }
}

#[test]
fn constants_and_namespaces_match_js() {
    let g = golden();
    let commands = g["constants"]["COMMANDS"].as_object().unwrap();
    assert_eq!(commands.len(), Command::ALL.len());
    for (name, id) in commands {
        let c = Command::from_id(id.as_u64().unwrap()).expect(name);
        let expected = name.replace('_', "").to_lowercase();
        assert_eq!(format!("{c:?}").to_lowercase(), expected);
    }
    let fw = &g["constants"]["FIREWALL"];
    assert_eq!(fw["UNKNOWN"], firewall::UNKNOWN);
    assert_eq!(fw["OPEN"], firewall::OPEN);
    assert_eq!(fw["CONSISTENT"], firewall::CONSISTENT);
    assert_eq!(fw["RANDOM"], firewall::RANDOM);
    let err = &g["constants"]["ERROR"];
    assert_eq!(err["NONE"], error_code::NONE);
    assert_eq!(err["ABORTED"], error_code::ABORTED);
    assert_eq!(err["VERSION_MISMATCH"], error_code::VERSION_MISMATCH);
    assert_eq!(err["TRY_LATER"], error_code::TRY_LATER);
    assert_eq!(err["SEQ_REUSED"], error_code::SEQ_REUSED);
    assert_eq!(err["SEQ_TOO_LOW"], error_code::SEQ_TOO_LOW);

    let ns = &g["namespaces"];
    assert_eq!(h(&NS.announce), ns["ANNOUNCE"]);
    assert_eq!(h(&NS.unannounce), ns["UNANNOUNCE"]);
    assert_eq!(h(&NS.mutable_put), ns["MUTABLE_PUT"]);
    assert_eq!(h(&NS.peer_handshake), ns["PEER_HANDSHAKE"]);
    assert_eq!(h(&NS.peer_holepunch), ns["PEER_HOLEPUNCH"]);
    assert_eq!(h(&NS.plugin), ns["PLUGIN"]);
}

#[test]
fn signatures_match_js() {
    let g = golden();
    let sigs = &g["signatures"];
    for kp in sigs["keyPairs"].as_array().unwrap() {
        let pair = KeyPair::from_seed(&arr(&kp["seed"]));
        assert_eq!(h(&pair.public_key), kp["publicKey"]);
        assert_eq!(h(&public_key_target(&pair.public_key)), kp["target"]);
    }
    for a in sigs["announce"].as_array().unwrap() {
        let kp = KeyPair::from_seed(&arr(&a["seed"]));
        let target: [u8; 32] = arr(&a["target"]);
        let token = bytes(&a["token"]);
        let id: [u8; 32] = arr(&a["nodeId"]);
        let peer = peer_from_json(&a["peer"]);
        assert_eq!(peer.public_key, kp.public_key);
        let refresh: Option<[u8; 32]> = opt_arr(&a["refresh"]);
        let refresh = refresh.as_ref();
        let signable = announce_signable(&target, &token, &id, &peer, refresh);
        assert_eq!(h(&signable), a["announceSignable"]);
        let unsignable = unannounce_signable(&target, &token, &id, &peer, refresh);
        assert_eq!(h(&unsignable), a["unannounceSignable"]);
        let sig = sign_announce(&target, &token, &id, &peer, refresh, &kp);
        assert_eq!(h(&sig), a["announceSignature"]);
        assert!(verify_announce(&sig, &target, &token, &id, &peer, refresh));
        let unsig = sign_unannounce(&target, &token, &id, &peer, refresh, &kp);
        assert_eq!(h(&unsig), a["unannounceSignature"]);
        assert!(verify_unannounce(
            &unsig, &target, &token, &id, &peer, refresh
        ));
        let ann = Announce {
            peer: Some(peer),
            refresh: refresh.copied(),
            signature: Some(sig),
            bump: 0,
        };
        assert_eq!(h(&encode(&ann)), a["announceValue"]);
    }
    for m in sigs["mutable"].as_array().unwrap() {
        let kp = KeyPair::from_seed(&arr(&m["seed"]));
        let seq = m["seq"].as_u64().unwrap();
        let value = bytes(&m["value"]);
        assert_eq!(h(&mutable_signable(seq, &value)), m["signable"]);
        let sig = sign_mutable(seq, &value, &kp);
        assert_eq!(h(&sig), m["signature"]);
        assert!(verify_mutable(&sig, seq, &value, &kp.public_key));
        assert_eq!(h(&public_key_target(&kp.public_key)), m["target"]);
        let put = MutablePutRequest {
            public_key: kp.public_key,
            seq,
            value,
            signature: sig,
        };
        assert_eq!(h(&encode(&put)), m["putRequest"]);
    }
    for i in sigs["immutable"].as_array().unwrap() {
        assert_eq!(h(&immutable_target(&bytes(&i["value"]))), i["target"]);
    }
}

#[test]
fn secure_payloads_match_js() {
    let g = golden();
    let sp = &g["securePayload"];
    let secret = holepunch_secret(&bytes(&sp["handshakeHash"]));
    assert_eq!(h(&secret), sp["holepunchSecret"]);
    let codec = SecurePayload::with_local_secret(secret, arr(&sp["localSecret"]));
    for p in sp["payloads"].as_array().unwrap() {
        let boxed = bytes(&p["encrypted"]);
        let payload = codec.decrypt(&boxed).expect("decrypts");
        assert_eq!(holepunch_payload_json(&payload), p["payload"]);
        // Same nonce, same bytes.
        let nonce: [u8; 24] = boxed[..24].try_into().unwrap();
        assert_eq!(codec.encrypt_with_nonce(&payload, &nonce), boxed);
    }
    for t in sp["tokens"].as_array().unwrap() {
        let host = t["host"].as_str().unwrap().parse().unwrap();
        assert_eq!(h(&codec.token(&host)), t["token"]);
    }
}

fn limits(v: &Value) -> CacheLimits {
    CacheLimits::new(
        v["maxSize"].as_u64().unwrap() as usize,
        v["maxAge"].as_u64().unwrap(),
    )
}

fn check_reply(step: &Value, got: &Response, what: &str) {
    let js = &step["reply"];
    match (js["kind"].as_str().unwrap(), got) {
        ("drop", Response::Drop(_)) => {}
        (
            "reply",
            Response::Reply {
                value,
                token,
                closer_nodes,
            },
        ) => {
            assert_eq!(js["token"], *token, "{what}: token flag");
            assert_eq!(js["closerNodes"], *closer_nodes, "{what}: closerNodes flag");
            let is_lookup = step["command"] == Command::Lookup.id();
            match (&js["value"], value) {
                (Value::Null, None) => {}
                (expected, Some(value)) if is_lookup => {
                    // Lookups sample records at random: compare as sets.
                    let ours: LookupReply = decode(value).expect("lookup reply");
                    let theirs: LookupReply = decode(&bytes(expected)).expect("js lookup reply");
                    assert_eq!(ours.bump, theirs.bump, "{what}: bump");
                    assert_eq!(ours.peers.len(), theirs.peers.len(), "{what}: record count");
                    let candidates: HashSet<String> = step["candidates"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_str().unwrap().to_owned())
                        .collect();
                    let mut seen = HashSet::new();
                    for p in &ours.peers {
                        let rec = hex::encode(encode(p));
                        assert!(candidates.contains(&rec), "{what}: unexpected record {rec}");
                        assert!(seen.insert(rec), "{what}: duplicate record");
                    }
                }
                (expected, Some(value)) => assert_eq!(h(value), *expected, "{what}: value"),
                (expected, None) => panic!("{what}: expected value {expected}, got none"),
            }
        }
        (
            "error",
            Response::Error {
                code,
                token,
                closer_nodes,
            },
        ) => {
            assert_eq!(js["code"], *code, "{what}: code");
            assert_eq!(js["token"], *token, "{what}: token flag");
            assert_eq!(js["closerNodes"], *closer_nodes, "{what}: closerNodes flag");
        }
        (kind, got) => panic!("{what}: js {kind} {js}, rust {got:?}"),
    }
}

#[test]
fn store_replays_persistent_js() {
    let g = golden();
    for sc in g["persistent"].as_array().unwrap() {
        let name = sc["name"].as_str().unwrap();
        let l = &sc["limits"];
        let config = StoreConfig {
            records: limits(&l["records"]),
            refreshes: limits(&l["refreshes"]),
            bumps: limits(&l["bumps"]),
            mutables: limits(&l["mutables"]),
            immutables: limits(&l["immutables"]),
            forwards: limits(&l["forwards"]),
            rng_seed: Some(1),
        };
        let mut store = RecordStore::new(config);
        let node_id: [u8; 32] = arr(&sc["nodeId"]);
        let now = sc["now"].as_u64().unwrap();
        for (i, step) in sc["steps"].as_array().unwrap().iter().enumerate() {
            let target: Option<[u8; 32]> = opt_arr(&step["target"]);
            let token: Option<[u8; 32]> = opt_arr(&step["token"]);
            let value = (!step["value"].is_null()).then(|| bytes(&step["value"]));
            let req = Request {
                target: target.as_ref(),
                token: token.as_ref(),
                value: value.as_deref(),
                from: parse_addr(&step["from"]),
            };
            let command = step["command"].as_u64().unwrap();
            let what = format!("{name} step {i} (command {command})");
            match store.dispatch(now, Some(&node_id), command, &req) {
                Dispatch::Handled(resp) => check_reply(step, &resp, &what),
                other => panic!("{what}: not handled: {other:?}"),
            }
        }
    }
}
