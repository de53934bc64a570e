//! The writer: many concurrent appenders, group commit.
//!
//! Appenders queue entries for the writer. Whoever commits takes everything queued (up to a
//! bound), assigns sequence numbers, chains and frames the events, signs one checkpoint for
//! the batch, writes events and checkpoint with one write, fdatasyncs, and only then
//! acknowledges each appender with its sequence number. While it waits on the disk, new
//! appends queue up and form the next batch, which is what makes throughput grow with the
//! number of appenders. In the serial form (the default, see [`serial`]) an appender that
//! finds the writer idle commits its own batch on its own thread, and the writer thread takes
//! over only while appends keep arriving; pipelined, that thread signs the next batch while
//! a sync thread writes the last.
//!
//! Segments are pre-zeroed (segment version 2, see `FORMAT.md`): each is a file of a fixed
//! size, filled with zeros and synced before any event goes there, so an append overwrites
//! zeros and its fdatasync flushes data only, never the file's size or extents. The next
//! segment is made ahead of need, as a spare, on a thread of its own, once the current one is
//! half full; rolling is then a header write, an fdatasync and a rename.
//!
//! Any write or fsync error poisons the writer: after a failed fsync the kernel may have
//! dropped the dirty pages and cleared the error ("fsyncgate"), so retrying could report
//! success for data that is gone. A poisoned writer fails every pending and later append and
//! never touches the file again; reopening (a restart) recovers from what is on disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::{Zeroize, Zeroizing};

use crate::checkpoint::SignedCheckpoint;
use crate::codec::{
    self, BodyClass, CHECKPOINT_FRAME_LEN, Envelope, FORMAT_VERSION, MAX_BATCH_BYTES, MAX_BODY_LEN,
    SALT_LEN, SEGMENT_OPENING_LEN, SEGMENT_V1, SEGMENT_V2,
};
use crate::erase::{self, ERASE_JOURNAL, JournalEntry};
use crate::error::{AppendError, CloseError, EraseError, LogError};
use crate::hash;
use crate::index::{self, IndexWriter};
use crate::keys::{LogKey, PublicKey};
use crate::layout;
use crate::replica::{self, Replica};
use crate::segment::{self, INDEX_FILE, LOCK_FILE, Reach, SPARE_FILE, SPARE_TMP_FILE};
use crate::storage::{StdStorage, Storage, StorageFile};

/// The writer's time source: milliseconds since the Unix epoch. A seam so that tests and
/// golden vectors get deterministic timestamps; the writer never lets time go backwards
/// whatever the clock returns.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The real clock (`SystemTime::now`), the default of [`LogOptions`].
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// How a log is written.
#[derive(Clone)]
pub struct LogOptions {
    /// Where durable writes go: [`StdStorage`] in production, a fault-injecting
    /// implementation in tests.
    pub storage: Arc<dyn Storage>,
    /// The kept checkpoint: a copy of the latest checkpoint outside the log, replaced
    /// atomically at most `checkpoint_interval` after each commit and at close. A log shorter
    /// than it is refused as a rollback. `None` disables it (tests of the log alone).
    pub checkpoint_file: Option<PathBuf>,
    /// How long after a commit the kept checkpoint may lag (default one second).
    pub checkpoint_interval: Duration,
    /// The size of a segment (default 16 MiB, as PostgreSQL's WAL segments). A pre-zeroed
    /// segment is preallocated to this size (the first segment of a new log to at most
    /// [`FIRST_SEGMENT_BYTES`]), and a batch that would not fit in what is left of it starts
    /// a new one (a batch larger than a whole segment grows it). With `preallocate` off, a new
    /// segment is started once the current one is at least this large.
    pub segment_bytes: u64,
    /// Write pre-zeroed segments (segment version 2, the default). Off, new segments are of
    /// version 1 and grow with every append, so each fdatasync also commits the file's new
    /// size, as every build before segment version 2 wrote them: for tests of logs written
    /// that way and for benchmarks, not for production.
    pub preallocate: bool,
    /// Most events in one group commit.
    pub max_batch_events: usize,
    /// Prepare (chain, sign) the next batch on a second thread while the current one is
    /// being fdatasync'd. Hides the signing time, which raises throughput against the raw
    /// fdatasync ceiling, but forms smaller batches and hands every batch between threads;
    /// on a 2-core machine shared with an HTTP server the serial form (the default) measured
    /// better end to end (see `log_bench` and `daemon_bench`).
    pub pipeline: bool,
    /// Open a log with events although its kept checkpoint file is missing (a new one is
    /// written from the log as found). For recovery by hand only.
    pub accept_missing_checkpoint: bool,
    /// Where event and checkpoint times come from (default [`system_clock`]).
    pub clock: Clock,
    /// Where every batch is made durable before the local segment gets it (a hub's
    /// PostgreSQL store); `None`, the local segments alone (the default).
    pub replica: Option<Arc<dyn Replica>>,
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("storage", &self.storage)
            .field("checkpoint_file", &self.checkpoint_file)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("segment_bytes", &self.segment_bytes)
            .field("preallocate", &self.preallocate)
            .field("max_batch_events", &self.max_batch_events)
            .field("pipeline", &self.pipeline)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            storage: Arc::new(StdStorage),
            checkpoint_file: None,
            checkpoint_interval: Duration::from_secs(1),
            segment_bytes: 16 << 20,
            preallocate: true,
            max_batch_events: 4096,
            pipeline: false,
            accept_missing_checkpoint: false,
            clock: system_clock(),
            replica: None,
        }
    }
}

/// An event to append. The body may carry secret material: it is zeroized on drop and never
/// printed. Its commitment is computed here, on the appender's thread, so that hashing bodies
/// is spread over the callers rather than serialised in the writer.
pub struct Entry {
    kind: u16,
    class: BodyClass,
    salt: Option<[u8; SALT_LEN]>,
    body: Zeroizing<Vec<u8>>,
    commitment: [u8; 32],
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .field("class", &self.class)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Entry {
    /// A body that exports keep.
    pub fn public(kind: u16, body: Vec<u8>) -> Self {
        let commitment = hash::commit_body(&[], &body);
        Self {
            kind,
            class: BodyClass::Public,
            salt: None,
            body: Zeroizing::new(body),
            commitment,
        }
    }

    /// A body that may carry secret material: committed with a fresh random salt, left out of
    /// exports.
    pub fn secret(kind: u16, body: Vec<u8>) -> Result<Self, AppendError> {
        let mut salt = [0u8; SALT_LEN];
        // Wrapped first, so that the body is wiped even if no salt can be had; moved, not
        // copied, into the entry.
        let body = Zeroizing::new(body);
        getrandom::fill(&mut salt).map_err(|e| AppendError::Random(e.to_string()))?;
        Ok(Self::sealed(kind, body, salt))
    }

    /// As [`secret`](Self::secret) with a caller-chosen salt (golden vectors; a caller that
    /// derives salts itself). A salt must never be reused.
    pub fn secret_with_salt(kind: u16, body: Vec<u8>, salt: [u8; SALT_LEN]) -> Self {
        Self::sealed(kind, Zeroizing::new(body), salt)
    }

    fn sealed(kind: u16, body: Zeroizing<Vec<u8>>, salt: [u8; SALT_LEN]) -> Self {
        let commitment = hash::commit_body(&salt, &body);
        Self {
            kind,
            class: BodyClass::Secret,
            salt: Some(salt),
            body,
            commitment,
        }
    }

    /// Length of the body in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }
    /// Length of the event frame this entry becomes (what it adds to its batch's write).
    pub fn frame_len(&self) -> usize {
        codec::event_frame_len(self.salt.map_or(0, |s| s.len()), self.body.len())
    }
    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// Proof that an event is durable and covered by a signed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The event's sequence number.
    pub seq: u64,
    /// The event's hash (over its stored envelope).
    pub hash: [u8; 32],
    /// The time the writer gave the event (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// The checkpoint written with the batch (covers `0..checkpoint.body.size`).
    pub checkpoint: SignedCheckpoint,
}

/// What the writer has committed so far.
#[derive(Debug, Clone)]
pub struct Status {
    /// Events durable and signed (`0..size`).
    pub size: u64,
    /// Hash of the last durable event (the genesis hash for an empty log).
    pub head: [u8; 32],
    /// The last checkpoint written.
    pub checkpoint: SignedCheckpoint,
    /// Why the writer stopped, if it did (the message stored when it stopped).
    pub poisoned: Option<String>,
    /// Group commits since open (benchmarks compare against a raw ceiling with the same batch
    /// sizes).
    pub batches: u64,
    /// Bytes written to segments since open.
    pub bytes_written: u64,
    /// Events appended since open (with `batches`: events per fdatasync).
    pub appended: u64,
}

/// What recovery did on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn, never-acknowledged write after the last checkpoint, removed: cut from
    /// the end of a version-1 segment, overwritten with zeros (and synced) in a version-2 one,
    /// which keeps its preallocated size.
    pub truncated_bytes: u64,
    /// Whole events that lay past the last checkpoint and were dropped with it.
    pub dropped_events: u64,
    /// A trailing segment whose creation was interrupted, removed.
    pub removed_segment: Option<PathBuf>,
    /// The index was missing, stale or for another state of the log, and was rebuilt.
    pub index_rebuilt: bool,
    /// Frames whose erasure a crash interrupted, erased again from the erase journal.
    pub erasures_finished: u64,
    /// An erase journal torn before any frame was touched, discarded.
    pub erase_journal_discarded: bool,
    /// A spare segment found half made (or of another size than `segment_bytes`), removed.
    pub spare_discarded: bool,
    /// The last segment was of version 1 (written by a build before segment version 2, or
    /// with `preallocate` off): appends go to this new pre-zeroed segment instead, opened
    /// with a copy of the last checkpoint.
    pub started_segment: Option<PathBuf>,
}

/// What [`Log::submit`] calls once a batch is durable and signed (one receipt per entry, in
/// order) or has failed: from the writer thread, or from the thread of whichever appender
/// committed the batch. It must not block; it may append again.
pub type Callback = Box<dyn FnOnce(Result<Vec<Receipt>, AppendError>) + Send>;

/// What [`Log::erase`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    /// Events whose salt and body were overwritten now (durable when this is returned).
    pub erased: Vec<u64>,
    /// Events among those asked for that were erased already.
    pub already: Vec<u64>,
}

/// What [`Log::submit_erase`] calls, from the writer thread, once the erasure is durable or
/// has failed.
pub type EraseCallback = Box<dyn FnOnce(Result<Erased, EraseError>) + Send>;

enum Msg {
    Append(Vec<Entry>, Callback),
    /// A batch's frames copied from the replica ([`Log::append_copied`]).
    Copy(Vec<u8>, Callback),
    Erase(Vec<u64>, EraseCallback),
    Close(mpsc::SyncSender<Result<(), CloseError>>),
}

mod serial;

/// An open, writable log. One per log directory (an exclusive lock enforces it).
pub struct Log {
    front: Option<Arc<serial::Serial>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Mutex<Status>>,
    dir: PathBuf,
    log_id: [u8; 32],
    public: PublicKey,
    recovery: Recovery,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_id", &hex::encode(self.log_id))
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    // A lock just released may still be held for a moment by a child process that another
    // thread of the releasing process forked before closing it (the descriptor is closed only
    // at the child's exec). Waiting a bounded, short time tells that apart from a real second
    // writer, which holds the lock for as long as it runs.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::io(format!("locking {}", path.display()), e));
            }
        }
    }
}

fn io_err(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let ctx = ctx.into();
    move |e| LogError::io(ctx, e)
}

impl Log {
    /// Creates a new, empty log in `dir` (created 0700 if missing), with a random identity.
    pub fn create(dir: &Path, key: LogKey, opts: LogOptions) -> Result<Self, LogError> {
        let mut log_id = [0u8; 32];
        getrandom::fill(&mut log_id).map_err(|e| {
            LogError::io(
                "reading the OS random source",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Self::create_with_id(dir, key, opts, log_id)
    }

    /// As [`create`](Self::create) with a given identity (golden vectors).
    pub fn create_with_id(
        dir: &Path,
        key: LogKey,
        opts: LogOptions,
        log_id: [u8; 32],
    ) -> Result<Self, LogError> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let lock = lock_dir(dir)?;
        if !segment::list_segments(dir)?.is_empty() {
            return Err(LogError::AlreadyExists(dir.to_path_buf()));
        }
        let st = &opts.storage;
        let path = dir.join(segment::segment_name(0));
        let time = (opts.clock)();
        let cp = SignedCheckpoint::sign(&key, log_id, 0, hash::genesis(&log_id), time);
        let version = if opts.preallocate {
            SEGMENT_V2
        } else {
            SEGMENT_V1
        };
        let mut buf = codec::encode_segment_header(&log_id, 0, version);
        codec::put_checkpoint_frame(&mut buf, &cp.body.encode(), &cp.signature);
        let (file, seg_cap) = if opts.preallocate {
            // Made as every later segment is, from a spare, but smaller: a new log is cheap
            // to create (a test suite creates hundreds), and a log that grows rolls into
            // full-size segments soon enough.
            let cap = first_segment_len(&opts);
            let made = (|| {
                // Left by a creation that crashed before its segment was in place.
                remove_if_present(st.as_ref(), &dir.join(SPARE_FILE))?;
                make_spare(st.as_ref(), dir, cap)?;
                install_spare(st.as_ref(), dir, &path, &buf)
            })();
            (
                made.map_err(io_err(format!("creating {}", path.display())))?,
                cap,
            )
        } else {
            let mut file = st
                .create_new(&path)
                .map_err(io_err(format!("creating {}", path.display())))?;
            file.write_all(&buf)
                .and_then(|_| file.sync_data())
                .map_err(io_err(format!("writing {}", path.display())))?;
            st.sync_dir(dir)
                .map_err(io_err(format!("syncing {}", dir.display())))?;
            (file, opts.segment_bytes)
        };
        let index = IndexWriter::open(&dir.join(INDEX_FILE), &log_id, &[], true)?;
        if let Some(p) = &opts.checkpoint_file {
            write_kept_checkpoint(st.as_ref(), p, &cp)
                .map_err(io_err(format!("writing {}", p.display())))?;
        }
        let state = WriterState {
            dir: dir.to_path_buf(),
            log_id,
            key,
            seg: file,
            seg_len: buf.len() as u64,
            seg_first: 0,
            seg_cap,
            seg_prezeroed: opts.preallocate,
            spare_ready: false,
            next_seq: 0,
            head: cp.body.head,
            last_time: time,
            checkpoint: cp,
            index: Some(index),
            housekept_size: 0,
            last_kept: Instant::now(),
            opts,
            _lock: lock,
        };
        Ok(Self::spawn(state, Recovery::default()))
    }

    /// Opens an existing log for writing, recovering from a crash: a torn write past the last
    /// checkpoint is removed (cut off a version-1 segment, zeroed in a pre-zeroed one;
    /// reported in [`recovery`](Self::recovery) and as a `tracing` warning); anything else
    /// that is wrong stops the open with an error that says where. A log whose last segment
    /// is of version 1 gets a new, pre-zeroed segment to append to (unless `preallocate` is
    /// off).
    pub fn open(dir: &Path, key: LogKey, opts: LogOptions) -> Result<Self, LogError> {
        if !dir.is_dir() {
            return Err(LogError::NotFound(dir.to_path_buf()));
        }
        let lock = lock_dir(dir)?;
        let public = key.public();
        let st = opts.storage.clone();
        // An erasure a crash interrupted is finished before anything is read: until then a
        // frame may be half overwritten, which would read as corruption (or, in the last
        // batch, as a torn tail to truncate).
        let mut erasures_finished = 0;
        let mut erase_journal_discarded = false;
        if dir.join(ERASE_JOURNAL).exists()
            && let Some(first) = segment::list_segments(dir)?.first()
        {
            let (log_id, _) = segment::read_header(&first.path)?;
            match erase::recover(dir, st.as_ref(), &log_id)? {
                Some(n) => erasures_finished = n,
                None => erase_journal_discarded = true,
            }
        }
        let lay = layout::load(dir, Some(&public), Reach::Whole)?;
        let cp = lay.checkpoint;

        // The kept checkpoint catches a log cut back to an older, validly signed state.
        if let Some(p) = &opts.checkpoint_file
            && !p.exists()
            && cp.body.size > 0
            && !opts.accept_missing_checkpoint
        {
            // Without it a log cut back to an older, validly signed state would go unnoticed,
            // and the next kept checkpoint would bless the older state.
            return Err(LogError::BadCheckpointFile {
                path: p.clone(),
                reason: format!(
                    "missing, but the log holds {} events; it is what catches a log cut back to an older state. Restore it, or, if it was really lost, open once accepting that (scopehold daemon --accept-missing-checkpoint)",
                    cp.body.size
                ),
            });
        }
        if let Some(p) = &opts.checkpoint_file
            && p.exists()
        {
            let kept = SignedCheckpoint::read_file(p)?;
            kept.verify(&public)
                .map_err(|_| LogError::BadCheckpointFile {
                    path: p.clone(),
                    reason: "signature does not verify with this log's key".into(),
                })?;
            if kept.body.log_id != lay.log_id {
                return Err(LogError::BadCheckpointFile {
                    path: p.clone(),
                    reason: "it belongs to another log".into(),
                });
            }
            if kept.body.size > cp.body.size {
                if let Some((offset, why)) = &lay.torn {
                    // What looked like a torn final write held acknowledged events.
                    return Err(LogError::Corrupted {
                        segment: lay.last_segment().path.clone(),
                        offset: *offset,
                        seq: Some(cp.body.size),
                        reason: format!(
                            "{why}; the checkpoint kept at {} shows events up to {} were acknowledged",
                            p.display(),
                            kept.body.size - 1
                        ),
                    });
                }
                return Err(LogError::Rollback {
                    log_size: cp.body.size,
                    kept_size: kept.body.size,
                    checkpoint: p.clone(),
                });
            }
            let head_then = if kept.body.size == 0 {
                hash::genesis(&lay.log_id)
            } else {
                lay.event_hash(kept.body.size - 1)?
            };
            if !hash::ct_eq(&head_then, &kept.body.head) {
                return Err(LogError::Fork {
                    seq: kept.body.size.saturating_sub(1),
                    checkpoint: p.clone(),
                });
            }
        }

        let mut recovery = Recovery {
            index_rebuilt: lay.index_changed,
            erasures_finished,
            erase_journal_discarded,
            ..Default::default()
        };
        if let Some(p) = &lay.incomplete_segment {
            tracing::warn!(
                segment = %p.display(),
                "removing a segment whose creation was interrupted before it held any committed data"
            );
            st.remove(p)
                .map_err(io_err(format!("removing {}", p.display())))?;
            st.sync_dir(dir)
                .map_err(io_err(format!("syncing {}", dir.display())))?;
            recovery.removed_segment = Some(p.clone());
        }
        let last = lay.last_segment().path.clone();
        let mut seg = st
            .open_at(&last, lay.committed_end)
            .map_err(io_err(format!("opening {}", last.display())))?;
        let prezeroed = lay.last_version == SEGMENT_V2;
        if lay.data_end > lay.committed_end {
            recovery.truncated_bytes = lay.data_end - lay.committed_end;
            recovery.dropped_events = lay.uncommitted_events;
            tracing::warn!(
                segment = %last.display(),
                bytes = recovery.truncated_bytes,
                offset = lay.committed_end,
                events = cp.body.size,
                "{} {} bytes after the last checkpoint (offset {}, {} events): a torn write from an interrupted append, never acknowledged{}",
                if prezeroed { "zeroing" } else { "truncating" },
                recovery.truncated_bytes,
                lay.committed_end,
                cp.body.size,
                lay.torn
                    .as_ref()
                    .map(|(o, why)| format!("; first damaged frame at offset {o}: {why}"))
                    .unwrap_or_default()
            );
            if prezeroed {
                // Overwritten, not cut: the file keeps its preallocated blocks, and no byte
                // of the torn write is left for a shorter later batch to end in front of.
                zero_range(st.as_ref(), &last, lay.committed_end, lay.data_end).map_err(io_err(
                    format!("zeroing the torn tail of {}", last.display()),
                ))?;
            } else {
                seg.truncate(lay.committed_end)
                    .map_err(io_err(format!("truncating {}", last.display())))?;
            }
        }
        let (mut spare_ready, discarded) = existing_spare(st.as_ref(), dir, spare_len(&opts))
            .map_err(io_err(format!(
                "checking the spare segment in {}",
                dir.display()
            )))?;
        recovery.spare_discarded = discarded;
        let mut seg_len = lay.committed_end;
        let mut seg_first = lay.last_segment().first_seq;
        let mut seg_cap = if prezeroed {
            lay.file_end
        } else {
            opts.segment_bytes
        };
        let mut seg_prezeroed = prezeroed;
        if opts.preallocate && !prezeroed {
            // A log written before segment version 2: its last segment is left as it is (it
            // ends at a checkpoint, at the end of the file) and appends go to a new,
            // pre-zeroed one from here on, so none of them grows a file. If the old segment
            // holds no event, the new one has its very name and contents (header and the same
            // checkpoint) and replaces it by the rename.
            let path = dir.join(segment::segment_name(cp.body.size));
            let mut opening = codec::encode_segment_header(&lay.log_id, cp.body.size, SEGMENT_V2);
            codec::put_checkpoint_frame(&mut opening, &cp.body.encode(), &cp.signature);
            let made = (|| {
                if !spare_ready {
                    make_spare(st.as_ref(), dir, spare_len(&opts))?;
                }
                install_spare(st.as_ref(), dir, &path, &opening)
            })();
            seg = made.map_err(io_err(format!("starting segment {}", path.display())))?;
            spare_ready = false;
            tracing::info!(
                old = %last.display(),
                new = %path.display(),
                "the log's last segment is of version 1; appending to a new pre-zeroed segment"
            );
            recovery.started_segment = Some(path);
            seg_len = opening.len() as u64;
            seg_first = cp.body.size;
            seg_cap = spare_len(&opts);
            seg_prezeroed = true;
        }
        if lay.index_changed {
            tracing::info!(log = %dir.display(), "the log's index was missing or stale; rebuilt");
        }
        let index = IndexWriter::open(
            &dir.join(INDEX_FILE),
            &lay.log_id,
            &lay.index,
            lay.index_changed,
        )
        .ok();
        let last_time = cp.body.time_ms;
        let state = WriterState {
            dir: dir.to_path_buf(),
            log_id: lay.log_id,
            key,
            seg,
            seg_len,
            seg_first,
            seg_cap,
            seg_prezeroed,
            spare_ready,
            next_seq: cp.body.size,
            head: cp.body.head,
            last_time,
            checkpoint: cp,
            index,
            housekept_size: u64::MAX, // unknown: write the kept checkpoint at the first chance
            last_kept: Instant::now() - opts.checkpoint_interval,
            opts,
            _lock: lock,
        };
        Ok(Self::spawn(state, recovery))
    }

    fn spawn(state: WriterState, recovery: Recovery) -> Self {
        let shared = Arc::new(Mutex::new(Status {
            size: state.next_seq,
            head: state.head,
            checkpoint: state.checkpoint,
            poisoned: None,
            batches: 0,
            bytes_written: 0,
            appended: 0,
        }));
        let dir = state.dir.clone();
        let log_id = state.log_id;
        let public = state.key.public();
        let pipeline = state.opts.pipeline;
        let (sequencer, syncer) = state.split(shared.clone());
        let front = serial::Serial::new(sequencer, syncer);
        let run = front.clone();
        let thread = std::thread::Builder::new()
            .name("scopehold-log-writer".into())
            .spawn(move || run.run(pipeline))
            .expect("spawning the log writer thread");
        Self {
            front: Some(front),
            thread: Some(thread),
            shared,
            dir,
            log_id,
            public,
            recovery,
        }
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The log's identity (random, chosen at creation, in every segment header).
    pub fn log_id(&self) -> [u8; 32] {
        self.log_id
    }
    /// The public key that verifies this log's checkpoints.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }
    /// What recovery did when the log was opened (nothing for a new log).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }
    /// What the writer has committed so far, and whether it stopped.
    pub fn status(&self) -> Status {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues entries to be committed together (one batch, consecutive sequence numbers) and
    /// calls `done` once they are durable and checkpointed, or failed. For async callers:
    /// `done` can complete a oneshot channel.
    ///
    /// A serial log (`pipeline` off) whose writer is idle commits the batch on the calling
    /// thread before returning (so `done` may run before `submit` returns); otherwise the
    /// writer thread commits it. A caller that decides what to append under a lock of its own
    /// should use [`queue`](Self::queue) instead, and commit outside that lock.
    pub fn submit(&self, entries: Vec<Entry>, done: Callback) {
        self.queue(entries, done).commit();
    }

    /// As [`submit`](Self::submit), but the commit on the calling thread (if the writer is
    /// idle) waits for [`Lead::commit`], or for the [`Lead`] to be dropped. Sequence numbers
    /// follow the order of the calls to `queue`, so a caller can decide under its own lock, in
    /// order, and commit once it has released it: other appenders then queue behind this one
    /// during its fdatasync instead of waiting for the lock.
    pub fn queue(&self, entries: Vec<Entry>, done: Callback) -> Lead<'_> {
        let idle = Lead { serial: None };
        if let Some(e) = entries.iter().find(|e| e.body.len() > MAX_BODY_LEN) {
            done(Err(AppendError::TooLarge(e.body.len())));
            return idle;
        }
        if !Self::fits_one_batch(&entries) {
            done(Err(AppendError::BatchTooLarge(batch_len(&entries))));
            return idle;
        }
        match &self.front {
            None => done(Err(AppendError::Closed)),
            Some(s) => {
                s.push(Msg::Append(entries, done));
                return Lead { serial: Some(s) };
            }
        }
        idle
    }

    /// Whether `entries` can be appended together: one batch's write (its frames and its
    /// checkpoint) is at most [`MAX_BATCH_BYTES`], which bounds how far a torn write can
    /// reach. [`submit`](Self::submit) refuses entries that do not fit with
    /// [`AppendError::BatchTooLarge`].
    pub fn fits_one_batch(entries: &[Entry]) -> bool {
        batch_len(entries) <= MAX_BATCH_BYTES
    }

    /// Appends entries as one batch and waits until they are durable and signed.
    pub fn append_batch(&self, entries: Vec<Entry>) -> Result<Vec<Receipt>, AppendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            entries,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// Appends one entry and waits until it is durable and signed.
    pub fn append(&self, entry: Entry) -> Result<Receipt, AppendError> {
        let mut v = self.append_batch(vec![entry])?;
        v.pop().ok_or(AppendError::Closed)
    }

    /// Appends a batch copied from the replica (see [`replica`](crate::replica)): `frames` are
    /// a batch's event frames and checkpoint frame exactly as another writer of this log made
    /// them. It is written only if it continues this log's chain (sequence numbers, previous
    /// hashes, body commitments, dates) and ends with a checkpoint of this log that covers it
    /// and whose signature verifies; anything else is refused with nothing written
    /// ([`AppendError::Refused`]). Not handed back to the replica. Returns the last event's
    /// receipt.
    pub fn append_copied(&self, frames: Vec<u8>) -> Result<Receipt, AppendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let done: Callback = Box::new(move |r| {
            let _ = tx.send(r);
        });
        match &self.front {
            None => done(Err(AppendError::Closed)),
            Some(s) => s.push(Msg::Copy(frames, done)),
        }
        rx.recv()
            .unwrap_or(Err(AppendError::Closed))?
            .pop()
            .ok_or(AppendError::Closed)
    }

    /// From now on, hands every batch to `replica` before writing it here (see
    /// [`LogOptions::replica`]); for a replica that first had to be brought up to date from
    /// this log, or this log from it. Lone appenders stop committing on their own threads
    /// (the writer thread commits), so no caller's thread waits on the replica.
    pub fn attach_replica(&self, replica: Arc<dyn Replica>) {
        if let Some(s) = &self.front {
            s.attach_replica(replica);
        }
    }

    /// Queues the erasure of the salt and body of committed secret-bearing events `seqs`
    /// (crypto-shredding: what was sealed in them can never be read again), after every
    /// append queued before it, and calls `done` from the writer thread once it is durable or
    /// has failed. The envelopes stay, so the chain, every checkpoint and every export still
    /// verify; readers then yield these events without a body ([`Record::erased`]).
    ///
    /// Each frame is rewritten in place with the same length, behind a journal synced first
    /// (see `FORMAT.md`, Erasure), so a crash leaves either the original frame or the erased
    /// one, never a damaged log. A public event, or one not yet committed, refuses the whole
    /// request with nothing changed. A storage failure while overwriting poisons the writer
    /// (as a failed append does); the journal then finishes the erasure on the next open, as
    /// it may also when the journal itself failed to be written: a failed erasure's outcome
    /// is unknown, not negative.
    ///
    /// [`Record::erased`]: crate::Record::erased
    pub fn submit_erase(&self, seqs: Vec<u64>, done: EraseCallback) {
        match &self.front {
            None => done(Err(EraseError::Closed)),
            Some(s) => s.push(Msg::Erase(seqs, done)),
        }
    }

    /// [`submit_erase`](Self::submit_erase), waiting for the outcome.
    pub fn erase(&self, seqs: &[u64]) -> Result<Erased, EraseError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit_erase(
            seqs.to_vec(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(EraseError::Closed))
    }

    /// Stops the writer after everything already queued, writes the kept checkpoint and
    /// syncs the index. Returns the writer's failure, if it had one.
    pub fn close(mut self) -> Result<(), CloseError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), CloseError> {
        let Some(front) = self.front.take() else {
            return Ok(());
        };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        front.push(Msg::Close(ack_tx));
        let r = ack_rx.recv().unwrap_or(Ok(()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Entries queued by [`Log::queue`]: committing them on this thread, if the writer is idle,
/// waits for [`commit`](Self::commit) or the drop. Hold it only as long as the lock under
/// which they were decided; a queued batch waits for it (or for a commit already under way).
#[must_use = "the entries are committed when this is committed or dropped"]
pub struct Lead<'a> {
    serial: Option<&'a serial::Serial>,
}

impl Lead<'_> {
    /// Commits the queued entries on this thread if the writer is idle (blocking for their
    /// write and fdatasync); returns at once if a commit is under way (its committer takes
    /// them). Either way the entries' callback reports the outcome.
    pub fn commit(self) {
        // The drop commits; this names the moment at the call site.
        drop(self);
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.serial.take() {
            s.lead();
        }
    }
}

impl std::fmt::Debug for Lead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lead")
            .field("pending", &self.serial.is_some())
            .finish()
    }
}

/// The most a new log's first segment is preallocated to (see [`LogOptions::segment_bytes`]):
/// 1 MiB costs a couple of milliseconds to fill and sync; a full 16 MiB segment ten times
/// that, for every log created.
pub const FIRST_SEGMENT_BYTES: u64 = 1 << 20;

/// What entries appended together write: their frames and the batch's checkpoint.
fn batch_len(entries: &[Entry]) -> usize {
    entries.iter().map(Entry::frame_len).sum::<usize>() + CHECKPOINT_FRAME_LEN
}

/// The size a spare (the next segment) is made at.
fn spare_len(opts: &LogOptions) -> u64 {
    opts.segment_bytes.max(SEGMENT_OPENING_LEN as u64)
}

/// The size a new log's first segment is made at.
fn first_segment_len(opts: &LogOptions) -> u64 {
    spare_len(opts).min(FIRST_SEGMENT_BYTES.max(SEGMENT_OPENING_LEN as u64))
}

fn remove_if_present(st: &dyn Storage, path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => st.remove(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the spare: `len` zeros written and synced under a temporary name, then renamed to
/// [`SPARE_FILE`], so a file by that name is always whole. The rename needs no directory
/// fsync: the roll that uses the spare syncs the directory after renaming it again, and a
/// rename lost to a crash leaves the temporary file, which the next open removes.
fn make_spare(st: &dyn Storage, dir: &Path, len: u64) -> std::io::Result<()> {
    let tmp = dir.join(SPARE_TMP_FILE);
    remove_if_present(st, &tmp)?;
    st.create_zeroed(&tmp, len)?;
    st.rename(&tmp, &dir.join(SPARE_FILE))
}

/// Turns the spare into the segment at `path`: its opening (header and checkpoint) written at
/// offset 0 and synced, then the rename, then the directory fsync, all before any event goes
/// there. Returns the file, positioned at the end of the opening. A crash before the rename
/// leaves a spare whose first bytes hold an opening, which the next roll overwrites with one
/// of the same length.
fn install_spare(
    st: &dyn Storage,
    dir: &Path,
    path: &Path,
    opening: &[u8],
) -> std::io::Result<Box<dyn StorageFile>> {
    debug_assert_eq!(opening.len(), SEGMENT_OPENING_LEN);
    let spare = dir.join(SPARE_FILE);
    let mut f = st.open_at(&spare, 0)?;
    f.write_all(opening)?;
    f.sync_data()?;
    st.rename(&spare, path)?;
    st.sync_dir(dir)?;
    Ok(f)
}

/// At open: removes a half-made spare, and a spare of another size than `len`; returns
/// whether a spare is ready and whether anything was removed. A whole spare is kept: it was
/// synced before it got its name, and the only write into it, a roll's opening, is
/// overwritten by the next roll.
fn existing_spare(st: &dyn Storage, dir: &Path, len: u64) -> std::io::Result<(bool, bool)> {
    let mut discarded = false;
    let tmp = dir.join(SPARE_TMP_FILE);
    if std::fs::symlink_metadata(&tmp).is_ok() {
        st.remove(&tmp)?;
        discarded = true;
    }
    let spare = dir.join(SPARE_FILE);
    match std::fs::symlink_metadata(&spare) {
        Ok(m) if m.is_file() && m.len() == len => Ok((true, discarded)),
        Ok(_) => {
            st.remove(&spare)?;
            Ok((false, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((false, discarded)),
        Err(e) => Err(e),
    }
}

/// Overwrites bytes `from..to` of the file at `path` with zeros and fdatasyncs it.
fn zero_range(st: &dyn Storage, path: &Path, from: u64, to: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut f = st.open_overwrite(path)?;
    let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK);
        f.write_at(at, &zeros[..n as usize])?;
        at += n;
    }
    f.sync_data()
}

fn write_kept_checkpoint(
    st: &dyn Storage,
    path: &Path,
    cp: &SignedCheckpoint,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = st.remove(&tmp);
    let mut f = st.create_new(&tmp)?;
    f.write_all(cp.to_text().as_bytes())?;
    f.sync_data()?;
    drop(f);
    st.rename(&tmp, path)?;
    st.sync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Everything the writer needs, as recovered or created; split into the two pipeline stages.
struct WriterState {
    dir: PathBuf,
    log_id: [u8; 32],
    key: LogKey,
    seg: Box<dyn StorageFile>,
    /// The current segment's data end.
    seg_len: u64,
    /// The first sequence number of the current segment (its name).
    seg_first: u64,
    /// How much of the current segment is preallocated (version 2), or how long it may grow
    /// (version 1) before a new one starts.
    seg_cap: u64,
    /// Whether the current segment is of version 2.
    seg_prezeroed: bool,
    /// Whether a whole spare is in place.
    spare_ready: bool,
    next_seq: u64,
    head: [u8; 32],
    last_time: u64,
    checkpoint: SignedCheckpoint,
    index: Option<IndexWriter>,
    housekept_size: u64,
    last_kept: Instant,
    opts: LogOptions,
    _lock: File,
}

impl WriterState {
    fn split(self, shared: Arc<Mutex<Status>>) -> (Sequencer, Syncer) {
        let seq = Sequencer {
            log_id: self.log_id,
            key: self.key,
            dir: self.dir.clone(),
            seg_len: self.seg_len,
            seg_first: self.seg_first,
            seg_cap: self.seg_cap,
            seg_prezeroed: self.seg_prezeroed,
            preallocate: self.opts.preallocate,
            spare_len: spare_len(&self.opts),
            next_seq: self.next_seq,
            head: self.head,
            last_time: self.last_time,
            checkpoint: self.checkpoint,
            segment_bytes: self.opts.segment_bytes,
            max_batch_events: self.opts.max_batch_events,
            clock: self.opts.clock.clone(),
            shared: shared.clone(),
        };
        let sync = Syncer {
            log_id: self.log_id,
            dir: self.dir,
            seg: self.seg,
            seg_end: self.seg_len,
            seg_cap: self.seg_cap,
            spare: if self.spare_ready {
                Spare::Ready
            } else {
                Spare::Absent
            },
            index: self.index,
            durable_size: self.next_seq,
            checkpoint: self.checkpoint,
            housekept_size: self.housekept_size,
            last_kept: self.last_kept,
            opts: self.opts,
            shared,
            poisoned: None,
            _lock: self._lock,
        };
        (seq, sync)
    }
}

/// `(seq, hash)` of an event prepared for writing.
type EventId = (u64, [u8; 32]);

/// A committed (or failed) batch's callbacks with what each is told.
type Acks = Vec<(Callback, Result<Vec<Receipt>, AppendError>)>;

/// A batch ready to be written: frames, index offsets, who to acknowledge, and whether a new
/// segment starts before it.
struct Prepared {
    /// The batch's first sequence number: batches are written in this order.
    first_seq: u64,
    /// The chain's head before the batch.
    prev: [u8; 32],
    buf: Vec<u8>,
    offsets: Vec<u64>,
    callers: Vec<(Callback, Vec<EventId>)>,
    checkpoint: SignedCheckpoint,
    time_ms: u64,
    /// Path and opening (header and a copy of the previous batch's checkpoint, the one that
    /// ends the current segment) of a new segment that this batch goes to.
    roll: Option<(PathBuf, Vec<u8>)>,
    /// Copied from the replica ([`Log::append_copied`]): not handed back to it.
    copied: bool,
}

fn poisoned_reason(shared: &Mutex<Status>) -> Option<String> {
    shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .poisoned
        .clone()
}

/// Stage one: sequence numbers, chaining, framing, signing. Pure CPU work (pipelined, done
/// while the syncer waits on the disk for the previous batch).
struct Sequencer {
    log_id: [u8; 32],
    key: LogKey,
    dir: PathBuf,
    /// The current segment's data end once everything prepared so far is written.
    seg_len: u64,
    /// The first sequence number of the current segment.
    seg_first: u64,
    /// See [`WriterState::seg_cap`].
    seg_cap: u64,
    /// Whether the current segment is of version 2.
    seg_prezeroed: bool,
    /// Whether new segments are of version 2.
    preallocate: bool,
    /// The size new version-2 segments have (the spare's).
    spare_len: u64,
    next_seq: u64,
    head: [u8; 32],
    last_time: u64,
    checkpoint: SignedCheckpoint,
    segment_bytes: u64,
    max_batch_events: usize,
    clock: Clock,
    shared: Arc<Mutex<Status>>,
}

impl Sequencer {
    fn prepare(&mut self, batch: &mut Vec<(Vec<Entry>, Callback)>) -> Prepared {
        let time = (self.clock)().max(self.last_time);
        let first_seq = self.next_seq;
        let prev = self.head;
        let mut head = self.head;
        let mut seq = self.next_seq;
        // Sized once: the batch's frames and checkpoint (growing it would leave copies of
        // sealed bodies in freed memory, and cost a reallocation per doubling).
        let events: usize = batch.iter().map(|(es, _)| es.len()).sum();
        let mut buf = Vec::with_capacity(
            batch
                .iter()
                .map(|(es, _)| batch_len(es) - CHECKPOINT_FRAME_LEN)
                .sum::<usize>()
                + CHECKPOINT_FRAME_LEN,
        );
        // Offsets within the batch, until it is known which segment it goes to.
        let mut offsets = Vec::with_capacity(events);
        let mut callers = Vec::with_capacity(batch.len());
        for (entries, cb) in batch.drain(..) {
            let mut receipts = Vec::with_capacity(entries.len());
            for e in &entries {
                let env = Envelope {
                    version: FORMAT_VERSION,
                    seq,
                    time_ms: time,
                    kind: e.kind,
                    class: e.class as u8,
                    prev: head,
                    commitment: e.commitment,
                    body_len: e.body.len() as u32,
                };
                let env_bytes = env.encode();
                head = hash::event_hash(&env_bytes);
                offsets.push(buf.len() as u64);
                let salt: &[u8] = e.salt.as_ref().map_or(&[], |s| &s[..]);
                codec::put_event_frame(&mut buf, &env_bytes, Some((salt, &e.body)));
                receipts.push((seq, head));
                seq += 1;
            }
            callers.push((cb, receipts));
        }
        let cp = SignedCheckpoint::sign(&self.key, self.log_id, seq, head, time);
        codec::put_checkpoint_frame(&mut buf, &cp.body.encode(), &cp.signature);
        let roll = self.place(first_seq, buf.len() as u64, &mut offsets);
        self.next_seq = seq;
        self.head = head;
        self.last_time = time;
        self.checkpoint = cp;
        Prepared {
            first_seq,
            prev,
            buf,
            offsets,
            callers,
            checkpoint: cp,
            time_ms: time,
            roll,
            copied: false,
        }
    }

    /// Where a batch of `len` bytes starting at `first_seq` goes: a new segment first if it
    /// does not fit (returned: path and opening), and its frames' offsets in the segment.
    fn place(
        &mut self,
        first_seq: u64,
        len: u64,
        offsets: &mut [u64],
    ) -> Option<(PathBuf, Vec<u8>)> {
        // A new segment before this batch: in a pre-zeroed segment, when the batch would
        // not fit in what is left of it (then it never grows the file, unless it alone
        // is larger than a segment); in a version-1 one, once it has grown to
        // `segment_bytes`. Never in a segment that holds no event yet.
        let holds_events = first_seq > self.seg_first;
        let full = if self.seg_prezeroed {
            self.seg_len + len > self.seg_cap
        } else {
            self.seg_len >= self.segment_bytes
        };
        let roll = (holds_events && full).then(|| {
            let path = self.dir.join(segment::segment_name(first_seq));
            let version = if self.preallocate {
                SEGMENT_V2
            } else {
                SEGMENT_V1
            };
            // Opens with a copy of the checkpoint that ends the current segment.
            let mut opening = codec::encode_segment_header(&self.log_id, first_seq, version);
            codec::put_checkpoint_frame(
                &mut opening,
                &self.checkpoint.body.encode(),
                &self.checkpoint.signature,
            );
            self.seg_len = opening.len() as u64;
            self.seg_first = first_seq;
            self.seg_prezeroed = self.preallocate;
            self.seg_cap = if self.preallocate {
                self.spare_len
            } else {
                self.segment_bytes
            };
            (path, opening)
        });
        for o in offsets.iter_mut() {
            *o += self.seg_len;
        }
        self.seg_len += len;
        roll
    }

    /// A batch copied from a replica ([`Log::append_copied`]): checked to continue this
    /// log's chain with a valid signature, then placed as [`prepare`](Self::prepare) places
    /// its own.
    fn prepare_copied(
        &mut self,
        frames: Vec<u8>,
        cb: Callback,
    ) -> Result<Prepared, (Callback, String)> {
        let mut v = replica::BatchVerifier::after(
            self.log_id,
            self.key.public(),
            self.next_seq,
            self.head,
            self.last_time,
        );
        let (cp, ids, mut offsets) = match v.check(&frames) {
            Ok(c) => (c.checkpoint, c.events, c.offsets),
            Err(why) => return Err((cb, why)),
        };
        let first_seq = self.next_seq;
        let prev = self.head;
        let roll = self.place(first_seq, frames.len() as u64, &mut offsets);
        self.next_seq = cp.body.size;
        self.head = cp.body.head;
        self.last_time = cp.body.time_ms;
        self.checkpoint = cp;
        Ok(Prepared {
            first_seq,
            prev,
            buf: frames,
            offsets,
            callers: vec![(cb, ids)],
            checkpoint: cp,
            time_ms: cp.body.time_ms,
            roll,
            copied: true,
        })
    }
}

/// Stage two: write, fdatasync; segment rolls; the index; the kept checkpoint; erasures. The
/// only stage that touches storage, so a failure here poisons everything after it.
struct Syncer {
    log_id: [u8; 32],
    dir: PathBuf,
    seg: Box<dyn StorageFile>,
    /// The current segment's data end: where the next batch is written.
    seg_end: u64,
    /// See [`WriterState::seg_cap`].
    seg_cap: u64,
    /// The next segment, made ahead of need.
    spare: Spare,
    index: Option<IndexWriter>,
    durable_size: u64,
    checkpoint: SignedCheckpoint,
    housekept_size: u64,
    last_kept: Instant,
    opts: LogOptions,
    shared: Arc<Mutex<Status>>,
    poisoned: Option<String>,
    /// Held for the writer's lifetime: one writer per log directory.
    _lock: File,
}

/// Where the spare (the next segment, see [`make_spare`]) stands.
enum Spare {
    /// None made yet (or the last one was used).
    Absent,
    /// Being made on a thread of its own.
    Filling(JoinHandle<std::io::Result<()>>),
    /// Made: [`SPARE_FILE`] is whole.
    Ready,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // The spare thread writes in the log directory: it does not outlive the writer (and
        // the lock it holds).
        self.join_spare();
    }
}

impl Syncer {
    /// Waits for a spare being made; whether a whole one is in place.
    fn join_spare(&mut self) -> bool {
        match std::mem::replace(&mut self.spare, Spare::Absent) {
            Spare::Ready => {
                self.spare = Spare::Ready;
                true
            }
            Spare::Absent => false,
            Spare::Filling(h) => match h.join() {
                Ok(Ok(())) => {
                    self.spare = Spare::Ready;
                    true
                }
                Ok(Err(e)) => {
                    // Not a failure of the log: the roll makes a spare itself.
                    tracing::warn!(error = %e, "making the next log segment ahead of need failed");
                    false
                }
                Err(_) => {
                    tracing::warn!("the thread making the next log segment panicked");
                    false
                }
            },
        }
    }

    /// Once the current segment is half full, starts making the next one in the background,
    /// so that rolling to it takes no zero-filling (only if the roll comes first does it
    /// wait for it, or make it, itself).
    fn maybe_start_spare(&mut self) {
        if !self.opts.preallocate
            || self.poisoned.is_some()
            || !matches!(self.spare, Spare::Absent)
            || self.seg_end.saturating_mul(2) < self.seg_cap
        {
            return;
        }
        let st = self.opts.storage.clone();
        let dir = self.dir.clone();
        let len = spare_len(&self.opts);
        match std::thread::Builder::new()
            .name("scopehold-log-spare".into())
            .spawn(move || make_spare(st.as_ref(), &dir, len))
        {
            Ok(h) => self.spare = Spare::Filling(h),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the thread making the next log segment")
            }
        }
    }

    fn kept_due(&self) -> bool {
        self.housekept_size != self.durable_size && self.poisoned.is_none()
    }

    fn kept_wait(&self) -> Duration {
        if self.kept_due() {
            self.opts
                .checkpoint_interval
                .saturating_sub(self.last_kept.elapsed())
        } else {
            Duration::from_secs(3600)
        }
    }

    fn close_result(&mut self) -> Result<(), CloseError> {
        self.poisoned
            .take()
            .map_or(Ok(()), |why| Err(CloseError::Poisoned(why)))
    }

    fn poison(&mut self, why: String) {
        tracing::error!(
            reason = %why,
            "log writer stopped: every append fails until the log is reopened"
        );
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poisoned = Some(why.clone());
        self.poisoned = Some(why);
    }

    fn fail(&self, p: Prepared) -> Acks {
        let why = self.poisoned.clone().unwrap_or_default();
        p.callers
            .into_iter()
            .map(|(cb, _)| (cb, Err(AppendError::Poisoned(why.clone()))))
            .collect()
    }

    /// Writes and fdatasyncs a batch; returns the acknowledgements, which the caller runs
    /// once it has released the syncer (a callback may append again).
    fn commit(&mut self, mut p: Prepared) -> Acks {
        if self.poisoned.is_some() {
            return self.fail(p);
        }
        // The replica first: the local segment never holds a batch the replica may lack, so
        // it is always a prefix of the replica's log (see `replica`).
        if let Some(r) = &self.opts.replica
            && !p.copied
        {
            let batch = replica::Batch {
                log_id: self.log_id,
                first_seq: p.first_seq,
                prev: p.prev,
                checkpoint: &p.checkpoint,
                frames: &p.buf,
            };
            if let Err(e) = r.commit(&batch) {
                p.buf.zeroize();
                self.poison(format!("the log's store did not take the batch: {e}"));
                return self.fail(p);
            }
        }
        if let Some((path, opening)) = p.roll.take()
            && !self.roll(&path, &opening)
        {
            return self.fail(p);
        }
        debug_assert_eq!(p.offsets.first().map_or(self.seg_end, |o| *o), self.seg_end);
        let res = self
            .seg
            .write_all(&p.buf)
            .and_then(|_| self.seg.sync_data());
        let written = p.buf.len() as u64;
        // The buffer held (sealed) bodies: wipe it rather than leave copies in freed memory.
        p.buf.zeroize();
        if let Err(e) = res {
            self.poison(format!("write or fdatasync of the log failed: {e}"));
            return self.fail(p);
        }
        self.seg_end += written;
        let cp = p.checkpoint;
        self.durable_size = cp.body.size;
        self.checkpoint = cp;
        {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            s.appended += cp.body.size - s.size;
            s.size = cp.body.size;
            s.head = cp.body.head;
            s.checkpoint = cp;
            s.batches += 1;
            s.bytes_written += written;
        }
        let acks = p
            .callers
            .into_iter()
            .map(|(cb, ids)| {
                let receipts = ids
                    .into_iter()
                    .map(|(seq, hash)| Receipt {
                        seq,
                        hash,
                        time_ms: p.time_ms,
                        checkpoint: cp,
                    })
                    .collect();
                (cb, Ok(receipts))
            })
            .collect();
        // The index is a cache: if it cannot be written, stop maintaining it (readers and the
        // next open rebuild it) rather than stop the log.
        if let Some(ix) = &mut self.index
            && let Err(e) = ix.append(&p.offsets)
        {
            tracing::warn!(
                error = %e,
                "log index write failed; it will be rebuilt on the next open"
            );
            let _ = std::fs::remove_file(self.dir.join(INDEX_FILE));
            self.index = None;
        }
        self.maybe_start_spare();
        if self.poisoned.is_none() && self.last_kept.elapsed() >= self.opts.checkpoint_interval {
            self.write_kept();
        }
        acks
    }

    /// Erases `seqs` (see [`Log::submit_erase`]) unless the writer has stopped.
    fn erase(&mut self, seqs: Vec<u64>) -> Result<Erased, EraseError> {
        match &self.poisoned {
            Some(why) => Err(EraseError::Poisoned(why.clone())),
            None => self.erase_now(seqs),
        }
    }

    /// Locates and checks every frame first (nothing is written if one is refused), then
    /// journal, overwrite, remove the journal (see the `erase` module).
    fn erase_now(&mut self, mut seqs: Vec<u64>) -> Result<Erased, EraseError> {
        seqs.sort_unstable();
        seqs.dedup();
        let failed = |e: LogError| EraseError::Failed(e.to_string());
        // Nothing is in flight: this thread is the one that writes, and it is here.
        let lay = layout::load(&self.dir, None, Reach::Committed).map_err(failed)?;
        let mut out = Erased::default();
        let mut entries = Vec::new();
        let mut buf = Zeroizing::new(Vec::new());
        for seq in seqs {
            if seq >= self.durable_size || seq >= lay.size() {
                return Err(EraseError::NotCommitted(seq));
            }
            let seg = index::segment_for(&lay.segments, seq)
                .map(|i| &lay.segments[i])
                .ok_or(EraseError::NotCommitted(seq))?;
            let off = lay.index[seq as usize];
            let f = File::open(&seg.path)
                .map_err(|e| failed(LogError::io(format!("opening {}", seg.path.display()), e)))?;
            let p = segment::read_event_at(&f, off, &seg.path, &mut buf).map_err(failed)?;
            if p.envelope.seq != seq {
                return Err(failed(LogError::corrupted(
                    &seg.path,
                    off,
                    Some(seq),
                    format!("found event {} where {seq} belongs", p.envelope.seq),
                )));
            }
            if p.envelope.body_class() != BodyClass::Secret {
                return Err(EraseError::Public(seq));
            }
            if p.erased {
                out.already.push(seq);
                continue;
            }
            let (envelope_bytes, body_len) = (p.envelope_bytes.to_vec(), p.envelope.body_len);
            let entry = JournalEntry::for_frame(
                seq,
                seg.first_seq,
                off,
                &envelope_bytes,
                body_len as usize,
                buf.len(),
            )
            .ok_or_else(|| {
                failed(LogError::corrupted(
                    &seg.path,
                    off,
                    Some(seq),
                    "the frame's length does not match its envelope",
                ))
            })?;
            entries.push(entry);
            out.erased.push(seq);
        }
        if entries.is_empty() {
            return Ok(out);
        }
        let st = self.opts.storage.clone();
        let journal = self.dir.join(ERASE_JOURNAL);
        // The journal, with its directory entry, is durable before any frame is touched.
        // Until then nothing has changed: a failure here leaves the writer as it was.
        let res = (|| {
            if journal.exists() {
                st.remove(&journal)?;
            }
            let mut f = st.create_new(&journal)?;
            f.write_all(&erase::encode(&self.log_id, &entries))?;
            f.sync_data()?;
            st.sync_dir(&self.dir)
        })();
        if let Err(e) = res {
            let _ = st.remove(&journal);
            return Err(EraseError::Failed(format!(
                "writing the erase journal {} failed: {e}",
                journal.display()
            )));
        }
        if let Err(e) = erase::overwrite(st.as_ref(), &self.dir, &entries) {
            // As after a failed append: the frames' state on disk is unknown and a retry
            // could report success for pages that are gone. The journal finishes the
            // erasure on the next open.
            self.poison(format!("erasing records in place failed: {e}"));
            return Err(EraseError::Poisoned(
                self.poisoned.clone().unwrap_or_default(),
            ));
        }
        if let Err(e) = st.remove(&journal) {
            // Harmless: the next open applies it again, which rewrites the same bytes.
            tracing::warn!(error = %e, journal = %journal.display(), "could not remove the erase journal");
        }
        Ok(out)
    }

    /// Starts a new segment: header plus a copy of the last checkpoint, synced, and the
    /// directory synced, before any event goes there. Every segment therefore holds a
    /// checkpoint, and recovery never has to look back into an older segment. A pre-zeroed
    /// segment is the spare renamed (made here if it is not ready). Returns whether it
    /// worked; a failure poisons the writer.
    fn roll(&mut self, path: &Path, opening: &[u8]) -> bool {
        let st = self.opts.storage.clone();
        let res = if self.opts.preallocate {
            let ready = self.join_spare();
            self.spare = Spare::Absent;
            (if ready {
                Ok(())
            } else {
                make_spare(st.as_ref(), &self.dir, spare_len(&self.opts))
            })
            .and_then(|()| install_spare(st.as_ref(), &self.dir, path, opening))
        } else {
            st.create_new(path).and_then(|mut f| {
                f.write_all(opening)?;
                f.sync_data()?;
                st.sync_dir(&self.dir)?;
                Ok(f)
            })
        };
        match res {
            Ok(f) => {
                self.seg = f;
                self.seg_end = opening.len() as u64;
                self.seg_cap = if self.opts.preallocate {
                    spare_len(&self.opts)
                } else {
                    self.opts.segment_bytes
                };
                true
            }
            Err(e) => {
                self.poison(format!("starting segment {} failed: {e}", path.display()));
                false
            }
        }
    }

    /// At most `checkpoint_interval` after a commit, and at close: replace the kept checkpoint.
    fn write_kept(&mut self) {
        if let Some(p) = self.opts.checkpoint_file.clone()
            && let Err(e) = write_kept_checkpoint(self.opts.storage.as_ref(), &p, &self.checkpoint)
        {
            self.poison(format!(
                "writing the kept checkpoint {} failed: {e}",
                p.display()
            ));
            return;
        }
        self.housekept_size = self.durable_size;
        self.last_kept = Instant::now();
    }

    fn finish(&mut self) {
        if self.poisoned.is_none() && self.housekept_size != self.durable_size {
            self.write_kept();
        }
        // A spare being made is finished (and kept for the next open) rather than left
        // half made.
        self.join_spare();
    }
}
