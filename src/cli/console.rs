//! `scopehold console`: what the console needs to know of the domain, handed to the
//! `scopehold-tui` crate (which knows only the log): how to summarise an event, and how to
//! build the Secrets, Identities and Grants tables from the log's projection.

use std::sync::Arc;

use anyhow::Result;
use scopehold_tui::{Decoder, Summary, TablesFn};

use super::client::{self, CallError};
use super::output::{joined, opt, proxy_outcome, time_str};
use crate::api::endpoint;
use crate::api::wire::{self, SecretString};
use crate::daemon::Home;
use crate::domain::{Event, EventKind, Identity, State};

fn summarize(kind: u16, body: Option<&[u8]>) -> Summary {
    let mut s = Summary {
        kind: EventKind::name_of(kind).to_string(),
        ..Summary::default()
    };
    let Some(body) = body else { return s };
    let ev = match Event::from_body(kind, body) {
        Ok(e) => e,
        Err(e) => {
            s.outcome = format!("undecodable: {e}");
            return s;
        }
    };
    s.identity = ev.identity().unwrap_or_default();
    s.secret = ev.secret().map(|x| x.to_string()).unwrap_or_default();
    s.denied = ev.is_denial();
    let f = |k: &str, v: String| (k.to_string(), v);
    match &ev {
        Event::SecretResolved {
            version,
            project,
            grant,
            pid,
            uid,
            ..
        } => {
            s.project = project.to_string();
            s.outcome = format!("granted v{version}");
            s.fields = vec![
                f("grant", grant.to_string()),
                f("uid", uid.to_string()),
                f("pid", pid.map_or("-".into(), |p| p.to_string())),
            ];
        }
        Event::ResolutionDenied {
            project,
            reason,
            uid,
            pid,
            ..
        } => {
            s.project = project.as_ref().map(|p| p.to_string()).unwrap_or_default();
            s.outcome = format!("DENIED ({reason})");
            s.fields = vec![
                f("uid", uid.to_string()),
                f("pid", pid.map_or("-".into(), |p| p.to_string())),
            ];
        }
        Event::DenialsCounted {
            identity,
            uid,
            reason,
            count,
            from_ms,
            to_ms,
        } => {
            if identity.is_none() {
                s.identity = uid.map_or("many callers".into(), |u| format!("uid {u}"));
            }
            s.outcome = format!("DENIED x{count} more ({reason})");
            s.fields = vec![f("from", time_str(*from_ms)), f("to", time_str(*to_ms))];
        }
        Event::UnauthenticatedDenied { uid, count, .. } => {
            s.identity = format!("uid {uid}");
            s.outcome = format!("DENIED x{count} (no valid credential)");
        }
        Event::GrantCreated {
            grant,
            project,
            expires_at_ms,
            max_uses,
            rate_per_min,
            uid,
            identity,
            ..
        } => {
            s.project = project.to_string();
            s.identity = identity.to_string();
            s.outcome = format!("grant {grant}");
            s.fields = vec![
                f("expires", expires_at_ms.map_or("never".into(), time_str)),
                f("max uses", max_uses.map_or("-".into(), |m| m.to_string())),
                f(
                    "rate/min",
                    rate_per_min.map_or("-".into(), |r| r.to_string()),
                ),
                f("uid", uid.map_or("any".into(), |u| u.to_string())),
            ];
        }
        Event::GrantRevoked { grant, .. } => s.outcome = format!("grant {grant} revoked"),
        Event::SecretRotated {
            version,
            grace_until_ms,
            ..
        } => {
            s.outcome = format!("now v{version}");
            if let Some(g) = grace_until_ms {
                s.fields = vec![f("grace until", time_str(*g))];
            }
        }
        Event::SecretStored { projects, .. } => s.project = joined(projects),
        Event::SecretRevoked { .. } => s.outcome = "revoked".into(),
        Event::SecretDeleted { erased, .. } => {
            s.outcome = "deleted (crypto-shredded)".into();
            s.fields = vec![f("erased events", joined(erased))];
        }
        Event::ProjectCreated { project, .. } => s.project = project.to_string(),
        Event::MemberAdded {
            member, uid, admin, ..
        } => {
            s.outcome = format!("member:{member}");
            s.fields = vec![f("uid", uid.to_string()), f("admin", admin.to_string())];
        }
        Event::AgentCreated { agent, uid, .. } => {
            s.outcome = format!("agent:{agent}");
            s.fields = vec![f("uid", uid.map_or("any".into(), |u| u.to_string()))];
        }
        Event::AgentRevoked { agent, .. } => s.outcome = format!("agent:{agent} revoked"),
        Event::ProviderSet {
            provider, profile, ..
        } => {
            s.outcome = format!("provider {provider}");
            s.fields = vec![
                f("hosts", profile.hosts.join(", ")),
                f("header", profile.header.clone()),
            ];
        }
        Event::ProxyCall {
            version,
            project,
            host,
            method,
            path,
            run,
            uid,
            pid,
            ..
        } => {
            s.project = project.to_string();
            s.outcome = format!("proxied v{version} {method} {host}");
            s.fields = vec![
                f("path", path.clone()),
                f("run", run.map_or("-".into(), |r| r.to_string())),
                f("uid", uid.to_string()),
                f("pid", pid.map_or("-".into(), |p| p.to_string())),
            ];
        }
        Event::ProxyDenied {
            project,
            host,
            method,
            path,
            reason,
            uid,
            ..
        } => {
            s.project = project.to_string();
            s.outcome = format!("PROXY DENIED ({reason}) {method} {host}");
            s.fields = vec![f("path", path.clone()), f("uid", uid.to_string())];
        }
        Event::ProxyResults { results, .. } => {
            s.outcome = format!("{} proxied call outcomes", results.len());
            s.fields = results
                .iter()
                .take(8)
                .map(|r| f(&format!("call {}", r.call), proxy_outcome(r)))
                .collect();
        }
        Event::RunStarted {
            run,
            project,
            secrets,
            uid,
            ..
        } => {
            s.project = project.to_string();
            s.outcome = format!("run {run} started");
            s.fields = vec![f("secrets", joined(secrets)), f("uid", uid.to_string())];
        }
        Event::RunEnded { run, reason, .. } => s.outcome = format!("run {run} ended ({reason})"),
        Event::AgentCredentialIssued { .. } | Event::SecretVersionSealed { .. } => {}
    }
    s
}

/// How the console summarises an event of the domain.
pub fn decoder() -> Decoder {
    Arc::new(summarize)
}

/// The Secrets, Identities and Grants tables of a state.
pub fn tables_of(st: &State) -> scopehold_tui::ui::Tables {
    let active = |revoked: bool| if revoked { "revoked" } else { "active" }.to_string();
    let mut secrets = vec![
        [
            "SECRET",
            "VERSION",
            "VERSIONS",
            "PROJECTS",
            "GRANTED TO",
            "STATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (n, s) in &st.secrets {
        let holders = st
            .grants
            .values()
            .filter(|g| &g.secret == n && !g.revoked)
            .map(|g| &g.identity);
        secrets.push(vec![
            n.to_string(),
            s.current.to_string(),
            s.versions.len().to_string(),
            joined(&s.projects),
            joined(holders),
            active(s.revoked),
        ]);
    }
    // Active grant ids of an identity, comma-separated.
    let grants_of = |id: &Identity| {
        joined(
            st.grants
                .iter()
                .filter(|(_, g)| &g.identity == id && !g.revoked)
                .map(|(i, _)| i),
        )
    };
    let mut ids = vec![
        ["IDENTITY", "UID", "GRANTS", "LAST USE", "STATE"]
            .map(String::from)
            .to_vec(),
    ];
    for (n, a) in &st.agents {
        let id = Identity::Agent(n.clone());
        let grants = grants_of(&id);
        ids.push(vec![
            id.to_string(),
            opt(a.uid),
            grants,
            a.last_used_ms.map_or("-".into(), time_str),
            active(a.revoked),
        ]);
    }
    for (n, m) in &st.members {
        let id = Identity::Member(n.clone());
        let grants = grants_of(&id);
        ids.push(vec![
            id.to_string(),
            m.uid.to_string(),
            grants,
            "-".into(),
            if m.admin {
                "admin".into()
            } else {
                "member".into()
            },
        ]);
    }
    let mut grants = vec![
        [
            "ID", "IDENTITY", "SECRET", "PROJECT", "USES", "MAX", "RATE/MIN", "UID", "EXPIRES",
            "STATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (id, g) in &st.grants {
        grants.push(vec![
            id.to_string(),
            g.identity.to_string(),
            g.secret.to_string(),
            g.project.to_string(),
            g.uses.to_string(),
            opt(g.max_uses),
            opt(g.rate_per_min),
            opt(g.uid),
            g.expires_at_ms.map_or("never".into(), time_str),
            active(g.revoked),
        ]);
    }
    [secrets, ids, grants]
}

/// Sends the console's confirmed requests to the daemon, as the member running the console,
/// through the same typed endpoints as the CLI.
pub fn actions(socket: std::path::PathBuf) -> scopehold_tui::ActionsFn {
    actions_expecting(socket, None)
}

/// As [`actions`], each call first checking that the socket's peer runs as uid `expect`.
pub fn actions_expecting(
    socket: std::path::PathBuf,
    expect: Option<u32>,
) -> scopehold_tui::ActionsFn {
    use scopehold_tui::Request;
    Arc::new(move |r: Request| {
        let bad = |e: crate::domain::NameError| e.to_string();
        let failed = |e: CallError| e.to_string();
        let what = r.describe();
        let event = match r {
            Request::RevokeGrant(id) => {
                client::call_expecting::<endpoint::GrantRevoke>(
                    &socket,
                    expect,
                    &wire::GrantRevokeRequest { id },
                    None,
                )
                .map_err(failed)?
                .event
            }
            Request::RevokeAgent(n) => {
                let name = n.parse().map_err(bad)?;
                client::call_expecting::<endpoint::AgentRevoke>(
                    &socket,
                    expect,
                    &wire::AgentNameRequest { name },
                    None,
                )
                .map_err(failed)?
                .event
            }
            Request::RotateSecret { name, value } => {
                let name = name.parse().map_err(bad)?;
                // Moved, not copied: the typed value stays in its zeroizing buffer.
                let value = SecretString::new(value);
                client::call_expecting::<endpoint::SecretRotate>(
                    &socket,
                    expect,
                    &wire::SecretRotateRequest {
                        name,
                        value,
                        grace_secs: None,
                    },
                    None,
                )
                .map_err(failed)?
                .event
            }
            Request::Grant {
                identity,
                secret,
                project,
            } => {
                let req = wire::GrantCreateRequest {
                    identity: identity.parse().map_err(bad)?,
                    secret: secret.parse().map_err(bad)?,
                    project: project.parse().map_err(bad)?,
                    ttl_secs: None,
                    max_uses: None,
                    rate_per_min: None,
                    uid: None,
                };
                client::call_expecting::<endpoint::GrantCreate>(&socket, expect, &req, None)
                    .map_err(failed)?
                    .event
            }
        };
        Ok(format!("done: {what} (event {event})"))
    })
}

/// `console`: the state directory's log, with the daemon for actions.
pub fn run(home: &Home, socket: &std::path::Path, daemon_uid: Option<u32>) -> Result<()> {
    let key = home.public_key()?;
    let (dir, k) = (home.log_dir(), key);
    let tables: TablesFn = Arc::new(move || {
        crate::daemon::replay(&dir, &k)
            .map(|st| tables_of(&st))
            .map_err(|e| format!("{e:#}"))
    });
    scopehold_tui::run(scopehold_tui::Config {
        log_dir: home.log_dir(),
        key,
        decoder: decoder(),
        bundle: None,
        tables: Some(tables),
        actions: Some(actions_expecting(socket.to_path_buf(), daemon_uid)),
        color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    })?;
    Ok(())
}

/// `console --bundle`, auditor mode: the bundle is verified with `key` before anything is shown.
pub fn run_bundle(bundle: &std::path::Path, key: &str) -> Result<()> {
    let key = scopehold_log::PublicKey::from_arg(key).map_err(anyhow::Error::msg)?;
    scopehold_tui::run(scopehold_tui::Config {
        log_dir: std::path::PathBuf::new(),
        bundle: Some(bundle.to_path_buf()),
        key,
        decoder: decoder(),
        tables: None,
        actions: None,
        color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_shows_proxied_calls_and_their_refusals() {
        let call = Event::ProxyCall {
            identity: "agent:bot".parse().unwrap(),
            secret: "openai/prod".parse().unwrap(),
            version: 2,
            project: "demo".parse().unwrap(),
            grant: 1,
            host: "api.openai.com".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            run: Some(3),
            pid: Some(7),
            uid: 1000,
            at_ms: 1,
        };
        let s = summarize(
            EventKind::ProxyCall.number(),
            Some(&serde_json::to_vec(&call).unwrap()),
        );
        assert_eq!(
            (s.identity.as_str(), s.secret.as_str(), s.denied),
            ("agent:bot", "openai/prod", false)
        );
        assert_eq!(s.outcome, "proxied v2 POST api.openai.com");
        assert!(s.fields.iter().any(|(k, v)| k == "run" && v == "3"));
        let denied = Event::ProxyDenied {
            identity: "agent:bot".parse().unwrap(),
            secret: "openai/prod".parse().unwrap(),
            project: "demo".parse().unwrap(),
            host: "evil.test".into(),
            method: "GET".into(),
            path: "/".into(),
            reason: "host not in provider profile".into(),
            run: None,
            pid: None,
            uid: 1000,
            at_ms: 2,
        };
        let s = summarize(
            EventKind::ProxyDenied.number(),
            Some(&serde_json::to_vec(&denied).unwrap()),
        );
        assert!(s.denied && s.outcome.contains("evil.test"), "{}", s.outcome);
    }
}
