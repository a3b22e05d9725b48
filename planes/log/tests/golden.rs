//! Golden vectors written by the pinned JS hypercore 11.37.1 (tests/node/gen-golden-hypercore.js):
//! every codec of `lib/messages.js` the replication protocol uses must encode the JS values
//! to the JS bytes, decode the JS bytes to the JS values, and fail where JS fails
//! (truncations, unknown ids and versions, oversized counts, unsafe integers).

use std::collections::BTreeSet;
use std::fmt::Debug;

use intercom_encoding::{decode, encode, Decode, Encode};
use intercom_log::wire::*;
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/hypercore-messages.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    bytes(v).try_into().expect("length")
}

fn uint(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a uint: {v}"))
}

fn boolean(v: &Value) -> bool {
    v.as_bool().unwrap_or_else(|| panic!("not a bool: {v}"))
}

fn opt<T>(v: &Value, f: impl Fn(&Value) -> T) -> Option<T> {
    (!v.is_null()).then(|| f(v))
}

fn list<T>(v: &Value, f: impl Fn(&Value) -> T) -> Vec<T> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(f)
        .collect()
}

/// Builds a Rust value from the JSON form the generator writes for the JS value.
trait FromJs: Sized {
    fn from_js(v: &Value) -> Self;
}

impl FromJs for Node {
    fn from_js(v: &Value) -> Self {
        Node {
            index: uint(&v["index"]),
            size: uint(&v["size"]),
            hash: arr(&v["hash"]),
        }
    }
}

fn nodes(v: &Value) -> Vec<Node> {
    list(v, Node::from_js)
}

impl FromJs for Signer {
    fn from_js(v: &Value) -> Self {
        assert_eq!(v["signature"], "ed25519");
        Signer {
            signature: SignatureAlgorithm::Ed25519,
            namespace: arr(&v["namespace"]),
            public_key: arr(&v["publicKey"]),
        }
    }
}

impl FromJs for Manifest {
    fn from_js(v: &Value) -> Self {
        assert_eq!(v["hash"], "blake2b");
        Manifest {
            version: uint(&v["version"]).try_into().expect("version"),
            hash: HashAlgorithm::Blake2b,
            allow_patch: boolean(&v["allowPatch"]),
            quorum: uint(&v["quorum"]),
            signers: list(&v["signers"], Signer::from_js),
            prologue: opt(&v["prologue"], |p| Prologue {
                hash: arr(&p["hash"]),
                length: uint(&p["length"]),
            }),
            linked: opt(&v["linked"], |l| list(l, arr)),
            user_data: opt(&v["userData"], bytes),
        }
    }
}

impl FromJs for Handshake {
    fn from_js(v: &Value) -> Self {
        Handshake {
            seeks: boolean(&v["seeks"]),
            capability: arr(&v["capability"]),
        }
    }
}

impl FromJs for Synchronize {
    fn from_js(v: &Value) -> Self {
        Synchronize {
            fork: uint(&v["fork"]),
            length: uint(&v["length"]),
            remote_length: uint(&v["remoteLength"]),
            can_upgrade: boolean(&v["canUpgrade"]),
            uploading: boolean(&v["uploading"]),
            downloading: boolean(&v["downloading"]),
            has_manifest: boolean(&v["hasManifest"]),
            allow_push: boolean(&v["allowPush"]),
        }
    }
}

fn request_block(v: &Value) -> RequestBlock {
    RequestBlock {
        index: uint(&v["index"]),
        nodes: uint(&v["nodes"]),
    }
}

impl FromJs for Request {
    fn from_js(v: &Value) -> Self {
        Request {
            id: uint(&v["id"]),
            fork: uint(&v["fork"]),
            block: opt(&v["block"], request_block),
            hash: opt(&v["hash"], request_block),
            seek: opt(&v["seek"], |s| RequestSeek {
                bytes: uint(&s["bytes"]),
                padding: uint(&s["padding"]),
            }),
            upgrade: opt(&v["upgrade"], |u| RequestUpgrade {
                start: uint(&u["start"]),
                length: uint(&u["length"]),
            }),
            manifest: boolean(&v["manifest"]),
            priority: uint(&v["priority"]),
        }
    }
}

impl FromJs for Cancel {
    fn from_js(v: &Value) -> Self {
        Cancel {
            request: uint(&v["request"]),
        }
    }
}

impl FromJs for Data {
    fn from_js(v: &Value) -> Self {
        Data {
            request: uint(&v["request"]),
            fork: uint(&v["fork"]),
            block: opt(&v["block"], |b| DataBlock {
                index: uint(&b["index"]),
                value: bytes(&b["value"]),
                nodes: nodes(&b["nodes"]),
            }),
            hash: opt(&v["hash"], |h| DataHash {
                index: uint(&h["index"]),
                nodes: nodes(&h["nodes"]),
            }),
            seek: opt(&v["seek"], |s| DataSeek {
                bytes: uint(&s["bytes"]),
                nodes: nodes(&s["nodes"]),
            }),
            upgrade: opt(&v["upgrade"], |u| DataUpgrade {
                start: uint(&u["start"]),
                length: uint(&u["length"]),
                nodes: nodes(&u["nodes"]),
                additional_nodes: nodes(&u["additionalNodes"]),
                signature: opt(&u["signature"], bytes),
            }),
            manifest: opt(&v["manifest"], Manifest::from_js),
        }
    }
}

impl FromJs for NoData {
    fn from_js(v: &Value) -> Self {
        NoData {
            request: uint(&v["request"]),
            reason: uint(&v["reason"]),
        }
    }
}

impl FromJs for Want {
    fn from_js(v: &Value) -> Self {
        Want {
            start: uint(&v["start"]),
            length: uint(&v["length"]),
            any: boolean(&v["any"]),
        }
    }
}

impl FromJs for Bitfield {
    fn from_js(v: &Value) -> Self {
        Bitfield {
            start: uint(&v["start"]),
            bitfield: list(&v["bitfield"], |w| uint(w).try_into().expect("u32 word")),
        }
    }
}

impl FromJs for Range {
    fn from_js(v: &Value) -> Self {
        Range {
            drop: boolean(&v["drop"]),
            start: uint(&v["start"]),
            length: uint(&v["length"]),
        }
    }
}

impl FromJs for ReorgHint {
    fn from_js(v: &Value) -> Self {
        ReorgHint {
            from: uint(&v["from"]),
            to: uint(&v["to"]),
            ancestors: uint(&v["ancestors"]),
        }
    }
}

impl FromJs for Extension {
    fn from_js(v: &Value) -> Self {
        Extension {
            name: v["name"].as_str().expect("name").to_owned(),
            message: bytes(&v["message"]),
        }
    }
}

impl FromJs for MultiSignature {
    fn from_js(v: &Value) -> Self {
        MultiSignature {
            proofs: list(&v["proofs"], |p| MultisigInput {
                signer: uint(&p["signer"]),
                signature: arr(&p["signature"]),
                patch: uint(&p["patch"]),
            }),
            patch: nodes(&v["patch"]),
        }
    }
}

impl FromJs for MultiSignatureV0 {
    fn from_js(v: &Value) -> Self {
        MultiSignatureV0 {
            proofs: list(&v["proofs"], |p| MultisigInputV0 {
                signer: uint(&p["signer"]),
                signature: arr(&p["signature"]),
                patch: opt(&p["patch"], |q| PatchV0 {
                    start: uint(&q["start"]),
                    length: uint(&q["length"]),
                    nodes: list(&q["nodes"], uint),
                }),
            }),
            patch: nodes(&v["patch"]),
        }
    }
}

/// Calls the generic function `$f` instantiated with the Rust type of a JS codec name.
macro_rules! by_type {
    ($ty:expr, $f:ident($($arg:expr),*)) => {
        match $ty {
            "manifest" => $f::<Manifest>($($arg),*),
            "wire.handshake" => $f::<Handshake>($($arg),*),
            "wire.sync" => $f::<Synchronize>($($arg),*),
            "wire.request" => $f::<Request>($($arg),*),
            "wire.cancel" => $f::<Cancel>($($arg),*),
            "wire.data" => $f::<Data>($($arg),*),
            "wire.noData" => $f::<NoData>($($arg),*),
            "wire.want" | "wire.unwant" => $f::<Want>($($arg),*),
            "wire.bitfield" => $f::<Bitfield>($($arg),*),
            "wire.range" => $f::<Range>($($arg),*),
            "wire.reorgHint" => $f::<ReorgHint>($($arg),*),
            "wire.extension" => $f::<Extension>($($arg),*),
            "multiSignature" => $f::<MultiSignature>($($arg),*),
            "multiSignaturev0" => $f::<MultiSignatureV0>($($arg),*),
            other => panic!("unknown codec {other}"),
        }
    };
}

/// The channel message a JS value is, by protomux type; `None` for the other codecs.
fn channel_message(ty: &str, v: &Value) -> Option<Message> {
    Some(match ty {
        "wire.sync" => Message::Sync(Synchronize::from_js(v)),
        "wire.request" => Message::Request(Request::from_js(v)),
        "wire.cancel" => Message::Cancel(Cancel::from_js(v)),
        "wire.data" => Message::Data(Data::from_js(v)),
        "wire.noData" => Message::NoData(NoData::from_js(v)),
        "wire.want" => Message::Want(Want::from_js(v)),
        "wire.unwant" => Message::Unwant(Want::from_js(v)),
        "wire.bitfield" => Message::Bitfield(Bitfield::from_js(v)),
        "wire.range" => Message::Range(Range::from_js(v)),
        "wire.extension" => Message::Extension(Extension::from_js(v)),
        _ => return None,
    })
}

fn channel_type(ty: &str) -> Option<u32> {
    let names = [
        "wire.sync",
        "wire.request",
        "wire.cancel",
        "wire.data",
        "wire.noData",
        "wire.want",
        "wire.unwant",
        "wire.bitfield",
        "wire.range",
        "wire.extension",
    ];
    names.iter().position(|n| *n == ty).map(|i| i as u32)
}

fn check_entry<T>(e: &Value)
where
    T: FromJs + Encode + for<'a> Decode<'a> + PartialEq + Debug,
{
    let encoded = bytes(&e["encoded"]);
    if let Some(value) = e.get("value") {
        let v = T::from_js(value);
        assert_eq!(v.encoded_len(), encoded.len(), "encoded_len of {v:?}");
        assert_eq!(
            hex::encode(encode(&v)),
            hex::encode(&encoded),
            "encoding of {v:?}"
        );
    }
    let decoded =
        decode::<T>(&encoded).unwrap_or_else(|err| panic!("{} {}: {err}", e["type"], e["encoded"]));
    assert_eq!(
        decoded,
        T::from_js(&e["decoded"]),
        "decoding of {}",
        e["encoded"]
    );
    assert_eq!(
        hex::encode(encode(&decoded)),
        e["reencoded"].as_str().unwrap(),
        "re-encoding of {decoded:?}"
    );
}

/// Decodes `input` and compares with the JS outcome: `Some(value)` or a failure.
fn check_decode<T>(input: &[u8], expected: Option<&Value>) -> Result<(), String>
where
    T: FromJs + for<'a> Decode<'a> + PartialEq + Debug,
{
    match (decode::<T>(input), expected) {
        (Ok(got), Some(want)) if got == T::from_js(want) => Ok(()),
        (Err(_), None) => Ok(()),
        (got, want) => Err(format!("{}: Rust {got:?}, JS {want:?}", hex::encode(input))),
    }
}

#[test]
fn rust_encodes_and_decodes_every_js_vector_identically() {
    let g = golden();
    let messages = g["messages"].as_array().unwrap();
    let mut seen = BTreeSet::new();
    for e in messages {
        let ty = e["type"].as_str().unwrap();
        seen.insert(ty);
        by_type!(ty, check_entry(e));
    }
    // Every codec is covered, including the hand-made inputs JS accepts.
    assert_eq!(seen.len(), 15, "{seen:?}");
    assert!(messages.iter().filter(|e| e.get("value").is_none()).count() >= 10);
}

#[test]
fn channel_messages_decode_by_protomux_type() {
    let g = golden();
    let mut checked = 0;
    for e in g["messages"].as_array().unwrap() {
        let ty = e["type"].as_str().unwrap();
        let Some(want) = channel_message(ty, &e["decoded"]) else {
            continue;
        };
        let message_type = channel_type(ty).unwrap();
        let got = Message::decode(message_type, &bytes(&e["encoded"])).expect("decodes");
        assert_eq!(got, want);
        let (again_type, payload) = got.encode();
        assert_eq!(again_type, message_type);
        assert_eq!(hex::encode(payload), e["reencoded"].as_str().unwrap());
        checked += 1;
    }
    assert!(checked > 60, "{checked}");
}

#[test]
fn truncations_fail_or_decode_exactly_as_in_js() {
    let g = golden();
    let messages = g["messages"].as_array().unwrap();
    let mut failures = Vec::new();
    let prefixes = g["prefixes"].as_array().unwrap();
    for p in prefixes {
        let e = &messages[uint(&p["message"]) as usize];
        let encoded = bytes(&e["encoded"]);
        let input = &encoded[..uint(&p["length"]) as usize];
        let ty = e["type"].as_str().unwrap();
        if let Err(err) = by_type!(ty, check_decode(input, p.get("decoded"))) {
            failures.push(format!("{ty} prefix {err}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Some truncations are valid messages in JS (optional tails); most are not.
    let accepted = prefixes
        .iter()
        .filter(|p| p.get("decoded").is_some())
        .count();
    assert!(accepted > 10 && accepted < prefixes.len() / 2, "{accepted}");
}

#[test]
fn trailing_bytes_are_ignored_or_read_as_in_js() {
    let g = golden();
    let messages = g["messages"].as_array().unwrap();
    let mut failures = Vec::new();
    for t in g["trailing"].as_array().unwrap() {
        let e = &messages[uint(&t["message"]) as usize];
        let ty = e["type"].as_str().unwrap();
        let mut input = bytes(&e["encoded"]);
        input.extend(bytes(&t["suffix"]));
        let got = Message::decode(channel_type(ty).unwrap(), &input);
        let want = t.get("decoded").map(|d| channel_message(ty, d).unwrap());
        match (&got, &want) {
            (Ok(a), Some(b)) if a == b => {}
            (Err(_), None) => {}
            _ => failures.push(format!(
                "{ty} {}: Rust {got:?}, JS {want:?}",
                hex::encode(&input)
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn rust_rejects_what_js_rejects() {
    let g = golden();
    let mut failures = Vec::new();
    for inv in g["invalid"].as_array().unwrap() {
        let ty = inv["type"].as_str().unwrap();
        let input = bytes(&inv["hex"]);
        if let Err(err) = by_type!(ty, check_decode(&input, None)) {
            failures.push(format!(
                "{ty} should fail like JS ({}): {err}",
                inv["error"]
            ));
        }
        // Through the channel dispatcher too.
        if let Some(t) = channel_type(ty) {
            assert!(Message::decode(t, &input).is_err(), "{ty} {}", inv["hex"]);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn fuzz_entry_accepts_every_vector() {
    let g = golden();
    for e in g["messages"].as_array().unwrap() {
        fuzz_messages(&bytes(&e["encoded"]));
    }
    for inv in g["invalid"].as_array().unwrap() {
        fuzz_messages(&bytes(&inv["hex"]));
    }
}
