//! Power cuts and storage failures, simulated below the writer through the `Storage` seam.
//!
//! `FaultStorage` works on real files but keeps its own account of what each `sync_data` and
//! `sync_dir` made durable. A power cut (at a seed-chosen operation) makes every later call
//! fail, and `apply_cut` then rewrites the directory into one of the states a real power cut
//! could leave: synced bytes intact, unsynced tails dropped, cut short, followed by garbage or
//! zeroed page by page, and directory entries (creations, renames, removals) that no directory
//! fsync covered reverted. The index, which the writer appends behind the seam and never
//! syncs, is treated as wholly unsynced. The log, reopened on the real file system, must still
//! hold every event it acknowledged and verify.
//!
//! Single injected write and fsync failures check the other half of the contract: the writer
//! stops for good (fsyncgate: a retried fsync can report success for data that is gone) and
//! never touches the segments again.
//!
//! Every random choice comes from a seed printed in the assertion messages. Rerun one seed with
//! `SCOPEHOLD_POWERCUT_SEED=<n>`; run more or fewer with `SCOPEHOLD_POWERCUT_SEEDS=<count>`;
//! `SCOPEHOLD_POWERCUT_DEBUG=1` prints each reopen's recovery.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use scopehold_log::{
    AppendError, Entry, INDEX_FILE, Log, LogOptions, LogReader, Recovery, SignedCheckpoint,
    Storage, StorageFile, VerifyOptions, verify_log,
};

use crate::common;

/// The unit in which a power cut persists or loses unsynced data.
const PAGE: usize = 4096;
/// The unit a page written back may be torn into.
const SECTOR: usize = 512;

/// splitmix64: small, and replayable from a printed seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (up to a negligible modulo bias); 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    /// An independent stream, so that one consumer drawing more numbers (a thread that got
    /// more appends in) does not shift every later choice of the seed.
    fn fork(&mut self) -> Rng {
        Rng::new(self.next())
    }
}

// ---------------------------------------------------------------------------------------------
// FaultStorage
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    WriteAll,
    SyncData,
    Truncate,
    CreateNew,
    OpenAppend,
    Rename,
    SyncDir,
    Remove,
    OpenOverwrite,
    WriteAt,
    OpenAt,
}

/// What a failed fdatasync did with the pages it was asked to write. Both happen: after a
/// writeback error Linux marks the pages clean, so they may be evicted (and lost), or read
/// back from the cache by the next open, or have reached the disk before the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedSync {
    /// The file reads back as it was at its last successful sync.
    DropsUnsynced,
    /// The file keeps everything written.
    KeepsUnsynced,
}

/// Fail the `nth` call (1-based) of `op` on a segment file, once.
#[derive(Debug, Clone, Copy)]
struct Injection {
    op: Op,
    nth: u64,
    failed_sync: FailedSync,
}

/// Calls that reached the storage after the injected failure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct AfterFailure {
    segment_writes: u64,
    segment_syncs: u64,
    other_calls: u64,
}

/// One file as the simulation sees it (an inode: it keeps its identity across renames).
#[derive(Debug)]
struct Tracked {
    path: PathBuf,
    /// Bytes written so far.
    len: u64,
    /// Bytes a successful `sync_data` (or `truncate`, which syncs) made durable.
    durable: u64,
    /// False once removed or replaced by a rename.
    live: bool,
}

/// A directory entry change not yet made durable by a `sync_dir` of its directory.
enum DirOp {
    Created(PathBuf),
    Renamed {
        from: PathBuf,
        to: PathBuf,
        /// The durable content of the file `to` replaced, if there was one.
        replaced: Option<Vec<u8>>,
    },
    Removed {
        path: PathBuf,
        content: Vec<u8>,
    },
}

impl std::fmt::Debug for DirOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirOp::Created(p) => write!(f, "create {}", file_name(p)),
            DirOp::Renamed { from, to, replaced } => write!(
                f,
                "rename {} -> {}{}",
                file_name(from),
                file_name(to),
                if replaced.is_some() {
                    " (replacing it)"
                } else {
                    ""
                }
            ),
            DirOp::Removed { path, .. } => write!(f, "remove {}", file_name(path)),
        }
    }
}

struct State {
    rng: Rng,
    cut: bool,
    /// Calls made so far (every kind), which is what a cut point counts.
    ops: u64,
    cut_at: Option<u64>,
    files: Vec<Tracked>,
    by_path: HashMap<PathBuf, usize>,
    unsynced_dirs: BTreeMap<PathBuf, Vec<DirOp>>,
    /// Files written behind the seam without ever being synced (the index): a cut may leave
    /// anything of them.
    never_synced: Vec<PathBuf>,
    injection: Option<Injection>,
    injection_seen: u64,
    injected: bool,
    after: AfterFailure,
    /// In-place overwrites not yet covered by a `sync_data` of their file: a cut may leave
    /// each page of each one old or new.
    overwrites: Vec<Overwrite>,
}

/// An in-place write: which file, where, and the bytes it replaced.
struct Overwrite {
    id: usize,
    offset: u64,
    old: Vec<u8>,
}

enum Gate {
    Go,
    Inject,
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut (EIO)")
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (EIO)"))
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl State {
    /// Every call passes here first, under the one lock that also guards the durability
    /// bookkeeping: a cut therefore falls either before a call (which fails) or after it (which
    /// took full effect), never inside a sync.
    fn gate(&mut self, op: Op, segment: bool) -> io::Result<Gate> {
        if self.cut {
            return Err(power_cut());
        }
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.cut = true;
            return Err(power_cut());
        }
        if self.injected {
            match (op, segment) {
                (Op::WriteAll, true) => self.after.segment_writes += 1,
                (Op::SyncData, true) => self.after.segment_syncs += 1,
                _ => self.after.other_calls += 1,
            }
            return Ok(Gate::Go);
        }
        if let Some(inj) = self.injection
            && inj.op == op
            && segment
        {
            self.injection_seen += 1;
            if self.injection_seen == inj.nth {
                self.injected = true;
                return Ok(Gate::Inject);
            }
        }
        Ok(Gate::Go)
    }

    fn track(&mut self, path: &Path, len: u64, durable: u64) -> usize {
        let id = self.files.len();
        self.files.push(Tracked {
            path: path.to_path_buf(),
            len,
            durable,
            live: true,
        });
        self.by_path.insert(path.to_path_buf(), id);
        id
    }

    /// A file this storage did not create existed before it: whatever it holds is treated as
    /// durable (an earlier cut already decided what survived).
    fn track_existing(&mut self, path: &Path) -> io::Result<usize> {
        if let Some(&id) = self.by_path.get(path) {
            return Ok(id);
        }
        let len = fs::metadata(path)?.len();
        Ok(self.track(path, len, len))
    }

    fn untrack(&mut self, path: &Path) {
        if let Some(id) = self.by_path.remove(path) {
            self.files[id].live = false;
        }
    }

    /// What a cut right now would leave of the file at `path` at the least.
    fn durable_content(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let mut bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(&id) = self.by_path.get(path) {
            bytes.truncate(self.files[id].durable as usize);
        }
        Ok(Some(bytes))
    }

    /// Whether file `id` is a segment now (a spare becomes one when it is renamed).
    fn is_segment(&self, id: usize) -> bool {
        is_segment(&self.files[id].path)
    }

    /// A write of `data` at `offset` of file `id`: the part over synced bytes (the zeros of a
    /// pre-zeroed segment, a frame being erased) is an in-place overwrite, of which a cut may
    /// leave each page old or new; the part past them is growth, which a cut tears like any
    /// unsynced tail.
    fn positioned_write(
        &mut self,
        id: usize,
        file: &File,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = offset + data.len() as u64;
        let in_place_end = end.min(self.files[id].durable);
        if offset < in_place_end {
            let mut old = vec![0u8; (in_place_end - offset) as usize];
            file.read_exact_at(&mut old, offset)?;
            self.overwrites.push(Overwrite { id, offset, old });
        }
        file.write_all_at(data, offset)?;
        let f = &mut self.files[id];
        f.len = f.len.max(end);
        Ok(())
    }

    fn dir_op(&mut self, path: &Path, op: DirOp) {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.unsynced_dirs.entry(dir).or_default().push(op);
    }
}

/// A `Storage` over real files that decides durability itself. See the module comment.
#[derive(Clone)]
struct FaultStorage(Arc<Mutex<State>>);

impl std::fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("FaultStorage")
            .field("ops", &st.ops)
            .field("cut", &st.cut)
            .field("injected", &st.injected)
            .finish_non_exhaustive()
    }
}

impl FaultStorage {
    /// An existing file opened read-write (never append: the bytes a positioned write
    /// replaces are read first, and a positioned write to an O_APPEND file appends), tracked
    /// so that a power cut can revert what was not synced. `pos`: where `write_all` writes
    /// (`None` for a file only written with `write_at`).
    fn open_tracked(
        &self,
        path: &Path,
        op: Op,
        pos: Option<u64>,
    ) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.lock();
        st.gate(op, is_segment(path))?;
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let id = st.track_existing(path)?;
        Ok(Box::new(FaultFile {
            storage: self.clone(),
            id,
            file,
            pos,
        }))
    }

    fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(State {
            rng: Rng::new(seed),
            cut: false,
            ops: 0,
            cut_at: None,
            files: Vec::new(),
            by_path: HashMap::new(),
            unsynced_dirs: BTreeMap::new(),
            never_synced: Vec::new(),
            injection: None,
            injection_seen: 0,
            injected: false,
            after: AfterFailure::default(),
            overwrites: Vec::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the assertions that follow.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the power when the `k`-th call from now is made (that call fails).
    fn cut_after(&self, k: u64) {
        let mut st = self.lock();
        st.cut_at = Some(st.ops + k.max(1));
    }

    fn cut(&self) {
        self.lock().cut = true;
    }

    fn is_cut(&self) -> bool {
        self.lock().cut
    }

    fn ops(&self) -> u64 {
        self.lock().ops
    }

    fn never_synced(&self, path: PathBuf) {
        self.lock().never_synced.push(path);
    }

    fn inject(&self, injection: Injection) {
        self.lock().injection = Some(injection);
    }

    fn injected(&self) -> bool {
        self.lock().injected
    }

    fn after_failure(&self) -> AfterFailure {
        self.lock().after
    }

    /// Rewrites the files into a state the power cut could have left, and returns what it
    /// chose (for failure messages). Call once every user of the storage has stopped.
    fn apply_cut(&self) -> Vec<String> {
        let mut guard = self.lock();
        let st = &mut *guard;
        assert!(st.cut, "apply_cut before the power was cut");
        let mut notes = Vec::new();
        // Unsynced in-place writes first (they lie within synced data): latest first, each
        // page of each either reached the disk or did not.
        for o in std::mem::take(&mut st.overwrites).into_iter().rev() {
            let f = &st.files[o.id];
            if !f.live {
                continue;
            }
            let mut bytes = fs::read(&f.path).expect("reading an overwritten file");
            let (start, end) = (o.offset as usize, o.offset as usize + o.old.len());
            let mut reverted = Vec::new();
            let mut page = start / PAGE * PAGE;
            let mut torn = Vec::new();
            while page < end {
                let (a, b) = (page.max(start), (page + PAGE).min(end));
                match st.rng.below(5) {
                    // The page never reached the disk: the old bytes (zeros, in a pre-zeroed
                    // segment).
                    0 | 1 => {
                        bytes[a..b].copy_from_slice(&o.old[a - start..b - start]);
                        reverted.push(page / PAGE);
                    }
                    2 | 3 => {}
                    // Torn inside the page: some of its sectors reached the disk.
                    _ => {
                        let mut sector = a / SECTOR * SECTOR;
                        while sector < b {
                            let (x, y) = (sector.max(a), (sector + SECTOR).min(b));
                            if st.rng.one_in(2) {
                                bytes[x..y].copy_from_slice(&o.old[x - start..y - start]);
                            }
                            sector += SECTOR;
                        }
                        torn.push(page / PAGE);
                    }
                }
                page += PAGE;
            }
            fs::write(&f.path, &bytes).expect("rewriting an overwritten file for the cut");
            notes.push(format!(
                "{}: unsynced in-place write of {} bytes at {start}; pages {reverted:?} reverted, {torn:?} torn",
                file_name(&f.path),
                o.old.len()
            ));
        }
        for f in st.files.iter().filter(|f| f.live) {
            let bytes = match fs::read(&f.path) {
                Ok(b) => b,
                Err(e) => panic!("reading {}: {e}", f.path.display()),
            };
            let durable = (f.durable as usize).min(bytes.len());
            let (out, how) = tear(&mut st.rng, &bytes, durable);
            if out != bytes {
                fs::write(&f.path, &out).expect("rewriting a file for the cut");
            }
            notes.push(format!(
                "{}: {durable} of {} bytes synced; tail {how}; {} bytes left",
                file_name(&f.path),
                bytes.len(),
                out.len()
            ));
        }
        for p in &st.never_synced {
            let Ok(bytes) = fs::read(p) else { continue };
            if st.rng.one_in(2) {
                continue;
            }
            let (out, how) = tear(&mut st.rng, &bytes, 0);
            fs::write(p, &out).expect("rewriting a never-synced file for the cut");
            notes.push(format!(
                "{} (never synced): {} bytes; {how}",
                file_name(p),
                bytes.len()
            ));
        }
        for (dir, ops) in std::mem::take(&mut st.unsynced_dirs) {
            // Usually every unsynced entry change is lost; sometimes an ordered prefix of them
            // reached the disk anyway, which a journaling file system may also leave.
            let keep = if st.rng.one_in(2) {
                0
            } else {
                st.rng.below_usize(ops.len() + 1)
            };
            notes.push(format!(
                "{}: unsynced {:?}; the first {keep} survive",
                dir.display(),
                ops
            ));
            for op in ops[keep..].iter().rev() {
                revert(op);
            }
        }
        notes
    }
}

/// What is left of a file of which only `durable` bytes were synced.
fn tear(rng: &mut Rng, bytes: &[u8], durable: usize) -> (Vec<u8>, String) {
    let tail = bytes.len() - durable;
    if tail == 0 {
        return (bytes.to_vec(), "none".into());
    }
    let mut out = bytes[..durable].to_vec();
    match rng.below(4) {
        0 => (out, "dropped".into()),
        1 => {
            let k = rng.below_usize(tail + 1);
            out.extend_from_slice(&bytes[durable..durable + k]);
            (out, format!("cut to {k} of {tail} bytes"))
        }
        2 => {
            let k = rng.below_usize(tail);
            let garbage = 1 + rng.below_usize(tail - k);
            out.extend_from_slice(&bytes[durable..durable + k]);
            out.extend((0..garbage).map(|_| rng.next() as u8));
            (
                out,
                format!("cut to {k} of {tail} bytes, then {garbage} garbage bytes"),
            )
        }
        _ => {
            out.extend_from_slice(&bytes[durable..]);
            let mut zeroed = Vec::new();
            let mut page = durable / PAGE * PAGE;
            while page < bytes.len() {
                if rng.one_in(2) {
                    out[page.max(durable)..(page + PAGE).min(bytes.len())].fill(0);
                    zeroed.push(page / PAGE);
                }
                page += PAGE;
            }
            (
                out,
                format!("{tail} bytes kept but pages {zeroed:?} zeroed"),
            )
        }
    }
}

fn revert(op: &DirOp) {
    let ctx = |what: &str, p: &Path| format!("reverting {op:?}: {what} {}", p.display());
    match op {
        DirOp::Created(p) => {
            fs::remove_file(p).unwrap_or_else(|e| panic!("{}: {e}", ctx("removing", p)))
        }
        DirOp::Renamed { from, to, replaced } => {
            fs::rename(to, from).unwrap_or_else(|e| panic!("{}: {e}", ctx("renaming", to)));
            if let Some(c) = replaced {
                fs::write(to, c).unwrap_or_else(|e| panic!("{}: {e}", ctx("restoring", to)));
            }
        }
        DirOp::Removed { path, content } => {
            fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", ctx("restoring", path)))
        }
    }
}

struct FaultFile {
    storage: FaultStorage,
    id: usize,
    file: File,
    /// The write position of a file opened for positioned writes (`open_at`); `None` for an
    /// appending one.
    pos: Option<u64>,
}

impl StorageFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.storage.lock();
        let segment = st.is_segment(self.id);
        let gate = st.gate(Op::WriteAll, segment)?;
        let n = match gate {
            Gate::Go => buf.len(),
            // A failing write may still have put a part of the buffer in the file (never all
            // of it: that would have been a success).
            Gate::Inject => st.rng.below_usize(buf.len()),
        };
        match &mut self.pos {
            None => {
                self.file.write_all(&buf[..n])?;
                st.files[self.id].len += n as u64;
            }
            Some(pos) => {
                st.positioned_write(self.id, &self.file, *pos, &buf[..n])?;
                *pos += n as u64;
            }
        }
        match gate {
            Gate::Go => Ok(()),
            Gate::Inject => Err(injected("write")),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.storage.lock();
        let segment = st.is_segment(self.id);
        let gate = st.gate(Op::SyncData, segment)?;
        let failed_sync = st.injection.map(|i| i.failed_sync);
        let id = self.id;
        match gate {
            // No real fdatasync: what is durable is what this bookkeeping says, and the cut
            // rewrites the files to match. Skipping it keeps hundreds of runs fast.
            Gate::Go => {
                st.overwrites.retain(|o| o.id != id);
                let f = &mut st.files[id];
                f.durable = f.len;
                Ok(())
            }
            Gate::Inject => {
                if failed_sync == Some(FailedSync::DropsUnsynced) {
                    // Unsynced in-place writes read back as before them, growth is gone.
                    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.overwrites)
                        .into_iter()
                        .partition(|o| o.id == id);
                    st.overwrites = rest;
                    for o in mine.iter().rev() {
                        use std::os::unix::fs::FileExt;
                        self.file.write_all_at(&o.old, o.offset)?;
                    }
                    let f = &mut st.files[id];
                    self.file.set_len(f.durable)?;
                    f.len = f.durable;
                }
                Err(injected("fdatasync"))
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.storage.lock();
        let segment = st.is_segment(self.id);
        st.gate(Op::Truncate, segment)?;
        self.file.set_len(len)?;
        // The production truncate syncs, so the new length is durable.
        let f = &mut st.files[self.id];
        f.len = len;
        f.durable = len;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut st = self.storage.lock();
        let segment = st.is_segment(self.id);
        st.gate(Op::WriteAt, segment)?;
        let mut old = vec![0u8; buf.len()];
        self.file.read_exact_at(&mut old, offset)?;
        self.file.write_all_at(buf, offset)?;
        st.overwrites.push(Overwrite {
            id: self.id,
            offset,
            old,
        });
        Ok(())
    }
}

impl Storage for FaultStorage {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.lock();
        st.gate(Op::CreateNew, is_segment(path))?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let id = st.track(path, 0, 0);
        st.dir_op(path, DirOp::Created(path.to_path_buf()));
        Ok(Box::new(FaultFile {
            storage: self.clone(),
            id,
            file,
            pos: None,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.lock();
        st.gate(Op::OpenAppend, is_segment(path))?;
        let file = OpenOptions::new().append(true).open(path)?;
        let id = st.track_existing(path)?;
        Ok(Box::new(FaultFile {
            storage: self.clone(),
            id,
            file,
            pos: None,
        }))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn StorageFile>> {
        self.open_tracked(path, Op::OpenAt, Some(offset))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(Op::Rename, is_segment(to))?;
        let replaced = st.durable_content(to)?;
        let id = st.track_existing(from)?;
        fs::rename(from, to)?;
        st.untrack(to);
        st.by_path.remove(from);
        st.files[id].path = to.to_path_buf();
        st.by_path.insert(to.to_path_buf(), id);
        st.dir_op(
            to,
            DirOp::Renamed {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                replaced,
            },
        );
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(Op::SyncDir, false)?;
        // As in `sync_data`, no real fsync: the bookkeeping is the durability.
        st.unsynced_dirs.remove(dir);
        Ok(())
    }

    fn open_overwrite(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.open_tracked(path, Op::OpenOverwrite, None)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(Op::Remove, is_segment(path))?;
        let content = st.durable_content(path)?;
        fs::remove_file(path)?;
        st.untrack(path);
        st.dir_op(
            path,
            DirOp::Removed {
                path: path.to_path_buf(),
                content: content.unwrap_or_default(),
            },
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the tests
// ---------------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// Options of the final, real-storage opens: same kept checkpoint, default everything else.
fn real_opts(kept: &Path) -> LogOptions {
    LogOptions {
        checkpoint_file: Some(kept.to_path_buf()),
        ..common::opts()
    }
}

/// Checks that the reopened log holds `expected` (`seq -> body`) at the least and verifies,
/// then that it accepts and verifies new appends. Returns the log's size before those.
fn check_reopened(
    dir: &Path,
    kept: &Path,
    expected: &BTreeMap<u64, Vec<u8>>,
    ctx: &str,
) -> (u64, Recovery) {
    let log = Log::open(dir, common::key(), real_opts(kept))
        .unwrap_or_else(|e| panic!("{ctx}\nreopen failed: {e}"));
    let recovery = log.recovery().clone();
    let ctx = format!("{ctx}\nrecovery on reopen: {recovery:?}");
    if std::env::var_os("SCOPEHOLD_POWERCUT_DEBUG").is_some() {
        eprintln!("{ctx}");
    }
    let reader = LogReader::open(dir, None).unwrap_or_else(|e| panic!("{ctx}\nreader: {e}"));
    let size = reader.size();
    assert_eq!(log.status().size, size, "{ctx}");
    for (&seq, body) in expected {
        assert!(
            seq < size,
            "{ctx}\nacknowledged event {seq} lost: the log holds {size} events"
        );
        let rec = reader
            .get(seq)
            .unwrap_or_else(|e| panic!("{ctx}\nreading acknowledged event {seq}: {e}"));
        let got = rec
            .body
            .as_ref()
            .unwrap_or_else(|| panic!("{ctx}\nevent {seq} has no body"));
        assert!(
            got.bytes[..] == body[..],
            "{ctx}\nevent {seq} holds another body than the one acknowledged"
        );
        assert_eq!(rec.body_matches(), Some(true), "{ctx}\nevent {seq}");
    }
    let report = verify_log(dir, &common::key().public(), &VerifyOptions::default())
        .unwrap_or_else(|e| panic!("{ctx}\nverify after reopen: {e}"));
    assert_eq!(report.events, size, "{ctx}");

    let more: Vec<Entry> = (0..3)
        .map(|i| Entry::public(7, format!("after reopen {i}").into_bytes()))
        .collect();
    let receipts = log
        .append_batch(more)
        .unwrap_or_else(|e| panic!("{ctx}\nappend after reopen: {e}"));
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![size, size + 1, size + 2], "{ctx}");
    log.close()
        .unwrap_or_else(|e| panic!("{ctx}\nclose after reopen: {e}"));

    let kept_cp =
        SignedCheckpoint::read_file(kept).unwrap_or_else(|e| panic!("{ctx}\nkept checkpoint: {e}"));
    assert_eq!(
        kept_cp.body.size,
        size + 3,
        "{ctx}\nclose must leave the kept checkpoint current"
    );
    let opts = VerifyOptions {
        trusted: Some(kept_cp),
        ..VerifyOptions::default()
    };
    let report = verify_log(dir, &common::key().public(), &opts)
        .unwrap_or_else(|e| panic!("{ctx}\nverify after close: {e}"));
    assert_eq!(report.events, size + 3, "{ctx}");
    let reader =
        LogReader::open(dir, None).unwrap_or_else(|e| panic!("{ctx}\nreader after close: {e}"));
    let last = reader
        .get(size + 2)
        .unwrap_or_else(|e| panic!("{ctx}\nreading event {}: {e}", size + 2));
    assert_eq!(
        &last.body.expect("a log keeps bodies").bytes[..],
        b"after reopen 2",
        "{ctx}"
    );
    (size, recovery)
}

// ---------------------------------------------------------------------------------------------
// Power cuts
// ---------------------------------------------------------------------------------------------

const THREADS: u64 = 4;
/// Append calls per thread and round, when the power stays on that long.
const CALLS_PER_THREAD: u64 = 20;
/// Cut points are drawn in `1..=MAX_CUT_OP` calls after the log is created or opened: a
/// little more than one round makes when the power stays on (about 150), so that most
/// rounds get cut mid-way and some run to the end.
const MAX_CUT_OP: u64 = 170;

/// Appends from several threads until the quota or the first failure; returns what was
/// acknowledged.
fn append_until_cut(log: &Log, seed: u64, round: u64, rng: &mut Rng) -> Vec<(u64, Vec<u8>)> {
    let rngs: Vec<Rng> = (0..THREADS).map(|_| rng.fork()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = rngs
            .into_iter()
            .enumerate()
            .map(|(t, mut rng)| {
                s.spawn(move || {
                    let mut acked = Vec::new();
                    for call in 0..CALLS_PER_THREAD {
                        let n = if rng.one_in(3) { 2 + rng.below(3) } else { 1 };
                        let mut bodies = Vec::new();
                        let mut entries = Vec::new();
                        for j in 0..n {
                            let mut body = format!(
                                "seed {seed} round {round} thread {t} call {call} entry {j} "
                            )
                            .into_bytes();
                            // Now and then a body larger than a page, so that one batch's write
                            // spans pages and a cut can keep some of them and not others.
                            let pad = if rng.one_in(12) {
                                3_000 + rng.below(6_000)
                            } else {
                                rng.below(60)
                            };
                            body.resize(body.len() + pad as usize, b'a' + (t as u8));
                            let entry = if rng.one_in(3) {
                                Entry::secret(3, body.clone()).expect("random salt")
                            } else {
                                Entry::public(10 + t as u16, body.clone())
                            };
                            bodies.push(body);
                            entries.push(entry);
                        }
                        let res = if n == 1 {
                            log.append(entries.pop().expect("one entry"))
                                .map(|r| vec![r])
                        } else {
                            log.append_batch(entries)
                        };
                        match res {
                            Ok(receipts) => {
                                assert_eq!(receipts.len(), bodies.len(), "seed {seed}");
                                acked.extend(receipts.iter().map(|r| r.seq).zip(bodies));
                            }
                            // The power is off: nothing more will be acknowledged.
                            Err(AppendError::Poisoned(_)) => break,
                            Err(e) => panic!("seed {seed}: append failed with {e:?}, not Poisoned"),
                        }
                    }
                    acked
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("appender thread panicked"))
            .collect()
    })
}

/// What the runs went through, to show the cuts land where they matter.
#[derive(Debug, Default)]
struct Stats {
    rounds: u64,
    cut_mid_way: u64,
    open_cut: u64,
    torn_tails: u64,
    removed_segments: u64,
    /// Opens that started a pre-zeroed segment after version-1 ones.
    upgrades: u64,
    /// Opens that removed a half-made spare.
    spares_discarded: u64,
    acknowledged: u64,
    unacknowledged_kept: u64,
}

/// One seed: one to three rounds of appending under a power cut, then a reopen on the real
/// file system.
fn power_cut_run(seed: u64, stats: &mut Stats) {
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("log");
    let kept = root.path().join("checkpoint");
    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut story = vec![format!(
        "seed {seed} (rerun with SCOPEHOLD_POWERCUT_SEED={seed})"
    )];
    let rounds = 1 + rng.below(3);
    // Now and then the log starts as one written before segment version 2 (growing
    // segments); the next round's open then starts a pre-zeroed segment, under the cut.
    let v1_first = rng.one_in(4);
    for round in 0..rounds {
        let fs = FaultStorage::new(rng.next());
        // The index is never fsynced, so a cut may leave anything of it. Setting
        // SCOPEHOLD_POWERCUT_INDEX_INTACT spares it, to look past an index bug at the rest.
        if std::env::var_os("SCOPEHOLD_POWERCUT_INDEX_INTACT").is_none() {
            fs.never_synced(dir.join(INDEX_FILE));
        }
        let opts = LogOptions {
            storage: Arc::new(fs.clone()),
            checkpoint_file: Some(kept.clone()),
            checkpoint_interval: Duration::from_millis(1),
            segment_bytes: 2048,
            preallocate: round > 0 || !v1_first,
            ..common::opts()
        };
        // Now and then within the first calls, which in a reopen are recovery's own.
        let cut_at = 1 + if rng.one_in(8) {
            rng.below(6)
        } else {
            rng.below(MAX_CUT_OP)
        };
        story.push(format!(
            "round {round}: power cut at call {cut_at}{}",
            if opts.preallocate {
                ""
            } else {
                " (version-1 segments)"
            }
        ));
        stats.rounds += 1;
        let log = if round == 0 {
            // Creation is not what is tested here: cut only once the log exists.
            let log = Log::create(&dir, common::key(), opts)
                .unwrap_or_else(|e| panic!("seed {seed}: create: {e}"));
            fs.cut_after(cut_at);
            Some(log)
        } else {
            // Later rounds may be cut inside recovery itself.
            fs.cut_after(cut_at);
            match Log::open(&dir, common::key(), opts) {
                Ok(log) => {
                    stats.torn_tails += u64::from(log.recovery().truncated_bytes > 0);
                    stats.removed_segments += u64::from(log.recovery().removed_segment.is_some());
                    stats.upgrades += u64::from(log.recovery().started_segment.is_some());
                    stats.spares_discarded += u64::from(log.recovery().spare_discarded);
                    Some(log)
                }
                Err(e) => {
                    stats.open_cut += 1;
                    assert!(
                        fs.is_cut(),
                        "{}\nopen failed with the power on: {e}",
                        story.join("\n")
                    );
                    story.push(format!("round {round}: open failed: {e}"));
                    None
                }
            }
        };
        if let Some(log) = log {
            let got = append_until_cut(&log, seed, round, &mut rng);
            stats.cut_mid_way += u64::from(fs.is_cut());
            story.push(format!(
                "round {round}: {} acknowledged, {} calls, cut {}",
                got.len(),
                fs.ops(),
                if fs.is_cut() {
                    "mid-way"
                } else {
                    "after the appends"
                }
            ));
            for (seq, body) in got {
                if let Some(old) = acked.insert(seq, body) {
                    panic!(
                        "{}\nevent {seq} acknowledged twice: an earlier acknowledgement was lost (first body {:?})",
                        story.join("\n"),
                        String::from_utf8_lossy(&old[..old.len().min(60)])
                    );
                }
            }
            fs.cut();
            // The writer stopped at the cut; its error is expected.
            let _ = log.close();
        }
        story.extend(fs.apply_cut().into_iter().map(|n| format!("  {n}")));
    }
    let ctx = story.join("\n");
    let (size, recovery) = check_reopened(&dir, &kept, &acked, &ctx);
    // Unacknowledged events may survive, but only as written: each one an append that was
    // made, once.
    let reader = LogReader::open(&dir, None).unwrap_or_else(|e| panic!("{ctx}\nreader: {e}"));
    let prefix = format!("seed {seed} round ");
    let mut seen = HashSet::new();
    for rec in reader.events_from(0).expect("iterate").take(size as usize) {
        let rec = rec.unwrap_or_else(|e| panic!("{ctx}\niterating: {e}"));
        let body = rec
            .body
            .as_ref()
            .expect("a log keeps bodies")
            .bytes
            .to_vec();
        assert!(
            body.starts_with(prefix.as_bytes()) && seen.insert(body),
            "{ctx}\nevent {} is not one appended once in this run",
            rec.seq()
        );
    }
    stats.torn_tails += u64::from(recovery.truncated_bytes > 0);
    stats.removed_segments += u64::from(recovery.removed_segment.is_some());
    stats.acknowledged += acked.len() as u64;
    stats.unacknowledged_kept += size - acked.len() as u64;
}

#[test]
fn power_cut_loses_no_acknowledged_event() {
    let seeds: Vec<u64> = match env_u64("SCOPEHOLD_POWERCUT_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("SCOPEHOLD_POWERCUT_SEEDS").unwrap_or(200))
            .map(|i| 0x9c0f_fee0_0000 + i)
            .collect(),
    };
    let started = Instant::now();
    let mut stats = Stats::default();
    for &seed in &seeds {
        power_cut_run(seed, &mut stats);
    }
    eprintln!(
        "powercut: {} seeds in {:?}: {stats:?}",
        seeds.len(),
        started.elapsed()
    );
}

/// Builds a log of `events` events (batches of 5) whose kept checkpoint covers the first 600,
/// applies `damage` to its index file as a power cut left it, and reports what then fails:
/// readers, `Log::open`, verification. `None` when nothing does.
fn damaged_index_case(events: u64, damage: impl FnOnce(&mut Vec<u8>)) -> Option<String> {
    const BATCH: u64 = 5;
    const KEPT_AT: u64 = 600;
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("log");
    let kept = root.path().join("checkpoint");
    let append = |log: &Log, from: u64, to: u64| {
        for i in (from..to).step_by(BATCH as usize) {
            log.append_batch((i..i + BATCH).map(common::entry).collect())
                .expect("append");
        }
    };
    let log = Log::create(&dir, common::key(), real_opts(&kept)).expect("create");
    append(&log, 0, KEPT_AT);
    log.close().expect("close");
    // Without a checkpoint file this session leaves the kept checkpoint where it was, as a
    // power cut within the checkpoint interval would.
    let log = Log::open(&dir, common::key(), common::opts()).expect("open");
    append(&log, KEPT_AT, events);
    log.close().expect("close");

    let index = dir.join(INDEX_FILE);
    let mut bytes = fs::read(&index).expect("index");
    assert_eq!(bytes.len() as u64, 40 + 12 * events, "index before the cut");
    damage(&mut bytes);
    fs::write(&index, &bytes).expect("damaging the index");

    let mut problems = Vec::new();
    let reader = LogReader::open(&dir, None).expect("reader");
    let unreadable: Vec<(u64, String)> = (0..events)
        .filter_map(|seq| match reader.get(seq) {
            Ok(rec)
                if rec
                    .body
                    .as_ref()
                    .is_some_and(|b| b.bytes[..] == common::body_of(seq)[..]) =>
            {
                None
            }
            Ok(_) => Some((seq, "another body".to_string())),
            Err(e) => Some((seq, e.to_string())),
        })
        .collect();
    drop(reader);
    if let (Some(first), Some(last)) = (unreadable.first(), unreadable.last()) {
        problems.push(format!(
            "LogReader::get fails for {} events ({}..={}), the first with: {}",
            unreadable.len(),
            first.0,
            last.0,
            first.1
        ));
    }
    match Log::open(&dir, common::key(), real_opts(&kept)) {
        Ok(log) => log.close().expect("close"),
        Err(e) => problems.push(format!("Log::open: {e}")),
    }
    if let Err(e) = verify_log(&dir, &common::key().public(), &VerifyOptions::default()) {
        problems.push(format!("verify_log: {e}"));
    }
    (!problems.is_empty()).then(|| problems.join("\n  "))
}

/// The index is appended after each acknowledgement and never fsynced: a power cut can leave
/// any page of it as zeros inside its recorded size, and lose its last entries. Everything it
/// is a cache of was synced, so the log must open, read and verify as before.
#[test]
fn power_cut_zeroing_a_page_of_the_unsynced_index() {
    let first_zeroed = (PAGE as u64 - 40) / 12;
    let mut failures = Vec::new();
    // Page 1 of 3 never written back, the pages around it were: the last entry checks out.
    if let Some(p) = damaged_index_case(1_100, |b| b[PAGE..2 * PAGE].fill(0)) {
        failures.push(format!(
            "1100 events, index entries {first_zeroed}..{} zeroed:\n  {p}",
            (2 * PAGE as u64 - 40) / 12
        ));
    }
    // The last batch's entries not yet appended, and the page before them never written
    // back: what the scan of the last segment adds after the zeros checks out.
    if let Some(p) = damaged_index_case(705, |b| {
        b.truncate(b.len() - 12 * 5);
        b[PAGE..].fill(0);
    }) {
        failures.push(format!(
            "705 events, index entries {first_zeroed}..700 zeroed, 700..705 missing:\n  {p}"
        ));
    }
    assert!(
        failures.is_empty(),
        "a damaged index (a cache) breaks an intact log:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Injected write and fsync failures
// ---------------------------------------------------------------------------------------------

/// Appends through a storage that fails the `nth` write or fsync of a segment file once, and
/// checks that the writer is poisoned for good, never touches a segment again, and that a
/// reopen finds exactly what was acknowledged (plus, when the failed fsync's pages survived,
/// the whole failed batch). Returns whether the failed batch came back.
fn poisoning_case(op: Op, nth: u64, failed_sync: FailedSync) -> bool {
    let ctx = format!("{op:?} #{nth} fails ({failed_sync:?})");
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("log");
    let kept = root.path().join("checkpoint");
    let fs = FaultStorage::new(nth);
    fs.inject(Injection {
        op,
        nth,
        failed_sync,
    });
    let opts = LogOptions {
        storage: Arc::new(fs.clone()),
        checkpoint_file: Some(kept.clone()),
        // Only creation and close write the kept checkpoint: the calls are the same every run.
        checkpoint_interval: Duration::from_secs(3600),
        // Small, so that some of the failures land in a segment roll.
        segment_bytes: 1024,
        ..common::opts()
    };
    let log =
        Log::create(&dir, common::key(), opts).unwrap_or_else(|e| panic!("{ctx}: create: {e}"));
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut first_failed: Option<Vec<Vec<u8>>> = None;
    let mut failures = 0;
    let mut next = 0u64;
    for call in 0..40u64 {
        let n = if call % 3 == 2 { 2 } else { 1 };
        let entries: Vec<Entry> = (next..next + n).map(common::entry).collect();
        let bodies: Vec<Vec<u8>> = (next..next + n).map(common::body_of).collect();
        next += n;
        match log.append_batch(entries) {
            Ok(receipts) => {
                assert!(
                    first_failed.is_none(),
                    "{ctx}: an append succeeded after the writer failed"
                );
                for (r, b) in receipts.iter().zip(bodies) {
                    assert_eq!(r.seq, acked.len() as u64, "{ctx}");
                    acked.push(b);
                }
            }
            Err(AppendError::Poisoned(_)) => {
                first_failed.get_or_insert(bodies);
                failures += 1;
                if failures == 5 {
                    break;
                }
            }
            Err(e) => panic!("{ctx}: append failed with {e:?}, not Poisoned"),
        }
    }
    let first_failed = first_failed.unwrap_or_else(|| panic!("{ctx}: no append failed"));
    assert!(fs.injected(), "{ctx}");
    let status = log.status();
    assert!(
        status.poisoned.is_some(),
        "{ctx}: status does not say the writer stopped"
    );
    assert_eq!(status.size, acked.len() as u64, "{ctx}");
    // Only the failed call touched a segment: later appends were refused without a retry.
    let after = fs.after_failure();
    assert_eq!(
        (after.segment_writes, after.segment_syncs),
        (0, 0),
        "{ctx}: {after:?}"
    );
    assert!(log.close().is_err(), "{ctx}: close must report the failure");
    let after = fs.after_failure();
    assert_eq!(
        (after.segment_writes, after.segment_syncs),
        (0, 0),
        "{ctx}: after close: {after:?}"
    );

    // The storage itself works again: the failure was a one-off, the refusal is the writer's.
    let mut probe = fs
        .create_new(&root.path().join("probe.seg"))
        .expect("probe");
    probe
        .write_all(b"probe")
        .and_then(|_| probe.sync_data())
        .expect("probe write");

    let mut expected: BTreeMap<u64, Vec<u8>> = acked
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .collect();
    let reader = LogReader::open(&dir, None).unwrap_or_else(|e| panic!("{ctx}: reader: {e}"));
    let extra = reader.size() - acked.len() as u64;
    drop(reader);
    if op == Op::SyncData && failed_sync == FailedSync::KeepsUnsynced && extra > 0 {
        // The failed batch's write is whole, checkpoint included, and recovery cannot tell
        // it from an acknowledged one: it comes back, all of it, never a part.
        assert_eq!(
            extra,
            first_failed.len() as u64,
            "{ctx}: part of a failed batch came back"
        );
        expected.extend(
            first_failed
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, b)| ((acked.len() + i) as u64, b)),
        );
    } else {
        assert_eq!(extra, 0, "{ctx}: events of a failed append are in the log");
    }
    let (size, _) = check_reopened(&dir, &kept, &expected, &ctx);
    assert_eq!(size, expected.len() as u64, "{ctx}");
    extra > 0
}

#[test]
fn write_failure_poisons_the_writer() {
    // Segment write 1 is the creation's; later ones are batches and segment rolls.
    for nth in 2..=16 {
        poisoning_case(Op::WriteAll, nth, FailedSync::DropsUnsynced);
    }
}

/// Many appenders at once, so that the writer thread (and, pipelined, its sync thread) holds
/// batches when the write fails: every appender gets an answer (none hangs), nothing is
/// acknowledged after the failure, and a reopen holds exactly the acknowledged events.
#[test]
fn a_failure_under_concurrent_appenders_poisons_both_forms_and_loses_no_acknowledged_event() {
    for pipeline in [false, true] {
        for nth in [3, 9, 17] {
            let ctx = format!("pipeline={pipeline}, write #{nth} fails");
            let root = tempfile::tempdir().expect("temp dir");
            let dir = root.path().join("log");
            let kept = root.path().join("checkpoint");
            let fs = FaultStorage::new(nth);
            fs.inject(Injection {
                op: Op::WriteAll,
                nth,
                failed_sync: FailedSync::DropsUnsynced,
            });
            let opts = LogOptions {
                storage: Arc::new(fs.clone()),
                checkpoint_file: Some(kept.clone()),
                checkpoint_interval: Duration::from_secs(3600),
                pipeline,
                ..common::opts()
            };
            let log = Arc::new(Log::create(&dir, common::key(), opts).expect("create"));
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0..30u64 {
                            let body = format!("t{t} i{i}").into_bytes();
                            match log.append(Entry::public(1, body.clone())) {
                                Ok(r) => acked.push((r.seq, body)),
                                Err(AppendError::Poisoned(_)) => {}
                                Err(e) => panic!("append failed with {e:?}, not Poisoned"),
                            }
                        }
                        acked
                    })
                })
                .collect();
            let acked: BTreeMap<u64, Vec<u8>> = threads
                .into_iter()
                .flat_map(|t| t.join().expect("appender"))
                .collect();
            assert!(fs.injected(), "{ctx}");
            let status = log.status();
            assert!(status.poisoned.is_some(), "{ctx}");
            assert_eq!(
                acked.keys().copied().collect::<Vec<_>>(),
                (0..status.size).collect::<Vec<_>>(),
                "{ctx}: the acknowledged events are exactly the durable prefix"
            );
            let log = Arc::try_unwrap(log).expect("one owner left");
            assert!(log.close().is_err(), "{ctx}: close reports the failure");
            let (size, _) = check_reopened(&dir, &kept, &acked, &ctx);
            assert_eq!(size, acked.len() as u64, "{ctx}");
        }
    }
}

#[test]
fn fsync_failure_poisons_the_writer_without_retry() {
    let mut came_back = Vec::new();
    for nth in 2..=16 {
        poisoning_case(Op::SyncData, nth, FailedSync::DropsUnsynced);
        if poisoning_case(Op::SyncData, nth, FailedSync::KeepsUnsynced) {
            came_back.push(nth);
        }
    }
    // Not a failure of the writer, which cannot know, but worth seeing: an append reported
    // as failed is in the log after a reopen whenever its pages outlived the failed fsync.
    eprintln!(
        "powercut: failed fsyncs whose pages survived brought the failed batch back for \
         sync_data #{came_back:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Power cuts during an erasure
// ---------------------------------------------------------------------------------------------

/// Bodies of the erasure tests: every third event secret-bearing, some larger than a page so
/// that an overwrite spans pages and a cut can keep some of them and not others.
fn erase_body(i: u64) -> Vec<u8> {
    let mut b = format!("erase-test event {i} ").into_bytes();
    let pad = if i % 4 == 2 { 6_000 + 300 * i } else { 20 + i };
    b.resize(b.len() + pad as usize, b'0' + (i % 10) as u8);
    b
}

fn erase_entry(i: u64) -> Entry {
    if i % 3 == 2 {
        Entry::secret(7, erase_body(i)).expect("random salt")
    } else {
        Entry::public(1, erase_body(i))
    }
}

/// One run: a log of 24 events over several segments, an erasure of five of its
/// secret-bearing events with the power cut at the `cut_at`-th storage call, optionally a
/// second cut while the reopen finishes it, then a reopen on the real file system. Each
/// erased event must read back whole or erased, never damaged, and all of them erased if the
/// erasure was acknowledged. Returns (whether the cut fell inside the erasure, what the
/// final reopen finished).
fn erase_cut_run(seed: u64, cut_at: u64) -> (bool, u64) {
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("log");
    let kept = root.path().join("checkpoint");
    // Built through a storage that is never cut: its syncs are bookkeeping, which keeps a
    // hundred runs fast.
    let log = Log::create(
        &dir,
        common::key(),
        LogOptions {
            storage: Arc::new(FaultStorage::new(seed)),
            segment_bytes: 16 * 1024,
            ..real_opts(&kept)
        },
    )
    .expect("create");
    for i in (0..24).step_by(3) {
        log.append_batch((i..i + 3).map(erase_entry).collect())
            .expect("append");
    }
    log.close().expect("close");
    let targets = [2u64, 5, 11, 14, 23];
    let mut story = vec![format!(
        "seed {seed}, cut at call {cut_at} of the erasure of {targets:?}"
    )];

    // The log does not grow here, so the kept checkpoint stays current without being
    // rewritten, and the calls counted are the erasure's alone.
    let fs = FaultStorage::new(rng.next());
    let fault_opts = |fs: &FaultStorage| LogOptions {
        storage: Arc::new(fs.clone()),
        checkpoint_file: None,
        ..common::opts()
    };
    let log = Log::open(&dir, common::key(), fault_opts(&fs)).expect("open");
    fs.cut_after(cut_at);
    let res = log.erase(&targets);
    let cut = fs.is_cut();
    story.push(format!("erase: {res:?}; power cut during it: {cut}"));
    if !cut {
        assert_eq!(
            res.as_ref().map(|e| e.erased.clone()),
            Ok(targets.to_vec()),
            "{}",
            story.join("\n")
        );
    }
    fs.cut();
    let _ = log.close();
    story.extend(fs.apply_cut().into_iter().map(|n| format!("  {n}")));

    // Now and then the power fails again while the reopen finishes the erasure.
    if cut && rng.one_in(2) {
        let fs = FaultStorage::new(rng.next());
        let again = 1 + rng.below(6);
        fs.cut_after(again);
        match Log::open(&dir, common::key(), fault_opts(&fs)) {
            Ok(log) => {
                story.push(format!(
                    "second cut at call {again}: open survived it ({:?})",
                    log.recovery()
                ));
                fs.cut();
                let _ = log.close();
            }
            Err(e) => story.push(format!("second cut at call {again}: open failed: {e}")),
        }
        if fs.is_cut() {
            story.extend(fs.apply_cut().into_iter().map(|n| format!("  {n}")));
        }
    }
    let ctx = story.join("\n");

    let log = Log::open(&dir, common::key(), real_opts(&kept))
        .unwrap_or_else(|e| panic!("{ctx}\nreopen failed: {e}"));
    let finished = log.recovery().erasures_finished;
    assert!(
        !dir.join(scopehold_log::ERASE_JOURNAL).exists(),
        "{ctx}\nthe journal outlived the open"
    );
    log.close().expect("close");
    let report = verify_log(&dir, &common::key().public(), &VerifyOptions::default())
        .unwrap_or_else(|e| panic!("{ctx}\nverify: {e}"));
    assert_eq!(report.events, 24, "{ctx}");
    let reader = LogReader::open(&dir, None).expect("reader");
    let mut erased = 0;
    for seq in 0..24 {
        let rec = reader
            .get(seq)
            .unwrap_or_else(|e| panic!("{ctx}\nevent {seq}: {e}"));
        if rec.erased {
            assert!(targets.contains(&seq), "{ctx}\nevent {seq} erased");
            assert!(rec.body.is_none(), "{ctx}");
            erased += 1;
        } else {
            let b = rec.body.as_ref().unwrap_or_else(|| panic!("{ctx}\n{seq}"));
            assert_eq!(&b.bytes[..], &erase_body(seq)[..], "{ctx}\nevent {seq}");
            assert_eq!(rec.body_matches(), Some(true), "{ctx}\nevent {seq}");
        }
    }
    assert_eq!(report.erased_bodies, erased, "{ctx}");
    if res.is_ok() {
        assert_eq!(
            erased,
            targets.len() as u64,
            "{ctx}\nan acknowledged erasure was lost"
        );
    }
    // Erased or not, each erasure is all or nothing per event; and the log goes on.
    let log = Log::open(&dir, common::key(), real_opts(&kept)).expect("open again");
    let r = log
        .erase(&targets)
        .unwrap_or_else(|e| panic!("{ctx}\nerase again: {e}"));
    assert_eq!(r.erased.len() + r.already.len(), targets.len(), "{ctx}");
    log.append(Entry::public(1, b"after".to_vec()))
        .expect("append");
    log.close().expect("close");
    verify_log(&dir, &common::key().public(), &VerifyOptions::default())
        .unwrap_or_else(|e| panic!("{ctx}\nverify at the end: {e}"));
    (cut, finished)
}

#[test]
fn power_cut_during_an_erasure_leaves_each_record_whole_or_erased() {
    let mut cut_points = 0;
    let mut finished_on_open = 0;
    let mut cut_at = 1;
    loop {
        let mut any_cut = false;
        for s in 0..6 {
            let (cut, finished) = erase_cut_run(0xe4a5_e000 + cut_at * 16 + s, cut_at);
            any_cut |= cut;
            finished_on_open += u64::from(finished > 0);
        }
        if !any_cut {
            break;
        }
        cut_points += 1;
        cut_at += 1;
    }
    eprintln!(
        "powercut: erasure cut at {cut_points} points; the reopen finished it from the journal in {finished_on_open} runs"
    );
    // Journal (create, write, sync, directory sync), two segments (open, writes, sync each),
    // journal removal: every one of them was a cut point.
    assert!(cut_points >= 10, "only {cut_points} cut points");
    assert!(finished_on_open > 0);
}

// ---------------------------------------------------------------------------------------------
// Power cuts in the life of a pre-zeroed segment: its zero-filling, the roll into it, and a
// second cut after a recovery zeroed a torn tail
// ---------------------------------------------------------------------------------------------

/// Appends `entries` one batch each with real storage; returns `seq -> body`.
fn fill(log: &Log, bodies: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<u64, Vec<u8>> {
    bodies
        .into_iter()
        .map(|b| {
            let r = log.append(Entry::public(1, b.clone())).expect("append");
            (r.seq, b)
        })
        .collect()
}

/// One run: a log whose first segment is nearly full, reopened through a storage whose power
/// is cut at its `cut_at`-th call, then a batch that does not fit: the roll into the spare
/// (made ahead, or, with `spare_ready` false, made by the roll itself) meets the cut at
/// every step. Returns whether the cut fell before the batch was acknowledged, and whether
/// the new segment survived.
fn roll_cut_run(seed: u64, cut_at: u64, spare_ready: bool) -> (bool, bool) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("log");
    let kept = root.path().join("checkpoint");
    let o = LogOptions {
        segment_bytes: 4096,
        ..real_opts(&kept)
    };
    let log = Log::create(&dir, common::key(), o.clone()).expect("create");
    // Six batches of 557 bytes after the 209 of the opening: 3551 of 4096 bytes.
    let mut acked = fill(&log, (0..6).map(|i| vec![b'a' + i as u8; 300]));
    log.close().expect("close");
    assert_eq!(common::segments(&dir).len(), 1, "one segment, nearly full");
    let spare = dir.join("segment.spare");
    assert!(spare.exists(), "the spare was made ahead of need");
    if !spare_ready {
        fs::remove_file(&spare).expect("removing the spare");
    }
    let ctx = format!("seed {seed}, cut at call {cut_at}, spare ready: {spare_ready}");
    let fs = FaultStorage::new(seed);
    // The kept checkpoint stays as it was: its calls are not the ones counted here.
    let log = Log::open(
        &dir,
        common::key(),
        LogOptions {
            storage: Arc::new(fs.clone()),
            checkpoint_file: None,
            segment_bytes: 4096,
            ..common::opts()
        },
    )
    .expect("open");
    fs.cut_after(cut_at);
    let bodies = vec![vec![b'x'; 700], vec![b'y'; 700]];
    let res = log.append_batch(bodies.iter().map(|b| Entry::public(1, b.clone())).collect());
    let unacked = res.is_err();
    if let Ok(receipts) = res {
        for (r, b) in receipts.iter().zip(bodies) {
            acked.insert(r.seq, b);
        }
    }
    fs.cut();
    let _ = log.close();
    let notes = fs.apply_cut();
    let ctx = format!("{ctx}\n  {}", notes.join("\n  "));
    let rolled = dir.join("00000000000000000006.seg").exists();
    let (size, _) = check_reopened(&dir, &kept, &acked, &ctx);
    assert!(size == 6 || size == 8, "{ctx}\nsize {size}");
    assert!(
        !dir.join("segment.spare.tmp").exists(),
        "{ctx}\na half-made spare outlived the open"
    );
    (unacked, rolled)
}

#[test]
fn power_cut_during_a_roll_into_the_spare() {
    let mut cut_before_ack = 0;
    let mut rolled_survived = 0;
    let mut runs = 0;
    for spare_ready in [true, false] {
        for cut_at in 1..=20 {
            for s in 0..3 {
                let (unacked, rolled) =
                    roll_cut_run(0x5ba2_e000 + cut_at * 8 + s, cut_at, spare_ready);
                runs += 1;
                cut_before_ack += u64::from(unacked);
                rolled_survived += u64::from(rolled && unacked);
            }
        }
    }
    eprintln!(
        "powercut: roll into the spare: {runs} runs, cut before the acknowledgement in {cut_before_ack}, the new segment survived such a cut in {rolled_survived}"
    );
    assert!(cut_before_ack >= 20, "the cuts missed the roll");
    assert!(rolled_survived > 0, "no cut left a rolled segment behind");
}

/// The power fails while the spare is being zero-filled (in the background, after the batch
/// that took the first segment past half): the half-made spare is removed on open, and the
/// log rolls into a spare made again.
#[test]
fn power_cut_while_the_spare_is_being_zero_filled() {
    let mut discarded = 0;
    for (cut_at, seed) in (1..=9u64).flat_map(|c| (0..4u64).map(move |s| (c, s))) {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("log");
        let kept = root.path().join("checkpoint");
        // The spare is three chunks of zeros (3 MiB) behind a 1 MiB first segment.
        let o = LogOptions {
            segment_bytes: 3 << 20,
            ..real_opts(&kept)
        };
        Log::create(&dir, common::key(), o.clone())
            .expect("create")
            .close()
            .expect("close");
        // Without the kept checkpoint, whose replacement at close would race the spare's
        // thread for the calls counted.
        let fs = FaultStorage::new(seed * 16 + cut_at);
        let log = Log::open(
            &dir,
            common::key(),
            LogOptions {
                storage: Arc::new(fs.clone()),
                checkpoint_file: None,
                ..o
            },
        )
        .expect("open");
        // Calls from here: the batch's write and fdatasync, then the spare's creation, its
        // three writes, its fdatasync and its rename.
        fs.cut_after(cut_at);
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 110_000]).collect();
        let res = log.append_batch(bodies.iter().map(|b| Entry::public(1, b.clone())).collect());
        let mut acked = BTreeMap::new();
        if let Ok(receipts) = &res {
            acked.extend(receipts.iter().map(|r| r.seq).zip(bodies.iter().cloned()));
        }
        // Closing waits for the spare.
        let _ = log.close();
        fs.cut();
        let notes = fs.apply_cut();
        let ctx = format!(
            "seed {seed}, cut at call {cut_at}: {:?}\n  {}",
            res.as_ref().map(|r| r.len()),
            notes.join("\n  ")
        );
        let (size, recovery) = check_reopened(&dir, &kept, &acked, &ctx);
        discarded += u64::from(recovery.spare_discarded);
        assert!(
            !dir.join("segment.spare.tmp").exists(),
            "{ctx}\nthe half-made spare outlived the open"
        );
        // Past the first segment: the roll finds or makes a whole spare.
        let log = Log::open(
            &dir,
            common::key(),
            LogOptions {
                segment_bytes: 3 << 20,
                ..real_opts(&kept)
            },
        )
        .expect("open");
        let more: Vec<Vec<u8>> = (0..12u8).map(|i| vec![b'k' + i; 110_000]).collect();
        for b in &more {
            log.append(Entry::public(1, b.clone()))
                .unwrap_or_else(|e| panic!("{ctx}\nappend: {e}"));
        }
        log.close().expect("close");
        assert!(common::segments(&dir).len() >= 2, "{ctx}\nno roll");
        let report = verify_log(&dir, &common::key().public(), &VerifyOptions::default())
            .unwrap_or_else(|e| panic!("{ctx}\nverify: {e}"));
        assert_eq!(report.events, size + 3 + 12, "{ctx}");
        let last = common::segments(&dir).pop().expect("a segment");
        assert_eq!(
            fs::metadata(&last).expect("segment").len(),
            3 << 20,
            "{ctx}\nthe new segment is not preallocated"
        );
    }
    assert!(discarded > 0, "no cut left a half-made spare behind");
}

/// A torn batch in a pre-zeroed segment (its fdatasync never happened), recovered by
/// zeroing; then appends into the zeroed bytes, and another torn batch there: the second
/// recovery still finds exactly the acknowledged events (and, of the torn batches, at most
/// each one whole), and nothing of the first torn batch.
#[test]
fn a_second_power_cut_after_a_recovery_still_recovers_exactly_the_acknowledged_events() {
    for seed in 0..24u64 {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("log");
        let kept = root.path().join("checkpoint");
        let log = Log::create(&dir, common::key(), real_opts(&kept)).expect("create");
        let mut acked = fill(&log, (0..8).map(|i| format!("before {i}").into_bytes()));
        log.close().expect("close");
        let mut story = vec![format!("seed {seed}")];
        for round in 0..2 {
            let fs = FaultStorage::new(seed * 2 + round);
            let log = Log::open(
                &dir,
                common::key(),
                LogOptions {
                    storage: Arc::new(fs.clone()),
                    checkpoint_file: None,
                    ..common::opts()
                },
            )
            .expect("open");
            story.push(format!("round {round}: open: {:?}", log.recovery()));
            // Acknowledged appends, then a batch of several pages whose fdatasync (the
            // second call from here) never happens.
            acked.extend(fill(
                &log,
                (0..3).map(|i| format!("round {round} acked {i}").into_bytes()),
            ));
            fs.cut_after(2);
            let torn: Vec<Entry> = (0..3u8)
                .map(|i| Entry::public(2, vec![b'0' + round as u8 + i; 5000]))
                .collect();
            assert!(log.append_batch(torn).is_err());
            let _ = log.close();
            story.extend(fs.apply_cut().into_iter().map(|n| format!("  {n}")));
        }
        let ctx = story.join("\n");
        let (size, recovery) = check_reopened(&dir, &kept, &acked, &ctx);
        let acked_n = acked.len() as u64;
        // Each torn batch is gone, or back whole if every page of it reached the disk.
        assert!(
            [0, 3, 6].contains(&(size - acked_n)),
            "{ctx}\n{size} events, {acked_n} acknowledged ({recovery:?})"
        );
        // Nothing of round 0's torn batch is left past the last acknowledged event, unless
        // it came back whole (and then it is followed by round 1's acknowledged appends).
        let reader = LogReader::open(&dir, None).expect("reader");
        for rec in reader.events_from(0).expect("iterate") {
            let rec = rec.expect("event");
            let body = rec.body.as_ref().expect("a body");
            assert!(
                body.bytes.len() != 5000 || body.bytes.iter().all(|b| *b == body.bytes[0]),
                "{ctx}\nevent {} mixes torn batches",
                rec.seq()
            );
        }
    }
}
