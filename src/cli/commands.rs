//! CLI commands that talk to the daemon over its socket, each through a typed endpoint.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::anyhow;
use serde::Serialize;
use zeroize::Zeroizing;

use super::args::{
    AgentCommand, GrantCommand, HostCommand, MemberCommand, ProfileArgs, ProjectCommand,
    ProviderCommand, SecretCommand,
};
use super::client::{self, CallError, ClientError};
use super::exit::{EXIT_DENIED, EXIT_ERROR, EXIT_UNREACHABLE, Exit};
use super::out::outln;
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

pub(crate) fn token() -> Option<Zeroizing<String>> {
    std::env::var("SCOPEHOLD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Zeroizing::new)
}

/// Calls an endpoint; maps refusals to exit status 3 (401, 403, 429) or 1, and an
/// unreachable daemon to 4.
pub(crate) fn call<E: Endpoint>(
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
        outln!("{}", serde_json::to_string(v).map_err(anyhow::Error::new)?)
    } else {
        outln!("{}", text(v))
    }
}

/// Reads a secret value from standard input (all of it, one trailing newline dropped) or,
/// on a terminal, from a prompt that does not echo. Never from argv. A value over the
/// daemon's limit is refused here, before anything is sent (and before more than the limit
/// is read).
fn read_value(name: &SecretName) -> Result<SecretString, Exit> {
    use crate::daemon::seal::MAX_VALUE_LEN;
    let v = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("value for {name}: "))
                .map_err(|e| anyhow!("reading the value: {e}"))?,
        )
    } else {
        // Room for the limit, a trailing CR LF, and one byte more to tell "over"; allocated
        // once, so no reallocation leaves an unwiped copy of the value behind.
        let room = MAX_VALUE_LEN + 3;
        let mut s = Zeroizing::new(String::with_capacity(room));
        std::io::stdin()
            .take(room as u64)
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
    if v.len() > MAX_VALUE_LEN {
        return Err(Exit::from(super::exit::Coded::new(
            "too_large",
            format!("value too large (limit {MAX_VALUE_LEN} bytes)"),
        )));
    }
    Ok(SecretString::new(v))
}

/// Asks on the terminal before a deletion, which cannot be undone: the secret's name must be
/// typed back. Without a terminal there is no one to ask, and `--yes` is required.
fn confirm_delete(name: &SecretName) -> Result<(), Exit> {
    use std::io::{BufRead, Write};
    let usage = |m: String| Exit::new(super::exit::EXIT_USAGE, anyhow!(m));
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(usage(format!(
            "refusing to delete {name} without confirmation: there is no terminal to ask on; pass --yes"
        )));
    }
    // Not eprint!: it panics when standard error cannot be written.
    let _ = write!(
        std::io::stderr(),
        "Deleting {name} destroys its sealed values: no one can ever read them again, and the name cannot be reused.\nType {name} to delete it: "
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow!("reading the confirmation: {e}"))?;
    if line.trim_end_matches(['\n', '\r']) != name.as_str() {
        return Err(anyhow!("not deleted: the name typed does not match").into());
    }
    Ok(())
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

/// `secret put|rotate|revoke|delete|list`.
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
        SecretCommand::Import(a) => super::import::run(ctx, a),
        SecretCommand::Revoke { name } => {
            let v = admin::<endpoint::SecretRevoke>(ctx, &wire::SecretRevokeRequest { name })?;
            print(ctx, &v, |v| {
                format!("revoked {} (event {})", v.secret, v.event)
            })
        }
        SecretCommand::Assign { name, project } => {
            let v = admin::<endpoint::SecretAssign>(
                ctx,
                &wire::SecretProjectRequest { name, project },
            )?;
            print(ctx, &v, |v| {
                format!(
                    "added {} to project {} (event {})",
                    v.secret, v.project, v.event
                )
            })
        }
        SecretCommand::Unassign { name, project } => {
            let v = admin::<endpoint::SecretUnassign>(
                ctx,
                &wire::SecretProjectRequest { name, project },
            )?;
            print(ctx, &v, |v| {
                format!(
                    "took {} out of project {} (event {}){}",
                    v.secret,
                    v.project,
                    v.event,
                    ended_text(&v.grants_ended)
                )
            })
        }
        SecretCommand::Delete { name, yes } => {
            if !yes {
                confirm_delete(&name)?;
            }
            let v = admin::<endpoint::SecretDelete>(ctx, &wire::SecretDeleteRequest { name })?;
            print(ctx, &v, |v| match &v.erase_error {
                None => format!(
                    "deleted {} (event {}): its {} sealed version(s) are erased from the log and can never be read again",
                    v.secret, v.event, v.versions
                ),
                Some(why) => format!(
                    "deleted {} (event {}): it never resolves again, but its {} sealed version(s) are still in the log ({why}); the daemon erases them at its next start",
                    v.secret, v.event, v.versions
                ),
            })?;
            if v.erase_error.is_some() {
                // The deletion stands, but what the command is for is not done yet.
                return Err(Exit::new(
                    EXIT_ERROR,
                    anyhow!("the sealed values of {} are not erased yet", v.secret),
                ));
            }
            Ok(())
        }
        SecretCommand::List => {
            let v = admin::<endpoint::SecretList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&[
                    "SECRET",
                    "CURRENT",
                    "VERSIONS",
                    "PROJECTS",
                    "GRANTED TO",
                    "STATE",
                ])];
                for x in &v.secrets {
                    rows.push(vec![
                        x.name.to_string(),
                        format!("v{}", x.version),
                        versions_of(&x.version_states),
                        joined(&x.projects),
                        joined(&x.granted_to),
                        if x.deleted {
                            "deleted".into()
                        } else {
                            state(x.revoked)
                        },
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
        AgentCommand::Create { name, uid, host } => {
            let v =
                admin::<endpoint::AgentCreate>(ctx, &wire::AgentCreateRequest { name, uid, host })?;
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
                let mut rows = vec![header(&["AGENT", "UID", "HOST", "GRANTS", "STATE"])];
                for x in &v.agents {
                    rows.push(vec![
                        x.name.to_string(),
                        opt(x.uid),
                        opt(x.host.as_ref()),
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
    let promote = matches!(c, MemberCommand::Promote { .. });
    match c {
        MemberCommand::Add {
            name,
            uid,
            admin: is_admin,
            host,
        } => {
            let v = admin::<endpoint::MemberAdd>(
                ctx,
                &wire::MemberAddRequest {
                    name,
                    uid,
                    admin: is_admin,
                    host,
                },
            )?;
            print(ctx, &v, |v| {
                format!("added member {} (event {})", v.member, v.event)
            })
        }
        MemberCommand::Remove { name } => {
            let v = admin::<endpoint::MemberRemove>(ctx, &wire::MemberNameRequest { name })?;
            print(ctx, &v, |v| {
                format!(
                    "removed member {} (event {}){}",
                    v.member,
                    v.event,
                    ended_text(&v.grants_ended)
                )
            })
        }
        MemberCommand::Promote { name } | MemberCommand::Demote { name } => {
            let v = admin::<endpoint::MemberAdmin>(
                ctx,
                &wire::MemberAdminRequest {
                    name,
                    admin: promote,
                },
            )?;
            print(ctx, &v, |v| {
                if v.admin {
                    format!("member {} is an admin now (event {})", v.member, v.event)
                } else {
                    format!(
                        "member {} is no longer an admin (event {})",
                        v.member, v.event
                    )
                }
            })
        }
        MemberCommand::List => {
            let v = admin::<endpoint::MemberList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&["MEMBER", "UID", "HOST", "ADMIN"])];
                for x in &v.members {
                    rows.push(vec![
                        x.name.to_string(),
                        x.uid.to_string(),
                        opt(x.host.as_ref()),
                        x.admin.to_string(),
                    ]);
                }
                table(rows)
            })
        }
    }
}

/// `host add|list|revoke`.
pub fn host(ctx: &Ctx, c: HostCommand) -> Result<(), Exit> {
    match c {
        HostCommand::Add { name, ttl } => {
            let v = admin::<endpoint::HostAdd>(
                ctx,
                &wire::HostAddRequest {
                    name,
                    ttl_secs: ttl.map(|d| d.as_secs().max(1)),
                },
            )?;
            print(ctx, &v, |v| {
                format!(
                    "invited host {} (event {}); the join token is good once, until {}\non {}, run (the token is shown once):\n  scopehold daemon --hub https://HUB:PORT --join {}",
                    v.host,
                    v.event,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.expires_ms)
                    ),
                    v.host,
                    v.token.expose()
                )
            })
        }
        HostCommand::List => {
            let v = admin::<endpoint::HostList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&["HOST", "STATE", "CONNECTED", "CERT SHA-256"])];
                for x in &v.hosts {
                    rows.push(vec![
                        x.name.to_string(),
                        x.state.clone(),
                        x.connected.to_string(),
                        x.cert_sha256
                            .as_deref()
                            .map_or("-".to_string(), |c| c[..16.min(c.len())].to_string()),
                    ]);
                }
                table(rows)
            })
        }
        HostCommand::Revoke { name } => {
            let v = admin::<endpoint::HostRevoke>(ctx, &wire::HostNameRequest { name })?;
            print(ctx, &v, |v| {
                format!(
                    "revoked host {} (event {}); its connections are cut",
                    v.host, v.event
                )
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
            host,
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
                    host,
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
                    "STATE", "WHY",
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
                        x.state.clone(),
                        if x.state == "active" {
                            String::new()
                        } else {
                            x.why.clone()
                        },
                    ]);
                }
                table(rows)
            })
        }
    }
}

/// A listing's versions in the form the console shows them (one formatter for both).
fn versions_of(v: &[wire::VersionInfo]) -> String {
    use crate::domain::VersionState;
    let states: Vec<(u32, VersionState)> = v
        .iter()
        .map(|x| {
            let st = match (x.state.as_str(), x.grace_until_ms) {
                ("current", _) => VersionState::Current,
                (_, Some(until_ms)) => VersionState::Grace { until_ms },
                _ => VersionState::Retired,
            };
            (x.version, st)
        })
        .collect();
    super::output::versions_text(&states)
}

/// `; grants 3, 4 ended`, or nothing.
fn ended_text(ids: &[u64]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!("; grants ended: {}", joined(ids))
    }
}

fn profile_text(p: &wire::ProviderInfo) -> String {
    let f = &p.profile;
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "provider     {}{}\nhosts        {}\nheader       {}: {}KEY\nbase path    {}\nbase URL env {}\nkey env      {}",
        p.provider,
        if p.builtin { " (built-in)" } else { "" },
        list(&f.hosts),
        f.header,
        f.prefix,
        if f.base_path.is_empty() {
            "-"
        } else {
            &f.base_path
        },
        list(&f.base_url_env),
        list(&f.key_env),
    )
}

fn with_args(mut p: crate::domain::Profile, a: ProfileArgs) -> crate::domain::Profile {
    if !a.hosts.is_empty() {
        p.hosts = a.hosts;
    }
    if let Some(h) = a.header {
        p.header = h.to_ascii_lowercase();
    }
    if let Some(x) = a.prefix {
        p.prefix = x;
    }
    if let Some(x) = a.base_path {
        p.base_path = x;
    }
    if !a.base_url_env.is_empty() {
        p.base_url_env = a.base_url_env;
    }
    if !a.key_env.is_empty() {
        p.key_env = a.key_env;
    }
    p
}

/// `provider list|show|add|set`.
pub fn provider(ctx: &Ctx, c: ProviderCommand) -> Result<(), Exit> {
    let find = |name: &crate::domain::Name| -> Result<Option<wire::ProviderInfo>, Exit> {
        let all = admin::<endpoint::ProviderList>(ctx, &Empty {})?;
        Ok(all
            .providers
            .into_iter()
            .find(|p| p.provider == name.as_str()))
    };
    match c {
        ProviderCommand::List => {
            let v = admin::<endpoint::ProviderList>(ctx, &Empty {})?;
            print(ctx, &v, |v| {
                let mut rows = vec![header(&[
                    "PROVIDER",
                    "HOSTS",
                    "HEADER",
                    "BASE URL ENV",
                    "KEY ENV",
                    "SOURCE",
                ])];
                for p in &v.providers {
                    rows.push(vec![
                        p.provider.clone(),
                        p.profile.hosts.join(","),
                        p.profile.header.clone(),
                        p.profile.base_url_env.join(","),
                        p.profile.key_env.join(","),
                        if p.builtin { "built-in" } else { "set" }.to_string(),
                    ]);
                }
                table(rows)
            })
        }
        ProviderCommand::Show { provider } => match find(&provider)? {
            Some(p) => print(ctx, &p, profile_text),
            None => Err(Exit::new(
                EXIT_ERROR,
                anyhow!(
                    "no profile for provider {provider}: add one with `scopehold provider add`"
                ),
            )),
        },
        ProviderCommand::Add { provider, profile } => {
            let (Some(header), false) = (profile.header.clone(), profile.hosts.is_empty()) else {
                return Err(Exit::new(
                    super::exit::EXIT_USAGE,
                    anyhow!("provider add needs --host and --header"),
                ));
            };
            let p = with_args(
                crate::domain::Profile {
                    hosts: vec![],
                    header,
                    prefix: String::new(),
                    base_path: String::new(),
                    base_url_env: vec![],
                    key_env: vec![],
                },
                profile,
            );
            let v = admin::<endpoint::ProviderAdd>(
                ctx,
                &wire::ProviderSetRequest {
                    provider,
                    profile: p,
                },
            )?;
            print(ctx, &v, |v| {
                format!("added provider {} (event {})", v.provider, v.event)
            })
        }
        ProviderCommand::Set { provider, profile } => {
            let Some(current) = find(&provider)? else {
                return Err(Exit::new(
                    EXIT_ERROR,
                    anyhow!("no profile for provider {provider}: use `scopehold provider add`"),
                ));
            };
            let p = with_args(current.profile, profile);
            let v = admin::<endpoint::ProviderSet>(
                ctx,
                &wire::ProviderSetRequest {
                    provider,
                    profile: p,
                },
            )?;
            print(ctx, &v, |v| {
                format!("set provider {} (event {})", v.provider, v.event)
            })
        }
    }
}

pub(crate) fn resolve_value(
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

/// Resolves several secrets at once, all or nothing: a refusal of one consumes no use of
/// the others, and names the secret (and, to its grant's holder, why).
pub(crate) fn resolve_all(
    ctx: &Ctx,
    secrets: Vec<SecretName>,
    project: &ProjectName,
) -> Result<wire::ResolveAllResponse, Exit> {
    let t = token();
    call::<endpoint::ResolveAll>(
        ctx,
        &wire::ResolveAllRequest {
            secrets,
            project: project.clone(),
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
        serde_json::to_writer(&mut out, &r).map_err(|e| match e.io_error_kind() {
            Some(k) => super::out::write_error(k.into()),
            None => Exit::from(anyhow::Error::new(e)),
        })?;
        out.write_all(b"\n")
            .and_then(|_| out.flush())
            .map_err(super::out::write_error)?;
    } else {
        // The value alone, with no trailing newline, so `$(scopehold resolve ...)` is exact.
        out.write_all(r.value.expose().as_bytes())
            .and_then(|_| out.flush())
            .map_err(super::out::write_error)?;
    }
    Ok(())
}
