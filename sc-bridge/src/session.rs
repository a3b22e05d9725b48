//! The per-connection protocol state machine, free of sockets, tasks and clocks.
//!
//! The server feeds each decoded [`Request`] to [`Session::handle`], which either answers at once
//! ([`Step::Reply`]), asks the server to call the backend ([`Step::Call`], answered later through
//! [`Session::finish`]) or answers and closes ([`Step::ReplyAndClose`]). The publish path asks
//! [`Session::should_emit`] whether an event reaches this client. Time comes in as arguments (`now_ms` for `pong`,
//! `now` for the rate limiter), never from a clock inside.

use std::time::Instant;

use serde_json::Value;

use crate::backend::{
    InboxRequest, JoinRequest, OpenRequest, SendReport, SendRequest, SubnetRequest,
};
use crate::error::{BackendError, ErrorCode};
use crate::filter::{Filter, FilterScope};
use crate::protocol::{
    parse_json_or_base64, CliReply, CliResult, ClientMessage, ErrorReply, Request, ServerMessage,
    Stats,
};

/// Per-bridge settings the session needs.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub token: Option<String>,
    pub require_auth: bool,
    pub cli_enabled: bool,
    pub default_filter_raw: String,
    pub default_filter: Filter,
    pub max_subscriptions: usize,
    pub max_auth_failures: u32,
}

/// A backend operation the server must run for the session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    Send(SendRequest),
    Join(JoinRequest),
    Leave(String),
    Open(OpenRequest),
    Stats,
    Info,
    Cli(String),
    Subnet(SubnetRequest),
    Inbox(InboxRequest),
}

/// The result of a [`Call`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Sent(SendReport),
    Done,
    Left(bool),
    Stats(Stats),
    Info(Option<Value>),
    Cli(CliResult),
    Subnet(serde_json::Map<String, Value>),
    Inbox(serde_json::Map<String, Value>),
    Failed(BackendError),
    TimedOut,
}

/// Why the server closes a connection after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    TooManyAuthFailures,
}

/// What the server does next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Reply(ServerMessage),
    ReplyAndClose(ServerMessage, CloseReason),
    Call(Call),
}

/// One client's protocol state.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    authed: bool,
    ready: bool,
    filter: Filter,
    /// Subscribed channels in insertion order; empty means all channels.
    channels: Vec<String>,
    /// Receives `subnet_applied` events.
    subnet_events: bool,
    auth_failures: u32,
}

pub(crate) fn error(code: ErrorCode, text: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorReply::new(code, text))
}

const NOT_READY: &str = "Sidechannel not ready.";

fn not_ready() -> ServerMessage {
    error(ErrorCode::NotReady, NOT_READY)
}

fn missing_channel() -> ServerMessage {
    error(ErrorCode::MissingField, "Missing channel.")
}

/// Constant-time comparison of two secrets: the time taken depends only on the longer length, never on where the
/// inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff: u8 = 0;
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    let len_differs = u8::from(a.len() != b.len());
    std::hint::black_box(diff | len_differs) == 0
}

/// A validation failure: the code and the reference's text.
type InputError = (ErrorCode, &'static str);

/// Parses the raw invite/welcome pair of a command, reporting the reference's errors.
fn parse_invite_welcome(
    invite: Option<&Value>,
    welcome: Option<&Value>,
) -> Result<(Option<Value>, Option<Value>), InputError> {
    let parse = |raw: Option<&Value>, code, text| match raw {
        None => Ok(None),
        Some(raw) => parse_json_or_base64(raw).map(Some).ok_or((code, text)),
    };
    let invite = parse(
        invite,
        ErrorCode::InvalidInvite,
        "Invalid invite (expected JSON or base64).",
    )?;
    let welcome = parse(
        welcome,
        ErrorCode::InvalidWelcome,
        "Invalid welcome (expected JSON or base64).",
    )?;
    Ok((invite, welcome))
}

impl Session {
    pub fn new(cfg: &SessionConfig) -> Session {
        Session {
            authed: !cfg.require_auth,
            ready: !cfg.require_auth,
            filter: cfg.default_filter.clone(),
            channels: Vec::new(),
            subnet_events: false,
            auth_failures: 0,
        }
    }

    /// Whether the client asked for subnet events.
    pub fn wants_subnet_events(&self) -> bool {
        self.ready && self.subnet_events
    }

    /// Whether events are delivered to this client (authenticated, or auth not required).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether the client has authenticated (or auth is not required).
    pub fn is_authed(&self) -> bool {
        self.authed
    }

    /// The reference's `_shouldEmit`: subscription first, then the word filter where it applies.
    /// `haystack_lower` is the lower-cased message text, or `None` for events that are never word-filtered.
    pub fn should_emit(
        &self,
        scope: &FilterScope,
        channel: Option<&str>,
        haystack_lower: Option<&str>,
    ) -> bool {
        if !self.ready {
            return false;
        }
        if let Some(channel) = channel {
            if !self.channels.is_empty() && !self.channels.iter().any(|c| c == channel) {
                return false;
            }
            if let Some(text) = haystack_lower {
                if scope.applies(channel) {
                    return self.filter.matches_lowercase(text);
                }
            }
        }
        true
    }

    /// Handles one request (after rate limiting and decoding).
    pub fn handle(
        &mut self,
        cfg: &SessionConfig,
        req: Request,
        backend_ready: bool,
        now_ms: u64,
    ) -> Step {
        use ClientMessage as M;
        if let M::Auth { token } = &req.message {
            let Some(expected) = cfg.token.as_deref() else {
                return Step::Reply(error(ErrorCode::AuthNotEnabled, "Auth not enabled."));
            };
            let given = token.as_deref().unwrap_or("");
            if token.is_some() && constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                self.authed = true;
                self.ready = true;
                return Step::Reply(ServerMessage::AuthOk);
            }
            self.auth_failures = self.auth_failures.saturating_add(1);
            if cfg.max_auth_failures > 0 && self.auth_failures >= cfg.max_auth_failures {
                // The reference's text, with the code that says the connection closes.
                let reply = error(ErrorCode::TooManyAuthFailures, "Unauthorized.");
                return Step::ReplyAndClose(reply, CloseReason::TooManyAuthFailures);
            }
            return Step::Reply(error(ErrorCode::Unauthorized, "Unauthorized."));
        }
        if cfg.require_auth && !self.authed {
            return Step::Reply(error(ErrorCode::Unauthorized, "Unauthorized."));
        }
        let reply = |m| Step::Reply(m);
        match req.message {
            M::Auth { .. } => unreachable!("handled above"),
            M::Cli { command } => {
                if !cfg.cli_enabled {
                    return reply(error(ErrorCode::CliDisabled, "CLI over WS is disabled."));
                }
                if command.is_empty() {
                    return reply(error(ErrorCode::MissingField, "Missing command."));
                }
                Step::Call(Call::Cli(command))
            }
            M::Tx { command, sim } => {
                if command.is_empty() {
                    return reply(error(ErrorCode::MissingField, "Missing command."));
                }
                Step::Call(Call::Subnet(SubnetRequest::Tx { command, sim }))
            }
            M::Get {
                key,
                confirmed,
                proof,
            } => {
                if key.is_empty() {
                    return reply(error(ErrorCode::MissingField, "Missing key."));
                }
                if proof && !confirmed {
                    return reply(error(
                        ErrorCode::InvalidOperation,
                        "Proofs are of confirmed values only; drop confirmed:false.",
                    ));
                }
                Step::Call(Call::Subnet(SubnetRequest::Get {
                    key,
                    confirmed,
                    proof,
                }))
            }
            M::Subnet => Step::Call(Call::Subnet(SubnetRequest::Info)),
            M::Inbox(Ok(req)) => Step::Call(Call::Inbox(req)),
            M::Inbox(Err(why)) => reply(error(ErrorCode::InvalidField, why)),
            M::SubnetOp { op, args } => {
                if op.is_empty() {
                    return reply(error(ErrorCode::MissingField, "Missing op."));
                }
                Step::Call(Call::Subnet(SubnetRequest::Op { op, args }))
            }
            M::Ping => reply(ServerMessage::Pong { ts: now_ms }),
            M::SetFilter { filter } => {
                self.filter = Filter::parse(&filter);
                reply(ServerMessage::FilterSet { filter })
            }
            M::ClearFilter => {
                self.filter = Filter::empty();
                reply(ServerMessage::FilterSet {
                    filter: String::new(),
                })
            }
            M::Subscribe { channels, subnet } => {
                self.subnet_events |= subnet;
                let mut next = self.channels.clone();
                for ch in channels {
                    if !next.contains(&ch) {
                        next.push(ch);
                    }
                }
                if next.len() > cfg.max_subscriptions {
                    return reply(error(
                        ErrorCode::TooManyChannels,
                        format!(
                            "Too many subscribed channels (max {}).",
                            cfg.max_subscriptions
                        ),
                    ));
                }
                self.channels = next;
                reply(ServerMessage::Subscribed {
                    channels: self.channels.clone(),
                    subnet: self.subnet_events,
                })
            }
            M::Unsubscribe { channels, subnet } => {
                self.subnet_events &= !subnet;
                self.channels.retain(|c| !channels.contains(c));
                reply(ServerMessage::Subscribed {
                    channels: self.channels.clone(),
                    subnet: self.subnet_events,
                })
            }
            M::Send {
                channel,
                message,
                invite,
                welcome,
            } => {
                if !backend_ready {
                    return reply(not_ready());
                }
                if channel.is_empty() {
                    return reply(missing_channel());
                }
                let Some(message) = message else {
                    return reply(error(ErrorCode::MissingField, "Missing message."));
                };
                let (invite, welcome) =
                    match parse_invite_welcome(invite.as_ref(), welcome.as_ref()) {
                        Ok(pair) => pair,
                        Err((code, text)) => return reply(error(code, text)),
                    };
                // Reference: `if (invitePayload && welcome && !invitePayload.welcome) invitePayload = {...invite, welcome}`.
                let invite = match (invite, &welcome) {
                    (Some(Value::Object(mut inv)), Some(w))
                        if !inv.get("welcome").is_some_and(crate::protocol::js_truthy) =>
                    {
                        inv.insert("welcome".to_owned(), w.clone());
                        Some(Value::Object(inv))
                    }
                    (inv, _) => inv,
                };
                Step::Call(Call::Send(SendRequest {
                    channel,
                    message,
                    invite,
                    welcome,
                }))
            }
            M::Join {
                channel,
                invite,
                welcome,
            } => {
                if !backend_ready {
                    return reply(not_ready());
                }
                if channel.is_empty() {
                    return reply(missing_channel());
                }
                match parse_invite_welcome(invite.as_ref(), welcome.as_ref()) {
                    Ok((invite, welcome)) => Step::Call(Call::Join(JoinRequest {
                        channel,
                        invite,
                        welcome,
                    })),
                    Err((code, text)) => reply(error(code, text)),
                }
            }
            M::Leave { channel } => {
                if !backend_ready {
                    return reply(not_ready());
                }
                if channel.is_empty() {
                    return reply(missing_channel());
                }
                Step::Call(Call::Leave(channel))
            }
            M::Open {
                channel,
                via,
                invite,
                welcome,
            } => {
                if !backend_ready {
                    return reply(not_ready());
                }
                if channel.is_empty() {
                    return reply(missing_channel());
                }
                match parse_invite_welcome(invite.as_ref(), welcome.as_ref()) {
                    Ok((invite, welcome)) => Step::Call(Call::Open(OpenRequest {
                        channel,
                        via,
                        invite,
                        welcome,
                    })),
                    Err((code, text)) => reply(error(code, text)),
                }
            }
            M::Stats => {
                if !backend_ready {
                    return reply(not_ready());
                }
                Step::Call(Call::Stats)
            }
            M::Info => Step::Call(Call::Info),
            M::Unknown { type_name } => reply(error(
                ErrorCode::UnknownType,
                format!("Unknown type: {type_name}"),
            )),
        }
    }

    /// Turns a backend outcome into the reply, updating state where the reference does (`leave` unsubscribes).
    pub fn finish(&mut self, call: Call, outcome: Outcome) -> ServerMessage {
        if outcome == Outcome::TimedOut {
            return error(ErrorCode::Timeout, "Request timed out.");
        }
        match (call, outcome) {
            (Call::Send(req), Outcome::Sent(report)) => ServerMessage::Sent {
                channel: req.channel,
                peers: report.peers,
                warning: (report.peers == 0).then_some(ErrorCode::NoPeers),
            },
            (Call::Send(_), Outcome::Failed(e)) => match e {
                BackendError::Denied => error(
                    ErrorCode::SendDenied,
                    "Send denied (invite required or invalid).",
                ),
                e => common_failure(e, ErrorCode::SendFailed, "Send failed"),
            },
            (Call::Join(req), Outcome::Done) => ServerMessage::Joined {
                channel: req.channel,
            },
            (Call::Join(_), Outcome::Failed(e)) => match e {
                BackendError::Denied => error(
                    ErrorCode::JoinDenied,
                    "Join denied (invite required or invalid).",
                ),
                e => common_failure(e, ErrorCode::JoinFailed, "Join failed"),
            },
            (Call::Leave(channel), Outcome::Left(ok)) => {
                // Reference: leaving also drops the channel from this client's subscriptions.
                self.channels.retain(|c| *c != channel);
                ServerMessage::Left { channel, ok }
            }
            (Call::Leave(_), Outcome::Failed(e)) => {
                common_failure(e, ErrorCode::LeaveFailed, "Leave failed")
            }
            (Call::Open(req), Outcome::Done) => ServerMessage::OpenRequested {
                channel: req.channel,
                via: req.via,
            },
            (Call::Open(_), Outcome::Failed(e)) => match e {
                BackendError::Denied => error(
                    ErrorCode::OpenDenied,
                    "Open request denied (invalid input or missing invite/welcome).",
                ),
                e => common_failure(e, ErrorCode::OpenDenied, "Open request failed"),
            },
            (Call::Stats, Outcome::Stats(stats)) => ServerMessage::Stats(stats),
            (Call::Stats, Outcome::Failed(e)) => {
                common_failure(e, ErrorCode::StatsFailed, "Stats failed")
            }
            (Call::Info, Outcome::Info(Some(info))) => ServerMessage::Info { info },
            (Call::Info, Outcome::Info(None)) => {
                error(ErrorCode::InfoUnavailable, "Info not available.")
            }
            (Call::Cli(command), Outcome::Cli(r)) => ServerMessage::CliResult(CliReply {
                command,
                ok: r.ok,
                output: r.output,
                error: r.error,
                result: r.result,
            }),
            (Call::Subnet(req), Outcome::Subnet(body)) => match req {
                SubnetRequest::Tx { .. } => ServerMessage::TxResult(body),
                SubnetRequest::Get { .. } => ServerMessage::GetResult(body),
                SubnetRequest::Info => ServerMessage::Subnet(body),
                SubnetRequest::Op { .. } => ServerMessage::SubnetOpResult(body),
            },
            (Call::Subnet(_), Outcome::Failed(e)) => match e {
                BackendError::Subnet { code, message } => error(code, message),
                e => common_failure(e, ErrorCode::SubnetFailed, "Subnet command failed"),
            },
            (Call::Inbox(req), Outcome::Inbox(body)) => match req {
                InboxRequest::Recv { .. } => ServerMessage::Inbox(body),
                InboxRequest::Ack { .. } => ServerMessage::InboxAcked(body),
                InboxRequest::Status { .. } => ServerMessage::InboxStatus(body),
            },
            (Call::Inbox(_), Outcome::Failed(e)) => match e {
                BackendError::Inbox { code, message } => error(code, message),
                e => common_failure(e, ErrorCode::InboxFailed, "Inbox command failed"),
            },
            (call, outcome) => {
                tracing::error!(
                    ?call,
                    ?outcome,
                    "sc-bridge: backend outcome does not match the call"
                );
                error(ErrorCode::Other, "Internal error.")
            }
        }
    }
}

fn common_failure(e: BackendError, code: ErrorCode, prefix: &str) -> ServerMessage {
    match e {
        BackendError::NotReady => not_ready(),
        BackendError::RateLimited => error(ErrorCode::RateLimited, "Rate limited."),
        BackendError::Failed(m) if !m.is_empty() => error(code, format!("{prefix}: {m}")),
        _ => error(code, format!("{prefix}.")),
    }
}

/// A token bucket: `burst` commands at once, refilled at `per_second`. Time is passed in.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if available.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn cfg() -> SessionConfig {
        SessionConfig {
            token: Some("secret".into()),
            require_auth: true,
            cli_enabled: false,
            default_filter_raw: String::new(),
            default_filter: Filter::empty(),
            max_subscriptions: 3,
            max_auth_failures: 3,
        }
    }

    fn req(v: Value) -> Request {
        crate::protocol::decode_request(&v).unwrap()
    }

    fn authed(c: &SessionConfig) -> Session {
        let mut s = Session::new(c);
        assert_eq!(
            s.handle(c, req(json!({"type":"auth","token":"secret"})), true, 0),
            Step::Reply(ServerMessage::AuthOk)
        );
        s
    }

    fn err_code(step: Step) -> ErrorCode {
        match step {
            Step::Reply(ServerMessage::Error(e))
            | Step::ReplyAndClose(ServerMessage::Error(e), _) => e.code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn auth_flow_and_failure_cap() {
        let c = cfg();
        let mut s = Session::new(&c);
        assert!(!s.is_ready());
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"ping"})), true, 0)),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"auth"})), true, 0)),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"auth","token":"nope"})), true, 0)),
            ErrorCode::Unauthorized
        );
        let third = s.handle(&c, req(json!({"type":"auth","token":"secre"})), true, 0);
        assert!(matches!(
            third,
            Step::ReplyAndClose(_, CloseReason::TooManyAuthFailures)
        ));
        let s = authed(&c);
        assert!(s.is_ready() && s.is_authed());
        let open = SessionConfig {
            token: None,
            require_auth: false,
            ..cfg()
        };
        let mut s = Session::new(&open);
        assert!(s.is_ready());
        assert_eq!(
            err_code(s.handle(&open, req(json!({"type":"auth","token":"x"})), true, 0)),
            ErrorCode::AuthNotEnabled
        );
        assert_eq!(
            s.handle(&open, req(json!({"type":"ping"})), true, 7),
            Step::Reply(ServerMessage::Pong { ts: 7 })
        );
    }

    #[test]
    fn send_merges_welcome_into_invite() {
        let c = cfg();
        let mut s = authed(&c);
        let step = s.handle(
            &c,
            req(json!({"type":"send","channel":"p","message":"m","invite":{"i":1},"welcome":{"w":2}})),
            true,
            0,
        );
        assert_eq!(
            step,
            Step::Call(Call::Send(SendRequest {
                channel: "p".into(),
                message: json!("m"),
                invite: Some(json!({"i":1,"welcome":{"w":2}})),
                welcome: Some(json!({"w":2})),
            }))
        );
        let step = s.handle(
            &c,
            req(json!({"type":"send","channel":"p","message":"m","invite":{"welcome":{"x":0}},"welcome":{"w":2}})),
            true,
            0,
        );
        assert!(
            matches!(step, Step::Call(Call::Send(SendRequest { invite: Some(ref i), .. })) if i == &json!({"welcome":{"x":0}}))
        );
    }

    #[test]
    fn validation_order_matches_reference() {
        let c = cfg();
        let mut s = authed(&c);
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"send"})), false, 0)),
            ErrorCode::NotReady
        );
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"send"})), true, 0)),
            ErrorCode::MissingField
        );
        assert_eq!(
            err_code(s.handle(
                &c,
                req(json!({"type":"send","channel":"c","message":1,"invite":"zz"})),
                true,
                0
            )),
            ErrorCode::InvalidInvite
        );
        assert_eq!(
            err_code(s.handle(
                &c,
                req(json!({"type":"join","channel":"c","welcome":"{bad"})),
                true,
                0
            )),
            ErrorCode::InvalidWelcome
        );
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"stats"})), false, 0)),
            ErrorCode::NotReady
        );
        assert_eq!(
            s.handle(&c, req(json!({"type":"info"})), false, 0),
            Step::Call(Call::Info)
        );
        assert_eq!(
            err_code(s.handle(&c, req(json!({"type":"cli","command":"/x"})), true, 0)),
            ErrorCode::CliDisabled
        );
        let cli = SessionConfig {
            cli_enabled: true,
            ..cfg()
        };
        let mut s = authed(&cli);
        assert_eq!(
            err_code(s.handle(&cli, req(json!({"type":"cli","command":"  "})), true, 0)),
            ErrorCode::MissingField
        );
    }

    #[test]
    fn subscriptions_and_filters() {
        let c = cfg();
        let mut s = authed(&c);
        let scope = FilterScope::AllChannels;
        assert!(s.should_emit(&scope, Some("any"), Some("text")));
        s.handle(
            &c,
            req(json!({"type":"subscribe","channels":["a","b"]})),
            true,
            0,
        );
        assert!(s.should_emit(&scope, Some("a"), Some("text")));
        assert!(!s.should_emit(&scope, Some("z"), Some("text")));
        assert!(s.should_emit(&scope, None, None));
        assert_eq!(
            err_code(s.handle(
                &c,
                req(json!({"type":"subscribe","channels":["c","d"]})),
                true,
                0
            )),
            ErrorCode::TooManyChannels
        );
        s.handle(
            &c,
            req(json!({"type":"set_filter","filter":"buy+btc"})),
            true,
            0,
        );
        assert!(!s.should_emit(&scope, Some("a"), Some("sell btc")));
        assert!(s.should_emit(&scope, Some("a"), Some("buy btc")));
        assert!(s.should_emit(&scope, Some("a"), None)); // drops are never word-filtered
        let only_b = FilterScope::from_channels(Some(&["b".to_string()]));
        assert!(s.should_emit(&only_b, Some("a"), Some("sell btc")));
        s.handle(
            &c,
            req(json!({"type":"unsubscribe","channels":["a","b"]})),
            true,
            0,
        );
        assert!(s.should_emit(&only_b, Some("zzz"), Some("x"))); // empty set = all channels again
                                                                 // leave unsubscribes
        s.handle(&c, req(json!({"type":"subscribe","channel":"a"})), true, 0);
        let reply = s.finish(Call::Leave("a".into()), Outcome::Left(true));
        assert_eq!(
            reply,
            ServerMessage::Left {
                channel: "a".into(),
                ok: true
            }
        );
        assert!(s.channels.is_empty());
    }

    #[test]
    fn failure_texts() {
        let c = cfg();
        let mut s = authed(&c);
        let send = || {
            Call::Send(SendRequest {
                channel: "c".into(),
                message: json!(1),
                invite: None,
                welcome: None,
            })
        };
        let text = |m: ServerMessage| match m {
            ServerMessage::Error(e) => (e.code, e.error),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(s.finish(send(), Outcome::Failed(BackendError::Denied))),
            (
                ErrorCode::SendDenied,
                "Send denied (invite required or invalid).".into()
            )
        );
        assert_eq!(
            text(s.finish(send(), Outcome::Failed(BackendError::RateLimited))),
            (ErrorCode::RateLimited, "Rate limited.".into())
        );
        assert_eq!(
            text(s.finish(send(), Outcome::TimedOut)).0,
            ErrorCode::Timeout
        );
        let join = Call::Join(JoinRequest {
            channel: "c".into(),
            invite: None,
            welcome: None,
        });
        assert_eq!(
            text(s.finish(
                join.clone(),
                Outcome::Failed(BackendError::Failed("boom".into()))
            )),
            (ErrorCode::JoinFailed, "Join failed: boom".into())
        );
        assert_eq!(
            text(s.finish(join, Outcome::Failed(BackendError::Failed(String::new())))),
            (ErrorCode::JoinFailed, "Join failed.".into())
        );
        assert_eq!(
            s.finish(send(), Outcome::Sent(SendReport { peers: 0 })),
            ServerMessage::Sent {
                channel: "c".into(),
                peers: 0,
                warning: Some(ErrorCode::NoPeers)
            }
        );
    }

    #[test]
    fn rate_limiter() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 3, t0);
        assert!(r.allow(t0) && r.allow(t0) && r.allow(t0));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_millis(100)));
        assert!(!r.allow(t0 + Duration::from_millis(100)));
        assert!(r.allow(t0 + Duration::from_secs(10)));
    }

    /// Deterministic mutation smoke test: arbitrary frames never panic the decoder or the session.
    #[test]
    fn mutated_frames_never_panic() {
        let seeds = [
            r#"{"id":1,"type":"auth","token":"secret"}"#,
            r#"{"id":2,"type":"send","channel":"c","message":{"a":[1,2]},"invite":"eyJ3IjoxfQ==","welcome":{"w":1}}"#,
            r#"{"type":"join","channel":"c","invite":"{\"i\":1}"}"#,
            r#"{"type":"open","channel":"c","via":"v"}"#,
            r#"{"type":"subscribe","channels":["a","b"]}"#,
            r#"{"type":"set_filter","filter":"a+b|c"}"#,
            r#"{"type":"cli","command":"/help"}"#,
            r#"{"type":"leave","channel":"c"}"#,
        ];
        let open = SessionConfig {
            require_auth: false,
            cli_enabled: true,
            ..cfg()
        };
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut sessions = [Session::new(&cfg()), Session::new(&open)];
        for round in 0..20_000u32 {
            let seed = seeds[(next() % seeds.len() as u64) as usize].as_bytes();
            let mut bytes = seed.to_vec();
            for _ in 0..(next() % 4) {
                let pos = (next() % (bytes.len() as u64 + 1)) as usize;
                match next() % 3 {
                    0 if pos < bytes.len() => bytes[pos] = next() as u8,
                    1 => bytes.insert(pos, b"{}[]\",:0-e\\u"[(next() % 12) as usize]),
                    _ if pos < bytes.len() => {
                        bytes.remove(pos);
                    }
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let Ok(req) = crate::protocol::parse_frame(&text) else {
                continue;
            };
            let (c, s) = if round % 2 == 0 {
                (&cfg(), &mut sessions[0])
            } else {
                (&open, &mut sessions[1])
            };
            if let Step::Call(call) = s.handle(c, req, round % 3 != 0, 1) {
                let outcome = match &call {
                    Call::Send(_) => Outcome::Sent(SendReport { peers: 1 }),
                    Call::Leave(_) => Outcome::Left(true),
                    Call::Stats => Outcome::Stats(Stats::default()),
                    Call::Info => Outcome::Info(None),
                    Call::Cli(_) => Outcome::Cli(CliResult::default()),
                    Call::Subnet(_) => Outcome::Subnet(Default::default()),
                    Call::Inbox(_) => Outcome::Inbox(Default::default()),
                    Call::Join(_) | Call::Open(_) => Outcome::Failed(BackendError::Denied),
                };
                let reply = s.finish(call, outcome);
                let _ = crate::protocol::encode_reply(None, &reply);
            }
            let _ = s.should_emit(&FilterScope::AllChannels, Some("a"), Some("text"));
        }
    }
}
