//! HyperDHT connections across languages on a 32-node JS testnet on 127.0.0.1 (issue 5,
//! step 1): a JS client connects to a Rust server by key, and a Rust client to a JS
//! server; both echo messages through the secret-stream started from the Noise IK
//! handshake.

mod dht_support;

use std::time::Duration;

use dht_support::{rust_node, JsDht};
use intercom_crypto::KeyPair;
use intercom_hyperdht::{ConnectOptions, ListenOptions};
use serde_json::json;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_and_rust_connect_both_ways() {
    let js = JsDht::spawn(&["testnet", "32"]).await;
    let boot = js.bootstrap();

    // JS client -> Rust server.
    let server_node = rust_node(&boot, false).await;
    let skp = KeyPair::from_seed(&[0x51; 32]);
    let mut server = server_node
        .listen(skp.clone(), ListenOptions::default())
        .await
        .expect("listen");
    let echo = tokio::spawn(async move {
        let mut conn = server.accept().await.expect("a connection");
        while let Ok(Some(m)) = conn.recv().await {
            if conn.send(&m).await.is_err() {
                break;
            }
        }
        (server, conn.remote_public_key())
    });
    let v = within(
        "js connect",
        js.call(json!({ "op": "connect", "publicKey": hex::encode(skp.public_key), "message": "hello rust" })),
    )
    .await;
    assert_eq!(v["echoed"], "hello rust", "{v}");
    let (server, _) = within("echo task", echo).await.unwrap();
    server.close().await;

    // Rust client -> JS server.
    let seed = [0x52; 32];
    let v = js
        .call(json!({ "op": "listen", "seed": hex::encode(seed) }))
        .await;
    let js_pk: [u8; 32] = hex::decode(v["publicKey"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let client_node = rust_node(&boot, false).await;
    let ckp = KeyPair::from_seed(&[0x53; 32]);
    let mut conn = within(
        "rust connect",
        client_node.connect(js_pk, ConnectOptions::new(ckp)),
    )
    .await
    .expect("connect to the JS server");
    assert_eq!(conn.remote_public_key(), js_pk);
    for i in 0..20usize {
        let msg = vec![i as u8; 100 + i * 3000];
        conn.send(&msg).await.unwrap();
        let mut got = Vec::new();
        // The JS echo writes back whatever chunks it reads: compare the byte stream.
        while got.len() < msg.len() {
            let m = within("echo", conn.recv())
                .await
                .unwrap()
                .expect("echo data");
            got.extend_from_slice(&m);
        }
        assert_eq!(got, msg);
    }
    client_node.destroy().await;
    server_node.destroy().await;
}
