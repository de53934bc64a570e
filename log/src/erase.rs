//! Erasing secret-bearing bodies in place, and the journal that makes it crash safe.
//!
//! An erasure rewrites one committed event frame with its salt and body zeroed and `present`
//! set to 2 ([`codec::BODY_ERASED`]). The frame keeps its length, so every offset (the
//! index, later frames) stays valid, and its envelope, so the chain and every checkpoint
//! still verify. Only the body's commitment can no longer be checked, which is the point.
//!
//! An in-place write is the one thing in the log that is not an append, and a power cut in
//! the middle of it could leave a frame that is half old, half zeros: a CRC failure inside
//! committed data, which is corruption. So every erasure is journalled first, as a database
//! does with a double-write buffer: the journal (`erase.journal`) names each frame and holds
//! its new first bytes (header, envelope, flags; the rest of the new frame is zeros, so the
//! journal holds nothing secret), and is synced with its directory before any frame is
//! touched. Then the frames are overwritten and synced, and the journal is removed.
//!
//! On open, before anything is read, a journal that checks out is applied again (idempotent:
//! it writes what the interrupted erasure was writing); one that does not check out was torn
//! while being written, before any frame was touched, and is discarded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{self, BODY_ERASED, EVENT_HEAD_LEN, FRAME_HEADER_LEN};
use crate::error::LogError;
use crate::segment;
use crate::storage::Storage;

/// Name of the erase journal in a log directory (present only while an erasure is under way,
/// or after one was interrupted; see `FORMAT.md`).
pub const ERASE_JOURNAL: &str = "erase.journal";

const MAGIC: [u8; 8] = *b"SHERASEJ";
const VERSION: u16 = 1;
/// `magic | version | log_id | count`.
const HEADER_LEN: usize = 8 + 2 + 32 + 4;
/// `seq | segment | offset | frame_len | head`.
const ENTRY_LEN: usize = 8 + 8 + 8 + 4 + EVENT_HEAD_LEN;

/// One frame to overwrite: where it is and the first bytes of its erased form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalEntry {
    /// The event's sequence number (for messages and reports).
    pub(crate) seq: u64,
    /// The first sequence number of the segment holding it (its file name).
    pub(crate) segment: u64,
    /// Byte offset of the frame in that segment.
    pub(crate) offset: u64,
    /// Total length of the frame, header included (unchanged by the erasure).
    pub(crate) frame_len: u32,
    /// The erased frame's first [`EVENT_HEAD_LEN`] bytes; zeros follow to `frame_len`.
    pub(crate) head: [u8; EVENT_HEAD_LEN],
}

impl JournalEntry {
    /// The entry erasing the event frame of `old_len` bytes at `offset` of segment `segment`
    /// (a secret-bearing event, which the caller has decoded and checked); `None` if its
    /// erased form would not have the same length (a frame the writer did not write).
    pub(crate) fn for_frame(
        seq: u64,
        segment: u64,
        offset: u64,
        envelope_bytes: &[u8],
        body_len: usize,
        old_len: usize,
    ) -> Option<Self> {
        let mut frame = Vec::with_capacity(old_len);
        codec::put_erased_event_frame(&mut frame, envelope_bytes, body_len);
        if frame.len() != old_len {
            return None;
        }
        let mut head = [0u8; EVENT_HEAD_LEN];
        head.copy_from_slice(&frame[..EVENT_HEAD_LEN]);
        Some(Self {
            seq,
            segment,
            offset,
            frame_len: old_len as u32,
            head,
        })
    }

    /// The whole erased frame.
    pub(crate) fn frame(&self) -> Vec<u8> {
        let mut f = self.head.to_vec();
        f.resize(self.frame_len as usize, 0);
        f
    }

    /// Whether `on_disk` (the bytes at the entry's offset, at least `frame_len` of them) is
    /// the frame this entry erases: its original, its erased form, or a mix of the two left
    /// by an interrupted overwrite. The bytes an erasure leaves as they were (the length,
    /// the frame type, the envelope, the salt length) must all be there.
    pub(crate) fn targets(&self, on_disk: &[u8]) -> bool {
        let h = &self.head;
        let present = EVENT_HEAD_LEN - 2;
        on_disk.len() >= self.frame_len as usize
            && on_disk[..4] == h[..4]
            && on_disk[FRAME_HEADER_LEN..present] == h[FRAME_HEADER_LEN..present]
            && on_disk[present + 1] == h[present + 1]
    }
}

pub(crate) fn encode(log_id: &[u8; 32], entries: &[JournalEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + 4);
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&VERSION.to_le_bytes());
    v.extend_from_slice(log_id);
    v.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        v.extend_from_slice(&e.seq.to_le_bytes());
        v.extend_from_slice(&e.segment.to_le_bytes());
        v.extend_from_slice(&e.offset.to_le_bytes());
        v.extend_from_slice(&e.frame_len.to_le_bytes());
        v.extend_from_slice(&e.head);
    }
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes a journal; `None` if it does not check out (torn, foreign, another version).
pub(crate) fn decode(bytes: &[u8]) -> Option<([u8; 32], Vec<JournalEntry>)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_le_bytes() != crc
        || body.len() < HEADER_LEN
        || body[..8] != MAGIC
        || body[8..10] != VERSION.to_le_bytes()
    {
        return None;
    }
    let log_id: [u8; 32] = body[10..42].try_into().ok()?;
    let count = u32::from_le_bytes(body[42..46].try_into().ok()?) as usize;
    // The count is checked against the bytes present before anything is allocated.
    let rest = &body[HEADER_LEN..];
    if rest.len() != count.checked_mul(ENTRY_LEN)? {
        return None;
    }
    let u64_at = |c: &[u8], i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8"));
    let entries = rest
        .chunks_exact(ENTRY_LEN)
        .map(|c| JournalEntry {
            seq: u64_at(c, 0),
            segment: u64_at(c, 8),
            offset: u64_at(c, 16),
            frame_len: u32::from_le_bytes(c[24..28].try_into().expect("4")),
            head: c[28..].try_into().expect("head length"),
        })
        .collect::<Vec<_>>();
    // Each head must be an erased event frame's: anything else was not written by `erase`.
    entries
        .iter()
        .all(|e| {
            e.frame_len as usize >= EVENT_HEAD_LEN
                && e.head[FRAME_HEADER_LEN] == codec::FRAME_EVENT
                && e.head[EVENT_HEAD_LEN - 2] == BODY_ERASED
        })
        .then_some((log_id, entries))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(segment::segment_name(first_seq))
}

/// Writes each entry's erased frame over its target, then fdatasyncs each segment touched.
/// Any error is the caller's to treat as fatal for the writer.
pub(crate) fn overwrite(
    st: &dyn Storage,
    dir: &Path,
    entries: &[JournalEntry],
) -> std::io::Result<()> {
    let mut segments: Vec<u64> = entries.iter().map(|e| e.segment).collect();
    segments.sort_unstable();
    segments.dedup();
    for s in segments {
        let mut f = st.open_overwrite(&segment_path(dir, s))?;
        for e in entries.iter().filter(|e| e.segment == s) {
            f.write_at(e.offset, &e.frame())?;
        }
        f.sync_data()?;
    }
    Ok(())
}

/// On open, before anything is read: finishes an erasure that a crash interrupted, or
/// discards a journal that was torn before any frame was touched. Returns how many frames
/// were (re)written, or `None` when the journal was discarded.
pub(crate) fn recover(
    dir: &Path,
    st: &dyn Storage,
    log_id: &[u8; 32],
) -> Result<Option<u64>, LogError> {
    let path = dir.join(ERASE_JOURNAL);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(0)),
        Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
    };
    let io = |what: &str| {
        let ctx = format!("{what} {}", path.display());
        move |e| LogError::io(ctx, e)
    };
    let Some((jid, entries)) = decode(&bytes) else {
        // The journal is synced before the first frame is overwritten, so a journal that does
        // not check out means no frame was touched.
        tracing::warn!(
            journal = %path.display(),
            "discarding an erase journal torn before any record was erased"
        );
        st.remove(&path).map_err(io("removing"))?;
        st.sync_dir(dir).map_err(io("syncing the directory of"))?;
        return Ok(None);
    };
    if &jid != log_id {
        return Err(LogError::Invalid(format!(
            "{} belongs to another log",
            path.display()
        )));
    }
    for e in &entries {
        let seg = segment_path(dir, e.segment);
        let f = File::open(&seg).map_err(|err| {
            LogError::io(
                format!(
                    "opening {} to finish the erasure of event {}",
                    seg.display(),
                    e.seq
                ),
                err,
            )
        })?;
        let mut cur = vec![0u8; e.frame_len as usize];
        let read = f.read_exact_at(&mut cur, e.offset);
        if read.is_err() || !e.targets(&cur) {
            return Err(LogError::corrupted(
                &seg,
                e.offset,
                Some(e.seq),
                format!(
                    "the interrupted erasure recorded in {} does not match the frame there; nothing was changed",
                    path.display()
                ),
            ));
        }
    }
    overwrite(st, dir, &entries).map_err(io("finishing the erasure recorded in"))?;
    st.remove(&path).map_err(io("removing"))?;
    st.sync_dir(dir).map_err(io("syncing the directory of"))?;
    tracing::warn!(
        journal = %path.display(),
        records = entries.len(),
        "finished an erasure interrupted by a crash"
    );
    Ok(Some(entries.len() as u64))
}

/// For read-only verification of a log whose erasure is under way or was interrupted (the
/// writer finishes it on its next open): writes the journal's erased frames of segment
/// `first_seq` over `bytes` (that segment as read), where they target the frame found.
/// Nothing without a valid journal.
pub(crate) fn apply_pending(dir: &Path, first_seq: u64, bytes: &mut [u8]) {
    let Ok(journal) = std::fs::read(dir.join(ERASE_JOURNAL)) else {
        return;
    };
    let Some((_, entries)) = decode(&journal) else {
        return;
    };
    for e in entries.iter().filter(|e| e.segment == first_seq) {
        let off = e.offset as usize;
        if let Some(dst) = bytes.get_mut(off..off.saturating_add(e.frame_len as usize))
            && e.targets(dst)
        {
            dst.copy_from_slice(&e.frame());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> JournalEntry {
        let env = codec::Envelope {
            version: codec::FORMAT_VERSION,
            seq,
            time_ms: 1,
            kind: 7,
            class: codec::BodyClass::Secret as u8,
            prev: [1; 32],
            commitment: [2; 32],
            body_len: 40,
        }
        .encode();
        let mut old = Vec::new();
        codec::put_event_frame(&mut old, &env, Some((&[9u8; 32], &[8u8; 40])));
        JournalEntry::for_frame(seq, 0, 54, &env, 40, old.len()).unwrap()
    }

    #[test]
    fn journal_round_trips_and_a_torn_one_is_refused() {
        let es = vec![entry(3), entry(9)];
        let bytes = encode(&[7; 32], &es);
        assert_eq!(decode(&bytes), Some(([7; 32], es.clone())));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[60] ^= 1;
        assert_eq!(decode(&bad), None);
        // The erased frame decodes as erased, and targets both itself and the original.
        let f = es[0].frame();
        let d = codec::decode_frame(&f).unwrap();
        assert!(matches!(d.frame, codec::Frame::Event(p) if p.erased && p.salt_and_body.is_none()));
        assert!(es[0].targets(&f));
        assert!(!entry(4).targets(&f));
    }
}
