//! Driver tests: two muxes over an in-memory pair or uint24 framing on a tokio duplex, and
//! one mux against a hand-driven raw peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use intercom_protomux::{
    memory_pair, Channel, ChannelEvent, ChannelOptions, CoreConfig, DriverEvent, FrameReceiver,
    FrameSender, MemReceiver, MemSender, Mux, MuxConfig, MuxError, MuxEvents, Uint24Framed,
};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn config() -> MuxConfig {
    MuxConfig {
        core: CoreConfig::default().with_grace_ms(2000),
        ..MuxConfig::default()
    }
}

fn mem_muxes(config: MuxConfig) -> ((Mux, MuxEvents), (Mux, MuxEvents)) {
    let ((a_rx, a_tx), (b_rx, b_tx)) = memory_pair(16);
    (
        Mux::new(a_rx, a_tx, config.clone()),
        Mux::new(b_rx, b_tx, config),
    )
}

fn duplex_muxes(config: MuxConfig) -> ((Mux, MuxEvents), (Mux, MuxEvents)) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    let (a_rx, a_tx) = Uint24Framed::new(a_read, a_write).split();
    let (b_rx, b_tx) = Uint24Framed::new(b_read, b_write).split();
    (
        Mux::new(a_rx, a_tx, config.clone()),
        Mux::new(b_rx, b_tx, config),
    )
}

async fn recv(channel: &mut Channel) -> ChannelEvent {
    timeout(T, channel.recv())
        .await
        .expect("timed out waiting for a channel event")
        .expect("channel finished")
}

async fn expect_message(channel: &mut Channel, message_type: u32, payload: &[u8]) {
    assert_eq!(
        recv(channel).await,
        ChannelEvent::Message {
            message_type,
            payload: payload.to_vec()
        }
    );
}

async fn open(mux: &Mux, protocol: &str, id: Option<&[u8]>, handshake: &[u8]) -> Channel {
    let mut options = ChannelOptions::new(protocol).with_handshake(handshake);
    if let Some(id) = id {
        options = options.with_id(id);
    }
    mux.open_channel(options).await.unwrap()
}

async fn expect_opened(channel: &mut Channel, remote_handshake: &[u8]) {
    assert_eq!(
        recv(channel).await,
        ChannelEvent::Opened {
            remote_handshake: remote_handshake.to_vec()
        }
    );
    assert!(channel.fully_opened().await);
}

async fn next_event(events: &mut MuxEvents) -> DriverEvent {
    timeout(T, events.recv())
        .await
        .expect("timed out waiting for a mux event")
        .expect("event stream ended")
}

#[tokio::test]
async fn both_orders_of_opening_pair_up() {
    for a_first in [true, false] {
        let ((a, _ae), (b, _be)) = mem_muxes(config());
        let (mut ca, mut cb) = if a_first {
            let ca = open(&a, "chat", None, b"a-hs").await;
            tokio::time::sleep(Duration::from_millis(20)).await; // let B hold A's open
            (ca, open(&b, "chat", None, b"b-hs").await)
        } else {
            let cb = open(&b, "chat", None, b"b-hs").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            (open(&a, "chat", None, b"a-hs").await, cb)
        };
        expect_opened(&mut ca, b"b-hs").await;
        expect_opened(&mut cb, b"a-hs").await;
        ca.send(0, b"ping").await.unwrap();
        expect_message(&mut cb, 0, b"ping").await;
    }
}

#[tokio::test]
async fn simultaneous_opens_pair_up() {
    let ((a, _ae), (b, _be)) = mem_muxes(config());
    let (mut ca, mut cb) = tokio::join!(
        open(&a, "x", Some(b"k"), b"1"),
        open(&b, "x", Some(b"k"), b"2")
    );
    expect_opened(&mut ca, b"2").await;
    expect_opened(&mut cb, b"1").await;
    assert!(a.is_opened("x", Some(b"k")).await);
    assert!(!a.is_opened("x", None).await);
}

async fn exchange_three_types_on_two_channels(a: Mux, b: Mux) {
    let mut a1 = open(&a, "one", None, b"").await;
    let mut a2 = open(&a, "two", Some(&[2, 2]), b"").await;
    let mut b1 = open(&b, "one", None, b"").await;
    let mut b2 = open(&b, "two", Some(&[2, 2]), b"").await;
    for ch in [&mut a1, &mut a2, &mut b1, &mut b2] {
        expect_opened(ch, b"").await;
    }
    for i in 0..30u32 {
        let t = i % 3;
        a1.send(t, format!("a1-{i}").as_bytes()).await.unwrap();
        a2.send(t, format!("a2-{i}").as_bytes()).await.unwrap();
        b1.send(t, format!("b1-{i}").as_bytes()).await.unwrap();
        b2.send(t, format!("b2-{i}").as_bytes()).await.unwrap();
    }
    for i in 0..30u32 {
        let t = i % 3;
        expect_message(&mut b1, t, format!("a1-{i}").as_bytes()).await;
        expect_message(&mut b2, t, format!("a2-{i}").as_bytes()).await;
        expect_message(&mut a1, t, format!("b1-{i}").as_bytes()).await;
        expect_message(&mut a2, t, format!("b2-{i}").as_bytes()).await;
    }

    // Close one channel from each side.
    a1.close().await.unwrap();
    assert_eq!(
        recv(&mut a1).await,
        ChannelEvent::Closed { by_remote: false }
    );
    assert_eq!(
        recv(&mut b1).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(a1.recv().await.is_none());
    assert!(b1.recv().await.is_none());
    assert!(matches!(
        b1.send(0, b"late").await,
        Err(MuxError::ChannelClosed)
    ));

    b2.close().await.unwrap();
    assert_eq!(
        recv(&mut a2).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert_eq!(
        recv(&mut b2).await,
        ChannelEvent::Closed { by_remote: false }
    );
    assert!(!a.is_opened("two", Some(&[2, 2])).await);
}

#[tokio::test]
async fn messages_and_closes_over_memory() {
    let ((a, _ae), (b, _be)) = mem_muxes(config());
    exchange_three_types_on_two_channels(a, b).await;
}

#[tokio::test]
async fn messages_and_closes_over_uint24_duplex() {
    let ((a, _ae), (b, _be)) = duplex_muxes(config());
    exchange_three_types_on_two_channels(a, b).await;
}

#[tokio::test]
async fn large_messages_over_uint24_duplex() {
    let ((a, _ae), (b, _be)) = duplex_muxes(config());
    let (ca, mut cb) = tokio::join!(open(&a, "bulk", None, b""), open(&b, "bulk", None, b""));
    expect_opened(&mut cb, b"").await;
    let sender = ca.sender();
    let writer = tokio::spawn(async move {
        for i in 0..40u8 {
            let payload = vec![i; 256 * 1024 + usize::from(i)];
            sender.send(1, &payload).await.unwrap();
        }
    });
    for i in 0..40u8 {
        match recv(&mut cb).await {
            ChannelEvent::Message {
                message_type: 1,
                payload,
            } => {
                assert_eq!(payload.len(), 256 * 1024 + usize::from(i));
                assert!(payload.iter().all(|&b| b == i));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    drop(ca);
}

#[tokio::test]
async fn slow_reader_bounds_memory() {
    const MESSAGE: usize = 4096;
    const COUNT: usize = 2000;
    let config = MuxConfig {
        command_queue: 8,
        channel_queue_bytes: 64 * 1024,
        channel_queue_messages: 64,
        write_high_water: 32 * 1024,
        ..config()
    };
    let ((a, _ae), (b, _be)) = mem_muxes(config);
    let (ca, mut cb) = tokio::join!(open(&a, "flow", None, b""), open(&b, "flow", None, b""));
    expect_opened(&mut cb, b"").await;
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let sender = ca.sender();
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..COUNT {
                let mut payload = vec![0u8; MESSAGE];
                payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
                sender.send(0, &payload).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled_at = sent.load(Ordering::Relaxed);
    // Bounded: command queue + core write backlog + transport + receive queue, not 2000.
    assert!(stalled_at < 200, "writer got {stalled_at} messages ahead");
    assert!(cb.queued_bytes() <= 64 * 1024 + MESSAGE + 64);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sent.load(Ordering::Relaxed),
        stalled_at,
        "writer still progressing"
    );

    for i in 0..COUNT {
        match recv(&mut cb).await {
            ChannelEvent::Message { payload, .. } => {
                assert_eq!(payload.len(), MESSAGE);
                assert_eq!(payload[..8], (i as u64).to_le_bytes());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(cb.queued_bytes() <= 64 * 1024 + MESSAGE + 64);
    }
    writer.await.unwrap();
    assert_eq!(sent.load(Ordering::Relaxed), COUNT);
    drop(ca);
}

#[tokio::test]
async fn unclaimed_open_is_rejected_after_the_grace_period() {
    let config = MuxConfig {
        core: CoreConfig::default().with_grace_ms(100),
        ..MuxConfig::default()
    };
    let ((a, _ae), (_b, _be)) = mem_muxes(config);
    let mut ca = open(&a, "nobody", None, b"").await;
    let started = tokio::time::Instant::now();
    assert!(!timeout(T, ca.fully_opened()).await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert_eq!(
        recv(&mut ca).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(ca.recv().await.is_none());
}

#[tokio::test]
async fn pairing_reports_requests_and_accepts_or_rejects() {
    let ((a, _ae), (b, mut be)) = mem_muxes(config());
    b.pair("svc", None).await.unwrap();
    let mut ca = open(&a, "svc", Some(&[7]), b"hello").await;
    match next_event(&mut be).await {
        DriverEvent::RemoteOpenRequest { protocol, id } => {
            assert_eq!(protocol, "svc");
            assert_eq!(id.as_deref(), Some(&[7][..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut cb = open(&b, "svc", Some(&[7]), b"welcome").await;
    expect_opened(&mut cb, b"hello").await;
    expect_opened(&mut ca, b"welcome").await;

    let mut rejected = open(&a, "svc", Some(&[8]), b"").await;
    assert!(matches!(
        next_event(&mut be).await,
        DriverEvent::RemoteOpenRequest { .. }
    ));
    b.reject("svc", Some(&[8])).await.unwrap();
    assert_eq!(
        recv(&mut rejected).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(!rejected.fully_opened().await);
}

#[tokio::test]
async fn dropping_a_channel_closes_it() {
    let ((a, _ae), (b, _be)) = mem_muxes(config());
    let (ca, mut cb) = tokio::join!(open(&a, "d", None, b""), open(&b, "d", None, b""));
    expect_opened(&mut cb, b"").await;
    drop(ca);
    assert_eq!(
        recv(&mut cb).await,
        ChannelEvent::Closed { by_remote: true }
    );
}

#[tokio::test]
async fn graceful_close_closes_both_sides() {
    let ((a, mut ae), (b, mut be)) = duplex_muxes(config());
    let (mut ca, mut cb) = tokio::join!(open(&a, "c", None, b""), open(&b, "c", None, b""));
    expect_opened(&mut ca, b"").await;
    expect_opened(&mut cb, b"").await;
    ca.send(2, b"last words").await.unwrap();
    timeout(T, a.close()).await.unwrap();
    assert_eq!(
        recv(&mut ca).await,
        ChannelEvent::Closed { by_remote: false }
    );
    expect_message(&mut cb, 2, b"last words").await;
    assert_eq!(
        recv(&mut cb).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(matches!(
        next_event(&mut be).await,
        DriverEvent::Closed { error: None }
    ));
    assert!(matches!(
        next_event(&mut ae).await,
        DriverEvent::Closed { error: None }
    ));
    assert!(matches!(
        a.open_channel(ChannelOptions::new("c")).await,
        Err(MuxError::Closed)
    ));
}

#[tokio::test]
async fn destroy_drops_everything() {
    let ((a, mut ae), (b, mut be)) = mem_muxes(config());
    let (mut ca, mut cb) = tokio::join!(open(&a, "c", None, b""), open(&b, "c", None, b""));
    expect_opened(&mut ca, b"").await;
    a.destroy();
    assert_eq!(
        recv(&mut ca).await,
        ChannelEvent::Closed { by_remote: false }
    );
    assert!(matches!(
        next_event(&mut ae).await,
        DriverEvent::Closed { error: None }
    ));
    // B sees the transport end (maybe after A's open).
    let mut last = recv(&mut cb).await;
    if let ChannelEvent::Opened { .. } = last {
        last = recv(&mut cb).await;
    }
    assert_eq!(last, ChannelEvent::Closed { by_remote: true });
    assert!(matches!(
        next_event(&mut be).await,
        DriverEvent::Closed { .. }
    ));
}

/// One mux against a raw peer that reads and writes frames by hand.
fn raw_peer(config: MuxConfig) -> ((Mux, MuxEvents), (MemReceiver, MemSender)) {
    let ((a_rx, a_tx), raw) = memory_pair(64);
    (Mux::new(a_rx, a_tx, config), raw)
}

async fn raw_recv(raw: &mut MemReceiver) -> Vec<u8> {
    timeout(T, raw.recv()).await.unwrap().unwrap().unwrap()
}

#[tokio::test]
async fn transport_end_closes_channels() {
    let ((a, mut ae), (mut raw_rx, mut raw_tx)) = raw_peer(config());
    let mut c1 = open(&a, "p", None, b"").await;
    let mut c2 = open(&a, "q", None, b"").await;
    assert_eq!(raw_recv(&mut raw_rx).await, [0, 1, 1, 1, b'p', 0]);
    assert_eq!(raw_recv(&mut raw_rx).await, [0, 1, 2, 1, b'q', 0]);
    raw_tx.send(vec![0, 1, 1, 1, b'p', 0, 0xee]).await.unwrap();
    raw_tx.send(vec![1, 4, 0xab]).await.unwrap();
    expect_opened(&mut c1, &[0xee]).await;
    expect_message(&mut c1, 4, &[0xab]).await;
    raw_tx.end().await.unwrap();
    assert_eq!(
        recv(&mut c1).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert_eq!(
        recv(&mut c2).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(c1.recv().await.is_none());
    assert!(!c2.fully_opened().await);
    assert!(c1.send(0, b"x").await.is_err());
    assert!(matches!(
        next_event(&mut ae).await,
        DriverEvent::Closed { error: None }
    ));
    // A ended its side in turn, as JS does.
    assert!(timeout(T, raw_rx.recv()).await.unwrap().unwrap().is_none());
}

#[tokio::test]
async fn transport_error_closes_channels() {
    let (a, b) = tokio::io::duplex(1024);
    let (a_read, a_write) = tokio::io::split(a);
    let (a_rx, a_tx) = Uint24Framed::new(a_read, a_write).split();
    let (mux, mut events) = Mux::new(a_rx, a_tx, config());
    let mut ch = open(&mux, "p", None, b"").await;
    // Half a frame header, then the peer vanishes.
    let (_b_read, mut b_write) = tokio::io::split(b);
    tokio::io::AsyncWriteExt::write_all(&mut b_write, &[5, 0])
        .await
        .unwrap();
    drop(b_write);
    drop(_b_read);
    assert_eq!(
        recv(&mut ch).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(matches!(
        next_event(&mut events).await,
        DriverEvent::Closed {
            error: Some(MuxError::Io(_))
        }
    ));
}

#[tokio::test]
async fn protocol_error_destroys_the_mux() {
    let ((a, mut ae), (_raw_rx, raw_tx)) = raw_peer(config());
    let mut raw_tx = raw_tx;
    let mut ch = open(&a, "p", None, b"").await;
    raw_tx.send(vec![0, 1, 9, 1, b'p', 0]).await.unwrap(); // skips ahead: invalid
    assert_eq!(
        recv(&mut ch).await,
        ChannelEvent::Closed { by_remote: true }
    );
    assert!(matches!(
        next_event(&mut ae).await,
        DriverEvent::Closed {
            error: Some(MuxError::InvalidOpen(9))
        }
    ));
}

#[tokio::test]
async fn cork_sends_one_batch_frame() {
    let ((a, _ae), (mut raw_rx, mut raw_tx)) = raw_peer(config());
    let ch = open(&a, "p", None, b"").await;
    assert_eq!(raw_recv(&mut raw_rx).await, [0, 1, 1, 1, b'p', 0]);
    raw_tx.send(vec![0, 1, 1, 1, b'p', 0]).await.unwrap();
    ch.cork().await.unwrap();
    ch.send(0, b"a").await.unwrap();
    ch.send(1, b"bc").await.unwrap();
    ch.close().await.unwrap();
    ch.uncork().await.unwrap();
    assert_eq!(
        raw_recv(&mut raw_rx).await,
        [0, 0, 1, 2, 0, b'a', 3, 1, b'b', b'c', 0, 0, 2, 3, 1]
    );
}

#[tokio::test]
async fn ignored_remote_open_events_get_rejected_when_nobody_listens() {
    let ((a, ae), (mut raw_rx, mut raw_tx)) = raw_peer(config());
    a.pair("p", None).await.unwrap();
    drop(ae);
    raw_tx.send(vec![0, 1, 1, 1, b'p', 0]).await.unwrap();
    assert_eq!(raw_recv(&mut raw_rx).await, [0, 2, 1]);
}

#[tokio::test]
async fn throughput_smoke() {
    const TOTAL: usize = 32 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let ((a, _ae), (b, _be)) = mem_muxes(config());
    let (ca, mut cb) = tokio::join!(open(&a, "bulk", None, b""), open(&b, "bulk", None, b""));
    expect_opened(&mut cb, b"").await;
    let sender = ca.sender();
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            sender.send(0, &chunk).await.unwrap();
        }
    });
    let mut received = 0;
    while received < TOTAL {
        match recv(&mut cb).await {
            ChannelEvent::Message { payload, .. } => received += payload.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    eprintln!("32 MiB in {:?}", started.elapsed());
    drop(ca);
}
