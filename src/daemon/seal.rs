//! Encryption at rest. Each secret version gets its own random data key; the value is sealed
//! with XChaCha20-Poly1305 under the data key, and the data key is wrapped under the master
//! key. The associated data binds secret name and version (and, for the wrapped key, its
//! role), so ciphertext moved to another secret or version fails to open. Destroying a
//! version, passphrase-protecting the master key or rotating it only touch wrapped keys.

use anyhow::{Result, bail};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

pub use crate::domain::Sealed;

/// Largest secret value accepted.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// The master key: 32 random bytes in `master.key` (0600). No `Debug` of its bytes, zeroized
/// on drop.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    /// Derived once: hashing a credential happens on every request.
    cred: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::fill(b.as_mut()).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
    Ok(b)
}

fn aad(secret: &str, version: u32, role: &str) -> Vec<u8> {
    format!("scopehold sealed v1\0{role}\0{secret}\0{version}").into_bytes()
}

impl MasterKey {
    pub fn generate() -> Result<Self> {
        Ok(Self::from_key(random::<32>()?))
    }

    pub(crate) fn from_key(key: Zeroizing<[u8; 32]>) -> Self {
        // Key for hashing agent credentials (a keyed hash: the stored hash is useless
        // without it).
        let cred = Zeroizing::new(blake3::derive_key(
            "ScopeHold v1 agent credential hash",
            key.as_ref(),
        ));
        Self { key, cred }
    }

    /// The hub CA's P-256 private scalar, derived from the master key (so the CA needs no key
    /// file of its own, and is sealed and backed up with the master key). Derived again with
    /// a counter in the (2^-32) case the bytes are not below the group order.
    pub fn hub_ca_scalar(&self) -> Zeroizing<[u8; 32]> {
        let mut input = Zeroizing::new([0u8; 36]);
        input[..32].copy_from_slice(self.key.as_ref());
        for counter in 0u32.. {
            input[32..].copy_from_slice(&counter.to_le_bytes());
            let k = Zeroizing::new(blake3::derive_key(
                "ScopeHold v1 hub CA P-256 scalar",
                input.as_ref(),
            ));
            if p256::SecretKey::from_bytes(p256::FieldBytes::from_slice(k.as_ref())).is_ok() {
                return k;
            }
        }
        unreachable!("some counter gives a scalar below the order")
    }

    pub fn credential_hash(&self, credential: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.cred, credential.as_bytes()).as_bytes()
    }

    pub fn seal(&self, secret: &str, version: u32, value: &[u8]) -> Result<Sealed> {
        if value.len() > MAX_VALUE_LEN {
            bail!("secret values are at most {MAX_VALUE_LEN} bytes");
        }
        let dek = random::<32>()?;
        let nonce = random::<24>()?;
        let key_nonce = random::<24>()?;
        let ct = XChaCha20Poly1305::new(dek.as_ref().into())
            .encrypt(
                XNonce::from_slice(nonce.as_ref()),
                Payload {
                    msg: value,
                    aad: &aad(secret, version, "value"),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let wrapped = XChaCha20Poly1305::new(self.key.as_ref().into())
            .encrypt(
                XNonce::from_slice(key_nonce.as_ref()),
                Payload {
                    msg: dek.as_ref(),
                    aad: &aad(secret, version, "data key"),
                },
            )
            .map_err(|_| anyhow::anyhow!("wrapping failed"))?;
        Ok(Sealed {
            wrapped_key: hex::encode(wrapped),
            key_nonce: hex::encode(key_nonce.as_ref()),
            nonce: hex::encode(nonce.as_ref()),
            ciphertext: hex::encode(ct),
        })
    }

    /// Opens a sealed value; fails (without saying more) if it was moved to another secret or
    /// version, altered, or sealed under another master key.
    pub fn open(&self, secret: &str, version: u32, s: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        self.data_key(secret, version, s)?.open(secret, version)
    }

    /// Unwraps the data key of one sealed version (and decodes its ciphertext), so that
    /// repeated resolutions of the same version cost one decryption, not two.
    pub fn data_key(&self, secret: &str, version: u32, s: &Sealed) -> Result<DataKey> {
        let err = || anyhow::anyhow!("sealed value of {secret} v{version} does not open");
        let dec = |h: &str| hex::decode(h).map_err(|_| err());
        let (wrapped, key_nonce, nonce, ct) = (
            dec(&s.wrapped_key)?,
            dec(&s.key_nonce)?,
            dec(&s.nonce)?,
            dec(&s.ciphertext)?,
        );
        let (Ok(key_nonce), Ok(nonce)) =
            (<[u8; 24]>::try_from(key_nonce), <[u8; 24]>::try_from(nonce))
        else {
            return Err(err());
        };
        let dek = Zeroizing::new(
            XChaCha20Poly1305::new(self.key.as_ref().into())
                .decrypt(
                    XNonce::from_slice(&key_nonce),
                    Payload {
                        msg: &wrapped,
                        aad: &aad(secret, version, "data key"),
                    },
                )
                .map_err(|_| err())?,
        );
        let dek: [u8; 32] = dek.as_slice().try_into().map_err(|_| err())?;
        Ok(DataKey {
            dek: Zeroizing::new(dek),
            nonce,
            ciphertext: ct,
        })
    }
}

/// One version's unwrapped data key with its ciphertext: zeroized on drop, never printed.
pub struct DataKey {
    dek: Zeroizing<[u8; 32]>,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn open(&self, secret: &str, version: u32) -> Result<Zeroizing<Vec<u8>>> {
        XChaCha20Poly1305::new(self.dek.as_ref().into())
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &aad(secret, version, "value"),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("sealed value of {secret} v{version} does not open"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let k = MasterKey::generate().unwrap();
        let s = k.seal("openai/prod", 1, b"sk-canary").unwrap();
        assert_eq!(&k.open("openai/prod", 1, &s).unwrap()[..], b"sk-canary");
        assert!(
            k.open("openai/prod", 2, &s).is_err(),
            "moved to another version"
        );
        assert!(
            k.open("openai/dev", 1, &s).is_err(),
            "moved to another secret"
        );
        assert!(
            MasterKey::generate()
                .unwrap()
                .open("openai/prod", 1, &s)
                .is_err(),
            "another master key"
        );
        let mut t = s.clone();
        t.ciphertext.replace_range(
            0..2,
            if &t.ciphertext[0..2] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert!(k.open("openai/prod", 1, &t).is_err(), "altered");
        assert!(!format!("{s:?}{k:?}").contains("sk-canary"));
        assert!(!s.ciphertext.contains(&hex::encode("sk-canary")));
    }
}
