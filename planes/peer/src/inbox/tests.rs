use std::sync::Arc;

use intercom_stores::{KvStore, MemoryStore};
use serde_json::json;

use super::*;

fn message(channel: &str, n: u64) -> Value {
    json!({"channel": channel, "id": format!("m{n}"), "from": "ab".repeat(32), "message": {"n": n}})
}

fn open(kv: &Arc<dyn KvStore>, limits: InboxLimits) -> Inbox {
    Inbox::open(kv.clone(), limits).unwrap()
}

fn recv(inbox: &Inbox, agent: &str, limit: usize, now: u64) -> Received {
    let query = RecvQuery {
        limit,
        ..RecvQuery::default()
    };
    inbox.recv(agent, &query, now).unwrap()
}

fn numbers(r: &Received) -> Vec<u64> {
    r.messages
        .iter()
        .map(|m| m["message"]["n"].as_u64().unwrap())
        .collect()
}

#[test]
fn messages_stay_pending_until_acknowledged_and_survive_a_reopen() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let inbox = open(&kv, InboxLimits::default());
    for n in 1..=5 {
        assert_eq!(
            inbox
                .store(&format!("c\nm{n}"), &message("c", n), 1000 + n)
                .unwrap(),
            Some(n)
        );
    }
    // A relayed or replayed copy is stored once.
    assert_eq!(inbox.store("c\nm3", &message("c", 3), 2000).unwrap(), None);

    let first = recv(&inbox, "alice", 3, 3000);
    assert_eq!(numbers(&first), [1, 2, 3]);
    assert_eq!(first.messages[0]["seq"], 1);
    assert_eq!(first.messages[0]["receivedAt"], 1001);
    assert_eq!((first.acked, first.pending, first.missed), (0, 5, 0));
    // Not acknowledged: the same messages again.
    assert_eq!(numbers(&recv(&inbox, "alice", 3, 3000)), [1, 2, 3]);
    assert_eq!(inbox.ack("alice", 2).unwrap(), 2);
    // Acknowledgements never go backwards or past the newest message.
    assert_eq!(inbox.ack("alice", 1).unwrap(), 2);

    // A restart: a new Inbox over the same store.
    drop(inbox);
    let inbox = open(&kv, InboxLimits::default());
    let again = recv(&inbox, "alice", 10, 4000);
    assert_eq!(numbers(&again), [3, 4, 5]);
    assert_eq!(inbox.ack("alice", 99).unwrap(), 5);
    assert!(recv(&inbox, "alice", 10, 4000).messages.is_empty());
    // The dedupe keys survived the restart too.
    assert_eq!(inbox.store("c\nm4", &message("c", 4), 5000).unwrap(), None);
    // A second agent has its own cursor and gets everything still held.
    assert_eq!(numbers(&recv(&inbox, "bob", 10, 5000)), [1, 2, 3, 4, 5]);
    assert_eq!(
        inbox.store("c\nm6", &message("c", 6), 5000).unwrap(),
        Some(6)
    );
    let status = inbox.status(None, 5000).unwrap();
    assert_eq!(status["count"], 6);
    // Counted since this process opened the inbox.
    assert_eq!(status["duplicates"], 1);
    assert_eq!(status["agents"][0]["agent"], "alice");
    assert_eq!(status["agents"][0]["pending"], 1);
    assert_eq!(status["agents"][1]["pending"], 6);
}

#[test]
fn ack_with_recv_and_filters() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let inbox = open(&kv, InboxLimits::default());
    for n in 1..=6 {
        let channel = if n % 2 == 0 { "even" } else { "odd" };
        inbox
            .store(&format!("{channel}\nm{n}"), &message(channel, n), n)
            .unwrap();
    }
    let query = RecvQuery {
        limit: 2,
        channel: Some("even".into()),
        ..RecvQuery::default()
    };
    let got = inbox.recv("a", &query, 10).unwrap();
    assert_eq!(numbers(&got), [2, 4]);
    assert_eq!(got.scanned_to, 4);
    // Acknowledging up to what was scanned skips the filtered messages as well.
    let query = RecvQuery {
        limit: 10,
        ack: Some(got.scanned_to),
        ..RecvQuery::default()
    };
    let rest = inbox.recv("a", &query, 10).unwrap();
    assert_eq!(numbers(&rest), [5, 6]);
    assert_eq!(rest.acked, 4);
    let query = RecvQuery {
        limit: 10,
        from: Some("AB".repeat(32)),
        ..RecvQuery::default()
    };
    assert_eq!(inbox.recv("b", &query, 10).unwrap().messages.len(), 6);
    let query = RecvQuery {
        limit: 10,
        from: Some("cd".repeat(32)),
        ..RecvQuery::default()
    };
    let none = inbox.recv("b", &query, 10).unwrap();
    assert!(none.messages.is_empty());
    assert_eq!(none.scanned_to, 6);
}

#[test]
fn retention_prunes_the_oldest_and_reports_what_an_agent_missed() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let limits = InboxLimits {
        max_messages: 3,
        max_bytes: u64::MAX,
        max_age_ms: 1_000,
    };
    let inbox = open(&kv, limits);
    assert!(recv(&inbox, "slow", 1, 0).messages.is_empty());
    for n in 1..=5 {
        inbox
            .store(&format!("c\nm{n}"), &message("c", n), n)
            .unwrap();
    }
    let got = recv(&inbox, "slow", 10, 10);
    assert_eq!(numbers(&got), [3, 4, 5]);
    assert_eq!(got.missed, 2);
    // Reported once.
    assert_eq!(recv(&inbox, "slow", 10, 10).missed, 0);
    // A pruned message's dedupe key went with it.
    assert_eq!(inbox.store("c\nm1", &message("c", 1), 20).unwrap(), Some(6));
    let keys: Vec<String> = kv
        .scan_prefix(DEDUPE_PREFIX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    assert_eq!(keys, ["inbox/d/c\nm1", "inbox/d/c\nm4", "inbox/d/c\nm5"]);

    // Age: everything older than a second goes, on reads too; numbers never restart.
    let got = recv(&inbox, "slow", 10, 5_000);
    assert!(got.messages.is_empty());
    assert_eq!(got.missed, 4); // 3 went for the count limit, 4 to 6 for their age
    assert_eq!(inbox.status(None, 5_000).unwrap()["count"], 0);
    drop(inbox);
    let inbox = open(&kv, limits);
    assert_eq!(
        inbox.store("c\nm7", &message("c", 7), 6_000).unwrap(),
        Some(7)
    );

    // Bytes: a budget for about two records.
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let size = {
        let probe = open(&kv, InboxLimits::default());
        probe.store("c\nm1", &message("c", 1), 1).unwrap();
        probe.status(None, 1).unwrap()["bytes"].as_u64().unwrap()
    };
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let inbox = open(
        &kv,
        InboxLimits {
            max_bytes: size * 2 + size / 2,
            ..InboxLimits::default()
        },
    );
    for n in 1..=4 {
        inbox
            .store(&format!("c\nm{n}"), &message("c", n), n)
            .unwrap();
    }
    assert_eq!(numbers(&recv(&inbox, "x", 10, 10)), [3, 4]);
}

#[test]
fn agent_names_and_counts_are_bounded() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let inbox = open(&kv, InboxLimits::default());
    for bad in ["", "a b", "ä", &"x".repeat(65), "../etc"] {
        let e = inbox.recv(bad, &RecvQuery::default(), 0).unwrap_err();
        assert!(matches!(e, InboxError::BadAgent(_)), "{bad:?}: {e}");
    }
    assert!(valid_agent("Agent-1.beta_2"));
    for i in 0..MAX_AGENTS {
        inbox.ack(&format!("a{i}"), 0).unwrap();
    }
    assert!(matches!(
        inbox.ack("one-more", 0),
        Err(InboxError::TooManyAgents)
    ));
    assert!(inbox.ack("a7", 0).is_ok());
}

#[test]
fn waiting_readers_see_the_newest_sequence_number() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
    let inbox = open(&kv, InboxLimits::default());
    let mut newest = inbox.subscribe();
    assert_eq!(*newest.borrow_and_update(), 0);
    inbox.store("c\nm1", &message("c", 1), 1).unwrap();
    assert!(newest.has_changed().unwrap());
    assert_eq!(*newest.borrow_and_update(), 1);
}
