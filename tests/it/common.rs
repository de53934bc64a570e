//! Shared helpers: the forms a leaked secret could take in output.
//! (The log's own helpers moved with its tests to `log/tests/it/common.rs`.)

#![allow(dead_code)]

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// A canary value in every form a careless encoder might leave it: raw, hex (both cases),
/// base64 at each alignment (partial edge characters dropped).
pub fn canary_forms(v: &str) -> Vec<Vec<u8>> {
    let mut out = vec![
        v.as_bytes().to_vec(),
        hex::encode(v).into_bytes(),
        hex::encode_upper(v).into_bytes(),
    ];
    for pad in 0..3 {
        let mut d = vec![b'#'; pad];
        d.extend_from_slice(v.as_bytes());
        let e = b64(&d);
        out.push(e.as_bytes()[4..e.len() - 4].to_vec());
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A real daemon (the `scopehold` binary) on a private socket in a temporary directory, and
/// the CLI pointed at it. Modules add what their tests need through traits of their own.
pub struct Daemon {
    pub t: tempfile::TempDir,
    pub home: PathBuf,
    pub socket: PathBuf,
    pub child: Option<std::process::Child>,
    /// More environment for the daemon and the CLI (`SCOPEHOLD_STORE`).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// The directories, no daemon yet.
    pub fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        Daemon {
            home: t.path().join("state"),
            socket: run.join("scopehold.sock"),
            t,
            child: None,
            env: Vec::new(),
        }
    }

    /// A running daemon on a fresh state directory.
    pub fn start() -> Self {
        let mut d = Self::new();
        d.run();
        d
    }

    /// The binary with this daemon's state and socket, and nothing of the caller's.
    pub fn bin(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scopehold"));
        self.env_of(&mut c);
        c
    }

    /// This daemon's state and socket in `c`'s environment, and nothing of the caller's.
    fn env_of(&self, c: &mut Command) {
        c.env("SCOPEHOLD_HOME", &self.home)
            .env("SCOPEHOLD_SOCKET", &self.socket)
            .env_remove("SCOPEHOLD_TOKEN")
            .env_remove("SCOPEHOLD_CHECKPOINT_FILE")
            .env("HOME", "/nonexistent-home");
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }

    /// Starts the daemon and waits for its readiness notification.
    pub fn run(&mut self) {
        self.run_with(&[]);
    }

    /// Starts `scopehold daemon ARGS...` and waits for its readiness notification.
    pub fn run_with(&mut self, args: &[&str]) {
        self.run_in(&[], args);
    }

    /// [`Self::run_with`] under a wrapper command (`ip netns exec NS`), which execs the
    /// binary: the child is the daemon itself.
    pub fn run_in(&mut self, wrapper: &[&str], args: &[&str]) {
        let notices = self.spawn_in(wrapper, args);
        assert_eq!(
            notices.next(Duration::from_secs(30)).as_deref(),
            Some("READY=1\n"),
            "the daemon did not become ready: {}",
            self.stderr()
        );
    }

    /// Starts `scopehold daemon ARGS...` without waiting: what it tells the service manager
    /// (`READY=1`, `STATUS=...`) comes through the returned [`Notices`].
    pub fn spawn_with(&mut self, args: &[&str]) -> Notices {
        self.spawn_in(&[], args)
    }

    /// What the daemons of this directory wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.t.path().join("daemon.err")).unwrap_or_default()
    }

    fn spawn_in(&mut self, wrapper: &[&str], args: &[&str]) -> Notices {
        let notify = self.t.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify);
        let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.t.path().join("daemon.err"))
            .unwrap();
        let mut c = match wrapper.split_first() {
            None => self.bin(),
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(env!("CARGO_BIN_EXE_scopehold"));
                self.env_of(&mut c);
                c
            }
        };
        let child = c
            .arg("daemon")
            .args(args)
            .env("NOTIFY_SOCKET", &notify)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        self.child = Some(child);
        Notices(rx)
    }

    /// Starts the daemon expecting it to refuse: its exit status and what it said.
    pub fn refused_start(&self) -> (Option<i32>, String) {
        self.refused_start_with(&[])
    }

    /// [`Self::refused_start`] with `scopehold daemon ARGS...`.
    pub fn refused_start_with(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut c = self
            .bin()
            .arg("daemon")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while c.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// SIGTERM, and the daemon's exit status (bounded: a daemon that hangs fails the test).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        term(c.id());
        wait_bounded(&mut c, Duration::from_secs(20)).expect("the daemon did not stop")
    }

    /// A CLI command as the admin (this uid initialised the state); panics unless it succeeds.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.cli(args, stdin, None);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// A CLI command, with `stdin` and the agent credential `token` if given.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>, token: Option<&str>) -> Output {
        let mut c = self.bin();
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            c.env("SCOPEHOLD_TOKEN", t);
        }
        let mut ch = c.spawn().unwrap();
        if let Some(s) = stdin {
            ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(ch.stdin.take());
        ch.wait_with_output().unwrap()
    }
}

/// A daemon's messages to its service manager (`NOTIFY_SOCKET`), one datagram each.
pub struct Notices(std::os::unix::net::UnixDatagram);

impl Notices {
    /// The next message, if one comes within `limit`.
    pub fn next(&self, limit: Duration) -> Option<String> {
        self.0.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 512];
        let n = self.0.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGTERM to `pid`.
pub fn term(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// The child's exit status, if it exits within `limit`.
pub fn wait_bounded(
    c: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
