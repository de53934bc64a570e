//! The audit view says who did what to whom: every row has an actor and a subject, in
//! `log show` (text and JSON, from the real binary on a real daemon's log) and in the console
//! (ratatui's `TestBackend` at 80x24, 120x40 and 200x50, snapshotted; and the real binary in
//! tmux at 80x24 and 200x50). Bundle mode projects Secrets, Identities and Grants from the
//! bundle's public events.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use scopehold::domain::{CredentialHash, Event, Sealed};
use scopehold_log::{Entry, Log, LogKey, LogOptions};
use scopehold_tui::app::map_key;
use scopehold_tui::{Config, Console};
use serde_json::{Value, json};

use crate::common::Daemon;

const SEED: [u8; 32] = *b"scopehold audit-view test seed!!";

fn ev(v: Value) -> Event {
    serde_json::from_value(v).unwrap()
}

/// A deterministic log (fixed key, clock and salts): two secrets, two agents, two grants,
/// resolutions, a reissued credential, a revoked agent's denial (no secret, no project), a
/// proxied call and a rotation.
fn story(dir: &Path) {
    let t = Arc::new(AtomicU64::new(1_767_225_600_000));
    let opts = LogOptions {
        clock: Arc::new(move || t.fetch_add(1500, Ordering::Relaxed)),
        ..LogOptions::default()
    };
    let log = Log::create_with_id(dir, LogKey::from_seed(&SEED), opts, [9; 32]).unwrap();
    let by = "member:root";
    let sealed = |secret: &str, version: u32| Event::SecretVersionSealed {
        secret: secret.parse().unwrap(),
        version,
        sealed: Sealed {
            wrapped_key: "5eal5eal".into(),
            key_nonce: "5eal5eal".into(),
            nonce: "5eal5eal".into(),
            ciphertext: "5eal5eal".into(),
        },
    };
    let cred = |agent: &str| Event::AgentCredentialIssued {
        agent: agent.parse().unwrap(),
        credential_hash: CredentialHash([0xcd; 32]),
        by: by.parse().unwrap(),
    };
    let events = vec![
        ev(
            json!({"type": "member_added", "member": "root", "uid": 0, "admin": true, "by": "init"}),
        ),
        ev(json!({"type": "project_created", "project": "demo", "by": by})),
        ev(
            json!({"type": "secret_stored", "secret": "openai/prod", "projects": ["demo"], "by": by}),
        ),
        sealed("openai/prod", 1),
        ev(
            json!({"type": "secret_stored", "secret": "anthropic/staging-eu", "projects": ["demo"], "by": by}),
        ),
        sealed("anthropic/staging-eu", 1),
        ev(json!({"type": "agent_created", "agent": "summariser", "uid": null, "by": by})),
        cred("summariser"),
        ev(json!({"type": "agent_created", "agent": "bot", "uid": 1001, "by": by})),
        cred("bot"),
        ev(
            json!({"type": "grant_created", "grant": 1, "identity": "agent:summariser",
            "secret": "anthropic/staging-eu", "project": "demo", "expires_at_ms": null,
            "max_uses": 100, "rate_per_min": 30, "uid": null, "by": by}),
        ),
        ev(
            json!({"type": "grant_created", "grant": 2, "identity": "agent:bot",
            "secret": "openai/prod", "project": "demo", "expires_at_ms": null,
            "max_uses": null, "rate_per_min": null, "uid": 1001, "by": by}),
        ),
        ev(
            json!({"type": "secret_resolved", "identity": "agent:summariser",
            "secret": "anthropic/staging-eu", "version": 1, "project": "demo", "grant": 1,
            "pid": 4242, "uid": 1000, "at_ms": 1_767_225_619_500u64}),
        ),
        // `agent reissue bot`.
        cred("bot"),
        ev(json!({"type": "agent_revoked", "agent": "bot", "by": by})),
        ev(
            json!({"type": "resolution_denied", "identity": "agent:bot", "secret": "",
            "project": "", "reason": "agent revoked", "pid": 4343, "uid": 1001,
            "at_ms": 1_767_225_622_500u64}),
        ),
        ev(json!({"type": "proxy_call", "identity": "agent:summariser",
            "secret": "anthropic/staging-eu", "version": 1, "project": "demo", "grant": 1,
            "host": "api.anthropic.com", "method": "POST", "path": "/v1/messages",
            "pid": 4244, "uid": 1000, "at_ms": 1_767_225_624_000u64})),
        sealed("openai/prod", 2),
        ev(
            json!({"type": "secret_rotated", "secret": "openai/prod", "version": 2,
            "grace_until_ms": null, "by": by}),
        ),
    ];
    for (i, e) in events.iter().enumerate() {
        let body = serde_json::to_vec(e).unwrap();
        let entry = if e.is_secret_bearing() {
            Entry::secret_with_salt(e.kind().number(), body, [i as u8; 32])
        } else {
            Entry::public(e.kind().number(), body)
        };
        log.append(entry).unwrap();
    }
    log.close().unwrap();
}

/// The event number of the first grant in [`story`].
const GRANT: u64 = 10;

fn open(dir: &Path, bundle: Option<&Path>) -> Console {
    let key = LogKey::from_seed(&SEED).public();
    let tables = match bundle {
        Some(b) => scopehold::cli::console::bundle_tables(b.to_path_buf(), key),
        None => {
            let d = dir.to_path_buf();
            Arc::new(move || {
                scopehold::daemon::replay(&d, &key)
                    .map(|st| scopehold::cli::console::tables_of(&st))
                    .map_err(|e| e.to_string())
            })
        }
    };
    let mut c = Console::open(Config {
        log_dir: dir.to_path_buf(),
        remote: None,
        bundle: bundle.map(Path::to_path_buf),
        key,
        decoder: scopehold::cli::console::decoder(),
        tables: Some(tables),
        actions: None,
        color: false,
    })
    .unwrap();
    c.wait_idle(Duration::from_secs(10));
    c
}

fn render(c: &mut Console, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| c.draw(f)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn press(c: &mut Console, code: KeyCode) {
    if let Some(a) = map_key(&c.app.mode, KeyEvent::new(code, KeyModifiers::NONE)) {
        c.act(a);
    }
}

/// Actor and subject of every event of the log at `dir`, as the console's decoder says.
fn described(dir: &Path) -> Vec<(String, String)> {
    let dec = scopehold::cli::console::decoder();
    let r = scopehold_log::LogReader::open(dir, None).unwrap();
    r.events_from(0)
        .unwrap()
        .map(|rec| {
            let s = scopehold_tui::source::decode(&dec, &rec.unwrap());
            (s.actor, s.subject)
        })
        .collect()
}

/// The table rows on screen by event number: lines `│SEQ ...` of the audit table.
fn audit_rows(screen: &str) -> Vec<(u64, &str)> {
    screen
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('│')?;
            let seq = rest.split_whitespace().next()?.parse().ok()?;
            Some((seq, l))
        })
        .collect()
}

#[test]
fn audit_view_columns_fit_at_80x24_120x40_and_200x50() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let want = described(d.path());
    let mut c = open(d.path(), None);
    c.app.jump(GRANT);
    for (w, h) in [(80, 24), (120, 40), (200, 50)] {
        let screen = render(&mut c, w, h);
        insta::assert_snapshot!(format!("audit_{w}x{h}"), screen);
        let rows = audit_rows(&screen);
        assert!(rows.len() >= 10, "{w}x{h}: too few rows:\n{screen}");
        for (seq, line) in &rows {
            let (actor, subject) = &want[*seq as usize];
            // Never cut silently: whole, or cut with an ellipsis.
            for what in [actor, subject] {
                assert!(
                    line.contains(what.as_str()) || line.contains('…'),
                    "{w}x{h}: event {seq}: {what:?} cut silently:\n{line}"
                );
            }
            // From 120 columns, actor and subject are whole: secrets such as
            // `anthropic/staging-eu` are never cut.
            if w >= 120 {
                assert!(
                    line.contains(actor.as_str()) && line.contains(subject.as_str()),
                    "{w}x{h}: event {seq} cut:\n{line}"
                );
            }
        }
        let grant = rows.iter().find(|(s, _)| *s == GRANT).unwrap().1;
        assert!(
            grant.contains("member:root") && grant.contains("grant_created"),
            "{w}x{h}: {grant}"
        );
        let header = screen.lines().find(|l| l.contains("SEQ")).unwrap();
        let cols: Vec<&str> = header
            .trim_matches(|c| c == '│' || c == ' ')
            .split_whitespace()
            .filter(|c| c.chars().all(|c| c.is_ascii_uppercase() || c == '/'))
            .collect();
        let core = ["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT"];
        if w == 80 {
            // The rest is left to the detail pane.
            assert_eq!(cols, core, "{header}");
        } else {
            assert_eq!(cols[..5], core, "{header}");
        }
        if w >= 200 {
            assert!(cols.contains(&"OUTCOME"), "{w}x{h}: {header}");
        }
    }
    // The revoked agent's denial names no secret and no project: a dash, and the reason.
    c.app.jump(15);
    let screen = render(&mut c, 200, 50);
    let denial = audit_rows(&screen)
        .into_iter()
        .find(|(s, _)| *s == 15)
        .unwrap()
        .1;
    assert!(
        denial.contains("agent:bot") && denial.contains(" — ") && denial.contains("agent revoked"),
        "{denial}"
    );
}

#[test]
fn the_detail_pane_shows_every_field_and_scrolls_at_80x24() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let mut c = open(d.path(), None);
    c.app.jump(GRANT);
    // At 80x24 Tab shows the detail in the table's place.
    press(&mut c, KeyCode::Tab);
    let first = render(&mut c, 80, 24);
    insta::assert_snapshot!("detail_80x24", first);
    for want in [
        "actor        member:root",
        "subject      agent:summariser, anthropic/staging-eu in demo",
        "max_uses",
        "rate_per_min",
        "expires_at",
    ] {
        assert!(first.contains(want), "{want:?} missing:\n{first}");
    }
    // It does not all fit: j/k scroll it down to the chain, and Tab goes back to the table.
    assert!(first.contains("lines 1-"), "{first}");
    press(&mut c, KeyCode::Char('G'));
    let last = render(&mut c, 80, 24);
    assert!(
        last.contains("signed by") && last.contains("prev"),
        "{last}"
    );
    press(&mut c, KeyCode::Tab);
    assert!(render(&mut c, 80, 24).contains("ACTOR"));
    // The selection did not move while the detail scrolled.
    assert_eq!(c.app.selected_seq(), Some(GRANT));
    // A reissued credential names its agent and its issuer; the hash is not shown.
    c.app.jump(13);
    let screen = render(&mut c, 200, 50);
    assert!(
        screen.contains("credential_hash (hash)") && !screen.contains("cdcdcd"),
        "{screen}"
    );
    let row = audit_rows(&screen)
        .into_iter()
        .find(|(s, _)| *s == 13)
        .unwrap()
        .1;
    assert!(
        row.contains("member:root")
            && row.contains("agent_credential_issued")
            && row.contains("agent:bot"),
        "{row}"
    );
    assert!(
        !screen.contains("5eal5eal"),
        "a sealed value is shown:\n{screen}"
    );
}

#[test]
fn the_other_views_fit_their_columns_and_never_cut_a_secret_at_120() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let mut c = open(d.path(), None);
    for key in ['2', '4'] {
        press(&mut c, KeyCode::Char(key));
        for (w, h) in [(120, 40), (200, 50)] {
            let s = render(&mut c, w, h);
            assert!(
                s.contains("anthropic/staging-eu ") && s.contains("openai/prod "),
                "{w}x{h}:\n{s}"
            );
        }
        let s = render(&mut c, 80, 24);
        assert!(!s.contains("anthropic/st "), "cut silently:\n{s}");
    }
}

#[test]
fn bundle_mode_projects_secrets_identities_and_grants_from_the_bundle() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let key = LogKey::from_seed(&SEED).public();
    let reader = scopehold_log::LogReader::open(d.path(), None).unwrap();
    let path = d.path().join("audit.bundle");
    scopehold_log::export_to_file(&reader, &key, 0, None, &path).unwrap();
    let mut c = open(Path::new(""), Some(&path));
    assert!(c.tables.is_some(), "no projection: {:?}", c.app.message);
    press(&mut c, KeyCode::Char('4'));
    let s = render(&mut c, 120, 40);
    assert!(s.contains("projected from the bundle"), "{s}");
    let grant = s
        .lines()
        .find(|l| l.contains("agent:bot"))
        .unwrap_or_else(|| panic!("no grant of agent:bot:\n{s}"));
    assert!(
        grant.contains("openai/prod") && grant.contains("demo"),
        "{grant}"
    );
    assert!(s.contains("anthropic/staging-eu"), "{s}");
    // Versions from rotations whose sealed values the bundle leaves out.
    press(&mut c, KeyCode::Char('2'));
    let s = render(&mut c, 120, 40);
    let openai = s.lines().find(|l| l.contains("openai/prod")).unwrap();
    assert!(
        openai
            .split_whitespace()
            .skip_while(|w| !w.contains("openai/prod"))
            .nth(1)
            == Some("2"),
        "current version: {openai}"
    );
    press(&mut c, KeyCode::Char('3'));
    let s = render(&mut c, 120, 40);
    assert!(
        s.contains("agent:summariser") && s.contains("member:root"),
        "{s}"
    );
    // Secret-bearing rows say what is missing rather than showing nothing.
    c.app.jump(13);
    let s = render(&mut c, 200, 50);
    assert!(s.contains("(body left out of the bundle)"), "{s}");

    // A bundle that starts mid-log still projects what it holds.
    let path = d.path().join("tail.bundle");
    scopehold_log::export_to_file(&reader, &key, 11, None, &path).unwrap();
    let mut c = open(Path::new(""), Some(&path));
    press(&mut c, KeyCode::Char('2'));
    assert!(c.tables.is_some(), "{:?}", c.app.message);
}

// ---- the real binary: `log show` and the console in tmux, on a real daemon ----

/// What these tests add to the shared daemon.
trait Story {
    fn world(&self) -> String;
}

impl Story for Daemon {
    /// `demo`, `openai/prod`, agent `bot` granted it, its credential reissued, then revoked,
    /// then refused once. Returns the credential.
    fn world(&self) -> String {
        self.ok(&["project", "create", "demo"], None);
        self.ok(
            &["secret", "put", "openai/prod", "--project", "demo"],
            Some("sk-audit-canary-4c1d\n"),
        );
        self.ok(&["agent", "create", "bot"], None);
        self.ok(
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
        let cred = self
            .ok(&["agent", "reissue", "bot"], None)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let o = self.cli(
            &["resolve", "openai/prod", "--project", "demo"],
            None,
            Some(&cred),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        self.ok(&["agent", "revoke", "bot"], None);
        let o = self.cli(
            &["resolve", "openai/prod", "--project", "demo"],
            None,
            Some(&cred),
        );
        assert!(!o.status.success());
        cred
    }
}

#[test]
fn log_show_says_who_did_what_to_whom_in_text_and_json() {
    let d = Daemon::start();
    d.world();
    let text = d.ok(&["log", "show"], None);
    let line = |kind: &str, nth: usize| {
        text.lines()
            .filter(|l| l.split_whitespace().nth(3) == Some(kind))
            .nth(nth)
            .unwrap_or_else(|| panic!("no {kind} line {nth}:\n{text}"))
            .to_string()
    };
    let head = text.lines().next().unwrap();
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        ["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAILS"]
    );
    // seq, time, actor, action, subject, then the rest.
    let g = line("grant_created", 0);
    let w: Vec<&str> = g.split_whitespace().collect();
    assert!(w[2].starts_with("member:"), "{g}");
    assert_eq!(w[4..8], ["agent:bot,", "openai/prod", "in", "demo"], "{g}");
    assert!(
        g.contains("grant 1") && g.contains("expires_at=never"),
        "{g}"
    );
    // The reissue: by its admin, about its agent; the hash is not shown.
    let r = line("agent_credential_issued", 1);
    let w: Vec<&str> = r.split_whitespace().collect();
    assert!(w[2].starts_with("member:") && w[4] == "agent:bot", "{r}");
    // The revoked agent's denial: a dash and the reason.
    let n = line("resolution_denied", 0);
    let w: Vec<&str> = n.split_whitespace().collect();
    assert_eq!(w[2..5], ["agent:bot", "resolution_denied", "—"], "{n}");
    assert!(n.contains("DENIED (agent revoked)"), "{n}");
    // A sealed version has no actor recorded: a dash, and its value is "(sealed)".
    let s = line("secret_version_sealed", 0);
    assert_eq!(s.split_whitespace().nth(2), Some("—"), "{s}");

    let json = d.ok(&["--json", "log", "show"], None);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_kind = |k: &'static str| rows.iter().filter(move |r| r["kind"] == k);
    let g = by_kind("grant_created").next().unwrap();
    assert!(g["actor"].as_str().unwrap().starts_with("member:"), "{g}");
    assert_eq!(g["subject"], "agent:bot, openai/prod in demo");
    assert_eq!(g["fields"]["identity"], "agent:bot");
    assert_eq!(g["fields"]["max_uses"], "-");
    // The current fields are kept.
    assert_eq!(g["event"]["identity"], "agent:bot");
    assert!(g["seq"].is_u64() && g["hash"].is_string() && g["time"].is_string());
    let issued: Vec<&Value> = by_kind("agent_credential_issued").collect();
    assert_eq!(issued.len(), 2);
    for i in &issued {
        assert_eq!(i["subject"], "agent:bot");
        assert_eq!(i["fields"]["credential_hash"], "(hash)");
        assert!(
            i.get("event").is_none(),
            "a secret-bearing body was printed: {i}"
        );
    }
    let sealed = by_kind("secret_version_sealed").next().unwrap();
    assert!(sealed["actor"].is_null() && sealed["fields"]["sealed"] == "(sealed)");
    let denial = by_kind("resolution_denied").next().unwrap();
    assert_eq!(denial["subject"], "—");
    assert_eq!(denial["fields"]["reason"], "agent revoked");

    // No secret material, in either form: not the value, not a credential hash, not a
    // sealed value's bytes (read from the log's own secret-bearing bodies).
    let reader = scopehold_log::LogReader::open(&d.home.join("log"), None).unwrap();
    let mut material = vec!["sk-audit-canary-4c1d".to_string()];
    for rec in reader.events_from(0).unwrap() {
        let rec = rec.unwrap();
        if rec.class() == scopehold_log::BodyClass::Secret {
            let body: Value = serde_json::from_slice(&rec.body.unwrap().bytes).unwrap();
            for k in ["credential_hash"] {
                if let Some(v) = body.get(k) {
                    material.push(v.as_str().unwrap().to_string());
                }
            }
            if let Some(s) = body.get("sealed") {
                for v in s.as_object().unwrap().values() {
                    material.push(v.as_str().unwrap().to_string());
                }
            }
        }
    }
    assert!(material.len() > 4, "{material:?}");
    for m in &material {
        assert!(
            !text.contains(m.as_str()) && !json.contains(m.as_str()),
            "{m} shown"
        );
    }
}

/// tmux on a server of the test's own (`-L`), killed when the test ends.
struct Tmux(String);

impl Tmux {
    fn new(tag: &str) -> Self {
        Tmux(format!("audit-{tag}-{}", std::process::id()))
    }

    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux is installed (.ci/run installs it)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts `cmd` in a detached session of exactly `w`x`h`.
    fn start(&self, cmd: &str, w: u16, h: u16) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            &self.0,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            cmd,
        ]);
        // Whatever the server's defaults, the window is the size asked for.
        self.run(&[
            "resize-window",
            "-t",
            &self.0,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
        ]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Polls the screen (bounded, no fixed sleeps) until `ok` holds for it.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.run(&["capture-pane", "-p", "-t", &self.0]);
            if ok(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the screen never showed {what}; last screen:\n{last}");
    }

    /// `q`, then waits (bounded) for the program to end with its session.
    fn quit(&self) {
        self.keys(&["q"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.run(&["list-sessions"]).contains(&self.0) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !self.run(&["list-sessions"]).contains(&self.0),
            "the console did not quit"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The line of `screen` holding all of `words`.
fn line_with<'a>(screen: &'a str, words: &[&str]) -> Option<&'a str> {
    screen.lines().find(|l| words.iter().all(|w| l.contains(w)))
}

fn console_in_tmux(w: u16, h: u16) {
    let d = Daemon::start();
    d.world();
    let bin = env!("CARGO_BIN_EXE_scopehold");
    let tmux = Tmux::new(&format!("{w}x{h}"));
    tmux.start(
        &format!(
            "SCOPEHOLD_HOME={} SCOPEHOLD_SOCKET={} NO_COLOR=1 {bin} console",
            d.home.display(),
            d.socket.display()
        ),
        w,
        h,
    );
    let s = tmux.wait("the grant's row with its actor and subject", |s| {
        line_with(s, &["grant_created", "member:", "agent:bot"]).is_some()
    });
    assert_eq!(s.lines().count(), usize::from(h), "{s}");
    assert!(
        s.lines().all(|l| l.chars().count() <= usize::from(w)),
        "{s}"
    );
    if w >= 200 {
        let row = line_with(&s, &["grant_created"]).unwrap();
        assert!(row.contains("agent:bot, openai/prod in demo"), "{row}");
    }
    tmux.quit();

    // Bundle mode: the Grants tab shows the grant, projected from the bundle.
    let bundle = d.t.path().join("audit.bundle");
    d.ok(&["log", "export", "--out", bundle.to_str().unwrap()], None);
    let key = d.home.join("log.pub");
    let tmux = Tmux::new(&format!("bundle-{w}x{h}"));
    tmux.start(
        &format!(
            "SCOPEHOLD_HOME=/nonexistent/state NO_COLOR=1 {bin} console --bundle {} --key {}",
            bundle.display(),
            key.display()
        ),
        w,
        h,
    );
    tmux.wait("the bundle's audit view", |s| {
        s.contains("[read-only bundle]")
    });
    tmux.keys(&["4"]);
    let s = tmux.wait("the grant in the Grants tab", |s| {
        line_with(s, &["agent:bot", "openai/prod", "demo"]).is_some()
    });
    assert!(!s.contains("loading the projection"), "{s}");
    tmux.quit();
}

#[test]
fn the_console_in_tmux_at_80x24_names_the_grants_actor_and_subject() {
    console_in_tmux(80, 24);
}

#[test]
fn the_console_in_tmux_at_200x50_names_the_grants_actor_and_subject() {
    console_in_tmux(200, 50);
}
