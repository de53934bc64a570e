//! ScopeHold's tamper-evident event log.
//!
//! An append-only sequence of events in segment files of CRC32C-framed records. Each event's
//! envelope carries the BLAKE3 hash of the previous envelope (the chain) and a commitment to
//! its body; after every group commit a checkpoint (log identity, size, head hash, time)
//! signed with the log's ed25519 key is written in the same fdatasync. `FORMAT.md` beside
//! this crate specifies the bytes.
//!
//! The crate stores opaque bodies: it knows nothing of secrets, grants or the daemon, and it
//! uses no async runtime (async callers use [`Log::submit`] with a callback).
#![forbid(unsafe_code)]
// Outside tests, no `unwrap`: an `expect` names the invariant that makes it safe.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bundle;
pub mod checkpoint;
pub mod codec;
pub mod error;
pub mod hash;
pub mod index;
pub mod keys;
pub mod layout;
pub mod reader;
pub mod segment;
pub mod storage;
pub mod verify;
pub mod writer;

pub use bundle::{
    BundleContents, ExportSummary, export, export_to_file, read_bundle, verify_bundle,
};
pub use checkpoint::{SignedCheckpoint, VerifiedCheckpoint};
pub use codec::{BodyClass, Envelope};
pub use error::{AppendError, FrameError, LogError};
pub use keys::{LogKey, PublicKey};
pub use reader::{Body, Item, LogReader, Record};
pub use storage::{StdStorage, Storage, StorageFile};
pub use verify::{
    Failure, VerifyError, VerifyOptions, VerifyReport, verify_log, verify_log_with_progress,
};
pub use writer::{Entry, Log, LogOptions, Receipt, Recovery, Status, is_live};
