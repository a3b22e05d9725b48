//! Replication between replicas over in-memory protomux pairs: full download with
//! verification, live appends, two sources at once with one serving damaged blocks, and
//! a peer sending malformed or oversized messages, which is dropped while others go on;
//! a block above the reader's cap, and a download limit changed on a live session.

use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_log::replicate::PROTOCOL;
use intercom_log::wire::{
    Data, DataBlock, Handshake, Message, Range, Request, RequestUpgrade, Synchronize,
};
use intercom_log::{block_key, caps, Log, Replica, ReplicaConfig, SharedReplica};
use intercom_protomux::{memory_pair, ChannelEvent, ChannelOptions, Mux, MuxConfig};
use intercom_stores::{Batch, KvStore, MemoryStore};

const HANDSHAKE_HASH: [u8; 64] = [9; 64];
const T: Duration = Duration::from_secs(20);

fn entry(i: usize) -> Vec<u8> {
    format!("entry {i} {}", "z".repeat(i % 50)).into_bytes()
}

fn writer(entries: usize) -> (Arc<MemoryStore>, Log) {
    let kv = Arc::new(MemoryStore::default());
    let mut log = Log::open_writer(kv.clone(), KeyPair::from_seed(&[3; 32])).unwrap();
    let all: Vec<Vec<u8>> = (0..entries).map(entry).collect();
    for chunk in all.chunks(500) {
        log.append(chunk).unwrap();
    }
    (kv, log)
}

fn shared(log: Log, config: ReplicaConfig) -> SharedReplica {
    SharedReplica::new(Replica::new(log, config))
}

/// Connects two replicas as the two ends of one connection.
fn connect(a: &SharedReplica, b: &SharedReplica) -> (Mux, Mux) {
    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(64);
    let (mux_a, _) = Mux::new(a_rx, a_tx, MuxConfig::default());
    let (mux_b, _) = Mux::new(b_rx, b_tx, MuxConfig::default());
    for (replica, mux, initiator) in [(a, &mux_a, true), (b, &mux_b, false)] {
        let replica = replica.clone();
        let mux = mux.clone();
        tokio::spawn(async move { replica.replicate(mux, initiator, &HANDSHAKE_HASH).await });
    }
    (mux_a, mux_b)
}

async fn complete(r: &SharedReplica, length: u64) {
    tokio::time::timeout(
        T,
        r.wait_for(|r| r.is_complete() && r.log().length() == length),
    )
    .await
    .unwrap_or_else(|_| {
        let (l, c) = r.with(|r| (r.log().length(), r.log().contiguous_length()));
        panic!("not complete: length {l}, contiguous {c}, wanted {length}")
    });
}

fn reader_of(key: [u8; 32], config: ReplicaConfig) -> SharedReplica {
    shared(
        Log::open(Arc::new(MemoryStore::default()), key).unwrap(),
        config,
    )
}

#[tokio::test]
async fn downloads_verifies_and_follows_appends() {
    let (_, log) = writer(2000);
    let key = *log.key();
    let head = log.head().clone();
    let w = shared(log, ReplicaConfig::default());
    let r = reader_of(key, ReplicaConfig::default());
    let _conn = connect(&w, &r);
    complete(&r, 2000).await;
    r.with(|r| {
        assert_eq!(r.log().head(), &head);
        assert_eq!(r.log().verify_all().unwrap(), 2000);
        assert_eq!(r.log().get(1234).unwrap().unwrap(), entry(1234));
    });
    for n in 1..=5 {
        w.append(&[format!("live {n}")]).unwrap();
        complete(&r, 2000 + n).await;
    }
    assert_eq!(r.with(|r| r.log().get(2004).unwrap()).unwrap(), b"live 5");
}

#[tokio::test]
async fn two_sources_one_damaged() {
    let (kv, log) = writer(3000);
    let key = *log.key();
    // A second, honest copy made by replication.
    let w = shared(log, ReplicaConfig::default());
    let copy = reader_of(key, ReplicaConfig::default());
    let conn = connect(&w, &copy);
    complete(&copy, 3000).await;
    drop(conn);
    // Damage every 100th block of the writer's store.
    let dk = caps::discovery_key(&key);
    let damaged: Vec<(Vec<u8>, Vec<u8>)> = (50..3000u64)
        .step_by(100)
        .map(|block| {
            let k = block_key(&dk, block);
            let mut v = kv.get_blob(&k).unwrap().unwrap();
            v[0] ^= 1;
            (k, v)
        })
        .collect();
    let mut batch = Batch::default();
    for (k, v) in &damaged {
        batch.put_blob(k, v);
    }
    kv.write(batch, true).unwrap();

    let reader = reader_of(
        key,
        ReplicaConfig {
            min_peers: 2,
            ..ReplicaConfig::default()
        },
    );
    let _a = connect(&w, &reader);
    let _b = connect(&copy, &reader);
    complete(&reader, 3000).await;
    let stats = reader.with(|r| r.stats());
    assert_eq!(stats.blocks_downloaded, 3000);
    assert!(stats.sources >= 2, "{stats:?}");
    assert_eq!(stats.bad_peers, 1, "{stats:?}");
    reader.with(|r| {
        assert_eq!(r.log().verify_all().unwrap(), 3000);
        assert_eq!(r.log().get(50).unwrap().unwrap(), entry(50));
    });
}

/// Opens a raw `hypercore/alpha` channel to `target` with a valid capability and
/// returns it, so a test can send anything on it.
async fn raw_peer(target: &SharedReplica, key: [u8; 32]) -> (Mux, intercom_protomux::Channel) {
    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(64);
    let (ours, _) = Mux::new(a_rx, a_tx, MuxConfig::default());
    let (theirs, _) = Mux::new(b_rx, b_tx, MuxConfig::default());
    let target = target.clone();
    tokio::spawn(async move { target.replicate(theirs, false, &HANDSHAKE_HASH).await });
    let handshake = Handshake {
        seeks: false,
        capability: caps::replication_capability(true, &key, &HANDSHAKE_HASH),
    };
    let mut channel = ours
        .open_channel(
            ChannelOptions::new(PROTOCOL)
                .with_id(caps::discovery_key(&key).to_vec())
                .with_handshake(intercom_encoding::encode(&handshake)),
        )
        .await
        .unwrap();
    match tokio::time::timeout(T, channel.recv()).await.unwrap() {
        Some(ChannelEvent::Opened { .. }) => {}
        other => panic!("channel not opened: {other:?}"),
    }
    (ours, channel)
}

async fn closed(mux: &Mux) {
    tokio::time::timeout(T, async {
        while !mux.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the bad peer was disconnected");
}

#[tokio::test]
async fn malformed_and_oversized_messages_drop_only_that_peer() {
    let (_, log) = writer(500);
    let key = *log.key();
    let w = shared(log, ReplicaConfig::default());

    // Undecodable payload for a known type.
    let (mux, channel) = raw_peer(&w, key).await;
    channel.send(1, &[0xff, 0xff]).await.unwrap();
    closed(&mux).await;

    // Unknown message type.
    let (mux, channel) = raw_peer(&w, key).await;
    channel.send(42, b"hello").await.unwrap();
    closed(&mux).await;

    // Unsolicited oversized data (a 4 MB block nobody asked for) is ignored, and
    // upgrade requests far beyond the log are answered "invalid" until the peer exceeds
    // the invalid-request budget and is dropped.
    let (mux, mut channel) = raw_peer(&w, key).await;
    let data = Message::Data(Data {
        request: 77,
        block: Some(DataBlock {
            index: 3,
            value: vec![7; 4 << 20],
            nodes: Vec::new(),
        }),
        ..Data::default()
    });
    let (t, p) = data.encode();
    channel.send(t, &p).await.unwrap();
    for id in 1..=64u64 {
        let req = Message::Request(Request {
            id,
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: 1 << 40,
            }),
            ..Request::default()
        });
        let (t, p) = req.encode();
        if channel.send(t, &p).await.is_err() {
            break;
        }
    }
    let mut no_data = 0;
    while let Ok(Some(ChannelEvent::Message { message_type, .. })) =
        tokio::time::timeout(T, channel.recv()).await
    {
        if message_type == 4 {
            no_data += 1;
        }
    }
    assert!(no_data > 0, "invalid requests are answered with noData");
    closed(&mux).await;

    // Meanwhile the writer still serves a well-behaved reader.
    let r = reader_of(key, ReplicaConfig::default());
    let _conn = connect(&w, &r);
    complete(&r, 500).await;
}

#[tokio::test]
async fn many_logs_over_one_connection() {
    // Side X writes log A and follows log B; side Y the reverse; one mux pair carries both.
    let (_, log_a) = writer(300);
    let kv_b = Arc::new(MemoryStore::default());
    let mut log_b = Log::open_writer(kv_b, KeyPair::from_seed(&[4; 32])).unwrap();
    log_b.append(&[b"b0".as_slice(), b"b1"]).unwrap();
    let (key_a, key_b) = (*log_a.key(), *log_b.key());
    let x_a = shared(log_a, ReplicaConfig::default());
    let y_b = shared(log_b, ReplicaConfig::default());
    let x_b = reader_of(key_b, ReplicaConfig::default());
    let y_a = reader_of(key_a, ReplicaConfig::default());

    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(64);
    let (mux_x, _) = Mux::new(a_rx, a_tx, MuxConfig::default());
    let (mux_y, _) = Mux::new(b_rx, b_tx, MuxConfig::default());
    for (replica, mux, initiator) in [
        (&x_a, &mux_x, true),
        (&x_b, &mux_x, true),
        (&y_a, &mux_y, false),
        (&y_b, &mux_y, false),
    ] {
        let (replica, mux) = (replica.clone(), mux.clone());
        tokio::spawn(async move { replica.replicate(mux, initiator, &HANDSHAKE_HASH).await });
    }
    complete(&y_a, 300).await;
    complete(&x_b, 2).await;
    y_b.append(&[b"b2"]).unwrap();
    x_a.append(&[b"a300"]).unwrap();
    complete(&x_b, 3).await;
    complete(&y_a, 301).await;
    assert_eq!(x_b.with(|r| r.log().get(2).unwrap()).unwrap(), b"b2");
}

#[tokio::test]
async fn a_silent_peer_does_not_stall_the_download() {
    let (_, log) = writer(300);
    let key = *log.key();
    let w = shared(log, ReplicaConfig::default());
    let config = ReplicaConfig {
        request_timeout: Duration::from_millis(300),
        ..ReplicaConfig::default()
    };
    let r = reader_of(key, config);
    // The silent peer claims the whole log first (so it is asked for the upgrade and for
    // blocks), then never answers.
    let (_silent_mux, silent) = raw_peer(&r, key).await;
    for m in [
        Message::Sync(Synchronize {
            fork: 0,
            length: 300,
            remote_length: 0,
            can_upgrade: true,
            uploading: true,
            downloading: false,
            has_manifest: true,
            allow_push: false,
        }),
        Message::Range(Range {
            drop: false,
            start: 0,
            length: 300,
        }),
    ] {
        let (t, p) = m.encode();
        silent.send(t, &p).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A good source joins later; the requests stuck at the silent peer time out and go
    // to it.
    let _conn = connect(&w, &r);
    complete(&r, 300).await;
    assert!(
        r.with(|r| r.stats().request_timeouts) > 0,
        "the silent peer's requests timed out"
    );
}

/// The blocks of the log with `key` stored in `kv`, by index.
fn stored_blocks(kv: &MemoryStore, key: &[u8; 32]) -> Vec<u64> {
    let mut prefix = block_key(&caps::discovery_key(key), 0);
    prefix.truncate(prefix.len() - 8);
    kv.scan_prefix(&prefix)
        .unwrap()
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k[prefix.len()..].try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_block_above_the_readers_cap_is_not_stored() {
    // The writer's cap (the default, 8 MiB) lets a 1 MiB block in; the reader's is 64 KiB.
    let (_, mut log) = writer(10);
    log.append(&[vec![5u8; 1 << 20]]).unwrap();
    log.append(&[b"after".as_slice()]).unwrap();
    let key = *log.key();
    let w = shared(log, ReplicaConfig::default());
    let kv = Arc::new(MemoryStore::default());
    let r = shared(
        Log::open(kv.clone(), key).unwrap(),
        ReplicaConfig {
            max_block_bytes: 64 << 10,
            ..ReplicaConfig::default()
        },
    );
    let (mux, _) = connect(&w, &r);
    tokio::time::timeout(T, r.wait_for(|r| r.stats().blocks_refused == 1))
        .await
        .expect("the big block was served and refused");
    r.with(|r| {
        assert_eq!(r.log().length(), 12);
        assert_eq!(r.log().contiguous_length(), 10);
        assert!(!r.log().has(10) && !r.log().has(11));
    });
    assert_eq!(stored_blocks(&kv, &key), (0..10).collect::<Vec<_>>());
    // The writer broke no rule: it stays connected.
    assert!(!mux.is_closed());
}

#[tokio::test]
async fn a_download_limit_changed_on_a_live_session() {
    let (_, log) = writer(200);
    let key = *log.key();
    let w = shared(log, ReplicaConfig::default());
    let kv = Arc::new(MemoryStore::default());
    let r = shared(
        Log::open(kv.clone(), key).unwrap(),
        ReplicaConfig::default(),
    );
    r.set_download_limit(Some(100));
    let _conn = connect(&w, &r);
    tokio::time::timeout(
        T,
        r.wait_for(|r| r.log().length() == 200 && r.log().contiguous_length() == 100),
    )
    .await
    .unwrap();
    for start in (200..1200).step_by(100) {
        let batch: Vec<Vec<u8>> = (start..start + 100).map(entry).collect();
        w.append(&batch).unwrap();
    }
    tokio::time::timeout(T, r.wait_for(|r| r.log().length() == 1200))
        .await
        .unwrap();
    // Time for requests that should not be sent to be sent and answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored_blocks(&kv, &key), (0..100).collect::<Vec<_>>());
    assert_eq!(r.with(|r| r.stats().blocks_downloaded), 100);
    // Raised with nothing else going on: the download resumes at once.
    r.set_download_limit(None);
    complete(&r, 1200).await;
    assert_eq!(r.with(|r| r.log().get(1199).unwrap()).unwrap(), entry(1199));
}
