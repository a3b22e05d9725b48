//! Live interop of intercom-udx with udx-native 1.21.3 (tests/node/udx-peer.js) over
//! 127.0.0.1: 50 MB each way with matching SHA-256 in both roles and END on both sides,
//! a lossy run (packets dropped in the Rust socket layer), messages, destroy in both
//! directions, and a byte-level check of what udx-native puts on the wire against a raw
//! UDP socket driven by our codec. Every test is bounded; node peers are killed on drop.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::NodePeer;
use intercom_udx::packet::{self, Header, FLAG_DATA, FLAG_END, FLAG_MESSAGE, FLAG_SACK};
use intercom_udx::{SocketConfig, StreamError, StreamStats, UdxSocket, UdxStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const MB50: u64 = 50 * 1000 * 1000;
const LIMIT: Duration = Duration::from_secs(120);
const RUST_ID: u32 = 1;
const JS_ID: u32 = 2;

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Rust side: socket + a JS peer connected to it + our stream connected to the peer.
async fn setup(cfg: SocketConfig, js_sends: u64, mode: &str) -> (UdxSocket, NodePeer, UdxStream) {
    let sock = UdxSocket::bind(lo(), cfg).await.unwrap();
    let port = sock.local_addr().port().to_string();
    let mut js = NodePeer::spawn(
        "udx-peer.js",
        &[
            &port,
            &JS_ID.to_string(),
            &RUST_ID.to_string(),
            &js_sends.to_string(),
            mode,
        ],
    );
    let js_port = js.port().await;
    let stream = sock
        .connect(RUST_ID, JS_ID, SocketAddr::from(([127, 0, 0, 1], js_port)))
        .unwrap();
    (sock, js, stream)
}

/// Writes `total` pseudo-random bytes, ends, returns their SHA-256 (and the writer).
async fn send_random<W: AsyncWriteExt + Unpin>(mut w: W, total: u64, seed: u64) -> (String, W) {
    let mut h = Sha256::new();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = ((total - sent) as usize).min(buf.len());
        for c in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        sent += n as u64;
    }
    w.shutdown().await.unwrap();
    (hex::encode(h.finalize()), w)
}

/// Reads to EOF, returns (bytes, SHA-256).
async fn recv_all<R: AsyncReadExt + Unpin>(mut r: R) -> (u64, String, R) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (n_total, hex::encode(h.finalize()), r);
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
}

/// Collects the JS peer's finish / end / close reports.
struct JsReport {
    finish: Option<(u64, String)>,
    end: Option<(u64, String)>,
    close_error: Option<String>,
}

async fn js_report(js: &mut NodePeer) -> JsReport {
    let mut r = JsReport {
        finish: None,
        end: None,
        close_error: None,
    };
    loop {
        let v = js.next().await;
        let sha = v["sha256"].as_str().unwrap_or_default().to_string();
        match v["event"].as_str() {
            Some("finish") => r.finish = Some((v["sent"].as_u64().unwrap(), sha)),
            Some("end") => r.end = Some((v["received"].as_u64().unwrap(), sha)),
            Some("close") => {
                r.close_error = v["err"].as_str().map(str::to_string);
                return r;
            }
            _ => {}
        }
    }
}

/// Both directions at once: Rust sends `rust_sends`, JS sends `js_sends`; returns the
/// Rust stream's counters.
async fn exchange(cfg: SocketConfig, rust_sends: u64, js_sends: u64) -> StreamStats {
    let t = Instant::now();
    let (sock, mut js, stream) = setup(cfg, js_sends, "normal").await;
    let (r, w) = tokio::io::split(stream);
    let sender = tokio::spawn(send_random(w, rust_sends, 0x1234));
    let receiver = tokio::spawn(recv_all(r));
    let report = js_report(&mut js).await;
    let (rust_sha, w) = sender.await.unwrap();
    let (got, got_sha, r) = receiver.await.unwrap();

    // JS -> Rust
    let (js_sent, js_sha) = report.finish.expect("JS saw its END acked");
    assert_eq!(js_sent, js_sends);
    assert_eq!(got, js_sends, "Rust received everything and then EOF");
    assert_eq!(got_sha, js_sha);
    // Rust -> JS
    let (js_got, js_got_sha) = report.end.expect("JS saw our END");
    assert_eq!(js_got, rust_sends);
    assert_eq!(js_got_sha, rust_sha);
    assert_eq!(report.close_error, None);
    assert!(js.wait().await, "node exited cleanly");
    eprintln!(
        "rust->js {} MB, js->rust {} MB in {:?}",
        rust_sends / 1_000_000,
        js_sends / 1_000_000,
        t.elapsed()
    );
    drop(sock);
    r.unsplit(w).stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sends_50mb_to_js() {
    tokio::time::timeout(LIMIT, exchange(SocketConfig::default(), MB50, 0))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sends_50mb_to_rust() {
    tokio::time::timeout(LIMIT, exchange(SocketConfig::default(), 0, MB50))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_50mb_at_once() {
    tokio::time::timeout(LIMIT, exchange(SocketConfig::default(), MB50, MB50))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_exchange_completes() {
    let cfg = SocketConfig {
        drop_probability: 0.02,
        ..SocketConfig::default()
    };
    let st = tokio::time::timeout(LIMIT, exchange(cfg, 10_000_000, 10_000_000))
        .await
        .expect("bounded");
    assert!(st.retransmits > 0, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_both_ways() {
    tokio::time::timeout(LIMIT, async {
        let (_sock, mut js, mut stream) = setup(SocketConfig::default(), 0, "idle").await;
        stream.send_message(b"hi from rust").unwrap();
        let v = js.until(|v| v["event"] == "message").await;
        assert_eq!(v["data"], "hi from rust");
        assert_eq!(stream.recv_message().await.unwrap(), b"echo:hi from rust");
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(stream.closed().await, Ok(()));
        let v = js.until(|v| v["event"] == "close").await;
        assert!(v["err"].is_null());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_destroy_resets_rust_stream() {
    tokio::time::timeout(LIMIT, async {
        let (_sock, mut js, mut stream) = setup(SocketConfig::default(), 0, "destroy").await;
        stream.write_all(&[7u8; 5000]).await.unwrap();
        assert_eq!(stream.closed().await, Err(StreamError::Reset));
        js.until(|v| v["event"] == "close").await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_destroy_resets_js_stream() {
    tokio::time::timeout(LIMIT, async {
        let (_sock, mut js, stream) = setup(SocketConfig::default(), 0, "idle").await;
        stream.send_message(b"x").unwrap();
        js.until(|v| v["event"] == "message").await;
        stream.destroy();
        let v = js.until(|v| v["event"] == "close").await;
        assert_eq!(v["err"], "ECONNRESET");
    })
    .await
    .expect("bounded");
}

/// udx-native against a raw UDP socket driven by our codec: headers byte for byte,
/// retransmission after a SACK, END in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_format_matches_udx_native() {
    tokio::time::timeout(LIMIT, async {
        let raw = UdpSocket::bind(lo()).await.unwrap();
        let port = raw.local_addr().unwrap().port().to_string();
        // JS stream 2 -> our id 1, sending 3000 bytes then END.
        let mut js = NodePeer::spawn("udx-peer.js", &[&port, "2", "1", "3000", "normal"]);
        let js_addr = SocketAddr::from(([127, 0, 0, 1], js.port().await));
        let mut buf = vec![0u8; 4096];
        let mut data: Vec<Option<Vec<u8>>> = Vec::new();
        let mut end_seq = None;
        // Collect the first flight.
        while end_seq.is_none() {
            let (n, from) = raw.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, js_addr);
            let p = packet::decode(&buf[..n]).unwrap();
            let h = p.header;
            assert_eq!(&buf[..2], &[0xff, 0x01]);
            assert_eq!(h.stream_id, 1);
            assert_eq!(h.recv_window, 4 << 20);
            assert_eq!(h.ack, 0);
            assert_eq!(h.flags & !(FLAG_DATA | FLAG_END), 0, "{h:?}");
            // Our encoder reproduces their header exactly.
            assert_eq!(&h.to_bytes()[..], &buf[..20]);
            let seq = h.seq as usize;
            if data.len() <= seq {
                data.resize(seq + 1, None);
            }
            data[seq] = Some(p.payload.to_vec());
            if h.flags & FLAG_END != 0 {
                end_seq = Some(h.seq);
            }
        }
        let end_seq = end_seq.unwrap();
        let total: usize = data.iter().flatten().map(Vec::len).sum();
        assert_eq!(total, 3000);

        // SACK only the last packet: udx-native must resend the others.
        let sack = Header {
            flags: FLAG_SACK,
            data_offset: 0,
            stream_id: 2,
            recv_window: 4 << 20,
            seq: 0,
            ack: 0,
        };
        let mut ack_pkt = sack.to_bytes().to_vec();
        packet::encode_sacks(&[(end_seq, end_seq + 1)], &mut ack_pkt);
        raw.send_to(&ack_pkt, js_addr).await.unwrap();
        let mut resent = std::collections::BTreeSet::new();
        while resent.len() < end_seq as usize {
            let (n, _) = raw.recv_from(&mut buf).await.unwrap();
            let p = packet::decode(&buf[..n]).unwrap();
            assert!(p.header.seq < end_seq, "sacked packet not resent");
            assert_eq!(Some(p.payload), data[p.header.seq as usize].as_deref());
            resent.insert(p.header.seq);
        }

        // Ack everything and send our END (seq 0): JS reports finish, end, then close.
        let fin = Header {
            flags: FLAG_END,
            data_offset: 0,
            stream_id: 2,
            recv_window: 4 << 20,
            seq: 0,
            ack: end_seq + 1,
        };
        raw.send_to(&fin.to_bytes(), js_addr).await.unwrap();
        let mut h = Sha256::new();
        for d in data.iter().flatten() {
            h.update(d);
        }
        let report = js_report(&mut js).await;
        assert_eq!(report.finish, Some((3000, hex::encode(h.finalize()))));
        assert_eq!(report.end.map(|e| e.0), Some(0));
        // Their ack of our END: a plain 20-byte header, seq = their next seq, ack = 1.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (n, _) = tokio::time::timeout_at(deadline.into(), raw.recv_from(&mut buf))
                .await
                .expect("ack of our END")
                .unwrap();
            let p = packet::decode(&buf[..n]).unwrap();
            if p.header.flags == 0 && p.header.ack == 1 {
                assert_eq!(n, 20);
                assert_eq!(p.header.seq, end_seq + 1);
                break;
            }
            assert_eq!(p.header.flags & FLAG_MESSAGE, 0);
        }
    })
    .await
    .expect("bounded");
}

/// Rust <-> Rust over two sockets, 50 MB each way at once, SHA-256 on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_rust_50mb_each_way() {
    tokio::time::timeout(LIMIT, async {
        let a = UdxSocket::bind(lo(), SocketConfig::default())
            .await
            .unwrap();
        let b = UdxSocket::bind(lo(), SocketConfig::default())
            .await
            .unwrap();
        let sa = a.connect(1, 2, b.local_addr()).unwrap();
        let sb = b.connect(2, 1, a.local_addr()).unwrap();
        let (ra, wa) = tokio::io::split(sa);
        let (rb, wb) = tokio::io::split(sb);
        let t = Instant::now();
        let tx_a = tokio::spawn(send_random(wa, MB50, 7));
        let tx_b = tokio::spawn(send_random(wb, MB50, 8));
        let rx_a = tokio::spawn(recv_all(ra));
        let rx_b = tokio::spawn(recv_all(rb));
        let (sha_a, sha_b) = (tx_a.await.unwrap().0, tx_b.await.unwrap().0);
        let (n, sha, _) = rx_b.await.unwrap();
        assert_eq!((n, sha), (MB50, sha_a));
        let (n, sha, _) = rx_a.await.unwrap();
        assert_eq!((n, sha), (MB50, sha_b));
        eprintln!("rust<->rust 2 x 50 MB in {:?}", t.elapsed());
    })
    .await
    .expect("bounded");
}

/// secret-stream (Noise XX + secretstream framing) over a UDX stream to the JS stack
/// (`@hyperswarm/secret-stream` on `udx-native`): handshake hashes agree and 10 MB echo
/// back intact.
async fn secret_stream_echo(rust_initiates: bool) {
    use intercom_secret_stream::{KeyPair, SecretStream, SecretStreamConfig};
    const TEN_MB: usize = 10 * 1024 * 1024;
    let sock = UdxSocket::bind(lo(), SocketConfig::default())
        .await
        .unwrap();
    let port = sock.local_addr().port().to_string();
    let role = if rust_initiates {
        "responder"
    } else {
        "initiator"
    };
    let mut js = NodePeer::spawn("udx-secret-peer.js", &[&port, "2", "1", role]);
    let js_port = js.port().await;
    let raw = sock
        .connect(RUST_ID, JS_ID, SocketAddr::from(([127, 0, 0, 1], js_port)))
        .unwrap();
    let (r, w) = tokio::io::split(raw);
    let kp = KeyPair::from_seed(&[0x52; 32]);
    let cfg = SecretStreamConfig::default();
    let stream = if rust_initiates {
        SecretStream::initiator(r, w, kp, cfg).await.unwrap()
    } else {
        SecretStream::responder(r, w, kp, cfg).await.unwrap()
    };
    let hs = js.next().await;
    assert_eq!(
        hs["handshake"].as_str().unwrap(),
        hex::encode(stream.handshake_hash())
    );
    let (mut reader, mut writer) = stream.split();
    let sender = tokio::spawn(async move {
        let mut h = Sha256::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..TEN_MB / 65536 {
            let m: Vec<u8> = (0..65536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            h.update(&m);
            writer.feed(&m).await.unwrap();
        }
        writer.flush().await.unwrap();
        (h.finalize(), writer)
    });
    let mut got = Sha256::new();
    let mut n = 0;
    while n < TEN_MB {
        let m = reader.recv().await.unwrap().expect("echo ended early");
        n += m.len();
        got.update(&m);
    }
    let (sent, mut writer) = sender.await.unwrap();
    assert_eq!(got.finalize(), sent, "echoed bytes differ");
    writer.end().await.unwrap();
    assert_eq!(reader.recv().await.unwrap(), None, "JS ends after we end");
    let done = js.until(|v| v.get("echoed").is_some()).await;
    assert_eq!(done["echoed"].as_u64().unwrap() as usize, TEN_MB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_stream_over_udx_with_js_as_initiator() {
    tokio::time::timeout(LIMIT, secret_stream_echo(true))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_stream_over_udx_with_js_as_responder() {
    tokio::time::timeout(LIMIT, secret_stream_echo(false))
        .await
        .expect("bounded");
}
