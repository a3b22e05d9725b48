//! The two dht-rpc datagrams (request and response) as pure, total codecs, matching
//! `lib/io.js` of the JS module byte for byte.
//!
//! Decoding never panics: truncated or malformed input is a [`DecodeError`]. Like the JS
//! decoder, bytes after the last field are ignored. Announced node ids are *not*
//! validated here (the codec does not know the sender); see [`validate_id`].

use std::net::SocketAddrV4;

use intercom_encoding::{DecodeError, Reader, Writer};

/// A 32-byte Kademlia node id or target.
pub type NodeId = [u8; 32];

/// Protocol version carried in the low nibble of the first byte.
pub const VERSION: u8 = 0b11;
/// First byte of a request datagram (type 0, version 3).
pub const REQUEST_ID: u8 = VERSION;
/// First byte of a response datagram (type 1, version 3).
pub const RESPONSE_ID: u8 = (0b0001 << 4) | VERSION;

const REQ_ID: u64 = 1;
const REQ_TOKEN: u64 = 2;
const REQ_INTERNAL: u64 = 4;
const REQ_TARGET: u64 = 8;
const REQ_VALUE: u64 = 16;

const RES_ID: u64 = 1;
const RES_TOKEN: u64 = 2;
const RES_CLOSER: u64 = 4;
const RES_ERROR: u64 = 8;
const RES_VALUE: u64 = 16;

/// The node id of an IPv4 address: BLAKE2b-256 of its 6-byte compact encoding
/// (4 address bytes, then the port as uint16 little endian), as `lib/peer.js` `id()`.
pub fn node_id(addr: &SocketAddrV4) -> NodeId {
    let mut buf = [0u8; 6];
    buf[..4].copy_from_slice(&addr.ip().octets());
    buf[4..].copy_from_slice(&addr.port().to_le_bytes());
    intercom_crypto::blake2b_256(&[&buf], None)
}

/// The id a sender announced, kept only when it is the id of the address it came from
/// (`validateId` in io.js); anything else is treated as absent.
pub fn validate_id(id: Option<NodeId>, from: &SocketAddrV4) -> Option<NodeId> {
    let id = id?;
    (id == node_id(from)).then_some(id)
}

/// The 6-byte encoding of an IPv4 address (`c.ipv4Address`), the DOWN_HINT payload.
pub fn encode_ipv4(addr: &SocketAddrV4) -> [u8; 6] {
    let mut out = [0u8; 6];
    out[..4].copy_from_slice(&addr.ip().octets());
    out[4..].copy_from_slice(&addr.port().to_le_bytes());
    out
}

/// A request datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Transaction id the response echoes.
    pub tid: u16,
    /// The address the request was sent to (how the sender sees the receiver).
    pub to: SocketAddrV4,
    /// The sender's node id (only persistent nodes send it, from their server socket).
    pub id: Option<NodeId>,
    /// A token the receiver handed out earlier (round-trip proof of address).
    pub token: Option<[u8; 32]>,
    /// Internal dht-rpc command (PING, FIND_NODE, ...) rather than a user command.
    pub internal: bool,
    /// The command number.
    pub command: u64,
    /// The key the command is about.
    pub target: Option<NodeId>,
    /// Opaque payload.
    pub value: Option<Vec<u8>>,
}

impl Request {
    /// Bytes of the datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut w =
            Writer::with_capacity(10 + 32 * 3 + self.value.as_ref().map_or(0, |v| v.len() + 9));
        let flags = flag(self.id.is_some(), REQ_ID)
            | flag(self.token.is_some(), REQ_TOKEN)
            | flag(self.internal, REQ_INTERNAL)
            | flag(self.target.is_some(), REQ_TARGET)
            | flag(self.value.is_some(), REQ_VALUE);
        w.uint8(REQUEST_ID).uint(flags).uint16(self.tid);
        w.ipv4_address(&self.to);
        if let Some(id) = &self.id {
            w.fixed(id);
        }
        if let Some(token) = &self.token {
            w.fixed(token);
        }
        w.uint(self.command);
        if let Some(target) = &self.target {
            w.fixed(target);
        }
        if let Some(value) = &self.value {
            w.buffer(value);
        }
        w.into_vec()
    }

    /// Parses a request datagram (first byte included).
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.uint8()? != REQUEST_ID {
            return Err(invalid("request", "first byte is not 0x03"));
        }
        let flags = r.uint()?;
        let tid = r.uint16()?;
        let to = r.ipv4_address()?;
        let id = opt(&mut r, flags & REQ_ID != 0, Reader::fixed32)?;
        let token = opt(&mut r, flags & REQ_TOKEN != 0, Reader::fixed32)?;
        let internal = flags & REQ_INTERNAL != 0;
        let command = r.uint()?;
        let target = opt(&mut r, flags & REQ_TARGET != 0, Reader::fixed32)?;
        let value = opt(&mut r, flags & REQ_VALUE != 0, |r| {
            r.buffer().map(<[u8]>::to_vec)
        })?;
        Ok(Request {
            tid,
            to,
            id,
            token,
            internal,
            command,
            target,
            value,
        })
    }
}

/// A response datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The transaction id of the request answered.
    pub tid: u16,
    /// The address the request came from (how the responder sees the requester).
    pub to: SocketAddrV4,
    /// The responder's node id (persistent nodes answering on their server socket).
    pub id: Option<NodeId>,
    /// A token the requester can send back in a later request (e.g. a commit).
    pub token: Option<[u8; 32]>,
    /// Nodes closer to the request's target; empty means the field is absent.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code, 0 for success.
    pub error: u64,
    /// Opaque payload.
    pub value: Option<Vec<u8>>,
}

impl Response {
    /// Bytes of the datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            10 + 64
                + 1
                + 6 * self.closer_nodes.len()
                + self.value.as_ref().map_or(0, |v| v.len() + 9),
        );
        let flags = flag(self.id.is_some(), RES_ID)
            | flag(self.token.is_some(), RES_TOKEN)
            | flag(!self.closer_nodes.is_empty(), RES_CLOSER)
            | flag(self.error > 0, RES_ERROR)
            | flag(self.value.is_some(), RES_VALUE);
        w.uint8(RESPONSE_ID).uint(flags).uint16(self.tid);
        w.ipv4_address(&self.to);
        if let Some(id) = &self.id {
            w.fixed(id);
        }
        if let Some(token) = &self.token {
            w.fixed(token);
        }
        if !self.closer_nodes.is_empty() {
            w.array(&self.closer_nodes, |w, a| {
                w.ipv4_address(a);
            });
        }
        if self.error > 0 {
            w.uint(self.error);
        }
        if let Some(value) = &self.value {
            w.buffer(value);
        }
        w.into_vec()
    }

    /// Parses a response datagram (first byte included).
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.uint8()? != RESPONSE_ID {
            return Err(invalid("response", "first byte is not 0x13"));
        }
        let flags = r.uint()?;
        let tid = r.uint16()?;
        let to = r.ipv4_address()?;
        let id = opt(&mut r, flags & RES_ID != 0, Reader::fixed32)?;
        let token = opt(&mut r, flags & RES_TOKEN != 0, Reader::fixed32)?;
        let closer_nodes = opt(&mut r, flags & RES_CLOSER != 0, |r| {
            r.array(Reader::ipv4_address)
        })?
        .unwrap_or_default();
        let error = opt(&mut r, flags & RES_ERROR != 0, Reader::uint)?.unwrap_or(0);
        let value = opt(&mut r, flags & RES_VALUE != 0, |r| {
            r.buffer().map(<[u8]>::to_vec)
        })?;
        Ok(Response {
            tid,
            to,
            id,
            token,
            closer_nodes,
            error,
            value,
        })
    }
}

/// Either datagram, told apart by the first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A 0x03 datagram.
    Request(Request),
    /// A 0x13 datagram.
    Response(Response),
}

impl Message {
    /// Parses a datagram of either kind.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        match bytes.first() {
            Some(&REQUEST_ID) => Request::decode(bytes).map(Message::Request),
            Some(&RESPONSE_ID) => Response::decode(bytes).map(Message::Response),
            Some(_) => Err(invalid("message", "unknown type byte")),
            None => Err(DecodeError::OutOfBounds {
                needed: 1,
                remaining: 0,
            }),
        }
    }

    /// Bytes of the datagram.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.encode(),
            Message::Response(r) => r.encode(),
        }
    }
}

/// True when a datagram is a dht-rpc message (first byte 0x03 or 0x13); anything else on
/// the sockets belongs to another protocol (UDX streams, holepunch probes).
pub fn is_dht_message(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&REQUEST_ID) | Some(&RESPONSE_ID))
}

/// Entry point for a cargo-fuzz target: decodes arbitrary bytes, and whatever decodes
/// must re-encode to something that decodes to the same message.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode());
        assert_eq!(again.as_ref(), Ok(&m), "re-encoding changed the message");
    }
    if let Ok(id) = Request::decode(data).map(|r| r.id) {
        let _ = validate_id(id, &SocketAddrV4::new([127, 0, 0, 1].into(), 1));
    }
}

fn flag(on: bool, bit: u64) -> u64 {
    if on {
        bit
    } else {
        0
    }
}

fn opt<'a, T>(
    r: &mut Reader<'a>,
    present: bool,
    f: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if present {
        f(r).map(Some)
    } else {
        Ok(None)
    }
}

fn invalid(what: &'static str, why: &'static str) -> DecodeError {
    DecodeError::Invalid { what, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn minimal_ping_request_bytes() {
        // 0x03, flags=internal(4), tid=0x1234 LE, to=10.0.0.1:49737 LE, command=0 (PING)
        let req = Request {
            tid: 0x1234,
            to: addr("10.0.0.1:49737"),
            id: None,
            token: None,
            internal: true,
            command: 0,
            target: None,
            value: None,
        };
        let bytes = req.encode();
        assert_eq!(hex::encode(&bytes), "030434120a00000149c200");
        assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn full_request_bytes() {
        let req = Request {
            tid: 7,
            to: addr("1.2.3.4:258"),
            id: Some([0xaa; 32]),
            token: Some([0xbb; 32]),
            internal: false,
            command: 300,
            target: Some([0xcc; 32]),
            value: Some(vec![1, 2, 3]),
        };
        let bytes = req.encode();
        let mut expected = vec![0x03, 1 | 2 | 8 | 16, 7, 0, 1, 2, 3, 4, 2, 1];
        expected.extend([0xaa; 32]);
        expected.extend([0xbb; 32]);
        expected.extend([0xfd, 0x2c, 0x01]); // uint 300
        expected.extend([0xcc; 32]);
        expected.extend([3, 1, 2, 3]);
        assert_eq!(bytes, expected);
        assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn response_bytes() {
        let res = Response {
            tid: 0xffff,
            to: addr("127.0.0.1:10000"),
            id: None,
            token: Some([0x11; 32]),
            closer_nodes: vec![addr("10.1.2.3:1"), addr("10.4.5.6:65535")],
            error: 2,
            value: Some(vec![]),
        };
        let bytes = res.encode();
        let mut expected = vec![0x13, 2 | 4 | 8 | 16, 0xff, 0xff, 127, 0, 0, 1, 0x10, 0x27];
        expected.extend([0x11; 32]);
        expected.extend([2, 10, 1, 2, 3, 1, 0, 10, 4, 5, 6, 0xff, 0xff]);
        expected.extend([2]); // error
        expected.extend([0]); // empty value, flag still set (a JS empty buffer is truthy)
        assert_eq!(bytes, expected);
        assert_eq!(Response::decode(&bytes).unwrap(), res);
    }

    #[test]
    fn empty_response_and_trailing_bytes() {
        let bytes = [0x13, 0, 1, 0, 9, 9, 9, 9, 1, 0, 0xde, 0xad];
        let res = Response::decode(&bytes).unwrap();
        assert_eq!(res.tid, 1);
        assert_eq!(res.to, addr("9.9.9.9:1"));
        assert!(res.closer_nodes.is_empty() && res.value.is_none() && res.error == 0);
        assert_eq!(res.encode(), &bytes[..10]);
    }

    #[test]
    fn truncated_inputs_are_errors() {
        let req = Request {
            tid: 1,
            to: addr("1.2.3.4:5"),
            id: Some([1; 32]),
            token: None,
            internal: true,
            command: 2,
            target: Some([2; 32]),
            value: Some(vec![9; 40]),
        }
        .encode();
        for n in 0..req.len() {
            assert!(Request::decode(&req[..n]).is_err(), "len {n}");
            assert!(Message::decode(&req[..n]).is_err());
        }
        assert!(Response::decode(&req).is_err());
    }

    #[test]
    fn node_id_matches_js() {
        // node -e "console.log(require('dht-rpc/lib/peer').id('127.0.0.1', 49737).toString('hex'))"
        let id = node_id(&addr("127.0.0.1:49737"));
        let mut raw = [127u8, 0, 0, 1, 0, 0];
        raw[4..].copy_from_slice(&49737u16.to_le_bytes());
        assert_eq!(id, intercom_crypto::blake2b_256(&[&raw], None));
        assert_eq!(validate_id(Some(id), &addr("127.0.0.1:49737")), Some(id));
        assert_eq!(validate_id(Some(id), &addr("127.0.0.1:49738")), None);
    }

    #[test]
    fn fuzz_smoke() {
        let mut seed = 0x1234_5678_u64;
        let mut buf = Vec::new();
        for i in 0..20_000 {
            buf.clear();
            let len = (i % 90) + 1;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(seed as u8);
            }
            buf[0] = if i % 2 == 0 { REQUEST_ID } else { RESPONSE_ID };
            if i % 5 == 0 {
                buf.truncate(1 + (i % 3));
            }
            fuzz_decode(&buf);
        }
    }
}
