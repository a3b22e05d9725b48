//! Loopback tests of the SC-Bridge server against a mock backend, using async-tungstenite's client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use intercom_sc_bridge::{
    Backend, BackendError, Bridge, BridgeConfig, BridgeError, CliResult, DropNotice, Event,
    Identity, JoinRequest, OpenRequest, RateLimit, SendReport, SendRequest, SidechannelMessage,
    Stats, Unattached,
};
use serde_json::{json, Value};
use tokio::net::TcpStream;

const TOKEN: &str = "test-token-0123456789";
const WAIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------------
// Mock backend
// ------------------------------------------------------------------------------------------------

#[derive(Default)]
struct MockState {
    calls: Mutex<Vec<Value>>,
    peers: AtomicUsize,
}

#[derive(Clone, Default)]
struct Mock(Arc<MockState>);

impl Mock {
    fn record(&self, v: Value) {
        self.0.calls.lock().unwrap().push(v);
    }
    fn calls(&self) -> Vec<Value> {
        self.0.calls.lock().unwrap().clone()
    }
    fn last_call(&self) -> Value {
        self.calls().last().cloned().unwrap_or(Value::Null)
    }
}

impl Backend for Mock {
    fn identity(&self) -> Identity {
        Identity {
            peer: Some("ab".repeat(32)),
            address: Some("trac1peer".into()),
            entry_channel: Some("0000intercom".into()),
        }
    }

    async fn send(&self, req: SendRequest) -> Result<SendReport, BackendError> {
        self.record(json!({"op":"send","channel":req.channel,"message":req.message,"invite":req.invite,"welcome":req.welcome}));
        match req.channel.as_str() {
            "denied" => Err(BackendError::Denied),
            "limited" => Err(BackendError::RateLimited),
            _ => Ok(SendReport {
                peers: self.0.peers.load(Ordering::SeqCst),
            }),
        }
    }

    async fn join(&self, req: JoinRequest) -> Result<(), BackendError> {
        self.record(
            json!({"op":"join","channel":req.channel,"invite":req.invite,"welcome":req.welcome}),
        );
        match req.channel.as_str() {
            "denied" => Err(BackendError::Denied),
            "broken" => Err(BackendError::Failed("boom".into())),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn leave(&self, channel: String) -> Result<bool, BackendError> {
        self.record(json!({"op":"leave","channel":channel}));
        Ok(channel != "unknown")
    }

    async fn open(&self, req: OpenRequest) -> Result<(), BackendError> {
        self.record(json!({"op":"open","channel":req.channel,"via":req.via,"invite":req.invite,"welcome":req.welcome}));
        if req.channel == "denied" {
            Err(BackendError::Denied)
        } else {
            Ok(())
        }
    }

    async fn stats(&self) -> Result<Stats, BackendError> {
        Ok(Stats {
            channels: vec!["0000intercom".into(), "x".into()],
            connection_count: 2,
            sidechannel_started: true,
            extra: Default::default(),
        })
    }

    fn info(&self) -> Option<Value> {
        Some(json!({"from":"backend"}))
    }

    async fn cli(&self, command: String) -> CliResult {
        self.record(json!({"op":"cli","command":command}));
        CliResult {
            ok: true,
            output: vec![format!("ran {command}")],
            error: None,
            result: json!({"echo": command}),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn config() -> BridgeConfig {
    BridgeConfig {
        port: 0,
        token: Some(TOKEN.into()),
        info: Some(json!({"peerPubkey":"ab","sidechannelEntry":"0000intercom"})),
        ..BridgeConfig::default()
    }
}

async fn start(cfg: BridgeConfig) -> (Bridge, Mock) {
    let mock = Mock::default();
    mock.0.peers.store(2, Ordering::SeqCst);
    let bridge = Bridge::bind(cfg, mock.clone()).await.expect("bind");
    (bridge, mock)
}

type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

struct Client {
    ws: Ws,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let (ws, _) = client_async(format!("ws://{addr}/"), tcp)
            .await
            .expect("ws handshake");
        Client { ws }
    }

    /// Connects and consumes `hello`.
    async fn connect_hello(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        assert_eq!(c.recv().await["type"], "hello");
        c
    }

    async fn authed(addr: SocketAddr) -> Client {
        let mut c = Client::connect_hello(addr).await;
        assert_eq!(
            c.req(json!({"type":"auth","token":TOKEN})).await,
            json!({"type":"auth_ok"})
        );
        c
    }

    async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// Next text frame as JSON.
    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("bridge sent invalid JSON")
                }
                Message::Close(f) => panic!("unexpected close: {f:?}"),
                _ => continue,
            }
        }
    }

    async fn req(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Waits for the close frame (or EOF), returning its code; panics on any text frame.
    async fn expect_close(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
                Some(Ok(Message::Text(t))) => panic!("unexpected frame before close: {t}"),
                Some(Ok(_)) => continue,
            }
        }
    }
}

fn err(text: &str, code: &str) -> Value {
    json!({"type":"error","error":text,"code":code})
}

fn err_id(id: i64, text: &str, code: &str) -> Value {
    json!({"id":id,"type":"error","error":text,"code":code})
}

async fn wait_for_clients(bridge: &Bridge, n: usize) {
    let deadline = Instant::now() + WAIT;
    while bridge.client_count() != n {
        assert!(
            Instant::now() < deadline,
            "client_count stuck at {}",
            bridge.client_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sc_event(channel: &str, id: &str, message: Value) -> Event {
    let payload =
        json!({"id":id,"from":"aa","origin":"aa","sig":"ff","ttl":1,"ts":1000,"message":message});
    SidechannelMessage::from_payload(channel, &payload, 0).into()
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn hello_then_auth_is_required() {
    let (bridge, _mock) = start(config()).await;
    let mut c = Client::connect(bridge.local_addr()).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"hello","peer":"ab".repeat(32),"address":"trac1peer","entryChannel":"0000intercom",
               "filter":"","requiresAuth":true})
    );
    // Every command before auth is refused, with the id echoed.
    for (i, t) in [
        "ping",
        "send",
        "join",
        "stats",
        "info",
        "cli",
        "subscribe",
        "bogus",
    ]
    .iter()
    .enumerate()
    {
        let id = i as i64 + 1;
        assert_eq!(
            c.req(json!({"id":id,"type":t,"channel":"x"})).await,
            err_id(id, "Unauthorized.", "unauthorized")
        );
    }
    // Wrong / missing / non-string token.
    assert_eq!(
        c.req(json!({"type":"auth","token":"nope"})).await,
        err("Unauthorized.", "unauthorized")
    );
    assert_eq!(
        c.req(json!({"id":3,"type":"auth"})).await,
        err_id(3, "Unauthorized.", "unauthorized")
    );
    assert_eq!(
        c.req(json!({"type":"auth","token":12})).await,
        err("Unauthorized.", "unauthorized")
    );
    assert_eq!(
        c.req(json!({"id":4,"type":"auth","token":TOKEN})).await,
        json!({"id":4,"type":"auth_ok"})
    );
    let pong = c.req(json!({"id":5,"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["id"], 5);
    assert!(pong["ts"].as_u64().unwrap() > 1_600_000_000_000);
    bridge.shutdown().await;
}

#[tokio::test]
async fn every_command_reply_shape() {
    let (bridge, mock) = start(BridgeConfig {
        cli_enabled: true,
        ..config()
    })
    .await;
    let mut c = Client::authed(bridge.local_addr()).await;

    // send
    assert_eq!(
        c.req(json!({"id":1,"type":"send","channel":" chan ","message":{"k":"v"}}))
            .await,
        json!({"id":1,"type":"sent","channel":"chan","peers":2})
    );
    assert_eq!(
        mock.last_call(),
        json!({"op":"send","channel":"chan","message":{"k":"v"},"invite":null,"welcome":null})
    );
    mock.0.peers.store(0, Ordering::SeqCst);
    assert_eq!(
        c.req(json!({"type":"send","channel":"chan","message":"hi"}))
            .await,
        json!({"type":"sent","channel":"chan","peers":0,"warning":"no_peers"})
    );
    assert_eq!(
        c.req(json!({"id":2,"type":"send","channel":"denied","message":"hi"}))
            .await,
        err_id(
            2,
            "Send denied (invite required or invalid).",
            "send_denied"
        )
    );
    assert_eq!(
        c.req(json!({"type":"send","channel":"limited","message":"hi"}))
            .await,
        err("Rate limited.", "rate_limited")
    );
    assert_eq!(
        c.req(json!({"type":"send","message":"hi"})).await,
        err("Missing channel.", "missing_field")
    );
    assert_eq!(
        c.req(json!({"type":"send","channel":"c"})).await,
        err("Missing message.", "missing_field")
    );
    assert_eq!(
        c.req(json!({"type":"send","channel":"c","message":"m","invite":"%%%"}))
            .await,
        err(
            "Invalid invite (expected JSON or base64).",
            "invalid_invite"
        )
    );
    assert_eq!(
        c.req(json!({"type":"send","channel":"c","message":"m","welcome":"{nope"}))
            .await,
        err(
            "Invalid welcome (expected JSON or base64).",
            "invalid_welcome"
        )
    );
    // Invite as a JSON string, welcome as base64 of JSON: both parsed; welcome merged into the invite.
    // base64 of {"w":1}
    let c_reply = c
        .req(json!({"type":"send","channel":"priv","message":"m","invite":"{\"i\":1}","welcome":"eyJ3IjoxfQ=="}))
        .await;
    assert_eq!(c_reply["type"], "sent");
    assert_eq!(
        mock.last_call(),
        json!({"op":"send","channel":"priv","message":"m","invite":{"i":1,"welcome":{"w":1}},"welcome":{"w":1}})
    );

    // join / leave / open
    assert_eq!(
        c.req(json!({"id":3,"type":"join","channel":"room","invite":{"i":2}}))
            .await,
        json!({"id":3,"type":"joined","channel":"room"})
    );
    assert_eq!(
        mock.last_call(),
        json!({"op":"join","channel":"room","invite":{"i":2},"welcome":null})
    );
    assert_eq!(
        c.req(json!({"type":"join","channel":"denied"})).await,
        err("Join denied (invite required or invalid).", "join_denied")
    );
    assert_eq!(
        c.req(json!({"type":"join","channel":"broken"})).await,
        err("Join failed: boom", "join_failed")
    );
    assert_eq!(
        c.req(json!({"id":4,"type":"leave","channel":"room"})).await,
        json!({"id":4,"type":"left","channel":"room","ok":true})
    );
    assert_eq!(
        c.req(json!({"type":"leave","channel":"unknown"})).await,
        json!({"type":"left","channel":"unknown","ok":false})
    );
    assert_eq!(
        c.req(json!({"type":"leave"})).await,
        err("Missing channel.", "missing_field")
    );
    assert_eq!(
        c.req(json!({"id":5,"type":"open","channel":"new"})).await,
        json!({"id":5,"type":"open_requested","channel":"new","via":null})
    );
    assert_eq!(
        c.req(json!({"type":"open","channel":"new","via":"0000intercom"}))
            .await,
        json!({"type":"open_requested","channel":"new","via":"0000intercom"})
    );
    assert_eq!(
        mock.last_call(),
        json!({"op":"open","channel":"new","via":"0000intercom","invite":null,"welcome":null})
    );
    assert_eq!(
        c.req(json!({"type":"open","channel":"denied"})).await,
        err(
            "Open request denied (invalid input or missing invite/welcome).",
            "open_denied"
        )
    );

    // stats / info
    assert_eq!(
        c.req(json!({"id":6,"type":"stats"})).await,
        json!({"id":6,"type":"stats","channels":["0000intercom","x"],"connectionCount":2,"sidechannelStarted":true})
    );
    assert_eq!(
        c.req(json!({"id":7,"type":"info"})).await,
        json!({"id":7,"type":"info","info":{"peerPubkey":"ab","sidechannelEntry":"0000intercom"}})
    );

    // subscriptions and filters
    assert_eq!(
        c.req(json!({"id":8,"type":"subscribe","channel":"a"}))
            .await,
        json!({"id":8,"type":"subscribed","channels":["a"]})
    );
    assert_eq!(
        c.req(json!({"type":"subscribe","channels":["b","a","c"]}))
            .await,
        json!({"type":"subscribed","channels":["a","b","c"]})
    );
    assert_eq!(
        c.req(json!({"type":"unsubscribe","channels":["a","zzz"]}))
            .await,
        json!({"type":"subscribed","channels":["b","c"]})
    );
    assert_eq!(
        c.req(json!({"type":"unsubscribe","channel":"b"})).await,
        json!({"type":"subscribed","channels":["c"]})
    );
    assert_eq!(
        c.req(json!({"id":9,"type":"set_filter","filter":"buy+btc|sell"}))
            .await,
        json!({"id":9,"type":"filter_set","filter":"buy+btc|sell"})
    );
    assert_eq!(
        c.req(json!({"type":"clear_filter"})).await,
        json!({"type":"filter_set","filter":""})
    );

    // cli (enabled here)
    assert_eq!(
        c.req(json!({"id":10,"type":"cli","command":"  /stats "}))
            .await,
        json!({"id":10,"type":"cli_result","command":"/stats","ok":true,"output":["ran /stats"],"error":null,
               "result":{"echo":"/stats"}})
    );
    assert_eq!(
        c.req(json!({"type":"cli"})).await,
        err("Missing command.", "missing_field")
    );

    // unknown type and id edge cases
    assert_eq!(
        c.req(json!({"id":11,"type":"frobnicate"})).await,
        err_id(11, "Unknown type: frobnicate", "unknown_type")
    );
    assert_eq!(
        c.req(json!({"id":12})).await,
        err_id(12, "Unknown type: undefined", "unknown_type")
    );
    assert_eq!(
        c.req(json!({"id":2.0,"type":"clear_filter"})).await["id"],
        json!(2)
    );
    let no_id = c.req(json!({"id":"7","type":"clear_filter"})).await;
    assert_eq!(no_id, json!({"type":"filter_set","filter":""}));
    assert_eq!(
        c.req(json!({"id":1.5,"type":"clear_filter"})).await,
        json!({"type":"filter_set","filter":""})
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn cli_disabled_by_default_and_info_falls_back_to_backend() {
    let (bridge, mock) = start(BridgeConfig {
        info: None,
        ..config()
    })
    .await;
    let mut c = Client::authed(bridge.local_addr()).await;
    assert_eq!(
        c.req(json!({"id":1,"type":"cli","command":"/get_keys"}))
            .await,
        err_id(1, "CLI over WS is disabled.", "cli_disabled")
    );
    assert!(mock.calls().is_empty(), "cli must not reach the backend");
    assert_eq!(
        c.req(json!({"type":"info"})).await,
        json!({"type":"info","info":{"from":"backend"}})
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn malformed_input_never_kills_the_connection() {
    let (bridge, _mock) = start(config()).await;
    let mut c = Client::authed(bridge.local_addr()).await;
    c.send_text("not json").await;
    assert_eq!(c.recv().await, err("Invalid JSON.", "invalid_json"));
    c.send_text("").await;
    assert_eq!(c.recv().await, err("Invalid JSON.", "invalid_json"));
    c.send_text("{\"id\":1,").await;
    assert_eq!(c.recv().await, err("Invalid JSON.", "invalid_json"));
    for v in ["42", "null", "\"str\"", "[{\"type\":\"ping\"}]"] {
        c.send_text(v).await;
        assert_eq!(c.recv().await, err("Invalid message.", "invalid_message"));
    }
    assert_eq!(
        c.req(json!({"type":42})).await,
        err("Unknown type: 42", "unknown_type")
    );
    // Binary frames carry JSON text, as in the reference.
    c.ws.send(Message::binary(br#"{"id":9,"type":"ping"}"#.to_vec()))
        .await
        .unwrap();
    let pong = c.recv().await;
    assert_eq!(
        (pong["id"].clone(), pong["type"].clone()),
        (json!(9), json!("pong"))
    );
    c.ws.send(Message::binary(vec![0xff, 0xfe, 0x00]))
        .await
        .unwrap();
    assert_eq!(c.recv().await, err("Invalid JSON.", "invalid_json"));
    // WebSocket pings are answered, and the session is still usable.
    c.ws.send(Message::Ping(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(c.req(json!({"id":10,"type":"ping"})).await["type"], "pong");
    bridge.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_rejected_and_closed() {
    let (bridge, _mock) = start(BridgeConfig {
        max_frame_bytes: 4096,
        ..config()
    })
    .await;
    let mut big = Client::authed(bridge.local_addr()).await;
    let mut other = Client::authed(bridge.local_addr()).await;
    let payload = "x".repeat(64 * 1024);
    big.send(json!({"type":"send","channel":"c","message":payload}))
        .await;
    let reply = big.recv().await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "frame_too_large");
    assert_eq!(big.expect_close().await, Some(CloseCode::Size));
    // Just under the cap is fine.
    let ok = "y".repeat(3000);
    assert_eq!(
        other
            .req(json!({"type":"send","channel":"c","message":ok}))
            .await["type"],
        "sent"
    );
    wait_for_clients(&bridge, 1).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn auth_timeout_and_auth_failure_cap_close_the_connection() {
    let (bridge, _mock) = start(BridgeConfig {
        auth_timeout: Some(Duration::from_millis(200)),
        max_auth_failures: 2,
        ..config()
    })
    .await;
    let mut idle = Client::connect_hello(bridge.local_addr()).await;
    assert_eq!(idle.recv().await, err("Auth timeout.", "auth_timeout"));
    assert_eq!(idle.expect_close().await, Some(CloseCode::Policy));

    let mut guesser = Client::connect_hello(bridge.local_addr()).await;
    assert_eq!(
        guesser.req(json!({"type":"auth","token":"a"})).await,
        err("Unauthorized.", "unauthorized")
    );
    assert_eq!(
        guesser.req(json!({"type":"auth","token":"b"})).await,
        err("Unauthorized.", "too_many_auth_failures")
    );
    assert_eq!(guesser.expect_close().await, Some(CloseCode::Policy));

    // An authenticated client is not subject to the auth timeout.
    let mut ok = Client::authed(bridge.local_addr()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ok.req(json!({"type":"ping"})).await["type"], "pong");
    bridge.shutdown().await;
}

#[tokio::test]
async fn events_reach_only_authenticated_matching_clients() {
    let (bridge, _mock) = start(config()).await;
    let addr = bridge.local_addr();
    let mut all = Client::authed(addr).await;
    let mut sub = Client::authed(addr).await;
    let mut filt = Client::authed(addr).await;
    let mut anon = Client::connect_hello(addr).await;
    assert_eq!(
        sub.req(json!({"type":"subscribe","channel":"a"})).await["type"],
        "subscribed"
    );
    assert_eq!(
        filt.req(json!({"type":"set_filter","filter":"buy+btc|sell"}))
            .await["type"],
        "filter_set"
    );

    let r = bridge.publish(sc_event("b", "m1", json!("I want to BUY some BTC")));
    assert_eq!((r.delivered, r.filtered, r.disconnected), (2, 1, 0)); // all + filt; sub filtered; anon not ready
    let r = bridge.publish(sc_event("a", "m2", json!({"text":"hold"})));
    assert_eq!((r.delivered, r.filtered), (2, 1)); // all + sub
    bridge.publish(sc_event("a", "m3", json!("SELL everything")));

    let expect = |channel: &str, id: &str, message: Value| {
        json!({"type":"sidechannel_message","channel":channel,"id":id,"from":"aa","origin":"aa","sig":"ff",
               "relayedBy":null,"ttl":1,"ts":1000,"message":message})
    };
    assert_eq!(
        all.recv().await,
        expect("b", "m1", json!("I want to BUY some BTC"))
    );
    assert_eq!(all.recv().await, expect("a", "m2", json!({"text":"hold"})));
    assert_eq!(
        all.recv().await,
        expect("a", "m3", json!("SELL everything"))
    );
    assert_eq!(sub.recv().await["id"], "m2");
    assert_eq!(sub.recv().await["id"], "m3");
    assert_eq!(filt.recv().await["id"], "m1");
    assert_eq!(filt.recv().await["id"], "m3");
    // Nothing was queued for the unauthenticated client: its next frame is the reply to this ping.
    assert_eq!(
        anon.req(json!({"type":"ping"})).await,
        err("Unauthorized.", "unauthorized")
    );

    // Drop notices: subscription applies, word filters do not.
    bridge.publish(Event::Drop(DropNotice {
        channel: "a".into(),
        reason: "rate_limited".into(),
        from: Some("cc".into()),
        detail: None,
        ts: 5,
    }));
    let drop_json = json!({"type":"sidechannel_drop","channel":"a","reason":"rate_limited","from":"cc","detail":null,"ts":5});
    assert_eq!(all.recv().await, drop_json);
    assert_eq!(sub.recv().await, drop_json);
    assert_eq!(filt.recv().await, drop_json);

    // Other frames go out as-is.
    bridge.publish(Event::Other {
        channel: None,
        body: json!({"type":"peer_count","count":3}),
    });
    assert_eq!(all.recv().await, json!({"type":"peer_count","count":3}));
    assert_eq!(sub.recv().await, json!({"type":"peer_count","count":3}));
    assert_eq!(filt.recv().await, json!({"type":"peer_count","count":3}));

    // Unsubscribing from everything means all channels again; leave also unsubscribes.
    assert_eq!(
        sub.req(json!({"type":"subscribe","channel":"z"})).await["channels"],
        json!(["a", "z"])
    );
    assert_eq!(
        sub.req(json!({"type":"leave","channel":"a"})).await["type"],
        "left"
    );
    assert_eq!(
        sub.req(json!({"type":"unsubscribe","channel":"z"})).await["channels"],
        json!([])
    );
    bridge.publish(sc_event("q", "m4", json!("x")));
    assert_eq!(sub.recv().await["id"], "m4");
    bridge.shutdown().await;
}

#[tokio::test]
async fn default_filter_and_filter_channels() {
    let (bridge, _mock) = start(BridgeConfig {
        filter: "alpha".into(),
        filter_channels: Some(vec!["filtered".into()]),
        ..config()
    })
    .await;
    let mut c = Client::connect(bridge.local_addr()).await;
    assert_eq!(c.recv().await["filter"], "alpha");
    assert_eq!(
        c.req(json!({"type":"auth","token":TOKEN})).await["type"],
        "auth_ok"
    );
    bridge.publish(sc_event("filtered", "drop-me", json!("beta")));
    bridge.publish(sc_event("open", "pass-through", json!("beta")));
    bridge.publish(sc_event("filtered", "match", json!("ALPHA")));
    assert_eq!(c.recv().await["id"], "pass-through");
    assert_eq!(c.recv().await["id"], "match");
    bridge.shutdown().await;
}

#[tokio::test]
async fn without_auth_everything_flows_and_auth_is_not_enabled() {
    assert!(matches!(
        Bridge::bind(
            BridgeConfig {
                port: 0,
                ..BridgeConfig::default()
            },
            Mock::default()
        )
        .await,
        Err(BridgeError::MissingToken)
    ));
    assert!(matches!(
        Bridge::bind(
            BridgeConfig {
                port: 0,
                token: Some(String::new()),
                ..BridgeConfig::default()
            },
            Mock::default()
        )
        .await,
        Err(BridgeError::MissingToken)
    ));
    let (bridge, _mock) = start(BridgeConfig {
        token: None,
        require_auth: false,
        ..config()
    })
    .await;
    let mut c = Client::connect(bridge.local_addr()).await;
    assert_eq!(c.recv().await["requiresAuth"], false);
    assert_eq!(
        c.req(json!({"type":"auth","token":"x"})).await,
        err("Auth not enabled.", "auth_not_enabled")
    );
    assert_eq!(c.req(json!({"type":"stats"})).await["type"], "stats");
    bridge.publish(sc_event("c", "m", json!("hi")));
    assert_eq!(c.recv().await["id"], "m");
    bridge.shutdown().await;
}

#[tokio::test]
async fn unattached_backend_is_not_ready() {
    let bridge = Bridge::bind(config(), Unattached).await.unwrap();
    let mut c = Client::connect(bridge.local_addr()).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"hello","peer":null,"address":null,"entryChannel":null,"filter":"","requiresAuth":true})
    );
    assert_eq!(
        c.req(json!({"type":"auth","token":TOKEN})).await["type"],
        "auth_ok"
    );
    for t in ["send", "join", "leave", "open", "stats"] {
        assert_eq!(
            c.req(json!({"type":t,"channel":"c","message":1})).await,
            err("Sidechannel not ready.", "not_ready")
        );
    }
    // info from config still works; ping too.
    assert_eq!(c.req(json!({"type":"info"})).await["type"], "info");
    assert_eq!(c.req(json!({"type":"ping"})).await["type"], "pong");
    bridge.shutdown().await;
}

#[tokio::test]
async fn rate_limit_and_backend_timeout() {
    let (bridge, _mock) = start(BridgeConfig {
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 3,
        }),
        backend_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut c = Client::authed(bridge.local_addr()).await; // auth used one token
    for id in 1..=4 {
        c.send(json!({"id":id,"type":"ping"})).await;
    }
    assert_eq!(c.recv().await["type"], "pong");
    assert_eq!(c.recv().await["type"], "pong");
    assert_eq!(c.recv().await, err_id(3, "Rate limited.", "rate_limited"));
    assert_eq!(c.recv().await, err_id(4, "Rate limited.", "rate_limited"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        c.req(json!({"id":5,"type":"join","channel":"slow"})).await,
        err_id(5, "Request timed out.", "timeout")
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn requests_are_answered_in_order() {
    let (bridge, mock) = start(config()).await;
    let mut c = Client::authed(bridge.local_addr()).await;
    for i in 0..50 {
        c.send(json!({"id":i,"type":"send","channel":"c","message":i}))
            .await;
    }
    for i in 0..50 {
        assert_eq!(
            c.recv().await,
            json!({"id":i,"type":"sent","channel":"c","peers":2})
        );
    }
    let sent: Vec<Value> = mock.calls().iter().map(|c| c["message"].clone()).collect();
    assert_eq!(sent, (0..50).map(Value::from).collect::<Vec<_>>());
    bridge.shutdown().await;
}

#[tokio::test]
async fn thousand_rapid_connections_leave_the_bridge_healthy() {
    let (bridge, _mock) = start(BridgeConfig {
        max_clients: 64,
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        tasks.spawn(async move {
            let Ok(tcp) = TcpStream::connect(addr).await else {
                return;
            };
            match i % 4 {
                0 => drop(tcp), // before the handshake
                1 => {
                    use tokio::io::AsyncWriteExt;
                    let mut tcp = tcp;
                    let _ = tcp
                        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\ngarbage")
                        .await;
                }
                _ => {
                    if let Ok((mut ws, _)) = client_async(format!("ws://{addr}/"), tcp).await {
                        if i % 4 == 3 {
                            let _ = ws
                                .send(Message::text("{\"type\":\"auth\",\"token\":\"wrong\"}"))
                                .await;
                            let _ = ws.send(Message::text("garbage")).await;
                        }
                        // dropped without a close handshake
                    }
                }
            }
        });
        if tasks.len() >= 32 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    wait_for_clients(&bridge, 0).await;
    let mut c = Client::authed(addr).await;
    assert_eq!(c.req(json!({"id":1,"type":"stats"})).await["type"], "stats");
    bridge.publish(sc_event("c", "after", json!("still alive")));
    assert_eq!(c.recv().await["id"], "after");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn slow_client_does_not_block_a_fast_one() {
    slow_client_is_cut_off(BridgeConfig {
        outbound_queue: 8,
        ..config()
    })
    .await;
}

#[tokio::test]
async fn slow_client_is_cut_off_by_queued_bytes_too() {
    slow_client_is_cut_off(BridgeConfig {
        outbound_queue_bytes: 2 << 20,
        ..config()
    })
    .await;
}

/// A client that stops reading is disconnected once its queue bound is hit, while a
/// reading one gets every one of 400 64 KiB events.
async fn slow_client_is_cut_off(cfg: BridgeConfig) {
    let (bridge, _mock) = start(cfg).await;
    let addr = bridge.local_addr();
    let _slow = Client::authed(addr).await; // authenticates, then never reads again
    let mut fast = Client::authed(addr).await;
    let blob = "z".repeat(64 * 1024);
    let mut disconnected = 0;
    let started = Instant::now();
    for i in 0..400 {
        let r = bridge.publish(sc_event("c", &i.to_string(), json!(blob)));
        disconnected += r.disconnected;
        let got = fast.recv().await;
        assert_eq!(got["id"], i.to_string());
    }
    assert_eq!(
        disconnected, 1,
        "the slow client should have been cut off exactly once"
    );
    wait_for_clients(&bridge, 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(fast.req(json!({"type":"ping"})).await["type"], "pong");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_slow_reader_is_told_why_it_was_disconnected() {
    let (bridge, _mock) = start(BridgeConfig {
        outbound_queue: 8,
        ..config()
    })
    .await;
    let mut slow = Client::authed(bridge.local_addr()).await;
    let blob = "z".repeat(64 * 1024);
    let mut sent = 0;
    while bridge
        .publish(sc_event("c", &sent.to_string(), json!(blob)))
        .disconnected
        == 0
    {
        sent += 1;
        assert!(sent < 2000, "never disconnected");
    }
    // Reading again now, it gets some of the events, then the reason and the close.
    let mut events = 0;
    let reason = loop {
        let msg = tokio::time::timeout(WAIT, slow.ws.next())
            .await
            .expect("timed out")
            .expect("connection ended without a reason")
            .expect("read error");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    break v;
                }
                assert_eq!(v["id"], events.to_string(), "events arrive in order");
                events += 1;
            }
            other => panic!("expected text frames before the close, got {other:?}"),
        }
    };
    assert!(events < sent, "{events} of {sent} events, then the reason");
    assert_eq!(reason["code"], "slow_consumer");
    assert_eq!(slow.expect_close().await, Some(CloseCode::Again));
    bridge.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_going_away() {
    let (bridge, _mock) = start(config()).await;
    let addr = bridge.local_addr();
    let mut c = Client::authed(addr).await;
    let mut anon = Client::connect_hello(addr).await;
    let publisher = bridge.publisher();
    bridge.shutdown().await;
    for client in [&mut c, &mut anon] {
        assert_eq!(client.recv().await["code"], "shutting_down");
        assert_eq!(client.expect_close().await, Some(CloseCode::Away));
    }
    assert_eq!(publisher.client_count(), 0);
    assert_eq!(
        publisher.publish(sc_event("c", "late", json!(1))).delivered,
        0
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener should be closed"
    );
}
