//! CLI commands that talk to the daemon over its socket, each through a typed endpoint.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::anyhow;
use serde::Serialize;
use zeroize::Zeroizing;

use super::args::{AgentCommand, GrantCommand, MemberCommand, ProjectCommand, SecretCommand};
use super::client::{self, CallError, ClientError};
use super::exit::{EXIT_DENIED, EXIT_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, Exit};
use super::output::{header, joined, opt, state, table, time_str};
use crate::api::wire::{self, Empty, SecretString};
use crate::api::{Endpoint, endpoint};
use crate::domain::{ProjectName, SecretName};

/// Where the daemon is, and how to print.
#[derive(Debug)]
pub struct Ctx {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Print JSON instead of text.
    pub json: bool,
    /// The uid the daemon must run as; checked from the socket's peer credentials before
    /// anything is sent (see [`client::expected_daemon_uid`]).
    pub daemon_uid: Option<u32>,
}

fn token() -> Option<Zeroizing<String>> {
    std::env::var("SCOPEHOLD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Zeroizing::new)
}

/// Calls an endpoint; maps refusals to exit status 3 (401, 403, 429) or 1, and an
/// unreachable daemon to 4.
fn call<E: Endpoint>(
    ctx: &Ctx,
    req: &E::Request,
    token: Option<&str>,
) -> Result<E::Response, Exit> {
    client::call_expecting::<E>(&ctx.socket, ctx.daemon_uid, req, token).map_err(|e| {
        let code = match &e {
            CallError::Client(ClientError::Unreachable { .. }) => EXIT_UNREACHABLE,
            CallError::Refused {
                status: 401 | 403 | 429,
                ..
            } => EXIT_DENIED,
            _ => EXIT_ERROR,
        };
        Exit::new(code, e)
    })
}

/// Admin calls are made as the calling member (peer uid), never with an agent credential.
fn admin<E: Endpoint>(ctx: &Ctx, req: &E::Request) -> Result<E::Response, Exit> {
    call::<E>(ctx, req, None)
}

fn print<T: Serialize>(ctx: &Ctx, v: &T, text: impl FnOnce(&T) -> String) -> Result<(), Exit> {
    if ctx.json {
        println!("{}", serde_json::to_string(v).map_err(anyhow::Error::new)?);
    } else {
        println!("{}", text(v));
    }
    Ok(())
}

/// Reads a secret value from standard input (all of it, one trailing newline dropped) or,
/// on a terminal, from a prompt that does not echo. Never from argv.
fn read_value(name: &SecretName) -> Result<SecretString, Exit> {
    let v = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("value for {name}: "))
                .map_err(|e| anyhow!("reading the value: {e}"))?,
        )
    } else {
        let mut s = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| anyhow!("reading the value from standard input: {e}"))?;
        let trimmed = s
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&s);
        Zeroizing::new(trimmed.to_string())
    };
    if v.is_empty() {
        return Err(anyhow!("empty value").into());
    }
    Ok(SecretString::new(v))
}

/// `project create|list`.
pub fn project(ctx: &Ctx, c: ProjectCommand) -> Result<(), Exit> {
    match c {
        ProjectCommand::Create { name } => {
            let v = admin::<endpoint::ProjectCreate>(ctx, &wire::ProjectCreateRequest { name })?;
            print(ctx, &v, |v| {
                format!("created project {} (event {})", v.project, v.event)
            })
        }
        ProjectCommand::List => {
            let v = admin::<endpoint::ProjectList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                v.projects
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

/// `secret put|rotate|revoke|list`.
pub fn secret(ctx: &Ctx, c: SecretCommand) -> Result<(), Exit> {
    match c {
        SecretCommand::Put { name, projects } => {
            let value = read_value(&name)?;
            let v = admin::<endpoint::SecretPut>(
                ctx,
                &wire::SecretPutRequest {
                    name,
                    projects,
                    value,
                },
            )?;
            print(ctx, &v, |v| {
                format!(
                    "stored {} version {} (event {})",
                    v.secret, v.version, v.event
                )
            })
        }
        SecretCommand::Rotate { name, grace } => {
            let value = read_value(&name)?;
            let v = admin::<endpoint::SecretRotate>(
                ctx,
                &wire::SecretRotateRequest {
                    name,
                    value,
                    grace_secs: grace.map(|g| g.as_secs()),
                },
            )?;
            print(ctx, &v, |v| {
                format!(
                    "rotated {} to version {} (event {})",
                    v.secret, v.version, v.event
                )
            })
        }
        SecretCommand::Revoke { name } => {
            let v = admin::<endpoint::SecretRevoke>(ctx, &wire::SecretRevokeRequest { name })?;
            print(ctx, &v, |v| {
                format!("revoked {} (event {})", v.secret, v.event)
            })
        }
        SecretCommand::List => {
            let v = admin::<endpoint::SecretList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&[
                    "SECRET",
                    "VERSION",
                    "PROJECTS",
                    "GRANTED TO",
                    "STATE",
                ])];
                for x in &v.secrets {
                    rows.push(vec![
                        x.name.to_string(),
                        x.version.to_string(),
                        joined(&x.projects),
                        joined(&x.granted_to),
                        state(x.revoked),
                    ]);
                }
                table(rows)
            })
        }
    }
}

/// `agent create|revoke|reissue|list`.
pub fn agent(ctx: &Ctx, c: AgentCommand) -> Result<(), Exit> {
    match c {
        AgentCommand::Create { name, uid } => {
            let v = admin::<endpoint::AgentCreate>(ctx, &wire::AgentCreateRequest { name, uid })?;
            print(ctx, &v, |v| {
                format!(
                    "created agent {} (event {})\ncredential (shown once; give it to the agent as SCOPEHOLD_TOKEN):\n{}",
                    v.agent,
                    v.event,
                    v.credential.expose()
                )
            })
        }
        AgentCommand::Reissue { name } => {
            let v = admin::<endpoint::AgentReissue>(ctx, &wire::AgentNameRequest { name })?;
            print(ctx, &v, |v| {
                format!(
                    "new credential for agent {} (shown once):\n{}",
                    v.agent,
                    v.credential.expose()
                )
            })
        }
        AgentCommand::Revoke { name } => {
            let v = admin::<endpoint::AgentRevoke>(ctx, &wire::AgentNameRequest { name })?;
            print(ctx, &v, |v| {
                format!("revoked agent {} (event {})", v.agent, v.event)
            })
        }
        AgentCommand::List => {
            let v = admin::<endpoint::AgentList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&["AGENT", "UID", "GRANTS", "STATE"])];
                for x in &v.agents {
                    rows.push(vec![
                        x.name.to_string(),
                        opt(x.uid),
                        joined(&x.grants),
                        state(x.revoked),
                    ]);
                }
                table(rows)
            })
        }
    }
}

/// `member add|list`.
pub fn member(ctx: &Ctx, c: MemberCommand) -> Result<(), Exit> {
    match c {
        MemberCommand::Add {
            name,
            uid,
            admin: is_admin,
        } => {
            let v = admin::<endpoint::MemberAdd>(
                ctx,
                &wire::MemberAddRequest {
                    name,
                    uid,
                    admin: is_admin,
                },
            )?;
            print(ctx, &v, |v| {
                format!("added member {} (event {})", v.member, v.event)
            })
        }
        MemberCommand::List => {
            let v = admin::<endpoint::MemberList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&["MEMBER", "UID", "ADMIN"])];
                for x in &v.members {
                    rows.push(vec![
                        x.name.to_string(),
                        x.uid.to_string(),
                        x.admin.to_string(),
                    ]);
                }
                table(rows)
            })
        }
    }
}

/// `grant create|revoke|list`.
pub fn grant(ctx: &Ctx, c: GrantCommand) -> Result<(), Exit> {
    match c {
        GrantCommand::Create {
            identity,
            secret,
            project,
            ttl,
            max_uses,
            rate,
            uid,
        } => {
            let v = admin::<endpoint::GrantCreate>(
                ctx,
                &wire::GrantCreateRequest {
                    identity,
                    secret,
                    project,
                    ttl_secs: ttl.map(|t| t.as_secs().max(1)),
                    max_uses,
                    rate_per_min: rate,
                    uid,
                },
            )?;
            print(ctx, &v, |v| v.grant.to_string())
        }
        GrantCommand::Revoke { id } => {
            let v = admin::<endpoint::GrantRevoke>(ctx, &wire::GrantRevokeRequest { id })?;
            print(ctx, &v, |v| {
                format!("revoked grant {} (event {})", v.grant, v.event)
            })
        }
        GrantCommand::List => {
            let v = admin::<endpoint::GrantList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&[
                    "ID", "IDENTITY", "SECRET", "PROJECT", "USES", "MAX", "RATE/MIN", "EXPIRES",
                    "STATE",
                ])];
                for x in &v.grants {
                    rows.push(vec![
                        x.id.to_string(),
                        x.identity.to_string(),
                        x.secret.to_string(),
                        x.project.to_string(),
                        x.uses.to_string(),
                        opt(x.max_uses),
                        opt(x.rate_per_min),
                        x.expires_at_ms.map_or_else(|| "-".into(), time_str),
                        state(x.revoked),
                    ]);
                }
                table(rows)
            })
        }
    }
}

fn resolve_value(
    ctx: &Ctx,
    secret: &SecretName,
    project: &ProjectName,
    version: Option<u32>,
) -> Result<wire::ResolveResponse, Exit> {
    let t = token();
    call::<endpoint::Resolve>(
        ctx,
        &wire::ResolveRequest {
            secret: secret.clone(),
            project: project.clone(),
            version,
        },
        t.as_deref().map(|s| s.as_str()),
    )
}

/// `resolve`: the value alone on standard output, or the whole answer as JSON.
pub fn resolve(
    ctx: &Ctx,
    secret: &SecretName,
    project: &ProjectName,
    version: Option<u32>,
) -> Result<(), Exit> {
    let r = resolve_value(ctx, secret, project, version)?;
    use std::io::Write;
    let mut out = std::io::stdout();
    if ctx.json {
        // Serialised straight to standard output: no intermediate string holds the value.
        serde_json::to_writer(&mut out, &r).map_err(anyhow::Error::new)?;
        out.write_all(b"\n")
            .and_then(|_| out.flush())
            .map_err(|e| anyhow!("writing the value: {e}"))?;
    } else {
        // The value alone, with no trailing newline, so `$(scopehold resolve ...)` is exact.
        out.write_all(r.value.expose().as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| anyhow!("writing the value: {e}"))?;
    }
    Ok(())
}

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
pub fn run(
    ctx: &Ctx,
    project: &ProjectName,
    envs: &[String],
    command: &[String],
) -> Result<(), Exit> {
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
    let mut values = Vec::new();
    for (var, secret) in &mappings {
        let r = resolve_value(ctx, secret, project, None)?;
        values.push((var.clone(), r.value));
    }
    let code = spawn_and_wait(command, &values)?;
    drop(values);
    std::process::exit(code);
}

/// Starts the child with the values in its environment and without SCOPEHOLD_TOKEN, forwards
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and returns its exit status (128 + signal if a
/// signal ended it).
fn spawn_and_wait(command: &[String], values: &[(String, SecretString)]) -> Result<i32, Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the runtime: {e}"))?;
    rt.block_on(async {
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..]).env_remove("SCOPEHOLD_TOKEN");
        for (k, v) in values {
            cmd.env(k, v.expose());
        }
        let mut child = cmd.spawn().map_err(|e| anyhow!("starting {}: {e}", command[0]))?;
        let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        let mut sigs = Vec::new();
        for (k, n) in [
            (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
            (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
            (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
            (SignalKind::quit(), nix::sys::signal::Signal::SIGQUIT),
        ] {
            sigs.push((signal(k).map_err(|e| anyhow!("installing signal handlers: {e}"))?, n));
        }
        loop {
            let [(a, na), (b, nb), (c, nc), (d, nd)] = &mut sigs[..] else { unreachable!("four signals") };
            let forward = tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(|e| anyhow!("waiting for {}: {e}", command[0]))?;
                    use std::os::unix::process::ExitStatusExt;
                    return Ok::<i32, Exit>(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
                }
                _ = a.recv() => *na,
                _ = b.recv() => *nb,
                _ = c.recv() => *nc,
                _ = d.recv() => *nd,
            };
            if let Some(p) = pid {
                let _ = nix::sys::signal::kill(p, forward);
            }
        }
    })
}
