//! Keep-alives over secret-stream: an idle mux with `keepalive` set sends empty messages
//! often enough that a peer with a read timeout stays connected, and one without
//! keep-alives is timed out.

use std::time::Duration;

use intercom_protomux::{ChannelEvent, ChannelOptions, DriverEvent, Mux, MuxConfig};
use intercom_secret_stream::{KeyPair, SecretStream, SecretStreamConfig};

async fn pair(
    keepalive: Option<Duration>,
) -> (
    (Mux, intercom_protomux::MuxEvents),
    (Mux, intercom_protomux::MuxEvents),
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    // The far side times out after 300 ms of silence.
    let strict = SecretStreamConfig {
        timeout: Some(Duration::from_millis(300)),
        ..SecretStreamConfig::default()
    };
    let (x, y) = tokio::join!(
        SecretStream::initiator(ar, aw, KeyPair::generate(), SecretStreamConfig::default()),
        SecretStream::responder(br, bw, KeyPair::generate(), strict)
    );
    let (xr, xw) = x.unwrap().split();
    let (yr, yw) = y.unwrap().split();
    let cfg = MuxConfig {
        keepalive,
        ..MuxConfig::default()
    };
    (
        Mux::new(xr, xw, cfg),
        Mux::new(yr, yw, MuxConfig::default()),
    )
}

#[tokio::test]
async fn keepalives_hold_an_idle_connection_open() {
    let ((a, _ae), (b, mut be)) = pair(Some(Duration::from_millis(100))).await;
    let ca = a.open_channel(ChannelOptions::new("idle")).await.unwrap();
    let mut cb = b.open_channel(ChannelOptions::new("idle")).await.unwrap();
    assert!(cb.fully_opened().await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!b.is_closed(), "peer timed out despite keep-alives");
    ca.send(0, b"still here").await.unwrap();
    loop {
        match cb.recv().await {
            Some(ChannelEvent::Message { payload, .. }) => {
                assert_eq!(payload, b"still here");
                break;
            }
            Some(ChannelEvent::Opened { .. }) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(tokio::time::timeout(Duration::from_millis(50), be.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn without_keepalives_the_strict_peer_times_out() {
    let ((a, _ae), (b, mut be)) = pair(None).await;
    let _ca = a.open_channel(ChannelOptions::new("idle")).await.unwrap();
    let _cb = b.open_channel(ChannelOptions::new("idle")).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(DriverEvent::Closed { error }) = be.recv().await {
                return error;
            }
        }
    })
    .await
    .expect("the strict side closes");
    assert!(closed.is_some(), "closed with a timeout error");
}
