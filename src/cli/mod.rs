//! The command line: `args` (clap; `config` fills in the default project), then `commands`
//! (calls to the daemon through typed endpoints), `logcmd` (the log files read directly;
//! `logscan` walks and follows them for `log show`), `console` (the glue between the domain
//! and the `scopehold-tui` crate); `client` speaks HTTP over the socket; `exit` (statuses,
//! and how failures are reported, as text or `--json`), `out` (standard output that never
//! panics) and `output` are shared by them all. Nothing here imports this file back.

pub mod args;
pub mod backupcmd;
pub mod client;
pub mod commands;
pub mod config;
pub mod console;
pub mod doctor;
pub mod dotenv;
pub mod exit;
pub mod import;
pub mod logcmd;
pub mod logscan;
pub mod out;
pub mod outfile;
pub mod output;
pub mod run;
pub mod setup;
pub mod status;

pub use args::Cli;
pub use exit::{EXIT_OK, Exit};

use crate::daemon::keyfile::{Passphrase, PassphraseSource};
use args::{Command, LogCommand, PassphraseCommand};
use out::outln;

/// Carries out a parsed command line.
pub fn run(cli: Cli) -> Result<(), Exit> {
    // Generated from the clap types alone: no state directory or daemon needed.
    match &cli.command {
        Command::Completions { shell } => return setup::completions(*shell),
        Command::Man { out } => return setup::man(out.as_deref(), cli.json),
        _ => {}
    }
    let home = crate::daemon::Home::new(cli.home.clone(), cli.checkpoint_file.clone())?;
    let socket = crate::daemon::socket_path(&home, cli.socket.as_deref());
    let ctx = commands::Ctx {
        daemon_uid: Some(client::expected_daemon_uid(
            cli.daemon_uid,
            &home.root,
            &socket,
        )),
        socket,
        json: cli.json,
    };
    match cli.command {
        Command::Init { passphrase_file } => {
            let sealed = passphrase_file.is_some();
            let home = crate::daemon::Home {
                passphrase: PassphraseSource {
                    file: passphrase_file,
                },
                ..home
            };
            let public = home.init()?;
            if cli.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "home": home.root,
                        "log_public_key": public.to_hex(),
                        "log_public_key_file": home.log_pub(),
                        "sealed": sealed,
                    })
                )?;
            } else {
                outln!("Initialised ScopeHold state in {}", home.root.display())?;
                if sealed {
                    outln!("keys sealed under the passphrase (the daemon needs it to start)")?;
                }
                outln!("log public key: {public}")?;
                outln!(
                    "(also in {}; give it to auditors)",
                    home.log_pub().display()
                )?;
            }
            Ok(())
        }
        Command::Daemon {
            passphrase_file,
            socket_group,
            accept_missing_checkpoint,
            proxy_listen,
            upstream_ca,
            tunnel_other_connect,
            listen,
            hub_name,
            tls_cert,
            tls_key,
            hub,
            join,
            hub_timeout,
            renew_within,
            store,
            store_ca,
        } => {
            let home = crate::daemon::Home {
                accept_missing_checkpoint,
                passphrase: PassphraseSource {
                    file: passphrase_file,
                },
                ..home
            };
            Ok(crate::daemon::run(
                home,
                cli.socket,
                socket_group,
                crate::daemon::ProxyOptions {
                    listen: proxy_listen,
                    upstream_ca,
                    tunnel_other_connect,
                },
                crate::daemon::HubOptions {
                    listen,
                    names: hub_name,
                    hub,
                    join: join.map(zeroize::Zeroizing::new),
                    timeout: hub_timeout,
                    renew_within,
                    store: store
                        .as_deref()
                        .map(|s| crate::daemon::store::StoreUrl::parse(s, store_ca.as_deref()))
                        .transpose()?,
                    tls: tls_cert.zip(tls_key),
                },
            )?)
        }
        Command::Doctor => doctor::run(&home, &ctx),
        Command::Status => status::status(&ctx),
        Command::Whoami => status::whoami(&ctx),
        Command::Completions { .. } | Command::Man { .. } => Ok(()),
        Command::Path { which } => setup::path(&home, &ctx.socket, which, cli.json),
        Command::Passphrase(PassphraseCommand::Change {
            passphrase_file,
            new_passphrase_file,
        }) => {
            let old = PassphraseSource {
                file: passphrase_file,
            };
            let was_sealed = home.is_sealed()?;
            home.change_passphrase(&old, || match &new_passphrase_file {
                Some(f) => Passphrase::from_file(f),
                None => Passphrase::prompt_new("pass --new-passphrase-file FILE"),
            })?;
            if cli.json {
                outln!(
                    "{}",
                    serde_json::json!({"home": home.root, "sealed": true, "was_sealed": was_sealed})
                )?;
            } else if was_sealed {
                outln!(
                    "passphrase changed: both keys in {} re-sealed (the log was not touched)",
                    home.root.display()
                )?;
            } else {
                outln!(
                    "keys in {} sealed under the new passphrase (the daemon now needs it to start)",
                    home.root.display()
                )?;
            }
            Ok(())
        }
        Command::Backup {
            out,
            force,
            passphrase_file,
        } => backupcmd::backup(&home, &out, force, passphrase_file, cli.json),
        Command::Restore {
            from,
            passphrase_file,
        } => backupcmd::restore(&home, &from, passphrase_file, cli.json),
        Command::Project(c) => commands::project(&ctx, c),
        Command::Secret(c) => commands::secret(&ctx, c),
        Command::Agent(c) => commands::agent(&ctx, c),
        Command::Host(c) => commands::host(&ctx, c),
        Command::Member(c) => commands::member(&ctx, c),
        Command::Grant(c) => commands::grant(&ctx, c),
        Command::Provider(c) => commands::provider(&ctx, c),
        Command::Resolve {
            secret,
            project,
            version,
        } => commands::resolve(&ctx, &secret, &project, version),
        Command::Run(a) => run::run(&ctx, &a),
        Command::Log(LogCommand::Show {
            identity,
            secret,
            kind,
            denied,
            options,
        }) => logcmd::show(
            &home,
            identity.as_deref(),
            secret.as_deref(),
            kind,
            denied,
            &options,
            cli.json,
        ),
        Command::Console {
            bundle: Some(b),
            key,
            ..
        } => Ok(console::run_bundle(&b, key.as_deref().unwrap_or_default())?),
        Command::Console {
            bundle: None,
            remote,
            key,
        } => {
            if remote || !home.log_dir().exists() {
                Ok(console::run_remote(
                    &ctx.socket,
                    ctx.daemon_uid,
                    key.as_deref(),
                )?)
            } else if key.is_some() {
                Err(anyhow::anyhow!("--key goes with --bundle or --remote").into())
            } else {
                Ok(console::run(&home, &ctx.socket, ctx.daemon_uid)?)
            }
        }
        Command::Log(LogCommand::Verify(a)) => logcmd::verify(&home, &a, cli.json),
        Command::Log(LogCommand::Export(a)) => logcmd::export(&home, &a, cli.json),
        Command::Log(LogCommand::Checkpoint { out }) => {
            logcmd::checkpoint(&home, out.as_deref(), cli.json)
        }
    }
}
