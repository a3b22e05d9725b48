//! The UDX packet codec: the fixed 20-byte header, the SACK block extension, the MTU probe
//! padding and the payload, exactly as `udx.c` writes and reads them.
//!
//! Pure functions over byte slices: [`decode`] never panics and never allocates, it only
//! borrows from its input; [`Header::encode`] and [`encode_sacks`] write into
//! caller-owned buffers so the hot path can reuse one buffer for every packet.
//!
//! Decoding follows `process_packet()` in `udx.c`:
//!
//! * shorter than 20 bytes, a first byte other than `0xff` or a version other than 1:
//!   not a UDX packet (libudx hands it to the socket's `message` event);
//! * `SACK` packets: the bytes after the header hold `(start, end)` pairs of u32 LE; the
//!   SACK area is `data_offset` bytes when `0 < data_offset < len - 20`, otherwise all of
//!   the rest, and a trailing partial pair is ignored;
//! * payload: everything after `20 + data_offset` (a DATA packet with a non-zero
//!   `data_offset` is an MTU probe whose padding is skipped); a `data_offset` past the end
//!   is rejected.

use thiserror::Error;

/// Size of the fixed header.
pub const HEADER_SIZE: usize = 20;
/// First byte of every UDX packet.
pub const MAGIC: u8 = 0xff;
/// The only wire version.
pub const VERSION: u8 = 1;
/// Largest number of SACK blocks libudx puts in one ack (`UDX_MAX_SACKS`).
pub const MAX_SACKS: usize = 50;

/// Type flag: the packet carries stream data and consumes a sequence number.
pub const FLAG_DATA: u8 = 0b000001;
/// Type flag: the sender ended its write side at this sequence number.
pub const FLAG_END: u8 = 0b000010;
/// Type flag: SACK blocks follow the header.
pub const FLAG_SACK: u8 = 0b000100;
/// Type flag: an unordered, unreliable message (does not consume a sequence number).
pub const FLAG_MESSAGE: u8 = 0b001000;
/// Type flag: the sender destroyed the stream (reset).
pub const FLAG_DESTROY: u8 = 0b010000;
/// Type flag: a probe (keepalive / zero-window probe); the receiver answers with an ack.
pub const FLAG_HEARTBEAT: u8 = 0b100000;

/// Why a datagram is not a (well-formed) UDX packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than 20 bytes.
    #[error("datagram of {0} bytes is shorter than the 20-byte UDX header")]
    TooShort(usize),
    /// The first byte is not 0xff.
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    /// The second byte is not version 1.
    #[error("unsupported UDX version {0}")]
    BadVersion(u8),
    /// `data_offset` points past the end of the datagram.
    #[error("data offset {offset} past the {available} bytes after the header")]
    BadDataOffset {
        /// The header's data offset.
        offset: u8,
        /// Bytes after the header.
        available: usize,
    },
}

/// The fixed 20-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Type flags (`FLAG_*`); unknown bits are kept.
    pub flags: u8,
    /// Bytes of extension (SACK blocks or probe padding) between header and payload.
    pub data_offset: u8,
    /// The receiving stream's id (the sender's `remote_id`).
    pub stream_id: u32,
    /// The sender's receive window in bytes.
    pub recv_window: u32,
    /// The packet's sequence number (the sender's next seq for non-DATA packets).
    pub seq: u32,
    /// Cumulative ack: the next sequence number the sender expects from us.
    pub ack: u32,
}

impl Header {
    /// Writes the header into the first 20 bytes of `out`.
    ///
    /// # Panics
    /// When `out` is shorter than [`HEADER_SIZE`] (a caller bug, never peer input).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_SIZE];
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = self.flags;
        out[3] = self.data_offset;
        out[4..8].copy_from_slice(&self.stream_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.recv_window.to_le_bytes());
        out[12..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.ack.to_le_bytes());
    }

    /// The header as an array.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        self.encode(&mut b);
        b
    }

    /// Reads a header; checks length, magic and version only.
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        if bytes.len() < HEADER_SIZE {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes[0] != MAGIC {
            return Err(DecodeError::BadMagic(bytes[0]));
        }
        if bytes[1] != VERSION {
            return Err(DecodeError::BadVersion(bytes[1]));
        }
        Ok(Header {
            flags: bytes[2],
            data_offset: bytes[3],
            stream_id: le32(&bytes[4..8]),
            recv_window: le32(&bytes[8..12]),
            seq: le32(&bytes[12..16]),
            ack: le32(&bytes[16..20]),
        })
    }

    /// True when any of `flags` is set.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags != 0
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads only the stream id of a datagram that starts like a UDX packet: what a socket
/// needs to demultiplex. `None` when it is not UDX.
pub fn peek_stream_id(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < HEADER_SIZE || bytes[0] != MAGIC || bytes[1] != VERSION {
        return None;
    }
    Some(le32(&bytes[4..8]))
}

/// A decoded packet borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header.
    pub header: Header,
    /// The raw SACK area (a whole number of 8-byte blocks), empty unless `FLAG_SACK`.
    sack_area: &'a [u8],
    /// Bytes after the header and the `data_offset` extension.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// The SACK blocks as `(start, end)` half-open sequence ranges, as sent.
    pub fn sacks(&self) -> SackIter<'a> {
        SackIter {
            rest: self.sack_area,
        }
    }

    /// Number of SACK blocks.
    pub fn sack_count(&self) -> usize {
        self.sack_area.len() / 8
    }

    /// Bytes of MTU probe padding (or other extension) skipped before the payload.
    pub fn extension_len(&self) -> usize {
        self.header.data_offset as usize
    }
}

/// Iterator over SACK blocks.
#[derive(Debug, Clone)]
pub struct SackIter<'a> {
    rest: &'a [u8],
}

impl Iterator for SackIter<'_> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        if self.rest.len() < 8 {
            return None;
        }
        let (b, rest) = self.rest.split_at(8);
        self.rest = rest;
        Some((le32(&b[..4]), le32(&b[4..8])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / 8;
        (n, Some(n))
    }
}

/// Decodes a datagram. Total: every input gives `Ok` or `Err`, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let header = Header::decode(bytes)?;
    let rest = &bytes[HEADER_SIZE..];
    let doff = header.data_offset as usize;

    let sack_area = if header.flags & FLAG_SACK != 0 {
        let area = if doff > 0 && doff < rest.len() {
            doff
        } else {
            rest.len()
        };
        &rest[..area - area % 8]
    } else {
        &rest[..0]
    };

    if doff > rest.len() {
        return Err(DecodeError::BadDataOffset {
            offset: header.data_offset,
            available: rest.len(),
        });
    }
    Ok(Packet {
        header,
        sack_area,
        payload: &rest[doff..],
    })
}

/// Appends SACK blocks as u32 LE pairs (at most [`MAX_SACKS`] are written); returns how
/// many were written.
pub fn encode_sacks(blocks: &[(u32, u32)], out: &mut Vec<u8>) -> usize {
    let n = blocks.len().min(MAX_SACKS);
    for &(start, end) in &blocks[..n] {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    n
}

/// Decodes arbitrary bytes and walks every field: the entry point of the fuzz target.
pub fn fuzz_decode(bytes: &[u8]) {
    let _ = peek_stream_id(bytes);
    if let Ok(p) = decode(bytes) {
        let mut n = 0usize;
        for (a, b) in p.sacks() {
            n = n.wrapping_add(a as usize ^ b as usize);
        }
        assert_eq!(p.sacks().count(), p.sack_count());
        assert!(p.payload.len() + HEADER_SIZE <= bytes.len());
        // Re-encoding the header must give back the first 20 bytes.
        assert_eq!(&p.header.to_bytes()[..], &bytes[..HEADER_SIZE]);
        std::hint::black_box(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What udx.c's `udx_write_header()` wrote for a MESSAGE "hello-msg" to stream 2 with
    /// the default 4 MiB window (captured from udx-native 1.21.3).
    const JS_MESSAGE: &str = "ff0108000200000000004000000000000000000068656c6c6f2d6d7367";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn header_matches_udx_c() {
        let bytes = hex(JS_MESSAGE);
        let p = decode(&bytes).unwrap();
        assert_eq!(p.header.flags, FLAG_MESSAGE);
        assert_eq!(p.header.stream_id, 2);
        assert_eq!(p.header.recv_window, 4 * 1024 * 1024);
        assert_eq!(p.payload, b"hello-msg");
        let h = Header {
            flags: FLAG_MESSAGE,
            data_offset: 0,
            stream_id: 2,
            recv_window: 4 << 20,
            seq: 0,
            ack: 0,
        };
        assert_eq!(&h.to_bytes()[..], &bytes[..20]);
    }

    #[test]
    fn rejects_non_udx() {
        assert_eq!(decode(&[0xff; 19]), Err(DecodeError::TooShort(19)));
        let mut b = [0u8; 20];
        assert_eq!(decode(&b), Err(DecodeError::BadMagic(0)));
        b[0] = 0xff;
        b[1] = 2;
        assert_eq!(decode(&b), Err(DecodeError::BadVersion(2)));
        assert_eq!(peek_stream_id(&b), None);
    }

    #[test]
    fn sack_area_follows_udx_c() {
        let h = Header {
            flags: FLAG_SACK,
            stream_id: 7,
            ack: 10,
            ..Header::default()
        };
        let mut b = h.to_bytes().to_vec();
        encode_sacks(&[(12, 14), (16, 20)], &mut b);
        b.extend_from_slice(&[1, 2, 3]); // trailing partial block is ignored
        let p = decode(&b).unwrap();
        assert_eq!(p.sacks().collect::<Vec<_>>(), vec![(12, 14), (16, 20)]);

        // With data_offset, only that many bytes are SACK blocks.
        let mut h2 = h;
        h2.data_offset = 8;
        b[..20].copy_from_slice(&h2.to_bytes());
        let p = decode(&b).unwrap();
        assert_eq!(p.sacks().collect::<Vec<_>>(), vec![(12, 14)]);
        assert_eq!(p.payload.len(), b.len() - 28);
    }

    #[test]
    fn probe_padding_is_skipped() {
        let h = Header {
            flags: FLAG_DATA,
            data_offset: 32,
            ..Header::default()
        };
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(&[0u8; 32]);
        b.extend_from_slice(b"payload");
        assert_eq!(decode(&b).unwrap().payload, b"payload");
        b.truncate(40);
        assert!(matches!(
            decode(&b),
            Err(DecodeError::BadDataOffset { offset: 32, .. })
        ));
    }

    #[test]
    fn fuzz_decode_never_panics_on_short_or_odd_inputs() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..200usize {
            for _ in 0..50 {
                let mut v = Vec::with_capacity(len);
                for _ in 0..len {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    v.push(seed as u8);
                }
                if len >= 2 && seed & 1 == 0 {
                    v[0] = MAGIC;
                    v[1] = VERSION;
                }
                fuzz_decode(&v);
            }
        }
    }
}
