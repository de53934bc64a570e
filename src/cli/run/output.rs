//! Where a run's child writes: straight to our standard output and error (`--no-masking`),
//! or through a [`Masker`]: over pipes, one masker per stream, when our output is not a
//! terminal; on a pseudo-terminal when it is.
//!
//! Each masked stream is copied by a thread of its own (blocking reads and writes: the
//! child's output waits for our terminal or pipe exactly as it would without us). When the
//! child has exited, what it wrote is drained; a stream still held open by something it left
//! behind (`cmd &`) is given [`GRACE`], then abandoned, so a background process cannot keep
//! the run from returning (as Go's `WaitDelay`).

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::mask::{Masker, Patterns};
use super::pty;

/// How long, after the child exits, its output streams may stay open before we stop
/// copying them.
pub(super) const GRACE: Duration = Duration::from_millis(500);

/// How the child's standard streams are set up, chosen before it starts.
#[derive(Debug)]
pub(super) struct Plan {
    /// `None`: no masking, the child shares our streams.
    patterns: Option<Arc<Patterns>>,
    /// Our output is a terminal: the child's stdout (and stdin and stderr, where ours are
    /// terminals too) on this pty, whose output goes through a masker.
    pty: Option<Pty>,
    /// Our ends of the pipes for the child's stdout and stderr where they are not the pty.
    stdout: Option<io::PipeReader>,
    stderr: Option<io::PipeReader>,
}

#[derive(Debug)]
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    stdin_tty: bool,
    stderr_tty: bool,
}

impl Plan {
    pub(super) fn new(masking: Option<Arc<Patterns>>) -> io::Result<Self> {
        let mut plan = Self {
            patterns: masking,
            pty: None,
            stdout: None,
            stderr: None,
        };
        if plan.patterns.is_some() && io::stdout().is_terminal() {
            let (master, slave) = pty::open()?;
            let stdin_tty = io::stdin().is_terminal();
            if stdin_tty {
                pty::copy_settings(io::stdin().as_fd(), slave.as_fd());
            }
            pty::copy_winsize(io::stdout().as_fd(), master.as_fd());
            plan.pty = Some(Pty {
                master,
                slave,
                stdin_tty,
                stderr_tty: io::stderr().is_terminal(),
            });
        }
        Ok(plan)
    }

    /// The command, with its standard streams set up. The caller must drop it once the
    /// child is started: it holds the child's ends of the pipes and the pty, and a stream
    /// reports its end only when every copy of the child's end is closed.
    pub(super) fn command(&mut self, command: &[String]) -> io::Result<tokio::process::Command> {
        let mut cmd;
        if let Some(pty) = &self.pty {
            cmd = tokio::process::Command::new(std::env::current_exe()?);
            cmd.arg(pty::EXEC_HELPER).args(command);
            cmd.stdout(Stdio::from(pty.slave.try_clone()?));
            if pty.stdin_tty {
                cmd.stdin(Stdio::from(pty.slave.try_clone()?));
            }
            if pty.stderr_tty {
                cmd.stderr(Stdio::from(pty.slave.try_clone()?));
            }
        } else {
            cmd = tokio::process::Command::new(&command[0]);
            cmd.args(&command[1..]);
        }
        if self.patterns.is_some() {
            if self.pty.is_none() {
                let (r, w) = io::pipe()?;
                cmd.stdout(w);
                self.stdout = Some(r);
            }
            if !self.pty.as_ref().is_some_and(|p| p.stderr_tty) {
                let (r, w) = io::pipe()?;
                cmd.stderr(w);
                self.stderr = Some(r);
            }
        }
        Ok(cmd)
    }

    /// Once the child is started: the copying threads, and our terminal in raw mode if the
    /// child reads keys from its pty.
    pub(super) fn start(self) -> io::Result<Streams> {
        let mut s = Streams {
            done: Vec::new(),
            master: None,
            raw: None,
        };
        let Some(patterns) = self.patterns else {
            return Ok(s);
        };
        if let Some(r) = self.stdout {
            s.copy(r.into(), io::stdout().as_fd(), &patterns)?;
        }
        if let Some(r) = self.stderr {
            s.copy(r.into(), io::stderr().as_fd(), &patterns)?;
        }
        if let Some(Pty {
            master,
            slave,
            stdin_tty,
            ..
        }) = self.pty
        {
            drop(slave);
            s.copy(master.try_clone()?, io::stdout().as_fd(), &patterns)?;
            if stdin_tty {
                s.raw = Some(pty::RawMode::enter(io::stdin().as_fd())?);
                // Keys to the pty. Not joined: it blocks in a read of our terminal until the
                // run exits.
                let mut to = File::from(master.try_clone()?);
                let mut from = File::from(io::stdin().as_fd().try_clone_to_owned()?);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return,
                        }
                    }
                });
            }
            s.master = Some(master);
        }
        Ok(s)
    }
}

/// A running child's masked streams.
#[derive(Debug)]
pub(super) struct Streams {
    done: Vec<oneshot::Receiver<()>>,
    master: Option<OwnedFd>,
    raw: Option<pty::RawMode>,
}

impl Streams {
    /// A thread copying `from` through a masker to `to`.
    fn copy(
        &mut self,
        from: OwnedFd,
        to: std::os::fd::BorrowedFd<'_>,
        patterns: &Arc<Patterns>,
    ) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let mut from = File::from(from);
        let mut to = File::from(to.try_clone_to_owned()?);
        let mut masker = Masker::new(patterns.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut out = Vec::with_capacity(buf.len());
            loop {
                out.clear();
                let n = match from.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // EIO: a pty's master once every copy of the slave is closed. Any other
                    // error ends the copy too.
                    Err(_) => 0,
                };
                if n == 0 {
                    masker.finish(&mut out);
                    let _ = to.write_all(&out);
                    let _ = tx.send(());
                    return;
                }
                masker.push(&buf[..n], &mut out);
                // Our side closed: stop reading, so the child finds its output closed too.
                if to.write_all(&out).is_err() {
                    let _ = tx.send(());
                    return;
                }
            }
        });
        self.done.push(rx);
        Ok(())
    }

    /// Our terminal's new size, to the pty (on SIGWINCH).
    pub(super) fn resize(&self) {
        if let Some(m) = &self.master {
            pty::copy_winsize(io::stdout().as_fd(), m.as_fd());
        }
    }

    /// After the child exited: waits (up to [`GRACE`]) for the copies to reach the end of
    /// the child's output, then gives our terminal its settings back.
    pub(super) async fn finish(mut self) {
        let done = std::mem::take(&mut self.done);
        let _ = tokio::time::timeout(GRACE, async {
            for d in done {
                let _ = d.await;
            }
        })
        .await;
        drop(self.raw.take());
    }
}
