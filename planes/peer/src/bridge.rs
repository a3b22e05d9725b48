//! The runtime as an SC-Bridge backend, and the sink that publishes its events to clients.

use intercom_sc_bridge::{
    Backend, BackendError, CliResult, DropNotice, ErrorCode, Event, Identity, InboxRequest,
    JoinRequest, OpenRequest, Publisher, SendReport, SendRequest, SidechannelMessage, Stats,
    SubnetRequest,
};
use intercom_sidechannel::{DropReason, JoinError, SendError, SidechannelEvent};
use intercom_subnet::{SubnetError, SubnetHandle};
use serde_json::{json, Map, Value};

use std::sync::Arc;

use crate::cli::{BridgeCliPolicy, Dispatcher};
use crate::events::{EventSink, PeerEvent};
use crate::inbox::{Inbox, InboxError, RecvQuery};
use crate::runtime::{now_ms, PeerError, PeerHandle};

/// [`Backend`] over a [`PeerHandle`]: what `intercom run` gives `Bridge::bind`.
#[derive(Debug, Clone)]
pub struct PeerBackend {
    handle: PeerHandle,
    cli: Option<Dispatcher>,
    info: Option<Value>,
    subnet: Option<SubnetHandle>,
    inbox: Option<Arc<Inbox>>,
}

impl PeerBackend {
    /// A backend for `handle`; `info` is what the `info` command returns when the bridge
    /// config has none.
    pub fn new(handle: PeerHandle, info: Option<Value>) -> Self {
        PeerBackend {
            handle,
            cli: None,
            info,
            subnet: None,
            inbox: None,
        }
    }

    /// Serves the bridge's `inbox_recv`, `inbox_ack` and `inbox_status` with `inbox`.
    pub fn with_inbox(mut self, inbox: Arc<Inbox>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Serves the bridge's `tx`, `get` and `subnet` commands with `subnet`.
    pub fn with_subnet(mut self, subnet: SubnetHandle) -> Self {
        self.subnet = Some(subnet);
        self
    }

    /// Serves the bridge's `cli` command with `dispatcher` (only called by the bridge when
    /// `--sc-bridge-cli 1`). A terminal dispatcher is restricted first with the default
    /// [`BridgeCliPolicy`] (public keys only, no `/exit`, no `@file`); pass one made by
    /// [`Dispatcher::for_bridge`] to choose the policy.
    pub fn with_cli(mut self, dispatcher: Dispatcher) -> Self {
        let dispatcher = if dispatcher.bridge_policy().is_some() {
            dispatcher
        } else {
            dispatcher.for_bridge(BridgeCliPolicy::default())
        };
        self.cli = Some(dispatcher);
        self
    }
}

/// How inbox errors surface through the bridge.
fn inbox_error(e: InboxError) -> BackendError {
    let code = match e {
        InboxError::BadAgent(_) => ErrorCode::InvalidField,
        _ => ErrorCode::InboxFailed,
    };
    BackendError::Inbox {
        code,
        message: e.to_string(),
    }
}

/// How runtime errors surface through the bridge.
fn backend_error(e: PeerError) -> BackendError {
    match e {
        PeerError::Stopped => BackendError::NotReady,
        PeerError::Accept(_) | PeerError::Credential(_) => BackendError::Denied,
        PeerError::Join(JoinError::InviteRequired(_) | JoinError::EmptyChannel) => {
            BackendError::Denied
        }
        PeerError::Send(
            SendError::OwnerOnly
            | SendError::NotJoined(_)
            | SendError::EmptyChannel
            | SendError::Invite(_)
            | SendError::Welcome(_)
            | SendError::MissingWelcome,
        ) => BackendError::Denied,
        other => BackendError::Failed(other.to_string()),
    }
}

impl Backend for PeerBackend {
    fn identity(&self) -> Identity {
        Identity {
            peer: Some(self.handle.public_key_hex()),
            address: None,
            entry_channel: Some(self.handle.entry_channel().to_owned()),
        }
    }

    async fn send(&self, req: SendRequest) -> Result<SendReport, BackendError> {
        let out = self
            .handle
            .send(&req.channel, req.message, req.invite, req.welcome)
            .await
            .map_err(backend_error)?;
        Ok(SendReport { peers: out.peers })
    }

    async fn join(&self, req: JoinRequest) -> Result<(), BackendError> {
        self.handle
            .join(&req.channel, req.invite, req.welcome)
            .await
            .map(|_| ())
            .map_err(backend_error)
    }

    async fn leave(&self, channel: String) -> Result<bool, BackendError> {
        match self.handle.leave(&channel).await {
            Ok(left) => Ok(left),
            // The reference's removeChannel returns false for the entry channel.
            Err(PeerError::Join(JoinError::EntryChannel)) => Ok(false),
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn open(&self, req: OpenRequest) -> Result<(), BackendError> {
        self.handle
            .request_open(&req.channel, req.via.as_deref(), req.invite, req.welcome)
            .await
            .map(|_| ())
            .map_err(backend_error)
    }

    async fn stats(&self) -> Result<Stats, BackendError> {
        let s = self.handle.stats().await.map_err(backend_error)?;
        let mut extra = Map::new();
        extra.insert("networked".into(), Value::Bool(s.networked));
        extra.insert("peers".into(), json!(s.peers));
        extra.insert(
            "sidechannel".into(),
            serde_json::to_value(&s.sidechannel).unwrap_or(Value::Null),
        );
        if let Some(subnet) = &self.subnet {
            let info = subnet.info().await.map_err(subnet_error)?;
            extra.insert("subnet".into(), info.to_json());
        }
        Ok(Stats {
            channels: s.sidechannel.channels.clone(),
            connection_count: s.connections,
            sidechannel_started: true,
            extra,
        })
    }

    fn info(&self) -> Option<Value> {
        self.info.clone()
    }

    async fn inbox(&self, req: InboxRequest) -> Result<Map<String, Value>, BackendError> {
        let Some(inbox) = &self.inbox else {
            return Err(BackendError::Inbox {
                code: ErrorCode::InboxUnavailable,
                message: "This peer keeps no inbox (--inbox 0).".into(),
            });
        };
        match req {
            InboxRequest::Recv {
                agent,
                wait_ms,
                limit,
                channel,
                from,
                ack,
            } => {
                let deadline =
                    tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
                let mut newest = inbox.subscribe();
                let mut query = RecvQuery {
                    limit,
                    channel,
                    from,
                    ack,
                };
                loop {
                    // Marks the current newest as seen before reading, so a message stored
                    // between the read and the wait still wakes the wait.
                    newest.borrow_and_update();
                    let got = inbox.recv(&agent, &query, now_ms()).map_err(inbox_error)?;
                    query.ack = None;
                    let waited_out = tokio::time::Instant::now() >= deadline;
                    if !got.messages.is_empty() || got.missed > 0 || waited_out {
                        return Ok(got.to_json(&agent));
                    }
                    tokio::select! {
                        changed = newest.changed() => {
                            if changed.is_err() {
                                return Ok(got.to_json(&agent));
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
            InboxRequest::Ack { agent, seq } => {
                let acked = inbox.ack(&agent, seq).map_err(inbox_error)?;
                let mut body = Map::new();
                body.insert("agent".into(), agent.into());
                body.insert("acked".into(), acked.into());
                Ok(body)
            }
            InboxRequest::Status { agent } => inbox
                .status(agent.as_deref(), now_ms())
                .map_err(inbox_error),
        }
    }

    async fn subnet(&self, req: SubnetRequest) -> Result<Map<String, Value>, BackendError> {
        let Some(subnet) = &self.subnet else {
            return Err(BackendError::Subnet {
                code: ErrorCode::SubnetUnavailable,
                message: "This peer runs no subnet plane.".into(),
            });
        };
        let value = match req {
            SubnetRequest::Tx { command, sim } => {
                intercom_subnet::commands::tx(subnet, &command, sim)
                    .await
                    .map_err(subnet_error)?
                    .1
            }
            SubnetRequest::Get {
                key, proof: true, ..
            } => {
                let proved = subnet.prove(&key).await.map_err(subnet_error)?;
                let state_key = format!("{}{key}", intercom_subnet::state::APP_PREFIX);
                let mut v = proved.to_json(&key, &state_key);
                v["confirmed"] = json!(true);
                v
            }
            SubnetRequest::Get { key, confirmed, .. } => {
                let (value, root) = subnet.get(&key, confirmed).await.map_err(subnet_error)?;
                json!({"key": key, "value": value, "confirmed": confirmed, "stateRoot": hex::encode(root)})
            }
            SubnetRequest::Info => subnet.info().await.map_err(subnet_error)?.to_json(),
            SubnetRequest::Op { op, args } => {
                let command = format!("/{op}");
                if !intercom_subnet::commands::is_op(&command, subnet.contract().as_ref()) {
                    return Err(BackendError::Subnet {
                        code: ErrorCode::InvalidOperation,
                        message: format!(
                            "unknown subnet_op {op:?}; use tx for contract transactions"
                        ),
                    });
                }
                let args = args.into_iter().map(|(k, v)| (k, Some(v))).collect();
                intercom_subnet::commands::run(subnet, &command, &args)
                    .await
                    .map_err(|message| BackendError::Subnet {
                        code: ErrorCode::SubnetFailed,
                        message,
                    })?
                    .1
            }
        };
        Ok(match value {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("result".into(), other);
                m
            }
        })
    }

    async fn cli(&self, command: String) -> CliResult {
        match &self.cli {
            Some(d) => d.run(&command).await,
            None => CliResult {
                ok: false,
                output: Vec::new(),
                error: Some("CLI is not supported by this peer.".to_owned()),
                result: Value::Null,
            },
        }
    }
}

/// How subnet failures surface through the bridge.
fn subnet_error(e: SubnetError) -> BackendError {
    let code = match &e {
        SubnetError::Contract(_) => ErrorCode::InvalidOperation,
        SubnetError::NotWriter(_) | SubnetError::TransactionsDisabled => ErrorCode::SubnetDenied,
        SubnetError::Stopped => ErrorCode::NotReady,
        _ => ErrorCode::SubnetFailed,
    };
    BackendError::Subnet {
        code,
        message: e.to_string(),
    }
}

/// Forwards the subnet's applied entries to bridge clients that subscribed with
/// `{type:"subscribe", subnet:true}`: one `{type:"subnet_applied", position, writer, seq,
/// author, ops:[{index, op, outcome, reason}], state_root}` per confirmed entry (a writer
/// appends what it was given at once as one entry; its operations share the entry's
/// position). A client that falls behind by more than the event buffer misses events and
/// is told so by a `subnet_lagged` event.
pub fn publish_subnet_events(subnet: &SubnetHandle, publisher: Publisher) {
    let mut events = subnet.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    let ops: Vec<Value> = e
                        .ops
                        .iter()
                        .map(|(index, op, outcome)| {
                            json!({
                                "index": index,
                                "op": op,
                                "outcome": outcome.label(),
                                "reason": outcome.reason(),
                            })
                        })
                        .collect();
                    publisher.publish(Event::Subnet(json!({
                        "type": "subnet_applied",
                        "position": e.position,
                        "writer": hex::encode(e.writer),
                        "seq": e.seq,
                        "author": e.author,
                        "ops": ops,
                        "state_root": hex::encode(e.state_root),
                    })));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    publisher.publish(Event::Subnet(json!({"type": "subnet_lagged", "missed": n})));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Publishes runtime events to SC-Bridge clients: delivered messages as
/// `sidechannel_message` (exactly as the reference), drops other than duplicates and our
/// own echoes as `sidechannel_drop`, and remote open requests as
/// `{type:"sidechannel_open_request", channel, via, from}` (an addition, subscribed by
/// the `via` channel).
#[derive(Debug, Clone)]
pub struct BridgeSink(pub Publisher);

impl EventSink for BridgeSink {
    fn deliver(&mut self, event: &PeerEvent) {
        let PeerEvent::Sidechannel { event, peer } = event else {
            return;
        };
        match event {
            SidechannelEvent::Message {
                channel, payload, ..
            } => {
                let value = payload.clone().into_value();
                self.0.publish(
                    SidechannelMessage::from_payload(channel.clone(), &value, now_ms()).into(),
                );
            }
            SidechannelEvent::Dropped {
                channel, reason, ..
            } => {
                if matches!(reason, DropReason::Duplicate | DropReason::OwnMessage) {
                    return;
                }
                let detail = match reason {
                    DropReason::Oversize { bytes, max } => Some(format!("{bytes} bytes > {max}")),
                    DropReason::Stale { age_ms, max_ms } => {
                        Some(format!("{age_ms} ms old > {max_ms}"))
                    }
                    DropReason::FromFuture { ahead_ms, max_ms } => {
                        Some(format!("{ahead_ms} ms ahead > {max_ms}"))
                    }
                    _ => None,
                };
                self.0.publish(Event::Drop(DropNotice {
                    channel: channel.clone(),
                    reason: reason.code().to_owned(),
                    from: peer.clone(),
                    detail,
                    ts: now_ms(),
                }));
            }
            SidechannelEvent::OpenRequested {
                channel, via, from, ..
            } => {
                self.0.publish(Event::Other {
                    channel: Some(via.clone()),
                    body: json!({
                        "type": "sidechannel_open_request",
                        "channel": channel,
                        "via": via,
                        "from": from,
                    }),
                });
            }
            _ => {}
        }
    }
}
