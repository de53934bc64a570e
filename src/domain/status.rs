//! Effective states: what a grant or a secret version allows now, and why, computed from the
//! projection at a time. Lists, `whoami`, `run` and the console all take states from here, so
//! none of them can call a grant "active" that `decide` would refuse.

use super::names::Identity;
use super::state::{Grant, GrantEnd, MINUTE_MS, SecretEntry, State};

/// What a grant allows now. The order of the checks is the order of the variants: the first
/// that applies is the state (a revoked grant that has also expired is `Revoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    /// The grant itself was revoked.
    Revoked,
    /// Its member was removed, or its secret taken out of its project.
    Ended(GrantEnd),
    /// Its agent was revoked.
    AgentRevoked,
    /// Its secret was deleted (crypto-shredded).
    SecretDeleted,
    /// Its secret was revoked.
    SecretRevoked,
    /// Its expiry has passed.
    Expired {
        /// When it expired (ms since the epoch).
        at_ms: u64,
    },
    /// Its uses are used up.
    Exhausted {
        /// Its maximum uses, all used.
        max_uses: u64,
    },
    /// It works, but not until its rate window frees a slot.
    RateLimited {
        /// When the next use is allowed (ms since the epoch).
        until_ms: u64,
    },
    /// It works now.
    Active,
}

impl GrantState {
    /// The state's stable name, as lists and `--json` show it.
    pub const fn name(self) -> &'static str {
        match self {
            GrantState::Revoked => "revoked",
            GrantState::Ended(GrantEnd::MemberRemoved) => "member_removed",
            GrantState::Ended(GrantEnd::SecretUnassigned) => "secret_unassigned",
            GrantState::AgentRevoked => "agent_revoked",
            GrantState::SecretDeleted => "secret_deleted",
            GrantState::SecretRevoked => "secret_revoked",
            GrantState::Expired { .. } => "expired",
            GrantState::Exhausted { .. } => "exhausted",
            GrantState::RateLimited { .. } => "rate_limited",
            GrantState::Active => "active",
        }
    }

    /// Whether it can ever allow a resolution again without an admin's change (active, or
    /// rate limited for now).
    pub const fn is_live(self) -> bool {
        matches!(self, GrantState::Active | GrantState::RateLimited { .. })
    }

    /// Why, in words for the grant's holder and its admins (times as ms since the epoch are
    /// left to the caller to format: this module reads no clock and knows no time zone).
    pub fn why(self) -> String {
        match self {
            GrantState::Revoked => "the grant was revoked".into(),
            GrantState::Ended(GrantEnd::MemberRemoved) => "its member was removed".into(),
            GrantState::Ended(GrantEnd::SecretUnassigned) => {
                "its secret was taken out of the project".into()
            }
            GrantState::AgentRevoked => "its agent was revoked".into(),
            GrantState::SecretDeleted => "the secret was deleted".into(),
            GrantState::SecretRevoked => "the secret was revoked".into(),
            GrantState::Expired { at_ms } => format!("it expired at {}", fmt_ms(at_ms)),
            GrantState::Exhausted { max_uses } => format!("all {max_uses} uses are used"),
            GrantState::RateLimited { until_ms } => {
                format!("over its rate until {}", fmt_ms(until_ms))
            }
            GrantState::Active => "it can be used now".into(),
        }
    }
}

/// A time in ms since the epoch as RFC 3339 UTC, to the second.
pub fn fmt_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

impl State {
    /// What `g` allows at `now_ms`, and why. The uid binding is not a state (it depends on
    /// the caller), nor is the caller's identity.
    pub fn grant_state(&self, g: &Grant, now_ms: u64) -> GrantState {
        if g.revoked {
            return GrantState::Revoked;
        }
        if let Some(end) = g.ended {
            return GrantState::Ended(end);
        }
        if let Identity::Agent(n) = &g.identity
            && self.agents.get(n).is_none_or(|a| a.revoked)
        {
            return GrantState::AgentRevoked;
        }
        match self.secrets.get(&g.secret) {
            Some(s) if s.deleted => return GrantState::SecretDeleted,
            None => return GrantState::SecretRevoked,
            Some(s) if s.revoked => return GrantState::SecretRevoked,
            Some(_) => {}
        }
        if let Some(at_ms) = g.expires_at_ms
            && now_ms >= at_ms
        {
            return GrantState::Expired { at_ms };
        }
        if let Some(max_uses) = g.max_uses
            && g.uses >= max_uses
        {
            return GrantState::Exhausted { max_uses };
        }
        if let Some(r) = g.rate_per_min {
            let mut window = g.recent.iter().filter(|t| **t + MINUTE_MS > now_ms);
            if window.clone().count() >= r as usize
                && let Some(oldest) = window.next()
            {
                return GrantState::RateLimited {
                    until_ms: oldest + MINUTE_MS,
                };
            }
        }
        GrantState::Active
    }
}

/// What a version of a secret is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// Resolutions get it.
    Current,
    /// Still resolvable, when asked for by number, until then (ms since the epoch).
    Grace {
        /// The end of the grace period.
        until_ms: u64,
    },
    /// No longer resolvable.
    Retired,
}

impl VersionState {
    /// The state's stable name.
    pub const fn name(self) -> &'static str {
        match self {
            VersionState::Current => "current",
            VersionState::Grace { .. } => "grace",
            VersionState::Retired => "retired",
        }
    }
}

impl SecretEntry {
    /// Every version, oldest first, with what it is at `now_ms`.
    pub fn version_states(&self, now_ms: u64) -> Vec<(u32, VersionState)> {
        self.versions
            .keys()
            .map(|v| {
                let st = match self.grace {
                    _ if *v == self.current => VersionState::Current,
                    Some((prev, until_ms)) if prev == *v && now_ms < until_ms => {
                        VersionState::Grace { until_ms }
                    }
                    _ => VersionState::Retired,
                };
                (*v, st)
            })
            .collect()
    }
}
