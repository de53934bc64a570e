//! The daemon's core: the projection, the log, the master key, and the rule that ties them.
//!
//! Every change is decided under the state lock, applied to the in-memory state and submitted
//! to the log in the same critical section, so the log's order is the order of decisions and
//! concurrent requests can never exceed a grant's maximum or rate. The caller's answer waits
//! for the log's receipt: nothing (no secret byte, no "ok") leaves before the event recording
//! it is durable and covered by a signed checkpoint. If the log fails, the writer is poisoned,
//! every later request is refused with 503, and a restart rebuilds the state from the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use scopehold_log::Clock;
use scopehold_log::{Log, LogReader, Receipt};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::domain::{self, Caller, Event, Refusal, Resolution, State};
use crate::home::Home;
use crate::seal::MasterKey;

/// Credentials look like `shk_` followed by 64 hex characters (256 random bits).
pub const CREDENTIAL_PREFIX: &str = "shk_";

/// Unauthenticated denials from one peer uid are recorded at most once per this window; the
/// event carries how many it stands for.
const UNAUTH_WINDOW_MS: u64 = 10_000;

/// A refusal or failure, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn log_unavailable(why: impl Into<String>) -> Self {
        Self::new(503, "log_unavailable", why)
    }
    pub fn unauthenticated() -> Self {
        Self::new(401, "unauthenticated", "no valid credential")
    }
    pub fn denied() -> Self {
        Self::new(403, "denied", "not granted")
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(403, "forbidden", m)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::new(r.status, r.code, r.message)
    }
}

/// Who is on the other end of the socket, from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
}

/// A resolved value: zeroized when dropped, never printed.
pub struct Resolved {
    pub value: Zeroizing<Vec<u8>>,
    pub version: u32,
    pub event: u64,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Resolved {{ version: {}, event: {} }}",
            self.version, self.event
        )
    }
}

pub struct Core {
    state: Mutex<State>,
    log: Log,
    master: MasterKey,
    clock: Clock,
    unauth: Mutex<HashMap<u32, (u64, u64)>>,
    /// Unwrapped data keys of versions resolved so far (zeroized when dropped). The master
    /// key that unwraps them is in memory anyway; this saves one decryption per resolution.
    data_keys: Mutex<HashMap<(String, u32), std::sync::Arc<crate::seal::DataKey>>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

type Pending = oneshot::Receiver<Result<Vec<Receipt>, scopehold_log::AppendError>>;

/// Rebuilds the state by folding every event of the log (the log alone rebuilds state).
pub fn replay(log_dir: &Path, public: &scopehold_log::PublicKey) -> Result<State> {
    let reader = LogReader::open(log_dir, Some(public)).context("opening the log to replay it")?;
    let mut state = State::default();
    for rec in reader.events_from(0)? {
        let rec = rec?;
        let body = rec.body.as_ref().context("a log record without its body")?;
        let ev = Event::from_body(rec.envelope.kind, &body.bytes)
            .map_err(|e| anyhow::anyhow!("event {}: {e}", rec.seq()))?;
        state
            .apply(&ev)
            .with_context(|| format!("event {}", rec.seq()))?;
    }
    Ok(state)
}

impl Core {
    /// Opens the log (recovering from a crash), replays it, and loads the master key.
    pub fn open(home: &Home, clock: Clock) -> Result<Self> {
        Self::open_with_storage(home, clock, std::sync::Arc::new(scopehold_log::StdStorage))
    }

    /// As [`open`](Self::open), writing the log through `storage` (tests inject faults here).
    pub fn open_with_storage(
        home: &Home,
        clock: Clock,
        storage: std::sync::Arc<dyn scopehold_log::Storage>,
    ) -> Result<Self> {
        let key = scopehold_log::LogKey::load(&home.log_key())?;
        let public = key.public();
        let opts = scopehold_log::LogOptions {
            clock: clock.clone(),
            storage,
            ..home.log_options()
        };
        let log = Log::open(&home.log_dir(), key, opts).map_err(|e| match e {
            scopehold_log::LogError::Locked(_) => anyhow::anyhow!(
                "another scopehold daemon is already running on {} (its log is locked)",
                home.root.display()
            ),
            e => anyhow::Error::new(e)
                .context(format!("opening the log in {}", home.log_dir().display())),
        })?;
        let state = replay(&home.log_dir(), &public)?;
        let master = MasterKey::load(&home.master_key())?;
        Ok(Self {
            state: Mutex::new(state),
            log,
            master,
            clock,
            unauth: Mutex::new(HashMap::new()),
            data_keys: Mutex::new(HashMap::new()),
        })
    }

    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// A copy of the current state (for listings).
    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn check_log(&self) -> Result<(), ApiError> {
        match self.log.status().poisoned {
            Some(why) => Err(ApiError::log_unavailable(format!(
                "the audit log cannot be written ({why}); restart the daemon once the fault is cleared"
            ))),
            None => Ok(()),
        }
    }

    /// Applies `events` and submits them to the log, in one critical section with the
    /// decision that produced them (the caller holds `state`).
    fn apply_and_submit(&self, state: &mut State, events: Vec<Event>) -> Result<Pending, ApiError> {
        let entries = events
            .iter()
            .map(Event::to_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::log_unavailable(e.to_string()))?;
        for e in &events {
            // Decisions validate everything `apply` checks, so this cannot fail; if it ever
            // does, refuse rather than log a history the projection would reject.
            state.apply(e).map_err(|e| {
                ApiError::new(
                    500,
                    "internal",
                    format!("refused an inconsistent change: {e}"),
                )
            })?;
        }
        let (tx, rx) = oneshot::channel();
        self.log.submit(
            entries,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        Ok(rx)
    }

    async fn durable(&self, pending: Pending) -> Result<Vec<Receipt>, ApiError> {
        match pending.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(ApiError::log_unavailable(format!(
                "the audit log cannot be written: {e}"
            ))),
            Err(_) => Err(ApiError::log_unavailable("the audit log writer stopped")),
        }
    }

    /// Decides a change under the state lock, appends its events and waits until they are
    /// durable. Returns the decision's value and the last event's sequence number.
    pub async fn change<T>(
        &self,
        decide: impl FnOnce(&State, u64) -> Result<(T, Vec<Event>), Refusal>,
    ) -> Result<(T, u64), ApiError> {
        self.check_log()?;
        let (value, pending) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (value, events) = decide(&st, self.now())?;
            (value, self.apply_and_submit(&mut st, events)?)
        };
        let receipts = self.durable(pending).await?;
        Ok((value, receipts.last().map_or(0, |r| r.seq)))
    }

    /// Establishes the caller: an agent by its credential (and, if bound, its uid), or else a
    /// member by the peer's uid. Never from request fields.
    pub async fn authenticate(&self, token: Option<&str>, peer: Peer) -> Result<Caller, ApiError> {
        self.check_log()?;
        let found = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match token {
                Some(t) => {
                    let h = blake3::Hash::from_bytes(self.master.credential_hash(t));
                    // Constant-time comparison against every agent: no early exit on a match.
                    let mut hit = None;
                    for (name, a) in &st.agents {
                        if let Some(stored) = a.credential_hash
                            && blake3::Hash::from_bytes(stored) == h
                        {
                            hit = Some((name.clone(), a.uid, a.revoked));
                        }
                    }
                    hit.map(|(n, uid, revoked)| (format!("agent:{n}"), uid, revoked))
                }
                None => st
                    .member_by_uid(peer.uid)
                    .map(|(n, _)| (format!("member:{n}"), Some(peer.uid), false)),
            }
        };
        let Some((identity, bound_uid, revoked)) = found else {
            self.record_unauthenticated(peer).await?;
            return Err(ApiError::unauthenticated());
        };
        let caller = Caller {
            identity,
            uid: peer.uid,
            pid: peer.pid,
        };
        if revoked || bound_uid.is_some_and(|u| u != peer.uid) {
            let reason = if revoked {
                "agent revoked"
            } else {
                "caller uid not bound to agent"
            };
            self.record_denial(&caller, "", "", reason).await?;
            return Err(ApiError::denied());
        }
        Ok(caller)
    }

    async fn record_denial(
        &self,
        caller: &Caller,
        secret: &str,
        project: &str,
        reason: &str,
    ) -> Result<(), ApiError> {
        let ev = Event::ResolutionDenied {
            identity: caller.identity.clone(),
            secret: secret.into(),
            project: project.into(),
            reason: reason.into(),
            pid: caller.pid,
            uid: caller.uid,
            at_ms: self.now(),
        };
        self.change(|_, _| Ok(((), vec![ev]))).await.map(|_| ())
    }

    /// Counts denials of peers without a valid credential; records one event per peer uid per
    /// window, standing for all the denials it counted.
    async fn record_unauthenticated(&self, peer: Peer) -> Result<(), ApiError> {
        let now = self.now();
        let count = {
            let mut m = self.unauth.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(peer.uid).or_insert((0, 0));
            e.1 += 1;
            if e.0 != 0 && now < e.0 + UNAUTH_WINDOW_MS {
                return Ok(());
            }
            let c = e.1;
            *e = (now, 0);
            c
        };
        let ev = Event::UnauthenticatedDenied {
            uid: peer.uid,
            pid: peer.pid,
            count,
            at_ms: now,
        };
        self.change(|_, _| Ok(((), vec![ev]))).await.map(|_| ())
    }

    /// The agent's call. The value is decrypted only after the resolution event is durable.
    pub async fn resolve(
        &self,
        caller: &Caller,
        secret: &str,
        project: &str,
        version: Option<u32>,
    ) -> Result<Resolved, ApiError> {
        self.check_log()?;
        let (decision, sealed, pending) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let d = domain::decide_resolve(&st, caller, secret, project, version, self.now());
            let (event, sealed) = match &d {
                Resolution::Granted { version, event, .. } => (
                    event.clone(),
                    st.secrets
                        .get(secret)
                        .and_then(|s| s.versions.get(version))
                        .cloned(),
                ),
                Resolution::Denied { event } | Resolution::RateLimited { event } => {
                    (event.clone(), None)
                }
            };
            let pending = self.apply_and_submit(&mut st, vec![event])?;
            (d, sealed, pending)
        };
        let receipts = self.durable(pending).await?;
        let seq = receipts.last().map_or(0, |r| r.seq);
        match decision {
            Resolution::Granted { version, .. } => {
                let sealed = sealed.ok_or_else(|| {
                    ApiError::new(500, "internal", "granted version has no sealed value")
                })?;
                let value = self.open_cached(secret, version, &sealed).map_err(|_| {
                    ApiError::new(
                        500,
                        "internal",
                        "a stored value does not open with this master key",
                    )
                })?;
                Ok(Resolved {
                    value,
                    version,
                    event: seq,
                })
            }
            Resolution::Denied { .. } => Err(ApiError::denied()),
            Resolution::RateLimited { .. } => Err(ApiError::new(
                429,
                "rate_limited",
                "over the grant's rate; retry later",
            )),
        }
    }

    pub fn require_admin(&self, caller: &Caller) -> Result<(), ApiError> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match caller
            .identity
            .strip_prefix("member:")
            .and_then(|n| st.members.get(n))
        {
            Some(m) if m.admin && m.uid == caller.uid => Ok(()),
            _ => Err(ApiError::forbidden(
                "admin operations are for admin members (by their uid)",
            )),
        }
    }

    /// Opens a granted version's value, unwrapping its data key once per version.
    fn open_cached(
        &self,
        secret: &str,
        version: u32,
        sealed: &crate::seal::Sealed,
    ) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let key = (secret.to_string(), version);
        let cached = self
            .data_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let dk = match cached {
            Some(dk) => dk,
            None => {
                let dk = std::sync::Arc::new(self.master.data_key(secret, version, sealed)?);
                self.data_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, dk.clone());
                dk
            }
        };
        dk.open(secret, version)
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Flushes and closes the log (kept checkpoint written). Returns the writer's failure.
    pub fn close(self) -> Result<(), scopehold_log::CloseError> {
        self.log.close()
    }
}

/// A fresh agent credential and its keyed hash. The credential is returned once, to the admin
/// who created the agent; only the hash is stored.
pub fn new_credential(master: &MasterKey) -> Result<(Zeroizing<String>, [u8; 32]), ApiError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut())
        .map_err(|e| ApiError::new(500, "internal", format!("OS random source: {e}")))?;
    let cred = Zeroizing::new(format!("{CREDENTIAL_PREFIX}{}", hex::encode(raw.as_ref())));
    let h = master.credential_hash(&cred);
    Ok((cred, h))
}
