//! Real unix users for tests where uids matter (CI runs as root; without root these tests
//! skip, saying so), and child processes that are reaped when a test ends.

use std::path::Path;
use std::process::Command;

/// A unix user made for one test, removed (with its own group, if it has one) when dropped.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// `useradd` with no home and no login shell, plus `extra` (`-U` for a group of its own,
    /// `-N` for none, `-G GROUP` to join one). `None`, with a note, when not root.
    pub fn create(tag: &str, extra: &[&str]) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: this test creates a unix user and needs root (CI runs it as root)");
            return None;
        }
        // useradd and userdel lock /etc/passwd: tests running in parallel threads take turns.
        let _turn = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let mut rnd = [0u8; 4];
        getrandom::fill(&mut rnd).unwrap();
        let name = format!("sh-{tag}-{}", hex::encode(rnd));
        let o = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", "-d", "/nonexistent"])
            .args(extra)
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let u = nix::unistd::User::from_name(&name).unwrap().unwrap();
        Some(Self {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
    }

    /// `program` as this user, with its primary group only (std drops supplementary groups).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(program);
        c.uid(self.uid).gid(self.gid);
        c
    }

    /// `program` as this user with all its groups (setpriv: std cannot set supplementary
    /// groups on stable), in an environment holding only `PATH` and `HOME`.
    pub fn with_groups(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent");
        c
    }

    /// The scopehold binary as this user, clean environment, on `home` and `socket`.
    pub fn scopehold(&self, home: &Path, socket: &Path) -> Command {
        let mut c = self.command(env!("CARGO_BIN_EXE_scopehold"));
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .arg("--home")
            .arg(home)
            .arg("--socket")
            .arg(socket);
        c
    }
}

/// One account change at a time (see [`TestUser::create`]).
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for TestUser {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
