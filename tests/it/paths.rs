//! Custody at rest and on paths: sealed key files, passphrase changes, state directories,
//! outputs and the socket that refuse to be redirected, and a CLI that checks who answers.
//! The binary on real files; tests that need a second uid create a real user (and skip,
//! saying so, when not root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use scopehold::daemon::Home;

use crate::users::{Killed, TestUser};
use scopehold::daemon::keyfile::{self, KeyFile, Passphrase, PassphraseSource, Role};
use zeroize::Zeroizing;

use crate::common::{canary_forms, contains};

const PASS: &str = "PASS-CANARY-correct-horse-battery-4f1d";
const VALUE: &str = "VALUE-CANARY-sk-live-8c7b6a5948372615";
const TOKEN: &str = "shk_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    // Never the real user's state, socket, passphrase or daemon uid; no terminal to prompt on.
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

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", err(&o));
    o
}

/// A passphrase file (0600), with or without the trailing newline a shell's `echo` leaves.
fn pass_file(dir: &Path, name: &str, pass: &str, newline: bool) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{pass}{}", if newline { "\n" } else { "" })).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn passphrase(s: &str) -> Passphrase {
    Passphrase::new(Zeroizing::new(s.to_string())).unwrap()
}

/// The raw key of `role` in `home`, opened with `pass` (the test's own look at the secret it
/// then hunts for).
fn raw_key(home: &Path, role: Role, pass: Option<&str>) -> [u8; 32] {
    let path = home.join(role.file_name());
    let f = std::fs::File::open(&path).unwrap();
    let kf = KeyFile::from_file(f, &path).unwrap();
    let p = pass.map(passphrase);
    *kf.open(role, &path, p.as_ref()).unwrap()
}

fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else if p.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn assert_absent(files: &[(PathBuf, Vec<u8>)], needle: &[u8], what: &str) {
    for (p, bytes) in files {
        assert!(!contains(bytes, needle), "{what} found in {}", p.display());
    }
}

struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
}

impl Daemon {
    /// Runs `c daemon ARGS...` until it listens on `socket`.
    fn start(mut c: Command, socket: &Path, args: &[&str]) -> Self {
        let mut child = c
            .arg("daemon")
            .args(args)
            .env("SCOPEHOLD_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..400 {
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

    /// SIGTERM, then everything it printed.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let o = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(o.status.success(), "the daemon failed: {}", err(&o));
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn put_secret(home: &Path, socket: &Path, value: &str) -> Output {
    let s = socket.to_str().unwrap();
    ok(run(home, &["--socket", s, "project", "create", "demo"]));
    let mut c = bin()
        .arg("--home")
        .arg(home)
        .args([
            "--socket",
            s,
            "secret",
            "put",
            "openai/prod",
            "--project",
            "demo",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), value.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn a_copy_of_a_sealed_state_directory_decrypts_nothing_and_signs_nothing() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let pp = pass_file(t.path(), "pass", PASS, true);
    let o = ok(run(
        &home,
        &["init", "--passphrase-file", pp.to_str().unwrap()],
    ));
    let mut printed = format!("{}{}", String::from_utf8_lossy(&o.stdout), err(&o));

    // The daemon starts with the passphrase and stores a value.
    let sock = t.path().join("s.sock");
    let mut c = bin();
    c.arg("--home")
        .arg(&home)
        .arg("--socket")
        .arg(&sock)
        .env("SCOPEHOLD_PASSPHRASE_FILE", &pp);
    let d = Daemon::start(c, &sock, &[]);
    let o = put_secret(&home, &d.socket, VALUE);
    printed += &format!("{}{}", String::from_utf8_lossy(&o.stdout), err(&o));
    assert!(o.status.success(), "{}", err(&o));
    printed += &d.stop();

    let master = raw_key(&home, Role::Master, Some(PASS));
    let log = raw_key(&home, Role::Log, Some(PASS));
    // Neither the passphrase nor a key ever reached the daemon's or the CLI's output
    // (debug tracing on): the passphrase in every encoding, the keys raw and in hex.
    for form in canary_forms(PASS) {
        assert!(
            !contains(printed.as_bytes(), &form),
            "the passphrase was printed"
        );
    }
    for (k, what) in [(&master, "the master key"), (&log, "the log key")] {
        for form in [
            k.to_vec(),
            hex::encode(k).into_bytes(),
            hex::encode_upper(k).into_bytes(),
        ] {
            assert!(!contains(printed.as_bytes(), &form), "{what} was printed");
        }
    }

    // A copy of the state directory, as a backup or another uid's process would take it.
    let copy = t.path().join("copy");
    assert!(
        Command::new("cp")
            .args(["-a"])
            .arg(&home)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let files = all_files(&copy);
    assert!(files.len() >= 5, "the copy holds the keys and the log");
    for (k, what) in [(&master, "master key"), (&log, "log key")] {
        assert_absent(&files, &k[..], what);
        assert_absent(&files, hex::encode(k).as_bytes(), what);
        assert_absent(&files, hex::encode_upper(k).as_bytes(), what);
    }
    for form in canary_forms(VALUE).iter().chain(canary_forms(PASS).iter()) {
        assert_absent(&files, form, "a canary");
    }

    // Without the passphrase: no terminal to ask on, refused clearly, before any socket.
    let sock2 = t.path().join("copy.sock");
    let o = run(&copy, &["--socket", sock2.to_str().unwrap(), "daemon"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("passphrase is needed and there is no terminal"),
        "{}",
        err(&o)
    );
    assert!(!sock2.exists());
    // Nor through the library: no log key to sign with, no master key to open values.
    let h = Home::new(Some(copy.clone()), None).unwrap();
    let e = h.load_keys().unwrap_err();
    assert!(format!("{e:#}").contains("no terminal"), "{e:#}");
    assert!(scopehold::daemon::Engine::open(&h, scopehold_log::system_clock()).is_err());

    // With a wrong passphrase: refused, saying so.
    let bad = pass_file(t.path(), "bad", "not-the-passphrase", true);
    let o = run(
        &copy,
        &[
            "--socket",
            sock2.to_str().unwrap(),
            "daemon",
            "--passphrase-file",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
    assert!(!err(&o).contains("not-the-passphrase"), "{}", err(&o));

    // The right passphrase opens the copy (so the refusals above are about the passphrase),
    // written this time without its trailing newline: the newline is not part of it.
    let exact = pass_file(t.path(), "exact", PASS, false);
    let h = Home {
        passphrase: PassphraseSource { file: Some(exact) },
        ..Home::new(Some(copy), None).unwrap()
    };
    let (lk, _) = h.load_keys().unwrap();
    assert_eq!(
        lk.public().to_hex(),
        std::fs::read_to_string(home.join("log.pub"))
            .unwrap()
            .trim()
    );
}

#[test]
fn passphrase_change_rewraps_both_keys_and_leaves_the_log_alone() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let p1 = pass_file(t.path(), "p1", "first passphrase", true);
    let p2 = pass_file(t.path(), "p2", "second passphrase", true);
    ok(run(
        &home,
        &["init", "--passphrase-file", p1.to_str().unwrap()],
    ));
    let (m, l) = (
        raw_key(&home, Role::Master, Some("first passphrase")),
        raw_key(&home, Role::Log, Some("first passphrase")),
    );
    let log_before = all_files(&home.join("log"));
    let cp_before = std::fs::read(home.join("checkpoint")).unwrap();
    let sealed_before = std::fs::read(home.join("master.key")).unwrap();

    // A wrong old passphrase changes nothing.
    let o = run(
        &home,
        &[
            "passphrase",
            "change",
            "--passphrase-file",
            p2.to_str().unwrap(),
            "--new-passphrase-file",
            p1.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
    assert_eq!(
        std::fs::read(home.join("master.key")).unwrap(),
        sealed_before
    );

    ok(run(
        &home,
        &[
            "passphrase",
            "change",
            "--passphrase-file",
            p1.to_str().unwrap(),
            "--new-passphrase-file",
            p2.to_str().unwrap(),
        ],
    ));
    // The same keys, now under the new passphrase only; the log and checkpoint untouched;
    // no temporary file left; modes kept.
    assert_eq!(raw_key(&home, Role::Master, Some("second passphrase")), m);
    assert_eq!(raw_key(&home, Role::Log, Some("second passphrase")), l);
    assert_ne!(
        std::fs::read(home.join("master.key")).unwrap(),
        sealed_before
    );
    assert_eq!(all_files(&home.join("log")), log_before);
    assert_eq!(std::fs::read(home.join("checkpoint")).unwrap(), cp_before);
    for f in ["master.key", "log.key"] {
        assert_eq!(
            std::fs::metadata(home.join(f)).unwrap().mode() & 0o777,
            0o600
        );
        assert!(!home.join(format!("{f}.new")).exists());
    }
    let sock = t.path().join("s.sock");
    let o = run(
        &home,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "daemon",
            "--passphrase-file",
            p1.to_str().unwrap(),
        ],
    );
    assert!(err(&o).contains("wrong passphrase"), "{}", err(&o));
    let mut c = bin();
    c.arg("--home").arg(&home).arg("--socket").arg(&sock);
    let d = Daemon::start(c, &sock, &["--passphrase-file", p2.to_str().unwrap()]);
    let out = d.stop();
    assert!(!out.contains("second passphrase"));
}

#[test]
fn passphrase_change_seals_an_unsealed_state() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    let m = raw_key(&home, Role::Master, None);
    let l = raw_key(&home, Role::Log, None);
    let p = pass_file(t.path(), "p", PASS, true);
    let o = ok(run(
        &home,
        &[
            "--json",
            "passphrase",
            "change",
            "--new-passphrase-file",
            p.to_str().unwrap(),
        ],
    ));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["was_sealed"], false);
    assert_eq!(raw_key(&home, Role::Master, Some(PASS)), m);
    assert_eq!(raw_key(&home, Role::Log, Some(PASS)), l);
    let files = all_files(&home);
    for k in [&m, &l] {
        assert_absent(&files, &k[..], "a key");
        assert_absent(&files, hex::encode(k).as_bytes(), "a key");
    }
    // Sealed now: the daemon needs the passphrase.
    let o = run(
        &home,
        &["--socket", t.path().join("s").to_str().unwrap(), "daemon"],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("no terminal"), "{}", err(&o));
}

#[test]
fn an_interrupted_passphrase_change_is_finished_with_the_new_passphrase() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    let p1 = pass_file(t.path(), "p1", "old one", true);
    ok(run(
        &home,
        &["init", "--passphrase-file", p1.to_str().unwrap()],
    ));
    let m = raw_key(&home, Role::Master, Some("old one"));
    let l = raw_key(&home, Role::Log, Some("old one"));
    let new = passphrase("new one");
    let k = keyfile::KDF_WRITE;
    // Cut off after the first rename: log.key already under the new passphrase,
    // master.key still under the old one, master.key.new waiting.
    let write = |name: &str, text: String| {
        std::fs::write(home.join(name), text).unwrap();
        std::fs::set_permissions(home.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    std::fs::remove_file(home.join("log.key")).unwrap();
    write("log.key", keyfile::seal(Role::Log, &l, &new, k).unwrap());
    write(
        "master.key.new",
        keyfile::seal(Role::Master, &m, &new, k).unwrap(),
    );
    // The old passphrase no longer opens the state; the new one does and finishes the job.
    let h = |p: &Path| Home {
        passphrase: PassphraseSource {
            file: Some(p.to_path_buf()),
        },
        ..Home::new(Some(home.clone()), None).unwrap()
    };
    assert!(h(&p1).load_keys().is_err());
    let p2 = pass_file(t.path(), "p2", "new one", true);
    h(&p2).load_keys().unwrap();
    assert!(!home.join("master.key.new").exists());
    assert_eq!(raw_key(&home, Role::Master, Some("new one")), m);

    // Cut off before any rename and then abandoned: the stale new files are removed when the
    // old passphrase opens the state.
    write(
        "master.key.new",
        keyfile::seal(Role::Master, &m, &passphrase("abandoned"), k).unwrap(),
    );
    write(
        "log.key.new",
        keyfile::seal(Role::Log, &l, &passphrase("abandoned"), k).unwrap(),
    );
    h(&p2).load_keys().unwrap();
    assert!(!home.join("master.key.new").exists());
    assert!(!home.join("log.key.new").exists());
    assert_eq!(raw_key(&home, Role::Log, Some("new one")), l);
}

#[test]
fn a_passphrase_file_any_user_can_read_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let p = pass_file(t.path(), "p", PASS, true);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(
        &t.path().join("state"),
        &["init", "--passphrase-file", p.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("can be read by any user"), "{}", err(&o));
    assert!(!err(&o).contains(PASS));
    assert!(!t.path().join("state/log.key").exists());
}

#[test]
fn a_state_directory_others_can_write_or_a_symlink_is_refused_not_adopted() {
    let t = tempfile::tempdir().unwrap();
    // Group- or world-writable: refused at init (nothing created in it) and at start.
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = run(&open, &["init"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("can be written by group or others"),
        "{}",
        err(&o)
    );
    assert!(std::fs::read_dir(&open).unwrap().next().is_none());
    assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o777);

    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o770)).unwrap();
    let sock = t.path().join("s.sock");
    let o = run(&home, &["--socket", sock.to_str().unwrap(), "daemon"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("can be written by group or others"),
        "{}",
        err(&o)
    );
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A symlink to a directory: refused, and its target neither chmodded nor written.
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = run(&link, &["init"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("is a symlink"), "{}", err(&o));
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o755);
    assert!(std::fs::read_dir(&target).unwrap().next().is_none());
    // A symlink to an initialised state directory: the daemon refuses it too.
    let link2 = t.path().join("link2");
    std::os::unix::fs::symlink(&home, &link2).unwrap();
    let o = run(&link2, &["--socket", sock.to_str().unwrap(), "daemon"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("is a symlink"), "{}", err(&o));

    // A key file replaced by a symlink (to a copy of the real key) is not followed.
    let copy = t.path().join("master.copy");
    std::fs::copy(home.join("master.key"), &copy).unwrap();
    std::fs::remove_file(home.join("master.key")).unwrap();
    std::os::unix::fs::symlink(&copy, home.join("master.key")).unwrap();
    let o = run(&home, &["--socket", sock.to_str().unwrap(), "daemon"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("a symlink is refused"), "{}", err(&o));
    assert!(!sock.exists());
}

#[test]
fn log_export_and_checkpoint_never_write_through_a_symlink() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    let victim = t.path().join("victim");
    std::fs::write(&victim, "UNTOUCHED").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = t.path().join("out");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let o = out.to_str().unwrap();
    for args in [
        vec!["log", "export", "--out", o],
        vec!["log", "export", "--format", "jsonl", "--out", o],
        vec!["log", "checkpoint", "--out", o],
    ] {
        let r = run(&home, &args);
        assert!(!r.status.success(), "{args:?} wrote through the symlink");
        assert!(err(&r).contains("is a symlink"), "{}", err(&r));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "UNTOUCHED");
        assert!(std::fs::symlink_metadata(&out).unwrap().is_symlink());
    }
    // The old temporary name beside the output (`out.partial`) planted as a symlink is not
    // followed either: the output is written, the victim untouched.
    let real = t.path().join("bundle");
    std::os::unix::fs::symlink(&victim, t.path().join("bundle.partial")).unwrap();
    for args in [
        vec!["log", "export", "--out", real.to_str().unwrap()],
        vec!["log", "checkpoint", "--out", real.to_str().unwrap()],
    ] {
        ok(run(&home, &args));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "UNTOUCHED");
        assert!(!std::fs::symlink_metadata(&real).unwrap().is_symlink());
    }
    // And what was written verifies (the safe path still writes a real export).
    ok(run(
        &home,
        &["log", "export", "--out", real.to_str().unwrap()],
    ));
    ok(run(
        &home,
        &[
            "log",
            "verify",
            "--bundle",
            real.to_str().unwrap(),
            "--key",
            home.join("log.pub").to_str().unwrap(),
        ],
    ));
}

#[test]
fn the_socket_is_born_private_in_a_directory_only_the_daemon_can_write() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    // A missing directory is made 0700; the socket is 0600 from the moment it has its name.
    let sock = t.path().join("run/sub/scopehold.sock");
    let mut c = bin();
    c.arg("--home").arg(&home).arg("--socket").arg(&sock);
    let d = Daemon::start(c, &sock, &[]);
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(sock.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );
    // No private bind directory left behind.
    let names: Vec<_> = std::fs::read_dir(sock.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("scopehold.sock")]);
    d.stop();

    // A socket directory others can write (where a path could be swapped) is refused.
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let o = run(
        &home,
        &[
            "--socket",
            shared.join("s.sock").to_str().unwrap(),
            "daemon",
        ],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("writable by no one else"), "{}", err(&o));
    // A symlinked socket directory is refused.
    let link = t.path().join("runlink");
    std::os::unix::fs::symlink(sock.parent().unwrap(), &link).unwrap();
    let o = run(
        &home,
        &["--socket", link.join("s.sock").to_str().unwrap(), "daemon"],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("is a symlink"), "{}", err(&o));
}

/// A listener run by `user` at `socket` that appends every byte it receives to `capture`.
fn fake_listener(user: &TestUser, socket: &Path, capture: &Path) -> Killed {
    const PERL: &str = r#"
        use IO::Socket::UNIX;
        my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 5) or die "listen: $!";
        open(my $o, '>>', $ARGV[1]) or die "capture: $!";
        $o->autoflush(1);
        while (my $c = $s->accept) {
            my $buf;
            eval {
                local $SIG{ALRM} = sub { die "timeout\n" };
                alarm 2;
                while (sysread($c, $buf, 65536)) { print $o $buf; }
                alarm 0;
            };
            close $c;
        }
    "#;
    let child = Killed(
        user.command("/usr/bin/perl")
            .arg("-e")
            .arg(PERL)
            .arg(socket)
            .arg(capture)
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if socket.exists() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the fake listener did not start");
}

#[test]
fn the_cli_sends_no_value_and_no_credential_to_a_listener_of_another_uid() {
    let Some(user) = TestUser::create("t", &["-U"]) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    // The other user's directory, where its listener takes the socket's place.
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.uid), Some(user.gid)).unwrap();
    let sock = theirs.join("scopehold.sock");
    let capture = theirs.join("captured");
    let _listener = fake_listener(&user, &sock, &capture);

    let send_value = |extra: &[&str]| {
        let mut c = bin()
            .arg("--home")
            .arg(&home)
            .arg("--socket")
            .arg(&sock)
            .args(extra)
            .args(["secret", "put", "openai/prod", "--project", "demo"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), VALUE.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let o = send_value(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("runs as uid {}", user.uid)),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("nothing was sent"), "{}", err(&o));
    // A credential (an agent's resolve) is refused the same way.
    let o = bin()
        .arg("--home")
        .arg(&home)
        .arg("--socket")
        .arg(&sock)
        .args(["resolve", "openai/prod", "--project", "demo"])
        .env("SCOPEHOLD_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("nothing was sent"), "{}", err(&o));
    std::thread::sleep(Duration::from_millis(300));
    let got = std::fs::read(&capture).unwrap_or_default();
    assert!(
        got.is_empty(),
        "the fake listener received {} bytes",
        got.len()
    );

    // Control: told that the daemon runs as that uid, the CLI sends, and the capture shows
    // it (so an empty capture above means nothing was sent, not that nothing was recorded).
    let uid = user.uid.to_string();
    let o = send_value(&["--daemon-uid", &uid]);
    assert!(!o.status.success());
    let mut got = Vec::new();
    for _ in 0..100 {
        got = std::fs::read(&capture).unwrap_or_default();
        if contains(&got, VALUE.as_bytes()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(contains(&got, VALUE.as_bytes()), "the control sent nothing");
}

#[test]
fn a_state_directory_of_another_uid_is_refused_at_init_and_at_start() {
    let Some(user) = TestUser::create("t", &["-U"]) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.uid), Some(user.gid)).unwrap();
    let o = run(&theirs, &["init"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains(&format!("owned by uid {}", user.uid)),
        "{}",
        err(&o)
    );
    assert!(std::fs::read_dir(&theirs).unwrap().next().is_none());
    assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), user.uid);

    // An initialised state handed to another uid: the daemon refuses to start on it.
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    assert!(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(&home)
            .status()
            .unwrap()
            .success()
    );
    let sock = t.path().join("s.sock");
    let o = run(&home, &["--socket", sock.to_str().unwrap(), "daemon"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains(&format!("owned by uid {}", user.uid)),
        "{}",
        err(&o)
    );
    assert!(!sock.exists());
}

#[test]
fn socket_group_gives_the_default_socket_a_directory_of_its_own_the_group_can_reach() {
    let Some(user) = TestUser::create("t", &["-U"]) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = t.path().join("state");
    ok(run(&home, &["init"]));
    let rundir = t.path().join("run");
    let sock = rundir.join("scopehold.sock");
    let mut c = bin();
    c.arg("--home").arg(&home).env("RUNTIME_DIRECTORY", &rundir);
    let d = Daemon::start(c, &sock, &["--socket-group", &user.name]);
    let dm = std::fs::metadata(&rundir).unwrap();
    assert_eq!(dm.mode() & 0o777, 0o750);
    assert_eq!(dm.gid(), user.gid);
    let sm = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(sm.mode() & 0o777, 0o660);
    assert_eq!(sm.gid(), user.gid);
    // The state directory stays 0700 and holds no socket.
    assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
    assert!(!home.join("scopehold.sock").exists());

    // A member of the group reaches the daemon; it checks the daemon's uid (told: root).
    let o = user
        .command(env!("CARGO_BIN_EXE_scopehold"))
        .env_clear()
        .env("HOME", "/nonexistent-home")
        .args(["--socket", sock.to_str().unwrap(), "--daemon-uid", "0"])
        .args(["project", "list"])
        .output()
        .unwrap();
    // Not a member of ScopeHold: refused by the daemon (exit 3), which it had to reach.
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    // Without being told, the CLI expects the owner of the socket's directory (root's, and
    // nobody else can write in it), so it reaches the daemon the same way.
    let o = user
        .command(env!("CARGO_BIN_EXE_scopehold"))
        .env_clear()
        .env("HOME", "/nonexistent-home")
        .args(["--socket", sock.to_str().unwrap(), "project", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    // Told another uid, it refuses to talk to root's daemon and sends nothing.
    let o = user
        .command(env!("CARGO_BIN_EXE_scopehold"))
        .env_clear()
        .env("HOME", "/nonexistent-home")
        .args([
            "--socket",
            sock.to_str().unwrap(),
            "--daemon-uid",
            &user.uid.to_string(),
        ])
        .args(["project", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("runs as uid 0"), "{}", err(&o));
    d.stop();
}
