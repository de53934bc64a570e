//! Segment files and the frame scanner shared by the writer's recovery, readers and the
//! verifier.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{self, FRAME_CHECKPOINT, FRAME_EVENT, SEGMENT_HEADER_LEN};
use crate::error::{FrameError, LogError};
use crate::hash;

pub const SEGMENT_SUFFIX: &str = ".seg";
pub const INDEX_FILE: &str = "index";
pub const LOCK_FILE: &str = "LOCK";

pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Segment files in `dir`, ordered by first sequence number (their names).
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, LogError> {
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
        let first_seq: u64 = stem
            .parse()
            .map_err(|_| LogError::Invalid(format!("segment name {name} out of range")))?;
        v.push(SegmentInfo {
            first_seq,
            path: ent.path(),
        });
    }
    v.sort_by_key(|s| s.first_seq);
    Ok(v)
}

/// Reads a segment file from `offset` to its end.
pub fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, LogError> {
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
pub fn read_header(path: &Path) -> Result<([u8; 32], u64), LogError> {
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
pub struct TailScan {
    /// The last whole checkpoint frame and the offset just past it.
    pub last_checkpoint: Option<(SignedCheckpoint, u64)>,
    /// `(seq, hash)` of the last event before that checkpoint, if the scan saw it.
    pub last_event_before_checkpoint: Option<(u64, [u8; 32])>,
    /// `(seq, offset)` of every event seen up to the last checkpoint.
    pub events: Vec<(u64, u64)>,
    /// The first frame that did not parse, and why.
    pub bad: Option<(u64, FrameError)>,
    /// Whole events found after the last checkpoint.
    pub events_after_checkpoint: u64,
    /// Offset of the end of the file.
    pub end: u64,
    /// Offset of a whole, valid checkpoint beyond `bad` that is itself followed by another
    /// frame: proof that `bad` lies in committed data (corruption), not in a torn write.
    pub checkpoint_beyond_bad: Option<u64>,
}

/// Scans frames in `buf`, which holds a segment's bytes from file offset `base`.
pub fn scan(buf: &[u8], base: u64) -> TailScan {
    let mut t = TailScan {
        end: base + buf.len() as u64,
        ..Default::default()
    };
    let mut pos = 0usize;
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut last_event: Option<(u64, [u8; 32])> = None;
    while pos < buf.len() {
        let res = codec::read_frame(&buf[pos..]).and_then(|f| match f.frame_type {
            FRAME_EVENT => codec::decode_event_payload(f.payload).map(|p| {
                (
                    f.total_len,
                    Some((p.envelope.seq, hash::event_hash(p.envelope_bytes))),
                    None,
                )
            }),
            FRAME_CHECKPOINT => {
                codec::decode_checkpoint_payload(f.payload).map(|(body, signature)| {
                    (
                        f.total_len,
                        None,
                        Some(SignedCheckpoint { body, signature }),
                    )
                })
            }
            other => Err(FrameError::UnknownFrameType(other)),
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
                while p + codec::FRAME_HEADER_LEN <= buf.len() {
                    if let Ok(f) = codec::read_frame(&buf[p..])
                        && f.frame_type == FRAME_CHECKPOINT
                        && codec::decode_checkpoint_payload(f.payload).is_ok()
                    {
                        if codec::read_frame(&buf[p + f.total_len..]).is_ok() {
                            t.checkpoint_beyond_bad = Some(base + p as u64);
                            break;
                        }
                        p += f.total_len;
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
