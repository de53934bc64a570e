//! `scopehold backup` and `scopehold restore`, with the real binary and a real daemon: a backup
//! taken while resolutions are appended is a verified prefix of the log ending at a checkpoint,
//! restores into a state that serves the same values, and never holds a plaintext key; a
//! damaged backup, a wrong passphrase, a non-empty or live target are refused with nothing
//! written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use scopehold_log::{Item, LogReader, PublicKey};

use crate::common::{canary_forms, contains};

const VALUE: &str = "VALUE-CANARY-sk-live-backup-5e4d3c2b1a09";
const PASS: &str = "PASS-CANARY-backup-staple-7a6b";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    // Never the real user's state, socket or passphrase; no terminal to prompt on.
    c.env_remove("SCOPEHOLD_HOME")
        .env_remove("SCOPEHOLD_SOCKET")
        .env_remove("SCOPEHOLD_TOKEN")
        .env_remove("SCOPEHOLD_PASSPHRASE_FILE")
        .env_remove("SCOPEHOLD_DAEMON_UID")
        .env_remove("SCOPEHOLD_CHECKPOINT_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUNTIME_DIRECTORY")
        .env("HOME", "/nonexistent-home")
        .stdin(Stdio::null());
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    bin().arg("--home").arg(home).args(args).output().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}{}", out(&o), err(&o));
    o
}

fn pass_file(dir: &Path, name: &str, pass: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every name in `dir` (one level).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(home: &Path, socket: &Path, pass: Option<&Path>) -> Self {
        Self::start_with(home, socket, pass, &[])
    }

    fn start_with(home: &Path, socket: &Path, pass: Option<&Path>, args: &[&str]) -> Self {
        let mut c = bin();
        c.arg("--home")
            .arg(home)
            .arg("--socket")
            .arg(socket)
            .args(args);
        if let Some(p) = pass {
            c.env("SCOPEHOLD_PASSPHRASE_FILE", p);
        }
        let mut child = c
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..800 {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Self {
                    child,
                    socket: socket.to_path_buf(),
                };
            }
            if let Some(st) = child.try_wait().unwrap() {
                let mut e = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut e).unwrap();
                panic!("the daemon exited ({st}): {e}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the daemon did not listen on {}", socket.display());
    }

    fn cli(&self, home: &Path) -> Command {
        let mut c = bin();
        c.arg("--home").arg(home).arg("--socket").arg(&self.socket);
        c
    }

    /// SIGTERM and wait: the daemon closes its log and writes its kept checkpoint.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "the daemon failed: {st}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project, a secret holding VALUE, an agent granted it; returns the agent's credential.
fn provision(d: &Daemon, home: &Path) -> String {
    ok(d.cli(home)
        .args(["project", "create", "demo"])
        .output()
        .unwrap());
    let mut c = d
        .cli(home)
        .args(["secret", "put", "openai/prod", "--project", "demo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), VALUE.as_bytes()).unwrap();
    ok(c.wait_with_output().unwrap());
    let o = ok(d
        .cli(home)
        .args(["agent", "create", "bot"])
        .output()
        .unwrap());
    let cred = out(&o).lines().last().unwrap().trim().to_string();
    ok(d.cli(home)
        .args([
            "grant",
            "create",
            "agent:bot",
            "openai/prod",
            "--project",
            "demo",
        ])
        .output()
        .unwrap());
    cred
}

fn resolve(d: &Daemon, home: &Path, cred: &str) -> Output {
    d.cli(home)
        .env("SCOPEHOLD_TOKEN", cred)
        .args(["resolve", "openai/prod", "--project", "demo"])
        .output()
        .unwrap()
}

/// The raw 32 bytes of an unsealed key file.
fn raw_key(home: &Path, name: &str) -> Vec<u8> {
    let b = std::fs::read(home.join(name)).unwrap();
    assert_eq!(b.len(), 32, "{name} is a plain key");
    b
}

fn assert_no_key(backup: &[u8], key: &[u8], what: &str) {
    for form in [
        key.to_vec(),
        hex::encode(key).into_bytes(),
        hex::encode_upper(key).into_bytes(),
    ] {
        assert!(!contains(backup, &form), "{what} is in the backup");
    }
}

#[test]
fn a_backup_taken_while_the_daemon_appends_restores_a_verified_prefix_that_serves_its_values() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    let d = Daemon::start(&home, &t.path().join("s.sock"), None);
    let cred = provision(&d, &home);
    assert_eq!(out(&ok(resolve(&d, &home, &cred))).trim(), VALUE);

    // Resolutions appended from another thread for as long as the backups are being taken.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let appender = {
        let (stop, done) = (stop.clone(), done.clone());
        let mut c = d.cli(&home);
        c.env("SCOPEHOLD_TOKEN", &cred)
            .args(["resolve", "openai/prod", "--project", "demo"]);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let o = c.output().unwrap();
                assert!(o.status.success(), "{}", err(&o));
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while done.load(Ordering::Relaxed) < 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = LogReader::open(&home.join("log"), None).unwrap().size();
    let pp = pass_file(t.path(), "pass", PASS);
    let bk = t.path().join("state.backup");
    let o = ok(run(
        &home,
        &[
            "--json",
            "backup",
            "--out",
            bk.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
        ],
    ));
    let summary: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let during = done.load(Ordering::Relaxed);
    // More appends after the backup, so the original runs ahead of it.
    while done.load(Ordering::Relaxed) < during + 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    d.stop();

    assert_eq!(mode(&bk), 0o600, "the backup is created 0600");
    assert_eq!(summary["keys_sealed_by_backup"], true);
    let events = summary["events"].as_u64().unwrap();
    assert!(
        events >= before,
        "the backup holds what was committed when it started"
    );

    // No plaintext key, in any encoding, and no value; the passphrase is not in it either.
    let bytes = std::fs::read(&bk).unwrap();
    for name in ["master.key", "log.key", "ca.key"] {
        assert_no_key(&bytes, &raw_key(&home, name), name);
    }
    for form in canary_forms(VALUE).iter().chain(canary_forms(PASS).iter()) {
        assert!(!contains(&bytes, form), "a canary is in the backup");
    }
    assert!(contains(
        &bytes,
        b"scopehold sealed key v1\nrole: master.key"
    ));

    // Restore into a new state directory.
    let restored = t.path().join("restored");
    let o = ok(run(
        &restored,
        &[
            "restore",
            "--from",
            bk.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
        ],
    ));
    let text = out(&o);
    assert!(
        text.contains(&format!("restored {events} events")),
        "{text}"
    );
    assert!(
        text.contains("sealed under the backup's passphrase"),
        "{text}"
    );
    assert_eq!(mode(&restored), 0o700);
    assert_eq!(mode(&restored.join("log")), 0o700);
    for k in ["master.key", "log.key", "ca.key", "checkpoint"] {
        assert_eq!(mode(&restored.join(k)), 0o600, "{k}");
        if k != "checkpoint" {
            let b = std::fs::read(restored.join(k)).unwrap();
            assert!(b.starts_with(b"scopehold sealed key v1\n"), "{k} is sealed");
        }
    }
    assert_eq!(
        std::fs::read(restored.join("log.pub")).unwrap(),
        std::fs::read(home.join("log.pub")).unwrap()
    );
    let leftovers: Vec<String> = names(t.path())
        .into_iter()
        .filter(|n| n.contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    // The restored log is a prefix of the original that ends at one of its checkpoints.
    let key = PublicKey::from_arg(home.join("log.pub").to_str().unwrap()).unwrap();
    let orig = LogReader::open(&home.join("log"), Some(&key)).unwrap();
    let rest = LogReader::open(&restored.join("log"), Some(&key)).unwrap();
    assert_eq!(rest.size(), events);
    assert!(
        orig.size() > rest.size(),
        "the original ran on after the backup ({} vs {})",
        orig.size(),
        rest.size()
    );
    assert_eq!(rest.log_id(), orig.log_id());
    for seq in 0..rest.size() {
        assert_eq!(
            rest.get(seq).unwrap().hash,
            orig.get(seq).unwrap().hash,
            "event {seq}"
        );
    }
    let cut = *rest.checkpoint();
    let found = orig.iter_from(0).unwrap().any(|i| {
        matches!(i.unwrap(), Item::Checkpoint(c) if c.body.size == cut.body.size && c.body.head == cut.body.head && c.signature == cut.signature)
    });
    assert!(
        found,
        "the restored log ends at a checkpoint of the original"
    );
    for (r, o) in rest.segments().iter().zip(orig.segments()) {
        let (rb, ob) = (std::fs::read(r).unwrap(), std::fs::read(&o).unwrap());
        assert!(
            ob.starts_with(&rb),
            "{} is a prefix of the original's",
            r.display()
        );
    }
    drop((orig, rest));

    // `log verify` passes on the restored state (against its kept checkpoint).
    let o = ok(run(&restored, &["log", "verify", "--all-signatures"]));
    assert!(out(&o).contains("OK"), "{}", out(&o));
    assert!(out(&o).contains("extends:"), "{}", out(&o));

    // A daemon on it (the keys now sealed under the backup's passphrase) serves the value to
    // the same agent, and goes on appending after the restored head.
    let d2 = Daemon::start(&restored, &t.path().join("r.sock"), Some(&pp));
    assert_eq!(out(&ok(resolve(&d2, &restored, &cred))).trim(), VALUE);
    d2.stop();
    let o = ok(run(&restored, &["--json", "log", "verify"]));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert!(v["events"].as_u64().unwrap() > events, "{v}");
}

/// An unsealed state with a backup of it, and the passphrase file that sealed it.
fn backed_up(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let home = t.join("state");
    ok(run(&home, &["init"]));
    let pp = pass_file(t, "pass", PASS);
    let bk = t.join("b");
    ok(run(
        &home,
        &[
            "backup",
            "--out",
            bk.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
        ],
    ));
    (home, bk, pp)
}

fn restore(target: &Path, bk: &Path, pp: &Path) -> Output {
    run(
        target,
        &[
            "restore",
            "--from",
            bk.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
        ],
    )
}

fn no_staging(parent: &Path) {
    let left: Vec<String> = names(parent)
        .into_iter()
        .filter(|n| n.contains(".restore-"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[test]
fn restore_refuses_a_non_empty_target_a_live_one_and_a_wrong_passphrase_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (home, bk, pp) = backed_up(t.path());

    // A directory that holds anything.
    let full = t.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), "mine").unwrap();
    let o = restore(&full, &bk, &pp);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("is not empty"), "{}", err(&o));
    assert_eq!(names(&full), ["notes.txt"]);

    // A state directory a daemon is running on.
    let d = Daemon::start(&home, &t.path().join("s.sock"), None);
    let listed = names(&home);
    let o = restore(&home, &bk, &pp);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("a daemon is running on"), "{}", err(&o));
    assert_eq!(names(&home), listed);
    d.stop();

    // A wrong passphrase, and none at all without a terminal to ask on.
    let target = t.path().join("new");
    let bad = pass_file(t.path(), "bad", "not-the-passphrase");
    let o = restore(&target, &bk, &bad);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
    let o = run(&target, &["restore", "--from", bk.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(err(&o).contains("no terminal"), "{}", err(&o));
    assert!(!target.exists(), "nothing written");
    no_staging(t.path());

    // An empty directory is a fine target; so it then holds a state, and refuses a second one.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(restore(&empty, &bk, &pp));
    assert_eq!(mode(&empty), 0o700);
    let o = restore(&empty, &bk, &pp);
    assert!(err(&o).contains("is not empty"), "{}", err(&o));
    no_staging(t.path());
}

/// The digest over all but the last 32 bytes, as the format defines it.
fn redigest(b: &mut [u8]) {
    let n = b.len() - 32;
    let mut h = blake3::Hasher::new_derive_key("ScopeHold backup v1 digest");
    h.update(&b[..n]);
    let d = *h.finalize().as_bytes();
    b[n..].copy_from_slice(&d);
}

#[test]
fn a_damaged_backup_is_refused_saying_so_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let (_home, bk, pp) = backed_up(t.path());
    let good = std::fs::read(&bk).unwrap();
    let target = t.path().join("target");
    let seg = good
        .windows(8)
        .position(|w| w == b"SHLOGSEG")
        .expect("a segment in the backup");
    // One flipped byte anywhere: the header, an entry, a sealed key, the log, the digest.
    let key = good
        .windows(14)
        .position(|w| w == b"role: log.key\n")
        .unwrap();
    for at in [
        0,
        12,
        20,
        key + 3,
        seg + 100,
        good.len() - 40,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        let f = t.path().join("flipped");
        std::fs::write(&f, &b).unwrap();
        let o = restore(&target, &f, &pp);
        assert_eq!(o.status.code(), Some(5), "byte {at}: {}", err(&o));
        // A changed magic makes it no backup at all, and says that instead.
        assert!(
            err(&o).contains("is damaged or altered")
                || (at < 8 && err(&o).contains("is not a ScopeHold backup")),
            "byte {at}: {}",
            err(&o)
        );
        assert!(
            err(&o).contains("nothing was written"),
            "byte {at}: {}",
            err(&o)
        );
        assert!(!target.exists(), "byte {at}: nothing written");
    }
    // Cut short.
    let f = t.path().join("cut");
    std::fs::write(&f, &good[..good.len() / 2]).unwrap();
    let o = restore(&target, &f, &pp);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("damaged"), "{}", err(&o));

    // An event altered by someone who also recomputed the digest: the log's own checks
    // catch it (a CRC, the chain or a signature), before anything is written.
    // The segment header (54 bytes), the genesis checkpoint's frame (8 + 1 + 82 + 64), then
    // the first event's frame.
    let first_event = seg + 54 + 155;
    let mut b = good.clone();
    b[first_event + 30] ^= 0x01;
    redigest(&mut b);
    std::fs::write(&f, &b).unwrap();
    let o = restore(&target, &f, &pp);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("its log does not verify"), "{}", err(&o));
    assert!(!target.exists());
    no_staging(t.path());

    // The untouched backup still restores.
    ok(restore(&target, &bk, &pp));
}

#[test]
fn backup_refuses_a_plain_key_and_an_existing_file_and_keeps_sealed_keys_as_they_are() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("plain");
    ok(run(&home, &["init"]));
    let bk = t.path().join("b");

    // An unsealed state and no passphrase (no terminal): refused, saying why, no file.
    let o = run(&home, &["backup", "--out", bk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("never holds a plain key"), "{}", err(&o));
    assert!(err(&o).contains("--passphrase-file"), "{}", err(&o));
    assert!(!bk.exists());

    // An existing output is refused unless --force, and left as it was.
    std::fs::write(&bk, "keep me").unwrap();
    let pp = pass_file(t.path(), "pass", PASS);
    let args = |force: bool| {
        let mut a = vec![
            "backup".to_string(),
            "--out".into(),
            bk.to_str().unwrap().into(),
            "--passphrase-file".into(),
            pp.to_str().unwrap().into(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let o = bin()
        .arg("--home")
        .arg(&home)
        .args(args(false))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("refusing to overwrite"), "{}", err(&o));
    assert_eq!(std::fs::read(&bk).unwrap(), b"keep me");
    ok(bin()
        .arg("--home")
        .arg(&home)
        .args(args(true))
        .output()
        .unwrap());
    assert_eq!(mode(&bk), 0o600);

    // A sealed state: its sealed key files go in byte for byte, no passphrase needed; the
    // restore opens them with the state's passphrase and refuses another.
    let sealed = t.path().join("sealed");
    ok(run(
        &sealed,
        &["init", "--passphrase-file", pp.to_str().unwrap()],
    ));
    let sb = t.path().join("sealed.backup");
    let o = ok(run(&sealed, &["backup", "--out", sb.to_str().unwrap()]));
    assert!(
        out(&o).contains("as sealed in the state directory"),
        "{}",
        out(&o)
    );
    let bytes = std::fs::read(&sb).unwrap();
    for k in ["master.key", "log.key", "ca.key"] {
        assert!(
            contains(&bytes, &std::fs::read(sealed.join(k)).unwrap()),
            "{k} as it is"
        );
    }
    let bad = pass_file(t.path(), "bad", "nope-nope");
    let o = run(
        &sealed,
        &[
            "backup",
            "--out",
            t.path().join("x").to_str().unwrap(),
            "--passphrase-file",
            bad.to_str().unwrap(),
        ],
    );
    assert!(
        err(&o).contains("wrong passphrase"),
        "a passphrase given is checked: {}",
        err(&o)
    );
    assert!(!t.path().join("x").exists());
    let o = restore(&t.path().join("r1"), &sb, &bad);
    assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
    let o = ok(restore(&t.path().join("r2"), &sb, &pp));
    assert!(!out(&o).contains("was not sealed"), "{}", out(&o));
    ok(run(&t.path().join("r2"), &["log", "verify"]));
}

#[test]
fn a_restore_behind_a_checkpoint_kept_elsewhere_is_refused_as_a_rollback() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let kept = t.path().join("elsewhere.checkpoint");
    let k = kept.to_str().unwrap();
    ok(run(&home, &["--checkpoint-file", k, "init"]));
    let pp = pass_file(t.path(), "pass", PASS);
    let (old, new) = (t.path().join("old.backup"), t.path().join("new.backup"));
    let backup = |to: &Path| {
        ok(run(
            &home,
            &[
                "--checkpoint-file",
                k,
                "backup",
                "--out",
                to.to_str().unwrap(),
                "--passphrase-file",
                pp.to_str().unwrap(),
            ],
        ))
    };
    backup(&old);
    // The state goes on: the checkpoint kept elsewhere now covers more than the old backup.
    let d = Daemon::start_with(
        &home,
        &t.path().join("s.sock"),
        None,
        &["--checkpoint-file", k],
    );
    ok(d.cli(&home)
        .args(["project", "create", "later"])
        .output()
        .unwrap());
    d.stop();
    backup(&new);

    // Restoring the old backup against it would roll the log back: refused, nothing written.
    let target = t.path().join("restored");
    let o = run(
        &target,
        &[
            "--checkpoint-file",
            k,
            "restore",
            "--from",
            old.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("does not fit this backup"), "{}", err(&o));
    assert!(err(&o).contains("rollback"), "{}", err(&o));
    assert!(!target.exists());
    no_staging(t.path());

    // The new one extends it, and is restored; the kept checkpoint is then the restored log's.
    let before = std::fs::read_to_string(&kept).unwrap();
    let o = ok(run(
        &target,
        &[
            "--checkpoint-file",
            k,
            "--json",
            "restore",
            "--from",
            new.to_str().unwrap(),
            "--passphrase-file",
            pp.to_str().unwrap(),
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["checkpoint_file"], k);
    assert!(
        !target.join("checkpoint").exists(),
        "kept elsewhere, not inside"
    );
    let after = std::fs::read_to_string(&kept).unwrap();
    assert!(after.contains(&format!("size {}", v["events"])), "{after}");
    assert_eq!(
        before, after,
        "the newest backup ends where the state's kept checkpoint is"
    );
    ok(run(&target, &["--checkpoint-file", k, "log", "verify"]));
}
