//! Decoding side: a cursor over borrowed bytes with one method per compact-encoding type.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::{DecodeError, MAX_ARRAY_LEN};

/// A cursor over bytes being decoded. Every read checks bounds first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Current offset from the start of the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Errors unless every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::OutOfBounds {
                needed: n as u64,
                remaining: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// `c.raw`: everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// `c.fixed(N)`.
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// `c.fixed32`.
    pub fn fixed32(&mut self) -> Result<[u8; 32], DecodeError> {
        self.fixed::<32>()
    }

    /// `c.fixed64`.
    pub fn fixed64(&mut self) -> Result<[u8; 64], DecodeError> {
        self.fixed::<64>()
    }

    /// `c.uint8`.
    pub fn uint8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// `c.uint16` (little endian).
    pub fn uint16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.fixed::<2>()?))
    }

    /// `c.uint24` (little endian).
    pub fn uint24(&mut self) -> Result<u32, DecodeError> {
        let b = self.fixed::<3>()?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    /// `c.uint32` (little endian).
    pub fn uint32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.fixed::<4>()?))
    }

    /// `c.uint32be`.
    pub fn uint32be(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.fixed::<4>()?))
    }

    /// `c.uint64` (little endian).
    pub fn uint64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.fixed::<8>()?))
    }

    /// `c.uint`: the prefixed varint. Longer-than-needed forms are rejected.
    pub fn uint(&mut self) -> Result<u64, DecodeError> {
        let prefix = self.uint8()?;
        let (value, min) = match prefix {
            0..=0xfc => return Ok(u64::from(prefix)),
            0xfd => (u64::from(self.uint16()?), 0xfd),
            0xfe => (u64::from(self.uint32()?), 0x1_0000),
            0xff => (self.uint64()?, 0x1_0000_0000),
        };
        if value < min {
            return Err(DecodeError::NonCanonicalUint { prefix, value });
        }
        Ok(value)
    }

    /// `c.uint` read as a length or count that must fit `usize`.
    pub fn uint_usize(&mut self) -> Result<usize, DecodeError> {
        let v = self.uint()?;
        usize::try_from(v).map_err(|_| DecodeError::OutOfRange {
            what: "usize",
            value: v,
        })
    }

    /// `c.uint` that must fit a `u32` (ids, types and other small numbers).
    pub fn uint_u32(&mut self) -> Result<u32, DecodeError> {
        let v = self.uint()?;
        u32::try_from(v).map_err(|_| DecodeError::OutOfRange {
            what: "u32",
            value: v,
        })
    }

    /// `c.int`: zig-zag over `c.uint`.
    pub fn int(&mut self) -> Result<i64, DecodeError> {
        Ok(zigzag_decode(self.uint()?))
    }

    /// `c.int8`: zig-zag over `c.uint8`.
    pub fn int8(&mut self) -> Result<i8, DecodeError> {
        let v = zigzag_decode(u64::from(self.uint8()?));
        Ok(v as i8)
    }

    /// `c.int16`.
    pub fn int16(&mut self) -> Result<i16, DecodeError> {
        Ok(zigzag_decode(u64::from(self.uint16()?)) as i16)
    }

    /// `c.int32`.
    pub fn int32(&mut self) -> Result<i32, DecodeError> {
        Ok(zigzag_decode(u64::from(self.uint32()?)) as i32)
    }

    /// `c.int64`.
    pub fn int64(&mut self) -> Result<i64, DecodeError> {
        Ok(zigzag_decode(self.uint64()?))
    }

    /// `c.float32` (little endian).
    pub fn float32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.fixed::<4>()?))
    }

    /// `c.float64` (little endian).
    pub fn float64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.fixed::<8>()?))
    }

    /// `c.bool`: exactly 0 or 1.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.uint8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidBool(b)),
        }
    }

    /// `c.buffer`: uint length, then that many bytes.
    pub fn buffer(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.uint()?;
        if len > self.remaining() as u64 {
            return Err(DecodeError::OutOfBounds {
                needed: len,
                remaining: self.remaining(),
            });
        }
        self.take(len as usize)
    }

    /// `c.optionalBuffer`: a zero length means absent.
    pub fn optional_buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let b = self.buffer()?;
        Ok(if b.is_empty() { None } else { Some(b) })
    }

    /// `c.string` / `c.utf8`: a length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.buffer()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// `c.json`: a `c.string` holding JSON text.
    pub fn json(&mut self) -> Result<serde_json::Value, DecodeError> {
        let text = self.string()?;
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))
    }

    /// `c.array(enc)`: a uint count (at most [`MAX_ARRAY_LEN`]), then the elements.
    pub fn array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.uint()?;
        if len > MAX_ARRAY_LEN {
            return Err(DecodeError::ArrayTooBig(len));
        }
        // Every element takes at least one byte, so the count can be checked up front.
        if len > self.remaining() as u64 {
            return Err(DecodeError::OutOfBounds {
                needed: len,
                remaining: self.remaining(),
            });
        }
        let mut out = Vec::with_capacity(len as usize);
        for _ in 0..len {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// `c.uint32array`: a uint count, then each element as a little-endian `uint32`.
    ///
    /// Unlike `c.array` the JS decoder puts no cap on the count; the bytes are checked to
    /// be there before anything is allocated.
    pub fn uint32_array(&mut self) -> Result<Vec<u32>, DecodeError> {
        let len = self.uint()?;
        let needed = len.saturating_mul(4);
        if needed > self.remaining() as u64 {
            return Err(DecodeError::OutOfBounds {
                needed,
                remaining: self.remaining(),
            });
        }
        let bytes = self.take(needed as usize)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// `c.ipv4`.
    pub fn ipv4(&mut self) -> Result<Ipv4Addr, DecodeError> {
        Ok(Ipv4Addr::from(self.fixed::<4>()?))
    }

    /// `c.ipv6`.
    pub fn ipv6(&mut self) -> Result<Ipv6Addr, DecodeError> {
        Ok(Ipv6Addr::from(self.fixed::<16>()?))
    }

    /// `c.ipv4Address`: address then uint16 port.
    pub fn ipv4_address(&mut self) -> Result<SocketAddrV4, DecodeError> {
        let ip = self.ipv4()?;
        Ok(SocketAddrV4::new(ip, self.uint16()?))
    }

    /// `c.ipv6Address`: address then uint16 port.
    pub fn ipv6_address(&mut self) -> Result<SocketAddrV6, DecodeError> {
        let ip = self.ipv6()?;
        Ok(SocketAddrV6::new(ip, self.uint16()?, 0, 0))
    }

    /// `c.ipAddress`: family byte (4 or 6), address, uint16 port.
    pub fn ip_address(&mut self) -> Result<SocketAddr, DecodeError> {
        match self.uint8()? {
            4 => Ok(SocketAddr::V4(self.ipv4_address()?)),
            6 => Ok(SocketAddr::V6(self.ipv6_address()?)),
            f => Err(DecodeError::InvalidIpFamily(f)),
        }
    }
}

fn zigzag_decode(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}
