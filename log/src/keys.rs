//! The log's ed25519 signing key: created once, stored as a 32-byte seed in a 0600 file,
//! held in memory only inside `ed25519_dalek::SigningKey`, which zeroizes itself on drop.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::{LogError, PublicKeyError};

/// The log's signing key. No `Clone`, no `Display`; `Debug` shows only the public key.
pub struct LogKey(SigningKey);

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LogKey(public: {})",
            hex::encode(self.0.verifying_key().as_bytes())
        )
    }
}

impl LogKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, LogError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| {
            LogError::io(
                "reading the OS random source",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// From a known seed (tests and golden vectors only; real keys come from `generate`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The public key, which is all an auditor needs.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn signing(&self) -> &SigningKey {
        &self.0
    }

    /// Writes the seed to a new file created with mode 0600 (never overwriting), synced.
    pub fn write_new(&self, path: &Path) -> Result<(), LogError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| LogError::io(format!("creating key file {}", path.display()), e))?;
        let seed = Zeroizing::new(self.0.to_bytes());
        f.write_all(seed.as_ref())
            .and_then(|_| f.sync_all())
            .map_err(|e| LogError::io(format!("writing key file {}", path.display()), e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Loads a key file, refusing one that other users could read.
    pub fn load(path: &Path) -> Result<Self, LogError> {
        let bad = |reason: String| LogError::BadKey {
            path: path.to_path_buf(),
            reason,
        };
        let meta = fs::metadata(path)
            .map_err(|e| LogError::io(format!("reading key file {}", path.display()), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:o} lets other users read it; expected 0600 (chmod 600 {})",
                path.display()
            )));
        }
        let bytes = Zeroizing::new(
            fs::read(path)
                .map_err(|e| LogError::io(format!("reading key file {}", path.display()), e))?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("expected 32 bytes, found {}", bytes.len())))?,
        );
        Ok(Self(SigningKey::from_bytes(&seed)))
    }
}

/// The log's public key: all an auditor needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PublicKey {
    /// From the 32 bytes of an ed25519 public key.
    pub fn from_bytes(b: &[u8; 32]) -> Result<Self, PublicKeyError> {
        VerifyingKey::from_bytes(b)
            .map(Self)
            .map_err(|_| PublicKeyError::Invalid)
    }
    /// The key's 32 bytes (as in bundle headers).
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
    /// The key as 64 lower-case hex characters (the `log.pub` form).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
    /// Parses 64 hex characters (surrounding white space ignored).
    pub fn from_hex(s: &str) -> Result<Self, PublicKeyError> {
        let s = s.trim();
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| PublicKeyError::NotHex)?;
        Self::from_bytes(&b)
    }
    /// `ARG` is either 64 hex characters or the path of a `.pub` file holding them.
    pub fn from_arg(arg: &str) -> Result<Self, PublicKeyError> {
        if arg.len() == 64 && arg.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Self::from_hex(arg);
        }
        let text = fs::read_to_string(arg).map_err(|source| PublicKeyError::Read {
            path: arg.to_string(),
            source,
        })?;
        Self::from_hex(&text).map_err(|e| PublicKeyError::BadFile {
            path: arg.to_string(),
            source: Box::new(e),
        })
    }
    /// Writes `hex\n` (a public key is not secret; mode 0644).
    pub fn write_file(&self, path: &Path) -> Result<(), LogError> {
        fs::write(path, format!("{}\n", self.to_hex()))
            .map_err(|e| LogError::io(format!("writing {}", path.display()), e))
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| LogError::io(format!("syncing directory {}", d.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_0600_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.key");
        let k = LogKey::generate().unwrap();
        k.write_new(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(LogKey::load(&p).unwrap().public(), k.public());
        // Never overwrites.
        assert!(k.write_new(&p).is_err());
        // Refuses a readable key.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(LogKey::load(&p), Err(LogError::BadKey { .. })));
    }

    #[test]
    fn public_key_errors_are_typed() {
        let k = LogKey::from_seed(&[7; 32]).public();
        assert_eq!(PublicKey::from_arg(&k.to_hex()).unwrap(), k);
        let e = PublicKey::from_hex("zz").unwrap_err();
        assert!(matches!(e, PublicKeyError::NotHex));
        assert_eq!(e.to_string(), "expected 64 hex characters");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.pub");
        let arg = p.to_string_lossy().into_owned();
        assert!(matches!(
            PublicKey::from_arg(&arg),
            Err(PublicKeyError::Read { .. })
        ));
        k.write_file(&p).unwrap();
        assert_eq!(PublicKey::from_arg(&arg).unwrap(), k);
        fs::write(&p, "not hex\n").unwrap();
        let e = PublicKey::from_arg(&arg).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("public key file {arg}: expected 64 hex characters")
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = LogKey::from_seed(&[0x42; 32]);
        let d = format!("{k:?}");
        assert!(!d.contains(&hex::encode([0x42u8; 32])));
        assert!(d.contains(&k.public().to_hex()));
    }
}
