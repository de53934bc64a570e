//! The state directory and what lives in it.
//!
//! ```text
//! $SCOPEHOLD_HOME/              0700
//!   log.key                     0600  the log's ed25519 signing key (32-byte seed), plain or sealed
//!   log.pub                           the log's public key, hex: give it to auditors
//!   master.key                  0600  wraps the data key of every secret version, plain or sealed
//!   ca.key, ca.pem, ca-bundle.pem       the HTTPS_PROXY certificate authority (see `super::ca`)
//!   log/                        0700  segments, index, LOCK (see log/FORMAT.md)
//!   checkpoint                        the kept checkpoint (movable: --checkpoint-file)
//! ```
//!
//! The directory must be owned by the uid that runs the daemon and writable by no one else,
//! and is never reached through a symlink: a directory another uid made, or could swap
//! files in, is refused rather than adopted. The key files are opened relative to the
//! directory's descriptor with `O_NOFOLLOW`. With a passphrase (`--passphrase-file`, or a
//! prompt) both key files are sealed: see [`super::keyfile`] for the format.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use scopehold_log::{LogKey, LogOptions, PublicKey};
use zeroize::Zeroizing;

use super::keyfile::{self, KeyFile, Passphrase, PassphraseSource, Role};
use super::seal::MasterKey;
use crate::domain::Name;

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
    /// Where the kept checkpoint lives (default: inside the state directory).
    pub checkpoint_file: PathBuf,
    /// Open the log although its kept checkpoint is missing (recovery by hand).
    pub accept_missing_checkpoint: bool,
    /// Where the passphrase of a sealed state comes from; at `init`, a file here seals the
    /// new keys.
    pub passphrase: PassphraseSource,
}

/// `$SCOPEHOLD_HOME` is read by clap (`--home`, env); this is the fallback: the XDG data
/// directory.
pub fn default_root() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("scopehold"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither SCOPEHOLD_HOME, XDG_DATA_HOME nor HOME is set: pass --home DIR")?;
    Ok(PathBuf::from(home).join(".local/share/scopehold"))
}

impl Home {
    pub fn new(root: Option<PathBuf>, checkpoint_file: Option<PathBuf>) -> Result<Self> {
        let root = match root {
            Some(r) => r,
            None => default_root()?,
        };
        let checkpoint_file = checkpoint_file.unwrap_or_else(|| root.join("checkpoint"));
        Ok(Self {
            root,
            checkpoint_file,
            accept_missing_checkpoint: false,
            passphrase: PassphraseSource::default(),
        })
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    pub fn log_key(&self) -> PathBuf {
        self.root.join("log.key")
    }
    pub fn log_pub(&self) -> PathBuf {
        self.root.join("log.pub")
    }
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }
    pub fn is_initialised(&self) -> bool {
        self.log_key().exists()
    }
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            checkpoint_file: Some(self.checkpoint_file.clone()),
            // Serial group commit: the pipelined form (signing the next batch while the last
            // is fdatasync'd) forms smaller batches and served fewer resolutions at 4 to 64
            // agents on two cores (daemon_bench, 2026-12-02: 16 agents 21.8k/s against 29.0k/s).
            pipeline: false,
            accept_missing_checkpoint: self.accept_missing_checkpoint,
            ..LogOptions::default()
        }
    }
    pub fn public_key(&self) -> Result<PublicKey> {
        let p = self.log_pub();
        PublicKey::from_arg(&p.to_string_lossy()).map_err(anyhow::Error::msg)
    }

    /// Creates the state directory (0700) and every key ScopeHold needs, and an empty log
    /// with its genesis checkpoint. Refuses to touch an initialised directory, and refuses an
    /// existing directory that another uid owns, that group or others can write, or that is
    /// a symlink. With `passphrase.file` set, both keys are sealed under that passphrase.
    pub fn init(&self) -> Result<PublicKey> {
        let pass = match &self.passphrase.file {
            Some(f) => Some(Passphrase::from_file(f)?),
            None => None,
        };
        self.init_with(pass.as_ref())
    }

    fn init_with(&self, pass: Option<&Passphrase>) -> Result<PublicKey> {
        if fs::symlink_metadata(self.log_key()).is_ok() {
            bail!(
                "{} is already initialised (log.key exists)",
                self.root.display()
            );
        }
        let dir = create_private_dir(&self.root)?;
        let seed = keyfile::random_key()?;
        let key = LogKey::from_seed(&seed);
        let public = key.public();
        let master = keyfile::random_key()?;
        write_key(&dir, &self.root, Role::Master, &master, pass)?;
        write_key(&dir, &self.root, Role::Log, &seed, pass)?;
        // The HTTPS_PROXY certificate authority: ca.key (sealed like the others), ca.pem.
        super::ca::create_at(&dir, &self.root, pass)?;
        drop((seed, master));
        keyfile::sync_dir(&self.root)?;
        public.write_file(&self.log_pub())?;
        let log = scopehold_log::Log::create(&self.log_dir(), key, self.log_options())
            .with_context(|| format!("creating the log in {}", self.log_dir().display()))?;
        // The uid that initialised the state directory, which owns it, is the first admin.
        let uid = dir.metadata()?.uid();
        let first = crate::domain::Event::MemberAdded {
            member: member_name_for(uid),
            uid,
            admin: true,
            by: crate::domain::Actor::Init,
            host: None,
        };
        log.append(first.to_entry()?)?;
        log.close().map_err(anyhow::Error::msg)?;
        Ok(public)
    }

    /// Checks the state directory (ours, private, not a symlink) and loads both keys, asking
    /// for the passphrase if they are sealed. Finishes a `passphrase change` that was cut off
    /// between its renames.
    pub fn load_keys(&self) -> Result<(LogKey, MasterKey)> {
        let dir = lock(open_private_dir(&self.root)?)?;
        let keys = self.load_raw(&dir, &self.passphrase)?;
        if keys.master_sealed != keys.log_sealed {
            bail!(
                "{}: one key file is sealed and the other is not; run `scopehold passphrase change` to seal both",
                self.root.display()
            );
        }
        Ok((
            LogKey::from_seed(&keys.log),
            MasterKey::from_key(keys.master),
        ))
    }

    /// Whether the state directory's keys are sealed under a passphrase.
    pub fn is_sealed(&self) -> Result<bool> {
        let dir = open_private_dir(&self.root)?;
        Ok(read_key(&dir, &self.root, Role::Master)?.is_sealed()
            || read_key(&dir, &self.root, Role::Log)?.is_sealed())
    }

    /// `passphrase change`: re-wraps both keys under a new passphrase (sealing an unsealed
    /// state), leaving the log alone. Both new files are written under temporary names and
    /// synced before either is renamed into place; a crash between the two renames is
    /// finished by the next load with the new passphrase.
    pub fn change_passphrase(
        &self,
        old: &PassphraseSource,
        new: impl FnOnce() -> Result<Passphrase>,
    ) -> Result<()> {
        let dir = lock(open_private_dir(&self.root)?)?;
        // The old passphrase is checked before the new one is asked for.
        let keys = self.load_raw(&dir, old)?;
        let new = new()?;
        let new = &new;
        for (role, key) in [(Role::Log, &keys.log), (Role::Master, &keys.master)] {
            let name = pending_name(role);
            let bytes = keyfile::encode(role, key, Some(new))?;
            write_at(&dir, &self.root, &name, &bytes)?;
        }
        // ca.key too, renamed last (a load finishes or discards its ca.key.new on its own).
        let ca = super::ca::write_pending(&dir, &self.root, keys.pass.as_ref(), new)?;
        dir.sync_all()
            .with_context(|| format!("syncing {}", self.root.display()))?;
        let roles: &[Role] = if ca {
            &[Role::Log, Role::Master, Role::Ca]
        } else {
            &[Role::Log, Role::Master]
        };
        for &role in roles {
            nix::fcntl::renameat(&*dir, pending_name(role).as_str(), &*dir, role.file_name())
                .map_err(|e| {
                    anyhow!(
                        "renaming {} into place: {e}",
                        self.root.join(pending_name(role)).display()
                    )
                })?;
        }
        dir.sync_all()
            .with_context(|| format!("syncing {}", self.root.display()))?;
        Ok(())
    }

    /// Both raw keys, opened with `pass` if any file is sealed. A `*.new` file left by an
    /// interrupted change is taken (and renamed into place) when it opens with the
    /// passphrase given, else removed as stale.
    fn load_raw(&self, dir: &fs::File, pass: &PassphraseSource) -> Result<RawKeys> {
        let master = read_key(dir, &self.root, Role::Master)?;
        let log = read_key(dir, &self.root, Role::Log)?;
        let pending = |role| read_pending(dir, &self.root, role);
        let (pm, pl) = (pending(Role::Master)?, pending(Role::Log)?);
        let p = if master.is_sealed() || log.is_sealed() {
            Some(pass.get()?)
        } else {
            None
        };
        // Each role decided first; files are renamed or removed only once both keys opened,
        // so a failed attempt (a wrong passphrase) changes nothing.
        let decide = |role: Role, main: KeyFile, pend: Option<KeyFile>| -> Result<_> {
            let path = self.root.join(role.file_name());
            if let Some(pf) = pend {
                let ppath = self.root.join(pending_name(role));
                if let Ok(k) = pf.open(role, &ppath, p.as_ref()) {
                    return Ok((k, pf.is_sealed(), Some(Pending::Take)));
                }
                let k = main.open(role, &path, p.as_ref())?;
                return Ok((k, main.is_sealed(), Some(Pending::Stale)));
            }
            Ok((main.open(role, &path, p.as_ref())?, main.is_sealed(), None))
        };
        let (m, ms, m_act) = decide(Role::Master, master, pm)?;
        let (l, ls, l_act) = decide(Role::Log, log, pl)?;
        for (role, act) in [(Role::Log, l_act), (Role::Master, m_act)] {
            let name = pending_name(role);
            match act {
                Some(Pending::Take) => {
                    nix::fcntl::renameat(dir, name.as_str(), dir, role.file_name())
                        .map_err(|e| anyhow!("finishing a passphrase change ({name}): {e}"))?;
                    tracing::info!(file = %self.root.join(role.file_name()).display(), "finished an interrupted passphrase change");
                }
                Some(Pending::Stale) => {
                    nix::unistd::unlinkat(
                        dir,
                        name.as_str(),
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    )
                    .map_err(|e| anyhow!("removing the stale {name}: {e}"))?;
                }
                None => continue,
            }
            dir.sync_all()
                .with_context(|| format!("syncing {}", self.root.display()))?;
        }
        Ok(RawKeys {
            master: m,
            log: l,
            master_sealed: ms,
            log_sealed: ls,
            pass: p,
        })
    }
}

/// What to do with a `*.new` key file found at load: rename it into place (it opened with
/// the passphrase given: the change it belongs to is finished) or remove it (stale).
enum Pending {
    Take,
    Stale,
}

/// Both keys' bytes (zeroized on drop) and whether each file was sealed.
struct RawKeys {
    master: Zeroizing<[u8; 32]>,
    log: Zeroizing<[u8; 32]>,
    master_sealed: bool,
    log_sealed: bool,
    /// The passphrase that opened them, if they were sealed (ca.key is opened with it too).
    pass: Option<Passphrase>,
}

fn pending_name(role: Role) -> String {
    format!("{}.new", role.file_name())
}

pub(super) fn lock(dir: fs::File) -> Result<Flock<fs::File>> {
    // One key loader or passphrase change at a time on a state directory.
    Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking the state directory: {e}"))
}

pub(super) fn open_at(
    dir: &fs::File,
    name: &str,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<fs::File> {
    nix::fcntl::openat(
        dir.as_fd(),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
    .map(fs::File::from)
}

pub(super) fn read_key(dir: &fs::File, root: &Path, role: Role) -> Result<KeyFile> {
    let path = root.join(role.file_name());
    let f = open_at(dir, role.file_name(), OFlag::O_RDONLY, Mode::empty()).map_err(|e| {
        anyhow!(
            "opening key file {} (a symlink is refused): {e}",
            path.display()
        )
    })?;
    KeyFile::from_file(f, &path)
}

pub(super) fn read_pending(dir: &fs::File, root: &Path, role: Role) -> Result<Option<KeyFile>> {
    let name = pending_name(role);
    match open_at(dir, &name, OFlag::O_RDONLY, Mode::empty()) {
        Ok(f) => Ok(Some(KeyFile::from_file(f, &root.join(&name))?)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(anyhow!("opening {}: {e}", root.join(&name).display())),
    }
}

/// Creates `name` in `dir` (`O_EXCL|O_NOFOLLOW`, 0600), writes and syncs it.
pub(super) fn write_at(dir: &fs::File, root: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = root.join(name);
    let mut f = open_at(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| anyhow!("creating {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn write_key(
    dir: &fs::File,
    root: &Path,
    role: Role,
    key: &[u8; 32],
    pass: Option<&Passphrase>,
) -> Result<()> {
    write_at(
        dir,
        root,
        role.file_name(),
        &keyfile::encode(role, key, pass)?,
    )
}

/// Opens `dir` without following a symlink and checks that this process's uid owns it and
/// that neither group nor others can write it.
pub fn open_private_dir(dir: &Path) -> Result<fs::File> {
    let lmeta = fs::symlink_metadata(dir)
        .with_context(|| format!("the state directory {}", dir.display()))?;
    if lmeta.file_type().is_symlink() {
        bail!(
            "the state directory {} is a symlink; refusing it (use the real path)",
            dir.display()
        );
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| format!("opening the state directory {}", dir.display()))?;
    check_private(&f, dir)?;
    Ok(f)
}

fn check_private(f: &fs::File, dir: &Path) -> Result<()> {
    let meta = f.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "the state directory {} is owned by uid {}, not by this process's uid {me}; refusing it (the daemon runs as its state directory's owner)",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the state directory {} can be written by group or others (mode {:o}); refusing it (chmod 700 it)",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// Creates `dir` with mode 0700 (its parents as needed), or takes an existing directory that
/// is ours and that no one else can write, tightened to 0700. Returns its descriptor.
fn create_private_dir(dir: &Path) -> Result<fs::File> {
    if fs::symlink_metadata(dir).is_err() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = open_private_dir(dir)?;
    // Through the descriptor: the directory checked is the one tightened.
    f.set_permissions(fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
    Ok(f)
}

/// A member name for `uid`: the account name if it fits the name grammar, else `uid-N`.
pub fn member_name_for(uid: u32) -> Name {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .and_then(|u| u.name.parse().ok())
        // `uid-N` is always a valid name.
        .unwrap_or_else(|| {
            Name::parse_as("member", &format!("uid-{uid}")).expect("uid-N is a name")
        })
}
