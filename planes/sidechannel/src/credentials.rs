//! Welcomes and invites: the two signed credentials of the sidechannel plane.
//!
//! ```text
//! welcome  {payload: {channel, ownerPubKey, text, issuedAt, version}, sig}
//!          sig = Ed25519(owner, stable(normalised payload))
//! invite   {payload: {channel, inviteePubKey, inviterPubKey, inviterAddress, issuedAt,
//!                     expiresAt, nonce, version}, sig, welcome?}
//!          sig = Ed25519(inviter, stable(normalised payload))
//! ```
//!
//! Verification normalises the payload exactly as the reference does (`String()`,
//! `Number()`, `normalizeKeyHex`), so a credential made by a JS peer verifies here and the
//! other way round. Credentials travel inside payloads as JSON objects; the base64 and
//! `b64:` text forms are for command arguments (see [`crate::args`]).

use std::collections::BTreeSet;

use intercom_crypto::KeyPair;
use serde_json::{Map, Value};

use crate::js;

/// Why a welcome or invite was not accepted or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The credential is not a JSON object.
    #[error("credential is not a JSON object")]
    NotAnObject,
    /// `sig` (or `signature`) is missing or not a non-empty string.
    #[error("credential has no signature")]
    MissingSignature,
    /// The credential names another channel.
    #[error("credential is for channel {found:?}, not {expected:?}")]
    ChannelMismatch {
        /// The channel being checked.
        expected: String,
        /// The channel the credential names.
        found: String,
    },
    /// No owner key is configured for the channel, so no welcome can be checked.
    #[error("no owner key configured for the channel")]
    NoOwner,
    /// The welcome is signed for another owner than the configured one.
    #[error("welcome owner does not match the configured owner")]
    OwnerMismatch,
    /// `issuedAt` or `expiresAt` is not a finite number.
    #[error("credential timestamps are not finite numbers")]
    BadTimestamp,
    /// The invite has expired.
    #[error("invite expired")]
    Expired,
    /// The invite is for another peer.
    #[error("invite is for another peer")]
    InviteeMismatch,
    /// The invite names no inviter.
    #[error("invite has no inviter key")]
    MissingInviter,
    /// The inviter is not among the trusted inviter keys.
    #[error("inviter is not trusted")]
    InviterNotTrusted,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// An invite needs a positive time to live.
    #[error("invite ttl must be positive")]
    InvalidTtl,
}

fn split(credential: &Value) -> Result<(&Value, &str), CredentialError> {
    if !js::is_object(credential) {
        return Err(CredentialError::NotAnObject);
    }
    let payload = match js::get(credential, "payload") {
        Some(p) if js::is_object(p) => p,
        _ => credential,
    };
    let sig = js::first_truthy(&[js::get(credential, "sig"), js::get(credential, "signature")])
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(CredentialError::MissingSignature)?;
    Ok((payload, sig))
}

fn verify_sig(sig_hex: &str, message: &str, key_hex: &str) -> bool {
    let sig = js::node_hex_decode(sig_hex);
    let key = js::node_hex_decode(key_hex);
    intercom_crypto::verify(&sig, message.as_bytes(), &key)
}

/// A welcome payload after the reference's `_normalizeWelcomePayload`.
#[derive(Debug, Clone, PartialEq)]
pub struct WelcomePayload {
    /// Trimmed channel name.
    pub channel: String,
    /// Owner key, lower-case hex.
    pub owner_pub_key: String,
    /// The welcome text.
    pub text: String,
    /// `Number(issuedAt)`.
    pub issued_at: f64,
    /// Version (1 unless a finite number was given).
    pub version: f64,
}

impl WelcomePayload {
    /// Normalises a raw welcome payload.
    pub fn normalize(p: &Value) -> Self {
        WelcomePayload {
            channel: js::normalize_channel(js::get(p, "channel")),
            owner_pub_key: js::key_or_empty(js::get(p, "ownerPubKey")),
            text: match js::get(p, "text") {
                Some(v) if !v.is_null() => js::to_string(v),
                _ => String::new(),
            },
            issued_at: js::get(p, "issuedAt").map_or(f64::NAN, js::to_number),
            version: js::finite_number_or(js::get(p, "version"), 1.0),
        }
    }

    /// The JSON object in the reference's field order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("channel".into(), Value::String(self.channel.clone()));
        m.insert(
            "ownerPubKey".into(),
            Value::String(self.owner_pub_key.clone()),
        );
        m.insert("text".into(), Value::String(self.text.clone()));
        m.insert("issuedAt".into(), js::number_value(self.issued_at));
        m.insert("version".into(), js::number_value(self.version));
        Value::Object(m)
    }

    /// The signed text.
    pub fn signing_text(&self) -> String {
        js::stable_stringify(&self.to_value())
    }
}

/// Makes a welcome for `channel` signed by the owner `keypair` (what `/sc_welcome` prints
/// as JSON).
pub fn create_welcome(keypair: &KeyPair, channel: &str, text: &str, now_ms: u64) -> Value {
    let payload = WelcomePayload {
        channel: js::trim(channel).to_owned(),
        owner_pub_key: hex::encode(keypair.public_key),
        text: text.to_owned(),
        issued_at: now_ms as f64,
        version: 1.0,
    };
    let sig = keypair.sign(payload.signing_text().as_bytes());
    let mut m = Map::new();
    m.insert("payload".into(), payload.to_value());
    m.insert("sig".into(), Value::String(hex::encode(sig)));
    Value::Object(m)
}

/// Checks a welcome for `channel` against the channel's configured owner key.
pub fn verify_welcome(
    welcome: &Value,
    channel: &str,
    owner_key: Option<&str>,
) -> Result<WelcomePayload, CredentialError> {
    let (payload, sig) = split(welcome)?;
    let normalized = WelcomePayload::normalize(payload);
    let expected = js::trim(channel);
    if normalized.channel != expected {
        return Err(CredentialError::ChannelMismatch {
            expected: expected.to_owned(),
            found: normalized.channel,
        });
    }
    let owner = owner_key
        .filter(|k| !k.is_empty())
        .ok_or(CredentialError::NoOwner)?;
    if normalized.owner_pub_key != owner {
        return Err(CredentialError::OwnerMismatch);
    }
    if !normalized.issued_at.is_finite() {
        return Err(CredentialError::BadTimestamp);
    }
    if !verify_sig(sig, &normalized.signing_text(), owner) {
        return Err(CredentialError::BadSignature);
    }
    Ok(normalized)
}

/// An invite payload after the reference's `_normalizeInvitePayload`.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitePayload {
    /// `String(channel ?? '')` (not trimmed).
    pub channel: String,
    /// Invitee key, lower-case hex.
    pub invitee_pub_key: String,
    /// Inviter key, lower-case hex.
    pub inviter_pub_key: String,
    /// Inviter's settlement address, any JSON value (`null` when absent).
    pub inviter_address: Value,
    /// `Number(issuedAt)`.
    pub issued_at: f64,
    /// `Number(expiresAt)`.
    pub expires_at: f64,
    /// `String(nonce ?? '')`.
    pub nonce: String,
    /// Version (1 unless a finite number was given).
    pub version: f64,
}

impl InvitePayload {
    /// Normalises a raw invite payload.
    pub fn normalize(p: &Value) -> Self {
        let string_or_empty = |k: &str| match js::get(p, k) {
            Some(v) if !v.is_null() => js::to_string(v),
            _ => String::new(),
        };
        InvitePayload {
            channel: string_or_empty("channel"),
            invitee_pub_key: js::key_or_empty(js::get(p, "inviteePubKey")),
            inviter_pub_key: js::key_or_empty(js::get(p, "inviterPubKey")),
            inviter_address: js::get(p, "inviterAddress").cloned().unwrap_or(Value::Null),
            issued_at: js::get(p, "issuedAt").map_or(f64::NAN, js::to_number),
            expires_at: js::get(p, "expiresAt").map_or(f64::NAN, js::to_number),
            nonce: string_or_empty("nonce"),
            version: js::finite_number_or(js::get(p, "version"), 1.0),
        }
    }

    /// The JSON object in the reference's field order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("channel".into(), Value::String(self.channel.clone()));
        m.insert(
            "inviteePubKey".into(),
            Value::String(self.invitee_pub_key.clone()),
        );
        m.insert(
            "inviterPubKey".into(),
            Value::String(self.inviter_pub_key.clone()),
        );
        m.insert("inviterAddress".into(), self.inviter_address.clone());
        m.insert("issuedAt".into(), js::number_value(self.issued_at));
        m.insert("expiresAt".into(), js::number_value(self.expires_at));
        m.insert("nonce".into(), Value::String(self.nonce.clone()));
        m.insert("version".into(), js::number_value(self.version));
        Value::Object(m)
    }

    /// The signed text.
    pub fn signing_text(&self) -> String {
        js::stable_stringify(&self.to_value())
    }
}

/// Everything an invite states; [`create_invite`] fills the usual defaults.
#[derive(Debug, Clone)]
pub struct InviteParams {
    /// Channel the invite opens.
    pub channel: String,
    /// Invitee's peer key (hex).
    pub invitee: String,
    /// Inviter's settlement address (`null` when `None`).
    pub inviter_address: Option<String>,
    /// Issue time, ms.
    pub issued_at: u64,
    /// Lifetime, ms (must be positive).
    pub ttl_ms: u64,
    /// The invite nonce (8 base36 characters in the reference).
    pub nonce: String,
    /// Welcome to embed, so the invitee is welcomed without meeting the owner.
    pub welcome: Option<Value>,
}

/// Makes an invite with explicit fields (what `/sc_invite` prints as JSON).
pub fn create_invite_with(
    keypair: &KeyPair,
    params: InviteParams,
) -> Result<Value, CredentialError> {
    if params.ttl_ms == 0 {
        return Err(CredentialError::InvalidTtl);
    }
    let payload = InvitePayload {
        channel: params.channel,
        invitee_pub_key: js::trim(&params.invitee).to_lowercase(),
        inviter_pub_key: hex::encode(keypair.public_key),
        inviter_address: params.inviter_address.map_or(Value::Null, Value::String),
        issued_at: params.issued_at as f64,
        expires_at: params.issued_at.saturating_add(params.ttl_ms) as f64,
        nonce: params.nonce,
        version: 1.0,
    };
    let sig = keypair.sign(payload.signing_text().as_bytes());
    let mut m = Map::new();
    m.insert("payload".into(), payload.to_value());
    m.insert("sig".into(), Value::String(hex::encode(sig)));
    if let Some(w) = params.welcome.filter(js::truthy) {
        m.insert("welcome".into(), w);
    }
    Ok(Value::Object(m))
}

/// Makes an invite for `invitee` on `channel` valid for `ttl_ms`, with a random nonce.
pub fn create_invite(
    keypair: &KeyPair,
    channel: &str,
    invitee: &str,
    ttl_ms: u64,
    welcome: Option<Value>,
    now_ms: u64,
) -> Result<Value, CredentialError> {
    let mut r = [0u8; 8];
    intercom_crypto::random_bytes(&mut r);
    create_invite_with(
        keypair,
        InviteParams {
            channel: js::trim(channel).to_owned(),
            invitee: invitee.to_owned(),
            inviter_address: None,
            issued_at: now_ms,
            ttl_ms,
            nonce: crate::payload::id_suffix(u64::from_le_bytes(r)),
            welcome,
        },
    )
}

/// Checks an invite for `channel` held by `invitee_key` at `now_ms`; `inviter_keys`, when
/// given, lists the trusted inviters.
pub fn verify_invite(
    invite: &Value,
    channel: &str,
    invitee_key: &str,
    inviter_keys: Option<&BTreeSet<String>>,
    now_ms: u64,
) -> Result<InvitePayload, CredentialError> {
    let (payload, sig) = split(invite)?;
    let normalized = InvitePayload::normalize(payload);
    if normalized.channel != channel {
        return Err(CredentialError::ChannelMismatch {
            expected: channel.to_owned(),
            found: normalized.channel,
        });
    }
    if normalized.invitee_pub_key != invitee_key {
        return Err(CredentialError::InviteeMismatch);
    }
    if normalized.inviter_pub_key.is_empty() {
        return Err(CredentialError::MissingInviter);
    }
    if inviter_keys.is_some_and(|keys| !keys.contains(&normalized.inviter_pub_key)) {
        return Err(CredentialError::InviterNotTrusted);
    }
    if !normalized.issued_at.is_finite() || !normalized.expires_at.is_finite() {
        return Err(CredentialError::BadTimestamp);
    }
    if normalized.expires_at <= now_ms as f64 {
        return Err(CredentialError::Expired);
    }
    if !verify_sig(sig, &normalized.signing_text(), &normalized.inviter_pub_key) {
        return Err(CredentialError::BadSignature);
    }
    Ok(normalized)
}

/// The welcome an invite carries (`invite.welcome` when truthy).
pub fn embedded_welcome(invite: &Value) -> Option<&Value> {
    js::get(invite, "welcome").filter(|w| js::truthy(w))
}

/// The base64 text form printed as `welcome_b64:` / `invite_b64:`.
pub fn to_base64(credential: &Value) -> String {
    intercom_encoding::base64::encode(intercom_encoding::js_json::to_string(credential).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kp(n: u8) -> KeyPair {
        KeyPair::from_seed(&[n; 32])
    }

    #[test]
    fn welcome_round_trip_and_failures() {
        let owner = kp(1);
        let owner_hex = hex::encode(owner.public_key);
        let w = create_welcome(&owner, " room ", "hello", 1000);
        assert_eq!(w["payload"]["channel"], json!("room"));
        let ok = verify_welcome(&w, "room", Some(&owner_hex)).unwrap();
        assert_eq!(ok.text, "hello");
        assert_eq!(
            verify_welcome(&w, "other", Some(&owner_hex)),
            Err(CredentialError::ChannelMismatch {
                expected: "other".into(),
                found: "room".into()
            })
        );
        assert_eq!(
            verify_welcome(&w, "room", None),
            Err(CredentialError::NoOwner)
        );
        let other = hex::encode(kp(2).public_key);
        assert_eq!(
            verify_welcome(&w, "room", Some(&other)),
            Err(CredentialError::OwnerMismatch)
        );
        let mut bad = w.clone();
        bad["payload"]["text"] = json!("evil");
        assert_eq!(
            verify_welcome(&bad, "room", Some(&owner_hex)),
            Err(CredentialError::BadSignature)
        );
        assert_eq!(
            verify_welcome(&json!("x"), "room", Some(&owner_hex)),
            Err(CredentialError::NotAnObject)
        );
        let mut nosig = w.clone();
        nosig.as_object_mut().unwrap().remove("sig");
        assert_eq!(
            verify_welcome(&nosig, "room", Some(&owner_hex)),
            Err(CredentialError::MissingSignature)
        );
        // `signature` works as an alias, upper-case hex and trailing junk decode as Node does.
        let mut alias = w.clone();
        let sig = alias["sig"].as_str().unwrap().to_uppercase() + "zz";
        alias.as_object_mut().unwrap().remove("sig");
        alias["signature"] = json!(sig);
        assert!(verify_welcome(&alias, "room", Some(&owner_hex)).is_ok());
        // A flat welcome (payload fields at top level) is accepted too.
        let mut flat = w["payload"].clone();
        flat["sig"] = w["sig"].clone();
        assert!(verify_welcome(&flat, "room", Some(&owner_hex)).is_ok());
    }

    #[test]
    fn invite_round_trip_and_failures() {
        let inviter = kp(1);
        let invitee = hex::encode(kp(2).public_key);
        let inv = create_invite(&inviter, "vip", &invitee, 10_000, None, 1_000).unwrap();
        assert!(inv.get("welcome").is_none());
        let ok = verify_invite(&inv, "vip", &invitee, None, 5_000).unwrap();
        assert_eq!(ok.expires_at, 11_000.0);
        assert_eq!(ok.nonce.len(), 8);
        assert_eq!(
            verify_invite(&inv, "vip", &invitee, None, 11_000),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            verify_invite(&inv, "vip", "00", None, 5_000),
            Err(CredentialError::InviteeMismatch)
        );
        let trusted: BTreeSet<String> = [hex::encode(kp(9).public_key)].into();
        assert_eq!(
            verify_invite(&inv, "vip", &invitee, Some(&trusted), 5_000),
            Err(CredentialError::InviterNotTrusted)
        );
        let mut bad = inv.clone();
        bad["payload"]["expiresAt"] = json!(99_999_999);
        assert_eq!(
            verify_invite(&bad, "vip", &invitee, None, 5_000),
            Err(CredentialError::BadSignature)
        );
        assert_eq!(
            create_invite(&inviter, "vip", &invitee, 0, None, 1),
            Err(CredentialError::InvalidTtl)
        );
        // Invite channel names are compared untrimmed, as in the reference.
        assert!(verify_invite(&inv, " vip", &invitee, None, 5_000).is_err());
    }

    #[test]
    fn normalisation_coerces_like_js() {
        let p = json!({"channel": 5, "ownerPubKey": " AB ", "text": 12, "issuedAt": "7", "version": "3"});
        let n = WelcomePayload::normalize(&p);
        assert_eq!(n.channel, "5");
        assert_eq!(n.owner_pub_key, "ab");
        assert_eq!(n.text, "12");
        assert_eq!(n.issued_at, 7.0);
        assert_eq!(n.version, 1.0);
        assert_eq!(
            n.signing_text(),
            r#"{"channel":"5","issuedAt":7,"ownerPubKey":"ab","text":"12","version":1}"#
        );
    }
}
