//! The one error type of the decoders.

/// Why bytes could not be decoded. Decoders never panic; every malformed input maps here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("out of bounds: needed {needed} more bytes, {remaining} remain")]
    OutOfBounds {
        /// Bytes the value still needed.
        needed: u64,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A varint used a longer form than its value needs (JS never writes these).
    #[error("non-canonical varint: {value} encoded with prefix {prefix:#04x}")]
    NonCanonicalUint {
        /// The prefix byte used.
        prefix: u8,
        /// The decoded value.
        value: u64,
    },
    /// A decoded number does not fit the type it is read as.
    #[error("{value} is out of range for {what}")]
    OutOfRange {
        /// The target type.
        what: &'static str,
        /// The decoded number.
        value: u64,
    },
    /// A bool byte other than 0 or 1.
    #[error("invalid bool byte {0:#04x}")]
    InvalidBool(u8),
    /// A string that is not valid UTF-8.
    #[error("invalid utf-8 string")]
    InvalidUtf8,
    /// A `json` value that does not parse.
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// An array count above [`crate::MAX_ARRAY_LEN`].
    #[error("array of {0} elements is too big")]
    ArrayTooBig(u64),
    /// An IP family byte other than 4 or 6.
    #[error("invalid ip family {0}")]
    InvalidIpFamily(u8),
    /// Bytes left after a value that had to span the whole input.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// A value that decodes but breaks a rule of the message it is part of.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// The broken rule.
        why: &'static str,
    },
}
