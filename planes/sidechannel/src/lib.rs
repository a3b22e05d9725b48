//! Sidechannels: Intercom's ephemeral, signed JSON messaging between swarm peers, matching
//! the JS reference `features/sidechannel/index.js` (plus the invite and welcome commands
//! of `contract/protocol.js` and the flag parsing of `index.js`).
//!
//! The crate is sans-io: no sockets, no tasks, no clock. [`Sidechannel`] is a state
//! machine fed with inputs that carry the time (`now_ms`) and drained through
//! [`Sidechannel::poll_output`]; [`Policy::check`] is the pure policy engine it consults.
//!
//! * [`payload`]: payload building, signature and proof-of-work bases, `c.json` codec,
//!   topic and protocol names; [`payload::prepare`] does the CPU-bound part of a send.
//! * [`credentials`]: owner welcomes and invites (create, verify).
//! * [`args`]: welcome/invite arguments in JSON, base64, `b64:` and `@file` forms, and the
//!   sidechannel flag lists.
//! * [`policy`]: [`SidechannelConfig`] (every option, CLI defaults), [`Policy::check`],
//!   [`Verdict`], [`DropReason`], the token-bucket [`RateLimiter`].
//! * [`seen`]: the dedupe cache, filed by message timestamp and capped.
//! * [`plane`]: the [`Sidechannel`] state machine.
//!
//! # Wire format
//!
//! ```text
//! swarm topic   sha256("sidechannel:" + name)             name trimmed
//! protomux      protocol "sidechannel/<name>", no id, no handshake, one message type:
//!   type 0      c.json = uint length ‖ JSON.stringify(payload)
//! payload       {type:'sidechannel', id:'<from>:<ts>:<base36>', channel, from, origin,
//!                message, ts, ttl, invite?, pow?:{nonce, difficulty}, sig, relayedBy?}
//! controls      message = {control:'welcome', welcome} | {control:'auth', invite}
//!                       | {control:'open_channel', channel, invite?, welcome?}
//! ```
//!
//! `from`/`origin` are our Ed25519 public key in hex (the swarm identity); the signature
//! and proof of work are defined in [`payload`], welcomes and invites in [`credentials`].
//!
//! # Driving the plane (the runtime's side)
//!
//! 1. Create it with the peer's key pair ([`Sidechannel::new`]) and drain the outputs:
//!    every [`SidechannelEvent::Joined`] means `swarm.join(topic, {server, client})`,
//!    every [`SidechannelEvent::Left`] means `swarm.leave(topic)`.
//! 2. For every swarm connection pick a fresh [`ConnId`] and call
//!    [`Sidechannel::on_connection`] with the remote public key; on close,
//!    [`Sidechannel::on_disconnect`]. Refused connections (too many) should be closed.
//! 3. [`Output::OpenChannel`]: create (and pair) the protomux channel `protocol` on that
//!    connection (no id, no handshake) with one message type, 0, whose bytes pass
//!    through unchanged, and open it. A remote that opens `sidechannel/<name>` first is
//!    accepted only when [`Sidechannel::accepts_protocol`] says so. When a channel is open (either side
//!    initiated) call [`Sidechannel::on_channel_open`]; when it closes,
//!    [`Sidechannel::on_channel_closed`] (re-opening with a back-off, as the reference's
//!    five retries do, is the runtime's choice). [`Output::CloseChannel`]: close it.
//! 4. Every type-0 message: [`Sidechannel::on_message`] with the raw message bytes (the
//!    plane decodes `c.json`). [`Output::Send`]: send the bytes as message type 0 on that
//!    connection's channel — they are already `c.json` encoded.
//! 5. Sends: [`Sidechannel::broadcast`] runs the proof of work inline (about 4,096 hashes
//!    at the default difficulty). To keep an async runtime responsive call
//!    [`Sidechannel::begin_broadcast`], run the returned [`BroadcastJob`] on a blocking
//!    thread, then [`Sidechannel::finish_broadcast`]. Welcomes and `auth` payloads sent on
//!    channel open are built inline (cheap at the default difficulty).
//! 7. Command surfaces map onto: `/sc_join` = [`Sidechannel::accept_invite`] then
//!    [`Sidechannel::join`]; `/sc_send` = [`Sidechannel::broadcast`]; `/sc_open` =
//!    [`Sidechannel::request_open`]; `/sc_invite` = [`Sidechannel::create_invite`];
//!    `/sc_welcome` = [`Sidechannel::create_welcome`]; `/sc_stats` = [`Sidechannel::stats`];
//!    `--sidechannel-*` flags fill [`SidechannelConfig`] (helpers in [`args`]).
//! 6. Drain [`Sidechannel::poll_output`] after every input (the queue is bounded; what
//!    does not fit is counted in [`Stats::outputs_discarded`]). Application events
//!    ([`SidechannelEvent`]) go to SC-Bridge and logs; a message the reference would drop
//!    silently is always reported as [`SidechannelEvent::Dropped`].
//!
//! # Deliberate differences from the JS reference
//!
//! Wire format, signatures, proofs of work, welcomes and invites are byte-compatible;
//! JS peers accept everything we send (see `tests/node/sidechannel-golden.js`). The policy
//! is stricter or more robust where the reference has gaps:
//!
//! * **Every drop is reported** ([`SidechannelEvent::Dropped`] with a [`DropReason`]).
//! * **Signatures are verified on every message** against `from`
//!   ([`SidechannelConfig::verify_signatures`], on by default); the reference verifies
//!   only on owner-only channels, so `from` is spoofable elsewhere. JS peers always sign.
//! * **`payload.channel` must name the channel a message arrived on**
//!   ([`DropReason::ChannelMismatch`]); the reference ignores it, allowing owner-signed
//!   messages to be replayed into other channels of the same owner.
//! * **Exactly-once delivery**: dedupe keys are the JSON text of `id` (the reference never
//!   remembers falsy ids and keys object ids by identity, so those were delivered again);
//!   an id is remembered only once its message is accepted (a copy dropped while the
//!   channel awaited its welcome no longer burns the id); our own messages coming back
//!   through relays are dropped ([`DropReason::OwnMessage`]); relays skip the connection a
//!   message came from and the peers that authored it.
//! * **A freshness window on `ts`** ([`SidechannelConfig::max_message_age_ms`], 120 s by
//!   default, `--sidechannel-max-age`): a message stamped longer ago is dropped
//!   ([`DropReason::Stale`]), one stamped more than
//!   [`SidechannelConfig::max_clock_skew_ms`] (30 s) ahead of our clock too
//!   ([`DropReason::FromFuture`]), one without a numeric `ts` as
//!   [`DropReason::NoTimestamp`]. The reference checks no timestamp, so an old signed
//!   message could be replayed once its id had left its cache. JS senders stamp
//!   `Date.now()` (ms since the Unix epoch, our clock too) and relays keep it, so their
//!   messages pass unless the clocks differ by more than the window or the allowance.
//! * **A dedupe that a burst cannot flush**: ids are filed by their message's `ts` and kept
//!   until it leaves the window ([`seen`]), never evicted early; the reference keeps the
//!   5,000 most recent ids (120 s), so a burst of 5,000 others made any earlier message
//!   deliverable again. Memory is capped by [`SidechannelConfig::max_seen`]; at the cap
//!   new messages are dropped ([`DropReason::DedupeFull`], counted in
//!   [`Stats::seen_refused`]) instead.
//! * **Receive-side size limit**: payloads over `max_message_bytes` are dropped
//!   ([`DropReason::Oversize`]; the reference checks only when sending), and are not even
//!   parsed when the wire size alone is too big.
//! * **Invalid input costs rate budget**: messages dropped as oversize, malformed, or by
//!   the invite or proof-of-work checks are charged to the sender's token bucket (the
//!   reference charges only messages that pass those checks, so floods of invalid
//!   messages, each costing us a hash or a signature check, were never blocked).
//! * **Relayed TTLs are capped** at our own `relay_ttl`, so one peer cannot make the
//!   network flood far with a huge TTL.
//! * **Blocks survive reconnects**: a rate-limit block is remembered per peer key (bounded),
//!   where the reference keys it by connection object, so reconnecting reset it.
//! * **Sends never claim success without a recipient**: `broadcast` returns
//!   [`SendError::NoPeers`] (with counts) instead of `true`; it requires a joined channel
//!   ([`SendError::NotJoined`]; the reference silently registers the channel) and does not
//!   queue for channels still opening (the reference sends once they open).
//! * **Invalid credentials are errors**: `accept_invite`, `broadcast` with an invite and
//!   `request_open` report a bad invite or welcome instead of ignoring it; `request_open`
//!   refuses to send a request that peers would reject for lack of a welcome.
//! * **Owners trust themselves**: a channel whose owner key is ours counts as welcomed even
//!   via `default_owner_key` (the reference does so only for per-channel owner keys).
//! * **Late authorisation**: an owner sends its welcome to a peer that proves its invite
//!   after the channel opened (the reference only sends on open, so such peers never got
//!   it unless the invite embedded it).
//! * **Leaving a channel keeps its configured welcome** (the reference forgets it until
//!   restart).
//! * **Lenient proof of work for JS open requests**: JS `requestOpen` hashes its message
//!   with `invite: undefined`/`welcome: undefined` keys as `null` before the JSON round
//!   trip drops them, so JS receivers reject those requests; we accept either form.
//! * **Bounds**: channels, connections, authorised peers per channel, blocked keys, stored
//!   welcomes and invites and the output queue are capped ([`SidechannelConfig`]).
//! * Proof-of-work difficulty is capped at 32 bits (the reference loops forever above
//!   what it can find); welcome and invite arguments must decode to JSON objects.
//! * Values JS can hold but serde_json cannot (lone UTF-16 surrogates in strings, nesting
//!   deeper than 128) make a payload malformed here.

pub mod args;
pub mod credentials;
pub mod js;
pub mod payload;
pub mod plane;
pub mod policy;
pub mod seen;

pub use credentials::{
    create_invite, create_welcome, verify_invite, verify_welcome, CredentialError,
};
pub use payload::{Payload, PayloadError, PrepareParams, ENTRY_CHANNEL};
pub use plane::{
    AcceptError, AcceptReport, BroadcastJob, BroadcastReport, ConnError, ConnId, JoinError, Output,
    PreparedBroadcast, SendError, Sidechannel, SidechannelEvent, Stats,
};
pub use policy::{
    Action, CheckCtx, ConfigError, DropReason, Effects, Inbound, PlaneView, Policy, RateLimiter,
    SidechannelConfig, Verdict,
};

/// Fuzz entry point: feeds arbitrary bytes through every decoder and through the policy
/// of a configured plane (entry, welcomed, owner-only and invite-only channels), checks
/// that whatever the plane sends decodes again, and that replays of the same bytes inside
/// and after the freshness window deliver nothing twice.
pub fn fuzz_payload(data: &[u8]) {
    use intercom_crypto::KeyPair;
    use serde_json::Value;

    let text = String::from_utf8_lossy(data);
    let _ = args::parse_welcome_arg(&text);
    let _ = args::parse_arg_file_text(&text);
    let _ = args::parse_json_or_base64(&Value::String(text.to_string()));
    let _ = js::normalize_key_hex(&Value::String(text.to_string()));
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        let _ = js::to_number(&v);
        let _ = js::normalize_key_hex(&v);
        let _ = credentials::verify_welcome(&v, "room", Some("00"));
        let _ = credentials::verify_invite(&v, "vip", "00", None, 0);
    }
    if let Ok(p) = Payload::decode(data) {
        let _ = payload::sig_base(&p);
        let _ = payload::check_pow(&p, 4);
        assert_eq!(Payload::decode(&p.encode()).as_ref(), Ok(&p));
    }

    let owner = KeyPair::from_seed(&[1; 32]);
    let me = KeyPair::from_seed(&[2; 32]);
    let owner_hex = hex::encode(owner.public_key);
    let mut cfg = SidechannelConfig {
        pow_required_channels: Some(["pow".to_owned()].into()),
        pow_difficulty: 1,
        owner_write_channels: Some(["owned".to_owned()].into()),
        invite_required: true,
        invite_required_channels: Some(["vip".to_owned()].into()),
        inviter_keys: vec![owner_hex.clone()],
        default_owner_key: Some(owner_hex),
        channels: vec!["room".into(), "owned".into(), "pow".into(), "vip".into()],
        ..SidechannelConfig::default()
    };
    for ch in ["room", "owned", "pow"] {
        cfg.welcome_by_channel
            .insert(ch.into(), create_welcome(&owner, ch, "hi", 1));
    }
    let Ok(mut plane) = Sidechannel::new(cfg, me) else {
        return;
    };
    let invite = create_invite(&owner, "vip", plane.self_key(), 1_000_000, None, 0).ok();
    let _ = plane.accept_invite(0, "vip", invite.as_ref(), None);
    let _ = plane.join(0, "vip");
    let _ = plane.on_connection(ConnId(1), owner.public_key);
    let _ = plane.on_connection(ConnId(2), [9; 32]);
    for ch in ["0000intercom", "room", "owned", "pow", "vip"] {
        plane.on_channel_open(1, ConnId(1), ch);
        plane.on_channel_open(1, ConnId(2), ch);
    }
    let mut wrapped = intercom_encoding::Writer::new();
    wrapped.string(&text);
    let wrapped = wrapped.into_vec();
    for (i, ch) in ["0000intercom", "room", "owned", "pow", "vip", "nope"]
        .iter()
        .enumerate()
    {
        plane.on_message(10 + i as u64, ConnId(1), ch, data);
        plane.on_message(10 + i as u64, ConnId(2), ch, &wrapped);
    }
    plane.on_message(100, ConnId(3), "room", data);
    // Exactly once: no id is delivered twice, neither when the same bytes come again
    // inside the freshness window (a minute later, through the other connection) nor
    // after it (then they are stale).
    let mut delivered = std::collections::BTreeSet::new();
    let mut drain = |plane: &mut Sidechannel| {
        while let Some(out) = plane.poll_output() {
            match out {
                Output::Send { bytes, .. } => assert!(
                    Payload::decode(&bytes).is_ok(),
                    "plane sent undecodable bytes"
                ),
                Output::Event(SidechannelEvent::Message {
                    channel, payload, ..
                }) => assert!(
                    delivered.insert(payload.dedupe_key(&channel)),
                    "delivered twice: {payload:?}"
                ),
                _ => {}
            }
        }
    };
    drain(&mut plane);
    for now in [60_010, 200_010] {
        for ch in ["0000intercom", "room", "owned", "pow", "vip"] {
            plane.on_message(now, ConnId(2), ch, data);
            plane.on_message(now, ConnId(1), ch, &wrapped);
        }
        drain(&mut plane);
    }
}

/// Fuzz entry point for the dedupe cache alone: see [`seen::fuzz_ops`].
pub fn fuzz_dedupe(data: &[u8]) {
    seen::fuzz_ops(data);
}
