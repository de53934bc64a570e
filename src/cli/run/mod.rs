//! `scopehold run`: a command with the secrets it is granted, as values in its environment
//! (masked in its output) or, with `--proxy`, as placeholders that only the daemon's
//! injecting proxy turns into keys.
//!
//! `child` starts the command and relays signals; `mask` is the streaming masker, `output`
//! sets up the child's streams (pipes or a pty) through it, `pty` the terminal side;
//! `proxy` is `--proxy`.

mod child;
mod mask;
mod output;
mod proxy;
mod pty;
pub use pty::exec_helper_if_asked;
mod watch;

use anyhow::anyhow;

use super::args::RunArgs;
use super::commands::{Ctx, call, resolve_value, token};
use super::exit::{EXIT_DENIED, EXIT_USAGE, Exit};
use crate::api::endpoint;
use crate::api::wire::Empty;
use crate::domain::SecretName;

/// `openai/prod` -> `OPENAI_PROD`.
pub fn env_name(secret: &SecretName) -> String {
    secret
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `run -- cmd`: the granted values in the child's environment; exits with its status.
pub fn run(ctx: &Ctx, args: &RunArgs) -> Result<(), Exit> {
    let (project, envs, command) = (&args.project, &args.envs, &args.command);
    // The child runs under our uid: without this it could read our environment (the
    // credential) from /proc/$PPID/environ, or our memory (every value we resolve for it).
    crate::daemon::hardening::not_dumpable()
        .map_err(|e| anyhow!("making this process unreadable to its child: {e}"))?;
    // With --proxy a secret's variable is chosen from its profile unless --env named one.
    let mut mappings: Vec<(Option<String>, SecretName)> = Vec::new();
    for e in envs {
        let usage = || {
            Exit::new(
                EXIT_USAGE,
                anyhow!("--env takes VAR=PROVIDER/NAME, got {e:?}"),
            )
        };
        let (var, secret) = e
            .split_once('=')
            .filter(|(v, s)| !v.is_empty() && !s.is_empty())
            .ok_or_else(usage)?;
        let secret: SecretName = secret.parse().map_err(|_| usage())?;
        mappings.push((Some(var.to_string()), secret));
    }
    if mappings.is_empty() {
        let t = token();
        let me = call::<endpoint::Whoami>(ctx, &Empty {}, t.as_deref().map(|s| s.as_str()))?;
        for g in me.grants {
            if &g.project == project && !mappings.iter().any(|(_, s)| *s == g.secret) {
                mappings.push((None, g.secret));
            }
        }
        if mappings.is_empty() {
            return Err(Exit::new(
                EXIT_DENIED,
                anyhow!("nothing is granted to {} in project {project}", me.identity),
            ));
        }
    }
    if args.proxy {
        return proxy::run(ctx, project, &mappings, command, args.allow_member_uid);
    }
    let masking = |values: &[(String, crate::api::wire::SecretString)]| {
        if args.no_masking {
            return None;
        }
        let labelled = mappings.iter().zip(values);
        mask::Patterns::new(labelled.map(|((_, s), (_, v))| (s.as_str(), v.expose().as_bytes())))
    };
    if args.watch {
        let grace = std::time::Duration::from_secs(args.stop_grace);
        let code = watch::run_watching(ctx, project, &mappings, command, grace, &masking)?;
        std::process::exit(code);
    }
    let mut values = Vec::new();
    for (var, secret) in &mappings {
        let r = resolve_value(ctx, secret, project, None)?;
        let var = var.clone().unwrap_or_else(|| env_name(secret));
        values.push((var, r.value));
    }
    let code = child::spawn_and_wait(command, &values, masking(&values), std::future::pending())?;
    drop(values);
    std::process::exit(code);
}
