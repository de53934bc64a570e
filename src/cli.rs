//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::home::Home;
use crate::logcmd;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_VERIFY_FAILED: u8 = 5;

const EXIT_CODES: &str = "Exit status: 0 success, 1 error, 2 usage, 3 denied, 4 daemon unreachable, 5 verification failed.";

#[derive(Debug, Parser)]
#[command(name = "scopehold", version, about = "Provider API keys in one local daemon: narrow grants, audited resolution, a tamper-evident log.", after_help = EXIT_CODES)]
pub struct Cli {
    /// State directory [default: $XDG_DATA_HOME/scopehold or ~/.local/share/scopehold]
    #[arg(long, global = true, env = "SCOPEHOLD_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Where the kept checkpoint lives (put it on another disk to survive the state directory)
    #[arg(
        long,
        global = true,
        env = "SCOPEHOLD_CHECKPOINT_FILE",
        value_name = "FILE"
    )]
    pub checkpoint_file: Option<PathBuf>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state directory (0700), the log's signing key (0600) and an empty log;
    /// print the log's public key
    Init,
    /// The audit log: verify, export, checkpoints
    #[command(subcommand, after_help = EXIT_CODES)]
    Log(LogCommand),
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Verify every record, chain link and the last checkpoint's signature
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Write an export for auditors (secret-bearing bodies left out)
    Export(ExportArgs),
    /// Print the latest signed checkpoint, for an auditor to keep and later pass to
    /// `log verify --trusted-checkpoint`
    Checkpoint {
        /// Write it to FILE instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify an exported bundle instead of the state directory's log (needs --key)
    #[arg(long, value_name = "FILE", requires = "key")]
    pub bundle: Option<PathBuf>,
    /// The log's public key: 64 hex characters or a .pub file [default: the state directory's log.pub]
    #[arg(long, value_name = "PUBKEY")]
    pub key: Option<String>,
    /// Prove the log extends a checkpoint kept earlier (catches a log cut back to an older state)
    #[arg(long, value_name = "FILE")]
    pub trusted_checkpoint: Option<PathBuf>,
    /// Check every checkpoint's signature, not only the last one's
    #[arg(long)]
    pub all_signatures: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// One self-contained binary bundle, verifiable with `log verify --bundle`
    Bundle,
    /// One JSON object per line (events with raw envelope bytes in hex, and checkpoints)
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output file
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// First event
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Last event [default: the last committed event]; extended to the end of its batch,
    /// where its signed checkpoint is
    #[arg(long)]
    pub to: Option<u64>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Bundle)]
    pub format: ExportFormat,
}

/// A failure with its exit status.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(error: E) -> Self {
        Exit {
            code: EXIT_ERROR,
            error: error.into(),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Exit { code, error }) => {
            eprintln!("scopehold: {error:#}");
            ExitCode::from(code)
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Exit> {
    let home = Home::new(cli.home.clone(), cli.checkpoint_file.clone())?;
    match cli.command {
        Command::Init => {
            let public = home.init()?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "home": home.root,
                        "log_public_key": public.to_hex(),
                        "log_public_key_file": home.log_pub(),
                    })
                );
            } else {
                println!("Initialised ScopeHold state in {}", home.root.display());
                println!("log public key: {public}");
                println!(
                    "(also in {}; give it to auditors)",
                    home.log_pub().display()
                );
            }
            Ok(())
        }
        Command::Log(LogCommand::Verify(a)) => logcmd::verify(&home, &a, cli.json),
        Command::Log(LogCommand::Export(a)) => logcmd::export(&home, &a, cli.json),
        Command::Log(LogCommand::Checkpoint { out }) => {
            logcmd::checkpoint(&home, out.as_deref(), cli.json)
        }
    }
}
