//! Unit tests of the core with hand-built frames. The expected bytes were produced by the
//! JS module (protomux 3.12.1 over a stream that records its writes).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn tx(core: &mut MuxCore) -> Vec<String> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|f| to_hex(&f))
        .collect()
}

fn events(core: &mut MuxCore) -> Vec<MuxEvent> {
    let out = std::iter::from_fn(|| core.poll_event()).collect();
    core.assert_invariants();
    out
}

fn js_core() -> MuxCore {
    MuxCore::new(CoreConfig::default().with_grace_ms(0))
}

fn feed(core: &mut MuxCore, frame: &str) {
    core.handle_frame(&hex(frame)).unwrap();
    core.assert_invariants();
}

fn message(channel: ChannelId, message_type: u32, payload: &[u8]) -> MuxEvent {
    MuxEvent::Message {
        channel,
        message_type,
        payload: payload.to_vec(),
    }
}

/// A core with one channel "p" both sides have opened (our id 1, remote id 1).
fn opened_pair() -> (MuxCore, ChannelId) {
    let mut core = js_core();
    let ch = core.open_channel("p", None, []).unwrap();
    feed(&mut core, "000101017000");
    tx(&mut core);
    events(&mut core);
    (core, ch)
}

#[test]
fn open_message_close_bytes() {
    let mut core = js_core();
    let ch = core.open_channel("test", Some(&[1, 2]), b"hs").unwrap();
    assert_eq!(ch.local_id(), 1);
    core.send(ch, 1, b"hello").unwrap();
    core.close(ch);
    assert_eq!(
        tx(&mut core),
        ["00010104746573740201026873", "010168656c6c6f", "000301"]
    );
    assert_eq!(
        events(&mut core),
        [MuxEvent::Closed {
            channel: ch,
            by_remote: false
        }]
    );
    assert!(!core.is_idle(), "id 1 waits for the peer's answer");
}

#[test]
fn empty_id_is_no_id() {
    let mut core = js_core();
    core.open_channel("a", Some(&[]), []).unwrap();
    assert_eq!(tx(&mut core), ["000101016100"]);
    assert!(core.is_opened("a", None));
    assert!(core.is_opened("a", Some(&[])));
}

#[test]
fn cork_batch_layout_matches_js() {
    let mut core = js_core();
    core.cork();
    let a = core.open_channel("a", None, []).unwrap();
    let b = core.open_channel("b", None, []).unwrap();
    core.send(a, 0, b"x").unwrap();
    core.send(a, 1, b"yz").unwrap();
    core.send(b, 0, b"").unwrap();
    core.send_encoded(EncodedMessage::new(a, 0, b"w")).unwrap();
    core.close(a);
    assert!(tx(&mut core).is_empty());
    core.uncork();
    assert_eq!(
        tx(&mut core),
        [
            "000000050101016100050102016200000102007803017 97a0002010000010200770000020301"
                .replace(' ', "")
        ]
    );
}

#[test]
fn cork_nests_and_uncork_without_cork_is_harmless() {
    let (mut core, ch) = opened_pair();
    core.uncork();
    core.cork();
    core.cork();
    core.send(ch, 0, b"a").unwrap();
    core.uncork();
    assert!(tx(&mut core).is_empty());
    assert!(core.is_corked());
    core.uncork();
    assert_eq!(tx(&mut core), ["0000010200 61".replace(' ', "")]);
    core.cork();
    core.uncork();
    assert!(tx(&mut core).is_empty(), "an empty batch is not sent");
}

#[test]
fn batch_splits_at_max_batch_like_js() {
    let mut core = js_core();
    let a = core.open_channel("a", None, []).unwrap();
    assert_eq!(tx(&mut core), ["000101016100"]);
    core.cork();
    let big = vec![0u8; 3 * 1024 * 1024];
    for _ in 0..4 {
        core.send(a, 0, &big).unwrap();
    }
    core.send(a, 0, b"t").unwrap();
    core.uncork();
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| core.poll_transmit()).collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].len(), 9_437_205);
    assert_eq!(frames[1].len(), 3_145_740);
    assert_eq!(to_hex(&frames[0][..12]), "000001fe0100300000000000");
    assert_eq!(to_hex(&frames[1][..12]), "000001fe0100300000000000");
    assert_eq!(to_hex(&frames[1][frames[1].len() - 3..]), "020074");
}

#[test]
fn unmatched_remote_open_is_rejected_at_once_with_zero_grace() {
    let mut core = js_core();
    feed(&mut core, "000101016100");
    feed(&mut core, "000102016200");
    assert_eq!(tx(&mut core), ["000201", "000202"]);
    assert!(events(&mut core).is_empty());
    assert_eq!(core.pending_remote_opens(), 0);
}

#[test]
fn rejects_for_a_batch_go_out_as_one_batch() {
    let mut core = js_core();
    feed(
        &mut core,
        "0000000501010161000501020162 00".replace(' ', "").as_str(),
    );
    assert_eq!(tx(&mut core), ["000000020201020202"]);
}

#[test]
fn grace_period_holds_then_rejects() {
    let mut core = MuxCore::new(CoreConfig::default());
    core.handle_timeout(5);
    feed(&mut core, "000101016100");
    assert!(tx(&mut core).is_empty());
    assert_eq!(core.poll_timeout(), Some(1005));
    core.handle_timeout(1004);
    assert!(tx(&mut core).is_empty());
    core.handle_timeout(1005);
    assert_eq!(tx(&mut core), ["000201"]);
    assert_eq!(core.poll_timeout(), None);
    assert!(events(&mut core).is_empty());
    // The remote id is free again: the peer may reuse it.
    feed(&mut core, "000101016100");
    assert_eq!(core.pending_remote_opens(), 1);
}

#[test]
fn local_open_within_grace_pairs_and_replays_pending() {
    let mut core = MuxCore::new(CoreConfig::default());
    feed(&mut core, "0001010161 00 6873".replace(' ', "").as_str());
    feed(&mut core, "0100aa");
    feed(&mut core, "0102bbcc");
    assert_eq!(core.buffered(), 512 + 1 + 512 + 2);
    let ch = core.open_channel("a", None, b"me").unwrap();
    assert_eq!(tx(&mut core), ["0001010161006d65"]);
    assert_eq!(
        events(&mut core),
        [
            MuxEvent::Opened {
                channel: ch,
                remote_handshake: b"hs".to_vec()
            },
            message(ch, 0, &[0xaa]),
            message(ch, 2, &[0xbb, 0xcc]),
        ]
    );
    assert_eq!(core.buffered(), 0);
    assert_eq!(core.poll_timeout(), None);
    assert!(core.is_fully_opened(ch));
    feed(&mut core, "0101dd");
    assert_eq!(events(&mut core), [message(ch, 1, &[0xdd])]);
    core.handle_timeout(10_000);
    assert!(tx(&mut core).is_empty());
}

#[test]
fn local_first_then_remote_open() {
    let mut core = js_core();
    let ch = core.open_channel("p", Some(&[9]), []).unwrap();
    assert_eq!(tx(&mut core), ["00010101700109"]);
    assert!(!core.is_fully_opened(ch));
    feed(&mut core, "0001010170010968616e64");
    assert_eq!(
        events(&mut core),
        [MuxEvent::Opened {
            channel: ch,
            remote_handshake: b"hand".to_vec()
        }]
    );
}

#[test]
fn pairing_emits_requests_and_waits_for_the_application() {
    let mut core = MuxCore::new(CoreConfig::default());
    core.pair("a", None);
    feed(&mut core, "00010101610105");
    assert_eq!(
        events(&mut core),
        [MuxEvent::RemoteOpenRequest {
            protocol: "a".into(),
            id: Some(vec![5])
        }]
    );
    assert_eq!(core.poll_timeout(), None);
    feed(&mut core, "010001");
    core.handle_timeout(1_000_000);
    assert!(tx(&mut core).is_empty());
    let ch = core.open_channel("a", Some(&[5]), []).unwrap();
    assert_eq!(tx(&mut core), ["00010101610105"]);
    assert_eq!(
        events(&mut core),
        [
            MuxEvent::Opened {
                channel: ch,
                remote_handshake: vec![]
            },
            message(ch, 0, &[1]),
        ]
    );
}

#[test]
fn pairing_with_an_id_only_matches_that_id() {
    let mut core = js_core();
    core.pair("a", Some(&[1]));
    feed(&mut core, "00010101610101");
    feed(&mut core, "00010201610102");
    assert_eq!(tx(&mut core), ["000202"]);
    assert_eq!(events(&mut core).len(), 1);
    assert_eq!(core.reject_remote("a", Some(&[1])), 1);
    assert_eq!(tx(&mut core), ["000201"]);
    assert_eq!(core.pending_remote_opens(), 0);
}

#[test]
fn pair_after_hold_claims_held_opens_and_unpair_restarts_grace() {
    let mut core = MuxCore::new(CoreConfig::default());
    feed(&mut core, "000101016100");
    assert_eq!(core.poll_timeout(), Some(1000));
    core.pair("a", None);
    assert_eq!(core.poll_timeout(), None);
    assert_eq!(
        events(&mut core),
        [MuxEvent::RemoteOpenRequest {
            protocol: "a".into(),
            id: None
        }]
    );
    core.handle_timeout(2000);
    core.unpair("a", None);
    assert_eq!(core.poll_timeout(), Some(3000));
    core.handle_timeout(3000);
    assert_eq!(tx(&mut core), ["000201"]);
}

#[test]
fn unpair_with_zero_grace_rejects_at_once() {
    let mut core = js_core();
    core.pair("a", None);
    feed(&mut core, "000101016100");
    events(&mut core);
    core.unpair("a", None);
    assert_eq!(tx(&mut core), ["000201"]);
}

#[test]
fn pending_buffer_pauses_like_js_and_has_a_hard_limit() {
    let mut core = js_core();
    core.pair("a", None);
    feed(&mut core, "000101016100");
    let mut frame = hex("0100");
    frame.resize(2 + 32768 - 512 - 1, 0);
    core.handle_frame(&frame).unwrap();
    assert_eq!(core.buffered(), 32767);
    assert!(!core.wants_pause());
    feed(&mut core, "0100");
    assert_eq!(core.buffered(), 33279);
    assert!(core.wants_pause());
    core.reject_remote("a", None);
    assert_eq!(core.buffered(), 0);
    assert!(!core.wants_pause());

    let mut core = MuxCore::new(CoreConfig {
        max_held_bytes: 10_000,
        ..CoreConfig::default()
    });
    let ch = core.open_channel("x", None, []).unwrap();
    core.pair("a", None);
    feed(&mut core, "000101016100");
    events(&mut core);
    let mut err = None;
    for _ in 0..20 {
        if let Err(e) = core.handle_frame(&[1, 0, 0, 0, 0, 0]) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(MuxError::PendingOverflow(10_000))));
    assert!(core.is_destroyed());
    assert_eq!(
        events(&mut core),
        [MuxEvent::Closed {
            channel: ch,
            by_remote: true
        }]
    );
    assert!(matches!(core.handle_frame(&[0]), Err(MuxError::Closed)));
}

#[test]
fn too_many_pending_opens_fails() {
    let mut core = MuxCore::new(CoreConfig {
        max_pending_opens: 3,
        ..CoreConfig::default()
    });
    for id in 1..=3u8 {
        core.handle_frame(&[0, 1, id, 1, b'a', 0]).unwrap();
    }
    assert_eq!(core.pending_remote_opens(), 3);
    assert!(matches!(
        core.handle_frame(&[0, 1, 4, 1, b'a', 0]),
        Err(MuxError::TooManyPendingOpens(3))
    ));
}

#[test]
fn ids_are_reused_like_js() {
    let mut core = js_core();
    let x = core.open_channel("p", None, []).unwrap();
    let y = core.open_channel("p", None, []).unwrap();
    feed(&mut core, "000101017000");
    feed(&mut core, "000102017000");
    core.close(x);
    let z = core.open_channel("q", None, []).unwrap();
    assert_eq!(z.local_id(), 1);
    core.close(z); // not answered yet: id 1 stays taken
    let w = core.open_channel("r", None, []).unwrap();
    assert_eq!(w.local_id(), 3);
    feed(&mut core, "000201"); // the peer rejects z: id 1 is free
    let v = core.open_channel("s", None, []).unwrap();
    assert_eq!(v.local_id(), 1);
    assert_eq!(
        tx(&mut core),
        [
            "000101017000",
            "000102017000",
            "000301",
            "000101017100",
            "000301",
            "000103017200",
            "000101017300"
        ]
    );
    let ids: Vec<u32> = core.channels().iter().map(ChannelId::local_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_ne!(v, x, "a reused id is a different channel");
    assert!(matches!(core.send(x, 0, b""), Err(MuxError::ChannelClosed)));
    assert!(core.is_channel_open(y));
}

#[test]
fn remote_close_closes_and_frees_the_id() {
    let (mut core, ch) = opened_pair();
    feed(&mut core, "000301");
    assert_eq!(
        events(&mut core),
        [MuxEvent::Closed {
            channel: ch,
            by_remote: true
        }]
    );
    assert!(tx(&mut core).is_empty(), "JS does not answer a close");
    assert!(core.is_idle());
    assert!(!core.is_opened("p", None));
    // Messages for the closed remote id are ignored, and the id may be opened again.
    feed(&mut core, "0100ff");
    feed(&mut core, "000301");
    assert!(events(&mut core).is_empty());
    feed(&mut core, "000101017000");
    assert_eq!(tx(&mut core), ["000201"]);
}

#[test]
fn reject_of_our_open_closes_the_channel() {
    let mut core = js_core();
    let ch = core.open_channel("p", None, []).unwrap();
    feed(&mut core, "000201");
    assert_eq!(
        events(&mut core),
        [
            MuxEvent::Rejected { channel: ch },
            MuxEvent::Closed {
                channel: ch,
                by_remote: true
            }
        ]
    );
    assert!(core.is_idle());
    assert!(matches!(
        core.handle_frame(&hex("000201")),
        Err(MuxError::InvalidReject(1))
    ));
}

#[test]
fn reject_of_an_answered_channel_is_invalid() {
    let (mut core, _) = opened_pair();
    assert!(matches!(
        core.handle_frame(&hex("000201")),
        Err(MuxError::InvalidReject(1))
    ));
    let mut core = js_core();
    assert!(matches!(
        core.handle_frame(&hex("000200")),
        Err(MuxError::InvalidReject(0))
    ));
}

#[test]
fn close_of_a_held_open_is_answered_with_a_reject() {
    let mut core = MuxCore::new(CoreConfig::default());
    feed(&mut core, "000101016100");
    feed(&mut core, "0100aa");
    feed(&mut core, "000301");
    assert_eq!(tx(&mut core), ["000201"]);
    assert_eq!(core.pending_remote_opens(), 0);
    assert_eq!(core.buffered(), 0);
    // The channel we open now is a fresh outgoing open, not paired with the dead one.
    let ch = core.open_channel("a", None, []).unwrap();
    assert!(!core.is_fully_opened(ch));
}

#[test]
fn remote_open_answering_a_closed_channel_frees_the_id() {
    let mut core = js_core();
    let ch = core.open_channel("p", None, []).unwrap();
    core.close(ch);
    tx(&mut core);
    events(&mut core);
    feed(&mut core, "000101017000");
    assert_eq!(tx(&mut core), ["000301"], "our close is repeated");
    assert!(events(&mut core).is_empty());
    assert!(core.is_idle());
    // Our slot for the peer's id stays empty: messages to it are ignored.
    feed(&mut core, "0100aa");
    assert!(events(&mut core).is_empty());
}

#[test]
fn invalid_opens_destroy_the_mux() {
    let (mut core, ch) = opened_pair();
    assert!(matches!(
        core.handle_frame(&hex("000101017000")),
        Err(MuxError::InvalidOpen(1))
    ));
    assert_eq!(
        events(&mut core),
        [MuxEvent::Closed {
            channel: ch,
            by_remote: true
        }]
    );
    let mut core = js_core();
    assert!(matches!(
        core.handle_frame(&hex("000102017000")),
        Err(MuxError::InvalidOpen(2))
    ));
    let mut core = js_core();
    assert!(matches!(
        core.handle_frame(&hex("000100017000")),
        Err(MuxError::InvalidOpen(0))
    ));
    let mut core = MuxCore::new(CoreConfig {
        max_remote_id: 2,
        ..CoreConfig::default()
    });
    assert!(matches!(
        core.handle_frame(&hex("000103017000")),
        Err(MuxError::RemoteIdTooLarge(3))
    ));
}

#[test]
fn ignored_frames() {
    let (mut core, _) = opened_pair();
    feed(&mut core, "");
    feed(&mut core, "0009ffff"); // unknown control type
    feed(&mut core, "0500aa"); // unknown remote channel
    feed(&mut core, "01ff0000000001000000aa"); // type beyond u32
    feed(&mut core, "000300"); // close of channel 0
    feed(&mut core, "000309"); // close of an unknown channel
    assert!(events(&mut core).is_empty());
    assert!(tx(&mut core).is_empty());
}

#[test]
fn truncated_frames_are_errors() {
    for frame in [
        "01",
        "00",
        "0001",
        "000101",
        "00010104",
        "0001010474",
        "0000",
        "000001fd",
        "0000010100fd",
    ] {
        let mut core = js_core();
        core.open_channel("p", None, []).unwrap();
        let err = core.handle_frame(&hex(frame)).unwrap_err();
        assert!(err.is_protocol_error(), "{frame}: {err}");
        assert!(core.is_destroyed());
    }
}

#[test]
fn batch_delivers_to_several_channels_and_clamps_the_last_length() {
    let mut core = js_core();
    let a = core.open_channel("a", None, []).unwrap();
    let b = core.open_channel("b", None, []).unwrap();
    feed(
        &mut core,
        "0000 00 05 0101016100 05 0102016200"
            .replace(' ', "")
            .as_str(),
    );
    events(&mut core);
    // channel 1: type 0 "x", type 1 "yz"; switch to 2: type 0 ""; switch to 1: type 3 "w"
    // whose length (9) runs past the end and is clamped, as JS does.
    feed(
        &mut core,
        "0000 01 02 0078 03 01797a 00 02 01 00 00 01 09 0377"
            .replace(' ', "")
            .as_str(),
    );
    assert_eq!(
        events(&mut core),
        [
            message(a, 0, b"x"),
            message(a, 1, b"yz"),
            message(b, 0, b""),
            message(a, 3, b"w"),
        ]
    );
}

#[test]
fn open_inside_a_batch_takes_the_entry_as_handshake() {
    let mut core = js_core();
    let a = core.open_channel("a", None, []).unwrap();
    tx(&mut core);
    feed(
        &mut core,
        "0000 00 07 01010161006873 00 01 02 00aa"
            .replace(' ', "")
            .as_str(),
    );
    assert_eq!(
        events(&mut core),
        [
            MuxEvent::Opened {
                channel: a,
                remote_handshake: b"hs".to_vec()
            },
            message(a, 0, &[0xaa])
        ]
    );
    // The batch corked the mux while it ran, but nothing was answered: no empty batch.
    assert!(tx(&mut core).is_empty());
    assert!(!core.is_corked());
}

/// A frame of `depth` batches nested in each other around one message for channel 1.
fn nested_batch(depth: usize) -> Vec<u8> {
    let mut entry = vec![0x00, 0xaa]; // type 0, payload aa
    let mut channel = 1;
    for _ in 0..depth {
        let mut outer = vec![0x00, channel, entry.len() as u8]; // type batch, first channel, len
        outer.extend_from_slice(&entry);
        entry = outer;
        channel = 0;
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&entry);
    frame
}

#[test]
fn nested_batches_are_limited() {
    let (mut core, ch) = opened_pair();
    assert_eq!(
        to_hex(&nested_batch(2)),
        "000000050001020 0aa".replace(' ', "")
    );
    // JS accepts nested batches, so do we, up to a depth.
    core.handle_frame(&nested_batch(2)).unwrap();
    core.handle_frame(&nested_batch(4)).unwrap();
    assert_eq!(
        events(&mut core),
        [message(ch, 0, &[0xaa]), message(ch, 0, &[0xaa])]
    );
    assert!(matches!(
        core.handle_frame(&nested_batch(5)),
        Err(MuxError::BatchTooDeep)
    ));
}

#[test]
fn owned_fast_path_matches_slow_path() {
    let (mut core, ch) = opened_pair();
    core.handle_frame_owned(hex("0105010203")).unwrap();
    core.handle_frame_owned(hex("01fd0001ff")).unwrap();
    core.handle_frame_owned(hex("0500")).unwrap();
    core.handle_frame_owned(Vec::new()).unwrap();
    assert_eq!(
        events(&mut core),
        [message(ch, 5, &[1, 2, 3]), message(ch, 256, &[0xff])]
    );
    assert!(core.handle_frame_owned(hex("01")).is_err());
}

#[test]
fn transport_close_closes_everything() {
    let (mut core, ch) = opened_pair();
    let other = core.open_channel("q", None, []).unwrap();
    core.send(ch, 0, b"lost").unwrap();
    core.handle_transport_closed();
    assert_eq!(
        events(&mut core),
        [
            MuxEvent::Closed {
                channel: ch,
                by_remote: true
            },
            MuxEvent::Closed {
                channel: other,
                by_remote: true
            }
        ]
    );
    assert!(core.poll_transmit().is_none());
    assert!(matches!(
        core.open_channel("p", None, []),
        Err(MuxError::Closed)
    ));
    assert!(matches!(core.send(ch, 0, b""), Err(MuxError::Closed)));
    let mut core = js_core();
    let ch = core.open_channel("p", None, []).unwrap();
    core.destroy();
    assert_eq!(
        events(&mut core),
        [MuxEvent::Closed {
            channel: ch,
            by_remote: false
        }]
    );
}

#[test]
fn close_all_sends_every_close() {
    let mut core = js_core();
    core.open_channel("a", None, []).unwrap();
    core.open_channel("b", None, []).unwrap();
    tx(&mut core);
    core.close_all();
    assert_eq!(tx(&mut core), ["000301", "000302"]);
    assert_eq!(events(&mut core).len(), 2);
}

/// xorshift64*: deterministic bytes for the robustness tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_frames_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..3000 {
        let mut core = MuxCore::new(CoreConfig {
            grace_ms: (round % 3) as u64,
            max_pending_opens: 4,
            max_held_bytes: 4096,
            max_remote_id: 16,
            ..CoreConfig::default()
        });
        core.pair("a", None);
        core.open_channel("a", None, []).unwrap();
        core.open_channel("b", Some(&[1]), []).unwrap();
        for step in 0..20 {
            let len = rng.below(24);
            // Bias towards the small values protomux frames are made of.
            let frame: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => rng.byte(),
                    1 => b'a' + rng.below(2) as u8,
                    _ => rng.below(5) as u8,
                })
                .collect();
            let _ = if step % 2 == 0 {
                core.handle_frame(&frame)
            } else {
                core.handle_frame_owned(frame)
            };
            core.handle_timeout(step);
            while core.poll_transmit().is_some() {}
            while let Some(event) = core.poll_event() {
                if let MuxEvent::RemoteOpenRequest { protocol, id } = event {
                    let _ = core.open_channel(&protocol, id.as_deref(), []);
                }
            }
            core.assert_invariants();
        }
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let seeds = [
        "000101016100",
        "0000000501010161000501020162 00",
        "0000 01 02 0078 03 01797a 00 02 01 00 00 01 02 0077",
        "0100aa",
        "000201",
        "000301",
        "0001fd0001016100",
    ];
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| hex(&s.replace(' ', ""))).collect();
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let mut core = js_core();
        core.pair("b", None);
        core.open_channel("a", None, []).unwrap();
        for _ in 0..8 {
            let mut frame = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(3) {
                if frame.is_empty() {
                    break;
                }
                let i = rng.below(frame.len());
                match rng.below(3) {
                    0 => frame[i] = rng.byte(),
                    1 => {
                        frame.remove(i);
                    }
                    _ => frame.insert(i, rng.below(4) as u8),
                }
            }
            let _ = core.handle_frame(&frame);
            while core.poll_transmit().is_some() {}
            while core.poll_event().is_some() {}
            core.assert_invariants();
        }
    }
}

#[test]
fn fuzz_entry_point_survives_random_input() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let len = rng.below(200);
        let data: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(8) == 0 {
                    0xf0 + rng.below(16) as u8
                } else {
                    rng.below(8) as u8
                }
            })
            .collect();
        crate::fuzz_frames(&data);
    }
}
