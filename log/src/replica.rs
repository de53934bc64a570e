//! A second durable home for the log's batches: the seam a hub's PostgreSQL store plugs into.
//!
//! The crate stays free of any database: a [`Replica`] is told each batch (its frames exactly
//! as they go into the segment, events then the batch's signed checkpoint) *before* the
//! batch is written to the local segment, and the batch is acknowledged only once both have
//! it. So the local log is always a prefix of what the replica holds, and the replica is
//! where a lost local directory, or another hub, gets the log back from
//! ([`Log::append_copied`](crate::Log::append_copied), which takes such a batch and checks
//! it continues the chain and carries a valid signature before writing it).
//!
//! [`for_each_batch`] reads a local log back as the same batches, to hand a log that started
//! on local files to a replica.

use std::path::Path;

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{self, Frame, SEGMENT_HEADER_LEN};
use crate::error::LogError;
use crate::hash;
use crate::keys::PublicKey;
use crate::segment;

/// One batch as the writer commits it: the frames of its events followed by its checkpoint's
/// frame (the bytes a segment holds for it), with what a store needs to index and check it.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// The log's identity.
    pub log_id: [u8; 32],
    /// The sequence number of the batch's first event.
    pub first_seq: u64,
    /// The chain's head before the batch (the genesis hash for the first).
    pub prev: [u8; 32],
    /// The batch's checkpoint: its size is one past the last event, its head the last event's
    /// hash.
    pub checkpoint: &'a SignedCheckpoint,
    /// The frames.
    pub frames: &'a [u8],
}

impl std::fmt::Debug for Batch<'_> {
    // The frames hold (sealed) bodies: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("first_seq", &self.first_seq)
            .field("size", &self.checkpoint.body.size)
            .field("bytes", &self.frames.len())
            .finish_non_exhaustive()
    }
}

/// Where batches are made durable before the local segment gets them.
pub trait Replica: Send + Sync + std::fmt::Debug + 'static {
    /// Makes `batch` durable, in order, or says why it cannot: an error poisons the writer (as
    /// a failed fdatasync does), so an implementation retries what may pass (a lost
    /// connection) for as long as it judges right and returns an error only for what will
    /// not (another writer took over, the store holds another chain).
    fn commit(&self, batch: &Batch<'_>) -> Result<(), String>;
}

/// A batch read back from a local log by [`for_each_batch`].
#[derive(Debug)]
pub struct OwnedBatch {
    /// See [`Batch::first_seq`].
    pub first_seq: u64,
    /// See [`Batch::prev`].
    pub prev: [u8; 32],
    /// See [`Batch::checkpoint`].
    pub checkpoint: SignedCheckpoint,
    /// See [`Batch::frames`].
    pub frames: zeroize::Zeroizing<Vec<u8>>,
}

/// Calls `f` with every batch of the log in `dir` whose events start at or after `from` (a
/// batch boundary), in order, up to the last checkpoint. A checkpoint that adds no event (the
/// copy that opens each segment) is not a batch of its own. The caller verifies the log
/// (`verify_log`) first: this only frames what it reads.
pub fn for_each_batch(
    dir: &Path,
    from: u64,
    mut f: impl FnMut(OwnedBatch) -> Result<(), String>,
) -> Result<(), LogError> {
    let corrupt = |path: &Path, offset: usize, reason: String| LogError::Corrupted {
        segment: path.to_path_buf(),
        offset: offset as u64,
        seq: None,
        reason,
    };
    let mut log_id = None;
    let mut prev: Option<[u8; 32]> = None;
    let mut next_seq = 0u64;
    for s in segment::list_segments(dir)? {
        let bytes = zeroize::Zeroizing::new(std::fs::read(&s.path).map_err(|e| LogError::Io {
            context: format!("reading {}", s.path.display()),
            source: e,
        })?);
        let (id, _) = segment::read_header(&s.path)?;
        log_id.get_or_insert(id);
        if prev.is_none() {
            prev = Some(hash::genesis(&id));
        }
        // The data ends where a frame's length would be zero (a pre-zeroed segment's zeros)
        // or at the end of the file; never at the last nonzero byte, since a frame may end
        // in zero bytes (a signature, an erased body: see FORMAT.md).
        let end = bytes.len();
        let mut at = SEGMENT_HEADER_LEN;
        let mut start = at;
        let mut first = next_seq;
        while at < end {
            if bytes[at..].iter().take(4).all(|b| *b == 0) {
                break;
            }
            let d = codec::decode_frame(&bytes[at..end])
                .map_err(|e| corrupt(&s.path, at, e.to_string()))?;
            match d.frame {
                Frame::Event(ev) => {
                    if at == start {
                        first = ev.envelope.seq;
                    }
                    next_seq = ev.envelope.seq + 1;
                }
                Frame::Checkpoint { body, signature } => {
                    let cp = SignedCheckpoint { body, signature };
                    let holds_events = at > start;
                    let batch_end = at + d.total_len;
                    if holds_events {
                        let p = prev.expect("set at the first segment");
                        if first >= from {
                            f(OwnedBatch {
                                first_seq: first,
                                prev: p,
                                checkpoint: cp,
                                frames: zeroize::Zeroizing::new(bytes[start..batch_end].to_vec()),
                            })
                            .map_err(|e| LogError::Io {
                                context: "handing the log's batches over".into(),
                                source: std::io::Error::other(e),
                            })?;
                        }
                    }
                    prev = Some(cp.body.head);
                    start = batch_end;
                }
            }
            at += d.total_len;
        }
    }
    Ok(())
}

/// Checks batches that claim to continue a log, one after another, with nothing but its
/// public key: what [`Log::append_copied`](crate::Log::append_copied) checks before it writes
/// a batch, and what reads a log back from a replica (`log verify --store`).
#[derive(Debug, Clone)]
pub struct BatchVerifier {
    log_id: [u8; 32],
    public: PublicKey,
    next_seq: u64,
    head: [u8; 32],
    last_time: u64,
}

/// What [`BatchVerifier::check`] found in a batch that continues the log.
#[derive(Debug)]
pub struct CheckedBatch {
    /// Its checkpoint, whose signature verified.
    pub checkpoint: SignedCheckpoint,
    /// Every event's sequence number and hash.
    pub events: Vec<(u64, [u8; 32])>,
    /// Every event frame's offset in the batch.
    pub offsets: Vec<u64>,
}

impl BatchVerifier {
    /// A verifier for the log `log_id` signed by `public`, from its beginning.
    pub fn new(log_id: [u8; 32], public: PublicKey) -> Self {
        Self::after(log_id, public, 0, hash::genesis(&log_id), 0)
    }

    /// A verifier for the batches that follow `size` events whose last hash is `head` and
    /// last date `last_time`.
    pub fn after(
        log_id: [u8; 32],
        public: PublicKey,
        size: u64,
        head: [u8; 32],
        last_time: u64,
    ) -> Self {
        Self {
            log_id,
            public,
            next_seq: size,
            head,
            last_time,
        }
    }

    /// Events checked so far (the next batch's first sequence number).
    pub fn size(&self) -> u64 {
        self.next_seq
    }

    /// The chain's head so far.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Checks that `frames` continue the log (sequence numbers, previous hashes, body
    /// commitments where bodies are present, dates that do not go back) and end with one
    /// checkpoint of this log that covers exactly them and whose signature verifies; then
    /// moves past them. On a refusal, says why and stays where it was.
    pub fn check(&mut self, frames: &[u8]) -> Result<CheckedBatch, String> {
        let mut at = 0usize;
        let mut seq = self.next_seq;
        let mut h = self.head;
        let mut last_time = self.last_time;
        let mut events = Vec::new();
        let mut offsets = Vec::new();
        while at < frames.len() {
            let d =
                codec::decode_frame(&frames[at..]).map_err(|e| format!("frame at {at}: {e}"))?;
            match d.frame {
                Frame::Event(ev) => {
                    let env = ev.envelope;
                    if env.seq != seq {
                        return Err(format!("event {} where {seq} comes next", env.seq));
                    }
                    if !hash::ct_eq(&env.prev, &h) {
                        return Err(format!(
                            "event {seq} does not follow the chain's head: it belongs to another chain"
                        ));
                    }
                    if env.time_ms < last_time {
                        return Err(format!("event {seq} is dated before the event before it"));
                    }
                    if let Some((salt, body)) = ev.salt_and_body
                        && !hash::ct_eq(&hash::commit_body(salt, body), &env.commitment)
                    {
                        return Err(format!("event {seq}'s body does not match its commitment"));
                    }
                    h = hash::event_hash(ev.envelope_bytes);
                    last_time = env.time_ms;
                    events.push((seq, h));
                    offsets.push(at as u64);
                    seq += 1;
                }
                Frame::Checkpoint { body, signature } => {
                    if at + d.total_len != frames.len() {
                        return Err("a checkpoint before the end of the batch".into());
                    }
                    if events.is_empty() {
                        return Err("a batch without events".into());
                    }
                    let cp = SignedCheckpoint { body, signature };
                    if cp.body.log_id != self.log_id {
                        return Err("the checkpoint belongs to another log".into());
                    }
                    if cp.body.size != seq || !hash::ct_eq(&cp.body.head, &h) {
                        return Err("the checkpoint does not cover the batch's events".into());
                    }
                    cp.verify(&self.public).map_err(|_| {
                        "the checkpoint's signature does not verify with this log's key".to_string()
                    })?;
                    self.next_seq = seq;
                    self.head = h;
                    self.last_time = last_time.max(cp.body.time_ms);
                    return Ok(CheckedBatch {
                        checkpoint: cp,
                        events,
                        offsets,
                    });
                }
            }
            at += d.total_len;
        }
        Err("the batch does not end with a checkpoint".into())
    }
}
