//! Events: what happened, in the past tense. The log stores each as a JSON body under a kind
//! number; [`EventKind`] is the one table of kinds (number, name, class) from which the
//! log envelope, the CLI, the console and the JSON export all take theirs.

use serde::{Deserialize, Serialize};

use super::names::{Actor, Identity, Name, ProjectName, SecretName, empty_as_none};
use super::profile::Profile;

/// Defines [`EventKind`] from one table: variant, kind number in the envelope, name, and
/// whether the body may carry secret material. The numbers are in every log: never reuse
/// or renumber one.
macro_rules! event_kinds {
    ($($variant:ident = $number:literal, $name:literal, $class:ident;)*) => {
        /// The kind of an event, as recorded in the log envelope.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum EventKind {
            $(
                #[doc = concat!("`", $name, "` (kind ", stringify!($number), ")")]
                $variant,
            )*
        }

        impl EventKind {
            /// Every kind, in number order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The kind number in the log envelope.
            pub const fn number(self) -> u16 {
                match self { $(EventKind::$variant => $number,)* }
            }

            /// The kind's name, as written in event bodies (`"type"`) and shown everywhere.
            pub const fn name(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* }
            }

            /// Whether bodies of this kind may carry secret material: committed with a salt
            /// and left out of exports.
            pub const fn class(self) -> scopehold_log::BodyClass {
                match self { $(EventKind::$variant => scopehold_log::BodyClass::$class,)* }
            }

            /// The kind with this envelope number.
            pub fn from_number(n: u16) -> Option<Self> {
                match n { $($number => Some(EventKind::$variant),)* _ => None }
            }

            /// The kind with this name.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($name => Some(EventKind::$variant),)* _ => None }
            }
        }
    };
}

event_kinds! {
    ProjectCreated = 1, "project_created", Public;
    MemberAdded = 2, "member_added", Public;
    AgentCreated = 3, "agent_created", Public;
    AgentCredentialIssued = 4, "agent_credential_issued", Secret;
    AgentRevoked = 5, "agent_revoked", Public;
    SecretStored = 6, "secret_stored", Public;
    SecretVersionSealed = 7, "secret_version_sealed", Secret;
    SecretRotated = 8, "secret_rotated", Public;
    SecretRevoked = 9, "secret_revoked", Public;
    GrantCreated = 10, "grant_created", Public;
    GrantRevoked = 11, "grant_revoked", Public;
    SecretResolved = 12, "secret_resolved", Public;
    ResolutionDenied = 13, "resolution_denied", Public;
    UnauthenticatedDenied = 14, "unauthenticated_denied", Public;
    DenialsCounted = 15, "denials_counted", Public;
    ProviderSet = 16, "provider_set", Public;
    ProxyCall = 17, "proxy_call", Public;
    ProxyDenied = 18, "proxy_denied", Public;
    ProxyResults = 19, "proxy_results", Public;
    RunStarted = 20, "run_started", Public;
    RunEnded = 21, "run_ended", Public;
    MemberRemoved = 22, "member_removed", Public;
    MemberAdminSet = 23, "member_admin_set", Public;
    SecretAssigned = 24, "secret_assigned", Public;
    SecretUnassigned = 25, "secret_unassigned", Public;
    SecretDeleted = 26, "secret_deleted", Public;
    HostInvited = 27, "host_invited", Secret;
    HostEnrolled = 28, "host_enrolled", Public;
    HostRevoked = 29, "host_revoked", Public;
    HostJoinDenied = 30, "host_join_denied", Public;
    HostRenewed = 31, "host_renewed", Public;
}

impl EventKind {
    /// The name of a kind number, `unknown` for a number no release has written.
    pub fn name_of(number: u16) -> &'static str {
        Self::from_number(number).map_or("unknown", Self::name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A sealed value as stored in the log: hex fields in a body of the secret-bearing class.
/// Only the daemon's master key opens it (`daemon::seal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The version's data key, wrapped under the master key.
    pub wrapped_key: String,
    /// The nonce of the wrapping.
    pub key_nonce: String,
    /// The nonce of the value's encryption.
    pub nonce: String,
    /// The value, encrypted under the data key.
    pub ciphertext: String,
}

/// The keyed hash of an agent's credential, written as 64 hex characters. Useless without
/// the master key that keyed it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CredentialHash(pub [u8; 32]);

impl std::fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialHash(..)")
    }
}

impl Serialize for CredentialHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for CredentialHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut h = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut h)
            .map_err(|_| serde::de::Error::custom("malformed credential hash"))?;
        Ok(Self(h))
    }
}

/// The outcome of one proxied call, recorded after its response ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyResult {
    /// The sequence number of the call's `proxy_call` event.
    pub call: u64,
    /// The upstream's status (502 when it could not be reached or failed mid-way, with
    /// `error` saying so).
    pub status: u16,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes sent back.
    pub bytes_down: u64,
    /// From the decision to the response's last byte, in microseconds.
    pub duration_us: u64,
    /// What went wrong, if the call did not complete (fixed text, never upstream data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything that can happen. The serde tag is the kind's name in [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(missing_docs)] // The fields say what they are; the variants are documented.
pub enum Event {
    /// A project was created.
    ProjectCreated { project: ProjectName, by: Actor },
    /// A member (a human, by uid) was added.
    MemberAdded {
        member: Name,
        uid: u32,
        admin: bool,
        /// The enrolled host the uid is on; absent: the hub's own host (the local socket).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Name>,
        by: Actor,
    },
    /// An agent was created (its credential follows in `AgentCredentialIssued`).
    AgentCreated {
        agent: Name,
        uid: Option<u32>,
        /// The enrolled host it must call from, if any (with `uid`: that uid on that host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Name>,
        by: Actor,
    },
    /// Secret-bearing class: the keyed hash of the agent's credential.
    AgentCredentialIssued {
        agent: Name,
        credential_hash: CredentialHash,
        by: Actor,
    },
    /// An agent was revoked.
    AgentRevoked { agent: Name, by: Actor },
    /// A secret was stored and assigned to projects (its value follows, sealed).
    SecretStored {
        secret: SecretName,
        projects: Vec<ProjectName>,
        by: Actor,
    },
    /// Secret-bearing class: the sealed value of one version.
    SecretVersionSealed {
        secret: SecretName,
        version: u32,
        sealed: Sealed,
    },
    /// A secret's sealed new version became current.
    SecretRotated {
        secret: SecretName,
        version: u32,
        /// Until when the previous version stays resolvable (ms since the epoch).
        grace_until_ms: Option<u64>,
        by: Actor,
    },
    /// A secret was revoked: no more resolutions.
    SecretRevoked { secret: SecretName, by: Actor },
    /// A grant was created.
    GrantCreated {
        grant: u64,
        identity: Identity,
        secret: SecretName,
        project: ProjectName,
        expires_at_ms: Option<u64>,
        max_uses: Option<u64>,
        rate_per_min: Option<u32>,
        uid: Option<u32>,
        /// The enrolled host its callers must call from (with `uid`: that uid there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Name>,
        by: Actor,
    },
    /// A grant was revoked.
    GrantRevoked { grant: u64, by: Actor },
    /// A secret's value was handed out under a grant.
    SecretResolved {
        identity: Identity,
        secret: SecretName,
        version: u32,
        project: ProjectName,
        grant: u64,
        pid: Option<i32>,
        uid: u32,
        /// The enrolled host the caller called from (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        at_ms: u64,
    },
    /// A resolution was refused. Secret and project are absent (`""`) when the caller was
    /// refused before its request was read (a revoked agent).
    ResolutionDenied {
        identity: Identity,
        #[serde(with = "empty_as_none")]
        secret: Option<SecretName>,
        #[serde(with = "empty_as_none")]
        project: Option<ProjectName>,
        reason: String,
        pid: Option<i32>,
        uid: u32,
        /// The enrolled host the caller called from (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        at_ms: u64,
    },
    /// Requests with no valid credential from one peer uid, counted: one event stands for
    /// `count` denials, so a flood cannot fill the disk.
    UnauthenticatedDenied {
        uid: u32,
        pid: Option<i32>,
        /// The enrolled host the caller called from (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        count: u64,
        at_ms: u64,
    },
    /// Denials not recorded one by one, so that a flood cannot fill the disk: the first
    /// denial of a caller for a reason is recorded as it happens; repeats within the window
    /// after it are counted, and the count is recorded here when the window ends (or the
    /// daemon stops). `identity` is absent for callers with no valid credential (then `uid`
    /// says who), and both are absent for the overflow of many distinct callers at once.
    DenialsCounted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<Identity>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        reason: String,
        /// The host of the first counted caller (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        count: u64,
        from_ms: u64,
        to_ms: u64,
    },
    /// A provider profile was added or changed (it overrides a built-in of the same name).
    ProviderSet {
        provider: Name,
        profile: Profile,
        by: Actor,
    },
    /// A request was let through the injecting proxy: recorded (and durable) before the key
    /// was sent. The outcome follows in a `proxy_results` event naming this event's number.
    /// `path` is the request's path with the query's values left out.
    ProxyCall {
        identity: Identity,
        secret: SecretName,
        version: u32,
        project: ProjectName,
        grant: u64,
        host: String,
        method: String,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<u64>,
        pid: Option<i32>,
        uid: u32,
        /// The enrolled host the caller called from (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        at_ms: u64,
    },
    /// A request to the proxy was refused (nothing was sent upstream).
    ProxyDenied {
        identity: Identity,
        secret: SecretName,
        project: ProjectName,
        host: String,
        method: String,
        path: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<u64>,
        pid: Option<i32>,
        uid: u32,
        /// The enrolled host the caller called from (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        at_ms: u64,
    },
    /// The outcomes of proxied calls, batched: every call's status, bytes and duration, by
    /// the number of its `proxy_call` event.
    ProxyResults {
        results: Vec<ProxyResult>,
        at_ms: u64,
    },
    /// `scopehold run --proxy` started: placeholders for these secrets are valid through the
    /// proxy, for this identity and uid, until the run ends.
    RunStarted {
        run: u64,
        identity: Identity,
        project: ProjectName,
        secrets: Vec<SecretName>,
        pid: Option<i32>,
        uid: u32,
        /// The enrolled host the caller called from (through its edge); absent: this host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_host: Option<Name>,
        at_ms: u64,
    },
    /// A run ended: its placeholders are dead.
    RunEnded {
        run: u64,
        reason: String,
        at_ms: u64,
    },
    /// A member was removed: their uid no longer identifies them, and their grants ended
    /// (a member later added under the same name does not get them back).
    MemberRemoved { member: Name, by: Actor },
    /// A member's admin right was given or taken away.
    MemberAdminSet {
        member: Name,
        admin: bool,
        by: Actor,
    },
    /// An existing secret was added to another project.
    SecretAssigned {
        secret: SecretName,
        project: ProjectName,
        by: Actor,
    },
    /// A secret was taken out of a project: its grants in that project ended (adding it
    /// back does not revive them).
    SecretUnassigned {
        secret: SecretName,
        project: ProjectName,
        by: Actor,
    },
    /// A secret was deleted by crypto-shredding: `erased` lists the sequence numbers of its
    /// `secret_version_sealed` events, whose bodies (the sealed values and the only copies of
    /// their wrapped data keys) the daemon then erases from the log. The events stay, so the
    /// chain still verifies, and this one says who destroyed what. The name is never reused.
    SecretDeleted {
        secret: SecretName,
        erased: Vec<u64>,
        by: Actor,
    },
    /// A host was invited to enrol with the hub: `token_hash` is the keyed hash of its
    /// one-time join token (useless without the master key), good until `expires_ms`. An
    /// invitation replaces any earlier one for the host.
    HostInvited {
        host: Name,
        token_hash: CredentialHash,
        expires_ms: u64,
        by: Actor,
    },
    /// A host enrolled with its join token, which is spent: the hub certified the key the host
    /// made for itself (the key never left the host). Only the certificate with this SHA-256
    /// (hex, of its DER) identifies the host from now on.
    HostEnrolled {
        host: Name,
        cert_sha256: String,
        not_after_ms: u64,
        at_ms: u64,
    },
    /// An enrolled host replaced its certificate before it expired: it made a new key, the hub
    /// certified it, and only the certificate with this SHA-256 identifies the host from now on
    /// (the old one's connections are cut).
    HostRenewed {
        host: Name,
        cert_sha256: String,
        not_after_ms: u64,
        at_ms: u64,
    },
    /// A host was revoked: its certificate opens no connection, its live connections were cut.
    HostRevoked { host: Name, by: Actor },
    /// An enrolment was refused at the hub's listener: `host` is the invited host whose
    /// token it was (an expired one), absent for a token of nobody's; `peer` is the network
    /// address it came from. Repeats from one address are counted (`denials_counted`).
    HostJoinDenied {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Name>,
        reason: String,
        peer: String,
        at_ms: u64,
    },
}

/// Why a log body is not an event of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not a well-formed event (serde's message names the field, not the data).
    #[error("undecodable event body: {0}")]
    Body(String),
    /// The body is an event of another kind than its envelope says.
    #[error("event kind {envelope} does not match its body ({body})")]
    KindMismatch {
        /// The kind number in the envelope.
        envelope: u16,
        /// The kind of the decoded body.
        body: EventKind,
    },
}

impl Event {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ProjectCreated { .. } => EventKind::ProjectCreated,
            Event::MemberAdded { .. } => EventKind::MemberAdded,
            Event::AgentCreated { .. } => EventKind::AgentCreated,
            Event::AgentCredentialIssued { .. } => EventKind::AgentCredentialIssued,
            Event::AgentRevoked { .. } => EventKind::AgentRevoked,
            Event::SecretStored { .. } => EventKind::SecretStored,
            Event::SecretVersionSealed { .. } => EventKind::SecretVersionSealed,
            Event::SecretRotated { .. } => EventKind::SecretRotated,
            Event::SecretRevoked { .. } => EventKind::SecretRevoked,
            Event::GrantCreated { .. } => EventKind::GrantCreated,
            Event::GrantRevoked { .. } => EventKind::GrantRevoked,
            Event::SecretResolved { .. } => EventKind::SecretResolved,
            Event::ResolutionDenied { .. } => EventKind::ResolutionDenied,
            Event::UnauthenticatedDenied { .. } => EventKind::UnauthenticatedDenied,
            Event::DenialsCounted { .. } => EventKind::DenialsCounted,
            Event::ProviderSet { .. } => EventKind::ProviderSet,
            Event::ProxyCall { .. } => EventKind::ProxyCall,
            Event::ProxyDenied { .. } => EventKind::ProxyDenied,
            Event::ProxyResults { .. } => EventKind::ProxyResults,
            Event::RunStarted { .. } => EventKind::RunStarted,
            Event::RunEnded { .. } => EventKind::RunEnded,
            Event::MemberRemoved { .. } => EventKind::MemberRemoved,
            Event::MemberAdminSet { .. } => EventKind::MemberAdminSet,
            Event::SecretAssigned { .. } => EventKind::SecretAssigned,
            Event::SecretUnassigned { .. } => EventKind::SecretUnassigned,
            Event::SecretDeleted { .. } => EventKind::SecretDeleted,
            Event::HostInvited { .. } => EventKind::HostInvited,
            Event::HostEnrolled { .. } => EventKind::HostEnrolled,
            Event::HostRenewed { .. } => EventKind::HostRenewed,
            Event::HostRevoked { .. } => EventKind::HostRevoked,
            Event::HostJoinDenied { .. } => EventKind::HostJoinDenied,
        }
    }

    /// Whether the body may carry secret material (committed with a salt, left out of exports).
    pub fn is_secret_bearing(&self) -> bool {
        self.kind().class() == scopehold_log::BodyClass::Secret
    }

    /// The log entry for this event: its JSON body under its kind and class.
    pub fn to_entry(&self) -> Result<scopehold_log::Entry, scopehold_log::AppendError> {
        // Serialising an event cannot fail: every field is a string, number or option.
        let body = serde_json::to_vec(self).expect("events always serialise");
        if self.is_secret_bearing() {
            scopehold_log::Entry::secret(self.kind().number(), body)
        } else {
            Ok(scopehold_log::Entry::public(self.kind().number(), body))
        }
    }

    /// Decodes a log body recorded under `kind`.
    pub fn from_body(kind: u16, body: &[u8]) -> Result<Self, DecodeError> {
        let ev: Event =
            serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))?;
        if ev.kind().number() != kind {
            return Err(DecodeError::KindMismatch {
                envelope: kind,
                body: ev.kind(),
            });
        }
        Ok(ev)
    }

    /// The identity an event is about or by, for filtering (`log show --identity`): the
    /// caller of a resolution, the receiver of a grant, else whoever made the change.
    pub fn identity(&self) -> Option<String> {
        match self {
            Event::SecretResolved { identity, .. }
            | Event::ResolutionDenied { identity, .. }
            | Event::GrantCreated { identity, .. }
            | Event::ProxyCall { identity, .. }
            | Event::ProxyDenied { identity, .. }
            | Event::RunStarted { identity, .. } => Some(identity.to_string()),
            Event::DenialsCounted { identity, .. } => identity.as_ref().map(|i| i.to_string()),
            Event::ProjectCreated { by, .. }
            | Event::MemberAdded { by, .. }
            | Event::AgentCreated { by, .. }
            | Event::AgentCredentialIssued { by, .. }
            | Event::AgentRevoked { by, .. }
            | Event::SecretStored { by, .. }
            | Event::SecretRotated { by, .. }
            | Event::SecretRevoked { by, .. }
            | Event::GrantRevoked { by, .. }
            | Event::ProviderSet { by, .. }
            | Event::MemberRemoved { by, .. }
            | Event::MemberAdminSet { by, .. }
            | Event::SecretAssigned { by, .. }
            | Event::SecretUnassigned { by, .. }
            | Event::SecretDeleted { by, .. }
            | Event::HostInvited { by, .. }
            | Event::HostRevoked { by, .. } => Some(by.to_string()),
            Event::HostEnrolled { host, .. } | Event::HostRenewed { host, .. } => {
                Some(Identity::Host(host.clone()).to_string())
            }
            Event::HostJoinDenied { host, .. } => {
                host.as_ref().map(|h| Identity::Host(h.clone()).to_string())
            }
            Event::SecretVersionSealed { .. }
            | Event::UnauthenticatedDenied { .. }
            | Event::ProxyResults { .. }
            | Event::RunEnded { .. } => None,
        }
    }

    /// The secret an event is about, if any.
    pub fn secret(&self) -> Option<&SecretName> {
        match self {
            Event::SecretStored { secret, .. }
            | Event::SecretVersionSealed { secret, .. }
            | Event::SecretRotated { secret, .. }
            | Event::SecretRevoked { secret, .. }
            | Event::GrantCreated { secret, .. }
            | Event::SecretResolved { secret, .. }
            | Event::ProxyCall { secret, .. }
            | Event::ProxyDenied { secret, .. }
            | Event::SecretAssigned { secret, .. }
            | Event::SecretUnassigned { secret, .. }
            | Event::SecretDeleted { secret, .. } => Some(secret),
            Event::ResolutionDenied { secret, .. } => secret.as_ref(),
            _ => None,
        }
    }

    /// Whether the event records a refusal.
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            Event::ResolutionDenied { .. }
                | Event::UnauthenticatedDenied { .. }
                | Event::DenialsCounted { .. }
                | Event::ProxyDenied { .. }
                | Event::HostJoinDenied { .. }
        )
    }
}
