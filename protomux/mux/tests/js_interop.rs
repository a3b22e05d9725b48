//! Live interop with the JS protomux module over uint24-framed TCP (no encryption), using
//! the pinned packages in the workspace's `tests/node_modules` (the test command installs
//! them) and the peer script tests/node/protomux-echo-peer.js.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use intercom_protomux::{
    Channel, ChannelEvent, ChannelOptions, DriverEvent, Mux, MuxConfig, Uint24Framed,
};
use tokio::io::AsyncBufReadExt;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

async fn recv(channel: &mut Channel) -> ChannelEvent {
    timeout(T, channel.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn talks_to_js_protomux() {
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests");
    let mut child = tokio::process::Command::new("node")
        .arg(node_dir.join("node/protomux-echo-peer.js"))
        .current_dir(&node_dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = timeout(T, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("node exited");
        if let Some(port) = line.strip_prefix("PORT ") {
            break port.parse().unwrap();
        }
    };
    let log = tokio::spawn(async move {
        let mut log = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
        }
        log
    });

    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (read, write) = socket.into_split();
    let (rx, tx) = Uint24Framed::new(read, write).split();
    let (mux, mut events) = Mux::new(rx, tx, MuxConfig::default());

    let mut echo = mux
        .open_channel(
            ChannelOptions::new("echo")
                .with_id([1, 2])
                .with_handshake(*b"rs-hs"),
        )
        .await
        .unwrap();
    assert_eq!(
        recv(&mut echo).await,
        ChannelEvent::Opened {
            remote_handshake: b"js-hs".to_vec()
        }
    );

    // JS opened "js-first" first; we attach well inside the grace period.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut first = mux
        .open_channel(ChannelOptions::new("js-first").with_handshake(*b"y"))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut first).await,
        ChannelEvent::Opened {
            remote_handshake: b"x".to_vec()
        }
    );
    for (message_type, payload) in [(1, "early1"), (0, "early2"), (1, "early3")] {
        assert_eq!(
            recv(&mut first).await,
            ChannelEvent::Message {
                message_type,
                payload: payload.as_bytes().to_vec()
            }
        );
    }
    assert_eq!(
        recv(&mut first).await,
        ChannelEvent::Closed { by_remote: true }
    );

    // Nothing on the JS side: rejected at once.
    let mut nobody = mux
        .open_channel(ChannelOptions::new("nobody"))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut nobody).await,
        ChannelEvent::Closed { by_remote: true }
    );

    // A corked batch (JS answers with a batch too), then messages bigger than MAX_BATCH / 2.
    let big = vec![9u8; 5 * 1024 * 1024];
    echo.cork().await.unwrap();
    for i in 0..100u32 {
        echo.send(i % 3, &i.to_le_bytes()).await.unwrap();
    }
    echo.uncork().await.unwrap();
    for i in 0..3u32 {
        echo.send(i, &big).await.unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(
            recv(&mut echo).await,
            ChannelEvent::Message {
                message_type: (i + 1) % 3,
                payload: i.to_le_bytes().to_vec()
            }
        );
    }
    for i in 0..3u32 {
        match recv(&mut echo).await {
            ChannelEvent::Message {
                message_type,
                payload,
            } => {
                assert_eq!(message_type, (i + 1) % 3);
                assert!(payload == big);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // 64 MiB echoed in 64 KiB messages.
    let started = std::time::Instant::now();
    let sender = echo.sender();
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..1024 {
            sender.send(0, &chunk).await.unwrap();
        }
    });
    for _ in 0..1024 {
        match recv(&mut echo).await {
            ChannelEvent::Message {
                message_type: 1,
                payload,
            } => assert_eq!(payload.len(), 65536),
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    eprintln!("64 MiB echoed through JS in {:?}", started.elapsed());

    timeout(T, mux.close()).await.unwrap();
    assert!(matches!(
        timeout(T, events.recv()).await.unwrap(),
        Some(DriverEvent::Closed { error: None })
    ));
    timeout(T, child.wait()).await.unwrap().unwrap();
    let log = log.await.unwrap();
    eprintln!("{}", log.join("\n"));
    assert!(log.contains(&"JS: pair request 0102".to_string()));
    assert!(log.contains(&"JS: echo opened, remote handshake rs-hs".to_string()));
    assert!(log.contains(&"JS: js-first opened, remote handshake y".to_string()));
    assert!(log.contains(&"JS: ghost id freed true".to_string()));
    assert!(log.contains(&"JS: echo closed remote=true echoed=1127".to_string()));
    assert!(log.contains(&"JS: stream closed".to_string()));
}
