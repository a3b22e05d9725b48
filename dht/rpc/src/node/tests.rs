//! Single-node tests: exact bytes of answers, token handling, retries, congestion,
//! DOWN_HINTs, wake-up and random input.

use super::*;

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

const PEER: &str = "10.0.0.9:7000";

fn node(cfg: Config) -> DhtNode {
    let mut n = DhtNode::new(
        Config {
            seed: Some([9; 32]),
            ..cfg
        },
        5000,
        0,
    );
    drain(&mut n);
    n
}

fn drain(n: &mut DhtNode) -> (Vec<Transmit>, Vec<DhtEvent>) {
    let mut t = Vec::new();
    while let Some(x) = n.poll_transmit() {
        t.push(x);
    }
    let mut e = Vec::new();
    while let Some(x) = n.poll_event() {
        e.push(x);
    }
    (t, e)
}

fn req(tid: u16, internal: bool, command: u64) -> Request {
    Request {
        tid,
        to: a("10.0.0.2:5000"),
        id: None,
        token: None,
        internal,
        command,
        target: None,
        value: None,
    }
}

fn feed(
    n: &mut DhtNode,
    now: u64,
    socket: SocketKind,
    from: &str,
    m: &Request,
) -> (Vec<Transmit>, Vec<DhtEvent>) {
    n.handle_datagram(now, socket, a(from), &m.encode());
    drain(n)
}

fn only_response(t: &[Transmit]) -> Response {
    assert_eq!(t.len(), 1, "{t:?}");
    Response::decode(&t[0].bytes).unwrap()
}

#[test]
fn bootstraps_alone_and_answers_ping_byte_exact() {
    let mut n = DhtNode::new(
        Config {
            seed: Some([1; 32]),
            ..Config::default()
        },
        5000,
        0,
    );
    let (_, ev) = drain(&mut n);
    assert!(ev.contains(&DhtEvent::Bootstrapped));
    assert!(n.is_ephemeral() && n.is_firewalled() && n.id().is_none());

    let (t, ev) = feed(
        &mut n,
        1,
        SocketKind::Client,
        PEER,
        &req(0x0102, true, PING),
    );
    assert!(ev.is_empty());
    assert_eq!(t[0].socket, SocketKind::Client);
    assert_eq!(t[0].to, a(PEER));
    // 0x13, no flags, tid 0x0102 LE, to = 10.0.0.9:7000 (0x1b58 LE)
    assert_eq!(hex::encode(&t[0].bytes), "130002010a000009581b");
}

#[test]
fn ping_nat_answers_on_the_asked_port() {
    let mut n = node(Config::default());
    let mut m = req(5, true, PING_NAT);
    m.value = Some(12345u16.to_le_bytes().to_vec());
    let (t, _) = feed(&mut n, 1, SocketKind::Server, PEER, &m);
    assert_eq!(t[0].to, a("10.0.0.9:12345"));
    assert_eq!(t[0].socket, SocketKind::Server);
    assert_eq!(only_response(&t).to, a("10.0.0.9:12345"));
    // Port 0 or a short value: no answer.
    m.value = Some(vec![0, 0]);
    assert!(feed(&mut n, 1, SocketKind::Server, PEER, &m).0.is_empty());
    m.value = Some(vec![1]);
    assert!(feed(&mut n, 1, SocketKind::Server, PEER, &m).0.is_empty());
}

#[test]
fn find_node_and_unknown_commands_carry_closer_nodes() {
    let mut n = node(Config::default());
    for i in 1..=30u8 {
        n.add_node(SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, i), 1000));
    }
    let target = [0x77; 32];
    let expected: Vec<SocketAddrV4> = n
        .closest_nodes(&target, 20)
        .iter()
        .map(|p| p.addr)
        .collect();
    assert_eq!(expected.len(), 20);

    let mut m = req(9, true, FIND_NODE);
    m.target = Some(target);
    let (t, _) = feed(&mut n, 1, SocketKind::Client, PEER, &m);
    let res = only_response(&t);
    assert_eq!(res.closer_nodes, expected);
    assert_eq!((res.error, res.token, res.id), (0, None, None));
    assert_eq!(t[0].bytes[1], 4, "flags: closer nodes only");

    // FIND_NODE without a target is ignored.
    assert!(feed(
        &mut n,
        1,
        SocketKind::Client,
        PEER,
        &req(9, true, FIND_NODE)
    )
    .0
    .is_empty());

    // Unknown internal command: UNKNOWN_COMMAND, closer nodes because there is a target.
    let mut m = req(10, true, 99);
    m.target = Some(target);
    let res = only_response(&feed(&mut n, 1, SocketKind::Client, PEER, &m).0);
    assert_eq!(res.error, UNKNOWN_COMMAND);
    assert_eq!(res.closer_nodes, expected);
    let res = only_response(&feed(&mut n, 1, SocketKind::Client, PEER, &req(11, true, 99)).0);
    assert_eq!(res.error, UNKNOWN_COMMAND);
    assert!(res.closer_nodes.is_empty());
}

#[test]
fn tokens_round_trip_and_rotate() {
    let mut n = node(Config::default());
    let mut m = req(1, false, 77);
    m.target = Some([1; 32]);
    m.value = Some(b"q".to_vec());
    let (t, ev) = feed(&mut n, 1, SocketKind::Client, PEER, &m);
    assert!(t.is_empty());
    let [DhtEvent::Request(incoming)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(incoming.command, 77);
    assert_eq!(incoming.value.as_deref(), Some(&b"q"[..]));
    n.reply(incoming, Some(b"v".to_vec()), ReplyOptions::default());
    let (t, _) = drain(&mut n);
    let res = only_response(&t);
    assert_eq!(res.value.as_deref(), Some(&b"v"[..]));
    let token = res.token.expect("reply carries a token");
    assert_eq!(
        t[0].bytes[1],
        2 | 16,
        "token + value; empty table -> no closer nodes"
    );

    // The token is bound to the host: another host may not use it.
    let mut with_token = req(2, false, 78);
    with_token.token = Some(token);
    let (t, _) = feed(&mut n, 2, SocketKind::Client, "10.0.0.10:7000", &with_token);
    let res = only_response(&t);
    assert_eq!(res.error, INVALID_TOKEN);
    assert!(
        res.token.is_some(),
        "INVALID_TOKEN answers carry a fresh token"
    );

    // Valid for the same host (any port), across one rotation but not two.
    let (t, ev) = feed(&mut n, 3, SocketKind::Client, "10.0.0.9:7001", &with_token);
    assert!(t.is_empty() && matches!(ev[0], DhtEvent::Request(_)));
    let mut now = 3;
    for _ in 0..10 {
        now += DRAIN_INTERVAL;
        n.handle_timeout(now);
    }
    drain(&mut n);
    let (_, ev) = feed(&mut n, now, SocketKind::Client, PEER, &with_token);
    assert!(
        matches!(ev.as_slice(), [DhtEvent::Request(_)]),
        "still valid after one rotation"
    );
    for _ in 0..10 {
        now += DRAIN_INTERVAL;
        n.handle_timeout(now);
    }
    drain(&mut n);
    let (t, ev) = feed(&mut n, now, SocketKind::Client, PEER, &with_token);
    assert!(ev.is_empty());
    assert_eq!(only_response(&t).error, INVALID_TOKEN);
}

#[test]
fn requests_retry_then_time_out() {
    let mut n = node(Config::default());
    let id = n.ping(0, a(PEER));
    let (t, _) = drain(&mut n);
    assert_eq!(t.len(), 1);
    let sent = Request::decode(&t[0].bytes).unwrap();
    let tid = sent.tid.to_le_bytes();
    assert_eq!(
        t[0].bytes,
        [&[0x03, 0x04][..], &tid, &[10, 0, 0, 9, 0x58, 0x1b, 0]].concat(),
        "internal PING from an ephemeral node: no id"
    );
    assert_eq!(t[0].socket, SocketKind::Client);
    let mut sends = 1;
    let mut done = None;
    for now in (100..=4000).step_by(100) {
        n.handle_timeout(now);
        let (t, ev) = drain(&mut n);
        sends += t.iter().filter(|x| x.to == a(PEER)).count();
        for e in ev {
            if let DhtEvent::RequestDone { request, result } = e {
                assert_eq!(request, id);
                done = Some((now, result));
            }
        }
    }
    assert_eq!(sends, 4, "one send plus three retries");
    assert_eq!(done, Some((4000, Err(RequestError::Timeout))));
    assert_eq!(n.stats().timeouts, 1);
    assert_eq!(n.inflight_len(), 0);
}

#[test]
fn responses_match_tids_and_ids_are_validated() {
    let mut n = node(Config::default());
    let peer = a(PEER);
    let id = n.ping(0, peer);
    let (t, _) = drain(&mut n);
    let tid = Request::decode(&t[0].bytes).unwrap().tid;
    let res = Response {
        tid,
        to: a("1.2.3.4:5678"),
        id: Some(node_id(&peer)),
        token: None,
        closer_nodes: vec![],
        error: 0,
        value: None,
    };
    // A response with an unknown tid is ignored.
    let mut stray = res.clone();
    stray.tid = tid.wrapping_add(1);
    n.handle_datagram(10, SocketKind::Client, peer, &stray.encode());
    assert!(drain(&mut n).1.is_empty());

    n.handle_datagram(25, SocketKind::Client, peer, &res.encode());
    let (_, ev) = drain(&mut n);
    assert!(ev.contains(&DhtEvent::NodeAdded(Peer {
        addr: peer,
        id: Some(node_id(&peer))
    })));
    let reply = ev
        .iter()
        .find_map(|e| match e {
            DhtEvent::RequestDone {
                request,
                result: Ok(r),
            } if *request == id => Some(r.clone()),
            _ => None,
        })
        .expect("request done");
    assert_eq!(reply.rtt_ms, 25);
    assert_eq!(reply.to, a("1.2.3.4:5678"));
    assert_eq!(reply.from.id, Some(node_id(&peer)));
    assert_eq!(
        n.host(),
        Some(Ipv4Addr::new(1, 2, 3, 4)),
        "the reply's `to` was sampled"
    );

    // An id that is not the sender's hash is dropped.
    let other = a("10.0.0.11:7000");
    n.ping(30, other);
    let (t, _) = drain(&mut n);
    let tid = Request::decode(&t[0].bytes).unwrap().tid;
    let forged = Response {
        tid,
        id: Some(node_id(&peer)),
        ..res
    };
    n.handle_datagram(40, SocketKind::Client, other, &forged.encode());
    let (_, ev) = drain(&mut n);
    assert!(!ev.iter().any(|e| matches!(e, DhtEvent::NodeAdded(_))));
    assert!(ev
        .iter()
        .any(|e| matches!(e, DhtEvent::RequestDone { result: Ok(r), .. } if r.from.id.is_none())));
}

#[test]
fn congestion_window_queues_and_drains() {
    let mut n = node(Config {
        max_window: 2,
        ..Config::default()
    });
    for i in 0..5u8 {
        n.ping(0, SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, i + 1), 1000));
    }
    assert_eq!(drain(&mut n).0.len(), 2);
    n.handle_timeout(DRAIN_INTERVAL);
    assert_eq!(drain(&mut n).0.len(), 2, "the next slot allows two more");
    // Four sends in the last four slots: full until the first slot is forgotten. The
    // retries of the first two (due at 1000 ms) queue behind the fifth request.
    n.handle_timeout(2 * DRAIN_INTERVAL);
    assert!(drain(&mut n).0.is_empty());
    n.handle_timeout(3 * DRAIN_INTERVAL);
    assert!(drain(&mut n).0.is_empty());
    n.handle_timeout(4 * DRAIN_INTERVAL);
    let (t, _) = drain(&mut n);
    assert_eq!(t.len(), 2);
    assert_eq!(
        t[0].to,
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 5), 1000),
        "FIFO order"
    );
}

#[test]
fn persistent_nodes_announce_their_id_from_the_server_socket() {
    let host = Ipv4Addr::new(10, 0, 0, 1);
    let mut n = DhtNode::new(
        Config {
            seed: Some([3; 32]),
            ..Config::bootstrapper(49737, host)
        },
        49737,
        0,
    );
    let (_, ev) = drain(&mut n);
    assert!(ev.contains(&DhtEvent::Persistent));
    assert!(ev.contains(&DhtEvent::Bootstrapped));
    let me = SocketAddrV4::new(host, 49737);
    assert_eq!(n.id(), Some(node_id(&me)));
    assert_eq!(n.remote_address(), Some(me));
    assert!(!n.is_firewalled());

    n.ping(0, a(PEER));
    let (t, _) = drain(&mut n);
    assert_eq!(t[0].socket, SocketKind::Server);
    let sent = Request::decode(&t[0].bytes).unwrap();
    assert_eq!(sent.id, Some(node_id(&me)));
    assert_eq!(t[0].bytes[1], 1 | 4, "id + internal");

    // Answers from the server socket carry the id, from the client socket they do not.
    let (t, _) = feed(&mut n, 1, SocketKind::Server, PEER, &req(1, true, PING));
    assert_eq!(only_response(&t).id, Some(node_id(&me)));
    let (t, _) = feed(&mut n, 1, SocketKind::Client, PEER, &req(1, true, PING));
    assert_eq!(only_response(&t).id, None);
}

#[test]
fn requests_with_valid_ids_add_nodes() {
    let mut n = node(Config::default());
    let peer = a(PEER);
    let mut m = req(1, true, PING);
    m.id = Some(node_id(&peer));
    let (_, ev) = feed(&mut n, 1, SocketKind::Client, PEER, &m);
    assert!(ev
        .iter()
        .any(|e| matches!(e, DhtEvent::NodeAdded(p) if p.addr == peer)));
    assert_eq!(n.nodes(None), vec![peer]);
    m.id = Some([0; 32]);
    let (_, ev) = feed(&mut n, 1, SocketKind::Client, "10.0.0.10:7000", &m);
    assert!(ev.is_empty());
    assert_eq!(n.table_len(), 1);
}

#[test]
fn down_hint_pings_the_suspect() {
    let mut n = node(Config::default());
    let suspect = a("10.5.5.5:1234");
    n.add_node(suspect);
    drain(&mut n);
    let mut m = req(3, true, DOWN_HINT);
    m.value = Some(messages::encode_ipv4(&suspect).to_vec());
    let (t, _) = feed(&mut n, 1, SocketKind::Client, PEER, &m);
    assert_eq!(t.len(), 2, "a PING to the suspect and the answer");
    let ping = t.iter().find(|x| x.to == suspect).expect("ping to suspect");
    let p = Request::decode(&ping.bytes).unwrap();
    assert_eq!((p.internal, p.command), (true, PING));
    assert!(t.iter().any(|x| x.to == a(PEER)));
    // The suspect never answers: it is removed.
    for now in (100..=5000).step_by(100) {
        n.handle_timeout(now);
    }
    let (_, ev) = drain(&mut n);
    assert!(ev
        .iter()
        .any(|e| matches!(e, DhtEvent::NodeRemoved(p) if p.addr == suspect)));
    assert_eq!(n.table_len(), 0);
}

#[test]
fn delayed_ping_answers_later() {
    let mut n = node(Config::default());
    let mut m = req(4, true, DELAYED_PING);
    m.value = Some(500u32.to_le_bytes().to_vec());
    assert!(feed(&mut n, 100, SocketKind::Client, PEER, &m).0.is_empty());
    n.handle_timeout(599);
    assert!(drain(&mut n).0.is_empty());
    n.handle_timeout(600);
    let (t, _) = drain(&mut n);
    assert_eq!(only_response(&t).tid, 4);
    // Too long a delay is ignored.
    m.value = Some(20_000u32.to_le_bytes().to_vec());
    assert!(feed(&mut n, 700, SocketKind::Client, PEER, &m).0.is_empty());
    n.handle_timeout(30_000);
    let (t, _) = drain(&mut n);
    assert!(!t.iter().any(|x| x.to == a(PEER)));
}

#[test]
fn query_timeouts_send_down_hints() {
    let b = a("10.0.0.20:49737");
    let c = a("10.0.0.21:49737");
    let mut n = DhtNode::new(
        Config {
            seed: Some([4; 32]),
            bootstrap: vec![b],
            ..Config::default()
        },
        5000,
        0,
    );
    let (t, _) = drain(&mut n);
    let visit = t.iter().find(|x| x.to == b).expect("bootstrap visit");
    let q = Request::decode(&visit.bytes).unwrap();
    assert_eq!(
        (q.internal, q.command, q.target),
        (true, FIND_NODE, Some(n.table_id()))
    );
    let res = Response {
        tid: q.tid,
        to: a("10.0.0.2:5000"),
        id: Some(node_id(&b)),
        token: None,
        closer_nodes: vec![c],
        error: 0,
        value: None,
    };
    n.handle_datagram(10, SocketKind::Client, b, &res.encode());
    let (t, _) = drain(&mut n);
    assert!(t.iter().any(|x| x.to == c), "visits the gossiped node");
    let mut hint = None;
    for now in (100..=8000).step_by(100) {
        n.handle_timeout(now);
        let (t, _) = drain(&mut n);
        for x in t {
            if let Ok(r) = Request::decode(&x.bytes) {
                if r.command == DOWN_HINT && x.to == b {
                    hint = Some(r);
                }
            }
        }
    }
    let hint = hint.expect("DOWN_HINT sent to the node that gossiped the dead one");
    assert_eq!(hint.value, Some(messages::encode_ipv4(&c).to_vec()));
    assert!(n.is_bootstrapped());
}

#[test]
fn wakeup_after_a_long_pause() {
    let mut n = node(Config::default());
    n.handle_timeout(TICK_INTERVAL);
    assert!(!drain(&mut n).1.contains(&DhtEvent::Wakeup));
    n.handle_timeout(TICK_INTERVAL * 10);
    assert!(drain(&mut n).1.contains(&DhtEvent::Wakeup));
    assert_eq!(n.tick & 7, 6, "pings of the oldest nodes two ticks later");
    // Any tick phase is fine (JS steps back one tick when tick & 7 == 7).
    for phase in 0..8 {
        n.tick = 1000 + phase;
        n.last_tick_at = 0;
        n.next_tick_at = 0;
        n.handle_timeout(TICK_INTERVAL * 100 + phase);
        assert_eq!(n.tick & 7, 6);
    }
}

#[test]
fn destroy_fails_everything() {
    let mut n = node(Config::default());
    n.add_node(a("10.7.0.1:1000"));
    let r = n.ping(0, a(PEER));
    let q = n.find_node(0, [1; 32]);
    drain(&mut n);
    n.destroy();
    let (t, ev) = drain(&mut n);
    assert!(t.is_empty());
    assert!(ev.contains(&DhtEvent::RequestDone {
        request: r,
        result: Err(RequestError::Destroyed)
    }));
    assert!(ev.contains(&DhtEvent::QueryDone {
        query: q,
        result: Err(QueryError::Destroyed)
    }));
    assert_eq!(n.poll_timeout(), None);
    n.handle_datagram(1, SocketKind::Client, a(PEER), &req(1, true, PING).encode());
    assert!(drain(&mut n).0.is_empty());
}

#[test]
fn random_datagrams_never_panic() {
    let mut n = node(Config::default());
    for i in 1..=40u8 {
        n.add_node(SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, i), 1000));
    }
    let mut rng = Rng::from_seed([7; 32]);
    let mut now = 0;
    for i in 0..30_000u32 {
        let from = SocketAddrV4::new(
            Ipv4Addr::new(10, 3, 0, (rng.below(4) + 1) as u8),
            rng.below(3) as u16,
        );
        let socket = if rng.below(2) == 0 {
            SocketKind::Client
        } else {
            SocketKind::Server
        };
        let bytes = if i % 2 == 0 {
            // Structured: a valid message with random fields.
            let m = Request {
                tid: rng.below(65536) as u16,
                to: a("10.0.0.2:5000"),
                id: (rng.below(3) == 0).then(|| node_id(&from)),
                token: (rng.below(4) == 0).then(|| rng.bytes32()),
                internal: rng.below(4) != 0,
                command: rng.below(8),
                target: (rng.below(2) == 0).then(|| rng.bytes32()),
                value: (rng.below(2) == 0).then(|| {
                    let mut v = vec![0u8; rng.below(10) as usize];
                    rng.fill(&mut v);
                    v
                }),
            };
            if rng.below(2) == 0 {
                m.encode()
            } else {
                Response {
                    tid: m.tid,
                    to: m.to,
                    id: m.id,
                    token: m.token,
                    closer_nodes: (0..rng.below(30))
                        .map(|j| SocketAddrV4::new(Ipv4Addr::new(10, 4, 0, j as u8), 1))
                        .collect(),
                    error: rng.below(3),
                    value: m.value,
                }
                .encode()
            }
        } else {
            let mut v = vec![0u8; rng.below(80) as usize];
            rng.fill(&mut v);
            if let Some(b) = v.first_mut() {
                *b = if rng.below(2) == 0 { 0x03 } else { 0x13 };
            }
            v
        };
        n.handle_datagram(now, socket, from, &bytes);
        if i % 100 == 0 {
            now += 137;
            n.handle_timeout(now);
            n.ping(now, from);
        }
        drain(&mut n);
    }
    assert!(n.inflight_len() <= DEFAULT_MAX_INFLIGHT);
}
