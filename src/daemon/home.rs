//! The state directory and what lives in it.
//!
//! ```text
//! $SCOPEHOLD_HOME/              0700
//!   log.key                     0600  the log's ed25519 signing key (32-byte seed)
//!   log.pub                           the log's public key, hex: give it to auditors
//!   master.key                  0600  wraps the data key of every secret version
//!   log/                        0700  segments, index, LOCK (see log/FORMAT.md)
//!   checkpoint                        the kept checkpoint (movable: --checkpoint-file)
//! ```

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use scopehold_log::{LogOptions, PublicKey};

use crate::domain::Name;

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
    /// Where the kept checkpoint lives (default: inside the state directory).
    pub checkpoint_file: PathBuf,
    /// Open the log although its kept checkpoint is missing (recovery by hand).
    pub accept_missing_checkpoint: bool,
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
            // Serial group commit: fuller batches leave more of two cores to the server
            // (measured with examples/resolve_bench.rs).
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
    /// with its genesis checkpoint. Refuses to touch an initialised directory.
    pub fn init(&self) -> Result<PublicKey> {
        if self.is_initialised() {
            bail!(
                "{} is already initialised (log.key exists)",
                self.root.display()
            );
        }
        create_private_dir(&self.root)?;
        let key = scopehold_log::LogKey::generate()?;
        let public = key.public();
        super::seal::MasterKey::generate()?.write_new(&self.master_key())?;
        key.write_new(&self.log_key())?;
        public.write_file(&self.log_pub())?;
        let log = scopehold_log::Log::create(&self.log_dir(), key, self.log_options())
            .with_context(|| format!("creating the log in {}", self.log_dir().display()))?;
        // The uid that initialised the state directory is the first admin member.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&self.root)?);
        let first = crate::domain::Event::MemberAdded {
            member: member_name_for(uid),
            uid,
            admin: true,
            by: crate::domain::Actor::Init,
        };
        log.append(first.to_entry()?)?;
        log.close().map_err(anyhow::Error::msg)?;
        Ok(public)
    }
}

/// Creates `dir` with mode 0700, or tightens an existing empty-of-ours directory to 0700.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // `recursive` applies the mode before the umask; make sure of the leaf.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))
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
