//! Replays against the freshness window and the dedupe, through a relay: A -> R -> B on the
//! in-memory network of `sim`, with explicit virtual time.
//!
//! The JS reference remembers the 5,000 most recent ids for 120 s and checks no timestamp,
//! so a burst of 5,000 other messages, or simply waiting, makes an earlier signed message
//! deliverable again. Here an id stays remembered until its `ts` leaves the window, and a
//! copy older than the window is dropped as `stale`.

mod sim;

use intercom_sidechannel::payload::{self, PrepareParams};
use intercom_sidechannel::{DropReason, Payload, SidechannelConfig};
use serde_json::json;
use sim::Net;

const ENTRY: &str = "0000intercom";
const WINDOW: u64 = 120_000;

/// Cheap proof of work; rate limiting off, the worst case for the dedupe: nothing else
/// throttles a burst.
fn cfg() -> SidechannelConfig {
    SidechannelConfig {
        pow_difficulty: 4,
        rate_bytes_per_second: 0,
        ..SidechannelConfig::default()
    }
}

/// A, R, B connected in a line on the entry channel.
fn line(c: SidechannelConfig) -> (Net, usize, usize, usize) {
    let mut net = Net::new();
    let a = net.add(1, c.clone());
    let r = net.add(2, c.clone());
    let b = net.add(3, c);
    net.line(&[a, r, b]);
    (net, a, r, b)
}

/// A's message `text` stamped now, as A would send it.
fn from_a(net: &Net, a: usize, text: &str) -> Payload {
    payload::prepare(
        &net.keys[a],
        PrepareParams {
            channel: ENTRY.into(),
            message: json!(text),
            ts: net.now,
            ttl: 3,
            invite: None,
            pow_difficulty: Some(4),
            id_suffix: "replayed".into(),
        },
    )
}

/// How many times `i` was handed a payload with the id of `p`.
fn deliveries(net: &Net, i: usize, p: &Payload) -> usize {
    net.delivered(i, ENTRY)
        .iter()
        .filter(|d| d.id() == p.id())
        .count()
}

/// A's burst of `n` distinct messages, one every `step_ms`, relayed by R to B.
fn burst(net: &mut Net, a: usize, n: usize, step_ms: u64) {
    for i in 0..n {
        net.now += step_ms;
        let now = net.now;
        net.peers[a]
            .broadcast(now, ENTRY, json!(format!("burst {i}")), None)
            .expect("broadcast");
        net.pump();
        if i % 1_000 == 999 {
            // Keep the recorded events small; the counters stay in the planes' stats.
            net.clear_events();
        }
    }
}

#[test]
fn a_20000_message_burst_through_a_relay_never_lets_an_id_in_the_window_through_twice() {
    let (mut net, a, r, b) = line(cfg());
    let m = from_a(&net, a, "pay 10");
    let sent_at = net.now;
    net.inject(a, r, ENTRY, &m.encode());
    assert_eq!(deliveries(&net, r, &m), 1);
    assert_eq!(deliveries(&net, b, &m), 1, "relayed by R");
    net.clear_events();

    // 20,000 other messages over 80 s, four times the reference's whole cache.
    burst(&mut net, a, 20_000, 4);
    assert!(net.now - sent_at < WINDOW);
    let (rs, bs) = (net.peers[r].stats(), net.peers[b].stats());
    assert_eq!(bs.delivered, 20_001, "every burst message reached B once");
    assert_eq!((rs.seen_refused, bs.seen_refused), (0, 0));
    assert!(bs.seen > 20_000, "{} ids held", bs.seen);
    println!(
        "B holds {} ids in {} heap bytes ({:.1} per id)",
        bs.seen,
        bs.seen_bytes,
        bs.seen_bytes as f64 / bs.seen as f64
    );
    net.clear_events();

    // Replays 100 s after the original, inside the window: at the relay (as A or anyone on
    // R's side could), and straight at B as a relay whose cache the burst flushed (a JS
    // peer's) would forward it again.
    net.now = sent_at + 100_000;
    net.inject(a, r, ENTRY, &m.encode());
    let forwarded = m.relayed(2.0, &net.key(r));
    net.inject(r, b, ENTRY, &forwarded.encode());
    assert_eq!(deliveries(&net, r, &m), 0);
    assert_eq!(deliveries(&net, b, &m), 0);
    assert_eq!(net.drops(r), [DropReason::Duplicate]);
    assert_eq!(
        net.drops(b),
        [DropReason::Duplicate],
        "R did not relay the replay; B refused the forwarded copy"
    );
}

#[test]
fn a_replay_older_than_the_window_is_dropped_as_stale_with_its_age() {
    let (mut net, a, r, b) = line(cfg());
    let m = from_a(&net, a, "pay 10");
    net.inject(a, r, ENTRY, &m.encode());
    assert_eq!(deliveries(&net, b, &m), 1);
    net.clear_events();

    // Long enough for every dedupe bucket holding it to be gone.
    net.now += WINDOW + 30_000;
    net.inject(a, r, ENTRY, &m.encode());
    let forwarded = m.relayed(2.0, &net.key(r));
    net.inject(r, b, ENTRY, &forwarded.encode());
    let stale = DropReason::Stale {
        age_ms: WINDOW + 30_000,
        max_ms: WINDOW,
    };
    assert_eq!(net.drops(r), std::slice::from_ref(&stale));
    assert_eq!(net.drops(b), [stale]);
    assert_eq!(deliveries(&net, r, &m) + deliveries(&net, b, &m), 0);
    for peer in [r, b] {
        assert_eq!(
            net.peers[peer].stats().dropped_by_reason.get("stale"),
            Some(&1)
        );
    }

    // One a sender stamped too far ahead (a clock 31 s fast) is refused as well.
    let mut ahead = from_a(&net, a, "from the future");
    ahead
        .as_map_mut()
        .insert("ts".into(), json!(net.now + 31_000));
    payload::sign(&mut ahead, &net.keys[a]);
    payload::stamp_pow(&mut ahead, 4);
    net.clear_events();
    net.inject(a, r, ENTRY, &ahead.encode());
    assert_eq!(net.drop_codes(r), ["from_future"]);
}

#[test]
fn a_full_dedupe_drops_new_messages_and_still_refuses_the_replay() {
    // The reference's 5,000 ids as a hard cap: the burst overflows it.
    let mut c = cfg();
    c.max_seen = 5_000;
    let (mut net, a, r, b) = line(c);
    let m = from_a(&net, a, "pay 10");
    net.inject(a, r, ENTRY, &m.encode());
    assert_eq!(deliveries(&net, b, &m), 1);

    burst(&mut net, a, 6_000, 4);
    let (rs, bs) = (net.peers[r].stats(), net.peers[b].stats());
    // R holds 4,999 of the burst with M; the other 1,001 are dropped and not relayed.
    assert_eq!(rs.seen_refused, 1_001);
    assert_eq!(rs.dropped_by_reason.get("dedupe_full"), Some(&1_001));
    assert_eq!(bs.delivered, 5_000);
    net.clear_events();

    net.now += 10_000;
    let forwarded = m.relayed(2.0, &net.key(r));
    net.inject(r, b, ENTRY, &forwarded.encode());
    assert_eq!(deliveries(&net, b, &m), 0);
    assert_eq!(net.drops(b), [DropReason::Duplicate]);

    // Once the window has passed for the ids, the cache has room again.
    net.now += WINDOW + WINDOW / 8;
    net.peers[a]
        .broadcast(net.now, ENTRY, json!("after"), None)
        .unwrap();
    net.pump();
    assert_eq!(net.texts(b, ENTRY), [json!("after")]);
}
