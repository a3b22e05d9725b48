//! `intercom log ...`: diagnostics for subnet writer logs (hypercores) in a peer store,
//! and serving / replicating one over the swarm the way JS apps do
//! (`swarm.join(core.discoveryKey)` + `store.replicate(connection)`). JSON lines on
//! stdout; errors on stderr with a non-zero exit.

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use intercom_crypto::KeyPair;
use intercom_hyperdht::HyperDhtConfig;
use intercom_log::{names, Log, Replica, ReplicaConfig, SharedReplica};
use intercom_protomux::{Mux, MuxConfig};
use intercom_stores::{Durability, KvStore, MemoryStore, PeerStore};
use intercom_swarm::{JoinOptions, Swarm, SwarmConfig};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli_values::Hex32;
use crate::dht_cli::{default_host, parse_nodes, shutdown_signal};

/// How long leaving the swarm may take at exit.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// `intercom log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    #[command(subcommand)]
    op: LogOp,
}

#[derive(Debug, clap::Subcommand)]
enum LogOp {
    /// Appends DATA (or, with `-`, each line of stdin) to a named log of the store.
    Append(AppendArgs),
    /// Prints one block of a log.
    Get(GetArgs),
    /// Prints key, discovery key, length, fork and tree hash of a log.
    Info(InfoArgs),
    /// Serves a log on the swarm (joined on its discovery key) until stopped; with
    /// --append-stdin, each stdin line is appended while serving.
    Serve(ServeArgs),
    /// Downloads and verifies a whole log by key, then prints its length and the SHA-256
    /// of its blocks in order.
    Replicate(ReplicateArgs),
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// Peer store name (stores/<NAME>/).
    #[arg(long)]
    store: String,
    /// Directory holding the peer stores.
    #[arg(long, env = "PEER_STORES_DIRECTORY", default_value = "stores")]
    stores_dir: PathBuf,
    /// Sync every append to disk before acknowledging it (as `intercom run --peer-store-sync`).
    #[arg(long, env = "PEER_STORE_SYNC")]
    store_sync: bool,
}

#[derive(Debug, clap::Args)]
struct LogSelector {
    /// Log name in the store's namespace (corestore-style `store.get({ name })`).
    #[arg(long, conflicts_with = "key", required_unless_present = "key")]
    name: Option<String>,
    /// Log key (hex), for logs replicated from others.
    #[arg(long)]
    key: Option<Hex32>,
}

#[derive(Debug, clap::Args)]
struct AppendArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Log name.
    #[arg(long)]
    name: String,
    /// The entry; `-` reads stdin, one entry per line (without its newline).
    data: String,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    log: LogSelector,
    /// Block index.
    #[arg(long)]
    index: u64,
}

#[derive(Debug, clap::Args)]
struct InfoArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    log: LogSelector,
    /// Also re-hash every block and check the whole tree against the signed head.
    #[arg(long)]
    verify: bool,
}

#[derive(Debug, clap::Args)]
struct NetArgs {
    /// Bootstrap nodes, HOST:PORT,... (tests and demos always pass a loopback one).
    #[arg(long, value_delimiter = ',', required = true)]
    dht_bootstrap: Vec<String>,
    /// IPv4 address to bind (default: 127.0.0.1 when every bootstrap node is on
    /// loopback, else 0.0.0.0).
    #[arg(long)]
    host: Option<Ipv4Addr>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    log: LogSelector,
    #[command(flatten)]
    net: NetArgs,
    /// Append each line of stdin while serving; exit when stdin ends.
    #[arg(long)]
    append_stdin: bool,
}

#[derive(Debug, clap::Args)]
struct ReplicateArgs {
    /// Key of the log (hex).
    #[arg(long)]
    key: Hex32,
    /// Keep the log in this peer store (default: in memory, gone at exit).
    #[arg(long)]
    store: Option<String>,
    /// Directory holding the peer stores.
    #[arg(long, env = "PEER_STORES_DIRECTORY", default_value = "stores")]
    stores_dir: PathBuf,
    #[command(flatten)]
    net: NetArgs,
    /// Give up when the log is not complete after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// After the download, keep following the log and print each new length until
    /// stdin ends.
    #[arg(long)]
    follow: bool,
    /// Request no blocks until this many peers are connected and synced, so the
    /// download spreads over several sources from the start.
    #[arg(long, default_value_t = 1)]
    min_peers: usize,
}

/// Runs `intercom log ...`; errors end the process with a message and status 1.
pub async fn run(args: LogArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let result = match args.op {
        LogOp::Append(a) => append(a),
        LogOp::Get(a) => get(a),
        LogOp::Info(a) => info(a),
        LogOp::Serve(a) => serve(a).await,
        LogOp::Replicate(a) => replicate(a).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn open_store(args: &StoreArgs) -> anyhow::Result<PeerStore> {
    PeerStore::open(
        &args.stores_dir,
        &args.store,
        Durability::from_sync_flag(args.store_sync),
    )
    .with_context(|| format!("opening peer store {:?}", args.store))
}

/// Opens the selected log: by name (writable, created on first use) or by key.
fn open_log(store: &PeerStore, sel: &LogSelector) -> anyhow::Result<Log> {
    let kv: Arc<dyn KvStore> = store.shared_kv();
    match (&sel.name, &sel.key) {
        (Some(name), _) => {
            let primary = names::primary_key(kv.as_ref())?;
            let kp = names::keypair_for_name(&primary, &names::DEFAULT_NAMESPACE, name);
            Ok(Log::open_writer(kv, kp)?)
        }
        (None, Some(key)) => Ok(Log::open(kv, key.0)?),
        (None, None) => bail!("give --name or --key"),
    }
}

fn info_json(log: &Log) -> serde_json::Value {
    json!({
        "key": hex::encode(log.key()),
        "discoveryKey": hex::encode(log.discovery_key()),
        "length": log.length(),
        "fork": log.fork(),
        "treeHash": hex::encode(log.head().hash()),
        "byteLength": log.head().byte_length,
        "contiguousLength": log.contiguous_length(),
        "writable": log.is_writable(),
    })
}

fn append(args: AppendArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let sel = LogSelector {
        name: Some(args.name.clone()),
        key: None,
    };
    let mut log = open_log(&store, &sel)?;
    let key = hex::encode(log.key());
    let mut appended = 0usize;
    if args.data == "-" {
        // Every complete line read so far is appended as one durable batch, then
        // acknowledged with a line on stdout: an acknowledged entry survives any crash.
        let mut stdin = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let buf = stdin.fill_buf().context("reading stdin")?;
            let eof = buf.is_empty();
            let n = buf.len();
            pending.extend_from_slice(buf);
            stdin.consume(n);
            let complete = if eof {
                pending.len()
            } else {
                pending
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
            };
            let mut entries: Vec<&[u8]> = pending[..complete].split(|&b| b == b'\n').collect();
            if entries.last().is_some_and(|e| e.is_empty()) {
                entries.pop();
            }
            if !entries.is_empty() {
                log.append(&entries)?;
                appended += entries.len();
                println!("{}", json!({ "key": key, "length": log.length() }));
            }
            pending.drain(..complete);
            if eof {
                break;
            }
        }
    } else {
        log.append(&[args.data.as_bytes()])?;
        appended = 1;
    }
    println!(
        "{}",
        json!({ "key": key, "length": log.length(), "appended": appended, "done": true })
    );
    Ok(())
}

fn get(args: GetArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let log = open_log(&store, &args.log)?;
    let Some(value) = log.get(args.index)? else {
        bail!(
            "block {} is not stored here (log length {})",
            args.index,
            log.length()
        );
    };
    let text = String::from_utf8(value.clone()).ok();
    println!(
        "{}",
        json!({ "index": args.index, "value": text, "hex": hex::encode(&value) })
    );
    Ok(())
}

fn info(args: InfoArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let log = open_log(&store, &args.log)?;
    let mut out = info_json(&log);
    if args.verify {
        out["verifiedBlocks"] = json!(log.verify_all()?);
    }
    println!("{out}");
    Ok(())
}

/// Binds a swarm, joins the log's discovery key as server and client and replicates every
/// connection; `announce_first` waits until the announcement is done.
async fn start_swarm(
    net: &NetArgs,
    replica: &SharedReplica,
    announce_first: bool,
) -> anyhow::Result<SwarmTask> {
    let bootstrap = parse_nodes(&net.dht_bootstrap).await?;
    if bootstrap.is_empty() {
        bail!("--dht-bootstrap: at least one node is required");
    }
    let mut dht = HyperDhtConfig::new(bootstrap.clone());
    dht.dht.host = net.host.unwrap_or_else(|| default_host(&bootstrap));
    let mut swarm = Swarm::bind(dht, SwarmConfig::new(KeyPair::generate()))
        .await
        .context("starting the DHT node")?;
    tokio::time::timeout(Duration::from_secs(30), swarm.dht().dht().bootstrapped())
        .await
        .context("DHT bootstrap timed out")?
        .context("DHT bootstrap failed")?;
    let topic = replica.with(|r| *r.log().discovery_key());
    swarm
        .join(
            topic,
            JoinOptions {
                server: true,
                client: true,
            },
        )
        .await
        .context("joining the log's discovery key")?;
    if announce_first {
        // Announced before "serving" is printed, so a reader started on that line finds
        // us by lookup (as the JS peer's `await swarm.flush()`).
        swarm.flush().await.context("announcing the log")?;
    }
    let replica = replica.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                c = swarm.accept() => c,
                _ = &mut stopped => break,
            };
            let Some(c) = c else { break };
            let info = c.connection.info().clone();
            let (reader, writer, _handle) = c.connection.split();
            let (mux, _events) = Mux::new(
                reader,
                writer,
                MuxConfig {
                    keepalive: Some(Duration::from_secs(5)),
                    ..MuxConfig::default()
                },
            );
            let replica = replica.clone();
            tokio::spawn(async move {
                replica
                    .replicate(mux, info.is_initiator, &info.handshake_hash)
                    .await;
            });
        }
        swarm
    });
    Ok(SwarmTask { stop, task })
}

struct SwarmTask {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Swarm>,
}

impl SwarmTask {
    /// Leaves the topic (unannouncing) and closes every connection.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Ok(swarm) = self.task.await {
            let _ = tokio::time::timeout(SHUTDOWN, swarm.destroy()).await;
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store)?;
    let log = open_log(&store, &args.log)?;
    let replica = SharedReplica::new(Replica::new(log, ReplicaConfig::default()));
    let swarm = start_swarm(&args.net, &replica, true).await?;
    let mut ready = replica.with(|r| info_json(r.log()));
    ready["event"] = json!("serving");
    println!("{ready}");
    if args.append_stdin {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().split(b'\n') {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            tokio::select! {
                line = rx.recv() => {
                    let Some(line) = line else { break };
                    let length = replica.append(&[line])?;
                    println!("{}", json!({ "event": "appended", "length": length }));
                }
                sig = shutdown_signal() => { sig?; break; }
            }
        }
    } else {
        shutdown_signal().await?;
    }
    swarm.stop().await;
    Ok(())
}

async fn replicate(args: ReplicateArgs) -> anyhow::Result<()> {
    let key = args.key.0;
    let (_store, kv): (Option<PeerStore>, Arc<dyn KvStore>) = match &args.store {
        Some(name) => {
            let store = PeerStore::open(&args.stores_dir, name, Durability::Process)
                .with_context(|| format!("opening peer store {name:?}"))?;
            let kv = store.shared_kv();
            (Some(store), kv)
        }
        None => (None, Arc::new(MemoryStore::default())),
    };
    let log = Log::open(kv, key)?;
    let config = ReplicaConfig {
        min_peers: args.min_peers,
        ..ReplicaConfig::default()
    };
    let replica = SharedReplica::new(Replica::new(log, config));
    let started = std::time::Instant::now();
    let swarm = start_swarm(&args.net, &replica, false).await?;
    let progress = crate::progress::track_replica(&replica, "replicating");
    let done = replica.wait_for(|r| r.is_complete());
    if tokio::time::timeout(Duration::from_secs(args.timeout), done)
        .await
        .is_err()
    {
        let (length, contiguous) =
            replica.with(|r| (r.log().length(), r.log().contiguous_length()));
        swarm.stop().await;
        bail!(
            "log not complete after {} s: length {length}, {contiguous} blocks downloaded",
            args.timeout
        );
    }
    let summary = replica.with(|r| -> anyhow::Result<serde_json::Value> {
        let log = r.log();
        let mut sha = Sha256::new();
        for i in 0..log.length() {
            let block = log
                .get(i)?
                .with_context(|| format!("block {i} missing after the download"))?;
            sha.update(&block);
        }
        let stats = r.stats();
        let mut out = info_json(log);
        out["event"] = json!("replicated");
        out["sha256"] = json!(hex::encode(sha.finalize()));
        out["blocksDownloaded"] = json!(stats.blocks_downloaded);
        out["sources"] = json!(stats.sources);
        out["badPeers"] = json!(stats.bad_peers);
        out["ms"] = json!(started.elapsed().as_millis() as u64);
        Ok(out)
    })?;
    drop(progress);
    println!("{summary}");
    if args.follow {
        let (eof_tx, mut eof) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
            let _ = eof_tx.send(());
        });
        let mut seen = replica.with(|r| r.log().contiguous_length());
        loop {
            let next = replica.wait_for(|r| {
                let l = r.log();
                l.contiguous_length() > seen && l.contiguous_length() == l.length()
            });
            tokio::select! {
                _ = next => {
                    seen = replica.with(|r| r.log().contiguous_length());
                    println!("{}", json!({ "event": "length", "length": seen }));
                }
                _ = &mut eof => break,
            }
        }
    }
    swarm.stop().await;
    Ok(())
}
