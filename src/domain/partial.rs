//! The projection of a partial history: an exported bundle, whose secret-bearing bodies (sealed
//! values, credential hashes) are left out and which may start after event 0.
//!
//! [`State::apply`] rightly refuses such a history (a rotation to a version whose sealed value
//! it never saw). For an auditor's view only, [`fold_partial`] stands a placeholder in for each
//! sealed value the bundle leaves out, and skips (and counts) the events that refer to things
//! created before the bundle starts. The result names secrets, versions, identities and grants;
//! it holds no secret material and must never be used to decide anything.

use super::event::{Event, Sealed};
use super::state::State;

/// A projection folded from part of a log.
#[derive(Debug, Clone, Default)]
pub struct PartialState {
    /// What the events in the bundle establish.
    pub state: State,
    /// Events that could not be applied (they refer to things from before the bundle), each
    /// with why.
    pub skipped: Vec<String>,
    /// Secret-bearing events whose bodies were left out.
    pub withheld: u64,
}

/// Stands in for a sealed value the bundle leaves out: empty, and opens nothing.
fn placeholder() -> Sealed {
    Sealed {
        wrapped_key: String::new(),
        key_nonce: String::new(),
        nonce: String::new(),
        ciphertext: String::new(),
    }
}

/// Folds a bundle's events in order: `None` for a body left out. Sealed versions are
/// placeholders (a stored secret's first version, a rotation's new one); credential hashes
/// stay unknown.
pub fn fold_partial(events: impl IntoIterator<Item = (u64, Option<Event>)>) -> PartialState {
    let mut out = PartialState::default();
    for (seq, ev) in events {
        let Some(ev) = ev else {
            out.withheld += 1;
            continue;
        };
        let st = &mut out.state;
        // A rotation needs its version's sealed value: the bundle left it out.
        if let Event::SecretRotated {
            secret, version, ..
        } = &ev
            && let Some(s) = st.secrets.get_mut(secret)
        {
            s.versions.entry(*version).or_insert_with(placeholder);
            // Where the sealed value would have been: this event's place stands in.
            s.sealed_at.entry(*version).or_insert(seq);
        }
        // A sealed value that is in the bundle (a JSONL export never has one; a test may).
        if let Event::SecretVersionSealed {
            secret, version, ..
        } = &ev
            && st
                .secrets
                .get(secret)
                .is_some_and(|s| s.versions.contains_key(version))
        {
            continue;
        }
        // The bundle left the sealed events out, so where they were is known only from the
        // deletion that lists them: the stand-ins take those numbers, version by version.
        if let Event::SecretDeleted { secret, erased, .. } = &ev
            && let Some(s) = st.secrets.get_mut(secret)
            && s.sealed_at.len() == erased.len()
        {
            let mut listed = erased.clone();
            listed.sort_unstable();
            for (at, seq) in s.sealed_at.values_mut().zip(listed) {
                *at = seq;
            }
        }
        // A host's invitation carries its token's hash, so a bundle leaves it out: its
        // enrolment, which names the host, stands in for it (agents and members bound to the
        // host need it to exist).
        if let Event::HostEnrolled { host, .. } = &ev
            && !st.hosts.contains_key(host)
        {
            st.hosts.insert(
                host.clone(),
                super::state::Host {
                    token_hash: None,
                    token_expires_ms: 0,
                    cert_sha256: None,
                    not_after_ms: 0,
                    enrolled_ms: None,
                    revoked: false,
                },
            );
        }
        if let Err(e) = st.apply(&ev) {
            out.skipped.push(format!("event {seq}: {e}"));
            continue;
        }
        // A store always seals version 1 at once (left out of the bundle).
        if let Event::SecretStored { secret, .. } = &ev
            && let Some(s) = st.secrets.get_mut(secret)
            && s.versions.is_empty()
        {
            s.versions.insert(1, placeholder());
            s.sealed_at.insert(1, seq);
            s.current = 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: serde_json::Value) -> Event {
        serde_json::from_value(s).unwrap()
    }

    #[test]
    fn a_bundle_without_sealed_values_still_projects_secrets_versions_and_grants() {
        let by = "member:root";
        let events = vec![
            (
                0,
                Some(ev(
                    serde_json::json!({"type": "project_created", "project": "demo", "by": by}),
                )),
            ),
            (
                1,
                Some(ev(
                    serde_json::json!({"type": "member_added", "member": "root", "uid": 0, "admin": true, "by": "init"}),
                )),
            ),
            (
                2,
                Some(ev(
                    serde_json::json!({"type": "secret_stored", "secret": "openai/prod", "projects": ["demo"], "by": by}),
                )),
            ),
            (3, None),
            (
                4,
                Some(ev(
                    serde_json::json!({"type": "agent_created", "agent": "bot", "uid": null, "by": by}),
                )),
            ),
            (5, None),
            (
                6,
                Some(ev(
                    serde_json::json!({"type": "grant_created", "grant": 1, "identity": "agent:bot", "secret": "openai/prod", "project": "demo", "expires_at_ms": null, "max_uses": null, "rate_per_min": null, "uid": null, "by": by}),
                )),
            ),
            (7, None),
            (
                8,
                Some(ev(
                    serde_json::json!({"type": "secret_rotated", "secret": "openai/prod", "version": 2, "grace_until_ms": null, "by": by}),
                )),
            ),
            (
                9,
                Some(ev(
                    serde_json::json!({"type": "secret_resolved", "identity": "agent:bot", "secret": "openai/prod", "version": 2, "project": "demo", "grant": 1, "pid": 7, "uid": 1000, "at_ms": 5}),
                )),
            ),
            // From before the bundle: skipped and said so, not a failure.
            (
                10,
                Some(ev(
                    serde_json::json!({"type": "grant_revoked", "grant": 9, "by": by}),
                )),
            ),
        ];
        let mut deleted = events.clone();
        let p = fold_partial(events);
        let s = &p.state.secrets[&"openai/prod".parse().unwrap()];
        assert_eq!((s.current, s.versions.len()), (2, 2));
        assert!(s.versions.values().all(|v| v.ciphertext.is_empty()));
        assert_eq!(p.state.grants[&1].uses, 1);
        assert!(p.state.agents.contains_key(&"bot".parse().unwrap()));
        assert_eq!(p.withheld, 3);
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(p.skipped[0].starts_with("event 10:"), "{:?}", p.skipped);

        // A deletion listing the two sealed events the bundle left out (3 and 7) folds too:
        // the auditor sees the secret deleted and its grant dead, not live.
        deleted.push((
            11,
            Some(ev(
                serde_json::json!({"type": "secret_deleted", "secret": "openai/prod", "erased": [3, 7], "by": by}),
            )),
        ));
        let p = fold_partial(deleted);
        assert!(
            p.state.secrets[&"openai/prod".parse().unwrap()].deleted,
            "{:?}",
            p.skipped
        );
        let g = &p.state.grants[&1];
        assert_eq!(
            p.state.grant_state(g, 0),
            crate::domain::GrantState::SecretDeleted
        );
    }
}
