//! The command line, as clap types. Names are parsed into the domain's types here, so a
//! malformed name is a usage error before anything is sent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{EventKind, IdentityRef, Name, ProjectName, SecretName};

const EXIT_CODES: &str = "Exit status: 0 success, 1 error, 2 usage, 3 denied, 4 daemon unreachable, 5 verification failed.";

/// `scopehold`'s arguments.
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
    /// The uid the daemon must run as: the CLI checks the socket's peer (kernel credentials)
    /// before sending a value or a credential [default: the state directory's owner]
    #[arg(long, global = true, env = "SCOPEHOLD_DAEMON_UID", value_name = "UID")]
    pub daemon_uid: Option<u32>,
    /// Print machine-readable JSON; a failure is then one JSON line on standard error,
    /// {"error":{"code":...,"message":...,"exit":N}} (with "status" when the daemon answered)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state directory (0700), the log's signing key and the master key (0600),
    /// and an empty log; print the log's public key
    Init {
        /// Seal both keys under the passphrase in FILE (argon2id, XChaCha20-Poly1305); one
        /// trailing newline is stripped (fits systemd's LoadCredential=)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Run the daemon in the foreground (initialising the state directory on first start)
    Daemon {
        /// The passphrase of a sealed state directory (or, on first start, to seal it with);
        /// without it a sealed state asks on the terminal
        #[arg(long, env = "SCOPEHOLD_PASSPHRASE_FILE", value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Make the socket 0660 and owned by GROUP, so agents under other uids can connect
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
        /// Start although the kept checkpoint is missing (it is then rewritten from the log as
        /// found: only after checking the log against a checkpoint kept elsewhere)
        #[arg(long)]
        accept_missing_checkpoint: bool,
        /// Serve the injecting proxy on this loopback address too (e.g. 127.0.0.1:8411); it is
        /// always served on the socket under /v1/proxy/. Off by default
        #[arg(long, value_name = "ADDR")]
        proxy_listen: Option<std::net::SocketAddr>,
        /// Trust the CA certificates in this PEM file for providers' upstreams, besides the
        /// system's roots (a private provider endpoint, or a test upstream)
        #[arg(long, value_name = "FILE")]
        upstream_ca: Option<PathBuf>,
        /// Tunnel CONNECT (HTTPS_PROXY) to hosts outside every provider profile untouched (no
        /// key goes through them); by default such tunnels are refused, so the daemon is not
        /// an open path out of the host for its callers
        #[arg(long)]
        tunnel_other_connect: bool,
        /// Be a hub: serve enrolled hosts' edges over mutual TLS 1.3 on HOST:PORT (besides
        /// the local socket)
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "hub")]
        listen: Option<std::net::SocketAddr>,
        /// A name the hub's certificate carries, as edges reach it (repeatable; the listening
        /// address, localhost and 127.0.0.1 are always in it)
        #[arg(long, value_name = "NAME", requires = "listen")]
        hub_name: Vec<String>,
        /// The hub listener's certificate, from your own CA instead of the hub CA: a PEM file
        /// with the hub's certificate first and the CA that issued it last (join tokens then
        /// pin that CA). Checked at start against every --hub-name
        #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM, mode 0600)
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Be this host's edge: serve local agents through the hub at https://HUB:PORT (the
        /// hub holds every key and decides everything). Repeatable: every address of the hub
        /// (a hub and its standbys); the edge moves to one it can reach
        #[arg(long, value_name = "URL")]
        hub: Vec<String>,
        /// Enrol this host with the hub first, spending the token of `scopehold host add`
        /// (once; its key and certificate are kept in the state directory)
        #[arg(
            long,
            value_name = "TOKEN",
            env = "SCOPEHOLD_JOIN_TOKEN",
            requires = "hub",
            hide_env_values = true
        )]
        join: Option<String>,
        /// Keep the log in PostgreSQL (postgres://USER@/DB?host=/SOCKET/DIR, or loopback):
        /// every batch is committed there first, and the state directory's log is its copy.
        /// Local files are the default
        #[arg(
            long,
            value_name = "URL",
            env = "SCOPEHOLD_STORE",
            conflicts_with = "hub",
            hide_env_values = true
        )]
        store: Option<String>,
        /// CA certificates (PEM) that the store's server certificate must chain to, for a
        /// --store URL with sslmode=require [default: the system's roots]
        #[arg(
            long,
            value_name = "FILE",
            env = "SCOPEHOLD_STORE_CA",
            requires = "store"
        )]
        store_ca: Option<PathBuf>,
        /// How long the edge waits for the hub's answer before it answers 503
        /// hub_unreachable (a watch waits for as long as nothing changes) [default: 10s]
        #[arg(long, value_name = "DURATION", requires = "hub", value_parser = humantime::parse_duration)]
        hub_timeout: Option<std::time::Duration>,
        /// Renew this host's certificate (a new key, certified by the hub) once it expires
        /// within DURATION; checked at start and twice a day [default: 30days]
        #[arg(long, value_name = "DURATION", requires = "hub", value_parser = humantime::parse_duration)]
        renew_within: Option<std::time::Duration>,
    },
    /// Hosts: other machines whose edge daemons serve their agents through this hub
    #[command(subcommand)]
    Host(HostCommand),
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
    /// Provider profiles: the hosts a provider's keys may be sent to, the header they travel
    /// in, and the variables that point SDKs at the proxy
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Print a granted secret's current value (credential from SCOPEHOLD_TOKEN, else your uid)
    #[command(after_help = EXIT_CODES)]
    Resolve {
        /// PROVIDER/NAME
        secret: SecretName,
        /// The project the grant is in [default: $SCOPEHOLD_PROJECT, else `project` in
        /// config.toml]
        #[arg(long)]
        project: ProjectName,
        /// A version still in its grace period
        #[arg(long)]
        version: Option<u32>,
    },
    /// Run a command with granted secrets in its environment (SCOPEHOLD_TOKEN removed);
    /// exits with the command's status
    #[command(
        after_help = "Without --env, every secret granted in the project is injected as PROVIDER_NAME (upper case, '/' and '-' as '_'). Exit status: the command's, or 1-5 if it could not be started (see scopehold --help)."
    )]
    Run(RunArgs),
    /// The audit log: show, verify, export, checkpoints
    #[command(subcommand, after_help = EXIT_CODES)]
    Log(LogCommand),
    /// The passphrase that seals the state directory's keys
    #[command(subcommand)]
    Passphrase(PassphraseCommand),
    /// Write a consistent copy of the state to one file while the daemon runs: the keys
    /// (always sealed), log.pub, ca.pem and the log up to its last checkpoint, verified
    #[command(
        after_help = "The backup never holds a plain key: an unsealed state's keys are sealed inside it under --passphrase-file (or a passphrase asked twice on a terminal), and restoring needs that passphrase. Exit status: 0 written, 1 error."
    )]
    Backup {
        /// Where to write the backup (created 0600)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists
        #[arg(long)]
        force: bool,
        /// An unsealed state: the passphrase to seal the keys with inside the backup
        /// (required). A sealed state: its passphrase, to check that the keys open (optional)
        #[arg(long, env = "SCOPEHOLD_PASSPHRASE_FILE", value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Bring a backup back into a new or empty state directory (--home), after verifying all
    /// of it: its digest, the log's chain and every signature, and that the passphrase opens
    /// every key
    #[command(
        after_help = "Nothing is written unless everything checks out. Exit status: 0 restored, 1 error (a wrong passphrase, a target that is not empty or has a running daemon), 5 the backup is damaged or does not verify."
    )]
    Restore {
        /// The backup file
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The backup's passphrase (the restored state's keys stay sealed under it)
        /// [default: asked on the terminal]
        #[arg(long, env = "SCOPEHOLD_PASSPHRASE_FILE", value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Check the set-up: state directory, keys, socket, the daemon's protections, and whether
    /// an agent shares the daemon's uid (the one case where nothing on disk can be protected)
    #[command(
        after_help = "Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed."
    )]
    Doctor,
    /// Whether the daemon is reachable, on which socket; its version, uptime, log, keys,
    /// proxy listener, and (for admins) how many projects, secrets, agents, members, grants
    #[command(after_help = "Exit status: 0 when the daemon answered, 4 when it cannot be reached.")]
    Status,
    /// Who the daemon takes you for: an agent (by SCOPEHOLD_TOKEN), else a member (by your
    /// uid), or nobody; with your uid, pid and whether you are an admin
    #[command(
        after_help = "Exit status: 0 when the daemon knows you, 3 when it takes you for nobody (or refuses the agent), 4 when it cannot be reached."
    )]
    Whoami,
    /// Print a shell completion script (e.g. `scopehold completions bash > ~/.local/share/bash-completion/completions/scopehold`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (scopehold.1 and one per subcommand, e.g. scopehold-grant-create.1)
    /// into DIR, or print scopehold.1 to standard output
    Man {
        /// The directory to write every page into (created if missing)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print where ScopeHold's files are, as this command line resolves them (one NAME for
    /// `$(...)`, e.g. `--key "$(scopehold path log-pub)"`; all of them without one)
    Path {
        /// Which path [default: all of them, one per line]
        #[arg(value_enum)]
        which: Option<PathName>,
    },
    /// The console: browse, filter and verify the audit trail, rotate and revoke (? for keys)
    Console {
        /// Auditor mode: open an exported bundle, verified and read-only (no daemon, no state)
        #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "remote")]
        bundle: Option<PathBuf>,
        /// Read the log through the daemon's socket, page by page, each page verified here:
        /// the console on another host, through its edge (the default where the state
        /// directory holds no log, as an edge's does)
        #[arg(long)]
        remote: bool,
        /// The log's public key (64 hex characters or a .pub file): for --bundle; with
        /// --remote, the key the pages must verify with [default: the key the daemon reports]
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
    },
}

/// The paths `scopehold path` prints.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PathName {
    /// The state directory
    Home,
    /// The daemon's socket
    Socket,
    /// The log's public key file, for auditors (`log verify --key`)
    LogPub,
    /// The log's directory
    Log,
    /// The kept checkpoint
    Checkpoint,
    /// The ScopeHold CA's certificate
    CaCert,
    /// The trust bundle (system roots and the CA) given to `run --proxy` children
    CaBundle,
}

/// `scopehold passphrase ...`.
#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Re-seal both keys under a new passphrase (or seal an unsealed state); the log is not
    /// touched. Run it as the state directory's owner; a running daemon keeps working
    Change {
        /// The current passphrase [default: asked on the terminal, if the state is sealed]
        #[arg(long, env = "SCOPEHOLD_PASSPHRASE_FILE", value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The new passphrase [default: asked twice on the terminal]
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

/// `scopehold project ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project
    Create {
        /// The project's name
        name: ProjectName,
    },
    /// Every project
    List,
}

/// `scopehold secret ...`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new secret; the value is read from standard input or a prompt, never argv
    Put {
        /// PROVIDER/NAME
        name: SecretName,
        /// Project to assign it to (repeatable) [default: $SCOPEHOLD_PROJECT, else `project`
        /// in config.toml]
        #[arg(long = "project", required = true)]
        projects: Vec<ProjectName>,
    },
    /// Add a new version (read from standard input or a prompt) that becomes current; grants
    /// follow it
    Rotate {
        /// PROVIDER/NAME
        name: SecretName,
        /// Keep the previous version resolvable for this long (e.g. 10m, 1h)
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
    },
    /// Store the variables of a .env file as secrets (KEY=value, export KEY=value, quotes,
    /// comments); values are never printed, errors name line numbers only
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Stop every resolution of the secret
    Revoke {
        /// PROVIDER/NAME
        name: SecretName,
    },
    /// Add the secret to another project (grants there are made with `grant create`)
    Assign {
        /// PROVIDER/NAME
        name: SecretName,
        /// The project to add it to
        #[arg(long)]
        project: ProjectName,
    },
    /// Take the secret out of a project: its grants there end for good (adding it back does
    /// not revive them)
    Unassign {
        /// PROVIDER/NAME
        name: SecretName,
        /// The project to take it out of
        #[arg(long)]
        project: ProjectName,
    },
    /// Delete the secret for good (crypto-shredding): its sealed values are erased from the
    /// log and can never be read again; the events stay and still verify; the name is not
    /// reused
    Delete {
        /// PROVIDER/NAME
        name: SecretName,
        /// Do not ask for confirmation (required when there is no terminal to ask on)
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Every secret: its current version, projects, grantees and state
    List,
}

const IMPORT_HELP: &str = "Each variable named by --map VAR=PROVIDER/NAME, or by a provider profile's key variables (OPENAI_API_KEY -> openai/NAME, with NAME from --name), is stored with `secret put`; a secret that exists is refused unless --rotate adds a version to it. Nothing is stored unless every mapped variable can be. Variables without a mapping are listed and skipped. Afterwards delete the file (shred -u FILE).";

/// `secret import`'s arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The .env file
    pub file: PathBuf,
    /// Project to assign new secrets to (repeatable)
    #[arg(long = "project", required = true)]
    pub projects: Vec<ProjectName>,
    /// Store variable VAR as secret PROVIDER/NAME (repeatable; overrides the profiles' defaults)
    #[arg(long = "map", value_name = "VAR=PROVIDER/NAME")]
    pub maps: Vec<String>,
    /// The NAME in PROVIDER/NAME for variables mapped by a provider profile
    #[arg(long, default_value = "default")]
    pub name: Name,
    /// Add a new version to secrets that already exist (grants follow it) instead of refusing
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate: keep the previous versions resolvable for this long (e.g. 10m)
    #[arg(long, requires = "rotate", value_parser = humantime::parse_duration)]
    pub grace: Option<std::time::Duration>,
    /// Say what would be stored, store nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `scopehold agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its credential (shown once)
    Create {
        /// The agent's name
        name: Name,
        /// Only accept the agent from processes running as this uid (on --host, if given)
        #[arg(long)]
        uid: Option<u32>,
        /// Only accept the agent through this enrolled host's edge
        #[arg(long, value_name = "HOST")]
        host: Option<Name>,
    },
    /// Revoke an agent: all its grants stop
    Revoke {
        /// The agent's name
        name: Name,
    },
    /// Replace an agent's credential (prints the new one, once)
    Reissue {
        /// The agent's name
        name: Name,
    },
    /// Every agent: its uid, grants and state
    List,
}

/// `scopehold host ...`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Invite a host to enrol: prints a one-time join token (shown once) for
    /// `scopehold daemon --hub https://HUB:PORT --join TOKEN` on that host
    Add {
        /// The host's name
        name: Name,
        /// How long the token stays good (default 1h, at most 7d)
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Every host: invited, enrolled or revoked, and whether its edge is connected
    List,
    /// Revoke a host: its certificate opens no connection, its live connections are cut
    Revoke {
        /// The host's name
        name: Name,
    },
}

/// `scopehold member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member: a human, recognised by the uid of their processes
    Add {
        /// The member's name
        name: Name,
        /// The member's unix uid
        #[arg(long)]
        uid: u32,
        /// Let the member administer ScopeHold (secrets, identities, grants)
        #[arg(long)]
        admin: bool,
        /// The enrolled host the uid is on (a member elsewhere is a host and a uid); without
        /// it, the uid is one of the hub's own host
        #[arg(long, value_name = "HOST")]
        host: Option<Name>,
    },
    /// Remove a member: their uid no longer identifies them and their grants end for good
    /// (the last admin cannot be removed)
    Remove {
        /// The member
        name: Name,
    },
    /// Give a member the admin right
    Promote {
        /// The member
        name: Name,
    },
    /// Take a member's admin right away (the last admin cannot be demoted)
    Demote {
        /// The member
        name: Name,
    },
    /// Every member: uid and admin right
    List,
}

/// `scopehold provider ...`.
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Every profile in effect (built-in or set by an admin)
    List,
    /// One provider's profile
    Show {
        /// The provider namespace (`openai`)
        provider: Name,
    },
    /// Add a provider that has no profile yet (recorded as an event)
    Add {
        /// The provider namespace
        provider: Name,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Change a provider's profile, or override a built-in one (recorded as an event); the
    /// fields not given keep their current values
    Set {
        /// The provider namespace
        provider: Name,
        #[command(flatten)]
        profile: ProfileArgs,
    },
}

/// A profile's fields on the command line.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// An upstream host the key may be sent to, HOST or HOST:PORT (repeatable; replaces the
    /// list). Base-URL requests go to the first
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The header the key travels in (`authorization`, `x-api-key`)
    #[arg(long)]
    pub header: Option<String>,
    /// What precedes the key in that header (`"Bearer "`, `"token "`)
    #[arg(long)]
    pub prefix: Option<String>,
    /// Appended to the proxy URL in base-URL variables (`/v1`)
    #[arg(long)]
    pub base_path: Option<String>,
    /// A variable set to the proxy's base URL (repeatable; replaces the list)
    #[arg(long = "base-url-env", value_name = "VAR")]
    pub base_url_env: Vec<String>,
    /// A variable that receives the placeholder key (repeatable; replaces the list)
    #[arg(long = "key-env", value_name = "VAR")]
    pub key_env: Vec<String>,
}

/// `scopehold grant ...`.
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Grant IDENTITY the secret in a project; prints the grant id
    Create {
        /// Who receives it: agent:NAME or member:NAME (the kind is always said, so a grant
        /// never lands on an agent named like a member)
        #[arg(value_parser = qualified_identity)]
        identity: IdentityRef,
        /// PROVIDER/NAME
        secret: SecretName,
        /// The project the grant is for [default: $SCOPEHOLD_PROJECT, else `project` in
        /// config.toml]
        #[arg(long)]
        project: ProjectName,
        /// Expires after this long (e.g. 1h, 7d)
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// At most this many resolutions in all
        #[arg(long)]
        max_uses: Option<u64>,
        /// Resolutions per minute
        #[arg(long)]
        rate: Option<u32>,
        /// Only for callers running as this uid (on --host, if given)
        #[arg(long)]
        uid: Option<u32>,
        /// Only for callers through this enrolled host's edge
        #[arg(long, value_name = "HOST")]
        host: Option<Name>,
    },
    /// Revoke a grant: its holder can no longer resolve the secret through it
    Revoke {
        /// The grant's id (from `grant create` or `grant list`)
        id: u64,
    },
    /// Every grant: holder, secret, project, limits, uses and state
    List,
}

/// `scopehold log ...`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Show events, decoded (secret-bearing bodies never shown)
    Show {
        /// Only events by or about this identity: agent:NAME, member:NAME, or a bare name
        #[arg(long)]
        identity: Option<String>,
        /// Only events about this secret (PROVIDER/NAME)
        #[arg(long)]
        secret: Option<String>,
        /// Event kind, e.g. secret_resolved
        #[arg(long, value_parser = kind_parser())]
        kind: Option<EventKind>,
        /// Only denials
        #[arg(long)]
        denied: bool,
        /// Time window, count, project and follow.
        #[command(flatten)]
        options: ShowOptions,
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

/// `log verify`'s arguments.
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

/// `log export --format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// One self-contained binary bundle, verifiable with `log verify --bundle`
    Bundle,
    /// One JSON object per line (events with raw envelope bytes in hex, and checkpoints)
    Jsonl,
}

/// `log export`'s arguments.
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
    /// What to write
    #[arg(long, value_enum, default_value_t = ExportFormat::Bundle)]
    pub format: ExportFormat,
}

/// An identity with its kind said: `agent:NAME` or `member:NAME`.
fn qualified_identity(s: &str) -> Result<IdentityRef, String> {
    match s.parse::<IdentityRef>() {
        Ok(IdentityRef::Qualified(i)) => Ok(IdentityRef::Qualified(i)),
        Ok(IdentityRef::Bare(n)) => Err(format!(
            "say which kind of identity: agent:{n} or member:{n}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `log show`'s time window, count, project and follow.
#[derive(Debug, Clone, Default, Args)]
pub struct ShowOptions {
    /// Only events at or after WHEN: an RFC 3339 time (2025-06-01T12:00:00Z) or a duration
    /// ago (90s, 1h, 7d)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<When>,
    /// Only events at or before WHEN: an RFC 3339 time or a duration ago
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<When>,
    /// Only the last N matching events (with --follow: then the new ones as they come)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Keep printing matching events as they are committed, until interrupted (Ctrl-C) or
    /// the reader of the output goes away
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events about this project (that name it, or a grant made in it)
    #[arg(long)]
    pub project: Option<ProjectName>,
}

/// A point in time, in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct When(pub u64);

/// An RFC 3339 time, or a duration meaning that long ago.
fn parse_when(s: &str) -> Result<When, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return u64::try_from(ms)
            .map(When)
            .map_err(|_| "a time before 1970".to_string());
    }
    match humantime::parse_duration(s) {
        Ok(ago) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let ms = now.saturating_sub(ago).as_millis();
            Ok(When(u64::try_from(ms).unwrap_or(u64::MAX)))
        }
        Err(_) => Err(
            "expected an RFC 3339 time (2025-06-01T12:00:00Z) or a duration ago (90s, 1h, 7d)"
                .to_string(),
        ),
    }
}

/// `--kind` takes the names of the one table of event kinds.
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = EventKind> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(EventKind::ALL.iter().map(|k| k.name())).map(|s| {
        // The possible values are exactly the table's names.
        EventKind::from_name(&s).expect("a name from the table")
    })
}

/// `scopehold run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The project whose grants the command uses [default: $SCOPEHOLD_PROJECT, else `project`
    /// in config.toml]
    #[arg(long)]
    pub project: ProjectName,
    /// VAR=PROVIDER/NAME (repeatable)
    #[arg(long = "env", value_name = "VAR=PROVIDER/NAME")]
    pub envs: Vec<String>,
    /// Pass the command's output through unchanged (by default each value, and its base64,
    /// hex and URL-encoded forms, is shown as <scopehold:PROVIDER/NAME>)
    #[arg(long)]
    pub no_masking: bool,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// Give the command placeholders and base URLs instead of the values: its calls go
    /// through the daemon's injecting proxy, which adds the key; the key never reaches it
    #[arg(long)]
    pub proxy: bool,
    /// With --proxy: start although this uid is a member's (a one-person trial). The child
    /// could then act as that member by uid, so the key is not kept from a hostile child
    #[arg(long, requires = "proxy")]
    pub allow_member_uid: bool,
    /// Restart the command when a secret it holds is rotated; stop it (exit 3) when one is
    /// revoked or access to it ends. The daemon pushes the change (a long poll), no polling
    #[arg(long)]
    pub watch: bool,
    /// With --watch: seconds the command has to exit after SIGTERM before SIGKILL
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "watch")]
    pub stop_grace: u64,
}
