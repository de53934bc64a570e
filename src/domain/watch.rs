//! Watching what a caller holds: the (secret, project, version) values a running agent was
//! started with, and whether each is still what the daemon would hand out now.
//!
//! Pure, like `decide`: the engine calls [`change`] after every batch of events that
//! [`may_end_a_hold`] (and at the one instant without an event, a grant's expiry, from
//! [`deadline`]), and answers the watch with the first change found.

use super::decide::Caller;
use super::event::Event;
use super::names::{Identity, ProjectName, SecretName};
use super::state::{Grant, State};

/// A value the caller holds: a secret, the project it was resolved in, its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The secret.
    pub secret: SecretName,
    /// The project it was resolved in.
    pub project: ProjectName,
    /// The version the caller holds.
    pub version: u32,
}

/// What is no longer as the caller holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Another version is current: resolve again to get it.
    Rotated(u32),
    /// The secret is revoked: nobody may resolve it.
    Revoked,
    /// The caller can no longer resolve it (grant revoked or expired, agent revoked or its
    /// credential reissued). Also the answer for a secret that does not exist or was never
    /// granted to the caller, so a watch tells nobody which secrets exist.
    AccessEnded,
}

/// Whether a grant still lets `caller` hold the secret at `now`. Maximum uses and rates are
/// left out on purpose: they bound how often a value may be fetched, not whether a value
/// already fetched may be kept (a grant with `max_uses 1` must not stop the child it served).
fn holds_by(g: &Grant, caller: &Caller, held: &Held, now_ms: u64) -> bool {
    g.identity == caller.identity
        && g.secret == held.secret
        && g.project == held.project
        && !g.revoked
        && g.ended.is_none()
        && g.expires_at_ms.is_none_or(|e| now_ms < e)
        && g.uid.is_none_or(|u| u == caller.uid)
}

/// Whether the caller itself is still who it was when the watch began: a member until
/// removed (or re-added under another uid); an agent until revoked or given a new credential
/// (`credential` is its credential's hash when the watch began).
fn caller_stands(state: &State, caller: &Caller, credential: Option<[u8; 32]>) -> bool {
    match &caller.identity {
        Identity::Agent(n) => state
            .agents
            .get(n)
            .is_some_and(|a| !a.revoked && a.credential_hash == credential),
        Identity::Member(n) => state.members.get(n).is_some_and(|m| m.uid == caller.uid),
        Identity::Host(_) => false,
    }
}

/// What changed about `held` for `caller` at `now`, or `None` if it is still current and
/// the caller may still resolve it. Access is checked first, so that a caller without it
/// learns nothing of the secret (not whether it exists, is revoked, or was rotated).
pub fn change(
    state: &State,
    caller: &Caller,
    credential: Option<[u8; 32]>,
    held: &Held,
    now_ms: u64,
) -> Option<Change> {
    if !caller_stands(state, caller, credential)
        || !state
            .grants
            .values()
            .any(|g| holds_by(g, caller, held, now_ms))
    {
        return Some(Change::AccessEnded);
    }
    let Some(s) = state.secrets.get(&held.secret) else {
        return Some(Change::AccessEnded);
    };
    if !s.projects.contains(&held.project) {
        return Some(Change::AccessEnded);
    }
    // A deleted secret is gone for good: the holder stops as for a revocation.
    if s.revoked || s.deleted {
        return Some(Change::Revoked);
    }
    (s.current != held.version).then_some(Change::Rotated(s.current))
}

/// The first instant (ms) at which access to one of `holds` ends without an event: when the
/// last unexpired grant covering it expires. `None` when no hold ends by time alone.
pub fn deadline(state: &State, caller: &Caller, holds: &[Held], now_ms: u64) -> Option<u64> {
    holds
        .iter()
        .filter_map(|h| {
            // A hold covered by a grant without expiry never ends by time; else it ends when
            // the latest of its grants expires.
            let mut latest = Some(0u64);
            for g in state
                .grants
                .values()
                .filter(|g| holds_by(g, caller, h, now_ms))
            {
                latest = match (latest, g.expires_at_ms) {
                    (Some(l), Some(e)) => Some(l.max(e)),
                    _ => None,
                };
            }
            latest.filter(|l| *l > 0)
        })
        .min()
}

/// Whether an event can change what some watcher holds. The kinds listed here only add
/// things or record uses and denials; every other kind (any kind added later, too) wakes the
/// watchers, who re-check: a wake too many costs a check, a wake too few a missed revocation.
pub fn may_end_a_hold(e: &Event) -> bool {
    !matches!(
        e,
        Event::SecretResolved { .. }
            | Event::ResolutionDenied { .. }
            | Event::UnauthenticatedDenied { .. }
            | Event::DenialsCounted { .. }
            | Event::ProjectCreated { .. }
            | Event::MemberAdded { .. }
            | Event::AgentCreated { .. }
            | Event::SecretStored { .. }
            | Event::SecretVersionSealed { .. }
            | Event::GrantCreated { .. }
            // The proxy's records: uses, denials, outcomes, runs. None changes a value or
            // a grant; at thousands of proxied calls a second, waking every watcher on
            // each would cost a check per call per watcher.
            | Event::ProxyCall { .. }
            | Event::ProxyDenied { .. }
            | Event::ProxyResults { .. }
            | Event::RunStarted { .. }
            | Event::RunEnded { .. }
            | Event::ProviderSet { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, CredentialHash, Sealed};

    fn sealed() -> Sealed {
        Sealed {
            wrapped_key: "00".into(),
            key_nonce: "00".into(),
            nonce: "00".into(),
            ciphertext: "00".into(),
        }
    }

    /// `demo` with `openai/prod` v1 and `github/ci` v1; agents `a` (credential [1; 32],
    /// granted openai/prod until `expires`, at most one use) and `b` (nothing granted).
    fn given(expires: Option<u64>, more: &[Event]) -> State {
        let by = || Actor::Init;
        let mut evs = vec![Event::ProjectCreated {
            project: "demo".parse().unwrap(),
            by: by(),
        }];
        for (agent, cred) in [("a", 1u8), ("b", 2)] {
            evs.push(Event::AgentCreated {
                agent: agent.parse().unwrap(),
                uid: None,
                by: by(),
                host: None,
            });
            evs.push(Event::AgentCredentialIssued {
                agent: agent.parse().unwrap(),
                credential_hash: CredentialHash([cred; 32]),
                by: by(),
            });
        }
        for s in ["openai/prod", "github/ci"] {
            evs.push(Event::SecretStored {
                secret: s.parse().unwrap(),
                projects: vec!["demo".parse().unwrap()],
                by: by(),
            });
            evs.push(Event::SecretVersionSealed {
                secret: s.parse().unwrap(),
                version: 1,
                sealed: sealed(),
            });
        }
        evs.push(Event::GrantCreated {
            grant: 1,
            identity: "agent:a".parse().unwrap(),
            secret: "openai/prod".parse().unwrap(),
            project: "demo".parse().unwrap(),
            expires_at_ms: expires,
            max_uses: Some(1),
            rate_per_min: None,
            uid: None,
            by: by(),
            host: None,
        });
        evs.extend_from_slice(more);
        let mut st = State::default();
        for e in &evs {
            st.apply(e).unwrap();
        }
        st
    }

    fn caller(agent: &str) -> Caller {
        Caller {
            identity: format!("agent:{agent}").parse().unwrap(),
            uid: 1000,
            pid: None,
            host: None,
        }
    }

    fn held(secret: &str) -> Held {
        Held {
            secret: secret.parse().unwrap(),
            project: "demo".parse().unwrap(),
            version: 1,
        }
    }

    fn rotate(secret: &str) -> [Event; 2] {
        [
            Event::SecretVersionSealed {
                secret: secret.parse().unwrap(),
                version: 2,
                sealed: sealed(),
            },
            Event::SecretRotated {
                secret: secret.parse().unwrap(),
                version: 2,
                grace_until_ms: Some(u64::MAX),
                by: Actor::Init,
            },
        ]
    }

    const A: Option<[u8; 32]> = Some([1; 32]);

    #[test]
    fn a_current_value_holds_and_each_change_is_named() {
        let (a, h) = (caller("a"), held("openai/prod"));
        // Nothing changed: held, even with its one use spent (uses bound fetching, not
        // keeping).
        let mut st = given(None, &[]);
        st.grants.get_mut(&1).unwrap().uses = 1;
        assert_eq!(change(&st, &a, A, &h, 5), None);
        // Rotated, even with the old version still in its grace period.
        let st = given(None, &rotate("openai/prod"));
        assert_eq!(change(&st, &a, A, &h, 5), Some(Change::Rotated(2)));
        let revoked_secret = Event::SecretRevoked {
            secret: "openai/prod".parse().unwrap(),
            by: Actor::Init,
        };
        let st = given(None, &[revoked_secret]);
        assert_eq!(change(&st, &a, A, &h, 5), Some(Change::Revoked));
        for ended in [
            Event::GrantRevoked {
                grant: 1,
                by: Actor::Init,
            },
            Event::AgentRevoked {
                agent: "a".parse().unwrap(),
                by: Actor::Init,
            },
            Event::AgentCredentialIssued {
                agent: "a".parse().unwrap(),
                credential_hash: CredentialHash([9; 32]),
                by: Actor::Init,
            },
        ] {
            let st = given(None, std::slice::from_ref(&ended));
            assert_eq!(
                change(&st, &a, A, &h, 5),
                Some(Change::AccessEnded),
                "{ended:?}"
            );
        }
        // Expiry ends access at its instant, not before.
        let st = given(Some(100), &[]);
        assert_eq!(change(&st, &a, A, &h, 99), None);
        assert_eq!(change(&st, &a, A, &h, 100), Some(Change::AccessEnded));
        assert_eq!(deadline(&st, &a, std::slice::from_ref(&h), 5), Some(100));
        assert_eq!(deadline(&given(None, &[]), &a, &[h], 5), None);
    }

    #[test]
    fn without_access_every_secret_answers_alike_existing_rotated_revoked_or_not() {
        // Agent b holds no grant: a secret that exists and was rotated, one that exists
        // unchanged, and one that does not exist all answer "access ended", so a watch
        // tells b nothing it could not learn from a denied resolution.
        let mut more = rotate("openai/prod").to_vec();
        more.push(Event::SecretRevoked {
            secret: "github/ci".parse().unwrap(),
            by: Actor::Init,
        });
        let st = given(None, &more);
        let b = caller("b");
        for s in ["openai/prod", "github/ci", "nope/nothing"] {
            assert_eq!(
                change(&st, &b, Some([2; 32]), &held(s), 5),
                Some(Change::AccessEnded),
                "{s}"
            );
        }
        // a, granted openai/prod only, learns nothing of github/ci either.
        assert_eq!(
            change(&st, &caller("a"), A, &held("github/ci"), 5),
            Some(Change::AccessEnded)
        );
    }

    #[test]
    fn only_events_that_add_or_count_leave_watchers_asleep() {
        let st_events = rotate("openai/prod");
        assert!(st_events.iter().any(may_end_a_hold));
        assert!(may_end_a_hold(&Event::GrantRevoked {
            grant: 1,
            by: Actor::Init
        }));
        assert!(!may_end_a_hold(&Event::ProjectCreated {
            project: "x".parse().unwrap(),
            by: Actor::Init
        }));
    }
}
