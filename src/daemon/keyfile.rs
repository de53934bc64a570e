//! The key files at rest (`master.key`, `log.key`, `ca.key`), plain or sealed under a passphrase.
//!
//! A **plain** key file is the key's 32 raw bytes, mode 0600: it protects the keys from other
//! uids only, through file permissions. A **sealed** key file holds the key wrapped under a
//! key derived from a passphrase, so a copy of the state directory (a backup, a stolen disk,
//! a process that can read the files) opens nothing without the passphrase.
//!
//! Sealed format (ASCII text, one field a line, each line ending in `\n`, in this order):
//!
//! ```text
//! scopehold sealed key v1
//! role: master.key
//! kdf: argon2id v19 m=65536 t=3 p=1
//! salt: <32 hex digits: 16 random bytes>
//! nonce: <48 hex digits: 24 random bytes>
//! sealed: <96 hex digits: the 32-byte key encrypted, then its 16-byte tag>
//! ```
//!
//! - `role` is `master.key`, `log.key` or `ca.key`: the file's job. A file moved to the other role's
//!   name fails to open.
//! - `kdf`: argon2id (version 0x13), memory `m` in KiB, `t` passes, `p` lanes; the wrapping
//!   key is its 32-byte output from the passphrase (UTF-8 bytes) and `salt`. Files are written
//!   with m=65536 (64 MiB), t=3, p=1; files below OWASP's minimum (m=19456, t=2) or above
//!   m=4 GiB, t=64, p=16 are refused as malformed.
//! - `sealed`: XChaCha20-Poly1305 under the wrapping key with `nonce`; its associated data is
//!   every byte of the file before the `sealed:` line (magic, version, role, parameters,
//!   salt and nonce), so none of them can be altered without the file failing to open.
//!
//! A file is told apart by its contents: exactly 32 bytes is plain, the magic line is sealed,
//! anything else is refused. Files are opened with `O_NOFOLLOW` and must be regular files
//! owned by the daemon's uid with no group or other permissions.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The first line of a sealed key file.
pub const MAGIC: &str = "scopehold sealed key v1";

/// The cost written into new files: 64 MiB, 3 passes, 1 lane (above OWASP's minimum of
/// 19 MiB, 2 passes; about a quarter of a second per file on one core).
pub const KDF_WRITE: KdfParams = KdfParams {
    m_kib: 64 * 1024,
    t: 3,
    p: 1,
};

/// The largest passphrase file read (a passphrase, not a document).
const MAX_PASSPHRASE: u64 = 4096;

/// Which key a file holds; bound into the sealed file's associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `master.key`: wraps every secret version's data key.
    Master,
    /// `log.key`: the log's ed25519 signing seed.
    Log,
    /// `ca.key`: the HTTPS_PROXY certificate authority's P-256 private scalar (`super::ca`).
    Ca,
}

impl Role {
    /// The file name, which is also the `role:` field.
    pub fn file_name(self) -> &'static str {
        match self {
            Role::Master => "master.key",
            Role::Log => "log.key",
            Role::Ca => "ca.key",
        }
    }
}

/// argon2id's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    fn check(self) -> Result<()> {
        if !(19 * 1024..=4 * 1024 * 1024).contains(&self.m_kib)
            || !(2..=64).contains(&self.t)
            || !(1..=16).contains(&self.p)
        {
            bail!(
                "argon2id parameters m={} t={} p={} are out of the accepted range",
                self.m_kib,
                self.t,
                self.p
            );
        }
        Ok(())
    }
}

/// A passphrase: zeroized on drop, never printed.
pub struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// From a string (one trailing newline is the caller's to strip).
    pub fn new(s: Zeroizing<String>) -> Result<Self> {
        if s.is_empty() {
            bail!("the passphrase is empty");
        }
        Ok(Self(s))
    }

    /// Reads a passphrase file (systemd's `LoadCredential=` fits): its whole contents, one
    /// trailing newline (`\n` or `\r\n`) stripped. Refused if other users can read it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let f = fs::File::open(path)
            .with_context(|| format!("opening the passphrase file {}", path.display()))?;
        let meta = f.metadata()?;
        // Group access is left to the operator (a credential shared with the service's
        // group); "other" access means any uid on the host could read it.
        if meta.mode() & 0o007 != 0 {
            bail!(
                "the passphrase file {} can be read by any user (mode {:o}); chmod o-rwx it",
                path.display(),
                meta.mode() & 0o777
            );
        }
        let mut s = Zeroizing::new(String::new());
        f.take(MAX_PASSPHRASE + 1)
            .read_to_string(&mut s)
            .with_context(|| format!("reading the passphrase file {}", path.display()))?;
        if s.len() as u64 > MAX_PASSPHRASE {
            bail!(
                "the passphrase file {} is longer than {MAX_PASSPHRASE} bytes",
                path.display()
            );
        }
        let end = s
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&s)
            .len();
        s.truncate(end);
        Self::new(s).with_context(|| format!("the passphrase file {}", path.display()))
    }

    /// Prompts on the terminal (no echo). Fails at once without one: a daemon under a
    /// supervisor must be given `--passphrase-file`.
    pub fn prompt(what: &str, hint: &str) -> Result<Self> {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            bail!("{what} is needed and there is no terminal to ask on: {hint}");
        }
        let s = Zeroizing::new(
            rpassword::prompt_password(format!("{what}: "))
                .map_err(|e| anyhow!("reading the passphrase: {e}"))?,
        );
        Self::new(s)
    }

    /// Prompts twice for a new passphrase; they must match.
    pub fn prompt_new(hint: &str) -> Result<Self> {
        let a = Self::prompt("new passphrase", hint)?;
        let b = Self::prompt("new passphrase again", hint)?;
        if a.0 != b.0 {
            bail!("the two passphrases differ");
        }
        Ok(a)
    }
}

/// Where a passphrase comes from: a file, else a terminal prompt.
#[derive(Debug, Clone, Default)]
pub struct PassphraseSource {
    /// `--passphrase-file`.
    pub file: Option<PathBuf>,
}

impl PassphraseSource {
    /// The passphrase of a sealed state directory.
    pub fn get(&self) -> Result<Passphrase> {
        match &self.file {
            Some(f) => Passphrase::from_file(f),
            None => Passphrase::prompt(
                "the state directory's passphrase",
                "pass --passphrase-file FILE",
            ),
        }
    }
}

fn derive(pass: &Passphrase, salt: &[u8], k: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(k.m_kib, k.t, k.p, Some(32))
        .map_err(|e| anyhow!("argon2id parameters: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.0.as_bytes(), salt, out.as_mut())
        .map_err(|e| anyhow!("deriving the key from the passphrase: {e}"))?;
    Ok(out)
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("OS random source: {e}"))?;
    Ok(b)
}

/// 32 fresh random key bytes.
pub fn random_key() -> Result<Zeroizing<[u8; 32]>> {
    Ok(Zeroizing::new(random::<32>()?))
}

/// A sealed key file's text.
pub fn seal(role: Role, key: &[u8; 32], pass: &Passphrase, k: KdfParams) -> Result<String> {
    let salt = random::<16>()?;
    let nonce = random::<24>()?;
    let header = format!(
        "{MAGIC}\nrole: {}\nkdf: argon2id v19 m={} t={} p={}\nsalt: {}\nnonce: {}\n",
        role.file_name(),
        k.m_kib,
        k.t,
        k.p,
        hex::encode(salt),
        hex::encode(nonce)
    );
    let wrap = derive(pass, &salt, k)?;
    let ct = XChaCha20Poly1305::new(wrap.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: header.as_bytes(),
            },
        )
        .map_err(|_| anyhow!("sealing failed"))?;
    Ok(format!("{header}sealed: {}\n", hex::encode(ct)))
}

/// Opens a sealed key file's text.
pub fn unseal(role: Role, path: &Path, text: &[u8], pass: &Passphrase) -> Result<[u8; 32]> {
    let bad = |why: &str| anyhow!("{} is not a valid sealed key file: {why}", path.display());
    let text = std::str::from_utf8(text).map_err(|_| bad("not text"))?;
    let split = text
        .find("sealed: ")
        .ok_or_else(|| bad("no sealed: line"))?;
    let (header, tail) = text.split_at(split);
    let mut lines = header.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("unknown magic or version"));
    }
    let field = |line: Option<&'_ str>, name: &str| -> Result<String> {
        line.and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(": "))
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("expected {name}:")))
    };
    let r = field(lines.next(), "role")?;
    if r != role.file_name() {
        bail!(
            "{} holds the {r} key, not the {} key (files swapped?)",
            path.display(),
            role.file_name()
        );
    }
    let kdf = field(lines.next(), "kdf")?;
    let k = parse_kdf(&kdf).ok_or_else(|| bad("kdf: expected argon2id v19 m=N t=N p=N"))?;
    k.check().map_err(|e| bad(&e.to_string()))?;
    let hexfield = |v: String, n: usize, name: &str| -> Result<Vec<u8>> {
        let b = hex::decode(v).map_err(|_| bad(&format!("{name}: not hex")))?;
        if b.len() != n {
            return Err(bad(&format!("{name}: expected {n} bytes")));
        }
        Ok(b)
    };
    let salt = hexfield(field(lines.next(), "salt")?, 16, "salt")?;
    let nonce = hexfield(field(lines.next(), "nonce")?, 24, "nonce")?;
    if lines.next().is_some() || !header.ends_with('\n') {
        return Err(bad("unexpected lines"));
    }
    let ct = tail
        .strip_prefix("sealed: ")
        .and_then(|t| t.strip_suffix('\n'))
        .filter(|t| !t.contains('\n'))
        .ok_or_else(|| bad("sealed: must be the last line"))?;
    let ct = hexfield(ct.to_string(), 48, "sealed")?;
    let wrap = derive(pass, &salt, k)?;
    let key = Zeroizing::new(
        XChaCha20Poly1305::new(wrap.as_ref().into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: header.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow!(
                    "wrong passphrase: it does not open {} (or the file was altered)",
                    path.display()
                )
            })?,
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(&key);
    Ok(out)
}

fn parse_kdf(s: &str) -> Option<KdfParams> {
    let mut it = s.split(' ');
    if it.next()? != "argon2id" || it.next()? != "v19" {
        return None;
    }
    let mut num = |p: &str| it.next()?.strip_prefix(p)?.parse::<u32>().ok();
    let k = KdfParams {
        m_kib: num("m=")?,
        t: num("t=")?,
        p: num("p=")?,
    };
    it.next().is_none().then_some(k)
}

/// A key file as found on disk.
pub enum KeyFile {
    /// 32 raw bytes.
    Plain(Zeroizing<[u8; 32]>),
    /// A sealed file's bytes, to open with the passphrase.
    Sealed(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyFile::Plain(_) => "KeyFile::Plain(..)",
            KeyFile::Sealed(_) => "KeyFile::Sealed(..)",
        })
    }
}

impl KeyFile {
    /// Whether it needs a passphrase.
    pub fn is_sealed(&self) -> bool {
        matches!(self, KeyFile::Sealed(_))
    }

    /// Reads an opened key file (the caller opened it with `O_NOFOLLOW`); it must be a
    /// regular file owned by this process's uid with no group or other permissions.
    pub fn from_file(mut f: fs::File, path: &Path) -> Result<Self> {
        let meta = f.metadata()?;
        let me = nix::unistd::geteuid().as_raw();
        if !meta.file_type().is_file() {
            bail!("key file {} is not a regular file", path.display());
        }
        if meta.uid() != me {
            bail!(
                "key file {} is owned by uid {}, not by this process's uid {me}",
                path.display(),
                meta.uid()
            );
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "key file {}: mode {mode:o} lets other users read it; expected 0600 (chmod 600 {})",
                path.display(),
                path.display()
            );
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(512));
        (&mut f)
            .take(4096)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading key file {}", path.display()))?;
        if bytes.len() == 32 {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(&bytes);
            return Ok(KeyFile::Plain(k));
        }
        if bytes.starts_with(format!("{MAGIC}\n").as_bytes()) {
            return Ok(KeyFile::Sealed(bytes));
        }
        bail!(
            "key file {} is neither a 32-byte key nor a sealed key file ({} bytes)",
            path.display(),
            bytes.len()
        )
    }

    /// The key: plain as is, sealed opened with `pass` (which a sealed file requires).
    pub fn open(
        &self,
        role: Role,
        path: &Path,
        pass: Option<&Passphrase>,
    ) -> Result<Zeroizing<[u8; 32]>> {
        match self {
            KeyFile::Plain(k) => Ok(k.clone()),
            KeyFile::Sealed(b) => {
                let pass = pass.ok_or_else(|| {
                    anyhow!("{} is sealed: a passphrase is needed", path.display())
                })?;
                Ok(Zeroizing::new(unseal(role, path, b, pass)?))
            }
        }
    }
}

/// The bytes of a key file: the raw key, or the sealed text under `pass`.
pub fn encode(role: Role, key: &[u8; 32], pass: Option<&Passphrase>) -> Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(match pass {
        None => key.to_vec(),
        Some(p) => seal(role, key, p, KDF_WRITE)?.into_bytes(),
    }))
}

/// Syncs a directory, so a file created or renamed in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(Zeroizing::new(s.to_string())).unwrap()
    }

    const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    #[test]
    fn sealed_key_opens_only_with_its_passphrase_and_role() {
        let key = [0x5au8; 32];
        let p = Path::new("master.key");
        let text = seal(Role::Master, &key, &pass("correct horse"), FAST).unwrap();
        assert!(text.starts_with(MAGIC));
        assert!(!text.contains(&hex::encode(key)));
        assert_eq!(
            unseal(Role::Master, p, text.as_bytes(), &pass("correct horse")).unwrap(),
            key
        );
        let e = unseal(Role::Master, p, text.as_bytes(), &pass("wrong")).unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        let e = unseal(Role::Log, p, text.as_bytes(), &pass("correct horse")).unwrap_err();
        assert!(e.to_string().contains("not the log.key key"), "{e}");
        // The role line is authenticated too: rewriting it does not make the file open.
        let moved = text.replace("role: master.key", "role: log.key");
        assert!(unseal(Role::Log, p, moved.as_bytes(), &pass("correct horse")).is_err());
        // So are the parameters.
        let t3 = text.replace("t=2", "t=3");
        assert!(unseal(Role::Master, p, t3.as_bytes(), &pass("correct horse")).is_err());
        // Below the minimum cost: refused before any work.
        let weak = text.replace("m=19456", "m=1024");
        let e = unseal(Role::Master, p, weak.as_bytes(), &pass("correct horse")).unwrap_err();
        assert!(e.to_string().contains("out of the accepted range"), "{e}");
        assert!(!format!("{:?}", pass("correct horse")).contains("correct"));
    }
}
