//! One handler per route: decode the typed request, prepare what the decision cannot make
//! itself (a sealed value, a fresh credential), execute the command, answer with the typed
//! response. Who may call was settled by the route table before any of this runs.

use std::time::Duration;
use zeroize::Zeroizing;

use super::engine::{Engine, new_credential};
use super::http::{Reply, RequestBody};
use super::seal::MAX_VALUE_LEN;
use crate::api::wire::{self, SecretString};
use crate::api::{ApiError, Endpoint, Route, endpoint};
use crate::domain::{
    self, Caller, Command, Event, GrantSpec, Identity, SecretName, State, next_version,
};

/// Room for the JSON around a value: field names, numbers.
const FRAME: usize = 128;
/// JSON escaping can grow a string up to six times (`\u00XX`); sizing for that means the
/// zeroizing answer buffer is never reallocated.
const ESCAPE: usize = 6;

/// The log's part of `/v1/health` and `/v1/status`: an unreachable store is an error too.
fn health_log(engine: &Engine, s: scopehold_log::Status) -> wire::HealthLog {
    let store = engine.store().map(|st| {
        let stats = st.stats();
        wire::HealthStore {
            at: st.url().to_string(),
            unreachable: st.unavailable(),
            commits: stats.commits,
            events: stats.events,
        }
    });
    wire::HealthLog {
        events: s.size,
        head: hex::encode(s.head),
        checkpoint_size: s.checkpoint.body.size,
        error: s.poisoned.or_else(|| {
            store
                .as_ref()
                .and_then(|st| st.unreachable.as_ref())
                .map(|why| format!("the log's store is unreachable: {why}"))
        }),
        store,
    }
}

/// Routes anyone may call, without a credential.
pub fn anyone(engine: &Engine, route: Route) -> Result<Reply, ApiError> {
    match route {
        Route::Health => {
            let log = health_log(engine, engine.log().status());
            give::<endpoint::Health>(
                &wire::HealthResponse {
                    status: if log.error.is_some() {
                        "log_unavailable"
                    } else {
                        "ok"
                    }
                    .into(),
                    log,
                    process: super::hardening::applied().cloned(),
                    custody: engine.custody(),
                },
                FRAME * 4,
            )
        }
        _ => Err(ApiError::Internal(format!(
            "route {route:?} is not open to anyone"
        ))),
    }
}

/// Routes for an authenticated caller (and, where the table says so, an admin).
pub async fn call(
    engine: &Engine,
    caller: &Caller,
    route: Route,
    body: RequestBody,
) -> Result<Reply, ApiError> {
    match route {
        Route::Resolve => {
            let r = take::<endpoint::Resolve>(body).await?;
            let command = Command::Resolve {
                secret: r.secret,
                project: r.project,
                version: r.version,
            };
            let mut res = engine.resolve(caller, &command).await?;
            // Move the bytes into a string without copying; a value that is not UTF-8 is
            // wiped all the same.
            let value = String::from_utf8(std::mem::take(&mut *res.value)).map_err(|e| {
                drop(Zeroizing::new(e.into_bytes()));
                ApiError::Internal("stored value is not UTF-8".into())
            })?;
            let value = SecretString::new(Zeroizing::new(value));
            let hint = value.expose().len() * ESCAPE + FRAME;
            give::<endpoint::Resolve>(
                &wire::ResolveResponse {
                    value,
                    version: res.version,
                    event: res.event,
                },
                hint,
            )
        }
        Route::ResolveAll => {
            let r = take::<endpoint::ResolveAll>(body).await?;
            let command = Command::ResolveAll {
                secrets: r.secrets,
                project: r.project,
            };
            let resolved = engine.resolve_all(caller, &command).await?;
            let mut values = Vec::with_capacity(resolved.len());
            let mut hint = FRAME;
            for (secret, mut res) in resolved {
                let value = String::from_utf8(std::mem::take(&mut *res.value)).map_err(|e| {
                    drop(Zeroizing::new(e.into_bytes()));
                    ApiError::Internal("stored value is not UTF-8".into())
                })?;
                hint += value.len() * ESCAPE + FRAME;
                values.push(wire::ResolvedValue {
                    secret,
                    value: SecretString::new(Zeroizing::new(value)),
                    version: res.version,
                    event: res.event,
                });
            }
            give::<endpoint::ResolveAll>(&wire::ResolveAllResponse { values }, hint)
        }
        Route::Whoami => {
            let now = engine.now();
            // Every grant of the caller's but those revoked: the ones that no longer work
            // are listed with why, so `run` can name them instead of failing on them.
            let me = engine.read(|st| wire::WhoamiResponse {
                identity: caller.identity.clone(),
                uid: caller.uid,
                grants: st
                    .grants
                    .iter()
                    .filter(|(_, g)| g.identity == caller.identity && !g.revoked)
                    .map(|(id, g)| {
                        let state = st.grant_state(g, now);
                        wire::WhoamiGrant {
                            id: *id,
                            secret: g.secret.clone(),
                            project: g.project.clone(),
                            state: state.name().to_string(),
                            why: state.why(),
                        }
                    })
                    .collect(),
                pid: caller.pid,
                admin: crate::domain::authorize_admin(st, caller).is_ok(),
            });
            give::<endpoint::Whoami>(&me, FRAME * (1 + me.grants.len()))
        }
        Route::Status => status(engine, caller),
        Route::ProjectList
        | Route::SecretList
        | Route::AgentList
        | Route::MemberList
        | Route::GrantList => {
            let now = engine.now();
            engine.read(|st| list(st, route, now))
        }
        Route::MemberRemove | Route::MemberAdmin => {
            let (name, command) = if route == Route::MemberRemove {
                let r = take::<endpoint::MemberRemove>(body).await?;
                (r.name.clone(), Command::RemoveMember { member: r.name })
            } else {
                let r = take::<endpoint::MemberAdmin>(body).await?;
                let c = Command::SetMemberAdmin {
                    member: r.name.clone(),
                    admin: r.admin,
                };
                (r.name, c)
            };
            let who = Identity::Member(name.clone());
            let before = live_grants(engine, |g| g.identity == who);
            let done = engine.execute(caller, &command).await?;
            let (member_now, admin) = engine.read(|st| {
                st.members
                    .get(&name)
                    .map_or((false, false), |m| (true, m.admin))
            });
            let after = live_grants(engine, |g| g.identity == who);
            give::<endpoint::MemberRemove>(
                &wire::MemberChanged {
                    member: name,
                    member_now,
                    admin,
                    grants_ended: before.into_iter().filter(|g| !after.contains(g)).collect(),
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::SecretAssign | Route::SecretUnassign => {
            let assign = route == Route::SecretAssign;
            let r = take::<endpoint::SecretAssign>(body).await?;
            let command = if assign {
                Command::AssignSecret {
                    secret: r.name.clone(),
                    project: r.project.clone(),
                }
            } else {
                Command::UnassignSecret {
                    secret: r.name.clone(),
                    project: r.project.clone(),
                }
            };
            let here = |g: &domain::Grant| g.secret == r.name && g.project == r.project;
            let before = live_grants(engine, here);
            let done = engine.execute(caller, &command).await?;
            let after = live_grants(engine, here);
            give::<endpoint::SecretAssign>(
                &wire::SecretAssignment {
                    secret: r.name.clone(),
                    project: r.project.clone(),
                    assigned: assign,
                    grants_ended: before.into_iter().filter(|g| !after.contains(g)).collect(),
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::ProjectCreate => {
            let r = take::<endpoint::ProjectCreate>(body).await?;
            let done = engine
                .execute(caller, &Command::CreateProject { project: r.name })
                .await?;
            let Some(Event::ProjectCreated { project, .. }) = done.events.first() else {
                return Err(unexpected(route));
            };
            give::<endpoint::ProjectCreate>(
                &wire::ProjectCreated {
                    project: project.clone(),
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::SecretPut => {
            let r = take::<endpoint::SecretPut>(body).await?;
            check_value(&r.value)?;
            let sealed = seal(engine, &r.name, 1, &r.value)?;
            drop(r.value);
            let done = engine
                .execute(
                    caller,
                    &Command::PutSecret {
                        secret: r.name.clone(),
                        projects: r.projects,
                        sealed,
                    },
                )
                .await?;
            give::<endpoint::SecretPut>(
                &wire::SecretVersionStored {
                    secret: r.name,
                    version: 1,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::SecretRotate => {
            let r = take::<endpoint::SecretRotate>(body).await?;
            check_value(&r.value)?;
            // Seal for the version that comes next, then decide under the lock; a concurrent
            // rotation in between is refused (409) rather than mis-numbered.
            let version = engine.read(|st| next_version(st, &r.name))?;
            let sealed = seal(engine, &r.name, version, &r.value)?;
            drop(r.value);
            let done = engine
                .execute(
                    caller,
                    &Command::RotateSecret {
                        secret: r.name.clone(),
                        version,
                        sealed,
                        grace_ms: r.grace_secs.map(|s| s.saturating_mul(1000)),
                    },
                )
                .await?;
            give::<endpoint::SecretRotate>(
                &wire::SecretVersionStored {
                    secret: r.name,
                    version,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::SecretRevoke => {
            let r = take::<endpoint::SecretRevoke>(body).await?;
            let done = engine
                .execute(
                    caller,
                    &Command::RevokeSecret {
                        secret: r.name.clone(),
                    },
                )
                .await?;
            give::<endpoint::SecretRevoke>(
                &wire::SecretRevoked {
                    secret: r.name,
                    revoked: true,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::SecretDelete => {
            let r = take::<endpoint::SecretDelete>(body).await?;
            let done = engine.delete_secret(caller, &r.name).await?;
            give::<endpoint::SecretDelete>(
                &wire::SecretDeleted {
                    secret: r.name,
                    deleted: true,
                    event: done.event,
                    versions: done.erased,
                    erased: done.erase_error.is_none(),
                    erase_error: done.erase_error,
                },
                FRAME * 4,
            )
        }
        Route::AgentCreate | Route::AgentReissue => {
            let (name, uid) = if route == Route::AgentCreate {
                let r = take::<endpoint::AgentCreate>(body).await?;
                (r.name, Some((r.uid, r.host)))
            } else {
                let r = take::<endpoint::AgentReissue>(body).await?;
                (r.name, None)
            };
            let (credential, credential_hash) = new_credential(engine.master())?;
            let command = match uid {
                Some((uid, host)) => Command::CreateAgent {
                    agent: name.clone(),
                    uid,
                    host,
                    credential_hash,
                },
                None => Command::ReissueAgent {
                    agent: name.clone(),
                    credential_hash,
                },
            };
            let done = engine.execute(caller, &command).await?;
            let hint = credential.len() + name.as_str().len() + FRAME;
            // Create and reissue answer alike.
            give::<endpoint::AgentCreate>(
                &wire::AgentCredential {
                    agent: name,
                    credential: SecretString::new(credential),
                    event: done.seq,
                },
                hint,
            )
        }
        Route::AgentRevoke => {
            let r = take::<endpoint::AgentRevoke>(body).await?;
            let done = engine
                .execute(
                    caller,
                    &Command::RevokeAgent {
                        agent: r.name.clone(),
                    },
                )
                .await?;
            give::<endpoint::AgentRevoke>(
                &wire::AgentRevoked {
                    agent: r.name,
                    revoked: true,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::MemberAdd => {
            let r = take::<endpoint::MemberAdd>(body).await?;
            let done = engine
                .execute(
                    caller,
                    &Command::AddMember {
                        member: r.name.clone(),
                        uid: r.uid,
                        admin: r.admin,
                        host: r.host.clone(),
                    },
                )
                .await?;
            give::<endpoint::MemberAdd>(
                &wire::MemberAdded {
                    member: r.name,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::GrantCreate => {
            let r = take::<endpoint::GrantCreate>(body).await?;
            let spec = GrantSpec {
                identity: r.identity,
                secret: r.secret,
                project: r.project,
                ttl_ms: r.ttl_secs.map(|s| s.saturating_mul(1000)),
                max_uses: r.max_uses,
                rate_per_min: r.rate_per_min,
                uid: r.uid,
                host: r.host,
            };
            let done = engine.execute(caller, &Command::CreateGrant(spec)).await?;
            let Some(Event::GrantCreated { grant, .. }) = done.events.first() else {
                return Err(unexpected(route));
            };
            give::<endpoint::GrantCreate>(
                &wire::GrantCreated {
                    grant: *grant,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::GrantRevoke => {
            let r = take::<endpoint::GrantRevoke>(body).await?;
            let done = engine
                .execute(caller, &Command::RevokeGrant { grant: r.id })
                .await?;
            give::<endpoint::GrantRevoke>(
                &wire::GrantRevoked {
                    grant: r.id,
                    revoked: true,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::ProviderList => {
            let list = engine.read(|st| wire::ProviderList {
                providers: {
                    let mut v: Vec<wire::ProviderInfo> = st
                        .profiles_in_effect()
                        .map(|(provider, profile, builtin)| wire::ProviderInfo {
                            provider: provider.to_string(),
                            builtin,
                            profile: profile.clone(),
                        })
                        .collect();
                    v.sort_by(|a, b| a.provider.cmp(&b.provider));
                    v
                },
            });
            give::<endpoint::ProviderList>(&list, FRAME * 4 * (1 + list.providers.len()))
        }
        Route::ProviderAdd | Route::ProviderSet => {
            let r = take::<endpoint::ProviderSet>(body).await?;
            let done = engine
                .execute(
                    caller,
                    &Command::SetProvider {
                        provider: r.provider.clone(),
                        profile: r.profile,
                        create: route == Route::ProviderAdd,
                    },
                )
                .await?;
            give::<endpoint::ProviderSet>(
                &wire::ProviderSet {
                    provider: r.provider,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::RunEnd => {
            let r = take::<endpoint::RunEnd>(body).await?;
            // Only the identity that started a run, from the same uid, may end it; to anyone
            // else it does not exist.
            let owned = engine.read(|st| {
                st.runs
                    .get(&r.run)
                    .is_some_and(|x| x.identity == caller.identity && x.uid == caller.uid)
            });
            if !owned {
                return Err(crate::domain::Refusal::Unknown(
                    crate::domain::Thing::Run,
                    r.run.to_string(),
                )
                .into());
            }
            engine.end_run(r.run, "ended by its process").await?;
            give::<endpoint::RunEnd>(&wire::RunEnded { run: r.run }, FRAME)
        }
        // Served by the server itself: its answer is held open.
        Route::RunStart => Err(ApiError::Internal("run start reached the handlers".into())),
        Route::Health => anyone(engine, route),
        Route::Watch => watch(engine, caller, body).await,
        Route::LogPage => log_page(engine, body).await,
        Route::HostList => {
            let now = engine.now();
            let connected = engine.hub.connected();
            let hosts = engine.read(|st| {
                st.hosts
                    .iter()
                    .map(|(n, h)| wire::HostInfo {
                        name: n.clone(),
                        state: if h.revoked {
                            "revoked"
                        } else if h.cert_sha256.is_some() {
                            "enrolled"
                        } else if now >= h.token_expires_ms {
                            "expired"
                        } else {
                            "invited"
                        }
                        .to_string(),
                        enrolled_ms: h.enrolled_ms,
                        cert_sha256: h.cert_sha256.clone(),
                        not_after_ms: h.cert_sha256.as_ref().map(|_| h.not_after_ms),
                        connected: connected.contains(n),
                    })
                    .collect::<Vec<_>>()
            });
            let hint = FRAME * (1 + hosts.len());
            give::<endpoint::HostList>(&wire::HostList { hosts }, hint)
        }
        Route::HostAdd => {
            let r = take::<endpoint::HostAdd>(body).await?;
            let ttl_ms = r
                .ttl_secs
                .unwrap_or(super::hub::TOKEN_TTL_SECS)
                .clamp(1, super::hub::TOKEN_TTL_MAX_SECS)
                .saturating_mul(1000);
            let pin = engine.hub.token_pin(engine.master())?;
            let (token, token_hash) = super::hub::new_join_token(engine.master(), &pin)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let expires_ms = engine.now().saturating_add(ttl_ms);
            let done = engine
                .execute(
                    caller,
                    &Command::InviteHost {
                        host: r.name.clone(),
                        token_hash,
                        expires_ms,
                    },
                )
                .await?;
            let hint = token.len() + pin.len() + FRAME;
            give::<endpoint::HostAdd>(
                &wire::HostInvitation {
                    host: r.name,
                    token: SecretString::new(token),
                    expires_ms,
                    ca_pin: pin,
                    event: done.seq,
                },
                hint,
            )
        }
        Route::HostRevoke => {
            let r = take::<endpoint::HostRevoke>(body).await?;
            let done = engine
                .execute(
                    caller,
                    &Command::RevokeHost {
                        host: r.name.clone(),
                    },
                )
                .await?;
            // Its live connections are cut now, not at their next request.
            engine.hub.notify();
            give::<endpoint::HostRevoke>(
                &wire::HostRevoked {
                    host: r.name,
                    revoked: true,
                    event: done.seq,
                },
                FRAME,
            )
        }
        Route::HostJoin => Err(ApiError::BadRequest(
            "enrolment is served on the hub's TLS listener (scopehold daemon --listen HOST:PORT), not here".into(),
        )),
        Route::HostRenew => Err(ApiError::BadRequest(
            "a host's certificate is renewed by its edge on its own connection to the hub, not by a caller".into(),
        )),
    }
}

/// `GET /v1/status`: the daemon's version, start, log, custody, proxy listener and disk for
/// any identity; the projection's counts and the log's group commits for admin members only.
fn status(engine: &Engine, caller: &Caller) -> Result<Reply, ApiError> {
    let s = engine.log().status();
    let custody = engine.custody();
    let counts = engine.read(|st| {
        crate::domain::authorize_admin(st, caller)
            .is_ok()
            .then(|| wire::StatusCounts {
                projects: st.projects.len(),
                secrets: st.secrets.len(),
                secrets_revoked: st.secrets.values().filter(|x| x.revoked).count(),
                agents: st.agents.len(),
                agents_revoked: st.agents.values().filter(|x| x.revoked).count(),
                members: st.members.len(),
                admins: st.members.values().filter(|x| x.admin).count(),
                grants: st.grants.len(),
                grants_revoked: st.grants.values().filter(|x| x.revoked).count(),
                runs: st.runs.len(),
            })
    });
    let disk = nix::sys::statvfs::statvfs(engine.log().dir())
        .ok()
        .map(|v| wire::StatusDisk {
            free_bytes: v.blocks_available().saturating_mul(v.fragment_size()),
            reserve_bytes: engine.limits().disk_reserve_bytes,
            under_reserve: engine.under_disk_reserve(),
        });
    give::<endpoint::Status>(
        &wire::StatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at_ms: super::started_at().and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            }),
            log: health_log(engine, s.clone()),
            keys_sealed: custody.keys_sealed,
            daemon_uid: custody.daemon_uid,
            proxy_listen: engine
                .upstream()
                .and_then(|u| u.listen)
                .map(|a| a.to_string()),
            disk,
            commits: counts.is_some().then_some(wire::StatusCommits {
                events: s.appended,
                batches: s.batches,
                bytes: s.bytes_written,
            }),
            counts,
        },
        FRAME * 8,
    )
}

/// `POST /v1/watch`: waits (see [`Engine::watch`]) and says which held value changed, how.
async fn watch(engine: &Engine, caller: &Caller, body: RequestBody) -> Result<Reply, ApiError> {
    use crate::domain::watch::{Change, Held};
    let r = take::<endpoint::Watch>(body).await?;
    let holds: Vec<Held> = r
        .holds
        .into_iter()
        .map(|h| Held {
            secret: h.secret,
            project: h.project,
            version: h.version,
        })
        .collect();
    let (i, change) = engine.watch(caller, &holds).await?;
    let Held {
        secret, project, ..
    } = holds
        .into_iter()
        .nth(i)
        .ok_or_else(|| unexpected(Route::Watch))?;
    let (change, version) = match change {
        Change::Rotated(v) => (wire::WatchChange::Rotated, Some(v)),
        Change::Revoked => (wire::WatchChange::Revoked, None),
        Change::AccessEnded => (wire::WatchChange::AccessEnded, None),
    };
    give::<endpoint::Watch>(
        &wire::WatchAnswer {
            secret,
            project,
            change,
            version,
        },
        FRAME * 2,
    )
}

/// A host acting for itself (enrolling, renewing its certificate): no uid of it counts.
fn host_itself(host: &domain::Name) -> Caller {
    Caller {
        identity: Identity::Host(host.clone()),
        uid: 0,
        pid: None,
        host: Some(host.clone()),
    }
}

/// `POST /v1/hosts/renew` from `host`'s edge itself (see `server::handle_host`): a
/// certificate for the key in the request, recorded (`host_renewed`, durable) before it is
/// answered. From then on only it identifies the host.
pub async fn host_renew(
    engine: &Engine,
    host: &domain::Name,
    body: RequestBody,
) -> Result<Reply, ApiError> {
    let r = take::<endpoint::HostRenew>(body).await?;
    let ca = engine.hub.ca(engine.master())?;
    let (cert, not_after_ms) = ca.certify_host(host, &r.csr_pem, engine.now())?;
    let caller = host_itself(host);
    let done = engine
        .execute(
            &caller,
            &Command::RenewHost {
                host: host.clone(),
                cert_sha256: super::hub::cert_sha256(&cert),
                not_after_ms,
            },
        )
        .await?;
    // Connections made with the old certificate are cut (the edge opens new ones).
    engine.hub.notify();
    give::<endpoint::HostRenew>(
        &wire::HostRenewed {
            host: host.clone(),
            cert_pem: super::ca::pem_cert(&cert),
            not_after_ms,
            event: done.seq,
        },
        FRAME * 16,
    )
}

/// `POST /v1/log/page`: events `from..` of the log as a bundle (see [`wire::LogPage`]), held
/// until the log holds event `from` if asked to wait. The log grows only by group commits,
/// so the wait looks at its size every 50 ms: a page is pushed within that of its commit.
async fn log_page(engine: &Engine, body: RequestBody) -> Result<Reply, ApiError> {
    const MAX_WAIT: Duration = Duration::from_secs(25);
    let r = take::<endpoint::LogPage>(body).await?;
    let until =
        tokio::time::Instant::now() + Duration::from_millis(r.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let mut stopping = engine.stopping();
    while engine.log().status().size <= r.from && tokio::time::Instant::now() < until {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stopping.wait_for(|s| *s) => return Err(ApiError::Stopping),
        }
    }
    let size = engine.log().status().size;
    if r.from > size {
        return Err(ApiError::BadRequest(format!(
            "the log holds {size} events: a page from {} is past its end",
            r.from
        )));
    }
    let public = engine.log().public_key();
    let bundle = if r.from < size {
        let dir = engine.log().dir().to_path_buf();
        let (from, to) = (r.from, (r.from + wire::LOG_PAGE_EVENTS).min(size) - 1);
        let bytes = tokio::task::spawn_blocking(move || {
            let reader = scopehold_log::LogReader::open(&dir, None)?;
            let mut out = Vec::new();
            scopehold_log::export(&reader, &public, from, Some(to), &mut out)?;
            Ok::<_, scopehold_log::LogError>(out)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))?
        .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))?;
        Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            bytes,
        ))
    } else {
        None
    };
    let hint = bundle.as_ref().map_or(0, String::len) + FRAME * 2;
    give::<endpoint::LogPage>(
        &wire::LogPage {
            size,
            public_key: hex::encode(public.as_bytes()),
            bundle,
        },
        hint,
    )
}

/// Decodes the body as the route's request type: the server and the client share it through
/// [`Endpoint`], so they cannot disagree on it.
async fn take<E: Endpoint>(body: RequestBody) -> Result<E::Request, ApiError> {
    body.json().await
}

/// Answers with the route's response type.
fn give<E: Endpoint>(response: &E::Response, hint: usize) -> Result<Reply, ApiError> {
    Reply::json(response, hint)
}

fn unexpected(route: Route) -> ApiError {
    ApiError::Internal(format!("{route:?} decided an unexpected event"))
}

fn check_value(v: &SecretString) -> Result<(), ApiError> {
    let n = v.expose().len();
    if n == 0 || n > MAX_VALUE_LEN {
        return Err(ApiError::BadRequest(format!(
            "a secret value is 1 to {MAX_VALUE_LEN} bytes"
        )));
    }
    Ok(())
}

fn seal(
    engine: &Engine,
    name: &SecretName,
    version: u32,
    value: &SecretString,
) -> Result<crate::domain::Sealed, ApiError> {
    engine
        .master()
        .seal(name.as_str(), version, value.expose().as_bytes())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The listing behind a GET route (under the state lock: keep it to building the answer).
/// The ids of the grants matching `f` that can be used now (to report which ones a change
/// ended).
fn live_grants(engine: &Engine, f: impl Fn(&domain::Grant) -> bool) -> Vec<u64> {
    let now = engine.now();
    engine.read(|st| {
        st.grants
            .iter()
            .filter(|(_, g)| f(g) && st.grant_state(g, now).is_live())
            .map(|(id, _)| *id)
            .collect()
    })
}

fn list(st: &State, route: Route, now: u64) -> Result<Reply, ApiError> {
    let live = |g: &domain::Grant| st.grant_state(g, now).is_live();
    let holders = |name: &SecretName| {
        let mut who: Vec<Identity> = st
            .grants
            .values()
            .filter(|g| &g.secret == name && live(g))
            .map(|g| g.identity.clone())
            .collect();
        who.sort_by_key(|i| i.to_string());
        who.dedup();
        who
    };
    let hint = FRAME * (1 + st.secrets.len() + st.agents.len() + st.grants.len());
    match route {
        Route::ProjectList => give::<endpoint::ProjectList>(
            &wire::ProjectList {
                projects: st.projects.iter().cloned().collect(),
            },
            FRAME * (1 + st.projects.len()),
        ),
        Route::SecretList => give::<endpoint::SecretList>(
            &wire::SecretList {
                secrets: st
                    .secrets
                    .iter()
                    .map(|(n, s)| wire::SecretInfo {
                        name: n.clone(),
                        projects: s.projects.iter().cloned().collect(),
                        version: s.current,
                        versions: s.sealed_at.len(),
                        revoked: s.revoked,
                        deleted: s.deleted,
                        grace: s
                            .grace
                            .map(|(version, until_ms)| wire::Grace { version, until_ms }),
                        granted_to: holders(n),
                        state: if s.deleted {
                            "deleted"
                        } else if s.revoked {
                            "revoked"
                        } else {
                            "active"
                        }
                        .to_string(),
                        version_states: s
                            .version_states(now)
                            .into_iter()
                            .map(|(version, vs)| wire::VersionInfo {
                                version,
                                state: vs.name().to_string(),
                                grace_until_ms: match vs {
                                    domain::VersionState::Grace { until_ms } => Some(until_ms),
                                    _ => None,
                                },
                            })
                            .collect(),
                    })
                    .collect(),
            },
            hint,
        ),
        Route::AgentList => give::<endpoint::AgentList>(
            &wire::AgentList {
                agents: st
                    .agents
                    .iter()
                    .map(|(n, a)| wire::AgentInfo {
                        name: n.clone(),
                        uid: a.uid,
                        host: a.host.clone(),
                        revoked: a.revoked,
                        last_used_ms: a.last_used_ms,
                        grants: st
                            .grants
                            .iter()
                            .filter(|(_, g)| g.identity.agent() == Some(n) && live(g))
                            .map(|(id, _)| *id)
                            .collect(),
                    })
                    .collect(),
            },
            hint,
        ),
        Route::MemberList => give::<endpoint::MemberList>(
            &wire::MemberList {
                members: st
                    .members
                    .iter()
                    .map(|(n, m)| wire::MemberInfo {
                        name: n.clone(),
                        uid: m.uid,
                        admin: m.admin,
                        host: m.host.clone(),
                    })
                    .collect(),
            },
            FRAME * (1 + st.members.len()),
        ),
        Route::GrantList => give::<endpoint::GrantList>(
            &wire::GrantList {
                grants: st
                    .grants
                    .iter()
                    .map(|(id, g)| {
                        let state = st.grant_state(g, now);
                        wire::GrantInfo {
                            state: state.name().to_string(),
                            why: state.why(),
                            id: *id,
                            identity: g.identity.clone(),
                            secret: g.secret.clone(),
                            project: g.project.clone(),
                            expires_at_ms: g.expires_at_ms,
                            max_uses: g.max_uses,
                            uses: g.uses,
                            rate_per_min: g.rate_per_min,
                            uid: g.uid,
                            revoked: g.revoked,
                            last_used_ms: g.last_used_ms,
                            host: g.host.clone(),
                        }
                    })
                    .collect(),
            },
            hint,
        ),
        _ => Err(unexpected(route)),
    }
}

/// `POST /v1/hosts/join` on the hub's listener, from a connection with no client
/// certificate: the token's host is certified, once the enrolment (which spends the token)
/// is durable.
pub async fn join(
    engine: &Engine,
    body: RequestBody,
    peer: std::net::SocketAddr,
) -> Result<Reply, ApiError> {
    let r = take::<endpoint::HostJoin>(body).await?;
    match enrol(engine, r).await {
        Ok(reply) => Ok(reply),
        Err((host, e)) => {
            // Every refused enrolment is recorded (counted per address), like every other
            // refusal; a log that cannot be written makes the answer a 503.
            engine.join_denied(host, &join_reason(&e), peer).await?;
            Err(e)
        }
    }
}

/// A refused enrolment's reason, as the log records it: short, fixed words.
fn join_reason(e: &ApiError) -> String {
    match e {
        ApiError::Refused(domain::Refusal::BadJoinToken) => "join token unknown or spent".into(),
        ApiError::Refused(domain::Refusal::JoinTokenExpired) => "join token expired".into(),
        // Request errors never echo the input: their texts are fixed.
        ApiError::BadRequest(m) => m.clone(),
        other => other.code().to_string(),
    }
}

/// Enrols the token's host; on refusal, the host whose token it was, if any.
async fn enrol(
    engine: &Engine,
    r: wire::HostJoinRequest,
) -> Result<Reply, (Option<domain::Name>, ApiError)> {
    let none = |e: ApiError| (None, e);
    let Some((secret, _pin)) = super::hub::split_token(r.token.expose()) else {
        return Err(none(domain::Refusal::BadJoinToken.into()));
    };
    let hash = engine.master().credential_hash(secret);
    // The host whose outstanding token this is (a keyed hash, compared in constant time;
    // hosts are few). The decision checks it again, with the expiry, under the state lock.
    let host = engine
        .read(|st| {
            st.hosts
                .iter()
                .find(|(_, h)| {
                    h.token_hash.is_some_and(|t| {
                        blake3::Hash::from_bytes(t) == blake3::Hash::from_bytes(hash)
                    })
                })
                .map(|(n, _)| n.clone())
        })
        .ok_or_else(|| none(domain::Refusal::BadJoinToken.into()))?;
    let named = |e: ApiError| (Some(host.clone()), e);
    let ca = engine.hub.ca(engine.master()).map_err(named)?;
    let (cert, not_after_ms) = ca
        .certify_host(&host, &r.csr_pem, engine.now())
        .map_err(named)?;
    let caller = host_itself(&host);
    let done = engine
        .execute(
            &caller,
            &Command::EnrolHost {
                host: host.clone(),
                token_hash: domain::CredentialHash(hash),
                cert_sha256: super::hub::cert_sha256(&cert),
                not_after_ms,
            },
        )
        .await
        .map_err(named)?;
    // A new certificate replaces any earlier one of the host: connections with the old one
    // are cut.
    engine.hub.notify();
    tracing::info!(host = %host, "host enrolled");
    give::<endpoint::HostJoin>(
        &wire::HostJoined {
            host: host.clone(),
            cert_pem: super::ca::pem_cert(&cert),
            ca_pem: ca.cert_pem(),
            event: done.seq,
        },
        FRAME * 32,
    )
    .map_err(named)
}
