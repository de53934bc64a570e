//! The sequence-number index: `log/index` is a header (`SHLOGIDX`, log id) followed by one
//! 12-byte entry per event: the byte offset of that event's frame in its segment (u64 LE; the
//! segment is found from the segment names, which carry their first sequence number) and a
//! CRC32C of `seq || offset` (u32 LE).
//!
//! The index is a cache, appended after each commit and never fsynced. After a power cut any
//! of its pages may be missing, zeroed or stale; the per-entry check finds the first entry that
//! is not what the writer wrote, everything from there is dropped and rebuilt by scanning only
//! that part of the log. A current index lets a log open without scanning at all.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::codec::{self, Frame};
use crate::error::LogError;
use crate::segment::{self, SegmentInfo};

pub(crate) const INDEX_MAGIC: [u8; 8] = *b"SHLOGIDX";
pub(crate) const INDEX_HEADER_LEN: u64 = 40;
pub(crate) const ENTRY_LEN: usize = 12;

fn entry_check(seq: u64, offset: u64) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), &offset.to_le_bytes())
}

fn encode_entries(first_seq: u64, offsets: &[u64], out: &mut Vec<u8>) {
    for (i, o) in offsets.iter().enumerate() {
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&entry_check(first_seq + i as u64, *o).to_le_bytes());
    }
}

/// Loads the index's entries up to the first one that fails its check, if the header matches
/// `log_id`. `None` when the index is missing or not for this log.
pub(crate) fn load(path: &Path, log_id: &[u8; 32]) -> Option<Vec<u64>> {
    let mut f = File::open(path).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    if bytes.len() < INDEX_HEADER_LEN as usize
        || bytes[..8] != INDEX_MAGIC
        || bytes[8..40] != log_id[..]
    {
        return None;
    }
    let mut v = Vec::with_capacity((bytes.len() - INDEX_HEADER_LEN as usize) / ENTRY_LEN);
    for (seq, c) in bytes[INDEX_HEADER_LEN as usize..]
        .chunks_exact(ENTRY_LEN)
        .enumerate()
    {
        let off = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
        let check = u32::from_le_bytes(c[8..].try_into().expect("4 bytes"));
        if check != entry_check(seq as u64, off) {
            break;
        }
        v.push(off);
    }
    Some(v)
}

/// Reads the frame at `offset` of `file` and returns its event sequence number and its
/// total length, if it is a whole, valid event frame.
pub(crate) fn event_at(file: &File, offset: u64) -> Option<(u64, usize)> {
    let mut buf = Vec::new();
    segment::read_frame_at(file, offset, &mut buf).ok()?;
    match codec::decode_frame(&buf).ok()? {
        codec::DecodedFrame {
            frame: Frame::Event(p),
            total_len,
        } => Some((p.envelope.seq, total_len)),
        _ => None,
    }
}

/// [`event_at`], the sequence number only.
pub(crate) fn event_seq_at(file: &File, offset: u64) -> Option<u64> {
    event_at(file, offset).map(|(seq, _)| seq)
}

/// The segment holding `seq`: the last one whose first sequence number is `<= seq`.
pub(crate) fn segment_for(segments: &[SegmentInfo], seq: u64) -> Option<usize> {
    let i = segments.partition_point(|s| s.first_seq <= seq);
    i.checked_sub(1)
}

/// Brings `entries` up to `size` events: checks that the last one points at its event (and
/// drops everything if it does not: the index belongs to some other state of the log), then
/// scans only the part of the log it lacks. Returns whether anything was added or dropped.
pub(crate) fn reconcile(
    entries: &mut Vec<u64>,
    segments: &[SegmentInfo],
    size: u64,
) -> Result<bool, LogError> {
    let mut changed = false;
    if entries.len() as u64 > size {
        entries.truncate(size as usize);
        changed = true;
    }
    // Total length of the last indexed event's frame, once it checked out.
    let mut last_len = None;
    if let Some(last) = entries.len().checked_sub(1) {
        let found = segment_for(segments, last as u64)
            .and_then(|i| File::open(&segments[i].path).ok())
            .and_then(|f| event_at(&f, entries[last]));
        match found {
            Some((seq, len)) if seq == last as u64 => last_len = Some(len),
            _ => {
                entries.clear();
                changed = true;
            }
        }
    }
    let have = entries.len() as u64;
    if have == size {
        return Ok(changed);
    }
    // Scan from the segment holding the first missing event (from the frame after the last
    // indexed one when that is in the same segment).
    let start_seg = segment_for(segments, have).unwrap_or(0);
    for (i, seg) in segments.iter().enumerate().skip(start_seg) {
        let start = match last_len {
            // The frame after the last indexed event (checked above, with its length).
            Some(len) if i == start_seg && have > seg.first_seq => {
                entries[have as usize - 1] + len as u64
            }
            _ => codec::SEGMENT_HEADER_LEN as u64,
        };
        let tail = segment::read_tail(&seg.path, start, segment::Reach::Committed)?;
        let scan = segment::scan(&tail.buf, start, tail.data_len);
        for (seq, off) in scan.events {
            if seq >= size {
                break;
            }
            if seq != entries.len() as u64 {
                return Err(LogError::Invalid(format!(
                    "segment {}: expected event {} at offset {off}, found event {seq}",
                    seg.path.display(),
                    entries.len()
                )));
            }
            entries.push(off);
        }
        if entries.len() as u64 >= size {
            break;
        }
    }
    if (entries.len() as u64) < size {
        return Err(LogError::Invalid(format!(
            "only {} of the {size} committed events could be found while indexing",
            entries.len()
        )));
    }
    Ok(true)
}

/// The writer's handle: appends entries after each commit.
#[derive(Debug)]
pub(crate) struct IndexWriter {
    file: File,
    entries: u64,
}

impl IndexWriter {
    /// With `rewrite`, replaces the index file with `entries`; otherwise opens the existing
    /// file, whose first `entries.len()` entries are known good, and drops whatever follows
    /// them so that appends stay aligned.
    pub(crate) fn open(
        path: &Path,
        log_id: &[u8; 32],
        entries: &[u64],
        rewrite: bool,
    ) -> Result<Self, LogError> {
        let ctx = |e| LogError::io(format!("writing index {}", path.display()), e);
        let n = entries.len() as u64;
        if rewrite {
            let tmp = path.with_extension("tmp");
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(ctx)?;
            let mut bytes =
                Vec::with_capacity(INDEX_HEADER_LEN as usize + entries.len() * ENTRY_LEN);
            bytes.extend_from_slice(&INDEX_MAGIC);
            bytes.extend_from_slice(log_id);
            encode_entries(0, entries, &mut bytes);
            f.write_all(&bytes).map_err(ctx)?;
            std::fs::rename(&tmp, path).map_err(ctx)?;
        } else {
            let f = OpenOptions::new().write(true).open(path).map_err(ctx)?;
            f.set_len(INDEX_HEADER_LEN + n * ENTRY_LEN as u64)
                .map_err(ctx)?;
        }
        let file = OpenOptions::new().append(true).open(path).map_err(ctx)?;
        Ok(Self { file, entries: n })
    }

    pub(crate) fn append(&mut self, offsets: &[u64]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(offsets.len() * ENTRY_LEN);
        encode_entries(self.entries, offsets, &mut bytes);
        self.file.write_all(&bytes)?;
        self.entries += offsets.len() as u64;
        Ok(())
    }
}
