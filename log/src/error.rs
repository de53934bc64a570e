//! Typed errors. Each variant is a failure a caller can act on; verification failures name
//! the event (sequence number) and where it lies. Every enum is `#[non_exhaustive]`: new
//! failure modes may be added without breaking callers, who keep a catch-all arm.

use std::path::{Path, PathBuf};

/// A frame, header or structure that does not parse. Carries no location: the caller knows
/// the file and offset and wraps it ([`LogError::Corrupted`], `VerifyError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes are present than the structure or its length field declares (a torn write
    /// at the end of a file, or a cut file).
    #[error("truncated: fewer bytes than the frame declares")]
    Truncated,
    /// The stored CRC32C does not match the bytes (damage, or a torn write).
    #[error("CRC32C mismatch")]
    BadCrc,
    /// A segment or bundle header does not start with its magic bytes: not a ScopeHold file.
    #[error("bad magic")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// A frame or body length above the format's limit; refused before any allocation.
    #[error("declared length {0} exceeds the limit")]
    TooLarge(u64),
    /// A structure (named by the first field) whose length is not the one the format fixes.
    #[error("{0} has invalid length {1}")]
    BadLength(&'static str, usize),
    /// The fixed-layout decoder refused a structure (named by the first field).
    #[error("cannot decode {0}: {1}")]
    Decode(&'static str, String),
    /// A structure followed by bytes that belong to nothing.
    #[error("{0} followed by {1} trailing bytes")]
    TrailingBytes(&'static str, usize),
    /// An envelope's body class byte is neither public (0) nor secret-bearing (1).
    #[error("unknown body class {0}")]
    BadClass(u8),
    /// An event frame's body presence flag is none of 0 (left out), 1 (present) and 2
    /// (erased). Builds before erasure existed refuse 2 with this error.
    #[error("invalid body presence flag {0}")]
    BadPresence(u8),
    /// A frame marked erased (`present` = 2) that an erasure cannot have written.
    #[error("invalid erased body: {0}")]
    BadErasure(&'static str),
    /// A body is missing where the format requires it (a public body, or any body in a log).
    #[error("a body was left out where that is not allowed")]
    BadRedaction,
    /// A frame type other than event (1) or checkpoint (2).
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
}

/// Errors opening, creating or reading a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file-system operation failed; `context` says which, on which path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (for example `reading /path/to/segment at offset 80`).
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no log (no segment files).
    #[error("no log at {0}")]
    NotFound(PathBuf),
    /// `create` was asked to make a log where one exists.
    #[error("a log already exists at {0}")]
    AlreadyExists(PathBuf),
    /// Another process holds the log's writer lock.
    #[error("the log at {0} is open for writing by another process")]
    Locked(PathBuf),
    /// Damaged committed data. Nothing is truncated: the operator must look.
    #[error(
        "log corrupted in {segment} at byte offset {offset}{}: {reason}; committed data is never truncated",
        seq.map(|s| format!(" (event {s})")).unwrap_or_default()
    )]
    Corrupted {
        /// The segment file holding the damage.
        segment: PathBuf,
        /// Byte offset of the first damaged frame in that file.
        offset: u64,
        /// The event at that offset, when known.
        seq: Option<u64>,
        /// What is wrong there.
        reason: String,
    },
    /// The files do not form a log (misnamed or foreign segments, a broken index scan, a
    /// request outside what the log holds).
    #[error("log structure invalid: {0}")]
    Invalid(String),
    /// The log is shorter than the kept checkpoint: it was cut back to an older state.
    #[error(
        "rollback detected: the log holds {log_size} events but the checkpoint kept at {checkpoint} covers {kept_size}; refusing to open a log cut back to an older state"
    )]
    Rollback {
        /// Events in the log as found.
        log_size: u64,
        /// Events the kept checkpoint covers.
        kept_size: u64,
        /// Where the kept checkpoint lives.
        checkpoint: PathBuf,
    },
    /// The log has as many events as the kept checkpoint, or more, but another history.
    #[error(
        "the log does not extend the checkpoint kept at {checkpoint}: event {seq} has a different hash (a rewritten or forked history)"
    )]
    Fork {
        /// The last event the kept checkpoint covers, whose hash differs.
        seq: u64,
        /// Where the kept checkpoint lives.
        checkpoint: PathBuf,
    },
    /// The kept checkpoint file is missing, unreadable, foreign or wrongly signed.
    #[error("checkpoint file {path}: {reason}")]
    BadCheckpointFile {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file is unusable (wrong length, readable by other users).
    #[error("key file {path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A read asked for an event past the committed end.
    #[error("event {0} is not in the log's committed range")]
    OutOfRange(u64),
    /// The log's last checkpoint does not verify with the key given to open it.
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

    pub(crate) fn corrupted(
        segment: &Path,
        offset: u64,
        seq: Option<u64>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corrupted {
            segment: segment.to_path_buf(),
            offset,
            seq,
            reason: reason.into(),
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
    /// The writer stopped after a storage failure (the reason) and refuses every append.
    #[error(
        "the log writer is stopped after a storage failure and will not retry ({0}); restart once the fault is cleared"
    )]
    Poisoned(String),
    /// The log was closed before the append was committed.
    #[error("the log is closed")]
    Closed,
    /// A body larger than the format allows (its size in bytes).
    #[error("event body of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Entries appended together that would write more than one batch may (their frames
    /// and checkpoint, in bytes; see `codec::MAX_BATCH_BYTES`).
    #[error("{0} bytes appended together exceed the limit of one batch")]
    BatchTooLarge(usize),
    /// No salt could be drawn for a secret-bearing body.
    #[error("the OS random source failed: {0}")]
    Random(String),
    /// A copied batch ([`Log::append_copied`](crate::Log::append_copied)) that does not
    /// continue this log: why. Nothing was written.
    #[error("the copied batch does not continue this log: {0}")]
    Refused(String),
}

/// Why an erasure ([`Log::erase`](crate::Log::erase)) failed. Refusals (`NotCommitted`,
/// `Public`) changed nothing; after `Failed` or `Poisoned` the outcome is unknown, not
/// negative: a journal that reached the disk finishes the erasure on the next open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    /// The writer stopped after a storage failure (this erasure's, or an earlier one).
    #[error(
        "the log writer is stopped after a storage failure and will not retry ({0}); restart once the fault is cleared"
    )]
    Poisoned(String),
    /// The log was closed first.
    #[error("the log is closed")]
    Closed,
    /// The event is not committed (yet): nothing was erased.
    #[error("event {0} is not in the log's committed range; nothing was erased")]
    NotCommitted(u64),
    /// The event's body is public: it is in every export and is never erased.
    #[error("event {0} has a public body, which is never erased; nothing was erased")]
    Public(u64),
    /// Locating the events or writing the journal failed before any frame was touched.
    #[error("the erasure failed: {0}")]
    Failed(String),
}

/// Why closing a log reported a failure. The log is closed either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The writer had stopped after a storage failure (the reason, as in
    /// [`AppendError::Poisoned`]): events appended after it were never committed, and the
    /// kept checkpoint may not have been written at close.
    #[error("{0}")]
    Poisoned(String),
}

/// A log public key that cannot be read or is not a valid ed25519 key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    /// 32 bytes that are not a valid ed25519 public key (not a curve point).
    #[error("not a valid ed25519 public key")]
    Invalid,
    /// Text that is not 64 hex characters.
    #[error("expected 64 hex characters")]
    NotHex,
    /// A `.pub` file that could not be read.
    #[error("reading public key {path}: {source}")]
    Read {
        /// The path as given.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A `.pub` file whose contents are not a public key.
    #[error("public key file {path}: {source}")]
    BadFile {
        /// The path as given.
        path: String,
        /// What is wrong with its contents ([`Invalid`](Self::Invalid) or
        /// [`NotHex`](Self::NotHex)).
        #[source]
        source: Box<PublicKeyError>,
    },
}

/// A checkpoint in text form (a kept checkpoint, an auditor's `--trusted-checkpoint`) that
/// does not parse. The parser is strict: every line, in order, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointTextError {
    /// The text ends before the named line.
    #[error("missing line `{0}`")]
    MissingLine(&'static str),
    /// The first line is not the format's header line.
    #[error("expected `{0}` as the first line")]
    BadHeader(&'static str),
    /// A line other than the one expected at that place.
    #[error("expected line `{expected} ...`, found `{found}`")]
    UnexpectedLine {
        /// The field name that belongs there.
        expected: &'static str,
        /// The line found instead.
        found: String,
    },
    /// A hex field of the wrong length or with non-hex characters.
    #[error("{field}: expected {chars} hex characters")]
    BadHex {
        /// The field.
        field: &'static str,
        /// How many hex characters it must have.
        chars: usize,
    },
    /// A decimal field that is not a number.
    #[error("{0}: not a number")]
    NotANumber(&'static str),
    /// Text after the last line.
    #[error("unexpected lines after the signature")]
    TrailingLines,
}
