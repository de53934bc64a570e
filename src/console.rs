//! `scopehold console`: what the console needs to know of the domain, handed to the
//! `scopehold-tui` crate (which knows only the log): how to summarise an event, and how to
//! build the Secrets, Identities and Grants tables from the log's projection.

use std::sync::Arc;

use anyhow::Result;
use scopehold_tui::{Decoder, Summary, TablesFn};

use crate::domain::{Event, State};
use crate::home::Home;
use crate::logcmd::time_str;

fn summarize(kind: u16, body: Option<&[u8]>) -> Summary {
    let mut s = Summary {
        kind: Event::kind_name(kind).to_string(),
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
    s.identity = ev.identity().unwrap_or("").to_string();
    s.secret = ev.secret().unwrap_or("").to_string();
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
            s.project = project.clone();
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
            s.project = project.clone();
            s.outcome = format!("DENIED ({reason})");
            s.fields = vec![
                f("uid", uid.to_string()),
                f("pid", pid.map_or("-".into(), |p| p.to_string())),
            ];
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
            s.project = project.clone();
            s.identity = identity.clone();
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
        Event::SecretStored { projects, .. } => s.project = projects.join(","),
        Event::SecretRevoked { .. } => s.outcome = "revoked".into(),
        Event::ProjectCreated { project, .. } => s.project = project.clone(),
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
        Event::AgentCredentialIssued { .. } | Event::SecretVersionSealed { .. } => {}
    }
    s
}

pub fn decoder() -> Decoder {
    Arc::new(summarize)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |x| x.to_string())
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
        let holders: Vec<&str> = st
            .grants
            .values()
            .filter(|g| &g.secret == n && !g.revoked)
            .map(|g| g.identity.as_str())
            .collect();
        secrets.push(vec![
            n.clone(),
            s.current.to_string(),
            s.versions.len().to_string(),
            s.projects.iter().cloned().collect::<Vec<_>>().join(","),
            holders.join(","),
            active(s.revoked),
        ]);
    }
    // Active grant ids of an identity, comma-separated.
    let grants_of = |id: &str| {
        st.grants
            .iter()
            .filter(|(_, g)| g.identity == id && !g.revoked)
            .map(|(i, _)| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut ids = vec![
        ["IDENTITY", "UID", "GRANTS", "LAST USE", "STATE"]
            .map(String::from)
            .to_vec(),
    ];
    for (n, a) in &st.agents {
        let id = format!("agent:{n}");
        let grants = grants_of(&id);
        ids.push(vec![
            id,
            opt(a.uid),
            grants,
            a.last_used_ms.map_or("-".into(), time_str),
            active(a.revoked),
        ]);
    }
    for (n, m) in &st.members {
        let id = format!("member:{n}");
        let grants = grants_of(&id);
        ids.push(vec![
            id,
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
            g.identity.clone(),
            g.secret.clone(),
            g.project.clone(),
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

/// Sends the console's confirmed requests to the daemon, as the member running the console.
pub fn actions(socket: std::path::PathBuf) -> scopehold_tui::ActionsFn {
    use scopehold_tui::Request;
    use serde_json::json;
    Arc::new(move |r: Request| {
        let (path, body) = match &r {
            Request::RevokeGrant(id) => ("/v1/grants/revoke", json!({"id": id})),
            Request::RevokeAgent(n) => ("/v1/agents/revoke", json!({"name": n})),
            Request::RotateSecret { name, value } => (
                "/v1/secrets/rotate",
                json!({"name": name, "value": value.as_str()}),
            ),
            Request::Grant {
                identity,
                secret,
                project,
            } => (
                "/v1/grants",
                json!({"identity": identity, "secret": secret, "project": project}),
            ),
        };
        let a = crate::client::request(&socket, "POST", path, Some(&body), None)
            .map_err(|e| e.to_string())?;
        if a.status == 200 {
            Ok(format!(
                "done: {} (event {})",
                r.describe(),
                a.body["event"]
            ))
        } else {
            Err(format!(
                "{} ({}): {}",
                a.error_code().unwrap_or("error"),
                a.status,
                a.error_message()
            ))
        }
    })
}

pub fn run(home: &Home, socket: &std::path::Path) -> Result<()> {
    let key = home.public_key()?;
    let (dir, k) = (home.log_dir(), key);
    let tables: TablesFn = Arc::new(move || {
        crate::core::replay(&dir, &k)
            .map(|st| tables_of(&st))
            .map_err(|e| format!("{e:#}"))
    });
    scopehold_tui::run(scopehold_tui::Config {
        log_dir: home.log_dir(),
        key,
        decoder: decoder(),
        bundle: None,
        tables: Some(tables),
        actions: Some(actions(socket.to_path_buf())),
        color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    })?;
    Ok(())
}

/// Auditor mode: the bundle is verified with `key` before anything is shown.
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
