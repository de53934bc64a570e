//! `scopehold run`'s output masking, against the real daemon and the real binary: values
//! split across writes, in base64 and URL-encoded, on pipes and (through tmux) on a pty;
//! `--no-masking` shows them, so each check here could fail.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{canary_forms, contains};

/// A space, `/`, `+`, `=` and `~`: URL encoders differ on these.
const CANARY: &str = "sk-CANARY-mask 9f/Q+z=Yw~42";
const MASK: &str = "<scopehold:openai/prod>";

/// A daemon of the test's own with `openai/prod` granted to agent `bot` in project `demo`.
struct Daemon {
    _dir: tempfile::TempDir,
    home: PathBuf,
    sock: PathBuf,
    child: std::process::Child,
    cred: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
    c.env_remove("SCOPEHOLD_TOKEN")
        .env_remove("SCOPEHOLD_CHECKPOINT_FILE");
    c
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
        let mut d = Self {
            _dir: dir,
            home,
            sock,
            child,
            cred: String::new(),
        };
        for _ in 0..200 {
            if d.sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        d.admin(&["project", "create", "demo"], None);
        d.admin(
            &["secret", "put", "openai/prod", "--project", "demo"],
            Some(CANARY),
        );
        d.cred = d
            .admin(&["agent", "create", "bot"], None)
            .lines()
            .last()
            .unwrap()
            .to_string();
        d.admin(
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
        d
    }

    fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("SCOPEHOLD_HOME", &self.home)
            .env("SCOPEHOLD_SOCKET", &self.sock);
        c
    }

    fn admin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut ch = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(ch.stdin.take());
        let o = ch.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `scopehold run --project demo [extra] -- sh -c SCRIPT` as the agent, output captured
    /// (pipes: our output is not a terminal).
    fn run(&self, extra: &[&str], script: &str) -> Output {
        self.run_cmd(extra, script).output().unwrap()
    }

    fn run_cmd(&self, extra: &[&str], script: &str) -> Command {
        let mut c = self.cmd();
        c.env("SCOPEHOLD_TOKEN", &self.cred)
            .args(["run", "--project", "demo"])
            .args(extra)
            .args(["--", "sh", "-c", script]);
        c
    }
}

fn assert_no_canary(what: &str, out: &[u8]) {
    for f in canary_forms(CANARY) {
        assert!(
            !contains(out, &f),
            "{what} holds the value as {:?}:\n{}",
            String::from_utf8_lossy(&f),
            String::from_utf8_lossy(out)
        );
    }
}

/// The value written in two pieces with a pause between (so the masker sees two reads), its
/// base64 alone and inside a longer string at each alignment, and URL-encoded by Python's
/// `quote` and `quote_plus`, on stdout and on stderr.
const LEAKY: &str = r#"
V="$OPENAI_PROD"
printf 'split: %s' "$(printf %s "$V" | head -c 5)"; sleep 0.2; printf '%s\n' "$(printf %s "$V" | tail -c +6)"
printf 'b64: %s\n' "$(printf %s "$V" | base64)"
for p in u us use; do printf '%s:%s:end' "$p" "$V" | base64; done
python3 -c 'import os, urllib.parse as u; v = os.environ["OPENAI_PROD"]; print("q:", u.quote(v, safe="")); print("qp:", u.quote_plus(v))'
echo "err: $V" >&2
exit 7
"#;

#[test]
fn a_masked_run_hides_the_value_split_across_writes_and_encoded() {
    let d = Daemon::start();
    let o = d.run(&[], LEAKY);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(7), "stdout:\n{out}\nstderr:\n{err}");
    assert_no_canary("stdout", &o.stdout);
    assert_no_canary("stderr", &o.stderr);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("split: {MASK}"), "{out}");
    assert_eq!(lines[1], format!("b64: {MASK}"), "{out}");
    // Inside a longer base64 string: the stable core masked, the edge characters (which also
    // encode the neighbouring bytes) left.
    for l in &lines[2..5] {
        assert!(l.contains(MASK) && l.len() < MASK.len() + 16, "{l}");
    }
    assert_eq!(lines[5], format!("q: {MASK}"), "{out}");
    assert_eq!(lines[6], format!("qp: {MASK}"), "{out}");
    assert_eq!(err.trim_end(), format!("err: {MASK}"));
}

#[test]
fn without_masking_the_value_reaches_the_output_unchanged() {
    let d = Daemon::start();
    let o = d.run(&["--no-masking"], LEAKY);
    assert_eq!(o.status.code(), Some(7));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("split: {CANARY}\n")), "{out}");
    assert!(!out.contains("scopehold:"), "{out}");
    assert!(contains(&o.stderr, CANARY.as_bytes()));
}

#[test]
fn masking_keeps_the_exit_status_the_signals_and_hides_the_token() {
    let d = Daemon::start();
    let o = d.run(&[], r#"test -z "$SCOPEHOLD_TOKEN" && kill -TERM $$"#);
    assert_eq!(o.status.code(), Some(128 + 15), "killed by SIGTERM");
    // A signal to `run` reaches the child, which reports it and exits with its own status.
    let mut ch = d
        .run_cmd(&[], r#"trap 'echo "got TERM $OPENAI_PROD"; exit 9' TERM; echo ready; while :; do sleep 0.05; done"#)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = ch.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ch.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(ch.wait().unwrap().code(), Some(9));
    assert_eq!(rest, format!("got TERM {MASK}\n"));
}

#[test]
fn a_prompt_passes_at_once_and_a_background_process_does_not_hold_the_run() {
    let d = Daemon::start();
    // The prompt has no newline and the child waits for an answer: if the masker held it,
    // the read below would wait for ever (the thread gives up after 20 s).
    let mut ch = d
        .run_cmd(
            &[],
            r#"printf 'Password: '; read a; echo "you said $a, key $OPENAI_PROD"; printf %s "$OPENAI_PROD""#,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = ch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 10];
        let r = stdout.read_exact(&mut buf).map(|_| buf);
        tx.send((r.ok(), stdout)).unwrap();
    });
    let (prompt, mut stdout) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(&prompt.unwrap(), b"Password: ");
    ch.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(ch.wait().unwrap().success());
    // The value at the very end, with no newline: flushed, masked, at end of stream.
    assert_eq!(rest, format!("you said hello, key {MASK}\n{MASK}"));

    let t = Instant::now();
    let o = d.run(&[], "sleep 20 & echo started");
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a background process holding the output kept run waiting {:?}",
        t.elapsed()
    );
}

// --- on a terminal -----------------------------------------------------------------------

fn tmux(server: &str, args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(["-L", server])
        .args(args)
        .output()
        .expect("tmux is installed (.ci/run installs it)");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        tmux(&self.0, &["kill-server"]);
    }
}

fn wait_screen(session: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = tmux(session, &["capture-pane", "-p", "-t", session]);
        if last.contains(want) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("screen never showed {want:?}; last screen:\n{last}");
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn on_a_terminal_the_child_gets_a_pty_its_output_is_masked_and_the_terminal_restored() {
    let d = Daemon::start();
    let session = Session(format!("mask-{}", std::process::id()));
    // An interactive shell in the pane, so the terminal's settings after the run can be read.
    tmux(
        &session.0,
        &[
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "100",
            "-y",
            "30",
            "sh",
        ],
    );
    let env = format!(
        "SCOPEHOLD_HOME={} SCOPEHOLD_SOCKET={} SCOPEHOLD_TOKEN={}",
        shell_quote(&d.home),
        shell_quote(&d.sock),
        d.cred
    );
    let bin = shell_quote(Path::new(env!("CARGO_BIN_EXE_scopehold")));
    let pane_size = || {
        tmux(
            &session.0,
            &[
                "display",
                "-p",
                "-t",
                &session.0,
                "#{pane_height} #{pane_width}",
            ],
        )
        .trim()
        .to_string()
    };
    // The child: is it on a terminal, which size, the value in two writes, a line read from
    // the keyboard (the pty's echo shows it, and it comes back), then a window change. (In
    // single quotes on the shell's command line: no single quote inside.)
    let script = r#"[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo on-a-tty; echo "size $(stty size)"; printf "v=%s" "$(printf %s "$OPENAI_PROD" | head -c 4)"; sleep 0.2; printf "%s\n" "$(printf %s "$OPENAI_PROD" | tail -c +5)"; trap "echo resized \$(stty size)" WINCH; read answer; echo "answer $answer"; sleep 2; echo "err $OPENAI_PROD" >&2"#;
    let line = format!(
        "{env} {bin} run --project demo -- sh -c '{script}'; echo \"status $?\"; stty -a | grep -o -- '-*icanon' | tr a-z A-Z"
    );
    tmux(&session.0, &["send-keys", "-t", &session.0, "-l", &line]);
    tmux(&session.0, &["send-keys", "-t", &session.0, "Enter"]);
    let s = wait_screen(&session.0, &format!("v={MASK}"));
    assert!(s.contains("on-a-tty"), "{s}");
    assert!(s.contains(&format!("size {}", pane_size())), "{s}");
    tmux(
        &session.0,
        &["send-keys", "-t", &session.0, "-l", "forty two"],
    );
    tmux(&session.0, &["send-keys", "-t", &session.0, "Enter"]);
    wait_screen(&session.0, "answer forty two");
    tmux(
        &session.0,
        &["resize-window", "-t", &session.0, "-x", "90", "-y", "25"],
    );
    let resized = pane_size();
    let s = wait_screen(&session.0, "ICANON");
    assert!(
        s.contains(&format!("resized {resized}")),
        "SIGWINCH reached the child:\n{s}"
    );
    assert!(s.contains(&format!("err {MASK}")), "{s}");
    assert!(s.contains("status 0"), "{s}");
    // Raw mode undone: the shell's terminal is canonical again.
    assert!(!s.contains("-ICANON"), "{s}");
    assert!(!s.contains(CANARY) && !s.contains(&CANARY[4..]), "{s}");

    // The same child with --no-masking: the value is on the screen (the check above can fail).
    tmux(
        &session.0,
        &["send-keys", "-t", &session.0, "clear", "Enter"],
    );
    let line =
        format!("{env} {bin} run --no-masking --project demo -- sh -c 'echo \"v=$OPENAI_PROD\"'");
    tmux(&session.0, &["send-keys", "-t", &session.0, "-l", &line]);
    tmux(&session.0, &["send-keys", "-t", &session.0, "Enter"]);
    wait_screen(&session.0, &format!("v={CANARY}"));
}
