//! `intercom subnet rebuild`: deletes a peer store's subnet state and re-applies every
//! writer log the store holds, from scratch and without the network (the state is a
//! pure function of the logs). Prints one JSON line: lengths, the state root and timing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use intercom_contracts::Contract;
use intercom_stores::{Durability, KvStore, PeerStore};
use serde_json::json;

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
        subnet_bootstrap: Option<String>,
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
                Some(hex) => intercom_subnet::apply::parse_key(&hex)
                    .context("--subnet-bootstrap must be 64 hex characters")?,
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
            let mut engine = intercom_subnet::service::rebuild(kv, config)?;
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
                    "stateKeys": engine.state().entries.len(),
                    "stateRoot": hex::encode(engine.root()),
                    "ms": elapsed.as_secs_f64() * 1000.0,
                })
            );
            Ok(())
        }
    }
}
