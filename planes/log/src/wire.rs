//! The `hypercore/alpha` replication messages, manifests and multisig signatures, byte for
//! byte as JS hypercore 11's `lib/messages.js` encodes them.
//!
//! The ten channel messages travel inside protomux frames on a `hypercore/alpha` channel;
//! [`Message`] maps them to and from the protomux message type (their index in the
//! replicator's message list). [`Handshake`] is the channel's open-time handshake.
//! [`Manifest`] is also what a log's key is hashed from, and [`MultiSignature`] is the
//! signature format of manifest v1+ logs ([`MultiSignatureV0`] for v0).
//!
//! ```text
//! node          uint index, uint size, fixed32 hash      (also the multisig "compact node")
//! signer        uint signature(0 = ed25519), fixed32 namespace, fixed32 publicKey
//! prologue      fixed32 hash, uint length
//! manifest      uint version (0..=3), then
//!   v0:         uint hash(0 = blake2b), uint type:
//!                 0 fixed32 prologue hash (prologue length 0, no signers)
//!                 1 signer (quorum 1)
//!                 2 uint flags(1 allowPatch), uint quorum, array(signer)
//!   v1..v3:     uint flags(1 allowPatch, 2 prologue, 4 linked, 8 userData), uint hash,
//!               uint quorum, array(signer), [prologue], [array(fixed32)], [buffer]
//! handshake     uint flags(1 seeks), fixed32 capability
//! sync      0   uint flags(1 canUpgrade, 2 uploading, 4 downloading, 8 hasManifest,
//!               16 allowPush), uint fork, uint length, uint remoteLength
//! request   1   uint flags(1 block, 2 hash, 4 seek, 8 upgrade, 16 manifest, 32 priority),
//!               uint id, uint fork, [uint index, uint nodes], [uint index, uint nodes],
//!               [uint bytes, uint padding], [uint start, uint length], [uint priority]
//! cancel    2   uint request
//! data      3   uint flags(1 block, 2 hash, 4 seek, 8 upgrade, 16 manifest),
//!               uint request, uint fork,
//!               [uint index, buffer value, array(node)], [uint index, array(node)],
//!               [uint bytes, array(node)],
//!               [uint start, uint length, array(node), array(node), optionalBuffer sig],
//!               [manifest]
//! noData    4   uint request, [uint flags(1 reason), [uint reason]]
//! want      5   uint start, uint length, [uint flags(1 any)]
//! unwant    6   uint start, uint length, [uint flags(1 any)]
//! bitfield  7   uint start, uint32array bitfield
//! range     8   uint flags(1 drop, 2 length is 1), uint start, [uint length]
//! extension 9   string name, raw message (the rest of the payload)
//! reorgHint     uint from, uint to, uint ancestors
//! multiSignature    array(uint signer, fixed64 signature, uint patch), array(node)
//! multiSignaturev0  array(uint flags(1 patch), uint signer, fixed64 signature,
//!                   [uint start, uint length, array(uint)]), array(node)
//! ```
//!
//! Decoding mirrors what the JS replicator accepts. protomux hands each message decoder
//! the frame's payload and ignores whatever the decoder leaves unread, so trailing bytes
//! are accepted and ignored here too, with three exceptions where JS reads them: the
//! optional flags tail of `noData`, `want` and `unwant` (read whenever any byte is left),
//! and `extension`, whose `message` is everything after the name.
//!
//! Decoders are total: malformed input is a [`DecodeError`], never a panic, and a length
//! prefix never makes them allocate more than the input could hold. As in JS, every `uint`
//! above 2^53 − 1 is rejected, array counts above [`intercom_encoding::MAX_ARRAY_LEN`] are
//! rejected, and strings decode leniently (invalid UTF-8 becomes U+FFFD). Unlike JS,
//! varints in non-shortest form are rejected (the compact-encoding crate is strict; no JS
//! encoder writes them). Encoders take any `u64`, but JS cannot decode numbers above
//! 2^53 − 1, so never send larger ones.

use intercom_encoding::{decode, encode, uint_len, Decode, DecodeError, Encode, Reader, Writer};

/// Largest integer a JS number holds exactly; larger varints fail to decode, as in JS.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Highest manifest version JS hypercore 11 decodes.
pub const MAX_MANIFEST_VERSION: u8 = 3;

const MANIFEST_PATCH: u64 = 1;
const MANIFEST_PROLOGUE: u64 = 2;
const MANIFEST_LINKED: u64 = 4;
const MANIFEST_USER_DATA: u64 = 8;

/// `c.uint` as the JS decoder returns it: at most [`MAX_SAFE_INTEGER`].
fn read_uint(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let v = r.uint()?;
    if v > MAX_SAFE_INTEGER {
        return Err(DecodeError::OutOfRange {
            what: "JS safe integer",
            value: v,
        });
    }
    Ok(v)
}

/// Encode and Decode for a struct of unsigned fields, in declaration order, each a JS
/// safe integer on the wire.
macro_rules! uint_fields_codec {
    ($name:ident { $($field:ident),+ }) => {
        impl Encode for $name {
            fn encoded_len(&self) -> usize {
                0 $(+ uint_len(self.$field))+
            }
            fn encode(&self, w: &mut Writer) {
                $(w.uint(self.$field);)+
            }
        }

        impl<'a> Decode<'a> for $name {
            fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
                Ok($name {
                    $($field: read_uint(r)?,)+
                })
            }
        }
    };
}

/// Reads a flag field's trailing form: absent (no bytes left) reads as 0.
fn read_optional_flags(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    if r.is_empty() {
        Ok(0)
    } else {
        read_uint(r)
    }
}

fn buffer_len(b: &[u8]) -> usize {
    uint_len(b.len() as u64) + b.len()
}

fn array_len<T: Encode>(items: &[T]) -> usize {
    uint_len(items.len() as u64) + items.iter().map(Encode::encoded_len).sum::<usize>()
}

fn write_array<T: Encode>(w: &mut Writer, items: &[T]) {
    w.array(items, |w, item| item.encode(w));
}

fn flag(set: bool, bit: u64) -> u64 {
    if set {
        bit
    } else {
        0
    }
}

/// Decodes `Some(T)` when `bit` is set in `flags`.
fn read_if<'a, T>(
    flags: u64,
    bit: u64,
    r: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if flags & bit != 0 {
        read(r).map(Some)
    } else {
        Ok(None)
    }
}

/// The tree hash of a log; hypercore 11 only knows BLAKE2b (id 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlgorithm {
    /// BLAKE2b-256, the `'blake2b'` of JS.
    #[default]
    Blake2b,
}

impl Encode for HashAlgorithm {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(0);
    }
}

impl<'a> Decode<'a> for HashAlgorithm {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match read_uint(r)? {
            0 => Ok(HashAlgorithm::Blake2b),
            id => Err(DecodeError::OutOfRange {
                what: "manifest hash id",
                value: id,
            }),
        }
    }
}

/// A signer's signature scheme; hypercore 11 only knows Ed25519 (id 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignatureAlgorithm {
    /// Ed25519, the `'ed25519'` of JS.
    #[default]
    Ed25519,
}

impl Encode for SignatureAlgorithm {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(0);
    }
}

impl<'a> Decode<'a> for SignatureAlgorithm {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        match read_uint(r)? {
            0 => Ok(SignatureAlgorithm::Ed25519),
            id => Err(DecodeError::OutOfRange {
                what: "manifest signature id",
                value: id,
            }),
        }
    }
}

/// `signer`: one key allowed to sign a log's tree roots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signer {
    /// The signature scheme.
    pub signature: SignatureAlgorithm,
    /// Namespace mixed into the signable (hypercore's `DEFAULT_NAMESPACE` by default).
    pub namespace: [u8; 32],
    /// The signer's public key.
    pub public_key: [u8; 32],
}

impl Encode for Signer {
    fn encoded_len(&self) -> usize {
        self.signature.encoded_len() + 64
    }
    fn encode(&self, w: &mut Writer) {
        self.signature.encode(w);
        w.fixed(&self.namespace).fixed(&self.public_key);
    }
}

impl<'a> Decode<'a> for Signer {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Signer {
            signature: SignatureAlgorithm::decode(r)?,
            namespace: r.fixed32()?,
            public_key: r.fixed32()?,
        })
    }
}

/// `prologue`: a log whose first `length` blocks are fixed in advance by their tree hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prologue {
    /// Root hash of the tree of the first `length` blocks.
    pub hash: [u8; 32],
    /// Number of blocks the prologue covers.
    pub length: u64,
}

impl Encode for Prologue {
    fn encoded_len(&self) -> usize {
        32 + uint_len(self.length)
    }
    fn encode(&self, w: &mut Writer) {
        w.fixed(&self.hash).uint(self.length);
    }
}

impl<'a> Decode<'a> for Prologue {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Prologue {
            hash: r.fixed32()?,
            length: read_uint(r)?,
        })
    }
}

/// `manifest`: who may sign a log and how; a log's key is the hash of its encoding.
///
/// Version 0 has no room for `linked`, `user_data` or a prologue next to signers: encoding
/// a v0 manifest silently drops them (and a prologue's length), as JS does. Versions above
/// [`MAX_MANIFEST_VERSION`] encode, but nothing decodes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Manifest version, 0 to [`MAX_MANIFEST_VERSION`].
    pub version: u8,
    /// The tree hash.
    pub hash: HashAlgorithm,
    /// Signers may sign a tree that patches an older one.
    pub allow_patch: bool,
    /// How many signers must sign each root.
    pub quorum: u64,
    /// The keys allowed to sign.
    pub signers: Vec<Signer>,
    /// The log's fixed first blocks, if any.
    pub prologue: Option<Prologue>,
    /// Keys of logs this one is linked to (v2+). `Some(vec![])` is encoded, as an empty
    /// JS array is.
    pub linked: Option<Vec<[u8; 32]>>,
    /// Application data hashed into the key (v2+). `Some(vec![])` is encoded, as an empty
    /// JS buffer is.
    pub user_data: Option<Vec<u8>>,
}

/// The three layouts of a version 0 manifest, by the type number written for each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ManifestV0Type {
    /// 0: only a prologue hash, no signers.
    Prologue,
    /// 1: one signer, quorum 1, no patches.
    SingleSigner,
    /// 2: flags, quorum and any number of signers.
    Signers,
}

impl Manifest {
    fn v0_type(&self) -> ManifestV0Type {
        if self.prologue.is_some() && self.signers.is_empty() {
            ManifestV0Type::Prologue
        } else if self.quorum == 1 && self.signers.len() == 1 && !self.allow_patch {
            ManifestV0Type::SingleSigner
        } else {
            ManifestV0Type::Signers
        }
    }

    fn flags(&self) -> u64 {
        flag(self.allow_patch, MANIFEST_PATCH)
            | flag(self.prologue.is_some(), MANIFEST_PROLOGUE)
            | flag(self.linked.is_some(), MANIFEST_LINKED)
            | flag(self.user_data.is_some(), MANIFEST_USER_DATA)
    }

    fn v0_encoded_len(&self) -> usize {
        self.hash.encoded_len()
            + 1
            + match self.v0_type() {
                ManifestV0Type::Prologue => 32,
                ManifestV0Type::SingleSigner => self.signers[0].encoded_len(),
                ManifestV0Type::Signers => 1 + uint_len(self.quorum) + array_len(&self.signers),
            }
    }

    fn encode_v0(&self, w: &mut Writer) {
        self.hash.encode(w);
        match self.v0_type() {
            ManifestV0Type::Prologue => {
                let prologue = self
                    .prologue
                    .as_ref()
                    .expect("prologue form has a prologue");
                w.uint(0).fixed(&prologue.hash);
            }
            ManifestV0Type::SingleSigner => {
                w.uint(1);
                self.signers[0].encode(w);
            }
            ManifestV0Type::Signers => {
                w.uint(2).uint(flag(self.allow_patch, 1)).uint(self.quorum);
                write_array(w, &self.signers);
            }
        }
    }

    fn decode_v0(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let hash = HashAlgorithm::decode(r)?;
        let manifest = Manifest {
            version: 0,
            hash,
            ..Manifest::default()
        };
        match read_uint(r)? {
            0 => Ok(Manifest {
                prologue: Some(Prologue {
                    hash: r.fixed32()?,
                    length: 0,
                }),
                ..manifest
            }),
            1 => Ok(Manifest {
                quorum: 1,
                signers: vec![Signer::decode(r)?],
                ..manifest
            }),
            2 => {
                let flags = read_uint(r)?;
                Ok(Manifest {
                    allow_patch: flags & 1 != 0,
                    quorum: read_uint(r)?,
                    signers: r.array(Signer::decode)?,
                    ..manifest
                })
            }
            kind => Err(DecodeError::OutOfRange {
                what: "manifest v0 type",
                value: kind,
            }),
        }
    }
}

impl Encode for Manifest {
    fn encoded_len(&self) -> usize {
        let version = uint_len(u64::from(self.version));
        if self.version == 0 {
            return version + self.v0_encoded_len();
        }
        version
            + 1
            + self.hash.encoded_len()
            + uint_len(self.quorum)
            + array_len(&self.signers)
            + self.prologue.as_ref().map_or(0, Encode::encoded_len)
            + self.linked.as_deref().map_or(0, array_len)
            + self.user_data.as_deref().map_or(0, buffer_len)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(u64::from(self.version));
        if self.version == 0 {
            return self.encode_v0(w);
        }
        w.uint(self.flags());
        self.hash.encode(w);
        w.uint(self.quorum);
        write_array(w, &self.signers);
        if let Some(prologue) = &self.prologue {
            prologue.encode(w);
        }
        if let Some(linked) = &self.linked {
            write_array(w, linked);
        }
        if let Some(user_data) = &self.user_data {
            w.buffer(user_data);
        }
    }
}

impl<'a> Decode<'a> for Manifest {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let version = read_uint(r)?;
        if version == 0 {
            return Manifest::decode_v0(r);
        }
        if version > u64::from(MAX_MANIFEST_VERSION) {
            return Err(DecodeError::OutOfRange {
                what: "manifest version",
                value: version,
            });
        }
        let flags = read_uint(r)?;
        Ok(Manifest {
            version: version as u8,
            hash: HashAlgorithm::decode(r)?,
            allow_patch: flags & MANIFEST_PATCH != 0,
            quorum: read_uint(r)?,
            signers: r.array(Signer::decode)?,
            prologue: read_if(flags, MANIFEST_PROLOGUE, r, Prologue::decode)?,
            linked: read_if(flags, MANIFEST_LINKED, r, |r| r.array(Reader::fixed32))?,
            user_data: read_if(flags, MANIFEST_USER_DATA, r, |r| {
                r.buffer().map(<[u8]>::to_vec)
            })?,
        })
    }
}

/// `node`: one Merkle tree node as proofs carry it (also multisig's "compact node"). The
/// type is the tree's own [`crate::tree::Node`]; its codec lives here.
pub use crate::tree::Node;

impl Encode for Node {
    fn encoded_len(&self) -> usize {
        uint_len(self.index) + uint_len(self.size) + 32
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.index).uint(self.size).fixed(&self.hash);
    }
}

impl<'a> Decode<'a> for Node {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Node {
            index: read_uint(r)?,
            size: read_uint(r)?,
            hash: r.fixed32()?,
        })
    }
}

fn read_nodes(r: &mut Reader<'_>) -> Result<Vec<Node>, DecodeError> {
    r.array(Node::decode)
}

/// `wire.handshake`: the handshake of a `hypercore/alpha` channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handshake {
    /// The sender supports seek requests.
    pub seeks: bool,
    /// Proof that the sender knows the log's key, bound to this stream's handshake.
    pub capability: [u8; 32],
}

impl Encode for Handshake {
    fn encoded_len(&self) -> usize {
        1 + 32
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(flag(self.seeks, 1)).fixed(&self.capability);
    }
}

impl<'a> Decode<'a> for Handshake {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Handshake {
            seeks: flags & 1 != 0,
            capability: r.fixed32()?,
        })
    }
}

/// The `block` and `hash` parts of a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestBlock {
    /// Block index (for `hash`, the tree index as JS sends it).
    pub index: u64,
    /// How many proof nodes the requester already has.
    pub nodes: u64,
}

uint_fields_codec!(RequestBlock { index, nodes });

/// The `seek` part of a [`Request`]: find the block holding a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestSeek {
    /// Byte offset into the log.
    pub bytes: u64,
    /// Per-block padding the offset accounts for.
    pub padding: u64,
}

uint_fields_codec!(RequestSeek { bytes, padding });

/// The `upgrade` part of a [`Request`]: prove the log's length grew from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestUpgrade {
    /// The length the requester already trusts.
    pub start: u64,
    /// How many blocks past `start` to prove.
    pub length: u64,
}

uint_fields_codec!(RequestUpgrade { start, length });

/// `wire.request` (message type 1): ask for a block, hash, seek and/or upgrade proof.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Request id, echoed by the [`Data`] or [`NoData`] answer.
    pub id: u64,
    /// The fork the requester is on.
    pub fork: u64,
    /// A block and its proof.
    pub block: Option<RequestBlock>,
    /// A tree hash and its proof.
    pub hash: Option<RequestBlock>,
    /// The block holding a byte offset.
    pub seek: Option<RequestSeek>,
    /// A proof of a longer log.
    pub upgrade: Option<RequestUpgrade>,
    /// Also send the log's manifest.
    pub manifest: bool,
    /// Request priority; 0 is the default and is not sent.
    pub priority: u64,
}

impl Encode for Request {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.id)
            + uint_len(self.fork)
            + self.block.as_ref().map_or(0, Encode::encoded_len)
            + self.hash.as_ref().map_or(0, Encode::encoded_len)
            + self.seek.as_ref().map_or(0, Encode::encoded_len)
            + self.upgrade.as_ref().map_or(0, Encode::encoded_len)
            + if self.priority != 0 {
                uint_len(self.priority)
            } else {
                0
            }
    }
    fn encode(&self, w: &mut Writer) {
        let flags = flag(self.block.is_some(), 1)
            | flag(self.hash.is_some(), 2)
            | flag(self.seek.is_some(), 4)
            | flag(self.upgrade.is_some(), 8)
            | flag(self.manifest, 16)
            | flag(self.priority != 0, 32);
        w.uint(flags).uint(self.id).uint(self.fork);
        if let Some(block) = &self.block {
            block.encode(w);
        }
        if let Some(hash) = &self.hash {
            hash.encode(w);
        }
        if let Some(seek) = &self.seek {
            seek.encode(w);
        }
        if let Some(upgrade) = &self.upgrade {
            upgrade.encode(w);
        }
        if self.priority != 0 {
            w.uint(self.priority);
        }
    }
}

impl<'a> Decode<'a> for Request {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Request {
            id: read_uint(r)?,
            fork: read_uint(r)?,
            block: read_if(flags, 1, r, RequestBlock::decode)?,
            hash: read_if(flags, 2, r, RequestBlock::decode)?,
            seek: read_if(flags, 4, r, RequestSeek::decode)?,
            upgrade: read_if(flags, 8, r, RequestUpgrade::decode)?,
            manifest: flags & 16 != 0,
            priority: read_if(flags, 32, r, read_uint)?.unwrap_or(0),
        })
    }
}

/// `wire.cancel` (message type 2): withdraw a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cancel {
    /// Id of the request to cancel.
    pub request: u64,
}

impl Encode for Cancel {
    fn encoded_len(&self) -> usize {
        uint_len(self.request)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.request);
    }
}

impl<'a> Decode<'a> for Cancel {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Cancel {
            request: read_uint(r)?,
        })
    }
}

/// The `block` part of [`Data`]: a block's bytes and the proof nodes for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataBlock {
    /// Block index.
    pub index: u64,
    /// The block's bytes.
    pub value: Vec<u8>,
    /// Proof nodes.
    pub nodes: Vec<Node>,
}

impl Encode for DataBlock {
    fn encoded_len(&self) -> usize {
        uint_len(self.index) + buffer_len(&self.value) + array_len(&self.nodes)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.index).buffer(&self.value);
        write_array(w, &self.nodes);
    }
}

impl<'a> Decode<'a> for DataBlock {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(DataBlock {
            index: read_uint(r)?,
            value: r.buffer()?.to_vec(),
            nodes: read_nodes(r)?,
        })
    }
}

/// The `hash` part of [`Data`]: proof nodes for a tree hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataHash {
    /// Index the proof is for.
    pub index: u64,
    /// Proof nodes.
    pub nodes: Vec<Node>,
}

impl Encode for DataHash {
    fn encoded_len(&self) -> usize {
        uint_len(self.index) + array_len(&self.nodes)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.index);
        write_array(w, &self.nodes);
    }
}

impl<'a> Decode<'a> for DataHash {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(DataHash {
            index: read_uint(r)?,
            nodes: read_nodes(r)?,
        })
    }
}

/// The `seek` part of [`Data`]: proof nodes locating a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSeek {
    /// The byte offset sought.
    pub bytes: u64,
    /// Proof nodes.
    pub nodes: Vec<Node>,
}

impl Encode for DataSeek {
    fn encoded_len(&self) -> usize {
        uint_len(self.bytes) + array_len(&self.nodes)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.bytes);
        write_array(w, &self.nodes);
    }
}

impl<'a> Decode<'a> for DataSeek {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(DataSeek {
            bytes: read_uint(r)?,
            nodes: read_nodes(r)?,
        })
    }
}

/// The `upgrade` part of [`Data`]: a signed proof that the log reached `start + length`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataUpgrade {
    /// The length the proof starts from.
    pub start: u64,
    /// Blocks added past `start`.
    pub length: u64,
    /// Nodes proving the new roots.
    pub nodes: Vec<Node>,
    /// Extra nodes the receiver needs for roots it does not have.
    pub additional_nodes: Vec<Node>,
    /// Signature of the new tree (a [`MultiSignature`] encoding for manifest v1+ logs
    /// with several signers). `Some(vec![])` is written as absent, as in JS.
    pub signature: Option<Vec<u8>>,
}

impl Encode for DataUpgrade {
    fn encoded_len(&self) -> usize {
        uint_len(self.start)
            + uint_len(self.length)
            + array_len(&self.nodes)
            + array_len(&self.additional_nodes)
            + self.signature.as_deref().map_or(1, buffer_len)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.start).uint(self.length);
        write_array(w, &self.nodes);
        write_array(w, &self.additional_nodes);
        w.optional_buffer(self.signature.as_deref());
    }
}

impl<'a> Decode<'a> for DataUpgrade {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(DataUpgrade {
            start: read_uint(r)?,
            length: read_uint(r)?,
            nodes: read_nodes(r)?,
            additional_nodes: read_nodes(r)?,
            signature: r.optional_buffer()?.map(<[u8]>::to_vec),
        })
    }
}

/// `wire.data` (message type 3): the answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data {
    /// Id of the request answered.
    pub request: u64,
    /// The fork the proofs are for.
    pub fork: u64,
    /// The requested block.
    pub block: Option<DataBlock>,
    /// The requested hash proof.
    pub hash: Option<DataHash>,
    /// The requested seek proof.
    pub seek: Option<DataSeek>,
    /// The requested upgrade proof.
    pub upgrade: Option<DataUpgrade>,
    /// The log's manifest.
    pub manifest: Option<Manifest>,
}

impl Encode for Data {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.request)
            + uint_len(self.fork)
            + self.block.as_ref().map_or(0, Encode::encoded_len)
            + self.hash.as_ref().map_or(0, Encode::encoded_len)
            + self.seek.as_ref().map_or(0, Encode::encoded_len)
            + self.upgrade.as_ref().map_or(0, Encode::encoded_len)
            + self.manifest.as_ref().map_or(0, Encode::encoded_len)
    }
    fn encode(&self, w: &mut Writer) {
        let flags = flag(self.block.is_some(), 1)
            | flag(self.hash.is_some(), 2)
            | flag(self.seek.is_some(), 4)
            | flag(self.upgrade.is_some(), 8)
            | flag(self.manifest.is_some(), 16);
        w.uint(flags).uint(self.request).uint(self.fork);
        if let Some(block) = &self.block {
            block.encode(w);
        }
        if let Some(hash) = &self.hash {
            hash.encode(w);
        }
        if let Some(seek) = &self.seek {
            seek.encode(w);
        }
        if let Some(upgrade) = &self.upgrade {
            upgrade.encode(w);
        }
        if let Some(manifest) = &self.manifest {
            manifest.encode(w);
        }
    }
}

impl<'a> Decode<'a> for Data {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Data {
            request: read_uint(r)?,
            fork: read_uint(r)?,
            block: read_if(flags, 1, r, DataBlock::decode)?,
            hash: read_if(flags, 2, r, DataHash::decode)?,
            seek: read_if(flags, 4, r, DataSeek::decode)?,
            upgrade: read_if(flags, 8, r, DataUpgrade::decode)?,
            manifest: read_if(flags, 16, r, Manifest::decode)?,
        })
    }
}

/// `wire.noData` (message type 4): a [`Request`] cannot be answered.
///
/// The flags byte is always written; a payload that ends after `request` decodes with
/// reason 0, as in JS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoData {
    /// Id of the request refused.
    pub request: u64,
    /// Why; 0 (none given) is not sent.
    pub reason: u64,
}

impl Encode for NoData {
    fn encoded_len(&self) -> usize {
        uint_len(self.request)
            + 1
            + if self.reason != 0 {
                uint_len(self.reason)
            } else {
                0
            }
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.request).uint(flag(self.reason != 0, 1));
        if self.reason != 0 {
            w.uint(self.reason);
        }
    }
}

impl<'a> Decode<'a> for NoData {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let request = read_uint(r)?;
        let flags = read_optional_flags(r)?;
        Ok(NoData {
            request,
            reason: read_if(flags, 1, r, read_uint)?.unwrap_or(0),
        })
    }
}

/// `wire.want` (message type 5): the sender wants blocks `start..start + length`.
///
/// The flags are only written when `any` is set; a payload that ends after `length`
/// decodes with `any` false, and any byte after `length` is read as the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// First block index.
    pub start: u64,
    /// Number of blocks.
    pub length: u64,
    /// Any block of the range will do.
    pub any: bool,
}

/// `wire.unwant` (message type 6): withdraws a [`Want`]; same layout.
pub type Unwant = Want;

impl Encode for Want {
    fn encoded_len(&self) -> usize {
        uint_len(self.start) + uint_len(self.length) + usize::from(self.any)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.start).uint(self.length);
        if self.any {
            w.uint(1);
        }
    }
}

impl<'a> Decode<'a> for Want {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let start = read_uint(r)?;
        let length = read_uint(r)?;
        let flags = read_optional_flags(r)?;
        Ok(Want {
            start,
            length,
            any: flags & 1 != 0,
        })
    }
}

/// `wire.range` (message type 8): the sender has (or, with `drop`, dropped) a range of
/// blocks. A length of 1 is carried by a flag instead of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// The blocks were removed rather than added.
    pub drop: bool,
    /// First block index.
    pub start: u64,
    /// Number of blocks.
    pub length: u64,
}

impl Encode for Range {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.start)
            + if self.length != 1 {
                uint_len(self.length)
            } else {
                0
            }
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(flag(self.drop, 1) | flag(self.length == 1, 2))
            .uint(self.start);
        if self.length != 1 {
            w.uint(self.length);
        }
    }
}

impl<'a> Decode<'a> for Range {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Range {
            drop: flags & 1 != 0,
            start: read_uint(r)?,
            length: if flags & 2 != 0 { 1 } else { read_uint(r)? },
        })
    }
}

/// `wire.bitfield` (message type 7): a page of the sender's have-bitfield.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    /// Block index of the first bit.
    pub start: u64,
    /// The bits, 32 blocks per word, lowest bit first.
    pub bitfield: Vec<u32>,
}

impl Encode for Bitfield {
    fn encoded_len(&self) -> usize {
        uint_len(self.start) + uint_len(self.bitfield.len() as u64) + 4 * self.bitfield.len()
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.start).uint32_array(&self.bitfield);
    }
}

impl<'a> Decode<'a> for Bitfield {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Bitfield {
            start: read_uint(r)?,
            bitfield: r.uint32_array()?,
        })
    }
}

/// `wire.sync` (message type 0): the sender's view of the log and of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Synchronize {
    /// The sender's fork.
    pub fork: u64,
    /// The sender's log length.
    pub length: u64,
    /// The length the sender believes the receiver has.
    pub remote_length: u64,
    /// The sender can prove a longer log than the receiver's.
    pub can_upgrade: bool,
    /// The sender serves requests.
    pub uploading: bool,
    /// The sender downloads.
    pub downloading: bool,
    /// The sender has the log's manifest.
    pub has_manifest: bool,
    /// The sender accepts pushed data.
    pub allow_push: bool,
}

impl Encode for Synchronize {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.fork) + uint_len(self.length) + uint_len(self.remote_length)
    }
    fn encode(&self, w: &mut Writer) {
        let flags = flag(self.can_upgrade, 1)
            | flag(self.uploading, 2)
            | flag(self.downloading, 4)
            | flag(self.has_manifest, 8)
            | flag(self.allow_push, 16);
        w.uint(flags)
            .uint(self.fork)
            .uint(self.length)
            .uint(self.remote_length);
    }
}

impl<'a> Decode<'a> for Synchronize {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(Synchronize {
            fork: read_uint(r)?,
            length: read_uint(r)?,
            remote_length: read_uint(r)?,
            can_upgrade: flags & 1 != 0,
            uploading: flags & 2 != 0,
            downloading: flags & 4 != 0,
            has_manifest: flags & 8 != 0,
            allow_push: flags & 16 != 0,
        })
    }
}

/// `wire.reorgHint`: a truncation the sender went through (not sent by hypercore 11's
/// replicator, kept for completeness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReorgHint {
    /// Length before the reorg.
    pub from: u64,
    /// Length after it.
    pub to: u64,
    /// Length of the common ancestor.
    pub ancestors: u64,
}

uint_fields_codec!(ReorgHint {
    from,
    to,
    ancestors
});

/// `wire.extension` (message type 9): an application extension message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extension {
    /// The extension's registered name.
    pub name: String,
    /// The extension payload: everything after the name.
    pub message: Vec<u8>,
}

impl Encode for Extension {
    fn encoded_len(&self) -> usize {
        buffer_len(self.name.as_bytes()) + self.message.len()
    }
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name).raw(&self.message);
    }
}

impl<'a> Decode<'a> for Extension {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        // JS decodes strings leniently: invalid UTF-8 becomes U+FFFD.
        let name = String::from_utf8_lossy(r.buffer()?).into_owned();
        Ok(Extension {
            name,
            message: r.rest().to_vec(),
        })
    }
}

/// One signer's contribution to a [`MultiSignature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultisigInput {
    /// Index of the signer in the manifest.
    pub signer: u64,
    /// The signer's signature.
    pub signature: [u8; 64],
    /// How many of the multisig's patch nodes this signer's tree needs.
    pub patch: u64,
}

impl Encode for MultisigInput {
    fn encoded_len(&self) -> usize {
        uint_len(self.signer) + 64 + uint_len(self.patch)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.signer).fixed(&self.signature).uint(self.patch);
    }
}

impl<'a> Decode<'a> for MultisigInput {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(MultisigInput {
            signer: read_uint(r)?,
            signature: r.fixed64()?,
            patch: read_uint(r)?,
        })
    }
}

/// `multiSignature`: the signature of a manifest v1+ log with several signers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiSignature {
    /// The signers' contributions.
    pub proofs: Vec<MultisigInput>,
    /// Tree nodes patching older signed trees up to the signed one.
    pub patch: Vec<Node>,
}

impl Encode for MultiSignature {
    fn encoded_len(&self) -> usize {
        array_len(&self.proofs) + array_len(&self.patch)
    }
    fn encode(&self, w: &mut Writer) {
        write_array(w, &self.proofs);
        write_array(w, &self.patch);
    }
}

impl<'a> Decode<'a> for MultiSignature {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(MultiSignature {
            proofs: r.array(MultisigInput::decode)?,
            patch: read_nodes(r)?,
        })
    }
}

/// The patch of one [`MultisigInputV0`]: the tree indexes it brings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatchV0 {
    /// The signed tree's older length.
    pub start: u64,
    /// Blocks the patch adds.
    pub length: u64,
    /// Flat-tree indexes of the patch nodes.
    pub nodes: Vec<u64>,
}

impl Encode for PatchV0 {
    fn encoded_len(&self) -> usize {
        uint_len(self.start)
            + uint_len(self.length)
            + uint_len(self.nodes.len() as u64)
            + self.nodes.iter().map(|&n| uint_len(n)).sum::<usize>()
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(self.start).uint(self.length);
        w.array(&self.nodes, |w, &n| {
            w.uint(n);
        });
    }
}

impl<'a> Decode<'a> for PatchV0 {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(PatchV0 {
            start: read_uint(r)?,
            length: read_uint(r)?,
            nodes: r.array(read_uint)?,
        })
    }
}

/// One signer's contribution to a [`MultiSignatureV0`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultisigInputV0 {
    /// Index of the signer in the manifest.
    pub signer: u64,
    /// The signer's signature.
    pub signature: [u8; 64],
    /// The patch this signer's tree needs.
    pub patch: Option<PatchV0>,
}

impl Encode for MultisigInputV0 {
    fn encoded_len(&self) -> usize {
        1 + uint_len(self.signer) + 64 + self.patch.as_ref().map_or(0, Encode::encoded_len)
    }
    fn encode(&self, w: &mut Writer) {
        w.uint(flag(self.patch.is_some(), 1))
            .uint(self.signer)
            .fixed(&self.signature);
        if let Some(patch) = &self.patch {
            patch.encode(w);
        }
    }
}

impl<'a> Decode<'a> for MultisigInputV0 {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = read_uint(r)?;
        Ok(MultisigInputV0 {
            signer: read_uint(r)?,
            signature: r.fixed64()?,
            patch: read_if(flags, 1, r, PatchV0::decode)?,
        })
    }
}

/// `multiSignaturev0`: the multisig signature of a manifest v0 log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiSignatureV0 {
    /// The signers' contributions.
    pub proofs: Vec<MultisigInputV0>,
    /// Tree nodes patching older signed trees up to the signed one.
    pub patch: Vec<Node>,
}

impl Encode for MultiSignatureV0 {
    fn encoded_len(&self) -> usize {
        array_len(&self.proofs) + array_len(&self.patch)
    }
    fn encode(&self, w: &mut Writer) {
        write_array(w, &self.proofs);
        write_array(w, &self.patch);
    }
}

impl<'a> Decode<'a> for MultiSignatureV0 {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(MultiSignatureV0 {
            proofs: r.array(MultisigInputV0::decode)?,
            patch: read_nodes(r)?,
        })
    }
}

/// A message on a `hypercore/alpha` channel, by protomux message type.
// `Data` is far larger than the rest, but messages are handled one at a time and never
// stored in bulk, so boxing it would only add an allocation per block.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0, `wire.sync`.
    Sync(Synchronize),
    /// Type 1, `wire.request`.
    Request(Request),
    /// Type 2, `wire.cancel`.
    Cancel(Cancel),
    /// Type 3, `wire.data`.
    Data(Data),
    /// Type 4, `wire.noData`.
    NoData(NoData),
    /// Type 5, `wire.want`.
    Want(Want),
    /// Type 6, `wire.unwant`.
    Unwant(Unwant),
    /// Type 7, `wire.bitfield`.
    Bitfield(Bitfield),
    /// Type 8, `wire.range`.
    Range(Range),
    /// Type 9, `wire.extension`.
    Extension(Extension),
}

impl Message {
    /// Protomux type of [`Message::Sync`].
    pub const SYNC: u32 = 0;
    /// Protomux type of [`Message::Request`].
    pub const REQUEST: u32 = 1;
    /// Protomux type of [`Message::Cancel`].
    pub const CANCEL: u32 = 2;
    /// Protomux type of [`Message::Data`].
    pub const DATA: u32 = 3;
    /// Protomux type of [`Message::NoData`].
    pub const NO_DATA: u32 = 4;
    /// Protomux type of [`Message::Want`].
    pub const WANT: u32 = 5;
    /// Protomux type of [`Message::Unwant`].
    pub const UNWANT: u32 = 6;
    /// Protomux type of [`Message::Bitfield`].
    pub const BITFIELD: u32 = 7;
    /// Protomux type of [`Message::Range`].
    pub const RANGE: u32 = 8;
    /// Protomux type of [`Message::Extension`].
    pub const EXTENSION: u32 = 9;
    /// Number of message types the channel registers.
    pub const COUNT: u32 = 10;

    /// The protomux message type this message is sent as.
    pub fn message_type(&self) -> u32 {
        match self {
            Message::Sync(_) => Message::SYNC,
            Message::Request(_) => Message::REQUEST,
            Message::Cancel(_) => Message::CANCEL,
            Message::Data(_) => Message::DATA,
            Message::NoData(_) => Message::NO_DATA,
            Message::Want(_) => Message::WANT,
            Message::Unwant(_) => Message::UNWANT,
            Message::Bitfield(_) => Message::BITFIELD,
            Message::Range(_) => Message::RANGE,
            Message::Extension(_) => Message::EXTENSION,
        }
    }

    /// Decodes the payload of a protomux message of type `message_type`. Bytes after the
    /// message are ignored, as JS protomux does (see the module docs for the three
    /// messages that read them); an unknown type is an error.
    pub fn decode(message_type: u32, payload: &[u8]) -> Result<Message, DecodeError> {
        Ok(match message_type {
            Message::SYNC => Message::Sync(decode(payload)?),
            Message::REQUEST => Message::Request(decode(payload)?),
            Message::CANCEL => Message::Cancel(decode(payload)?),
            Message::DATA => Message::Data(decode(payload)?),
            Message::NO_DATA => Message::NoData(decode(payload)?),
            Message::WANT => Message::Want(decode(payload)?),
            Message::UNWANT => Message::Unwant(decode(payload)?),
            Message::BITFIELD => Message::Bitfield(decode(payload)?),
            Message::RANGE => Message::Range(decode(payload)?),
            Message::EXTENSION => Message::Extension(decode(payload)?),
            other => {
                return Err(DecodeError::OutOfRange {
                    what: "hypercore message type",
                    value: u64::from(other),
                })
            }
        })
    }

    /// The protomux message type and payload of this message.
    pub fn encode(&self) -> (u32, Vec<u8>) {
        let payload = match self {
            Message::Sync(m) => encode(m),
            Message::Request(m) => encode(m),
            Message::Cancel(m) => encode(m),
            Message::Data(m) => encode(m),
            Message::NoData(m) => encode(m),
            Message::Want(m) => encode(m),
            Message::Unwant(m) => encode(m),
            Message::Bitfield(m) => encode(m),
            Message::Range(m) => encode(m),
            Message::Extension(m) => encode(m),
        };
        (self.message_type(), payload)
    }
}

/// Decodes, re-encodes and re-decodes one codec, checking its invariants.
fn check<T>(data: &[u8])
where
    T: for<'a> Decode<'a> + Encode + PartialEq + std::fmt::Debug,
{
    let Ok(v) = decode::<T>(data) else { return };
    let bytes = encode(&v);
    assert_eq!(bytes.len(), v.encoded_len(), "encoded_len of {v:?}");
    let again = decode::<T>(&bytes)
        .unwrap_or_else(|e| panic!("re-decoding {v:?} from {bytes:02x?} failed: {e}"));
    assert_eq!(again, v, "round trip through {bytes:02x?}");
    assert_eq!(encode(&again), bytes, "encoding of {v:?} is not stable");
}

/// Fuzzing entry point: decodes `data` as every channel message type, a manifest, both
/// multisig formats and the other codecs of this module. It must never panic.
///
/// Whatever decodes is re-encoded; the bytes must have the promised length and decode
/// back to the same value.
pub fn fuzz_messages(data: &[u8]) {
    for message_type in 0..Message::COUNT {
        let Ok(message) = Message::decode(message_type, data) else {
            continue;
        };
        let (again_type, bytes) = message.encode();
        assert_eq!(again_type, message_type, "type of {message:?}");
        let again = Message::decode(again_type, &bytes)
            .unwrap_or_else(|e| panic!("re-decoding {message:?} from {bytes:02x?} failed: {e}"));
        assert_eq!(again, message, "round trip through {bytes:02x?}");
    }
    assert!(Message::decode(Message::COUNT, data).is_err());
    check::<Synchronize>(data);
    check::<Request>(data);
    check::<Cancel>(data);
    check::<Data>(data);
    check::<NoData>(data);
    check::<Want>(data);
    check::<Bitfield>(data);
    check::<Range>(data);
    check::<Extension>(data);
    check::<Handshake>(data);
    check::<ReorgHint>(data);
    check::<Node>(data);
    check::<Manifest>(data);
    check::<MultiSignature>(data);
    check::<MultiSignatureV0>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u64, fill: u8) -> Node {
        Node {
            index,
            size: index * 10,
            hash: [fill; 32],
        }
    }

    fn signer(fill: u8) -> Signer {
        Signer {
            signature: SignatureAlgorithm::Ed25519,
            namespace: [fill; 32],
            public_key: [fill + 1; 32],
        }
    }

    fn manifests() -> Vec<Manifest> {
        vec![
            Manifest {
                version: 0,
                prologue: Some(Prologue {
                    hash: [1; 32],
                    length: 0,
                }),
                ..Manifest::default()
            },
            Manifest {
                version: 0,
                quorum: 1,
                signers: vec![signer(2)],
                ..Manifest::default()
            },
            Manifest {
                version: 0,
                allow_patch: true,
                quorum: 2,
                signers: vec![signer(3), signer(5)],
                ..Manifest::default()
            },
            Manifest {
                version: 1,
                quorum: 1,
                signers: vec![signer(7)],
                ..Manifest::default()
            },
            Manifest {
                version: 2,
                allow_patch: true,
                quorum: 0,
                signers: vec![],
                prologue: Some(Prologue {
                    hash: [9; 32],
                    length: 0x1_0000,
                }),
                linked: Some(vec![[10; 32], [11; 32]]),
                user_data: Some(b"hello".to_vec()),
                ..Manifest::default()
            },
            Manifest {
                version: 3,
                quorum: 1,
                signers: vec![signer(12)],
                linked: Some(vec![]),
                user_data: Some(vec![]),
                ..Manifest::default()
            },
        ]
    }

    fn messages() -> Vec<Message> {
        vec![
            Message::Sync(Synchronize {
                fork: 1,
                length: 0xfd,
                remote_length: MAX_SAFE_INTEGER,
                can_upgrade: true,
                allow_push: true,
                ..Synchronize::default()
            }),
            Message::Request(Request {
                id: 7,
                fork: 0,
                block: Some(RequestBlock { index: 3, nodes: 2 }),
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: 4,
                }),
                manifest: true,
                priority: 0x1_0000,
                ..Request::default()
            }),
            Message::Cancel(Cancel { request: 7 }),
            Message::Data(Data {
                request: 7,
                fork: 0,
                block: Some(DataBlock {
                    index: 3,
                    value: vec![0xaa; 300],
                    nodes: vec![node(6, 1), node(1, 2)],
                }),
                upgrade: Some(DataUpgrade {
                    start: 0,
                    length: 4,
                    nodes: vec![node(3, 3)],
                    additional_nodes: vec![],
                    signature: Some(vec![0x55; 64]),
                }),
                manifest: Some(manifests()[3].clone()),
                ..Data::default()
            }),
            Message::NoData(NoData {
                request: 9,
                reason: 1,
            }),
            Message::Want(Want {
                start: 1024,
                length: 1024,
                any: true,
            }),
            Message::Unwant(Want {
                start: 0,
                length: 1024,
                any: false,
            }),
            Message::Bitfield(Bitfield {
                start: 0,
                bitfield: vec![0xffff_ffff, 1, 0],
            }),
            Message::Range(Range {
                drop: true,
                start: 5,
                length: 1,
            }),
            Message::Extension(Extension {
                name: "ext".into(),
                message: b"payload".to_vec(),
            }),
        ]
    }

    #[test]
    fn messages_round_trip_by_type() {
        for (i, m) in messages().into_iter().enumerate() {
            let (t, bytes) = m.encode();
            assert_eq!(t, i as u32);
            assert_eq!(Message::decode(t, &bytes).unwrap(), m);
            fuzz_messages(&bytes);
        }
        assert!(Message::decode(Message::COUNT, &[0, 0, 0, 0]).is_err());
        assert!(Message::decode(u32::MAX, &[]).is_err());
    }

    #[test]
    fn manifests_round_trip_and_lengths_match() {
        for m in manifests() {
            let bytes = encode(&m);
            assert_eq!(bytes.len(), m.encoded_len());
            assert_eq!(decode::<Manifest>(&bytes).unwrap(), m, "{m:?}");
            for cut in 0..bytes.len() {
                assert!(
                    decode::<Manifest>(&bytes[..cut]).is_err(),
                    "{m:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn manifest_v0_picks_its_type_and_drops_what_it_cannot_hold() {
        let prologue_only = Manifest {
            prologue: Some(Prologue {
                hash: [4; 32],
                length: 99,
            }),
            ..Manifest::default()
        };
        let bytes = encode(&prologue_only);
        assert_eq!(&bytes[..3], [0, 0, 0]);
        assert_eq!(bytes.len(), 3 + 32);
        // The prologue length is not written.
        assert_eq!(
            decode::<Manifest>(&bytes).unwrap().prologue.unwrap().length,
            0
        );

        let single = Manifest {
            quorum: 1,
            signers: vec![signer(1)],
            user_data: Some(vec![1, 2, 3]),
            ..Manifest::default()
        };
        let bytes = encode(&single);
        assert_eq!(&bytes[..3], [0, 0, 1]);
        assert_eq!(decode::<Manifest>(&bytes).unwrap().user_data, None);

        let patched = Manifest {
            allow_patch: true,
            ..single
        };
        assert_eq!(&encode(&patched)[..5], [0, 0, 2, 1, 1]);
    }

    #[test]
    fn manifest_rejects_unknown_ids_and_versions() {
        // version 1, flags 0, hash id 1
        assert!(decode::<Manifest>(&[1, 0, 1, 0, 0]).is_err());
        // version 1, flags 0, blake2b, quorum 1, one signer with signature id 1
        let mut bad_sig = vec![1, 0, 0, 1, 1, 1];
        bad_sig.extend_from_slice(&[0; 64]);
        assert!(decode::<Manifest>(&bad_sig).is_err());
        bad_sig[5] = 0;
        assert!(decode::<Manifest>(&bad_sig).is_ok());
        assert!(decode::<Manifest>(&[4, 0, 0, 0, 0]).is_err());
        assert!(decode::<Manifest>(&[0, 0, 3]).is_err());
        assert!(decode::<Manifest>(&[0, 1, 0]).is_err());
    }

    #[test]
    fn optional_tails_and_trailing_bytes_follow_js() {
        // noData without flags, with flags 0 and garbage after, with a reason.
        assert_eq!(
            decode::<NoData>(&[5]).unwrap(),
            NoData {
                request: 5,
                reason: 0
            }
        );
        assert_eq!(
            decode::<NoData>(&[5, 0, 9]).unwrap(),
            NoData {
                request: 5,
                reason: 0
            }
        );
        assert_eq!(
            decode::<NoData>(&[5, 1, 9]).unwrap(),
            NoData {
                request: 5,
                reason: 9
            }
        );
        assert!(decode::<NoData>(&[5, 1]).is_err());
        assert_eq!(
            encode(&NoData {
                request: 5,
                reason: 0
            }),
            [5, 0]
        );
        // want: a trailing byte is the flags.
        let want = |any| Want {
            start: 1,
            length: 2,
            any,
        };
        assert_eq!(decode::<Want>(&[1, 2]).unwrap(), want(false));
        assert_eq!(decode::<Want>(&[1, 2, 1]).unwrap(), want(true));
        assert_eq!(decode::<Want>(&[1, 2, 2, 7]).unwrap(), want(false));
        assert!(decode::<Want>(&[1, 2, 0xfd]).is_err());
        assert_eq!(encode(&want(false)), [1, 2]);
        // Others ignore what follows.
        assert_eq!(decode::<Cancel>(&[3, 0xff]).unwrap(), Cancel { request: 3 });
        // extension: everything after the name is the message.
        assert_eq!(
            decode::<Extension>(&[1, b'a', 1, 2, 3]).unwrap(),
            Extension {
                name: "a".into(),
                message: vec![1, 2, 3]
            }
        );
        // An invalid UTF-8 name decodes leniently, as in JS.
        assert_eq!(decode::<Extension>(&[1, 0xff]).unwrap().name, "\u{fffd}");
    }

    #[test]
    fn range_carries_length_one_in_a_flag() {
        let one = Range {
            drop: false,
            start: 7,
            length: 1,
        };
        assert_eq!(encode(&one), [2, 7]);
        assert_eq!(decode::<Range>(&[0, 7, 1]).unwrap(), one);
        let zero = Range { length: 0, ..one };
        assert_eq!(encode(&zero), [0, 7, 0]);
        assert!(decode::<Range>(&[0, 7]).is_err());
    }

    #[test]
    fn request_priority_flag_with_zero_is_plain_zero() {
        let r = decode::<Request>(&[32, 1, 0, 0]).unwrap();
        assert_eq!(r.priority, 0);
        assert_eq!(encode(&r), [0, 1, 0]);
    }

    #[test]
    fn upgrade_signature_is_an_optional_buffer() {
        let mut up = DataUpgrade::default();
        assert_eq!(encode(&up), [0, 0, 0, 0, 0]);
        up.signature = Some(vec![]);
        assert_eq!(encode(&up), [0, 0, 0, 0, 0]);
        assert_eq!(
            decode::<DataUpgrade>(&[0, 0, 0, 0, 0]).unwrap().signature,
            None
        );
    }

    #[test]
    fn multisigs_round_trip() {
        let v1 = MultiSignature {
            proofs: vec![
                MultisigInput {
                    signer: 0,
                    signature: [1; 64],
                    patch: 0,
                },
                MultisigInput {
                    signer: 0x1_0000,
                    signature: [2; 64],
                    patch: 2,
                },
            ],
            patch: vec![node(2, 3), node(5, 4)],
        };
        let bytes = encode(&v1);
        assert_eq!(bytes.len(), v1.encoded_len());
        assert_eq!(decode::<MultiSignature>(&bytes).unwrap(), v1);
        let v0 = MultiSignatureV0 {
            proofs: vec![
                MultisigInputV0 {
                    signer: 1,
                    signature: [5; 64],
                    patch: None,
                },
                MultisigInputV0 {
                    signer: 2,
                    signature: [6; 64],
                    patch: Some(PatchV0 {
                        start: 4,
                        length: 2,
                        nodes: vec![9, 0xfd, 1 << 32],
                    }),
                },
            ],
            patch: vec![],
        };
        let bytes = encode(&v0);
        assert_eq!(bytes.len(), v0.encoded_len());
        assert_eq!(decode::<MultiSignatureV0>(&bytes).unwrap(), v0);
        for cut in 0..bytes.len() {
            assert!(decode::<MultiSignatureV0>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn huge_counts_and_unsafe_integers_are_refused() {
        // Node array of 0x100001 elements.
        assert!(decode::<DataHash>(&[0, 0xfe, 0x01, 0x00, 0x10, 0x00]).is_err());
        // Bitfield claiming 2^40 words.
        let mut huge = vec![0, 0xff];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<Bitfield>(&huge).is_err());
        // Bitfield claiming more words than there are bytes.
        assert!(decode::<Bitfield>(&[0, 2, 1, 0, 0, 0]).is_err());
        // A cancel of 2^53.
        let mut big = vec![0xff];
        big.extend_from_slice(&(MAX_SAFE_INTEGER + 1).to_le_bytes());
        assert!(decode::<Cancel>(&big).is_err());
        let mut ok = vec![0xff];
        ok.extend_from_slice(&MAX_SAFE_INTEGER.to_le_bytes());
        assert_eq!(decode::<Cancel>(&ok).unwrap().request, MAX_SAFE_INTEGER);
        // Non-canonical varints are rejected (JS would accept them).
        assert!(decode::<Cancel>(&[0xfd, 5, 0]).is_err());
    }

    #[test]
    fn fuzz_entry_survives_garbage() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..600usize {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly small bytes keep flags, counts and lengths plausible.
                    if x.is_multiple_of(4) {
                        (x >> 8) as u8
                    } else {
                        (x % 6) as u8
                    }
                })
                .collect();
            fuzz_messages(&data);
        }
        for m in messages() {
            let (_, bytes) = m.encode();
            for cut in 0..=bytes.len() {
                fuzz_messages(&bytes[..cut]);
            }
        }
    }
}
