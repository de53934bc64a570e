//! The projection: the state that the log's events fold into.
//!
//! [`State::apply`] holds no decisions: it folds one event and refuses an impossible history
//! (a grant for a secret that does not exist, a version out of order), so a log that does
//! not make sense stops the daemon instead of being silently accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::event::{Event, Sealed};
use super::names::{Identity, Name, ProjectName, SecretName};
use super::profile::{Profile, builtins};

/// A member: a human, identified by their unix uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The uid the kernel reports for the member's processes.
    pub uid: u32,
    /// Whether the member may administer (store, grant, revoke...).
    pub admin: bool,
    /// The enrolled host the uid is on (a member elsewhere is a (host, uid) pair); `None`:
    /// the hub's own host, whose kernel reports the uid on the local socket.
    pub host: Option<Name>,
}

/// An agent: a program, identified by its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// If set, the agent is accepted only from processes running as this uid (on `host`).
    pub uid: Option<u32>,
    /// If set, the agent is accepted only through this enrolled host's edge. With `uid` and
    /// no host, the uid is one of the hub's own host.
    pub host: Option<Name>,
    /// The keyed hash of its current credential.
    pub credential_hash: Option<[u8; 32]>,
    /// Revoked agents are still recognised, so their attempts are denied by name.
    pub revoked: bool,
    /// When it last resolved a secret.
    pub last_used_ms: Option<u64>,
}

/// A provider secret and its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEntry {
    /// The projects it is assigned to.
    pub projects: BTreeSet<ProjectName>,
    /// The version resolutions get.
    pub current: u32,
    /// Every version's sealed value.
    pub versions: BTreeMap<u32, Sealed>,
    /// The previous version and until when it stays resolvable.
    pub grace: Option<(u32, u64)>,
    /// Revoked secrets resolve for nobody.
    pub revoked: bool,
    /// The sequence number of each version's `secret_version_sealed` event: what a deletion
    /// erases. Kept after the deletion (when `versions` is emptied), as the log keeps them.
    pub sealed_at: BTreeMap<u32, u64>,
    /// Deleted (crypto-shredded) secrets resolve for nobody, ever: their sealed values are
    /// gone, and their name is never reused.
    pub deleted: bool,
}

impl SecretEntry {
    /// The number the next sealed version takes.
    pub fn next_version(&self) -> u32 {
        self.sealed_at.keys().next_back().map_or(1, |v| v + 1)
    }
}

/// A grant: identity x secret x project, optionally narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who may resolve.
    pub identity: Identity,
    /// What (whichever version is current).
    pub secret: SecretName,
    /// In which project.
    pub project: ProjectName,
    /// After this, the grant is expired.
    pub expires_at_ms: Option<u64>,
    /// At most this many resolutions in all.
    pub max_uses: Option<u64>,
    /// At most this many resolutions in any minute.
    pub rate_per_min: Option<u32>,
    /// Only for callers running as this uid (on `host`; without it, on the hub's host).
    pub uid: Option<u32>,
    /// Only for callers through this enrolled host's edge.
    pub host: Option<Name>,
    /// Resolutions so far.
    pub uses: u64,
    /// Times of resolutions in the last minute (for the rate limit).
    pub recent: VecDeque<u64>,
    /// Revoked grants allow nothing.
    pub revoked: bool,
    /// Ended by a change to what it stood on (its member removed, its secret taken out of
    /// its project): it allows nothing, even if that change is undone later.
    pub ended: Option<GrantEnd>,
    /// When it was last used.
    pub last_used_ms: Option<u64>,
}

/// An enrolled (or invited) host: another machine whose edge daemon serves its agents
/// through this hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The keyed hash of the outstanding join token, until it is spent.
    pub token_hash: Option<[u8; 32]>,
    /// Until when the outstanding token may be spent.
    pub token_expires_ms: u64,
    /// The SHA-256 (hex) of the certificate the hub issued at enrolment: the only one that
    /// identifies the host.
    pub cert_sha256: Option<String>,
    /// When that certificate expires.
    pub not_after_ms: u64,
    /// When the host enrolled.
    pub enrolled_ms: Option<u64>,
    /// Revoked hosts open no connection (re-inviting one lets it enrol again, with a new
    /// certificate).
    pub revoked: bool,
}

/// Why a grant ended without being revoked itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEnd {
    /// Its member was removed.
    MemberRemoved,
    /// Its secret was taken out of its project.
    SecretUnassigned,
}

/// The projection: a pure fold over the log's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Every project.
    pub projects: BTreeSet<ProjectName>,
    /// Members by name.
    pub members: BTreeMap<Name, Member>,
    /// Agents by name.
    pub agents: BTreeMap<Name, Agent>,
    /// Agents by the keyed hash of their current credential: authentication is one lookup,
    /// whatever the number of agents. The hash is keyed by the master key, so a caller cannot
    /// choose probes that walk the map (and revoked agents stay in it, to be denied by name).
    pub agent_by_credential: HashMap<[u8; 32], Name>,
    /// Secrets by name.
    pub secrets: BTreeMap<SecretName, SecretEntry>,
    /// Grants by id.
    pub grants: BTreeMap<u64, Grant>,
    /// The id the next grant takes (at least 1).
    pub next_grant: u64,
    /// Provider profiles set by admins (they override the built-in of the same name).
    pub profiles: BTreeMap<Name, Profile>,
    /// Hosts invited or enrolled, by name.
    pub hosts: BTreeMap<Name, Host>,
    /// Runs under the proxy that have not ended.
    pub runs: BTreeMap<u64, Run>,
    /// The id the next run takes (at least 1).
    pub next_run: u64,
    /// Events folded so far, which is the sequence number the next one takes in the log:
    /// replay folds every event of the log in order, and the engine folds each event just
    /// before it submits it, in the same order, under one lock.
    pub applied: u64,
}

/// A `run --proxy` in progress: what its placeholders may be used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Who started it.
    pub identity: Identity,
    /// The project its grants are used in.
    pub project: ProjectName,
    /// The secrets it holds placeholders for.
    pub secrets: Vec<SecretName>,
    /// The uid it started from: its placeholders are refused from any other.
    pub uid: u32,
    /// The enrolled host it started from (`None`: this one).
    pub host: Option<Name>,
}

/// Why the log's history cannot be folded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("impossible history: {0}")]
pub struct ApplyError(pub String);

/// A minute, for rate limits.
pub(crate) const MINUTE_MS: u64 = 60_000;

impl State {
    /// Whether the identity names an existing agent or member.
    pub fn identity_exists(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Agent(n) => self.agents.contains_key(n),
            Identity::Member(n) => self.members.contains_key(n),
            // Hosts hold no grants: they carry their agents' and members' calls.
            Identity::Host(_) => false,
        }
    }

    /// The profile of a provider namespace: an admin's, else the built-in.
    pub fn profile(&self, provider: &str) -> Option<&Profile> {
        match self.profiles.iter().find(|(n, _)| n.as_str() == provider) {
            Some((_, p)) => Some(p),
            None => builtins().get(provider),
        }
    }

    /// Every profile in effect (an admin's, else the built-in), with its provider and
    /// whether it is a built-in; borrowed, so the proxy can ask per call.
    pub fn profiles_in_effect(&self) -> impl Iterator<Item = (&str, &Profile, bool)> {
        let set = self.profiles.iter().map(|(n, p)| (n.as_str(), p, false));
        let builtin = builtins()
            .iter()
            .filter(|(n, _)| !self.profiles.keys().any(|k| k.as_str() == **n))
            .map(|(n, p)| (*n, p, true));
        set.chain(builtin)
    }

    fn use_grant(&mut self, identity: &Identity, grant: u64, at_ms: u64) -> Result<(), ApplyError> {
        let Some(g) = self.grants.get_mut(&grant) else {
            return Err(ApplyError(format!("use of unknown grant {grant}")));
        };
        g.uses += 1;
        while g.recent.front().is_some_and(|t| *t + MINUTE_MS <= at_ms) {
            g.recent.pop_front();
        }
        g.recent.push_back(at_ms);
        g.last_used_ms = Some(at_ms);
        if let Identity::Agent(n) = identity
            && let Some(a) = self.agents.get_mut(n)
        {
            a.last_used_ms = Some(at_ms);
        }
        Ok(())
    }

    /// The member a uid belongs to on a host (`None`: the hub's own host). A uid reported by
    /// one host's edge never matches a member of another host, or of this one.
    pub fn member_by_uid(&self, host: Option<&Name>, uid: u32) -> Option<(&Name, &Member)> {
        self.members
            .iter()
            .find(|(_, m)| m.uid == uid && m.host.as_ref() == host)
    }

    /// Folds one event. Holds no decisions; refuses what cannot have happened.
    pub fn apply(&mut self, ev: &Event) -> Result<(), ApplyError> {
        self.fold(ev)?;
        self.applied += 1;
        Ok(())
    }

    /// Folds a `secret_version_sealed` event whose body was erased from the log (replay
    /// only): it was the next version of `secret`, which a later `secret_deleted` event lists
    /// it under (the caller has checked that). Its value is gone; its place is kept.
    pub fn apply_erased_seal(&mut self, secret: &SecretName) -> Result<(), ApplyError> {
        let Some(s) = self.secrets.get_mut(secret) else {
            return Err(ApplyError(format!(
                "erased sealed value for unknown secret {secret}"
            )));
        };
        if s.deleted {
            return Err(ApplyError(format!(
                "sealed value for secret {secret} after its deletion"
            )));
        }
        let version = s.next_version();
        s.sealed_at.insert(version, self.applied);
        if s.current == 0 {
            s.current = version;
        }
        self.applied += 1;
        Ok(())
    }

    fn fold(&mut self, ev: &Event) -> Result<(), ApplyError> {
        let bad = |s: String| Err(ApplyError(s));
        match ev {
            Event::ProjectCreated { project, .. } => {
                if !self.projects.insert(project.clone()) {
                    return bad(format!("project {project} created twice"));
                }
            }
            Event::MemberAdded {
                member,
                uid,
                admin,
                host,
                ..
            } => {
                if host.as_ref().is_some_and(|h| !self.hosts.contains_key(h)) {
                    return bad(format!("member {member} on unknown host"));
                }
                self.members.insert(
                    member.clone(),
                    Member {
                        uid: *uid,
                        admin: *admin,
                        host: host.clone(),
                    },
                );
            }
            Event::AgentCreated {
                agent, uid, host, ..
            } => {
                if self.agents.contains_key(agent) {
                    return bad(format!("agent {agent} created twice"));
                }
                if host.as_ref().is_some_and(|h| !self.hosts.contains_key(h)) {
                    return bad(format!("agent {agent} bound to unknown host"));
                }
                self.agents.insert(
                    agent.clone(),
                    Agent {
                        uid: *uid,
                        host: host.clone(),
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
                if let Some(old) = a.credential_hash.replace(credential_hash.0)
                    && self.agent_by_credential.get(&old) == Some(agent)
                {
                    self.agent_by_credential.remove(&old);
                }
                self.agent_by_credential
                    .insert(credential_hash.0, agent.clone());
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
                if self.secrets.get(secret).is_some_and(|s| s.deleted) {
                    return bad(format!("secret {secret} stored after its deletion"));
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
                        sealed_at: BTreeMap::new(),
                        deleted: false,
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
                if s.deleted {
                    return bad(format!(
                        "sealed value for secret {secret} after its deletion"
                    ));
                }
                let expected = s.next_version();
                if *version != expected {
                    return bad(format!(
                        "secret {secret}: version {version} sealed where {expected} was next"
                    ));
                }
                s.versions.insert(*version, sealed.clone());
                s.sealed_at.insert(*version, self.applied);
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
                if s.deleted {
                    return bad(format!("rotation of secret {secret} after its deletion"));
                }
                if !s.sealed_at.contains_key(version) || *version <= s.current {
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
                host,
                ..
            } => {
                if self.secrets.get(secret).is_none_or(|s| s.deleted)
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
                        host: host.clone(),
                        uses: 0,
                        recent: VecDeque::new(),
                        revoked: false,
                        ended: None,
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
            }
            | Event::ProxyCall {
                identity,
                grant,
                at_ms,
                ..
            } => self.use_grant(identity, *grant, *at_ms)?,
            Event::ProviderSet {
                provider, profile, ..
            } => {
                self.profiles.insert(provider.clone(), profile.clone());
            }
            Event::RunStarted {
                run,
                identity,
                project,
                secrets,
                uid,
                from_host,
                ..
            } => {
                if self.runs.contains_key(run) || *run < self.next_run {
                    return bad(format!("run {run} started twice"));
                }
                self.runs.insert(
                    *run,
                    Run {
                        identity: identity.clone(),
                        project: project.clone(),
                        secrets: secrets.clone(),
                        uid: *uid,
                        host: from_host.clone(),
                    },
                );
                self.next_run = run + 1;
            }
            Event::RunEnded { run, .. } => {
                if self.runs.remove(run).is_none() {
                    return bad(format!("run {run} ended but was not running"));
                }
            }
            Event::MemberRemoved { member, .. } => {
                if self.members.remove(member).is_none() {
                    return bad(format!("removal of unknown member {member}"));
                }
                let who = Identity::Member(member.clone());
                for g in self.grants.values_mut().filter(|g| g.identity == who) {
                    g.ended.get_or_insert(GrantEnd::MemberRemoved);
                }
            }
            Event::MemberAdminSet { member, admin, .. } => {
                let Some(m) = self.members.get_mut(member) else {
                    return bad(format!("admin change of unknown member {member}"));
                };
                m.admin = *admin;
            }
            Event::SecretAssigned {
                secret, project, ..
            } => {
                if !self.projects.contains(project) {
                    return bad(format!(
                        "secret {secret} assigned to unknown project {project}"
                    ));
                }
                let Some(s) = self.secrets.get_mut(secret) else {
                    return bad(format!("assignment of unknown secret {secret}"));
                };
                s.projects.insert(project.clone());
            }
            Event::SecretUnassigned {
                secret, project, ..
            } => {
                let Some(s) = self.secrets.get_mut(secret) else {
                    return bad(format!("unassignment of unknown secret {secret}"));
                };
                if !s.projects.remove(project) {
                    return bad(format!(
                        "secret {secret} taken out of {project}, where it was not"
                    ));
                }
                for g in self
                    .grants
                    .values_mut()
                    .filter(|g| &g.secret == secret && &g.project == project)
                {
                    g.ended.get_or_insert(GrantEnd::SecretUnassigned);
                }
            }
            Event::SecretDeleted { secret, erased, .. } => {
                let Some(s) = self.secrets.get_mut(secret) else {
                    return bad(format!("deletion of unknown secret {secret}"));
                };
                if s.deleted {
                    return bad(format!("secret {secret} deleted twice"));
                }
                // Exactly its sealed versions, each once: a deletion cannot stand for the
                // erasure of anything else.
                let mut listed = erased.clone();
                listed.sort_unstable();
                if !listed.iter().copied().eq(s.sealed_at.values().copied()) {
                    return bad(format!(
                        "the deletion of secret {secret} lists other events than its sealed versions"
                    ));
                }
                s.deleted = true;
                // The sealed values are gone from the log; none is kept in memory either.
                s.versions.clear();
                s.grace = None;
            }
            Event::HostInvited {
                host,
                token_hash,
                expires_ms,
                ..
            } => {
                let h = self.hosts.entry(host.clone()).or_insert(Host {
                    token_hash: None,
                    token_expires_ms: 0,
                    cert_sha256: None,
                    not_after_ms: 0,
                    enrolled_ms: None,
                    revoked: false,
                });
                // A new invitation replaces an outstanding one.
                h.token_hash = Some(token_hash.0);
                h.token_expires_ms = *expires_ms;
            }
            Event::HostEnrolled {
                host,
                cert_sha256,
                not_after_ms,
                at_ms,
            } => {
                let Some(h) = self.hosts.get_mut(host) else {
                    return bad(format!("enrolment of unknown host {host}"));
                };
                if h.token_hash.take().is_none() {
                    return bad(format!("host {host} enrolled without an invitation"));
                }
                h.cert_sha256 = Some(cert_sha256.clone());
                h.not_after_ms = *not_after_ms;
                h.enrolled_ms = Some(*at_ms);
                h.revoked = false;
            }
            Event::HostRenewed {
                host,
                cert_sha256,
                not_after_ms,
                ..
            } => {
                let Some(h) = self.hosts.get_mut(host) else {
                    return bad(format!("renewal of unknown host {host}"));
                };
                if h.cert_sha256.is_none() || h.revoked {
                    return bad(format!("renewal of host {host}, which is not enrolled"));
                }
                h.cert_sha256 = Some(cert_sha256.clone());
                h.not_after_ms = *not_after_ms;
            }
            Event::HostRevoked { host, .. } => {
                let Some(h) = self.hosts.get_mut(host) else {
                    return bad(format!("revocation of unknown host {host}"));
                };
                h.revoked = true;
                h.token_hash = None;
            }
            Event::ResolutionDenied { .. }
            | Event::HostJoinDenied { .. }
            | Event::UnauthenticatedDenied { .. }
            | Event::DenialsCounted { .. }
            | Event::ProxyDenied { .. }
            | Event::ProxyResults { .. } => {}
        }
        Ok(())
    }
}
