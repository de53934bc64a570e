//! The `scopehold` binary as a user runs it: init, log verify, log export, log checkpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scopehold_log::{Entry, Log, LogKey, LogOptions};
use serde_json::Value;

const CANARY: &str = "CANARY-sk-proj-9f8e7d6c5b4a39281706";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    // Tests never fall back to the real user's state directory.
    c.env_remove("SCOPEHOLD_HOME")
        .env_remove("SCOPEHOLD_CHECKPOINT_FILE")
        .env("HOME", "/nonexistent-home");
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    bin().arg("--home").arg(home).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn init() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let o = run(&home, &["init"]);
    assert!(
        o.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (t, home)
}

/// Appends events to the initialised log as the daemon would: public events, and secret-
/// bearing ones holding the canary (in real use a sealed value; here the raw canary, the
/// harshest case for "exports carry no secret material").
fn append(home: &Path, n: u64) {
    let log = Log::open(
        &home.join("log"),
        LogKey::load(&home.join("log.key")).unwrap(),
        LogOptions {
            checkpoint_file: Some(home.join("checkpoint")),
            ..LogOptions::default()
        },
    )
    .unwrap();
    for i in 0..n {
        let e = if i % 2 == 1 {
            Entry::secret(2, format!("{CANARY} #{i}").into_bytes()).unwrap()
        } else {
            Entry::public(1, format!("{{\"event\":{i}}}").into_bytes())
        };
        log.append(e).unwrap();
    }
    log.close().unwrap();
}

fn canary_forms() -> Vec<Vec<u8>> {
    crate::common::canary_forms(CANARY)
}

use crate::common::contains;

#[test]
fn init_creates_a_private_state_directory_and_prints_the_public_key() {
    let (_t, home) = init();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.clone()), 0o700);
    assert_eq!(mode(home.join("log.key")), 0o600);
    assert_eq!(mode(home.join("log")), 0o700);
    let pubkey = std::fs::read_to_string(home.join("log.pub")).unwrap();
    assert_eq!(pubkey.trim().len(), 64);
    // A second init refuses and changes nothing.
    let key_before = std::fs::read(home.join("log.key")).unwrap();
    let o = run(&home, &["init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already initialised"));
    assert_eq!(std::fs::read(home.join("log.key")).unwrap(), key_before);
    // --json
    let t = tempfile::tempdir().unwrap();
    let o = run(&t.path().join("s"), &["--json", "init"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let k = v["log_public_key"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(t.path().join("s/log.pub"))
            .unwrap()
            .trim(),
        k
    );
}

#[test]
fn the_state_directory_comes_from_the_environment_or_xdg() {
    let t = tempfile::tempdir().unwrap();
    let o = bin()
        .env("SCOPEHOLD_HOME", t.path().join("a"))
        .arg("init")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(t.path().join("a/log.key").exists());
    let o = bin()
        .env("XDG_DATA_HOME", t.path().join("xdg"))
        .arg("init")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(t.path().join("xdg/scopehold/log.key").exists());
}

#[test]
fn verify_reports_the_log_and_fails_with_status_5_naming_the_first_bad_event() {
    let (_t, home) = init();
    append(&home, 12);
    let o = run(&home, &["log", "verify"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    assert!(
        out.contains("events:          13 (sequence 0..=12)"),
        "{out}"
    );
    assert!(out.contains("signature valid"), "{out}");
    let v: Value =
        serde_json::from_slice(&run(&home, &["--json", "log", "verify"]).stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(13))
    );
    assert_eq!(v["checkpoint"]["size"].as_u64(), Some(13));

    // Flip one byte inside event 7's frame (each event is its own batch here, so the frame
    // of event 7 follows the checkpoint of size 7).
    let seg = home.join("log/00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let r = scopehold_log::LogReader::open(&home.join("log"), None).unwrap();
    let e7 = r.get(7).unwrap();
    let pos = bytes
        .windows(e7.envelope_bytes.len())
        .position(|w| w == &e7.envelope_bytes[..])
        .unwrap();
    bytes[pos + 5] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let o = run(&home, &["log", "verify"]);
    assert_eq!(o.status.code(), Some(5));
    let out = stdout(&o);
    assert!(out.contains("FAILED") && out.contains("event 7"), "{out}");
    let v: Value =
        serde_json::from_slice(&run(&home, &["--json", "log", "verify"]).stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["event"].as_u64()),
        (Some(false), Some(7))
    );
}

#[test]
fn an_exported_bundle_verifies_offline_and_carries_no_secret() {
    let (t, home) = init();
    append(&home, 20);
    let out = t.path().join("audit.bundle");
    let o = run(&home, &["log", "export", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("10 secret-bearing bodies left out"),
        "{}",
        stdout(&o)
    );
    let bundle = std::fs::read(&out).unwrap();
    for form in canary_forms() {
        assert!(
            !contains(&bundle, &form),
            "bundle contains the canary as {}",
            String::from_utf8_lossy(&form)
        );
    }
    // The state directory's log does hold it (sanity: the canary is really in the log, as
    // the "sealed" body in this test).
    let seg = std::fs::read(home.join("log/00000000000000000000.seg")).unwrap();
    assert!(contains(&seg, CANARY.as_bytes()));

    // Offline: no state directory at all, only the bundle and the public key.
    let pubkey = std::fs::read_to_string(home.join("log.pub")).unwrap();
    let auditor = tempfile::tempdir().unwrap();
    let offline = |bundle: &Path| {
        bin()
            .env("SCOPEHOLD_HOME", auditor.path().join("no-such-state"))
            .args([
                "log",
                "verify",
                "--bundle",
                bundle.to_str().unwrap(),
                "--key",
                pubkey.trim(),
            ])
            .output()
            .unwrap()
    };
    let o = offline(&out);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).contains("bodies left out: 10"), "{}", stdout(&o));
    assert!(
        !auditor.path().join("no-such-state").exists(),
        "verification created state"
    );

    // One changed byte, or a cut, fails with status 5.
    let bad = auditor.path().join("bad.bundle");
    let mut b = bundle.clone();
    b[bundle.len() / 2] ^= 0x04;
    std::fs::write(&bad, &b).unwrap();
    assert_eq!(offline(&bad).status.code(), Some(5));
    std::fs::write(&bad, &bundle[..bundle.len() - 30]).unwrap();
    assert_eq!(offline(&bad).status.code(), Some(5));
    // A different key fails.
    let o = bin()
        .args([
            "log",
            "verify",
            "--bundle",
            out.to_str().unwrap(),
            "--key",
            &"ab".repeat(32),
        ])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));

    // A range.
    let part = t.path().join("part.bundle");
    let o = run(
        &home,
        &[
            "log",
            "export",
            "--out",
            part.to_str().unwrap(),
            "--from",
            "5",
            "--to",
            "9",
        ],
    );
    assert!(o.status.success());
    let o = offline(&part);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("events:          5 (sequence 5..=9)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_jsonl_export_lets_another_verifier_recompute_the_chain() {
    let (t, home) = init();
    append(&home, 9);
    let out = t.path().join("audit.jsonl");
    let o = run(
        &home,
        &[
            "log",
            "export",
            "--format",
            "jsonl",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read(&out).unwrap();
    for form in canary_forms() {
        assert!(!contains(&text, &form), "jsonl contains the canary");
    }
    let text = String::from_utf8(text).unwrap();
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let header = lines.next().unwrap();
    assert_eq!(header["type"], "header");
    let log_id: [u8; 32] = hex::decode(header["log_id"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key_bytes: [u8; 32] = hex::decode(header["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
    // Recompute with BLAKE3 and ed25519 directly, following FORMAT.md.
    let k_event = blake3::derive_key("ScopeHold log v1 2026-11-26 event", b"");
    let mut prev = *blake3::keyed_hash(
        &blake3::derive_key("ScopeHold log v1 2026-11-26 genesis", b""),
        &log_id,
    )
    .as_bytes();
    let (mut events, mut checkpoints) = (0, 0);
    for v in lines {
        match v["type"].as_str().unwrap() {
            "event" => {
                let env = hex::decode(v["envelope_hex"].as_str().unwrap()).unwrap();
                assert_eq!(&env[21..53], &prev, "chain link of event {}", v["seq"]);
                prev = *blake3::keyed_hash(&k_event, &env).as_bytes();
                assert_eq!(v["hash"].as_str().unwrap(), hex::encode(prev));
                if v["class"] == "secret" {
                    assert!(v["body"].is_null() && v["redacted"] == true);
                } else {
                    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
                    assert!(body.is_object());
                }
                events += 1;
            }
            "checkpoint" => {
                let body = hex::decode(v["body_hex"].as_str().unwrap()).unwrap();
                assert_eq!(&body[42..74], &prev);
                let mut msg = b"ScopeHold log v1 checkpoint\n".to_vec();
                msg.extend_from_slice(&body);
                let sig: [u8; 64] = hex::decode(v["signature"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap();
                vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                    .unwrap();
                checkpoints += 1;
            }
            other => panic!("unexpected line type {other}"),
        }
    }
    // init records the first admin member, then one event per append.
    assert_eq!((events, checkpoints), (10, 10));
}

#[test]
fn a_trusted_checkpoint_catches_a_log_cut_back_to_an_older_state() {
    let (t, home) = init();
    let checkpoint = |name: &str| {
        let p = t.path().join(name);
        assert!(
            run(&home, &["log", "checkpoint", "--out", p.to_str().unwrap()])
                .status
                .success()
        );
        p
    };
    append(&home, 6);
    let seg = home.join("log/00000000000000000000.seg");
    let at6 = std::fs::read(&seg).unwrap();
    let kept6 = checkpoint("auditor-6");
    append(&home, 4);
    let kept10 = checkpoint("auditor-10");
    assert!(
        std::fs::read_to_string(&kept10)
            .unwrap()
            .contains("size 11")
    );

    // Roll the log back to its (validly signed) 6-event state.
    std::fs::write(&seg, &at6).unwrap();
    std::fs::remove_file(home.join("log/index")).unwrap();
    // The daemon's own kept checkpoint (10 events) catches it by default.
    let o = run(&home, &["log", "verify"]);
    assert_eq!(o.status.code(), Some(5), "{}", stdout(&o));
    assert!(stdout(&o).contains("rollback"), "{}", stdout(&o));

    // An attacker who controls the state directory rolls that back too...
    std::fs::remove_file(home.join("checkpoint")).unwrap();
    let o = run(&home, &["log", "verify"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "on its own the older state verifies: {}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("would not be noticed"),
        "{}",
        stdout(&o)
    );
    // ...but the auditor's checkpoint kept elsewhere still catches it.
    let o = run(
        &home,
        &[
            "log",
            "verify",
            "--trusted-checkpoint",
            kept10.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stdout(&o));
    assert!(stdout(&o).contains("rollback"), "{}", stdout(&o));
    let o = run(
        &home,
        &[
            "log",
            "verify",
            "--trusted-checkpoint",
            kept6.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn usage_errors_exit_with_status_2() {
    let t = tempfile::tempdir().unwrap();
    assert_eq!(
        run(t.path(), &["log", "verify", "--bundle", "x"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(t.path(), &["no-such-command"]).status.code(), Some(2));
    let help = run(t.path(), &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("5 verification failed"));
}
