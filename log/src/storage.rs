//! The narrow seam between the writer and the file system.
//!
//! Everything the writer needs to make data durable goes through [`Storage`]: creating
//! files, filling a new segment with zeros ahead of need, writing to a segment at its data
//! end, fdatasync, renames and directory fsyncs, and the in-place overwrites (erasing a
//! secret-bearing body, journalled first; zeroing a torn tail in recovery). Production uses
//! [`StdStorage`]. Tests plug in an implementation that injects write and fsync failures or
//! simulates a power cut by dropping or reverting every write that was not synced; nothing
//! else differs. Reads do not go through the seam: they cannot make anything durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// A file opened for writing: appends (from [`Storage::create_new`] or
/// [`Storage::open_append`]) or positioned writes (from [`Storage::open_at`]).
pub trait StorageFile: Send {
    /// Writes all of `buf` at the file's write position and moves the position past it: the
    /// end of the file for an appending file, the offset given to [`Storage::open_at`] (and
    /// then after each write) otherwise. One call per batch: events and their checkpoint
    /// together.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync: data and the metadata needed to read it back (the file size).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (recovery of a torn tail of a version-1 segment only).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Overwrites `buf.len()` bytes at `offset` in place, never past the end of the file
    /// (erasing a record's body; zeroing a torn tail). Only files from
    /// [`Storage::open_overwrite`] need support it.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let _ = (offset, buf);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file was not opened for overwriting",
        ))
    }
}

/// Zeros written per call while filling a file ([`Storage::create_zeroed`]).
const ZERO_CHUNK: usize = 1 << 20;

/// The file-system operations that make the log durable. Implement it to inject faults; an
/// implementation must not report success for data it did not make durable.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a new file (failing if it exists) for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for positioned writes starting at `offset` (not `O_APPEND`):
    /// appends into a pre-zeroed segment overwrite its zeros from the data end on, and the
    /// file grows only if a write runs past its end. Every append of the writer goes through
    /// a file opened here (or through [`create_new`](Self::create_new) for a segment of
    /// version 1), so an implementation that injects faults must implement it.
    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync of a directory, making created and renamed entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file (a segment that never received a checkpoint, a stale temporary file).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Opens an existing file to overwrite bytes in place ([`StorageFile::write_at`]): used to
    /// erase a secret-bearing body (`Log::erase`) and to zero a torn tail on open. The
    /// default is the real file system's, so an implementation that injects faults into
    /// appends only need not know of it.
    fn open_overwrite(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        StdStorage.open_overwrite(path)
    }
    /// Creates a new file (failing if it exists) of `len` bytes, every one of them a zero
    /// actually written, and fdatasyncs it: a segment made ahead of need. Real writes, never
    /// `fallocate` or a sparse `set_len`: on ext4 an allocated but unwritten extent turns the
    /// first write into each block into a metadata change, which is what pre-zeroing exists
    /// to take off the append's fdatasync. The default does it through
    /// [`create_new`](Self::create_new), `write_all` and `sync_data`, so an implementation
    /// that injects faults sees each step.
    fn create_zeroed(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut f = self.create_new(path)?;
        let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_data()
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

struct StdFile {
    file: File,
    /// The write position of a file opened for positioned writes; `None` for an appending
    /// (`O_APPEND`) file, whose position is always its end.
    pos: Option<u64>,
}

impl StorageFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.pos {
            None => self.file.write_all(buf),
            Some(pos) => {
                // pwrite: no seek state to keep in step, and a failed call leaves the
                // position where it was (the writer is poisoned then anyway).
                self.file.write_all_at(buf, *pos)?;
                *pos += buf.len() as u64;
                Ok(())
            }
        }
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // Never grows the file: an overwrite that would is a bug in the caller, refused
        // rather than turned into an append at an arbitrary place.
        let len = self.file.metadata()?.len();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an overwrite past the end of the file",
            ));
        }
        self.file.write_all_at(buf, offset)
    }
}

impl Storage for StdStorage {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        // Owner-only: segments hold sealed (never plaintext) values, but nobody else needs them.
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(StdFile { file, pos: None }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(StdFile { file, pos: None }))
    }
    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn StorageFile>> {
        // Not O_APPEND: on Linux a positioned write to an O_APPEND file appends anyway.
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(StdFile {
            file,
            pos: Some(offset),
        }))
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
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(StdFile { file, pos: None }))
    }
}
