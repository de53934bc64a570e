//! The CLI's conventions, with the real binary and (where one is needed) the real daemon on
//! a real socket: a closed pipe ends a command quietly, `--json` on every command and every
//! error, `log show`'s window, limit, project and follow, a value over the limit and an
//! unreachable socket said plainly, a help line for everything, the default project.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scopehold::domain::{Actor, Event};
use scopehold_log::{Log, LogKey, LogOptions};
use serde_json::Value;

const CANARY: &str = "sk-CANARY-conventions-5d1c";

/// The binary with nothing of the developer's environment that would change its defaults.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    c.env_remove("SCOPEHOLD_HOME")
        .env_remove("SCOPEHOLD_SOCKET")
        .env_remove("SCOPEHOLD_TOKEN")
        .env_remove("SCOPEHOLD_PROJECT")
        .env_remove("SCOPEHOLD_CHECKPOINT_FILE")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", "/nonexistent-home");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one JSON error line a failed `--json` command leaves on standard error.
fn json_error(o: &Output) -> Value {
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        v["error"]["exit"].as_i64(),
        o.status.code().map(i64::from),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    v["error"].clone()
}

/// Every line of standard output is one JSON object.
fn json_lines(o: &Output) -> Vec<Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A daemon of the test's own (the binary), on its own state directory and socket.
struct Daemon {
    dir: tempfile::TempDir,
    home: PathBuf,
    sock: PathBuf,
    child: std::process::Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("state");
        let sock = dir.path().join("s.sock");
        let child = bin()
            .env("SCOPEHOLD_HOME", &home)
            .env("SCOPEHOLD_SOCKET", &sock)
            .arg("daemon")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Self {
            dir,
            home,
            sock,
            child,
        };
        let t = Instant::now();
        while !d.sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(20), "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("SCOPEHOLD_HOME", &self.home)
            .env("SCOPEHOLD_SOCKET", &self.sock);
        c
    }

    /// Runs `args` with `stdin` (write errors ignored: the CLI may stop reading early).
    fn run_with(&self, mut c: Command, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut ch = c
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = ch.stdin.take().unwrap();
        let data = stdin.map(|s| s.to_vec());
        let feeder = std::thread::spawn(move || {
            if let Some(d) = data {
                let _ = input.write_all(&d);
            }
        });
        let o = ch.wait_with_output().unwrap();
        feeder.join().unwrap();
        o
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(self.cmd(), args, stdin.map(str::as_bytes))
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let o = self.run(args, stdin);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        o
    }

    /// `--json log show ARGS`, the events.
    fn shown(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json", "log", "show"];
        all.extend_from_slice(args);
        json_lines(&self.ok(&all, None))
    }
}

fn seqs(v: &[Value]) -> Vec<u64> {
    v.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn kinds_and(v: &[Value], field: &str) -> Vec<(String, String)> {
    v.iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["event"][field].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_closed_pipe_ends_log_show_quietly() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let o = bin().arg("--home").arg(&home).arg("init").output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // 20 000 real events: far more output than a pipe holds, so the command is still
    // writing when its reader goes away.
    let log = Log::open(
        &home.join("log"),
        LogKey::load(&home.join("log.key")).unwrap(),
        LogOptions {
            checkpoint_file: Some(home.join("checkpoint")),
            ..LogOptions::default()
        },
    )
    .unwrap();
    for chunk in 0..20 {
        let batch = (0..1000)
            .map(|i| {
                Event::ProjectCreated {
                    project: format!("p{chunk}-{i}").parse().unwrap(),
                    by: Actor::Init,
                }
                .to_entry()
                .unwrap()
            })
            .collect();
        log.append_batch(batch).unwrap();
    }
    log.close().unwrap();

    for json in [false, true] {
        let mut c = bin();
        c.arg("--home").arg(&home);
        if json {
            c.arg("--json");
        }
        let mut ch = c
            .args(["log", "show"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -1`: one line read, then the pipe closed.
        let mut out = BufReader::new(ch.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        drop(out);
        let mut err = String::new();
        ch.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = ch.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.code() == Some(0) || status.code() == Some(141) || status.signal() == Some(13),
            "json={json}: {status:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.is_empty(), "quietly: {err}");
    }
}

#[test]
fn every_command_prints_json_and_every_error_is_one_json_line() {
    let mut d = Daemon::start();
    let j = |args: &[&str], stdin: Option<&str>| -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let o = d.ok(&all, stdin);
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o.stderr));
        let v = json_lines(&o);
        assert!(!v.is_empty(), "{args:?} printed nothing");
        v
    };
    assert_eq!(
        j(&["project", "create", "demo"], None)[0]["project"],
        "demo"
    );
    j(&["project", "list"], None);
    assert_eq!(
        j(
            &["secret", "put", "openai/prod", "--project", "demo"],
            Some(CANARY)
        )[0]["version"],
        1
    );
    let cred = j(&["agent", "create", "bot"], None)[0]["credential"]
        .as_str()
        .unwrap()
        .to_string();
    j(&["agent", "list"], None);
    j(&["member", "add", "alice", "--uid", "4242"], None);
    j(&["member", "list"], None);
    let grant = j(
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
        ],
        None,
    )[0]["grant"]
        .as_u64()
        .unwrap();
    j(&["grant", "list"], None);
    j(&["secret", "list"], None);
    j(&["provider", "list"], None);
    j(&["provider", "show", "openai"], None);
    let mut c = d.cmd();
    c.env("SCOPEHOLD_TOKEN", &cred);
    let o = d.run_with(
        c,
        &["--json", "resolve", "openai/prod", "--project", "demo"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json_lines(&o)[0]["value"], CANARY);
    j(
        &["secret", "rotate", "openai/prod"],
        Some("sk-rotated-value"),
    );
    j(&["agent", "reissue", "bot"], None);
    j(&["grant", "revoke", &grant.to_string()], None);
    j(&["agent", "revoke", "bot"], None);
    j(&["secret", "revoke", "openai/prod"], None);
    j(&["log", "show"], None);
    j(&["log", "verify"], None);
    let bundle = d.dir.path().join("audit.bundle");
    j(&["log", "export", "--out", bundle.to_str().unwrap()], None);
    let kept = d.dir.path().join("kept.txt");
    j(
        &["log", "checkpoint", "--out", kept.to_str().unwrap()],
        None,
    );
    // Without --out: JSON too, holding the checkpoint's text, which verify takes back.
    let cp = &j(&["log", "checkpoint"], None)[0];
    assert!(cp["size"].as_u64().unwrap() > 0);
    let own = d.dir.path().join("own.txt");
    std::fs::write(&own, cp["checkpoint"].as_str().unwrap()).unwrap();
    j(
        &[
            "log",
            "verify",
            "--trusted-checkpoint",
            own.to_str().unwrap(),
        ],
        None,
    );
    j(&["doctor"], None);

    // Errors: one JSON line on stderr, nothing on stdout.
    let err = |args: &[&str], token: Option<&str>| {
        let mut c = d.cmd();
        if let Some(t) = token {
            c.env("SCOPEHOLD_TOKEN", t);
        }
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let o = d.run_with(c, &all, None);
        assert!(!o.status.success(), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o.stdout));
        json_error(&o)
    };
    let e = err(&["grant", "create", "agent:bot"], None);
    assert_eq!(
        (e["code"].as_str(), e["exit"].as_i64()),
        (Some("usage"), Some(2))
    );
    assert!(e.get("status").is_none());
    let e = err(&["grant", "revoke", "999"], None);
    assert_eq!(
        (e["code"].as_str(), e["status"].as_u64(), e["exit"].as_i64()),
        (Some("not_found"), Some(404), Some(1)),
        "{e}"
    );
    let e = err(&["project", "create", "demo"], None);
    assert_eq!(
        (e["code"].as_str(), e["status"].as_u64()),
        (Some("conflict"), Some(409))
    );
    let e = err(
        &["resolve", "openai/prod", "--project", "demo"],
        Some("shk_not-a-credential"),
    );
    assert_eq!(
        (e["code"].as_str(), e["status"].as_u64(), e["exit"].as_i64()),
        (Some("unauthenticated"), Some(401), Some(3))
    );
    let e = err(
        &["--socket", "/nonexistent/scopehold.sock", "project", "list"],
        None,
    );
    assert_eq!(
        (e["code"].as_str(), e["exit"].as_i64()),
        (Some("daemon_unreachable"), Some(4))
    );
    let e = err(&["log", "show", "--since", "yesterday-ish"], None);
    assert_eq!(e["code"], "usage");

    // A verification failure: the report on stdout (as before), the error on stderr.
    d.child_stop();
    let seg = std::fs::read_dir(d.home.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let r = scopehold_log::LogReader::open(&d.home.join("log"), None).unwrap();
    let e2 = r.get(2).unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let pos = bytes
        .windows(e2.envelope_bytes.len())
        .position(|w| w == &e2.envelope_bytes[..])
        .unwrap();
    bytes[pos + 5] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let o = d.run(&["--json", "log", "verify"], None);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(json_lines(&o)[0]["ok"], false);
    let e = json_error(&o);
    assert_eq!(e["code"], "verification_failed");
}

impl Daemon {
    /// Stops the daemon (kill), leaving its state directory for the test.
    fn child_stop(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap();
    }
}

#[test]
fn log_show_filters_by_time_limit_and_project() {
    let d = Daemon::start();
    d.ok(&["project", "create", "alpha"], None);
    d.ok(
        &["secret", "put", "x/one", "--project", "alpha"],
        Some(CANARY),
    );
    d.ok(&["agent", "create", "bot"], None);
    let g = d.ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "x/one",
            "--project",
            "alpha",
        ],
        None,
    );
    let g = text(&g.stdout).trim().to_string();
    std::thread::sleep(Duration::from_millis(30));
    let cut = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(30));
    d.ok(&["project", "create", "beta"], None);
    d.ok(
        &["secret", "put", "x/two", "--project", "beta"],
        Some(CANARY),
    );
    d.ok(&["grant", "revoke", &g], None);

    let all = d.shown(&[]);
    let before = d.shown(&["--until", &cut]);
    let after = d.shown(&["--since", &cut]);
    assert!(!before.is_empty() && !after.is_empty());
    let mut joined = seqs(&before);
    joined.extend(seqs(&after));
    assert_eq!(joined, seqs(&all), "the cut splits the log in two");
    assert!(kinds_and(&before, "project").contains(&("project_created".into(), "alpha".into())));
    assert!(kinds_and(&after, "project").contains(&("project_created".into(), "beta".into())));
    assert!(!kinds_and(&after, "project").contains(&("project_created".into(), "alpha".into())));
    // A duration means that long ago; an RFC 3339 time with an offset is understood.
    assert_eq!(seqs(&d.shown(&["--since", "1h"])), seqs(&all));
    assert!(d.shown(&["--until", "1h"]).is_empty());
    assert_eq!(
        seqs(&d.shown(&["--since", "2000-01-01T02:00:00+02:00"])),
        seqs(&all)
    );
    // The last N matching.
    let all_seqs = seqs(&all);
    assert_eq!(
        seqs(&d.shown(&["--limit", "2"])),
        all_seqs[all_seqs.len() - 2..]
    );
    let created = d.shown(&["--kind", "project_created", "--limit", "1"]);
    assert_eq!(
        kinds_and(&created, "project"),
        [("project_created".into(), "beta".into())]
    );
    // The text form too: header, then exactly the last 2.
    let o = d.ok(&["log", "show", "--limit", "2"], None);
    assert_eq!(text(&o.stdout).lines().count(), 3, "{}", text(&o.stdout));
    // --project: what names it, and the revocation of a grant made in it.
    let alpha = d.shown(&["--project", "alpha"]);
    let kinds: Vec<&str> = alpha.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "project_created",
            "secret_stored",
            "grant_created",
            "grant_revoked"
        ],
        "{alpha:?}"
    );
    let beta = d.shown(&["--project", "beta"]);
    assert_eq!(beta.len(), 2, "{beta:?}");
    assert!(d.shown(&["--project", "gamma"]).is_empty());
    // An unknown kind is an error that lists the kinds.
    let o = d.run(&["log", "show", "--kind", "grant_made"], None);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    for k in [
        "project_created",
        "grant_created",
        "secret_resolved",
        "run_ended",
    ] {
        assert!(err.contains(k), "{err}");
    }
    let o = d.run(&["log", "show", "--since", "last tuesday"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("RFC 3339"), "{}", text(&o.stderr));
}

#[test]
fn log_show_follow_prints_an_event_made_after_it_started() {
    let d = Daemon::start();
    d.ok(&["project", "create", "before"], None);
    let mut ch = d
        .cmd()
        .args([
            "--json",
            "log",
            "show",
            "--follow",
            "--kind",
            "project_created",
            "--limit",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(ch.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let project_of = |l: &str| -> String {
        let v: Value = serde_json::from_str(l).unwrap();
        v["event"]["project"].as_str().unwrap().to_string()
    };
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(project_of(&first), "before");
    d.ok(&["project", "create", "after"], None);
    // Other kinds made meanwhile are filtered out as ever.
    d.ok(&["agent", "create", "bot"], None);
    d.ok(&["project", "create", "later"], None);
    let next = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(project_of(&next), "after");
    let next = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(project_of(&next), "later");
    assert!(ch.try_wait().unwrap().is_none(), "still following");
    ch.kill().unwrap();
    ch.wait().unwrap();
}

#[test]
fn a_value_over_the_limit_is_refused_plainly() {
    let d = Daemon::start();
    d.ok(&["project", "create", "demo"], None);
    let big = vec![b'a'; 2 << 20];
    for json in [false, true] {
        let args: &[&str] = if json {
            &["--json", "secret", "put", "openai/big", "--project", "demo"]
        } else {
            &["secret", "put", "openai/big", "--project", "demo"]
        };
        let o = d.run_with(d.cmd(), args, Some(&big));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains("value too large (limit 65536 bytes)"), "{err}");
        assert!(
            !err.contains("Broken pipe") && !err.contains("cannot reach"),
            "{err}"
        );
        if json {
            assert_eq!(json_error(&o)["code"], "too_large");
        }
    }
    // Nothing was stored.
    let o = d.ok(&["--json", "secret", "list"], None);
    assert!(!text(&o.stdout).contains("openai/big"));

    // The client itself: the daemon answers 413 while the 2 MB body is still being written
    // and closes; the write fails, and the answer is read and shown for what it is.
    use scopehold::api::endpoint;
    use scopehold::api::wire::{SecretPutRequest, SecretString};
    use scopehold::cli::client::{self, CallError};
    let value = SecretString::new(zeroize::Zeroizing::new("a".repeat(2 << 20)));
    let r = client::call::<endpoint::SecretPut>(
        &d.sock,
        &SecretPutRequest {
            name: "openai/big".parse().unwrap(),
            projects: vec!["demo".parse().unwrap()],
            value,
        },
        None,
    );
    match r {
        Err(e @ CallError::Refused { status: 413, .. }) => {
            assert_eq!(e.to_string(), "value too large (limit 524288 bytes)");
        }
        other => panic!("expected the daemon's 413, got {other:?}"),
    }
}

#[test]
fn connection_errors_name_the_socket_and_the_fix_once() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("no-daemon.sock");
    let o = bin()
        .arg("--home")
        .arg(t.path().join("state"))
        .arg("--socket")
        .arg(&sock)
        .args(["project", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    let once = |s: &str| assert_eq!(err.matches(s).count(), 1, "{s:?} once in: {err}");
    once(sock.to_str().unwrap());
    once("No such file or directory");
    once("`scopehold daemon`");
    once("SCOPEHOLD_SOCKET");
    // A socket file nobody listens on (a daemon that died): the same advice.
    let _stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(_stale);
    let o = bin()
        .arg("--home")
        .arg(t.path().join("state"))
        .arg("--socket")
        .arg(&sock)
        .args(["grant", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    let err = text(&o.stderr);
    assert!(
        err.contains("Connection refused") && err.contains("`scopehold daemon`"),
        "{err}"
    );
}

#[test]
fn every_subcommand_and_argument_has_its_help_line() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            if a.is_positional() || a.is_hide_set() {
                continue;
            }
            if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                missing.push(format!("{path} --{}", a.get_id()));
            }
        }
        for s in cmd.get_subcommands() {
            let p = format!("{path} {}", s.get_name());
            if s.get_about()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(p.clone());
            }
            walk(s, &p, missing);
        }
    }
    let mut cmd = scopehold::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "scopehold", &mut missing);
    assert!(missing.is_empty(), "no help line: {missing:#?}");
}

fn write(path: &Path, s: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, s).unwrap();
}

#[test]
fn a_default_project_comes_from_the_environment_or_the_config_file() {
    let d = Daemon::start();
    d.ok(&["project", "create", "demo"], None);
    d.ok(&["project", "create", "other"], None);
    // SCOPEHOLD_PROJECT.
    let mut c = d.cmd();
    c.env("SCOPEHOLD_PROJECT", "demo");
    let o = d.run_with(
        c,
        &["--json", "secret", "put", "openai/prod"],
        Some(CANARY.as_bytes()),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cred = d.ok(&["--json", "agent", "create", "bot"], None);
    let cred = json_lines(&cred)[0]["credential"]
        .as_str()
        .unwrap()
        .to_string();
    // $XDG_CONFIG_HOME/scopehold/config.toml.
    let xdg = d.dir.path().join("xdg");
    write(
        &xdg.join("scopehold/config.toml"),
        "# mine\nproject = \"demo\"\n",
    );
    let mut c = d.cmd();
    c.env("XDG_CONFIG_HOME", &xdg);
    let o = d.run_with(
        c,
        &["--json", "grant", "create", "agent:bot", "openai/prod"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let grants = json_lines(&d.ok(&["--json", "grant", "list"], None));
    assert_eq!(grants[0]["grants"][0]["project"], "demo", "{grants:?}");
    // ~/.config/scopehold/config.toml, for resolve and run.
    let home = d.dir.path().join("home");
    write(
        &home.join(".config/scopehold/config.toml"),
        "project = \"demo\"\n",
    );
    let agent = || {
        let mut c = d.cmd();
        c.env("HOME", &home).env("SCOPEHOLD_TOKEN", &cred);
        c
    };
    let o = d.run_with(agent(), &["resolve", "openai/prod"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), CANARY);
    let mut c = agent();
    c.env("EXPECT", CANARY);
    let o = d.run_with(
        c,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "test \"$OPENAI_PROD\" = \"$EXPECT\" && exit 7",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    // The environment comes before the file; --project before both.
    let mut c = agent();
    c.env("SCOPEHOLD_PROJECT", "other");
    let o = d.run_with(c, &["resolve", "openai/prod"], None);
    assert_eq!(o.status.code(), Some(3), "granted in demo, not in other");
    let mut c = agent();
    c.env("SCOPEHOLD_PROJECT", "other");
    let o = d.run_with(c, &["resolve", "openai/prod", "--project", "demo"], None);
    assert_eq!(text(&o.stdout), CANARY);

    // None anywhere: a usage error naming the three ways.
    let o = d.run(&["resolve", "openai/prod"], None);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    for way in [
        "--project",
        "SCOPEHOLD_PROJECT",
        "/nonexistent-home/.config/scopehold/config.toml",
    ] {
        assert!(err.contains(way), "{way} in: {err}");
    }
    let o = d.run(
        &["--json", "grant", "create", "agent:bot", "openai/prod"],
        None,
    );
    assert_eq!(json_error(&o)["code"], "usage");
    // A malformed file is an error naming it; a bad variable names the variable.
    let bad = d.dir.path().join("bad");
    write(&bad.join("scopehold/config.toml"), "project = demo\n");
    let mut c = d.cmd();
    c.env("XDG_CONFIG_HOME", &bad);
    let o = d.run_with(c, &["resolve", "openai/prod"], None);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains(bad.join("scopehold/config.toml").to_str().unwrap())
            && err.contains("malformed"),
        "{err}"
    );
    write(&bad.join("scopehold/config.toml"), "projet = \"demo\"\n");
    let mut c = d.cmd();
    c.env("XDG_CONFIG_HOME", &bad);
    let o = d.run_with(c, &["--json", "resolve", "openai/prod"], None);
    let e = json_error(&o);
    assert_eq!(e["code"], "config");
    assert!(e["message"].as_str().unwrap().contains("projet"), "{e}");
    // ...but troubles no command that does not need it.
    let mut c = d.cmd();
    c.env("XDG_CONFIG_HOME", &bad);
    let o = d.run_with(c, &["project", "list"], None);
    assert!(o.status.success());
    let mut c = d.cmd();
    c.env("SCOPEHOLD_PROJECT", "Not A Name");
    let o = d.run_with(c, &["resolve", "openai/prod"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("SCOPEHOLD_PROJECT"));
    // `log show --project` is a filter, never defaulted: with a default set, it shows all.
    let mut c = d.cmd();
    c.env("SCOPEHOLD_PROJECT", "other");
    let o = d.run_with(
        c,
        &["--json", "log", "show", "--kind", "project_created"],
        None,
    );
    assert_eq!(json_lines(&o).len(), 2);
}
