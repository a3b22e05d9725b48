//! Replication under load: a writer appending all the time while readers download from
//! it and from each other, so that peers are always at different lengths and hold
//! different parts of the tree. Every replication session must stay up (none may end on
//! a local failure such as "tree node N is missing from storage", which a reader asked
//! for an upgrade from a length it had skipped over used to raise) and every reader must
//! end with the whole log.

use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_log::{Log, Replica, ReplicaConfig, SharedReplica};
use intercom_protomux::{memory_pair, Mux, MuxConfig};
use intercom_stores::MemoryStore;
use tokio::task::JoinHandle;

const HANDSHAKE_HASH: [u8; 64] = [7; 64];
/// Blocks the writer appends while the readers replicate: enough for the readers to
/// fall behind the writer and each other many times, few enough to download in a
/// debug build in a few seconds.
const BLOCKS: u64 = 2000;
/// Readers, each connected to the writer and to every other reader.
const READERS: usize = 4;

/// Connects two replicas as the two ends of one connection; returns the two replication
/// sessions (each ends only when its channel or connection does).
fn connect(a: &SharedReplica, b: &SharedReplica) -> (Vec<JoinHandle<()>>, (Mux, Mux)) {
    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(64);
    let (mux_a, _) = Mux::new(a_rx, a_tx, MuxConfig::default());
    let (mux_b, _) = Mux::new(b_rx, b_tx, MuxConfig::default());
    let mut sessions = Vec::new();
    for (replica, mux, initiator) in [(a, &mux_a, true), (b, &mux_b, false)] {
        let replica = replica.clone();
        let mux = mux.clone();
        sessions.push(tokio::spawn(async move {
            replica.replicate(mux, initiator, &HANDSHAKE_HASH).await
        }));
    }
    (sessions, (mux_a, mux_b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_while_serving_never_abort_a_session() {
    let kv = Arc::new(MemoryStore::default());
    let log = Log::open_writer(kv, KeyPair::from_seed(&[11; 32])).unwrap();
    let key = *log.key();
    let writer = SharedReplica::new(Replica::new(log, ReplicaConfig::default()));
    let readers: Vec<SharedReplica> = (0..READERS)
        .map(|_| {
            let log = Log::open(Arc::new(MemoryStore::default()), key).unwrap();
            SharedReplica::new(Replica::new(log, ReplicaConfig::default()))
        })
        .collect();
    // Every reader from the writer and from every other reader.
    let mut sessions = Vec::new();
    let mut conns = Vec::new();
    for (i, r) in readers.iter().enumerate() {
        let (s, c) = connect(&writer, r);
        sessions.extend(s);
        conns.push(c);
        for other in &readers[i + 1..] {
            let (s, c) = connect(r, other);
            sessions.extend(s);
            conns.push(c);
        }
    }

    // An append of 1 to 16 blocks every millisecond or so, on a thread of its own, until
    // the log is BLOCKS long (about 0.3 s).
    let appender = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut length = 0;
            while length < BLOCKS {
                let batch: Vec<Vec<u8>> = (length..length + 1 + length % 16)
                    .map(|i| format!("block {i} {}", "x".repeat((i % 40) as usize)).into_bytes())
                    .collect();
                length = writer.append(&batch).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            length
        })
    };
    while !appender.is_finished() {
        if let Some(ended) = sessions.iter().position(JoinHandle::is_finished) {
            panic!("replication session {ended} ended while the writer was appending");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let length = appender.join().unwrap();
    // About a second in a debug build; the timeout only bounds a failing run.
    for (i, r) in readers.iter().enumerate() {
        let done = tokio::time::timeout(
            Duration::from_secs(20),
            r.wait_for(|r| r.log().contiguous_length() == length),
        )
        .await;
        let (l, c) = r.with(|r| (r.log().length(), r.log().contiguous_length()));
        assert!(
            done.is_ok(),
            "reader {i}: length {l}, contiguous {c}, writer at {length}"
        );
    }
    if let Some(ended) = sessions.iter().position(JoinHandle::is_finished) {
        panic!("replication session {ended} ended under load");
    }
    for r in &readers {
        assert_eq!(r.with(|r| r.log().verify_all().unwrap()), length);
    }
}
