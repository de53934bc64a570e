//! Typed errors. Each variant is a failure a caller can act on; verification failures name
//! the event (sequence number) and where it lies.

use std::path::PathBuf;

/// A frame, header or structure that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("truncated: fewer bytes than the frame declares")]
    Truncated,
    #[error("CRC32C mismatch")]
    BadCrc,
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    #[error("declared length {0} exceeds the limit")]
    TooLarge(u64),
    #[error("{0} has invalid length {1}")]
    BadLength(&'static str, usize),
    #[error("cannot decode {0}: {1}")]
    Decode(&'static str, String),
    #[error("{0} followed by {1} trailing bytes")]
    TrailingBytes(&'static str, usize),
    #[error("unknown body class {0}")]
    BadClass(u8),
    #[error("invalid body presence flag {0}")]
    BadPresence(u8),
    #[error("a body was left out where that is not allowed")]
    BadRedaction,
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
}

/// Errors opening, creating or reading a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no log at {0}")]
    NotFound(PathBuf),
    #[error("a log already exists at {0}")]
    AlreadyExists(PathBuf),
    #[error("the log at {0} is open for writing by another process")]
    Locked(PathBuf),
    #[error(
        "log corrupted in {segment} at byte offset {offset}{}: {reason}; committed data is never truncated",
        seq.map(|s| format!(" (event {s})")).unwrap_or_default()
    )]
    Corrupted {
        segment: PathBuf,
        offset: u64,
        /// The event at that offset, when known.
        seq: Option<u64>,
        reason: String,
    },
    #[error("log structure invalid: {0}")]
    Invalid(String),
    #[error(
        "rollback detected: the log holds {log_size} events but the checkpoint kept at {checkpoint} covers {kept_size}; refusing to open a log cut back to an older state"
    )]
    Rollback {
        log_size: u64,
        kept_size: u64,
        checkpoint: PathBuf,
    },
    #[error(
        "the log does not extend the checkpoint kept at {checkpoint}: event {seq} has a different hash (a rewritten or forked history)"
    )]
    Fork { seq: u64, checkpoint: PathBuf },
    #[error("checkpoint file {path}: {reason}")]
    BadCheckpointFile { path: PathBuf, reason: String },
    #[error("key file {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("event {0} is not in the log's committed range")]
    OutOfRange(u64),
    #[error("the signing key does not match the log's checkpoints")]
    WrongKey,
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why an append failed. A failed append was never acknowledged, but its outcome is unknown,
/// not negative: after a failed fdatasync the data may still have reached the disk, and the
/// whole batch (signed and consistent) can reappear when the log is reopened. Callers treat a
/// failure as "not done" for the caller (no secret leaves) while the log may show more than
/// was delivered, never less.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error(
        "the log writer is stopped after a storage failure and will not retry ({0}); restart once the fault is cleared"
    )]
    Poisoned(String),
    #[error("the log is closed")]
    Closed,
    #[error("event body of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("the OS random source failed: {0}")]
    Random(String),
}
