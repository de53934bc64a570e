//! Given (events), when (a command), then (exact events, or an exact refusal). And a property:
//! whatever `decide` returns applies to the state it was decided on.

use proptest::prelude::*;

use super::*;

fn sealed(tag: &str) -> Sealed {
    Sealed {
        wrapped_key: tag.into(),
        key_nonce: "00".into(),
        nonce: "00".into(),
        ciphertext: "00".into(),
    }
}

fn n(s: &str) -> Name {
    s.parse().unwrap()
}
fn p(s: &str) -> ProjectName {
    s.parse().unwrap()
}
fn sec(s: &str) -> SecretName {
    s.parse().unwrap()
}
fn id(s: &str) -> Identity {
    s.parse().unwrap()
}
fn root_by() -> Actor {
    Actor::Identity(id("member:root"))
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
            project: p("demo"),
            by: root_by(),
        },
        Event::MemberAdded {
            member: n("root"),
            uid: 0,
            admin: true,
            by: Actor::Init,
            host: None,
        },
        Event::AgentCreated {
            agent: n("a"),
            uid: None,
            by: root_by(),
            host: None,
        },
        Event::AgentCreated {
            agent: n("b"),
            uid: None,
            by: root_by(),
            host: None,
        },
        Event::SecretStored {
            secret: sec("openai/prod"),
            projects: vec![p("demo")],
            by: root_by(),
        },
        Event::SecretVersionSealed {
            secret: sec("openai/prod"),
            version: 1,
            sealed: sealed("v1"),
        },
    ]
}

fn root() -> Caller {
    Caller {
        identity: id("member:root"),
        uid: 0,
        pid: Some(1),
        host: None,
    }
}

fn agent(name: &str) -> Caller {
    Caller {
        identity: Identity::Agent(n(name)),
        uid: 1000,
        pid: Some(42),
        host: None,
    }
}

/// A grant of openai/prod in demo; a bare name here means the agent.
fn spec(identity: &str) -> GrantSpec {
    let identity = if identity.contains(':') {
        identity.to_string()
    } else {
        format!("agent:{identity}")
    };
    GrantSpec {
        identity: identity.parse().unwrap(),
        secret: sec("openai/prod"),
        project: p("demo"),
        ttl_ms: None,
        max_uses: None,
        rate_per_min: None,
        uid: None,
        host: None,
    }
}

fn resolve(secret: &str, project: &str, version: Option<u32>) -> Command {
    Command::Resolve {
        secret: sec(secret),
        project: p(project),
        version,
    }
}

/// A refusal as anybody would see it: the reason a holder is told, as a plain denial (the
/// tests of what a holder is told are separate).
fn plain(r: Result<Vec<Event>, Refusal>) -> Result<Vec<Event>, Refusal> {
    fn plain_one(e: Refusal) -> Refusal {
        match e {
            Refusal::Unusable { reason, .. } => Refusal::Denied(reason),
            Refusal::InBatch { inner, .. } => plain_one(*inner),
            e => e,
        }
    }
    r.map_err(plain_one)
}

/// Decides and applies, as the daemon does; panics on a refusal.
fn when(s: &mut State, caller: &Caller, c: &Command, now: u64) -> Vec<Event> {
    let evs = decide(s, caller, c, now).unwrap();
    for e in &evs {
        s.apply(e).unwrap();
    }
    evs
}

fn resolved(caller: &Caller, version: u32, grant: u64, at_ms: u64) -> Event {
    Event::SecretResolved {
        identity: caller.identity.clone(),
        secret: sec("openai/prod"),
        version,
        project: p("demo"),
        grant,
        pid: caller.pid,
        uid: caller.uid,
        at_ms,
        from_host: None,
    }
}

#[test]
fn a_grant_is_created_with_the_next_id_by_its_admin() {
    let s = given(&world());
    let evs = decide(
        &s,
        &root(),
        &Command::CreateGrant(GrantSpec {
            ttl_ms: Some(60_000),
            max_uses: Some(3),
            ..spec("a")
        }),
        1_000,
    )
    .unwrap();
    assert_eq!(
        evs,
        vec![Event::GrantCreated {
            grant: 1,
            identity: id("agent:a"),
            secret: sec("openai/prod"),
            project: p("demo"),
            expires_at_ms: Some(61_000),
            max_uses: Some(3),
            rate_per_min: None,
            uid: None,
            by: root_by(),
            host: None,
        }]
    );
    // The kind is always said: a bare name is refused, whether or not it exists.
    for bare in ["root", "a", "nobody"] {
        let g = GrantSpec {
            identity: IdentityRef::Bare(n(bare)),
            ..spec("a")
        };
        assert_eq!(
            decide(&s, &root(), &Command::CreateGrant(g), 1),
            Err(Refusal::KindNeeded(n(bare)))
        );
    }
    let evs = decide(&s, &root(), &Command::CreateGrant(spec("member:root")), 1).unwrap();
    assert!(
        matches!(&evs[0], Event::GrantCreated { identity: Identity::Member(m), .. } if m.as_str() == "root")
    );
}

#[test]
fn a_granted_agent_resolves_the_current_version_and_others_are_denied() {
    let mut s = given(&world());
    when(&mut s, &root(), &Command::CreateGrant(spec("a")), 1_000);
    assert_eq!(
        decide(
            &s,
            &agent("a"),
            &resolve("openai/prod", "demo", None),
            2_000
        ),
        Ok(vec![resolved(&agent("a"), 1, 1, 2_000)])
    );
    // Another agent's key, an unknown secret and another project: one answer.
    for (caller, secret, project, reason) in [
        (agent("b"), "openai/prod", "demo", DenyReason::NotGranted),
        (agent("a"), "openai/nope", "demo", DenyReason::NoSuchSecret),
        (agent("a"), "openai/prod", "other", DenyReason::NotInProject),
    ] {
        let c = resolve(secret, project, None);
        let r = decide(&s, &caller, &c, 2_000).unwrap_err();
        assert_eq!(r, Refusal::Denied(reason));
        assert_eq!(r.to_string(), "not granted");
        assert_eq!(
            recorded_refusal(&caller, &c, &r, 2_000),
            Some(Event::ResolutionDenied {
                identity: caller.identity.clone(),
                secret: Some(sec(secret)),
                project: Some(p(project)),
                reason: reason.as_str().into(),
                pid: caller.pid,
                uid: caller.uid,
                at_ms: 2_000,
                from_host: None,
            })
        );
    }
}

#[test]
fn grants_follow_rotation_and_grace_keeps_the_previous_version_for_a_while() {
    let mut s = given(&world());
    when(&mut s, &root(), &Command::CreateGrant(spec("a")), 1_000);
    let v = next_version(&s, &sec("openai/prod")).unwrap();
    assert_eq!(v, 2);
    let rotate = Command::RotateSecret {
        secret: sec("openai/prod"),
        version: v,
        sealed: sealed("v2"),
        grace_ms: Some(10_000),
    };
    assert_eq!(
        when(&mut s, &root(), &rotate, 5_000),
        vec![
            Event::SecretVersionSealed {
                secret: sec("openai/prod"),
                version: 2,
                sealed: sealed("v2"),
            },
            Event::SecretRotated {
                secret: sec("openai/prod"),
                version: 2,
                grace_until_ms: Some(15_000),
                by: root_by(),
            },
        ]
    );
    // The same rotation again was decided on an older state: refused, not mis-numbered.
    assert_eq!(
        decide(&s, &root(), &rotate, 5_001),
        Err(Refusal::ConcurrentRotation(sec("openai/prod")))
    );
    let a = agent("a");
    assert_eq!(
        decide(&s, &a, &resolve("openai/prod", "demo", None), 6_000),
        Ok(vec![resolved(&a, 2, 1, 6_000)])
    );
    assert_eq!(
        decide(&s, &a, &resolve("openai/prod", "demo", Some(1)), 6_000),
        Ok(vec![resolved(&a, 1, 1, 6_000)])
    );
    assert_eq!(
        plain(decide(
            &s,
            &a,
            &resolve("openai/prod", "demo", Some(1)),
            15_000
        )),
        Err(Refusal::Denied(DenyReason::GraceOver))
    );
}

#[test]
fn max_uses_expiry_rate_and_uid_constrain_a_grant() {
    let a = agent("a");
    let r = resolve("openai/prod", "demo", None);
    let with = |g: GrantSpec| {
        let mut s = given(&world());
        when(&mut s, &root(), &Command::CreateGrant(g), 1_000);
        s
    };

    let mut s = with(GrantSpec {
        max_uses: Some(2),
        ttl_ms: Some(60_000),
        ..spec("a")
    });
    for t in [2_000, 3_000] {
        assert_eq!(when(&mut s, &a, &r, t), vec![resolved(&a, 1, 1, t)]);
    }
    assert_eq!(
        plain(decide(&s, &a, &r, 4_000)),
        Err(Refusal::Denied(DenyReason::Exhausted))
    );

    let s = with(GrantSpec {
        ttl_ms: Some(60_000),
        ..spec("a")
    });
    assert!(decide(&s, &a, &r, 60_999).is_ok());
    assert_eq!(
        plain(decide(&s, &a, &r, 61_000)),
        Err(Refusal::Denied(DenyReason::Expired))
    );

    let mut s = with(GrantSpec {
        rate_per_min: Some(2),
        ..spec("a")
    });
    for t in [10_000, 20_000] {
        when(&mut s, &a, &r, t);
    }
    let limited = decide(&s, &a, &r, 30_000).unwrap_err();
    assert_eq!(limited, Refusal::RateLimited(DenyReason::RateLimited));
    assert!(matches!(
        recorded_refusal(&a, &r, &limited, 30_000),
        Some(Event::ResolutionDenied { reason, .. }) if reason == "rate limit"
    ));
    assert_eq!(
        decide(&s, &a, &r, 70_000),
        Ok(vec![resolved(&a, 1, 1, 70_000)])
    );

    let s = with(GrantSpec {
        uid: Some(1000),
        ..spec("a")
    });
    assert!(decide(&s, &a, &r, 1).is_ok());
    let other_uid = Caller { uid: 1001, ..a };
    assert_eq!(
        plain(decide(&s, &other_uid, &r, 1)),
        Err(Refusal::Denied(DenyReason::GrantUid))
    );
}

#[test]
fn revoking_a_grant_an_agent_or_a_secret_stops_resolution() {
    let mut base = given(&world());
    when(&mut base, &root(), &Command::CreateGrant(spec("a")), 1_000);
    let r = resolve("openai/prod", "demo", None);
    for (revoke, event, reason) in [
        (
            Command::RevokeGrant { grant: 1 },
            Event::GrantRevoked {
                grant: 1,
                by: root_by(),
            },
            DenyReason::GrantRevoked,
        ),
        (
            Command::RevokeSecret {
                secret: sec("openai/prod"),
            },
            Event::SecretRevoked {
                secret: sec("openai/prod"),
                by: root_by(),
            },
            DenyReason::SecretRevoked,
        ),
    ] {
        let mut s = base.clone();
        assert_eq!(when(&mut s, &root(), &revoke, 5), vec![event]);
        assert_eq!(
            plain(decide(&s, &agent("a"), &r, 5)),
            Err(Refusal::Denied(reason))
        );
        assert!(matches!(
            decide(&s, &root(), &revoke, 6),
            Err(Refusal::AlreadyRevoked(..))
        ));
    }
    let mut s = base.clone();
    assert_eq!(
        when(&mut s, &root(), &Command::RevokeAgent { agent: n("a") }, 5),
        vec![Event::AgentRevoked {
            agent: n("a"),
            by: root_by(),
        }]
    );
    assert!(s.agents[&n("a")].revoked);
    let reissue = Command::ReissueAgent {
        agent: n("a"),
        credential_hash: CredentialHash([1; 32]),
    };
    let refused = decide(&s, &root(), &reissue, 6).unwrap_err();
    assert_eq!(refused, Refusal::Revoked(Thing::Agent, "a".into()));
    assert_eq!(
        refused.to_string(),
        "agent a is revoked; create a new agent"
    );
}

#[test]
fn agents_are_identified_by_credential_and_members_by_uid() {
    let mut s = given(&world());
    when(
        &mut s,
        &root(),
        &Command::ReissueAgent {
            agent: n("a"),
            credential_hash: CredentialHash([7; 32]),
        },
        1,
    );
    assert_eq!(
        identify(&s, Some(&[7; 32]), None, 1000, Some(3)),
        Identified::Caller(Caller {
            identity: id("agent:a"),
            uid: 1000,
            pid: Some(3),
            host: None,
        })
    );
    assert_eq!(
        identify(&s, Some(&[8; 32]), None, 0, None),
        Identified::Unknown
    );
    assert!(
        matches!(identify(&s, None, None, 0, None), Identified::Caller(c) if c.identity == id("member:root"))
    );
    assert_eq!(identify(&s, None, None, 4242, None), Identified::Unknown);
    when(&mut s, &root(), &Command::RevokeAgent { agent: n("a") }, 2);
    assert!(matches!(
        identify(&s, Some(&[7; 32]), None, 1000, None),
        Identified::Denied(_, DenyReason::AgentRevoked)
    ));
    // Only admin members administer, and only from their own uid.
    assert_eq!(authorize_admin(&s, &root()), Ok(()));
    assert_eq!(authorize_admin(&s, &agent("b")), Err(Refusal::NotAdmin));
    assert_eq!(
        authorize_admin(&s, &Caller { uid: 5, ..root() }),
        Err(Refusal::NotAdmin)
    );
}

#[test]
fn changes_that_cannot_be_made_are_refused_with_their_reason() {
    let s = given(&world());
    let cases: Vec<(Command, Refusal)> = vec![
        (
            Command::CreateProject { project: p("demo") },
            Refusal::AlreadyExists(Thing::Project, "demo".into()),
        ),
        (
            Command::AddMember {
                member: n("alice"),
                uid: 0,
                admin: false,
                host: None,
            },
            Refusal::UidTaken {
                uid: 0,
                member: n("root"),
            },
        ),
        (
            Command::PutSecret {
                secret: sec("openai/prod"),
                projects: vec![p("demo")],
                sealed: sealed("x"),
            },
            Refusal::AlreadyExists(Thing::Secret, "openai/prod".into()),
        ),
        (
            Command::PutSecret {
                secret: sec("openai/dev"),
                projects: vec![],
                sealed: sealed("x"),
            },
            Refusal::NoProjects,
        ),
        (
            Command::PutSecret {
                secret: sec("openai/dev"),
                projects: vec![p("nope")],
                sealed: sealed("x"),
            },
            Refusal::Unknown(Thing::Project, "nope".into()),
        ),
        (
            Command::CreateGrant(spec("ghost")),
            Refusal::Unknown(Thing::Identity, "agent:ghost".into()),
        ),
        (
            Command::CreateGrant(GrantSpec {
                project: p("other"),
                ..spec("a")
            }),
            Refusal::NotInProject {
                secret: sec("openai/prod"),
                project: p("other"),
            },
        ),
        (
            Command::CreateGrant(GrantSpec {
                max_uses: Some(0),
                ..spec("a")
            }),
            Refusal::ZeroLimit,
        ),
        (
            Command::RevokeGrant { grant: 9 },
            Refusal::Unknown(Thing::Grant, "9".into()),
        ),
    ];
    for (c, want) in cases {
        assert_eq!(decide(&s, &root(), &c, 1), Err(want), "{c:?}");
    }
    assert_eq!(
        Refusal::AlreadyExists(Thing::Secret, "openai/prod".into()).to_string(),
        "secret openai/prod already exists: rotate it instead"
    );
}

#[test]
fn an_impossible_history_is_refused() {
    let mut s = State::default();
    assert!(
        s.apply(&Event::GrantRevoked {
            grant: 9,
            by: Actor::Init
        })
        .is_err()
    );
    let mut s = given(&world());
    assert!(
        s.apply(&Event::SecretVersionSealed {
            secret: sec("openai/prod"),
            version: 3,
            sealed: sealed("x")
        })
        .is_err()
    );
    assert!(
        s.apply(&Event::ProjectCreated {
            project: p("demo"),
            by: Actor::Init
        })
        .is_err()
    );
}

#[test]
fn every_kind_has_one_number_name_and_class_and_bodies_carry_the_name() {
    let mut numbers: Vec<u16> = EventKind::ALL.iter().map(|k| k.number()).collect();
    numbers.dedup();
    assert_eq!(numbers, (1..=31).collect::<Vec<_>>(), "numbers are stable");
    for k in EventKind::ALL {
        assert_eq!(EventKind::from_number(k.number()), Some(*k));
        assert_eq!(EventKind::from_name(k.name()), Some(*k));
    }
    let mut s = given(&world());
    when(&mut s, &root(), &Command::CreateGrant(spec("a")), 1);
    let mut samples = world();
    samples.extend(decide(&s, &root(), &Command::CreateGrant(spec("b")), 1).unwrap());
    samples.push(resolved(&agent("a"), 1, 1, 1));
    let mut s2 = s.clone();
    when(&mut s2, &root(), &Command::CreateGrant(spec("a")), 1);
    let run = when(&mut s2, &agent("a"), &start_run(), 2);
    let call = when(&mut s2, &agent("a"), &proxy("api.openai.com", Some(1)), 3);
    samples.extend(run);
    samples.extend(call);
    samples.push(
        recorded_refusal(
            &agent("a"),
            &proxy("evil.test", None),
            &Refusal::Denied(DenyReason::HostNotInProfile),
            4,
        )
        .unwrap(),
    );
    samples.push(Event::ProxyResults {
        results: vec![crate::domain::ProxyResult {
            call: 9,
            status: 200,
            bytes_up: 1,
            bytes_down: 2,
            duration_us: 3,
            error: None,
        }],
        at_ms: 5,
    });
    samples.extend(when(
        &mut s2,
        &agent("a"),
        &Command::EndRun {
            run: 1,
            reason: "done".into(),
        },
        6,
    ));
    samples.extend(when(&mut s2, &root(), &set_provider("acme", false), 7));
    when(
        &mut s2,
        &root(),
        &Command::CreateProject {
            project: p("other"),
        },
        8,
    );
    for c in [
        Command::AssignSecret {
            secret: sec("openai/prod"),
            project: p("other"),
        },
        Command::UnassignSecret {
            secret: sec("openai/prod"),
            project: p("other"),
        },
        Command::AddMember {
            member: n("alice"),
            uid: 7,
            admin: false,
            host: None,
        },
        Command::SetMemberAdmin {
            member: n("alice"),
            admin: true,
        },
        Command::RemoveMember { member: n("alice") },
        Command::InviteHost {
            host: n("ci-1"),
            token_hash: CredentialHash([3; 32]),
            expires_ms: 100,
        },
        Command::EnrolHost {
            host: n("ci-1"),
            token_hash: CredentialHash([3; 32]),
            cert_sha256: "ab".repeat(32),
            not_after_ms: 1000,
        },
        Command::RenewHost {
            host: n("ci-1"),
            cert_sha256: "ef".repeat(32),
            not_after_ms: 2000,
        },
        Command::RevokeHost { host: n("ci-1") },
    ] {
        samples.extend(when(&mut s2, &root(), &c, 9));
    }
    samples.push(Event::HostJoinDenied {
        host: None,
        reason: "join token unknown or used".into(),
        peer: "127.0.0.1:1".into(),
        at_ms: 9,
    });
    samples.extend(when(
        &mut s2,
        &root(),
        &Command::DeleteSecret {
            secret: sec("openai/prod"),
        },
        10,
    ));
    let kinds: std::collections::BTreeSet<_> = samples.iter().map(|e| e.kind()).collect();
    for k in [
        EventKind::ProviderSet,
        EventKind::ProxyCall,
        EventKind::ProxyDenied,
        EventKind::ProxyResults,
        EventKind::RunStarted,
        EventKind::RunEnded,
        EventKind::MemberRemoved,
        EventKind::MemberAdminSet,
        EventKind::SecretAssigned,
        EventKind::SecretUnassigned,
        EventKind::SecretDeleted,
        EventKind::HostInvited,
        EventKind::HostEnrolled,
        EventKind::HostRevoked,
        EventKind::HostJoinDenied,
        EventKind::HostRenewed,
    ] {
        assert!(kinds.contains(&k), "no sample of {k}");
    }
    for e in samples {
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.kind().name());
        let back = Event::from_body(e.kind().number(), &serde_json::to_vec(&e).unwrap());
        assert_eq!(back.as_ref(), Ok(&e));
    }
}

#[test]
fn a_deleted_secret_lists_its_sealed_events_resolves_for_nobody_and_keeps_its_name() {
    let x = sec("openai/prod");
    let mut s = given(&world()); // events 0..=5; v1 sealed at 5
    assert_eq!(s.applied, 6);
    when(&mut s, &root(), &Command::CreateGrant(spec("a")), 1); // 6
    when(
        &mut s,
        &root(),
        &Command::RotateSecret {
            secret: x.clone(),
            version: 2,
            sealed: sealed("v2"),
            grace_ms: Some(60_000),
        },
        2,
    ); // v2 sealed at 7, rotated at 8
    when(&mut s, &agent("a"), &start_run(), 3); // run 1 at 9
    assert_eq!(s.secrets[&x].sealed_at, [(1, 5), (2, 7)].into());
    let del = Command::DeleteSecret { secret: x.clone() };
    let evs = when(&mut s, &root(), &del, 4);
    assert_eq!(
        evs,
        vec![
            Event::SecretDeleted {
                secret: x.clone(),
                erased: vec![5, 7],
                by: root_by(),
            },
            Event::RunEnded {
                run: 1,
                reason: "secret deleted".into(),
                at_ms: 4,
            },
        ]
    );
    let e = &s.secrets[&x];
    assert!(e.deleted && e.versions.is_empty() && e.grace.is_none());
    assert!(s.runs.is_empty());

    // It resolves for nobody, and the denial is recorded with its reason.
    for (who, v) in [(agent("a"), None), (agent("a"), Some(1)), (root(), None)] {
        let c = resolve("openai/prod", "demo", v);
        let r = decide(&s, &who, &c, 5).unwrap_err();
        assert_eq!(r.deny_reason(), Some(DenyReason::SecretDeleted));
        let Some(Event::ResolutionDenied { reason, .. }) = recorded_refusal(&who, &c, &r, 5) else {
            panic!("a denied resolution is recorded")
        };
        assert_eq!(reason, "secret deleted");
    }
    assert_eq!(
        plain(decide(&s, &agent("a"), &proxy("api.openai.com", None), 5)),
        Err(Refusal::Denied(DenyReason::SecretDeleted))
    );
    assert_eq!(
        plain(decide(&s, &agent("a"), &start_run(), 5)),
        Err(Refusal::Denied(DenyReason::SecretDeleted))
    );
    // Its name is never reused, and nothing more is done with it.
    let deleted = Err(Refusal::Deleted(x.clone()));
    let put = Command::PutSecret {
        secret: x.clone(),
        projects: vec![p("demo")],
        sealed: sealed("again"),
    };
    assert_eq!(decide(&s, &root(), &put, 5), deleted);
    assert_eq!(next_version(&s, &x), Err(Refusal::Deleted(x.clone())));
    assert_eq!(
        decide(&s, &root(), &Command::RevokeSecret { secret: x.clone() }, 5),
        deleted
    );
    assert_eq!(
        decide(&s, &root(), &Command::CreateGrant(spec("b")), 5),
        deleted
    );
    assert_eq!(decide(&s, &root(), &del, 5), deleted);
    assert!(
        Refusal::Deleted(x.clone())
            .to_string()
            .contains("never reused")
    );
    // A watcher holding it is told to stop.
    let held = watch::Held {
        secret: x.clone(),
        project: p("demo"),
        version: 2,
    };
    assert_eq!(
        watch::change(&s, &agent("a"), None, &held, 5),
        Some(watch::Change::Revoked)
    );
    // It only takes access away: carried out under the disk reserve too.
    assert!(del.reduces_access());
}

#[test]
fn a_deletion_must_list_exactly_the_secrets_sealed_events() {
    let x = sec("openai/prod");
    let deleted = |erased: Vec<u64>| Event::SecretDeleted {
        secret: x.clone(),
        erased,
        by: root_by(),
    };
    for wrong in [vec![], vec![4], vec![5, 5], vec![5, 6]] {
        assert!(
            given(&world()).apply(&deleted(wrong.clone())).is_err(),
            "{wrong:?}"
        );
    }
    let mut s = given(&world());
    s.apply(&deleted(vec![5])).unwrap();
    assert!(s.apply(&deleted(vec![5])).is_err(), "deleted twice");
    let sealed_after = Event::SecretVersionSealed {
        secret: x.clone(),
        version: 2,
        sealed: sealed("v2"),
    };
    assert!(s.clone().apply(&sealed_after).is_err());
    assert!(s.apply_erased_seal(&x).is_err());
    let stored_again = Event::SecretStored {
        secret: x.clone(),
        projects: vec![p("demo")],
        by: root_by(),
    };
    assert!(s.clone().apply(&stored_again).is_err());

    // Replay of a log whose sealed value was erased: the erased event takes its place.
    let mut w = world();
    w.pop();
    let mut s = given(&w);
    s.apply_erased_seal(&x).unwrap();
    assert_eq!((s.applied, s.secrets[&x].current), (6, 1));
    assert!(s.secrets[&x].versions.is_empty());
    s.apply(&deleted(vec![5])).unwrap();
    assert!(s.secrets[&x].deleted);
}

fn proxy(host: &str, run: Option<u64>) -> Command {
    Command::Proxy {
        secret: sec("openai/prod"),
        project: p("demo"),
        host: host.into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        run,
    }
}

fn start_run() -> Command {
    Command::StartRun {
        project: p("demo"),
        secrets: vec![sec("openai/prod")],
    }
}

fn set_provider(name: &str, create: bool) -> Command {
    Command::SetProvider {
        provider: n(name),
        profile: serde_json::from_str(r#"{"hosts":["api.acme.test"],"header":"x-api-key"}"#)
            .unwrap(),
        create,
    }
}

#[test]
fn a_proxied_call_is_decided_as_a_resolution_and_only_to_the_profiles_hosts() {
    let mut s = given(&world());
    // Not granted: denied as a resolution would be.
    assert_eq!(
        plain(decide(&s, &agent("a"), &proxy("api.openai.com", None), 1)),
        Err(Refusal::Denied(DenyReason::NotGranted))
    );
    when(
        &mut s,
        &root(),
        &Command::CreateGrant(GrantSpec {
            max_uses: Some(2),
            ..spec("a")
        }),
        1,
    );
    // Granted, to the built-in profile's host: one event that uses the grant.
    let evs = when(&mut s, &agent("a"), &proxy("api.openai.com", None), 2);
    assert!(matches!(
        &evs[..],
        [Event::ProxyCall { version: 1, grant: 1, host, .. }] if host == "api.openai.com"
    ));
    assert_eq!(s.grants[&1].uses, 1);
    // Anywhere else: refused, and the refusal names the host.
    for h in [
        "evil.test",
        "api.openai.com.evil.test",
        "api.openai.com:8443",
    ] {
        let r = decide(&s, &agent("a"), &proxy(h, None), 3).unwrap_err();
        assert_eq!(r, Refusal::Denied(DenyReason::HostNotInProfile), "{h}");
        let ev = recorded_refusal(&agent("a"), &proxy(h, None), &r, 3).unwrap();
        assert!(matches!(ev, Event::ProxyDenied { host, .. } if host == h));
    }
    // Uses count: the second call is the last.
    when(&mut s, &agent("a"), &proxy("api.openai.com", None), 4);
    assert_eq!(
        plain(decide(&s, &agent("a"), &proxy("api.openai.com", None), 5)),
        Err(Refusal::Denied(DenyReason::Exhausted))
    );
    // A provider without a profile: nowhere to send the key.
    let mut s = given(&world());
    s.apply(&Event::SecretStored {
        secret: sec("acme/prod"),
        projects: vec![p("demo")],
        by: root_by(),
    })
    .unwrap();
    let c = Command::Proxy {
        secret: sec("acme/prod"),
        project: p("demo"),
        host: "api.acme.test".into(),
        method: "GET".into(),
        path: "/".into(),
        run: None,
    };
    assert_eq!(
        plain(decide(&s, &agent("a"), &c, 1)),
        Err(Refusal::Denied(DenyReason::NoProfile))
    );
    // An admin's profile makes it reachable (and `add` refuses a provider that has one).
    when(&mut s, &root(), &set_provider("acme", true), 1);
    assert!(matches!(
        decide(&s, &root(), &set_provider("acme", true), 2),
        Err(Refusal::AlreadyExists(Thing::Provider, _))
    ));
    assert!(matches!(
        decide(&s, &root(), &set_provider("openai", true), 2),
        Err(Refusal::AlreadyExists(Thing::Provider, _))
    ));
    assert!(s.profile("acme").unwrap().allows("api.acme.test"));
}

#[test]
fn a_runs_placeholder_holds_only_for_its_grants_its_uid_and_its_life() {
    let mut s = given(&world());
    assert_eq!(
        plain(decide(&s, &agent("a"), &start_run(), 1)),
        Err(Refusal::Denied(DenyReason::NotGranted))
    );
    when(&mut s, &root(), &Command::CreateGrant(spec("a")), 1);
    let evs = when(&mut s, &agent("a"), &start_run(), 2);
    assert!(matches!(
        &evs[..],
        [Event::RunStarted {
            run: 1,
            uid: 1000,
            ..
        }]
    ));
    when(&mut s, &agent("a"), &proxy("api.openai.com", Some(1)), 3);
    // Another uid, another identity, another project: not the run's.
    let other_uid = Caller {
        uid: 1001,
        ..agent("a")
    };
    assert_eq!(
        decide(&s, &other_uid, &proxy("api.openai.com", Some(1)), 4),
        Err(Refusal::Denied(DenyReason::NotInRun))
    );
    assert_eq!(
        decide(&s, &agent("b"), &proxy("api.openai.com", Some(1)), 4),
        Err(Refusal::Denied(DenyReason::NotInRun))
    );
    // Ended: dead.
    when(
        &mut s,
        &agent("a"),
        &Command::EndRun {
            run: 1,
            reason: "done".into(),
        },
        5,
    );
    assert_eq!(
        decide(&s, &agent("a"), &proxy("api.openai.com", Some(1)), 6),
        Err(Refusal::Denied(DenyReason::RunEnded))
    );
    // A revoked grant stops the run's calls at once, run or not.
    let evs = when(&mut s, &agent("a"), &start_run(), 7);
    let Event::RunStarted { run, .. } = evs[0] else {
        panic!()
    };
    assert_eq!(run, 2);
    when(&mut s, &root(), &Command::RevokeGrant { grant: 1 }, 8);
    assert_eq!(
        plain(decide(
            &s,
            &agent("a"),
            &proxy("api.openai.com", Some(run)),
            9
        )),
        Err(Refusal::Denied(DenyReason::GrantRevoked))
    );
}

// ---------------------------------------------------------------------------------------
// Property: every event `decide` returns applies without error. The core applies a
// decision's events before submitting them and relies on this; a command sequence drawn at
// random over a small universe of names reaches every refusal and every change.

fn arb_command() -> impl Strategy<Value = (usize, Command)> {
    let name = prop::sample::select(vec!["a", "b", "root", "zed"]);
    let secret = prop::sample::select(vec!["openai/prod", "openai/dev", "github/ci"]);
    let project = prop::sample::select(vec!["demo", "other"]);
    let caller = 0usize..3;
    let small = prop::option::of(0u64..4);
    let cmd = prop_oneof![
        project
            .clone()
            .prop_map(|x| Command::CreateProject { project: p(x) }),
        (name.clone(), 0u32..3, any::<bool>()).prop_map(|(m, uid, admin)| Command::AddMember {
            member: n(m),
            uid,
            admin,
            host: None,
        }),
        (name.clone(), prop::option::of(999u32..1002), any::<u8>()).prop_map(|(a, uid, h)| {
            Command::CreateAgent {
                agent: n(a),
                uid,
                credential_hash: CredentialHash([h; 32]),
                host: None,
            }
        }),
        (name.clone(), any::<u8>()).prop_map(|(a, h)| Command::ReissueAgent {
            agent: n(a),
            credential_hash: CredentialHash([h; 32])
        }),
        name.clone()
            .prop_map(|a| Command::RevokeAgent { agent: n(a) }),
        (secret.clone(), prop::collection::vec(project.clone(), 0..3)).prop_map(|(x, ps)| {
            Command::PutSecret {
                secret: sec(x),
                projects: ps.into_iter().map(p).collect(),
                sealed: sealed("s"),
            }
        }),
        (secret.clone(), 1u32..5, prop::option::of(0u64..20_000)).prop_map(|(x, v, g)| {
            Command::RotateSecret {
                secret: sec(x),
                version: v,
                sealed: sealed("r"),
                grace_ms: g,
            }
        }),
        secret
            .clone()
            .prop_map(|x| Command::RevokeSecret { secret: sec(x) }),
        (
            prop::sample::select(vec!["a", "b", "root", "agent:a", "member:root", "member:b"]),
            secret.clone(),
            project.clone(),
            (
                small.clone(),
                small.clone(),
                prop::option::of(0u32..3),
                prop::option::of(999u32..1002)
            ),
        )
            .prop_map(|(i, x, pr, (ttl, max, rate, uid))| Command::CreateGrant(
                GrantSpec {
                    identity: i.parse().unwrap(),
                    secret: sec(x),
                    project: p(pr),
                    ttl_ms: ttl.map(|t| t * 10_000),
                    max_uses: max,
                    rate_per_min: rate,
                    uid,
                    host: None,
                }
            )),
        (0u64..5).prop_map(|g| Command::RevokeGrant { grant: g }),
        (secret.clone(), project.clone(), prop::option::of(1u32..4)).prop_map(|(x, pr, v)| {
            Command::Resolve {
                secret: sec(x),
                project: p(pr),
                version: v,
            }
        }),
        (
            secret.clone(),
            project.clone(),
            prop::sample::select(vec!["api.openai.com", "api.github.com", "evil.test"]),
            prop::option::of(0u64..4)
        )
            .prop_map(|(x, pr, h, run)| Command::Proxy {
                secret: sec(x),
                project: p(pr),
                host: h.into(),
                method: "GET".into(),
                path: "/".into(),
                run
            }),
        secret
            .clone()
            .prop_map(|x| Command::DeleteSecret { secret: sec(x) }),
        (project.clone(), prop::collection::vec(secret.clone(), 0..3)).prop_map(|(pr, xs)| {
            Command::StartRun {
                project: p(pr),
                secrets: xs.into_iter().map(sec).collect(),
            }
        }),
        (0u64..4).prop_map(|run| Command::EndRun {
            run,
            reason: "r".into()
        }),
        (prop::sample::select(vec!["openai", "acme"]), any::<bool>())
            .prop_map(|(x, c)| set_provider(x, c)),
        name.clone()
            .prop_map(|m| Command::RemoveMember { member: n(m) }),
        (name.clone(), any::<bool>()).prop_map(|(m, admin)| Command::SetMemberAdmin {
            member: n(m),
            admin
        }),
        (secret.clone(), project.clone()).prop_map(|(x, pr)| Command::AssignSecret {
            secret: sec(x),
            project: p(pr)
        }),
        (secret.clone(), project.clone()).prop_map(|(x, pr)| Command::UnassignSecret {
            secret: sec(x),
            project: p(pr)
        }),
        (prop::collection::vec(secret.clone(), 0..4), project.clone()).prop_map(|(xs, pr)| {
            Command::ResolveAll {
                secrets: xs.into_iter().map(sec).collect(),
                project: p(pr),
            }
        }),
    ];
    (caller, cmd)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn every_event_decide_returns_applies(
        script in prop::collection::vec((arb_command(), 0u64..30_000), 1..60)
    ) {
        let callers = [root(), agent("a"), Caller { identity: id("member:b"), uid: 2, pid: None, host: None }];
        // Start from a small world so that most commands have something to act on.
        let mut s = given(&world());
        let mut now = 1_000u64;
        for ((who, c), dt) in script {
            now += dt;
            let caller = &callers[who];
            match decide(&s, caller, &c, now) {
                Ok(events) => {
                    let mut next = s.clone();
                    for e in &events {
                        prop_assert!(next.apply(e).is_ok(), "{c:?} gave {e:?}, which does not apply");
                    }
                    s = next;
                }
                Err(r) => {
                    // A recorded refusal's event applies too (the core appends it).
                    if let Some(e) = recorded_refusal(caller, &c, &r, now) {
                        prop_assert!(s.clone().apply(&e).is_ok());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The admin lifecycle (issue 10): each change is an event, and each has its effect on
// resolution.

fn member(name: &str, uid: u32) -> Caller {
    Caller {
        identity: Identity::Member(n(name)),
        uid,
        pid: None,
        host: None,
    }
}

#[test]
fn removing_a_member_ends_their_grants_for_good_and_the_last_admin_stays() {
    let mut s = given(&world());
    when(
        &mut s,
        &root(),
        &Command::AddMember {
            member: n("alice"),
            uid: 1500,
            admin: false,
            host: None,
        },
        1,
    );
    when(
        &mut s,
        &root(),
        &Command::CreateGrant(spec("member:alice")),
        2,
    );
    let r = resolve("openai/prod", "demo", None);
    assert!(decide(&s, &member("alice", 1500), &r, 3).is_ok());
    assert_eq!(
        when(
            &mut s,
            &root(),
            &Command::RemoveMember { member: n("alice") },
            4
        ),
        vec![Event::MemberRemoved {
            member: n("alice"),
            by: root_by()
        }]
    );
    // Her uid no longer identifies anybody.
    assert_eq!(identify(&s, None, None, 1500, None), Identified::Unknown);
    assert_eq!(
        s.grant_state(&s.grants[&1], 5),
        GrantState::Ended(GrantEnd::MemberRemoved)
    );
    // Added back, she is a member again, but the old grant stays ended.
    when(
        &mut s,
        &root(),
        &Command::AddMember {
            member: n("alice"),
            uid: 1500,
            admin: false,
            host: None,
        },
        6,
    );
    assert_eq!(
        decide(&s, &member("alice", 1500), &r, 7)
            .unwrap_err()
            .deny_reason(),
        Some(DenyReason::GrantEnded)
    );
    // The last admin can be neither removed nor demoted; with a second one, both can.
    let last = Refusal::LastAdmin(n("root"));
    assert_eq!(
        decide(&s, &root(), &Command::RemoveMember { member: n("root") }, 8),
        Err(last.clone())
    );
    let demote = Command::SetMemberAdmin {
        member: n("root"),
        admin: false,
    };
    assert_eq!(decide(&s, &root(), &demote, 8), Err(last));
    when(
        &mut s,
        &root(),
        &Command::SetMemberAdmin {
            member: n("alice"),
            admin: true,
        },
        9,
    );
    assert_eq!(authorize_admin(&s, &member("alice", 1500)), Ok(()));
    when(&mut s, &root(), &demote, 10);
    assert_eq!(authorize_admin(&s, &root()), Err(Refusal::NotAdmin));
    assert!(matches!(
        decide(
            &s,
            &root(),
            &Command::RemoveMember { member: n("ghost") },
            11
        ),
        Err(Refusal::Unknown(Thing::Member, _))
    ));
}

#[test]
fn a_secret_moves_between_projects_and_grants_in_a_left_project_stay_ended() {
    let mut s = given(&world());
    when(
        &mut s,
        &root(),
        &Command::CreateProject {
            project: p("other"),
        },
        1,
    );
    let assign = Command::AssignSecret {
        secret: sec("openai/prod"),
        project: p("other"),
    };
    let unassign = Command::UnassignSecret {
        secret: sec("openai/prod"),
        project: p("other"),
    };
    // Not in `other` yet: no grant can be made there, and nothing resolves there.
    let in_other = GrantSpec {
        project: p("other"),
        ..spec("a")
    };
    assert!(matches!(
        decide(&s, &root(), &Command::CreateGrant(in_other.clone()), 2),
        Err(Refusal::NotInProject { .. })
    ));
    when(&mut s, &root(), &assign, 2);
    assert!(matches!(
        decide(&s, &root(), &assign, 2),
        Err(Refusal::Invalid(_))
    ));
    when(&mut s, &root(), &Command::CreateGrant(in_other), 3);
    let r = resolve("openai/prod", "other", None);
    assert!(decide(&s, &agent("a"), &r, 4).is_ok());
    assert_eq!(
        when(&mut s, &root(), &unassign, 5),
        vec![Event::SecretUnassigned {
            secret: sec("openai/prod"),
            project: p("other"),
            by: root_by()
        }]
    );
    assert_eq!(
        plain(decide(&s, &agent("a"), &r, 6)),
        Err(Refusal::Denied(DenyReason::NotInProject))
    );
    // Back in `other`, the old grant stays ended: a new one must be made.
    when(&mut s, &root(), &assign, 7);
    assert_eq!(
        decide(&s, &agent("a"), &r, 8).unwrap_err().deny_reason(),
        Some(DenyReason::GrantEnded)
    );
    // The last project cannot be left: a secret is in at least one.
    let last = Command::UnassignSecret {
        secret: sec("openai/prod"),
        project: p("demo"),
    };
    when(&mut s, &root(), &unassign, 9);
    assert!(
        matches!(decide(&s, &root(), &last, 9), Err(Refusal::Invalid(m)) if m.contains("last project"))
    );
}

#[test]
fn names_are_never_reused_and_agents_and_members_take_distinct_names() {
    let mut s = given(&world());
    let create = |name: &str| Command::CreateAgent {
        agent: n(name),
        uid: None,
        credential_hash: CredentialHash([9; 32]),
        host: None,
    };
    // An agent may not take a member's name, nor a member an agent's.
    assert_eq!(
        decide(&s, &root(), &create("root"), 1),
        Err(Refusal::NameTaken(n("root"), id("member:root")))
    );
    let add = Command::AddMember {
        member: n("a"),
        uid: 77,
        admin: false,
        host: None,
    };
    assert_eq!(
        decide(&s, &root(), &add, 1),
        Err(Refusal::NameTaken(n("a"), id("agent:a")))
    );
    // A revoked agent's name is refused, with the reason.
    when(&mut s, &root(), &Command::RevokeAgent { agent: n("a") }, 2);
    let refused = decide(&s, &root(), &create("a"), 3).unwrap_err();
    assert_eq!(refused, Refusal::NameRetired(n("a")));
    assert!(refused.to_string().contains("never reused"), "{refused}");
}

#[test]
fn a_grant_states_what_it_allows_now_and_why() {
    let mut s = given(&world());
    when(
        &mut s,
        &root(),
        &Command::CreateGrant(GrantSpec {
            ttl_ms: Some(100_000),
            max_uses: Some(3),
            rate_per_min: Some(2),
            ..spec("a")
        }),
        0,
    );
    let st = |s: &State, now| s.grant_state(&s.grants[&1], now);
    assert_eq!(st(&s, 1), GrantState::Active);
    let r = resolve("openai/prod", "demo", None);
    when(&mut s, &agent("a"), &r, 1_000);
    when(&mut s, &agent("a"), &r, 2_000);
    assert_eq!(st(&s, 3_000), GrantState::RateLimited { until_ms: 61_000 });
    assert!(st(&s, 3_000).is_live());
    assert_eq!(st(&s, 61_000), GrantState::Active);
    when(&mut s, &agent("a"), &r, 70_000);
    assert_eq!(st(&s, 71_000), GrantState::Exhausted { max_uses: 3 });
    assert_eq!(st(&s, 100_000), GrantState::Expired { at_ms: 100_000 });
    assert!(!st(&s, 100_000).is_live());
    let mut revoked_secret = s.clone();
    when(
        &mut revoked_secret,
        &root(),
        &Command::RevokeSecret {
            secret: sec("openai/prod"),
        },
        1,
    );
    assert_eq!(st(&revoked_secret, 1), GrantState::SecretRevoked);
    let mut revoked_agent = s.clone();
    when(
        &mut revoked_agent,
        &root(),
        &Command::RevokeAgent { agent: n("a") },
        1,
    );
    assert_eq!(st(&revoked_agent, 1), GrantState::AgentRevoked);
    when(&mut s, &root(), &Command::RevokeGrant { grant: 1 }, 1);
    assert_eq!(st(&s, 1), GrantState::Revoked);
    assert_eq!(GrantState::Revoked.name(), "revoked");
    // Versions: the current, the previous in its grace, older ones retired.
    let mut v = given(&world());
    for (version, grace) in [(2, None), (3, Some(10_000))] {
        when(
            &mut v,
            &root(),
            &Command::RotateSecret {
                secret: sec("openai/prod"),
                version,
                sealed: sealed("x"),
                grace_ms: grace,
            },
            1_000,
        );
    }
    assert_eq!(
        v.secrets[&sec("openai/prod")].version_states(5_000),
        vec![
            (1, VersionState::Retired),
            (2, VersionState::Grace { until_ms: 11_000 }),
            (3, VersionState::Current)
        ]
    );
}

#[test]
fn a_grants_holder_is_told_why_and_anybody_else_hears_not_granted() {
    let mut s = given(&world());
    when(
        &mut s,
        &root(),
        &Command::CreateGrant(GrantSpec {
            ttl_ms: Some(10_000),
            ..spec("a")
        }),
        0,
    );
    let r = resolve("openai/prod", "demo", None);
    let told = decide(&s, &agent("a"), &r, 20_000).unwrap_err();
    assert!(
        matches!(
            &told,
            Refusal::Unusable {
                grant: 1,
                reason: DenyReason::Expired,
                ..
            }
        ),
        "{told:?}"
    );
    assert!(told.to_string().contains("expired at"), "{told}");
    // Agent b holds nothing: an existing secret and a made-up one look the same.
    let other = decide(&s, &agent("b"), &r, 20_000).unwrap_err();
    let ghost = decide(
        &s,
        &agent("b"),
        &resolve("openai/ghost", "demo", None),
        20_000,
    )
    .unwrap_err();
    assert_eq!(other.to_string(), "not granted");
    assert_eq!(ghost.to_string(), "not granted");
    // Both are recorded, with their real reason.
    assert!(matches!(
        recorded_refusal(&agent("a"), &r, &told, 20_000),
        Some(Event::ResolutionDenied { reason, .. }) if reason == "grant expired"
    ));
}

#[test]
fn resolving_all_is_all_or_nothing_and_counts_uses_as_one_by_one() {
    let mut s = given(&world());
    for (x, v) in [("github/ci", "g"), ("anthropic/dev", "c")] {
        when(
            &mut s,
            &root(),
            &Command::PutSecret {
                secret: sec(x),
                projects: vec![p("demo")],
                sealed: sealed(v),
            },
            0,
        );
    }
    let grant = |x: &str, ttl| {
        Command::CreateGrant(GrantSpec {
            secret: sec(x),
            ttl_ms: ttl,
            max_uses: Some(5),
            ..spec("a")
        })
    };
    when(&mut s, &root(), &grant("openai/prod", None), 0);
    when(&mut s, &root(), &grant("github/ci", Some(1_000)), 0);
    when(&mut s, &root(), &grant("anthropic/dev", None), 0);
    let all = Command::ResolveAll {
        secrets: vec![sec("openai/prod"), sec("github/ci"), sec("anthropic/dev")],
        project: p("demo"),
    };
    let ok = when(&mut s, &agent("a"), &all, 10);
    assert_eq!(ok.len(), 3);
    // One of three has expired: refused, naming it, and nothing is used.
    let before = s.clone();
    let refused = decide(&s, &agent("a"), &all, 2_000).unwrap_err();
    assert!(
        matches!(&refused, Refusal::InBatch { secret, .. } if secret.as_str() == "github/ci"),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("github/ci") && refused.to_string().contains("expired"),
        "{refused}"
    );
    assert!(matches!(
        recorded_refusal(&agent("a"), &all, &refused, 2_000),
        Some(Event::ResolutionDenied { secret: Some(x), reason, .. })
            if x.as_str() == "github/ci" && reason == "grant expired"
    ));
    assert_eq!(s, before);
    assert!(s.grants.values().all(|g| g.uses == 1));
    // The earlier secrets' uses count against the later ones' limits in the same batch:
    // a second grant of openai/prod's uses is shared with nothing, so exhaust the first.
    for t in 0..4 {
        when(
            &mut s,
            &agent("a"),
            &resolve("openai/prod", "demo", None),
            3_000 + t,
        );
    }
    let refused = decide(&s, &agent("a"), &all, 3_010).unwrap_err();
    assert!(
        matches!(&refused, Refusal::InBatch { secret, .. } if secret.as_str() == "openai/prod"),
        "{refused:?}"
    );
}

#[test]
fn revoking_an_agent_or_removing_a_member_ends_their_runs() {
    let mut s = given(&world());
    when(&mut s, &root(), &Command::CreateGrant(spec("a")), 1);
    let evs = when(&mut s, &agent("a"), &start_run(), 2);
    let Event::RunStarted { run, .. } = evs[0] else {
        panic!()
    };
    assert!(decide(&s, &agent("a"), &proxy("api.openai.com", Some(run)), 3).is_ok());
    let evs = when(&mut s, &root(), &Command::RevokeAgent { agent: n("a") }, 4);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::RunEnded { run: r, reason, .. } if *r == run && reason == "agent revoked")),
        "{evs:?}"
    );
    assert_eq!(
        plain(decide(
            &s,
            &agent("a"),
            &proxy("api.openai.com", Some(run)),
            5
        )),
        Err(Refusal::Denied(DenyReason::RunEnded))
    );
    // A member's run ends with the member.
    let mut s = given(&world());
    let alice = Caller {
        identity: id("member:alice"),
        uid: 1500,
        pid: None,
        host: None,
    };
    when(
        &mut s,
        &root(),
        &Command::AddMember {
            member: n("alice"),
            uid: 1500,
            admin: false,
            host: None,
        },
        1,
    );
    when(
        &mut s,
        &root(),
        &Command::CreateGrant(spec("member:alice")),
        1,
    );
    when(&mut s, &alice, &start_run(), 2);
    let evs = when(
        &mut s,
        &root(),
        &Command::RemoveMember { member: n("alice") },
        3,
    );
    assert!(
        evs.iter().any(|e| matches!(e, Event::RunEnded { .. })),
        "{evs:?}"
    );
    assert!(s.runs.is_empty());
}

#[test]
fn resolving_all_is_bounded_and_names_each_secret_once() {
    let s = given(&world());
    let many = Command::ResolveAll {
        secrets: vec![sec("openai/prod"); MAX_RESOLVE_ALL + 1],
        project: p("demo"),
    };
    assert!(
        matches!(decide(&s, &agent("a"), &many, 1), Err(Refusal::Invalid(m)) if m.contains("at most"))
    );
    let twice = Command::ResolveAll {
        secrets: vec![sec("openai/prod"), sec("openai/prod")],
        project: p("demo"),
    };
    assert!(
        matches!(decide(&s, &agent("a"), &twice, 1), Err(Refusal::Invalid(m)) if m.contains("twice"))
    );
}

#[test]
fn credentials_are_found_by_their_hash_and_a_reissue_retires_the_old_one() {
    // Authentication is one map lookup (issue 11): the map must follow every reissue, or an
    // old credential would keep working, or a new one would not.
    let mut st = State::default();
    for (agent, h) in [("a1", 1u8), ("a2", 2)] {
        st.apply(&Event::AgentCreated {
            agent: n(agent),
            uid: None,
            by: Actor::Init,
            host: None,
        })
        .unwrap();
        st.apply(&Event::AgentCredentialIssued {
            agent: n(agent),
            credential_hash: CredentialHash([h; 32]),
            by: Actor::Init,
        })
        .unwrap();
    }
    let who = |st: &State, h: u8| match identify(st, Some(&[h; 32]), None, 1000, None) {
        Identified::Caller(c) => Some(c.identity.to_string()),
        _ => None,
    };
    assert_eq!(who(&st, 1).as_deref(), Some("agent:a1"));
    assert_eq!(who(&st, 2).as_deref(), Some("agent:a2"));
    st.apply(&Event::AgentCredentialIssued {
        agent: n("a1"),
        credential_hash: CredentialHash([3; 32]),
        by: Actor::Init,
    })
    .unwrap();
    assert_eq!(who(&st, 1), None, "the old credential still works");
    assert_eq!(who(&st, 3).as_deref(), Some("agent:a1"));
    assert_eq!(who(&st, 2).as_deref(), Some("agent:a2"));
    assert_eq!(st.agent_by_credential.len(), 2);
}

#[test]
fn a_join_token_is_spent_once_before_it_expires_and_a_host_speaks_only_for_its_uids() {
    let mut s = given(&world());
    let host = n("ci-1");
    let invite = |h: u8, exp: u64| Command::InviteHost {
        host: host.clone(),
        token_hash: CredentialHash([h; 32]),
        expires_ms: exp,
    };
    let enrol = |h: u8| Command::EnrolHost {
        host: host.clone(),
        token_hash: CredentialHash([h; 32]),
        cert_sha256: format!("{h:02x}").repeat(32),
        not_after_ms: 10_000,
    };
    when(&mut s, &root(), &invite(1, 50), 1);
    // An agent or member cannot be bound to a host that has not enrolled.
    assert!(matches!(
        decide(
            &s,
            &root(),
            &Command::AddMember {
                member: n("lee"),
                uid: 0,
                admin: false,
                host: Some(host.clone())
            },
            2
        ),
        Err(Refusal::Invalid(_))
    ));
    assert_eq!(
        decide(&s, &root(), &enrol(2), 10),
        Err(Refusal::BadJoinToken)
    );
    assert_eq!(
        decide(&s, &root(), &enrol(1), 50),
        Err(Refusal::JoinTokenExpired)
    );
    // A new invitation replaces the first: the first token is worth nothing now.
    when(&mut s, &root(), &invite(3, 500), 60);
    assert_eq!(
        decide(&s, &root(), &enrol(1), 61),
        Err(Refusal::BadJoinToken)
    );
    when(&mut s, &root(), &enrol(3), 62);
    assert_eq!(
        decide(&s, &root(), &enrol(3), 63),
        Err(Refusal::BadJoinToken),
        "spent"
    );
    assert_eq!(
        s.hosts[&host].cert_sha256.as_deref(),
        Some("03".repeat(32).as_str())
    );
    assert!(matches!(
        decide(&s, &root(), &invite(4, 900), 64),
        Err(Refusal::Invalid(_))
    ));

    // The same uid as the hub's root, on the host, is nobody; as the host's member, lee.
    assert_eq!(
        identify(&s, None, Some(&host), 0, None),
        Identified::Unknown
    );
    when(
        &mut s,
        &root(),
        &Command::AddMember {
            member: n("lee"),
            uid: 0,
            admin: true,
            host: Some(host.clone()),
        },
        65,
    );
    let Identified::Caller(lee) = identify(&s, None, Some(&host), 0, Some(9)) else {
        panic!("lee on ci-1")
    };
    assert_eq!(lee.identity, id("member:lee"));
    assert_eq!(authorize_admin(&s, &lee), Ok(()));
    // The hub's own uid 0 is still root, not lee.
    let Identified::Caller(local) = identify(&s, None, None, 0, None) else {
        panic!()
    };
    assert_eq!(local.identity, id("member:root"));
    // Another host's uid 0 is neither.
    assert_eq!(
        identify(&s, None, Some(&n("other")), 0, None),
        Identified::Unknown
    );

    // An agent bound to the host: refused elsewhere, and a uid-bound agent with no host is
    // a uid of the hub's own host.
    when(
        &mut s,
        &root(),
        &Command::CreateAgent {
            agent: n("c"),
            uid: None,
            host: Some(host.clone()),
            credential_hash: CredentialHash([5; 32]),
        },
        66,
    );
    when(
        &mut s,
        &root(),
        &Command::CreateAgent {
            agent: n("d"),
            uid: Some(1000),
            host: None,
            credential_hash: CredentialHash([6; 32]),
        },
        66,
    );
    assert!(matches!(
        identify(&s, Some(&[5; 32]), Some(&host), 7, None),
        Identified::Caller(_)
    ));
    assert!(matches!(
        identify(&s, Some(&[5; 32]), None, 7, None),
        Identified::Denied(_, DenyReason::AgentHost)
    ));
    assert!(matches!(
        identify(&s, Some(&[6; 32]), None, 1000, None),
        Identified::Caller(_)
    ));
    assert!(
        matches!(
            identify(&s, Some(&[6; 32]), Some(&host), 1000, None),
            Identified::Denied(_, DenyReason::AgentUid)
        ),
        "agent d is bound to uid 1000 of the hub's host"
    );

    // A grant bound to the host (and a uid there): only callers through its edge, as that
    // uid, use it; the same agent on the hub's own socket is denied by it.
    when(
        &mut s,
        &root(),
        &Command::CreateGrant(GrantSpec {
            uid: Some(7),
            host: Some(host.clone()),
            ..spec("agent:a")
        }),
        66,
    );
    let a_on = |h: Option<&Name>, uid: u32| Caller {
        identity: id("agent:a"),
        uid,
        pid: None,
        host: h.cloned(),
    };
    let res = Command::Resolve {
        secret: sec("openai/prod"),
        project: p("demo"),
        version: None,
    };
    assert!(decide(&s, &a_on(Some(&host), 7), &res, 66).is_ok());
    let denied = |c: &Caller| decide(&s, c, &res, 66).err().and_then(|r| r.deny_reason());
    assert_eq!(denied(&a_on(None, 7)), Some(DenyReason::GrantHost));
    assert_eq!(denied(&a_on(Some(&host), 8)), Some(DenyReason::GrantUid));
    assert_eq!(
        denied(&a_on(Some(&n("other")), 7)),
        Some(DenyReason::GrantHost)
    );

    when(
        &mut s,
        &root(),
        &Command::RevokeHost { host: host.clone() },
        67,
    );
    assert!(s.hosts[&host].revoked);
    assert_eq!(
        decide(&s, &root(), &Command::RevokeHost { host: host.clone() }, 68),
        Err(Refusal::AlreadyRevoked(Thing::Host, "ci-1".into()))
    );
    // Revoked: invited again, it may enrol with a new key.
    when(&mut s, &root(), &invite(8, 900), 69);
    when(&mut s, &root(), &enrol(8), 70);
    assert!(!s.hosts[&host].revoked);
}
