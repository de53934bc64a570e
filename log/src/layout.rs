//! Finding a log's committed end: the last valid checkpoint of the last segment, located
//! without scanning the whole log (the index says where the last event is; only the bytes
//! after it are read). Shared by the writer's recovery and by read-only openers.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{MAX_BATCH_BYTES, SEGMENT_HEADER_LEN, SEGMENT_OPENING_LEN};
use crate::error::{FrameError, LogError};
use crate::hash;
use crate::index;
use crate::keys::PublicKey;
use crate::segment::{self, INDEX_FILE, Reach, SegmentInfo};

/// Where a log's committed history ends, as found on disk.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    pub(crate) log_id: [u8; 32],
    /// Segments holding committed data (an incomplete trailing segment is excluded).
    pub(crate) segments: Vec<SegmentInfo>,
    /// The last checkpoint (not yet signature-checked unless a key was given).
    pub(crate) checkpoint: SignedCheckpoint,
    /// Offset just past the last checkpoint in the last segment.
    pub(crate) committed_end: u64,
    /// Where the last segment's data ends: its length for version 1, the start of its zero
    /// tail for version 2. Bytes from `committed_end` to here are uncommitted (a torn write).
    pub(crate) data_end: u64,
    /// Length of the last segment file.
    pub(crate) file_end: u64,
    /// The last segment's header version ([`SEGMENT_V1`](crate::codec::SEGMENT_V1) or
    /// [`SEGMENT_V2`](crate::codec::SEGMENT_V2)).
    pub(crate) last_version: u16,
    /// Whole events found after the last checkpoint.
    pub(crate) uncommitted_events: u64,
    /// A trailing segment that holds no committed data (a roll interrupted before its first
    /// checkpoint was synced).
    pub(crate) incomplete_segment: Option<PathBuf>,
    /// Frame offsets of events `0..checkpoint.size`.
    pub(crate) index: Vec<u64>,
    /// Whether the index file had to be corrected or rebuilt.
    pub(crate) index_changed: bool,
    /// Offset and reason of the first damaged frame after the last checkpoint, if any.
    pub(crate) torn: Option<(u64, FrameError)>,
}

impl Layout {
    pub(crate) fn size(&self) -> u64 {
        self.checkpoint.body.size
    }
    pub(crate) fn last_segment(&self) -> &SegmentInfo {
        // `load` returns an error rather than a layout with no segments.
        self.segments
            .last()
            .expect("a layout has at least one segment")
    }

    /// Reads a committed event's envelope hash through the index.
    pub(crate) fn event_hash(&self, seq: u64) -> Result<[u8; 32], LogError> {
        if seq >= self.size() {
            return Err(LogError::OutOfRange(seq));
        }
        let seg = &self.segments
            [index::segment_for(&self.segments, seq).ok_or(LogError::OutOfRange(seq))?];
        let f = File::open(&seg.path)
            .map_err(|e| LogError::io(format!("opening {}", seg.path.display()), e))?;
        let off = self.index[seq as usize];
        let mut buf = Vec::new();
        let p = segment::read_event_at(&f, off, &seg.path, &mut buf)?;
        if p.envelope.seq != seq {
            return Err(LogError::corrupted(
                &seg.path,
                off,
                Some(seq),
                format!("found event {} where {seq} belongs", p.envelope.seq),
            ));
        }
        Ok(hash::event_hash(p.envelope_bytes))
    }
}

/// Loads the layout of the log in `dir`. With `key`, the last checkpoint's signature is
/// checked. `reach` says how much of a pre-zeroed last segment is read: all of it to check
/// its zero tail ([`Reach::Whole`]), or only as far as its committed data
/// ([`Reach::Committed`], which leaves `file_end` at the data's end). Never modifies anything
/// except the in-memory index.
pub(crate) fn load(dir: &Path, key: Option<&PublicKey>, reach: Reach) -> Result<Layout, LogError> {
    let mut segments = segment::list_segments(dir)?;
    if segments.is_empty() {
        return Err(LogError::NotFound(dir.to_path_buf()));
    }
    let (log_id, first) = segment::read_header(&segments[0].path)?;
    if first != 0 || segments[0].first_seq != 0 {
        return Err(LogError::Invalid(format!(
            "first segment {} does not start at event 0",
            segments[0].path.display()
        )));
    }
    let mut index_entries = index::load(&dir.join(INDEX_FILE), &log_id).unwrap_or_default();
    let loaded_len = index_entries.len();
    let mut index_cleared = false;
    let mut incomplete_segment = None;
    loop {
        let last = segments
            .last()
            .expect("segments is non-empty in this loop")
            .clone();
        let header = segment::read_segment_header(&last.path);
        let header_ok = match &header {
            Ok(h) => {
                if h.log_id != log_id || h.first_seq != last.first_seq {
                    return Err(LogError::Invalid(format!(
                        "segment {} belongs to another log or is misnamed",
                        last.path.display()
                    )));
                }
                true
            }
            Err(_) => false,
        };
        // Start from the last indexed event when it lies in this segment and checks out.
        let mut start = SEGMENT_HEADER_LEN as u64;
        if header_ok && let Some(&off) = index_entries.last() {
            let seq = index_entries.len() as u64 - 1;
            if seq >= last.first_seq
                && let Ok(f) = File::open(&last.path)
                && index::event_seq_at(&f, off) == Some(seq)
            {
                start = off;
            }
        }
        let scan = if header_ok {
            let mut tail = segment::read_tail(&last.path, start, reach)?;
            let mut s = segment::scan(&tail.buf, start, tail.data_len);
            if s.last_checkpoint.is_none() && start != SEGMENT_HEADER_LEN as u64 {
                // The index pointed past the last checkpoint (it can run ahead of a log that
                // lost its unsynced tail): scan the segment from its start instead.
                index_entries.clear();
                index_cleared = true;
                start = SEGMENT_HEADER_LEN as u64;
                tail = segment::read_tail(&last.path, start, reach)?;
                s = segment::scan(&tail.buf, start, tail.data_len);
            }
            Some((s, tail))
        } else {
            None
        };
        let Some((scan, tail)) = scan.filter(|(s, _)| s.last_checkpoint.is_some()) else {
            // No committed data in the last segment. A roll writes the header and a copy of
            // the last checkpoint and syncs both before any event goes there, so such a
            // segment is an interrupted roll, unless it is the only one or holds events.
            // Only a file whose bytes past a header and one checkpoint frame are all zero
            // (for version 1: a file no longer than that) can be a roll that was cut short;
            // anything else held data that was synced, and is corruption.
            let extent = segment::nonzero_extent(&last.path).unwrap_or(u64::MAX);
            let has_events = extent > SEGMENT_OPENING_LEN as u64;
            if segments.len() > 1 && !has_events && incomplete_segment.is_none() {
                incomplete_segment = Some(last.path.clone());
                segments.pop();
                continue;
            }
            return Err(LogError::Corrupted {
                segment: last.path.clone(),
                offset: 0,
                seq: Some(last.first_seq),
                reason: "the segment's header or opening checkpoint is damaged".into(),
            });
        };
        let version = header.as_ref().map_or(0, |h| h.version);
        let (cp, cp_end) = scan
            .last_checkpoint
            .expect("filtered on last_checkpoint above");
        if let (Some((bad_off, why)), Some(_)) = (&scan.bad, scan.checkpoint_beyond_bad) {
            let seq = scan
                .events
                .last()
                .map(|(s, _)| s + 1 + scan.events_after_checkpoint)
                .unwrap_or(cp.body.size + scan.events_after_checkpoint);
            return Err(LogError::Corrupted {
                segment: last.path.clone(),
                offset: *bad_off,
                seq: Some(seq),
                reason: why.to_string(),
            });
        }
        // A torn write reaches at most one batch past the last checkpoint; nonzero bytes in a
        // pre-zeroed segment farther than that were put there by something else.
        if version == crate::codec::SEGMENT_V2
            && scan.end > cp_end + MAX_BATCH_BYTES as u64
            && let Some(i) = segment::first_nonzero(
                &tail.buf[..tail.data_len],
                (cp_end - start) as usize + MAX_BATCH_BYTES,
            )
        {
            let at = start + i as u64;
            return Err(LogError::Corrupted {
                segment: last.path.clone(),
                offset: at,
                seq: Some(cp.body.size),
                reason: format!(
                    "nonzero bytes in the zero tail, {} bytes past the last checkpoint (offset {cp_end}): farther than a write in flight reaches ({MAX_BATCH_BYTES} bytes)",
                    at - cp_end
                ),
            });
        }
        if cp.body.log_id != log_id {
            return Err(LogError::Invalid(format!(
                "the last checkpoint in {} names another log",
                last.path.display()
            )));
        }
        if let Some(k) = key {
            cp.verify(k).map_err(|_| LogError::WrongKey)?;
        }
        match scan.last_event_before_checkpoint {
            Some((seq, h)) if seq + 1 != cp.body.size || !hash::ct_eq(&h, &cp.body.head) => {
                return Err(LogError::Corrupted {
                    segment: last.path.clone(),
                    offset: cp_end,
                    seq: Some(seq),
                    reason: "the last checkpoint does not match the event before it".into(),
                });
            }
            None if cp.body.size == 0 && !hash::ct_eq(&cp.body.head, &hash::genesis(&log_id)) => {
                return Err(LogError::Invalid(
                    "the genesis checkpoint has the wrong head".into(),
                ));
            }
            _ => {}
        }
        // Seed the index with what the scan saw, then fill any gap before it.
        if !index_entries.is_empty() || start == SEGMENT_HEADER_LEN as u64 {
            for &(seq, off) in &scan.events {
                if seq == index_entries.len() as u64 {
                    index_entries.push(off);
                }
            }
        }
        let index_changed = index::reconcile(&mut index_entries, &segments, cp.body.size)?
            || index_cleared
            || index_entries.len() != loaded_len;
        let torn = scan.bad.clone();
        return Ok(Layout {
            dir: dir.to_path_buf(),
            log_id,
            segments,
            checkpoint: cp,
            committed_end: cp_end,
            data_end: scan.end,
            file_end: tail.file_end,
            last_version: version,
            uncommitted_events: scan.events_after_checkpoint,
            incomplete_segment,
            index: index_entries,
            index_changed,
            torn,
        });
    }
}
