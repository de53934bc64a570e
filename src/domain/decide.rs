//! Decisions: a [`Command`] from an established [`Caller`], decided against the [`State`] at
//! a time, becomes the events to append, or a [`Refusal`].
//!
//! [`decide`] is a pure function of its arguments: no I/O, no clock, no randomness (a fresh
//! credential's hash and a sealed value are prepared by the daemon and arrive inside the
//! command). Refusals carry no HTTP: the API layer maps each to a status and a stable code in
//! one table (`api::error`).

use std::fmt;

use super::event::{CredentialHash, Event, Sealed};
use super::names::{Actor, Identity, IdentityRef, Name, ProjectName, SecretName};
use super::profile::Profile;
use super::state::{MINUTE_MS, State};

/// Who is asking, as established by the credential and the kernel, never by request fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The agent (by credential) or member (by uid).
    pub identity: Identity,
    /// The peer's uid, from the kernel.
    pub uid: u32,
    /// The peer's pid, from the kernel, when it reported one.
    pub pid: Option<i32>,
    /// The enrolled host whose edge forwarded the call (its certificate said which; the host
    /// reported `uid` and `pid`); `None`: the local socket, whose kernel reported them.
    pub host: Option<Name>,
}

impl Caller {
    /// Whether the caller is `uid` on `host` (`None`: the hub's own host). A uid binding
    /// means a uid of one host: the same number on another host is another user.
    pub fn is_uid_on(&self, host: Option<&Name>, uid: u32) -> bool {
        self.uid == uid && self.host.as_ref() == host
    }
}

/// A grant as an admin asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
    /// Who receives it: `agent:NAME`, `member:NAME`, or a bare name.
    pub identity: IdentityRef,
    /// The secret.
    pub secret: SecretName,
    /// The project.
    pub project: ProjectName,
    /// Expires this long after it is created.
    pub ttl_ms: Option<u64>,
    /// At most this many resolutions.
    pub max_uses: Option<u64>,
    /// At most this many resolutions a minute.
    pub rate_per_min: Option<u32>,
    /// Only for callers running as this uid (on `host`, if given).
    pub uid: Option<u32>,
    /// Only for callers through this enrolled host's edge.
    pub host: Option<Name>,
}

/// Every change a caller can ask for, and resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Create a project.
    CreateProject {
        /// Its name.
        project: ProjectName,
    },
    /// Add a member (a human, by uid).
    AddMember {
        /// Their name.
        member: Name,
        /// Their uid.
        uid: u32,
        /// The enrolled host the uid is on (`None`: the hub's own host).
        host: Option<Name>,
        /// Whether they may administer.
        admin: bool,
    },
    /// Remove a member: their uid no longer identifies them and their grants end.
    RemoveMember {
        /// Their name.
        member: Name,
    },
    /// Give or take away a member's admin right.
    SetMemberAdmin {
        /// Their name.
        member: Name,
        /// Whether they may administer from now on.
        admin: bool,
    },
    /// Create an agent with a fresh credential (its keyed hash, made by the daemon).
    CreateAgent {
        /// Its name.
        agent: Name,
        /// The uid it must run as, if any.
        uid: Option<u32>,
        /// The enrolled host it must call from, if any.
        host: Option<Name>,
        /// The keyed hash of the credential handed to the admin once.
        credential_hash: CredentialHash,
    },
    /// Replace an agent's credential.
    ReissueAgent {
        /// The agent.
        agent: Name,
        /// The keyed hash of the new credential.
        credential_hash: CredentialHash,
    },
    /// Revoke an agent.
    RevokeAgent {
        /// The agent.
        agent: Name,
    },
    /// Store a new secret, sealed by the daemon as version 1.
    PutSecret {
        /// Its name.
        secret: SecretName,
        /// The projects it is assigned to.
        projects: Vec<ProjectName>,
        /// Its first value, sealed for version 1.
        sealed: Sealed,
    },
    /// Add a version that becomes current, sealed by the daemon for `version`.
    RotateSecret {
        /// The secret.
        secret: SecretName,
        /// The version the value was sealed for ([`next_version`] when it was sealed).
        version: u32,
        /// The new value, sealed.
        sealed: Sealed,
        /// How long the previous version stays resolvable.
        grace_ms: Option<u64>,
    },
    /// Revoke a secret.
    RevokeSecret {
        /// The secret.
        secret: SecretName,
    },
    /// Add an existing secret to another project.
    AssignSecret {
        /// The secret.
        secret: SecretName,
        /// The project.
        project: ProjectName,
    },
    /// Take a secret out of a project (its grants there end).
    UnassignSecret {
        /// The secret.
        secret: SecretName,
        /// The project.
        project: ProjectName,
    },
    /// Delete a secret by crypto-shredding: its sealed versions are erased from the log (the
    /// daemon does that once the deletion is durable), and it never resolves again.
    DeleteSecret {
        /// The secret.
        secret: SecretName,
    },
    /// Create a grant.
    CreateGrant(GrantSpec),
    /// Revoke a grant.
    RevokeGrant {
        /// Its id.
        grant: u64,
    },
    /// Resolve a secret's value: granted or denied, either way an event records it.
    Resolve {
        /// The secret.
        secret: SecretName,
        /// The project it is asked for in.
        project: ProjectName,
        /// A version still in its grace period, instead of the current one.
        version: Option<u32>,
    },
    /// Resolve several secrets at once, all or nothing: every one is decided (uses and rates
    /// counted as if the earlier ones were already resolved) before any is recorded, so a
    /// refusal of one consumes no use of the others (`run`).
    ResolveAll {
        /// The secrets.
        secrets: Vec<SecretName>,
        /// The project.
        project: ProjectName,
    },
    /// Add a provider profile (`create`: refused if one is in effect, built-in or not), or
    /// set one (overriding a built-in, or replacing an admin's).
    SetProvider {
        /// The provider namespace.
        provider: Name,
        /// The profile.
        profile: Profile,
        /// Whether this adds a new provider rather than changing one.
        create: bool,
    },
    /// Let one request through the injecting proxy: decided exactly as a resolution (grant,
    /// expiry, uses, rate, uid), and only to a host of the secret's profile.
    Proxy {
        /// The secret whose key the request needs.
        secret: SecretName,
        /// The project it is used in.
        project: ProjectName,
        /// The upstream host (`name` or `name:port`).
        host: String,
        /// The request's method.
        method: String,
        /// The request's path, the query's values left out.
        path: String,
        /// The run whose placeholder the request carries, if it carries one.
        run: Option<u64>,
    },
    /// Start a `run --proxy`: placeholders for these secrets, valid until it ends.
    StartRun {
        /// The project.
        project: ProjectName,
        /// The secrets, each of which the caller must be able to use now.
        secrets: Vec<SecretName>,
    },
    /// End a run (its process said so, its connection closed, or the daemon restarted).
    EndRun {
        /// The run.
        run: u64,
        /// Why, in a few fixed words.
        reason: String,
    },
    /// Invite a host to enrol: the daemon made a one-time join token, and only its keyed
    /// hash arrives here.
    InviteHost {
        /// The host's name.
        host: Name,
        /// The keyed hash of the join token.
        token_hash: CredentialHash,
        /// Until when the token may be spent.
        expires_ms: u64,
    },
    /// Enrol an invited host, spending its join token: the daemon certified the key the
    /// host sent (once this is decided, before the certificate is handed out).
    EnrolHost {
        /// The host's name.
        host: Name,
        /// The keyed hash of the token presented.
        token_hash: CredentialHash,
        /// The SHA-256 (hex) of the certificate issued.
        cert_sha256: String,
        /// When that certificate expires.
        not_after_ms: u64,
    },
    /// Replace an enrolled host's certificate (the host asked, on its own connection, with a
    /// new key): once decided, the new one is handed out and the old one opens nothing.
    RenewHost {
        /// The host's name.
        host: Name,
        /// The SHA-256 (hex) of the certificate issued.
        cert_sha256: String,
        /// When that certificate expires.
        not_after_ms: u64,
    },
    /// Revoke a host: its certificate opens no connection from now on.
    RevokeHost {
        /// The host's name.
        host: Name,
    },
}

impl Command {
    /// Whether the command only takes access away (a revocation): still carried out when the
    /// disk is under its reserve, since refusing it would keep access open.
    pub fn reduces_access(&self) -> bool {
        matches!(
            self,
            Command::RevokeAgent { .. }
                | Command::RevokeSecret { .. }
                | Command::DeleteSecret { .. }
                | Command::RevokeGrant { .. }
                | Command::RemoveMember { .. }
                | Command::UnassignSecret { .. }
                | Command::RevokeHost { .. }
        )
    }
}

/// Why a resolution (or a caller) was denied. The caller gets one answer ("not granted")
/// whatever the reason; the reason is recorded in the log for the security team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// No secret of that name.
    NoSuchSecret,
    /// The secret is revoked.
    SecretRevoked,
    /// The secret was deleted (crypto-shredded).
    SecretDeleted,
    /// The secret is not assigned to the project asked for.
    NotInProject,
    /// The version asked for is neither current nor in its grace period.
    GraceOver,
    /// No grant covers caller, secret and project.
    NotGranted,
    /// The grant is revoked.
    GrantRevoked,
    /// The grant has expired.
    Expired,
    /// The grant's uses are used up.
    Exhausted,
    /// The grant is bound to another uid.
    GrantUid,
    /// The grant is bound to another host (or to this one, and called through an edge).
    GrantHost,
    /// Over the grant's rate.
    RateLimited,
    /// The agent is revoked.
    AgentRevoked,
    /// The agent is bound to another uid.
    AgentUid,
    /// The agent is bound to another host (or to this one, and called through an edge).
    AgentHost,
    /// The secret's provider has no profile, so the proxy does not know where it may go.
    NoProfile,
    /// The request is aimed at a host the secret's profile does not name.
    HostNotInProfile,
    /// The placeholder's run has ended.
    RunEnded,
    /// The placeholder's run holds no grant for this secret and project, or is another uid's.
    NotInRun,
    /// The grant ended: its member was removed, or its secret taken out of its project.
    GrantEnded,
}

impl DenyReason {
    /// The reason as recorded in the log (stable: logs carry it).
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoSuchSecret => "no such secret",
            DenyReason::SecretRevoked => "secret revoked",
            DenyReason::SecretDeleted => "secret deleted",
            DenyReason::NotInProject => "secret not assigned to project",
            DenyReason::GraceOver => "version not current and not in a grace period",
            DenyReason::NotGranted => "not granted",
            DenyReason::GrantRevoked => "grant revoked",
            DenyReason::Expired => "grant expired",
            DenyReason::Exhausted => "grant exhausted",
            DenyReason::GrantUid => "caller uid not bound to grant",
            DenyReason::GrantHost => "caller host not bound to grant",
            DenyReason::RateLimited => "rate limit",
            DenyReason::AgentRevoked => "agent revoked",
            DenyReason::AgentUid => "caller uid not bound to agent",
            DenyReason::AgentHost => "caller host not bound to agent",
            DenyReason::NoProfile => "no provider profile",
            DenyReason::HostNotInProfile => "host not in provider profile",
            DenyReason::RunEnded => "run ended",
            DenyReason::NotInRun => "not in the run's grants",
            DenyReason::GrantEnded => "grant ended",
        }
    }
}

/// The kinds of thing a refusal can be about, as named in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Thing {
    /// A project.
    Project,
    /// A member.
    Member,
    /// An agent.
    Agent,
    /// An agent or a member.
    Identity,
    /// A secret.
    Secret,
    /// A grant.
    Grant,
    /// A provider profile.
    Provider,
    /// A run under the proxy.
    Run,
    /// An enrolled (or invited) host.
    Host,
}

impl fmt::Display for Thing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Thing::Project => "project",
            Thing::Member => "member",
            Thing::Agent => "agent",
            Thing::Identity => "identity",
            Thing::Secret => "secret",
            Thing::Grant => "grant",
            Thing::Provider => "provider",
            Thing::Run => "run",
            Thing::Host => "host",
        })
    }
}

/// Why a command was refused. No HTTP here: `api::error` maps each to a status and a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No valid credential and no member with the caller's uid.
    #[error("no valid credential")]
    Unauthenticated,
    /// Denied, for a reason recorded in the log and not told to the caller.
    #[error("not granted")]
    Denied(DenyReason),
    /// Refused, and the caller holds a grant for this secret in this project: told why (an
    /// unknown name and an ungranted one still look the same to everyone else).
    #[error("grant {grant} for {secret} in {project} cannot be used: {why}")]
    Unusable {
        /// The secret.
        secret: SecretName,
        /// The project.
        project: ProjectName,
        /// The caller's grant (the last one examined, if several).
        grant: u64,
        /// The reason recorded in the log.
        reason: DenyReason,
        /// The reason in words, for the holder.
        why: String,
    },
    /// A grant allows it, but not now: over its rate. The reason recorded in the log is
    /// that of the last grant examined (normally [`DenyReason::RateLimited`]).
    #[error("over the grant's rate; retry later")]
    RateLimited(DenyReason),
    /// An admin route, and the caller is not an admin member (by uid).
    #[error("admin operations are for admin members (by their uid)")]
    NotAdmin,
    /// The thing named does not exist.
    #[error("no {0} {1}")]
    Unknown(Thing, String),
    /// The thing named exists already.
    #[error("{0} {1} already exists{hint}", hint = if *.0 == Thing::Secret { ": rotate it instead" } else { "" })]
    AlreadyExists(Thing, String),
    /// The thing named is already revoked.
    #[error("{0} {1} is already revoked")]
    AlreadyRevoked(Thing, String),
    /// The thing named is revoked, so this cannot be done.
    #[error("{0} {1} is revoked{hint}", hint = if *.0 == Thing::Agent { "; create a new agent" } else { "" })]
    Revoked(Thing, String),
    /// The secret was deleted: nothing more can be done with it, and its name is not reused
    /// (grants name secrets, and a new secret must not inherit a deleted one's history).
    #[error(
        "secret {0} was deleted (its sealed values were destroyed); a deleted secret's name is never reused, store the value under a new name"
    )]
    Deleted(SecretName),
    /// Another member has the uid.
    #[error("uid {uid} is already member {member}")]
    UidTaken {
        /// The uid.
        uid: u32,
        /// The member who has it.
        member: Name,
    },
    /// The secret was rotated between sealing the value and deciding.
    #[error("secret {0} was rotated concurrently")]
    ConcurrentRotation(SecretName),
    /// A secret must be assigned to a project.
    #[error("a secret is assigned to at least one project (--project P)")]
    NoProjects,
    /// A grant for a project the secret is not assigned to.
    #[error("secret {secret} is not assigned to project {project}")]
    NotInProject {
        /// The secret.
        secret: SecretName,
        /// The project.
        project: ProjectName,
    },
    /// A maximum of 0 uses or 0 a minute.
    #[error("--max-uses and --rate must be at least 1")]
    ZeroLimit,
    /// A request that does not make sense on its own.
    #[error("{0}")]
    Invalid(String),
    /// The change would leave no admin member, so nobody could administer again.
    #[error("member {0} is the last admin: make another member admin first")]
    LastAdmin(Name),
    /// An agent's name is not given again once it was revoked.
    #[error(
        "agent {0} was revoked; a name is never reused, so that its grants and its rows in the log stay its own: choose another name"
    )]
    NameRetired(Name),
    /// Agents and members take distinct names, so a name never means two identities.
    #[error("{0} is already the name of {1}: agents and members take distinct names")]
    NameTaken(Name, Identity),
    /// One secret of a [`Command::ResolveAll`] was refused, so none was resolved.
    #[error("{}", batch_message(secret, inner))]
    InBatch {
        /// The secret refused.
        secret: SecretName,
        /// Why.
        inner: Box<Refusal>,
    },
    /// A join token that is not (or no longer) good: the same answer whether it never
    /// existed or was spent, so a guess learns nothing.
    #[error(
        "join token unknown, already used, or for another host: ask the hub's admin for a new one (scopehold host add NAME)"
    )]
    BadJoinToken,
    /// A join token past its time.
    #[error("join token expired: ask the hub's admin for a new one (scopehold host add NAME)")]
    JoinTokenExpired,
    /// A grant names its identity without saying which kind it is.
    #[error("say which kind of identity: agent:{0} or member:{0}")]
    KindNeeded(Name),
}

fn batch_message(secret: &SecretName, inner: &Refusal) -> String {
    match inner {
        // It names the secret already.
        Refusal::Unusable { .. } => format!("{inner}; nothing was resolved"),
        _ => format!("{secret}: {inner}; nothing was resolved"),
    }
}

impl Refusal {
    /// The reason a denial records, if this refusal is one.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match self {
            Refusal::Denied(r) | Refusal::RateLimited(r) | Refusal::Unusable { reason: r, .. } => {
                Some(*r)
            }
            Refusal::InBatch { inner, .. } => inner.deny_reason(),
            _ => None,
        }
    }

    /// The refusal behind a batch's, for its HTTP status and code.
    pub fn innermost(&self) -> &Refusal {
        match self {
            Refusal::InBatch { inner, .. } => inner.innermost(),
            r => r,
        }
    }
}

fn by(caller: &Caller) -> Actor {
    Actor::Identity(caller.identity.clone())
}

/// Whether the caller may administer: a member with the admin flag, calling from their uid.
pub fn authorize_admin(state: &State, caller: &Caller) -> Result<(), Refusal> {
    match caller.identity.member().and_then(|n| state.members.get(n)) {
        Some(m) if m.admin && caller.is_uid_on(m.host.as_ref(), m.uid) => Ok(()),
        _ => Err(Refusal::NotAdmin),
    }
}

/// The outcome of establishing who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identified {
    /// A known, live caller.
    Caller(Caller),
    /// A known agent that may not call (revoked, or another uid): denied and recorded.
    Denied(Caller, DenyReason),
    /// Neither a valid credential nor a member's uid: counted, not named.
    Unknown,
}

/// Establishes the caller: an agent by its credential's keyed hash (and, if bound, its uid),
/// or else, with no credential, a member by the peer's uid. Never from request fields.
pub fn identify(
    state: &State,
    credential_hash: Option<&[u8; 32]>,
    host: Option<&Name>,
    uid: u32,
    pid: Option<i32>,
) -> Identified {
    let caller = |identity| Caller {
        identity,
        uid,
        pid,
        host: host.cloned(),
    };
    match credential_hash {
        Some(h) => {
            // One map lookup by the keyed hash, then a constant-time comparison of the
            // stored hash (blake3::Hash's PartialEq) before the match is believed.
            let Some((name, a)) = state
                .agent_by_credential
                .get(h)
                .and_then(|n| state.agents.get_key_value(n))
                .filter(|(_, a)| {
                    a.credential_hash.is_some_and(|s| {
                        blake3::Hash::from_bytes(s) == blake3::Hash::from_bytes(*h)
                    })
                })
            else {
                return Identified::Unknown;
            };
            let c = caller(Identity::Agent(name.clone()));
            if a.revoked {
                Identified::Denied(c, DenyReason::AgentRevoked)
            } else if a.host.is_some() && a.host.as_ref() != host {
                Identified::Denied(c, DenyReason::AgentHost)
            } else if a.uid.is_some_and(|u| !c.is_uid_on(a.host.as_ref(), u)) {
                // A uid binding without a host is a uid of the hub's own host.
                Identified::Denied(c, DenyReason::AgentUid)
            } else {
                Identified::Caller(c)
            }
        }
        None => match state.member_by_uid(host, uid) {
            Some((n, _)) => Identified::Caller(caller(Identity::Member(n.clone()))),
            None => Identified::Unknown,
        },
    }
}

/// The event that records a denial: for a refused resolution, the secret and project asked
/// for; for a caller refused before its request was read, neither.
pub fn denial_event(
    caller: &Caller,
    asked: Option<(&SecretName, &ProjectName)>,
    reason: DenyReason,
    now_ms: u64,
) -> Event {
    Event::ResolutionDenied {
        identity: caller.identity.clone(),
        secret: asked.map(|(s, _)| s.clone()),
        project: asked.map(|(_, p)| p.clone()),
        reason: reason.as_str().to_string(),
        pid: caller.pid,
        uid: caller.uid,
        from_host: caller.host.clone(),
        at_ms: now_ms,
    }
}

/// The event a refusal leaves in the log, if it leaves one: every denied resolution is
/// recorded; refused changes are not (nothing happened).
pub fn recorded_refusal(
    caller: &Caller,
    command: &Command,
    refusal: &Refusal,
    now_ms: u64,
) -> Option<Event> {
    match (command, refusal) {
        (
            Command::Resolve {
                secret, project, ..
            },
            Refusal::Denied(reason)
            | Refusal::RateLimited(reason)
            | Refusal::Unusable { reason, .. },
        ) => Some(denial_event(
            caller,
            Some((secret, project)),
            *reason,
            now_ms,
        )),
        (Command::ResolveAll { project, .. }, Refusal::InBatch { secret, inner }) => inner
            .deny_reason()
            .map(|reason| denial_event(caller, Some((secret, project)), reason, now_ms)),
        (
            Command::Proxy {
                secret,
                project,
                host,
                method,
                path,
                run,
            },
            Refusal::Denied(reason)
            | Refusal::RateLimited(reason)
            | Refusal::Unusable { reason, .. },
        ) => Some(Event::ProxyDenied {
            identity: caller.identity.clone(),
            secret: secret.clone(),
            project: project.clone(),
            host: host.clone(),
            method: method.clone(),
            path: path.clone(),
            reason: reason.as_str().to_string(),
            run: *run,
            pid: caller.pid,
            uid: caller.uid,
            from_host: caller.host.clone(),
            at_ms: now_ms,
        }),
        (Command::StartRun { project, .. }, Refusal::InBatch { secret, inner }) => inner
            .deny_reason()
            .map(|reason| denial_event(caller, Some((secret, project)), reason, now_ms)),
        _ => None,
    }
}

/// The version a rotation would create (the daemon seals the value for it).
pub fn next_version(state: &State, secret: &SecretName) -> Result<u32, Refusal> {
    match state.secrets.get(secret) {
        None => Err(Refusal::Unknown(Thing::Secret, secret.to_string())),
        Some(s) if s.deleted => Err(Refusal::Deleted(secret.clone())),
        Some(s) if s.revoked => Err(Refusal::Revoked(Thing::Secret, secret.to_string())),
        Some(s) => Ok(s.next_version()),
    }
}

/// Decides a command. Decisions are taken in log order under the daemon's state lock, and
/// their events are applied before the next decision, so concurrent requests never exceed a
/// grant's maximum uses or rate. Every event returned applies to `state` without error.
pub fn decide(
    state: &State,
    caller: &Caller,
    command: &Command,
    now_ms: u64,
) -> Result<Vec<Event>, Refusal> {
    match command {
        Command::Resolve {
            secret,
            project,
            version,
        } => decide_resolve(state, caller, secret, project, *version, now_ms).map(|e| vec![e]),
        Command::CreateProject { project } => {
            if state.projects.contains(project) {
                return Err(Refusal::AlreadyExists(Thing::Project, project.to_string()));
            }
            Ok(vec![Event::ProjectCreated {
                project: project.clone(),
                by: by(caller),
            }])
        }
        Command::AddMember {
            member,
            uid,
            admin,
            host,
        } => {
            if state.members.contains_key(member) {
                return Err(Refusal::AlreadyExists(Thing::Member, member.to_string()));
            }
            if state.agents.contains_key(member) {
                return Err(Refusal::NameTaken(
                    member.clone(),
                    Identity::Agent(member.clone()),
                ));
            }
            if let Some(h) = host {
                enrolled_host(state, h)?;
            }
            if let Some((other, _)) = state.member_by_uid(host.as_ref(), *uid) {
                return Err(Refusal::UidTaken {
                    uid: *uid,
                    member: other.clone(),
                });
            }
            Ok(vec![Event::MemberAdded {
                member: member.clone(),
                uid: *uid,
                admin: *admin,
                host: host.clone(),
                by: by(caller),
            }])
        }
        Command::CreateAgent {
            agent,
            uid,
            host,
            credential_hash,
        } => {
            if let Some(h) = host {
                enrolled_host(state, h)?;
            }
            match state.agents.get(agent) {
                Some(a) if a.revoked => return Err(Refusal::NameRetired(agent.clone())),
                Some(_) => return Err(Refusal::AlreadyExists(Thing::Agent, agent.to_string())),
                None => {}
            }
            if state.members.contains_key(agent) {
                return Err(Refusal::NameTaken(
                    agent.clone(),
                    Identity::Member(agent.clone()),
                ));
            }
            Ok(vec![
                Event::AgentCreated {
                    agent: agent.clone(),
                    uid: *uid,
                    host: host.clone(),
                    by: by(caller),
                },
                Event::AgentCredentialIssued {
                    agent: agent.clone(),
                    credential_hash: *credential_hash,
                    by: by(caller),
                },
            ])
        }
        Command::ReissueAgent {
            agent,
            credential_hash,
        } => match state.agents.get(agent) {
            None => Err(Refusal::Unknown(Thing::Agent, agent.to_string())),
            Some(a) if a.revoked => Err(Refusal::Revoked(Thing::Agent, agent.to_string())),
            Some(_) => Ok(vec![Event::AgentCredentialIssued {
                agent: agent.clone(),
                credential_hash: *credential_hash,
                by: by(caller),
            }]),
        },
        Command::RevokeAgent { agent } => match state.agents.get(agent) {
            None => Err(Refusal::Unknown(Thing::Agent, agent.to_string())),
            Some(a) if a.revoked => Err(Refusal::AlreadyRevoked(Thing::Agent, agent.to_string())),
            Some(_) => {
                let mut events = vec![Event::AgentRevoked {
                    agent: agent.clone(),
                    by: by(caller),
                }];
                // Its runs end with it: a placeholder is the agent acting, and must stop
                // when the agent does.
                events.extend(runs_of(
                    state,
                    &Identity::Agent(agent.clone()),
                    "agent revoked",
                    now_ms,
                ));
                Ok(events)
            }
        },
        Command::PutSecret {
            secret,
            projects,
            sealed,
        } => {
            if projects.is_empty() {
                return Err(Refusal::NoProjects);
            }
            if let Some(p) = projects.iter().find(|p| !state.projects.contains(*p)) {
                return Err(Refusal::Unknown(Thing::Project, p.to_string()));
            }
            match state.secrets.get(secret) {
                Some(s) if s.deleted => return Err(Refusal::Deleted(secret.clone())),
                Some(_) => {
                    return Err(Refusal::AlreadyExists(Thing::Secret, secret.to_string()));
                }
                None => {}
            }
            Ok(vec![
                Event::SecretStored {
                    secret: secret.clone(),
                    projects: projects.clone(),
                    by: by(caller),
                },
                Event::SecretVersionSealed {
                    secret: secret.clone(),
                    version: 1,
                    sealed: sealed.clone(),
                },
            ])
        }
        Command::RotateSecret {
            secret,
            version,
            sealed,
            grace_ms,
        } => {
            if next_version(state, secret)? != *version {
                return Err(Refusal::ConcurrentRotation(secret.clone()));
            }
            Ok(vec![
                Event::SecretVersionSealed {
                    secret: secret.clone(),
                    version: *version,
                    sealed: sealed.clone(),
                },
                Event::SecretRotated {
                    secret: secret.clone(),
                    version: *version,
                    grace_until_ms: grace_ms.map(|g| now_ms.saturating_add(g)),
                    by: by(caller),
                },
            ])
        }
        Command::DeleteSecret { secret } => match state.secrets.get(secret) {
            None => Err(Refusal::Unknown(Thing::Secret, secret.to_string())),
            Some(s) if s.deleted => Err(Refusal::Deleted(secret.clone())),
            Some(s) => {
                let mut events = vec![Event::SecretDeleted {
                    secret: secret.clone(),
                    erased: s.sealed_at.values().copied().collect(),
                    by: by(caller),
                }];
                // Runs holding placeholders for it end with it.
                events.extend(
                    state
                        .runs
                        .iter()
                        .filter(|(_, r)| r.secrets.contains(secret))
                        .map(|(run, _)| Event::RunEnded {
                            run: *run,
                            reason: "secret deleted".into(),
                            at_ms: now_ms,
                        }),
                );
                Ok(events)
            }
        },
        Command::RevokeSecret { secret } => match state.secrets.get(secret) {
            None => Err(Refusal::Unknown(Thing::Secret, secret.to_string())),
            Some(s) if s.deleted => Err(Refusal::Deleted(secret.clone())),
            Some(s) if s.revoked => Err(Refusal::AlreadyRevoked(Thing::Secret, secret.to_string())),
            Some(_) => Ok(vec![Event::SecretRevoked {
                secret: secret.clone(),
                by: by(caller),
            }]),
        },
        Command::CreateGrant(spec) => decide_grant(state, caller, spec, now_ms),
        Command::RemoveMember { member } => {
            let Some(m) = state.members.get(member) else {
                return Err(Refusal::Unknown(Thing::Member, member.to_string()));
            };
            if m.admin && last_admin(state, member) {
                return Err(Refusal::LastAdmin(member.clone()));
            }
            let mut events = vec![Event::MemberRemoved {
                member: member.clone(),
                by: by(caller),
            }];
            events.extend(runs_of(
                state,
                &Identity::Member(member.clone()),
                "member removed",
                now_ms,
            ));
            Ok(events)
        }
        Command::SetMemberAdmin { member, admin } => {
            let Some(m) = state.members.get(member) else {
                return Err(Refusal::Unknown(Thing::Member, member.to_string()));
            };
            if m.admin == *admin {
                return Err(Refusal::Invalid(format!(
                    "member {member} {} an admin already",
                    if *admin { "is" } else { "is not" }
                )));
            }
            if !admin && last_admin(state, member) {
                return Err(Refusal::LastAdmin(member.clone()));
            }
            Ok(vec![Event::MemberAdminSet {
                member: member.clone(),
                admin: *admin,
                by: by(caller),
            }])
        }
        Command::AssignSecret { secret, project } => {
            let Some(s) = state.secrets.get(secret) else {
                return Err(Refusal::Unknown(Thing::Secret, secret.to_string()));
            };
            if s.deleted {
                return Err(Refusal::Deleted(secret.clone()));
            }
            if s.revoked {
                return Err(Refusal::Revoked(Thing::Secret, secret.to_string()));
            }
            if !state.projects.contains(project) {
                return Err(Refusal::Unknown(Thing::Project, project.to_string()));
            }
            if s.projects.contains(project) {
                return Err(Refusal::Invalid(format!(
                    "secret {secret} is in project {project} already"
                )));
            }
            Ok(vec![Event::SecretAssigned {
                secret: secret.clone(),
                project: project.clone(),
                by: by(caller),
            }])
        }
        Command::UnassignSecret { secret, project } => {
            let Some(s) = state.secrets.get(secret) else {
                return Err(Refusal::Unknown(Thing::Secret, secret.to_string()));
            };
            if s.deleted {
                return Err(Refusal::Deleted(secret.clone()));
            }
            if !s.projects.contains(project) {
                return Err(Refusal::NotInProject {
                    secret: secret.clone(),
                    project: project.clone(),
                });
            }
            if s.projects.len() == 1 {
                return Err(Refusal::Invalid(format!(
                    "{project} is the last project of secret {secret}: a secret is in at least one project (revoke it instead)"
                )));
            }
            Ok(vec![Event::SecretUnassigned {
                secret: secret.clone(),
                project: project.clone(),
                by: by(caller),
            }])
        }
        Command::ResolveAll { secrets, project } => {
            if secrets.is_empty() {
                return Err(Refusal::Invalid("nothing to resolve".into()));
            }
            // Bounded, and each secret once: one request must not append an unbounded batch
            // or answer with an unbounded body.
            if secrets.len() > MAX_RESOLVE_ALL {
                return Err(Refusal::Invalid(format!(
                    "at most {MAX_RESOLVE_ALL} secrets at once"
                )));
            }
            if let Some(d) = secrets
                .iter()
                .enumerate()
                .find_map(|(i, s)| secrets[..i].contains(s).then_some(s))
            {
                return Err(Refusal::Invalid(format!("{d} is named twice")));
            }
            // Each is decided against the state as the earlier ones leave it, so two
            // secrets sharing nothing still count uses and rates exactly as one by one.
            let mut scratch: Option<State> = None;
            let mut events = Vec::with_capacity(secrets.len());
            for secret in secrets {
                let st = scratch.as_ref().unwrap_or(state);
                let ev =
                    decide_resolve(st, caller, secret, project, None, now_ms).map_err(|inner| {
                        Refusal::InBatch {
                            secret: secret.clone(),
                            inner: Box::new(inner),
                        }
                    })?;
                if secrets.len() > 1 {
                    let next = scratch.get_or_insert_with(|| state.clone());
                    next.apply(&ev)
                        .expect("a decided resolution applies to the state it was decided on");
                }
                events.push(ev);
            }
            Ok(events)
        }
        Command::SetProvider {
            provider,
            profile,
            create,
        } => {
            if *create && state.profile(provider.as_str()).is_some() {
                return Err(Refusal::AlreadyExists(
                    Thing::Provider,
                    provider.to_string(),
                ));
            }
            profile
                .check()
                .map_err(|e| Refusal::Invalid(e.to_string()))?;
            Ok(vec![Event::ProviderSet {
                provider: provider.clone(),
                profile: profile.clone(),
                by: by(caller),
            }])
        }
        Command::Proxy {
            secret,
            project,
            host,
            method,
            path,
            run,
        } => {
            if let Some(id) = run {
                match state.runs.get(id) {
                    None => return Err(Refusal::Denied(DenyReason::RunEnded)),
                    Some(r)
                        if r.identity != caller.identity
                            || !caller.is_uid_on(r.host.as_ref(), r.uid)
                            || &r.project != project
                            || !r.secrets.contains(secret) =>
                    {
                        return Err(Refusal::Denied(DenyReason::NotInRun));
                    }
                    Some(_) => {}
                }
            }
            let Some(profile) = state.profile(secret.provider()) else {
                return Err(Refusal::Denied(DenyReason::NoProfile));
            };
            if !profile.allows(host) {
                return Err(Refusal::Denied(DenyReason::HostNotInProfile));
            }
            let Event::SecretResolved {
                identity,
                secret,
                version,
                project,
                grant,
                pid,
                uid,
                from_host,
                at_ms,
            } = decide_resolve(state, caller, secret, project, None, now_ms)?
            else {
                unreachable!("decide_resolve decides resolutions")
            };
            Ok(vec![Event::ProxyCall {
                identity,
                secret,
                version,
                project,
                grant,
                host: host.clone(),
                method: method.clone(),
                path: path.clone(),
                run: *run,
                pid,
                uid,
                from_host,
                at_ms,
            }])
        }
        Command::StartRun { project, secrets } => {
            if secrets.is_empty() {
                return Err(Refusal::Invalid("a run holds at least one secret".into()));
            }
            for s in secrets {
                usable(state, caller, s, project, now_ms).map_err(|r| Refusal::InBatch {
                    secret: s.clone(),
                    inner: Box::new(told(state, caller, s, project, None, r, now_ms)),
                })?;
            }
            Ok(vec![Event::RunStarted {
                run: state.next_run.max(1),
                identity: caller.identity.clone(),
                project: project.clone(),
                secrets: secrets.clone(),
                pid: caller.pid,
                uid: caller.uid,
                from_host: caller.host.clone(),
                at_ms: now_ms,
            }])
        }
        Command::EndRun { run, reason } => {
            if !state.runs.contains_key(run) {
                return Err(Refusal::Unknown(Thing::Run, run.to_string()));
            }
            Ok(vec![Event::RunEnded {
                run: *run,
                reason: reason.clone(),
                at_ms: now_ms,
            }])
        }
        Command::InviteHost {
            host,
            token_hash,
            expires_ms,
        } => {
            if state
                .hosts
                .get(host)
                .is_some_and(|h| h.cert_sha256.is_some() && !h.revoked)
            {
                return Err(Refusal::Invalid(format!(
                    "host {host} is enrolled already: revoke it first (scopehold host revoke {host}) to enrol it again"
                )));
            }
            Ok(vec![Event::HostInvited {
                host: host.clone(),
                token_hash: *token_hash,
                expires_ms: *expires_ms,
                by: by(caller),
            }])
        }
        Command::EnrolHost {
            host,
            token_hash,
            cert_sha256,
            not_after_ms,
        } => {
            // The token is checked against the named host's outstanding one only, by a
            // constant-time comparison of keyed hashes: a token for another host, a spent one
            // and a made-up one get the same answer.
            let outstanding = state.hosts.get(host).and_then(|h| {
                h.token_hash
                    .filter(|t| {
                        blake3::Hash::from_bytes(*t) == blake3::Hash::from_bytes(token_hash.0)
                    })
                    .map(|_| h.token_expires_ms)
            });
            match outstanding {
                None => Err(Refusal::BadJoinToken),
                Some(exp) if now_ms >= exp => Err(Refusal::JoinTokenExpired),
                Some(_) => Ok(vec![Event::HostEnrolled {
                    host: host.clone(),
                    cert_sha256: cert_sha256.clone(),
                    not_after_ms: *not_after_ms,
                    at_ms: now_ms,
                }]),
            }
        }
        Command::RenewHost {
            host,
            cert_sha256,
            not_after_ms,
        } => match state.hosts.get(host) {
            Some(h) if h.cert_sha256.is_some() && !h.revoked => Ok(vec![Event::HostRenewed {
                host: host.clone(),
                cert_sha256: cert_sha256.clone(),
                not_after_ms: *not_after_ms,
                at_ms: now_ms,
            }]),
            _ => Err(Refusal::Invalid(format!("host {host} is not enrolled"))),
        },
        Command::RevokeHost { host } => match state.hosts.get(host) {
            None => Err(Refusal::Unknown(Thing::Host, host.to_string())),
            Some(h) if h.revoked => Err(Refusal::AlreadyRevoked(Thing::Host, host.to_string())),
            Some(_) => Ok(vec![Event::HostRevoked {
                host: host.clone(),
                by: by(caller),
            }]),
        },
        Command::RevokeGrant { grant } => match state.grants.get(grant) {
            None => Err(Refusal::Unknown(Thing::Grant, grant.to_string())),
            Some(g) if g.revoked => Err(Refusal::AlreadyRevoked(Thing::Grant, grant.to_string())),
            Some(_) => Ok(vec![Event::GrantRevoked {
                grant: *grant,
                by: by(caller),
            }]),
        },
    }
}

/// The refusal for a denial: the caller's own grant for this secret and project, if it holds
/// one, tells it why; anybody else hears "not granted" whatever the reason, so an unknown
/// name and an ungranted one look the same.
fn told(
    state: &State,
    caller: &Caller,
    secret: &SecretName,
    project: &ProjectName,
    version: Option<u32>,
    reason: DenyReason,
    now_ms: u64,
) -> Refusal {
    let held = state.grants.iter().rev().find(|(_, g)| {
        g.identity == caller.identity && &g.secret == secret && &g.project == project
    });
    let Some((id, g)) = held else {
        return Refusal::Denied(reason);
    };
    let why = match reason {
        DenyReason::GraceOver => format!(
            "version {} is neither current nor in a grace period",
            version.unwrap_or_default()
        ),
        DenyReason::GrantUid => "it is bound to another uid".to_string(),
        DenyReason::GrantHost => "it is bound to another host".to_string(),
        DenyReason::NotInProject => "its secret was taken out of the project".to_string(),
        _ => state.grant_state(g, now_ms).why(),
    };
    Refusal::Unusable {
        secret: secret.clone(),
        project: project.clone(),
        grant: *id,
        reason,
        why,
    }
}

fn decide_resolve(
    state: &State,
    caller: &Caller,
    secret: &SecretName,
    project: &ProjectName,
    version: Option<u32>,
    now_ms: u64,
) -> Result<Event, Refusal> {
    let deny = |r: DenyReason| Err(told(state, caller, secret, project, version, r, now_ms));
    let Some(s) = state.secrets.get(secret) else {
        return deny(DenyReason::NoSuchSecret);
    };
    if s.deleted {
        return deny(DenyReason::SecretDeleted);
    }
    if s.revoked {
        return deny(DenyReason::SecretRevoked);
    }
    if !s.projects.contains(project) {
        return deny(DenyReason::NotInProject);
    }
    let want = match version {
        None => s.current,
        Some(v) if v == s.current => v,
        Some(v) => match s.grace {
            Some((prev, until)) if prev == v && now_ms < until => v,
            _ => return deny(DenyReason::GraceOver),
        },
    };
    // Of several grants, the first that allows the call is used; if none does, the reason
    // of the last one examined is recorded (a rate limit wins, as it is the one to retry).
    let mut reason = DenyReason::NotGranted;
    let mut rate_limited = false;
    for (id, g) in &state.grants {
        if g.identity != caller.identity || &g.secret != secret || &g.project != project {
            continue;
        }
        if g.revoked {
            reason = DenyReason::GrantRevoked;
            continue;
        }
        if g.ended.is_some() {
            reason = DenyReason::GrantEnded;
            continue;
        }
        if g.expires_at_ms.is_some_and(|e| now_ms >= e) {
            reason = DenyReason::Expired;
            continue;
        }
        if g.max_uses.is_some_and(|m| g.uses >= m) {
            reason = DenyReason::Exhausted;
            continue;
        }
        if g.host.is_some() && g.host != caller.host {
            reason = DenyReason::GrantHost;
            continue;
        }
        if g.uid.is_some_and(|u| !caller.is_uid_on(g.host.as_ref(), u)) {
            // A uid without a host is one of the hub's own host.
            reason = DenyReason::GrantUid;
            continue;
        }
        if let Some(r) = g.rate_per_min {
            let in_window = g.recent.iter().filter(|t| **t + MINUTE_MS > now_ms).count();
            if in_window >= r as usize {
                rate_limited = true;
                reason = DenyReason::RateLimited;
                continue;
            }
        }
        return Ok(Event::SecretResolved {
            identity: caller.identity.clone(),
            secret: secret.clone(),
            version: want,
            project: project.clone(),
            grant: *id,
            pid: caller.pid,
            uid: caller.uid,
            from_host: caller.host.clone(),
            at_ms: now_ms,
        });
    }
    if rate_limited {
        // Some grant would allow it, but not now: the caller is told to retry (429), while
        // the log records the reason of the last grant examined, as it always has.
        return Err(Refusal::RateLimited(reason));
    }
    deny(reason)
}

/// Whether some grant would let `caller` use `secret` in `project` now, without using it
/// (a run is refused up front rather than handing out placeholders that cannot work). The
/// rate is not consulted: it is checked call by call.
fn usable(
    state: &State,
    caller: &Caller,
    secret: &SecretName,
    project: &ProjectName,
    now_ms: u64,
) -> Result<(), DenyReason> {
    let Some(s) = state.secrets.get(secret) else {
        return Err(DenyReason::NoSuchSecret);
    };
    if s.deleted {
        return Err(DenyReason::SecretDeleted);
    }
    if s.revoked {
        return Err(DenyReason::SecretRevoked);
    }
    if !s.projects.contains(project) {
        return Err(DenyReason::NotInProject);
    }
    let mut reason = DenyReason::NotGranted;
    for g in state.grants.values() {
        if g.identity != caller.identity || &g.secret != secret || &g.project != project {
            continue;
        }
        reason = if g.revoked {
            DenyReason::GrantRevoked
        } else if g.ended.is_some() {
            DenyReason::GrantEnded
        } else if g.expires_at_ms.is_some_and(|e| now_ms >= e) {
            DenyReason::Expired
        } else if g.max_uses.is_some_and(|m| g.uses >= m) {
            DenyReason::Exhausted
        } else if g.host.is_some() && g.host != caller.host {
            DenyReason::GrantHost
        } else if g.uid.is_some_and(|u| !caller.is_uid_on(g.host.as_ref(), u)) {
            DenyReason::GrantUid
        } else {
            return Ok(());
        };
    }
    Err(reason)
}

/// Refuses a host that is not enrolled (or revoked): identities are bound only to hosts
/// that can call.
fn enrolled_host(state: &State, host: &Name) -> Result<(), Refusal> {
    match state.hosts.get(host) {
        Some(h) if h.revoked => Err(Refusal::Revoked(Thing::Host, host.to_string())),
        Some(h) if h.cert_sha256.is_some() => Ok(()),
        Some(_) => Err(Refusal::Invalid(format!(
            "host {host} is invited but has not enrolled yet"
        ))),
        None => Err(Refusal::Unknown(Thing::Host, host.to_string())),
    }
}

/// The `run_ended` events for every run of `identity`.
fn runs_of(state: &State, identity: &Identity, reason: &str, now_ms: u64) -> Vec<Event> {
    state
        .runs
        .iter()
        .filter(|(_, r)| &r.identity == identity)
        .map(|(run, _)| Event::RunEnded {
            run: *run,
            reason: reason.into(),
            at_ms: now_ms,
        })
        .collect()
}

/// The most secrets one [`Command::ResolveAll`] may name (as many as a run or a watch holds).
pub const MAX_RESOLVE_ALL: usize = 64;

/// Whether `member` is the only admin member.
fn last_admin(state: &State, member: &Name) -> bool {
    !state.members.iter().any(|(n, m)| m.admin && n != member)
}

fn decide_grant(
    state: &State,
    caller: &Caller,
    spec: &GrantSpec,
    now_ms: u64,
) -> Result<Vec<Event>, Refusal> {
    // The kind is always said: a bare name once meant "the agent if there is one", so an
    // agent named like a member silently took that member's grants.
    let identity = match &spec.identity {
        IdentityRef::Qualified(i) => i.clone(),
        IdentityRef::Bare(n) => return Err(Refusal::KindNeeded(n.clone())),
    };
    if !state.identity_exists(&identity) {
        return Err(Refusal::Unknown(Thing::Identity, spec.identity.to_string()));
    }
    if let Identity::Agent(n) = &identity
        && state.agents.get(n).is_some_and(|a| a.revoked)
    {
        return Err(Refusal::Revoked(Thing::Agent, n.to_string()));
    }
    let Some(s) = state.secrets.get(&spec.secret) else {
        return Err(Refusal::Unknown(Thing::Secret, spec.secret.to_string()));
    };
    if s.deleted {
        return Err(Refusal::Deleted(spec.secret.clone()));
    }
    if s.revoked {
        return Err(Refusal::Revoked(Thing::Secret, spec.secret.to_string()));
    }
    if !s.projects.contains(&spec.project) {
        return Err(Refusal::NotInProject {
            secret: spec.secret.clone(),
            project: spec.project.clone(),
        });
    }
    if spec.max_uses == Some(0) || spec.rate_per_min == Some(0) {
        return Err(Refusal::ZeroLimit);
    }
    if let Some(h) = &spec.host {
        enrolled_host(state, h)?;
    }
    Ok(vec![Event::GrantCreated {
        grant: state.next_grant.max(1),
        identity,
        secret: spec.secret.clone(),
        project: spec.project.clone(),
        expires_at_ms: spec.ttl_ms.map(|t| now_ms.saturating_add(t)),
        max_uses: spec.max_uses,
        rate_per_min: spec.rate_per_min,
        uid: spec.uid,
        host: spec.host.clone(),
        by: by(caller),
    }])
}
