//! `intercom demo`: the offline walk-through the README's first command runs. Everything
//! stays on 127.0.0.1: it starts a small HyperDHT (four `intercom dht-node`s) and two
//! peers (`intercom run`, each with its own store and SC-Bridge) as child processes of this
//! binary, connects to both bridges as an agent would, sends messages over one bridge and
//! shows them arriving on the other, then stops every process it started (by PID) and
//! removes the stores it created.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};

/// Options of `intercom demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Messages each peer sends to the other.
    #[arg(long, default_value_t = 3)]
    messages: usize,
    /// How long to wait for discovery and the first connection.
    #[arg(long, default_value_t = 60)]
    connect_timeout_secs: u64,
}

/// Bridge token of the demo peers (they listen on 127.0.0.1 only and live for seconds), handed to them in
/// `SC_BRIDGE_TOKEN` so it stays out of `ps`.
const TOKEN: &str = "6d656d6f2d9c4e1ab37f0d25c8e94f1b7a2c3d4e";
/// The demo's subnet channel.
const SUBNET: &str = "intercom-demo";
/// DHT nodes besides the bootstrap node. Peers learn that they are reachable (and connect
/// directly instead of holepunching) only from several nodes' answers.
const DHT_NODES: usize = 3;
/// How long one step (a process start, a bridge reply, a delivery) may take.
const STEP: Duration = Duration::from_secs(20);

/// A child process of the demo, killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl Proc {
    fn spawn(name: &'static str, args: &[&str]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("locating the intercom binary")?;
        let mut child = Command::new(exe)
            .args(args)
            .env("SC_BRIDGE_TOKEN", TOKEN)
            .env_remove("SC_BRIDGE_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Proc {
            name,
            child,
            lines: Some(BufReader::new(stdout).lines()),
        })
    }

    async fn next_line(&mut self) -> anyhow::Result<String> {
        let lines = self.lines.as_mut().context("output already drained")?;
        match tokio::time::timeout(STEP, lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("{} exited early", self.name),
            Ok(Err(e)) => Err(e).with_context(|| format!("reading {}'s output", self.name)),
            Err(_) => bail!("{} printed nothing for {STEP:?}", self.name),
        }
    }

    /// Reads and discards the rest of its stdout, so it never blocks on a full pipe.
    fn drain(&mut self) {
        if let Some(mut lines) = self.lines.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
    }

    /// SIGTERM (the peers shut down cleanly on it), then SIGKILL if it lingers.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A started `intercom run` peer: its process, public key and bridge address.
struct DemoPeer {
    name: &'static str,
    proc: Proc,
    pubkey: String,
    bridge: String,
    writer: String,
}

async fn start_peer(
    name: &'static str,
    stores: &Path,
    bootstrap: &str,
    extra: &[&str],
) -> anyhow::Result<DemoPeer> {
    let stores = stores.to_string_lossy();
    let mut proc = Proc::spawn(
        name,
        &[
            &[
                "run",
                "--peer-stores-directory",
                &stores,
                "--peer-store-name",
                name,
                "--dht-bootstrap",
                bootstrap,
                "--sc-bridge",
                "1",
                "--sc-bridge-port",
                "0",
                "--subnet-channel",
                SUBNET,
            ][..],
            extra,
        ]
        .concat(),
    )?;
    let (mut pubkey, mut bridge, mut writer) = (None, None, None);
    loop {
        let line = proc.next_line().await?;
        if let Some(k) = line.strip_prefix("Peer pubkey (hex): ") {
            pubkey = Some(k.trim().to_owned());
        }
        if let Some(b) = line.strip_prefix("SC-Bridge: ws://") {
            bridge = b.split_whitespace().next().map(str::to_owned);
        }
        if let Some(w) = line.strip_prefix("Peer writer key (hex): ") {
            writer = Some(w.trim().to_owned());
        }
        if line == "Sidechannel: ready" {
            break;
        }
    }
    let pubkey = pubkey.with_context(|| format!("{name}'s banner has no public key"))?;
    let bridge = bridge.with_context(|| format!("{name}'s banner has no bridge address"))?;
    let writer = writer.with_context(|| format!("{name}'s banner has no writer key"))?;
    println!("{name}: peer {pubkey}, SC-Bridge ws://{bridge}");
    proc.drain();
    Ok(DemoPeer {
        name,
        proc,
        pubkey,
        bridge,
        writer,
    })
}

/// An authenticated SC-Bridge client.
struct Agent {
    name: &'static str,
    ws: WebSocketStream<TokioAdapter<TcpStream>>,
}

impl Agent {
    async fn connect(peer: &DemoPeer) -> anyhow::Result<Agent> {
        let tcp = TcpStream::connect(&peer.bridge)
            .await
            .with_context(|| format!("connecting to {}'s bridge", peer.name))?;
        let (ws, _) = client_async(format!("ws://{}/", peer.bridge), tcp).await?;
        let mut agent = Agent {
            name: peer.name,
            ws,
        };
        let hello = agent.recv().await?;
        if hello["type"] != "hello" {
            bail!("{}: expected hello, got {hello}", peer.name);
        }
        let auth = agent
            .request(json!({"type": "auth", "token": TOKEN}))
            .await?;
        if auth["type"] != "auth_ok" {
            bail!("{}: auth failed: {auth}", peer.name);
        }
        Ok(agent)
    }

    async fn recv(&mut self) -> anyhow::Result<Value> {
        loop {
            let frame = tokio::time::timeout(STEP, self.ws.next())
                .await
                .with_context(|| format!("{}: the bridge went quiet", self.name))?
                .with_context(|| format!("{}: the bridge closed", self.name))??;
            if let Message::Text(text) = frame {
                return Ok(serde_json::from_str(text.as_str())?);
            }
        }
    }

    /// Sends `v` and returns the first frame that is not an event.
    async fn request(&mut self, v: Value) -> anyhow::Result<Value> {
        self.ws.send(Message::text(v.to_string())).await?;
        loop {
            let reply = self.recv().await?;
            if reply["type"] != "sidechannel_message" {
                return Ok(reply);
            }
        }
    }

    /// Waits for `text` to arrive as a `sidechannel_message`.
    async fn expect_message(&mut self, text: &str) -> anyhow::Result<Value> {
        loop {
            let ev = self.recv().await?;
            if ev["type"] == "sidechannel_message" && ev["message"] == text {
                return Ok(ev);
            }
        }
    }
}

/// Where the demo keeps its two peer stores (removed at the end).
fn demo_stores() -> PathBuf {
    std::env::temp_dir().join(format!("intercom-demo-{}", std::process::id()))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stores = demo_stores();
    let result = run_in(&args, &stores).await;
    let _ = std::fs::remove_dir_all(&stores);
    result
}

async fn run_in(args: &DemoArgs, stores: &Path) -> anyhow::Result<()> {
    println!("== 1. a private HyperDHT on 127.0.0.1: a bootstrap node and {DHT_NODES} more");
    let mut dht = vec![Proc::spawn(
        "dht-node",
        &["dht-node", "--host", "127.0.0.1", "--port", "0"],
    )?];
    let ready: Value = serde_json::from_str(&dht[0].next_line().await?)
        .context("dht-node's ready line is not JSON")?;
    let port = ready["port"]
        .as_u64()
        .context("dht-node reported no port")?;
    let bootstrap = format!("127.0.0.1:{port}");
    for _ in 0..DHT_NODES {
        let mut node = Proc::spawn(
            "dht-node",
            &["dht-node", "--host", "127.0.0.1", "--bootstrap", &bootstrap],
        )?;
        node.next_line().await?;
        dht.push(node);
    }
    for node in &mut dht {
        node.drain();
    }
    println!("dht-node: bootstrap {bootstrap}");

    println!("== 2. two peers (intercom run) with SC-Bridges, on that DHT only");
    // alice's writer log bootstraps the demo subnet; bob joins it.
    let alice = start_peer("alice", stores, &bootstrap, &[]).await?;
    let bob = start_peer(
        "bob",
        stores,
        &bootstrap,
        &["--subnet-bootstrap", &alice.writer],
    )
    .await?;
    let mut to_alice = Agent::connect(&alice).await?;
    let mut to_bob = Agent::connect(&bob).await?;
    println!("agents authenticated to both bridges");

    println!("== 3. alice's agent sends on 0000intercom until bob is connected");
    let deadline = Instant::now() + Duration::from_secs(args.connect_timeout_secs);
    let started = Instant::now();
    let first = loop {
        let text = "hello bob, this is alice".to_owned();
        let sent = to_alice
            .request(json!({"type": "send", "channel": "0000intercom", "message": text}))
            .await?;
        if sent["type"] != "sent" {
            bail!("alice's bridge refused to send: {sent}");
        }
        if sent["peers"].as_u64().unwrap_or(0) > 0 {
            break text;
        }
        if Instant::now() > deadline {
            bail!(
                "the peers did not connect within {}s",
                args.connect_timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!(
        "connected through the DHT after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ev = to_bob.expect_message(&first).await?;
    if ev["from"] != alice.pubkey.as_str() {
        bail!("bob got the message from {} instead of alice", ev["from"]);
    }
    println!("bob's agent <- {}: {}", short(&ev["from"]), ev["message"]);

    println!("== 4. {} messages each way", args.messages);
    for n in 1..=args.messages {
        exchange(&mut to_alice, &mut to_bob, n).await?;
        exchange(&mut to_bob, &mut to_alice, n).await?;
    }
    let stats = to_bob.request(json!({"type": "stats"})).await?;
    println!(
        "bob's stats: {} connection(s), channels {}",
        stats["connectionCount"], stats["channels"]
    );

    println!("== 5. a shared subnet: alice admits bob, bob writes, alice reads it back");
    subnet(&alice, &bob, &mut to_alice, &mut to_bob).await?;

    println!("== 6. stopping every process");
    for p in [alice.proc, bob.proc].into_iter().chain(dht) {
        p.stop().await;
    }
    println!("done: two peers found each other through a loopback DHT, exchanged signed messages over their SC-Bridges and agreed on a subnet state");
    Ok(())
}

/// alice (the subnet's bootstrap) names herself admin, enables transactions and admits
/// bob; bob's agent writes a key; alice's agent reads it back; both show one state root.
async fn subnet(
    alice: &DemoPeer,
    bob: &DemoPeer,
    to_alice: &mut Agent,
    to_bob: &mut Agent,
) -> anyhow::Result<()> {
    for op in [
        json!({"type": "subnet_op", "op": "add_admin", "address": alice.pubkey}),
        json!({"type": "subnet_op", "op": "enable_transactions"}),
        json!({"type": "subnet_op", "op": "add_writer", "key": bob.writer}),
    ] {
        let r = to_alice.request(op).await?;
        if r["type"] != "subnet_op_result" {
            bail!("alice's subnet_op failed: {r}");
        }
        println!("alice's agent -> {} (entry {})", r["op"], r["seq"]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while to_bob.request(json!({"type": "subnet"})).await?["isWriter"] != true {
        wait_a_little(deadline, "bob's admission").await?;
    }
    println!("bob's agent: admitted as a writer of subnet {SUBNET}");
    let tx = json!({"type": "tx", "command": {"op": "put", "key": "greeting", "value": "hello from bob"}});
    let r = to_bob.request(tx).await?;
    if r["appended"] != true {
        bail!("bob's tx failed: {r}");
    }
    println!("bob's agent -> tx put greeting (entry {})", r["seq"]);
    let alices = read_when_applied(to_alice, deadline).await?;
    println!(
        "alice's agent <- get kv/greeting = {} (state root {})",
        alices["value"],
        short(&alices["stateRoot"])
    );
    let bobs = read_when_applied(to_bob, deadline).await?;
    if bobs["stateRoot"] != alices["stateRoot"] {
        bail!("alice and bob disagree on the state root: {alices} vs {bobs}");
    }
    println!("bob's agent <- the same value and state root");
    Ok(())
}

/// Polls `get kv/greeting` until it has a value.
async fn read_when_applied(agent: &mut Agent, deadline: Instant) -> anyhow::Result<Value> {
    loop {
        let r = agent
            .request(json!({"type": "get", "key": "kv/greeting"}))
            .await?;
        if !r["value"].is_null() {
            return Ok(r);
        }
        wait_a_little(deadline, "the greeting's application").await?;
    }
}

/// Sleeps 100 ms, or fails once `deadline` has passed.
async fn wait_a_little(deadline: Instant, what: &str) -> anyhow::Result<()> {
    if Instant::now() > deadline {
        bail!("{what} did not happen in time");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// One message from `from`'s agent to `to`'s, timed from the `send` to its arrival.
async fn exchange(from: &mut Agent, to: &mut Agent, n: usize) -> anyhow::Result<()> {
    let text = format!("message #{n} from {}", from.name);
    let t = Instant::now();
    let sent = from
        .request(json!({"type": "send", "channel": "0000intercom", "message": text}))
        .await?;
    if sent["type"] != "sent" {
        bail!("{}'s bridge refused to send: {sent}", from.name);
    }
    let ev = to.expect_message(&text).await?;
    println!(
        "{}'s agent <- {}: {} ({:.2} ms)",
        to.name,
        short(&ev["from"]),
        ev["message"],
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn short(v: &Value) -> String {
    let s = v.as_str().unwrap_or("?");
    format!("{}…", &s[..s.len().min(16)])
}
