//! Rotation and revocation reaching running agents: `POST /v1/watch` (a long poll the daemon
//! answers when a held value changes) and `scopehold run --watch` (restarts its child on a
//! rotation, stops it on a revocation). Every test runs the `scopehold` binary as daemon and
//! as CLI, on a real socket and real log files.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scopehold_log::LogReader;
use serde_json::{Value, json};

use crate::common::{Daemon, term, wait_bounded};

const CANARY: &str = "sk-live-CANARY-watch-1f2e3d";

/// The value of version `v`.
fn value(v: u32) -> String {
    format!("{CANARY}-v{v}")
}

/// What these tests add to the shared daemon.
trait Watching {
    fn world(&self) -> String;
    fn rotate(&self, v: u32);
    fn run_watch(&self, cred: &str, cmd: &str) -> std::process::Child;
    fn run_watch_grace(&self, cred: &str, cmd: &str, grace: &str) -> std::process::Child;
    fn resolutions(&self) -> usize;
}

impl Watching for Daemon {
    /// `demo` with `openai/prod` at version 1, agent `bot` granted it; bot's credential.
    fn world(&self) -> String {
        self.ok(&["project", "create", "demo"], None);
        self.ok(
            &["secret", "put", "openai/prod", "--project", "demo"],
            Some(&format!("{}\n", value(1))),
        );
        let cred = self
            .ok(&["agent", "create", "bot"], None)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let g = self.ok(
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
        assert_eq!(g.trim(), "1");
        cred
    }

    fn rotate(&self, v: u32) {
        self.ok(
            &["secret", "rotate", "openai/prod"],
            Some(&format!("{}\n", value(v))),
        );
    }

    /// `scopehold run --watch` with `cmd` as its child (`KEY` holds openai/prod).
    fn run_watch(&self, cred: &str, cmd: &str) -> std::process::Child {
        self.run_watch_grace(cred, cmd, "5")
    }

    fn run_watch_grace(&self, cred: &str, cmd: &str, grace: &str) -> std::process::Child {
        self.bin()
            .args([
                "run",
                "--watch",
                "--stop-grace",
                grace,
                "--project",
                "demo",
                "--env",
                "KEY=openai/prod",
                "--",
                "sh",
                "-c",
                cmd,
            ])
            .env("SCOPEHOLD_TOKEN", cred)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The number of resolutions the log holds (read from the files, after the daemon stops
    /// or while it runs: the reader takes no lock).
    fn resolutions(&self) -> usize {
        let r = LogReader::open(&self.home.join("log"), None).unwrap();
        r.events_from(0)
            .unwrap()
            .filter(|rec| {
                let rec = rec.as_ref().unwrap();
                let body = rec.body.as_ref().unwrap();
                matches!(
                    scopehold::domain::Event::from_body(rec.envelope.kind, &body.bytes).unwrap(),
                    scopehold::domain::Event::SecretResolved { .. }
                )
            })
            .count()
    }
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Waits (bounded) until `file` has `n` lines, and returns them.
fn lines(file: &Path, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let got: Vec<String> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} has {} lines, not {n}: {got:?}",
            file.display(),
            got.len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A child line: `pid value start_ns`.
fn parse(line: &str) -> (i32, String, u128) {
    let mut w = line.split_whitespace();
    let pid = w.next().unwrap().parse().unwrap();
    let v = w.next().unwrap().to_string();
    let ns = w.next().unwrap().parse().unwrap();
    (pid, v, ns)
}

/// The child every `run --watch` test starts: one line per start (its pid, the value it was
/// given, when it started), then it sleeps (as `exec`, so SIGTERM reaches the sleeper).
fn recorder(out: &Path) -> String {
    format!(
        "echo \"$$ $KEY $(date +%s%N)\" >> {}; exec sleep 600",
        out.display()
    )
}

fn stderr_of(mut c: std::process::Child) -> String {
    let mut s = String::new();
    c.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

fn assert_no_canary(what: &str, s: &str) {
    assert!(!s.contains("CANARY"), "{what} holds a value: {s}");
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn run_watch_restarts_the_child_on_each_rotation_and_stops_it_with_3_when_the_grant_is_revoked() {
    let d = Daemon::start();
    let cred = d.world();
    let out = d.t.path().join("starts");
    let mut run = d.run_watch(&cred, &recorder(&out));
    let first = lines(&out, 1);
    let (mut pid, v, _) = parse(&first[0]);
    assert_eq!(v, value(1));
    // Each rotation: the old child is stopped, a new one starts with the new value. The
    // time from `secret rotate` returning to the new child's start is the push's latency.
    let mut latencies = Vec::new();
    for version in 2..=6u32 {
        let before = now_ns();
        d.rotate(version);
        let rotated = now_ns();
        let got = lines(&out, version as usize);
        let (new_pid, v, started) = parse(&got[version as usize - 1]);
        assert_eq!(v, value(version), "restarted with the new value");
        assert_ne!(new_pid, pid);
        assert!(!alive(pid), "the old child {pid} was stopped");
        assert!(started > before, "started after the rotation");
        latencies.push(started.saturating_sub(rotated) as f64 / 1e6);
        pid = new_pid;
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "rotate returned -> new child started: median {:.1} ms (min {:.1}, max {:.1}, n={})",
        latencies[latencies.len() / 2],
        latencies[0],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    // One resolution per start, recorded; the watch answers themselves record nothing.
    assert_eq!(d.resolutions(), 6);
    // The grant revoked: the child is stopped, `run` exits 3 and says why.
    d.ok(&["grant", "revoke", "1"], None);
    let status = wait_bounded(&mut run, Duration::from_secs(20)).expect("run did not exit");
    assert_eq!(status.code(), Some(3));
    assert!(!alive(pid), "the child was stopped");
    let err = stderr_of(run);
    for version in 2..=6 {
        assert!(
            err.contains(&format!(
                "openai/prod was rotated to version {version}; restarting the command"
            )),
            "{err}"
        );
    }
    assert!(
        err.contains("access to openai/prod in project demo ended")
            && err.contains("the command was stopped"),
        "{err}"
    );
    assert_no_canary("run's output", &err);
    assert_eq!(
        lines(&out, 6).len(),
        6,
        "not started again after the revocation"
    );
}

#[test]
fn run_watch_stops_the_child_with_3_when_the_secret_is_revoked_or_the_agent_is() {
    let d = Daemon::start();
    let cred = d.world();
    // Secret revoked.
    let out = d.t.path().join("a");
    let mut run = d.run_watch(&cred, &recorder(&out));
    let (pid, _, _) = parse(&lines(&out, 1)[0]);
    d.ok(&["secret", "revoke", "openai/prod"], None);
    let status = wait_bounded(&mut run, Duration::from_secs(20)).expect("run did not exit");
    assert_eq!(status.code(), Some(3));
    assert!(!alive(pid));
    let err = stderr_of(run);
    assert!(
        err.contains("openai/prod was revoked; the command was stopped"),
        "{err}"
    );

    // Agent revoked (another secret, so the first revocation is out of the way).
    d.ok(
        &["secret", "put", "github/ci", "--project", "demo"],
        Some(&format!("{}\n", value(1))),
    );
    d.ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "github/ci",
            "--project",
            "demo",
        ],
        None,
    );
    let out = d.t.path().join("b");
    let mut run = d
        .bin()
        .args(["run", "--watch", "--project", "demo"])
        .args(["--env", "GITHUB_CI=github/ci", "--", "sh", "-c"])
        .arg(format!(
            "echo \"$$ $GITHUB_CI 0\" >> {}; exec sleep 600",
            out.display()
        ))
        .env("SCOPEHOLD_TOKEN", &cred)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, v, _) = parse(&lines(&out, 1)[0]);
    assert_eq!(v, value(1));
    d.ok(&["agent", "revoke", "bot"], None);
    let status = wait_bounded(&mut run, Duration::from_secs(20)).expect("run did not exit");
    assert_eq!(status.code(), Some(3));
    assert!(!alive(pid));
    assert!(stderr_of(run).contains("the command was stopped"));
}

#[test]
fn a_grant_that_expires_stops_the_child_at_its_expiry_with_no_event_to_wake_the_watch() {
    let d = Daemon::start();
    d.ok(&["project", "create", "demo"], None);
    d.ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&format!("{}\n", value(1))),
    );
    let cred = d
        .ok(&["agent", "create", "bot"], None)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let granted = Instant::now();
    d.ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
            "--ttl",
            "2s",
        ],
        None,
    );
    let out = d.t.path().join("starts");
    let mut run = d.run_watch(&cred, &recorder(&out));
    let (pid, _, _) = parse(&lines(&out, 1)[0]);
    let status = wait_bounded(&mut run, Duration::from_secs(20)).expect("run did not exit");
    let took = granted.elapsed();
    assert_eq!(status.code(), Some(3));
    assert!(!alive(pid));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "stopped {took:?} after a 2 s grant"
    );
    assert!(stderr_of(run).contains("access to openai/prod in project demo ended"));
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_once_the_grace_has_passed() {
    let d = Daemon::start();
    let cred = d.world();
    let out = d.t.path().join("starts");
    // Ignores SIGTERM (and so does its sleep), until SIGKILL.
    let cmd = format!(
        "trap '' TERM; echo \"$$ $KEY $(date +%s%N)\" >> {}; while :; do sleep 0.05; done",
        out.display()
    );
    let mut run = d.run_watch_grace(&cred, &cmd, "1");
    let (pid, _, _) = parse(&lines(&out, 1)[0]);
    let rotated = now_ns();
    d.rotate(2);
    let (new_pid, v, started) = parse(&lines(&out, 2)[1]);
    assert_eq!(v, value(2));
    assert!(!alive(pid), "killed");
    assert_ne!(new_pid, pid);
    let waited = Duration::from_nanos((started - rotated) as u64);
    assert!(
        waited >= Duration::from_millis(900),
        "restarted after {waited:?}, before the grace of 1 s ended"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = wait_bounded(&mut run, Duration::from_secs(20)).expect("run did not exit");
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "the child's end passed through"
    );
}

#[test]
fn run_watch_passes_through_the_status_of_a_child_that_exits_by_itself_without_restarting_it() {
    let d = Daemon::start();
    let cred = d.world();
    let out = d.t.path().join("starts");
    let mut run = d.run_watch(&cred, &format!("echo $$ >> {}; exit 7", out.display()));
    let status = wait_bounded(&mut run, Duration::from_secs(20)).expect("run did not exit");
    assert_eq!(status.code(), Some(7));
    assert_eq!(lines(&out, 1).len(), 1, "started once");
    assert_eq!(stderr_of(run), "", "nothing to say");
}

/// Sends a raw HTTP request; the connection, to read the answer from.
fn send(socket: &Path, body: &str, token: Option<&str>) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST /v1/watch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Reads the whole answer (bounded): status and JSON body.
fn answer(mut s: UnixStream, limit: Duration) -> (u16, Value) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("an answer in time");
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

/// Whether an answer arrives on `s` within `d` (the connection stays usable if not).
fn answered_within(s: &mut UnixStream, d: Duration) -> bool {
    s.set_read_timeout(Some(d)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        // A byte of an answer, or the connection closed: either way, no longer waiting.
        Ok(0 | 1) => true,
        Ok(_) => unreachable!("one byte asked for"),
        Err(e) => {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            );
            false
        }
    }
}

fn holds(version: u32) -> String {
    json!({"holds": [{"secret": "openai/prod", "project": "demo", "version": version}]}).to_string()
}

#[test]
fn a_watch_waits_while_nothing_changes_and_daemon_shutdown_ends_it_promptly() {
    let mut d = Daemon::start();
    let cred = d.world();
    let mut w = send(&d.socket, &holds(1), Some(&cred));
    assert!(
        !answered_within(&mut w, Duration::from_millis(1500)),
        "answered with nothing changed"
    );
    // Events that change nothing held (a resolution, a new project, a new grant) leave it
    // waiting; so does a rotation of another secret.
    d.ok(&["project", "create", "other"], None);
    d.ok(
        &["secret", "put", "github/ci", "--project", "demo"],
        Some(&format!("{}\n", value(1))),
    );
    d.ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "github/ci",
            "--project",
            "demo",
        ],
        None,
    );
    d.ok(
        &["secret", "rotate", "github/ci"],
        Some(&format!("{}\n", value(2))),
    );
    let r = d.cli(
        &["resolve", "openai/prod", "--project", "demo"],
        None,
        Some(&cred),
    );
    assert!(r.status.success());
    assert!(
        !answered_within(&mut w, Duration::from_millis(1000)),
        "answered after unrelated changes"
    );
    // SIGTERM: the waiting watch is answered at once with `stopping` (nothing changed), and
    // the daemon's drain is not held up by it.
    let start = Instant::now();
    let pid = d.child.as_ref().unwrap().id();
    term(pid);
    let (status, body) = answer(w, Duration::from_secs(5));
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "stopping", "{body}");
    let mut c = d.child.take().unwrap();
    let exit = wait_bounded(&mut c, Duration::from_secs(20)).expect("the daemon did not stop");
    assert_eq!(exit.code(), Some(0));
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?}: the drain waited for the watch"
    );
}

#[test]
fn the_watch_route_refuses_bad_bodies_and_answers_unheld_secrets_alike_without_waiting() {
    let d = Daemon::start();
    let cred = d.world();
    d.ok(
        &["secret", "put", "github/ci", "--project", "demo"],
        Some(&format!("{}\n", value(1))),
    );
    let too_many = json!({"holds": (0..65).map(|_| json!({"secret": "openai/prod", "project": "demo", "version": 1})).collect::<Vec<_>>()}).to_string();
    for (body, why) in [
        ("{", "not JSON"),
        (r#"{"holds": []}"#, "nothing held"),
        (too_many.as_str(), "too many"),
        (
            r#"{"holds": [{"secret": "openai/prod", "project": "demo"}]}"#,
            "no version",
        ),
        (
            r#"{"holds": [{"secret": "../etc", "project": "demo", "version": 1}]}"#,
            "bad name",
        ),
        (
            r#"{"holds": [], "value": "sk-live-CANARY-in-body"}"#,
            "unknown field",
        ),
    ] {
        let (status, b) = answer(send(&d.socket, body, Some(&cred)), Duration::from_secs(5));
        assert_eq!(status, 400, "{why}: {b}");
        assert_eq!(b["error"]["code"], "invalid_request", "{why}");
        assert_no_canary("an error", &b.to_string());
    }
    // A credential that is not one: refused before the body is read.
    let (status, _) = answer(
        send(&d.socket, &holds(1), Some("shk_nope")),
        Duration::from_secs(5),
    );
    assert_eq!(status, 401);
    // A secret the caller holds no grant for (existing: github/ci; or not: nope/none) is
    // answered at once, alike, as "access ended": a watch tells an agent nothing about which
    // secrets exist (a refusal naming "no such secret" would), and no more than a denied
    // resolution tells it. Neither carries a version.
    let unheld = |secret: &str| {
        let body =
            json!({"holds": [{"secret": secret, "project": "demo", "version": 1}]}).to_string();
        answer(send(&d.socket, &body, Some(&cred)), Duration::from_secs(5))
    };
    let (s1, a1) = unheld("github/ci");
    let (s2, a2) = unheld("nope/none");
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        a1,
        json!({"secret": "github/ci", "project": "demo", "change": "access_ended"})
    );
    assert_eq!(
        a2,
        json!({"secret": "nope/none", "project": "demo", "change": "access_ended"})
    );
    // A held version that is not current is answered at once with the current one.
    d.rotate(2);
    let (s, a) = answer(
        send(&d.socket, &holds(1), Some(&cred)),
        Duration::from_secs(5),
    );
    assert_eq!(s, 200);
    assert_eq!(
        a,
        json!({"secret": "openai/prod", "project": "demo", "change": "rotated", "version": 2})
    );
    // The daemon kept serving through all of it.
    let r = d.cli(
        &["resolve", "openai/prod", "--project", "demo"],
        None,
        Some(&cred),
    );
    assert_eq!(String::from_utf8(r.stdout).unwrap(), value(2));
}

#[test]
fn a_watch_whose_caller_hangs_up_gives_its_connection_slot_back() {
    let d = Daemon::start();
    let cred = d.world();
    // As many waiting watches as one uid may hold connections (the daemon's per-uid cap).
    let cap = scopehold::daemon::server::MAX_CONNECTIONS_PER_UID;
    let mut waiting: Vec<UnixStream> = (0..cap)
        .map(|_| send(&d.socket, &holds(1), Some(&cred)))
        .collect();
    for w in &mut waiting[..1] {
        assert!(!answered_within(w, Duration::from_millis(500)));
    }
    // The slots are taken: one more connection from this uid is refused (closed unanswered).
    let health = |limit: Duration| -> Option<u16> {
        let mut s = UnixStream::connect(&d.socket).ok()?;
        s.set_read_timeout(Some(limit)).unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.split_whitespace().nth(1)?.parse().ok()
    };
    assert_eq!(health(Duration::from_secs(5)), None, "the cap holds");
    // Every caller hangs up: each watch ends with its connection and the slots come back
    // (bounded wait), though nothing changed that would have answered them.
    drop(waiting);
    let start = Instant::now();
    loop {
        if health(Duration::from_secs(5)) == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "hung-up watches still hold their slots"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn when_the_daemon_goes_away_the_child_keeps_running_and_the_watch_resumes_when_it_is_back() {
    let mut d = Daemon::start();
    let cred = d.world();
    let out = d.t.path().join("starts");
    let mut run = d.run_watch(&cred, &recorder(&out));
    let (pid, _, _) = parse(&lines(&out, 1)[0]);
    assert_eq!(d.stop().code(), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(pid),
        "the child keeps running while the daemon is away"
    );
    assert!(run.try_wait().unwrap().is_none(), "run keeps waiting");
    d.run();
    // A rotation made once the daemon is back reaches the child: the watch was made again
    // when the socket came back (no timer: the fallback is a minute, this waits 20 s at most).
    d.rotate(2);
    let got = lines(&out, 2);
    let (new_pid, v, _) = parse(&got[1]);
    assert_eq!(v, value(2));
    assert!(new_pid != pid && !alive(pid));
    term(run.id());
    let _ = wait_bounded(&mut run, Duration::from_secs(20));
    let err = stderr_of(run);
    assert!(
        err.contains("the daemon went away") && err.contains("the command keeps running"),
        "{err}"
    );
    assert_no_canary("run's output", &err);
}
