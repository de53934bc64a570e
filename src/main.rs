//! `scopehold`: parse arguments, run, turn the outcome into an exit code. Nothing else.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    scopehold::cli::main()
}
