//! `scopehold`: parse arguments, set up tracing, run, turn the outcome into an exit code.
//! How failures are reported (text or `--json`) is described in `cli::exit`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use scopehold::cli::{self, config::ParseError, exit};

fn main() -> ExitCode {
    // `run`'s pty helper: becomes the command, before anything else is set up.
    cli::run::exec_helper_if_asked();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::config::parse_from(&args) {
        Ok(c) => c,
        Err(ParseError::Clap(e)) => {
            return ExitCode::from(exit::report_clap(&e, exit::json_in_args(&args)));
        }
        Err(ParseError::Exit(e)) => {
            return ExitCode::from(exit::report(&e, exit::json_in_args(&args)));
        }
    };
    tracing();
    let json = cli.json;
    match cli::run(cli) {
        Ok(()) => ExitCode::from(exit::EXIT_OK),
        Err(e) => ExitCode::from(exit::report(&e, json)),
    }
}

/// Tracing to standard error, filtered by `SCOPEHOLD_LOG` (default `info`). Values never
/// reach it: no span or event carries one. Each request is a span (route, uid, identity,
/// outcome) at debug level, printed when it closes; at the default level it is disabled and
/// costs the resolution path next to nothing.
fn tracing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        // A failed write to standard error (closed, full) is dropped, not reported through
        // eprintln!, which would panic the daemon.
        .log_internal_errors(false)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCOPEHOLD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}
