//! `scopehold`: parse arguments, set up tracing, run, turn the outcome into an exit code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use scopehold::cli::{self, Cli, EXIT_OK, Exit, exit::EXIT_USAGE};

fn main() -> ExitCode {
    // `run`'s pty helper: becomes the command, before anything else is set up.
    cli::run::exec_helper_if_asked();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing();
    match cli::run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Exit { code, error }) => {
            // Not eprintln!: it panics when standard error cannot be written.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "scopehold: {error:#}");
            ExitCode::from(code)
        }
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
