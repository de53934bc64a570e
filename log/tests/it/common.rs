//! Shared helpers: a log with a known key in a temporary directory, filled with recognisable
//! events.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scopehold_log::{Entry, Log, LogKey, LogOptions, Receipt};

pub const SEED: [u8; 32] = [0x5c; 32];

pub fn key() -> LogKey {
    LogKey::from_seed(&SEED)
}

/// Options with a deterministic, strictly increasing clock and no kept checkpoint.
pub fn opts() -> LogOptions {
    let t = Arc::new(AtomicU64::new(1_790_000_000_000));
    LogOptions {
        clock: Arc::new(move || t.fetch_add(1, Ordering::Relaxed)),
        ..LogOptions::default()
    }
}

/// The body of test event `i`: secret-bearing for every third event.
pub fn entry(i: u64) -> Entry {
    let body = format!("event-{i:06} {}", "x".repeat((i % 37) as usize)).into_bytes();
    if i % 3 == 2 {
        Entry::secret(3, body).expect("random salt")
    } else {
        Entry::public((i % 5) as u16, body)
    }
}

pub fn body_of(i: u64) -> Vec<u8> {
    format!("event-{i:06} {}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// Creates a log in `dir` holding `n` events appended in batches of `batch`.
pub fn make_log(dir: &Path, n: u64, batch: u64, opts: LogOptions) -> Vec<Receipt> {
    let log = Log::create(dir, key(), opts).expect("create log");
    let mut receipts = Vec::new();
    let mut i = 0;
    while i < n {
        let k = batch.min(n - i);
        let entries = (i..i + k).map(entry).collect();
        receipts.extend(log.append_batch(entries).expect("append"));
        i += k;
    }
    log.close().expect("close");
    receipts
}

pub fn segment(dir: &Path) -> PathBuf {
    dir.join("00000000000000000000.seg")
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Copies a log directory (files only) to a new temporary directory.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// As [`opts`], writing version-1 segments (growing files), as builds before segment
/// version 2 did: logs "written by the previous release".
pub fn v1_opts() -> LogOptions {
    LogOptions {
        preallocate: false,
        ..opts()
    }
}

/// Both segment versions: (name for messages, options).
pub fn both_versions() -> [(&'static str, LogOptions); 2] {
    [("version 1", v1_opts()), ("version 2", opts())]
}

/// Whether every byte of `bytes` from `pos` on is zero: the zero tail of a pre-zeroed
/// segment, where its frames end.
pub fn zeros_from(bytes: &[u8], pos: usize) -> bool {
    bytes[pos.min(bytes.len())..].iter().all(|b| *b == 0)
}

/// Whether a segment file's header says version 2 (pre-zeroed).
pub fn is_prezeroed(bytes: &[u8]) -> bool {
    scopehold_log::codec::segment_header(bytes).is_ok_and(|h| h.prezeroed())
}

/// The committed end of the log in `dir` (just past the last checkpoint of its last segment).
pub fn committed_end(dir: &Path) -> u64 {
    scopehold_log::LogReader::open(dir, None)
        .expect("reader")
        .committed_end()
}

/// Writes `bytes` at `offset` of the file at `path` in place (growing it if they run past its
/// end), as a write the writer never finished would lie there.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Every file of the log directory except the spare (zeros made ahead of need).
pub fn is_spare(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("segment.spare"))
}

/// `verify_log` with every checkpoint's signature checked, as the console checks a bundle.
pub fn verify_all(
    dir: &Path,
    key: &scopehold_log::PublicKey,
) -> Result<scopehold_log::VerifyReport, scopehold_log::VerifyError> {
    scopehold_log::verify_log(
        dir,
        key,
        &scopehold_log::VerifyOptions {
            all_signatures: true,
            trusted: None,
        },
    )
}
