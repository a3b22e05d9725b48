//! The `intercom` binary: command-line parsing and wiring only. Each subcommand lives in
//! its own module and calls into the workspace crates.

mod demo;

use clap::{Parser, Subcommand};

/// A Rust Intercom peer, wire-compatible with the JS Hyperswarm / Intercom stack.
#[derive(Debug, Parser)]
#[command(name = "intercom", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline local demo on 127.0.0.1: peers exchange messages over the encrypted,
    /// multiplexed wire protocol (no internet, nothing outside loopback).
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
        }
    })
}
