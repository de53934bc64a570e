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
