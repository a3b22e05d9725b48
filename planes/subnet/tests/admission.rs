//! Writers admitted at any time end up replicated and confirmed everywhere (the subnet
//! issue's done-when 2): real subnet services over in-memory muxes, on tokio's paused
//! clock, with the peer's log channels opened before, during and long after protomux's
//! grace period (1 s), admissions at random times, and connections that drop and come
//! back before the admission. Seeded; replay one case with `ADMISSION_SEED=<n>`.

use std::time::Duration;

use intercom_subnet::{Body, Membership};
use serde_json::json;
use tokio::time::Instant;

mod support;

use support::{connect, node, value, Node};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One case: an admin, a writer and a reader, all connected; the writer is admitted (as a
/// writer or an indexer) after a random delay, maybe after its connection to the admin
/// dropped and came back; its transaction must then be confirmed on every peer within 2 s.
async fn run_case(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let admin = node(1, None);
    let writer = node(2, Some(admin.writer));
    let reader = node(3, Some(admin.writer));
    let (to_writer, _) = connect(&admin, &writer);
    let _ar = connect(&admin, &reader);
    let _wr = connect(&writer, &reader);
    let submit = |n: &Node, body: Body| {
        let h = n.handle.clone();
        async move { h.submit(body).await.unwrap() }
    };
    submit(
        &admin,
        Body::Membership(Membership::AddAdmin(admin.identity.public_key)),
    )
    .await;
    submit(&admin, Body::Membership(Membership::EnableTransactions)).await;
    // Around, before and long after the grace period of the writer's first open.
    let delays_ms = [0, 200, 900, 1000, 1100, 2500, 15_000, 120_000];
    let delay = Duration::from_millis(delays_ms[rng.below(delays_ms.len() as u64) as usize]);
    let reconnect = rng.below(3) == 0;
    if reconnect {
        tokio::time::sleep(delay / 2).await;
        to_writer.destroy();
        tokio::time::sleep(Duration::from_millis(rng.below(3000))).await;
        let _again = connect(&admin, &writer);
        tokio::time::sleep(delay / 2).await;
        admit_and_check(seed, &admin, &writer, &reader, &mut rng).await;
    } else {
        tokio::time::sleep(delay).await;
        admit_and_check(seed, &admin, &writer, &reader, &mut rng).await;
    }
    for n in [&admin, &writer, &reader] {
        n.handle.shutdown().await;
    }
}

async fn admit_and_check(seed: u64, admin: &Node, writer: &Node, reader: &Node, rng: &mut Rng) {
    let indexer = rng.below(2) == 0;
    let admission = if indexer {
        Membership::AddIndexer(writer.writer)
    } else {
        Membership::AddWriter(writer.writer)
    };
    let admitted = Instant::now();
    admin
        .handle
        .submit(Body::Membership(admission))
        .await
        .unwrap();
    // The writer learns of its admission through the admin's log, then writes.
    let op = json!({"type": "put", "value": {"key": "late", "value": seed}});
    loop {
        match writer.handle.submit(Body::Transaction(op.clone())).await {
            Ok(_) => break,
            Err(_) => {
                assert!(
                    admitted.elapsed() < Duration::from_secs(2),
                    "seed {seed}: the writer never saw its admission"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    loop {
        let mut done = true;
        for n in [admin, writer, reader] {
            done &= value(n, "kv/late").await == Some(json!(seed));
        }
        if done {
            break;
        }
        if admitted.elapsed() >= Duration::from_secs(2) {
            for n in [admin, writer, reader] {
                eprintln!("{:?}", n.handle.info().await.unwrap().to_json());
            }
            panic!(
                "seed {seed}: the writer's entry is not confirmed everywhere 2 s after its \
                 admission (indexer: {indexer})"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Content, not just equal roots: the reader holds the writer's log and the value.
    let info = reader.handle.info().await.unwrap();
    let held = info
        .logs
        .iter()
        .find(|(k, _)| *k == hex::encode(writer.writer))
        .map_or(0, |(_, n)| *n);
    assert!(
        held >= 1,
        "seed {seed}: the reader holds none of the writer's entries"
    );
    let roots: Vec<[u8; 32]> = [
        admin.handle.info().await.unwrap().state_root,
        writer.handle.info().await.unwrap().state_root,
        info.state_root,
    ]
    .into();
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: roots differ"
    );
}

#[tokio::test(start_paused = true)]
async fn writers_admitted_at_any_time_are_replicated_and_confirmed() {
    if let Ok(seed) = std::env::var("ADMISSION_SEED") {
        run_case(seed.parse().expect("ADMISSION_SEED is a number")).await;
        return;
    }
    for seed in 0..48 {
        run_case(seed).await;
    }
}
