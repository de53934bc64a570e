//! The admin side's lifecycle and true states (issue 10): members removed and demoted,
//! secrets moved between projects, names that say their kind and are never reused, grants
//! listed with what they allow now, and `run` all or nothing. The real binary as daemon and
//! CLI, on a real socket and real log files; each change is checked by its event and by its
//! effect on resolution.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::Daemon;
use crate::users::TestUser;

const CANARY: &str = "sk-live-CANARY-lifecycle-7c1d";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every event of the log, decoded (`log show --json`, one object per line).
fn events(d: &Daemon) -> Vec<Value> {
    d.ok(&["--json", "log", "show"], None)
        .lines()
        .map(json)
        .collect()
}

/// The grants, as `grant list --json` gives them, by id.
fn grants(d: &Daemon) -> Vec<Value> {
    json(&d.ok(&["--json", "grant", "list"], None))["grants"]
        .as_array()
        .unwrap()
        .clone()
}

fn grant(d: &Daemon, id: u64) -> Value {
    grants(d)
        .into_iter()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("no grant {id}"))
}

/// `demo` with three secrets, agent `bot` and its credential.
fn three_secrets(d: &Daemon) -> String {
    d.ok(&["project", "create", "demo"], None);
    for s in ["openai/prod", "github/ci", "anthropic/dev"] {
        d.ok(
            &["secret", "put", s, "--project", "demo"],
            Some(&format!("{CANARY}-{s}")),
        );
    }
    d.ok(&["agent", "create", "bot"], None)
        .lines()
        .last()
        .unwrap()
        .to_string()
}

#[test]
fn run_with_one_expired_grant_among_three_consumes_no_use_and_names_it() {
    let d = Daemon::start();
    let cred = three_secrets(&d);
    for (s, ttl) in [
        ("openai/prod", None),
        ("github/ci", Some("1s")),
        ("anthropic/dev", None),
    ] {
        let mut a = vec![
            "grant",
            "create",
            "agent:bot",
            s,
            "--project",
            "demo",
            "--max-uses",
            "5",
        ];
        if let Some(t) = ttl {
            a.extend(["--ttl", t]);
        }
        d.ok(&a, None);
    }
    std::thread::sleep(Duration::from_millis(1_300));
    assert_eq!(grant(&d, 2)["state"], "expired", "{}", grant(&d, 2));

    // Every secret named with --env must work: one expired, so nothing is resolved.
    let envs = [
        "--env",
        "A=openai/prod",
        "--env",
        "B=github/ci",
        "--env",
        "C=anthropic/dev",
    ];
    let mut args = vec!["run", "--project", "demo"];
    args.extend(envs);
    args.extend(["--", "sh", "-c", "echo started"]);
    let o = d.cli(&args, None, Some(&cred));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("github/ci")
            && err.contains("expired")
            && err.contains("nothing was resolved"),
        "the holder is told which secret and why: {err}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("started"));
    for g in grants(&d) {
        assert_eq!(g["uses"], 0, "a failed run consumed a use: {g}");
    }
    let evs = events(&d);
    assert!(
        !evs.iter().any(|e| e["kind"] == "secret_resolved"),
        "a failed run resolved something"
    );
    assert!(
        evs.iter().any(|e| e["kind"] == "resolution_denied"
            && e["event"]["secret"] == "github/ci"
            && e["event"]["reason"] == "grant expired"),
        "the denial names the secret refused: {evs:?}"
    );

    // Without --env, the dead grant's secret is left out and named; the others go in.
    let o = d.cli(
        &[
            "run",
            "--project",
            "demo",
            "--no-masking",
            "--",
            "sh",
            "-c",
            "echo \"$OPENAI_PROD|${GITHUB_CI:-unset}|$ANTHROPIC_DEV\"",
        ],
        None,
        Some(&cred),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("{CANARY}-openai/prod|unset|{CANARY}-anthropic/dev")
    );
    assert!(
        stderr(&o).contains("github/ci not injected") && stderr(&o).contains("expired"),
        "{}",
        stderr(&o)
    );
    let uses: Vec<_> = grants(&d)
        .iter()
        .map(|g| g["uses"].as_u64().unwrap())
        .collect();
    assert_eq!(uses, [1, 0, 1]);
}

#[test]
fn an_unknown_secret_and_an_ungranted_one_look_the_same_to_others() {
    let d = Daemon::start();
    three_secrets(&d);
    // `other` holds nothing at all.
    let other = d
        .ok(&["agent", "create", "other"], None)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let try_run = |secret: &str| {
        let env = format!("X={secret}");
        let o = d.cli(
            &["run", "--project", "demo", "--env", &env, "--", "true"],
            None,
            Some(&other),
        );
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        stderr(&o).replace(secret, "SECRET")
    };
    let existing = try_run("openai/prod");
    assert_eq!(existing, try_run("openai/nonexistent"));
    assert!(existing.contains("not granted"), "{existing}");
    assert!(!existing.contains("grant "), "{existing}");
}

#[test]
fn grant_list_says_the_true_state_of_each_grant_and_secrets_their_versions() {
    let d = Daemon::start();
    let cred = three_secrets(&d);
    d.ok(&["agent", "create", "gone"], None);
    let g = |args: &[&str]| {
        let mut a = vec!["grant", "create"];
        a.extend(args);
        a.extend(["--project", "demo"]);
        d.ok(&a, None);
    };
    g(&["agent:bot", "openai/prod"]); // 1: active
    g(&["agent:bot", "github/ci", "--ttl", "1s"]); // 2: expired
    g(&["agent:bot", "anthropic/dev", "--max-uses", "1"]); // 3: exhausted
    g(&["agent:gone", "openai/prod"]); // 4: agent revoked
    g(&["agent:bot", "openai/prod", "--rate", "1"]); // 5: revoked grant
    d.ok(&["grant", "revoke", "5"], None);
    d.ok(&["agent", "revoke", "gone"], None);
    let o = d.cli(
        &["resolve", "anthropic/dev", "--project", "demo"],
        None,
        Some(&cred),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(1_300));
    let states: Vec<String> = grants(&d)
        .iter()
        .map(|g| g["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states,
        ["active", "expired", "exhausted", "agent_revoked", "revoked"]
    );
    let text = d.ok(&["grant", "list"], None);
    for why in [
        "it expired at",
        "all 1 uses are used",
        "its agent was revoked",
        "the grant was revoked",
    ] {
        assert!(text.contains(why), "{why} missing from:\n{text}");
    }
    // The secret's holders are only those whose grants work.
    let secrets = json(&d.ok(&["--json", "secret", "list"], None));
    let prod = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "openai/prod")
        .unwrap()
        .clone();
    assert_eq!(prod["granted_to"], serde_json::json!(["agent:bot"]));
    // A revoked secret: its grants say so.
    d.ok(&["secret", "revoke", "openai/prod"], None);
    assert_eq!(grant(&d, 1)["state"], "secret_revoked");
    // Versions: the current one, the previous in its grace, older ones retired.
    d.ok(&["secret", "rotate", "github/ci"], Some("v2"));
    d.ok(
        &["secret", "rotate", "github/ci", "--grace", "1h"],
        Some("v3"),
    );
    let text = d.ok(&["secret", "list"], None);
    let line = text.lines().find(|l| l.starts_with("github/ci")).unwrap();
    assert!(
        line.contains("v3 current")
            && line.contains("v2 grace until")
            && line.contains("1 retired"),
        "{line}"
    );
    // A rotation is what a holder's next resolution gets; the grace version by number.
}

#[test]
fn a_secret_moves_between_projects_and_a_left_projects_grants_stay_ended() {
    let d = Daemon::start();
    let cred = three_secrets(&d);
    d.ok(&["project", "create", "other"], None);
    let resolve_in = |p: &str| {
        d.cli(
            &["resolve", "openai/prod", "--project", p],
            None,
            Some(&cred),
        )
    };
    let refused = d.cli(
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "other",
        ],
        None,
        None,
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not assigned to project other"),
        "{}",
        stderr(&refused)
    );

    d.ok(
        &["secret", "assign", "openai/prod", "--project", "other"],
        None,
    );
    d.ok(
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "other",
        ],
        None,
    );
    let o = resolve_in("other");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{CANARY}-openai/prod")
    );

    let out = d.ok(
        &["secret", "unassign", "openai/prod", "--project", "other"],
        None,
    );
    assert!(out.contains("grants ended: 1"), "{out}");
    let o = resolve_in("other");
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("taken out of the project"),
        "{}",
        stderr(&o)
    );
    assert_eq!(grant(&d, 1)["state"], "secret_unassigned");
    // Back in the project, the old grant stays ended.
    d.ok(
        &["secret", "assign", "openai/prod", "--project", "other"],
        None,
    );
    let o = resolve_in("other");
    assert_eq!(o.status.code(), Some(3));
    // The last project cannot be left.
    d.ok(
        &["secret", "unassign", "openai/prod", "--project", "other"],
        None,
    );
    let o = d.cli(
        &["secret", "unassign", "openai/prod", "--project", "demo"],
        None,
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("last project"), "{}", stderr(&o));

    let kinds: Vec<(String, String)> = events(&d)
        .iter()
        .filter(|e| {
            matches!(
                e["kind"].as_str(),
                Some("secret_assigned" | "secret_unassigned")
            )
        })
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["event"]["by"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(
        kinds.iter().all(|(_, by)| by.starts_with("member:")),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [
            "secret_assigned",
            "secret_unassigned",
            "secret_assigned",
            "secret_unassigned"
        ]
    );
}

#[test]
fn names_say_their_kind_and_are_never_reused() {
    let d = Daemon::start();
    three_secrets(&d);
    // A bare name is a usage error, before anything is sent.
    let o = d.cli(
        &["grant", "create", "bot", "openai/prod", "--project", "demo"],
        None,
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("agent:bot or member:bot"),
        "{}",
        stderr(&o)
    );
    // An agent cannot take the admin member's name.
    let members = json(&d.ok(&["--json", "member", "list"], None));
    let admin = members["members"][0]["name"].as_str().unwrap().to_string();
    let o = d.cli(&["agent", "create", &admin], None, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("agents and members take distinct names"),
        "{}",
        stderr(&o)
    );
    // Nor a member an agent's.
    let o = d.cli(&["member", "add", "bot", "--uid", "4242"], None, None);
    assert!(stderr(&o).contains("distinct names"), "{}", stderr(&o));
    // A revoked agent's name is not given again, and the refusal says why.
    d.ok(&["agent", "revoke", "bot"], None);
    let o = d.cli(&["agent", "create", "bot"], None, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("never reused"), "{}", stderr(&o));
}

/// A directory `uid` can reach but not write.
fn traversable(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_removed_member_resolves_nothing_and_a_demoted_one_administers_nothing() {
    let Some(alice) = TestUser::create("member", &["-U"]) else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    traversable(base.path());
    let state = base.path().join("state");
    let run = base.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    nix::unistd::chown(&run, None, Some(nix::unistd::Gid::from_raw(alice.gid))).unwrap();
    let socket = run.join("scopehold.sock");
    let root_cli = |args: &[&str], stdin: Option<&str>| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
        c.arg("--home")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env_remove("SCOPEHOLD_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(ch.stdin.take());
        ch.wait_with_output().unwrap()
    };
    let ok = |args: &[&str], stdin: Option<&str>| {
        let o = root_cli(args, stdin);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_scopehold"))
        .arg("--home")
        .arg(&state)
        .args(["daemon", "--socket-group", &alice.name])
        .env("RUNTIME_DIRECTORY", &run)
        .env_remove("SCOPEHOLD_SOCKET")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let as_alice = |args: &[&str]| -> Output {
        alice
            .scopehold(&state, &socket)
            .arg("--daemon-uid")
            .arg("0")
            .args(args)
            .output()
            .unwrap()
    };
    ok(&["project", "create", "demo"], None);
    ok(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(CANARY),
    );
    let uid = alice.uid.to_string();
    ok(&["member", "add", "alice", "--uid", &uid], None);
    ok(
        &[
            "grant",
            "create",
            "member:alice",
            "openai/prod",
            "--project",
            "demo",
        ],
        None,
    );
    let o = as_alice(&["resolve", "openai/prod", "--project", "demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), CANARY);

    // Not an admin yet; promoted, she administers; demoted, no longer.
    let o = as_alice(&["project", "create", "hers"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    ok(&["member", "promote", "alice"], None);
    let o = as_alice(&["project", "create", "hers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    ok(&["member", "demote", "alice"], None);
    let o = as_alice(&["project", "create", "hers2"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // Removed: her uid is nobody's, and her grant ended for good.
    let out = ok(&["member", "remove", "alice"], None);
    assert!(out.contains("grants ended: 1"), "{out}");
    let o = as_alice(&["resolve", "openai/prod", "--project", "demo"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(CANARY));
    ok(&["member", "add", "alice", "--uid", &uid], None);
    let o = as_alice(&["resolve", "openai/prod", "--project", "demo"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "re-added, the old grant stays ended"
    );
    assert!(
        stderr(&o).contains("its member was removed"),
        "{}",
        stderr(&o)
    );

    // The last admin stays.
    let me = json(&ok(&["--json", "member", "list"], None));
    let admin = me["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["admin"] == true)
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    for cmd in ["remove", "demote"] {
        let o = root_cli(&["member", cmd, &admin], None);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("last admin"), "{}", stderr(&o));
    }
    // Each change is an event, by the admin, about alice.
    let evs: Vec<Value> = ok(&["--json", "log", "show"], None)
        .lines()
        .map(json)
        .filter(|e| e["event"]["member"] == "alice")
        .collect();
    let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "member_added",
            "member_admin_set",
            "member_admin_set",
            "member_removed",
            "member_added"
        ]
    );
    assert!(
        evs.iter()
            .all(|e| e["event"]["by"] == format!("member:{admin}")),
        "{evs:?}"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn a_failed_verification_or_check_fails_even_when_its_output_is_closed() {
    let mut d = Daemon::start();
    three_secrets(&d);
    d.stop();
    let seg = d.home.join("log/00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"\"demo\"")
        .expect("the project's name in the segment");
    bytes[at + 4] = b'x';
    std::fs::write(&seg, bytes).unwrap();
    for (args, code) in [
        (&["log", "verify"][..], 5),
        (&["--json", "log", "verify"][..], 5),
        (&["doctor"][..], 1),
    ] {
        // Standard output is a pipe whose reader is gone before anything is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = d
            .bin()
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
    }
}
