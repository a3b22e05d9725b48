//! Multi-peer simulations of the sidechannel plane over the in-memory network in `sim`.

mod sim;

use intercom_sidechannel::payload::{self, PrepareParams};
use intercom_sidechannel::{
    create_invite, create_welcome, DropReason, SendError, SidechannelConfig, SidechannelEvent,
};
use serde_json::{json, Value};
use sim::{key_hex, kp, Net};

const ENTRY: &str = "0000intercom";

/// Default config with a cheap proof of work so simulations stay fast.
fn cfg() -> SidechannelConfig {
    SidechannelConfig {
        pow_difficulty: 4,
        ..SidechannelConfig::default()
    }
}

/// A payload made outside any plane (a misbehaving peer's hand-made message).
fn forge(
    signer: &intercom_crypto::KeyPair,
    channel: &str,
    message: Value,
    ts: u64,
    pow: u32,
) -> intercom_sidechannel::Payload {
    payload::prepare(
        signer,
        PrepareParams {
            channel: channel.into(),
            message,
            ts,
            ttl: 3,
            invite: None,
            pow_difficulty: Some(pow),
            id_suffix: "forged00".into(),
        },
    )
}

#[test]
fn unwelcomed_messages_are_dropped_until_a_valid_welcome_arrives() {
    let owner = kp(1);
    let welcome = create_welcome(&owner, "room", "welcome!", 1);
    let room = |with_welcome: bool| {
        let mut c = cfg();
        c.channels = vec!["room".into()];
        c.owner_keys.insert("room".into(), key_hex(&owner));
        if with_welcome {
            c.welcome_by_channel.insert("room".into(), welcome.clone());
        }
        c
    };
    let mut net = Net::new();
    let o = net.add(1, room(true));
    let p1 = net.add(2, room(false));
    let p2 = net.add(3, room(true)); // welcomed out of band
    net.connect(p1, p2);

    net.peers[p2]
        .broadcast(net.now, "room", json!("early"), None)
        .unwrap();
    net.pump();
    assert!(net.texts(p1, "room").is_empty());
    assert_eq!(net.drop_codes(p1), ["awaiting_welcome"]);

    // A welcome signed by someone else than the owner does not count.
    let fake = create_welcome(&kp(3), "room", "fake", 2);
    net.peers[p2]
        .broadcast(
            net.now,
            "room",
            json!({"control": "welcome", "welcome": fake}),
            None,
        )
        .unwrap();
    net.pump();
    assert_eq!(net.drop_codes(p1), ["awaiting_welcome", "invalid_welcome"]);
    assert!(!net.peers[p1].is_welcomed("room"));

    // The owner connects: it sends its welcome as soon as the channel opens.
    net.connect(o, p1);
    assert!(net.peers[p1].is_welcomed("room"));
    assert!(net.events[p1].contains(&SidechannelEvent::Welcomed {
        channel: "room".into()
    }));

    net.now += 10;
    net.peers[p2]
        .broadcast(net.now, "room", json!("late"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.texts(p1, "room"), [json!("late")]);
    // p1 relays it to the owner, once.
    assert_eq!(net.texts(o, "room"), [json!("late")]);
}

#[test]
fn owner_only_drops_non_owner_and_spoofed_messages() {
    let owner = kp(1);
    let welcome = create_welcome(&owner, "news", "owner speaks", 1);
    let news = || {
        let mut c = cfg();
        c.channels = vec!["news".into()];
        c.owner_keys.insert("news".into(), key_hex(&owner));
        c.owner_write_channels = Some(["news".to_owned()].into());
        c.welcome_by_channel.insert("news".into(), welcome.clone());
        c
    };
    let mut net = Net::new();
    let o = net.add(1, news());
    let a = net.add(2, news());
    let b = net.add(3, news());
    net.line(&[o, a, b]);
    net.clear_events();

    // Our own plane refuses to write.
    assert_eq!(
        net.peers[a].broadcast(net.now, "news", json!("mine"), None),
        Err(SendError::OwnerOnly)
    );

    // A misbehaving `a` sends a message of its own, then one with `from` spoofed to the
    // owner (signed with its own key), then a genuine owner message with altered text.
    let own = forge(&net.keys[a], "news", json!("not owner"), net.now, 4);
    net.inject(a, b, "news", &own.encode());
    let mut spoofed = forge(&net.keys[a], "news", json!("spoofed"), net.now + 1, 4);
    spoofed
        .as_map_mut()
        .insert("from".into(), json!(key_hex(&owner)));
    spoofed
        .as_map_mut()
        .insert("origin".into(), json!(key_hex(&owner)));
    payload::stamp_pow(&mut spoofed, 4);
    payload::sign(&mut spoofed, &net.keys[a]);
    net.inject(a, b, "news", &spoofed.encode());
    let mut altered = forge(&owner, "news", json!("real"), net.now + 2, 4);
    altered
        .as_map_mut()
        .insert("message".into(), json!("altered"));
    payload::stamp_pow(&mut altered, 4); // the owner's signature is now stale
    net.inject(a, b, "news", &altered.encode());
    assert_eq!(
        net.drop_codes(b),
        ["owner_only", "owner_only", "owner_only"]
    );
    assert!(net.texts(b, "news").is_empty());

    // The owner's message reaches b through a, exactly once.
    net.peers[o]
        .broadcast(net.now, "news", json!("headline"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.texts(a, "news"), [json!("headline")]);
    assert_eq!(net.texts(b, "news"), [json!("headline")]);
    let via = net.events[b].iter().find_map(|e| match e {
        SidechannelEvent::Message { from, conn, .. } => Some((from.clone(), *conn)),
        _ => None,
    });
    assert_eq!(
        via,
        Some((
            Some(key_hex(&owner)),
            intercom_sidechannel::ConnId(a as u64)
        ))
    );
}

#[test]
fn invite_only_uninvited_peer_gets_zero_bytes() {
    let owner = kp(1);
    let welcome = create_welcome(&owner, "vip", "members only", 1);
    let base = |invites: bool| {
        let mut c = cfg();
        c.owner_keys.insert("vip".into(), key_hex(&owner));
        if invites {
            c.invite_required = true;
            c.invite_required_channels = Some(["vip".to_owned()].into());
            c.inviter_keys = vec![key_hex(&owner)];
        }
        c
    };
    let mut net = Net::new();
    let mut oc = base(true);
    oc.welcome_by_channel.insert("vip".into(), welcome.clone());
    oc.channels = vec!["vip".into()];
    let o = net.add(1, oc);
    let i1 = net.add(2, base(true));
    let i2 = net.add(3, base(true));
    // The uninvited peer runs without invite enforcement, so it can join the topic, and it
    // even knows the welcome.
    let mut uc = base(false);
    uc.welcome_by_channel.insert("vip".into(), welcome.clone());
    uc.channels = vec!["vip".into()];
    let u = net.add(4, uc);

    // Without an invite, invitees cannot join.
    assert!(net.peers[i1].join(net.now, "vip").is_err());
    for i in [i1, i2] {
        let key = net.key(i);
        let invite = net.peers[o]
            .create_invite(net.now, "vip", &key, Some(3_600_000), None)
            .unwrap();
        // The invite carries the owner's welcome.
        assert_eq!(invite["welcome"], welcome);
        let report = net.peers[i]
            .accept_invite(net.now, "vip", Some(&invite), None)
            .unwrap();
        assert!(report.invited && report.welcomed);
        assert_eq!(net.peers[i].join(net.now, "vip"), Ok(true));
    }
    net.line(&[u, o, i1, i2]);
    net.connect(u, i1);
    // Both invitees proved their invites to their neighbours.
    let authorized = |net: &Net, at: usize| -> Vec<String> {
        net.events[at]
            .iter()
            .filter_map(|e| match e {
                SidechannelEvent::PeerAuthorized { peer, .. } => Some(peer.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(authorized(&net, o), [net.key(i1)]);
    assert_eq!(authorized(&net, i1), [net.key(i2)]);
    assert_eq!(authorized(&net, i2), [net.key(i1)]);

    let report = net.peers[o]
        .broadcast(net.now, "vip", json!("secret-1"), None)
        .unwrap();
    assert_eq!((report.peers, report.unauthorized), (1, 1));
    net.pump();
    net.peers[i2]
        .broadcast(net.now, "vip", json!("secret-2"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.texts(i1, "vip"), [json!("secret-1"), json!("secret-2")]);
    assert_eq!(net.texts(i2, "vip"), [json!("secret-1")]);
    assert_eq!(net.texts(o, "vip"), [json!("secret-2")]);

    // The uninvited peer's own messages are dropped by both neighbours.
    net.peers[u]
        .broadcast(net.now, "vip", json!("let me in"), None)
        .unwrap();
    net.pump();
    assert!(net.drop_codes(o).contains(&"invite"));
    assert!(net.drop_codes(i1).contains(&"invite"));
    assert!(net.texts(i1, "vip").len() == 2 && net.texts(o, "vip").len() == 1);

    // Not one payload byte reached it on the channel, not even the welcome. The only frames
    // it saw are its neighbours' `auth` handshakes (the reference sends those to every
    // peer), and they carry no welcome.
    assert_eq!(net.received[u].get("vip").copied().unwrap_or(0), 0);
    assert!(net.delivered(u, "vip").is_empty());
    let handshakes = net.handshakes[u].get("vip").cloned().unwrap_or_default();
    assert_eq!(handshakes.len(), 1);
    assert_eq!(handshakes[0].from_key(), Some(net.key(i1)));
    let carried = &handshakes[0].message().unwrap()["invite"];
    assert!(carried.get("payload").is_some() && carried.get("welcome").is_none());
}

#[test]
fn insufficient_pow_is_dropped() {
    let strict = SidechannelConfig::default(); // difficulty 12
    let mut net = Net::new();
    let no_pow = net.add(
        1,
        SidechannelConfig {
            pow_enabled: false,
            ..SidechannelConfig::default()
        },
    );
    let b = net.add(2, strict.clone());
    let honest = net.add(3, strict);
    net.connect(no_pow, b);
    net.connect(honest, b);

    net.peers[no_pow]
        .broadcast(net.now, ENTRY, json!("free ride"), None)
        .unwrap();
    net.pump();
    // Stamped at 2 bits (and claiming 12): still short of what b requires.
    let weak = (0..)
        .map(|i| {
            let mut p = forge(&net.keys[no_pow], ENTRY, json!(i), net.now, 2);
            p.as_map_mut()["pow"]["difficulty"] = json!(12);
            p
        })
        .find(|p| !payload::check_pow(p, 12))
        .unwrap();
    net.inject(no_pow, b, ENTRY, &weak.encode());
    assert_eq!(net.drop_codes(b), ["pow", "pow"]);

    net.peers[honest]
        .broadcast(net.now, ENTRY, json!("worked for it"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.texts(b, ENTRY), [json!("worked for it")]);
}

#[test]
fn flooding_peer_is_blocked_after_three_strikes_and_readmitted_after_the_block() {
    let mut c = cfg();
    c.pow_enabled = false;
    let mut net = Net::new();
    let a = net.add(1, c.clone());
    let b = net.add(2, c);
    net.connect(a, b);
    let chunk = "x".repeat(59_500);
    for _ in 0..8 {
        net.peers[a]
            .broadcast(net.now, ENTRY, json!(chunk), None)
            .unwrap();
        net.pump();
    }
    assert_eq!(net.texts(b, ENTRY).len(), 4);
    assert_eq!(
        net.drop_codes(b),
        ["rate_limited", "rate_limited", "rate_limited", "blocked"]
    );

    // Reconnecting does not lift the block.
    net.now += 10_000;
    net.disconnect(a, b);
    net.connect(a, b);
    net.clear_events();
    net.peers[a]
        .broadcast(net.now, ENTRY, json!("still here"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.drop_codes(b), ["blocked"]);

    // 30 s after the third strike the peer is heard again.
    net.now += 20_000;
    net.clear_events();
    net.peers[a]
        .broadcast(net.now, ENTRY, json!("after the block"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.texts(b, ENTRY), [json!("after the block")]);
    assert!(net.drops(b).is_empty());
}

#[test]
fn oversize_is_rejected_at_send_and_at_receive() {
    let small = SidechannelConfig {
        max_message_bytes: 1_000,
        ..cfg()
    };
    let large = SidechannelConfig {
        max_message_bytes: 100_000,
        ..cfg()
    };
    let mut net = Net::new();
    let a = net.add(1, small.clone());
    let big = net.add(2, large);
    let b = net.add(3, small);
    net.connect(a, b);
    net.connect(big, b);
    net.clear_events();

    let err = net.peers[a]
        .broadcast(net.now, ENTRY, json!("y".repeat(2_000)), None)
        .unwrap_err();
    assert!(matches!(err, SendError::Oversize { max: 1_000, bytes } if bytes > 2_000));
    assert!(net.peers[a].poll_output().is_none());

    net.peers[big]
        .broadcast(net.now, ENTRY, json!("y".repeat(5_000)), None)
        .unwrap();
    net.pump();
    assert!(matches!(
        net.drops(b)[..],
        [DropReason::Oversize { max: 1_000, .. }]
    ));
    assert!(net.texts(b, ENTRY).is_empty());
}

#[test]
fn line_of_peers_delivers_exactly_once_within_ttl() {
    // Six peers in a line: with TTL 3 a message travels four hops (1 + 3 relays).
    let mut net = Net::new();
    let peers: Vec<usize> = (1..=6).map(|s| net.add(s, cfg())).collect();
    net.line(&peers);
    net.clear_events();
    net.peers[0]
        .broadcast(net.now, ENTRY, json!("hello line"), None)
        .unwrap();
    net.pump();
    for (hop, &p) in peers.iter().enumerate().skip(1).take(4) {
        let got = net.delivered(p, ENTRY);
        assert_eq!(got.len(), 1, "peer {p}");
        assert_eq!(got[0].message(), Some(&json!("hello line")));
        assert_eq!(got[0].ttl(), (4 - hop) as f64, "ttl at hop {hop}");
        if hop > 1 {
            assert_eq!(
                got[0].get("relayedBy"),
                Some(&json!(net.key(peers[hop - 1])))
            );
        }
    }
    // Beyond the TTL: the sixth peer hears nothing, the sender never hears itself.
    assert!(net.delivered(peers[5], ENTRY).is_empty());
    assert_eq!(net.received[peers[5]].get(ENTRY).copied().unwrap_or(0), 0);
    assert!(net.delivered(peers[0], ENTRY).is_empty());
    for &p in &peers {
        assert!(net.drops(p).is_empty(), "peer {p}: {:?}", net.drops(p));
    }

    // A replayed copy is a duplicate.
    let first = net.delivered(peers[1], ENTRY)[0].clone();
    net.inject(peers[2], peers[1], ENTRY, &first.encode());
    assert_eq!(net.drop_codes(peers[1]), ["duplicate"]);
}

#[test]
fn mesh_with_cycles_delivers_exactly_once_and_never_to_the_sender() {
    let mut net = Net::new();
    let peers: Vec<usize> = (1..=6).map(|s| net.add(s, cfg())).collect();
    // A ring plus chords: many paths of different lengths between every pair.
    for i in 0..6 {
        net.connect(peers[i], peers[(i + 1) % 6]);
    }
    net.connect(peers[0], peers[3]);
    net.connect(peers[1], peers[4]);
    net.connect(peers[2], peers[5]);
    net.clear_events();
    for (round, &sender) in peers.iter().enumerate() {
        net.now += 1;
        let text = json!(format!("from {round}"));
        net.peers[sender]
            .broadcast(net.now, ENTRY, text.clone(), None)
            .unwrap();
        net.pump();
        for &p in &peers {
            let n = net.texts(p, ENTRY).iter().filter(|t| **t == text).count();
            assert_eq!(n, usize::from(p != sender), "round {round}, peer {p}");
        }
    }
    for &p in &peers {
        assert!(
            net.drops(p).iter().all(|r| *r == DropReason::Duplicate),
            "peer {p}: {:?}",
            net.drops(p)
        );
    }
}

#[test]
fn open_requests_reach_peers_and_auto_join_when_configured() {
    let owner = kp(1);
    let welcome = create_welcome(&owner, "newroom", "come in", 1);
    let with = |auto: bool| {
        let mut c = cfg();
        c.default_owner_key = Some(key_hex(&owner));
        c.auto_join_on_open = auto;
        c
    };
    let mut net = Net::new();
    let a = net.add(2, with(false));
    let auto = net.add(3, with(true));
    let manual = net.add(4, with(false));
    net.connect(a, auto);
    net.connect(a, manual);
    net.clear_events();

    // Without a welcome the request would be rejected by every peer: refused locally.
    assert_eq!(
        net.peers[a].request_open(net.now, "newroom", None, None, None),
        Err(SendError::MissingWelcome)
    );
    net.peers[a]
        .request_open(net.now, "newroom", None, None, Some(welcome.clone()))
        .unwrap();
    net.pump();
    for p in [auto, manual] {
        assert!(net.events[p].iter().any(|e| matches!(
            e,
            SidechannelEvent::OpenRequested { channel, via, .. } if channel == "newroom" && via == ENTRY
        )));
        assert!(net.peers[p].is_welcomed("newroom"));
    }
    assert!(net.peers[auto].is_joined("newroom"));
    assert!(net.events[auto].contains(&SidechannelEvent::AutoJoin {
        channel: "newroom".into()
    }));
    assert!(!net.peers[manual].is_joined("newroom"));

    // An invite-only target needs an invite for the requesting peer.
    let mut vip = with(false);
    vip.invite_required = true;
    vip.invite_required_prefixes = Some(vec!["vip-".into()]);
    vip.inviter_keys = vec![key_hex(&owner)];
    let strict = net.add(5, vip);
    net.connect(a, strict);
    let vw = create_welcome(&owner, "vip-1", "hi", 1);
    let invite = create_invite(&owner, "vip-1", &net.key(a), 60_000, Some(vw), net.now).unwrap();
    net.clear_events();
    net.peers[a]
        .request_open(net.now, "vip-1", None, Some(invite), None)
        .unwrap();
    net.pump();
    assert!(net.events[strict].iter().any(
        |e| matches!(e, SidechannelEvent::OpenRequested { channel, .. } if channel == "vip-1")
    ));
}
