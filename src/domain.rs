//! The domain: events (what happened, in the past tense), the state they fold into, and the
//! decisions that turn a request into events.
//!
//! `State::apply` holds no decisions: it folds one event into the state and refuses an
//! impossible history (a grant for a secret that does not exist, a version out of order), so
//! a log that does not make sense stops the daemon instead of being silently accepted.
//! Decisions (`decide_*`) read the state and return the events to append, or a refusal; they
//! are pure functions of the state, the request and the clock, tested given/when/then.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::seal::Sealed;

/// Kind tags in the log envelope, one per event type. Stable: they are in every log.
pub mod kind {
    pub const PROJECT_CREATED: u16 = 1;
    pub const MEMBER_ADDED: u16 = 2;
    pub const AGENT_CREATED: u16 = 3;
    pub const AGENT_CREDENTIAL_ISSUED: u16 = 4;
    pub const AGENT_REVOKED: u16 = 5;
    pub const SECRET_STORED: u16 = 6;
    pub const SECRET_VERSION_SEALED: u16 = 7;
    pub const SECRET_ROTATED: u16 = 8;
    pub const SECRET_REVOKED: u16 = 9;
    pub const GRANT_CREATED: u16 = 10;
    pub const GRANT_REVOKED: u16 = 11;
    pub const SECRET_RESOLVED: u16 = 12;
    pub const RESOLUTION_DENIED: u16 = 13;
    pub const UNAUTHENTICATED_DENIED: u16 = 14;
}

/// Everything that can happen. Identities are written `agent:NAME` or `member:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    ProjectCreated {
        project: String,
        by: String,
    },
    MemberAdded {
        member: String,
        uid: u32,
        admin: bool,
        by: String,
    },
    AgentCreated {
        agent: String,
        uid: Option<u32>,
        by: String,
    },
    /// Secret-bearing class: the keyed hash of the agent's credential.
    AgentCredentialIssued {
        agent: String,
        credential_hash: String,
        by: String,
    },
    AgentRevoked {
        agent: String,
        by: String,
    },
    SecretStored {
        secret: String,
        projects: Vec<String>,
        by: String,
    },
    /// Secret-bearing class: the sealed value of one version.
    SecretVersionSealed {
        secret: String,
        version: u32,
        sealed: Sealed,
    },
    SecretRotated {
        secret: String,
        version: u32,
        /// Until when the previous version stays resolvable (ms since the epoch).
        grace_until_ms: Option<u64>,
        by: String,
    },
    SecretRevoked {
        secret: String,
        by: String,
    },
    GrantCreated {
        grant: u64,
        identity: String,
        secret: String,
        project: String,
        expires_at_ms: Option<u64>,
        max_uses: Option<u64>,
        rate_per_min: Option<u32>,
        uid: Option<u32>,
        by: String,
    },
    GrantRevoked {
        grant: u64,
        by: String,
    },
    SecretResolved {
        identity: String,
        secret: String,
        version: u32,
        project: String,
        grant: u64,
        pid: Option<i32>,
        uid: u32,
        at_ms: u64,
    },
    ResolutionDenied {
        identity: String,
        secret: String,
        project: String,
        reason: String,
        pid: Option<i32>,
        uid: u32,
        at_ms: u64,
    },
    /// Requests with no valid credential from one peer uid, counted: one event stands for
    /// `count` denials, so a flood cannot fill the disk.
    UnauthenticatedDenied {
        uid: u32,
        pid: Option<i32>,
        count: u64,
        at_ms: u64,
    },
}

impl Event {
    pub fn kind(&self) -> u16 {
        use kind::*;
        match self {
            Event::ProjectCreated { .. } => PROJECT_CREATED,
            Event::MemberAdded { .. } => MEMBER_ADDED,
            Event::AgentCreated { .. } => AGENT_CREATED,
            Event::AgentCredentialIssued { .. } => AGENT_CREDENTIAL_ISSUED,
            Event::AgentRevoked { .. } => AGENT_REVOKED,
            Event::SecretStored { .. } => SECRET_STORED,
            Event::SecretVersionSealed { .. } => SECRET_VERSION_SEALED,
            Event::SecretRotated { .. } => SECRET_ROTATED,
            Event::SecretRevoked { .. } => SECRET_REVOKED,
            Event::GrantCreated { .. } => GRANT_CREATED,
            Event::GrantRevoked { .. } => GRANT_REVOKED,
            Event::SecretResolved { .. } => SECRET_RESOLVED,
            Event::ResolutionDenied { .. } => RESOLUTION_DENIED,
            Event::UnauthenticatedDenied { .. } => UNAUTHENTICATED_DENIED,
        }
    }

    pub fn kind_name(kind: u16) -> &'static str {
        use kind::*;
        match kind {
            PROJECT_CREATED => "project_created",
            MEMBER_ADDED => "member_added",
            AGENT_CREATED => "agent_created",
            AGENT_CREDENTIAL_ISSUED => "agent_credential_issued",
            AGENT_REVOKED => "agent_revoked",
            SECRET_STORED => "secret_stored",
            SECRET_VERSION_SEALED => "secret_version_sealed",
            SECRET_ROTATED => "secret_rotated",
            SECRET_REVOKED => "secret_revoked",
            GRANT_CREATED => "grant_created",
            GRANT_REVOKED => "grant_revoked",
            SECRET_RESOLVED => "secret_resolved",
            RESOLUTION_DENIED => "resolution_denied",
            UNAUTHENTICATED_DENIED => "unauthenticated_denied",
            _ => "unknown",
        }
    }

    /// Whether the body may carry secret material (committed with a salt, left out of exports).
    pub fn is_secret_bearing(&self) -> bool {
        matches!(
            self,
            Event::AgentCredentialIssued { .. } | Event::SecretVersionSealed { .. }
        )
    }

    pub fn to_entry(&self) -> Result<scopehold_log::Entry, scopehold_log::AppendError> {
        let body = serde_json::to_vec(self).expect("events always serialise");
        if self.is_secret_bearing() {
            scopehold_log::Entry::secret(self.kind(), body)
        } else {
            Ok(scopehold_log::Entry::public(self.kind(), body))
        }
    }

    pub fn from_body(kind: u16, body: &[u8]) -> Result<Self, String> {
        let ev: Event =
            serde_json::from_slice(body).map_err(|e| format!("undecodable event body: {e}"))?;
        if ev.kind() != kind {
            return Err(format!(
                "event kind {} does not match its body ({})",
                kind,
                Event::kind_name(ev.kind())
            ));
        }
        Ok(ev)
    }

    /// The identity an event is about or by, for filtering (`log show --identity`).
    pub fn identity(&self) -> Option<&str> {
        match self {
            Event::SecretResolved { identity, .. } | Event::ResolutionDenied { identity, .. } => {
                Some(identity)
            }
            Event::GrantCreated { identity, .. } => Some(identity),
            Event::ProjectCreated { by, .. }
            | Event::MemberAdded { by, .. }
            | Event::AgentCreated { by, .. }
            | Event::AgentCredentialIssued { by, .. }
            | Event::AgentRevoked { by, .. }
            | Event::SecretStored { by, .. }
            | Event::SecretRotated { by, .. }
            | Event::SecretRevoked { by, .. }
            | Event::GrantRevoked { by, .. } => Some(by),
            _ => None,
        }
    }

    pub fn secret(&self) -> Option<&str> {
        match self {
            Event::SecretStored { secret, .. }
            | Event::SecretVersionSealed { secret, .. }
            | Event::SecretRotated { secret, .. }
            | Event::SecretRevoked { secret, .. }
            | Event::GrantCreated { secret, .. }
            | Event::SecretResolved { secret, .. }
            | Event::ResolutionDenied { secret, .. } => Some(secret),
            _ => None,
        }
    }

    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            Event::ResolutionDenied { .. } | Event::UnauthenticatedDenied { .. }
        )
    }
}

// ---------------------------------------------------------------------------------------
// Names

/// Names of projects, agents, members and the two halves of a secret name: 1 to 63
/// characters from `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// `provider/name`, each half a [`valid_name`].
pub fn valid_secret_name(s: &str) -> bool {
    matches!(s.split_once('/'), Some((p, n)) if valid_name(p) && valid_name(n))
}

pub fn check_name(what: &str, s: &str) -> Result<(), Refusal> {
    if valid_name(s) {
        Ok(())
    } else {
        Err(Refusal::invalid(format!(
            "invalid {what} name: use 1 to 63 characters from a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )))
    }
}

pub fn check_secret_name(s: &str) -> Result<(), Refusal> {
    if valid_secret_name(s) {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "invalid secret name: use provider/name, each part 1 to 63 characters from a-z, 0-9, '.', '_', '-'",
        ))
    }
}

// ---------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub uid: u32,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub uid: Option<u32>,
    pub credential_hash: Option<[u8; 32]>,
    pub revoked: bool,
    pub last_used_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEntry {
    pub projects: BTreeSet<String>,
    pub current: u32,
    pub versions: BTreeMap<u32, Sealed>,
    /// The previous version and until when it stays resolvable.
    pub grace: Option<(u32, u64)>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub identity: String,
    pub secret: String,
    pub project: String,
    pub expires_at_ms: Option<u64>,
    pub max_uses: Option<u64>,
    pub rate_per_min: Option<u32>,
    pub uid: Option<u32>,
    pub uses: u64,
    /// Times of resolutions in the last minute (for the rate limit).
    pub recent: VecDeque<u64>,
    pub revoked: bool,
    pub last_used_ms: Option<u64>,
}

/// The projection: a pure fold over the log's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub projects: BTreeSet<String>,
    pub members: BTreeMap<String, Member>,
    pub agents: BTreeMap<String, Agent>,
    pub secrets: BTreeMap<String, SecretEntry>,
    pub grants: BTreeMap<u64, Grant>,
    pub next_grant: u64,
}

/// Why the log's history cannot be folded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("impossible history: {0}")]
pub struct ApplyError(pub String);

const MINUTE_MS: u64 = 60_000;

impl State {
    pub fn identity_exists(&self, identity: &str) -> bool {
        match identity.split_once(':') {
            Some(("agent", n)) => self.agents.contains_key(n),
            Some(("member", n)) => self.members.contains_key(n),
            _ => false,
        }
    }

    pub fn member_by_uid(&self, uid: u32) -> Option<(&String, &Member)> {
        self.members.iter().find(|(_, m)| m.uid == uid)
    }

    /// Folds one event. Holds no decisions; refuses what cannot have happened.
    pub fn apply(&mut self, ev: &Event) -> Result<(), ApplyError> {
        let bad = |s: String| Err(ApplyError(s));
        match ev {
            Event::ProjectCreated { project, .. } => {
                if !self.projects.insert(project.clone()) {
                    return bad(format!("project {project} created twice"));
                }
            }
            Event::MemberAdded {
                member, uid, admin, ..
            } => {
                self.members.insert(
                    member.clone(),
                    Member {
                        uid: *uid,
                        admin: *admin,
                    },
                );
            }
            Event::AgentCreated { agent, uid, .. } => {
                if self.agents.contains_key(agent) {
                    return bad(format!("agent {agent} created twice"));
                }
                self.agents.insert(
                    agent.clone(),
                    Agent {
                        uid: *uid,
                        credential_hash: None,
                        revoked: false,
                        last_used_ms: None,
                    },
                );
            }
            Event::AgentCredentialIssued {
                agent,
                credential_hash,
                ..
            } => {
                let Some(a) = self.agents.get_mut(agent) else {
                    return bad(format!("credential for unknown agent {agent}"));
                };
                let mut h = [0u8; 32];
                if hex::decode_to_slice(credential_hash, &mut h).is_err() {
                    return bad(format!("malformed credential hash for agent {agent}"));
                }
                a.credential_hash = Some(h);
            }
            Event::AgentRevoked { agent, .. } => {
                let Some(a) = self.agents.get_mut(agent) else {
                    return bad(format!("revocation of unknown agent {agent}"));
                };
                // The hash is kept so that a revoked agent is still recognised, and its
                // attempts are denied and recorded by name.
                a.revoked = true;
            }
            Event::SecretStored {
                secret, projects, ..
            } => {
                if let Some(p) = projects.iter().find(|p| !self.projects.contains(*p)) {
                    return bad(format!("secret {secret} assigned to unknown project {p}"));
                }
                let e = self
                    .secrets
                    .entry(secret.clone())
                    .or_insert_with(|| SecretEntry {
                        projects: BTreeSet::new(),
                        current: 0,
                        versions: BTreeMap::new(),
                        grace: None,
                        revoked: false,
                    });
                e.projects.extend(projects.iter().cloned());
            }
            Event::SecretVersionSealed {
                secret,
                version,
                sealed,
            } => {
                let Some(s) = self.secrets.get_mut(secret) else {
                    return bad(format!("sealed value for unknown secret {secret}"));
                };
                let expected = s.versions.keys().next_back().map_or(1, |v| v + 1);
                if *version != expected {
                    return bad(format!(
                        "secret {secret}: version {version} sealed where {expected} was next"
                    ));
                }
                s.versions.insert(*version, sealed.clone());
                if s.current == 0 {
                    s.current = *version;
                }
            }
            Event::SecretRotated {
                secret,
                version,
                grace_until_ms,
                ..
            } => {
                let Some(s) = self.secrets.get_mut(secret) else {
                    return bad(format!("rotation of unknown secret {secret}"));
                };
                if !s.versions.contains_key(version) || *version <= s.current {
                    return bad(format!(
                        "secret {secret}: rotation to version {version} without its sealed value"
                    ));
                }
                s.grace = grace_until_ms.map(|g| (s.current, g));
                s.current = *version;
            }
            Event::SecretRevoked { secret, .. } => {
                let Some(s) = self.secrets.get_mut(secret) else {
                    return bad(format!("revocation of unknown secret {secret}"));
                };
                s.revoked = true;
            }
            Event::GrantCreated {
                grant,
                identity,
                secret,
                project,
                expires_at_ms,
                max_uses,
                rate_per_min,
                uid,
                ..
            } => {
                if !self.secrets.contains_key(secret)
                    || !self.projects.contains(project)
                    || !self.identity_exists(identity)
                {
                    return bad(format!(
                        "grant {grant} names an unknown identity, secret or project"
                    ));
                }
                if self.grants.contains_key(grant) {
                    return bad(format!("grant {grant} created twice"));
                }
                self.grants.insert(
                    *grant,
                    Grant {
                        identity: identity.clone(),
                        secret: secret.clone(),
                        project: project.clone(),
                        expires_at_ms: *expires_at_ms,
                        max_uses: *max_uses,
                        rate_per_min: *rate_per_min,
                        uid: *uid,
                        uses: 0,
                        recent: VecDeque::new(),
                        revoked: false,
                        last_used_ms: None,
                    },
                );
                self.next_grant = self.next_grant.max(grant + 1);
            }
            Event::GrantRevoked { grant, .. } => {
                let Some(g) = self.grants.get_mut(grant) else {
                    return bad(format!("revocation of unknown grant {grant}"));
                };
                g.revoked = true;
            }
            Event::SecretResolved {
                identity,
                grant,
                at_ms,
                ..
            } => {
                let Some(g) = self.grants.get_mut(grant) else {
                    return bad(format!("resolution under unknown grant {grant}"));
                };
                g.uses += 1;
                while g.recent.front().is_some_and(|t| *t + MINUTE_MS <= *at_ms) {
                    g.recent.pop_front();
                }
                g.recent.push_back(*at_ms);
                g.last_used_ms = Some(*at_ms);
                if let Some(("agent", n)) = identity.split_once(':')
                    && let Some(a) = self.agents.get_mut(n)
                {
                    a.last_used_ms = Some(*at_ms);
                }
            }
            Event::ResolutionDenied { .. } | Event::UnauthenticatedDenied { .. } => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Decisions

/// A request refused before anything is appended: the HTTP status and a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn invalid(m: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "invalid_request",
            message: m.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self {
            status: 404,
            code: "not_found",
            message: m.into(),
        }
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self {
            status: 409,
            code: "conflict",
            message: m.into(),
        }
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self {
            status: 403,
            code: "forbidden",
            message: m.into(),
        }
    }
}

/// Who is asking, as established by the credential and the kernel, never by request fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `agent:NAME` or `member:NAME`.
    pub identity: String,
    pub uid: u32,
    pub pid: Option<i32>,
}

/// The outcome of a resolution decision. Either way an event records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Granted {
        grant: u64,
        version: u32,
        event: Event,
    },
    /// 403: not granted, unknown, expired, exhausted or revoked: one answer to the caller.
    Denied { event: Event },
    /// 429: granted, but over the grant's rate.
    RateLimited { event: Event },
}

/// Decides a resolution. Decisions are taken in log order under the daemon's state lock, and
/// the event is applied before the next decision, so concurrent requests never exceed a
/// grant's maximum uses or rate.
pub fn decide_resolve(
    state: &State,
    caller: &Caller,
    secret: &str,
    project: &str,
    version: Option<u32>,
    now_ms: u64,
) -> Resolution {
    let deny = |reason: &str| Resolution::Denied {
        event: Event::ResolutionDenied {
            identity: caller.identity.clone(),
            secret: secret.to_string(),
            project: project.to_string(),
            reason: reason.to_string(),
            pid: caller.pid,
            uid: caller.uid,
            at_ms: now_ms,
        },
    };
    let Some(s) = state.secrets.get(secret) else {
        return deny("no such secret");
    };
    if s.revoked {
        return deny("secret revoked");
    }
    if !s.projects.contains(project) {
        return deny("secret not assigned to project");
    }
    let want = match version {
        None => s.current,
        Some(v) if v == s.current => v,
        Some(v) => match s.grace {
            Some((prev, until)) if prev == v && now_ms < until => v,
            _ => return deny("version not current and not in a grace period"),
        },
    };
    let mut reason = "not granted";
    let mut rate_limited = false;
    for (id, g) in &state.grants {
        if g.identity != caller.identity || g.secret != secret || g.project != project {
            continue;
        }
        if g.revoked {
            reason = "grant revoked";
            continue;
        }
        if g.expires_at_ms.is_some_and(|e| now_ms >= e) {
            reason = "grant expired";
            continue;
        }
        if g.max_uses.is_some_and(|m| g.uses >= m) {
            reason = "grant exhausted";
            continue;
        }
        if g.uid.is_some_and(|u| u != caller.uid) {
            reason = "caller uid not bound to grant";
            continue;
        }
        if let Some(r) = g.rate_per_min {
            let in_window = g.recent.iter().filter(|t| **t + MINUTE_MS > now_ms).count();
            if in_window >= r as usize {
                rate_limited = true;
                reason = "rate limit";
                continue;
            }
        }
        return Resolution::Granted {
            grant: *id,
            version: want,
            event: Event::SecretResolved {
                identity: caller.identity.clone(),
                secret: secret.to_string(),
                version: want,
                project: project.to_string(),
                grant: *id,
                pid: caller.pid,
                uid: caller.uid,
                at_ms: now_ms,
            },
        };
    }
    match deny(reason) {
        Resolution::Denied { event } if rate_limited => Resolution::RateLimited { event },
        d => d,
    }
}

pub fn decide_project_create(state: &State, name: &str, by: &str) -> Result<Vec<Event>, Refusal> {
    check_name("project", name)?;
    if state.projects.contains(name) {
        return Err(Refusal::conflict(format!("project {name} already exists")));
    }
    Ok(vec![Event::ProjectCreated {
        project: name.into(),
        by: by.into(),
    }])
}

pub fn decide_member_add(
    state: &State,
    name: &str,
    uid: u32,
    admin: bool,
    by: &str,
) -> Result<Vec<Event>, Refusal> {
    check_name("member", name)?;
    if state.members.contains_key(name) {
        return Err(Refusal::conflict(format!("member {name} already exists")));
    }
    if let Some((other, _)) = state.member_by_uid(uid) {
        return Err(Refusal::conflict(format!(
            "uid {uid} is already member {other}"
        )));
    }
    Ok(vec![Event::MemberAdded {
        member: name.into(),
        uid,
        admin,
        by: by.into(),
    }])
}

/// `credential_hash` is the keyed hash of the fresh credential, computed by the caller (the
/// daemon), which alone sees the credential.
pub fn decide_agent_create(
    state: &State,
    name: &str,
    uid: Option<u32>,
    credential_hash: [u8; 32],
    by: &str,
) -> Result<Vec<Event>, Refusal> {
    check_name("agent", name)?;
    if state.agents.contains_key(name) {
        return Err(Refusal::conflict(format!("agent {name} already exists")));
    }
    Ok(vec![
        Event::AgentCreated {
            agent: name.into(),
            uid,
            by: by.into(),
        },
        Event::AgentCredentialIssued {
            agent: name.into(),
            credential_hash: hex::encode(credential_hash),
            by: by.into(),
        },
    ])
}

pub fn decide_agent_reissue(
    state: &State,
    name: &str,
    credential_hash: [u8; 32],
    by: &str,
) -> Result<Vec<Event>, Refusal> {
    match state.agents.get(name) {
        None => return Err(Refusal::not_found(format!("no agent {name}"))),
        Some(a) if a.revoked => {
            return Err(Refusal::conflict(format!(
                "agent {name} is revoked; create a new agent"
            )));
        }
        Some(_) => {}
    }
    Ok(vec![Event::AgentCredentialIssued {
        agent: name.into(),
        credential_hash: hex::encode(credential_hash),
        by: by.into(),
    }])
}

pub fn decide_agent_revoke(state: &State, name: &str, by: &str) -> Result<Vec<Event>, Refusal> {
    match state.agents.get(name) {
        None => Err(Refusal::not_found(format!("no agent {name}"))),
        Some(a) if a.revoked => Err(Refusal::conflict(format!(
            "agent {name} is already revoked"
        ))),
        Some(_) => Ok(vec![Event::AgentRevoked {
            agent: name.into(),
            by: by.into(),
        }]),
    }
}

/// Storing a new secret: its assignment and its first sealed version, appended together.
pub fn decide_secret_put(
    state: &State,
    name: &str,
    projects: &[String],
    sealed: Sealed,
    by: &str,
) -> Result<Vec<Event>, Refusal> {
    check_secret_name(name)?;
    if projects.is_empty() {
        return Err(Refusal::invalid(
            "a secret is assigned to at least one project (--project P)",
        ));
    }
    if let Some(p) = projects.iter().find(|p| !state.projects.contains(*p)) {
        return Err(Refusal::not_found(format!("no project {p}")));
    }
    if state.secrets.contains_key(name) {
        return Err(Refusal::conflict(format!(
            "secret {name} already exists: rotate it instead"
        )));
    }
    Ok(vec![
        Event::SecretStored {
            secret: name.into(),
            projects: projects.to_vec(),
            by: by.into(),
        },
        Event::SecretVersionSealed {
            secret: name.into(),
            version: 1,
            sealed,
        },
    ])
}

/// The version a rotation would create (the caller seals the value for it).
pub fn next_version(state: &State, name: &str) -> Result<u32, Refusal> {
    match state.secrets.get(name) {
        None => Err(Refusal::not_found(format!("no secret {name}"))),
        Some(s) if s.revoked => Err(Refusal::conflict(format!("secret {name} is revoked"))),
        Some(s) => Ok(s.versions.keys().next_back().map_or(1, |v| v + 1)),
    }
}

pub fn decide_secret_rotate(
    state: &State,
    name: &str,
    version: u32,
    sealed: Sealed,
    grace_ms: Option<u64>,
    now_ms: u64,
    by: &str,
) -> Result<Vec<Event>, Refusal> {
    let next = next_version(state, name)?;
    if version != next {
        return Err(Refusal::conflict(format!(
            "secret {name} was rotated concurrently"
        )));
    }
    Ok(vec![
        Event::SecretVersionSealed {
            secret: name.into(),
            version,
            sealed,
        },
        Event::SecretRotated {
            secret: name.into(),
            version,
            grace_until_ms: grace_ms.map(|g| now_ms.saturating_add(g)),
            by: by.into(),
        },
    ])
}

pub fn decide_secret_revoke(state: &State, name: &str, by: &str) -> Result<Vec<Event>, Refusal> {
    match state.secrets.get(name) {
        None => Err(Refusal::not_found(format!("no secret {name}"))),
        Some(s) if s.revoked => Err(Refusal::conflict(format!(
            "secret {name} is already revoked"
        ))),
        Some(_) => Ok(vec![Event::SecretRevoked {
            secret: name.into(),
            by: by.into(),
        }]),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    pub identity: String,
    pub secret: String,
    pub project: String,
    pub ttl_ms: Option<u64>,
    pub max_uses: Option<u64>,
    pub rate_per_min: Option<u32>,
    pub uid: Option<u32>,
}

pub fn decide_grant_create(
    state: &State,
    spec: &GrantSpec,
    now_ms: u64,
    by: &str,
) -> Result<(u64, Vec<Event>), Refusal> {
    let identity = if spec.identity.contains(':') {
        spec.identity.clone()
    } else if state.agents.contains_key(&spec.identity) {
        format!("agent:{}", spec.identity)
    } else {
        format!("member:{}", spec.identity)
    };
    if !state.identity_exists(&identity) {
        return Err(Refusal::not_found(format!("no identity {}", spec.identity)));
    }
    if let Some(("agent", n)) = identity.split_once(':')
        && state.agents.get(n).is_some_and(|a| a.revoked)
    {
        return Err(Refusal::conflict(format!("agent {n} is revoked")));
    }
    let Some(s) = state.secrets.get(&spec.secret) else {
        return Err(Refusal::not_found(format!("no secret {}", spec.secret)));
    };
    if s.revoked {
        return Err(Refusal::conflict(format!(
            "secret {} is revoked",
            spec.secret
        )));
    }
    if !s.projects.contains(&spec.project) {
        return Err(Refusal::invalid(format!(
            "secret {} is not assigned to project {}",
            spec.secret, spec.project
        )));
    }
    if spec.max_uses == Some(0) || spec.rate_per_min == Some(0) {
        return Err(Refusal::invalid("--max-uses and --rate must be at least 1"));
    }
    let id = state.next_grant.max(1);
    Ok((
        id,
        vec![Event::GrantCreated {
            grant: id,
            identity,
            secret: spec.secret.clone(),
            project: spec.project.clone(),
            expires_at_ms: spec.ttl_ms.map(|t| now_ms.saturating_add(t)),
            max_uses: spec.max_uses,
            rate_per_min: spec.rate_per_min,
            uid: spec.uid,
            by: by.into(),
        }],
    ))
}

pub fn decide_grant_revoke(state: &State, id: u64, by: &str) -> Result<Vec<Event>, Refusal> {
    match state.grants.get(&id) {
        None => Err(Refusal::not_found(format!("no grant {id}"))),
        Some(g) if g.revoked => Err(Refusal::conflict(format!("grant {id} is already revoked"))),
        Some(_) => Ok(vec![Event::GrantRevoked {
            grant: id,
            by: by.into(),
        }]),
    }
}

#[cfg(test)]
mod tests {
    //! Given (events), when (a decision), then (events or a refusal).
    use super::*;

    fn sealed() -> Sealed {
        Sealed {
            wrapped_key: "00".into(),
            key_nonce: "00".into(),
            nonce: "00".into(),
            ciphertext: "00".into(),
        }
    }

    fn given(events: &[Event]) -> State {
        let mut s = State::default();
        for e in events {
            s.apply(e).unwrap();
        }
        s
    }

    fn world() -> Vec<Event> {
        vec![
            Event::ProjectCreated {
                project: "demo".into(),
                by: "member:root".into(),
            },
            Event::MemberAdded {
                member: "root".into(),
                uid: 0,
                admin: true,
                by: "init".into(),
            },
            Event::AgentCreated {
                agent: "a".into(),
                uid: None,
                by: "member:root".into(),
            },
            Event::AgentCreated {
                agent: "b".into(),
                uid: None,
                by: "member:root".into(),
            },
            Event::SecretStored {
                secret: "openai/prod".into(),
                projects: vec!["demo".into()],
                by: "member:root".into(),
            },
            Event::SecretVersionSealed {
                secret: "openai/prod".into(),
                version: 1,
                sealed: sealed(),
            },
        ]
    }

    fn agent(n: &str) -> Caller {
        Caller {
            identity: format!("agent:{n}"),
            uid: 1000,
            pid: Some(42),
        }
    }

    fn grant(state: &State, spec: GrantSpec) -> Vec<Event> {
        decide_grant_create(state, &spec, 1_000, "member:root")
            .unwrap()
            .1
    }

    fn spec(identity: &str) -> GrantSpec {
        GrantSpec {
            identity: identity.into(),
            secret: "openai/prod".into(),
            project: "demo".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_granted_agent_resolves_the_current_version_and_others_are_denied() {
        let mut s = given(&world());
        for e in grant(&s, spec("a")) {
            s.apply(&e).unwrap();
        }
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 2_000),
            Resolution::Granted { version: 1, .. }
        ));
        // Another agent's key, an unknown secret and another project: one answer.
        for (caller, secret, project) in [
            (agent("b"), "openai/prod", "demo"),
            (agent("a"), "openai/nope", "demo"),
            (agent("a"), "openai/prod", "other"),
        ] {
            assert!(matches!(
                decide_resolve(&s, &caller, secret, project, None, 2_000),
                Resolution::Denied { .. }
            ));
        }
    }

    #[test]
    fn grants_follow_rotation_and_grace_keeps_the_previous_version_for_a_while() {
        let mut s = given(&world());
        for e in grant(&s, spec("a")) {
            s.apply(&e).unwrap();
        }
        let v = next_version(&s, "openai/prod").unwrap();
        for e in decide_secret_rotate(
            &s,
            "openai/prod",
            v,
            sealed(),
            Some(10_000),
            5_000,
            "member:root",
        )
        .unwrap()
        {
            s.apply(&e).unwrap();
        }
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 6_000),
            Resolution::Granted { version: 2, .. }
        ));
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", Some(1), 6_000),
            Resolution::Granted { version: 1, .. }
        ));
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", Some(1), 15_000),
            Resolution::Denied { .. }
        ));
    }

    #[test]
    fn max_uses_expiry_rate_and_uid_constrain_a_grant() {
        let mut s = given(&world());
        for e in grant(
            &s,
            GrantSpec {
                max_uses: Some(2),
                ttl_ms: Some(60_000),
                ..spec("a")
            },
        ) {
            s.apply(&e).unwrap();
        }
        for t in [2_000, 3_000] {
            match decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, t) {
                Resolution::Granted { event, .. } => s.apply(&event).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 4_000),
            Resolution::Denied { .. }
        ));

        let mut s = given(&world());
        for e in grant(
            &s,
            GrantSpec {
                ttl_ms: Some(60_000),
                ..spec("a")
            },
        ) {
            s.apply(&e).unwrap();
        }
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 60_999),
            Resolution::Granted { .. }
        ));
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 61_000),
            Resolution::Denied { .. }
        ));

        let mut s = given(&world());
        for e in grant(
            &s,
            GrantSpec {
                rate_per_min: Some(2),
                ..spec("a")
            },
        ) {
            s.apply(&e).unwrap();
        }
        for t in [10_000, 20_000] {
            let Resolution::Granted { event, .. } =
                decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, t)
            else {
                panic!()
            };
            s.apply(&event).unwrap();
        }
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 30_000),
            Resolution::RateLimited { .. }
        ));
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 70_000),
            Resolution::Granted { .. }
        ));

        let mut s = given(&world());
        for e in grant(
            &s,
            GrantSpec {
                uid: Some(1000),
                ..spec("a")
            },
        ) {
            s.apply(&e).unwrap();
        }
        assert!(matches!(
            decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 1),
            Resolution::Granted { .. }
        ));
        let other_uid = Caller {
            uid: 1001,
            ..agent("a")
        };
        assert!(matches!(
            decide_resolve(&s, &other_uid, "openai/prod", "demo", None, 1),
            Resolution::Denied { .. }
        ));
    }

    #[test]
    fn revoking_a_grant_an_agent_or_a_secret_stops_resolution() {
        let base = {
            let mut s = given(&world());
            for e in grant(&s, spec("a")) {
                s.apply(&e).unwrap();
            }
            s
        };
        for revoke in [
            decide_grant_revoke(&base, 1, "member:root").unwrap(),
            decide_secret_revoke(&base, "openai/prod", "member:root").unwrap(),
        ] {
            let mut s = base.clone();
            for e in revoke {
                s.apply(&e).unwrap();
            }
            assert!(matches!(
                decide_resolve(&s, &agent("a"), "openai/prod", "demo", None, 5),
                Resolution::Denied { .. }
            ));
        }
        let mut s = base.clone();
        for e in decide_agent_revoke(&s, "a", "member:root").unwrap() {
            s.apply(&e).unwrap();
        }
        assert!(s.agents["a"].revoked);
        assert!(decide_agent_reissue(&s, "a", [1; 32], "member:root").is_err());
    }

    #[test]
    fn an_impossible_history_is_refused() {
        let mut s = State::default();
        assert!(
            s.apply(&Event::GrantRevoked {
                grant: 9,
                by: "x".into()
            })
            .is_err()
        );
        let mut s = given(&world());
        assert!(
            s.apply(&Event::SecretVersionSealed {
                secret: "openai/prod".into(),
                version: 3,
                sealed: sealed()
            })
            .is_err()
        );
        assert!(
            s.apply(&Event::ProjectCreated {
                project: "demo".into(),
                by: "x".into()
            })
            .is_err()
        );
    }

    #[test]
    fn names_follow_the_grammar() {
        for ok in ["a", "demo", "agent-1", "x.y_z", "0day"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a b", "a/b", &"a".repeat(64), "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_secret_name("openai/prod"));
        for bad in ["openai", "openai/", "/prod", "a/b/c", "Openai/prod"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
