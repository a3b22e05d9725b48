//! uint24 little-endian length framing, as secret-stream puts every message on the wire.

/// Bytes of the length prefix.
pub const PREFIX: usize = 3;
/// Largest frame body a uint24 prefix can describe.
pub const MAX_FRAME: usize = (1 << 24) - 1;

/// Writes the 3-byte prefix for a body of `len` bytes.
pub fn prefix(len: usize) -> [u8; PREFIX] {
    debug_assert!(len <= MAX_FRAME);
    let b = (len as u32).to_le_bytes();
    [b[0], b[1], b[2]]
}

/// Reads a body length from a 3-byte prefix.
pub fn parse_prefix(p: [u8; PREFIX]) -> usize {
    u32::from_le_bytes([p[0], p[1], p[2], 0]) as usize
}

/// Incremental frame splitter: bytes in, whole frame bodies out. Pure (no I/O), so it can
/// be fuzzed; the tokio reader uses the same prefix functions.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting bodies up to `max_frame` bytes (at most [`MAX_FRAME`]).
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max_frame: max_frame.min(MAX_FRAME),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete body, `Ok(None)` if more bytes are needed, or the announced
    /// length when it exceeds the limit.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, usize> {
        if self.buf.len() < PREFIX {
            return Ok(None);
        }
        let len = parse_prefix([self.buf[0], self.buf[1], self.buf[2]]);
        if len > self.max_frame {
            return Err(len);
        }
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        let body = self.buf[PREFIX..PREFIX + len].to_vec();
        self.buf.drain(..PREFIX + len);
        Ok(Some(body))
    }

    /// Bytes held that do not yet form a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_across_arbitrary_chunks() {
        let mut wire = Vec::new();
        for body in [&b"abc"[..], b"", &[7u8; 300]] {
            wire.extend_from_slice(&prefix(body.len()));
            wire.extend_from_slice(body);
        }
        for chunk in 1..wire.len() {
            let mut d = FrameDecoder::new(MAX_FRAME);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3);
            assert_eq!(got[2].len(), 300);
        }
    }

    #[test]
    fn oversize_frames_are_refused() {
        let mut d = FrameDecoder::new(10);
        d.push(&prefix(11));
        assert_eq!(d.next_frame(), Err(11));
    }
}
