//! The bridge against local attackers (issue 20): floods of unauthenticated connections, token guessing across
//! connections, browser origins, weak tokens, pre-auth byte budgets and the authenticated slot budget. Loopback
//! only; every flood is bounded in count and time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use intercom_sc_bridge::{
    AuthThrottleConfig, Bridge, BridgeConfig, BridgeError, RateLimit, Unattached, WeakToken,
};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "3f9c0b7e21d84a6f5c0e9b1a7d2f4e6881c5d0aa";
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// The two flood tests take turns: each alone already loads a 2-core machine.
static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config() -> BridgeConfig {
    BridgeConfig {
        port: 0,
        token: Some(TOKEN.into()),
        ..BridgeConfig::default()
    }
}

async fn start(cfg: BridgeConfig) -> Bridge {
    Bridge::bind(cfg, Unattached).await.expect("bind")
}

/// A TCP connection from the loopback address `127.0.0.<source>`.
async fn tcp_from(source: u8, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
        0,
    ))?;
    socket.connect(addr).await
}

async fn upgrade(tcp: TcpStream, addr: SocketAddr) -> Result<Ws, WsError> {
    client_async(format!("ws://{addr}/"), tcp)
        .await
        .map(|(ws, _)| ws)
}

async fn recv(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn req(ws: &mut Ws, v: Value) -> Option<Value> {
    ws.send(Message::text(v.to_string())).await.ok()?;
    recv(ws).await
}

/// Waits for the close frame, returning its code (`None` on EOF).
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for the close")
        {
            None | Some(Err(_)) => return None,
            Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
            Some(Ok(_)) => continue,
        }
    }
}

/// A real agent: TCP connect, upgrade, `hello`, `auth`, `auth_ok`; the time all of it took.
async fn agent_auth(addr: SocketAddr) -> (Duration, Ws) {
    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.expect("agent connect");
    let mut ws = upgrade(tcp, addr).await.expect("agent upgrade");
    assert_eq!(recv(&mut ws).await.expect("hello")["type"], "hello");
    let reply = req(&mut ws, json!({"type":"auth","token":TOKEN}))
        .await
        .expect("auth reply");
    assert_eq!(reply, json!({"type":"auth_ok"}));
    (started.elapsed(), ws)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One attacker connection held open: every fourth stays raw TCP, every fourth sends half an upgrade request,
/// the rest upgrade and sit on their `hello` without authenticating.
/// `opened` counts its connects, `ended` the connections the bridge closed.
async fn hold_one(
    i: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
) {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let held = async move {
        match i % 4 {
            0 => {
                let mut tcp = tcp;
                let mut buf = [0u8; 64];
                // Returns when the bridge closes it.
                let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
            }
            1 => {
                let mut tcp = tcp;
                let _ = tcp
                    .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
                    .await;
                let mut buf = [0u8; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
            }
            _ => {
                if let Ok(mut ws) = upgrade(tcp, addr).await {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
        }
        ended.fetch_add(1, Ordering::Relaxed);
    };
    tokio::select! {
        _ = held => {}
        _ = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(20)).await } } => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unauthenticated_connections_never_delay_an_agent() {
    let _turn = FLOODS.lock().await;
    // Long deadlines here, so that only the pending budget sheds the flood while it is measured, however slowly a
    // loaded machine opens it (the deadlines have their own test).
    let bridge = start(BridgeConfig {
        auth_timeout: Some(Duration::from_secs(60)),
        handshake_timeout: Duration::from_secs(60),
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    let opening = Instant::now();
    for i in 0..1000 {
        flood.spawn(hold_one(
            i,
            addr,
            stop.clone(),
            opened.clone(),
            ended.clone(),
        ));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Wait until all 1,000 were accepted (each counted once at TCP connect).
    let deadline = Instant::now() + WAIT;
    while opened.load(Ordering::Relaxed) < 1000 {
        assert!(Instant::now() < deadline, "flood could not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... and the bridge has taken them all from its accept queue: what it did not shed is its pending budget
    // (or the count of connections the attacker still sees open has not moved for 300 ms).
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let open = opened.load(Ordering::Relaxed) - ended.load(Ordering::Relaxed);
        if open <= 64 || (open == last && since.elapsed() > Duration::from_millis(300)) {
            break;
        }
        if open != last {
            (last, since) = (open, Instant::now());
        }
        assert!(Instant::now() < deadline, "{:?}", bridge.guard_stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = bridge.guard_stats();
    let flood_took = opening.elapsed();
    // The flood fills the whole pending budget while the agents come.
    assert_eq!(stats.pending, 64, "{stats:?} after {flood_took:?}");
    assert!(
        stats.pending_evicted >= 500,
        "the flood overflowed the budget: {stats:?}"
    );

    // Phase 1: the flood is held (what the attacker kept open stays open until evicted).
    let mut held = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..20 {
        let (took, ws) = agent_auth(addr).await;
        held.push(took);
        agents.push(ws);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held_stats = bridge.guard_stats();
    // The flood still holds the pending budget (the first agent shed one of it; the agents then left it).
    assert_eq!(held_stats.pending, 63, "{held_stats:?}");

    // Phase 2: the attacker re-opens every connection the bridge closes, for 3 s (about 1,000 in flight).
    let churn_stop = Arc::new(AtomicBool::new(false));
    let mut churn = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (stop, churn_stop) = (stop.clone(), churn_stop.clone());
        let (opened, ended) = (opened.clone(), ended.clone());
        churn.spawn(async move {
            while !churn_stop.load(Ordering::Relaxed) {
                hold_one(i, addr, stop.clone(), opened.clone(), ended.clone()).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Here the attacker's new connections can shed the agent's before it authenticates (it competes with the
    // flood for the pending budget), so the agent retries as any agent would; measured, not bounded at 100 ms.
    let mut churned = Vec::new();
    let mut tries = 0;
    let churn_started = Instant::now();
    while churn_started.elapsed() < Duration::from_secs(3) {
        let started = Instant::now();
        loop {
            tries += 1;
            if let Some((_, ws)) = agent_from(1, addr).await {
                agents.push(ws);
                break;
            }
            assert!(started.elapsed() < WAIT, "the agent never got in");
        }
        churned.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    churn_stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let reopened = opened.load(Ordering::Relaxed) - 1000;
    while churn.join_next().await.is_some() {}
    while flood.join_next().await.is_some() {}

    held.sort();
    churned.sort();
    eprintln!(
        "auth_ok latency with 1,000 held unauthenticated connections: p50 {:?} max {:?} ({} agents); \
         with the attacker re-opening what is closed ({} re-opened in 3.5 s): p50 {:?} max {:?} ({} agents, {} tries); {:?}",
        percentile(&held, 0.5),
        held.last().unwrap(),
        held.len(),
        reopened,
        percentile(&churned, 0.5),
        churned.last().unwrap(),
        churned.len(),
        tries,
        bridge.guard_stats(),
    );
    assert!(
        *held.last().unwrap() < Duration::from_millis(100),
        "held flood: {held:?}"
    );
    // (Each agent got in within WAIT, asserted above; how fast is reported, not bounded: it depends on how much
    // CPU the attacker, in this same process, leaves.)
    // Every agent is still served.
    for ws in &mut agents {
        assert_eq!(
            req(ws, json!({"type":"ping"})).await.unwrap()["type"],
            "pong"
        );
    }
    assert_eq!(bridge.client_count(), agents.len());
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_throttled_across_connections_and_sources() {
    let _turn = FLOODS.lock().await;
    let bridge = start(config()).await;
    let addr = bridge.local_addr();
    // 10,000 wrong tokens: 500 connections (spread over 10 source addresses, 127.0.0.1-10) making 20 guesses
    // each, reconnecting when closed after 5 failures; bounded at 8 s.
    const WINDOW: Duration = Duration::from_secs(8);
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut guessers = tokio::task::JoinSet::new();
    for i in 0..500u32 {
        let answered = answered.clone();
        guessers.spawn(async move {
            let source = (i % 10) as u8 + 1;
            let mut guesses = 0;
            'conn: while guesses < 20 && started.elapsed() < WINDOW {
                let Ok(tcp) = tcp_from(source, addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok(mut ws) = upgrade(tcp, addr).await else {
                    continue;
                };
                if recv(&mut ws).await.is_none() {
                    continue;
                }
                while guesses < 20 && started.elapsed() < WINDOW {
                    guesses += 1;
                    let guess = format!("wrong-{i}-{guesses}-0123456789abcdef");
                    let sent = ws.send(Message::text(
                        json!({"type":"auth","token":guess}).to_string(),
                    ));
                    if sent.await.is_err() {
                        continue 'conn;
                    }
                    let left = WINDOW.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, recv(&mut ws)).await {
                        Ok(Some(r)) if r["type"] == "error" => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            if r["code"] == "too_many_auth_failures" {
                                continue 'conn;
                            }
                        }
                        _ => continue 'conn,
                    }
                }
            }
        });
    }
    // Meanwhile agents with the right token get in: one from an address of its own (it waits behind at most
    // one attempt per flooding source), one sharing a flooding address (its pending connection may be shed with
    // the flood's, so it retries like any agent would).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (agent_took, mut agent) = agent_from(20, addr).await.expect("own address");
    let shared_started = Instant::now();
    let mut tries = 0;
    let (shared_took, mut shared) = loop {
        tries += 1;
        if let Some(done) = agent_from(3, addr).await {
            break done;
        }
        assert!(
            // The guessers stop at WINDOW at the latest.
            shared_started.elapsed() < WINDOW + WAIT,
            "{tries} tries"
        );
    };
    let shared_total = shared_started.elapsed();
    while guessers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let stats = bridge.guard_stats();
    let rate = stats.auth_failures as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{} wrong tokens compared in {elapsed:?} = {rate:.0}/s ({} answered to the guessers); during the flood \
         an agent's auth_ok took {agent_took:?} from its own address, {shared_took:?} from a flooding one \
         ({tries} tries, {shared_total:?} in all); {stats:?}",
        stats.auth_failures,
        answered.load(Ordering::Relaxed)
    );
    assert!(agent_took < Duration::from_secs(1), "{agent_took:?}");
    // The global bucket: 200 burst + 200/s.
    let allowed = 200.0 + 200.0 * elapsed.as_secs_f64();
    assert!(
        (stats.auth_failures as f64) <= allowed + 5.0,
        "{} > {allowed}",
        stats.auth_failures
    );
    assert!(rate <= 300.0, "{rate}/s");
    for ws in [&mut agent, &mut shared] {
        assert_eq!(
            req(ws, json!({"type":"ping"})).await.unwrap()["type"],
            "pong"
        );
    }
    bridge.shutdown().await;
}

/// An agent connecting from `127.0.0.<source>`: the time to `auth_ok`, or `None` if its connection was shed.
async fn agent_from(source: u8, addr: SocketAddr) -> Option<(Duration, Ws)> {
    let started = Instant::now();
    let tcp = tcp_from(source, addr).await.ok()?;
    let mut ws = upgrade(tcp, addr).await.ok()?;
    if recv(&mut ws).await?["type"] != "hello" {
        return None;
    }
    let r = req(&mut ws, json!({"type":"auth","token":TOKEN})).await?;
    assert_eq!(r["type"], "auth_ok", "{r}");
    Some((started.elapsed(), ws))
}

#[tokio::test]
async fn the_per_source_bucket_slows_one_address() {
    let bridge = start(BridgeConfig {
        max_auth_failures: 0,
        auth_throttle: Some(AuthThrottleConfig {
            per_source: RateLimit {
                per_second: 20,
                burst: 5,
            },
            global: RateLimit {
                per_second: 1000,
                burst: 1000,
            },
        }),
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    let mut ws = upgrade(TcpStream::connect(addr).await.unwrap(), addr)
        .await
        .unwrap();
    recv(&mut ws).await.unwrap();
    let started = Instant::now();
    for _ in 0..25 {
        let r = req(&mut ws, json!({"type":"auth","token":"x"}))
            .await
            .unwrap();
        assert_eq!(r["code"], "unauthorized");
    }
    // 5 at once, then 20 at 20/s.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Another source is not slowed by the first one's failures.
    let mut other = upgrade(tcp_from(2, addr).await.unwrap(), addr)
        .await
        .unwrap();
    recv(&mut other).await.unwrap();
    let t = Instant::now();
    let r = req(&mut other, json!({"type":"auth","token":"x"}))
        .await
        .unwrap();
    assert_eq!(r["code"], "unauthorized");
    assert!(t.elapsed() < Duration::from_millis(40), "{:?}", t.elapsed());
    // The right token from the throttled source goes through within one refill.
    let t = Instant::now();
    assert_eq!(
        req(&mut ws, json!({"type":"auth","token":TOKEN}))
            .await
            .unwrap()["type"],
        "auth_ok"
    );
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    bridge.shutdown().await;
}

async fn upgrade_with_origin(addr: SocketAddr, origin: Option<&str>) -> Result<Ws, WsError> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    client_async(request, tcp).await.map(|(ws, _)| ws)
}

#[tokio::test]
async fn browser_origins_are_refused_unless_listed() {
    let bridge = start(BridgeConfig {
        allowed_origins: vec![
            "http://localhost:3000".into(),
            "https://app.example/".into(),
        ],
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    // No Origin: a local agent.
    let mut ws = upgrade_with_origin(addr, None).await.unwrap();
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "hello");
    // Listed (case and trailing slash do not matter).
    for origin in ["http://localhost:3000", "HTTPS://APP.EXAMPLE"] {
        let mut ws = upgrade_with_origin(addr, Some(origin)).await.unwrap();
        assert_eq!(recv(&mut ws).await.unwrap()["type"], "hello");
    }
    // Unlisted, the opaque origin, and the bridge's own origin (no page is served yet): 403.
    let own = format!("http://{addr}");
    for origin in [
        "http://evil.example",
        "null",
        "http://localhost:3001",
        own.as_str(),
    ] {
        match upgrade_with_origin(addr, Some(origin)).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403, "{origin}"),
            other => panic!("{origin}: expected 403, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(bridge.guard_stats().origin_refused, 4);
    bridge.shutdown().await;

    // The bridge's own origin, once it serves a page.
    let bridge = start(BridgeConfig {
        allow_own_origin: true,
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    let own = format!("http://localhost:{}", addr.port());
    let mut ws = upgrade_with_origin(addr, Some(&own)).await.unwrap();
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "hello");
    assert!(upgrade_with_origin(addr, Some("http://evil.example"))
        .await
        .is_err());
    bridge.shutdown().await;

    let bad = Bridge::bind(
        BridgeConfig {
            allowed_origins: vec!["localhost:3000".into()],
            ..config()
        },
        Unattached,
    )
    .await;
    assert!(matches!(bad, Err(BridgeError::InvalidOrigin(_))), "{bad:?}");
}

#[tokio::test]
async fn weak_tokens_are_refused_at_bind() {
    for (token, expected) in [
        ("0123456789abcde", WeakToken::TooShort(15)),
        ("secret", WeakToken::TooShort(6)),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", WeakToken::Repetitive(1)),
    ] {
        let err = Bridge::bind(
            BridgeConfig {
                token: Some(token.into()),
                ..config()
            },
            Unattached,
        )
        .await
        .unwrap_err();
        match &err {
            BridgeError::WeakToken(w) => assert_eq!(w, &expected),
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("openssl rand -hex 32"), "{text}");
        assert!(text.contains("--sc-bridge-token-file"), "{text}");
    }
}

#[tokio::test]
async fn pending_connections_cost_little_and_are_shed() {
    let bridge = start(BridgeConfig {
        max_pending: 2,
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    // Too many bytes before auth: closed.
    let mut big = upgrade(TcpStream::connect(addr).await.unwrap(), addr)
        .await
        .unwrap();
    recv(&mut big).await.unwrap();
    let _ = big
        .send(Message::text(
            json!({"type":"auth","token":"x".repeat(100_000)}).to_string(),
        ))
        .await;
    assert_eq!(close_code(&mut big).await, None, "dropped without a word");
    let deadline = Instant::now() + WAIT;
    while bridge.pending_count() != 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bridge.guard_stats().pre_auth_overflows, 1);

    // The budget of 2: a third pending connection evicts the oldest.
    let mut first = upgrade(TcpStream::connect(addr).await.unwrap(), addr)
        .await
        .unwrap();
    recv(&mut first).await.unwrap();
    let mut second = upgrade(TcpStream::connect(addr).await.unwrap(), addr)
        .await
        .unwrap();
    recv(&mut second).await.unwrap();
    let (_, mut agent) = agent_auth(addr).await;
    assert_eq!(close_code(&mut first).await, None);
    assert_eq!(
        req(&mut second, json!({"type":"auth","token":TOKEN}))
            .await
            .unwrap()["type"],
        "auth_ok"
    );
    assert_eq!(bridge.guard_stats().pending_evicted, 1);
    assert_eq!(bridge.pending_count(), 0);
    assert_eq!(
        req(&mut agent, json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
    bridge.shutdown().await;
}

#[tokio::test]
async fn the_auth_deadline_covers_the_upgrade_and_is_short_by_default() {
    assert_eq!(
        BridgeConfig::default().auth_timeout,
        Some(Duration::from_secs(5))
    );
    let bridge = start(BridgeConfig {
        auth_timeout: Some(Duration::from_millis(300)),
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    // Never upgrades: closed at the deadline.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut raw, &mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(bridge.pending_count(), 0);
    bridge.shutdown().await;
}

#[tokio::test]
async fn authenticated_slots_are_separate_from_pending_ones() {
    let bridge = start(BridgeConfig {
        max_clients: 1,
        ..config()
    })
    .await;
    let addr = bridge.local_addr();
    let (_, mut first) = agent_auth(addr).await;
    // Unauthenticated connections do not need a client slot.
    let mut waiting = upgrade(TcpStream::connect(addr).await.unwrap(), addr)
        .await
        .unwrap();
    assert_eq!(recv(&mut waiting).await.unwrap()["type"], "hello");
    let r = req(&mut waiting, json!({"type":"auth","token":TOKEN}))
        .await
        .unwrap();
    assert_eq!(r["code"], "too_many_clients", "{r}");
    assert_eq!(close_code(&mut waiting).await, Some(CloseCode::Again));
    assert_eq!(bridge.guard_stats().clients_refused, 1);
    assert_eq!(
        req(&mut first, json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
    drop(first);
    // The slot frees when the client leaves.
    let deadline = Instant::now() + WAIT;
    while bridge.client_count() != 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = agent_auth(addr).await;
    bridge.shutdown().await;
}
