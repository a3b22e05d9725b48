//! Sidechannel payloads: building, signing, proof of work and the `c.json` wire codec.
//!
//! ```text
//! protomux channel  protocol "sidechannel/<name>", no id, no handshake
//! message type 0    c.json  = uint length ‖ UTF-8 JSON.stringify(payload)
//!
//! payload  {type:'sidechannel', id, channel, from, origin, message, ts, ttl,
//!           invite?, pow?: {nonce, difficulty}, sig, relayedBy?}
//!   id        "<from hex>:<ts>:<8 base36 chars>"
//!   sig       hex Ed25519 over stable({kind:'sidechannel_message_v1', id, channel,
//!             from, origin, ts, message})               (keys sorted, from/origin normalised)
//!   pow       sha256(stable({id, channel, from, origin, message, ts, nonce})) has at least
//!             `difficulty` leading zero bits (the receiver applies its own difficulty)
//! ```
//!
//! Everything here is pure: [`prepare`] does the CPU-bound part of sending (proof of work
//! and signature) and can run on a blocking thread while the plane's state stays put.

use intercom_crypto::KeyPair;
use intercom_encoding::{js_json, Reader, Writer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::js;

/// The entry (rendezvous) channel every Intercom peer joins.
pub const ENTRY_CHANNEL: &str = "0000intercom";
/// `kind` field of the signed message base.
pub const SIG_KIND: &str = "sidechannel_message_v1";
/// `type` field of every payload.
pub const PAYLOAD_TYPE: &str = "sidechannel";
/// Largest accepted proof-of-work difficulty (expected work is `2^difficulty` hashes).
pub const MAX_POW_DIFFICULTY: u32 = 32;

/// Swarm topic of a channel: `sha256("sidechannel:" + trimmed name)`.
pub fn topic(name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sidechannel:");
    h.update(js::trim(name).as_bytes());
    h.finalize().into()
}

/// Protomux protocol name of a channel: `sidechannel/<trimmed name>`.
pub fn protocol(name: &str) -> String {
    format!("sidechannel/{}", js::trim(name))
}

/// Why bytes or a value are not a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The bytes are not a compact-encoding string of JSON text.
    #[error("not c.json: {0}")]
    Decode(#[from] intercom_encoding::DecodeError),
    /// The JSON value is not an object.
    #[error("payload is not a JSON object")]
    NotAnObject,
    /// Not decoded: the wire size alone is over the limit.
    #[error("payload of {0} bytes not decoded: over the size limit")]
    TooLarge(usize),
}

/// A sidechannel payload: the JSON object exactly as received or built.
///
/// Unknown fields are kept (relays forward them), and accessors apply the reference's
/// coercions so that a hostile peer cannot make us read a field differently from a JS peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload(Value);

impl Payload {
    /// Wraps a JSON object.
    pub fn from_value(v: Value) -> Result<Self, PayloadError> {
        match v {
            v @ Value::Object(_) => Ok(Payload(v)),
            _ => Err(PayloadError::NotAnObject),
        }
    }

    /// Decodes the body of a protomux message (`c.json`); trailing bytes are ignored as
    /// protomux does.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let v = Reader::new(bytes).json()?;
        Payload::from_value(v)
    }

    /// The protomux message body (`c.json`).
    pub fn encode(&self) -> Vec<u8> {
        Payload::encode_text(&self.to_json())
    }

    /// The protomux message body for a payload's [`to_json`](Self::to_json) text, for a
    /// caller that already has it.
    pub fn encode_text(text: &str) -> Vec<u8> {
        let mut w = Writer::with_capacity(text.len() + 9);
        w.string(text);
        w.into_vec()
    }

    /// `JSON.stringify(payload)`.
    pub fn to_json(&self) -> String {
        js_json::to_string(&self.0)
    }

    /// UTF-8 length of `JSON.stringify(payload)`: the size every limit is measured in.
    pub fn js_len(&self) -> usize {
        // Serialising into a counting sink would avoid the allocation; payloads are small
        // next to the 1 MB cap and this runs once per message.
        self.to_json().len()
    }

    /// The JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        self.map()
    }

    fn map(&self) -> &Map<String, Value> {
        match &self.0 {
            Value::Object(m) => m,
            _ => unreachable!("a Payload always wraps a JSON object"),
        }
    }

    fn map_mut(&mut self) -> &mut Map<String, Value> {
        match &mut self.0 {
            Value::Object(m) => m,
            _ => unreachable!("a Payload always wraps a JSON object"),
        }
    }

    /// The JSON value.
    pub fn into_value(self) -> Value {
        self.0
    }

    /// A field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map().get(key)
    }

    /// `payload.id` (any JSON value).
    pub fn id(&self) -> Option<&Value> {
        self.map().get("id").filter(|v| !v.is_null())
    }

    /// `payload.channel` when it is a string.
    pub fn channel(&self) -> Option<&str> {
        self.map().get("channel").and_then(Value::as_str)
    }

    /// `normalizeKeyHex(payload.from)`.
    pub fn from_key(&self) -> Option<String> {
        self.map().get("from").and_then(js::normalize_key_hex)
    }

    /// `normalizeKeyHex(payload.origin)`.
    pub fn origin_key(&self) -> Option<String> {
        self.map().get("origin").and_then(js::normalize_key_hex)
    }

    /// `payload.message`.
    pub fn message(&self) -> Option<&Value> {
        self.map().get("message")
    }

    /// `payload.ts` when it is a number.
    pub fn ts(&self) -> Option<f64> {
        self.map().get("ts").and_then(Value::as_f64)
    }

    /// `Number.isFinite(payload.ttl) ? payload.ttl : 0`.
    pub fn ttl(&self) -> f64 {
        js::finite_number_or(self.map().get("ttl"), 0.0)
    }

    /// `payload.message.control` when it is a string (the reference compares with `===`).
    pub fn control(&self) -> Option<&str> {
        self.message()
            .and_then(|m| js::get(m, "control"))
            .and_then(Value::as_str)
    }

    /// `payload.sig || payload.signature` when that is a non-empty string.
    pub fn sig_hex(&self) -> Option<&str> {
        sig_field(self.map())
    }

    /// Dedupe key: the JSON text of `payload.id`, or the reference's fallback
    /// `"<from>:<ts>:<channel>"` when the id is missing or null.
    ///
    /// Keying by JSON text (rather than the JS `Map` key) makes ids such as `0`, `""`,
    /// `{}` deduplicate too; the reference never remembers falsy ids and keys objects by
    /// identity, so copies of those were delivered again.
    pub fn dedupe_key(&self, channel: &str) -> String {
        match self.id() {
            Some(id) => js_json::to_string(id),
            None => {
                let part = |k: &str, dflt: &str| match self.map().get(k) {
                    Some(v) if !v.is_null() => js::to_string(v),
                    _ => dflt.to_owned(),
                };
                let fallback = format!(
                    "{}:{}:{}",
                    part("from", "unknown"),
                    part("ts", "0"),
                    part("channel", channel)
                );
                js_json::to_string(&Value::String(fallback))
            }
        }
    }

    /// The copy a relay forwards: same fields, `ttl` replaced, `relayedBy` set.
    pub fn relayed(&self, ttl: f64, relayed_by: &str) -> Payload {
        let mut m = self.map().clone();
        m.insert("ttl".into(), js::number_value(ttl));
        m.insert("relayedBy".into(), Value::String(relayed_by.to_owned()));
        Payload(Value::Object(m))
    }

    /// Mutable access, for tests and tools that forge payloads.
    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        self.map_mut()
    }
}

fn sig_field(m: &Map<String, Value>) -> Option<&str> {
    let v = js::first_truthy(&[m.get("sig"), m.get("signature")])?;
    v.as_str().filter(|s| !s.is_empty())
}

/// Appends `name` and the stable JSON of `value` (`null` when absent).
fn write_field(out: &mut String, name: &str, value: Option<&Value>) {
    out.push_str(name);
    match value {
        Some(v) => js_json::write_sorted(out, v),
        None => out.push_str("null"),
    }
}

/// The signed text: stable JSON of `{kind, id, channel, from, origin, ts, message}` with
/// `from`/`origin` normalised, written field by field (keys in sorted order) without
/// copying the message.
pub fn sig_base(payload: &Payload) -> String {
    let m = payload.map();
    let mut out = String::with_capacity(256);
    let from = m
        .get("from")
        .and_then(js::normalize_key_hex)
        .map(Value::String);
    let origin = m
        .get("origin")
        .and_then(js::normalize_key_hex)
        .map(Value::String);
    let kind = Value::String(SIG_KIND.into());
    write_field(&mut out, "{\"channel\":", m.get("channel"));
    write_field(&mut out, ",\"from\":", from.as_ref());
    write_field(&mut out, ",\"id\":", m.get("id"));
    write_field(&mut out, ",\"kind\":", Some(&kind));
    write_field(&mut out, ",\"message\":", m.get("message"));
    write_field(&mut out, ",\"origin\":", origin.as_ref());
    write_field(&mut out, ",\"ts\":", m.get("ts"));
    out.push('}');
    out
}

/// Signs the payload (sets `sig`, lower-case hex).
pub fn sign(payload: &mut Payload, keypair: &KeyPair) {
    let sig = keypair.sign(sig_base(payload).as_bytes());
    payload
        .map_mut()
        .insert("sig".into(), Value::String(hex::encode(sig)));
}

/// Verifies `sig` (or `signature`) against `public_key_hex`, decoding hex as Node does.
pub fn verify(payload: &Payload, public_key_hex: &str) -> bool {
    SignatureCheck::new(payload, public_key_hex)
        .is_some_and(|c| intercom_crypto::verify(&c.signature, c.base.as_bytes(), &c.key))
}

/// Verifies each payload's signature against its own `from` key: `result[i]` is
/// `verify(payloads[i], from)`, false when there is no `from`.
///
/// There is no batch equation: [`intercom_crypto::verify_batch`] holds each signature to
/// libsodium's own equation, with the signer's key decompressed once and cached per thread
/// (a channel's messages come from a few keys), and hands anything it does not accept to
/// libsodium, so every verdict is libsodium's. About 34 us per signature in a release
/// build, against ~50 us for libsodium's check and the 10 us of the batch equation used
/// before, which accepted small-order components libsodium refuses
/// (`protomux/crypto/tests/verify_timing.rs`).
pub fn verify_from_batch(payloads: &[&Payload]) -> Vec<bool> {
    let checks: Vec<Option<SignatureCheck>> = payloads
        .iter()
        .map(|p| SignatureCheck::new(p, &p.from_key()?))
        .collect();
    let items: Vec<intercom_crypto::SignedMessage<'_>> = checks
        .iter()
        .flatten()
        .map(|c| intercom_crypto::SignedMessage {
            signature: &c.signature,
            message: c.base.as_bytes(),
            public_key: &c.key,
        })
        .collect();
    let mut verdicts = intercom_crypto::verify_batch(&items).into_iter();
    checks
        .iter()
        .map(|c| c.is_some() && verdicts.next().unwrap_or(false))
        .collect()
}

/// What one signature check needs, decoded as Node decodes hex.
struct SignatureCheck {
    signature: Vec<u8>,
    base: String,
    key: Vec<u8>,
}

impl SignatureCheck {
    fn new(payload: &Payload, public_key_hex: &str) -> Option<SignatureCheck> {
        let sig_hex = payload.sig_hex()?;
        if public_key_hex.is_empty() {
            return None;
        }
        Some(SignatureCheck {
            signature: js::node_hex_decode(sig_hex),
            base: sig_base(payload),
            key: js::node_hex_decode(&js::trim(public_key_hex).to_lowercase()),
        })
    }
}

/// Prefix and suffix of the proof-of-work text around the nonce. The base's keys sort as
/// channel, from, id, message, nonce, origin, ts, so the text is assembled in that order.
fn pow_parts(payload: &Payload) -> (String, String) {
    let m = payload.map();
    let mut pre = String::with_capacity(256);
    write_field(&mut pre, "{\"channel\":", m.get("channel"));
    write_field(&mut pre, ",\"from\":", m.get("from"));
    write_field(&mut pre, ",\"id\":", m.get("id"));
    write_field(&mut pre, ",\"message\":", m.get("message"));
    pre.push_str(",\"nonce\":");
    let mut post = String::with_capacity(96);
    write_field(&mut post, ",\"origin\":", m.get("origin"));
    write_field(&mut post, ",\"ts\":", m.get("ts"));
    post.push('}');
    (pre, post)
}

/// The proof-of-work text for `nonce` (the reference's `_powBase`).
pub fn pow_base(payload: &Payload, nonce: &Value) -> String {
    let (pre, post) = pow_parts(payload);
    format!("{pre}{}{post}", js_json::to_string(nonce))
}

/// Leading zero bits of a digest (the reference counts them over its hex form).
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for b in digest {
        if *b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// Finds the first nonce (0, 1, 2, …) meeting `difficulty` and sets `pow`.
///
/// Expected work is `2^difficulty` SHA-256 evaluations over the payload text; the hash
/// state after the constant prefix is reused, so large messages cost little more.
pub fn stamp_pow(payload: &mut Payload, difficulty: u32) {
    let difficulty = difficulty.min(MAX_POW_DIFFICULTY);
    let (pre, post) = pow_parts(payload);
    let mut prefix = Sha256::new();
    prefix.update(pre.as_bytes());
    let mut nonce: u64 = 0;
    loop {
        let mut h = prefix.clone();
        h.update(nonce.to_string().as_bytes());
        h.update(post.as_bytes());
        if leading_zero_bits(&h.finalize()) >= difficulty {
            break;
        }
        nonce += 1;
    }
    let mut pow = Map::new();
    pow.insert("nonce".into(), Value::from(nonce));
    pow.insert("difficulty".into(), Value::from(difficulty));
    payload.map_mut().insert("pow".into(), Value::Object(pow));
}

/// The reference's `_checkPow` for a required difficulty: `pow.nonce` must be a number and
/// the hash must have at least `difficulty` leading zero bits (`pow.difficulty` is not
/// trusted).
pub fn check_pow(payload: &Payload, difficulty: u32) -> bool {
    if difficulty == 0 {
        return false;
    }
    let Some(nonce) = payload
        .map()
        .get("pow")
        .and_then(|p| js::get(p, "nonce"))
        .filter(|n| n.is_number())
    else {
        return false;
    };
    let digest = Sha256::digest(pow_base(payload, nonce).as_bytes());
    if leading_zero_bits(&digest) >= difficulty {
        return true;
    }
    // JS senders hash `requestOpen`'s message before the JSON round trip, so absent
    // `invite`/`welcome` keys were hashed as `null`. Accept that form too.
    open_channel_variants(payload).into_iter().any(|variant| {
        let digest = Sha256::digest(pow_base(&variant, nonce).as_bytes());
        leading_zero_bits(&digest) >= difficulty
    })
}

fn open_channel_variants(payload: &Payload) -> Vec<Payload> {
    let Some(Value::Object(msg)) = payload.map().get("message") else {
        return Vec::new();
    };
    if msg.get("control").and_then(Value::as_str) != Some("open_channel") {
        return Vec::new();
    }
    let missing: Vec<&str> = ["invite", "welcome"]
        .into_iter()
        .filter(|k| !msg.contains_key(*k))
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let mut msg = msg.clone();
    for k in missing {
        msg.insert(k.into(), Value::Null);
    }
    let mut p = payload.clone();
    p.map_mut().insert("message".into(), Value::Object(msg));
    vec![p]
}

/// What [`prepare`] needs to build one payload.
#[derive(Debug, Clone)]
pub struct PrepareParams {
    /// Channel name (already trimmed).
    pub channel: String,
    /// The application message (or a control object).
    pub message: Value,
    /// Timestamp in ms (`Date.now()` on the JS side).
    pub ts: u64,
    /// Relay hops the receivers may still perform.
    pub ttl: u32,
    /// Invite to attach as `payload.invite`.
    pub invite: Option<Value>,
    /// Proof-of-work difficulty to stamp, when required on this channel.
    pub pow_difficulty: Option<u32>,
    /// The random part of the id (8 base36 characters in the reference).
    pub id_suffix: String,
}

/// Builds, stamps and signs a payload. Pure and CPU-bound: run it on a blocking thread
/// when the difficulty is high.
pub fn prepare(keypair: &KeyPair, params: PrepareParams) -> Payload {
    let difficulty = params.pow_difficulty;
    stamp_and_sign(keypair, unsigned(&keypair.public_key, params), difficulty)
}

/// Stamps the proof of work (when `difficulty` is above 0) and signs an
/// [`unsigned`] payload.
pub fn stamp_and_sign(keypair: &KeyPair, mut payload: Payload, difficulty: Option<u32>) -> Payload {
    if let Some(d) = difficulty.filter(|d| *d > 0) {
        stamp_pow(&mut payload, d);
    }
    sign(&mut payload, keypair);
    payload
}

/// The payload without proof of work or signature, fields in the reference's order
/// (`params.pow_difficulty` is not used here).
pub fn unsigned(public_key: &[u8; 32], p: PrepareParams) -> Payload {
    let from = hex::encode(public_key);
    let mut m = Map::new();
    m.insert("type".into(), Value::String(PAYLOAD_TYPE.into()));
    m.insert(
        "id".into(),
        Value::String(format!("{from}:{}:{}", p.ts, p.id_suffix)),
    );
    m.insert("channel".into(), Value::String(p.channel));
    m.insert("from".into(), Value::String(from.clone()));
    m.insert("origin".into(), Value::String(from));
    m.insert("message".into(), p.message);
    m.insert("ts".into(), Value::from(p.ts));
    m.insert("ttl".into(), Value::from(p.ttl));
    if let Some(invite) = p.invite.filter(js::truthy) {
        m.insert("invite".into(), invite);
    }
    Payload(Value::Object(m))
}

/// What the always-present signature adds to the JSON text: `,"sig":"<128 hex>"`. An
/// [`unsigned`] payload's length plus this is the signed payload's length before any
/// proof of work, so a sender can reject an oversize message before doing the work.
pub const SIGNATURE_FIELD_LEN: usize = 137;

/// Eight random base36 characters, the id suffix the reference takes from `Math.random`.
pub fn id_suffix(mut random: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..8)
        .map(|_| {
            let d = DIGITS[(random % 36) as usize] as char;
            random /= 36;
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kp(n: u8) -> KeyPair {
        KeyPair::from_seed(&[n; 32])
    }

    fn params(msg: Value, pow: Option<u32>) -> PrepareParams {
        PrepareParams {
            channel: "room".into(),
            message: msg,
            ts: 1_700_000_000_000,
            ttl: 3,
            invite: None,
            pow_difficulty: pow,
            id_suffix: "abcdefgh".into(),
        }
    }

    #[test]
    fn topic_and_protocol() {
        assert_eq!(topic(" 0000intercom "), topic("0000intercom"));
        assert_ne!(topic("a"), topic("b"));
        assert_eq!(protocol(" x "), "sidechannel/x");
    }

    #[test]
    fn prepare_signs_and_stamps() {
        let k = kp(1);
        let p = prepare(&k, params(json!("hi"), Some(10)));
        let keys: Vec<&str> = p.as_map().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["type", "id", "channel", "from", "origin", "message", "ts", "ttl", "pow", "sig"]
        );
        assert!(verify(&p, &hex::encode(k.public_key)));
        assert!(!verify(&p, &hex::encode(kp(2).public_key)));
        assert!(check_pow(&p, 10));
        let floor =
            unsigned(&k.public_key, params(json!("hi"), None)).js_len() + SIGNATURE_FIELD_LEN;
        assert!(p.js_len() > floor);
        let unstamped = prepare(&k, params(json!("hi"), None));
        assert_eq!(unstamped.js_len(), floor);
        let round = Payload::decode(&p.encode()).unwrap();
        assert_eq!(round, p);
    }

    /// The signed text and proof-of-work text built the plain way: an object of the
    /// fields, stable-stringified.
    fn reference_texts(p: &Payload) -> (String, String) {
        let m = p.as_map();
        let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
        let key = |k: &str| {
            m.get(k)
                .and_then(js::normalize_key_hex)
                .map_or(Value::Null, Value::String)
        };
        let mut base = Map::new();
        base.insert("kind".into(), Value::String(SIG_KIND.into()));
        base.insert("id".into(), get("id"));
        base.insert("channel".into(), get("channel"));
        base.insert("from".into(), key("from"));
        base.insert("origin".into(), key("origin"));
        base.insert("ts".into(), get("ts"));
        base.insert("message".into(), get("message"));
        let mut pow = Map::new();
        for k in ["id", "channel", "from", "origin", "ts", "message"] {
            pow.insert(k.into(), get(k));
        }
        pow.insert("nonce".into(), json!(42));
        (
            js::stable_stringify(&Value::Object(base)),
            js::stable_stringify(&Value::Object(pow)),
        )
    }

    #[test]
    fn signed_and_pow_texts_equal_the_stable_json_of_their_fields() {
        let k = kp(1);
        let mut payloads = vec![
            prepare(&k, params(json!("hi"), None)),
            prepare(
                &k,
                params(json!({"z": [1, {"b": "\u{1}", "a": null}], "0": "é"}), None),
            ),
            prepare(&k, params(json!(null), None)),
        ];
        let mut odd = prepare(&k, params(json!(1.5), None));
        let m = odd.as_map_mut();
        m.insert("from".into(), json!(" ABCDEF "));
        m.remove("origin");
        m.remove("ts");
        m.insert("channel".into(), json!({"nested": "\"quoted\""}));
        payloads.push(odd);
        let mut bare = Payload::from_value(json!({})).unwrap();
        bare.as_map_mut().insert("id".into(), json!(7));
        payloads.push(bare);
        for p in &payloads {
            let (base, pow) = reference_texts(p);
            assert_eq!(sig_base(p), base);
            assert_eq!(pow_base(p, &json!(42)), pow);
        }
    }

    #[test]
    fn pow_base_is_sorted_json() {
        let p = prepare(&kp(1), params(json!({"b": 1, "a": 2}), None));
        let base = pow_base(&p, &json!(7));
        let v: Value = serde_json::from_str(&base).unwrap();
        let mut expect = Map::new();
        for k in ["id", "channel", "from", "origin", "message", "ts"] {
            expect.insert(k.into(), p.get(k).cloned().unwrap());
        }
        expect.insert("nonce".into(), json!(7));
        assert_eq!(base, js::stable_stringify(&Value::Object(expect)));
        assert_eq!(v["nonce"], json!(7));
    }

    #[test]
    fn tampering_breaks_sig_and_pow() {
        let k = kp(3);
        let mut p = prepare(&k, params(json!("hi"), Some(8)));
        p.as_map_mut().insert("message".into(), json!("bye"));
        assert!(!verify(&p, &hex::encode(k.public_key)));
        // ttl and relayedBy are outside both bases.
        let p = prepare(&k, params(json!("hi"), Some(8)));
        let r = p.relayed(2.0, "ff");
        assert!(verify(&r, &hex::encode(k.public_key)));
        assert!(check_pow(&r, 8));
    }

    #[test]
    fn leading_zeros() {
        assert_eq!(leading_zero_bits(&[0, 0x10, 0xff]), 11);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }

    #[test]
    fn dedupe_keys() {
        let p = Payload::from_value(json!({"id": 0})).unwrap();
        assert_eq!(p.dedupe_key("c"), "0");
        let p = Payload::from_value(json!({"id": "0"})).unwrap();
        assert_eq!(p.dedupe_key("c"), "\"0\"");
        let p = Payload::from_value(json!({"from": "k", "ts": 5})).unwrap();
        assert_eq!(p.dedupe_key("c"), "\"k:5:c\"");
    }

    #[test]
    fn id_suffix_is_base36() {
        let s = id_suffix(u64::MAX);
        assert_eq!(s.len(), 8);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    }
}
