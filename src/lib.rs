//! The `intercom` peer as a library: command-line parsing and wiring only (each
//! subcommand lives in its own module and calls into the workspace crates). The
//! `intercom` binary runs it with the built-in contract; a custom contract app is a crate
//! whose `main` calls [`main_with_contract`] with its own [`Contract`] (see
//! `contracts/examples/task-board`).

mod agent_cli;
mod cli_values;
mod demo;
mod dht_cli;
mod log_cli;
mod logging;
mod mcp;
mod metrics_cli;
mod peer_net;
mod progress;
mod run_cli;
mod subnet_cli;
mod swarm_cli;

use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
pub use intercom_contracts::Contract;

/// A Rust Intercom peer, wire-compatible with the JS Hyperswarm / Intercom stack.
#[derive(Debug, Parser)]
#[command(name = "intercom", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline local demo on 127.0.0.1: peers exchange messages over the encrypted,
    /// multiplexed wire protocol (no internet, nothing outside loopback).
    Demo(demo::DemoArgs),
    /// Runs a long-lived HyperDHT node; without --bootstrap it is the first node of a
    /// new network. Prints one JSON line when ready, runs until SIGINT/SIGTERM.
    DhtNode(dht_cli::DhtNodeArgs),
    /// HyperDHT diagnostics: lookup, announce, immutable/mutable put and get (JSON lines).
    Dht(dht_cli::DhtArgs),
    /// Runs one long-lived Intercom peer: persistent identity (stores/<name>/), sidechannels,
    /// the SC-Bridge WebSocket API and the slash-command TTY. Takes the JS Intercom's flags.
    Run(Box<run_cli::RunArgs>),
    /// Subnet writer logs (hypercores): append, get, info, serve on the swarm, replicate
    /// and verify (JSON lines).
    Log(log_cli::LogArgs),
    /// Subnet tools: `subnet rebuild` re-applies every held writer log from scratch;
    /// `subnet verify-proof` checks a proof of a key's value against a state root.
    Subnet(subnet_cli::SubnetArgs),
    /// Hyperswarm tools: `swarm pipe` pipes stdin/stdout through a topic's first connection.
    Swarm(swarm_cli::SwarmArgs),
    /// Sends one message through a running peer's SC-Bridge and prints the reply.
    Send(agent_cli::SendArgs),
    /// Prints an agent's pending inbox messages (JSON lines) from a running peer and
    /// acknowledges them; exits 3 when the wait ends with nothing.
    Recv(agent_cli::RecvArgs),
    /// The inbox of a running peer: `inbox status`.
    Inbox(agent_cli::InboxArgs),
    /// An MCP server on stdio for one agent, attached to a running peer's SC-Bridge
    /// (`claude mcp add intercom -- intercom mcp --agent NAME`).
    Mcp(mcp::McpArgs),
}

/// Parses the command line and runs it, with `contract` as the subnet's contract.
pub fn main_with_contract(contract: Arc<dyn Contract>) -> anyhow::Result<()> {
    forget_blank_env_vars(&Cli::command());
    let cli = Cli::parse();
    logging::configure(cli.log.clone());
    // `intercom run` installs its own default filter (its debug flags add to it); the
    // other commands log nothing unless asked (--log-level or RUST_LOG).
    if !matches!(cli.command, Command::Run(_)) {
        logging::init("off");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::DhtNode(args) => dht_cli::run_node(args).await,
            Command::Dht(args) => dht_cli::run(args).await,
            Command::Run(args) => run_cli::run(*args, contract).await,
            Command::Swarm(args) => swarm_cli::run(args).await,
            Command::Log(args) => log_cli::run(args).await,
            Command::Subnet(args) => subnet_cli::run(args, contract).await,
            Command::Send(args) => agent_cli::send(args).await,
            Command::Recv(args) => agent_cli::recv(args).await,
            Command::Inbox(args) => agent_cli::inbox(args).await,
            Command::Mcp(args) => mcp::run(args).await,
        }
    })
}

/// Unsets every environment variable a flag reads that is set but blank, before parsing:
/// as in the JS reference (`process.env.X || default`), `SIDECHANNEL_POW=` means "not
/// given", not an invalid value. Runs while the process has a single thread.
fn forget_blank_env_vars(command: &clap::Command) {
    for arg in command.get_arguments() {
        if let Some(name) = arg.get_env() {
            if std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty()) {
                std::env::remove_var(name);
            }
        }
    }
    for sub in command.get_subcommands() {
        forget_blank_env_vars(sub);
    }
}
