//! The documented way to run for agents (README, "Run it for agents"; packaging/systemd): the
//! daemon under its own user, the state directory 0700, the socket in a 0750 directory of the
//! daemon's group, agents under their own uids in that group. Real users, made by the test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::users::{Killed, TestUser};

const CANARY: &str = "sk-live-CANARY-layout-77ab21";

/// The binary as `user`, with all its groups, in a clean environment plus `env`.
fn scopehold(user: &TestUser, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = user.with_groups(env!("CARGO_BIN_EXE_scopehold"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn dir(path: PathBuf, owner: &TestUser, mode: u32) -> PathBuf {
    std::fs::create_dir(&path).unwrap();
    std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn with_stdin(mut c: Command, input: &str) -> Output {
    use std::io::Write;
    let mut ch = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ch.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    ch.wait_with_output().unwrap()
}

#[test]
fn the_daemon_under_its_own_user_serves_agents_of_its_group_and_nobody_else() {
    let Some(daemon_user) = TestUser::create("d", &["-U"]) else {
        return;
    };
    let Some(agent) = TestUser::create("a", &["-N", "-G", &daemon_user.name]) else {
        return;
    };
    let Some(stranger) = TestUser::create("x", &["-N"]) else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // What StateDirectory= and RuntimeDirectory= make for the unit.
    let state = dir(base.path().join("lib"), &daemon_user, 0o700);
    let run = dir(base.path().join("run"), &daemon_user, 0o750);
    let socket = run.join("scopehold.sock");
    let (state_s, socket_s, run_s) = (
        state.to_str().unwrap(),
        socket.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    let as_daemon = |args: &[&str]| {
        scopehold(
            &daemon_user,
            args,
            &[("SCOPEHOLD_HOME", state_s), ("SCOPEHOLD_SOCKET", socket_s)],
        )
    };
    let _d = Killed(
        scopehold(
            &daemon_user,
            &[
                "--home",
                state_s,
                "daemon",
                "--socket-group",
                &daemon_user.name,
            ],
            &[("RUNTIME_DIRECTORY", run_s)],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    for _ in 0..400 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    use std::os::unix::fs::MetadataExt;
    let sm = std::fs::metadata(&socket).unwrap();
    assert_eq!((sm.mode() & 0o777, sm.gid()), (0o660, daemon_user.gid));
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);

    // The daemon's user is the first admin: it sets up the agent's grant.
    ok(as_daemon(&["project", "create", "demo"]).output().unwrap());
    ok(with_stdin(
        as_daemon(&["secret", "put", "openai/prod", "--project", "demo"]),
        CANARY,
    ));
    let uid = agent.uid.to_string();
    let cred = ok(as_daemon(&["agent", "create", "bot", "--uid", &uid])
        .output()
        .unwrap())
    .lines()
    .last()
    .unwrap()
    .to_string();
    ok(as_daemon(&[
        "grant",
        "create",
        "agent:bot",
        "openai/prod",
        "--project",
        "demo",
    ])
    .output()
    .unwrap());

    // The agent, under its own uid, in the group: the key through the socket, and only so.
    let agent_env = [
        ("SCOPEHOLD_SOCKET", socket_s),
        ("SCOPEHOLD_TOKEN", cred.as_str()),
    ];
    let value = ok(scopehold(
        &agent,
        &["resolve", "openai/prod", "--project", "demo"],
        &agent_env,
    )
    .output()
    .unwrap());
    assert_eq!(value, CANARY);
    for f in ["master.key", "log.key", "log", "."] {
        let o = agent
            .with_groups("cat")
            .arg(state.join(f))
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "the agent read {f} in the state directory"
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains(CANARY));
    }
    // Its doctor says its uid is separate from the daemon's.
    let doctor = scopehold(&agent, &["--json", "doctor"], &agent_env)
        .output()
        .unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let this_uid = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "this uid")
        .unwrap();
    assert_eq!(this_uid["level"], "ok", "{findings}");

    // A user outside the group cannot even connect.
    let o = scopehold(
        &stranger,
        &["resolve", "openai/prod", "--project", "demo"],
        &[
            ("SCOPEHOLD_SOCKET", socket_s),
            ("SCOPEHOLD_TOKEN", cred.as_str()),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(CANARY));

    // The daemon's own user is told plainly that its uid is the one nothing protects.
    let doctor = ok(as_daemon(&["doctor"])
        .output()
        .unwrap_or_else(|e| panic!("{e}")));
    assert!(doctor.contains("you run as the daemon's uid"), "{doctor}");
    let h = scopehold::cli::client::request(&socket, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(
        h.body["custody"]["agents_sharing_the_daemon_uid"],
        serde_json::json!([])
    );
    assert_eq!(h.body["custody"]["daemon_uid"], daemon_user.uid);
}

/// An agent under the daemon's uid is reported by `/v1/health` and by `doctor`.
#[test]
fn an_agent_sharing_the_daemons_uid_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let (home, sock) = (t.path().join("state"), t.path().join("s.sock"));
    let bin = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
        c.arg("--home").arg(&home).arg("--socket").arg(&sock);
        c
    };
    let _d = Killed(bin().arg("daemon").stderr(Stdio::null()).spawn().unwrap());
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let cred = ok(bin().args(["agent", "create", "bot"]).output().unwrap())
        .lines()
        .last()
        .unwrap()
        .to_string();
    let _ = bin()
        .args(["resolve", "openai/prod", "--project", "demo"])
        .env("SCOPEHOLD_TOKEN", &cred)
        .output()
        .unwrap();
    let h = scopehold::cli::client::request(&sock, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(
        h.body["custody"]["agents_sharing_the_daemon_uid"],
        serde_json::json!(["bot"])
    );
    let doctor = String::from_utf8(bin().arg("doctor").output().unwrap().stdout).unwrap();
    assert!(
        doctor.contains("agent bot calls from the daemon's own uid"),
        "{doctor}"
    );
    assert!(
        doctor.contains("keys") && doctor.contains("unsealed"),
        "{doctor}"
    );
}

/// The shipped units are valid to systemd, where `systemd-analyze` exists (these machines
/// have no systemd as PID 1; `verify` still parses every directive).
#[test]
fn the_shipped_systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no systemd-analyze here");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    for (unit, user) in [
        ("scopehold.service", false),
        ("user/scopehold.service", true),
    ] {
        let text = std::fs::read_to_string(pkg.join(unit)).unwrap();
        // The binary the unit names, pointed at the one just built.
        let text = text
            .replace("/usr/local/bin/scopehold", env!("CARGO_BIN_EXE_scopehold"))
            .replace("%h/.cargo/bin/scopehold", env!("CARGO_BIN_EXE_scopehold"));
        let path = t.path().join(if user {
            "u-scopehold.service"
        } else {
            "scopehold.service"
        });
        std::fs::write(&path, text).unwrap();
        let mut c = Command::new("systemd-analyze");
        if user {
            c.arg("--user").env("XDG_RUNTIME_DIR", t.path());
        }
        let o = c
            .args(["verify", "--man=no", "--generators=no"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty(), "{unit}: {err}");
    }
}
