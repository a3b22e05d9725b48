//! Encoding side: a growable buffer with one method per compact-encoding type.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::js_json;

/// Bytes `c.uint` takes for `n` (the JS `preencode`).
pub const fn uint_len(n: u64) -> usize {
    if n <= 0xfc {
        1
    } else if n <= 0xffff {
        3
    } else if n <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// An output buffer that compact-encoding values are appended to.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Appends to an existing buffer.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Writer { buf }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The written bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The written bytes, borrowed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// `c.raw`: bytes with no length prefix.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// `c.fixed(N)`: exactly these bytes.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.raw(bytes)
    }

    /// `c.uint8`.
    pub fn uint8(&mut self, n: u8) -> &mut Self {
        self.buf.push(n);
        self
    }

    /// `c.uint16` (little endian).
    pub fn uint16(&mut self, n: u16) -> &mut Self {
        self.raw(&n.to_le_bytes())
    }

    /// `c.uint24` (little endian); the top byte of `n` must be zero.
    pub fn uint24(&mut self, n: u32) -> &mut Self {
        debug_assert!(n < 1 << 24, "uint24 overflow");
        self.raw(&n.to_le_bytes()[..3])
    }

    /// `c.uint32` (little endian).
    pub fn uint32(&mut self, n: u32) -> &mut Self {
        self.raw(&n.to_le_bytes())
    }

    /// `c.uint32be`.
    pub fn uint32be(&mut self, n: u32) -> &mut Self {
        self.raw(&n.to_be_bytes())
    }

    /// `c.uint64` (little endian).
    pub fn uint64(&mut self, n: u64) -> &mut Self {
        self.raw(&n.to_le_bytes())
    }

    /// `c.uint`: the prefixed varint, always in its shortest form.
    pub fn uint(&mut self, n: u64) -> &mut Self {
        if n <= 0xfc {
            self.uint8(n as u8)
        } else if n <= 0xffff {
            self.uint8(0xfd).uint16(n as u16)
        } else if n <= 0xffff_ffff {
            self.uint8(0xfe).uint32(n as u32)
        } else {
            self.uint8(0xff).uint64(n)
        }
    }

    /// `c.int`: zig-zag over `c.uint`.
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.uint(zigzag_encode(n))
    }

    /// `c.int8`: zig-zag over `c.uint8`.
    pub fn int8(&mut self, n: i8) -> &mut Self {
        self.uint8(zigzag_encode(i64::from(n)) as u8)
    }

    /// `c.int16`.
    pub fn int16(&mut self, n: i16) -> &mut Self {
        self.uint16(zigzag_encode(i64::from(n)) as u16)
    }

    /// `c.int32`.
    pub fn int32(&mut self, n: i32) -> &mut Self {
        self.uint32(zigzag_encode(i64::from(n)) as u32)
    }

    /// `c.int64`.
    pub fn int64(&mut self, n: i64) -> &mut Self {
        self.uint64(zigzag_encode(n))
    }

    /// `c.float32` (little endian).
    pub fn float32(&mut self, n: f32) -> &mut Self {
        self.raw(&n.to_le_bytes())
    }

    /// `c.float64` (little endian).
    pub fn float64(&mut self, n: f64) -> &mut Self {
        self.raw(&n.to_le_bytes())
    }

    /// `c.bool`.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.uint8(u8::from(b))
    }

    /// `c.buffer`: uint length, then the bytes.
    pub fn buffer(&mut self, bytes: &[u8]) -> &mut Self {
        self.uint(bytes.len() as u64).raw(bytes)
    }

    /// `c.optionalBuffer`: `None` is written as a zero length.
    pub fn optional_buffer(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        self.buffer(bytes.unwrap_or_default())
    }

    /// `c.string` / `c.utf8`.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.buffer(s.as_bytes())
    }

    /// `c.json`: the value as `JSON.stringify` writes it, as a `c.string`.
    pub fn json(&mut self, v: &serde_json::Value) -> &mut Self {
        self.string(&js_json::to_string(v))
    }

    /// `c.array(enc)`: a uint count, then each element.
    pub fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.uint(items.len() as u64);
        for it in items {
            item(self, it);
        }
        self
    }

    /// `c.uint32array`: a uint count, then each element as a little-endian `uint32`.
    pub fn uint32_array(&mut self, items: &[u32]) -> &mut Self {
        self.uint(items.len() as u64);
        for n in items {
            self.uint32(*n);
        }
        self
    }

    /// `c.ipv4`.
    pub fn ipv4(&mut self, ip: &Ipv4Addr) -> &mut Self {
        self.raw(&ip.octets())
    }

    /// `c.ipv6`.
    pub fn ipv6(&mut self, ip: &Ipv6Addr) -> &mut Self {
        self.raw(&ip.octets())
    }

    /// `c.ipv4Address`.
    pub fn ipv4_address(&mut self, a: &SocketAddrV4) -> &mut Self {
        self.ipv4(a.ip()).uint16(a.port())
    }

    /// `c.ipv6Address`.
    pub fn ipv6_address(&mut self, a: &SocketAddrV6) -> &mut Self {
        self.ipv6(a.ip()).uint16(a.port())
    }

    /// `c.ipAddress`: family byte, address, port.
    pub fn ip_address(&mut self, a: &SocketAddr) -> &mut Self {
        match a {
            SocketAddr::V4(a) => self.uint8(4).ipv4_address(a),
            SocketAddr::V6(a) => self.uint8(6).ipv6_address(a),
        }
    }
}

fn zigzag_encode(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}
