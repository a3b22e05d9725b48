//! compact-encoding, byte for byte as the JS `compact-encoding` 3.x module writes it.
//!
//! Every DHT message and every protomux frame is built from these primitives. Encoding
//! writes into a [`Writer`] (a growable buffer, so a wrong size estimate can never
//! overflow it); decoding reads from a [`Reader`] over borrowed bytes and is total:
//! truncated input, non-canonical varints and out-of-range values are [`DecodeError`]s,
//! never panics.
//!
//! ```text
//! uint (varint):  n <= 0xfc          -> [n]
//!                 n <= 0xffff        -> [0xfd, u16 LE]
//!                 n <= 0xffff_ffff   -> [0xfe, u32 LE]
//!                 otherwise          -> [0xff, u64 LE]
//! buffer / utf8:  uint length, then the bytes
//! ipv4 address:   4 address bytes, then uint16 LE port
//! ```
//!
//! [`Encode`] and [`Decode`] compose these into struct-style codecs the way the JS
//! modules build `{ preencode, encode, decode }` objects out of smaller ones.

pub mod base64;
mod error;
pub mod js_json;
mod reader;
mod writer;

pub use error::DecodeError;
pub use reader::Reader;
pub use writer::{uint_len, Writer};

/// Largest array length the JS `c.array` decoder accepts; larger counts are rejected
/// before any element is read.
pub const MAX_ARRAY_LEN: u64 = 0x10_0000;

/// A value with a compact-encoding representation.
pub trait Encode {
    /// Number of bytes [`Encode::encode`] writes (the JS `preencode`).
    fn encoded_len(&self) -> usize;
    /// Appends the encoding to `w`.
    fn encode(&self, w: &mut Writer);
}

/// A value decodable from compact-encoding bytes borrowed for `'a`.
pub trait Decode<'a>: Sized {
    /// Reads one value, advancing the reader past it.
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError>;
}

/// Encodes `value` into a buffer of exactly `encoded_len()` bytes.
pub fn encode<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut w = Writer::with_capacity(value.encoded_len());
    value.encode(&mut w);
    debug_assert_eq!(
        w.len(),
        value.encoded_len(),
        "encoded_len disagrees with encode"
    );
    w.into_vec()
}

/// Decodes one `T` from the start of `bytes`, ignoring anything after it (as JS `c.decode`).
pub fn decode<'a, T: Decode<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    T::decode(&mut Reader::new(bytes))
}

/// Decodes one `T` that must span all of `bytes`.
pub fn decode_exact<'a, T: Decode<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

macro_rules! uint_codec {
    ($ty:ty) => {
        impl Encode for $ty {
            fn encoded_len(&self) -> usize {
                uint_len(u64::from(*self))
            }
            fn encode(&self, w: &mut Writer) {
                w.uint(u64::from(*self));
            }
        }
        impl<'a> Decode<'a> for $ty {
            fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
                let v = r.uint()?;
                <$ty>::try_from(v).map_err(|_| DecodeError::OutOfRange {
                    what: stringify!($ty),
                    value: v,
                })
            }
        }
    };
}
uint_codec!(u8);
uint_codec!(u16);
uint_codec!(u32);
uint_codec!(u64);

impl Encode for bool {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, w: &mut Writer) {
        w.bool(*self);
    }
}
impl<'a> Decode<'a> for bool {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.bool()
    }
}

impl Encode for [u8] {
    fn encoded_len(&self) -> usize {
        uint_len(self.len() as u64) + self.len()
    }
    fn encode(&self, w: &mut Writer) {
        w.buffer(self);
    }
}
impl Encode for Vec<u8> {
    fn encoded_len(&self) -> usize {
        self.as_slice().encoded_len()
    }
    fn encode(&self, w: &mut Writer) {
        w.buffer(self);
    }
}
impl<'a> Decode<'a> for &'a [u8] {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.buffer()
    }
}
impl<'a> Decode<'a> for Vec<u8> {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.buffer().map(<[u8]>::to_vec)
    }
}

impl Encode for str {
    fn encoded_len(&self) -> usize {
        self.as_bytes().encoded_len()
    }
    fn encode(&self, w: &mut Writer) {
        w.string(self);
    }
}
impl Encode for String {
    fn encoded_len(&self) -> usize {
        self.as_str().encoded_len()
    }
    fn encode(&self, w: &mut Writer) {
        w.string(self);
    }
}
impl<'a> Decode<'a> for &'a str {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.string()
    }
}
impl<'a> Decode<'a> for String {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.string().map(str::to_owned)
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encoded_len(&self) -> usize {
        N
    }
    fn encode(&self, w: &mut Writer) {
        w.fixed(self);
    }
}
impl<'a, const N: usize> Decode<'a> for [u8; N] {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.fixed::<N>()
    }
}

impl Encode for serde_json::Value {
    fn encoded_len(&self) -> usize {
        js_json::to_string(self).encoded_len()
    }
    fn encode(&self, w: &mut Writer) {
        w.json(self);
    }
}
impl<'a> Decode<'a> for serde_json::Value {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.json()
    }
}

impl Encode for std::net::SocketAddrV4 {
    fn encoded_len(&self) -> usize {
        6
    }
    fn encode(&self, w: &mut Writer) {
        w.ipv4_address(self);
    }
}
impl<'a> Decode<'a> for std::net::SocketAddrV4 {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.ipv4_address()
    }
}
impl Encode for std::net::SocketAddrV6 {
    fn encoded_len(&self) -> usize {
        18
    }
    fn encode(&self, w: &mut Writer) {
        w.ipv6_address(self);
    }
}
impl<'a> Decode<'a> for std::net::SocketAddrV6 {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.ipv6_address()
    }
}
/// `c.ipAddress`: family byte (4 or 6), address, uint16 port.
impl Encode for std::net::SocketAddr {
    fn encoded_len(&self) -> usize {
        match self {
            std::net::SocketAddr::V4(_) => 7,
            std::net::SocketAddr::V6(_) => 19,
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.ip_address(self);
    }
}
impl<'a> Decode<'a> for std::net::SocketAddr {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.ip_address()
    }
}
