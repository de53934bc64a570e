//! `scopehold console`: what the console needs to know of the domain, handed to the
//! `scopehold-tui` crate (which knows only the log): how to summarise an event, and how to
//! build the Secrets, Identities and Grants tables from the log's projection.

use std::sync::Arc;

use anyhow::Result;
use scopehold_tui::{Decoder, Summary, TablesFn};

use super::client::{self, CallError};
use super::output::{joined, opt, time_str};
use crate::api::endpoint;
use crate::api::wire::{self, SecretString};
use crate::daemon::Home;
use crate::domain::describe::ABSENT;
use crate::domain::{Event, EventKind, Identity, State, fold_partial};

fn summarize(kind: u16, body: Option<&[u8]>) -> Summary {
    let mut s = Summary {
        kind: EventKind::name_of(kind).to_string(),
        actor: ABSENT.into(),
        ..Summary::default()
    };
    let Some(body) = body else {
        // Only a bundle leaves a body out (a secret-bearing one): the kind is all there is.
        s.subject = "(body left out of the bundle)".into();
        return s;
    };
    let ev = match Event::from_body(kind, body) {
        Ok(e) => e,
        Err(e) => {
            s.subject = format!("undecodable: {e}");
            return s;
        }
    };
    let d = ev.describe();
    s.actor = d.actor_text();
    s.details = d.details_text();
    s.subject = d.subject;
    s.outcome = d.outcome;
    s.identity = ev.identity().unwrap_or_default();
    s.secret = ev.secret().map(|x| x.to_string()).unwrap_or_default();
    s.denied = ev.is_denial();
    s.fields = d
        .fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    s.project = ["project", "projects"]
        .iter()
        .find_map(|k| s.field(k))
        .filter(|p| *p != ABSENT)
        .unwrap_or_default()
        .to_string();
    s
}

/// How the console summarises an event of the domain.
pub fn decoder() -> Decoder {
    Arc::new(summarize)
}

/// The Secrets, Identities and Grants tables of a state, as of now.
pub fn tables_of(st: &State) -> scopehold_tui::ui::Tables {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    tables_at(st, now)
}

/// The tables at `now_ms`: each grant with its effective state and why, each secret with
/// its versions' states, holders only where a grant can be used (`domain::status`, as the
/// CLI's lists).
pub fn tables_at(st: &State, now_ms: u64) -> scopehold_tui::ui::Tables {
    let active = |revoked: bool| if revoked { "revoked" } else { "active" }.to_string();
    let live = |g: &crate::domain::Grant| st.grant_state(g, now_ms).is_live();
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
            .filter(|g| &g.secret == n && live(g))
            .map(|g| g.identity.to_string())
            .collect::<std::collections::BTreeSet<_>>();
        secrets.push(vec![
            n.to_string(),
            s.current.to_string(),
            super::output::versions_text(&s.version_states(now_ms)),
            joined(&s.projects),
            joined(holders),
            if s.deleted {
                "deleted".into()
            } else {
                active(s.revoked)
            },
        ]);
    }
    // Active grant ids of an identity, comma-separated.
    let grants_of = |id: &Identity| {
        joined(
            st.grants
                .iter()
                .filter(|(_, g)| &g.identity == id && live(g))
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
            "ID", "IDENTITY", "SECRET", "PROJECT", "STATE", "USES", "MAX", "RATE/MIN", "UID",
            "EXPIRES", "WHY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (id, g) in &st.grants {
        let state = st.grant_state(g, now_ms);
        grants.push(vec![
            id.to_string(),
            g.identity.to_string(),
            g.secret.to_string(),
            g.project.to_string(),
            state.name().to_string(),
            g.uses.to_string(),
            opt(g.max_uses),
            opt(g.rate_per_min),
            opt(g.uid),
            g.expires_at_ms.map_or("never".into(), time_str),
            if state == crate::domain::GrantState::Active {
                String::new()
            } else {
                state.why()
            },
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
                    host: None,
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
        remote: None,
        key,
        decoder: decoder(),
        bundle: None,
        tables: Some(tables),
        actions: Some(actions_expecting(socket.to_path_buf(), daemon_uid)),
        color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    })?;
    Ok(())
}

/// The Secrets, Identities and Grants tables of a bundle, projected from its events: the
/// bundle is read and verified again (what is projected is what verifies), and the
/// secret-bearing bodies it leaves out are stood in for (see `domain::partial`).
pub fn bundle_tables(bundle: std::path::PathBuf, key: scopehold_log::PublicKey) -> TablesFn {
    Arc::new(move || {
        let bytes = std::fs::read(&bundle).map_err(|e| format!("reading the bundle: {e}"))?;
        let contents =
            scopehold_log::read_bundle(&bytes, &key, &scopehold_log::VerifyOptions::default())
                .map_err(|e| format!("the bundle does not verify: {e}"))?;
        let mut undecodable = Vec::new();
        let events = contents.records.iter().map(|r| {
            let ev = r.body.as_ref().and_then(|b| {
                Event::from_body(r.envelope.kind, &b.bytes)
                    .map_err(|e| undecodable.push(format!("event {}: {e}", r.seq())))
                    .ok()
            });
            (r.seq(), ev)
        });
        let p = fold_partial(events.collect::<Vec<_>>());
        if let Some(e) = undecodable.first() {
            return Err(e.clone());
        }
        Ok(tables_of(&p.state))
    })
}

/// The Secrets, Identities and Grants tables of a remote log's pages, projected from their
/// events as a bundle's are (secret-bearing bodies are not in pages either).
fn pages_tables() -> scopehold_tui::PagesTablesFn {
    Arc::new(|pages| {
        let mut undecodable = Vec::new();
        let events: Vec<_> = pages
            .iter()
            .flat_map(|p| p.records.iter())
            .map(|r| {
                let ev = r.body.as_ref().and_then(|b| {
                    Event::from_body(r.envelope.kind, &b.bytes)
                        .map_err(|e| undecodable.push(format!("event {}: {e}", r.seq())))
                        .ok()
                });
                (r.seq(), ev)
            })
            .collect();
        let p = fold_partial(events);
        if let Some(e) = undecodable.first() {
            return Err(e.clone());
        }
        Ok(tables_of(&p.state))
    })
}

/// One page of the daemon's log from `from` on (see `wire::LogPage`), waiting up to `wait`.
fn log_page(
    socket: &std::path::Path,
    expect: Option<u32>,
    from: u64,
    wait: std::time::Duration,
) -> Result<wire::LogPage, String> {
    client::call_expecting::<endpoint::LogPage>(
        socket,
        expect,
        &wire::LogPageRequest {
            from,
            wait_ms: Some(wait.as_millis() as u64),
        },
        None,
    )
    .map_err(|e| e.to_string())
}

/// `console --remote` (and `console` where the state directory holds no log, as on an edge's
/// host): the log read through the socket page by page, each page verified here with the
/// log's key (`--key`, else the one the daemon reports, which the title shows), new events
/// pushed as they are committed, and the actions sent through the same socket.
pub fn run_remote(
    socket: &std::path::Path,
    daemon_uid: Option<u32>,
    key: Option<&str>,
) -> Result<()> {
    scopehold_tui::run(remote_config(socket, daemon_uid, key)?)?;
    Ok(())
}

/// [`run_remote`]'s console, before it is run (tests open it without a terminal).
pub fn remote_config(
    socket: &std::path::Path,
    daemon_uid: Option<u32>,
    key: Option<&str>,
) -> Result<scopehold_tui::Config> {
    let first = log_page(socket, daemon_uid, 0, std::time::Duration::ZERO)
        .map_err(|e| anyhow::anyhow!("reading the log through {}: {e}", socket.display()))?;
    let reported =
        scopehold_log::PublicKey::from_arg(&first.public_key).map_err(anyhow::Error::msg)?;
    let key = match key {
        Some(k) => {
            let k = scopehold_log::PublicKey::from_arg(k).map_err(anyhow::Error::msg)?;
            if k.as_bytes() != reported.as_bytes() {
                anyhow::bail!(
                    "the daemon's log is signed with another key ({}) than --key",
                    first.public_key
                );
            }
            k
        }
        None => reported,
    };
    let sock = socket.to_path_buf();
    let page: scopehold_tui::PageFn = Arc::new(move |from, wait| {
        use base64::Engine as _;
        let p = log_page(&sock, daemon_uid, from, wait)?;
        p.bundle
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| "a page that is not base64".to_string())
            })
            .transpose()
    });
    Ok(scopehold_tui::Config {
        log_dir: std::path::PathBuf::new(),
        remote: Some(scopehold_tui::Remote {
            page,
            tables: pages_tables(),
        }),
        key,
        decoder: decoder(),
        bundle: None,
        tables: None,
        actions: Some(actions_expecting(socket.to_path_buf(), daemon_uid)),
        color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    })
}

/// `console --bundle`, auditor mode: the bundle is verified with `key` before anything is shown.
pub fn run_bundle(bundle: &std::path::Path, key: &str) -> Result<()> {
    let key = scopehold_log::PublicKey::from_arg(key).map_err(anyhow::Error::msg)?;
    scopehold_tui::run(scopehold_tui::Config {
        log_dir: std::path::PathBuf::new(),
        remote: None,
        bundle: Some(bundle.to_path_buf()),
        key,
        decoder: decoder(),
        tables: Some(bundle_tables(bundle.to_path_buf(), key)),
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
            from_host: None,
        };
        let s = summarize(
            EventKind::ProxyCall.number(),
            Some(&serde_json::to_vec(&call).unwrap()),
        );
        assert_eq!(
            (s.identity.as_str(), s.secret.as_str(), s.denied),
            ("agent:bot", "openai/prod", false)
        );
        assert_eq!(
            (s.actor.as_str(), s.subject.as_str(), s.project.as_str()),
            ("agent:bot", "openai/prod in demo", "demo")
        );
        assert_eq!(s.outcome, "proxied v2 POST api.openai.com");
        assert_eq!(s.field("run"), Some("3"));
        assert!(
            s.details.contains("path=/v1/chat/completions"),
            "{}",
            s.details
        );
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
            from_host: None,
        };
        let s = summarize(
            EventKind::ProxyDenied.number(),
            Some(&serde_json::to_vec(&denied).unwrap()),
        );
        assert!(s.denied && s.outcome.contains("evil.test"), "{}", s.outcome);
    }
}
