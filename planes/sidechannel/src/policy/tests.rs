//! One test per policy rule and per default.

use super::*;
use crate::credentials::{create_invite, create_welcome};
use crate::payload::{prepare, PrepareParams};
use intercom_crypto::KeyPair;
use serde_json::json;

fn kp(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

fn hex_of(k: &KeyPair) -> String {
    hex::encode(k.public_key)
}

const NOW: u64 = 1_700_000_000_000;

#[derive(Default)]
struct MockView {
    seen: BTreeSet<String>,
    seen_full: bool,
    welcomed: BTreeSet<String>,
    invited: BTreeSet<(String, String)>,
    local: BTreeSet<String>,
}

impl PlaneView for MockView {
    fn is_seen(&self, key: &str, _: u64) -> bool {
        self.seen.contains(key)
    }
    fn seen_has_room(&self, _: u64) -> bool {
        !self.seen_full
    }
    fn is_welcomed(&self, channel: &str) -> bool {
        self.welcomed.contains(channel)
    }
    fn is_invited(&self, channel: &str, key: &str, _: u64) -> bool {
        self.invited.contains(&(channel.to_owned(), key.to_owned()))
    }
    fn is_locally_invited(&self, channel: &str, _: u64) -> bool {
        self.local.contains(channel)
    }
}

/// Policy for peer 9 with proof of work and welcomes off unless a test turns them on.
fn policy_with(f: impl FnOnce(&mut SidechannelConfig)) -> Policy {
    let mut cfg = SidechannelConfig {
        pow_enabled: false,
        welcome_required: false,
        ..SidechannelConfig::default()
    };
    f(&mut cfg);
    Policy::new(cfg, &hex_of(&kp(9))).unwrap()
}

fn msg_from(k: &KeyPair, channel: &str, message: Value, pow: Option<u32>) -> Payload {
    prepare(
        k,
        PrepareParams {
            channel: channel.into(),
            message,
            ts: NOW,
            ttl: 3,
            invite: None,
            pow_difficulty: pow,
            id_suffix: "aaaaaaaa".into(),
        },
    )
}

fn inbound(p: &Payload) -> Inbound {
    Inbound::decode(&p.encode(), 1_000_000)
}

fn run(policy: &Policy, view: &MockView, channel: &str, remote: &str, p: &Payload) -> Verdict {
    run_with(policy, view, channel, remote, None, &inbound(p))
}

fn run_with(
    policy: &Policy,
    view: &MockView,
    channel: &str,
    remote: &str,
    limiter: Option<&RateLimiter>,
    msg: &Inbound,
) -> Verdict {
    policy.check(
        msg,
        &CheckCtx {
            now_ms: NOW,
            channel,
            remote_key: remote,
            limiter,
            view,
        },
    )
}

fn reason(v: &Verdict) -> Option<&str> {
    v.drop_reason().map(DropReason::code)
}

#[test]
fn defaults_match_the_reference_cli() {
    let d = SidechannelConfig::default();
    assert_eq!(d.entry_channel, "0000intercom");
    assert_eq!(d.max_message_bytes, 1_000_000);
    assert!(d.allow_remote_open);
    assert!(!d.auto_join_on_open);
    assert!(d.relay_enabled);
    assert_eq!(d.relay_ttl, 3);
    // Not in the reference (5,000 ids for 120 s there): the freshness window and a cap.
    assert_eq!(d.max_seen, 1_048_576);
    assert_eq!(d.max_message_age_ms, 120_000);
    assert_eq!(d.max_clock_skew_ms, 30_000);
    assert_eq!(d.rate_bytes_per_second, 64_000);
    assert_eq!(d.rate_burst_bytes, 256_000);
    assert_eq!(d.max_strikes, 3);
    assert_eq!(d.strike_window_ms, 5_000);
    assert_eq!(d.block_ms, 30_000);
    assert!(d.pow_enabled);
    assert_eq!(d.pow_difficulty, 12);
    assert!(!d.pow_require_entry);
    assert!(d.pow_required_channels.is_none());
    assert!(!d.invite_required);
    assert!(d.invite_required_channels.is_none());
    assert!(d.invite_required_prefixes.is_none());
    assert!(d.inviter_keys.is_empty());
    assert_eq!(d.invite_ttl_ms, 604_800_000);
    assert!(!d.owner_write_only);
    assert!(d.owner_write_channels.is_none());
    assert!(d.welcome_required);
    assert!(d.owner_keys.is_empty() && d.default_owner_key.is_none());
    assert!(d.welcome_by_channel.is_empty());
    assert!(d.verify_signatures);
}

#[test]
fn default_policy_requires_pow_and_welcome_everywhere_but_entry() {
    let p = Policy::new(SidechannelConfig::default(), &hex_of(&kp(9))).unwrap();
    assert!(p.pow_required("0000intercom") && p.pow_required("x"));
    assert!(!p.welcome_required("0000intercom") && p.welcome_required("x"));
    assert!(!p.invite_required("x") && !p.owner_write_only("x"));
    assert_eq!(p.inviter_keys(), None);
}

#[test]
fn config_validation() {
    let k = hex_of(&kp(9));
    let bad = |f: fn(&mut SidechannelConfig)| {
        let mut c = SidechannelConfig::default();
        f(&mut c);
        Policy::new(c, &k).unwrap_err()
    };
    assert_eq!(
        bad(|c| c.pow_difficulty = 33),
        ConfigError::PowDifficulty(33)
    );
    assert_eq!(
        bad(|c| c.entry_channel = "  ".into()),
        ConfigError::EmptyEntryChannel
    );
    assert_eq!(bad(|c| c.max_seen = 0), ConfigError::ZeroLimit("max_seen"));
    assert_eq!(
        bad(|c| c.max_message_age_ms = 0),
        ConfigError::ZeroLimit("max_message_age_ms")
    );
}

#[test]
fn pow_required_rules() {
    assert!(!policy_with(|_| {}).pow_required("x"));
    let on = |f: fn(&mut SidechannelConfig)| {
        policy_with(|c| {
            c.pow_enabled = true;
            f(c)
        })
    };
    assert!(on(|_| {}).pow_required("x"));
    assert!(!on(|c| c.pow_difficulty = 0).pow_required("x"));
    let entry_only = on(|c| c.pow_require_entry = true);
    assert!(entry_only.pow_required("0000intercom") && !entry_only.pow_required("x"));
    // An explicit list overrides the entry toggle.
    let listed = on(|c| {
        c.pow_require_entry = true;
        c.pow_required_channels = Some(["a".to_owned()].into());
    });
    assert!(listed.pow_required("a") && !listed.pow_required("0000intercom"));
}

#[test]
fn invite_required_rules() {
    let all = policy_with(|c| c.invite_required = true);
    assert!(all.invite_required("x") && !all.invite_required("0000intercom"));
    assert!(
        !policy_with(|c| c.invite_required_channels = Some(["x".to_owned()].into()))
            .invite_required("x")
    );
    let listed = policy_with(|c| {
        c.invite_required = true;
        c.invite_required_channels = Some(["vip".to_owned()].into());
        c.invite_required_prefixes = Some(vec!["swap-".into(), String::new()]);
    });
    assert!(listed.invite_required("vip"));
    assert!(listed.invite_required("swap-1"));
    assert!(!listed.invite_required("public"));
    // Inviter keys default to our own key when invites are required.
    assert!(all.self_is_inviter());
    let other = policy_with(|c| {
        c.invite_required = true;
        c.inviter_keys = vec![" AB ".into()];
    });
    assert!(other.is_inviter("ab") && !other.self_is_inviter());
}

#[test]
fn owner_rules() {
    let p = policy_with(|c| {
        c.owner_write_channels = Some([" news ".to_owned()].into());
        c.owner_keys.insert("news".into(), " AA ".into());
        c.default_owner_key = Some("BB".into());
    });
    assert!(p.owner_write_only("news") && !p.owner_write_only("chat"));
    assert_eq!(p.owner_key("news"), Some("aa"));
    assert_eq!(p.owner_key("chat"), Some("bb"));
    let all = policy_with(|c| c.owner_write_only = true);
    assert!(all.owner_write_only("x") && !all.owner_write_only("0000intercom"));
    assert_eq!(all.owner_key("x"), None);
}

#[test]
fn rate_limiter_matches_reference() {
    let cfg = SidechannelConfig::default();
    let mut l = RateLimiter::new(0, &cfg);
    assert!(l.charge(0, 256_000, &cfg));
    assert!(!l.charge(0, 1, &cfg));
    assert_eq!(l.strikes, 1);
    // 1 s refills 64,000 bytes.
    assert!(l.charge(1_000, 64_000, &cfg));
    assert!(!l.charge(1_000, 1, &cfg));
    assert!(!l.charge(1_000, 1, &cfg));
    assert_eq!(l.strikes, 3);
    assert!(l.is_blocked(1_000) && l.is_blocked(30_999) && !l.is_blocked(31_000));
    assert!(!l.charge(20_000, 1, &cfg));
    // After the block the window has passed: strikes reset, bucket refilled.
    assert!(l.charge(31_000, 200_000, &cfg));
    assert_eq!(l.strikes, 0);
    // Strikes spread over more than the window never block.
    let mut l = RateLimiter::new(0, &cfg);
    assert!(l.charge(0, 256_000, &cfg));
    for t in [0, 5_001, 10_002, 15_003] {
        assert!(!l.charge(t, 1_000_000, &cfg));
        assert!(!l.is_blocked(t + 1));
    }
    // Zero rate disables limiting.
    let off = SidechannelConfig {
        rate_bytes_per_second: 0,
        ..cfg
    };
    let mut l = RateLimiter::new(0, &off);
    assert!(l.charge(0, usize::MAX, &off));
}

#[test]
fn blocked_connection_is_dropped_first() {
    let p = policy_with(|_| {});
    let mut l = RateLimiter::new(NOW, p.config());
    l.blocked_until = NOW + 1;
    let bad = Inbound::decode(b"garbage", 1_000_000);
    let v = run_with(&p, &MockView::default(), "x", "ab", Some(&l), &bad);
    assert_eq!(reason(&v), Some("blocked"));
    assert_eq!(v.effects, Effects::default());
}

#[test]
fn oversize_and_malformed_are_dropped_and_charged() {
    let p = policy_with(|c| c.max_message_bytes = 300);
    let big = msg_from(&kp(1), "x", json!("y".repeat(400)), None);
    let v = run(&p, &MockView::default(), "x", "ab", &big);
    assert!(matches!(
        v.drop_reason(),
        Some(DropReason::Oversize { max: 300, .. })
    ));
    assert!(v.effects.limiter.unwrap().tokens < 256_000.0);
    // Wire size alone over the limit: not even parsed.
    let huge = Inbound::decode(&vec![b' '; 10_000], 300);
    assert!(matches!(huge.payload, Err(PayloadError::TooLarge(10_000))));
    for bytes in [&b"\x05hello"[..], b"\x01", b"\x015", b"\x04null", b"\x02[]"] {
        let v = run_with(
            &p,
            &MockView::default(),
            "x",
            "ab",
            None,
            &Inbound::decode(bytes, 300),
        );
        assert_eq!(reason(&v), Some("malformed"), "{bytes:?}");
        assert!(v.effects.limiter.is_some());
    }
}

#[test]
fn invite_rule() {
    let owner = kp(1);
    let peer = kp(2);
    let p = policy_with(|c| {
        c.invite_required = true;
        c.inviter_keys = vec![hex_of(&owner)];
    });
    let m = msg_from(&peer, "vip", json!("hi"), None);
    let mut view = MockView::default();
    // We hold no invite ourselves: nothing is accepted.
    assert_eq!(
        reason(&run(&p, &view, "vip", &hex_of(&peer), &m)),
        Some("invite")
    );
    view.local.insert("vip".into());
    assert_eq!(
        reason(&run(&p, &view, "vip", &hex_of(&peer), &m)),
        Some("invite")
    );
    // The entry channel never needs invites.
    let e = msg_from(&peer, "0000intercom", json!("hi"), None);
    assert_eq!(
        reason(&run(&p, &view, "0000intercom", &hex_of(&peer), &e)),
        None
    );
    // An inviter is always authorised.
    let from_owner = msg_from(&owner, "vip", json!("hi"), None);
    assert_eq!(
        reason(&run(&p, &view, "vip", &hex_of(&owner), &from_owner)),
        None
    );
    // A peer holding a valid invite (payload.invite or message.invite) is authorised and
    // remembered.
    let invite = create_invite(&owner, "vip", &hex_of(&peer), 60_000, None, NOW).unwrap();
    let mut with_invite = m.clone();
    with_invite
        .as_map_mut()
        .insert("invite".into(), invite.clone());
    let v = run(&p, &view, "vip", &hex_of(&peer), &with_invite);
    assert_eq!(reason(&v), None);
    assert_eq!(v.effects.invites[0].key, hex_of(&peer));
    assert_eq!(v.effects.invites[0].expires_at, (NOW + 60_000) as f64);
    let auth = msg_from(
        &peer,
        "vip",
        json!({"control": "auth", "invite": invite}),
        None,
    );
    let v = run(&p, &view, "vip", &hex_of(&peer), &auth);
    assert_eq!(v.action, Action::Auth);
    assert_eq!(v.relay_ttl, None);
    // An invite for someone else does not authorise the connection's peer.
    assert_eq!(
        reason(&run(&p, &view, "vip", &hex_of(&kp(3)), &auth)),
        Some("invite")
    );
    // Already invited.
    view.invited.insert(("vip".into(), hex_of(&peer)));
    assert_eq!(reason(&run(&p, &view, "vip", &hex_of(&peer), &m)), None);
}

#[test]
fn pow_rule() {
    let p = policy_with(|c| {
        c.pow_enabled = true;
        c.pow_difficulty = 8;
    });
    let k = kp(1);
    let remote = hex_of(&k);
    let view = MockView::default();
    let good = msg_from(&k, "x", json!("hi"), Some(8));
    assert_eq!(reason(&run(&p, &view, "x", &remote, &good)), None);
    let none = msg_from(&k, "x", json!("hi"), None);
    assert_eq!(reason(&run(&p, &view, "x", &remote, &none)), Some("pow"));
    // Claimed difficulty is ignored: the receiver applies its own.
    let weak = (0u8..)
        .map(|i| msg_from(&k, "x", json!(i), Some(1)))
        .find(|m| !payload::check_pow(m, 8))
        .unwrap();
    let mut claimed = weak.clone();
    claimed.as_map_mut()["pow"]["difficulty"] = json!(8);
    assert_eq!(reason(&run(&p, &view, "x", &remote, &claimed)), Some("pow"));
    let mut string_nonce = good.clone();
    let n = string_nonce.as_map()["pow"]["nonce"].clone();
    string_nonce.as_map_mut()["pow"]["nonce"] = json!(n.to_string());
    assert_eq!(
        reason(&run(&p, &view, "x", &remote, &string_nonce)),
        Some("pow")
    );
}

#[test]
fn rate_rule_blocks_after_three_strikes() {
    let p = policy_with(|c| {
        c.rate_burst_bytes = 2_000;
        c.rate_bytes_per_second = 100;
    });
    let k = kp(1);
    let m = msg_from(&k, "x", json!("y".repeat(800)), None);
    let view = MockView::default();
    let msg = inbound(&m);
    let v = run_with(&p, &view, "x", "ab", None, &msg);
    assert_eq!(reason(&v), None);
    let mut l = v.effects.limiter.unwrap();
    for _ in 0..3 {
        let v = run_with(&p, &view, "x", "ab", Some(&l), &msg);
        assert_eq!(reason(&v), Some("rate_limited"));
        l = v.effects.limiter.unwrap();
    }
    assert_eq!(l.blocked_until, NOW + 30_000);
    assert_eq!(
        reason(&run_with(&p, &view, "x", "ab", Some(&l), &msg)),
        Some("blocked")
    );
}

#[test]
fn drop_reasons_serialise_as_codes() {
    assert_eq!(
        serde_json::to_value(DropReason::RateLimited).unwrap(),
        json!("rate_limited")
    );
    assert_eq!(DropReason::OpenInvite.to_string(), "open_invite");
}

#[test]
fn channel_must_match() {
    let p = policy_with(|_| {});
    let k = kp(1);
    let m = msg_from(&k, "a", json!("hi"), None);
    assert_eq!(
        reason(&run(&p, &MockView::default(), "b", &hex_of(&k), &m)),
        Some("channel_mismatch")
    );
}

#[test]
fn owner_only_rule() {
    let owner = kp(1);
    let other = kp(2);
    let p = policy_with(|c| {
        c.owner_write_channels = Some(["news".to_owned()].into());
        c.owner_keys.insert("news".into(), hex_of(&owner));
    });
    let view = MockView::default();
    let relay = hex_of(&kp(3));
    let ok = msg_from(&owner, "news", json!("hi"), None);
    assert_eq!(reason(&run(&p, &view, "news", &relay, &ok)), None);
    let not_owner = msg_from(&other, "news", json!("hi"), None);
    assert_eq!(
        reason(&run(&p, &view, "news", &relay, &not_owner)),
        Some("owner_only")
    );
    // `from` spoofed to the owner, signed by someone else.
    let mut spoofed = msg_from(&other, "news", json!("hi"), None);
    spoofed
        .as_map_mut()
        .insert("from".into(), json!(hex_of(&owner)));
    payload::sign(&mut spoofed, &other);
    assert_eq!(
        reason(&run(&p, &view, "news", &relay, &spoofed)),
        Some("owner_only")
    );
    // No owner configured: nobody may write.
    let p2 = policy_with(|c| c.owner_write_only = true);
    assert_eq!(
        reason(&run(&p2, &view, "news", &relay, &ok)),
        Some("owner_only")
    );
    // auth and welcome controls are exempt from the owner check.
    let auth = msg_from(&other, "news", json!({"control": "auth"}), None);
    assert_eq!(run(&p, &view, "news", &relay, &auth).action, Action::Auth);
}

#[test]
fn signature_rule() {
    let k = kp(1);
    let view = MockView::default();
    let mut forged = msg_from(&k, "x", json!("hi"), None);
    forged.as_map_mut().insert("message".into(), json!("bye"));
    let strict = policy_with(|_| {});
    assert_eq!(
        reason(&run(&strict, &view, "x", "ab", &forged)),
        Some("bad_signature")
    );
    let mut unsigned = msg_from(&k, "x", json!("hi"), None);
    unsigned.as_map_mut().remove("sig");
    assert_eq!(
        reason(&run(&strict, &view, "x", "ab", &unsigned)),
        Some("bad_signature")
    );
    let lax = policy_with(|c| c.verify_signatures = false);
    assert_eq!(reason(&run(&lax, &view, "x", "ab", &forged)), None);
}

#[test]
fn own_messages_are_dropped() {
    let me = kp(9);
    let p = policy_with(|_| {});
    let m = msg_from(&me, "x", json!("hi"), None);
    assert_eq!(
        reason(&run(&p, &MockView::default(), "x", "ab", &m)),
        Some("own_message")
    );
}

#[test]
fn duplicates_are_dropped_and_a_full_dedupe_refuses_new_ids() {
    let p = policy_with(|_| {});
    let k = kp(1);
    let m = msg_from(&k, "x", json!("hi"), None);
    let mut view = MockView::default();
    let v = run(&p, &view, "x", "ab", &m);
    assert_eq!(v.action, Action::Deliver);
    // Remembered with the message's own timestamp, which decides how long.
    let (key, ts) = v.effects.seen.clone().unwrap();
    assert_eq!(ts, NOW);
    view.seen.insert(key);
    let v = run(&p, &view, "x", "ab", &m);
    assert_eq!(reason(&v), Some("duplicate"));
    assert_eq!(v.effects.seen, None, "ids are not refreshed");
    // Full: a new id is dropped instead of delivered unremembered.
    let full = MockView {
        seen_full: true,
        ..MockView::default()
    };
    let v = run(&p, &full, "x", "ab", &m);
    assert_eq!(v.drop_reason(), Some(&DropReason::DedupeFull));
    assert_eq!(v.effects.seen, None);
}

/// A payload stamped `ts` (signed, so only the freshness rule can refuse it).
fn stamped(ts: Value) -> Inbound {
    let mut m = msg_from(&kp(1), "x", json!("hi"), None);
    m.as_map_mut().insert("ts".into(), ts);
    crate::payload::sign(&mut m, &kp(1));
    inbound(&m)
}

/// The smallest message a signature check accepts, which sizes the dedupe cap (see
/// `SidechannelConfig::max_seen`): 245 bytes, so 261 messages/s at the default rate.
#[test]
fn smallest_signed_message_is_245_bytes() {
    let k = kp(1);
    let mut m = Payload::decode(&{
        let mut w = intercom_encoding::Writer::new();
        w.string(&format!(
            r#"{{"channel":"x","from":"{}","ts":{NOW}}}"#,
            hex_of(&k)
        ));
        w.into_vec()
    })
    .unwrap();
    crate::payload::sign(&mut m, &k);
    let p = policy_with(|_| {});
    let msg = inbound(&m);
    assert_eq!(msg.js_len, 245);
    let v = run_with(&p, &MockView::default(), "x", "ab", None, &msg);
    assert_eq!(v.action, Action::Deliver);
    assert_eq!(64_000 / msg.js_len, 261);
}

#[test]
fn freshness_window_and_clock_skew() {
    let p = policy_with(|_| {});
    let view = MockView::default();
    let at = |ts: Value| run_with(&p, &view, "x", "ab", None, &stamped(ts));
    // Inside: up to the window back, up to the skew allowance ahead.
    for ts in [NOW, NOW - 120_000, NOW + 30_000, NOW - 1] {
        assert_eq!(at(json!(ts)).action, Action::Deliver, "ts {ts}");
    }
    // A fractional ts (JS numbers) inside the window is fine too.
    assert_eq!(at(json!(NOW as f64 - 0.5)).action, Action::Deliver);
    let v = at(json!(NOW - 120_001));
    assert_eq!(
        v.drop_reason(),
        Some(&DropReason::Stale {
            age_ms: 120_001,
            max_ms: 120_000
        })
    );
    assert_eq!(v.drop_reason().map(DropReason::code), Some("stale"));
    assert!(
        v.effects.limiter.is_some(),
        "charged like other invalid input"
    );
    assert_eq!(
        at(json!(NOW + 30_001)).drop_reason(),
        Some(&DropReason::FromFuture {
            ahead_ms: 30_001,
            max_ms: 30_000
        })
    );
    for ts in [json!(null), json!("1700000000000"), json!({})] {
        assert_eq!(at(ts).drop_reason(), Some(&DropReason::NoTimestamp));
    }
    let mut unstamped = msg_from(&kp(1), "x", json!("hi"), None);
    unstamped.as_map_mut().remove("ts");
    assert_eq!(
        run(&p, &view, "x", "ab", &unstamped).drop_reason(),
        Some(&DropReason::NoTimestamp)
    );
    // Configurable both ways.
    let wide = policy_with(|c| {
        c.max_message_age_ms = 600_000;
        c.max_clock_skew_ms = 0;
    });
    let at = |ts: u64| run_with(&wide, &view, "x", "ab", None, &stamped(json!(ts)));
    assert_eq!(at(NOW - 500_000).action, Action::Deliver);
    assert_eq!(
        at(NOW + 1).drop_reason().map(DropReason::code),
        Some("from_future")
    );
}

#[test]
fn welcome_rules() {
    let owner = kp(1);
    let peer = kp(2);
    let p = policy_with(|c| {
        c.welcome_required = true;
        c.owner_keys.insert("room".into(), hex_of(&owner));
    });
    let mut view = MockView::default();
    let r = hex_of(&peer);
    let plain = msg_from(&peer, "room", json!("hi"), None);
    assert_eq!(
        reason(&run(&p, &view, "room", &r, &plain)),
        Some("awaiting_welcome")
    );
    // Entry channel: no welcome needed.
    let e = msg_from(&peer, "0000intercom", json!("hi"), None);
    assert_eq!(reason(&run(&p, &view, "0000intercom", &r, &e)), None);
    // A welcome control with the owner's welcome welcomes the channel.
    let w = create_welcome(&owner, "room", "hello", NOW);
    let wm = msg_from(
        &owner,
        "room",
        json!({"control": "welcome", "welcome": w}),
        None,
    );
    let v = run(&p, &view, "room", &hex_of(&owner), &wm);
    assert_eq!(v.action, Action::Deliver);
    assert_eq!(v.relay_ttl, None);
    assert_eq!(v.effects.welcomes, vec![("room".to_owned(), w.clone())]);
    // Invalid or missing welcome in a welcome control.
    let fake = create_welcome(&peer, "room", "hello", NOW);
    let bad = msg_from(
        &peer,
        "room",
        json!({"control": "welcome", "welcome": fake}),
        None,
    );
    assert_eq!(
        reason(&run(&p, &view, "room", &r, &bad)),
        Some("invalid_welcome")
    );
    let missing = msg_from(&peer, "room", json!({"control": "welcome"}), None);
    assert_eq!(
        reason(&run(&p, &view, "room", &r, &missing)),
        Some("missing_welcome")
    );
    // A valid welcome embedded anywhere admits the message itself.
    let mut embedded = msg_from(&peer, "room", json!("hi"), None);
    embedded.as_map_mut().insert("welcome".into(), w.clone());
    assert_eq!(reason(&run(&p, &view, "room", &r, &embedded)), None);
    // An invalid embedded welcome on an ordinary message just does not help.
    let mut junk = msg_from(&peer, "room", json!("hi"), None);
    junk.as_map_mut().insert("welcome".into(), fake);
    assert_eq!(
        reason(&run(&p, &view, "room", &r, &junk)),
        Some("awaiting_welcome")
    );
    view.welcomed.insert("room".into());
    assert_eq!(reason(&run(&p, &view, "room", &r, &plain)), None);
    // The owner itself needs no welcome for its own channel.
    let me_owner = policy_with(|c| {
        c.welcome_required = true;
        c.default_owner_key = Some(hex_of(&kp(9)));
    });
    assert_eq!(
        reason(&run(&me_owner, &MockView::default(), "room", &r, &plain)),
        None
    );
}

#[test]
fn open_channel_rules() {
    let owner = kp(1);
    let peer = kp(2);
    let r = hex_of(&peer);
    let p = policy_with(|c| {
        c.welcome_required = true;
        c.default_owner_key = Some(hex_of(&owner));
        c.invite_required = true;
        c.invite_required_prefixes = Some(vec!["vip-".into()]);
        c.inviter_keys = vec![hex_of(&owner)];
    });
    let view = MockView::default();
    let w = create_welcome(&owner, "new", "hi", NOW);
    let open = |msg: Value| msg_from(&peer, "0000intercom", msg, None);
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": " new ", "welcome": w})),
    );
    assert_eq!(
        v.action,
        Action::Open {
            target: "new".into()
        }
    );
    assert_eq!(v.relay_ttl, Some(2.0));
    assert_eq!(v.effects.welcomes, vec![("new".to_owned(), w.clone())]);
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": "new"})),
    );
    assert_eq!(reason(&v), Some("open_missing_welcome"));
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": "other", "welcome": w})),
    );
    assert_eq!(reason(&v), Some("open_invalid_welcome"));
    // Invite-only target: the invite must be for the connection's peer.
    let wv = create_welcome(&owner, "vip-1", "hi", NOW);
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": "vip-1", "welcome": wv})),
    );
    assert_eq!(reason(&v), Some("open_invite"));
    let inv = create_invite(&owner, "vip-1", &r, 60_000, Some(wv.clone()), NOW).unwrap();
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": "vip-1", "invite": inv})),
    );
    assert_eq!(
        v.action,
        Action::Open {
            target: "vip-1".into()
        }
    );
    assert_eq!(v.effects.invites[0].channel, "vip-1");
    // Empty target: accepted, relayed, nothing to do.
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": "  "})),
    );
    assert_eq!((v.action, v.relay_ttl), (Action::Ignore, Some(2.0)));
    // Non-string channel, or remote open disabled: an ordinary message.
    let v = run(
        &p,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": 5})),
    );
    assert_eq!(v.action, Action::Deliver);
    let closed = policy_with(|c| c.allow_remote_open = false);
    let v = run(
        &closed,
        &view,
        "0000intercom",
        &r,
        &open(json!({"control": "open_channel", "channel": "new"})),
    );
    assert_eq!(v.action, Action::Deliver);
}

#[test]
fn relay_rules() {
    let k = kp(1);
    let view = MockView::default();
    let with_ttl = |ttl: Value| {
        let mut m = msg_from(&k, "x", json!("hi"), None);
        m.as_map_mut().insert("ttl".into(), ttl);
        m
    };
    let p = policy_with(|_| {});
    assert_eq!(
        run(&p, &view, "x", "ab", &with_ttl(json!(3))).relay_ttl,
        Some(2.0)
    );
    assert_eq!(
        run(&p, &view, "x", "ab", &with_ttl(json!(1))).relay_ttl,
        Some(0.0)
    );
    assert_eq!(
        run(&p, &view, "x", "ab", &with_ttl(json!(0))).relay_ttl,
        None
    );
    assert_eq!(
        run(&p, &view, "x", "ab", &with_ttl(json!("3"))).relay_ttl,
        None
    );
    // Capped at our relay TTL.
    assert_eq!(
        run(&p, &view, "x", "ab", &with_ttl(json!(50))).relay_ttl,
        Some(2.0)
    );
    let off = policy_with(|c| c.relay_enabled = false);
    let v = run(&off, &view, "x", "ab", &with_ttl(json!(3)));
    assert_eq!((v.action, v.relay_ttl), (Action::Deliver, None));
}

#[test]
fn invalid_messages_are_charged_so_their_floods_get_blocked() {
    let p = policy_with(|c| {
        c.pow_enabled = true;
        c.pow_difficulty = 8;
        c.rate_burst_bytes = 1_000;
    });
    let k = kp(1);
    let m = msg_from(&k, "x", json!("y".repeat(400)), None); // no proof of work
    let msg = inbound(&m);
    let view = MockView::default();
    let mut limiter = None;
    let mut reasons = Vec::new();
    for _ in 0..6 {
        let v = run_with(&p, &view, "x", "ab", limiter.as_ref(), &msg);
        reasons.push(reason(&v).unwrap().to_owned());
        if let Some(l) = v.effects.limiter {
            limiter = Some(l);
        }
    }
    // One fits the bucket, three strikes follow (still reported as pow), then the block.
    assert_eq!(reasons, ["pow", "pow", "pow", "pow", "blocked", "blocked"]);
}
