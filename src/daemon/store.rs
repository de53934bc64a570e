//! The hub's log on PostgreSQL (`daemon --store postgres://...`).
//!
//! The database holds the log's batches exactly as the writer frames them (events, then the
//! batch's signed checkpoint: the bytes a segment holds), one row per group commit, and one
//! row per log with its size, head and latest checkpoint. The writer hands every batch to
//! the store before its local segment ([`scopehold_log::replica`]), so the state directory's
//! `log/` is a copy of a prefix of the database's log: everything that reads a log (replay,
//! `log verify`, exports, bundles, the console, backups) reads it unchanged.
//!
//! **One writer, no fork.** The hub appends through one session that holds the log's
//! advisory lock (`pg_try_advisory_lock`, keyed by the log id): a hub that has lost its
//! session has lost the lock with it and can no longer append. Every append is one
//! statement, so one transaction: it moves the log's row from (size, head) to the batch's
//! end only if the row is still at the batch's start (`WHERE size = first AND head = prev`),
//! and inserts the batch in the same statement. Two writers can never both append at one
//! sequence number.
//!
//! **Down and back.** A commit that cannot reach the database keeps its batch and retries
//! (reconnecting, re-taking the lock, and reading the row: a batch whose commit was
//! acknowledged by nobody but made it is not appended twice) until the database answers or
//! the daemon stops. Meanwhile [`PgStore::unavailable`] says why, and the engine refuses
//! every request with 503 before deciding anything: nothing is released, nothing queues.
//! When the database is back, the held batch commits and service resumes, with no restart.
//!
//! **Forks.** At start-up the local copy and the database must agree: the database's log
//! must hold the local copy's head at its size, every batch read from it must continue the
//! chain and carry a valid signature ([`scopehold_log::replica::BatchVerifier`], inside
//! `Log::append_copied`), and a database that holds fewer events than the copy has seen
//! lost a committed tail (an asynchronous failover). Any of these stops the hub, saying so.
//!
//! **Standbys.** A hub that finds the lock held follows instead ([`PgStore::follow`]): it
//! copies every batch the active hub commits (woken by the `pg_notify` in `APPEND`),
//! checked as above, while a second session waits in `pg_advisory_lock`. PostgreSQL grants
//! it the moment the active hub's session ends, and that session becomes the new writer's.
//! The hub that lost its session finds the lock taken when it reconnects (at its next commit,
//! or within `HEARTBEAT` while idle) and stops ([`PgStore::lost`]): it can no longer
//! append, and it answers nothing more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use scopehold_log::replica::{Batch, Replica};
use scopehold_log::{Log, PublicKey, SignedCheckpoint, hash};
use zeroize::Zeroizing;

/// The tables, created on first use (under the advisory lock, so two hubs starting at once
/// do not race).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scopehold_log (
    log_id      bytea PRIMARY KEY,
    public_key  bytea NOT NULL,
    size        bigint NOT NULL,
    head        bytea NOT NULL,
    checkpoint  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS scopehold_batch (
    log_id      bytea NOT NULL REFERENCES scopehold_log (log_id),
    first_seq   bigint NOT NULL,
    size        bigint NOT NULL,
    prev        bytea NOT NULL,
    head        bytea NOT NULL,
    frames      bytea NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, first_seq),
    UNIQUE (log_id, size)
);";

/// One append: moves the log's row on only from the batch's start, and inserts the batch in
/// the same statement (so the same transaction). No row inserted: the log was not there.
/// Standbys listening on `scopehold_log` are woken when it commits (`pg_notify` is
/// transactional: a batch that does not commit wakes nobody).
const APPEND: &str = "
WITH moved AS (
    UPDATE scopehold_log SET size = $3, head = $4, checkpoint = $5, updated_at = now()
    WHERE log_id = $1 AND size = $2 AND head = $6
    RETURNING log_id)
INSERT INTO scopehold_batch (log_id, first_seq, size, prev, head, frames)
SELECT log_id, $2, $3, $6, $4, $7 FROM moved, (SELECT pg_notify('scopehold_log', '')) AS woken";

/// Batches read per query when the local copy catches up.
const PULL_BATCHES: i64 = 256;

/// The longest wait between two attempts to reach the database again.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A store address, parsed, with what may be printed of it (never a password).
#[derive(Clone)]
pub struct StoreUrl {
    config: Config,
    shown: String,
    /// TLS to the database (`sslmode=require` on a TCP host): the server's certificate is
    /// verified for the host name against these roots.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl StoreUrl {
    /// Parses `postgres://` (or `postgresql://`) URLs. A unix socket or loopback may go
    /// without TLS; any other host must be reached over TLS (`sslmode=require`): the
    /// connection carries the log, and the hub must know it talks to its database. With TLS
    /// the server's certificate is verified for its host name against `ca` (a PEM file of CA
    /// certificates, `--store-ca`), else against the system's roots.
    pub fn parse(s: &str, ca: Option<&std::path::Path>) -> Result<Self> {
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            bail!("--store: only postgres:// URLs are supported (local files are the default)");
        }
        // The parser's message may quote the URL, password and all: not passed on.
        let config: Config = s
            .parse()
            .map_err(|_| anyhow!("--store: not a valid postgres:// URL"))?;
        // Every uid on the machine can read a process's command line (/proc/PID/cmdline):
        // a password there is a password given to them all.
        if config.get_password().is_some()
            && std::env::args_os().any(|a| a.to_string_lossy().contains(s))
        {
            bail!(
                "--store: this URL holds a password, and a command line is readable by every user of this machine; give it in SCOPEHOLD_STORE instead (or use peer authentication over the unix socket, with no password at all)"
            );
        }
        let require = config.get_ssl_mode() == postgres::config::SslMode::Require;
        let mut hosts = Vec::new();
        for h in config.get_hosts() {
            match h {
                Host::Unix(p) => {
                    if require {
                        bail!(
                            "--store: sslmode=require with a unix socket ({}): PostgreSQL has no TLS on its sockets; drop it, or name a TCP host",
                            p.display()
                        );
                    }
                    hosts.push(p.display().to_string())
                }
                Host::Tcp(name) => {
                    let local = name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if !local && !require {
                        bail!(
                            "--store: {name} is not this machine: the connection carries the log, so it must be TLS with the server verified; add sslmode=require to the URL (and --store-ca FILE for your PostgreSQL's CA)"
                        );
                    }
                    hosts.push(name.clone());
                }
            }
        }
        if hosts.is_empty() {
            bail!("--store: name the database's host (a unix socket directory, or a TCP host)");
        }
        let tls = if require {
            Some(Arc::new(client_tls(ca)?))
        } else {
            if let Some(ca) = ca {
                bail!(
                    "--store-ca {}: the store's URL asks for no TLS (add sslmode=require)",
                    ca.display()
                );
            }
            None
        };
        let shown = format!(
            "postgres on {} (database {}, user {}{})",
            hosts.join(","),
            config.get_dbname().unwrap_or("(default)"),
            config.get_user().unwrap_or("(default)"),
            if tls.is_some() { ", TLS" } else { "" }
        );
        Ok(Self { config, shown, tls })
    }
}

/// The TLS client for the store: TLS 1.2 or 1.3, the server verified for its host name
/// against `ca`'s certificates, or the system's roots without it.
fn client_tls(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
                rustls_pki_types::CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| anyhow!("--store-ca {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                bail!("--store-ca {}: no CA certificate in it", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a commit did not go through: worth another attempt, or not.
enum Failed {
    Transient(String),
    Fatal(String),
    /// Another session holds the log's lock: another hub is the writer.
    Held,
}

fn classify(e: &postgres::Error) -> Failed {
    match e.as_db_error() {
        // Connection exceptions, an administrator's termination or shutdown, a server that
        // cannot accept connections now, insufficient resources: the session is gone or
        // will be; another may work.
        Some(db) if matches!(&db.code().code()[..2], "08" | "57" | "53") => {
            Failed::Transient(db.message().to_string())
        }
        Some(db) => Failed::Fatal(format!("{} ({})", db.message(), db.code().code())),
        None => {
            // The causes too: "error performing TLS handshake" alone does not say that the
            // server's certificate was refused, or why.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            Failed::Transient(why)
        }
    }
}

/// The log's row: its size, head and checkpoint.
#[derive(Debug, Clone)]
pub struct Row {
    pub size: u64,
    pub head: [u8; 32],
    pub checkpoint: SignedCheckpoint,
}

/// A batch as the database holds it (`Debug` leaves the frames out: sealed bodies).
pub struct StoredBatch {
    pub first_seq: u64,
    pub size: u64,
    pub prev: [u8; 32],
    pub head: [u8; 32],
    pub frames: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for StoredBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBatch")
            .field("first_seq", &self.first_seq)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn to32(v: &[u8], what: &str) -> Result<[u8; 32], String> {
    v.try_into()
        .map_err(|_| format!("the store's {what} is not 32 bytes"))
}

/// The advisory lock's key: the log id's first 8 bytes.
fn lock_key(log_id: &[u8; 32]) -> i64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&log_id[..8]);
    i64::from_be_bytes(k)
}

/// A new session, named in `pg_stat_activity` for operators (and the tests that end it).
fn open_session(url: &StoreUrl, name: &str) -> Result<Client, Failed> {
    let mut config = url.config.clone();
    config
        .connect_timeout(Duration::from_secs(5))
        .application_name(name);
    match &url.tls {
        Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(
            tls.as_ref().clone(),
        )),
        None => config.connect(NoTls),
    }
    .map_err(|e| classify(&e))
}

/// What another hub holding the lock means for this one.
const HELD: &str = "another hub holds this log's lock in the store: it is the active hub, and this one may not append";

/// The session the hub appends through (a standby's: reads through), on the store's own
/// thread.
struct Conn {
    url: StoreUrl,
    client: Option<Client>,
    /// Whether `client`'s session holds the log's advisory lock.
    locked: bool,
    /// Whether this hub is the log's writer: it has held the lock and must hold it again
    /// after a lost session, or stop, if another hub took it meanwhile.
    writer: bool,
    /// Whether this hub follows as a standby (its sessions are named so).
    standby: bool,
    /// Whether `client`'s session listens for appends (a standby's).
    listening: bool,
    /// [`APPEND`], prepared once per session: a statement sent as text is parsed and
    /// described on every call, one more round trip per commit.
    append: Option<postgres::Statement>,
    /// Where the log's row stood after this hub's last append (or start-up's agreement): a
    /// session taken again must find it there.
    at: Option<(u64, [u8; 32])>,
    log_id: [u8; 32],
    public: PublicKey,
    shared: Arc<Shared>,
}

impl Conn {
    /// A live session (made if there is none), with or without the lock.
    fn session(&mut self) -> Result<&mut Client, Failed> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(self.client.as_mut().expect("checked above"));
        }
        self.client = None;
        self.append = None;
        self.locked = false;
        self.listening = false;
        let name = if self.standby {
            "scopehold-standby"
        } else {
            "scopehold-hub"
        };
        let c = open_session(&self.url, name)?;
        Ok(self.client.insert(c))
    }

    /// The writer's session: holds the log's lock ([`Failed::Held`] if another session
    /// does), the tables made and [`APPEND`] prepared.
    fn connect(&mut self) -> Result<&mut Client, Failed> {
        self.session()?;
        let key = lock_key(&self.log_id);
        let c = self.client.as_mut().expect("session() made it");
        if !self.locked {
            let got: bool = c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .map_err(|e| classify(&e))?
                .get(0);
            if !got {
                return Err(Failed::Held);
            }
            self.locked = true;
            self.writer = true;
        }
        if self.append.is_none() {
            c.batch_execute(SCHEMA).map_err(|e| classify(&e))?;
            self.append = Some(c.prepare(APPEND).map_err(|e| classify(&e))?);
        }
        Ok(c)
    }

    /// A standby's lock session, granted: it becomes the writer's.
    fn take_session(&mut self, mut c: Client) -> Result<(), Failed> {
        c.batch_execute("SET application_name = 'scopehold-hub'")
            .map_err(|e| classify(&e))?;
        self.client = Some(c);
        self.locked = true;
        self.writer = true;
        self.standby = false;
        self.listening = false;
        self.append = None;
        self.connect().map(|_| ())
    }

    /// While idle, the writer checks its session every [`HEARTBEAT`]: one that ended (an
    /// administrator's `pg_terminate_backend`, a restart) is replaced at once rather than at
    /// the next commit, and if another hub took the lock meanwhile, or appended, this one
    /// has lost the log and stops serving (see [`PgStore::lost`]).
    fn heartbeat(&mut self) {
        if !self.writer || self.shared.lost().is_some() {
            return;
        }
        let alive = self.locked
            && self
                .client
                .as_mut()
                .is_some_and(|c| c.is_valid(Duration::from_secs(2)).is_ok());
        if alive {
            return;
        }
        self.client = None;
        match self.connect() {
            Ok(_) => {}
            Err(Failed::Held) => return self.shared.lose(HELD),
            // Unreachable: the next commit retries and says why.
            Err(_) => return,
        }
        let Some((size, head)) = self.at else { return };
        match self.row() {
            Ok(Some(r)) if r.size == size && hash::ct_eq(&r.head, &head) => {
                tracing::info!("the store's session had ended; a new one holds the log's lock");
            }
            Ok(_) => self.shared.lose(
                "the log moved on in the store while this hub had no session (another hub appended)",
            ),
            Err(_) => {}
        }
    }

    fn row(&mut self) -> Result<Option<Row>, Failed> {
        let id = self.log_id.to_vec();
        let public = self.public;
        let c = self.session()?;
        let r = c
            .query_opt(
                "SELECT size, head, checkpoint, public_key FROM scopehold_log WHERE log_id = $1",
                &[&id],
            )
            .map_err(|e| classify(&e))?;
        let Some(r) = r else { return Ok(None) };
        let pk: Vec<u8> = r.get(3);
        if pk != public.as_bytes() {
            return Err(Failed::Fatal(
                "the store's log is signed with another key than this hub's".into(),
            ));
        }
        let size: i64 = r.get(0);
        let head: Vec<u8> = r.get(1);
        let cp: String = r.get(2);
        let checkpoint = SignedCheckpoint::from_text(&cp)
            .map_err(|e| Failed::Fatal(format!("the store's checkpoint: {e}")))?;
        Ok(Some(Row {
            size: size as u64,
            head: to32(&head, "head").map_err(Failed::Fatal)?,
            checkpoint,
        }))
    }

    fn try_append(&mut self, b: &Owned) -> Result<(), Failed> {
        let id = self.log_id.to_vec();
        let (first, size) = (b.first_seq as i64, b.size as i64);
        let (head, prev) = (b.head.to_vec(), b.prev.to_vec());
        let cp = b.checkpoint.clone();
        let frames: &[u8] = &b.frames;
        self.connect()?;
        let (Some(c), Some(append)) = (self.client.as_mut(), self.append.as_ref()) else {
            return Err(Failed::Transient("no session".into()));
        };
        let n = c
            .execute(append, &[&id, &first, &size, &head, &cp, &prev, &frames])
            .map_err(|e| classify(&e))?;
        if n == 1 {
            self.at = Some((b.size, b.head));
            return Ok(());
        }
        Err(Failed::Fatal(self.explain(b)))
    }

    /// Why the log's row was not where a batch starts.
    fn explain(&mut self, b: &Owned) -> String {
        match self.row() {
            Ok(Some(r)) => format!(
                "the store's log is at {} events (head {}) but this hub's next batch follows {} events (head {}): another writer appended, or the store lost events; this hub stops appending",
                r.size,
                hex::encode(&r.head[..8]),
                b.first_seq,
                hex::encode(&b.prev[..8])
            ),
            Ok(None) => "the store holds no row for this log any more".into(),
            Err(e) => e.into(),
        }
    }

    /// After a lost connection: whether the batch made it (its commit was cut before its
    /// answer), is still to be made, or can never be.
    fn reconcile(&mut self, b: &Owned) -> Result<bool, Failed> {
        match self.row()? {
            Some(r) if r.size == b.size && hash::ct_eq(&r.head, &b.head) => {
                self.at = Some((b.size, b.head));
                Ok(true)
            }
            Some(r) if r.size == b.first_seq && hash::ct_eq(&r.head, &b.prev) => Ok(false),
            _ => Err(Failed::Fatal(self.explain(b))),
        }
    }

    /// A standby's wait for the active hub's next append (its `pg_notify`), at most `d`.
    fn wait_for_append(&mut self, d: Duration) -> Result<(), Failed> {
        self.session()?;
        let c = self.client.as_mut().expect("session() made it");
        if !self.listening {
            c.batch_execute("LISTEN scopehold_log")
                .map_err(|e| classify(&e))?;
            self.listening = true;
        }
        use postgres::fallible_iterator::FallibleIterator;
        let mut n = c.notifications();
        n.timeout_iter(d).next().map_err(|e| classify(&e))?;
        // Any more already here are the same news.
        while let Ok(Some(_)) = n.iter().next() {}
        Ok(())
    }
}

impl From<Failed> for String {
    fn from(f: Failed) -> String {
        match f {
            Failed::Fatal(e) | Failed::Transient(e) => e,
            Failed::Held => HELD.into(),
        }
    }
}

/// A batch owned for the store's thread.
struct Owned {
    first_seq: u64,
    size: u64,
    prev: [u8; 32],
    head: [u8; 32],
    checkpoint: String,
    frames: Zeroizing<Vec<u8>>,
}

impl Owned {
    fn of(b: &Batch<'_>) -> Self {
        Self {
            first_seq: b.first_seq,
            size: b.checkpoint.body.size,
            prev: b.prev,
            head: b.checkpoint.body.head,
            checkpoint: b.checkpoint.to_text(),
            frames: Zeroizing::new(b.frames.to_vec()),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// How long the writer's session may sit idle before it is checked.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The longest a standby goes without reading the store, woken or not.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The two stores' disagreement that no retry mends: two histories of one log.
#[derive(Debug)]
pub struct Fork(pub String);

impl std::fmt::Display for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fork {}

/// The hub's store: a thread that owns the session (the `postgres` client blocks, and the
/// writer may commit on one of the runtime's threads), and what the engine asks of it.
pub struct PgStore {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    shared: Arc<Shared>,
    url: StoreUrl,
    log_id: [u8; 32],
}

struct Shared {
    /// Set while `down` holds a reason or the log is lost: the only thing the request path
    /// reads when all is well.
    flagged: AtomicBool,
    /// Why the store cannot be reached now (a commit is holding its batch and retrying).
    down: Mutex<Option<String>>,
    /// Why this hub is no longer the log's writer (another took the lock), once it is not.
    lost: tokio::sync::watch::Sender<Option<String>>,
    stopping: AtomicBool,
    commits: AtomicU64,
    events: AtomicU64,
}

impl Shared {
    fn set_down(&self, why: Option<String>) -> Option<String> {
        let mut d = self.down.lock().unwrap_or_else(|p| p.into_inner());
        self.flagged
            .store(why.is_some() || self.lost().is_some(), Ordering::SeqCst);
        std::mem::replace(&mut *d, why)
    }

    fn lose(&self, why: &str) {
        tracing::error!(
            reason = why,
            "this hub is no longer the log's writer: it stops serving (started again, it follows as a standby)"
        );
        // Flagged first: whoever the watch wakes finds `lost()` set.
        self.flagged.store(true, Ordering::SeqCst);
        self.lost.send_replace(Some(why.to_string()));
    }

    fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What the store has done since the daemon started: group commits and the events in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    pub commits: u64,
    pub events: u64,
}

impl PgStore {
    /// The store's thread, for the log `log_id`; no session yet (see [`Self::take_lock`]).
    pub fn open(url: StoreUrl, log_id: [u8; 32], public: PublicKey) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            flagged: AtomicBool::new(false),
            down: Mutex::new(None),
            lost: tokio::sync::watch::Sender::new(None),
            stopping: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
        });
        let mut conn = Conn {
            url: url.clone(),
            client: None,
            locked: false,
            writer: false,
            standby: false,
            listening: false,
            append: None,
            at: None,
            log_id,
            public,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("scopehold-store".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(HEARTBEAT) {
                        Ok(job) => job(&mut conn),
                        Err(mpsc::RecvTimeoutError::Timeout) => conn.heartbeat(),
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .context("starting the store's thread")?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            shared,
            url,
            log_id,
        })
    }

    /// Connects to the store and takes the log's lock (making the tables if they are
    /// missing): `true` if this hub is now the log's writer, `false` if another hub holds it.
    pub fn take_lock(&self) -> Result<bool> {
        match self.call(|c| c.connect().map(|_| ())) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(Failed::Held)) => Ok(false),
            Ok(Err(e)) => bail!(
                "cannot use the log's store, {}: {}",
                self.url,
                String::from(e)
            ),
            Err(e) => bail!("cannot use the log's store, {}: {e}", self.url),
        }
    }

    /// Runs `f` on the store's thread and waits for it.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|j| j.send(job).is_ok());
        if sent != Some(true) {
            return Err("the store is closed".into());
        }
        rx.recv().map_err(|_| "the store's thread stopped".into())
    }

    /// [`Self::call`] for a query: its error, whatever failed, said as doing `what`.
    fn query<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> Result<T, String> + Send + 'static,
    ) -> Result<T> {
        match self.call(f) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) | Err(e) => Err(anyhow!("{what} in {}: {e}", self.url)),
        }
    }

    /// Why the store cannot be reached now, while a commit waits for it.
    pub fn unavailable(&self) -> Option<String> {
        // One atomic load on every request while all is well.
        if !self.shared.flagged.load(Ordering::Relaxed) {
            return None;
        }
        self.shared
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why this hub is no longer the log's writer, if it is not: another hub took the lock
    /// (this one's session ended and a standby's was granted it). Nothing more may be
    /// answered here; the daemon stops.
    pub fn lost(&self) -> Option<String> {
        if !self.shared.flagged.load(Ordering::Relaxed) {
            return None;
        }
        self.shared.lost()
    }

    /// Changes when this hub loses the log (see [`Self::lost`]).
    pub fn watch_lost(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.lost.subscribe()
    }

    /// Group commits and events since start-up.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            events: self.shared.events.load(Ordering::Relaxed),
        }
    }

    /// What may be printed of the store's address.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// A commit waiting for the database fails from now on rather than retry (the daemon
    /// is stopping: the writer must be able to close).
    pub fn stop_retrying(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops retrying and ends the session, which frees the lock.
    pub fn close(&self) {
        self.stop_retrying();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// The log's row, if the store holds this log.
    pub fn row(&self) -> Result<Option<Row>> {
        self.query("reading the log's row", |c| c.row().map_err(String::from))
    }

    /// Batches from `first_seq` on (a batch boundary), at most `limit`.
    pub fn batches_from(&self, first_seq: u64, limit: i64) -> Result<Vec<StoredBatch>> {
        self.query("reading the log's batches", move |c| {
            let id = c.log_id.to_vec();
            let rows = c
                .session()?
                .query(
                    "SELECT first_seq, size, prev, head, frames FROM scopehold_batch WHERE log_id = $1 AND first_seq >= $2 ORDER BY first_seq LIMIT $3",
                    &[&id, &(first_seq as i64), &limit],
                )
                .map_err(|e| String::from(classify(&e)))?;
            rows.iter()
                .map(|r| {
                    let first: i64 = r.get(0);
                    let size: i64 = r.get(1);
                    let prev: Vec<u8> = r.get(2);
                    let head: Vec<u8> = r.get(3);
                    Ok(StoredBatch {
                        first_seq: first as u64,
                        size: size as u64,
                        prev: to32(&prev, "prev")?,
                        head: to32(&head, "head")?,
                        frames: Zeroizing::new(r.get(4)),
                    })
                })
                .collect()
        })
    }

    /// The batch that ends at `size` events, if there is one: its head.
    pub fn head_at(&self, size: u64) -> Result<Option<[u8; 32]>> {
        self.query("reading the log", move |c| {
            let id = c.log_id.to_vec();
            let row = c
                .session()?
                .query_opt(
                    "SELECT head FROM scopehold_batch WHERE log_id = $1 AND size = $2",
                    &[&id, &(size as i64)],
                )
                .map_err(|e| String::from(classify(&e)))?;
            row.map(|r| to32(&r.get::<_, Vec<u8>>(0), "head"))
                .transpose()
        })
    }

    /// Puts a log that has so far lived in local files into the store, whole, in one
    /// transaction (so a store holds all of it or none), read batch by batch as it goes in.
    fn adopt(&self, dir: &std::path::Path) -> Result<u64> {
        let dir = dir.to_path_buf();
        self.query("putting the log into the store", move |c| {
            let id = c.log_id.to_vec();
            let pk = c.public.as_bytes().to_vec();
            let genesis = hash::genesis(&c.log_id).to_vec();
            let client = c.connect()?;
            let mut t = client.transaction().map_err(|e| e.to_string())?;
            let mut n = 0u64;
            let mut failed = None;
            let walked = scopehold_log::replica::for_each_batch(&dir, 0, |b| {
                if n == 0 {
                    t.execute(
                        "INSERT INTO scopehold_log (log_id, public_key, size, head, checkpoint) VALUES ($1, $2, 0, $3, $4)",
                        &[&id, &pk, &genesis, &b.checkpoint.to_text()],
                    )
                    .map_err(|e| e.to_string())?;
                }
                let frames: &[u8] = &b.frames;
                let moved = t
                    .execute(
                        APPEND,
                        &[
                            &id,
                            &(b.first_seq as i64),
                            &(b.checkpoint.body.size as i64),
                            &b.checkpoint.body.head.to_vec(),
                            &b.checkpoint.to_text(),
                            &b.prev.to_vec(),
                            &frames,
                        ],
                    )
                    .map_err(|e| e.to_string())?;
                if moved != 1 {
                    let e = format!(
                        "the local log's batch at {} does not follow the one before it",
                        b.first_seq
                    );
                    failed = Some(e.clone());
                    return Err(e);
                }
                n += 1;
                Ok(())
            });
            if let Some(e) = failed {
                return Err(e);
            }
            walked.map_err(|e| e.to_string())?;
            if n == 0 {
                // A log with no batch yet (every daemon's first start writes some): the row
                // alone, so that the first append finds it.
                return Err("the local log holds no batch to put into the store".into());
            }
            t.commit().map_err(|e| e.to_string())?;
            Ok(n)
        })
    }

    /// Makes the store's copies of the batches holding `seqs` the same as the local log's,
    /// whose records at `seqs` were erased (a deleted secret's sealed values: the store's rows
    /// held them too). Only a row whose size and head match the local batch is rewritten, and
    /// only if it differs. Returns how many rows were rewritten.
    pub fn sync_erasures(&self, dir: &std::path::Path, seqs: &[u64]) -> Result<usize> {
        let Some(&lowest) = seqs.iter().min() else {
            return Ok(0);
        };
        let want: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        let mut batches = Vec::new();
        scopehold_log::replica::for_each_batch(dir, 0, |b| {
            let holds = want
                .range(b.first_seq..b.checkpoint.body.size)
                .next()
                .is_some();
            if holds && b.checkpoint.body.size > lowest {
                batches.push(b);
            }
            Ok(())
        })?;
        self.query("erasing", move |c| {
            let id = c.log_id.to_vec();
            let client = c.connect()?;
            let mut n = 0;
            for b in &batches {
                let frames: &[u8] = &b.frames;
                n += client
                    .execute(
                        "UPDATE scopehold_batch SET frames = $3 WHERE log_id = $1 AND first_seq = $2 AND size = $4 AND head = $5 AND frames <> $3",
                        &[
                            &id,
                            &(b.first_seq as i64),
                            &frames,
                            &(b.checkpoint.body.size as i64),
                            &b.checkpoint.body.head.to_vec(),
                        ],
                    )
                    .map_err(|e| e.to_string())?;
            }
            Ok(n as usize)
        })
    }

    /// Brings the local copy of the log (open in `log`, in `dir`) and the store into
    /// agreement before anything is served: a store without this log receives it whole; a
    /// store ahead of the copy is copied from, every batch checked; a store that disagrees
    /// with the copy, or lost part of what the copy holds, stops the hub (a [`Fork`]).
    /// Returns how many events were copied in.
    pub fn reconcile(&self, log: &Log, dir: &std::path::Path) -> Result<u64> {
        let copied = self.catch_up(log, dir, true)?;
        let s = log.status();
        let _ = self.call(move |c| c.at = Some((s.size, s.head)));
        Ok(copied)
    }

    /// [`Self::reconcile`]'s reading: copies what the store holds past the copy, checked;
    /// with `adopt`, a store without this log receives it (only the writer may).
    fn catch_up(&self, log: &Log, dir: &std::path::Path, adopt: bool) -> Result<u64> {
        let local = log.status();
        let Some(row) = self.row()? else {
            if !adopt {
                bail!("the store holds no row for this log yet");
            }
            let n = self.adopt(dir)?;
            tracing::info!(store = %self.url, batches = n, events = local.size, "the store held no log: this hub's log was put into it");
            return Ok(0);
        };
        let fork = |why: String| {
            anyhow::Error::new(Fork(format!(
                "the log in {} and this hub's copy in {} disagree: {why}. Two histories of one log exist (a fork): after a failover of PostgreSQL that lost committed transactions (asynchronous replication), or rows rewritten by hand. The hub will not serve from either until an operator compares them (scopehold log verify on the copy; the store's rows)",
                self.url,
                dir.display()
            )))
        };
        if row.size < local.size {
            return Err(fork(format!(
                "the store holds {} events but this copy holds {} acknowledged by the store; the store lost committed events",
                row.size, local.size
            )));
        }
        let at = if local.size == 0 {
            Some(hash::genesis(&log.log_id()))
        } else {
            self.head_at(local.size)?
        };
        match at {
            Some(h) if hash::ct_eq(&h, &local.head) => {}
            Some(_) => {
                return Err(fork(format!(
                    "event {} differs (another chain in the store)",
                    local.size - 1
                )));
            }
            None => {
                return Err(fork(format!(
                    "no batch in the store ends at {} events, where this copy ends",
                    local.size
                )));
            }
        }
        let mut next = local.size;
        let mut copied = 0;
        while next < row.size {
            let batch = self.batches_from(next, PULL_BATCHES)?;
            if batch.is_empty() {
                // A standby may read the row before the batches of a commit it raced with;
                // the writer never does (its lock excludes other writers).
                return Err(fork(format!(
                    "the store's log says {} events but its batches end at {next}",
                    row.size
                )));
            }
            for b in batch {
                if b.first_seq != next {
                    return Err(fork(format!("no batch in the store starts at {next}")));
                }
                let r = log
                    .append_copied(b.frames.to_vec())
                    .map_err(|e| fork(format!("the batch at {next}: {e}")))?;
                if r.seq + 1 != b.size || !hash::ct_eq(&r.hash, &b.head) {
                    return Err(fork(format!(
                        "the batch at {next}'s columns do not match its frames"
                    )));
                }
                copied += b.size - next;
                next = b.size;
            }
        }
        Ok(copied)
    }

    /// A standby: another hub holds the log's lock. Follows the store into the local copy
    /// (woken by the active hub's `pg_notify`, at least every `FOLLOW_POLL`; every batch
    /// checked as [`Self::reconcile`] checks it; `copied(from)` told of each run of new events
    /// from `from` on) while a second session waits in `pg_advisory_lock`, which PostgreSQL
    /// grants the moment the active hub's session ends (its process killed, its session
    /// terminated). Returns `true` once this hub holds the lock, `false` if `stop` was set
    /// first. A fork ends it with the error.
    pub fn follow(
        &self,
        log: &Log,
        dir: &std::path::Path,
        stop: &tokio::sync::watch::Receiver<bool>,
        mut copied: impl FnMut(u64) -> Result<()>,
    ) -> Result<bool> {
        let (tx, granted) = mpsc::channel::<Client>();
        let url = self.url.clone();
        let key = lock_key(&self.log_id);
        std::thread::Builder::new()
            .name("scopehold-standby-lock".into())
            .spawn(move || {
                let mut wait = Duration::from_millis(50);
                loop {
                    let got = open_session(&url, "scopehold-standby-lock").and_then(|mut c| {
                        c.execute("SELECT pg_advisory_lock($1)", &[&key])
                            .map_err(|e| classify(&e))?;
                        Ok(c)
                    });
                    match got {
                        Ok(c) => {
                            let _ = tx.send(c);
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %String::from(e), "waiting for the log's lock");
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(RETRY_MAX);
                        }
                    }
                }
            })
            .context("starting the standby's lock session")?;
        // The session that found the lock held is dropped: the standby's are named so.
        let _ = self.call(|c| {
            c.standby = true;
            c.client = None;
        });
        let mut complained = false;
        loop {
            if *stop.borrow() {
                return Ok(false);
            }
            let before = log.status().size;
            match self.catch_up(log, dir, false) {
                Ok(_) => {
                    complained = false;
                    if log.status().size > before {
                        copied(before)?;
                    }
                }
                Err(e) if e.is::<Fork>() => return Err(e),
                Err(e) => {
                    if !complained {
                        tracing::warn!(error = %format!("{e:#}"), "the standby cannot read the store; retrying");
                        complained = true;
                    }
                    std::thread::sleep(FOLLOW_POLL);
                }
            }
            if let Ok(c) = granted.try_recv() {
                return match self.call(move |conn| conn.take_session(c)) {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(e)) => bail!("taking over the log in {}: {}", self.url, String::from(e)),
                    Err(e) => bail!("taking over the log in {}: {e}", self.url),
                };
            }
            let _ = self.call(|c| {
                if c.wait_for_append(FOLLOW_POLL).is_err() {
                    c.client = None;
                }
            });
        }
    }
}

impl Replica for PgStore {
    fn commit(&self, batch: &Batch<'_>) -> Result<(), String> {
        let owned = Owned::of(batch);
        let events = owned.size - owned.first_seq;
        let r = self.call(move |c| {
            let mut wait = Duration::from_millis(50);
            let mut reconnected = false;
            loop {
                if let Some(why) = c.shared.lost() {
                    return Err(why);
                }
                let attempt = if reconnected {
                    match c.reconcile(&owned) {
                        Ok(true) => Ok(()),
                        Ok(false) => c.try_append(&owned),
                        Err(e) => Err(e),
                    }
                } else {
                    c.try_append(&owned)
                };
                match attempt {
                    Ok(()) => {
                        if c.shared.set_down(None).is_some() {
                            tracing::info!("the log's store is reachable again; appending resumes");
                        }
                        return Ok(());
                    }
                    Err(Failed::Held) => {
                        c.shared.lose(HELD);
                        return Err(HELD.into());
                    }
                    Err(Failed::Fatal(e)) => return Err(e),
                    Err(Failed::Transient(e)) => {
                        if c.shared.stopping.load(Ordering::SeqCst) {
                            return Err(format!("the store is unreachable ({e}) and the daemon is stopping"));
                        }
                        if c.shared.set_down(Some(e.clone())).is_none() {
                            tracing::error!(error = %e, "the log's store is unreachable: nothing is answered until it is back");
                        }
                        c.client = None;
                        reconnected = true;
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        let r = r.and_then(|r| r);
        if r.is_ok() {
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
            self.shared.events.fetch_add(events, Ordering::Relaxed);
        }
        r
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}
