//! The narrow seam between the writer and the file system.
//!
//! Everything the writer needs to make data durable goes through [`Storage`]: creating and
//! appending to segment files, fdatasync, renames and directory fsyncs, and the one in-place
//! overwrite (erasing a secret-bearing body, journalled first). Production uses
//! [`StdStorage`]. Tests plug in an implementation that injects write and fsync failures or
//! simulates a power cut by dropping every write that was not synced; nothing else differs.
//! Reads do not go through the seam: they cannot make anything durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// A file opened for appending.
pub trait StorageFile: Send {
    /// Appends all of `buf` (one call per batch: events and their checkpoint together).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync: data and the metadata needed to read it back (the file size).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (recovery of a torn tail only).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Overwrites `buf.len()` bytes at `offset` in place, never past the end of the file
    /// (erasing a record's body). Only files from [`Storage::open_overwrite`] support it.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let _ = (offset, buf);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file was not opened for overwriting",
        ))
    }
}

/// The file-system operations that make the log durable. Implement it to inject faults; an
/// implementation must not report success for data it did not make durable.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a new file (failing if it exists) for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync of a directory, making created and renamed entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file (a segment that never received a checkpoint, a stale temporary file).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Opens an existing file to overwrite bytes in place ([`StorageFile::write_at`]): the
    /// one exception to append-only, used to erase a secret-bearing body (`Log::erase`).
    /// The default is the real file system's, so an implementation that injects faults into
    /// appends only need not know of it.
    fn open_overwrite(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        StdStorage.open_overwrite(path)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

struct StdFile(File);

impl StorageFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // Never grows the file: an overwrite that would is a bug in the caller, refused
        // rather than turned into an append at an arbitrary place.
        let len = self.0.metadata()?.len();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an overwrite past the end of the file",
            ));
        }
        self.0.write_all_at(buf, offset)
    }
}

impl Storage for StdStorage {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        // Owner-only: segments hold sealed (never plaintext) values, but nobody else needs them.
        let f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(StdFile(f)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(StdFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn open_overwrite(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        // Not O_APPEND: on Linux a positioned write to an O_APPEND file appends anyway.
        let f = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(StdFile(f)))
    }
}
