//! The subnet plane: members append signed entries to their writer logs (hypercores,
//! `intercom-log`); every peer orders all writers' entries the same way
//! ([`linearizer`]), checks membership at each entry's position and runs the same
//! contract over them ([`apply`]), so all derive the same state and state root
//! ([`state`]). [`engine`] is the sans-io core; [`service`] its async driver (log
//! replication over protomux, appends, acknowledgements, persistence).
//!
//! Behaviour follows trac-peer's subnet operations (add_admin, add_writer, ... and the
//! contract/protocol/feature split); the wire is our own (trac-peer replicates an
//! Autobase), see `docs/subnet.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod buckets;
pub mod commands;
pub mod counters;
pub mod engine;
pub mod entry;
pub mod linearizer;
pub mod merkle;
pub mod service;
pub mod state;

pub use apply::{Members, Outcome};
pub use engine::{AppliedEntry, Engine, EngineConfig, Step};
pub use entry::{Body, Entry, Key, Membership};
pub use linearizer::{EntryId, Linearizer};
pub use service::{
    start, subnet_topic, AppliedEvent, Attachment, Receipt, Simulation, SubnetConfig, SubnetHandle,
    SubnetInfo,
};

/// Why a subnet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubnetError {
    /// The service task has stopped.
    #[error("the subnet service has stopped")]
    Stopped,
    /// This peer's writer log is not admitted.
    #[error("this peer is not a writer of the subnet (its writer key is {0}); the admin admits it with /add_writer --key {0}")]
    NotWriter(String),
    /// `/tx` before the admin enabled transactions.
    #[error("transactions are not enabled on this subnet; the admin runs /enable_transactions")]
    TransactionsDisabled,
    /// The operation does not fit the contract.
    #[error(transparent)]
    Contract(#[from] intercom_contracts::ContractError),
    /// Appending to our writer log failed.
    #[error("appending to the writer log failed: {0}")]
    Append(String),
    /// A writer log could not be opened.
    #[error(transparent)]
    Log(#[from] intercom_log::LogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] intercom_stores::StoreError),
    /// Persisted state that does not parse.
    #[error("corrupt subnet state: {0}")]
    Corrupt(String),
}
