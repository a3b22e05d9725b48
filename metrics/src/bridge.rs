//! SC-Bridge command counters: a [`Backend`] wrapper that counts every command the bridge
//! hands to the peer, by type and result, without touching the bridge itself.
//!
//! Types are the backend calls (`send`, `join`, `leave`, `open`, `stats`, `cli`, `tx`,
//! `get`, `subnet`, `subnet_op`, `inbox_recv`, `inbox_ack`, `inbox_status`); results are `ok` or the error's stable code
//! (`denied`, `not_ready`, `rate_limited`, `failed`, or a `subnet_*` code), so the label
//! set is small and fixed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use intercom_sc_bridge::{
    Backend, BackendError, CliResult, Identity, InboxRequest, JoinRequest, OpenRequest, SendReport,
    SendRequest, Stats, SubnetRequest,
};
use serde_json::{Map, Value};

/// Commands per `(type, result)`.
#[derive(Debug, Default)]
pub struct CommandCounters {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl CommandCounters {
    fn count(&self, kind: &'static str, result: &'static str) {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((kind, result)).or_default() += 1;
    }

    fn record<T>(&self, kind: &'static str, r: &Result<T, BackendError>) {
        self.count(kind, r.as_ref().map_or_else(error_code, |_| "ok"));
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn error_code(e: &BackendError) -> &'static str {
    match e {
        BackendError::Denied => "denied",
        BackendError::NotReady => "not_ready",
        BackendError::RateLimited => "rate_limited",
        BackendError::Failed(_) => "failed",
        BackendError::Subnet { code, .. } | BackendError::Inbox { code, .. } => code.as_str(),
        _ => "error",
    }
}

/// A [`Backend`] that counts what passes through it into [`CommandCounters`].
pub struct CountingBackend<B> {
    inner: B,
    counters: Arc<CommandCounters>,
}

impl<B> CountingBackend<B> {
    /// Wraps `inner`; the counts go to `counters`.
    pub fn new(inner: B, counters: Arc<CommandCounters>) -> Self {
        CountingBackend { inner, counters }
    }
}

impl<B: Backend> Backend for CountingBackend<B> {
    fn identity(&self) -> Identity {
        self.inner.identity()
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    async fn send(&self, req: SendRequest) -> Result<SendReport, BackendError> {
        let r = self.inner.send(req).await;
        self.counters.record("send", &r);
        r
    }

    async fn join(&self, req: JoinRequest) -> Result<(), BackendError> {
        let r = self.inner.join(req).await;
        self.counters.record("join", &r);
        r
    }

    async fn leave(&self, channel: String) -> Result<bool, BackendError> {
        let r = self.inner.leave(channel).await;
        self.counters.record("leave", &r);
        r
    }

    async fn open(&self, req: OpenRequest) -> Result<(), BackendError> {
        let r = self.inner.open(req).await;
        self.counters.record("open", &r);
        r
    }

    async fn stats(&self) -> Result<Stats, BackendError> {
        let r = self.inner.stats().await;
        self.counters.record("stats", &r);
        r
    }

    fn info(&self) -> Option<Value> {
        self.inner.info()
    }

    async fn cli(&self, command: String) -> CliResult {
        let r = self.inner.cli(command).await;
        self.counters
            .count("cli", if r.ok { "ok" } else { "failed" });
        r
    }

    async fn subnet(&self, req: SubnetRequest) -> Result<Map<String, Value>, BackendError> {
        let kind = match &req {
            SubnetRequest::Tx { .. } => "tx",
            SubnetRequest::Get { .. } => "get",
            SubnetRequest::Info => "subnet",
            SubnetRequest::Op { .. } => "subnet_op",
        };
        let r = self.inner.subnet(req).await;
        self.counters.record(kind, &r);
        r
    }

    async fn inbox(&self, req: InboxRequest) -> Result<Map<String, Value>, BackendError> {
        let kind = match &req {
            InboxRequest::Recv { .. } => "inbox_recv",
            InboxRequest::Ack { .. } => "inbox_ack",
            InboxRequest::Status { .. } => "inbox_status",
        };
        let r = self.inner.inbox(req).await;
        self.counters.record(kind, &r);
        r
    }
}
