//! Live interop of the wire layer against the pinned JS modules over TCP on 127.0.0.1:
//! Noise XX/IK in both roles, secret-stream echo of 10 MB in both roles, and (in
//! mux_interop.rs) protomux on top.

mod common;

use common::NodePeer;
use intercom_secret_stream::{Handshake, KeyPair, Pattern, SecretStream, SecretStreamConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const JS_SEED: [u8; 32] = [0x4a; 32];
const RUST_SEED: [u8; 32] = [0x52; 32];

async fn connect_to(js: &mut NodePeer) -> TcpStream {
    let port = js.port().await;
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Runs a raw Noise handshake over uint24 frames, Rust side.
async fn rust_noise(
    sock: &mut TcpStream,
    pattern: Pattern,
    initiator: bool,
    remote: Option<[u8; 32]>,
) -> (intercom_secret_stream::HandshakeResult, Vec<String>) {
    let mut hs = Handshake::new(
        pattern,
        initiator,
        KeyPair::from_seed(&RUST_SEED),
        &[],
        remote,
    )
    .unwrap();
    let mut payloads = Vec::new();
    let mut step = 0;
    while !hs.is_complete() {
        if hs.is_our_turn() {
            let m = hs.send(format!("rust payload {step}").as_bytes()).unwrap();
            step += 1;
            let len = (m.len() as u32).to_le_bytes();
            sock.write_all(&len[..3]).await.unwrap();
            sock.write_all(&m).await.unwrap();
        } else {
            let mut len = [0u8; 4];
            sock.read_exact(&mut len[..3]).await.unwrap();
            let mut m = vec![0u8; u32::from_le_bytes(len) as usize];
            sock.read_exact(&mut m).await.unwrap();
            payloads.push(String::from_utf8(hs.recv(&m).unwrap()).unwrap());
            step += 1;
        }
    }
    (hs.result().unwrap().clone(), payloads)
}

#[tokio::test]
async fn noise_handshakes_complete_with_js_in_both_roles() {
    let js_pub = KeyPair::from_seed(&JS_SEED).public_key;
    let rust_pub = KeyPair::from_seed(&RUST_SEED).public_key;
    for pattern in [Pattern::XX, Pattern::IK] {
        for rust_initiates in [true, false] {
            let pname = if pattern == Pattern::XX { "XX" } else { "IK" };
            let js_role = if rust_initiates {
                "responder"
            } else {
                "initiator"
            };
            let rust_hex = hex::encode(rust_pub);
            let mut args = vec!["noise", "listen", "0", pname, js_role];
            if pattern == Pattern::IK && !rust_initiates {
                args.push(&rust_hex);
            }
            let mut js = NodePeer::spawn("wire-peer.js", &args);
            let mut sock = connect_to(&mut js).await;
            let remote = (pattern == Pattern::IK && rust_initiates).then_some(js_pub);
            let (ours, payloads) = rust_noise(&mut sock, pattern, rust_initiates, remote).await;
            let theirs = js.next().await;
            let ctx = format!("{pname} rust_initiates={rust_initiates}");
            assert_eq!(
                hex::encode(ours.hash),
                theirs["hash"].as_str().unwrap(),
                "{ctx}: handshake hash"
            );
            assert_eq!(
                hex::encode(ours.tx),
                theirs["rx"].as_str().unwrap(),
                "{ctx}: our tx is their rx"
            );
            assert_eq!(
                hex::encode(ours.rx),
                theirs["tx"].as_str().unwrap(),
                "{ctx}: our rx is their tx"
            );
            assert_eq!(
                hex::encode(ours.remote_public_key),
                hex::encode(js_pub),
                "{ctx}"
            );
            assert_eq!(
                theirs["remotePublicKey"].as_str().unwrap(),
                hex::encode(rust_pub),
                "{ctx}"
            );
            assert!(
                payloads.iter().all(|p| p.starts_with("js payload")),
                "{ctx}: {payloads:?}"
            );
            let js_payloads = theirs["payloads"].as_array().unwrap();
            assert!(
                !js_payloads.is_empty()
                    && js_payloads
                        .iter()
                        .all(|p| p.as_str().unwrap().starts_with("rust payload")),
                "{ctx}"
            );
        }
    }
}

const TEN_MB: usize = 10 * 1024 * 1024;

/// Deterministic test data in 64 KiB messages.
fn payload(i: usize) -> Vec<u8> {
    (0..65536)
        .map(|j| ((i * 7919 + j * 31) % 251) as u8)
        .collect()
}

/// Sends 10 MB through the JS echo peer and checks the SHA-256 of what comes back.
async fn echo_through_js(rust_initiates: bool) {
    let role = if rust_initiates {
        "responder"
    } else {
        "initiator"
    };
    let mut js = NodePeer::spawn("wire-peer.js", &["echo", "listen", "0", role]);
    let (r, w) = connect_to(&mut js).await.into_split();
    let kp = KeyPair::from_seed(&RUST_SEED);
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
    assert_eq!(
        hs["remotePublicKey"].as_str().unwrap(),
        hex::encode(stream.public_key())
    );
    assert_eq!(
        hex::encode(stream.remote_public_key()),
        hex::encode(KeyPair::from_seed(&JS_SEED).public_key)
    );
    let (mut reader, mut writer) = stream.split();
    let sender = tokio::spawn(async move {
        let mut h = Sha256::new();
        for i in 0..TEN_MB / 65536 {
            let m = payload(i);
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
    assert_eq!(n, TEN_MB);
    assert_eq!(got.finalize(), sent, "echoed bytes differ");
    writer.end().await.unwrap();
    assert_eq!(reader.recv().await.unwrap(), None, "JS ends after we end");
    let done = js.until(|v| v.get("echoed").is_some()).await;
    assert_eq!(done["echoed"].as_u64().unwrap() as usize, TEN_MB);
}

#[tokio::test]
async fn secret_stream_echoes_10mb_through_js_as_initiator() {
    echo_through_js(true).await;
}

#[tokio::test]
async fn secret_stream_echoes_10mb_through_js_as_responder() {
    echo_through_js(false).await;
}

/// JS sends 10 MB to a Rust echo server and checks the SHA-256 itself.
async fn js_sends_through_rust(rust_initiates: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let role = if rust_initiates {
        "responder"
    } else {
        "initiator"
    };
    let size = TEN_MB.to_string();
    let mut js = NodePeer::spawn("wire-peer.js", &["send", "connect", &port, role, &size]);
    let (sock, _) = listener.accept().await.unwrap();
    let (r, w) = sock.into_split();
    let kp = KeyPair::from_seed(&RUST_SEED);
    let cfg = SecretStreamConfig::default();
    let stream = if rust_initiates {
        SecretStream::initiator(r, w, kp, cfg).await.unwrap()
    } else {
        SecretStream::responder(r, w, kp, cfg).await.unwrap()
    };
    let (mut reader, mut writer) = stream.split();
    let echo = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(m) = reader.recv().await.unwrap() {
            n += m.len();
            writer.send(&m).await.unwrap();
        }
        writer.end().await.unwrap();
        n
    });
    let report = js.until(|v| v.get("sentSha256").is_some()).await;
    assert_eq!(report["bytes"].as_u64().unwrap() as usize, TEN_MB);
    assert_eq!(
        report["sentSha256"], report["receivedSha256"],
        "JS got back different bytes"
    );
    assert_eq!(echo.await.unwrap(), TEN_MB);
}

#[tokio::test]
async fn js_streams_10mb_through_rust_as_responder() {
    js_sends_through_rust(false).await;
}

#[tokio::test]
async fn js_streams_10mb_through_rust_as_initiator() {
    js_sends_through_rust(true).await;
}
