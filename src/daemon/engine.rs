//! The engine: the projection, the log, the master key, and the rule that ties them.
//!
//! Every command is decided under the state lock, its events applied to the in-memory state
//! and submitted to the log in the same critical section, so the log's order is the order
//! of decisions and concurrent requests can never exceed a grant's maximum or rate. The
//! caller's answer waits for the log's receipt: nothing (no secret byte, no "ok") leaves
//! before the event recording it is durable and covered by a signed checkpoint. If the log
//! fails, the writer is poisoned, every later request is refused with 503, and a restart
//! rebuilds the state from the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use scopehold_log::Clock;
use scopehold_log::{Log, Receipt};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::denials::{DenialKey, Denials, Noted};
use super::home::Home;
use super::seal::{DataKey, MasterKey};
use crate::api::ApiError;
use crate::domain::{
    self, Caller, Command, CredentialHash, Event, Identified, ProjectName, Refusal, SecretName,
    State,
};

/// Credentials look like `shk_` followed by 64 hex characters (256 random bits).
pub const CREDENTIAL_PREFIX: &str = "shk_";

/// Bounds on what callers can make the daemon write, and the disk it keeps free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A caller's repeated denials are written once per window (see `denials`).
    pub denial_window_ms: u64,
    /// Distinct callers counted per window before they fold into one overflow count.
    pub denial_keys: usize,
    /// Below this much free space on the log's file system, only revocations (which reduce
    /// access) are still logged; everything else is refused with 503 `disk_reserve`.
    pub disk_reserve_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            denial_window_ms: 10_000,
            denial_keys: 1024,
            disk_reserve_bytes: 64 << 20,
        }
    }
}

/// Who is on the other end of the socket, from the kernel (or, through an edge, from the
/// kernel of the host its certificate names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's pid, when the kernel reports one.
    pub pid: Option<i32>,
    /// The enrolled host whose edge forwarded the call; `None`: the local socket.
    pub host: Option<domain::Name>,
}

impl Peer {
    /// A caller on this host, as the kernel reports it.
    pub fn local(uid: u32, pid: Option<i32>) -> Self {
        Peer {
            uid,
            pid,
            host: None,
        }
    }
}

/// A resolved value: zeroized when dropped, never printed.
pub struct Resolved {
    /// The value.
    pub value: Zeroizing<Vec<u8>>,
    /// Its version.
    pub version: u32,
    /// The event that recorded the resolution.
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

/// A command carried out: the events it appended (now durable) and the last one's number.
#[derive(Debug)]
pub struct Executed {
    /// The events, in log order.
    pub events: Vec<Event>,
    /// The sequence number of the last of them.
    pub seq: u64,
}

/// The daemon's state, log and keys.
pub struct Engine {
    state: Mutex<State>,
    log: Log,
    master: MasterKey,
    clock: Clock,
    limits: Limits,
    denials: Mutex<Denials>,
    /// The uid this daemon runs as, and the agents seen calling from it (see `Custody`).
    own_uid: u32,
    same_uid_agents: Mutex<std::collections::BTreeSet<domain::Name>>,
    keys_sealed: bool,
    /// Set while free space on the log's file system is under the reserve (refreshed by
    /// [`Engine::refresh_disk_reserve`], every second from the daemon's housekeeping).
    under_reserve: AtomicBool,
    /// Unwrapped data keys of versions resolved so far (zeroized when dropped). The master
    /// key that unwraps them is in memory anyway; this saves one decryption per resolution.
    data_keys: Mutex<HashMap<(SecretName, u32), Arc<DataKey>>>,
    /// The placeholders of runs in progress, by keyed hash: which run and secret each stands
    /// for. Memory only, never logged: a daemon restart kills every placeholder.
    placeholders: Mutex<HashMap<[u8; 32], (u64, SecretName)>>,
    /// The outcome of each deletion's erasure, queued with the deletion, for its request.
    erasures: Mutex<HashMap<SecretName, oneshot::Receiver<Result<(), String>>>>,
    /// Outcomes of proxied calls not yet written (one `proxy_results` event per batch).
    proxy_results: Mutex<Vec<domain::ProxyResult>>,
    /// Runs whose held answer closed, to be recorded as ended by the housekeeping (their
    /// placeholders are already dead).
    ended_runs: Mutex<Vec<(u64, &'static str)>>,
    /// Set when the daemon stops: held runs end their answers, tunnels close, and waiting
    /// watches are answered.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The injecting proxy's client, when the daemon runs one.
    upstream: Option<Arc<super::proxy::Upstream>>,
    /// Watches (`/v1/watch`): bumped once a batch of events that may end what a watcher
    /// holds is durable, and once more when the daemon stops (with `stopping` set).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Watches waiting now (for tests and diagnostics: a watch whose caller hung up must
    /// not linger).
    watching: Arc<std::sync::atomic::AtomicUsize>,
    /// The hub's CA and live host connections (see `hub`).
    pub(crate) hub: super::hub::HubState,
    /// The log's PostgreSQL store, when the daemon has one (`--store`).
    store: Option<Arc<super::store::PgStore>>,
}

/// A secret deleted by [`Engine::delete_secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shredded {
    /// The `secret_deleted` event.
    pub event: u64,
    /// How many sealed versions it lists.
    pub erased: usize,
    /// Why they are still in the log, if the erasure failed (the next start erases them).
    pub erase_error: Option<String>,
}

/// A proxied call the log has recorded: its event's number, the version, and the key.
pub struct Authorized {
    /// The `proxy_call` event's sequence number.
    pub call: u64,
    /// The version whose key is injected.
    pub version: u32,
    /// The key.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Authorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorized")
            .field("call", &self.call)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// How long a request waits for its record while the log's store is unreachable before it is
/// answered 503 (see [`Engine::durable`]).
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Prefix of a run's placeholder keys.
pub const PLACEHOLDER_PREFIX: &str = "shr_";

/// Outcomes written in one `proxy_results` event at most (a batch this full is written at
/// once rather than at the next second's housekeeping).
pub const PROXY_RESULTS_BATCH: usize = 256;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// A decision's events, queued in the log under the state lock: committed (on this task's
/// thread, if the writer is idle) only by [`Engine::durable`], once that lock is released, so
/// other requests decide and queue behind it during its fdatasync.
struct Pending<'a> {
    done: oneshot::Receiver<Result<Vec<Receipt>, scopehold_log::AppendError>>,
    lead: scopehold_log::Lead<'a>,
}

/// Rebuilds the state by folding every event of the log (the log alone rebuilds state).
/// An erased record must be a sealed value that a later `secret_deleted` lists
/// (`daemon::shred`).
pub fn replay(log_dir: &Path, public: &scopehold_log::PublicKey) -> Result<State> {
    Ok(super::shred::replay_log(log_dir, public)?.state)
}

fn log_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::LogUnavailable(format!("the audit log cannot be written: {e}"))
}

impl Engine {
    /// Opens the log (recovering from a crash), replays it, and loads the master key.
    pub fn open(home: &Home, clock: Clock) -> Result<Self> {
        Self::open_with_storage(home, clock, Arc::new(scopehold_log::StdStorage))
    }

    /// As [`open`](Self::open), writing the log through `storage` (tests inject faults here).
    pub fn open_with_storage(
        home: &Home,
        clock: Clock,
        storage: Arc<dyn scopehold_log::Storage>,
    ) -> Result<Self> {
        Ok(Self::open_with(home, clock, storage, None)?.expect("no store: never a standby"))
    }

    /// As [`open`](Self::open), with the log kept in a PostgreSQL store (`--store`): the
    /// local log is brought into agreement with it (see [`PgStore::reconcile`]) before it is
    /// verified and replayed, and every batch goes to the store first from then on.
    ///
    /// [`PgStore::reconcile`]: super::store::PgStore::reconcile
    ///
    /// If another hub holds the log's lock, this one is a standby until it is freed: it
    /// follows the store into its copy (see [`PgStore::follow`]), erasing deleted secrets'
    /// sealed values as the active hub does, and opens as above once it holds the lock.
    /// `None`: `stop` was set while it waited.
    ///
    /// [`PgStore::follow`]: super::store::PgStore::follow
    pub fn open_with_store(
        home: &Home,
        clock: Clock,
        store: Option<super::store::StoreUrl>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Self>> {
        Self::open_with(
            home,
            clock,
            Arc::new(scopehold_log::StdStorage),
            store.map(|s| (s, stop)),
        )
    }

    fn open_with(
        home: &Home,
        clock: Clock,
        storage: Arc<dyn scopehold_log::Storage>,
        store: Option<(super::store::StoreUrl, &tokio::sync::watch::Receiver<bool>)>,
    ) -> Result<Option<Self>> {
        // Checks the state directory and unseals both keys (asking for the passphrase if
        // they are sealed) before anything else is opened.
        let (key, master) = home.load_keys()?;
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
        let dir = home.log_dir();
        // Nothing is built from the log before it is proven: the chain from genesis, every
        // body's commitment, every checkpoint against the chain, and the last checkpoint's
        // signature, which covers every event before it through the chain. A body edited on
        // disk with its CRC recomputed (a member made admin) stops start-up here, named.
        // Every other checkpoint's signature is left to `log verify --all-signatures`: it
        // adds nothing to what the state is built from, and it was three quarters
        // of start-up on a long log (6.4 of 8.5 s at 10^6 events; see `startup_bench`).
        let verified = || -> Result<super::shred::Replayed> {
            let report = scopehold_log::verify_log(
                &dir,
                &public,
                &scopehold_log::VerifyOptions {
                    all_signatures: false,
                    trusted: None,
                },
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "the log in {} does not verify, so no state is built from it: {e}",
                    dir.display()
                )
            })?;
            tracing::debug!(
                events = report.events,
                signatures = report.signatures_checked,
                erased = report.erased_bodies,
                "log verified before replay"
            );
            super::shred::replay_log(&dir, &public)
        };
        let (store, replayed) = match store {
            Some((url, stop)) => {
                let store = Arc::new(super::store::PgStore::open(url, log.log_id(), public)?);
                // A standby's projection, kept current as it follows (so a takeover
                // replays nothing): the copy it starts from verified and replayed first,
                // then every batch checked as it is copied and folded in.
                let mut followed = None;
                if !store.take_lock()? {
                    tracing::warn!(store = %store.url(), "another hub is the log's writer: this one is a standby; it follows the log and takes over when that hub's session ends");
                    let mut r = verified()?;
                    finish_erasures(&log, &mut r)?;
                    super::notify(&format!(
                        "STATUS=standby: following the log in {}\n",
                        store.url()
                    ));
                    let took = store.follow(&log, &dir, stop, |_| {
                        super::shred::replay_more(&dir, &public, &mut r)?;
                        // The active hub erased a deleted secret's sealed values: so does
                        // this copy, at once, not at takeover.
                        finish_erasures(&log, &mut r)
                    })?;
                    if !took {
                        return Ok(None);
                    }
                    tracing::info!(store = %store.url(), events = log.status().size, "took over the log's lock: this hub is now the writer");
                    followed = Some(r);
                }
                let copied = store.reconcile(&log, &dir)?;
                if copied > 0 {
                    tracing::info!(events = copied, store = %store.url(), "copied the events this hub's log lacked from the store");
                }
                log.attach_replica(store.clone());
                tracing::info!(store = %store.url(), "the log is kept in the store; the state directory's log is its copy");
                let replayed = match followed {
                    Some(mut r) => {
                        super::shred::replay_more(&dir, &public, &mut r)?;
                        r
                    }
                    None => verified()?,
                };
                (Some(store), replayed)
            }
            None => (None, verified()?),
        };
        let super::shred::Replayed {
            state,
            unerased,
            erased,
        } = replayed;
        // Erasures the store may not have had (a stop between the local erasure and the
        // store's): redone, so the store never keeps a deleted secret's sealed values.
        if let Some(st) = &store
            && !erased.is_empty()
        {
            let n = st.sync_erasures(&dir, &erased)?;
            if n > 0 {
                tracing::warn!(
                    batches = n,
                    "erased deleted secrets' sealed values in the store, which still held them"
                );
            }
        }
        if !unerased.is_empty() {
            // A deletion is recorded but its erasure did not complete (a crash, a storage
            // failure): finish it before serving anything.
            match log.erase(&unerased) {
                Ok(e) => tracing::warn!(
                    records = e.erased.len(),
                    "erased the sealed values of deleted secrets whose erasure had not completed"
                ),
                Err(e @ scopehold_log::EraseError::Failed(_)) => tracing::error!(
                    error = %e,
                    "the sealed values of deleted secrets are still in the log; retrying at the next start"
                ),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("erasing the sealed values of deleted secrets"));
                }
            }
        }
        Self {
            state: Mutex::new(state),
            log,
            master,
            clock,
            limits: Limits::default(),
            denials: Mutex::new(Denials::new(
                Limits::default().denial_window_ms,
                Limits::default().denial_keys,
            )),
            under_reserve: AtomicBool::new(false),
            own_uid: nix::unistd::geteuid().as_raw(),
            same_uid_agents: Mutex::new(Default::default()),
            keys_sealed: home.is_sealed().unwrap_or(false),
            data_keys: Mutex::new(HashMap::new()),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            watching: Arc::default(),
            hub: super::hub::HubState::default(),
            placeholders: Mutex::new(HashMap::new()),
            erasures: Mutex::new(HashMap::new()),
            proxy_results: Mutex::new(Vec::new()),
            ended_runs: Mutex::new(Vec::new()),
            stopping: tokio::sync::watch::Sender::new(false),
            upstream: None,
            store,
        }
        .ended_stale_runs()
        .map(Some)
    }

    /// Runs the log shows in progress were cut off by the daemon's stop or crash: their
    /// placeholders died with it. Recorded as ended before anything is served.
    fn ended_stale_runs(self) -> Result<Self> {
        let now = self.now();
        let stale: Vec<Event> = self.read(|st| {
            st.runs
                .keys()
                .map(|run| Event::RunEnded {
                    run: *run,
                    reason: "daemon restarted".into(),
                    at_ms: now,
                })
                .collect()
        });
        if stale.is_empty() {
            return Ok(self);
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for e in &stale {
                st.apply(e).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        let entries = stale
            .iter()
            .map(Event::to_entry)
            .collect::<Result<Vec<_>, _>>()?;
        self.log
            .append_batch(entries)
            .context("recording the end of runs cut off by the last stop")?;
        Ok(self)
    }

    /// The same engine with the injecting proxy's client.
    pub fn with_upstream(mut self, upstream: super::proxy::Upstream) -> Self {
        self.upstream = Some(Arc::new(upstream));
        self
    }

    /// The injecting proxy's client, if this daemon runs one.
    pub fn upstream(&self) -> Option<&Arc<super::proxy::Upstream>> {
        self.upstream.as_ref()
    }

    /// The daemon is stopping: held answers (runs) end, tunnels close, and every waiting
    /// watch (and any that starts later) is answered [`ApiError::Stopping`], so that none of
    /// them holds up the drain.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes to `true` when the daemon stops.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// What the daemon can say about its own custody (`/v1/health`).
    pub fn custody(&self) -> crate::api::wire::Custody {
        crate::api::wire::Custody {
            daemon_uid: self.own_uid,
            keys_sealed: self.keys_sealed,
            agents_sharing_the_daemon_uid: self
                .same_uid_agents
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// The same engine with other limits (tests; a daemon flag later).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.denials = Mutex::new(Denials::new(limits.denial_window_ms, limits.denial_keys));
        self.refresh_disk_reserve();
        self
    }

    /// The limits in force (the disk reserve for `status` and `doctor`).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether free space was under the reserve at the last check.
    pub fn under_disk_reserve(&self) -> bool {
        self.under_reserve.load(Ordering::Relaxed)
    }

    /// Re-reads the free space of the log's file system against the reserve.
    pub fn refresh_disk_reserve(&self) {
        let under = match nix::sys::statvfs::statvfs(self.log.dir()) {
            Ok(v) => {
                v.blocks_available().saturating_mul(v.fragment_size())
                    < self.limits.disk_reserve_bytes
            }
            // Unknown free space: do not refuse on a guess; a full disk still fails closed
            // through the log itself.
            Err(_) => false,
        };
        let was = self.under_reserve.swap(under, Ordering::Relaxed);
        if under != was {
            tracing::warn!(
                under,
                reserve_bytes = self.limits.disk_reserve_bytes,
                "disk reserve {}",
                if under {
                    "reached: only revocations are logged"
                } else {
                    "regained"
                }
            );
        }
    }

    /// Writes the counts of denial windows that have ended (all of them with `all`).
    pub async fn flush_denials(&self, all: bool) -> Result<(), ApiError> {
        let due = self
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_due(self.now(), all);
        if due.is_empty() {
            return Ok(());
        }
        self.record(due).await.map(|_| ())
    }

    /// Notes a denial: `None` when it is only counted, else the events to record now (an
    /// ended window's count, if any; the caller appends the denial itself after them).
    fn note_denial(
        &self,
        key: DenialKey,
        uid: u32,
        host: Option<&domain::Name>,
    ) -> Option<Vec<Event>> {
        match self.denials.lock().unwrap_or_else(|p| p.into_inner()).note(
            key,
            uid,
            host,
            self.now(),
        ) {
            Noted::Counted => None,
            Noted::Record(ended) => Some(ended.into_iter().map(|e| *e).collect()),
        }
    }

    /// The engine's clock (ms since the epoch).
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Reads the state under the lock: for listings and for what a command needs prepared
    /// (the version a rotation will seal). Keep `f` short: resolutions wait on this lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn check_log(&self) -> Result<(), ApiError> {
        // The store down: refused before anything is decided, so nothing queues behind the
        // batch that waits for it and nothing is released (see `store`).
        if let Some(why) = self.store.as_ref().and_then(|s| s.lost()) {
            return Err(ApiError::LogUnavailable(format!(
                "this hub is no longer the log's writer ({why}); it is stopping, and another hub answers"
            )));
        }
        if let Some(why) = self.store.as_ref().and_then(|s| s.unavailable()) {
            return Err(ApiError::LogUnavailable(format!(
                "the audit log's store is unreachable ({why}); nothing is answered until it is back, and service resumes by itself"
            )));
        }
        match self.log.status().poisoned {
            Some(why) => Err(ApiError::LogUnavailable(format!(
                "the audit log cannot be written ({why}); restart the daemon once the fault is cleared"
            ))),
            None => Ok(()),
        }
    }

    /// Applies `events` and submits them to the log, in one critical section with the
    /// decision that produced them (the caller holds `state`).
    fn apply_and_submit(
        &self,
        state: &mut State,
        events: &[Event],
    ) -> Result<Pending<'_>, ApiError> {
        let entries = events
            .iter()
            .map(Event::to_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::LogUnavailable(e.to_string()))?;
        // The log would refuse it after the state took it, and the state's count of events
        // (each event's sequence number, which deletions rely on) would run ahead of the log.
        // The same for the events together: one decision is one batch, and a batch's write is
        // bounded (it bounds how far a torn write can reach in a pre-zeroed segment).
        if entries
            .iter()
            .any(|e| e.len() > scopehold_log::codec::MAX_BODY_LEN)
            || !Log::fits_one_batch(&entries)
        {
            return Err(ApiError::Internal(
                "an event over the log's size limit".into(),
            ));
        }
        // Decisions return only events that apply (a property test holds `decide` to it), so
        // this cannot fail; if it ever does, refuse rather than log a history the projection
        // would reject. The state is applied on a copy only when the batch has more than one
        // event, so a failure part-way leaves nothing half-applied.
        if let [one] = events {
            state.apply(one).map_err(inconsistent)?;
        } else {
            let mut next = state.clone();
            for e in events {
                next.apply(e).map_err(inconsistent)?;
            }
            *state = next;
        }
        if events.iter().any(|e| {
            matches!(
                e,
                Event::SecretRevoked { .. }
                    | Event::SecretRotated { .. }
                    | Event::SecretDeleted { .. }
            )
        }) {
            self.prune_data_keys_in(state, self.now());
        }
        let (tx, rx) = oneshot::channel();
        // Watchers are woken only once the batch is durable: none hears of a change the log
        // does not hold (and a failed write wakes nobody).
        let wake = events
            .iter()
            .any(domain::watch::may_end_a_hold)
            .then(|| self.changes.clone());
        let lead = self.log.queue(
            entries,
            Box::new(move |r| {
                let durable = r.is_ok();
                let _ = tx.send(r);
                if let Some(changes) = wake.filter(|_| durable) {
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
            }),
        );
        for e in events {
            match e {
                // Queued here, behind the batch that records the deletion (the writer carries
                // an erasure out only after what was queued before it is durable), and not
                // by the request: a caller that goes away mid-request cannot leave a
                // recorded deletion unerased until the next start.
                Event::SecretDeleted { secret, erased, .. } => {
                    let (etx, erx) = oneshot::channel();
                    match super::shred::check_targets(self.log.dir(), secret, erased) {
                        Err(e) => {
                            let _ = etx.send(Err(format!("refused to erase: {e:#}")));
                        }
                        Ok(()) => {
                            // With a store, the store's copies of those batches are erased
                            // too (its rows hold the same sealed bodies), once the local
                            // erasure is durable; what fails here is redone at the next start.
                            let store = self.store.clone();
                            let dir = self.log.dir().to_path_buf();
                            let seqs = erased.clone();
                            self.log.submit_erase(
                                erased.clone(),
                                Box::new(move |r| {
                                    let r = r.map(|_| ()).map_err(|e| e.to_string()).and_then(|()| {
                                        match &store {
                                            Some(st) => st.sync_erasures(&dir, &seqs).map(|_| ()).map_err(|e| {
                                                format!("erased here, but the store still holds them until the next start: {e:#}")
                                            }),
                                            None => Ok(()),
                                        }
                                    });
                                    let _ = etx.send(r);
                                }),
                            )
                        }
                    }
                    self.erasures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(secret.clone(), erx);
                }
                // An ended run's placeholders die with it, whatever ended it (its process,
                // its agent revoked, its member removed, a secret it held deleted).
                Event::RunEnded { run, .. } => self
                    .placeholders
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|_, (r, _)| r != run),
                _ => {}
            }
        }
        Ok(Pending { done: rx, lead })
    }

    /// Commits queued events (see [`Pending`]) and waits until they are durable. Called with
    /// the state lock released.
    async fn durable(&self, pending: Pending<'_>) -> Result<Vec<Receipt>, ApiError> {
        let Pending { done, lead } = pending;
        // Blocks this worker for one write and fdatasync when the writer is idle: cheaper,
        // with one request in flight, than two thread hand-offs (see `scopehold_log::Lead`).
        lead.commit();
        let mut done = done;
        let waited = match &self.store {
            None => done.await,
            // A batch held for an unreachable store is committed once it is back; the caller
            // is told at once that nothing is answered meanwhile, rather than hang (an edge
            // would give up with its own 503 anyway). Nothing was released: values are opened
            // only after this returns.
            Some(store) => loop {
                match tokio::time::timeout(STORE_WAIT, &mut done).await {
                    Ok(r) => break r,
                    Err(_) => {
                        if let Some(why) = store.unavailable() {
                            return Err(ApiError::LogUnavailable(format!(
                                "the audit log's store is unreachable ({why}); this request's record is held until it is back, and nothing was answered"
                            )));
                        }
                    }
                }
            },
        };
        match waited {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(log_failed(e)),
            Err(_) => Err(ApiError::LogUnavailable(
                "the audit log writer stopped".into(),
            )),
        }
    }

    /// Appends events decided outside [`execute`](Self::execute) (denials recorded at
    /// authentication) and waits until they are durable.
    async fn record(&self, events: Vec<Event>) -> Result<u64, ApiError> {
        self.check_log()?;
        let pending = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.apply_and_submit(&mut st, &events)?
        };
        let receipts = self.durable(pending).await?;
        Ok(receipts.last().map_or(0, |r| r.seq))
    }

    /// Decides `command` for `caller` under the state lock, appends its events (or, for a
    /// refused resolution, the denial) and waits until they are durable.
    pub async fn execute(&self, caller: &Caller, command: &Command) -> Result<Executed, ApiError> {
        self.check_log()?;
        if self.under_reserve.load(Ordering::Relaxed) && !command.reduces_access() {
            return Err(ApiError::DiskReserve);
        }
        let (decision, pending) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = self.now();
            match domain::decide(&st, caller, command, now) {
                Ok(events) => {
                    let pending = self.apply_and_submit(&mut st, &events)?;
                    (Ok(events), pending)
                }
                Err(refusal) => match domain::recorded_refusal(caller, command, &refusal, now) {
                    Some(ev) => {
                        let reason = refusal
                            .deny_reason()
                            .unwrap_or(domain::DenyReason::NotGranted);
                        let key = DenialKey::Caller(caller.identity.clone(), reason);
                        let Some(mut events) =
                            self.note_denial(key, caller.uid, caller.host.as_ref())
                        else {
                            // Counted; recorded when its window ends.
                            return Err(refusal.into());
                        };
                        events.push(ev);
                        (Err(refusal), self.apply_and_submit(&mut st, &events)?)
                    }
                    None => return Err(refusal.into()),
                },
            }
        };
        let receipts = self.durable(pending).await?;
        let seq = receipts.last().map_or(0, |r| r.seq);
        decision
            .map(|events| Executed { events, seq })
            .map_err(ApiError::from)
    }

    /// Establishes the caller: an agent by its credential (and, if bound, its uid), or else a
    /// member by the peer's uid. Never from request fields. A refused caller is recorded.
    pub async fn authenticate(
        &self,
        credential: Option<&str>,
        peer: Peer,
    ) -> Result<Caller, ApiError> {
        self.check_log()?;
        let hash = credential.map(|t| self.master.credential_hash(t));
        let who = self
            .read(|st| domain::identify(st, hash.as_ref(), peer.host.as_ref(), peer.uid, peer.pid));
        match who {
            Identified::Caller(c) => {
                if peer.uid == self.own_uid
                    && peer.host.is_none()
                    && let Some(agent) = c.identity.agent()
                {
                    // Reported by /v1/health and `doctor`: nothing on disk protects against
                    // an agent under the daemon's own uid.
                    let mut seen = self
                        .same_uid_agents
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if !seen.contains(agent) {
                        tracing::warn!(agent = %agent, uid = peer.uid, "an agent calls from the daemon's own uid: it can read the state directory");
                        seen.insert(agent.clone());
                    }
                }
                Ok(c)
            }
            Identified::Denied(c, reason) => {
                if let Some(mut events) = self.note_denial(
                    DenialKey::Caller(c.identity.clone(), reason),
                    peer.uid,
                    peer.host.as_ref(),
                ) {
                    events.push(domain::denial_event(&c, None, reason, self.now()));
                    self.record(events).await?;
                }
                Err(Refusal::Denied(reason).into())
            }
            Identified::Unknown => {
                if let Some(mut events) = self.note_denial(
                    DenialKey::Unauthenticated(peer.host.clone(), peer.uid),
                    peer.uid,
                    peer.host.as_ref(),
                ) {
                    events.push(Event::UnauthenticatedDenied {
                        uid: peer.uid,
                        pid: peer.pid,
                        count: 1,
                        at_ms: self.now(),
                        from_host: peer.host.clone(),
                    });
                    self.record(events).await?;
                }
                Err(Refusal::Unauthenticated.into())
            }
        }
    }

    /// Records a refused enrolment from `peer` (counted per address, as other denials are).
    pub async fn join_denied(
        &self,
        host: Option<domain::Name>,
        reason: &str,
        peer: std::net::SocketAddr,
    ) -> Result<(), ApiError> {
        if let Some(mut events) = self.note_denial(DenialKey::Join(peer.ip()), 0, None) {
            events.push(Event::HostJoinDenied {
                host,
                reason: reason.to_string(),
                peer: peer.to_string(),
                at_ms: self.now(),
            });
            self.record(events).await?;
        }
        Ok(())
    }

    /// Refuses callers who are not admin members (by their uid).
    pub fn authorize_admin(&self, caller: &Caller) -> Result<(), ApiError> {
        self.read(|st| domain::authorize_admin(st, caller))
            .map_err(ApiError::from)
    }

    /// The agent's call: [`Command::Resolve`], then, only once its event is durable, the
    /// value decrypted.
    pub async fn resolve(&self, caller: &Caller, command: &Command) -> Result<Resolved, ApiError> {
        let done = self.execute(caller, command).await?;
        let Some(Event::SecretResolved {
            secret, version, ..
        }) = done.events.first()
        else {
            return Err(ApiError::Internal(
                "a resolution decided no resolution event".into(),
            ));
        };
        let value = self.open_cached(secret, *version).map_err(|_| {
            ApiError::Internal("a stored value does not open with this master key".into())
        })?;
        Ok(Resolved {
            value,
            version: *version,
            event: done.seq,
        })
    }

    /// Several resolutions, all or nothing ([`Command::ResolveAll`]): decided together, and
    /// only once every event is durable, every value decrypted.
    pub async fn resolve_all(
        &self,
        caller: &Caller,
        command: &Command,
    ) -> Result<Vec<(SecretName, Resolved)>, ApiError> {
        let done = self.execute(caller, command).await?;
        // The events of one decision are consecutive in the log, ending at `done.seq`.
        let first = done.seq + 1 - done.events.len() as u64;
        let mut out = Vec::with_capacity(done.events.len());
        for (i, ev) in done.events.iter().enumerate() {
            let Event::SecretResolved {
                secret, version, ..
            } = ev
            else {
                return Err(ApiError::Internal(
                    "a resolution decided no resolution event".into(),
                ));
            };
            let value = self.open_cached(secret, *version).map_err(|_| {
                ApiError::Internal("a stored value does not open with this master key".into())
            })?;
            out.push((
                secret.clone(),
                Resolved {
                    value,
                    version: *version,
                    event: first + i as u64,
                },
            ));
        }
        Ok(out)
    }

    /// Deletes a secret by crypto-shredding: [`Command::DeleteSecret`] decided and recorded
    /// (durable), then the runs holding it lose their placeholders, its cached data keys are
    /// dropped (zeroized), and the sealed versions the deletion lists are erased from the log.
    /// If the erasure fails the deletion stands (it is recorded, the secret never resolves
    /// again), the answer says so, and the next start erases them.
    pub async fn delete_secret(
        &self,
        caller: &Caller,
        secret: &SecretName,
    ) -> Result<Shredded, ApiError> {
        let done = self
            .execute(
                caller,
                &Command::DeleteSecret {
                    secret: secret.clone(),
                },
            )
            .await?;
        let Some(Event::SecretDeleted { erased, .. }) = done.events.first() else {
            return Err(ApiError::Internal(
                "a deletion decided no secret_deleted event".into(),
            ));
        };
        let event = done.seq - (done.events.len() as u64 - 1);
        // The runs holding it ended in the same decision, and `apply_and_submit` dropped
        // their placeholders with them.
        // Pruned when the deletion was applied already; this also catches a key cached by a
        // resolution that was decided before the deletion and opened its value after it.
        self.data_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| s != secret);
        // The erasure was queued when the deletion was (`apply_and_submit`).
        let queued = self
            .erasures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(secret);
        let outcome = match queued {
            None => Err("the erasure was not queued".to_string()),
            Some(rx) => match rx.await {
                Ok(r) => r,
                Err(_) => Err("the log writer stopped".into()),
            },
        };
        if let Err(why) = &outcome {
            tracing::error!(secret = %secret, error = %why, "a deleted secret's sealed values are still in the log; the next start erases them");
        }
        Ok(Shredded {
            event,
            erased: erased.len(),
            erase_error: outcome.err(),
        })
    }

    /// A proxied request: [`Command::Proxy`] decided and recorded, and only once its event is
    /// durable, the key to inject.
    pub async fn proxy(&self, caller: &Caller, command: &Command) -> Result<Authorized, ApiError> {
        let done = self.execute(caller, command).await?;
        let Some(Event::ProxyCall {
            secret, version, ..
        }) = done.events.first()
        else {
            return Err(ApiError::Internal(
                "a proxied call decided no proxy_call event".into(),
            ));
        };
        let key = self.open_cached(secret, *version).map_err(|_| {
            ApiError::Internal("a stored value does not open with this master key".into())
        })?;
        Ok(Authorized {
            call: done.seq,
            version: *version,
            key,
        })
    }

    /// Starts a run: [`Command::StartRun`] recorded, then one fresh placeholder per secret
    /// (random, known to the daemon only by its keyed hash, valid until the run ends).
    pub async fn start_run(
        &self,
        caller: &Caller,
        project: &ProjectName,
        secrets: &[SecretName],
    ) -> Result<(u64, Vec<(SecretName, Zeroizing<String>)>), ApiError> {
        let done = self
            .execute(
                caller,
                &Command::StartRun {
                    project: project.clone(),
                    secrets: secrets.to_vec(),
                },
            )
            .await?;
        let Some(Event::RunStarted { run, .. }) = done.events.first() else {
            return Err(ApiError::Internal(
                "a run start decided no run_started event".into(),
            ));
        };
        let mut out = Vec::with_capacity(secrets.len());
        let mut map = self.placeholders.lock().unwrap_or_else(|p| p.into_inner());
        for s in secrets {
            let mut raw = Zeroizing::new([0u8; 32]);
            getrandom::fill(raw.as_mut())
                .map_err(|e| ApiError::Internal(format!("OS random source: {e}")))?;
            let p = Zeroizing::new(format!("{PLACEHOLDER_PREFIX}{}", hex::encode(raw.as_ref())));
            map.insert(self.master.credential_hash(&p), (*run, s.clone()));
            out.push((s.clone(), p));
        }
        Ok((*run, out))
    }

    /// Ends a run: its placeholders die at once, then its end is recorded.
    pub async fn end_run(&self, run: u64, reason: &str) -> Result<(), ApiError> {
        self.placeholders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (r, _)| *r != run);
        let Some(owner) = self.read(|st| st.runs.get(&run).cloned()) else {
            return Ok(());
        };
        let caller = Caller {
            identity: owner.identity,
            uid: owner.uid,
            pid: None,
            host: owner.host,
        };
        self.check_log()?;
        let command = Command::EndRun {
            run,
            reason: reason.to_string(),
        };
        // Not through `execute`: ending a run only takes access away, so it is recorded
        // even under the disk reserve.
        let pending = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match domain::decide(&st, &caller, &command, self.now()) {
                Ok(events) => self.apply_and_submit(&mut st, &events)?,
                // Ended meanwhile by another path (its process and its connection at once).
                Err(_) => return Ok(()),
            }
        };
        self.durable(pending).await.map(|_| ())
    }

    /// A run's held answer closed (its process ended or went away): its placeholders die
    /// now; its end is recorded by the next housekeeping ([`flush_ended_runs`]) or at stop.
    ///
    /// [`flush_ended_runs`]: Self::flush_ended_runs
    pub fn run_gone(&self, run: u64, reason: &'static str) {
        self.placeholders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (r, _)| *r != run);
        self.ended_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((run, reason));
    }

    /// Records the end of runs whose answers closed.
    pub async fn flush_ended_runs(&self) -> Result<(), ApiError> {
        let gone = std::mem::take(&mut *self.ended_runs.lock().unwrap_or_else(|p| p.into_inner()));
        for (run, reason) in gone {
            self.end_run(run, reason).await?;
        }
        Ok(())
    }

    /// The run and secret a placeholder stands for, if its run is in progress.
    pub fn placeholder(&self, credential: &str) -> Option<(u64, SecretName)> {
        let h = self.master.credential_hash(credential);
        self.placeholders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h)
            .cloned()
    }

    /// Keeps a proxied call's outcome for the next `proxy_results` event; a full batch is
    /// written at once.
    pub fn note_proxy_result(self: &Arc<Self>, r: domain::ProxyResult) {
        let full = {
            let mut v = self.proxy_results.lock().unwrap_or_else(|p| p.into_inner());
            v.push(r);
            v.len() >= PROXY_RESULTS_BATCH
        };
        if full && let Ok(h) = tokio::runtime::Handle::try_current() {
            let e = self.clone();
            h.spawn(async move {
                if let Err(err) = e.flush_proxy_results().await {
                    tracing::warn!(error = %err, "proxied call outcomes not written");
                }
            });
        }
    }

    /// Writes the outcomes of proxied calls kept so far, as one event.
    pub async fn flush_proxy_results(&self) -> Result<(), ApiError> {
        let results =
            std::mem::take(&mut *self.proxy_results.lock().unwrap_or_else(|p| p.into_inner()));
        if results.is_empty() {
            return Ok(());
        }
        self.record(vec![Event::ProxyResults {
            results,
            at_ms: self.now(),
        }])
        .await
        .map(|_| ())
    }

    /// Opens a granted version's value, unwrapping its data key once per version.
    fn open_cached(&self, secret: &SecretName, version: u32) -> Result<Zeroizing<Vec<u8>>> {
        let key = (secret.clone(), version);
        let cached = self
            .data_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let dk = match cached {
            Some(dk) => dk,
            None => {
                let sealed = self
                    .read(|st| {
                        st.secrets
                            .get(secret)
                            .and_then(|s| s.versions.get(&version))
                            .cloned()
                    })
                    .context("granted version has no sealed value")?;
                let dk = Arc::new(self.master.data_key(secret.as_str(), version, &sealed)?);
                self.data_keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, dk.clone());
                dk
            }
        };
        dk.open(secret.as_str(), version)
    }

    /// Drops the unwrapped data keys of versions nobody can resolve any more: revoked secrets,
    /// and versions neither current nor in a grace period. Runs on every rotation and
    /// revocation, and periodically (grace periods end without an event).
    pub fn prune_data_keys(&self) {
        let now = self.now();
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.prune_data_keys_in(&st, now);
    }

    fn prune_data_keys_in(&self, st: &State, now: u64) {
        self.data_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(secret, version), _| {
                st.secrets.get(secret).is_some_and(|s| {
                    !s.revoked
                        && !s.deleted
                        && (*version == s.current
                            || s.grace
                                .is_some_and(|(v, until)| v == *version && now < until))
                })
            });
    }

    /// The versions of `secret` whose data key is unwrapped in memory (for tests and
    /// diagnostics: a revoked or superseded version must not be among them).
    pub fn cached_versions(&self, secret: &SecretName) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .data_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|(s, _)| s == secret)
            .map(|(_, v)| *v)
            .collect();
        v.sort_unstable();
        v
    }

    /// Most values one watch may hold: bounds the work of each re-check.
    pub const MAX_WATCHED: usize = 64;

    /// A long poll: waits until one of `holds` is no longer what `caller` holds (another
    /// version current, the secret revoked, the caller's access ended) and says which and
    /// how. Waits without the state lock and without a timer loop: it re-checks when a
    /// durable batch of events may have changed something (the `changes` channel), and at
    /// the one instant that comes without an event, the expiry of the grants it relies on.
    /// Ends with [`ApiError::Stopping`] when the daemon stops. Records nothing: a watch
    /// hands out nothing, and the resolution that follows its answer is recorded.
    pub async fn watch(
        &self,
        caller: &Caller,
        holds: &[domain::watch::Held],
    ) -> Result<(usize, domain::watch::Change), ApiError> {
        if holds.is_empty() || holds.len() > Self::MAX_WATCHED {
            return Err(ApiError::BadRequest(format!(
                "a watch holds 1 to {} values",
                Self::MAX_WATCHED
            )));
        }
        let _waiting = Waiting::new(&self.watching);
        let mut changes = self.changes.subscribe();
        // The credential the caller authenticated with is the agent's current one (it was
        // just checked against it); a reissue later ends the watch. (A reissue landing
        // between authentication and this read goes unseen by this watch; the caller's next
        // request, with the old credential, is refused.)
        let credential = caller
            .identity
            .agent()
            .and_then(|n| self.read(|st| st.agents.get(n).and_then(|a| a.credential_hash)));
        loop {
            // Marked seen before the check, so a batch made durable during the check wakes
            // the next wait instead of being lost.
            changes.borrow_and_update();
            if *self.stopping.borrow() {
                return Err(ApiError::Stopping);
            }
            let now = self.now();
            let (found, deadline) = self.read(|st| {
                let found = holds.iter().enumerate().find_map(|(i, h)| {
                    domain::watch::change(st, caller, credential, h, now).map(|c| (i, c))
                });
                (found, domain::watch::deadline(st, caller, holds, now))
            });
            if let Some(found) = found {
                return Ok(found);
            }
            let expiry = async {
                match deadline {
                    // The engine's clock is ms since the epoch; a test clock moved by hand
                    // wakes nobody, which only delays an expiry to the next event.
                    Some(at) => {
                        tokio::time::sleep(std::time::Duration::from_millis(at.saturating_sub(now)))
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() {
                    return Err(ApiError::Stopping);
                },
                () = expiry => {}
            }
        }
    }

    /// How many watches are waiting now.
    pub fn watches_waiting(&self) -> usize {
        self.watching.load(Ordering::SeqCst)
    }

    /// The master key (sealing new values, hashing fresh credentials).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Writes every open denial count, then flushes and closes the log (kept checkpoint
    /// written). Returns the writer's failure.
    pub fn close(self) -> Result<(), scopehold_log::CloseError> {
        let due = self
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_due(self.now(), true);
        let mut due = due;
        let results =
            std::mem::take(&mut *self.proxy_results.lock().unwrap_or_else(|p| p.into_inner()));
        if !results.is_empty() {
            due.push(Event::ProxyResults {
                results,
                at_ms: self.now(),
            });
        }
        let gone = std::mem::take(&mut *self.ended_runs.lock().unwrap_or_else(|p| p.into_inner()));
        let open_runs: Vec<u64> = self.read(|st| st.runs.keys().copied().collect());
        for run in open_runs {
            let reason = gone
                .iter()
                .find(|(r, _)| *r == run)
                .map_or("daemon stopped", |(_, why)| *why);
            due.push(Event::RunEnded {
                run,
                reason: reason.into(),
                at_ms: self.now(),
            });
        }
        if !due.is_empty() {
            let entries: Result<Vec<_>, _> = due.iter().map(Event::to_entry).collect();
            match entries.map(|e| self.log.append_batch(e)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "denial counts not written at close"),
                Err(e) => tracing::warn!(error = %e, "denial counts not written at close"),
            }
        }
        // A batch waiting for an unreachable store gives up, so the writer can close; the
        // store's session ends after the writer's last batch, freeing the lock.
        if let Some(s) = &self.store {
            s.stop_retrying();
        }
        let r = self.log.close();
        if let Some(s) = &self.store {
            s.close();
        }
        r
    }

    /// The log's store, if it has one.
    pub fn store(&self) -> Option<&Arc<super::store::PgStore>> {
        self.store.as_ref()
    }
}

/// A waiting watch, counted while it lives (dropped with the request's future, however it
/// ends).
struct Waiting(Arc<std::sync::atomic::AtomicUsize>);

impl Waiting {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn inconsistent(e: domain::ApplyError) -> ApiError {
    ApiError::Internal(format!("refused an inconsistent change: {e}"))
}

/// A fresh agent credential and its keyed hash. The credential is returned once, to the admin
/// who created the agent; only the hash is stored.
pub fn new_credential(master: &MasterKey) -> Result<(Zeroizing<String>, CredentialHash), ApiError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut())
        .map_err(|e| ApiError::Internal(format!("OS random source: {e}")))?;
    let cred = Zeroizing::new(format!("{CREDENTIAL_PREFIX}{}", hex::encode(raw.as_ref())));
    let h = master.credential_hash(&cred);
    Ok((cred, CredentialHash(h)))
}

/// A standby erases what its copy's deletions list as soon as it has copied them (the active
/// hub did the same to its own copy and to the store's rows): moved from `unerased` to
/// `erased` once durable.
fn finish_erasures(log: &Log, r: &mut super::shred::Replayed) -> Result<()> {
    if r.unerased.is_empty() {
        return Ok(());
    }
    let seqs = std::mem::take(&mut r.unerased);
    log.erase(&seqs)
        .context("erasing deleted secrets' sealed values in the standby's copy")?;
    r.erased.extend(&seqs);
    r.erased.sort_unstable();
    Ok(())
}
