//! A state directory written by the previous release (`tests/fixtures/prev-release`, made by
//! `tests/fixtures/make-prev-release.sh` with that release's binary) opens with this one and
//! replays to the same state: the same listings, byte for byte the same event bodies, the
//! same value for the same credential.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scopehold::domain::{Event, EventKind};
use scopehold_log::{BodyClass, LogReader, PublicKey, VerifyOptions, verify_log};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/prev-release");

/// A private copy of the fixture's state directory, with the modes git does not keep.
fn copy_state() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let from = Path::new(FIXTURE).join("state");
    std::fs::create_dir_all(home.join("log")).unwrap();
    for sub in ["", "log"] {
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let to = home.join(sub).join(p.file_name().unwrap());
                std::fs::copy(&p, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    for d in [home.clone(), home.join("log")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    (t, home)
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURE).join("expected").join(name)).unwrap()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn bin(home: &Path, socket: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    c.env_remove("SCOPEHOLD_CHECKPOINT_FILE")
        .env_remove("SCOPEHOLD_TOKEN")
        .env("HOME", "/nonexistent-home")
        .arg("--home")
        .arg(home)
        .arg("--socket")
        .arg(socket);
    c
}

#[test]
fn every_event_body_of_the_previous_release_decodes_and_reencodes_to_the_same_bytes() {
    let (_t, home) = copy_state();
    let key = PublicKey::from_arg(&home.join("log.pub").to_string_lossy()).unwrap();
    let reader = LogReader::open(&home.join("log"), Some(&key)).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for rec in reader.events_from(0).unwrap() {
        let rec = rec.unwrap();
        let body = rec.body.as_ref().unwrap();
        let ev = Event::from_body(rec.envelope.kind, &body.bytes).unwrap();
        assert_eq!(
            serde_json::to_vec(&ev).unwrap(),
            &body.bytes[..],
            "event {} re-encodes differently",
            rec.seq()
        );
        assert_eq!(
            rec.class() == BodyClass::Secret,
            ev.kind().class() == BodyClass::Secret,
            "event {}: class",
            rec.seq()
        );
        kinds.insert(ev.kind());
    }
    // The fixture holds every kind of event the previous release could write (1 to 14).
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        EventKind::ALL
            .iter()
            .copied()
            .filter(|k| k.number() <= 14)
            .collect::<Vec<_>>()
    );
    verify_log(&home.join("log"), &key, &VerifyOptions::default()).unwrap();
}

/// Every field of the previous release's listing is in today's, with the same value: fields
/// added since (a grant's `state` and `why`, a secret's `version_states`) are extra. Two lists
/// changed meaning on purpose (issue 10): who a secret is `granted_to` and an agent's `grants`
/// were "not revoked" and are now "can be used now", so today's is a part of the old one.
fn within(then: &Value, now: &Value, at: &str) {
    match (then, now) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let Some(w) = b.get(k) else {
                    panic!("{at}.{k} is gone from the listing: {now}");
                };
                if k == "granted_to" || (k == "grants" && v.is_array() && at.contains("agent")) {
                    let (old, new) = (v.as_array().unwrap(), w.as_array().unwrap());
                    assert!(
                        new.iter().all(|x| old.contains(x)),
                        "{at}.{k}: {w} not within {v}"
                    );
                } else {
                    within(v, w, &format!("{at}.{k}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: {now} against {then}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                within(x, y, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(then, now, "{at} differs from the previous release's"),
    }
}

#[test]
fn the_previous_release_state_opens_and_replays_to_the_same_listings_and_value() {
    let (t, home) = copy_state();
    let socket = t.path().join("s.sock");
    let _d = Daemon(
        bin(&home, &socket)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        up,
        "the daemon did not start on the previous release's state"
    );
    for what in ["project", "secret", "agent", "member", "grant"] {
        let o = bin(&home, &socket)
            .args(["--json", what, "list"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{what} list: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let now: Value = serde_json::from_slice(&o.stdout).unwrap();
        let then: Value = serde_json::from_str(&expected(&format!("{what}.json"))).unwrap();
        within(&then, &now, what);
    }
    // The credential the previous release issued still resolves, to the rotated value.
    let o = bin(&home, &socket)
        .env("SCOPEHOLD_TOKEN", expected("credential"))
        .args(["resolve", "openai/prod", "--project", "demo"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"sk-prev-release-CANARY-3");
}

#[test]
fn the_daemon_gives_a_previous_release_state_a_certificate_authority_at_start() {
    let (t, home) = copy_state();
    assert!(!home.join("ca.key").exists());
    let socket = t.path().join("s.sock");
    let log = t.path().join("daemon.log");
    let d = Daemon(
        bin(&home, &socket)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap());
    let mode = |f: &str| {
        std::fs::metadata(home.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("ca.pem"), 0o644);
    assert_eq!(mode("ca-bundle.pem"), 0o644);
    let h = scopehold::daemon::Home::new(Some(home.clone()), None).unwrap();
    let fp = scopehold::daemon::ca::Ca::load(&h).unwrap().fingerprint();
    let bundle = std::fs::read_to_string(home.join("ca-bundle.pem")).unwrap();
    assert!(bundle.contains(std::fs::read_to_string(home.join("ca.pem")).unwrap().trim()));
    // SIGTERM and wait: the log lines are all written.
    drop(d);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("had no certificate authority") && text.contains(&fp),
        "{text}"
    );
    // A second start keeps the same CA and says nothing of creating one.
    let log2 = t.path().join("daemon2.log");
    let d = Daemon(
        bin(&home, &socket)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log2).unwrap())
            .spawn()
            .unwrap(),
    );
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(d);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(text.contains("certificate authority loaded"), "{text}");
    assert!(!text.contains("had no certificate authority"), "{text}");
    assert_eq!(
        scopehold::daemon::ca::Ca::load(&h).unwrap().fingerprint(),
        fp
    );
}
