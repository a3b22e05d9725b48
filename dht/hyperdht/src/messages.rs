//! Every message codec of hyperdht's `lib/messages.js`, byte for byte.
//!
//! These are the `value` payloads carried inside dht-rpc requests and replies (and, for
//! [`NoisePayload`] and [`HolepunchPayload`], inside the Noise handshake and the
//! encrypted holepunch payload). The dht-rpc frame itself is not encoded here.
//!
//! ```text
//! peer              fixed32 publicKey, array(ipv4Address) relayAddresses
//! lookupRawReply    array(raw peer record), [uint bump]   (bump optional when decoding)
//! announce          uint flags(1 peer, 2 refresh, 4 signature, 8 bump),
//!                   [peer], [fixed32 refresh], [fixed64 signature], [uint bump]
//! handshake         uint flags(1 peerAddress, 2 relayAddress), uint mode, buffer noise,
//!                   [ipv4Address peerAddress], [ipv4Address relayAddress]
//! holepunch         uint flags(1 peerAddress), uint mode, uint id, buffer payload,
//!                   [ipv4Address peerAddress]
//! noisePayload      uint version(=1), uint flags, uint error, uint firewall, then per flag:
//!                   1 holepunch{uint id, array(relay{ipv4 relay, ipv4 peer})},
//!                   2 array(ipv4Address), 4 array(ipv6Address),
//!                   8 udx{uint 1, uint features(1 reusableSocket), uint id, uint seq},
//!                   16 secretStream{uint 1}, 32 relayThrough{uint 1, uint 0, fixed32 pk,
//!                   fixed32 token}, 64 array(ipv4Address) relayAddresses
//! holepunchPayload  uint flags(1 connected, 2 punching, 4 addresses, 8 remoteAddress,
//!                   16 token, 32 remoteToken), uint error, uint firewall, uint round,
//!                   [array(ipv4Address)], [ipv4Address], [fixed32], [fixed32]
//! mutableSignable   uint seq, buffer value
//! mutablePutRequest fixed32 publicKey, uint seq, buffer value, fixed64 signature
//! mutableGetResponse uint seq, buffer value, fixed64 signature
//! pluginRequest     string plugin, uint version, uint command, uint flags(1 value), [buffer]
//! ```
//!
//! Decoding follows `c.decode`: it reads one value from the start of the bytes and ignores
//! whatever follows. Decoders are total (malformed input is a [`DecodeError`]). Two
//! deliberate details: every `uint` above 2^53 − 1 is rejected, as the JS `uint64` decoder
//! does; varints in non-shortest form are rejected too (the compact-encoding crate is
//! strict, JS accepts them although no JS encoder writes them). Encoders take any `u64`,
//! but JS cannot encode or decode numbers above 2^53 − 1, so never send larger ones.

use std::net::{SocketAddrV4, SocketAddrV6};

use intercom_encoding::{decode, encode, uint_len, Decode, DecodeError, Encode, Reader, Writer};

/// Largest integer a JS number holds exactly; larger varints fail to decode, as in JS.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// `c.uint` as the JS decoder returns it: at most [`MAX_SAFE_INTEGER`].
pub(crate) fn read_uint(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let v = r.uint()?;
    if v > MAX_SAFE_INTEGER {
        return Err(DecodeError::OutOfRange {
            what: "JS safe integer",
            value: v,
        });
    }
    Ok(v)
}

fn ipv4_array_len(list: &[SocketAddrV4]) -> usize {
    uint_len(list.len() as u64) + 6 * list.len()
}

fn write_ipv4_array(w: &mut Writer, list: &[SocketAddrV4]) {
    w.array(list, |w, a| {
        w.ipv4_address(a);
    });
}

fn read_ipv4_array(r: &mut Reader<'_>) -> Result<Vec<SocketAddrV4>, DecodeError> {
    r.array(Reader::ipv4_address)
}

fn ipv6_array_len(list: &[SocketAddrV6]) -> usize {
    uint_len(list.len() as u64) + 18 * list.len()
}

fn buffer_len(b: &[u8]) -> usize {
    uint_len(b.len() as u64) + b.len()
}

/// `peer`: a peer record as stored and returned by DHT nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peer {
    /// The peer's Ed25519 public key.
    pub public_key: [u8; 32],
    /// DHT nodes the peer can be reached through (at most 3 are stored by nodes).
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Encode for Peer {
    fn encoded_len(&self) -> usize {
        32 + ipv4_array_len(&self.relay_addresses)
    }
    fn encode(&self, w: &mut Writer) {
        w.fixed(&self.public_key);
        write_ipv4_array(w, &self.relay_addresses);
    }
}

impl<'a> Decode<'a> for Peer {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Peer {
            public_key: r.fixed32()?,
            relay_addresses: read_ipv4_array(r)?,
        })
    }
}

/// `peers`: `c.array(peer)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peers(pub Vec<Peer>);

impl Encode for Peers {
    fn encoded_len(&self) -> usize {
        uint_len(self.0.len() as u64) + self.0.iter().map(Encode::encoded_len).sum::<usize>()
    }
    fn encode(&self, w: &mut Writer) {
        w.array(&self.0, |w, p| p.encode(w));
    }
}

impl<'a> Decode<'a> for Peers {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.array(Peer::decode).map(Peers)
    }
}

/// `lookupRawReply` as a node writes it: already-encoded [`Peer`] records and the topic's
/// bump. Decode the bytes with [`LookupReply`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupRawReply<'a> {
    /// Encoded `peer` records, written back to back without length prefixes.
    pub peers: Vec<&'a [u8]>,
    /// Highest accepted announce bump of the topic (0 if none).
    pub bump: u64,
}

impl Encode for LookupRawReply<'_> {
    fn encoded_len(&self) -> usize {
        uint_len(self.peers.len() as u64)
            + self.peers.iter().map(|p| p.len()).sum::<usize>()
            + uint_len(self.bump)
    }
    fn encode(&self, w: &mut Writer) {
        w.array(&self.peers, |w, p| {
            w.raw(p);
        });
        w.uint(self.bump);
    }
}

/// `lookupRawReply` as a client decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupReply {
    /// The peers announced under the topic.
    pub peers: Vec<Peer>,
    /// The topic's bump; 0 when the reply has none (older nodes omit it).
    pub bump: u64,
}

impl Encode for LookupReply {
    fn encoded_len(&self) -> usize {
        uint_len(self.peers.len() as u64)
            + self.peers.iter().map(Encode::encoded_len).sum::<usize>()
            + uint_len(self.bump)
    }
    fn encode(&self, w: &mut Writer) {
        w.array(&self.peers, |w, p| p.encode(w));
        w.uint(self.bump);
    }
}

impl<'a> Decode<'a> for LookupReply {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let peers = r.array(Peer::decode)?;
        let bump = if r.is_empty() { 0 } else { read_uint(r)? };
        Ok(LookupReply { peers, bump })
    }
}

/// `announce`: the value of ANNOUNCE and UNANNOUNCE requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announce {
    /// The record to store; absent in a refresh-only announce.
    pub peer: Option<Peer>,
    /// Refresh token: its hash is the key of the refresh the node remembers.
    pub refresh: Option<[u8; 32]>,
    /// Ed25519 signature of the announce (or unannounce) signable.
    pub signature: Option<[u8; 64]>,
    /// Announce timestamp (ms) used to order topic updates; 0 means none and is not sent.
    pub bump: u64,
}

impl Announce {
    fn flags(&self) -> u64 {
        u64::from(self.peer.is_some())
            | (u64::from(self.refresh.is_some()) << 1)
            | (u64::from(self.signature.is_some()) << 2)
            | (u64::from(self.bump != 0) << 3)
    }
}

impl Encode for Announce {
    fn encoded_len(&self) -> usize {
        1 + self.peer.as_ref().map_or(0, Encode::encoded_len)
            + if self.refresh.is_some() { 32 } else { 0 }
            + if self.signature.is_some() { 64 } else { 0 }
            + if self.bump != 0 {
                uint_len(self.bump)
            } else {
                0
            }
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.flags());
        if let Some(p) = &self.peer {
            p.encode(w);
        }
        if let Some(r) = &self.refresh {
            w.fixed(r);
        }
        if let Some(s) = &self.signature {
            w.fixed(s);
        }
        if self.bump != 0 {
            w.uint(self.bump);
        }
    }
}

impl<'a> Decode<'a> for Announce {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Announce {
            peer: if flags & 1 != 0 {
                Some(Peer::decode(r)?)
            } else {
                None
            },
            refresh: if flags & 2 != 0 {
                Some(r.fixed32()?)
            } else {
                None
            },
            signature: if flags & 4 != 0 {
                Some(r.fixed64()?)
            } else {
                None
            },
            bump: if flags & 8 != 0 { read_uint(r)? } else { 0 },
        })
    }
}

/// `handshake`: the value of PEER_HANDSHAKE requests and replies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handshake {
    /// Which hop this is ([`crate::constants::mode`]).
    pub mode: u64,
    /// The Noise IK handshake message.
    pub noise: Vec<u8>,
    /// The client's (or, in replies, the server's) address as seen by a relay.
    pub peer_address: Option<SocketAddrV4>,
    /// The first relay's address, when a second relay forwards the handshake.
    pub relay_address: Option<SocketAddrV4>,
}

impl Encode for Handshake {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.mode)
            + buffer_len(&self.noise)
            + if self.peer_address.is_some() { 6 } else { 0 }
            + if self.relay_address.is_some() { 6 } else { 0 }
    }
    fn encode(&self, w: &mut Writer) {
        let flags =
            u64::from(self.peer_address.is_some()) | (u64::from(self.relay_address.is_some()) << 1);
        w.uint(flags).uint(self.mode).buffer(&self.noise);
        if let Some(a) = &self.peer_address {
            w.ipv4_address(a);
        }
        if let Some(a) = &self.relay_address {
            w.ipv4_address(a);
        }
    }
}

impl<'a> Decode<'a> for Handshake {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Handshake {
            mode: read_uint(r)?,
            noise: r.buffer()?.to_vec(),
            peer_address: if flags & 1 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
            relay_address: if flags & 2 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
        })
    }
}

/// `relayInfo`: one relay a server can be holepunched through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relaying DHT node.
    pub relay_address: SocketAddrV4,
    /// The peer's address as that relay sees it.
    pub peer_address: SocketAddrV4,
}

/// `holepunchInfo` inside a [`NoisePayload`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolepunchInfo {
    /// Holepunch session id.
    pub id: u64,
    /// Relays the holepunch can go through.
    pub relays: Vec<RelayInfo>,
}

impl HolepunchInfo {
    fn encoded_len(&self) -> usize {
        uint_len(self.id) + uint_len(self.relays.len() as u64) + 12 * self.relays.len()
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.id);
        w.array(&self.relays, |w, ri| {
            w.ipv4_address(&ri.relay_address)
                .ipv4_address(&ri.peer_address);
        });
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(HolepunchInfo {
            id: read_uint(r)?,
            relays: r.array(|r| {
                Ok(RelayInfo {
                    relay_address: r.ipv4_address()?,
                    peer_address: r.ipv4_address()?,
                })
            })?,
        })
    }
}

/// `udxInfo`: the UDX stream the sender will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdxInfo {
    /// Version as decoded; always written as 1.
    pub version: u64,
    /// The sender reuses the socket the handshake went over (feature bit 1).
    pub reusable_socket: bool,
    /// UDX stream id.
    pub id: u64,
    /// Initial sequence number.
    pub seq: u64,
}

impl Default for UdxInfo {
    fn default() -> Self {
        UdxInfo {
            version: 1,
            reusable_socket: false,
            id: 0,
            seq: 0,
        }
    }
}

impl UdxInfo {
    fn encoded_len(&self) -> usize {
        2 + uint_len(self.id) + uint_len(self.seq)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(1)
            .uint(u64::from(self.reusable_socket))
            .uint(self.id)
            .uint(self.seq);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = read_uint(r)?;
        let features = read_uint(r)?;
        Ok(UdxInfo {
            version,
            reusable_socket: features & 1 != 0,
            id: read_uint(r)?,
            seq: read_uint(r)?,
        })
    }
}

/// `secretStreamInfo`: the sender speaks @hyperswarm/secret-stream over the UDX stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretStreamInfo {
    /// Version as decoded; always written as 1.
    pub version: u64,
}

impl Default for SecretStreamInfo {
    fn default() -> Self {
        SecretStreamInfo { version: 1 }
    }
}

/// `relayThroughInfo`: connect through a blind relay instead of holepunching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayThroughInfo {
    /// Version as decoded; always written as 1 (followed by flags 0, ignored on decode).
    pub version: u64,
    /// The blind relay's public key.
    pub public_key: [u8; 32],
    /// The pairing token.
    pub token: [u8; 32],
}

impl RelayThroughInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = read_uint(r)?;
        read_uint(r)?;
        Ok(RelayThroughInfo {
            version,
            public_key: r.fixed32()?,
            token: r.fixed32()?,
        })
    }
}

/// `noisePayload`: the payload inside the Noise handshake messages of a connection.
///
/// The encoder always writes version 1. When a payload with another version is decoded,
/// only `version` is read and every other field keeps its default, as in JS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisePayload {
    /// Payload version as decoded (1 is the only one defined).
    pub version: u64,
    /// Error code ([`crate::constants::error_code`]).
    pub error: u64,
    /// Sender's firewall type ([`crate::constants::firewall`]).
    pub firewall: u64,
    /// Holepunch session details (flag 1).
    pub holepunch: Option<HolepunchInfo>,
    /// Sender's IPv4 addresses (flag 2, only sent when non-empty).
    pub addresses4: Vec<SocketAddrV4>,
    /// Sender's IPv6 addresses (flag 4, only sent when non-empty).
    pub addresses6: Vec<SocketAddrV6>,
    /// UDX stream details (flag 8).
    pub udx: Option<UdxInfo>,
    /// Secret-stream support (flag 16).
    pub secret_stream: Option<SecretStreamInfo>,
    /// Blind relay to connect through (flag 32).
    pub relay_through: Option<RelayThroughInfo>,
    /// The server's relay addresses (flag 64, sent even when empty).
    pub relay_addresses: Option<Vec<SocketAddrV4>>,
}

impl Default for NoisePayload {
    fn default() -> Self {
        NoisePayload {
            version: 1,
            error: 0,
            firewall: 0,
            holepunch: None,
            addresses4: Vec::new(),
            addresses6: Vec::new(),
            udx: None,
            secret_stream: None,
            relay_through: None,
            relay_addresses: None,
        }
    }
}

impl NoisePayload {
    fn flags(&self) -> u64 {
        u64::from(self.holepunch.is_some())
            | (u64::from(!self.addresses4.is_empty()) << 1)
            | (u64::from(!self.addresses6.is_empty()) << 2)
            | (u64::from(self.udx.is_some()) << 3)
            | (u64::from(self.secret_stream.is_some()) << 4)
            | (u64::from(self.relay_through.is_some()) << 5)
            | (u64::from(self.relay_addresses.is_some()) << 6)
    }
}

impl Encode for NoisePayload {
    fn encoded_len(&self) -> usize {
        let mut n = 1 + uint_len(self.flags()) + uint_len(self.error) + uint_len(self.firewall);
        if let Some(h) = &self.holepunch {
            n += h.encoded_len();
        }
        if !self.addresses4.is_empty() {
            n += ipv4_array_len(&self.addresses4);
        }
        if !self.addresses6.is_empty() {
            n += ipv6_array_len(&self.addresses6);
        }
        if let Some(u) = &self.udx {
            n += u.encoded_len();
        }
        if self.secret_stream.is_some() {
            n += 1;
        }
        if self.relay_through.is_some() {
            n += 2 + 64;
        }
        if let Some(a) = &self.relay_addresses {
            n += ipv4_array_len(a);
        }
        n
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(1)
            .uint(self.flags())
            .uint(self.error)
            .uint(self.firewall);
        if let Some(h) = &self.holepunch {
            h.encode(w);
        }
        if !self.addresses4.is_empty() {
            write_ipv4_array(w, &self.addresses4);
        }
        if !self.addresses6.is_empty() {
            w.array(&self.addresses6, |w, a| {
                w.ipv6_address(a);
            });
        }
        if let Some(u) = &self.udx {
            u.encode(w);
        }
        if self.secret_stream.is_some() {
            w.uint(1);
        }
        if let Some(rt) = &self.relay_through {
            w.uint(1).uint(0).fixed(&rt.public_key).fixed(&rt.token);
        }
        if let Some(a) = &self.relay_addresses {
            write_ipv4_array(w, a);
        }
    }
}

impl<'a> Decode<'a> for NoisePayload {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let version = read_uint(r)?;
        if version != 1 {
            return Ok(NoisePayload {
                version,
                ..NoisePayload::default()
            });
        }
        let flags = read_uint(r)?;
        Ok(NoisePayload {
            version,
            error: read_uint(r)?,
            firewall: read_uint(r)?,
            holepunch: if flags & 1 != 0 {
                Some(HolepunchInfo::decode(r)?)
            } else {
                None
            },
            addresses4: if flags & 2 != 0 {
                read_ipv4_array(r)?
            } else {
                Vec::new()
            },
            addresses6: if flags & 4 != 0 {
                r.array(Reader::ipv6_address)?
            } else {
                Vec::new()
            },
            udx: if flags & 8 != 0 {
                Some(UdxInfo::decode(r)?)
            } else {
                None
            },
            secret_stream: if flags & 16 != 0 {
                Some(SecretStreamInfo {
                    version: read_uint(r)?,
                })
            } else {
                None
            },
            relay_through: if flags & 32 != 0 {
                Some(RelayThroughInfo::decode(r)?)
            } else {
                None
            },
            relay_addresses: if flags & 64 != 0 {
                Some(read_ipv4_array(r)?)
            } else {
                None
            },
        })
    }
}

/// `holepunch`: the value of PEER_HOLEPUNCH requests and replies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holepunch {
    /// Which hop this is ([`crate::constants::mode`]).
    pub mode: u64,
    /// Holepunch session id.
    pub id: u64,
    /// The encrypted [`HolepunchPayload`].
    pub payload: Vec<u8>,
    /// The client's (or, in replies, the server's) address as seen by a relay.
    pub peer_address: Option<SocketAddrV4>,
}

impl Encode for Holepunch {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.mode)
            + uint_len(self.id)
            + buffer_len(&self.payload)
            + if self.peer_address.is_some() { 6 } else { 0 }
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(u64::from(self.peer_address.is_some()))
            .uint(self.mode)
            .uint(self.id)
            .buffer(&self.payload);
        if let Some(a) = &self.peer_address {
            w.ipv4_address(a);
        }
    }
}

impl<'a> Decode<'a> for Holepunch {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Holepunch {
            mode: read_uint(r)?,
            id: read_uint(r)?,
            payload: r.buffer()?.to_vec(),
            peer_address: if flags & 1 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
        })
    }
}

/// `holepunchPayload`: the plaintext of [`Holepunch::payload`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolepunchPayload {
    /// Error code ([`crate::constants::error_code`]).
    pub error: u64,
    /// Sender's firewall type ([`crate::constants::firewall`]).
    pub firewall: u64,
    /// Holepunch round.
    pub round: u64,
    /// The sender already has a connection.
    pub connected: bool,
    /// The sender is punching now.
    pub punching: bool,
    /// Sender's addresses (sent when present, even if empty).
    pub addresses: Option<Vec<SocketAddrV4>>,
    /// The receiver's address as the sender saw it.
    pub remote_address: Option<SocketAddrV4>,
    /// The sender's token for the receiver's address.
    pub token: Option<[u8; 32]>,
    /// The receiver's token, echoed back.
    pub remote_token: Option<[u8; 32]>,
}

impl HolepunchPayload {
    fn flags(&self) -> u64 {
        u64::from(self.connected)
            | (u64::from(self.punching) << 1)
            | (u64::from(self.addresses.is_some()) << 2)
            | (u64::from(self.remote_address.is_some()) << 3)
            | (u64::from(self.token.is_some()) << 4)
            | (u64::from(self.remote_token.is_some()) << 5)
    }
}

impl Encode for HolepunchPayload {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.error)
            + uint_len(self.firewall)
            + uint_len(self.round)
            + self.addresses.as_deref().map_or(0, ipv4_array_len)
            + if self.remote_address.is_some() { 6 } else { 0 }
            + if self.token.is_some() { 32 } else { 0 }
            + if self.remote_token.is_some() { 32 } else { 0 }
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.flags())
            .uint(self.error)
            .uint(self.firewall)
            .uint(self.round);
        if let Some(a) = &self.addresses {
            write_ipv4_array(w, a);
        }
        if let Some(a) = &self.remote_address {
            w.ipv4_address(a);
        }
        if let Some(t) = &self.token {
            w.fixed(t);
        }
        if let Some(t) = &self.remote_token {
            w.fixed(t);
        }
    }
}

impl<'a> Decode<'a> for HolepunchPayload {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(HolepunchPayload {
            error: read_uint(r)?,
            firewall: read_uint(r)?,
            round: read_uint(r)?,
            connected: flags & 1 != 0,
            punching: flags & 2 != 0,
            addresses: if flags & 4 != 0 {
                Some(read_ipv4_array(r)?)
            } else {
                None
            },
            remote_address: if flags & 8 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
            token: if flags & 16 != 0 {
                Some(r.fixed32()?)
            } else {
                None
            },
            remote_token: if flags & 32 != 0 {
                Some(r.fixed32()?)
            } else {
                None
            },
        })
    }
}

/// `mutableSignable`: what a mutable value's signature covers (after hashing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MutableSignable {
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
}

impl Encode for MutableSignable {
    fn encoded_len(&self) -> usize {
        uint_len(self.seq) + buffer_len(&self.value)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.seq).buffer(&self.value);
    }
}

impl<'a> Decode<'a> for MutableSignable {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(MutableSignable {
            seq: read_uint(r)?,
            value: r.buffer()?.to_vec(),
        })
    }
}

/// `mutablePutRequest`: the value of MUTABLE_PUT requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutablePutRequest {
    /// The signer; the target is `hash(public_key)`.
    pub public_key: [u8; 32],
    /// Sequence number; stored values only move forward.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
    /// Signature over the mutable signable of `seq` and `value`.
    pub signature: [u8; 64],
}

impl Encode for MutablePutRequest {
    fn encoded_len(&self) -> usize {
        32 + uint_len(self.seq) + buffer_len(&self.value) + 64
    }
    fn encode(&self, w: &mut Writer) {
        w.fixed(&self.public_key)
            .uint(self.seq)
            .buffer(&self.value)
            .fixed(&self.signature);
    }
}

impl<'a> Decode<'a> for MutablePutRequest {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(MutablePutRequest {
            public_key: r.fixed32()?,
            seq: read_uint(r)?,
            value: r.buffer()?.to_vec(),
            signature: r.fixed64()?,
        })
    }
}

/// `mutableGetResponse`: the value of MUTABLE_GET replies (and how nodes store mutables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableGetResponse {
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
    /// Signature over the mutable signable of `seq` and `value`.
    pub signature: [u8; 64],
}

impl Encode for MutableGetResponse {
    fn encoded_len(&self) -> usize {
        uint_len(self.seq) + buffer_len(&self.value) + 64
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.seq).buffer(&self.value).fixed(&self.signature);
    }
}

impl<'a> Decode<'a> for MutableGetResponse {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(MutableGetResponse {
            seq: read_uint(r)?,
            value: r.buffer()?.to_vec(),
            signature: r.fixed64()?,
        })
    }
}

/// `pluginRequest`: the value of PLUGIN requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginRequest {
    /// Name of the registered plugin.
    pub plugin: String,
    /// Plugin version; must match the registered one.
    pub version: u64,
    /// Plugin-defined command.
    pub command: u64,
    /// Plugin-defined payload.
    pub value: Option<Vec<u8>>,
}

impl Encode for PluginRequest {
    fn encoded_len(&self) -> usize {
        buffer_len(self.plugin.as_bytes())
            + uint_len(self.version)
            + uint_len(self.command)
            + 1
            + self.value.as_deref().map_or(0, buffer_len)
    }
    fn encode(&self, w: &mut Writer) {
        w.string(&self.plugin)
            .uint(self.version)
            .uint(self.command)
            .uint(u64::from(self.value.is_some()));
        if let Some(v) = &self.value {
            w.buffer(v);
        }
    }
}

impl<'a> Decode<'a> for PluginRequest {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        // JS decodes strings leniently: invalid UTF-8 becomes U+FFFD.
        let plugin = String::from_utf8_lossy(r.buffer()?).into_owned();
        let version = read_uint(r)?;
        let command = read_uint(r)?;
        let flags = read_uint(r)?;
        Ok(PluginRequest {
            plugin,
            version,
            command,
            value: if flags & 1 != 0 {
                Some(r.buffer()?.to_vec())
            } else {
                None
            },
        })
    }
}

/// Decodes a `c.uint` the way `onmutableget` reads its request value (the minimum seq).
pub fn decode_seq(bytes: &[u8]) -> Result<u64, DecodeError> {
    read_uint(&mut Reader::new(bytes))
}

/// Encodes a `c.uint` (the MUTABLE_GET request value).
pub fn encode_seq(seq: u64) -> Vec<u8> {
    let mut w = Writer::with_capacity(uint_len(seq));
    w.uint(seq);
    w.into_vec()
}

/// Decodes, re-encodes and re-decodes one message type, checking the codec's invariants.
fn check<T>(data: &[u8])
where
    T: for<'a> Decode<'a> + Encode + std::fmt::Debug,
{
    let Ok(v) = decode::<T>(data) else { return };
    let bytes = encode(&v);
    assert_eq!(bytes.len(), v.encoded_len(), "encoded_len of {v:?}");
    let again = decode::<T>(&bytes)
        .unwrap_or_else(|e| panic!("re-decoding {v:?} from {bytes:02x?} failed: {e}"));
    assert_eq!(encode(&again), bytes, "encoding of {v:?} is not stable");
}

/// Fuzzing entry point: runs every decoder of this module on `data`. It must never panic.
///
/// Each value that decodes is re-encoded; the encoding must have the length
/// `encoded_len` promised, decode again, and re-encode to the same bytes.
pub fn fuzz_decode_all(data: &[u8]) {
    check::<Peer>(data);
    check::<Peers>(data);
    check::<LookupReply>(data);
    check::<Announce>(data);
    check::<Handshake>(data);
    check::<NoisePayload>(data);
    check::<Holepunch>(data);
    check::<HolepunchPayload>(data);
    check::<MutableSignable>(data);
    check::<MutablePutRequest>(data);
    check::<MutableGetResponse>(data);
    check::<PluginRequest>(data);
    if let Ok(seq) = decode_seq(data) {
        assert_eq!(decode_seq(&encode_seq(seq)), Ok(seq));
    }
    if let Ok(reply) = decode::<LookupReply>(data) {
        let records: Vec<Vec<u8>> = reply.peers.iter().map(encode).collect();
        let raw = LookupRawReply {
            peers: records.iter().map(Vec::as_slice).collect(),
            bump: reply.bump,
        };
        assert_eq!(
            encode(&raw),
            encode(&reply),
            "raw and typed lookup replies differ"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
    }

    #[test]
    fn lengths_match_encodings() {
        let noise = NoisePayload {
            version: 1,
            error: 3,
            firewall: 2,
            holepunch: Some(HolepunchInfo {
                id: 300,
                relays: vec![RelayInfo {
                    relay_address: v4(1, 1),
                    peer_address: v4(2, 2),
                }],
            }),
            addresses4: vec![v4(3, 3)],
            addresses6: vec![SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0)],
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: true,
                id: 70000,
                seq: 5,
            }),
            secret_stream: Some(SecretStreamInfo::default()),
            relay_through: Some(RelayThroughInfo {
                version: 1,
                public_key: [1; 32],
                token: [2; 32],
            }),
            relay_addresses: Some(vec![]),
        };
        let bytes = encode(&noise);
        assert_eq!(decode::<NoisePayload>(&bytes).unwrap(), noise);

        let hs = Handshake {
            mode: 1000,
            noise: vec![1, 2, 3],
            peer_address: Some(v4(1, 2)),
            relay_address: None,
        };
        assert_eq!(decode::<Handshake>(&encode(&hs)).unwrap(), hs);

        let ann = Announce {
            peer: Some(Peer {
                public_key: [7; 32],
                relay_addresses: vec![v4(1, 1), v4(2, 2)],
            }),
            refresh: Some([8; 32]),
            signature: Some([9; 64]),
            bump: 1_700_000_000_000,
        };
        assert_eq!(decode::<Announce>(&encode(&ann)).unwrap(), ann);
    }

    #[test]
    fn noise_payload_other_version_reads_only_the_version() {
        let p = decode::<NoisePayload>(&[2, 0xff]).unwrap();
        assert_eq!(p.version, 2);
        assert_eq!(encode(&p), [1, 0, 0, 0]);
    }

    #[test]
    fn lookup_reply_bump_is_optional() {
        assert_eq!(decode::<LookupReply>(&[0]).unwrap(), LookupReply::default());
        assert_eq!(decode::<LookupReply>(&[0, 5]).unwrap().bump, 5);
    }

    #[test]
    fn unsafe_integers_are_rejected() {
        let mut big = vec![0xff];
        big.extend_from_slice(&(MAX_SAFE_INTEGER + 1).to_le_bytes());
        assert!(decode_seq(&big).is_err());
        let mut ok = vec![0xff];
        ok.extend_from_slice(&MAX_SAFE_INTEGER.to_le_bytes());
        assert_eq!(decode_seq(&ok), Ok(MAX_SAFE_INTEGER));
    }

    #[test]
    fn fuzz_entry_point_survives_random_bytes() {
        let mut state = 0x1234_5678_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 160) as usize;
            // Mostly small bytes, so flags, counts and lengths stay plausible.
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => next() as u8,
                    _ => (next() % 8) as u8,
                })
                .collect();
            fuzz_decode_all(&data);
        }
    }

    #[test]
    fn fuzz_entry_point_survives_prefixes() {
        let ann = encode(&Announce {
            peer: Some(Peer::default()),
            refresh: None,
            signature: Some([1; 64]),
            bump: 9,
        });
        for n in 0..=ann.len() {
            fuzz_decode_all(&ann[..n]);
        }
        for b in 0..=255u8 {
            fuzz_decode_all(&[b, b, b, 1, 0]);
        }
    }
}
