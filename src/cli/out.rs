//! Standard output for every command. `println!` panics when standard output is a closed
//! pipe (`scopehold log show | head -1`); these return the failure instead, and a closed
//! pipe becomes [`Closed`], which `main` turns into a quiet exit with status 0, as `head`'s
//! reader expects. Any other write failure is an ordinary error (status 1, code `io`).

use std::fmt;
use std::io::{self, Write};

use super::exit::{EXIT_OK, Exit};

/// Standard output was closed by its reader (EPIPE): nothing more can be shown, and nothing
/// went wrong that the user should hear about.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct Closed;

/// A failed write to standard output, as the command's failure.
pub fn write_error(e: io::Error) -> Exit {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Exit::new(EXIT_OK, Closed)
    } else {
        Exit::from(super::exit::Coded::new(
            "io",
            format!("writing to standard output: {e}"),
        ))
    }
}

/// The exit of a command that failed after printing its report (`printed`): the failure
/// stands even when standard output was closed meanwhile (`scopehold log verify | head -0`
/// on a tampered log must not exit 0); another write error is reported instead.
pub fn failing(printed: Result<(), Exit>, failure: Exit) -> Exit {
    match printed {
        Err(e) if e.error.downcast_ref::<Closed>().is_none() => e,
        _ => failure,
    }
}

/// Writes `s` as it is (no newline added) and flushes.
pub fn text(s: &str) -> Result<(), Exit> {
    write_bytes(s.as_bytes())
}

/// Writes bytes as they are (a completion script, a manual page) and flushes.
pub fn write_bytes(b: &[u8]) -> Result<(), Exit> {
    let mut o = io::stdout().lock();
    o.write_all(b).and_then(|()| o.flush()).map_err(write_error)
}

/// Writes one line. Use through [`outln!`](crate::cli::out::outln).
pub fn line(args: fmt::Arguments<'_>) -> Result<(), Exit> {
    let mut o = io::stdout().lock();
    // Standard output is line-buffered: each line is flushed, so `--follow` shows events as
    // they come and a closed pipe is noticed at the next line.
    writeln!(o, "{args}").map_err(write_error)
}

/// `println!` that returns `Result<(), Exit>` instead of panicking on a closed pipe.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::out::line(format_args!($($t)*))
    };
}
pub(crate) use outln;

/// Whether standard output is a pipe whose reader has gone (poll says POLLERR): lets
/// `log show --follow` end while no event comes to be written.
pub fn reader_gone() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let out = io::stdout();
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// One line on standard error, for notes along the way; a failure to write it is ignored
/// (`eprintln!` would panic when standard error is closed).
pub fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// `eprintln!` that never panics: see [`note`].
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::cli::out::note(format_args!($($t)*))
    };
}
pub(crate) use errln;
