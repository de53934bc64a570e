//! Custody against the agent itself: what start-up trusts, what the daemon's memory gives
//! away, what a flood costs. Each test runs the real engine or the real binary on real files.

use std::path::{Path, PathBuf};

use scopehold::daemon::{Engine, Home};
use scopehold::domain::{Caller, Command};
use scopehold_log::codec::{Frame, decode_frame, put_event_frame};

use crate::users::{Killed, TestUser};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn root(home: &Home) -> Caller {
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&home.root).unwrap());
    Caller {
        identity: format!("member:{}", scopehold::daemon::home::member_name_for(uid))
            .parse()
            .unwrap(),
        uid,
        pid: None,
        host: None,
    }
}

fn segment(home: &Home) -> PathBuf {
    home.log_dir().join("00000000000000000000.seg")
}

/// Rewrites the first event frame whose body contains `find`, replacing it with `replace`
/// (same length), and recomputes the frame's CRC: what someone with write access to the
/// files and no key can do. Returns the event's sequence number.
fn forge_body(seg: &Path, find: &[u8], replace: &[u8]) -> u64 {
    assert_eq!(find.len(), replace.len());
    let mut bytes = std::fs::read(seg).unwrap();
    let mut at = scopehold_log::codec::SEGMENT_HEADER_LEN;
    while at < bytes.len() {
        let d = decode_frame(&bytes[at..]).unwrap();
        let len = d.total_len;
        if let Frame::Event(parts) = d.frame
            && let Some((salt, body)) = parts.salt_and_body
            && let Some(i) = body.windows(find.len()).position(|w| w == find)
        {
            let mut forged = body.to_vec();
            forged[i..i + find.len()].copy_from_slice(replace);
            let mut frame = Vec::new();
            put_event_frame(&mut frame, parts.envelope_bytes, Some((salt, &forged)));
            assert_eq!(frame.len(), len);
            let seq = parts.envelope.seq;
            bytes[at..at + len].copy_from_slice(&frame);
            std::fs::write(seg, &bytes).unwrap();
            return seq;
        }
        at += len;
    }
    panic!("no event body holds {:?}", String::from_utf8_lossy(find));
}

#[test]
fn an_event_edited_on_disk_with_its_crc_recomputed_stops_start_up_naming_the_event() {
    let t = tempfile::tempdir().unwrap();
    let home = Home::new(Some(t.path().join("state")), None).unwrap();
    home.init().unwrap();
    {
        let engine = Engine::open(&home, scopehold_log::system_clock()).unwrap();
        let add = Command::AddMember {
            member: "alice".parse().unwrap(),
            uid: 4343,
            admin: false,
            host: None,
        };
        runtime()
            .block_on(engine.execute(&root(&home), &add))
            .unwrap();
        engine.close().unwrap();
    }
    // The issue's finding: "admin":false made "admin":true  (a space keeps the length).
    let seq = forge_body(&segment(&home), br#""admin":false"#, br#""admin":true "#);
    let err = Engine::open(&home, scopehold_log::system_clock()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("does not verify") && msg.contains(&format!("event {seq}")),
        "start-up must refuse, naming event {seq}: {msg}"
    );
    // The binary refuses too, with the same message, and serves nothing.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
        .arg("--home")
        .arg(&home.root)
        .arg("--socket")
        .arg(t.path().join("s.sock"))
        .arg("daemon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("event {seq}")), "{stderr}");
    assert!(!t.path().join("s.sock").exists());
}

/// A directory owned by `user` (0700), for its state and socket.
fn private_dir_for(user: &TestUser) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(t.path(), Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    t
}

fn wait_for_socket(p: &Path) {
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{} did not answer", p.display());
}

const CANARY: &str = "sk-live-CANARY-custody-51f0c3";

/// As the daemon's own uid, an agent with a shell tries the ways around the socket into the
/// daemon's memory and environment: none opens. No core limit either.
#[test]
fn a_same_uid_process_cannot_read_the_daemons_memory_or_environment() {
    let Some(user) = TestUser::create("mem", &["-N"]) else {
        return;
    };
    let t = private_dir_for(&user);
    let (home, sock) = (t.path().join("state"), t.path().join("s.sock"));
    let daemon = Killed(
        user.scopehold(&home, &sock)
            .arg("daemon")
            .env("SCOPEHOLD_CANARY_ENV", CANARY)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock);
    let pid = daemon.0.id();
    for what in ["environ", "mem", "maps", "cmdline"] {
        let o = user
            .command("cat")
            .env_clear()
            .arg(format!("/proc/{pid}/{what}"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        // cmdline stays readable by design of the kernel; it holds no secret.
        if what == "cmdline" {
            continue;
        }
        assert!(
            !o.status.success() && !out.contains(CANARY),
            "/proc/{pid}/{what} was readable by the daemon's own uid"
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().nth(4) == Some("0"),
        "core dumps still allowed: {core}"
    );
    // The daemon says so itself.
    let h = scopehold::cli::client::request(&sock, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(h.body["process"]["dumpable"], false, "{}", h.body);
    assert_eq!(h.body["process"]["core_dumps"], false, "{}", h.body);
}

/// `scopehold run`'s child runs under the caller's uid; the credential that `run` holds is not
/// in its reach: not in its environment, not in `/proc/$PPID/environ`.
#[test]
fn runs_child_cannot_read_the_credential_from_its_parent() {
    let Some(user) = TestUser::create("run", &["-N"]) else {
        return;
    };
    let t = private_dir_for(&user);
    let (home, sock) = (t.path().join("state"), t.path().join("s.sock"));
    let _daemon = Killed(
        user.scopehold(&home, &sock)
            .arg("daemon")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock);
    let ok = |c: &mut std::process::Command, stdin: &str| {
        use std::io::Write;
        let mut ch = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        ch.stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = ch.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    ok(
        user.scopehold(&home, &sock)
            .args(["project", "create", "demo"]),
        "",
    );
    ok(
        user.scopehold(&home, &sock)
            .args(["secret", "put", "openai/prod", "--project", "demo"]),
        CANARY,
    );
    let cred = ok(
        user.scopehold(&home, &sock)
            .args(["agent", "create", "bot"]),
        "",
    )
    .lines()
    .last()
    .unwrap()
    .to_string();
    ok(
        user.scopehold(&home, &sock).args([
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
        ]),
        "",
    );
    let o = user
        .scopehold(&home, &sock)
        .env("SCOPEHOLD_TOKEN", &cred)
        .args(["run", "--project", "demo", "--", "sh", "-c"])
        .arg(
            "printenv SCOPEHOLD_TOKEN; cat /proc/$PPID/environ && echo PARENT-ENV-READ; \
             cat /proc/$PPID/mem >/dev/null 2>&1 && echo PARENT-MEM-READ; \
             test -n \"$OPENAI_PROD\" && echo GOT-GRANTED-VALUE",
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("GOT-GRANTED-VALUE"), "{out}");
    assert!(!out.contains(&cred), "the child read the credential");
    assert!(
        !out.contains("PARENT-ENV-READ") && !out.contains("PARENT-MEM-READ"),
        "{out}"
    );
}

#[test]
fn revoked_and_superseded_versions_leave_no_data_key_in_memory() {
    let t = tempfile::tempdir().unwrap();
    let home = Home::new(Some(t.path().join("state")), None).unwrap();
    home.init().unwrap();
    let engine = Engine::open(&home, scopehold_log::system_clock()).unwrap();
    let rt = runtime();
    let admin = root(&home);
    let secret: scopehold::domain::SecretName = "openai/prod".parse().unwrap();
    let exec = |c: Command| rt.block_on(engine.execute(&admin, &c)).unwrap();
    exec(Command::CreateProject {
        project: "demo".parse().unwrap(),
    });
    let seal = |v: u32, value: &[u8]| engine.master().seal(secret.as_str(), v, value).unwrap();
    exec(Command::PutSecret {
        secret: secret.clone(),
        projects: vec!["demo".parse().unwrap()],
        sealed: seal(1, b"v1-value"),
    });
    exec(Command::CreateGrant(scopehold::domain::GrantSpec {
        identity: admin.identity.to_string().parse().unwrap(),
        secret: secret.clone(),
        project: "demo".parse().unwrap(),
        ttl_ms: None,
        max_uses: None,
        rate_per_min: None,
        uid: None,
        host: None,
    }));
    let resolve = Command::Resolve {
        secret: secret.clone(),
        project: "demo".parse().unwrap(),
        version: None,
    };
    let value = rt.block_on(engine.resolve(&admin, &resolve)).unwrap();
    assert_eq!(&value.value[..], b"v1-value");
    assert_eq!(engine.cached_versions(&secret), vec![1]);
    // Rotated with no grace: version 1 can never be resolved again, so its key goes.
    exec(Command::RotateSecret {
        secret: secret.clone(),
        version: 2,
        sealed: seal(2, b"v2-value"),
        grace_ms: None,
    });
    assert_eq!(engine.cached_versions(&secret), Vec::<u32>::new());
    rt.block_on(engine.resolve(&admin, &resolve)).unwrap();
    assert_eq!(engine.cached_versions(&secret), vec![2]);
    exec(Command::RevokeSecret {
        secret: secret.clone(),
    });
    assert_eq!(engine.cached_versions(&secret), Vec::<u32>::new());
}

/// Standard error on a full device: the daemon does not panic, keeps serving (refusals are
/// logged at info, so it writes), and stops cleanly. Signals that used to kill it are
/// ignored, and SIGQUIT stops it cleanly instead of dumping core.
#[test]
fn an_unwritable_stderr_and_stray_signals_never_stop_the_daemon() {
    use nix::sys::signal::{Signal, kill};
    let t = tempfile::tempdir().unwrap();
    let (home, sock) = (t.path().join("state"), t.path().join("s.sock"));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut d = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
            .arg("--home")
            .arg(&home)
            .arg("--socket")
            .arg(&sock)
            .arg("daemon")
            .env("SCOPEHOLD_LOG", "debug")
            .stderr(full)
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock);
    let pid = nix::unistd::Pid::from_raw(d.0.id() as i32);
    for sig in [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2] {
        kill(pid, sig).unwrap();
        for _ in 0..20 {
            // Refused requests: each one logs a line to the full stderr.
            let a = scopehold::cli::client::request(
                &sock,
                "POST",
                "/v1/resolve",
                Some(&serde_json::json!({"secret": "openai/prod", "project": "demo"})),
                Some("shk_wrong"),
            )
            .unwrap();
            assert_eq!(a.status, 401);
        }
        assert!(
            d.0.try_wait().unwrap().is_none(),
            "{sig} stopped the daemon"
        );
    }
    kill(pid, Signal::SIGQUIT).unwrap();
    let status = d.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGQUIT is a clean stop: {status:?}"
    );
    assert!(!t.path().join("core").exists());
    // The log was flushed and verifies.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
        .arg("--home")
        .arg(&home)
        .args(["log", "verify"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

fn log_events(home: &Path) -> Vec<serde_json::Value> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
        .arg("--home")
        .arg(home)
        .args(["--json", "log", "show"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// 300 denials of a known agent and 300 of a bad credential, then a stop before their window
/// ends: two events for the first denials, and the stop writes the counts of the rest.
#[test]
fn floods_of_denials_cost_one_event_a_window_and_every_one_is_accounted_for_at_stop() {
    use nix::sys::signal::{Signal, kill};
    let t = tempfile::tempdir().unwrap();
    let (home, sock) = (t.path().join("state"), t.path().join("s.sock"));
    let bin = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"));
        c.arg("--home").arg(&home).arg("--socket").arg(&sock);
        c
    };
    let mut d = Killed(
        bin()
            .arg("daemon")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock);
    assert!(
        bin()
            .args(["project", "create", "demo"])
            .status()
            .unwrap()
            .success()
    );
    let o = bin().args(["agent", "create", "bot"]).output().unwrap();
    let cred = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let body = serde_json::json!({"secret": "openai/prod", "project": "demo"});
    for token in [cred.as_str(), "shk_wrong"] {
        for _ in 0..300 {
            let a = scopehold::cli::client::request(
                &sock,
                "POST",
                "/v1/resolve",
                Some(&body),
                Some(token),
            )
            .unwrap();
            assert!(a.status == 403 || a.status == 401, "{}", a.status);
        }
    }
    kill(nix::unistd::Pid::from_raw(d.0.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(d.0.wait().unwrap().code(), Some(0));
    let evs = log_events(&home);
    let kind = |k: &str| evs.iter().filter(|e| e["kind"] == k).collect::<Vec<_>>();
    assert_eq!(
        kind("resolution_denied").len(),
        1,
        "one event for the agent's first denial"
    );
    assert_eq!(kind("unauthenticated_denied").len(), 1);
    let counted = kind("denials_counted");
    let count_of = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        counted
            .iter()
            .filter(|e| pred(&e["event"]))
            .map(|e| e["event"]["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        count_of(&|e| e["identity"] == "agent:bot" && e["reason"] == "no such secret"),
        299
    );
    assert_eq!(
        count_of(&|e| e["identity"].is_null() && e["uid"].is_u64()),
        299
    );
}

/// One local user holding every connection it can does not stop another from being served.
#[test]
fn one_uid_cannot_take_every_connection_slot() {
    let Some(user) = TestUser::create("conn", &["-N"]) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (home, sock) = (t.path().join("state"), t.path().join("s.sock"));
    let _d = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_scopehold"))
            .arg("--home")
            .arg(&home)
            .arg("--socket")
            .arg(&sock)
            .arg("daemon")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock);
    // The test opens the socket to the other user, as --socket-group would for its group.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The other user opens 200 connections and holds them; it reports how many the daemon
    // kept open (a refused one is closed at once: a read returns end of file).
    let mut hog = user
        .command("python3")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("-c")
        .arg(
            r#"
import socket, sys, time
held = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)
time.sleep(0.5)
alive = 0
for s in held:
    s.setblocking(False)
    try:
        alive += 0 if s.recv(1) == b"" else 1
    except BlockingIOError:
        alive += 1
print(alive, flush=True)
time.sleep(30)
"#,
        )
        .arg(&sock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hog.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let alive: usize = line.trim().parse().unwrap();
    assert_eq!(
        alive,
        scopehold::daemon::server::MAX_CONNECTIONS_PER_UID,
        "held by one uid"
    );
    // Meanwhile root is served.
    let h = scopehold::cli::client::request(&sock, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(h.status, 200);
    let _ = hog.kill();
    let _ = hog.wait();
}

/// Under the disk reserve, resolutions and new grants are refused with 503 `disk_reserve`,
/// while revocations, which take access away, are still carried out and logged.
#[test]
fn under_the_disk_reserve_only_revocations_are_logged() {
    let t = tempfile::tempdir().unwrap();
    let home = Home::new(Some(t.path().join("state")), None).unwrap();
    home.init().unwrap();
    let rt = runtime();
    let admin = root(&home);
    let secret: scopehold::domain::SecretName = "openai/prod".parse().unwrap();
    let grant = scopehold::domain::GrantSpec {
        identity: admin.identity.to_string().parse().unwrap(),
        secret: secret.clone(),
        project: "demo".parse().unwrap(),
        ttl_ms: None,
        max_uses: None,
        rate_per_min: None,
        uid: None,
        host: None,
    };
    {
        let engine = Engine::open(&home, scopehold_log::system_clock()).unwrap();
        let sealed = engine.master().seal(secret.as_str(), 1, b"value").unwrap();
        for c in [
            Command::CreateProject {
                project: "demo".parse().unwrap(),
            },
            Command::PutSecret {
                secret: secret.clone(),
                projects: vec!["demo".parse().unwrap()],
                sealed,
            },
            Command::CreateGrant(grant.clone()),
        ] {
            rt.block_on(engine.execute(&admin, &c)).unwrap();
        }
        engine.close().unwrap();
    }
    // A reserve larger than any disk: the daemon is under it from the start.
    let engine = Engine::open(&home, scopehold_log::system_clock())
        .unwrap()
        .with_limits(scopehold::daemon::engine::Limits {
            disk_reserve_bytes: u64::MAX,
            ..Default::default()
        });
    let size = engine.log().status().size;
    let resolve = Command::Resolve {
        secret: secret.clone(),
        project: "demo".parse().unwrap(),
        version: None,
    };
    let e = rt.block_on(engine.resolve(&admin, &resolve)).unwrap_err();
    assert_eq!((e.status(), e.code()), (503, "disk_reserve"));
    let e = rt
        .block_on(engine.execute(&admin, &Command::CreateGrant(grant)))
        .unwrap_err();
    assert_eq!(e.code(), "disk_reserve");
    assert_eq!(engine.log().status().size, size, "nothing was written");
    let done = rt
        .block_on(engine.execute(&admin, &Command::RevokeGrant { grant: 1 }))
        .unwrap();
    assert!(matches!(
        done.events[..],
        [scopehold::domain::Event::GrantRevoked { grant: 1, .. }]
    ));
    assert_eq!(engine.log().status().size, size + 1);
}
