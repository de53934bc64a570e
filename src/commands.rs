//! CLI commands that talk to the daemon over its socket.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::anyhow;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::{
    AgentCommand, EXIT_DENIED, EXIT_ERROR, EXIT_UNREACHABLE, Exit, GrantCommand, MemberCommand,
    ProjectCommand, SecretCommand,
};
use crate::client::{self, Answer, ClientError};

#[derive(Debug)]
pub struct Ctx {
    pub socket: PathBuf,
    pub json: bool,
}

fn token() -> Option<Zeroizing<String>> {
    std::env::var("SCOPEHOLD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Zeroizing::new)
}

/// Sends a request; maps refusals to exit status 3 (401, 403, 429) or 1, and an unreachable
/// daemon to 4.
fn call(
    ctx: &Ctx,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<Value, Exit> {
    let a: Answer =
        client::request(&ctx.socket, method, path, body, token).map_err(|e| match e {
            ClientError::Unreachable { .. } => Exit {
                code: EXIT_UNREACHABLE,
                error: anyhow!(e),
            },
            e => Exit {
                code: EXIT_ERROR,
                error: anyhow!(e),
            },
        })?;
    if a.status == 200 {
        return Ok(a.body);
    }
    let code = match a.status {
        401 | 403 | 429 => EXIT_DENIED,
        _ => EXIT_ERROR,
    };
    Err(Exit {
        code,
        error: anyhow!(
            "{} ({}): {}",
            a.error_code().unwrap_or("error"),
            a.status,
            a.error_message()
        ),
    })
}

fn admin(ctx: &Ctx, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Exit> {
    // Admin calls are made as the calling member (peer uid), never with an agent credential.
    call(ctx, method, path, body, None)
}

fn print(ctx: &Ctx, v: &Value, text: impl FnOnce(&Value) -> String) {
    if ctx.json {
        println!("{v}");
    } else {
        println!("{}", text(v));
    }
}

/// Reads a secret value from standard input (all of it, one trailing newline dropped) or,
/// on a terminal, from a prompt that does not echo. Never from argv.
fn read_value(name: &str) -> Result<Zeroizing<String>, Exit> {
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
    Ok(v)
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, |r| r.len()))
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON array of values as `a,b,c`.
fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// `revoked` or `active`, from an object's `revoked` field.
fn state(x: &Value) -> String {
    if x["revoked"] == true {
        "revoked"
    } else {
        "active"
    }
    .into()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn project(ctx: &Ctx, c: ProjectCommand) -> Result<(), Exit> {
    match c {
        ProjectCommand::Create { name } => {
            let v = admin(ctx, "POST", "/v1/projects", Some(&json!({"name": name})))?;
            print(ctx, &v, |v| {
                format!(
                    "created project {} (event {})",
                    s(&v["project"]),
                    v["event"]
                )
            });
        }
        ProjectCommand::List => {
            let v = admin(ctx, "GET", "/v1/projects", None)?;
            print(ctx, &v, |v| {
                v["projects"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default()
            });
        }
    }
    Ok(())
}

pub fn secret(ctx: &Ctx, c: SecretCommand) -> Result<(), Exit> {
    match c {
        SecretCommand::Put { name, projects } => {
            let value = read_value(&name)?;
            let v = admin(
                ctx,
                "POST",
                "/v1/secrets",
                Some(&json!({"name": name, "projects": projects, "value": value.as_str()})),
            )?;
            print(ctx, &v, |v| {
                format!(
                    "stored {} version {} (event {})",
                    s(&v["secret"]),
                    v["version"],
                    v["event"]
                )
            });
        }
        SecretCommand::Rotate { name, grace } => {
            let value = read_value(&name)?;
            let body = json!({"name": name, "value": value.as_str(), "grace_secs": grace.map(|g| g.as_secs())});
            let v = admin(ctx, "POST", "/v1/secrets/rotate", Some(&body))?;
            print(ctx, &v, |v| {
                format!(
                    "rotated {} to version {} (event {})",
                    s(&v["secret"]),
                    v["version"],
                    v["event"]
                )
            });
        }
        SecretCommand::Revoke { name } => {
            let v = admin(
                ctx,
                "POST",
                "/v1/secrets/revoke",
                Some(&json!({"name": name})),
            )?;
            print(ctx, &v, |v| {
                format!("revoked {} (event {})", s(&v["secret"]), v["event"])
            });
        }
        SecretCommand::List => {
            let v = admin(ctx, "GET", "/v1/secrets", None)?;
            print(ctx, &v, |v| {
                let mut rows = vec![vec![
                    "SECRET".into(),
                    "VERSION".into(),
                    "PROJECTS".into(),
                    "GRANTED TO".into(),
                    "STATE".into(),
                ]];
                for x in v["secrets"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&x["name"]),
                        s(&x["version"]),
                        joined(&x["projects"]),
                        joined(&x["granted_to"]),
                        state(x),
                    ]);
                }
                table(rows)
            });
        }
    }
    Ok(())
}

pub fn agent(ctx: &Ctx, c: AgentCommand) -> Result<(), Exit> {
    match c {
        AgentCommand::Create { name, uid } => {
            let v = admin(
                ctx,
                "POST",
                "/v1/agents",
                Some(&json!({"name": name, "uid": uid})),
            )?;
            print(ctx, &v, |v| {
                format!(
                    "created agent {} (event {})\ncredential (shown once; give it to the agent as SCOPEHOLD_TOKEN):\n{}",
                    s(&v["agent"]),
                    v["event"],
                    s(&v["credential"])
                )
            });
        }
        AgentCommand::Reissue { name } => {
            let v = admin(
                ctx,
                "POST",
                "/v1/agents/reissue",
                Some(&json!({"name": name})),
            )?;
            print(ctx, &v, |v| {
                format!(
                    "new credential for agent {} (shown once):\n{}",
                    s(&v["agent"]),
                    s(&v["credential"])
                )
            });
        }
        AgentCommand::Revoke { name } => {
            let v = admin(
                ctx,
                "POST",
                "/v1/agents/revoke",
                Some(&json!({"name": name})),
            )?;
            print(ctx, &v, |v| {
                format!("revoked agent {} (event {})", s(&v["agent"]), v["event"])
            });
        }
        AgentCommand::List => {
            let v = admin(ctx, "GET", "/v1/agents", None)?;
            print(ctx, &v, |v| {
                let mut rows = vec![vec![
                    "AGENT".into(),
                    "UID".into(),
                    "GRANTS".into(),
                    "STATE".into(),
                ]];
                for x in v["agents"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&x["name"]),
                        s(&x["uid"]),
                        joined(&x["grants"]),
                        state(x),
                    ]);
                }
                table(rows)
            });
        }
    }
    Ok(())
}

pub fn member(ctx: &Ctx, c: MemberCommand) -> Result<(), Exit> {
    match c {
        MemberCommand::Add {
            name,
            uid,
            admin: is_admin,
        } => {
            let v = admin(
                ctx,
                "POST",
                "/v1/members",
                Some(&json!({"name": name, "uid": uid, "admin": is_admin})),
            )?;
            print(ctx, &v, |v| {
                format!("added member {} (event {})", s(&v["member"]), v["event"])
            });
        }
        MemberCommand::List => {
            let v = admin(ctx, "GET", "/v1/members", None)?;
            print(ctx, &v, |v| {
                let mut rows = vec![vec!["MEMBER".into(), "UID".into(), "ADMIN".into()]];
                for x in v["members"].as_array().into_iter().flatten() {
                    rows.push(vec![s(&x["name"]), s(&x["uid"]), s(&x["admin"])]);
                }
                table(rows)
            });
        }
    }
    Ok(())
}

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
            let body = json!({"identity": identity, "secret": secret, "project": project, "ttl_secs": ttl.map(|t| t.as_secs().max(1)),
                              "max_uses": max_uses, "rate_per_min": rate, "uid": uid});
            let v = admin(ctx, "POST", "/v1/grants", Some(&body))?;
            print(ctx, &v, |v| s(&v["grant"]));
        }
        GrantCommand::Revoke { id } => {
            let v = admin(ctx, "POST", "/v1/grants/revoke", Some(&json!({"id": id})))?;
            print(ctx, &v, |v| {
                format!("revoked grant {} (event {})", s(&v["grant"]), v["event"])
            });
        }
        GrantCommand::List => {
            let v = admin(ctx, "GET", "/v1/grants", None)?;
            print(ctx, &v, |v| {
                let mut rows = vec![vec![
                    "ID".into(),
                    "IDENTITY".into(),
                    "SECRET".into(),
                    "PROJECT".into(),
                    "USES".into(),
                    "MAX".into(),
                    "RATE/MIN".into(),
                    "EXPIRES".into(),
                    "STATE".into(),
                ]];
                for x in v["grants"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&x["id"]),
                        s(&x["identity"]),
                        s(&x["secret"]),
                        s(&x["project"]),
                        s(&x["uses"]),
                        s(&x["max_uses"]),
                        s(&x["rate_per_min"]),
                        x["expires_at_ms"]
                            .as_u64()
                            .map(crate::logcmd::time_str)
                            .unwrap_or_else(|| "-".into()),
                        state(x),
                    ]);
                }
                table(rows)
            });
        }
    }
    Ok(())
}

fn resolve_value(
    ctx: &Ctx,
    secret: &str,
    project: &str,
    version: Option<u32>,
) -> Result<(Zeroizing<String>, Value), Exit> {
    let t = token();
    let mut v = call(
        ctx,
        "POST",
        "/v1/resolve",
        Some(&json!({"secret": secret, "project": project, "version": version})),
        t.as_deref().map(|s| s.as_str()),
    )?;
    // Move the value out of the parsed answer into a zeroizing string (no copy left behind).
    let value = match v.get_mut("value").map(Value::take) {
        Some(Value::String(s)) => Zeroizing::new(s),
        _ => Zeroizing::new(String::new()),
    };
    Ok((value, v))
}

pub fn resolve(ctx: &Ctx, secret: &str, project: &str, version: Option<u32>) -> Result<(), Exit> {
    let (value, meta) = resolve_value(ctx, secret, project, version)?;
    if ctx.json {
        println!(
            "{}",
            json!({"value": value.as_str(), "version": meta["version"], "event": meta["event"]})
        );
    } else {
        use std::io::Write;
        // The value alone, with no trailing newline, so `$(scopehold resolve ...)` is exact.
        let mut out = std::io::stdout();
        out.write_all(value.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| anyhow!("writing the value: {e}"))?;
    }
    Ok(())
}

/// `openai/prod` -> `OPENAI_PROD`.
pub fn env_name(secret: &str) -> String {
    secret
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

pub fn run(ctx: &Ctx, project: &str, envs: &[String], command: &[String]) -> Result<(), Exit> {
    let mut mappings: Vec<(String, String)> = Vec::new();
    for e in envs {
        let (var, secret) = e
            .split_once('=')
            .filter(|(v, s)| !v.is_empty() && !s.is_empty())
            .ok_or_else(|| Exit {
                code: crate::cli::EXIT_USAGE,
                error: anyhow!("--env takes VAR=PROVIDER/NAME, got {e:?}"),
            })?;
        mappings.push((var.to_string(), secret.to_string()));
    }
    if mappings.is_empty() {
        let t = token();
        let me = call(
            ctx,
            "GET",
            "/v1/whoami",
            None,
            t.as_deref().map(|s| s.as_str()),
        )?;
        for g in me["grants"].as_array().into_iter().flatten() {
            if g["project"] == project
                && let Some(secret) = g["secret"].as_str()
                && !mappings.iter().any(|(_, s)| s == secret)
            {
                mappings.push((env_name(secret), secret.to_string()));
            }
        }
        if mappings.is_empty() {
            return Err(Exit {
                code: EXIT_DENIED,
                error: anyhow!(
                    "nothing is granted to {} in project {project}",
                    s(&me["identity"])
                ),
            });
        }
    }
    let mut values = Vec::new();
    for (var, secret) in &mappings {
        let (value, _) = resolve_value(ctx, secret, project, None)?;
        values.push((var.clone(), value));
    }
    let code = spawn_and_wait(command, &values)?;
    drop(values);
    std::process::exit(code);
}

/// Starts the child with the values in its environment and without SCOPEHOLD_TOKEN, forwards
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and returns its exit status (128 + signal if a
/// signal ended it).
fn spawn_and_wait(command: &[String], values: &[(String, Zeroizing<String>)]) -> Result<i32, Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the runtime: {e}"))?;
    rt.block_on(async {
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..]).env_remove("SCOPEHOLD_TOKEN");
        for (k, v) in values {
            cmd.env(k, v.as_str());
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
