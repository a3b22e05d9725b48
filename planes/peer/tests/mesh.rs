//! Three runtimes fully connected in process over in-memory protomux connections: entry
//! and welcomed channels, exactly-once delivery through relays, owner-only and invite-only
//! channels, leave, remote open requests.

use std::collections::BTreeMap;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_peer::testing::connect;
use intercom_peer::{NoNetwork, PeerConfig, PeerError, PeerEvent, PeerHandle, PeerRuntime};
use intercom_protomux::MuxConfig;
use intercom_sidechannel::{create_welcome, SendError, SidechannelConfig, SidechannelEvent};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    h: PeerHandle,
    kp: KeyPair,
    events: mpsc::Receiver<PeerEvent>,
}

fn kp(seed: u8) -> KeyPair {
    KeyPair::from_seed(&[seed; 32])
}

fn hexkey(kp: &KeyPair) -> String {
    hex::encode(kp.public_key)
}

async fn node(seed: u8, sidechannel: SidechannelConfig) -> Node {
    let cfg = PeerConfig {
        sidechannel,
        ..PeerConfig::default()
    };
    node_with(seed, cfg).await
}

async fn node_with(seed: u8, cfg: PeerConfig) -> Node {
    let kp = kp(seed);
    let (h, _task) = PeerRuntime::spawn(cfg, kp.clone(), NoNetwork).expect("runtime");
    let (tx, events) = mpsc::channel(4096);
    h.add_sink(tx).await.unwrap();
    Node { h, kp, events }
}

async fn mesh(nodes: &[&Node]) {
    for i in 0..nodes.len() {
        for j in i + 1..nodes.len() {
            connect(&nodes[i].h, &nodes[j].h, 64, MuxConfig::default())
                .await
                .unwrap();
        }
    }
}

/// Waits until `n` has at least `count` protomux channels open.
async fn wait_open(n: &Node, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = n.h.stats().await.unwrap();
        if s.open_channels >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} channels open",
            s.open_channels
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next delivered message on any channel: (channel, message, from).
async fn next_message(n: &mut Node) -> (String, Value, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = timeout(deadline - Instant::now(), n.events.recv())
            .await
            .expect("timed out waiting for a message")
            .expect("event queue closed");
        if let PeerEvent::Sidechannel {
            event:
                SidechannelEvent::Message {
                    channel,
                    payload,
                    from,
                    ..
                },
            ..
        } = ev
        {
            if is_control(payload.message()) {
                continue;
            }
            return (
                channel,
                payload.message().cloned().unwrap_or(Value::Null),
                from.unwrap_or_default(),
            );
        }
    }
}

/// Welcome controls are delivered like messages (as the reference's `onMessage` sees
/// them); the tests skip them.
fn is_control(message: Option<&Value>) -> bool {
    message.is_some_and(|m| m.get("control").is_some())
}

/// Waits for an event matching `pred`.
async fn wait_event(n: &mut Node, what: &str, pred: impl Fn(&PeerEvent) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = timeout(deadline - Instant::now(), n.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("event queue closed");
        if pred(&ev) {
            return;
        }
    }
}

/// Collects the messages delivered within `d`.
async fn messages_within(n: &mut Node, d: Duration) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + d;
    while let Ok(Some(ev)) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        n.events.recv(),
    )
    .await
    {
        if let PeerEvent::Sidechannel {
            event: SidechannelEvent::Message {
                channel, payload, ..
            },
            ..
        } = ev
        {
            if is_control(payload.message()) {
                continue;
            }
            out.push((channel, payload.message().cloned().unwrap_or(Value::Null)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_channel_full_mesh_exactly_once() {
    let mut a = node(1, SidechannelConfig::default()).await;
    let mut b = node(2, SidechannelConfig::default()).await;
    let mut c = node(3, SidechannelConfig::default()).await;
    mesh(&[&a, &b, &c]).await;
    for n in [&a, &b, &c] {
        wait_open(n, 2).await;
    }

    let out =
        a.h.send("0000intercom", json!("hello from a"), None, None)
            .await
            .unwrap();
    assert_eq!(out.peers, 2);
    for n in [&mut b, &mut c] {
        let (ch, msg, from) = next_message(n).await;
        assert_eq!(ch, "0000intercom");
        assert_eq!(msg, json!("hello from a"));
        assert_eq!(from, hexkey(&a.kp));
    }

    // Everyone sends once; relays (TTL 3) carry copies around the triangle, yet every
    // peer delivers each message exactly once and never its own.
    for (i, n) in [&b, &c].iter().enumerate() {
        let r =
            n.h.send("0000intercom", json!({"n": i}), None, None)
                .await
                .unwrap();
        assert_eq!(r.peers, 2);
    }
    let settle = Duration::from_millis(700);
    let got_a = messages_within(&mut a, settle).await;
    let got_b = messages_within(&mut b, settle).await;
    let got_c = messages_within(&mut c, settle).await;
    let sorted = |mut v: Vec<(String, Value)>| {
        v.sort_by_key(|(_, m)| m.to_string());
        v
    };
    let e = |v: Value| ("0000intercom".to_owned(), v);
    assert_eq!(sorted(got_a), vec![e(json!({"n": 0})), e(json!({"n": 1}))]);
    assert_eq!(got_b, vec![e(json!({"n": 1}))]);
    assert_eq!(got_c, vec![e(json!({"n": 0}))]);

    let s = b.h.stats().await.unwrap();
    assert_eq!(s.connections, 2);
    assert_eq!(s.sidechannel.delivered, 2);
    assert!(s.sidechannel.relayed > 0, "relays happened: {s:?}");
    a.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcomed_channel_and_owner_only() {
    let owner = kp(11);
    let welcome = create_welcome(&owner, "room", "welcome to room", 1);
    let news_welcome = create_welcome(&owner, "news", "owner speaks", 1);
    let owners: BTreeMap<String, String> = [
        ("room".to_owned(), hexkey(&owner)),
        ("news".to_owned(), hexkey(&owner)),
    ]
    .into();
    let cfg = |with_welcome: bool| SidechannelConfig {
        channels: vec!["room".into(), "news".into()],
        owner_keys: owners.clone(),
        owner_write_channels: Some(["news".to_owned()].into()),
        welcome_by_channel: if with_welcome {
            [
                ("room".to_owned(), welcome.clone()),
                ("news".to_owned(), news_welcome.clone()),
            ]
            .into()
        } else {
            BTreeMap::new()
        },
        ..SidechannelConfig::default()
    };
    let mut a = node(11, cfg(true)).await; // the owner
    let mut b = node(12, cfg(true)).await;
    // C starts without the welcomes: it drops room traffic until the owner's welcome
    // arrives over the channel (the owner sends it when the channel opens).
    let mut c = node(13, cfg(false)).await;
    mesh(&[&a, &b, &c]).await;
    for n in [&a, &b, &c] {
        wait_open(n, 6).await;
    }
    wait_event(&mut c, "C welcomed on room", |e| {
        matches!(e, PeerEvent::Sidechannel { event: SidechannelEvent::Welcomed { channel }, .. } if channel == "room")
    })
    .await;

    let r =
        b.h.send("room", json!("hi room"), None, None)
            .await
            .unwrap();
    assert_eq!(r.peers, 2);
    assert_eq!(next_message(&mut a).await.1, json!("hi room"));
    let (ch, msg, _) = next_message(&mut c).await;
    assert_eq!((ch.as_str(), msg), ("room", json!("hi room")));

    // Owner-only: B's send is refused locally; the owner's reaches everyone.
    let e = b.h.send("news", json!("not the owner"), None, None).await;
    assert_eq!(e, Err(PeerError::Send(SendError::OwnerOnly)));
    let r =
        a.h.send("news", json!("headline"), None, None)
            .await
            .unwrap();
    assert_eq!(r.peers, 2);
    assert_eq!(
        next_message(&mut b).await,
        ("news".into(), json!("headline"), hexkey(&owner))
    );
    assert_eq!(next_message(&mut c).await.1, json!("headline"));

    // Leaving closes the protomux channels on both sides: the owner then reaches only C.
    assert!(b.h.leave("room").await.unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let r =
            a.h.send("room", json!("after leave"), None, None)
                .await
                .unwrap();
        if r.peers == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's room channel never closed at A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(messages_within(&mut b, Duration::from_millis(300))
        .await
        .iter()
        .all(|(ch, _)| ch != "room"));
    assert_eq!(
        b.h.leave("0000intercom").await,
        Err(PeerError::Join(
            intercom_sidechannel::JoinError::EntryChannel
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_only_channel() {
    let inviter = kp(21);
    let welcome = create_welcome(&inviter, "vip", "members only", 1);
    let cfg = SidechannelConfig {
        owner_keys: [("vip".to_owned(), hexkey(&inviter))].into(),
        invite_required: true,
        invite_required_channels: Some(["vip".to_owned()].into()),
        inviter_keys: vec![hexkey(&inviter)],
        ..SidechannelConfig::default()
    };
    let mut a = node(
        21,
        SidechannelConfig {
            channels: vec!["vip".into()],
            welcome_by_channel: [("vip".to_owned(), welcome.clone())].into(),
            ..cfg.clone()
        },
    )
    .await;
    let mut b = node(22, cfg.clone()).await;
    // C does not enforce invites (misconfigured or hostile): it can open the channel but
    // must never get a payload.
    let mut c = node(
        23,
        SidechannelConfig {
            welcome_required: false,
            ..SidechannelConfig::default()
        },
    )
    .await;
    mesh(&[&a, &b, &c]).await;
    for n in [&a, &b, &c] {
        wait_open(n, 2).await;
    }

    // Without an invite B cannot join.
    assert!(matches!(
        b.h.join("vip", None, None).await,
        Err(PeerError::Join(
            intercom_sidechannel::JoinError::InviteRequired(_)
        ))
    ));
    let invite =
        a.h.create_invite("vip", &b.h.public_key_hex(), Some(60_000), None)
            .await
            .unwrap();
    assert!(
        invite.get("welcome").is_some(),
        "the stored welcome is embedded"
    );
    assert!(b.h.join("vip", Some(invite), None).await.unwrap());
    assert!(c.h.join("vip", None, None).await.unwrap());

    // B proves its invite when the channel opens; the owner authorises it.
    let b_key = b.h.public_key_hex();
    wait_event(&mut a, "B authorised", |e| {
        matches!(e, PeerEvent::Sidechannel { event: SidechannelEvent::PeerAuthorized { channel, peer, .. }, .. } if channel == "vip" && *peer == b_key)
    })
    .await;
    wait_open(&c, 3).await;

    let r = a.h.send("vip", json!("secret"), None, None).await.unwrap();
    assert_eq!((r.peers, r.unauthorized), (1, 1));
    assert_eq!(
        next_message(&mut b).await,
        ("vip".into(), json!("secret"), hexkey(&inviter))
    );
    let r = b.h.send("vip", json!("reply"), None, None).await.unwrap();
    assert_eq!(r.peers, 1, "B only sends to authorised peers (the inviter)");
    assert_eq!(next_message(&mut a).await.1, json!("reply"));
    assert!(messages_within(&mut c, Duration::from_millis(500))
        .await
        .iter()
        .all(|(ch, _)| ch != "vip"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_open_request_and_auto_join() {
    let a_kp = kp(31);
    let welcome = create_welcome(&a_kp, "fresh", "come in", 1);
    let owners: BTreeMap<String, String> = [("fresh".to_owned(), hexkey(&a_kp))].into();
    let mut a = node(
        31,
        SidechannelConfig {
            owner_keys: owners.clone(),
            ..SidechannelConfig::default()
        },
    )
    .await;
    let mut b = node(
        32,
        SidechannelConfig {
            owner_keys: owners.clone(),
            auto_join_on_open: true,
            ..SidechannelConfig::default()
        },
    )
    .await;
    mesh(&[&a, &b]).await;
    wait_open(&a, 1).await;
    wait_open(&b, 1).await;

    // Before any peer: a send with nobody connected on the channel reports peers 0.
    assert!(a
        .h
        .join("fresh", None, Some(welcome.clone()))
        .await
        .unwrap());
    let r = a.h.request_open("fresh", None, None, None).await.unwrap();
    assert_eq!(r.peers, 1);
    wait_event(&mut b, "auto-join", |e| {
        matches!(e, PeerEvent::Sidechannel { event: SidechannelEvent::AutoJoin { channel }, .. } if channel == "fresh")
    })
    .await;
    wait_open(&a, 2).await;
    wait_open(&b, 2).await;
    let r =
        a.h.send("fresh", json!("opened"), None, None)
            .await
            .unwrap();
    assert_eq!(r.peers, 1);
    assert_eq!(next_message(&mut b).await.1, json!("opened"));
    let _ = &mut a;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_without_peers_and_implicit_join() {
    let mut a = node(
        41,
        SidechannelConfig {
            welcome_required: false,
            ..SidechannelConfig::default()
        },
    )
    .await;
    let r =
        a.h.send("0000intercom", json!("alone"), None, None)
            .await
            .unwrap();
    assert_eq!(r.peers, 0);
    // A send on a channel we have not joined joins it (the reference registers it).
    let r = a.h.send("side", json!("x"), None, None).await.unwrap();
    assert_eq!(r.peers, 0);
    let s = a.h.stats().await.unwrap();
    assert!(s.sidechannel.channels.contains(&"side".to_owned()));
    wait_event(&mut a, "joined side", |e| {
        matches!(e, PeerEvent::Sidechannel { event: SidechannelEvent::Joined { channel, .. }, .. } if channel == "side")
    })
    .await;
    a.h.shutdown().await;
    assert_eq!(a.h.stats().await, Err(PeerError::Stopped));
}

/// 64 senders keep the runtime's command queue full while the channel's writer queue
/// holds only 8 frames: local sends wait for the network instead of being dropped, both
/// when they are signed in the runtime task and when a proof of work runs on a blocking
/// thread first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sends_is_paced_to_the_network_not_dropped() {
    burst_of_sends(false, 30).await;
    burst_of_sends(true, 4).await;
}

async fn burst_of_sends(proof_of_work: bool, each: usize) {
    const SENDERS: usize = 64;
    let sidechannel = SidechannelConfig {
        pow_enabled: proof_of_work,
        pow_difficulty: 2,
        rate_bytes_per_second: 0,
        ..SidechannelConfig::default()
    };
    let small_queue = PeerConfig {
        channel_send_queue: 8,
        sidechannel: sidechannel.clone(),
        ..PeerConfig::default()
    };
    let a = node_with(1, small_queue).await;
    let mut b = node(2, sidechannel).await;
    mesh(&[&a, &b]).await;
    wait_open(&a, 1).await;
    wait_open(&b, 1).await;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let h = a.h.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    let out = h
                        .send("0000intercom", json!(format!("{s}-{i}")), None, None)
                        .await
                        .unwrap();
                    assert_eq!(out.peers, 1);
                }
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < SENDERS * each {
        let (_, msg, _) = next_message(&mut b).await;
        assert!(seen.insert(msg.clone()), "delivered twice: {msg}");
    }
    for s in senders {
        s.await.unwrap();
    }
    let stats = a.h.stats().await.unwrap();
    assert_eq!(stats.send_queue_full, 0, "{stats:?}");
    a.h.shutdown().await;
    b.h.shutdown().await;
}
