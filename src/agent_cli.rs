//! One-shot commands for shell agents, over a running peer's SC-Bridge: `intercom send`,
//! `intercom recv` and `intercom inbox status`. Each connects, authenticates, does one
//! thing, prints JSON lines on stdout and exits with a code a script can branch on:
//! 0 done (for `recv`: messages printed), 3 `recv` timed out with nothing, 1 the bridge
//! could not be reached or refused the command, 2 usage (clap's own code).
//!
//! The token comes from `--sc-bridge-token-file PATH` or `SC_BRIDGE_TOKEN`, never from a
//! flag, so it does not show in `ps`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Exit code of `recv` when the wait ended with nothing to print.
pub const EXIT_TIMED_OUT: i32 = 3;
/// Exit code when the bridge cannot be reached, refuses the token or the command.
pub const EXIT_BRIDGE: i32 = 1;
/// How long connecting and authenticating may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the bridge is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct BridgeArgs {
    /// The peer's SC-Bridge.
    #[arg(
        long,
        value_name = "URL",
        env = "SC_BRIDGE_URL",
        default_value = "ws://127.0.0.1:49222"
    )]
    pub sc_bridge_url: String,
    /// A file holding the bridge token (the environment variable SC_BRIDGE_TOKEN works too).
    #[arg(long, value_name = "PATH", env = "SC_BRIDGE_TOKEN_FILE")]
    pub sc_bridge_token_file: Option<PathBuf>,
}

/// `intercom send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    bridge: BridgeArgs,
    /// The channel to send on.
    #[arg(long, default_value = intercom_sidechannel::ENTRY_CHANNEL)]
    channel: String,
    /// Send MESSAGE as JSON (an object, array, number...) instead of as text.
    #[arg(long)]
    json: bool,
    /// The message.
    message: String,
}

/// `intercom recv`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecvArgs {
    #[command(flatten)]
    bridge: BridgeArgs,
    /// The agent whose inbox is read (each agent acknowledges on its own).
    #[arg(long, default_value = "cli", env = "INTERCOM_AGENT")]
    agent: String,
    /// Wait up to this many seconds for a message when none is pending (at most 300).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    wait: f64,
    /// Print at most this many messages (1-1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Only this channel's messages.
    #[arg(long)]
    channel: Option<String>,
    /// Leave the printed messages pending (by default they are acknowledged once printed).
    #[arg(long)]
    no_ack: bool,
}

/// `intercom inbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct InboxArgs {
    #[command(subcommand)]
    command: InboxCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum InboxCommand {
    /// Counts, limits and every agent's position, as one JSON line.
    Status {
        #[command(flatten)]
        bridge: BridgeArgs,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
    },
}

/// An authenticated bridge connection that returns replies by id and skips events.
pub(crate) struct Client {
    ws: WebSocketStream<TokioAdapter<TcpStream>>,
    next_id: u64,
}

impl Client {
    pub(crate) async fn connect(args: &BridgeArgs) -> anyhow::Result<Client> {
        let token = token(args)?;
        let url = args.sc_bridge_url.trim();
        let authority = url
            .strip_prefix("ws://")
            .with_context(|| format!("--sc-bridge-url {url:?}: expected ws://HOST:PORT"))?
            .trim_end_matches('/');
        let connect = async {
            let tcp = TcpStream::connect(authority)
                .await
                .with_context(|| format!("cannot reach the SC-Bridge at {url}"))?;
            let (ws, _) = client_async(format!("ws://{authority}/"), tcp)
                .await
                .with_context(|| format!("the SC-Bridge at {url} refused the WebSocket"))?;
            let mut client = Client { ws, next_id: 0 };
            let auth = client
                .request(json!({"type": "auth", "token": token}))
                .await?;
            if auth["type"] != "auth_ok" {
                bail!("the SC-Bridge refused the token: {}", auth["error"]);
            }
            Ok(client)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .with_context(|| format!("the SC-Bridge at {url} did not answer within 10 s"))?
    }

    /// Sends `req` and returns the frame that answers it (`auth` replies carry no id).
    pub(crate) async fn request(&mut self, mut req: Value) -> anyhow::Result<Value> {
        let auth = req["type"] == "auth";
        self.next_id += 1;
        if !auth {
            req["id"] = json!(self.next_id);
        }
        self.ws
            .send(Message::text(req.to_string()))
            .await
            .context("the SC-Bridge connection failed")?;
        loop {
            let frame = self
                .ws
                .next()
                .await
                .context("the SC-Bridge closed the connection")?
                .context("the SC-Bridge connection failed")?;
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(text.as_str())
                .context("the SC-Bridge sent something that is not JSON")?;
            let answers = if auth {
                matches!(v["type"].as_str(), Some("auth_ok" | "error"))
            } else {
                v["id"] == self.next_id
            };
            if answers {
                return Ok(v);
            }
        }
    }

    /// `request`, with an `error` reply turned into an error.
    pub(crate) async fn call(&mut self, req: Value) -> anyhow::Result<Value> {
        let reply = self.request(req).await?;
        match refusal(&reply) {
            Some(why) => bail!(why),
            None => Ok(reply),
        }
    }
}

/// The text and code of an `error` reply (`None` for any other reply).
pub(crate) fn refusal(reply: &Value) -> Option<String> {
    (reply["type"] == "error").then(|| {
        format!(
            "{} ({})",
            reply["error"].as_str().unwrap_or("error"),
            reply["code"].as_str().unwrap_or("?")
        )
    })
}

fn token(args: &BridgeArgs) -> anyhow::Result<String> {
    let token = match &args.sc_bridge_token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        None => std::env::var("SC_BRIDGE_TOKEN").unwrap_or_default(),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("no bridge token: pass --sc-bridge-token-file PATH or set SC_BRIDGE_TOKEN");
    }
    Ok(token)
}

/// Prints one JSON line and flushes (a closed stdout is an error, so nothing is
/// acknowledged that was not written).
fn print_line(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Runs `f`, printing an error as one line on stderr and exiting with [`EXIT_BRIDGE`].
async fn or_exit<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> T {
    match f.await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(EXIT_BRIDGE);
        }
    }
}

/// `intercom send`: prints the `sent` reply.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let message = if args.json {
        match serde_json::from_str::<Value>(&args.message) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: MESSAGE is not JSON ({e}); drop --json to send it as text");
                std::process::exit(2);
            }
        }
    } else {
        Value::String(args.message.clone())
    };
    let reply = or_exit(async {
        let mut client = Client::connect(&args.bridge).await?;
        client
            .call(json!({"type": "send", "channel": args.channel, "message": message}))
            .await
    })
    .await;
    print_line(&reply)
}

/// `intercom recv`: the agent's pending messages as JSON lines, acknowledged once written.
pub async fn recv(args: RecvArgs) -> anyhow::Result<()> {
    if !(0.0..=300.0).contains(&args.wait) {
        eprintln!("error: --wait takes 0 to 300 seconds");
        std::process::exit(2);
    }
    let wait_ms = (args.wait * 1000.0).round() as u64;
    let printed = or_exit(async {
        let mut client = Client::connect(&args.bridge).await?;
        let mut req = json!({
            "type": "inbox_recv",
            "agent": args.agent,
            "wait_ms": wait_ms,
            "limit": args.limit,
        });
        if let Some(channel) = &args.channel {
            req["channel"] = json!(channel);
        }
        let reply = client.call(req).await?;
        if let Some(missed) = reply["missed"].as_u64().filter(|m| *m > 0) {
            eprintln!(
                "note: {missed} messages were deleted by retention before this agent read them"
            );
        }
        let messages = reply["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            print_line(m)?;
        }
        if !args.no_ack {
            // Everything looked at is acknowledged: with a channel filter that includes the
            // messages the filter skipped.
            let upto = reply["scannedTo"].as_u64().unwrap_or(0);
            if upto > reply["acked"].as_u64().unwrap_or(0) {
                client
                    .call(json!({"type": "inbox_ack", "agent": args.agent, "seq": upto}))
                    .await?;
            }
        }
        Ok(messages.len())
    })
    .await;
    if printed == 0 {
        std::process::exit(EXIT_TIMED_OUT);
    }
    Ok(())
}

/// `intercom inbox ...`.
pub async fn inbox(args: InboxArgs) -> anyhow::Result<()> {
    match args.command {
        InboxCommand::Status { bridge, agent } => {
            let reply = or_exit(async {
                let mut client = Client::connect(&bridge).await?;
                let mut req = json!({"type": "inbox_status"});
                if let Some(agent) = agent {
                    req["agent"] = json!(agent);
                }
                client.call(req).await
            })
            .await;
            print_line(&reply)
        }
    }
}
