//! What each event says to a person: who did it (the actor), what it was done to (the
//! subject), a short outcome, and every field by name. One arm per kind, in one function, used
//! by `log show` and the console alike so that the two cannot disagree. The match has no
//! catch-all: a new kind does not compile until it says who, what and which fields.
//!
//! Resolutions and denials: the actor is the caller, the subject the secret in its project.
//! Admin changes: the actor is `by`, the subject the thing changed. Secret material never
//! appears: a sealed value reads `(sealed)` and a credential hash `(hash)`, so a secret-bearing
//! body may be described (an agent's reissued credential names its agent and who issued it).

use std::fmt;

use super::event::{Event, ProxyResult};
use super::names::{Actor, Identity};

/// Who an event is by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// An identity, or `init`.
    Actor(Actor),
    /// A caller known only by the uid the kernel reported (it had no valid credential).
    Uid(u32),
    /// The overflow of many distinct callers refused at once (`denials_counted`).
    ManyCallers,
    /// The daemon itself, recording what it observed (the outcomes of proxied calls).
    Daemon,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Actor(a) => a.fmt(f),
            Who::Uid(u) => write!(f, "uid {u}"),
            Who::ManyCallers => f.write_str("many callers"),
            Who::Daemon => f.write_str("daemon"),
        }
    }
}

impl From<&Identity> for Who {
    fn from(i: &Identity) -> Self {
        Who::Actor(Actor::Identity(i.clone()))
    }
}

/// What is shown where a value is absent: a denial of a revoked agent names no secret and no
/// project, and events recorded by the daemon alone name no actor.
pub const ABSENT: &str = "—";

/// One event, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Who did it; `None` when the event does not record it (a sealed version, a run's end).
    pub actor: Option<Who>,
    /// What it was done to, e.g. `agent:bot, openai/prod in demo`.
    pub subject: String,
    /// A short result, e.g. `granted v2`, `DENIED (grant expired)`; may be empty.
    pub outcome: String,
    /// Every field of the event by name (unique), in the order the event declares them.
    pub fields: Vec<(&'static str, String)>,
    /// The names among `fields` that actor, subject and outcome already say.
    summarised: &'static [&'static str],
}

impl Description {
    /// The fields that actor, subject and outcome do not already say: the rest of a row.
    pub fn details(&self) -> impl Iterator<Item = &(&'static str, String)> {
        self.fields
            .iter()
            .filter(|(k, _)| !self.summarised.contains(k))
    }

    /// [`details`](Self::details) as `name=value` words, a value with spaces quoted: the rest
    /// of a row in `log show` and the console.
    pub fn details_text(&self) -> String {
        self.details()
            .map(|(k, v)| {
                if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                    format!("{k}={v:?}")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The actor as text ([`ABSENT`] when not recorded).
    pub fn actor_text(&self) -> String {
        self.actor
            .as_ref()
            .map_or_else(|| ABSENT.to_string(), Who::to_string)
    }
}

fn opt<T: ToString>(v: &Option<T>, none: &str) -> String {
    v.as_ref().map_or_else(|| none.to_string(), T::to_string)
}

fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn list<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// One proxied call's outcome: `call 17: 200, 12B up, 340B down, 81234us`.
pub fn proxy_result(r: &ProxyResult) -> String {
    format!(
        "call {}: {}, {}B up, {}B down, {}us{}",
        r.call,
        r.status,
        r.bytes_up,
        r.bytes_down,
        r.duration_us,
        r.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

impl Event {
    /// Who did it, what to, the outcome and every field.
    pub fn describe(&self) -> Description {
        let d = |actor: Option<Who>,
                 subject: String,
                 outcome: String,
                 mut fields: Vec<(&'static str, String)>,
                 summarised: &'static [&'static str]| {
            // The host fields are shown only when set: on a single host (no hub) they would
            // be a dash on every event.
            fields.retain(|(k, v)| !(matches!(*k, "host" | "from_host") && v == "-"));
            Description {
                actor,
                subject,
                outcome,
                fields,
                summarised,
            }
        };
        let by_ = |by: &Actor| Some(Who::Actor(by.clone()));
        let pid_ = |p: &Option<i32>| opt(p, "-");
        match self {
            Event::ProjectCreated { project, by } => d(
                by_(by),
                format!("project {project}"),
                "created".into(),
                vec![("project", project.to_string()), ("by", by.to_string())],
                &["project", "by"],
            ),
            Event::MemberAdded {
                member,
                uid,
                admin,
                host,
                by,
            } => d(
                by_(by),
                format!("member:{member}"),
                if *admin { "added, admin" } else { "added" }.into(),
                vec![
                    ("member", member.to_string()),
                    ("uid", uid.to_string()),
                    ("admin", admin.to_string()),
                    ("host", opt(host, "-")),
                    ("by", by.to_string()),
                ],
                &["member", "admin", "by"],
            ),
            Event::AgentCreated {
                agent,
                uid,
                host,
                by,
            } => d(
                by_(by),
                format!("agent:{agent}"),
                "created".into(),
                vec![
                    ("agent", agent.to_string()),
                    ("uid", opt(uid, "any")),
                    ("host", opt(host, "-")),
                    ("by", by.to_string()),
                ],
                &["agent", "by"],
            ),
            Event::AgentCredentialIssued {
                agent,
                credential_hash: _,
                by,
            } => d(
                by_(by),
                format!("agent:{agent}"),
                "credential issued".into(),
                vec![
                    ("agent", agent.to_string()),
                    ("credential_hash", "(hash)".into()),
                    ("by", by.to_string()),
                ],
                &["agent", "credential_hash", "by"],
            ),
            Event::AgentRevoked { agent, by } => d(
                by_(by),
                format!("agent:{agent}"),
                "revoked".into(),
                vec![("agent", agent.to_string()), ("by", by.to_string())],
                &["agent", "by"],
            ),
            Event::SecretStored {
                secret,
                projects,
                by,
            } => d(
                by_(by),
                if projects.is_empty() {
                    secret.to_string()
                } else {
                    format!("{secret} in {}", list(projects))
                },
                "stored".into(),
                vec![
                    ("secret", secret.to_string()),
                    ("projects", list(projects)),
                    ("by", by.to_string()),
                ],
                &["secret", "projects", "by"],
            ),
            Event::SecretVersionSealed {
                secret,
                version,
                sealed: _,
            } => d(
                None,
                format!("{secret} v{version}"),
                "sealed".into(),
                vec![
                    ("secret", secret.to_string()),
                    ("version", version.to_string()),
                    ("sealed", "(sealed)".into()),
                ],
                &["secret", "version", "sealed"],
            ),
            Event::SecretRotated {
                secret,
                version,
                grace_until_ms,
                by,
            } => d(
                by_(by),
                secret.to_string(),
                format!("now v{version}"),
                vec![
                    ("secret", secret.to_string()),
                    ("version", version.to_string()),
                    (
                        "grace_until",
                        grace_until_ms.map_or_else(|| "none".into(), time),
                    ),
                    ("by", by.to_string()),
                ],
                &["secret", "version", "by"],
            ),
            Event::SecretRevoked { secret, by } => d(
                by_(by),
                secret.to_string(),
                "revoked".into(),
                vec![("secret", secret.to_string()), ("by", by.to_string())],
                &["secret", "by"],
            ),
            Event::GrantCreated {
                grant,
                identity,
                secret,
                project,
                expires_at_ms,
                max_uses,
                rate_per_min,
                uid,
                by,
                host,
            } => d(
                by_(by),
                format!("{identity}, {secret} in {project}"),
                format!("grant {grant}"),
                vec![
                    ("grant", grant.to_string()),
                    ("identity", identity.to_string()),
                    ("secret", secret.to_string()),
                    ("project", project.to_string()),
                    (
                        "expires_at",
                        expires_at_ms.map_or_else(|| "never".into(), time),
                    ),
                    ("max_uses", opt(max_uses, "-")),
                    ("rate_per_min", opt(rate_per_min, "-")),
                    ("uid", opt(uid, "any")),
                    ("host", opt(host, "-")),
                    ("by", by.to_string()),
                ],
                &["grant", "identity", "secret", "project", "by"],
            ),
            Event::GrantRevoked { grant, by } => d(
                by_(by),
                format!("grant {grant}"),
                "revoked".into(),
                vec![("grant", grant.to_string()), ("by", by.to_string())],
                &["grant", "by"],
            ),
            Event::SecretResolved {
                identity,
                secret,
                version,
                project,
                grant,
                pid,
                uid,
                from_host,
                at_ms,
            } => d(
                Some(identity.into()),
                format!("{secret} in {project}"),
                format!("granted v{version}"),
                vec![
                    ("identity", identity.to_string()),
                    ("secret", secret.to_string()),
                    ("version", version.to_string()),
                    ("project", project.to_string()),
                    ("grant", grant.to_string()),
                    ("pid", pid_(pid)),
                    ("uid", uid.to_string()),
                    ("from_host", opt(from_host, "-")),
                    ("at", time(*at_ms)),
                ],
                &["identity", "secret", "version", "project"],
            ),
            Event::ResolutionDenied {
                identity,
                secret,
                project,
                reason,
                pid,
                uid,
                from_host,
                at_ms,
            } => d(
                Some(identity.into()),
                match (secret, project) {
                    (Some(s), Some(p)) => format!("{s} in {p}"),
                    (Some(s), None) => s.to_string(),
                    (None, Some(p)) => format!("{ABSENT} in {p}"),
                    (None, None) => ABSENT.into(),
                },
                format!("DENIED ({reason})"),
                vec![
                    ("identity", identity.to_string()),
                    ("secret", opt(secret, ABSENT)),
                    ("project", opt(project, ABSENT)),
                    ("reason", reason.clone()),
                    ("pid", pid_(pid)),
                    ("uid", uid.to_string()),
                    ("from_host", opt(from_host, "-")),
                    ("at", time(*at_ms)),
                ],
                &["identity", "secret", "project", "reason"],
            ),
            Event::UnauthenticatedDenied {
                uid,
                pid,
                from_host,
                count,
                at_ms,
            } => d(
                Some(Who::Uid(*uid)),
                ABSENT.into(),
                format!("DENIED x{count} (no valid credential)"),
                vec![
                    ("uid", uid.to_string()),
                    ("pid", pid_(pid)),
                    ("from_host", opt(from_host, "-")),
                    ("count", count.to_string()),
                    ("at", time(*at_ms)),
                ],
                &["uid", "count"],
            ),
            Event::DenialsCounted {
                identity,
                uid,
                reason,
                from_host,
                count,
                from_ms,
                to_ms,
            } => d(
                Some(match (identity, uid) {
                    (Some(i), _) => i.into(),
                    (None, Some(u)) => Who::Uid(*u),
                    (None, None) => Who::ManyCallers,
                }),
                ABSENT.into(),
                format!("DENIED x{count} more ({reason})"),
                vec![
                    ("identity", opt(identity, "-")),
                    ("uid", opt(uid, "-")),
                    ("from_host", opt(from_host, "-")),
                    ("reason", reason.clone()),
                    ("count", count.to_string()),
                    ("from", time(*from_ms)),
                    ("to", time(*to_ms)),
                ],
                if identity.is_some() {
                    &["identity", "reason", "count"]
                } else {
                    &["identity", "uid", "reason", "count"]
                },
            ),
            Event::ProviderSet {
                provider,
                profile,
                by,
            } => d(
                by_(by),
                format!("provider {provider}"),
                "set".into(),
                vec![
                    ("provider", provider.to_string()),
                    ("hosts", profile.hosts.join(",")),
                    ("header", profile.header.clone()),
                    ("prefix", format!("{:?}", profile.prefix)),
                    ("base_path", profile.base_path.clone()),
                    ("base_url_env", profile.base_url_env.join(",")),
                    ("key_env", profile.key_env.join(",")),
                    ("by", by.to_string()),
                ],
                &["provider", "by"],
            ),
            Event::ProxyCall {
                identity,
                secret,
                version,
                project,
                grant,
                host,
                method,
                path,
                run,
                pid,
                uid,
                from_host,
                at_ms,
            } => d(
                Some(identity.into()),
                format!("{secret} in {project}"),
                format!("proxied v{version} {method} {host}"),
                vec![
                    ("identity", identity.to_string()),
                    ("secret", secret.to_string()),
                    ("version", version.to_string()),
                    ("project", project.to_string()),
                    ("grant", grant.to_string()),
                    ("host", host.clone()),
                    ("method", method.clone()),
                    ("path", path.clone()),
                    ("run", opt(run, "-")),
                    ("pid", pid_(pid)),
                    ("uid", uid.to_string()),
                    ("from_host", opt(from_host, "-")),
                    ("at", time(*at_ms)),
                ],
                &["identity", "secret", "version", "project", "host", "method"],
            ),
            Event::ProxyDenied {
                identity,
                secret,
                project,
                host,
                method,
                path,
                reason,
                run,
                pid,
                uid,
                from_host,
                at_ms,
            } => d(
                Some(identity.into()),
                format!("{secret} in {project}"),
                format!("DENIED ({reason}) {method} {host}"),
                vec![
                    ("identity", identity.to_string()),
                    ("secret", secret.to_string()),
                    ("project", project.to_string()),
                    ("host", host.clone()),
                    ("method", method.clone()),
                    ("path", path.clone()),
                    ("reason", reason.clone()),
                    ("run", opt(run, "-")),
                    ("pid", pid_(pid)),
                    ("uid", uid.to_string()),
                    ("from_host", opt(from_host, "-")),
                    ("at", time(*at_ms)),
                ],
                &["identity", "secret", "project", "host", "method", "reason"],
            ),
            Event::ProxyResults { results, at_ms } => d(
                Some(Who::Daemon),
                format!(
                    "calls {}",
                    results
                        .iter()
                        .map(|r| r.call.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                format!("{} outcomes", results.len()),
                vec![
                    (
                        "results",
                        results
                            .iter()
                            .map(proxy_result)
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                    ("at", time(*at_ms)),
                ],
                &[],
            ),
            Event::RunStarted {
                run,
                identity,
                project,
                secrets,
                pid,
                uid,
                from_host,
                at_ms,
            } => d(
                Some(identity.into()),
                format!("run {run} in {project}"),
                "started".into(),
                vec![
                    ("run", run.to_string()),
                    ("identity", identity.to_string()),
                    ("project", project.to_string()),
                    ("secrets", list(secrets)),
                    ("pid", pid_(pid)),
                    ("uid", uid.to_string()),
                    ("from_host", opt(from_host, "-")),
                    ("at", time(*at_ms)),
                ],
                &["run", "identity", "project"],
            ),
            Event::RunEnded { run, reason, at_ms } => d(
                None,
                format!("run {run}"),
                format!("ended ({reason})"),
                vec![
                    ("run", run.to_string()),
                    ("reason", reason.clone()),
                    ("at", time(*at_ms)),
                ],
                &["run", "reason"],
            ),
            Event::SecretDeleted { secret, erased, by } => d(
                by_(by),
                secret.to_string(),
                "deleted (crypto-shredded)".into(),
                vec![
                    ("secret", secret.to_string()),
                    ("erased", list(erased)),
                    ("by", by.to_string()),
                ],
                &["secret", "by"],
            ),
            Event::MemberRemoved { member, by } => d(
                by_(by),
                format!("member:{member}"),
                "removed".into(),
                vec![("member", member.to_string()), ("by", by.to_string())],
                &["member", "by"],
            ),
            Event::MemberAdminSet { member, admin, by } => d(
                by_(by),
                format!("member:{member}"),
                if *admin {
                    "made admin"
                } else {
                    "admin right taken away"
                }
                .into(),
                vec![
                    ("member", member.to_string()),
                    ("admin", admin.to_string()),
                    ("by", by.to_string()),
                ],
                &["member", "admin", "by"],
            ),
            Event::SecretAssigned {
                secret,
                project,
                by,
            } => d(
                by_(by),
                format!("{secret} in {project}"),
                "added to project".into(),
                vec![
                    ("secret", secret.to_string()),
                    ("project", project.to_string()),
                    ("by", by.to_string()),
                ],
                &["secret", "project", "by"],
            ),
            Event::HostInvited {
                host,
                token_hash: _,
                expires_ms,
                by,
            } => d(
                by_(by),
                format!("host:{host}"),
                "invited to enrol".into(),
                vec![
                    ("host", host.to_string()),
                    ("token_hash", "(hash)".into()),
                    ("expires", time(*expires_ms)),
                    ("by", by.to_string()),
                ],
                &["host", "token_hash", "by"],
            ),
            Event::HostEnrolled {
                host,
                cert_sha256,
                not_after_ms,
                at_ms,
            } => d(
                Some(Who::Actor(Actor::Identity(Identity::Host(host.clone())))),
                format!("host:{host}"),
                "enrolled".into(),
                vec![
                    ("host", host.to_string()),
                    ("cert_sha256", cert_sha256.clone()),
                    ("not_after", time(*not_after_ms)),
                    ("at", time(*at_ms)),
                ],
                &["host"],
            ),
            Event::HostJoinDenied {
                host,
                reason,
                peer,
                at_ms,
            } => d(
                Some(match host {
                    Some(h) => Who::Actor(Actor::Identity(Identity::Host(h.clone()))),
                    None => Who::ManyCallers,
                }),
                format!("enrolment from {peer}"),
                format!("DENIED ({reason})"),
                vec![
                    ("host", opt(host, "-")),
                    ("reason", reason.clone()),
                    ("peer", peer.clone()),
                    ("at", time(*at_ms)),
                ],
                &["host", "reason"],
            ),
            Event::HostRenewed {
                host,
                cert_sha256,
                not_after_ms,
                at_ms,
            } => d(
                Some(Who::Actor(Actor::Identity(Identity::Host(host.clone())))),
                format!("host:{host}"),
                "renewed its certificate".into(),
                vec![
                    ("host", host.to_string()),
                    ("cert_sha256", cert_sha256.clone()),
                    ("not_after", time(*not_after_ms)),
                    ("at", time(*at_ms)),
                ],
                &["host"],
            ),
            Event::HostRevoked { host, by } => d(
                by_(by),
                format!("host:{host}"),
                "revoked".into(),
                vec![("host", host.to_string()), ("by", by.to_string())],
                &["host", "by"],
            ),
            Event::SecretUnassigned {
                secret,
                project,
                by,
            } => d(
                by_(by),
                format!("{secret} in {project}"),
                "taken out of project; its grants there ended".into(),
                vec![
                    ("secret", secret.to_string()),
                    ("project", project.to_string()),
                    ("by", by.to_string()),
                ],
                &["secret", "project", "by"],
            ),
        }
    }

    /// Who did it (see [`Event::describe`]).
    pub fn actor(&self) -> Option<Who> {
        self.describe().actor
    }

    /// What it was done to (see [`Event::describe`]).
    pub fn subject(&self) -> String {
        self.describe().subject
    }

    /// Every field by name, secret material redacted (see [`Event::describe`]).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        self.describe().fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CredentialHash, EventKind, Profile, Sealed};

    fn j(v: serde_json::Value) -> Event {
        serde_json::from_value(v).unwrap()
    }

    /// One event of each kind, every optional field present. The match has no catch-all: a
    /// new kind needs its sample here (and so its fields are checked below).
    fn sample(k: EventKind) -> Event {
        use serde_json::json;
        let by = "member:root";
        match k {
            EventKind::ProjectCreated => j(json!({"type": k.name(), "project": "demo", "by": by})),
            EventKind::MemberAdded => j(
                json!({"type": k.name(), "member": "alice", "uid": 1001, "admin": false, "host": "laptop", "by": by}),
            ),
            EventKind::AgentCreated => {
                j(json!({"type": k.name(), "agent": "bot", "uid": 1002, "host": "ci-1", "by": by}))
            }
            EventKind::AgentCredentialIssued => Event::AgentCredentialIssued {
                agent: "bot".parse().unwrap(),
                credential_hash: CredentialHash([0xab; 32]),
                by: by.parse().unwrap(),
            },
            EventKind::AgentRevoked => j(json!({"type": k.name(), "agent": "bot", "by": by})),
            EventKind::SecretStored => j(
                json!({"type": k.name(), "secret": "openai/prod", "projects": ["demo", "ci"], "by": by}),
            ),
            EventKind::SecretVersionSealed => Event::SecretVersionSealed {
                secret: "openai/prod".parse().unwrap(),
                version: 2,
                sealed: Sealed {
                    wrapped_key: "c0ffee01".into(),
                    key_nonce: "c0ffee02".into(),
                    nonce: "c0ffee03".into(),
                    ciphertext: "c0ffee04".into(),
                },
            },
            EventKind::SecretRotated => j(
                json!({"type": k.name(), "secret": "openai/prod", "version": 2, "grace_until_ms": 5000, "by": by}),
            ),
            EventKind::SecretRevoked => {
                j(json!({"type": k.name(), "secret": "openai/prod", "by": by}))
            }
            EventKind::GrantCreated => j(json!({"type": k.name(), "grant": 3,
                "identity": "agent:bot", "secret": "openai/prod", "project": "demo",
                "expires_at_ms": 9000, "max_uses": 5, "rate_per_min": 2, "uid": 1002, "host": "ci-1",
                "by": by})),
            EventKind::GrantRevoked => j(json!({"type": k.name(), "grant": 3, "by": by})),
            EventKind::SecretResolved => j(json!({"type": k.name(), "identity": "agent:bot",
                "secret": "openai/prod", "version": 2, "project": "demo", "grant": 3, "pid": 42,
                "uid": 1002, "from_host": "ci-1", "at_ms": 1})),
            EventKind::ResolutionDenied => j(json!({"type": k.name(), "identity": "agent:bot",
                "secret": "openai/prod", "project": "demo", "reason": "grant expired", "pid": 42,
                "uid": 1002, "from_host": "ci-1", "at_ms": 1})),
            EventKind::UnauthenticatedDenied => j(
                json!({"type": k.name(), "uid": 1003, "pid": 43, "from_host": "ci-1", "count": 4, "at_ms": 1}),
            ),
            EventKind::DenialsCounted => j(json!({"type": k.name(), "identity": "agent:bot",
                "uid": 1002, "reason": "not granted", "from_host": "ci-1", "count": 9, "from_ms": 1,
                "to_ms": 2})),
            EventKind::ProviderSet => Event::ProviderSet {
                provider: "acme".parse().unwrap(),
                profile: serde_json::from_value::<Profile>(json!({"hosts": ["api.acme.test"],
                    "header": "authorization", "prefix": "Bearer ", "base_path": "/v1",
                    "base_url_env": ["ACME_BASE_URL"], "key_env": ["ACME_API_KEY"]}))
                .unwrap(),
                by: by.parse().unwrap(),
            },
            EventKind::ProxyCall => j(json!({"type": k.name(), "identity": "agent:bot",
                "secret": "openai/prod", "version": 2, "project": "demo", "grant": 3,
                "host": "api.openai.com", "method": "POST", "path": "/v1/chat", "run": 4,
                "pid": 42, "uid": 1002, "from_host": "ci-1", "at_ms": 1})),
            EventKind::ProxyDenied => j(json!({"type": k.name(), "identity": "agent:bot",
                "secret": "openai/prod", "project": "demo", "host": "evil.test",
                "method": "GET", "path": "/", "reason": "host not in provider profile",
                "run": 4, "pid": 42, "uid": 1002, "from_host": "ci-1", "at_ms": 1})),
            EventKind::ProxyResults => j(json!({"type": k.name(), "results": [
                {"call": 17, "status": 200, "bytes_up": 10, "bytes_down": 20, "duration_us": 30},
                {"call": 18, "status": 502, "bytes_up": 0, "bytes_down": 0, "duration_us": 5,
                 "error": "upstream unreachable"}], "at_ms": 1})),
            EventKind::RunStarted => j(json!({"type": k.name(), "run": 4, "identity": "agent:bot",
                "project": "demo", "secrets": ["openai/prod", "github/ci"], "pid": 42,
                "uid": 1002, "from_host": "ci-1", "at_ms": 1})),
            EventKind::RunEnded => {
                j(json!({"type": k.name(), "run": 4, "reason": "child exited", "at_ms": 1}))
            }
            EventKind::SecretDeleted => {
                j(json!({"type": k.name(), "secret": "openai/prod", "erased": [6, 9], "by": by}))
            }
            EventKind::MemberRemoved => j(json!({"type": k.name(), "member": "alice", "by": by})),
            EventKind::MemberAdminSet => {
                j(json!({"type": k.name(), "member": "alice", "admin": true, "by": by}))
            }
            EventKind::HostInvited => Event::HostInvited {
                host: "ci-1".parse().unwrap(),
                token_hash: CredentialHash([0xcd; 32]),
                expires_ms: 3_600_000,
                by: by.parse().unwrap(),
            },
            EventKind::HostEnrolled => j(json!({"type": k.name(), "host": "ci-1",
                "cert_sha256": "ab".repeat(32), "not_after_ms": 9000, "at_ms": 1})),
            EventKind::HostRevoked => j(json!({"type": k.name(), "host": "ci-1", "by": by})),
            EventKind::HostRenewed => j(json!({"type": k.name(), "host": "ci-1",
                "cert_sha256": "cd".repeat(32), "not_after_ms": 9000, "at_ms": 2})),
            EventKind::HostJoinDenied => j(json!({"type": k.name(), "host": "ci-1",
                "reason": "join token expired", "peer": "10.0.0.2:40000", "at_ms": 1})),
            EventKind::SecretAssigned | EventKind::SecretUnassigned => {
                j(json!({"type": k.name(), "secret": "openai/prod", "project": "ci", "by": by}))
            }
        }
    }

    /// The name a body's field is shown under (times lose their unit; a profile is shown
    /// field by field).
    fn shown_as(key: &str) -> Vec<&str> {
        match key {
            "profile" => vec![
                "hosts",
                "header",
                "prefix",
                "base_path",
                "base_url_env",
                "key_env",
            ],
            k => vec![k.strip_suffix("_ms").unwrap_or(k)],
        }
    }

    #[test]
    fn every_kind_names_its_actor_and_subject_and_shows_every_field() {
        for k in EventKind::ALL {
            let ev = sample(*k);
            assert_eq!(ev.kind(), *k);
            let d = ev.describe();
            let names: Vec<&str> = d.fields.iter().map(|(n, _)| *n).collect();
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(
                unique.len(),
                names.len(),
                "{k}: field names repeat: {names:?}"
            );
            let body = serde_json::to_value(&ev).unwrap();
            let keys: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "type")
                .flat_map(|k| shown_as(k))
                .collect();
            let mut want = keys.clone();
            want.sort_unstable();
            assert_eq!(
                want, unique,
                "{k}: the fields shown are not the body's fields"
            );
            assert!(!d.subject.is_empty(), "{k}: no subject");
            assert!(d.summarised.iter().all(|s| names.contains(s)), "{k}");
            // Only events the daemon records on its own, with no caller, lack an actor.
            let unrecorded = matches!(k, EventKind::SecretVersionSealed | EventKind::RunEnded);
            assert_eq!(d.actor.is_none(), unrecorded, "{k}: actor {:?}", d.actor);
        }
    }

    #[test]
    fn admin_changes_are_by_their_maker_and_about_what_they_changed() {
        let d = sample(EventKind::GrantCreated).describe();
        assert_eq!(d.actor_text(), "member:root");
        assert_eq!(d.subject, "agent:bot, openai/prod in demo");
        assert_eq!(d.outcome, "grant 3");
        let rest: Vec<String> = d.details().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            rest,
            [
                "expires_at=1970-01-01T00:00:09.000Z",
                "max_uses=5",
                "rate_per_min=2",
                "uid=1002",
                "host=ci-1"
            ]
        );
        // A reissued credential names its agent and who issued it.
        let d = sample(EventKind::AgentCredentialIssued).describe();
        assert_eq!(
            (d.actor_text(), d.subject.as_str()),
            ("member:root".into(), "agent:bot")
        );
        // A resolution is by its caller, about the secret in its project.
        let d = sample(EventKind::SecretResolved).describe();
        assert_eq!(
            (d.actor_text(), d.subject.as_str(), d.outcome.as_str()),
            ("agent:bot".into(), "openai/prod in demo", "granted v2")
        );
    }

    #[test]
    fn a_revoked_agents_denial_shows_a_dash_and_the_reason() {
        let ev = Event::ResolutionDenied {
            identity: "agent:bot".parse().unwrap(),
            secret: None,
            project: None,
            reason: "agent revoked".into(),
            pid: None,
            uid: 1002,
            at_ms: 1,
            from_host: None,
        };
        let d = ev.describe();
        assert_eq!(d.subject, ABSENT);
        assert_eq!(d.outcome, "DENIED (agent revoked)");
        assert!(d.fields.contains(&("secret", ABSENT.into())));
        assert!(d.fields.contains(&("project", ABSENT.into())));
    }

    #[test]
    fn secret_material_is_never_described() {
        for k in [
            EventKind::AgentCredentialIssued,
            EventKind::SecretVersionSealed,
        ] {
            let d = sample(k).describe();
            let all = format!("{d:?}");
            assert!(
                !all.contains("abab") && !all.contains("c0ffee"),
                "{k}: {all}"
            );
        }
        let d = sample(EventKind::SecretVersionSealed).describe();
        assert!(d.fields.contains(&("sealed", "(sealed)".into())));
        let d = sample(EventKind::AgentCredentialIssued).describe();
        assert!(d.fields.contains(&("credential_hash", "(hash)".into())));
    }
}
