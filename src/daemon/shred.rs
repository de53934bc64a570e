//! Deleting secrets by crypto-shredding, and the rule that keeps erasure honest.
//!
//! A version's value is sealed under its own data key, and the only copy of that key
//! (wrapped by the master key) travels with the ciphertext in the version's
//! `secret_version_sealed` event. Deleting a secret records `secret_deleted` (public, listing
//! those events by sequence number, and who deleted it), waits until that is durable, then
//! erases the listed bodies from the log in place (`scopehold_log::Log::erase`): the sealed
//! values and their data keys are gone from every file, while the events, the chain and every
//! checkpoint stay and verify. The cached unwrapped data keys are dropped (zeroized).
//!
//! The log crate cannot tell an erasure ScopeHold made from one made by someone with write
//! access to the files. The rule lives here: **every erased record must be a
//! `secret_version_sealed` event listed by a later `secret_deleted` event**. Replay refuses a
//! log that breaks it (the daemon does not start), and so does `scopehold log verify`. A
//! deletion whose erasure did not complete (a crash, a storage failure) is found by replay and
//! erased at the next start.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use scopehold_log::{LogReader, PublicKey, Record};

use crate::domain::{Event, EventKind, SecretName, State};

/// The state a log folds into, and the erasures its deletions recorded that are not done.
#[derive(Debug)]
pub struct Replayed {
    /// The projection.
    pub state: State,
    /// Events listed by a `secret_deleted` whose bodies are still in the log (their erasure
    /// was interrupted): the daemon erases them at start-up.
    pub unerased: Vec<u64>,
    /// Every erased record's sequence number, in order (a hub's store must hold them erased
    /// too).
    pub erased: Vec<u64>,
}

fn kind_name(rec: &Record) -> &'static str {
    EventKind::name_of(rec.envelope.kind)
}

/// Every event listed by a `secret_deleted` event at or after `from`, with its secret.
fn deletions_from(reader: &LogReader, from: u64) -> Result<HashMap<u64, SecretName>> {
    let mut listed = HashMap::new();
    for rec in reader.events_from(from)? {
        let rec = rec?;
        if rec.envelope.kind != EventKind::SecretDeleted.number() {
            continue;
        }
        let body = rec
            .body
            .as_ref()
            .with_context(|| format!("event {}: a secret_deleted without its body", rec.seq()))?;
        if let Event::SecretDeleted { secret, erased, .. } =
            Event::from_body(rec.envelope.kind, &body.bytes)
                .with_context(|| format!("event {}", rec.seq()))?
        {
            for seq in erased {
                listed.insert(seq, secret.clone());
            }
        }
    }
    Ok(listed)
}

fn unlisted(rec: &Record) -> anyhow::Error {
    anyhow::anyhow!(
        "event {} ({}) was erased from the log, but no later secret_deleted event lists it: it was destroyed outside ScopeHold by someone with write access to the log; refusing to build state from it",
        rec.seq(),
        kind_name(rec)
    )
}

/// Folds every event of the log in `log_dir` (whose last checkpoint `public` must verify),
/// holding erased records to the rule above.
pub fn replay_log(log_dir: &Path, public: &PublicKey) -> Result<Replayed> {
    let mut r = Replayed {
        state: State::default(),
        unerased: Vec::new(),
        erased: Vec::new(),
    };
    replay_more(log_dir, public, &mut r)?;
    Ok(r)
}

/// Folds the events of the log in `log_dir` that `r` has not seen yet (from
/// `r.state.applied` on) into it, as [`replay_log`] does: a standby keeps its projection
/// current this way as it copies the active hub's batches.
pub fn replay_more(log_dir: &Path, public: &PublicKey, r: &mut Replayed) -> Result<()> {
    let reader = LogReader::open(log_dir, Some(public)).context("opening the log to replay it")?;
    let state = &mut r.state;
    let mut deletions: Option<HashMap<u64, SecretName>> = None;
    let mut erased_seen: HashSet<u64> = r.erased.iter().copied().collect();
    let unerased = &mut r.unerased;
    for rec in reader.events_from(state.applied)? {
        let rec = rec?;
        let seq = rec.seq();
        if seq != state.applied {
            bail!("event {seq} read where event {} belongs", state.applied);
        }
        if rec.erased {
            if deletions.is_none() {
                deletions = Some(deletions_from(&reader, seq)?);
            }
            let secret = deletions
                .as_ref()
                .and_then(|d| d.get(&seq))
                .ok_or_else(|| unlisted(&rec))?;
            if rec.envelope.kind != EventKind::SecretVersionSealed.number() {
                bail!(
                    "event {seq} ({}) was erased from the log, but only a deleted secret's sealed values may be",
                    kind_name(&rec)
                );
            }
            state
                .apply_erased_seal(secret)
                .with_context(|| format!("event {seq}"))?;
            erased_seen.insert(seq);
            continue;
        }
        let body = rec.body.as_ref().context("a log record without its body")?;
        let ev = Event::from_body(rec.envelope.kind, &body.bytes)
            .with_context(|| format!("event {seq}"))?;
        state.apply(&ev).with_context(|| format!("event {seq}"))?;
        if let Event::SecretDeleted { erased, .. } = &ev {
            unerased.extend(erased.iter().filter(|s| !erased_seen.contains(*s)));
        }
    }
    let mut erased: Vec<u64> = erased_seen.into_iter().collect();
    erased.sort_unstable();
    r.erased = erased;
    Ok(())
}

/// What `scopehold log verify` adds for a log with erased records: each one must be a
/// `secret_version_sealed` event listed by a later `secret_deleted` event. Returns how many
/// erased records were checked.
pub fn check_erasures(log_dir: &Path) -> Result<u64> {
    let reader = LogReader::open(log_dir, None).context("opening the log")?;
    let mut checked = 0;
    let mut deletions: Option<HashMap<u64, SecretName>> = None;
    for rec in reader.events_from(0)? {
        let rec = rec?;
        if !rec.erased {
            continue;
        }
        if deletions.is_none() {
            deletions = Some(deletions_from(&reader, rec.seq())?);
        }
        if !deletions
            .as_ref()
            .is_some_and(|d| d.contains_key(&rec.seq()))
        {
            return Err(unlisted(&rec));
        }
        if rec.envelope.kind != EventKind::SecretVersionSealed.number() {
            bail!(
                "event {} ({}) was erased, but only a deleted secret's sealed values may be",
                rec.seq(),
                kind_name(&rec)
            );
        }
        checked += 1;
    }
    Ok(checked)
}

/// Before erasing: each listed event must be `secret`'s sealed value, read back from the log
/// (or erased already). A safety net under the fold's count of sequence numbers: nothing
/// else is ever erased.
pub fn check_targets(log_dir: &Path, secret: &SecretName, seqs: &[u64]) -> Result<()> {
    let reader = LogReader::open(log_dir, None).context("opening the log")?;
    for &seq in seqs {
        let rec = reader.get(seq)?;
        if rec.envelope.kind != EventKind::SecretVersionSealed.number() {
            bail!(
                "event {seq} is {}, not a sealed value of {secret}",
                kind_name(&rec)
            );
        }
        let Some(body) = &rec.body else {
            continue; // erased already
        };
        match Event::from_body(rec.envelope.kind, &body.bytes)? {
            Event::SecretVersionSealed { secret: s, .. } if &s == secret => {}
            _ => bail!("event {seq} is a sealed value of another secret than {secret}"),
        }
    }
    Ok(())
}
