//! The console: every view rendered with ratatui's `TestBackend` from a real log and checked
//! by snapshot, key handling through the real `Console`, and an end-to-end run in tmux
//! against the real daemon, driven by keys like a person would.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use scopehold::domain::Event;
use scopehold_log::{Entry, Log, LogKey, LogOptions};
use scopehold_tui::app::{Action, View, map_key};
use scopehold_tui::{Config, Console};

const SEED: [u8; 32] = *b"scopehold console snapshot seed!";

/// A small, fully deterministic log of domain events (fixed key, identity, clock and salts).
fn story(dir: &Path) {
    let t = Arc::new(AtomicU64::new(1_767_225_600_000));
    let opts = LogOptions {
        clock: Arc::new(move || t.fetch_add(1500, Ordering::Relaxed)),
        ..LogOptions::default()
    };
    let log = Log::create_with_id(dir, LogKey::from_seed(&SEED), opts, [7; 32]).unwrap();
    let by: scopehold::domain::Actor = "member:root".parse().unwrap();
    let sealed = scopehold::domain::Sealed {
        wrapped_key: "00".into(),
        key_nonce: "00".into(),
        nonce: "00".into(),
        ciphertext: "00".into(),
    };
    let resolved = |identity: &str, version, pid| Event::SecretResolved {
        identity: identity.parse().unwrap(),
        secret: "openai/prod".parse().unwrap(),
        version,
        project: "demo".parse().unwrap(),
        grant: 1,
        pid: Some(pid),
        uid: 1000,
        at_ms: 0,
        from_host: None,
    };
    let events = vec![
        Event::MemberAdded {
            member: "root".parse().unwrap(),
            uid: 0,
            admin: true,
            by: "init".parse().unwrap(),
            host: None,
        },
        Event::ProjectCreated {
            project: "demo".parse().unwrap(),
            by: by.clone(),
        },
        Event::SecretStored {
            secret: "openai/prod".parse().unwrap(),
            projects: vec!["demo".parse().unwrap()],
            by: by.clone(),
        },
        Event::SecretVersionSealed {
            secret: "openai/prod".parse().unwrap(),
            version: 1,
            sealed: sealed.clone(),
        },
        Event::AgentCreated {
            agent: "summariser".parse().unwrap(),
            uid: None,
            by: by.clone(),
            host: None,
        },
        Event::AgentCreated {
            agent: "crawler".parse().unwrap(),
            uid: Some(1001),
            by: by.clone(),
            host: None,
        },
        Event::GrantCreated {
            grant: 1,
            identity: "agent:summariser".parse().unwrap(),
            secret: "openai/prod".parse().unwrap(),
            project: "demo".parse().unwrap(),
            expires_at_ms: None,
            max_uses: Some(100),
            rate_per_min: Some(30),
            uid: None,
            by: by.clone(),
            host: None,
        },
        resolved("agent:summariser", 1, 4242),
        Event::ResolutionDenied {
            identity: "agent:crawler".parse().unwrap(),
            secret: Some("openai/prod".parse().unwrap()),
            project: Some("demo".parse().unwrap()),
            reason: "not granted".into(),
            pid: Some(4343),
            uid: 1001,
            at_ms: 0,
            from_host: None,
        },
        Event::SecretVersionSealed {
            secret: "openai/prod".parse().unwrap(),
            version: 2,
            sealed,
        },
        Event::SecretRotated {
            secret: "openai/prod".parse().unwrap(),
            version: 2,
            grace_until_ms: None,
            by: by.clone(),
        },
        resolved("agent:summariser", 2, 4244),
        Event::AgentRevoked {
            agent: "crawler".parse().unwrap(),
            by,
        },
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

fn console(dir: &Path) -> Console {
    let key = LogKey::from_seed(&SEED).public();
    let (d, k) = (dir.to_path_buf(), key);
    let tables: scopehold_tui::TablesFn = Arc::new(move || {
        scopehold::daemon::replay(&d, &k)
            .map(|st| scopehold::cli::console::tables_of(&st))
            .map_err(|e| e.to_string())
    });
    let mut c = Console::open(Config {
        log_dir: dir.to_path_buf(),
        remote: None,
        bundle: None,
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

fn render(c: &mut Console) -> String {
    let mut t = Terminal::new(TestBackend::new(160, 24)).unwrap();
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
        .map(|line| {
            match (
                line.starts_with("verified up to"),
                line.find(", at "),
                line.find(" |"),
            ) {
                // The time a verification ran is the wall clock's: masked for the snapshot.
                (true, Some(a), Some(b)) if a < b => {
                    format!("{}, at <time>{}", &line[..a], &line[b..])
                }
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn press(c: &mut Console, code: KeyCode) {
    if let Some(a) = map_key(&c.app.mode, KeyEvent::new(code, KeyModifiers::NONE)) {
        c.act(a);
    }
}

fn type_str(c: &mut Console, s: &str) {
    for ch in s.chars() {
        press(c, KeyCode::Char(ch));
    }
}

#[test]
fn every_view_renders_as_snapshotted() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let mut c = console(d.path());
    // Audit, event 7 selected: its hash, prev and signing checkpoint in the detail pane.
    c.act(Action::Down(7));
    insta::assert_snapshot!("audit_view", render(&mut c));
    // Verified, with the result in the status bar.
    c.act(Action::Verify);
    c.wait_idle(Duration::from_secs(10));
    let screen = render(&mut c);
    assert!(screen.contains("verified up to 13 events"), "{screen}");
    // Filtered to denials.
    press(&mut c, KeyCode::Char('/'));
    type_str(&mut c, "denied");
    press(&mut c, KeyCode::Enter);
    c.wait_idle(Duration::from_secs(10));
    let screen = render(&mut c);
    assert!(
        screen.contains("Audit (1 events)") && screen.contains("DENIED (not granted)"),
        "{screen}"
    );
    press(&mut c, KeyCode::Esc);
    // Help overlay.
    press(&mut c, KeyCode::Char('?'));
    insta::assert_snapshot!("help_overlay", render(&mut c));
    press(&mut c, KeyCode::Esc);
    for (key, name) in [
        ('2', "secrets_view"),
        ('3', "identities_view"),
        ('4', "grants_view"),
    ] {
        press(&mut c, KeyCode::Char(key));
        let s = render(&mut c);
        insta::assert_snapshot!(name, s);
    }
    assert_eq!(c.app.view, View::Grants);
}

#[test]
fn a_jump_and_new_events_keep_the_selection() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let mut c = console(d.path());
    press(&mut c, KeyCode::Char(':'));
    type_str(&mut c, "9");
    press(&mut c, KeyCode::Enter);
    assert_eq!(c.app.selected_seq(), Some(9));
    // The daemon appends: the new event appears, the selection stays on event 9.
    let log = Log::open(d.path(), LogKey::from_seed(&SEED), LogOptions::default()).unwrap();
    log.append(Entry::public(
        scopehold::domain::EventKind::ProjectCreated.number(),
        serde_json::to_vec(&Event::ProjectCreated {
            project: "late".parse().unwrap(),
            by: "member:root".parse().unwrap(),
        })
        .unwrap(),
    ))
    .unwrap();
    log.close().unwrap();
    c.refresh();
    assert_eq!(c.app.total, 14);
    assert_eq!(c.app.selected_seq(), Some(9));
    press(&mut c, KeyCode::Char('G'));
    assert!(render(&mut c).contains("project_created"));
    assert_eq!(c.app.selected_seq(), Some(13));
}

/// tmux on a server of the session's own (`-L`, named after it), killed at the end, so no
/// server outlives a test and tests running in parallel never share one.
pub(crate) fn tmux(server: &str, args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(["-L", server])
        .args(args)
        .output()
        .expect("tmux is installed (.ci/run installs it)");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls the screen until it shows `want`: bounded by time, not by a count of polls, with a
/// budget generous enough for a loaded machine (a slow first frame once failed this test).
pub(crate) fn wait_screen(session: &str, want: &str) -> String {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        last = tmux(session, &["capture-pane", "-p", "-t", session]);
        if last.contains(want) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("screen never showed {want:?}; last screen:\n{last}");
}

pub(crate) struct Session(pub String);

/// `q`, and the program must end (the session ends with it) within 5 s: the terminal was
/// restored and nothing held it open.
pub(crate) fn quit(session: &Session) {
    tmux(&session.0, &["send-keys", "-t", &session.0, "q"]);
    for _ in 0..50 {
        if !tmux(&session.0, &["list-sessions"]).contains(&session.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !tmux(&session.0, &["list-sessions"]).contains(&session.0),
        "the console did not quit"
    );
}
impl Drop for Session {
    fn drop(&mut self) {
        tmux(&self.0, &["kill-server"]);
    }
}

#[test]
fn the_console_in_tmux_against_the_real_daemon() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let sock = t.path().join("s.sock");
    let bin = env!("CARGO_BIN_EXE_scopehold");
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut c = Command::new(bin);
        c.env("SCOPEHOLD_HOME", &home)
            .env("SCOPEHOLD_SOCKET", &sock)
            .args(args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(ch.stdin.take());
        String::from_utf8(ch.wait_with_output().unwrap().stdout).unwrap()
    };
    let mut daemon = Command::new(bin)
        .env("SCOPEHOLD_HOME", &home)
        .env("SCOPEHOLD_SOCKET", &sock)
        .arg("daemon")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sock.exists(), "the daemon did not start");
    cli(&["project", "create", "demo"], None);
    cli(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some("sk-tmux-canary"),
    );
    let cred = cli(&["agent", "create", "bot"], None)
        .lines()
        .last()
        .unwrap()
        .to_string();
    cli(
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
    let resolve = || {
        Command::new(bin)
            .env("SCOPEHOLD_SOCKET", &sock)
            .env("SCOPEHOLD_TOKEN", &cred)
            .args(["resolve", "openai/prod", "--project", "demo"])
            .output()
            .unwrap()
    };
    assert!(resolve().status.success());

    let session = Session(format!("sh-{}", std::process::id()));
    let cmd = format!(
        "SCOPEHOLD_HOME={} SCOPEHOLD_SOCKET={} NO_COLOR=1 {bin} console",
        home.display(),
        sock.display()
    );
    tmux(
        &session.0,
        &[
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "32",
            &cmd,
        ],
    );
    wait_screen(&session.0, "secret_resolved");
    // Verify: the status bar says so.
    tmux(&session.0, &["send-keys", "-t", &session.0, "v"]);
    wait_screen(&session.0, "verified up to");
    // Filter to the agent, open the detail pane.
    tmux(&session.0, &["send-keys", "-t", &session.0, "/"]);
    tmux(
        &session.0,
        &["send-keys", "-t", &session.0, "-l", "identity=bot"],
    );
    tmux(&session.0, &["send-keys", "-t", &session.0, "Enter"]);
    // The scan runs in the background; the agent's two events remain (its grant, its
    // resolution).
    let s = wait_screen(&session.0, "Audit (2 events)");
    assert!(
        s.contains("filter: identity=bot") && !s.contains("project_created"),
        "{s}"
    );
    tmux(&session.0, &["send-keys", "-t", &session.0, "G", "Tab"]);
    let s = wait_screen(&session.0, "signed by");
    assert!(s.contains("granted v1"), "{s}");
    // Live: a new resolution appears in the filtered view while the console is open.
    assert!(resolve().status.success());
    let s = wait_screen(&session.0, "Audit (3 events)");
    assert!(
        !s.contains("sk-tmux-canary"),
        "the console shows a secret value:\n{s}"
    );
    // Revoke the grant from the Grants view: asked first, No by default.
    // Esc alone (followed at once by a key, a terminal reads it as Alt+key).
    tmux(&session.0, &["send-keys", "-t", &session.0, "Escape"]);
    wait_screen(&session.0, "project_created");
    tmux(&session.0, &["send-keys", "-t", &session.0, "4"]);
    wait_screen(&session.0, "agent:bot");
    tmux(&session.0, &["send-keys", "-t", &session.0, "r"]);
    wait_screen(&session.0, "Revoke grant 1? [y/N]");
    tmux(&session.0, &["send-keys", "-t", &session.0, "Enter"]);
    wait_screen(&session.0, "not done: revoke grant 1");
    assert!(resolve().status.success(), "a No must change nothing");
    tmux(&session.0, &["send-keys", "-t", &session.0, "r"]);
    wait_screen(&session.0, "Revoke grant 1? [y/N]");
    tmux(&session.0, &["send-keys", "-t", &session.0, "y"]);
    wait_screen(&session.0, "done: revoke grant 1");
    assert_eq!(
        resolve().status.code(),
        Some(3),
        "the revoked grant still resolves"
    );
    // The revocation's event appears in the audit view.
    tmux(&session.0, &["send-keys", "-t", &session.0, "1", "G"]);
    wait_screen(&session.0, "grant_revoked");
    // q quits and the terminal is restored (the session ends with the program).
    quit(&session);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
}

#[test]
fn auditor_mode_opens_a_verified_bundle_read_only_and_refuses_a_tampered_one() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let key = LogKey::from_seed(&SEED).public();
    let reader = scopehold_log::LogReader::open(d.path(), None).unwrap();
    let mut bytes = Vec::new();
    scopehold_log::export(&reader, &key, 3, Some(9), &mut bytes).unwrap();
    let path = d.path().join("audit.bundle");
    std::fs::write(&path, &bytes).unwrap();
    let open = |p: &Path| {
        Console::open(Config {
            log_dir: std::path::PathBuf::new(),
            remote: None,
            bundle: Some(p.to_path_buf()),
            key,
            decoder: scopehold::cli::console::decoder(),
            tables: None,
            actions: None,
            color: false,
        })
    };
    let mut c = open(&path).unwrap();
    assert_eq!((c.app.first, c.app.total), (3, 7));
    assert_eq!(c.app.selected_seq(), Some(3));
    let s = render(&mut c);
    assert!(
        s.contains("[read-only bundle]") && s.contains("verified up to 10 events"),
        "{s}"
    );
    // Event 3 is secret-bearing: left out of the bundle, and said so.
    assert!(s.contains("left out of the bundle"), "{s}");
    press(&mut c, KeyCode::Char('G'));
    assert_eq!(c.app.selected_seq(), Some(9));
    // Nothing can be changed from a bundle.
    press(&mut c, KeyCode::Char('4'));
    press(&mut c, KeyCode::Char('r'));
    assert!(c.app.message.as_deref().unwrap_or("").contains("read-only"));
    // Filters work on the bundle too.
    press(&mut c, KeyCode::Char('/'));
    type_str(&mut c, "denied");
    press(&mut c, KeyCode::Enter);
    c.wait_idle(Duration::from_secs(10));
    assert_eq!(c.app.filtered.as_deref(), Some(&[8u64][..]));

    // One changed byte: the console refuses to show it.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    let bad_path = d.path().join("bad.bundle");
    std::fs::write(&bad_path, &bad).unwrap();
    let err = open(&bad_path).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn auditor_mode_in_tmux_needs_only_the_bundle_and_the_key() {
    let d = tempfile::tempdir().unwrap();
    story(d.path());
    let key = LogKey::from_seed(&SEED).public();
    let reader = scopehold_log::LogReader::open(d.path(), None).unwrap();
    let path = d.path().join("audit.bundle");
    scopehold_log::export_to_file(&reader, &key, 0, None, &path).unwrap();
    let session = Session(format!("shb-{}", std::process::id()));
    let cmd = format!(
        "SCOPEHOLD_HOME=/nonexistent/state NO_COLOR=1 {} console --bundle {} --key {}",
        env!("CARGO_BIN_EXE_scopehold"),
        path.display(),
        key.to_hex()
    );
    tmux(
        &session.0,
        &[
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "32",
            &cmd,
        ],
    );
    // Verification runs on its own thread: its verdict comes after the first frame.
    let s = wait_screen(&session.0, "verified up to 13 events");
    assert!(s.contains("[read-only bundle]"), "{s}");
    quit(&session);
    assert!(!Path::new("/nonexistent/state").exists());
}
