//! Domain-separated hashes. Each kind of hash uses its own BLAKE3 key, derived once from a
//! distinct context string with BLAKE3's `derive_key` mode, so no hash of one kind can pass
//! for another (an envelope hash is never a body commitment, a genesis hash never an event).

use std::sync::OnceLock;

/// Key-derivation context of the genesis hash key (`K_genesis` in `FORMAT.md`).
pub const CTX_GENESIS: &str = "ScopeHold log v1 2026-11-26 genesis";
/// Key-derivation context of the body commitment key (`K_body`).
pub const CTX_BODY: &str = "ScopeHold log v1 2026-11-26 body commitment";
/// Key-derivation context of the event hash key (`K_event`).
pub const CTX_EVENT: &str = "ScopeHold log v1 2026-11-26 event";
/// Prefix of every message the log key signs; binds signatures to checkpoints of this format.
pub const CHECKPOINT_SIGNING_PREFIX: &[u8] = b"ScopeHold log v1 checkpoint\n";

fn key(cell: &'static OnceLock<[u8; 32]>, ctx: &'static str) -> &'static [u8; 32] {
    cell.get_or_init(|| blake3::derive_key(ctx, b""))
}

fn genesis_key() -> &'static [u8; 32] {
    static K: OnceLock<[u8; 32]> = OnceLock::new();
    key(&K, CTX_GENESIS)
}
fn body_key() -> &'static [u8; 32] {
    static K: OnceLock<[u8; 32]> = OnceLock::new();
    key(&K, CTX_BODY)
}
fn event_key() -> &'static [u8; 32] {
    static K: OnceLock<[u8; 32]> = OnceLock::new();
    key(&K, CTX_EVENT)
}

/// The `prev` of event 0 and the head of an empty log: binds the chain to the log identity.
pub fn genesis(log_id: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(genesis_key(), log_id).as_bytes()
}

/// Commitment to an event body: `BLAKE3-keyed(K_body, salt_len as u8 || salt || body)`.
/// For secret-bearing bodies the 32-byte random salt makes the commitment reveal nothing
/// about a left-out body, even a guessable one.
pub fn commit_body(salt: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(body_key());
    h.update(&[salt.len() as u8]);
    h.update(salt);
    h.update(body);
    *h.finalize().as_bytes()
}

/// Hash of an event: over the stored envelope bytes, which include `prev` (the chain) and
/// the body commitment.
pub fn event_hash(envelope_bytes: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(event_key(), envelope_bytes).as_bytes()
}

/// The exact bytes the log key signs for a checkpoint.
pub fn checkpoint_message(checkpoint_body_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_SIGNING_PREFIX.len() + checkpoint_body_bytes.len());
    m.extend_from_slice(CHECKPOINT_SIGNING_PREFIX);
    m.extend_from_slice(checkpoint_body_bytes);
    m
}

/// Constant-time equality for hashes an attacker might probe.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_differ() {
        let x = [7u8; 32];
        let g = genesis(&x);
        let e = event_hash(&x);
        let b = commit_body(&[], &x);
        assert_ne!(g, e);
        assert_ne!(e, b);
        assert_ne!(g, b);
        // Salt length is bound: moving a byte between salt and body changes the commitment.
        assert_ne!(commit_body(&[1], &[2, 3]), commit_body(&[1, 2], &[3]));
    }
}
