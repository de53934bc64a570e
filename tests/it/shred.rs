//! Deleting a secret by crypto-shredding (`scopehold secret delete`): the sealed values and
//! their wrapped data keys are erased from the log, so they are in no file of the state
//! directory any more, while the events stay and the log (and its export) still verify; the
//! secret resolves for nobody, and its name is not reused. An erasure the log does not account
//! for stops the daemon. Every test runs the `scopehold` binary as daemon and as CLI, on a
//! real socket and real log files.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scopehold::domain::{Event, EventKind};
use scopehold_log::{LogReader, codec};
use serde_json::Value;

use crate::common::{Daemon, contains};

const CANARY: &str = "sk-live-CANARY-shred-5e4d3c";

fn value(v: u32) -> String {
    format!("{CANARY}-v{v}")
}

/// What these tests add to the shared daemon.
trait Shredding {
    fn world(&self) -> String;
    fn resolve(&self, cred: &str) -> Output;
    fn log_dir(&self) -> PathBuf;
    fn events(&self) -> Vec<(u64, Event)>;
}

impl Shredding for Daemon {
    /// `demo` with `openai/prod` at versions 1 and 2 (current), agent `bot` granted it;
    /// bot's credential.
    fn world(&self) -> String {
        self.ok(&["project", "create", "demo"], None);
        self.ok(
            &["secret", "put", "openai/prod", "--project", "demo"],
            Some(&value(1)),
        );
        self.ok(&["secret", "rotate", "openai/prod"], Some(&value(2)));
        let cred = self
            .ok(&["agent", "create", "bot"], None)
            .lines()
            .last()
            .unwrap()
            .to_string();
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
        cred
    }

    fn resolve(&self, cred: &str) -> Output {
        self.cli(
            &["resolve", "openai/prod", "--project", "demo"],
            None,
            Some(cred),
        )
    }

    fn log_dir(&self) -> PathBuf {
        self.home.join("log")
    }

    /// Every event of the log with a public body, decoded, with its sequence number.
    fn events(&self) -> Vec<(u64, Event)> {
        let r = LogReader::open(&self.log_dir(), None).unwrap();
        r.events_from(0)
            .unwrap()
            .filter_map(|rec| {
                let rec = rec.unwrap();
                let body = rec.body.as_ref()?;
                Some((
                    rec.seq(),
                    Event::from_body(rec.envelope.kind, &body.bytes).unwrap(),
                ))
            })
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The bytes of every regular file under `dir`, by path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    out
}

/// What a sealed version leaves in the log: its ciphertext and wrapped data key, as the log
/// body writes them (hex) and as raw bytes.
fn sealed_forms(d: &Daemon) -> Vec<(u64, Vec<Vec<u8>>)> {
    let r = LogReader::open(&d.log_dir(), None).unwrap();
    r.events_from(0)
        .unwrap()
        .filter_map(|rec| {
            let rec = rec.unwrap();
            if rec.envelope.kind != EventKind::SecretVersionSealed.number() {
                return None;
            }
            let body = rec.body.as_ref().expect("a sealed value before deletion");
            let Event::SecretVersionSealed { sealed, .. } =
                Event::from_body(rec.envelope.kind, &body.bytes).unwrap()
            else {
                unreachable!()
            };
            let mut forms = Vec::new();
            for h in [&sealed.ciphertext, &sealed.wrapped_key] {
                forms.push(h.as_bytes().to_vec());
                forms.push(hex::decode(h).unwrap());
            }
            Some((rec.seq(), forms))
        })
        .collect()
}

#[test]
fn a_deleted_secret_is_in_no_file_and_resolves_for_nobody_while_the_log_verifies() {
    let mut d = Daemon::start();
    let cred = d.world();
    let o = d.resolve(&cred);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        value(2),
        "{}",
        stderr(&o)
    );
    let sealed = sealed_forms(&d);
    assert_eq!(sealed.len(), 2, "two versions sealed");
    // Sanity: before the deletion, each version's ciphertext and wrapped key are on disk.
    let before = files_under(&d.home);
    for (seq, forms) in &sealed {
        for f in forms.iter().step_by(2) {
            assert!(
                before.iter().any(|(_, b)| contains(b, f)),
                "event {seq}: not on disk before the deletion"
            );
        }
    }

    // Without a terminal and without --yes: refused, nothing deleted.
    let o = d.cli(&["secret", "delete", "openai/prod"], None, None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("without confirmation") && stderr(&o).contains("--yes"),
        "{}",
        stderr(&o)
    );
    assert!(d.resolve(&cred).status.success());

    let out = d.ok(
        &["--json", "secret", "delete", "openai/prod", "--yes"],
        None,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["deleted"].as_bool(),
            v["erased"].as_bool(),
            v["versions"].as_u64()
        ),
        (Some(true), Some(true), Some(2)),
        "{out}"
    );
    assert!(v.get("erase_error").is_none(), "{out}");
    let deletion = v["event"].as_u64().unwrap();

    // The event says who destroyed what: the two sealed versions, by their numbers.
    let events = d.events();
    let (_, Event::SecretDeleted { secret, erased, by }) =
        events.iter().find(|(s, _)| *s == deletion).unwrap()
    else {
        panic!("event {deletion} is not the deletion")
    };
    assert_eq!(secret.as_str(), "openai/prod");
    assert_eq!(erased, &sealed.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    assert!(by.to_string().starts_with("member:"), "{by}");

    // The ciphertexts and wrapped keys are in no file under the state directory.
    let home = d.home.clone();
    let check_gone = |when: &str| {
        for (path, bytes) in files_under(&home) {
            for (seq, forms) in &sealed {
                for f in forms {
                    assert!(
                        !contains(&bytes, f),
                        "{when}: event {seq}'s sealed bytes are still in {}",
                        path.display()
                    );
                }
            }
            assert!(!contains(&bytes, CANARY.as_bytes()), "{}", path.display());
        }
    };
    check_gone("after the deletion");
    let r = LogReader::open(&d.log_dir(), None).unwrap();
    for (seq, _) in &sealed {
        let rec = r.get(*seq).unwrap();
        assert!(rec.erased && rec.body.is_none(), "event {seq}");
    }

    // It resolves for nobody, and the denial is recorded with its reason.
    let o = d.resolve(&cred);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let denied = d.events().into_iter().rev().find_map(|(_, e)| match e {
        Event::ResolutionDenied { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(denied.as_deref(), Some("secret deleted"));
    // Its name is not reused, and it cannot be rotated, revoked or granted.
    let o = d.cli(
        &["secret", "put", "openai/prod", "--project", "demo"],
        Some(&value(3)),
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("was deleted") && stderr(&o).contains("never reused"),
        "{}",
        stderr(&o)
    );
    for args in [
        &["secret", "rotate", "openai/prod"][..],
        &["secret", "revoke", "openai/prod"],
        &["secret", "delete", "openai/prod", "--yes"],
        &[
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
        ],
    ] {
        let o = d.cli(args, Some(&value(4)), None);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("was deleted"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let list: Value = serde_json::from_str(&d.ok(&["--json", "secret", "list"], None)).unwrap();
    let s = &list["secrets"][0];
    assert_eq!(
        (s["deleted"].as_bool(), s["versions"].as_u64()),
        (Some(true), Some(2))
    );
    assert!(d.ok(&["secret", "list"], None).contains("deleted"));

    // The log verifies, saying what was erased.
    let o = d.cli(&["log", "verify", "--all-signatures"], None, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("erased:          2"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A restart replays it: still deleted, still verifying, still nowhere on disk.
    d.stop();
    d.run();
    let o = d.resolve(&cred);
    assert_eq!(o.status.code(), Some(3));
    let v: Value = serde_json::from_str(&d.ok(&["--json", "log", "verify"], None)).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["erased_bodies"].as_u64()),
        (Some(true), Some(2))
    );
    check_gone("after a restart");

    // The export verifies offline, with the public key alone.
    let bundle = d.t.path().join("audit.bundle");
    d.ok(&["log", "export", "--out", bundle.to_str().unwrap()], None);
    let key = d.home.join("log.pub");
    let v: Value = serde_json::from_str(&d.ok(
        &[
            "--json",
            "log",
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        None,
    ))
    .unwrap();
    assert_eq!(v["ok"].as_bool(), Some(true), "{v}");
}

#[test]
fn a_running_agent_holding_a_deleted_secret_is_stopped() {
    let d = Daemon::start();
    let cred = d.world();
    let started = d.t.path().join("started");
    let mut run = d
        .bin()
        .args([
            "run",
            "--watch",
            "--stop-grace",
            "5",
            "--project",
            "demo",
            "--env",
            "KEY=openai/prod",
            "--",
            "sh",
            "-c",
            &format!("echo $$ > {}; exec sleep 60", started.display()),
        ])
        .env("SCOPEHOLD_TOKEN", &cred)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&started).map_or(true, |s| s.trim().is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the child did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.ok(&["secret", "delete", "openai/prod", "--yes"], None);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "run did not stop after the deletion"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("the command was stopped"), "{err}");
    assert!(!err.contains(CANARY), "{err}");
}

/// Rewrites event `seq`'s frame in the log as an erasure would, by hand: what someone with
/// write access to the files, and no business erasing, could do.
fn erase_by_hand(log_dir: &Path, seq: u64) {
    let r = LogReader::open(log_dir, None).unwrap();
    let rec = r.get(seq).unwrap();
    for seg in r.segments() {
        let mut bytes = std::fs::read(&seg).unwrap();
        let Some(at) = bytes
            .windows(rec.envelope_bytes.len())
            .position(|w| w == &rec.envelope_bytes[..])
        else {
            continue;
        };
        let start = at - (codec::FRAME_HEADER_LEN + 1 + 2);
        let len = codec::frame_extent(&bytes[start..]).unwrap();
        let mut erased = Vec::new();
        codec::put_erased_event_frame(
            &mut erased,
            &rec.envelope_bytes,
            rec.envelope.body_len as usize,
        );
        assert_eq!(erased.len(), len);
        bytes.splice(start..start + len, erased);
        std::fs::write(&seg, bytes).unwrap();
        return;
    }
    panic!("event {seq} not found");
}

#[test]
fn an_erasure_no_deletion_accounts_for_stops_the_daemon_and_fails_verification() {
    for kind in [
        EventKind::SecretVersionSealed,
        EventKind::AgentCredentialIssued,
    ] {
        let mut d = Daemon::start();
        d.world();
        d.stop();
        let seq = LogReader::open(&d.log_dir(), None)
            .unwrap()
            .events_from(0)
            .unwrap()
            .map(|r| r.unwrap())
            .find(|r| r.envelope.kind == kind.number())
            .unwrap()
            .seq();
        erase_by_hand(&d.log_dir(), seq);

        // The log's own checks pass (it cannot tell who erased it); ScopeHold's do not.
        let o = d.cli(&["log", "verify"], None, None);
        assert_eq!(o.status.code(), Some(5), "{kind}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("event {seq} ({kind})"))
                && out.contains("no later secret_deleted event lists it"),
            "{kind}: {out}"
        );
        let (code, err) = d.refused_start();
        assert_ne!(code, Some(0), "{kind}");
        assert!(
            err.contains(&format!("event {seq} ({kind}) was erased from the log"))
                && err.contains("refusing to build state"),
            "{kind}: {err}"
        );
    }
}

#[test]
fn a_deletion_whose_erasure_did_not_happen_is_erased_at_the_next_start() {
    let mut d = Daemon::start();
    let cred = d.world();
    let sealed = sealed_forms(&d);
    d.stop();
    // As a crash right after the deletion became durable would leave it: the event is in the
    // log (appended here with the log key, as the daemon does), the sealed values are not
    // erased yet.
    {
        let log = scopehold_log::Log::open(
            &d.log_dir(),
            scopehold_log::LogKey::load(&d.home.join("log.key")).unwrap(),
            scopehold_log::LogOptions {
                checkpoint_file: Some(d.home.join("checkpoint")),
                ..Default::default()
            },
        )
        .unwrap();
        let ev = Event::SecretDeleted {
            secret: "openai/prod".parse().unwrap(),
            erased: sealed.iter().map(|(s, _)| *s).collect(),
            by: scopehold::domain::Actor::Init,
        };
        log.append(ev.to_entry().unwrap()).unwrap();
        log.close().unwrap();
    }
    let on_disk = |d: &Daemon| {
        files_under(&d.home)
            .iter()
            .any(|(_, b)| sealed.iter().any(|(_, f)| contains(b, &f[0])))
    };
    assert!(on_disk(&d));
    d.run();
    assert!(!on_disk(&d), "the erasure was not finished at start-up");
    assert_eq!(d.resolve(&cred).status.code(), Some(3));
    let v: Value = serde_json::from_str(&d.ok(&["--json", "log", "verify"], None)).unwrap();
    assert_eq!(v["erased_bodies"].as_u64(), Some(2), "{v}");
}

/// Storage whose in-place overwrites fail (a broken disk under the erasure only).
#[derive(Debug)]
struct NoOverwrite;

impl scopehold_log::Storage for NoOverwrite {
    fn create_new(&self, p: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        scopehold_log::StdStorage.create_new(p)
    }
    fn open_append(&self, p: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        scopehold_log::StdStorage.open_append(p)
    }
    fn open_at(
        &self,
        p: &Path,
        offset: u64,
    ) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        scopehold_log::StdStorage.open_at(p, offset)
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        scopehold_log::StdStorage.rename(a, b)
    }
    fn sync_dir(&self, d: &Path) -> std::io::Result<()> {
        scopehold_log::StdStorage.sync_dir(d)
    }
    fn remove(&self, p: &Path) -> std::io::Result<()> {
        scopehold_log::StdStorage.remove(p)
    }
    fn open_overwrite(&self, _: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        Err(std::io::Error::from_raw_os_error(5)) // EIO
    }
}

#[test]
fn a_failed_erasure_leaves_the_deletion_standing_says_so_and_is_finished_at_the_next_start() {
    use scopehold::daemon::{Engine, Home, Peer};
    use scopehold::domain::Command;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(Some(dir.path().join("state")), None).unwrap();
    home.init().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock: scopehold_log::Clock = Arc::new(|| 1_800_000_000_000);
    let engine = Engine::open_with_storage(&home, clock.clone(), Arc::new(NoOverwrite)).unwrap();
    let secret: scopehold::domain::SecretName = "openai/prod".parse().unwrap();
    let shredded = rt.block_on(async {
        let me = engine
            .authenticate(None, Peer::local(nix::unistd::geteuid().as_raw(), None))
            .await
            .unwrap();
        let project = "demo".parse().unwrap();
        engine
            .execute(
                &me,
                &Command::CreateProject {
                    project: "demo".parse().unwrap(),
                },
            )
            .await
            .unwrap();
        let sealed = engine
            .master()
            .seal(secret.as_str(), 1, value(1).as_bytes())
            .unwrap();
        engine
            .execute(
                &me,
                &Command::PutSecret {
                    secret: secret.clone(),
                    projects: vec![project],
                    sealed,
                },
            )
            .await
            .unwrap();
        engine.delete_secret(&me, &secret).await.unwrap()
    });
    // The deletion is recorded and stands; the answer says the values are still there.
    let why = shredded.erase_error.expect("the erasure failed");
    assert!(why.contains("stopped after a storage failure"), "{why}");
    assert!(engine.read(|st| st.secrets[&secret].deleted));
    // As after any storage failure, the log writer stopped: nothing more is served.
    assert!(engine.log().status().poisoned.is_some());
    let _ = engine.close();
    let journal_present = || {
        files_under(&home.log_dir())
            .iter()
            .any(|(p, _)| p.file_name().is_some_and(|n| n == "erase.journal"))
    };
    // The journal was written before the overwrite failed: it stays for the next open.
    assert!(journal_present());
    // The next start finishes it (from the journal, or from the deletion in the log).
    let engine =
        Engine::open_with_storage(&home, clock, Arc::new(scopehold_log::StdStorage)).unwrap();
    assert!(engine.log().status().poisoned.is_none());
    assert!(!journal_present());
    let r = LogReader::open(&home.log_dir(), None).unwrap();
    let erased = r
        .events_from(0)
        .unwrap()
        .filter(|rec| rec.as_ref().unwrap().erased)
        .count();
    assert_eq!(erased, 1);
    let _ = engine.close();
}
