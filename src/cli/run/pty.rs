//! The pseudo-terminal a masked run gives its child when our output is a terminal, so
//! colours, progress bars and interactive programs keep working while their output passes
//! through the masker.
//!
//! The child must lead its own session with the pty as its controlling terminal (or ^C on
//! the pty signals nothing, and a program that opens /dev/tty reaches *our* terminal,
//! around the masker). That needs setsid and TIOCSCTTY between fork and exec, which only
//! `unsafe` pre-exec hooks offer; the crate forbids `unsafe`, so the child is first our own
//! binary as [`EXEC_HELPER`]: it does both and execs the command ([`exec_helper_if_asked`]).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios};

/// The first argument that makes `scopehold` the pty helper instead of the CLI.
pub(super) const EXEC_HELPER: &str = "__scopehold-pty-exec";

/// If we were started as the pty helper (`scopehold __scopehold-pty-exec CMD ARGS..` with
/// the pty slave as standard output): make a new session with the pty as its controlling
/// terminal, then become CMD. Returns only when not started as the helper.
pub fn exec_helper_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(EXEC_HELPER)) {
        return;
    }
    let command: Vec<_> = args.collect();
    let fail = |what: &str, e: &dyn std::fmt::Display, code| -> ! {
        use std::io::Write;
        let _ = writeln!(io::stderr(), "scopehold: {what}: {e}");
        std::process::exit(code)
    };
    let Some((program, rest)) = command.split_first() else {
        fail("the pty helper", &"no command", 2)
    };
    if let Err(e) = rustix::process::setsid() {
        fail("starting a session for the command", &e, 126);
    }
    if let Err(e) = rustix::process::ioctl_tiocsctty(io::stdout()) {
        fail("giving the command its terminal", &e, 126);
    }
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(program).args(rest).exec();
    // The shell's convention: 127 when the command is not found, 126 when it cannot run.
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(&format!("starting {}", program.to_string_lossy()), &e, code)
}

/// A new pseudo-terminal: (master, slave). Neither becomes our controlling terminal.
pub(super) fn open() -> io::Result<(OwnedFd, OwnedFd)> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((master, slave))
}

/// Gives `to` (the pty) the window size of `from` (our terminal). The kernel tells the
/// pty's foreground programs with SIGWINCH.
pub(super) fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, ws);
    }
}

/// Our terminal's settings, for the pty to start with (erase and interrupt keys, ...).
pub(super) fn copy_settings(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok(t) = rustix::termios::tcgetattr(from) {
        let _ = rustix::termios::tcsetattr(to, OptionalActions::Now, &t);
    }
}

/// Our terminal in raw mode (every key goes to the child's pty as typed, which does its
/// own line editing and signals), restored when dropped: the run's every way out, its
/// forwarded signals included, passes through that drop.
pub(super) struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode").finish_non_exhaustive()
    }
}

impl RawMode {
    pub(super) fn enter(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let saved = rustix::termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(Self {
            fd: fd.try_clone_to_owned()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.fd.as_fd(), OptionalActions::Now, &self.saved);
    }
}
