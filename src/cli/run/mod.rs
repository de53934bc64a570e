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
use super::commands::{Ctx, call, resolve_all, token};
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

/// Resolves every mapped secret at once, all or nothing (a refusal names the secret and
/// consumes no use of the others): each variable with its value and version.
pub(super) fn resolve_mapped(
    ctx: &Ctx,
    project: &crate::domain::ProjectName,
    mappings: &[(Option<String>, SecretName)],
) -> Result<Vec<(String, crate::api::wire::ResolvedValue)>, Exit> {
    let mut unique: Vec<SecretName> = Vec::new();
    for (_, s) in mappings {
        if !unique.contains(s) {
            unique.push(s.clone());
        }
    }
    let got = resolve_all(ctx, unique, project)?;
    mappings
        .iter()
        .map(|(var, secret)| {
            let v = got
                .values
                .iter()
                .find(|v| &v.secret == secret)
                .ok_or_else(|| anyhow!("the daemon did not answer for {secret}"))?;
            let var = var.clone().unwrap_or_else(|| env_name(secret));
            Ok((var, v.clone()))
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
        let here: Vec<_> = me.grants.iter().filter(|g| &g.project == project).collect();
        // A secret goes in if one of its grants can be used; one whose grants have all
        // stopped working (expired, used up, its secret revoked...) is left out and named,
        // rather than failing the whole run on it. With --env every one named must work.
        let mut dead = Vec::new();
        for g in &here {
            if mappings.iter().any(|(_, s)| *s == g.secret) {
                continue;
            }
            let live = here.iter().any(|o| {
                o.secret == g.secret && matches!(o.state.as_str(), "active" | "rate_limited")
            });
            if live {
                mappings.push((None, g.secret.clone()));
            } else if !dead.iter().any(|(s, _)| *s == &g.secret) {
                dead.push((&g.secret, format!("grant {}: {}", g.id, g.why)));
            }
        }
        for (s, why) in &dead {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "scopehold: {s} not injected ({why})");
        }
        if mappings.is_empty() {
            return Err(Exit::new(
                EXIT_DENIED,
                anyhow!(
                    "nothing usable is granted to {} in project {project}",
                    me.identity
                ),
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
    let values: Vec<_> = resolve_mapped(ctx, project, &mappings)?
        .into_iter()
        .map(|(var, v)| (var, v.value))
        .collect();
    let code = child::spawn_and_wait(command, &values, masking(&values), std::future::pending())?;
    drop(values);
    std::process::exit(code);
}
