//! The sidechannel policies end to end: `intercom run` processes on a loopback DHT
//! (`intercom dht-node`), driven and observed through their SC-Bridges. Hostile traffic
//! that `intercom run` cannot produce (spoofed authors, invalid proofs of work, uninvited
//! readers) comes from the JS peer of `tests/node/sidechannel-peer.js`.
//!
//! Drops are observed through the bridge's `sidechannel_drop` event
//! (`{type, channel, reason, from, detail, ts}`, published by `intercom-peer`'s
//! `BridgeSink` for every drop but duplicates and our own echoes; the reference drops
//! silently and has no such event, JS agents ignore it), and deliveries through
//! `sidechannel_message`.
//!
//! Identities are written into the stores before start, so the tests know every key and
//! sign welcomes and invites themselves.

mod sidechannel_support;
use sidechannel_support as support;

use std::time::{Duration, Instant};

use intercom_sidechannel::{create_invite, create_welcome};
use serde_json::{json, Value};
use support::{
    is_drop, is_message, key_hex, keypair, welcome_flag, DhtNode, JsPeer, Peer, CONNECT, STEP,
};

const ENTRY: &str = "0000intercom";
const SCENARIO: Duration = Duration::from_secs(420);

async fn bounded(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(SCENARIO, f)
        .await
        .expect("scenario finished in time");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn text_of(e: &Value) -> &str {
    e["message"].as_str().unwrap_or_default()
}

/// Messages on `channel` that were delivered among `events`.
fn delivered<'a>(events: &'a [Value], channel: &'a str) -> Vec<&'a Value> {
    events.iter().filter(|e| is_message(e, channel)).collect()
}

/// Welcome-required channel: C knows the owner of `room` but holds no welcome. It drops
/// B's room messages (`awaiting_welcome`) until the owner O comes online and its welcome
/// arrives over the channel; then B's messages are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwelcomed_messages_dropped_until_welcome() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let dht = DhtNode::start(dir.path());
        let o = key_hex(1);
        let welcome = create_welcome(&keypair(1), "room", "welcome to room", now_ms());
        let owner = format!("room:{o}");
        let wflag = welcome_flag("room", &welcome);
        let b = Peer::start(
            dir.path(),
            "b",
            2,
            &dht.addr,
            &[
                "--sidechannels",
                "room",
                "--sidechannel-owner",
                &owner,
                "--sidechannel-welcome",
                &wflag,
            ],
        );
        let c = Peer::start(
            dir.path(),
            "c",
            3,
            &dht.addr,
            &["--sidechannels", "room", "--sidechannel-owner", &owner],
        );
        let (mut wb, mut wc) = (b.ws().await, c.ws().await);
        wb.rendezvous(&mut wc).await;

        // B reaches C on room; C drops it: not welcomed yet.
        wb.send_until_peers("room", 1, |n| json!(format!("early {n}")))
            .await;
        let (d, before) = wc
            .wait_event("awaiting_welcome drop", STEP, |e| {
                is_drop(e, "room", "awaiting_welcome")
            })
            .await;
        assert_eq!(d["from"], b.pubkey.as_str());
        assert!(delivered(&before, "room").is_empty(), "{before:?}");

        // The owner comes online; its welcome reaches C when their room channel opens.
        let _o = Peer::start(
            dir.path(),
            "o",
            1,
            &dht.addr,
            &[
                "--sidechannels",
                "room",
                "--sidechannel-owner",
                &owner,
                "--sidechannel-welcome",
                &wflag,
            ],
        );
        let (w, before) = wc
            .wait_event("the owner's welcome", CONNECT, |e| {
                e["type"] == "sidechannel_message"
                    && e["channel"] == "room"
                    && e["message"]["control"] == "welcome"
            })
            .await;
        assert_eq!(w["from"], o.as_str());
        assert_eq!(w["message"]["welcome"], welcome);
        assert!(
            delivered(&before, "room").is_empty(),
            "nothing delivered before the welcome: {before:?}"
        );

        let r = wb.send("room", json!("after the welcome")).await;
        assert!(r["peers"].as_u64().unwrap() >= 1, "{r}");
        let (m, _) = wc
            .wait_event("B's message after the welcome", STEP, |e| {
                is_message(e, "room") && text_of(e) == "after the welcome"
            })
            .await;
        assert_eq!(m["from"], b.pubkey.as_str());
    })
    .await;
}

/// Owner-only channel `news`: R delivers the owner's messages and drops a non-owner's,
/// and one whose `from` is spoofed to the owner's key (signed by the JS peer), both with
/// `owner_only`; R's own send is refused at the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_only_drops_non_owner_and_spoofed_messages() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let dht = DhtNode::start(dir.path());
        let o = key_hex(1);
        let welcome = create_welcome(&keypair(1), "news", "owner speaks", now_ms());
        let owner = format!("news:{o}");
        let wflag = welcome_flag("news", &welcome);
        let flags = [
            "--sidechannels",
            "news",
            "--sidechannel-owner",
            &owner,
            "--sidechannel-welcome",
            &wflag,
            "--sidechannel-owner-write-channels",
            "news",
        ];
        let op = Peer::start(dir.path(), "o", 1, &dht.addr, &flags);
        let r = Peer::start(dir.path(), "r", 2, &dht.addr, &flags);
        let (mut wo, mut wr) = (op.ws().await, r.ws().await);
        wo.rendezvous(&mut wr).await;
        let mut js = JsPeer::start(&dht.addr, 9).await;
        js.dial(&[&op.pubkey, &r.pubkey]).await;
        js.cmd(json!({"op": "join", "channel": "news"})).await;
        js.wait_open("news", &[&op.pubkey, &r.pubkey]).await;

        // The owner reaches R.
        let (n, _) = wo
            .send_until_peers("news", 2, |n| json!(format!("headline {n}")))
            .await;
        let (m, _) = wr
            .wait_event("the owner's message", STEP, |e| {
                is_message(e, "news") && text_of(e) == format!("headline {n}")
            })
            .await;
        assert_eq!(m["from"], o.as_str());

        // R is not the owner: refused locally.
        let e = wr.send("news", json!("not the owner")).await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "send_denied", "{e}");

        // The JS peer (valid PoW, valid signature of its own) is not the owner.
        let sent = js
            .cmd(json!({"op": "send", "channel": "news", "message": "js news", "pow": 12}))
            .await;
        assert_eq!(sent["peers"], 2);
        let (d, before) = wr
            .wait_event("owner_only drop (non-owner)", STEP, |e| {
                is_drop(e, "news", "owner_only")
            })
            .await;
        assert_eq!(d["from"], js.pubkey.as_str());
        // Spoofed: `from`/`origin` claim the owner, the signature is the JS peer's.
        js.cmd(json!({"op": "send", "channel": "news", "message": "spoofed", "pow": 12, "spoofFrom": o}))
            .await;
        let (d2, before2) = wr
            .wait_event("owner_only drop (spoofed)", STEP, |e| {
                is_drop(e, "news", "owner_only")
            })
            .await;
        assert_eq!(d2["from"], js.pubkey.as_str());
        // The owner sees the same.
        let (_, before3) = wo
            .wait_event("owner_only drop at the owner", STEP, |e| {
                is_drop(e, "news", "owner_only")
            })
            .await;
        for e in before.iter().chain(&before2).chain(&before3) {
            assert!(
                !(is_message(e, "news") && ["js news", "spoofed"].contains(&text_of(e))),
                "delivered: {e}"
            );
        }
        // And nothing slips through later (relays included).
        let later = wr.events_within(Duration::from_secs(1)).await;
        assert!(
            delivered(&later, "news")
                .iter()
                .all(|e| e["from"] == o.as_str()),
            "{later:?}"
        );
    })
    .await;
}

/// Invite-only channel `vip`: the inviter I and the invited M exchange messages; the JS
/// peer U, connected on the vip topic with the protomux channel open to both, receives
/// zero payload bytes on it (no message, no welcome; only M's `auth` proof, see below),
/// and what it sends there is dropped (`invite`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninvited_peer_receives_zero_payload_bytes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let dht = DhtNode::start(dir.path());
        let i_key = key_hex(1);
        let welcome = create_welcome(&keypair(1), "vip", "members only", now_ms());
        let invite_flags = [
            "--sidechannel-invite-required",
            "1",
            "--sidechannel-invite-channels",
            "vip",
            "--sidechannel-inviter-keys",
            &i_key,
        ];
        let owner = format!("vip:{i_key}");
        let wflag = welcome_flag("vip", &welcome);
        let mut i_args: Vec<&str> = invite_flags.to_vec();
        i_args.extend([
            "--sidechannels",
            "vip",
            "--sidechannel-owner",
            &owner,
            "--sidechannel-welcome",
            &wflag,
        ]);
        let ip = Peer::start(dir.path(), "i", 1, &dht.addr, &i_args);
        let m_args: Vec<&str> = [&invite_flags[..], &["--sidechannel-owner", &owner]].concat();
        let mp = Peer::start(dir.path(), "m", 2, &dht.addr, &m_args);
        let (mut wi, mut wm) = (ip.ws().await, mp.ws().await);

        // M joins with an invite signed by I (embedding the welcome).
        let invite = create_invite(
            &keypair(1),
            "vip",
            &mp.pubkey,
            3_600_000,
            Some(welcome.clone()),
            now_ms(),
        )
        .unwrap();
        let r = wm.join("vip", Some(invite), None).await;
        assert_eq!(r["type"], "joined", "{r}");

        wi.rendezvous(&mut wm).await;
        // U joins vip too and waits for its channel to be open with both.
        let mut u = JsPeer::start(&dht.addr, 9).await;
        u.dial(&[&ip.pubkey, &mp.pubkey]).await;
        u.cmd(json!({"op": "join", "channel": "vip"})).await;
        u.wait_open("vip", &[&ip.pubkey, &mp.pubkey]).await;

        // I and M talk.
        let (n, _) = wi
            .send_until_peers("vip", 1, |n| json!(format!("secret {n}")))
            .await;
        wm.wait_event("I's secret", STEP, |e| {
            is_message(e, "vip") && text_of(e) == format!("secret {n}")
        })
        .await;
        let r = wm.send("vip", json!("reply")).await;
        assert_eq!(r["peers"], 1, "M sends to authorised peers only: {r}");
        wi.wait_event("M's reply", STEP, |e| {
            is_message(e, "vip") && text_of(e) == "reply"
        })
        .await;
        // U's own vip messages are dropped by both.
        u.cmd(json!({"op": "send", "channel": "vip", "message": "let me in", "pow": 12}))
            .await;
        for w in [&mut wi, &mut wm] {
            let (d, before) = w
                .wait_event("invite drop", STEP, |e| is_drop(e, "vip", "invite"))
                .await;
            assert_eq!(d["from"], u.pubkey.as_str());
            assert!(before.iter().all(|e| text_of(e) != "let me in"));
        }
        // U hears the entry channel (so it is listening), yet nothing on vip.
        wi.send(ENTRY, json!("public")).await;
        u.wait("entry message", STEP, |e| {
            e["event"] == "message" && e["channel"] == ENTRY && e["payload"]["message"] == "public"
        })
        .await;
        let more = wi.send("vip", json!("another secret")).await;
        assert_eq!(more["type"], "sent");
        wm.wait_event("another secret", STEP, |e| {
            is_message(e, "vip") && text_of(e) == "another secret"
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Everything U's vip channels carried, counted by the JS peer as it decoded
        // them: no application payload, no welcome. The only frames are M's `auth`
        // controls: on channel open an invited member proves its own invite (bound to
        // its key, useless to U) to whoever opened the channel, as the reference does.
        let s = u.cmd(json!({"op": "stats"})).await;
        let vip = &s["received"]["vip"];
        assert_eq!(vip["messages"].as_u64().unwrap_or(0), 0, "{s}");
        assert_eq!(
            vip["bytes"].as_u64().unwrap_or(0),
            0,
            "U got payload bytes: {s}"
        );
        let controls = vip["controls"].as_object().cloned().unwrap_or_default();
        assert!(
            controls.keys().all(|k| k == "auth"),
            "only auth controls reach U: {s}"
        );
        assert!(s["received"][ENTRY]["bytes"].as_u64().unwrap() > 0, "{s}");
    })
    .await;
}

/// Proof of work (difficulty 12, the default, on every channel): R drops messages from S
/// (`--sidechannel-pow 0`, no stamp) and the JS peer's under-stamped message (fewer than
/// 12 leading zero bits), and delivers the JS peer's properly stamped one. Size guard
/// (R: `--sidechannel-max-bytes 2000`): R's bridge refuses an oversize send; S's oversize
/// message (accepted by S's default limit) is dropped by R on receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_pow_and_oversize_dropped() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let dht = DhtNode::start(dir.path());
        let r = Peer::start(
            dir.path(),
            "r",
            2,
            &dht.addr,
            &["--sidechannel-max-bytes", "2000"],
        );
        let s = Peer::start(dir.path(), "s", 3, &dht.addr, &["--sidechannel-pow", "0"]);
        let (mut wr, mut ws) = (r.ws().await, s.ws().await);
        wr.rendezvous(&mut ws).await;
        let mut js = JsPeer::start(&dht.addr, 9).await;
        js.dial(&[&r.pubkey, &s.pubkey]).await;

        // No proof of work at all.
        ws.send_until_peers(ENTRY, 2, |n| json!(format!("no pow {n}")))
            .await;
        let (d, before) = wr
            .wait_event("pow drop (none)", STEP, |e| is_drop(e, ENTRY, "pow"))
            .await;
        assert_eq!(d["from"], s.pubkey.as_str());
        assert!(delivered(&before, ENTRY).is_empty(), "{before:?}");

        // A stamp that is not enough, then one that is.
        js.send_until_peers(
            json!({"channel": ENTRY, "message": "weak", "powMax": 12}),
            2,
        )
        .await;
        let (d, before) = wr
            .wait_event("pow drop (weak)", STEP, |e| {
                is_drop(e, ENTRY, "pow") && e["from"] == js.pubkey.as_str()
            })
            .await;
        assert_eq!(d["reason"], "pow");
        assert!(before.iter().all(|e| text_of(e) != "weak"));
        js.cmd(
            json!({"op": "send", "channel": ENTRY, "message": "strong", "pow": 12, "pad": 1000}),
        )
        .await;
        let (m, _) = wr
            .wait_event("stamped message", STEP, |e| {
                is_message(e, ENTRY) && e["message"]["text"] == "strong"
            })
            .await;
        assert_eq!(m["from"], js.pubkey.as_str());

        // Oversize at send: R's bridge refuses.
        let e = wr.send(ENTRY, json!("y".repeat(5000))).await;
        assert_eq!(e["type"], "error", "{e}");
        assert!(e["code"].as_str().unwrap().starts_with("send_"), "{e}");
        assert!(e["error"].as_str().unwrap().contains("2000"), "{e}");
        // Oversize at receipt: S sends (its limit is the default 1,000,000 bytes).
        let big = "z".repeat(5000);
        let ok = ws.send(ENTRY, json!(big)).await;
        assert_eq!(ok["type"], "sent", "{ok}");
        let (d, before) = wr
            .wait_event("oversize drop", STEP, |e| is_drop(e, ENTRY, "oversize"))
            .await;
        assert_eq!(d["from"], s.pubkey.as_str());
        assert!(d["detail"].as_str().unwrap().ends_with("> 2000"), "{d}");
        assert!(before
            .iter()
            .all(|e| !is_message(e, ENTRY) || text_of(e) != big));
    })
    .await;
}

/// Rate limiting (R: 500 B/s, 2,000-byte burst, 3 strikes): a flooding F gets three
/// `rate_limited` strikes, then is blocked (`blocked`) for the block duration (30 s, the
/// plane's `SidechannelConfig::block_ms`; there is no flag for it) and accepted again
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_peer_blocked_after_three_strikes_then_accepted() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let dht = DhtNode::start(dir.path());
        let r = Peer::start(
            dir.path(),
            "r",
            2,
            &dht.addr,
            &[
                "--sidechannel-rate-bytes",
                "500",
                "--sidechannel-rate-burst",
                "2000",
                "--sidechannel-max-strikes",
                "3",
            ],
        );
        let f = Peer::start(dir.path(), "f", 3, &dht.addr, &[]);
        let (mut wr, mut wf) = (r.ws().await, f.ws().await);
        wr.rendezvous(&mut wf).await;
        // A small hello within the budget.
        wf.send_until_peers(ENTRY, 1, |n| json!(format!("hi {n}")))
            .await;
        wr.wait_event("hello", STEP, |e| is_message(e, ENTRY)).await;
        // Let the bucket refill to its burst.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let _ = wr.events_within(Duration::from_millis(100)).await;

        // Flood: 12 messages of ~1.3 KB as fast as the bridge sends them.
        let flood_start = Instant::now();
        for i in 0..12 {
            let r = wf
                .send(ENTRY, json!(format!("flood {i} {}", "f".repeat(1000))))
                .await;
            assert_eq!(r["type"], "sent", "{r}");
        }
        // R: deliveries within the burst, then exactly three strikes, then blocked.
        let (_, before) = wr
            .wait_event("blocked drop", STEP, |e| is_drop(e, ENTRY, "blocked"))
            .await;
        let blocked_at = Instant::now();
        let strikes: Vec<&Value> = before
            .iter()
            .filter(|e| is_drop(e, ENTRY, "rate_limited"))
            .collect();
        assert_eq!(
            strikes.len(),
            3,
            "three strikes before the block: {before:?}"
        );
        assert!(
            !delivered(&before, ENTRY).is_empty(),
            "the burst lets the first through: {before:?}"
        );
        assert!(
            flood_start.elapsed() < Duration::from_secs(25),
            "the flood was fast enough to test the block"
        );
        let rest = wr.events_within(Duration::from_secs(1)).await;
        assert!(
            rest.iter()
                .all(|e| !is_message(e, ENTRY) && !is_drop(e, ENTRY, "rate_limited")),
            "everything after the block is dropped as blocked: {rest:?}"
        );

        // After the block F is accepted again: probe once a second.
        let mut n = 0;
        let accepted_at = loop {
            n += 1;
            let text = format!("after block {n}");
            wf.send(ENTRY, json!(text.clone())).await;
            let evs = wr.events_within(Duration::from_secs(1)).await;
            if evs
                .iter()
                .any(|e| is_message(e, ENTRY) && text_of(e) == text)
            {
                break Instant::now();
            }
            assert!(
                evs.iter()
                    .filter(|e| e["type"] == "sidechannel_drop")
                    .all(|e| e["reason"] == "blocked"),
                "{evs:?}"
            );
            assert!(
                blocked_at.elapsed() < Duration::from_secs(90),
                "F never accepted again"
            );
        };
        let blocked_for = accepted_at - blocked_at;
        assert!(
            blocked_for >= Duration::from_secs(25),
            "blocked for about 30 s, not {blocked_for:?}"
        );
        let s = wr.stats().await;
        assert!(s["sidechannel"]["dropped"].as_u64().unwrap() >= 4, "{s}");
    })
    .await;
}
