//! Request and response bodies: one serde type each, shared by the server, the client, the
//! CLI and the console. Names arrive typed, so a malformed name is refused where the body is
//! decoded. Secret values and credentials travel in [`SecretString`], which zeroizes its
//! buffer on drop and never prints.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::domain::{Identity, IdentityRef, Name, ProjectName, SecretName};

/// A secret value or a credential: zeroized when dropped, `Debug` without the content.
///
/// Decoding copies the JSON string straight from the request buffer into a zeroizing
/// buffer of exact size. (A value with JSON escapes passes through serde_json's scratch
/// buffer first, which is not wiped; provider API keys do not contain escapes.)
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a value already in a zeroizing buffer.
    pub fn new(s: Zeroizing<String>) -> Self {
        Self(s)
    }
    /// The value, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The zeroizing buffer, moved out.
    pub fn into_inner(self) -> Zeroizing<String> {
        self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(..)")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretString, E> {
                let mut s = Zeroizing::new(String::with_capacity(v.len()));
                s.push_str(v);
                Ok(SecretString(s))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretString, E> {
                Ok(SecretString(Zeroizing::new(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A body for requests that carry none (GET routes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// An error: `{"error":{"code":...,"message":...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl From<&super::error::ApiError> for ErrorBody {
    fn from(e: &super::error::ApiError) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: e.code().to_string(),
                message: e.to_string(),
            },
        }
    }
}

/// The code to act on and the message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable: `denied`, `unauthenticated`, `rate_limited`, `log_unavailable`...
    pub code: String,
    /// For people.
    pub message: String,
}

/// `POST /v1/resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// `provider/name`.
    pub secret: SecretName,
    /// The project it is asked for in.
    pub project: ProjectName,
    /// A version still in its grace period.
    pub version: Option<u32>,
}

/// The answer to a resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveResponse {
    /// The value.
    pub value: SecretString,
    /// Its version.
    pub version: u32,
    /// The log event that recorded the resolution.
    pub event: u64,
}

/// `POST /v1/resolve/all`: several secrets, all or nothing (`run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveAllRequest {
    /// `provider/name` each (current versions).
    pub secrets: Vec<SecretName>,
    /// The project they are asked for in.
    pub project: ProjectName,
}

/// The answer to [`ResolveAllRequest`]: every value, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveAllResponse {
    /// The values.
    pub values: Vec<ResolvedValue>,
}

/// One value of a [`ResolveAllResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedValue {
    /// The secret.
    pub secret: SecretName,
    /// The value.
    pub value: SecretString,
    /// Its version.
    pub version: u32,
    /// The log event that recorded its resolution.
    pub event: u64,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoamiResponse {
    /// Who the daemon takes the caller for.
    pub identity: Identity,
    /// The caller's uid, from the kernel.
    pub uid: u32,
    /// The caller's grants that are not revoked.
    pub grants: Vec<WhoamiGrant>,
    /// The caller's pid, from the kernel, when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Whether the daemon takes the caller for an admin member (admin routes are open to it).
    #[serde(default)]
    pub admin: bool,
}

/// `GET /v1/status`: what the daemon is and holds, for `scopehold status` and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The daemon's pid.
    pub pid: u32,
    /// When the daemon started (ms since the epoch), if it knows (an engine run inside a
    /// test does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// The log.
    pub log: HealthLog,
    /// Whether the keys in the state directory are sealed under a passphrase.
    pub keys_sealed: bool,
    /// The uid the daemon runs as.
    pub daemon_uid: u32,
    /// The injecting proxy's loopback listener (`--proxy-listen`), if there is one; the proxy
    /// is always served on the socket under `/v1/proxy/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_listen: Option<String>,
    /// Free space on the log's file system against the reserve under which only
    /// revocations are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<StatusDisk>,
    /// How many of each thing the state holds: for admin members only (absent for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<StatusCounts>,
    /// The log's group commits since the daemon started: for admin members only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<StatusCommits>,
}

/// Group commits since start: how well appends share an fdatasync (benchmarks compare a raw
/// write+fdatasync ceiling of the same batch sizes against it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCommits {
    /// Events appended.
    pub events: u64,
    /// Group commits (one write and one fdatasync each).
    pub batches: u64,
    /// Bytes written to segments.
    pub bytes: u64,
}

/// The log's file system, as the daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDisk {
    /// Bytes available to the daemon.
    pub free_bytes: u64,
    /// Below this, only revocations are logged (503 `disk_reserve` for everything else).
    pub reserve_bytes: u64,
    /// Whether free space is under the reserve now (as of the last check, every second).
    pub under_reserve: bool,
}

/// Counts of the projection, for `scopehold status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Projects.
    pub projects: usize,
    /// Secrets, revoked ones included.
    pub secrets: usize,
    /// Of them, revoked.
    pub secrets_revoked: usize,
    /// Agents, revoked ones included.
    pub agents: usize,
    /// Of them, revoked.
    pub agents_revoked: usize,
    /// Members.
    pub members: usize,
    /// Of them, admins.
    pub admins: usize,
    /// Grants, revoked ones included.
    pub grants: usize,
    /// Of them, revoked.
    pub grants_revoked: usize,
    /// `run --proxy` runs in progress.
    pub runs: usize,
}

/// One grant of the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoamiGrant {
    /// Its id.
    pub id: u64,
    /// The secret.
    pub secret: SecretName,
    /// The project.
    pub project: ProjectName,
    /// Its effective state (`domain::GrantState::name`): `active`, `expired`...
    #[serde(default)]
    pub state: String,
    /// Why, in words.
    #[serde(default)]
    pub why: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok`, or `log_unavailable` when the log cannot be written.
    pub status: String,
    /// The log.
    pub log: HealthLog,
    /// The daemon process's own protections (absent for an engine run inside a test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Protections>,
    /// What the set-up protects, and where it cannot.
    pub custody: Custody,
}

/// What the daemon can say about its own custody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Custody {
    /// The uid the daemon runs as.
    pub daemon_uid: u32,
    /// Whether the keys in the state directory are sealed under a passphrase.
    pub keys_sealed: bool,
    /// Agents that have called from the daemon's own uid: they can read whatever the daemon's
    /// uid can read on disk (the state directory, and with unsealed keys every secret). The one
    /// set-up nothing on disk protects against; run agents under their own uids.
    pub agents_sharing_the_daemon_uid: Vec<Name>,
}

/// The log's state in `/v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthLog {
    /// Events in the log.
    pub events: u64,
    /// The head hash, hex.
    pub head: String,
    /// The size the last signed checkpoint covers.
    pub checkpoint_size: u64,
    /// Why the log cannot be written, if it cannot.
    pub error: Option<String>,
    /// The PostgreSQL store the log is kept in (`daemon --store`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<HealthStore>,
}

/// The log's store in `/v1/health` and `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStore {
    /// Where it is (host, database and user; never a password).
    pub at: String,
    /// Why it cannot be reached now, while a commit waits for it.
    pub unreachable: Option<String>,
    /// Group commits since the daemon started (one transaction each).
    pub commits: u64,
    /// The events in them.
    pub events: u64,
}

/// The daemon process's protections against processes of its own uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protections {
    /// `PR_SET_DUMPABLE` is still 1: same-uid processes can attach and read memory.
    pub dumpable: bool,
    /// `RLIMIT_CORE` is not 0: a crash may write a core file.
    pub core_dumps: bool,
    /// All pages locked in memory (never written to swap).
    pub memory_locked: bool,
    /// Why memory is not locked, when it is not.
    pub memory_lock_note: Option<String>,
}

/// `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreateRequest {
    /// The project.
    pub name: ProjectName,
}

/// A project was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectCreated {
    /// The project.
    pub project: ProjectName,
    /// The event that recorded it.
    pub event: u64,
}

/// `GET /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectList {
    /// Every project.
    pub projects: Vec<ProjectName>,
}

/// `POST /v1/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretPutRequest {
    /// `provider/name`.
    pub name: SecretName,
    /// The projects it is assigned to.
    pub projects: Vec<ProjectName>,
    /// Its value.
    pub value: SecretString,
}

/// `POST /v1/secrets/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRotateRequest {
    /// The secret.
    pub name: SecretName,
    /// The new value.
    pub value: SecretString,
    /// How long the previous version stays resolvable.
    #[serde(default)]
    pub grace_secs: Option<u64>,
}

/// A secret version was stored (put or rotate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionStored {
    /// The secret.
    pub secret: SecretName,
    /// The version now current.
    pub version: u32,
    /// The last event that recorded it.
    pub event: u64,
}

/// `POST /v1/secrets/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRevokeRequest {
    /// The secret.
    pub name: SecretName,
}

/// A secret was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRevoked {
    /// The secret.
    pub secret: SecretName,
    /// Always true.
    pub revoked: bool,
    /// The event that recorded it.
    pub event: u64,
}

/// `POST /v1/secrets/delete`: crypto-shred a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDeleteRequest {
    /// The secret.
    pub name: SecretName,
}

/// A secret was deleted: recorded, and its sealed versions erased from the log (unless
/// `erase_error` says why not yet: the daemon erases them at its next start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDeleted {
    /// The secret.
    pub secret: SecretName,
    /// Always true: the deletion is recorded and stands whatever happened to the erasure.
    pub deleted: bool,
    /// The `secret_deleted` event.
    pub event: u64,
    /// How many sealed versions it destroys.
    pub versions: usize,
    /// Whether they are erased from the log now.
    pub erased: bool,
    /// Why they are not, if they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_error: Option<String>,
}

/// `GET /v1/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    /// Every secret.
    pub secrets: Vec<SecretInfo>,
}

/// A secret in a listing (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// `provider/name`.
    pub name: SecretName,
    /// Its projects.
    pub projects: Vec<ProjectName>,
    /// The current version.
    pub version: u32,
    /// How many versions it has.
    pub versions: usize,
    /// Whether it is revoked.
    pub revoked: bool,
    /// Whether it was deleted (crypto-shredded): it never resolves again. Written only when
    /// true, so the listing of a secret that was not deleted is as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The previous version's grace period, if one is set.
    pub grace: Option<Grace>,
    /// Who holds a grant that can be used (active or rate limited now).
    pub granted_to: Vec<Identity>,
    /// `active` or `revoked`.
    #[serde(default)]
    pub state: String,
    /// Every version, oldest first, with what it is now.
    #[serde(default)]
    pub version_states: Vec<VersionInfo>,
}

/// One version of a secret in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version.
    pub version: u32,
    /// `current`, `grace` or `retired`.
    pub state: String,
    /// With `grace`: until when (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until_ms: Option<u64>,
}

/// `POST /v1/secrets/assign` and `/v1/secrets/unassign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretProjectRequest {
    /// The secret.
    pub name: SecretName,
    /// The project.
    pub project: ProjectName,
}

/// A secret was added to a project, or taken out of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretAssignment {
    /// The secret.
    pub secret: SecretName,
    /// The project.
    pub project: ProjectName,
    /// Whether it is in the project now.
    pub assigned: bool,
    /// Grants that ended with it (taken out only).
    pub grants_ended: Vec<u64>,
    /// The event that recorded it.
    pub event: u64,
}

/// A previous version kept resolvable until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grace {
    /// The previous version.
    pub version: u32,
    /// Until when (ms since the epoch).
    pub until_ms: u64,
}

/// `POST /v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCreateRequest {
    /// The agent.
    pub name: Name,
    /// The uid it must run as.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The enrolled host it must call from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
}

/// `POST /v1/agents/revoke` and `/v1/agents/reissue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentNameRequest {
    /// The agent.
    pub name: Name,
}

/// An agent's credential, issued (created or reissued): shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredential {
    /// The agent.
    pub agent: Name,
    /// The credential, for `SCOPEHOLD_TOKEN`.
    pub credential: SecretString,
    /// The last event that recorded it.
    pub event: u64,
}

/// An agent was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRevoked {
    /// The agent.
    pub agent: Name,
    /// Always true.
    pub revoked: bool,
    /// The event that recorded it.
    pub event: u64,
}

/// `GET /v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    /// Every agent.
    pub agents: Vec<AgentInfo>,
}

/// An agent in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent.
    pub name: Name,
    /// The uid it must run as.
    pub uid: Option<u32>,
    /// The enrolled host it must call from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it last resolved a secret.
    pub last_used_ms: Option<u64>,
    /// Its grants that can be used (active or rate limited now).
    pub grants: Vec<u64>,
}

/// `POST /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberAddRequest {
    /// The member.
    pub name: Name,
    /// Their uid.
    pub uid: u32,
    /// Whether they administer.
    #[serde(default)]
    pub admin: bool,
    /// The enrolled host the uid is on (absent: the hub's own host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
}

/// A member was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAdded {
    /// The member.
    pub member: Name,
    /// The event that recorded it.
    pub event: u64,
}

/// `POST /v1/members/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberNameRequest {
    /// The member.
    pub name: Name,
}

/// `POST /v1/members/admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberAdminRequest {
    /// The member.
    pub name: Name,
    /// Whether they administer from now on.
    pub admin: bool,
}

/// A member was removed, or their admin right changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChanged {
    /// The member.
    pub member: Name,
    /// Whether they are still a member.
    pub member_now: bool,
    /// Whether they administer now.
    pub admin: bool,
    /// Grants that ended with the removal.
    pub grants_ended: Vec<u64>,
    /// The event that recorded it.
    pub event: u64,
}

/// `GET /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// Every member.
    pub members: Vec<MemberInfo>,
}

/// A member in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member.
    pub name: Name,
    /// Their uid.
    pub uid: u32,
    /// Whether they administer.
    pub admin: bool,
    /// The enrolled host the uid is on (absent: the hub's own host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
}

/// `POST /v1/grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantCreateRequest {
    /// `agent:NAME`, `member:NAME`, or a bare name (an agent if there is one, else a member).
    pub identity: IdentityRef,
    /// The secret.
    pub secret: SecretName,
    /// The project.
    pub project: ProjectName,
    /// Expires after this many seconds.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// At most this many resolutions.
    #[serde(default)]
    pub max_uses: Option<u64>,
    /// At most this many resolutions a minute.
    #[serde(default)]
    pub rate_per_min: Option<u32>,
    /// Only for callers running as this uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Only for callers through this enrolled host's edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
}

/// A grant was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantCreated {
    /// Its id.
    pub grant: u64,
    /// The event that recorded it.
    pub event: u64,
}

/// `POST /v1/grants/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRevokeRequest {
    /// The grant.
    pub id: u64,
}

/// A grant was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRevoked {
    /// The grant.
    pub grant: u64,
    /// Always true.
    pub revoked: bool,
    /// The event that recorded it.
    pub event: u64,
}

/// `GET /v1/grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantList {
    /// Every grant, revoked ones too.
    pub grants: Vec<GrantInfo>,
}

/// A grant in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// Its id.
    pub id: u64,
    /// Who holds it.
    pub identity: Identity,
    /// The secret.
    pub secret: SecretName,
    /// The project.
    pub project: ProjectName,
    /// When it expires.
    pub expires_at_ms: Option<u64>,
    /// Its maximum uses.
    pub max_uses: Option<u64>,
    /// Uses so far.
    pub uses: u64,
    /// Its rate a minute.
    pub rate_per_min: Option<u32>,
    /// The uid it is bound to.
    pub uid: Option<u32>,
    /// The host it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it was last used.
    pub last_used_ms: Option<u64>,
    /// Its effective state (`domain::GrantState::name`): `active`, `expired`, `exhausted`,
    /// `revoked`, `agent_revoked`, `secret_revoked`, `member_removed`, `secret_unassigned`,
    /// `rate_limited`.
    #[serde(default)]
    pub state: String,
    /// Why, in words.
    #[serde(default)]
    pub why: String,
}

/// `POST /v1/providers` and `/v1/providers/set`: a provider's profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSetRequest {
    /// The provider namespace (`openai`).
    pub provider: Name,
    /// Its profile.
    pub profile: crate::domain::Profile,
}

/// A profile set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderSet {
    /// The provider.
    pub provider: Name,
    /// The event that recorded it.
    pub event: u64,
}

/// One provider's profile in effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The provider namespace.
    pub provider: String,
    /// Whether it is this release's built-in (no admin has set it).
    pub builtin: bool,
    /// The profile.
    pub profile: crate::domain::Profile,
}

/// `GET /v1/providers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderList {
    /// Every profile in effect, by provider.
    pub providers: Vec<ProviderInfo>,
}

/// `POST /v1/runs`: start a run under the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStartRequest {
    /// The project whose grants the run uses.
    pub project: ProjectName,
    /// The secrets it needs placeholders for.
    pub secrets: Vec<SecretName>,
    /// Start although the run's uid is a member's (a one-person trial): its child could
    /// then act as that member by uid, so it is refused unless asked for.
    #[serde(default)]
    pub allow_member_uid: bool,
}

/// One secret's placeholder and how the child reaches the proxy with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPlaceholder {
    /// The secret.
    pub secret: SecretName,
    /// The placeholder key: valid only through the proxy, for this run, until it ends.
    pub placeholder: SecretString,
    /// The secret's provider profile (hosts, base path, variables).
    pub profile: crate::domain::Profile,
}

/// The first line of `POST /v1/runs`' answer. The answer then stays open (a newline every
/// second) for as long as the run lasts: when it closes, the run ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    /// The run's number.
    pub run: u64,
    /// The daemon's loopback proxy listener, if it has one (else the run relays).
    pub proxy_listen: Option<String>,
    /// One per secret.
    pub placeholders: Vec<RunPlaceholder>,
    /// The trust bundle (system roots and the ScopeHold CA, PEM) for `HTTPS_PROXY` clients.
    #[serde(default)]
    pub ca_bundle: Option<String>,
}

/// `POST /v1/runs/end`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEndRequest {
    /// The run.
    pub run: u64,
}

/// A run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEnded {
    /// The run.
    pub run: u64,
}

/// `POST /v1/watch`: a long poll, answered once one of the values held is no longer what the
/// daemon would hand out (`scopehold run --watch` restarts or stops its child on the answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// What the caller holds (1 to 64 values).
    pub holds: Vec<WatchHold>,
}

/// One value a watcher holds: which secret, resolved in which project, at which version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchHold {
    /// `provider/name`.
    pub secret: SecretName,
    /// The project it was resolved in.
    pub project: ProjectName,
    /// The version held.
    pub version: u32,
}

/// What changed about a held value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchChange {
    /// Another version is current (in `version`): resolve again.
    Rotated,
    /// The secret is revoked.
    Revoked,
    /// The caller can no longer resolve it; also the answer for a secret that does not exist
    /// or was never granted, so that a watch does not tell which secrets exist.
    AccessEnded,
}

/// The answer to a watch: which held value changed and how (never a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAnswer {
    /// The secret.
    pub secret: SecretName,
    /// The project.
    pub project: ProjectName,
    /// What changed.
    pub change: WatchChange,
    /// The version now current, for `rotated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// `POST /v1/hosts`: invite a host to enrol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAddRequest {
    /// The host's name.
    pub name: Name,
    /// How long the join token stays good, in seconds (default an hour).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A host was invited: its one-time join token, shown once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInvitation {
    /// The host.
    pub host: Name,
    /// `shj_<secret>.<hub CA SPKI SHA-256>`: spent at enrolment, kept nowhere by the hub
    /// (only its keyed hash is).
    pub token: SecretString,
    /// Until when it may be spent (ms since the epoch).
    pub expires_ms: u64,
    /// The SHA-256 of the hub CA's public key, which the token pins.
    pub ca_pin: String,
    /// The `host_invited` event.
    pub event: u64,
}

impl std::fmt::Debug for HostInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostInvitation")
            .field("host", &self.host)
            .field("token", &"(redacted)")
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/hosts/join`, on the hub's TLS listener only: a host spends its token and asks
/// for its certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostJoinRequest {
    /// The join token (its secret part is what counts; the pin was checked by the host).
    pub token: SecretString,
    /// A PKCS#10 request (PEM) for the key the host made for itself.
    pub csr_pem: String,
}

impl std::fmt::Debug for HostJoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostJoinRequest")
            .field("token", &"(redacted)")
            .finish_non_exhaustive()
    }
}

/// A host enrolled: its certificate and the CA that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostJoined {
    /// The host's name (the certificate's CN).
    pub host: Name,
    /// Its client certificate (PEM).
    pub cert_pem: String,
    /// The hub CA's certificate (PEM): the host's trust anchor for the hub from now on.
    pub ca_pem: String,
    /// The `host_enrolled` event.
    pub event: u64,
}

/// `POST /v1/hosts/renew`: an enrolled host's edge, on its own connection to the hub (never
/// a caller's request it forwards), asks for a certificate for a new key before its own
/// expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRenewRequest {
    /// A PKCS#10 request (PEM) for the new key the host made for itself.
    pub csr_pem: String,
}

/// The renewed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRenewed {
    /// The host's name.
    pub host: Name,
    /// Its new client certificate (PEM); the old one opens nothing from now on.
    pub cert_pem: String,
    /// When it expires (ms since the epoch).
    pub not_after_ms: u64,
    /// The `host_renewed` event.
    pub event: u64,
}

/// `POST /v1/hosts/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostNameRequest {
    /// The host.
    pub name: Name,
}

/// `POST /v1/log/page`: the log's events from `from` on, as a bundle the caller verifies with
/// the log's public key (the console on another host reads the trail this way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPageRequest {
    /// The first event wanted.
    pub from: u64,
    /// Hold the answer until the log holds event `from`, for at most this long (at most
    /// 25 s): the live tail is pushed as events are committed, not polled for.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// A page of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// Events in the log now.
    pub size: u64,
    /// The log's public key, as the daemon holds it (hex); a reader checks it against the
    /// key it trusts.
    pub public_key: String,
    /// Events `from..` (at most [`LOG_PAGE_EVENTS`], extended to the end of their batch, so
    /// that the checkpoint signing them is in it), as a bundle in base64; none when the log
    /// holds nothing at `from` yet. Secret-bearing bodies are left out, as in every export.
    pub bundle: Option<String>,
}

/// The most events one log page starts (it runs on to the end of the batch it ends in).
pub const LOG_PAGE_EVENTS: u64 = 2048;

/// A host was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRevoked {
    /// The host.
    pub host: Name,
    /// Always true.
    pub revoked: bool,
    /// The event that recorded it.
    pub event: u64,
}

/// `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    /// Every host invited or enrolled.
    pub hosts: Vec<HostInfo>,
}

/// A host in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The host.
    pub name: Name,
    /// `invited`, `enrolled`, `revoked`, or `expired` (an invitation past its time).
    pub state: String,
    /// When it enrolled.
    pub enrolled_ms: Option<u64>,
    /// Its certificate's SHA-256, once enrolled.
    pub cert_sha256: Option<String>,
    /// When its certificate expires.
    pub not_after_ms: Option<u64>,
    /// Whether an edge of this host is connected now.
    pub connected: bool,
}

/// Ties a route to its request and response types, so the server and the client cannot
/// disagree on what a route takes and gives.
pub trait Endpoint {
    /// The route.
    const ROUTE: crate::api::routes::Route;
    /// What it takes.
    type Request: Serialize + for<'de> Deserialize<'de>;
    /// What it gives.
    type Response: Serialize + for<'de> Deserialize<'de>;
}

macro_rules! endpoints {
    ($($marker:ident: $route:ident, $req:ty => $resp:ty;)*) => {$(
        #[doc = concat!("The `", stringify!($route), "` endpoint.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $marker;
        impl Endpoint for $marker {
            const ROUTE: crate::api::routes::Route = crate::api::routes::Route::$route;
            type Request = $req;
            type Response = $resp;
        }
    )*};
}

/// One marker type per route.
pub mod endpoint {
    use super::*;
    endpoints! {
        Health: Health, Empty => HealthResponse;
        Resolve: Resolve, ResolveRequest => ResolveResponse;
        Whoami: Whoami, Empty => WhoamiResponse;
        Status: Status, Empty => StatusResponse;
        ProjectList: ProjectList, Empty => super::ProjectList;
        ProjectCreate: ProjectCreate, ProjectCreateRequest => ProjectCreated;
        SecretList: SecretList, Empty => super::SecretList;
        SecretPut: SecretPut, SecretPutRequest => SecretVersionStored;
        SecretRotate: SecretRotate, SecretRotateRequest => SecretVersionStored;
        SecretRevoke: SecretRevoke, SecretRevokeRequest => SecretRevoked;
        SecretDelete: SecretDelete, SecretDeleteRequest => SecretDeleted;
        AgentList: AgentList, Empty => super::AgentList;
        AgentCreate: AgentCreate, AgentCreateRequest => AgentCredential;
        AgentRevoke: AgentRevoke, AgentNameRequest => AgentRevoked;
        AgentReissue: AgentReissue, AgentNameRequest => AgentCredential;
        MemberList: MemberList, Empty => super::MemberList;
        MemberAdd: MemberAdd, MemberAddRequest => MemberAdded;
        MemberRemove: MemberRemove, MemberNameRequest => MemberChanged;
        MemberAdmin: MemberAdmin, MemberAdminRequest => MemberChanged;
        SecretAssign: SecretAssign, SecretProjectRequest => SecretAssignment;
        SecretUnassign: SecretUnassign, SecretProjectRequest => SecretAssignment;
        ResolveAll: ResolveAll, ResolveAllRequest => ResolveAllResponse;
        GrantList: GrantList, Empty => super::GrantList;
        GrantCreate: GrantCreate, GrantCreateRequest => GrantCreated;
        GrantRevoke: GrantRevoke, GrantRevokeRequest => GrantRevoked;
        ProviderList: ProviderList, Empty => super::ProviderList;
        ProviderAdd: ProviderAdd, ProviderSetRequest => super::ProviderSet;
        ProviderSet: ProviderSet, ProviderSetRequest => super::ProviderSet;
        RunStart: RunStart, RunStartRequest => RunStarted;
        RunEnd: RunEnd, RunEndRequest => super::RunEnded;
        Watch: Watch, WatchRequest => WatchAnswer;
        HostList: HostList, Empty => super::HostList;
        HostAdd: HostAdd, HostAddRequest => HostInvitation;
        HostRevoke: HostRevoke, HostNameRequest => super::HostRevoked;
        HostJoin: HostJoin, HostJoinRequest => HostJoined;
        LogPage: LogPage, LogPageRequest => super::LogPage;
        HostRenew: HostRenew, HostRenewRequest => super::HostRenewed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_strings_never_print_and_round_trip() {
        let r: SecretPutRequest = serde_json::from_str(
            r#"{"name":"openai/prod","projects":["demo"],"value":"sk-CANARY-1"}"#,
        )
        .unwrap();
        assert_eq!(r.value.expose(), "sk-CANARY-1");
        assert!(!format!("{r:?}").contains("CANARY"));
        let back = serde_json::to_string(&r).unwrap();
        assert!(back.contains("\"value\":\"sk-CANARY-1\""));
        // Names are checked where the body is decoded.
        assert!(
            serde_json::from_str::<ResolveRequest>(r#"{"secret":"../../etc","project":"demo"}"#)
                .is_err()
        );
    }
}
