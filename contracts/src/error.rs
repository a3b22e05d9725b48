//! Contract errors: one typed error for schema checks, command mapping, permissions and
//! state preconditions. Messages go back to agents over the JSON API, so each names the
//! operation and field involved and says what was expected.

/// Why a contract refused a command, an operation, a feature entry or a read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// The operation name is not one the contract declares.
    #[error("unknown operation `{name}`; this contract accepts: {known}")]
    UnknownOperation {
        /// The name that was asked for.
        name: String,
        /// The declared operation names, comma-separated.
        known: String,
    },
    /// The read function name is not one the contract offers.
    #[error("unknown read function `{name}`; this contract offers: {known}")]
    UnknownReadFunction {
        /// The name that was asked for.
        name: String,
        /// The offered read function names, comma-separated.
        known: String,
    },
    /// A read function was sent where an operation (a transaction) was expected.
    #[error(
        "`{name}` is a read function, not an operation: query it as a contract read \
         (it needs no transaction and changes nothing)"
    )]
    ReadFunction {
        /// The read function's name.
        name: String,
    },
    /// A command string maps to no operation.
    #[error("unrecognized command {command:?}: {hint}")]
    UnknownCommand {
        /// The command as given (clipped).
        command: String,
        /// What the contract accepts instead.
        hint: String,
    },
    /// The operation's value has the wrong overall shape (e.g. not a JSON object).
    #[error("`{op}`: value must be {expected}, got {got}")]
    InvalidValue {
        /// The operation (or read function) name.
        op: String,
        /// The shape the schema wants.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A field the schema does not declare.
    #[error("`{op}`: unknown field `{field}`; allowed fields: {allowed}")]
    UnknownField {
        /// The operation (or read function) name.
        op: String,
        /// The undeclared field (clipped).
        field: String,
        /// The declared fields, comma-separated.
        allowed: String,
    },
    /// A required field is absent.
    #[error("`{op}`: missing required field `{field}` ({expected})")]
    MissingField {
        /// The operation (or read function) name.
        op: String,
        /// The missing field.
        field: String,
        /// The type the field wants.
        expected: String,
    },
    /// A field holds a value of the wrong type (or a malformed key).
    #[error("`{op}`: field `{field}` must be {expected}, got {got}")]
    WrongType {
        /// The operation (or read function) name.
        op: String,
        /// The offending field.
        field: String,
        /// The type the field wants.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A string field is shorter or longer than allowed (counted in characters).
    #[error("`{op}`: field `{field}` must be {min} to {max} characters long, got {len}")]
    StringLength {
        /// The operation (or read function) name.
        op: String,
        /// The offending field.
        field: String,
        /// Fewest characters allowed.
        min: usize,
        /// Most characters allowed.
        max: usize,
        /// Characters given.
        len: usize,
    },
    /// An integer field lies outside its range.
    #[error("`{op}`: field `{field}` must be an integer from {min} to {max}, got {value}")]
    OutOfRange {
        /// The operation (or read function) name.
        op: String,
        /// The offending field.
        field: String,
        /// Smallest value allowed.
        min: i64,
        /// Largest value allowed.
        max: i64,
        /// The value given, as text.
        value: String,
    },
    /// A free-form field's JSON encoding is larger than its limit.
    #[error("`{op}`: field `{field}` is {size} bytes as JSON, over its {max}-byte limit")]
    FieldTooLarge {
        /// The operation (or read function) name.
        op: String,
        /// The offending field.
        field: String,
        /// Its JSON size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The whole operation's JSON encoding is larger than [`crate::MAX_OPERATION_BYTES`].
    #[error("`{op}`: the operation is {size} bytes as JSON, over the {max}-byte limit")]
    OperationTooLarge {
        /// The operation name (clipped).
        op: String,
        /// Its JSON size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A command-line flag's text cannot be turned into the field's type.
    #[error("`{op}`: --{field} {reason}")]
    InvalidArgument {
        /// The operation (or read function) name.
        op: String,
        /// The flag, without dashes.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The author lacks the role or ownership the operation needs.
    #[error("`{op}` denied: {reason}")]
    PermissionDenied {
        /// The operation name.
        op: String,
        /// Which role or ownership is missing.
        reason: String,
    },
    /// The operation refers to something that does not exist.
    #[error("`{op}` rejected: {what} does not exist")]
    NotFound {
        /// The operation (or read function) name.
        op: String,
        /// What was looked for, e.g. "message 7".
        what: String,
    },
    /// The operation conflicts with the current state (e.g. chat disabled, nick taken).
    #[error("`{op}` rejected: {reason}")]
    Rejected {
        /// The operation name.
        op: String,
        /// Which state condition failed.
        reason: String,
    },
    /// The contract does not accept entries of this feature.
    #[error("feature `{feature}` is not accepted by this contract; accepted: {accepted}")]
    UnknownFeature {
        /// The feature name (clipped).
        feature: String,
        /// The accepted feature names, comma-separated.
        accepted: String,
    },
    /// A feature entry has the wrong shape or value.
    #[error("feature `{feature}`: invalid entry: {reason}")]
    InvalidFeatureEntry {
        /// The feature name.
        feature: String,
        /// What is wrong with the entry.
        reason: String,
    },
    /// Stored state does not have the shape the contract writes (a bug or a foreign write).
    #[error("contract state key `{key}` holds an unexpected value: {reason}")]
    CorruptState {
        /// The state key.
        key: String,
        /// What was expected there.
        reason: String,
    },
}

impl ContractError {
    /// A stable snake_case code for the error kind, for JSON replies.
    pub fn code(&self) -> &'static str {
        match self {
            ContractError::UnknownOperation { .. } => "unknown_operation",
            ContractError::UnknownReadFunction { .. } => "unknown_read_function",
            ContractError::ReadFunction { .. } => "read_function",
            ContractError::UnknownCommand { .. } => "unknown_command",
            ContractError::InvalidValue { .. } => "invalid_value",
            ContractError::UnknownField { .. } => "unknown_field",
            ContractError::MissingField { .. } => "missing_field",
            ContractError::WrongType { .. } => "wrong_type",
            ContractError::StringLength { .. } => "string_length",
            ContractError::OutOfRange { .. } => "out_of_range",
            ContractError::FieldTooLarge { .. } => "field_too_large",
            ContractError::OperationTooLarge { .. } => "operation_too_large",
            ContractError::InvalidArgument { .. } => "invalid_argument",
            ContractError::PermissionDenied { .. } => "permission_denied",
            ContractError::NotFound { .. } => "not_found",
            ContractError::Rejected { .. } => "rejected",
            ContractError::UnknownFeature { .. } => "unknown_feature",
            ContractError::InvalidFeatureEntry { .. } => "invalid_feature_entry",
            ContractError::CorruptState { .. } => "corrupt_state",
        }
    }

    /// Shorthand for [`ContractError::PermissionDenied`].
    pub fn denied(op: &str, reason: impl Into<String>) -> Self {
        ContractError::PermissionDenied {
            op: op.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ContractError::Rejected`].
    pub fn rejected(op: &str, reason: impl Into<String>) -> Self {
        ContractError::Rejected {
            op: op.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ContractError::NotFound`].
    pub fn not_found(op: &str, what: impl Into<String>) -> Self {
        ContractError::NotFound {
            op: op.to_string(),
            what: what.into(),
        }
    }

    /// Shorthand for [`ContractError::CorruptState`].
    pub fn corrupt(key: &str, reason: impl Into<String>) -> Self {
        ContractError::CorruptState {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Longest piece of caller-supplied text quoted back in an error message.
const CLIP_CHARS: usize = 64;

/// Caller-supplied text shortened for quoting in an error message (at most 64 characters
/// and an ellipsis), so a huge input never makes a huge error.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(CLIP_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_char_boundaries() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), CLIP_CHARS + 1);
        assert!(clipped.ends_with('…'));
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let errors = [
            ContractError::denied("x", "r"),
            ContractError::rejected("x", "r"),
            ContractError::not_found("x", "r"),
            ContractError::corrupt("k", "r"),
        ];
        let codes: Vec<_> = errors.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes,
            [
                "permission_denied",
                "rejected",
                "not_found",
                "corrupt_state"
            ]
        );
        assert_eq!(
            errors[2].to_string(),
            "`x` rejected: r does not exist",
            "messages read naturally"
        );
    }
}
