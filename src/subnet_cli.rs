//! `intercom subnet ...` tools.
//!
//! * `rebuild`: deletes a peer store's subnet state and re-applies every writer log the
//!   store holds, from scratch and without the network (the state is a pure function of
//!   the logs). Prints one JSON line: lengths, the state root and timing.
//! * `verify-proof`: checks a `/get --proof 1` answer (a value or an absence proved
//!   against a state root) without any peer, so a light client can trust one peer's
//!   answer once it knows the root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use intercom_contracts::Contract;
use intercom_stores::{Durability, KvStore, PeerStore};
use serde_json::json;

use crate::cli_values::Hex32;

/// `intercom subnet ...`
#[derive(Debug, clap::Args)]
pub struct SubnetArgs {
    #[command(subcommand)]
    command: SubnetCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SubnetCommand {
    /// Re-applies every held writer log from scratch into a fresh state (stop the peer first).
    Rebuild {
        /// Peer store name (stores/<NAME>/).
        #[arg(long, alias = "store")]
        peer_store_name: String,
        /// Directory holding the peer stores.
        #[arg(
            long,
            alias = "stores-dir",
            env = "PEER_STORES_DIRECTORY",
            default_value = "stores"
        )]
        peer_stores_directory: PathBuf,
        /// The subnet channel the peer runs.
        #[arg(long, env = "SUBNET_CHANNEL", default_value = "trac-peer-subnet")]
        subnet_channel: String,
        /// The subnet's bootstrap writer key (default: this peer's own writer key).
        #[arg(long, env = "SUBNET_BOOTSTRAP")]
        subnet_bootstrap: Option<Hex32>,
    },
    /// Checks a proof from `/get --key K --proof 1` (or the bridge's `get` with
    /// `"proof": true`); exits 0 and prints the proven value, or exits 1 saying why not.
    VerifyProof {
        /// The proof JSON: a file, or `-` for standard input.
        #[arg(default_value = "-")]
        proof: String,
        /// The state root you trust (hex), e.g. the confirmed root several peers report;
        /// without it the proof is checked against the root it names.
        #[arg(long)]
        root: Option<Hex32>,
    },
}

/// Runs a subnet subcommand.
pub async fn run(args: SubnetArgs, contract: Arc<dyn Contract>) -> anyhow::Result<()> {
    match args.command {
        SubnetCommand::Rebuild {
            peer_store_name,
            peer_stores_directory,
            subnet_channel,
            subnet_bootstrap,
        } => {
            // A rebuild rewrites derived state only: the log entries it reads are untouched.
            let store = PeerStore::open(
                &peer_stores_directory,
                &peer_store_name,
                Durability::Process,
            )?;
            let kv: Arc<dyn KvStore> = store.shared_kv();
            let bootstrap = match subnet_bootstrap {
                Some(key) => key.0,
                // The log key is the manifest hash of the writer key pair.
                None => intercom_log::default_key(
                    &crate::run_cli::writer_keypair(kv.as_ref())?.public_key,
                ),
            };
            let config = intercom_subnet::EngineConfig {
                channel: subnet_channel,
                bootstrap,
                contract,
                max_writers: 256,
            };
            let started = Instant::now();
            let bar = crate::progress::bar("rebuilding");
            let engine = intercom_subnet::service::rebuild_with_progress(kv, config, |p| {
                if let Some(bar) = &bar {
                    bar.set_length(p.held);
                    bar.set_position(p.confirmed);
                }
            })?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let elapsed = started.elapsed();
            let lin = engine.linearizer();
            println!(
                "{}",
                json!({
                    "rebuilt": true,
                    "confirmedLength": lin.confirmed_len(),
                    "unconfirmedLength": lin.unconfirmed_len(),
                    "waiting": lin.waiting(),
                    "writers": lin.keys().len(),
                    "stateRoot": hex::encode(engine.root()),
                    "ms": elapsed.as_secs_f64() * 1000.0,
                })
            );
            Ok(())
        }
        SubnetCommand::VerifyProof { proof, root } => {
            let text = if proof == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("reading the proof from standard input")?;
                text
            } else {
                std::fs::read_to_string(&proof).with_context(|| format!("reading {proof}"))?
            };
            let value: serde_json::Value =
                serde_json::from_str(text.trim()).context("the proof is not JSON")?;
            // A bridge reply wraps the proof in its `get` answer; take either.
            let value = value.get("result").cloned().unwrap_or(value);
            let trusted = root.map(|r| r.0);
            match intercom_subnet::state::verify_proof_json(&value, trusted.as_ref()) {
                Ok(checked) => {
                    println!(
                        "{}",
                        json!({
                            "valid": true,
                            "stateKey": checked.state_key,
                            "present": checked.value.is_some(),
                            "value": checked.value,
                            "stateRoot": hex::encode(checked.root),
                        })
                    );
                    Ok(())
                }
                Err(why) => {
                    println!("{}", json!({"valid": false, "error": why}));
                    std::process::exit(1);
                }
            }
        }
    }
}
