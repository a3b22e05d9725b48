//! The task-board app end to end: its own binary (the intercom peer with the TaskBoard
//! contract) on a loopback DHT, driven through the SC-Bridge.

#[path = "../../../../tests/sidechannel_support/mod.rs"]
mod sidechannel_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidechannel_support::{DhtNode, Peer, Ws};

async fn settled(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = ws.req(json!({"type": "subnet"})).await;
        if v["unconfirmedLength"] == 0 {
            return v;
        }
        assert!(Instant::now() < deadline, "not settled: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_board_runs_through_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let peer = Peer::start(
        dir.path(),
        "board",
        91,
        &dht.addr,
        &["--subnet-channel", "tasks"],
    );
    let mut ws = peer.ws().await;
    let info = ws.req(json!({"type": "subnet"})).await;
    assert_eq!(info["contract"], "task-board", "{info}");
    for op in [
        json!({"op": "add_admin", "address": peer.pubkey}),
        json!({"op": "enable_transactions"}),
    ] {
        let mut req = op.clone();
        req["type"] = json!("subnet_op");
        let r = ws.req(req).await;
        assert_eq!(r["type"], "subnet_op_result", "{r}");
    }
    settled(&mut ws).await;
    let r = ws
        .req(json!({"type": "tx", "command": {"op": "create_task", "title": "write docs", "reward": 5}}))
        .await;
    assert_eq!(r["appended"], true, "{r}");
    let bad = ws
        .req(json!({"type": "tx", "command": {"op": "create_task", "title": ""}}))
        .await;
    assert_eq!(bad["code"], "invalid_operation", "{bad}");
    let v = settled(&mut ws).await;
    assert_eq!(v["contract"], "task-board");
    let task = ws.req(json!({"type": "get", "key": "task/0"})).await;
    assert_eq!(task["value"]["title"], "write docs", "{task}");
}
