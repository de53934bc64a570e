//! The files of a log directory: segment names, reading frames from segment files, the frame
//! scanner shared by the writer's recovery, readers and the verifier, and the writer's lock
//! (whether a log is live). Every frame read here is decoded by [`codec::decode_frame`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{
    self, EventParts, FRAME_HEADER_LEN, Frame, MAX_FRAME_LEN, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::error::{FrameError, LogError};
use crate::hash;

pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// Name of the sequence-number index file in a log directory (a cache; see `FORMAT.md`).
pub const INDEX_FILE: &str = "index";
/// Name of the file whose exclusive `flock` the one writer holds (see [`is_live`]).
pub const LOCK_FILE: &str = "LOCK";
/// The spare: a file of zeros, synced, that the next segment is made from (see `FORMAT.md`,
/// Segment version 2). Not a segment name, so every reader ignores it.
pub const SPARE_FILE: &str = "segment.spare";
/// The spare while it is being filled; renamed to [`SPARE_FILE`] once filled and synced.
pub const SPARE_TMP_FILE: &str = "segment.spare.tmp";

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// Whether a writer currently holds the log in `dir` open. Readers and the verifier use it to
/// tell an append in flight (bytes after the last checkpoint of a live log) from a log left
/// by a crash.
pub fn is_live(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub(crate) first_seq: u64,
    pub(crate) path: PathBuf,
}

/// Why a frame could not be read from a file.
#[derive(Debug)]
pub(crate) enum ReadFrameError {
    Io(std::io::Error),
    Frame(FrameError),
}

/// Reads the whole frame at `offset` of `file` into `buf` (replacing its contents): the
/// header first, whose declared length [`codec::frame_len`] checks before `buf` grows, then
/// the rest. The frame is not decoded.
pub(crate) fn read_frame_at(
    file: &File,
    offset: u64,
    buf: &mut Vec<u8>,
) -> Result<(), ReadFrameError> {
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut hdr, offset)
        .map_err(ReadFrameError::Io)?;
    let total = codec::frame_len(&hdr).map_err(ReadFrameError::Frame)?;
    buf.clear();
    buf.resize(total, 0);
    file.read_exact_at(buf, offset).map_err(ReadFrameError::Io)
}

/// Reads and decodes the event frame at `offset` of the segment `file` (at `path`, for
/// errors), using `buf` for its bytes.
pub(crate) fn read_event_at<'b>(
    file: &File,
    offset: u64,
    path: &Path,
    buf: &'b mut Vec<u8>,
) -> Result<EventParts<'b>, LogError> {
    let corrupt = |reason: String| LogError::corrupted(path, offset, None, reason);
    read_frame_at(file, offset, buf).map_err(|e| match e {
        ReadFrameError::Io(e) => {
            LogError::io(format!("reading {} at offset {offset}", path.display()), e)
        }
        ReadFrameError::Frame(e) => corrupt(e.to_string()),
    })?;
    match codec::decode_frame(buf) {
        Ok(d) => match d.frame {
            Frame::Event(p) => Ok(p),
            Frame::Checkpoint { .. } => Err(corrupt("expected an event frame".into())),
        },
        Err(FrameError::UnknownFrameType(_)) => Err(corrupt("expected an event frame".into())),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

/// The first sequence number a segment file name (`NNNNNNNNNNNNNNNNNNNN.seg`, 20 digits)
/// gives, or `None` if `name` is not one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Segment files in `dir`, ordered by first sequence number (their names).
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, LogError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LogError::NotFound(dir.to_path_buf())
        } else {
            LogError::io(format!("listing {}", dir.display()), e)
        }
    })?;
    let mut v = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let first_seq = parse_segment_name(name)
            .ok_or_else(|| LogError::Invalid(format!("segment name {name} out of range")))?;
        v.push(SegmentInfo {
            first_seq,
            path: ent.path(),
        });
    }
    v.sort_by_key(|s| s.first_seq);
    Ok(v)
}

/// Bytes read per call while looking for where a pre-zeroed segment's data ends.
const READ_CHUNK: usize = 1 << 20;

/// A segment's bytes from an offset on, as [`read_tail`] found them.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The bytes from the offset through the last nonzero byte, then as many of the zeros
    /// after it as a frame starting before them could still cover (at most one largest
    /// frame): a frame that ends in zero bytes (an erased body, a signature's last byte) is
    /// whole, while the rest of a mostly empty 16 MiB segment is never held in memory.
    pub(crate) buf: Vec<u8>,
    /// Bytes of `buf` before the zero tail: every byte from here to the end of the file is
    /// zero. For a version-1 segment (whose data ends at the end of the file) all of `buf`.
    pub(crate) data_len: usize,
    /// The length of the file.
    pub(crate) file_end: u64,
}

/// The header of the segment file `f`, if it has a valid one.
fn header_of(f: &File) -> Option<SegmentHeader> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    f.read_exact_at(&mut h, 0).ok()?;
    codec::segment_header(&h).ok()
}

/// How far [`read_tail`] reads a pre-zeroed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// To the end of the file, so that every byte of the zero tail is checked: opening the
    /// log for writing, opening a reader, verification.
    Whole,
    /// Until the frames, read from the offset, reach a zero length followed by zeros: enough
    /// to find where the committed data ends. A reader following a live log refreshes after
    /// every batch; reading the rest of a 16 MiB segment each time would cost far more than
    /// the batch. Whatever lies beyond (a torn write after a crash, stray bytes) is past
    /// every checkpoint a reader can see, and the writer's open and verification judge it.
    /// Damage before the zeros falls back to [`Reach::Whole`].
    Committed,
}

/// Bytes read per call when following the frames ([`Reach::Committed`]).
const FOLLOW_CHUNK: usize = 64 << 10;

/// Reads a segment file from `offset` to its end. A version-2 (pre-zeroed) segment is read in
/// chunks and its zero tail left out of memory (see [`Tail`]), as far as `reach` says; any
/// other file, a segment of version 1 or one whose header is damaged, is read whole.
pub(crate) fn read_tail(path: &Path, offset: u64, reach: Reach) -> Result<Tail, LogError> {
    let ctx = |what: &str| {
        let c = format!("{what} {}", path.display());
        move |e| LogError::io(c, e)
    };
    let mut f = File::open(path).map_err(ctx("opening"))?;
    let prezeroed = header_of(&f).is_some_and(|h| h.prezeroed());
    f.seek(SeekFrom::Start(offset)).map_err(ctx("seeking"))?;
    let mut buf = Vec::new();
    if !prezeroed {
        f.read_to_end(&mut buf).map_err(ctx("reading"))?;
        let data_len = buf.len();
        return Ok(Tail {
            buf,
            data_len,
            file_end: offset + data_len as u64,
        });
    }
    if reach == Reach::Committed {
        return follow_frames(path, f, offset);
    }
    // Zeros seen after the last nonzero byte so far, not yet put in `buf`.
    let mut zeros = 0usize;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut read = 0u64;
    loop {
        let n = read_full(&mut f, &mut chunk).map_err(ctx("reading"))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        let c = &chunk[..n];
        match c.iter().rposition(|b| *b != 0) {
            None => zeros += n,
            Some(last) => {
                buf.resize(buf.len() + zeros, 0);
                buf.extend_from_slice(&c[..=last]);
                zeros = n - last - 1;
            }
        }
    }
    let data_len = buf.len();
    buf.resize(
        data_len + zeros.min(FRAME_HEADER_LEN + MAX_FRAME_LEN as usize),
        0,
    );
    Ok(Tail {
        buf,
        data_len,
        file_end: offset + read,
    })
}

/// [`Reach::Committed`]: reads `f` (positioned at `offset`) in small chunks, walking whole
/// frames (length and CRC), and stops where the next frame's place holds a zero length and
/// only zeros follow in what was read.
fn follow_frames(path: &Path, mut f: File, offset: u64) -> Result<Tail, LogError> {
    let mut buf = Vec::new();
    let mut cur = 0usize;
    loop {
        let have = buf.len();
        buf.resize(have + FOLLOW_CHUNK, 0);
        let n = read_full(&mut f, &mut buf[have..])
            .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        buf.truncate(have + n);
        loop {
            let rest = &buf[cur..];
            if rest.len() < FRAME_HEADER_LEN {
                break;
            }
            if rest[..4] == [0; 4] {
                if first_nonzero(rest, 0).is_none() {
                    return Ok(Tail {
                        data_len: cur,
                        file_end: offset + cur as u64,
                        buf,
                    });
                }
                // Zeros, then data: damage, judged with the whole file in view.
                return read_tail(path, offset, Reach::Whole);
            }
            match codec::read_frame(rest) {
                Ok(fr) => cur += fr.total_len,
                Err(FrameError::Truncated) => break,
                Err(_) => return read_tail(path, offset, Reach::Whole),
            }
        }
        if n == 0 {
            // The end of the file with no zero tail (a full segment, or one copied up to its
            // data): as a whole read would find it.
            let data_len = nonzero_len(&buf);
            buf.truncate(
                data_len + (buf.len() - data_len).min(FRAME_HEADER_LEN + MAX_FRAME_LEN as usize),
            );
            return Ok(Tail {
                data_len,
                file_end: offset + have as u64,
                buf,
            });
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The offset just past the last nonzero byte of the file at `path` (0 if every byte is
/// zero), read backwards from its end.
pub(crate) fn nonzero_extent(path: &Path) -> std::io::Result<u64> {
    let f = File::open(path)?;
    let mut end = f.metadata()?.len();
    let mut chunk = vec![0u8; READ_CHUNK];
    while end > 0 {
        let n = end.min(READ_CHUNK as u64) as usize;
        let start = end - n as u64;
        f.read_exact_at(&mut chunk[..n], start)?;
        if let Some(i) = chunk[..n].iter().rposition(|b| *b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The index just past the last nonzero byte of `bytes` (0 if all are zero).
pub(crate) fn nonzero_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// The first nonzero byte of `bytes` at or after `from`, if there is one.
pub(crate) fn first_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|b| *b != 0)
        .map(|i| from + i)
}

/// Reads and checks a segment header: returns `(log_id, first_seq)`.
pub(crate) fn read_header(path: &Path) -> Result<([u8; 32], u64), LogError> {
    read_segment_header(path).map(|h| (h.log_id, h.first_seq))
}

/// Reads and checks a segment header, its version included.
pub(crate) fn read_segment_header(path: &Path) -> Result<SegmentHeader, LogError> {
    let mut f =
        File::open(path).map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    f.read_exact(&mut h)
        .map_err(|e| LogError::io(format!("reading the header of {}", path.display()), e))?;
    codec::segment_header(&h)
        .map_err(|e| LogError::Invalid(format!("segment {}: header: {e}", path.display())))
}

/// What a scan of the end of a segment found.
#[derive(Debug, Default)]
pub(crate) struct TailScan {
    /// The last whole checkpoint frame and the offset just past it.
    pub(crate) last_checkpoint: Option<(SignedCheckpoint, u64)>,
    /// `(seq, hash)` of the last event before that checkpoint, if the scan saw it.
    pub(crate) last_event_before_checkpoint: Option<(u64, [u8; 32])>,
    /// `(seq, offset)` of every event seen up to the last checkpoint.
    pub(crate) events: Vec<(u64, u64)>,
    /// The first frame that did not parse, and why.
    pub(crate) bad: Option<(u64, FrameError)>,
    /// Whole events found after the last checkpoint.
    pub(crate) events_after_checkpoint: u64,
    /// Offset of the end of the data: the end of the file for a version-1 segment, the
    /// start of the zero tail (just past the last nonzero byte) for a version-2 one.
    pub(crate) end: u64,
    /// Offset of a whole, valid checkpoint beyond `bad` that is itself followed by another
    /// frame: proof that `bad` lies in committed data (corruption), not in a torn write.
    pub(crate) checkpoint_beyond_bad: Option<u64>,
}

/// Scans frames in `buf`, which holds a segment's bytes from file offset `base`; the data
/// ends at `data_len` (see [`Tail`]): a frame may extend past it into zeros, but where the
/// next frame would start at or after it, the segment's data has ended. Before it, a zero
/// length is damage like any other frame that does not parse (with nonzero bytes after it:
/// a torn write whose first page did not reach the disk, or corruption).
pub(crate) fn scan(buf: &[u8], base: u64, data_len: usize) -> TailScan {
    let mut t = TailScan {
        end: base + data_len as u64,
        ..Default::default()
    };
    let mut pos = 0usize;
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut last_event: Option<(u64, [u8; 32])> = None;
    while pos < data_len {
        let res = codec::decode_frame(&buf[pos..]).map(|d| match d.frame {
            Frame::Event(p) => (
                d.total_len,
                Some((p.envelope.seq, hash::event_hash(p.envelope_bytes))),
                None,
            ),
            Frame::Checkpoint { body, signature } => (
                d.total_len,
                None,
                Some(SignedCheckpoint { body, signature }),
            ),
        });
        match res {
            Ok((len, ev, cp)) => {
                let off = base + pos as u64;
                if let Some((seq, h)) = ev {
                    pending.push((seq, off));
                    last_event = Some((seq, h));
                }
                pos += len;
                if let Some(cp) = cp {
                    t.events.append(&mut pending);
                    t.last_checkpoint = Some((cp, base + pos as u64));
                    t.last_event_before_checkpoint = last_event;
                }
            }
            Err(e) => {
                t.bad = Some((base + pos as u64, e));
                t.checkpoint_beyond_bad =
                    checkpoint_beyond(buf, pos + 1, data_len).map(|p| base + p as u64);
                break;
            }
        }
    }
    t.events_after_checkpoint = pending.len() as u64;
    t
}

/// Torn write or corruption? The writer issues one write per batch (its events and their
/// checkpoint) and starts the next only after fdatasync returns, so at most one batch is ever
/// unsynced, and a power cut may persist any subset of its pages. Damage is therefore
/// corruption of committed data only if a valid checkpoint follows it *and* another frame
/// follows that checkpoint: that later frame was written after the checkpoint's batch was
/// synced. Returns where such a checkpoint starts, searching `buf[from..]` for frames that
/// start before `data_len`.
pub(crate) fn checkpoint_beyond(buf: &[u8], from: usize, data_len: usize) -> Option<usize> {
    let mut p = from;
    while p < data_len && p + FRAME_HEADER_LEN <= buf.len() {
        if buf[p..p + 4] == [0; 4] {
            // No frame starts at a zero length: jump to the first place whose length field
            // holds a nonzero byte (runs of zeros in a pre-zeroed segment are long).
            match first_nonzero(&buf[..data_len], p) {
                Some(q) => {
                    p = q.saturating_sub(3).max(p + 1);
                    continue;
                }
                None => return None,
            }
        }
        if let Ok(d) = codec::decode_frame(&buf[p..])
            && let Frame::Checkpoint { .. } = d.frame
        {
            // Any frame that checks out (length and CRC) counts as "another frame".
            if codec::read_frame(&buf[p + d.total_len..]).is_ok() {
                return Some(p);
            }
            p += d.total_len;
            continue;
        }
        p += 1;
    }
    None
}
