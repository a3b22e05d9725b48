//! Unit tests of the record store: dispatch, announce rules, forwards and timed GC.

use std::net::Ipv4Addr;

use intercom_crypto::KeyPair;

use super::*;
use crate::crypto::{sign_announce, sign_mutable, sign_unannounce};
use crate::messages::{encode_seq, LookupReply, Peer};

const NODE: [u8; 32] = [0xee; 32];
const TOKEN: [u8; 32] = [0x70; 32];
const NOW: u64 = 1_700_000_000_000;

fn from(n: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, n), 1000 + u16::from(n))
}

fn kp(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

fn announce_value(kp: &KeyPair, target: &[u8; 32], relays: usize, bump: u64) -> Vec<u8> {
    let peer = Peer {
        public_key: kp.public_key,
        relay_addresses: (0..relays as u8).map(from).collect(),
    };
    let signature = sign_announce(target, &TOKEN, &NODE, &peer, None, kp);
    encode(&Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(signature),
        bump,
    })
}

fn req<'a>(target: &'a [u8; 32], value: Option<&'a [u8]>) -> Request<'a> {
    Request {
        target: Some(target),
        token: Some(&TOKEN),
        value,
        from: from(200),
    }
}

fn announce(store: &mut RecordStore, now: u64, kp: &KeyPair, target: &[u8; 32]) -> Response {
    let v = announce_value(kp, target, 0, 0);
    store.on_announce(now, &NODE, &req(target, Some(&v)))
}

fn lookup(store: &mut RecordStore, now: u64, target: &[u8; 32]) -> Option<LookupReply> {
    match store.on_lookup(now, &req(target, None)) {
        Response::Reply { value, .. } => value.map(|v| decode(&v).unwrap()),
        other => panic!("lookup: {other:?}"),
    }
}

fn store() -> RecordStore {
    RecordStore::new(StoreConfig {
        rng_seed: Some(3),
        ..StoreConfig::default()
    })
}

#[test]
fn config_defaults_match_index_js() {
    let c = StoreConfig::default();
    assert_eq!(c.records, CacheLimits::new(65536, 20 * 60 * 1000));
    assert_eq!(c.forwards, c.records);
    assert_eq!(c.mutables, CacheLimits::new(32768, 48 * 60 * 60 * 1000));
    let c = StoreConfig::from_options(Some(1001), Some(5000));
    assert_eq!(c.bumps, CacheLimits::new(1001, 5000));
    assert_eq!(c.immutables, CacheLimits::new(500, 5000));
}

#[test]
fn dispatch_routes_like_onrequest() {
    let mut s = store();
    let t = [1; 32];
    let r = req(&t, None);
    assert_eq!(
        s.dispatch(NOW, None, 0, &r),
        Dispatch::Router(Command::PeerHandshake)
    );
    assert_eq!(
        s.dispatch(NOW, Some(&NODE), 1, &r),
        Dispatch::Router(Command::PeerHolepunch)
    );
    assert_eq!(s.dispatch(NOW, None, 3, &r), Dispatch::Unhandled);
    assert_eq!(s.dispatch(NOW, Some(&NODE), 11, &r), Dispatch::Unhandled);
    assert_eq!(
        s.dispatch(NOW, Some(&NODE), 3, &r),
        Dispatch::Handled(Response::reply(None))
    );
    let plug = PluginRequest {
        plugin: "x".into(),
        version: 1,
        command: 2,
        value: None,
    };
    let v = encode(&plug);
    assert_eq!(
        s.dispatch(NOW, Some(&NODE), 10, &req(&t, Some(&v))),
        Dispatch::Plugin(plug)
    );
    assert!(matches!(
        s.dispatch(NOW, Some(&NODE), 10, &req(&t, None)),
        Dispatch::Handled(Response::Drop(DropReason::MissingValue))
    ));
}

#[test]
fn announce_lookup_unannounce() {
    let mut s = store();
    let t = crate::crypto::hash(b"topic");
    let a = kp(1);
    let v = announce_value(&a, &t, 5, 0);
    assert_eq!(
        s.on_announce(NOW, &NODE, &req(&t, Some(&v))),
        Response::ack()
    );
    let reply = lookup(&mut s, NOW, &t).unwrap();
    assert_eq!(reply.peers.len(), 1);
    assert_eq!(reply.peers[0].relay_addresses.len(), MAX_RELAY_ADDRESSES);

    // Wrong node id: the signature does not verify.
    assert_eq!(
        s.on_announce(NOW, &[0; 32], &req(&t, Some(&v))),
        Response::Drop(DropReason::BadSignature)
    );

    let peer = Peer {
        public_key: a.public_key,
        relay_addresses: vec![],
    };
    let sig = sign_unannounce(&t, &TOKEN, &NODE, &peer, None, &a);
    let unann = encode(&Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(sig),
        bump: 0,
    });
    assert_eq!(
        s.on_unannounce(NOW, &NODE, &req(&t, Some(&unann))),
        Response::ack()
    );
    assert_eq!(lookup(&mut s, NOW, &t), None);
    assert_eq!(s.sizes().records, 0);
}

#[test]
fn bumps_only_move_forward_within_drift() {
    let mut s = store();
    let t = [5; 32];
    let send = |s: &mut RecordStore, n: u8, bump: u64| {
        let v = announce_value(&kp(n), &t, 0, bump);
        assert_eq!(
            s.on_announce(NOW, &NODE, &req(&t, Some(&v))),
            Response::ack()
        );
    };
    send(&mut s, 1, NOW);
    assert_eq!(s.bump(&t), NOW);
    send(&mut s, 2, NOW - 1);
    assert_eq!(s.bump(&t), NOW);
    send(&mut s, 3, NOW + MAX_BUMP_DRIFT_MS + 1);
    assert_eq!(s.bump(&t), NOW);
    send(&mut s, 4, NOW + MAX_BUMP_DRIFT_MS);
    assert_eq!(s.bump(&t), NOW + MAX_BUMP_DRIFT_MS);
    assert_eq!(
        lookup(&mut s, NOW, &t).unwrap().bump,
        NOW + MAX_BUMP_DRIFT_MS
    );
}

#[test]
fn lookup_caps_records_and_appends_forward_only_with_room() {
    let mut s = store();
    let server = kp(1);
    let t = crate::crypto::hash(&server.public_key);
    assert_eq!(announce(&mut s, NOW, &server, &t), Response::ack());
    assert_eq!(lookup(&mut s, NOW, &t).unwrap().peers.len(), 1);
    for n in 0..19 {
        assert_eq!(announce(&mut s, NOW, &kp(100 + n), &t), Response::ack());
    }
    let r = lookup(&mut s, NOW, &t).unwrap();
    assert_eq!(r.peers.len(), 20);
    assert!(r.peers.iter().any(|p| p.public_key == server.public_key));
    assert_eq!(announce(&mut s, NOW, &kp(150), &t), Response::ack());
    for _ in 0..20 {
        let r = lookup(&mut s, NOW, &t).unwrap();
        assert_eq!(r.peers.len(), 20);
        assert!(r.peers.iter().all(|p| p.public_key != server.public_key));
    }
}

#[test]
fn local_forward_wins_over_remote_self_announce_until_unannounced() {
    let mut s = store();
    let server = kp(1);
    let t = crate::crypto::hash(&server.public_key);
    s.set_forward(
        t,
        Forward {
            relay: None,
            record: vec![1, 2, 3],
            local: true,
        },
    );
    assert_eq!(announce(&mut s, NOW, &server, &t), Response::ack());
    let f = s.forward(NOW, &t).unwrap();
    assert!(f.local);
    assert_eq!(f.record, [1, 2, 3]);
    // Local forwards never expire.
    s.gc(NOW + 10 * DEFAULT_MAX_AGE_MS);
    assert!(s.forward(NOW + 10 * DEFAULT_MAX_AGE_MS, &t).is_some());
    s.unannounce(&t, &server.public_key);
    assert_eq!(s.forward(NOW, &t), None);
    assert_eq!(announce(&mut s, NOW, &server, &t), Response::ack());
    let f = s.forward(NOW, &t).unwrap();
    assert_eq!(f.relay, Some(from(200)));
    assert!(!f.local);
}

#[test]
fn records_expire_after_two_ticks_without_refresh() {
    let mut s = store();
    let t = [9; 32];
    let tick = CacheLimits::new(1, DEFAULT_MAX_AGE_MS)
        .gc_interval_ms()
        .unwrap();
    assert_eq!(announce(&mut s, NOW, &kp(1), &t), Response::ack());
    assert_eq!(s.next_gc_at(), Some(NOW + tick));
    assert!(lookup(&mut s, NOW + tick, &t).is_some()); // now stale
    assert_eq!(announce(&mut s, NOW + tick, &kp(2), &t), Response::ack());
    let r = lookup(&mut s, NOW + 2 * tick, &t).unwrap(); // kp(1) dropped, kp(2) stale
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].public_key, kp(2).public_key);
    s.gc(NOW + 3 * tick);
    assert_eq!(lookup(&mut s, NOW + 3 * tick, &t), None);
    assert_eq!(s.sizes(), StoreSizes::default());
}

#[test]
fn values_live_two_days() {
    let mut s = store();
    let a = kp(1);
    let t = crate::crypto::hash(&a.public_key);
    let sig = sign_mutable(1, b"v", &a);
    let put = encode(&MutablePutRequest {
        public_key: a.public_key,
        seq: 1,
        value: b"v".to_vec(),
        signature: sig,
    });
    assert_eq!(
        s.on_mutable_put(NOW, &req(&t, Some(&put))),
        Response::reply(None)
    );
    let it = crate::crypto::hash(b"imm");
    assert_eq!(
        s.on_immutable_put(NOW, &req(&it, Some(b"imm"))),
        Response::reply(None)
    );
    let get = encode_seq(0);
    let later = NOW + DEFAULT_MAX_AGE_MS * 3;
    assert!(matches!(
        s.on_mutable_get(later, &req(&t, Some(&get))),
        Response::Reply { value: Some(_), .. }
    ));
    assert_eq!(
        s.on_immutable_get(later, &req(&it, None)),
        Response::reply(Some(b"imm".to_vec()))
    );
    let much_later = NOW + 2 * DEFAULT_VALUE_MAX_AGE_MS;
    s.gc(much_later);
    assert_eq!(s.mutable(&t), None);
    assert_eq!(s.immutable(&it), None);
}

#[test]
fn refresh_chain_restores_record() {
    let mut s = store();
    let t = [4; 32];
    let a = kp(1);
    let y = [0x55; 32];
    let x = crate::crypto::hash(&y);
    let peer = Peer {
        public_key: a.public_key,
        relay_addresses: vec![],
    };
    let sig = sign_announce(&t, &TOKEN, &NODE, &peer, Some(&x), &a);
    let v = encode(&Announce {
        peer: Some(peer),
        refresh: Some(x),
        signature: Some(sig),
        bump: 0,
    });
    assert_eq!(
        s.on_announce(NOW, &NODE, &req(&t, Some(&v))),
        Response::ack()
    );
    s.unannounce(&t, &a.public_key);
    assert_eq!(lookup(&mut s, NOW, &t), None);
    let refresh = encode(&Announce {
        refresh: Some(y),
        ..Announce::default()
    });
    assert_eq!(
        s.on_announce(NOW, &NODE, &req(&t, Some(&refresh))),
        Response::ack()
    );
    assert_eq!(lookup(&mut s, NOW, &t).unwrap().peers.len(), 1);
    assert_eq!(
        s.on_announce(NOW, &NODE, &req(&t, Some(&refresh))),
        Response::Drop(DropReason::UnknownRefresh)
    );
}

#[test]
fn handlers_never_panic_on_garbage() {
    let mut s = store();
    let t = [1; 32];
    for len in 0..64u8 {
        let data: Vec<u8> = (0..len)
            .map(|i| i.wrapping_mul(37).wrapping_add(len))
            .collect();
        for command in 0..12 {
            let r = Request {
                target: Some(&t),
                token: Some(&TOKEN),
                value: Some(&data),
                from: from(1),
            };
            s.dispatch(NOW, Some(&NODE), command, &r);
            let r = Request {
                target: None,
                token: None,
                value: None,
                from: from(1),
            };
            s.dispatch(NOW, Some(&NODE), command, &r);
        }
    }
}
