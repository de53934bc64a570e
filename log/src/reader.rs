//! Reading a log: random access by sequence number through the index, and sequential
//! iteration from any sequence number. Readers see the log up to its last checkpoint, so
//! they work on a log the daemon is writing (an in-flight batch is simply not visible yet).
//! Where that is in a pre-zeroed segment is found from the frames, never from the file's
//! length, which appends into preallocated space do not change.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{
    self, BodyClass, Envelope, EventParts, FRAME_HEADER_LEN, Frame, SEGMENT_HEADER_LEN,
};
use crate::error::LogError;
use crate::hash;
use crate::index;
use crate::keys::PublicKey;
use crate::layout::{self, Layout};
use crate::segment::{self, Reach};

/// An event body as stored. May hold (sealed) secret material: no `Debug` of its bytes, and
/// zeroized when dropped.
pub struct Body {
    /// The salt committed with a secret-bearing body (32 bytes); empty for a public body.
    pub salt: Vec<u8>,
    /// The body's bytes, opaque to the log (the caller's encoding).
    pub bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.bytes.len())
    }
}

/// One event read from the log.
#[derive(Debug)]
pub struct Record {
    /// The decoded envelope: sequence number, time, kind, class, chain link, commitment.
    pub envelope: Envelope,
    /// The stored envelope bytes (what the chain hashes).
    pub envelope_bytes: Vec<u8>,
    /// `event_hash(envelope_bytes)`.
    pub hash: [u8; 32],
    /// `None` only for secret-bearing bodies: left out (exports) or erased (see `erased`).
    pub body: Option<Body>,
    /// The secret-bearing body was erased in place (`Log::erase`): it is gone for good,
    /// while the envelope, and so the chain, stays.
    pub erased: bool,
}

impl Record {
    /// The event's sequence number.
    pub fn seq(&self) -> u64 {
        self.envelope.seq
    }
    /// Whether the body is public or may carry secret material.
    pub fn class(&self) -> BodyClass {
        self.envelope.body_class()
    }
    /// Whether the stored body matches the envelope's commitment (`None` if left out or
    /// erased).
    pub fn body_matches(&self) -> Option<bool> {
        self.body.as_ref().map(|b| {
            hash::ct_eq(
                &hash::commit_body(&b.salt, &b.bytes),
                &self.envelope.commitment,
            )
        })
    }

    /// Copies a decoded event frame out of its buffer.
    pub(crate) fn from_parts(p: &EventParts<'_>) -> Self {
        Record {
            envelope: p.envelope,
            envelope_bytes: p.envelope_bytes.to_vec(),
            hash: hash::event_hash(p.envelope_bytes),
            body: p.salt_and_body.map(|(s, b)| Body {
                salt: s.to_vec(),
                bytes: Zeroizing::new(b.to_vec()),
            }),
            erased: p.erased,
        }
    }
}

/// A frame met while iterating.
#[derive(Debug)]
pub enum Item {
    /// An event.
    Event(Record),
    /// A checkpoint between batches (its signature not checked by the reader).
    Checkpoint(SignedCheckpoint),
}

/// A read-only view of a log, up to its last checkpoint when opened (or refreshed).
#[derive(Debug)]
pub struct LogReader {
    layout: Layout,
}

impl LogReader {
    /// Opens the log in `dir` without scanning it when its index is current. With `key`, the
    /// last checkpoint's signature is checked.
    pub fn open(dir: &Path, key: Option<&PublicKey>) -> Result<Self, LogError> {
        Ok(Self {
            layout: layout::load(dir, key, Reach::Whole)?,
        })
    }

    /// Picks up events committed since opening. Returns whether the log grew.
    pub fn refresh(&mut self) -> Result<bool, LogError> {
        let before = self.size();
        self.layout = layout::load(&self.layout.dir.clone(), None, Reach::Committed)?;
        Ok(self.size() > before)
    }

    /// Number of committed events (`0..size`).
    pub fn size(&self) -> u64 {
        self.layout.size()
    }
    /// The log's identity.
    pub fn log_id(&self) -> [u8; 32] {
        self.layout.log_id
    }
    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }
    /// The last checkpoint (signature checked only if a key was given to `open`).
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.layout.checkpoint
    }
    /// The offset just past the last checkpoint in the last of [`segments`](Self::segments):
    /// the committed bytes of that file end there (a later append only adds bytes after it;
    /// every earlier segment is complete). A copy of the log taken while it is written (a
    /// backup) copies exactly this much of the last segment.
    pub fn committed_end(&self) -> u64 {
        self.layout.committed_end
    }
    /// The segment files holding committed events, in order.
    pub fn segments(&self) -> Vec<PathBuf> {
        self.layout
            .segments
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    fn locate(&self, seq: u64) -> Result<(usize, u64), LogError> {
        if seq >= self.size() {
            return Err(LogError::OutOfRange(seq));
        }
        let seg =
            index::segment_for(&self.layout.segments, seq).ok_or(LogError::OutOfRange(seq))?;
        Ok((seg, self.layout.index[seq as usize]))
    }

    /// Random access to one committed event.
    pub fn get(&self, seq: u64) -> Result<Record, LogError> {
        let (seg, off) = self.locate(seq)?;
        let path = &self.layout.segments[seg].path;
        let f =
            File::open(path).map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
        let mut buf = Vec::new();
        let p = segment::read_event_at(&f, off, path, &mut buf)?;
        if p.envelope.seq != seq {
            return Err(LogError::corrupted(
                path,
                off,
                Some(seq),
                format!("found event {} where {seq} belongs", p.envelope.seq),
            ));
        }
        Ok(Record::from_parts(&p))
    }

    /// The first checkpoint at or after event `seq`: the one that signs it.
    pub fn checkpoint_covering(&self, seq: u64) -> Result<SignedCheckpoint, LogError> {
        for item in self.iter_from(seq)? {
            if let Item::Checkpoint(cp) = item? {
                return Ok(cp);
            }
        }
        Err(LogError::Invalid(format!(
            "no checkpoint covers event {seq}"
        )))
    }

    /// Frames (events and checkpoints) from event `seq` to the committed end.
    pub fn iter_from(&self, seq: u64) -> Result<LogIter<'_>, LogError> {
        let (seg, off) = if seq >= self.size() {
            let last = self.layout.segments.len() - 1;
            (last, self.layout.committed_end)
        } else {
            self.locate(seq)?
        };
        Ok(LogIter {
            reader: self,
            seg,
            file: None,
            pos: off,
            buf: Vec::new(),
            last_checkpoint: None,
            done: false,
        })
    }

    /// Committed events from `seq` on.
    pub fn events_from(
        &self,
        seq: u64,
    ) -> Result<impl Iterator<Item = Result<Record, LogError>> + '_, LogError> {
        Ok(self.iter_from(seq)?.filter_map(|i| match i {
            Ok(Item::Event(r)) => Some(Ok(r)),
            Ok(Item::Checkpoint(_)) => None,
            Err(e) => Some(Err(e)),
        }))
    }
}

/// Sequential reader over segments, from [`LogReader::iter_from`]; bounded memory (one frame
/// at a time). Stops after the first error, which names the segment and offset.
#[derive(Debug)]
pub struct LogIter<'a> {
    reader: &'a LogReader,
    seg: usize,
    file: Option<BufReader<File>>,
    pos: u64,
    buf: Vec<u8>,
    /// Size covered by the last frame read, if it was a checkpoint.
    last_checkpoint: Option<u64>,
    done: bool,
}

impl LogIter<'_> {
    fn next_item(&mut self) -> Result<Option<Item>, LogError> {
        let segs = &self.reader.layout.segments;
        loop {
            let last = self.seg + 1 == segs.len();
            let path = &segs[self.seg].path;
            let end = if last {
                Some(self.reader.layout.committed_end)
            } else {
                None
            };
            if end.is_some_and(|e| self.pos >= e) {
                return Ok(None);
            }
            if self.file.is_none() {
                let mut f = File::open(path)
                    .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
                f.seek(SeekFrom::Start(self.pos))
                    .map_err(|e| LogError::io(format!("seeking {}", path.display()), e))?;
                self.file = Some(BufReader::with_capacity(256 * 1024, f));
            }
            let file = self.file.as_mut().expect("opened just above");
            let mut hdr = [0u8; FRAME_HEADER_LEN];
            let got = read_full(file, &mut hdr);
            // A zero length is where a pre-zeroed segment's data ends (no frame is empty), and
            // so are fewer zeros than a frame header at its very end. That is the end of a
            // complete segment only right after the checkpoint that the next segment opens
            // with a copy of; anywhere else it is damage, reported rather than skipped over
            // with events in it.
            if !last
                && let Ok(n) = got
                && n > 0
                && hdr[..n.min(4)].iter().all(|b| *b == 0)
            {
                if self.last_checkpoint == Some(segs[self.seg + 1].first_seq) {
                    self.seg += 1;
                    self.file = None;
                    self.pos = SEGMENT_HEADER_LEN as u64;
                    continue;
                }
                return Err(LogError::corrupted(
                    path,
                    self.pos,
                    None,
                    "zeros where a record should start, before the segment's last checkpoint",
                ));
            }
            match got {
                Ok(0) if !last => {
                    self.seg += 1;
                    self.file = None;
                    self.pos = SEGMENT_HEADER_LEN as u64;
                    continue;
                }
                Ok(n) if n == hdr.len() => {}
                Ok(_) => {
                    return Err(LogError::corrupted(path, self.pos, None, "truncated frame"));
                }
                Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
            }
            let at = self.pos;
            let total = codec::frame_len(&hdr)
                .map_err(|e| LogError::corrupted(path, at, None, e.to_string()))?;
            self.buf.clear();
            self.buf.extend_from_slice(&hdr);
            self.buf.resize(total, 0);
            file.read_exact(&mut self.buf[FRAME_HEADER_LEN..])
                .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
            let d = codec::decode_frame(&self.buf)
                .map_err(|e| LogError::corrupted(path, at, None, e.to_string()))?;
            self.pos += d.total_len as u64;
            return Ok(Some(match d.frame {
                Frame::Event(p) => {
                    self.last_checkpoint = None;
                    Item::Event(Record::from_parts(&p))
                }
                Frame::Checkpoint { body, signature } => {
                    self.last_checkpoint = Some(body.size);
                    Item::Checkpoint(SignedCheckpoint { body, signature })
                }
            }));
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Iterator for LogIter<'_> {
    type Item = Result<Item, LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_item() {
            Ok(Some(i)) => Some(Ok(i)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
