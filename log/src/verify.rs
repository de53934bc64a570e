//! Verification of a log directory or of an exported bundle.
//!
//! Checked: every frame (length, CRC32C, encoding), every sequence number, every chain link,
//! every body present against its commitment, every checkpoint's size and head against the
//! chain, the signature of the last checkpoint (which covers everything before it through the
//! chain; every checkpoint's signature with `all_signatures`), and that the last checkpoint
//! covers the whole log. A trusted checkpoint kept by an auditor proves the log extends it.
//! Verification never trusts the index and never re-encodes: it hashes the stored bytes.

use std::fmt;
use std::path::Path;

use crate::checkpoint::{SignedCheckpoint, VerifiedCheckpoint};
use crate::codec::{self, BodyClass, FRAME_CHECKPOINT, Frame, MAX_BATCH_BYTES, SEGMENT_HEADER_LEN};
use crate::erase;
use crate::error::{FrameError, LogError};
use crate::hash;
use crate::keys::PublicKey;
use crate::segment::{self, is_live};

/// What to check beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Check the signature of every checkpoint, not only the last.
    pub all_signatures: bool,
    /// A checkpoint kept earlier: the log must extend it.
    pub trusted: Option<SignedCheckpoint>,
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The log's identity, from its first segment header (or the bundle header).
    pub log_id: [u8; 32],
    /// First event verified (non-zero only for bundles).
    pub from: u64,
    /// Events `from..events` were verified.
    pub events: u64,
    /// Hash of the last event verified (the genesis hash for an empty log).
    pub head: [u8; 32],
    /// The last checkpoint, whose signature was checked.
    pub checkpoint: VerifiedCheckpoint,
    /// Checkpoints checked against the chain.
    pub checkpoints: u64,
    /// Checkpoint signatures checked (one, or every one with `all_signatures`).
    pub signatures_checked: u64,
    /// Bodies left out (bundles).
    pub redacted_bodies: u64,
    /// Secret-bearing bodies erased in place (`Log::erase`; logs only): their envelopes are
    /// in the chain, their commitments can no longer be checked.
    pub erased_bodies: u64,
    /// Bytes after the last checkpoint of a log that a writer holds open: an append in flight,
    /// not covered yet and not verified.
    pub pending_bytes: u64,
    /// The trusted checkpoint that the log was shown to extend.
    pub extends_trusted: Option<u64>,
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A file could not be listed or read (the message says which and why).
    Io(String),
    /// A record that does not parse (damaged length, CRC, encoding).
    Frame(FrameError),
    /// The files or records are not arranged as a log or bundle must be (the message says
    /// how: a segment that does not open or end with a checkpoint, a misplaced checkpoint,
    /// a bad header).
    Structure(String),
    /// A segment or checkpoint of another log (its identity differs).
    WrongLog,
    /// An event with the wrong sequence number: deleted, duplicated or reordered events.
    Sequence {
        /// The sequence number that belongs there.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// An event whose previous-hash is not the hash of the event before it.
    ChainBroken,
    /// A body that does not match its envelope's commitment.
    BodyMismatch,
    /// An event timestamp earlier than its predecessor's.
    TimeWentBackwards,
    /// An export that carries a secret-bearing body (exports must leave them out).
    SecretBodyPresent,
    /// A checkpoint whose size, head or time disagrees with the chain (the message says which).
    CheckpointMismatch(String),
    /// A checkpoint signature that does not verify.
    BadSignature {
        /// Events before this one are covered by a valid signature.
        covered_by_valid: u64,
    },
    /// Events after the last checkpoint, in a log no writer holds open.
    NotCovered,
    /// A bundle that names a different public key than the one given.
    WrongKey,
    /// The trusted checkpoint given does not verify, belongs elsewhere or is not extended.
    TrustedCheckpoint(String),
    /// The log is shorter than the trusted checkpoint: cut back to an older state.
    Rollback {
        /// Events in the log.
        log_size: u64,
        /// Events the trusted checkpoint covers.
        trusted_size: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "I/O error: {e}"),
            Failure::Frame(e) => write!(f, "damaged record: {e}"),
            Failure::Structure(s) => write!(f, "{s}"),
            Failure::WrongLog => write!(f, "belongs to another log (log identity differs)"),
            Failure::Sequence { expected, found } => {
                write!(
                    f,
                    "sequence number {found} where {expected} was expected (event deleted, duplicated or reordered)"
                )
            }
            Failure::ChainBroken => write!(
                f,
                "chain broken: its previous-hash does not match the event before it"
            ),
            Failure::BodyMismatch => write!(f, "body does not match its commitment"),
            Failure::TimeWentBackwards => write!(f, "timestamp earlier than the event before it"),
            Failure::SecretBodyPresent => {
                write!(f, "a secret-bearing body is present in an export")
            }
            Failure::CheckpointMismatch(s) => write!(f, "checkpoint does not match the chain: {s}"),
            Failure::BadSignature { covered_by_valid } => write!(
                f,
                "invalid checkpoint signature: history rewritten after signing; events before {covered_by_valid} are covered by a valid signature, this one is not"
            ),
            Failure::NotCovered => write!(
                f,
                "not covered by any checkpoint (appended without the log key, or left by a crash not yet recovered)"
            ),
            Failure::WrongKey => write!(f, "signed by a different key than the one given"),
            Failure::TrustedCheckpoint(s) => write!(f, "trusted checkpoint: {s}"),
            Failure::Rollback {
                log_size,
                trusted_size,
            } => write!(
                f,
                "rollback: the log holds {log_size} events but the trusted checkpoint covers {trusted_size}"
            ),
        }
    }
}

/// A verification failure: the first bad event (when one can be named), where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The first bad event, when one can be named.
    pub seq: Option<u64>,
    /// `file@offset` of the bad record, when known.
    pub location: Option<String>,
    /// What is wrong.
    pub failure: Failure,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(s) => write!(f, "event {s}")?,
            None => write!(f, "log")?,
        }
        if let Some(l) = &self.location {
            write!(f, " ({l})")?;
        }
        write!(f, ": {}", self.failure)
    }
}

impl std::error::Error for VerifyError {}

fn fail(seq: Option<u64>, location: Option<String>, failure: Failure) -> VerifyError {
    VerifyError {
        seq,
        location,
        failure,
    }
}

/// Where a record lies: rendered only when a failure is reported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loc<'a> {
    pub(crate) name: &'a str,
    pub(crate) offset: usize,
}

impl Loc<'_> {
    fn render(self) -> Option<String> {
        Some(format!("{}@{}", self.name, self.offset))
    }
}

/// What can be computed for one frame independently of every other frame (CRC, decoding,
/// both hashes): done in parallel before the sequential chain walk.
enum Pre {
    Event {
        envelope: codec::Envelope,
        hash: [u8; 32],
        /// `None` if the body was left out or erased, else whether it matches its commitment.
        body_ok: Option<bool>,
        /// The body was erased in place.
        erased: bool,
    },
    Checkpoint(SignedCheckpoint),
    Bad(FrameError),
}

fn precompute(frame: &[u8]) -> Pre {
    match codec::decode_frame(frame) {
        Ok(d) => match d.frame {
            Frame::Event(p) => Pre::Event {
                envelope: p.envelope,
                hash: hash::event_hash(p.envelope_bytes),
                body_ok: p.salt_and_body.map(|(salt, body)| {
                    hash::ct_eq(&hash::commit_body(salt, body), &p.envelope.commitment)
                }),
                erased: p.erased,
            },
            Frame::Checkpoint { body, signature } => {
                Pre::Checkpoint(SignedCheckpoint { body, signature })
            }
        },
        Err(e) => Pre::Bad(e),
    }
}

/// Below this many frames, splitting the work across threads costs more than it saves.
const PARALLEL_MIN_FRAMES: usize = 2048;

fn precompute_all(buf: &[u8], bounds: &[std::ops::Range<usize>]) -> Vec<Pre> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || bounds.len() < PARALLEL_MIN_FRAMES {
        return bounds.iter().map(|r| precompute(&buf[r.clone()])).collect();
    }
    let chunk = bounds.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|r| precompute(&buf[r.clone()]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verification worker panicked"))
            .collect()
    })
}

/// The chain-checking state machine shared by log and bundle verification.
pub(crate) struct Chain<'k> {
    key: &'k PublicKey,
    opts: &'k VerifyOptions,
    pub(crate) log_id: [u8; 32],
    pub(crate) from: u64,
    pub(crate) next_seq: u64,
    /// `None` until known (a bundle that starts mid-log learns it from its first event).
    pub(crate) head: Option<[u8; 32]>,
    last_time: u64,
    /// Every checkpoint seen, with where it lies.
    pub(crate) checkpoints: Vec<(SignedCheckpoint, Option<String>)>,
    /// Size covered by the last checkpoint.
    pub(crate) covered: u64,
    pub(crate) redacted: u64,
    pub(crate) erased: u64,
    pub(crate) sigs: u64,
    trusted_ok: Option<u64>,
    pub(crate) is_bundle: bool,
}

impl<'k> Chain<'k> {
    pub(crate) fn new(
        key: &'k PublicKey,
        opts: &'k VerifyOptions,
        log_id: [u8; 32],
        from: u64,
        is_bundle: bool,
    ) -> Result<Self, VerifyError> {
        let head = (from == 0).then(|| hash::genesis(&log_id));
        let mut c = Chain {
            key,
            opts,
            log_id,
            from,
            next_seq: from,
            head,
            last_time: 0,
            checkpoints: Vec::new(),
            covered: from,
            redacted: 0,
            erased: 0,
            sigs: 0,
            trusted_ok: None,
            is_bundle,
        };
        if let Some(t) = &opts.trusted {
            let tf = |s: &str| fail(None, None, Failure::TrustedCheckpoint(s.to_string()));
            t.verify(key)
                .map_err(|_| tf("its signature does not verify with this key"))?;
            if t.body.log_id != log_id {
                return Err(tf("it belongs to another log"));
            }
            if t.body.size < from {
                return Err(tf(&format!(
                    "it covers {} events, before this bundle starts at event {from}; export from {} or earlier to check it",
                    t.body.size,
                    t.body.size.saturating_sub(1)
                )));
            }
            c.check_trusted(None)?;
        }
        Ok(c)
    }

    fn check_trusted(&mut self, first_prev: Option<[u8; 32]>) -> Result<(), VerifyError> {
        let Some(t) = &self.opts.trusted else {
            return Ok(());
        };
        if self.trusted_ok.is_some() || t.body.size != self.next_seq {
            return Ok(());
        }
        // The head at size `next_seq` is `head`, or, for a bundle's first event, its prev.
        let head = self.head.or(first_prev);
        if let Some(h) = head {
            if !hash::ct_eq(&h, &t.body.head) {
                return Err(fail(
                    t.body.size.checked_sub(1),
                    None,
                    Failure::TrustedCheckpoint("the log does not extend it: a different history at its size (fork or rewrite)".into()),
                ));
            }
            self.trusted_ok = Some(t.body.size);
        }
        Ok(())
    }

    fn event(
        &mut self,
        env: &codec::Envelope,
        ev_hash: [u8; 32],
        body_ok: Option<bool>,
        erased: bool,
        loc: Loc<'_>,
    ) -> Result<(), VerifyError> {
        let seq = self.next_seq;
        let bad = |f: Failure| fail(Some(seq), loc.render(), f);
        if env.seq != seq {
            return Err(bad(Failure::Sequence {
                expected: seq,
                found: env.seq,
            }));
        }
        if seq == self.from && self.head.is_none() {
            self.check_trusted(Some(env.prev))?;
        }
        if let Some(h) = &self.head
            && !hash::ct_eq(h, &env.prev)
        {
            return Err(bad(Failure::ChainBroken));
        }
        if env.time_ms < self.last_time {
            return Err(bad(Failure::TimeWentBackwards));
        }
        match body_ok {
            Some(ok) => {
                if self.is_bundle && env.body_class() == BodyClass::Secret {
                    return Err(bad(Failure::SecretBodyPresent));
                }
                if !ok {
                    return Err(bad(Failure::BodyMismatch));
                }
            }
            // Erased in place: only in a log (an export leaves the body out instead), and
            // only a secret-bearing body (the decoder refuses anything else).
            None if erased => {
                if self.is_bundle {
                    return Err(bad(Failure::Frame(FrameError::BadErasure(
                        "an export leaves bodies out instead",
                    ))));
                }
                self.erased += 1;
            }
            None => {
                if !self.is_bundle {
                    return Err(bad(Failure::Frame(FrameError::BadRedaction)));
                }
                self.redacted += 1;
            }
        }
        self.last_time = env.time_ms;
        self.head = Some(ev_hash);
        // A sequence number at the end of u64 cannot be followed: reject rather than wrap.
        self.next_seq = self.next_seq.checked_add(1).ok_or_else(|| {
            fail(
                Some(seq),
                loc.render(),
                Failure::Structure("sequence number overflow".into()),
            )
        })?;
        self.check_trusted(None)
    }

    fn checkpoint(&mut self, cp: SignedCheckpoint, loc: Loc<'_>) -> Result<(), VerifyError> {
        let at = self.next_seq.checked_sub(1);
        if self.head.is_none() {
            // A bundle starting after event 0 knows no head before its first event, so a
            // checkpoint there could not be checked against the chain: none belongs there.
            return Err(fail(
                at,
                loc.render(),
                Failure::Structure("checkpoint before the bundle's first event".into()),
            ));
        }
        let mism = |s: String| fail(at, loc.render(), Failure::CheckpointMismatch(s));
        if cp.body.log_id != self.log_id {
            return Err(fail(at, loc.render(), Failure::WrongLog));
        }
        if cp.body.size != self.next_seq {
            return Err(mism(format!(
                "it covers {} events, the chain has {}",
                cp.body.size, self.next_seq
            )));
        }
        if let Some(h) = &self.head
            && !hash::ct_eq(h, &cp.body.head)
        {
            return Err(mism("its head is not the hash of the last event".into()));
        }
        if cp.body.time_ms < self.last_time {
            return Err(mism("its time is earlier than the events it covers".into()));
        }
        let where_ = loc.render();
        if self.opts.all_signatures {
            self.sig(&cp, where_.clone())?;
        }
        self.covered = cp.body.size;
        self.checkpoints.push((cp, where_));
        Ok(())
    }

    fn sig(
        &mut self,
        cp: &SignedCheckpoint,
        loc: Option<String>,
    ) -> Result<VerifiedCheckpoint, VerifyError> {
        self.sigs += 1;
        cp.verify(self.key).map_err(|_| {
            let valid_before = self
                .checkpoints
                .iter()
                .rev()
                .find(|(c, _)| c.body.size < cp.body.size && c.verify(self.key).is_ok())
                .map_or(self.from, |(c, _)| c.body.size);
            fail(
                Some(valid_before),
                loc,
                Failure::BadSignature {
                    covered_by_valid: valid_before,
                },
            )
        })
    }

    /// Ends verification: the last checkpoint must cover everything and carry a valid
    /// signature. If it does not, every checkpoint is checked to name the first event that no
    /// valid signature covers.
    pub(crate) fn finish(mut self, pending_bytes: u64) -> Result<VerifyReport, VerifyError> {
        let Some((last, loc)) = self.checkpoints.last().cloned() else {
            return Err(fail(
                None,
                None,
                Failure::Structure("no checkpoint at all".into()),
            ));
        };
        if self.covered != self.next_seq {
            return Err(fail(Some(self.covered), None, Failure::NotCovered));
        }
        let verified = match self.sig(&last, loc) {
            Ok(v) => v,
            Err(e) => {
                // Name the first event not covered by a valid signature.
                let cps = std::mem::take(&mut self.checkpoints);
                let mut valid = self.from;
                for (cp, l) in &cps {
                    if cp.verify(self.key).is_err() {
                        return Err(fail(
                            Some(valid),
                            l.clone(),
                            Failure::BadSignature {
                                covered_by_valid: valid,
                            },
                        ));
                    }
                    valid = cp.body.size;
                }
                return Err(e);
            }
        };
        if let Some(t) = &self.opts.trusted
            && self.trusted_ok.is_none()
        {
            return Err(fail(
                None,
                None,
                Failure::Rollback {
                    log_size: self.next_seq,
                    trusted_size: t.body.size,
                },
            ));
        }
        Ok(VerifyReport {
            log_id: self.log_id,
            from: self.from,
            events: self.next_seq,
            head: self.head.unwrap_or(last.body.head),
            checkpoint: verified,
            checkpoints: self.checkpoints.len() as u64,
            signatures_checked: self.sigs,
            redacted_bodies: self.redacted,
            erased_bodies: self.erased,
            pending_bytes,
            extends_trusted: self.trusted_ok,
        })
    }

    /// Feeds every frame in `buf` (the bytes of one file from offset `base`). Returns the
    /// offset where parsing stopped and why, if a frame did not parse; chain failures are
    /// errors.
    pub(crate) fn frames(
        &mut self,
        buf: &[u8],
        base: usize,
        name: &str,
    ) -> Result<Option<(usize, FrameError)>, VerifyError> {
        Ok(self.frames_until(buf, base, name, buf.len())?.stop)
    }

    /// As [`frames`](Self::frames) for frames that start before `data_len`: where a frame
    /// would start at or after it, the data has ended (a pre-zeroed segment's zero tail; a
    /// frame may still run into those zeros).
    fn frames_until(
        &mut self,
        buf: &[u8],
        base: usize,
        name: &str,
        data_len: usize,
    ) -> Result<Frames, VerifyError> {
        // Frame boundaries come from the length fields alone; a damaged length shows up as a
        // CRC failure of that frame in the next step, which is what gets reported.
        let mut bounds = Vec::new();
        let mut pos = 0;
        let mut stop = None;
        while pos < data_len {
            match codec::frame_extent(&buf[pos..]) {
                Ok(n) => {
                    bounds.push(pos..pos + n);
                    pos += n;
                }
                Err(e) => {
                    stop = Some((base + pos, e));
                    break;
                }
            }
        }
        let pre = precompute_all(buf, &bounds);
        let mut out = Frames {
            stop: None,
            end: base,
            last_checkpoint_end: None,
        };
        for (r, p) in bounds.iter().zip(pre) {
            let loc = Loc {
                name,
                offset: base + r.start,
            };
            match p {
                Pre::Bad(e) => {
                    out.stop = Some((loc.offset, e));
                    return Ok(out);
                }
                Pre::Event {
                    envelope,
                    hash,
                    body_ok,
                    erased,
                } => self.event(&envelope, hash, body_ok, erased, loc)?,
                Pre::Checkpoint(cp) => {
                    self.checkpoint(cp, loc)?;
                    out.last_checkpoint_end = Some(base + r.end);
                }
            }
            out.end = base + r.end;
        }
        out.stop = stop;
        Ok(out)
    }
}

/// What [`Chain::frames_until`] parsed.
struct Frames {
    /// Where parsing stopped and why, if a frame did not parse.
    stop: Option<(usize, FrameError)>,
    /// The offset just past the last frame that parsed.
    end: usize,
    /// The offset just past the last checkpoint frame.
    last_checkpoint_end: Option<usize>,
}

/// Verifies the log in `dir` with `key`. A log that a writer holds open may have an append in
/// flight after its last checkpoint: that tail is reported as pending, not verified. With no
/// writer, everything must be covered.
pub fn verify_log(
    dir: &Path,
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    verify_log_with_progress(dir, key, opts, &mut |_, _| {})
}

/// As [`verify_log`], calling `progress(bytes_done, bytes_total)` after each segment.
pub fn verify_log_with_progress(
    dir: &Path,
    key: &PublicKey,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, VerifyError> {
    let io = |e: LogError| fail(None, None, Failure::Io(e.to_string()));
    let live = is_live(dir);
    let segments = segment::list_segments(dir).map_err(io)?;
    if segments.is_empty() {
        return Err(io(LogError::NotFound(dir.to_path_buf())));
    }
    let (log_id, _) = segment::read_header(&segments[0].path)
        .map_err(|e| fail(Some(0), None, Failure::Structure(e.to_string())))?;
    let mut chain = Chain::new(key, opts, log_id, 0, false)?;
    let mut pending = 0u64;
    let total: u64 = segments
        .iter()
        .map(|s| std::fs::metadata(&s.path).map_or(0, |m| m.len()))
        .sum();
    let mut done = 0u64;
    progress(0, total);
    for (i, seg) in segments.iter().enumerate() {
        let name = seg
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut bytes = std::fs::read(&seg.path)
            .map_err(|e| fail(None, None, Failure::Io(format!("reading {name}: {e}"))))?;
        // An erasure under way (or interrupted, until the writer's next open finishes it)
        // is read as done: its journal holds the frames being written. Read after the
        // segment, so an overwrite that was in progress during the read is covered.
        erase::apply_pending(dir, seg.first_seq, &mut bytes);
        done += bytes.len() as u64;
        progress(done.min(total), total);
        let last = i + 1 == segments.len();
        if let Some(p) =
            check_segment(&mut chain, &name, seg.first_seq, &bytes, last && live)?.pending
        {
            pending = p;
            break;
        }
        if !last && chain.covered != chain.next_seq {
            return Err(fail(
                Some(chain.covered),
                Some(name),
                Failure::Structure("segment does not end with a checkpoint".into()),
            ));
        }
    }
    chain.finish(pending)
}

/// Checks one segment's bytes (`name` is its file name, `named_first` the first sequence
/// number the name gives) against the chain so far. With `live_tail` (the last segment of a
/// log a writer holds open) damage or events after the last checkpoint are an append in
/// flight: returns `pending: Some(bytes)` and leaves the chain at that checkpoint. Whether the
/// segment must end with a checkpoint is the caller's to check (`chain.covered`).
fn check_segment(
    chain: &mut Chain<'_>,
    name: &str,
    named_first: u64,
    bytes: &[u8],
    live_tail: bool,
) -> Result<Checked, VerifyError> {
    let at = Some(chain.next_seq);
    let header = codec::segment_header(bytes).map_err(|e| {
        fail(
            at,
            Some(format!("{name}@0")),
            Failure::Structure(format!("segment header: {e}")),
        )
    })?;
    let (lid, first) = (header.log_id, header.first_seq);
    if lid != chain.log_id {
        return Err(fail(at, Some(format!("{name}@0")), Failure::WrongLog));
    }
    if first != chain.next_seq || named_first != first {
        return Err(fail(
            at,
            Some(format!("{name}@0")),
            Failure::Structure(format!(
                "segment starts at event {first}, expected {}",
                chain.next_seq
            )),
        ));
    }
    // Every segment opens with a checkpoint (the genesis one, or a copy of the one that
    // ended the previous segment), written and synced before any event.
    if codec::read_frame(&bytes[SEGMENT_HEADER_LEN..])
        .map(|f| f.frame_type)
        .ok()
        != Some(FRAME_CHECKPOINT)
        && !live_tail
    {
        return Err(fail(
            at,
            Some(format!("{name}@{SEGMENT_HEADER_LEN}")),
            Failure::Structure("segment does not open with a checkpoint".into()),
        ));
    }
    // A version-1 segment's data ends at the end of the file; a version-2 one's where the
    // zeros begin (every byte from there to the end of the file zero).
    let data_len = if header.prezeroed() {
        segment::nonzero_len(bytes).max(SEGMENT_HEADER_LEN)
    } else {
        bytes.len()
    };
    let covered_before = chain.covered;
    let f = chain.frames_until(
        &bytes[SEGMENT_HEADER_LEN..],
        SEGMENT_HEADER_LEN,
        name,
        data_len - SEGMENT_HEADER_LEN,
    )?;
    let data_len_parsed = f.end as u64;
    if let Some((off, e)) = f.stop {
        // A writer may be mid-append, but only at the very end: damage followed by a
        // valid checkpoint that another frame follows lies in synced data, and so do
        // nonzero bytes farther past the last checkpoint than one batch reaches.
        let damaged_committed =
            segment::checkpoint_beyond(&bytes[off..], 1, data_len - off).is_some();
        let cp_end = f.last_checkpoint_end.unwrap_or(SEGMENT_HEADER_LEN);
        let far = header
            .prezeroed()
            .then(|| segment::first_nonzero(&bytes[..data_len], cp_end + MAX_BATCH_BYTES))
            .flatten();
        if live_tail && !damaged_committed && far.is_none() {
            // Events after the last checkpoint belong to the in-flight batch.
            chain.next_seq = chain.covered.max(covered_before);
            chain.head = chain
                .checkpoints
                .last()
                .map(|(c, _)| c.body.head)
                .or(chain.head);
            return Ok(Checked {
                pending: Some((data_len - off) as u64),
                data_len: data_len_parsed,
            });
        }
        if let Some(x) = far {
            return Err(fail(
                Some(chain.next_seq),
                Some(format!("{name}@{x}")),
                Failure::Structure(format!(
                    "nonzero bytes in the zero tail of a pre-zeroed segment, {} bytes past the last checkpoint (offset {cp_end}): farther than a write in flight reaches",
                    x - cp_end
                )),
            ));
        }
        if header.prezeroed() && bytes.get(off..off + 4) == Some(&[0; 4]) {
            return Err(fail(
                Some(chain.next_seq),
                Some(format!("{name}@{off}")),
                Failure::Structure(format!(
                    "the data of a pre-zeroed segment ends at offset {off}, but nonzero bytes follow up to offset {data_len}"
                )),
            ));
        }
        return Err(fail(
            Some(chain.next_seq),
            Some(format!("{name}@{off}")),
            Failure::Frame(e),
        ));
    }
    if chain.covered != chain.next_seq && live_tail {
        chain.next_seq = chain.covered;
        chain.head = chain
            .checkpoints
            .last()
            .map(|(c, _)| c.body.head)
            .or(chain.head);
        return Ok(Checked {
            pending: Some(0),
            data_len: data_len_parsed,
        });
    }
    Ok(Checked {
        pending: None,
        data_len: data_len_parsed,
    })
}

/// What [`check_segment`] found.
struct Checked {
    /// Bytes of an append in flight (a live log's last segment), if there were any.
    pending: Option<u64>,
    /// Where the segment's frames end: its length for version 1, the start of its zero tail
    /// for version 2.
    data_len: u64,
}

/// Verifies a log handed over one segment at a time, in order, from somewhere other than a
/// log directory (a backup being written or restored). As strict as [`verify_log`] on a log
/// no writer holds open, and stricter at the end: every segment must open and end with a
/// checkpoint, so the log handed over is exactly a prefix of a log ending at a signed
/// checkpoint. Memory: one segment at a time, the caller's.
pub struct SegmentVerifier<'k> {
    key: &'k PublicKey,
    opts: &'k VerifyOptions,
    chain: Option<Chain<'k>>,
    data_len: Option<u64>,
}

impl fmt::Debug for SegmentVerifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentVerifier")
            .field("next_seq", &self.chain.as_ref().map(|c| c.next_seq))
            .finish_non_exhaustive()
    }
}

impl<'k> SegmentVerifier<'k> {
    /// A verifier for a log signed with `key`, checked with `opts`.
    pub fn new(key: &'k PublicKey, opts: &'k VerifyOptions) -> Self {
        Self {
            key,
            opts,
            chain: None,
            data_len: None,
        }
    }

    /// How many bytes of the segment last checked ([`segment`](Self::segment)) hold its
    /// frames: all of a version-1 segment, a version-2 (pre-zeroed) one up to its zero tail.
    /// A copy needs only these: a pre-zeroed segment cut at the end of its data is still a
    /// whole segment (its data then ends at the end of the file).
    pub fn data_len(&self) -> Option<u64> {
        self.data_len
    }

    /// Checks the next segment: `name` is its file name (`NNNNNNNNNNNNNNNNNNNN.seg`, the first
    /// sequence number it holds), `bytes` all of it.
    pub fn segment(&mut self, name: &str, bytes: &[u8]) -> Result<(), VerifyError> {
        let bad_name = || {
            fail(
                self.chain.as_ref().map_or(Some(0), |c| Some(c.next_seq)),
                Some(name.to_string()),
                Failure::Structure("not a segment file name".into()),
            )
        };
        let named_first = segment::parse_segment_name(name).ok_or_else(bad_name)?;
        let chain = match &mut self.chain {
            Some(c) => c,
            None => {
                let (log_id, _) = codec::decode_segment_header(bytes).map_err(|e| {
                    fail(
                        Some(0),
                        Some(format!("{name}@0")),
                        Failure::Structure(format!("segment header: {e}")),
                    )
                })?;
                self.chain
                    .insert(Chain::new(self.key, self.opts, log_id, 0, false)?)
            }
        };
        self.data_len = None;
        let checked = check_segment(chain, name, named_first, bytes, false)?;
        if chain.covered != chain.next_seq {
            return Err(fail(
                Some(chain.covered),
                Some(name.to_string()),
                Failure::Structure("segment does not end with a checkpoint".into()),
            ));
        }
        self.data_len = Some(checked.data_len);
        Ok(())
    }

    /// Ends verification: the last checkpoint's signature (every one's with
    /// `all_signatures`), and the trusted checkpoint if one was given.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        match self.chain {
            Some(c) => c.finish(0),
            None => Err(fail(
                None,
                None,
                Failure::Structure("no segment at all".into()),
            )),
        }
    }
}
