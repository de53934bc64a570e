//! The files of a log directory: segment names, reading frames from segment files, the frame
//! scanner shared by the writer's recovery, readers and the verifier, and the writer's lock
//! (whether a log is live). Every frame read here is decoded by [`codec::decode_frame`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{self, EventParts, FRAME_HEADER_LEN, Frame, SEGMENT_HEADER_LEN};
use crate::error::{FrameError, LogError};
use crate::hash;

pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// Name of the sequence-number index file in a log directory (a cache; see `FORMAT.md`).
pub const INDEX_FILE: &str = "index";
/// Name of the file whose exclusive `flock` the one writer holds (see [`is_live`]).
pub const LOCK_FILE: &str = "LOCK";

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

/// Reads a segment file from `offset` to its end.
pub(crate) fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, LogError> {
    let mut f =
        File::open(path).map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| LogError::io(format!("seeking {}", path.display()), e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
    Ok(buf)
}

/// Reads and checks a segment header: returns `(log_id, first_seq)`.
pub(crate) fn read_header(path: &Path) -> Result<([u8; 32], u64), LogError> {
    let mut f =
        File::open(path).map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    f.read_exact(&mut h)
        .map_err(|e| LogError::io(format!("reading the header of {}", path.display()), e))?;
    codec::decode_segment_header(&h)
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
    /// Offset of the end of the file.
    pub(crate) end: u64,
    /// Offset of a whole, valid checkpoint beyond `bad` that is itself followed by another
    /// frame: proof that `bad` lies in committed data (corruption), not in a torn write.
    pub(crate) checkpoint_beyond_bad: Option<u64>,
}

/// Scans frames in `buf`, which holds a segment's bytes from file offset `base`.
pub(crate) fn scan(buf: &[u8], base: u64) -> TailScan {
    let mut t = TailScan {
        end: base + buf.len() as u64,
        ..Default::default()
    };
    let mut pos = 0usize;
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut last_event: Option<(u64, [u8; 32])> = None;
    while pos < buf.len() {
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
                // Torn write or corruption? The writer issues one write per batch (its events
                // and their checkpoint) and starts the next only after fdatasync returns, so at
                // most one batch is ever unsynced, and a power cut may persist any subset of
                // its pages. Damage is therefore corruption of committed data only if a valid
                // checkpoint follows it *and* another frame follows that checkpoint: that later
                // frame was written after the checkpoint's batch was synced.
                let mut p = pos + 1;
                while p + FRAME_HEADER_LEN <= buf.len() {
                    if let Ok(d) = codec::decode_frame(&buf[p..])
                        && let Frame::Checkpoint { .. } = d.frame
                    {
                        // Any frame that checks out (length and CRC) counts as "another frame".
                        if codec::read_frame(&buf[p + d.total_len..]).is_ok() {
                            t.checkpoint_beyond_bad = Some(base + p as u64);
                            break;
                        }
                        p += d.total_len;
                        continue;
                    }
                    p += 1;
                }
                break;
            }
        }
    }
    t.events_after_checkpoint = pending.len() as u64;
    t
}
