//! A live MCP session, driven over stdio as an MCP client does (initialize,
//! notifications/initialized, tools/list, tools/call, cancellation): two `intercom run`
//! peers on a loopback DHT, one `intercom mcp` process per agent attached to its peer's
//! bridge. A's `send_message` arrives in B's `wait_for_messages`; an empty wait returns
//! close to its timeout with progress notifications; a cancelled wait frees the server at
//! once; bad arguments are `isError` results naming the field; every stdout line is
//! JSON-RPC; end of stdin exits 0 within 1 s.

mod sidechannel_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidechannel_support::{DhtNode, Peer, Ws, BIN, TOKEN};

const ENTRY: &str = "0000intercom";
const TOOLS: [&str; 12] = [
    "info",
    "list_peers",
    "join_channel",
    "leave_channel",
    "open_channel",
    "send_message",
    "wait_for_messages",
    "read_inbox",
    "ack_messages",
    "subnet_tx",
    "subnet_get",
    "subnet_info",
];

/// An `intercom mcp` child driven over its stdin/stdout.
struct McpClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    /// Frames read that were not the awaited response (notifications, other responses).
    seen: Vec<Value>,
    next_id: u64,
}

impl McpClient {
    fn start(bridge: &str, agent: &str) -> McpClient {
        let mut child = Command::new(BIN)
            .args(["mcp", "--agent", agent])
            .args(["--sc-bridge-url", &format!("ws://{bridge}")])
            .env("SC_BRIDGE_TOKEN", TOKEN)
            .env_remove("SC_BRIDGE_TOKEN_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
                assert_eq!(v["jsonrpc"], "2.0", "not JSON-RPC: {line}");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        McpClient {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            next_id: 0,
        }
    }

    fn write(&mut self, v: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request; returns its id.
    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// The response to `id`, within `limit`.
    fn response(&mut self, id: u64, limit: Duration) -> Value {
        if let Some(i) = self
            .seen
            .iter()
            .position(|v| v["id"] == id && v.get("method").is_none())
        {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no response to {id} within {limit:?}"));
            if v["id"] == id && v.get("method").is_none() {
                return v;
            }
            self.seen.push(v);
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.response(id, Duration::from_secs(30))
    }

    /// `tools/call`; the result object.
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        r["result"].clone()
    }

    fn initialize(&mut self, version: &str) -> Value {
        let r = self.request(
            "initialize",
            json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "intercom-test", "version": "0"},
            }),
        );
        self.write(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r["result"].clone()
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON of a tool result's last text block.
fn payload(result: &Value) -> Value {
    let blocks = result["content"].as_array().unwrap();
    let text = blocks.last().unwrap()["text"].as_str().unwrap();
    serde_json::from_str(text).unwrap_or_else(|_| json!(text))
}

fn error_text(result: &Value) -> String {
    assert_eq!(
        result["isError"], true,
        "expected an error result: {result}"
    );
    result["content"][0]["text"].as_str().unwrap().to_owned()
}

/// Registers `agent` and acknowledges everything until no message came for a second.
async fn settle(ws: &mut Ws, agent: &str) {
    let mut newest = u64::MAX;
    loop {
        let s = ws.req(json!({"type": "inbox_status"})).await;
        let now = s["newestSeq"].as_u64().unwrap();
        if now == newest {
            return;
        }
        newest = now;
        ws.req(json!({"type": "inbox_ack", "agent": agent, "seq": newest}))
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_mcp_session_sends_waits_and_survives_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let dht = DhtNode::start(dir.path());
    let a = Peer::start(dir.path(), "a", 131, &dht.addr, &[]);
    let b = Peer::start(dir.path(), "b", 132, &dht.addr, &[]);
    let mut wa = a.ws().await;
    let mut wb = b.ws().await;
    wa.rendezvous(&mut wb).await;
    wa.send_until_peers(ENTRY, 1, |p| json!({"probe": p})).await;
    settle(&mut wb, "bob").await;

    // The handshake-era revision and a current one.
    let mut alice = McpClient::start(&a.bridge, "alice");
    let mut bob = McpClient::start(&b.bridge, "bob");
    let init = alice.initialize("2024-11-05");
    assert_eq!(init["protocolVersion"], "2024-11-05", "{init}");
    assert_eq!(init["serverInfo"]["name"], "intercom");
    let init = bob.initialize("2025-06-18");
    assert_eq!(init["protocolVersion"], "2025-06-18", "{init}");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");

    let list = bob.request("tools/list", json!({}));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, TOOLS);

    // An empty wait returns close to its timeout, reporting progress meanwhile.
    let started = Instant::now();
    let id = bob.send(
        "tools/call",
        json!({"name": "wait_for_messages", "arguments": {"timeout_ms": 6000},
               "_meta": {"progressToken": "w1"}}),
    );
    let r = bob.response(id, Duration::from_secs(30));
    let took = started.elapsed();
    assert_eq!(payload(&r["result"])["messages"], json!([]), "{r}");
    assert!(
        took >= Duration::from_millis(6000) && took < Duration::from_millis(6200),
        "an empty 6 s wait took {took:?}"
    );
    assert!(
        bob.seen.iter().any(
            |n| n["method"] == "notifications/progress" && n["params"]["progressToken"] == "w1"
        ),
        "no progress notification: {:?}",
        bob.seen
    );

    // A cancelled wait ends at once: the next wait is answered immediately.
    let id = bob.send(
        "tools/call",
        json!({"name": "wait_for_messages", "arguments": {"timeout_ms": 20000}}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let cancelled = Instant::now();
    bob.write(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": id, "reason": "test"}}),
    );
    let r = bob.call("wait_for_messages", json!({"timeout_ms": 0}));
    let freed = cancelled.elapsed();
    assert!(r["isError"] != true, "{r}");
    assert!(
        freed < Duration::from_millis(100),
        "the server was held {freed:?} after a cancel"
    );

    // A's send arrives in B's wait, marked as untrusted.
    let sent = payload(&alice.call("send_message", json!({"message": {"n": 1}})));
    assert_eq!(sent["type"], "sent", "{sent}");
    let r = bob.call("wait_for_messages", json!({"timeout_ms": 10000}));
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("untrusted"),
        "{r}"
    );
    let got = payload(&r);
    let messages = got["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{got}");
    assert_eq!(messages[0]["message"], json!({"n": 1}));
    assert_eq!(messages[0]["from"], a.pubkey);
    // The next wait acknowledges that batch: nothing pending after it.
    let r = bob.call("wait_for_messages", json!({"timeout_ms": 300}));
    assert_eq!(payload(&r)["messages"], json!([]), "{r}");
    let s = wb
        .req(json!({"type": "inbox_status", "agent": "bob"}))
        .await;
    assert_eq!(s["agents"][0]["pending"], 0, "{s}");
    // read_inbox does not acknowledge; ack_messages does.
    alice.call("send_message", json!({"message": "two"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = loop {
        let r = payload(&bob.call("read_inbox", json!({})));
        if let Some(m) = r["messages"].as_array().unwrap().first() {
            assert_eq!(m["message"], "two");
            break m["seq"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "message two never arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    let again = payload(&bob.call("read_inbox", json!({})));
    assert_eq!(again["messages"][0]["seq"], seq);
    let acked = payload(&bob.call("ack_messages", json!({"seq": seq})));
    assert_eq!(acked["acked"], seq, "{acked}");

    let peers = payload(&bob.call("list_peers", json!({})));
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .contains(&json!(a.pubkey)),
        "{peers}"
    );
    let info = payload(&bob.call("info", json!({})));
    assert_eq!(info["info"]["peerPubkey"], b.pubkey, "{info}");
    let subnet = payload(&bob.call("subnet_info", json!({})));
    assert_eq!(subnet["type"], "subnet", "{subnet}");

    // Bad input: results with isError naming the field; the server keeps serving.
    for (tool, args, field) in [
        (
            "wait_for_messages",
            json!({"timeout_ms": "5"}),
            "timeout_ms",
        ),
        (
            "wait_for_messages",
            json!({"timeout_ms": 300_001}),
            "timeout_ms",
        ),
        (
            "send_message",
            json!({"message": "x", "chanel": "typo"}),
            "chanel",
        ),
        ("send_message", json!({}), "message"),
        ("join_channel", json!({"channel": 7}), "channel"),
        ("ack_messages", json!({"seq": -3}), "seq"),
        ("subnet_get", json!({"key": "k", "proof": "yes"}), "proof"),
        ("no_such_tool", json!({}), "no_such_tool"),
    ] {
        let r = bob.call(tool, args.clone());
        let text = error_text(&r);
        assert!(text.contains(field), "{tool} {args} -> {text}");
    }
    assert!(bob.request("ping", json!({})).get("result").is_some());

    // End of stdin: exit 0 within 1 s.
    drop(bob.stdin.take());
    let closed = Instant::now();
    let status = loop {
        if let Some(status) = bob.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            closed.elapsed() < Duration::from_secs(1),
            "still running 1 s after stdin closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}
