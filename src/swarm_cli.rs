//! `intercom swarm pipe`: joins a Hyperswarm topic and pipes the first connection to
//! stdin/stdout, like a network `cat` between two peers (JS or Rust) on the same topic.
//!
//! stdin goes to the connection (its end half-closes our side), the connection goes to
//! stdout; the process exits 0 once both directions ended. With `--echo` whatever
//! arrives is sent back instead (stdin is not read). Status (the remote key) and
//! errors go to stderr; a timeout or a failed connection exits non-zero.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context};
use intercom_crypto::KeyPair;
use intercom_hyperdht::HyperDhtConfig;
use intercom_swarm::{JoinOptions, Swarm, SwarmConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli_values::Hex32;
use crate::dht_cli::{default_host, parse_nodes};

/// Bytes read from stdin per message.
const CHUNK: usize = 64 * 1024;
/// How long the graceful shutdown (unannouncing) may take.
const SHUTDOWN: Duration = Duration::from_secs(10);

/// `intercom swarm ...`.
#[derive(Debug, clap::Args)]
pub struct SwarmArgs {
    #[command(subcommand)]
    op: SwarmOp,
}

#[derive(Debug, clap::Subcommand)]
enum SwarmOp {
    /// Pipes stdin/stdout through the first connection on a topic.
    Pipe(PipeArgs),
}

/// Options of `intercom swarm pipe`.
#[derive(Debug, clap::Args)]
pub struct PipeArgs {
    /// Topic, 32 bytes as hex.
    #[arg(long)]
    topic: Hex32,
    /// Announce the topic and accept a connection.
    #[arg(long, conflicts_with = "client", required_unless_present = "client")]
    server: bool,
    /// Look the topic up and connect.
    #[arg(long)]
    client: bool,
    /// Bootstrap nodes, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_delimiter = ',', required = true)]
    dht_bootstrap: Vec<String>,
    /// Key pair seed, 32 bytes as hex (default: a random key pair).
    #[arg(long)]
    seed: Option<Hex32>,
    /// Send back what arrives instead of reading stdin.
    #[arg(long)]
    echo: bool,
    /// Seconds to wait for the first connection.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// IPv4 address to bind (default: 127.0.0.1 when every bootstrap node is on
    /// loopback, else 0.0.0.0).
    #[arg(long)]
    host: Option<Ipv4Addr>,
}

/// Runs `intercom swarm ...`; errors end the process with a message and status 1.
pub async fn run(args: SwarmArgs) -> anyhow::Result<()> {
    let SwarmOp::Pipe(args) = args.op;
    if let Err(e) = pipe(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn pipe(args: PipeArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let topic = args.topic.0;
    let key_pair = match &args.seed {
        Some(s) => KeyPair::from_seed(&s.0),
        None => KeyPair::generate(),
    };
    let bootstrap = parse_nodes(&args.dht_bootstrap).await?;
    if bootstrap.is_empty() {
        bail!("--dht-bootstrap: at least one node is required");
    }
    let mut dht = HyperDhtConfig::new(bootstrap.clone());
    dht.dht.host = args.host.unwrap_or_else(|| default_host(&bootstrap));
    let wait = Duration::from_secs(args.timeout);
    let mut swarm = Swarm::bind(dht, SwarmConfig::new(key_pair))
        .await
        .context("starting the DHT node")?;
    tokio::time::timeout(wait, swarm.dht().dht().bootstrapped())
        .await
        .context("bootstrap timed out")?
        .context("bootstrap failed")?;
    let opts = JoinOptions {
        server: args.server,
        client: args.client,
    };
    swarm.join(topic, opts).await.context("joining the topic")?;
    eprintln!(
        "joined {} as {} with key {}",
        hex::encode(topic),
        if args.server { "server" } else { "client" },
        hex::encode(swarm.public_key())
    );
    let first = tokio::time::timeout(wait, swarm.accept())
        .await
        .with_context(|| format!("no connection within {} s", args.timeout))?
        .context("swarm closed before a connection arrived")?;
    eprintln!(
        "connected to {} ({})",
        hex::encode(first.public_key),
        if first.client {
            "we dialled"
        } else {
            "it dialled"
        }
    );
    let (mut reader, mut writer, _handle) = first.connection.split();
    let result = if args.echo {
        async {
            while let Some(m) = reader.recv().await.context("receiving")? {
                writer.send(&m).await.context("sending")?;
            }
            writer.end().await.context("ending")?;
            anyhow::Ok(())
        }
        .await
    } else {
        let up = async {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = stdin.read(&mut buf).await.context("reading stdin")?;
                if n == 0 {
                    break;
                }
                writer.send(&buf[..n]).await.context("sending")?;
            }
            writer.end().await.context("ending our side")?;
            anyhow::Ok(())
        };
        let down = async {
            let mut stdout = tokio::io::stdout();
            while let Some(m) = reader.recv().await.context("receiving")? {
                stdout.write_all(&m).await.context("writing stdout")?;
            }
            stdout.flush().await.context("flushing stdout")?;
            anyhow::Ok(())
        };
        tokio::try_join!(up, down).map(drop)
    };
    // Leave gracefully (unannounce) but never hang on it.
    let _ = tokio::time::timeout(SHUTDOWN, swarm.destroy()).await;
    result
}
