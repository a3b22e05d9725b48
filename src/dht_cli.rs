//! `intercom dht-node` (a long-lived HyperDHT node, or the first node of a new network)
//! and `intercom dht <op>` (one-shot diagnostics: lookup, announce, immutable and mutable
//! put/get). Results are JSON lines on stdout; failures are a message on stderr and a
//! non-zero exit.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::cli_values::Hex32;
use anyhow::{bail, Context};
use intercom_crypto::KeyPair;
use intercom_dht_rpc::Peer as NodeRef;
use intercom_hyperdht::constants::BOOTSTRAP_NODES;
use intercom_hyperdht::messages::Peer;
use intercom_hyperdht::{
    AnnounceOptions, HyperDht, HyperDhtConfig, MutableGetOptions, MutablePutOptions,
};
use serde_json::{json, Value};

/// Port a bootstrap node binds when none is given (JS `bin.js`).
const DEFAULT_BOOTSTRAP_PORT: u16 = 49737;
/// How long `dht-node` waits to become persistent before reporting ready anyway.
const PERSISTENT_WAIT: Duration = Duration::from_secs(15);
/// Re-announce interval of `dht announce --seconds N` (records live ≥ 13 minutes).
const REANNOUNCE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Options of `intercom dht-node`.
#[derive(Debug, clap::Args)]
pub struct DhtNodeArgs {
    /// IPv4 address to bind; with no --bootstrap it is also the address other nodes use
    /// for this bootstrap node, so it is required then. Default: 127.0.0.1 when every
    /// bootstrap node is on loopback, else 0.0.0.0.
    #[arg(long)]
    host: Option<Ipv4Addr>,
    /// UDP port (default: 49737 for a bootstrap node, any free port otherwise).
    #[arg(long)]
    port: Option<u16>,
    /// Bootstrap nodes, HOST:PORT[,HOST:PORT...]. Without it this node is the first
    /// node of a new network (`HyperDHT.bootstrapper`).
    #[arg(long, value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Behave like a default JS node: stay ephemeral until the network has been stable
    /// for a while. Without it the node proves it is reachable and becomes persistent at
    /// once, so it stores records and routes for others.
    #[arg(long)]
    adaptive: bool,
    /// Requests per second served to one source IP, burst twice that; 0 = unlimited
    /// (as JS) [default: 1000]
    #[arg(long, value_name = "N")]
    dht_request_rate: Option<u32>,
    #[command(flatten)]
    metrics: crate::metrics_cli::MetricsArgs,
}

/// Options of `intercom dht`.
#[derive(Debug, clap::Args)]
pub struct DhtArgs {
    #[command(subcommand)]
    op: DhtOp,
    /// Bootstrap nodes, HOST:PORT[,HOST:PORT...] (default: the public HyperDHT nodes).
    #[arg(long, global = true, value_delimiter = ',')]
    dht_bootstrap: Vec<String>,
    /// Seconds the bootstrap and the operation may take.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    /// IPv4 address to bind (default: 127.0.0.1 when every bootstrap node is on
    /// loopback, else 0.0.0.0).
    #[arg(long, global = true)]
    host: Option<Ipv4Addr>,
}

#[derive(Debug, clap::Subcommand)]
enum DhtOp {
    /// Lists the peers announced under a topic.
    Lookup {
        /// Topic, 32 bytes as hex.
        #[arg(long)]
        topic: Hex32,
    },
    /// Announces a key pair under a topic.
    Announce {
        /// Topic, 32 bytes as hex.
        #[arg(long)]
        topic: Hex32,
        /// Stay announced this long, then unannounce (0: announce and exit; the records
        /// expire on their own after 13 to 27 minutes).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        /// Key pair seed, 32 bytes as hex (default: a random key pair).
        #[arg(long)]
        seed: Option<Hex32>,
    },
    /// Stores a value under its BLAKE2b-256 hash.
    ImmutablePut {
        /// The value as UTF-8 text.
        #[arg(long, conflicts_with = "hex", required_unless_present = "hex")]
        value: Option<String>,
        /// The value as hex.
        #[arg(long)]
        hex: Option<String>,
    },
    /// Fetches a value by its hash.
    ImmutableGet {
        /// The hash, 32 bytes as hex.
        #[arg(long)]
        hash: Hex32,
    },
    /// Stores a signed value under the hash of the key pair's public key.
    MutablePut {
        /// Key pair seed, 32 bytes as hex.
        #[arg(long)]
        seed: Hex32,
        /// The value as UTF-8 text.
        #[arg(long, conflicts_with = "hex", required_unless_present = "hex")]
        value: Option<String>,
        /// The value as hex.
        #[arg(long)]
        hex: Option<String>,
        /// Sequence number.
        #[arg(long, default_value_t = 0)]
        seq: u64,
    },
    /// Fetches the latest signed value of a public key.
    MutableGet {
        /// The signer's public key, 32 bytes as hex.
        #[arg(long)]
        public_key: Hex32,
        /// Minimum sequence number.
        #[arg(long, default_value_t = 0)]
        seq: u64,
    },
}

/// Prints one JSON line. When stdout is gone (`intercom dht lookup | head -1`) there is
/// nobody left to report to: exit quietly instead of panicking.
fn emit(v: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{v}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Prints a failure as one `error: …` line (with its causes) and exits non-zero, so the
/// message stays readable whatever `RUST_BACKTRACE` says.
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn value_arg(value: Option<String>, hex_value: Option<String>) -> anyhow::Result<Vec<u8>> {
    match (value, hex_value) {
        (Some(v), None) => Ok(v.into_bytes()),
        (None, Some(h)) => {
            hex::decode(h.trim()).with_context(|| format!("--hex: not valid hex: {h:?}"))
        }
        _ => bail!("give exactly one of --value and --hex"),
    }
}

/// Parses `HOST:PORT` or the JS `IP@NAME:PORT` form; names are resolved.
async fn parse_node(s: &str) -> anyhow::Result<SocketAddrV4> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("bootstrap node {s:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bootstrap node {s:?}: bad port"))?;
    // `88.99.3.86@node1.hyperdht.org`: the address is given, the name is informative.
    let host = host.split_once('@').map_or(host, |(ip, _)| ip);
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddrV4::new(ip, port));
    }
    let resolved = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("bootstrap node {s:?}: cannot resolve {host:?}"))?;
    for addr in resolved {
        if let std::net::SocketAddr::V4(a) = addr {
            return Ok(a);
        }
    }
    bail!("bootstrap node {s:?}: {host:?} has no IPv4 address")
}

pub(crate) async fn parse_nodes(list: &[String]) -> anyhow::Result<Vec<SocketAddrV4>> {
    let mut out = Vec::with_capacity(list.len());
    for s in list.iter().filter(|s| !s.trim().is_empty()) {
        out.push(parse_node(s).await?);
    }
    Ok(out)
}

pub(crate) fn default_host(bootstrap: &[SocketAddrV4]) -> Ipv4Addr {
    if !bootstrap.is_empty() && bootstrap.iter().all(|a| a.ip().is_loopback()) {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::UNSPECIFIED
    }
}

fn id_hex(id: Option<[u8; 32]>) -> Value {
    id.map_or(Value::Null, |id| Value::String(hex::encode(id)))
}

fn node_json(n: &NodeRef) -> Value {
    json!({ "host": n.addr.ip().to_string(), "port": n.addr.port(), "id": id_hex(n.id) })
}

fn peer_json(p: &Peer) -> Value {
    json!({
        "publicKey": hex::encode(p.public_key),
        "relayAddresses": p.relay_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

pub(crate) async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// `intercom dht-node`.
pub async fn run_node(args: DhtNodeArgs) -> anyhow::Result<()> {
    exit_on_error(node_main(args).await)
}

async fn node_main(args: DhtNodeArgs) -> anyhow::Result<()> {
    let bootstrap = parse_nodes(&args.bootstrap).await?;
    let config = if bootstrap.is_empty() {
        let host = args.host.context(
            "--host is required for the first node of a network (the IPv4 address other nodes reach it at)",
        )?;
        if host.is_unspecified() {
            bail!("--host must be a concrete address, not 0.0.0.0");
        }
        HyperDhtConfig::bootstrapper(args.port.unwrap_or(DEFAULT_BOOTSTRAP_PORT), host)
    } else {
        let mut cfg = HyperDhtConfig::new(bootstrap.clone());
        cfg.dht.host = args.host.unwrap_or_else(|| default_host(&bootstrap));
        cfg.dht.port = args.port.unwrap_or(0);
        cfg.dht.any_port = args.port.is_none();
        if !args.adaptive {
            cfg.dht.ephemeral = Some(false);
        }
        cfg
    };
    let mut config = config;
    config.dht.request_budget = crate::peer_net::request_budget(args.dht_request_rate);
    let node = HyperDht::bind(config)
        .await
        .context("cannot bind the DHT node")?;
    let dht = node.dht().clone();
    let metrics = crate::metrics_cli::serve_dht_node(&args.metrics, &node).await?;
    dht.bootstrapped().await?;
    if !args.adaptive {
        let _ = tokio::time::timeout(PERSISTENT_WAIT, dht.persistent()).await;
    }
    let status = dht.status();
    let local = dht.local_addr();
    emit(&json!({
        "event": "ready",
        "host": local.ip().to_string(),
        "port": local.port(),
        "id": id_hex(status.id),
        "persistent": status.id.is_some(),
        "firewalled": status.firewalled,
        "bootstrap": bootstrap.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "nodes": status.table_len,
        "pid": std::process::id(),
        "metrics": metrics.as_ref().map(|m| format!("http://{}/metrics", m.local_addr())),
    }));
    if !bootstrap.is_empty() && dht.nodes(Some(1)).await?.is_empty() {
        crate::logging::warning("no bootstrap node answered; waiting for others to find us");
    }

    let mut watch = dht.watch_status();
    let mut persistent = status.id.is_some();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let name = loop {
        tokio::select! {
            s = &mut signal => break s?,
            changed = watch.changed() => {
                if changed.is_err() {
                    break "destroyed";
                }
                let id = watch.borrow_and_update().id;
                if id.is_some() != persistent {
                    persistent = id.is_some();
                    emit(&json!({ "event": if persistent { "persistent" } else { "ephemeral" }, "id": id_hex(id) }));
                }
            }
        }
    };
    node.destroy().await;
    emit(&json!({ "event": "closed", "reason": name }));
    Ok(())
}

/// A validated `intercom dht` operation.
enum Op {
    Lookup {
        topic: [u8; 32],
    },
    Announce {
        topic: [u8; 32],
        seconds: u64,
        key_pair: KeyPair,
    },
    ImmutablePut {
        value: Vec<u8>,
    },
    ImmutableGet {
        hash: [u8; 32],
    },
    MutablePut {
        key_pair: KeyPair,
        value: Vec<u8>,
        seq: u64,
    },
    MutableGet {
        public_key: [u8; 32],
        seq: u64,
    },
}

impl Op {
    fn parse(op: DhtOp) -> anyhow::Result<Op> {
        Ok(match op {
            DhtOp::Lookup { topic } => Op::Lookup { topic: topic.0 },
            DhtOp::Announce {
                topic,
                seconds,
                seed,
            } => Op::Announce {
                topic: topic.0,
                seconds,
                key_pair: match seed {
                    Some(s) => KeyPair::from_seed(&s.0),
                    None => KeyPair::generate(),
                },
            },
            DhtOp::ImmutablePut { value, hex } => Op::ImmutablePut {
                value: value_arg(value, hex)?,
            },
            DhtOp::ImmutableGet { hash } => Op::ImmutableGet { hash: hash.0 },
            DhtOp::MutablePut {
                seed,
                value,
                hex,
                seq,
            } => Op::MutablePut {
                key_pair: KeyPair::from_seed(&seed.0),
                value: value_arg(value, hex)?,
                seq,
            },
            DhtOp::MutableGet { public_key, seq } => Op::MutableGet {
                public_key: public_key.0,
                seq,
            },
        })
    }
}

/// Binds an ephemeral client and waits until it reached the network.
async fn client(nodes: &[String], host: Option<Ipv4Addr>) -> anyhow::Result<HyperDht> {
    let bootstrap = if nodes.is_empty() {
        let defaults: Vec<String> = BOOTSTRAP_NODES.iter().map(|s| s.to_string()).collect();
        parse_nodes(&defaults).await?
    } else {
        parse_nodes(nodes).await?
    };
    if bootstrap.is_empty() {
        bail!("--dht-bootstrap: no bootstrap node given");
    }
    let mut cfg = HyperDhtConfig::new(bootstrap.clone());
    cfg.dht.host = host.unwrap_or_else(|| default_host(&bootstrap));
    cfg.dht.ephemeral = Some(true);
    let node = HyperDht::bind(cfg)
        .await
        .context("cannot bind the DHT client")?;
    node.dht().bootstrapped().await?;
    if node.dht().nodes(Some(1)).await?.is_empty() {
        let list: Vec<String> = bootstrap.iter().map(|a| a.to_string()).collect();
        bail!(
            "could not reach any DHT node: no answer from the bootstrap nodes {}",
            list.join(",")
        );
    }
    Ok(node)
}

/// `intercom dht <op>`.
pub async fn run(args: DhtArgs) -> anyhow::Result<()> {
    exit_on_error(dht_main(args).await)
}

async fn dht_main(args: DhtArgs) -> anyhow::Result<()> {
    // Every input is checked before touching the network.
    let op = Op::parse(args.op)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let node = tokio::time::timeout(timeout, client(&args.dht_bootstrap, args.host))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "timed out after {}s reaching the DHT (bootstrap unreachable?)",
                timeout.as_secs()
            )
        })??;
    let result = run_op(&node, op, timeout).await;
    node.destroy().await;
    result
}

async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| anyhow::anyhow!("{what} timed out after {}s", timeout.as_secs()))?
}

async fn run_op(node: &HyperDht, op: Op, timeout: Duration) -> anyhow::Result<()> {
    match op {
        Op::Lookup { topic: target } => {
            let topic = hex::encode(target);
            with_timeout(timeout, "lookup", async {
                let mut q = node.lookup(target).await?;
                let mut replies = 0;
                let mut keys: Vec<String> = Vec::new();
                while let Some(r) = q.next().await {
                    replies += 1;
                    for p in &r.peers {
                        let k = hex::encode(p.public_key);
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                    emit(&json!({
                        "type": "reply",
                        "from": node_json(&r.from),
                        "peers": r.peers.iter().map(peer_json).collect::<Vec<_>>(),
                        "bump": r.bump,
                    }));
                }
                let closest = q.finish().await?;
                emit(&json!({
                    "type": "done",
                    "topic": topic,
                    "replies": replies,
                    "peers": keys,
                    "closestNodes": closest.len(),
                }));
                Ok(())
            })
            .await
        }
        Op::Announce {
            topic: target,
            seconds,
            key_pair: kp,
        } => {
            let topic = hex::encode(target);
            let announce = || {
                with_timeout(timeout, "announce", async {
                    Ok(node
                        .announce(target, &kp, &[], AnnounceOptions::default())
                        .await?)
                })
            };
            let res = announce().await?;
            emit(&json!({
                "type": "announced",
                "topic": topic,
                "publicKey": hex::encode(kp.public_key),
                "closestNodes": res.closest_nodes.len(),
                "committed": res.committed,
            }));
            if seconds == 0 {
                return Ok(());
            }
            let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let signal = shutdown_signal();
            tokio::pin!(signal);
            loop {
                let next = (tokio::time::Instant::now() + REANNOUNCE_EVERY).min(until);
                tokio::select! {
                    s = &mut signal => { s?; break; }
                    _ = tokio::time::sleep_until(next) => {
                        if next >= until {
                            break;
                        }
                        announce().await?;
                    }
                }
            }
            let un = with_timeout(timeout, "unannounce", async {
                Ok(node.unannounce(target, &kp).await?)
            })
            .await?;
            emit(&json!({
                "type": "unannounced",
                "topic": topic,
                "publicKey": hex::encode(kp.public_key),
                "unannounced": un.unannounced,
            }));
            Ok(())
        }
        Op::ImmutablePut { value } => {
            let res = with_timeout(timeout, "immutable put", async {
                Ok(node.immutable_put(&value).await?)
            })
            .await?;
            emit(&json!({
                "type": "stored",
                "hash": hex::encode(res.hash),
                "closestNodes": res.closest_nodes.len(),
            }));
            Ok(())
        }
        Op::ImmutableGet { hash: target } => {
            let hash = hex::encode(target);
            let res = with_timeout(timeout, "immutable get", async {
                Ok(node.immutable_get(target).await?)
            })
            .await?;
            let Some(r) = res else {
                bail!("not found: no node has a value for hash {hash}");
            };
            emit(&json!({
                "type": "value",
                "hash": hash,
                "value": String::from_utf8_lossy(&r.value),
                "hex": hex::encode(&r.value),
                "from": node_json(&r.from),
            }));
            Ok(())
        }
        Op::MutablePut {
            key_pair: kp,
            value,
            seq,
        } => {
            let res = with_timeout(timeout, "mutable put", async {
                Ok(node
                    .mutable_put(&kp, &value, MutablePutOptions { seq })
                    .await?)
            })
            .await?;
            emit(&json!({
                "type": "stored",
                "publicKey": hex::encode(res.public_key),
                "seq": res.seq,
                "signature": hex::encode(res.signature),
                "closestNodes": res.closest_nodes.len(),
            }));
            Ok(())
        }
        Op::MutableGet {
            public_key: pk,
            seq,
        } => {
            let public_key = hex::encode(pk);
            let res = with_timeout(timeout, "mutable get", async {
                Ok(node
                    .mutable_get(&pk, MutableGetOptions { seq, latest: true })
                    .await?)
            })
            .await?;
            let Some(r) = res else {
                bail!("not found: no node has a value of {public_key} with seq >= {seq}");
            };
            emit(&json!({
                "type": "value",
                "publicKey": public_key,
                "seq": r.seq,
                "value": String::from_utf8_lossy(&r.value),
                "hex": hex::encode(&r.value),
                "signature": hex::encode(r.signature),
                "from": node_json(&r.from),
            }));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_text_or_hex() {
        assert_eq!(value_arg(Some("hi".into()), None).unwrap(), b"hi");
        assert_eq!(value_arg(None, Some("6869".into())).unwrap(), b"hi");
        assert!(value_arg(None, Some("zz".into())).is_err());
    }

    #[tokio::test]
    async fn bootstrap_nodes_parse() {
        assert_eq!(
            parse_node("127.0.0.1:5").await.unwrap(),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5)
        );
        assert_eq!(
            parse_node("88.99.3.86@node1.hyperdht.org:49737")
                .await
                .unwrap(),
            "88.99.3.86:49737".parse().unwrap()
        );
        assert!(parse_node("127.0.0.1").await.is_err());
        assert!(parse_node("127.0.0.1:x").await.is_err());
        let all = parse_nodes(&["127.0.0.1:1".into(), "127.0.0.2:2".into()])
            .await
            .unwrap();
        assert_eq!(default_host(&all), Ipv4Addr::LOCALHOST);
        assert_eq!(
            default_host(&["1.2.3.4:1".parse().unwrap()]),
            Ipv4Addr::UNSPECIFIED
        );
    }
}
