//! The pure half of HyperDHT's client operations (`index.js`): what each query and commit
//! request carries, how replies are mapped and validated, and how a `mutableGet` picks its
//! result. [`crate::node::HyperDht`] runs these over dht-rpc queries; keeping them here
//! makes them testable without sockets.
//!
//! | operation | query (command, value) | per-reply map | commit to each closest reply |
//! |---|---|---|---|
//! | lookup | LOOKUP, none | [`map_lookup`] | — |
//! | announce | LOOKUP, none | [`map_lookup`] | ANNOUNCE [`announce_request`] (signed for that node's id and token) |
//! | unannounce | LOOKUP, none | [`map_lookup`]; [`wants_unannounce`] → UNANNOUNCE [`unannounce_request`] at once | waits for the unannounces |
//! | findPeer | FIND_PEER, none | [`map_find_peer`] | — |
//! | immutablePut | IMMUTABLE_GET, none | [`map_immutable`] | IMMUTABLE_PUT [`immutable_put_request`] |
//! | immutableGet | IMMUTABLE_GET, none | [`map_immutable`] + [`verify_immutable`]; first match wins | — |
//! | mutablePut | MUTABLE_GET, `uint 0` | [`map_mutable`] | MUTABLE_PUT [`mutable_put_request`] |
//! | mutableGet | MUTABLE_GET, `uint seq` | [`map_mutable`] + [`MutableSelector`] | — |
//!
//! A map returns `None` for replies without a value or with one that does not decode,
//! exactly like the JS `map*` functions (the query then skips them).

use std::net::SocketAddrV4;

use intercom_crypto::KeyPair;
use intercom_dht_rpc::{Peer as NodeRef, Reply, RequestSpec};
use intercom_encoding::{decode, encode};

use crate::constants::{Command, MAX_LOOKUP_RECORDS};
use crate::crypto::{hash, sign_announce, sign_mutable, sign_unannounce, verify_mutable};
use crate::messages::{
    encode_seq, Announce, LookupReply, MutableGetResponse, MutablePutRequest, Peer,
};

/// One useful LOOKUP reply (`mapLookup`): the peers a node stores under the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// The node that answered (its id when it is persistent).
    pub from: NodeRef,
    /// Our address as that node saw it.
    pub to: SocketAddrV4,
    /// The token the node handed us (needed to announce there).
    pub token: Option<[u8; 32]>,
    /// The peers announced under the topic.
    pub peers: Vec<Peer>,
    /// The topic's bump.
    pub bump: u64,
}

/// One useful FIND_PEER reply (`mapFindPeer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindPeerResult {
    /// The node that answered.
    pub from: NodeRef,
    /// Our address as that node saw it.
    pub to: SocketAddrV4,
    /// The node's token.
    pub token: Option<[u8; 32]>,
    /// The peer record: the key and the relay addresses it announced itself with.
    pub peer: Peer,
}

/// One IMMUTABLE_GET reply carrying a value (`mapImmutable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmutableResult {
    /// The node that answered.
    pub from: NodeRef,
    /// Our address as that node saw it.
    pub to: SocketAddrV4,
    /// The node's token.
    pub token: Option<[u8; 32]>,
    /// The stored value (not yet checked against the hash: see [`verify_immutable`]).
    pub value: Vec<u8>,
}

/// One MUTABLE_GET reply carrying a value (`mapMutable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableResult {
    /// The node that answered.
    pub from: NodeRef,
    /// Our address as that node saw it.
    pub to: SocketAddrV4,
    /// The node's token.
    pub token: Option<[u8; 32]>,
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
    /// Ed25519 signature over the mutable signable of `seq` and `value`.
    pub signature: [u8; 64],
}

/// `mapLookup`.
pub fn map_lookup(reply: &Reply) -> Option<LookupResult> {
    let value = reply.value.as_deref()?;
    let l: LookupReply = decode(value).ok()?;
    Some(LookupResult {
        from: reply.from,
        to: reply.to,
        token: reply.token,
        peers: l.peers,
        bump: l.bump,
    })
}

/// `mapFindPeer`.
pub fn map_find_peer(reply: &Reply) -> Option<FindPeerResult> {
    let value = reply.value.as_deref()?;
    let peer: Peer = decode(value).ok()?;
    Some(FindPeerResult {
        from: reply.from,
        to: reply.to,
        token: reply.token,
        peer,
    })
}

/// `mapImmutable`.
pub fn map_immutable(reply: &Reply) -> Option<ImmutableResult> {
    let value = reply.value.clone()?;
    Some(ImmutableResult {
        from: reply.from,
        to: reply.to,
        token: reply.token,
        value,
    })
}

/// `mapMutable`.
pub fn map_mutable(reply: &Reply) -> Option<MutableResult> {
    let value = reply.value.as_deref()?;
    let m: MutableGetResponse = decode(value).ok()?;
    Some(MutableResult {
        from: reply.from,
        to: reply.to,
        token: reply.token,
        seq: m.seq,
        value: m.value,
        signature: m.signature,
    })
}

/// Whether an immutable value is the one addressed by `target` (`hash(value) = target`).
pub fn verify_immutable(target: &[u8; 32], value: &[u8]) -> bool {
    hash(value) == *target
}

/// The MUTABLE_GET query value: the minimum seq as a `uint`.
pub fn mutable_get_value(seq: u64) -> Vec<u8> {
    encode_seq(seq)
}

/// `_requestAnnounce`: the ANNOUNCE commit for the node `node_id` that handed out `token`.
pub fn announce_request(
    target: &[u8; 32],
    token: &[u8; 32],
    node_id: &[u8; 32],
    key_pair: &KeyPair,
    relay_addresses: &[SocketAddrV4],
    bump: u64,
) -> RequestSpec {
    let peer = Peer {
        public_key: key_pair.public_key,
        relay_addresses: relay_addresses.to_vec(),
    };
    let signature = sign_announce(target, token, node_id, &peer, None, key_pair);
    let ann = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(signature),
        bump,
    };
    RequestSpec {
        token: Some(*token),
        internal: false,
        command: Command::Announce.id(),
        target: Some(*target),
        value: Some(encode(&ann)),
    }
}

/// `_requestUnannounce`: the UNANNOUNCE request for the node `node_id`.
pub fn unannounce_request(
    target: &[u8; 32],
    token: &[u8; 32],
    node_id: &[u8; 32],
    key_pair: &KeyPair,
) -> RequestSpec {
    let peer = Peer {
        public_key: key_pair.public_key,
        relay_addresses: Vec::new(),
    };
    let signature = sign_unannounce(target, token, node_id, &peer, None, key_pair);
    let unann = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(signature),
        bump: 0,
    };
    RequestSpec {
        token: Some(*token),
        internal: false,
        command: Command::Unannounce.id(),
        target: Some(*target),
        value: Some(encode(&unann)),
    }
}

/// The `map` of `lookupAndUnannounce`: a reply from a node with an id and a token whose
/// records include `public_key` (or are full, so it may be hidden) gets an UNANNOUNCE.
pub fn wants_unannounce(result: &LookupResult, public_key: &[u8; 32]) -> bool {
    if result.token.is_none() || result.from.id.is_none() {
        return false;
    }
    result.peers.len() >= MAX_LOOKUP_RECORDS
        || result.peers.iter().any(|p| &p.public_key == public_key)
}

/// The IMMUTABLE_PUT commit: `value` under `target = hash(value)` with the node's token.
pub fn immutable_put_request(target: &[u8; 32], token: &[u8; 32], value: &[u8]) -> RequestSpec {
    RequestSpec {
        token: Some(*token),
        internal: false,
        command: Command::ImmutablePut.id(),
        target: Some(*target),
        value: Some(value.to_vec()),
    }
}

/// A signed mutable value, ready to be sent to every closest node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMutable {
    /// `hash(publicKey)`.
    pub target: [u8; 32],
    /// The signer.
    pub public_key: [u8; 32],
    /// Sequence number.
    pub seq: u64,
    /// The signature.
    pub signature: [u8; 64],
    /// The encoded `mutablePutRequest`.
    pub encoded: Vec<u8>,
}

/// Signs `value` at `seq` and encodes the `mutablePutRequest` (`mutablePut`).
pub fn sign_mutable_put(key_pair: &KeyPair, value: &[u8], seq: u64) -> SignedMutable {
    let signature = sign_mutable(seq, value, key_pair);
    let encoded = encode(&MutablePutRequest {
        public_key: key_pair.public_key,
        seq,
        value: value.to_vec(),
        signature,
    });
    SignedMutable {
        target: hash(&key_pair.public_key),
        public_key: key_pair.public_key,
        seq,
        signature,
        encoded,
    }
}

/// The MUTABLE_PUT commit for one node.
pub fn mutable_put_request(signed: &SignedMutable, token: &[u8; 32]) -> RequestSpec {
    RequestSpec {
        token: Some(*token),
        internal: false,
        command: Command::MutablePut.id(),
        target: Some(signed.target),
        value: Some(signed.encoded.clone()),
    }
}

/// What [`MutableSelector::offer`] decided about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutableStep {
    /// Not acceptable (old, unsigned, or no newer than what we have): keep reading.
    Skip,
    /// Accepted as the best so far; keep reading for a newer one.
    Keep,
    /// Accepted and `latest` is off: this is the answer, stop the query.
    Done,
}

/// The loop of `mutableGet`: accepts only values with `seq ≥` the requested seq and a
/// valid signature by `public_key`; with `latest` it keeps the highest seq seen, without
/// it the first valid value wins.
#[derive(Debug, Clone)]
pub struct MutableSelector {
    public_key: [u8; 32],
    min_seq: u64,
    latest: bool,
    best: Option<MutableResult>,
}

impl MutableSelector {
    /// A selector for `public_key`'s values at or above `min_seq`.
    pub fn new(public_key: [u8; 32], min_seq: u64, latest: bool) -> Self {
        MutableSelector {
            public_key,
            min_seq,
            latest,
            best: None,
        }
    }

    /// Considers one mapped reply.
    pub fn offer(&mut self, node: MutableResult) -> MutableStep {
        if self.best.as_ref().is_some_and(|b| node.seq <= b.seq) {
            return MutableStep::Skip;
        }
        if node.seq < self.min_seq
            || !verify_mutable(&node.signature, node.seq, &node.value, &self.public_key)
        {
            return MutableStep::Skip;
        }
        self.best = Some(node);
        if self.latest {
            MutableStep::Keep
        } else {
            MutableStep::Done
        }
    }

    /// The chosen value, if any.
    pub fn into_result(self) -> Option<MutableResult> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intercom_dht_rpc::SocketKind;
    use std::net::Ipv4Addr;

    use crate::crypto::verify_announce;

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    fn reply(value: Option<Vec<u8>>) -> Reply {
        Reply {
            from: NodeRef {
                addr: addr(1),
                id: Some([1; 32]),
            },
            to: addr(2),
            socket: SocketKind::Client,
            tid: 0,
            rtt_ms: 0,
            token: Some([7; 32]),
            closer_nodes: Vec::new(),
            error: 0,
            value,
        }
    }

    fn mutable(kp: &KeyPair, seq: u64, value: &[u8]) -> MutableResult {
        let m = MutableGetResponse {
            seq,
            value: value.to_vec(),
            signature: sign_mutable(seq, value, kp),
        };
        map_mutable(&reply(Some(encode(&m)))).unwrap()
    }

    #[test]
    fn maps_skip_empty_and_malformed_values() {
        assert!(map_lookup(&reply(None)).is_none());
        assert!(map_lookup(&reply(Some(vec![0x05, 0x01]))).is_none());
        assert!(map_find_peer(&reply(Some(vec![1, 2, 3]))).is_none());
        assert!(map_mutable(&reply(Some(vec![0]))).is_none());
        assert!(map_immutable(&reply(None)).is_none());
        assert_eq!(
            map_immutable(&reply(Some(b"x".to_vec()))).unwrap().value,
            b"x"
        );
        let peer = Peer {
            public_key: [3; 32],
            relay_addresses: vec![addr(9)],
        };
        let l = LookupReply {
            peers: vec![peer.clone()],
            bump: 5,
        };
        let m = map_lookup(&reply(Some(encode(&l)))).unwrap();
        assert_eq!(
            (m.peers, m.bump, m.token),
            (vec![peer.clone()], 5, Some([7; 32]))
        );
        assert_eq!(
            map_find_peer(&reply(Some(encode(&peer)))).unwrap().peer,
            peer
        );
    }

    #[test]
    fn announce_request_is_signed_for_the_node() {
        let kp = KeyPair::from_seed(&[4; 32]);
        let (target, token, id) = ([1; 32], [2; 32], [3; 32]);
        let spec = announce_request(&target, &token, &id, &kp, &[addr(5)], 0);
        assert_eq!(spec.command, Command::Announce.id());
        assert_eq!((spec.token, spec.target), (Some(token), Some(target)));
        let ann: Announce = decode(spec.value.as_deref().unwrap()).unwrap();
        let peer = ann.peer.unwrap();
        assert_eq!(peer.relay_addresses, vec![addr(5)]);
        let sig = ann.signature.unwrap();
        assert!(verify_announce(&sig, &target, &token, &id, &peer, None));
        assert!(!verify_announce(
            &sig, &target, &token, &[9; 32], &peer, None
        ));

        let spec = unannounce_request(&target, &token, &id, &kp);
        assert_eq!(spec.command, Command::Unannounce.id());
        let un: Announce = decode(spec.value.as_deref().unwrap()).unwrap();
        let sig = un.signature.unwrap();
        assert!(crate::crypto::verify_unannounce(
            &sig,
            &target,
            &token,
            &id,
            &un.peer.unwrap(),
            None
        ));
    }

    #[test]
    fn unannounce_only_where_our_record_may_be() {
        let pk = [5; 32];
        let other = Peer {
            public_key: [6; 32],
            relay_addresses: vec![],
        };
        let mut r = LookupResult {
            from: NodeRef {
                addr: addr(1),
                id: Some([1; 32]),
            },
            to: addr(2),
            token: Some([0; 32]),
            peers: vec![other.clone()],
            bump: 0,
        };
        assert!(!wants_unannounce(&r, &pk));
        r.peers.push(Peer {
            public_key: pk,
            relay_addresses: vec![],
        });
        assert!(wants_unannounce(&r, &pk));
        r.from.id = None;
        assert!(!wants_unannounce(&r, &pk));
        r.from.id = Some([1; 32]);
        r.token = None;
        assert!(!wants_unannounce(&r, &pk));
        r.token = Some([0; 32]);
        r.peers = vec![other; 20];
        assert!(
            wants_unannounce(&r, &pk),
            "a full reply may hide our record"
        );
    }

    #[test]
    fn immutable_hash_is_checked() {
        let v = b"hello world";
        let target = hash(v);
        assert!(verify_immutable(&target, v));
        assert!(!verify_immutable(&target, b"hello worlD"));
        let spec = immutable_put_request(&target, &[1; 32], v);
        assert_eq!(spec.command, Command::ImmutablePut.id());
        assert_eq!(spec.value.as_deref(), Some(&v[..]));
    }

    #[test]
    fn mutable_put_encodes_a_verifiable_request() {
        let kp = KeyPair::from_seed(&[8; 32]);
        let s = sign_mutable_put(&kp, b"v", 3);
        assert_eq!(s.target, hash(&kp.public_key));
        let req: MutablePutRequest = decode(&s.encoded).unwrap();
        assert_eq!((req.seq, req.value.as_slice()), (3, &b"v"[..]));
        assert!(verify_mutable(&req.signature, 3, b"v", &kp.public_key));
        let spec = mutable_put_request(&s, &[2; 32]);
        assert_eq!(spec.command, Command::MutablePut.id());
        assert_eq!(spec.target, Some(s.target));
        assert_eq!(mutable_get_value(0), vec![0]);
        assert_eq!(mutable_get_value(300), vec![0xfd, 0x2c, 0x01]);
    }

    #[test]
    fn mutable_selector_keeps_the_highest_valid_seq() {
        let kp = KeyPair::from_seed(&[9; 32]);
        let evil = KeyPair::from_seed(&[10; 32]);
        let mut sel = MutableSelector::new(kp.public_key, 2, true);
        assert_eq!(sel.offer(mutable(&kp, 1, b"old")), MutableStep::Skip);
        assert_eq!(sel.offer(mutable(&evil, 9, b"forged")), MutableStep::Skip);
        assert_eq!(sel.offer(mutable(&kp, 3, b"a")), MutableStep::Keep);
        assert_eq!(sel.offer(mutable(&kp, 3, b"b")), MutableStep::Skip);
        let mut tampered = mutable(&kp, 5, b"c");
        tampered.value = b"d".to_vec();
        assert_eq!(sel.offer(tampered), MutableStep::Skip);
        assert_eq!(sel.offer(mutable(&kp, 4, b"e")), MutableStep::Keep);
        assert_eq!(sel.offer(mutable(&kp, 2, b"f")), MutableStep::Skip);
        let best = sel.into_result().unwrap();
        assert_eq!((best.seq, best.value.as_slice()), (4, &b"e"[..]));

        let mut first = MutableSelector::new(kp.public_key, 0, false);
        assert_eq!(first.offer(mutable(&kp, 1, b"x")), MutableStep::Done);
        assert!(MutableSelector::new(kp.public_key, 0, true)
            .into_result()
            .is_none());
    }
}
