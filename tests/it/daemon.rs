//! The daemon on a real unix socket, with the real log on real files: the whole story, every
//! grant constraint, denials, restarts, canaries, bad requests, a failing log, concurrency.
//! Most tests run the daemon in-process (its own runtime thread) so the clock and the log's
//! storage can be injected; `binary_*` tests run the `scopehold` binary itself.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use scopehold::cli::client::{self, Answer};
use scopehold::daemon::{Engine, Home};
use scopehold::domain::Event;
use scopehold_log::{LogReader, StdStorage, Storage, StorageFile, VerifyOptions, verify_log};
use serde_json::{Value, json};

const CANARY: &str = "sk-live-CANARY-7f3e9a1c5b";
const CANARY2: &str = "sk-live-CANARY-rotated-42d8";

/// Storage that fails every write and sync once `fail` is set, as a full or broken disk would.
#[derive(Debug, Clone, Default)]
struct Breakable {
    fail: Arc<AtomicBool>,
}

struct BreakableFile {
    inner: Box<dyn StorageFile>,
    fail: Arc<AtomicBool>,
}

impl StorageFile for BreakableFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.truncate(len)
    }
}

impl Storage for Breakable {
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(BreakableFile {
            inner: StdStorage.create_new(path)?,
            fail: self.fail.clone(),
        }))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(BreakableFile {
            inner: StdStorage.open_append(path)?,
            fail: self.fail.clone(),
        }))
    }
    fn open_at(&self, path: &Path, offset: u64) -> std::io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(BreakableFile {
            inner: StdStorage.open_at(path, offset)?,
            fail: self.fail.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdStorage.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdStorage.sync_dir(dir)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        StdStorage.remove(path)
    }
}

struct Daemon {
    _dir: tempfile::TempDir,
    home: Home,
    socket: PathBuf,
    clock: Arc<AtomicU64>,
    storage: Breakable,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(Some(dir.path().join("state")), None).unwrap();
        home.init().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut d = Daemon {
            socket: dir.path().join("scopehold.sock"),
            _dir: dir,
            home,
            clock: Arc::new(AtomicU64::new(now)),
            storage: Breakable::default(),
            stop: None,
            thread: None,
        };
        d.run();
        d
    }

    fn run(&mut self) {
        let c = self.clock.clone();
        let core = Arc::new(
            Engine::open_with_storage(
                &self.home,
                Arc::new(move || c.load(Ordering::SeqCst)),
                Arc::new(self.storage.clone()),
            )
            .unwrap(),
        );
        let _ = std::fs::remove_file(&self.socket);
        let std_listener = std::os::unix::net::UnixListener::bind(&self.socket).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = tokio::net::UnixListener::from_std(std_listener).unwrap();
                scopehold::daemon::server::run(
                    listener,
                    None,
                    None,
                    core.clone(),
                    async {
                        let _ = rx.await;
                    },
                    Duration::from_secs(5),
                )
                .await;
            });
            let _ = Arc::try_unwrap(core).map(|c| c.close());
        }));
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.storage = Breakable::default();
        self.run();
    }

    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> Answer {
        client::request(&self.socket, method, path, body.as_ref(), token).unwrap()
    }

    /// An admin call (the test runs as the uid that initialised the state: the first admin).
    fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let a = self.call(method, path, Some(body), None);
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        a.body
    }

    fn resolve(&self, token: &str, secret: &str, project: &str) -> Answer {
        self.call(
            "POST",
            "/v1/resolve",
            Some(json!({"secret": secret, "project": project})),
            Some(token),
        )
    }

    fn agent(&self, name: &str, uid: Option<u32>) -> String {
        self.admin("POST", "/v1/agents", json!({"name": name, "uid": uid}))["credential"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn grant(&self, spec: Value) -> u64 {
        self.admin("POST", "/v1/grants", spec)["grant"]
            .as_u64()
            .unwrap()
    }

    /// The project `demo` with `openai/prod` holding the canary.
    fn world(&self) {
        self.admin("POST", "/v1/projects", json!({"name": "demo"}));
        self.admin(
            "POST",
            "/v1/secrets",
            json!({"name": "openai/prod", "projects": ["demo"], "value": CANARY}),
        );
    }

    fn events(&self) -> Vec<(u64, Event)> {
        let r = LogReader::open(&self.home.log_dir(), None).unwrap();
        r.events_from(0)
            .unwrap()
            .map(|rec| {
                let rec = rec.unwrap();
                let body = rec.body.unwrap();
                (
                    rec.envelope.seq,
                    Event::from_body(rec.envelope.kind, &body.bytes).unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[test]
fn the_whole_story_resolve_rotate_revoke_all_in_the_log() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    let g = d.grant(json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo"}));

    let a = d.resolve(&tok, "openai/prod", "demo");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["value"].as_str(), a.body["version"].as_u64()),
        (Some(CANARY), Some(1))
    );

    // Rotation: the agent gets the new version with no change to its grant.
    let r = d.admin(
        "POST",
        "/v1/secrets/rotate",
        json!({"name": "openai/prod", "value": CANARY2}),
    );
    assert_eq!(r["version"], 2);
    let a = d.resolve(&tok, "openai/prod", "demo");
    assert_eq!(
        (a.body["value"].as_str(), a.body["version"].as_u64()),
        (Some(CANARY2), Some(2))
    );
    // Without a grace period, version 1 is gone.
    let old = d.call(
        "POST",
        "/v1/resolve",
        Some(json!({"secret": "openai/prod", "project": "demo", "version": 1})),
        Some(&tok),
    );
    assert_eq!(old.status, 403);

    // Revocation.
    d.admin("POST", "/v1/grants/revoke", json!({"id": g}));
    let a = d.resolve(&tok, "openai/prod", "demo");
    // The grant's holder is told why (others hear only "not granted").
    assert_eq!((a.status, a.error_code()), (403, Some("grant_unusable")));
    assert!(
        a.error_message().contains("the grant was revoked"),
        "{}",
        a.error_message()
    );

    // Each step is in the log, by identity.
    let evs = d.events();
    let resolved: Vec<u32> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Event::SecretResolved {
                identity, version, ..
            } if identity == "agent:bot" => Some(*version),
            _ => None,
        })
        .collect();
    assert_eq!(resolved, vec![1, 2]);
    let denied: Vec<&str> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Event::ResolutionDenied {
                identity, reason, ..
            } if identity == "agent:bot" => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        denied,
        vec![
            "version not current and not in a grace period",
            "grant revoked"
        ]
    );
    assert!(evs.iter().any(|(_, e)| matches!(e, Event::GrantRevoked { grant, by } if *grant == g && by.to_string().starts_with("member:"))));
    // The resolution event carries the caller's pid and uid from the kernel.
    assert!(evs.iter().any(|(_, e)| matches!(e, Event::SecretResolved { uid, pid: Some(p), .. } if *uid == my_uid() && *p == std::process::id() as i32)));
    let pk = d.home.public_key().unwrap();
    let report = verify_log(&d.home.log_dir(), &pk, &VerifyOptions::default()).unwrap();
    assert_eq!(report.events, evs.len() as u64);
}

#[test]
fn a_grace_period_keeps_the_previous_version_resolvable_until_it_ends() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    d.grant(json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo"}));
    d.admin(
        "POST",
        "/v1/secrets/rotate",
        json!({"name": "openai/prod", "value": CANARY2, "grace_secs": 600}),
    );
    let v1 = || {
        d.call(
            "POST",
            "/v1/resolve",
            Some(json!({"secret": "openai/prod", "project": "demo", "version": 1})),
            Some(&tok),
        )
    };
    assert_eq!(v1().body["value"].as_str(), Some(CANARY));
    d.advance(601_000);
    assert_eq!(v1().status, 403);
    assert_eq!(
        d.resolve(&tok, "openai/prod", "demo").body["value"].as_str(),
        Some(CANARY2)
    );
}

#[test]
fn grant_constraints_expiry_max_uses_rate_and_uid() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);

    // Expiry (injected clock).
    let g = d.grant(
        json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "ttl_secs": 60}),
    );
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    d.advance(60_000);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 403);
    d.admin("POST", "/v1/grants/revoke", json!({"id": g}));

    // Max uses.
    let g = d.grant(
        json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "max_uses": 2}),
    );
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 403);
    d.admin("POST", "/v1/grants/revoke", json!({"id": g}));

    // Rate per minute: 429, then allowed again a minute later.
    let g = d.grant(
        json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "rate_per_min": 2}),
    );
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    let a = d.resolve(&tok, "openai/prod", "demo");
    assert_eq!((a.status, a.error_code()), (429, Some("rate_limited")));
    d.advance(60_001);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    d.admin("POST", "/v1/grants/revoke", json!({"id": g}));

    // Caller uid binding: a grant for another uid does not serve this caller.
    d.grant(
        json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "uid": my_uid() + 1}),
    );
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 403);
    d.grant(
        json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "uid": my_uid()}),
    );
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);

    // An agent bound to another uid is refused whatever its grants.
    let bound = d.agent("bound", Some(my_uid() + 1));
    d.grant(json!({"identity": "agent:bound", "secret": "openai/prod", "project": "demo"}));
    assert_eq!(d.resolve(&bound, "openai/prod", "demo").status, 403);
}

#[test]
fn other_agents_keys_unknown_secrets_wrong_and_revoked_credentials_are_refused() {
    let d = Daemon::start();
    d.world();
    d.admin(
        "POST",
        "/v1/secrets",
        json!({"name": "anthropic/prod", "projects": ["demo"], "value": "other"}),
    );
    let a = d.agent("a", None);
    let b = d.agent("b", None);
    d.grant(json!({"identity": "agent:a", "secret": "openai/prod", "project": "demo"}));
    d.grant(json!({"identity": "agent:b", "secret": "anthropic/prod", "project": "demo"}));
    // b asks for a's key; a asks for a secret that does not exist: the same answer.
    let not_granted = d.resolve(&b, "openai/prod", "demo");
    let unknown = d.resolve(&a, "openai/nope", "demo");
    assert_eq!(not_granted.status, 403);
    assert_eq!(
        not_granted.body, unknown.body,
        "not granted and unknown must look the same"
    );
    // A wrong credential.
    let wrong = d.resolve(&format!("shk_{}", "0".repeat(64)), "openai/prod", "demo");
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (401, Some("unauthenticated"))
    );
    let none = d.call(
        "POST",
        "/v1/resolve",
        Some(json!({"secret": "openai/prod", "project": "demo"})),
        Some("garbage"),
    );
    assert_eq!(none.status, 401);
    // A revoked agent: refused, and recorded by name.
    d.admin("POST", "/v1/agents/revoke", json!({"name": "a"}));
    assert_eq!(d.resolve(&a, "openai/prod", "demo").status, 403);
    assert!(d.events().iter().any(|(_, e)| matches!(e, Event::ResolutionDenied { identity, reason, .. } if identity == "agent:a" && reason == "agent revoked")));
    // Agents cannot administer.
    let as_agent = d.call(
        "POST",
        "/v1/projects",
        Some(json!({"name": "evil"})),
        Some(&b),
    );
    assert_eq!(as_agent.status, 403);
    // A reissued credential replaces the old one.
    let b2 = d.admin("POST", "/v1/agents/reissue", json!({"name": "b"}))["credential"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d.resolve(&b, "anthropic/prod", "demo").status, 401);
    assert_eq!(d.resolve(&b2, "anthropic/prod", "demo").status, 200);
}

#[test]
fn a_flood_of_unauthenticated_requests_is_counted_not_logged_one_by_one() {
    let d = Daemon::start();
    d.world();
    let before = d.events().len();
    for _ in 0..200 {
        assert_eq!(d.resolve("shk_wrong", "openai/prod", "demo").status, 401);
    }
    let after = d.events();
    let unauth: Vec<u64> = after
        .iter()
        .filter_map(|(_, e)| match e {
            Event::UnauthenticatedDenied { count, .. } => Some(*count),
            _ => None,
        })
        .collect();
    assert_eq!(
        after.len() - before,
        1,
        "one event for the first denial of the window"
    );
    assert_eq!(unauth, vec![1]);
    d.advance(10_000);
    assert_eq!(d.resolve("shk_wrong", "openai/prod", "demo").status, 401);
    // The window closed: its 199 repeats are one count, then the new window's first denial.
    let counts: Vec<(&str, u64)> = d
        .events()
        .iter()
        .filter_map(|(_, e)| match e {
            Event::UnauthenticatedDenied { count, .. } => Some(("first", *count)),
            Event::DenialsCounted { count, .. } => Some(("repeats", *count)),
            _ => None,
        })
        .collect();
    assert_eq!(
        counts,
        vec![("first", 1), ("repeats", 199), ("first", 1)],
        "every one of the 201 denials is accounted for"
    );
}

#[test]
fn a_restart_rebuilds_identical_state_from_the_log() {
    let mut d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    d.grant(
        json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "max_uses": 3}),
    );
    d.resolve(&tok, "openai/prod", "demo");
    d.admin(
        "POST",
        "/v1/secrets/rotate",
        json!({"name": "openai/prod", "value": CANARY2, "grace_secs": 30}),
    );
    let lists = |d: &Daemon| {
        [
            "/v1/projects",
            "/v1/secrets",
            "/v1/agents",
            "/v1/members",
            "/v1/grants",
        ]
        .map(|p| d.call("GET", p, None, None).body)
        .to_vec()
    };
    let before = lists(&d);
    let pk = d.home.public_key().unwrap();
    let state_before = scopehold::daemon::replay(&d.home.log_dir(), &pk).unwrap();
    d.restart();
    assert_eq!(lists(&d), before);
    assert_eq!(
        scopehold::daemon::replay(&d.home.log_dir(), &pk).unwrap(),
        state_before
    );
    // Uses survive the restart: two left of three.
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 403);
}

fn forms(v: &str) -> Vec<Vec<u8>> {
    crate::common::canary_forms(v)
}

fn assert_no_canary(what: &str, bytes: &[u8]) {
    for v in [CANARY, CANARY2] {
        for f in forms(v) {
            assert!(
                !bytes.windows(f.len()).any(|w| w == &f[..]),
                "{what} contains a secret value as {}",
                String::from_utf8_lossy(&f)
            );
        }
    }
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn secret_values_appear_nowhere_at_rest_or_in_exports() {
    let mut d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    d.grant(json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo"}));
    assert_eq!(
        d.resolve(&tok, "openai/prod", "demo").body["value"].as_str(),
        Some(CANARY)
    );
    d.admin(
        "POST",
        "/v1/secrets/rotate",
        json!({"name": "openai/prod", "value": CANARY2}),
    );
    assert_eq!(
        d.resolve(&tok, "openai/prod", "demo").body["value"].as_str(),
        Some(CANARY2)
    );
    d.stop();
    let mut files = Vec::new();
    all_files(&d.home.root, &mut files);
    assert!(files.len() >= 6);
    for f in &files {
        assert_no_canary(&f.display().to_string(), &std::fs::read(f).unwrap());
    }
    // Exports, through the real binary.
    let out = d._dir.path().join("x.bundle");
    let jsonl = d._dir.path().join("x.jsonl");
    for (fmt, path) in [("bundle", &out), ("jsonl", &jsonl)] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
            .args([
                "--home",
                d.home.root.to_str().unwrap(),
                "log",
                "export",
                "--format",
                fmt,
                "--out",
                path.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_no_canary(fmt, &std::fs::read(path).unwrap());
    }
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
        .args([
            "--home",
            d.home.root.to_str().unwrap(),
            "--json",
            "log",
            "show",
        ])
        .output()
        .unwrap();
    assert!(show.status.success());
    assert_no_canary("log show", &show.stdout);
    // The credential is not at rest either.
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(tok.len()).any(|w| w == tok.as_bytes()),
            "{} holds the credential",
            f.display()
        );
    }
}

fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bad_requests_get_clear_errors_change_nothing_and_others_are_served() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    d.grant(json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo"}));
    let size_before = d.events().len();

    // A slow client holding a connection with half a request head.
    let mut slow = UnixStream::connect(&d.socket).unwrap();
    slow.write_all(b"POST /v1/resolve HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    let auth = format!("Authorization: Bearer {tok}\r\n");
    let req = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (req("/v1/resolve", "{not json"), "400"),
        (
            req("/v1/resolve", r#"{"secret": 5, "project": "demo"}"#),
            "400",
        ),
        (req("/v1/resolve", r#"{"secret": "openai/prod"}"#), "400"),
        (
            req(
                "/v1/resolve",
                r#"{"secret": "openai/prod", "project": "demo", "identity": "agent:root"}"#,
            ),
            "400",
        ),
        (
            req(
                "/v1/resolve",
                r#"{"secret": "../../etc", "project": "demo"}"#,
            ),
            "400",
        ),
        (req("/v1/nope", "{}"), "404"),
        (
            req(
                "/v1/resolve",
                &format!(
                    r#"{{"secret": "{}", "project": "demo"}}"#,
                    "a".repeat(600 * 1024)
                ),
            ),
            "413",
        ),
        (
            format!(
                "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 * 1024)
            ),
            "431",
        ),
        ("BLAH\r\n\r\n".to_string(), "400"),
    ];
    for (raw, status) in &cases {
        let answer = raw_request(&d.socket, raw.as_bytes());
        let line = answer.lines().next().unwrap_or("");
        assert!(
            line.contains(status),
            "expected {status} for {:?}, got {line:?}",
            &raw[..raw.len().min(80)]
        );
        if let Some(body) = answer.split("\r\n\r\n").nth(1)
            && !body.is_empty()
        {
            let v: Value = serde_json::from_str(body).unwrap();
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{body}"
            );
        }
        // Everyone else is still served, during the slow client's stall too.
        assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    }
    // A GET on a route that only takes POST, by an admin: refused, not answered with `{}`.
    let g = d.call("GET", "/v1/resolve", None, None);
    assert_eq!(
        (g.status, g.error_code()),
        (405, Some("method_not_allowed"))
    );
    // A body that never arrives in full.
    let mut partial = UnixStream::connect(&d.socket).unwrap();
    partial
        .write_all(
            format!("POST /v1/resolve HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{")
                .as_bytes(),
        )
        .unwrap();
    // The slow client is cut off by the header timeout.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        buf.is_empty() || text.starts_with("HTTP/1.1 408"),
        "slow client got {text:?}"
    );
    partial
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = partial.read_to_end(&mut buf);
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Nothing but the successful resolutions was recorded: bad requests change no state.
    let evs = d.events();
    assert_eq!(evs.len() - size_before, cases.len());
    assert!(
        evs[size_before..]
            .iter()
            .all(|(_, e)| matches!(e, Event::SecretResolved { .. }))
    );
}

#[test]
fn a_log_failure_refuses_resolution_sends_no_value_and_503_until_restart() {
    let mut d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    d.grant(json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo"}));
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);

    d.storage.fail.store(true, Ordering::SeqCst);
    let a = d.resolve(&tok, "openai/prod", "demo");
    assert_eq!(
        (a.status, a.error_code()),
        (503, Some("log_unavailable")),
        "{}",
        a.body
    );
    assert!(a.body.get("value").is_none());
    assert_no_canary("the refused answer", a.body.to_string().as_bytes());
    // The disk is back, but the writer stays stopped: no retry after a failed fsync.
    d.storage.fail.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        let a = d.resolve(&tok, "openai/prod", "demo");
        assert_eq!(a.status, 503);
        assert!(a.body.get("value").is_none());
        let c = d.call("POST", "/v1/projects", Some(json!({"name": "p2"})), None);
        assert_eq!(c.status, 503);
    }
    let h = d.call("GET", "/v1/health", None, None);
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "log_unavailable");
    assert!(
        h.body["log"]["error"]
            .as_str()
            .unwrap()
            .contains("fdatasync"),
        "{}",
        h.body
    );

    // A restart reopens and re-verifies the log, and serves again.
    d.restart();
    assert_eq!(d.call("GET", "/v1/health", None, None).body["status"], "ok");
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 200);
    let pk = d.home.public_key().unwrap();
    verify_log(&d.home.log_dir(), &pk, &VerifyOptions::default()).unwrap();
}

#[test]
fn concurrent_resolutions_never_exceed_max_uses() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    d.grant(json!({"identity": "agent:bot", "secret": "openai/prod", "project": "demo", "max_uses": 10}));
    let socket = d.socket.clone();
    let results: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|_| {
                let (socket, tok) = (socket.clone(), tok.clone());
                s.spawn(move || {
                    client::request(
                        &socket,
                        "POST",
                        "/v1/resolve",
                        Some(&json!({"secret": "openai/prod", "project": "demo"})),
                        Some(&tok),
                    )
                    .unwrap()
                    .status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|s| **s == 200).count(),
        10,
        "{results:?}"
    );
    assert_eq!(results.iter().filter(|s| **s == 403).count(), 22);
    let resolved = d
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, Event::SecretResolved { .. }))
        .count();
    assert_eq!(resolved, 10);
}

// --- the binary ------------------------------------------------------------------------

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{} did not appear", path.display());
}

#[test]
fn binary_daemon_serves_the_cli_refuses_a_second_instance_and_stops_cleanly_on_sigterm() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let sock = t.path().join("run/scopehold.sock");
    let notify = t.path().join("notify.sock");
    let notify_rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    notify_rx
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let bin = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"));
        c.env("SCOPEHOLD_HOME", &home)
            .env("SCOPEHOLD_SOCKET", &sock)
            .env_remove("SCOPEHOLD_TOKEN");
        c
    };
    let daemon = Child(
        bin()
            .arg("daemon")
            .env("NOTIFY_SOCKET", &notify)
            // Debug: every request's span is printed as it closes; still no value in it.
            .env("SCOPEHOLD_LOG", "debug")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut ready = [0u8; 64];
    let n = notify_rx.recv(&mut ready).unwrap();
    assert_eq!(&ready[..n], b"READY=1\n");
    wait_for(&sock);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&home).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let ok = |args: &[&str], stdin: Option<&str>| {
        let mut c = bin();
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(ch.stdin.take());
        let o = ch.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    ok(&["project", "create", "demo"], None);
    ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{CANARY}\n")),
    );
    let cred = ok(&["agent", "create", "bot"], None)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let gid = ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
        ],
        None,
    );
    assert_eq!(gid.trim(), "1");
    let value = bin()
        .args(["resolve", "openai/prod", "--project", "demo"])
        .env("SCOPEHOLD_TOKEN", &cred)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(value.stdout).unwrap(),
        CANARY,
        "no trailing newline"
    );
    // `run` injects the value, hides the token, passes the child's status through.
    let run = bin()
        .args([
            "run",
            "--project",
            "demo",
            "--",
            "sh",
            "-c",
            "test \"$OPENAI_PROD\" = \"$EXPECT\" && test -z \"$SCOPEHOLD_TOKEN\" && exit 7",
        ])
        .env("SCOPEHOLD_TOKEN", &cred)
        .env("EXPECT", CANARY)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Denied and unreachable exit statuses.
    let denied = bin()
        .args(["resolve", "openai/prod", "--project", "demo"])
        .env("SCOPEHOLD_TOKEN", "shk_nope")
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(3));
    let unreachable = bin()
        .args(["--socket", "/nonexistent/s.sock", "project", "list"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(4));

    // A second daemon on the same state directory refuses to start.
    let second = bin()
        .arg("daemon")
        .env("SCOPEHOLD_SOCKET", t.path().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // SIGTERM: exit 0, log flushed and verifiable, no value in the daemon's output.
    let mut daemon = daemon;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_no_canary("daemon output", err.as_bytes());
    assert!(!err.contains(&cred), "daemon output holds the credential");
    // Each request has its span: route, identity, outcome.
    for want in [
        r#"request{route="resolve""#,
        r#"identity="agent:bot" outcome="ok""#,
        r#"route="secret.put""#,
        r#"outcome="unauthenticated""#,
    ] {
        assert!(
            err.contains(want),
            "no {want} in the daemon's output:\n{err}"
        );
    }
    assert!(!sock.exists(), "socket removed on exit");
    let v = bin().args(["log", "verify"]).output().unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

#[test]
fn the_python_example_agent_resolves_over_the_socket() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("py", None);
    d.grant(json!({"identity": "agent:py", "secret": "openai/prod", "project": "demo"}));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.py");
    let o = std::process::Command::new("python3")
        .arg(&script)
        .args(["openai/prod", "demo"])
        .env("SCOPEHOLD_SOCKET", &d.socket)
        .env("SCOPEHOLD_TOKEN", &tok)
        .output()
        .expect("python3 runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!(
            "resolved openai/prod version 1 ({} bytes)",
            CANARY.len()
        )),
        "{out}"
    );
    assert_no_canary("the example's output", &o.stdout);
    // And it reports a denial the way an agent should: non-zero, with the error code.
    let o = std::process::Command::new("python3")
        .arg(&script)
        .args(["openai/other", "demo"])
        .env("SCOPEHOLD_SOCKET", &d.socket)
        .env("SCOPEHOLD_TOKEN", &tok)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("403 denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn routes_answer_404_and_405_from_the_table_before_authentication() {
    let d = Daemon::start();
    d.world();
    let tok = d.agent("bot", None);
    let before = d.events().len();
    let cases: [(&str, &str, Option<&str>, u16, &str); 6] = [
        // An agent's GET on a POST-only route: 405, not 403.
        ("GET", "/v1/resolve", Some(&tok), 405, "method_not_allowed"),
        (
            "GET",
            "/v1/grants/revoke",
            Some(&tok),
            405,
            "method_not_allowed",
        ),
        // No valid credential: still told the route's shape, and nothing is recorded.
        (
            "GET",
            "/v1/resolve",
            Some("shk_wrong"),
            405,
            "method_not_allowed",
        ),
        ("POST", "/v1/nope", Some("shk_wrong"), 404, "not_found"),
        ("POST", "/v1/health", None, 405, "method_not_allowed"),
        // An agent on an admin route: authenticated, then refused by the route's access.
        ("GET", "/v1/grants", Some(&tok), 403, "forbidden"),
    ];
    for (method, path, token, status, code) in cases {
        let a = d.call(method, path, None, token);
        assert_eq!(
            (a.status, a.error_code()),
            (status, Some(code)),
            "{method} {path}"
        );
    }
    assert_eq!(
        d.events().len(),
        before,
        "a request refused by the route table reaches no authentication and records nothing"
    );
    assert_eq!(d.resolve(&tok, "openai/prod", "demo").status, 403);
}
