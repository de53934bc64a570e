//! Signed checkpoints: `(log identity, size, head hash, time)` signed by the log key.
//!
//! A checkpoint is written after every group commit, inside the segment, in the same write
//! and the same fdatasync as the events it covers. A checkpoint is also kept outside the log
//! (the "kept checkpoint" file, replaced atomically) to catch a log rolled back to an older,
//! validly signed state, and auditors keep their own copies in the same text form.

use std::path::Path;

use ed25519_dalek::{Signature, Signer};

use crate::codec::{CheckpointBody, FORMAT_VERSION};
use crate::error::LogError;
use crate::hash::checkpoint_message;
use crate::keys::{LogKey, PublicKey};

/// A checkpoint with its signature, not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub body: CheckpointBody,
    pub signature: [u8; 64],
}

/// A checkpoint whose signature was checked against a public key. Only [`SignedCheckpoint::verify`]
/// makes one, so holding one is proof the check happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint(SignedCheckpoint);

impl VerifiedCheckpoint {
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.0
    }
    pub fn size(&self) -> u64 {
        self.0.body.size
    }
    pub fn head(&self) -> [u8; 32] {
        self.0.body.head
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checkpoint signature")]
pub struct BadSignature;

const TEXT_HEADER: &str = "scopehold-checkpoint v1";

impl SignedCheckpoint {
    pub fn sign(key: &LogKey, log_id: [u8; 32], size: u64, head: [u8; 32], time_ms: u64) -> Self {
        let body = CheckpointBody {
            version: FORMAT_VERSION,
            log_id,
            size,
            head,
            time_ms,
        };
        let sig = key.signing().sign(&checkpoint_message(&body.encode()));
        Self {
            body,
            signature: sig.to_bytes(),
        }
    }

    pub fn verify(&self, key: &PublicKey) -> Result<VerifiedCheckpoint, BadSignature> {
        let sig = Signature::from_bytes(&self.signature);
        key.0
            .verify_strict(&checkpoint_message(&self.body.encode()), &sig)
            .map_err(|_| BadSignature)?;
        Ok(VerifiedCheckpoint(*self))
    }

    /// The text form auditors keep and `--trusted-checkpoint` reads.
    pub fn to_text(&self) -> String {
        format!(
            "{TEXT_HEADER}\nlog-id {}\nsize {}\nhead {}\ntime-ms {}\nsignature {}\n",
            hex::encode(self.body.log_id),
            self.body.size,
            hex::encode(self.body.head),
            self.body.time_ms,
            hex::encode(self.signature)
        )
    }

    /// Strict parser for [`to_text`](Self::to_text): every line, in order, nothing else.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let mut next = |name: &str| -> Result<String, String> {
            let line = lines
                .next()
                .ok_or_else(|| format!("missing line `{name}`"))?;
            if name == TEXT_HEADER {
                return if line == TEXT_HEADER {
                    Ok(String::new())
                } else {
                    Err(format!("expected `{TEXT_HEADER}` as the first line"))
                };
            }
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("expected line `{name} ...`, found `{line}`"))
        };
        fn hex_n<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
            let mut b = [0u8; N];
            hex::decode_to_slice(s, &mut b)
                .map_err(|_| format!("{what}: expected {} hex characters", 2 * N))?;
            Ok(b)
        }
        next(TEXT_HEADER)?;
        let log_id = hex_n::<32>(&next("log-id")?, "log-id")?;
        let size = next("size")?
            .parse::<u64>()
            .map_err(|_| "size: not a number".to_string())?;
        let head = hex_n::<32>(&next("head")?, "head")?;
        let time_ms = next("time-ms")?
            .parse::<u64>()
            .map_err(|_| "time-ms: not a number".to_string())?;
        let signature = hex_n::<64>(&next("signature")?, "signature")?;
        if lines.next().is_some() {
            return Err("unexpected lines after the signature".into());
        }
        Ok(Self {
            body: CheckpointBody {
                version: FORMAT_VERSION,
                log_id,
                size,
                head,
                time_ms,
            },
            signature,
        })
    }

    pub fn read_file(path: &Path) -> Result<Self, LogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LogError::io(format!("reading checkpoint {}", path.display()), e))?;
        Self::from_text(&text).map_err(|reason| LogError::BadCheckpointFile {
            path: path.to_path_buf(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_signature() {
        let k = LogKey::from_seed(&[9; 32]);
        let cp = SignedCheckpoint::sign(&k, [1; 32], 42, [2; 32], 1234);
        let parsed = SignedCheckpoint::from_text(&cp.to_text()).unwrap();
        assert_eq!(parsed, cp);
        assert!(parsed.verify(&k.public()).is_ok());
        let mut bad = parsed;
        bad.body.size = 41;
        assert!(bad.verify(&k.public()).is_err());
        let other = LogKey::from_seed(&[8; 32]);
        assert!(cp.verify(&other.public()).is_err());
        assert!(SignedCheckpoint::from_text(&(cp.to_text() + "extra\n")).is_err());
    }
}
