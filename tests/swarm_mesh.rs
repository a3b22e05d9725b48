//! A 20-peer mesh (issue 5, done-when 3): 19 Rust swarms in this process and one in a
//! child process join one topic as server and client on a Rust network on 127.0.0.1.
//! They converge to a full mesh with exactly one connection per pair: both ends of
//! every pair hold one open connection to each other and it is the same connection
//! (same Noise handshake hash). Then the child is killed (SIGKILL: no goodbye) and
//! restarted with the same key; it dials everyone again and the others replace their
//! dead connection with the new one (the existing one had already exchanged bytes both
//! ways), restoring the full mesh.

mod swarm_support;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intercom_crypto::KeyPair;
use intercom_hyperdht::ConnectionHandle;
use intercom_swarm::{JoinOptions, Swarm};
use serde_json::{json, Value};
use swarm_support::{rust_network, rust_swarm};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PEERS: usize = 20;
const CONVERGE: Duration = Duration::from_secs(90);

type Key = [u8; 32];

/// Current connection per remote key, as one peer sees it.
#[derive(Default)]
struct View {
    conns: HashMap<Key, (Vec<u8>, Option<ConnectionHandle>)>,
}

fn seed(i: usize) -> [u8; 32] {
    let mut s = [0x5e; 32];
    s[0] = i as u8;
    s
}

/// Keeps taking connections from `swarm`, recording the newest per remote key.
fn monitor(mut swarm: Swarm, view: Arc<Mutex<View>>) -> tokio::task::JoinHandle<Swarm> {
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Some(c) = swarm.accept().await {
            let hash = c.connection.info().handshake_hash.to_vec();
            let handle = c.connection.handle();
            view.lock()
                .unwrap()
                .conns
                .insert(c.public_key, (hash, Some(handle)));
            keep.push(c.connection); // keep both halves alive
        }
        swarm
    })
}

/// A peer in a child process: this test binary re-run with SWARM_MESH_PEER set.
struct ChildPeer {
    child: Child,
    view: Arc<Mutex<View>>,
}

impl ChildPeer {
    async fn spawn(boot: &str, topic: &Key, seed: &[u8; 32]) -> ChildPeer {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["mesh_peer_process", "--exact", "--ignored", "--nocapture"])
            .env("SWARM_MESH_PEER", boot)
            .env("SWARM_MESH_TOPIC", hex::encode(topic))
            .env("SWARM_MESH_SEED", hex::encode(seed))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn child peer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let view: Arc<Mutex<View>> = Arc::default();
        let v = view.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(j) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if j.get("ready").is_some() {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                } else if let Some(k) = j["conn"].as_str() {
                    let key: Key = hex::decode(k).unwrap().try_into().unwrap();
                    let hash = hex::decode(j["hash"].as_str().unwrap()).unwrap();
                    v.lock().unwrap().conns.insert(key, (hash, None));
                } else if let Some(k) = j["closed"].as_str() {
                    let key: Key = hex::decode(k).unwrap().try_into().unwrap();
                    let hash = hex::decode(j["hash"].as_str().unwrap()).unwrap();
                    let mut v = v.lock().unwrap();
                    if v.conns.get(&key).is_some_and(|(h, _)| *h == hash) {
                        v.conns.remove(&key);
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .expect("child peer ready in time")
            .expect("child peer ready");
        ChildPeer { child, view }
    }

    fn kill(mut self) {
        let _ = self.child.start_kill();
    }
}

/// Whether every pair of `peers` has exactly one live, shared connection.
fn full_mesh(keys: &[Key], views: &[Arc<Mutex<View>>]) -> Result<(), String> {
    for (i, a) in keys.iter().enumerate() {
        let va = views[i].lock().unwrap();
        for (j, b) in keys.iter().enumerate() {
            if i == j {
                continue;
            }
            let vb = views[j].lock().unwrap_or_else(|e| e.into_inner());
            let Some((ha, ca)) = va.conns.get(b) else {
                return Err(format!("{i} has no connection to {j}"));
            };
            let Some((hb, cb)) = vb.conns.get(a) else {
                return Err(format!("{j} has no connection to {i}"));
            };
            if ca.as_ref().is_some_and(ConnectionHandle::is_closed)
                || cb.as_ref().is_some_and(ConnectionHandle::is_closed)
            {
                return Err(format!("{i} <-> {j}: connection closed"));
            }
            if ha != hb {
                return Err(format!("{i} <-> {j}: two different connections"));
            }
        }
    }
    Ok(())
}

/// Live connections per peer.
fn live(views: &[Arc<Mutex<View>>]) -> Vec<usize> {
    views
        .iter()
        .map(|v| {
            v.lock()
                .unwrap()
                .conns
                .values()
                .filter(|(_, h)| !h.as_ref().is_some_and(ConnectionHandle::is_closed))
                .count()
        })
        .collect()
}

async fn converge(what: &str, keys: &[Key], views: &[Arc<Mutex<View>>]) -> Duration {
    let start = Instant::now();
    loop {
        let r = full_mesh(keys, views);
        let counts = live(views);
        if r.is_ok() && counts.iter().all(|&c| c == PEERS - 1) {
            return start.elapsed();
        }
        if start.elapsed() > CONVERGE {
            panic!("{what}: no full mesh after {CONVERGE:?}: {r:?}, open counts {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_peers_form_a_full_mesh_and_heal() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(Duration::from_secs(300), async {
        let (nodes, boot) = rust_network(8).await;
        let topic: Key = intercom_crypto::random_array();
        let mut views = Vec::new();
        let mut keys = Vec::new();
        let mut monitors = Vec::new();
        for i in 0..PEERS - 1 {
            let s = rust_swarm(&[boot], seed(i)).await;
            s.join(topic, JoinOptions::default()).await.unwrap();
            keys.push(s.public_key());
            let view: Arc<Mutex<View>> = Arc::default();
            views.push(view.clone());
            monitors.push(monitor(s, view));
        }
        let child_seed = seed(PEERS - 1);
        let child = ChildPeer::spawn(&boot.to_string(), &topic, &child_seed).await;
        keys.push(KeyPair::from_seed(&child_seed).public_key);
        views.push(child.view.clone());
        let took = converge("first mesh", &keys, &views).await;
        eprintln!("20 peers: full mesh in {took:?}");

        // Kill the child peer and start it again with the same key.
        child.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let child = ChildPeer::spawn(&boot.to_string(), &topic, &child_seed).await;
        let last = views.len() - 1;
        views[last] = child.view.clone();
        let took = converge("after restart", &keys, &views).await;
        eprintln!("restarted peer reconnected to all in {took:?}");

        drop(child);
        for m in monitors {
            m.abort();
        }
        for n in &nodes {
            n.destroy().await;
        }
    })
    .await
    .expect("mesh test within 300 s");
}

/// The child peer (run only when SWARM_MESH_PEER is set): one swarm that prints its
/// connections as JSON lines until stdin closes.
#[test]
#[ignore = "helper process of twenty_peers_form_a_full_mesh_and_heal"]
fn mesh_peer_process() {
    let Ok(boot) = std::env::var("SWARM_MESH_PEER") else {
        return;
    };
    let topic: Key = hex::decode(std::env::var("SWARM_MESH_TOPIC").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let seed: [u8; 32] = hex::decode(std::env::var("SWARM_MESH_SEED").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut swarm = rust_swarm(&[boot.parse().unwrap()], seed).await;
        swarm.join(topic, JoinOptions::default()).await.unwrap();
        println!("{}", json!({ "ready": true }));
        let stdin_closed = async {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        };
        tokio::pin!(stdin_closed);
        let mut keep = Vec::new();
        loop {
            tokio::select! {
                c = swarm.accept() => {
                    let Some(c) = c else { break };
                    let hash = hex::encode(c.connection.info().handshake_hash);
                    let key = hex::encode(c.public_key);
                    println!("{}", json!({ "conn": key, "hash": hash, "client": c.client }));
                    let handle = c.connection.handle();
                    tokio::spawn(async move {
                        let _ = handle.closed().await;
                        println!("{}", json!({ "closed": key, "hash": hash }));
                    });
                    keep.push(c.connection);
                }
                _ = &mut stdin_closed => break,
            }
        }
        swarm.destroy().await;
    });
}
