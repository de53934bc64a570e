//! Signed checkpoints: `(log identity, size, head hash, time)` signed by the log key.
//!
//! A checkpoint is written after every group commit, inside the segment, in the same write
//! and the same fdatasync as the events it covers. A checkpoint is also kept outside the log
//! (the "kept checkpoint" file, replaced atomically) to catch a log rolled back to an older,
//! validly signed state, and auditors keep their own copies in the same text form.

use std::path::Path;

use ed25519_dalek::{Signature, Signer};

use crate::codec::{CheckpointBody, FORMAT_VERSION};
use crate::error::{CheckpointTextError, LogError};
use crate::hash::checkpoint_message;
use crate::keys::{LogKey, PublicKey};

/// A checkpoint with its signature, not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The signed fields: log identity, size, head hash, time.
    pub body: CheckpointBody,
    /// ed25519 signature by the log key over `"ScopeHold log v1 checkpoint\n" || body`.
    pub signature: [u8; 64],
}

/// A checkpoint whose signature was checked against a public key. Only [`SignedCheckpoint::verify`]
/// makes one, so holding one is proof the check happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint(SignedCheckpoint);

impl VerifiedCheckpoint {
    /// The checkpoint that was verified.
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.0
    }
    /// Number of events it covers (events `0..size`).
    pub fn size(&self) -> u64 {
        self.0.body.size
    }
    /// Hash of the last event it covers (the genesis hash when it covers none).
    pub fn head(&self) -> [u8; 32] {
        self.0.body.head
    }
}

/// A checkpoint whose signature does not verify with the key given: signed by another key,
/// or altered after signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checkpoint signature")]
pub struct BadSignature;

const TEXT_HEADER: &str = "scopehold-checkpoint v1";

impl SignedCheckpoint {
    /// Signs a checkpoint over `log_id`, `size` events and their `head` hash at `time_ms`.
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

    /// Checks the signature (ed25519, strict) with `key`; a [`VerifiedCheckpoint`] is the
    /// proof that it held.
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
    pub fn from_text(text: &str) -> Result<Self, CheckpointTextError> {
        let mut lines = text.lines();
        let mut next = |name: &'static str| -> Result<&str, CheckpointTextError> {
            let line = lines.next().ok_or(CheckpointTextError::MissingLine(name))?;
            if name == TEXT_HEADER {
                return if line == TEXT_HEADER {
                    Ok("")
                } else {
                    Err(CheckpointTextError::BadHeader(TEXT_HEADER))
                };
            }
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or_else(|| CheckpointTextError::UnexpectedLine {
                    expected: name,
                    found: line.to_string(),
                })
        };
        fn hex_n<const N: usize>(
            s: &str,
            field: &'static str,
        ) -> Result<[u8; N], CheckpointTextError> {
            let mut b = [0u8; N];
            hex::decode_to_slice(s, &mut b).map_err(|_| CheckpointTextError::BadHex {
                field,
                chars: 2 * N,
            })?;
            Ok(b)
        }
        let number = |s: &str, field: &'static str| {
            s.parse::<u64>()
                .map_err(|_| CheckpointTextError::NotANumber(field))
        };
        next(TEXT_HEADER)?;
        let log_id = hex_n::<32>(next("log-id")?, "log-id")?;
        let size = number(next("size")?, "size")?;
        let head = hex_n::<32>(next("head")?, "head")?;
        let time_ms = number(next("time-ms")?, "time-ms")?;
        let signature = hex_n::<64>(next("signature")?, "signature")?;
        if lines.next().is_some() {
            return Err(CheckpointTextError::TrailingLines);
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

    /// Reads a checkpoint kept in text form (see [`from_text`](Self::from_text)). Its
    /// signature is not checked: call [`verify`](Self::verify).
    pub fn read_file(path: &Path) -> Result<Self, LogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LogError::io(format!("reading checkpoint {}", path.display()), e))?;
        Self::from_text(&text).map_err(|e| LogError::BadCheckpointFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
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

    #[test]
    fn text_errors_are_typed_and_say_what_is_wrong() {
        let k = LogKey::from_seed(&[9; 32]);
        let text = SignedCheckpoint::sign(&k, [1; 32], 42, [2; 32], 1234).to_text();
        let err = |t: &str| SignedCheckpoint::from_text(t).unwrap_err();
        assert_eq!(
            err(&(text.clone() + "extra\n")),
            CheckpointTextError::TrailingLines
        );
        assert_eq!(err(""), CheckpointTextError::MissingLine(TEXT_HEADER));
        assert_eq!(
            err("nope\n").to_string(),
            "expected `scopehold-checkpoint v1` as the first line"
        );
        let e = err(&text.replace("size 42", "size x"));
        assert_eq!(e, CheckpointTextError::NotANumber("size"));
        assert_eq!(e.to_string(), "size: not a number");
        let e = err(&text.replace("log-id ", "log-id 00"));
        assert_eq!(e.to_string(), "log-id: expected 64 hex characters");
        let e = err(&text.replace("head ", "tip "));
        assert!(
            e.to_string()
                .starts_with("expected line `head ...`, found `tip ")
        );
    }
}
