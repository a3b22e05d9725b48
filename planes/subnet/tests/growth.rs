//! Bounded growth from writers (the subnet issue's done-when 5): quotas enforced alike on
//! every peer, a removed writer's later blocks stored by nobody, blocks above the entry
//! cap refused. Real subnet services over in-memory muxes on tokio's paused clock; the
//! misbehaving writers are bare logs appended to directly.

use std::time::Duration;

use intercom_subnet::entry::{bind_message, MAX_ENTRY_BYTES};
use intercom_subnet::{Body, Entry, Key, Membership};
use serde_json::{json, Value};
use tokio::time::Instant;

mod support;

use support::{connect, held, node, value, Node, RawWriter, CHANNEL};

type Check<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>>;

/// Waits (virtual time) until `done` holds on every node, at most `limit`.
async fn settle(
    nodes: &[&Node],
    limit: Duration,
    what: &str,
    done: impl for<'a> Fn(&'a Node) -> Check<'a>,
) {
    let start = Instant::now();
    loop {
        let mut all = true;
        for n in nodes {
            all &= done(n).await;
        }
        if all {
            return;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn roots(nodes: &[&Node]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.handle.info().await.unwrap().state_root);
    }
    out
}

async fn admin_setup(admin: &Node) {
    for m in [
        Membership::AddAdmin(admin.identity.public_key),
        Membership::EnableTransactions,
    ] {
        admin.handle.submit(Body::Membership(m)).await.unwrap();
    }
}

fn put(key: &str, value: Value) -> Body {
    Body::Transaction(json!({"type": "put", "value": {"key": key, "value": value}}))
}

/// A raw writer's entry `bodies` (its first carries the bind).
fn raw_entry(w: &RawWriter, first: bool, bodies: Vec<Body>) -> Vec<u8> {
    let mut all = Vec::new();
    if first {
        all.push(Body::Bind {
            author: w.identity.public_key,
            signature: w.identity.sign(&bind_message(CHANNEL, &w.writer)),
        });
    }
    all.extend(bodies);
    Entry {
        timestamp: 1,
        heads: vec![],
        bodies: all,
    }
    .encode()
}

async fn is_writer(n: &Node, key: &Key) -> bool {
    n.handle
        .info()
        .await
        .unwrap()
        .writers
        .contains(&hex::encode(key))
}

#[tokio::test(start_paused = true)]
async fn a_quota_rejects_the_same_operations_on_every_peer() {
    let admin = node(1, None);
    let writer = node(2, Some(admin.writer));
    let reader = node(3, Some(admin.writer));
    let _c = [
        connect(&admin, &writer),
        connect(&admin, &reader),
        connect(&writer, &reader),
    ];
    admin_setup(&admin).await;
    // Six keys each: three puts (a put writes the value and its owner record).
    admin
        .handle
        .submit(Body::Membership(Membership::SetQuota {
            author: None,
            keys: 6,
            bytes: 1 << 20,
        }))
        .await
        .unwrap();
    admin
        .handle
        .submit(Body::Membership(Membership::AddWriter(writer.writer)))
        .await
        .unwrap();
    let mut events = reader.handle.subscribe();
    let wk = writer.writer;
    settle(&[&writer], Duration::from_secs(5), "admission", move |n| {
        Box::pin(async move { is_writer(n, &wk).await })
    })
    .await;
    for i in 0..5 {
        writer
            .handle
            .submit(put(&format!("q{i}"), json!(i)))
            .await
            .unwrap();
    }
    settle(
        &[&admin, &writer, &reader],
        Duration::from_secs(5),
        "the puts",
        |n| Box::pin(async move { n.handle.info().await.unwrap().unconfirmed_length == 0 }),
    )
    .await;
    for n in [&admin, &writer, &reader] {
        for i in 0..5 {
            let expected = (i < 3).then(|| json!(i));
            assert_eq!(value(n, &format!("kv/q{i}")).await, expected, "q{i}");
        }
    }
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        for (_, kind, outcome) in e.ops {
            if kind == "tx" {
                reasons.push(outcome.reason().map(str::to_owned));
            }
        }
    }
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(reasons[..3].iter().all(Option::is_none), "{reasons:?}");
    for r in &reasons[3..] {
        let r = r.as_deref().unwrap_or("");
        assert!(r.starts_with("state quota exceeded"), "{r}");
        assert!(r.contains("(quota: 6 keys"), "{r}");
    }
    // The admin raises this author's quota: its next put applies everywhere.
    admin
        .handle
        .submit(Body::Membership(Membership::SetQuota {
            author: Some(writer.identity.public_key),
            keys: 100,
            bytes: 1 << 20,
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    writer.handle.submit(put("q9", json!(9))).await.unwrap();
    settle(
        &[&admin, &writer, &reader],
        Duration::from_secs(5),
        "the put after the raise",
        |n| Box::pin(async move { value(n, "kv/q9").await == Some(json!(9)) }),
    )
    .await;
    let r = roots(&[&admin, &writer, &reader]).await;
    assert!(r.windows(2).all(|w| w[0] == w[1]), "roots differ: {r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_removed_writers_later_blocks_are_stored_by_nobody() {
    let admin = node(1, None);
    let reader = node(3, Some(admin.writer));
    let _ar = connect(&admin, &reader);
    let raw = RawWriter::new(2);
    let _wa = raw.connect(&admin);
    let _wr = raw.connect(&reader);
    admin_setup(&admin).await;
    raw.replica
        .append(&[raw_entry(&raw, true, vec![put("before", json!(1))])])
        .unwrap();
    admin
        .handle
        .submit(Body::Membership(Membership::AddWriter(raw.writer)))
        .await
        .unwrap();
    settle(
        &[&admin, &reader],
        Duration::from_secs(5),
        "the writer's entry",
        |n| Box::pin(async move { value(n, "kv/before").await == Some(json!(1)) }),
    )
    .await;
    admin
        .handle
        .submit(Body::Membership(Membership::RemoveWriter(raw.writer)))
        .await
        .unwrap();
    let wk = raw.writer;
    settle(
        &[&admin, &reader],
        Duration::from_secs(5),
        "the removal",
        move |n| Box::pin(async move { !is_writer(n, &wk).await }),
    )
    .await;
    let before = (
        held(&admin, &raw.writer).await,
        held(&reader, &raw.writer).await,
    );
    assert_eq!(before, (1, 1));
    // 10,000 more blocks, appended in runs while the peers keep replicating.
    for run in 0..100 {
        let blocks: Vec<Vec<u8>> = (0..100)
            .map(|i| raw_entry(&raw, false, vec![put(&format!("late{run}-{i}"), json!(i))]))
            .collect();
        raw.replica.append(&blocks).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(raw.replica.with(|r| r.log().length()), 10_001);
    assert_eq!(
        held(&admin, &raw.writer).await,
        1,
        "the admin stored later blocks"
    );
    assert_eq!(
        held(&reader, &raw.writer).await,
        1,
        "the reader stored later blocks"
    );
    assert_eq!(value(&reader, "kv/late0-0").await, None);
    let r = roots(&[&admin, &reader]).await;
    assert_eq!(r[0], r[1]);
}

#[tokio::test(start_paused = true)]
async fn a_block_above_the_entry_cap_is_stored_by_nobody() {
    let admin = node(1, None);
    let reader = node(3, Some(admin.writer));
    let _ar = connect(&admin, &reader);
    let raw = RawWriter::new(2);
    let _wa = raw.connect(&admin);
    let _wr = raw.connect(&reader);
    admin_setup(&admin).await;
    admin
        .handle
        .submit(Body::Membership(Membership::AddWriter(raw.writer)))
        .await
        .unwrap();
    // One fitting entry, one of ~3 MiB (400 bodies of 7.5 KB), one fitting after it.
    let big: Vec<Body> = (0..400)
        .map(|i| put(&format!("big{i}"), json!("x".repeat(7_500))))
        .collect();
    let blocks = vec![
        raw_entry(&raw, true, vec![put("first", json!(1))]),
        raw_entry(&raw, false, big),
        raw_entry(&raw, false, vec![put("after", json!(3))]),
    ];
    assert!(blocks[1].len() > MAX_ENTRY_BYTES, "{}", blocks[1].len());
    raw.replica.append(&blocks).unwrap();
    settle(
        &[&admin, &reader],
        Duration::from_secs(5),
        "the first entry",
        |n| Box::pin(async move { value(n, "kv/first").await == Some(json!(1)) }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    for n in [&admin, &reader] {
        assert_eq!(
            held(n, &raw.writer).await,
            1,
            "the log stops before the big block"
        );
        assert_eq!(value(n, "kv/big0").await, None);
        assert_eq!(value(n, "kv/after").await, None);
    }
    let r = roots(&[&admin, &reader]).await;
    assert_eq!(r[0], r[1]);
}
