//! `scopehold run`: a command with the secrets it is granted, as values in its environment
//! (masked in its output) or, with `--proxy`, as placeholders that only the daemon's
//! injecting proxy turns into keys.
//!
//! `child` starts the command and relays signals.

mod child;
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
    let mut mappings: Vec<(String, SecretName)> = Vec::new();
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
        mappings.push((var.to_string(), secret));
    }
    if mappings.is_empty() {
        let t = token();
        let me = call::<endpoint::Whoami>(ctx, &Empty {}, t.as_deref().map(|s| s.as_str()))?;
        for g in me.grants {
            if &g.project == project && !mappings.iter().any(|(_, s)| *s == g.secret) {
                mappings.push((env_name(&g.secret), g.secret));
            }
        }
        if mappings.is_empty() {
            return Err(Exit::new(
                EXIT_DENIED,
                anyhow!("nothing is granted to {} in project {project}", me.identity),
            ));
        }
    }
    if args.watch {
        let grace = std::time::Duration::from_secs(args.stop_grace);
        let code = watch::run_watching(ctx, project, &mappings, command, grace)?;
        std::process::exit(code);
    }
    let mut values = Vec::new();
    for (var, secret) in &mappings {
        let r = resolve_value(ctx, secret, project, None)?;
        values.push((var.clone(), r.value));
    }
    let code = child::spawn_and_wait(command, &values, std::future::pending())?;
    drop(values);
    std::process::exit(code);
}
