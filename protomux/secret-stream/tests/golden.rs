//! Golden transcripts written by the pinned JS noise-handshake + noise-curve-ed
//! (tests/node/gen-golden-noise.js): with the same static and ephemeral keys, Rust must
//! produce the same messages, handshake hash and transport keys.

use intercom_secret_stream::{stream_id, Handshake, KeyPair, Pattern};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden/noise.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    bytes(v).try_into().unwrap()
}

#[test]
fn transcripts_match_js_byte_for_byte() {
    let g = golden();
    for t in g["transcripts"].as_array().unwrap() {
        let pattern = match t["pattern"].as_str().unwrap() {
            "XX" => Pattern::XX,
            _ => Pattern::IK,
        };
        let prologue = bytes(&t["prologue"]);
        let si = KeyPair::from_seed(&arr(&t["initiatorSeed"]));
        let sr = KeyPair::from_seed(&arr(&t["responderSeed"]));
        let mut i = Handshake::new(pattern, true, si, &prologue, Some(sr.public_key)).unwrap();
        let mut r = Handshake::new(pattern, false, sr, &prologue, None).unwrap();
        i.set_ephemeral(KeyPair::from_seed(&arr(&t["initiatorEphemeralSeed"])));
        r.set_ephemeral(KeyPair::from_seed(&arr(&t["responderEphemeralSeed"])));
        for (k, m) in t["messages"].as_array().unwrap().iter().enumerate() {
            let (from, to) = if k % 2 == 0 {
                (&mut i, &mut r)
            } else {
                (&mut r, &mut i)
            };
            let payload = bytes(&m["payload"]);
            let sent = from.send(&payload).unwrap();
            assert_eq!(
                hex::encode(&sent),
                m["message"].as_str().unwrap(),
                "{pattern:?} message {k}"
            );
            assert_eq!(to.recv(&sent).unwrap(), payload);
        }
        let ri = i.result().expect("initiator complete");
        let rr = r.result().expect("responder complete");
        assert_eq!(hex::encode(ri.hash), t["hash"].as_str().unwrap());
        assert_eq!(hex::encode(rr.hash), t["hash"].as_str().unwrap());
        assert_eq!(hex::encode(ri.tx), t["initiatorTx"].as_str().unwrap());
        assert_eq!(hex::encode(ri.rx), t["initiatorRx"].as_str().unwrap());
        assert_eq!(hex::encode(rr.tx), t["responderTx"].as_str().unwrap());
        assert_eq!(hex::encode(rr.rx), t["responderRx"].as_str().unwrap());
    }
}

#[test]
fn rust_reads_js_messages_in_both_roles() {
    // Feed the JS messages straight into a Rust responder and a Rust initiator.
    let g = golden();
    for t in g["transcripts"].as_array().unwrap() {
        let pattern = if t["pattern"] == "XX" {
            Pattern::XX
        } else {
            Pattern::IK
        };
        let prologue = bytes(&t["prologue"]);
        let si = KeyPair::from_seed(&arr(&t["initiatorSeed"]));
        let sr = KeyPair::from_seed(&arr(&t["responderSeed"]));
        let msgs = t["messages"].as_array().unwrap();
        let mut r = Handshake::new(pattern, false, sr.clone(), &prologue, None).unwrap();
        r.set_ephemeral(KeyPair::from_seed(&arr(&t["responderEphemeralSeed"])));
        let mut i = Handshake::new(pattern, true, si, &prologue, Some(sr.public_key)).unwrap();
        i.set_ephemeral(KeyPair::from_seed(&arr(&t["initiatorEphemeralSeed"])));
        for (k, m) in msgs.iter().enumerate() {
            let js = bytes(&m["message"]);
            let (reader, writer) = if k % 2 == 0 {
                (&mut r, &mut i)
            } else {
                (&mut i, &mut r)
            };
            assert_eq!(
                hex::encode(reader.recv(&js).unwrap()),
                m["payload"].as_str().unwrap()
            );
            writer.send(&bytes(&m["payload"])).unwrap();
        }
        assert!(r.is_complete() && i.is_complete());
    }
}

#[test]
fn key_pairs_match_dht_key_pair() {
    let g = golden();
    for kp in g["keyPairs"].as_array().unwrap() {
        let ours = KeyPair::from_seed(&arr(&kp["seed"]));
        assert_eq!(
            hex::encode(ours.public_key),
            kp["publicKey"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(ours.secret_key),
            kp["secretKey"].as_str().unwrap()
        );
    }
}

#[test]
fn stream_ids_match_secret_stream() {
    let g = golden();
    let s = &g["streamIds"];
    let hash: [u8; 64] = arr(&s["handshakeHash"]);
    assert_eq!(
        hex::encode(stream_id(&hash, true)),
        s["initiator"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(stream_id(&hash, false)),
        s["responder"].as_str().unwrap()
    );
}
