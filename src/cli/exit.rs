//! Exit statuses, a failure that carries one, and how `main` reports it.
//!
//! **Errors.** Every failure is reported once, on standard error, after anything the
//! command printed on standard output:
//! - as text: `scopehold: MESSAGE`;
//! - with `--json`: one line holding one JSON object,
//!   `{"error":{"code":"CODE","message":"MESSAGE","exit":N}}`, plus `"status":S` when the
//!   daemon answered with HTTP status S. `code` is the daemon's stable error code when the
//!   daemon refused (`denied`, `unauthenticated`, `rate_limited`, `not_found`, `conflict`,
//!   `forbidden`, `invalid_request`, `too_large`, ...), else one of the CLI's own:
//!   `usage`, `config`, `daemon_unreachable`, `wrong_peer`, `protocol`,
//!   `verification_failed`, `too_large`, `io`, `error`. `message` is the text form's
//!   message; `exit` is the process's exit status.
//!
//! Standard output carries only the command's own output (with `--json`, only its JSON), so
//! it stays parseable whatever happens; a command that fails after a report (`log verify`,
//! `doctor`) prints its report there first. A closed standard output (`| head -1`) is not a
//! failure: the command stops quietly with status 0.

use serde_json::json;

use super::client::{CallError, ClientError};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Any other failure.
pub const EXIT_ERROR: u8 = 1;
/// The command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// The daemon refused: unauthenticated, denied or rate limited.
pub const EXIT_DENIED: u8 = 3;
/// The daemon could not be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// A log or bundle failed verification.
pub const EXIT_VERIFY_FAILED: u8 = 5;

/// A failure with its exit status.
#[derive(Debug)]
pub struct Exit {
    /// The status to exit with.
    pub code: u8,
    /// What went wrong, printed once by `main`.
    pub error: anyhow::Error,
}

impl Exit {
    /// A failure with a status other than [`EXIT_ERROR`].
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }

    /// A usage error (status 2, code `usage`).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, Coded::new("usage", message))
    }
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(error: E) -> Self {
        Exit {
            code: EXIT_ERROR,
            error: error.into(),
        }
    }
}

/// A CLI-side failure with its stable code for `--json` (see the module's documentation).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// The stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl Coded {
    /// A failure with a code.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The stable code of a failure, and the daemon's HTTP status when it answered.
pub fn code_of(e: &Exit) -> (String, Option<u16>) {
    for cause in e.error.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return (c.code.into(), None);
        }
        if let Some(c) = cause.downcast_ref::<CallError>() {
            match c {
                CallError::Refused { status, error } => {
                    return (error.code.clone(), Some(*status));
                }
                CallError::Client(c) => return (client_code(c).into(), None),
            }
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return (client_code(c).into(), None);
        }
    }
    let code = match e.code {
        EXIT_USAGE => "usage",
        EXIT_DENIED => "denied",
        EXIT_UNREACHABLE => "daemon_unreachable",
        EXIT_VERIFY_FAILED => "verification_failed",
        _ if e
            .error
            .chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some()) =>
        {
            "io"
        }
        _ => "error",
    };
    (code.into(), None)
}

fn client_code(c: &ClientError) -> &'static str {
    match c {
        ClientError::Unreachable { .. } => "daemon_unreachable",
        ClientError::WrongPeer { .. } => "wrong_peer",
        _ => "protocol",
    }
}

/// A failure as its `--json` line: `{"error":{"code","message","exit"[,"status"]}}`.
pub fn json_line(e: &Exit) -> String {
    let (code, status) = code_of(e);
    let mut o = json!({"code": code, "message": format!("{:#}", e.error), "exit": e.code});
    if let Some(s) = status {
        o["status"] = json!(s);
    }
    json!({ "error": o }).to_string()
}

/// Reports a failure once on standard error (text, or JSON with `json`) and gives the status
/// to exit with. A closed standard output is reported as nothing, with status 0.
pub fn report(e: &Exit, json: bool) -> u8 {
    use std::io::Write;
    if e.error.downcast_ref::<super::out::Closed>().is_some() {
        return EXIT_OK;
    }
    // Not eprintln!: it panics when standard error cannot be written.
    let mut err = std::io::stderr().lock();
    let _ = if json {
        writeln!(err, "{}", json_line(e))
    } else {
        writeln!(err, "scopehold: {:#}", e.error)
    };
    e.code
}

/// Whether `--json` is among the arguments (before `--`, after which they are a command's),
/// for reporting a command line that clap could not parse.
pub fn json_in_args(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// A clap error (a usage error, or `--help`/`--version`, which are not errors): printed as
/// clap prints it, or as a JSON error line with `json`. Gives the status to exit with.
pub fn report_clap(e: &clap::Error, json: bool) -> u8 {
    if !e.use_stderr() {
        let _ = e.print();
        return EXIT_OK;
    }
    if json {
        let text = e.render().to_string();
        // clap's closing pointer to --help is for people at a terminal.
        let text = text
            .trim()
            .trim_end_matches("For more information, try '--help'.")
            .trim();
        let message = text.strip_prefix("error: ").unwrap_or(text).to_string();
        report(&Exit::new(EXIT_USAGE, Coded::new("usage", message)), true)
    } else {
        let _ = e.print();
        EXIT_USAGE
    }
}
