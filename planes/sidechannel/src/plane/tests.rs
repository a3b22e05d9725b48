//! Single-plane behaviour: channel and connection bookkeeping, send-side checks, bounds.

use super::*;
use crate::credentials::{create_invite, create_welcome};
use crate::payload::ENTRY_CHANNEL;
use serde_json::json;

const NOW: u64 = 1_700_000_000_000;

fn kp(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

fn cfg() -> SidechannelConfig {
    SidechannelConfig {
        pow_enabled: false,
        ..SidechannelConfig::default()
    }
}

fn plane(c: SidechannelConfig, seed: u8) -> Sidechannel {
    let mut p = Sidechannel::new(c, kp(seed)).unwrap();
    p.seed_ids(7);
    p
}

fn drain(p: &mut Sidechannel) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn events(p: &mut Sidechannel) -> Vec<SidechannelEvent> {
    drain(p)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn sends(outs: &[Output]) -> Vec<(ConnId, String, Payload)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                conn,
                channel,
                bytes,
            } => Some((*conn, channel.clone(), Payload::decode(bytes).unwrap())),
            _ => None,
        })
        .collect()
}

/// Connects `remote` (seed) as `ConnId(seed)` and opens `channels` with it.
fn connect(p: &mut Sidechannel, seed: u8, channels: &[&str]) {
    p.on_connection(ConnId(u64::from(seed)), kp(seed).public_key)
        .unwrap();
    for ch in channels {
        p.on_channel_open(NOW, ConnId(u64::from(seed)), ch);
    }
}

fn signed(seed: u8, channel: &str, message: Value, ts: u64) -> Vec<u8> {
    payload::prepare(
        &kp(seed),
        PrepareParams {
            channel: channel.into(),
            message,
            ts,
            ttl: 3,
            invite: None,
            pow_difficulty: None,
            id_suffix: "abcdefgh".into(),
        },
    )
    .encode()
}

#[test]
fn new_joins_the_entry_and_configured_channels() {
    let mut c = cfg();
    c.channels = vec![" room ".into(), "vip".into()];
    c.invite_required = true;
    c.invite_required_channels = Some(["vip".to_owned()].into());
    c.inviter_keys = vec!["ab".into()];
    let mut p = plane(c, 1);
    let ev = events(&mut p);
    assert_eq!(
        ev,
        [
            SidechannelEvent::Joined {
                channel: ENTRY_CHANNEL.into(),
                topic: payload::topic(ENTRY_CHANNEL)
            },
            SidechannelEvent::Joined {
                channel: "room".into(),
                topic: payload::topic("room")
            },
        ]
    );
    assert_eq!(p.stats().channels, [ENTRY_CHANNEL, "room"]);
    assert_eq!(p.accepts_protocol("sidechannel/room"), Some("room"));
    assert_eq!(p.accepts_protocol("sidechannel/vip"), None);
    assert_eq!(p.accepts_protocol("other/room"), None);
}

#[test]
fn join_and_leave() {
    let owner = kp(9);
    let welcome = create_welcome(&owner, "room", "hi", 1);
    let mut c = cfg();
    c.default_owner_key = Some(hex::encode(owner.public_key));
    c.welcome_by_channel.insert("room".into(), welcome);
    c.max_channels = 3;
    let mut p = plane(c, 1);
    connect(&mut p, 2, &[]);
    drain(&mut p);
    assert_eq!(p.join(NOW, "  "), Err(JoinError::EmptyChannel));
    assert_eq!(p.join(NOW, "room"), Ok(true));
    assert_eq!(p.join(NOW, "room "), Ok(false));
    let outs = drain(&mut p);
    assert!(outs.contains(&Output::OpenChannel {
        conn: ConnId(2),
        channel: "room".into(),
        protocol: "sidechannel/room".into()
    }));
    assert_eq!(p.join(NOW, "b"), Ok(true));
    assert_eq!(p.join(NOW, "c"), Err(JoinError::TooManyChannels));

    // A learned welcome is forgotten on leave, a configured one kept.
    let w = create_welcome(&owner, "b", "b", 1);
    p.accept_invite(NOW, "b", None, Some(&w)).unwrap();
    assert!(p.is_welcomed("b") && p.is_welcomed("room"));
    drain(&mut p);
    assert_eq!(p.leave(ENTRY_CHANNEL), Err(JoinError::EntryChannel));
    assert_eq!(p.leave("nope"), Ok(false));
    assert_eq!(p.leave("b"), Ok(true));
    assert_eq!(p.leave("room"), Ok(true));
    let outs = drain(&mut p);
    assert!(outs.contains(&Output::CloseChannel {
        conn: ConnId(2),
        channel: "room".into()
    }));
    assert!(outs.contains(&Output::Event(SidechannelEvent::Left {
        channel: "room".into(),
        topic: payload::topic("room")
    })));
    assert!(!p.is_welcomed("b"));
    assert!(p.is_welcomed("room"));
}

#[test]
fn invite_only_join_needs_an_invite() {
    let owner = kp(9);
    let mut c = cfg();
    c.invite_required = true;
    c.inviter_keys = vec![hex::encode(owner.public_key)];
    let mut p = plane(c, 1);
    assert_eq!(
        p.join(NOW, "vip"),
        Err(JoinError::InviteRequired("vip".into()))
    );
    let me = p.self_key().to_owned();
    let for_other = create_invite(
        &owner,
        "vip",
        &hex::encode(kp(2).public_key),
        1_000,
        None,
        NOW,
    )
    .unwrap();
    assert!(matches!(
        p.accept_invite(NOW, "vip", Some(&for_other), None),
        Err(AcceptError::Invite(CredentialError::InviteeMismatch))
    ));
    let rogue = create_invite(&kp(3), "vip", &me, 1_000, None, NOW).unwrap();
    assert!(matches!(
        p.accept_invite(NOW, "vip", Some(&rogue), None),
        Err(AcceptError::Invite(CredentialError::InviterNotTrusted))
    ));
    let ok = create_invite(&owner, "vip", &me, 1_000, None, NOW).unwrap();
    assert_eq!(
        p.accept_invite(NOW, "vip", Some(&ok), None),
        Ok(AcceptReport {
            invited: true,
            welcomed: false
        })
    );
    assert_eq!(p.join(NOW, "vip"), Ok(true));
    // Expired invites no longer let us (re)join.
    p.leave("vip").unwrap();
    p.accept_invite(NOW, "vip", Some(&ok), None).unwrap();
    assert!(p.join(NOW + 1_000, "vip").is_err());
    assert_eq!(
        p.accept_invite(NOW, " ", None, None),
        Err(AcceptError::EmptyChannel)
    );
}

#[test]
fn connections_are_bounded_and_unique() {
    let mut p = plane(
        SidechannelConfig {
            max_connections: 1,
            ..cfg()
        },
        1,
    );
    p.on_connection(ConnId(1), [1; 32]).unwrap();
    assert_eq!(
        p.on_connection(ConnId(1), [1; 32]),
        Err(ConnError::Duplicate(ConnId(1)))
    );
    assert_eq!(p.on_connection(ConnId(2), [2; 32]), Err(ConnError::TooMany));
    p.on_disconnect(ConnId(1));
    p.on_connection(ConnId(2), [2; 32]).unwrap();
    assert_eq!(p.stats().connections, 1);
}

#[test]
fn broadcast_send_side_checks() {
    let owner = kp(9);
    let mut c = cfg();
    c.welcome_required = false;
    c.owner_write_channels = Some(["news".to_owned()].into());
    c.owner_keys
        .insert("news".into(), hex::encode(owner.public_key));
    c.channels = vec!["news".into(), "room".into()];
    c.max_message_bytes = 2_000;
    let mut p = plane(c, 1);
    assert_eq!(
        p.broadcast(NOW, " ", json!("x"), None),
        Err(SendError::EmptyChannel)
    );
    assert_eq!(
        p.broadcast(NOW, "elsewhere", json!("x"), None),
        Err(SendError::NotJoined("elsewhere".into()))
    );
    assert_eq!(
        p.broadcast(NOW, "news", json!("x"), None),
        Err(SendError::OwnerOnly)
    );
    // Never a success without a recipient.
    assert_eq!(
        p.broadcast(NOW, "room", json!("x"), None),
        Err(SendError::NoPeers {
            unauthorized: 0,
            not_open: 0
        })
    );
    p.on_connection(ConnId(2), kp(2).public_key).unwrap();
    assert_eq!(
        p.broadcast(NOW, "room", json!("x"), None),
        Err(SendError::NoPeers {
            unauthorized: 0,
            not_open: 1
        })
    );
    p.on_channel_open(NOW, ConnId(2), "room");
    assert!(matches!(
        p.broadcast(NOW, "room", json!("y".repeat(2_000)), None),
        Err(SendError::Oversize { max: 2_000, .. })
    ));
    drain(&mut p);
    let report = p.broadcast(NOW, "room", json!("x"), None).unwrap();
    assert_eq!(
        (report.peers, report.unauthorized, report.not_open),
        (1, 0, 0)
    );
    let outs = drain(&mut p);
    let sent = sends(&outs);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.id().map(js::to_string), Some(report.id.clone()));
    assert_eq!(sent[0].2.js_len(), report.bytes);
    // Our own message echoed back by a relay is dropped, not delivered.
    let bytes = sent[0].2.relayed(2.0, "ff").encode();
    p.on_message(NOW, ConnId(2), "room", &bytes);
    assert_eq!(
        events(&mut p),
        [SidechannelEvent::Dropped {
            channel: "room".into(),
            conn: ConnId(2),
            reason: DropReason::OwnMessage
        }]
    );
}

#[test]
fn split_broadcast_matches_inline_broadcast() {
    let mut c = cfg();
    c.pow_enabled = true;
    c.pow_difficulty = 6;
    let mut p = plane(c, 1);
    connect(&mut p, 2, &[ENTRY_CHANNEL]);
    drain(&mut p);
    let job = p
        .begin_broadcast(NOW, ENTRY_CHANNEL, json!("hi"), None)
        .unwrap();
    let prepared = std::thread::spawn(move || job.run()).join().unwrap();
    assert!(payload::check_pow(&prepared.payload, 6));
    let report = p.finish_broadcast(NOW, prepared).unwrap();
    assert_eq!(report.peers, 1);
    assert_eq!(sends(&drain(&mut p)).len(), 1);
    // State changed in between: refused honestly.
    let job = p
        .begin_broadcast(NOW, ENTRY_CHANNEL, json!("hi"), None)
        .unwrap();
    p.on_disconnect(ConnId(2));
    assert_eq!(
        p.finish_broadcast(NOW, job.run()),
        Err(SendError::NoPeers {
            unauthorized: 0,
            not_open: 0
        })
    );
}

#[test]
fn invite_only_sends_skip_unauthorised_peers_but_auth_goes_to_all() {
    let owner = kp(9);
    let mut c = cfg();
    c.welcome_required = false;
    c.invite_required = true;
    c.inviter_keys = vec![hex::encode(owner.public_key)];
    let mut p = plane(c, 1);
    let me = p.self_key().to_owned();
    let welcome = create_welcome(&owner, "vip", "w", 1);
    let invite = create_invite(&owner, "vip", &me, 60_000, Some(welcome), NOW).unwrap();
    p.accept_invite(NOW, "vip", Some(&invite), None).unwrap();
    p.join(NOW, "vip").unwrap();
    connect(&mut p, 2, &["vip"]);
    connect(&mut p, 9, &["vip"]);
    // The auth handshake went to both peers, without the embedded welcome.
    let outs = drain(&mut p);
    let auths = sends(&outs);
    assert_eq!(auths.len(), 2);
    for (_, _, a) in &auths {
        assert_eq!(a.control(), Some("auth"));
        assert!(a.message().unwrap()["invite"].get("welcome").is_none());
    }
    // Ordinary messages only go to the inviter (peer 2 never proved an invite).
    let report = p.broadcast(NOW, "vip", json!("secret"), None).unwrap();
    assert_eq!((report.peers, report.unauthorized), (1, 1));
    let sent = sends(&drain(&mut p));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, ConnId(9));
    // Broadcasting with an invite that is not ours is refused.
    let not_mine = create_invite(
        &owner,
        "vip",
        &hex::encode(kp(2).public_key),
        60_000,
        None,
        NOW,
    )
    .unwrap();
    assert!(matches!(
        p.broadcast(NOW, "vip", json!("x"), Some(not_mine)),
        Err(SendError::Invite(CredentialError::InviteeMismatch))
    ));
}

#[test]
fn late_authorised_peer_gets_the_owners_welcome() {
    let me = kp(1);
    let mut c = cfg();
    c.invite_required = true;
    c.channels = vec!["vip".into()];
    c.default_owner_key = Some(hex::encode(me.public_key));
    let welcome = create_welcome(&me, "vip", "members", 1);
    c.welcome_by_channel.insert("vip".into(), welcome.clone());
    let mut p = plane(c, 1);
    connect(&mut p, 2, &["vip"]);
    // Peer 2 is not authorised yet: no welcome for it.
    assert!(sends(&drain(&mut p)).is_empty());
    let invite = p
        .create_invite(NOW, "vip", &hex::encode(kp(2).public_key), None, None)
        .unwrap();
    assert_eq!(invite["welcome"], welcome);
    let expires = invite["payload"]["expiresAt"].as_f64().unwrap();
    assert_eq!(expires, (NOW + 604_800_000) as f64);
    let mut inv = invite.clone();
    inv.as_object_mut().unwrap().remove("welcome");
    let auth = signed(2, "vip", json!({"control": "auth", "invite": inv}), NOW);
    p.on_message(NOW, ConnId(2), "vip", &auth);
    let outs = drain(&mut p);
    assert!(
        outs.contains(&Output::Event(SidechannelEvent::PeerAuthorized {
            channel: "vip".into(),
            conn: ConnId(2),
            peer: hex::encode(kp(2).public_key)
        }))
    );
    let sent = sends(&outs);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.control(), Some("welcome"));
    assert_eq!(sent[0].2.message().unwrap()["welcome"], welcome);
    // Auth is consumed: not delivered, not relayed.
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Event(SidechannelEvent::Message { .. }))));
}

#[test]
fn a_copy_dropped_while_unwelcomed_does_not_burn_the_id() {
    let owner = kp(9);
    let mut c = cfg();
    c.channels = vec!["room".into()];
    c.default_owner_key = Some(hex::encode(owner.public_key));
    let mut p = plane(c, 1);
    connect(&mut p, 2, &["room"]);
    drain(&mut p);
    let bytes = signed(2, "room", json!("hi"), NOW);
    p.on_message(NOW, ConnId(2), "room", &bytes);
    assert!(matches!(
        events(&mut p)[..],
        [SidechannelEvent::Dropped {
            reason: DropReason::AwaitingWelcome,
            ..
        }]
    ));
    let w = create_welcome(&owner, "room", "w", 1);
    assert!(
        p.accept_invite(NOW, "room", None, Some(&w))
            .unwrap()
            .welcomed
    );
    drain(&mut p);
    p.on_message(NOW, ConnId(2), "room", &bytes);
    let ev = events(&mut p);
    assert!(matches!(ev[..], [SidechannelEvent::Message { .. }]));
    p.on_message(NOW, ConnId(2), "room", &bytes);
    assert!(matches!(
        events(&mut p)[..],
        [SidechannelEvent::Dropped {
            reason: DropReason::Duplicate,
            ..
        }]
    ));
}

#[test]
fn unknown_connection_and_unjoined_channel_are_reported() {
    let mut p = plane(cfg(), 1);
    drain(&mut p);
    let bytes = signed(2, ENTRY_CHANNEL, json!("x"), NOW);
    p.on_message(NOW, ConnId(5), ENTRY_CHANNEL, &bytes);
    let mut ev = events(&mut p);
    connect(&mut p, 2, &[]);
    drain(&mut p);
    p.on_message(NOW, ConnId(2), "room", &bytes);
    ev.extend(events(&mut p));
    let reasons: Vec<_> = ev
        .into_iter()
        .filter_map(|e| match e {
            SidechannelEvent::Dropped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [DropReason::UnknownConnection, DropReason::NotJoined]
    );
    assert_eq!(p.stats().dropped, 2);
}

#[test]
fn output_queue_is_bounded() {
    let mut p = plane(
        SidechannelConfig {
            max_queued_outputs: 3,
            ..cfg()
        },
        1,
    );
    for i in 0..5u8 {
        p.on_connection(ConnId(u64::from(i)), [i; 32]).unwrap();
    }
    assert_eq!(drain(&mut p).len(), 3);
    assert_eq!(p.stats().outputs_discarded, 3);
}

#[test]
fn create_welcome_is_stored_only_for_the_owner() {
    let mut c = cfg();
    c.owner_keys
        .insert("mine".into(), hex::encode(kp(1).public_key));
    let mut p = plane(c, 1);
    let w = p.create_welcome(NOW, "mine", "hello");
    assert_eq!(p.welcome("mine"), Some(&w));
    p.create_welcome(NOW, "theirs", "hello");
    assert_eq!(p.welcome("theirs"), None);
    // Owners count as welcomed on their channels.
    assert!(p.is_welcomed("mine") && !p.is_welcomed("theirs"));
}

#[test]
fn request_open_validates_its_credentials() {
    let owner = kp(9);
    let mut c = cfg();
    c.default_owner_key = Some(hex::encode(owner.public_key));
    let mut p = plane(c, 1);
    connect(&mut p, 2, &[ENTRY_CHANNEL]);
    drain(&mut p);
    assert_eq!(
        p.request_open(NOW, " ", None, None, None),
        Err(SendError::EmptyChannel)
    );
    let wrong = create_welcome(&kp(3), "new", "x", 1);
    assert!(matches!(
        p.request_open(NOW, "new", None, None, Some(wrong)),
        Err(SendError::Welcome(CredentialError::OwnerMismatch))
    ));
    let w = create_welcome(&owner, "new", "x", 1);
    let report = p
        .request_open(NOW, "new", None, None, Some(w.clone()))
        .unwrap();
    assert_eq!(report.peers, 1);
    let sent = sends(&drain(&mut p));
    assert_eq!(
        sent[0].2.message(),
        Some(&json!({"control": "open_channel", "channel": "new", "welcome": w}))
    );
    // Now that the welcome is known, a second request needs no argument.
    assert!(p
        .request_open(NOW, "new", Some(ENTRY_CHANNEL), None, None)
        .is_ok());
    assert_eq!(
        p.request_open(NOW, "new", Some("unjoined"), None, None),
        Err(SendError::NotJoined("unjoined".into()))
    );
}

#[test]
fn fuzz_entry_point_survives_samples() {
    for sample in [
        &b""[..],
        b"\x00",
        b"\x02{}",
        b"{\"type\":\"sidechannel\"}",
        b"\xff\xff\xff\xff\xff",
        b"b64:eyJhIjoxfQ==",
    ] {
        crate::fuzz_payload(sample);
    }
}

#[test]
fn signatures_checked_ahead_in_a_batch_decide_like_the_plane_would() {
    let c = cfg();
    // Same length, so the c.json length prefix still fits: "m2" signed, "x2" sent.
    let mut tampered = signed(2, ENTRY_CHANNEL, json!("m2"), NOW + 2);
    let at = tampered.windows(4).position(|w| w == b"\"m2\"").unwrap();
    tampered[at + 1] = b'x';
    let wire: Vec<Vec<u8>> = (0..5)
        .map(|i| match i {
            2 => tampered.clone(),
            _ => signed(2, ENTRY_CHANNEL, json!(format!("m{i}")), NOW + i),
        })
        .collect();
    let outcome = |ahead: bool| {
        let mut p = plane(c.clone(), 1);
        connect(&mut p, 2, &[ENTRY_CHANNEL]);
        drain(&mut p);
        let max = p.policy().config().max_message_bytes;
        let mut batch: Vec<Inbound> = wire.iter().map(|b| Inbound::decode(b, max)).collect();
        if ahead {
            Inbound::verify_ahead(&mut batch);
            let checked: Vec<_> = batch.iter().map(|m| m.signed_by_from).collect();
            assert_eq!(
                checked,
                [Some(true), Some(true), Some(false), Some(true), Some(true)]
            );
        }
        for m in batch {
            p.on_inbound(NOW, ConnId(2), ENTRY_CHANNEL, m);
        }
        events(&mut p)
            .into_iter()
            .map(|e| match e {
                SidechannelEvent::Message { payload, .. } => {
                    format!("{}", payload.message().unwrap())
                }
                SidechannelEvent::Dropped { reason, .. } => reason.code().to_owned(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let expected = ["\"m0\"", "\"m1\"", "bad_signature", "\"m3\"", "\"m4\""];
    assert_eq!(outcome(true), expected);
    assert_eq!(outcome(false), expected);
}

#[test]
fn the_plane_trusts_a_signature_checked_ahead() {
    let mut p = plane(cfg(), 1);
    connect(&mut p, 2, &[ENTRY_CHANNEL]);
    drain(&mut p);
    let mut m = Inbound::decode(&signed(2, ENTRY_CHANNEL, json!("hi"), NOW), 1_000_000);
    m.signed_by_from = Some(false);
    p.on_inbound(NOW, ConnId(2), ENTRY_CHANNEL, m);
    assert!(matches!(
        events(&mut p)[..],
        [SidechannelEvent::Dropped {
            reason: DropReason::BadSignature,
            ..
        }]
    ));
}
