//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::home::Home;
use crate::logcmd;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_DENIED: u8 = 3;
pub const EXIT_UNREACHABLE: u8 = 4;
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
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/scopehold/scopehold.sock, else in the state directory]
    #[arg(long, global = true, env = "SCOPEHOLD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state directory (0700), the log's signing key and the master key (0600),
    /// and an empty log; print the log's public key
    Init,
    /// Run the daemon in the foreground (initialising the state directory on first start)
    Daemon {
        /// Make the socket 0660 and owned by GROUP, so agents under other uids can connect
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
        /// Start although the kept checkpoint is missing (it is then rewritten from the log as
        /// found: only after checking the log against a checkpoint kept elsewhere)
        #[arg(long)]
        accept_missing_checkpoint: bool,
    },
    /// Projects: units of work that secrets are assigned to
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Provider secrets (API keys) under PROVIDER/NAME
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Agents: named programs with a credential
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Members: humans, identified by their unix uid
    #[command(subcommand)]
    Member(MemberCommand),
    /// Grants: identity x secret x project, optionally narrowed
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Print a granted secret's current value (credential from SCOPEHOLD_TOKEN, else your uid)
    #[command(after_help = EXIT_CODES)]
    Resolve {
        /// PROVIDER/NAME
        secret: String,
        #[arg(long)]
        project: String,
        /// A version still in its grace period
        #[arg(long)]
        version: Option<u32>,
    },
    /// Run a command with granted secrets in its environment (SCOPEHOLD_TOKEN removed);
    /// exits with the command's status
    #[command(
        after_help = "Without --env, every secret granted in the project is injected as PROVIDER_NAME (upper case, '/' and '-' as '_'). Exit status: the command's, or 1-5 if it could not be started (see scopehold --help)."
    )]
    Run {
        #[arg(long)]
        project: String,
        /// VAR=PROVIDER/NAME (repeatable)
        #[arg(long = "env", value_name = "VAR=PROVIDER/NAME")]
        envs: Vec<String>,
        /// The command and its arguments
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The audit log: show, verify, export, checkpoints
    #[command(subcommand, after_help = EXIT_CODES)]
    Log(LogCommand),
    /// The console: browse, filter and verify the audit trail, rotate and revoke (? for keys)
    Console {
        /// Auditor mode: open an exported bundle, verified and read-only (no daemon, no state)
        #[arg(long, value_name = "FILE", requires = "key")]
        bundle: Option<PathBuf>,
        /// The log's public key for --bundle: 64 hex characters or a .pub file
        #[arg(long, value_name = "PUBKEY", requires = "bundle")]
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    Create { name: String },
    List,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new secret; the value is read from standard input or a prompt, never argv
    Put {
        /// PROVIDER/NAME
        name: String,
        /// Project to assign it to (repeatable)
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
    },
    /// Add a new version (read from standard input or a prompt) that becomes current; grants
    /// follow it
    Rotate {
        name: String,
        /// Keep the previous version resolvable for this long (e.g. 10m, 1h)
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
    },
    /// Stop every resolution of the secret
    Revoke {
        name: String,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its credential (shown once)
    Create {
        name: String,
        /// Only accept the agent from processes running as this uid
        #[arg(long)]
        uid: Option<u32>,
    },
    /// Revoke an agent: all its grants stop
    Revoke {
        name: String,
    },
    /// Replace an agent's credential (prints the new one, once)
    Reissue {
        name: String,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    Add {
        name: String,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        admin: bool,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Grant IDENTITY (an agent or member name) the secret in a project; prints the grant id
    Create {
        identity: String,
        /// PROVIDER/NAME
        secret: String,
        #[arg(long)]
        project: String,
        /// Expires after this long (e.g. 1h, 7d)
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[arg(long)]
        max_uses: Option<u64>,
        /// Resolutions per minute
        #[arg(long)]
        rate: Option<u32>,
        /// Only for callers running as this uid
        #[arg(long)]
        uid: Option<u32>,
    },
    Revoke {
        id: u64,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Show events, decoded (secret-bearing bodies never shown)
    Show {
        /// agent:NAME, member:NAME, or a bare name
        #[arg(long)]
        identity: Option<String>,
        #[arg(long)]
        secret: Option<String>,
        /// Event kind, e.g. secret_resolved
        #[arg(long)]
        kind: Option<String>,
        /// Only denials
        #[arg(long)]
        denied: bool,
    },
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
    let ctx = commands::Ctx {
        socket: crate::daemon::socket_path(&home, cli.socket.as_deref()),
        json: cli.json,
    };
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
        Command::Daemon {
            socket_group,
            accept_missing_checkpoint,
        } => {
            let home = Home {
                accept_missing_checkpoint,
                ..home
            };
            Ok(crate::daemon::run(home, cli.socket, socket_group)?)
        }
        Command::Project(c) => commands::project(&ctx, c),
        Command::Secret(c) => commands::secret(&ctx, c),
        Command::Agent(c) => commands::agent(&ctx, c),
        Command::Member(c) => commands::member(&ctx, c),
        Command::Grant(c) => commands::grant(&ctx, c),
        Command::Resolve {
            secret,
            project,
            version,
        } => commands::resolve(&ctx, &secret, &project, version),
        Command::Run {
            project,
            envs,
            command,
        } => commands::run(&ctx, &project, &envs, &command),
        Command::Log(LogCommand::Show {
            identity,
            secret,
            kind,
            denied,
        }) => logcmd::show(
            &home,
            identity.as_deref(),
            secret.as_deref(),
            kind.as_deref(),
            denied,
            cli.json,
        ),
        Command::Console {
            bundle: Some(b),
            key,
        } => Ok(crate::console::run_bundle(
            &b,
            key.as_deref().unwrap_or_default(),
        )?),
        Command::Console { bundle: None, .. } => Ok(crate::console::run(&home, &ctx.socket)?),
        Command::Log(LogCommand::Verify(a)) => logcmd::verify(&home, &a, cli.json),
        Command::Log(LogCommand::Export(a)) => logcmd::export(&home, &a, cli.json),
        Command::Log(LogCommand::Checkpoint { out }) => {
            logcmd::checkpoint(&home, out.as_deref(), cli.json)
        }
    }
}
