//! Backups: `scopehold backup --out FILE` writes one file holding a consistent copy of a state
//! directory while the daemon runs; `scopehold restore --from FILE` brings it back into a new
//! state directory, after checking every byte of it.
//!
//! **What a backup holds.** The key files `master.key`, `log.key` and `ca.key`, always sealed
//! under a passphrase ([`super::keyfile`]'s format): a sealed state's files go in as they are;
//! an unsealed state's keys are sealed for the backup under a passphrase given to `backup`
//! (the state directory itself stays as it is), and `backup` refuses without one. No backup
//! holds a plaintext key, so one opens exactly as easily as its passphrase is guessed. Then
//! `log.pub`, `ca.pem`, and the log's segments up to a signed checkpoint (each up to the
//! end of its data: a pre-zeroed segment's zero tail is left out). Left out: the index
//! (a cache, rebuilt on open), the spare segment (zeros made ahead of need), `LOCK`, the
//! socket, `ca-bundle.pem` (rewritten at every start) and the kept checkpoint, which for
//! the copy is the copy's own last checkpoint: a restore writes it from the log, so the two
//! cannot disagree.
//!
//! **Consistent while the daemon writes.** The copy ends at the last checkpoint in the log
//! when the backup starts ([`LogReader::committed_end`]): a prefix of the log ending at a
//! signed checkpoint. The writer only appends after it and every segment before the last is
//! complete, so a concurrent append cannot tear the copy. The last segment is fdatasync'd
//! before it is read, so a batch whose checkpoint the writer has written but not yet synced is
//! durable in the state directory too: a backup never holds events a crash could still take
//! back, and a restored log is always a prefix of the original, never a fork of it. The copy
//! is verified as it is written (every frame, the chain, every body against its commitment,
//! every checkpoint's signature, and that it extends the state's kept checkpoint, read before
//! the log is opened): a log that does not verify is not backed up.
//!
//! **Restore** checks everything before it writes anything: the digest, the structure, the
//! log (as above, with the backup's `log.pub`; against a kept checkpoint already at
//! `--checkpoint-file`, if that is outside the state directory and exists), that the
//! passphrase opens every key, that `log.pub` is `log.key`'s public key and that `ca.pem`
//! certifies `ca.key`. Then it fills a staging directory beside the target and renames it into
//! place: the target (which must not exist, or be an empty directory, and never a state
//! directory a daemon holds) appears whole or not at all.
//!
//! # Format, version 1
//!
//! Integers little endian.
//!
//! ```text
//! backup = header entry+ end
//! header = magic "SHBACKUP" (8) | version u16 = 1 | flags u8 | created_ms u64
//! entry  = tag u8 = 1 | name_len u8 | name (UTF-8) | len u64 | bytes
//! end    = tag u8 = 0 | digest [32]
//! ```
//!
//! - `flags`: bit 0 set when `backup` sealed the keys (the state directory was unsealed); the
//!   other bits are 0. `created_ms`: when the backup was taken, ms since the Unix epoch.
//! - Entries, in this order, each at most once: `log.pub`; `master.key`; `log.key`; `ca.key`
//!   and `ca.pem`, both or neither (a state directory made before the CA existed has
//!   neither); then `log/NNNNNNNNNNNNNNNNNNNN.seg` for each segment in order, at least one.
//!   No other name. A key entry is a sealed key file, never a raw key.
//! - Limits, checked before anything is allocated: a key file 4 KiB, `log.pub` 256 bytes,
//!   `ca.pem` 64 KiB, a segment 4 GiB, and no entry longer than the bytes left in the file.
//! - `digest`: BLAKE3 in derive-key mode, context `"ScopeHold backup v1 digest"`, over every
//!   byte before it (the end tag included); the file ends there. It tells damage (a changed
//!   byte, a cut file) apart with a clear message. What makes a backup trustworthy is what a
//!   restore checks besides: the sealing authenticates each key under the passphrase, and
//!   `log.pub`, the log and `ca.pem` must all fit those keys.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use scopehold_log::{
    Failure, LogKey, LogReader, PublicKey, SegmentVerifier, SignedCheckpoint, VerifyOptions,
    VerifyReport, parse_segment_name,
};
use zeroize::Zeroizing;

use super::home::{self, Home};
use super::keyfile::{self, KeyFile, Passphrase, Role};

/// The first bytes of a backup file.
pub const MAGIC: [u8; 8] = *b"SHBACKUP";
/// The format version written and read.
pub const VERSION: u16 = 1;
const HEADER_LEN: u64 = 8 + 2 + 1 + 8;
const TAG_END: u8 = 0;
const TAG_ENTRY: u8 = 1;
const DIGEST_LEN: u64 = 32;
/// `flags` bit 0: the keys were sealed by `backup` (the state directory was unsealed).
const FLAG_SEALED_BY_BACKUP: u8 = 1;
const DIGEST_CONTEXT: &str = "ScopeHold backup v1 digest";
const MAX_KEY: u64 = 4096;
const MAX_PUB: u64 = 256;
const MAX_PEM: u64 = 64 * 1024;
const MAX_SEGMENT: u64 = 4 << 30;

/// A backup that is damaged, cut short, not a backup at all, or whose contents do not verify
/// (the CLI exits with the verification-failed status for it).
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

fn damaged(from: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Damaged(format!(
        "the backup {} is damaged or altered: {why}; refusing to restore it, nothing was written",
        from.display()
    )))
}

/// Where an entry goes, in the order entries must come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    LogPub,
    Master,
    Log,
    CaKey,
    CaPem,
    Segment,
}

impl Slot {
    fn of(name: &str) -> Option<(Slot, u64)> {
        Some(match name {
            "log.pub" => (Slot::LogPub, MAX_PUB),
            "master.key" => (Slot::Master, MAX_KEY),
            "log.key" => (Slot::Log, MAX_KEY),
            "ca.key" => (Slot::CaKey, MAX_KEY),
            "ca.pem" => (Slot::CaPem, MAX_PEM),
            n => {
                parse_segment_name(n.strip_prefix("log/")?)?;
                (Slot::Segment, MAX_SEGMENT)
            }
        })
    }
    fn role(self) -> Option<Role> {
        match self {
            Slot::Master => Some(Role::Master),
            Slot::Log => Some(Role::Log),
            Slot::CaKey => Some(Role::Ca),
            _ => None,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn is_sealed_text(b: &[u8]) -> bool {
    b.starts_with(format!("{}\n", keyfile::MAGIC).as_bytes())
}

// ---------------------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------------------

/// The key material a backup carries, taken before any output is created (so a refusal or a
/// wrong passphrase leaves no file behind): each key file sealed, `log.pub`, `ca.pem`.
pub struct Keys {
    public: PublicKey,
    log_pub: Vec<u8>,
    /// Sealed key files' text, in the format's order.
    files: Vec<(Role, Zeroizing<Vec<u8>>)>,
    ca_pem: Option<Vec<u8>>,
    /// The state directory was unsealed: these were sealed for the backup.
    pub sealed_by_backup: bool,
    /// A passphrase was given and opened every key (always, when `sealed_by_backup`).
    pub passphrase_checked: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("public", &self.public)
            .field("sealed_by_backup", &self.sealed_by_backup)
            .finish_non_exhaustive()
    }
}

/// Where `backup` gets a passphrase: `--passphrase-file`, else (for an unsealed state only)
/// a prompt on the terminal.
#[derive(Debug, Clone, Default)]
pub struct BackupPassphrase {
    /// `--passphrase-file`: for a sealed state, its passphrase (checked against the keys);
    /// for an unsealed one, the passphrase to seal the keys with inside the backup.
    pub file: Option<PathBuf>,
}

/// Reads a small public file of the state directory (not following a symlink), bounded.
fn read_small(dir: &fs::File, root: &Path, name: &str, max: u64) -> Result<Vec<u8>> {
    let path = root.join(name);
    let f = home::open_at(dir, name, OFlag::O_RDONLY, Mode::empty())
        .map_err(|e| anyhow!("opening {} (a symlink is refused): {e}", path.display()))?;
    if !f.metadata()?.file_type().is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut b = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut b)
        .with_context(|| format!("reading {}", path.display()))?;
    if b.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(b)
}

fn exists_at(dir: &fs::File, name: &str) -> Result<bool> {
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(anyhow!("checking {name} in the state directory: {e}")),
    }
}

fn parse_pub(b: &[u8], what: &str) -> Result<PublicKey> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|t| PublicKey::from_hex(t.trim()).ok())
        .ok_or_else(|| anyhow!("{what} does not hold a public key (64 hex characters)"))
}

/// Checks that the raw keys fit the public files: `log.pub` is `log.key`'s public key and
/// `ca.pem` certifies `ca.key`. `what` names where they came from.
fn check_fit(
    raw: &[(Role, Zeroizing<[u8; 32]>)],
    public: &PublicKey,
    ca_pem: Option<&[u8]>,
    what: &str,
) -> Result<()> {
    for (role, k) in raw {
        match role {
            Role::Log if LogKey::from_seed(k).public() != *public => {
                bail!("{what}: log.pub is not the public key of log.key (replaced or mixed up)")
            }
            Role::Ca => {
                let pem = ca_pem.ok_or_else(|| anyhow!("{what}: ca.key without ca.pem"))?;
                super::ca::check_pair(k, pem, what)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Takes the state directory's keys for a backup. Sealed key files are taken as they are
/// (opened with the passphrase only if one is given, to check it); an unsealed state's keys
/// are sealed under the passphrase from `pass`, which is then required.
pub fn take_keys(home: &Home, pass: &BackupPassphrase) -> Result<Keys> {
    let root = &home.root;
    let sealed = home.is_sealed()?;
    let passphrase = match (&pass.file, sealed) {
        (Some(f), _) => Some(Passphrase::from_file(f)?),
        (None, true) => None,
        (None, false) => {
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() {
                bail!(
                    "the keys in {} are not sealed, and a backup never holds a plain key: it seals them under a passphrase of its own. Pass --passphrase-file FILE (restoring the backup will need the same passphrase), or run on a terminal to be asked",
                    root.display()
                );
            }
            Some(Passphrase::prompt_new(
                "pass --passphrase-file FILE to seal the keys inside the backup",
            )?)
        }
    };
    // The files are read under the state directory's lock, which `passphrase change` holds
    // while it renames: never half of one change. The sealing comes after, unlocked.
    let (files, log_pub, ca_pem) = {
        let dir = home::lock(home::open_private_dir(root)?)?;
        for role in [Role::Master, Role::Log, Role::Ca] {
            if home::read_pending(&dir, root, role)?.is_some() {
                bail!(
                    "{} holds {}.new, left by an interrupted `passphrase change`: start the daemon once (it finishes the change) or run `scopehold passphrase change` again, then back up",
                    root.display(),
                    role.file_name()
                );
            }
        }
        let has_ca = exists_at(&dir, Role::Ca.file_name())?;
        let mut files = Vec::new();
        for role in [Role::Master, Role::Log, Role::Ca] {
            if role == Role::Ca && !has_ca {
                continue;
            }
            files.push((role, home::read_key(&dir, root, role)?));
        }
        let log_pub = read_small(&dir, root, "log.pub", MAX_PUB)?;
        let ca_pem = if has_ca {
            Some(read_small(&dir, root, super::ca::CA_CERT, MAX_PEM)?)
        } else {
            None
        };
        (files, log_pub, ca_pem)
    };
    if files.iter().any(|(_, f)| f.is_sealed() != sealed) {
        bail!(
            "{}: some key files are sealed and others not (or they changed while the backup started); run `scopehold passphrase change` to seal them all, then back up",
            root.display()
        );
    }
    let public = parse_pub(&log_pub, &root.join("log.pub").display().to_string())?;
    // Open every key the passphrase can open: all of them for an unsealed state, all of them
    // with a passphrase given for a sealed one (a check that the backup can be restored).
    let mut raw = Vec::new();
    if !sealed || passphrase.is_some() {
        for (role, f) in &files {
            let path = root.join(role.file_name());
            raw.push((*role, f.open(*role, &path, passphrase.as_ref())?));
        }
        check_fit(
            &raw,
            &public,
            ca_pem.as_deref(),
            &root.display().to_string(),
        )?;
    }
    let mut out = Vec::new();
    for (role, f) in files {
        let text = match f {
            KeyFile::Sealed(b) => b,
            KeyFile::Plain(_) => {
                let key = raw
                    .iter()
                    .find(|(r, _)| *r == role)
                    .map(|(_, k)| k)
                    .ok_or_else(|| anyhow!("{} was not opened", role.file_name()))?;
                let p = passphrase
                    .as_ref()
                    .ok_or_else(|| anyhow!("no passphrase to seal {} with", role.file_name()))?;
                Zeroizing::new(keyfile::seal(role, key, p, keyfile::KDF_WRITE)?.into_bytes())
            }
        };
        if !is_sealed_text(&text) {
            bail!("{} did not seal", role.file_name());
        }
        out.push((role, text));
    }
    Ok(Keys {
        public,
        log_pub,
        files: out,
        ca_pem,
        sealed_by_backup: !sealed,
        passphrase_checked: passphrase.is_some(),
    })
}

/// What a backup holds.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    /// The log copied: its identity, events (`0..events`), head, last checkpoint.
    pub report: VerifyReport,
    /// Segment files copied.
    pub segments: usize,
    /// Whether `ca.key` and `ca.pem` were in the state directory (and so in the backup).
    pub ca: bool,
    /// Bytes written.
    pub bytes: u64,
    /// The kept checkpoint the copied log was shown to extend, if there was one.
    pub kept_checkpoint: Option<PathBuf>,
}

/// Writes through a BLAKE3 hasher, counting.
struct Out<'w> {
    w: &'w mut dyn Write,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hasher.update(b);
        self.bytes += b.len() as u64;
        self.w.write_all(b)
    }
    fn entry(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let n = u8::try_from(name.len()).map_err(|_| std::io::Error::other("name too long"))?;
        self.put(&[TAG_ENTRY, n])?;
        self.put(name.as_bytes())?;
        self.put(&(bytes.len() as u64).to_le_bytes())?;
        self.put(bytes)
    }
}

/// Reads the first `len` bytes of `path` (`None`: all of it).
fn read_prefix(path: &Path, len: Option<u64>) -> Result<Vec<u8>> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut b = Vec::new();
    match len {
        None => (&f).read_to_end(&mut b),
        Some(n) => (&f).take(n).read_to_end(&mut b),
    }
    .with_context(|| format!("reading {}", path.display()))?;
    if len.is_some_and(|n| b.len() as u64 != n) {
        bail!("{} is shorter than its committed end", path.display());
    }
    Ok(b)
}

/// Writes the backup to `w`: the keys taken by [`take_keys`], then the log up to its last
/// checkpoint, verified as it is copied. An error leaves `w` incomplete (the caller writes to
/// a temporary file and discards it).
pub fn write(home: &Home, keys: &Keys, w: &mut dyn Write) -> Result<BackupSummary> {
    // The kept checkpoint first, then the log: the log found is then at least as long as
    // the kept checkpoint, which it must extend.
    let kept = if home.checkpoint_file.exists() {
        Some(SignedCheckpoint::read_file(&home.checkpoint_file)?)
    } else {
        None
    };
    let reader = LogReader::open(&home.log_dir(), Some(&keys.public))
        .with_context(|| format!("opening the log in {}", home.log_dir().display()))?;
    let segments = reader.segments();
    let end = reader.committed_end();
    let last = segments
        .last()
        .ok_or_else(|| anyhow!("the log in {} has no segment", home.log_dir().display()))?;
    // Durable before copied: a checkpoint the writer has written but not yet synced is synced
    // here (fdatasync through any descriptor flushes the file's pages), so the backup holds
    // nothing a crash of the daemon could still take back.
    fs::File::open(last)
        .and_then(|f| f.sync_data())
        .with_context(|| format!("syncing {}", last.display()))?;
    let opts = VerifyOptions {
        all_signatures: true,
        trusted: kept,
    };
    let mut verifier = SegmentVerifier::new(&keys.public, &opts);
    let mut out = Out {
        w,
        hasher: blake3::Hasher::new_derive_key(DIGEST_CONTEXT),
        bytes: 0,
    };
    let flags = if keys.sealed_by_backup {
        FLAG_SEALED_BY_BACKUP
    } else {
        0
    };
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.push(flags);
    header.extend_from_slice(&now_ms().to_le_bytes());
    out.put(&header)?;
    out.entry("log.pub", &keys.log_pub)?;
    for (role, text) in &keys.files {
        out.entry(role.file_name(), text)?;
        if *role == Role::Ca
            && let Some(pem) = &keys.ca_pem
        {
            out.entry(super::ca::CA_CERT, pem)?;
        }
    }
    for (i, seg) in segments.iter().enumerate() {
        let name = seg
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("segment {} has no name", seg.display()))?;
        let is_last = i + 1 == segments.len();
        let bytes = read_prefix(seg, is_last.then_some(end))?;
        verifier.segment(name, &bytes).map_err(|e| {
            anyhow!(
                "the log in {} does not verify, so it is not backed up: {e}",
                home.log_dir().display()
            )
        })?;
        // Up to the end of its data: the zeros a pre-zeroed segment was preallocated with
        // are no part of the log (a segment cut there is whole, its data ending at the end
        // of the file), and a backup of a mostly empty 16 MiB segment stays small.
        let data = verifier
            .data_len()
            .map_or(bytes.len(), |n| (n as usize).min(bytes.len()));
        out.entry(&format!("log/{name}"), &bytes[..data])?;
    }
    let report = verifier.finish().map_err(|e| {
        anyhow!(
            "the log in {} does not verify, so it is not backed up: {e}",
            home.log_dir().display()
        )
    })?;
    if report.events != reader.size() {
        bail!(
            "copied {} events where the log had {}",
            report.events,
            reader.size()
        );
    }
    out.put(&[TAG_END])?;
    let digest = out.hasher.finalize();
    out.w.write_all(digest.as_bytes())?;
    out.w.flush()?;
    Ok(BackupSummary {
        report,
        segments: segments.len(),
        ca: keys.ca_pem.is_some(),
        bytes: out.bytes + DIGEST_LEN,
        kept_checkpoint: kept.map(|_| home.checkpoint_file.clone()),
    })
}

// ---------------------------------------------------------------------------------------
// Reading a backup
// ---------------------------------------------------------------------------------------

/// Pass 0: the digest over every byte before it, against the one stored at the end.
fn check_digest(from: &Path) -> Result<[u8; 32]> {
    let f =
        fs::File::open(from).with_context(|| format!("opening the backup {}", from.display()))?;
    let len = f.metadata()?.len();
    if len < HEADER_LEN + 1 + DIGEST_LEN {
        return Err(damaged(
            from,
            format!("{len} bytes is too short for a backup"),
        ));
    }
    let mut r = BufReader::with_capacity(1 << 20, f);
    // The magic first: a file that is no backup at all is told so, not called damaged.
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .with_context(|| format!("reading the backup {}", from.display()))?;
    if magic != MAGIC {
        return Err(anyhow::Error::new(Damaged(format!(
            "{} is not a ScopeHold backup (no SHBACKUP header); refusing to restore it, nothing was written",
            from.display()
        ))));
    }
    let mut h = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
    h.update(&magic);
    let mut left = len - DIGEST_LEN - 8;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n])
            .with_context(|| format!("reading the backup {}", from.display()))?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored)
        .with_context(|| format!("reading the backup {}", from.display()))?;
    let d = *h.finalize().as_bytes();
    if d != stored {
        return Err(damaged(
            from,
            "its digest does not match its contents (a changed byte, or a file cut short or extended)",
        ));
    }
    Ok(d)
}

/// One entry read.
struct Entry {
    slot: Slot,
    name: String,
    bytes: Zeroizing<Vec<u8>>,
}

/// A pass over a backup file: the header, then entries in order, each checked against the
/// format's order and limits before its bytes are read; the digest recomputed on the way.
struct Reader {
    from: PathBuf,
    r: BufReader<fs::File>,
    hasher: blake3::Hasher,
    pos: u64,
    len: u64,
    flags: u8,
    created_ms: u64,
    last: Option<Slot>,
    last_segment: Option<u64>,
    ended: bool,
}

impl Reader {
    fn open(from: &Path) -> Result<Self> {
        let f = fs::File::open(from)
            .with_context(|| format!("opening the backup {}", from.display()))?;
        let len = f.metadata()?.len();
        let mut r = Reader {
            from: from.to_path_buf(),
            r: BufReader::with_capacity(1 << 20, f),
            hasher: blake3::Hasher::new_derive_key(DIGEST_CONTEXT),
            pos: 0,
            len,
            flags: 0,
            created_ms: 0,
            last: None,
            last_segment: None,
            ended: false,
        };
        let mut h = [0u8; HEADER_LEN as usize];
        r.take(&mut h)?;
        if h[..8] != MAGIC {
            return Err(damaged(from, "not a ScopeHold backup (no SHBACKUP header)"));
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != VERSION {
            bail!(
                "the backup {} is format version {version}; this scopehold reads version {VERSION}",
                from.display()
            );
        }
        r.flags = h[10];
        if r.flags & !FLAG_SEALED_BY_BACKUP != 0 {
            return Err(damaged(from, format!("unknown flags {:#04x}", r.flags)));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&h[11..19]);
        r.created_ms = u64::from_le_bytes(t);
        Ok(r)
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<()> {
        let at = self.pos;
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged(&self.from, format!("cut short at byte {at}"))
            } else {
                anyhow!("reading the backup {}: {e}", self.from.display())
            }
        })?;
        self.hasher.update(buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// The next entry, or `None` at the end (whose digest this pass then recomputed).
    fn next(&mut self) -> Result<Option<Entry>> {
        if self.ended {
            return Ok(None);
        }
        let at = self.pos;
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        match tag[0] {
            TAG_ENTRY => {}
            TAG_END => {
                self.ended = true;
                if self.pos + DIGEST_LEN != self.len {
                    return Err(damaged(
                        &self.from,
                        format!("the end record at byte {at} is not followed by exactly a digest"),
                    ));
                }
                return Ok(None);
            }
            t => {
                return Err(damaged(
                    &self.from,
                    format!("unknown record tag {t} at byte {at}"),
                ));
            }
        }
        let mut n = [0u8; 1];
        self.take(&mut n)?;
        let mut name = vec![0u8; n[0] as usize];
        self.take(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| {
            damaged(
                &self.from,
                format!("an entry name at byte {at} is not UTF-8"),
            )
        })?;
        let (slot, max) = Slot::of(&name)
            .ok_or_else(|| damaged(&self.from, format!("unknown entry {name:?} at byte {at}")))?;
        let in_order = match self.last {
            None => slot == Slot::LogPub,
            Some(Slot::LogPub) => slot == Slot::Master,
            Some(Slot::Master) => slot == Slot::Log,
            // The CA is optional, but ca.key and ca.pem come as a pair.
            Some(Slot::Log) => slot == Slot::CaKey || slot == Slot::Segment,
            Some(Slot::CaKey) => slot == Slot::CaPem,
            Some(Slot::CaPem | Slot::Segment) => slot == Slot::Segment,
        };
        if !in_order {
            return Err(damaged(
                &self.from,
                format!("entry {name} at byte {at} is out of place"),
            ));
        }
        if slot == Slot::Segment {
            let first = name
                .strip_prefix("log/")
                .and_then(parse_segment_name)
                .ok_or_else(|| damaged(&self.from, format!("bad segment name {name}")))?;
            if self.last_segment.is_some_and(|p| first <= p) {
                return Err(damaged(
                    &self.from,
                    format!("segment {name} is out of order"),
                ));
            }
            self.last_segment = Some(first);
        }
        self.last = Some(slot);
        let mut l = [0u8; 8];
        self.take(&mut l)?;
        let len = u64::from_le_bytes(l);
        let left = self.len.saturating_sub(self.pos + 1 + DIGEST_LEN);
        if len > max || len > left {
            return Err(damaged(
                &self.from,
                format!(
                    "entry {name} claims {len} bytes (at most {}, and {left} are left)",
                    max
                ),
            ));
        }
        let mut bytes = Zeroizing::new(vec![0u8; len as usize]);
        self.take(&mut bytes)?;
        if slot.role().is_some() && !is_sealed_text(&bytes) {
            return Err(damaged(
                &self.from,
                format!("{name} is not a sealed key file (a backup never holds a plain key)"),
            ));
        }
        Ok(Some(Entry { slot, name, bytes }))
    }

    /// After the end: what the entries so far must have included, and the digest.
    fn finish(self) -> Result<[u8; 32]> {
        if !self.ended {
            return Err(damaged(&self.from, "no end record"));
        }
        if self.last != Some(Slot::Segment) {
            return Err(damaged(
                &self.from,
                "it holds no log segment (or no log.pub, master.key, log.key)",
            ));
        }
        Ok(*self.hasher.finalize().as_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------

/// What a restore brought back.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// The state directory written.
    pub root: PathBuf,
    /// The log restored: its identity, events, head, last checkpoint.
    pub report: VerifyReport,
    /// The log's public key.
    pub public_key: PublicKey,
    /// When the backup was taken.
    pub created_ms: u64,
    /// The backed-up state was unsealed; its keys are now sealed under the backup's
    /// passphrase.
    pub sealed_by_backup: bool,
    /// Whether the backup held the CA (`ca.key`, `ca.pem`).
    pub ca: bool,
    /// Segment files written.
    pub segments: usize,
    /// Where the kept checkpoint was written.
    pub checkpoint_file: PathBuf,
}

/// Checks the target: absent, or an empty directory of ours; never one a daemon holds.
/// Returns whether it exists.
fn check_target(root: &Path) -> Result<bool> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(anyhow!("checking {}: {e}", root.display())),
    };
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symlink; refusing it (restore into the real path)",
            root.display()
        );
    }
    if !meta.is_dir() {
        bail!("{} exists and is not a directory", root.display());
    }
    if scopehold_log::is_live(&root.join("log")) {
        bail!(
            "a daemon is running on {} (it holds log/LOCK): stop it; a restore goes only into a new or empty state directory, never over a live one",
            root.display()
        );
    }
    let mut entries = fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} is not empty: a restore goes only into a new or empty directory, never over a state directory (move it away first, or restore with --home NEWDIR)",
            root.display()
        );
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        bail!(
            "{} is owned by uid {}, not by this process's uid",
            root.display(),
            meta.uid()
        );
    }
    Ok(true)
}

/// Creates `name` in `dir` with `mode` (`O_EXCL|O_NOFOLLOW`), writes and syncs it.
fn create_file(dir: &fs::File, shown: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = home::open_at(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| anyhow!("creating {}: {e}", shown.join(name).display()))?;
    // The umask may have narrowed the mode; set through the descriptor.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", shown.join(name).display()))
}

fn open_dir(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Removes the staging directory unless the restore got to its rename.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Restores the backup `from` into `home.root`, which must not exist or be an empty
/// directory. Everything is checked first (see the module documentation); `passphrase` is
/// asked for once the log has verified.
pub fn restore(
    home: &Home,
    from: &Path,
    passphrase: impl FnOnce() -> Result<Passphrase>,
) -> Result<RestoreSummary> {
    let root = &home.root;
    let exists = check_target(root)?;
    // The kept checkpoint: inside the new state directory by default, written from the log.
    // One kept elsewhere that already exists must be extended by the backup: else the
    // restore is a rollback past what it recorded (or another log), and is refused.
    let inside = home.checkpoint_file == root.join("checkpoint");
    let kept = if !inside && home.checkpoint_file.exists() {
        Some(SignedCheckpoint::read_file(&home.checkpoint_file)?)
    } else {
        None
    };

    // Pass 0: the digest. Pass 1: the structure, and the log verified.
    let digest = check_digest(from)?;
    let mut r = Reader::open(from)?;
    let sealed_by_backup = r.flags & FLAG_SEALED_BY_BACKUP != 0;
    let created_ms = r.created_ms;
    let first = r.next()?.ok_or_else(|| damaged(from, "it holds nothing"))?;
    let public = parse_pub(&first.bytes, &format!("{}:log.pub", from.display()))
        .map_err(|e| damaged(from, e))?;
    let opts = VerifyOptions {
        all_signatures: true,
        trusted: kept,
    };
    let mut verifier = SegmentVerifier::new(&public, &opts);
    let mut keys: Vec<(Role, Zeroizing<Vec<u8>>)> = Vec::new();
    let mut ca_pem = None;
    let mut segments = 0usize;
    let log_failure = |e: scopehold_log::VerifyError| match e.failure {
        Failure::TrustedCheckpoint(_) | Failure::Rollback { .. } => anyhow!(
            "the checkpoint kept at {} does not fit this backup: {e}. It is what catches a log cut back to an older state; remove it (or choose another --checkpoint-file) only if restoring this older state is what you mean",
            home.checkpoint_file.display()
        ),
        _ => damaged(from, format!("its log does not verify: {e}")),
    };
    while let Some(e) = r.next()? {
        match e.slot {
            Slot::Segment => {
                let name = e.name.strip_prefix("log/").unwrap_or(&e.name);
                verifier.segment(name, &e.bytes).map_err(log_failure)?;
                segments += 1;
            }
            Slot::CaPem => ca_pem = Some(e.bytes.to_vec()),
            s => {
                let role = s.role().ok_or_else(|| damaged(from, "a second log.pub"))?;
                keys.push((role, e.bytes));
            }
        }
    }
    if r.finish()? != digest {
        return Err(damaged(from, "it changed while it was being read"));
    }
    let report = verifier.finish().map_err(log_failure)?;

    // The keys: every one opens with the passphrase, and fits log.pub and ca.pem.
    let pass = passphrase()?;
    let mut raw = Vec::new();
    for (role, text) in &keys {
        let shown = PathBuf::from(format!("{}:{}", from.display(), role.file_name()));
        raw.push((
            *role,
            Zeroizing::new(keyfile::unseal(*role, &shown, text, &pass)?),
        ));
    }
    drop(pass);
    check_fit(
        &raw,
        &public,
        ca_pem.as_deref(),
        &from.display().to_string(),
    )
    .map_err(|e| damaged(from, e))?;
    drop(raw);

    // Everything checked: write a staging directory beside the target, then rename it in.
    let name = root
        .file_name()
        .ok_or_else(|| anyhow!("{} names no directory", root.display()))?;
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow!("OS random source: {e}"))?;
    let staging_name = format!(".{}.restore-{}", name.to_string_lossy(), hex::encode(rnd));
    let staging = parent.join(&staging_name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let mut guard = Staging(Some(staging.clone()));
    let sdir = open_dir(&staging)?;
    sdir.set_permissions(fs::Permissions::from_mode(0o700))?;
    nix::sys::stat::mkdirat(&sdir, "log", Mode::from_bits_truncate(0o700))
        .map_err(|e| anyhow!("creating {}: {e}", staging.join("log").display()))?;
    let log_dir = staging.join("log");
    let ldir = open_dir(&log_dir)?;
    ldir.set_permissions(fs::Permissions::from_mode(0o700))?;

    // Pass 2: the same bytes again (the digest proves it), written out.
    let mut r = Reader::open(from)?;
    while let Some(e) = r.next()? {
        match e.slot {
            Slot::Segment => {
                let n = e.name.strip_prefix("log/").unwrap_or(&e.name);
                create_file(&ldir, &log_dir, n, &e.bytes, 0o600)?;
            }
            Slot::LogPub | Slot::CaPem => create_file(&sdir, &staging, &e.name, &e.bytes, 0o644)?,
            _ => create_file(&sdir, &staging, &e.name, &e.bytes, 0o600)?,
        }
    }
    if r.finish()? != digest {
        return Err(damaged(from, "it changed while it was being restored"));
    }
    let cp_text = report.checkpoint.checkpoint().to_text();
    if inside {
        create_file(&sdir, &staging, "checkpoint", cp_text.as_bytes(), 0o600)?;
    }
    ldir.sync_all()?;
    sdir.sync_all()?;
    let pdir = open_dir(&parent)?;
    let placed = if exists {
        // Over an empty directory only: rename(2) refuses a directory that is not empty.
        nix::fcntl::renameat(&pdir, staging_name.as_str(), &pdir, name)
    } else {
        match nix::fcntl::renameat2(
            &pdir,
            staging_name.as_str(),
            &pdir,
            name,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                nix::fcntl::renameat(&pdir, staging_name.as_str(), &pdir, name)
            }
            r => r,
        }
    };
    placed.map_err(|e| {
        anyhow!(
            "putting the restored state in place at {}: {e} (it changed during the restore?)",
            root.display()
        )
    })?;
    guard.0 = None;
    pdir.sync_all()
        .with_context(|| format!("syncing {}", parent.display()))?;
    if !inside {
        write_replace(&home.checkpoint_file, cp_text.as_bytes())?;
    }
    Ok(RestoreSummary {
        root: root.clone(),
        report,
        public_key: public,
        created_ms,
        sealed_by_backup,
        ca: ca_pem.is_some(),
        segments,
        checkpoint_file: home.checkpoint_file.clone(),
    })
}

/// Writes `path` atomically (a temporary name beside it, synced, renamed, the directory
/// synced): the kept checkpoint when it lives outside the state directory.
fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", path.display()))?;
    let dir = open_dir(&parent)?;
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| anyhow!("OS random source: {e}"))?;
    let tmp = format!(".{}.{}", name.to_string_lossy(), hex::encode(rnd));
    create_file(&dir, &parent, &tmp, bytes, 0o600)?;
    nix::fcntl::renameat(&dir, tmp.as_str(), &dir, name)
        .map_err(|e| anyhow!("renaming into {}: {e}", path.display()))?;
    dir.sync_all()
        .with_context(|| format!("syncing {}", parent.display()))
}
