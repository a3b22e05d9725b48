//! Live protomux interop over secret-stream on TCP 127.0.0.1 with the pinned JS modules:
//! two channels (each side opens one first, the other side pairs), three message types
//! (json, buffer, uint) on each, and channel closes seen across languages both ways.

mod common;

use std::time::Duration;

use common::NodePeer;
use intercom_encoding::{Reader, Writer};
use intercom_protomux::{Channel, ChannelEvent, ChannelOptions, DriverEvent, Mux, MuxConfig};
use intercom_secret_stream::{KeyPair, SecretStream, SecretStreamConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);

fn json_msg(v: &Value) -> Vec<u8> {
    let mut w = Writer::new();
    w.json(v);
    w.into_vec()
}

async fn next_event(ch: &mut Channel) -> ChannelEvent {
    tokio::time::timeout(WAIT, ch.recv())
        .await
        .expect("channel event in time")
        .expect("channel open")
}

async fn expect_message(ch: &mut Channel) -> (u32, Vec<u8>) {
    match next_event(ch).await {
        ChannelEvent::Message {
            message_type,
            payload,
        } => (message_type, payload),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn open(mux: &Mux, name: &str) -> Channel {
    let opts = ChannelOptions::new(format!("interop/{name}"))
        .with_id(format!("id-{name}").into_bytes())
        .with_handshake(json_msg(&json!({"from": "rust", "channel": name})));
    mux.open_channel(opts).await.expect("open channel")
}

/// Opened event, then one exchange of each message type.
async fn exercise(ch: &mut Channel, name: &str) {
    match next_event(ch).await {
        ChannelEvent::Opened { remote_handshake } => {
            let hs = Reader::new(&remote_handshake).json().unwrap();
            assert_eq!(hs, json!({"from": "js", "channel": name}));
        }
        other => panic!("{name}: expected Opened, got {other:?}"),
    }
    ch.send(0, &json_msg(&json!({"hello": name, "n": 1})))
        .await
        .unwrap();
    let (t, p) = expect_message(ch).await;
    assert_eq!(t, 0);
    assert_eq!(
        Reader::new(&p).json().unwrap(),
        json!({"hello": name, "n": 1, "echo": "js"})
    );

    let mut w = Writer::new();
    w.buffer(&[1, 2, 3, 250]);
    ch.send(1, w.as_slice()).await.unwrap();
    let (t, p) = expect_message(ch).await;
    assert_eq!(t, 1);
    assert_eq!(Reader::new(&p).buffer().unwrap(), &[1, 2, 3, 250]);

    let mut w = Writer::new();
    w.uint(70_000);
    ch.send(2, w.as_slice()).await.unwrap();
    let (t, p) = expect_message(ch).await;
    assert_eq!(t, 2);
    assert_eq!(Reader::new(&p).uint().unwrap(), 70_001);
}

async fn run(js_role: &str) {
    let mut js = NodePeer::spawn("wire-peer.js", &["mux", "listen", "0", js_role]);
    let port = js.port().await;
    let (r, w) = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
        .into_split();
    let kp = KeyPair::from_seed(&[0x52; 32]);
    let cfg = SecretStreamConfig::default();
    let stream = if js_role == "responder" {
        SecretStream::initiator(r, w, kp, cfg).await.unwrap()
    } else {
        SecretStream::responder(r, w, kp, cfg).await.unwrap()
    };
    let (reader, writer) = stream.split();
    let (mux, mut events) = Mux::new(reader, writer, MuxConfig::default());

    // JS opens `js_first` on its own; we open the other one first and pair for `js_first`.
    let (js_first, rust_first) = if js_role == "initiator" {
        ("alpha", "beta")
    } else {
        ("beta", "alpha")
    };
    mux.pair(
        &format!("interop/{js_first}"),
        Some(format!("id-{js_first}").as_bytes()),
    )
    .await
    .unwrap();
    let mut ours = open(&mux, rust_first).await;
    let request = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("pair request in time")
        .expect("mux alive");
    match request {
        DriverEvent::RemoteOpenRequest { protocol, id } => {
            assert_eq!(protocol, format!("interop/{js_first}"));
            assert_eq!(id.as_deref(), Some(format!("id-{js_first}").as_bytes()));
        }
        other => panic!("expected RemoteOpenRequest, got {other:?}"),
    }
    let mut theirs = open(&mux, js_first).await;
    assert!(ours.fully_opened().await && theirs.fully_opened().await);

    exercise(&mut ours, rust_first).await;
    exercise(&mut theirs, js_first).await;

    // JS closes alpha when asked; we see it closed by the remote.
    let (alpha, beta) = if rust_first == "alpha" {
        (&mut ours, &mut theirs)
    } else {
        (&mut theirs, &mut ours)
    };
    alpha
        .send(0, &json_msg(&json!({"cmd": "close"})))
        .await
        .unwrap();
    match next_event(alpha).await {
        ChannelEvent::Closed { by_remote } => assert!(by_remote, "alpha closed by JS"),
        other => panic!("expected alpha Closed, got {other:?}"),
    }
    js.until(|v| v["event"] == "close" && v["channel"] == "alpha" && v["remote"] == false)
        .await;

    // We close beta; JS sees a remote close.
    beta.close().await.unwrap();
    js.until(|v| v["event"] == "close" && v["channel"] == "beta" && v["remote"] == true)
        .await;
    mux.close().await;
}

#[tokio::test]
async fn protomux_interop_with_js_as_secret_stream_responder() {
    run("responder").await;
}

#[tokio::test]
async fn protomux_interop_with_js_as_secret_stream_initiator() {
    run("initiator").await;
}
