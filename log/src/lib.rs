//! ScopeHold's tamper-evident event log.
//!
//! An append-only sequence of events in segment files of CRC32C-framed records. Each event's
//! envelope carries the BLAKE3 hash of the previous envelope (the chain) and a commitment to
//! its body; after every group commit a checkpoint (log identity, size, head hash, time)
//! signed with the log's ed25519 key is written in the same fdatasync. Segments are
//! pre-zeroed (filled with zeros and synced before use, the next one made ahead of need), so
//! that fdatasync commits data only. `FORMAT.md` beside this crate specifies the bytes.
//!
//! The crate stores opaque bodies: it knows nothing of secrets, grants or the daemon, and it
//! uses no async runtime (async callers use [`Log::submit`] with a callback).
//!
//! # The public API
//!
//! Everything a caller needs is re-exported here: [`Log`] (the writer), [`LogReader`],
//! [`verify_log`] (and [`SegmentVerifier`], for a log handed over one segment at a time, as a
//! backup does) and the bundle functions ([`export`], [`verify_bundle`], [`read_bundle`]),
//! keys, checkpoints and the typed errors. Two modules are public in their own right because
//! `FORMAT.md` specifies them and tools (and the tamper tests) need to read and build the
//! bytes exactly: [`codec`] (structures and frames) and [`hash`] (the domain-separated
//! hashes). Everything else (recovery, the index, the segment scanner) is private.
//!
//! The library prints nothing: what recovery did is returned ([`Log::recovery`]) and also
//! emitted as [`tracing`](https://docs.rs/tracing) events, as is a writer that stops after a
//! storage failure ([`Status::poisoned`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Module dependencies run one way (no cycles). Bottom up: error, hash, storage; codec and
// keys; checkpoint; segment (files, frames read from them, the scanner, the lock); index;
// layout (the committed end, found from the frames); erase (the journal of in-place erasures, on segment and
// storage); then reader and verify side by side, bundle on both, and the writer on layout,
// index, erase and storage.
mod bundle;
mod checkpoint;
pub mod codec;
mod erase;
mod error;
pub mod hash;
mod index;
mod keys;
mod layout;
mod reader;
pub mod replica;
mod segment;
mod storage;
mod verify;
mod writer;

pub use bundle::{
    BundleContents, ExportSummary, bundle_header, export, export_items, export_range,
    export_to_file, read_bundle, verify_bundle,
};
pub use checkpoint::{BadSignature, SignedCheckpoint, VerifiedCheckpoint};
pub use codec::{BodyClass, BundleHeader, Envelope};
pub use erase::ERASE_JOURNAL;
pub use error::{
    AppendError, CheckpointTextError, CloseError, EraseError, FrameError, LogError, PublicKeyError,
};
pub use keys::{LogKey, PublicKey};
pub use reader::{Body, Item, LogIter, LogReader, Record};
pub use segment::{INDEX_FILE, LOCK_FILE, is_live, parse_segment_name};
pub use storage::{StdStorage, Storage, StorageFile};
pub use verify::{
    Failure, SegmentVerifier, VerifyError, VerifyOptions, VerifyReport, verify_log,
    verify_log_with_progress,
};
pub use writer::{
    Callback, Clock, Entry, EraseCallback, Erased, FIRST_SEGMENT_BYTES, Lead, Log, LogOptions,
    Receipt, Recovery, Status, system_clock,
};
